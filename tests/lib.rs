//! Helpers for the integration tests: they run the real `agent-sensor` binary as root against
//! the real kernel, in cgroups and processes the tests create and clean up themselves.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The binary under test: `$AGENT_SENSOR_BIN` (set by `cargo xtask test`), else the release
/// build in this workspace.
pub fn sensor_binary() -> PathBuf {
    std::env::var_os("AGENT_SENSOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/agent-sensor")
        })
}

/// True when the real-kernel tests can run; otherwise prints why the test is skipped.
pub fn can_run_kernel_tests(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root to load eBPF programs (CI runs as root)");
        return false;
    }
    if !sensor_binary().exists() {
        panic!(
            "{} does not exist: run the tests through `cargo xtask test`",
            sensor_binary().display()
        );
    }
    true
}

/// A python script that drives io_uring through raw syscalls (`tests/scripts/io_uring.py`).
pub const IO_URING_PY: &str = include_str!("scripts/io_uring.py");

/// A python script that makes 32-bit syscalls with `int $0x80` (`tests/scripts/syscall32.py`).
pub const SYSCALL32_PY: &str = include_str!("scripts/syscall32.py");

/// [`can_run_kernel_tests`], and io_uring is not switched off on this host
/// (`kernel.io_uring_disabled`); otherwise prints why the test is skipped.
pub fn can_run_io_uring_tests(test: &str) -> bool {
    if !can_run_kernel_tests(test) {
        return false;
    }
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|v| v.trim() != "0");
    if disabled {
        eprintln!("SKIPPED {test}: io_uring is disabled here");
    }
    !disabled
}

/// Lazily unmounts whatever is still mounted on these paths, when dropped: also when a test
/// fails between a mount and its unmount.
pub struct Unmount(pub Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = Command::new("/usr/bin/umount").arg("-l").arg(path).output();
        }
    }
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = PathBuf::from(left.split(' ').nth(4)?);
            (right.split(' ').next()? == "cgroup2").then_some(mount_point)
        })
        .min_by_key(|p| p.components().count())
        .expect("a cgroup2 mount")
}

/// A cgroup of the test's own; its processes are killed and it is removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let path = cgroup2_root().join(format!("agent-sensor-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("create test cgroup");
        Self { path }
    }

    /// A command whose process joins this cgroup before it execs.
    pub fn command(&self, program: &str) -> Command {
        let procs = self.path.join("cgroup.procs");
        let mut cmd = Command::new(program);
        // SAFETY: the closure only writes to a file and returns.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
        }
        cmd
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        kill_and_remove_cgroup(&self.path);
    }
}

