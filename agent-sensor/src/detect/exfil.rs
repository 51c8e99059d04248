//! exfil.unallowed_egress and exfil.sensitive_then_egress: connections and sends to
//! Internet destinations the policy does not allow, and the same shortly after the agent read
//! a secret.
//!
//! Every attempt counts, whatever its result: a non-blocking connect returns EINPROGRESS, and
//! a refused connection still shows where the agent meant to go. DNS to the host's resolvers
//! (port 53) is left to exfil.dns_tunnel; port 53 anywhere else is egress like any port (the
//! kernel's egress programs refuse it too), or a tunnel could go straight to a server of the
//! agent's choosing. Loopback is always allowed by the policy.
//!
//! An enforced agent that asks for a socket the egress programs cannot hold to the allowlist
//! (raw, ICMP "ping", SCTP) is refused it by the kernel, or killed for a packet socket, and
//! that attempt is exfil.unallowed_egress too: nothing else shows where such a socket would
//! have sent. A monitored agent gets the socket, and the same finding ("would deny").

use std::{collections::VecDeque, net::IpAddr};

use agent_sensor_common::{
    egress::{socket, SocketRequest},
    flags, EventKind,
};

use super::{
    candidate::{destination, destination_long, text, Candidate},
    Context,
};
use crate::{
    events::{sockaddr::SockAddr, Body, Event},
    policy::RuleId,
};

/// Sensitive reads remembered per agent.
const MAX_RECENT_READS: usize = 64;

/// The agent's latest sensitive reads, oldest first.
#[derive(Debug, Default)]
pub struct RecentReads {
    reads: VecDeque<Event>,
}

impl RecentReads {
    pub fn push(&mut self, read: Event) {
        if self.reads.len() >= MAX_RECENT_READS {
            self.reads.pop_front();
        }
        self.reads.push_back(read);
    }

    /// The latest read at most `window_ns` before `now_ns`, and how many reads that window
    /// holds. Older reads are forgotten.
    fn latest_within(&mut self, now_ns: u64, window_ns: u64) -> Option<(&Event, usize)> {
        while let Some(oldest) = self.reads.front() {
            if now_ns.saturating_sub(oldest.ktime_ns) <= window_ns {
                break;
            }
            self.reads.pop_front();
        }
        let count = self.reads.len();
        self.reads.back().map(|read| (read, count))
    }
}

/// Where a connect or send goes, when the egress rules judge it.
pub fn egress<'e>(ctx: &Context, event: &'e Event) -> Option<(IpAddr, u16, Option<&'e [u8]>)> {
    let Body::Net(net) = &event.body else {
        return None;
    };
    if !matches!(event.kind, EventKind::NetConnect | EventKind::NetSend) {
        return None;
    }
    let Some(SockAddr::Inet { ip, port }) = &net.addr else {
        return None;
    };
    // 0.0.0.0 and :: reach this host.
    if ip.is_unspecified() || (*port == 53 && is_resolver(ctx, *ip)) {
        return None;
    }
    Some((*ip, *port, net.dns_name.as_deref()))
}

/// One of the host's resolvers (an IPv4 one also as its IPv6-mapped form, as the kernel keeps
/// them).
fn is_resolver(ctx: &Context, ip: IpAddr) -> bool {
    ctx.sensor
        .resolvers
        .iter()
        .any(|r| r.to_canonical() == ip.to_canonical())
}

/// Whether the agent may reach `ip:port`.
pub fn allowed(ctx: &Context, ip: IpAddr, port: u16, dns_name: Option<&[u8]>) -> bool {
    ctx.agent.scope.egress_allowed(ip, port, dns_name)
}

