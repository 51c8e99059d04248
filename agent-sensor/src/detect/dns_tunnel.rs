//! exfil.dns_tunnel: data smuggled out in DNS query names — a label that is too long or looks
//! encoded (high entropy), a burst of distinct names under one domain (each query carrying
//! a chunk), or, for a tunnel slow enough to stay under the burst count, the bytes its distinct
//! names add up to under one domain over minutes. Names the policy allows the agent to reach
//! are not counted in that sum: their answers come from the owner's servers, not an
//! attacker's.
//!
//! Names are compared lower-cased: resolvers may randomise case (DNS 0x20), which would
//! otherwise inflate both entropy and uniqueness. Entropy is judged per run of a label between
//! hyphens or underscores, and runs that read like words are not encoded data: ordinary names
//! (`my-company-build-artifacts-2024`, `mystorageaccount2024prod`) score as high per character
//! as base32 does. Encoded data that slips past this is still caught by length or by the burst
//! of distinct names a tunnel needs.

use std::{
    collections::{hash_map::DefaultHasher, HashMap},
    hash::{Hash, Hasher},
};

use super::{
    candidate::{text, Candidate},
    Context,
};
use crate::{
    events::{dns::DnsQuestion, Event},
    policy::RuleId,
};

/// Domains whose names are tracked per agent; the stalest is dropped beyond this.
const MAX_DOMAINS: usize = 128;
/// Distinct names remembered per domain, whatever the thresholds say (a few tens of KiB). A
/// tunnel that reaches the volume threshold with fewer names than this is caught by it.
const MAX_NAMES_PER_DOMAIN: usize = 512;

/// Public suffixes under which each next label is a different owner, so that a burst across
/// tenants (or a tunnel on one tenant) is counted per tenant.
const SHARED_SUFFIXES: [&str; 12] = [
    "github.io",
    "herokuapp.com",
    "cloudfront.net",
    "azurewebsites.net",
    "vercel.app",
    "netlify.app",
    "workers.dev",
    "pages.dev",
    "ngrok.io",
    "ngrok-free.app",
    "trycloudflare.com",
    "appspot.com",
];

/// Second-level labels under which country-code domains are registered (`example.co.uk`).
const SECOND_LEVELS: [&str; 12] = [
    "co", "com", "net", "org", "gov", "edu", "ac", "ne", "or", "go", "ltd", "plc",
];

#[derive(Debug, Default)]
struct Burst {
    /// Name hash → when last queried, and the bytes it carries (left of the domain).
    names: HashMap<u64, Seen>,
    last_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at_ns: u64,
    bytes: usize,
}

/// What one domain's recent names amount to.
#[derive(Debug, Clone, Copy)]
struct Recent {
    /// Distinct names within the burst window.
    unique: usize,
    /// Bytes of the distinct names within the volume window, and how many names carry them.
    bytes: usize,
    names: usize,
}

/// Recent distinct query names per registrable domain.
#[derive(Debug, Default)]
pub struct DnsBursts {
    domains: HashMap<String, Burst>,
}

impl DnsBursts {
    /// Records `name` (carrying `bytes`) under `domain` at `now_ns`; returns what the
    /// domain's distinct names amount to within each window.
    fn record(
        &mut self,
        domain: &str,
        name: &str,
        bytes: usize,
        now_ns: u64,
        windows: Windows,
    ) -> Recent {
        if !self.domains.contains_key(domain) && self.domains.len() >= MAX_DOMAINS {
            if let Some(stalest) = self
                .domains
                .iter()
                .min_by_key(|(_, b)| b.last_ns)
                .map(|(d, _)| d.clone())
            {
                self.domains.remove(&stalest);
            }
        }
        let burst = self.domains.entry(domain.to_string()).or_default();
        burst.last_ns = now_ns;
        let kept_ns = windows.burst_ns.max(windows.volume_ns);
        burst
            .names
            .retain(|_, seen| now_ns.saturating_sub(seen.at_ns) <= kept_ns);
        burst.names.insert(
            hash(name),
            Seen {
                at_ns: now_ns,
                bytes,
            },
        );
        if burst.names.len() > MAX_NAMES_PER_DOMAIN {
            if let Some(oldest) = burst
                .names
                .iter()
                .min_by_key(|(_, seen)| seen.at_ns)
                .map(|(h, _)| *h)
            {
                burst.names.remove(&oldest);
            }
        }
        let mut recent = Recent {
            unique: 0,
            bytes: 0,
            names: 0,
        };
        for seen in burst.names.values() {
            let age = now_ns.saturating_sub(seen.at_ns);
            if age <= windows.burst_ns {
                recent.unique += 1;
            }
            if age <= windows.volume_ns && seen.bytes > 0 {
                recent.bytes += seen.bytes;
                recent.names += 1;
            }
        }
        recent
    }
}

