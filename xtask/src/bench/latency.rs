//! Detection and containment latency, end to end: agents started with `agent-sensor exec`
//! read files a policy marks sensitive (`credential.sensitive_read`), each file once (repeats
//! are deduplicated); the bench follows the alerts file with inotify and compares the moment
//! each alert line appears (CLOCK_MONOTONIC) with the kernel timestamp of its evidence event
//! (`ktime_ns`, the same clock). For containment the rule's response is `freeze` in enforce
//! mode: the alert is written once the agent's cgroup reports frozen, so the same difference
//! is event → frozen; the alert's own "frozen in N µs" is the freeze alone. Idle, and with a
//! tracked background load of about 100,000 events/s; then detection alone again in monitor
//! mode, whose records may wait longer in the ring (`--max-event-delay-us`).

use std::{
    io::Read as _,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    cgroup::BenchCgroup,
    metrics,
    report::{self, thousands, Target},
    sensor::{RunningSensor, SensorOptions},
    workload, Bench,
};

#[derive(clap::Args, Clone, Debug)]
pub struct LatencyArgs {
    /// Alerts timed per condition for detection latency.
    #[arg(long, default_value_t = 200)]
    pub samples: u64,
    /// Agents frozen per condition for containment latency.
    #[arg(long, default_value_t = 50)]
    pub rounds: u64,
    /// Milliseconds between two sensitive reads of one agent.
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Background load of the loaded condition, in events per second.
    #[arg(long, default_value_t = 100_000)]
    pub load: u64,
}

impl LatencyArgs {
    pub fn quick() -> Self {
        Self {
            samples: 100,
            rounds: 25,
            interval_ms: 20,
            load: 100_000,
        }
    }
}

/// Reads per detection agent: below the sensor's budget of distinct targets per rule, agent
/// and minute (32), past which findings are held back.
const READS_PER_AGENT: u64 = 25;

pub struct Condition {
    pub name: &'static str,
    /// Decoded and lost events per second of the background load, when there was one.
    pub load: Option<(f64, f64)>,
    /// Detection latencies, µs.
    pub detection: Vec<f64>,
    /// Reads that got no alert within 10 s.
    pub detection_missing: u64,
    /// p50 and p99 of the sensor's own detection histogram over the same alerts, µs.
    pub detection_histogram: (Option<f64>, Option<f64>),
    /// Event → alert of a frozen agent, µs.
    pub containment: Vec<f64>,
    /// The freeze alone, as the alert reports it ("frozen in N µs").
    pub freeze: Vec<f64>,
    pub containment_histogram: (Option<f64>, Option<f64>),
    /// Rounds whose agent cgroup read `frozen 1` when the alert appeared.
    pub verified_frozen: u64,
    pub rounds: u64,
}

pub struct Latency {
    pub args: LatencyArgs,
    pub conditions: Vec<Condition>,
}

/// An alert line and when it appeared.
#[derive(Clone, Debug)]
pub(super) struct SeenAlert {
    pub seen_ns: u64,
    pub agent: String,
    pub rule: String,
    pub ktime_ns: u64,
    pub outcome: String,
}

