//! Finishing paths the kernel could not resolve for us.
//!
//! For calls without an object to walk (unlink, rename, mkdir, symlink…) the kernel gives the
//! argument and the directory it is relative to. Joining them as text is wrong when a
//! directory on the way is a symlink (`ln -s /etc out; rm out/passwd` removes
//! `/etc/passwd`). So every component but the last is resolved on this host as the kernel did,
//! right after the call. It is best effort: a symlink changed in between, or a directory
//! already removed, leaves the textual join in place (`path_source` says which).
//!
//! A resolution is reused, but only for events whose call had returned before it began:
//! resolving such an event afresh would look at the host no nearer to its call (see
//! `Resolver`). What an event after it names is always looked up again, so a directory moved
//! and replaced by a symlink is seen as such from the next call on.

use std::{
    collections::VecDeque,
    ffi::OsStr,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::Path,
};

use agent_sensor_common::{flags, EventKind};

use super::{json::Clock, Body, Event, PathSource};

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

/// `arg` joined onto `base` (for a relative `arg`), as process `tgid` (thread `tid`) names it.
fn joined(base: Option<&[u8]>, arg: &[u8], (tgid, tid): (u32, u32)) -> Option<Vec<u8>> {
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
    Some(raw)
}

/// Joins `arg` onto `base` and resolves all but its last component on this host, as process
/// `tgid` (thread `tid`) would have, for a call that returned at kernel time `call_ns`.
fn resolve_parent(
    resolver: &mut Resolver,
    call_ns: u64,
    base: Option<&[u8]>,
    arg: &[u8],
    caller: (u32, u32),
) -> Option<Vec<u8>> {
    let raw = joined(base, arg, caller)?;
    let split = raw.iter().rposition(|b| *b == b'/')?;
    let (parent, last) = (&raw[..split.max(1)], &raw[split + 1..]);
    if matches!(last, b"" | b"." | b"..") {
        return resolver.canonical(&raw, call_ns);
    }
    let mut resolved = resolver.canonical(parent, call_ns)?;
    if !resolved.ends_with(b"/") {
        resolved.push(b'/');
    }
    resolved.extend_from_slice(last);
    Some(resolved)
}

/// What an open of `arg` (relative to `base`) by process `tgid` opens, looked up on this host
/// now, following a symlink in the last component as the open does: its canonical name, device
/// and inode. For an open recorded before the kernel ran it (an io_uring request), which has
/// no opened file to walk, and for a mount's target, which the call reached the same way. Where nothing is there yet (an `O_CREAT`), the name a symlink in the
/// last component points to, with its directories resolved, device and inode 0.
fn resolve_opened(
    resolver: &mut Resolver,
    call_ns: u64,
    base: Option<&[u8]>,
    arg: &[u8],
    caller: (u32, u32),
) -> Option<(Vec<u8>, u64, u64)> {
    let raw = joined(base, arg, caller)?;
    let raw_path = Path::new(OsStr::from_bytes(&raw));
    if let Some(found) = lookup(raw_path) {
        return Some(found);
    }
    let target = std::fs::read_link(raw_path).ok()?;
    let target = raw_path.parent()?.join(target);
    let target = target.as_os_str().as_bytes();
    Some((
        resolve_parent(resolver, call_ns, None, target, caller)?,
        0,
        0,
    ))
}

/// What `realpath` gives for `path`, from the kernel's own lookup: an `O_PATH` open resolves
/// every component, and `/proc/self/fd` names the result. Three syscalls where `realpath`
/// makes a `readlink` per component (most of the daemon's syscalls in a cargo build).
fn canonical(path: &Path) -> Option<Vec<u8>> {
    lookup(path).map(|(name, _, _)| name)
}

