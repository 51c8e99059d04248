//! What happens to each decoded record: finish its paths, correlate it with what came before,
//! attribute it to its agent, run the rules, write events and alerts. Kept apart from the run
//! loop (which owns the kernel side) so that it can be driven by tests and benchmarks.

use std::{
    collections::HashSet,
    io::{BufWriter, Write},
    path::PathBuf,
    sync::Arc,
};

use agent_sensor_common::{flags, EventKind, SockCloseEvent, SockStats};
use aya::maps::{HashMap, MapData};

use crate::{
    agents::registry::{Agent, AgentState, ResponseRecord},
    agents::{discovery, registry::Registry, Correlator},
    detect::{AgentView, Context, Detector, Finding, OtherAgent, SensorSelf},
    events::{self, Body, Clock, Comm, Event, FileBody},
    export::{
        alerts::{Action, Alert, AlertWriter},
        incident::IncidentWriter,
        metrics::Metrics,
        ocsf::AlertFormat,
        webhook::WebhookSink,
    },
    loader::ring::EventRing,
    policy::{Mode, Policy, Response, RuleId, Severity},
    respond::{self, Containment},
};

pub type Sink = BufWriter<Box<dyn Write + Send>>;

/// Counters the pipeline keeps (exported as metrics by a later stage).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub events: u64,
    pub decode_errors: u64,
    pub alerts: u64,
    /// Kernel-side losses by drop slot, as last read.
    pub kernel_drops: Vec<u64>,
    /// Calls the kernel counted and did not send, by filter slot, as last read.
    pub kernel_filtered: Vec<u64>,
}

pub struct Pipeline {
    pub clock: Clock,
    pub sink: Option<Sink>,
    pub alerts: Option<AlertWriter>,
    pub stats: Stats,
    pub correlator: Correlator,
    pub registry: Registry,
    pub detector: Detector,
    pub policy: Policy,
    pub sensor: SensorSelf,
    /// Where incident bundles go (`<state dir>/incidents`), and the thread that writes them.
    pub incidents: Option<(PathBuf, IncidentWriter)>,
    /// Processes that exited since the last `report_exited_sockets` leaving counted sockets
    /// behind (their exit record says so: `flags::OWNED_SOCKETS`).
    exited_processes: HashSet<u32>,
    /// The event stream's line being written (kept: one allocation for the daemon's life).
    line: Vec<u8>,
    /// Host lookups of the paths the kernel could not resolve.
    resolver: events::resolve::Resolver,
    /// Agents whose last process exited since the last `take_exited_agents`.
    exited_agents: Vec<u64>,
    /// Agents the kernel discovered, adopted since the last `take_adopted_agents`.
    adopted_agents: Vec<u64>,
    /// Parent of the agents' cgroups: containment acts on nothing else.
    pub cgroup_parent: PathBuf,
    pub metrics: Option<Arc<Metrics>>,
    /// Alerts are also posted here (spooled on disk until delivered).
    pub webhook: Option<(WebhookSink, AlertFormat)>,
}

impl Pipeline {
    pub fn new(policy: Policy, sink: Option<Sink>, alerts: Option<AlertWriter>) -> Self {
        let recent = policy.file.sensor.recent_events;
        Self {
            clock: Clock::new(),
            sink,
            alerts,
            stats: Stats::default(),
            correlator: Correlator::default(),
            registry: Registry::new(recent),
            detector: Detector::new(),
            policy,
            sensor: SensorSelf {
                pid: std::process::id(),
                protected_paths: Vec::new(),
                cgroup_root: crate::system::cgroup2_root().unwrap_or_default(),
                resolvers: Vec::new(),
            },
            incidents: None,
            exited_processes: HashSet::new(),
            line: Vec::new(),
            resolver: events::resolve::Resolver::new(),
            exited_agents: Vec::new(),
            adopted_agents: Vec::new(),
            cgroup_parent: crate::system::cgroup2_root()
                .map(|root| respond::agents_parent(&root))
                .unwrap_or_default(),
            metrics: None,
            webhook: None,
        }
    }

