//! One BTF tracepoint on `sys_enter` and one on `sys_exit` for every syscall the sensor watches:
//! an untracked task pays one hash lookup and returns (per-syscall perf tracepoints would put
//! every task on the host on the slow syscall path, see BENCHMARKS.md).
//!
//! BTF-typed rather than raw: the verifier knows `regs` is a `struct pt_regs *`, so the syscall
//! number and arguments are plain loads instead of a `bpf_probe_read_kernel` call each (the
//! offsets come from the read-only globals the loader fills, which the verifier treats as
//! constants). That is one helper call less at every exit of a tracked task's syscall, and six
//! less at every watched entry.
//!
//! Entry stashes arguments and user strings in this CPU's `PENDING_SLOT`, or in `PENDING` if
//! the thread is switched out meanwhile; exit adds the result and what the kernel resolved, and
//! emits one record. (Strings read at entry are not proof against a racing thread either: one
//! can change the buffer between this read and the kernel's copy. The canonical path walked
//! from the kernel's own object is; see `maps::Pending`.) What to record per syscall comes
//! from the `SYSCALL_SPECS` map, not from code (see `agent_sensor_common::syscalls`).
//!
//! Opens, the commonest by far, are recorded from their exit alone: the new fd gives the
//! canonical path, the arguments are still in `pt_regs` (x86_64 keeps them through the call),
//! and their string read there is no weaker than one read at entry. Nor can a thread blocked
//! in an open have its entry pushed out of a full `PENDING`: it has none.

use agent_sensor_common::{
    syscalls::{account, family, SyscallSpec, MAX_SYSCALL_NR},
    EventKind,
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use super::{file, net, process_calls, sockets};
use crate::{
    maps::{
        off, spill_pending_slot, Pending, OPEN_ARGS, PENDING, PENDING_OWNER, PENDING_SLOT,
        SYSCALL_SPECS, TAIL, TAIL_DNS_ANSWER,
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

/// A `struct pt_regs *` the verifier knows as such (the first argument of both hooks).
#[derive(Clone, Copy)]
pub struct Regs(*const u8);

impl Regs {
    #[inline(always)]
    fn of(ctx: &BtfTracePointContext) -> Self {
        Regs(ctx.arg(0))
    }

    /// The register at `offset`: one load, checked by the verifier against pt_regs' BTF.
    #[inline(always)]
    pub fn at(self, offset: u64) -> u64 {
        // SAFETY: `offset` is a pt_regs field of the running kernel (from its BTF); the
        // verifier turns the load into a fault-safe one and rejects any other offset.
        unsafe { self.0.add(offset as usize).cast::<u64>().read_volatile() }
    }

    #[inline(always)]
    pub fn arg(self, index: usize) -> u64 {
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

#[btf_tracepoint(function = "sys_enter")]
pub fn syscall_sys_enter(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sys_enter(&ctx);
    0
}

fn try_sys_enter(ctx: &BtfTracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    hot_tracked_agent((pid_tgid >> 32) as u32)?;
    let nr: u64 = ctx.arg(1);
    let spec = spec(nr)?;
    if spec.kind == EventKind::FileOpen as u16 {
        return None;
    }
    let regs = Regs::of(ctx);
    match spec.family {
        family::NONE | family::RECV => return None,
        family::CLOSE => {
            let fd = regs.arg(0);
            let agent = hot_tracked_agent((pid_tgid >> 32) as u32)?;
            return sockets::close(fd as i32 as i64, agent);
        }
        _ => {}
    }
    let owner = PENDING_OWNER.get_ptr_mut(0)?;
    // SAFETY: per-CPU value; nothing else runs on this CPU while we hold it.
    if unsafe { *owner } != pid_tgid {
        // Another thread's entry, left by a switch the spill program missed (attached after
        // this one): it goes to the hash map rather than under our entry.
        spill_pending_slot();
    }
    let pending = PENDING_SLOT.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot; nothing else runs on this CPU while we hold it.
    let p: &mut Pending = unsafe { &mut *pending };
    start_pending(p, nr, regs);
    match spec.family {
        family::FILE => file::enter(p, &spec),
        family::NET => net::enter(p),
        _ => process_calls::enter(p, &spec),
    }
    // SAFETY: as above. Last: the slot is ours only once the entry is complete.
    unsafe { *owner = pid_tgid };
    Some(())
}

/// A fresh entry for syscall `nr`: its arguments, no strings yet.
#[inline(always)]
fn start_pending(p: &mut Pending, nr: u64, regs: Regs) {
    p.nr = nr as u32;
    p.path_len = 0;
    p.path2_len = 0;
    p.base_len = 0;
    p.base2_len = 0;
    p.flags = 0;
    p.args[0] = regs.arg(0);
    p.args[1] = regs.arg(1);
    p.args[2] = regs.arg(2);
    p.args[3] = regs.arg(3);
    p.args[4] = regs.arg(4);
    p.args[5] = regs.arg(5);
}

/// A thread switched out in the middle of a syscall takes its entry along: from this CPU's
/// slot into the hash map, where the syscall's exit finds it on whichever CPU the thread
/// resumes. Every context switch on the host runs this; with no tracked syscall pending on the
/// CPU it is one per-CPU lookup.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn syscall_sched_switch(_ctx: RawTracePointContext) -> i32 {
    spill_pending_slot();
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn syscall_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

fn try_sys_exit(ctx: &BtfTracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let agent = hot_tracked_agent((pid_tgid >> 32) as u32)?;
    let regs = Regs::of(ctx);
    let ret: i64 = ctx.arg(1);
    let nr = regs.at(off!(regs_nr));
    let spec = spec(nr)?;
    if spec.account != account::NONE {
        let _ = sockets::count(spec.account, regs.arg(0) as i32 as i64, ret, agent);
    }
    if spec.family == family::RECV {
        let args = [regs.arg(0), regs.arg(1), regs.arg(4), regs.arg(5)];
        if net::recv_exit(nr as u32, args, spec.kind, agent, ret) {
            // SAFETY: same program type; on success it does not return.
            unsafe { TAIL.tail_call(ctx, TAIL_DNS_ANSWER) };
        }
        return None;
    }
    if !matches!(spec.family, family::FILE | family::NET | family::PROCESS) {
        return None;
    }
    let open = spec.kind == EventKind::FileOpen as u16;
    let owner = PENDING_OWNER.get_ptr_mut(0)?;
    // SAFETY: per-CPU value; nothing else runs on this CPU while we hold it.
    let in_slot = !open && unsafe { *owner } == pid_tgid;
    let pending = if open {
        let args = OPEN_ARGS.get_ptr_mut(0)?;
        // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
        let p: &mut Pending = unsafe { &mut *args };
        start_pending(p, nr, regs);
        file::open_args(p);
        args.cast_const()
    } else if in_slot {
        PENDING_SLOT.get_ptr(0)?
    } else {
        PENDING.get_ptr(&pid_tgid)?
    };
    // SAFETY: this CPU's slot, or a pointer from a successful lookup; only this thread uses
    // its own entry.
    let p: &Pending = unsafe { &*pending };
    // The entry is this syscall's unless the thread's previous one never exited (a restart).
    if p.nr as u64 == nr {
        match spec.family {
            family::FILE => file::exit(p, &spec, agent, ret),
            family::NET => net::exit(p, &spec, agent, ret),
            _ => process_calls::exit(p, &spec, agent, ret),
        }
    }
    if in_slot {
        // SAFETY: as above.
        unsafe { *owner = 0 };
    } else if !open {
        let _ = PENDING.remove(&pid_tgid);
    }
    Some(())
}
