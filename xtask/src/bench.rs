//! `cargo xtask bench`: what the sensor costs and how it performs, measured on this machine with
//! the real kernel, beside its peers (bpftrace, auditd); every section of BENCHMARKS.md is
//! rewritten with the results, and the overhead plot redrawn. `cargo xtask bench <section>`
//! reruns one section:
//!
//! - `overhead`: four workloads (open/close, loopback TCP connect/close, fork+exec, a
//!   coding-agent session) with no sensor, agent-sensor, bpftrace and auditd, untracked and
//!   tracked ([`overhead`]); the plot ([`plot`]);
//! - `ingest`: the sustained event rate without loss and the loss above it ([`ingest`]);
//! - `latency`: detection and containment latency, idle and under load ([`latency`]);
//! - `scaling`: sensor CPU and memory with 1, 10 and 100 agents ([`scaling`]);
//! - `capture`: the open/close loop with no sensor, untracked and tracked, and the decode rate
//!   of tracked loops at full speed;
//! - `soak`: 10 minutes at the rated event rate with a scripted attack every 30 s: memory
//!   flat, nothing lost, every attack detected ([`soak`]). Only on its own: a full run does
//!   not include it (it would add 10 minutes), and keeps its section as it was.

mod account;
mod cgroup;
mod cpu;
mod host;
mod ingest;
mod latency;
mod metrics;
mod overhead;
mod peers;
mod plot;
mod png;
mod report;
mod scaling;
mod sensor;
mod session;
mod soak;
pub mod workload;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;

use self::{
    cgroup::BenchCgroup,
    host::WorkDir,
    ingest::IngestArgs,
    latency::LatencyArgs,
    overhead::OverheadArgs,
    report::{Machine, Section, Target},
    scaling::ScalingArgs,
    sensor::{Memory, RunningSensor, SensorOptions, SensorTotals},
    soak::SoakArgs,
    workload::Length,
};

/// `cargo xtask bench [SECTION] [options]`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub suite: Option<Suite>,
    /// Every section with fewer runs and shorter loads (about half the time); noisier.
    #[arg(long)]
    pub quick: bool,
    /// Leave out bpftrace and auditd (nothing is installed).
    #[arg(long)]
    pub no_peers: bool,
    /// Measure this agent-sensor binary instead of building target/release/agent-sensor.
    #[arg(long, global = true, value_name = "PATH")]
    pub sensor: Option<PathBuf>,
    /// Nice value of the bench and everything it starts (workloads, sensor, bpftrace,
    /// auditd): below 0, they get the CPU before builds running beside them. 0 leaves it.
    #[arg(long, global = true, default_value_t = -10, allow_negative_numbers = true)]
    pub nice: i32,
}

#[derive(Subcommand)]
pub enum Suite {
    /// Four workloads with no sensor, agent-sensor, bpftrace and auditd; draws the plot.
    Overhead(OverheadArgs),
    /// Sustained ingest rate without loss, and the loss above it.
    Ingest(IngestArgs),
    /// Detection and containment latency, idle and under a background load.
    Latency(LatencyArgs),
    /// Sensor CPU and memory with 1, 10 and 100 concurrent agents.
    Scaling(ScalingArgs),
    /// Open/close loop with no sensor, untracked and tracked; sustained decode rate; memory.
    Capture(CaptureArgs),
    /// Sustained load at the rated event rate for 10 minutes, with scripted attacks: memory,
    /// drops, detections. Not part of a full run.
    Soak(SoakArgs),
}

#[derive(clap::Args, Clone, Copy)]
pub struct CaptureArgs {
    /// open+close pairs per timed run.
    #[arg(long, default_value_t = 500_000)]
    pub iterations: u64,
    /// Timed runs per scenario; medians and min–max are reported.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Duration of each sustained-load measurement, in seconds.
    #[arg(long, default_value_t = 10)]
    pub load_seconds: u64,
}

impl CaptureArgs {
    fn quick() -> Self {
        Self {
            iterations: 200_000,
            runs: 5,
            load_seconds: 5,
        }
    }
}

