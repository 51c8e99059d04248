//! Overhead per workload and configuration: the three microbenchmarks and the realistic
//! session, with no sensor, agent-sensor, bpftrace and auditd, each tool with the workload
//! outside its filter (untracked) and inside (tracked). Each tool is started once and every
//! workload runs R times under it, untracked and tracked alternating; the no-sensor baseline
//! runs first and again last.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{bail, Context as _, Result};

use super::{
    account::{self, SessionAccount},
    cgroup::BenchCgroup,
    cpu,
    peers::{self, AuditTotals, Auditd, Bpftrace},
    report::{self, percent, thousands, Target},
    sensor::{RunningSensor, SensorOptions, SensorTotals},
    session,
    workload::{self, Listener, Micro},
    Bench,
};

#[derive(clap::Args, Clone, Debug)]
pub struct OverheadArgs {
    /// Timed runs of each microbenchmark per configuration; medians and min–max are reported.
    #[arg(long, default_value_t = 6)]
    pub runs: usize,
    /// open+close pairs per run of workload (a).
    #[arg(long, default_value_t = 200_000)]
    pub open_close: u64,
    /// connect+close per run of workload (b).
    #[arg(long, default_value_t = 10_000)]
    pub connects: u64,
    /// fork+exec of /bin/true per run of workload (c).
    #[arg(long, default_value_t = 1_000)]
    pub execs: u64,
    /// Rounds of sessions (workload d): each starts every tool in turn and runs one session
    /// per configuration under it, then one more with no sensor. A session moves by ±10 %
    /// from run to run on the 2-core VM, and with the host over minutes: each is compared with
    /// the no-sensor ones of its round, and the median over the rounds is reported.
    #[arg(long, default_value_t = 12)]
    pub session_runs: usize,
    /// Passes over the tools for the microbenchmarks (no sensor, agent-sensor, bpftrace,
    /// auditd, then no sensor again): the runs are spread over them, so that a load that
    /// comes and goes on the machine meets every tool alike.
    #[arg(long, default_value_t = 2)]
    pub passes: usize,
    /// Leave out bpftrace and auditd (nothing installed).
    #[arg(long)]
    pub no_peers: bool,
}

impl OverheadArgs {
    pub fn quick() -> Self {
        Self {
            runs: 3,
            open_close: 100_000,
            connects: 5_000,
            execs: 500,
            session_runs: 3,
            passes: 1,
            no_peers: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    None,
    AgentSensor,
    /// agent-sensor with `--repeat-window-ms 0`: every open sent, repeats too. Reported beside
    /// the default, not judged: what the repeat window saves, on the loop that repeats most.
    AgentSensorEveryOpen,
    Bpftrace,
    Auditd,
}

impl Tool {
    /// The name without spaces, for cgroups, directories and tags.
    fn slug(self) -> String {
        match self {
            Tool::AgentSensorEveryOpen => "agent-sensor-every-open".into(),
            _ => self.name().replace(' ', "-"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tool::None => "no sensor",
            Tool::AgentSensor => "agent-sensor",
            Tool::AgentSensorEveryOpen => "agent-sensor (every open sent)",
            Tool::Bpftrace => "bpftrace",
            Tool::Auditd => "auditd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// No tool running.
    Plain,
    /// The tool running, the workload outside its filter.
    Untracked,
    /// The workload inside the tool's filter.
    Tracked,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "",
            Variant::Untracked => "untracked",
            Variant::Tracked => "tracked",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Micro(Micro),
    Session,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::Micro(Micro::OpenClose),
        Workload::Micro(Micro::TcpConnect),
        Workload::Micro(Micro::ForkExec),
        Workload::Session,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Micro(Micro::OpenClose) => "(a) open/close loop",
            Workload::Micro(Micro::TcpConnect) => "(b) loopback TCP connect/close loop",
            Workload::Micro(Micro::ForkExec) => "(c) fork+exec of /bin/true",
            Workload::Session => "(d) coding-agent session",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Workload::Micro(Micro::OpenClose) => "open/close",
            Workload::Micro(Micro::TcpConnect) => "TCP connect",
            Workload::Micro(Micro::ForkExec) => "fork+exec",
            Workload::Session => "session",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Workload::Micro(_) => "ns/iteration",
            Workload::Session => "s/session",
        }
    }
}

/// The runs of one workload in one variant under one tool.
pub struct Cell {
    pub workload: Workload,
    pub variant: Variant,
    /// ns per iteration, or seconds per session.
    pub values: Vec<f64>,
    /// Sessions only: the CPU seconds each session cost the host, its own processes' and the
    /// tool's while it ran.
    pub host_cpu: Vec<f64>,
    /// Sessions only: the round each ran in (see `session_rounds`).
    pub rounds: Vec<usize>,
    /// Timed iterations of each run (microbenchmarks).
    pub iterations: Vec<u64>,
    tool_cpu: f64,
    other_cpu: f64,
    wall: f64,
}

/// What a table compares: the workload's own time, or what a session cost the host in CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// ns per iteration, or wall seconds per session.
    Time,
    /// CPU seconds per session: its processes' and the tool's while it ran. A tool's cost
    /// shows in it whether it makes the session wait or uses a core the session left idle
    /// (which wall time does not see).
    HostCpu,
}

impl Cell {
    pub fn samples(&self, metric: Metric) -> &[f64] {
        match metric {
            Metric::Time => &self.values,
            Metric::HostCpu => &self.host_cpu,
        }
    }

    pub fn median(&self, metric: Metric) -> f64 {
        report::median(self.samples(metric))
    }

    /// The sample of session round `round`, if one ran.
    fn in_round(&self, round: usize, metric: Metric) -> Option<f64> {
        let at = self.rounds.iter().position(|&r| r == round)?;
        self.samples(metric).get(at).copied()
    }

    pub fn tool_cores(&self) -> f64 {
        self.tool_cpu / self.wall.max(1e-9)
    }

    pub fn other_cores(&self) -> f64 {
        self.other_cpu / self.wall.max(1e-9)
    }
}

/// What a tool said about its run.
pub enum ToolTotals {
    None,
    Sensor {
        totals: SensorTotals,
        /// Alerts by rule (tracked microbenchmarks and sessions), in the order first seen,
        /// with the first one's summary.
        alerts: Vec<(String, u64, String)>,
    },
    Bpftrace,
    Auditd(AuditTotals),
}

/// One tool started once, every workload run under it.
pub struct ToolRun {
    pub tool: Tool,
    /// The no-sensor baseline run again at the end.
    pub again: bool,
    pub cells: Vec<Cell>,
    pub totals: ToolTotals,
    /// Iterations per (workload, variant) once lowered after a run longer than
    /// [`RUN_SECONDS_CAP`].
    capped: Vec<((Micro, Variant), u64)>,
}

impl ToolRun {
    fn new(tool: Tool, again: bool) -> Self {
        Self {
            tool,
            again,
            cells: Vec::new(),
            totals: ToolTotals::None,
            capped: Vec::new(),
        }
    }

    /// Adds what the tool reported in one more pass.
    fn add_totals(&mut self, more: ToolTotals) {
        self.totals = match (std::mem::replace(&mut self.totals, ToolTotals::None), more) {
            (ToolTotals::None, more) => more,
            (
                ToolTotals::Sensor { totals, alerts },
                ToolTotals::Sensor {
                    totals: t,
                    alerts: a,
                },
            ) => {
                let mut merged = alerts;
                for (rule, n, first) in a {
                    match merged.iter_mut().find(|(r, _, _)| *r == rule) {
                        Some((_, m, _)) => *m += n,
                        None => merged.push((rule, n, first)),
                    }
                }
                ToolTotals::Sensor {
                    totals: SensorTotals {
                        events: totals.events + t.events,
                        undecodable: totals.undecodable + t.undecodable,
                        kernel_dropped: totals.kernel_dropped + t.kernel_dropped,
                    },
                    alerts: merged,
                }
            }
            (ToolTotals::Auditd(a), ToolTotals::Auditd(b)) => ToolTotals::Auditd(AuditTotals {
                lost: a.lost + b.lost,
                log_lines: a.log_lines.zip(b.log_lines).map(|(x, y)| x + y),
            }),
            (old, _) => old,
        };
    }

    pub fn cell(&self, workload: Workload, variant: Variant) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.workload == workload && c.variant == variant)
    }

