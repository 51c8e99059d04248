//! Incident bundles: for high and critical alerts, one JSON file in the state dir with what a
//! responder needs: the alert, the agent, its process tree, its recent events, the files it
//! touched and the connections it had open.
//!
//! A bundle of a few hundred events takes milliseconds to encode and write, so a thread of its
//! own writes it: the run loop only takes a snapshot of the agent (reference counts, not
//! copies of the events) and goes on deciding about the next events.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        mpsc::{self, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
};

use serde_json::{json, Value};

use super::alerts::Alert;
use crate::{
    agents::registry::{Agent, AgentState, ProcessInfo},
    events::{escape::escape, sockaddr::SockAddr, Body, Clock, Event},
};

/// Bundles waiting for the writer; beyond this an alert storm loses bundles (logged), never
/// alerts or the run loop's time.
const QUEUED_BUNDLES: usize = 64;

/// What a bundle shows of an agent, as it was when the alert was raised.
pub struct AgentSnapshot {
    pub id: u64,
    pub name: String,
    pub worktree: PathBuf,
    pub profile: String,
    pub cgroup: Option<PathBuf>,
    pub state: AgentState,
    pub processes: BTreeMap<u32, ProcessInfo>,
    pub recent: Vec<Arc<Event>>,
}

impl AgentSnapshot {
    pub fn of(agent: &Agent) -> Self {
        Self {
            id: agent.id,
            name: agent.name.clone(),
            worktree: agent.worktree.clone(),
            profile: agent.profile.clone(),
            cgroup: agent.cgroup.clone(),
            state: agent.state,
            processes: agent.processes.clone(),
            recent: agent.recent.iter().cloned().collect(),
        }
    }
}

struct Job {
    dir: PathBuf,
    alert: Alert,
    agent: AgentSnapshot,
    clock: Clock,
}

/// The thread that writes bundles. Dropping it writes what is queued, then ends the thread.
pub struct IncidentWriter {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl IncidentWriter {
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUED_BUNDLES);
        let thread = std::thread::Builder::new()
            .name("incidents".into())
            .spawn(move || {
                for job in queue {
                    match write_bundle(&job.dir, &job.alert, &job.agent, &job.clock) {
                        Ok(path) => log::info!("incident bundle written: {}", path.display()),
                        // A full disk must not stop alerting: the alert is already out.
                        Err(e) => log::error!(
                            "cannot write incident bundle in {}: {e}",
                            job.dir.display()
                        ),
                    }
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues a bundle for `alert`; never blocks.
    pub fn submit(&self, dir: &Path, alert: &Alert, agent: &Agent, clock: &Clock) {
        let Some(jobs) = &self.jobs else { return };
        let job = Job {
            dir: dir.to_path_buf(),
            alert: alert.clone(),
            agent: AgentSnapshot::of(agent),
            clock: *clock,
        };
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => log::error!(
                "incident bundle for {} of agent {} dropped: {QUEUED_BUNDLES} bundles are \
                 still being written",
                job.alert.finding.rule.as_str(),
                job.alert.agent
            ),
            Err(TrySendError::Disconnected(_)) => {
                log::error!("incident bundle dropped: the writer thread is gone")
            }
        }
    }
}

impl Drop for IncidentWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes the bundle atomically (temp file + rename) and returns its path.
pub fn write_bundle(
    dir: &Path,
    alert: &Alert,
    agent: &AgentSnapshot,
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

fn bundle(alert: &Alert, agent: &AgentSnapshot, clock: &Clock) -> Value {
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
