//! How the sensor's cost scales with the number of agents: 1, 10 and 100 concurrent agents
//! (`agent-sensor exec`) sharing the same processes — paced open/close loops, 100 by default —
//! and the same total event rate; at two total rates. The claim to check: CPU follows the event
//! rate, not the agent count.
//!
//! The number of processes is held fixed because it can move the sensor's CPU per event on its
//! own, whatever the agents (how the events bunch into the sensor's wake-ups, what is still in
//! its caches when it wakes): with one process per agent, "100 agents" would also mean "100
//! processes". Each rate also has a reference row, one agent with one process, which shows
//! what the processes alone amount to.

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    cpu, metrics,
    report::{self, thousands, Target},
    sensor::{Memory, RunningSensor, SensorOptions},
    workload, Bench,
};

#[derive(clap::Args, Clone, Debug)]
pub struct ScalingArgs {
    /// Numbers of concurrent agents (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 10, 100])]
    pub agents: Vec<u64>,
    /// Total events per second, shared by the agents (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 50_000])]
    pub rates: Vec<u64>,
    /// Paced loops per row, shared equally by its agents (a multiple of every agent count).
    #[arg(long, default_value_t = 100)]
    pub processes: u64,
    /// Seconds of measurement per run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Runs of each row, taken in turns (every row once, then again): a run's CPU per event
    /// moves by a fifth with how the sensor's wake-ups happen to fall, so rows are compared
    /// by their medians.
    #[arg(long, default_value_t = 3)]
    pub repeats: u64,
}

impl ScalingArgs {
    pub fn quick() -> Self {
        Self {
            agents: vec![1, 10, 100],
            rates: vec![10_000, 50_000],
            processes: 100,
            seconds: 3,
            repeats: 1,
        }
    }
}

/// Per-event CPU with the most agents may exceed that with the fewest by this much.
pub const PER_EVENT_SLACK: f64 = 0.25;

/// A window of the sensor's counters.
pub struct Window {
    pub seconds: f64,
    pub events: u64,
    pub lost: u64,
    pub cpu: f64,
    pub memory: Memory,
    pub other_cores: f64,
}

impl Window {
    pub fn cores(&self) -> f64 {
        self.cpu / self.seconds
    }

    /// Sensor CPU µs per event decoded.
    pub fn micros_per_event(&self) -> Option<f64> {
        (self.events > 0).then(|| self.cpu * 1e6 / self.events as f64)
    }
}

/// One run of a row: a fresh sensor, the agents registered, then loaded.
pub struct Run {
    /// The agents registered, their loops not started yet.
    pub idle: Window,
    pub busy: Window,
}

pub struct Row {
    pub agents: u64,
    /// Paced loops in all, `processes / agents` per agent.
    pub processes: u64,
    pub rate: u64,
    pub runs: Vec<Run>,
}

impl Row {
    /// `of` each run, the runs it has no value for left out.
    fn values(&self, of: impl Fn(&Run) -> Option<f64>) -> Vec<f64> {
        self.runs.iter().filter_map(of).collect()
    }

    fn median(&self, of: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
        let values = self.values(of);
        (!values.is_empty()).then(|| report::median(&values))
    }

    /// Median sensor CPU µs per event over the runs.
    pub fn micros_per_event(&self) -> Option<f64> {
        self.median(|r| r.busy.micros_per_event())
    }

    fn micros_per_event_range(&self) -> Option<(f64, f64)> {
        let values = self.values(|r| r.busy.micros_per_event());
        (!values.is_empty()).then(|| (report::min(&values), report::max(&values)))
    }

    fn max_memory(&self, of: impl Fn(&Run) -> u64) -> u64 {
        self.runs.iter().map(of).max().unwrap_or(0)
    }
}

pub struct Scaling {
    pub args: ScalingArgs,
    pub rows: Vec<Row>,
}

