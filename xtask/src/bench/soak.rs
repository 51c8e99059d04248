//! Soak: one sensor in enforce mode under sustained load at the rated event rate for a long
//! run (10 minutes by default): a tracked open/close loop paced to the rate for the whole
//! run, a scripted attack every 30 s (the latency section's: an agent reads a file the policy
//! marks sensitive; every other one is of a profile that freezes it), the sensor's RSS and
//! counters sampled every 10 s. The verdicts: memory flat (RSS of the last minute against the
//! first), nothing lost, every attack detected.
//!
//! The rated rate defaults to 50,000 events/s: half of the lossless ingest rate measured on
//! the 2-core VM (about 100,000 events/s, see the ingest section), so that the soak measures
//! what stays up for minutes rather than where a noisy machine starts to lose events.

use std::{
    io::Read as _,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    cpu,
    latency::{enforcing_setup, micros, monotonic_ns, parse_alert, SeenAlert, SensorSetup},
    metrics,
    report::{self, thousands, Target},
    sensor::{RunningSensor, SensorTotals},
    workload, Bench,
};

#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// Length of the soak, in seconds.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// The rated event rate: the background load, in events per second (default: half the
    /// lossless ingest rate measured on the 2-core VM).
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Seconds between two scripted attacks.
    #[arg(long, default_value_t = 30)]
    pub attack_every: u64,
    /// Seconds between two samples of the sensor's memory and counters.
    #[arg(long, default_value_t = 10)]
    pub sample_every: u64,
}

/// RSS may grow by this much from the first minute's median to the last minute's: allocator
/// arenas and caches settle within it; a leak at the rated rate would not stay under it.
const MAX_RSS_GROWTH: f64 = 0.10;

/// The window at each end of the run whose RSS samples are compared.
const FLATNESS_WINDOW_SECONDS: f64 = 60.0;

/// How long an attack's alert may take before it counts as missed.
const ALERT_TIMEOUT: Duration = Duration::from_secs(10);

/// Drop reasons that lose nothing: `truncated` events were delivered, a string cut short.
const NOT_LOST: &[&str] = &["reason=\"truncated\""];

/// The sensor's memory and counters at one moment of the soak.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the load started.
    pub at: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// `agent_sensor_events_total` so far.
    pub decoded: f64,
    /// `agent_sensor_events_dropped_total` without `truncated`, so far.
    pub lost: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttackKind {
    /// A sensitive read by an agent of profile `bench`: an alert.
    Detect,
    /// The same by an agent of profile `bench-contain`: frozen, then killed.
    Contain,
}

pub struct Attack {
    pub at: f64,
    pub kind: AttackKind,
    /// The alert's line appeared within [`ALERT_TIMEOUT`].
    pub detected: bool,
    /// Alert line seen (CLOCK_MONOTONIC) minus the evidence's `ktime_ns`, µs.
    pub latency_us: Option<f64>,
    /// For containment: the alert's outcome says `frozen in …`.
    pub frozen: bool,
}

pub struct Soak {
    pub args: SoakArgs,
    /// Wall time of the load.
    pub wall: Duration,
    /// Iterations of the paced loop: one record each.
    pub iterations: u64,
    /// Decoded over the load (first to last scrape around it).
    pub decoded: u64,
    pub samples: Vec<Sample>,
    pub attacks: Vec<Attack>,
    /// Each known `agent_sensor_events_dropped_total` reason at the end (the sensor's whole
    /// life).
    pub drops: Vec<(String, u64)>,
    /// Every reason but `truncated`, known or not, at the end.
    pub dropped: u64,
    /// From the sensor's log when it stopped: `kernel dropped …` lines and undecodable records.
    pub totals: SensorTotals,
    pub sensor_cores: f64,
    pub other_cores: f64,
}

