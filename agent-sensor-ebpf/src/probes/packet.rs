//! DNS queries as they leave: a `cgroup_skb` egress program on the cgroup v2 root looks at every
//! UDP datagram to port 53 an agent's process sends, and records its payload
//! (`net.dns_packet`). A syscall's record holds what the process's buffer held when the sensor
//! read it, from the calls it decodes; this is what the kernel sent, however it was sent
//! (`write` on a connected socket, `sendmmsg`, a `sendmsg` split over iovecs, io_uring with a
//! buffer changed after submission), so that `exfil.dns_tunnel` sees every query.
//!
//! Every packet of the host passes here: an IP header byte or two and a port are read before
//! anything else, and only port 53 to an agent goes on. A UDP datagram is sent in its sender's
//! context, so the current task is the agent's process (an io_uring worker is a thread of it).

use agent_sensor_common::{EventKind, NetEvent, MAX_SEND_DATA};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
};

use crate::{emit::Record, tracking::hot_tracked};

const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const UDP_HEADER: u32 = 8;

/// Lets every packet through: this program only looks.
#[cgroup_skb]
pub fn net_dns_egress(ctx: SkBuffContext) -> i32 {
    let _ = try_dns_egress(&ctx);
    1
}

fn try_dns_egress(ctx: &SkBuffContext) -> Option<()> {
    let first: u8 = ctx.load(0).ok()?;
    // (where the UDP header starts, where the destination address is, its length, family)
    let (udp_at, daddr_at, daddr_len, family) = match first >> 4 {
        4 => {
            let protocol: u8 = ctx.load(9).ok()?;
            if protocol != IPPROTO_UDP {
                return None;
            }
            (((first & 0x0f) as u32) * 4, 16, 4, AF_INET)
        }
        // A UDP header right after the fixed one (no extension headers).
        6 => {
            let next: u8 = ctx.load(6).ok()?;
            if next != IPPROTO_UDP {
                return None;
            }
            (40, 24, 16, AF_INET6)
        }
        _ => return None,
    };
    let dport: u16 = ctx.load(udp_at as usize + 2).ok()?;
    if u16::from_be(dport) != DNS_PORT {
        return None;
    }
    let agent = hot_tracked((bpf_get_current_pid_tgid() >> 32) as u32)?.agent;
    let data_at = udp_at + UDP_HEADER;
    let data_len = ctx.len().checked_sub(data_at)?;
    let (record, payload) = Record::start::<NetEvent>(EventKind::NetDnsPacket as u16, agent, 0)?;
    // The destination as a sockaddr_in or sockaddr_in6, as the syscall records hold it.
    let addr = record.tail();
    let addr_len: u32 = if family == AF_INET { 16 } else { 28 };
    // SAFETY: the tail has MAX_EVENT_BYTES of room; the sockaddr is at most 28 bytes.
    unsafe {
        for i in 0..28 {
            addr.add(i).write_volatile(0);
        }
        addr.cast::<u16>().write_unaligned(family);
        addr.add(2).cast::<u16>().write_unaligned(DNS_PORT.to_be());
        let at = if family == AF_INET { 4 } else { 8 };
        if bpf_skb_load_bytes(ctx.skb.skb.cast(), daddr_at, addr.add(at).cast(), daddr_len) != 0 {
            return None;
        }
    }
    record.grow(addr_len as u64);
    let copied = if data_len > 0 {
        let kept = if data_len > MAX_SEND_DATA as u32 - 1 {
            MAX_SEND_DATA as u32 - 1
        } else {
            data_len
        };
        // 1..=MAX_SEND_DATA as the verifier sees it: the helper refuses a length that may be
        // 0. (Through the stack: LLVM, knowing `kept` is 1..=511, would drop the mask.)
        // SAFETY: a local read back.
        let kept = unsafe { core::ptr::read_volatile(&kept) };
        let kept = ((kept - 1) & (MAX_SEND_DATA as u32 - 1)) + 1;
        // SAFETY: `kept` is at most MAX_SEND_DATA, inside the tail's room.
        let ok =
            unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), data_at, record.tail().cast(), kept) }
                == 0;
        if ok {
            kept
        } else {
            0
        }
    } else {
        0
    };
    record.grow(copied as u64);
    // SAFETY: payload points into the scratch record.
    unsafe {
        (*payload).fd = -1;
        (*payload).bytes = data_len as u64;
        (*payload).sockaddr_len = addr_len as u16;
        (*payload).data_len = copied as u16;
    }
    record.submit();
    Some(())
}
