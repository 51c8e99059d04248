//! What the syscall programs record for each syscall number, as data.
//!
//! The table lives in a map (`SYSCALL_SPECS`, indexed by number) that the daemon fills at load.
//! Keeping it out of the program's code is deliberate: constants compiled into the program would
//! make the verifier explore every syscall's path separately, and the programs would not load.
//! Numbers are x86_64's; another architecture needs its own table, nothing else.

use crate::{assert_size, EventKind};

/// Syscall numbers the table can describe (the map's size).
pub const MAX_SYSCALL_NR: u32 = 512;
/// "No such argument" in a [`SyscallSpec`] index field.
pub const NO_ARG: u8 = 0xff;

pub mod family {
    pub const NONE: u8 = 0;
    pub const FILE: u8 = 1;
    pub const NET: u8 = 2;
    pub const PROCESS: u8 = 3;
    /// close(): reports a tracked socket's byte counts (no entry/exit pairing needed).
    pub const CLOSE: u8 = 4;
    /// recvfrom/recvmsg: handled at exit only, from the argument registers (a DNS answer is
    /// recorded; anything else received is only counted).
    pub const RECV: u8 = 5;
    /// socket(): only sockets no egress program polices are recorded (raw, ping, SCTP,
    /// packet, XDP, VSOCK…), and an enforced agent's that no socket hook sees acted on (see
    /// the eBPF crate's `probes::egress::unpoliced_socket`).
    pub const SOCKET: u8 = 6;
}

/// Whether a syscall's positive result is bytes moved over the fd in argument 0.
pub mod account {
    pub const NONE: u8 = 0;
    pub const SENT: u8 = 1;
    pub const RECEIVED: u8 = 2;
}

/// How to read one syscall: its family and event kind, and which argument (0–5) holds what.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallSpec {
    pub kind: u16,
    pub family: u8,
    /// A user path string.
    pub path: u8,
    /// A second user path string (rename/link destination, symlink target).
    pub path2: u8,
    /// Directory fd `path` is relative to (`NO_ARG`: the cwd).
    pub dirfd: u8,
    pub dirfd2: u8,
    /// The fd the call acts on (fchmod, fchdir, …).
    pub fd: u8,
    pub flags: u8,
    pub mode: u8,
    pub arg: u8,
    pub arg2: u8,
    /// [`account`]: count the result as bytes sent or received on a socket fd.
    pub account: u8,
    pub _pad0: u8,
}
assert_size!(SyscallSpec, 14);

impl Default for SyscallSpec {
    fn default() -> Self {
        Self::NONE
    }
}

impl SyscallSpec {
    pub const NONE: Self = Self {
        kind: 0,
        family: family::NONE,
        path: NO_ARG,
        path2: NO_ARG,
        dirfd: NO_ARG,
        dirfd2: NO_ARG,
        fd: NO_ARG,
        flags: NO_ARG,
        mode: NO_ARG,
        arg: NO_ARG,
        arg2: NO_ARG,
        account: account::NONE,
        _pad0: 0,
    };

    const fn file(kind: EventKind, path: u8, dirfd: u8) -> Self {
        Self {
            kind: kind as u16,
            family: family::FILE,
            path,
            dirfd,
            ..Self::NONE
        }
    }

    const fn of(family: u8, kind: EventKind) -> Self {
        Self {
            kind: kind as u16,
            family,
            ..Self::NONE
        }
    }

    /// A call only counted as socket bytes, never recorded.
    const fn counting(account: u8) -> Self {
        Self {
            account,
            ..Self::NONE
        }
    }
}

/// x86_64 syscall numbers.
pub mod nr {
    pub const OPEN: u32 = 2;
    pub const CREAT: u32 = 85;
    pub const OPENAT: u32 = 257;
    pub const OPENAT2: u32 = 437;
    pub const MKDIRAT: u32 = 258;
    pub const UNLINKAT: u32 = 263;
    pub const LINKAT: u32 = 265;
    pub const SYMLINKAT: u32 = 266;
    pub const RENAMEAT2: u32 = 316;
    pub const PIDFD_GETFD: u32 = 438;
    pub const MOUNT: u32 = 165;
    pub const UMOUNT2: u32 = 166;
    pub const MOVE_MOUNT: u32 = 429;
    pub const MOUNT_SETATTR: u32 = 442;
    pub const MEMFD_CREATE: u32 = 319;
    pub const SOCKET: u32 = 41;
    pub const CONNECT: u32 = 42;
    pub const ACCEPT: u32 = 43;
    pub const SENDTO: u32 = 44;
    pub const SENDMSG: u32 = 46;
    pub const BIND: u32 = 49;
    pub const LISTEN: u32 = 50;
    pub const ACCEPT4: u32 = 288;
    pub const SENDMMSG: u32 = 307;
    pub const RECVFROM: u32 = 45;
    pub const RECVMSG: u32 = 47;
}

