//! What a file event does to which canonical paths: content reads, looks (directory listings,
//! `O_PATH`, chdir) and writes, and whether the call succeeded.

use std::borrow::Cow;

use agent_sensor_common::EventKind;

use crate::events::{path, FileBody};

const O_ACCMODE: u32 = 0o3;
const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_DIRECTORY: u32 = 0o200000;
const O_PATH: u32 = 0o10000000;
const AT_FDCWD: i32 = -100;

const EPERM: i64 = 1;
const EACCES: i64 = 13;
const EROFS: i64 = 30;

/// How a path is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Opened for reading its content.
    Read,
    /// Resolved without reading content: a directory opened for listing, `O_PATH`, chdir, the
    /// existing file a hard link points at.
    Look,
    Write(WriteOp),
}

/// The kinds of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    Open,
    RenameFrom,
    RenameTo,
    Unlink,
    Link,
    Symlink,
    Chmod,
    Chown,
    Truncate,
    Mkdir,
    Xattr,
    Mknod,
    Utime,
    /// A mount made or moved over the path (what every process of its mount namespace sees
    /// there changes).
    Mount,
    Remount,
    Unmount,
}

impl WriteOp {
    /// Past tense for summaries: "wrote /etc/x".
    pub fn verb(self) -> &'static str {
        match self {
            WriteOp::Open => "wrote",
            WriteOp::RenameFrom => "renamed away",
            WriteOp::RenameTo => "renamed a file onto",
            WriteOp::Unlink => "deleted",
            WriteOp::Link => "hard-linked",
            WriteOp::Symlink => "created symlink",
            WriteOp::Chmod => "changed the mode of",
            WriteOp::Chown => "changed the owner of",
            WriteOp::Truncate => "truncated",
            WriteOp::Mkdir => "created directory",
            WriteOp::Xattr => "changed the extended attributes of",
            WriteOp::Mknod => "created with mknod",
            WriteOp::Utime => "set the times of",
            WriteOp::Mount => "mounted over",
            WriteOp::Remount => "changed the mount at",
            WriteOp::Unmount => "unmounted",
        }
    }
}

/// One path an event touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch<'a> {
    /// Borrowed from the event where it carries the path as is (nearly always).
    pub path: Cow<'a, [u8]>,
    pub access: Access,
}

/// How the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Refused by permissions or a read-only mount: nothing changed, but the attempt shows
    /// intent.
    Denied,
    /// Any other error (the file did not exist, it already existed…): nothing happened.
    Failed,
}

pub fn outcome(ret: i64) -> Outcome {
    match ret {
        r if r >= 0 => Outcome::Done,
        r if r == -EPERM || r == -EACCES || r == -EROFS => Outcome::Denied,
        _ => Outcome::Failed,
    }
}

/// Whether an open's flags write (or create) the file.
pub fn open_writes(flags: u32) -> bool {
    flags & O_PATH == 0
        && (matches!(flags & O_ACCMODE, O_WRONLY | O_RDWR) || flags & (O_CREAT | O_TRUNC) != 0)
}

/// The paths one event touches: at most two (rename and link name two paths, an open for
/// reading and writing touches one both ways). Kept in place, not in a `Vec`: the rules ask for
/// them twice per file event, and each `Vec` was an allocation.
#[derive(Debug, Clone)]
pub struct Touches<'a> {
    items: [Touch<'a>; 2],
    len: usize,
}

impl<'a> Touches<'a> {
    fn new() -> Self {
        let unused = || Touch {
            path: Cow::Borrowed(&[]),
            access: Access::Look,
        };
        Self {
            items: [unused(), unused()],
            len: 0,
        }
    }

    fn one(touch: Touch<'a>) -> Self {
        let mut touches = Self::new();
        touches.push(touch);
        touches
    }

    fn push(&mut self, touch: Touch<'a>) {
        debug_assert!(
            self.len < self.items.len(),
            "an event touches two paths at most"
        );
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = touch;
            self.len += 1;
        }
    }
}

impl<'a> std::ops::Deref for Touches<'a> {
    type Target = [Touch<'a>];

    fn deref(&self) -> &Self::Target {
        &self.items[..self.len]
    }
}

impl<'t, 'a> IntoIterator for &'t Touches<'a> {
    type Item = &'t Touch<'a>;
    type IntoIter = std::slice::Iter<'t, Touch<'a>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for Touches<'a> {
    type Item = Touch<'a>;
    type IntoIter = std::iter::Take<std::array::IntoIter<Touch<'a>, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter().take(self.len)
    }
}

