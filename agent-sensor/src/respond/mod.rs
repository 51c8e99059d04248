//! Containment of a rogue agent through its cgroup: freeze (cgroup.freeze) stops every process
//! of the tree at once and atomically; kill (cgroup.kill) kills them all. Acting on the cgroup
//! rather than on pids means a reused pid can never be hit, and nothing outside the agent's
//! tree can be: the sensor refuses any cgroup that is not an agent cgroup it created.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use thiserror::Error;

pub mod kernel;

use crate::agents::registry::{AgentState, Registry};

#[derive(Debug, Error)]
pub enum RespondError {
    #[error("{0} is not an agent cgroup of this sensor; refusing to act on it")]
    NotAgentCgroup(PathBuf),
    #[error("agent has no cgroup (discovered agents are contained through their processes)")]
    NoCgroup,
    #[error("cannot write {file}: {source}")]
    Write {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the cgroup {0} did not report frozen within {1:?}")]
    NotFrozen(PathBuf, Duration),
}

/// How long to wait for the kernel to confirm a freeze.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// The parent of every agent cgroup (`<cgroup v2 root>/agent-sensor`).
pub fn agents_parent(cgroup_root: &Path) -> PathBuf {
    cgroup_root.join("agent-sensor")
}

/// `cgroup` must be a direct child of the agents' parent: never the root, never the sensor's.
fn check(cgroup: &Path, parent: &Path) -> Result<(), RespondError> {
    // The sensor's own cgroup v2 ("0::/path" in /proc/self/cgroup), below the hierarchy root
    // that `parent` is in.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let root = parent.parent().unwrap_or(parent);
    let is_own = own
        .lines()
        .filter_map(|l| l.strip_prefix("0::"))
        .any(|rel| root.join(rel.trim_start_matches('/')) == cgroup);
    if cgroup.parent() != Some(parent) || is_own || !cgroup.join("cgroup.procs").exists() {
        return Err(RespondError::NotAgentCgroup(cgroup.to_path_buf()));
    }
    Ok(())
}

fn write(file: PathBuf, value: &str) -> Result<(), RespondError> {
    std::fs::write(&file, value).map_err(|source| RespondError::Write { file, source })
}

/// Freezes every process in `cgroup` and waits until the kernel says it is frozen.
pub fn freeze(cgroup: &Path, parent: &Path) -> Result<Duration, RespondError> {
    check(cgroup, parent)?;
    let start = Instant::now();
    write(cgroup.join("cgroup.freeze"), "1")?;
    while start.elapsed() < FREEZE_TIMEOUT {
        let events = std::fs::read_to_string(cgroup.join("cgroup.events")).unwrap_or_default();
        if events.lines().any(|l| l == "frozen 1") {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Err(RespondError::NotFrozen(
        cgroup.to_path_buf(),
        FREEZE_TIMEOUT,
    ))
}

pub fn thaw(cgroup: &Path, parent: &Path) -> Result<(), RespondError> {
    check(cgroup, parent)?;
    write(cgroup.join("cgroup.freeze"), "0")
}

/// Kills every process in `cgroup` (SIGKILL to the whole tree, atomically, frozen or not).
pub fn kill(cgroup: &Path, parent: &Path) -> Result<Duration, RespondError> {
    check(cgroup, parent)?;
    let start = Instant::now();
    write(cgroup.join("cgroup.kill"), "1")?;
    Ok(start.elapsed())
}

/// What a human or a rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    Freeze,
    Thaw,
    Kill,
}

/// Carries out `what` on agent `id` through its cgroup and records its new state.
pub fn contain(
    registry: &mut Registry,
    parent: &Path,
    id: u64,
    what: Containment,
) -> Result<Duration, RespondError> {
    let cgroup = registry
        .get(id)
        .and_then(|a| a.cgroup.clone())
        .ok_or(RespondError::NoCgroup)?;
    let (took, state) = match what {
        Containment::Freeze => (freeze(&cgroup, parent)?, AgentState::Frozen),
        Containment::Thaw => {
            let start = Instant::now();
            thaw(&cgroup, parent)?;
            (start.elapsed(), AgentState::Running)
        }
        Containment::Kill => (kill(&cgroup, parent)?, AgentState::Killed),
    };
    if let Some(agent) = registry.get_mut(id) {
        if agent.state != AgentState::Exited {
            agent.state = state;
        }
    }
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_anything_but_an_agent_cgroup() {
        let parent = Path::new("/sys/fs/cgroup/agent-sensor");
        for bad in [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/agent-sensor",
            "/sys/fs/cgroup/other/x",
            "/",
        ] {
            assert!(matches!(
                freeze(Path::new(bad), parent),
                Err(RespondError::NotAgentCgroup(_))
            ));
            assert!(kill(Path::new(bad), parent).is_err());
        }
    }
}
