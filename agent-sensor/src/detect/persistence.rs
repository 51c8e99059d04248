//! persistence.startup_write: writing something that runs code later, outside the agent's
//! sight — startup files the policy names (shell rc files, crontabs, user units), git hooks
//! outside its worktree, and the hook, settings and instruction files of other agents.
//!
//! Attempts refused by permissions count: a denied write to a crontab is still the intent.
//! The agent's own worktree is exempt: its own git hooks (husky, pre-commit) and its own
//! project settings are its work.

use super::{
    access::{under, Outcome},
    candidate::{text, Candidate},
    files::WriteAttempt,
    isolation,
    state::AgentState,
    Context,
};
use crate::policy::RuleId;

/// Paths inside a worktree that configure or instruct the agents working there.
const AGENT_CONFIG: [&[u8]; 13] = [
    b".claude",
    b".codex",
    b".gemini",
    b".cursor",
    b".vscode",
    b".husky",
    b".mcp.json",
    b".envrc",
    b".aider.conf.yml",
    b".pre-commit-config.yaml",
    b"CLAUDE.md",
    b"AGENTS.md",
    b"GEMINI.md",
];

pub fn write(ctx: &Context, state: &AgentState, w: &WriteAttempt) -> Option<Candidate> {
    if w.outcome == Outcome::Failed
        || ctx.agent.scope.in_worktree(w.path)
        || isolation::shared_git(state, w.event, w.path, true)
    {
        return None;
    }
    let what = if is_git_hook(w.path) {
        "git hook".to_string()
    } else if is_git_config(w.path) {
        "git config".to_string()
    } else if let Some(agent) = other_agent_config(ctx, w.path) {
        format!("hook, settings or instruction file of agent {agent}:")
    } else if ctx.agent.scope.is_startup(w.path) {
        "startup file".to_string()
    } else if shadows_startup_files(ctx, w) {
        "the startup files under".to_string()
    } else {
        return None;
    };
    let denied = if w.outcome == Outcome::Denied {
        " (permission denied)"
    } else {
        ""
    };
    let summary = format!("{} {what} {}{denied}", w.op.verb(), text(w.path));
    Some(Candidate::new(
        RuleId::StartupWrite,
        text(w.path),
        summary,
        vec![w.event.clone()],
    ))
}

/// A mount over (or away from) a directory changes every file below it: one holding startup
/// files the policy names (`/etc/cron.d`, `~/.ssh`, a home) or a git directory's hooks.
fn shadows_startup_files(ctx: &Context, w: &WriteAttempt) -> bool {
    use super::access::WriteOp;
    if !matches!(w.op, WriteOp::Mount | WriteOp::Remount | WriteOp::Unmount) {
        return false;
    }
    // A name below it that any `/**` pattern over it matches (`/etc/cron*/**`), then the
    // patterns whose fixed part lies below it or names it (`~/.ssh/authorized_keys*`).
    let inside = [w.path, b"/hook"].concat();
    is_git_hook(&inside)
        || ctx.agent.scope.is_startup(&inside)
        || ctx.agent.scope.startup_below(w.path)
}

/// A path in a `hooks` directory of a git directory (`.git/hooks/…`, `repo.git/hooks/…`).
fn is_git_hook(path: &[u8]) -> bool {
    let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    parts
        .windows(3)
        .any(|w| w[0].ends_with(b".git") && w[1] == b"hooks" && !w[2].is_empty())
}

/// The config of a git directory outside the worktree: it can name hooks, filters and
/// aliases that run programs.
fn is_git_config(path: &[u8]) -> bool {
    let mut parts = path.rsplit(|b| *b == b'/');
    parts.next() == Some(b"config") && parts.next().is_some_and(|dir| dir.ends_with(b".git"))
}

/// The name of the other agent whose worktree holds `path` as agent configuration.
fn other_agent_config<'c>(ctx: &'c Context, path: &[u8]) -> Option<&'c str> {
    ctx.others.iter().find_map(|other| {
        let worktree = other.worktree.as_os_str().as_encoded_bytes();
        if worktree.is_empty() || !under(path, worktree) {
            return None;
        }
        let relative = path[worktree.len()..].strip_prefix(b"/")?;
        let first = relative.split(|b| *b == b'/').next()?;
        AGENT_CONFIG.contains(&first).then_some(other.name)
    })
}

#[cfg(test)]
mod tests {
    use agent_sensor_common::EventKind;

    use super::super::testkit::*;
    use crate::policy::RuleId;

