//! One BTF tracepoint on `sys_exit` for every syscall the sensor watches: an untracked task pays
//! a tracked-task check and returns (per-syscall perf tracepoints would put every task on the
//! host on the slow syscall path, see BENCHMARKS.md).
//!
//! BTF-typed rather than raw: the verifier knows `regs` is a `struct pt_regs *`, so the syscall
//! number and arguments are plain loads instead of a `bpf_probe_read_kernel` call each (the
//! offsets come from the read-only globals the loader fills, which the verifier treats as
//! constants): a helper call less for the number and each argument.
//!
//! Every call is recorded from its exit alone: the arguments are still in `pt_regs` there
//! (x86_64 keeps them through the call), the strings and sockaddrs still in the process's
//! memory, its dirfd and cwd still open, and what the kernel resolved (a new fd, a new cwd) is
//! there to walk. Nothing waits between entry and exit, so nothing is lost when a thread
//! blocks in a call, nothing has to follow a thread switched to another CPU, and a daemon
//! restart has no in-flight state to carry. (A string read at exit is no weaker than one read
//! at entry against a racing thread: either way one can change the buffer around the kernel's
//! own copy. The canonical path walked from the kernel's own object is proof against that.)
//! There is no `sys_enter` hook at all: the kernel runs every hook on these two tracepoints
//! for every syscall of every task on the host, tracked or not, and even one that returns at
//! once costs an untracked open/close loop several percent (BENCHMARKS.md, capture). Socket
//! closes, the last user of an entry hook, are found by their fd at exit (`sockets`). What to
//! record per syscall comes from the `SYSCALL_SPECS` map, not from code (see
//! `agent_sensor_common::syscalls`).

use agent_sensor_common::{
    syscalls::{account, family, SyscallSpec, MAX_SYSCALL_NR},
    task_flags,
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};

use super::{compat, egress, file, net, process_calls, sockets};
use crate::{
    maps::{off, Call, CALL, SYSCALL_SPECS, TAIL, TAIL_COMPAT, TAIL_DNS_ANSWER},
    tracking::{hot_tracked, Tracked},
};

/// The number of the syscall running: the low half of `orig_ax`, the register the number came
/// in. The kernel dispatches on those 32 bits alone (`do_syscall_64`'s `int nr`), whatever the
/// caller left in the upper half, and so must the sensor.
#[inline(always)]
pub fn number(regs: Regs) -> u64 {
    regs.at(off!(regs_nr)) & 0xffff_ffff
}

/// What the table says to record for syscall `nr`, if anything.
#[inline(always)]
pub fn spec(nr: u64) -> Option<SyscallSpec> {
    if nr >= MAX_SYSCALL_NR as u64 {
        return None;
    }
    SYSCALL_SPECS.get(nr as u32).copied()
}

/// A `struct pt_regs *` the verifier knows as such (the first argument of both hooks).
#[derive(Clone, Copy)]
pub struct Regs(*const u8);

impl Regs {
    #[inline(always)]
    pub fn of(ctx: &BtfTracePointContext) -> Self {
        Regs(ctx.arg(0))
    }

    /// The register at `offset`: one load, checked by the verifier against pt_regs' BTF.
    #[inline(always)]
    pub fn at(self, offset: u64) -> u64 {
        // SAFETY: `offset` is a pt_regs field of the running kernel (from its BTF); the
        // verifier turns the load into a fault-safe one and rejects any other offset.
        unsafe { self.0.add(offset as usize).cast::<u64>().read_volatile() }
    }
}

/// Where a call's arguments are read from: the registers of a 64-bit syscall, read as they
/// are needed, or a `Call` already filled (a 32-bit syscall's, see `probes::compat`).
pub trait Arguments: Copy {
    fn arg(self, index: usize) -> u64;
}

impl Arguments for Regs {
    #[inline(always)]
    fn arg(self, index: usize) -> u64 {
        match index {
            0 => self.at(off!(regs_args[0])),
            1 => self.at(off!(regs_args[1])),
            2 => self.at(off!(regs_args[2])),
            3 => self.at(off!(regs_args[3])),
            4 => self.at(off!(regs_args[4])),
            _ => self.at(off!(regs_args[5])),
        }
    }
}

/// The arguments in the per-CPU `Call`.
#[derive(Clone, Copy)]
pub struct Filled(pub *const Call);

impl Arguments for Filled {
    #[inline(always)]
    fn arg(self, index: usize) -> u64 {
        // SAFETY: a pointer to the per-CPU `Call`; `index` is a constant below 6.
        unsafe { (*self.0).args[index] }
    }
}

#[btf_tracepoint(function = "sys_exit")]
pub fn syscall_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

fn try_sys_exit(ctx: &BtfTracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tracked = hot_tracked((pid_tgid >> 32) as u32)?;
    let regs = Regs::of(ctx);
    let nr = number(regs);
    if compat::is_x32(nr) || compat::in_compat_syscall() {
        // Its number and arguments are the i386 ABI's (or x32's): read by a program of its
        // own, so that this one's verification does not grow by a second copy of every path.
        // SAFETY: same program type; on success it does not return.
        unsafe { TAIL.tail_call(ctx, TAIL_COMPAT) };
        return None;
    }
    dispatch(ctx, tracked, nr, regs, 0)
}

/// Records syscall `nr` (x86_64 numbering) of a tracked process as its spec says, its
/// arguments read from `args`; `via` is the record's header flag for how it came.
#[inline(always)]
pub fn dispatch<A: Arguments>(
    ctx: &BtfTracePointContext,
    tracked: Tracked,
    nr: u64,
    args: A,
    via: u16,
) -> Option<()> {
    let agent = tracked.agent;
    let ret: i64 = ctx.arg(1);
    let spec = spec(nr)?;
    if spec.account != account::NONE {
        let fd = args.arg(0) as i32 as i64;
        let _ = sockets::count(spec.account, fd, ret, agent, tracked.flags);
    }
    if spec.family == family::CLOSE {
        // A process that never moved bytes over a socket has none to report: most closes
        // are of files, and the lookup was a tenth of a tracked open/close loop's sensor cost.
        if tracked.flags & task_flags::OWNS_SOCKETS == 0 {
            return None;
        }
        return sockets::close(args.arg(0) as i32 as i64, ret);
    }
    if spec.family == family::SOCKET {
        let socket = [args.arg(0), args.arg(1), args.arg(2)];
        return egress::unpoliced_socket(agent, socket, ret, via);
    }
    if spec.family == family::RECV {
        let received = net::Received {
            nr: nr as u32,
            kind: spec.kind,
            via,
            args: [args.arg(0), args.arg(1), args.arg(4), args.arg(5)],
        };
        if net::recv_exit(received, agent, ret) {
            // SAFETY: same program type; on success it does not return.
            unsafe { TAIL.tail_call(ctx, TAIL_DNS_ANSWER) };
        }
        return None;
    }
    if !matches!(spec.family, family::FILE | family::NET | family::PROCESS) {
        return None;
    }
    let call = CALL.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
    let c: &mut Call = unsafe { &mut *call };
    c.nr = nr as u32;
    c.via = via as u32;
    c.args[0] = args.arg(0);
    c.args[1] = args.arg(1);
    c.args[2] = args.arg(2);
    c.args[3] = args.arg(3);
    c.args[4] = args.arg(4);
    c.args[5] = args.arg(5);
    match spec.family {
        family::FILE => file::exit(c, &spec, agent, ret),
        family::NET => net::exit(c, &spec, agent, ret),
        _ => process_calls::exit(c, &spec, agent, ret),
    }
    Some(())
}
