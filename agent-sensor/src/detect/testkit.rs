//! Test helpers: synthetic events, a test policy written here (so the tests do not follow the
//! built-in default as it changes), and a fixture that feeds events to a detector.

use std::net::IpAddr;

use agent_sensor_common::EventKind;

use super::{AgentView, Context, Detector, Finding, OtherAgent, SensorSelf};
use crate::{
    events::{
        dns::DnsQuestion, sockaddr::SockAddr, Body, Event, FileBody, NetBody, PathSource, Stdio,
    },
    policy::{AgentIdentity, AgentScope, Policy, RuleId},
};

/// The agent's first process.
pub const PID: u32 = 1000;
pub const UID: u32 = 1000;
pub const WORKTREE: &str = "/work/a";
pub const HOME: &str = "/home/u";
pub const SENSOR_PID: u32 = 77;

pub const RDONLY: u32 = 0;
pub const RDWR: u32 = 0o2;
/// `O_WRONLY | O_CREAT | O_TRUNC`, what `>` in a shell does.
pub const WRITE: u32 = 0o1101;
pub const APPEND: u32 = 0o2101;
pub const DIRECTORY: u32 = 0o200000;

/// What the tests assume of the policy. Sensitive, startup, writable and egress entries are the
/// policy module's matching; tests that depend on them say so.
pub const TEST_POLICY: &str = r#"
[rules."isolation.write_outside_worktree"]
severity = "medium"
[rules."isolation.foreign_worktree"]
severity = "high"
[rules."credential.sensitive_read"]
severity = "high"
[rules."exfil.sensitive_then_egress"]
severity = "critical"
[rules."exfil.unallowed_egress"]
severity = "medium"
[rules."exfil.dns_tunnel"]
severity = "high"
[rules."exec.reverse_shell"]
severity = "critical"
[rules."exec.suspicious_tool"]
severity = "medium"
[rules."persistence.startup_write"]
severity = "high"
[rules."privilege.escalation"]
severity = "high"
[rules."tamper.sensor"]
severity = "critical"
[rules."anomaly.novel_behavior"]
severity = "low"

# Emptied so that the test profile, which extends `default`, holds only what is below.
[profiles.default]
readable = []
writable = []
sensitive = []
startup = []
[profiles.default.egress]
hosts = []
cidrs = []
ports = []

[profiles.test]
writable = ["/tmp/**", "~/.cargo/**", "~/.npm/**", "~/.cache/**", "~/.rustup/**"]
sensitive = ["~/.ssh/**", "~/.aws/**", "/etc/shadow", "**/.env"]
startup = ["~/.bashrc", "~/.profile", "/etc/cron.d/**", "/var/spool/cron/**", "~/.config/systemd/user/**", "~/.claude/settings.json"]

[profiles.test.egress]
hosts = ["api.anthropic.com", "*.crates.io", "github.com", "registry.npmjs.org"]
cidrs = ["10.20.0.0/16"]
ports = [443, 22]

[profiles.test.thresholds]
exfil_window_secs = 300
dns_label_max = 52
dns_entropy_bits = 3.8
dns_entropy_min_len = 24
dns_burst_unique = 20
dns_burst_window_secs = 10
dns_volume_bytes = 1024
dns_volume_window_secs = 600
learning_secs = 3600
novelty_min_score = 50
"#;

/// The test agent's own cgroup.
pub const AGENT_CGROUP: &str = "/sys/fs/cgroup/agent-sensor/a-1";

