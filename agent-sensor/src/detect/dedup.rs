//! Keeps a loop from flooding the alert stream: the same rule for the same agent and target
//! is reported once per window (repeats are counted and told with the next report), and each
//! rule reports at most a bounded number of distinct targets per agent per window. The targets
//! held back beyond that are told in one roll-up when the window ends: an agent cannot hide
//! the finding that matters behind a flood of decoys that exhaust the budget.

use std::collections::HashMap;

use crate::{events::Event, policy::RuleId};

/// Repeats of one (agent, rule, target) within this long are counted, not reported.
pub const WINDOW_NS: u64 = 60 * 1_000_000_000;
/// Distinct targets one rule may report for one agent per window.
pub const RULE_BUDGET: u32 = 32;
/// (agent, rule, target) entries remembered in all.
const MAX_ENTRIES: usize = 8192;
/// Held-back targets a roll-up names, at most: the first of the window.
pub const NAMED_HELD_BACK: usize = 64;
/// Events of held-back findings a roll-up carries as evidence, at most: the first.
const HELD_BACK_EVIDENCE: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Entry {
    reported_ns: u64,
    repeats: u64,
}

#[derive(Debug, Clone, Default)]
struct Budget {
    window_start_ns: u64,
    reported: u32,
    held_back: u64,
    /// The first held-back targets and finding events.
    targets: Vec<String>,
    evidence: Vec<Event>,
}

/// What one rule held back for one agent in one window, to be told when it ends.
#[derive(Debug, Clone)]
pub struct HeldBack {
    pub agent: u64,
    pub rule: RuleId,
    /// Findings held back, and the first of their targets (at most [`NAMED_HELD_BACK`]).
    pub count: u64,
    pub targets: Vec<String>,
    /// The events of the first held-back findings.
    pub evidence: Vec<Event>,
}

/// What to do with one candidate finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Report it, telling how many repeats of the same target were held back since its
    /// previous report.
    Report {
        repeats: u64,
    },
    Suppress,
}

#[derive(Debug, Default)]
pub struct Dedup {
    entries: HashMap<(u64, RuleId, String), Entry>,
    budgets: HashMap<(u64, RuleId), Budget>,
    /// Windows that ended with findings held back, not yet told.
    ended: Vec<HeldBack>,
}

impl Budget {
    /// Ends the window: what it held back, if anything.
    fn close(&mut self, agent: u64, rule: RuleId, now_ns: u64) -> Option<HeldBack> {
        self.window_start_ns = now_ns;
        self.reported = 0;
        let count = std::mem::take(&mut self.held_back);
        (count > 0).then(|| HeldBack {
            agent,
            rule,
            count,
            targets: std::mem::take(&mut self.targets),
            evidence: std::mem::take(&mut self.evidence),
        })
    }
}

impl Dedup {
    /// The verdict on a finding of `rule` about `target`, raised by `event` at `now_ns`.
    pub fn check(
        &mut self,
        agent: u64,
        rule: RuleId,
        target: &str,
        event: &Event,
        now_ns: u64,
    ) -> Verdict {
        let key = (agent, rule, target.to_string());
        let mut repeats = 0;
        if let Some(entry) = self.entries.get_mut(&key) {
            if now_ns.saturating_sub(entry.reported_ns) < WINDOW_NS {
                entry.repeats += 1;
                return Verdict::Suppress;
            }
            repeats = entry.repeats;
        }
        let budget = self.budgets.entry((agent, rule)).or_insert(Budget {
            window_start_ns: now_ns,
            ..Budget::default()
        });
        if now_ns.saturating_sub(budget.window_start_ns) >= WINDOW_NS {
            self.ended.extend(budget.close(agent, rule, now_ns));
        }
        if budget.reported >= RULE_BUDGET {
            budget.held_back += 1;
            if budget.held_back == 1 {
                log::warn!(
                    "rule {} for agent {agent}: more than {RULE_BUDGET} findings within a \
                     minute; the rest are told in one alert when the minute ends",
                    rule.as_str()
                );
            }
            if budget.targets.len() < NAMED_HELD_BACK {
                budget.targets.push(target.to_string());
            }
            if budget.evidence.len() < HELD_BACK_EVIDENCE {
                budget.evidence.push(event.clone());
            }
            return Verdict::Suppress;
        }
        budget.reported += 1;
        self.remember(
            key,
            Entry {
                reported_ns: now_ns,
                repeats: 0,
            },
        );
        Verdict::Report { repeats }
    }

    /// What the windows ended by `now_ns` held back (all of them, `now_ns` being `u64::MAX`:
    /// the daemon stopping), oldest agent and rule first.
    pub fn take_held_back(&mut self, now_ns: u64) -> Vec<HeldBack> {
        for ((agent, rule), budget) in &mut self.budgets {
            if budget.held_back > 0 && now_ns.saturating_sub(budget.window_start_ns) >= WINDOW_NS {
                self.ended.extend(budget.close(*agent, *rule, now_ns));
            }
        }
        let mut ended = std::mem::take(&mut self.ended);
        ended.sort_by_key(|h| (h.agent, h.rule.as_str()));
        ended
    }

