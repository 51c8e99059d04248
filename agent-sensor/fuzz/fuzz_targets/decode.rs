//! Ring-buffer records as the daemon receives them: `events::decode` must refuse or decode
//! any bytes, and a decoded event must turn into one JSON line, never a panic.
#![no_main]

use std::sync::LazyLock;

use agent_sensor::events::{decode, Body, Clock, Event};
use libfuzzer_sys::fuzz_target;

static CLOCK: LazyLock<Clock> = LazyLock::new(Clock::new);

/// Offset and size of `EventHeader::len`.
const LEN_AT: std::ops::Range<usize> = 4..8;

fn check(event: &Event) {
    let line = serde_json::to_string(&event.to_json(&CLOCK)).expect("events serialize");
    assert!(!line.contains('\n'), "an event is one line: {line}");
    let value: serde_json::Value = serde_json::from_str(&line).expect("and parses back");
    assert!(value.is_object());
    if let Body::File(f) = &event.body {
        for path in [&f.path, &f.path2, &f.base, &f.base2].into_iter().flatten() {
            assert!(path.starts_with(b"/"), "paths are absolute: {path:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode(data) {
        check(&event);
    }
    // Random bytes rarely carry their own length in the header; the same bytes with the
    // length made right reach every payload decoder.
    if data.len() >= LEN_AT.end {
        let mut record = data.to_vec();
        record[LEN_AT].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        if let Ok(event) = decode(&record) {
            check(&event);
        }
    }
});
