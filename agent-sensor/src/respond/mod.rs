//! Containment of a rogue agent through its cgroup: freeze (cgroup.freeze) stops every process
//! of the tree at once and atomically; kill (cgroup.kill) kills them all. Acting on the cgroup
//! rather than on pids means a reused pid can never be hit, and nothing outside the agent's
//! tree can be: the sensor refuses any cgroup that is not an agent cgroup it created.
//!
//! A root process can still leave the cgroup (by writing its pid into another cgroup's
//! `cgroup.procs`; tamper.sensor reports that). The kernel keeps tracking it as the agent's,
//! and so does the registry, so after acting on the cgroup the agent's processes that are
//! elsewhere now are signalled one by one, through a pidfd (SIGKILL for a kill, SIGSTOP for a
//! freeze, SIGCONT for a thaw), and the outcome says so.

use std::{
    os::fd::{FromRawFd as _, OwnedFd},
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

/// What a containment did.
#[derive(Debug)]
pub struct Contained {
    /// How long the cgroup took (for a freeze: until the kernel reported it frozen).
    pub took: Duration,
    /// The agent's processes found outside its cgroup, each with what signalling it gave.
    pub outside: Vec<(u32, std::io::Result<()>)>,
}

impl Contained {
    /// What was done outside the cgroup, to follow "killed in N µs" and the like; empty when
    /// every process of the agent was in its cgroup.
    pub fn outside_note(&self, what: Containment) -> String {
        if self.outside.is_empty() {
            return String::new();
        }
        let verb = match what {
            Containment::Freeze => "stopped",
            Containment::Thaw => "continued",
            Containment::Kill => "killed",
        };
        let (done, failed): (Vec<_>, Vec<_>) = self.outside.iter().partition(|(_, r)| r.is_ok());
        let pids = |list: &[&(u32, std::io::Result<()>)]| {
            list.iter()
                .map(|(pid, result)| match result {
                    Ok(()) => pid.to_string(),
                    Err(e) => format!("{pid} ({e})"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut note = String::new();
        if !done.is_empty() {
            note += &format!(
                "; {} process(es) moved out of its cgroup {verb} by pid: {}",
                done.len(),
                pids(&done)
            );
        }
        if !failed.is_empty() {
            note += &format!(
                "; {} process(es) moved out of its cgroup could not be {verb}: {}",
                failed.len(),
                pids(&failed)
            );
        }
        note
    }
}

/// Carries out `what` on agent `id` through its cgroup, then on its processes outside it, and
/// records its new state.
pub fn contain(
    registry: &mut Registry,
    parent: &Path,
    id: u64,
    what: Containment,
) -> Result<Contained, RespondError> {
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
    let signal = match what {
        Containment::Freeze => libc::SIGSTOP,
        Containment::Thaw => libc::SIGCONT,
        Containment::Kill => libc::SIGKILL,
    };
    // The hierarchy's root: `parent` is `<root>/agent-sensor`.
    let root = parent.parent().unwrap_or(parent);
    let outside = registry
        .get(id)
        .map(|a| a.processes.keys().copied().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|tgid| is_outside(*tgid, &cgroup, root))
        .filter_map(|tgid| match signal_outside(tgid, &cgroup, root, signal) {
            Ok(false) => None,
            done => Some((tgid, done.map(|_| ()))),
        })
        .collect();
    if let Some(agent) = registry.get_mut(id) {
        if agent.state != AgentState::Exited {
            agent.state = state;
        }
    }
    Ok(Contained { took, outside })
}

/// Whether process `tgid` lives, in a cgroup v2 that is neither `cgroup` nor below it.
fn is_outside(tgid: u32, cgroup: &Path, root: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")) else {
        return false; // gone
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("0::"))
        .any(|rel| !root.join(rel.trim_start_matches('/')).starts_with(cgroup))
}

/// Sends `signal` to process `tgid` through a pidfd, once the pidfd (which stays the same
/// process whatever happens to the pid) shows it is still outside `cgroup`. The pid comes from
/// the registry, which drops a process at its exit event: the pid is reused before the daemon
/// acts only if the kernel cycled through every pid meanwhile. False when there was nothing to
/// signal after all (the process ended or came back into the cgroup).
fn signal_outside(tgid: u32, cgroup: &Path, root: &Path, signal: i32) -> std::io::Result<bool> {
    // SAFETY: plain syscall; a descriptor it returns is ours alone.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid as libc::pid_t, 0) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ESRCH) => Ok(false), // ended meanwhile
            _ => Err(error),
        };
    }
    // SAFETY: `fd` is a descriptor we just received and own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !is_outside(tgid, cgroup, root) {
        return Ok(false); // back in (or gone): the cgroup took care of it
    }
    // SAFETY: `pidfd` is open; no siginfo, no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
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
