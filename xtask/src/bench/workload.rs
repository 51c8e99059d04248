//! The loads the benchmark measures, each in a process of its own (`xtask bench-workload …`,
//! this same binary), so that a tool can track it by cgroup, login uid or `agent-sensor exec`
//! while the bench process itself stays untracked:
//!
//! - `open-close`: `open("/dev/null")` + `close` in a loop, optionally paced to a rate;
//! - `tcp-connect`: connect to a listener on 127.0.0.1 (the bench's, see [`Listener`]) and
//!   close, in a loop;
//! - `fork-exec`: fork, exec `/bin/true`, wait, in a loop;
//! - `read-files`: open and read distinct files one after the other (sensitive files for the
//!   detection and containment latency), then wait.
//!
//! Each prints `iterations=N ns_per_iteration=X`, timed with the monotonic clock around the
//! loop only.

use std::{
    ffi::{CStr, CString},
    io::Read as _,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

/// Untimed iterations of the open/close loop before the timed loop, so that first-touch costs
/// (page faults, cold caches, the sensor's first map entries for this process) stay out of the
/// measurement. The other loops warm up with [`warm_up`] iterations of their own.
pub const WARM_UP_ITERATIONS: u64 = 10_000;

/// Iterations between clock reads when the loop runs for a duration.
const BATCH: u64 = 4096;

#[derive(Parser)]
pub struct WorkloadArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// open(PATH, O_RDONLY) + close in a loop.
    OpenClose {
        /// The file to open (it must exist).
        #[arg(long, default_value = "/dev/null")]
        path: PathBuf,
        /// Run exactly this many iterations.
        #[arg(long, conflicts_with = "seconds", required_unless_present = "seconds")]
        iterations: Option<u64>,
        /// Run for this long instead (checked every few thousand iterations).
        #[arg(long)]
        seconds: Option<f64>,
        /// Pace the loop to this many iterations per second (no warm-up then).
        #[arg(long)]
        per_second: Option<f64>,
        /// Wait until this file exists before starting (a start signal for many processes).
        #[arg(long)]
        wait_for: Option<PathBuf>,
        /// Run the paced loop in this many processes at once (this one and forked copies),
        /// each at --per-second; iterations are summed.
        #[arg(long, default_value_t = 1, requires = "per_second")]
        processes: u64,
    },
    /// kill(getpid(), 0) in a loop for SECONDS: one small record per call, no path for the
    /// kernel to walk — the cheapest record a tracked process can make, to load the sensor's
    /// decoder harder than one core of open/close loops can.
    SignalSelf {
        #[arg(long)]
        seconds: f64,
    },
    /// socket + connect to 127.0.0.1:PORT + close (with SO_LINGER 0: no TIME_WAIT left
    /// behind) in a loop.
    TcpConnect {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        iterations: u64,
    },
    /// fork + execve(PROGRAM) + waitpid in a loop.
    ForkExec {
        #[arg(long)]
        iterations: u64,
        #[arg(long, default_value = "/bin/true")]
        program: PathBuf,
    },
    /// open + read + close DIR/PREFIX<i> for i in FIRST..FIRST+COUNT, INTERVAL apart, then
    /// sleep HOLD (an agent that stays alive to be frozen).
    ReadFiles {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 0)]
        first: u64,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
    },
}

