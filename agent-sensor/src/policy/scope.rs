//! [`AgentScope`]: what one agent may do, compiled for the per-event questions of the
//! detectors.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    egress::EgressAllow,
    memo::PathMemo,
    model::{AgentFile, ProfileFile, Response, RuleId, Thresholds},
    path_under,
    pattern::{PatternSet, Roots},
    secret_files::SecretFiles,
};

/// The path lists of a profile, or the extra ones of an agent, compiled once per policy.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledLists {
    readable: PatternSet,
    writable: PatternSet,
    sensitive: PatternSet,
    startup: PatternSet,
    own_state: PatternSet,
}

impl CompiledLists {
    pub(crate) fn for_profile(profile: &ProfileFile) -> Result<Self, String> {
        Ok(Self {
            readable: PatternSet::compile(&profile.readable)?,
            writable: PatternSet::compile(&profile.writable)?,
            sensitive: PatternSet::compile(&profile.sensitive)?,
            startup: PatternSet::compile(&profile.startup)?,
            own_state: PatternSet::compile(&profile.own_state)?,
        })
    }

    pub(crate) fn for_agent(agent: &AgentFile) -> Result<Self, String> {
        Ok(Self {
            readable: PatternSet::compile(&agent.readable)?,
            writable: PatternSet::compile(&agent.writable)?,
            sensitive: PatternSet::compile(&agent.sensitive)?,
            ..Self::default()
        })
    }
}

/// What one agent may do, compiled for fast matching. Paths are canonical absolute byte
/// strings as events carry them (not necessarily UTF-8); a path that is not absolute (a pipe,
/// a socket) matches no pattern. Build one per agent with [`super::Policy::scope_for`] and
/// keep it: matching is cheap, building is not free.
#[derive(Debug, Clone)]
pub struct AgentScope {
    pub worktree: PathBuf,
    /// Home of the user the agent runs as (`~` in patterns).
    pub home: PathBuf,
    /// The profile in force (the identity's, or `default` when the identity names none the
    /// policy has).
    pub profile: String,
    pub thresholds: Thresholds,
    roots: Roots,
    profile_lists: Arc<CompiledLists>,
    agent_lists: Option<Arc<CompiledLists>>,
    egress: EgressAllow,
    responses: BTreeMap<RuleId, Response>,
    /// The sensitive files found on disk when the scope was built, by device and inode.
    secret_files: Arc<SecretFiles>,
    /// `is_sensitive`'s answers: asked at every file the agent opens, of the same files again
    /// and again in a build, and only the roots (kept in step below) change them.
    sensitive_answers: PathMemo<bool>,
}

/// Paths whose sensitivity an agent's scope remembers (tens of KiB per agent).
const SENSITIVE_ANSWERS_KEPT: usize = 256;

/// What [`AgentScope::new`] is made of (kept apart so the constructor stays readable).
pub(crate) struct ScopeParts {
    pub worktree: PathBuf,
    pub home: PathBuf,
    pub profile: String,
    pub tmp_dirs: Vec<Vec<u8>>,
    pub thresholds: Thresholds,
    pub profile_lists: Arc<CompiledLists>,
    pub agent_lists: Option<Arc<CompiledLists>>,
    pub egress: EgressAllow,
    pub responses: BTreeMap<RuleId, Response>,
}

impl AgentScope {
    pub(crate) fn new(parts: ScopeParts) -> Self {
        let roots = Roots {
            home: parts.home.as_os_str().as_encoded_bytes().to_vec(),
            worktree: parts.worktree.as_os_str().as_encoded_bytes().to_vec(),
            tmp: parts.tmp_dirs,
        };
        let mut scope = Self {
            worktree: parts.worktree,
            home: parts.home,
            profile: parts.profile,
            thresholds: parts.thresholds,
            roots,
            profile_lists: parts.profile_lists,
            agent_lists: parts.agent_lists,
            egress: parts.egress,
            responses: parts.responses,
            secret_files: Arc::default(),
            sensitive_answers: PathMemo::new(SENSITIVE_ANSWERS_KEPT),
        };
        let prefixes: Vec<(Vec<u8>, Option<usize>)> = scope
            .lists()
            .flat_map(|l| l.sensitive.literal_prefixes(&scope.roots))
            .collect();
        let found = SecretFiles::find(&prefixes, |path| scope.is_sensitive(path));
        scope.secret_files = Arc::new(found);
        scope
    }

    /// The sensitive name of the file with this device and inode (`stat`'s encoding), when the
    /// scope found it on disk: a read of it under any other name is a read of that secret.
    pub fn secret_named(&self, dev: u64, ino: u64) -> Option<&[u8]> {
        self.secret_files.name_of(dev, ino)
    }

