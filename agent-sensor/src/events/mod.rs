//! Decoding ring-buffer records into typed events. The kernel is not trusted blindly: every
//! length is checked against the bytes actually received, unknown kinds are errors, and a bad
//! record is counted and skipped, never a panic.

mod comm;
pub mod dns;
pub mod escape;
mod json;
mod line;
pub mod path;
pub mod resolve;
pub mod sockaddr;
mod syscalls;

pub use self::comm::Comm;
use agent_sensor_common::{
    egress::SocketRequest, flags, EventHeader, EventKind, ExecEvent, ExitEvent, FileEvent,
    ForkEvent, NetEvent, SockCloseEvent, SyscallEvent,
};
pub use json::{Clock, EventJson};
use thiserror::Error;

pub use self::syscalls::{call_name, syscall_name};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than its header and payload ({need})")]
    Short { got: usize, need: usize },
    #[error("record says it is {claimed} bytes but {got} arrived")]
    Length { claimed: usize, got: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    #[error("string lengths overrun the record")]
    Overrun,
    #[error("kernel path encoding is malformed")]
    BadPath,
}

/// The kind of file behind a standard fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    Closed,
    File,
    Pipe,
    Socket,
    CharDevice,
    Other,
}

impl Stdio {
    fn from_kernel(kind: u8) -> Self {
        use agent_sensor_common::stdio;
        match kind {
            stdio::CLOSED => Stdio::Closed,
            stdio::FILE => Stdio::File,
            stdio::PIPE => Stdio::Pipe,
            stdio::SOCKET => Stdio::Socket,
            stdio::CHAR => Stdio::CharDevice,
            _ => Stdio::Other,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Stdio::Closed => "closed",
            Stdio::File => "file",
            Stdio::Pipe => "pipe",
            Stdio::Socket => "socket",
            Stdio::CharDevice => "char",
            Stdio::Other => "other",
        }
    }
}

/// Where an event's canonical path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathSource {
    /// Walked by the kernel from the object it resolved (fd, new cwd).
    Kernel,
    /// The argument joined onto the kernel-walked start directory, `.`/`..` removed by text.
    Lexical,
    /// Only the argument was available.
    Argument,
    /// The argument joined onto the kernel-walked start directory, every component but the
    /// last resolved on this host by the daemon right after the call (see `resolve`).
    Resolved,
}