pub fn run(args: WorkloadArgs) -> Result<()> {
    let (done, elapsed) = match args.workload {
        Workload::OpenClose {
            path,
            iterations,
            seconds,
            per_second,
            wait_for,
            processes,
        } => {
            let path =
                CString::new(path.as_os_str().as_bytes()).context("--path holds a NUL byte")?;
            let path = path.as_c_str();
            if let Some(start) = wait_for {
                while !start.exists() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            match per_second {
                Some(rate) => {
                    let seconds = seconds.context("--per-second needs --seconds")?;
                    let length = Duration::from_secs_f64(seconds);
                    in_processes(processes, || paced_open_close(path, rate, length))?
                }
                None => {
                    open_close(path, WARM_UP_ITERATIONS)?;
                    timed(|| match (iterations, seconds) {
                        (Some(n), _) => open_close(path, n).map(|()| n),
                        (None, Some(seconds)) => for_seconds(seconds, |n| open_close(path, n)),
                        (None, None) => bail!("give --iterations or --seconds"),
                    })?
                }
            }
        }
        Workload::SignalSelf { seconds } => {
            signal_self(WARM_UP_ITERATIONS);
            timed(|| {
                for_seconds(seconds, |n| {
                    signal_self(n);
                    Ok(())
                })
            })?
        }
        Workload::TcpConnect { port, iterations } => {
            let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            tcp_connect(address, warm_up(iterations))?;
            timed(|| tcp_connect(address, iterations).map(|()| iterations))?
        }
        Workload::ForkExec {
            iterations,
            program,
        } => {
            let program = CString::new(program.as_os_str().as_bytes())?;
            fork_exec(&program, warm_up(iterations))?;
            timed(|| fork_exec(&program, iterations).map(|()| iterations))?
        }
        Workload::ReadFiles {
            dir,
            prefix,
            first,
            count,
            interval_ms,
            hold_ms,
        } => {
            let result = timed(|| {
                for i in first..first + count {
                    let path = dir.join(format!("{prefix}{i}"));
                    let mut content = Vec::new();
                    std::fs::File::open(&path)
                        .and_then(|mut file| file.read_to_end(&mut content))
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    std::thread::sleep(Duration::from_millis(interval_ms));
                }
                Ok(count)
            })?;
            std::thread::sleep(Duration::from_millis(hold_ms));
            result
        }
    };
    println!(
        "iterations={done} ns_per_iteration={:.1}",
        elapsed.as_nanos() as f64 / done.max(1) as f64
    );
    Ok(())
}

/// Untimed iterations before a timed loop of `iterations`: 1 %, at least 10.
fn warm_up(iterations: u64) -> u64 {
    (iterations / 100).max(10)
}

fn timed(work: impl FnOnce() -> Result<u64>) -> Result<(u64, Duration)> {
    // Instant is CLOCK_MONOTONIC.
    let start = Instant::now();
    let done = work()?;
    Ok((done, start.elapsed()))
}

fn open_close(path: &CStr, iterations: u64) -> Result<()> {
    // A plain counter: xtask is usually a debug build, and this keeps the loop's own cost tiny
    // next to the two syscalls.
    let mut i = 0;
    while i < iterations {
        // SAFETY: `path` is a NUL-terminated string; the descriptor is closed right away.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot open {}", path.to_string_lossy()));
        }
        // SAFETY: `fd` is ours.
        unsafe { libc::close(fd) };
        i += 1;
    }
    Ok(())
}

/// The open/close loop at `rate` iterations per second for `length`: each wake-up catches up
/// with the schedule, then sleeps until the next iteration is due.
///
/// The schedule starts at a phase of its own, somewhere in the first interval (from the pid):
/// loops started at the same instant would otherwise run in step, and the sensor would see
/// their records come in bunches, fewer wake-ups for as many records, than from loops that
/// started apart (separate agents). Either way the load is the same; the phase is not.
fn paced_open_close(path: &CStr, rate: f64, length: Duration) -> Result<(u64, Duration)> {
    // SAFETY: prctl on this process only; 1 ns timer slack makes the sleeps precise.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let fraction = f64::from(std::process::id().wrapping_mul(2_654_435_761)) / 2f64.powi(32);
    std::thread::sleep(Duration::from_secs_f64(fraction / rate));
    timed(|| {
        let start = Instant::now();
        let mut done = 0u64;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= length {
                break;
            }
            let due = (elapsed.as_secs_f64() * rate) as u64;
            if due > done {
                let n = (due - done).min(BATCH);
                open_close(path, n)?;
                done += n;
            } else {
                let next = Duration::from_secs_f64((done + 1) as f64 / rate);
                std::thread::sleep(next.saturating_sub(elapsed).min(length - elapsed));
            }
        }
        Ok(done)
    })
}

/// Runs `work` in `processes` processes at once: this one and `processes - 1` forked copies,
/// which report their iterations through a pipe. Iterations are summed; the time is this
/// process's. Call it before any thread is started (fork copies only the calling thread).
fn in_processes(
    processes: u64,
    work: impl Fn() -> Result<(u64, Duration)>,
) -> Result<(u64, Duration)> {
    if processes <= 1 {
        return work();
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot make a pipe");
    }
    let [read_end, write_end] = fds;
    let mut children = Vec::new();
    for _ in 1..processes {
        // SAFETY: single-threaded here; the child only runs `work`, writes and _exits.
        match unsafe { libc::fork() } {
            -1 => return Err(std::io::Error::last_os_error()).context("cannot fork"),
            0 => {
                let code = match work() {
                    Ok((done, _)) => {
                        let bytes = done.to_ne_bytes();
                        // SAFETY: writes 8 bytes from a live buffer; a pipe write of 8 bytes
                        // is atomic.
                        let written =
                            unsafe { libc::write(write_end, bytes.as_ptr().cast(), bytes.len()) };
                        i32::from(written != bytes.len() as isize)
                    }
                    Err(e) => {
                        eprintln!("bench-workload: {e:#}");
                        1
                    }
                };
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) };
            }
            pid => children.push(pid),
        }
    }
    // SAFETY: the parent keeps only the read end.
    unsafe { libc::close(write_end) };
    let mine = work();
    let mut failed = 0;
    for pid in children {
        let mut status = 0;
        // SAFETY: waits for a child of ours.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            failed += 1;
        }
    }
    let mut reports = Vec::new();
    // SAFETY: the read end is ours; File takes it over and closes it.
    let mut pipe = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(read_end) };
    pipe.read_to_end(&mut reports)
        .context("cannot read the copies' iterations")?;
    let (done, elapsed) = mine?;
    if failed > 0 {
        bail!("{failed} of {} copies of the loop failed", processes - 1);
    }
    let others: u64 = reports
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("chunks of 8")))
        .sum();
    Ok((done + others, elapsed))
}

