//! Kernel capture: what the sensor reports for real processes started in a tracked cgroup.
//! File paths must be the kernel's canonical ones (symlinks, cwd, dirfd, `..` resolved), network
//! events must carry the real address and payload size, and process events the real ids.
//!
//! Workloads run `/usr/bin/python3` by absolute path: a pyenv shim would run shell scripts in
//! the tracked cgroup and add unrelated events.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, UdpSocket},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Stdio,
};

use agent_sensor_tests::*;
use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";

/// Runs `script` (with `args` as `sys.argv[1:]`) in a fresh tracked cgroup under a fresh
/// sensor; returns the python's pid and every event. The script must exit 0.
fn capture(tag: &str, script: &str, args: &[&str]) -> (u32, Vec<Value>) {
    capture_with(tag, script, args, &[])
}

/// As `capture`, with more arguments for `agent-sensor run`.
fn capture_with(tag: &str, script: &str, args: &[&str], sensor_args: &[&str]) -> (u32, Vec<Value>) {
    let cgroup = TestCgroup::new(tag);
    let mut run = vec!["--track-cgroup", cgroup.path.to_str().unwrap()];
    run.extend_from_slice(sensor_args);
    let mut sensor = Sensor::start(&run);
    let pid = run_ok(cgroup.command(PYTHON).arg("-c").arg(script).args(args));
    (pid, sensor.stop())
}

/// The first event of `kind` from `pid` that matches `pred`; panics listing that kind's events.
fn find<'a>(events: &'a [Value], kind: &str, pid: u32, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let candidates = of_kind(events, kind, pid);
    candidates
        .iter()
        .copied()
        .find(|e| pred(e))
        .unwrap_or_else(|| panic!("no matching {kind} event of pid {pid} among {candidates:#?}"))
}

/// A scratch directory and its canonical path (the temp dir itself may sit behind a symlink).
fn scratch(tag: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let canonical = std::fs::canonicalize(&dir.0).expect("canonicalize temp dir");
    (dir, canonical)
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

/// `cargo xtask test` runs this suite twice: on the typed loads a kernel with the
/// `bpf_rdonly_cast` kfunc gets, and, with this variable set, on the `bpf_probe_read_kernel`
/// reads older kernels get. This test holds each run to the side it is meant to test.
#[test]
fn kernel_structs_are_read_the_way_this_run_asks() {
    if !can_run_kernel_tests("kernel_structs_are_read_the_way_this_run_asks") {
        return;
    }
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").expect("read /proc/kallsyms");
    let has_kfunc = kallsyms
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some("bpf_rdonly_cast"));
    let expected = if std::env::var_os("AGENT_SENSOR_NO_TYPED_CASTS").is_some() || !has_kfunc {
        "kernel structs are read with bpf_probe_read_kernel"
    } else {
        "kernel structs are read with typed loads (bpf_rdonly_cast)"
    };
    let mut sensor = Sensor::start(&[]);
    assert!(
        sensor.log.iter().any(|line| line.contains(expected)),
        "expected `{expected}` in the sensor log:\n{}",
        sensor.log.join("\n")
    );
    sensor.stop_only();
}

#[test]
fn open_through_a_symlink_reports_the_target_with_its_dev_and_ino() {
    if !can_run_kernel_tests("open_through_a_symlink_reports_the_target_with_its_dev_and_ino") {
        return;
    }
    let (_dir, root) = scratch("symlink");
    let target = root.join("target.txt");
    let link = root.join("link.txt");
    std::fs::write(&target, "x").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let (pid, events) = capture(
        "symlink",
        "import sys\nopen(sys.argv[1]).close()",
        &[s(&link)],
    );

    let open = find(&events, "file.open", pid, |e| e["path_arg"] == s(&link));
    // The header's parent, read from the task's BTF-typed real_parent: this test process.
    assert_eq!(open["ppid"], std::process::id(), "{open:#}");
    // The kernel followed the link: the object opened is the target, not the link.
    assert_eq!(open["path"], s(&target), "{open:#}");
    assert_eq!(open["path_source"], "kernel", "{open:#}");
    assert!(open["ret"].as_i64().unwrap() >= 0, "{open:#}");
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(open["ino"], meta.ino(), "{open:#}");
    // The kernel keeps `major << 20 | minor`; the sensor reports stat(2)'s encoding.
    assert_eq!(
        open["dev"],
        meta.dev(),
        "dev is not stat's st_dev: {open:#}"
    );
}

#[test]
fn open_of_a_relative_path_after_chdir_is_absolute_and_canonical() {
    if !can_run_kernel_tests("open_of_a_relative_path_after_chdir_is_absolute_and_canonical") {
        return;
    }
    let (_dir, root) = scratch("chdir");
    std::fs::create_dir(root.join("work")).unwrap();
    std::fs::write(root.join("work/file.txt"), "x").unwrap();

    // The python starts in the test's own cwd; only the chdir makes "file.txt" resolve.
    let (pid, events) = capture(
        "chdir",
        "import os, sys\nos.chdir(sys.argv[1])\nopen('file.txt').close()",
        &[s(&root.join("work"))],
    );

    let chdir = find(&events, "file.chdir", pid, |e| {
        e["path_arg"] == s(&root.join("work"))
    });
    assert_eq!(chdir["path"], s(&root.join("work")), "{chdir:#}");
    let open = find(&events, "file.open", pid, |e| e["path_arg"] == "file.txt");
    assert_eq!(open["path"], s(&root.join("work/file.txt")), "{open:#}");
    assert_eq!(open["path_source"], "kernel", "{open:#}");
}

