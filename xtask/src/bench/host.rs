//! What the benchmark needs from the host and gives back at the end: a work directory outside
//! the workspace, tracefs (bpftrace's tracepoints need it), and Debian packages.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// Where the bench keeps its files: sensor state, the session's git repositories, secrets for
/// the latency rounds, auditd's log. Outside /work/main on purpose: a crate created inside a
/// cargo workspace would join it. Removed at the end.
pub const WORK_DIR: &str = "/var/lib/agent-sensor-bench";

pub struct WorkDir {
    pub path: PathBuf,
}

impl WorkDir {
    /// Creates the work directory, removing what a killed earlier run left there.
    pub fn create() -> Result<Self> {
        let path = PathBuf::from(WORK_DIR);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove the stale {}", path.display()))?;
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { path })
    }

    /// A fresh subdirectory.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.path.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("xtask bench: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// tracefs, mounted by the bench if it was not (and unmounted again on drop).
pub struct Tracefs {
    mounted: Option<PathBuf>,
}

impl Tracefs {
    pub fn ensure() -> Result<Self> {
        let present = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .any(|dir| Path::new(dir).join("events").exists());
        if present {
            return Ok(Self { mounted: None });
        }
        let target = PathBuf::from("/sys/kernel/tracing");
        let c_target = CString::new(target.as_os_str().as_bytes())?;
        // SAFETY: mount(2) with NUL-terminated strings and no data.
        let rc = unsafe {
            libc::mount(
                c"tracefs".as_ptr(),
                c_target.as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot mount tracefs on /sys/kernel/tracing (bpftrace needs it)");
        }
        eprintln!("xtask bench: mounted tracefs on /sys/kernel/tracing for bpftrace");
        Ok(Self {
            mounted: Some(target),
        })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if let Some(target) = self.mounted.take() {
            let Ok(c_target) = CString::new(target.as_os_str().as_bytes()) else {
                return;
            };
            // SAFETY: umount2 of the mount this guard made; lazily if something still uses it.
            unsafe {
                if libc::umount2(c_target.as_ptr(), 0) != 0 {
                    libc::umount2(c_target.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
}

/// The path of `program` on PATH (and the sbin directories, which a sudo PATH may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file());
    found
}

/// Makes sure every `(program, Debian package)` is installed, with `apt-get install -y`
/// (after `apt-get update` if the first attempt fails). Returns the packages installed now.
pub fn ensure_packages(needed: &[(&str, &str)]) -> Result<Vec<String>> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(program, _)| which(program).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    eprintln!("xtask bench: installing {} with apt-get", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|status| status.success())
            .unwrap_or(false)
    };
    if !install() {
        let updated = Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|status| status.success())
            .unwrap_or(false);
        if !updated || !install() {
            bail!(
                "cannot install {} with apt-get; install them by hand or run with --no-peers",
                missing.join(" ")
            );
        }
    }
    for (program, package) in needed {
        if which(program).is_none() {
            bail!("{package} is installed but {program} is not on PATH");
        }
    }
    Ok(missing.into_iter().map(String::from).collect())
}

/// The first line a program prints for its version flag, or "unknown".
pub fn version(program: &str, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .map(|out| {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .filter(|line| !line.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
