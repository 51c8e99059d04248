//! `cargo xtask fuzz [--seconds N] [--target T]… [--write-seeds]`: runs the cargo-fuzz targets
//! of `agent-sensor/fuzz/` (the ring-record decoder, the DNS parsers, the policy parser, the
//! byte escaping) for a bounded time each, and fails if any of them finds a crash, naming the
//! input that reproduces it.
//!
//! cargo-fuzz is installed once (`cargo install cargo-fuzz --locked`) into the same tools
//! cache as bpf-linker. The targets need a nightly toolchain (sanitizer flags); without one
//! the stable toolchain is used with `RUSTC_BOOTSTRAP=1`. They are built with
//! `AYA_BUILD_SKIP=1`: the parsers need no eBPF object.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

/// cargo-fuzz release known to work with libfuzzer-sys 0.4 and this toolchain.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every fuzz target, in the order they run.
pub const TARGETS: [&str; 4] = ["decode", "dns", "policy", "escape"];

/// Seconds a single input may take before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_SECS: u64 = 10;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Run only this target (repeatable): decode, dns, policy, escape.
    #[arg(long = "target", value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Sanitizer the targets are built with. `none` builds in half the time and runs the
    /// policy target about five times faster; `address` also checks the decoder's unsafe
    /// reads (overflow and debug assertions are on either way).
    #[arg(long, value_enum, default_value_t = Sanitizer::None)]
    pub sanitizer: Sanitizer,
    /// Rewrite the committed seed corpora (corpus/<target>/seed-*) instead of fuzzing.
    #[arg(long)]
    pub write_seeds: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sanitizer {
    None,
    Address,
}

impl Sanitizer {
    fn as_str(self) -> &'static str {
        match self {
            Sanitizer::None => "none",
            Sanitizer::Address => "address",
        }
    }
}

fn fuzz_dir() -> PathBuf {
    crate::workspace_root().join("agent-sensor/fuzz")
}

pub fn run(args: FuzzArgs) -> Result<()> {
    for target in &args.targets {
        if !TARGETS.contains(&target.as_str()) {
            bail!(
                "no fuzz target {target:?}; the targets are {}",
                TARGETS.join(", ")
            );
        }
    }
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let fuzz = Fuzz::new(args.sanitizer)?;
    if args.write_seeds {
        return fuzz.write_seeds();
    }
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        TARGETS
            .into_iter()
            .filter(|t| args.targets.iter().any(|a| a == t))
            .collect()
    };
    let started = Instant::now();
    let mut crashes = Vec::new();
    for target in &targets {
        crashes.extend(fuzz.run_target(target, args.seconds)?);
    }
    eprintln!(
        "xtask: fuzzed {} target(s) for {} s each; {:.0} s in all (build included)",
        targets.len(),
        args.seconds,
        started.elapsed().as_secs_f64()
    );
    if !crashes.is_empty() {
        for (target, input) in &crashes {
            eprintln!(
                "xtask: fuzz target {target} crashed on {}\n       reproduce: cd agent-sensor && \
                 AYA_BUILD_SKIP=1 cargo +nightly fuzz run --sanitizer {} {target} {}",
                input.display(),
                args.sanitizer.as_str(),
                input.display()
            );
        }
        bail!("{} fuzz crash(es) found", crashes.len());
    }
    Ok(())
}

struct Fuzz {
    /// Directory holding `cargo-fuzz`.
    tools_bin: PathBuf,
    /// `+nightly`, or nothing when the stable toolchain stands in (with RUSTC_BOOTSTRAP).
    toolchain: Option<&'static str>,
    sanitizer: Sanitizer,
}

impl Fuzz {
    fn new(sanitizer: Sanitizer) -> Result<Self> {
        let tools_bin = ensure_cargo_fuzz()?;
        let toolchain = has_nightly().then_some("+nightly");
        if toolchain.is_none() {
            eprintln!(
                "xtask: no nightly toolchain (rustup toolchain install nightly); fuzzing with the \
                 stable one and RUSTC_BOOTSTRAP=1"
            );
        }
        Ok(Self {
            tools_bin,
            toolchain,
            sanitizer,
        })
    }

