//! `cargo xtask bench capture`: what the sensor costs the processes on the host and how fast its
//! user space keeps up, measured on this machine with the real kernel; the results replace the
//! capture section of BENCHMARKS.md.
//!
//! - An open/close loop (a process of its own, see [`workload`]) in ns per iteration: with no
//!   sensor, with the sensor running and the loop untracked, and with the loop tracked.
//! - Sustained load: tracked loops in 1 and 2 processes; the events/s the sensor decodes, its
//!   kernel-side losses, its CPU time and its memory.

mod cgroup;
mod cpu;
mod report;
mod sensor;
pub mod workload;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;

use self::{
    cgroup::BenchCgroup,
    sensor::{Memory, RunningSensor, SensorTotals},
    workload::Length,
};

#[derive(Subcommand)]
pub enum Suite {
    /// Open/close loop with no sensor, untracked and tracked; sustained decode rate; memory.
    Capture(CaptureArgs),
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

/// Tracked loop processes tried for the sustained decode rate (the VM has 2 cores).
const LOAD_PROCESSES: [usize; 2] = [1, 2];

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
}

/// Everything one `bench capture` measured.
pub struct Capture {
    pub args: CaptureArgs,
    /// No sensor, untracked, tracked, and no sensor again.
    pub loops: [LoopScenario; 4],
    pub loads: Vec<SustainedLoad>,
}

pub fn run(suite: Suite) -> Result<()> {
    match suite {
        Suite::Capture(args) => capture(args),
    }
}

fn capture(args: CaptureArgs) -> Result<()> {
    if args.runs == 0 || args.iterations == 0 || args.load_seconds == 0 {
        bail!("--runs, --iterations and --load-seconds must be at least 1");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs and creates cgroups: run it as root");
    }
    let sensor = snapshot(&crate::build()?)?;
    let machine = report::Machine::current()?;
    let cgroup_root = cgroup::v2_root()?;
    cgroup::remove_stale(&cgroup_root);

    let no_sensor = loop_scenario("no sensor", || Ok((loop_runs(&args, None)?, None)))?;
    let untracked = loop_scenario("sensor running, loop untracked", || {
        let (runs, totals) = with_sensor(&sensor, &cgroup_root, "untracked", |_, _| {
            loop_runs(&args, None)
        })?;
        Ok((runs, Some(totals)))
    })?;
    let tracked = loop_scenario("sensor running, loop tracked", || {
        let (runs, totals) = with_sensor(&sensor, &cgroup_root, "tracked", |cgroup, _| {
            loop_runs(&args, Some(cgroup))
        })?;
        Ok((runs, Some(totals)))
    })?;
    // The baseline once more: how far it moves on its own says how much of a difference
    // between scenarios is noise.
    let no_sensor_again =
        loop_scenario("no sensor, again", || Ok((loop_runs(&args, None)?, None)))?;
    let mut loads = Vec::new();
    for processes in LOAD_PROCESSES {
        eprintln!(
            "xtask bench: sustained load, {processes} tracked loop process(es), {} s",
            args.load_seconds
        );
        loads.push(sustained_load(&sensor, &cgroup_root, processes, &args)?);
    }

    let capture = Capture {
        args,
        loops: [no_sensor, untracked, tracked, no_sensor_again],
        loads,
    };
    let section = report::render(&capture, &machine);
    let path = crate::workspace_root().join("BENCHMARKS.md");
    report::replace_section(&path, &section)?;
    println!("{section}");
    eprintln!("xtask bench: results written to {}", path.display());
    Ok(())
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

/// Runs `measure` with a sensor that tracks a fresh, empty cgroup; returns what `measure`
/// returned and the sensor's totals once stopped.
fn with_sensor<T>(
    sensor: &Path,
    cgroup_root: &Path,
    name: &str,
    measure: impl FnOnce(&BenchCgroup, &RunningSensor) -> Result<T>,
) -> Result<(T, SensorTotals)> {
    let cgroup = BenchCgroup::create(cgroup_root, name)?;
    let running = RunningSensor::start(sensor, &cgroup.path)?;
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
    cgroup_root: &Path,
    processes: usize,
    args: &CaptureArgs,
) -> Result<SustainedLoad> {
    let name = format!("load{processes}");
    let (((wall, iterations, sensor_cpu_seconds, sensor_memory), totals), other_cpu_cores) =
        with_other_cpu(|| {
            with_sensor(sensor, cgroup_root, &name, |cgroup, running| {
                let cpu_before = running.cpu_seconds()?;
                let start = Instant::now();
                // Children left behind by an error are killed with the cgroup.
                let children = (0..processes)
                    .map(|_| {
                        let mut cmd =
                            workload::open_close_command(Length::Seconds(args.load_seconds))?;
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
            })
        })?;
    Ok(SustainedLoad {
        processes,
        wall,
        iterations,
        totals,
        sensor_cpu_seconds,
        sensor_memory,
        other_cpu_cores,
    })
}