pub fn run(bench: &Bench, args: &SoakArgs) -> Result<Soak> {
    if args.seconds == 0 || args.rate == 0 || args.attack_every == 0 || args.sample_every == 0 {
        bail!("--seconds, --rate, --attack-every and --sample-every must be at least 1");
    }
    let dir = bench.work.subdir("soak")?;
    // One distinct secret per attack.
    let attacks = args.seconds / args.attack_every + 1;
    let SensorSetup {
        secrets,
        load_cgroup,
        sensor,
    } = enforcing_setup(bench, &dir, attacks, "soak-load")?;
    let url = sensor.metrics_url()?.to_string();
    let mut alerts = AlertTail::open(&sensor.alerts_path())?;
    eprintln!(
        "xtask bench: soak: {} events/s for {} s, an attack every {} s",
        thousands(args.rate),
        args.seconds,
        args.attack_every
    );

    let cpu_before = sensor.cpu_seconds()?;
    let other = cpu::OtherCpu::start()?;
    let mut cmd =
        workload::paced_open_close_command(args.rate as f64, args.seconds as f64, 1, None, None)?;
    load_cgroup.join_before_exec(&mut cmd);
    let mut load = Load(Some(cmd.spawn().context("cannot start the load")?));
    let start = Instant::now();
    let first = metrics::scrape(&url)?;

    let mut samples = Vec::new();
    let mut attack_log = Vec::new();
    let period = Duration::from_secs(args.seconds);
    let sample_every = Duration::from_secs(args.sample_every);
    let attack_every = Duration::from_secs(args.attack_every);
    let mut next_sample = Duration::ZERO;
    // The first attack half a period in: the load has settled by then.
    let mut next_attack = attack_every / 2;
    while start.elapsed() < period {
        load.check()?;
        if start.elapsed() >= next_sample {
            samples.push(sample(&sensor, &url, start)?);
            next_sample += sample_every;
        }
        if start.elapsed() >= next_attack {
            let round = attack_log.len() as u64;
            let attack = attack(bench, &sensor, &mut alerts, &secrets, round, start)?;
            eprintln!(
                "xtask bench: soak: {:.0} s: attack {round} ({:?}) {}",
                attack.at,
                attack.kind,
                if attack.detected {
                    "detected"
                } else {
                    "MISSED"
                }
            );
            attack_log.push(attack);
            next_attack += attack_every;
        }
        let next = next_sample.min(next_attack).min(period);
        std::thread::sleep(
            next.saturating_sub(start.elapsed())
                .min(Duration::from_secs(1)),
        );
    }
    let iterations = load.finish()?;
    let wall = start.elapsed();
    // What the ring buffer still holds is decoded within a moment, and drops are reported
    // once a second: wait for both before the last sample. Its events were all made during
    // the load, so it is dated at the load's end (rates per minute stay rates of the load).
    std::thread::sleep(Duration::from_millis(1500));
    samples.push(Sample {
        at: wall.as_secs_f64(),
        ..sample(&sensor, &url, start)?
    });
    let last = metrics::scrape(&url)?;
    let sensor_seconds = sensor.cpu_seconds()? - cpu_before;
    let other_cores = other.cores_excluding(sensor_seconds)?;
    let drops = drop_reasons(&last);
    let dropped = last
        .sum("agent_sensor_events_dropped_total", NOT_LOST)
        .max(0.0) as u64;
    drop(alerts);
    let totals = sensor.stop()?;
    super::cgroup::remove_agent_cgroups(&bench.cgroup_root);
    Ok(Soak {
        args: args.clone(),
        wall,
        iterations,
        decoded: (last.sum("agent_sensor_events_total", &[])
            - first.sum("agent_sensor_events_total", &[]))
        .max(0.0) as u64,
        samples,
        attacks: attack_log,
        drops,
        dropped,
        totals,
        sensor_cores: sensor_seconds / wall.as_secs_f64(),
        other_cores,
    })
}

/// The paced load; killed if dropped before it finished (an error path).
struct Load(Option<Child>);

impl Load {
    /// Fails if the load ended before its time: the rest of the soak would be idle.
    fn check(&mut self) -> Result<()> {
        let child = self.0.as_mut().context("the load is gone")?;
        if let Some(status) = child.try_wait()? {
            bail!("the load ended early ({status})");
        }
        Ok(())
    }

