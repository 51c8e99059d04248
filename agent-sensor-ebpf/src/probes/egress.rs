//! In-kernel egress allowlists: cgroup sock_addr programs on the cgroup v2 root refuse (EPERM)
//! a connect or an addressed send of an enforced agent to a destination its policy does not
//! allow. Nothing is sent: the check runs before the kernel builds a packet. The agent is the
//! calling process's (tracked by ancestry), wherever its cgroup is.
//!
//! Those hooks see TCP and UDP only. A cgroup `sock_create` program refuses an enforced agent
//! the internet sockets that send without them (raw, ICMP "ping", SCTP…): an allowlist that
//! such a socket could step around would hold nothing. Packet sockets (`AF_PACKET`), AF_XDP,
//! AF_VSOCK and every other family that is neither internet nor host-local never reach a
//! cgroup socket hook, so the process of an enforced agent that gets one is killed at the
//! syscall's exit instead, before it returns with the socket (`unpoliced_socket`). A
//! monitored agent is refused nothing; such sockets it gets are reported (`net.socket`).

use agent_sensor_common::{
    egress::{socket, EgressKey4, EgressKey6, EgressPorts, SocketRequest},
    flags,
    syscalls::nr,
    EventKind, NetEvent,
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{cgroup_sock, cgroup_sock_addr},
    maps::lpm_trie::Key,
    programs::{SockAddrContext, SockContext},
};

use crate::{
    emit::Record,
    maps::{DNS_RESOLVERS, EGRESS_AGENTS, EGRESS_ALLOW4, EGRESS_ALLOW6},
    tracking::tracked_agent,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn egress_connect4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, false, nr::CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn egress_connect6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, true, nr::CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn egress_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, false, nr::SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn egress_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, true, nr::SENDMSG)
}

#[cgroup_sock(sock_create)]
pub fn egress_sock_create(ctx: SockContext) -> i32 {
    let Some(agent) = enforced_agent() else {
        return ALLOW;
    };
    // SAFETY: the context the kernel passed; family, type and protocol are readable here.
    let sock = unsafe { &*ctx.sock };
    let request = SocketRequest {
        family: sock.family as u16,
        kind: sock.type_ as u16,
        protocol: sock.protocol as u16,
    };
    if request.policed_by_egress_hooks() {
        return ALLOW;
    }
    report_socket(EventKind::NetDenied, agent, request, -1, 0); // EPERM
    DENY
}

