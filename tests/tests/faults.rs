//! Faults the sensor must ride out: a broken policy on SIGHUP, a ring-buffer overflow burst,
//! a full disk for incident bundles. (kill -9 under load is in response.rs.)

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use agent_sensor_tests::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn policy_text(sensitive: &[&Path]) -> String {
    let list: Vec<String> = sensitive
        .iter()
        .map(|p| format!("\"{}/**\"", p.display()))
        .collect();
    format!(
        "[discovery]\nprofile = \"test\"\n\n[profiles.test]\nsensitive = [{}]\n",
        list.join(", ")
    )
}

fn scratch(tag: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::outside_tmp(tag);
    let root = std::fs::canonicalize(&dir.0).unwrap();
    (dir, root)
}

fn sighup(sensor: &Sensor) {
    // SAFETY: signalling the sensor this test started.
    unsafe { libc::kill(sensor.pid() as i32, libc::SIGHUP) };
}

#[test]
fn a_broken_policy_on_sighup_leaves_the_old_one_in_force() {
    if !can_run_kernel_tests("a_broken_policy_on_sighup_leaves_the_old_one_in_force") {
        return;
    }
    let (_dir, root) = scratch("sighup");
    let worktree = git_worktree(&root, "work");
    let (old, new) = (root.join("old-secrets"), root.join("new-secrets"));
    for d in [&old, &new] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("key"), "k").unwrap();
    }
    let policy = root.join("policy.toml");
    std::fs::write(&policy, policy_text(&[&old])).unwrap();
    let mut sensor = Sensor::start(&["--policy", s(&policy)]);

    std::fs::write(&policy, "[profiles.test\nsensitive = 3\n").unwrap();
    sighup(&sensor);
    sensor.wait_for_log("not reloaded", Duration::from_secs(10));
    // The old policy still judges.
    assert!(sensor
        .exec_agent("a1", &worktree, &format!("cat {}/key", s(&old)))
        .success());
    assert!(sensor
        .wait_for_alert("credential.sensitive_read", Duration::from_secs(10))
        .is_some());

    std::fs::write(&policy, policy_text(&[&old, &new])).unwrap();
    sighup(&sensor);
    sensor.wait_for_log("reloaded", Duration::from_secs(10));
    assert!(sensor
        .exec_agent("a2", &worktree, &format!("cat {}/key", s(&new)))
        .success());
    sensor.stop();
    let alerts = sensor.alerts();
    assert!(
        alerts
            .iter()
            .any(|a| a["agent"] == "a2" && a["rule"] == "credential.sensitive_read"),
        "the reloaded policy was not applied: {alerts:#?}"
    );
    let error = sensor
        .log
        .iter()
        .find(|l| l.contains("not reloaded"))
        .unwrap();
    assert!(
        error.contains("policy.toml:"),
        "the error names no line: {error}"
    );
}

#[test]
fn a_reload_into_enforce_mode_shortens_how_long_records_wait() {
    if !can_run_kernel_tests("a_reload_into_enforce_mode_shortens_how_long_records_wait") {
        return;
    }
    let (_dir, root) = scratch("delay");
    let policy = root.join("policy.toml");
    std::fs::write(&policy, "[sensor]\nmode = \"monitor\"\n").unwrap();
    let mut sensor = Sensor::start(&["--policy", s(&policy)]);
    assert!(
        sensor
            .log_text()
            .contains("mode monitor (records read at most 4000 µs late)"),
        "{}",
        sensor.log_text()
    );
    // A freeze waits on the record that calls for it: enforce mode reads records sooner.
    std::fs::write(&policy, "[sensor]\nmode = \"enforce\"\n").unwrap();
    sighup(&sensor);
    sensor.wait_for_log(
        "SIGHUP: mode enforce: records read at most 1000 µs late",
        Duration::from_secs(10),
    );
    sensor.stop();

    // An explicit delay stays whatever the mode.
    std::fs::write(&policy, "[sensor]\nmode = \"monitor\"\n").unwrap();
    let mut sensor = Sensor::start(&["--policy", s(&policy), "--max-event-delay-us", "2000"]);
    std::fs::write(&policy, "[sensor]\nmode = \"enforce\"\n").unwrap();
    sighup(&sensor);
    sensor.wait_for_log("reloaded", Duration::from_secs(10));
    sensor.stop();
    let log = sensor.log_text();
    assert!(log.contains("read at most 2000 µs late"), "{log}");
    assert!(!log.contains("not reloaded"), "{log}");
    assert!(!log.contains("SIGHUP: mode enforce"), "{log}");
}

