//! Maps and globals shared by every program.

use agent_sensor_common::discovery::ENV_SCAN_BYTES;
use agent_sensor_common::egress::{EgressKey4, EgressKey6, EgressPorts, NameKey};
use agent_sensor_common::syscalls::{CompatCall, SyscallSpec, COMPAT_SLOTS, MAX_SYSCALL_NR};
use agent_sensor_common::{
    KernelOffsets, RepeatKey, RepeatState, SensorConfig, SockStats, TrackedTask, DROP_SLOTS,
    FILTER_SLOTS, MAX_EVENT_BYTES,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};

/// Default ring size; the daemon overrides it with `--ring-bytes`.
const DEFAULT_RING_BYTES: u32 = 8 * 1024 * 1024;
/// Processes (tgids) that belong to some agent.
pub const MAX_TRACKED_TASKS: u32 = 65536;
/// Agent cgroups.
pub const MAX_TRACKED_CGROUPS: u32 = 4096;
/// Agent sockets with byte counts at one time.
pub const MAX_SOCKETS: u32 = 16384;

/// The one ring buffer every event goes through.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// 1 while the daemon is about to sleep or sleeps on the ring, 0 while it is draining. Records
/// are committed without a wake-up and only the first one that finds 1 wakes the daemon: a
/// wake-up per record (the ring's default whenever the reader has caught up) costs the writing
/// task about 2 µs on a VM, more than the rest of the record. See `emit::wake_reader`.
/// Mappable (`BPF_F_MMAPABLE`): the daemon raises it with a store into its own memory, not a
/// bpf() syscall, each time it is about to sleep.
#[map]
pub static RING_READER_WAITING: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// `BPF_F_MMAPABLE` of the map flags.
const BPF_F_MMAPABLE: u32 = 1024;

/// tgid → agent. Children are added at `task_newtask`, before they can run.
#[map]
pub static TRACKED_TASKS: HashMap<u32, TrackedTask> =
    HashMap::with_max_entries(MAX_TRACKED_TASKS, 0);

/// Bumped (kernel and user space) on every change of `TRACKED_TASKS`: a per-CPU decision
/// cached under an older generation is stale.
#[map]
pub static TRACKING_GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// The last tracking decision on this CPU: syscalls come in runs from one task, and an array
/// lookup (inlined by the verifier) is far cheaper than the hash lookup it saves.
#[repr(C)]
pub struct HotDecision {
    pub tgid: u64,
    pub generation: u64,
    /// 0: untracked.
    pub agent: u64,
    /// The process's `TrackedTask::flags`.
    pub flags: u64,
}

#[map]
pub static HOT_DECISION: PerCpuArray<HotDecision> = PerCpuArray::with_max_entries(1, 0);

/// cgroup v2 id → agent: every task that enters one of these cgroups is tracked.
#[map]
pub static TRACKED_CGROUPS: HashMap<u64, TrackedTask> =
    HashMap::with_max_entries(MAX_TRACKED_CGROUPS, 0);

/// Per-CPU loss counters, see `agent_sensor_common::drop_slot`.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

#[map]
pub static CONFIG: Array<SensorConfig> = Array::with_max_entries(1, 0);

/// Per-CPU counters of calls counted and not sent, see `agent_sensor_common::filter_slot`.
#[map]
pub static FILTERED: PerCpuArray<u64> = PerCpuArray::with_max_entries(FILTER_SLOTS, 0);

/// Executable names (comm after exec, NUL-padded) that make a process an agent.
#[map]
pub static DISCOVERY_COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(256, 0);

/// Where an exec's environment is searched for the discovery marker (too big for the stack).
#[repr(C)]
pub struct EnvScratch {
    pub buf: [u8; ENV_SCAN_BYTES + 32],
}

#[map]
pub static ENV_SCRATCH: PerCpuArray<EnvScratch> = PerCpuArray::with_max_entries(1, 0);

