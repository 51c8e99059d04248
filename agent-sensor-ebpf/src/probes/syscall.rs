//! One raw tracepoint on `sys_enter` and one on `sys_exit` for every syscall the sensor watches:
//! an untracked task pays one hash lookup and returns (per-syscall perf tracepoints would put
//! every task on the host on the slow syscall path, see BENCHMARKS.md).
//!
//! Entry stashes arguments and user strings in `PENDING` (strings read at entry cannot be
//! swapped by a racing thread before the kernel uses them); exit adds the result and what the
//! kernel resolved, and emits one record. What to record per syscall comes from the
//! `SYSCALL_SPECS` map, not from code (see `agent_sensor_common::syscalls`).

use agent_sensor_common::{
    drop_slot,
    syscalls::{account, family, SyscallSpec, MAX_SYSCALL_NR},
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};

use super::{file, net, process_calls, sockets};
use crate::{
    kernel::read,
    maps::{
        count_drop, off, Pending, PENDING, PENDING_SCRATCH, SYSCALL_SPECS, TAIL, TAIL_DNS_ANSWER,
    },
    tracking::hot_tracked_agent,
};

#[inline(always)]
fn spec(nr: u64) -> Option<SyscallSpec> {
    if nr >= MAX_SYSCALL_NR as u64 {
        return None;
    }
    SYSCALL_SPECS.get(nr as u32).copied()
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn syscall_sys_enter(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_enter(&ctx);
    0
}

fn try_sys_enter(ctx: &RawTracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    hot_tracked_agent((pid_tgid >> 32) as u32)?;
    let nr: u64 = ctx.arg(1);
    let spec = spec(nr)?;
    let regs: u64 = ctx.arg(0);
    match spec.family {
        family::NONE | family::RECV => return None,
        family::CLOSE => {
            let fd: u64 = read(regs, off!(regs_args[0]))?;
            let agent = hot_tracked_agent((pid_tgid >> 32) as u32)?;
            return sockets::close(fd as i32 as i64, agent);
        }
        _ => {}
    }
    let pending = PENDING_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
    let p: &mut Pending = unsafe { &mut *pending };
    p.nr = nr as u32;
    p.path_len = 0;
    p.path2_len = 0;
    p.base_len = 0;
    p.base2_len = 0;
    p.flags = 0;
    p.args[0] = read(regs, off!(regs_args[0])).unwrap_or(0);
    p.args[1] = read(regs, off!(regs_args[1])).unwrap_or(0);
    p.args[2] = read(regs, off!(regs_args[2])).unwrap_or(0);
    p.args[3] = read(regs, off!(regs_args[3])).unwrap_or(0);
    p.args[4] = read(regs, off!(regs_args[4])).unwrap_or(0);
    p.args[5] = read(regs, off!(regs_args[5])).unwrap_or(0);
    match spec.family {
        family::FILE => file::enter(p, &spec),
        family::NET => net::enter(p),
        _ => process_calls::enter(p, &spec),
    }
    if PENDING.insert(&pid_tgid, p, 0).is_err() {
        count_drop(drop_slot::PENDING_FULL);
    }
    Some(())
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn syscall_sys_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

fn try_sys_exit(ctx: &RawTracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let agent = hot_tracked_agent((pid_tgid >> 32) as u32)?;
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let nr: u64 = read(regs, off!(regs_nr))?;
    let spec = spec(nr)?;
    if spec.account != account::NONE {
        let fd: u64 = read(regs, off!(regs_args[0])).unwrap_or(u64::MAX);
        let _ = sockets::count(spec.account, fd as i32 as i64, ret, agent);
    }
    if spec.family == family::RECV {
        let args = [
            read(regs, off!(regs_args[0])).unwrap_or(0),
            read(regs, off!(regs_args[1])).unwrap_or(0),
            read(regs, off!(regs_args[4])).unwrap_or(0),
            read(regs, off!(regs_args[5])).unwrap_or(0),
        ];
        if net::recv_exit(nr as u32, args, spec.kind, agent, ret) {
            // SAFETY: same program type; on success it does not return.
            unsafe { TAIL.tail_call(ctx, TAIL_DNS_ANSWER) };
        }
        return None;
    }
    if !matches!(spec.family, family::FILE | family::NET | family::PROCESS) {
        return None;
    }
    let pending = PENDING.get_ptr(&pid_tgid)?;
    // SAFETY: pointer from a successful lookup; only this thread uses its own entry.
    let p: &Pending = unsafe { &*pending };
    // The entry is this syscall's unless the thread's previous one never exited (a restart).
    if p.nr as u64 == nr {
        match spec.family {
            family::FILE => file::exit(p, &spec, agent, ret),
            family::NET => net::exit(p, &spec, agent, ret),
            _ => process_calls::exit(p, &spec, agent, ret),
        }
    }
    let _ = PENDING.remove(&pid_tgid);
    Some(())
}
