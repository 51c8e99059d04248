//! isolation.write_outside_worktree and isolation.foreign_worktree.
//!
//! Paths arrive canonical (symlinks, `..`, dirfd and relative paths already resolved), so the
//! escape variants need no case of their own, with one exception: a hard link made inside the
//! worktree to a file outside it, through which later writes (and reads) look like worktree
//! paths.

use super::{
    access::{
        basename, is_device_sink, is_system_program, proc_entry, under, Access, Outcome, Touch,
        WriteOp,
    },
    candidate::{text, Candidate},
    files::WriteAttempt,
    state::AgentState,
    Context, OtherAgent,
};
use crate::{events::Event, policy::RuleId};

fn bytes(path: &std::path::Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

/// A successful write the policy does not allow outside the worktree.
pub fn outside_write(ctx: &Context, state: &AgentState, w: &WriteAttempt) -> Option<Candidate> {
    if w.outcome != Outcome::Done || !writes_outside(ctx, state, w.event, w.path) {
        return None;
    }
    let summary = format!(
        "{} {} outside worktree {}",
        w.op.verb(),
        text(w.path),
        ctx.agent.scope.worktree.display()
    );
    Some(Candidate::new(
        RuleId::WriteOutsideWorktree,
        text(w.path),
        summary,
        vec![w.event.clone()],
    ))
}

/// Whether writing `path` leaves the agent's allowed area. Device sinks and the agent's own
/// `/proc/<pid>/…` files are not places, and git's shared directory of a linked worktree is
/// part of the worktree's repository.
pub fn writes_outside(ctx: &Context, state: &AgentState, event: &Event, path: &[u8]) -> bool {
    !(ctx.agent.scope.may_write(path)
        || is_device_sink(path)
        || proc_entry(path).is_some_and(|(pid, _)| state.processes.is_own(pid))
        || shared_git(state, event, path, true))
}

/// `git clone` of a local path hard-links the source's objects into the new repository. Git
/// objects are read-only and content-addressed (a write through such a link would corrupt the
/// object's own hash), so sharing them is no way out.
fn git_object_share(existing: &[u8], new: &[u8]) -> bool {
    // `<repo>/.git/objects/` or a bare `<repo>.git/objects/`.
    let in_objects = |p: &[u8]| find_constant!(p, b".git/objects/").is_some();
    in_objects(existing) && in_objects(new)
}

/// link(existing, new) with `new` where the agent may write and `existing` where it may not.
pub fn link_escape(
    ctx: &Context,
    state: &AgentState,
    event: &Event,
    touches: &[Touch],
    outcome: Outcome,
) -> Option<Candidate> {
    if outcome != Outcome::Done {
        return None;
    }
    let existing = touches.iter().find(|t| t.access == Access::Look)?;
    let new = touches
        .iter()
        .find(|t| t.access == Access::Write(WriteOp::Link))?;
    if writes_outside(ctx, state, event, &new.path)
        || !writes_outside(ctx, state, event, &existing.path)
        || git_object_share(&existing.path, &new.path)
    {
        return None;
    }
    let summary = format!(
        "hard-linked {} into its writable area as {}: writes through the link change the \
         file outside",
        text(&existing.path),
        text(&new.path)
    );
    Some(Candidate::new(
        RuleId::WriteOutsideWorktree,
        text(&existing.path),
        summary,
        vec![event.clone()],
    ))
}

/// A successful write inside another agent's worktree or session state.
pub fn foreign_write(ctx: &Context, state: &AgentState, w: &WriteAttempt) -> Option<Candidate> {
    foreign_access(ctx, state, w.event, w.path, Access::Write(w.op), w.outcome)
}

/// Any successful access inside another agent's worktree or session state.
pub fn foreign_access(
    ctx: &Context,
    state: &AgentState,
    event: &Event,
    path: &[u8],
    access: Access,
    outcome: Outcome,
) -> Option<Candidate> {
    let write = matches!(access, Access::Write(_));
    if outcome != Outcome::Done || shared_git(state, event, path, write) {
        return None;
    }
    let (other, area) = foreign_area(ctx, path)?;
    let (verb, kind) = match access {
        Access::Read => ("read", "read"),
        Access::Look => ("opened", "read"),
        Access::Write(op) => (op.verb(), "write"),
    };
    let summary = format!(
        "{verb} {} in the {area} of agent {} ({})",
        text(path),
        other.name,
        other.worktree.display()
    );
    Some(Candidate::new(
        RuleId::ForeignWorktree,
        format!("{}:{kind}", other.name),
        summary,
        vec![event.clone()],
    ))
}

/// The other agent whose worktree or session state holds `path`. When worktrees nest, the
/// deeper one owns the path; an agent sharing this agent's worktree cannot be told apart.
pub fn foreign_area<'c>(
    ctx: &'c Context,
    path: &[u8],
) -> Option<(&'c OtherAgent<'c>, &'static str)> {
    let own = bytes(&ctx.agent.scope.worktree);
    let mine = ctx.agent.scope.in_worktree(path);
    // Looked for once, not once per other agent: this runs for every file event.
    let session = claude_session(path);
    ctx.others.iter().find_map(|other| {
        let theirs = bytes(other.worktree);
        if theirs.is_empty() || theirs == own {
            return None;
        }
        if under(path, theirs) {
            let deeper_than_mine = under(theirs, own);
            return (!mine || deeper_than_mine).then_some((other, "worktree"));
        }
        session
            .is_some_and(|session| is_session_of(session, theirs))
            .then_some((other, "session state"))
    })
}

