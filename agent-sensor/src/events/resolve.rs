//! Finishing paths the kernel could not resolve for us.
//!
//! For calls without an object to walk (unlink, rename, mkdir, symlink…) the kernel gives the
//! argument and the directory it is relative to. Joining them as text is wrong when a
//! directory on the way is a symlink (`ln -s /etc out; rm out/passwd` removes
//! `/etc/passwd`). So every component but the last is resolved on this host as the kernel did,
//! right after the call. It is best effort: a symlink changed in between, or a directory
//! already removed, leaves the textual join in place (`path_source` says which).

use std::{
    ffi::OsStr,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::Path,
};

use super::{Body, Event, PathSource};

/// Joins `arg` onto `base` and resolves all but its last component on this host.
pub fn resolve_parent(base: Option<&[u8]>, arg: &[u8]) -> Option<Vec<u8>> {
    let mut raw = Vec::with_capacity(arg.len() + 64);
    if !arg.starts_with(b"/") {
        raw.extend_from_slice(base?);
        raw.push(b'/');
    }
    raw.extend_from_slice(arg);
    while raw.len() > 1 && raw.ends_with(b"/") {
        raw.pop();
    }
    let split = raw.iter().rposition(|b| *b == b'/')?;
    let (parent, last) = (&raw[..split.max(1)], &raw[split + 1..]);
    if matches!(last, b"" | b"." | b"..") {
        let whole = std::fs::canonicalize(Path::new(OsStr::from_bytes(&raw))).ok()?;
        return Some(whole.into_os_string().into_vec());
    }
    let parent = std::fs::canonicalize(Path::new(OsStr::from_bytes(parent))).ok()?;
    let mut resolved = parent.into_os_string().into_vec();
    if !resolved.ends_with(b"/") {
        resolved.push(b'/');
    }
    resolved.extend_from_slice(last);
    Some(resolved)
}

/// Replaces textual joins in a file event by host-resolved paths where possible.
pub fn resolve_on_host(event: &mut Event) {
    let Body::File(file) = &mut event.body else {
        return;
    };
    if file.path_source == PathSource::Lexical {
        if let Some(path) = resolve_parent(file.base.as_deref(), &file.path_arg) {
            file.path = Some(path);
            file.path_source = PathSource::Resolved;
        }
    }
    if let (Some(arg), Some(_)) = (&file.path2_arg, &file.path2) {
        let base = file.base2.as_deref().or(file.base.as_deref());
        if let Some(path) = resolve_parent(base, arg) {
            file.path2 = Some(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_symlinked_directories_but_not_the_last_component() {
        let dir = std::env::temp_dir().join(format!("agent-sensor-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.join("real/dangling")).unwrap();
        let base = dir.as_os_str().as_bytes();
        let real = std::fs::canonicalize(dir.join("real")).unwrap();
        let real = real.as_os_str().as_bytes();

        let got = resolve_parent(Some(base), b"link/file").unwrap();
        assert_eq!(got, [real, b"/file"].concat());
        // The last component is not followed: unlinking a symlink removes the link.
        let got = resolve_parent(Some(base), b"link/dangling").unwrap();
        assert_eq!(got, [real, b"/dangling"].concat());
        // `..` after a symlink is relative to where the symlink points.
        let got = resolve_parent(Some(base), b"link/sub/../x").unwrap();
        assert_eq!(got, [real, b"/x"].concat());
        // Absolute arguments ignore the base; a missing parent gives up.
        assert!(resolve_parent(None, b"relative").is_none());
        assert!(resolve_parent(Some(base), b"missing/dir/x").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
