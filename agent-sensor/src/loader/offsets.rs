//! Resolves every struct offset the eBPF programs read from the running kernel's BTF.

use agent_sensor_common::{KernelOffsets, UringOffsets};

use crate::btf::{Btf, BtfError};

/// Looks up every offset in [`KernelOffsets`]; the first missing member is the error, naming
/// struct and member so that an unsupported kernel is diagnosed in one line. `casts` is what
/// [`typed_casts`] found, `None` for the `bpf_probe_read_kernel` side.
pub fn resolve(btf: &Btf, casts: Option<TypedCasts>) -> Result<KernelOffsets, BtfError> {
    let o = |strukt: &str, member: &str| btf.member_offset(strukt, member);
    // `struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const char *name; }`
    let d_name = o("dentry", "d_name")?;
    let registers = |names: [&str; 6]| -> Result<[u32; 6], BtfError> {
        let mut offsets = [0u32; 6];
        for (slot, reg) in offsets.iter_mut().zip(names) {
            *slot = o("pt_regs", reg)?;
        }
        Ok(offsets)
    };
    let regs_args = registers(["di", "si", "dx", "r10", "r8", "r9"])?;
    // A 32-bit syscall's arguments (i386 convention), also from a 64-bit process.
    let regs_compat_args = registers(["bx", "cx", "dx", "si", "di", "bp"])?;
    Ok(KernelOffsets {
        task_pid: o("task_struct", "pid")?,
        task_tgid: o("task_struct", "tgid")?,
        task_real_parent: o("task_struct", "real_parent")?,
        task_mm: o("task_struct", "mm")?,
        task_fs: o("task_struct", "fs")?,
        task_files: o("task_struct", "files")?,
        task_signal: o("task_struct", "signal")?,
        task_exit_code: o("task_struct", "exit_code")?,
        task_thread_status: o("task_struct", "thread_info.status")?,
        signal_live: o("signal_struct", "live")?,
        mm_arg_start: o("mm_struct", "arg_start")?,
        mm_arg_end: o("mm_struct", "arg_end")?,
        mm_env_start: o("mm_struct", "env_start")?,
        mm_env_end: o("mm_struct", "env_end")?,
        binprm_filename: o("linux_binprm", "filename")?,
        binprm_file: o("linux_binprm", "file")?,
        fs_pwd: o("fs_struct", "pwd")?,
        fs_root: o("fs_struct", "root")?,
        path_mnt: o("path", "mnt")?,
        path_dentry: o("path", "dentry")?,
        dentry_name_len: d_name + o("qstr", "len")?,
        dentry_name_ptr: d_name + o("qstr", "name")?,
        dentry_parent: o("dentry", "d_parent")?,
        dentry_inode: o("dentry", "d_inode")?,
        vfsmount_root: o("vfsmount", "mnt_root")?,
        mount_mnt: o("mount", "mnt")?,
        mount_parent: o("mount", "mnt_parent")?,
        mount_mountpoint: o("mount", "mnt_mountpoint")?,
        files_fdt: o("files_struct", "fdt")?,
        fdtable_max_fds: o("fdtable", "max_fds")?,
        fdtable_fd: o("fdtable", "fd")?,
        file_path: o("file", "f_path")?,
        file_inode: o("file", "f_inode")?,
        inode_mode: o("inode", "i_mode")?,
        inode_ino: o("inode", "i_ino")?,
        inode_sb: o("inode", "i_sb")?,
        sb_dev: o("super_block", "s_dev")?,
        cgroup_kn: o("cgroup", "kn")?,
        cgroup_root: o("cgroup", "root")?,
        cgroup_root_hierarchy_id: o("cgroup_root", "hierarchy_id")?,
        kernfs_node_id: o("kernfs_node", "id")?,
        task_cgroups: o("task_struct", "cgroups")?,
        css_set_dfl_cgrp: o("css_set", "dfl_cgrp")?,
        regs_args,
        regs_compat_args,
        regs_nr: o("pt_regs", "orig_ax")?,
        file_private_data: o("file", "private_data")?,
        socket_sk: o("socket", "sk")?,
        sock_family: o("sock", "__sk_common.skc_family")?,
        sock_dport: o("sock", "__sk_common.skc_dport")?,
        sock_num: o("sock", "__sk_common.skc_num")?,
        sock_daddr: o("sock", "__sk_common.skc_daddr")?,
        sock_v6_daddr: o("sock", "__sk_common.skc_v6_daddr")?,
        inode_private: o("inode", "i_private")?,
        sb_magic: o("super_block", "s_magic")?,
        pid_numbers: o("pid", "numbers")?,
        upid_nr: o("upid", "nr")?,
        pid_tasks: o("pid", "tasks")?,
        task_pid_links: o("task_struct", "pid_links")?,
        task_nsproxy: o("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: o("nsproxy", "mnt_ns")?,
        mnt_ns_user_ns: o("mnt_namespace", "user_ns")?,
        user_ns_inum: o("user_namespace", "ns")? + o("ns_common", "inum")?,
        btf_kiocb: casts.map_or(0, |c| c.types.kiocb),
        btf_file: casts.map_or(0, |c| c.types.file),
        btf_inode: casts.map_or(0, |c| c.types.inode),
        btf_super_block: casts.map_or(0, |c| c.types.super_block),
        btf_path: casts.map_or(0, |c| c.types.path),
        btf_dentry: casts.map_or(0, |c| c.types.dentry),
        btf_mount: casts.map_or(0, |c| c.types.mount),
        typed_casts: casts.is_some() as u32,
        uring: uring(btf).unwrap_or_default(),
        magic: KernelOffsets::MAGIC,
    })
}

/// Where an io_uring send keeps its length and destination; `None` where any is missing (the
/// sends are then not recorded, the rest of io_uring is).
fn uring_send(btf: &Btf) -> Option<UringOffsets> {
    let o = |strukt: &str, member: &str| btf.member_offset(strukt, member).ok();
    Some(UringOffsets {
        send_present: 1,
        send_len: o("io_sr_msg", "len")?,
        async_data: o("io_kiocb", "async_data")?,
        send_name: o("io_async_msghdr", "msg.msg_name")?,
        send_namelen: o("io_async_msghdr", "msg.msg_namelen")?,
        ..UringOffsets::default()
    })
}

/// io_uring's offsets, `None` where any is missing: a kernel built without io_uring, or one
/// whose private structs moved on (the sensor then runs without the io_uring program, and
/// says so).
pub fn uring(btf: &Btf) -> Option<UringOffsets> {
    let o = |strukt: &str, member: &str| btf.member_offset(strukt, member).ok();
    Some(UringOffsets {
        present: 1,
        opcode: o("io_kiocb", "opcode")?,
        sqe_fd: o("io_kiocb", "cqe")? + o("io_cqe", "fd")?,
        open_dfd: o("io_open", "dfd")?,
        open_filename: o("io_open", "filename")?,
        open_how: o("io_open", "how")?,
        rename_old_dfd: o("io_rename", "old_dfd")?,
        rename_new_dfd: o("io_rename", "new_dfd")?,
        rename_oldpath: o("io_rename", "oldpath")?,
        rename_newpath: o("io_rename", "newpath")?,
        rename_flags: o("io_rename", "flags")?,
        unlink_dfd: o("io_unlink", "dfd")?,
        unlink_flags: o("io_unlink", "flags")?,
        unlink_filename: o("io_unlink", "filename")?,
        mkdir_dfd: o("io_mkdir", "dfd")?,
        mkdir_mode: o("io_mkdir", "mode")?,
        mkdir_filename: o("io_mkdir", "filename")?,
        link_old_dfd: o("io_link", "old_dfd")?,
        link_new_dfd: o("io_link", "new_dfd")?,
        link_oldpath: o("io_link", "oldpath")?,
        link_newpath: o("io_link", "newpath")?,
        link_flags: o("io_link", "flags")?,
        socket_domain: o("io_socket", "domain")?,
        socket_type: o("io_socket", "type")?,
        socket_protocol: o("io_socket", "protocol")?,
        connect_addr: o("io_connect", "addr")?,
        connect_addr_len: o("io_connect", "addr_len")?,
        sendmsg_msg: o("io_sr_msg", "umsg")?,
        filename_name: o("filename", "name")?,
        ..uring_send(btf).unwrap_or_default()
    })
}

/// What the programs' typed loads need of the kernel's BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypedCasts {
    /// Id of the `bpf_rdonly_cast` kfunc (kernel 6.2 and later).
    pub kfunc: u32,
    pub types: CastTypes,
}

