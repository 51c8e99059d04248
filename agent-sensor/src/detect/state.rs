//! What the detector remembers about one agent between events. Every part is bounded.

use super::{dns_tunnel::DnsBursts, exfil::RecentReads, processes::Processes};

/// Git common directories remembered per agent.
const MAX_GIT_COMMON_DIRS: usize = 4;

#[derive(Debug, Default)]
pub struct AgentState {
    pub processes: Processes,
    /// Sensitive files read recently (exfil.sensitive_then_egress).
    pub sensitive_reads: RecentReads,
    pub dns: DnsBursts,
    /// `.git` directories of the repository the agent's worktree is a linked worktree of: git
    /// keeps objects and refs there, outside the worktree, and every commit writes them.
    pub git_common_dirs: Vec<Vec<u8>>,
    pub last_seen_ns: u64,
}

impl AgentState {
    pub fn learn_git_common_dir(&mut self, dir: Vec<u8>) {
        if self.git_common_dirs.contains(&dir) {
            return;
        }
        if self.git_common_dirs.len() >= MAX_GIT_COMMON_DIRS {
            self.git_common_dirs.remove(0);
        }
        self.git_common_dirs.push(dir);
    }
}
