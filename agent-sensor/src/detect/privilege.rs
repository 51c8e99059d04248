//! privilege.escalation: sudo/su/doas/pkexec, setuid binaries run by a user other than root,
//! switching to uid 0, capset, and writes to the files that grant privilege (sudoers, passwd,
//! shadow…).
//!
//! The event header's uid is read when the syscall returns, so a setuid call's header already
//! shows the new uid; the uid before is what the detector saw of the process earlier. A uid
//! seen inside a user namespace is the host's, so `unshare -r` or a rootless container
//! (uid 0 inside, the user outside) is not root here.

use agent_sensor_common::EventKind;

use super::{
    access::{basename, under, Outcome},
    candidate::{text, Candidate},
    files::WriteAttempt,
    processes::{Identity, Processes},
    state::AgentState,
    Context,
};
use crate::{
    events::{Body, Event},
    policy::RuleId,
};

/// Programs whose purpose is running something as another user.
const ESCALATORS: [&[u8]; 7] = [
    b"sudo",
    b"sudoedit",
    b"su",
    b"doas",
    b"pkexec",
    b"run0",
    b"ksu",
];

/// Setuid-root helpers that do one narrow job for the calling user without handing out root:
/// FUSE mounts, rootless-container uid maps, PAM's password check, D-Bus and polkit helpers.
const SETUID_HELPERS: [&[u8]; 8] = [
    b"fusermount",
    b"fusermount3",
    b"newuidmap",
    b"newgidmap",
    b"unix_chkpwd",
    b"dbus-daemon-launch-helper",
    b"polkit-agent-helper-1",
    b"ssh-keysign",
];

/// Programs that call capset to drop capabilities as part of normal work: sandboxes and
/// container runtimes (Claude Code's Linux sandbox is bubblewrap), and ping, which drops its
/// file capability at start.
const CAPABILITY_DROPPERS: [&[u8]; 17] = [
    b"bwrap",
    b"bubblewrap",
    b"crun",
    b"runc",
    b"conmon",
    b"podman",
    b"buildah",
    b"slirp4netns",
    b"pasta",
    b"rootlesskit",
    b"ping",
    b"ping4",
    b"ping6",
    b"arping",
    b"mtr-packet",
    b"chrome",
    b"chrome-sandbox",
];

/// Files whose content decides who may become whom.
const GRANTING_FILES: [&[u8]; 6] = [
    b"/etc/sudoers",
    b"/etc/passwd",
    b"/etc/shadow",
    b"/etc/group",
    b"/etc/gshadow",
    b"/etc/doas.conf",
];
const GRANTING_DIRS: [&[u8]; 3] = [
    b"/etc/sudoers.d",
    b"/etc/polkit-1/rules.d",
    b"/etc/polkit-1/localauthority",
];

const SETUID: u32 = 105;
const SETGID: u32 = 106;
const SETREUID: u32 = 113;
const SETREGID: u32 = 114;
const SETRESUID: u32 = 117;
const SETRESGID: u32 = 119;
const CAPSET: u32 = 126;

pub fn exec(event: &Event) -> Option<Candidate> {
    let Body::Exec {
        filename,
        argv,
        mode,
        ..
    } = &event.body
    else {
        return None;
    };
    let name = basename(filename);
    let summary = if ESCALATORS.contains(&name) {
        let command: Vec<String> = argv.iter().map(|a| text(a)).collect();
        format!("ran {}: {}", text(name), command.join(" "))
    } else if mode & 0o4000 != 0 && event.uid != 0 && !SETUID_HELPERS.contains(&name) {
        // (A root process gains nothing by a setuid binary: util-linux `mount` run as root.)
        format!("ran setuid binary {}", text(filename))
    } else {
        return None;
    };
    Some(Candidate::new(
        RuleId::PrivilegeEscalation,
        text(filename),
        summary,
        vec![event.clone()],
    ))
}

