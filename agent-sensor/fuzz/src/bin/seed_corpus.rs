//! Writes the seed corpora of the fuzz targets into `corpus/<target>/seed-*`: one valid
//! record per event kind, DNS queries and responses, policy texts (the built-in one first),
//! names to escape. Run by `cargo xtask fuzz --write-seeds`; the files are committed, so a
//! normal fuzz run starts from them without running this.

use std::path::{Path, PathBuf};

// Built like the fuzz targets (with coverage instrumentation), this binary needs the
// instrumentation hooks libFuzzer defines; it never runs libFuzzer's own main.
extern crate libfuzzer_sys;

use agent_sensor::{
    events::dns::{parse_query, parse_response},
    policy::{check, Policy},
};
use agent_sensor_common::{
    EventHeader, EventKind, ExecEvent, ExitEvent, FileEvent, ForkEvent, NetEvent, SockCloseEvent,
    SyscallEvent,
};

fn bytes_of<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: T is one of the shared #[repr(C)] integer-only structs: every byte is
    // initialized (their padding is explicit fields).
    unsafe { std::slice::from_raw_parts((value as *const T).cast(), std::mem::size_of::<T>()) }
}

/// A record: header, payload, tail, with the header's length right.
fn record<P: Copy>(kind: EventKind, payload: &P, tail: &[u8]) -> Vec<u8> {
    let mut header = EventHeader {
        kind: kind as u16,
        flags: 0,
        ktime_ns: 1_000_000_000,
        pid: 4242,
        tgid: 4242,
        ppid: 4241,
        uid: 1000,
        gid: 1000,
        cgroup_id: 7777,
        agent_id: 3,
        ..Default::default()
    };
    header.comm[..6].copy_from_slice(b"claude");
    let len = std::mem::size_of::<EventHeader>() + std::mem::size_of::<P>() + tail.len();
    header.len = len as u32;
    let mut out = bytes_of(&header).to_vec();
    out.extend_from_slice(bytes_of(payload));
    out.extend_from_slice(tail);
    out
}

/// A kernel path walk: components leaf first, each a length byte then its bytes.
fn walk(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()).rev() {
        out.push(part.len() as u8);
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn sockaddr_v4(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut out = 2u16.to_ne_bytes().to_vec();
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip);
    out.extend_from_slice(&[0; 8]);
    out
}

fn sockaddr_v6(ip: [u8; 16], port: u16) -> Vec<u8> {
    let mut out = 10u16.to_ne_bytes().to_vec();
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&[0; 4]);
    out
}

fn sockaddr_unix(path: &[u8]) -> Vec<u8> {
    let mut out = 1u16.to_ne_bytes().to_vec();
    out.extend_from_slice(path);
    out.push(0);
    out
}

/// A DNS query for `name` (UDP form: no length prefix).
fn dns_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut msg = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes());
    msg
}

/// A response to `name`: a CNAME (compressed), an A and an AAAA record.
fn dns_response(name: &str) -> Vec<u8> {
    let mut msg = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
    for label in name.split('.') {
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.extend_from_slice(&[0, 0, 1, 0, 1]);
    msg.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'x', 0xc0, 12]);
    msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 10, 1, 2, 3]);
    msg.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 1, 0, 0, 16]);
    msg.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    msg
}

fn file_record(kind: EventKind, nr: u32, arg: &[u8], arg2: &[u8], resolved: bool) -> Vec<u8> {
    let base = walk("/home/u/work");
    let resolved = if resolved {
        walk("/home/u/work/src/main.rs")
    } else {
        Vec::new()
    };
    let p = FileEvent {
        nr,
        dirfd: -100,
        flags: 0o101,
        mode: 0o644,
        ret: 3,
        dev: (8 << 20) | 1,
        ino: 1234,
        path_len: arg.len() as u16,
        path2_len: arg2.len() as u16,
        resolved_len: resolved.len() as u16,
        base_len: base.len() as u16,
        base2_len: 0,
        ..Default::default()
    };
    let tail = [arg, arg2, &resolved, &base].concat();
    record(kind, &p, &tail)
}

fn net_record(kind: EventKind, nr: u32, addr: &[u8], data: &[u8]) -> Vec<u8> {
    let p = NetEvent {
        nr,
        fd: 5,
        ret: data.len() as i64,
        bytes: data.len() as u64,
        sockaddr_len: addr.len() as u16,
        data_len: data.len() as u16,
        ..Default::default()
    };
    record(kind, &p, &[addr, data].concat())
}

fn syscall_record(kind: EventKind, nr: u32, name: &[u8]) -> Vec<u8> {
    let p = SyscallEvent {
        nr,
        str_len: name.len() as u16,
        args: [1, 2, 3, 4],
        ret: 0,
        ..Default::default()
    };
    record(kind, &p, name)
}

