//! cgroups of the benchmark's own: the sensor tracks one, and tracked workloads join it.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result};

/// The cgroup v2 mount point, from /proc/self/mountinfo (`/sys/fs/cgroup` on a pure v2 host,
/// `/sys/fs/cgroup/unified` on a hybrid one).
pub fn v2_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read mountinfo")?;
    info.lines()
        .filter_map(|line| {
            let (mount, source) = line.split_once(" - ")?;
            let mount_point = PathBuf::from(mount.split(' ').nth(4)?);
            (source.split(' ').next()? == "cgroup2").then_some(mount_point)
        })
        .min_by_key(|path| path.components().count())
        .context("no cgroup2 file system is mounted (see /proc/self/mountinfo)")
}

/// Removes the cgroups of earlier benchmarks whose xtask died without cleaning up (Ctrl-C, a
/// kill): their names end in that xtask's pid.
pub fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let owner = rest.rsplit('-').next().unwrap_or_default();
        if !Path::new("/proc").join(owner).exists() {
            kill_and_remove(&entry.path());
        }
    }
}

const PREFIX: &str = "agent-sensor-bench-";

/// Every agent the bench starts with `agent-sensor exec` has a name starting with this.
pub const AGENT_PREFIX: &str = "bench-";

/// Removes the empty cgroups the sensor made for the bench's agents
/// (`<root>/agent-sensor/bench-…`) and did not remove itself before it stopped.
pub fn remove_agent_cgroups(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("agent-sensor")) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(AGENT_PREFIX)
        {
            // rmdir refuses a cgroup that still has processes.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// A cgroup the benchmark created; on drop its processes are killed and it is removed.
pub struct BenchCgroup {
    pub path: PathBuf,
    procs: CString,
}

impl BenchCgroup {
    pub fn create(root: &Path, name: &str) -> Result<Self> {
        let path = root.join(format!("{PREFIX}{name}-{}", std::process::id()));
        std::fs::create_dir(&path)
            .with_context(|| format!("cannot create cgroup {}", path.display()))?;
        let procs = CString::new(path.join("cgroup.procs").as_os_str().as_bytes())?;
        Ok(Self { path, procs })
    }

    /// The cgroup v2 id (what bpf_get_current_cgroup_id and bpftrace's `cgroup` return): the
    /// inode number of its directory.
    pub fn id(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        Ok(std::fs::metadata(&self.path)
            .with_context(|| format!("cannot stat {}", self.path.display()))?
            .ino())
    }

    /// Makes the command's process join this cgroup before it execs, so the sensor tracks it
    /// from its first instruction.
    pub fn join_before_exec(&self, cmd: &mut Command) {
        let procs = self.procs.clone();
        // SAFETY: the closure makes raw syscalls only: after fork in a threaded parent nothing
        // may allocate or take a lock.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // In cgroup v2, writing "0" moves the writing process itself.
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let result = if written == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                };
                libc::close(fd);
                result
            });
        }
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        kill_and_remove(&self.path);
    }
}

fn kill_and_remove(path: &Path) {
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    // rmdir fails with EBUSY until the killed processes are gone.
    for _ in 0..200 {
        if std::fs::remove_dir(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("xtask bench: could not remove cgroup {}", path.display());
}
