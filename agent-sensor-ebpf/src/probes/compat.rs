//! 32-bit syscalls (`int $0x80`, `sysenter`), which a 64-bit process can make too. Their
//! numbers are the i386 table's (`open` is 5 there, `fstat` in x86_64's) and their arguments
//! are in other registers, 32 bits wide. `syscall_sys_exit` tail-calls `syscall_compat_exit`
//! for them, which reads each call the daemon's table lists (`COMPAT_CALLS`) as the x86_64 call
//! that does the same, and records and judges it as that call, marked `VIA_COMPAT`.
//!
//! The x32 ABI's syscalls come here too (`VIA_X32`): x86_64's registers and, below 512,
//! x86_64's numbers with `X32_SYSCALL_BIT` set; from 512 on, its own numbers for calls whose
//! structs hold pointers. (This VM's kernel is built without x32 and refuses them with ENOSYS,
//! so only that is tested here; the reading is the x86_64 one, which is.)
//!
//! The first such call of each process is also recorded as such (`process.compat_syscall`): a
//! 64-bit program has no business making them, and the calls whose structs differ at 32 bits
//! (`sendmmsg`, `recvmmsg`) are not decoded.

use agent_sensor_common::{
    flags,
    syscalls::{
        nr, COMPAT_SLOTS, COMPAT_SOCKETCALL_BASE, COMPAT_X32_BASE, I386_SOCKETCALL,
        SOCKETCALL_CALLS, X32_FIRST_OWN, X32_OWN_CALLS, X32_SYSCALL_BIT,
    },
    EventKind, SyscallEvent,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use super::syscall::{dispatch, number, Arguments, Filled, Regs};
use crate::{
    emit::Record,
    kernel::Typed,
    maps::{off, Call, CALL, COMPAT_CALLS, COMPAT_REPORTED},
    tracking::hot_tracked,
};

/// x86_64 numbers a 32-bit message call is recorded as.
const SENDTO: u16 = nr::SENDTO as u16;
const RECVFROM: u16 = nr::RECVFROM as u16;
const WRITE: u16 = 1;
const READ: u16 = 0;

/// `TS_COMPAT` in `thread_info.status` (arch/x86): a 32-bit syscall is running.
const TS_COMPAT: u32 = 0x0002;

/// Whether syscall `nr` (the low half of `orig_ax`) is an x32 one, as the kernel tells them.
#[inline(always)]
pub fn is_x32(nr: u64) -> bool {
    nr.wrapping_sub(X32_SYSCALL_BIT) < (X32_FIRST_OWN + X32_OWN_CALLS) as u64
}

/// Whether the current syscall is a 32-bit one: a load from the current task, no helper call
/// beyond the task's own.
#[inline(always)]
pub fn in_compat_syscall() -> bool {
    Typed::current_task().load::<u32>(off!(task_thread_status)) & TS_COMPAT != 0
}

/// Tail-called by `syscall_sys_exit` for a tracked process's 32-bit or x32 syscall; never
/// attached by itself.
#[btf_tracepoint(function = "sys_exit")]
pub fn syscall_compat_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_compat_exit(&ctx);
    0
}

fn try_compat_exit(ctx: &BtfTracePointContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let tracked = hot_tracked(tgid)?;
    let regs = Regs::of(ctx);
    let nr = number(regs);
    let ret: i64 = ctx.arg(1);
    let _ = report_once(tracked.agent, tgid, nr, ret);
    let call = CALL.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
    let c: &mut Call = unsafe { &mut *call };
    let (mut native, via) = if in_compat_syscall() {
        (i386(c, regs, nr)?, flags::VIA_COMPAT)
    } else {
        (x32(c, regs, nr)?, flags::VIA_X32)
    };
    // Both take the i386 `struct msghdr`.
    if native == nr::SENDMSG as u16 || native == nr::RECVMSG as u16 {
        native = one_buffer(c, native == nr::SENDMSG as u16);
    }
    dispatch(ctx, tracked, native as u64, Filled(c), via)
}

/// The x86_64 number of i386 call `nr`, its arguments read into `c`.
#[inline(always)]
fn i386(c: &mut Call, regs: Regs, nr: u64) -> Option<u16> {
    // The kernel reads each argument as 32 bits (the upper halves of a 64-bit process's
    // registers are whatever it left there), and so must the sensor.
    c.args[0] = regs.at(off!(regs_compat_args[0])) & 0xffff_ffff;
    c.args[1] = regs.at(off!(regs_compat_args[1])) & 0xffff_ffff;
    c.args[2] = regs.at(off!(regs_compat_args[2])) & 0xffff_ffff;
    c.args[3] = regs.at(off!(regs_compat_args[3])) & 0xffff_ffff;
    c.args[4] = regs.at(off!(regs_compat_args[4])) & 0xffff_ffff;
    c.args[5] = regs.at(off!(regs_compat_args[5])) & 0xffff_ffff;
    if nr == I386_SOCKETCALL as u64 {
        socketcall(c)
    } else {
        direct(c, nr)
    }
}

