//! Process lifecycle: task creation, exec, exit, cgroup moves. Scheduler tracepoints only: they
//! fire per task event, not per syscall, so untracked tasks pay nothing on their syscalls.

use agent_sensor_common::{
    flags, stdio, EventKind, ExecEvent, ExitEvent, ForkEvent, MAX_ARGV, MAX_FILENAME,
};
use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel_str, bpf_probe_read_user},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
    EbpfContext,
};
use aya_log_ebpf::info;

use crate::{
    emit::Record,
    kernel::{cgroup_id, current_file, file_identity, read, read_ptr, task_cgroup_id},
    maps::{off, SOCK_OWNERS},
    tracking::{cgroup_agent, current_agent, discover, track, tracked_agent, untrack},
};

/// `clone3(CLONE_INTO_CGROUP)`: the child starts life in the cgroup given to clone3.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `task_newtask(task, clone_flags)` runs in the parent inside `copy_process`, before the child
/// can be scheduled: a tracked parent's child is tracked before it executes one instruction.
#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn process_task_newtask(ctx: RawTracePointContext) -> i32 {
    let _ = try_task_newtask(&ctx);
    0
}

fn try_task_newtask(ctx: &RawTracePointContext) -> Option<()> {
    let child: u64 = ctx.arg(0);
    let clone_flags: u64 = ctx.arg(1);
    let child_pid: u32 = read(child, off!(task_pid))?;
    let child_tgid: u32 = read(child, off!(task_tgid))?;
    let parent_tgid = ctx.tgid();
    let (agent, via_cgroup) = match tracked_agent(parent_tgid) {
        Some(agent) => (agent, false),
        // CLONE_INTO_CGROUP: the child may be born straight into an agent's cgroup.
        None if clone_flags & CLONE_INTO_CGROUP != 0 => {
            (cgroup_agent(task_cgroup_id(child)?)?, true)
        }
        None => return None,
    };
    if child_tgid != parent_tgid {
        track(child_tgid, agent);
    }
    let (record, payload) =
        Record::start::<ForkEvent>(EventKind::ProcessFork as u16, agent, via_flag(via_cgroup))?;
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).child_pid = child_pid;
        (*payload).child_tgid = child_tgid;
    }
    record.submit();
    Some(())
}

/// `cgroup_attach_task(dst_cgrp, path, task, threadgroup)`: a task moved into an agent's cgroup
/// (e.g. by `agent-sensor exec`) is tracked from that moment.
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn process_cgroup_attach_task(ctx: RawTracePointContext) -> i32 {
    let _ = try_cgroup_attach_task(&ctx);
    0
}

