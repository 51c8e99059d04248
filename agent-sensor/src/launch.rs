//! `agent-sensor exec`'s launch: the command is forked straight into the agent's cgroup
//! (`clone3` with `CLONE_INTO_CGROUP`), held at a gate until the daemon confirms the kernel
//! tracks it, and then supervised: exit status passed on, signals sent to us forwarded.
//!
//! Why a child and not `exec` in place: a process can enter a cgroup only by being born in
//! it or by migration, and migrating an existing process (a write to `cgroup.procs`) waits
//! for an RCU grace period on the kernel's cgroup threadgroup lock — 5 to 25 ms of wall time
//! here, on every agent start, with the CPU idle. Birth in the cgroup takes the lock's cheap
//! reader side (0.04 ms).

use std::{
    ffi::{CString, OsStr, OsString},
    fs::File,
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// What `wait` takes with sigwaitinfo: the command's end (SIGCHLD) and the signals passed
/// on to the command when a process sends them to us.
///
/// With a controlling terminal the command shares our process group, so that job control and
/// the terminal's own signals (Ctrl-C, Ctrl-\\, a resize) reach it directly; those are not
/// passed on a second time, and stop and continue signals keep their default action, which
/// stops and resumes both of us. Without one (a service, an orchestrator) the command leads a
/// process group of its own and what we receive goes to that group: a signal sent to our
/// group reaches the agent's processes once, through us, as it reached them all before.
const HELD: [libc::c_int; 8] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCHLD,
];

/// `CLONE_INTO_CGROUP` (libc's `c_int` constant cannot hold it).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The command, forked into its cgroup and waiting at the gate.
pub struct Gated {
    pid: libc::pid_t,
    /// The command leads its own process group (see `HELD`).
    own_group: bool,
    gate: Option<OwnedFd>,
    exec_error: File,
    /// The signal mask before ours (the command gets it back).
    old_mask: libc::sigset_t,
    /// The command's program as given, for an exec error.
    program: OsString,
}

/// What the command's end means for ours.
pub enum Ended {
    Exited(i32),
    Signalled(libc::c_int),
}

/// The command could not be executed: `exec` exits 127 (not found) or 126 (found, not
/// executable), as a shell does, so that a caller can tell this from the command's own failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot execute {program}: {reason}")]
pub struct CannotExecute {
    pub program: String,
    pub reason: std::io::Error,
}

impl CannotExecute {
    fn new(program: &OsStr, reason: std::io::Error) -> Self {
        Self {
            program: program.to_string_lossy().into_owned(),
            reason,
        }
    }

    /// The shell's exit status for it.
    pub fn exit_status(&self) -> u8 {
        if self.reason.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        }
    }
}

/// A command and the file its program names (found on PATH unless it holds a `/`): looked up
/// before the agent is registered, so that a typo does not leave a registered agent behind.
pub struct Found<'c> {
    command: &'c [OsString],
    path: PathBuf,
}

pub fn find_command(command: &[OsString]) -> Result<Found<'_>> {
    let (program, _) = command.split_first().context("no command given")?;
    let path = find_program(program)
        .ok_or_else(|| CannotExecute::new(program, std::io::ErrorKind::NotFound.into()))?;
    Ok(Found { command, path })
}