    #[test]
    fn startup_files_fire_including_rename_into_place() {
        // Waits on policy matching (AgentScope::is_startup).
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(open(PID, "/home/u/.bashrc", APPEND)),
            RuleId::StartupWrite,
            "wrote startup file /home/u/.bashrc",
        );
        assert_fires(
            fx.feed(rename(PID, "/tmp/cron.tmp", "/etc/cron.d/x")),
            RuleId::StartupWrite,
            "renamed a file onto startup file /etc/cron.d/x",
        );
        assert_fires(
            fx.feed(symlink(
                PID,
                "/work/a/evil.service",
                "/home/u/.config/systemd/user/default.target.wants/evil.service",
            )),
            RuleId::StartupWrite,
            "created symlink startup file",
        );
        assert_silent(fx.feed(open(PID, "/home/u/.bashrc", RDONLY)));
    }

    #[test]
    fn a_denied_crontab_write_is_an_attempt() {
        // Waits on policy matching (AgentScope::is_startup).
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(open(PID, "/var/spool/cron/crontabs/u", WRITE).ret(-13)),
            RuleId::StartupWrite,
            "(permission denied)",
        );
    }

    #[test]
    fn a_mount_over_a_directory_of_startup_files_is_persistence() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(mount(PID, "tmpfs", "/etc/cron.d", 0)),
            RuleId::StartupWrite,
            "mounted over the startup files under /etc/cron.d",
        );
        // The user units lie below: the fixture's `~/.config/systemd/user/**`.
        assert_fires(
            fx.feed(mount(PID, "/work/a/fake", "/home/u/.config/systemd", 4096)),
            RuleId::StartupWrite,
            "mounted over the startup files under /home/u/.config/systemd",
        );
        // Nothing the policy names lies below.
        assert_fires(
            fx.feed(mount(PID, "tmpfs", "/home/u/music", 0)),
            RuleId::WriteOutsideWorktree,
            "mounted over /home/u/music",
        );
        assert_fires(
            fx.feed(mount(PID, "/work/a/h", "/home/u/other/.git/hooks", 4096)),
            RuleId::StartupWrite,
            "mounted over the startup files under /home/u/other/.git/hooks",
        );
        // The agent's own hooks are its work, mounted or written.
        assert_silent(fx.feed(mount(PID, "/work/a/h", "/work/a/.git/hooks", 4096)));
    }

    #[test]
    fn git_hooks_outside_its_worktree_fire_and_its_own_do_not() {
        let mut fx = Fixture::new();
        assert_silent(fx.feed(open(PID, "/work/a/.git/hooks/pre-commit", WRITE)));
        assert_silent(fx.feed(file_op(
            EventKind::FileChmod,
            PID,
            "/work/a/.git/hooks/pre-commit",
            None,
        )));
        assert_fires(
            fx.feed(open(
                PID,
                "/home/u/other-repo/.git/hooks/post-checkout",
                WRITE,
            )),
            RuleId::StartupWrite,
            "wrote git hook /home/u/other-repo/.git/hooks/post-checkout",
        );
        assert_fires(
            fx.feed(open(PID, "/srv/git/app.git/hooks/post-receive", WRITE)),
            RuleId::StartupWrite,
            "git hook",
        );
        assert_fires(
            fx.feed(rename(
                PID,
                "/home/u/other-repo/.git/config.lock",
                "/home/u/other-repo/.git/config",
            )),
            RuleId::StartupWrite,
            "renamed a file onto git config /home/u/other-repo/.git/config",
        );
        // A file merely named like a hook directory is not one.
        assert_fires(
            fx.feed(open(PID, "/home/u/hooks/x", WRITE)),
            RuleId::WriteOutsideWorktree,
            "/home/u/hooks/x",
        );
    }

    #[test]
    fn another_agents_settings_are_persistence_and_its_sources_are_foreign() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(open(PID, "/work/b/.claude/settings.json", WRITE)),
            RuleId::StartupWrite,
            "settings or instruction file of agent b: /work/b/.claude/settings.json",
        );
        assert_fires(
            fx.feed(open(PID, "/work/b/AGENTS.md", WRITE)),
            RuleId::StartupWrite,
            "/work/b/AGENTS.md",
        );
        assert_fires(
            fx.feed(open(PID, "/work/b/src/lib.rs", WRITE)),
            RuleId::ForeignWorktree,
            "agent b",
        );
        // Its own project settings are its work.
        assert_silent(fx.feed(open(PID, "/work/a/.claude/settings.local.json", WRITE)));
    }
}
