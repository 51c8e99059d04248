//! The sensor's Prometheus metrics, scraped over plain HTTP/1.0: counters for events decoded
//! and lost, gauges for agents, and the latency histograms.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

/// One scrape: every sample as (name with labels, value).
pub struct Scrape {
    samples: Vec<(String, f64)>,
}

pub fn scrape(url: &str) -> Result<Scrape> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an http:// URL: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream =
        TcpStream::connect(host).with_context(|| format!("cannot connect to {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("cannot read {url}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP response from {url}"))?;
    let status = head.split(' ').nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        bail!("{url} answered {}", head.lines().next().unwrap_or_default());
    }
    Ok(parse(body))
}

fn parse(body: &str) -> Scrape {
    let samples = body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    Scrape { samples }
}

impl Scrape {
    /// Sum of every sample of metric `name` (any labels) whose labels contain none of
    /// `except` (e.g. `reason="truncated"`).
    pub fn sum(&self, name: &str, except: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(sample, _)| {
                sample_name(sample) == name && !except.iter().any(|e| sample.contains(e))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Every sample of metric `name` by the value of its label `label` (samples without it are
    /// left out), in the order the sensor printed them.
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let key = format!("{label}=\"");
        self.samples
            .iter()
            .filter(|(sample, _)| sample_name(sample) == name)
            .filter_map(|(sample, value)| {
                let (_, rest) = sample.split_once(key.as_str())?;
                let (label_value, _) = rest.split_once('"')?;
                Some((label_value.to_string(), *value))
            })
            .collect()
    }

    /// The value of one exact sample (`name{labels}` as printed).
    pub fn get(&self, sample: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(name, _)| name == sample)
            .map(|(_, value)| *value)
    }

    /// The cumulative buckets of histogram `name` whose labels contain `filter` (`""` for
    /// all): (upper bound, count), sorted by bound, `+Inf` last.
    pub fn buckets(&self, name: &str, filter: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|(sample, _)| sample_name(sample) == bucket && sample.contains(filter))
            .filter_map(|(sample, value)| {
                let le = sample.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, *value))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

fn sample_name(sample: &str) -> &str {
    sample.split('{').next().unwrap_or(sample)
}

/// The observations between two scrapes of the same histogram: per-bucket differences.
pub fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(bound, count)| {
            let old = before
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c);
            (bound, count - old)
        })
        .collect()
}

/// The q-quantile of cumulative buckets, interpolated linearly inside its bucket as
/// Prometheus' histogram_quantile does; None without observations. A quantile in the `+Inf`
/// bucket is reported as the largest finite bound.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let inside = count - lower.1;
            let fraction = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP agent_sensor_events_total x\n\
        # TYPE agent_sensor_events_total counter\n\
        agent_sensor_events_total{kind=\"file.open\"} 10\n\
        agent_sensor_events_total{kind=\"net.connect\"} 5\n\
        agent_sensor_events_dropped_total{reason=\"ring_buffer_full\"} 3\n\
        agent_sensor_events_dropped_total{reason=\"truncated\"} 7\n\
        agent_sensor_detection_latency_seconds_bucket{le=\"0.001\"} 50\n\
        agent_sensor_detection_latency_seconds_bucket{le=\"0.01\"} 90\n\
        agent_sensor_detection_latency_seconds_bucket{le=\"+Inf\"} 100\n\
        agent_sensor_detection_latency_seconds_count 100\n";

    #[test]
    fn sums_and_buckets() {
        let scrape = parse(BODY);
        assert_eq!(scrape.sum("agent_sensor_events_total", &[]), 15.0);
        assert_eq!(
            scrape.sum(
                "agent_sensor_events_dropped_total",
                &["reason=\"truncated\""]
            ),
            3.0
        );
        assert_eq!(
            scrape.get("agent_sensor_detection_latency_seconds_count"),
            Some(100.0)
        );
        assert_eq!(
            scrape.by_label("agent_sensor_events_dropped_total", "reason"),
            [
                ("ring_buffer_full".to_string(), 3.0),
                ("truncated".to_string(), 7.0)
            ]
        );
        assert!(scrape
            .by_label("agent_sensor_events_total", "reason")
            .is_empty());
        let buckets = scrape.buckets("agent_sensor_detection_latency_seconds", "");
        assert_eq!(buckets.len(), 3);
        assert_eq!(quantile(&buckets, 0.5), Some(0.001));
        // 99th of 100: in the +Inf bucket, reported as the last finite bound.
        assert_eq!(quantile(&buckets, 0.99), Some(0.01));
        let q = quantile(&buckets, 0.7).unwrap();
        assert!((q - 0.0055).abs() < 1e-9, "{q}");
        assert_eq!(quantile(&bucket_delta(&buckets, &buckets), 0.5), None);
    }
}