/// The plot, next to BENCHMARKS.md.
const PLOT: &str = "BENCHMARKS-overhead.png";

/// What every section needs: the sensor binary (a copy), the machine, the cgroup root and the
/// work directory (removed at the end).
pub struct Bench {
    pub sensor: PathBuf,
    pub machine: Machine,
    pub cgroup_root: PathBuf,
    pub work: WorkDir,
    /// Whether `<cgroup root>/agent-sensor` (the sensor's parent of agent cgroups) existed
    /// before the bench: if not, it is removed at the end when empty.
    agents_parent_existed: bool,
    unaudited: peers::UnauditedTasks,
}

impl Drop for Bench {
    fn drop(&mut self) {
        cgroup::remove_agent_cgroups(&self.cgroup_root);
        if !self.agents_parent_existed {
            let _ = std::fs::remove_dir(self.cgroup_root.join("agent-sensor"));
        }
    }
}

impl Bench {
    fn prepare(sensor: Option<&Path>) -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "the benchmark loads eBPF programs, creates cgroups and sets up auditd: run it \
                 as root"
            );
        }
        let mut machine = Machine::current()?;
        let binary = match sensor {
            Some(path) => {
                machine.sensor = format!(
                    "`{}` (given with --sensor; the tree is at {})",
                    path.display(),
                    machine.revision
                );
                path.to_path_buf()
            }
            None => crate::build()?,
        };
        let sensor = snapshot(&binary)?;
        let cgroup_root = cgroup::v2_root()?;
        cgroup::remove_stale(&cgroup_root);
        cgroup::remove_agent_cgroups(&cgroup_root);
        peers::remove_audit_rules();
        let unaudited = peers::UnauditedTasks::start();
        let work = WorkDir::create()?;
        workload::use_copy_in(&work.path)?;
        Ok(Self {
            sensor,
            machine,
            agents_parent_existed: cgroup_root.join("agent-sensor").exists(),
            cgroup_root,
            work,
            unaudited,
        })
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let mut bench = Bench::prepare(args.sensor.as_deref())?;
    if args.nice != 0 {
        // SAFETY: setpriority on this process; children inherit it.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, args.nice) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot set nice {}", args.nice));
        }
        bench.machine.sensor.push_str(&format!(
            ".  \nEvery process of the bench (workloads, sensor, bpftrace, auditd) ran at nice \
             {}, ahead of other work on the machine",
            args.nice
        ));
    }
    let path = crate::workspace_root().join("BENCHMARKS.md");
    let section = match args.suite {
        None => return run_all(&bench, args.quick, args.no_peers),
        Some(Suite::Overhead(a)) => {
            let overhead = overhead::run(&bench, &a)?;
            draw_plot(&overhead)?;
            overhead_section(&bench, &overhead)
        }
        Some(Suite::Ingest(a)) => ingest_section(&bench, &ingest::run(&bench, &a)?),
        Some(Suite::Latency(a)) => latency_section(&bench, &latency::run(&bench, &a)?),
        Some(Suite::Scaling(a)) => scaling_section(&bench, &scaling::run(&bench, &a)?),
        Some(Suite::Capture(a)) => capture_section(capture(&bench, a)?),
        Some(Suite::Soak(a)) => soak_section(&bench, &soak::run(&bench, &a)?),
    };
    report::replace_section(&path, &section)?;
    println!("{}", section.body);
    eprintln!("xtask bench: results written to {}", path.display());
    Ok(())
}

fn machine_lines(bench: &Bench) -> String {
    format!(
        "Machine: {}.  \nSensor: {}.  \n{}.\n\n",
        bench.machine.describe(),
        bench.machine.sensor,
        bench.unaudited.describe()
    )
}

fn overhead_section(bench: &Bench, overhead: &overhead::Overhead) -> Section {
    Section {
        name: "overhead",
        title: "Overhead by workload and configuration",
        body: insert_machine(bench, overhead.render(Some(PLOT))),
    }
}

