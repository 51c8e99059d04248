//! tamper.sensor: an agent going after the sensor — signals or ptrace aimed at its pid, any
//! bpf() call or kernel module load, changes to bpffs pins, to the sensor's policy and state
//! (`SensorSelf::protected_paths`) or to its `/proc` files, connecting to its sockets, and
//! writing to cgroups other than its own: a root process that moves itself out of the agent's
//! cgroup (`echo $$ > /sys/fs/cgroup/cgroup.procs`) is out of reach of freeze and kill, and of
//! the egress programs on the agents' cgroups.
//!
//! Attempts count (a refused kill is still aimed at the sensor). Reading the policy or state
//! does not: it changes nothing, and `grep -r /etc` or `find /` would read them in passing.

use agent_sensor_common::{flags, syscalls::X32_SYSCALL_BIT, EventKind, MAX_USER_PATH};

use super::{
    access::{proc_entry, under, Outcome},
    candidate::{text, Candidate},
    files::WriteAttempt,
    state::AgentState,
    Context,
};
use crate::{
    events::{syscall_name, Body, Event, FileBody},
    policy::RuleId,
};

const BPFFS: &[u8] = b"/sys/fs/bpf";
const KILL: u32 = 62;
const TKILL: u32 = 200;
const TGKILL: u32 = 234;
const RT_SIGQUEUEINFO: u32 = 129;
const RT_TGSIGQUEUEINFO: u32 = 297;
const PTRACE_TRACEME: u64 = 0;
pub const PROCESS_VM_READV: u32 = 310;
pub const PROCESS_VM_WRITEV: u32 = 311;

fn refused(ret: i64) -> &'static str {
    if ret < 0 {
        " (refused)"
    } else {
        ""
    }
}

pub fn syscall(ctx: &Context, event: &Event) -> Option<Candidate> {
    let Body::Syscall { nr, args, ret, .. } = &event.body else {
        return None;
    };
    if event.kind == EventKind::ProcessCompatSyscall {
        return Some(compat_syscall(event, *nr));
    }
    let sensor = ctx.sensor.pid;
    let call = syscall_name(*nr);
    let (target, summary) = match event.kind {
        // Seen where the kernel generated it (pidfd_send_signal and the like): the record
        // names the target and the signal itself.
        EventKind::ProcessKill if event.flags & flags::SIGNAL_GENERATED != 0 => {
            if args[0] as u32 != sensor || args[2] == 0 {
                return None;
            }
            let how = match call {
                "unknown" => format!("from syscall {nr}"),
                name => format!("with {name}"),
            };
            (
                "signal",
                format!("sent signal {} to the sensor (pid {sensor}) {how}", args[2]),
            )
        }
        EventKind::ProcessKill => {
            let (aimed, signal) = match *nr {
                // kill(-pgid) signals the sensor's process group (it leads its own).
                KILL => ((args[0] as i32).unsigned_abs() == sensor, args[1]),
                // rt_sigqueueinfo(tgid, sig, info) signals a process, as kill does, and
                // rt_tgsigqueueinfo(tgid, tid, sig, info) a thread, as tgkill does.
                TKILL | RT_SIGQUEUEINFO => (args[0] as u32 == sensor, args[1]),
                TGKILL | RT_TGSIGQUEUEINFO => (
                    args[0] as u32 == sensor || args[1] as u32 == sensor,
                    args[2],
                ),
                _ => return None,
            };
            // Signal 0 only asks whether the process exists; it delivers nothing.
            if !aimed || signal == 0 {
                return None;
            }
            (
                "signal",
                format!("sent signal {signal} to the sensor (pid {sensor}) with {call}"),
            )
        }
        EventKind::ProcessPtrace if matches!(*nr, PROCESS_VM_READV | PROCESS_VM_WRITEV) => {
            if args[0] as u32 != sensor {
                return None;
            }
            (
                "ptrace",
                format!("used {call} on the memory of the sensor (pid {sensor})"),
            )
        }
        EventKind::ProcessPtrace => {
            if args[0] == PTRACE_TRACEME || args[1] as u32 != sensor {
                return None;
            }
            (
                "ptrace",
                format!(
                    "used ptrace (request {}) on the sensor (pid {sensor})",
                    args[0]
                ),
            )
        }
        EventKind::ProcessBpf => ("bpf", format!("called bpf() (command {})", args[0])),
        EventKind::ProcessModuleLoad => ("module", format!("loaded a kernel module with {call}")),
        _ => return None,
    };
    Some(Candidate::new(
        RuleId::TamperSensor,
        target,
        format!("{summary}{}", refused(*ret)),
        vec![event.clone()],
    ))
}

