//! Policy: loading and validating the TOML file, the built-in default, and the per-agent
//! [`AgentScope`] the detectors consult.
//!
//! A user file is laid over the built-in policy (`default.toml`, whose header documents the
//! format) key by key; profiles are then resolved along `extends`; every path list is
//! compiled once. [`check`] reports every error with its line and key path;
//! [`Policy::from_toml_str`] the first.

mod egress;
mod load;
mod locate;
mod memo;
mod merge;
pub mod model;
mod pattern;
mod scope;
mod secret_files;
mod validate;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

pub use model::*;
pub use scope::AgentScope;
use scope::{CompiledLists, ScopeParts};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax, schema or semantic error; the message starts with the key path. Line 0: the
    /// error is not in the file checked (it came from the built-in policy).
    #[error("{origin}:{line}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        message: String,
    },
}

/// Parses `text` (named `origin` in messages), lays it over the built-in policy and validates
/// the result, reporting every error found (in line order), not only the first.
pub fn check(text: &str, origin: &str) -> Result<Policy, Vec<PolicyError>> {
    load::check(text, origin)
}

/// The validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Complete: the user file over the built-in one, profiles holding what they inherit.
    pub file: PolicyFile,
    compiled: Arc<CompiledPolicy>,
}

/// Path lists compiled once per policy, shared by every [`AgentScope`].
#[derive(Debug, Default)]
struct CompiledPolicy {
    profiles: BTreeMap<String, Arc<CompiledLists>>,
    agents: BTreeMap<String, Arc<CompiledLists>>,
    tmp_dirs: Vec<Vec<u8>>,
}

/// Who an agent is, as far as path patterns are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub name: String,
    pub profile: String,
    pub worktree: PathBuf,
    /// Home directory of the user the agent runs as (`~` in patterns).
    pub home: PathBuf,
}

impl Policy {
    /// The built-in default policy (useful on day one).
    pub fn builtin() -> Self {
        Self::from_toml_str(load::BUILTIN_TEXT, "built-in policy")
            .expect("the built-in policy is valid (checked by a unit test)")
    }

