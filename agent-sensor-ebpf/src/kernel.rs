//! Reading kernel structs at BTF-resolved offsets, and walking dentries into paths.

use agent_sensor_common::{
    flags, MAX_COMPONENT, MAX_KERNEL_PATH, MAX_PATH_DEPTH, RDONLY_CAST_CALL,
};
use aya_ebpf::helpers::generated::{
    bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel,
    bpf_probe_read_kernel_str, bpf_task_pt_regs,
};

use crate::maps::{off, SCRATCH};

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T: Copy>(base: u64, offset: u64) -> Option<T> {
    if base == 0 {
        return None;
    }
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper checks the source address; the destination is our own stack slot.
    let ret = unsafe {
        bpf_probe_read_kernel(
            value.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            (base + offset) as *const _,
        )
    };
    // SAFETY: the helper filled the value when it returned 0.
    (ret == 0).then(|| unsafe { value.assume_init() })
}

/// Reads a pointer field.
#[inline(always)]
pub fn read_ptr(base: u64, offset: u64) -> Option<u64> {
    read::<u64>(base, offset).filter(|p| *p != 0)
}

#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_get_current_task() }
}

/// The current task as the kernel's BTF types it (`bpf_get_current_task_btf`): its fields,
/// and those of the structs its pointer fields lead to, are plain loads that the verifier
/// checks against the running kernel's BTF and makes fault-safe, where a field of an untyped
/// pointer costs a `bpf_probe_read_kernel` call. The offsets are the loader's, from that same
/// BTF, and constants to the verifier (read-only globals). A pointer field that leads to
/// anything but a struct (`fdtable.fd`, an array of pointers) loads as a plain number. A BTF
/// tracepoint's pointer arguments are typed the same way (`Typed::arg`).
#[derive(Clone, Copy)]
pub struct Typed(*const u8);

impl Typed {
    #[inline(always)]
    pub fn current_task() -> Self {
        // SAFETY: plain helper call.
        Typed(unsafe { bpf_get_current_task_btf() }.cast())
    }

    /// The current task's user registers (`struct pt_regs`, `bpf_task_pt_regs`).
    #[inline(always)]
    pub fn current_regs() -> Option<Self> {
        // SAFETY: plain helper calls.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
        (!regs.is_null()).then_some(Typed(regs))
    }

    /// Pointer argument `n` of a BTF tracepoint (the verifier knows its type).
    #[inline(always)]
    pub fn arg(ctx: &aya_ebpf::programs::BtfTracePointContext, n: usize) -> Self {
        Typed(ctx.arg(n))
    }

    /// The field at `offset`.
    #[inline(always)]
    pub fn load<T: Copy>(self, offset: u64) -> T {
        // SAFETY: `offset` is a field of this struct in the running kernel's BTF: the
        // verifier rejects any other load, and turns this one into a fault-safe one.
        unsafe { self.0.add(offset as usize).cast::<T>().read_volatile() }
    }

    /// The struct the pointer field at `offset` leads to, unless it is null.
    #[inline(always)]
    fn follow(self, offset: u64) -> Option<Typed> {
        let to: *const u8 = self.load(offset);
        (!to.is_null()).then_some(Typed(to))
    }
}

/// Whether this kernel has `bpf_rdonly_cast` (see [`RDONLY_CAST_CALL`]): a constant to the
/// verifier, which so follows one side only of every test of it.
#[inline(always)]
pub fn typed_casts() -> bool {
    off!(typed_casts) != 0
}

/// `addr` cast to the kernel type `btf_id` (`bpf_rdonly_cast`, inlined by the verifier into a
/// register move): its fields load without a helper call, fault-safe. Only where
/// [`typed_casts`]: elsewhere the loader made the call a plain move, and a load from the
/// number it returns is refused.
#[inline(always)]
fn cast(addr: u64, btf_id: u64) -> Typed {
    // SAFETY: a call of this number is how a program calls a helper; the loader rewrites every
    // call of this one before load (see `RDONLY_CAST_CALL`), and the kfunc only retypes its
    // argument.
    Typed(unsafe {
        let rdonly_cast: unsafe extern "C" fn(u64, u64) -> *const u8 =
            core::mem::transmute(RDONLY_CAST_CALL as usize);
        rdonly_cast(addr, btf_id)
    })
}

