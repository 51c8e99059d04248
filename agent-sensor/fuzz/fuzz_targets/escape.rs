//! The lossless escaping of names: `unescape(escape(b)) == b` for any bytes, the escaped text
//! holds no control character (so it can never break or forge a JSON line), and `unescape`
//! refuses or decodes any text without panicking.
#![no_main]

use agent_sensor::events::escape::{escape, unescape};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = escape(data);
    assert_eq!(
        unescape(&text).as_deref(),
        Some(data),
        "round trip of {text:?}"
    );
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(bytes) = unescape(text) {
            // Whatever it decodes to escapes to text that decodes to the same bytes.
            assert_eq!(unescape(&escape(&bytes)), Some(bytes));
        }
    }
});