/// A 32-bit syscall (a 64-bit process can make them too, with `int $0x80`), or an x32 one. The
/// sensor reads them as the 64-bit calls they are, but not all: `sendmmsg` and `recvmmsg`, whose structs
/// differ at 32 bits, are not read. A coding agent's tools are 64-bit programs, so
/// one that switches ABI is stepping around the sensor's view. Seen once per process; reported
/// once per agent.
fn compat_syscall(event: &Event, nr: u32) -> Candidate {
    let x32 = nr as u64 & X32_SYSCALL_BIT != 0;
    let summary = if x32 {
        let number = nr as u64 ^ X32_SYSCALL_BIT;
        format!(
            "made an x32 syscall (number {number} with the x32 bit): its x32 calls are judged \
             as the 64-bit ones, except sendmmsg and recvmmsg, whose messages the sensor does \
             not read"
        )
    } else {
        format!(
            "made a 32-bit syscall (i386 number {nr}): its 32-bit calls are judged as the 64-bit \
             ones, except sendmmsg and recvmmsg, whose messages the sensor does not read"
        )
    };
    Candidate::new(RuleId::TamperSensor, "compat", summary, vec![event.clone()])
}

/// A file call whose path the kernel copied only in part (`MAX_USER_PATH`): with no opened
/// file to walk either, what it named is not known, and the rules judge the part they got. A
/// path that long is no accident of a build (`./` a thousand times, then `../../root/...`).
pub fn cut_path(event: &Event, file: &FileBody) -> Option<Candidate> {
    let cut = |arg: &[u8]| arg.len() >= MAX_USER_PATH - 1;
    let walked = file.dev != 0 || file.ino != 0;
    if !event.truncated() || walked {
        return None;
    }
    let arg = [Some(&file.path_arg), file.path2_arg.as_ref()]
        .into_iter()
        .flatten()
        .find(|arg| cut(arg))?;
    Some(Candidate::new(
        RuleId::TamperSensor,
        "long path",
        format!(
            "named a file with a path longer than the sensor reads ({} bytes, starting \"{}…\"): \
             what the call named goes unjudged",
            MAX_USER_PATH - 1,
            text(&arg[..64])
        ),
        vec![event.clone()],
    ))
}

/// Changes (or refused attempts) to what the sensor is made of.
pub fn write(ctx: &Context, _state: &AgentState, w: &WriteAttempt) -> Option<Candidate> {
    if w.outcome == Outcome::Failed {
        return None;
    }
    let what = protected(ctx, w.path)?;
    let denied = if w.outcome == Outcome::Denied {
        " (permission denied)"
    } else {
        ""
    };
    Some(Candidate::new(
        RuleId::TamperSensor,
        text(w.path),
        format!("{} {}, {what}{denied}", w.op.verb(), text(w.path)),
        vec![w.event.clone()],
    ))
}

/// A connection to one of the sensor's sockets (its control socket).
pub fn connect_unix(ctx: &Context, event: &Event, path: &[u8]) -> Option<Candidate> {
    let what = protected(ctx, path)?;
    let ret = event.result();
    Some(Candidate::new(
        RuleId::TamperSensor,
        text(path),
        format!("connected to {}, {what}{}", text(path), refused(ret)),
        vec![event.clone()],
    ))
}

