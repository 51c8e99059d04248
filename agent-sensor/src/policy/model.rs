//! The policy as the daemon uses it: what agents are, what each may do, how each rule responds.
//!
//! The TOML file maps onto [`PolicyFile`] (every table optional, unknown keys rejected); the
//! built-in default is such a file too (`policy/default.toml`). [`Policy`] is the validated,
//! resolved form the detectors read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Rule ids: stable strings every alert carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RuleId {
    #[serde(rename = "isolation.write_outside_worktree")]
    WriteOutsideWorktree,
    #[serde(rename = "isolation.foreign_worktree")]
    ForeignWorktree,
    #[serde(rename = "credential.sensitive_read")]
    SensitiveRead,
    #[serde(rename = "exfil.sensitive_then_egress")]
    SensitiveThenEgress,
    #[serde(rename = "exfil.unallowed_egress")]
    UnallowedEgress,
    #[serde(rename = "exfil.dns_tunnel")]
    DnsTunnel,
    #[serde(rename = "exec.reverse_shell")]
    ReverseShell,
    #[serde(rename = "exec.suspicious_tool")]
    SuspiciousTool,
    #[serde(rename = "persistence.startup_write")]
    StartupWrite,
    #[serde(rename = "privilege.escalation")]
    PrivilegeEscalation,
    #[serde(rename = "tamper.sensor")]
    TamperSensor,
    #[serde(rename = "anomaly.novel_behavior")]
    NovelBehavior,
}

impl RuleId {
    pub const ALL: [RuleId; 12] = [
        RuleId::WriteOutsideWorktree,
        RuleId::ForeignWorktree,
        RuleId::SensitiveRead,
        RuleId::SensitiveThenEgress,
        RuleId::UnallowedEgress,
        RuleId::DnsTunnel,
        RuleId::ReverseShell,
        RuleId::SuspiciousTool,
        RuleId::StartupWrite,
        RuleId::PrivilegeEscalation,
        RuleId::TamperSensor,
        RuleId::NovelBehavior,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RuleId::WriteOutsideWorktree => "isolation.write_outside_worktree",
            RuleId::ForeignWorktree => "isolation.foreign_worktree",
            RuleId::SensitiveRead => "credential.sensitive_read",
            RuleId::SensitiveThenEgress => "exfil.sensitive_then_egress",
            RuleId::UnallowedEgress => "exfil.unallowed_egress",
            RuleId::DnsTunnel => "exfil.dns_tunnel",
            RuleId::ReverseShell => "exec.reverse_shell",
            RuleId::SuspiciousTool => "exec.suspicious_tool",
            RuleId::StartupWrite => "persistence.startup_write",
            RuleId::PrivilegeEscalation => "privilege.escalation",
            RuleId::TamperSensor => "tamper.sensor",
            RuleId::NovelBehavior => "anomaly.novel_behavior",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What the sensor does when a rule fires (enforced in `--mode enforce` only; in monitor mode
/// every response is reported as what *would* have been done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Alert,
    Freeze,
    Kill,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Monitor,
    Enforce,
}

/// `[rules."<rule id>"]`: per-rule settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub severity: Severity,
    #[serde(default = "alert")]
    pub response: Response,
}

fn yes() -> bool {
    true
}

fn alert() -> Response {
    Response::Alert
}

/// Where an agent may talk to. Host names are matched against the names the agent itself
/// resolved (the DNS answers the sensor saw), so an IP reached without a lookup matches only
/// `cidrs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// Exact names or `*.suffix` patterns.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub cidrs: Vec<ipnet::IpNet>,
    /// Allowed destination ports (empty: any port of an allowed host or CIDR).
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// Numbers the rules use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// exfil.sensitive_then_egress: seconds after a sensitive read during which an unallowed
    /// connection or send counts as exfiltration.
    pub exfil_window_secs: u64,
    /// exfil.dns_tunnel: longest allowed DNS label.
    pub dns_label_max: usize,
    /// exfil.dns_tunnel: Shannon entropy (bits per character) above which a label of at least
    /// `dns_entropy_min_len` characters looks encoded.
    pub dns_entropy_bits: f64,
    pub dns_entropy_min_len: usize,
    /// exfil.dns_tunnel: unique names under one domain within `dns_burst_window_secs`.
    pub dns_burst_unique: usize,
    pub dns_burst_window_secs: u64,
    /// anomaly.novel_behavior: how long a profile learns before novelty is reported.
    pub learning_secs: u64,
    /// anomaly.novel_behavior: minimum score (0–100) to alert.
    pub novelty_min_score: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            exfil_window_secs: 300,
            dns_label_max: 52,
            dns_entropy_bits: 3.8,
            dns_entropy_min_len: 24,
            dns_burst_unique: 40,
            dns_burst_window_secs: 10,
            learning_secs: 3600,
            novelty_min_score: 50,
        }
    }
}

/// `[profiles.<name>]`: what agents of this profile may do. Path patterns are globs;
/// `~` is the agent user's home, `{worktree}` the agent's worktree, `{tmp}` its temp dirs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileFile {
    /// Readable besides the worktree and the defaults.
    pub readable: Vec<String>,
    /// Writable besides the worktree (temp dirs, build caches…).
    pub writable: Vec<String>,
    /// Credentials and secrets: reading one is `credential.sensitive_read`.
    pub sensitive: Vec<String>,
    /// Shell rc files, crontabs, units, hooks: writing one is `persistence.startup_write`.
    pub startup: Vec<String>,
    pub egress: Egress,
    pub thresholds: Option<Thresholds>,
    /// Per-rule response overrides for this profile.
    pub responses: BTreeMap<RuleId, Response>,
}

/// `[agents.<name>]`: settings for one named agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentFile {
    pub profile: Option<String>,
    pub worktree: Option<String>,
    pub readable: Vec<String>,
    pub writable: Vec<String>,
    pub egress: Option<Egress>,
}

/// `[discovery]`: processes that become agents without `agent-sensor exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// Executable names (the kernel's comm after exec, at most 15 bytes) of known agents.
    pub executables: Vec<String>,
    /// Honour `AGENT_SENSOR_AGENT=<name>` in a process's environment.
    pub env_marker: bool,
    /// Profile of discovered agents.
    pub profile: String,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            executables: Vec::new(),
            env_marker: true,
            profile: "default".into(),
        }
    }
}

/// `[sensor]`: the daemon itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorFile {
    pub mode: Mode,
    pub state_dir: String,
    /// Events kept per agent for incident bundles.
    pub recent_events: usize,
}

impl Default for SensorFile {
    fn default() -> Self {
        Self {
            mode: Mode::Monitor,
            state_dir: "/var/lib/agent-sensor".into(),
            recent_events: 512,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyFile {
    pub sensor: SensorFile,
    pub discovery: Discovery,
    pub rules: BTreeMap<RuleId, RuleConfig>,
    pub profiles: BTreeMap<String, ProfileFile>,
    pub agents: BTreeMap<String, AgentFile>,
}
