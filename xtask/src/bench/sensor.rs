//! A sensor the benchmark started: `agent-sensor run --events /dev/null --track-cgroup DIR`,
//! read through its stderr log and /proc, stopped with SIGINT (killed if dropped while running).

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub struct RunningSensor {
    child: Option<Child>,
    stderr_lines: mpsc::Receiver<String>,
    log: Vec<String>,
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
    /// Starts the sensor tracking `cgroup` and waits until it says it is ready.
    pub fn start(binary: &Path, cgroup: &Path) -> Result<Self> {
        let mut command = Command::new(binary);
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            // Should xtask die without its Drop guards running, the sensor stops (cleanly) too.
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .args(["run", "--log-level", "info", "--events", "/dev/null"])
            .arg("--track-cgroup")
            .arg(cgroup)
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
            stderr_lines: rx,
            log: Vec::new(),
        };
        sensor.wait_for_log("agent-sensor ready", Duration::from_secs(120))?;
        Ok(sensor)
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
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // Fields after the parenthesised command name start at field 3 (state); utime and
        // stime are fields 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |field: usize| -> Result<u64> {
            fields
                .get(field - 3)
                .and_then(|value| value.parse().ok())
                .with_context(|| format!("no field {field} in {path}"))
        };
        // SAFETY: sysconf has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok((ticks(14)? + ticks(15)?) as f64 / ticks_per_second)
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
        if !status.success() {
            bail!("the sensor exited with {status}:\n{}", self.log.join("\n"));
        }
        totals(&self.log)
    }
}

impl Drop for RunningSensor {
    /// Only reached on an error path: SIGKILL is enough, as every program, link and map the
    /// sensor loaded is held by its descriptors and goes away with the process.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
}