fn ingest_section(bench: &Bench, ingest: &ingest::Ingest) -> Section {
    Section {
        name: "ingest",
        title: "Sustained ingest",
        body: insert_machine(bench, ingest.render()),
    }
}

fn latency_section(bench: &Bench, latency: &latency::Latency) -> Section {
    Section {
        name: "latency",
        title: "Detection and containment latency",
        body: insert_machine(bench, latency.render()),
    }
}

fn scaling_section(bench: &Bench, scaling: &scaling::Scaling) -> Section {
    Section {
        name: "scaling",
        title: "Scaling with the number of agents",
        body: insert_machine(bench, scaling.render()),
    }
}

fn soak_section(bench: &Bench, soak: &soak::Soak) -> Section {
    Section {
        name: "soak",
        title: "Soak at the rated event rate",
        body: insert_machine(bench, soak.render()),
    }
}

fn capture_section(body: String) -> Section {
    Section {
        name: "capture",
        title: "capture",
        body,
    }
}

/// The machine lines after a body's heading and parameter lines (up to its first blank line
/// after the command).
fn insert_machine(bench: &Bench, body: String) -> String {
    // heading, blank, command, parameters, blank: the machine goes after that blank line.
    let mut lines: Vec<&str> = body.lines().collect();
    let at = lines
        .iter()
        .enumerate()
        .skip(3)
        .find(|(_, l)| l.is_empty())
        .map_or(lines.len(), |(i, _)| i + 1);
    let machine = machine_lines(bench);
    let machine_lines: Vec<&str> = machine.trim_end().lines().collect();
    let mut inserted = machine_lines;
    inserted.push("");
    lines.splice(at..at, inserted);
    lines.join("\n") + "\n"
}

fn draw_plot(overhead: &overhead::Overhead) -> Result<()> {
    let path = crate::workspace_root().join(PLOT);
    plot::write(
        &path,
        "OVERHEAD BY WORKLOAD AND CONFIGURATION",
        &overhead.plot_data(),
    )?;
    eprintln!("xtask bench: plot written to {}", path.display());
    Ok(())
}