/// Kills everything in a cgroup the test made (frozen or not) and removes it, waiting up to
/// 5 s for the killed processes to leave: a cgroup left behind, frozen perhaps, would meet
/// the next test.
pub fn kill_and_remove_cgroup(cgroup: &Path) {
    let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
    for _ in 0..500 {
        if std::fs::remove_dir(cgroup).is_ok() || !cgroup.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("warning: could not remove cgroup {}", cgroup.display());
}

/// A running sensor started by a test.
pub struct Sensor {
    child: Option<Child>,
    pub events_path: PathBuf,
    pub alerts_path: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    stderr_lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
    _dir: TempDir,
    /// Set by `crash`: the agents must outlive this sensor.
    keep_agents: bool,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A directory that, unlike /tmp, no policy treats as a temp dir every agent may write,
    /// and that is outside this cargo workspace (a `cargo new` there must not join it).
    pub fn outside_tmp(tag: &str) -> Self {
        Self::new_in(Path::new("/var/lib/agent-sensor-tests"), tag)
    }

    pub fn new(tag: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), tag)
    }

    fn new_in(base: &Path, tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = base.join(format!(
            "agent-sensor-test-{tag}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Sensor {
    /// Starts `agent-sensor run --events FILE <args>` and waits until it says it is ready.
    pub fn start(args: &[&str]) -> Self {
        Self::start_in(TempDir::new("sensor"), args)
    }

    /// Starts a sensor whose files (events, alerts, state, socket) live in `dir`: a sensor
    /// restarted after `crash` finds its predecessor's state there.
    pub fn start_in(dir: TempDir, args: &[&str]) -> Self {
        let events_path = dir.0.join("events.jsonl");
        let alerts_path = dir.0.join("alerts.jsonl");
        let state_dir = dir.0.join("state");
        let socket = dir.0.join("control.sock");
        let mut child = Command::new(sensor_binary())
            .arg("run")
            .arg("--events")
            .arg(&events_path)
            .arg("--alerts")
            .arg(&alerts_path)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--control-socket")
            .arg(&socket)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agent-sensor");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sensor = Self {
            child: Some(child),
            events_path,
            alerts_path,
            state_dir,
            socket,
            stderr_lines: rx,
            log: Vec::new(),
            _dir: dir,
            keep_agents: false,
        };
        sensor.wait_for_log("agent-sensor ready", Duration::from_secs(120));
        sensor
    }

    /// `http://127.0.0.1:PORT/metrics`, from the ready line.
    pub fn metrics_url(&self) -> Option<String> {
        let line = self.log.iter().find(|l| l.contains("agent-sensor ready"))?;
        let at = line.find("metrics http://")? + "metrics ".len();
        Some(line[at..].split_whitespace().next()?.to_string())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits for a log line containing `needle`; panics with the log so far on timeout.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.log.iter().any(|l| l.contains(needle)) {
            return;
        }
        while Instant::now() < deadline {
            match self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.log.push(line);
                    if found {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                    {
                        self.drain_log();
                        panic!(
                            "sensor exited ({status}) before `{needle}`:\n{}",
                            self.log.join("\n")
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "no `{needle}` in the sensor log within {timeout:?}:\n{}",
            self.log.join("\n")
        );
    }

    fn drain_log(&mut self) {
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(line);
        }
    }

    /// SIGINT, wait for a clean exit, and return every event written.
    pub fn stop(&mut self) -> Vec<Value> {
        self.stop_only();
        read_events(&self.events_path)
    }

    /// SIGINT and wait for a clean exit (the events file may hold a record torn by an
    /// earlier crash, so it is not parsed).
    pub fn stop_only(&mut self) {
        let mut child = self.child.take().expect("sensor running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sensor did not stop within 30 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.drain_log();
        assert!(
            status.success(),
            "sensor exited with {status}:\n{}",
            self.log.join("\n")
        );
    }
}

impl Sensor {
    /// `kill -9` of the daemon; returns its directory for the next one.
    pub fn crash(mut self) -> TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.keep_agents = true;
        std::mem::replace(&mut self._dir, TempDir(PathBuf::new()))
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.keep_agents {
            return;
        }
        // Agents outlive a stopped sensor by design; a test's must not outlive the test.
        let saved = std::fs::read_to_string(self.state_dir.join("agents.json")).unwrap_or_default();
        let agents: Vec<Value> = serde_json::from_str(&saved).unwrap_or_default();
        for cgroup in agents.iter().filter_map(|a| a["cgroup"].as_str()) {
            kill_and_remove_cgroup(Path::new(cgroup));
        }
    }
}

impl Sensor {
    /// Alerts written so far (the sensor flushes each one as it is raised).
    pub fn alerts(&self) -> Vec<Value> {
        read_events(&self.alerts_path)
    }
}

pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"))
        })
        .collect()
}

/// Events of `kind` from process `pid`.
pub fn of_kind<'a>(events: &'a [Value], kind: &str, pid: u32) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && (e["tgid"] == pid || e["pid"] == pid))
        .collect()
}

/// Runs a command to completion (it must succeed) and returns its pid.
pub fn run_ok(cmd: &mut Command) -> u32 {
    let child = cmd.stdout(Stdio::null()).spawn().expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    pid
}

/// Ids of the BPF objects a process holds open, from its fdinfo: (programs, maps, links).
pub fn bpf_ids_held_by(pid: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let (mut progs, mut maps, mut links) = (Vec::new(), Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (progs, maps, links);
    };
    for entry in entries.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in info.lines() {
            let mut parts = line.split(':');
            let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(id) = value.trim().parse::<u32>() else {
                continue;
            };
            match key {
                "prog_id" if !info.contains("link_id") => progs.push(id),
                "map_id" => maps.push(id),
                "link_id" => links.push(id),
                _ => {}
            }
        }
    }
    (progs, maps, links)
}

