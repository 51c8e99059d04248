//! Network events: egress (exfil rules), DNS queries (dns_tunnel), connections to the
//! sensor's sockets (tamper), and the remote connections a reverse shell would ride on.

use agent_sensor_common::EventKind;

use super::{candidate::Candidate, dns_tunnel, exec, exfil, state::AgentState, tamper, Context};
use crate::events::{sockaddr::SockAddr, Event, NetBody};

pub fn check(
    ctx: &Context,
    event: &Event,
    net: &NetBody,
    state: &mut AgentState,
    out: &mut Vec<Candidate>,
) {
    // A query is seen at its syscall and again as its packet leaves (which catches the ways of
    // sending the syscall records miss): the rule counts distinct names, so twice is once.
    if let (EventKind::NetSend | EventKind::NetDnsPacket, Some(question)) = (event.kind, &net.dns) {
        out.extend(dns_tunnel::check(ctx, event, question, &mut state.dns));
    }
    if let Some(SockAddr::Unix {
        path,
        is_abstract: false,
    }) = &net.addr
    {
        if matches!(event.kind, EventKind::NetConnect | EventKind::NetSend) {
            out.extend(tamper::connect_unix(ctx, event, path));
        }
    }
    exfil::check(ctx, event, &mut state.sensitive_reads, out);
    exfil::check_unpoliced_socket(event, out);
    exec::note_remote_socket(ctx, event, net, &mut state.processes);
}
