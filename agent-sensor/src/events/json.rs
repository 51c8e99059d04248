//! JSON-lines form of events (`agent-sensor run --events`).

use std::{
    borrow::Cow,
    cell::Cell,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent_sensor_common::flags;
use serde::{ser::SerializeMap, Serialize, Serializer};
use serde_json::{json, Value};

use super::{
    call_name, dns,
    escape::{escape, escape_cow},
    sockaddr::SockAddr,
    syscall_name, Body, Event,
};

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
        UNIX_EPOCH + Duration::from_nanos(self.wall_ns(ktime_ns))
    }

    /// Nanoseconds since the epoch at kernel time `ktime_ns`, clamped to what a u64 holds.
    fn wall_ns(&self, ktime_ns: u64) -> u64 {
        (ktime_ns as i128 + self.offset_ns).clamp(0, u64::MAX as i128) as u64
    }

    /// RFC 3339 with nanoseconds, UTC.
    pub fn rfc3339(&self, ktime_ns: u64) -> String {
        self.timestamp(ktime_ns).as_str().to_string()
    }

    /// [`Self::rfc3339`] without an allocation, for the event stream, which dates every event:
    /// the date and time of day are formatted once a second (per thread), the nanoseconds
    /// each time.
    pub fn timestamp(&self, ktime_ns: u64) -> Timestamp {
        thread_local! {
            /// The second last formatted and its `YYYY-MM-DDTHH:MM:SS`.
            static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
        }
        let ns = self.wall_ns(ktime_ns);
        let (seconds, nanos) = (ns / 1_000_000_000, (ns % 1_000_000_000) as u32);
        let prefix = SECOND.with(|second| {
            let (cached, prefix) = second.get();
            if cached == seconds {
                return prefix;
            }
            // `wall` keeps within u64 nanoseconds since 1970: a four-digit year, always.
            let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds))
                .to_string();
            let mut prefix = *b"1970-01-01T00:00:00";
            if let Some(head) = text.as_bytes().get(..19) {
                prefix.copy_from_slice(head);
            }
            second.set((seconds, prefix));
            prefix
        });
        let mut text = [0u8; 30];
        text[..19].copy_from_slice(&prefix);
        text[19] = b'.';
        let mut rest = nanos;
        for digit in text[20..29].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        text[29] = b'Z';
        Timestamp(text)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, on the stack.
pub struct Timestamp([u8; 30]);

