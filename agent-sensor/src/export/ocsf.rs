//! Alerts as OCSF 1.1.0 Detection Findings (class 2004), for SIEMs that ingest OCSF
//! (`--alerts-format ocsf`).
//!
//! One alert is one finding with activity `Create`. What the sensor did is carried by the
//! Security Control profile (`action_id`/`disposition_id`): a plain alert or a monitor-mode
//! "would …" is Allowed/Alert, a freeze is Denied/Isolated, a kill or deny is Denied/Blocked, a
//! failed response is Unknown/Error. The agent is the affected resource; each evidence event
//! becomes one `evidences` entry (process, file, destination, DNS query as they apply, and
//! the sensor's own JSON form of the event under `data`). The native alert's fields that
//! have no OCSF home (mode, free-text outcome, score) are kept under `unmapped`.

use std::{path::Path, str::FromStr};

use serde_json::{json, Map, Value};

use super::alerts::Alert;
use crate::{
    events::{escape::escape, sockaddr::SockAddr, Body, Clock, Event},
    policy::{Mode, Response, RuleId, Severity},
};

/// OCSF schema version the findings follow.
pub const OCSF_VERSION: &str = "1.1.0";
pub const CLASS_UID: u32 = 2004;
pub const CATEGORY_UID: u32 = 2;
pub const ACTIVITY_CREATE: u32 = 1;
pub const PRODUCT_NAME: &str = "agent-sensor";
pub const VENDOR_NAME: &str = "agent-sensor";

/// How alerts are written (`--alerts-format`): the sensor's own JSON lines or OCSF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlertFormat {
    #[default]
    Json,
    Ocsf,
}

impl FromStr for AlertFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(AlertFormat::Json),
            "ocsf" => Ok(AlertFormat::Ocsf),
            other => Err(format!(
                "unknown alert format `{other}`: use `json` (the sensor's own) or `ocsf` (OCSF {OCSF_VERSION} Detection Finding)"
            )),
        }
    }
}

impl std::fmt::Display for AlertFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AlertFormat::Json => "json",
            AlertFormat::Ocsf => "ocsf",
        })
    }
}

impl AlertFormat {
    /// The alert as a JSON value in this format.
    pub fn render(self, alert: &Alert, clock: &Clock) -> Value {
        match self {
            AlertFormat::Json => alert.to_json(clock),
            AlertFormat::Ocsf => to_ocsf(alert, clock),
        }
    }

    /// The alert as one line (JSON, then `\n`), as written to a file or a webhook spool.
    pub fn line(self, alert: &Alert, clock: &Clock) -> Vec<u8> {
        let mut line = serde_json::to_vec(&self.render(alert, clock))
            .expect("a serde_json::Value always serializes");
        line.push(b'\n');
        line
    }
}