/// The `T` at `offset` in the kernel struct at `addr`, whose BTF type is `btf_id`: a load
/// where [`typed_casts`] (0 where the address faults), a `bpf_probe_read_kernel` call
/// elsewhere. `None` for a null `addr` or a failed read.
#[inline(always)]
fn field<T: Copy>(addr: u64, btf_id: u64, offset: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    if typed_casts() {
        return Some(cast(addr, btf_id).load(offset));
    }
    read(addr, offset)
}

/// A pointer field, as [`field`] reads it: `None` for null, as [`read_ptr`].
#[inline(always)]
fn field_ptr(addr: u64, btf_id: u64, offset: u64) -> Option<u64> {
    field::<u64>(addr, btf_id, offset).filter(|p| *p != 0)
}

/// The current task's `mm` (0 for a kernel thread): one load, no helper call.
#[inline(always)]
pub fn current_mm() -> u64 {
    Typed::current_task().load::<u64>(off!(task_mm))
}

/// tgid of the current task's real parent.
#[inline(always)]
pub fn parent_tgid() -> u32 {
    Typed::current_task()
        .follow(off!(task_real_parent))
        .map_or(0, |parent| parent.load::<u32>(off!(task_tgid)))
}

/// The `struct file *` of descriptor `fd` of the current task: no helper call where
/// [`typed_casts`], one (the slot of the fd array) elsewhere, where an untyped walk took four.
/// This runs for every tracked open.
#[inline(always)]
pub fn current_file(fd: i64) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    let fdt = Typed::current_task()
        .follow(off!(task_files))?
        .follow(off!(files_fdt))?;
    let max_fds: u32 = fdt.load(off!(fdtable_max_fds));
    let fd_array: u64 = fdt.load(off!(fdtable_fd));
    if fd_array == 0 || fd as u64 >= max_fds as u64 {
        return None;
    }
    if typed_casts() {
        // `kiocb.ki_filp` is at offset 0 (the loader checks).
        let file: u64 = cast(fd_array + fd as u64 * 8, off!(btf_kiocb)).load(0);
        return (file != 0).then_some(file);
    }
    read_ptr(fd_array, (fd as u64) * 8)
}

/// Device, inode number and mode of a `struct file`.
#[inline(always)]
pub fn file_identity(file: u64) -> (u64, u64, u32) {
    let Some(inode) = field_ptr(file, off!(btf_file), off!(file_inode)) else {
        return (0, 0, 0);
    };
    let (mode, sb, ino) = inode_head(inode);
    let dev = field::<u32>(sb, off!(btf_super_block), off!(sb_dev)).unwrap_or(0) as u64;
    (dev, ino, mode as u32)
}

/// Words of an inode read at once for `inode_head`.
const INODE_HEAD_WORDS: u64 = 9;

/// `i_mode`, `i_sb` and `i_ino` of an inode (zero where unreadable): three loads where
/// [`typed_casts`]; elsewhere one read where all three lie in its first `INODE_HEAD_WORDS`
/// words, as in every kernel so far, three otherwise. This runs for every tracked open; each
/// read is a helper call.
#[inline(always)]
fn inode_head(inode: u64) -> (u16, u64, u64) {
    let (mode_at, sb_at, ino_at) = (off!(inode_mode), off!(inode_sb), off!(inode_ino));
    if typed_casts() {
        let inode = cast(inode, off!(btf_inode));
        return (inode.load(mode_at), inode.load(sb_at), inode.load(ino_at));
    }
    // Word index of a field, if it is a whole word of the head (mode: its low half-word).
    let word = |at: u64| (at % 8 == 0 && at < INODE_HEAD_WORDS * 8).then_some((at / 8) as usize);
    if let (Some(0), Some(sb_word), Some(ino_word)) = (word(mode_at), word(sb_at), word(ino_at)) {
        let head: [u64; INODE_HEAD_WORDS as usize] =
            read(inode, 0).unwrap_or([0; INODE_HEAD_WORDS as usize]);
        let sb = head.get(sb_word).copied().unwrap_or(0);
        let ino = head.get(ino_word).copied().unwrap_or(0);
        // Little-endian: the u16 is the low quarter of the first word.
        return (head[0] as u16, sb, ino);
    }
    (
        read::<u16>(inode, mode_at).unwrap_or(0),
        read_ptr(inode, sb_at).unwrap_or(0),
        read::<u64>(inode, ino_at).unwrap_or(0),
    )
}

