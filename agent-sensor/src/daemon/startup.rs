//! Agent lifecycle on the daemon side: cgroups for exec'd agents, agents restored after a
//! restart, agents already running when the daemon starts, and cleanup when one ends.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{DaemonError, RunOptions};
use crate::{
    agents::{
        discovery,
        registry::{AgentState, Origin, PersistedAgent, Registry},
    },
    loader::LoadedSensor,
    pipeline::Pipeline,
    policy::{Mode, Response, RuleId},
    respond::{self, Containment, RespondError},
    system, tracking,
};

pub struct Agents {
    state_file: PathBuf,
    /// cgroups of ended agents, removed once the kernel has let go of their last task
    /// (the exit event comes before the task leaves its cgroup), with the time of the attempt.
    to_remove: Vec<(PathBuf, Instant)>,
}

/// How long an ended agent's cgroup removal is retried.
const REMOVE_RETRY: Duration = Duration::from_secs(30);

/// Characters kept in a cgroup directory name.
fn cgroup_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Creates a fresh cgroup `<parent>/<name>` for a new agent. A directory of that name left by
/// an earlier daemon is never reused as it is: one that is empty is removed and made anew (it
/// may have been left frozen), one that still holds processes — another daemon's agent — is
/// left alone and a suffixed name taken instead, so that a freeze or kill of this agent can
/// never reach them.
fn new_cgroup(parent: &Path, name: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create cgroup {}: {e}", parent.display()))?;
    for attempt in 0..CGROUP_NAME_ATTEMPTS {
        let cgroup = match attempt {
            0 => parent.join(name),
            n => parent.join(format!("{name}.{n}")),
        };
        match std::fs::create_dir(&cgroup) {
            Ok(()) => return Ok(cgroup),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // rmdir of a cgroup fails while it has processes or children.
                if std::fs::remove_dir(&cgroup).is_ok() && std::fs::create_dir(&cgroup).is_ok() {
                    log::info!("replaced a stale empty cgroup {}", cgroup.display());
                    return Ok(cgroup);
                }
            }
            Err(e) => return Err(format!("cannot create cgroup {}: {e}", cgroup.display())),
        }
    }
    Err(format!(
        "cannot create a cgroup for the agent: {} and {CGROUP_NAME_ATTEMPTS} suffixed names \
         under {} are in use",
        name,
        parent.display()
    ))
}

/// Names tried for a new agent's cgroup before giving up.
const CGROUP_NAME_ATTEMPTS: usize = 16;

/// How old an empty agent cgroup must be before a starting daemon removes it as a stray:
/// younger, it may be another daemon's agent being set up (empty until the agent moves in).
pub const STRAY_AGE: Duration = Duration::from_secs(60);

/// Removes the empty agent cgroups older than `age` under `parent`, whoever left them: an
/// earlier daemon's state file names its agents and `restore` removes theirs, but a daemon
/// whose state is gone (a state dir on a volume wiped with its pod) left the rest behind, one
/// per agent started. A cgroup with processes or child cgroups stays (rmdir refuses it).
pub fn remove_stray_cgroups(parent: &Path, age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let old_enough = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|made| made.elapsed().ok())
            .is_some_and(|elapsed| elapsed >= age);
        if !is_dir || !old_enough {
            continue;
        }
        let path = entry.path();
        if cgroup_is_empty(&path) && std::fs::remove_dir(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        log::info!(
            "removed {removed} empty agent cgroup(s) left under {} by an earlier daemon",
            parent.display()
        );
    }
    removed
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

impl Agents {
    pub fn new(state_dir: &Path) -> Result<Self, DaemonError> {
        Ok(Self {
            state_file: state_dir.join("agents.json"),
            to_remove: Vec::new(),
        })
    }

