//! Prometheus metrics of the sensor: one [`Metrics`] owns its own registry (nothing global),
//! typed handles, and the methods the daemon calls where things happen. `/metrics` serves
//! [`Metrics::encode`] (see `export::http`).
//!
//! Label values come from closed sets only (event kinds, rule ids, severities, responses,
//! outcome classes, drop reasons, hook families, agent states): anything else is counted
//! under `"other"`, so a bug or a hostile input can never grow the number of series. The one
//! open-ended label, `agent`, exists only when a cap is configured
//! ([`MetricsConfig::agent_label_cap`]); past the cap agents are counted as `"other"`, and
//! [`Metrics::forget_agent`] removes an agent's series when it goes away. No metric carries a
//! pid, a path or an address.

use std::{
    collections::BTreeSet,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use agent_sensor_common::{drop_slot, filter_slot, EventKind};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::alerts::{Action, Alert};
use crate::policy::{Mode, Response, RuleId};

/// `Content-Type` of [`Metrics::encode`]'s output (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label value every closed set falls back to.
pub const OTHER: &str = "other";

/// Why events were lost (or, for `truncated`, cut short) before analysis.
pub const DROP_REASONS: [&str; 7] = [
    // The ring buffer had no room for a record (kernel, per kind).
    "ring_buffer_full",
    // A record arrived but could not be decoded.
    "decode_error",
    // A syscall of a tracked task could not be stashed between entry and exit (map full).
    "inflight_map_full",
    // A new task of an agent could not be tracked (tracking map full).
    "tracking_map_full",
    // An agent socket's bytes could not be counted (socket map full).
    "socket_map_full",
    // Delivered, with a string cut to its bound (the event was analysed, partly blind).
    "truncated",
    OTHER,
];

/// Severities, lowest first.
pub const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

/// What the sensor does about a finding (`Response`).
pub const ACTIONS: [&str; 4] = ["alert", "freeze", "kill", "deny"];

/// Outcome classes of a response (see [`outcome_class`]).
pub const OUTCOMES: [&str; 6] = [
    // Response `alert`: the finding was reported, nothing else to do.
    "reported",
    // Monitor mode: the response would have been carried out.
    "simulated",
    // Enforce mode: carried out (frozen, killed, denied in the kernel).
    "succeeded",
    // Enforce mode: the agent was already frozen or killed.
    "already_contained",
    // Enforce mode: carrying it out failed.
    "failed",
    OTHER,
];

/// Hook families programs are attached through (the names `agent-sensor probe` prints).
pub const HOOK_FAMILIES: [&str; 11] = [
    "tracepoint",
    "raw_tracepoint",
    "tp_btf",
    "fentry",
    "kprobe",
    "uprobe",
    "lsm",
    "cgroup_sock_addr",
    "cgroup_sock",
    "cgroup_skb",
    OTHER,
];

/// States an agent is counted in (`agents::registry::AgentState`).
pub const AGENT_STATES: [&str; 4] = ["running", "frozen", "killed", "exited"];

/// Outcomes of one webhook delivery attempt.
pub const WEBHOOK_OUTCOMES: [&str; 3] = [
    // 2xx: removed from the spool.
    "delivered",
    // Connection error, timeout, 5xx, 401/403/408/429…: retried with backoff.
    "retried",
    // 400/413/415/422: the receiver will never take it; dropped from the spool.
    "rejected",
];

/// Detection and containment are sub-millisecond to seconds: 100 µs … 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Longest `agent` label value kept (longer names are cut).
const AGENT_LABEL_MAX: usize = 64;

/// Options of [`Metrics::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Agents that get their own `agent` label on `agent_sensor_agent_alerts_total` at once;
    /// beyond that alerts are counted under `agent="other"`. 0 (the default) does not
    /// register the metric at all.
    pub agent_label_cap: usize,
}

/// Agent counts by state, for [`Metrics::set_agents`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounts {
    pub running: u64,
    pub frozen: u64,
    pub killed: u64,
    pub exited: u64,
}

struct AgentAlerts {
    counter: IntCounterVec,
    /// `agent_sensor_agent_state{agent,state}`: 1 for the state the agent is in, 0 for the
    /// others, so a frozen agent waiting for a human shows by name.
    state: IntGaugeVec,
    cap: usize,
    /// Agents that have series now (never more than `cap`).
    labelled: Mutex<BTreeSet<String>>,
}

