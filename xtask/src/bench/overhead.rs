//! Overhead per workload and configuration: the three microbenchmarks and the realistic
//! session, with no sensor, agent-sensor, bpftrace and auditd, each tool with the workload
//! outside its filter (untracked) and inside (tracked). Each tool is started once and every
//! workload runs R times under it, untracked and tracked alternating; the no-sensor baseline
//! runs first and again last.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result};

use super::{
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
    /// Sessions (workload d) per configuration. A session varies by ±10 % from run to run on
    /// the 2-core VM: a dozen gives a median that a 1 % target can be read against.
    #[arg(long, default_value_t = 12)]
    pub session_runs: usize,
    /// Passes over the tools (no sensor, agent-sensor, bpftrace, auditd, then again): the
    /// runs are spread over them, so that a load that comes and goes on the machine meets
    /// every tool alike.
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
    Bpftrace,
    Auditd,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::None => "no sensor",
            Tool::AgentSensor => "agent-sensor",
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
    /// Timed iterations of each run (microbenchmarks).
    pub iterations: Vec<u64>,
    tool_cpu: f64,
    other_cpu: f64,
    wall: f64,
}

impl Cell {
    pub fn median(&self) -> f64 {
        report::median(&self.values)
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
}

/// A running tool.
enum Running {
    None,
    Sensor(RunningSensor),
    Bpftrace(Bpftrace),
    Auditd(Auditd),
}

impl Running {
    fn cpu_seconds(&self) -> f64 {
        match self {
            Running::None => 0.0,
            Running::Sensor(s) => cpu::process_seconds(s.pid()),
            Running::Bpftrace(b) => cpu::process_seconds(b.pid()),
            Running::Auditd(a) => a.cpu_seconds(),
        }
    }
}

pub fn run(bench: &Bench, args: &OverheadArgs) -> Result<Overhead> {
    let mut tools = vec![Tool::None, Tool::AgentSensor];
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
        session_runs: args.session_runs.div_ceil(passes),
        ..args.clone()
    };
    let mut runs: Vec<ToolRun> = tools.iter().map(|&t| ToolRun::new(t, false)).collect();
    for pass in 0..passes {
        for run in &mut runs {
            tool_run(bench, &pass_args, run, pass, listener.port, &origin)?;
        }
    }
    let mut again = ToolRun::new(Tool::None, true);
    tool_run(
        bench,
        &pass_args,
        &mut again,
        passes,
        listener.port,
        &origin,
    )?;
    runs.push(again);
    Ok(Overhead {
        args: args.clone(),
        runs,
        peer_versions,
        installed,
    })
}