fn try_cgroup_attach_task(ctx: &RawTracePointContext) -> Option<()> {
    let cgroup: u64 = ctx.arg(0);
    let task: u64 = ctx.arg(2);
    // Only the cgroup v2 hierarchy (id 0): v1 hierarchies have ids of their own that could
    // collide with an agent's v2 cgroup id.
    let root = read_ptr(cgroup, off!(cgroup_root))?;
    let hierarchy: i32 = read(root, off!(cgroup_root_hierarchy_id))?;
    if hierarchy != 0 {
        return None;
    }
    let agent = cgroup_agent(cgroup_id(cgroup)?)?;
    let tgid: u32 = read(task, off!(task_tgid))?;
    track(tgid, agent);
    // Rare (once per process joining an agent), and the daemon's log should show it.
    info!(ctx, "process {} joined the cgroup of agent {}", tgid, agent);
    Some(())
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn process_sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &RawTracePointContext) -> Option<()> {
    let task: u64 = ctx.arg(0);
    let old_pid: u32 = ctx.arg(1);
    let bprm: u64 = ctx.arg(2);
    let (agent, how) = match current_agent(ctx.tgid()) {
        Some((agent, via_cgroup)) => (agent, via_flag(via_cgroup)),
        None => (discover(task, ctx.tgid())?, flags::DISCOVERED),
    };
    let (record, payload) = Record::start::<ExecEvent>(EventKind::ProcessExec as u16, agent, how)?;

    let mut filename_len = 0u64;
    if let Some(filename) = read_ptr(bprm, off!(binprm_filename)) {
        // SAFETY: the tail has MAX_EVENT_BYTES of room; the helper bounds the copy.
        let copied = unsafe {
            bpf_probe_read_kernel_str(
                record.tail().cast(),
                MAX_FILENAME as u32,
                filename as *const _,
            )
        };
        if copied > 0 {
            filename_len = (copied as u64 - 1) & (MAX_FILENAME as u64 - 1);
            if copied as usize == MAX_FILENAME {
                record.add_flags(flags::TRUNCATED);
            }
        }
    }
    record.grow(filename_len);

    let mut argv_len = 0u64;
    if let Some(mm) = read_ptr(task, off!(task_mm)) {
        let start: u64 = read(mm, off!(mm_arg_start)).unwrap_or(0);
        let end: u64 = read(mm, off!(mm_arg_end)).unwrap_or(0);
        if end > start {
            let mut want = end - start;
            if want > MAX_ARGV as u64 - 1 {
                want = MAX_ARGV as u64 - 1;
                record.add_flags(flags::TRUNCATED);
            }
            let want = want & (MAX_ARGV as u64 - 1);
            // SAFETY: `want` < MAX_ARGV and the tail has room; the helper checks the source.
            let ret = unsafe {
                bpf_probe_read_user(record.tail().cast(), want as u32, start as *const _)
            };
            if ret == 0 {
                argv_len = want;
            }
        }
    }
    record.grow(argv_len);

    // At sched_process_exec the current task is the one exec'ing.
    let stdio = [stdio_kind(0), stdio_kind(1), stdio_kind(2)];
    let exec_file = read_ptr(bprm, off!(binprm_file));
    let exe_len = exec_file
        .map(|file| record.append_walk(file + off!(file_path)))
        .unwrap_or(0);
    let (dev, ino, mode) = exec_file.map(file_identity).unwrap_or((0, 0, 0));
    // A forbidden binary dies before its first instruction: the signal is delivered on the
    // way back to user space, which the new image never reaches.
    if crate::kernel::kill_if_listed(&crate::maps::FORBIDDEN_EXEC, dev, ino) {
        record.add_flags(flags::KILLED_IN_KERNEL);
    }
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).filename_len = filename_len as u16;
        (*payload).argv_len = argv_len as u16;
        (*payload).exe_len = exe_len;
        (*payload).old_pid = old_pid;
        (*payload).dev = dev;
        (*payload).ino = ino;
        (*payload).mode = mode;
        (*payload).stdio = stdio;
    }
    record.submit();
    Some(())
}

/// `sched_process_exit(task)` runs for every exiting thread; the process is gone when the last
/// one leaves (`signal->live` reached zero before the tracepoint).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn process_sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &RawTracePointContext) -> Option<()> {
    let task: u64 = ctx.arg(0);
    let tgid = ctx.tgid();
    let agent = tracked_agent(tgid)?;
    let signal = read_ptr(task, off!(task_signal))?;
    let live: i32 = read(signal, off!(signal_live))?;
    if live != 0 {
        return None;
    }
    untrack(tgid);
    let exit_code: u32 = read(task, off!(task_exit_code)).unwrap_or(0);
    // A lookup first: most processes own no counted socket, and a delete that finds nothing
    // still takes the bucket's lock.
    // SAFETY: the value is only tested for presence.
    let owned_sockets =
        unsafe { SOCK_OWNERS.get(&tgid) }.is_some() && SOCK_OWNERS.remove(&tgid).is_ok();
    let how = if owned_sockets {
        flags::OWNED_SOCKETS
    } else {
        0
    };
    let (record, payload) = Record::start::<ExitEvent>(EventKind::ProcessExit as u16, agent, how)?;
    // SAFETY: payload points into the scratch record.
    unsafe { (*payload).exit_code = exit_code };
    record.submit();
    Some(())
}

/// What kind of file fd `fd` of the current task is.
#[inline(always)]
fn stdio_kind(fd: i64) -> u8 {
    let Some(file) = current_file(fd) else {
        return stdio::CLOSED;
    };
    let (_, _, mode) = file_identity(file);
    match mode & 0o170000 {
        0o100000 => stdio::FILE,
        0o010000 => stdio::PIPE,
        0o140000 => stdio::SOCKET,
        0o020000 => stdio::CHAR,
        _ => stdio::OTHER,
    }
}

#[inline(always)]
fn via_flag(via_cgroup: bool) -> u16 {
    if via_cgroup {
        flags::VIA_CGROUP
    } else {
        0
    }
}