    /// Adds a directory `{tmp}` stands for (the agent's `$TMPDIR`, once the daemon knows it).
    pub fn add_tmp_dir(&mut self, dir: &Path) {
        let dir = dir.as_os_str().as_encoded_bytes().to_vec();
        if dir.starts_with(b"/") && dir != b"/" && !self.roots.tmp.contains(&dir) {
            self.roots.tmp.push(dir);
            // `{tmp}` patterns reach further now.
            self.sensitive_answers = PathMemo::new(SENSITIVE_ANSWERS_KEPT);
        }
    }

    /// Inside the worktree (component-wise). An agent without a worktree has nothing inside.
    /// Where the agent may connect, compiled (for the in-kernel allowlist).
    pub fn egress(&self) -> &EgressAllow {
        &self.egress
    }

    pub fn in_worktree(&self, path: &[u8]) -> bool {
        !self.roots.worktree.is_empty() && path_under(path, &self.roots.worktree)
    }

    /// Inside the worktree, an allowed writable path or the profile's own state.
    pub fn may_write(&self, path: &[u8]) -> bool {
        self.in_worktree(path) || self.any_list(path, |l| &l.writable) || self.is_own_state(path)
    }

    /// Everything that is not sensitive is readable.
    pub fn may_read(&self, path: &[u8]) -> bool {
        !self.is_sensitive(path)
    }

    pub fn is_sensitive(&self, path: &[u8]) -> bool {
        self.sensitive_answers
            .get_or(path, || self.sensitive_pattern(path).is_some())
    }

    /// The `sensitive` pattern `path` matches, unless the agent may read it anyway (its
    /// `readable` exceptions, its own state).
    pub fn sensitive_pattern(&self, path: &[u8]) -> Option<&str> {
        if self.any_list(path, |l| &l.readable) || self.is_own_state(path) {
            return None;
        }
        self.first_in_lists(path, |l| &l.sensitive)
    }

    pub fn is_startup(&self, path: &[u8]) -> bool {
        self.startup_pattern(path).is_some()
    }

    /// The `startup` pattern `path` matches, unless it is the agent's own state (an agent
    /// rewriting its own settings is normal; another one doing it is persistence). Git hooks
    /// and project settings match inside the agent's worktree too: whether that counts is the
    /// detector's call ([`Self::in_worktree`]).
    pub fn startup_pattern(&self, path: &[u8]) -> Option<&str> {
        if self.is_own_state(path) {
            return None;
        }
        self.first_in_lists(path, |l| &l.startup)
    }

    /// Whether startup files the policy names lie below directory `dir` (what a mount over it
    /// shadows): a `startup` pattern whose literal part is inside `dir`, or is `dir` with
    /// matches below it. Not cached: mounts are rare.
    pub fn startup_below(&self, dir: &[u8]) -> bool {
        let dir = dir.strip_suffix(b"/").unwrap_or(dir);
        self.lists()
            .flat_map(|l| l.startup.literal_prefixes(&self.roots))
            .any(|(prefix, depth)| {
                let inside = prefix.len() > dir.len()
                    && prefix.starts_with(dir)
                    && prefix[dir.len()] == b'/';
                (inside || (prefix == dir && depth != Some(0))) && !self.is_own_state(&prefix)
            })
    }

    /// The profile's own state (`own_state`): its configuration and credential store.
    pub fn is_own_state(&self, path: &[u8]) -> bool {
        self.profile_lists.own_state.matches(path, &self.roots)
    }

    /// Whether a connection or send to `ip:port` is allowed; `dns_name` is the name the agent
    /// resolved `ip` from, if any.
    pub fn egress_allowed(&self, ip: IpAddr, port: u16, dns_name: Option<&[u8]>) -> bool {
        self.egress.allows(ip, port, dns_name)
    }

    /// Whether a resolved name is on the egress list, whatever the port.
    pub fn host_allowed(&self, dns_name: &[u8]) -> bool {
        self.egress.host_allowed(dns_name)
    }

    /// The response to `id` for this agent: its own, else its profile's, else the rule's.
    pub fn response(&self, id: RuleId) -> Response {
        self.responses.get(&id).copied().unwrap_or(Response::Alert)
    }

    fn lists(&self) -> impl Iterator<Item = &CompiledLists> {
        std::iter::once(self.profile_lists.as_ref()).chain(self.agent_lists.as_deref())
    }

    fn any_list(&self, path: &[u8], list: impl Fn(&CompiledLists) -> &PatternSet) -> bool {
        self.lists().any(|l| {
            let set = list(l);
            !set.is_empty() && set.matches(path, &self.roots)
        })
    }

    fn first_in_lists(
        &self,
        path: &[u8],
        list: impl Fn(&CompiledLists) -> &PatternSet,
    ) -> Option<&str> {
        self.lists()
            .find_map(|l| list(l).matching(path, &self.roots))
    }
}