#[test]
fn openat_with_a_dirfd_is_resolved_against_that_directory() {
    if !can_run_kernel_tests("openat_with_a_dirfd_is_resolved_against_that_directory") {
        return;
    }
    let (_dir, root) = scratch("dirfd");
    std::fs::create_dir(root.join("dir")).unwrap();
    std::fs::write(root.join("dir/inner.txt"), "x").unwrap();

    // The cwd is not the directory: only the dirfd makes "inner.txt" resolve.
    let script = "import os, sys\n\
                  fd = os.open(sys.argv[1], os.O_RDONLY)\n\
                  os.close(os.open('inner.txt', os.O_RDONLY, dir_fd=fd))";
    let (pid, events) = capture("dirfd", script, &[s(&root.join("dir"))]);

    let dir_open = find(&events, "file.open", pid, |e| {
        e["path_arg"] == s(&root.join("dir"))
    });
    let dirfd = dir_open["ret"].as_i64().unwrap();
    let open = find(&events, "file.open", pid, |e| e["path_arg"] == "inner.txt");
    assert_eq!(open["syscall"], "openat", "{open:#}");
    assert_eq!(open["dirfd"], dirfd, "{open:#}");
    assert_eq!(open["path"], s(&root.join("dir/inner.txt")), "{open:#}");
    assert_eq!(open["path_source"], "kernel", "{open:#}");
}

#[test]
fn open_through_dotdot_is_resolved_by_the_kernel() {
    if !can_run_kernel_tests("open_through_dotdot_is_resolved_by_the_kernel") {
        return;
    }
    let (_dir, root) = scratch("dotdot");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(root.join("elsewhere/deep")).unwrap();
    std::fs::write(root.join("file.txt"), "x").unwrap();
    std::fs::write(root.join("elsewhere/file.txt"), "y").unwrap();
    // "hop/.." is the parent of hop's target ("elsewhere"), not `root` as text would say.
    std::os::unix::fs::symlink(root.join("elsewhere/deep"), root.join("hop")).unwrap();

    let script = "import os, sys\n\
                  os.chdir(sys.argv[1])\n\
                  open('sub/../file.txt').close()\n\
                  open('hop/../file.txt').close()";
    let (pid, events) = capture("dotdot", script, &[s(&root)]);

    let plain = find(&events, "file.open", pid, |e| {
        e["path_arg"] == "sub/../file.txt"
    });
    assert_eq!(plain["path"], s(&root.join("file.txt")), "{plain:#}");
    assert_eq!(plain["path_source"], "kernel", "{plain:#}");
    let via_link = find(&events, "file.open", pid, |e| {
        e["path_arg"] == "hop/../file.txt"
    });
    assert_eq!(
        via_link["path"],
        s(&root.join("elsewhere/file.txt")),
        "{via_link:#}"
    );
}

#[test]
fn paths_are_walked_across_mount_points() {
    if !can_run_kernel_tests("paths_are_walked_across_mount_points") {
        return;
    }
    // /dev (devtmpfs) and /proc (procfs) are mounts of their own: the walk climbs from each
    // file to its mount's root, then on from the mount point in the parent mount.
    let script = "import os\n\
                  os.chdir('/dev')\n\
                  open('null').close()\n\
                  open('/proc/self/status').close()";
    let (pid, events) = capture("mounts", script, &[]);

    let null = find(&events, "file.open", pid, |e| e["path_arg"] == "null");
    assert_eq!(null["path"], "/dev/null", "{null:#}");
    assert_eq!(null["path_source"], "kernel", "{null:#}");
    let status = find(&events, "file.open", pid, |e| {
        e["path_arg"] == "/proc/self/status"
    });
    assert_eq!(status["path"], format!("/proc/{pid}/status"), "{status:#}");
}

/// A bind mount the test made; unmounted when dropped, panic or not.
struct BindMount(PathBuf);

