//! Process-level syscalls a security engineer wants to see from an agent: identity changes,
//! ptrace, signals, memfd, bpf(), module loading, io_uring setup.

use agent_sensor_common::{
    syscalls::{SyscallSpec, NO_ARG},
    SyscallEvent,
};

use crate::{emit::Record, maps::Call};

pub fn exit(c: &Call, spec: &SyscallSpec, agent: u64, ret: i64) {
    let _ = try_exit(c, spec, agent, ret);
}

fn try_exit(p: &Call, spec: &SyscallSpec, agent: u64, ret: i64) -> Option<()> {
    let (record, payload) = Record::start::<SyscallEvent>(spec.kind, agent, 0)?;
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
        (*payload).args = [p.args[0], p.args[1], p.args[2], p.args[3]];
        (*payload).ret = ret;
    }
    record.submit();
    Some(())
}
