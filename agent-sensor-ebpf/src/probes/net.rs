//! Socket syscalls: the address exactly as passed or returned and the first bytes sent.
//! User space parses both (it trusts no length from here); DNS queries come from these bytes.

use agent_sensor_common::{flags, NetEvent, MAX_SEND_DATA, MAX_SOCKADDR};
use aya_ebpf::helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_user};

use crate::{emit::Record, maps::Call};

use agent_sensor_common::syscalls::{
    nr::{ACCEPT, ACCEPT4, BIND, CONNECT, LISTEN, RECVFROM, SENDMMSG, SENDMSG, SENDTO},
    SyscallSpec,
};

/// Copies `len` (clamped to `max`, a power of two) bytes of user memory, or of kernel memory
/// where `kernel`, into `dst`; returns bytes copied.
#[inline(always)]
fn copy(src: u64, len: u64, dst: *mut u8, max: usize, kernel: bool) -> u16 {
    if src == 0 || len == 0 {
        return 0;
    }
    let len = if len > max as u64 - 1 {
        max as u64 - 1
    } else {
        len
    };
    let len = len & (max as u64 - 1);
    // SAFETY: `dst` has at least `max` bytes; the helpers check the source address.
    let ret = unsafe {
        if kernel {
            bpf_probe_read_kernel(dst.cast(), len as u32, src as *const _)
        } else {
            bpf_probe_read_user(dst.cast(), len as u32, src as *const _)
        }
    };
    if ret == 0 {
        len as u16
    } else {
        0
    }
}

/// Reads a `struct msghdr` in user memory: (name, namelen, first iovec base, its length).
#[inline(always)]
fn read_msghdr(msg: u64) -> Option<(u64, u64, u64, u64)> {
    let mut hdr = [0u64; 4];
    // SAFETY: stack destination of the right size; the helper checks the user address.
    let ret = unsafe { bpf_probe_read_user(hdr.as_mut_ptr().cast(), 32, msg as *const _) };
    if ret != 0 {
        return None;
    }
    let (name, namelen, iov) = (hdr[0], hdr[1] & 0xffff_ffff, hdr[2]);
    let mut first = [0u64; 2];
    if iov != 0 && hdr[3] > 0 {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(first.as_mut_ptr().cast(), 16, iov as *const _) };
    }
    Some((name, namelen, first[0], first[1]))
}

/// Where what the call passed lies in the process's memory: (sockaddr, its length, first
/// data bytes, their length). For sendmsg, the first iovec.
#[derive(Clone, Copy, Default)]
struct Passed {
    /// Whether the call passes these at all (the rest is zeros when not).
    known: bool,
    addr: u64,
    addr_len: u64,
    data: u64,
    data_len: u64,
}

/// Zeros, not an `Option`, when the call passes nothing or it cannot be read: LLVM may spill
/// the unset fields of a `None` as they are, and the verifier refuses a program that stores
/// an uninitialised register ("!read_ok").
#[inline(always)]
fn passed(c: &Call) -> Passed {
    let found = match c.nr {
        CONNECT | BIND => Some((c.args[1], c.args[2] & 0xffff_ffff, 0, 0)),
        SENDTO => Some((c.args[4], c.args[5] & 0xffff_ffff, c.args[1], c.args[2])),
        SENDMSG | SENDMMSG => read_msghdr(c.args[1]),
        _ => None,
    };
    match found {
        Some((addr, addr_len, data, data_len)) => Passed {
            known: true,
            addr,
            addr_len,
            data,
            data_len,
        },
        None => Passed::default(),
    }
}

/// Appends `len` bytes at `src` (clamped, and from kernel memory where `kernel`, as [`copy`]
/// does); returns bytes appended.
#[inline(always)]
fn append(record: &Record, src: u64, len: u64, max: usize, kernel: bool) -> u16 {
    let copied = copy(src, len, record.tail(), max, kernel);
    record.grow(copied as u64);
    copied
}

pub fn exit(c: &Call, spec: &SyscallSpec, agent: u64, ret: i64) {
    let _ = record(c, spec.kind, agent, ret);
}

/// DNS port in network byte order, as it sits in a sockaddr.
const DNS_PORT_BE: u16 = 53u16.to_be();

/// A successful recvfrom/recvmsg at its exit.
pub struct Received {
    pub nr: u32,
    /// The record's kind and header flag (`via`).
    pub kind: u16,
    pub via: u16,
    /// The call's arguments 0, 1, 4 and 5.
    pub args: [u64; 4],
}

