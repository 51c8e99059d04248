//! `agent-sensor probe`: which eBPF hook families really work on this kernel.
//!
//! For each family a tiny program is loaded, attached and triggered by this process; "works"
//! means the kernel ran it (its hit counter moved), not merely that a load call returned 0.
//! Everything loaded here is detached and unloaded before the probe returns, and the scratch
//! cgroup it makes for the sock_addr check is removed.

use std::{
    ffi::CString,
    os::fd::AsFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use agent_sensor_common::probe::{slot, target};
use aya::{
    maps::{Array, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSockAddr, FEntry, KProbe, Lsm, RawTracePoint,
        TracePoint, UProbe,
    },
    Btf, Ebpf, EbpfLoader,
};
use serde::Serialize;
use thiserror::Error;

use crate::{
    loader::PROBE_OBJECT,
    system::{self, MountOutcome, PseudoFs, BPFFS, SECURITYFS, TRACEFS},
};

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(transparent)]
    System(#[from] system::SystemError),
    #[error(
        "this agent-sensor binary was built with AYA_BUILD_SKIP=1 and carries no eBPF programs; \
         build it with `cargo xtask build`"
    )]
    StubObject,
    #[error("the kernel refused the probe object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("probe map {0} missing or unusable")]
    Map(&'static str),
    #[error("probe program {0} missing from the probe object")]
    MissingProgram(&'static str),
    #[error("the kernel refused the probe's raw tracepoint program: {0}")]
    Program(#[source] aya::programs::ProgramError),
}

/// One hook family's result.
#[derive(Debug, Clone, Serialize)]
pub struct HookResult {
    pub family: &'static str,
    pub works: bool,
    /// What was established ("fired", "attached but never fired") or where and why it failed.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MountResult {
    pub fstype: &'static str,
    pub target: &'static str,
    /// "already mounted", "mounted now", or the error.
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub kernel: String,
    pub btf: bool,
    pub mounts: Vec<MountResult>,
    pub hooks: Vec<HookResult>,
}

impl ProbeReport {
    pub fn works(&self, family: &str) -> bool {
        self.hooks.iter().any(|h| h.family == family && h.works)
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "kernel {}  BTF {}\n",
            self.kernel,
            if self.btf { "yes" } else { "no" }
        );
        for m in &self.mounts {
            out.push_str(&format!(
                "mount  {:<10} {:<22} {}\n",
                m.fstype, m.target, m.state
            ));
        }
        out.push_str(&format!(
            "\n{:<18} {:<6} {}\n",
            "HOOK FAMILY", "STATUS", "DETAIL"
        ));
        for h in &self.hooks {
            let status = if h.works { "works" } else { "FAILS" };
            out.push_str(&format!("{:<18} {:<6} {}\n", h.family, status, h.detail));
        }
        out
    }
}

/// Attaches the probe object's raw tracepoint program (a pid check and nothing else for
/// other processes) to `tracepoints` (sys_exit, sys_enter), says `ready` on stdout and holds
/// them for `time`: the floor every syscall of the host pays for the sensor's hooks, measured
/// by `cargo xtask bench capture`. The links go when this process does.
pub fn hold_syscall_hooks(
    tracepoints: &[String],
    time: std::time::Duration,
) -> Result<(), ProbeError> {
    if PROBE_OBJECT.is_empty() {
        return Err(ProbeError::StubObject);
    }
    system::require_root()?;
    let mut ebpf = EbpfLoader::new()
        .load(PROBE_OBJECT)
        .map_err(ProbeError::Load)?;
    let name = "probe_raw_tracepoint";
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(ProbeError::Program)?;
    prog.load().map_err(ProbeError::Program)?;
    for tracepoint in tracepoints {
        prog.attach(tracepoint).map_err(ProbeError::Program)?;
    }
    println!("ready");
    std::thread::sleep(time);
    Ok(())
}

/// Runs every check. Needs root; mounts tracefs, bpffs and securityfs where missing.
pub fn run() -> Result<ProbeReport, ProbeError> {
    if PROBE_OBJECT.is_empty() {
        return Err(ProbeError::StubObject);
    }
    system::require_root()?;
    let mounts = [TRACEFS, BPFFS, SECURITYFS]
        .into_iter()
        .map(mount)
        .collect();
    let btf_present = Path::new(system::BTF_PATH).exists();
    let btf = Btf::from_sys_fs().ok();

    let mut ebpf = EbpfLoader::new()
        .btf(btf.as_ref())
        .load(PROBE_OBJECT)
        .map_err(ProbeError::Load)?;
    {
        let mut targets: Array<_, u32> =
            Array::try_from(ebpf.map_mut("TARGET").ok_or(ProbeError::Map("TARGET"))?)
                .map_err(|_| ProbeError::Map("TARGET"))?;
        targets
            .set(target::PROBER, std::process::id(), 0)
            .map_err(|_| ProbeError::Map("TARGET"))?;
    }

    let attach = vec![
        ("tracepoint", attach_tracepoint(&mut ebpf)),
        (
            "raw_tracepoint",
            attach_raw(&mut ebpf, "probe_raw_tracepoint"),
        ),
        ("tp_btf", attach_tp_btf(&mut ebpf, btf.as_ref())),
        ("fentry", attach_fentry(&mut ebpf, btf.as_ref())),
        ("lsm", attach_lsm(&mut ebpf, btf.as_ref())),
        ("kprobe", attach_kprobe(&mut ebpf)),
        ("uprobe", attach_uprobe(&mut ebpf)),
        ("ring_buffer", attach_raw(&mut ebpf, "probe_ring_buf")),
    ];

    // Trigger everything attached so far.
    for _ in 0..3 {
        // SAFETY: plain syscalls without pointers to us.
        unsafe { libc::syscall(libc::SYS_getppid) };
        let _ = std::fs::File::open("/dev/null");
        std::hint::black_box(crate::agent_sensor_uprobe_target(1));
    }
    let ring_marker_seen = read_ring_marker(&mut ebpf);

    let sock_addr = probe_sock_addr(&mut ebpf);
    let send_signal = probe_send_signal(&mut ebpf);

    let hits = read_hits(&ebpf)?;
    let mut hooks = Vec::new();
    let slots = [
        slot::TRACEPOINT,
        slot::RAW_TRACEPOINT,
        slot::TP_BTF,
        slot::FENTRY,
        slot::LSM,
        slot::KPROBE,
        slot::UPROBE,
        slot::RING_BUF,
    ];
    for ((family, attached), slot) in attach.into_iter().zip(slots) {
        let fired = hits.get(slot as usize).copied().unwrap_or(0) > 0;
        let ring_ok = family != "ring_buffer" || ring_marker_seen;
        hooks.push(verdict(family, attached, fired && ring_ok));
    }
    let sock_fired = hits.get(slot::SOCK_ADDR as usize).copied().unwrap_or(0) > 0;
    hooks.push(verdict("cgroup_sock_addr", sock_addr, sock_fired));
    let signal_fired = hits.get(slot::SEND_SIGNAL as usize).copied().unwrap_or(0) > 0;
    hooks.push(verdict(
        "bpf_send_signal",
        send_signal.clone(),
        signal_fired && send_signal.is_ok(),
    ));
    drop(ebpf);

    Ok(ProbeReport {
        kernel: system::kernel_release(),
        btf: btf_present,
        mounts,
        hooks,
    })
}

fn verdict(family: &'static str, attached: Result<String, String>, fired: bool) -> HookResult {
    match attached {
        Err(error) => HookResult {
            family,
            works: false,
            detail: error,
        },
        Ok(how) if fired => HookResult {
            family,
            works: true,
            detail: format!("{how}; fired"),
        },
        Ok(how) => HookResult {
            family,
            works: false,
            detail: format!("{how}, but the program never ran when triggered"),
        },
    }
}

fn mount(fs: PseudoFs) -> MountResult {
    let state = match system::ensure_mounted(fs) {
        Ok(MountOutcome::AlreadyMounted) => "already mounted".to_string(),
        Ok(MountOutcome::Mounted) => "mounted now".to_string(),
        Err(e) => e.to_string(),
    };
    MountResult {
        fstype: fs.fstype,
        target: fs.target,
        state,
    }
}

/// Formats an aya error with its sources, which carry the kernel's errno.
fn chain(stage: &str, err: &dyn std::error::Error) -> String {
    let mut text = format!("{stage}: {err}");
    let mut source = err.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(&format!(": {more}"));
        }
        source = e.source();
    }
    text
}

