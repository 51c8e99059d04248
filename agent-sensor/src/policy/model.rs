//! The policy as the daemon uses it: what agents are, what each may do, how each rule responds.
//!
//! The TOML file maps onto [`PolicyFile`] (every table optional, unknown keys rejected); the
//! built-in default is such a file too (`policy/default.toml`). A user file is laid over the
//! built-in one key by key and profiles are resolved along `extends` before the result is
//! deserialized here, so a [`PolicyFile`] inside a [`super::Policy`] is complete: every rule
//! listed, every profile holding what it inherited.

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
    /// The rules whose response may be `deny` (refusing a connection or send is what the
    /// sensor can do synchronously; for the other rules the act has already happened).
    pub const DENIABLE: [RuleId; 2] = [RuleId::UnallowedEgress, RuleId::SensitiveThenEgress];

    pub fn parse(text: &str) -> Option<RuleId> {
        Self::ALL.into_iter().find(|id| id.as_str() == text)
    }

    pub fn may_deny(self) -> bool {
        Self::DENIABLE.contains(&self)
    }

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

impl Response {
    pub const fn as_str(self) -> &'static str {
        match self {
            Response::Alert => "alert",
            Response::Freeze => "freeze",
            Response::Kill => "kill",
            Response::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Monitor,
    Enforce,
}

impl Mode {
    /// As the policy file and the log name it.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        }
    }
}

/// `[rules."<rule id>"]`: per-rule settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A user file may leave it out: the built-in policy lists every rule, so the built-in
    /// severity is kept (the serde default only serves checking a user file on its own).
    #[serde(default = "medium")]
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

fn medium() -> Severity {
    Severity::Medium
}

/// Where an agent may talk to. Host names are matched against the names the agent itself
/// resolved (the DNS answers the sensor saw), so an IP reached without a lookup matches only
/// `cidrs`. Loopback is always allowed. DNS queries themselves are not egress: they are judged
/// by `exfil.dns_tunnel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// Exact names or `*.suffix` patterns (`*.x.com` matches `a.x.com` and `a.b.x.com`, not
    /// `x.com` nor `evilx.com`). Case-insensitive.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub cidrs: Vec<ipnet::IpNet>,
    /// Allowed destination ports (empty: any port of an allowed host or CIDR). An agent's
    /// ports add to its profile's.
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
    /// exfil.dns_tunnel: bytes of distinct names (left of the domain) queried under one
    /// domain within `dns_volume_window_secs`: a tunnel slow enough to stay under the burst
    /// count still has to send its data.
    pub dns_volume_bytes: usize,
    pub dns_volume_window_secs: u64,
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
            dns_volume_bytes: 4096,
            dns_volume_window_secs: 600,
            learning_secs: 3600,
            novelty_min_score: 50,
        }
    }
}

/// `[agents.<name>].thresholds`: the keys given replace the profile's, the others are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdOverrides {
    pub exfil_window_secs: Option<u64>,
    pub dns_label_max: Option<usize>,
    pub dns_entropy_bits: Option<f64>,
    pub dns_entropy_min_len: Option<usize>,
    pub dns_burst_unique: Option<usize>,
    pub dns_burst_window_secs: Option<u64>,
    pub dns_volume_bytes: Option<usize>,
    pub dns_volume_window_secs: Option<u64>,
    pub learning_secs: Option<u64>,
    pub novelty_min_score: Option<u32>,
}

impl ThresholdOverrides {
    pub fn apply_to(&self, base: &Thresholds) -> Thresholds {
        Thresholds {
            exfil_window_secs: self.exfil_window_secs.unwrap_or(base.exfil_window_secs),
            dns_label_max: self.dns_label_max.unwrap_or(base.dns_label_max),
            dns_entropy_bits: self.dns_entropy_bits.unwrap_or(base.dns_entropy_bits),
            dns_entropy_min_len: self.dns_entropy_min_len.unwrap_or(base.dns_entropy_min_len),
            dns_burst_unique: self.dns_burst_unique.unwrap_or(base.dns_burst_unique),
            dns_burst_window_secs: self
                .dns_burst_window_secs
                .unwrap_or(base.dns_burst_window_secs),
            dns_volume_bytes: self.dns_volume_bytes.unwrap_or(base.dns_volume_bytes),
            dns_volume_window_secs: self
                .dns_volume_window_secs
                .unwrap_or(base.dns_volume_window_secs),
            learning_secs: self.learning_secs.unwrap_or(base.learning_secs),
            novelty_min_score: self.novelty_min_score.unwrap_or(base.novelty_min_score),
        }
    }
}