fn protected(ctx: &Context, path: &[u8]) -> Option<&'static str> {
    if outside_own_cgroup(ctx, path) {
        return Some("a cgroup other than the agent's own, where it can escape freeze and kill");
    }
    if under(path, BPFFS) {
        return Some("a BPF pin");
    }
    if proc_entry(path).is_some_and(|(pid, _)| pid == ctx.sensor.pid) {
        return Some("a /proc file of the sensor");
    }
    ctx.sensor
        .protected_paths
        .iter()
        .any(|p| under(path, p.as_os_str().as_encoded_bytes()))
        .then_some("part of the sensor (its program, policy or state)")
}

/// Under the cgroup v2 mount, but not in the agent's own cgroup (or one below it, which freeze
/// and kill reach too).
fn outside_own_cgroup(ctx: &Context, path: &[u8]) -> bool {
    let root = ctx.sensor.cgroup_root.as_os_str().as_encoded_bytes();
    let own = ctx.agent.cgroup.map(|c| c.as_os_str().as_encoded_bytes());
    !root.is_empty() && under(path, root) && !own.is_some_and(|own| under(path, own))
}

#[cfg(test)]
mod tests {
    use agent_sensor_common::EventKind;

    use super::super::testkit::*;
    use crate::policy::RuleId;

    const SIGKILL: u64 = 9;

    #[test]
    fn a_path_cut_to_the_sensors_bound_is_a_blind_spot_unless_the_kernel_walked_the_file() {
        let long = format!("/w/{}../../root/.ssh/id_rsa", "./".repeat(300));
        let cut = |mut event: crate::events::Event| {
            event.flags |= agent_sensor_common::flags::TRUNCATED;
            if let crate::events::Body::File(file) = &mut event.body {
                file.path_arg
                    .truncate(agent_sensor_common::MAX_USER_PATH - 1);
            }
            event
        };
        // The part the sensor got may be judged too (here: a write outside the worktree).
        let mut fx = Fixture::new();
        let findings = fx.feed(cut(file_op(EventKind::FileMkdir, PID, &long, None)));
        let blind = findings
            .iter()
            .find(|f| f.rule == RuleId::TamperSensor)
            .unwrap_or_else(|| panic!("{findings:#?}"));
        assert!(
            blind.summary.starts_with(
                "named a file with a path longer than the sensor reads (511 bytes, starting \"/w/./"
            ),
            "{blind:#?}"
        );
        // An open the kernel walked is judged by the file it opened, whatever its argument.
        let mut walked = cut(open(PID, &long, 0));
        if let crate::events::Body::File(file) = &mut walked.body {
            (file.dev, file.ino) = (8, 1234);
        }
        let mut fx = Fixture::new();
        assert!(!rules_of(&fx.feed(walked)).contains(&RuleId::TamperSensor));
        // Long but whole: judged as it is.
        let mut fx = Fixture::new();
        let whole = file_op(
            EventKind::FileMkdir,
            PID,
            &format!("/w/{}", "a/".repeat(200)),
            None,
        );
        assert!(!rules_of(&fx.feed(whole)).contains(&RuleId::TamperSensor));
    }

