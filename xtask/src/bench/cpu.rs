//! CPU that processes other than the benchmark's own used while it measured: on a shared
//! machine a build running beside the bench moves its numbers, and the report should show it.

use std::time::Instant;

use anyhow::{Context as _, Result};

pub struct OtherCpu {
    started: Instant,
    host_busy: f64,
    ours: f64,
}

impl OtherCpu {
    pub fn start() -> Result<Self> {
        Ok(Self {
            started: Instant::now(),
            host_busy: host_busy_seconds()?,
            ours: our_seconds(),
        })
    }

    /// Cores' worth of CPU used since `start` by everything but xtask and the children it has
    /// reaped: call it once the measurement's processes (sensor included) have exited.
    pub fn cores(&self) -> Result<f64> {
        self.cores_excluding(0.0)
    }

    /// Like [`cores`](Self::cores), also leaving out `tools` seconds of CPU used meanwhile by
    /// processes the bench started and has not reaped yet (a sensor, bpftrace, auditd).
    pub fn cores_excluding(&self, tools: f64) -> Result<f64> {
        Ok(self.seconds_excluding(tools)? / self.started.elapsed().as_secs_f64())
    }

    /// CPU seconds (not cores) used by others since `start`, `tools` left out.
    pub fn seconds_excluding(&self, tools: f64) -> Result<f64> {
        let others = (host_busy_seconds()? - self.host_busy) - (our_seconds() - self.ours) - tools;
        Ok(others.max(0.0))
    }

    pub fn elapsed_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// User plus system CPU time process `pid` has used so far, in seconds (0 once it is gone).
pub fn process_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name start at field 3 (state); utime and stime
    // are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |field: usize| -> u64 {
        fields
            .get(field - 3)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) as f64 / ticks_per_second
}

/// CPU time the live threads of `pid` have run so far, in seconds, to the nanosecond (field 1
/// of each `/proc/PID/task/TID/schedstat`), where `/proc/PID/stat` counts in 10 ms ticks: a
/// sensor using 0.02 cores over 10 s is 20 ticks, too coarse to compare rows. Threads that
/// exited are not in it, so use it across windows in which the process starts and ends no
/// threads (the sensor's are made at start). 0 once the process is gone.
pub fn threads_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// Busy time of all CPUs from the `cpu` line of /proc/stat: user, nice, system, irq, softirq
/// (idle, iowait and the hypervisor's steal are not work done here).
fn host_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    Ok(busy as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

/// CPU time of xtask itself and of every child it has reaped.
fn our_seconds() -> f64 {
    [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN]
        .into_iter()
        .map(|who| {
            // SAFETY: getrusage fills the zeroed struct we own.
            let usage = unsafe {
                let mut usage: libc::rusage = std::mem::zeroed();
                libc::getrusage(who, &mut usage);
                usage
            };
            let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            seconds(usage.ru_utime) + seconds(usage.ru_stime)
        })
        .sum()
}
