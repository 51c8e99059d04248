//! The sensor as a citizen of a Prometheus stack: a real Prometheus server scrapes the real
//! sensor, an agent misbehaves, and the alert counter moves in Prometheus' own query API.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agent_sensor_tests::*;

/// Installs Debian's `prometheus` (server and promtool) when missing. `None` with the reason
/// when that is impossible (no apt, no network to the package mirror).
fn ensure_prometheus() -> Result<(), String> {
    if Path::new("/usr/bin/prometheus").exists() && Path::new("/usr/bin/promtool").exists() {
        return Ok(());
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if install() {
        return Ok(());
    }
    let _ = Command::new("apt-get")
        .args(["update", "-q"])
        .stdout(Stdio::null())
        .status();
    if install() {
        Ok(())
    } else {
        Err("apt-get install prometheus failed".into())
    }
}

/// GET `path` on `addr` (loopback), the body; `None` while nothing listens there.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of an instant query, if it has exactly one series.
fn query(prom: &str, expr: &str) -> Option<f64> {
    let encoded: String = expr
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = http_get(prom, &format!("/api/v1/query?query={encoded}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    (result.len() == 1)
        .then(|| result[0]["value"][1].as_str()?.parse().ok())
        .flatten()
}

#[test]
fn a_real_prometheus_sees_the_alert_counter_move() {
    if !can_run_kernel_tests("a_real_prometheus_sees_the_alert_counter_move") {
        return;
    }
    if let Err(why) = ensure_prometheus() {
        panic!("Prometheus is needed for this test and could not be installed: {why}");
    }
    let dir = TempDir::outside_tmp("prom");
    let worktree = git_worktree(&dir.0, "work");
    let sensor = Sensor::start(&[]);
    let metrics = sensor
        .metrics_url()
        .expect("metrics address in the ready line");
    let target = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();

    // The exposition is valid by Prometheus' own linter.
    let exposition = http_get(&target, "/metrics").expect("the sensor serves /metrics");
    assert!(
        exposition.contains("agent_sensor_build_info"),
        "{exposition}"
    );
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
             scrape_configs: [{{job_name: agent-sensor, static_configs: [{{targets: ['{target}']}}]}}]\n"
        ),
    )
    .unwrap();
    let prom_addr = format!("127.0.0.1:{port}");
    let _prometheus = Prometheus(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let series = "agent_sensor_alerts_total{rule=\"credential.sensitive_read\",severity=\"high\"}";
    let wait_for = |expr: &str, pred: &dyn Fn(f64) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = query(&prom_addr, expr) {
                if pred(v) {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "Prometheus never saw {expr}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    wait_for("up{job=\"agent-sensor\"}", &|v| v == 1.0);
    // The series exists at 0 before any alert: increase() and alerting rules see the first one.
    wait_for(series, &|v| v == 0.0);

    assert!(sensor
        .exec_agent("rogue", &worktree, "cat /etc/shadow > /dev/null")
        .success());
    assert!(sensor
        .wait_for_alert("credential.sensitive_read", Duration::from_secs(10))
        .is_some());
    let seen = wait_for(series, &|v| v >= 1.0);
    assert_eq!(seen, 1.0);
    let events = wait_for("sum(agent_sensor_events_total)", &|v| v > 0.0);
    assert!(events > 0.0);
}
