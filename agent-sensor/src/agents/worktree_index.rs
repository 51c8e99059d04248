//! Which agents a path may belong to: the agents whose worktree holds it and those whose Claude
//! Code session state it is in, found by lookups along the path rather than by comparing it
//! with every agent. File rules ask this about every file event of every agent, and a
//! comparison with each other agent made the cost of an event grow with the number of agents:
//! with a hundred agents whose worktrees share a parent directory, each working in its own, the
//! daemon spent 3.8 times as much CPU per event as with one (`cargo xtask bench scaling`,
//! which opens files in the agents' worktrees for this reason).

use std::{collections::BTreeMap, os::unix::ffi::OsStrExt as _, path::Path};

use crate::fasthash::HashMap;

/// Claude Code's per-project state lives under the user's home, not the worktree.
const CLAUDE_PROJECTS: &[u8] = b"/.claude/projects/";

#[derive(Debug, Default)]
pub struct WorktreeIndex {
    /// First component → agents whose worktree starts with it: rules out most paths (system
    /// libraries, /proc, /dev) with one lookup among a few keys.
    first_components: BTreeMap<Vec<u8>, usize>,
    /// Worktree (without a trailing `/`, as `policy::path_under` reads it) → agent ids.
    by_worktree: HashMap<Vec<u8>, Vec<u64>>,
    /// Length of those worktrees → how many: a prefix of a path of no such length is no
    /// agent's worktree, and is not hashed (worktrees side by side have few lengths).
    lengths: BTreeMap<usize, usize>,
    /// Claude Code's directory name for a worktree (`session_name`) → agent ids.
    by_session: HashMap<Vec<u8>, Vec<u64>>,
}

impl WorktreeIndex {
    /// Adds agent `id` with its worktree; `/` (an agent without one of its own, see
    /// `Agent::has_own_worktree`) holds nothing for other agents and is left out.
    pub fn add(&mut self, id: u64, worktree: &Path) {
        let Some(key) = key_of(worktree) else {
            return;
        };
        *self
            .first_components
            .entry(first_component(key).to_vec())
            .or_default() += 1;
        self.by_worktree.entry(key.to_vec()).or_default().push(id);
        *self.lengths.entry(key.len()).or_default() += 1;
        self.by_session
            .entry(session_name(worktree.as_os_str().as_bytes()))
            .or_default()
            .push(id);
    }

    pub fn remove(&mut self, id: u64, worktree: &Path) {
        let Some(key) = key_of(worktree) else {
            return;
        };
        if !forget(&mut self.by_worktree, key, id) {
            return;
        }
        uncount(&mut self.first_components, first_component(key));
        uncount(&mut self.lengths, &key.len());
        forget(
            &mut self.by_session,
            &session_name(worktree.as_os_str().as_bytes()),
            id,
        );
    }

    /// Adds to `ids` every agent whose worktree holds `path` (`policy::path_under`) or whose
    /// Claude Code session state `path` is in; the caller sorts out duplicates and the agent
    /// the path is asked about for.
    pub fn holders(&self, path: &[u8], ids: &mut Vec<u64>) {
        if let Some(session) =
            find_constant!(path, CLAUDE_PROJECTS).map(|at| &path[at + CLAUDE_PROJECTS.len()..])
        {
            let name = session.split(|b| *b == b'/').next().unwrap_or(session);
            ids.extend(self.by_session.get(name).into_iter().flatten());
        }
        if !self.first_components.contains_key(first_component(path)) {
            return;
        }
        // `path` is under `dir` when `dir` is `path` or `path` up to one of its slashes.
        let cuts = path
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(at, _)| at)
            .chain(std::iter::once(path.len()));
        for cut in cuts.filter(|cut| self.lengths.contains_key(cut)) {
            ids.extend(self.by_worktree.get(&path[..cut]).into_iter().flatten());
        }
    }
}

/// The index key of `worktree`: its bytes without one trailing `/` (as `policy::path_under`
/// compares), or `None` for a worktree that holds nothing for other agents (`/`, empty).
fn key_of(worktree: &Path) -> Option<&[u8]> {
    if !super::registry::is_own_worktree(worktree) {
        return None;
    }
    let bytes = worktree.as_os_str().as_bytes();
    let key = bytes.strip_suffix(b"/").unwrap_or(bytes);
    (!key.is_empty()).then_some(key)
}

/// Takes `id` off `key`'s list; whether it was there.
fn forget(map: &mut HashMap<Vec<u8>, Vec<u64>>, key: &[u8], id: u64) -> bool {
    let Some(ids) = map.get_mut(key) else {
        return false;
    };
    let Some(at) = ids.iter().position(|i| *i == id) else {
        return false;
    };
    ids.swap_remove(at);
    if ids.is_empty() {
        map.remove(key);
    }
    true
}

