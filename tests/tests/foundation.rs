//! Foundation: the real object loads, attaches, reports a spawned child, stops cleanly, and
//! fails with one clear sentence where it cannot run.

use std::{process::Command, time::Duration};

use agent_sensor_tests::*;

#[test]
fn reports_exec_and_exit_of_a_child_in_a_tracked_cgroup() {
    if !can_run_kernel_tests("reports_exec_and_exit_of_a_child_in_a_tracked_cgroup") {
        return;
    }
    let cgroup = TestCgroup::new("exec");
    let mut sensor = Sensor::start(&["--track-cgroup", cgroup.path.to_str().unwrap()]);
    let child = cgroup
        .command("/bin/sh")
        .args(["-c", "exit 3"])
        .status()
        .expect("run child");
    assert_eq!(child.code(), Some(3));
    // The eBPF program's own log line (aya-log) reaches the daemon's log.
    sensor.wait_for_log("joined the cgroup of agent 1", Duration::from_secs(10));
    let events = sensor.stop();

    let exec = events
        .iter()
        .find(|e| e["kind"] == "process.exec" && e["filename"] == "/bin/sh")
        .unwrap_or_else(|| panic!("no exec of /bin/sh in {events:#?}"));
    assert_eq!(exec["argv"], serde_json::json!(["/bin/sh", "-c", "exit 3"]));
    assert_eq!(exec["agent_id"], 1);
    assert_eq!(exec["comm"], "sh");
    let pid = exec["tgid"].as_u64().unwrap();
    let exit = events
        .iter()
        .find(|e| e["kind"] == "process.exit" && e["tgid"] == pid)
        .expect("exit event");
    assert_eq!(exit["exit_code"], 3);
    assert!(exit["ktime_ns"].as_u64() >= exec["ktime_ns"].as_u64());
}

#[test]
fn an_untracked_process_produces_no_events() {
    if !can_run_kernel_tests("an_untracked_process_produces_no_events") {
        return;
    }
    let tracked = TestCgroup::new("quiet");
    let mut sensor = Sensor::start(&["--track-cgroup", tracked.path.to_str().unwrap()]);
    let pid = run_ok(Command::new("/bin/sh").args(["-c", "cat /etc/hostname; ls /tmp"]));
    // Control: the same work inside the tracked cgroup is reported.
    let tracked_pid = run_ok(
        tracked
            .command("/bin/sh")
            .args(["-c", "cat /etc/hostname; ls /tmp"]),
    );
    let events = sensor.stop();
    assert!(
        events.iter().all(|e| e["tgid"] != pid && e["ppid"] != pid),
        "untracked process {pid} was reported"
    );
    assert!(
        events
            .iter()
            .any(|e| e["ppid"] == tracked_pid && e["kind"] == "process.exec"),
        "the tracked control {tracked_pid} was not reported"
    );
}

#[test]
fn stop_detaches_and_unloads_everything() {
    if !can_run_kernel_tests("stop_detaches_and_unloads_everything") {
        return;
    }
    let mut sensor = Sensor::start(&[]);
    let (progs, maps, links) = bpf_ids_held_by(sensor.pid());
    assert!(
        progs.len() >= 6,
        "expected the sensor's programs, found {progs:?}"
    );
    assert!(
        links.len() >= 6,
        "expected one link per program, found {links:?}"
    );
    assert!(!maps.is_empty());
    for id in &progs {
        assert!(bpf_object_exists(BpfKind::Program, *id));
    }
    sensor.stop();
    // The kernel frees objects asynchronously after the last reference goes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = progs
            .iter()
            .filter(|id| bpf_object_exists(BpfKind::Program, **id))
            .map(|id| format!("prog {id}"))
            .chain(
                maps.iter()
                    .filter(|id| bpf_object_exists(BpfKind::Map, **id))
                    .map(|id| format!("map {id}")),
            )
            .chain(
                links
                    .iter()
                    .filter(|id| bpf_object_exists(BpfKind::Link, **id))
                    .map(|id| format!("link {id}")),
            )
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind after stop: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn probe_reports_the_capability_table() {
    if !can_run_kernel_tests("probe_reports_the_capability_table") {
        return;
    }
    // The probe mounts what is missing; the test unmounts what it did not find mounted.
    let targets = ["/sys/kernel/tracing", "/sys/fs/bpf", "/sys/kernel/security"];
    let _unmount = UnmountOnDrop(
        targets
            .iter()
            .filter(|t| !is_mount_point(t))
            .map(|t| t.to_string())
            .collect(),
    );
    let out = Command::new(sensor_binary())
        .args(["probe", "--json"])
        .output()
        .expect("probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let hook = |family: &str| {
        report["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["family"] == family)
            .unwrap_or_else(|| panic!("no {family} in {report:#}"))
            .clone()
    };
    // What every kernel the sensor supports must have, and what its capture relies on.
    for family in [
        "tracepoint",
        "raw_tracepoint",
        "tp_btf",
        "uprobe",
        "cgroup_sock_addr",
        "ring_buffer",
        "bpf_send_signal",
    ] {
        assert_eq!(
            hook(family)["works"],
            true,
            "{family}: {}",
            hook(family)["detail"]
        );
    }
    // Kernels without kprobes (like the CI machine) must say so, with the kernel's reason.
    let kprobe = hook("kprobe");
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        assert_eq!(kprobe["works"], false);
        assert!(
            kprobe["detail"].as_str().unwrap().contains("kprobe"),
            "{kprobe}"
        );
    }
    for family in ["fentry", "lsm"] {
        let h = hook(family);
        if h["works"] == false {
            assert!(
                h["detail"].as_str().unwrap().contains("os error"),
                "{family}: {h}"
            );
        }
    }
    // The pseudo-filesystems are mounted now.
    for target in targets {
        assert!(is_mount_point(target), "{target} not mounted after probe");
    }
    // The scratch cgroup of the sock_addr check is gone.
    let leftovers: Vec<_> = std::fs::read_dir(cgroup2_root())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("agent-sensor-probe-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn not_root_is_one_clear_sentence() {
    if !can_run_kernel_tests("not_root_is_one_clear_sentence") {
        return;
    }
    for args in [&["run"][..], &["probe"][..]] {
        let out = run_as(65534, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded as nobody");
        assert!(stderr.contains("must run as root"), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

#[test]
fn bad_arguments_are_one_clear_sentence() {
    if !can_run_kernel_tests("bad_arguments_are_one_clear_sentence") {
        return;
    }
    let out = Command::new(sensor_binary())
        .args(["run", "--ring-bytes", "1000"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("power of two"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let out = Command::new(sensor_binary())
        .args(["run", "--track-cgroup", "/nonexistent/cgroup"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/nonexistent/cgroup") && stderr.contains("cgroup"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_explains_every_command() {
    let out = Command::new(sensor_binary()).arg("--help").output();
    let Ok(out) = out else {
        eprintln!("SKIPPED help_explains_every_command: binary not built");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "probe", "root"] {
        assert!(text.contains(word), "{text}");
    }
}

fn is_mount_point(target: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target))
}

struct UnmountOnDrop(Vec<String>);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        for target in &self.0 {
            let c = std::ffi::CString::new(target.as_str()).unwrap();
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