/// Where a record is composed before it is copied into the ring. Twice the largest record so
/// that any masked offset plus any bounded write stays inside (the verifier checks this).
///
/// The running lengths live here, in map memory, rather than in registers on purpose: the
/// verifier tracks a register's exact range along every path, so paths that wrote different
/// lengths never merge and verification explodes; a value loaded from map memory is just
/// "some u64", which masking bounds, and all paths merge again.
#[repr(C)]
pub struct Scratch {
    /// Bytes of the record composed so far.
    pub len: u64,
    /// Bytes written so far by the path walk in progress.
    pub walk: u64,
    pub buf: [u8; 2 * MAX_EVENT_BYTES],
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The syscall being recorded at its exit: its number and arguments. (What it passed in the
/// process's memory is copied straight into the record.)
#[repr(C)]
pub struct Call {
    pub nr: u32,
    /// How the call came, as the record's header flag: `flags::VIA_IO_URING` for an io_uring
    /// request's (`probes::uring`; its path arguments are kernel addresses, the kernel's
    /// copies, not the process's), `flags::VIA_COMPAT` or `flags::VIA_X32` for a 32-bit or
    /// x32 syscall's, 0 otherwise.
    pub via: u32,
    pub args: [u64; 6],
    /// What the kernel resolved for a file call, kept here rather than in registers for the
    /// reason `Scratch` gives: the `struct file *` opened or passed (0: none), its device and
    /// inode, whether opening it killed the process, and `FileEvent::repeats`.
    pub file: u64,
    pub dev: u64,
    pub ino: u64,
    pub killed: u32,
    pub repeats: u32,
}

/// This CPU's `Call`: a program runs to its end on one CPU, so one per CPU is enough.
#[map]
pub static CALL: PerCpuArray<Call> = PerCpuArray::with_max_entries(1, 0);

/// Sockets agents moved bytes over, by process and fd (`SockStats::key`), and the bytes so
/// far. Keyed by fd, not by `struct sock`: the close that reports an entry is then found at
/// the close's exit by its fd alone, with no hook at syscall entry (where the fd still leads
/// to the socket) — a hook every syscall on the host would pay for. Not an LRU: an entry
/// leaves when it is reported (close, the fd found carrying another socket, the process's
/// exit), never silently; a count that finds the map full is counted as a drop.
#[map]
pub static SOCKETS: HashMap<u64, SockStats> = HashMap::with_max_entries(MAX_SOCKETS, 0);

/// This CPU's `SOCKETS` entry being built (64 bytes the stack has no room for).
#[map]
pub static SOCK_SCRATCH: PerCpuArray<SockStats> = PerCpuArray::with_max_entries(1, 0);

/// Processes (tgid) that got an entry in `SOCKETS`: their exit record says so
/// (`flags::OWNED_SOCKETS`), so that the daemon looks for the sockets they left open only then
/// — a look is a walk of every bucket of `SOCKETS`, and processes exit by the thousand in a
/// build.
#[map]
pub static SOCK_OWNERS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

/// Processes whose first 32-bit syscall was recorded (`probes::compat`). A reused pid still
/// in here is not recorded again until the entry ages out.
#[map]
pub static COMPAT_REPORTED: LruHashMap<u32, u8> = LruHashMap::with_max_entries(4096, 0);

/// Opens recently sent, to count their repeats instead of sending them (see `repeats`). An
/// LRU: an evicted key only means its next open is sent.
#[map]
pub static RECENT_OPENS: LruHashMap<RepeatKey, RepeatState> =
    LruHashMap::with_max_entries(MAX_RECENT_OPENS, 0);

/// The last open checked on this CPU, and the scheduler tick (jiffy) in which it was last
/// found inside its window. Opens come in runs from one task on one CPU: the same key again in
/// the same tick is inside the window too (one that outlasts a tick, see
/// `repeats::LONGEST_TICK_MS`), with no hash lookup and no clock read. Its repeats gather in
/// `pending` and go into its `RECENT_OPENS` entry when another key comes. The window may thus
/// stretch by up to a tick.
#[repr(C)]
pub struct HotOpen {
    pub key: RepeatKey,
    pub tick: u64,
    pub pending: u32,
    pub _pad0: u32,
}

#[map]
pub static HOT_OPEN: PerCpuArray<HotOpen> = PerCpuArray::with_max_entries(1, 0);

/// Keys of `RECENT_OPENS`: files an agent's processes open over and over within a window.
pub const MAX_RECENT_OPENS: u32 = 16384;

/// i386 syscall number (a socketcall call, an x32 number of its own) → the x86_64 call it is
/// read as (filled by the daemon; see `agent_sensor_common::syscalls::compat_slots`).
#[map]
pub static COMPAT_CALLS: Array<CompatCall> = Array::with_max_entries(COMPAT_SLOTS, 0);

/// Syscall number → what to record (filled by the daemon; see `agent_sensor_common::syscalls`).
#[map]
pub static SYSCALL_SPECS: Array<SyscallSpec> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Struct offsets of the running kernel, written by the daemon before load.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_mm: 0,
    task_fs: 0,
    task_files: 0,
    task_signal: 0,
    task_exit_code: 0,
    task_thread_status: 0,
    signal_live: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    mm_env_start: 0,
    mm_env_end: 0,
    binprm_filename: 0,
    binprm_file: 0,
    fs_pwd: 0,
    fs_root: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_name_len: 0,
    dentry_name_ptr: 0,
    dentry_parent: 0,
    dentry_inode: 0,
    vfsmount_root: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_path: 0,
    file_inode: 0,
    inode_mode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    cgroup_kn: 0,
    cgroup_root: 0,
    cgroup_root_hierarchy_id: 0,
    kernfs_node_id: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    regs_args: [0; 6],
    regs_compat_args: [0; 6],
    regs_nr: 0,
    file_private_data: 0,
    socket_sk: 0,
    sock_family: 0,
    sock_dport: 0,
    sock_num: 0,
    sock_daddr: 0,
    sock_v6_daddr: 0,
    inode_private: 0,
    sb_magic: 0,
    pid_numbers: 0,
    upid_nr: 0,
    pid_tasks: 0,
    task_pid_links: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_user_ns: 0,
    user_ns_inum: 0,
    btf_kiocb: 0,
    btf_file: 0,
    btf_inode: 0,
    btf_super_block: 0,
    btf_path: 0,
    btf_dentry: 0,
    btf_mount: 0,
    typed_casts: 0,
    // SAFETY: a struct of `u32`s, for which all zeros is a value.
    uring: unsafe { core::mem::zeroed() },
    magic: 0,
};

/// One field of `OFFSETS` as a `u64`. A volatile read per field: the compiler must not fold the
/// zeros of the initializer, and copying the whole struct would cost stack.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: reading a field of a global the loader patched before load.
        (unsafe { core::ptr::read_volatile(&$crate::maps::OFFSETS.$field) } as u64)
    };
    ($field:ident[$i:expr]) => {
        // SAFETY: as above; `$i` is a constant below the array length.
        (unsafe { core::ptr::read_volatile(&$crate::maps::OFFSETS.$field[$i]) } as u64)
    };
    ($group:ident . $field:ident) => {
        // SAFETY: as above.
        (unsafe { core::ptr::read_volatile(&$crate::maps::OFFSETS.$group.$field) } as u64)
    };
}
pub(crate) use off;

