//! Agents that were not started through `agent-sensor exec`: processes the kernel made agents at
//! exec (known executable or `AGENT_SENSOR_AGENT=<name>` in the environment), and, at daemon
//! start, such processes already running (found in /proc).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use agent_sensor_common::discovery::{DISCOVERED_AGENT_BIT, MARKER};

use super::registry::{git_worktree_of, Origin, Registry};
use crate::{
    events::{escape::escape, Event},
    policy::Policy,
};

/// The value of `AGENT_SENSOR_AGENT=` in an environment block, if present and non-empty.
pub fn marker_in(environ: &[u8]) -> Option<String> {
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(&MARKER[..]))
        .filter(|name| !name.is_empty())
        .map(escape)
}

/// The worktree of a process: the git worktree around its cwd, else its cwd.
fn worktree_of(pid: u32) -> PathBuf {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| PathBuf::from("/"));
    git_worktree_of(&cwd).unwrap_or(cwd)
}

fn uid_of(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().and_then(|u| u.parse().ok()))
        })
        .unwrap_or(0)
}

/// Name and profile for a discovered process: the marker's name, else `<comm>-<pid>`.
fn identity(policy: &Policy, proc_root: &Path, pid: u32, comm: &str) -> (String, String) {
    let environ =
        std::fs::read(proc_root.join(pid.to_string()).join("environ")).unwrap_or_default();
    let name = marker_in(&environ).unwrap_or_else(|| format!("{comm}-{pid}"));
    let profile = policy
        .discovered_profile(comm.as_bytes())
        .unwrap_or(&policy.file.discovery.profile)
        .to_string();
    (name, profile)
}

/// Registers the agent the kernel created for `event` (an exec flagged DISCOVERED).
pub fn adopt_discovered(registry: &mut Registry, policy: &Policy, event: &Event) {
    let comm = escape(&event.comm);
    let (name, profile) = identity(policy, Path::new("/proc"), event.tgid, &comm);
    let worktree = worktree_of(event.tgid);
    log::info!(
        "discovered agent {name} (pid {}, {comm}) in {} with profile {profile}",
        event.tgid,
        worktree.display()
    );
    registry.insert(
        policy,
        event.agent_id,
        name,
        worktree,
        profile,
        Origin::Discovered,
        None,
        event.uid,
    );
}

/// A running process that a discovery rule matches, with its descendants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub agent_id: u64,
    pub root: u32,
    pub name: String,
    pub profile: String,
    pub worktree: PathBuf,
    pub uid: u32,
    pub members: BTreeSet<u32>,
}

/// Finds running agents in /proc: processes whose comm is a known agent executable or whose
/// environment carries the marker. Descendants join their ancestor's agent; a matching process
/// under another matching process belongs to the outer one.
pub fn scan_proc(policy: &Policy, proc_root: &Path) -> Vec<Found> {
    let discovery = &policy.file.discovery;
    let mut parents = BTreeMap::new();
    let mut comms = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses; split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head
            .split_once('(')
            .map(|(_, c)| c.to_string())
            .unwrap_or_default();
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        parents.insert(pid, ppid);
        comms.insert(pid, comm);
    }
    let own = std::process::id();
    let matches = |pid: u32, comm: &str| {
        if pid == own {
            return false;
        }
        if discovery
            .executables
            .iter()
            .any(|e| e.as_bytes().get(..15.min(e.len())) == Some(comm.as_bytes()))
        {
            return true;
        }
        discovery.env_marker
            && std::fs::read(proc_root.join(pid.to_string()).join("environ"))
                .map(|env| marker_in(&env).is_some())
                .unwrap_or(false)
    };
    let matching: BTreeSet<u32> = comms
        .iter()
        .filter(|(pid, comm)| matches(**pid, comm))
        .map(|(pid, _)| *pid)
        .collect();
    // Roots: matching processes with no matching ancestor.
    let ancestor_matches = |mut pid: u32| {
        for _ in 0..4096 {
            match parents.get(&pid) {
                Some(&ppid) if ppid != 0 && ppid != pid => {
                    if matching.contains(&ppid) {
                        return true;
                    }
                    pid = ppid;
                }
                _ => return false,
            }
        }
        false
    };
    let roots: Vec<u32> = matching
        .iter()
        .copied()
        .filter(|p| !ancestor_matches(*p))
        .collect();
    let mut found = Vec::new();
    for root in roots {
        let mut members = BTreeSet::from([root]);
        // Descendants: repeat until no new child appears (the tree is small).
        loop {
            let before = members.len();
            for (pid, ppid) in &parents {
                if members.contains(ppid) {
                    members.insert(*pid);
                }
            }
            if members.len() == before {
                break;
            }
        }
        let comm = comms.get(&root).cloned().unwrap_or_default();
        let (name, profile) = identity(policy, proc_root, root, &comm);
        found.push(Found {
            agent_id: DISCOVERED_AGENT_BIT | root as u64,
            root,
            name,
            profile,
            worktree: worktree_of(root),
            uid: uid_of(root),
            members,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_marker_from_an_environment_block() {
        assert_eq!(
            marker_in(b"A=1\0AGENT_SENSOR_AGENT=bot\0B=2\0"),
            Some("bot".into())
        );
        assert_eq!(marker_in(b"AGENT_SENSOR_AGENT=\0"), None);
        assert_eq!(marker_in(b"XAGENT_SENSOR_AGENT=bot\0"), None);
        assert_eq!(marker_in(b""), None);
    }

    #[test]
    fn finds_a_marked_process_and_its_children_in_proc() {
        // A fake /proc: 10 (marked) → 11 → 12; 20 unrelated.
        let root = std::env::temp_dir().join(format!("as-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (pid, ppid, comm, env) in [
            (10, 1, "node", &b"AGENT_SENSOR_AGENT=bot\0"[..]),
            (11, 10, "sh", b""),
            (12, 11, "cargo", b""),
            (20, 1, "bash", b"HOME=/root\0"),
        ] {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("stat"), format!("{pid} ({comm}) S {ppid} 0 0")).unwrap();
            std::fs::write(dir.join("environ"), env).unwrap();
        }
        let policy = Policy::builtin();
        let found = scan_proc(&policy, &root);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].root, 10);
        assert_eq!(found[0].members, BTreeSet::from([10, 11, 12]));
        assert_eq!(found[0].name, "bot");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