    fn cell_mut(&mut self, workload: Workload, variant: Variant) -> &mut Cell {
        if self.cell(workload, variant).is_none() {
            self.cells.push(Cell {
                workload,
                variant,
                values: Vec::new(),
                host_cpu: Vec::new(),
                rounds: Vec::new(),
                iterations: Vec::new(),
                tool_cpu: 0.0,
                other_cpu: 0.0,
                wall: 0.0,
            });
        }
        self.cells
            .iter_mut()
            .find(|c| c.workload == workload && c.variant == variant)
            .expect("just added")
    }
}

pub struct Overhead {
    pub args: OverheadArgs,
    pub runs: Vec<ToolRun>,
    pub peer_versions: Vec<String>,
    pub installed: Vec<String>,
    /// The sensor's own CPU per tracked session, counted (none without sessions).
    pub account: Option<SessionAccount>,
}

/// A running tool.
enum Running {
    None,
    Sensor(RunningSensor),
    Bpftrace(Bpftrace),
    Auditd(Auditd),
}

impl Running {
    /// To the nanosecond: a session costs the sensor some tens of milliseconds, a few ticks of
    /// /proc/PID/stat. The tools' threads live as long as they do.
    fn cpu_seconds(&self) -> f64 {
        match self {
            Running::None => 0.0,
            Running::Sensor(s) => cpu::threads_seconds(s.pid()),
            Running::Bpftrace(b) => cpu::threads_seconds(b.pid()),
            Running::Auditd(a) => a.cpu_seconds(),
        }
    }
}

pub fn run(bench: &Bench, args: &OverheadArgs) -> Result<Overhead> {
    let mut tools = vec![Tool::None, Tool::AgentSensor, Tool::AgentSensorEveryOpen];
    let mut installed = Vec::new();
    let mut peer_versions = Vec::new();
    if !args.no_peers {
        installed =
            super::host::ensure_packages(&[("bpftrace", "bpftrace"), ("auditd", "auditd")])?;
        peer_versions = vec![
            super::host::version("bpftrace", "--version"),
            super::host::version("auditctl", "-v"),
        ];
        tools.extend([Tool::Bpftrace, Tool::Auditd]);
    }
    let listener = Listener::start()?;
    let origin = session::create_origin(&bench.work.subdir("origin")?)?;
    eprintln!("xtask bench: overhead: one untimed session to warm the caches");
    run_session(bench, &origin, "warm-up", &|cmd| cmd)?;

    let passes = args.passes.max(1);
    let pass_args = OverheadArgs {
        runs: args.runs.div_ceil(passes),
        ..args.clone()
    };
    let mut runs: Vec<ToolRun> = tools.iter().map(|&t| ToolRun::new(t, false)).collect();
    for pass in 0..passes {
        for run in &mut runs {
            tool_run(bench, &pass_args, run, pass, listener.port)?;
        }
    }
    let mut again = ToolRun::new(Tool::None, true);
    tool_run(bench, &pass_args, &mut again, passes, listener.port)?;
    session_rounds(bench, args, &mut runs, &mut again, &origin)?;
    runs.push(again);
    let account = if args.session_runs > 0 {
        Some(session_account(bench, &origin)?)
    } else {
        None
    };
    Ok(Overhead {
        args: args.clone(),
        runs,
        peer_versions,
        installed,
        account,
    })
}

/// The sensor's own CPU over [`account::SESSIONS`] more tracked sessions (see `account`).
fn session_account(bench: &Bench, origin: &Path) -> Result<SessionAccount> {
    eprintln!(
        "xtask bench: overhead: the sensor's own CPU, counted over {} sessions",
        account::SESSIONS
    );
    let started = Started::start(bench, Tool::AgentSensor)?;
    let Running::Sensor(sensor) = &started.running else {
        bail!("agent-sensor did not start as a sensor");
    };
    let stats = account::BpfStats::enable()?;
    let (program_ns, program_runs) = account::program_totals(sensor.pid())?;
    let daemon = sensor.threads_cpu_seconds()?;
    let mut session_cpu = 0.0;
    for n in 0..account::SESSIONS {
        settle_before_session();
        session_cpu +=
            run_session_as_agent(bench, sensor, origin, &format!("account-{n}"))?.cpu_seconds;
    }
    let daemon = sensor.threads_cpu_seconds()? - daemon;
    let (program_ns_after, program_runs_after) = account::program_totals(sensor.pid())?;
    drop(stats);
    started.stop(bench)?;
    let per_session = account::SESSIONS as f64;
    Ok(SessionAccount {
        sessions: account::SESSIONS,
        program_seconds: program_ns_after.saturating_sub(program_ns) as f64 / 1e9 / per_session,
        program_runs: program_runs_after.saturating_sub(program_runs) / account::SESSIONS as u64,
        daemon_seconds: daemon / per_session,
        session_cpu_seconds: session_cpu / per_session,
    })
}