impl BindMount {
    fn new(source: &Path, target: &Path) -> Self {
        let status = std::process::Command::new("mount")
            .arg("--bind")
            .arg(source)
            .arg(target)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount --bind {source:?} {target:?}");
        BindMount(target.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn paths_are_walked_through_nested_bind_mounts() {
    if !can_run_kernel_tests("paths_are_walked_through_nested_bind_mounts") {
        return;
    }
    // outer: a bind mount of a subdirectory (its root is not its filesystem's root); inner:
    // a bind mount on a directory inside it. A walk must know each mount's own root.
    let (_dir, root) = scratch("binds");
    for dir in ["src/x", "outer", "data"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("data/file.txt"), "x").unwrap();
    let outer = BindMount::new(&root.join("src"), &root.join("outer"));
    let inner = BindMount::new(&root.join("data"), &root.join("outer/x"));
    let target = root.join("outer/x/file.txt");

    let script = "import sys\nopen(sys.argv[1]).close()";
    let (pid, events) = capture("binds", script, &[s(&target)]);
    drop(inner);
    drop(outer);

    let open = find(&events, "file.open", pid, |e| e["path_arg"] == s(&target));
    assert_eq!(open["path"], s(&target), "{open:#}");
}

#[test]
fn open_through_a_hard_link_reports_the_link_path_and_the_shared_inode() {
    if !can_run_kernel_tests("open_through_a_hard_link_reports_the_link_path_and_the_shared_inode")
    {
        return;
    }
    let (_dir, root) = scratch("hardlink");
    std::fs::create_dir(root.join("other")).unwrap();
    let original = root.join("original.txt");
    let hard = root.join("other/hard.txt");
    std::fs::write(&original, "x").unwrap();
    std::fs::hard_link(&original, &hard).unwrap();

    let (pid, events) = capture(
        "hardlink",
        "import sys\nopen(sys.argv[1]).close()",
        &[s(&hard)],
    );

    let open = find(&events, "file.open", pid, |e| e["path_arg"] == s(&hard));
    // A hard link is a name of its own: the path is the one walked, the inode is shared.
    assert_eq!(open["path"], s(&hard), "{open:#}");
    assert_eq!(open["path_source"], "kernel", "{open:#}");
    let ino = std::fs::metadata(&original).unwrap().ino();
    assert_eq!(open["ino"], ino, "{open:#}");
}

#[test]
fn path_only_file_calls_report_canonical_paths() {
    if !can_run_kernel_tests("path_only_file_calls_report_canonical_paths") {
        return;
    }
    let (_dir, root) = scratch("fileops");
    std::fs::write(root.join("a.txt"), "hello").unwrap();

    // Relative names after chdir: the sensor must join them onto the kernel's cwd.
    let script = "import os, sys\n\
                  os.chdir(sys.argv[1])\n\
                  os.rename('a.txt', 'b.txt')\n\
                  os.mkdir('sub')\n\
                  os.chmod('b.txt', 0o600)\n\
                  os.symlink('b.txt', 'sym')\n\
                  os.link('b.txt', 'sub/hard.txt')\n\
                  os.truncate('b.txt', 1)\n\
                  os.unlink('sym')";
    let (pid, events) = capture("fileops", script, &[s(&root)]);
    let p = |name: &str| root.join(name).to_str().unwrap().to_string();
    // Matched by the argument as passed: python's start-up may touch other files.
    let one = |kind: &str, path_arg: &str| {
        let e = find(&events, kind, pid, |e| e["path_arg"] == path_arg);
        assert_eq!(e["ret"], 0, "{e:#}");
        assert!(
            matches!(e["path_source"].as_str(), Some("kernel" | "resolved")),
            "{e:#}"
        );
        e
    };

    let rename = one("file.rename", "a.txt");
    assert_eq!(rename["path"], p("a.txt"), "{rename:#}");
    assert_eq!(rename["path2"], p("b.txt"), "{rename:#}");
    let mkdir = one("file.mkdir", "sub");
    assert_eq!(mkdir["path"], p("sub"), "{mkdir:#}");
    let chmod = one("file.chmod", "b.txt");
    assert_eq!(chmod["path"], p("b.txt"), "{chmod:#}");
    assert_eq!(chmod["mode"], 0o600, "{chmod:#}");
    let symlink = one("file.symlink", "sym");
    // The new link is the path; its target is stored text, kept as passed.
    assert_eq!(symlink["path"], p("sym"), "{symlink:#}");
    assert_eq!(symlink["path2_arg"], "b.txt", "{symlink:#}");
    let link = one("file.link", "b.txt");
    assert_eq!(link["path"], p("b.txt"), "{link:#}");
    assert_eq!(link["path2"], p("sub/hard.txt"), "{link:#}");
    let truncate = one("file.truncate", "b.txt");
    assert_eq!(truncate["path"], p("b.txt"), "{truncate:#}");
    assert_eq!(truncate["arg"], 1, "the new length: {truncate:#}");
    let unlink = one("file.unlink", "sym");
    assert_eq!(unlink["path"], p("sym"), "{unlink:#}");
}

/// A listener on loopback that takes one connection and returns what it received.
fn loopback_sink() -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got
    });
    (port, server)
}

#[test]
fn loopback_tcp_connect_and_send_are_reported() {
    if !can_run_kernel_tests("loopback_tcp_connect_and_send_are_reported") {
        return;
    }
    let (port, server) = loopback_sink();

    let script = "import socket, sys\n\
                  s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                  s.sendall(b'hello sensor')\n\
                  s.close()";
    let (pid, events) = capture("tcp", script, &[&port.to_string()]);
    assert_eq!(server.join().unwrap(), b"hello sensor");

    let connect = find(&events, "net.connect", pid, |e| e["addr"]["port"] == port);
    assert_eq!(connect["addr"]["ip"], "127.0.0.1", "{connect:#}");
    assert_eq!(connect["ret"], 0, "{connect:#}");
    // sendall is sendto(fd, buf, len, 0, NULL, 0) on Linux: no address, the connected fd.
    let send = find(&events, "net.send", pid, |e| e["fd"] == connect["fd"]);
    assert_eq!(send["bytes"], 12, "{send:#}");
    assert_eq!(send["ret"], 12, "{send:#}");
    // Bytes per socket, counted in the kernel and reported at close.
    let close = find(&events, "net.close", pid, |e| e["fd"] == connect["fd"]);
    assert_eq!(
        close["addr"],
        json!({"ip": "127.0.0.1", "port": port}),
        "{close:#}"
    );
    assert_eq!(close["bytes_sent"], 12, "{close:#}");
    assert_eq!(close["bytes_received"], 0, "{close:#}");
    assert_eq!(close["at_exit"], false, "{close:#}");
}