pub fn run(bench: &Bench, args: &ScalingArgs) -> Result<Scaling> {
    if args.processes == 0 || args.repeats == 0 {
        bail!("--processes and --repeats must be at least 1");
    }
    if let Some(agents) = args
        .agents
        .iter()
        .find(|&&a| a == 0 || !args.processes.is_multiple_of(a))
    {
        bail!(
            "{agents} agents cannot share {} processes equally: give --processes a multiple \
             of every --agents count",
            args.processes
        );
    }
    let mut rows = Vec::new();
    for &rate in &args.rates {
        // The reference (one process) first, then the agents sharing `processes`.
        let first = rows.len();
        for (agents, processes) in
            std::iter::once((1, 1)).chain(args.agents.iter().map(|&a| (a, args.processes)))
        {
            rows.push(Row {
                agents,
                processes,
                rate,
                runs: Vec::new(),
            });
        }
        for repeat in 1..=args.repeats {
            for row in &mut rows[first..] {
                eprintln!(
                    "xtask bench: scaling: {} agent(s), {} process(es), {} events/s in all \
                     (run {repeat} of {})",
                    row.agents,
                    row.processes,
                    thousands(rate),
                    args.repeats
                );
                let run = run_once(bench, args, row.agents, row.processes, rate)?;
                row.runs.push(run);
            }
        }
    }
    Ok(Scaling {
        args: args.clone(),
        rows,
    })
}

/// Children killed if the row fails half-way.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_once(
    bench: &Bench,
    args: &ScalingArgs,
    agents: u64,
    processes: u64,
    rate: u64,
) -> Result<Run> {
    let dir = bench
        .work
        .subdir(&format!("scaling-{agents}-{processes}-{rate}"))?;
    let sensor = RunningSensor::start_with(
        &bench.sensor,
        &dir,
        &SensorOptions {
            metrics: true,
            event_stream: true,
            every_open: true,
            ..SensorOptions::default()
        },
    )?;
    let url = sensor.metrics_url()?.to_string();
    let go = dir.join("go");
    let per_process = rate as f64 / processes as f64;
    let mut children = Agents(Vec::new());
    for i in 0..agents {
        let name = format!("bench-scale-{agents}-{processes}-{rate}-{i}");
        // Worktrees side by side in one directory, and each agent's opens in its own, as
        // agents work: every open then lies beside every other agent's worktree, where the
        // rules look for isolation breaks.
        let worktree = dir.join("worktrees").join(&name);
        let source = worktree.join("src/lib.rs");
        std::fs::create_dir_all(worktree.join("src"))?;
        std::fs::write(&source, "pub fn answer() -> u32 {\n    42\n}\n")?;
        let mut cmd = sensor.exec_command(&name, &worktree, None);
        let load = workload::paced_open_close_command(
            per_process,
            args.seconds as f64 + 1.0,
            processes / agents,
            Some(&go),
            Some(&source),
        )?;
        cmd.arg(load.get_program()).args(load.get_args());
        children.0.push(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start an agent")?,
        );
    }
    wait_for_agents(&url, agents, &mut children)?;
    // The agents registered and waiting: what they cost idle.
    let idle = window(&sensor, &url, Duration::from_secs(2))?;
    std::fs::write(&go, b"")?;
    std::thread::sleep(Duration::from_millis(500));
    let busy = window(&sensor, &url, Duration::from_secs(args.seconds))?;
    for child in &mut children.0 {
        let status = child.wait()?;
        if !status.success() {
            bail!("an agent of the scaling run failed ({status})");
        }
    }
    children.0.clear();
    sensor.stop()?;
    super::cgroup::remove_agent_cgroups(&bench.cgroup_root);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Run { idle, busy })
}

fn wait_for_agents(url: &str, agents: u64, children: &mut Agents) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for child in &mut children.0 {
            if let Some(status) = child.try_wait()? {
                bail!("an agent of the scaling run exited before the start ({status})");
            }
        }
        let running = metrics::scrape(url)?
            .get("agent_sensor_agents{state=\"running\"}")
            .unwrap_or(0.0);
        if running >= agents as f64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {running} of {agents} agents registered within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn window(sensor: &RunningSensor, url: &str, length: Duration) -> Result<Window> {
    let before = metrics::scrape(url)?;
    let cpu_before = sensor.threads_cpu_seconds()?;
    let other = cpu::OtherCpu::start()?;
    let start = Instant::now();
    std::thread::sleep(length);
    let after = metrics::scrape(url)?;
    let cpu = sensor.threads_cpu_seconds()? - cpu_before;
    let seconds = start.elapsed().as_secs_f64();
    let delta = |name: &str, except: &[&str]| {
        (after.sum(name, except) - before.sum(name, except)).max(0.0) as u64
    };
    Ok(Window {
        seconds,
        events: delta("agent_sensor_events_total", &[]),
        lost: delta(
            "agent_sensor_events_dropped_total",
            &["reason=\"truncated\""],
        ),
        cpu,
        memory: sensor.memory()?,
        other_cores: other.cores_excluding(cpu)?,
    })
}