    /// Decodes and handles up to `max` records waiting in the ring; returns whether the
    /// ring may hold more. Bounded so that under a flood the run loop still answers signals
    /// and the control socket between batches.
    pub fn drain(&mut self, ring: &mut EventRing, max: usize) -> std::io::Result<bool> {
        let mut handled = 0;
        let more = loop {
            if handled == max {
                break true;
            }
            let Some(record) = ring.next_record() else {
                break false;
            };
            handled += 1;
            // A corrupt header in the ring is counted like an undecodable record.
            let decoded = match record {
                Ok(record) => events::decode(record).map_err(|e| e.to_string()),
                Err(corrupt) => Err(corrupt.to_string()),
            };
            match decoded {
                Ok(event) => self.handle(event)?,
                Err(e) => {
                    self.stats.decode_errors += 1;
                    if let Some(m) = &self.metrics {
                        m.dropped("decode_error", 1);
                    }
                    // The first few and then every thousandth: a flood stays visible without
                    // drowning the log.
                    let n = self.stats.decode_errors;
                    if n <= 10 || n.is_multiple_of(1000) {
                        log::warn!("undecodable record #{n}: {e}");
                    }
                }
            }
        };
        // The kernel may reuse the records' space from here on.
        ring.release();
        self.flush()?;
        Ok(more)
    }

    pub fn handle(&mut self, mut event: Event) -> std::io::Result<()> {
        self.stats.events += 1;
        if let Some(m) = &self.metrics {
            m.event_kind(event.kind);
            if event.truncated() {
                m.dropped("truncated", 1);
            }
        }
        self.resolver.resolve_on_host(&mut event);
        self.correlator.observe(&mut event);
        if event.flags & flags::DISCOVERED != 0 && self.registry.get(event.agent_id).is_none() {
            discovery::adopt_discovered(&mut self.registry, &self.policy, &event);
            self.adopted_agents.push(event.agent_id);
        }
        if event.kind == EventKind::ProcessExit && event.flags & flags::OWNED_SOCKETS != 0 {
            self.exited_processes.insert(event.tgid);
        }
        let event = Arc::new(event);
        if self.registry.observe(&event) {
            self.exited_agents.push(event.agent_id);
        }
        self.detect(&event)?;
        if let Some(sink) = self.sink.as_mut() {
            let json = events::EventJson {
                event: &event,
                clock: &self.clock,
            };
            json.write_to(&mut self.line, sink)?;
        }
        Ok(())
    }

    /// Runs the rules for the event's agent and reports what they find.
    fn detect(&mut self, event: &Event) -> std::io::Result<()> {
        let Some(agent) = self.registry.get(event.agent_id) else {
            return Ok(());
        };
        let others = others_involved(&self.registry, event);
        let ctx = Context {
            agent: AgentView {
                id: agent.id,
                name: &agent.name,
                profile: &agent.profile,
                scope: &agent.scope,
                cgroup: agent.cgroup.as_deref(),
            },
            others: &others,
            sensor: &self.sensor,
            policy: &self.policy,
        };
        let mut findings = self.detector.observe(&ctx, event);
        let killed = event.flags & flags::KILLED_IN_KERNEL != 0;
        if killed && findings.is_empty() {
            findings.push(killed_in_kernel(event, &self.policy));
        }
        if findings.is_empty() {
            return Ok(());
        }
        if let Some(m) = &self.metrics {
            // From the kernel's timestamp of the event to the verdict.
            let latency = Clock::now_ktime_ns().saturating_sub(event.ktime_ns) as f64 / 1e9;
            for _ in &findings {
                m.detection_latency(latency);
            }
        }
        let name = agent.name.clone();
        let responses: Vec<Response> = findings
            .iter()
            .map(|f| agent.scope.response(f.rule))
            .collect();
        let exe = self
            .registry
            .exe_of(event.agent_id, event.tgid)
            .map(str::to_string);
        for (finding, response) in findings.into_iter().zip(responses) {
            let mode = self.policy.mode();
            let outcome = if killed && event.flags & flags::VIA_IO_URING != 0 {
                "killed in the kernel before the io_uring request ran".to_string()
            } else if killed {
                "killed in the kernel before the call returned".to_string()
            } else if response == Response::Deny && denied_in_kernel(event) {
                "denied in the kernel (EPERM): nothing was sent".to_string()
            } else if response == Response::Deny
                && mode == Mode::Enforce
                && event.flags & flags::VIA_IO_URING != 0
            {
                // Recorded at submission: the egress programs judge it when the kernel runs it.
                "left to the kernel's egress programs, which judge the io_uring request when it \
                 runs"
                    .to_string()
            } else {
                match (response, mode) {
                    (Response::Alert, _) => "reported".to_string(),
                    // The egress programs refuse with EPERM before the call returns: this one
                    // they did not see (a raw socket, a socket connected before tracking, an
                    // agent without a cgroup of its own), and saying "denied" would be false.
                    (Response::Deny, Mode::Enforce) => format!(
                        "not refused by the kernel: the call returned {}",
                        event.result()
                    ),
                    (r, Mode::Monitor) => format!("would {}", response_verb(r)),
                    (r, Mode::Enforce) => self.enforce(event.agent_id, r),
                }
            };
            let alert = Alert {
                agent: name.clone(),
                agent_id: event.agent_id,
                pid: event.tgid,
                exe: exe.clone(),
                finding,
                action: Action {
                    response,
                    mode,
                    outcome,
                },
            };
            self.emit_alert(&alert)?;
        }
        Ok(())
    }