    /// `--track-pid` and `--track-cgroup`: capture-only agents whose worktree is `/`.
    pub fn track_options(
        &mut self,
        sensor: &mut LoadedSensor,
        pipeline: &mut Pipeline,
        options: &RunOptions,
    ) -> Result<(), DaemonError> {
        for pid in &options.track_pids {
            let id = pipeline.registry.allocate_id();
            tracking::track_pid(sensor, *pid, id)?;
            pipeline.registry.insert(
                &pipeline.policy,
                id,
                format!("pid-{pid}"),
                PathBuf::from("/"),
                "default".into(),
                Origin::Exec,
                None,
                0,
            );
            pipeline.registry.add_process(id, *pid, 0, exe_of(*pid));
            log::info!("tracking process {pid} as agent {id}");
        }
        for path in &options.track_cgroups {
            let id = pipeline.registry.allocate_id();
            let cgroup_id = tracking::track_cgroup(sensor, path, id)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            pipeline.registry.insert(
                &pipeline.policy,
                id,
                name.unwrap_or_else(|| format!("cgroup-{cgroup_id}")),
                PathBuf::from("/"),
                "default".into(),
                Origin::Exec,
                None,
                0,
            );
            log::info!(
                "tracking cgroup {} (id {cgroup_id}) as agent {id}",
                path.display()
            );
        }
        Ok(())
    }

    /// Creates an exec'd agent: its cgroup, the kernel's tracking of that cgroup, the registry
    /// entry. Returns the agent id and the cgroup the caller must move itself into.
    pub fn create(
        &mut self,
        sensor: &mut LoadedSensor,
        pipeline: &mut Pipeline,
        name: &str,
        worktree: PathBuf,
        profile: String,
        uid: u32,
    ) -> Result<(u64, PathBuf), String> {
        let root = system::cgroup2_root().map_err(|e| e.to_string())?;
        let id = pipeline.registry.allocate_id();
        let cgroup = new_cgroup(
            &respond::agents_parent(&root),
            &format!("{}-{id}", cgroup_safe(name)),
        )?;
        if let Err(e) = tracking::track_cgroup(sensor, &cgroup, id) {
            let _ = std::fs::remove_dir(&cgroup);
            return Err(e.to_string());
        }
        pipeline.registry.insert(
            &pipeline.policy,
            id,
            name.to_string(),
            worktree,
            profile,
            Origin::Exec,
            Some(cgroup.clone()),
            uid,
        );
        if let Err(e) = enforce_egress(sensor, pipeline, id) {
            // Never run an agent whose egress enforcement failed: undo and refuse.
            let _ = tracking::untrack_cgroup(sensor, &cgroup);
            let _ = std::fs::remove_dir(&cgroup);
            return Err(format!("cannot enforce the agent's egress allowlist: {e}"));
        }
        self.save(pipeline);
        Ok((id, cgroup))
    }