    /// The text of the built-in policy (to print, or to start a file from).
    pub fn builtin_text() -> &'static str {
        load::BUILTIN_TEXT
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Self::check_file(path).map_err(|mut errors| errors.remove(0))
    }

    /// Like [`Self::load`], with every error (for `agent-sensor check-config`).
    pub fn check_file(path: &Path) -> Result<Self, Vec<PolicyError>> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            vec![PolicyError::Read {
                path: path.to_path_buf(),
                source,
            }]
        })?;
        check(&text, &path.display().to_string())
    }

    /// Parses and validates policy text. Tables and keys absent from the text keep the
    /// built-in defaults. Returns the first error; [`check`] returns all.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, PolicyError> {
        check(text, origin).map_err(|mut errors| errors.remove(0))
    }

    /// Compiles a complete, validated file.
    fn compile(file: PolicyFile) -> Result<Self, String> {
        let profiles = file
            .profiles
            .iter()
            .map(|(name, p)| Ok((name.clone(), Arc::new(CompiledLists::for_profile(p)?))))
            .collect::<Result<_, String>>()?;
        let agents = file
            .agents
            .iter()
            .map(|(name, a)| Ok((name.clone(), Arc::new(CompiledLists::for_agent(a)?))))
            .collect::<Result<_, String>>()?;
        let tmp_dirs = file
            .paths
            .tmp
            .iter()
            .map(|d| d.as_bytes().to_vec())
            .collect();
        if !file.profiles.contains_key(merge::DEFAULT_PROFILE) {
            return Err("there is no default profile".into());
        }
        let compiled = CompiledPolicy {
            profiles,
            agents,
            tmp_dirs,
        };
        Ok(Self {
            file,
            compiled: Arc::new(compiled),
        })
    }

    pub fn mode(&self) -> Mode {
        self.file.sensor.mode
    }

    /// The settings of a rule (every rule has some: absent ones are defaults).
    pub fn rule(&self, id: RuleId) -> RuleConfig {
        self.file.rules.get(&id).cloned().unwrap_or(RuleConfig {
            enabled: true,
            severity: Severity::Medium,
            response: Response::Alert,
        })
    }

    /// The response to `id` for an agent of `profile` (profile overrides, then the rule's).
    /// [`AgentScope::response`] also applies the agent's own overrides.
    pub fn response(&self, id: RuleId, profile: &str) -> Response {
        self.file
            .profiles
            .get(profile)
            .and_then(|p| p.responses.get(&id).copied())
            .unwrap_or_else(|| self.rule(id).response)
    }

    /// The profile of a process discovered by executable name (`comm`), if the name is one of
    /// `[discovery] executables`.
    pub fn discovered_profile(&self, executable: &[u8]) -> Option<&str> {
        let discovery = &self.file.discovery;
        let name = discovery
            .executables
            .iter()
            .find(|e| e.as_bytes() == executable)?;
        Some(discovery.profiles.get(name).unwrap_or(&discovery.profile))
    }

    /// Who agent `name` is: its `[agents.<name>]` profile and worktree where the policy gives
    /// them (`~` expanded to `home`), else `profile` (from discovery, say) and `worktree` (its
    /// start directory, say).
    pub fn identity(
        &self,
        name: &str,
        home: &Path,
        profile: &str,
        worktree: &Path,
    ) -> AgentIdentity {
        let configured = self.file.agents.get(name);
        let profile = configured
            .and_then(|a| a.profile.clone())
            .unwrap_or_else(|| profile.to_string());
        let worktree = configured
            .and_then(|a| a.worktree.as_deref())
            .map(|w| expand_home(w, home))
            .unwrap_or_else(|| worktree.to_path_buf());
        AgentIdentity {
            name: name.to_string(),
            profile,
            worktree,
            home: home.to_path_buf(),
        }
    }

    /// Compiles what one agent may do: its profile (`default` if the policy has no profile of
    /// that name) plus its `[agents.<name>]` additions.
    pub fn scope_for(&self, agent: &AgentIdentity) -> AgentScope {
        let profile_name = match self.file.profiles.contains_key(&agent.profile) {
            true => agent.profile.as_str(),
            false => merge::DEFAULT_PROFILE,
        };
        let profile = &self.file.profiles[profile_name];
        let agent_file = self.file.agents.get(&agent.name);
        let mut thresholds = profile.thresholds.clone().unwrap_or_default();
        if let Some(overrides) = agent_file.and_then(|a| a.thresholds.as_ref()) {
            thresholds = overrides.apply_to(&thresholds);
        }
        let agent_egress = agent_file.and_then(|a| a.egress.as_ref());
        let egress = egress::EgressAllow::compile(&profile.egress, agent_egress)
            .expect("egress lists are validated at load");
        AgentScope::new(ScopeParts {
            worktree: agent.worktree.clone(),
            home: agent.home.clone(),
            profile: profile_name.to_string(),
            tmp_dirs: self.compiled.tmp_dirs.clone(),
            thresholds,
            profile_lists: self.compiled.profiles[profile_name].clone(),
            agent_lists: self.compiled.agents.get(&agent.name).cloned(),
            egress,
            responses: self.responses(profile_name, agent_file),
        })
    }

    /// Every rule's response for an agent: its own, else its profile's, else the rule's.
    fn responses(&self, profile: &str, agent: Option<&AgentFile>) -> BTreeMap<RuleId, Response> {
        RuleId::ALL
            .into_iter()
            .map(|id| {
                let own = agent.and_then(|a| a.responses.get(&id).copied());
                (id, own.unwrap_or_else(|| self.response(id, profile)))
            })
            .collect()
    }
}

/// `~` or `~/x` in a configured path, under `home`.
fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix('~') {
        Some(rest) => home.join(rest.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

/// `path` is `dir` or below it (component-wise, not by string prefix).
pub fn path_under(path: &[u8], dir: &[u8]) -> bool {
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/' || dir.is_empty())
}

/// The process a `/proc/<pid>/…` path belongs to (`/proc/self` is resolved by the kernel
/// before events see it). The `sensitive` list holds `/proc/*/environ` and `/proc/*/mem`:
/// the detector compares this pid with the agent's own processes, which may read their own.
pub fn proc_pid_of(path: &[u8]) -> Option<u32> {
    let rest = path.strip_prefix(b"/proc/")?;
    let pid = rest.split(|b| *b == b'/').next()?;
    if pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}