    /// Alerts what rules' budgets held back in the windows ended by `now_ns` (`u64::MAX`: all,
    /// the daemon stopping), one alert per agent and rule naming the targets. They report only:
    /// a response the rule has was carried out at its first findings of the window.
    pub fn report_held_back(&mut self, now_ns: u64) -> std::io::Result<()> {
        for (agent_id, finding) in self.detector.held_back(&self.policy, now_ns) {
            let pid = finding.evidence.first().map_or(0, |e| e.tgid);
            let agent = self
                .registry
                .get(agent_id)
                .map_or_else(|| format!("agent {agent_id}"), |a| a.name.clone());
            let exe = self.registry.exe_of(agent_id, pid).map(str::to_string);
            let alert = Alert {
                agent,
                agent_id,
                pid,
                exe,
                finding,
                action: Action {
                    response: Response::Alert,
                    mode: self.policy.mode(),
                    outcome: "reported".to_string(),
                },
            };
            self.emit_alert(&alert)?;
        }
        Ok(())
    }

    /// Carries out a freeze or kill now, before the alert is written, so the alert says what
    /// was done. Deny is the kernel's (egress programs); an agent already contained stays so.
    fn enforce(&mut self, agent_id: u64, response: Response) -> String {
        let what = match response {
            Response::Freeze => Containment::Freeze,
            Response::Kill => Containment::Kill,
            // The caller tells from the call's result whether the kernel refused it.
            Response::Deny => return "refused in the kernel".into(),
            Response::Alert => return "reported".into(),
        };
        let state = self.registry.get(agent_id).map(|a| a.state);
        if state == Some(AgentState::Killed)
            || (what == Containment::Freeze && state == Some(AgentState::Frozen))
        {
            return format!(
                "already {}",
                if state == Some(AgentState::Killed) {
                    "killed"
                } else {
                    "frozen"
                }
            );
        }
        match respond::contain(&mut self.registry, &self.cgroup_parent, agent_id, what) {
            Ok(done) => {
                if let Some(m) = &self.metrics {
                    m.containment_latency(response_verb(response), done.took.as_secs_f64());
                }
                format!(
                    "{} in {} µs{}",
                    done_verb(what),
                    done.took.as_micros(),
                    done.outside_note(what)
                )
            }
            Err(e) => {
                log::error!("cannot {} agent {agent_id}: {e}", response_verb(response));
                format!("failed: {e}")
            }
        }
    }