/// `cargo xtask bench`: every section, then the summary; the whole file rewritten.
fn run_all(bench: &Bench, quick: bool, no_peers: bool) -> Result<()> {
    let started = Instant::now();
    let other = cpu::OtherCpu::start()?;
    // Other sensors on the host (a colleague's test) put every syscall through their
    // programs too: looked for between sections.
    let mut foreign = foreign_sensors();
    let mut sections = Vec::new();
    let mut targets: Vec<(&str, Vec<Target>)> = Vec::new();
    let mut failures = Vec::new();
    let mut overhead_args = if quick {
        OverheadArgs::quick()
    } else {
        OverheadArgs::parse_defaults()
    };
    overhead_args.no_peers = no_peers;

    let mut plot_drawn = false;
    match overhead::run(bench, &overhead_args) {
        Ok(o) => {
            plot_drawn = draw_plot(&o).is_ok();
            targets.push(("overhead", o.targets()));
            sections.push(overhead_section(bench, &o));
        }
        Err(e) => failures.push(failed(
            "overhead",
            "Overhead by workload and configuration",
            e,
        )),
    }
    foreign = foreign.max(foreign_sensors());
    let ingest_args = if quick {
        IngestArgs::quick()
    } else {
        IngestArgs::parse_defaults()
    };
    match ingest::run(bench, &ingest_args) {
        Ok(i) => {
            targets.push(("ingest", i.targets()));
            sections.push(ingest_section(bench, &i));
        }
        Err(e) => failures.push(failed("ingest", "Sustained ingest", e)),
    }
    foreign = foreign.max(foreign_sensors());
    let latency_args = if quick {
        LatencyArgs::quick()
    } else {
        LatencyArgs::parse_defaults()
    };
    match latency::run(bench, &latency_args) {
        Ok(l) => {
            targets.push(("latency", l.targets()));
            sections.push(latency_section(bench, &l));
        }
        Err(e) => failures.push(failed("latency", "Detection and containment latency", e)),
    }
    foreign = foreign.max(foreign_sensors());
    let scaling_args = if quick {
        ScalingArgs::quick()
    } else {
        ScalingArgs::parse_defaults()
    };
    match scaling::run(bench, &scaling_args) {
        Ok(s) => {
            targets.push(("scaling", s.targets()));
            sections.push(scaling_section(bench, &s));
        }
        Err(e) => failures.push(failed("scaling", "Scaling with the number of agents", e)),
    }
    foreign = foreign.max(foreign_sensors());
    let capture_args = if quick {
        CaptureArgs::quick()
    } else {
        CaptureArgs::parse_defaults()
    };
    match capture(bench, capture_args) {
        Ok(body) => sections.push(capture_section(body)),
        Err(e) => failures.push(failed("capture", "capture", e)),
    }

    let elapsed = started.elapsed();
    let other_cores = other.cores()?;
    foreign = foreign.max(foreign_sensors());
    let errors: Vec<String> = failures.iter().map(|(_, e)| e.clone()).collect();
    let summary = summary(
        bench,
        &targets,
        &errors,
        elapsed,
        (other_cores, foreign),
        plot_drawn,
    );
    let mut all = vec![summary];
    all.extend(sections);
    all.extend(failures.into_iter().map(|(s, _)| s));
    // Sections in a fixed order, whatever failed.
    let order = [
        "summary", "overhead", "ingest", "latency", "scaling", "capture",
    ];
    all.sort_by_key(|s| order.iter().position(|&n| n == s.name));
    let path = crate::workspace_root().join("BENCHMARKS.md");
    report::rewrite(&path, &all)?;
    println!("{}", all[0].body);
    eprintln!(
        "xtask bench: results written to {} in {:.1} min",
        path.display(),
        elapsed.as_secs_f64() / 60.0
    );
    if !errors.is_empty() {
        bail!("{} section(s) failed:\n{}", errors.len(), errors.join("\n"));
    }
    Ok(())
}

/// agent-sensor daemons, bpftrace and auditd processes the bench did not start.
fn foreign_sensors() -> usize {
    let ours = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            let path = entry.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            // The parent pid is the second field after the parenthesised name.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(String::from))
                .unwrap_or_default();
            let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
            let daemon = match comm.trim() {
                "agent-sensor" => cmdline.split(|&b| b == 0).nth(1) == Some(b"run"),
                "bpftrace" | "auditd" => true,
                _ => false,
            };
            daemon && parent != ours
        })
        .count()
}

/// A section that could not be measured: says so, with the error.
fn failed(name: &'static str, title: &'static str, error: anyhow::Error) -> (Section, String) {
    let message = format!("{name}: {error:#}");
    eprintln!("xtask bench: {message}");
    (
        Section {
            name,
            title,
            body: format!(
                "{}\n\nNot measured: the run failed with\n\n```\n{error:#}\n```\n",
                report::heading()
            ),
        },
        message,
    )
}