    /// Waits for the load's end; its iterations.
    fn finish(&mut self) -> Result<u64> {
        let child = self.0.take().context("the load is gone")?;
        Ok(workload::finish(child)?.iterations)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sample(sensor: &RunningSensor, url: &str, start: Instant) -> Result<Sample> {
    let memory = sensor.memory()?;
    let scrape = metrics::scrape(url)?;
    Ok(Sample {
        at: start.elapsed().as_secs_f64(),
        rss_kib: memory.rss_kib,
        peak_rss_kib: memory.peak_rss_kib,
        decoded: scrape.sum("agent_sensor_events_total", &[]),
        lost: scrape.sum("agent_sensor_events_dropped_total", NOT_LOST),
    })
}

/// Each reason of `agent_sensor_events_dropped_total` and its count: the sensor exports every
/// reason it knows, even at 0, so the section lists them all without keeping a copy here.
fn drop_reasons(scrape: &metrics::Scrape) -> Vec<(String, u64)> {
    scrape
        .by_label("agent_sensor_events_dropped_total", "reason")
        .into_iter()
        .map(|(reason, n)| (reason, n.max(0.0) as u64))
        .collect()
}

/// One scripted attack: an agent (`agent-sensor exec`) reads one secret; even rounds under
/// profile `bench` (an alert), odd rounds under `bench-contain` (frozen, then killed).
fn attack(
    bench: &Bench,
    sensor: &RunningSensor,
    alerts: &mut AlertTail,
    secrets: &Path,
    round: u64,
    start: Instant,
) -> Result<Attack> {
    let at = start.elapsed().as_secs_f64();
    let kind = if round.is_multiple_of(2) {
        AttackKind::Detect
    } else {
        AttackKind::Contain
    };
    let name = format!("bench-soak-{round}");
    let worktree = bench.work.subdir(&format!("soak/worktrees/{name}"))?;
    let (profile, hold_ms) = match kind {
        AttackKind::Detect => ("bench", 0),
        // Held open, so that the freeze finds it running.
        AttackKind::Contain => ("bench-contain", 30_000),
    };
    let mut cmd = sensor.exec_command(&name, &worktree, Some(profile));
    let read = workload::read_files_command(secrets, "secret-", round, 1, 0, hold_ms)?;
    cmd.arg(read.get_program()).args(read.get_args());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start attack agent {name}"))?;
    let alert = alerts.wait_for(&name, ALERT_TIMEOUT)?;
    if kind == AttackKind::Contain && alert.is_some() {
        // Ends the frozen agent; a failure is the soak's finding, not the bench's.
        if let Err(e) = sensor.control("kill", &name) {
            eprintln!("xtask bench: soak: {e:#}");
        }
    }
    if kind == AttackKind::Contain || alert.is_none() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for attack agent {name}"))?;
    if kind == AttackKind::Detect && alert.is_some() && !status.success() {
        bail!("attack agent {name} failed ({status})");
    }
    let _ = std::fs::remove_dir_all(&worktree);
    Ok(Attack {
        at,
        kind,
        detected: alert.is_some(),
        latency_us: alert
            .as_ref()
            .map(|a| a.seen_ns.saturating_sub(a.ktime_ns) as f64 / 1e3),
        frozen: alert.is_some_and(|a| a.outcome.starts_with("frozen in ")),
    })
}

/// Follows the alerts file by polling (every 2 ms while waiting): only whether and roughly
/// when an attack's alert arrived matters here; the latency section times them exactly.
struct AlertTail {
    file: std::fs::File,
    pending: Vec<u8>,
    seen: Vec<SeenAlert>,
}

impl AlertTail {
    fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            file: std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?,
            pending: Vec::new(),
            seen: Vec::new(),
        })
    }

    /// Reads the lines written since the last call.
    fn poll(&mut self) -> Result<()> {
        let now = monotonic_ns();
        self.file
            .read_to_end(&mut self.pending)
            .context("cannot read the alerts file")?;
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if let Some(alert) = parse_alert(&line, now).filter(|a| a.rule == ATTACK_RULE) {
                self.seen.push(alert);
            }
        }
        Ok(())
    }

    /// The first sensitive-read alert of `agent`, waiting up to `timeout` for it.
    fn wait_for(&mut self, agent: &str, timeout: Duration) -> Result<Option<SeenAlert>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll()?;
            if let Some(at) = self.seen.iter().position(|a| a.agent == agent) {
                return Ok(Some(self.seen.swap_remove(at)));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The rule every scripted attack of the soak trips.
const ATTACK_RULE: &str = "credential.sensitive_read";

/// Median RSS of the first and the last window of a run, in KiB.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flatness {
    pub first_kib: f64,
    pub last_kib: f64,
    /// The window used, seconds: [`FLATNESS_WINDOW_SECONDS`], or a third of a shorter run
    /// (so that the two never overlap).
    pub window: f64,
}