/// A tool started for a stretch of the bench, with the cgroup its tracked workloads join and
/// the directory it keeps its files in.
struct Started {
    tool: Tool,
    running: Running,
    cgroup: BenchCgroup,
    dir: std::path::PathBuf,
    /// Held while bpftrace runs.
    _tracefs: Option<super::host::Tracefs>,
}

impl Started {
    fn start(bench: &Bench, tool: Tool) -> Result<Self> {
        let name = tool.slug();
        let cgroup = BenchCgroup::create(&bench.cgroup_root, &format!("overhead-{name}"))?;
        let dir = bench.work.subdir(&format!("tool-{name}"))?;
        let tracefs = match tool {
            Tool::Bpftrace => Some(super::host::Tracefs::ensure()?),
            _ => None,
        };
        let running = match tool {
            Tool::None => Running::None,
            Tool::AgentSensor | Tool::AgentSensorEveryOpen => {
                Running::Sensor(RunningSensor::start_with(
                    &bench.sensor,
                    &dir,
                    &SensorOptions {
                        track_cgroups: vec![&cgroup.path],
                        alerts: true,
                        event_stream: true,
                        every_open: tool == Tool::AgentSensorEveryOpen,
                        ..SensorOptions::default()
                    },
                )?)
            }
            Tool::Bpftrace => Running::Bpftrace(Bpftrace::start(&dir, cgroup.id()?)?),
            Tool::Auditd => Running::Auditd(Auditd::start(&dir)?),
        };
        Ok(Self {
            tool,
            running,
            cgroup,
            dir,
            _tracefs: tracefs,
        })
    }

    fn variants(&self) -> &'static [Variant] {
        match self.tool {
            Tool::None => &[Variant::Plain],
            // Untracked, the window changes nothing.
            Tool::AgentSensorEveryOpen => &[Variant::Tracked],
            _ => &[Variant::Untracked, Variant::Tracked],
        }
    }

    /// Makes `cmd` tracked by this tool.
    fn track(&self, cmd: &mut Command) {
        match self.tool {
            Tool::AgentSensor | Tool::AgentSensorEveryOpen | Tool::Bpftrace => {
                self.cgroup.join_before_exec(cmd)
            }
            Tool::Auditd => peers::audit_before_exec(cmd),
            Tool::None => {}
        }
    }

    fn stop(self, bench: &Bench) -> Result<ToolTotals> {
        let totals = match self.running {
            Running::None => ToolTotals::None,
            Running::Sensor(sensor) => {
                let alerts = alerts_by_rule(&sensor.alerts_path());
                let totals = sensor.stop()?;
                super::cgroup::remove_agent_cgroups(&bench.cgroup_root);
                ToolTotals::Sensor { totals, alerts }
            }
            Running::Bpftrace(bpftrace) => {
                bpftrace.stop()?;
                ToolTotals::Bpftrace
            }
            Running::Auditd(auditd) => ToolTotals::Auditd(auditd.stop()?),
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(totals)
    }
}

/// One pass of `result`'s tool over the microbenchmarks: started, each run `args.runs` times
/// under it, stopped; the runs are added to `result`.
fn tool_run(
    bench: &Bench,
    args: &OverheadArgs,
    result: &mut ToolRun,
    pass: usize,
    port: u16,
) -> Result<()> {
    eprintln!(
        "xtask bench: overhead: {}{}, pass {}",
        result.tool.name(),
        if result.again { ", again" } else { "" },
        pass + 1
    );
    let started = Started::start(bench, result.tool)?;
    for i in 0..args.runs {
        let run = pass * args.runs + i;
        for micro in Micro::ALL {
            let full = match micro {
                Micro::OpenClose => args.open_close,
                Micro::TcpConnect => args.connects,
                Micro::ForkExec => args.execs,
            };
            for &variant in alternate(started.variants(), run) {
                let iterations = result
                    .capped
                    .iter()
                    .find(|(key, _)| *key == (micro, variant))
                    .map_or(full, |(_, n)| *n);
                let (ns, tool_cpu, other_cpu, wall) = measure(&started.running, || {
                    let mut cmd = micro.command(iterations, port)?;
                    if variant == Variant::Tracked {
                        started.track(&mut cmd);
                    }
                    let child = cmd.spawn().context("cannot start the workload")?;
                    Ok(workload::finish(child)?.ns_per_iteration)
                })?;
                if wall > RUN_SECONDS_CAP && iterations == full {
                    let scaled = (full as f64 * RUN_SECONDS_CAP / wall) as u64;
                    result
                        .capped
                        .push(((micro, variant), scaled.max(full / 20).max(1)));
                }
                let cell = result.cell_mut(Workload::Micro(micro), variant);
                cell.values.push(ns);
                cell.iterations.push(iterations);
                cell.tool_cpu += tool_cpu;
                cell.other_cpu += other_cpu;
                cell.wall += wall;
            }
        }
    }
    result.add_totals(started.stop(bench)?);
    Ok(())
}

/// The sessions, in rounds: each round starts every tool in turn (in an order that rotates
/// from round to round) and runs one session per configuration under it, then one more with
/// no sensor. A session moves by ±10 % with the host over minutes; within a round (some
/// seconds) far less, so every configuration is compared with the no-sensor sessions of its
/// own round (`Overhead::paired`).
fn session_rounds(
    bench: &Bench,
    args: &OverheadArgs,
    runs: &mut [ToolRun],
    again: &mut ToolRun,
    origin: &Path,
) -> Result<()> {
    for round in 0..args.session_runs {
        eprintln!(
            "xtask bench: overhead: sessions, round {} of {}",
            round + 1,
            args.session_runs
        );
        for i in 0..runs.len() {
            let result = &mut runs[(i + round) % runs.len()];
            let started = Started::start(bench, result.tool)?;
            for &variant in alternate(started.variants(), round) {
                session(bench, &started, result, variant, round, origin)?;
            }
            result.add_totals(started.stop(bench)?);
        }
        let started = Started::start(bench, Tool::None)?;
        session(bench, &started, again, Variant::Plain, round, origin)?;
        started.stop(bench)?;
    }
    Ok(())
}

/// How long the machine is left alone before a session, after `sync`: what the last session
/// left to the kernel (its files written back, its removed tree freed) is then done before
/// this one starts, not inside it.
const SESSION_SETTLE: Duration = Duration::from_millis(200);

/// `sync`, then `SESSION_SETTLE` of quiet: done before every timed or counted session.
fn settle_before_session() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(SESSION_SETTLE);
}