macro_rules! program {
    ($ebpf:expr, $name:literal, $ty:ty) => {{
        let prog: &mut $ty = match $ebpf.program_mut($name) {
            Some(p) => p
                .try_into()
                .map_err(|e: aya::programs::ProgramError| chain("type", &e))?,
            None => return Err(format!("program {} missing from probe object", $name)),
        };
        prog
    }};
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<String, String> {
    let prog = program!(ebpf, "probe_tracepoint", TracePoint);
    prog.load().map_err(|e| chain("load", &e))?;
    prog.attach("syscalls", "sys_enter_getppid")
        .map_err(|e| chain("attach", &e))?;
    Ok("loaded, attached to syscalls/sys_enter_getppid".into())
}

fn attach_raw(ebpf: &mut Ebpf, name: &'static str) -> Result<String, String> {
    let prog: &mut RawTracePoint = match ebpf.program_mut(name) {
        Some(p) => p
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain("type", &e))?,
        None => return Err(format!("program {name} missing from probe object")),
    };
    prog.load().map_err(|e| chain("load", &e))?;
    prog.attach("sys_enter").map_err(|e| chain("attach", &e))?;
    Ok("loaded, attached to raw_tp/sys_enter".into())
}

fn need_btf(btf: Option<&Btf>) -> Result<&Btf, String> {
    btf.ok_or_else(|| {
        "no kernel BTF (/sys/kernel/btf/vmlinux): BTF-typed programs cannot load".into()
    })
}

