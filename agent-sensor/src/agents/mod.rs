//! What the sensor knows about agents beyond single events: for now the names their addresses
//! came from. Events are annotated here before they are written.

pub mod discovery;
pub mod dns;
pub mod registry;

use std::time::Instant;

use crate::events::{Body, Event};

/// Annotates events with what earlier events taught us.
#[derive(Debug)]
pub struct Correlator {
    pub dns: dns::DnsCache,
}

impl Default for Correlator {
    fn default() -> Self {
        Self {
            dns: dns::DnsCache::new(65536),
        }
    }
}

impl Correlator {
    /// Learns from `event` and fills in its annotations.
    pub fn observe(&mut self, event: &mut Event) {
        let now = Instant::now();
        match &mut event.body {
            Body::Net(net) => {
                for answer in &net.dns_answers {
                    self.dns
                        .learn(event.agent_id, answer.ip, &answer.name, answer.ttl, now);
                }
                if let Some(crate::events::sockaddr::SockAddr::Inet { ip, .. }) = &net.addr {
                    net.dns_name = self
                        .dns
                        .name_of(event.agent_id, *ip, now)
                        .map(<[u8]>::to_vec);
                }
            }
            Body::SockClose(close) => {
                if let Some(peer) = close.peer {
                    close.dns_name = self
                        .dns
                        .name_of(event.agent_id, peer.ip(), now)
                        .map(<[u8]>::to_vec);
                }
            }
            _ => {}
        }
    }
}