impl AgentAlerts {
    /// The label of `agent`: its own name while fewer than `cap` agents have one, else `None`.
    fn label(&self, agent: &str) -> Option<String> {
        let name = agent_label(agent);
        let mut labelled = self
            .labelled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if name != OTHER && (labelled.contains(&name) || labelled.len() < self.cap) {
            labelled.insert(name.clone());
            Some(name)
        } else {
            None
        }
    }
}

/// The sensor's metrics and the registry they are registered in.
pub struct Metrics {
    registry: Registry,
    /// One pre-made counter per event kind, in `EventKind::ALL` order: the hot path does no
    /// label hashing.
    events_by_kind: Vec<IntCounter>,
    events_other: IntCounter,
    events: IntCounterVec,
    dropped: IntCounterVec,
    filtered: IntCounterVec,
    alerts: IntCounterVec,
    responses: IntCounterVec,
    agents: IntGaugeVec,
    processes: IntGauge,
    detection_latency: Histogram,
    containment_latency: HistogramVec,
    programs: IntGaugeVec,
    webhook_deliveries: IntCounterVec,
    webhook_spool_dropped: IntCounter,
    webhook_spool_alerts: IntGauge,
    webhook_spool_bytes: IntGauge,
    agent_alerts: Option<AgentAlerts>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names and labels are fixed and unique");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
    )
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).expect("valid metric definition"),
    )
}

/// `value` if it is in `set`, else `"other"`.
fn closed(set: &'static [&'static str], value: &str) -> &'static str {
    set.iter().copied().find(|v| *v == value).unwrap_or(OTHER)
}

/// The label value of an event kind name (`"file.open"`…), `"other"` if unknown.
pub fn kind_label(kind: &str) -> &'static str {
    EventKind::ALL
        .iter()
        .map(|k| k.name())
        .find(|name| *name == kind)
        .unwrap_or(OTHER)
}

/// The label value of a rule id (`"exec.reverse_shell"`…), `"other"` if unknown.
pub fn rule_label(rule: &str) -> &'static str {
    RuleId::parse(rule).map(RuleId::as_str).unwrap_or(OTHER)
}

/// The drop reason of a slot of the kernel's `DROPS` array.
pub fn drop_slot_reason(slot: u32) -> &'static str {
    match slot {
        drop_slot::PENDING_FULL => "inflight_map_full",
        drop_slot::TRACKING_FULL => "tracking_map_full",
        drop_slot::SOCKET_MAP_FULL => "socket_map_full",
        s if s < drop_slot::FIRST_OTHER => "ring_buffer_full",
        _ => OTHER,
    }
}

/// The reason of a slot of the kernel's `FILTERED` array.
pub fn filter_slot_reason(slot: u32) -> &'static str {
    match slot {
        filter_slot::MISSING_PATH => "path_not_found",
        filter_slot::REPEAT => "repeat",
        _ => OTHER,
    }
}

/// Classifies the pipeline's free-text outcome of a response (`"reported"`, `"would
/// freeze"`, `"frozen in 812 µs"`, `"already killed"`, `"failed: …"`, `"denied in the
/// kernel…"`) into one of [`OUTCOMES`]. A value that already is a class is kept.
pub fn outcome_class(outcome: &str) -> &'static str {
    let text = outcome.trim();
    if let Some(class) = OUTCOMES.iter().copied().find(|c| *c == text) {
        return class;
    }
    if text.starts_with("would ") {
        "simulated"
    } else if text.starts_with("failed") || text.starts_with("not refused") {
        "failed"
    } else if text.starts_with("already ") {
        "already_contained"
    } else if ["frozen", "killed", "denied", "refused", "thawed"]
        .iter()
        .any(|done| text.starts_with(done))
    {
        "succeeded"
    } else {
        OTHER
    }
}

/// The outcome class of an alert's action (monitor mode is always `simulated` unless the
/// response is a plain alert).
pub fn action_outcome(action: &Action) -> &'static str {
    match (action.response, action.mode) {
        (Response::Alert, _) => "reported",
        (_, Mode::Monitor) => "simulated",
        (_, Mode::Enforce) => outcome_class(&action.outcome),
    }
}

/// An agent name as a label value: control characters replaced, at most 64 characters.
fn agent_label(agent: &str) -> String {
    agent
        .chars()
        .take(AGENT_LABEL_MAX)
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(MetricsConfig::default())
    }
}

