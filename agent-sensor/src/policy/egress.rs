//! The egress allowlist of one agent, compiled: host names (exact or `*.suffix`), CIDRs, ports.

use std::{
    collections::{BTreeSet, HashSet},
    net::IpAddr,
};

use super::model::Egress;

/// One entry of `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.x.com`, kept as `.x.com`: a name must end with it and have a label before it.
    Suffix(String),
}

/// Parses one host pattern (lower-cased; a trailing dot is dropped).
pub fn parse_host(text: &str) -> Result<HostPattern, String> {
    let lowered = text.trim_end_matches('.').to_ascii_lowercase();
    if lowered.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{text:?} is an address: list it in `cidrs` (as {text}/32 or /128)"
        ));
    }
    match lowered.strip_prefix("*.") {
        Some(domain) => check_name(domain).map(|()| HostPattern::Suffix(format!(".{domain}"))),
        None => check_name(&lowered).map(|()| HostPattern::Exact(lowered.clone())),
    }
    .map_err(|why| format!("{text:?}: {why}"))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a host name has 1 to 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label between dots has 1 to 63 characters".into());
        }
        if label.contains('*') {
            return Err("`*` is only allowed as the whole first label (`*.example.com`)".into());
        }
        let valid = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err("a host name holds letters, digits, `-`, `_` and dots".into());
        }
    }
    Ok(())
}

/// Lower-cases and drops a trailing dot, as patterns are.
fn normalize_name(name: &[u8]) -> Vec<u8> {
    name.strip_suffix(b".").unwrap_or(name).to_ascii_lowercase()
}

#[derive(Debug, Clone, Default)]
pub struct EgressAllow {
    exact: HashSet<Vec<u8>>,
    suffixes: Vec<Vec<u8>>,
    cidrs: Vec<ipnet::IpNet>,
    /// `None`: any port.
    ports: Option<BTreeSet<u16>>,
}

impl EgressAllow {
    /// The profile's allowlist with an agent's added. The profile's empty `ports` means any
    /// port, and adding to "any" leaves it any.
    pub fn compile(profile: &Egress, agent: Option<&Egress>) -> Result<Self, String> {
        let mut allow = Self::default();
        for egress in std::iter::once(profile).chain(agent) {
            allow.add_hosts(&egress.hosts)?;
            allow.cidrs.extend(egress.cidrs.iter().map(|c| c.trunc()));
        }
        if !profile.ports.is_empty() {
            let agent_ports = agent.map(|a| a.ports.as_slice()).unwrap_or_default();
            allow.ports = Some(profile.ports.iter().chain(agent_ports).copied().collect());
        }
        Ok(allow)
    }

    fn add_hosts(&mut self, hosts: &[String]) -> Result<(), String> {
        for host in hosts {
            match parse_host(host)? {
                HostPattern::Exact(name) => {
                    self.exact.insert(name.into_bytes());
                }
                HostPattern::Suffix(suffix) => self.suffixes.push(suffix.into_bytes()),
            }
        }
        Ok(())
    }

    /// Loopback (and the unspecified address, which Linux connects to locally) always; else
    /// an allowed port and an allowed CIDR or resolved name.
    /// Names allowed exactly (lowercase, no trailing dot).
    pub fn exact_names(&self) -> impl Iterator<Item = &[u8]> {
        self.exact.iter().map(Vec::as_slice)
    }

    /// Domains whose every name below is allowed (`*.domain`), without the leading dot.
    pub fn below_domains(&self) -> impl Iterator<Item = &[u8]> {
        self.suffixes
            .iter()
            .map(|s| s.strip_prefix(b".").unwrap_or(s))
    }

    pub fn cidrs(&self) -> &[ipnet::IpNet] {
        &self.cidrs
    }

    /// The allowed ports, `None` for any.
    pub fn ports(&self) -> Option<&BTreeSet<u16>> {
        self.ports.as_ref()
    }

    pub fn allows(&self, ip: IpAddr, port: u16, dns_name: Option<&[u8]>) -> bool {
        let ip = ip.to_canonical();
        if ip.is_loopback() || ip.is_unspecified() {
            return true;
        }
        if !self.port_allowed(port) {
            return false;
        }
        self.cidrs.iter().any(|net| net.contains(&ip))
            || dns_name.is_some_and(|n| self.host_allowed(n))
    }

    pub fn port_allowed(&self, port: u16) -> bool {
        self.ports
            .as_ref()
            .is_none_or(|ports| ports.contains(&port))
    }

    /// Whether a resolved name is on the list (whatever the port).
    pub fn host_allowed(&self, name: &[u8]) -> bool {
        let name = normalize_name(name);
        self.exact.contains(&name)
            || self
                .suffixes
                .iter()
                .any(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(hosts: &[&str], cidrs: &[&str], ports: &[u16]) -> Egress {
        Egress {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn suffix_patterns_need_a_label_boundary() {
        let allow =
            EgressAllow::compile(&egress(&["*.x.com", "API.Example.com"], &[], &[]), None).unwrap();
        assert!(allow.host_allowed(b"a.x.com"));
        assert!(allow.host_allowed(b"a.b.X.com."));
        assert!(!allow.host_allowed(b"x.com"));
        assert!(!allow.host_allowed(b"evilx.com"));
        assert!(!allow.host_allowed(b"x.com.evil.net"));
        assert!(allow.host_allowed(b"api.example.com"));
        assert!(!allow.host_allowed(b"xapi.example.com"));
    }

    #[test]
    fn host_patterns_are_checked() {
        assert_eq!(
            parse_host("*.Anthropic.com.").unwrap(),
            HostPattern::Suffix(".anthropic.com".into())
        );
        for bad in [
            "", "*", "a.*.com", "*x.com", "a..com", "a b.com", "10.0.0.1", "::1",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn ports_restrict_and_agents_add() {
        let profile = egress(&["github.com"], &["10.1.0.0/16"], &[443]);
        let agent = egress(&[], &["192.0.2.7/32"], &[22]);
        let allow = EgressAllow::compile(&profile, Some(&agent)).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(allow.allows(ip("10.1.2.3"), 443, None));
        assert!(allow.allows(ip("10.1.2.3"), 22, None));
        assert!(!allow.allows(ip("10.1.2.3"), 80, None));
        assert!(allow.allows(ip("192.0.2.7"), 443, None));
        assert!(!allow.allows(ip("192.0.2.8"), 443, None));
        assert!(allow.allows(ip("203.0.113.9"), 443, Some(b"github.com")));
        assert!(!allow.allows(ip("203.0.113.9"), 443, Some(b"gitlab.com")));
        assert!(allow.allows(ip("::ffff:10.1.0.1"), 443, None));
        assert!(allow.allows(ip("127.0.0.1"), 4444, None));
        assert!(allow.allows(ip("::1"), 4444, None));
        let any_port =
            EgressAllow::compile(&egress(&[], &["10.0.0.0/8"], &[]), Some(&agent)).unwrap();
        assert!(any_port.allows(ip("10.9.9.9"), 5432, None));
    }
}
