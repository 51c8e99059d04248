//! Bad input against the real daemon: malformed and hostile control-socket requests, users
//! who are not root, and secrets an agent reads and sends. Each test starts a sensor of its
//! own (own control socket, own state dir) and runs alone (they all load the sensor); a
//! refused request must leave no agent and no agent cgroup behind. Nothing leaves the
//! loopback interface.

use std::{
    collections::BTreeSet,
    io::Read as _,
    net::{TcpListener, UdpSocket},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use agent_sensor_tests::*;

const NOBODY: u32 = 65534;

/// One test of this file at a time: each loads the sensor, and one lowers its descriptor
/// limit.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A sensor with the built-in policy in monitor mode.
fn plain_sensor() -> Sensor {
    Sensor::start(&["--mode", "monitor"])
}

/// Sends `bytes` on a connection of its own and checks the daemon turned it down (an error
/// reply or a closed connection), then that it still serves.
fn assert_refused(sensor: &mut Sensor, label: &str, bytes: &[u8]) -> ControlOutcome {
    let outcome = control_raw(&sensor.socket, bytes, Duration::from_secs(10));
    assert!(
        outcome.is_refusal(),
        "{label}: neither an error reply nor a closed connection: {outcome:?}"
    );
    sensor.assert_serving(label);
    outcome
}

/// Deterministic junk (xorshift), with a newline at the end.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    out.push(b'\n');
    out
}

/// The daemon's cgroup name for an agent name (`<name>-<id>`), as `daemon::startup` makes it.
fn cgroup_safe(name: &str) -> String {
    name.chars()
        .map(|c| match c.is_ascii_alphanumeric() || "-_.".contains(c) {
            true => c,
            false => '_',
        })
        .collect()
}

/// Panics if an agent cgroup for one of `names` appeared since `before` (cgroups of other
/// test runs on the machine are left alone).
fn assert_no_cgroup_for<'a>(
    before: &BTreeSet<String>,
    names: impl IntoIterator<Item = &'a str>,
    what: &str,
) {
    let now = agent_cgroups();
    let new: Vec<&String> = now.difference(before).collect();
    for name in names {
        let prefix = format!("{}-", cgroup_safe(name));
        let made: Vec<_> = new.iter().filter(|c| c.starts_with(&prefix)).collect();
        assert!(made.is_empty(), "{what} made cgroups {made:?} for {name:?}");
    }
}

/// Panics if any agent cgroup appeared since `before`. (Ones may have gone meanwhile: a daemon
/// starting in another test removes empty cgroups an earlier run left behind.)
fn assert_no_new_cgroup(before: &BTreeSet<String>, what: &str) {
    let now = agent_cgroups();
    let new: Vec<&String> = now.difference(before).collect();
    assert!(new.is_empty(), "{what} made cgroups {new:?}");
}

/// Removes the (empty) cgroups the daemon made for agent `name` since `before`.
fn remove_agent_cgroups(before: &BTreeSet<String>, name: &str) {
    let parent = cgroup2_root().join("agent-sensor");
    let prefix = format!("{}-", cgroup_safe(name));
    for cgroup in agent_cgroups().difference(before) {
        if cgroup.starts_with(&prefix) {
            let _ = std::fs::remove_dir(parent.join(cgroup));
        }
    }
}

