//! What the sensor knows about agents beyond single events: for now the names their addresses
//! came from. Events are annotated here before they are written.

pub mod discovery;
pub mod dns;
pub mod registry;
pub mod worktree_index;

use std::time::Instant;

use agent_sensor_common::EventKind;

use crate::{
    events::{sockaddr::SockAddr, Body, Event, NetBody},
    fasthash::HashMap,
};

/// Connected sockets remembered at once (a bound on memory, not a limit anyone should meet).
const MAX_CONNECTED: usize = 65536;

/// Annotates events with what earlier events taught us.
#[derive(Debug)]
pub struct Correlator {
    pub dns: dns::DnsCache,
    /// (tgid, fd) → peer of a connected socket: a send without an address goes there.
    connected: HashMap<(u32, i32), SockAddr>,
}

impl Default for Correlator {
    fn default() -> Self {
        Self {
            dns: dns::DnsCache::new(65536),
            connected: HashMap::default(),
        }
    }
}

impl Correlator {
    /// Learns from `event` and fills in its annotations.
    pub fn observe(&mut self, event: &mut Event) {
        let now = Instant::now();
        match &mut event.body {
            Body::Net(net) => {
                self.remember_peer(event.kind, event.tgid, net);
                for answer in &net.dns_answers {
                    self.dns
                        .learn(event.agent_id, answer.ip, &answer.name, answer.ttl, now);
                }
                if let Some(SockAddr::Inet { ip, .. }) = &net.addr {
                    net.dns_name = self
                        .dns
                        .name_of(event.agent_id, *ip, now)
                        .map(<[u8]>::to_vec);
                }
            }
            Body::SockClose(close) => {
                self.connected.remove(&(event.tgid, close.fd));
                if let Some(peer) = close.peer {
                    close.dns_name = self
                        .dns
                        .name_of(event.agent_id, peer.ip(), now)
                        .map(<[u8]>::to_vec);
                }
            }
            Body::Exit { .. } => self.connected.retain(|(tgid, _), _| *tgid != event.tgid),
            _ => {}
        }
    }

    /// Learns the peer of a successful connect; fills it in for a later send on that socket
    /// (send(2) and write-style sends carry no address of their own).
    fn remember_peer(&mut self, kind: EventKind, tgid: u32, net: &mut NetBody) {
        const EINPROGRESS: i64 = -115;
        match kind {
            EventKind::NetConnect if net.ret == 0 || net.ret == EINPROGRESS => {
                if let Some(addr) = &net.addr {
                    if self.connected.len() >= MAX_CONNECTED {
                        self.connected.clear();
                    }
                    self.connected.insert((tgid, net.fd), addr.clone());
                }
            }
            EventKind::NetSend if net.addr.is_none() => {
                if let Some(addr) = self.connected.get(&(tgid, net.fd)) {
                    // The decoder tried the bytes as a DNS query because it could not see the
                    // peer; to any other port than 53 they are payload, and a "name" parsed
                    // from them would copy the agent's data into the event log.
                    if !matches!(addr, SockAddr::Inet { port: 53, .. }) {
                        net.dns = None;
                    }
                    net.addr = Some(addr.clone());
                    net.addr_from_connect = true;
                }
            }
            _ => {}
        }
    }
}
