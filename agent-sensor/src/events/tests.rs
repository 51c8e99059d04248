use agent_sensor_common::{EventHeader, EventKind, ExecEvent, FileEvent, NetEvent};

use super::*;

fn bytes_of<T>(value: &T) -> &[u8] {
    // SAFETY: test-only view of a #[repr(C)] integer struct.
    unsafe { std::slice::from_raw_parts((value as *const T).cast(), std::mem::size_of::<T>()) }
}

fn record<P>(kind: EventKind, payload: &P, tail: &[u8]) -> Vec<u8> {
    let mut header = EventHeader {
        kind: kind as u16,
        pid: 7,
        tgid: 7,
        agent_id: 3,
        ..Default::default()
    };
    header.comm[..4].copy_from_slice(b"test");
    let len = std::mem::size_of::<EventHeader>() + std::mem::size_of::<P>() + tail.len();
    header.len = len as u32;
    let mut out = bytes_of(&header).to_vec();
    out.extend_from_slice(bytes_of(payload));
    out.extend_from_slice(tail);
    out
}

#[test]
fn decodes_exec_with_argv() {
    let tail = b"/bin/echo\0echo\0hi there\0";
    let walk = b"\x09coreutils\x03bin\x03usr";
    let p = ExecEvent {
        filename_len: 9,
        argv_len: (tail.len() - 10) as u16,
        exe_len: walk.len() as u16,
        ..Default::default()
    };
    let mut t = tail[..9].to_vec();
    t.extend_from_slice(&tail[10..]);
    t.extend_from_slice(walk);
    let ev = decode(&record(EventKind::ProcessExec, &p, &t)).unwrap();
    assert_eq!(&*ev.comm, b"test");
    match ev.body {
        Body::Exec {
            filename,
            exe,
            argv,
            ..
        } => {
            assert_eq!(filename, b"/bin/echo");
            assert_eq!(exe.as_deref(), Some(&b"/usr/bin/coreutils"[..]));
            assert_eq!(argv, vec![b"echo".to_vec(), b"hi there".to_vec()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_exec_whose_exe_walk_overruns_the_record_is_rejected() {
    let p = ExecEvent {
        filename_len: 4,
        exe_len: 200,
        ..Default::default()
    };
    assert!(decode(&record(EventKind::ProcessExec, &p, b"/x\0\0\x01a")).is_err());
}

#[test]
fn file_paths_prefer_the_kernel_walk_then_the_lexical_join() {
    let walk = b"\x06secret\x03etc";
    let p = FileEvent {
        nr: 257,
        path_len: 11,
        resolved_len: walk.len() as u16,
        ..Default::default()
    };
    let mut tail = b"../x/secret".to_vec();
    tail.extend_from_slice(walk);
    let ev = decode(&record(EventKind::FileOpen, &p, &tail)).unwrap();
    let Body::File(f) = ev.body else { panic!() };
    assert_eq!(f.path.as_deref(), Some(&b"/etc/secret"[..]));
    assert_eq!(f.path_source, PathSource::Kernel);
    assert_eq!(f.path_arg, b"../x/secret");
    assert_eq!(f.repeats, 0);

    let base = b"\x04work\x04home";
    let p = FileEvent {
        nr: 87,
        path_len: 9,
        base_len: base.len() as u16,
        ..Default::default()
    };
    let mut tail = b"../a/./b\0".to_vec();
    tail.truncate(8);
    let p = FileEvent { path_len: 8, ..p };
    tail.extend_from_slice(base);
    let ev = decode(&record(EventKind::FileUnlink, &p, &tail)).unwrap();
    let Body::File(f) = ev.body else { panic!() };
    assert_eq!(f.path.as_deref(), Some(&b"/home/a/b"[..]));
    assert_eq!(f.path_source, PathSource::Lexical);
}

#[test]
fn an_open_carries_the_repeats_the_kernel_counted_since_it_was_last_sent() {
    let walk = b"\x08hostname\x03etc";
    let p = FileEvent {
        nr: 257,
        resolved_len: walk.len() as u16,
        repeats: 41,
        ..Default::default()
    };
    let ev = decode(&record(EventKind::FileOpen, &p, walk)).unwrap();
    let Body::File(f) = &ev.body else { panic!() };
    assert_eq!(f.repeats, 41);
}

#[test]
fn net_events_parse_address_and_dns() {
    let mut addr = vec![2u8, 0, 0, 53, 127, 0, 0, 1];
    addr.extend([0u8; 8]);
    let mut query = vec![
        0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'f', b'o', b'o', 0, 0, 1, 0, 1,
    ];
    let p = NetEvent {
        nr: 44,
        sockaddr_len: addr.len() as u16,
        data_len: query.len() as u16,
        ..Default::default()
    };
    addr.append(&mut query);
    let ev = decode(&record(EventKind::NetSend, &p, &addr)).unwrap();
    let Body::Net(n) = ev.body else { panic!() };
    assert_eq!(n.dns.unwrap().name, b"foo");
}

#[test]
fn a_refused_socket_call_carries_the_socket_it_asked_for_and_only_it_does() {
    use agent_sensor_common::egress::SocketRequest;
    let raw_icmp = SocketRequest {
        family: 2,
        kind: 3,
        protocol: 1,
    };
    let p = NetEvent {
        nr: 41,
        fd: -1,
        ret: -1,
        bytes: raw_icmp.pack(),
        ..Default::default()
    };
    let ev = decode(&record(EventKind::NetDenied, &p, b"")).unwrap();
    let Body::Net(n) = ev.body else { panic!() };
    assert_eq!(n.socket, Some(raw_icmp));
    assert_eq!((n.addr, n.bytes), (None, 0));
    // Any other call's `bytes` is a byte count.
    let p = NetEvent {
        nr: 44,
        bytes: raw_icmp.pack(),
        ..Default::default()
    };
    let ev = decode(&record(EventKind::NetSend, &p, b"")).unwrap();
    let Body::Net(n) = ev.body else { panic!() };
    assert_eq!((n.socket, n.bytes), (None, raw_icmp.pack()));
}

#[test]
fn rejects_bad_lengths_without_panicking() {
    let p = FileEvent {
        path_len: 100,
        ..Default::default()
    };
    let rec = record(EventKind::FileOpen, &p, b"short");
    assert_eq!(decode(&rec), Err(DecodeError::Overrun));

    let mut rec = record(
        EventKind::ProcessExit,
        &agent_sensor_common::ExitEvent::default(),
        b"",
    );
    rec[4] = rec[4].wrapping_add(1);
    assert!(matches!(decode(&rec), Err(DecodeError::Length { .. })));

    let mut rec = record(
        EventKind::ProcessExit,
        &agent_sensor_common::ExitEvent::default(),
        b"",
    );
    rec[0] = 0xee;
    assert_eq!(decode(&rec), Err(DecodeError::UnknownKind(0xee)));

    // Every prefix of a valid record and a spread of pseudo-random garbage: errors, not panics.
    let good = record(
        EventKind::FileOpen,
        &FileEvent {
            path_len: 4,
            ..Default::default()
        },
        b"/etc",
    );
    for cut in 0..good.len() {
        let mut r = good[..cut].to_vec();
        if r.len() >= 8 {
            r[4..8].copy_from_slice(&(cut as u32).to_ne_bytes());
        }
        let _ = decode(&r);
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        let len = (seed % 400) as usize;
        let mut r: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        if r.len() >= 8 {
            r[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
            r[0] = [1u8, 2, 3, 4, 7, 20, 21, 40, 44][(seed % 9) as usize];
            r[1] = 0;
        }
        let _ = decode(&r);
    }
}

#[test]
fn device_numbers_match_stat() {
    // 254:0 as the kernel keeps it, and as stat(2) reports it.
    assert_eq!(user_dev(254 << 20), 0xfe00);
    // A large minor: 8:300.
    assert_eq!(
        user_dev((8 << 20) | 300),
        (300 & 0xff) | (8 << 8) | ((300 & !0xff) << 12)
    );
}

#[test]
fn a_mount_source_is_a_path_only_for_a_bind_or_a_move() {
    // mount("tmpfs", "/srv/x", …) from /home/a: the source is a file system's name.
    let base = b"\x01a\x04home";
    let mount = |flags: u32| {
        let p = FileEvent {
            nr: 165,
            flags,
            path_len: 6,
            path2_len: 5,
            base2_len: base.len() as u16,
            ..Default::default()
        };
        let mut tail = b"/srv/xtmpfs".to_vec();
        tail.extend_from_slice(base);
        let ev = decode(&record(EventKind::FileMount, &p, &tail)).unwrap();
        let Body::File(f) = ev.body else { panic!() };
        f
    };
    let plain = mount(0);
    assert_eq!(plain.path.as_deref(), Some(&b"/srv/x"[..]));
    assert_eq!(plain.path2_arg.as_deref(), Some(&b"tmpfs"[..]));
    assert_eq!(plain.path2, None);
    // MS_BIND: the source is a file, under the cwd.
    assert_eq!(mount(4096).path2.as_deref(), Some(&b"/home/a/tmpfs"[..]));
}
