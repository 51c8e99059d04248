//! File events: each path an event touches goes to the rules that judge it. A written path is
//! claimed by the most specific rule that fires for it — tamper, privilege, persistence,
//! another agent's area, then the plain write outside the worktree — so one write is one
//! finding. A rule the policy disables claims nothing and the next one judges.

use agent_sensor_common::EventKind;

use super::{
    access::{self, Access, Outcome, WriteOp},
    candidate::Candidate,
    credential, isolation, persistence, privilege,
    state::AgentState,
    tamper, Context,
};
use crate::{
    events::{Event, FileBody},
    policy::RuleId,
};

/// One write (or attempted write) of one path.
pub struct WriteAttempt<'a> {
    pub event: &'a Event,
    pub path: &'a [u8],
    pub op: WriteOp,
    pub outcome: Outcome,
}

type WriteRule = fn(&Context, &AgentState, &WriteAttempt) -> Option<Candidate>;

/// Most specific first.
const WRITE_RULES: [(RuleId, WriteRule); 5] = [
    (RuleId::TamperSensor, tamper::write),
    (RuleId::PrivilegeEscalation, privilege::write),
    (RuleId::StartupWrite, persistence::write),
    (RuleId::ForeignWorktree, isolation::foreign_write),
    (RuleId::WriteOutsideWorktree, isolation::outside_write),
];

pub fn check(
    ctx: &Context,
    event: &Event,
    file: &FileBody,
    state: &mut AgentState,
    out: &mut Vec<Candidate>,
) {
    let outcome = access::outcome(file.ret);
    if ctx.enabled(RuleId::TamperSensor) {
        out.extend(tamper::cut_path(event, file));
    }
    let cwd = state
        .processes
        .get(event.tgid)
        .and_then(|p| p.cwd.as_deref());
    let touches = access::touches(event.kind, file, cwd);
    if outcome == Outcome::Done {
        for touch in touches
            .iter()
            .filter(|t| matches!(t.access, Access::Read | Access::Look))
        {
            isolation::learn_git_common_dir(ctx, state, &touch.path);
        }
    }
    // (rank in WRITE_RULES, finding) of each written path.
    let mut writes: Vec<(usize, Candidate)> = Vec::new();
    for touch in &touches {
        match touch.access {
            Access::Write(op) => {
                let attempt = WriteAttempt {
                    event,
                    path: &touch.path,
                    op,
                    outcome,
                };
                let claimed = WRITE_RULES
                    .iter()
                    .enumerate()
                    .filter(|(_, (rule, _))| ctx.enabled(*rule))
                    .find_map(|(rank, (_, rule))| Some((rank, rule(ctx, state, &attempt)?)));
                writes.extend(claimed);
            }
            Access::Read => read(ctx, event, &touch.path, outcome, state, out),
            Access::Look => out.extend(isolation::foreign_access(
                ctx,
                state,
                event,
                &touch.path,
                touch.access,
                outcome,
            )),
        }
    }
    // A rename is one act: when both ends fire, the more specific finding stands, and of two
    // equal ones the one naming where the file went.
    if event.kind == EventKind::FileRename && writes.len() > 1 {
        let best = writes
            .iter()
            .enumerate()
            .min_by_key(|(i, (rank, _))| (*rank, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let kept = writes.swap_remove(best);
        writes = vec![kept];
    }
    out.extend(writes.into_iter().map(|(_, c)| c));
    if event.kind == EventKind::FileLink && ctx.enabled(RuleId::WriteOutsideWorktree) {
        out.extend(isolation::link_escape(ctx, state, event, &touches, outcome));
    }
}

/// A content read: a secret (remembered for exfil.sensitive_then_egress whether or not its
/// own rule reports), else another agent's area.
fn read(
    ctx: &Context,
    event: &Event,
    path: &[u8],
    outcome: Outcome,
    state: &mut AgentState,
    out: &mut Vec<Candidate>,
) {
    if let Some(secret) = credential::read(ctx, event, path, outcome, &state.processes) {
        if secret.read {
            state.sensitive_reads.push(event.clone());
        }
        if ctx.enabled(RuleId::SensitiveRead) {
            out.push(secret.candidate);
            return;
        }
    }
    out.extend(isolation::foreign_access(
        ctx,
        state,
        event,
        path,
        Access::Read,
        outcome,
    ));
}
