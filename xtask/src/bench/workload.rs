//! The load the benchmark measures: `open("/dev/null")` + `close` in a loop, in a process of its
//! own (`xtask bench-workload open-close …`), so that the sensor can track it by cgroup and the
//! bench process itself stays untracked.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

/// Untimed iterations before the timed loop, so that first-touch costs (page faults, cold
/// caches, the sensor's first map entries for this process) stay out of the measurement.
pub const WARM_UP_ITERATIONS: u64 = 10_000;

/// Iterations between clock reads when the loop runs for a duration.
const BATCH: u64 = 4096;

#[derive(Parser)]
pub struct WorkloadArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// open("/dev/null", O_RDONLY) + close in a loop; prints
    /// `iterations=N ns_per_iteration=X`, timed around the loop only.
    OpenClose {
        /// Run exactly this many iterations.
        #[arg(long, conflicts_with = "seconds", required_unless_present = "seconds")]
        iterations: Option<u64>,
        /// Run for this long instead (checked every few thousand iterations).
        #[arg(long)]
        seconds: Option<f64>,
    },
}

pub fn run(args: WorkloadArgs) -> Result<()> {
    let Workload::OpenClose {
        iterations,
        seconds,
    } = args.workload;
    open_close(WARM_UP_ITERATIONS)?;
    // Instant is CLOCK_MONOTONIC.
    let start = Instant::now();
    let done = match (iterations, seconds) {
        (Some(n), _) => {
            open_close(n)?;
            n
        }
        (None, Some(seconds)) => {
            let deadline = start + Duration::from_secs_f64(seconds);
            let mut done = 0;
            while Instant::now() < deadline {
                open_close(BATCH)?;
                done += BATCH;
            }
            done
        }
        (None, None) => bail!("give --iterations or --seconds"),
    };
    let elapsed = start.elapsed();
    println!(
        "iterations={done} ns_per_iteration={:.1}",
        elapsed.as_nanos() as f64 / done.max(1) as f64
    );
    Ok(())
}

fn open_close(iterations: u64) -> Result<()> {
    let path = c"/dev/null";
    // A plain counter: xtask is usually a debug build, and this keeps the loop's own cost tiny
    // next to the two syscalls.
    let mut i = 0;
    while i < iterations {
        // SAFETY: `path` is a NUL-terminated string; the descriptor is closed right away.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot open /dev/null");
        }
        // SAFETY: `fd` is ours.
        unsafe { libc::close(fd) };
        i += 1;
    }
    Ok(())
}

/// How long a workload process runs.
pub enum Length {
    Iterations(u64),
    Seconds(u64),
}

/// What one workload process reported.
pub struct LoopResult {
    pub iterations: u64,
    pub ns_per_iteration: f64,
}

/// A command that runs the open/close workload (this same xtask binary, hidden subcommand).
pub fn open_close_command(length: Length) -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["bench-workload", "open-close"]);
    match length {
        Length::Iterations(n) => cmd.args(["--iterations", &n.to_string()]),
        Length::Seconds(s) => cmd.args(["--seconds", &s.to_string()]),
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    Ok(cmd)
}

/// Waits for a workload process and reads its result.
pub fn finish(child: std::process::Child) -> Result<LoopResult> {
    let output = child
        .wait_with_output()
        .context("cannot wait for the workload")?;
    if !output.status.success() {
        bail!("the open/close workload failed ({})", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}= in the workload's output {text:?}"))
    };
    Ok(LoopResult {
        iterations: field("iterations")?.parse()?,
        ns_per_iteration: field("ns_per_iteration")?.parse()?,
    })
}