/// Claude Code keeps each project's transcripts and memory in
/// `~/.claude/projects/<worktree with every non-alphanumeric byte replaced by '-'>`: what
/// follows `/.claude/projects/` in `path`, if it has that.
fn claude_session(path: &[u8]) -> Option<&[u8]> {
    const MARK: &[u8] = b"/.claude/projects/";
    let at = find_constant!(path, MARK)?;
    Some(&path[at + MARK.len()..])
}

/// Whether `session` (see `claude_session`) is the project directory of `worktree` or below.
fn is_session_of(session: &[u8], worktree: &[u8]) -> bool {
    if session.len() < worktree.len() {
        return false;
    }
    let (name, tail) = session.split_at(worktree.len());
    let encoded = |b: u8| if b.is_ascii_alphanumeric() { b } else { b'-' };
    name.iter().zip(worktree).all(|(n, w)| *n == encoded(*w))
        && (tail.is_empty() || tail.starts_with(b"/"))
}

/// A linked worktree (`git worktree add`) keeps its HEAD and index in
/// `<repo>/.git/worktrees/<name>/`, named after the worktree's directory (a digit appended on
/// collision), and shares `<repo>/.git`'s objects and refs. Reading its own admin directory
/// tells which `.git` is this worktree's.
pub fn learn_git_common_dir(ctx: &Context, state: &mut AgentState, path: &[u8]) {
    const MARK: &[u8] = b"/.git/worktrees/";
    let Some(at) = find_constant!(path, MARK) else {
        return;
    };
    let worktree = bytes(&ctx.agent.scope.worktree);
    let own_name = basename(worktree);
    let admin = &path[at + MARK.len()..];
    let admin_name = admin.split(|b| *b == b'/').next().unwrap_or(admin);
    let suffix_ok = admin_name
        .strip_prefix(own_name)
        .is_some_and(|rest| rest.iter().all(u8::is_ascii_digit));
    let common = &path[..at + b"/.git".len()];
    if !own_name.is_empty() && suffix_ok && !ctx.agent.scope.in_worktree(common) {
        state.learn_git_common_dir(common.to_vec());
    }
}