impl Scaling {
    pub fn targets(&self) -> Vec<Target> {
        let (Some(&fewest), Some(&most)) =
            (self.args.agents.iter().min(), self.args.agents.iter().max())
        else {
            return Vec::new();
        };
        let mut measured = Vec::new();
        let mut pass = true;
        for &rate in &self.args.rates {
            let per_event = |agents: u64, processes: u64| {
                self.rows
                    .iter()
                    .find(|r| r.agents == agents && r.processes == processes && r.rate == rate)
                    .and_then(Row::micros_per_event)
            };
            let processes = self.args.processes;
            match (per_event(fewest, processes), per_event(most, processes)) {
                (Some(a), Some(b)) => {
                    let ratio = b / a;
                    pass &= ratio <= 1.0 + PER_EVENT_SLACK;
                    // Not judged, shown: the same rate from a single process.
                    let reference = per_event(1, 1).map_or(String::new(), |r| {
                        format!(" (one agent in one process: {r:.2})")
                    });
                    measured.push(format!(
                        "{} events/s: {a:.2} → {b:.2} µs/event ({ratio:.2}×){reference}",
                        thousands(rate)
                    ));
                }
                _ => {
                    pass = false;
                    measured.push(format!("{} events/s: no events", thousands(rate)));
                }
            }
        }
        vec![Target {
            name: format!(
                "sensor cost grows with event rate, not agents: CPU per event with {most} \
                 agents within +{:.0} % of {fewest}'s at the same rate, from the same {} \
                 processes",
                PER_EVENT_SLACK * 100.0,
                self.args.processes
            ),
            measured: measured.join("; "),
            verdict: if pass { "PASS" } else { "MISS" }.into(),
        }]
    }