    #[test]
    fn signals_aimed_at_the_sensor_fire_and_others_do_not() {
        let mut fx = Fixture::new();
        let s = SENSOR_PID as u64;
        assert_fires(
            fx.feed(syscall(
                EventKind::ProcessKill,
                PID,
                62,
                [s, SIGKILL, 0, 0],
                -1,
            )),
            RuleId::TamperSensor,
            "sent signal 9 to the sensor (pid 77) with kill (refused)",
        );
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(
                EventKind::ProcessKill,
                PID,
                234,
                [s, s, SIGKILL, 0],
                0,
            )),
            RuleId::TamperSensor,
            "tgkill",
        );
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(EventKind::ProcessKill, PID, 200, [s, 15, 0, 0], 0)),
            RuleId::TamperSensor,
            "tkill",
        );
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(EventKind::ProcessKill, PID, 129, [s, 19, 0, 0], 0)),
            RuleId::TamperSensor,
            "sent signal 19 to the sensor (pid 77) with rt_sigqueueinfo",
        );
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(EventKind::ProcessKill, PID, 297, [s, s, 9, 0], 0)),
            RuleId::TamperSensor,
            "sent signal 9 to the sensor (pid 77) with rt_tgsigqueueinfo",
        );
        // A signal seen where the kernel generated it: args are the target, its thread, the
        // signal and whether it was for the whole process.
        let generated = |nr: u32, target: u64, signal: u64| {
            let mut e = syscall(
                EventKind::ProcessKill,
                PID,
                nr,
                [target, target, signal, 1],
                0,
            );
            e.flags |= agent_sensor_common::flags::SIGNAL_GENERATED;
            e
        };
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(generated(424, s, 28)),
            RuleId::TamperSensor,
            "sent signal 28 to the sensor (pid 77) with pidfd_send_signal",
        );
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(generated(72, s, 29)),
            RuleId::TamperSensor,
            "sent signal 29 to the sensor (pid 77) from syscall 72",
        );
        assert_silent(fx.feed(generated(424, PID as u64 + 1, 9)));
        let mut fx = Fixture::new();
        let group = (-(SENSOR_PID as i64)) as u64;
        assert_fires(
            fx.feed(syscall(
                EventKind::ProcessKill,
                PID,
                62,
                [group, SIGKILL, 0, 0],
                -1,
            )),
            RuleId::TamperSensor,
            "kill",
        );
        let mut fx = Fixture::new();
        // Its own children, and an existence probe of the sensor.
        assert_silent(fx.feed(syscall(
            EventKind::ProcessKill,
            PID,
            62,
            [PID as u64 + 1, 15, 0, 0],
            0,
        )));
        assert_silent(fx.feed(syscall(EventKind::ProcessKill, PID, 62, [s, 0, 0, 0], 0)));
    }

    #[test]
    fn ptrace_of_the_sensor_fires() {
        let mut fx = Fixture::new();
        let attach = 16;
        assert_fires(
            fx.feed(syscall(
                EventKind::ProcessPtrace,
                PID,
                101,
                [attach, SENSOR_PID as u64, 0, 0],
                -1,
            )),
            RuleId::TamperSensor,
            "ptrace (request 16) on the sensor",
        );
        // A debugger on its own child.
        let child = PID + 1;
        let mut fork = syscall(EventKind::ProcessFork, PID, 57, [0; 4], 0);
        fork.body = crate::events::Body::Fork {
            child_pid: child,
            child_tgid: child,
        };
        fx.feed(fork);
        assert_silent(fx.feed(syscall(
            EventKind::ProcessPtrace,
            PID,
            101,
            [attach, child as u64, 0, 0],
            0,
        )));
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(
                EventKind::ProcessPtrace,
                PID,
                310,
                [SENSOR_PID as u64, 0, 1, 0],
                8,
            )),
            RuleId::TamperSensor,
            "used process_vm_readv on the memory of the sensor (pid 77)",
        );
    }

    #[test]
    fn a_32_bit_syscall_is_a_blind_spot_reported_once() {
        let mut fx = Fixture::new();
        let compat = |nr| {
            syscall(
                EventKind::ProcessCompatSyscall,
                PID,
                nr,
                [nr as u64, 0, 0, 0],
                -2,
            )
        };
        assert_fires(
            fx.feed(compat(5)),
            RuleId::TamperSensor,
            "made a 32-bit syscall (i386 number 5): its 32-bit calls are judged as the 64-bit ones",
        );
        // Another process of the same agent: the same blind spot, already said.
        assert_silent(fx.feed(compat(20)));
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(compat(0x4000_0002)),
            RuleId::TamperSensor,
            "made an x32 syscall (number 2 with the x32 bit)",
        );
    }

    #[test]
    fn bpf_and_module_loading_fire() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(syscall(EventKind::ProcessBpf, PID, 321, [5, 0, 0, 0], -1)),
            RuleId::TamperSensor,
            "called bpf() (command 5) (refused)",
        );
        assert_fires(
            fx.feed(syscall(
                EventKind::ProcessModuleLoad,
                PID,
                313,
                [3, 0, 0, 0],
                -1,
            )),
            RuleId::TamperSensor,
            "finit_module",
        );
    }

    #[test]
    fn changing_pins_policy_or_state_fires_and_reading_them_does_not() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(
                file_op(
                    EventKind::FileUnlink,
                    PID,
                    "/sys/fs/bpf/agent-sensor/events",
                    None,
                )
                .ret(-13),
            ),
            RuleId::TamperSensor,
            "deleted /sys/fs/bpf/agent-sensor/events, a BPF pin (permission denied)",
        );
        assert_fires(
            fx.feed(open(PID, "/etc/agent-sensor/policy.toml", WRITE)),
            RuleId::TamperSensor,
            "part of the sensor (its program, policy or state)",
        );
        assert_fires(
            fx.feed(rename(
                PID,
                "/work/a/x",
                "/var/lib/agent-sensor/novelty/test.json",
            )),
            RuleId::TamperSensor,
            "/var/lib/agent-sensor/novelty/test.json",
        );
        assert_fires(
            fx.feed(open(PID, &format!("/proc/{SENSOR_PID}/mem"), WRITE)),
            RuleId::TamperSensor,
            "a /proc file of the sensor",
        );
        assert_silent(fx.feed(open(PID, "/etc/agent-sensor/policy.toml", RDONLY)));
        assert_silent(fx.feed(open(PID, "/sys/fs/bpf", DIRECTORY)));
        // A write that failed for another reason changed nothing and tried nothing odd.
        assert_silent(
            fx.feed(file_op(EventKind::FileUnlink, PID, "/var/lib/agent-sensor/x", None).ret(-2)),
        );
    }

    #[test]
    fn writing_to_a_cgroup_other_than_its_own_fires() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(open(PID, "/sys/fs/cgroup/cgroup.procs", WRITE)),
            RuleId::TamperSensor,
            "wrote /sys/fs/cgroup/cgroup.procs, a cgroup other than the agent's own",
        );
        assert_fires(
            fx.feed(open(
                PID,
                "/sys/fs/cgroup/agent-sensor/b-2/cgroup.freeze",
                WRITE,
            )),
            RuleId::TamperSensor,
            "/sys/fs/cgroup/agent-sensor/b-2/cgroup.freeze",
        );
        // Its own cgroup and cgroups below it stay within reach of freeze and kill (a write
        // there is only outside its worktree).
        let own = [
            open(PID, &format!("{AGENT_CGROUP}/cgroup.procs"), WRITE),
            file_op(
                EventKind::FileMkdir,
                PID,
                &format!("{AGENT_CGROUP}/worker"),
                None,
            ),
        ];
        for event in own {
            let findings = fx.feed(event);
            assert!(
                findings.iter().all(|f| f.rule != RuleId::TamperSensor),
                "{findings:#?}"
            );
        }
        // Reading is looking.
        assert_silent(fx.feed(open(PID, "/sys/fs/cgroup/cgroup.procs", RDONLY)));
    }

    #[test]
    fn connecting_to_the_control_socket_fires() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(connect_unix(PID, "/var/lib/agent-sensor/control.sock")),
            RuleId::TamperSensor,
            "connected to /var/lib/agent-sensor/control.sock",
        );
        assert_silent(fx.feed(connect_unix(PID, "/run/user/1000/bus")));
    }
}