/// [`canonical`], with the device (`stat`'s encoding) and inode of the file.
fn lookup(path: &Path) -> Option<(Vec<u8>, u64, u64)> {
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
    let meta = object.metadata().ok()?;
    // Removed since the lookup: the kernel's name carries a suffix, and the path is gone.
    if name.ends_with(b" (deleted)") && meta.nlink() == 0 {
        return None;
    }
    // Not reachable from this process's root (another mount namespace's object).
    if !name.starts_with(b"/") {
        return None;
    }
    Some((name, meta.dev(), meta.ino()))
}

/// Resolutions made recently: the canonical name of a path, or that it had none, with the
/// kernel time at which its lookup began. For an event whose call returned before that time,
/// the lookup already looked at the host after the call, as a fresh one would (later, so no
/// nearer the call). Builds, clones and checkouts make runs of calls in one directory: one
/// lookup serves the run. Failed lookups are kept too: the dynamic loader tries each library
/// in directories that mostly do not exist, the same few for every library of every program,
/// and those were most of the daemon's lookups in a build (two in three of its syscalls).
pub struct Resolver {
    recent: VecDeque<Resolved>,
}

struct Resolved {
    path: Vec<u8>,
    /// `None`: the path did not resolve (missing, not reachable from here).
    canonical: Option<Vec<u8>>,
    began_ns: u64,
}

/// Resolutions kept: a run's directories, not a tree's.
const RESOLUTIONS_KEPT: usize = 16;

impl Resolver {
    pub fn new() -> Self {
        Self {
            recent: VecDeque::with_capacity(RESOLUTIONS_KEPT),
        }
    }

    /// The canonical name of `path` for a call that returned at kernel time `call_ns`.
    fn canonical(&mut self, path: &[u8], call_ns: u64) -> Option<Vec<u8>> {
        if let Some(known) = self
            .recent
            .iter()
            .find(|r| call_ns < r.began_ns && r.path == path)
        {
            return known.canonical.clone();
        }
        let began_ns = Clock::now_ktime_ns();
        let canonical = canonical(Path::new(OsStr::from_bytes(path)));
        self.recent.retain(|r| r.path != path);
        if self.recent.len() == RESOLUTIONS_KEPT {
            self.recent.pop_back();
        }
        self.recent.push_front(Resolved {
            path: path.to_vec(),
            canonical: canonical.clone(),
            began_ns,
        });
        canonical
    }

    /// Replaces textual joins in a file event by host-resolved paths where possible.
    pub fn resolve_on_host(&mut self, event: &mut Event) {
        // A path cut to the sensor's bound names something else: nothing to look up.
        if event.truncated() {
            return;
        }
        let Body::File(file) = &mut event.body else {
            return;
        };
        let caller = (event.tgid, event.pid);
        // Recorded before the kernel ran it: what the open opens is looked up here, the last
        // component followed unless the open says not to.
        if event.flags & flags::VIA_IO_URING != 0
            && event.kind == EventKind::FileOpen
            && file.flags & libc::O_NOFOLLOW as u32 == 0
        {
            let base = file.base.as_deref();
            let opened = resolve_opened(self, event.ktime_ns, base, &file.path_arg, caller);
            if let Some((path, dev, ino)) = opened {
                file.path = Some(path);
                file.path_source = PathSource::Resolved;
                (file.dev, file.ino) = (dev, ino);
                return;
            }
        }
        // A mount's target is the place the kernel reached, a symlink in its last component
        // followed (`/proc/self/fd/N` too): what the mount covers is what it points at.
        if event.kind == EventKind::FileMount
            && file.path_source == PathSource::Lexical
            && mount_follows_target(file.nr, file.flags)
        {
            let base = file.base.as_deref();
            let target = resolve_opened(self, event.ktime_ns, base, &file.path_arg, caller);
            if let Some((path, _, _)) = target {
                file.path = Some(path);
                file.path_source = PathSource::Resolved;
            }
        }
        if file.path_source == PathSource::Lexical {
            let base = file.base.as_deref();
            if let Some(path) = resolve_parent(self, event.ktime_ns, base, &file.path_arg, caller) {
                file.path = Some(path);
                file.path_source = PathSource::Resolved;
            }
        }
        if let (Some(arg), Some(_)) = (&file.path2_arg, &file.path2) {
            let base = file.base2.as_deref().or(file.base.as_deref());
            if let Some(path) = resolve_parent(self, event.ktime_ns, base, arg, caller) {
                file.path2 = Some(path);
            }
        }
    }
}

