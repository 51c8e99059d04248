//! Resolves every struct offset the eBPF programs read from the running kernel's BTF.

use agent_sensor_common::KernelOffsets;

use crate::btf::{Btf, BtfError};

/// Looks up every offset in [`KernelOffsets`]; the first missing member is the error, naming
/// struct and member so that an unsupported kernel is diagnosed in one line.
pub fn resolve(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let o = |strukt: &str, member: &str| btf.member_offset(strukt, member);
    // `struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const char *name; }`
    let d_name = o("dentry", "d_name")?;
    let regs = ["di", "si", "dx", "r10", "r8", "r9"];
    let mut regs_args = [0u32; 6];
    for (slot, reg) in regs_args.iter_mut().zip(regs) {
        *slot = o("pt_regs", reg)?;
    }
    Ok(KernelOffsets {
        task_pid: o("task_struct", "pid")?,
        task_tgid: o("task_struct", "tgid")?,
        task_real_parent: o("task_struct", "real_parent")?,
        task_mm: o("task_struct", "mm")?,
        task_fs: o("task_struct", "fs")?,
        task_files: o("task_struct", "files")?,
        task_signal: o("task_struct", "signal")?,
        task_exit_code: o("task_struct", "exit_code")?,
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
        regs_nr: o("pt_regs", "orig_ax")?,
        file_private_data: o("file", "private_data")?,
        socket_sk: o("socket", "sk")?,
        sock_family: o("sock", "__sk_common.skc_family")?,
        sock_dport: o("sock", "__sk_common.skc_dport")?,
        sock_num: o("sock", "__sk_common.skc_num")?,
        sock_daddr: o("sock", "__sk_common.skc_daddr")?,
        sock_v6_daddr: o("sock", "__sk_common.skc_v6_daddr")?,
        magic: KernelOffsets::MAGIC,
    })
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
        let offsets = resolve(&btf).expect("every member exists on supported kernels");
        // `pid` and `tgid` are adjacent `pid_t`s in every kernel.
        assert_eq!(offsets.task_tgid, offsets.task_pid + 4);
        // `path` is `{ vfsmount *mnt; dentry *dentry; }`.
        assert_eq!((offsets.path_mnt, offsets.path_dentry), (0, 8));
        assert_eq!(offsets.dentry_name_ptr, offsets.dentry_name_len + 4);
        assert_eq!(offsets.magic, KernelOffsets::MAGIC);
    }
}