/// One timed session of `variant` under `started`, added to `result`.
fn session(
    bench: &Bench,
    started: &Started,
    result: &mut ToolRun,
    variant: Variant,
    round: usize,
    origin: &Path,
) -> Result<()> {
    let again_tag = if result.again { "-again" } else { "" };
    let name = started.tool.slug();
    let tag = format!("{name}{again_tag}-{}-{round}", variant.name());
    settle_before_session();
    let (took, tool_cpu, other_cpu, wall) =
        measure(&started.running, || match (&started.running, variant) {
            (Running::Sensor(sensor), Variant::Tracked) => {
                run_session_as_agent(bench, sensor, origin, &tag)
            }
            (_, Variant::Tracked) => run_session(bench, origin, &tag, &|mut cmd| {
                started.track(&mut cmd);
                cmd
            }),
            _ => run_session(bench, origin, &tag, &|cmd| cmd),
        })?;
    let cell = result.cell_mut(Workload::Session, variant);
    cell.values.push(took.wall.as_secs_f64());
    cell.host_cpu.push(took.cpu_seconds + tool_cpu);
    cell.rounds.push(round);
    cell.tool_cpu += tool_cpu;
    cell.other_cpu += other_cpu;
    cell.wall += wall;
    Ok(())
}

/// A microbenchmark run longer than this (a slow configuration: auditd's open/close loop
/// waits for its backlog) makes the following runs of the same configuration shorter, so
/// that it does not take most of the bench's time; ns per iteration stays comparable.
const RUN_SECONDS_CAP: f64 = 3.0;

/// The variants in this run's order: reversed every other run, so that a drift of the machine
/// over time does not always favour the same one.
fn alternate(variants: &[Variant], run: usize) -> &[Variant] {
    const REVERSED: [Variant; 2] = [Variant::Tracked, Variant::Untracked];
    if variants.len() == 2 && run % 2 == 1 {
        &REVERSED
    } else {
        variants
    }
}

/// Runs `work`; returns its value, the tool's CPU seconds meanwhile, other processes' CPU
/// seconds meanwhile (the tool's left out), and the wall time.
fn measure<T>(running: &Running, work: impl FnOnce() -> Result<T>) -> Result<(T, f64, f64, f64)> {
    let tool_before = running.cpu_seconds();
    let other = cpu::OtherCpu::start()?;
    let value = work()?;
    let tool = running.cpu_seconds() - tool_before;
    let others = other.seconds_excluding(tool)?;
    Ok((value, tool, others, other.elapsed_seconds()))
}

fn session_dir(bench: &Bench, tag: &str) -> Result<std::path::PathBuf> {
    bench.work.subdir(&format!("sessions/{tag}"))
}

/// One session run by `/bin/sh` directly, `prepare` applied to the command.
fn run_session(
    bench: &Bench,
    origin: &Path,
    tag: &str,
    prepare: &dyn Fn(Command) -> Command,
) -> Result<session::SessionTime> {
    let worktree = session_dir(bench, tag)?;
    let took = session::time(prepare(session::command(
        Command::new("/bin/sh"),
        origin,
        &worktree,
    )));
    let _ = std::fs::remove_dir_all(&worktree);
    took
}

/// One session run as an agent: `agent-sensor exec --agent bench-session-… -- /bin/sh -c …`.
fn run_session_as_agent(
    bench: &Bench,
    sensor: &RunningSensor,
    origin: &Path,
    tag: &str,
) -> Result<session::SessionTime> {
    let worktree = session_dir(bench, tag)?;
    let mut program = sensor.exec_command(&format!("bench-session-{tag}"), &worktree, None);
    program.arg("/bin/sh");
    let took = session::time(session::command(program, origin, &worktree));
    let _ = std::fs::remove_dir_all(&worktree);
    took
}

/// Alerts in a JSON-lines file, counted by rule, with the first one's summary.
fn alerts_by_rule(path: &Path) -> Vec<(String, u64, String)> {
    let mut counts: Vec<(String, u64, String)> = Vec::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let value = serde_json::from_str::<serde_json::Value>(line).unwrap_or_default();
        let rule = value["rule"].as_str().unwrap_or("unreadable").to_string();
        let summary = format!(
            "agent {}: {}",
            value["agent"].as_str().unwrap_or("?"),
            value["summary"].as_str().unwrap_or("?")
        );
        match counts.iter_mut().find(|(r, _, _)| *r == rule) {
            Some((_, n, _)) => *n += 1,
            None => counts.push((rule, 1, summary)),
        }
    }
    counts
}

// ---------------------------------------------------------------------------------------
// Results

/// Noise allowance for "within noise": at least this, more if the baseline moved more.
pub const NOISE_FLOOR: f64 = 0.02;
pub const TRACKED_MAX_OVERHEAD: f64 = 0.15;
pub const SESSION_MAX_OVERHEAD: f64 = 0.01;

/// The configurations compared with the baseline, in table and plot order.
pub const CONFIGS: [(Tool, Variant); 7] = [
    (Tool::AgentSensor, Variant::Untracked),
    (Tool::AgentSensor, Variant::Tracked),
    (Tool::AgentSensorEveryOpen, Variant::Tracked),
    (Tool::Bpftrace, Variant::Untracked),
    (Tool::Bpftrace, Variant::Tracked),
    (Tool::Auditd, Variant::Untracked),
    (Tool::Auditd, Variant::Tracked),
];

pub fn config_name(tool: Tool, variant: Variant) -> String {
    match variant {
        Variant::Plain => tool.name().to_string(),
        v => format!("{}, {}", tool.name(), v.name()),
    }
}

impl Overhead {
    fn tool_run(&self, tool: Tool, again: bool) -> Option<&ToolRun> {
        self.runs
            .iter()
            .find(|r| r.tool == tool && r.again == again)
    }

    pub fn cell(&self, tool: Tool, variant: Variant, workload: Workload) -> Option<&Cell> {
        self.tool_run(tool, false)?.cell(workload, variant)
    }