/// Whether mount call `nr` with `flags` follows a symlink in the last component of its target:
/// `mount` always, `umount2` unless `UMOUNT_NOFOLLOW`, `move_mount` only with
/// `MOVE_MOUNT_T_SYMLINKS`, `mount_setattr` unless `AT_SYMLINK_NOFOLLOW`.
fn mount_follows_target(nr: u32, flags: u32) -> bool {
    use agent_sensor_common::syscalls::nr;
    const UMOUNT_NOFOLLOW: u32 = 8;
    const MOVE_MOUNT_T_SYMLINKS: u32 = 0x10;
    const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
    match nr {
        nr::MOUNT => true,
        nr::UMOUNT2 => flags & UMOUNT_NOFOLLOW == 0,
        nr::MOVE_MOUNT => flags & MOVE_MOUNT_T_SYMLINKS != 0,
        nr::MOUNT_SETATTR => flags & AT_SYMLINK_NOFOLLOW == 0,
        _ => false,
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::TempDir;

    /// Resolved afresh: a call "returned" after any lookup this resolver made.
    fn resolve_parent_here(base: Option<&[u8]>, arg: &[u8]) -> Option<Vec<u8>> {
        resolve_parent(&mut Resolver::new(), u64::MAX, base, arg, (1, 1))
    }

    fn resolve_as(tgid: u32, tid: u32, arg: &[u8]) -> Option<Vec<u8>> {
        resolve_parent(&mut Resolver::new(), u64::MAX, None, arg, (tgid, tid))
    }

    #[test]
    fn process_relative_names_mean_the_caller_not_the_daemon() {
        let me = std::process::id();
        let got = resolve_as(me, me, b"/dev/fd/7").unwrap();
        assert_eq!(got, format!("/proc/{me}/fd/7").into_bytes());
        let got = resolve_as(me, me, b"/proc/self/environ").unwrap();
        assert_eq!(got, format!("/proc/{me}/environ").into_bytes());
        let got = resolve_as(me, me, b"/proc/thread-self/comm").unwrap();
        assert_eq!(got, format!("/proc/{me}/task/{me}/comm").into_bytes());
        // `/dev/stdout` is the fd itself; its parent is the fd directory.
        let got = resolve_as(me, me, b"/dev/stdout").unwrap();
        assert_eq!(got, format!("/proc/{me}/fd/1").into_bytes());
        // Another process's view: pid 1's fd dir, not ours.
        let got = resolve_as(1, 1, b"/dev/fd/3").unwrap();
        assert_eq!(got, b"/proc/1/fd/3");
    }

    #[test]
    fn resolves_symlinked_directories_but_not_the_last_component() {
        let temp = TempDir::new("resolve");
        let dir = &temp.0;
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
    }

    #[test]
    fn an_open_not_yet_run_is_resolved_through_a_symlink_in_its_last_component() {
        use std::os::unix::fs::MetadataExt;
        let temp = TempDir::new("opened");
        let dir = &temp.0;
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
        std::fs::write(dir.join("elsewhere/secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere/secret"), dir.join("work/notes")).unwrap();
        std::os::unix::fs::symlink("../elsewhere/new", dir.join("work/made")).unwrap();
        let work = std::fs::canonicalize(dir.join("work")).unwrap();
        let elsewhere = std::fs::canonicalize(dir.join("elsewhere")).unwrap();
        let base = Some(work.as_os_str().as_bytes());
        let opened = |arg: &[u8]| resolve_opened(&mut Resolver::new(), u64::MAX, base, arg, (1, 1));

        let meta = std::fs::metadata(dir.join("elsewhere/secret")).unwrap();
        let (path, dev, ino) = opened(b"notes").unwrap();
        assert_eq!(path, elsewhere.join("secret").as_os_str().as_bytes());
        assert_eq!((dev, ino), (meta.dev(), meta.ino()));
        // Nothing there yet: the file an O_CREAT through the link would make.
        let (path, dev, ino) = opened(b"made").unwrap();
        assert_eq!(path, elsewhere.join("new").as_os_str().as_bytes());
        assert_eq!((dev, ino), (0, 0));
        // Neither a file nor a link: left to the caller.
        assert_eq!(opened(b"missing"), None);
    }

    #[test]
    fn a_lookup_serves_the_calls_before_it_and_never_one_after_it() {
        let temp = TempDir::new("reuse");
        let dir = &temp.0;
        for real in ["first", "second"] {
            std::fs::create_dir_all(dir.join(real)).unwrap();
        }
        std::os::unix::fs::symlink(dir.join("first"), dir.join("link")).unwrap();
        let real = |name: &str| {
            let real = std::fs::canonicalize(dir.join(name)).unwrap();
            [real.as_os_str().as_bytes(), b"/f"].concat()
        };
        let arg = [dir.as_os_str().as_bytes(), b"/link/f"].concat();
        let mut resolver = Resolver::new();
        let mut at = |call_ns: u64| resolve_parent(&mut resolver, call_ns, None, &arg, (1, 1));

        let before_any_lookup = Clock::now_ktime_ns();
        assert_eq!(at(before_any_lookup).unwrap(), real("first"));
        // The directory is swapped for another behind the same name.
        std::fs::remove_file(dir.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.join("second"), dir.join("link")).unwrap();
        // A call from before the first lookup: that lookup, made after it, answers.
        assert_eq!(at(before_any_lookup).unwrap(), real("first"));
        // A call after the swap is looked up again; that answer then serves every call before
        // it, as a fresh lookup would.
        let after_the_swap = Clock::now_ktime_ns();
        assert_eq!(at(after_the_swap).unwrap(), real("second"));
        assert_eq!(at(before_any_lookup).unwrap(), real("second"));
    }

    #[test]
    fn a_failed_lookup_serves_the_calls_before_it_and_never_one_after_it() {
        let temp = TempDir::new("missing");
        let dir = &temp.0;
        let arg = [dir.as_os_str().as_bytes(), b"/later/f"].concat();
        let mut resolver = Resolver::new();
        let mut at = |call_ns: u64| resolve_parent(&mut resolver, call_ns, None, &arg, (1, 1));

        let before_any_lookup = Clock::now_ktime_ns();
        assert_eq!(at(before_any_lookup), None);
        std::fs::create_dir(dir.join("later")).unwrap();
        // The lookup made after that call found no directory; so would a fresh one have, had
        // it been made as early: the answer stands for calls before the lookup.
        assert_eq!(at(before_any_lookup), None);
        let real = std::fs::canonicalize(dir.join("later")).unwrap();
        let after = Clock::now_ktime_ns();
        assert_eq!(
            at(after).unwrap(),
            [real.as_os_str().as_bytes(), b"/f"].concat()
        );
    }

    #[test]
    fn a_directory_named_like_a_removed_one_is_still_resolved() {
        let temp = TempDir::new("deleted");
        let dir = &temp.0;
        let odd = dir.join("old (deleted)");
        std::fs::create_dir_all(&odd).unwrap();
        let real = std::fs::canonicalize(&odd).unwrap();
        let got = resolve_parent_here(
            None,
            [odd.as_os_str().as_bytes(), b"/f"].concat().as_slice(),
        );
        assert_eq!(got.unwrap(), [real.as_os_str().as_bytes(), b"/f"].concat());
    }
}
