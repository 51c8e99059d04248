//! Configuration the daemon hands the eBPF programs at load time, and map values.

use crate::assert_size;

/// Byte offsets of the kernel struct fields the programs read, resolved by user space from the
/// running kernel's BTF (`/sys/kernel/btf/vmlinux`) and written into the object's `OFFSETS`
/// global before load. Nothing here is compiled in for the build machine's kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_files: u32,
    pub task_signal: u32,
    pub task_exit_code: u32,
    /// `task_struct.thread_info.status` (x86): `TS_COMPAT` while a 32-bit syscall runs.
    pub task_thread_status: u32,
    pub signal_live: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub binprm_filename: u32,
    pub binprm_file: u32,
    pub fs_pwd: u32,
    pub fs_root: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_name_len: u32,
    pub dentry_name_ptr: u32,
    pub dentry_parent: u32,
    pub dentry_inode: u32,
    pub vfsmount_root: u32,
    /// Offset of `struct vfsmount mnt` inside `struct mount`.
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_path: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub cgroup_kn: u32,
    pub cgroup_root: u32,
    pub cgroup_root_hierarchy_id: u32,
    pub kernfs_node_id: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    /// `struct pt_regs` registers holding syscall arguments 0..6 (x86_64: di, si, dx, r10, r8, r9).
    pub regs_args: [u32; 6],
    /// The same for a 32-bit syscall (i386: bx, cx, dx, si, di, bp).
    pub regs_compat_args: [u32; 6],
    /// `pt_regs.orig_ax`: the syscall number, still there at syscall exit.
    pub regs_nr: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub sock_family: u32,
    pub sock_dport: u32,
    pub sock_num: u32,
    pub sock_daddr: u32,
    pub sock_v6_daddr: u32,
    /// A pidfd's `struct pid`: `inode.i_private` on pidfs (6.9 on), `file.private_data` on the
    /// anonymous inode before it; told apart by the superblock's `s_magic`.
    pub inode_private: u32,
    pub sb_magic: u32,
    /// `pid.numbers[0].nr`: the pid in the initial namespace.
    pub pid_numbers: u32,
    pub upid_nr: u32,
    /// `pid.tasks[PIDTYPE_PID].first` and `task_struct.pid_links[PIDTYPE_PID]`: the task a pid
    /// names, whose `tgid` is the process of a thread's pidfd (`PIDFD_THREAD`).
    pub pid_tasks: u32,
    pub task_pid_links: u32,
    /// `task.nsproxy->mnt_ns->user_ns->ns.inum`: who owns the caller's mount namespace.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_user_ns: u32,
    pub user_ns_inum: u32,
    /// BTF type ids of the structs the programs cast addresses to where [`Self::typed_casts`].
    /// `struct kiocb`'s first member is `struct file *ki_filp`: a slot of the fd array cast to
    /// it loads as a `struct file *`.
    pub btf_kiocb: u32,
    pub btf_file: u32,
    pub btf_inode: u32,
    pub btf_super_block: u32,
    pub btf_path: u32,
    pub btf_dentry: u32,
    pub btf_mount: u32,
    /// 1 when the loader made the object's [`RDONLY_CAST_CALL`]s `bpf_rdonly_cast` kfunc
    /// calls; 0 when it made them plain register moves (a kernel without that kfunc).
    pub typed_casts: u32,
    /// io_uring's request and the per-operation structs laid over its start
    /// (`io_kiocb_to_cmd`), all zero where the kernel has no io_uring (see [`UringOffsets`]).
    pub uring: UringOffsets,
    /// Set to [`KernelOffsets::MAGIC`] by user space: programs do nothing until it is.
    pub magic: u32,
}
assert_size!(KernelOffsets, 82 * 4 + core::mem::size_of::<UringOffsets>());

