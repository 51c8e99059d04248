//! How the sensor's cost scales with the number of agents: 1, 10 and 100 concurrent agents
//! (`agent-sensor exec`), each a paced open/close loop, sharing the same total event rate; at
//! two total rates. The claim to check: CPU follows the event rate, not the agent count.

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
    /// Seconds of measurement per row. CPU time comes in 10 ms ticks: at 10,000 events/s a
    /// 5 s row is some 25 ticks, too coarse for a ratio between rows.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

impl ScalingArgs {
    pub fn quick() -> Self {
        Self {
            agents: vec![1, 10, 100],
            rates: vec![10_000, 50_000],
            seconds: 3,
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

pub struct Row {
    pub agents: u64,
    pub rate: u64,
    /// The agents registered, their loops not started yet.
    pub idle: Window,
    pub busy: Window,
}

pub struct Scaling {
    pub args: ScalingArgs,
    pub rows: Vec<Row>,
}

pub fn run(bench: &Bench, args: &ScalingArgs) -> Result<Scaling> {
    let mut rows = Vec::new();
    for &rate in &args.rates {
        for &agents in &args.agents {
            eprintln!(
                "xtask bench: scaling: {agents} agent(s), {} events/s in all",
                thousands(rate)
            );
            rows.push(row(bench, args, agents, rate)?);
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

fn row(bench: &Bench, args: &ScalingArgs, agents: u64, rate: u64) -> Result<Row> {
    let dir = bench.work.subdir(&format!("scaling-{agents}-{rate}"))?;
    let sensor = RunningSensor::start_with(
        &bench.sensor,
        &dir,
        &SensorOptions {
            metrics: true,
            event_stream: true,
            ..SensorOptions::default()
        },
    )?;
    let url = sensor.metrics_url()?.to_string();
    let go = dir.join("go");
    let per_agent = rate as f64 / agents as f64;
    let mut children = Agents(Vec::new());
    for i in 0..agents {
        let name = format!("bench-scale-{agents}-{rate}-{i}");
        let worktree = dir.join("worktrees").join(&name);
        std::fs::create_dir_all(&worktree)?;
        let mut cmd = sensor.exec_command(&name, &worktree, None);
        let load =
            workload::paced_open_close_command(per_agent, args.seconds as f64 + 1.0, Some(&go))?;
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
    Ok(Row {
        agents,
        rate,
        idle,
        busy,
    })
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
    let cpu_before = sensor.cpu_seconds()?;
    let other = cpu::OtherCpu::start()?;
    let start = Instant::now();
    std::thread::sleep(length);
    let after = metrics::scrape(url)?;
    let cpu = sensor.cpu_seconds()? - cpu_before;
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
            let per_event = |agents: u64| {
                self.rows
                    .iter()
                    .find(|r| r.agents == agents && r.rate == rate)
                    .and_then(|r| r.busy.micros_per_event())
            };
            match (per_event(fewest), per_event(most)) {
                (Some(a), Some(b)) => {
                    let ratio = b / a;
                    pass &= ratio <= 1.0 + PER_EVENT_SLACK;
                    measured.push(format!(
                        "{} events/s: {a:.2} → {b:.2} µs/event ({ratio:.2}×)",
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
                 agents within +{:.0} % of {fewest}'s at the same rate",
                PER_EVENT_SLACK * 100.0
            ),
            measured: measured.join("; "),
            verdict: if pass { "PASS" } else { "MISS" }.into(),
        }]
    }

    pub fn render(&self) -> String {
        let mut out = vec![
            report::heading(),
            format!(
                "({} s per measurement; agents {}; total rates {} events/s)",
                self.args.seconds,
                self.args
                    .agents
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                self.args
                    .rates
                    .iter()
                    .map(|&r| thousands(r))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            String::new(),
            "Per row a fresh sensor (`agent-sensor run --events /dev/null --metrics-addr \
             127.0.0.1:0`, default policy) and N agents, each `agent-sensor exec --agent NAME \
             --worktree DIR -- <open/close loop paced to rate/N>`. Once all N are registered \
             (`agent_sensor_agents{state=\"running\"}`), 2 s with every loop still waiting \
             (idle), then the loops start together and the sensor is measured over the busy \
             window: events decoded and lost from its metrics, its utime+stime, its memory at \
             the end."
                .into(),
            String::new(),
            "| agents | total rate | idle CPU (cores) | idle VmRSS MiB | events/s | lost | \
             sensor CPU (cores) | µs CPU per event | VmRSS MiB | VmHWM MiB | other CPU (cores) |"
                .into(),
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |".into(),
        ];
        for r in &self.rows {
            out.push(format!(
                "| {} | {} | {:.3} | {:.1} | {} | {} | {:.3} | {} | {:.1} | {:.1} | {:.2} |",
                r.agents,
                thousands(r.rate),
                r.idle.cores(),
                report::mib(r.idle.memory.rss_kib),
                thousands((r.busy.events as f64 / r.busy.seconds) as u64),
                thousands(r.busy.lost),
                r.busy.cores(),
                r.busy
                    .micros_per_event()
                    .map_or("—".into(), |us| format!("{us:.2}")),
                report::mib(r.busy.memory.rss_kib),
                report::mib(r.busy.memory.peak_rss_kib),
                r.busy.other_cores,
            ));
        }
        out.extend([String::new(), "#### targets".into(), String::new()]);
        out.extend(report::targets_table(&self.targets()));
        out.push(String::new());
        out.join("\n")
    }
}