/// bpf(2) with `attr` (a `union bpf_attr`, as 32-bit words, zero where unused): what it
/// returned (a descriptor for the commands that make one), or the error.
pub fn bpf(cmd: libc::c_long, attr: &mut [u32]) -> std::io::Result<i64> {
    // SAFETY: the attr is ours and as long as the size passed; the kernel reads (and, for some
    // commands, writes) only within it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}

/// Whether a BPF object with this id still exists in the kernel.
pub fn bpf_object_exists(kind: BpfKind, id: u32) -> bool {
    let cmd = match kind {
        BpfKind::Program => 13, // BPF_PROG_GET_FD_BY_ID
        BpfKind::Map => 14,     // BPF_MAP_GET_FD_BY_ID
        BpfKind::Link => 30,    // BPF_LINK_GET_FD_BY_ID
    };
    // A zeroed attr large enough for the *_GET_FD_BY_ID commands.
    let mut attr = [0u32; 4];
    attr[0] = id;
    match bpf(cmd, &mut attr) {
        Ok(fd) => {
            // SAFETY: we own the fd just returned.
            unsafe { libc::close(fd as i32) };
            true
        }
        Err(e) => e.raw_os_error() != Some(libc::ENOENT),
    }
}

#[derive(Debug, Clone, Copy)]
pub enum BpfKind {
    Program,
    Map,
    Link,
}

/// Removes a `--persist` daemon's pins and keeper at the end of a test.
pub struct Uninstall(pub PathBuf);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = Command::new(sensor_binary())
            .args(["uninstall", "--persist-dir"])
            .arg(&self.0)
            .output();
    }
}

/// Runs the sensor binary with `args` as user `uid` (for the not-root checks).
pub fn run_as(uid: u32, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(sensor_binary());
    cmd.args(args);
    // SAFETY: setgid/setuid in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run sensor")
}

/// A network namespace with a veth pair to this one: an "outside host" for egress tests that
/// never leaves the machine. Removed on drop.
pub struct NetNs {
    pub name: String,
    host_if: String,
    /// Address of the namespace's end (the "remote host").
    pub remote_ip: std::net::Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = (std::process::id() * 8 + n) & 0xff_ffff;
        let name = format!("astest{tag:x}");
        let host_if = format!("asv{tag:x}h");
        let ns_if = format!("asv{tag:x}n");
        let octet = (n % 250) as u8 + 1;
        let host_ip = format!("10.213.{octet}.1/24");
        let remote_ip = std::net::Ipv4Addr::new(10, 213, octet, 2);
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &host_if]);
        let remote = format!("{remote_ip}/24");
        let setup = [
            vec!["netns", "add", &name],
            vec![
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
            vec!["link", "set", &ns_if, "netns", &name],
            vec!["addr", "add", &host_ip, "dev", &host_if],
            vec!["link", "set", &host_if, "up"],
            vec!["-n", &name, "addr", "add", &remote, "dev", &ns_if],
            vec!["-n", &name, "link", "set", &ns_if, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ];
        for step in &setup {
            if let Err(e) = ip(step) {
                let _ = ip(&["netns", "del", &name]);
                panic!("cannot set up test network namespace: {e}");
            }
        }
        drop(setup);
        Self {
            name,
            host_if,
            remote_ip,
        }
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Starts a TCP (or UDP) listener inside the namespace on `port` that appends whatever it
    /// receives to `record`; returns once it listens.
    pub fn listen(&self, port: u16, udp: bool, record: &Path) -> Listener {
        let script = "import socket, sys\n\
            port, udp, path = int(sys.argv[1]), sys.argv[2] == 'udp', sys.argv[3]\n\
            kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM\n\
            s = socket.socket(socket.AF_INET, kind)\n\
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
            s.bind(('0.0.0.0', port))\n\
            out = open(path, 'ab', buffering=0)\n\
            if not udp: s.listen(16)\n\
            print('ready', flush=True)\n\
            while True:\n\
            \x20   if udp:\n\
            \x20       data, _ = s.recvfrom(65536); out.write(data); continue\n\
            \x20   c, _ = s.accept()\n\
            \x20   while True:\n\
            \x20       data = c.recv(65536)\n\
            \x20       if not data: break\n\
            \x20       out.write(data)\n\
            \x20   c.close()\n";
        std::fs::write(record, b"").expect("record file");
        let mut child = self
            .command("/usr/bin/python3")
            .args([
                "-c",
                script,
                &port.to_string(),
                if udp { "udp" } else { "tcp" },
            ])
            .arg(record)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start listener in namespace");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listener ready");
        assert_eq!(line.trim(), "ready", "listener did not start");
        Listener(child)
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// A listener process of a test; killed on drop.
pub struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch area outside /tmp for one test: a git worktree `work`, the directories `outside`
/// and `secrets`, and a policy whose `test` profile (the one discovery gives every agent)
/// marks everything under `secrets` sensitive. Removed on drop.
pub struct Scene {
    _dir: TempDir,
    pub root: PathBuf,
    pub worktree: PathBuf,
    pub outside: PathBuf,
    pub secrets: PathBuf,
    pub policy: PathBuf,
}

impl Scene {
    /// `profile` holds more lines of `[profiles.test]` and `extra` more of the policy after it;
    /// `{root}` in either stands for the scene's (canonical) directory.
    pub fn new(tag: &str, profile: &str, extra: &str) -> Self {
        let dir = TempDir::outside_tmp(tag);
        let root = std::fs::canonicalize(&dir.0).unwrap();
        let worktree = git_worktree(&root, "work");
        let outside = root.join("outside");
        let secrets = root.join("secrets");
        for d in [&outside, &secrets] {
            std::fs::create_dir_all(d).unwrap();
        }
        let policy = root.join("policy.toml");
        let text = format!(
            "[discovery]\nprofile = \"test\"\n\n\
             [profiles.test]\n\
             sensitive = [\"{{root}}/secrets/**\"]\n{profile}\n\n{extra}"
        );
        std::fs::write(&policy, text.replace("{root}", &root.to_string_lossy())).unwrap();
        Self {
            _dir: dir,
            root,
            worktree,
            outside,
            secrets,
            policy,
        }
    }

    /// A sensor on the scene's policy, in `mode` (`monitor` or `enforce`).
    pub fn sensor(&self, mode: &str) -> Sensor {
        Sensor::start(&["--policy", self.policy.to_str().unwrap(), "--mode", mode])
    }
}

/// A scratch git worktree (with one commit) for an agent.
pub fn git_worktree(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("worktree dir");
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "git {args:?} failed in {}", dir.display());
    };
    git(&["init", "-q"]);
    std::fs::write(dir.join("README"), "agent worktree\n").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "init"]);
    std::fs::canonicalize(&dir).unwrap()
}