/// Where io_uring keeps what a request asks for, as offsets from the start of its
/// `struct io_kiocb`: the operation, the `fd` of its submission entry, and the fields of the
/// operation's own struct (`io_open`, `io_rename`, …), which the kernel lays over the request's
/// first bytes. Private kernel structs: read from the running kernel's BTF like the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringOffsets {
    /// 1 when every offset below was found (the program is attached only then).
    pub present: u32,
    pub opcode: u32,
    /// `cqe.fd`: the submission entry's `fd`.
    pub sqe_fd: u32,
    pub open_dfd: u32,
    pub open_filename: u32,
    pub open_how: u32,
    pub rename_old_dfd: u32,
    pub rename_new_dfd: u32,
    pub rename_oldpath: u32,
    pub rename_newpath: u32,
    pub rename_flags: u32,
    pub unlink_dfd: u32,
    pub unlink_flags: u32,
    pub unlink_filename: u32,
    pub mkdir_dfd: u32,
    pub mkdir_mode: u32,
    pub mkdir_filename: u32,
    /// `io_link`, for linkat and symlinkat alike.
    pub link_old_dfd: u32,
    pub link_new_dfd: u32,
    pub link_oldpath: u32,
    pub link_newpath: u32,
    pub link_flags: u32,
    pub socket_domain: u32,
    pub socket_type: u32,
    pub socket_protocol: u32,
    /// `io_connect.addr`: the sockaddr, still in the process's memory at submission.
    pub connect_addr: u32,
    pub connect_addr_len: u32,
    /// `io_sr_msg.umsg`: a sendmsg's `struct msghdr`, in the process's memory.
    pub sendmsg_msg: u32,
    /// `struct filename.name`: the kernel's copy of a path the request names.
    pub filename_name: u32,
    /// 1 when the four below were found: `SEND`/`SEND_ZC` are recorded only then (the rest
    /// of io_uring does not wait on them).
    pub send_present: u32,
    /// `io_sr_msg.len`: a send's length (its buffer is `sendmsg_msg`, the same union).
    pub send_len: u32,
    /// `io_kiocb.async_data`: for a send, a `struct io_async_msghdr`.
    pub async_data: u32,
    /// `io_async_msghdr.msg.msg_name` and `.msg_namelen`: a send's destination, copied into
    /// the request (`.addr`) when it was prepared, so in kernel memory; null when none.
    pub send_name: u32,
    pub send_namelen: u32,
}
assert_size!(UringOffsets, 34 * 4);

/// io_uring operations (`enum io_uring_op`, uapi: stable) the sensor records.
pub mod uring_op {
    pub const SENDMSG: u8 = 9;
    pub const CONNECT: u8 = 16;
    pub const SEND: u8 = 26;
    pub const OPENAT: u8 = 18;
    pub const OPENAT2: u8 = 28;
    pub const RENAMEAT: u8 = 35;
    pub const UNLINKAT: u8 = 36;
    pub const MKDIRAT: u8 = 37;
    pub const SYMLINKAT: u8 = 38;
    pub const LINKAT: u8 = 39;
    pub const SOCKET: u8 = 45;
    pub const SEND_ZC: u8 = 47;
    pub const SENDMSG_ZC: u8 = 48;
}

/// The helper number the programs call where they mean the `bpf_rdonly_cast` kfunc (a kernel
/// address cast to a BTF type, whose fields then load without a helper call). No helper has
/// it: the loader rewrites every such call before load, into the kfunc call where the kernel
/// has it and into a register move where it has not.
pub const RDONLY_CAST_CALL: u32 = 0x0ac0_ca57;

impl KernelOffsets {
    pub const MAGIC: u32 = 0x6167_7331;
}

/// Value of the `TRACKED_TASKS` map (key: tgid) and of `TRACKED_CGROUPS` (key: cgroup id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackedTask {
    pub agent_id: u64,
    /// [`task_flags`] the programs learned about the process (none for a cgroup). User space
    /// keeps them when it tracks a process again.
    pub flags: u64,
}
assert_size!(TrackedTask, 16);

impl TrackedTask {
    pub const fn new(agent_id: u64) -> Self {
        TrackedTask { agent_id, flags: 0 }
    }
}

/// `TrackedTask::flags`.
pub mod task_flags {
    /// The process has (or had) an entry in `SOCKETS`: only then does its `close` look there.
    /// Set by the programs, never cleared while the process is tracked.
    pub const OWNS_SOCKETS: u64 = 1;
}

/// Value of the `SOCKETS` map: one socket a process moved bytes over, and what it moved.
/// Key: [`SockStats::key`] of the process and the fd the bytes went through.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockStats {
    pub agent_id: u64,
    pub tgid: u32,
    pub fd: i32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The `struct sock` counted. Another one found at the same fd later means this one was
    /// released without a close the sensor saw (dup2 over it, close_range, close-on-exec).
    pub sock: u64,
    /// AF_INET or AF_INET6, 0 for other families; the peer as it was when counting began.
    pub family: u16,
    /// Host byte order.
    pub peer_port: u16,
    pub local_port: u16,
    pub _pad0: u16,
    /// Network byte order (IPv4 in the first 4 bytes).
    pub peer_addr: [u8; 16],
}
assert_size!(SockStats, 64);

impl SockStats {
    /// The map key of `fd` in process `tgid`.
    pub const fn key(tgid: u32, fd: i32) -> u64 {
        ((tgid as u64) << 32) | fd as u32 as u64
    }