/// Runs `batch(BATCH)` until `seconds` have passed (the clock is read once per batch);
/// returns the iterations done.
fn for_seconds(seconds: f64, mut batch: impl FnMut(u64) -> Result<()>) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut done = 0;
    while Instant::now() < deadline {
        batch(BATCH)?;
        done += BATCH;
    }
    Ok(done)
}

fn signal_self(iterations: u64) {
    // SAFETY: signal 0 to ourselves only checks that we may signal; nothing is delivered.
    let pid = unsafe { libc::getpid() };
    let mut i = 0;
    while i < iterations {
        // SAFETY: as above.
        unsafe { libc::kill(pid, 0) };
        i += 1;
    }
}

fn tcp_connect(address: SocketAddrV4, iterations: u64) -> Result<()> {
    let sockaddr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    for _ in 0..iterations {
        // SAFETY: plain socket calls on a descriptor this loop owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("socket");
            }
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            );
            let connected = libc::connect(
                fd,
                (&raw const sockaddr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if connected != 0 {
                return Err(error).with_context(|| format!("cannot connect to {address}"));
            }
        }
    }
    Ok(())
}

fn fork_exec(program: &CString, iterations: u64) -> Result<()> {
    let argv = [program.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    for _ in 0..iterations {
        // SAFETY: the child only calls execve and _exit (async-signal-safe), with arguments
        // prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("fork");
        }
        if pid == 0 {
            unsafe {
                libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child just created.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(std::io::Error::last_os_error()).context("waitpid");
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("{program:?} failed (wait status {status})");
        }
    }
    Ok(())
}

/// How long an open/close workload process runs.
pub enum Length {
    Iterations(u64),
    Seconds(u64),
}

/// What one workload process reported.
pub struct LoopResult {
    pub iterations: u64,
    pub ns_per_iteration: f64,
}

/// The copy of this binary the workloads run from (see [`use_copy_in`]).
static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Copies this xtask binary into `dir` and runs every workload from the copy: a rebuild of
/// target/debug/xtask during the bench (`cargo xtask …` by someone else) replaces the file
/// the workloads would otherwise exec. /proc/self/exe reads the running image even then.
pub fn use_copy_in(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let copy = dir.join("xtask");
    std::fs::copy("/proc/self/exe", &copy)
        .with_context(|| format!("cannot copy the xtask binary to {}", copy.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    let _ = EXE.set(copy);
    Ok(())
}

/// This same xtask binary (its copy), running the hidden `bench-workload` subcommand.
fn workload_command(args: &[String]) -> Result<Command> {
    let exe = match EXE.get() {
        Some(copy) => copy.clone(),
        None => std::env::current_exe().context("cannot find the xtask binary")?,
    };
    let mut cmd = Command::new(exe);
    cmd.arg("bench-workload").args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    Ok(cmd)
}

/// A command that runs the open/close workload.
pub fn open_close_command(length: Length) -> Result<Command> {
    let mut args = vec!["open-close".to_string()];
    match length {
        Length::Iterations(n) => args.extend(["--iterations".into(), n.to_string()]),
        Length::Seconds(s) => args.extend(["--seconds".into(), s.to_string()]),
    }
    workload_command(&args)
}

/// What a sustained load runs in each of its processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    OpenClose,
    SignalSelf,
}

impl Generator {
    pub fn name(self) -> &'static str {
        match self {
            Generator::OpenClose => "open/close",
            Generator::SignalSelf => "kill(self, 0)",
        }
    }
}

pub fn signal_self_command(seconds: u64) -> Result<Command> {
    workload_command(&[
        "signal-self".into(),
        "--seconds".into(),
        seconds.to_string(),
    ])
}

/// The open/close workload paced to `per_second` for `seconds` in each of `processes`
/// processes, optionally waiting for a start file first; it opens `file`, or /dev/null.
pub fn paced_open_close_command(
    per_second: f64,
    seconds: f64,
    processes: u64,
    wait_for: Option<&std::path::Path>,
    file: Option<&std::path::Path>,
) -> Result<Command> {
    let mut args = vec![
        "open-close".to_string(),
        "--per-second".into(),
        format!("{per_second}"),
        "--seconds".into(),
        format!("{seconds}"),
        "--processes".into(),
        processes.to_string(),
    ];
    if let Some(path) = wait_for {
        args.extend(["--wait-for".into(), path.display().to_string()]);
    }
    if let Some(path) = file {
        args.extend(["--path".into(), path.display().to_string()]);
    }
    workload_command(&args)
}

/// The microbenchmarks compared across tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Micro {
    OpenClose,
    TcpConnect,
    ForkExec,
}