/// `S_IFMT` and `S_IFSOCK` of `i_mode`.
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// The `struct sock *` behind a socket file, `None` for any other file.
#[inline(always)]
pub fn socket_sock(file: u64) -> Option<u64> {
    let inode = field_ptr(file, off!(btf_file), off!(file_inode))?;
    let mode: u16 = field(inode, off!(btf_inode), off!(inode_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let socket = field_ptr(file, off!(btf_file), off!(file_private_data))?;
    read_ptr(socket, off!(socket_sk))
}

/// Superblock magics of the two homes a pidfd has had: pidfs (6.9 on) keeps its `struct pid`
/// in the inode, the anonymous inode before it in the file.
const PID_FS_MAGIC: u64 = 0x5049_4446;
const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;

/// The process (its pid in the initial namespace) a pidfd `file` names, also for a thread's
/// pidfd; `None` for any other file. Read in the call's own exit, so the answer cannot race
/// the pidfd's close the way a later read of `/proc/<pid>/fdinfo` does. Rare calls only:
/// every read is a helper call.
#[inline(always)]
pub fn pidfd_pid(file: u64) -> Option<u32> {
    let inode = read_ptr(file, off!(file_inode))?;
    let sb = read_ptr(inode, off!(inode_sb))?;
    let pid = match read::<u64>(sb, off!(sb_magic))? {
        PID_FS_MAGIC => read_ptr(inode, off!(inode_private))?,
        ANON_INODE_FS_MAGIC => read_ptr(file, off!(file_private_data))?,
        _ => return None,
    };
    // A thread's pidfd names the thread: its process is its task's thread group.
    let task = read_ptr(pid, off!(pid_tasks)).map(|link| link - off!(task_pid_links));
    task.and_then(|task| read::<u32>(task, off!(task_tgid)))
        .or_else(|| read::<u32>(pid, off!(pid_numbers) + off!(upid_nr)))
        .filter(|nr| *nr != 0)
}

/// The inode number of the user namespace that owns the current task's mount namespace (0 if
/// unreadable): a mount in a namespace a less privileged user namespace owns cannot reach the
/// host's (the kernel makes such mounts slaves of the parent's and locks them).
#[inline(always)]
pub fn mount_ns_owner() -> u64 {
    read_ptr(current_task(), off!(task_nsproxy))
        .and_then(|nsproxy| read_ptr(nsproxy, off!(nsproxy_mnt_ns)))
        .and_then(|mnt_ns| read_ptr(mnt_ns, off!(mnt_ns_user_ns)))
        .and_then(|user_ns| read::<u32>(user_ns, off!(user_ns_inum)))
        .unwrap_or(0) as u64
}

/// cgroup v2 id of `task` (its default-hierarchy cgroup's kernfs id).
#[inline(always)]
pub fn task_cgroup_id(task: u64) -> Option<u64> {
    let css_set = read_ptr(task, off!(task_cgroups))?;
    let cgroup = read_ptr(css_set, off!(css_set_dfl_cgrp))?;
    cgroup_id(cgroup)
}

#[inline(always)]
pub fn cgroup_id(cgroup: u64) -> Option<u64> {
    let kn = read_ptr(cgroup, off!(cgroup_kn))?;
    read(kn, off!(kernfs_node_id))
}

/// Walks the `struct path` at `path` up to the root of the mount namespace and writes its
/// components into `dst` leaf first, each as one length byte and the name's bytes. Returns the
/// bytes written and `flags` bits for an unfinished walk.
///
/// `dst` must have room for `MAX_KERNEL_PATH` bytes plus `MAX_COMPONENT` bytes of slack.
/// The running length is kept in the per-CPU scratch map (see `maps::Scratch`).
#[inline(always)]
pub fn walk_path(path: u64, dst: *mut u8) -> (u16, u16) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return (0, flags::PATH_UNRESOLVED);
    };
    // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
    let walk = unsafe { core::ptr::addr_of_mut!((*scratch).walk) };
    // SAFETY: as above.
    unsafe { walk.write_volatile(0) };
    let flags = walk_into(path, dst, walk);
    // SAFETY: as above.
    let written = unsafe { walk.read_volatile() } & (MAX_KERNEL_PATH as u64 - 1);
    (written as u16, flags)
}

