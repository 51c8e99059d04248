//! Keeps a loop from flooding the alert stream: the same rule for the same agent and target
//! is reported once per window, and each rule reports at most a bounded number of distinct
//! targets per agent per window. What is held back is counted and told with the next report.

use std::collections::HashMap;

use crate::policy::RuleId;

/// Repeats of one (agent, rule, target) within this long are counted, not reported.
pub const WINDOW_NS: u64 = 60 * 1_000_000_000;
/// Distinct targets one rule may report for one agent per window.
pub const RULE_BUDGET: u32 = 32;
/// (agent, rule, target) entries remembered in all.
const MAX_ENTRIES: usize = 8192;

#[derive(Debug, Clone, Copy)]
struct Entry {
    reported_ns: u64,
    repeats: u64,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    window_start_ns: u64,
    reported: u32,
    held_back: u64,
}

/// What to do with one candidate finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Report it, telling how many repeats of the same target, and how many other targets of
    /// the same rule, were held back since the previous report.
    Report {
        repeats: u64,
        others_held_back: u64,
    },
    Suppress,
}

#[derive(Debug, Default)]
pub struct Dedup {
    entries: HashMap<(u64, RuleId, String), Entry>,
    budgets: HashMap<(u64, RuleId), Budget>,
}

impl Dedup {
    pub fn check(&mut self, agent: u64, rule: RuleId, target: &str, now_ns: u64) -> Verdict {
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
            reported: 0,
            held_back: 0,
        });
        if now_ns.saturating_sub(budget.window_start_ns) >= WINDOW_NS {
            budget.window_start_ns = now_ns;
            budget.reported = 0;
        }
        if budget.reported >= RULE_BUDGET {
            budget.held_back += 1;
            if budget.held_back == 1 {
                log::warn!(
                    "rule {} for agent {agent}: more than {RULE_BUDGET} findings within a \
                     minute; holding back the rest",
                    rule.as_str()
                );
            }
            return Verdict::Suppress;
        }
        budget.reported += 1;
        let others_held_back = std::mem::take(&mut budget.held_back);
        self.remember(
            key,
            Entry {
                reported_ns: now_ns,
                repeats: 0,
            },
        );
        Verdict::Report {
            repeats,
            others_held_back,
        }
    }

    pub fn forget_agent(&mut self, agent: u64) {
        self.entries.retain(|(a, _, _), _| *a != agent);
        self.budgets.retain(|(a, _), _| *a != agent);
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

    const S: u64 = 1_000_000_000;

    #[test]
    fn repeats_are_counted_and_told_with_the_next_report() {
        let mut d = Dedup::default();
        let rule = RuleId::WriteOutsideWorktree;
        assert_eq!(
            d.check(1, rule, "/etc/x", 0),
            Verdict::Report {
                repeats: 0,
                others_held_back: 0
            }
        );
        for t in 1..=5 {
            assert_eq!(d.check(1, rule, "/etc/x", t * S), Verdict::Suppress);
        }
        // Another agent and another target are separate.
        assert!(matches!(
            d.check(2, rule, "/etc/x", S),
            Verdict::Report { .. }
        ));
        assert!(matches!(
            d.check(1, rule, "/etc/y", S),
            Verdict::Report { .. }
        ));
        assert_eq!(
            d.check(1, rule, "/etc/x", 61 * S),
            Verdict::Report {
                repeats: 5,
                others_held_back: 0
            }
        );
    }

    #[test]
    fn a_flood_of_distinct_targets_is_capped_per_rule() {
        let mut d = Dedup::default();
        let rule = RuleId::WriteOutsideWorktree;
        let reported = (0..100)
            .filter(|i| {
                matches!(
                    d.check(1, rule, &format!("/etc/{i}"), S),
                    Verdict::Report { .. }
                )
            })
            .count();
        assert_eq!(reported, RULE_BUDGET as usize);
        // Another rule has its own budget.
        assert!(matches!(
            d.check(1, RuleId::StartupWrite, "/etc/z", S),
            Verdict::Report { .. }
        ));
        assert_eq!(
            d.check(1, rule, "/etc/new", 62 * S),
            Verdict::Report {
                repeats: 0,
                others_held_back: 100 - RULE_BUDGET as u64
            }
        );
    }
}