/// The paths `kind`/`file` touches. `cwd` completes a relative path the kernel could not
/// resolve (a path-only call whose start directory was not walked).
pub fn touches<'a>(kind: EventKind, file: &'a FileBody, cwd: Option<&[u8]>) -> Touches<'a> {
    let Some(first) = canonical(file, cwd) else {
        return Touches::new();
    };
    let second = file.path2.as_deref().map(Cow::Borrowed);
    let one = |access| {
        Touches::one(Touch {
            path: first.clone(),
            access,
        })
    };
    match kind {
        EventKind::FileOpen => open_touches(file.flags, &first),
        EventKind::FileRename => {
            let mut out = one(Access::Write(WriteOp::RenameFrom));
            if let Some(to) = second {
                out.push(Touch {
                    path: to,
                    access: Access::Write(WriteOp::RenameTo),
                });
            }
            out
        }
        EventKind::FileUnlink => one(Access::Write(WriteOp::Unlink)),
        // link(existing, new): the new name is the write; the existing file is only resolved.
        EventKind::FileLink => {
            let mut out = one(Access::Look);
            if let Some(new) = second {
                out.push(Touch {
                    path: new,
                    access: Access::Write(WriteOp::Link),
                });
            }
            out
        }
        EventKind::FileSymlink => one(Access::Write(WriteOp::Symlink)),
        EventKind::FileChmod => one(Access::Write(WriteOp::Chmod)),
        EventKind::FileChown => one(Access::Write(WriteOp::Chown)),
        EventKind::FileTruncate => one(Access::Write(WriteOp::Truncate)),
        EventKind::FileMkdir => one(Access::Write(WriteOp::Mkdir)),
        EventKind::FileXattr => one(Access::Write(WriteOp::Xattr)),
        EventKind::FileMknod => one(Access::Write(WriteOp::Mknod)),
        EventKind::FileUtime => one(Access::Write(WriteOp::Utime)),
        EventKind::FileChdir => one(Access::Look),
        EventKind::FileMount => mount_touches(file, first, second),
        _ => Touches::new(),
    }
}

/// What a mount call does to its target (`first`) and source (`second`), if it can reach the
/// host's mount namespace at all.
fn mount_touches<'a>(
    file: &FileBody,
    first: Cow<'a, [u8]>,
    second: Option<Cow<'a, [u8]>>,
) -> Touches<'a> {
    use agent_sensor_common::syscalls::nr;
    /// `PROC_USER_INIT_INO`: the initial user namespace's inode number, fixed by the kernel.
    const INITIAL_USER_NS: u64 = 0xEFFF_FFFD;
    const MS_REMOUNT: u32 = 32;
    /// MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED.
    const MS_PROPAGATION: u32 = 0xf << 17;
    // A namespace another user namespace owns is a sandbox's (bubblewrap, rootless
    // containers): its mounts stay in it. 0: the owner could not be read, so judged.
    if file.arg2 != 0 && file.arg2 != INITIAL_USER_NS {
        return Touches::new();
    }
    // The source of a bind or a move is resolved (what it holds is read later, by name and
    // inode); another mount's source is a device or a file system's name, no path.
    let has_source = crate::events::mount_source_is_path(file.nr, file.flags);
    let op = match file.nr {
        nr::UMOUNT2 => WriteOp::Unmount,
        nr::MOUNT_SETATTR => WriteOp::Remount,
        nr::MOUNT if file.flags & MS_REMOUNT != 0 => WriteOp::Remount,
        // Propagation changed, nothing mounted (no bind, no move).
        nr::MOUNT if !has_source && file.flags & MS_PROPAGATION != 0 => return Touches::new(),
        _ => WriteOp::Mount,
    };
    let mut out = Touches::one(Touch {
        path: first,
        access: Access::Write(op),
    });
    if let (true, Some(source)) = (has_source, second) {
        out.push(Touch {
            path: source,
            access: Access::Look,
        });
    }
    out
}

fn open_touches<'a>(flags: u32, path: &Cow<'a, [u8]>) -> Touches<'a> {
    let touch = |access| Touch {
        path: path.clone(),
        access,
    };
    if flags & (O_PATH | O_DIRECTORY) != 0 {
        return Touches::one(touch(Access::Look));
    }
    let mut out = Touches::new();
    if flags & O_ACCMODE != O_WRONLY {
        out.push(touch(Access::Read));
    }
    if open_writes(flags) {
        out.push(touch(Access::Write(WriteOp::Open)));
    }
    out
}

/// The event's canonical first path; `None` when it cannot be known (or names no file-system
/// object: a pipe or socket walks to a bare `/`).
fn canonical<'a>(file: &'a FileBody, cwd: Option<&[u8]>) -> Option<Cow<'a, [u8]>> {
    let path = match &file.path {
        Some(path) => Cow::Borrowed(path.as_slice()),
        None if file.dirfd == AT_FDCWD && !file.path_arg.is_empty() => {
            Cow::Owned(path::join_lexical(cwd?, &file.path_arg))
        }
        None => return None,
    };
    (*path != *b"/").then_some(path)
}