/// `mnt` and `dentry` of a `struct path`: two loads where [`typed_casts`], elsewhere one read
/// where they are adjacent, as in every kernel so far.
#[inline(always)]
pub fn path_parts(path: u64) -> Option<(u64, u64)> {
    let (mnt_at, dentry_at) = (off!(path_mnt), off!(path_dentry));
    let (mnt, dentry) = if typed_casts() {
        let path = cast(path, off!(btf_path));
        (path.load(mnt_at), path.load(dentry_at))
    } else if dentry_at == mnt_at + 8 {
        let both: [u64; 2] = read(path, mnt_at)?;
        (both[0], both[1])
    } else {
        (read::<u64>(path, mnt_at)?, read::<u64>(path, dentry_at)?)
    };
    (mnt != 0 && dentry != 0).then_some((mnt, dentry))
}

/// What the walk needs of a `struct mount`: its parent mount, the dentry it is mounted on, and
/// its root. Pointers are 0 where unreadable.
#[derive(Clone, Copy)]
struct MountLinks {
    parent: u64,
    mountpoint: u64,
    root: u64,
}

/// Three loads where [`typed_casts`]; elsewhere one read where the three fields follow each
/// other (`mnt_parent`, `mnt_mountpoint`, then the embedded vfsmount starting with
/// `mnt_root`), as in every kernel so far, three otherwise.
#[inline(always)]
fn mount_links(mount: u64) -> MountLinks {
    let parent_at = off!(mount_parent);
    let root_at = off!(mount_mnt) + off!(vfsmount_root);
    if typed_casts() {
        let mount = cast(mount, off!(btf_mount));
        return MountLinks {
            parent: mount.load(parent_at),
            mountpoint: mount.load(off!(mount_mountpoint)),
            root: mount.load(root_at),
        };
    }
    if off!(mount_mountpoint) == parent_at + 8 && root_at == parent_at + 16 {
        let [parent, mountpoint, root] = read::<[u64; 3]>(mount, parent_at).unwrap_or([0; 3]);
        return MountLinks {
            parent,
            mountpoint,
            root,
        };
    }
    MountLinks {
        parent: read_ptr(mount, parent_at).unwrap_or(0),
        mountpoint: read_ptr(mount, off!(mount_mountpoint)).unwrap_or(0),
        root: read_ptr(mount, root_at).unwrap_or(0),
    }
}

/// `d_parent` and `d_name.name` of a dentry: two loads where [`typed_casts`]; elsewhere one
/// read where they are 16 bytes apart (the name's `hash_len` between them), as in every kernel
/// so far, two otherwise.
#[inline(always)]
fn dentry_links(dentry: u64) -> Option<(u64, u64)> {
    let (parent_at, name_at) = (off!(dentry_parent), off!(dentry_name_ptr));
    let (parent, name) = if typed_casts() {
        let dentry = cast(dentry, off!(btf_dentry));
        (dentry.load(parent_at), dentry.load(name_at))
    } else if name_at == parent_at + 16 {
        let [parent, _, name] = read::<[u64; 3]>(dentry, parent_at)?;
        (parent, name)
    } else {
        (
            read::<u64>(dentry, parent_at)?,
            read::<u64>(dentry, name_at)?,
        )
    };
    (parent != 0 && name != 0).then_some((parent, name))
}

