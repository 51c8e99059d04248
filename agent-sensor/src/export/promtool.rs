//! Test support: the real `promtool` and `prometheus` binaries (Debian's `prometheus` package
//! ships both in /usr/bin). Installed with apt-get when missing (`apt-get update` and a retry
//! if the first install fails); when that is impossible the caller's test prints
//! `SKIPPED: <reason>` and returns.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
};

/// Where a binary is found, or why it is not.
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn apt_get(args: &[&str]) -> Result<(), String> {
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "apt-get {} failed ({}): {}",
            args.join(" "),
            out.status,
            stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        ))
    }
}

/// Installs Debian's `prometheus` package once per test process (tests run in parallel).
fn install_prometheus_package() -> Result<(), String> {
    static RESULT: OnceLock<Mutex<Option<Result<(), String>>>> = OnceLock::new();
    let lock = RESULT.get_or_init(|| Mutex::new(None));
    let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(result) = done.as_ref() {
        return result.clone();
    }
    let result = if find("apt-get").is_none() {
        Err("apt-get is not available on this system".to_string())
    } else if unsafe { libc::geteuid() } != 0 {
        Err("installing the prometheus package needs root (apt-get)".to_string())
    } else {
        eprintln!("installing Debian's prometheus package (promtool, prometheus) with apt-get…");
        // --no-install-recommends: the exporters it recommends are not needed here.
        let install = ["install", "-y", "--no-install-recommends", "prometheus"];
        apt_get(&install).or_else(|first| {
            eprintln!("{first}; running apt-get update and retrying");
            apt_get(&["update"]).and_then(|()| apt_get(&install))
        })
    };
    *done = Some(result.clone());
    result
}

/// The path of `name` (from the `prometheus` package), installing the package if needed;
/// `None` after printing `SKIPPED: <reason>` when it cannot be had.
pub fn tool(name: &str) -> Option<PathBuf> {
    if let Some(path) = find(name) {
        return Some(path);
    }
    match install_prometheus_package() {
        Ok(()) => match find(name) {
            Some(path) => Some(path),
            None => {
                eprintln!("SKIPPED: the prometheus package was installed but has no {name}");
                None
            }
        },
        Err(reason) => {
            eprintln!("SKIPPED: {name} is not installed and cannot be: {reason}");
            None
        }
    }
}

pub fn promtool() -> Option<PathBuf> {
    tool("promtool")
}

pub fn prometheus() -> Option<PathBuf> {
    tool("prometheus")
}

/// Runs `promtool check metrics` on an exposition: (passed, what it printed).
pub fn check_metrics(promtool: &Path, exposition: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition.as_bytes())
        .expect("promtool reads its input");
    let out = child.wait_with_output().expect("promtool finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "agent-sensor-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .join("deploy")
}