/// The working directory a file event reveals: the kernel-walked start directory of a relative
/// path given against the cwd, or the new directory of a successful chdir.
pub fn revealed_cwd(kind: EventKind, file: &FileBody) -> Option<Vec<u8>> {
    if kind == EventKind::FileChdir {
        return (file.ret == 0).then(|| file.path.clone()).flatten();
    }
    (file.dirfd == AT_FDCWD && !file.path_arg.starts_with(b"/"))
        .then(|| file.base.clone())
        .flatten()
}

/// Writes that never leave anything behind outside the agent: device sinks and terminals,
/// shared memory (POSIX semaphores and queues of test runners live there).
pub fn is_device_sink(path: &[u8]) -> bool {
    const EXACT: [&[u8]; 9] = [
        b"/dev/null",
        b"/dev/zero",
        b"/dev/full",
        b"/dev/random",
        b"/dev/urandom",
        b"/dev/tty",
        b"/dev/ptmx",
        b"/dev/stdout",
        b"/dev/stderr",
    ];
    const UNDER: [&[u8]; 3] = [b"/dev/pts", b"/dev/fd", b"/dev/shm"];
    EXACT.contains(&path) || UNDER.iter().any(|dir| under(path, dir) && path != *dir)
}

/// A program in a system directory: only root can put one there, so the agent cannot plant a
/// look-alike of a trusted tool.
pub fn is_system_program(exe: &[u8]) -> bool {
    [&b"/usr"[..], b"/bin", b"/sbin"]
        .iter()
        .any(|dir| under(exe, dir))
}

/// `path` is `dir` or below it.
pub fn under(path: &[u8], dir: &[u8]) -> bool {
    crate::policy::path_under(path, dir)
}

/// The last component of a path.
pub fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

/// `/proc/<pid>/…` → the pid and what follows it, `task/<tid>/` skipped (the kernel only
/// lists a thread under its own process, so the pid says whose file it is).
pub fn proc_entry(path: &[u8]) -> Option<(u32, &[u8])> {
    let rest = path.strip_prefix(b"/proc/")?;
    let (pid, rest) = split_number(rest)?;
    let rest = rest.strip_prefix(b"/").unwrap_or(rest);
    if let Some(task) = rest.strip_prefix(b"task/") {
        let (_tid, tail) = split_number(task)?;
        return Some((pid, tail.strip_prefix(b"/").unwrap_or(tail)));
    }
    Some((pid, rest))
}

fn split_number(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let end = bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len());
    let number = std::str::from_utf8(&bytes[..end]).ok()?.parse().ok()?;
    Some((number, &bytes[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_touches_both_paths_in_order_and_nothing_else() {
        let event = crate::detect::testkit::rename(1, "/a/from", "/b/to");
        let crate::events::Body::File(file) = &event.body else {
            panic!("a file event");
        };
        let touches = touches(EventKind::FileRename, file, None);
        let got: Vec<(&[u8], Access)> = touches.iter().map(|t| (&*t.path, t.access)).collect();
        assert_eq!(
            got,
            vec![
                (&b"/a/from"[..], Access::Write(WriteOp::RenameFrom)),
                (&b"/b/to"[..], Access::Write(WriteOp::RenameTo)),
            ]
        );
        assert_eq!(touches.into_iter().count(), 2);
        assert!(super::touches(EventKind::ProcessExec, file, None).is_empty());
    }

    #[test]
    fn open_flags_split_reads_and_writes() {
        let kinds = |flags| -> Vec<Access> {
            open_touches(flags, &Cow::Borrowed(b"/x"))
                .into_iter()
                .map(|t| t.access)
                .collect()
        };
        assert_eq!(kinds(0), vec![Access::Read]);
        assert_eq!(kinds(O_WRONLY), vec![Access::Write(WriteOp::Open)]);
        assert_eq!(
            kinds(O_RDWR),
            vec![Access::Read, Access::Write(WriteOp::Open)]
        );
        assert_eq!(
            kinds(O_CREAT),
            vec![Access::Read, Access::Write(WriteOp::Open)]
        );
        assert_eq!(kinds(O_DIRECTORY), vec![Access::Look]);
        assert_eq!(kinds(O_PATH | O_WRONLY), vec![Access::Look]);
    }

    #[test]
    fn proc_entries_and_device_sinks() {
        assert_eq!(proc_entry(b"/proc/42/environ"), Some((42, &b"environ"[..])));
        assert_eq!(proc_entry(b"/proc/42/task/43/mem"), Some((42, &b"mem"[..])));
        assert_eq!(proc_entry(b"/proc/self/environ"), None);
        assert_eq!(proc_entry(b"/proc/sys/kernel/x"), None);
        assert!(is_device_sink(b"/dev/null"));
        assert!(is_device_sink(b"/dev/pts/3"));
        assert!(!is_device_sink(b"/dev/pts"));
        assert!(!is_device_sink(b"/dev/sda"));
        assert_eq!(outcome(-13), Outcome::Denied);
        assert_eq!(outcome(-2), Outcome::Failed);
    }
}