impl Micro {
    pub const ALL: [Micro; 3] = [Micro::OpenClose, Micro::TcpConnect, Micro::ForkExec];

    /// The command for `iterations` timed iterations; `port` is the bench's listener.
    pub fn command(self, iterations: u64, port: u16) -> Result<Command> {
        let n = iterations.to_string();
        let args: Vec<String> = match self {
            Micro::OpenClose => vec!["open-close".into(), "--iterations".into(), n],
            Micro::TcpConnect => vec![
                "tcp-connect".into(),
                "--port".into(),
                port.to_string(),
                "--iterations".into(),
                n,
            ],
            Micro::ForkExec => vec!["fork-exec".into(), "--iterations".into(), n],
        };
        workload_command(&args)
    }
}

/// The read-files workload (see [`Workload::ReadFiles`]).
pub fn read_files_command(
    dir: &std::path::Path,
    prefix: &str,
    first: u64,
    count: u64,
    interval_ms: u64,
    hold_ms: u64,
) -> Result<Command> {
    workload_command(&[
        "read-files".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--prefix".into(),
        prefix.into(),
        "--first".into(),
        first.to_string(),
        "--count".into(),
        count.to_string(),
        "--interval-ms".into(),
        interval_ms.to_string(),
        "--hold-ms".into(),
        hold_ms.to_string(),
    ])
}

/// Waits for a workload process and reads its result.
pub fn finish(child: std::process::Child) -> Result<LoopResult> {
    let output = child
        .wait_with_output()
        .context("cannot wait for the workload")?;
    if !output.status.success() {
        bail!("the workload failed ({})", output.status);
    }
    parse_result(&String::from_utf8_lossy(&output.stdout))
}

fn parse_result(text: &str) -> Result<LoopResult> {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}= in the workload's output {text:?}"))
    };
    Ok(LoopResult {
        iterations: field("iterations")?.parse()?,
        ns_per_iteration: field("ns_per_iteration")?.parse()?,
    })
}

/// A TCP listener on 127.0.0.1 in the bench process: a thread accepts and closes every
/// connection until dropped.
pub struct Listener {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    pub fn start() -> Result<Self> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot listen on 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        // A long accept queue: the loop must never wait for this thread.
        // SAFETY: listen(2) again on our own socket only changes its backlog.
        unsafe { libc::listen(listener.as_raw_fd(), 4096) };
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for connection in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                drop(connection);
            }
        });
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept call with one last connection.
        let _ = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_a_loop_add_up_their_iterations() {
        let (done, _) = in_processes(3, || Ok((5, Duration::ZERO))).unwrap();
        assert_eq!(done, 15);
        let (done, _) = in_processes(1, || Ok((5, Duration::ZERO))).unwrap();
        assert_eq!(done, 5);
    }

    #[test]
    fn a_failing_copy_fails_the_loop() {
        let parent = std::process::id();
        let result = in_processes(2, || {
            if std::process::id() == parent {
                Ok((1, Duration::ZERO))
            } else {
                bail!("copy failed")
            }
        });
        let error = result.unwrap_err().to_string();
        assert!(error.contains("1 of 1 copies"), "{error}");
    }

    #[test]
    fn reads_the_result_line() {
        let result = parse_result("iterations=500 ns_per_iteration=612.5\n").unwrap();
        assert_eq!(result.iterations, 500);
        assert_eq!(result.ns_per_iteration, 612.5);
        assert!(parse_result("nothing").is_err());
    }
}