#[test]
fn a_ring_buffer_overflow_is_counted_and_the_daemon_carries_on() {
    if !can_run_kernel_tests("a_ring_buffer_overflow_is_counted_and_the_daemon_carries_on") {
        return;
    }
    let (_dir, root) = scratch("overflow");
    let worktree = git_worktree(&root, "work");
    // The smallest ring, and a burst far beyond it between two reads of the daemon. Every
    // open sent: by default the kernel counts the burst's repeats instead (see the capture
    // test of `--repeat-window-ms`), and it would not overflow anything.
    let mut sensor = Sensor::start(&["--ring-bytes", "4096", "--repeat-window-ms", "0"]);
    // Two loops at once, one per core: a daemon that drains as fast as one loop writes must
    // still fall behind.
    let burst = "for i in 1 2; do /usr/bin/python3 -c \"import os\nfor _ in range(20000): os.close(os.open('/etc/hostname', os.O_RDONLY))\" & done; wait";
    assert!(sensor.exec_agent("burst", &worktree, burst).success());
    sensor.wait_for_log("kernel dropped", Duration::from_secs(10));
    // Still serving, and still alerting on what it sees. A ring this small (a dozen records)
    // overflows on any burst, an agent's start-up included: the shell reads the secret itself
    // after the start-up burst has drained, and the read is tried a few times. What counts is
    // that the daemon still sees and judges it, and that a try it did not see is explained by
    // counted drops, never silent.
    let mut alert = None;
    for attempt in 0..5 {
        let drops_before = sensor.log_text().matches("kernel dropped").count();
        assert!(sensor
            .exec_agent(
                &format!("after-{attempt}"),
                &worktree,
                "sleep 0.3; read -r line < /etc/shadow"
            )
            .success());
        alert = sensor.wait_for_alert("credential.sensitive_read", Duration::from_secs(5));
        if alert.is_some() {
            break;
        }
        let log = sensor.log_text();
        assert!(
            log.matches("kernel dropped").count() > drops_before,
            "try {attempt} raised no alert and no drop was reported; the sensor said:\n{log}"
        );
    }
    sensor.stop();
    assert!(alert.is_some(), "no alert after the overflow in 5 tries");
    let drops: Vec<&String> = sensor
        .log
        .iter()
        .filter(|l| l.contains("kernel dropped"))
        .collect();
    assert!(
        drops
            .iter()
            .any(|l| l.contains("file.open events lost (ring buffer full)")),
        "{drops:#?}"
    );
}