/// Ids of the structs the programs cast addresses to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CastTypes {
    /// `struct kiocb`, which starts with its `struct file *ki_filp`.
    pub kiocb: u32,
    pub file: u32,
    pub inode: u32,
    pub super_block: u32,
    pub path: u32,
    pub dentry: u32,
    pub mount: u32,
}

/// Set (to anything) to load the programs' `bpf_probe_read_kernel` side even where the kernel
/// has `bpf_rdonly_cast`: the side older kernels take, testable here.
pub const NO_TYPED_CASTS_ENV: &str = "AGENT_SENSOR_NO_TYPED_CASTS";

/// The kfunc and type ids for typed loads, unless the kernel lacks them or
/// [`NO_TYPED_CASTS_ENV`] is set.
pub fn typed_casts(btf: &Btf) -> Option<TypedCasts> {
    if std::env::var_os(NO_TYPED_CASTS_ENV).is_some() {
        return None;
    }
    let kfunc = btf.func_id("bpf_rdonly_cast")?;
    if btf.member_offset("kiocb", "ki_filp").ok()? != 0 {
        return None;
    }
    let id = |name| btf.struct_id(name).ok();
    let types = CastTypes {
        kiocb: id("kiocb")?,
        file: id("file")?,
        inode: id("inode")?,
        super_block: id("super_block")?,
        path: id("path")?,
        dentry: id("dentry")?,
        mount: id("mount")?,
    };
    Some(TypedCasts { kfunc, types })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_offset_on_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no kernel BTF on this machine");
            return;
        };
        let offsets = resolve(&btf, typed_casts(&btf)).expect("every member exists");
        // `pid` and `tgid` are adjacent `pid_t`s in every kernel.
        assert_eq!(offsets.task_tgid, offsets.task_pid + 4);
        // `path` is `{ vfsmount *mnt; dentry *dentry; }`.
        assert_eq!((offsets.path_mnt, offsets.path_dentry), (0, 8));
        assert_eq!(offsets.dentry_name_ptr, offsets.dentry_name_len + 4);
        assert_eq!(offsets.magic, KernelOffsets::MAGIC);
    }

    #[test]
    fn io_uring_offsets_resolve_on_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no kernel BTF on this machine");
            return;
        };
        if !btf.has_struct("io_kiocb") {
            assert_eq!(uring(&btf), None, "no io_uring in this kernel");
            return;
        }
        let uring = uring(&btf).expect("every io_uring member exists");
        assert_eq!(uring.present, 1);
        // Each operation's struct starts with the request's `struct file *` (the union at
        // the start of `io_kiocb`), so its own fields come after it; a filename's `name` is
        // its first member.
        assert!(
            uring.open_dfd >= 8 && uring.open_filename > uring.open_dfd,
            "{uring:?}"
        );
        assert!(
            uring.opcode >= 64,
            "after the 64-byte command area: {uring:?}"
        );
        assert_eq!(uring.filename_name, 0);
        // A send's buffer and length follow the request's file; the destination is the
        // first member of `struct msghdr`, its length right after the pointer.
        assert_eq!(uring.send_present, 1, "{uring:?}");
        assert!(uring.send_len > uring.sendmsg_msg, "{uring:?}");
        assert_eq!(uring.send_namelen, uring.send_name + 8, "{uring:?}");
        assert_eq!(resolve(&btf, None).unwrap().uring, uring);
    }

    #[test]
    fn typed_casts_resolve_where_the_kernel_has_the_kfunc() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no kernel BTF on this machine");
            return;
        };
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let has_kfunc = kallsyms
            .lines()
            .any(|line| line.split_whitespace().nth(2) == Some("bpf_rdonly_cast"));
        if std::env::var_os(NO_TYPED_CASTS_ENV).is_some() || !has_kfunc {
            assert_eq!(typed_casts(&btf), None);
            return;
        }
        let casts = typed_casts(&btf).expect("this kernel has bpf_rdonly_cast");
        let types = casts.types;
        let ids = [
            casts.kfunc,
            types.kiocb,
            types.file,
            types.inode,
            types.super_block,
            types.path,
            types.dentry,
            types.mount,
        ];
        assert!(ids.iter().all(|id| *id != 0), "{casts:?}");
        let offsets = resolve(&btf, Some(casts)).unwrap();
        assert_eq!((offsets.typed_casts, offsets.btf_dentry), (1, types.dentry));
        let untyped = resolve(&btf, None).unwrap();
        assert_eq!((untyped.typed_casts, untyped.btf_dentry), (0, 0));
    }
}
