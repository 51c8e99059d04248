//! Paths: decoding the kernel's leaf-first component walks, and joining a relative argument
//! onto the directory the kernel walked for it.

/// Why decoding a kernel path failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath;

/// Decodes `[len, bytes…]*` components, leaf first, into an absolute path. A component that
/// claims more bytes than remain, or holds a `/` or NUL, is rejected.
///
/// Two passes over the walk, the second filling the path from its end, so that the path is
/// the one allocation (this runs for nearly every event).
pub fn decode_walk(encoded: &[u8]) -> Result<Vec<u8>, BadPath> {
    let mut decoded_len = 0;
    let mut rest = encoded;
    while let Some((&len, tail)) = rest.split_first() {
        let name = tail.get(..len as usize).ok_or(BadPath)?;
        if name.is_empty() || name.iter().any(|b| *b == b'/' || *b == 0) {
            return Err(BadPath);
        }
        decoded_len += 1 + name.len();
        rest = &tail[name.len()..];
    }
    if decoded_len == 0 {
        return Ok(b"/".to_vec());
    }
    // Separators first, names copied in between. (Not zeroes: `vec![0; n]` is calloc, which
    // glibc serves without its per-thread cache; a twentieth of the daemon's cycles per file
    // event went there.)
    let mut path = vec![b'/'; decoded_len];
    let mut end = decoded_len;
    let mut rest = encoded;
    while let Some((&len, tail)) = rest.split_first() {
        let (name, after) = tail.split_at(len as usize);
        let start = end - name.len();
        path[start..end].copy_from_slice(name);
        end = start - 1;
        rest = after;
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

/// Removes empty, `.` and `..` components of an absolute path, in one pass over it.
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len().max(1));
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                let parent = out.iter().rposition(|b| *b == b'/').unwrap_or(0);
                out.truncate(parent);
            }
            part => {
                out.push(b'/');
                out.extend_from_slice(part);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
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
        assert_eq!(decode_walk(b"\x01a").unwrap(), b"/a");
        assert_eq!(decode_walk(b"\x01c\x02bb\x01a").unwrap(), b"/a/bb/c");
        assert_eq!(decode_walk(b"\x01c\x02b").unwrap_err(), BadPath);
    }

    #[test]
    fn joins_and_normalizes() {
        assert_eq!(join_lexical(b"/home/a", b"../b/./c"), b"/home/b/c");
        assert_eq!(join_lexical(b"/home/a", b"/etc/passwd"), b"/etc/passwd");
        assert_eq!(join_lexical(b"/", b"../../x"), b"/x");
        assert_eq!(normalize(b"//a//b/"), b"/a/b");
        assert_eq!(normalize(b"/a/b/../../.."), b"/");
        assert_eq!(normalize(b"/a/../b/./c/.."), b"/b");
        assert_eq!(normalize(b""), b"/");
        assert_eq!(normalize(b"/..a/b.."), b"/..a/b..");
    }
}