    /// Drops an agent's state; what its current windows held back is still told.
    pub fn forget_agent(&mut self, agent: u64) {
        self.entries.retain(|(a, _, _), _| *a != agent);
        let mut ended = Vec::new();
        self.budgets.retain(|(a, rule), budget| {
            if *a == agent {
                ended.extend(budget.close(*a, *rule, 0));
            }
            *a != agent
        });
        self.ended.extend(ended);
    }

    fn remember(&mut self, key: (u64, RuleId, String), entry: Entry) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&key) {
            let now = entry.reported_ns;
            // Expired entries only carry a repeat count; dropping them loses at most that.
            self.entries
                .retain(|_, e| now.saturating_sub(e.reported_ns) < WINDOW_NS);
            if self.entries.len() >= MAX_ENTRIES {
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.reported_ns)
                    .map(|(k, _)| k.clone())
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::file_op;

    const S: u64 = 1_000_000_000;

    fn event(path: &str) -> Event {
        file_op(agent_sensor_common::EventKind::FileMkdir, 1, path, None)
    }

    #[test]
    fn repeats_are_counted_and_told_with_the_next_report() {
        let mut d = Dedup::default();
        let rule = RuleId::WriteOutsideWorktree;
        assert_eq!(
            d.check(1, rule, "/etc/x", &event("/x"), 0),
            Verdict::Report { repeats: 0 }
        );
        for t in 1..=5 {
            assert_eq!(
                d.check(1, rule, "/etc/x", &event("/x"), t * S),
                Verdict::Suppress
            );
        }
        // Another agent and another target are separate.
        assert!(matches!(
            d.check(2, rule, "/etc/x", &event("/x"), S),
            Verdict::Report { .. }
        ));
        assert!(matches!(
            d.check(1, rule, "/etc/y", &event("/x"), S),
            Verdict::Report { .. }
        ));
        assert_eq!(
            d.check(1, rule, "/etc/x", &event("/x"), 61 * S),
            Verdict::Report { repeats: 5 }
        );
    }

    #[test]
    fn a_flood_of_distinct_targets_is_capped_per_rule() {
        let mut d = Dedup::default();
        let rule = RuleId::WriteOutsideWorktree;
        let reported = (0..100)
            .filter(|i| {
                matches!(
                    d.check(1, rule, &format!("/etc/{i}"), &event("/x"), S),
                    Verdict::Report { .. }
                )
            })
            .count();
        assert_eq!(reported, RULE_BUDGET as usize);
        // Another rule has its own budget.
        assert!(matches!(
            d.check(1, RuleId::StartupWrite, "/etc/z", &event("/x"), S),
            Verdict::Report { .. }
        ));
        // The held-back ones are told when the window ends, by name, once.
        assert!(d.take_held_back(59 * S).is_empty());
        let held = d.take_held_back(61 * S);
        assert_eq!(held.len(), 1, "{held:#?}");
        assert_eq!((held[0].agent, held[0].rule), (1, rule));
        assert_eq!(held[0].count, 100 - RULE_BUDGET as u64);
        assert_eq!(
            held[0].targets.len(),
            NAMED_HELD_BACK.min(100 - RULE_BUDGET as usize)
        );
        assert_eq!(held[0].targets[0], format!("/etc/{RULE_BUDGET}"));
        assert!(d.take_held_back(200 * S).is_empty());
        assert_eq!(
            d.check(1, rule, "/etc/new", &event("/etc/new"), 62 * S),
            Verdict::Report { repeats: 0 }
        );
    }

    #[test]
    fn a_window_ended_by_a_new_finding_or_a_forgotten_agent_is_still_told() {
        let mut d = Dedup::default();
        let rule = RuleId::WriteOutsideWorktree;
        for i in 0..=RULE_BUDGET {
            d.check(1, rule, &format!("/etc/{i}"), &event("/x"), S);
            d.check(2, rule, &format!("/etc/{i}"), &event("/x"), S);
        }
        // Agent 1's next finding opens a new window; agent 2 goes away.
        assert!(matches!(
            d.check(1, rule, "/etc/later", &event("/x"), 70 * S),
            Verdict::Report { .. }
        ));
        d.forget_agent(2);
        let held: Vec<_> = d
            .take_held_back(71 * S)
            .into_iter()
            .map(|h| (h.agent, h.count, h.targets))
            .collect();
        let last = vec![format!("/etc/{RULE_BUDGET}")];
        assert_eq!(held, [(1, 1, last.clone()), (2, 1, last)]);
    }
}