/// At the exit of socket(2) (`args`: family, type, protocol) by a process of `agent`, or at
/// the submission of an io_uring request for one (`via`: `flags::VIA_IO_URING`, `ret` 0), for
/// a socket the egress programs cannot hold to an allowlist:
/// - one no cgroup socket hook sees (a packet socket, AF_XDP, AF_VSOCK…) that an enforced
///   agent got is a way out nothing else stops, so the process is killed before the call
///   returns (before the request runs) and it never holds the socket;
/// - any such socket a monitored agent got is reported (`net.socket`), what enforce mode would
///   have refused. (An enforced agent's raw and ping internet sockets were refused by
///   `sock_create`, which reported them.)
///
/// (Not inlined: a frame of its own, off `sys_exit`'s nearly full stack.)
#[inline(never)]
pub fn unpoliced_socket(agent: u64, args: [u64; 3], ret: i64, via: u16) -> Option<()> {
    if ret < 0 {
        return None;
    }
    let request = SocketRequest::of_call(args[0], args[1], args[2]);
    let outside_hooks = request.outside_socket_hooks();
    if !outside_hooks && request.policed_by_egress_hooks() {
        return None;
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { EGRESS_AGENTS.get(&agent) }.is_none() {
        report_socket(EventKind::NetSocket, agent, request, ret, via);
        return Some(());
    }
    if !outside_hooks {
        return None;
    }
    // SAFETY: plain helper call; SIGKILL, delivered before the return to user space.
    let killed = unsafe { aya_ebpf::helpers::generated::bpf_send_signal(9) } == 0;
    let how = if killed { flags::KILLED_IN_KERNEL } else { 0 };
    report_socket(EventKind::NetDenied, agent, request, ret, how | via);
    Some(())
}

/// The current process's agent, when its egress is enforced.
#[inline(always)]
fn enforced_agent() -> Option<u64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let agent = tracked_agent(tgid)?;
    // SAFETY: the value is only tested for presence.
    unsafe { EGRESS_AGENTS.get(&agent) }.map(|_| agent)
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, v6: bool, nr: u32) -> i32 {
    let Some(agent) = enforced_agent() else {
        return ALLOW;
    };
    // SAFETY: the context the kernel passed.
    let sa = unsafe { &*ctx.sock_addr };
    let port = u16::from_be(sa.user_port as u16);
    let mut addr = [0u8; 16];
    if v6 {
        for (i, word) in sa.user_ip6.iter().enumerate() {
            addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    } else {
        // IPv4 as v4-mapped IPv6 for the resolver map.
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    }
    if allowed(agent, &addr, v6, port) {
        return ALLOW;
    }
    report(agent, &addr, v6, port, nr);
    DENY
}

#[inline(always)]
fn allowed(agent: u64, addr: &[u8; 16], v6: bool, port: u16) -> bool {
    let v4_mapped = addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff;
    let loopback = if v4_mapped {
        addr[12] == 127
    } else {
        addr[..15].iter().all(|b| *b == 0) && addr[15] == 1
    };
    // SAFETY: the value is only tested for presence.
    if loopback || (port == 53 && unsafe { DNS_RESOLVERS.get(addr) }.is_some()) {
        return true;
    }
    let agent_bytes = agent.to_be_bytes();
    let rule: Option<&EgressPorts> = if v6 && !v4_mapped {
        let key = Key::new(
            64 + 128,
            EgressKey6 {
                agent: agent_bytes,
                addr: *addr,
            },
        );
        EGRESS_ALLOW6.get(&key)
    } else {
        let v4 = [addr[12], addr[13], addr[14], addr[15]];
        let key = Key::new(
            64 + 32,
            EgressKey4 {
                agent: agent_bytes,
                addr: v4,
            },
        );
        EGRESS_ALLOW4.get(&key)
    };
    rule.is_some_and(|r| r.allows(port))
}

/// A `net.denied` record: the destination as a sockaddr, as the other net events carry it.
#[inline(always)]
fn report(agent: u64, addr: &[u8; 16], v6: bool, port: u16, nr: u32) {
    let Some((record, payload)) = Record::start::<NetEvent>(EventKind::NetDenied as u16, agent, 0)
    else {
        return;
    };
    let tail = record.tail();
    let len: u16 = if v6 { 28 } else { 16 };
    // SAFETY: the tail has MAX_EVENT_BYTES of room; sockaddr_in/_in6 layouts.
    unsafe {
        core::ptr::write_bytes(tail, 0, 28);
        let family = if v6 {
            socket::AF_INET6
        } else {
            socket::AF_INET
        };
        tail.cast::<[u8; 2]>().write_unaligned(family.to_ne_bytes());
        tail.add(2)
            .cast::<[u8; 2]>()
            .write_unaligned(port.to_be_bytes());
        if v6 {
            tail.add(8).cast::<[u8; 16]>().write_unaligned(*addr);
        } else {
            tail.add(4)
                .cast::<[u8; 4]>()
                .write_unaligned([addr[12], addr[13], addr[14], addr[15]]);
        }
    }
    record.grow(len as u64);
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).nr = nr;
        (*payload).fd = -1;
        (*payload).ret = -1; // EPERM
        (*payload).sockaddr_len = len;
    }
    record.submit();
}

/// A record of a `socket` call: `net.denied` for one refused (`ret` -1) or whose process was
/// killed (`how`), `net.socket` for one a monitored agent got. No address, the socket asked
/// for.
#[inline(always)]
fn report_socket(kind: EventKind, agent: u64, request: SocketRequest, ret: i64, how: u16) {
    let Some((record, payload)) = Record::start::<NetEvent>(kind as u16, agent, how) else {
        return;
    };
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).nr = nr::SOCKET;
        (*payload).fd = -1;
        (*payload).ret = ret;
        (*payload).bytes = request.pack();
        (*payload).sockaddr_len = 0;
    }
    record.submit();
}