#[test]
fn a_flood_of_one_repeated_open_is_counted_and_hides_nothing_that_follows() {
    if !can_run_kernel_tests(
        "a_flood_of_one_repeated_open_is_counted_and_hides_nothing_that_follows",
    ) {
        return;
    }
    let (_dir, root) = scratch("flood");
    let worktree = git_worktree(&root, "work");
    // A ring of a few hundred records, the default repeat window: an agent that floods it
    // with one open over and over, to have the kernel drop what comes next, costs the ring
    // one record a second. (With every open sent, the same burst overflows a smaller ring:
    // `a_ring_buffer_overflow_is_counted_and_the_daemon_carries_on`.)
    let mut sensor = Sensor::start(&["--ring-bytes", "65536"]);
    let flood = "/usr/bin/python3 -c \"import os\nfor _ in range(100000): os.close(os.open('/etc/hostname', os.O_RDONLY))\nopen('/etc/shadow').read()\"";
    assert!(sensor.exec_agent("flood", &worktree, flood).success());
    let alert = sensor.wait_for_alert("credential.sensitive_read", Duration::from_secs(5));
    let series = "agent_sensor_events_filtered_total{reason=\"repeat\"}";
    let repeats = sensor.wait_for_sample(series, 99_000.0);
    sensor.stop();
    let alert = alert.expect("the read after the flood raised no alert");
    let evidence = alert["evidence"].as_array().expect("evidence");
    assert!(
        evidence.iter().any(|e| e["path"] == "/etc/shadow"),
        "{alert:#}"
    );
    assert!(repeats >= 99_000.0, "{series} is {repeats}");
    let drops: Vec<&String> = sensor
        .log
        .iter()
        .filter(|l| l.contains("kernel dropped"))
        .collect();
    assert!(drops.is_empty(), "{drops:#?}");
}

/// A tmpfs of `kib` KiB mounted on `dir`; unmounted when the guard is dropped.
fn small_disk(dir: &Path, kib: u32) -> Unmount {
    std::fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cannot mount a tmpfs on {}", dir.display());
    Unmount(vec![dir.to_path_buf()])
}

#[test]
fn a_full_disk_for_incidents_still_alerts() {
    if !can_run_kernel_tests("a_full_disk_for_incidents_still_alerts") {
        return;
    }
    let (_dir, root) = scratch("fulldisk");
    let worktree = git_worktree(&root, "work");
    // The harness keeps the sensor's state in <its dir>/state: make that a tiny disk.
    let sensor_dir = TempDir::outside_tmp("fulldisk-sensor");
    let state = sensor_dir.0.join("state");
    // Dropped last: the sensor's own removal of its directory fails while the disk is still
    // mounted on it (the sensor needs the state there to clean up its agents, so it goes
    // first), and every run left one behind.
    let _after_unmount = TempDir(sensor_dir.0.clone());
    let _disk = small_disk(&state, 256);
    let mut sensor = Sensor::start_in(sensor_dir, &[]);
    // Fill what is left.
    let _ = std::fs::write(state.join("filler"), vec![0u8; 512 * 1024]);
    assert!(sensor
        .exec_agent("full", &worktree, "cat /etc/shadow > /dev/null")
        .success());
    let alert = sensor.wait_for_alert("credential.sensitive_read", Duration::from_secs(10));
    sensor.wait_for_log("cannot write incident bundle", Duration::from_secs(10));
    let metrics = sensor.metrics_url().and_then(|url| {
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string();
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        use std::io::{Read, Write};
        write!(stream, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        Some(body)
    });
    sensor.stop();
    assert!(alert.is_some(), "the alert did not reach the alerts file");
    let metrics = metrics.expect("metrics");
    assert!(
        metrics.lines().any(|l| l
            .starts_with("agent_sensor_alerts_total{rule=\"credential.sensitive_read\"")
            && !l.ends_with(" 0")),
        "the alert did not reach the metrics"
    );
}

/// Runs `agent-sensor run ARGS`, which must give up: its exit status and what it said. A
/// daemon still running after `timeout` was not refused: it is killed and the test fails.
fn run_refused(args: &[&str], timeout: Duration) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(sensor_binary())
        .arg("run")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start agent-sensor");
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "a daemon that should have been refused ran for {timeout:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused_and_the_first_carries_on() {
    if !can_run_kernel_tests(
        "a_second_daemon_on_the_same_state_dir_is_refused_and_the_first_carries_on",
    ) {
        return;
    }
    let (_dir, root) = scratch("twostate");
    let worktree = git_worktree(&root, "work");
    let mut first = Sensor::start(&[]);
    assert!(first.exec_agent("one", &worktree, "true").success());
    // Its own socket and events: only the state dir is shared.
    let socket = root.join("other.sock");
    let (status, said) = run_refused(
        &[
            "--state-dir",
            s(&first.state_dir),
            "--control-socket",
            s(&socket),
            "--events",
            s(&root.join("events.jsonl")),
            "--metrics-addr",
            "none",
        ],
        Duration::from_secs(30),
    );
    assert!(!status.success(), "{said}");
    let expected = format!(
        "the state directory {} is in use by the agent-sensor daemon with pid {}",
        first.state_dir.display(),
        first.pid()
    );
    assert!(said.contains(&expected), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "not one line: {said}");
    assert!(
        !socket.exists(),
        "the refused daemon made its control socket"
    );
    // The first one goes on: it still registers, tracks and confirms agents.
    first.assert_serving("a second daemon was refused");
    assert!(first.exec_agent("two", &worktree, "true").success());
    first.stop_only();
}