impl Flatness {
    /// (sample time in seconds, RSS in KiB) in time order; None without samples.
    pub fn of(samples: &[(f64, u64)]) -> Option<Self> {
        let (start, end) = (samples.first()?.0, samples.last()?.0);
        let window = FLATNESS_WINDOW_SECONDS.min((end - start) / 3.0);
        let median_of = |keep: &dyn Fn(f64) -> bool| {
            let values: Vec<f64> = samples
                .iter()
                .filter(|(at, _)| keep(*at))
                .map(|&(_, kib)| kib as f64)
                .collect();
            report::median(&values)
        };
        Some(Self {
            first_kib: median_of(&|at| at <= start + window),
            last_kib: median_of(&|at| at >= end - window),
            window,
        })
    }

    pub fn growth(&self) -> f64 {
        self.last_kib / self.first_kib - 1.0
    }

    pub fn flat(&self) -> bool {
        self.growth() <= MAX_RSS_GROWTH
    }
}

/// One row per minute of the run: median RSS, decoded and lost per second over the minute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Minute {
    pub minute: u64,
    pub rss_kib: f64,
    pub decoded_per_second: f64,
    pub lost: f64,
}

/// `seconds` is the run's length: a last sample at its very end (600.01 s of a 600-s run)
/// belongs to its last minute, not to one of its own.
pub fn per_minute(samples: &[Sample], seconds: u64) -> Vec<Minute> {
    let last_minute = seconds.saturating_sub(1) / 60;
    let minute_of = |s: &Sample| ((s.at / 60.0) as u64).min(last_minute);
    let mut rows = Vec::new();
    let mut previous: Option<&Sample> = samples.first();
    let mut minute = 0;
    while let Some(from) = previous {
        let inside: Vec<&Sample> = samples.iter().filter(|s| minute_of(s) == minute).collect();
        let Some(&last) = inside.last() else {
            if samples.iter().any(|s| minute_of(s) > minute) {
                minute += 1;
                continue;
            }
            break;
        };
        let seconds = last.at - from.at;
        rows.push(Minute {
            minute,
            rss_kib: report::median(&inside.iter().map(|s| s.rss_kib as f64).collect::<Vec<_>>()),
            decoded_per_second: if seconds > 0.0 {
                (last.decoded - from.decoded) / seconds
            } else {
                0.0
            },
            lost: last.lost - from.lost,
        });
        previous = Some(last);
        minute += 1;
    }
    rows
}

impl Soak {
    fn flatness(&self) -> Option<Flatness> {
        let points: Vec<(f64, u64)> = self.samples.iter().map(|s| (s.at, s.rss_kib)).collect();
        Flatness::of(&points)
    }

    /// The metrics and the log count the same losses (the log's `kernel dropped` lines are
    /// the metric's kernel reasons): the larger of the two, as the log is read after the last
    /// scrape.
    fn lost(&self) -> u64 {
        self.dropped
            .max(self.totals.kernel_dropped + self.totals.undecodable)
    }

    fn achieved(&self) -> f64 {
        self.iterations as f64 / self.wall.as_secs_f64()
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        targets.push(match self.flatness() {
            Some(f) => Target {
                name: format!(
                    "memory flat (RSS median of the last {0:.0} s within {1:.0} % of the first \
                     {0:.0} s)",
                    f.window,
                    MAX_RSS_GROWTH * 100.0
                ),
                measured: format!(
                    "{:.1} → {:.1} MiB ({})",
                    f.first_kib / 1024.0,
                    f.last_kib / 1024.0,
                    report::percent(f.growth())
                ),
                verdict: if f.flat() { "PASS" } else { "MISS" }.into(),
            },
            None => Target {
                name: "memory flat".into(),
                measured: "no samples".into(),
                verdict: "MISS".into(),
            },
        });
        let lost = self.lost();
        targets.push(Target {
            name: format!(
                "zero drops at the rated rate ({} events/s)",
                thousands(self.args.rate)
            ),
            measured: format!(
                "{} lost{}",
                thousands(lost),
                if self.achieved() < self.args.rate as f64 * 0.95 {
                    format!(
                        " (the load reached only {} events/s)",
                        thousands(self.achieved() as u64)
                    )
                } else {
                    String::new()
                }
            ),
            verdict: if lost == 0 { "PASS" } else { "MISS" }.into(),
        });
        let detected = self.attacks.iter().filter(|a| a.detected).count();
        targets.push(Target {
            name: "every scripted attack detected".into(),
            measured: format!("{detected} of {}", self.attacks.len()),
            verdict: if detected == self.attacks.len() && !self.attacks.is_empty() {
                "PASS"
            } else {
                "MISS"
            }
            .into(),
        });
        targets
    }

