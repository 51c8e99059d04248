//! What a tracked session costs the sensor's own work, counted rather than timed: its eBPF
//! programs' run time (the kernel's BPF statistics, `kernel.bpf_stats_enabled`) and its
//! daemon's CPU, over sessions run for this alone.
//!
//! A session's wall time and CPU move by several percent from one to the next (see the overhead
//! tables), more than the sensor's share of them; these counts do not, so they say what the
//! sensor's work costs a session to a fraction of a percent. Not counted: what the syscall
//! tracepoint costs every syscall of the host before any program runs (the untracked rows of
//! the microbenchmarks measure that).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

use super::report::{percent_plain, thousands, Target};

/// Sessions counted: the counts vary by a few percent from session to session, not more.
pub const SESSIONS: usize = 5;

/// The sensor's own work per tracked session (means over [`SESSIONS`] sessions).
#[derive(Clone, Debug)]
pub struct SessionAccount {
    pub sessions: usize,
    /// The eBPF programs' run time per session (every run on the host meanwhile, tracked or
    /// not), in seconds, and their runs.
    pub program_seconds: f64,
    pub program_runs: u64,
    /// The daemon's CPU per session, in seconds.
    pub daemon_seconds: f64,
    /// The sessions' own CPU (their processes', from `wait4`), per session, in seconds.
    pub session_cpu_seconds: f64,
}

impl SessionAccount {
    /// The sensor's work against the session's own CPU.
    pub fn share(&self) -> f64 {
        (self.program_seconds + self.daemon_seconds) / self.session_cpu_seconds
    }

    pub fn target(&self) -> Target {
        Target {
            name: "the sensor's own CPU per tracked session, counted: eBPF programs plus daemon \
                   (reported; no number set)"
                .into(),
            measured: format!(
                "{:.1} ms + {:.1} ms = {} of the session's {:.2} s",
                self.program_seconds * 1e3,
                self.daemon_seconds * 1e3,
                percent_plain(self.share()),
                self.session_cpu_seconds
            ),
            verdict: "—".into(),
        }
    }

    pub fn render(&self, out: &mut Vec<String>) {
        out.push("#### (d) coding-agent session — the sensor's own CPU, counted".into());
        out.push(String::new());
        out.push(format!(
            "{} more tracked sessions, with the kernel's BPF statistics on \
             (`kernel.bpf_stats_enabled`, restored after): the sensor's eBPF programs' run time \
             (from its program fds' `run_time_ns`) and its daemon's CPU, per session, against \
             the CPU of the session's own processes. Unlike the timed rows these do not move \
             with the host. With the statistics on, each program run also pays their clock \
             reads, so the first count errs high. Not counted: what the syscall tracepoint \
             costs each syscall before a program runs (see the untracked microbenchmarks).",
            self.sessions
        ));
        out.push(String::new());
        out.push("| eBPF programs | program runs | daemon | sensor in all | session's own CPU | sensor / session |".into());
        out.push("| ---: | ---: | ---: | ---: | ---: | ---: |".into());
        out.push(format!(
            "| {:.2} ms | {} | {:.2} ms | {:.2} ms | {:.3} s | {} |",
            self.program_seconds * 1e3,
            thousands(self.program_runs),
            self.daemon_seconds * 1e3,
            (self.program_seconds + self.daemon_seconds) * 1e3,
            self.session_cpu_seconds,
            percent_plain(self.share())
        ));
        out.push(String::new());
    }
}

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The kernel's BPF statistics, on while this lives, then as they were.
pub struct BpfStats {
    before: String,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let before = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("cannot read {STATS_SYSCTL}"))?;
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("cannot write {STATS_SYSCTL}"))?;
        Ok(Self {
            before: before.trim().to_string(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, &self.before);
    }
}

/// Run time (ns) and runs of every eBPF program process `pid` holds, each program once.
pub fn program_totals(pid: u32) -> Result<(u64, u64)> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut programs = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue; // closed meanwhile
        };
        if let Some((id, totals)) = parse_program_fdinfo(&info) {
            programs.insert(id, totals);
        }
    }
    Ok(programs
        .values()
        .fold((0, 0), |(ns, runs), (n, r)| (ns + n, runs + r)))
}

/// `(prog_id, (run_time_ns, run_cnt))` of a program fd's fdinfo; `None` for any other fd (a
/// link's names its program too, without the statistics).
fn parse_program_fdinfo(info: &str) -> Option<(u64, (u64, u64))> {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    Some((
        field("prog_id")?,
        (field("run_time_ns")?, field("run_cnt")?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_fdinfo_is_read_and_other_fds_are_not() {
        let program = "pos:\t0\nflags:\t02000002\nprog_type:\t17\nprog_id:\t177436\n\
                       run_time_ns:\t5120\nrun_cnt:\t40\nverified_insns:\t404\n";
        assert_eq!(parse_program_fdinfo(program), Some((177436, (5120, 40))));
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t2\nmap_id:\t12\n";
        assert_eq!(parse_program_fdinfo(map), None);
        let link = "link_type:\traw_tracepoint\nlink_id:\t5\nprog_tag:\t622a9bc0c0e84be4\n\
                    prog_id:\t177436\ntp_name:\ttask_newtask\n";
        assert_eq!(parse_program_fdinfo(link), None);
    }

    #[test]
    fn the_share_is_the_sensor_over_the_session() {
        let account = SessionAccount {
            sessions: 5,
            program_seconds: 0.005,
            program_runs: 40_000,
            daemon_seconds: 0.013,
            session_cpu_seconds: 0.9,
        };
        assert!((account.share() - 0.02).abs() < 1e-12);
        let target = account.target();
        assert_eq!(
            target.measured,
            "5.0 ms + 13.0 ms = 2.0 % of the session's 0.90 s"
        );
        let mut out = Vec::new();
        account.render(&mut out);
        assert!(out.iter().any(|l| l.contains("| 5.00 ms | 40,000 | 13.00 ms | 18.00 ms | 0.900 s | 2.0 % |")), "{out:#?}");
    }
}
