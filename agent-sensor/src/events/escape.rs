//! Lossless text for bytes from the kernel.
//!
//! Names on Linux are bytes, not UTF-8. Valid UTF-8 is kept as it is except for `\`, which
//! becomes `\\`; every other byte that is not printable UTF-8 (invalid sequences, control
//! characters including newline and DEL) becomes `\xNN`. The JSON writer then quotes the result,
//! so no name can break or forge a line, and [`unescape`] gives back the exact bytes.

use std::borrow::Cow;

/// Escapes `bytes` as described in the module docs.
pub fn escape(bytes: &[u8]) -> String {
    escape_cow(bytes).into_owned()
}

/// [`escape`], borrowing `bytes` when they need no escaping — printable ASCII without `\`, what
/// nearly every path and name is: the event stream writes several per event.
pub fn escape_cow(bytes: &[u8]) -> Cow<'_, str> {
    if bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\')
    {
        // SAFETY: every byte is ASCII, so the bytes are UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    Cow::Owned(escape_slow(bytes))
}

fn escape_slow(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, invalid_len) = match std::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => {
                // SAFETY: `valid_up_to` bytes are valid UTF-8 by definition.
                let valid = unsafe { std::str::from_utf8_unchecked(&rest[..e.valid_up_to()]) };
                (valid, e.error_len().unwrap_or(rest.len() - e.valid_up_to()))
            }
        };
        for c in valid.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        let bad_start = valid.len();
        for b in &rest[bad_start..bad_start + invalid_len] {
            out.push_str(&format!("\\x{b:02x}"));
        }
        rest = &rest[bad_start + invalid_len..];
    }
    out
}

/// Inverse of [`escape`]; `None` for text `escape` cannot have produced.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = std::str::from_utf8(bytes.get(i + 2..i + 4)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed_and_every_byte_escapes_as_the_slow_path_does() {
        assert!(matches!(
            escape_cow(b"/usr/bin/cargo --x=1"),
            Cow::Borrowed(_)
        ));
        for b in 0..=255u8 {
            for sample in [vec![b], vec![b'a', b, b'z']] {
                assert_eq!(escape_cow(&sample), escape_slow(&sample), "byte {b:#x}");
            }
        }
    }

    #[test]
    fn round_trips_every_byte_and_hostile_names() {
        let all: Vec<u8> = (0..=255u8).collect();
        for sample in [
            all.as_slice(),
            b"plain/path.txt",
            b"quote\" and \\backslash",
            b"new\nline\r\x1b[31m",
            "ünïcödé ✓".as_bytes(),
            b"\xff\xfe bad utf8 \xc3",
            b"\\x41 looks escaped",
        ] {
            let text = escape(sample);
            assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
            assert!(text.chars().all(|c| !c.is_control()), "{text}");
            assert_eq!(unescape(&text).as_deref(), Some(sample), "{text}");
        }
        assert_eq!(escape(b"a\\b"), "a\\\\b");
        assert_eq!(escape(b"\xff"), "\\xff");
    }

    #[test]
    fn quoted_in_json_it_stays_one_line() {
        let text = escape(b"evil\",\"rule\":\"forged\"}\n{\"x\":\"");
        let line = serde_json::to_string(&serde_json::json!({ "path": text })).unwrap();
        assert!(!line.contains('\n'));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back.as_object().unwrap().len(), 1);
    }
}
