//! Process-level syscalls a security engineer wants to see from an agent: identity changes,
//! ptrace, signals, memfd, bpf(), module loading, io_uring setup.

use agent_sensor_common::{
    syscalls::{SyscallSpec, NO_ARG},
    SyscallEvent, MAX_USER_PATH,
};
use aya_ebpf::helpers::generated::bpf_probe_read_user_str;

use crate::{emit::Record, maps::Call};

/// Copies the one string argument among these, memfd_create's name, into `path`.
#[inline(always)]
fn gather(p: &mut Call, spec: &SyscallSpec) {
    if spec.path != NO_ARG && p.args[0] != 0 {
        // SAFETY: `path` has MAX_USER_PATH bytes; the helper checks the user address.
        let copied = unsafe {
            bpf_probe_read_user_str(
                p.path.as_mut_ptr().cast(),
                MAX_USER_PATH as u32,
                p.args[0] as *const _,
            )
        };
        if copied > 0 {
            p.path_len = ((copied as u64 - 1) & (MAX_USER_PATH as u64 - 1)) as u16;
        }
    }
}

pub fn exit(c: &mut Call, spec: &SyscallSpec, agent: u64, ret: i64) {
    gather(c, spec);
    let _ = try_exit(c, spec.kind, agent, ret);
}

fn try_exit(p: &Call, kind: u16, agent: u64, ret: i64) -> Option<()> {
    let (record, payload) = Record::start::<SyscallEvent>(kind, agent, 0)?;
    let str_len = record.append(p.path.as_ptr(), p.path_len, MAX_USER_PATH as u64 - 1);
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