/// Every PromQL expression of the shipped Grafana dashboard (panels and annotations), with
/// Grafana's variables replaced by values Prometheus takes.
pub fn dashboard_exprs() -> Vec<String> {
    fn collect(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => collect(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let path = deploy_dir().join("grafana/agent-sensor.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard is shipped");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    collect(&json, &mut out);
    out.iter()
        .map(|e| {
            e.replace("$instance", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
        })
        .collect()
}

/// `agent_sensor_*` metric names a text mentions, without histogram sample suffixes.
pub fn metric_names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("agent_sensor_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| base.ends_with("_seconds"))
            .unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::metrics::{Metrics, MetricsConfig};

    /// Metric families the sensor exposes (every one of them, with a per-agent cap).
    fn exposed() -> std::collections::BTreeSet<String> {
        let m = Metrics::new(MetricsConfig { agent_label_cap: 1 });
        m.agent_alert("a", "exec.reverse_shell");
        m.containment_latency("kill", 0.1);
        m.alert("exec.reverse_shell", "high");
        m.programs_attached("tracepoint", 1);
        m.encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn promtool_test_rules_passes() {
        let Some(promtool) = promtool() else {
            return;
        };
        let dir = deploy_dir().join("prometheus");
        for args in [
            &["check", "rules", "agent-sensor-rules.yml"][..],
            &["test", "rules", "agent-sensor-rules.test.yml"][..],
        ] {
            let out = Command::new(&promtool)
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("promtool runs");
            assert!(
                out.status.success(),
                "promtool {} failed:\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn rules_and_dashboard_use_only_exposed_metrics() {
        let exposed = exposed();
        let rules = std::fs::read_to_string(deploy_dir().join("prometheus/agent-sensor-rules.yml"))
            .unwrap();
        let dashboard = dashboard_exprs().join("\n");
        for (what, text) in [("rules", rules.as_str()), ("dashboard", dashboard.as_str())] {
            let used = metric_names_in(text);
            assert!(!used.is_empty(), "{what} uses no metric");
            let unknown: Vec<_> = used.difference(&exposed).collect();
            assert!(
                unknown.is_empty(),
                "{what} uses metrics the sensor does not expose: {unknown:?}"
            );
        }
        // The dashboard shows every metric the sensor has.
        let shown = metric_names_in(&dashboard);
        let missing: Vec<_> = exposed.difference(&shown).collect();
        assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
    }

    #[test]
    fn dashboard_is_a_grafana_dashboard() {
        let text = std::fs::read_to_string(deploy_dir().join("grafana/agent-sensor.json")).unwrap();
        let d: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(d["uid"], "agent-sensor");
        assert!(d["schemaVersion"].as_u64().is_some());
        let panels = d["panels"].as_array().unwrap();
        let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "panel ids are unique");
        for p in panels.iter().filter(|p| p["type"] != "row") {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!p["targets"].as_array().unwrap().is_empty());
        }
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(vars, ["datasource", "instance"]);
    }

    #[test]
    fn yaml_files_are_well_formed() {
        let files = [
            "prometheus/agent-sensor-rules.yml",
            "prometheus/agent-sensor-rules.test.yml",
            "kubernetes/daemonset.yaml",
            "kubernetes/podmonitor.yaml",
        ];
        let script = "import sys, yaml\nfor f in sys.argv[1:]:\n    docs = [d for d in yaml.safe_load_all(open(f)) if d is not None]\n    assert docs, f + ' is empty'\n    print(f, len(docs))\n";
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(files.iter().map(|f| deploy_dir().join(f)))
            .output();
        match out {
            Err(e) => eprintln!("SKIPPED: no python3 to parse YAML ({e})"),
            Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named 'yaml'") => {
                eprintln!("SKIPPED: python3 has no PyYAML to parse YAML")
            }
            Ok(out) => assert!(
                out.status.success(),
                "YAML does not parse:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        // Without a parser, at least: no tabs, and the manifests say what they are.
        for f in files {
            let text = std::fs::read_to_string(deploy_dir().join(f)).unwrap();
            assert!(!text.contains('\t'), "{f} has a tab");
        }
        let ds = std::fs::read_to_string(deploy_dir().join("kubernetes/daemonset.yaml")).unwrap();
        for needle in [
            "kind: DaemonSet",
            "hostPID: true",
            "privileged: true",
            "path: /sys/fs/bpf",
            "path: /sys/kernel/tracing",
            "path: /sys/kernel/debug",
            "path: /sys/fs/cgroup",
            "containerPort: 9464",
            "tolerations:",
            "limits:",
        ] {
            assert!(ds.contains(needle), "daemonset.yaml lacks `{needle}`");
        }
    }

    #[test]
    fn systemd_unit_is_hardened_and_verifies() {
        let unit_path = deploy_dir().join("systemd/agent-sensor.service");
        let unit = std::fs::read_to_string(&unit_path).unwrap();
        let exec = "ExecStart=/usr/local/bin/agent-sensor run --persist --policy /etc/agent-sensor/policy.toml --alerts /var/log/agent-sensor/alerts.jsonl --metrics-addr 127.0.0.1:9464";
        assert!(unit.lines().any(|l| l == exec), "ExecStart");
        let setting = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key}="))
                .to_string()
        };
        let caps = setting("CapabilityBoundingSet");
        for cap in [
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_SYS_ADMIN",
            "CAP_SYS_RESOURCE",
            "CAP_KILL",
            "CAP_NET_ADMIN",
            "CAP_DAC_READ_SEARCH",
        ] {
            assert!(
                caps.split(' ').any(|c| c == cap),
                "{cap} not in the bounding set"
            );
        }
        let rw = setting("ReadWritePaths");
        for path in [
            "/var/lib/agent-sensor",
            "/run/agent-sensor",
            "/sys/fs/cgroup",
            "/sys/fs/bpf",
        ] {
            assert!(rw.split(' ').any(|p| p == path), "{path} not writable");
        }
        assert_eq!(setting("ProtectSystem"), "strict");
        assert_eq!(setting("NoNewPrivileges"), "yes");
        assert_eq!(setting("Restart"), "on-failure");

        let Some(analyze) = find("systemd-analyze") else {
            eprintln!("SKIPPED: systemd-analyze is not installed");
            return;
        };
        // verify insists the executable exists: check a copy that runs /bin/true instead.
        let dir = TempDir::new("systemd-unit");
        let copy = dir.path().join("agent-sensor.service");
        std::fs::write(
            &copy,
            unit.replace("/usr/local/bin/agent-sensor", "/bin/true"),
        )
        .unwrap();
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "systemd-analyze verify failed:\n{text}"
        );
        assert!(
            !text.contains("agent-sensor.service:"),
            "systemd-analyze verify has remarks:\n{text}"
        );
    }
}