/// Reads the source address and data of a successful recvfrom/recvmsg, and emits them only for
/// DNS answers (source port 53): everything else received is counted, not recorded. Returns
/// true when an enforced agent's DNS answer was stashed for the parser to tail-call.
pub fn recv_exit(call: Received, agent: u64, ret: i64) -> bool {
    try_recv_exit(call, agent, ret).unwrap_or(false)
}

fn try_recv_exit(call: Received, agent: u64, ret: i64) -> Option<bool> {
    if ret <= 0 {
        return None;
    }
    let Received {
        nr,
        kind,
        via,
        args,
    } = call;
    let [fd, buf_or_msg, src, src_len] = args;
    let (addr, len_ptr, data) = if nr == RECVFROM {
        (src, src_len, buf_or_msg)
    } else {
        // struct msghdr: msg_name, msg_namelen (u32, updated by the kernel), msg_iov.
        let (name, _, base, _) = read_msghdr(buf_or_msg)?;
        (name, buf_or_msg + 8, base)
    };
    if addr == 0 || len_ptr == 0 {
        return None;
    }
    let mut head = [0u16; 2];
    // SAFETY: stack destination; the helper checks the user address.
    if unsafe { bpf_probe_read_user(head.as_mut_ptr().cast(), 4, addr as *const _) } != 0 {
        return None;
    }
    if head[1] != DNS_PORT_BE || !(head[0] == 2 || head[0] == 10) {
        return None;
    }
    // An enforced agent's allowlist learns the answer before the agent sees it: the caller
    // tail-calls the parser once the record is out.
    let learn = super::dns::stash(agent, data, ret as u64);
    let mut len = [0u32; 1];
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(len.as_mut_ptr().cast(), 4, len_ptr as *const _) };
    let Some((record, payload)) = Record::start::<NetEvent>(kind, agent, via) else {
        return Some(learn);
    };
    let sockaddr_len = append(&record, addr, len[0] as u64, MAX_SOCKADDR, false);
    let data_len = append(&record, data, ret as u64, MAX_SEND_DATA, false);
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).nr = nr;
        (*payload).fd = fd as i32;
        (*payload).ret = ret;
        (*payload).bytes = ret as u64;
        (*payload).sockaddr_len = sockaddr_len;
        (*payload).data_len = data_len;
    }
    record.submit();
    Some(learn)
}

/// Records socket call `p` (an io_uring request's too: its addresses are in the process's
/// memory as a syscall's are, but for a send's, which the kernel copied in).
pub fn record(p: &Call, kind: u16, agent: u64, ret: i64) -> Option<()> {
    let (record, payload) = Record::start::<NetEvent>(kind, agent, p.via as u16)?;
    let passed = passed(p);
    let sockaddr_len = if matches!(p.nr, ACCEPT | ACCEPT4) {
        // The peer address is in user memory now that the kernel wrote it.
        let addr = p.args[1];
        let len_ptr = p.args[2];
        let mut len = [0u32; 1];
        if addr != 0 && len_ptr != 0 && ret >= 0 {
            // SAFETY: stack destination; the helper checks the user address.
            unsafe { bpf_probe_read_user(len.as_mut_ptr().cast(), 4, len_ptr as *const _) };
        }
        append(&record, addr, len[0] as u64, MAX_SOCKADDR, false)
    } else if passed.known {
        // An io_uring send's destination is the request's copy (see `probes::uring`).
        let kernel = p.via == flags::VIA_IO_URING as u32 && p.nr == SENDTO;
        append(&record, passed.addr, passed.addr_len, MAX_SOCKADDR, kernel)
    } else {
        0
    };
    let data_len = if passed.known {
        append(&record, passed.data, passed.data_len, MAX_SEND_DATA, false)
    } else {
        0
    };
    // What a send asked to send in all (for sendmsg, the first iovec's length); what listen
    // was given as its backlog.
    let bytes = if p.nr == LISTEN {
        p.args[1]
    } else if passed.known {
        passed.data_len
    } else {
        p.args[3]
    };
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).nr = p.nr;
        (*payload).fd = p.args[0] as i32;
        (*payload).ret = ret;
        (*payload).bytes = bytes;
        (*payload).sockaddr_len = sockaddr_len;
        (*payload).data_len = data_len;
    }
    record.submit();
    Some(())
}