/// The x86_64 number of x32 call `nr` (which carries `X32_SYSCALL_BIT`), its arguments read
/// into `c`.
#[inline(always)]
fn x32(c: &mut Call, regs: Regs, nr: u64) -> Option<u16> {
    let number = nr ^ X32_SYSCALL_BIT;
    if number >= (X32_FIRST_OWN + X32_OWN_CALLS) as u64 {
        return None;
    }
    // Copied here, not passed on as `Regs`: with one kind of arguments, this program holds
    // one copy of `dispatch` for the verifier to check, not two.
    c.args[0] = regs.arg(0);
    c.args[1] = regs.arg(1);
    c.args[2] = regs.arg(2);
    c.args[3] = regs.arg(3);
    c.args[4] = regs.arg(4);
    c.args[5] = regs.arg(5);
    if number < X32_FIRST_OWN as u64 {
        return Some(number as u16);
    }
    let entry = COMPAT_CALLS.get(COMPAT_X32_BASE + (number as u32 - X32_FIRST_OWN))?;
    (entry.args != 0).then_some(entry.native)
}

/// i386 `struct compat_msghdr`.
#[repr(C)]
struct CompatMsghdr {
    name: u32,
    namelen: u32,
    iov: u32,
    iovlen: u32,
    control: u32,
    controllen: u32,
    flags: u32,
}

/// A 32-bit `sendmsg`/`recvmsg(fd, msg, flags)` as the `sendto`/`recvfrom` of its address and
/// first buffer (the 64-bit path reads a 64-bit `struct msghdr`, and the same for these is
/// what its records hold), its arguments rewritten in `c`; `write`/`read` (its bytes only
/// counted) when the message cannot be read. (Not inlined: its reads' frame is gone before
/// the call is recorded.)
#[inline(never)]
fn one_buffer(c: &mut Call, send: bool) -> u16 {
    let counted = if send { WRITE } else { READ };
    let msg = c.args[1];
    // SAFETY: the helper checks the user addresses.
    let Ok(hdr) = (unsafe { bpf_probe_read_user(msg as *const CompatMsghdr) }) else {
        return counted;
    };
    let first = if hdr.iovlen > 0 {
        // SAFETY: as above; `struct compat_iovec` is { u32 base; u32 len }.
        unsafe { bpf_probe_read_user(hdr.iov as u64 as *const [u32; 2]) }.unwrap_or([0, 0])
    } else {
        [0, 0]
    };
    c.args[1] = first[0] as u64;
    c.args[2] = first[1] as u64;
    c.args[4] = hdr.name as u64;
    // sendto takes the address's length; recvfrom a pointer to it, which the kernel updated:
    // for recvmsg, the message's own `msg_namelen`.
    c.args[5] = if send {
        hdr.namelen as u64
    } else {
        msg + core::mem::offset_of!(CompatMsghdr, namelen) as u64
    };
    if send {
        SENDTO
    } else {
        RECVFROM
    }
}

/// The x86_64 number of i386 call `nr`, its arguments beyond those it takes cleared in `c`.
#[inline(always)]
fn direct(c: &mut Call, nr: u64) -> Option<u16> {
    if nr >= COMPAT_SOCKETCALL_BASE as u64 {
        return None;
    }
    let entry = COMPAT_CALLS.get(nr as u32)?;
    let args = entry.args as usize;
    if args == 0 {
        return None;
    }
    for (i, arg) in c.args.iter_mut().enumerate() {
        if i >= args {
            *arg = 0;
        }
    }
    Some(entry.native)
}

/// `socketcall(call, array)`: the x86_64 number of the call, its arguments (32-bit words in
/// the process's memory) read into `c`. (Not inlined: the array's frame is gone before the
/// call is recorded.)
#[inline(never)]
fn socketcall(c: &mut Call) -> Option<u16> {
    let call = c.args[0];
    if call >= SOCKETCALL_CALLS as u64 {
        return None;
    }
    let entry = COMPAT_CALLS.get(COMPAT_SOCKETCALL_BASE + call as u32)?;
    let words = entry.args as usize;
    if words == 0 || words > 6 {
        return None;
    }
    let mut array = [0u32; 6];
    // Exactly as many words as the kernel read for this call: more could fault where its
    // read did not (an array placed at the end of a mapping) and lose the call.
    // SAFETY: `words` is 1..=6, so the read stays inside `array`; the helper checks the user
    // address.
    let read = unsafe {
        generated::bpf_probe_read_user(
            array.as_mut_ptr().cast(),
            (words * 4) as u32,
            c.args[1] as *const _,
        )
    };
    if read != 0 {
        return None;
    }
    for (i, arg) in c.args.iter_mut().enumerate() {
        *arg = if i < words { array[i] as u64 } else { 0 };
    }
    Some(entry.native)
}

/// Records the first 32-bit or x32 syscall of process `tgid`: its number (i386's, or with the
/// x32 bit) and result. (Not inlined: a frame of its own.)
#[inline(never)]
fn report_once(agent: u64, tgid: u32, nr: u64, ret: i64) -> Option<()> {
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

const _: () = assert!(COMPAT_X32_BASE + X32_OWN_CALLS == COMPAT_SLOTS);