impl Gated {
    /// Forks the command into the cgroup `cgroup` (a cgroup v2 directory); it waits at the gate.
    pub fn spawn(cgroup: &Path, found: &Found) -> Result<Self> {
        let Found { command, path } = found;
        // `find_command` made `found` from a command with a program.
        let program = &command[0];
        // Everything the child needs is made here: after the fork it only makes system calls.
        let path = cstring(path.as_os_str())?;
        let argv = command
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<Vec<_>>>()?;
        let argv_ptrs = null_terminated(&argv);
        let env = std::env::vars_os()
            .map(|(k, v)| {
                let mut pair = k;
                pair.push("=");
                pair.push(v);
                cstring(&pair)
            })
            .collect::<Result<Vec<_>>>()?;
        let env_ptrs = null_terminated(&env);
        let dir = File::open(cgroup)
            .with_context(|| format!("cannot open the agent's cgroup {}", cgroup.display()))?;
        let (gate_read, gate_write) = pipe()?;
        let (error_read, error_write) = pipe()?;
        let parent = std::process::id() as libc::pid_t;
        let own_group = !has_controlling_terminal();
        // Blocked from before the fork: a signal for the command, or its end (SIGCHLD), that
        // comes before `wait` is held for it, not lost.
        let old_mask = block(&HELD)?;
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM forks like fork(): the child gets a copy of this
        // (single-threaded) process and runs only the system calls below before execve.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid < 0 {
            let err = std::io::Error::last_os_error();
            restore(&old_mask);
            return Err(err).with_context(|| {
                format!(
                    "cannot start the command in the agent's cgroup {}",
                    cgroup.display()
                )
            });
        }
        if pid == 0 {
            // SAFETY: the child; see child_main.
            unsafe {
                child_main(&ChildPlan {
                    parent,
                    own_group,
                    old_mask: &old_mask,
                    gate: gate_read.as_raw_fd(),
                    error: error_write.as_raw_fd(),
                    path: &path,
                    argv: &argv_ptrs,
                    env: &env_ptrs,
                })
            }
        }
        drop(gate_read);
        drop(error_write);
        let pid = pid as libc::pid_t;
        if own_group {
            // Also here, so that the group exists whichever of us runs first.
            // SAFETY: our own child, at the gate.
            unsafe { libc::setpgid(pid, pid) };
        }
        Ok(Self {
            pid,
            own_group,
            gate: Some(gate_write),
            exec_error: File::from(error_read),
            old_mask,
            program: program.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the command run; fails (and reaps the child) if it could not be executed.
    pub fn open(mut self) -> Result<Running> {
        // One byte through the gate: the child execs.
        let gate = self.gate.take().context("the gate is already open")?;
        let mut gate = File::from(gate);
        std::io::Write::write_all(&mut gate, b"g").context("cannot start the command")?;
        drop(gate);
        // The error pipe closes on a successful exec (close-on-exec) or carries its errno.
        let mut errno = Vec::new();
        self.exec_error
            .read_to_end(&mut errno)
            .context("cannot learn whether the command started")?;
        let running = Running {
            pid: self.pid,
            own_group: self.own_group,
            old_mask: self.old_mask,
        };
        if let Ok(errno) = <[u8; 4]>::try_from(errno.as_slice()) {
            let err = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            let _ = running.wait();
            return Err(CannotExecute::new(&self.program, err).into());
        }
        Ok(running)
    }

    /// Kills the gated child (it never ran the command) and reaps it.
    pub fn abandon(self) {
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: as above.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        restore(&self.old_mask);
    }
}

/// The command, running.
pub struct Running {
    pid: libc::pid_t,
    own_group: bool,
    old_mask: libc::sigset_t,
}

impl Running {
    /// Waits for the command's end, passing on the forwarded signals sent to us meanwhile.
    pub fn wait(self) -> Result<Ended> {
        let set = signal_set(&HELD);
        loop {
            if let Some(ended) = self.reap()? {
                restore(&self.old_mask);
                return Ok(ended);
            }
            // SAFETY: zeroed siginfo is a valid out-parameter.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid set and out-parameter.
            let signal = unsafe { libc::sigwaitinfo(&set, &mut info) };
            if signal < 0 || signal == libc::SIGCHLD {
                continue;
            }
            // Sent by a process (kill, sigqueue, tgkill), not by the terminal or the kernel.
            if matches!(
                info.si_code,
                libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL
            ) {
                let target = if self.own_group { -self.pid } else { self.pid };
                // SAFETY: our own child (or the group it leads), not yet reaped.
                unsafe { libc::kill(target, signal) };
            }
        }
    }

    fn reap(&self) -> Result<Option<Ended>> {
        let mut status = 0;
        // SAFETY: our own child.
        let ret = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(err).context("cannot wait for the command");
        }
        if ret == 0 {
            return Ok(None);
        }
        if libc::WIFEXITED(status) {
            return Ok(Some(Ended::Exited(libc::WEXITSTATUS(status))));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Some(Ended::Signalled(libc::WTERMSIG(status))));
        }
        Ok(None)
    }
}

