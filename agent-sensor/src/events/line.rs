//! The event stream's JSON lines, written by hand.
//!
//! Byte for byte what serde_json makes of [`EventJson`] (a test and the decode fuzz target
//! hold the two equal), without serde_json's per-key work: every key of every event went
//! through its string escaping, and keys are most of a line. The serde form stays for the
//! values alerts and incidents embed.

use super::{
    call_name, dns,
    escape::escape_cow,
    json::{flag_names, EventJson},
    sockaddr::SockAddr,
    syscall_name, Body,
};

/// `"name":` as one static string: a key costs the line one copy.
macro_rules! k {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}

/// One JSON object being written into `out`.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Starts a member: `key` is `"name":` as [`k!`] writes it. Names are plain ASCII words:
    /// nothing to escape.
    #[inline(always)]
    fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        debug_assert!(key.starts_with('"') && key.ends_with("\":"));
        debug_assert!(key[1..key.len() - 2]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out
    }

    #[inline(always)]
    fn number(&mut self, key: &'static str, value: impl itoa::Integer) {
        let mut digits = itoa::Buffer::new();
        let text = digits.format(value);
        self.key(key).extend_from_slice(text.as_bytes());
    }

    #[inline(always)]
    fn boolean(&mut self, key: &'static str, value: bool) {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.key(key).extend_from_slice(text);
    }

    #[inline(always)]
    fn string(&mut self, key: &'static str, value: &str) {
        string(self.key(key), value);
    }

    /// A name from the kernel: escaped losslessly, then as a JSON string.
    #[inline(always)]
    fn bytes(&mut self, key: &'static str, value: &[u8]) {
        let out = self.key(key);
        // Most names (paths, commands) need neither escaping: one scan, one copy.
        if clean_prefix_len(value, Clean::PlainAscii) == value.len() {
            out.push(b'"');
            out.extend_from_slice(value);
            out.push(b'"');
            return;
        }
        string(out, &escape_cow(value));
    }

    #[inline(always)]
    fn opt_bytes(&mut self, key: &'static str, value: Option<&[u8]>) {
        match value {
            Some(value) => self.bytes(key, value),
            None => self.key(key).extend_from_slice(b"null"),
        }
    }

    #[inline(always)]
    fn opt_number(&mut self, key: &'static str, value: Option<impl itoa::Integer>) {
        match value {
            Some(value) => self.number(key, value),
            None => self.key(key).extend_from_slice(b"null"),
        }
    }

    fn strings<S: AsRef<str>>(&mut self, key: &'static str, values: impl IntoIterator<Item = S>) {
        array(self.key(key), values, |out, value| {
            string(out, value.as_ref())
        });
    }

    fn numbers(&mut self, key: &'static str, values: impl IntoIterator<Item = impl itoa::Integer>) {
        array(self.key(key), values, |out, value| {
            out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        });
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// `[a,b,…]`, each value written by `write`.
fn array<T>(
    out: &mut Vec<u8>,
    values: impl IntoIterator<Item = T>,
    write: impl Fn(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, value);
    }
    out.push(b']');
}

