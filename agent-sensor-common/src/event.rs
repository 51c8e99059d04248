//! Ring-buffer records: one header, one payload per kind, then a variable tail.

use crate::assert_size;

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Bytes of one record the kernel composes at most (header + payload + tail). A power of two so
/// the eBPF side can bound offsets with a mask.
pub const MAX_EVENT_BYTES: usize = 8192;
/// Bytes of a user-supplied path string kept (including the terminating NUL the kernel copies).
pub const MAX_USER_PATH: usize = 512;
/// Bytes of argv kept for an exec (NUL-separated).
pub const MAX_ARGV: usize = 1024;
/// Bytes of an exec filename kept.
pub const MAX_FILENAME: usize = 512;
/// Path components walked up from a dentry before the walk gives up (and flags the truncation).
pub const MAX_PATH_DEPTH: usize = 32;
/// Bytes of one path component kept (a component longer than this is cut and flagged).
pub const MAX_COMPONENT: usize = 128;
/// Bytes of an encoded kernel path (see [`FileEvent`]).
pub const MAX_KERNEL_PATH: usize = 2048;

/// Header flags.
pub mod flags {
    /// Some string in the record was cut to its bound.
    pub const TRUNCATED: u16 = 1 << 0;
    /// The task's tracking came from its cgroup rather than from its ancestry.
    pub const VIA_CGROUP: u16 = 1 << 1;
    /// A kernel path walk hit its depth bound before reaching the root.
    pub const PATH_DEPTH_EXCEEDED: u16 = 1 << 2;
    /// A kernel path walk could not read a dentry or mount.
    pub const PATH_UNRESOLVED: u16 = 1 << 3;
    /// The kernel made this process an agent at exec (discovery by executable or marker).
    pub const DISCOVERED: u16 = 1 << 4;
    /// The kernel killed the process (bpf_send_signal) before this call returned: a
    /// kill-on-access path was opened or a forbidden binary executed.
    pub const KILLED_IN_KERNEL: u16 = 1 << 5;
    /// On a process exit: the process had sockets whose bytes the kernel counts. Those it did
    /// not close itself (the kernel closed them at exit, with no close call to report them)
    /// are for the daemon to report from the counters; exits without it need no look.
    pub const OWNED_SOCKETS: u16 = 1 << 6;
    /// On a socket close: the fd was found carrying another socket, or the process exited
    /// without closing it — this one was released without a close call the sensor saw (dup2
    /// over it, close_range, close-on-exec), at some time before this record.
    pub const RELEASED_UNSEEN: u16 = 1 << 7;
    /// On a `ProcessKill`: a signal the kernel generated for the sensor, seen at the
    /// `signal_generate` tracepoint rather than at a syscall's exit. `nr` is the syscall the
    /// sender was in; `args` are the target's tgid and tid, the signal and whether it was for
    /// the whole process; `ret` is the tracepoint's result (0: delivered).
    pub const SIGNAL_GENERATED: u16 = 1 << 8;
    /// An io_uring request, not a syscall: recorded when it is submitted, before the kernel
    /// runs it, so `ret` is 0 and nothing was opened yet (no device, inode or walked path);
    /// `nr` is the syscall that does the same. The paths are the kernel's copies.
    pub const VIA_IO_URING: u16 = 1 << 9;
    /// A 32-bit syscall (`int $0x80`, also from a 64-bit process): `nr` is the x86_64 number
    /// of the same call, the arguments as the call took them (32 bits wide, zero-extended).
    pub const VIA_COMPAT: u16 = 1 << 10;
    /// An x32 ABI syscall (its number carries `syscalls::X32_SYSCALL_BIT`): `nr` is the x86_64
    /// number of the same call. Kernels built without x32, or booted with it off, refuse it
    /// (ENOSYS).
    pub const VIA_X32: u16 = 1 << 11;
}

