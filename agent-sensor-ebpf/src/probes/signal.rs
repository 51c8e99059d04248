//! Signals aimed at the sensor by an agent, however they were sent. kill, tkill, tgkill and the
//! queued-signal calls are recorded at their exit like any syscall of the table; a signal can
//! also come from `pidfd_send_signal` (with a pidfd, so no pid to compare among its arguments)
//! and from calls the table does not list. The kernel's `signal_generate` tracepoint names the
//! task a signal is for, whatever made it: a record is made when that task is the sensor's and
//! the sender is an agent's. Signals are rare, so this costs untracked tasks nothing to speak of.

use agent_sensor_common::{flags, EventKind, SyscallEvent};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    emit::Record,
    maps::{off, CONFIG},
    tracking::tracked_agent,
};

/// kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo: recorded at their exit already.
const RECORDED_AT_EXIT: [u64; 5] = [62, 200, 234, 129, 297];

/// `signal_generate(sig, info, task, group, result)`, in the sender's context.
#[btf_tracepoint(function = "signal_generate")]
pub fn process_signal_generate(ctx: BtfTracePointContext) -> i32 {
    let _ = try_signal_generate(&ctx);
    0
}

fn try_signal_generate(ctx: &BtfTracePointContext) -> Option<()> {
    let sensor = CONFIG.get(0)?.sensor_tgid;
    let task: *const u8 = ctx.arg(2);
    let (tgid_at, pid_at, nr_at) = (off!(task_tgid), off!(task_pid), off!(regs_nr));
    // SAFETY: `task` is the tracepoint's `struct task_struct *` (BTF-typed); the verifier turns
    // the load into a fault-safe one at this offset of the running kernel's task_struct.
    let target_tgid = unsafe { task.add(tgid_at as usize).cast::<u32>().read_volatile() };
    if sensor == 0 || target_tgid != sensor {
        return None;
    }
    let agent = tracked_agent((bpf_get_current_pid_tgid() >> 32) as u32)?;
    // SAFETY: plain helper calls; the result is the current task's `struct pt_regs *`.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return None;
    }
    // SAFETY: as above, a BTF-typed pointer: the verifier checks the offset against pt_regs.
    let nr = unsafe { regs.add(nr_at as usize).cast::<u64>().read_volatile() };
    if RECORDED_AT_EXIT.contains(&nr) {
        return None;
    }
    // SAFETY: as for the tgid above.
    let target_pid = unsafe { task.add(pid_at as usize).cast::<u32>().read_volatile() };
    let sig: u64 = ctx.arg(0);
    let group: u64 = ctx.arg(3);
    let result: u64 = ctx.arg(4);
    let (record, payload) = Record::start::<SyscallEvent>(
        EventKind::ProcessKill as u16,
        agent,
        flags::SIGNAL_GENERATED,
    )?;
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).nr = nr as u32;
        (*payload).args = [
            target_tgid as u64,
            target_pid as u64,
            sig as u32 as u64,
            group as u32 as u64,
        ];
        (*payload).ret = result as i32 as i64;
    }
    record.submit();
    Some(())
}
