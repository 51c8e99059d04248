//! Project tasks: `cargo xtask build|run|test|probe|bench`.
//!
//! Every task first makes sure the eBPF toolchain is present — the rust-src component and a
//! bpf-linker built against this Rust toolchain's own LLVM, cached per toolchain so that only
//! the first run pays for it — and then builds the single `agent-sensor` binary, which embeds
//! the eBPF object. Running a task twice rebuilds nothing that did not change.

mod bench;
mod fuzz;
mod toolchain;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "agent-sensor project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain if needed and build target/release/agent-sensor.
    Build,
    /// Build, then run the sensor as root: `agent-sensor run` with the arguments after `--`
    /// (default: `--events -`, every event as JSON on stdout). Ctrl-C stops it cleanly.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run every test: unit tests and the real-kernel integration tests
    /// (those need root and say they are skipped otherwise).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then print the kernel capability table (`agent-sensor probe`).
    Probe,
    /// Build, then measure the sensor (and its peers, bpftrace and auditd) as root: every
    /// section of BENCHMARKS.md and its plot, or the one section named.
    Bench(bench::BenchArgs),
    /// Run every fuzz target (cargo-fuzz, nightly) for a bounded time; fail on a crash.
    Fuzz(fuzz::FuzzArgs),
    /// The load `bench` measures, run by `bench` in processes of their own.
    #[command(hide = true)]
    BenchWorkload(bench::workload::WorkloadArgs),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Build => {
            build()?;
        }
        Task::Run { args } => {
            let binary = build()?;
            let args = if args.is_empty() {
                vec!["--events".into(), "-".into()]
            } else {
                args
            };
            exec_as_root(&binary, std::iter::once("run".to_string()).chain(args))?;
        }
        Task::Test { args } => test(&args)?,
        Task::Probe => {
            let binary = build()?;
            exec_as_root(&binary, ["probe".to_string()])?;
        }
        Task::Bench(args) => bench::run(args)?,
        Task::BenchWorkload(args) => bench::workload::run(args)?,
        Task::Fuzz(args) => fuzz::run(args)?,
    }
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `cargo` with the eBPF toolchain on the build script's PATH.
fn cargo(tools_bin: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root())
        .env("AGENT_SENSOR_TOOLS_BIN", tools_bin);
    cmd
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Builds the release binary; returns its path.
fn build() -> Result<PathBuf> {
    let tools_bin = toolchain::ensure()?;
    eprintln!("xtask: building agent-sensor (release, eBPF object embedded)");
    run_checked(cargo(&tools_bin).args(["build", "--release", "-p", "agent-sensor"]))?;
    Ok(workspace_root().join("target/release/agent-sensor"))
}

fn test(extra: &[String]) -> Result<()> {
    let binary = build()?;
    let tools_bin = toolchain::ensure()?;
    eprintln!(
        "xtask: running tests (integration tests use {})",
        binary.display()
    );
    run_checked(
        cargo(&tools_bin)
            .args(["test", "--release", "--workspace"])
            .args(extra)
            .env("AGENT_SENSOR_BIN", &binary),
    )?;
    if !extra.is_empty() {
        return Ok(());
    }
    // The programs read kernel structs with typed loads where the kernel has the
    // bpf_rdonly_cast kfunc (6.2 on), as this one does, and with bpf_probe_read_kernel where it
    // has not: the capture tests run once more on that side.
    eprintln!("xtask: the capture tests again, reading kernel structs as older kernels do");
    run_checked(
        cargo(&tools_bin)
            .args([
                "test",
                "--release",
                "-p",
                "agent-sensor-tests",
                "--test",
                "capture",
            ])
            .env("AGENT_SENSOR_BIN", &binary)
            .env(NO_TYPED_CASTS_ENV, "1"),
    )
}

/// `agent-sensor`'s switch to the bpf_probe_read_kernel side (its loader's
/// `NO_TYPED_CASTS_ENV`).
const NO_TYPED_CASTS_ENV: &str = "AGENT_SENSOR_NO_TYPED_CASTS";

/// Runs the binary, through sudo when we are not root (loading eBPF needs root).
fn exec_as_root(binary: &Path, args: impl IntoIterator<Item = String>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc_geteuid() } == 0;
    let mut cmd = if is_root {
        Command::new(binary)
    } else {
        eprintln!("xtask: not root; running through sudo");
        let mut c = Command::new("sudo");
        c.arg(binary);
        c
    };
    cmd.args(args);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    // Ctrl-C reaches the sensor too; its own clean exit is what matters.
    std::process::exit(status.code().unwrap_or(130));
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
