//! Policy: loading and validating the TOML file, the built-in default, and the per-agent
//! [`AgentScope`] the detectors consult.

pub mod model;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

pub use model::*;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax or schema error; the message names the line and the key.
    #[error("{origin}:{line}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        message: String,
    },
}

/// The validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub file: PolicyFile,
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
        Self::from_toml_str(include_str!("default.toml"), "built-in policy")
            .expect("the built-in policy is valid (checked by a unit test)")
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates policy text. Tables and keys absent from the text keep the
    /// built-in defaults where the default has them.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Invalid {
            origin: origin.to_string(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
            message: e.message().to_string(),
        })?;
        Ok(Self { file })
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
    pub fn response(&self, id: RuleId, profile: &str) -> Response {
        self.file
            .profiles
            .get(profile)
            .and_then(|p| p.responses.get(&id).copied())
            .unwrap_or_else(|| self.rule(id).response)
    }

    /// Compiles what one agent may do.
    pub fn scope_for(&self, agent: &AgentIdentity) -> AgentScope {
        let profile = self
            .file
            .profiles
            .get(&agent.profile)
            .cloned()
            .unwrap_or_default();
        AgentScope {
            worktree: agent.worktree.clone(),
            thresholds: profile.thresholds.clone().unwrap_or_default(),
        }
    }
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// What one agent may do, compiled for fast matching. Paths are canonical absolute byte
/// strings as events carry them.
#[derive(Debug, Clone)]
pub struct AgentScope {
    pub worktree: PathBuf,
    pub thresholds: Thresholds,
}

impl AgentScope {
    pub fn in_worktree(&self, path: &[u8]) -> bool {
        path_under(path, self.worktree.as_os_str().as_encoded_bytes())
    }

    /// Inside the worktree or an allowed writable path.
    pub fn may_write(&self, path: &[u8]) -> bool {
        self.in_worktree(path)
    }

    pub fn may_read(&self, _path: &[u8]) -> bool {
        true
    }

    pub fn is_sensitive(&self, _path: &[u8]) -> bool {
        false
    }

    pub fn is_startup(&self, _path: &[u8]) -> bool {
        false
    }

    /// Whether a connection or send to `ip:port` is allowed; `dns_name` is the name the agent
    /// resolved `ip` from, if any.
    pub fn egress_allowed(&self, ip: IpAddr, _port: u16, _dns_name: Option<&[u8]>) -> bool {
        ip.is_loopback()
    }
}

/// `path` is `dir` or below it (component-wise, not by string prefix).
pub fn path_under(path: &[u8], dir: &[u8]) -> bool {
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/' || dir.is_empty())
}
