//! File syscalls: the strings the process passed, the directories relative paths start from,
//! and, where the kernel resolved an object we can reach (an opened or passed fd, the new cwd),
//! its canonical path, device and inode.

use agent_sensor_common::{
    filter_slot, flags, lists, report,
    syscalls::{nr, SyscallSpec as Spec, NO_ARG as NONE},
    EventKind, FileEvent,
};

use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::{
    emit::Record,
    kernel::{
        current_file, current_task, file_identity, kill_if_listed, mount_ns_owner, read_ptr,
        walk_path,
    },
    maps::{count_filtered, lists_hold, off, reports, Call, KILL_ON_ACCESS},
    repeats::{self, Repeat},
};

/// `-ENOENT` and `-ENOTDIR`: the call's path named nothing.
const ENOENT: i64 = 2;
const ENOTDIR: i64 = 20;

/// `AT_FDCWD`.
const AT_FDCWD: i64 = -100;
/// `O_CREAT | O_WRONLY | O_TRUNC`: what `creat` means.
const CREAT_FLAGS: u64 = 0o1101;

#[inline(always)]
fn arg(c: &Call, index: u8) -> u64 {
    match index {
        0 => c.args[0],
        1 => c.args[1],
        2 => c.args[2],
        3 => c.args[3],
        4 => c.args[4],
        5 => c.args[5],
        _ => 0,
    }
}

/// Walks the directory a relative path given with `dirfd` starts from into `dst`, as
/// `walk_path` does.
#[inline(always)]
fn walk_base(dirfd: i64, dst: *mut u8) -> (u16, u16) {
    let path = if dirfd == AT_FDCWD {
        match read_ptr(current_task(), off!(task_fs)) {
            Some(fs) => fs + off!(fs_pwd),
            None => return (0, 0),
        }
    } else {
        match current_file(dirfd) {
            Some(file) => file + off!(file_path),
            None => return (0, flags::PATH_UNRESOLVED),
        }
    };
    walk_path(path, dst)
}

#[inline(always)]
fn dirfd_of(c: &Call, index: u8) -> i64 {
    if index == NONE {
        AT_FDCWD
    } else {
        arg(c, index) as i32 as i64
    }
}

/// Completes an open's arguments: what `creat` means, and openat2's `struct open_how`.
#[inline(always)]
fn open_args(c: &mut Call) {
    match c.nr {
        // creat has no flags argument: record what it means.
        nr::CREAT => c.args[5] = CREAT_FLAGS,
        // openat2: flags, mode and resolve live in `struct open_how` in user memory.
        nr::OPENAT2 => {
            let how = c.args[2];
            let mut fields = [0u64; 3];
            // SAFETY: stack destination of the right size; the helper checks the user address.
            let ret = unsafe {
                aya_ebpf::helpers::generated::bpf_probe_read_user(
                    fields.as_mut_ptr().cast(),
                    24,
                    how as *const _,
                )
            };
            if ret == 0 {
                c.args[2] = fields[0];
                c.args[3] = fields[1];
                c.args[4] = fields[2];
            }
        }
        _ => {}
    }
}

pub fn exit(c: &mut Call, spec: &Spec, agent: u64, ret: i64) {
    // Nothing was read, written or refused: counted, and sent only on request (the dynamic
    // loader alone makes thousands of these in a build, over a third of a session's events).
    if (ret == -ENOENT || ret == -ENOTDIR) && !reports(report::MISSING_PATHS) {
        count_filtered(filter_slot::MISSING_PATH);
        return;
    }
    let opens = spec.kind == EventKind::FileOpen as u16;
    if opens {
        open_args(c);
    } else if spec.kind == EventKind::FileMount as u16 {
        // No mount call has a sixth argument; the table records this one as `arg2`.
        c.args[5] = mount_ns_owner();
    }
    // The object the kernel resolved, where we can reach it without a lookup of our own.
    let object = if opens {
        if ret >= 0 {
            current_file(ret)
        } else {
            None
        }
    } else if spec.fd != NONE {
        current_file(arg(c, spec.fd) as i32 as i64)
    } else if spec.dirfd != NONE && names_nothing(arg(c, spec.path)) {
        // No path with a directory fd: the call acts on the fd's own file (`AT_EMPTY_PATH`,
        // the mount API's empty paths, `utimensat`'s NULL for futimens). Decided here, from
        // the string's first byte, rather than from the copy `record` makes: that branch in
        // `record` took `sys_exit` and the io_uring program past the verifier's budget.
        current_file(arg(c, spec.dirfd) as i32 as i64)
    } else {
        None
    };
    c.file = object.unwrap_or(0);
    // Volatile: LLVM turns plain zero stores in a row into a call to the linker's memset, a
    // byte loop (3 % of a tracked open/close loop).
    // SAFETY: fields of this CPU's `Call`.
    unsafe {
        core::ptr::addr_of_mut!(c.dev).write_volatile(0);
        core::ptr::addr_of_mut!(c.ino).write_volatile(0);
        core::ptr::addr_of_mut!(c.killed).write_volatile(0);
        core::ptr::addr_of_mut!(c.repeats).write_volatile(0);
    }
    if let Some(file) = object {
        // Before the repeat check: a listed file kills at every open, repeated or not.
        if opens && lists_hold(lists::KILL_ON_ACCESS) {
            identify(c, file);
            c.killed = kill_if_listed(&KILL_ON_ACCESS, c.dev, c.ino) as u32;
        }
        if opens {
            let flags = arg(c, spec.flags) as u32;
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            match repeats::check(agent, tgid, file, flags) {
                Repeat::Counted => return,
                Repeat::Send(repeats) => c.repeats = repeats,
            }
        }
        if c.ino == 0 {
            identify(c, file);
        }
    }
    let _ = record(c, spec, agent, ret);
}