fn summary(
    bench: &Bench,
    targets: &[(&str, Vec<Target>)],
    errors: &[String],
    elapsed: Duration,
    (other_cores, foreign): (f64, usize),
    plot: bool,
) -> Section {
    let mut out = vec![
        report::heading(),
        format!(
            "(every section below, {:.1} min in all)",
            elapsed.as_secs_f64() / 60.0
        ),
        String::new(),
        machine_lines(bench).trim_end().to_string(),
        String::new(),
        format!(
            "Interference: processes other than the bench's used {other_cores:.2} cores on \
             average over the run ({} cores in all); each table has an \"other CPU\" column \
             for its own measurements. {}",
            bench.machine.cores,
            match foreign {
                0 => "No other eBPF sensor or tracer was running (checked between sections)."
                    .to_string(),
                n => format!(
                    "Up to {n} other agent-sensor daemon(s) or tracer(s) not started by the \
                     bench were running (checked between sections): every syscall on the host \
                     also passed through their programs."
                ),
            }
        ),
        String::new(),
    ];
    if plot {
        out.push(format!(
            "![Overhead vs. no sensor per workload and configuration]({PLOT})"
        ));
        out.push(String::new());
    }
    out.extend([
        "| target | measured | result | section |".to_string(),
        "| --- | --- | --- | --- |".to_string(),
    ]);
    let (mut passed, mut missed) = (0, 0);
    for (section, list) in targets {
        for t in list {
            match t.passed() {
                Some(true) => passed += 1,
                Some(false) => missed += 1,
                None => {}
            }
            out.push(format!(
                "| {} | {} | {} | [{section}](#{}) |",
                t.name,
                t.measured,
                t.verdict,
                anchor(section)
            ));
        }
    }
    out.push(String::new());
    out.push(format!("{passed} targets met, {missed} missed."));
    for error in errors {
        out.push(format!("Not measured: {error}"));
    }
    out.push(String::new());
    Section {
        name: "summary",
        title: "Summary",
        body: out.join("\n"),
    }
}

/// GitHub's anchor of a section's heading.
fn anchor(section: &str) -> &'static str {
    match section {
        "overhead" => "overhead-by-workload-and-configuration",
        "ingest" => "sustained-ingest",
        "latency" => "detection-and-containment-latency",
        "scaling" => "scaling-with-the-number-of-agents",
        _ => "capture",
    }
}

/// Parsing an Args struct from no arguments gives its defaults, as the command line would.
trait ParseDefaults: Sized {
    fn parse_defaults() -> Self;
}

impl<T: clap::Args + clap::FromArgMatches> ParseDefaults for T {
    fn parse_defaults() -> Self {
        let command = T::augment_args(clap::Command::new("defaults"));
        let matches = command.get_matches_from(["defaults"]);
        T::from_arg_matches(&matches).expect("defaults parse")
    }
}

/// Sustained loads (the VM has 2 cores): loop processes at once, whether the sensor writes the
/// event stream, and the loop. An open/close loop cannot make records as fast as the decoder
/// takes them on this machine (the loops and the sensor share two cores); the kill(self, 0)
/// loop makes the cheapest record there is, to find the decoder's own limit.
const LOADS: [(usize, bool, workload::Generator); 4] = [
    (1, false, workload::Generator::OpenClose),
    (2, false, workload::Generator::OpenClose),
    (1, true, workload::Generator::OpenClose),
    (1, false, workload::Generator::SignalSelf),
];

/// One open/close loop scenario: ns per iteration of each run.
pub struct LoopScenario {
    pub name: &'static str,
    pub ns_per_iteration: Vec<f64>,
    /// The sensor's totals over the scenario, if it ran.
    pub sensor: Option<SensorTotals>,
    /// CPU other processes used meanwhile (see [`cpu::OtherCpu`]).
    pub other_cpu_cores: f64,
}

pub struct SustainedLoad {
    pub processes: usize,
    pub generator: workload::Generator,
    /// The sensor wrote every event as a JSON line (`--events /dev/null`).
    pub event_stream: bool,
    pub wall: Duration,
    /// Timed loop iterations of all processes together.
    pub iterations: u64,
    pub totals: SensorTotals,
    /// Sensor user+system CPU time during the load.
    pub sensor_cpu_seconds: f64,
    /// At the end of the load.
    pub sensor_memory: Memory,
    /// CPU other processes used during the scenario (sensor start and stop included).
    pub other_cpu_cores: f64,
}

impl SustainedLoad {
    pub fn events_per_second(&self) -> f64 {
        self.totals.events as f64 / self.wall.as_secs_f64()
    }

    /// Events decoded per second of sensor CPU: what one core given to the sensor decodes.
    pub fn per_cpu_second(&self) -> f64 {
        self.totals.events as f64 / self.sensor_cpu_seconds.max(1e-9)
    }
}