    fn emit_alert(&mut self, alert: &Alert) -> std::io::Result<()> {
        self.stats.alerts += 1;
        self.registry
            .count_alert(alert.agent_id, alert.finding.rule);
        if alert.action.response != Response::Alert {
            let record = ResponseRecord {
                ts: self.clock.rfc3339(alert.ktime_ns()),
                by: alert.finding.rule.as_str().to_string(),
                action: response_verb(alert.action.response).to_string(),
                outcome: alert.action.outcome.clone(),
            };
            self.registry.record_response(alert.agent_id, record);
        }
        log::warn!(
            "ALERT {} [{}] agent {}: {}",
            alert.finding.rule.as_str(),
            alert.finding.severity.as_str(),
            alert.agent,
            alert.finding.summary
        );
        if let Some(m) = &self.metrics {
            m.record_alert(alert);
        }
        if let Some(writer) = self.alerts.as_mut() {
            writer.write(alert, &self.clock)?;
        }
        if let Some((sink, format)) = &self.webhook {
            // The spool is on disk; a failure here is a full or broken disk, not the webhook.
            if let Err(e) = sink.push(&format.line(alert, &self.clock)) {
                log::error!("cannot spool an alert for the webhook: {e}");
            }
        }
        if alert.finding.severity >= Severity::High {
            if let (Some((dir, writer)), Some(agent)) =
                (&self.incidents, self.registry.get(alert.agent_id))
            {
                writer.submit(dir, alert, agent, &self.clock);
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self.sink.as_mut() {
            Some(sink) => sink.flush(),
            None => Ok(()),
        }
    }

    /// Agents discovered since the last call, for the run loop to enforce their egress.
    pub fn take_adopted_agents(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.adopted_agents)
    }

    /// Agents whose last process exited, for the run loop to clean up after.
    pub fn take_exited_agents(&mut self) -> Vec<u64> {
        let exited = std::mem::take(&mut self.exited_agents);
        for id in &exited {
            self.detector.forget_agent(*id);
        }
        exited
    }

    /// Sockets of exited processes that were never closed by a syscall (the kernel closed
    /// them at exit) are reported from the kernel's counters and removed from them. Only
    /// exits marked as leaving counted sockets are looked for: a look walks every bucket of
    /// the kernel's map, tens of microseconds, and a build has thousands of exits.
    pub fn report_exited_sockets(
        &mut self,
        sockets: &mut HashMap<&mut MapData, u64, SockStats>,
    ) -> std::io::Result<()> {
        if self.exited_processes.is_empty() {
            return Ok(());
        }
        let exited = std::mem::take(&mut self.exited_processes);
        self.report_orphan_sockets(sockets, |stats| exited.contains(&stats.tgid))
    }

    /// The safety net behind [`Self::report_exited_sockets`] (run once a second): sockets
    /// whose process is gone whatever told of it — an exit whose record the full ring lost,
    /// or one a previous daemon saw without marking it.
    pub fn report_sockets_of_gone_processes(
        &mut self,
        sockets: &mut HashMap<&mut MapData, u64, SockStats>,
    ) -> std::io::Result<()> {
        // The kernel's tgids are the host's: the daemon runs in the host's pid namespace.
        self.report_orphan_sockets(sockets, |stats| {
            !std::path::Path::new(&format!("/proc/{}", stats.tgid)).exists()
        })
    }

    fn report_orphan_sockets(
        &mut self,
        sockets: &mut HashMap<&mut MapData, u64, SockStats>,
        orphaned: impl Fn(&SockStats) -> bool,
    ) -> std::io::Result<()> {
        let orphans: Vec<(u64, SockStats)> = sockets
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, stats)| orphaned(stats))
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        for (key, stats) in orphans {
            let _ = sockets.remove(&key);
            let mut close = SockCloseEvent::default();
            stats.fill_close(&mut close);
            self.handle(Event {
                kind: EventKind::NetClose,
                flags: flags::RELEASED_UNSEEN,
                ktime_ns: Clock::now_ktime_ns(),
                pid: stats.tgid,
                tgid: stats.tgid,
                ppid: 0,
                uid: 0,
                gid: 0,
                cgroup_id: 0,
                agent_id: stats.agent_id,
                comm: Comm::default(),
                body: Body::SockClose(events::sock_close(&close, true)),
            })?;
        }
        self.flush()
    }
}