/// Every syscall the sensor records, x86_64 numbering.
pub fn x86_64_table() -> [(u32, SyscallSpec); 89] {
    use account::{RECEIVED, SENT};
    use family::{CLOSE, NET, PROCESS, RECV, SOCKET};
    use EventKind::*;
    const N: u8 = NO_ARG;
    let f = SyscallSpec::file;
    [
        (
            2,
            SyscallSpec {
                flags: 1,
                mode: 2,
                ..f(FileOpen, 0, N)
            },
        ), // open
        (
            85,
            SyscallSpec {
                flags: 5,
                mode: 1,
                ..f(FileOpen, 0, N)
            },
        ), // creat (flags synthesized)
        (
            257,
            SyscallSpec {
                flags: 2,
                mode: 3,
                ..f(FileOpen, 1, 0)
            },
        ), // openat
        (
            437,
            SyscallSpec {
                flags: 2,
                mode: 3,
                arg: 4,
                ..f(FileOpen, 1, 0)
            },
        ), // openat2 (how read)
        (
            304,
            SyscallSpec {
                flags: 2,
                ..f(FileOpen, N, N)
            },
        ), // open_by_handle_at: no path, the file it opened is walked from the new fd
        (
            82,
            SyscallSpec {
                path2: 1,
                ..f(FileRename, 0, N)
            },
        ), // rename
        (
            264,
            SyscallSpec {
                path2: 3,
                dirfd2: 2,
                ..f(FileRename, 1, 0)
            },
        ), // renameat
        (
            316,
            SyscallSpec {
                path2: 3,
                dirfd2: 2,
                flags: 4,
                ..f(FileRename, 1, 0)
            },
        ), // renameat2
        (87, f(FileUnlink, 0, N)), // unlink
        (84, f(FileUnlink, 0, N)), // rmdir
        (
            263,
            SyscallSpec {
                flags: 2,
                ..f(FileUnlink, 1, 0)
            },
        ), // unlinkat
        (
            86,
            SyscallSpec {
                path2: 1,
                ..f(FileLink, 0, N)
            },
        ), // link (path = existing)
        (
            265,
            SyscallSpec {
                path2: 3,
                dirfd2: 2,
                flags: 4,
                ..f(FileLink, 1, 0)
            },
        ), // linkat
        (
            88,
            SyscallSpec {
                path2: 0,
                ..f(FileSymlink, 1, N)
            },
        ), // symlink (path = new link)
        (
            266,
            SyscallSpec {
                path2: 0,
                ..f(FileSymlink, 2, 1)
            },
        ), // symlinkat
        (
            90,
            SyscallSpec {
                mode: 1,
                ..f(FileChmod, 0, N)
            },
        ), // chmod
        (
            91,
            SyscallSpec {
                fd: 0,
                mode: 1,
                ..f(FileChmod, N, N)
            },
        ), // fchmod
        (
            268,
            SyscallSpec {
                mode: 2,
                ..f(FileChmod, 1, 0)
            },
        ), // fchmodat
        (
            452,
            SyscallSpec {
                mode: 2,
                flags: 3,
                ..f(FileChmod, 1, 0)
            },
        ), // fchmodat2
        (
            92,
            SyscallSpec {
                arg: 1,
                arg2: 2,
                ..f(FileChown, 0, N)
            },
        ), // chown
        (
            94,
            SyscallSpec {
                arg: 1,
                arg2: 2,
                ..f(FileChown, 0, N)
            },
        ), // lchown
        (
            93,
            SyscallSpec {
                fd: 0,
                arg: 1,
                arg2: 2,
                ..f(FileChown, N, N)
            },
        ), // fchown
        (
            260,
            SyscallSpec {
                arg: 2,
                arg2: 3,
                flags: 4,
                ..f(FileChown, 1, 0)
            },
        ), // fchownat
        (
            76,
            SyscallSpec {
                arg: 1,
                ..f(FileTruncate, 0, N)
            },
        ), // truncate
        (
            77,
            SyscallSpec {
                fd: 0,
                arg: 1,
                ..f(FileTruncate, N, N)
            },
        ), // ftruncate
        (
            83,
            SyscallSpec {
                mode: 1,
                ..f(FileMkdir, 0, N)
            },
        ), // mkdir
        (
            258,
            SyscallSpec {
                mode: 2,
                ..f(FileMkdir, 1, 0)
            },
        ), // mkdirat
        (80, f(FileChdir, 0, N)),  // chdir
        (
            188,
            SyscallSpec {
                flags: 4,
                ..f(FileXattr, 0, N)
            },
        ), // setxattr
        (
            189,
            SyscallSpec {
                flags: 4,
                ..f(FileXattr, 0, N)
            },
        ), // lsetxattr
        (
            190,
            SyscallSpec {
                fd: 0,
                flags: 4,
                ..f(FileXattr, N, N)
            },
        ), // fsetxattr
        (197, f(FileXattr, 0, N)), // removexattr
        (198, f(FileXattr, 0, N)), // lremovexattr
        (
            199,
            SyscallSpec {
                fd: 0,
                ..f(FileXattr, N, N)
            },
        ), // fremovexattr
        (
            463,
            SyscallSpec {
                flags: 2,
                ..f(FileXattr, 1, 0)
            },
        ), // setxattrat (at_flags)
        (
            466,
            SyscallSpec {
                flags: 2,
                ..f(FileXattr, 1, 0)
            },
        ), // removexattrat
        (
            133,
            SyscallSpec {
                mode: 1,
                arg: 2,
                ..f(FileMknod, 0, N)
            },
        ), // mknod (arg: the device)
        (
            259,
            SyscallSpec {
                mode: 2,
                arg: 3,
                ..f(FileMknod, 1, 0)
            },
        ), // mknodat
        (132, f(FileUtime, 0, N)), // utime
        (235, f(FileUtime, 0, N)), // utimes
        (261, f(FileUtime, 1, 0)), // futimesat
        (
            280,
            SyscallSpec {
                flags: 3,
                ..f(FileUtime, 1, 0)
            },
        ), // utimensat (a NULL path, futimens, names no file: see README)
        (
            81,
            SyscallSpec {
                fd: 0,
                ..f(FileChdir, N, N)
            },
        ), // fchdir
        // Mounts: the target is the path, a bind or move's source the second one. `arg2` is
        // argument 5, which none of them has: the probe puts the mount namespace's owner there.
        (
            165,
            SyscallSpec {
                path2: 0,
                flags: 3,
                arg2: 5,
                ..f(FileMount, 1, N)
            },
        ), // mount(source, target, fstype, flags, data)
        (
            166,
            SyscallSpec {
                flags: 1,
                arg2: 5,
                ..f(FileMount, 0, N)
            },
        ), // umount2(target, flags)
        (
            429,
            SyscallSpec {
                path2: 1,
                dirfd2: 0,
                flags: 4,
                arg2: 5,
                ..f(FileMount, 3, 2)
            },
        ), // move_mount(from_dfd, from_path, to_dfd, to_path, flags)
        (
            442,
            SyscallSpec {
                flags: 2,
                arg2: 5,
                ..f(FileMount, 1, 0)
            },
        ), // mount_setattr(dfd, path, flags, attr, size)
        (41, SyscallSpec::of(SOCKET, NetDenied)), // socket
        (42, SyscallSpec::of(NET, NetConnect)),
        (49, SyscallSpec::of(NET, NetBind)),
        (50, SyscallSpec::of(NET, NetListen)),
        (43, SyscallSpec::of(NET, NetAccept)),
        (288, SyscallSpec::of(NET, NetAccept)),
        (
            44,
            SyscallSpec {
                account: SENT,
                ..SyscallSpec::of(NET, NetSend)
            },
        ), // sendto
        (
            46,
            SyscallSpec {
                account: SENT,
                ..SyscallSpec::of(NET, NetSend)
            },
        ), // sendmsg
        (307, SyscallSpec::of(NET, NetSend)), // sendmmsg
        (
            45,
            SyscallSpec {
                account: RECEIVED,
                ..SyscallSpec::of(RECV, NetRecv)
            },
        ), // recvfrom
        (
            47,
            SyscallSpec {
                account: RECEIVED,
                ..SyscallSpec::of(RECV, NetRecv)
            },
        ), // recvmsg
        (0, SyscallSpec::counting(RECEIVED)), // read
        (1, SyscallSpec::counting(SENT)),     // write
        (19, SyscallSpec::counting(RECEIVED)), // readv
        (20, SyscallSpec::counting(SENT)),    // writev
        (40, SyscallSpec::counting(SENT)),    // sendfile (out_fd is argument 0)
        (3, SyscallSpec::of(CLOSE, NetClose)), // close
        (105, SyscallSpec::of(PROCESS, ProcessSetId)), // setuid
        (106, SyscallSpec::of(PROCESS, ProcessSetId)), // setgid
        (113, SyscallSpec::of(PROCESS, ProcessSetId)), // setreuid
        (114, SyscallSpec::of(PROCESS, ProcessSetId)), // setregid
        (117, SyscallSpec::of(PROCESS, ProcessSetId)), // setresuid
        (119, SyscallSpec::of(PROCESS, ProcessSetId)), // setresgid
        (122, SyscallSpec::of(PROCESS, ProcessSetId)), // setfsuid
        (123, SyscallSpec::of(PROCESS, ProcessSetId)), // setfsgid
        (126, SyscallSpec::of(PROCESS, ProcessSetId)), // capset
        (101, SyscallSpec::of(PROCESS, ProcessPtrace)),
        // Another process's memory without ptrace: (pid, local iov, count, remote iov, …).
        (310, SyscallSpec::of(PROCESS, ProcessPtrace)), // process_vm_readv
        (311, SyscallSpec::of(PROCESS, ProcessPtrace)), // process_vm_writev
        (438, SyscallSpec::of(PROCESS, ProcessPtrace)), // pidfd_getfd
        (62, SyscallSpec::of(PROCESS, ProcessKill)),    // kill
        (200, SyscallSpec::of(PROCESS, ProcessKill)),   // tkill
        (234, SyscallSpec::of(PROCESS, ProcessKill)),   // tgkill
        (129, SyscallSpec::of(PROCESS, ProcessKill)),   // rt_sigqueueinfo (as kill)
        (297, SyscallSpec::of(PROCESS, ProcessKill)),   // rt_tgsigqueueinfo (as tgkill)
        (
            319,
            SyscallSpec {
                path: 0,
                ..SyscallSpec::of(PROCESS, ProcessMemfd)
            },
        ),
        (321, SyscallSpec::of(PROCESS, ProcessBpf)),
        (175, SyscallSpec::of(PROCESS, ProcessModuleLoad)), // init_module
        (313, SyscallSpec::of(PROCESS, ProcessModuleLoad)), // finit_module
        (425, SyscallSpec::of(PROCESS, ProcessIoUringSetup)),
        (59, SyscallSpec::NONE),  // execve: seen through sched_process_exec
        (322, SyscallSpec::NONE), // execveat: likewise
    ]
}

