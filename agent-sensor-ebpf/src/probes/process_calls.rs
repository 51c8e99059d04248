//! Process-level syscalls a security engineer wants to see from an agent: identity changes,
//! ptrace, signals, memfd, bpf(), module loading, io_uring setup.

use agent_sensor_common::{
    syscalls::{nr, SyscallSpec, NO_ARG},
    SyscallEvent,
};

use crate::{
    emit::Record,
    kernel::{current_file, pidfd_pid},
    maps::Call,
};

pub fn exit(c: &Call, spec: &SyscallSpec, agent: u64, ret: i64) {
    let _ = try_exit(c, spec, agent, ret);
}

fn try_exit(p: &Call, spec: &SyscallSpec, agent: u64, ret: i64) -> Option<()> {
    let (record, payload) = Record::start::<SyscallEvent>(spec.kind, agent, p.via as u16)?;
    // memfd_create's name: the one string argument among these.
    let str_len = if spec.path != NO_ARG {
        record.append_user_str(p.args[0])
    } else {
        0
    };
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).nr = p.nr;
        (*payload).str_len = str_len;
        (*payload).args = [p.args[0], p.args[1], p.args[2], fourth_arg(p)];
        (*payload).ret = ret;
    }
    record.submit();
    Some(())
}

/// `args[3]` as recorded: the call's fourth argument, except for `pidfd_getfd` (which has
/// three), where it is the pid its pidfd names, read while the pidfd is surely open (the
/// detector names the process whose descriptor was taken; 0 where it is not a pidfd).
#[inline(always)]
fn fourth_arg(p: &Call) -> u64 {
    if p.nr != nr::PIDFD_GETFD {
        return p.args[3];
    }
    current_file(p.args[0] as i32 as i64)
        .and_then(pidfd_pid)
        .unwrap_or(0) as u64
}
