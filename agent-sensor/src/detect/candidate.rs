//! A rule's verdict before deduplication and severity: what fired, about what, and why.

use std::net::{IpAddr, SocketAddr};

use crate::{events::escape::escape, policy::RuleId};

#[derive(Debug, Clone)]
pub struct Candidate {
    pub rule: RuleId,
    /// What the finding is about (a path, a destination, a binary): repeats for the same
    /// agent, rule and target are deduplicated.
    pub target: String,
    pub summary: String,
    /// Oldest first, the triggering event last.
    pub evidence: Vec<crate::events::Event>,
    /// anomaly.novel_behavior only.
    pub score: Option<u32>,
}

impl Candidate {
    pub fn new(
        rule: RuleId,
        target: impl Into<String>,
        summary: impl Into<String>,
        evidence: Vec<crate::events::Event>,
    ) -> Self {
        Self {
            rule,
            target: target.into(),
            summary: summary.into(),
            evidence,
            score: None,
        }
    }
}

/// Lossless text of kernel bytes for summaries and targets.
pub fn text(bytes: &[u8]) -> String {
    escape(bytes)
}

/// `name:port` when the agent resolved the address from a name, `ip:port` otherwise.
pub fn destination(ip: IpAddr, port: u16, dns_name: Option<&[u8]>) -> String {
    match dns_name {
        Some(name) => format!("{}:{port}", text(name)),
        None => SocketAddr::new(ip, port).to_string(),
    }
}

/// `1.2.3.4:443 (example.com)` for summaries.
pub fn destination_long(ip: IpAddr, port: u16, dns_name: Option<&[u8]>) -> String {
    let addr = SocketAddr::new(ip, port);
    match dns_name {
        Some(name) => format!("{} ({addr})", text(name)),
        None => addr.to_string(),
    }
}