#[test]
fn malformed_requests_get_an_error_and_the_daemon_keeps_serving() {
    if !can_run_kernel_tests("malformed_requests_get_an_error_and_the_daemon_keeps_serving") {
        return;
    }
    let _serial = serial();
    let cgroups_before = agent_cgroups();
    let mut sensor = plain_sensor();
    let deep_array = format!("{}\n", "[".repeat(100_000));
    let deep_op = format!("{{\"op\":{}\n", "{\"a\":".repeat(10_000));
    let long_name = format!("{{\"op\":\"thaw\",\"agent\":\"{}\"}}\n", "a".repeat(60_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Not JSON, or not an object.
        ("text", b"not json\n".to_vec()),
        ("open brace", b"{\n".to_vec()),
        ("cut short", b"{\"op\":\n".to_vec()),
        ("empty line", b"\n".to_vec()),
        ("array", b"[]\n".to_vec()),
        ("null", b"null\n".to_vec()),
        ("bare string", b"\"agents\"\n".to_vec()),
        ("empty object", b"{}\n".to_vec()),
        ("trailing brace", b"{\"op\":\"agents\"}}\n".to_vec()),
        (
            "two objects",
            b"{\"op\":\"agents\"} {\"op\":\"agents\"}\n".to_vec(),
        ),
        ("deeply nested array", deep_array.into_bytes()),
        ("deeply nested op", deep_op.into_bytes()),
        // Operations the daemon does not have, the policy ones included: a running daemon's
        // policy cannot be changed over the socket.
        ("unknown op", b"{\"op\":\"shutdown\"}\n".to_vec()),
        ("reload", b"{\"op\":\"reload\"}\n".to_vec()),
        (
            "set policy",
            b"{\"op\":\"set_policy\",\"policy\":\"[sensor]\\nmode = \\\"monitor\\\"\"}\n".to_vec(),
        ),
        ("op in capitals", b"{\"op\":\"AGENTS\"}\n".to_vec()),
        ("numeric op", b"{\"op\":1}\n".to_vec()),
        ("null op", b"{\"op\":null}\n".to_vec()),
        ("no op", b"{\"agent\":\"a\"}\n".to_vec()),
        // Unknown fields.
        (
            "unknown field on thaw",
            b"{\"op\":\"thaw\",\"agent\":\"a\",\"force\":true}\n".to_vec(),
        ),
        (
            "unknown field on register",
            b"{\"op\":\"register\",\"agent\":\"a\",\"worktree\":\"/tmp\",\"profile\":null,\"uid\":0}\n"
                .to_vec(),
        ),
        (
            "unknown field on confirm",
            b"{\"op\":\"confirm\",\"agent_id\":1,\"pid\":1,\"force\":true}\n".to_vec(),
        ),
        // Wrong types and ranges.
        (
            "string agent id",
            b"{\"op\":\"confirm\",\"agent_id\":\"1\",\"pid\":1}\n".to_vec(),
        ),
        (
            "negative pid",
            b"{\"op\":\"confirm\",\"agent_id\":1,\"pid\":-1}\n".to_vec(),
        ),
        (
            "pid beyond u32",
            b"{\"op\":\"confirm\",\"agent_id\":1,\"pid\":4294967296}\n".to_vec(),
        ),
        (
            "huge float id",
            b"{\"op\":\"confirm\",\"agent_id\":1e400,\"pid\":1}\n".to_vec(),
        ),
        ("numeric agent", b"{\"op\":\"thaw\",\"agent\":5}\n".to_vec()),
        ("missing agent", b"{\"op\":\"kill\"}\n".to_vec()),
        (
            "duplicate agent",
            b"{\"op\":\"kill\",\"agent\":\"a\",\"agent\":\"b\"}\n".to_vec(),
        ),
        ("NUL in name", b"{\"op\":\"thaw\",\"agent\":\"\\u0000\"}\n".to_vec()),
        ("long name", long_name.into_bytes()),
        // Bytes that are not text.
        ("invalid UTF-8", b"\xff\xfe\xfd\n".to_vec()),
        ("NUL bytes", b"\0\0\0\0\n".to_vec()),
        ("garbage", garbage(4096, 0x9e37_79b9_7f4a_7c15)),
        ("garbage with braces", {
            let mut g = b"{\"op\":\"agents\"".to_vec();
            g.extend(garbage(512, 42));
            g
        }),
    ];
    for (label, bytes) in &cases {
        assert_refused(&mut sensor, label, bytes);
    }

    // One connection, bad lines then a good one: each bad line gets its error, and the
    // connection serves on.
    let mut conversation = Vec::new();
    for bad in ["nonsense", "{\"op\":\"nope\"}", "[1,2,3]"] {
        conversation.extend_from_slice(bad.as_bytes());
        conversation.push(b'\n');
    }
    conversation.extend_from_slice(b"{\"op\":\"agents\"}\n");
    let replies = read_replies(&sensor.socket, &conversation, 4);
    assert_eq!(replies.len(), 4, "{replies:?}");
    for reply in &replies[..3] {
        assert_eq!(reply["status"], "error", "{replies:?}");
        assert!(
            reply["message"]
                .as_str()
                .is_some_and(|m| m.contains("malformed request")),
            "{replies:?}"
        );
    }
    assert_eq!(replies[3]["status"], "agents", "{replies:?}");

    sensor.assert_serving("every malformed request");
    assert_no_new_cgroup(&cgroups_before, "a refused request");
    sensor.stop();
}

/// Writes `bytes` on one connection and reads `n` reply lines.
fn read_replies(socket: &Path, bytes: &[u8], n: usize) -> Vec<serde_json::Value> {
    use std::io::{BufRead as _, BufReader, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut reader = BufReader::new(stream);
    let mut replies = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        replies.push(serde_json::from_str(&line).unwrap());
    }
    replies
}

#[test]
fn oversized_lines_and_many_connections_do_not_take_the_daemon_down() {
    if !can_run_kernel_tests("oversized_lines_and_many_connections_do_not_take_the_daemon_down") {
        return;
    }
    let _serial = serial();
    let mut sensor = plain_sensor();

    // 10 MB without a newline: the daemon stops reading long before the end.
    let huge = vec![b'a'; 10 << 20];
    let outcome = assert_refused(&mut sensor, "a 10 MB line without newline", &huge);
    if let ControlOutcome::Reply(reply) = &outcome {
        assert_eq!(
            reply["message"], "request too long (limit 65536 bytes)",
            "{reply}"
        );
    }
    // 10 MB of JSON-looking text on one line, newline at the end.
    let mut json = b"{\"op\":\"thaw\",\"agent\":\"".to_vec();
    json.resize(10 << 20, b'x');
    json.extend_from_slice(b"\"}\n");
    assert_refused(&mut sensor, "a 10 MB request", &json);
    // Just over the limit of one request, with its newline.
    let mut over = b"{\"op\":\"agents\",\"pad\":\"".to_vec();
    over.resize(70 * 1024, b' ');
    over.extend_from_slice(b"\"}\n");
    let outcome = assert_refused(&mut sensor, "a 70 kB request", &over);
    if let ControlOutcome::Reply(reply) = &outcome {
        assert_eq!(
            reply["message"], "request too long (limit 65536 bytes)",
            "{reply}"
        );
    }

    // Many connections at once, all asking; then many idle ones held open while a new
    // connection is still answered.
    const CLIENTS: usize = 200;
    let socket = sensor.socket.clone();
    let askers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                control_raw(&socket, b"{\"op\":\"agents\"}\n", Duration::from_secs(30))
            })
        })
        .collect();
    for (n, asker) in askers.into_iter().enumerate() {
        match asker.join().unwrap() {
            ControlOutcome::Reply(v) if v["status"] == "agents" => {}
            other => panic!("client {n} of {CLIENTS}: {other:?}"),
        }
    }
    let idle: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let mut stream = std::os::unix::net::UnixStream::connect(&socket)
                .unwrap_or_else(|e| panic!("idle connection {n}: {e}"));
            // Half a request, never finished.
            use std::io::Write as _;
            let _ = stream.write_all(b"{\"op\":\"age");
            stream
        })
        .collect();
    let started = Instant::now();
    sensor.assert_serving(&format!("{CLIENTS} idle half-written connections"));
    assert!(started.elapsed() < Duration::from_secs(5), "slow answer");
    drop(idle);
    sensor.assert_serving("the idle connections closed");
    sensor.stop();
}

