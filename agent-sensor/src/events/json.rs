//! JSON-lines form of events (`agent-sensor run --events`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_sensor_common::flags;
use serde_json::{json, Map, Value};

use super::{dns, escape::escape, sockaddr::SockAddr, syscall_name, Body, Event, PathSource};

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock time minus monotonic time, in nanoseconds, measured at start.
    offset_ns: i128,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Self {
            offset_ns: wall as i128 - monotonic_ns() as i128,
        }
    }

    /// Now, on the kernel's clock.
    pub fn now_ktime_ns() -> u64 {
        monotonic_ns()
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = (ktime_ns as i128 + self.offset_ns).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// RFC 3339 with nanoseconds, UTC.
    pub fn rfc3339(&self, ktime_ns: u64) -> String {
        humantime::format_rfc3339_nanos(self.wall(ktime_ns)).to_string()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn opt_bytes(bytes: &Option<Vec<u8>>) -> Value {
    bytes
        .as_deref()
        .map(|b| Value::String(escape(b)))
        .unwrap_or(Value::Null)
}

fn addr_json(addr: &Option<SockAddr>) -> Value {
    match addr {
        Some(SockAddr::Inet { ip, port }) => json!({ "ip": ip.to_string(), "port": port }),
        Some(SockAddr::Unix { path, is_abstract }) => {
            json!({ "unix": escape(path), "abstract": is_abstract })
        }
        Some(SockAddr::Other { family }) => json!({ "family": family }),
        None => Value::Null,
    }
}

fn flag_names(bits: u16) -> Vec<&'static str> {
    [
        (flags::TRUNCATED, "truncated"),
        (flags::VIA_CGROUP, "via_cgroup"),
        (flags::PATH_DEPTH_EXCEEDED, "path_depth_exceeded"),
        (flags::PATH_UNRESOLVED, "path_unresolved"),
    ]
    .into_iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

impl Event {
    pub fn to_json(&self, clock: &Clock) -> Value {
        let mut out = Map::new();
        out.insert("ts".into(), clock.rfc3339(self.ktime_ns).into());
        out.insert("ktime_ns".into(), self.ktime_ns.into());
        out.insert("kind".into(), self.kind.name().into());
        out.insert("agent_id".into(), self.agent_id.into());
        out.insert("pid".into(), self.pid.into());
        out.insert("tgid".into(), self.tgid.into());
        out.insert("ppid".into(), self.ppid.into());
        out.insert("uid".into(), self.uid.into());
        out.insert("gid".into(), self.gid.into());
        out.insert("cgroup_id".into(), self.cgroup_id.into());
        out.insert("comm".into(), escape(&self.comm).into());
        out.insert("truncated".into(), self.truncated().into());
        out.insert("flags".into(), flag_names(self.flags).into());
        let body = match &self.body {
            Body::Fork {
                child_pid,
                child_tgid,
            } => json!({
                "child_pid": child_pid,
                "child_tgid": child_tgid,
                "thread": *child_tgid == self.tgid,
            }),
            Body::Exec {
                filename,
                exe,
                argv,
                old_pid,
                dev,
                ino,
                mode,
                stdio,
            } => json!({
                "stdio": stdio.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "filename": escape(filename),
                "exe": exe.as_deref().map(escape),
                "argv": argv.iter().map(|a| escape(a)).collect::<Vec<_>>(),
                "old_pid": old_pid,
                "dev": dev,
                "ino": ino,
                "mode": mode,
                "setuid": mode & 0o4000 != 0,
            }),
            Body::Exit { raw } => json!({
                "exit_code": (raw & 0x7f == 0).then_some((raw >> 8) & 0xff),
                "signal": (raw & 0x7f != 0).then_some(raw & 0x7f),
            }),
            Body::Syscall {
                nr,
                args,
                ret,
                name,
            } => json!({
                "syscall": syscall_name(*nr),
                "args": args,
                "ret": ret,
                "name": opt_bytes(name),
            }),
            Body::File(f) => json!({
                "syscall": syscall_name(f.nr),
                "path": opt_bytes(&f.path),
                "path_source": match f.path_source {
                    PathSource::Kernel => "kernel",
                    PathSource::Lexical => "lexical",
                    PathSource::Argument => "argument",
                    PathSource::Resolved => "resolved",
                },
                "path_arg": escape(&f.path_arg),
                "path2": opt_bytes(&f.path2),
                "path2_arg": opt_bytes(&f.path2_arg),
                "dirfd": f.dirfd,
                "syscall_flags": f.flags,
                "mode": f.mode,
                "ret": f.ret,
                "dev": f.dev,
                "ino": f.ino,
                "arg": f.arg,
                "arg2": f.arg2,
            }),
            Body::Net(n) => json!({
                "syscall": syscall_name(n.nr),
                "fd": n.fd,
                "ret": n.ret,
                "addr": addr_json(&n.addr),
                "bytes": n.bytes,
                "data_len": n.data_len,
                "dns": n.dns.as_ref().map(|q| json!({
                    "name": escape(&q.name),
                    "type": dns::qtype_name(q.qtype),
                })),
                "dns_name": opt_bytes(&n.dns_name),
                "addr_from_connect": n.addr_from_connect,
                "dns_answers": n.dns_answers.iter().map(|a| json!({
                    "name": escape(&a.name),
                    "ip": a.ip.to_string(),
                    "ttl": a.ttl,
                })).collect::<Vec<_>>(),
            }),
            Body::SockClose(c) => json!({
                "fd": c.fd,
                "addr": c.peer.map(|p| json!({ "ip": p.ip().to_string(), "port": p.port() })),
                "local_port": c.local_port,
                "bytes_sent": c.bytes_sent,
                "bytes_received": c.bytes_received,
                "at_exit": c.at_exit,
                "dns_name": opt_bytes(&c.dns_name),
            }),
        };
        if let Value::Object(fields) = body {
            out.extend(fields);
        }
        Value::Object(out)
    }
}
