//! 32-bit syscalls (`int $0x80`, `sysenter`), which a 64-bit process can make too. The syscall
//! table is x86_64's and a 32-bit call's number means another call there (`open` is 5 in the
//! i386 table, `fstat` in x86_64's), so none is interpreted. The first of each process is
//! recorded (`process.compat_syscall`), so that what the sensor cannot decode is seen.

use agent_sensor_common::{EventKind, SyscallEvent};
use aya_ebpf::bindings::BPF_NOEXIST;

use crate::{
    emit::Record,
    kernel::Typed,
    maps::{off, COMPAT_REPORTED},
};

/// `TS_COMPAT` in `thread_info.status` (arch/x86): a 32-bit syscall is running.
const TS_COMPAT: u32 = 0x0002;

/// Whether the current syscall is a 32-bit one: a load from the current task, no helper call
/// beyond the task's own.
#[inline(always)]
pub fn in_compat_syscall() -> bool {
    Typed::current_task().load::<u32>(off!(task_thread_status)) & TS_COMPAT != 0
}

/// Records the first 32-bit syscall of process `tgid`: its (i386) number and result. (Not
/// inlined: a frame of its own, off `sys_exit`'s nearly full stack.)
#[inline(never)]
pub fn report_once(agent: u64, tgid: u32, nr: u64, ret: i64) -> Option<()> {
    COMPAT_REPORTED.insert(&tgid, &1, BPF_NOEXIST.into()).ok()?;
    let (record, payload) =
        Record::start::<SyscallEvent>(EventKind::ProcessCompatSyscall as u16, agent, 0)?;
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).nr = nr as u32;
        (*payload).args = [nr, 0, 0, 0];
        (*payload).ret = ret;
    }
    record.submit();
    Some(())
}
