//! The agents the daemon knows: identity (name, worktree, profile, cgroup), process tree,
//! response state, alert counts and a bounded ring of recent events for incident bundles.

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::worktree_index::WorktreeIndex;
use crate::{
    events::{Body, Event},
    policy::{AgentIdentity, AgentScope, Policy, RuleId},
};

/// How an agent came to be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Started through `agent-sensor exec`.
    Exec,
    /// Made an agent by a discovery rule (known executable or environment marker).
    Discovered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Running,
    Frozen,
    Killed,
    /// Every process of the agent has exited.
    Exited,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Running => "running",
            AgentState::Frozen => "frozen",
            AgentState::Killed => "killed",
            AgentState::Exited => "exited",
        }
    }
}

/// One process of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub ppid: u32,
    /// The last executable it ran (lossless text, see `events::escape`).
    pub exe: String,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: u64,
    pub name: String,
    pub worktree: PathBuf,
    pub profile: String,
    pub origin: Origin,
    pub cgroup: Option<PathBuf>,
    pub uid: u32,
    pub state: AgentState,
    pub processes: BTreeMap<u32, ProcessInfo>,
    pub alerts: BTreeMap<RuleId, u64>,
    /// What was done about it, newest last (bounded).
    pub responses: VecDeque<ResponseRecord>,
    /// Shared with the pipeline: keeping an event here costs a reference count, not a copy.
    pub recent: VecDeque<Arc<Event>>,
    pub scope: AgentScope,
}

/// Whether `worktree` is one of an agent's own. Agents tracked for capture only
/// (`--track-pid`, `--track-cgroup`, or discovered with `/` as their cwd) are given `/`: a
/// boundary around everything bounds nothing, and no other agent's file is "in" it.
pub fn is_own_worktree(worktree: &Path) -> bool {
    worktree != Path::new("/")
}

impl Agent {
    /// Whether other agents' files can be in this agent's worktree (see `is_own_worktree`).
    pub fn has_own_worktree(&self) -> bool {
        is_own_worktree(&self.worktree)
    }

    /// Not ended: running or frozen (a killed agent is live until its processes are gone).
    pub fn is_live(&self) -> bool {
        match self.state {
            AgentState::Exited => false,
            AgentState::Killed => !self.processes.is_empty(),
            AgentState::Running | AgentState::Frozen => true,
        }
    }
}

/// One response to an agent: a rule's (freeze, kill, deny…) or a human's (thaw, kill).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResponseRecord {
    pub ts: String,
    /// The rule id, or `human` for `agent-sensor thaw|kill`.
    pub by: String,
    pub action: String,
    pub outcome: String,
}

/// Responses kept per agent.
const RESPONSES_KEPT: usize = 16;

/// What `agent-sensor agents` shows of one agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentSummary {
    pub id: u64,
    pub name: String,
    pub worktree: PathBuf,
    pub profile: String,
    pub origin: Origin,
    pub state: AgentState,
    pub processes: Vec<u32>,
    pub alerts: BTreeMap<String, u64>,
    pub cgroup: Option<PathBuf>,
    /// Response history, newest last.
    pub responses: Vec<ResponseRecord>,
}

/// What survives a daemon restart of an exec'd agent (its cgroup keeps the processes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PersistedAgent {
    pub id: u64,
    pub name: String,
    pub worktree: PathBuf,
    pub profile: String,
    pub cgroup: PathBuf,
    pub uid: u32,
}

/// Agents that exited are kept this long (in number) for `agents` and incident context.
const EXITED_KEPT: usize = 64;

#[derive(Debug)]
pub struct Registry {
    agents: BTreeMap<u64, Agent>,
    next_exec_id: u64,
    recent_capacity: usize,
    /// Of every agent held, live or not (see `others_holding`).
    worktrees: WorktreeIndex,
}

/// Home directory of `uid` from /etc/passwd (`/root` for root when absent).
pub fn home_of(uid: u32) -> PathBuf {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2].parse() == Ok(uid))
        .map(|f| PathBuf::from(f[5]))
        .unwrap_or_else(|| PathBuf::from(if uid == 0 { "/root" } else { "/" }))
}

