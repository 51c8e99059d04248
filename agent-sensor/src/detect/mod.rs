//! Rules: from one agent's events to findings. Every finding carries one of the rule ids in
//! `policy::RuleId`; what is done about it (alert, freeze, kill, deny) is decided elsewhere
//! from the policy.
//!
//! Each rule lives in its own module and turns an event into [`candidate::Candidate`]s; this
//! module keeps per-agent state, drops rules the policy disables, deduplicates (see `dedup`)
//! and gives each finding the severity the policy configures for its rule (novelty: its
//! score).

mod access;
mod argv;
mod candidate;
mod credential;
mod dedup;
mod dns_tunnel;
mod exec;
mod exfil;
mod files;
mod isolation;
mod network;
mod novelty;
mod persistence;
mod privilege;
mod processes;
mod state;
mod tamper;

#[cfg(test)]
mod session_tests;
#[cfg(test)]
pub(crate) mod testkit;

use std::path::{Path, PathBuf};

use candidate::{text, Candidate};
use state::AgentState;

use crate::{
    events::{Body, Event},
    fasthash::{HashMap, HashSet},
    policy::{AgentScope, Policy, RuleId, Severity},
};

/// The agent an event belongs to.
#[derive(Debug, Clone, Copy)]
pub struct AgentView<'a> {
    pub id: u64,
    pub name: &'a str,
    pub profile: &'a str,
    pub scope: &'a AgentScope,
    /// The agent's own cgroup (v2), for an exec'd agent: what freeze and kill act on.
    pub cgroup: Option<&'a Path>,
}

/// Another agent on the host: its worktree and session state are off limits. Borrowed from
/// the registry: the list is made for every event, and copying names and paths made the cost
/// of an event grow with the number of agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherAgent<'a> {
    pub name: &'a str,
    pub worktree: &'a Path,
}

/// The sensor itself, which agents must not touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorSelf {
    pub pid: u32,
    /// Policy file, state dir, bpffs pins, control socket: absolute, as the kernel names the
    /// paths they are compared with.
    pub protected_paths: Vec<PathBuf>,
    /// Where cgroup v2 is mounted (empty when it is not): writing there outside the agent's
    /// own cgroup can take a process out of the agent's containment.
    pub cgroup_root: PathBuf,
    /// The host's DNS resolvers, as the loader gave them to the kernel
    /// (`LoadedSensor::resolvers`): port 53 to them is name resolution, judged by
    /// exfil.dns_tunnel; port 53 anywhere else is egress.
    pub resolvers: Vec<std::net::IpAddr>,
}

pub struct Context<'a> {
    pub agent: AgentView<'a>,
    pub others: &'a [OtherAgent<'a>],
    pub sensor: &'a SensorSelf,
    pub policy: &'a Policy,
}

impl Context<'_> {
    /// Whether the policy runs `rule` (rules it does not mention run).
    fn enabled(&self, rule: RuleId) -> bool {
        self.policy.rule(rule).enabled
    }
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

/// Agents whose state is kept at once; beyond this the least recently seen is dropped (the
/// daemon normally calls [`Detector::forget_agent`] long before).
const MAX_AGENTS: usize = 1024;

/// Runs every enabled rule over each event.
#[derive(Debug, Default)]
pub struct Detector {
    agents: HashMap<u64, AgentState>,
    dedup: dedup::Dedup,
    novelty: novelty::Novelty,
}

impl Detector {
    /// A detector whose novelty profiles live in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A detector that keeps novelty profiles in `<state_dir>/novelty/<profile>.json`: the
    /// ones there are loaded now, and [`Detector::save`] (also run from `observe` at most once
    /// a minute) writes them back.
    pub fn with_state_dir(state_dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            novelty: novelty::Novelty::persistent(&state_dir.join("novelty"))?,
            ..Self::default()
        })
    }

    /// Writes the novelty profiles that changed since the last save (atomically: temp file,
    /// then rename). Nothing to do for a detector made by [`Detector::new`].
    pub fn save(&mut self) -> std::io::Result<()> {
        self.novelty.save()
    }

    pub fn observe(&mut self, ctx: &Context, event: &Event) -> Vec<Finding> {
        let state = agent_state(
            &mut self.agents,
            &mut self.dedup,
            ctx.agent.id,
            event.ktime_ns,
        );
        let before = state.processes.enter(event);
        let mut candidates = Vec::new();
        match &event.body {
            Body::File(file) => files::check(ctx, event, file, state, &mut candidates),
            Body::Exec { .. } => exec::check(ctx, event, state, &mut candidates),
            Body::Syscall { .. } => {
                candidates.extend(privilege::setid(event, before, &state.processes));
                candidates.extend(tamper::syscall(ctx, event));
                if let Some(memory) = credential::process_memory(ctx, event, &state.processes) {
                    if memory.read {
                        state.sensitive_reads.push(event.clone());
                    }
                    if ctx.enabled(RuleId::SensitiveRead) {
                        candidates.push(memory.candidate);
                    }
                }
            }
            Body::Net(net) => network::check(ctx, event, net, state, &mut candidates),
            Body::Fork { .. } | Body::Exit { .. } | Body::SockClose(_) => {}
        }
        candidates.extend(privilege::turned_root(event, before));
        candidates.extend(self.novelty.observe(ctx, event, state));
        state.processes.leave(event);
        self.report(ctx, event, candidates)
    }

    /// What each rule's budget held back in the windows ended by `now_ns` (all of them with
    /// `u64::MAX`): one finding per agent and rule, naming the targets.
    pub fn held_back(&mut self, policy: &Policy, now_ns: u64) -> Vec<(u64, Finding)> {
        self.dedup
            .take_held_back(now_ns)
            .into_iter()
            .map(|held| (held.agent, held_back_finding(held, policy)))
            .collect()
    }

    /// Drops per-agent state when an agent goes away.
    pub fn forget_agent(&mut self, agent_id: u64) {
        self.agents.remove(&agent_id);
        self.dedup.forget_agent(agent_id);
    }

    /// Candidates → findings: disabled rules dropped, repeats held back, severity set.
    fn report(&mut self, ctx: &Context, event: &Event, candidates: Vec<Candidate>) -> Vec<Finding> {
        let mut seen = HashSet::default();
        let mut findings = Vec::new();
        for candidate in candidates {
            // One event can reach the same rule and target twice (a link whose both names lie
            // in another agent's worktree): that is one finding, not a finding and a repeat.
            if !seen.insert((candidate.rule, candidate.target.clone())) {
                continue;
            }
            let config = ctx.policy.rule(candidate.rule);
            if !config.enabled {
                continue;
            }
            let verdict = self.dedup.check(
                ctx.agent.id,
                candidate.rule,
                &candidate.target,
                event,
                event.ktime_ns,
            );
            let dedup::Verdict::Report { repeats } = verdict else {
                continue;
            };
            let severity = match candidate.score {
                Some(score) if candidate.rule == RuleId::NovelBehavior => novelty::severity(score),
                _ => config.severity,
            };
            findings.push(Finding {
                rule: candidate.rule,
                severity,
                summary: with_repeats(candidate.summary, repeats),
                evidence: candidate.evidence,
                score: candidate.score,
            });
        }
        findings
    }
}

