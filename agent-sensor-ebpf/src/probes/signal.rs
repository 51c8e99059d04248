//! Signals aimed at the sensor by an agent, however they were sent. kill, tkill, tgkill and the
//! queued-signal calls are recorded at their exit like any syscall of the table; a signal can
//! also come from `pidfd_send_signal` (with a pidfd, so no pid to compare among its arguments)
//! and from calls the table does not list. The kernel's `signal_generate` tracepoint names the
//! task a signal is for, whatever made it: a record is made when that task is the sensor's and
//! the sender is an agent's. Signals are rare, so this costs untracked tasks nothing to speak of.

use agent_sensor_common::{flags, EventKind, SyscallEvent};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};

use super::syscall::spec;
use crate::{
    emit::Record,
    kernel::Typed,
    maps::{off, CONFIG},
    tracking::tracked_agent,
};

/// `signal_generate(sig, info, task, group, result)`, in the sender's context.
#[btf_tracepoint(function = "signal_generate")]
pub fn process_signal_generate(ctx: BtfTracePointContext) -> i32 {
    let _ = try_signal_generate(&ctx);
    0
}

fn try_signal_generate(ctx: &BtfTracePointContext) -> Option<()> {
    let sensor = CONFIG.get(0)?.sensor_tgid;
    let task = Typed::arg(ctx, 2);
    let target_tgid: u32 = task.load(off!(task_tgid));
    if sensor == 0 || target_tgid != sensor {
        return None;
    }
    let agent = tracked_agent((bpf_get_current_pid_tgid() >> 32) as u32)?;
    // The low half, as the kernel reads the number (see `syscall::number`).
    let nr: u64 = Typed::current_regs()?.load::<u64>(off!(regs_nr)) & 0xffff_ffff;
    // kill, tkill, tgkill and the queued ones are the table's signals: recorded at their exit.
    if spec(nr).is_some_and(|s| s.kind == EventKind::ProcessKill as u16) {
        return None;
    }
    let target_pid: u32 = task.load(off!(task_pid));
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