    /// `cargo [+nightly] fuzz <args>` in `agent-sensor/`, with cargo-fuzz on PATH.
    fn cargo_fuzz(&self, args: &[&str]) -> Command {
        // The rustup proxy, not $CARGO (that is this stable toolchain's own cargo, which
        // ignores `+nightly`).
        let mut cmd = Command::new("cargo");
        cmd.args(self.toolchain).arg("fuzz").args(args);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let paths = std::iter::once(self.tools_bin.clone()).chain(std::env::split_paths(&path));
        cmd.current_dir(crate::workspace_root().join("agent-sensor"))
            .env("PATH", std::env::join_paths(paths).unwrap_or(path))
            .env("AYA_BUILD_SKIP", "1");
        // What `cargo run` of this xtask pinned to its own toolchain.
        for var in [
            "CARGO",
            "RUSTC",
            "RUSTDOC",
            "RUSTUP_TOOLCHAIN",
            "RUSTC_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        if self.toolchain.is_none() {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd
    }

    /// Fuzzes `target` for `seconds`; returns the crash inputs it wrote (none: it held).
    fn run_target(&self, target: &str, seconds: u64) -> Result<Vec<(String, PathBuf)>> {
        let artifacts = fuzz_dir().join("artifacts").join(target);
        let before = files_in(&artifacts);
        let mut libfuzzer = vec![
            format!("-max_total_time={seconds}"),
            format!("-timeout={INPUT_TIMEOUT_SECS}"),
            "-print_final_stats=1".to_string(),
        ];
        let dict = fuzz_dir().join("dict").join(format!("{target}.dict"));
        if dict.is_file() {
            libfuzzer.push(format!("-dict={}", dict.display()));
        }
        let mut args = vec!["run", target, "--sanitizer", self.sanitizer.as_str(), "--"];
        args.extend(libfuzzer.iter().map(String::as_str));
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let started = Instant::now();
        let mut cmd = self.cargo_fuzz(&args);
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        // libFuzzer's progress lines (`#1234 NEW cov: …`), new-function notes and recommended
        // dictionary are many; everything else (the build, a crash report, the final stats)
        // is shown as it comes.
        let mut last_progress = None;
        let mut in_dictionary = false;
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("###### Recommended dictionary") {
                    in_dictionary = true;
                } else if line.starts_with("###### End of recommended dictionary") {
                    in_dictionary = false;
                } else if line
                    .strip_prefix('#')
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                {
                    last_progress = Some(line);
                } else if !in_dictionary
                    && !line.trim_start().starts_with("NEW_FUNC")
                    // Without a sanitizer libFuzzer misses its hooks, harmlessly.
                    && !line.starts_with("WARNING: Failed to find function")
                {
                    eprintln!("{line}");
                }
            }
        }
        let status = child.wait().context("waiting for cargo fuzz")?;
        if let Some(line) = last_progress {
            eprintln!("xtask: {target}: {line}");
        }
        let new: Vec<(String, PathBuf)> = files_in(&artifacts)
            .difference(&before)
            .map(|p| (target.to_string(), p.clone()))
            .collect();
        eprintln!(
            "xtask: {target}: {} after {:.0} s",
            if status.success() {
                "no crash"
            } else {
                "FAILED"
            },
            started.elapsed().as_secs_f64()
        );
        if !status.success() && new.is_empty() {
            bail!("{cmd:?} failed ({status}) without writing a crash input: see its output above");
        }
        Ok(new)
    }

    /// Builds and runs the `seed_corpus` binary of the fuzz crate.
    fn write_seeds(&self) -> Result<()> {
        let mut build = self.cargo_fuzz(&[
            "build",
            "seed_corpus",
            "--sanitizer",
            self.sanitizer.as_str(),
        ]);
        let status = build.status().context("cannot run cargo fuzz build")?;
        if !status.success() {
            bail!("{build:?} failed ({status})");
        }
        let target_dir = fuzz_dir().join("target");
        let binary = std::fs::read_dir(&target_dir)
            .with_context(|| format!("cannot list {}", target_dir.display()))?
            .flatten()
            .map(|triple| triple.path().join("release/seed_corpus"))
            .find(|p| p.is_file())
            .context("cargo fuzz build left no seed_corpus binary")?;
        let corpus = fuzz_dir().join("corpus");
        let status = Command::new(&binary)
            .arg(&corpus)
            .status()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", binary.display());
        }
        Ok(())
    }
}

/// Files in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

fn has_nightly() -> bool {
    Command::new("rustc")
        .args(["+nightly", "--version"])
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("nightly")
        })
}

/// cargo-fuzz, built once into the tools cache; returns the directory holding it.
fn ensure_cargo_fuzz() -> Result<PathBuf> {
    let root = crate::toolchain::tools_root().join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"));
    let bin = root.join("bin");
    if bin.join("cargo-fuzz").is_file() {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (first run only, under a minute) into {}",
        root.display()
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .arg("--root")
        .arg(&root)
        .status()
        .context("cannot run cargo install")?;
    if !status.success() || !bin.join("cargo-fuzz").is_file() {
        bail!("installing cargo-fuzz failed (see cargo's output above)");
    }
    Ok(bin)
}