impl Timestamp {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are written into it.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn opt_bytes(bytes: &Option<Vec<u8>>) -> Option<Cow<'_, str>> {
    bytes.as_deref().map(escape_cow)
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

pub(super) fn flag_names(bits: u16) -> Vec<&'static str> {
    [
        (flags::TRUNCATED, "truncated"),
        (flags::VIA_CGROUP, "via_cgroup"),
        (flags::PATH_DEPTH_EXCEEDED, "path_depth_exceeded"),
        (flags::PATH_UNRESOLVED, "path_unresolved"),
        (flags::RELEASED_UNSEEN, "released_unseen"),
        (flags::SIGNAL_GENERATED, "signal_generated"),
        (flags::VIA_IO_URING, "io_uring"),
        (flags::VIA_COMPAT, "i386"),
        (flags::VIA_X32, "x32"),
    ]
    .into_iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// An event with the clock that dates it, serialized as the event's JSON object field by
/// field. The event stream writes this straight out: building a `Value` first cost a map
/// insert and an allocation per field, most of the daemon's time with `--events` on.
pub struct EventJson<'a> {
    pub event: &'a Event,
    pub clock: &'a Clock,
}

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("ts", &self.clock.timestamp(e.ktime_ns))?;
        m.serialize_entry("ktime_ns", &e.ktime_ns)?;
        m.serialize_entry("kind", e.kind.name())?;
        m.serialize_entry("agent_id", &e.agent_id)?;
        m.serialize_entry("pid", &e.pid)?;
        m.serialize_entry("tgid", &e.tgid)?;
        m.serialize_entry("ppid", &e.ppid)?;
        m.serialize_entry("uid", &e.uid)?;
        m.serialize_entry("gid", &e.gid)?;
        m.serialize_entry("cgroup_id", &e.cgroup_id)?;
        m.serialize_entry("comm", &escape_cow(&e.comm))?;
        m.serialize_entry("truncated", &e.truncated())?;
        m.serialize_entry("flags", &flag_names(e.flags))?;
        match &e.body {
            Body::Fork {
                child_pid,
                child_tgid,
            } => {
                m.serialize_entry("child_pid", child_pid)?;
                m.serialize_entry("child_tgid", child_tgid)?;
                m.serialize_entry("thread", &(*child_tgid == e.tgid))?;
            }
            Body::Exec {
                filename,
                exe,
                argv,
                old_pid,
                dev,
                ino,
                mode,
                stdio,
            } => {
                let stdio: Vec<_> = stdio.iter().map(|s| s.as_str()).collect();
                m.serialize_entry("stdio", &stdio)?;
                m.serialize_entry("filename", &escape_cow(filename))?;
                m.serialize_entry("exe", &exe.as_deref().map(escape_cow))?;
                let argv: Vec<_> = argv.iter().map(|a| escape_cow(a)).collect();
                m.serialize_entry("argv", &argv)?;
                m.serialize_entry("old_pid", old_pid)?;
                m.serialize_entry("dev", dev)?;
                m.serialize_entry("ino", ino)?;
                m.serialize_entry("mode", mode)?;
                m.serialize_entry("setuid", &(mode & 0o4000 != 0))?;
            }
            Body::Exit { raw } => {
                m.serialize_entry("exit_code", &(raw & 0x7f == 0).then_some((raw >> 8) & 0xff))?;
                m.serialize_entry("signal", &(raw & 0x7f != 0).then_some(raw & 0x7f))?;
            }
            Body::Syscall {
                nr,
                args,
                ret,
                name,
            } => {
                m.serialize_entry("syscall", &call_name(e.kind, *nr))?;
                m.serialize_entry("args", args)?;
                m.serialize_entry("ret", ret)?;
                m.serialize_entry("name", &opt_bytes(name))?;
            }
            Body::File(f) => {
                m.serialize_entry("syscall", &syscall_name(f.nr))?;
                m.serialize_entry("path", &opt_bytes(&f.path))?;
                m.serialize_entry("path_source", f.path_source.name())?;
                m.serialize_entry("path_arg", &escape_cow(&f.path_arg))?;
                m.serialize_entry("path2", &opt_bytes(&f.path2))?;
                m.serialize_entry("path2_arg", &opt_bytes(&f.path2_arg))?;
                m.serialize_entry("dirfd", &f.dirfd)?;
                m.serialize_entry("syscall_flags", &f.flags)?;
                m.serialize_entry("mode", &f.mode)?;
                m.serialize_entry("ret", &f.ret)?;
                m.serialize_entry("dev", &f.dev)?;
                m.serialize_entry("ino", &f.ino)?;
                m.serialize_entry("arg", &f.arg)?;
                m.serialize_entry("arg2", &f.arg2)?;
                m.serialize_entry("repeats", &f.repeats)?;
            }
            Body::Net(n) => {
                m.serialize_entry("syscall", &call_name(e.kind, n.nr))?;
                m.serialize_entry("fd", &n.fd)?;
                m.serialize_entry("ret", &n.ret)?;
                m.serialize_entry("addr", &addr_json(&n.addr))?;
                m.serialize_entry("bytes", &n.bytes)?;
                m.serialize_entry("data_len", &n.data_len)?;
                let dns = n
                    .dns
                    .as_ref()
                    .map(|q| json!({ "name": escape(&q.name), "type": dns::qtype_name(q.qtype) }));
                m.serialize_entry("dns", &dns)?;
                m.serialize_entry("dns_name", &opt_bytes(&n.dns_name))?;
                m.serialize_entry("addr_from_connect", &n.addr_from_connect)?;
                let socket = n
                    .socket
                    .map(|s| json!({ "family": s.family, "type": s.kind, "protocol": s.protocol }));
                m.serialize_entry("socket", &socket)?;
                let answers: Vec<_> = n
                    .dns_answers
                    .iter()
                    .map(|a| json!({ "name": escape(&a.name), "ip": a.ip.to_string(), "ttl": a.ttl }))
                    .collect();
                m.serialize_entry("dns_answers", &answers)?;
            }
            Body::SockClose(c) => {
                m.serialize_entry("fd", &c.fd)?;
                let peer = c
                    .peer
                    .map(|p| json!({ "ip": p.ip().to_string(), "port": p.port() }));
                m.serialize_entry("addr", &peer)?;
                m.serialize_entry("local_port", &c.local_port)?;
                m.serialize_entry("bytes_sent", &c.bytes_sent)?;
                m.serialize_entry("bytes_received", &c.bytes_received)?;
                m.serialize_entry("at_exit", &c.at_exit)?;
                m.serialize_entry("dns_name", &opt_bytes(&c.dns_name))?;
            }
        }
        m.end()
    }
}

impl Event {
    /// The event as a JSON value (alerts, incidents and OCSF embed events).
    pub fn to_json(&self, clock: &Clock) -> Value {
        serde_json::to_value(EventJson { event: self, clock }).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit;

    #[test]
    fn a_streamed_event_is_one_line_that_reads_back_as_its_value() {
        let clock = Clock::new();
        let mut event = testkit::open(7, "/tmp/a", 0);
        event.comm = crate::events::Comm::new(b"ev\"il\n{\"kind\":1}");
        event.flags = flags::TRUNCATED;
        if let Body::File(file) = &mut event.body {
            file.path = Some(b"/tmp/a\nb\xff".to_vec());
        }
        let line = serde_json::to_string(&EventJson {
            event: &event,
            clock: &clock,
        })
        .unwrap();
        assert!(!line.contains('\n'), "{line}");
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, event.to_json(&clock));
        assert_eq!(back["kind"], "file.open");
        assert_eq!(back["comm"], "ev\"il\\x0a{\"kind\":1}");
        assert_eq!(back["path"], "/tmp/a\\x0ab\\xff");
        assert_eq!(back["flags"], json!(["truncated"]));
        assert_eq!(back["path2"], Value::Null);
    }

    #[test]
    fn timestamps_read_as_humantime_writes_them() {
        let clock = Clock::new();
        let now = Clock::now_ktime_ns();
        // Across second, minute, day and year boundaries (the per-second cache must follow),
        // and back again.
        let steps = [
            0,
            1,
            999_999_999,
            1_000_000_000,
            59_999_999_999,
            86_400_000_000_000,
            400 * 86_400_000_000_000,
            7,
        ];
        for step in steps {
            let ktime = now + step;
            let expected = humantime::format_rfc3339_nanos(clock.wall(ktime)).to_string();
            assert_eq!(clock.rfc3339(ktime), expected);
        }
        let expected = humantime::format_rfc3339_nanos(clock.wall(0)).to_string();
        assert_eq!(clock.rfc3339(0), expected);
    }
}