impl Sensor {
    /// Runs `sh -c script` as agent `name` in `worktree` through `agent-sensor exec`; returns
    /// its exit status.
    pub fn exec_agent(
        &self,
        name: &str,
        worktree: &Path,
        script: &str,
    ) -> std::process::ExitStatus {
        self.exec_sh(name, worktree, script)
            .current_dir(worktree)
            .stdout(Stdio::null())
            .status()
            .expect("agent-sensor exec")
    }

    /// `agent-sensor exec` of `sh -c script` as agent `name` in `worktree`, not yet spawned.
    pub fn exec_sh(&self, name: &str, worktree: &Path, script: &str) -> Command {
        let mut exec = Command::new(sensor_binary());
        exec.args(["exec", "--agent", name, "--worktree"])
            .arg(worktree)
            .arg("--control-socket")
            .arg(&self.socket)
            .args(["--", "/bin/sh", "-c", script]);
        exec
    }

    /// Waits until an alert with `rule` appears (alerts are flushed one by one).
    pub fn wait_for_alert(&self, rule: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(alert) = self.alerts().into_iter().find(|a| a["rule"] == rule) {
                return Some(alert);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What became of one request written to the control socket on a connection of its own.
#[derive(Debug)]
pub enum ControlOutcome {
    /// The daemon's reply line, parsed.
    Reply(Value),
    /// A reply line that is not JSON.
    Garbled(String),
    /// The daemon closed the connection without replying.
    Closed,
    /// No reply within the timeout, and the connection still open.
    Silent,
}

impl ControlOutcome {
    /// An error reply or a closed connection: how the daemon may turn a request down.
    pub fn is_refusal(&self) -> bool {
        match self {
            ControlOutcome::Reply(v) => v["status"] == "error",
            ControlOutcome::Closed => true,
            _ => false,
        }
    }
}

/// Connects to the control socket, writes `bytes` (a write the daemon cuts short by closing
/// is not an error) and reads one reply line.
pub fn control_raw(socket: &Path, bytes: &[u8], timeout: Duration) -> ControlOutcome {
    use std::io::{ErrorKind, Write as _};
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // A large request is written by a thread of its own: the daemon may answer (and close)
    // before it has read everything.
    let bytes = bytes.to_vec();
    let write = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let mut line = Vec::new();
    let outcome = match BufReader::new(&stream).read_until(b'\n', &mut line) {
        Ok(0) => ControlOutcome::Closed,
        Ok(_) => {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            match serde_json::from_str(&text) {
                Ok(value) => ControlOutcome::Reply(value),
                Err(_) => ControlOutcome::Garbled(text),
            }
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            ControlOutcome::Silent
        }
        Err(_) => ControlOutcome::Closed,
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = write.join();
    outcome
}

/// Sends one JSON request line; the reply (panics on anything else).
pub fn control_call(socket: &Path, request: &str) -> Value {
    match control_raw(
        socket,
        format!("{request}\n").as_bytes(),
        Duration::from_secs(10),
    ) {
        ControlOutcome::Reply(v) => v,
        other => panic!("{request}: {other:?}"),
    }
}

/// Names of the agent cgroups that exist now (`<cgroup2>/agent-sensor/*`).
pub fn agent_cgroups() -> std::collections::BTreeSet<String> {
    std::fs::read_dir(cgroup2_root().join("agent-sensor"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// GET `http://ADDR/PATH` (loopback, HTTP/1.0): the body, or `None` if nothing answers.
pub fn http_get(url: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://")?;
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

impl Sensor {
    /// Whether the sensor process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Panics unless the daemon is alive and answers `{"op":"agents"}` on a new connection.
    pub fn assert_serving(&mut self, after: &str) {
        assert!(self.is_running(), "the sensor died after {after}");
        match control_raw(
            &self.socket,
            b"{\"op\":\"agents\"}\n",
            Duration::from_secs(10),
        ) {
            ControlOutcome::Reply(v) if v["status"] == "agents" => {}
            other => panic!("after {after} the daemon no longer serves: {other:?}"),
        }
    }

    /// The entry of agent `name` in `agent-sensor agents --json`, if listed.
    pub fn listed_agent(&self, name: &str) -> Option<serde_json::Value> {
        let out = Command::new(sensor_binary())
            .args(["agents", "--json", "--control-socket"])
            .arg(&self.socket)
            .output()
            .ok()?;
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        listed
            .as_array()?
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
    }

    /// The `/metrics` exposition.
    pub fn metrics_text(&self) -> Option<String> {
        http_get(&self.metrics_url()?)
    }

    /// The value of the metric sample `series` (name and labels, as exposed) once it reaches
    /// `at_least`, or what it is after 10 s (0 if absent): the daemon reads the kernel's
    /// counters once a second.
    pub fn wait_for_sample(&self, series: &str, at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics_text().expect("/metrics answers");
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(series))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if value >= at_least || Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything the sensor logged so far (and, once stopped, all of it).
    pub fn log_text(&mut self) -> String {
        while let Ok(line) = self.stderr_lines.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }
}

/// Answers up to `queries` DNS queries on `socket` (the resolver a test runs on loopback), each
/// with one A record `ip`; returns early when none comes for a minute.
pub fn answer_dns(socket: std::net::UdpSocket, ip: [u8; 4], queries: usize) {
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    for _ in 0..queries {
        let mut buf = [0u8; 512];
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            return;
        };
        if let Some(reply) = dns_a_reply(&buf[..len], ip) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

/// A DNS query for `name` (one question of type `qtype`, class IN, recursion desired), as
/// `hex:` for the helper scripts' command lines.
pub fn dns_query_hex(id: u16, name: &str, qtype: u16) -> String {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    let hex: String = q.iter().map(|b| format!("{b:02x}")).collect();
    format!("hex:{hex}")
}

/// The reply to `query`: its id and question, and one A record `ip` (TTL 60 s). `None` for a
/// datagram without a whole question.
fn dns_a_reply(query: &[u8], ip: [u8; 4]) -> Option<Vec<u8>> {
    // The header (12 bytes) then the question: name, QTYPE, QCLASS.
    let name_end = query.get(12..)?.iter().position(|b| *b == 0)?;
    let question = query.get(12..12 + name_end + 1 + 4)?;
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]); // id
    reply.extend_from_slice(&[0x81, 0x80]); // QR, RD, RA, NOERROR
    reply.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]); // QD=1 AN=1 NS=0 AR=0
    reply.extend_from_slice(question);
    reply.extend_from_slice(&[0xc0, 0x0c]); // name: pointer to the question's
    reply.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    reply.extend_from_slice(&60u32.to_be_bytes()); // TTL
    reply.extend_from_slice(&[0, 4]); // rdlength
    reply.extend_from_slice(&ip);
    Some(reply)
}
