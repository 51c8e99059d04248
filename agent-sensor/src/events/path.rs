//! Paths: decoding the kernel's leaf-first component walks, and joining a relative argument
//! onto the directory the kernel walked for it.

/// Why decoding a kernel path failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath;

/// Decodes `[len, bytes…]*` components, leaf first, into an absolute path. A component that
/// claims more bytes than remain, or holds a `/` or NUL, is rejected.
pub fn decode_walk(encoded: &[u8]) -> Result<Vec<u8>, BadPath> {
    let mut components = Vec::new();
    let mut rest = encoded;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        let name = tail.get(..len).ok_or(BadPath)?;
        if name.is_empty() || name.iter().any(|b| *b == b'/' || *b == 0) {
            return Err(BadPath);
        }
        components.push(name);
        rest = &tail[len..];
    }
    let mut path = Vec::with_capacity(encoded.len() + 1);
    if components.is_empty() {
        path.push(b'/');
    }
    for name in components.iter().rev() {
        path.push(b'/');
        path.extend_from_slice(name);
    }
    Ok(path)
}

/// Joins `relative` onto absolute `base` and removes `.` and `..` lexically. Only used where the
/// kernel gave us no resolved object (the caller marks such a path as lexical).
pub fn join_lexical(base: &[u8], relative: &[u8]) -> Vec<u8> {
    let mut joined = Vec::with_capacity(base.len() + relative.len() + 1);
    if !relative.starts_with(b"/") {
        joined.extend_from_slice(base);
        joined.push(b'/');
    }
    joined.extend_from_slice(relative);
    normalize(&joined)
}

/// Removes empty, `.` and `..` components of an absolute path.
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::with_capacity(path.len());
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_leaf_first_walks() {
        assert_eq!(decode_walk(b"\x03txt\x03etc").unwrap(), b"/etc/txt");
        assert_eq!(decode_walk(b"").unwrap(), b"/");
        assert_eq!(decode_walk(b"\x05abc").unwrap_err(), BadPath);
        assert_eq!(decode_walk(b"\x03a/b").unwrap_err(), BadPath);
        assert_eq!(decode_walk(b"\x00").unwrap_err(), BadPath);
    }

    #[test]
    fn joins_and_normalizes() {
        assert_eq!(join_lexical(b"/home/a", b"../b/./c"), b"/home/b/c");
        assert_eq!(join_lexical(b"/home/a", b"/etc/passwd"), b"/etc/passwd");
        assert_eq!(join_lexical(b"/", b"../../x"), b"/x");
        assert_eq!(normalize(b"//a//b/"), b"/a/b");
    }
}