/// Whether the user string at `path` is NULL or empty.
#[inline(always)]
fn names_nothing(path: u64) -> bool {
    if path == 0 {
        return true;
    }
    let mut first = [0u8; 1];
    // SAFETY: a one-byte stack destination; the helper checks the user address.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            first.as_mut_ptr().cast(),
            1,
            path as *const _,
        )
    };
    ret == 0 && first[0] == 0
}

/// The device and inode of `file` into `c`.
#[inline(always)]
fn identify(c: &mut Call, file: u64) {
    let (dev, ino, _) = file_identity(file);
    c.dev = dev;
    c.ino = ino;
}

/// Records file call `c`, its object (if any) identified already. (Inlined: a frame of its
/// own below `exit`'s would take `sys_exit`'s chain of frames past the 512 bytes they share.)
#[inline(always)]
pub fn record(c: &Call, spec: &Spec, agent: u64, ret: i64) -> Option<()> {
    let kernel_paths = c.via == flags::VIA_IO_URING as u32;
    let (record, payload) = Record::start::<FileEvent>(spec.kind, agent, c.via as u16)?;
    let opens = spec.kind == EventKind::FileOpen as u16;
    let path_user = if spec.path != NONE {
        arg(c, spec.path)
    } else {
        0
    };
    let path_first = record.tail();
    let path_len = record.append_str(path_user, kernel_paths);
    // SAFETY: `path_first` is inside the scratch buffer.
    let relative = path_len > 0 && unsafe { *path_first } != b'/';
    let path2_user = if spec.path2 != NONE {
        arg(c, spec.path2)
    } else {
        0
    };
    let path2_first = record.tail();
    let path2_len = record.append_str(path2_user, kernel_paths);
    // SAFETY: as above. A symlink's target is text, not resolved against anything.
    let relative2 = path2_len > 0
        && unsafe { *path2_first } != b'/'
        && spec.kind != EventKind::FileSymlink as u16;

    let mut resolved_len = 0;
    if c.file != 0 {
        resolved_len = record.append_walk(c.file + off!(file_path));
        if c.killed != 0 {
            record.add_flags(flags::KILLED_IN_KERNEL);
        }
    } else if spec.kind == EventKind::FileChdir as u16 && ret == 0 {
        if let Some(fs) = read_ptr(current_task(), off!(task_fs)) {
            resolved_len = record.append_walk(fs + off!(fs_pwd));
        }
    }
    // The directories relative paths start from, walked now: the cwd and dirfds are the
    // ones the call used (an open needs none when it is resolved from its fd).
    let base_len = if relative && (!opens || c.file == 0) {
        record.append_written(|dst| walk_base(dirfd_of(c, spec.dirfd), dst))
    } else {
        0
    };
    let dirfd2 = dirfd_of(c, spec.dirfd2);
    // A second path relative to the same directory as the first shares its base.
    let base2_len = if relative2 && (dirfd2 != dirfd_of(c, spec.dirfd) || base_len == 0) {
        record.append_written(|dst| walk_base(dirfd2, dst))
    } else {
        0
    };
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).nr = c.nr;
        (*payload).dirfd = dirfd_of(c, spec.dirfd) as i32;
        (*payload).flags = if spec.flags != NONE {
            arg(c, spec.flags) as u32
        } else {
            0
        };
        (*payload).mode = if spec.mode != NONE {
            arg(c, spec.mode) as u32
        } else {
            0
        };
        (*payload).ret = ret;
        (*payload).dev = c.dev;
        (*payload).ino = c.ino;
        (*payload).repeats = c.repeats;
        (*payload).path_len = path_len;
        (*payload).path2_len = path2_len;
        (*payload).resolved_len = resolved_len;
        (*payload).base_len = base_len;
        (*payload).base2_len = base2_len;
        (*payload).arg = if spec.arg != NONE {
            arg(c, spec.arg)
        } else {
            0
        };
        (*payload).arg2 = if spec.arg2 != NONE {
            arg(c, spec.arg2)
        } else {
            0
        };
    }
    record.submit();
    Some(())
}