    /// Exec'd agents of an earlier run whose cgroups still hold processes: tracked again, under
    /// the same ids, before any of their next syscalls can be missed.
    pub fn restore(&mut self, sensor: &mut LoadedSensor, pipeline: &mut Pipeline) {
        let Ok(text) = std::fs::read_to_string(&self.state_file) else {
            return;
        };
        let saved: Vec<PersistedAgent> = match serde_json::from_str(&text) {
            Ok(saved) => saved,
            Err(e) => {
                log::error!("ignoring unreadable {}: {e}", self.state_file.display());
                return;
            }
        };
        for agent in saved {
            let procs =
                std::fs::read_to_string(agent.cgroup.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                let _ = std::fs::remove_dir(&agent.cgroup);
                continue;
            }
            if let Err(e) = tracking::track_cgroup(sensor, &agent.cgroup, agent.id) {
                log::error!(
                    "cannot re-track agent {} ({}): {e}",
                    agent.name,
                    agent.cgroup.display()
                );
                continue;
            }
            pipeline.registry.insert(
                &pipeline.policy,
                agent.id,
                agent.name.clone(),
                agent.worktree.clone(),
                agent.profile.clone(),
                Origin::Exec,
                Some(agent.cgroup.clone()),
                agent.uid,
            );
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                pipeline.registry.add_process(agent.id, pid, 0, exe_of(pid));
            }
            if let Err(e) = enforce_egress(sensor, pipeline, agent.id) {
                log::error!(
                    "agent {}: egress not enforced in the kernel: {e}",
                    agent.name
                );
            }
            log::info!(
                "restored agent {} (id {}) from {}",
                agent.name,
                agent.id,
                agent.cgroup.display()
            );
        }
    }

    /// Agents already running: matched by the discovery rules in /proc and tracked now.
    pub fn discover_running(&mut self, sensor: &mut LoadedSensor, pipeline: &mut Pipeline) {
        for found in discovery::scan_proc(&pipeline.policy, Path::new("/proc")) {
            // A restored or option-tracked agent already owns these processes.
            if pipeline
                .registry
                .agents()
                .any(|a| a.processes.contains_key(&found.root))
            {
                continue;
            }
            let mut tracked = 0;
            for pid in &found.members {
                if tracking::track_pid(sensor, *pid, found.agent_id).is_ok() {
                    tracked += 1;
                }
            }
            pipeline.registry.insert(
                &pipeline.policy,
                found.agent_id,
                found.name.clone(),
                found.worktree.clone(),
                found.profile.clone(),
                Origin::Discovered,
                None,
                found.uid,
            );
            for pid in &found.members {
                pipeline
                    .registry
                    .add_process(found.agent_id, *pid, 0, exe_of(*pid));
            }
            self.enforce_discovered(sensor, pipeline, found.agent_id);
            log::info!(
                "found running agent {} (pid {}, {tracked} processes) in {}",
                found.name,
                found.root,
                found.worktree.display()
            );
        }
    }

    /// A discovered agent has no cgroup of its own, but the egress programs know an agent by
    /// its processes: its allowlist is enforced like an exec'd agent's, from the daemon's
    /// first look at it (at start-up, or the batch that brought its first event). It cannot
    /// be refused a start it has already made, so a failure is only logged.
    pub fn enforce_discovered(&mut self, sensor: &mut LoadedSensor, pipeline: &Pipeline, id: u64) {
        if let Err(e) = enforce_egress(sensor, pipeline, id) {
            log::error!("discovered agent {id}: egress not enforced in the kernel: {e}");
        }
    }

    /// An agent whose last process exited: stop tracking its cgroup and remove it.
    pub fn retire(&mut self, sensor: &mut LoadedSensor, pipeline: &mut Pipeline, id: u64) {
        let Some(agent) = pipeline.registry.get(id) else {
            return;
        };
        if agent.is_live() {
            return;
        }
        log::info!("agent {} (id {id}) ended", agent.name);
        if let Some(m) = &pipeline.metrics {
            m.forget_agent(&agent.name);
        }
        if let Err(e) = respond::kernel::release_egress(&mut sensor.ebpf, id) {
            log::warn!("cannot release agent {id}'s egress allowlist: {e}");
        }
        if let Some(cgroup) = agent.cgroup.clone() {
            self.release_cgroup(sensor, cgroup);
            self.remove_ended_cgroups();
        }
        self.save(pipeline);
    }

    /// Stops tracking an ended agent's cgroup and queues it for removal (once it is empty).
    fn release_cgroup(&mut self, sensor: &mut LoadedSensor, cgroup: PathBuf) {
        if let Err(e) = tracking::untrack_cgroup(sensor, &cgroup) {
            log::warn!("cannot untrack cgroup {}: {e}", cgroup.display());
        }
        self.to_remove.push((cgroup, Instant::now()));
    }

    /// Removes the cgroups of ended agents that are empty by now; gives up (and says so) on
    /// one that stays occupied.
    pub fn remove_ended_cgroups(&mut self) {
        self.to_remove.retain(|(cgroup, since)| {
            if std::fs::remove_dir(cgroup).is_ok() || !cgroup.exists() {
                return false;
            }
            if since.elapsed() > REMOVE_RETRY {
                log::warn!(
                    "cgroup {} still holds processes; left in place",
                    cgroup.display()
                );
                return false;
            }
            true
        });
    }

    /// At stop: agents that are over although their last exits were not read yet (killed just
    /// before the stop, or their cgroup empty already) have their cgroups removed too; the
    /// agents file will not name them, so nothing else would remove them. Agents still
    /// running keep theirs (the next daemon adopts them).
    pub fn retire_finished(&mut self, sensor: &mut LoadedSensor, pipeline: &Pipeline) {
        for cgroup in finished_cgroups(&pipeline.registry) {
            if !self.to_remove.iter().any(|(queued, _)| *queued == cgroup) {
                self.release_cgroup(sensor, cgroup);
            }
        }
    }

    /// At stop: gives ended agents' cgroups up to `grace` to empty (their last process may
    /// still be on its way out), so that a stopped daemon leaves no empty cgroup behind; the
    /// agents file no longer names them, so nothing else would remove them.
    pub fn finish_removals(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.remove_ended_cgroups();
        while !self.to_remove.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            self.remove_ended_cgroups();
        }
        for (cgroup, _) in self.to_remove.drain(..) {
            log::warn!(
                "cgroup {} of an ended agent still holds processes; left in place",
                cgroup.display()
            );
        }
    }

    /// A human's thaw or kill (the rules' freezes and kills run in the pipeline).
    pub fn contain(
        &mut self,
        pipeline: &mut Pipeline,
        id: u64,
        what: Containment,
    ) -> Result<respond::Contained, RespondError> {
        respond::contain(&mut pipeline.registry, &pipeline.cgroup_parent, id, what)
    }

    /// Writes the exec'd agents that are still running (atomically).
    pub fn save(&self, pipeline: &Pipeline) {
        let tmp = self.state_file.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&pipeline.registry.persisted())
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.state_file));
        if let Err(e) = result {
            log::error!("cannot save agents to {}: {e}", self.state_file.display());
        }
    }
}