/// One valid record of `kind` (several for kinds whose tail takes different shapes).
fn records_of(kind: EventKind) -> Vec<Vec<u8>> {
    use EventKind as K;
    match kind {
        K::ProcessFork => vec![record(
            kind,
            &ForkEvent {
                child_pid: 4243,
                child_tgid: 4243,
            },
            &[],
        )],
        K::ProcessExec => {
            let filename = b"/usr/bin/git";
            let argv = b"git\0commit\0-m\0msg\0";
            let p = ExecEvent {
                filename_len: filename.len() as u16,
                argv_len: argv.len() as u16,
                old_pid: 4242,
                dev: (8 << 20) | 1,
                ino: 99,
                mode: 0o100755,
                stdio: [4, 2, 2],
                ..Default::default()
            };
            vec![record(kind, &p, &[&filename[..], argv].concat())]
        }
        K::ProcessExit => vec![record(
            kind,
            &ExitEvent {
                exit_code: 1 << 8,
                ..Default::default()
            },
            &[],
        )],
        K::ProcessMemfd => vec![syscall_record(kind, 319, b"payload")],
        K::ProcessSetId => vec![syscall_record(kind, 105, b"")],
        K::ProcessPtrace => vec![syscall_record(kind, 101, b"")],
        K::ProcessKill => vec![syscall_record(kind, 62, b"")],
        K::ProcessBpf => vec![syscall_record(kind, 321, b"")],
        K::ProcessModuleLoad => vec![syscall_record(kind, 313, b"")],
        K::ProcessIoUringSetup => vec![syscall_record(kind, 425, b"")],
        K::ProcessCompatSyscall => vec![syscall_record(kind, 5, b"")],
        K::FileOpen => vec![
            file_record(kind, 257, b"src/main.rs", b"", true),
            file_record(kind, 257, b"../x/./y", b"", false),
        ],
        K::FileRename => vec![file_record(kind, 316, b"a.txt", b"/tmp/b.txt", false)],
        K::FileLink => vec![file_record(kind, 265, b"a", b"../b", false)],
        K::FileSymlink => vec![file_record(kind, 266, b"/etc/passwd", b"link", false)],
        K::FileUnlink => vec![file_record(kind, 263, b"old.rs", b"", false)],
        K::FileChmod => vec![file_record(kind, 268, b"/home/u/.bashrc", b"", false)],
        K::FileChown => vec![file_record(kind, 260, b"f", b"", false)],
        K::FileTruncate => vec![file_record(kind, 76, b"f", b"", false)],
        K::FileMkdir => vec![file_record(kind, 258, b"newdir", b"", false)],
        K::FileChdir => vec![file_record(kind, 80, b"src", b"", true)],
        K::FileXattr => vec![file_record(kind, 188, b"/usr/local/bin/tool", b"", false)],
        K::FileMknod => vec![file_record(kind, 259, b"fifo", b"", false)],
        K::FileUtime => vec![file_record(kind, 280, b"/home/u/.bashrc", b"", false)],
        K::FileMount => vec![file_record(kind, 165, b"/home/u/.bashrc", b"wt/rc", false)],
        K::NetConnect => vec![
            net_record(kind, 42, &sockaddr_v4([93, 184, 216, 34], 443), b""),
            net_record(
                kind,
                42,
                &sockaddr_v6(
                    [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    443,
                ),
                b"",
            ),
        ],
        K::NetBind => vec![net_record(kind, 49, &sockaddr_unix(b"/run/x.sock"), b"")],
        K::NetListen => vec![net_record(kind, 50, b"", b"")],
        K::NetAccept => vec![net_record(
            kind,
            288,
            &sockaddr_v4([127, 0, 0, 1], 40000),
            b"",
        )],
        K::NetSend => vec![
            net_record(
                kind,
                44,
                &sockaddr_v4([127, 0, 0, 53], 53),
                &dns_query("api.example.com", 1),
            ),
            net_record(
                kind,
                44,
                b"",
                &dns_query("aGVsbG8gd29ybGQ.exfil.example.net", 16),
            ),
            net_record(
                kind,
                44,
                &sockaddr_unix(b"\0abstract"),
                b"GET / HTTP/1.1\r\n\r\n",
            ),
        ],
        K::NetRecv => vec![net_record(
            kind,
            45,
            &sockaddr_v4([127, 0, 0, 53], 53),
            &dns_response("api.example.com"),
        )],
        K::NetClose => {
            let mut peer_addr = [0u8; 16];
            peer_addr[..4].copy_from_slice(&[93, 184, 216, 34]);
            vec![record(
                kind,
                &SockCloseEvent {
                    fd: 5,
                    family: 2,
                    peer_port: 443,
                    peer_addr,
                    local_port: 40000,
                    bytes_sent: 1000,
                    bytes_received: 20000,
                    ..Default::default()
                },
                &[],
            )]
        }
        K::NetDenied => vec![net_record(
            kind,
            42,
            &sockaddr_v4([203, 0, 113, 7], 443),
            b"",
        )],
        // socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) of a monitored agent: no address, the
        // socket asked for packed into `bytes`.
        K::NetSocket => {
            let p = NetEvent {
                nr: 41,
                fd: -1,
                ret: 5,
                bytes: 2 | 3 << 16 | 1 << 32,
                ..Default::default()
            };
            vec![record(kind, &p, &[])]
        }
        // A kind this generator does not know the payload of yet: a net-shaped one.
        #[allow(unreachable_patterns)]
        _ => vec![net_record(kind, 42, &sockaddr_v4([10, 0, 0, 1], 443), b"")],
    }
}

const SMALL_POLICY: &str = r#"[sensor]
mode = "enforce"

[discovery]
profile = "test"

[profiles.test]
sensitive = ["/srv/secrets/**", "!/srv/secrets/public/*"]
startup = ["{worktree}/.git/hooks/**", "~/.bashrc"]
readable = ["~/.config/gh/hosts.yml"]

[profiles.test.egress]
hosts = ["api.anthropic.com", "*.github.com"]
cidrs = ["10.0.0.0/8"]
ports = [443]

[profiles.test.responses]
"exfil.sensitive_then_egress" = "kill"

[agents.builder]
profile = "test"
worktree = "~/work/{a,b}"
writable = ["/var/cache/builder/**"]

[rules."exfil.dns_tunnel"]
severity = "critical"
response = "freeze"
"#;

/// Valid TOML, wrong in many ways: every error is reported, each with its line.
const BROKEN_POLICY: &str = "[profiles.x]\nextends = \"y\"\nsensitive = 3\n\
                             [rules.\"no.such\"]\nseverity = \"loud\"\n\
                             [sensor]\nmode = \"loud\"\nbogus = 1\n\
                             [profiles.y]\nextends = \"x\"\n";

/// Not TOML.
const SYNTAX_POLICY: &str = "[sensor\nmode = \"monitor\n[profiles.a]\nsensitive = [\"/x\",\n";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(dir.join(format!("seed-{name}")), bytes)
}