/// What follows the header. Values are stable: they are written to disk in incident bundles.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    ProcessFork = 1,
    ProcessExec = 2,
    ProcessExit = 3,
    /// setuid/setgid/setreuid/setresuid/… and capset.
    ProcessSetId = 4,
    /// ptrace, and process_vm_readv/process_vm_writev (another process's memory).
    ProcessPtrace = 5,
    /// kill/tkill/tgkill.
    ProcessKill = 6,
    ProcessMemfd = 7,
    ProcessBpf = 8,
    ProcessModuleLoad = 9,
    ProcessIoUringSetup = 10,
    /// The first 32-bit syscall (`int $0x80`, `sysenter`) of a process: none is decoded. Its
    /// i386 number is `nr` and `args[0]`.
    ProcessCompatSyscall = 11,
    FileOpen = 20,
    FileRename = 21,
    FileUnlink = 22,
    FileLink = 23,
    FileSymlink = 24,
    FileChmod = 25,
    FileChown = 26,
    FileTruncate = 27,
    FileMkdir = 28,
    FileChdir = 29,
    /// setxattr/removexattr and their l-, f- and -at forms: file capabilities, ACLs.
    FileXattr = 30,
    /// mknod/mknodat: a FIFO, socket, device or regular file made by name.
    FileMknod = 31,
    /// utime/utimes/futimesat/utimensat: a file's access and modification times set.
    FileUtime = 32,
    /// mount/umount2/move_mount/mount_setattr: a mount made, moved, changed or removed at the
    /// target path (`arg2`: the inode number of the user namespace owning the caller's mount
    /// namespace, which says whether the mount can reach the host's).
    FileMount = 33,
    NetConnect = 40,
    NetBind = 41,
    NetListen = 42,
    NetAccept = 43,
    NetSend = 44,
    /// Data received from port 53 (DNS answers).
    NetRecv = 45,
    /// A socket of an agent was closed: bytes sent and received over its life.
    NetClose = 46,
    /// A connection or send refused in the kernel by the agent's egress allowlist.
    NetDenied = 47,
    /// A socket no egress program can hold to an allowlist (raw, ICMP "ping", SCTP, packet,
    /// XDP, VSOCK…) that an agent whose egress is not enforced got: what enforce mode would
    /// have refused.
    NetSocket = 48,
    /// A UDP datagram to port 53 an agent's process sent, seen as it left (cgroup egress):
    /// what the kernel sent, however it was sent. `NetEvent` with no syscall (`nr` 0, `fd`
    /// -1): the destination, and the payload up to `MAX_SEND_DATA` bytes (`bytes`: its whole
    /// length).
    NetDnsPacket = 49,
}

impl EventKind {
    /// Every kind, in value order: lets user space size per-kind tables and label metrics.
    pub const ALL: [EventKind; 35] = [
        EventKind::ProcessFork,
        EventKind::ProcessExec,
        EventKind::ProcessExit,
        EventKind::ProcessSetId,
        EventKind::ProcessPtrace,
        EventKind::ProcessKill,
        EventKind::ProcessMemfd,
        EventKind::ProcessBpf,
        EventKind::ProcessModuleLoad,
        EventKind::ProcessIoUringSetup,
        EventKind::ProcessCompatSyscall,
        EventKind::FileOpen,
        EventKind::FileRename,
        EventKind::FileUnlink,
        EventKind::FileLink,
        EventKind::FileSymlink,
        EventKind::FileChmod,
        EventKind::FileChown,
        EventKind::FileTruncate,
        EventKind::FileMkdir,
        EventKind::FileChdir,
        EventKind::FileXattr,
        EventKind::FileMknod,
        EventKind::FileUtime,
        EventKind::FileMount,
        EventKind::NetConnect,
        EventKind::NetBind,
        EventKind::NetListen,
        EventKind::NetAccept,
        EventKind::NetSend,
        EventKind::NetRecv,
        EventKind::NetClose,
        EventKind::NetDenied,
        EventKind::NetSocket,
        EventKind::NetDnsPacket,
    ];

    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| *k as u16 == v)
    }

    /// Dense index for per-kind counters (`DROPS` map slot).
    pub const fn slot(self) -> u32 {
        self as u32 % drop_slot::FIRST_OTHER
    }

    /// The stable name used in JSON and in metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::ProcessFork => "process.fork",
            EventKind::ProcessExec => "process.exec",
            EventKind::ProcessExit => "process.exit",
            EventKind::ProcessSetId => "process.setid",
            EventKind::ProcessPtrace => "process.ptrace",
            EventKind::ProcessKill => "process.kill",
            EventKind::ProcessMemfd => "process.memfd_create",
            EventKind::ProcessBpf => "process.bpf",
            EventKind::ProcessModuleLoad => "process.module_load",
            EventKind::ProcessIoUringSetup => "process.io_uring_setup",
            EventKind::ProcessCompatSyscall => "process.compat_syscall",
            EventKind::FileOpen => "file.open",
            EventKind::FileRename => "file.rename",
            EventKind::FileUnlink => "file.unlink",
            EventKind::FileLink => "file.link",
            EventKind::FileSymlink => "file.symlink",
            EventKind::FileChmod => "file.chmod",
            EventKind::FileChown => "file.chown",
            EventKind::FileTruncate => "file.truncate",
            EventKind::FileMkdir => "file.mkdir",
            EventKind::FileChdir => "file.chdir",
            EventKind::FileXattr => "file.xattr",
            EventKind::FileMknod => "file.mknod",
            EventKind::FileUtime => "file.utime",
            EventKind::FileMount => "file.mount",
            EventKind::NetConnect => "net.connect",
            EventKind::NetBind => "net.bind",
            EventKind::NetListen => "net.listen",
            EventKind::NetAccept => "net.accept",
            EventKind::NetSend => "net.send",
            EventKind::NetRecv => "net.recv",
            EventKind::NetClose => "net.close",
            EventKind::NetDenied => "net.denied",
            EventKind::NetSocket => "net.socket",
            EventKind::NetDnsPacket => "net.dns_packet",
        }
    }
}