/// Everything one `bench capture` measured.
pub struct Capture {
    pub args: CaptureArgs,
    /// No sensor, the sensor's syscall hook (sys_exit) alone, untracked, tracked, tracked
    /// with every open sent, and no sensor again.
    pub loops: [LoopScenario; 6],
    pub loads: Vec<SustainedLoad>,
}

fn capture(bench: &Bench, args: CaptureArgs) -> Result<String> {
    if args.runs == 0 || args.iterations == 0 || args.load_seconds == 0 {
        bail!("--runs, --iterations and --load-seconds must be at least 1");
    }
    let sensor = &bench.sensor;
    let cgroup_root = &bench.cgroup_root;
    let base = &bench.work.path;

    let no_sensor = loop_scenario("no sensor", || Ok((loop_runs(&args, None)?, None)))?;
    let hook_alone = loop_scenario("sys_exit hook alone, no sensor", || {
        let _hooks = sensor::HeldHooks::start(sensor, "sys_exit")?;
        Ok((loop_runs(&args, None)?, None))
    })?;
    let untracked = loop_scenario("sensor running, loop untracked", || {
        let (runs, totals) =
            with_sensor(sensor, base, cgroup_root, "untracked", STREAM, |_, _| {
                loop_runs(&args, None)
            })?;
        Ok((runs, Some(totals)))
    })?;
    let tracked = loop_scenario("sensor running, loop tracked", || {
        let (runs, totals) =
            with_sensor(sensor, base, cgroup_root, "tracked", STREAM, |cgroup, _| {
                loop_runs(&args, Some(cgroup))
            })?;
        Ok((runs, Some(totals)))
    })?;
    let every_open = loop_scenario(
        "sensor running, loop tracked, every open sent (--repeat-window-ms 0)",
        || {
            let (runs, totals) = with_sensor(
                sensor,
                base,
                cgroup_root,
                "tracked-every-open",
                &[Send::EventStream, Send::EveryOpen],
                |cgroup, _| loop_runs(&args, Some(cgroup)),
            )?;
            Ok((runs, Some(totals)))
        },
    )?;
    // The baseline once more: how far it moves on its own says how much of a difference
    // between scenarios is noise.
    let no_sensor_again =
        loop_scenario("no sensor, again", || Ok((loop_runs(&args, None)?, None)))?;
    let mut loads = Vec::new();
    for (processes, event_stream, generator) in LOADS {
        eprintln!(
            "xtask bench: sustained load, {processes} tracked {} loop process(es), {} s{}",
            generator.name(),
            args.load_seconds,
            if event_stream {
                ", with the event stream"
            } else {
                ""
            }
        );
        loads.push(sustained_load(
            sensor,
            base,
            cgroup_root,
            processes,
            event_stream,
            generator,
            &args,
        )?);
    }

    let capture = Capture {
        args,
        loops: [
            no_sensor,
            hook_alone,
            untracked,
            tracked,
            every_open,
            no_sensor_again,
        ],
        loads,
    };
    Ok(report::render(&capture, &bench.machine))
}

/// Copies the freshly built sensor aside, so that a rebuild by someone else during the
/// benchmark cannot mix two binaries in one set of results.
fn snapshot(built: &Path) -> Result<PathBuf> {
    let dir = crate::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let copy = dir.join("agent-sensor");
    std::fs::copy(built, &copy)
        .with_context(|| format!("cannot copy {} aside", built.display()))?;
    Ok(copy)
}

/// The loops' sensor: the event stream, repeated opens counted (the default).
const STREAM: &[Send] = &[Send::EventStream];

/// What a sensor of [`with_sensor`] sends beyond alerts and metrics.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Send {
    /// Every event as a JSON line (`--events /dev/null`).
    EventStream,
    /// Every open, repeated ones too (`--repeat-window-ms 0`).
    EveryOpen,
}

