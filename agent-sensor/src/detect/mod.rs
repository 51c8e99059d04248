//! Rules: from one agent's events to findings. Every finding carries one of the rule ids in
//! `policy::RuleId`; what is done about it (alert, freeze, kill, deny) is decided elsewhere
//! from the policy.

use std::path::PathBuf;

use crate::{
    events::Event,
    policy::{AgentScope, Policy, RuleId, Severity},
};

/// The agent an event belongs to.
#[derive(Debug, Clone, Copy)]
pub struct AgentView<'a> {
    pub id: u64,
    pub name: &'a str,
    pub profile: &'a str,
    pub scope: &'a AgentScope,
}

/// Another agent on the host: its worktree and session state are off limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherAgent {
    pub name: String,
    pub worktree: PathBuf,
}

/// The sensor itself, which agents must not touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorSelf {
    pub pid: u32,
    /// Policy file, state dir, bpffs pins, control socket.
    pub protected_paths: Vec<PathBuf>,
}

pub struct Context<'a> {
    pub agent: AgentView<'a>,
    pub others: &'a [OtherAgent],
    pub sensor: &'a SensorSelf,
    pub policy: &'a Policy,
}

/// One rule firing.
#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: RuleId,
    pub severity: Severity,
    pub summary: String,
    /// The events that make the case, oldest first (the triggering one last).
    pub evidence: Vec<Event>,
    /// anomaly.novel_behavior: 0–100.
    pub score: Option<u32>,
}

/// Runs every enabled rule over each event.
#[derive(Debug, Default)]
pub struct Detector {}

impl Detector {
    pub fn new() -> Self {
        Self {}
    }

    pub fn observe(&mut self, _ctx: &Context, _event: &Event) -> Vec<Finding> {
        Vec::new()
    }

    /// Drops per-agent state when an agent goes away.
    pub fn forget_agent(&mut self, _agent_id: u64) {}
}
