//! The daemon's control socket: a root-only Unix socket (mode 0600, peer uid checked) that
//! speaks one JSON object per line each way. `agent-sensor exec` registers agents through it;
//! `agents`, `thaw` and `kill` query and steer the daemon.

pub mod client;
pub mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::agents::registry::AgentSummary;

/// Default place of the socket.
pub const DEFAULT_SOCKET: &str = "/run/agent-sensor/control.sock";

/// Longest request line accepted (a hostile client cannot make the daemon buffer more).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Create an agent and its cgroup; the caller then moves itself into the cgroup.
    Register {
        agent: String,
        worktree: PathBuf,
        profile: Option<String>,
    },
    /// Succeeds once the kernel tracks `pid` as `agent_id`.
    Confirm { agent_id: u64, pid: u32 },
    /// The caller gave up before the agent's command ran (the kernel never tracked it as
    /// this agent): forget the registration.
    Abandon { agent_id: u64 },
    /// Every agent the daemon knows.
    // A struct variant, not a unit one: serde enforces `deny_unknown_fields` only on fields,
    // and `{"op":"agents","x":1}` must be refused like every other op with a stray field.
    Agents {},
    /// Let a frozen agent run on.
    Thaw { agent: String },
    /// Kill every process of an agent.
    Kill { agent: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply {
    Registered { agent_id: u64, cgroup: PathBuf },
    Tracked,
    Agents { agents: Vec<AgentSummary> },
    Done { message: String },
    Error { message: String },
}