/// One fewer of `key`; gone at none.
fn uncount<K, Q>(counts: &mut BTreeMap<K, usize>, key: &Q)
where
    K: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ?Sized,
{
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Claude Code keeps each project's transcripts and memory in
/// `~/.claude/projects/<worktree with every non-alphanumeric byte replaced by '-'>`.
fn session_name(worktree: &[u8]) -> Vec<u8> {
    worktree
        .iter()
        .map(|b| if b.is_ascii_alphanumeric() { *b } else { b'-' })
        .collect()
}

/// `usr` of `/usr/lib`; `a` of the relative `a/b`.
fn first_component(path: &[u8]) -> &[u8] {
    let rest = path.strip_prefix(b"/").unwrap_or(path);
    rest.split(|b| *b == b'/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holders(index: &WorktreeIndex, path: &str) -> Vec<u64> {
        let mut ids = Vec::new();
        index.holders(path.as_bytes(), &mut ids);
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_path_is_held_by_every_worktree_it_lies_in_and_no_other() {
        let mut index = WorktreeIndex::default();
        index.add(1, Path::new("/home/a/wt"));
        index.add(2, Path::new("/srv/agents/b/"));
        index.add(3, Path::new("/home/a/wt/nested"));
        index.add(4, Path::new("/home/a/wt"));
        assert_eq!(holders(&index, "/home/a/wt/x"), [1, 4]);
        assert_eq!(holders(&index, "/home/a/wt"), [1, 4]);
        assert_eq!(holders(&index, "/home/a/wt/nested/y/z"), [1, 3, 4]);
        assert_eq!(holders(&index, "/srv/agents/b/y"), [2]);
        assert_eq!(holders(&index, "/srv/agents/b"), [2]);
        for outside in [
            "/home/a/wtx/y",
            "/home/a",
            "/srv/agents/bb",
            "/usr/lib/libc.so.6",
        ] {
            assert_eq!(holders(&index, outside), [] as [u64; 0], "{outside}");
        }
        index.remove(1, Path::new("/home/a/wt"));
        assert_eq!(holders(&index, "/home/a/wt/x"), [4]);
        index.remove(4, Path::new("/home/a/wt"));
        assert_eq!(holders(&index, "/home/a/wt/x"), [] as [u64; 0]);
        assert_eq!(holders(&index, "/home/a/wt/nested"), [3]);
    }

    #[test]
    fn holding_is_what_policy_path_under_says_it_is() {
        let worktrees = ["/w/a", "/w/a/", "/w//b", "/w/a/b", "rel/wt", "/x"];
        let paths = [
            "/w/a",
            "/w/a/",
            "/w/a/f",
            "/w/ab",
            "/w//b/c",
            "/w/b/c",
            "/w/a/b",
            "rel/wt/f",
            "/rel/wt/f",
            "/x",
            "/xy",
            "/",
            "",
        ];
        let mut index = WorktreeIndex::default();
        for (id, worktree) in worktrees.iter().enumerate() {
            index.add(id as u64, Path::new(worktree));
        }
        for path in paths {
            let expected: Vec<u64> = worktrees
                .iter()
                .enumerate()
                .filter(|(_, w)| crate::policy::path_under(path.as_bytes(), w.as_bytes()))
                .map(|(id, _)| id as u64)
                .collect();
            assert_eq!(holders(&index, path), expected, "{path}");
        }
    }

    #[test]
    fn a_claude_session_directory_is_held_by_the_agent_of_its_worktree() {
        let mut index = WorktreeIndex::default();
        index.add(1, Path::new("/home/a/wt"));
        index.add(2, Path::new("/home/a/wt2"));
        assert_eq!(
            holders(&index, "/root/.claude/projects/-home-a-wt/x.jsonl"),
            [1]
        );
        assert_eq!(holders(&index, "/root/.claude/projects/-home-a-wt"), [1]);
        assert_eq!(holders(&index, "/root/.claude/projects/-home-a-wt2/m"), [2]);
        assert_eq!(
            holders(&index, "/root/.claude/projects/-home-a-wt-x/m"),
            [] as [u64; 0]
        );
        index.remove(1, Path::new("/home/a/wt"));
        assert_eq!(
            holders(&index, "/root/.claude/projects/-home-a-wt/x.jsonl"),
            [] as [u64; 0]
        );
    }

    #[test]
    fn a_worktree_at_the_root_holds_nothing_for_other_agents() {
        let mut index = WorktreeIndex::default();
        index.add(1, Path::new("/"));
        index.add(2, Path::new(""));
        assert_eq!(holders(&index, "/usr/lib/libc.so.6"), [] as [u64; 0]);
        assert_eq!(
            holders(&index, "/root/.claude/projects/-/x"),
            [] as [u64; 0]
        );
        index.remove(1, Path::new("/"));
        index.add(3, Path::new("/home/a/wt"));
        assert_eq!(holders(&index, "/home/a/wt/x"), [3]);
    }
}