    pub fn render(&self) -> String {
        let mut out = vec![
            report::heading(),
            format!(
                "({} runs of {} s per row, taken in turns; agents {} sharing {} processes, and \
                 one agent in one process; total rates {} events/s)",
                self.args.repeats,
                self.args.seconds,
                self.args
                    .agents
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                self.args.processes,
                self.args
                    .rates
                    .iter()
                    .map(|&r| thousands(r))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            String::new(),
            "Per run a fresh sensor (`agent-sensor run --events /dev/null --repeat-window-ms 0 \
             --metrics-addr 127.0.0.1:0`, default policy: every open is sent) and N agents \
             sharing P processes, each agent `agent-sensor exec --agent NAME --worktree DIR -- \
             xtask bench-workload open-close --path DIR/src/lib.rs --processes P/N --per-second \
             rate/P …` (P/N paced open/close loops of a file in the agent's own worktree, each \
             starting at a phase of its own in its first interval, so that no two run in step; \
             the worktrees lie side by side in one directory, as an orchestrator's do, so every \
             open is beside every other agent's worktree, where the isolation rules look). Once \
             all N are registered (`agent_sensor_agents{state=\"running\"}`), 2 s with every loop \
             still waiting (idle), then the loops start together and the sensor is measured \
             over the busy window: events decoded and lost from its metrics, its CPU time (the \
             scheduler's, per thread, to the nanosecond), its memory at the end. Rows show \
             medians over the runs (lost: the sum; memory: the largest)."
                .into(),
            String::new(),
            "Every row has the same P processes but the reference (one agent, one process): \
             the number of processes can move the cost per event by itself (how events bunch \
             into the sensor's wake-ups, what is still in its caches when it wakes), and the \
             target is about agents. The reference shows what the processes alone amount to."
                .into(),
            String::new(),
            "| agents | processes | total rate | idle CPU (cores) | idle VmRSS MiB | events/s | \
             lost | sensor CPU (cores) | µs CPU per event | min–max | VmRSS MiB | VmHWM MiB | \
             other CPU (cores) |"
                .into(),
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: \
             | ---: |"
                .into(),
        ];
        for r in &self.rows {
            let dash = || "—".to_string();
            out.push(format!(
                "| {} | {} | {} | {:.3} | {:.1} | {} | {} | {:.3} | {} | {} | {:.1} | {:.1} | \
                 {:.2} |",
                r.agents,
                r.processes,
                thousands(r.rate),
                r.median(|run| Some(run.idle.cores())).unwrap_or(f64::NAN),
                report::mib(r.max_memory(|run| run.idle.memory.rss_kib)),
                thousands(
                    r.median(|run| Some(run.busy.events as f64 / run.busy.seconds))
                        .unwrap_or(0.0) as u64
                ),
                thousands(r.runs.iter().map(|run| run.busy.lost).sum()),
                r.median(|run| Some(run.busy.cores())).unwrap_or(f64::NAN),
                r.micros_per_event()
                    .map_or_else(dash, |us| format!("{us:.2}")),
                r.micros_per_event_range()
                    .map_or_else(dash, |(lo, hi)| format!("{lo:.2}–{hi:.2}")),
                report::mib(r.max_memory(|run| run.busy.memory.rss_kib)),
                report::mib(r.max_memory(|run| run.busy.memory.peak_rss_kib)),
                r.median(|run| Some(run.busy.other_cores))
                    .unwrap_or(f64::NAN),
            ));
        }
        out.extend([String::new(), "#### targets".into(), String::new()]);
        out.extend(report::targets_table(&self.targets()));
        out.push(String::new());
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cpu: f64, events: u64) -> Run {
        let window = |cpu, events| Window {
            seconds: 1.0,
            events,
            lost: 0,
            cpu,
            memory: Memory {
                peak_rss_kib: 1024,
                rss_kib: 1024,
            },
            other_cores: 0.0,
        };
        Run {
            idle: window(0.0, 0),
            busy: window(cpu, events),
        }
    }

    fn row(agents: u64, processes: u64, micros: &[f64]) -> Row {
        Row {
            agents,
            processes,
            rate: 1000,
            runs: micros.iter().map(|us| run(us * 1e-3, 1000)).collect(),
        }
    }

    fn scaling(rows: Vec<Row>) -> Scaling {
        Scaling {
            args: ScalingArgs {
                agents: vec![1, 100],
                rates: vec![1000],
                processes: 100,
                seconds: 1,
                repeats: 3,
            },
            rows,
        }
    }

    #[test]
    fn agents_are_compared_at_equal_processes_by_their_median_run() {
        // The one-process reference is far cheaper, and one run of 100 agents is an outlier:
        // neither may decide the verdict.
        let s = scaling(vec![
            row(1, 1, &[1.0, 1.0, 1.0]),
            row(1, 100, &[2.0, 2.1, 1.9]),
            row(100, 100, &[2.4, 9.0, 2.3]),
        ]);
        let target = &s.targets()[0];
        assert_eq!(target.verdict, "PASS", "{}", target.measured);
        assert!(
            target.measured.contains("2.00 → 2.40 µs/event (1.20×)"),
            "{}",
            target.measured
        );
        assert!(target.measured.contains("one agent in one process: 1.00"));

        let s = scaling(vec![
            row(1, 1, &[1.0]),
            row(1, 100, &[2.0, 2.0, 2.0]),
            row(100, 100, &[2.6, 2.7, 2.6]),
        ]);
        assert_eq!(s.targets()[0].verdict, "MISS");
    }

    #[test]
    fn a_row_without_events_misses() {
        let mut empty = row(100, 100, &[1.0]);
        empty.runs[0].busy.events = 0;
        let s = scaling(vec![row(1, 100, &[2.0]), empty]);
        let target = &s.targets()[0];
        assert_eq!(target.verdict, "MISS");
        assert!(target.measured.contains("no events"), "{}", target.measured);
    }
}