/// setuid/setgid-family calls that made a non-root process root, and capset.
pub fn setid(event: &Event, before: Identity, processes: &Processes) -> Option<Candidate> {
    let Body::Syscall { nr, args, ret, .. } = &event.body else {
        return None;
    };
    if event.kind != EventKind::ProcessSetId || *ret != 0 {
        return None;
    }
    if *nr == CAPSET {
        let exe = processes.get(event.tgid).and_then(|p| p.exe.clone());
        let exe_name = exe.as_deref().map(basename).unwrap_or(&event.comm);
        if CAPABILITY_DROPPERS.contains(&exe_name) {
            return None;
        }
        let who = text(exe.as_deref().unwrap_or(&event.comm));
        return Some(Candidate::new(
            RuleId::PrivilegeEscalation,
            format!("capset:{who}"),
            format!(
                "process {} ({who}) changed its capabilities (capset)",
                event.tgid
            ),
            vec![event.clone()],
        ));
    }
    let (id_kind, targets, now, was) = match *nr {
        SETUID => ("uid", &args[..1], event.uid, before.uid),
        SETREUID => ("uid", &args[..2], event.uid, before.uid),
        SETRESUID => ("uid", &args[..3], event.uid, before.uid),
        SETGID => ("gid", &args[..1], event.gid, before.gid),
        SETREGID => ("gid", &args[..2], event.gid, before.gid),
        SETRESGID => ("gid", &args[..3], event.gid, before.gid),
        _ => return None,
    };
    if now != 0 || was == 0 || !targets.iter().any(|id| *id as u32 == 0) {
        return None;
    }
    let call = crate::events::syscall_name(*nr);
    Some(Candidate::new(
        RuleId::PrivilegeEscalation,
        format!("setid:{}", event.tgid),
        format!(
            "process {} ({}) switched to {id_kind} 0 with {call} (was {id_kind} {was})",
            event.tgid,
            text(&event.comm)
        ),
        vec![event.clone()],
    ))
}

/// A process that was not root and now is, without a setuid-family call the sensor saw (a
/// kernel exploit, or a call the sensor missed).
pub fn turned_root(event: &Event, before: Identity) -> Option<Candidate> {
    if event.kind == EventKind::ProcessSetId || event.uid != 0 || before.uid == 0 {
        return None;
    }
    Some(Candidate::new(
        RuleId::PrivilegeEscalation,
        format!("setid:{}", event.tgid),
        format!(
            "process {} ({}) now runs as uid 0 (was uid {}) without a setuid call the sensor saw",
            event.tgid,
            text(&event.comm),
            before.uid
        ),
        vec![event.clone()],
    ))
}

/// Writes (or refused attempts) to the files that grant privilege.
pub fn write(_ctx: &Context, _state: &AgentState, w: &WriteAttempt) -> Option<Candidate> {
    let grants =
        GRANTING_FILES.contains(&w.path) || GRANTING_DIRS.iter().any(|dir| under(w.path, dir));
    if w.outcome == Outcome::Failed || !grants {
        return None;
    }
    let denied = if w.outcome == Outcome::Denied {
        " (permission denied)"
    } else {
        ""
    };
    Some(Candidate::new(
        RuleId::PrivilegeEscalation,
        text(w.path),
        format!("{} {}{denied}", w.op.verb(), text(w.path)),
        vec![w.event.clone()],
    ))
}

#[cfg(test)]
mod tests {
    use agent_sensor_common::EventKind;

    use super::super::testkit::*;
    use crate::policy::RuleId;