/// Ends this process the way the command ended: its exit code, or its death by the same
/// signal (so that a shell or orchestrator waiting for us sees what it would have seen).
pub fn end_like(ended: Ended) -> ! {
    match ended {
        Ended::Exited(code) => std::process::exit(code),
        Ended::Signalled(signal) => {
            // SAFETY: restoring the default action and raising the signal on ourselves.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::sigprocmask(
                    libc::SIG_UNBLOCK,
                    &signal_set(&[signal]),
                    std::ptr::null_mut(),
                );
                libc::raise(signal);
            }
            // A signal whose default is not to end the process.
            std::process::exit(128 + signal)
        }
    }
}

/// What the child needs between fork and exec, all made before the fork.
struct ChildPlan<'a> {
    parent: libc::pid_t,
    own_group: bool,
    old_mask: &'a libc::sigset_t,
    /// Read end of the gate.
    gate: libc::c_int,
    /// Write end of the pipe that carries execve's errno.
    error: libc::c_int,
    path: &'a CString,
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
}

/// The child between fork and exec: system calls only (no allocation, no locks).
///
/// # Safety
/// Call only in the child of `clone3`, with pointers into memory made before the fork.
unsafe fn child_main(plan: &ChildPlan) -> ! {
    let ChildPlan {
        parent,
        own_group,
        old_mask,
        gate,
        error,
        path,
        argv,
        env,
    } = *plan;
    // SAFETY: plain system calls on values made before the fork.
    unsafe {
        // The command dies with us, as it would have had we exec'd in place and been killed.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(126);
        }
        if own_group {
            libc::setpgid(0, 0);
        }
        libc::sigprocmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut());
        // Nothing runs until the daemon has confirmed the kernel tracks us; a closed gate
        // without the byte means it did not.
        let mut byte = 0u8;
        loop {
            let n = libc::read(gate, (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(126);
        }
        libc::close(gate);
        libc::execve(path.as_ptr(), argv.as_ptr(), env.as_ptr());
        let errno = (*libc::__errno_location()).to_ne_bytes();
        libc::write(error, errno.as_ptr().cast(), errno.len());
        libc::_exit(127)
    }
}

/// Whether this process has a controlling terminal (whose foreground group gets its signals).
fn has_controlling_terminal() -> bool {
    // SAFETY: a constant C string; the descriptor is closed at once.
    unsafe {
        let fd = libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDONLY | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        libc::close(fd);
        true
    }
}

/// `program` as `execvp` would find it: itself if it names a path, else the first executable
/// of that name on `PATH`.
fn find_program(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    let Ok(name) = cstring(path.as_os_str()) else {
        return false;
    };
    // SAFETY: a valid C string.
    let ok = unsafe { libc::access(name.as_ptr(), libc::X_OK) } == 0;
    ok && path.is_file()
}

/// The pointers of `strings` and a null, as execve takes them (valid while `strings` lives).
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes())
        .with_context(|| format!("{} contains a NUL byte", s.to_string_lossy()))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create a pipe");
    }
    // SAFETY: two fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The set of `signals`.
fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; the signal numbers are valid.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in signals {
            libc::sigaddset(&mut set, *signal);
        }
        set
    }
}

/// Blocks `signals` (held for `sigwaitinfo`, none lost); returns the mask before.
fn block(signals: &[libc::c_int]) -> Result<libc::sigset_t> {
    let set = signal_set(signals);
    let mut old = signal_set(&[]);
    // SAFETY: valid sets.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot block signals");
    }
    Ok(old)
}

fn restore(mask: &libc::sigset_t) {
    // SAFETY: a mask sigprocmask gave us.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_as_execvp_finds_them() {
        assert_eq!(
            find_program(OsStr::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
        let sh = find_program(OsStr::new("sh")).expect("sh on PATH");
        assert!(sh.ends_with("sh") && sh.is_absolute(), "{sh:?}");
        assert_eq!(
            find_program(OsStr::new("no-such-program-agent-sensor")),
            None
        );
    }
}
