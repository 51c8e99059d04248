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

/// Names that mean "the calling process" in /proc and /dev: resolved by the daemon they would
/// mean the daemon, so they are rewritten to the caller's own /proc entry first.
fn own_proc_path(raw: &[u8], tgid: u32, tid: u32) -> Option<Vec<u8>> {
    const PREFIXES: [&[u8]; 5] = [
        b"/proc/self/",
        b"/proc/thread-self/",
        b"/dev/fd/",
        b"/dev/stdin",
        b"/dev/stdout",
    ];
    // Most paths are none of these: the prefix is found before any replacement is formatted.
    let which = PREFIXES.iter().position(|prefix| raw.starts_with(prefix))?;
    let own = match which {
        0 => format!("/proc/{tgid}/"),
        1 => format!("/proc/{tgid}/task/{tid}/"),
        2 => format!("/proc/{tgid}/fd/"),
        3 => format!("/proc/{tgid}/fd/0"),
        _ => format!("/proc/{tgid}/fd/1"),
    };
    Some([own.as_bytes(), &raw[PREFIXES[which].len()..]].concat())
}

/// Joins `arg` onto `base` and resolves all but its last component on this host, as process
/// `tgid` (thread `tid`) would have.
pub fn resolve_parent(base: Option<&[u8]>, arg: &[u8], tgid: u32, tid: u32) -> Option<Vec<u8>> {
    let mut raw = Vec::with_capacity(arg.len() + 64);
    if !arg.starts_with(b"/") {
        raw.extend_from_slice(base?);
        raw.push(b'/');
    }
    raw.extend_from_slice(arg);
    if raw == b"/dev/stderr" {
        raw = format!("/proc/{tgid}/fd/2").into_bytes();
    }
    if let Some(own) = own_proc_path(&raw, tgid, tid) {
        raw = own;
    }
    while raw.len() > 1 && raw.ends_with(b"/") {
        raw.pop();
    }
    let split = raw.iter().rposition(|b| *b == b'/')?;
    let (parent, last) = (&raw[..split.max(1)], &raw[split + 1..]);
    if matches!(last, b"" | b"." | b"..") {
        return canonical(Path::new(OsStr::from_bytes(&raw)));
    }
    let mut resolved = canonical(Path::new(OsStr::from_bytes(parent)))?;
    if !resolved.ends_with(b"/") {
        resolved.push(b'/');
    }
    resolved.extend_from_slice(last);
    Some(resolved)
}

/// What `realpath` gives for `path`, from the kernel's own lookup: an `O_PATH` open resolves
/// every component, and `/proc/self/fd` names the result. Three syscalls where `realpath`
/// makes a `readlink` per component (most of the daemon's syscalls in a cargo build).
fn canonical(path: &Path) -> Option<Vec<u8>> {
    use std::os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    };
    let object = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .ok()?;
    let name = std::fs::read_link(format!("/proc/self/fd/{}", object.as_raw_fd())).ok()?;
    let name = name.into_os_string().into_vec();
    // Removed since the lookup: the kernel's name carries a suffix, and the path is gone.
    if name.ends_with(b" (deleted)") && object.metadata().map_or(true, |m| m.nlink() == 0) {
        return None;
    }
    // Not reachable from this process's root (another mount namespace's object).
    if !name.starts_with(b"/") {
        return None;
    }
    Some(name)
}

/// Replaces textual joins in a file event by host-resolved paths where possible.
pub fn resolve_on_host(event: &mut Event) {
    let Body::File(file) = &mut event.body else {
        return;
    };
    if file.path_source == PathSource::Lexical {
        if let Some(path) =
            resolve_parent(file.base.as_deref(), &file.path_arg, event.tgid, event.pid)
        {
            file.path = Some(path);
            file.path_source = PathSource::Resolved;
        }
    }
    if let (Some(arg), Some(_)) = (&file.path2_arg, &file.path2) {
        let base = file.base2.as_deref().or(file.base.as_deref());
        if let Some(path) = resolve_parent(base, arg, event.tgid, event.pid) {
            file.path2 = Some(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_parent_here(base: Option<&[u8]>, arg: &[u8]) -> Option<Vec<u8>> {
        resolve_parent(base, arg, 1, 1)
    }

    #[test]
    fn process_relative_names_mean_the_caller_not_the_daemon() {
        let me = std::process::id();
        let got = resolve_parent(None, b"/dev/fd/7", me, me).unwrap();
        assert_eq!(got, format!("/proc/{me}/fd/7").into_bytes());
        let got = resolve_parent(None, b"/proc/self/environ", me, me).unwrap();
        assert_eq!(got, format!("/proc/{me}/environ").into_bytes());
        let got = resolve_parent(None, b"/proc/thread-self/comm", me, me).unwrap();
        assert_eq!(got, format!("/proc/{me}/task/{me}/comm").into_bytes());
        // `/dev/stdout` is the fd itself; its parent is the fd directory.
        let got = resolve_parent(None, b"/dev/stdout", me, me).unwrap();
        assert_eq!(got, format!("/proc/{me}/fd/1").into_bytes());
        // Another process's view: pid 1's fd dir, not ours.
        let got = resolve_parent(None, b"/dev/fd/3", 1, 1).unwrap();
        assert_eq!(got, b"/proc/1/fd/3");
    }

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

        let got = resolve_parent_here(Some(base), b"link/file").unwrap();
        assert_eq!(got, [real, b"/file"].concat());
        // The last component is not followed: unlinking a symlink removes the link.
        let got = resolve_parent_here(Some(base), b"link/dangling").unwrap();
        assert_eq!(got, [real, b"/dangling"].concat());
        // `..` after a symlink is relative to where the symlink points.
        let got = resolve_parent_here(Some(base), b"link/sub/../x").unwrap();
        assert_eq!(got, [real, b"/x"].concat());
        // Absolute arguments ignore the base; a missing parent gives up.
        assert!(resolve_parent_here(None, b"relative").is_none());
        assert!(resolve_parent_here(Some(base), b"missing/dir/x").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_named_like_a_removed_one_is_still_resolved() {
        let dir = std::env::temp_dir().join(format!("agent-sensor-deleted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let odd = dir.join("old (deleted)");
        std::fs::create_dir_all(&odd).unwrap();
        let real = std::fs::canonicalize(&odd).unwrap();
        let got = resolve_parent_here(
            None,
            [odd.as_os_str().as_bytes(), b"/f"].concat().as_slice(),
        );
        assert_eq!(got.unwrap(), [real.as_os_str().as_bytes(), b"/f"].concat());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