/// How a 32-bit (i386) syscall is read: as x86_64 call `native`, from its first `args`
/// arguments (the rest read as 0; 0 arguments: not read at all). The i386 ABI passes them in
/// other registers (bx, cx, dx, si, di, bp) and 32 bits wide; only calls whose arguments mean
/// the same at 32 bits are listed (scalars, strings, sockaddrs and other structs laid out
/// alike in both ABIs), so that every rule judges them as the 64-bit call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompatCall {
    pub native: u16,
    pub args: u8,
    pub _pad0: u8,
}
assert_size!(CompatCall, 4);

/// i386's `socketcall(call, args)`: one syscall for every socket call, its arguments in an
/// array of 32-bit words in the process's memory.
pub const I386_SOCKETCALL: u32 = 102;
/// Slots of the compat map: i386 numbers below this, then socketcall's calls at this plus
/// the call's number, then the x32 ABI's own calls.
pub const COMPAT_SOCKETCALL_BASE: u32 = 512;
/// socketcall call numbers the map can hold (`SYS_SOCKET` = 1 … `SYS_SENDMMSG` = 20).
pub const SOCKETCALL_CALLS: u32 = 32;
/// The x32 ABI's syscalls (64-bit registers, 32-bit pointers) carry this bit in their number.
/// Below 512 they are x86_64's calls with its arguments; from 512 on, calls whose structs
/// hold pointers, at `COMPAT_X32_BASE + number - 512` in the compat map.
pub const X32_SYSCALL_BIT: u64 = 0x4000_0000;
pub const X32_FIRST_OWN: u32 = 512;
pub const COMPAT_X32_BASE: u32 = COMPAT_SOCKETCALL_BASE + SOCKETCALL_CALLS;
/// x32 numbers of its own the map can hold (512 … 559).
pub const X32_OWN_CALLS: u32 = 48;
/// Entries of the compat map.
pub const COMPAT_SLOTS: u32 = COMPAT_X32_BASE + X32_OWN_CALLS;