fn attach_tp_btf(ebpf: &mut Ebpf, btf: Option<&Btf>) -> Result<String, String> {
    let btf = need_btf(btf)?;
    let prog = program!(ebpf, "probe_tp_btf", BtfTracePoint);
    prog.load("sys_enter", btf).map_err(|e| chain("load", &e))?;
    prog.attach().map_err(|e| chain("attach", &e))?;
    Ok("loaded, attached to tp_btf/sys_enter".into())
}

fn attach_fentry(ebpf: &mut Ebpf, btf: Option<&Btf>) -> Result<String, String> {
    let btf = need_btf(btf)?;
    let prog = program!(ebpf, "probe_fentry", FEntry);
    prog.load("do_sys_openat2", btf)
        .map_err(|e| chain("load", &e))?;
    prog.attach().map_err(|e| chain("attach", &e))?;
    Ok("loaded, attached to fentry/do_sys_openat2".into())
}

fn attach_lsm(ebpf: &mut Ebpf, btf: Option<&Btf>) -> Result<String, String> {
    let btf = need_btf(btf)?;
    let active = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let prog = program!(ebpf, "probe_lsm", Lsm);
    prog.load("file_open", btf).map_err(|e| chain("load", &e))?;
    prog.attach().map_err(|e| {
        let hint = if active.split(',').any(|l| l.trim() == "bpf") {
            String::new()
        } else {
            format!(" (bpf is not among the active LSMs: {})", active.trim())
        };
        format!("{}{hint}", chain("attach", &e))
    })?;
    Ok("loaded, attached to lsm/file_open".into())
}

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<String, String> {
    let prog = program!(ebpf, "probe_kprobe", KProbe);
    prog.load().map_err(|e| chain("load", &e))?;
    prog.attach("do_sys_openat2", 0)
        .map_err(|e| chain("attach", &e))?;
    Ok("loaded, attached to kprobe/do_sys_openat2".into())
}

fn attach_uprobe(ebpf: &mut Ebpf) -> Result<String, String> {
    let exe =
        std::fs::read_link("/proc/self/exe").map_err(|e| format!("cannot find own binary: {e}"))?;
    let prog = program!(ebpf, "probe_uprobe", UProbe);
    prog.load().map_err(|e| chain("load", &e))?;
    prog.attach(
        "agent_sensor_uprobe_target",
        &exe,
        aya::programs::uprobe::UProbeScope::AllProcesses,
    )
    .map_err(|e| chain("attach", &e))?;
    Ok("loaded, attached to a function of this binary".into())
}

fn read_ring_marker(ebpf: &mut Ebpf) -> bool {
    let Some(map) = ebpf.map_mut("PROBE_RING") else {
        return false;
    };
    let Ok(mut ring) = RingBuf::try_from(map) else {
        return false;
    };
    let mut seen = false;
    while let Some(item) = ring.next() {
        seen |= item.len() == 8
            && u64::from_ne_bytes(item[..8].try_into().unwrap_or([0; 8])) == 0x6167_656e_7473_656e;
    }
    seen
}