/// A connect or an addressed send made through io_uring (`IORING_OP_CONNECT`,
/// `IORING_OP_SENDMSG`) makes no syscall of its own: each is recorded at its submission as
/// the syscall that does the same, flagged `io_uring`, with the address and data as passed.
#[test]
fn io_uring_connects_and_sends_are_recorded() {
    if !can_run_io_uring_tests("io_uring_connects_and_sends_are_recorded") {
        return;
    }
    let (port, server) = loopback_sink();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let (port_arg, udp_arg) = (port.to_string(), udp_port.to_string());
    let tcp = [
        "socket",
        "2",
        "1",
        "0",
        "connect",
        "last",
        "127.0.0.1",
        &port_arg,
    ];
    let udp_send = [
        "socket",
        "2",
        "2",
        "0",
        "sendmsg",
        "last",
        "127.0.0.1",
        &udp_arg,
        "ring-data",
    ];
    // IORING_OP_SEND with a destination on the same socket (`@2`), then on a connected one.
    let send = ["send", "@2", "127.0.0.1", &udp_arg, "ring-send"];
    let connected_send = [
        "socket",
        "2",
        "2",
        "0",
        "connect",
        "last",
        "127.0.0.1",
        &udp_arg,
        "sendc",
        "@5",
        "ring-connected",
    ];
    let ops = [&tcp[..], &udp_send[..], &send[..], &connected_send[..]].concat();
    let (pid, events) = capture("uringnet", IO_URING_PY, &ops);
    assert_eq!(server.join().unwrap(), b"", "the connection was accepted");
    let mut got = [0u8; 64];
    udp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    for expected in [&b"ring-data"[..], b"ring-send", b"ring-connected"] {
        let (n, _) = udp.recv_from(&mut got).expect("the datagram arrived");
        assert_eq!(&got[..n], expected);
    }

    let via_ring = |e: &Value| e["flags"] == json!(["io_uring"]);
    let connect = find(&events, "net.connect", pid, via_ring);
    assert_eq!(
        connect["addr"],
        json!({"ip": "127.0.0.1", "port": port}),
        "{connect:#}"
    );
    assert_eq!(connect["syscall"], "connect", "{connect:#}");
    let send = find(&events, "net.send", pid, via_ring);
    assert_eq!(
        send["addr"],
        json!({"ip": "127.0.0.1", "port": udp_port}),
        "{send:#}"
    );
    assert_eq!(send["syscall"], "sendmsg", "{send:#}");
    assert_eq!(send["bytes"], 9, "{send:#}");
    // The sends: as sendto, the destination read from the request's copy of it, the data
    // from the process's buffer.
    let sends: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "net.send" && e["pid"] == pid && via_ring(e))
        .filter(|e| e["syscall"] == "sendto")
        .map(|e| {
            (
                e["bytes"].clone(),
                e["addr_from_connect"].clone(),
                e["addr"].clone(),
            )
        })
        .collect();
    // The connected socket's destination is the one its connect named.
    let to = json!({"ip": "127.0.0.1", "port": udp_port});
    assert_eq!(
        sends,
        [
            (json!(9), json!(false), to.clone()),
            (json!(14), json!(true), to)
        ],
        "{events:#?}"
    );
}

/// A close looks for counted bytes only in a process known to own some (the flag its first
/// counted socket sets): a close by another thread, maybe on another CPU, right after the
/// first bytes must still see it.
#[test]
fn a_socket_another_thread_sent_over_is_reported_at_its_close() {
    if !can_run_kernel_tests("a_socket_another_thread_sent_over_is_reported_at_its_close") {
        return;
    }
    let (port, server) = loopback_sink();
    let script = "import socket, sys, threading\n\
                  s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                  t = threading.Thread(target=lambda: s.sendall(b'from a thread'))\n\
                  t.start()\n\
                  t.join()\n\
                  s.close()";
    let (pid, events) = capture("sockthread", script, &[&port.to_string()]);
    assert_eq!(server.join().unwrap(), b"from a thread");
    let connect = find(&events, "net.connect", pid, |e| e["addr"]["port"] == port);
    let close = find(&events, "net.close", pid, |e| e["fd"] == connect["fd"]);
    assert_eq!(close["bytes_sent"], 13, "{close:#}");
    assert_eq!(close["at_exit"], false, "{close:#}");
}

#[test]
fn socket_bytes_are_reported_when_the_process_exits_without_closing() {
    if !can_run_kernel_tests("socket_bytes_are_reported_when_the_process_exits_without_closing") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(&[7u8; 3000]).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got.len()
    });
    // os._exit: no close() syscall; the kernel closes the socket at exit.
    let script = "import socket, sys, os\n\
                  s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                  got = 0\n\
                  while got < 3000: got += len(s.recv(4096))\n\
                  os.write(s.fileno(), b'x' * 100)\n\
                  os._exit(0)";
    let (pid, events) = capture("sockexit", script, &[&port.to_string()]);
    assert_eq!(server.join().unwrap(), 100);
    let close = find(&events, "net.close", pid, |e| e["at_exit"] == true);
    assert_eq!(close["bytes_sent"], 100, "{close:#}");
    assert_eq!(close["bytes_received"], 3000, "{close:#}");
    assert_eq!(
        close["addr"],
        json!({"ip": "127.0.0.1", "port": port}),
        "{close:#}"
    );
    assert_eq!(close["flags"], json!(["released_unseen"]), "{close:#}");
}