/// One pass of `result`'s tool: started, every workload run `args.runs` times (sessions
/// `args.session_runs` times) under it, stopped; the runs are added to `result`.
fn tool_run(
    bench: &Bench,
    args: &OverheadArgs,
    result: &mut ToolRun,
    pass: usize,
    port: u16,
    origin: &Path,
) -> Result<()> {
    let (tool, again) = (result.tool, result.again);
    let name = tool.name().replace(' ', "-");
    eprintln!(
        "xtask bench: overhead: {}{}, pass {}",
        tool.name(),
        if again { ", again" } else { "" },
        pass + 1
    );
    let cgroup = BenchCgroup::create(&bench.cgroup_root, &format!("overhead-{name}"))?;
    let dir = bench.work.subdir(&format!("tool-{name}"))?;
    // Held while bpftrace runs.
    let _tracefs = match tool {
        Tool::Bpftrace => Some(super::host::Tracefs::ensure()?),
        _ => None,
    };
    let running = match tool {
        Tool::None => Running::None,
        Tool::AgentSensor => Running::Sensor(RunningSensor::start_with(
            &bench.sensor,
            &dir,
            &SensorOptions {
                track_cgroups: vec![&cgroup.path],
                alerts: true,
                event_stream: true,
                ..SensorOptions::default()
            },
        )?),
        Tool::Bpftrace => Running::Bpftrace(Bpftrace::start(&dir, cgroup.id()?)?),
        Tool::Auditd => Running::Auditd(Auditd::start(&dir)?),
    };
    let variants: &[Variant] = match tool {
        Tool::None => &[Variant::Plain],
        _ => &[Variant::Untracked, Variant::Tracked],
    };
    // How a command is made tracked by this tool.
    let track = |cmd: &mut Command| match tool {
        Tool::AgentSensor | Tool::Bpftrace => cgroup.join_before_exec(cmd),
        Tool::Auditd => peers::audit_before_exec(cmd),
        Tool::None => {}
    };
    for i in 0..args.runs {
        let run = pass * args.runs + i;
        for micro in Micro::ALL {
            let full = match micro {
                Micro::OpenClose => args.open_close,
                Micro::TcpConnect => args.connects,
                Micro::ForkExec => args.execs,
            };
            for &variant in alternate(variants, run) {
                let iterations = result
                    .capped
                    .iter()
                    .find(|(key, _)| *key == (micro, variant))
                    .map_or(full, |(_, n)| *n);
                let (ns, tool_cpu, other_cpu, wall) = measure(&running, || {
                    let mut cmd = micro.command(iterations, port)?;
                    if variant == Variant::Tracked {
                        track(&mut cmd);
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
    for i in 0..args.session_runs {
        let run = pass * args.session_runs + i;
        for &variant in alternate(variants, run) {
            let again_tag = if again { "-again" } else { "" };
            let tag = format!("{name}{again_tag}-{}-{run}", variant.name());
            let (seconds, tool_cpu, other_cpu, wall) = measure(&running, || {
                let took = match (&running, variant) {
                    (Running::Sensor(sensor), Variant::Tracked) => {
                        run_session_as_agent(bench, sensor, origin, &tag)?
                    }
                    (_, Variant::Tracked) => run_session(bench, origin, &tag, &|mut cmd| {
                        track(&mut cmd);
                        cmd
                    })?,
                    _ => run_session(bench, origin, &tag, &|cmd| cmd)?,
                };
                Ok(took.as_secs_f64())
            })?;
            let cell = result.cell_mut(Workload::Session, variant);
            cell.values.push(seconds);
            cell.tool_cpu += tool_cpu;
            cell.other_cpu += other_cpu;
            cell.wall += wall;
        }
    }
    let totals = match running {
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
    result.add_totals(totals);
    let _ = std::fs::remove_dir_all(&dir);
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
fn measure(running: &Running, work: impl FnOnce() -> Result<f64>) -> Result<(f64, f64, f64, f64)> {
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
) -> Result<Duration> {
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
) -> Result<Duration> {
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
pub const CONFIGS: [(Tool, Variant); 6] = [
    (Tool::AgentSensor, Variant::Untracked),
    (Tool::AgentSensor, Variant::Tracked),
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
    pub fn baseline(&self, workload: Workload) -> f64 {
        let values: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.tool == Tool::None)
            .filter_map(|r| r.cell(workload, Variant::Plain))
            .flat_map(|c| c.values.iter().copied())
            .collect();
        report::median(&values)
    }

    /// Median of the configuration over the baseline, minus one.
    pub fn overhead(&self, tool: Tool, variant: Variant, workload: Workload) -> Option<f64> {
        let cell = self.cell(tool, variant, workload)?;
        Some(cell.median() / self.baseline(workload) - 1.0)
    }

    /// How far the baseline moved between its first and last runs.
    pub fn drift(&self, workload: Workload) -> f64 {
        let first = self
            .tool_run(Tool::None, false)
            .and_then(|r| r.cell(workload, Variant::Plain));
        let last = self
            .tool_run(Tool::None, true)
            .and_then(|r| r.cell(workload, Variant::Plain));
        match (first, last) {
            (Some(a), Some(b)) => b.median() / a.median() - 1.0,
            _ => 0.0,
        }
    }

    /// The noise an overhead is read against: the floor, the baseline's drift, or the spread
    /// (max−min over median) of the baseline's own runs, whichever is largest.
    pub fn noise(&self, workload: Workload) -> f64 {
        let spread = self
            .runs
            .iter()
            .filter(|r| r.tool == Tool::None)
            .filter_map(|r| r.cell(workload, Variant::Plain))
            .map(|c| (report::max(&c.values) - report::min(&c.values)) / c.median())
            .fold(0.0, f64::max);
        NOISE_FLOOR.max(self.drift(workload).abs()).max(spread)
    }

    fn has_peers(&self) -> bool {
        self.tool_run(Tool::Bpftrace, false).is_some()
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let session = Workload::Session;
        if let Some(o) = self.overhead(Tool::AgentSensor, Variant::Tracked, session) {
            targets.push(Target::limit(
                format!(
                    "realistic session under `agent-sensor exec`: ≤ {}",
                    percent(SESSION_MAX_OVERHEAD)
                ),
                o,
                SESSION_MAX_OVERHEAD,
                self.noise(session),
            ));
        }
        for workload in &Workload::ALL[..3] {
            if let Some(o) = self.overhead(Tool::AgentSensor, Variant::Untracked, *workload) {
                let noise = self.noise(*workload);
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
            if let Some(o) = self.overhead(Tool::AgentSensor, Variant::Tracked, *workload) {
                targets.push(Target::limit(
                    format!(
                        "{} tracked: ≤ {}",
                        workload.short(),
                        percent(TRACKED_MAX_OVERHEAD)
                    ),
                    o,
                    TRACKED_MAX_OVERHEAD,
                    self.noise(*workload),
                ));
            }
        }
        if self.has_peers() {
            for workload in Workload::ALL {
                let ours = self.overhead(Tool::AgentSensor, Variant::Tracked, workload);
                let bpf = self.overhead(Tool::Bpftrace, Variant::Tracked, workload);
                let audit = self.overhead(Tool::Auditd, Variant::Tracked, workload);
                if let (Some(ours), Some(bpf), Some(audit)) = (ours, bpf, audit) {
                    let ahead = ours < bpf && ours < audit;
                    // The closest peer decides; a gap smaller than the noise is said to be.
                    let gap = (bpf.min(audit) - ours).abs();
                    let noise = self.noise(workload);
                    let note = if gap < noise {
                        format!(" (within the noise of ±{})", report::percent_plain(noise))
                    } else {
                        String::new()
                    };
                    targets.push(Target {
                        name: format!(
                            "{}: agent-sensor ahead of bpftrace and auditd (tracked)",
                            workload.short()
                        ),
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
            }
        } else {
            targets.push(Target {
                name: "agent-sensor ahead of bpftrace and auditd".into(),
                measured: "not measured (--no-peers)".into(),
                verdict: "NOT RUN".into(),
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
                        Some((tool, variant, self.overhead(tool, variant, workload)?))
                    })
                    .collect();
                (workload.short().to_string(), bars)
            })
            .collect()
    }

    pub fn render(&self, plot: Option<&str>) -> String {
        let a = &self.args;
        let mut out = vec![
            report::heading(),
            format!(
                "(R = {} runs of each microbenchmark per configuration, over {} pass(es): {} \
                 open/close pairs, {} TCP connections, {} fork+exec; {} sessions per \
                 configuration)",
                a.runs.div_ceil(a.passes.max(1)) * a.passes.max(1),
                a.passes.max(1),
                thousands(a.open_close),
                thousands(a.connects),
                thousands(a.execs),
                a.session_runs.div_ceil(a.passes.max(1)) * a.passes.max(1)
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
            "Configurations. The tools take turns — no sensor, agent-sensor, bpftrace, \
             auditd — in one or more passes, so that a load that comes and goes on the machine \
             meets each alike; each pass starts a tool once and runs every workload under it, \
             with the workload outside the tool's filter (*untracked*) and inside it \
             (*tracked*), the two alternating. *No sensor* runs once more at the end (\"no \
             sensor, again\"); \"vs. no sensor\" is against the median of every no-sensor \
             run, and how far the last moved from the earlier ones is the baseline's drift."
                .to_string(),
            String::new(),
            "- **agent-sensor**: `agent-sensor run --events /dev/null --alerts FILE \
             --track-cgroup <cgroup> --metrics-addr none` with a state dir and control socket \
             of its own; the default policy. Tracked microbenchmarks join the tracked cgroup \
             before they exec; a tracked session runs under `agent-sensor exec --agent NAME \
             --worktree DIR -- /bin/sh -c …` (registration included in its time)."
                .into(),
            "- **bpftrace**: a script printing one line per event to user space (`bpftrace -o \
             /dev/null`): opens with path and result (paired at exit, as the sensor pairs \
             them), unlink/rename/mkdir/chmod/link/symlink/truncate/chdir, connect/bind/listen/\
             accept/sendto/sendmsg, the close of sockets, exec, fork and exit; every probe \
             filtered on the workload's cgroup id (`/cgroup == ID/`). Tracked: the workload \
             joins that cgroup."
                .into(),
            format!(
                "- **auditd**: `auditctl -a always,exit -F arch=b64 -S <the same calls, with \
                 execve and clone/fork> -F auid={} -k {}`, auditd logging to a file (started by \
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
            out.push(
                "| configuration | median | min–max | vs. no sensor | time vs. agent-sensor \
                 (same variant) | tool CPU (cores) | other CPU (cores) |"
                    .into(),
            );
            out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: |".into());
            let baseline = self.baseline(workload);
            for run in &self.runs {
                for cell in run.cells.iter().filter(|c| c.workload == workload) {
                    let name = if run.again {
                        "no sensor, again".to_string()
                    } else {
                        config_name(run.tool, cell.variant)
                    };
                    let versus = if run.tool == Tool::None {
                        percent(cell.median() / baseline - 1.0)
                    } else {
                        format!("**{}**", percent(cell.median() / baseline - 1.0))
                    };
                    let ratio = match run.tool {
                        Tool::Bpftrace | Tool::Auditd => self
                            .cell(Tool::AgentSensor, cell.variant, workload)
                            .map_or("—".into(), |ours| {
                                format!("{:.2}×", cell.median() / ours.median())
                            }),
                        _ => "—".into(),
                    };
                    out.push(format!(
                        "| {name} | {} | {}–{} | {versus} | {ratio} | {:.2} | {:.2} |",
                        value(workload, cell.median()),
                        value(workload, report::min(&cell.values)),
                        value(workload, report::max(&cell.values)),
                        cell.tool_cores(),
                        cell.other_cores(),
                    ));
                }
            }
            out.push(String::new());
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
            out.push(format!(
                "Baseline drift {}; noise allowance {} (the larger of {}, the drift and the \
                 baseline runs' max−min spread).",
                percent(self.drift(workload)),
                percent(self.noise(workload)),
                percent(NOISE_FLOOR)
            ));
            out.push(String::new());
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
        for workload in Workload::ALL {
            let cells: Vec<String> = configs
                .iter()
                .map(|&(t, v)| self.overhead(t, v, workload).map_or("—".into(), percent))
                .collect();
            out.push(format!(
                "| {} | {} | {} |",
                workload.short(),
                cells.join(" | "),
                percent(self.drift(workload))
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

fn value(workload: Workload, v: f64) -> String {
    match workload {
        Workload::Micro(_) => format!("{v:.1}"),
        Workload::Session => format!("{v:.3}"),
    }
}
