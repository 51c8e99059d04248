//! A sensor the benchmark started: `agent-sensor run [--events /dev/null]` with a state dir,
//! control socket and (optionally) alerts file and metrics address of its own, read through
//! its stderr log, its metrics and /proc, stopped with SIGINT (killed if dropped while
//! running).

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub struct RunningSensor {
    child: Option<Child>,
    binary: PathBuf,
    stderr_lines: mpsc::Receiver<String>,
    log: Vec<String>,
    /// State dir, control socket and alerts file; removed when the sensor is gone.
    dir: PathBuf,
    metrics_url: Option<String>,
}

/// How to start a sensor beyond `run`.
#[derive(Default)]
pub struct SensorOptions<'a> {
    /// `--events /dev/null`: every event encoded as a JSON line, as a deployment that ships
    /// the full event stream would (and as the peers print every event).
    pub event_stream: bool,
    /// `--track-cgroup` each (capture-only agents).
    pub track_cgroups: Vec<&'a Path>,
    /// Serve metrics on an ephemeral loopback port (otherwise `--metrics-addr none`).
    pub metrics: bool,
    /// Write alerts to `alerts.jsonl` in the sensor's directory.
    pub alerts: bool,
    pub policy: Option<&'a Path>,
    /// `--mode enforce`.
    pub enforce: bool,
    /// `--repeat-window-ms 0`: every open sent, even one the process repeats. For the
    /// sections that load the sensor with a loop of opens of one file (ingest, latency under
    /// load, scaling, soak, sustained decode): with the default window the kernel counts
    /// nearly all of them and sends a few, and the load would not reach the daemon.
    pub every_open: bool,
}

/// What the sensor said about its run when it stopped.
#[derive(Clone, Copy, Debug)]
pub struct SensorTotals {
    pub events: u64,
    pub undecodable: u64,
    /// Sum of every `kernel dropped N …` line: records the kernel could not queue.
    pub kernel_dropped: u64,
}

impl SensorTotals {
    pub fn lossless(&self) -> bool {
        self.kernel_dropped == 0 && self.undecodable == 0
    }
}

/// Memory of the sensor process, in KiB, from /proc/<pid>/status.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
}

impl RunningSensor {
    /// Starts the sensor and waits until it says it is ready; its files go to a directory of
    /// its own under `base`.
    pub fn start_with(binary: &Path, base: &Path, options: &SensorOptions) -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("sensor-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut command = Command::new(binary);
        // The sensor stops cleanly on SIGTERM.
        end_with_xtask(&mut command, libc::SIGTERM);
        command
            .args(["run", "--log-level", "info"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--control-socket")
            .arg(dir.join("control.sock"))
            .args([
                "--metrics-addr",
                if options.metrics {
                    "127.0.0.1:0"
                } else {
                    "none"
                },
            ]);
        if options.event_stream {
            command.args(["--events", "/dev/null"]);
        }
        for cgroup in &options.track_cgroups {
            command.arg("--track-cgroup").arg(cgroup);
        }
        if options.alerts {
            // Created first, so that a watcher can follow it from the start.
            std::fs::write(dir.join("alerts.jsonl"), b"")?;
            command.arg("--alerts").arg(dir.join("alerts.jsonl"));
        }
        if let Some(policy) = options.policy {
            command.arg("--policy").arg(policy);
        }
        if options.enforce {
            command.args(["--mode", "enforce"]);
        }
        if options.every_open {
            command.args(["--repeat-window-ms", "0"]);
        }
        let mut child = command
            // The log lines read below are info level; RUST_LOG would override --log-level.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (tx, rx) = mpsc::channel();
        // Read continuously so the sensor never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sensor = Self {
            child: Some(child),
            binary: binary.to_path_buf(),
            stderr_lines: rx,
            log: Vec::new(),
            dir,
            metrics_url: None,
        };
        sensor.wait_for_log("agent-sensor ready", Duration::from_secs(180))?;
        if options.metrics {
            let ready = sensor
                .log
                .iter()
                .find(|line| line.contains("agent-sensor ready"))
                .cloned()
                .unwrap_or_default();
            sensor.metrics_url =
                Some(metrics_url(&ready).with_context(|| {
                    format!("no `metrics http://…` in the ready line `{ready}`")
                })?);
        }
        Ok(sensor)
    }

    /// `http://127.0.0.1:PORT/metrics`, when started with metrics.
    pub fn metrics_url(&self) -> Result<&str> {
        self.metrics_url
            .as_deref()
            .context("the sensor was started without metrics")
    }

    pub fn alerts_path(&self) -> PathBuf {
        self.dir.join("alerts.jsonl")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// `agent-sensor exec --agent NAME --worktree DIR [--profile P] --control-socket S --`;
    /// the caller appends the command.
    pub fn exec_command(&self, agent: &str, worktree: &Path, profile: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["exec", "--agent", agent, "--worktree"])
            .arg(worktree)
            .arg("--control-socket")
            .arg(self.control_socket());
        if let Some(profile) = profile {
            cmd.args(["--profile", profile]);
        }
        cmd.arg("--");
        cmd
    }

    /// `agent-sensor <verb> NAME --control-socket S` (thaw, kill), which must succeed.
    pub fn control(&self, verb: &str, agent: &str) -> Result<()> {
        let output = Command::new(&self.binary)
            .args([verb, agent])
            .arg("--control-socket")
            .arg(self.control_socket())
            .output()
            .with_context(|| format!("cannot run agent-sensor {verb}"))?;
        if !output.status.success() {
            bail!(
                "agent-sensor {verb} {agent} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.log.push(line);
                    if found {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "the sensor exited before `{needle}`:\n{}",
                        self.log.join("\n")
                    )
                }
            }
        }
        bail!(
            "no `{needle}` from the sensor within {timeout:?}:\n{}",
            self.log.join("\n")
        )
    }