#[test]
fn a_socket_released_without_a_close_is_reported_when_its_fd_carries_another() {
    if !can_run_kernel_tests(
        "a_socket_released_without_a_close_is_reported_when_its_fd_carries_another",
    ) {
        return;
    }
    let (first_port, first) = loopback_sink();
    let (second_port, second) = loopback_sink();
    // dup2 puts the second socket at the first one's fd and releases the first: no close
    // call for it. Bytes then go through that fd to the second socket.
    let script = "import socket, sys, os\n\
                  a = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                  a.sendall(b'12345')\n\
                  b = socket.create_connection(('127.0.0.1', int(sys.argv[2])))\n\
                  os.dup2(b.fileno(), a.fileno())\n\
                  os.write(a.fileno(), b'123456789')\n\
                  a.close()\n\
                  b.close()";
    let (pid, events) = capture(
        "sockdup2",
        script,
        &[&first_port.to_string(), &second_port.to_string()],
    );
    assert_eq!(first.join().unwrap(), b"12345");
    assert_eq!(second.join().unwrap(), b"123456789");
    let released = find(&events, "net.close", pid, |e| {
        e["addr"]["port"] == first_port
    });
    assert_eq!(released["bytes_sent"], 5, "{released:#}");
    assert_eq!(
        released["flags"],
        json!(["released_unseen"]),
        "{released:#}"
    );
    assert_eq!(released["at_exit"], false, "{released:#}");
    let closed = find(&events, "net.close", pid, |e| {
        e["addr"]["port"] == second_port
    });
    assert_eq!(closed["fd"], released["fd"], "{closed:#}");
    assert_eq!(closed["bytes_sent"], 9, "{closed:#}");
    assert_eq!(closed["flags"], json!([]), "{closed:#}");
    // Each socket is reported once; b's own fd moved no bytes and reports nothing.
    let closes = events
        .iter()
        .filter(|e| e["kind"] == "net.close" && e["pid"] == pid)
        .count();
    assert_eq!(closes, 2, "{events:#?}");
}

#[test]
fn udp_dns_query_is_reported_with_its_name_and_type() {
    if !can_run_kernel_tests("udp_dns_query_is_reported_with_its_name_and_type") {
        return;
    }
    // The sensor parses sent data as DNS only towards port 53 (or with no address), so the
    // responder needs port 53; nothing listens there on the CI machine.
    let (socket, on_port_53) = match UdpSocket::bind("127.0.0.1:53") {
        Ok(socket) => (socket, true),
        Err(e) => {
            eprintln!(
                "udp_dns_query_is_reported_with_its_name_and_type: 127.0.0.1:53 is taken ({e}); \
                 the DNS name assertion is SKIPPED, only the send itself is checked"
            );
            (UdpSocket::bind("127.0.0.1:0").unwrap(), false)
        }
    };
    let port = socket.local_addr().unwrap().port();
    let responder = std::thread::spawn(move || answer_dns(socket, [127, 0, 0, 1], 1));
    // The name resolves to loopback, where this sink waits for the "agent" to connect.
    let (tcp_port, server) = loopback_sink();

    // The script exits non-zero unless the answer carries 127.0.0.1: the exchange really ran.
    let script = "import socket, struct, sys\n\
                  name = b''.join(bytes([len(p)]) + p for p in b'exfil-test.example.com'.split(b'.'))\n\
                  query = struct.pack('>HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0) + name + b'\\0' + struct.pack('>HH', 1, 1)\n\
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.settimeout(10)\n\
                  s.sendto(query, ('127.0.0.1', int(sys.argv[1])))\n\
                  answer, _ = s.recvfrom(512)\n\
                  ok = answer[:2] == b'\\x42\\x42' and answer.endswith(bytes([127, 0, 0, 1]))\n\
                  c = socket.create_connection(('127.0.0.1', int(sys.argv[2])))\n\
                  c.sendall(b'payload')\n\
                  c.close()\n\
                  sys.exit(0 if ok else 3)";
    let (pid, events) = capture("dns", script, &[&port.to_string(), &tcp_port.to_string()]);
    responder.join().unwrap();
    assert_eq!(server.join().unwrap(), b"payload");

    let send = find(&events, "net.send", pid, |e| e["addr"]["port"] == port);
    assert_eq!(send["addr"]["ip"], "127.0.0.1", "{send:#}");
    assert_eq!(send["syscall"], "sendto", "{send:#}");
    assert_eq!(
        send["bytes"], 40,
        "12-byte header + 24-byte name + 4: {send:#}"
    );
    if !on_port_53 {
        return;
    }
    assert_eq!(
        send["dns"],
        json!({"name": "exfil-test.example.com", "type": "A"}),
        "{send:#}"
    );
    // The answer, mapped to the name it answers.
    let recv = find(&events, "net.recv", pid, |e| e["addr"]["port"] == 53);
    assert_eq!(
        recv["dns_answers"],
        json!([{"name": "exfil-test.example.com", "ip": "127.0.0.1", "ttl": 60}]),
        "{recv:#}"
    );
    // Later traffic to that address carries the name the agent resolved it from.
    let connect = find(&events, "net.connect", pid, |e| {
        e["addr"]["port"] == tcp_port
    });
    assert_eq!(connect["dns_name"], "exfil-test.example.com", "{connect:#}");
    let close = find(&events, "net.close", pid, |e| e["fd"] == connect["fd"]);
    assert_eq!(close["dns_name"], "exfil-test.example.com", "{close:#}");
    assert_eq!(close["bytes_sent"], 7, "{close:#}");
}

