//! Incident bundles: for high and critical alerts, one JSON file in the state dir with what a
//! responder needs: the alert, the agent, its process tree, its recent events, the files it
//! touched and the connections it had open.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use super::alerts::Alert;
use crate::{
    agents::registry::Agent,
    events::{escape::escape, sockaddr::SockAddr, Body, Clock},
};

/// Writes the bundle atomically (temp file + rename) and returns its path.
pub fn write_bundle(
    dir: &Path,
    alert: &Alert,
    agent: &Agent,
    clock: &Clock,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stamp = clock.rfc3339(alert.ktime_ns()).replace(':', "");
    let name: String = agent
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!(
        "{stamp}-{name}-{}.json",
        alert.finding.rule.as_str()
    ));
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&bundle(alert, agent, clock))?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn bundle(alert: &Alert, agent: &Agent, clock: &Clock) -> Value {
    let mut files = BTreeSet::new();
    let mut open_connections = Vec::new();
    let mut closed_fds = BTreeSet::new();
    for event in agent.recent.iter().rev() {
        match &event.body {
            Body::File(f) => {
                if let Some(path) = &f.path {
                    files.insert(escape(path));
                }
            }
            Body::SockClose(c) => {
                closed_fds.insert((event.tgid, c.fd));
            }
            Body::Net(n) if event.kind == agent_sensor_common::EventKind::NetConnect => {
                if let Some(SockAddr::Inet { ip, port }) = &n.addr {
                    if !closed_fds.contains(&(event.tgid, n.fd)) {
                        open_connections.push(json!({
                            "pid": event.tgid,
                            "fd": n.fd,
                            "ip": ip.to_string(),
                            "port": port,
                            "dns_name": n.dns_name.as_deref().map(escape),
                        }));
                    }
                }
            }
            _ => {}
        }
    }
    json!({
        "alert": alert.to_json(clock),
        "agent": {
            "id": agent.id,
            "name": agent.name,
            "worktree": agent.worktree,
            "profile": agent.profile,
            "cgroup": agent.cgroup,
            "state": agent.state,
        },
        "process_tree": agent.processes,
        "files_touched": files,
        "open_connections": open_connections,
        "recent_events": agent.recent.iter().map(|e| e.to_json(clock)).collect::<Vec<_>>(),
    })
}