impl PathSource {
    /// As events name it (`"path_source"`).
    pub const fn name(self) -> &'static str {
        match self {
            PathSource::Kernel => "kernel",
            PathSource::Lexical => "lexical",
            PathSource::Argument => "argument",
            PathSource::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBody {
    pub nr: u32,
    pub dirfd: i32,
    pub flags: u32,
    pub mode: u32,
    pub ret: i64,
    pub dev: u64,
    pub ino: u64,
    pub arg: u64,
    pub arg2: u64,
    /// Opens of this file the same way by this process that the kernel counted and did not
    /// send since this open was last sent (`run --repeat-window-ms`); 0 for other calls.
    pub repeats: u32,
    /// The first path exactly as passed.
    pub path_arg: Vec<u8>,
    pub path2_arg: Option<Vec<u8>>,
    /// Canonical absolute path of the object.
    pub path: Option<Vec<u8>>,
    pub path_source: PathSource,
    /// Canonical absolute second path (rename/link destination).
    pub path2: Option<Vec<u8>>,
    /// The directory (kernel-walked) a relative `path_arg` starts from.
    pub base: Option<Vec<u8>>,
    /// Same for a relative `path2_arg` whose directory differed.
    pub base2: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetBody {
    pub nr: u32,
    pub fd: i32,
    pub ret: i64,
    pub bytes: u64,
    pub addr: Option<sockaddr::SockAddr>,
    pub dns: Option<dns::DnsQuestion>,
    /// A/AAAA records of a DNS answer received (`net.recv`).
    pub dns_answers: Vec<dns::DnsAnswer>,
    pub data_len: usize,
    /// Host name the agent resolved `addr` from (filled by `agents::Correlator`).
    pub dns_name: Option<Vec<u8>>,
    /// `addr` is the peer the socket was connected to, not an address the call carried.
    pub addr_from_connect: bool,
    /// The socket a `socket` call asked for when the egress programs refused it, or killed
    /// its process for it (a packet socket): `net.denied` records only.
    pub socket: Option<SocketRequest>,
}

/// Bytes moved over one socket of an agent, reported when it closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockCloseBody {
    pub fd: i32,
    pub peer: Option<std::net::SocketAddr>,
    pub local_port: u16,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Reported by the daemon when the process exited without closing it.
    pub at_exit: bool,
    /// Host name the agent resolved the peer from (filled by `agents::Correlator`).
    pub dns_name: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Fork {
        child_pid: u32,
        child_tgid: u32,
    },
    Exec {
        /// The path exec was called with (may be a symlink, may be relative).
        filename: Vec<u8>,
        /// The executed file's path as the kernel walked it: the binary that really runs.
        exe: Option<Vec<u8>>,
        argv: Vec<Vec<u8>>,
        old_pid: u32,
        dev: u64,
        ino: u64,
        mode: u32,
        /// What fds 0, 1, 2 were after exec.
        stdio: [Stdio; 3],
    },
    Exit {
        raw: u32,
    },
    Syscall {
        nr: u32,
        args: [u64; 4],
        ret: i64,
        name: Option<Vec<u8>>,
    },
    File(FileBody),
    Net(NetBody),
    SockClose(SockCloseBody),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub flags: u16,
    pub ktime_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub agent_id: u64,
    pub comm: Comm,
    pub body: Body,
}

impl Event {
    pub fn truncated(&self) -> bool {
        self.flags & flags::TRUNCATED != 0
    }

    /// What the event's call returned (0 for events that are not a call's: fork, exec, exit,
    /// a socket's close).
    pub fn result(&self) -> i64 {
        match &self.body {
            Body::Net(net) => net.ret,
            Body::File(file) => file.ret,
            Body::Syscall { ret, .. } => *ret,
            _ => 0,
        }
    }
}

/// Reads a `#[repr(C)]` plain-old-data struct from the start of `bytes`.
fn read_pod<T: Copy + Default>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    let mut value = T::default();
    // SAFETY: T is one of the shared #[repr(C)] integer-only structs (every bit pattern valid);
    // the length was checked; the copy is unaligned-safe.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (&mut value as *mut T).cast::<u8>(),
            std::mem::size_of::<T>(),
        );
    }
    Some(value)
}

/// Splits checked slices off the variable tail of a record.
struct Tail<'a>(&'a [u8]);

impl<'a> Tail<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.0.len() {
            return Err(DecodeError::Overrun);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
}

fn payload<T: Copy + Default>(record: &[u8]) -> Result<(T, Tail<'_>), DecodeError> {
    let start = std::mem::size_of::<EventHeader>();
    let need = start + std::mem::size_of::<T>();
    let value = read_pod::<T>(&record[start.min(record.len())..]).ok_or(DecodeError::Short {
        got: record.len(),
        need,
    })?;
    Ok((value, Tail(&record[need..])))
}

