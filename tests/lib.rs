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
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..200 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running sensor started by a test.
pub struct Sensor {
    child: Option<Child>,
    pub events_path: PathBuf,
    stderr_lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
    _dir: TempDir,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "agent-sensor-test-{tag}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Sensor {
    /// Starts `agent-sensor run --events FILE <args>` and waits until it says it is ready.
    pub fn start(args: &[&str]) -> Self {
        let dir = TempDir::new("sensor");
        let events_path = dir.0.join("events.jsonl");
        let mut child = Command::new(sensor_binary())
            .arg("run")
            .arg("--events")
            .arg(&events_path)
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
            stderr_lines: rx,
            log: Vec::new(),
            _dir: dir,
        };
        sensor.wait_for_log("agent-sensor ready", Duration::from_secs(120));
        sensor
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
        read_events(&self.events_path)
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

/// Whether a BPF object with this id still exists in the kernel.
pub fn bpf_object_exists(kind: BpfKind, id: u32) -> bool {
    let cmd = match kind {
        BpfKind::Program => 13, // BPF_PROG_GET_FD_BY_ID
        BpfKind::Map => 14,     // BPF_MAP_GET_FD_BY_ID
        BpfKind::Link => 30,    // BPF_LINK_GET_FD_BY_ID
    };
    let mut attr = [0u32; 4];
    attr[0] = id;
    // SAFETY: bpf(2) with a zeroed attr large enough for the *_GET_FD_BY_ID commands.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 16) };
    if fd >= 0 {
        // SAFETY: we own the fd just returned.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

#[derive(Debug, Clone, Copy)]
pub enum BpfKind {
    Program,
    Map,
    Link,
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
