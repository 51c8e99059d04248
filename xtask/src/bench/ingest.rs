//! Sustained ingest: a tracked open/close loop paced to a rising rate of events, one step
//! after the other under one sensor; per step the events the sensor decoded and lost (its
//! metrics), its CPU and memory. The highest lossless rate is the sustained ingest rate; the
//! steps above it give the loss rate beyond it. Two series: the sensor decoding, correlating
//! and judging events (the default deployment), and the same sensor also writing every event
//! as a JSON line.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::{
    cgroup::BenchCgroup,
    cpu, metrics,
    report::{self, thousands, Target},
    sensor::{Memory, RunningSensor, SensorOptions},
    workload, Bench,
};

#[derive(clap::Args, Clone, Debug)]
pub struct IngestArgs {
    /// Offered rates in events per second (comma-separated); 0 = as fast as the loop goes.
    #[arg(long, value_delimiter = ',', default_values_t = [50_000u64, 100_000, 200_000, 300_000, 400_000, 600_000, 0])]
    pub rates: Vec<u64>,
    /// Seconds per step.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

impl IngestArgs {
    pub fn quick() -> Self {
        Self {
            rates: vec![100_000, 300_000, 600_000, 0],
            seconds: 3,
        }
    }
}

/// Counters read from /metrics: everything lost before analysis except `truncated` (those
/// events were delivered, with a string cut short).
const LOST_EXCEPT: &[&str] = &["reason=\"truncated\""];

pub struct Step {
    /// 0: unpaced.
    pub offered: u64,
    pub wall: Duration,
    pub iterations: u64,
    pub decoded: u64,
    pub lost: u64,
    pub sensor_cpu: f64,
    pub memory: Memory,
    pub other_cores: f64,
}

impl Step {
    pub fn decoded_per_second(&self) -> f64 {
        self.decoded as f64 / self.wall.as_secs_f64()
    }

    pub fn loss(&self) -> f64 {
        self.lost as f64 / (self.decoded + self.lost).max(1) as f64
    }
}

pub struct Ingest {
    pub args: IngestArgs,
    pub series: Vec<Series>,
}

/// The steps under one sensor configuration.
pub struct Series {
    /// The sensor also wrote every event as a JSON line (`--events /dev/null`).
    pub event_stream: bool,
    pub steps: Vec<Step>,
}

pub fn run(bench: &Bench, args: &IngestArgs) -> Result<Ingest> {
    let mut series = Vec::new();
    for event_stream in [false, true] {
        series.push(Series {
            event_stream,
            steps: run_series(bench, args, event_stream)?,
        });
    }
    Ok(Ingest {
        args: args.clone(),
        series,
    })
}

fn run_series(bench: &Bench, args: &IngestArgs, event_stream: bool) -> Result<Vec<Step>> {
    let cgroup = BenchCgroup::create(&bench.cgroup_root, "ingest")?;
    let dir = bench.work.subdir("ingest")?;
    let sensor = RunningSensor::start_with(
        &bench.sensor,
        &dir,
        &SensorOptions {
            track_cgroups: vec![&cgroup.path],
            metrics: true,
            event_stream,
            every_open: true,
            ..SensorOptions::default()
        },
    )?;
    let url = sensor.metrics_url()?.to_string();
    let mut steps = Vec::new();
    for &offered in &args.rates {
        eprintln!(
            "xtask bench: ingest{}: {} events/s for {} s",
            if event_stream {
                " with the event stream"
            } else {
                ""
            },
            if offered == 0 {
                "unpaced".to_string()
            } else {
                thousands(offered)
            },
            args.seconds
        );
        let before = metrics::scrape(&url)?;
        let cpu_before = sensor.cpu_seconds()?;
        let other = cpu::OtherCpu::start()?;
        let start = Instant::now();
        let mut cmd = if offered == 0 {
            workload::open_close_command(workload::Length::Seconds(args.seconds))?
        } else {
            workload::paced_open_close_command(offered as f64, args.seconds as f64, 1, None, None)?
        };
        cgroup.join_before_exec(&mut cmd);
        let result = workload::finish(cmd.spawn().context("cannot start the workload")?)?;
        let wall = start.elapsed();
        // What the ring buffer still holds is decoded within a moment, and drops are
        // reported once a second: wait for both before reading the counters.
        std::thread::sleep(Duration::from_millis(1500));
        let after = metrics::scrape(&url)?;
        let sensor_cpu = sensor.cpu_seconds()? - cpu_before;
        let delta = |name: &str, except: &[&str]| {
            (after.sum(name, except) - before.sum(name, except)).max(0.0) as u64
        };
        steps.push(Step {
            offered,
            wall,
            iterations: result.iterations,
            decoded: delta("agent_sensor_events_total", &[]),
            lost: delta("agent_sensor_events_dropped_total", LOST_EXCEPT),
            sensor_cpu,
            memory: sensor.memory()?,
            other_cores: other.cores_excluding(sensor_cpu)?,
        });
    }
    sensor.stop()?;
    Ok(steps)
}

impl Series {
    fn label(&self) -> &'static str {
        if self.event_stream {
            "with the event stream"
        } else {
            "decoding and detection only"
        }
    }