/// DNS answers received with 32-bit calls (i386's `recvmsg`, whose `struct msghdr` has 32-bit
/// fields, and `socketcall`'s `recvmsg` and `recvfrom`) are read like a 64-bit `recvfrom`'s:
/// the answer's names and addresses (from which an enforced agent's allowlist learns).
#[test]
fn dns_answers_received_with_32_bit_calls_are_read() {
    if !can_run_kernel_tests("dns_answers_received_with_32_bit_calls_are_read") {
        return;
    }
    // Answers are parsed only from port 53.
    let resolver = UdpSocket::bind("127.0.0.77:53").expect("loopback listener on 127.0.0.77:53");
    let hows = ["recvmsg", "socketcall-recvmsg", "socketcall-recvfrom"];
    let responder = std::thread::spawn(move || answer_dns(resolver, [127, 0, 0, 9], 3));
    let queries: Vec<String> = (0..hows.len())
        .map(|i| dns_query_hex(0x4200 + i as u16, &format!("i386-{i}.example.com"), 1))
        .collect();
    let mut args = Vec::new();
    for (how, query) in hows.iter().zip(&queries) {
        args.extend(["query", how, "127.0.0.77", "53", query.as_str()]);
    }
    let (pid, events) = capture("dns32", SYSCALL32_PY, &args);
    responder.join().unwrap();
    let answers: Vec<_> = of_kind(&events, "net.recv", pid)
        .iter()
        .map(|e| {
            (
                e["syscall"].clone(),
                e["flags"].clone(),
                e["addr"].clone(),
                e["dns_answers"].clone(),
            )
        })
        .collect();
    let expected: Vec<_> = (0..hows.len())
        .map(|i| {
            (
                json!("recvfrom"),
                json!(["i386"]),
                json!({"ip": "127.0.0.77", "port": 53}),
                json!([{"name": format!("i386-{i}.example.com"), "ip": "127.0.0.9", "ttl": 60}]),
            )
        })
        .collect();
    assert_eq!(answers, expected, "{events:#?}");
}

#[test]
fn fork_kill_memfd_and_setuid_are_reported() {
    if !can_run_kernel_tests("fork_kill_memfd_and_setuid_are_reported") {
        return;
    }
    // ptrace is not in python's os module, so it is not exercised here.
    let script = "import os\n\
                  child = os.fork()\n\
                  if child == 0:\n    os._exit(7)\n\
                  os.kill(child, 0)\n\
                  os.waitpid(child, 0)\n\
                  os.memfd_create('sensor-test-memfd')\n\
                  os.setuid(0)\n\
                  print(child)";
    let cgroup = TestCgroup::new("process");
    let mut sensor = Sensor::start(&["--track-cgroup", cgroup.path.to_str().unwrap()]);
    let python = cgroup
        .command(PYTHON)
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python");
    let pid = python.id();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let child: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let events = sensor.stop();

    let fork = find(&events, "process.fork", pid, |e| e["child_tgid"] == child);
    assert_eq!(fork["tgid"], pid, "{fork:#}");
    assert_ne!(fork["child_tgid"], fork["tgid"], "{fork:#}");
    assert_eq!(fork["thread"], false, "{fork:#}");
    let exit = find(&events, "process.exit", child, |_| true);
    assert_eq!(exit["exit_code"], 7, "{exit:#}");
    assert_eq!(exit["signal"], Value::Null, "{exit:#}");
    let kill = find(&events, "process.kill", pid, |e| e["syscall"] == "kill");
    assert_eq!(kill["args"][0], child, "target pid: {kill:#}");
    assert_eq!(kill["args"][1], 0, "signal 0: {kill:#}");
    assert_eq!(kill["ret"], 0, "{kill:#}");
    let memfd = find(&events, "process.memfd_create", pid, |_| true);
    assert_eq!(memfd["name"], "sensor-test-memfd", "{memfd:#}");
    assert!(memfd["ret"].as_i64().unwrap() >= 0, "{memfd:#}");
    let setid = find(&events, "process.setid", pid, |e| e["syscall"] == "setuid");
    assert_eq!(setid["args"][0], 0, "{setid:#}");
    assert_eq!(setid["ret"], 0, "{setid:#}");
}