/// OCSF `severity_id` and its caption.
pub fn severity_id(severity: Severity) -> (u8, &'static str) {
    match severity {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// A short human title for a rule (the rule id stays in `finding_info.types`).
pub fn rule_title(rule: RuleId) -> &'static str {
    match rule {
        RuleId::WriteOutsideWorktree => "Agent wrote outside its worktree",
        RuleId::ForeignWorktree => "Agent touched another agent's worktree",
        RuleId::SensitiveRead => "Agent read a credential or secret",
        RuleId::SensitiveThenEgress => "Agent sent data out after reading a secret",
        RuleId::UnallowedEgress => "Agent connected to a destination outside its allowlist",
        RuleId::DnsTunnel => "Agent DNS traffic looks like tunnelling",
        RuleId::ReverseShell => "Agent started a reverse shell",
        RuleId::SuspiciousTool => "Agent ran a suspicious tool",
        RuleId::StartupWrite => "Agent wrote a startup or persistence file",
        RuleId::PrivilegeEscalation => "Agent attempted privilege escalation",
        RuleId::TamperSensor => "Agent tampered with the sensor",
        RuleId::NovelBehavior => "Agent behaved unlike its profile",
    }
}

/// Security Control profile: (action_id, action, disposition_id, disposition).
fn control(alert: &Alert) -> (u8, &'static str, u8, &'static str) {
    const ALLOWED: (u8, &str) = (1, "Allowed");
    const DENIED: (u8, &str) = (2, "Denied");
    const UNKNOWN: (u8, &str) = (0, "Unknown");
    let a = &alert.action;
    let outcome = a.outcome.trim();
    let ((action_id, action), (disposition_id, disposition)) = match (a.response, a.mode) {
        (Response::Alert, _) | (_, Mode::Monitor) => (ALLOWED, (19, "Alert")),
        _ if outcome.starts_with("failed") => (UNKNOWN, (27, "Error")),
        (Response::Freeze, Mode::Enforce) => {
            if outcome.contains("killed") {
                (DENIED, (2, "Blocked"))
            } else {
                (DENIED, (4, "Isolated"))
            }
        }
        (Response::Kill, Mode::Enforce) | (Response::Deny, Mode::Enforce) => {
            (DENIED, (2, "Blocked"))
        }
    };
    (action_id, action, disposition_id, disposition)
}

fn ms(clock: &Clock, ktime_ns: u64) -> u64 {
    clock
        .wall(ktime_ns)
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates (the last byte is kept 0 below either way).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(0);
    (len > 0).then(|| escape(&buf[..len]))
}

fn base_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

fn file_object(path: &str) -> Value {
    // type_id 0: the sensor does not know the file type here.
    json!({ "path": path, "name": base_name(path), "type_id": 0, "type": "Unknown" })
}

/// The process of an event (and, for exec, what it ran).
fn process_of(event: &Event, clock: &Clock) -> Value {
    let mut process = Map::new();
    process.insert("pid".into(), event.tgid.into());
    process.insert("tid".into(), event.pid.into());
    process.insert("name".into(), escape(&event.comm).into());
    process.insert("user".into(), json!({ "uid": event.uid.to_string() }));
    process.insert("group".into(), json!({ "uid": event.gid.to_string() }));
    if event.ppid != 0 {
        process.insert("parent_process".into(), json!({ "pid": event.ppid }));
    }
    if let Body::Exec {
        filename,
        exe,
        argv,
        ..
    } = &event.body
    {
        let path = escape(exe.as_deref().unwrap_or(filename));
        process.insert("file".into(), file_object(&path));
        process.insert(
            "cmd_line".into(),
            argv.iter()
                .map(|a| escape(a))
                .collect::<Vec<_>>()
                .join(" ")
                .into(),
        );
        process.insert("created_time".into(), ms(clock, event.ktime_ns).into());
    }
    Value::Object(process)
}

fn endpoint(ip: &std::net::IpAddr, port: u16, name: &Option<Vec<u8>>) -> Value {
    let mut e = Map::new();
    e.insert("ip".into(), ip.to_string().into());
    e.insert("port".into(), port.into());
    if let Some(name) = name {
        e.insert("hostname".into(), escape(name).into());
    }
    Value::Object(e)
}

/// One `evidences` entry for an evidence event.
fn evidence(event: &Event, clock: &Clock) -> Value {
    let mut e = Map::new();
    e.insert("process".into(), process_of(event, clock));
    match &event.body {
        Body::File(f) => {
            let path = f
                .path
                .as_deref()
                .map(escape)
                .unwrap_or_else(|| escape(&f.path_arg));
            e.insert("file".into(), file_object(&path));
        }
        Body::Net(n) => {
            if let Some(SockAddr::Inet { ip, port }) = &n.addr {
                e.insert("dst_endpoint".into(), endpoint(ip, *port, &n.dns_name));
            }
            if let Some(q) = &n.dns {
                e.insert(
                    "query".into(),
                    json!({
                        "hostname": escape(&q.name),
                        "type": crate::events::dns::qtype_name(q.qtype),
                    }),
                );
            }
        }
        Body::SockClose(c) => {
            if let Some(peer) = c.peer {
                e.insert(
                    "dst_endpoint".into(),
                    endpoint(&peer.ip(), peer.port(), &c.dns_name),
                );
            }
        }
        _ => {}
    }
    e.insert("data".into(), event.to_json(clock));
    Value::Object(e)
}

/// The alert as an OCSF 1.1.0 Detection Finding.
pub fn to_ocsf(alert: &Alert, clock: &Clock) -> Value {
    let f = &alert.finding;
    let rule = f.rule.as_str();
    let time = ms(clock, alert.ktime_ns());
    let first_seen = f
        .evidence
        .first()
        .map(|e| ms(clock, e.ktime_ns))
        .unwrap_or(time);
    let (severity_id, severity) = severity_id(f.severity);
    let (action_id, action, disposition_id, disposition) = control(alert);
    let host = hostname();
    let wall_ns = clock
        .wall(alert.ktime_ns())
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Unique per host: one finding per (time, agent, process, rule).
    let uid = format!(
        "{}:{wall_ns}:{}:{}:{rule}",
        host.as_deref().unwrap_or("localhost"),
        alert.agent_id,
        alert.pid
    );
    let (analytic_type_id, analytic_type) = match f.rule {
        RuleId::NovelBehavior => (2, "Behavioral"),
        _ => (1, "Rule"),
    };

    // The process the alert is about: the last evidence event of that process if there is
    // one, else what the alert itself says.
    let mut process = f
        .evidence
        .iter()
        .rev()
        .find(|e| e.tgid == alert.pid)
        .map(|e| process_of(e, clock))
        .unwrap_or_else(|| json!({ "pid": alert.pid }));
    if let (Some(exe), Value::Object(p)) = (&alert.exe, &mut process) {
        p.insert("file".into(), file_object(exe));
        p.entry("name").or_insert_with(|| base_name(exe).into());
    }

    let mut evidences: Vec<Value> = f.evidence.iter().map(|e| evidence(e, clock)).collect();
    if evidences.is_empty() {
        evidences.push(json!({ "process": process.clone() }));
    }

    let mut finding = json!({
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "time": time,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "message": f.summary,
        "action_id": action_id,
        "action": action,
        "disposition_id": disposition_id,
        "disposition": disposition,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": uid,
            "profiles": ["security_control", "host"],
            "product": {
                "name": PRODUCT_NAME,
                "vendor_name": VENDOR_NAME,
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "finding_info": {
            "uid": uid,
            "title": rule_title(f.rule),
            "desc": f.summary,
            "types": [rule],
            "created_time": time,
            "first_seen_time": first_seen,
            "last_seen_time": time,
            "analytic": {
                "uid": rule,
                "name": rule,
                "type_id": analytic_type_id,
                "type": analytic_type,
            },
        },
        "resources": [{
            "type": "AI Agent",
            "uid": alert.agent_id.to_string(),
            "name": alert.agent,
        }],
        "actor": { "process": process },
        "evidences": evidences,
        "unmapped": {
            "rule": rule,
            "response": alert.action.response.as_str(),
            "mode": alert.action.mode.name(),
            "outcome": alert.action.outcome,
            "score": f.score,
            "agent_id": alert.agent_id,
        },
    });
    if let Some(score) = f.score {
        finding["risk_score"] = score.into();
    }
    if let Some(host) = host {
        // Host profile: the machine the sensor runs on (type unknown to the sensor).
        finding["device"] = json!({ "hostname": host, "type_id": 0, "type": "Unknown" });
    }
    finding
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use agent_sensor_common::EventKind;

    use super::*;
    use crate::{
        detect::Finding,
        events::{FileBody, NetBody, PathSource, Stdio},
        export::alerts::Action,
    };

    fn event(kind: EventKind, ktime_ns: u64, body: Body) -> Event {
        Event {
            kind,
            flags: 0,
            ktime_ns,
            pid: 4243,
            tgid: 4242,
            ppid: 4000,
            uid: 1000,
            gid: 1000,
            cgroup_id: 77,
            agent_id: 3,
            comm: crate::events::Comm::new(b"bash"),
            body,
        }
    }

    fn exec() -> Event {
        event(
            EventKind::ProcessExec,
            1_000_000_000,
            Body::Exec {
                filename: b"/usr/bin/bash".to_vec(),
                exe: None,
                argv: vec![b"bash".to_vec(), b"-i".to_vec()],
                old_pid: 4242,
                dev: 1,
                ino: 2,
                mode: 0o100755,
                stdio: [Stdio::Socket, Stdio::Socket, Stdio::Socket],
            },
        )
    }

    fn open() -> Event {
        event(
            EventKind::FileOpen,
            1_500_000_000,
            Body::File(FileBody {
                nr: 257,
                dirfd: -100,
                flags: 0,
                mode: 0,
                ret: 3,
                dev: 1,
                ino: 9,
                arg: 0,
                arg2: 0,
                repeats: 0,
                path_arg: b"../.ssh/id_ed25519".to_vec(),
                path2_arg: None,
                path: Some(b"/home/dev/.ssh/id_ed25519".to_vec()),
                path_source: PathSource::Kernel,
                path2: None,
                base: None,
                base2: None,
            }),
        )
    }

    fn connect() -> Event {
        event(
            EventKind::NetConnect,
            2_000_000_000,
            Body::Net(NetBody {
                nr: 42,
                fd: 5,
                ret: 0,
                bytes: 0,
                addr: Some(SockAddr::Inet {
                    ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
                    port: 4444,
                }),
                dns: None,
                dns_answers: Vec::new(),
                data_len: 0,
                dns_name: Some(b"evil.example".to_vec()),
                addr_from_connect: false,
                socket: None,
            }),
        )
    }

    fn alert(severity: Severity, response: Response, mode: Mode, outcome: &str) -> Alert {
        Alert {
            agent: "claude".into(),
            agent_id: 3,
            pid: 4242,
            exe: Some("/usr/bin/bash".into()),
            finding: Finding {
                rule: RuleId::ReverseShell,
                severity,
                summary: "bash -i with its stdio on a socket to 203.0.113.9:4444".into(),
                evidence: vec![exec(), open(), connect()],
                score: None,
            },
            action: Action {
                response,
                mode,
                outcome: outcome.into(),
            },
        }
    }

    #[test]
    fn required_ocsf_fields() {
        let clock = Clock::new();
        let a = alert(
            Severity::Critical,
            Response::Kill,
            Mode::Enforce,
            "killed in 40 µs",
        );
        let v = to_ocsf(&a, &clock);
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["category_uid"], 2);
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 5);
        assert_eq!(v["severity"], "Critical");
        assert_eq!(v["status_id"], 1);
        assert_eq!(v["metadata"]["version"], "1.1.0");
        assert_eq!(v["metadata"]["product"]["name"], "agent-sensor");
        assert_eq!(v["metadata"]["product"]["vendor_name"], "agent-sensor");
        assert_eq!(
            v["metadata"]["product"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        let fi = &v["finding_info"];
        assert!(fi["uid"]
            .as_str()
            .is_some_and(|u| u.ends_with(":exec.reverse_shell")));
        assert_eq!(fi["uid"], v["metadata"]["uid"]);
        assert_eq!(fi["title"], "Agent started a reverse shell");
        assert_eq!(fi["desc"], a.finding.summary);
        assert_eq!(fi["types"], json!(["exec.reverse_shell"]));
        assert_eq!(fi["analytic"]["type_id"], 1);

        // Time in milliseconds since the epoch: the last evidence event's.
        let expected = clock
            .wall(2_000_000_000)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert_eq!(v["time"], expected);
        assert_eq!(fi["created_time"], expected);
        assert_eq!(fi["last_seen_time"], expected);
        assert_eq!(fi["first_seen_time"], expected - 1000);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // Sanity: milliseconds, not seconds or nanoseconds.
        assert!(
            expected > 1_500_000_000_000 && expected < now_ms * 2,
            "{expected}"
        );

        // The agent and the process.
        assert_eq!(v["resources"][0]["name"], "claude");
        assert_eq!(v["resources"][0]["uid"], "3");
        assert_eq!(v["actor"]["process"]["pid"], 4242);
        assert_eq!(v["actor"]["process"]["file"]["path"], "/usr/bin/bash");
        assert_eq!(v["actor"]["process"]["user"]["uid"], "1000");

        // One evidence entry per event, each with the process and what it touched.
        let ev = v["evidences"].as_array().unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0]["process"]["cmd_line"], "bash -i");
        assert_eq!(ev[0]["process"]["file"]["path"], "/usr/bin/bash");
        assert_eq!(ev[1]["file"]["path"], "/home/dev/.ssh/id_ed25519");
        assert_eq!(ev[1]["file"]["name"], "id_ed25519");
        assert_eq!(ev[2]["dst_endpoint"]["ip"], "203.0.113.9");
        assert_eq!(ev[2]["dst_endpoint"]["port"], 4444);
        assert_eq!(ev[2]["dst_endpoint"]["hostname"], "evil.example");
        assert_eq!(ev[2]["data"]["kind"], "net.connect");

        // What was done.
        assert_eq!(v["action_id"], 2);
        assert_eq!(v["action"], "Denied");
        assert_eq!(v["disposition_id"], 2);
        assert_eq!(v["disposition"], "Blocked");
        assert_eq!(v["unmapped"]["outcome"], "killed in 40 µs");
        assert_eq!(v["unmapped"]["mode"], "enforce");
    }

    #[test]
    fn severities_map_one_to_five() {
        let clock = Clock::new();
        for (severity, id) in [
            (Severity::Info, 1),
            (Severity::Low, 2),
            (Severity::Medium, 3),
            (Severity::High, 4),
            (Severity::Critical, 5),
        ] {
            let v = to_ocsf(
                &alert(severity, Response::Alert, Mode::Enforce, "reported"),
                &clock,
            );
            assert_eq!(v["severity_id"], id, "{severity:?}");
        }
    }

    #[test]
    fn responses_map_to_action_and_disposition() {
        let clock = Clock::new();
        for (response, mode, outcome, action_id, disposition_id) in [
            (Response::Alert, Mode::Enforce, "reported", 1, 19),
            (Response::Freeze, Mode::Monitor, "would freeze", 1, 19),
            (Response::Freeze, Mode::Enforce, "frozen in 300 µs", 2, 4),
            (Response::Freeze, Mode::Enforce, "already frozen", 2, 4),
            (Response::Freeze, Mode::Enforce, "already killed", 2, 2),
            (Response::Kill, Mode::Enforce, "killed in 3 µs", 2, 2),
            (Response::Deny, Mode::Enforce, "denied in the kernel", 2, 2),
            (Response::Kill, Mode::Enforce, "failed: EPERM", 0, 27),
        ] {
            let v = to_ocsf(&alert(Severity::High, response, mode, outcome), &clock);
            assert_eq!(v["action_id"], action_id, "{outcome}");
            assert_eq!(v["disposition_id"], disposition_id, "{outcome}");
        }
    }

    #[test]
    fn alert_without_evidence_still_names_the_process() {
        let clock = Clock::new();
        let mut a = alert(Severity::Low, Response::Alert, Mode::Monitor, "reported");
        a.finding.evidence.clear();
        a.finding.rule = RuleId::NovelBehavior;
        a.finding.score = Some(73);
        let v = to_ocsf(&a, &clock);
        assert_eq!(v["evidences"][0]["process"]["pid"], 4242);
        assert_eq!(v["actor"]["process"]["name"], "bash");
        assert_eq!(v["risk_score"], 73);
        assert_eq!(v["finding_info"]["analytic"]["type"], "Behavioral");
        assert!(v["time"].as_u64().is_some());
    }

    #[test]
    fn formats_parse_and_render_lines() {
        assert_eq!("json".parse::<AlertFormat>(), Ok(AlertFormat::Json));
        assert_eq!("ocsf".parse::<AlertFormat>(), Ok(AlertFormat::Ocsf));
        assert!("cef".parse::<AlertFormat>().unwrap_err().contains("ocsf"));
        assert_eq!(AlertFormat::default(), AlertFormat::Json);
        let clock = Clock::new();
        let a = alert(Severity::High, Response::Alert, Mode::Monitor, "reported");
        for format in [AlertFormat::Json, AlertFormat::Ocsf] {
            let line = format.line(&a, &clock);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let v: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v, format.render(&a, &clock));
        }
        assert_eq!(
            AlertFormat::Json.render(&a, &clock)["rule"],
            "exec.reverse_shell"
        );
    }

    #[test]
    fn hostile_names_stay_inside_their_strings() {
        let clock = Clock::new();
        let mut a = alert(Severity::High, Response::Alert, Mode::Monitor, "reported");
        a.finding.evidence[0].comm = crate::events::Comm::new(b"x\"\n}{");
        let line = AlertFormat::Ocsf.line(&a, &clock);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["evidences"][0]["process"]["name"], "x\"\\x0a}{");
    }
}
