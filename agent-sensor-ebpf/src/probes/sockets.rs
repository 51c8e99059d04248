//! Bytes per agent socket, counted in the kernel at syscall exit and reported at close.
//!
//! Counting at exit needs no entry/exit pairing: on x86_64 the argument registers are intact
//! in `pt_regs` when the syscall returns, and the result is the byte count. Counts are kept by
//! process and fd (see `maps::SOCKETS`), so a close is reported at its own exit from the fd
//! alone. An fd released without a close (dup2 over it, close_range, close-on-exec) keeps its
//! entry until the fd next carries a socket bytes move over (reported then, marked
//! `RELEASED_UNSEEN`), the fd is closed, or the process exits (the daemon reports it).

use agent_sensor_common::{
    drop_slot, flags, syscalls::account, task_flags, EventKind, SockCloseEvent, SockStats,
};
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_current_pid_tgid};

use crate::{
    emit::Record,
    kernel::{current_file, read, socket_sock},
    maps::{count_drop, off, SOCKETS, SOCK_OWNERS, SOCK_SCRATCH},
    tracking::set_task_flag,
};

/// `-EBADF`: the fd was not open, nothing was closed.
const EBADF: i64 = -9;

/// Adds `ret` bytes to the socket behind `fd`, if it is one; `task` is the process's
/// `TrackedTask::flags`. (Not inlined, like `close`: a function of its own has a stack frame
/// of its own, and `sys_exit`'s is nearly full.)
#[inline(never)]
pub fn count(direction: u8, fd: i64, ret: i64, agent: u64, task: u64) -> Option<()> {
    if ret <= 0 {
        return None;
    }
    let sock = socket_sock(current_file(fd)?)?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = SockStats::key(tgid, fd as i32);
    let stats = match SOCKETS.get_ptr_mut(&key) {
        // SAFETY: pointer from a successful lookup.
        Some(stats) if unsafe { (*stats).sock } == sock => stats,
        stale => {
            if let Some(stale) = stale {
                // The fd carries another socket now: the one counted there was released
                // unseen. Whoever removes the entry reports it (two racing threads do not
                // both).
                let record = close_record(stale, flags::RELEASED_UNSEEN);
                if let (true, Some(record)) = (SOCKETS.remove(&key).is_ok(), record) {
                    record.submit();
                }
            }
            let fresh = counted(sock, tgid, fd as i32, agent)?;
            // NOEXIST: a racing thread's entry wins; we then add to it below.
            // SAFETY: `fresh` is this CPU's scratch entry, filled above.
            let inserted = SOCKETS
                .insert(&key, unsafe { &*fresh }, BPF_NOEXIST.into())
                .is_ok();
            if !inserted && SOCKETS.get_ptr(&key).is_none() {
                count_drop(drop_slot::SOCKET_MAP_FULL);
                return None;
            }
            let _ = SOCK_OWNERS.insert(&tgid, &1, 0);
            // After the entry is in: a close that sees the flag finds the entry.
            if task & task_flags::OWNS_SOCKETS == 0 {
                set_task_flag(tgid, task_flags::OWNS_SOCKETS);
            }
            SOCKETS.get_ptr_mut(&key)?
        }
    };
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

/// A new entry for `sock` in this CPU's scratch (off the 512-byte stack), with its peer as it
/// is now: at its first bytes a connected socket has its peer and local port, and the close
/// that reports it may come after the socket is freed.
#[inline(always)]
fn counted(sock: u64, tgid: u32, fd: i32, agent: u64) -> Option<*mut SockStats> {
    let entry = SOCK_SCRATCH.get_ptr_mut(0)?;
    let family: u16 = read(sock, off!(sock_family)).unwrap_or(0);
    let dport: u16 = read(sock, off!(sock_dport)).unwrap_or(0);
    let local_port: u16 = read(sock, off!(sock_num)).unwrap_or(0);
    let mut peer_addr = [0u8; 16];
    let family = match family {
        10 => {
            peer_addr = read(sock, off!(sock_v6_daddr)).unwrap_or([0; 16]);
            10
        }
        2 => {
            let v4: [u8; 4] = read(sock, off!(sock_daddr)).unwrap_or([0; 4]);
            peer_addr[..4].copy_from_slice(&v4);
            2
        }
        _ => 0,
    };
    // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
    unsafe {
        (*entry).agent_id = agent;
        (*entry).tgid = tgid;
        (*entry).fd = fd;
        (*entry).bytes_sent = 0;
        (*entry).bytes_received = 0;
        (*entry).sock = sock;
        (*entry).family = family;
        (*entry).peer_port = u16::from_be(dport);
        (*entry).local_port = local_port;
        (*entry).peer_addr = peer_addr;
    }
    Some(entry)
}

/// At `close(fd)`'s exit: if bytes were counted at `fd`, report and forget them.
#[inline(never)]
pub fn close(fd: i64, ret: i64) -> Option<()> {
    if ret == EBADF {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = SockStats::key(tgid, fd as i32);
    let record = close_record(SOCKETS.get_ptr(&key)?, 0)?;
    // A thread that raced us to a new socket at this fd may have reported it already.
    if SOCKETS.remove(&key).is_ok() {
        record.submit();
    }
    Some(())
}

/// A close record for the entry at `stats`, under the agent its bytes were counted for; sent
/// by the caller once it has removed the entry.
#[inline(always)]
fn close_record(stats: *const SockStats, how: u16) -> Option<Record> {
    // SAFETY: `stats` is a pointer from a successful lookup in `SOCKETS`.
    let agent = unsafe { (*stats).agent_id };
    let (record, payload) =
        Record::start::<SockCloseEvent>(EventKind::NetClose as u16, agent, how)?;
    // SAFETY: payload points into the scratch record; `stats` as above.
    unsafe { (*stats).fill_close(&mut *payload) };
    Some(record)
}