#[test]
fn exit_by_sigkill_reports_the_signal() {
    if !can_run_kernel_tests("exit_by_sigkill_reports_the_signal") {
        return;
    }
    let cgroup = TestCgroup::new("sigkill");
    let mut sensor = Sensor::start(&["--track-cgroup", cgroup.path.to_str().unwrap()]);
    let mut child = cgroup
        .command(PYTHON)
        .args([
            "-c",
            "import time\nprint('ready', flush=True)\ntime.sleep(60)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python");
    // Kill it only once it runs python code, so the exit is python's, not a half-done exec.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let events = sensor.stop();

    let exit = find(&events, "process.exit", child.id(), |_| true);
    assert_eq!(exit["signal"], 9, "{exit:#}");
    assert_eq!(exit["exit_code"], Value::Null, "{exit:#}");
}

#[test]
fn unlink_through_a_symlinked_directory_reports_where_the_file_really_was() {
    if !can_run_kernel_tests(
        "unlink_through_a_symlinked_directory_reports_where_the_file_really_was",
    ) {
        return;
    }
    // `ln -s <outside> in; rm in/secret` removes <outside>/secret: the textual join
    // `<cwd>/in/secret` would hide the escape.
    let (_dir, root) = scratch("unlinkvia");
    std::fs::create_dir(root.join("outside")).unwrap();
    std::fs::create_dir(root.join("work")).unwrap();
    std::fs::write(root.join("outside/secret"), "s").unwrap();
    std::os::unix::fs::symlink(root.join("outside"), root.join("work/in")).unwrap();
    let script = "import os, sys\nos.chdir(sys.argv[1])\nos.unlink('in/secret')";
    let work = root.join("work");
    let (pid, events) = capture("unlinkvia", script, &[s(&work)]);
    let unlink = find(&events, "file.unlink", pid, |e| {
        e["path_arg"] == "in/secret"
    });
    assert_eq!(unlink["ret"], 0, "{unlink:#}");
    assert_eq!(
        unlink["path"],
        s(&root.join("outside/secret")),
        "{unlink:#}"
    );
    assert_eq!(unlink["path_source"], "resolved", "{unlink:#}");
}

#[test]
fn a_failed_relative_open_is_reported_against_the_cwd() {
    if !can_run_kernel_tests("a_failed_relative_open_is_reported_against_the_cwd") {
        return;
    }
    // A failed open has no fd to resolve: its start directory is walked at exit instead.
    // (Sent only on request: see the next test.)
    let (_dir, root) = scratch("failedopen");
    let script =
        "import os, sys\nos.chdir(sys.argv[1])\ntry: open('missing.txt')\nexcept OSError: pass";
    let (pid, events) = capture_with(
        "failedopen",
        script,
        &[s(&root)],
        &["--report-missing-paths"],
    );
    let open = find(&events, "file.open", pid, |e| {
        e["path_arg"] == "missing.txt"
    });
    assert_eq!(open["ret"], -2, "{open:#}");
    assert_eq!(open["path"], s(&root.join("missing.txt")), "{open:#}");
}

/// Three calls whose path named nothing (ENOENT twice, ENOTDIR once) and one that failed
/// otherwise (EISDIR), run in `dir`.
const MISSING_PATHS_SCRIPT: &str = "import os, sys
os.chdir(sys.argv[1])
for call in (lambda: open('missing.txt'), lambda: os.unlink('missing.txt'),
             lambda: open('file.txt/x'), lambda: open('dir', 'w')):
    try: call()
    except OSError: pass";

#[test]
fn file_calls_whose_path_named_nothing_are_counted_and_sent_only_on_request() {
    if !can_run_kernel_tests(
        "file_calls_whose_path_named_nothing_are_counted_and_sent_only_on_request",
    ) {
        return;
    }
    let (_dir, root) = scratch("missingpaths");
    std::fs::write(root.join("file.txt"), "x").unwrap();
    std::fs::create_dir(root.join("dir")).unwrap();
    let named_nothing = |e: &Value| {
        ["missing.txt", "file.txt/x"].contains(&e["path_arg"].as_str().unwrap_or_default())
    };

    let cgroup = TestCgroup::new("missingpaths");
    let mut sensor = Sensor::start(&["--track-cgroup", cgroup.path.to_str().unwrap()]);
    let pid = run_ok(
        cgroup
            .command(PYTHON)
            .args(["-c", MISSING_PATHS_SCRIPT, s(&root)]),
    );
    let filtered = filtered_count(&sensor, "path_not_found", 3.0);
    let events = sensor.stop();
    assert!(filtered >= 3.0, "path_not_found: {filtered}");
    let sent: Vec<_> = of_kind(&events, "file.open", pid)
        .into_iter()
        .chain(of_kind(&events, "file.unlink", pid))
        .filter(|e| named_nothing(e))
        .collect();
    assert!(sent.is_empty(), "sent by default: {sent:#?}");
    // A failure other than a missing path is sent.
    let isdir = find(&events, "file.open", pid, |e| e["path_arg"] == "dir");
    assert_eq!(isdir["ret"], -21, "{isdir:#}");

    let (pid, events) = capture_with(
        "missingpaths2",
        MISSING_PATHS_SCRIPT,
        &[s(&root)],
        &["--report-missing-paths"],
    );
    let unlink = find(&events, "file.unlink", pid, |e| named_nothing(e));
    assert_eq!(unlink["ret"], -2, "{unlink:#}");
    let notdir = find(&events, "file.open", pid, |e| e["path_arg"] == "file.txt/x");
    assert_eq!(notdir["ret"], -20, "{notdir:#}");
}

/// `agent_sensor_events_filtered_total{reason}` once it reaches `at_least` (see
/// `Sensor::wait_for_sample`).
fn filtered_count(sensor: &Sensor, reason: &str, at_least: f64) -> f64 {
    sensor.wait_for_sample(
        &format!("agent_sensor_events_filtered_total{{reason=\"{reason}\"}}"),
        at_least,
    )
}

/// On one CPU (so that every repeat is tallied where the next open finds it): opens a.txt
/// read-only 50 times, then for appending, through a hard link, and from a child process;
/// after `sys.argv[2]` seconds (past the window) read-only once more.
const REPEATS_SCRIPT: &str = "import os, sys, time
os.sched_setaffinity(0, {0})
a = os.path.join(sys.argv[1], 'a.txt')
b = os.path.join(sys.argv[1], 'b.txt')
for _ in range(50):
    os.close(os.open(a, os.O_RDONLY))
os.close(os.open(a, os.O_WRONLY | os.O_APPEND))
os.close(os.open(b, os.O_RDONLY))
child = os.fork()
if child == 0:
    os.close(os.open(a, os.O_RDONLY))
    os._exit(0)
os.waitpid(child, 0)
time.sleep(float(sys.argv[2]))
os.close(os.open(a, os.O_RDONLY))";

#[test]
fn an_open_repeated_within_the_window_is_counted_and_the_next_one_sent_carries_the_count() {
    if !can_run_kernel_tests(
        "an_open_repeated_within_the_window_is_counted_and_the_next_one_sent_carries_the_count",
    ) {
        return;
    }
    let (_dir, root) = scratch("repeats");
    std::fs::write(root.join("a.txt"), "x").unwrap();
    std::fs::hard_link(root.join("a.txt"), root.join("b.txt")).unwrap();
    let a = root.join("a.txt");
    const O_ACCMODE: u64 = 3;
    const O_APPEND: u64 = 0o2000;
    let read_only_opens = |events: &[Value], pid: u32| -> Vec<Value> {
        of_kind(events, "file.open", pid)
            .into_iter()
            .filter(|e| {
                e["path"] == s(&a)
                    && e["syscall_flags"].as_u64().unwrap() & (O_ACCMODE | O_APPEND) == 0
            })
            .cloned()
            .collect()
    };

    let cgroup = TestCgroup::new("repeats");
    let mut sensor = Sensor::start(&[
        "--track-cgroup",
        cgroup.path.to_str().unwrap(),
        "--repeat-window-ms",
        "300",
    ]);
    let pid = run_ok(
        cgroup
            .command(PYTHON)
            .args(["-c", REPEATS_SCRIPT, s(&root), "0.5"]),
    );
    let repeats = filtered_count(&sensor, "repeat", 49.0);
    let events = sensor.stop();
    assert!(repeats >= 49.0, "repeat: {repeats}");
    let sent = read_only_opens(&events, pid);
    assert_eq!(
        sent.len(),
        2,
        "the first and the one after the window: {sent:#?}"
    );
    assert_eq!(sent[0]["repeats"], 0, "{:#}", sent[0]);
    assert_eq!(sent[1]["repeats"], 49, "{:#}", sent[1]);
    // Other flags, another name for the inode, another process: each a key of its own.
    let append = find(&events, "file.open", pid, |e| {
        e["path"] == s(&a) && e["syscall_flags"].as_u64().unwrap() & O_APPEND != 0
    });
    assert_eq!(append["repeats"], 0, "{append:#}");
    find(&events, "file.open", pid, |e| {
        e["path"] == s(&root.join("b.txt"))
    });
    let fork = find(&events, "process.fork", pid, |e| e["thread"] == false);
    let child = fork["child_tgid"].as_u64().expect("child_tgid") as u32;
    assert_eq!(read_only_opens(&events, child).len(), 1);

    // A window of 0 sends every open.
    let (pid, events) = capture_with(
        "repeats0",
        REPEATS_SCRIPT,
        &[s(&root), "0"],
        &["--repeat-window-ms", "0"],
    );
    assert_eq!(read_only_opens(&events, pid).len(), 51);
}

#[test]
fn an_open_that_blocks_and_resumes_on_another_cpu_is_recorded_whole() {
    if !can_run_kernel_tests("an_open_that_blocks_and_resumes_on_another_cpu_is_recorded_whole") {
        return;
    }
    // The opening thread blocks on CPU 0 (a FIFO with no writer yet) and is moved to CPU 1
    // before the writer lets it go: whatever the sensor knows of the call must not depend on
    // the CPU it started on (a design that held entries per CPU lost this one).
    let (_dir, root) = scratch("fifoopen");
    let script = r#"
import os, sys, threading, time
fifo = os.path.join(sys.argv[1], 'fifo')
os.mkfifo(fifo)
two = os.cpu_count() >= 2
main = threading.get_native_id()
if two:
    os.sched_setaffinity(0, {0})
def writer():
    if two:
        os.sched_setaffinity(0, {1})
    time.sleep(0.3)
    if two:
        os.sched_setaffinity(main, {1})
    with open(fifo, 'w') as f:
        f.write('x')
t = threading.Thread(target=writer)
t.start()
with open(fifo) as f:
    assert f.read() == 'x'
t.join()
"#;
    let (pid, events) = capture("fifoopen", script, &[s(&root)]);
    let fifo = root.join("fifo");
    let reader = find(&events, "file.open", pid, |e| {
        e["pid"] == pid && e["path"] == s(&fifo)
    });
    assert_eq!(reader["path_arg"], s(&fifo), "{reader:#}");
    assert_eq!(
        reader["syscall_flags"].as_u64().map(|f| f & 3),
        Some(0),
        "{reader:#}"
    );
    assert!(reader["ret"].as_i64().unwrap() >= 0, "{reader:#}");
}

/// Times the daemon went to sleep (voluntary context switches, all its threads).
fn sleeps_of(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("sensor's tasks") {
        let status =
            std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

#[test]
fn a_stream_of_records_is_read_in_batches_and_whole() {
    if !can_run_kernel_tests("a_stream_of_records_is_read_in_batches_and_whole") {
        return;
    }
    // A thin stream: an open every half millisecond for about a second. With no delay each
    // record wakes the daemon; with the monitor default (4 ms) it reads them in batches.
    // Either way every open arrives.
    const OPENS: usize = 1500;
    let script = r#"
import os, sys, time
for _ in range(int(sys.argv[1])):
    os.close(os.open('/dev/null', os.O_RDONLY))
    time.sleep(0.0005)
"#;
    let mut sleeps = Vec::new();
    for delay in ["0", "4000"] {
        let cgroup = TestCgroup::new(&format!("batches{delay}"));
        let mut sensor = Sensor::start(&[
            "--track-cgroup",
            cgroup.path.to_str().unwrap(),
            "--repeat-window-ms",
            "0",
            "--max-event-delay-us",
            delay,
        ]);
        let said = match delay {
            "0" => "every record wakes the reader".to_string(),
            _ => format!("records read at most {delay} µs late"),
        };
        assert!(
            sensor.log_text().contains(&said),
            "the ready line says {said}"
        );
        let before = sleeps_of(sensor.pid());
        let pid = run_ok(
            cgroup
                .command(PYTHON)
                .args(["-c", script, &OPENS.to_string()]),
        );
        let slept = sleeps_of(sensor.pid()) - before;
        let events = sensor.stop();
        let opens = of_kind(&events, "file.open", pid)
            .into_iter()
            .filter(|e| e["path"] == "/dev/null")
            .count();
        assert_eq!(opens, OPENS, "delay {delay} µs: every open arrives");
        eprintln!("delay {delay} µs: the daemon slept {slept} times");
        sleeps.push(slept);
    }
    // Measured here: about 1,540 against 255.
    assert!(
        sleeps[1] * 3 < sleeps[0],
        "the daemon slept {} times with no delay and {} with 4 ms: no batching",
        sleeps[0],
        sleeps[1]
    );
}