/// A JSON string, escaped as serde_json escapes it.
fn string(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    // Up to the first byte JSON escapes, found eight at a time; byte by byte from there.
    let clean = clean_prefix_len(bytes, Clean::Json);
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate().skip(clean) {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(byte >> 4) as usize],
                HEX[(byte & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Which bytes [`clean_prefix_len`] lets through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clean {
    /// Not escaped in a JSON string: all but `"`, `\` and control characters below 0x20.
    Json,
    /// Left alone by both the lossless escaping of kernel names and JSON: printable ASCII
    /// (0x20–0x7e) but `"` and `\`.
    PlainAscii,
}

/// Length of the longest prefix of `bytes` made only of bytes `clean` lets through, tested a
/// word at a time: events are mostly paths, and a byte-at-a-time scan was the largest part of
/// writing a line.
#[inline(always)]
fn clean_prefix_len(bytes: &[u8], clean: Clean) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `word` is zero (exact as a yes/no: a borrow starts only at one).
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS != 0;
    let mut clean_len = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        let word = u64::from_le_bytes(le);
        // A byte below 0x20 has a zero in its top three bits.
        let control = has_zero(word & u64::from_ne_bytes([0xe0; 8]));
        let special = has_zero(word ^ u64::from_ne_bytes([b'"'; 8]))
            || has_zero(word ^ u64::from_ne_bytes([b'\\'; 8]));
        let beyond_ascii = clean == Clean::PlainAscii
            && (word & HIGHS != 0 || has_zero(word ^ u64::from_ne_bytes([0x7f; 8])));
        if control || special || beyond_ascii {
            break;
        }
        clean_len += 8;
    }
    let lets_through = |b: u8| match clean {
        Clean::Json => b >= 0x20 && b != b'"' && b != b'\\',
        Clean::PlainAscii => (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\',
    };
    clean_len
        + bytes[clean_len..]
            .iter()
            .take_while(|b| lets_through(**b))
            .count()
}

/// `{"ip":"…","port":N}` (serde_json's maps sort their keys).
fn inet(out: &mut Vec<u8>, ip: std::net::IpAddr, port: u16) {
    let mut object = Object::open(out);
    object.string(k!("ip"), &ip.to_string());
    object.number(k!("port"), port);
    object.close();
}

fn addr(out: &mut Vec<u8>, addr: Option<&SockAddr>) {
    match addr {
        Some(SockAddr::Inet { ip, port }) => inet(out, *ip, *port),
        Some(SockAddr::Unix { path, is_abstract }) => {
            let mut object = Object::open(out);
            object.boolean(k!("abstract"), *is_abstract);
            object.bytes(k!("unix"), path);
            object.close();
        }
        Some(SockAddr::Other { family }) => {
            let mut object = Object::open(out);
            object.number(k!("family"), *family);
            object.close();
        }
        None => out.extend_from_slice(b"null"),
    }
}

impl EventJson<'_> {
    /// Appends the event's JSON line to `out`, without the newline.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let e = self.event;
        let mut m = Object::open(out);
        m.string(k!("ts"), self.clock.timestamp(e.ktime_ns).as_str());
        m.number(k!("ktime_ns"), e.ktime_ns);
        m.string(k!("kind"), e.kind.name());
        m.number(k!("agent_id"), e.agent_id);
        m.number(k!("pid"), e.pid);
        m.number(k!("tgid"), e.tgid);
        m.number(k!("ppid"), e.ppid);
        m.number(k!("uid"), e.uid);
        m.number(k!("gid"), e.gid);
        m.number(k!("cgroup_id"), e.cgroup_id);
        m.bytes(k!("comm"), &e.comm);
        m.boolean(k!("truncated"), e.truncated());
        m.strings(k!("flags"), flag_names(e.flags));
        match &e.body {
            Body::Fork {
                child_pid,
                child_tgid,
            } => {
                m.number(k!("child_pid"), *child_pid);
                m.number(k!("child_tgid"), *child_tgid);
                m.boolean(k!("thread"), *child_tgid == e.tgid);
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
                m.strings(k!("stdio"), stdio.iter().map(|s| s.as_str()));
                m.bytes(k!("filename"), filename);
                m.opt_bytes(k!("exe"), exe.as_deref());
                m.strings(k!("argv"), argv.iter().map(|a| escape_cow(a)));
                m.number(k!("old_pid"), *old_pid);
                m.number(k!("dev"), *dev);
                m.number(k!("ino"), *ino);
                m.number(k!("mode"), *mode);
                m.boolean(k!("setuid"), mode & 0o4000 != 0);
            }
            Body::Exit { raw } => {
                m.opt_number(
                    k!("exit_code"),
                    (raw & 0x7f == 0).then_some((raw >> 8) & 0xff),
                );
                m.opt_number(k!("signal"), (raw & 0x7f != 0).then_some(raw & 0x7f));
            }
            Body::Syscall {
                nr,
                args,
                ret,
                name,
            } => {
                m.string(k!("syscall"), call_name(e.kind, *nr));
                m.numbers(k!("args"), args.iter().copied());
                m.number(k!("ret"), *ret);
                m.opt_bytes(k!("name"), name.as_deref());
            }
            Body::File(f) => {
                m.string(k!("syscall"), syscall_name(f.nr));
                m.opt_bytes(k!("path"), f.path.as_deref());
                m.string(k!("path_source"), f.path_source.name());
                m.bytes(k!("path_arg"), &f.path_arg);
                m.opt_bytes(k!("path2"), f.path2.as_deref());
                m.opt_bytes(k!("path2_arg"), f.path2_arg.as_deref());
                m.number(k!("dirfd"), f.dirfd);
                m.number(k!("syscall_flags"), f.flags);
                m.number(k!("mode"), f.mode);
                m.number(k!("ret"), f.ret);
                m.number(k!("dev"), f.dev);
                m.number(k!("ino"), f.ino);
                m.number(k!("arg"), f.arg);
                m.number(k!("arg2"), f.arg2);
                m.number(k!("repeats"), f.repeats);
            }
            Body::Net(n) => {
                m.string(k!("syscall"), call_name(e.kind, n.nr));
                m.number(k!("fd"), n.fd);
                m.number(k!("ret"), n.ret);
                addr(m.key(k!("addr")), n.addr.as_ref());
                m.number(k!("bytes"), n.bytes);
                m.number(k!("data_len"), n.data_len);
                match &n.dns {
                    Some(question) => {
                        let mut dns = Object::open(m.key(k!("dns")));
                        dns.bytes(k!("name"), &question.name);
                        dns.string(k!("type"), &dns::qtype_name(question.qtype));
                        dns.close();
                    }
                    None => m.key(k!("dns")).extend_from_slice(b"null"),
                }
                m.opt_bytes(k!("dns_name"), n.dns_name.as_deref());
                m.boolean(k!("addr_from_connect"), n.addr_from_connect);
                match &n.socket {
                    Some(socket) => {
                        let mut object = Object::open(m.key(k!("socket")));
                        // In serde_json's (sorted) key order.
                        object.number(k!("family"), socket.family);
                        object.number(k!("protocol"), socket.protocol);
                        object.number(k!("type"), socket.kind);
                        object.close();
                    }
                    None => m.key(k!("socket")).extend_from_slice(b"null"),
                }
                array(m.key(k!("dns_answers")), &n.dns_answers, |out, answer| {
                    let mut object = Object::open(out);
                    object.string(k!("ip"), &answer.ip.to_string());
                    object.bytes(k!("name"), &answer.name);
                    object.number(k!("ttl"), answer.ttl);
                    object.close();
                });
            }
            Body::SockClose(c) => {
                m.number(k!("fd"), c.fd);
                match c.peer {
                    Some(peer) => inet(m.key(k!("addr")), peer.ip(), peer.port()),
                    None => m.key(k!("addr")).extend_from_slice(b"null"),
                }
                m.number(k!("local_port"), c.local_port);
                m.number(k!("bytes_sent"), c.bytes_sent);
                m.number(k!("bytes_received"), c.bytes_received);
                m.boolean(k!("at_exit"), c.at_exit);
                m.opt_bytes(k!("dns_name"), c.dns_name.as_deref());
            }
        }
        m.close();
    }

    /// [`Self::write_line`] and a newline, into `sink`.
    pub fn write_to(
        &self,
        buffer: &mut Vec<u8>,
        sink: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        buffer.clear();
        self.write_line(buffer);
        buffer.push(b'\n');
        sink.write_all(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        detect::testkit,
        events::{dns::DnsAnswer, Clock, Comm, Event},
    };
    use agent_sensor_common::EventKind;

    fn both(event: &Event) -> (String, String) {
        let clock = Clock::new();
        let json = EventJson {
            event,
            clock: &clock,
        };
        let by_serde = serde_json::to_string(&json).unwrap();
        let mut line = Vec::new();
        json.write_line(&mut line);
        (String::from_utf8(line).unwrap(), by_serde)
    }

    #[test]
    fn the_word_scan_stops_at_the_first_byte_to_escape_wherever_it_is() {
        for byte in 0..=255u8 {
            let json = byte >= 0x20 && byte != b'"' && byte != b'\\';
            let plain = json && byte < 0x7f;
            for at in 0..20 {
                let mut text = vec![b'a'; 20];
                text[at] = byte;
                // A second one further on must not matter.
                if at + 9 < 20 {
                    text[at + 9] = byte;
                }
                let expect = |clean: bool| if clean { 20 } else { at };
                assert_eq!(
                    clean_prefix_len(&text, Clean::Json),
                    expect(json),
                    "{byte:#x} at {at}"
                );
                assert_eq!(
                    clean_prefix_len(&text, Clean::PlainAscii),
                    expect(plain),
                    "{byte:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn strings_escape_as_serde_json_escapes_them() {
        let every_byte: String = (0u8..0x80).map(char::from).collect();
        for text in [every_byte.as_str(), "", "plain", "é ✓ \u{7f}", "\"\\\"\\"] {
            let mut ours = Vec::new();
            string(&mut ours, text);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
    }

    #[test]
    fn lines_are_the_serde_form_for_every_kind_of_event() {
        let mut closed = testkit::sock_close(7, 3);
        if let Body::SockClose(c) = &mut closed.body {
            c.peer = Some("[2001:db8::1]:443".parse().unwrap());
            c.dns_name = Some(b"example.com".to_vec());
            c.at_exit = true;
        }
        let mut other_family = testkit::connect(7, "10.0.0.1", 80);
        if let Body::Net(n) = &mut other_family.body {
            n.addr = Some(SockAddr::Other { family: 16 });
        }
        let mut abstract_unix = testkit::connect_unix(7, "\0bus");
        if let Body::Net(n) = &mut abstract_unix.body {
            n.addr = Some(SockAddr::Unix {
                path: b"@bus\"x".to_vec(),
                is_abstract: true,
            });
        }
        let mut killed = testkit::exit(7);
        killed.body = Body::Exit { raw: 9 };
        let mut events = vec![
            testkit::open(7, "/etc/passwd", 0),
            testkit::rename(7, "/tmp/a", "/tmp/b"),
            testkit::exec(7, "/bin/sh", &["sh", "-c", "true"]),
            testkit::fork(7, 8),
            testkit::fork_thread(7, 9),
            testkit::exit(7),
            killed,
            testkit::connect(7, "127.0.0.1", 8080),
            abstract_unix,
            other_family,
            testkit::accept(7, "::1", 22, 4),
            testkit::dns_query(7, "exfil.example.com"),
            testkit::socket_denied(7, 10, 3, 58),
            testkit::sock_close(7, 3),
            closed,
            testkit::syscall(EventKind::ProcessKill, 7, 62, [8, 9, 0, 0], 0),
            testkit::syscall(EventKind::ProcessCompatSyscall, 7, 5, [5, 0, 0, 0], -2),
        ];
        // Names with quotes, backslashes, control and non-UTF-8 bytes, in every name field.
        let nasty = b"a\"b\\c\n\x01\xff\xfe{\"kind\":1}".to_vec();
        for event in &mut events {
            event.comm = Comm::new(&nasty);
            event.flags = u16::MAX;
            match &mut event.body {
                Body::Exec {
                    filename,
                    exe,
                    argv,
                    ..
                } => {
                    *filename = nasty.clone();
                    *exe = Some(nasty.clone());
                    argv.push(nasty.clone());
                }
                Body::File(f) => {
                    f.path = Some(nasty.clone());
                    f.path_arg = nasty.clone();
                    f.path2_arg = Some(nasty.clone());
                }
                Body::Net(n) => {
                    n.dns_name = Some(nasty.clone());
                    n.dns_answers.push(DnsAnswer {
                        name: nasty.clone(),
                        ip: "::1".parse().unwrap(),
                        ttl: 7,
                    });
                }
                Body::Syscall {
                    name, args, ret, ..
                } => {
                    *name = Some(nasty.clone());
                    *args = [0, 1, u64::MAX, 42];
                    *ret = -1;
                }
                _ => {}
            }
        }
        for event in &events {
            let (ours, serde) = both(event);
            assert_eq!(ours, serde);
        }
    }
}