    /// The baseline: every no-sensor run, before and after the tools.
    pub fn baseline(&self, workload: Workload, metric: Metric) -> f64 {
        let values: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.tool == Tool::None)
            .filter_map(|r| r.cell(workload, Variant::Plain))
            .flat_map(|c| c.samples(metric).iter().copied())
            .collect();
        report::median(&values)
    }

    /// Median of the configuration over the baseline, minus one; for sessions paired by round
    /// (see [`Overhead::paired`]).
    pub fn overhead(
        &self,
        tool: Tool,
        variant: Variant,
        workload: Workload,
        metric: Metric,
    ) -> Option<f64> {
        let cell = self.cell(tool, variant, workload)?;
        self.cell_overhead(cell, metric)
    }

    fn cell_overhead(&self, cell: &Cell, metric: Metric) -> Option<f64> {
        if let Some(paired) = self.paired(cell, metric) {
            return Some(paired.overhead);
        }
        if cell.samples(metric).is_empty() {
            return None;
        }
        Some(cell.median(metric) / self.baseline(cell.workload, metric) - 1.0)
    }

    /// A session cell against the no-sensor sessions of the same rounds: per round, its
    /// session over the mean of that round's no-sensor ones (the one among the tools and the
    /// one that closes the round; the latter's own against the former). `None` for other
    /// workloads, or without two rounds to pair.
    pub fn paired(&self, cell: &Cell, metric: Metric) -> Option<Paired> {
        if cell.workload != Workload::Session {
            return None;
        }
        let baselines: Vec<&Cell> = self
            .runs
            .iter()
            .filter(|r| r.tool == Tool::None)
            .filter_map(|r| r.cell(Workload::Session, Variant::Plain))
            .filter(|b| !std::ptr::eq(*b, cell))
            .collect();
        let ratios: Vec<f64> = cell
            .rounds
            .iter()
            .zip(cell.samples(metric))
            .filter_map(|(&round, &value)| {
                let base: Vec<f64> = baselines
                    .iter()
                    .filter_map(|b| b.in_round(round, metric))
                    .collect();
                let mean = base.iter().sum::<f64>() / base.len() as f64;
                (!base.is_empty() && mean > 0.0).then(|| value / mean)
            })
            .collect();
        Paired::of(&ratios)
    }

    /// How far the baseline moved between its first and last runs (sessions: the paired
    /// overhead of the sessions that close the rounds).
    pub fn drift(&self, workload: Workload, metric: Metric) -> f64 {
        let first = self
            .tool_run(Tool::None, false)
            .and_then(|r| r.cell(workload, Variant::Plain));
        let last = self
            .tool_run(Tool::None, true)
            .and_then(|r| r.cell(workload, Variant::Plain));
        if let Some(paired) = last.and_then(|b| self.paired(b, metric)) {
            return paired.overhead;
        }
        match (first, last) {
            (Some(a), Some(b)) => b.median(metric) / a.median(metric) - 1.0,
            _ => 0.0,
        }
    }

    /// The noise an overhead is read against: the floor, the baseline's drift, or the spread
    /// (max−min over median) of the baseline's own runs, whichever is largest. (A session
    /// paired by round is read against its own interval instead, see `config_noise`.)
    pub fn noise(&self, workload: Workload, metric: Metric) -> f64 {
        let spread = self
            .runs
            .iter()
            .filter(|r| r.tool == Tool::None)
            .filter_map(|r| r.cell(workload, Variant::Plain))
            .map(|c| {
                let values = c.samples(metric);
                (report::max(values) - report::min(values)) / c.median(metric)
            })
            .fold(0.0, f64::max);
        NOISE_FLOOR
            .max(self.drift(workload, metric).abs())
            .max(spread)
    }

    /// What the tracked overhead of `tool` is read against: for sessions its own paired
    /// interval, for the rest the workload's noise.
    fn config_noise(&self, tool: Tool, workload: Workload, metric: Metric) -> f64 {
        self.cell(tool, Variant::Tracked, workload)
            .and_then(|cell| self.paired(cell, metric))
            .map_or_else(|| self.noise(workload, metric), |paired| paired.interval)
    }

    fn has_peers(&self) -> bool {
        self.tool_run(Tool::Bpftrace, false).is_some()
    }

    /// The session's host CPU includes the sensor's own work, which the count measures to a
    /// fraction of a percent (see `account`): a timed median below the limit while the count
    /// alone exceeds it is the timing's noise, and the target is missed.
    fn hold_to_the_count(&self, target: &mut Target) {
        let Some(account) = &self.account else {
            return;
        };
        if target.passed() == Some(true) && account.share() > SESSION_MAX_OVERHEAD {
            target.verdict = format!(
                "MISS: the timed median passes, but the sensor's own work, counted, is {} of \
                 the session's CPU",
                report::percent_plain(account.share())
            );
        }
    }

    pub fn targets(&self) -> Vec<Target> {
        use Metric::{HostCpu, Time};
        let mut targets = Vec::new();
        let session = Workload::Session;
        for (metric, what) in [(Time, "wall time"), (HostCpu, "host CPU")] {
            let Some(overhead) =
                self.overhead(Tool::AgentSensor, Variant::Tracked, session, metric)
            else {
                continue;
            };
            let noise = self.config_noise(Tool::AgentSensor, session, metric);
            let mut target = Target::limit(
                format!(
                    "realistic session under `agent-sensor exec`, {what}: ≤ {}",
                    percent(SESSION_MAX_OVERHEAD)
                ),
                overhead,
                SESSION_MAX_OVERHEAD,
                noise,
            );
            if metric == HostCpu {
                self.hold_to_the_count(&mut target);
            }
            targets.push(target);
        }
        targets.extend(self.account.as_ref().map(SessionAccount::target));
        for workload in &Workload::ALL[..3] {
            if let Some(o) = self.overhead(Tool::AgentSensor, Variant::Untracked, *workload, Time) {
                let noise = self.noise(*workload, Time);
                targets.push(Target::limit(
                    format!(
                        "{} untracked: within noise (≤ {})",
                        workload.short(),
                        percent(noise)
                    ),
                    o,
                    noise,
                    0.0,
                ));
            }
        }
        for workload in &Workload::ALL[..3] {
            if let Some(o) = self.overhead(Tool::AgentSensor, Variant::Tracked, *workload, Time) {
                targets.push(Target::limit(
                    format!(
                        "{} tracked: ≤ {}",
                        workload.short(),
                        percent(TRACKED_MAX_OVERHEAD)
                    ),
                    o,
                    TRACKED_MAX_OVERHEAD,
                    self.noise(*workload, Time),
                ));
            }
        }
        if !self.has_peers() {
            targets.push(Target {
                name: "agent-sensor ahead of bpftrace and auditd".into(),
                measured: "not measured (--no-peers)".into(),
                verdict: "NOT RUN".into(),
            });
            return targets;
        }
        let compared = Workload::ALL
            .iter()
            .map(|&w| (w, Time, w.short().to_string()))
            .chain([(session, HostCpu, "session, host CPU".to_string())]);
        for (workload, metric, label) in compared {
            let of = |tool| self.overhead(tool, Variant::Tracked, workload, metric);
            let (Some(ours), Some(bpf), Some(audit)) =
                (of(Tool::AgentSensor), of(Tool::Bpftrace), of(Tool::Auditd))
            else {
                continue;
            };
            let ahead = ours < bpf && ours < audit;
            // The closest peer decides; a gap smaller than the noise is said to be.
            let gap = (bpf.min(audit) - ours).abs();
            let closest = if bpf <= audit {
                Tool::Bpftrace
            } else {
                Tool::Auditd
            };
            let noise = self
                .config_noise(Tool::AgentSensor, workload, metric)
                .max(self.config_noise(closest, workload, metric));
            let note = if gap < noise {
                format!(" (within the noise of ±{})", report::percent_plain(noise))
            } else {
                String::new()
            };
            targets.push(Target {
                name: format!("{label}: agent-sensor ahead of bpftrace and auditd (tracked)"),
                measured: format!(
                    "{} vs. {} (bpftrace) and {} (auditd)",
                    percent(ours),
                    percent(bpf),
                    percent(audit)
                ),
                verdict: if ahead {
                    format!("PASS{note}")
                } else {
                    let behind: Vec<&str> = [("bpftrace", bpf), ("auditd", audit)]
                        .iter()
                        .filter(|(_, o)| ours >= *o)
                        .map(|(n, _)| *n)
                        .collect();
                    format!("MISS (behind {}){note}", behind.join(" and "))
                },
            });
        }
        targets
    }

    /// (workload, [(config label, overhead)]) for the plot.
    pub fn plot_data(&self) -> Vec<super::plot::Panel> {
        Workload::ALL
            .iter()
            .map(|&workload| {
                let bars = CONFIGS
                    .iter()
                    .filter_map(|&(tool, variant)| {
                        Some((
                            tool,
                            variant,
                            self.overhead(tool, variant, workload, Metric::Time)?,
                        ))
                    })
                    .collect();
                (workload.short().to_string(), bars)
            })
            .collect()
    }

    /// One row per configuration of `workload` by `metric`.
    fn render_table(&self, out: &mut Vec<String>, workload: Workload, metric: Metric) {
        let versus_ours = match metric {
            Metric::Time => "time",
            Metric::HostCpu => "CPU",
        };
        out.push(format!(
            "| configuration | median | min–max | vs. no sensor | {versus_ours} vs. agent-sensor \
             (same variant) | tool CPU (cores) | other CPU (cores) |"
        ));
        out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: |".into());
        let baseline = self.baseline(workload, metric);
        for run in &self.runs {
            for cell in run.cells.iter().filter(|c| c.workload == workload) {
                let name = if run.again {
                    "no sensor, again".to_string()
                } else {
                    config_name(run.tool, cell.variant)
                };
                let median = cell.median(metric);
                let versus = match self.paired(cell, metric) {
                    Some(paired) => format!(
                        "{} ± {}",
                        percent(paired.overhead),
                        report::percent_plain(paired.interval)
                    ),
                    None => percent(median / baseline - 1.0),
                };
                let versus = if run.tool == Tool::None {
                    versus
                } else {
                    format!("**{versus}**")
                };
                let ratio = match run.tool {
                    Tool::Bpftrace | Tool::Auditd => self
                        .cell(Tool::AgentSensor, cell.variant, workload)
                        .map_or("—".into(), |ours| {
                            format!("{:.2}×", median / ours.median(metric))
                        }),
                    _ => "—".into(),
                };
                let samples = cell.samples(metric);
                out.push(format!(
                    "| {name} | {} | {}–{} | {versus} | {ratio} | {:.2} | {:.2} |",
                    value(workload, median),
                    value(workload, report::min(samples)),
                    value(workload, report::max(samples)),
                    cell.tool_cores(),
                    cell.other_cores(),
                ));
            }
        }
        out.push(String::new());
    }

    fn render_noise(&self, out: &mut Vec<String>, workload: Workload, metric: Metric) {
        if workload == Workload::Session {
            out.push(format!(
                "\"vs. no sensor\" is paired by round: the median over the rounds of each \
                 session over its round's no-sensor ones, ± half the width of that median's 95 % \
                 interval (1.58 × IQR / √n), the noise a target reads that configuration \
                 against (against the wider of the two when it is compared with a peer). The \
                 no-sensor sessions that close the rounds came out {} against the rest.",
                percent(self.drift(workload, metric)),
            ));
            out.push(String::new());
            return;
        }
        out.push(format!(
            "Baseline drift {}; noise allowance {} (the larger of {}, the drift and the \
             baseline runs' max−min spread).",
            percent(self.drift(workload, metric)),
            percent(self.noise(workload, metric)),
            percent(NOISE_FLOOR)
        ));
        out.push(String::new());
    }

    pub fn render(&self, plot: Option<&str>) -> String {
        let a = &self.args;
        let mut out = vec![
            report::heading(),
            format!(
                "(R = {} runs of each microbenchmark per configuration, over {} pass(es): {} \
                 open/close pairs, {} TCP connections, {} fork+exec; {} sessions per \
                 configuration, one per round)",
                a.runs.div_ceil(a.passes.max(1)) * a.passes.max(1),
                a.passes.max(1),
                thousands(a.open_close),
                thousands(a.connects),
                thousands(a.execs),
                a.session_runs
            ),
            String::new(),
        ];
        if !self.peer_versions.is_empty() {
            out.push(format!(
                "Peers: {} and auditd ({}), from Debian's packages{}.",
                self.peer_versions[0],
                self.peer_versions[1],
                if self.installed.is_empty() {
                    String::new()
                } else {
                    format!(" ({} installed by this run)", self.installed.join(", "))
                }
            ));
            out.push(String::new());
        }
        out.extend([
            format!("Configurations. For the microbenchmarks the tools take turns — no sensor, \
             agent-sensor, bpftrace, auditd — in one or more passes, so that a load that comes \
             and goes on the machine meets each alike; each pass starts a tool once and runs \
             every microbenchmark under it, with the workload outside the tool's filter \
             (*untracked*) and inside it (*tracked*), the two alternating. *No sensor* runs once \
             more at the end (\"no sensor, again\"); \"vs. no sensor\" is against the median of \
             every no-sensor run, and how far the last moved from the earlier ones is the \
             baseline's drift. Sessions run in rounds instead: each round starts every tool in \
             turn (the order rotating from round to round), runs one session per configuration \
             under it, and closes with one more session with no sensor (\"no sensor, again\"); \
             each session is compared with its own round's no-sensor ones, seconds away rather \
             than minutes. Before every session the bench runs `sync` and waits {} s, so that \
             what the last session left to the kernel (its writes, its removed tree) is not \
             done inside the next.",
             SESSION_SETTLE.as_secs_f64()),
            String::new(),
            "- **agent-sensor**: `agent-sensor run --events /dev/null --alerts FILE \
             --track-cgroup <cgroup> --metrics-addr none` with a state dir and control socket \
             of its own; the default policy. Tracked microbenchmarks join the tracked cgroup \
             before they exec; a tracked session runs under `agent-sensor exec --agent NAME \
             --worktree DIR -- /bin/sh -c …` (registration included in its time). By \
             default the kernel counts, and does not send, an open a process repeats the same \
             way within a second of one it sent (`--repeat-window-ms`, 1000)."
                .into(),
            "- **agent-sensor (every open sent)**: the same with `--repeat-window-ms 0`, \
             tracked only: every open is sent, the open/close loop's included. Reported beside \
             the default, not judged against the targets."
                .into(),
            "- **bpftrace**: a script printing one line per event to user space (`bpftrace -o \
             /dev/null`): opens with path and result (paired at exit, as the sensor pairs \
             them; like the sensor, not those whose path named nothing: ENOENT, ENOTDIR), unlink/rename/mkdir/chmod/link/symlink/truncate/chdir, connect/bind/listen/\
             accept/sendto/sendmsg, the close of sockets, exec, fork and exit; every probe \
             filtered on the workload's cgroup id (`/cgroup == ID/`). Tracked: the workload \
             joins that cgroup."
                .into(),
            format!(
                "- **auditd**: `auditctl -a always,exit -F arch=b64 -S <the same calls, with \
                 execve and clone/fork> -F exit!=-ENOENT -F exit!=-ENOTDIR -F auid={} -k {}` \
                 (like the sensor, not calls whose path named nothing), auditd logging to a file (started by \
                 the bench with Debian's auditd.conf if none was running, backlog 8192). Tracked: \
                 the workload takes login uid {} before it execs, which every descendant \
                 inherits. Audit cannot tell a socket's close from any other, so close is not \
                 audited.",
                peers::BENCH_AUID,
                peers::AUDIT_KEY,
                peers::BENCH_AUID
            ),
            String::new(),
            "Workloads, each a process of its own started by the bench: (a) `open(\"/dev/null\")` \
             + `close`; (b) `socket` + `connect` to a listener on 127.0.0.1 in the bench process \
             + `close` (SO_LINGER 0, so no TIME_WAIT piles up); (c) `fork` + `execve(\"/bin/\
             true\")` + `waitpid`; each timed around the loop only, after 1 % untimed \
             iterations (10,000 for (a)). (d) a coding-agent session in a fresh directory: \
             `git clone file://…` of a local bare repository holding a small Rust crate, edit two files \
             (sed, a heredoc), `cargo build --offline`, `cargo test --offline`, `grep -rn`, \
             `git grep`, `git status`, `git diff`, `git add`, `git commit`, `git log`, timed \
             from start to exit; one untimed session first warms the caches."
                .into(),
            String::new(),
            "\"Tool CPU\" is the tool's user-space process (for auditd also the kernel's \
             kauditd thread) over the runs' wall time; what a tool costs inside the workload's \
             own syscalls shows in the workload's time. \"Other CPU\" is what everything else \
             on the host used meanwhile (host busy time from /proc/stat minus the bench, its \
             children and the tool): a build beside the bench shows there."
                .into(),
            String::new(),
        ]);
        for workload in Workload::ALL {
            out.push(format!("#### {} — {}", workload.name(), workload.unit()));
            out.push(String::new());
            self.render_table(&mut out, workload, Metric::Time);
            for run in &self.runs {
                for cell in run.cells.iter().filter(|c| c.workload == workload) {
                    let full = cell.iterations.first().copied().unwrap_or(0);
                    if cell.iterations.iter().any(|&n| n != full) {
                        out.push(format!(
                            "{}: the first run took longer than {RUN_SECONDS_CAP:.0} s, so the \
                             others ran {} iterations each (instead of {}).  ",
                            config_name(run.tool, cell.variant),
                            thousands(*cell.iterations.last().unwrap_or(&0)),
                            thousands(full)
                        ));
                    }
                }
            }
            self.render_noise(&mut out, workload, Metric::Time);
        }
        let session = Workload::Session;
        if self.baseline(session, Metric::HostCpu) > 0.0 {
            out.push(format!("#### {} — host CPU s/session", session.name()));
            out.push(String::new());
            out.push(
                "The same sessions, by the CPU each cost the host: user plus system time of the \
                 session's processes (from `wait4` of its shell, which counts every descendant \
                 waited for) plus the tool's own CPU while it ran (its threads' scheduler time; \
                 for auditd with kauditd's). What a tool costs inside the session's syscalls \
                 is in the first part, its own work in the second; unlike wall time neither \
                 depends much on how the two cores were shared meanwhile."
                    .into(),
            );
            out.push(String::new());
            self.render_table(&mut out, session, Metric::HostCpu);
            self.render_noise(&mut out, session, Metric::HostCpu);
        }
        if let Some(account) = &self.account {
            account.render(&mut out);
        }

        out.push("#### overhead vs. no sensor (medians)".into());
        out.push(String::new());
        let configs: Vec<(Tool, Variant)> = CONFIGS
            .iter()
            .copied()
            .filter(|&(tool, variant)| self.cell(tool, variant, Workload::Session).is_some())
            .collect();
        out.push(format!(
            "| workload | {} | baseline drift |",
            configs
                .iter()
                .map(|&(t, v)| config_name(t, v))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
        out.push(format!("| --- |{} ---: |", " ---: |".repeat(configs.len())));
        let rows = Workload::ALL
            .iter()
            .map(|&w| (w, Metric::Time, w.short()))
            .chain([(session, Metric::HostCpu, "session, host CPU")]);
        for (workload, metric, label) in rows {
            let cells: Vec<String> = configs
                .iter()
                .map(|&(t, v)| {
                    self.overhead(t, v, workload, metric)
                        .map_or("—".into(), percent)
                })
                .collect();
            out.push(format!(
                "| {label} | {} | {} |",
                cells.join(" | "),
                percent(self.drift(workload, metric))
            ));
        }
        out.push(String::new());
        if let Some(plot) = plot {
            out.push(format!(
                "![Overhead vs. no sensor per workload and configuration]({plot})"
            ));
            out.push(String::new());
            out.push(format!(
                "[{plot}]({plot}) is drawn by the same command from the medians above."
            ));
            out.push(String::new());
        }

        out.push("#### what the tools recorded".into());
        out.push(String::new());
        for run in &self.runs {
            match &run.totals {
                ToolTotals::Sensor { totals, alerts } => {
                    out.push(format!(
                        "- agent-sensor: {} events decoded, {} dropped by the kernel (ring \
                         buffer full), {} undecodable; alerts: {}.",
                        thousands(totals.events),
                        thousands(totals.kernel_dropped),
                        thousands(totals.undecodable),
                        if alerts.is_empty() {
                            "none".to_string()
                        } else {
                            alerts
                                .iter()
                                .map(|(rule, n, first)| {
                                    format!("{n} × `{rule}` (the first: \"{first}\")")
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ));
                }
                ToolTotals::Bpftrace => out.push(
                    "- bpftrace: its output, lost-event notices included, goes to /dev/null, so \
                     what it printed or lost is not counted."
                        .into(),
                ),
                ToolTotals::Auditd(audit) => out.push(format!(
                    "- auditd: {} records lost by the kernel (`lost` of `auditctl -s`); {}.",
                    thousands(audit.lost),
                    audit.log_lines.map_or(
                        "the running system auditd's log was not counted".into(),
                        |n| format!("{} log lines written", thousands(n))
                    )
                )),
                ToolTotals::None => {}
            }
        }
        out.push(String::new());
        out.push("#### targets".into());
        out.push(String::new());
        out.extend(report::targets_table(&self.targets()));
        out.push(String::new());
        out.join("\n")
    }
}

/// A configuration's sessions over its rounds' no-sensor ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paired {
    /// The median ratio, minus one.
    pub overhead: f64,
    /// Half the width of the median's 95 % interval, 1.58 × IQR / √n (a box plot's notch:
    /// two medians whose notches do not overlap differ at about that confidence).
    pub interval: f64,
    pub rounds: usize,
}

impl Paired {
    fn of(ratios: &[f64]) -> Option<Self> {
        if ratios.len() < 2 {
            return None;
        }
        let quartile = |q| report::percentile(ratios, q).unwrap_or(f64::NAN);
        let iqr = quartile(0.75) - quartile(0.25);
        Some(Self {
            overhead: report::median(ratios) - 1.0,
            interval: 1.58 * iqr / (ratios.len() as f64).sqrt(),
            rounds: ratios.len(),
        })
    }
}

fn value(workload: Workload, v: f64) -> String {
    match workload {
        Workload::Micro(_) => format!("{v:.1}"),
        Workload::Session => format!("{v:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_cell(variant: Variant, wall: &[(usize, f64)]) -> Cell {
        Cell {
            workload: Workload::Session,
            variant,
            values: wall.iter().map(|&(_, v)| v).collect(),
            host_cpu: wall.iter().map(|&(_, v)| 2.0 * v).collect(),
            rounds: wall.iter().map(|&(r, _)| r).collect(),
            iterations: Vec::new(),
            tool_cpu: 0.0,
            other_cpu: 0.0,
            wall: 0.0,
        }
    }

    fn run(tool: Tool, again: bool, cells: Vec<Cell>) -> ToolRun {
        ToolRun {
            cells,
            ..ToolRun::new(tool, again)
        }
    }

    #[test]
    fn sessions_are_compared_with_their_own_rounds_baseline() {
        // The host's speed changes by up to half from round to round; the sensor adds 10 %.
        // Unpaired medians would mix rounds; paired, every round says +10 %.
        let speeds = [1.0, 1.5, 2.25, 1.0, 1.5];
        let at = |k: f64| -> Vec<(usize, f64)> {
            speeds.iter().enumerate().map(|(r, s)| (r, s * k)).collect()
        };
        let overhead = Overhead {
            args: OverheadArgs::quick(),
            runs: vec![
                run(
                    Tool::None,
                    false,
                    vec![session_cell(Variant::Plain, &at(1.0))],
                ),
                run(
                    Tool::AgentSensor,
                    false,
                    vec![
                        session_cell(Variant::Untracked, &at(1.0)),
                        session_cell(Variant::Tracked, &at(1.1)),
                    ],
                ),
                run(
                    Tool::None,
                    true,
                    vec![session_cell(Variant::Plain, &at(1.0))],
                ),
            ],
            peer_versions: Vec::new(),
            installed: Vec::new(),
            account: None,
        };
        let tracked = overhead
            .cell(Tool::AgentSensor, Variant::Tracked, Workload::Session)
            .unwrap();
        for metric in [Metric::Time, Metric::HostCpu] {
            let paired = overhead.paired(tracked, metric).unwrap();
            assert!((paired.overhead - 0.1).abs() < 1e-9, "{paired:?}");
            assert!(paired.interval.abs() < 1e-9);
            assert_eq!(paired.rounds, 5);
            let untracked = overhead
                .overhead(
                    Tool::AgentSensor,
                    Variant::Untracked,
                    Workload::Session,
                    metric,
                )
                .unwrap();
            assert!(untracked.abs() < 1e-9);
            assert!(overhead.drift(Workload::Session, metric).abs() < 1e-9);
        }
        // A round without a no-sensor session pairs with nothing.
        let lone = session_cell(Variant::Tracked, &[(7, 1.0), (8, 1.0)]);
        assert_eq!(overhead.paired(&lone, Metric::Time), None);
    }

    #[test]
    fn a_host_cpu_pass_the_count_contradicts_is_a_miss() {
        let rounds: Vec<(usize, f64)> = (0..5).map(|r| (r, 1.0)).collect();
        let overhead = |share: f64| Overhead {
            args: OverheadArgs::quick(),
            runs: vec![
                run(
                    Tool::None,
                    false,
                    vec![session_cell(Variant::Plain, &rounds)],
                ),
                run(
                    Tool::AgentSensor,
                    false,
                    vec![session_cell(Variant::Tracked, &rounds)],
                ),
            ],
            peer_versions: Vec::new(),
            installed: Vec::new(),
            account: Some(account::SessionAccount {
                sessions: 5,
                program_seconds: 0.0,
                program_runs: 0,
                daemon_seconds: share,
                session_cpu_seconds: 1.0,
            }),
        };
        let host_cpu = |share: f64| {
            overhead(share)
                .targets()
                .into_iter()
                .find(|t| t.name.contains("host CPU: ≤"))
                .unwrap()
        };
        // Timed: +0 %. Counted: 0.5 % agrees with it; 3 % does not.
        assert_eq!(host_cpu(0.005).passed(), Some(true));
        let contradicted = host_cpu(0.03);
        assert_eq!(contradicted.passed(), Some(false));
        assert!(
            contradicted.verdict.contains("3.0 %"),
            "{}",
            contradicted.verdict
        );
        // Wall time is not held to it.
        let wall = overhead(0.03).targets();
        let wall = wall.iter().find(|t| t.name.contains("wall time")).unwrap();
        assert_eq!(wall.passed(), Some(true));
    }

    #[test]
    fn the_interval_grows_with_the_spread_and_shrinks_with_the_rounds() {
        let spread = [0.9, 1.0, 1.1, 1.2];
        let few = Paired::of(&spread).unwrap();
        let many = Paired::of(&spread.repeat(4)).unwrap();
        assert!(few.interval > 0.0);
        assert!((many.interval - few.interval / 2.0).abs() < 1e-9);
        assert_eq!(Paired::of(&[1.0]), None);
    }
}