/// Runs `measure` with a sensor that tracks a fresh, empty cgroup; returns what `measure`
/// returned and the sensor's totals once stopped.
fn with_sensor<T>(
    sensor: &Path,
    base: &Path,
    cgroup_root: &Path,
    name: &str,
    sends: &[Send],
    measure: impl FnOnce(&BenchCgroup, &RunningSensor) -> Result<T>,
) -> Result<(T, SensorTotals)> {
    let cgroup = BenchCgroup::create(cgroup_root, name)?;
    let running = RunningSensor::start_with(
        sensor,
        base,
        &SensorOptions {
            track_cgroups: vec![&cgroup.path],
            event_stream: sends.contains(&Send::EventStream),
            every_open: sends.contains(&Send::EveryOpen),
            ..SensorOptions::default()
        },
    )?;
    let measured = measure(&cgroup, &running)?;
    let totals = running.stop()?;
    Ok((measured, totals))
}

/// Runs `measure` and reports, beside its result, the CPU other processes used meanwhile.
fn with_other_cpu<T>(measure: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let other_cpu = cpu::OtherCpu::start()?;
    let measured = measure()?;
    Ok((measured, other_cpu.cores()?))
}

fn loop_scenario(
    name: &'static str,
    measure: impl FnOnce() -> Result<(Vec<f64>, Option<SensorTotals>)>,
) -> Result<LoopScenario> {
    eprintln!("xtask bench: open/close loop, {name}");
    let ((ns_per_iteration, sensor), other_cpu_cores) = with_other_cpu(measure)?;
    Ok(LoopScenario {
        name,
        ns_per_iteration,
        sensor,
        other_cpu_cores,
    })
}

/// `runs` timed open/close loops, one process after the other; ns per iteration of each.
fn loop_runs(args: &CaptureArgs, tracked_in: Option<&BenchCgroup>) -> Result<Vec<f64>> {
    (0..args.runs)
        .map(|_| {
            let mut cmd = workload::open_close_command(Length::Iterations(args.iterations))?;
            if let Some(cgroup) = tracked_in {
                cgroup.join_before_exec(&mut cmd);
            }
            let child = cmd.spawn().context("cannot start the workload")?;
            Ok(workload::finish(child)?.ns_per_iteration)
        })
        .collect()
}

/// `processes` tracked loops side by side for `load_seconds`, with the sensor decoding.
fn sustained_load(
    sensor: &Path,
    base: &Path,
    cgroup_root: &Path,
    processes: usize,
    event_stream: bool,
    generator: workload::Generator,
    args: &CaptureArgs,
) -> Result<SustainedLoad> {
    let name = format!("load{processes}");
    // A loop of opens of one file: with repeats counted, nearly nothing would be decoded.
    let sends: &[Send] = if event_stream {
        &[Send::EventStream, Send::EveryOpen]
    } else {
        &[Send::EveryOpen]
    };
    let (((wall, iterations, sensor_cpu_seconds, sensor_memory), totals), other_cpu_cores) =
        with_other_cpu(|| {
            with_sensor(
                sensor,
                base,
                cgroup_root,
                &name,
                sends,
                |cgroup, running| {
                    let cpu_before = running.cpu_seconds()?;
                    let start = Instant::now();
                    // Children left behind by an error are killed with the cgroup.
                    let children = (0..processes)
                        .map(|_| {
                            let mut cmd = match generator {
                                workload::Generator::OpenClose => workload::open_close_command(
                                    Length::Seconds(args.load_seconds),
                                )?,
                                workload::Generator::SignalSelf => {
                                    workload::signal_self_command(args.load_seconds)?
                                }
                            };
                            cgroup.join_before_exec(&mut cmd);
                            cmd.spawn().context("cannot start the workload")
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let mut iterations = 0;
                    for child in children {
                        iterations += workload::finish(child)?.iterations;
                    }
                    let wall = start.elapsed();
                    let cpu = running.cpu_seconds()? - cpu_before;
                    Ok((wall, iterations, cpu, running.memory()?))
                },
            )
        })?;
    Ok(SustainedLoad {
        processes,
        generator,
        event_stream,
        wall,
        iterations,
        totals,
        sensor_cpu_seconds,
        sensor_memory,
        other_cpu_cores,
    })
}
