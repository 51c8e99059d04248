//! The first path component of every agent's worktree. A path whose first component is none
//! of them lies in no agent's worktree: most file events (system libraries, /proc, /dev) then
//! need no comparison with every other agent, which would make the cost of an event grow with
//! the number of agents.

use std::{collections::HashMap, os::unix::ffi::OsStrExt as _, path::Path};

/// Claude Code's per-project state lives under the user's home, not the worktree.
const CLAUDE_PROJECTS: &[u8] = b"/.claude/projects/";

#[derive(Debug, Default)]
pub struct WorktreeRoots {
    /// First component → agents whose worktree starts with it.
    counts: HashMap<Vec<u8>, usize>,
}

impl WorktreeRoots {
    /// Adds an agent's worktree; `/` (an agent without one of its own, see
    /// `Agent::has_own_worktree`) holds nothing for other agents and is left out.
    pub fn add(&mut self, worktree: &Path) {
        if !super::registry::is_own_worktree(worktree) {
            return;
        }
        *self
            .counts
            .entry(first_component(worktree.as_os_str().as_bytes()).to_vec())
            .or_default() += 1;
    }

    pub fn remove(&mut self, worktree: &Path) {
        if !super::registry::is_own_worktree(worktree) {
            return;
        }
        let root = first_component(worktree.as_os_str().as_bytes());
        if let Some(count) = self.counts.get_mut(root) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(root);
            }
        }
    }

    /// False only when `path` is certainly in no agent's worktree or Claude session state.
    pub fn may_hold(&self, path: &[u8]) -> bool {
        if !path.starts_with(b"/") || self.counts.contains_key(&b""[..]) {
            return true;
        }
        self.counts.contains_key(first_component(path))
            || find_constant!(path, CLAUDE_PROJECTS).is_some()
    }
}

/// `usr` of `/usr/lib`; empty for `/`, an empty path or a relative one (which match anything).
fn first_component(path: &[u8]) -> &[u8] {
    let Some(rest) = path.strip_prefix(b"/") else {
        return b"";
    };
    rest.split(|b| *b == b'/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_a_worktree_root_or_a_claude_session_may_be_held() {
        let mut roots = WorktreeRoots::default();
        assert!(!roots.may_hold(b"/home/a/wt/x"));
        roots.add(Path::new("/home/a/wt"));
        roots.add(Path::new("/srv/agents/b"));
        assert!(roots.may_hold(b"/home/a/wt/x"));
        assert!(roots.may_hold(b"/home"));
        assert!(roots.may_hold(b"/srv/other"));
        assert!(!roots.may_hold(b"/usr/lib/libc.so.6"));
        assert!(!roots.may_hold(b"/homes/a"));
        assert!(roots.may_hold(b"/root/.claude/projects/-home-a-wt/x.jsonl"));
        // Relative paths cannot be ruled out.
        assert!(roots.may_hold(b"wt/x"));
        roots.remove(Path::new("/home/a/wt"));
        assert!(!roots.may_hold(b"/home/a/wt/x"));
        assert!(roots.may_hold(b"/srv/agents/b/y"));
    }

    #[test]
    fn a_worktree_at_the_root_holds_nothing_for_other_agents() {
        let mut roots = WorktreeRoots::default();
        roots.add(Path::new("/"));
        assert!(!roots.may_hold(b"/usr/lib/libc.so.6"));
        roots.add(Path::new("/home/a/wt"));
        roots.remove(Path::new("/"));
        assert!(roots.may_hold(b"/home/a/wt/x"));
    }
}
