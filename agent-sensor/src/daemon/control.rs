//! Answers to control-socket requests. Runs on the run loop, which owns the registry and the
//! kernel maps, so no request races an event.

use std::path::PathBuf;

use super::startup::{cgroup_is_empty, Agents};
use crate::{
    agents::registry::{AgentState, Origin},
    control::{Reply, Request},
    loader::LoadedSensor,
    pipeline::Pipeline,
    respond::Containment,
};

/// Longest agent name accepted.
const MAX_NAME: usize = 64;

pub fn handle(
    sensor: &mut LoadedSensor,
    pipeline: &mut Pipeline,
    agents: &mut Agents,
    request: Request,
    peer_pid: u32,
) -> Reply {
    match request {
        Request::Register {
            agent,
            worktree,
            profile,
        } => match register(sensor, pipeline, agents, &agent, worktree, profile) {
            Ok((agent_id, cgroup)) => {
                log::info!("agent {agent} (id {agent_id}) registered by pid {peer_pid}");
                Reply::Registered { agent_id, cgroup }
            }
            Err(message) => Reply::Error { message },
        },
        Request::Confirm { agent_id, pid } => confirm(sensor, pipeline, agent_id, pid),
        Request::Abandon { agent_id } => abandon(sensor, pipeline, agents, agent_id),
        Request::Agents {} => Reply::Agents {
            agents: pipeline.registry.summaries(),
        },
        Request::Thaw { agent } => steer(pipeline, agents, &agent, Steer::Thaw),
        Request::Kill { agent } => steer(pipeline, agents, &agent, Steer::Kill),
    }
}

fn register(
    sensor: &mut LoadedSensor,
    pipeline: &mut Pipeline,
    agents: &mut Agents,
    name: &str,
    worktree: PathBuf,
    profile: Option<String>,
) -> Result<(u64, PathBuf), String> {
    // The name becomes part of a cgroup directory and file names: nothing that reads as a
    // path step ("." or "..", or a leading dot) gets through.
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        return Err(format!(
            "invalid agent name {name:?}: use 1–{MAX_NAME} letters, digits, '-', '_' or '.', \
             not starting with '.'"
        ));
    }
    if let Some(id) = pipeline.registry.find_by_name(name).first() {
        return Err(format!(
            "an agent named {name} is already running (id {id})"
        ));
    }
    if !worktree.is_absolute() || !worktree.is_dir() {
        return Err(format!(
            "worktree {} is not an existing absolute directory",
            worktree.display()
        ));
    }
    let profile = profile.unwrap_or_else(|| pipeline.policy.file.discovery.profile.clone());
    if !pipeline.policy.file.profiles.contains_key(&profile) {
        return Err(format!("no profile {profile:?} in the policy"));
    }
    agents.create(sensor, pipeline, name, worktree, profile, 0)
}

fn confirm(sensor: &mut LoadedSensor, pipeline: &mut Pipeline, agent_id: u64, pid: u32) -> Reply {
    let tracked = sensor
        .tracked_tasks()
        .ok()
        .and_then(|tasks| tasks.get(&pid, 0).ok())
        .map(|t| t.agent_id);
    match tracked {
        Some(id) if id == agent_id => {}
        // Tracking goes by ancestry first: a process of an agent stays that agent's.
        Some(other) => {
            return Reply::Error {
                message: format!(
                    "process {pid} belongs to agent {other}, not {agent_id}: an exec inside an \
                     agent stays that agent's"
                ),
            }
        }
        None => {
            return Reply::Error {
                message: format!("process {pid} is not tracked as agent {agent_id} (yet)"),
            }
        }
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    pipeline.registry.add_process(agent_id, pid, 0, exe);
    Reply::Tracked
}

/// An exec'd agent whose command never ran (an `exec` inside another agent stays that agent's
/// in the kernel, so it is never confirmed): it ends now, cgroup and allowlist with it, rather
/// than being listed as running until the daemon restarts. Only an agent that never had a
/// process: nothing that ran can be made to vanish this way.
fn abandon(
    sensor: &mut LoadedSensor,
    pipeline: &mut Pipeline,
    agents: &mut Agents,
    agent_id: u64,
) -> Reply {
    let Some(agent) = pipeline.registry.get_mut(agent_id) else {
        return Reply::Error {
            message: format!("no agent {agent_id}"),
        };
    };
    let never_ran = agent.origin == Origin::Exec
        && agent.state == AgentState::Running
        && agent.processes.is_empty()
        && agent.cgroup.as_deref().is_some_and(cgroup_is_empty);
    if !never_ran {
        return Reply::Error {
            message: format!(
                "agent {} (id {agent_id}) has run; its registration stays",
                agent.name
            ),
        };
    }
    agent.state = AgentState::Exited;
    let name = agent.name.clone();
    log::info!("agent {name} (id {agent_id}): registration abandoned, its command never ran");
    agents.retire(sensor, pipeline, agent_id);
    Reply::Done {
        message: format!("registration of agent {name} abandoned"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Steer {
    Thaw,
    Kill,
}

/// A human's decision on an agent: `agent-sensor thaw NAME` / `agent-sensor kill NAME`.
fn steer(pipeline: &mut Pipeline, agents: &mut Agents, name: &str, what: Steer) -> Reply {
    let ids = pipeline.registry.find_by_name(name);
    let [id] = ids[..] else {
        return Reply::Error {
            message: if ids.is_empty() {
                format!("no running agent named {name}")
            } else {
                format!("{} agents are named {name}", ids.len())
            },
        };
    };
    // A thaw is a human's answer to a freeze: of an agent that is not frozen it would only
    // say "thawed" about nothing.
    let state = pipeline.registry.get(id).map(|a| a.state);
    if matches!(what, Steer::Thaw) && state != Some(AgentState::Frozen) {
        return Reply::Error {
            message: format!(
                "agent {name} is not frozen ({})",
                state.map_or("unknown", |s| s.as_str())
            ),
        };
    }
    let containment = match what {
        Steer::Thaw => Containment::Thaw,
        Steer::Kill => Containment::Kill,
    };
    let result = agents.contain(pipeline, id, containment);
    let record = crate::agents::registry::ResponseRecord {
        ts: pipeline.clock.rfc3339(crate::events::Clock::now_ktime_ns()),
        by: "human".into(),
        action: match what {
            Steer::Thaw => "thaw",
            Steer::Kill => "kill",
        }
        .into(),
        outcome: match &result {
            Ok(done) => format!(
                "done in {} µs{}",
                done.took.as_micros(),
                done.outside_note(containment)
            ),
            Err(e) => format!("failed: {e}"),
        },
    };
    pipeline.registry.record_response(id, record);
    match result {
        Ok(done) => Reply::Done {
            message: format!(
                "agent {name} {}{}",
                match what {
                    Steer::Thaw => "thawed",
                    Steer::Kill => "killed",
                },
                done.outside_note(containment)
            ),
        },
        Err(e) => Reply::Error {
            message: e.to_string(),
        },
    }
}
