//! The run loop: drain the ring buffer, decode, write sinks; report kernel-side losses; stop
//! cleanly on SIGINT/SIGTERM (dropping the loaded object detaches every program).

use std::{
    fs::OpenOptions,
    io::{BufWriter, Write},
    path::PathBuf,
    time::Duration,
};

use agent_sensor_common::{drop_slot, EventKind};
use thiserror::Error;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    loader::{LoadError, LoadOptions, LoadedSensor},
    pipeline::{Pipeline, Stats},
    tracking::{self, TrackError},
};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Track(#[from] TrackError),
    #[error("cannot open events file {path}: {source}")]
    EventsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    fn open(&self) -> Result<Box<dyn Write + Send>, DaemonError> {
        Ok(match self {
            Output::Stdout => Box::new(std::io::stdout()),
            Output::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| DaemonError::EventsFile {
                        path: path.clone(),
                        source,
                    })?,
            ),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub load: LoadOptions,
    pub events: Option<Output>,
    pub track_pids: Vec<u32>,
    pub track_cgroups: Vec<PathBuf>,
}

/// Loads, attaches and runs until SIGINT or SIGTERM.
pub async fn run(options: RunOptions) -> Result<Stats, DaemonError> {
    let mut sensor = LoadedSensor::load(&options.load)?;
    let mut next_agent = 1u64;
    for pid in &options.track_pids {
        tracking::track_pid(&mut sensor, *pid, next_agent)?;
        log::info!("tracking process {pid} as agent {next_agent}");
        next_agent += 1;
    }
    for path in &options.track_cgroups {
        let id = tracking::track_cgroup(&mut sensor, path, next_agent)?;
        log::info!(
            "tracking cgroup {} (id {id}) as agent {next_agent}",
            path.display()
        );
        next_agent += 1;
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
    let ring = sensor.take_events()?;
    let mut ring = register(ring).map_err(DaemonError::Poll)?;
    let sink = match &options.events {
        Some(output) => Some(BufWriter::new(output.open()?)),
        None => None,
    };
    let mut pipeline = Pipeline::new(sink);
    pipeline.stats.kernel_drops = sensor.drop_counts()?;

    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut drop_check = tokio::time::interval(Duration::from_secs(1));
    log::info!(
        "agent-sensor ready: {} programs attached ({})",
        sensor.attached.len(),
        sensor.attached.join(", ")
    );

    loop {
        tokio::select! {
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(DaemonError::Poll)?;
                pipeline.drain(guard.get_inner_mut()).map_err(DaemonError::EventsWrite)?;
                guard.clear_ready();
                pipeline
                    .report_exited_sockets(&mut sensor.sock_stats()?)
                    .map_err(DaemonError::EventsWrite)?;
            }
            _ = drop_check.tick() => report_drops(&sensor, &mut pipeline.stats),
        }
    }
    // Whatever is still queued is written before the programs go away.
    pipeline
        .drain(ring.get_mut())
        .map_err(DaemonError::EventsWrite)?;
    pipeline
        .report_exited_sockets(&mut sensor.sock_stats()?)
        .map_err(DaemonError::EventsWrite)?;
    report_drops(&sensor, &mut pipeline.stats);
    drop(ring);
    if let Some(task) = log_forwarder {
        task.abort();
    }
    drop(sensor);
    let stats = pipeline.stats;
    log::info!(
        "stopped: {} events, {} undecodable; all programs detached",
        stats.events,
        stats.decode_errors
    );
    Ok(stats)
}

/// Registers a descriptor we own with the runtime.
fn register<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its descriptor and is moved into the AsyncFd, so the descriptor stays
    // open exactly as long as the registration.
    unsafe { AsyncFd::register(inner) }.map_err(|e| std::io::Error::other(e.to_string()))
}

/// Logs any growth of the kernel's loss counters, by kind and reason.
fn report_drops(sensor: &LoadedSensor, stats: &mut Stats) {
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
            s => match EventKind::ALL.iter().find(|k| k.slot() == s) {
                Some(kind) => format!("{} events lost (ring buffer full)", kind.name()),
                None => format!("losses in slot {s}"),
            },
        };
        log::warn!("kernel dropped {} {what}", new - old);
    }
    stats.kernel_drops = now;
}