/// Every 32-bit syscall the sensor decodes: (i386 number, x86_64 number, arguments read).
/// `sendmsg` and `recvmsg` pass a `struct msghdr` of 32-bit fields: the eBPF program reads it
/// and records the call as `sendto`/`recvfrom` of its address and first buffer (see
/// `probes::compat` in the eBPF crate). Left out, because their structs differ at 32 bits:
/// `sendmmsg` and `recvmmsg`. The 16-bit-uid calls (`setuid`, `chown`, …) read as the 32-bit
/// ones: a 0 is a 0 either way.
pub fn i386_table() -> [(u32, u32, u8); 101] {
    [
        (5, nr::OPEN, 6),
        (8, nr::CREAT, 6),
        (295, nr::OPENAT, 6),
        (437, nr::OPENAT2, 6),
        (342, 304, 6), // open_by_handle_at
        (38, 82, 6),   // rename
        (302, 264, 6), // renameat
        (353, nr::RENAMEAT2, 6),
        (10, 87, 6), // unlink
        (40, 84, 6), // rmdir
        (301, nr::UNLINKAT, 6),
        (9, 86, 6), // link
        (303, nr::LINKAT, 6),
        (83, 88, 6), // symlink
        (304, nr::SYMLINKAT, 6),
        (15, 90, 6),   // chmod
        (94, 91, 6),   // fchmod
        (306, 268, 6), // fchmodat
        (452, 452, 6), // fchmodat2
        (182, 92, 6),  // chown (16-bit ids)
        (16, 94, 6),   // lchown (16-bit ids)
        (95, 93, 6),   // fchown (16-bit ids)
        (212, 92, 6),  // chown32
        (198, 94, 6),  // lchown32
        (207, 93, 6),  // fchown32
        (298, 260, 6), // fchownat
        (92, 76, 6),   // truncate
        (93, 77, 6),   // ftruncate
        (193, 76, 6),  // truncate64 (the length's low half only)
        (194, 77, 6),  // ftruncate64
        (39, 83, 6),   // mkdir
        (296, nr::MKDIRAT, 6),
        (12, 80, 6),   // chdir
        (133, 81, 6),  // fchdir
        (226, 188, 6), // setxattr
        (227, 189, 6), // lsetxattr
        (228, 190, 6), // fsetxattr
        (235, 197, 6), // removexattr
        (236, 198, 6), // lremovexattr
        (237, 199, 6), // fremovexattr
        (463, 463, 6), // setxattrat
        (466, 466, 6), // removexattrat
        (14, 133, 6),  // mknod
        (297, 259, 6), // mknodat
        (30, 132, 6),  // utime
        (271, 235, 6), // utimes
        (299, 261, 6), // futimesat
        (320, 280, 6), // utimensat
        (412, 280, 6), // utimensat_time64
        (21, nr::MOUNT, 6),
        (52, nr::UMOUNT2, 6),
        (22, nr::UMOUNT2, 1), // umount(target): umount2 with no flags
        (429, nr::MOVE_MOUNT, 6),
        (442, nr::MOUNT_SETATTR, 6),
        (359, nr::SOCKET, 6),
        (362, nr::CONNECT, 6),
        (361, nr::BIND, 6),
        (363, nr::LISTEN, 6),
        (364, nr::ACCEPT4, 6),
        (369, nr::SENDTO, 6),
        (371, nr::RECVFROM, 6),
        (370, nr::SENDMSG, 6),
        (372, nr::RECVMSG, 6),
        (3, 0, 6),     // read
        (4, 1, 6),     // write
        (145, 19, 6),  // readv
        (146, 20, 6),  // writev
        (187, 40, 6),  // sendfile
        (239, 40, 6),  // sendfile64
        (6, 3, 6),     // close
        (23, 105, 6),  // setuid (16-bit)
        (46, 106, 6),  // setgid (16-bit)
        (70, 113, 6),  // setreuid (16-bit)
        (71, 114, 6),  // setregid (16-bit)
        (164, 117, 6), // setresuid (16-bit)
        (170, 119, 6), // setresgid (16-bit)
        (138, 122, 6), // setfsuid (16-bit)
        (139, 123, 6), // setfsgid (16-bit)
        (213, 105, 6), // setuid32
        (214, 106, 6), // setgid32
        (203, 113, 6), // setreuid32
        (204, 114, 6), // setregid32
        (208, 117, 6), // setresuid32
        (210, 119, 6), // setresgid32
        (215, 122, 6), // setfsuid32
        (216, 123, 6), // setfsgid32
        (185, 126, 6), // capset
        (26, 101, 6),  // ptrace
        (347, 310, 6), // process_vm_readv
        (348, 311, 6), // process_vm_writev
        (438, nr::PIDFD_GETFD, 6),
        (37, 62, 6),   // kill
        (238, 200, 6), // tkill
        (270, 234, 6), // tgkill
        (178, 129, 6), // rt_sigqueueinfo
        (335, 297, 6), // rt_tgsigqueueinfo
        (356, nr::MEMFD_CREATE, 6),
        (357, 321, 6), // bpf
        (128, 175, 6), // init_module
        (350, 313, 6), // finit_module
        (425, 425, 6), // io_uring_setup
    ]
}