/// Follows an alerts file with inotify, timestamping each complete line as it appears.
struct AlertWatcher {
    alerts: Arc<Mutex<Vec<SeenAlert>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime fills the struct we own.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl AlertWatcher {
    fn start(path: &Path) -> Result<Self> {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: inotify on a path we own; the descriptor is closed by the thread.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_init1");
        }
        // SAFETY: as above.
        if unsafe { libc::inotify_add_watch(fd, c_path.as_ptr(), libc::IN_MODIFY) } < 0 {
            let error = std::io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(error).context("inotify_add_watch");
        }
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (Arc::clone(&alerts), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut events = [0u8; 4096];
            while !stopping.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd we own.
                unsafe { libc::poll(&mut pfd, 1, 100) };
                let now = monotonic_ns();
                // SAFETY: draining the inotify queue into our buffer.
                while unsafe { libc::read(fd, events.as_mut_ptr().cast(), events.len()) } > 0 {}
                if file.read_to_end(&mut pending).is_err() {
                    continue;
                }
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if let Some(alert) = parse_alert(&line, now) {
                        seen.lock().expect("alerts lock").push(alert);
                    }
                }
            }
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
        });
        Ok(Self {
            alerts,
            stop,
            thread: Some(thread),
        })
    }

    fn of_agent(&self, agent: &str) -> Vec<SeenAlert> {
        self.alerts
            .lock()
            .expect("alerts lock")
            .iter()
            .filter(|a| a.agent == agent && a.rule == "credential.sensitive_read")
            .cloned()
            .collect()
    }

    /// Waits until `agent` has `count` alerts (or the timeout); returns what it has.
    fn wait_for(&self, agent: &str, count: usize, timeout: Duration) -> Vec<SeenAlert> {
        let deadline = Instant::now() + timeout;
        loop {
            let alerts = self.of_agent(agent);
            if alerts.len() >= count || Instant::now() > deadline {
                return alerts;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for AlertWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(super) fn parse_alert(line: &[u8], seen_ns: u64) -> Option<SeenAlert> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    Some(SeenAlert {
        seen_ns,
        agent: value["agent"].as_str()?.to_string(),
        rule: value["rule"].as_str()?.to_string(),
        ktime_ns: value["evidence"].as_array()?.last()?["ktime_ns"].as_u64()?,
        outcome: value["action"]["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// "frozen in 812 µs" → 812.
fn frozen_micros(outcome: &str) -> Option<f64> {
    outcome
        .strip_prefix("frozen in ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The policy of the latency and soak sections: files under `secrets` are sensitive for
/// profile `bench`; agents of profile `bench-contain` are frozen for reading one. Checked by
/// the sensor.
fn write_policy(bench: &Bench, dir: &Path, secrets: &Path) -> Result<PathBuf> {
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "# The bench's: files under {0} are secrets; agents of profile bench-contain are \
             frozen for reading one.\n\
             [profiles.bench]\nsensitive = [\"{0}/**\"]\n\n\
             [profiles.bench-contain]\nextends = \"bench\"\n\n\
             [profiles.bench-contain.responses]\n\"credential.sensitive_read\" = \"freeze\"\n",
            secrets.display()
        ),
    )
    .with_context(|| format!("cannot write {}", policy.display()))?;
    let check = std::process::Command::new(&bench.sensor)
        .arg("check-config")
        .arg(&policy)
        .output()
        .context("cannot run agent-sensor check-config")?;
    if !check.status.success() {
        bail!(
            "the bench's policy does not check:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    Ok(policy)
}

/// What the latency and soak sections start from, in `dir`: `secrets` distinct secret files
/// (`secrets/secret-<i>`, a repeated read would be deduplicated), the bench policy over them,
/// a cgroup `load` for the background loop, and one sensor (in enforce mode unless said
/// otherwise) tracking it.
pub(super) struct SensorSetup {
    pub secrets: PathBuf,
    pub load_cgroup: BenchCgroup,
    pub sensor: RunningSensor,
}

pub(super) fn enforcing_setup(
    bench: &Bench,
    dir: &Path,
    secrets: u64,
    load: &str,
) -> Result<SensorSetup> {
    setup(bench, dir, secrets, load, true)
}

/// `enforcing_setup`, or the same with the sensor in monitor mode (`enforce` false).
fn setup(
    bench: &Bench,
    dir: &Path,
    secrets: u64,
    load: &str,
    enforce: bool,
) -> Result<SensorSetup> {
    let secrets_dir = dir.join("secrets");
    std::fs::create_dir_all(&secrets_dir)?;
    for i in 0..secrets {
        std::fs::write(
            secrets_dir.join(format!("secret-{i}")),
            format!("token-{i}\n"),
        )?;
    }
    let policy = write_policy(bench, dir, &secrets_dir)?;
    let load_cgroup = BenchCgroup::create(&bench.cgroup_root, load)?;
    let sensor = RunningSensor::start_with(
        &bench.sensor,
        dir,
        &SensorOptions {
            track_cgroups: vec![&load_cgroup.path],
            metrics: true,
            event_stream: true,
            alerts: true,
            policy: Some(&policy),
            enforce,
            // The background load is a loop of opens of one file.
            every_open: true,
        },
    )?;
    Ok(SensorSetup {
        secrets: secrets_dir,
        load_cgroup,
        sensor,
    })
}

/// One condition: its name, the tag in its agents' names, and whether a background load runs.
type ConditionSpec = (&'static str, &'static str, bool);

/// The sensor's modes the section runs (enforce or not), each with its conditions. Monitor
/// mode, the default, lets records wait longer while they keep coming (4 ms against 1 ms,
/// `--max-event-delay-us`) and contains nothing: its alerts alone are timed.
const RUNS: [(bool, [ConditionSpec; 2]); 2] = [
    (
        true,
        [("idle", "idle", false), ("background load", "load", true)],
    ),
    (
        false,
        [
            ("idle, monitor mode", "monitor-idle", false),
            ("background load, monitor mode", "monitor-load", true),
        ],
    ),
];

pub fn run(bench: &Bench, args: &LatencyArgs) -> Result<Latency> {
    let mut conditions = Vec::new();
    for (enforce, runs) in RUNS {
        let section = if enforce {
            "latency"
        } else {
            "latency-monitor"
        };
        let dir = bench.work.subdir(section)?;
        let SensorSetup {
            secrets,
            load_cgroup,
            sensor,
        } = setup(
            bench,
            &dir,
            2 * (args.samples + args.rounds),
            &format!("{section}-load"),
            enforce,
        )?;
        let watcher = AlertWatcher::start(&sensor.alerts_path())?;
        let mut next_file = 0;
        for (name, tag, loaded) in runs {
            eprintln!("xtask bench: latency: {name}");
            let mut load = Background::start(&sensor, &load_cgroup, args, loaded)?;
            let condition = measure(
                bench,
                &sensor,
                &watcher,
                &secrets,
                &mut next_file,
                &Measured {
                    args,
                    condition: name,
                    tag,
                    contain: enforce,
                },
            );
            let load_rates = load.finish()?;
            let mut condition = condition?;
            condition.load = load_rates;
            conditions.push(condition);
        }
        drop(watcher);
        sensor.stop()?;
        super::cgroup::remove_agent_cgroups(&bench.cgroup_root);
    }
    Ok(Latency {
        args: args.clone(),
        conditions,
    })
}

/// The tracked paced loop of the loaded condition, and the sensor's counters around it.
struct Background {
    child: Option<Child>,
    url: String,
    before: Option<(metrics::Scrape, Instant)>,
}

impl Background {
    fn start(
        sensor: &RunningSensor,
        cgroup: &BenchCgroup,
        args: &LatencyArgs,
        loaded: bool,
    ) -> Result<Self> {
        let url = sensor.metrics_url()?.to_string();
        if !loaded {
            return Ok(Self {
                child: None,
                url,
                before: None,
            });
        }
        let mut cmd = workload::paced_open_close_command(args.load as f64, 3600.0, 1, None, None)?;
        cmd.stdout(Stdio::null());
        cgroup.join_before_exec(&mut cmd);
        let child = cmd.spawn().context("cannot start the background load")?;
        // Steady state first.
        std::thread::sleep(Duration::from_secs(1));
        let before = Some((metrics::scrape(&url)?, Instant::now()));
        Ok(Self {
            child: Some(child),
            url,
            before,
        })
    }

    /// Stops the load; its decoded and lost events per second.
    fn finish(&mut self) -> Result<Option<(f64, f64)>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let (before, start) = self.before.take().context("no counters")?;
        let after = metrics::scrape(&self.url)?;
        let seconds = start.elapsed().as_secs_f64();
        let _ = child.kill();
        let _ = child.wait();
        let rate = |name: &str, except: &[&str]| {
            (after.sum(name, except) - before.sum(name, except)).max(0.0) / seconds
        };
        Ok(Some((
            rate("agent_sensor_events_total", &[]),
            rate(
                "agent_sensor_events_dropped_total",
                &["reason=\"truncated\""],
            ),
        )))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one condition measures.
struct Measured<'a> {
    args: &'a LatencyArgs,
    condition: &'static str,
    /// In the agents' names.
    tag: &'static str,
    /// Containment rounds too (enforce mode).
    contain: bool,
}

fn measure(
    bench: &Bench,
    sensor: &RunningSensor,
    watcher: &AlertWatcher,
    secrets: &Path,
    next_file: &mut u64,
    measured: &Measured,
) -> Result<Condition> {
    let Measured {
        args,
        condition,
        tag,
        contain,
    } = *measured;
    let url = sensor.metrics_url()?.to_string();
    let detection_buckets =
        |s: &metrics::Scrape| s.buckets("agent_sensor_detection_latency_seconds", "");
    let containment_buckets = |s: &metrics::Scrape| {
        s.buckets(
            "agent_sensor_containment_latency_seconds",
            "action=\"freeze\"",
        )
    };

    // Detection: agents reading READS_PER_AGENT distinct secrets each, one every interval.
    let before = metrics::scrape(&url)?;
    let mut detection = Vec::new();
    let mut detection_missing = 0;
    let mut remaining = args.samples;
    let mut agent_no = 0;
    while remaining > 0 {
        let count = remaining.min(READS_PER_AGENT);
        let name = format!("bench-detect-{tag}-{agent_no}");
        let worktree = worktree(bench, &name)?;
        let mut cmd = sensor.exec_command(&name, &worktree, Some("bench"));
        cmd.args(workload_args(workload::read_files_command(
            secrets,
            "secret-",
            *next_file,
            count,
            args.interval_ms,
            0,
        )?));
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .context("cannot run a detection agent")?;
        if !output.status.success() {
            bail!(
                "detection agent {name} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let alerts = watcher.wait_for(&name, count as usize, Duration::from_secs(10));
        detection.extend(
            alerts
                .iter()
                .map(|a| a.seen_ns.saturating_sub(a.ktime_ns) as f64 / 1e3),
        );
        detection_missing += count.saturating_sub(alerts.len() as u64);
        *next_file += count;
        remaining -= count;
        agent_no += 1;
        let _ = std::fs::remove_dir_all(&worktree);
    }
    let after = metrics::scrape(&url)?;
    let histogram = metrics::bucket_delta(&detection_buckets(&before), &detection_buckets(&after));
    let micros = |q: Option<f64>| q.map(|s| s * 1e6);
    let detection_histogram = (
        micros(metrics::quantile(&histogram, 0.5)),
        micros(metrics::quantile(&histogram, 0.99)),
    );

    // Containment: one agent per round, frozen for reading one secret, then killed.
    let before = metrics::scrape(&url)?;
    let (mut containment, mut freeze, mut verified_frozen) = (Vec::new(), Vec::new(), 0);
    let rounds = if contain { args.rounds } else { 0 };
    for round in 0..rounds {
        let name = format!("bench-contain-{tag}-{round}");
        let worktree = worktree(bench, &name)?;
        let mut cmd = sensor.exec_command(&name, &worktree, Some("bench-contain"));
        cmd.args(workload_args(workload::read_files_command(
            secrets, "secret-", *next_file, 1, 0, 30_000,
        )?));
        *next_file += 1;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start a containment agent")?;
        let alerts = watcher.wait_for(&name, 1, Duration::from_secs(10));
        if let Some(alert) = alerts.first() {
            containment.push(alert.seen_ns.saturating_sub(alert.ktime_ns) as f64 / 1e3);
            if let Some(us) = frozen_micros(&alert.outcome) {
                freeze.push(us);
            }
            if agent_cgroup_frozen(&bench.cgroup_root, &name) {
                verified_frozen += 1;
            }
        }
        let killed = sensor.control("kill", &name);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&worktree);
        if alerts.is_empty() {
            bail!("no alert for containment agent {name} within 10 s");
        }
        killed?;
    }
    let after = metrics::scrape(&url)?;
    let histogram =
        metrics::bucket_delta(&containment_buckets(&before), &containment_buckets(&after));
    Ok(Condition {
        name: condition,
        load: None,
        detection,
        detection_missing,
        detection_histogram,
        containment,
        freeze,
        containment_histogram: (
            micros(metrics::quantile(&histogram, 0.5)),
            micros(metrics::quantile(&histogram, 0.99)),
        ),
        verified_frozen,
        rounds,
    })
}

/// The program and arguments of a prepared workload command, to run after `exec … --`.
fn workload_args(cmd: std::process::Command) -> Vec<std::ffi::OsString> {
    std::iter::once(cmd.get_program().to_os_string())
        .chain(cmd.get_args().map(|a| a.to_os_string()))
        .collect()
}

fn worktree(bench: &Bench, agent: &str) -> Result<PathBuf> {
    bench.work.subdir(&format!("latency/worktrees/{agent}"))
}

/// Whether the cgroup the sensor made for `agent` (`<root>/agent-sensor/<agent>-<id>`) says
/// `frozen 1`.
fn agent_cgroup_frozen(cgroup_root: &Path, agent: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(cgroup_root.join("agent-sensor")) else {
        return false;
    };
    let prefix = format!("{agent}-");
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        name.to_string_lossy()
            .strip_prefix(&prefix)
            .is_some_and(|id| id.chars().all(|c| c.is_ascii_digit()))
            && std::fs::read_to_string(entry.path().join("cgroup.events"))
                .is_ok_and(|events| events.lines().any(|l| l == "frozen 1"))
    })
}

impl Latency {
    pub fn targets(&self) -> Vec<Target> {
        self.conditions
            .iter()
            .flat_map(|c| {
                let contained = c.rounds > 0;
                [
                    Some(Target {
                        name: format!("detection latency, {} (reported; no number set)", c.name),
                        measured: format!(
                            "p50 {}, p99 {}",
                            micros(report::percentile(&c.detection, 0.5)),
                            micros(report::percentile(&c.detection, 0.99))
                        ),
                        verdict: "—".into(),
                    }),
                    contained.then(|| Target {
                        name: format!(
                            "containment latency (event → frozen), {} (reported; no number set)",
                            c.name
                        ),
                        measured: format!(
                            "p50 {}, p99 {}",
                            micros(report::percentile(&c.containment, 0.5)),
                            micros(report::percentile(&c.containment, 0.99))
                        ),
                        verdict: "—".into(),
                    }),
                ]
            })
            .flatten()
            .collect()
    }

    pub fn render(&self) -> String {
        let a = &self.args;
        let mut out = vec![
            report::heading(),
            format!(
                "({} timed alerts and {} frozen agents per condition; {} ms between reads; \
                 background load {} events/s)",
                a.samples,
                a.rounds,
                a.interval_ms,
                thousands(a.load)
            ),
            String::new(),
            "One sensor in enforce mode (`agent-sensor run --mode enforce --policy FILE --alerts \
             FILE --track-cgroup <load cgroup> --metrics-addr 127.0.0.1:0`), whose policy marks \
             the bench's secrets directory sensitive for profile `bench`, and freezes agents of \
             profile `bench-contain` that read one; then the same in monitor mode, the default, \
             for detection alone (monitor mode contains nothing, and its records may wait up to \
             4 ms while records keep coming, against 1 ms in enforce mode: \
             `--max-event-delay-us`). Detection: agents (`agent-sensor exec \
             --profile bench`) each read 25 distinct secrets, one every interval (the sensor \
             reports at most 32 distinct targets per rule, agent and minute). Containment: one \
             agent per round (`--profile bench-contain`) reads one secret and waits; once its \
             alert is in, `agent-sensor kill` ends it. The bench follows the alerts file with \
             inotify: latency is the moment an alert line appears (CLOCK_MONOTONIC) minus the \
             `ktime_ns` of its evidence event (the kernel's clock, the same one). The alert of \
             a freeze is written after the cgroup reports frozen, so its latency is event → \
             frozen; \"freeze alone\" is the alert's own `frozen in N µs`; \"verified\" counts \
             rounds whose agent cgroup read `frozen 1` when the alert appeared. The histogram \
             columns are the sensor's own `agent_sensor_detection_latency_seconds` and \
             `agent_sensor_containment_latency_seconds{action=\"freeze\"}` over the same \
             alerts (bucket-interpolated, so coarse). Background load: a tracked open/close \
             loop paced to the given rate."
                .into(),
            String::new(),
            "| condition | background decoded/s (lost/s) | detection p50 | p99 | max | alerts \
             (missing) | histogram p50 / p99 |"
                .into(),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |".into(),
        ];
        for c in &self.conditions {
            out.push(format!(
                "| {} | {} | {} | {} | {} | {} ({}) | {} / {} |",
                c.name,
                load(c.load),
                micros(report::percentile(&c.detection, 0.5)),
                micros(report::percentile(&c.detection, 0.99)),
                micros(report::percentile(&c.detection, 1.0)),
                c.detection.len(),
                c.detection_missing,
                micros(c.detection_histogram.0),
                micros(c.detection_histogram.1),
            ));
        }
        out.extend([
            String::new(),
            "| condition | background decoded/s (lost/s) | event → frozen p50 | p99 | max | \
             freeze alone p50 | p99 | verified frozen | histogram p50 / p99 |"
                .into(),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |".into(),
        ]);
        for c in self.conditions.iter().filter(|c| c.rounds > 0) {
            out.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} of {} | {} / {} |",
                c.name,
                load(c.load),
                micros(report::percentile(&c.containment, 0.5)),
                micros(report::percentile(&c.containment, 0.99)),
                micros(report::percentile(&c.containment, 1.0)),
                micros(report::percentile(&c.freeze, 0.5)),
                micros(report::percentile(&c.freeze, 0.99)),
                c.verified_frozen,
                c.rounds,
                micros(c.containment_histogram.0),
                micros(c.containment_histogram.1),
            ));
        }
        out.push(String::new());
        out.join("\n")
    }
}

fn load(rates: Option<(f64, f64)>) -> String {
    rates.map_or("none".into(), |(decoded, lost)| {
        format!("{} ({})", thousands(decoded as u64), thousands(lost as u64))
    })
}

/// µs with a unit, ms above 10 ms; "—" when there is nothing.
pub(super) fn micros(value: Option<f64>) -> String {
    match value {
        None => "—".into(),
        Some(us) if us >= 10_000.0 => format!("{:.1} ms", us / 1e3),
        Some(us) => format!("{us:.0} µs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_alert_line() {
        let line = r#"{"agent":"a","rule":"credential.sensitive_read","action":{"outcome":"frozen in 812 µs"},"evidence":[{"ktime_ns":5},{"ktime_ns":1000}]}"#;
        let alert = parse_alert(line.as_bytes(), 4000).unwrap();
        assert_eq!(alert.ktime_ns, 1000);
        assert_eq!(frozen_micros(&alert.outcome), Some(812.0));
        assert_eq!(frozen_micros("would freeze"), None);
    }

    #[test]
    fn formats_micros() {
        assert_eq!(micros(Some(812.4)), "812 µs");
        assert_eq!(micros(Some(12_345.0)), "12.3 ms");
        assert_eq!(micros(None), "—");
    }
}
