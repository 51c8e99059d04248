//! The peers agent-sensor is compared with, set up to record what it records for the
//! workload's process tree:
//!
//! - bpftrace with a script that prints one line per event to user space (output to
//!   /dev/null), filtered on the workload's cgroup;
//! - auditd with syscall rules for the same calls, filtered on the workload's login uid
//!   (`auid`, inherited by every descendant: audit's own notion of a session).
//!
//! Both filters also give an "untracked" configuration, as agent-sensor has: the tool running,
//! the workload outside its filter. Everything is undone at the end: the rules removed, an
//! auditd the bench started stopped, the audit settings it changed restored.

use std::{
    collections::BTreeMap,
    fs::File,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{cpu, sensor::end_with_xtask};

/// The `-k` key of every audit rule the bench adds; stale ones are removed by it.
pub const AUDIT_KEY: &str = "agent-sensor-bench";

/// The login uid a workload takes to be audited ("tracked" for auditd): no real user has it.
pub const BENCH_AUID: u32 = 3_999_999;

/// Calls whose events agent-sensor records and the workloads make, for the audit rules.
/// (agent-sensor also records the close of a socket, which audit cannot tell from any other
/// close: close is left out rather than recorded for every descriptor.)
const AUDIT_SYSCALLS: &str = "open,openat,openat2,creat,unlink,unlinkat,rmdir,mkdir,mkdirat,\
rename,renameat,renameat2,chmod,fchmodat,link,linkat,symlink,symlinkat,truncate,chdir,\
connect,bind,listen,accept,accept4,sendto,sendmsg,execve,execveat,clone,clone3,fork,vfork";

/// bpftrace running [`bpftrace_script`]; SIGINT stops it.
pub struct Bpftrace {
    child: Option<Child>,
    log: PathBuf,
}

impl Bpftrace {
    /// Starts bpftrace tracing cgroup `cgroup_id` and waits until every probe is attached.
    pub fn start(dir: &Path, cgroup_id: u64) -> Result<Self> {
        let ready = dir.join("bpftrace.ready");
        let script = dir.join("bench.bt");
        let log = dir.join("bpftrace.log");
        let _ = std::fs::remove_file(&ready);
        std::fs::write(&script, bpftrace_script(cgroup_id, &ready))?;
        let mut command = Command::new("bpftrace");
        end_with_xtask(&mut command, libc::SIGINT);
        // --unsafe only for system() in BEGIN: the ready file. Output (-o) goes to /dev/null.
        let child = command
            .args(["--unsafe", "-o", "/dev/null"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .context("cannot start bpftrace")?;
        let mut bpftrace = Self {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        while !ready.exists() {
            if let Some(status) = bpftrace.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                bpftrace.child = None;
                bail!(
                    "bpftrace exited ({status}) before attaching:\n{}",
                    bpftrace.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "bpftrace did not attach within 180 s:\n{}",
                    bpftrace.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bpftrace)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGINT and wait for a clean exit. Detaching its probes can take bpftrace a long time
    /// on a busy machine: after 180 s it is killed (the kernel detaches what a killed process
    /// held) and a warning printed, as the measurements are done by then.
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: signalling our own child, not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        match wait_timeout(&mut child, Duration::from_secs(180)) {
            Ok(status) if !status.success() => {
                bail!("bpftrace exited with {status}:\n{}", self.log_text())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                eprintln!("xtask bench: bpftrace killed: {e}");
                Ok(())
            }
        }
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in stop(); SIGINT detaches cleanly, SIGKILL if it does not exit.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            if wait_timeout(&mut child, Duration::from_secs(30)).is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("pid {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bpftrace equivalent of what agent-sensor records for a tracked process tree: one line
/// printed per event — opens (path and result, paired at exit as the sensor pairs them), file
/// changes, socket calls, the close of a socket, exec, fork and exit — for tasks in cgroup
/// `cgroup_id` (the `cgroup` builtin is the task's cgroup v2 id, its directory's inode).
/// The id is written as a number: bpftrace 0.17's `cgroupid()` fails on this kernel
/// ("Value too large for defined data type").
pub fn bpftrace_script(cgroup_id: u64, ready: &Path) -> String {
    let filter = format!("/cgroup == {cgroup_id}/");
    let mut lines = vec![
        format!("BEGIN {{ system(\"touch {}\"); }}", ready.display()),
        String::new(),
    ];
    for (call, field) in [
        ("open", "filename"),
        ("creat", "pathname"),
        ("openat", "filename"),
        ("openat2", "filename"),
    ] {
        lines.push(format!(
            "tracepoint:syscalls:sys_enter_{call} {filter} {{ @path[tid] = args->{field}; }}"
        ));
        // As the sensor does by default, an open whose path named nothing (ENOENT, ENOTDIR)
        // is not printed.
        lines.push(format!(
            "tracepoint:syscalls:sys_exit_{call} {filter} {{ if (args->ret != -2 && \
             args->ret != -20) {{ printf(\"%llu %d %d %s {call} %s = %d\\n\", nsecs, pid, \
             tid, comm, str(@path[tid]), args->ret); }} delete(@path[tid]); }}"
        ));
    }
    for (call, fields) in [
        ("unlink", &["pathname"][..]),
        ("unlinkat", &["pathname"]),
        ("rmdir", &["pathname"]),
        ("mkdir", &["pathname"]),
        ("mkdirat", &["pathname"]),
        ("rename", &["oldname", "newname"]),
        ("renameat", &["oldname", "newname"]),
        ("renameat2", &["oldname", "newname"]),
        ("chmod", &["filename"]),
        ("fchmodat", &["filename"]),
        ("link", &["oldname", "newname"]),
        ("linkat", &["oldname", "newname"]),
        ("symlink", &["oldname", "newname"]),
        ("symlinkat", &["oldname", "newname"]),
        ("truncate", &["path"]),
        ("chdir", &["filename"]),
    ] {
        let formats = vec!["%s"; fields.len()].join(" ");
        let args: String = fields
            .iter()
            .map(|field| format!(", str(args->{field})"))
            .collect();
        lines.push(format!(
            "tracepoint:syscalls:sys_enter_{call} {filter} {{ printf(\"%llu %d %d %s {call} \
             {formats}\\n\", nsecs, pid, tid, comm{args}); }}"
        ));
    }
    for (call, addr) in [
        ("connect", "uservaddr"),
        ("bind", "umyaddr"),
        ("sendto", "addr"),
    ] {
        lines.push(format!(
            "tracepoint:syscalls:sys_enter_{call} {filter} {{ printf(\"%llu %d %d %s {call} \
             %d %r\\n\", nsecs, pid, tid, comm, args->fd, buf(args->{addr}, 16)); }}"
        ));
    }
    lines.extend([
        format!(
            "tracepoint:syscalls:sys_enter_listen {filter} {{ printf(\"%llu %d %d %s listen \
             %d\\n\", nsecs, pid, tid, comm, args->fd); }}"
        ),
        format!(
            "tracepoint:syscalls:sys_enter_sendmsg {filter} {{ printf(\"%llu %d %d %s sendmsg \
             %d\\n\", nsecs, pid, tid, comm, args->fd); }}"
        ),
        // Sockets are remembered so that their close is printed, and only theirs.
        format!(
            "tracepoint:syscalls:sys_exit_socket {filter} {{ if (args->ret >= 0) {{ \
             @sock[pid, args->ret] = 1; }} }}"
        ),
        format!(
            "tracepoint:syscalls:sys_exit_accept, tracepoint:syscalls:sys_exit_accept4 \
             {filter} {{ printf(\"%llu %d %d %s accept %d\\n\", nsecs, pid, tid, comm, \
             args->ret); if (args->ret >= 0) {{ @sock[pid, args->ret] = 1; }} }}"
        ),
        format!(
            "tracepoint:syscalls:sys_enter_close {filter} {{ if (@sock[pid, args->fd]) {{ \
             printf(\"%llu %d %d %s close %d\\n\", nsecs, pid, tid, comm, args->fd); \
             delete(@sock[pid, args->fd]); }} }}"
        ),
        format!(
            "tracepoint:sched:sched_process_exec {filter} {{ printf(\"%llu %d %d %s exec \
             %s\\n\", nsecs, pid, tid, comm, str(args->filename)); }}"
        ),
        format!(
            "tracepoint:sched:sched_process_fork {filter} {{ printf(\"%llu %d %d %s fork \
             %d\\n\", nsecs, pid, tid, comm, args->child_pid); }}"
        ),
        format!(
            "tracepoint:sched:sched_process_exit {filter} {{ printf(\"%llu %d %d %s exit\\n\", \
             nsecs, pid, tid, comm); }}"
        ),
        String::new(),
        // Nothing printed at exit.
        "END { clear(@path); clear(@sock); }".into(),
        String::new(),
    ]);
    lines.join("\n")
}

/// Audit's kernel settings, from `auditctl -s`.
#[derive(Clone, Debug, Default)]
struct AuditStatus(BTreeMap<String, u64>);

impl AuditStatus {
    fn read() -> Result<Self> {
        let output = Command::new("auditctl")
            .arg("-s")
            .output()
            .context("cannot run auditctl -s")?;
        if !output.status.success() {
            bail!(
                "auditctl -s failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(Self::parse(&String::from_utf8_lossy(&output.stdout)))
    }

    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|line| {
                    let mut words = line.split_whitespace();
                    Some((words.next()?.to_string(), words.next()?.parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }
}

fn auditctl(args: &[&str]) -> Result<()> {
    let output = Command::new("auditctl")
        .args(args)
        .output()
        .context("cannot run auditctl")?;
    if !output.status.success() {
        bail!(
            "auditctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Removes every audit rule with the bench's key (a killed earlier run may have left some).
pub fn remove_audit_rules() {
    if super::host::which("auditctl").is_some() {
        let _ = Command::new("auditctl")
            .args(["-D", "-k", AUDIT_KEY])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The task rule that keeps the bench's processes out of audit while auditing is off. Once
/// auditd has run on a boot, the kernel gives every new process an audit context (and with it
/// the slow syscall path) even after auditing is turned off again, unless a task rule says
/// `never`: 12 % of the open/close loop's time on the machine of BENCHMARKS.md, which would
/// otherwise favour every configuration measured after the first auditd row. The `auid` field
/// (never the bench's audited login uid) only makes the rule the bench's own, to find and
/// remove.
const UNAUDITED_TASK_RULE: [&str; 3] = ["task,never", "-F", "auid!=3999999"];

/// Whether the bench keeps `UNAUDITED_TASK_RULE` loaded outside its auditd rows.
static KEEP_TASKS_UNAUDITED: AtomicBool = AtomicBool::new(false);

/// For the whole bench: processes it starts get no audit context outside the auditd rows,
/// when auditing is off on the host (when it is on, the host's own rules decide, as they do
/// for everything else running there). The rule goes at the end.
pub struct UnauditedTasks {
    /// Auditing was on when the bench started (auditd with rules of the host's own).
    host_audits: bool,
}

impl UnauditedTasks {
    pub fn start() -> Self {
        remove_unaudited_task_rule();
        KEEP_TASKS_UNAUDITED.store(true, Ordering::SeqCst);
        let host_audits = super::host::which("auditctl").is_some()
            && AuditStatus::read().is_ok_and(|status| status.get("enabled") != 0);
        add_unaudited_task_rule();
        Self { host_audits }
    }

    /// One sentence for the report.
    pub fn describe(&self) -> &'static str {
        if self.host_audits {
            "Auditing was on on this host when the bench started: every process of every \
             configuration paid audit's syscall entry, as every process there does"
        } else {
            "Outside the auditd rows the bench keeps the audit rule `-a task,never -F \
             auid!=3999999` loaded, so the processes it starts get no audit context: once \
             auditd has run on a boot, the kernel gives one (and the slow syscall path) to \
             every new process even with auditing off"
        }
    }
}

impl Drop for UnauditedTasks {
    fn drop(&mut self) {
        KEEP_TASKS_UNAUDITED.store(false, Ordering::SeqCst);
        remove_unaudited_task_rule();
    }
}

fn unaudited_task_rule(action: &str) -> Vec<&str> {
    let mut args = vec![action];
    args.extend(UNAUDITED_TASK_RULE);
    args
}

/// Loads the rule when the bench keeps it and auditing is off (an auditd row, or the host,
/// audits; a rule that kept new processes out of that would change what is measured). Once:
/// an auditd row's teardown runs at its stop and again at its drop.
fn add_unaudited_task_rule() {
    if !KEEP_TASKS_UNAUDITED.load(Ordering::SeqCst) || super::host::which("auditctl").is_none() {
        return;
    }
    match AuditStatus::read() {
        Ok(status) if status.get("enabled") == 0 => {
            remove_unaudited_task_rule();
            if let Err(e) = auditctl(&unaudited_task_rule("-a")) {
                eprintln!("xtask bench: cannot keep the bench's processes out of audit: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("xtask bench: {e}"),
    }
}

/// Removes the rule if loaded (also one a killed earlier run left).
fn remove_unaudited_task_rule() {
    if super::host::which("auditctl").is_some() {
        let _ = Command::new("auditctl")
            .args(unaudited_task_rule("-d"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// auditd with the bench's rule; the auditd the bench started, if none was running.
pub struct Auditd {
    ours: Option<Child>,
    saved: AuditStatus,
    lost_at_start: u64,
    log_dir: PathBuf,
}

/// What auditd reported over its run.
pub struct AuditTotals {
    /// Records the kernel dropped (`lost` of `auditctl -s`).
    pub lost: u64,
    /// Lines of audit.log written (events come as several records: SYSCALL, CWD, PATH…),
    /// when the bench's own auditd wrote it.
    pub log_lines: Option<u64>,
}

impl Auditd {
    /// Makes sure auditd runs (starting one writing to `dir` if none does) and adds the rule.
    pub fn start(dir: &Path) -> Result<Self> {
        remove_audit_rules();
        // The workloads of this row get audit contexts, as on any host running auditd.
        remove_unaudited_task_rule();
        let saved = AuditStatus::read()?;
        let running =
            saved.get("pid") != 0 && Path::new(&format!("/proc/{}", saved.get("pid"))).exists();
        let log_dir = dir.join("audit");
        let mut auditd = Self {
            ours: None,
            saved: saved.clone(),
            lost_at_start: saved.get("lost"),
            log_dir: log_dir.clone(),
        };
        if !running {
            auditd.ours = Some(start_auditd(dir, &log_dir)?);
            let pid = auditd.ours.as_ref().map_or(0, Child::id);
            let deadline = Instant::now() + Duration::from_secs(30);
            while AuditStatus::read()?.get("pid") != u64::from(pid) {
                if Instant::now() > deadline {
                    bail!("auditd (pid {pid}) did not register with the kernel within 30 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The backlog Debian's own audit.rules sets: the kernel's default of 64 makes
            // a busy workload wait for auditd at once.
            auditctl(&["-b", "8192"])?;
        }
        let auid = format!("auid={BENCH_AUID}");
        auditctl(&[
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            AUDIT_SYSCALLS,
            // As the sensor does by default: calls whose path named nothing are not recorded.
            "-F",
            "exit!=-ENOENT",
            "-F",
            "exit!=-ENOTDIR",
            "-F",
            &auid,
            "-k",
            AUDIT_KEY,
        ])?;
        auditd.lost_at_start = AuditStatus::read()?.get("lost");
        Ok(auditd)
    }

    /// auditd's pid and the kernel's kauditd thread: the CPU audit spends outside the
    /// audited processes.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        if let Ok(status) = AuditStatus::read() {
            pids.push(status.get("pid") as u32);
        }
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if std::fs::read_to_string(entry.path().join("comm"))
                    .is_ok_and(|comm| comm.trim() == "kauditd")
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// To the nanosecond (auditd's threads and kauditd live as long as the run).
    pub fn cpu_seconds(&self) -> f64 {
        self.pids().into_iter().map(cpu::threads_seconds).sum()
    }

    /// Removes the rule, stops the bench's auditd, restores the settings it changed.
    pub fn stop(mut self) -> Result<AuditTotals> {
        let lost = AuditStatus::read()?
            .get("lost")
            .saturating_sub(self.lost_at_start);
        self.teardown()?;
        let log_lines = count_lines(&self.log_dir);
        Ok(AuditTotals { lost, log_lines })
    }

    fn teardown(&mut self) -> Result<()> {
        remove_audit_rules();
        if let Some(mut child) = self.ours.take() {
            // SAFETY: our own child, not reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            wait_timeout(&mut child, Duration::from_secs(30))?;
            // auditd leaves auditing enabled and the bench raised the backlog: put back what
            // was there, auditing off first (with no auditd, each change's own record would
            // count as lost).
            let now = AuditStatus::read()?;
            for (key, flag) in [
                ("enabled", "-e"),
                ("backlog_limit", "-b"),
                ("backlog_wait_time", "--backlog_wait_time"),
                ("rate_limit", "-r"),
                ("failure", "-f"),
            ] {
                let before = self.saved.get(key);
                if now.get(key) != before {
                    auditctl(&[flag, &before.to_string()])?;
                }
            }
            // Records of the set-up and teardown themselves that found no auditd: the
            // counter was 0 before the bench, so it is again.
            if self.saved.get("lost") == 0 && AuditStatus::read()?.get("lost") != 0 {
                auditctl(&["--reset-lost"])?;
            }
        }
        add_unaudited_task_rule();
        Ok(())
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("xtask bench: cannot undo the audit set-up: {e}");
        }
    }
}

/// `auditd -n` with a configuration of the bench's: Debian's, logging to `log_dir` (bounded:
/// 4 files of 64 MiB, rotated).
fn start_auditd(dir: &Path, log_dir: &Path) -> Result<Child> {
    let config_dir = dir.join("audit-config");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::create_dir_all(log_dir)?;
    let system = std::fs::read_to_string("/etc/audit/auditd.conf")
        .context("cannot read /etc/audit/auditd.conf")?;
    let mut config: Vec<String> = system
        .lines()
        .filter(|line| {
            let key = line.split('=').next().unwrap_or_default().trim();
            !matches!(
                key,
                "log_file" | "max_log_file" | "num_logs" | "max_log_file_action"
            )
        })
        .map(String::from)
        .collect();
    config.extend([
        format!("log_file = {}", log_dir.join("audit.log").display()),
        "max_log_file = 64".into(),
        "num_logs = 4".into(),
        "max_log_file_action = ROTATE".into(),
    ]);
    let config_file = config_dir.join("auditd.conf");
    std::fs::write(&config_file, config.join("\n") + "\n")?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&config_file, std::fs::Permissions::from_mode(0o640))?;
    std::fs::set_permissions(log_dir, std::fs::Permissions::from_mode(0o700))?;
    let mut command = Command::new("auditd");
    end_with_xtask(&mut command, libc::SIGTERM);
    command
        .arg("-n")
        .arg("-c")
        .arg(&config_dir)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("auditd.out"))?)
        .stderr(File::create(dir.join("auditd.err"))?)
        .spawn()
        .context("cannot start auditd")
}

fn count_lines(log_dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(log_dir).ok()?;
    let mut lines = 0;
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).ok()?;
        lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Some(lines)
}

/// Makes a command's process take the bench's login uid before it execs: it and every
/// descendant are then audited by the bench's rule.
pub fn audit_before_exec(cmd: &mut Command) {
    // SAFETY: raw open/write/close only, allowed after fork in a threaded parent.
    unsafe {
        cmd.pre_exec(|| {
            let fd = libc::open(
                c"/proc/self/loginuid".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // BENCH_AUID, written without formatting (no allocation after fork).
            let text = b"3999999";
            let written = libc::write(fd, text.as_ptr().cast(), text.len());
            let result = if written == text.len() as isize {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            };
            libc::close(fd);
            result
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auid_written_before_exec_is_the_rules() {
        assert_eq!(BENCH_AUID.to_string(), "3999999");
    }

    #[test]
    fn the_unaudited_task_rule_spares_the_audited_workloads() {
        assert_eq!(UNAUDITED_TASK_RULE[2], format!("auid!={BENCH_AUID}"));
    }

    #[test]
    fn reads_auditctl_status() {
        let status = AuditStatus::parse(
            "enabled 1\nfailure 1\npid 27036\nrate_limit 0\nbacklog_limit 64\nlost 12\n\
             loginuid_immutable 0 unlocked\n",
        );
        assert_eq!(status.get("pid"), 27036);
        assert_eq!(status.get("lost"), 12);
        assert_eq!(status.get("loginuid_immutable"), 0);
        assert_eq!(status.get("absent"), 0);
    }

    #[test]
    fn the_script_filters_every_probe_on_the_cgroup() {
        let script = bpftrace_script(6979, Path::new("/x/ready"));
        let probes = script
            .lines()
            .filter(|line| line.starts_with("tracepoint:"))
            .count();
        assert!(probes > 20);
        assert_eq!(script.matches("/cgroup == 6979/").count(), probes);
    }
}