/// The other agents the rules must compare `event` with. Only file and exec rules look at
/// other agents (their worktrees, session state and config), file rules only at the paths a
/// file event names: those are looked up in the registry's worktree index, so that the cost of
/// a file event does not grow with the number of agents. An exec (the program it runs) and a
/// file event without a resolved path (rules complete it from the cwd) are compared with
/// every other agent; both are rare next to file events.
fn others_involved<'r>(registry: &'r Registry, event: &Event) -> Vec<OtherAgent<'r>> {
    let other = |a: &'r Agent| OtherAgent {
        name: &a.name,
        worktree: &a.worktree,
    };
    match &event.body {
        Body::File(FileBody {
            path: Some(path),
            path2,
            ..
        }) => {
            let paths = std::iter::once(path.as_slice()).chain(path2.as_deref());
            registry
                .others_holding(event.agent_id, paths)
                .map(other)
                .collect()
        }
        Body::File(_) | Body::Exec { .. } => registry.others(event.agent_id).map(other).collect(),
        _ => Vec::new(),
    }
}

/// A connect or send the egress programs refused (they make it fail with EPERM).
fn denied_in_kernel(event: &Event) -> bool {
    const EPERM: i64 = -1;
    match &event.body {
        Body::Net(net) => event.kind == EventKind::NetDenied || net.ret == EPERM,
        _ => false,
    }
}

/// The finding for a process the kernel killed on its own (a kill-on-access file opened, a
/// forbidden binary executed) when no rule said more.
fn killed_in_kernel(event: &Event, policy: &Policy) -> Finding {
    let (rule, what) = match &event.body {
        Body::Exec { filename, .. } => (
            RuleId::SuspiciousTool,
            format!(
                "executed forbidden binary {}",
                events::escape::escape(filename)
            ),
        ),
        Body::File(f) => (
            RuleId::SensitiveRead,
            format!(
                "opened kill-on-access file {}",
                events::escape::escape(f.path.as_deref().unwrap_or(&f.path_arg))
            ),
        ),
        _ => (RuleId::TamperSensor, "was killed in the kernel".to_string()),
    };
    Finding {
        rule,
        severity: policy.rule(rule).severity.max(Severity::High),
        summary: format!("{what}; killed in the kernel"),
        evidence: vec![event.clone()],
        score: None,
    }
}

fn done_verb(what: Containment) -> &'static str {
    match what {
        Containment::Freeze => "frozen",
        Containment::Thaw => "thawed",
        Containment::Kill => "killed",
    }
}