impl Metrics {
    pub fn new(config: MetricsConfig) -> Self {
        let registry = Registry::new();

        let build_info = gauge_vec(
            &registry,
            "agent_sensor_build_info",
            "Build of the running sensor (always 1).",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let start_time = register(
            &registry,
            Gauge::new(
                "agent_sensor_start_time_seconds",
                "Time the sensor started, in seconds since the Unix epoch.",
            )
            .expect("valid metric definition"),
        );
        start_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
        );

        let events = counter_vec(
            &registry,
            "agent_sensor_events_total",
            "Events of tracked agents decoded from the kernel, by kind.",
            &["kind"],
        );
        let events_by_kind = EventKind::ALL
            .iter()
            .map(|k| events.with_label_values(&[k.name()]))
            .collect();
        let events_other = events.with_label_values(&[OTHER]);

        let dropped = counter_vec(
            &registry,
            "agent_sensor_events_dropped_total",
            "Events lost before analysis, by reason (truncated: delivered with a string cut to its bound).",
            &["reason"],
        );
        for reason in DROP_REASONS {
            dropped.with_label_values(&[reason]);
        }

        let filtered = counter_vec(
            &registry,
            "agent_sensor_events_filtered_total",
            "Calls of tracked agents the kernel counted and did not send, by reason (path_not_found: a file call that failed because its path named nothing, `run --report-missing-paths` sends them; repeat: an open the same process made the same way within `run --repeat-window-ms` of one that was sent).",
            &["reason"],
        );
        for slot in [filter_slot::MISSING_PATH, filter_slot::REPEAT] {
            filtered.with_label_values(&[filter_slot_reason(slot)]);
        }

        let alerts = counter_vec(
            &registry,
            "agent_sensor_alerts_total",
            "Alerts raised, by rule and severity.",
            &["rule", "severity"],
        );

        let responses = counter_vec(
            &registry,
            "agent_sensor_responses_total",
            "Responses to findings, by action (alert, freeze, kill, deny) and outcome.",
            &["action", "outcome"],
        );
        // The combinations that can happen, at 0 from the start (so that `increase()` sees
        // the first one, e.g. the first failed containment).
        responses.with_label_values(&["alert", "reported"]);
        for action in ["freeze", "kill", "deny"] {
            for outcome in ["simulated", "succeeded", "already_contained", "failed"] {
                responses.with_label_values(&[action, outcome]);
            }
        }

        let agents = gauge_vec(
            &registry,
            "agent_sensor_agents",
            "Agents the sensor knows about, by state.",
            &["state"],
        );
        for state in AGENT_STATES {
            agents.with_label_values(&[state]);
        }
        let processes = int_gauge(
            &registry,
            "agent_sensor_processes",
            "Live processes of tracked agents.",
        );

        let detection_latency = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "agent_sensor_detection_latency_seconds",
                    "Time from the kernel event that completed a finding to the alert being raised.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric definition"),
        );
        let containment_latency = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "agent_sensor_containment_latency_seconds",
                    "Time taken to freeze or kill an agent, by action.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["action"],
            )
            .expect("valid metric definition"),
        );

        let programs = gauge_vec(
            &registry,
            "agent_sensor_programs_attached",
            "eBPF programs attached, by hook family.",
            &["family"],
        );

        let webhook_deliveries = counter_vec(
            &registry,
            "agent_sensor_webhook_deliveries_total",
            "Webhook delivery attempts, by outcome (delivered, retried, rejected).",
            &["outcome"],
        );
        for outcome in WEBHOOK_OUTCOMES {
            webhook_deliveries.with_label_values(&[outcome]);
        }
        let webhook_spool_dropped = register(
            &registry,
            IntCounter::new(
                "agent_sensor_webhook_spool_dropped_total",
                "Alerts dropped from the webhook spool because it was full (oldest first).",
            )
            .expect("valid metric definition"),
        );
        let webhook_spool_alerts = int_gauge(
            &registry,
            "agent_sensor_webhook_spool_alerts",
            "Alerts waiting in the webhook spool.",
        );
        let webhook_spool_bytes = int_gauge(
            &registry,
            "agent_sensor_webhook_spool_bytes",
            "Bytes of alerts waiting in the webhook spool.",
        );

        let agent_alerts = (config.agent_label_cap > 0).then(|| AgentAlerts {
            counter: counter_vec(
                &registry,
                "agent_sensor_agent_alerts_total",
                "Alerts raised, by agent and rule (series of an agent are removed when it goes away; agents past the configured cap are counted as agent=\"other\").",
                &["agent", "rule"],
            ),
            state: gauge_vec(
                &registry,
                "agent_sensor_agent_state",
                "1 for the response state an agent is in now (running, frozen, killed, exited), 0 for the others (same agent cap as agent_sensor_agent_alerts_total; agents past it have no series).",
                &["agent", "state"],
            ),
            cap: config.agent_label_cap,
            labelled: Mutex::new(BTreeSet::new()),
        });

        Self {
            registry,
            events_by_kind,
            events_other,
            events,
            dropped,
            filtered,
            alerts,
            responses,
            agents,
            processes,
            detection_latency,
            containment_latency,
            programs,
            webhook_deliveries,
            webhook_spool_dropped,
            webhook_spool_alerts,
            webhook_spool_bytes,
            agent_alerts,
        }
    }

    /// The registry (to add collectors of other components, or gather).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Text exposition of every metric (serve with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding our own, valid metric families into a String cannot fail.
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }

    /// Same as [`Metrics::encode`], as bytes through the `Encoder` trait.
    pub fn encode_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }

    // ---- events ----------------------------------------------------------------------------

    /// One decoded event of this kind (by name, e.g. `"file.open"`).
    pub fn event(&self, kind: &str) {
        self.events.with_label_values(&[kind_label(kind)]).inc();
    }

    /// One decoded event of this kind (no label lookup).
    pub fn event_kind(&self, kind: EventKind) {
        match EventKind::ALL.iter().position(|k| *k == kind) {
            Some(i) => self.events_by_kind[i].inc(),
            None => self.events_other.inc(),
        }
    }

    /// `n` events lost for `reason` (one of [`DROP_REASONS`]; others count as `"other"`).
    pub fn dropped(&self, reason: &str, n: u64) {
        if n > 0 {
            self.dropped
                .with_label_values(&[closed(&DROP_REASONS, reason)])
                .inc_by(n);
        }
    }

    /// `n` new losses in one slot of the kernel's `DROPS` array (the increase since the last
    /// read, as the daemon's `report_kernel_counters` computes it).
    pub fn kernel_drops(&self, slot: u32, n: u64) {
        self.dropped(drop_slot_reason(slot), n);
    }

    /// `n` new calls counted in one slot of the kernel's `FILTERED` array.
    pub fn kernel_filtered(&self, slot: u32, n: u64) {
        if n > 0 {
            self.filtered
                .with_label_values(&[filter_slot_reason(slot)])
                .inc_by(n);
        }
    }

    // ---- alerts and responses --------------------------------------------------------------

    /// Creates the series of a rule at 0 (call at start for every enabled rule with its
    /// configured severity), so that `increase()` sees the first alert.
    pub fn declare_rule(&self, rule: &str, severity: &str) {
        self.alerts
            .with_label_values(&[rule_label(rule), closed(&SEVERITIES, severity)]);
    }

    /// One alert of `rule` with `severity`.
    pub fn alert(&self, rule: &str, severity: &str) {
        self.alerts
            .with_label_values(&[rule_label(rule), closed(&SEVERITIES, severity)])
            .inc();
    }

    /// One response: `action` one of [`ACTIONS`]; `outcome` a class of [`OUTCOMES`] or the
    /// pipeline's free-text outcome (classified by [`outcome_class`]).
    pub fn response(&self, action: &str, outcome: &str) {
        self.responses
            .with_label_values(&[closed(&ACTIONS, action), outcome_class(outcome)])
            .inc();
    }

    /// Everything an alert counts for: `alerts_total`, `responses_total`, and (when enabled)
    /// `agent_alerts_total`. Call once per alert, where it is emitted.
    pub fn record_alert(&self, alert: &Alert) {
        let rule = alert.finding.rule.as_str();
        self.alert(rule, alert.finding.severity.as_str());
        self.responses
            .with_label_values(&[
                alert.action.response.as_str(),
                action_outcome(&alert.action),
            ])
            .inc();
        self.agent_alert(&alert.agent, rule);
    }

    /// One alert of `rule` for `agent` (no-op unless [`MetricsConfig::agent_label_cap`] > 0).
    pub fn agent_alert(&self, agent: &str, rule: &str) {
        let Some(per_agent) = &self.agent_alerts else {
            return;
        };
        let label = per_agent.label(agent).unwrap_or_else(|| OTHER.to_string());
        per_agent
            .counter
            .with_label_values(&[label.as_str(), rule_label(rule)])
            .inc();
    }

    /// Removes every series of `agent` (call when an agent is retired), freeing its place
    /// under the cap.
    pub fn forget_agent(&self, agent: &str) {
        let Some(per_agent) = &self.agent_alerts else {
            return;
        };
        let name = agent_label(agent);
        let mut labelled = per_agent
            .labelled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if labelled.remove(&name) {
            for rule in RuleId::ALL.iter().map(|r| r.as_str()).chain([OTHER]) {
                let _ = per_agent
                    .counter
                    .remove_label_values(&[name.as_str(), rule]);
            }
            for state in AGENT_STATES {
                let _ = per_agent.state.remove_label_values(&[name.as_str(), state]);
            }
        }
    }

    /// The response state `agent` is in (one of [`AGENT_STATES`]); no-op unless
    /// [`MetricsConfig::agent_label_cap`] > 0 and the agent has, or can take, a label.
    pub fn set_agent_state(&self, agent: &str, state: &str) {
        let Some(per_agent) = &self.agent_alerts else {
            return;
        };
        let Some(label) = per_agent.label(agent) else {
            return;
        };
        let state = closed(&AGENT_STATES, state);
        for each in AGENT_STATES {
            per_agent
                .state
                .with_label_values(&[label.as_str(), each])
                .set(i64::from(each == state));
        }
    }

    /// Agents with their own `agent` label now.
    pub fn labelled_agents(&self) -> Vec<String> {
        match &self.agent_alerts {
            Some(per_agent) => per_agent
                .labelled
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    // ---- latencies -------------------------------------------------------------------------

    /// Seconds from the kernel event that completed a finding to the alert.
    pub fn detection_latency(&self, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.detection_latency.observe(seconds);
        }
    }

    /// Seconds a freeze or kill took (`action` "freeze" or "kill").
    pub fn containment_latency(&self, action: &str, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.containment_latency
                .with_label_values(&[closed(&ACTIONS, action)])
                .observe(seconds);
        }
    }

    // ---- state -----------------------------------------------------------------------------

    /// Agents by state (absolute values; call after every change, or once a second).
    pub fn set_agents(&self, counts: AgentCounts) {
        for (state, n) in [
            ("running", counts.running),
            ("frozen", counts.frozen),
            ("killed", counts.killed),
            ("exited", counts.exited),
        ] {
            self.agents
                .with_label_values(&[state])
                .set(n.min(i64::MAX as u64) as i64);
        }
    }

    /// Live processes of tracked agents (absolute).
    pub fn set_processes(&self, n: u64) {
        self.processes.set(n.min(i64::MAX as u64) as i64);
    }

    /// Programs attached through `family` (absolute; one of [`HOOK_FAMILIES`]).
    pub fn programs_attached(&self, family: &str, n: u64) {
        self.programs
            .with_label_values(&[closed(&HOOK_FAMILIES, family)])
            .set(n.min(i64::MAX as u64) as i64);
    }

    // ---- webhook sink ----------------------------------------------------------------------

    /// One webhook delivery attempt (`outcome` one of [`WEBHOOK_OUTCOMES`]).
    pub fn webhook_delivery(&self, outcome: &str) {
        let outcome = WEBHOOK_OUTCOMES
            .iter()
            .copied()
            .find(|o| *o == outcome)
            .unwrap_or("retried");
        self.webhook_deliveries.with_label_values(&[outcome]).inc();
    }

    /// `n` alerts dropped from a full webhook spool.
    pub fn webhook_spool_dropped(&self, n: u64) {
        self.webhook_spool_dropped.inc_by(n);
    }

    /// What waits in the webhook spool now.
    pub fn set_webhook_spool(&self, alerts: u64, bytes: u64) {
        self.webhook_spool_alerts
            .set(alerts.min(i64::MAX as u64) as i64);
        self.webhook_spool_bytes
            .set(bytes.min(i64::MAX as u64) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{detect::Finding, policy::Severity};

    fn alert(
        agent: &str,
        rule: RuleId,
        severity: Severity,
        response: Response,
        mode: Mode,
        outcome: &str,
    ) -> Alert {
        Alert {
            agent: agent.into(),
            agent_id: 7,
            pid: 4242,
            exe: Some("/usr/bin/bash".into()),
            finding: Finding {
                rule,
                severity,
                summary: "test".into(),
                evidence: Vec::new(),
                score: None,
            },
            action: Action {
                response,
                mode,
                outcome: outcome.into(),
            },
        }
    }

    /// The value of one sample line `name{labels} value` of the exposition.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn exposition_has_every_metric_family() {
        let m = Metrics::new(MetricsConfig { agent_label_cap: 4 });
        m.alert("exec.reverse_shell", "critical");
        m.response("freeze", "frozen in 800 µs");
        m.detection_latency(0.0004);
        m.containment_latency("freeze", 0.002);
        m.programs_attached("raw_tracepoint", 7);
        m.agent_alert("claude", "exec.reverse_shell");
        let text = m.encode();
        for name in [
            "agent_sensor_build_info",
            "agent_sensor_start_time_seconds",
            "agent_sensor_events_total",
            "agent_sensor_events_dropped_total",
            "agent_sensor_events_filtered_total",
            "agent_sensor_alerts_total",
            "agent_sensor_responses_total",
            "agent_sensor_agents",
            "agent_sensor_processes",
            "agent_sensor_detection_latency_seconds",
            "agent_sensor_containment_latency_seconds",
            "agent_sensor_programs_attached",
            "agent_sensor_webhook_deliveries_total",
            "agent_sensor_webhook_spool_dropped_total",
            "agent_sensor_webhook_spool_alerts",
            "agent_sensor_webhook_spool_bytes",
            "agent_sensor_agent_alerts_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{text}"
            );
        }
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            sample(
                &text,
                &format!("agent_sensor_build_info{{version=\"{version}\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_alerts_total{rule=\"exec.reverse_shell\",severity=\"critical\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_responses_total{action=\"freeze\",outcome=\"succeeded\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_programs_attached{family=\"raw_tracepoint\"}"
            ),
            Some(7.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_detection_latency_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_detection_latency_seconds_bucket{le=\"0.0005\"}"
            ),
            Some(1.0)
        );
        // Every drop reason and agent state is there from the start, at 0.
        for reason in DROP_REASONS {
            assert_eq!(
                sample(
                    &text,
                    &format!("agent_sensor_events_dropped_total{{reason=\"{reason}\"}}")
                ),
                Some(0.0),
                "{reason}"
            );
        }
        for state in AGENT_STATES {
            assert_eq!(
                sample(&text, &format!("agent_sensor_agents{{state=\"{state}\"}}")),
                Some(0.0)
            );
        }
        // Every kind too.
        for kind in EventKind::ALL {
            assert!(text.contains(&format!(
                "agent_sensor_events_total{{kind=\"{}\"}} 0",
                kind.name()
            )));
        }
    }

    #[test]
    fn per_agent_series_are_off_by_default() {
        let m = Metrics::default();
        m.agent_alert("claude", "exec.reverse_shell");
        assert!(!m.encode().contains("agent_sensor_agent_alerts_total"));
        assert!(m.labelled_agents().is_empty());
    }

    #[test]
    fn unknown_label_values_become_other() {
        let m = Metrics::default();
        m.event("file.open");
        m.event("/etc/shadow");
        m.event_kind(EventKind::NetConnect);
        m.alert("made.up", "catastrophic");
        m.alert("exec.reverse_shell\"} 1\nfake 1", "high");
        m.response("nuke", "it went well");
        m.dropped("cosmic rays", 3);
        m.dropped("decode_error", 2);
        m.dropped("ring_buffer_full", 0);
        m.programs_attached("/sys/kernel/debug", 1);
        m.containment_latency("obliterate", 0.5);
        let text = m.encode();
        assert_eq!(
            sample(&text, "agent_sensor_events_total{kind=\"file.open\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_events_total{kind=\"net.connect\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_events_total{kind=\"other\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_alerts_total{rule=\"other\",severity=\"other\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_alerts_total{rule=\"other\",severity=\"high\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_responses_total{action=\"other\",outcome=\"other\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_events_dropped_total{reason=\"other\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_events_dropped_total{reason=\"decode_error\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_programs_attached{family=\"other\"}"),
            Some(1.0)
        );
        assert!(!text.contains("shadow") && !text.contains("fake") && !text.contains("debug"));
        assert!(!text.contains("cosmic") && !text.contains("nuke") && !text.contains("obliterate"));
    }

    #[test]
    fn kernel_drop_slots_map_to_reasons() {
        let m = Metrics::default();
        m.kernel_drops(EventKind::FileOpen.slot(), 5);
        m.kernel_drops(drop_slot::PENDING_FULL, 2);
        m.kernel_drops(drop_slot::TRACKING_FULL, 1);
        m.kernel_drops(drop_slot::SOCKET_MAP_FULL, 3);
        m.kernel_drops(63, 4);
        let text = m.encode();
        for (reason, n) in [
            ("ring_buffer_full", 5.0),
            ("inflight_map_full", 2.0),
            ("tracking_map_full", 1.0),
            ("socket_map_full", 3.0),
            ("other", 4.0),
        ] {
            assert_eq!(
                sample(
                    &text,
                    &format!("agent_sensor_events_dropped_total{{reason=\"{reason}\"}}")
                ),
                Some(n),
                "{reason}"
            );
        }
    }

    #[test]
    fn filtered_calls_are_counted_apart_from_losses() {
        let m = Metrics::default();
        let series = "agent_sensor_events_filtered_total{reason=\"path_not_found\"}";
        let repeats = "agent_sensor_events_filtered_total{reason=\"repeat\"}";
        // Declared at 0, so that increase() sees the first one.
        assert_eq!(sample(&m.encode(), series), Some(0.0));
        assert_eq!(sample(&m.encode(), repeats), Some(0.0));
        m.kernel_filtered(filter_slot::MISSING_PATH, 7);
        m.kernel_filtered(filter_slot::REPEAT, 5);
        m.kernel_filtered(3, 2);
        let text = m.encode();
        assert_eq!(sample(&text, series), Some(7.0));
        assert_eq!(sample(&text, repeats), Some(5.0));
        assert_eq!(
            sample(
                &text,
                "agent_sensor_events_filtered_total{reason=\"other\"}"
            ),
            Some(2.0)
        );
        assert!(!text.contains("agent_sensor_events_dropped_total{reason=\"path_not_found\"}"));
    }

    #[test]
    fn outcomes_are_classified() {
        assert_eq!(outcome_class("reported"), "reported");
        assert_eq!(outcome_class("would freeze"), "simulated");
        assert_eq!(outcome_class("frozen in 812 µs"), "succeeded");
        assert_eq!(outcome_class("killed in 3 µs"), "succeeded");
        assert_eq!(
            outcome_class("denied in the kernel (EPERM): nothing was sent"),
            "succeeded"
        );
        assert_eq!(
            outcome_class("not refused by the kernel: the call returned -22"),
            "failed"
        );
        assert_eq!(outcome_class("already frozen"), "already_contained");
        assert_eq!(outcome_class("failed: EPERM"), "failed");
        assert_eq!(outcome_class("simulated"), "simulated");
        assert_eq!(outcome_class("¯\\_(ツ)_/¯"), "other");
    }

    #[test]
    fn record_alert_counts_alert_response_and_agent() {
        let m = Metrics::new(MetricsConfig { agent_label_cap: 8 });
        m.declare_rule("credential.sensitive_read", "high");
        let before = m.encode();
        assert_eq!(
            sample(
                &before,
                "agent_sensor_alerts_total{rule=\"credential.sensitive_read\",severity=\"high\"}"
            ),
            Some(0.0)
        );
        m.record_alert(&alert(
            "claude",
            RuleId::SensitiveRead,
            Severity::High,
            Response::Freeze,
            Mode::Enforce,
            "frozen in 90 µs",
        ));
        m.record_alert(&alert(
            "claude",
            RuleId::SensitiveRead,
            Severity::High,
            Response::Kill,
            Mode::Monitor,
            "would kill",
        ));
        m.record_alert(&alert(
            "aider",
            RuleId::UnallowedEgress,
            Severity::Medium,
            Response::Alert,
            Mode::Enforce,
            "reported",
        ));
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "agent_sensor_alerts_total{rule=\"credential.sensitive_read\",severity=\"high\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_responses_total{action=\"freeze\",outcome=\"succeeded\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_responses_total{action=\"kill\",outcome=\"simulated\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_responses_total{action=\"alert\",outcome=\"reported\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_agent_alerts_total{agent=\"claude\",rule=\"credential.sensitive_read\"}"
            ),
            Some(2.0)
        );
    }

    #[test]
    fn agent_label_is_capped_and_forgotten() {
        let m = Metrics::new(MetricsConfig { agent_label_cap: 2 });
        m.agent_alert("a", "exec.reverse_shell");
        m.agent_alert("b", "exec.reverse_shell");
        m.agent_alert("c", "exec.reverse_shell");
        m.agent_alert("a", "tamper.sensor");
        let text = m.encode();
        let series = |agent: &str, rule: &str| {
            sample(
                &text,
                &format!("agent_sensor_agent_alerts_total{{agent=\"{agent}\",rule=\"{rule}\"}}"),
            )
        };
        assert_eq!(series("a", "exec.reverse_shell"), Some(1.0));
        assert_eq!(series("a", "tamper.sensor"), Some(1.0));
        assert_eq!(series("b", "exec.reverse_shell"), Some(1.0));
        assert_eq!(series("c", "exec.reverse_shell"), None);
        assert_eq!(series("other", "exec.reverse_shell"), Some(1.0));
        assert_eq!(m.labelled_agents(), vec!["a".to_string(), "b".to_string()]);

        m.set_agent_state("a", "frozen");
        m.set_agent_state("c", "frozen");
        let text = m.encode();
        let state = |agent: &str, state: &str| {
            sample(
                &text,
                &format!("agent_sensor_agent_state{{agent=\"{agent}\",state=\"{state}\"}}"),
            )
        };
        assert_eq!(state("a", "frozen"), Some(1.0));
        assert_eq!(state("a", "running"), Some(0.0));
        assert_eq!(state("c", "frozen"), None, "past the cap: no series");

        m.forget_agent("a");
        m.agent_alert("c", "exec.reverse_shell");
        let text = m.encode();
        assert!(!text.contains("agent=\"a\""), "{text}");
        assert!(text.contains(
            "agent_sensor_agent_alerts_total{agent=\"c\",rule=\"exec.reverse_shell\"} 1"
        ));
        assert_eq!(m.labelled_agents(), vec!["b".to_string(), "c".to_string()]);
        // Forgetting an unknown agent or "other" is harmless.
        m.forget_agent("nobody");
        m.forget_agent("other");
    }

    #[test]
    fn agent_label_is_sanitized() {
        let m = Metrics::new(MetricsConfig { agent_label_cap: 2 });
        let long = "x".repeat(500);
        m.agent_alert(&long, "exec.reverse_shell");
        m.agent_alert("evil\"}\n1", "exec.reverse_shell");
        let text = m.encode();
        assert!(text.contains(&format!("agent=\"{}\"", "x".repeat(AGENT_LABEL_MAX))));
        assert!(!text.contains(&"x".repeat(AGENT_LABEL_MAX + 1)));
        // The quote is escaped by the encoder, the newline replaced: still one line per sample.
        assert!(text.contains("agent=\"evil\\\"}_1\""), "{text}");
    }

    #[test]
    fn gauges_and_latencies() {
        let m = Metrics::default();
        m.set_agents(AgentCounts {
            running: 3,
            frozen: 1,
            killed: 0,
            exited: 2,
        });
        m.set_processes(17);
        m.detection_latency(f64::NAN);
        m.detection_latency(-1.0);
        m.detection_latency(20.0);
        m.containment_latency("kill", 0.01);
        m.set_webhook_spool(5, 1234);
        m.webhook_spool_dropped(2);
        m.webhook_delivery("delivered");
        m.webhook_delivery("bogus");
        let text = m.encode();
        assert_eq!(
            sample(&text, "agent_sensor_agents{state=\"running\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_agents{state=\"frozen\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_agents{state=\"exited\"}"),
            Some(2.0)
        );
        assert_eq!(sample(&text, "agent_sensor_processes"), Some(17.0));
        assert_eq!(
            sample(&text, "agent_sensor_detection_latency_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_detection_latency_seconds_bucket{le=\"+Inf\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_containment_latency_seconds_count{action=\"kill\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_webhook_spool_alerts"),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_webhook_spool_bytes"),
            Some(1234.0)
        );
        assert_eq!(
            sample(&text, "agent_sensor_webhook_spool_dropped_total"),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "agent_sensor_webhook_deliveries_total{outcome=\"retried\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn metrics_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
        let m = std::sync::Arc::new(Metrics::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.event_kind(EventKind::FileOpen);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            sample(&m.encode(), "agent_sensor_events_total{kind=\"file.open\"}"),
            Some(4000.0)
        );
    }

    #[test]
    fn promtool_check_metrics_passes() {
        let Some(promtool) = super::super::promtool::promtool() else {
            return;
        };
        let m = Metrics::new(MetricsConfig { agent_label_cap: 4 });
        m.record_alert(&alert(
            "claude",
            RuleId::ReverseShell,
            Severity::Critical,
            Response::Kill,
            Mode::Enforce,
            "killed in 40 µs",
        ));
        m.event_kind(EventKind::ProcessExec);
        m.detection_latency(0.001);
        m.containment_latency("kill", 0.0002);
        m.programs_attached("raw_tracepoint", 2);
        m.programs_attached("tracepoint", 5);
        let (ok, output) = super::super::promtool::check_metrics(&promtool, &m.encode());
        assert!(ok, "promtool check metrics failed:\n{output}");
        // promtool prints lint problems (and exits non-zero for them); nothing at all is clean.
        assert!(
            output.trim().is_empty(),
            "promtool lint findings:\n{output}"
        );
    }
}