/// One agent ("a", worktree /work/a, profile "test") next to another ("b", /work/b).
pub struct Fixture {
    pub policy: Policy,
    pub scope: AgentScope,
    pub others: Vec<OtherAgent<'static>>,
    pub sensor: SensorSelf,
    pub detector: Detector,
    pub now_ns: u64,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_policy(TEST_POLICY)
    }

    pub fn with_policy(text: &str) -> Self {
        let policy = Policy::from_toml_str(text, "test policy").expect("test policy parses");
        let scope = policy.scope_for(&AgentIdentity {
            name: "a".into(),
            profile: "test".into(),
            worktree: WORKTREE.into(),
            home: HOME.into(),
        });
        Self {
            policy,
            scope,
            others: vec![OtherAgent {
                name: "b",
                worktree: std::path::Path::new("/work/b"),
            }],
            sensor: SensorSelf {
                pid: SENSOR_PID,
                protected_paths: vec![
                    "/etc/agent-sensor/policy.toml".into(),
                    "/var/lib/agent-sensor".into(),
                ],
                cgroup_root: "/sys/fs/cgroup".into(),
                resolvers: vec!["127.0.0.53".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            },
            detector: Detector::new(),
            now_ns: 1_000 * 1_000_000_000,
        }
    }

    /// Stamps `event` with the fixture's clock and runs the detector on it.
    pub fn feed(&mut self, mut event: Event) -> Vec<Finding> {
        event.ktime_ns = self.now_ns;
        let ctx = Context {
            agent: AgentView {
                id: 1,
                name: "a",
                profile: "test",
                scope: &self.scope,
                cgroup: Some(std::path::Path::new(AGENT_CGROUP)),
            },
            others: &self.others,
            sensor: &self.sensor,
            policy: &self.policy,
        };
        self.detector.observe(&ctx, &event)
    }

    pub fn feed_all(&mut self, events: impl IntoIterator<Item = Event>) -> Vec<Finding> {
        events.into_iter().flat_map(|e| self.feed(e)).collect()
    }

    pub fn advance_secs(&mut self, secs: u64) {
        self.advance_ms(secs * 1000);
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.now_ns += ms * 1_000_000;
    }
}

/// Exactly one finding, of `rule`, whose summary contains `needle`.
#[track_caller]
pub fn assert_fires(findings: Vec<Finding>, rule: RuleId, needle: &str) -> Finding {
    assert_eq!(
        findings.len(),
        1,
        "expected one {} finding, got {findings:#?}",
        rule.as_str()
    );
    let finding = findings.into_iter().next().unwrap();
    assert_eq!(finding.rule, rule, "{finding:#?}");
    assert!(
        finding.summary.contains(needle),
        "summary {:?} lacks {needle:?}",
        finding.summary
    );
    finding
}

#[track_caller]
pub fn assert_silent(findings: Vec<Finding>) {
    assert!(
        findings.is_empty(),
        "expected no finding, got {findings:#?}"
    );
}

pub fn rules_of(findings: &[Finding]) -> Vec<RuleId> {
    findings.iter().map(|f| f.rule).collect()
}

pub fn event(kind: EventKind, pid: u32, body: Body) -> Event {
    Event {
        kind,
        flags: 0,
        ktime_ns: 0,
        pid,
        tgid: pid,
        ppid: PID,
        uid: UID,
        gid: UID,
        cgroup_id: 0,
        agent_id: 1,
        comm: crate::events::Comm::new(b"test"),
        body,
    }
}

fn file_body(nr: u32, path: &str, path2: Option<&str>) -> FileBody {
    FileBody {
        nr,
        dirfd: -100,
        flags: 0,
        mode: 0,
        ret: 0,
        dev: 0,
        ino: 0,
        arg: 0,
        arg2: 0,
        repeats: 0,
        path_arg: path.as_bytes().to_vec(),
        path2_arg: path2.map(|p| p.as_bytes().to_vec()),
        path: Some(path.as_bytes().to_vec()),
        path_source: PathSource::Kernel,
        path2: path2.map(|p| p.as_bytes().to_vec()),
        base: None,
        base2: None,
    }
}

pub fn open(pid: u32, path: &str, flags: u32) -> Event {
    let mut body = file_body(257, path, None);
    body.flags = flags;
    body.mode = 0o644;
    body.ret = 3;
    event(EventKind::FileOpen, pid, Body::File(body))
}

