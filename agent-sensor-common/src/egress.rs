//! In-kernel egress allowlists of enforced agents (cgroup sock_addr programs) and the DNS
//! names whose answers extend them, decided in the kernel before the answer reaches the agent.

use crate::assert_size;

/// LPM trie data of an IPv4 allowlist entry: the agent, then the address. The prefix length
/// counts 64 bits of agent id plus the CIDR's prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressKey4 {
    /// Agent id, big-endian (so that it is the leading 64 bits of the key).
    pub agent: [u8; 8],
    pub addr: [u8; 4],
}
assert_size!(EgressKey4, 12);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressKey6 {
    pub agent: [u8; 8],
    pub addr: [u8; 16],
}
assert_size!(EgressKey6, 24);

/// Most ports one allowlist entry can name.
pub const MAX_PORTS: usize = 8;

/// Value of an allowlist entry or of an allowed name: the ports it allows (none: any port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressPorts {
    pub count: u16,
    /// [`name_flags`] bits (for allowed names).
    pub flags: u16,
    pub ports: [u16; MAX_PORTS],
}
assert_size!(EgressPorts, 20);

impl EgressPorts {
    pub fn allows(&self, port: u16) -> bool {
        if self.count == 0 {
            return true;
        }
        let mut i = 0;
        while i < MAX_PORTS {
            if (i as u16) < self.count && self.ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

pub mod name_flags {
    /// The name itself is allowed.
    pub const EXACT: u16 = 1 << 0;
    /// Every name below it is allowed (`*.name`).
    pub const BELOW: u16 = 1 << 1;
}

/// Key of `ALLOWED_NAMES`: agent and the hash of a DNS name (see [`name_hash_step`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub agent_id: u64,
    pub hash: u64,
}
assert_size!(NameKey, 16);

/// Hash of a DNS name, computed over its characters from the last to the first, lowercased,
/// with `.` between labels. Computed backwards so that one pass over a name in the kernel
/// yields the hash of every suffix (`api.anthropic.com`, `anthropic.com`, `com`).
pub const NAME_HASH_MULTIPLIER: u64 = 0x100_0000_01b3;

#[inline(always)]
pub const fn name_hash_step(hash: u64, byte: u8) -> u64 {
    let lower = if byte >= b'A' && byte <= b'Z' {
        byte + 32
    } else {
        byte
    };
    hash.wrapping_mul(NAME_HASH_MULTIPLIER)
        .wrapping_add(lower as u64 + 1)
}

/// The hash of a whole name (user space; the kernel gets the same value by its own pass).
pub fn name_hash(name: &[u8]) -> u64 {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let mut hash = 0u64;
    let mut i = name.len();
    while i > 0 {
        i -= 1;
        hash = name_hash_step(hash, name[i]);
    }
    hash
}

/// A socket the agent asked for, as `socket(2)` took it: what the `sock_create` egress program
/// decides on, and what its `net.denied` record carries (in `NetEvent::bytes`, packed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketRequest {
    pub family: u16,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`… (without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`).
    pub kind: u16,
    pub protocol: u16,
}

pub mod socket {
    pub const AF_UNIX: u16 = 1;
    pub const AF_INET: u16 = 2;
    pub const AF_INET6: u16 = 10;
    /// PF_KEY: IPsec keys and policies, set in the local kernel.
    pub const AF_KEY: u16 = 15;
    pub const AF_NETLINK: u16 = 16;
    /// Link-layer frames: below the IP stack, and below every cgroup socket hook.
    pub const AF_PACKET: u16 = 17;
    pub const AF_RDS: u16 = 21;
    pub const AF_CAN: u16 = 29;
    pub const AF_TIPC: u16 = 30;
    pub const AF_BLUETOOTH: u16 = 31;
    /// The kernel's crypto API.
    pub const AF_ALG: u16 = 38;
    /// To the hypervisor and other VMs.
    pub const AF_VSOCK: u16 = 40;
    pub const AF_SMC: u16 = 43;
    /// Frames straight to a NIC queue.
    pub const AF_XDP: u16 = 44;
    /// The bits of socket(2)'s type argument that are the type (the rest are
    /// `SOCK_NONBLOCK` and `SOCK_CLOEXEC`).
    pub const SOCK_TYPE_MASK: u64 = 0xf;
    /// The obsolete packet type: `socket(AF_INET, SOCK_PACKET, …)` is a packet socket (the
    /// kernel turns the family into `AF_PACKET` before any hook sees it).
    pub const SOCK_PACKET: u16 = 10;
    pub const SOCK_STREAM: u16 = 1;
    pub const SOCK_DGRAM: u16 = 2;
    pub const IPPROTO_TCP: u16 = 6;
    pub const IPPROTO_UDP: u16 = 17;
    pub const IPPROTO_UDPLITE: u16 = 136;
}

