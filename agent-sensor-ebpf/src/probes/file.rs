//! File syscalls: the strings the process passed, the directories relative paths start from,
//! and, where the kernel resolved an object we can reach (an opened or passed fd, the new cwd),
//! its canonical path, device and inode.

use agent_sensor_common::{
    flags,
    syscalls::{nr, SyscallSpec as Spec, NO_ARG as NONE},
    EventKind, FileEvent, MAX_KERNEL_PATH, MAX_USER_PATH,
};
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user_str};

use crate::{
    emit::Record,
    kernel::{current_task, file_identity, kill_if_listed, read_ptr, task_file, walk_path},
    maps::{off, Pending, KILL_ON_ACCESS, PENDING_BASE, PENDING_BASE_SCRATCH},
};

/// `AT_FDCWD`.
const AT_FDCWD: i64 = -100;
/// `O_CREAT | O_WRONLY | O_TRUNC`: what `creat` means.
const CREAT_FLAGS: u64 = 0o1101;

#[inline(always)]
fn arg(p: &Pending, index: u8) -> u64 {
    match index {
        0 => p.args[0],
        1 => p.args[1],
        2 => p.args[2],
        3 => p.args[3],
        4 => p.args[4],
        5 => p.args[5],
        _ => 0,
    }
}

/// Copies a user string into `dst` (MAX_USER_PATH bytes); returns its length without the NUL.
#[inline(always)]
fn read_user_path(src: u64, dst: *mut u8, flags: &mut u16) -> u16 {
    if src == 0 {
        return 0;
    }
    // SAFETY: `dst` has MAX_USER_PATH bytes; the helper checks the user address.
    let copied =
        unsafe { bpf_probe_read_user_str(dst.cast(), MAX_USER_PATH as u32, src as *const _) };
    if copied <= 0 {
        return 0;
    }
    if copied as usize == MAX_USER_PATH {
        *flags |= agent_sensor_common::flags::TRUNCATED;
    }
    ((copied as u64 - 1) & (MAX_USER_PATH as u64 - 1)) as u16
}

/// Walks the directory a relative path given with `dirfd` starts from into `dst`.
#[inline(always)]
fn walk_base(dirfd: i64, dst: *mut u8, flags: &mut u16) -> u16 {
    let task = current_task();
    let path = if dirfd == AT_FDCWD {
        match read_ptr(task, off!(task_fs)) {
            Some(fs) => fs + off!(fs_pwd),
            None => return 0,
        }
    } else {
        match task_file(task, dirfd) {
            Some(file) => file + off!(file_path),
            None => {
                *flags |= agent_sensor_common::flags::PATH_UNRESOLVED;
                return 0;
            }
        }
    };
    let (len, walk_flags) = walk_path(path, dst);
    *flags |= walk_flags;
    len & (MAX_KERNEL_PATH as u16 - 1)
}

#[inline(always)]
fn dirfd_of(p: &Pending, index: u8) -> i64 {
    if index == NONE {
        AT_FDCWD
    } else {
        arg(p, index) as i32 as i64
    }
}

pub fn enter(p: &mut Pending, spec: &Spec) {
    let mut flags = 0u16;
    let Some(bases) = PENDING_BASE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
    let bases = unsafe { &mut *bases };
    // Opens do not come here (see `open_args`).
    if spec.path != NONE {
        p.path_len = read_user_path(arg(p, spec.path), p.path.as_mut_ptr(), &mut flags);
        if p.path_len > 0 && p.path[0] != b'/' {
            p.base_len = walk_base(dirfd_of(p, spec.dirfd), bases.base.as_mut_ptr(), &mut flags);
        }
    }
    if spec.path2 != NONE {
        p.path2_len = read_user_path(arg(p, spec.path2), p.path2.as_mut_ptr(), &mut flags);
        // A symlink's target is text, not resolved against anything at creation.
        let relative = p.path2_len > 0 && p.path2[0] != b'/';
        if relative && spec.kind as u16 != EventKind::FileSymlink as u16 {
            let dirfd2 = dirfd_of(p, spec.dirfd2);
            if dirfd2 != dirfd_of(p, spec.dirfd) || p.base_len == 0 {
                p.base2_len = walk_base(dirfd2, bases.base2.as_mut_ptr(), &mut flags);
            }
        }
    }
    if (p.base_len > 0 || p.base2_len > 0)
        && PENDING_BASE
            .insert(&bpf_get_current_pid_tgid(), &*bases, 0)
            .is_err()
    {
        // Without its start directory the event keeps the argument only (path_source tells).
        p.base_len = 0;
        p.base2_len = 0;
        flags |= agent_sensor_common::flags::PATH_UNRESOLVED;
    }
    p.flags = flags;
}

/// The arguments of an open at its exit, completed: an open is recorded from its exit alone
/// (see `probes::syscall`), its path string read there and its start directory walked there
/// only if it failed (one that succeeded is resolved from its new fd).
pub fn open_args(p: &mut Pending) {
    match p.nr {
        // creat has no flags argument: record what it means.
        nr::CREAT => p.args[5] = CREAT_FLAGS,
        // openat2: flags, mode and resolve live in `struct open_how` in user memory.
        nr::OPENAT2 => {
            let how = p.args[2];
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
                p.args[2] = fields[0];
                p.args[3] = fields[1];
                p.args[4] = fields[2];
            }
        }
        _ => {}
    }
}