pub fn file_op(kind: EventKind, pid: u32, path: &str, path2: Option<&str>) -> Event {
    let nr = match kind {
        EventKind::FileRename => 82,
        EventKind::FileUnlink => 87,
        EventKind::FileLink => 86,
        EventKind::FileChmod => 90,
        EventKind::FileChown => 92,
        EventKind::FileTruncate => 76,
        EventKind::FileMkdir => 83,
        EventKind::FileChdir => 80,
        other => panic!("not a path operation: {other:?}"),
    };
    event(kind, pid, Body::File(file_body(nr, path, path2)))
}

pub fn rename(pid: u32, from: &str, to: &str) -> Event {
    file_op(EventKind::FileRename, pid, from, Some(to))
}

pub fn link(pid: u32, existing: &str, new: &str) -> Event {
    file_op(EventKind::FileLink, pid, existing, Some(new))
}

/// `mount(source, target, …, flags)` in the host's mount namespace (its owner the initial user
/// namespace).
pub fn mount(pid: u32, source: &str, target: &str, flags: u32) -> Event {
    let mut body = file_body(165, target, Some(source));
    body.flags = flags;
    body.arg2 = 0xEFFF_FFFD;
    event(EventKind::FileMount, pid, Body::File(body))
}

/// `symlink(target, link)`: the target is stored text, the link is the path.
pub fn symlink(pid: u32, target: &str, link: &str) -> Event {
    let mut body = file_body(88, link, None);
    body.path2_arg = Some(target.as_bytes().to_vec());
    event(EventKind::FileSymlink, pid, Body::File(body))
}

pub fn exec(pid: u32, filename: &str, argv: &[&str]) -> Event {
    event(
        EventKind::ProcessExec,
        pid,
        Body::Exec {
            filename: filename.as_bytes().to_vec(),
            exe: filename
                .starts_with('/')
                .then(|| filename.as_bytes().to_vec()),
            argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            old_pid: pid,
            dev: 0,
            ino: 0,
            mode: 0o100755,
            stdio: [Stdio::Pipe, Stdio::Pipe, Stdio::Pipe],
        },
    )
}

pub fn fork(parent: u32, child: u32) -> Event {
    event(
        EventKind::ProcessFork,
        parent,
        Body::Fork {
            child_pid: child,
            child_tgid: child,
        },
    )
}

pub fn fork_thread(parent: u32, tid: u32) -> Event {
    event(
        EventKind::ProcessFork,
        parent,
        Body::Fork {
            child_pid: tid,
            child_tgid: parent,
        },
    )
}

pub fn exit(pid: u32) -> Event {
    event(EventKind::ProcessExit, pid, Body::Exit { raw: 0 })
}

fn net(kind: EventKind, pid: u32, nr: u32, addr: Option<SockAddr>) -> Event {
    event(
        kind,
        pid,
        Body::Net(NetBody {
            nr,
            fd: 5,
            ret: 0,
            bytes: 0,
            addr,
            dns: None,
            dns_answers: Vec::new(),
            data_len: 0,
            dns_name: None,
            addr_from_connect: false,
            socket: None,
        }),
    )
}

fn inet(ip: &str, port: u16) -> Option<SockAddr> {
    Some(SockAddr::Inet {
        ip: ip.parse::<IpAddr>().expect("test ip"),
        port,
    })
}

pub fn connect(pid: u32, ip: &str, port: u16) -> Event {
    net(EventKind::NetConnect, pid, 42, inet(ip, port))
}

/// A `socket` call the `sock_create` egress program refused, as its `net.denied` record says.
pub fn socket_denied(pid: u32, family: u16, kind: u16, protocol: u16) -> Event {
    let mut event = net(EventKind::NetDenied, pid, 41, None);
    if let Body::Net(net) = &mut event.body {
        net.fd = -1;
        net.ret = -1;
        net.socket = Some(agent_sensor_common::egress::SocketRequest {
            family,
            kind,
            protocol,
        });
    }
    event
}