/// Whether the daemon asked for the calls of this `report` bit to be sent.
#[inline(always)]
pub fn reports(bit: u32) -> bool {
    CONFIG.get(0).is_some_and(|config| config.report & bit != 0)
}

/// Whether the daemon put entries in the in-kernel list of this `lists` bit.
#[inline(always)]
pub fn lists_hold(bit: u32) -> bool {
    CONFIG.get(0).is_some_and(|config| config.lists & bit != 0)
}

/// Counts one call filtered out in `slot`.
#[inline(always)]
pub fn count_filtered(slot: u32) {
    if let Some(count) = FILTERED.get_ptr_mut(slot) {
        // SAFETY: pointer from a successful per-CPU array lookup; no other CPU touches it.
        unsafe { *count += 1 };
    }
}

/// Counts one lost record in `slot`.
#[inline(always)]
pub fn count_drop(slot: u32) {
    if let Some(count) = DROPS.get_ptr_mut(slot) {
        // SAFETY: pointer from a successful per-CPU array lookup; no other CPU touches it.
        unsafe { *count += 1 };
    }
}

/// Agents whose egress is enforced in the kernel (value unused).
#[map]
pub static EGRESS_AGENTS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

/// Allowed destinations per agent: CIDRs from the policy, addresses from DNS answers for
/// allowed names.
#[map]
pub static EGRESS_ALLOW4: LpmTrie<EgressKey4, EgressPorts> = LpmTrie::with_max_entries(65536, 0);

#[map]
pub static EGRESS_ALLOW6: LpmTrie<EgressKey6, EgressPorts> = LpmTrie::with_max_entries(65536, 0);

/// (agent, name hash) → the ports the name allows and whether names below it count.
#[map]
pub static ALLOWED_NAMES: HashMap<NameKey, EgressPorts> = HashMap::with_max_entries(65536, 0);

/// The host's resolvers (IPv4-mapped or IPv6): port 53 to them is never egress.
#[map]
pub static DNS_RESOLVERS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(64, 0);

/// Labels of a DNS name the parser keeps.
pub const DNS_MAX_LABELS: usize = 16;
/// Bytes of a DNS answer parsed.
pub const DNS_BYTES: usize = 512;

/// Where a DNS answer is parsed (values in map memory: see `Scratch` for why).
#[repr(C)]
pub struct DnsScratch {
    /// What `syscall_sys_exit` leaves for the tail-called parser: whose answer, where, how long.
    pub agent: u64,
    pub data: u64,
    pub len: u64,
    /// Parser state between bpf_loop steps (map memory: see `Scratch` for why).
    pub n: u64,
    pub cursor: u64,
    pub label: u64,
    pub hash: u64,
    pub answers: u64,
    pub rule: agent_sensor_common::egress::EgressPorts,
    pub _pad0: [u8; 4],
    pub starts: [u64; DNS_MAX_LABELS],
    pub hashes: [u64; DNS_MAX_LABELS],
    pub buf: [u8; DNS_BYTES + 64],
}

#[map]
pub static DNS_SCRATCH: PerCpuArray<DnsScratch> = PerCpuArray::with_max_entries(1, 0);

/// Programs `syscall_sys_exit` tail-calls (verified on their own, so its own verification
/// stays small): slot [`TAIL_DNS_ANSWER`] parses DNS answers for the egress allowlists, slot
/// [`TAIL_COMPAT`] reads 32-bit and x32 syscalls.
#[map]
pub static TAIL: ProgramArray = ProgramArray::with_max_entries(2, 0);
pub const TAIL_DNS_ANSWER: u32 = 0;
pub const TAIL_COMPAT: u32 = 1;

/// Files whose opening kills the opener in the kernel (key: kernel dev, inode).
#[map]
pub static KILL_ON_ACCESS: HashMap<[u64; 2], u32> = HashMap::with_max_entries(4096, 0);

/// Executables an agent is killed for executing, before the new image runs.
#[map]
pub static FORBIDDEN_EXEC: HashMap<[u64; 2], u32> = HashMap::with_max_entries(4096, 0);