/// `[profiles.<name>]`: what agents of this profile may do. Path patterns are globs rooted at
/// `/`, `~` (the agent user's home), `{worktree}` (the agent's worktree) or `{tmp}` (each temp
/// dir of `[paths] tmp`), or starting with `**` (anywhere); `!pattern` excludes what it matches
/// from the list, whatever the order.
///
/// A profile `extends` another (every profile but `default` extends `default` unless it says
/// otherwise; `extends = ""` starts from nothing): lists are appended to the parent's, tables
/// (`egress`, `thresholds`, `responses`) merged key by key, the child winning.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileFile {
    /// The profile this one adds to (see above); after loading, already applied.
    pub extends: Option<String>,
    /// Exceptions to `sensitive`: everything that is not sensitive is readable anyway.
    pub readable: Vec<String>,
    /// Writable besides the worktree (temp dirs, build caches…).
    pub writable: Vec<String>,
    /// Credentials and secrets: reading one is `credential.sensitive_read`.
    pub sensitive: Vec<String>,
    /// Shell rc files, crontabs, units, hooks: writing one is `persistence.startup_write`.
    pub startup: Vec<String>,
    /// The agent's own state and credential store (`~/.claude/**` for Claude Code): writable,
    /// and neither sensitive nor a startup file *for this profile*; another agent touching
    /// it is still caught by the `sensitive` and `startup` lists.
    pub own_state: Vec<String>,
    pub egress: Egress,
    pub thresholds: Option<Thresholds>,
    /// Per-rule response overrides for this profile.
    pub responses: BTreeMap<RuleId, Response>,
}

/// `[agents.<name>]`: settings for one named agent, added to its profile's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentFile {
    pub profile: Option<String>,
    /// Absolute, or under `~`.
    pub worktree: Option<String>,
    pub readable: Vec<String>,
    pub writable: Vec<String>,
    pub sensitive: Vec<String>,
    pub egress: Option<Egress>,
    pub thresholds: Option<ThresholdOverrides>,
    pub responses: BTreeMap<RuleId, Response>,
}

/// `[discovery]`: processes that become agents without `agent-sensor exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// Executable names (the kernel's comm after exec, at most 15 bytes) of known agents.
    pub executables: Vec<String>,
    /// Honour `AGENT_SENSOR_AGENT=<name>` in a process's environment.
    pub env_marker: bool,
    /// Profile of discovered agents…
    pub profile: String,
    /// …unless their executable has its own here (`claude = "claude"`).
    pub profiles: BTreeMap<String, String>,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            executables: Vec::new(),
            env_marker: true,
            profile: "default".into(),
            profiles: BTreeMap::new(),
        }
    }
}

/// `[paths]`: what the placeholders in path patterns stand for, besides the agent's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsFile {
    /// The directories `{tmp}` stands for (the daemon may add an agent's `$TMPDIR`).
    pub tmp: Vec<String>,
}

impl Default for PathsFile {
    fn default() -> Self {
        Self {
            tmp: vec!["/tmp".into(), "/var/tmp".into(), "/dev/shm".into()],
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

/// `[enforcement]`: what the kernel itself stops in `mode = "enforce"`, for every agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enforcement {
    /// Files whose opening kills the opener before open() returns (absolute paths; matched by
    /// device and inode, so every name of the file counts). Each must exist when a daemon
    /// starts in enforce mode, which refuses to start otherwise; a file made or replaced later
    /// is covered from the next start (a reload does not look them up again).
    pub kill_on_access: Vec<String>,
    /// Executables an agent is killed for running, before their first instruction (absolute
    /// paths, looked up like `kill_on_access`).
    pub forbidden_exec: Vec<String>,
    /// DNS resolvers besides those in /etc/resolv.conf: port 53 to them is not egress.
    pub resolvers: Vec<std::net::IpAddr>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyFile {
    pub sensor: SensorFile,
    pub discovery: Discovery,
    pub paths: PathsFile,
    pub rules: BTreeMap<RuleId, RuleConfig>,
    pub profiles: BTreeMap<String, ProfileFile>,
    pub agents: BTreeMap<String, AgentFile>,
    pub enforcement: Enforcement,
}
