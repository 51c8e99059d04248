//! The run loop: load the policy and the eBPF programs, find the agents, then drain the ring
//! buffer through the pipeline, answer the control socket and report kernel-side losses until
//! SIGINT/SIGTERM (dropping the loaded object detaches every program).

mod control;
mod ring_wait;
mod startup;

use std::{
    fs::OpenOptions,
    io::{BufWriter, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use agent_sensor_common::{drop_slot, EventKind};
use thiserror::Error;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use self::ring_wait::RingWait;
use crate::{
    agents::registry::AgentState,
    control::server,
    detect::Detector,
    export::{alerts::AlertWriter, incident::IncidentWriter},
    export::{
        http,
        metrics::{AgentCounts, Metrics, MetricsConfig},
        ocsf::AlertFormat,
        webhook::{WebhookConfig, WebhookSink},
    },
    loader::{LoadError, LoadOptions, LoadedSensor},
    lock::{Claim, DirLock, LockError},
    pipeline::{Pipeline, Stats},
    policy::{Mode, Policy, PolicyError, RuleId},
    tracking::TrackError,
};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Track(#[from] TrackError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Control(#[from] server::ServerError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot open {what} file {path}: {source}")]
    OutputFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the webhook sink for {url}: {source}")]
    Webhook {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up in-kernel enforcement: {0}")]
    Enforcement(#[source] crate::respond::kernel::KernelPolicyError),
    #[error("cannot write events: {0}")]
    EventsWrite(#[source] std::io::Error),
    #[error("ring buffer polling failed: {0}")]
    Poll(#[source] std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for Output {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "-" {
            Output::Stdout
        } else {
            Output::File(PathBuf::from(s))
        })
    }
}

impl Output {
    fn open(&self, what: &'static str) -> Result<Box<dyn Write + Send>, DaemonError> {
        Ok(match self {
            Output::Stdout => Box::new(std::io::stdout()),
            Output::File(path) => {
                let err = |source| DaemonError::OutputFile {
                    what,
                    path: path.clone(),
                    source,
                };
                let mut file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(path)
                    .map_err(err)?;
                // A daemon killed mid-write leaves a torn last line: start on a fresh one so
                // that only that record is lost, not the next one too.
                if ends_mid_line(&mut file).map_err(err)? {
                    file.write_all(b"\n").map_err(err)?;
                }
                Box::new(file)
            }
        })
    }
}

fn ends_mid_line(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub ring_bytes: Option<u32>,
    /// The longest a record waits in the ring while records keep coming (see `ring_wait`);
    /// `None`: the mode's default.
    pub max_event_delay: Option<Duration>,
    /// Send file calls that failed because their path named nothing (see `LoadOptions`).
    pub report_missing_paths: bool,
    /// See `LoadOptions::repeat_window_ms`; `None`: the default.
    pub repeat_window_ms: Option<u32>,
    /// Nice levels above the starting one (see `system::boost_priority`).
    pub priority_boost: u8,
    pub events: Option<Output>,
    pub alerts: Option<Output>,
    /// Policy file; the built-in default when absent.
    pub policy: Option<PathBuf>,
    /// Overrides the policy's mode.
    pub mode: Option<Mode>,
    /// Overrides the policy's state directory.
    pub state_dir: Option<PathBuf>,
    pub control_socket: PathBuf,
    pub alerts_format: AlertFormat,
    /// Where `/metrics` is served; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// Agents that get their own `agent` label on the per-agent alert counter (0: none).
    pub metrics_agent_labels: usize,
    /// Alerts are also posted to this `http://` URL, spooled on disk until delivered.
    pub webhook_url: Option<String>,
    /// Pin maps and links in this bpffs directory so that tracking and enforcement outlive
    /// the daemon (see `loader::persist`).
    pub persist: Option<PathBuf>,
    /// At stop, remove the pins too (everything leaves the kernel).
    pub detach: bool,
    /// Capture-only agents (no worktree): for debugging and tests.
    pub track_pids: Vec<u32>,
    pub track_cgroups: Vec<PathBuf>,
}

/// Loads, attaches and runs until SIGINT or SIGTERM.
pub async fn run(options: RunOptions) -> Result<Stats, DaemonError> {
    // First, so that a non-root run says so instead of failing on a file it may not read,
    // and creates nothing on the way.
    crate::system::require_root().map_err(LoadError::from)?;
    // Before any thread is started: threads take the nice value of the one that starts them.
    // Said in the ready line (a bad argument must stay a one-line error).
    let boost = crate::system::boost_priority(options.priority_boost);
    let mut policy = match &options.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    if let Some(mode) = options.mode {
        policy.file.sensor.mode = mode;
    }
    let state_dir = options
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&policy.file.sensor.state_dir));
    std::fs::create_dir_all(&state_dir).map_err(|source| DaemonError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    let mut locks = Locks::acquire(&state_dir, options.persist.as_deref())?;

    let load = LoadOptions {
        ring_bytes: options
            .ring_bytes
            .unwrap_or(LoadOptions::default().ring_bytes),
        discovery_executables: policy.file.discovery.executables.clone(),
        discovery_env_marker: policy.file.discovery.env_marker,
        report_missing_paths: options.report_missing_paths,
        repeat_window_ms: options
            .repeat_window_ms
            .unwrap_or(LoadOptions::default().repeat_window_ms),
        resolvers: policy.file.enforcement.resolvers.clone(),
        persist: options.persist.clone(),
    };
    let mut sensor = LoadedSensor::load(&load)?;
    if policy.mode() == Mode::Enforce {
        let enforcement = &policy.file.enforcement;
        for (map, key, paths) in [
            (
                "KILL_ON_ACCESS",
                "enforcement.kill_on_access",
                &enforcement.kill_on_access,
            ),
            (
                "FORBIDDEN_EXEC",
                "enforcement.forbidden_exec",
                &enforcement.forbidden_exec,
            ),
        ] {
            crate::respond::kernel::fill_inode_list(&mut sensor.ebpf, map, key, paths)
                .map_err(DaemonError::Enforcement)?;
        }
        sensor.refresh_lists()?;
    }

    // aya-log records from the programs go to this daemon's log.
    let log_forwarder = match aya_log::EbpfLogger::init(&mut sensor.ebpf) {
        Ok(logger) => {
            let mut logger = register(logger).map_err(DaemonError::Poll)?;
            Some(tokio::spawn(async move {
                while let Ok(mut guard) = logger.readable_mut().await {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }))
        }
        Err(e) => {
            log::warn!("eBPF log forwarding unavailable: {e}");
            None
        }
    };

    let sink = match &options.events {
        Some(output) => Some(BufWriter::new(output.open("events")?)),
        None => None,
    };
    let alerts = match &options.alerts {
        Some(output) => Some(AlertWriter::new(
            output.open("alerts")?,
            options.alerts_format,
        )),
        None => None,
    };
    let mode = policy.mode();
    let metrics = Arc::new(Metrics::new(MetricsConfig {
        agent_label_cap: options.metrics_agent_labels,
    }));
    // By the families the loader attached through (a list kept here would miss a new one).
    let mut attached_by_family = std::collections::BTreeMap::new();
    for program in &sensor.attached {
        *attached_by_family
            .entry(crate::loader::hook_family(program))
            .or_insert(0u64) += 1;
    }
    for (family, n) in attached_by_family {
        metrics.programs_attached(family, n);
    }
    for rule in RuleId::ALL {
        let config = policy.rule(rule);
        if config.enabled {
            metrics.declare_rule(rule.as_str(), config.severity.as_str());
        }
    }
    let _metrics_server = match options.metrics_addr {
        Some(addr) => Some(
            http::serve_metrics(addr, metrics.clone())
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let mut pipeline = Pipeline::new(policy, sink, alerts);
    pipeline.metrics = Some(metrics.clone());
    if let Some(url) = &options.webhook_url {
        let config = WebhookConfig::new(url.clone(), state_dir.join("webhook-spool"));
        let sink = WebhookSink::start(config, Some(metrics.clone())).map_err(|source| {
            DaemonError::Webhook {
                url: url.clone(),
                source,
            }
        })?;
        pipeline.webhook = Some((sink, options.alerts_format));
    }
    let incidents = state_dir.join("incidents");
    let writer = IncidentWriter::start().map_err(|source| DaemonError::StateDir {
        path: incidents.clone(),
        source,
    })?;
    pipeline.incidents = Some((incidents, writer));
    pipeline.detector =
        Detector::with_state_dir(&state_dir).map_err(|source| DaemonError::StateDir {
            path: state_dir.clone(),
            source,
        })?;
    pipeline.sensor.protected_paths = protected_paths(
        &state_dir,
        options.policy.as_deref(),
        &options.control_socket,
    );
    // The resolvers the kernel's egress programs were given at load, not a second reading.
    pipeline.sensor.resolvers = sensor.resolvers.clone();
    pipeline.stats.kernel_drops = sensor.drop_counts()?;
    pipeline.stats.kernel_filtered = sensor.filtered_counts()?;

    let mut agents = startup::Agents::new(&state_dir)?;
    agents.track_options(&mut sensor, &mut pipeline, &options)?;
    agents.restore(&mut sensor, &mut pipeline);
    startup::remove_stray_cgroups(&pipeline.cgroup_parent, startup::STRAY_AGE);
    agents.discover_running(&mut sensor, &mut pipeline);

    let (_socket, mut requests) = server::serve(&options.control_socket)?;
    let ring = sensor.take_events()?;
    let mut ring = register(ring).map_err(DaemonError::Poll)?;
    let max_event_delay = options
        .max_event_delay
        .unwrap_or_else(|| ring_wait::default_max_delay(mode));
    let mut ring_wait =
        RingWait::new(sensor.take_reader_flag()?, load.ring_bytes, max_event_delay)?;

    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    if let Err(e) = &boost {
        log::warn!("cannot raise the daemon's priority: {e}; a busy host may starve it");
    }
    log::info!(
        "agent-sensor ready: {} programs attached ({}); mode {} ({}){}; control socket {}; \
         metrics {}",
        sensor.attached.len(),
        sensor.attached.join(", "),
        mode.name(),
        ring_wait.describe(),
        match boost {
            Ok(Some(nice)) => format!("; nice {nice}"),
            _ => String::new(),
        },
        options.control_socket.display(),
        _metrics_server
            .as_ref()
            .map(|s| format!("http://{}/metrics", s.local_addr()))
            .unwrap_or_else(|| "off".into()),
    );

    loop {
        tokio::select! {
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = sighup.recv() => {
                let mode = pipeline.policy.mode();
                reload_policy(&options, &mut pipeline);
                let now = pipeline.policy.mode();
                if options.max_event_delay.is_none() && now != mode {
                    ring_wait.set_max_delay(ring_wait::default_max_delay(now));
                    log::info!("SIGHUP: mode {}: {}", now.name(), ring_wait.describe());
                }
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(DaemonError::Poll)?;
                let before = pipeline.stats.events;
                let mut more = pipeline.drain(guard.get_inner_mut(), BATCH).map_err(DaemonError::EventsWrite)?;
                if !more {
                    let handled = pipeline.stats.events - before;
                    more = ring_wait.settle(&mut pipeline, guard.get_inner_mut(), handled)?;
                }
                // With more waiting the fd stays "ready": the loop comes straight back, but
                // signals and requests get their turn first.
                if !more {
                    guard.clear_ready();
                }
                drop(guard);
                after_batch(&mut sensor, &mut pipeline, &mut agents)?;
                if more {
                    // The ring stays ready, so this task would not give the runtime back:
                    // the control server, metrics and signals run between batches.
                    tokio::task::yield_now().await;
                }
            }
            Some(incoming) = requests.recv() => {
                let reply = control::handle(&mut sensor, &mut pipeline, &mut agents, incoming.request, incoming.peer_pid);
                let _ = incoming.reply.send(reply);
            }
            _ = tick.tick() => {
                ring_wait.catch_up(&mut pipeline, ring.get_mut())?;
                pipeline
                    .report_sockets_of_gone_processes(&mut sensor.sock_stats()?)
                    .map_err(DaemonError::EventsWrite)?;
                report_kernel_counters(&sensor, &mut pipeline.stats, &metrics);
                pipeline
                    .report_held_back(crate::events::Clock::now_ktime_ns())
                    .map_err(DaemonError::EventsWrite)?;
                agents.remove_ended_cgroups();
                publish_agents(&pipeline, &metrics);
            }
        }
    }
    // What is queued is written before the programs go away, within a bound: a flood that
    // outlasts it must not keep the daemon from stopping.
    let deadline = std::time::Instant::now() + FINAL_DRAIN;
    while pipeline
        .drain(ring.get_mut(), BATCH)
        .map_err(DaemonError::EventsWrite)?
    {
        if std::time::Instant::now() > deadline {
            log::warn!("stopping with events still queued (flood outlasted {FINAL_DRAIN:?})");
            break;
        }
    }
    after_batch(&mut sensor, &mut pipeline, &mut agents)?;
    report_kernel_counters(&sensor, &mut pipeline.stats, &metrics);
    // Findings held back in windows still open are told now, not lost with the daemon.
    pipeline
        .report_held_back(u64::MAX)
        .map_err(DaemonError::EventsWrite)?;
    // The bundles of the last alerts are written before the daemon goes.
    pipeline.incidents = None;
    agents.retire_finished(&mut sensor, &pipeline);
    agents.finish_removals(Duration::from_millis(500));
    agents.save(&pipeline);
    if let Some((sink, _)) = pipeline.webhook.take() {
        sink.shutdown().await;
    }
    if let Err(e) = pipeline.detector.save() {
        log::error!(
            "cannot save learned behaviour in {}: {e}",
            state_dir.display()
        );
    }
    drop(ring);
    if let Some(task) = log_forwarder {
        task.abort();
    }
    let pins = sensor.pins.take();
    let persisted = pins.is_some() && !options.detach;
    drop(sensor);
    match pins {
        Some(pins) if options.detach => {
            pins.remove();
            if let Some(lock) = locks.pins.take() {
                lock.remove();
            }
            log::info!("--detach: pins removed; nothing of the sensor stays in the kernel");
        }
        Some(_) => log::info!(
            "tracking and enforcement stay in the kernel (pinned in {}); the next daemon \
             takes over, `agent-sensor uninstall` removes them",
            options
                .persist
                .as_deref()
                .unwrap_or(std::path::Path::new("?"))
                .display()
        ),
        None => {}
    }
    let stats = pipeline.stats;
    log::info!(
        "stopped: {} events, {} undecodable, {} alerts; {}",
        stats.events,
        stats.decode_errors,
        stats.alerts,
        if persisted {
            "programs left to the keeper"
        } else {
            "all programs detached"
        }
    );
    Ok(stats)
}

/// The directories this daemon has to itself (see `lock`), held for its life.
struct Locks {
    _state: DirLock,
    pins: Option<DirLock>,
}

impl Locks {
    /// Claims the state dir, and the pin dir with `--persist`, before anything in them or in
    /// the kernel is touched: a second daemon on either is refused.
    fn acquire(state_dir: &Path, persist: Option<&Path>) -> Result<Self, DaemonError> {
        let state = DirLock::acquire(
            &state_dir.join(STATE_LOCK),
            Claim {
                what: "the state directory",
                dir: state_dir,
                advice: "stop it first, or give this daemon a state directory of its own \
                         (--state-dir)",
            },
        )?;
        let pins = match persist {
            Some(pins) => Some(DirLock::acquire(
                &crate::loader::persist::lock_file(pins),
                Claim {
                    what: "the pin directory",
                    dir: pins,
                    advice: "stop it first, or give this daemon pins of its own (--persist DIR)",
                },
            )?),
            None => None,
        };
        Ok(Self {
            _state: state,
            pins,
        })
    }
}

/// The lock file in the state dir (see `lock`).
const STATE_LOCK: &str = "daemon.lock";

/// SIGHUP: the policy file is read again. A policy that does not load changes nothing: the one
/// in force stays, and the error is logged. (Discovery executables and in-kernel enforcement
/// lists are set at start; a reload changes profiles, rules and responses.)
fn reload_policy(options: &RunOptions, pipeline: &mut Pipeline) {
    let Some(path) = &options.policy else {
        log::info!("SIGHUP: no policy file (the built-in policy is in force); nothing to reload");
        return;
    };
    match Policy::check_file(path) {
        Ok(mut policy) => {
            if let Some(mode) = options.mode {
                policy.file.sensor.mode = mode;
            }
            pipeline.registry.rescope(&policy);
            pipeline.policy = policy;
            log::info!("SIGHUP: policy {} reloaded", path.display());
        }
        Err(errors) => {
            let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
            log::error!(
                "SIGHUP: policy {} not reloaded ({} error(s); first: {first}); the previous policy \
                 stays in force",
                path.display(),
                errors.len()
            );
        }
    }
}

/// What tamper.sensor guards besides the pins and `/proc` files it knows itself: the state
/// dir, the policy file, the control socket, bpffs and the sensor's own program (replaced, the
/// next start runs someone else's code as root), each named as the kernel names the paths of
/// agents' calls (see [`kernel_names`]). A relative name, compared with those absolute paths,
/// would guard nothing.
fn protected_paths(state_dir: &Path, policy: Option<&Path>, control_socket: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let exe = std::env::current_exe().ok();
    for path in [
        Some(state_dir),
        policy,
        Some(control_socket),
        Some(Path::new("/sys/fs/bpf")),
        exe.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        for name in kernel_names(path) {
            if !paths.contains(&name) {
                paths.push(name);
            }
        }
    }
    paths
}

/// `path` made absolute (against the daemon's working directory, where a relative `--policy`
/// was given), and that name with its symlinks resolved as far as it exists (the control
/// socket does not yet): the kernel reports a call through a symlink under the link's target,
/// and one that replaces the link itself under the link's own name.
fn kernel_names(path: &Path) -> Vec<PathBuf> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let resolved = resolve_existing(&absolute);
    if resolved == absolute {
        vec![absolute]
    } else {
        vec![absolute, resolved]
    }
}

/// The longest existing ancestor of `path` canonicalized, the rest appended as it is; `path`
/// itself when none canonicalizes or the rest names a parent (`..`).
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut base = path;
    loop {
        if let Ok(canonical) = std::fs::canonicalize(base) {
            return rest
                .iter()
                .rev()
                .fold(canonical, |resolved, name| resolved.join(name));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                base = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Records handled per turn of the run loop.
pub(crate) const BATCH: usize = 4096;
/// How long the last drain at stop may take.
const FINAL_DRAIN: Duration = Duration::from_secs(2);

/// Work that needs the kernel side after each batch of events.
fn after_batch(
    sensor: &mut LoadedSensor,
    pipeline: &mut Pipeline,
    agents: &mut startup::Agents,
) -> Result<(), DaemonError> {
    pipeline
        .report_exited_sockets(&mut sensor.sock_stats()?)
        .map_err(DaemonError::EventsWrite)?;
    for id in pipeline.take_adopted_agents() {
        agents.enforce_discovered(sensor, pipeline, id);
    }
    for id in pipeline.take_exited_agents() {
        agents.retire(sensor, pipeline, id);
    }
    Ok(())
}

/// Registers a descriptor we own with the runtime.
fn register<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its descriptor and is moved into the AsyncFd, so the descriptor stays
    // open exactly as long as the registration.
    unsafe { AsyncFd::register(inner) }.map_err(|e| std::io::Error::other(e.to_string()))
}

/// Agents by state and their processes, for the gauges.
fn publish_agents(pipeline: &Pipeline, metrics: &Metrics) {
    let mut counts = AgentCounts::default();
    let mut processes = 0;
    for agent in pipeline.registry.agents() {
        processes += agent.processes.len() as u64;
        metrics.set_agent_state(&agent.name, agent.state.as_str());
        match agent.state {
            AgentState::Running => counts.running += 1,
            AgentState::Frozen => counts.frozen += 1,
            AgentState::Killed => counts.killed += 1,
            AgentState::Exited => counts.exited += 1,
        }
    }
    metrics.set_agents(counts);
    metrics.set_processes(processes);
}

/// Logs any growth of the kernel's loss counters, by kind and reason, and counts it; counts
/// the growth of its filter counters.
fn report_kernel_counters(sensor: &LoadedSensor, stats: &mut Stats, metrics: &Metrics) {
    let Ok(now) = sensor.drop_counts() else {
        return;
    };
    for (slot, (&new, old)) in now.iter().zip(stats.kernel_drops.iter()).enumerate() {
        if new <= *old {
            continue;
        }
        let what = match slot as u32 {
            drop_slot::PENDING_FULL => "syscalls not captured (in-flight map full)".to_string(),
            drop_slot::TRACKING_FULL => {
                "new agent tasks not tracked (tracking map full)".to_string()
            }
            drop_slot::SOCKET_MAP_FULL => "agent socket byte counts (socket map full)".to_string(),
            s => match EventKind::ALL.iter().find(|k| k.slot() == s) {
                Some(kind) => format!("{} events lost (ring buffer full)", kind.name()),
                None => format!("losses in slot {s}"),
            },
        };
        log::warn!("kernel dropped {} {what}", new - old);
        metrics.kernel_drops(slot as u32, new - old);
    }
    stats.kernel_drops = now;
    // Filtered calls are the configuration at work, not losses: counted, not logged.
    let Ok(now) = sensor.filtered_counts() else {
        return;
    };
    for (slot, (&new, old)) in now.iter().zip(stats.kernel_filtered.iter()).enumerate() {
        metrics.kernel_filtered(slot as u32, new.saturating_sub(*old));
    }
    stats.kernel_filtered = now;
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::protected_paths;

    /// A scratch directory of this test process, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("as-protect-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(std::fs::canonicalize(&dir).unwrap())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn relative_names_are_guarded_as_absolute_paths() {
        // `cd /tmp/x; agent-sensor run --policy pol/mon.toml --state-dir state ...`: an agent
        // writing /tmp/x/pol/mon.toml is reported under that absolute path.
        let cwd = std::env::current_dir().unwrap();
        let paths = protected_paths(
            Path::new("state"),
            Some(Path::new("pol/mon.toml")),
            Path::new("run/control.sock"),
        );
        assert!(paths.iter().all(|p| p.is_absolute()), "{paths:?}");
        for name in ["state", "pol/mon.toml", "run/control.sock"] {
            assert!(paths.contains(&cwd.join(name)), "{name}: {paths:?}");
        }
        assert!(paths.contains(&PathBuf::from("/sys/fs/bpf")), "{paths:?}");
        let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        assert!(paths.contains(&exe), "the sensor's own program: {paths:?}");
    }

    #[test]
    fn names_through_a_symlink_are_guarded_under_both_names() {
        let scratch = Scratch::new("link");
        let real = scratch.0.join("real");
        let link = scratch.0.join("link");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("policy.toml"), "").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // The socket does not exist yet when the list is made: its directory is resolved.
        let paths = protected_paths(
            &link.join("state"),
            Some(&link.join("policy.toml")),
            &link.join("control.sock"),
        );
        for name in ["state", "policy.toml", "control.sock"] {
            assert!(paths.contains(&link.join(name)), "{name}: {paths:?}");
            assert!(paths.contains(&real.join(name)), "{name}: {paths:?}");
        }
    }
}