/// The kernel's internal device number (`MAJOR << 20 | MINOR`) in the encoding `stat(2)`
/// reports, so `dev` compares equal with `st_dev`.
pub fn user_dev(kernel_dev: u64) -> u64 {
    let (major, minor) = (kernel_dev >> 20, kernel_dev & 0xfffff);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Decodes one record.
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read_pod(record).ok_or(DecodeError::Short {
        got: record.len(),
        need: std::mem::size_of::<EventHeader>(),
    })?;
    if header.len as usize != record.len() {
        return Err(DecodeError::Length {
            claimed: header.len as usize,
            got: record.len(),
        });
    }
    let kind = EventKind::from_u16(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let body = match kind {
        EventKind::ProcessFork => {
            let (p, _) = payload::<ForkEvent>(record)?;
            Body::Fork {
                child_pid: p.child_pid,
                child_tgid: p.child_tgid,
            }
        }
        EventKind::ProcessExec => decode_exec(record)?,
        EventKind::ProcessExit => {
            let (p, _) = payload::<ExitEvent>(record)?;
            Body::Exit { raw: p.exit_code }
        }
        EventKind::ProcessSetId
        | EventKind::ProcessPtrace
        | EventKind::ProcessKill
        | EventKind::ProcessMemfd
        | EventKind::ProcessBpf
        | EventKind::ProcessModuleLoad
        | EventKind::ProcessIoUringSetup
        | EventKind::ProcessCompatSyscall => {
            let (p, mut tail) = payload::<SyscallEvent>(record)?;
            let name = tail.take(p.str_len as usize)?;
            Body::Syscall {
                nr: p.nr,
                args: p.args,
                ret: p.ret,
                name: (p.str_len > 0).then(|| name.to_vec()),
            }
        }
        EventKind::FileOpen
        | EventKind::FileRename
        | EventKind::FileUnlink
        | EventKind::FileLink
        | EventKind::FileSymlink
        | EventKind::FileChmod
        | EventKind::FileChown
        | EventKind::FileTruncate
        | EventKind::FileMkdir
        | EventKind::FileChdir
        | EventKind::FileXattr
        | EventKind::FileMknod
        | EventKind::FileUtime
        | EventKind::FileMount => Body::File(decode_file(kind, record)?),
        EventKind::NetConnect
        | EventKind::NetBind
        | EventKind::NetListen
        | EventKind::NetAccept
        | EventKind::NetSend
        | EventKind::NetRecv
        | EventKind::NetDenied
        | EventKind::NetSocket
        | EventKind::NetDnsPacket => Body::Net(decode_net(kind, record)?),
        EventKind::NetClose => {
            let (p, _) = payload::<SockCloseEvent>(record)?;
            Body::SockClose(sock_close(&p, false))
        }
    };
    Ok(Event {
        kind,
        flags: header.flags,
        ktime_ns: header.ktime_ns,
        pid: header.pid,
        tgid: header.tgid,
        ppid: header.ppid,
        uid: header.uid,
        gid: header.gid,
        cgroup_id: header.cgroup_id,
        agent_id: header.agent_id,
        comm: Comm::new(&header.comm),
        body,
    })
}

fn decode_exec(record: &[u8]) -> Result<Body, DecodeError> {
    let (p, mut tail) = payload::<ExecEvent>(record)?;
    let filename = tail.take(p.filename_len as usize)?.to_vec();
    let raw_argv = tail.take(p.argv_len as usize)?;
    let exe = tail.take(p.exe_len as usize)?;
    let exe = if p.exe_len == 0 {
        None
    } else {
        Some(path::decode_walk(exe).map_err(|_| DecodeError::BadPath)?)
    };
    let mut argv: Vec<Vec<u8>> = raw_argv.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    // argv memory ends with a NUL, which leaves one empty piece behind.
    if raw_argv.last() == Some(&0) {
        argv.pop();
    }
    Ok(Body::Exec {
        filename,
        exe,
        argv,
        old_pid: p.old_pid,
        dev: user_dev(p.dev),
        ino: p.ino,
        mode: p.mode,
        stdio: p.stdio.map(Stdio::from_kernel),
    })
}

/// Whether mount call `nr` with `flags` names a file by its second path: the source of a bind
/// or a move (`mount` with `MS_BIND` or `MS_MOVE`, `move_mount`). Another mount's source is a
/// device or a file system's name (`tmpfs`, `none`), not a path under the caller's cwd.
pub fn mount_source_is_path(nr: u32, flags: u32) -> bool {
    use agent_sensor_common::syscalls::nr;
    const MS_BIND: u32 = 4096;
    const MS_MOVE: u32 = 8192;
    nr == nr::MOVE_MOUNT || (nr == nr::MOUNT && flags & (MS_BIND | MS_MOVE) != 0)
}

fn decode_file(kind: EventKind, record: &[u8]) -> Result<FileBody, DecodeError> {
    let (p, mut tail) = payload::<FileEvent>(record)?;
    let path_arg = tail.take(p.path_len as usize)?.to_vec();
    let path2_arg = tail.take(p.path2_len as usize)?;
    let resolved = tail.take(p.resolved_len as usize)?;
    let base = tail.take(p.base_len as usize)?;
    let base2 = tail.take(p.base2_len as usize)?;
    let walk = |encoded: &[u8]| path::decode_walk(encoded).map_err(|_| DecodeError::BadPath);
    let base_dir = (p.base_len > 0).then(|| walk(base)).transpose()?;
    let base2_dir = (p.base2_len > 0).then(|| walk(base2)).transpose()?;

    let (path, path_source) = if p.resolved_len > 0 {
        (Some(walk(resolved)?), PathSource::Kernel)
    } else if path_arg.starts_with(b"/") {
        (Some(path::normalize(&path_arg)), PathSource::Lexical)
    } else if let Some(dir) = &base_dir {
        (
            Some(path::join_lexical(dir, &path_arg)),
            PathSource::Lexical,
        )
    } else {
        (None, PathSource::Argument)
    };
    // A symlink's target is stored text, not a path the call resolves; nor is most mounts'
    // source.
    let path2 = if p.path2_len == 0
        || kind == EventKind::FileSymlink
        || (kind == EventKind::FileMount && !mount_source_is_path(p.nr, p.flags))
    {
        None
    } else if path2_arg.starts_with(b"/") {
        Some(path::normalize(path2_arg))
    } else {
        base2_dir
            .as_ref()
            .or(base_dir.as_ref())
            .map(|dir| path::join_lexical(dir, path2_arg))
    };
    Ok(FileBody {
        nr: p.nr,
        dirfd: p.dirfd,
        flags: p.flags,
        mode: p.mode,
        ret: p.ret,
        dev: user_dev(p.dev),
        ino: p.ino,
        arg: p.arg,
        arg2: p.arg2,
        repeats: p.repeats,
        path_arg,
        path2_arg: (p.path2_len > 0).then(|| path2_arg.to_vec()),
        path,
        path_source,
        path2,
        base: base_dir,
        base2: base2_dir,
    })
}

/// The peer of a closed socket and its byte counts.
pub fn sock_close(p: &SockCloseEvent, at_exit: bool) -> SockCloseBody {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let ip = match p.family {
        2 => Some(IpAddr::V4(Ipv4Addr::new(
            p.peer_addr[0],
            p.peer_addr[1],
            p.peer_addr[2],
            p.peer_addr[3],
        ))),
        10 => {
            let v6 = Ipv6Addr::from(p.peer_addr);
            Some(
                v6.to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
            )
        }
        _ => None,
    };
    SockCloseBody {
        fd: p.fd,
        peer: ip
            .filter(|_| p.peer_port != 0)
            .map(|ip| SocketAddr::new(ip, p.peer_port)),
        local_port: p.local_port,
        bytes_sent: p.bytes_sent,
        bytes_received: p.bytes_received,
        at_exit,
        dns_name: None,
    }
}

fn decode_net(kind: EventKind, record: &[u8]) -> Result<NetBody, DecodeError> {
    let (p, mut tail) = payload::<NetEvent>(record)?;
    let raw_addr = tail.take(p.sockaddr_len as usize)?;
    let data = tail.take(p.data_len as usize)?;
    let addr = sockaddr::parse(raw_addr);
    let socket =
        (p.nr == agent_sensor_common::syscalls::nr::SOCKET).then(|| SocketRequest::unpack(p.bytes));
    let port_53 = matches!(addr, Some(sockaddr::SockAddr::Inet { port: 53, .. }));
    let (dns, dns_answers) = if kind == EventKind::NetRecv {
        // The kernel only reports data received from port 53.
        let answers = if port_53 {
            dns::parse_response(data)
        } else {
            None
        };
        (None, answers.unwrap_or_default())
    } else if port_53 || addr.is_none() {
        // Data sent on a connected socket has no address here; a well-formed query parses.
        (dns::parse_query(data), Vec::new())
    } else {
        (None, Vec::new())
    };
    Ok(NetBody {
        nr: p.nr,
        fd: p.fd,
        ret: p.ret,
        // In a socket call's record `bytes` is the socket it asked for, not a count.
        bytes: if socket.is_some() { 0 } else { p.bytes },
        addr,
        dns,
        dns_answers,
        data_len: data.len(),
        dns_name: None,
        addr_from_connect: false,
        socket,
    })
}

#[cfg(test)]
mod tests;