impl SocketRequest {
    /// Whether the egress programs see every destination such a socket can reach: TCP
    /// connects and UDP connects and addressed sends pass the cgroup connect/sendmsg hooks.
    /// Raw sockets, ICMP "ping" sockets (open to unprivileged users on most distributions),
    /// SCTP and the rest send without them, so an allowlist cannot hold them to anything.
    /// Only internet sockets reach the `sock_create` hook at all.
    pub const fn policed_by_egress_hooks(&self) -> bool {
        use socket::*;
        if self.family != AF_INET && self.family != AF_INET6 {
            return true;
        }
        let p = self.protocol;
        match self.kind {
            SOCK_STREAM => p == 0 || p == IPPROTO_TCP,
            SOCK_DGRAM => p == 0 || p == IPPROTO_UDP || p == IPPROTO_UDPLITE,
            _ => false,
        }
    }

    pub const fn pack(&self) -> u64 {
        self.family as u64 | (self.kind as u64) << 16 | (self.protocol as u64) << 32
    }

    /// The socket `socket(family, kind, protocol)` makes: the type without its flags, and
    /// `AF_INET`'s obsolete `SOCK_PACKET` as the packet socket the kernel makes of it.
    pub const fn of_call(family: u64, kind: u64, protocol: u64) -> Self {
        let kind = (kind & socket::SOCK_TYPE_MASK) as u16;
        let family = if family == socket::AF_INET as u64 && kind == socket::SOCK_PACKET {
            socket::AF_PACKET
        } else {
            family as u16
        };
        Self {
            family,
            kind,
            protocol: protocol as u16,
        }
    }

    /// Whether no cgroup socket hook sees this socket, so no egress program can hold it to
    /// anything: every family but the internet ones and those that stay on the host (unix,
    /// netlink, the crypto API, PF_KEY). Packet sockets, AF_XDP, AF_VSOCK (to the
    /// hypervisor), TIPC, RDS, SMC, CAN, Bluetooth and the rest.
    pub const fn outside_socket_hooks(&self) -> bool {
        use socket::*;
        !matches!(
            self.family,
            AF_UNIX | AF_INET | AF_INET6 | AF_NETLINK | AF_ALG | AF_KEY
        )
    }

    pub const fn unpack(packed: u64) -> Self {
        Self {
            family: packed as u16,
            kind: (packed >> 16) as u16,
            protocol: (packed >> 32) as u16,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] integers and byte arrays only, no implicit padding.
    unsafe impl aya::Pod for super::EgressKey4 {}
    unsafe impl aya::Pod for super::EgressKey6 {}
    unsafe impl aya::Pod for super::EgressPorts {}
    unsafe impl aya::Pod for super::NameKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_hashes_ignore_case_and_a_trailing_dot_and_differ_by_suffix() {
        assert_eq!(
            name_hash(b"API.Anthropic.com."),
            name_hash(b"api.anthropic.com")
        );
        assert_ne!(name_hash(b"anthropic.com"), name_hash(b"evilanthropic.com"));
        assert_ne!(name_hash(b"a.com"), name_hash(b"com"));
    }

    #[test]
    fn ports_allow_listed_ones_or_any_when_empty() {
        let any = EgressPorts::default();
        assert!(any.allows(1));
        let some = EgressPorts {
            count: 2,
            flags: 0,
            ports: [443, 80, 0, 0, 0, 0, 0, 0],
        };
        assert!(some.allows(443) && some.allows(80) && !some.allows(22) && !some.allows(0));
    }

    #[test]
    fn only_tcp_and_udp_internet_sockets_are_left_to_the_connect_and_send_hooks() {
        let request = |family, kind, protocol| SocketRequest {
            family,
            kind,
            protocol,
        };
        for family in [2, 10] {
            for policed in [(1, 0), (1, 6), (2, 0), (2, 17), (2, 136)] {
                assert!(request(family, policed.0, policed.1).policed_by_egress_hooks());
            }
            // Raw (any protocol), ping sockets (ICMP, ICMPv6), SCTP, MPTCP, packet-like types.
            for unpoliced in [
                (3, 1),
                (3, 255),
                (2, 1),
                (2, 58),
                (1, 132),
                (5, 132),
                (1, 262),
            ] {
                assert!(!request(family, unpoliced.0, unpoliced.1).policed_by_egress_hooks());
            }
        }
        // Unix and netlink sockets never leave the host; the hook does not run for them.
        assert!(request(1, 3, 0).policed_by_egress_hooks());
        assert!(request(16, 3, 0).policed_by_egress_hooks());
        let raw_icmp = request(2, 3, 1);
        assert_eq!(SocketRequest::unpack(raw_icmp.pack()), raw_icmp);
        // Packet sockets, the obsolete AF_INET spelling included, whatever the type flags,
        // and every other family no socket hook sees (XDP, VSOCK, TIPC…).
        for (family, kind) in [
            (17, 3),
            (17, 2),
            (17, 10 | 0o2000000),
            (2, 10),
            (2, 10 | 0o4000),
            (44, 3),
            (40, 1),
            (30, 2),
        ] {
            let made = SocketRequest::of_call(family, kind, 0);
            assert!(made.outside_socket_hooks(), "{family} {kind}");
            assert_eq!(made.kind, (kind & 0xf) as u16);
        }
        assert_eq!(SocketRequest::of_call(2, 10, 768).family, 17);
        for (family, kind) in [(2, 3), (10, 10), (1, 10), (16, 3), (38, 5), (15, 3)] {
            assert!(
                !SocketRequest::of_call(family, kind, 0).outside_socket_hooks(),
                "{family} {kind}"
            );
        }
    }
}