pub fn exit(p: &Pending, spec: &Spec, agent: u64, ret: i64) {
    let _ = try_exit(p, spec, agent, ret);
}

/// The first path string: as stashed at entry, or read now for an open (which has no entry
/// work) or when entry could not read it (the string's page was not resident yet; the kernel
/// faulted it in while serving the call).
#[inline(always)]
fn append_user_path(record: &Record, stashed: *const u8, stashed_len: u16, user: u64) -> u16 {
    if stashed_len > 0 {
        return record.append(stashed, stashed_len, MAX_USER_PATH as u64 - 1);
    }
    let mut flags = 0;
    let len = read_user_path(user, record.tail(), &mut flags);
    record.add_flags(flags);
    record.grow(len as u64);
    len
}

fn try_exit(p: &Pending, spec: &Spec, agent: u64, ret: i64) -> Option<()> {
    let (record, payload) = Record::start::<FileEvent>(spec.kind, agent, p.flags)?;
    let path_user = if spec.path != NONE {
        arg(p, spec.path)
    } else {
        0
    };
    let path_first = record.tail();
    let path_len = append_user_path(&record, p.path.as_ptr(), p.path_len, path_user);
    // SAFETY: `path_first` is inside the scratch buffer.
    let relative = path_len > 0 && unsafe { *path_first } != b'/';
    // The start directory is walked now for a failed open (a successful one is resolved from
    // its fd), and for any other call when entry could not (the string was unreadable then).
    let late_relative = relative
        && if spec.kind == EventKind::FileOpen as u16 {
            ret < 0
        } else {
            p.path_len == 0
        };
    let path2_user = if spec.path2 != NONE {
        arg(p, spec.path2)
    } else {
        0
    };
    let path2_len = append_user_path(&record, p.path2.as_ptr(), p.path2_len, path2_user);

    // The object the kernel resolved, where we can reach it without a lookup of our own.
    let task = current_task();
    let object = if spec.kind == EventKind::FileOpen as u16 {
        if ret >= 0 {
            task_file(task, ret)
        } else {
            None
        }
    } else if spec.fd != NONE {
        task_file(task, arg(p, spec.fd) as i32 as i64)
    } else {
        None
    };
    let mut resolved_len = 0;
    let (mut dev, mut ino) = (0, 0);
    if let Some(file) = object {
        resolved_len = record.append_walk(file + off!(file_path));
        let (d, i, _) = file_identity(file);
        dev = d;
        ino = i;
        if spec.kind == EventKind::FileOpen as u16 && kill_if_listed(&KILL_ON_ACCESS, dev, ino) {
            record.add_flags(flags::KILLED_IN_KERNEL);
        }
    } else if spec.kind == EventKind::FileChdir as u16 && ret == 0 {
        if let Some(fs) = read_ptr(task, off!(task_fs)) {
            resolved_len = record.append_walk(fs + off!(fs_pwd));
        }
    }
    let mut base_len = if late_relative {
        let mut flags = 0;
        let len = walk_base(dirfd_of(p, spec.dirfd), record.tail(), &mut flags);
        record.add_flags(flags);
        record.grow(len as u64);
        len
    } else {
        0
    };
    let mut base2_len = 0;
    if p.base_len > 0 || p.base2_len > 0 {
        let pid_tgid = bpf_get_current_pid_tgid();
        if let Some(bases) = PENDING_BASE.get_ptr(&pid_tgid) {
            // SAFETY: pointer from a successful lookup; only this thread uses its entry.
            let bases = unsafe { &*bases };
            if !late_relative {
                base_len =
                    record.append(bases.base.as_ptr(), p.base_len, MAX_KERNEL_PATH as u64 - 1);
            }
            base2_len = record.append(
                bases.base2.as_ptr(),
                p.base2_len,
                MAX_KERNEL_PATH as u64 - 1,
            );
        }
        let _ = PENDING_BASE.remove(&pid_tgid);
    }
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).nr = p.nr;
        (*payload).dirfd = dirfd_of(p, spec.dirfd) as i32;
        (*payload).flags = if spec.flags != NONE {
            arg(p, spec.flags) as u32
        } else {
            0
        };
        (*payload).mode = if spec.mode != NONE {
            arg(p, spec.mode) as u32
        } else {
            0
        };
        (*payload).ret = ret;
        (*payload).dev = dev;
        (*payload).ino = ino;
        (*payload).path_len = path_len;
        (*payload).path2_len = path2_len;
        (*payload).resolved_len = resolved_len;
        (*payload).base_len = base_len;
        (*payload).base2_len = base2_len;
        (*payload).arg = if spec.arg != NONE {
            arg(p, spec.arg)
        } else {
            0
        };
        (*payload).arg2 = if spec.arg2 != NONE {
            arg(p, spec.arg2)
        } else {
            0
        };
    }
    record.submit();
    Some(())
}