    #[test]
    fn sudo_and_friends_fire_and_ordinary_tools_do_not() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(
                exec(PID + 1, "/usr/bin/sudo", &["sudo", "apt", "install", "x"]).mode(0o104755),
            ),
            RuleId::PrivilegeEscalation,
            "ran sudo: sudo apt install x",
        );
        assert_fires(
            fx.feed(exec(PID + 2, "/usr/bin/pkexec", &["pkexec", "sh"])),
            RuleId::PrivilegeEscalation,
            "ran pkexec",
        );
        assert_silent(fx.feed(exec(PID + 3, "/usr/bin/git", &["git", "status"])));
    }

    #[test]
    fn setuid_binaries_fire_except_narrow_helpers() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(
                exec(PID + 1, "/usr/bin/mount", &["mount", "/dev/sdb1", "/mnt"]).mode(0o104755),
            ),
            RuleId::PrivilegeEscalation,
            "ran setuid binary /usr/bin/mount",
        );
        assert_silent(
            fx.feed(
                exec(
                    PID + 2,
                    "/usr/bin/fusermount3",
                    &["fusermount3", "-u", "/x"],
                )
                .mode(0o104755),
            ),
        );
        // setgid alone (crontab, ssh-agent on some distros) is not setuid.
        assert_silent(fx.feed(exec(PID + 3, "/usr/bin/ssh-agent", &["ssh-agent"]).mode(0o102755)));
        // Root gains nothing by one. (This process became root unseen, which is its own
        // finding.)
        let findings = fx.feed(
            exec(PID + 4, "/usr/bin/mount", &["mount", "--bind", "a", "b"])
                .mode(0o104755)
                .uid(0),
        );
        assert!(
            !findings.iter().any(|f| f.summary.starts_with("ran setuid")),
            "{findings:#?}"
        );
    }

    #[test]
    fn switching_to_uid_0_from_a_user_fires() {
        let mut fx = Fixture::new();
        fx.feed(exec(PID + 1, "/tmp/exploit", &["exploit"]));
        // The header shows the uid after the call: 0.
        let call = syscall(EventKind::ProcessSetId, PID + 1, 117, [0, 0, 0, 0], 0).uid(0);
        assert_fires(
            fx.feed(call),
            RuleId::PrivilegeEscalation,
            "switched to uid 0 with setresuid (was uid 1000)",
        );
    }

    #[test]
    fn setuid_calls_that_fail_drop_privilege_or_stay_in_a_namespace_are_silent() {
        let mut fx = Fixture::new();
        // Refused.
        assert_silent(fx.feed(syscall(EventKind::ProcessSetId, PID, 105, [0, 0, 0, 0], -1)));
        // Dropping to a user.
        assert_silent(fx.feed(syscall(
            EventKind::ProcessSetId,
            PID,
            105,
            [1000, 0, 0, 0],
            0,
        )));
        // uid 0 inside a user namespace is the user on the host.
        assert_silent(fx.feed(syscall(EventKind::ProcessSetId, PID, 117, [0, 0, 0, 0], 0)));
        // A root agent (root from its first event) switching ids is no escalation.
        let mut root = Fixture::new();
        assert_silent(root.feed(open(PID, "/work/a/x", RDONLY).uid(0)));
        assert_silent(
            root.feed(syscall(EventKind::ProcessSetId, PID, 105, [0, 0, 0, 0], 0).uid(0)),
        );
    }

    #[test]
    fn a_process_that_turns_root_without_a_call_fires_once() {
        let mut fx = Fixture::new();
        fx.feed(open(PID + 1, "/work/a/x", RDONLY));
        assert_fires(
            fx.feed(open(PID + 1, "/work/a/y", RDONLY).uid(0)),
            RuleId::PrivilegeEscalation,
            "now runs as uid 0 (was uid 1000)",
        );
        assert_silent(fx.feed(open(PID + 1, "/work/a/z", RDONLY).uid(0)));
    }

    #[test]
    fn capset_fires_except_for_sandboxes_that_drop_capabilities() {
        let mut fx = Fixture::new();
        fx.feed(exec(
            PID + 1,
            "/usr/bin/bwrap",
            &["bwrap", "--ro-bind", "/", "/", "sh"],
        ));
        assert_silent(fx.feed(syscall(EventKind::ProcessSetId, PID + 1, 126, [0; 4], 0)));
        fx.feed(exec(PID + 2, "/usr/bin/python3", &["python3", "x.py"]));
        assert_fires(
            fx.feed(syscall(EventKind::ProcessSetId, PID + 2, 126, [0; 4], 0)),
            RuleId::PrivilegeEscalation,
            "changed its capabilities (capset)",
        );
        assert_silent(fx.feed(syscall(EventKind::ProcessSetId, PID + 3, 126, [0; 4], -1)));
    }

    #[test]
    fn writing_sudoers_fires_even_when_refused() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(open(PID, "/etc/sudoers.d/agent", WRITE)),
            RuleId::PrivilegeEscalation,
            "wrote /etc/sudoers.d/agent",
        );
        assert_fires(
            fx.feed(open(PID, "/etc/sudoers", APPEND).ret(-13)),
            RuleId::PrivilegeEscalation,
            "wrote /etc/sudoers (permission denied)",
        );
        assert_silent(fx.feed(open(PID, "/etc/sudoers", RDONLY).ret(-13)));
        assert_silent(fx.feed(open(PID, "/etc/passwd", RDONLY)));
    }
}