    /// User plus system CPU time the sensor has used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        self.cpu_by(super::cpu::process_seconds)
    }

    /// [`cpu_seconds`](Self::cpu_seconds) to the nanosecond, from the threads' scheduler
    /// statistics (see [`super::cpu::threads_seconds`]).
    pub fn threads_cpu_seconds(&self) -> Result<f64> {
        self.cpu_by(super::cpu::threads_seconds)
    }

    /// The sensor's CPU seconds by `measure`; an error once it is gone (both measures read 0
    /// then, which would pass for an idle sensor).
    fn cpu_by(&self, measure: fn(u32) -> f64) -> Result<f64> {
        if !Path::new(&format!("/proc/{}", self.pid())).exists() {
            bail!("the sensor (pid {}) is gone", self.pid());
        }
        Ok(measure(self.pid()))
    }

    pub fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let kib = |key: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key)?.trim().strip_suffix("kB"))
                .and_then(|value| value.trim().parse().ok())
                .with_context(|| format!("no {key} in {path}"))
        };
        Ok(Memory {
            peak_rss_kib: kib("VmHWM:")?,
            rss_kib: kib("VmRSS:")?,
        })
    }

    /// SIGINT, wait for a clean exit, and read the totals from the log.
    pub fn stop(mut self) -> Result<SensorTotals> {
        let mut child = self.child.take().context("sensor already stopped")?;
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the sensor did not stop within 30 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at end of file, which disconnects the channel.
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !status.success() {
            bail!("the sensor exited with {status}:\n{}", self.log.join("\n"));
        }
        totals(&self.log)
    }
}

/// The metrics URL in the ready line: `… metrics http://ADDR/metrics …`.
fn metrics_url(ready: &str) -> Option<String> {
    let at = ready.find("metrics http://")? + "metrics ".len();
    let url = ready[at..].split_whitespace().next()?;
    Some(url.trim_end_matches([';', ',']).to_string())
}

impl Drop for RunningSensor {
    /// Only reached on an error path: SIGKILL is enough, as every program, link and map the
    /// sensor loaded is held by its descriptors and goes away with the process.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses `stopped: N events, M undecodable; …` and sums `kernel dropped N …`.
fn totals(log: &[String]) -> Result<SensorTotals> {
    let stopped = log
        .iter()
        .rev()
        .find_map(|line| line.split_once("stopped: ").map(|(_, rest)| rest))
        .with_context(|| format!("no `stopped:` line in the sensor log:\n{}", log.join("\n")))?;
    let numbers: Vec<u64> = stopped
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|word| word.parse().ok())
        .collect();
    let [events, undecodable, ..] = numbers[..] else {
        bail!("cannot read the counts in `stopped: {stopped}`");
    };
    let kernel_dropped = log
        .iter()
        .filter_map(|line| line.split_once("kernel dropped ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    Ok(SensorTotals {
        events,
        undecodable,
        kernel_dropped,
    })
}

/// `agent-sensor probe --hold-syscall-hooks`: the sensor's syscall hooks with a near-empty
/// program and no sensor behind them, held until dropped.
pub struct HeldHooks {
    child: Child,
}

impl HeldHooks {
    /// Starts the holder of `hooks` (`sys_exit`, `sys_enter` or both) and waits until it
    /// says they are attached.
    pub fn start(binary: &Path, hooks: &str) -> Result<Self> {
        let mut command = Command::new(binary);
        end_with_xtask(&mut command, libc::SIGTERM);
        let mut child = command
            .args(["probe", "--hold-syscall-hooks", "3600", "--hooks", hooks])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} probe", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("no stdout from the hook holder")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the hook holder did not attach its programs (said {line:?})");
        }
        Ok(Self { child })
    }
}

impl Drop for HeldHooks {
    /// The links go with the process.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Has the process `command` starts get `signal` when xtask dies: a bench killed midway, whose
/// Drop guards never run, leaves no sensor, tracer or hook holder behind.
pub fn end_with_xtask(command: &mut Command, signal: libc::c_int) {
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_totals_from_the_log() {
        let log = [
            "[2025-01-01T00:00:00Z INFO] agent-sensor ready: 9 programs attached",
            "[2025-01-01T00:00:01Z WARN] kernel dropped 12 file.open events lost (ring buffer full)",
            "[2025-01-01T00:00:02Z WARN] kernel dropped 3 file.open events lost (ring buffer full)",
            "[2025-01-01T00:00:03Z INFO] stopped: 1234 events, 5 undecodable, 2 alerts; all programs detached",
        ]
        .map(String::from);
        let totals = totals(&log).unwrap();
        assert_eq!(
            (totals.events, totals.undecodable, totals.kernel_dropped),
            (1234, 5, 15)
        );
        assert!(!totals.lossless());
    }

    #[test]
    fn reads_the_metrics_url_from_the_ready_line() {
        let line = "[2025-01-01T00:00:00Z INFO] agent-sensor ready: 9 programs attached (…); \
                    mode monitor (records read at most 4000 µs late); control socket /x.sock; \
                    metrics http://127.0.0.1:40123/metrics";
        assert_eq!(
            metrics_url(line).as_deref(),
            Some("http://127.0.0.1:40123/metrics")
        );
        assert_eq!(metrics_url("agent-sensor ready: …; metrics off"), None);
    }
}