pub fn connect_unix(pid: u32, path: &str) -> Event {
    let addr = SockAddr::Unix {
        path: path.as_bytes().to_vec(),
        is_abstract: false,
    };
    net(EventKind::NetConnect, pid, 42, Some(addr))
}

pub fn send_to(pid: u32, ip: &str, port: u16) -> Event {
    net(EventKind::NetSend, pid, 44, inet(ip, port))
}

/// accept() returning `fd` for a peer at `ip:port`.
pub fn accept(pid: u32, ip: &str, port: u16, fd: i64) -> Event {
    net(EventKind::NetAccept, pid, 43, inet(ip, port)).ret(fd)
}

/// A DNS query for `name` sent to the local stub resolver.
pub fn dns_query(pid: u32, name: &str) -> Event {
    let mut e = net(EventKind::NetSend, pid, 44, inet("127.0.0.53", 53));
    if let Body::Net(n) = &mut e.body {
        n.dns = Some(DnsQuestion {
            name: name.as_bytes().to_vec(),
            qtype: 1,
            longest_label: name.split('.').map(str::len).max().unwrap_or(0),
        });
    }
    e
}

pub fn sock_close(pid: u32, fd: i32) -> Event {
    event(
        EventKind::NetClose,
        pid,
        Body::SockClose(crate::events::SockCloseBody {
            fd,
            peer: None,
            local_port: 0,
            bytes_sent: 0,
            bytes_received: 0,
            at_exit: false,
            dns_name: None,
        }),
    )
}

pub fn syscall(kind: EventKind, pid: u32, nr: u32, args: [u64; 4], ret: i64) -> Event {
    event(
        kind,
        pid,
        Body::Syscall {
            nr,
            args,
            ret,
            name: None,
        },
    )
}

/// Adjustments to a synthetic event.
pub trait EventExt: Sized {
    fn ret(self, ret: i64) -> Self;
    fn uid(self, uid: u32) -> Self;
    fn ppid(self, ppid: u32) -> Self;
    fn stdio(self, stdio: [Stdio; 3]) -> Self;
    fn mode(self, mode: u32) -> Self;
    fn dns_name(self, name: &str) -> Self;
    fn fd(self, fd: i32) -> Self;
}

impl EventExt for Event {
    fn ret(mut self, ret: i64) -> Self {
        match &mut self.body {
            Body::File(f) => f.ret = ret,
            Body::Net(n) => n.ret = ret,
            Body::Syscall { ret: r, .. } => *r = ret,
            other => panic!("no result on {other:?}"),
        }
        self
    }

    fn uid(mut self, uid: u32) -> Self {
        self.uid = uid;
        self.gid = uid;
        self
    }

    fn ppid(mut self, ppid: u32) -> Self {
        self.ppid = ppid;
        self
    }

    fn stdio(mut self, stdio: [Stdio; 3]) -> Self {
        if let Body::Exec { stdio: s, .. } = &mut self.body {
            *s = stdio;
        }
        self
    }

    fn mode(mut self, mode: u32) -> Self {
        if let Body::Exec { mode: m, .. } = &mut self.body {
            *m = mode;
        }
        self
    }

    fn dns_name(mut self, name: &str) -> Self {
        if let Body::Net(n) = &mut self.body {
            n.dns_name = Some(name.as_bytes().to_vec());
        }
        self
    }

    fn fd(mut self, fd: i32) -> Self {
        if let Body::Net(n) = &mut self.body {
            n.fd = fd;
        }
        self
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "agent-sensor-detect-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
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

/// `TEST_POLICY` with one threshold changed.
pub fn policy_with(key: &str, value: &str) -> String {
    let line = TEST_POLICY
        .lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .expect("threshold in the test policy");
    TEST_POLICY.replace(line, &format!("{key} = {value}"))
}
