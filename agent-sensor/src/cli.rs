//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use agent_sensor::daemon::Output;

#[derive(Debug, Parser)]
#[command(
    name = "agent-sensor",
    version,
    about = "eBPF host sensor that watches AI-agent processes from inside the kernel",
    long_about = "agent-sensor watches AI coding agents (and every process they start) from \
                  inside the kernel with eBPF: process, file and network activity, attributed \
                  to the agent. It must run as root. Start with `agent-sensor probe` to see \
                  what this kernel supports."
)]
pub struct Cli {
    /// Log level of the daemon's own log on stderr (error, warn, info, debug, trace).
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the eBPF programs and watch tracked agents until SIGINT/SIGTERM.
    ///
    /// On stop every program, link and map is detached and unloaded.
    Run(RunArgs),
    /// Report which eBPF hook families work on this kernel, by loading, attaching and
    /// triggering a tiny program for each. Mounts tracefs, bpffs and securityfs if missing.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Write every captured event as one JSON line to FILE (appended), or `-` for stdout.
    #[arg(long, value_name = "FILE")]
    pub events: Option<Output>,

    /// Size of the kernel→daemon ring buffer in bytes: a power of two, at least 4096.
    #[arg(long, default_value_t = 8 * 1024 * 1024, value_name = "BYTES")]
    pub ring_bytes: u32,

    /// Track this process and every descendant it creates (repeatable).
    #[arg(long = "track-pid", value_name = "PID")]
    pub track_pids: Vec<u32>,

    /// Track every task in this cgroup v2 directory, now and later (repeatable).
    #[arg(long = "track-cgroup", value_name = "DIR")]
    pub track_cgroups: Vec<PathBuf>,
}