/// In enforce mode, an agent whose policy answers unallowed egress with `deny` gets its
/// allowlist in the kernel: from then on a connection or send elsewhere fails with EPERM.
fn enforce_egress(
    sensor: &mut LoadedSensor,
    pipeline: &Pipeline,
    id: u64,
) -> Result<(), respond::kernel::KernelPolicyError> {
    let Some(agent) = pipeline.registry.get(id) else {
        return Ok(());
    };
    let denies = [RuleId::UnallowedEgress, RuleId::SensitiveThenEgress]
        .iter()
        .any(|rule| agent.scope.response(*rule) == Response::Deny);
    if pipeline.policy.mode() != Mode::Enforce || !denies {
        return Ok(());
    }
    respond::kernel::enforce_egress(&mut sensor.ebpf, id, &agent.scope)?;
    log::info!(
        "agent {} (id {id}): egress allowlist enforced in the kernel",
        agent.name
    );
    Ok(())
}

/// The cgroups of agents that are over: killed, or with no process left in them.
fn finished_cgroups(registry: &Registry) -> Vec<PathBuf> {
    registry
        .agents()
        .filter_map(|agent| {
            let cgroup = agent.cgroup.as_ref()?;
            // An agent no longer live was retired when its last exit was read: its cgroup is
            // released (and usually removed) already.
            let finished = agent.state == AgentState::Killed || cgroup_is_empty(cgroup);
            (agent.is_live() && finished).then(|| cgroup.clone())
        })
        .collect()
}

