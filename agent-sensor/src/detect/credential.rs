//! credential.sensitive_read: a secret opened for reading — a path the policy marks sensitive,
//! or another process's environment or memory.

use agent_sensor_common::{syscalls::nr, EventKind};

use super::{
    access::{basename, is_system_program, proc_entry, Outcome},
    candidate::{text, Candidate},
    processes::Processes,
    Context,
};
use crate::{
    events::{Body, Event},
    policy::RuleId,
};

/// What a read of a sensitive path amounted to.
pub struct SensitiveRead {
    pub candidate: Candidate,
    /// The content was read (not only attempted): it counts for exfil.sensitive_then_egress.
    pub read: bool,
}

/// Judges one content read of `path`. Failed attempts are ignored (tools probe for keys that
/// do not exist); attempts refused by permissions are reported, since they show intent.
pub fn read(
    ctx: &Context,
    event: &Event,
    path: &[u8],
    outcome: Outcome,
    processes: &Processes,
) -> Option<SensitiveRead> {
    if outcome == Outcome::Failed {
        return None;
    }
    let proc_file = proc_entry(path);
    // The agent's own processes may read their own environment and memory.
    if proc_file.is_some_and(|(pid, _)| processes.is_own(pid)) {
        return None;
    }
    let what = match proc_file {
        Some((pid, b"environ")) => format!(
            "the environment of process {pid} ({}), which is not one of its own",
            text(path)
        ),
        Some((pid, b"mem")) => format!(
            "the memory of process {pid} ({}), which is not one of its own",
            text(path)
        ),
        _ => {
            let exe = processes.get(event.tgid).and_then(|p| p.exe.as_deref());
            if ctx.agent.scope.is_sensitive(path) {
                if tool_reads_own_credentials(exe, path) {
                    return None;
                }
                format!("sensitive file {}", text(path))
            } else {
                // Not a secret by this name; maybe by the file's other name.
                let secret = secret_under_another_name(ctx, event)?;
                if tool_reads_own_credentials(exe, secret) {
                    return None;
                }
                format!(
                    "sensitive file {} under another name, {} (same device and inode)",
                    text(secret),
                    text(path)
                )
            }
        }
    };
    let summary = match outcome {
        Outcome::Done => format!("read {what}"),
        _ => format!("tried to read {what} (permission denied)"),
    };
    Some(SensitiveRead {
        candidate: Candidate::new(
            RuleId::SensitiveRead,
            text(path),
            summary,
            vec![event.clone()],
        ),
        read: outcome == Outcome::Done,
    })
}

/// Another process's memory reached without its `/proc/<pid>/mem`: `process_vm_readv` (a
/// read, which counts for exfil.sensitive_then_egress like a secret file), `process_vm_writev`
/// and a ptrace attach (which give both); or one of its descriptors taken with `pidfd_getfd`
/// (its files, sockets, io_uring rings, opened with its rights). The agent's own processes are
/// its to debug; the sensor is tamper.sensor's. Attempts the kernel refused for permission are
/// reported (they show intent), other failures are not.
pub fn process_memory(
    ctx: &Context,
    event: &Event,
    processes: &Processes,
) -> Option<SensitiveRead> {
    const PTRACE: u32 = 101;
    const PTRACE_ATTACH: u64 = 16;
    const PTRACE_SEIZE: u64 = 0x4206;
    // By kind too: a record of another kind carries a number of another meaning (the i386
    // number of a `process.compat_syscall`, the sender's call of a generated signal).
    if event.kind != EventKind::ProcessPtrace {
        return None;
    }
    let Body::Syscall { nr, args, ret, .. } = &event.body else {
        return None;
    };
    let (pid, verb) = match *nr {
        super::tamper::PROCESS_VM_READV => (args[0], "read the memory of"),
        super::tamper::PROCESS_VM_WRITEV => (args[0], "wrote into the memory of"),
        PTRACE if matches!(args[0], PTRACE_ATTACH | PTRACE_SEIZE) => (args[1], "attached to"),
        // The target's pid is the kernel's, read from the pidfd in the call's exit.
        nr::PIDFD_GETFD => (args[3], "took a descriptor of"),
        _ => return None,
    };
    let pid = pid as u32;
    let unknown_target = pid == 0 && *nr == nr::PIDFD_GETFD;
    if (pid == 0 && !unknown_target) || processes.is_own(pid) || pid == ctx.sensor.pid {
        return None;
    }
    let pid = if unknown_target {
        "a process the sensor could not name from its pidfd".to_string()
    } else {
        format!("process {pid}")
    };
    let outcome = super::access::outcome(*ret);
    let call = crate::events::syscall_name(*nr);
    let summary = match outcome {
        Outcome::Failed => return None,
        Outcome::Denied => {
            format!("tried to use {call} on {pid}, which is not one of its own (permission denied)")
        }
        Outcome::Done => format!("{verb} {pid}, which is not one of its own, with {call}"),
    };
    Some(SensitiveRead {
        candidate: Candidate::new(RuleId::SensitiveRead, pid, summary, vec![event.clone()]),
        // A taken descriptor is not known to be a read of anything.
        read: outcome == Outcome::Done
            && !matches!(*nr, super::tamper::PROCESS_VM_WRITEV | nr::PIDFD_GETFD),
    })
}