/// Inside the shared `.git` of the agent's own repository, where its git may read and write.
/// Not its hooks (they run code for every worktree: persistence.startup_write judges them),
/// and not its config (which can name hooks, filters and aliases) unless git writes it as
/// bookkeeping — `git push -u` records the upstream there — rather than `git config`.
pub fn shared_git(state: &AgentState, event: &Event, path: &[u8], write: bool) -> bool {
    state.git_common_dirs.iter().any(|common| {
        let sub = |name: &[u8]| [common.as_slice(), b"/", name].concat();
        if !under(path, common) || under(path, &sub(b"hooks")) {
            return false;
        }
        let config = path == sub(b"config") || path == sub(b"config.lock");
        !(write && config) || git_bookkeeping(state, event)
    })
}

/// The event comes from the git program (installed in a system directory) running a
/// subcommand other than `config`.
fn git_bookkeeping(state: &AgentState, event: &Event) -> bool {
    let Some(process) = state.processes.get(event.tgid) else {
        return false;
    };
    let Some(exe) = process.exe.as_deref() else {
        return false;
    };
    is_system_program(exe)
        && basename(exe) == b"git"
        && git_subcommand(&process.argv) != Some(&b"config"[..])
}

/// `git [-C dir] [-c k=v] [--opt] <subcommand> …` → the subcommand.
fn git_subcommand(argv: &[Vec<u8>]) -> Option<&[u8]> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_slice() {
            b"-C" | b"-c" | b"--git-dir" | b"--work-tree" | b"--namespace" | b"--config-env" => {
                args.next();
            }
            a if a.starts_with(b"-") => {}
            a => return Some(a),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use agent_sensor_common::EventKind;

    use super::super::testkit::*;
    use crate::policy::RuleId;

    #[test]
    fn mounts_over_paths_outside_the_worktree_fire_unless_a_sandbox_made_them() {
        const MS_BIND: u32 = 4096;
        const MS_REMOUNT: u32 = 32;
        const MS_PRIVATE: u32 = 1 << 18;
        const MS_REC: u32 = 16384;
        let mut fx = Fixture::new();
        assert_silent(fx.feed(mount(PID, "tmpfs", "/work/a/target", 0)));
        assert_fires(
            fx.feed(mount(PID, "/work/a/rc", "/etc/profile.d/x.sh", MS_BIND)),
            RuleId::WriteOutsideWorktree,
            "mounted over /etc/profile.d/x.sh outside worktree /work/a",
        );
        assert_fires(
            fx.feed(mount(PID, "none", "/srv", MS_REMOUNT)),
            RuleId::WriteOutsideWorktree,
            "changed the mount at /srv",
        );
        let mut umount = mount(PID, "", "/var/lib/app", 0);
        if let crate::events::Body::File(file) = &mut umount.body {
            file.nr = 166;
            file.path2_arg = None;
            file.path2 = None;
        }
        assert_fires(
            fx.feed(umount),
            RuleId::WriteOutsideWorktree,
            "unmounted /var/lib/app",
        );
        // Propagation changes mount nothing.
        assert_silent(fx.feed(mount(PID, "none", "/", MS_REC | MS_PRIVATE)));
        // A mount namespace of another user namespace (bubblewrap's): its mounts stay in it.
        let mut sandboxed = mount(PID, "tmpfs", "/home/u", 0);
        if let crate::events::Body::File(file) = &mut sandboxed.body {
            file.arg2 = 4026532100;
        }
        assert_silent(fx.feed(sandboxed));
    }

    #[test]
    fn writes_inside_the_worktree_are_silent_and_outside_fire() {
        let mut fx = Fixture::new();
        assert_silent(fx.feed(open(PID, "/work/a/src/main.rs", WRITE)));
        assert_silent(fx.feed(file_op(EventKind::FileMkdir, PID, "/work/a/target", None)));
        assert_silent(fx.feed(file_op(EventKind::FileUnlink, PID, "/work/a/old.rs", None)));
        assert_fires(
            fx.feed(open(PID, "/srv/www/index.html", WRITE)),
            RuleId::WriteOutsideWorktree,
            "wrote /srv/www/index.html outside worktree /work/a",
        );
        assert_fires(
            fx.feed(file_op(
                EventKind::FileUnlink,
                PID,
                "/home/u/notes.txt",
                None,
            )),
            RuleId::WriteOutsideWorktree,
            "deleted /home/u/notes.txt",
        );
        assert_fires(
            fx.feed(file_op(EventKind::FileChmod, PID, "/home/u/bin/tool", None)),
            RuleId::WriteOutsideWorktree,
            "changed the mode of /home/u/bin/tool",
        );
        assert_fires(
            fx.feed(file_op(EventKind::FileTruncate, PID, "/home/u/log", None)),
            RuleId::WriteOutsideWorktree,
            "truncated",
        );
        assert_fires(
            fx.feed(file_op(EventKind::FileChown, PID, "/home/u/f", None)),
            RuleId::WriteOutsideWorktree,
            "owner",
        );
    }

    #[test]
    fn reading_outside_and_failed_writes_are_silent() {
        let mut fx = Fixture::new();
        assert_silent(fx.feed(open(PID, "/usr/lib/libc.so.6", RDONLY)));
        assert_silent(fx.feed(open(PID, "/etc/hosts", RDONLY)));
        // npm trying the global prefix first, refused.
        assert_silent(fx.feed(open(PID, "/usr/lib/node_modules/x", WRITE).ret(-13)));
        // mkdir -p on a directory that exists.
        assert_silent(fx.feed(file_op(EventKind::FileMkdir, PID, "/home/u/x", None).ret(-17)));
    }

    #[test]
    fn device_sinks_and_its_own_proc_files_are_not_places() {
        let mut fx = Fixture::new();
        for path in ["/dev/null", "/dev/tty", "/dev/pts/4", "/dev/shm/sem.mp-1"] {
            assert_silent(fx.feed(open(PID, path, WRITE)));
        }
        assert_silent(fx.feed(open(PID, &format!("/proc/{PID}/oom_score_adj"), WRITE)));
        assert_fires(
            fx.feed(open(PID, "/proc/4321/oom_score_adj", WRITE)),
            RuleId::WriteOutsideWorktree,
            "/proc/4321",
        );
    }

    #[test]
    fn allowed_writable_paths_are_silent() {
        // Waits on policy matching (AgentScope::may_write with `writable`).
        let mut fx = Fixture::new();
        assert_silent(fx.feed(open(PID, "/tmp/rustcXYZ/out.o", WRITE)));
        assert_silent(fx.feed(open(PID, "/home/u/.cargo/registry/cache/x.crate", WRITE)));
        assert_silent(fx.feed(open(PID, "/home/u/.npm/_cacache/x", WRITE)));
    }

    #[test]
    fn escapes_arrive_canonical_and_are_judged_by_their_real_path() {
        let mut fx = Fixture::new();
        // `ln -s /opt/tools link; echo x > link/evil.sh`: the open resolves to the target.
        let mut through_symlink = open(PID, "/opt/tools/evil.sh", WRITE);
        if let crate::events::Body::File(f) = &mut through_symlink.body {
            f.path_arg = b"link/evil.sh".to_vec();
        }
        assert_fires(
            fx.feed(through_symlink),
            RuleId::WriteOutsideWorktree,
            "wrote /opt/tools/evil.sh",
        );
        // `../../home/u/x` from inside the worktree.
        assert_fires(
            fx.feed(open(PID, "/home/u/x", WRITE)),
            RuleId::WriteOutsideWorktree,
            "/home/u/x",
        );
        // `git clone /local/repo` hard-links the source's objects: not an escape.
        assert_silent(fx.feed(link(
            PID,
            "/srv/repo/.git/objects/ab/cdef",
            "/work/a/.git/objects/ab/cdef",
        )));
        // A symlink created inside the worktree pointing out is no write outside…
        assert_silent(fx.feed(symlink(PID, "/etc", "/work/a/etc-link")));
        // …but a symlink planted outside is.
        assert_fires(
            fx.feed(symlink(PID, "/work/a/x", "/home/u/.local/bin/x")),
            RuleId::WriteOutsideWorktree,
            "created symlink /home/u/.local/bin/x",
        );
    }

    #[test]
    fn a_path_only_call_with_an_unresolved_relative_path_uses_the_known_cwd() {
        let mut fx = Fixture::new();
        // The cwd is revealed by a relative open the kernel walked.
        let mut rel = open(PID, "/home/u/Documents/a.txt", RDONLY);
        if let crate::events::Body::File(f) = &mut rel.body {
            f.path_arg = b"a.txt".to_vec();
            f.base = Some(b"/home/u/Documents".to_vec());
        }
        assert_silent(fx.feed(rel));
        let mut unlink = file_op(EventKind::FileUnlink, PID, "x", None);
        if let crate::events::Body::File(f) = &mut unlink.body {
            f.path = None;
            f.path_source = crate::events::PathSource::Argument;
        }
        assert_fires(
            fx.feed(unlink),
            RuleId::WriteOutsideWorktree,
            "deleted /home/u/Documents/x",
        );
    }

    #[test]
    fn rename_into_place_counts_both_ends() {
        let mut fx = Fixture::new();
        assert_silent(fx.feed(rename(PID, "/work/a/a.tmp", "/work/a/a.rs")));
        assert_fires(
            fx.feed(rename(PID, "/work/a/payload", "/home/u/.local/bin/git")),
            RuleId::WriteOutsideWorktree,
            "renamed a file onto /home/u/.local/bin/git",
        );
        assert_fires(
            fx.feed(rename(PID, "/home/u/important", "/work/a/stolen")),
            RuleId::WriteOutsideWorktree,
            "renamed away /home/u/important",
        );
        // `sed -i` outside: the temp file renamed onto the original is one finding.
        assert_fires(
            fx.feed(rename(PID, "/srv/conf/sedX1b2c3", "/srv/conf/app.conf")),
            RuleId::WriteOutsideWorktree,
            "renamed a file onto /srv/conf/app.conf",
        );
    }

    #[test]
    fn a_hard_link_into_the_worktree_to_an_outside_file_is_an_escape() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(link(PID, "/home/u/.gitconfig", "/work/a/gc")),
            RuleId::WriteOutsideWorktree,
            "hard-linked /home/u/.gitconfig into its writable area as /work/a/gc",
        );
        // Linking within the worktree (cargo does) is fine.
        assert_silent(fx.feed(link(
            PID,
            "/work/a/target/debug/deps/x-1",
            "/work/a/target/debug/x",
        )));
        // A new name outside is a plain write outside.
        assert_fires(
            fx.feed(link(PID, "/work/a/x", "/home/u/x")),
            RuleId::WriteOutsideWorktree,
            "hard-linked /home/u/x outside worktree",
        );
    }

    #[test]
    fn another_agents_worktree_is_off_limits_for_reads_and_writes() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(open(PID, "/work/b/src/lib.rs", RDONLY)),
            RuleId::ForeignWorktree,
            "read /work/b/src/lib.rs in the worktree of agent b (/work/b)",
        );
        // One finding per other agent and access kind per window, not one per file.
        assert_silent(fx.feed(open(PID, "/work/b/src/main.rs", RDONLY)));
        assert_fires(
            fx.feed(open(PID, "/work/b/src/lib.rs", WRITE)),
            RuleId::ForeignWorktree,
            "wrote /work/b/src/lib.rs",
        );
        // A look counts as a read: already reported for this window.
        assert_silent(fx.feed(file_op(EventKind::FileChdir, PID + 1, "/work/b", None)));
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(file_op(EventKind::FileChdir, PID + 1, "/work/b", None)),
            RuleId::ForeignWorktree,
            "opened /work/b",
        );
        // A sibling whose name shares a prefix is not inside.
        assert_silent(fx.feed(open(PID, "/work/bb/x", RDONLY)));
    }

    #[test]
    fn another_agents_session_state_is_off_limits() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(open(
                PID,
                "/home/u/.claude/projects/-work-b/abc.jsonl",
                RDONLY,
            )),
            RuleId::ForeignWorktree,
            "session state of agent b",
        );
        assert_silent(fx.feed(open(
            PID,
            "/home/u/.claude/projects/-work-a/abc.jsonl",
            RDONLY,
        )));
        assert_silent(fx.feed(open(
            PID,
            "/home/u/.claude/projects/-work-bb/abc.jsonl",
            RDONLY,
        )));
    }

    #[test]
    fn nested_worktrees_belong_to_the_deeper_agent() {
        let mut fx = Fixture::new();
        fx.others = vec![
            crate::detect::OtherAgent {
                name: "outer",
                worktree: std::path::Path::new("/work"),
            },
            crate::detect::OtherAgent {
                name: "inner",
                worktree: std::path::Path::new("/work/a/sub"),
            },
        ];
        assert_silent(fx.feed(open(PID, "/work/a/src/x.rs", WRITE)));
        assert_fires(
            fx.feed(open(PID, "/work/a/sub/x.rs", RDONLY)),
            RuleId::ForeignWorktree,
            "agent inner",
        );
        assert_fires(
            fx.feed(open(PID, "/work/README", RDONLY)),
            RuleId::ForeignWorktree,
            "agent outer",
        );
    }

    #[test]
    fn a_linked_worktree_may_use_its_repositorys_shared_git_dir_but_not_its_hooks() {
        let mut fx = Fixture::new();
        // Agent b works in the main checkout /work/b; agent a in a linked worktree /work/a.
        assert_silent(fx.feed(open(PID, "/work/b/.git/worktrees/a/HEAD", RDONLY)));
        assert_silent(fx.feed(open(PID, "/work/b/.git/objects/ab/cdef", RDONLY)));
        assert_silent(fx.feed(open(PID, "/work/b/.git/objects/12/3456", WRITE)));
        assert_silent(fx.feed(rename(
            PID,
            "/work/b/.git/refs/heads/a.lock",
            "/work/b/.git/refs/heads/a",
        )));
        assert_fires(
            fx.feed(open(PID, "/work/b/.git/hooks/pre-commit", WRITE)),
            RuleId::StartupWrite,
            "git hook /work/b/.git/hooks/pre-commit",
        );
        // Its checked-out files stay agent b's.
        assert_fires(
            fx.feed(open(PID, "/work/b/src/lib.rs", RDONLY)),
            RuleId::ForeignWorktree,
            "agent b",
        );
    }

    #[test]
    fn git_may_record_an_upstream_in_the_shared_config_but_git_config_may_not_set_it() {
        let mut fx = Fixture::new();
        fx.feed(exec(
            PID + 1,
            "/usr/bin/git",
            &["git", "push", "-u", "origin", "a"],
        ));
        assert_silent(fx.feed(open(PID + 1, "/work/b/.git/worktrees/a/HEAD", RDONLY)));
        assert_silent(fx.feed(open(PID + 1, "/work/b/.git/config.lock", WRITE)));
        assert_silent(fx.feed(rename(
            PID + 1,
            "/work/b/.git/config.lock",
            "/work/b/.git/config",
        )));
        fx.feed(exec(
            PID + 2,
            "/usr/bin/git",
            &["git", "-C", "/work/a", "config", "core.hooksPath", "/tmp/h"],
        ));
        let findings = fx.feed(rename(
            PID + 2,
            "/work/b/.git/config.lock",
            "/work/b/.git/config",
        ));
        assert!(
            rules_of(&findings).contains(&RuleId::StartupWrite)
                || rules_of(&findings).contains(&RuleId::ForeignWorktree),
            "{findings:#?}"
        );
    }

    #[test]
    fn another_repositorys_git_dir_is_not_learned_as_shared() {
        let mut fx = Fixture::new();
        // The admin dir of a worktree with another name says nothing about this agent.
        assert_silent(fx.feed(open(PID, "/srv/repo/.git/worktrees/other/HEAD", RDONLY)));
        assert_fires(
            fx.feed(open(PID, "/srv/repo/.git/objects/12/3456", WRITE)),
            RuleId::WriteOutsideWorktree,
            "/srv/repo/.git/objects",
        );
    }
}