/// No process in `cgroup` or below it (or the cgroup is gone).
pub(super) fn cgroup_is_empty(cgroup: &Path) -> bool {
    std::fs::read_to_string(cgroup.join("cgroup.events"))
        .map_or(true, |events| events.lines().any(|l| l == "populated 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where agent cgroups go on the host's real cgroup v2 tree; `None` (the test is skipped)
    /// without root or cgroup v2.
    fn real_agents_parent() -> Option<PathBuf> {
        let Ok(root) = system::cgroup2_root() else {
            eprintln!("skipped: no cgroup v2");
            return None;
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: not root");
            return None;
        }
        Some(respond::agents_parent(&root))
    }

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

    /// Removes test cgroups, giving killed processes a second to leave them.
    fn remove_cgroups(dirs: &[&PathBuf]) {
        for dir in dirs {
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn strays_go_when_empty_and_old_enough_and_busy_ones_stay() {
        let Some(parent) = real_agents_parent() else {
            return;
        };
        // A parent of its own: other tests' cgroups under the real one are not strays.
        let strays = parent.join(format!("unit-strays-{}", std::process::id()));
        let (empty, busy_dir) = (strays.join("empty"), strays.join("busy"));
        for cgroup in [&empty, &busy_dir] {
            std::fs::create_dir_all(cgroup).unwrap();
        }
        let mut busy = sleeper();
        std::fs::write(busy_dir.join("cgroup.procs"), busy.id().to_string()).unwrap();
        // Just made: maybe another daemon's agent being set up.
        assert_eq!(remove_stray_cgroups(&strays, STRAY_AGE), 0);
        assert!(empty.exists());
        assert_eq!(remove_stray_cgroups(&strays, Duration::ZERO), 1);
        assert!(!empty.exists() && busy_dir.exists());
        let _ = busy.kill();
        let _ = busy.wait();
        remove_cgroups(&[&busy_dir, &strays]);
        assert!(!strays.exists());
    }

    #[test]
    fn a_new_agent_never_reuses_a_stale_or_busy_cgroup() {
        let Some(parent) = real_agents_parent() else {
            return;
        };
        let name = format!("unit-stale-{}", std::process::id());
        // An empty cgroup left frozen: replaced by a fresh one.
        let stale = parent.join(&name);
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("cgroup.freeze"), "1").unwrap();
        let fresh = new_cgroup(&parent, &name).unwrap();
        assert_eq!(fresh, stale);
        assert_eq!(
            std::fs::read_to_string(fresh.join("cgroup.freeze"))
                .unwrap()
                .trim(),
            "0"
        );
        // One with a process in it: left alone, a suffixed name instead.
        let mut busy = sleeper();
        std::fs::write(fresh.join("cgroup.procs"), busy.id().to_string()).unwrap();
        let other = new_cgroup(&parent, &name).unwrap();
        let _ = busy.kill();
        let _ = busy.wait();
        assert_eq!(other, parent.join(format!("{name}.1")));
        remove_cgroups(&[&other, &fresh]);
        assert!(!fresh.exists() && !other.exists());
    }

    #[test]
    fn at_stop_killed_and_emptied_agents_give_up_their_cgroups_and_running_and_retired_ones_do_not()
    {
        let Some(parent) = real_agents_parent() else {
            return;
        };
        let dir = |what: &str| parent.join(format!("unit-{what}-{}", std::process::id()));
        let (running, emptied, killed) = (dir("running"), dir("emptied"), dir("killed"));
        for cgroup in [&running, &emptied, &killed] {
            std::fs::create_dir_all(cgroup).unwrap();
        }
        let (mut busy, mut dying) = (sleeper(), sleeper());
        std::fs::write(running.join("cgroup.procs"), busy.id().to_string()).unwrap();
        let policy = crate::policy::Policy::builtin();
        let mut registry = Registry::new(4);
        for (id, cgroup) in [(1, &running), (2, &emptied), (3, &killed)] {
            registry.insert(
                &policy,
                id,
                format!("a{id}"),
                PathBuf::from("/tmp"),
                "default".into(),
                Origin::Exec,
                Some(cgroup.clone()),
                0,
            );
        }
        // The kill was ordered; its processes may still be on their way out.
        std::fs::write(killed.join("cgroup.procs"), dying.id().to_string()).unwrap();
        registry.add_process(3, dying.id(), 0, String::new());
        registry.get_mut(3).unwrap().state = AgentState::Killed;
        // Ended and retired while the daemon ran: its cgroup was released and removed then.
        registry.insert(
            &policy,
            4,
            "a4".into(),
            PathBuf::from("/tmp"),
            "default".into(),
            Origin::Exec,
            Some(dir("retired")),
            0,
        );
        registry.get_mut(4).unwrap().state = AgentState::Exited;
        let mut finished = finished_cgroups(&registry);
        for child in [&mut busy, &mut dying] {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_cgroups(&[&running, &emptied, &killed]);
        finished.sort();
        let mut expected = vec![emptied.clone(), killed.clone()];
        expected.sort();
        assert_eq!(finished, expected);
        assert!(!running.exists() && !emptied.exists() && !killed.exists());
    }
}