    /// The fastest step without loss.
    pub fn best_lossless(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.lost == 0)
            .max_by(|a, b| a.decoded_per_second().total_cmp(&b.decoded_per_second()))
    }

    fn target(&self) -> Target {
        let name = format!(
            "sustained ingest without loss, {} (reported; no number set)",
            self.label()
        );
        let Some(best) = self.best_lossless() else {
            return Target {
                name,
                measured: "every step lost events".into(),
                verdict: "—".into(),
            };
        };
        let above: Vec<String> = self
            .steps
            .iter()
            .filter(|s| s.lost > 0 && s.decoded_per_second() > best.decoded_per_second() * 0.9)
            .map(|s| {
                if s.offered == 0 {
                    format!("{} lost unpaced", report::percent_plain(s.loss()))
                } else {
                    format!(
                        "{} lost at {} offered",
                        report::percent_plain(s.loss()),
                        thousands(s.offered)
                    )
                }
            })
            .collect();
        Target {
            name,
            measured: format!(
                "{} events/s at {:.2} sensor cores{}",
                thousands(best.decoded_per_second() as u64),
                best.sensor_cpu / best.wall.as_secs_f64(),
                if above.is_empty() {
                    String::new()
                } else {
                    format!("; above it {}", above.join(", "))
                }
            ),
            verdict: "—".into(),
        }
    }

    fn table(&self) -> Vec<String> {
        let mut out = vec![
            format!("#### {}", self.label()),
            String::new(),
            "| offered events/s | achieved iterations/s | decoded | decoded/s | lost | loss | \
             sensor CPU (cores) | decoded per sensor CPU-second | VmRSS MiB | VmHWM MiB | \
             other CPU (cores) |"
                .into(),
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |".into(),
        ];
        for s in &self.steps {
            out.push(format!(
                "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.1} | {:.1} | {:.2} |",
                offered(s.offered),
                thousands((s.iterations as f64 / s.wall.as_secs_f64()) as u64),
                thousands(s.decoded),
                thousands(s.decoded_per_second() as u64),
                thousands(s.lost),
                report::percent_plain(s.loss()),
                s.sensor_cpu / s.wall.as_secs_f64(),
                thousands((s.decoded as f64 / s.sensor_cpu.max(1e-9)) as u64),
                report::mib(s.memory.rss_kib),
                report::mib(s.memory.peak_rss_kib),
                s.other_cores,
            ));
        }
        out.push(String::new());
        out
    }
}

impl Ingest {
    pub fn targets(&self) -> Vec<Target> {
        self.series.iter().map(Series::target).collect()
    }

    pub fn render(&self) -> String {
        let mut out = vec![
            report::heading(),
            format!(
                "({} s per step; offered rates {})",
                self.args.seconds,
                self.args
                    .rates
                    .iter()
                    .map(|&r| offered(r))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            String::new(),
            "Per series one sensor (`agent-sensor run --track-cgroup <cgroup> --metrics-addr \
             127.0.0.1:0`, plus `--events /dev/null` for the event stream) and, step by step, \
             one tracked open/close loop paced to the offered rate (one record per iteration; \"unpaced\" runs as fast as it \
             can). Decoded and lost come from the sensor's `/metrics` \
             (`agent_sensor_events_total`, `agent_sensor_events_dropped_total` without \
             `truncated`), read before the step and 1.5 s after it (the ring buffer drained, \
             drops reported). events/s is decoded over the loop's wall time; CPU is the \
             sensor's utime+stime over the step and the 1.5 s after, per second of loop; \
             decoded per sensor CPU-second is what one core given wholly to the sensor would \
             decode (the loop needs a core of its own, and the VM has two)."
                .into(),
            String::new(),
        ];
        for series in &self.series {
            out.extend(series.table());
        }
        out.push("#### result".into());
        out.push(String::new());
        out.extend(report::targets_table(&self.targets()));
        out.push(String::new());
        out.join("\n")
    }
}

fn offered(rate: u64) -> String {
    if rate == 0 {
        "unpaced".into()
    } else {
        thousands(rate)
    }
}