#[derive(Debug, Clone, Copy)]
struct Windows {
    burst_ns: u64,
    volume_ns: u64,
}

fn hash(name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

pub fn check(
    ctx: &Context,
    event: &Event,
    question: &DnsQuestion,
    bursts: &mut DnsBursts,
) -> Option<Candidate> {
    let t = &ctx.agent.scope.thresholds;
    let name = text(&question.name)
        .to_ascii_lowercase()
        .trim_end_matches('.')
        .to_string();
    if name.is_empty() {
        return None;
    }
    let domain = registrable_domain(&name);
    let finding = |summary: String| {
        Some(Candidate::new(
            RuleId::DnsTunnel,
            domain.clone(),
            summary,
            vec![event.clone()],
        ))
    };
    for label in name.split('.') {
        let len = label.len();
        if len > t.dns_label_max {
            return finding(format!(
                "queried {name}: a DNS label of {len} characters (over {}) under {domain}",
                t.dns_label_max
            ));
        }
        for run in label.split(['-', '_']) {
            let bits = entropy(run.as_bytes());
            if run.len() >= t.dns_entropy_min_len && bits > t.dns_entropy_bits && !wordlike(run) {
                return finding(format!(
                    "queried {name}: {} characters with {bits:.2} bits of entropy per \
                     character in one DNS label under {domain}",
                    run.len()
                ));
            }
        }
    }
    // Reverse lookups sweep many names under one zone without carrying anything.
    if name.ends_with(".arpa") {
        return None;
    }
    let windows = Windows {
        burst_ns: t.dns_burst_window_secs.saturating_mul(1_000_000_000),
        volume_ns: t.dns_volume_window_secs.saturating_mul(1_000_000_000),
    };
    let carried = if ctx.agent.scope.host_allowed(name.as_bytes()) {
        0
    } else {
        name.len().saturating_sub(domain.len())
    };
    let recent = bursts.record(&domain, &name, carried, event.ktime_ns, windows);
    if recent.unique >= t.dns_burst_unique {
        return finding(format!(
            "queried {} distinct names under {domain} within {} s (latest {name})",
            recent.unique, t.dns_burst_window_secs
        ));
    }
    if recent.bytes >= t.dns_volume_bytes {
        return finding(format!(
            "queried {} distinct names under {domain} carrying {} bytes within {} s (latest \
             {name})",
            recent.names, recent.bytes, t.dns_volume_window_secs
        ));
    }
    None
}

/// Shannon entropy of `bytes`, in bits per byte.
pub fn entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for b in bytes {
        counts[*b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether a run of a label reads like words (`mystorageaccount2024prod`) rather than
/// encoded bytes. Per-character entropy cannot tell them apart at DNS label lengths (both score
/// over 4 bits). Words keep their digits together (a year, a version) and have vowels (about
/// two letters in five in English); base32, base36 and hex data scatter digits among the
/// letters, switching between the two every few characters.
fn wordlike(run: &str) -> bool {
    let bytes = run.as_bytes();
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    let vowels = bytes.iter().filter(|b| b"aeiou".contains(b)).count();
    let switches = bytes
        .windows(2)
        .filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit())
        .count();
    switches <= 2 && letters * 10 >= bytes.len() * 6 && vowels * 4 >= letters
}

/// The domain a name was registered under, approximated without the public-suffix list: the
/// last two labels, or three under a country code's second level or a shared hosting suffix.
pub fn registrable_domain(name: &str) -> String {
    let labels: Vec<&str> = name.split('.').filter(|l| !l.is_empty()).collect();
    let n = labels.len();
    if n <= 2 {
        return labels.join(".");
    }
    let last_two = labels[n - 2..].join(".");
    let country_second_level = labels[n - 1].len() == 2 && SECOND_LEVELS.contains(&labels[n - 2]);
    let take = if country_second_level || SHARED_SUFFIXES.contains(&last_two.as_str()) {
        3
    } else {
        2
    };
    labels[n - take..].join(".")
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::policy::RuleId;

    #[test]
    fn registrable_domains() {
        assert_eq!(registrable_domain("a.b.example.com"), "example.com");
        assert_eq!(registrable_domain("example.com"), "example.com");
        assert_eq!(registrable_domain("x.y.example.co.uk"), "example.co.uk");
        assert_eq!(registrable_domain("evil.github.io"), "evil.github.io");
        assert_eq!(registrable_domain("localhost"), "localhost");
    }

    #[test]
    fn entropy_of_encoded_and_plain_labels() {
        assert!(entropy(b"mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpjvgsy3e") > 3.8);
        assert!(entropy(b"registry") < 3.0);
        assert_eq!(entropy(b"aaaa"), 0.0);
    }

    #[test]
    fn over_long_or_encoded_labels_fire() {
        let mut fx = Fixture::new();
        let long = format!("{}.t.evil.example", "a1".repeat(30));
        assert_fires(
            fx.feed(dns_query(PID, &long)),
            RuleId::DnsTunnel,
            "a DNS label of 60 characters (over 52) under evil.example",
        );
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(dns_query(
                PID,
                "mfrggzdfmztwq2lknnwg23tpobyxe43u.t.evil.example",
            )),
            RuleId::DnsTunnel,
            "32 characters with 4.35 bits of entropy per character in one DNS label under \
             evil.example",
        );
    }

    #[test]
    fn random_base32_labels_are_caught_by_entropy() {
        let mut fx = Fixture::new();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut caught = 0;
        for i in 0..200 {
            let label: String = (0..32)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"abcdefghijklmnopqrstuvwxyz234567"[(seed >> 59) as usize] as char
                })
                .collect();
            fx.advance_secs(61);
            caught += fx
                .feed(dns_query(PID, &format!("{label}.t{i}.example")))
                .len();
        }
        assert!(caught >= 190, "{caught} of 200");
    }

    #[test]
    fn ordinary_lookups_are_silent() {
        let mut fx = Fixture::new();
        for name in [
            "registry.npmjs.org",
            "index.crates.io",
            "files.pythonhosted.org",
            "api.anthropic.com",
            "github.com",
            "objects.githubusercontent.com",
            "d3h4k5l6m7n8o9.cloudfront.net",
            "my-load-balancer-1234567890.us-west-2.elb.amazonaws.com",
            "my-company-build-artifacts-2024.s3.amazonaws.com",
            "mystorageaccount2024prod.blob.core.windows.net",
            "thequickbrownfoxjumpsoverthelazydog.example",
            "4.3.2.1.in-addr.arpa",
        ] {
            assert_silent(fx.feed(dns_query(PID, name)));
        }
    }

    #[test]
    fn a_burst_of_distinct_names_under_one_domain_fires() {
        let mut fx = Fixture::new();
        for i in 0..19 {
            assert_silent(fx.feed(dns_query(PID, &format!("c{i}.t.evil.example"))));
        }
        // Repeating a name adds nothing.
        assert_silent(fx.feed(dns_query(PID, "c0.t.evil.example")));
        assert_fires(
            fx.feed(dns_query(PID, "c19.t.evil.example")),
            RuleId::DnsTunnel,
            "queried 20 distinct names under evil.example within 10 s",
        );
    }

    #[test]
    fn a_slow_tunnel_under_the_burst_count_is_caught_by_the_bytes_it_sends() {
        let mut fx = Fixture::new();
        // A query every 0.6 s, 26 bytes each left of the domain: never 20 within 10 s, and
        // the test profile's 1024 bytes are reached at the 40th name (1040 bytes).
        let name = |i: usize| format!("chunk{i:03}-aaaabbbbccccdd.t.evil.example");
        for i in 0..39 {
            fx.advance_ms(600);
            assert_silent(fx.feed(dns_query(PID, &name(i))));
        }
        fx.advance_ms(600);
        assert_fires(
            fx.feed(dns_query(PID, &name(39))),
            RuleId::DnsTunnel,
            "queried 40 distinct names under evil.example carrying 1040 bytes within 600 s",
        );
    }

    #[test]
    fn names_the_policy_allows_carry_nothing_to_an_attacker() {
        let mut fx = Fixture::new();
        // The test profile allows *.crates.io: crates.io's own servers answer those.
        for i in 0..60 {
            fx.advance_secs(1);
            let name = format!("mirror-{i:03}-of-the-index-and-static.crates.io");
            assert_silent(fx.feed(dns_query(PID, &name)));
        }
    }

    #[test]
    fn distinct_names_spread_over_time_are_silent() {
        let mut fx = Fixture::new();
        for i in 0..60 {
            fx.advance_secs(1);
            assert_silent(fx.feed(dns_query(PID, &format!("host{i}.corp.example"))));
        }
    }
}
