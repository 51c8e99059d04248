//! Alerts as JSON lines: one object per alert, with the rule id, severity, what was done, and
//! the evidence events.

use std::io::Write;

use serde_json::{json, Value};

use super::ocsf::AlertFormat;
use crate::{
    detect::Finding,
    events::Clock,
    policy::{Mode, Response},
};

/// What the sensor did (or, in monitor mode, would have done) about a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub response: Response,
    pub mode: Mode,
    /// "reported", "frozen", "killed", "denied", "would freeze", "failed: …".
    pub outcome: String,
}

/// One alert, ready to be written.
#[derive(Debug, Clone)]
pub struct Alert {
    pub agent: String,
    pub agent_id: u64,
    pub pid: u32,
    pub exe: Option<String>,
    pub finding: Finding,
    pub action: Action,
}

impl Alert {
    pub fn ktime_ns(&self) -> u64 {
        self.finding
            .evidence
            .last()
            .map(|e| e.ktime_ns)
            .unwrap_or_else(Clock::now_ktime_ns)
    }

    pub fn to_json(&self, clock: &Clock) -> Value {
        let f = &self.finding;
        json!({
            "ts": clock.rfc3339(self.ktime_ns()),
            "agent": self.agent,
            "agent_id": self.agent_id,
            "rule": f.rule.as_str(),
            "severity": f.severity.as_str(),
            "summary": f.summary,
            "score": f.score,
            "pid": self.pid,
            "exe": self.exe,
            "action": {
                "response": match self.action.response {
                    Response::Alert => "alert",
                    Response::Freeze => "freeze",
                    Response::Kill => "kill",
                    Response::Deny => "deny",
                },
                "mode": self.action.mode.name(),
                "outcome": self.action.outcome,
            },
            "evidence": f.evidence.iter().map(|e| e.to_json(clock)).collect::<Vec<_>>(),
        })
    }
}

/// Writes alerts as JSON lines in the chosen format, flushing each (alerts are rare and must
/// not sit in a buffer).
pub struct AlertWriter {
    out: Box<dyn Write + Send>,
    format: AlertFormat,
}

impl AlertWriter {
    pub fn new(out: Box<dyn Write + Send>, format: AlertFormat) -> Self {
        Self { out, format }
    }

    pub fn write(&mut self, alert: &Alert, clock: &Clock) -> std::io::Result<()> {
        self.out.write_all(&self.format.line(alert, clock))?;
        self.out.flush()
    }
}