fn main() -> std::io::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let dir = |target: &str| -> std::io::Result<PathBuf> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        // Old seeds go; whatever the fuzzer found stays.
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with("seed-") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(dir)
    };

    let decode = dir("decode")?;
    for kind in EventKind::ALL {
        for (n, bytes) in records_of(kind).into_iter().enumerate() {
            if let Err(e) = agent_sensor::events::decode(&bytes) {
                panic!(
                    "the seed record {n} of {} does not decode: {e}",
                    kind.name()
                );
            }
            let name = kind.name().replace('.', "-");
            write(&decode, &format!("{name}-{n}"), &bytes)?;
        }
    }

    let dns = dir("dns")?;
    assert!(parse_query(&dns_query("api.example.com", 1)).is_some());
    assert_eq!(
        parse_response(&dns_response("api.example.com")).map(|a| a.len()),
        Some(2)
    );
    write(&dns, "query-a", &dns_query("api.example.com", 1))?;
    write(
        &dns,
        "query-txt",
        &dns_query("aGVsbG8.exfil.example.net", 16),
    )?;
    write(&dns, "response", &dns_response("api.example.com"))?;

    let policy = dir("policy")?;
    write(&policy, "builtin", Policy::builtin_text().as_bytes())?;
    write(&policy, "small", SMALL_POLICY.as_bytes())?;
    write(&policy, "broken", BROKEN_POLICY.as_bytes())?;
    write(&policy, "syntax", SYNTAX_POLICY.as_bytes())?;
    assert!(
        check(SMALL_POLICY, "small").is_ok(),
        "{:?}",
        check(SMALL_POLICY, "small").err()
    );
    assert!(check(BROKEN_POLICY, "broken").is_err_and(|e| e.len() > 1));
    assert!(check(SYNTAX_POLICY, "syntax").is_err());

    let escape = dir("escape")?;
    write(&escape, "all-bytes", &(0..=255u8).collect::<Vec<_>>())?;
    write(
        &escape,
        "names",
        "src/ünï ✓\\x41 \"q\"\n\x1b[31m".as_bytes(),
    )?;
    write(&escape, "invalid-utf8", b"\xff\xfe\xc3 bad \xe2\x82")?;
    eprintln!("seed corpora written under {}", root.display());
    Ok(())
}