/// The git worktree containing `dir`: the nearest ancestor with a `.git` entry (a directory
/// for a main worktree, a file for a linked one). `None` outside any.
pub fn git_worktree_of(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

impl Registry {
    pub fn new(recent_capacity: usize) -> Self {
        Self {
            agents: BTreeMap::new(),
            next_exec_id: 1,
            recent_capacity: recent_capacity.max(1),
            worktrees: WorktreeIndex::default(),
        }
    }

    /// The live agents besides `own` that have a worktree of their own, by id: those whose
    /// worktree or session state another agent's file can be in.
    pub fn others(&self, own: u64) -> impl Iterator<Item = &Agent> {
        self.agents
            .values()
            .filter(move |a| a.id != own && a.is_live() && a.has_own_worktree())
    }

    /// Those of `others(own)` whose worktree holds one of `paths`, or whose Claude Code
    /// session state one is in, by id: lookups along each path, whatever the number of agents.
    pub fn others_holding<'p>(
        &self,
        own: u64,
        paths: impl IntoIterator<Item = &'p [u8]>,
    ) -> impl Iterator<Item = &Agent> {
        let mut ids = Vec::new();
        for path in paths {
            self.worktrees.holders(path, &mut ids);
        }
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| self.agents.get(&id))
            .filter(move |a| a.id != own && a.is_live() && a.has_own_worktree())
    }

    pub fn get(&self, id: u64) -> Option<&Agent> {
        self.agents.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Agent> {
        self.agents.get_mut(&id)
    }

    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    /// Live agents called `name`.
    pub fn find_by_name(&self, name: &str) -> Vec<u64> {
        self.agents
            .values()
            .filter(|a| a.name == name && a.is_live())
            .map(|a| a.id)
            .collect()
    }

    /// The next id for an exec'd agent (ids of discovered agents come from the kernel).
    pub fn allocate_id(&mut self) -> u64 {
        let id = self.next_exec_id;
        self.next_exec_id += 1;
        id
    }

    /// Adds an agent; ids below `allocate_id`'s watermark are respected on restore.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        policy: &Policy,
        id: u64,
        name: String,
        worktree: PathBuf,
        profile: String,
        origin: Origin,
        cgroup: Option<PathBuf>,
        uid: u32,
    ) -> &Agent {
        if origin == Origin::Exec {
            self.next_exec_id = self.next_exec_id.max(id + 1);
        }
        // `[agents.<name>]` in the policy may set the profile and worktree.
        let identity = policy.identity(&name, &home_of(uid), &profile, &worktree);
        let scope = policy.scope_for(&identity);
        let AgentIdentity {
            profile, worktree, ..
        } = identity;
        let agent = Agent {
            id,
            name,
            worktree,
            profile,
            origin,
            cgroup,
            uid,
            state: AgentState::Running,
            processes: BTreeMap::new(),
            alerts: BTreeMap::new(),
            responses: VecDeque::new(),
            recent: VecDeque::new(),
            scope,
        };
        if let Some(replaced) = self.agents.remove(&id) {
            self.worktrees.remove(id, &replaced.worktree);
        }
        self.worktrees.add(id, &agent.worktree);
        self.agents.insert(id, agent);
        self.prune_exited();
        &self.agents[&id]
    }

    /// Recompiles every agent's scope (after a policy reload).
    pub fn rescope(&mut self, policy: &Policy) {
        for agent in self.agents.values_mut() {
            let identity = policy.identity(
                &agent.name,
                &home_of(agent.uid),
                &agent.profile,
                &agent.worktree,
            );
            agent.scope = policy.scope_for(&identity);
        }
    }

    /// Updates the process tree and the recent-event ring. Returns true when the event ended
    /// the agent's last process.
    pub fn observe(&mut self, event: &Arc<Event>) -> bool {
        let Some(agent) = self.agents.get_mut(&event.agent_id) else {
            return false;
        };
        if agent.recent.len() == self.recent_capacity {
            agent.recent.pop_front();
        }
        agent.recent.push_back(Arc::clone(event));
        match &event.body {
            Body::Fork { child_tgid, .. } if *child_tgid != event.tgid => {
                let parent_exe = agent.processes.get(&event.tgid).map(|p| p.exe.clone());
                agent.processes.insert(
                    *child_tgid,
                    ProcessInfo {
                        ppid: event.tgid,
                        exe: parent_exe.unwrap_or_default(),
                        argv: Vec::new(),
                    },
                );
            }
            Body::Exec {
                filename,
                exe,
                argv,
                ..
            } => {
                let info = agent.processes.entry(event.tgid).or_insert(ProcessInfo {
                    ppid: event.ppid,
                    exe: String::new(),
                    argv: Vec::new(),
                });
                // The walked file, not the name: a symlink called `systemd` is still cat.
                info.exe = crate::events::escape::escape(exe.as_deref().unwrap_or(filename));
                info.argv = argv
                    .iter()
                    .map(|a| crate::events::escape::escape(a))
                    .collect();
            }
            Body::Exit { .. } => {
                let was_member = agent.processes.remove(&event.tgid).is_some();
                if was_member && agent.processes.is_empty() {
                    // A killed agent keeps saying so; any other one has simply ended.
                    if agent.state != AgentState::Killed {
                        agent.state = AgentState::Exited;
                    }
                    return true;
                }
            }
            _ => {}
        }
        false
    }

    /// Notes a process the daemon found itself (registration, /proc scan).
    pub fn add_process(&mut self, agent_id: u64, tgid: u32, ppid: u32, exe: String) {
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.processes.entry(tgid).or_insert(ProcessInfo {
                ppid,
                exe,
                argv: Vec::new(),
            });
        }
    }

    pub fn exe_of(&self, agent_id: u64, tgid: u32) -> Option<&str> {
        self.agents
            .get(&agent_id)?
            .processes
            .get(&tgid)
            .map(|p| p.exe.as_str())
    }

    pub fn count_alert(&mut self, agent_id: u64, rule: RuleId) {
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            *agent.alerts.entry(rule).or_default() += 1;
        }
    }

    pub fn summaries(&self) -> Vec<AgentSummary> {
        self.agents
            .values()
            .map(|a| AgentSummary {
                id: a.id,
                name: a.name.clone(),
                worktree: a.worktree.clone(),
                profile: a.profile.clone(),
                origin: a.origin,
                state: a.state,
                processes: a.processes.keys().copied().collect(),
                alerts: a
                    .alerts
                    .iter()
                    .map(|(r, n)| (r.as_str().to_string(), *n))
                    .collect(),
                cgroup: a.cgroup.clone(),
                responses: a.responses.iter().cloned().collect(),
            })
            .collect()
    }

    /// Notes a response in the agent's history.
    pub fn record_response(&mut self, agent_id: u64, record: ResponseRecord) {
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            if agent.responses.len() == RESPONSES_KEPT {
                agent.responses.pop_front();
            }
            agent.responses.push_back(record);
        }
    }

    /// Exec'd agents still running, for the state file.
    pub fn persisted(&self) -> Vec<PersistedAgent> {
        self.agents
            .values()
            .filter(|a| a.origin == Origin::Exec && a.is_live())
            .filter_map(|a| {
                Some(PersistedAgent {
                    id: a.id,
                    name: a.name.clone(),
                    worktree: a.worktree.clone(),
                    profile: a.profile.clone(),
                    cgroup: a.cgroup.clone()?,
                    uid: a.uid,
                })
            })
            .collect()
    }

    fn prune_exited(&mut self) {
        let exited: Vec<u64> = self
            .agents
            .values()
            .filter(|a| !a.is_live())
            .map(|a| a.id)
            .collect();
        if exited.len() > EXITED_KEPT {
            for id in &exited[..exited.len() - EXITED_KEPT] {
                if let Some(agent) = self.agents.remove(id) {
                    self.worktrees.remove(*id, &agent.worktree);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Body, Event};
    use agent_sensor_common::EventKind;

    fn event(agent_id: u64, tgid: u32, kind: EventKind, body: Body) -> Event {
        Event {
            kind,
            flags: 0,
            ktime_ns: 1,
            pid: tgid,
            tgid,
            ppid: 1,
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            agent_id,
            comm: crate::events::Comm::new(b"x"),
            body,
        }
    }

    #[test]
    fn tracks_the_process_tree_and_exit_of_the_last_process() {
        let policy = Policy::builtin();
        let mut reg = Registry::new(4);
        let id = reg.allocate_id();
        reg.insert(
            &policy,
            id,
            "a".into(),
            "/w".into(),
            "default".into(),
            Origin::Exec,
            None,
            0,
        );
        reg.add_process(id, 10, 1, "/bin/sh".into());
        let fork = Body::Fork {
            child_pid: 11,
            child_tgid: 11,
        };
        assert!(!reg.observe(&Arc::new(event(id, 10, EventKind::ProcessFork, fork))));
        assert_eq!(reg.get(id).unwrap().processes.len(), 2);
        assert!(!reg.observe(&Arc::new(event(
            id,
            11,
            EventKind::ProcessExit,
            Body::Exit { raw: 0 }
        ))));
        assert!(reg.observe(&Arc::new(event(
            id,
            10,
            EventKind::ProcessExit,
            Body::Exit { raw: 0 }
        ))));
        assert_eq!(reg.get(id).unwrap().state, AgentState::Exited);
        // The recent ring is bounded.
        for _ in 0..10 {
            reg.observe(&Arc::new(event(
                id,
                10,
                EventKind::ProcessExit,
                Body::Exit { raw: 0 },
            )));
        }
        assert_eq!(reg.get(id).unwrap().recent.len(), 4);
    }

    #[test]
    fn finds_git_worktrees() {
        let dir = std::env::temp_dir().join(format!("as-wt-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("repo/.git")).unwrap();
        std::fs::create_dir_all(dir.join("repo/src/deep")).unwrap();
        assert_eq!(
            git_worktree_of(&dir.join("repo/src/deep")),
            Some(dir.join("repo"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