pub fn check(ctx: &Context, event: &Event, reads: &mut RecentReads, out: &mut Vec<Candidate>) {
    let Some((ip, port, name)) = egress(ctx, event) else {
        return;
    };
    if allowed(ctx, ip, port, name) {
        return;
    }
    let target = destination(ip, port, name);
    // An attempt counts as much as a success, but the summary says which it was (a connect
    // the egress programs refused did not connect).
    const EINPROGRESS: i64 = -115;
    let verb = match (event.kind == EventKind::NetConnect, event.result()) {
        (true, 0 | EINPROGRESS) => "connected to",
        (true, _) => "tried to connect to",
        (false, sent) if sent >= 0 => "sent data to",
        (false, _) => "tried to send data to",
    };
    let place = destination_long(ip, port, name);
    let window_secs = ctx.agent.scope.thresholds.exfil_window_secs;
    if ctx.enabled(RuleId::SensitiveThenEgress) {
        let window_ns = window_secs.saturating_mul(1_000_000_000);
        if let Some((read, count)) = reads.latest_within(event.ktime_ns, window_ns) {
            let path = match &read.body {
                Body::File(file) => file.path.as_deref().map(text).unwrap_or_default(),
                _ => String::new(),
            };
            let after = event.ktime_ns.saturating_sub(read.ktime_ns) / 1_000_000_000;
            let others = if count > 1 {
                format!(" (the latest of {count} sensitive reads within {window_secs} s)")
            } else {
                String::new()
            };
            let summary = format!(
                "read {path} then {verb} {place}, which the policy does not allow, {after} s \
                 later{others}"
            );
            out.push(Candidate::new(
                RuleId::SensitiveThenEgress,
                target,
                summary,
                vec![read.clone(), event.clone()],
            ));
            // The exfiltration finding says everything the plain one would.
            return;
        }
    }
    out.push(Candidate::new(
        RuleId::UnallowedEgress,
        target,
        format!("{verb} {place}, which the policy does not allow"),
        vec![event.clone()],
    ));
}

/// A socket the egress allowlist could not have held: one the kernel refused the agent (or
/// killed its process for), or one a monitored agent got, which enforce mode would have
/// refused.
pub fn check_unpoliced_socket(event: &Event, out: &mut Vec<Candidate>) {
    let (EventKind::NetDenied | EventKind::NetSocket, Body::Net(net)) = (event.kind, &event.body)
    else {
        return;
    };
    let Some(socket) = net.socket else {
        return;
    };
    let what = socket_name(socket);
    // A packet socket is not refused: the kernel kills its process as the call returns, or
    // as it submits the io_uring request for one.
    let verb = if event.flags & flags::VIA_IO_URING != 0 {
        "asked io_uring for"
    } else if event.result() >= 0 {
        "opened"
    } else {
        "tried to open"
    };
    out.push(Candidate::new(
        RuleId::UnallowedEgress,
        what.clone(),
        format!("{verb} {what}, which sends around the egress allowlist"),
        vec![event.clone()],
    ));
}

