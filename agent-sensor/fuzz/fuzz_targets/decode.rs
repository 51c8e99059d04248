//! Ring-buffer records as the daemon receives them: `events::decode` must refuse or decode
//! any bytes, and a decoded event must turn into one JSON line, never a panic, and the event
//! stream's own writer must write that line exactly as serde_json does.
#![no_main]

use std::sync::LazyLock;

use agent_sensor::events::{decode, Body, Clock, Event, EventJson};
use libfuzzer_sys::fuzz_target;

static CLOCK: LazyLock<Clock> = LazyLock::new(Clock::new);

/// Offset and size of `EventHeader::len`.
const LEN_AT: std::ops::Range<usize> = 4..8;

fn check(event: &Event) {
    let line = serde_json::to_string(&event.to_json(&CLOCK)).expect("events serialize");
    assert!(!line.contains('\n'), "an event is one line: {line}");
    let value: serde_json::Value = serde_json::from_str(&line).expect("and parses back");
    assert!(value.is_object());
    // The event stream's hand-written line is serde_json's, byte for byte.
    let json = EventJson {
        event,
        clock: &CLOCK,
    };
    let mut streamed = Vec::new();
    json.write_line(&mut streamed);
    let by_serde = serde_json::to_vec(&json).expect("events serialize");
    assert_eq!(
        String::from_utf8_lossy(&streamed),
        String::from_utf8_lossy(&by_serde)
    );
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