    pub fn render(&self) -> String {
        let a = &self.args;
        let mut out = vec![
            report::heading(),
            format!(
                "({} s at {} events/s; an attack every {} s; a sample every {} s)",
                a.seconds,
                thousands(a.rate),
                a.attack_every,
                a.sample_every
            ),
            String::new(),
            format!(
                "One sensor in enforce mode (`agent-sensor run --mode enforce --policy FILE \
                 --alerts FILE --track-cgroup <load cgroup> --metrics-addr 127.0.0.1:0`, the \
                 latency section's policy) and, for the whole run, one tracked open/close loop \
                 paced to the rated rate (one record per iteration; the default rate is half \
                 the lossless ingest rate measured on this 2-core VM). Every {} s a scripted \
                 attack: an agent (`agent-sensor exec`) reads a secret the policy marks \
                 sensitive, alternately of profile `bench` (an alert) and `bench-contain` \
                 (frozen, then `agent-sensor kill`); detected means its \
                 `credential.sensitive_read` alert line appeared within {} s (latency: the \
                 line seen, polled every 2 ms, minus the evidence's `ktime_ns`). Every {} s \
                 the sensor's VmRSS (/proc) and its `/metrics` counters are sampled; \"memory \
                 flat\" compares the median RSS of the first and the last minute. Lost counts \
                 every `agent_sensor_events_dropped_total` reason but `truncated` (delivered, \
                 a string cut short) over the sensor's life, or the log's `kernel dropped` \
                 lines plus undecodable records when that is more (the same losses, counted \
                 until the sensor stopped).",
                a.attack_every,
                ALERT_TIMEOUT.as_secs(),
                a.sample_every
            ),
            String::new(),
            "| offered events/s | achieved iterations/s | decoded | decoded/s | lost | sensor \
             CPU (cores) | VmRSS first → last MiB | min–max MiB | VmHWM MiB | other CPU \
             (cores) |"
                .into(),
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |".into(),
        ];
        let rss: Vec<f64> = self.samples.iter().map(|s| s.rss_kib as f64).collect();
        let mib = |kib: f64| kib / 1024.0;
        out.push(format!(
            "| {} | {} | {} | {} | {} | {:.2} | {} | {:.1}–{:.1} | {:.1} | {:.2} |",
            thousands(a.rate),
            thousands(self.achieved() as u64),
            thousands(self.decoded),
            thousands((self.decoded as f64 / self.wall.as_secs_f64()) as u64),
            thousands(self.lost()),
            self.sensor_cores,
            self.flatness().map_or("—".into(), |f| format!(
                "{:.1} → {:.1}",
                mib(f.first_kib),
                mib(f.last_kib)
            )),
            mib(report::min(&rss)),
            mib(report::max(&rss)),
            report::mib(
                self.samples
                    .iter()
                    .map(|s| s.peak_rss_kib)
                    .max()
                    .unwrap_or(0)
            ),
            self.other_cores,
        ));
        out.extend([
            String::new(),
            "| minute | median VmRSS MiB | decoded/s | lost |".into(),
            "| ---: | ---: | ---: | ---: |".into(),
        ]);
        for m in per_minute(&self.samples, a.seconds) {
            out.push(format!(
                "| {} | {:.1} | {} | {} |",
                m.minute + 1,
                mib(m.rss_kib),
                thousands(m.decoded_per_second as u64),
                thousands(m.lost.max(0.0) as u64)
            ));
        }
        let drops: Vec<String> = self
            .drops
            .iter()
            .map(|(reason, n)| format!("{reason} {}", thousands(*n)))
            .collect();
        out.extend([
            String::new(),
            format!(
                "Drops by reason: {}; kernel dropped (log) {}; undecodable {}.",
                drops.join(", "),
                thousands(self.totals.kernel_dropped),
                thousands(self.totals.undecodable)
            ),
            String::new(),
        ]);
        let of = |kind: AttackKind| self.attacks.iter().filter(move |a| a.kind == kind);
        let latencies: Vec<f64> = self.attacks.iter().filter_map(|a| a.latency_us).collect();
        out.push(format!(
            "Attacks: {} of {} detected ({} of {} alerts, {} of {} containments, {} of them \
             frozen); detection latency p50 {}, max {}.",
            self.attacks.iter().filter(|a| a.detected).count(),
            self.attacks.len(),
            of(AttackKind::Detect).filter(|a| a.detected).count(),
            of(AttackKind::Detect).count(),
            of(AttackKind::Contain).filter(|a| a.detected).count(),
            of(AttackKind::Contain).count(),
            of(AttackKind::Contain).filter(|a| a.frozen).count(),
            micros(report::percentile(&latencies, 0.5)),
            micros(report::percentile(&latencies, 1.0)),
        ));
        let missed: Vec<String> = self
            .attacks
            .iter()
            .filter(|a| !a.detected)
            .map(|a| format!("{:.0} s ({:?})", a.at, a.kind))
            .collect();
        if !missed.is_empty() {
            out.push(format!("Missed at: {}.", missed.join(", ")));
        }
        out.extend([String::new(), "#### result".into(), String::new()]);
        out.extend(report::targets_table(&self.targets()));
        out.push(String::new());
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_memory_passes_and_growth_misses() {
        // 10 minutes every 10 s: 40 MiB, with a blip in the middle.
        let flat: Vec<(f64, u64)> = (0..=60)
            .map(|i| (i as f64 * 10.0, if i == 30 { 60 << 10 } else { 40 << 10 }))
            .collect();
        let f = Flatness::of(&flat).unwrap();
        assert_eq!(f.window, 60.0);
        assert_eq!((f.first_kib, f.last_kib), (40960.0, 40960.0));
        assert!(f.flat());

        // 1 MiB a minute: 10 MiB more by the end.
        let leak: Vec<(f64, u64)> = (0..=60)
            .map(|i| (i as f64 * 10.0, (40 << 10) + i * 1024 / 6))
            .collect();
        let f = Flatness::of(&leak).unwrap();
        assert!(f.growth() > MAX_RSS_GROWTH, "{f:?}");
        assert!(!f.flat());
    }

    #[test]
    fn short_runs_compare_thirds() {
        let samples = [(0.0, 100), (10.0, 100), (20.0, 100), (30.0, 110)];
        let f = Flatness::of(&samples).unwrap();
        assert_eq!(f.window, 10.0);
        assert_eq!((f.first_kib, f.last_kib), (100.0, 105.0));
        assert!((f.growth() - 0.05).abs() < 1e-9);
        assert!(f.flat());
        assert_eq!(Flatness::of(&[]), None);
    }

    #[test]
    fn rows_per_minute() {
        let sample = |at: f64, rss_kib, decoded, lost| Sample {
            at,
            rss_kib,
            peak_rss_kib: rss_kib,
            decoded,
            lost,
        };
        let samples = [
            sample(0.0, 100, 0.0, 0.0),
            sample(30.0, 200, 3000.0, 0.0),
            sample(50.0, 300, 5000.0, 0.0),
            sample(110.0, 300, 11_000.0, 4.0),
            // The end of a 120-s run: still the second minute.
            sample(120.0, 300, 12_000.0, 4.0),
        ];
        let rows = per_minute(&samples, 120);
        assert_eq!(
            rows,
            vec![
                Minute {
                    minute: 0,
                    rss_kib: 200.0,
                    decoded_per_second: 100.0,
                    lost: 0.0
                },
                Minute {
                    minute: 1,
                    rss_kib: 300.0,
                    decoded_per_second: 100.0,
                    lost: 4.0
                },
            ]
        );
    }

    #[test]
    fn the_tail_keeps_only_the_attacks_alerts() {
        let path = std::env::temp_dir().join(format!("soak-alerts-{}", std::process::id()));
        std::fs::write(
            &path,
            concat!(
                r#"{"agent":"a","rule":"exfil.unallowed_egress","evidence":[{"ktime_ns":5}]}"#,
                "\n",
                r#"{"agent":"a","rule":"credential.sensitive_read","action":{"outcome":"frozen in 812 µs"},"evidence":[{"ktime_ns":5},{"ktime_ns":1000}]}"#,
                "\n",
            ),
        )
        .unwrap();
        let mut tail = AlertTail::open(&path).unwrap();
        tail.poll().unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(tail.seen.len(), 1);
        assert_eq!(
            (tail.seen[0].agent.as_str(), tail.seen[0].ktime_ns),
            ("a", 1000)
        );
        assert!(tail.seen[0].outcome.starts_with("frozen in "));
    }
}