/// Slots of the per-CPU `DROPS` array. Slots below [`drop_slot::FIRST_OTHER`] count records of
/// that kind value the ring buffer had no room for; the others count other kernel-side losses.
pub const DROP_SLOTS: u32 = 64;

pub mod drop_slot {
    /// First slot that is not a per-kind ring-buffer-full counter.
    pub const FIRST_OTHER: u32 = 60;
    /// Was: a syscall of a tracked task could not be stashed between entry and exit (map
    /// full). Syscalls are now recorded at exit alone, so nothing counts here; the slot and its
    /// metric reason (`inflight_map_full`, always 0) stay so that dashboards keep working.
    pub const PENDING_FULL: u32 = 60;
    /// A new task of an agent could not be added to the tracked-task map (map full).
    pub const TRACKING_FULL: u32 = 61;
    /// An agent socket's bytes could not be counted (socket map full).
    pub const SOCKET_MAP_FULL: u32 = 62;
}

/// First bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u16,
    /// [`flags`] bits.
    pub flags: u16,
    /// Length of the whole record in bytes, header included.
    pub len: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ktime_ns: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad0: u32,
    /// cgroup v2 id of the task (inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// Agent the task belongs to (0 never appears: untracked tasks emit nothing).
    pub agent_id: u64,
    pub comm: [u8; COMM_LEN],
}
assert_size!(EventHeader, 72);

/// `ProcessFork`: a task was created by a tracked task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub child_pid: u32,
    pub child_tgid: u32,
}
assert_size!(ForkEvent, 8);

/// `ProcessExec`. Tail: `filename_len` bytes of the path the kernel was asked to execute, then
/// `argv_len` bytes of NUL-separated argv as found in the new image's memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecEvent {
    pub filename_len: u16,
    pub argv_len: u16,
    /// Pid the task had before exec (differs when a non-leader thread execs).
    pub old_pid: u32,
    /// Device and inode of the executed file.
    pub dev: u64,
    pub ino: u64,
    /// Mode of the executed file (setuid detection).
    pub mode: u32,
    /// What fds 0, 1 and 2 are after exec ([`stdio`] values): a shell whose stdin is a socket
    /// is a reverse shell.
    pub stdio: [u8; 3],
    pub _pad0: u8,
    /// Length of the kernel's walk of the executed file's path (after the argv): the file that
    /// really ran, whatever symlink `filename` named.
    pub exe_len: u16,
    pub _pad1: [u8; 6],
}
assert_size!(ExecEvent, 40);