/// The agent's state, made room for if needed.
fn agent_state<'d>(
    agents: &'d mut HashMap<u64, AgentState>,
    dedup: &mut dedup::Dedup,
    agent_id: u64,
    now_ns: u64,
) -> &'d mut AgentState {
    if !agents.contains_key(&agent_id) && agents.len() >= MAX_AGENTS {
        if let Some(stalest) = agents
            .iter()
            .min_by_key(|(_, s)| s.last_seen_ns)
            .map(|(id, _)| *id)
        {
            agents.remove(&stalest);
            dedup.forget_agent(stalest);
        }
    }
    let state = agents.entry(agent_id).or_default();
    state.last_seen_ns = now_ns;
    state
}

/// Tells in the summary how many repeats of the same target deduplication held back since the
/// previous report.
fn with_repeats(summary: String, repeats: u64) -> String {
    match repeats {
        0 => summary,
        1 => format!("{summary} (1 repeat since the last report)"),
        r => format!("{summary} ({r} repeats since the last report)"),
    }
}

/// One finding telling what a rule's budget held back for an agent in a window.
fn held_back_finding(held: dedup::HeldBack, policy: &Policy) -> Finding {
    let named = held.targets.len() as u64;
    let mut targets = held
        .targets
        .iter()
        .map(|t| text(t.as_bytes()))
        .collect::<Vec<_>>()
        .join(", ");
    if held.count > named {
        targets.push_str(&format!(" and {} more", held.count - named));
    }
    let findings = if held.count == 1 {
        "finding"
    } else {
        "findings"
    };
    Finding {
        rule: held.rule,
        severity: policy.rule(held.rule).severity,
        summary: format!(
            "{} more {findings} of this rule within a minute than the {} it reports one by one: \
             {targets}",
            held.count,
            dedup::RULE_BUDGET
        ),
        evidence: held.evidence,
        score: None,
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use crate::policy::{RuleId, Severity};

    #[test]
    fn severity_comes_from_the_rule_config_and_disabled_rules_are_silent() {
        let mut fx = Fixture::new();
        let finding = assert_fires(
            fx.feed(open(PID, "/proc/4321/environ", RDONLY)),
            RuleId::SensitiveRead,
            "environment",
        );
        assert_eq!(finding.severity, Severity::High);
        assert_eq!(finding.evidence.len(), 1);

        let policy = TEST_POLICY.replace(
            "[rules.\"exec.suspicious_tool\"]\nseverity = \"medium\"",
            "[rules.\"exec.suspicious_tool\"]\nseverity = \"medium\"\nenabled = false",
        );
        let mut fx = Fixture::with_policy(&policy);
        assert_silent(fx.feed(exec(PID, "/usr/bin/nmap", &["nmap", "10.0.0.0/24"])));
    }

    #[test]
    fn a_policy_that_changes_a_severity_changes_the_finding() {
        let policy = TEST_POLICY.replace(
            "[rules.\"exec.suspicious_tool\"]\nseverity = \"medium\"",
            "[rules.\"exec.suspicious_tool\"]\nseverity = \"critical\"",
        );
        let mut fx = Fixture::with_policy(&policy);
        let finding = assert_fires(
            fx.feed(exec(PID, "/usr/bin/nmap", &["nmap", "10.0.0.0/24"])),
            RuleId::SuspiciousTool,
            "nmap",
        );
        assert_eq!(finding.severity, Severity::Critical);
    }

    #[test]
    fn forgetting_an_agent_drops_its_state() {
        let mut fx = Fixture::new();
        fx.feed(fork(PID, PID + 1));
        assert_silent(fx.feed(open(PID, &format!("/proc/{}/environ", PID + 1), RDONLY)));
        fx.detector.forget_agent(1);
        assert!(fx.detector.agents.is_empty());
        // Its children are strangers to the next agent with the same id.
        assert_eq!(
            fx.feed(open(PID, &format!("/proc/{}/environ", PID + 1), RDONLY))
                .len(),
            1
        );
    }
}