fn read_hits(ebpf: &Ebpf) -> Result<Vec<u64>, ProbeError> {
    let hits: Array<_, u64> = Array::try_from(ebpf.map("HITS").ok_or(ProbeError::Map("HITS"))?)
        .map_err(|_| ProbeError::Map("HITS"))?;
    Ok((0..slot::COUNT)
        .map(|i| hits.get(&i, 0).unwrap_or(0))
        .collect())
}

/// A cgroup made for one check and removed when dropped.
struct ScratchCgroup(PathBuf);

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        // Children have exited by now; an occupied cgroup cannot be removed, so retry briefly.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        log::warn!("could not remove probe cgroup {}", self.0.display());
    }
}

fn probe_sock_addr(ebpf: &mut Ebpf) -> Result<String, String> {
    let root = system::cgroup2_root().map_err(|e| e.to_string())?;
    let dir = root.join(format!("agent-sensor-probe-{}", std::process::id()));
    std::fs::create_dir(&dir)
        .map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
    let cgroup = ScratchCgroup(dir);
    let cgroup_file = std::fs::File::open(&cgroup.0).map_err(|e| format!("open cgroup: {e}"))?;
    let prog = program!(ebpf, "probe_sock_addr", CgroupSockAddr);
    prog.load().map_err(|e| chain("load", &e))?;
    let link = prog
        .attach(cgroup_file.as_fd(), CgroupAttachMode::Single)
        .map_err(|e| chain("attach", &e))?;

    // A child joins the cgroup and connects to a listener of ours on loopback.
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listener: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let procs = CString::new(cgroup.0.join("cgroup.procs").as_os_str().as_encoded_bytes())
        .map_err(|e| e.to_string())?;
    // SAFETY: the child only makes async-signal-safe calls and then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe calls on valid pointers; never returns.
        unsafe { child_connect(&procs, port) };
    }
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    let status = wait_child(pid, Duration::from_secs(5));
    let _ = prog.detach(link);
    drop(cgroup);
    match status {
        Some(0) => Ok("loaded, attached to a scratch cgroup; a child's connect() ran it".into()),
        Some(code) => Err(format!(
            "child connect through the hook failed (status {code})"
        )),
        None => Err("child connect timed out".into()),
    }
}

/// Child side of the sock_addr check: join the cgroup, connect, exit 0 on success.
unsafe fn child_connect(procs: &CString, port: u16) -> ! {
    // SAFETY (whole body): plain syscalls on stack buffers, then _exit.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        let mut digits = [0u8; 16];
        let mut n = libc::getpid() as u32;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if fd < 0 || libc::write(fd, digits[i..].as_ptr().cast(), digits.len() - i) < 0 {
            libc::_exit(2);
        }
        libc::close(fd);
        let sock = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let ret = libc::connect(
            sock,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        libc::_exit(if ret == 0 { 0 } else { 3 });
    }
}

/// Waits for `pid`; `Some(exit status)` (signals as 128+n), `None` on timeout (child killed).
fn wait_child(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: valid pointer; pid is our child.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if ret == pid {
            return Some(if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            });
        }
        if ret < 0 || Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn probe_send_signal(ebpf: &mut Ebpf) -> Result<String, String> {
    let prog: &mut RawTracePoint = match ebpf.program_mut("probe_send_signal") {
        Some(p) => p
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain("type", &e))?,
        None => return Err("program probe_send_signal missing".into()),
    };
    prog.load().map_err(|e| chain("load", &e))?;
    prog.attach("sys_enter").map_err(|e| chain("attach", &e))?;
    // The victim makes syscalls for up to 3 s; the program must SIGKILL it on one of them.
    // SAFETY: the child only makes async-signal-safe calls and then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain syscalls, then _exit.
        unsafe {
            for _ in 0..3000 {
                libc::getppid();
                libc::usleep(1000);
            }
            libc::_exit(0);
        }
    }
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    let set = Array::<_, u32>::try_from(ebpf.map_mut("TARGET").ok_or("TARGET map missing")?)
        .map_err(|e| e.to_string())
        .and_then(|mut t| {
            t.set(target::SIGNAL_VICTIM, pid as u32, 0)
                .map_err(|e| e.to_string())
        });
    let status = wait_child(pid, Duration::from_secs(6));
    set?;
    match status {
        Some(s) if s == 128 + libc::SIGKILL => {
            Ok("loaded, attached; killed a child of ours in its syscall".into())
        }
        Some(s) => Err(format!("child was not killed by the program (status {s})")),
        None => Err("child did not exit".into()),
    }
}