    /// Writes the close record of this socket into `close`, in place: the kernel reports a
    /// socket at its close straight into the ring record (its stack has no room for a copy),
    /// the daemon those whose process went first.
    #[inline(always)]
    pub fn fill_close(&self, close: &mut crate::SockCloseEvent) {
        close.fd = self.fd;
        close.family = self.family;
        close.peer_port = self.peer_port;
        close.peer_addr = self.peer_addr;
        close.local_port = self.local_port;
        close._pad0 = [0; 3];
        close.bytes_sent = self.bytes_sent;
        close.bytes_received = self.bytes_received;
    }
}

/// Runtime knobs the daemon writes into the `CONFIG` array (slot 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SensorConfig {
    /// The daemon's own tgid: never tracked, never reported.
    pub sensor_tgid: u32,
    /// [`discovery`] bits.
    pub discovery: u32,
    /// [`report`] bits: what the kernel sends beyond the default.
    pub report: u32,
    /// Milliseconds during which a process opening the same file again the same way is
    /// counted instead of sent (see [`RepeatKey`]); 0 sends every open.
    pub repeat_window_ms: u32,
    /// [`lists`] bits: which in-kernel lists hold entries (an empty one is not looked up).
    pub lists: u32,
    pub _pad0: u32,
}
assert_size!(SensorConfig, 24);

/// In-kernel lists the programs look up only when the daemon says they hold entries (see
/// `SensorConfig::lists`): a lookup of an empty hash map still hashes the key, at every open.
pub mod lists {
    /// `KILL_ON_ACCESS`: files whose opening kills the opener.
    pub const KILL_ON_ACCESS: u32 = 1 << 0;
}

/// What the kernel sends that it would otherwise only count (see `SensorConfig::report`).
pub mod report {
    /// File calls that failed because their path named nothing (`ENOENT`, `ENOTDIR`). By
    /// default they are counted in [`super::filter_slot::MISSING_PATH`] and not sent: no
    /// rule acts on them (nothing was read, written or refused), and the dynamic loader's
    /// search for libraries makes them by the thousand in any build.
    pub const MISSING_PATHS: u32 = 1 << 0;
}

/// Slots of the per-CPU `FILTERED` array: calls of tracked tasks the kernel counted and, by
/// configuration, did not send. Not losses: nothing any rule reads is filtered.
pub const FILTER_SLOTS: u32 = 4;

pub mod filter_slot {
    /// A file call that failed because its path named nothing (see
    /// [`super::report::MISSING_PATHS`]).
    pub const MISSING_PATH: u32 = 0;
    /// A successful open the same process made the same way within the repeat window of one
    /// that was sent (see [`super::RepeatKey`]).
    pub const REPEAT: u32 = 1;
}

/// Key of the `RECENT_OPENS` map: one way one process opened one file. An open whose key was
/// sent less than `SensorConfig::repeat_window_ms` ago is counted, not sent: it tells no rule
/// anything the first did not (same agent, process, file, flags and success), and a process
/// that opens one file in a tight loop, by design or to flood the ring so that what comes next
/// is lost, costs a map lookup per open instead of a record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepeatKey {
    pub agent_id: u64,
    /// The file's `struct path`: the dentry and mount the kernel resolved, so another name
    /// for the same inode (a hard link, another mount) is another key.
    pub dentry: u64,
    pub mnt: u64,
    /// The process's `mm`: a new program (exec) is another key, and so is a new process that
    /// reused the tgid within the window.
    pub mm: u64,
    pub tgid: u32,
    /// Open flags as passed (openat2: `open_how.flags`).
    pub flags: u32,
}
assert_size!(RepeatKey, 40);

/// Value of the `RECENT_OPENS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepeatState {
    /// `bpf_ktime_get_ns` when this open was last sent.
    pub sent_ns: u64,
    /// Opens counted since then, sent with the next record of this key (`FileEvent::repeats`).
    pub repeats: u32,
    pub _pad0: u32,
}
assert_size!(RepeatState, 16);

/// How untracked processes become agents in the kernel, at exec (see `SensorConfig`).
pub mod discovery {
    /// A process whose environment holds `AGENT_SENSOR_AGENT=<name>` becomes an agent.
    pub const ENV_MARKER: u32 = 1 << 0;
    /// The marker, as it starts an environment string.
    pub const MARKER: &[u8; 19] = b"AGENT_SENSOR_AGENT=";
    /// Bytes of the environment searched for the marker.
    pub const ENV_SCAN_BYTES: usize = 4096;
    /// Agent ids the kernel gives discovered processes: this bit and the tgid. User space
    /// names the agent when it sees the exec.
    pub const DISCOVERED_AGENT_BIT: u64 = 1 << 63;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: #[repr(C)], only integers and arrays of integers, explicit padding.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::TrackedTask {}
    unsafe impl aya::Pod for super::SockStats {}
    unsafe impl aya::Pod for super::SensorConfig {}
    unsafe impl aya::Pod for crate::syscalls::SyscallSpec {}
    unsafe impl aya::Pod for crate::syscalls::CompatCall {}
}