#[inline(always)]
fn walk_into(path: u64, dst: *mut u8, walk: *mut u64) -> u16 {
    let Some((mnt, mut dentry)) = path_parts(path) else {
        return flags::PATH_UNRESOLVED;
    };
    // `struct vfsmount` is embedded in `struct mount`.
    let mut mount = mnt - off!(mount_mnt);
    // Read once per mount, not once per component: each read is a helper call.
    let mut links = mount_links(mount);
    if links.root == 0 {
        return flags::PATH_UNRESOLVED;
    }
    for _ in 0..MAX_PATH_DEPTH {
        if dentry == links.root {
            if links.parent == 0 || links.mountpoint == 0 {
                return flags::PATH_UNRESOLVED;
            }
            if links.parent == mount {
                return 0;
            }
            dentry = links.mountpoint;
            mount = links.parent;
            links = mount_links(mount);
            if links.root == 0 {
                return flags::PATH_UNRESOLVED;
            }
            continue;
        }
        let Some((parent, name)) = dentry_links(dentry) else {
            return flags::PATH_UNRESOLVED;
        };
        if parent == dentry {
            // Root of a filesystem that is not mounted here (a detached or internal mount).
            return 0;
        }
        // SAFETY: `walk` points into the per-CPU scratch map.
        let written = unsafe { walk.read_volatile() } & (MAX_KERNEL_PATH as u64 - 1);
        if written + 1 + MAX_COMPONENT as u64 > MAX_KERNEL_PATH as u64 - 1 {
            return flags::TRUNCATED;
        }
        let at = written & (MAX_KERNEL_PATH as u64 - 1);
        // SAFETY: `at < MAX_KERNEL_PATH` and the caller guarantees MAX_COMPONENT bytes of slack.
        let copied = unsafe {
            bpf_probe_read_kernel_str(
                dst.add(at as usize + 1).cast(),
                MAX_COMPONENT as u32,
                name as *const _,
            )
        };
        if copied <= 0 {
            return flags::PATH_UNRESOLVED;
        }
        // `copied` counts the terminating NUL, which the encoding does not keep.
        let len = (copied as u64 - 1) & (MAX_COMPONENT as u64 - 1);
        // SAFETY: as above.
        unsafe { *dst.add(at as usize) = len as u8 };
        // SAFETY: as above.
        unsafe { walk.write_volatile(written + 1 + len) };
        dentry = parent;
    }
    flags::PATH_DEPTH_EXCEEDED
}

/// Sends SIGKILL to the current process when (dev, ino) is in `list`. The signal is delivered
/// before the current syscall returns to user space. Returns whether it was sent.
#[inline(always)]
pub fn kill_if_listed(list: &aya_ebpf::maps::HashMap<[u64; 2], u32>, dev: u64, ino: u64) -> bool {
    if ino == 0 {
        return false;
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { list.get(&[dev, ino]) }.is_none() {
        return false;
    }
    // SAFETY: plain helper call; SIGKILL.
    unsafe { aya_ebpf::helpers::generated::bpf_send_signal(9) == 0 }
}

/// `*counter += value` as one BPF atomic add: threads of one process on different CPUs may
/// update one counter at once. (core's atomics are not available on the BPF target.)
#[inline(always)]
pub unsafe fn atomic_add(counter: *mut u64, value: u64) {
    // SAFETY: the caller passes a valid, 8-aligned pointer into a map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({counter} + 0) += {value}",
            counter = in(reg) counter,
            value = in(reg) value,
        );
    }
}

/// `*word |= bits` as one BPF atomic or, for the same reason as `atomic_add`.
#[inline(always)]
pub unsafe fn atomic_or(word: *mut u64, bits: u64) {
    // SAFETY: the caller passes a valid, 8-aligned pointer into a map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({word} + 0) |= {bits}",
            word = in(reg) word,
            bits = in(reg) bits,
        );
    }
}