/// socketcall's calls the sensor decodes: (call, x86_64 number, words of the array read —
/// never more than the kernel reads for that call, so that an array placed at the end of a
/// mapping is read whole or not at all as the kernel reads it).
pub fn socketcall_table() -> [(u32, u32, u8); 12] {
    [
        (1, nr::SOCKET, 3),
        (2, nr::BIND, 3),
        (3, nr::CONNECT, 3),
        (4, nr::LISTEN, 2),
        (5, nr::ACCEPT, 3),
        (9, nr::SENDTO, 4),    // send(fd, buf, len, flags): sendto to no address
        (10, nr::RECVFROM, 4), // recv: recvfrom from no address
        (11, nr::SENDTO, 6),
        (12, nr::RECVFROM, 6),
        (16, nr::SENDMSG, 3),
        (17, nr::RECVMSG, 3),
        (18, nr::ACCEPT4, 4),
    ]
}

/// The x32 ABI's own calls the sensor decodes: (x32 number without the x32 bit, x86_64 number,
/// arguments read). Its `sendmsg`/`recvmsg` take the i386 `struct msghdr` and are read as the
/// i386 ones are. (Its other numbers below 512 are x86_64's.)
pub fn x32_table() -> [(u32, u32, u8); 10] {
    [
        (515, 19, 6), // readv
        (516, 20, 6), // writev
        (517, nr::RECVFROM, 6),
        (518, nr::SENDMSG, 6),
        (519, nr::RECVMSG, 6),
        (521, 101, 6), // ptrace
        (524, 129, 6), // rt_sigqueueinfo
        (536, 297, 6), // rt_tgsigqueueinfo
        (539, 310, 6), // process_vm_readv
        (540, 311, 6), // process_vm_writev
    ]
}

/// The compat map's contents: (slot, entry).
pub fn compat_slots() -> impl Iterator<Item = (u32, CompatCall)> {
    let entry = |native: u32, args: u8| CompatCall {
        native: native as u16,
        args,
        _pad0: 0,
    };
    let direct = i386_table()
        .into_iter()
        .map(move |(i386, native, args)| (i386, entry(native, args)));
    let socketcall = socketcall_table()
        .into_iter()
        .map(move |(call, native, words)| (COMPAT_SOCKETCALL_BASE + call, entry(native, words)));
    let x32 = x32_table().into_iter().map(move |(x32, native, args)| {
        (COMPAT_X32_BASE + x32 - X32_FIRST_OWN, entry(native, args))
    });
    direct.chain(socketcall).chain(x32)
}