#[test]
fn pins_in_use_refuse_a_second_daemon_and_uninstall_but_not_the_daemon_after_a_kill_9() {
    if !can_run_kernel_tests(
        "pins_in_use_refuse_a_second_daemon_and_uninstall_but_not_the_daemon_after_a_kill_9",
    ) {
        return;
    }
    let (_dir, root) = scratch("twopins");
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/agent-sensor-test-lock-{}",
        std::process::id()
    ));
    let _uninstall = Uninstall(pins.clone());
    let args = ["--persist", s(&pins)];
    let mut first = Sensor::start_in(TempDir::new("twopins-sensor"), &args);
    let in_use = format!(
        "the pin directory {} is in use by the agent-sensor daemon with pid {}",
        pins.display(),
        first.pid()
    );

    let uninstall = Command::new(sensor_binary())
        .args(["uninstall", "--persist-dir", s(&pins)])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&uninstall.stderr);
    assert!(!uninstall.status.success(), "{said}");
    assert!(said.contains(&in_use), "{said}");
    assert!(pins.join("maps/EVENTS").exists(), "uninstall removed pins");

    // Another state dir, the same pins: the second daemon would retire the first's programs.
    let (status, said) = run_refused(
        &[
            "--persist",
            s(&pins),
            "--state-dir",
            s(&root.join("state")),
            "--control-socket",
            s(&root.join("other.sock")),
            "--metrics-addr",
            "none",
        ],
        Duration::from_secs(30),
    );
    assert!(!status.success(), "{said}");
    assert!(said.contains(&in_use), "{said}");
    first.assert_serving("a second daemon was refused its pins");

    // The keeper the first daemon forked outlives it, holding every descriptor the daemon had:
    // the lock must not be one of them.
    let dir = first.crash();
    let mut next = Sensor::start_in(dir, &args);
    next.assert_serving("taking over from a killed daemon");
    next.stop_only();
}

#[test]
fn an_enforcement_list_naming_no_file_stops_the_start_naming_the_key() {
    if !can_run_kernel_tests("an_enforcement_list_naming_no_file_stops_the_start_naming_the_key") {
        return;
    }
    let (_dir, root) = scratch("nokey");
    let missing = root.join("no-such-key");
    let policy = root.join("policy.toml");
    std::fs::write(
        &policy,
        format!("[enforcement]\nkill_on_access = [\"{}\"]\n", s(&missing)),
    )
    .unwrap();
    let check = Command::new(sensor_binary())
        .args(["check-config", s(&policy)])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let (status, said) = run_refused(
        &[
            "--policy",
            s(&policy),
            "--mode",
            "enforce",
            "--state-dir",
            s(&root.join("state")),
            "--control-socket",
            s(&root.join("control.sock")),
            "--metrics-addr",
            "none",
        ],
        Duration::from_secs(60),
    );
    assert!(!status.success(), "{said}");
    let expected = format!(
        "cannot set up in-kernel enforcement: enforcement.kill_on_access: {}: No such file",
        s(&missing)
    );
    assert!(said.contains(&expected), "{said}");
}