#[test]
fn hostile_register_confirm_thaw_and_kill_are_refused_without_a_trace() {
    if !can_run_kernel_tests("hostile_register_confirm_thaw_and_kill_are_refused_without_a_trace") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::outside_tmp("hostile-register");
    let worktree = git_worktree(&dir.0, "work");
    let file = worktree.join("README");
    let cgroups_before = agent_cgroups();
    let mut sensor = plain_sensor();
    let register = |agent: &str, worktree: &str, profile: Option<&str>| {
        serde_json::json!({
            "op": "register",
            "agent": agent,
            "worktree": worktree,
            "profile": profile,
        })
        .to_string()
    };
    let long = "a".repeat(65);
    // Names with path characters, control characters, shell syntax, nothing at all.
    let bad_names = [
        "../../x",
        "../x",
        ".",
        "..",
        ".hidden",
        "a/b",
        "/etc",
        "x\0y",
        "line\nbreak",
        "$(touch /tmp/pwned)",
        "",
        " ",
        "ünïcode",
        long.as_str(),
    ];
    let mut names: Vec<&str> = bad_names.to_vec();
    names.extend(["hostile-wt", "hostile-profile", "x"]);
    let mut requests: Vec<(String, String)> = Vec::new();
    for name in bad_names {
        requests.push((
            format!("register agent {name:?}"),
            register(name, s(&worktree), None),
        ));
    }
    // Worktrees that are not absolute existing directories.
    for bad in [
        s(&file),
        "relative/dir",
        "work",
        ".",
        "",
        "/nonexistent/agent-sensor-test",
        "/dev/null",
        "/proc/self/fd/0",
    ] {
        requests.push((
            format!("register worktree {bad:?}"),
            register("hostile-wt", bad, None),
        ));
    }
    requests.push((
        "register worktree with NUL".into(),
        register("hostile-wt", &format!("{}\0/x", s(&worktree)), None),
    ));
    // Profiles the policy does not have.
    for profile in ["no-such-profile", "../../etc", ""] {
        requests.push((
            format!("register profile {profile:?}"),
            register("hostile-profile", s(&worktree), Some(profile)),
        ));
    }
    // Confirm for processes the kernel does not track for that agent.
    let me = std::process::id();
    for (agent_id, pid) in [
        (1u64, 1u32),
        (0, 1),
        (1, 0),
        (u64::MAX, u32::MAX),
        (1, me),
        (2, sensor.pid()),
    ] {
        requests.push((
            format!("confirm agent {agent_id} pid {pid}"),
            serde_json::json!({ "op": "confirm", "agent_id": agent_id, "pid": pid }).to_string(),
        ));
    }
    // Abandoning registrations that do not exist.
    for agent_id in [0u64, 1, u64::MAX] {
        requests.push((
            format!("abandon agent {agent_id}"),
            serde_json::json!({ "op": "abandon", "agent_id": agent_id }).to_string(),
        ));
    }
    // Thaw and kill of agents that do not exist.
    for op in ["thaw", "kill"] {
        for name in ["nobody-here", "../../x", "", "*", "default"] {
            requests.push((
                format!("{op} {name:?}"),
                serde_json::json!({ "op": op, "agent": name }).to_string(),
            ));
        }
    }

    for (label, request) in &requests {
        let outcome = control_raw(
            &sensor.socket,
            format!("{request}\n").as_bytes(),
            Duration::from_secs(10),
        );
        match &outcome {
            ControlOutcome::Reply(v) if v["status"] == "error" => {
                let message = v["message"].as_str().unwrap_or_default();
                assert!(!message.is_empty(), "{label}: empty error message");
            }
            other => panic!("{label}: not refused: {other:?}\nrequest: {request}"),
        }
        sensor.assert_serving(label);
    }

    // No agent, no cgroup, nothing outside the agents' cgroup parent, no process touched.
    let listed = control_call(&sensor.socket, "{\"op\":\"agents\"}");
    assert_eq!(listed["agents"], serde_json::json!([]), "{listed}");
    assert_no_new_cgroup(&cgroups_before, "a refused request");
    let root = cgroup2_root();
    for escaped in [root.join("x"), root.join("agent-sensor/x")] {
        assert!(!escaped.exists(), "{} exists", escaped.display());
    }
    assert!(!Path::new("/tmp/pwned").exists());
    assert!(Path::new("/proc/1").exists());
    sensor.assert_serving("every hostile request");
    sensor.stop();
    assert_no_cgroup_for(&cgroups_before, names.iter().copied(), "a refused register");
}

