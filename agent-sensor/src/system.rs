//! Facts about the host the sensor needs before it can load anything: privileges, BTF,
//! pseudo-filesystems and where cgroup v2 lives.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SystemError {
    #[error(
        "agent-sensor must run as root (or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) to load \
         eBPF programs; run it with sudo or as the systemd service"
    )]
    NotRoot,
    #[error(
        "this kernel exposes no BTF at /sys/kernel/btf/vmlinux; agent-sensor needs a kernel \
         built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.x are)"
    )]
    NoBtf,
    #[error("cannot mount {fstype} at {target}: {source}; mount it by hand (mount -t {fstype} {fstype} {target}) or give the sensor CAP_SYS_ADMIN")]
    Mount {
        fstype: &'static str,
        target: String,
        source: std::io::Error,
    },
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(std::io::Error),
    #[error("no cgroup v2 hierarchy is mounted (looked for a cgroup2 entry in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`")]
    NoCgroup2,
}

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

pub fn require_root() -> Result<(), SystemError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(SystemError::NotRoot);
    }
    Ok(())
}

/// Lowers the calling thread's nice value by `levels` (at most to -20); returns the new one,
/// `None` for 0 levels. The run loop drains the ring buffer: when every core is busy, a
/// reader that waits its turn lets the ring fill, and records are lost.
pub fn boost_priority(levels: u8) -> std::io::Result<Option<i32>> {
    if levels == 0 {
        return Ok(None);
    }
    // getpriority returns -1 both as a nice value and on error: errno tells them apart.
    // SAFETY: errno is this thread's; getpriority and setpriority only read their arguments.
    let now = unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        nice
    };
    let target = (now - levels as i32).max(-20);
    // SAFETY: as above; 0 is the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, target) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some(target))
}

pub fn require_btf() -> Result<(), SystemError> {
    if !Path::new(BTF_PATH).exists() {
        return Err(SystemError::NoBtf);
    }
    Ok(())
}

/// One line of /proc/self/mountinfo, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub read_only: bool,
}

/// Undoes the octal escapes (`\040` for a space…) mountinfo uses in paths.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mount_point = unescape_mountinfo(left.get(4)?);
            let options = left.get(5)?;
            let fstype = right.split(' ').next()?.to_string();
            Some(MountEntry {
                mount_point: PathBuf::from(mount_point),
                fstype,
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

pub fn mounts() -> Result<Vec<MountEntry>, SystemError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(SystemError::MountInfo)?;
    Ok(parse_mountinfo(&text))
}

/// The cgroup v2 mount point: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid.
pub fn cgroup2_root() -> Result<PathBuf, SystemError> {
    mounts()?
        .into_iter()
        .filter(|m| m.fstype == "cgroup2")
        .map(|m| m.mount_point)
        .min_by_key(|p| p.components().count())
        .ok_or(SystemError::NoCgroup2)
}

/// A pseudo-filesystem the sensor may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PseudoFs {
    pub fstype: &'static str,
    pub target: &'static str,
}

pub const TRACEFS: PseudoFs = PseudoFs {
    fstype: "tracefs",
    target: "/sys/kernel/tracing",
};
pub const BPFFS: PseudoFs = PseudoFs {
    fstype: "bpf",
    target: "/sys/fs/bpf",
};
pub const SECURITYFS: PseudoFs = PseudoFs {
    fstype: "securityfs",
    target: "/sys/kernel/security",
};

/// What `ensure_mounted` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountOutcome {
    AlreadyMounted,
    Mounted,
}

/// Mounts `fs` at its usual place unless a filesystem of that type is already mounted there.
pub fn ensure_mounted(fs: PseudoFs) -> Result<MountOutcome, SystemError> {
    let present = mounts()?
        .iter()
        .any(|m| m.fstype == fs.fstype && m.mount_point == Path::new(fs.target));
    if present {
        return Ok(MountOutcome::AlreadyMounted);
    }
    let mount_err = |source| SystemError::Mount {
        fstype: fs.fstype,
        target: fs.target.to_string(),
        source,
    };
    std::fs::create_dir_all(fs.target).map_err(mount_err)?;
    let c = |s: &str| CString::new(s).expect("static strings have no NUL");
    let (source, target, fstype) = (c(fs.fstype), c(fs.target), c(fs.fstype));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(mount_err(std::io::Error::last_os_error()));
    }
    Ok(MountOutcome::Mounted)
}

/// Kernel release, e.g. `6.18.44`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines_including_escapes_and_optional_fields() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    40 25 0:35 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw\n\
                    41 25 0:36 / /sys/fs/bpf ro,relatime - bpf bpf rw\n\
                    garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[1].fstype, "cgroup2");
        assert!(m[2].read_only);
        assert!(!m[1].read_only);
    }

    #[test]
    fn finds_this_hosts_cgroup2_mount() {
        let root = cgroup2_root().expect("cgroup2 is mounted on every supported host");
        assert!(
            root.join("cgroup.controllers").exists(),
            "{}",
            root.display()
        );
    }

    #[test]
    fn a_boost_lowers_the_calling_threads_nice_value_and_no_other() {
        // SAFETY: getpriority and geteuid only read their arguments.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let mine = nice();
        // SAFETY: as above.
        let root = unsafe { libc::geteuid() } == 0;
        std::thread::spawn(move || {
            assert_eq!(boost_priority(0).unwrap(), None);
            let before = nice();
            match boost_priority(2) {
                Ok(Some(now)) => {
                    assert_eq!(now, (before - 2).max(-20));
                    assert_eq!(nice(), now);
                }
                Ok(None) => panic!("2 levels asked, none given"),
                // Without CAP_SYS_NICE a lower nice value is refused, and said so.
                Err(e) => assert!(!root, "{e}"),
            }
        })
        .join()
        .unwrap();
        assert_eq!(nice(), mine);
    }
}
