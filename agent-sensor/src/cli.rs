//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where `--persist` pins by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/agent-sensor";

use agent_sensor::{
    control::DEFAULT_SOCKET,
    daemon::Output,
    export::{http::DEFAULT_METRICS_ADDR, ocsf::AlertFormat},
};

#[derive(Debug, Parser)]
#[command(
    name = "agent-sensor",
    version,
    about = "eBPF host sensor that watches AI-agent processes from inside the kernel",
    long_about = "agent-sensor watches AI coding agents (and every process they start) from \
                  inside the kernel with eBPF: process, file and network activity, attributed \
                  to the agent, checked against a policy. The daemon (`run`) must run as root. \
                  Start with `agent-sensor probe` to see what this kernel supports."
)]
pub struct Cli {
    /// Log level of the daemon's own log on stderr (error, warn, info, debug, trace).
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Detect and alert; responses are reported as what would have been done.
    Monitor,
    /// Carry out the responses the policy picks (freeze, kill, deny).
    Enforce,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the eBPF programs and watch agents until SIGINT/SIGTERM.
    ///
    /// Agents come from `agent-sensor exec`, from the policy's discovery rules (known agent
    /// executables, AGENT_SENSOR_AGENT=<name> in the environment) and, at start, from agents
    /// already running. On stop every program, link and map is detached and unloaded.
    Run(RunArgs),
    /// Run a command as a watched agent: registers it with the running daemon, starts COMMAND
    /// in a cgroup of its own, and lets it run only once the kernel tracks it. Fails (and does
    /// not run COMMAND) when the daemon is not running. COMMAND runs as a child that stands in
    /// for exec: exec exits with COMMAND's exit code (or dies of the same signal), signals sent
    /// to exec by other processes are passed on (without a controlling terminal COMMAND leads a
    /// process group of its own, and they go to that group), and COMMAND dies if exec is killed.
    /// As a shell does, exec exits 127 when COMMAND is not found (before registering anything)
    /// and 126 when it cannot be executed.
    Exec(ExecArgs),
    /// List the agents the running daemon knows: name, worktree, processes, state, alerts.
    Agents {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        control_socket: PathBuf,
    },
    /// Let a frozen agent run on (a human's decision after a freeze).
    Thaw {
        /// Name of the agent.
        agent: String,
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        control_socket: PathBuf,
    },
    /// Kill every process of an agent (the whole tree, through its cgroup).
    Kill {
        /// Name of the agent.
        agent: String,
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        control_socket: PathBuf,
    },
    /// Remove everything a `run --persist` daemon left pinned in the kernel (programs, links,
    /// maps). Refused while a daemon uses them: stop it first.
    Uninstall {
        /// The pin directory the daemon ran with (`run --persist DIR`).
        #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
        persist_dir: PathBuf,
    },
    /// Validate a policy file; every error names its line and key.
    CheckConfig {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Report which eBPF hook families work on this kernel, by loading, attaching and
    /// triggering a tiny program for each. Mounts tracefs, bpffs and securityfs if missing.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// For benchmarks: attach a near-empty program (one map lookup) to the raw
        /// tracepoint sys_exit (the one the sensor uses), print `ready`, hold it SECONDS (or
        /// until killed) and detach: the cost of the syscall hook alone, without the sensor.
        #[arg(long, value_name = "SECONDS", hide = true)]
        hold_syscall_hooks: Option<u64>,
        /// With --hold-syscall-hooks: the tracepoints to hold (sys_enter too shows what an
        /// entry hook would add).
        #[arg(
            long,
            value_name = "TRACEPOINT",
            value_delimiter = ',',
            default_value = "sys_exit",
            value_parser = ["sys_enter", "sys_exit"],
            hide = true
        )]
        hooks: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Policy file (TOML); see `agent-sensor check-config`. Default: the built-in policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Overrides the policy's mode.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,

    /// Write every captured event as one JSON line to FILE (appended), or `-` for stdout.
    #[arg(long, value_name = "FILE")]
    pub events: Option<Output>,

    /// Write every alert as one JSON line to FILE (appended), or `-` for stdout.
    #[arg(long, value_name = "FILE")]
    pub alerts: Option<Output>,

    /// Format of `--alerts` and of the webhook: `json` (the sensor's own) or `ocsf` (OCSF
    /// Detection Finding, class 2004).
    #[arg(long, default_value = "json", value_name = "FORMAT")]
    pub alerts_format: AlertFormat,

    /// Serve Prometheus metrics at http://ADDR/metrics. Loopback by default; `none` serves
    /// nothing. Expose it beyond the host only behind your own TLS and access control.
    #[arg(long, default_value = DEFAULT_METRICS_ADDR, value_name = "ADDR")]
    pub metrics_addr: String,

    /// Agents that get their own `agent` label on agent_sensor_agent_alerts_total (the rest
    /// count as agent="other"); 0 disables that metric.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub metrics_agent_labels: usize,

    /// Also POST every alert to this http:// URL (one JSON object per request), with retry,
    /// backoff, and an on-disk spool in the state dir that survives outages and restarts.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,

    /// Where agents, learned behaviour and incident bundles are kept (overrides the policy).
    /// One daemon per state directory: a second one is refused.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// The control socket `exec`, `agents`, `thaw` and `kill` talk to (root only, mode 0600).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub control_socket: PathBuf,

    /// Pin maps and programs in this bpffs directory: tracking, capture and in-kernel
    /// enforcement go on while the daemon is down, and the next daemon takes over (with what
    /// the ring buffer collected meanwhile). Without it, stopping the daemon removes everything.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = DEFAULT_PIN_DIR)]
    pub persist: Option<PathBuf>,

    /// With --persist: at stop, remove the pins too (same as `agent-sensor uninstall`).
    #[arg(long, requires = "persist")]
    pub detach: bool,

    /// Also send file calls that failed because their path named nothing (ENOENT, ENOTDIR).
    /// By default the kernel only counts them (agent_sensor_events_filtered_total): nothing
    /// was read, written or refused, so no rule acts on them, and a build's dynamic loader
    /// makes thousands while it looks for libraries (over a third of a coding session's
    /// events). Refused calls (EACCES, EPERM, EROFS) and other failures are always sent.
    #[arg(long)]
    pub report_missing_paths: bool,

    /// Within this many milliseconds of an open that was sent, the same process opening the
    /// same file the same way (same flags, success) is counted in the kernel and not sent
    /// (agent_sensor_events_filtered_total{reason="repeat"}); the next open sent after the
    /// window carries the count ("repeats"). It tells no rule anything new, and a loop that
    /// opens one file, by design or to flood the ring, costs a map lookup per open instead
    /// of an event. Default 1000; 0 sends every open.
    #[arg(long, value_name = "MS")]
    pub repeat_window_ms: Option<u32>,

    /// Size of the kernel→daemon ring buffer in bytes: a power of two, at least 4096.
    #[arg(long, value_name = "BYTES")]
    pub ring_bytes: Option<u32>,

    /// While records keep coming, the daemon reads them in batches up to this many
    /// microseconds apart instead of being woken for each: every wake-up costs the task that
    /// writes the record an interrupt and the daemon a sleep and a wake (on the benchmark VM,
    /// over half of what the sensor cost a coding session). A record that comes after a quiet
    /// spell is read at once. Default: 1000 in enforce mode, where a freeze waits on the
    /// record, 4000 in monitor mode; 0 wakes the daemon for every record; at most 100000
    /// (and never so long that the ring could fill meanwhile).
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub max_event_delay_us: Option<u32>,

    /// Run this many nice levels above where the daemon was started (like auditd's
    /// priority_boost): on a host whose cores are all busy, a reader that waits for the CPU
    /// lets the ring buffer fill and events are lost (counted, but lost). 0 leaves it.
    #[arg(long, value_name = "LEVELS", default_value_t = 4)]
    pub priority_boost: u8,

    /// Track this process and every descendant it creates as a capture-only agent
    /// (repeatable; for debugging). A capture-only agent has no worktree of its own: the
    /// default profile's rules apply to it, and nothing another agent touches is "in" it.
    #[arg(long = "track-pid", value_name = "PID")]
    pub track_pids: Vec<u32>,

    /// Track every task in this cgroup v2 directory as a capture-only agent (repeatable;
    /// see --track-pid).
    #[arg(long = "track-cgroup", value_name = "DIR")]
    pub track_cgroups: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Name of the agent (letters, digits, '-', '_', '.').
    #[arg(long, value_name = "NAME")]
    pub agent: String,

    /// The agent's worktree. Default: the git worktree containing the current directory.
    #[arg(long, value_name = "DIR")]
    pub worktree: Option<PathBuf>,

    /// Policy profile of the agent. Default: the policy's discovery profile.
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,

    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub control_socket: PathBuf,

    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}