/// "a raw IPv4 socket (type 3, protocol 1)", "an ICMP (ping) IPv6 socket (type 2, protocol 58)",
/// "a raw packet socket (type 3, ethertype 0x0003)".
fn socket_name(request: SocketRequest) -> String {
    const SOCK_RAW: u16 = 3;
    let family = match request.family {
        socket::AF_INET => "IPv4".to_string(),
        socket::AF_INET6 => "IPv6".to_string(),
        socket::AF_PACKET => "packet".to_string(),
        socket::AF_XDP => "XDP".to_string(),
        socket::AF_VSOCK => "VSOCK".to_string(),
        socket::AF_TIPC => "TIPC".to_string(),
        socket::AF_RDS => "RDS".to_string(),
        socket::AF_SMC => "SMC".to_string(),
        socket::AF_CAN => "CAN".to_string(),
        socket::AF_BLUETOOTH => "Bluetooth".to_string(),
        other => format!("family {other}"),
    };
    let kind = match (request.kind, request.protocol) {
        (SOCK_RAW, _) => "a raw ",
        (_, 1 | 58) => "an ICMP (ping) ",
        (_, 132) => "an SCTP ",
        (_, 262) => "an MPTCP ",
        _ if matches!(request.family, socket::AF_INET | socket::AF_INET6) => "an ",
        _ => "a ",
    };
    // A packet socket's protocol is an ethertype in network byte order (`htons(ETH_P_ALL)`).
    let protocol = if request.family == socket::AF_PACKET {
        format!("ethertype {:#06x}", u16::from_be(request.protocol))
    } else {
        format!("protocol {}", request.protocol)
    };
    format!("{kind}{family} socket (type {}, {protocol})", request.kind)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::policy::RuleId;

    #[test]
    fn unallowed_destinations_fire_and_loopback_and_dns_do_not() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(connect(PID, "203.0.113.7", 443)),
            RuleId::UnallowedEgress,
            "connected to 203.0.113.7:443, which the policy does not allow",
        );
        assert_fires(
            fx.feed(send_to(PID, "198.51.100.1", 9999).dns_name("paste.example")),
            RuleId::UnallowedEgress,
            "sent data to paste.example (198.51.100.1:9999)",
        );
        assert_silent(fx.feed(connect(PID, "127.0.0.1", 8080)));
        assert_silent(fx.feed(connect(PID, "::1", 5432)));
        assert_silent(fx.feed(connect(PID, "0.0.0.0", 3000)));
        // DNS to the host's resolvers is exfil.dns_tunnel's to judge.
        assert_silent(fx.feed(send_to(PID, "10.0.0.2", 53)));
        assert_silent(fx.feed(connect(PID, "::ffff:10.0.0.2", 53)));
        // Port 53 of any other host is egress: a tunnel straight to the agent's own server.
        assert_fires(
            fx.feed(send_to(PID, "198.51.100.10", 53)),
            RuleId::UnallowedEgress,
            "sent data to 198.51.100.10:53",
        );
        assert_fires(
            fx.feed(connect(PID, "198.51.100.11", 53)),
            RuleId::UnallowedEgress,
            "connected to 198.51.100.11:53",
        );
        // A non-blocking connect in progress is still a connect.
        assert_fires(
            fx.feed(connect(PID, "192.0.2.1", 80).ret(-115)),
            RuleId::UnallowedEgress,
            "connected to 192.0.2.1:80",
        );
        // One the kernel refused is an attempt, and says so.
        assert_fires(
            fx.feed(connect(PID, "192.0.2.2", 80).ret(-1)),
            RuleId::UnallowedEgress,
            "tried to connect to 192.0.2.2:80",
        );
        assert_fires(
            fx.feed(send_to(PID, "192.0.2.3", 80).ret(-1)),
            RuleId::UnallowedEgress,
            "tried to send data to 192.0.2.3:80",
        );
    }

    #[test]
    fn a_socket_that_goes_around_the_allowlist_is_unallowed_egress_refused_or_not() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(socket_denied(PID, 2, 2, 1)),
            RuleId::UnallowedEgress,
            "tried to open an ICMP (ping) IPv4 socket (type 2, protocol 1), which sends around \
             the egress allowlist",
        );
        assert_fires(
            fx.feed(socket_denied(PID, 10, 3, 255)),
            RuleId::UnallowedEgress,
            "a raw IPv6 socket (type 3, protocol 255)",
        );
        // A packet socket is no internet socket: its process was killed as it got it.
        assert_fires(
            fx.feed(socket_denied(PID, 17, 2, 768).ret(4)),
            RuleId::UnallowedEgress,
            "opened a packet socket (type 2, ethertype 0x0003)",
        );
        // Families no socket hook sees: the process was killed as it got one.
        assert_fires(
            fx.feed(socket_denied(PID, 44, 3, 0).ret(4)),
            RuleId::UnallowedEgress,
            "opened a raw XDP socket (type 3, protocol 0)",
        );
        assert_fires(
            fx.feed(socket_denied(PID, 40, 1, 0).ret(4)),
            RuleId::UnallowedEgress,
            "opened a VSOCK socket (type 1, protocol 0)",
        );
        // A monitored agent gets the socket: what enforce mode would have refused.
        let mut opened = socket_denied(PID, 2, 3, 1).ret(5);
        opened.kind = agent_sensor_common::EventKind::NetSocket;
        assert_fires(
            fx.feed(opened),
            RuleId::UnallowedEgress,
            "opened a raw IPv4 socket (type 3, protocol 1), which sends around the egress \
             allowlist",
        );
        // Only the kernel's records of such sockets say what was asked for; other events
        // carry no socket.
        assert_silent(fx.feed(connect(PID, "127.0.0.1", 8080)));
    }

    #[test]
    fn allowed_hosts_cidrs_and_ports_are_silent() {
        // Waits on policy matching (AgentScope::egress_allowed with hosts, cidrs, ports).
        let mut fx = Fixture::new();
        assert_silent(fx.feed(connect(PID, "160.79.104.10", 443).dns_name("api.anthropic.com")));
        assert_silent(fx.feed(connect(PID, "10.20.3.4", 443)));
        assert_silent(fx.feed(connect(PID, "151.101.1.1", 443).dns_name("static.crates.io")));
        // An allowed host on a port the policy does not list is not allowed.
        assert_fires(
            fx.feed(connect(PID, "160.79.104.10", 8443).dns_name("api.anthropic.com")),
            RuleId::UnallowedEgress,
            "api.anthropic.com",
        );
    }

    #[test]
    fn repeated_connections_to_one_destination_report_once() {
        let mut fx = Fixture::new();
        assert_eq!(fx.feed(connect(PID, "203.0.113.7", 443)).len(), 1);
        for _ in 0..20 {
            assert_silent(fx.feed(connect(PID + 1, "203.0.113.7", 443)));
        }
        assert_eq!(fx.feed(connect(PID, "203.0.113.7", 80)).len(), 1);
    }

    #[test]
    fn a_secret_read_then_unallowed_egress_is_exfiltration() {
        let mut fx = Fixture::new();
        assert_eq!(
            fx.feed(open(PID + 1, "/proc/4321/environ", RDONLY)).len(),
            1
        );
        fx.advance_secs(30);
        let finding = assert_fires(
            fx.feed(connect(PID + 2, "203.0.113.7", 443)),
            RuleId::SensitiveThenEgress,
            "read /proc/4321/environ then connected to 203.0.113.7:443, which the policy does \
             not allow, 30 s later",
        );
        assert_eq!(finding.evidence.len(), 2);
        assert_eq!(
            finding.evidence[0].kind,
            agent_sensor_common::EventKind::FileOpen
        );
        assert_eq!(finding.severity, crate::policy::Severity::Critical);
    }

    #[test]
    fn a_secret_read_long_before_or_egress_that_is_allowed_is_not_exfiltration() {
        let mut fx = Fixture::new();
        fx.feed(open(PID, "/proc/4321/environ", RDONLY));
        fx.advance_secs(301);
        assert_fires(
            fx.feed(connect(PID, "203.0.113.7", 443)),
            RuleId::UnallowedEgress,
            "203.0.113.7",
        );
        // A refused read read nothing.
        let mut fx = Fixture::new();
        fx.feed(open(PID, "/proc/4321/environ", RDONLY).ret(-13));
        assert_fires(
            fx.feed(connect(PID, "203.0.113.7", 443)),
            RuleId::UnallowedEgress,
            "203.0.113.7",
        );
        let mut fx = Fixture::new();
        fx.feed(open(PID, "/proc/4321/environ", RDONLY));
        assert_silent(fx.feed(connect(PID, "127.0.0.1", 443)));
    }

    #[test]
    fn a_sensitive_file_then_an_allowed_llm_call_is_not_exfiltration() {
        // Waits on policy matching (is_sensitive and egress_allowed).
        let mut fx = Fixture::new();
        fx.feed(open(PID, "/work/a/.env", RDONLY));
        assert_silent(fx.feed(connect(PID, "160.79.104.10", 443).dns_name("api.anthropic.com")));
    }
}
