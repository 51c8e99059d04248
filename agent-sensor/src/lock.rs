//! One daemon per directory: two daemons on one state dir restore each other's agents, hand
//! out the same agent ids and overwrite each other's agents.json; two on one pin dir retire
//! each other's programs; `uninstall` under a running daemon removes what it relies on.
//!
//! The lock is a POSIX record lock (`fcntl(F_SETLK)`) on a file, not an `flock`: the keeper a
//! `--persist` daemon forks inherits every descriptor, and an `flock` (which belongs to the
//! open file) would stay held by the keeper once the daemon is killed, locking out the daemon
//! that takes over. A record lock belongs to the process: a fork does not inherit it, and the
//! kernel drops it when the daemon ends, however it ends.

use std::{
    fs::{File, OpenOptions},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("{what} {dir} is in use by {holder}; {advice}")]
    Held {
        what: &'static str,
        dir: PathBuf,
        /// "the agent-sensor daemon with pid N", or "an agent-sensor daemon" if it is gone by
        /// the time it is asked for.
        holder: String,
        advice: &'static str,
    },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What is locked, for the error when it is taken already.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// "the state directory", "the pin directory".
    pub what: &'static str,
    /// The directory, as the user named it.
    pub dir: &'a Path,
    /// What the user can do about it.
    pub advice: &'static str,
}

/// A lock held for as long as the value lives (closing the file releases it). Nothing else in
/// the process may open the lock file: closing any descriptor of it drops a record lock.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

/// Times `acquire` opens the lock file again after finding the one it locked removed.
const ATTEMPTS: usize = 8;

impl DirLock {
    /// Takes the lock on `file` (created if missing, its directory too), or says who holds it.
    pub fn acquire(file: &Path, claim: Claim) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: file.to_path_buf(),
            source,
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        for _ in 0..ATTEMPTS {
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(file)
                .map_err(io)?;
            let mut lock = whole_file(libc::F_WRLCK);
            // SAFETY: a valid descriptor and a flock struct that outlives the call.
            if unsafe { libc::fcntl(opened.as_raw_fd(), libc::F_SETLK, &mut lock) } != 0 {
                let error = std::io::Error::last_os_error();
                if !matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
                    return Err(io(error));
                }
                return Err(held(&opened, claim));
            }
            // `remove` may have unlinked the file between our open and our lock: a lock on a
            // file without the name guards nothing (the next daemon makes a new one).
            if is_named(&opened, file) {
                return Ok(Self {
                    file: opened,
                    path: file.to_path_buf(),
                });
            }
        }
        Err(io(std::io::Error::other(
            "the lock file was removed each time it was locked",
        )))
    }

    /// Releases the lock and removes its file, for `uninstall`, which leaves nothing of a
    /// daemon behind (a daemon starting meanwhile locks the file that has the name, see
    /// `acquire`).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// The refusal: who holds the lock on `file`, from the kernel.
fn held(file: &File, claim: Claim) -> LockError {
    let holder = match holder(file) {
        Some(pid) => format!("the agent-sensor daemon with pid {pid}"),
        None => "an agent-sensor daemon".into(),
    };
    LockError::Held {
        what: claim.what,
        dir: claim.dir.to_path_buf(),
        holder,
        advice: claim.advice,
    }
}

/// Whether `path` still names the open `file`.
fn is_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// A lock request of `kind` on the whole file.
fn whole_file(kind: i32) -> libc::flock {
    // SAFETY: flock is plain data; all zeroes is a valid value (start 0, length 0: to the end).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// The pid of the process holding a lock on `file`, from the kernel (none if it let go
/// meanwhile, or lives in a pid namespace this one cannot see).
fn holder(file: &File) -> Option<i32> {
    let mut lock = whole_file(libc::F_WRLCK);
    // SAFETY: a valid descriptor and a flock struct that outlives the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) } != 0 {
        return None;
    }
    (lock.l_type != libc::F_UNLCK as libc::c_short && lock.l_pid > 0).then_some(lock.l_pid)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader},
        process::{Command, Stdio},
    };

    use super::*;

    fn claim() -> Claim<'static> {
        Claim {
            what: "the state directory",
            dir: Path::new("/st"),
            advice: "stop it first",
        }
    }

    #[test]
    fn a_lock_held_by_another_process_is_refused_naming_its_pid_until_it_lets_go() {
        let dir = std::env::temp_dir().join(format!("as-lock-{}", std::process::id()));
        let file = dir.join("sub/daemon.lock");
        drop(DirLock::acquire(&file, claim()).expect("a free lock"));
        // Record locks are per process: the holder is another process, which takes the lock
        // the way the daemon does (lockf is fcntl's record lock) and keeps it until its stdin
        // closes.
        let script = "import fcntl, sys\n\
            f = open(sys.argv[1], 'r+')\n\
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
            print('locked', flush=True)\n\
            sys.stdin.read()\n";
        let mut holder = Command::new("python3")
            .args(["-c", script])
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        let refused = DirLock::acquire(&file, claim()).expect_err("the lock is held");
        assert_eq!(
            refused.to_string(),
            format!(
                "the state directory /st is in use by the agent-sensor daemon with pid {}; \
                 stop it first",
                holder.id()
            )
        );
        drop(holder.stdin.take());
        holder.wait().unwrap();
        let lock = DirLock::acquire(&file, claim()).expect("the lock was let go");
        lock.remove();
        assert!(!file.exists(), "the lock file was not removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