/// The sensitive name of the file an open event opened, when the agent's scope found that file
/// on disk (a hard link or a bind mount gives a secret another name).
fn secret_under_another_name<'c>(ctx: &'c Context, event: &Event) -> Option<&'c [u8]> {
    match &event.body {
        Body::File(file) => ctx.agent.scope.secret_named(file.dev, file.ino),
        _ => None,
    }
}

/// ssh reading the user's keys is how `git push` over ssh works, not a credential theft: only
/// ssh's own tools, installed in system directories, reading under a `.ssh` directory. Where such a tool connects is judged by
/// exec.suspicious_tool and exfil.unallowed_egress.
fn tool_reads_own_credentials(exe: Option<&[u8]>, path: &[u8]) -> bool {
    const SSH_TOOLS: [&[u8]; 7] = [
        b"ssh",
        b"scp",
        b"sftp",
        b"ssh-add",
        b"ssh-agent",
        b"ssh-keygen",
        b"ssh-keysign",
    ];
    let Some(exe) = exe else {
        return false;
    };
    is_system_program(exe)
        && SSH_TOOLS.contains(&basename(exe))
        && find_constant!(path, b"/.ssh/").is_some()
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::policy::RuleId;

    #[test]
    fn another_process_memory_through_process_vm_or_ptrace_fires() {
        use agent_sensor_common::EventKind::{ProcessFork, ProcessPtrace};
        let other = 4242u64;
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(ProcessPtrace, PID, 310, [other, 0, 1, 0], 19)),
            RuleId::SensitiveRead,
            "read the memory of process 4242, which is not one of its own, with process_vm_readv",
        );
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(ProcessPtrace, PID, 311, [other, 0, 1, 0], 8)),
            RuleId::SensitiveRead,
            "wrote into the memory of process 4242",
        );
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(ProcessPtrace, PID, 101, [0x4206, other, 0, 0], -1)),
            RuleId::SensitiveRead,
            "tried to use ptrace on process 4242, which is not one of its own (permission denied)",
        );
        // Its own child is its to debug; a call that found no such process did nothing.
        let mut fx = Fixture::new();
        let child = PID + 1;
        let mut fork = syscall(ProcessFork, PID, 57, [0; 4], 0);
        fork.body = crate::events::Body::Fork {
            child_pid: child,
            child_tgid: child,
        };
        fx.feed(fork);
        assert_silent(fx.feed(syscall(
            ProcessPtrace,
            PID,
            101,
            [16, child as u64, 0, 0],
            0,
        )));
        assert_silent(fx.feed(syscall(ProcessPtrace, PID, 310, [child as u64, 0, 1, 0], 8)));
        assert_silent(fx.feed(syscall(ProcessPtrace, PID, 310, [other, 0, 1, 0], -3)));
        // PTRACE_TRACEME and peeks need no attach of their own here.
        assert_silent(fx.feed(syscall(ProcessPtrace, PID, 101, [0, 0, 0, 0], 0)));
        // pidfd_getfd(pidfd, fd, 0): the target is the pid the probe read from the pidfd.
        assert_silent(fx.feed(syscall(ProcessPtrace, PID, 438, [5, 3, 0, child as u64], 6)));
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(ProcessPtrace, PID, 438, [5, 3, 0, other], 6)),
            RuleId::SensitiveRead,
            "took a descriptor of process 4242, which is not one of its own, with pidfd_getfd",
        );
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(ProcessPtrace, PID, 438, [5, 3, 0, 0], 6)),
            RuleId::SensitiveRead,
            "took a descriptor of a process the sensor could not name from its pidfd",
        );
        // The record of a process's first 32-bit call carries its i386 number (310 is
        // unshare, 311 set_robust_list there): the 32-bit blind-spot report, nothing else.
        for i386 in [310u32, 311, 438] {
            let mut fx = Fixture::new();
            let first = syscall(
                agent_sensor_common::EventKind::ProcessCompatSyscall,
                PID,
                i386,
                [i386 as u64, 0, 0, 0],
                0,
            );
            assert_fires(
                fx.feed(first),
                RuleId::TamperSensor,
                "made a 32-bit syscall",
            );
        }
    }

    #[test]
    fn reading_a_sensitive_file_fires_and_reading_etc_passwd_does_not() {
        // Waits on policy matching (AgentScope::is_sensitive).
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(open(PID, "/home/u/.ssh/id_ed25519", RDONLY)),
            RuleId::SensitiveRead,
            "read sensitive file /home/u/.ssh/id_ed25519",
        );
        assert_silent(fx.feed(open(PID, "/etc/passwd", RDONLY)));
        assert_silent(fx.feed(open(PID, "/home/u/.ssh", DIRECTORY)));
    }

    #[test]
    fn a_missing_key_is_silent_and_a_denied_one_is_an_attempt() {
        // Waits on policy matching (AgentScope::is_sensitive).
        let mut fx = Fixture::new();
        assert_silent(fx.feed(open(PID, "/home/u/.aws/credentials", RDONLY).ret(-2)));
        assert_fires(
            fx.feed(open(PID, "/etc/shadow", RDONLY).ret(-13)),
            RuleId::SensitiveRead,
            "tried to read sensitive file /etc/shadow (permission denied)",
        );
    }

    #[test]
    fn ssh_reading_its_own_key_is_not_a_theft_but_cat_is() {
        // Waits on policy matching (AgentScope::is_sensitive).
        let mut fx = Fixture::new();
        fx.feed(exec(PID + 1, "/usr/bin/ssh", &["ssh", "git@github.com"]));
        assert_silent(fx.feed(open(PID + 1, "/home/u/.ssh/id_ed25519", RDONLY)));
        fx.feed(exec(PID + 2, "/home/u/bin/ssh", &["ssh", "x"]));
        assert_fires(
            fx.feed(open(PID + 2, "/home/u/.ssh/id_ed25519", RDONLY)),
            RuleId::SensitiveRead,
            "id_ed25519",
        );
    }

    #[test]
    fn another_process_environ_fires_and_its_own_does_not() {
        let mut fx = Fixture::new();
        // /proc/self/environ arrives resolved to the reader's own pid.
        assert_silent(fx.feed(open(PID, &format!("/proc/{PID}/environ"), RDONLY)));
        // A child it forked, and a thread of it.
        fx.feed(fork(PID, PID + 5));
        fx.feed(fork_thread(PID, PID + 6));
        assert_silent(fx.feed(open(PID, &format!("/proc/{}/environ", PID + 5), RDONLY)));
        assert_silent(fx.feed(open(
            PID,
            &format!("/proc/{PID}/task/{}/environ", PID + 6),
            RDONLY,
        )));
        assert_silent(fx.feed(open(PID, "/proc/4321/status", RDONLY)));
        assert_fires(
            fx.feed(open(PID, "/proc/4321/environ", RDONLY)),
            RuleId::SensitiveRead,
            "the environment of process 4321",
        );
        assert_fires(
            fx.feed(open(PID, "/proc/4321/mem", RDONLY)),
            RuleId::SensitiveRead,
            "the memory of process 4321",
        );
        // Once the child exited its pid is no longer the agent's.
        fx.feed(exit(PID + 5));
        assert_fires(
            fx.feed(open(PID, &format!("/proc/{}/environ", PID + 5), RDONLY)),
            RuleId::SensitiveRead,
            "environment",
        );
    }

    #[test]
    fn repeated_reads_of_one_file_report_once_per_window() {
        let mut fx = Fixture::new();
        assert_eq!(fx.feed(open(PID, "/proc/4321/environ", RDONLY)).len(), 1);
        for _ in 0..10 {
            fx.advance_secs(1);
            assert_silent(fx.feed(open(PID, "/proc/4321/environ", RDONLY)));
        }
        fx.advance_secs(60);
        let again = fx.feed(open(PID, "/proc/4321/environ", RDONLY));
        assert_fires(again, RuleId::SensitiveRead, "10 repeats");
    }
}
