//! Bytes per agent socket, counted in the kernel at syscall exit and reported at close.
//!
//! Counting at exit needs no entry/exit pairing: on x86_64 the argument registers are intact
//! in `pt_regs` when the syscall returns, and the result is the byte count.

use agent_sensor_common::{syscalls::account, EventKind, SockCloseEvent, SockStats};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::{
    emit::Record,
    kernel::{current_task, read, socket_sock, task_file},
    maps::{off, SOCK_OWNERS, SOCK_STATS},
};

/// Adds `ret` bytes to the socket behind `fd`, if it is one.
#[inline(always)]
pub fn count(direction: u8, fd: i64, ret: i64, agent: u64) -> Option<()> {
    if ret <= 0 {
        return None;
    }
    let sock = socket_sock(task_file(current_task(), fd)?)?;
    if SOCK_STATS.get_ptr_mut(&sock).is_none() {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let fresh = SockStats {
            agent_id: agent,
            tgid,
            fd: fd as i32,
            bytes_sent: 0,
            bytes_received: 0,
        };
        // BPF_NOEXIST: a racing thread's entry wins; we then add to it below.
        let _ = SOCK_STATS.insert(&sock, &fresh, 1);
        let _ = SOCK_OWNERS.insert(&tgid, &1, 0);
    }
    let stats = SOCK_STATS.get_ptr_mut(&sock)?;
    // SAFETY: pointer from a successful map lookup; the add is atomic across CPUs.
    unsafe {
        let counter = if direction == account::SENT {
            core::ptr::addr_of_mut!((*stats).bytes_sent)
        } else {
            core::ptr::addr_of_mut!((*stats).bytes_received)
        };
        crate::kernel::atomic_add(counter, ret as u64);
    }
    Some(())
}

/// At `close(fd)` entry: if `fd` is a counted socket, report and forget it.
#[inline(always)]
pub fn close(fd: i64, agent: u64) -> Option<()> {
    let sock = socket_sock(task_file(current_task(), fd)?)?;
    let stats = SOCK_STATS.get_ptr(&sock)?;
    // SAFETY: pointer from a successful lookup, copied out at once.
    let stats = unsafe { *stats };
    let _ = SOCK_STATS.remove(&sock);
    let (record, payload) = Record::start::<SockCloseEvent>(EventKind::NetClose as u16, agent, 0)?;
    let family: u16 = read(sock, off!(sock_family)).unwrap_or(0);
    let dport: u16 = read(sock, off!(sock_dport)).unwrap_or(0);
    let lport: u16 = read(sock, off!(sock_num)).unwrap_or(0);
    let mut addr = [0u8; 16];
    if family == 10 {
        addr = read(sock, off!(sock_v6_daddr)).unwrap_or([0; 16]);
    } else {
        let v4: [u8; 4] = read(sock, off!(sock_daddr)).unwrap_or([0; 4]);
        addr[..4].copy_from_slice(&v4);
    }
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).fd = fd as i32;
        (*payload).family = family;
        (*payload).peer_port = u16::from_be(dport);
        (*payload).peer_addr = addr;
        (*payload).local_port = lport;
        (*payload).bytes_sent = stats.bytes_sent;
        (*payload).bytes_received = stats.bytes_received;
    }
    record.submit();
    Some(())
}