fn response_verb(response: Response) -> &'static str {
    match response {
        Response::Alert => "alert",
        Response::Freeze => "freeze",
        Response::Kill => "kill",
        Response::Deny => "deny",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit;

    #[test]
    fn only_exits_that_left_counted_sockets_send_the_daemon_looking_for_them() {
        let mut pipeline = Pipeline::new(Policy::builtin(), None, None);
        pipeline.handle(testkit::exit(100)).unwrap();
        assert!(pipeline.exited_processes.is_empty());
        let mut exit = testkit::exit(101);
        exit.flags |= flags::OWNED_SOCKETS;
        pipeline.handle(exit).unwrap();
        assert_eq!(pipeline.exited_processes, HashSet::from([101]));
    }

    #[test]
    fn an_agent_tracked_for_capture_only_has_no_worktree_for_others_to_enter() {
        use crate::agents::registry::Origin;
        let mut pipeline = Pipeline::new(Policy::builtin(), None, None);
        let policy = pipeline.policy.clone();
        let mut add = |id: u64, name: &str, worktree: &str| {
            pipeline.registry.insert(
                &policy,
                id,
                name.into(),
                worktree.into(),
                "default".into(),
                Origin::Exec,
                None,
                testkit::UID,
            );
            pipeline
                .registry
                .add_process(id, 100 + id as u32, 1, String::new());
        };
        // As `--track-cgroup` registers one: worktree `/`, live from the start.
        add(1, "capture-only", "/");
        add(2, "coder", "/srv/work/coder");
        add(3, "other-coder", "/srv/work/other");
        let reads = |pipeline: &mut Pipeline, path: &str| {
            let mut event = testkit::open(102, path, testkit::RDONLY);
            event.agent_id = 2;
            let before = pipeline.stats.alerts;
            pipeline.handle(event).unwrap();
            pipeline.stats.alerts - before
        };
        assert_eq!(reads(&mut pipeline, "/usr/bin/sh"), 0);
        // Beside the agents' worktrees, where other agents are compared with the path.
        assert_eq!(reads(&mut pipeline, "/srv/shared/notes.txt"), 0);
        // Another agent's real worktree is still foreign.
        assert_eq!(reads(&mut pipeline, "/srv/work/other/src/main.rs"), 1);
    }

    #[test]
    fn a_deny_the_kernel_did_not_carry_out_says_so() {
        use crate::{agents::registry::Origin, detect::testkit::EventExt as _, policy::Mode};
        let mut policy = Policy::builtin();
        policy.file.sensor.mode = Mode::Enforce;
        let mut pipeline = Pipeline::new(policy, None, None);
        let policy = pipeline.policy.clone();
        pipeline.registry.insert(
            &policy,
            1,
            "raw".into(),
            "/srv/work/raw".into(),
            "default".into(),
            Origin::Exec,
            None,
            testkit::UID,
        );
        let outcomes = |pipeline: &Pipeline| -> Vec<String> {
            let agent = pipeline.registry.get(1).unwrap();
            agent.responses.iter().map(|r| r.outcome.clone()).collect()
        };
        // Refused with EPERM by the egress programs.
        let mut refused = testkit::connect(102, "198.51.100.10", 443).ret(-1);
        refused.agent_id = 1;
        pipeline.handle(refused).unwrap();
        assert_eq!(
            outcomes(&pipeline),
            ["denied in the kernel (EPERM): nothing was sent"]
        );
        // A send they did not see (a raw socket's): it went out, or failed otherwise.
        let mut unseen = testkit::send_to(102, "198.51.100.11", 0).ret(-22);
        unseen.agent_id = 1;
        pipeline.handle(unseen).unwrap();
        assert_eq!(
            outcomes(&pipeline)[1],
            "not refused by the kernel: the call returned -22"
        );
    }

    #[test]
    fn a_file_event_is_compared_only_with_the_agents_whose_area_its_paths_are_in() {
        use crate::agents::registry::Origin;
        let policy = Policy::builtin();
        let mut registry = Registry::new(8);
        for id in 1..=50 {
            registry.insert(
                &policy,
                id,
                format!("agent-{id}"),
                format!("/srv/work/agent-{id}").into(),
                "default".into(),
                Origin::Exec,
                None,
                testkit::UID,
            );
        }
        let involved = |registry: &Registry, event: &Event| -> Vec<String> {
            others_involved(registry, event)
                .iter()
                .map(|o| o.name.to_string())
                .collect()
        };
        let mut event = testkit::open(102, "/srv/work/agent-1/src/main.rs", testkit::RDONLY);
        event.agent_id = 1;
        assert_eq!(
            involved(&registry, &event),
            [] as [&str; 0],
            "its own worktree"
        );
        for path in ["/usr/lib/libc.so.6", "/srv/work", "/srv/work/agent-10x/f"] {
            event = testkit::open(102, path, testkit::RDONLY);
            event.agent_id = 1;
            assert_eq!(involved(&registry, &event), [] as [&str; 0], "{path}");
        }
        event = testkit::open(102, "/srv/work/agent-10/src/lib.rs", testkit::RDONLY);
        event.agent_id = 1;
        assert_eq!(involved(&registry, &event), ["agent-10"]);
        event = testkit::rename(
            102,
            "/srv/work/agent-7/a",
            "/root/.claude/projects/-srv-work-agent-3/m.jsonl",
        );
        event.agent_id = 1;
        assert_eq!(
            involved(&registry, &event),
            ["agent-3", "agent-7"],
            "both paths, by id"
        );
        // An exec is compared with every other live agent.
        let mut exec = testkit::exec(102, "/usr/bin/true", &["true"]);
        exec.agent_id = 1;
        assert_eq!(others_involved(&registry, &exec).len(), 49);
        // An agent that has ended holds nothing.
        registry.get_mut(10).unwrap().state = AgentState::Exited;
        event = testkit::open(102, "/srv/work/agent-10/src/lib.rs", testkit::RDONLY);
        event.agent_id = 1;
        assert_eq!(involved(&registry, &event), [] as [&str; 0]);
    }
}