/// Kinds of file behind a standard fd, from the inode's type bits.
pub mod stdio {
    pub const CLOSED: u8 = 0;
    pub const FILE: u8 = 1;
    pub const PIPE: u8 = 2;
    pub const SOCKET: u8 = 3;
    /// A character device: a terminal, /dev/null…
    pub const CHAR: u8 = 4;
    pub const OTHER: u8 = 5;
}

/// `ProcessExit`: the last thread of a tracked process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    /// Raw `task_struct.exit_code`: `(status << 8) | signal`.
    pub exit_code: u32,
    pub _pad0: u32,
}
assert_size!(ExitEvent, 8);

/// The `Process*` kinds other than fork/exec/exit: one syscall with its arguments and result.
/// Tail: `str_len` bytes of a string argument (memfd name), if the syscall has one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallEvent {
    /// Syscall number (x86_64).
    pub nr: u32,
    pub str_len: u16,
    pub _pad0: u16,
    pub args: [u64; 4],
    pub ret: i64,
}
assert_size!(SyscallEvent, 48);

/// The `File*` kinds. Tail, in order:
/// 1. `path_len` bytes: the first path string exactly as the process passed it;
/// 2. `path2_len` bytes: the second path string (rename/link/symlink target), if any;
/// 3. `resolved_len` bytes: the canonical path of the object as the kernel resolved it, encoded
///    as components from the leaf up, each a length byte then that many bytes (present when the
///    kernel could walk it: opens, chdir);
/// 4. `base_len` bytes: same encoding, the directory a relative first path is relative to (the
///    cwd or `dirfd`), walked in the kernel at syscall entry;
/// 5. `base2_len` bytes: same for a relative second path whose directory fd differs from the
///    first's (rename/link into another directory).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileEvent {
    pub nr: u32,
    pub dirfd: i32,
    /// Open flags, or the rename/link/unlink flags.
    pub flags: u32,
    pub mode: u32,
    pub ret: i64,
    pub dev: u64,
    pub ino: u64,
    pub path_len: u16,
    pub path2_len: u16,
    pub resolved_len: u16,
    pub base_len: u16,
    pub base2_len: u16,
    pub _pad0: u16,
    /// Opens of the same file the same way this process made since this key was last sent,
    /// counted and not sent (see [`crate::RepeatKey`]); 0 for every other call. Repeats a
    /// CPU counted in its hot entry join the key's count when that CPU next checks another
    /// open, so a few may come with a later record instead (the metric counts each at once).
    pub repeats: u32,
    /// Owner ids for chown, the length for truncate, the resolve flags of openat2.
    pub arg: u64,
    pub arg2: u64,
}
assert_size!(FileEvent, 72);

/// The `Net*` kinds. Tail: `sockaddr_len` bytes of the socket address exactly as the process
/// passed it (connect, bind, sendto/sendmsg destination) or the kernel returned it (accept), then
/// `data_len` bytes from the start of the data sent (DNS queries are parsed from these). User
/// space parses both and checks every length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetEvent {
    pub nr: u32,
    pub fd: i32,
    pub ret: i64,
    /// Bytes the send asked for, or the listen backlog; in the `net.denied` record of a
    /// `socket` call the egress programs refused (or whose process they killed), the socket
    /// asked for (`egress::SocketRequest::pack`).
    pub bytes: u64,
    pub sockaddr_len: u16,
    pub data_len: u16,
    pub _pad0: u32,
}
assert_size!(NetEvent, 32);

/// Bytes of a socket address kept.
pub const MAX_SOCKADDR: usize = 128;
/// Bytes of sent data kept for protocol parsing (DNS).
pub const MAX_SEND_DATA: usize = 512;

/// `NetClose`: a socket's byte counts, aggregated in the kernel from the agent's send/recv/
/// read/write calls, reported when it closes (or by user space when its process exits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockCloseEvent {
    pub fd: i32,
    /// AF_INET or AF_INET6 (0 when the socket had no peer).
    pub family: u16,
    /// Peer port, host byte order.
    pub peer_port: u16,
    /// Peer address, network byte order (IPv4 in the first 4 bytes).
    pub peer_addr: [u8; 16],
    pub local_port: u16,
    pub _pad0: [u16; 3],
    pub bytes_sent: u64,
    pub bytes_received: u64,
}
assert_size!(SockCloseEvent, 48);