#[test]
fn the_control_socket_is_root_only() {
    if !can_run_kernel_tests("the_control_socket_is_root_only") {
        return;
    }
    let _serial = serial();
    let marker_dir = TempDir::new("nobody-marker");
    // nobody may create the marker: a command that ran would leave it.
    std::fs::set_permissions(&marker_dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = marker_dir.0.join("ran");
    let cgroups_before = agent_cgroups();
    let mut sensor = plain_sensor();
    let meta = std::fs::metadata(&sensor.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "socket mode");
    assert_eq!(meta.uid(), 0, "socket owner");

    let sock = s(&sensor.socket).to_string();
    let exec_args = |marker: &Path| -> Vec<String> {
        [
            "exec",
            "--agent",
            "nobody-agent",
            "--worktree",
            "/",
            "--control-socket",
            &sock,
            "--",
            "/bin/sh",
            "-c",
            &format!("touch {}", marker.display()),
        ]
        .map(String::from)
        .to_vec()
    };
    let as_nobody = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_as(NOBODY, &args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} succeeded as nobody");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        stderr
    };
    let commands: Vec<Vec<String>> = vec![
        vec!["agents".into(), "--control-socket".into(), sock.clone()],
        vec![
            "agents".into(),
            "--json".into(),
            "--control-socket".into(),
            sock.clone(),
        ],
        vec![
            "thaw".into(),
            "x".into(),
            "--control-socket".into(),
            sock.clone(),
        ],
        vec![
            "kill".into(),
            "x".into(),
            "--control-socket".into(),
            sock.clone(),
        ],
        exec_args(&marker),
    ];
    // The socket's mode keeps nobody out.
    for args in &commands {
        let stderr = as_nobody(args);
        assert!(stderr.contains("Permission denied"), "{args:?}: {stderr}");
    }
    assert!(
        !marker.exists(),
        "exec ran its command as nobody without the daemon"
    );

    // Even with the mode loosened, the daemon checks who is asking.
    std::fs::set_permissions(&sensor.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let loosened: Vec<String> = commands.iter().map(|args| as_nobody(args)).collect();
    std::fs::set_permissions(&sensor.socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (args, stderr) in commands.iter().zip(&loosened) {
        // The daemon answers "root only" and closes without reading the request: a client
        // still writing it sees the closed connection instead of the answer.
        assert!(
            stderr.contains("root only")
                || stderr.contains("Broken pipe")
                || stderr.contains("Connection reset"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!marker.exists(), "exec ran its command as nobody");

    sensor.assert_serving("nobody's attempts");
    let listed = control_call(&sensor.socket, "{\"op\":\"agents\"}");
    assert_eq!(listed["agents"], serde_json::json!([]), "{listed}");
    assert_no_new_cgroup(&cgroups_before, "a refused request");
    sensor.stop();
}

#[test]
fn a_user_who_is_not_root_cannot_run_the_daemon_or_change_its_policy() {
    if !can_run_kernel_tests("a_user_who_is_not_root_cannot_run_the_daemon_or_change_its_policy") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("nobody-policy");
    let readable = dir.0.join("readable.toml");
    let private = dir.0.join("private.toml");
    let policy =
        "[sensor]\nmode = \"monitor\"\n\n[profiles.default]\nreadable = [\"/etc/shadow\"]\n";
    for (path, mode) in [(&readable, 0o644), (&private, 0o600)] {
        std::fs::write(path, policy).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // The state dir exists (root's, 0755): what stops nobody is not a missing directory.
    let state = dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    let socket = dir.0.join("control.sock");
    let run = |policy: &Path| {
        run_as(
            NOBODY,
            &[
                "run",
                "--policy",
                s(policy),
                "--state-dir",
                s(&state),
                "--control-socket",
                s(&socket),
                "--metrics-addr",
                "none",
            ],
        )
    };

    let out = run(&readable);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run --policy succeeded as nobody");
    assert!(stderr.contains("must run as root"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // A policy only root may read: nobody gets a clear refusal, never its contents.
    let out = run(&private);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run --policy succeeded as nobody");
    assert!(
        stderr.contains("must run as root")
            || (stderr.contains("cannot read policy") && stderr.contains("Permission denied")),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        !stderr.contains("/etc/shadow") && !stderr.contains("panicked"),
        "{stderr}"
    );

    let out = run_as(NOBODY, &["check-config", s(&private)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "check-config of a 0600 file succeeded as nobody"
    );
    assert!(
        stderr.contains("cannot read policy") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(stderr.contains(s(&private)), "{stderr}");
    assert!(
        !stderr.contains("/etc/shadow") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // Root reads it.
    let out = Command::new(sensor_binary())
        .args(["check-config", s(&private)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(!socket.exists(), "nobody's daemon made a control socket");
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "nobody's daemon wrote to the state dir"
    );
}

/// A scene with a secret file the policy marks sensitive, and the program an agent uses to
/// send it: `send.py FILE PORT UDP_PORT` sends the file's bytes over TCP (send and sendmsg)
/// and UDP, all to 127.0.0.1.
struct SecretScene {
    base: Scene,
    secret: PathBuf,
    sender: PathBuf,
}

const SENDER: &str = "import socket, sys\n\
    data = open(sys.argv[1], 'rb').read()\n\
    s = socket.create_connection(('127.0.0.1', int(sys.argv[2])))\n\
    s.sendall(data)\n\
    s.sendmsg([data])\n\
    s.close()\n\
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
    u.sendto(data, ('127.0.0.1', int(sys.argv[3])))\n\
    u.connect(('127.0.0.1', int(sys.argv[3])))\n\
    u.send(data)\n";

impl SecretScene {
    fn new(tag: &str, secret: &[u8]) -> Self {
        let base = Scene::new(tag, "", "");
        let secret_path = base.secrets.join("api-token");
        std::fs::write(&secret_path, secret).unwrap();
        let sender = base.root.join("send.py");
        std::fs::write(&sender, SENDER).unwrap();
        Self {
            base,
            secret: secret_path,
            sender,
        }
    }

    /// Runs the agent that reads the secret and sends it to listeners of this test; returns
    /// the sensor (still running) and what the listeners received.
    fn exfiltrate(&self, agent: &str) -> (Sensor, Vec<u8>) {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let tcp_port = tcp.local_addr().unwrap().port();
        let udp_port = udp.local_addr().unwrap().port();
        let receiver = std::thread::spawn(move || {
            let mut got = Vec::new();
            tcp.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut conn = loop {
                match tcp.accept() {
                    Ok((conn, _)) => break conn,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("the agent never connected: {e}"),
                }
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = conn.read_to_end(&mut got);
            let mut buf = vec![0u8; 65536];
            for _ in 0..2 {
                if let Ok(n) = udp.recv(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            got
        });
        let sensor = self.base.sensor("monitor");
        let script = format!(
            "/usr/bin/python3 {} {} {tcp_port} {udp_port}",
            self.sender.display(),
            self.secret.display()
        );
        assert!(sensor
            .exec_agent(agent, &self.base.worktree, &script)
            .success());
        let received = receiver.join().unwrap();
        (sensor, received)
    }
}

/// Every file below `dir`, with its text.
fn files_below(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

/// Where the token shows up: (place, JSON field or line) for every output the sensor made.
fn leaks(sensor: &mut Sensor, metrics: &str, needles: &[&str]) -> Vec<String> {
    let mut places: Vec<(String, String)> = vec![
        ("/metrics".into(), metrics.to_string()),
        ("sensor log".into(), sensor.log_text()),
    ];
    for path in [&sensor.events_path, &sensor.alerts_path] {
        places.push((
            path.display().to_string(),
            std::fs::read_to_string(path).unwrap_or_default(),
        ));
    }
    for (path, text) in files_below(&sensor.state_dir) {
        places.push((path.display().to_string(), text));
    }
    let mut found = Vec::new();
    for (place, text) in &places {
        for needle in needles {
            for line in text.lines().filter(|l| l.contains(needle)) {
                let fields = serde_json::from_str::<serde_json::Value>(line)
                    .map(|v| fields_containing(&v, needle, "").join(", "))
                    .unwrap_or_else(|_| line.chars().take(300).collect());
                found.push(format!("{place}: {needle} in {fields}"));
            }
            // Pretty-printed JSON (incident bundles) spans lines.
            if text.contains(needle) && !text.lines().any(|l| l.contains(needle)) {
                found.push(format!("{place}: {needle} across lines"));
            }
        }
    }
    found
}

/// JSON paths of the strings in `value` that contain `needle`.
fn fields_containing(value: &serde_json::Value, needle: &str, at: &str) -> Vec<String> {
    match value {
        serde_json::Value::String(s) if s.contains(needle) => vec![at.to_string()],
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, v)| fields_containing(v, needle, &format!("{at}[{i}]")))
            .collect(),
        serde_json::Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| fields_containing(v, needle, &format!("{at}.{k}")))
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs the exfiltration of `secret` and returns the sensor's outputs that hold `token`,
/// after checking the sensor saw the read and the sends.
fn exfiltrate_and_find(tag: &str, secret: &[u8], token: &str) -> Vec<String> {
    let scene = SecretScene::new(tag, secret);
    let cgroups_before = agent_cgroups();
    let (mut sensor, received) = scene.exfiltrate(tag);
    let found = find_exposure(&scene, &mut sensor, &received, tag, token);
    drop(sensor);
    remove_agent_cgroups(&cgroups_before, tag);
    found
}

fn find_exposure(
    scene: &SecretScene,
    sensor: &mut Sensor,
    received: &[u8],
    tag: &str,
    token: &str,
) -> Vec<String> {
    let received = String::from_utf8_lossy(received).into_owned();
    assert_eq!(
        received.matches(token).count(),
        4,
        "the listeners did not get the secret four times (TCP send and sendmsg, UDP sendto \
         and send)"
    );
    let alert = sensor
        .wait_for_alert("credential.sensitive_read", Duration::from_secs(10))
        .expect("the secret read raised no alert");
    assert_eq!(alert["agent"], tag, "{alert}");
    // High severity: an incident bundle is written.
    let incidents = sensor.state_dir.join("incidents");
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_below(&incidents).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no incident bundle in {incidents:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = sensor.metrics_text().expect("/metrics answers");
    assert!(metrics.contains("credential.sensitive_read"), "{metrics}");
    let events = sensor.stop();

    // The sensor did see the data go out: sends of the agent with bytes captured.
    let sends: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "net.send" && e["data_len"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert!(sends.len() >= 3, "sends with data: {sends:#?}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "file.open" && e["path"] == s(&scene.secret)),
        "no open of the secret"
    );
    let hex = token.trim_start_matches("SECRET-");
    leaks(sensor, &metrics, &[token, hex])
}

#[test]
fn secrets_an_agent_reads_and_sends_appear_in_no_output() {
    if !can_run_kernel_tests("secrets_an_agent_reads_and_sends_appear_in_no_output") {
        return;
    }
    let _serial = serial();
    let token = format!("SECRET-{}", random_hex(16));
    // The way secrets look: a line of text, in a file of a few lines.
    let secret = format!("# deploy key\nAPI_TOKEN={token}\nexpires=never\n");
    let found = exfiltrate_and_find("secret-text", secret.as_bytes(), &token);
    assert!(
        found.is_empty(),
        "the secret is exposed:\n{}",
        found.join("\n")
    );
}

/// A secret whose bytes happen to form a DNS query message, sent over TCP to a port that is
/// not 53. The sensor parses the first bytes of data sent on a connected socket as a DNS
/// query (connected UDP resolvers send that way), and the JSON events carry the parsed name:
/// the secret ended up in `dns.name` of the `net.send` events until the parse was kept to
/// DNS peers.
#[test]
fn secrets_shaped_like_a_dns_query_appear_in_no_output() {
    if !can_run_kernel_tests("secrets_shaped_like_a_dns_query_appear_in_no_output") {
        return;
    }
    let _serial = serial();
    let token = format!("SECRET-{}", random_hex(16));
    let mut secret = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    secret.push(token.len() as u8);
    secret.extend_from_slice(token.as_bytes());
    secret.extend_from_slice(&[0, 0, 16, 0, 1]);
    let found = exfiltrate_and_find("secret-dns", &secret, &token);
    assert!(
        found.is_empty(),
        "the secret is exposed:\n{}",
        found.join("\n")
    );
}

// Regression tests for weaknesses found while writing this file (each was fixed after).

/// `Request::Agents` was a unit variant of an internally tagged enum, and serde applies
/// `deny_unknown_fields` only to the struct variants: `{"op":"agents","x":1}` was answered.
#[test]
fn unknown_fields_are_refused_on_every_op() {
    if !can_run_kernel_tests("unknown_fields_are_refused_on_every_op") {
        return;
    }
    let _serial = serial();
    let mut sensor = plain_sensor();
    assert_refused(
        &mut sensor,
        "unknown field on agents",
        b"{\"op\":\"agents\",\"x\":1}\n",
    );
    sensor.stop();
}

/// The accept loop of the control socket used to end at the first failed accept: one burst of
/// connections beyond the daemon's descriptor limit (EMFILE) left it running with no control
/// socket for good, so no agent could be registered, thawed or killed until it restarted.
#[test]
fn running_out_of_descriptors_does_not_end_the_control_socket() {
    if !can_run_kernel_tests("running_out_of_descriptors_does_not_end_the_control_socket") {
        return;
    }
    let _serial = serial();
    let mut sensor = plain_sensor();
    let open_now = std::fs::read_dir(format!("/proc/{}/fd", sensor.pid()))
        .unwrap()
        .count() as u64;
    let limit = libc::rlimit {
        rlim_cur: open_now + 32,
        rlim_max: open_now + 32,
    };
    // SAFETY: prlimit on our own child with a valid rlimit; the old value is not wanted.
    let ok = unsafe {
        libc::prlimit(
            sensor.pid() as i32,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(ok, 0, "prlimit: {}", std::io::Error::last_os_error());
    let burst: Vec<_> = (0..64)
        .map(|_| std::os::unix::net::UnixStream::connect(&sensor.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(burst);
    std::thread::sleep(Duration::from_millis(500));
    sensor.assert_serving("a burst of connections beyond the descriptor limit");
    sensor.stop();
}

/// A request line was checked against `MAX_REQUEST_BYTES` (64 kB) only once it was complete:
/// until then the daemon buffered up to 4 MB per connection, with no bound on connections.
#[test]
fn unfinished_requests_do_not_grow_the_daemon() {
    if !can_run_kernel_tests("unfinished_requests_do_not_grow_the_daemon") {
        return;
    }
    let _serial = serial();
    let mut sensor = plain_sensor();
    let rss_kb = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let before = rss_kb(sensor.pid());
    let chunk = vec![b'a'; (3 << 20) + (900 << 10)];
    let held: Vec<_> = (0..50)
        .map(|_| {
            use std::io::Write as _;
            let mut stream = std::os::unix::net::UnixStream::connect(&sensor.socket).unwrap();
            // The daemon refuses the line at its limit and closes: the rest may not go in.
            let _ = stream.write_all(&chunk);
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let grown = rss_kb(sensor.pid()).saturating_sub(before);
    drop(held);
    sensor.assert_serving("50 unfinished 3.9 MB requests");
    sensor.stop();
    assert!(
        grown < 64 << 10,
        "50 unfinished requests grew the daemon by {} MB",
        grown >> 10
    );
}
