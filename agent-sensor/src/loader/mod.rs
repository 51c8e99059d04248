//! Loads the embedded eBPF object into the kernel, configures it for this kernel and host, and
//! attaches its programs. Dropping a [`LoadedSensor`] detaches and unloads everything (nothing is
//! pinned here), which is what a clean stop relies on.

pub mod kfuncs;
pub mod offsets;
pub mod persist;
pub mod ring;

use std::sync::atomic::{AtomicU64, Ordering};

use agent_sensor_common::{
    discovery, lists, report,
    syscalls::{self, SyscallSpec},
    SensorConfig, SockStats, TrackedTask,
};
use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, ProgramArray},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, Program, ProgramError, RawTracePoint,
    },
    Ebpf, EbpfLoader,
};
use thiserror::Error;

use crate::{btf::Btf, system};
use ring::EventRing;

/// The sensor's eBPF object, built by `build.rs` (empty when built with `AYA_BUILD_SKIP=1`).
pub static SENSOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-sensor"));
/// The capability-probe object.
pub static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-sensor-probe"));

/// Every program of the sensor object and the raw tracepoint it attaches to.
pub const PROGRAMS: [(&str, &str); 4] = [
    ("process_task_newtask", "task_newtask"),
    ("process_cgroup_attach_task", "cgroup_attach_task"),
    ("process_sched_process_exec", "sched_process_exec"),
    ("process_sched_process_exit", "sched_process_exit"),
];

/// BTF tracepoints (program, tracepoint): typed `pt_regs` and `task_struct` access, see
/// `probes/syscall.rs` and `probes/signal.rs`.
pub const SYSCALL_PROGRAMS: [(&str, &str); 2] = [
    ("syscall_sys_exit", "sys_exit"),
    ("process_signal_generate", "signal_generate"),
];

/// The io_uring requests' BTF tracepoint (`probes/uring.rs`), attached where the kernel has
/// io_uring.
pub const URING_PROGRAM: (&str, &str) = ("uring_submit_req", "io_uring_submit_req");

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    System(#[from] system::SystemError),
    #[error(transparent)]
    Btf(#[from] crate::btf::BtfError),
    #[error(transparent)]
    Kfuncs(#[from] kfuncs::KfuncError),
    #[error("cannot read the kernel's BTF for the typed tracepoints: {0}")]
    AyaBtf(#[source] aya::BtfError),
    #[error(
        "this agent-sensor binary was built with AYA_BUILD_SKIP=1 and carries no eBPF programs; \
         build it with `cargo xtask build`"
    )]
    StubObject,
    #[error("ring buffer size {0} is not a power of two of at least 4096 bytes")]
    RingSize(u32),
    #[error(transparent)]
    Ring(ring::RingError),
    #[error("the kernel refused the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel refused program {program}: {}", summarize(.error))]
    Program {
        program: &'static str,
        error: ProgramError,
    },
    #[error("the eBPF object has no program `{0}` (object and daemon out of sync)")]
    MissingProgram(&'static str),
    #[error("cannot pin in bpffs at {path}: {source} (a pin left by an older, different build? `agent-sensor uninstall` removes them)")]
    Pins {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the cgroup v2 root {path} for the egress programs: {source}")]
    EgressCgroup {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the eBPF object has no map `{0}` (object and daemon out of sync)")]
    MissingMap(&'static str),
    #[error("eBPF map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// A one-paragraph form of a program error: the verifier's log can run to thousands of lines,
/// of which the last few say why it gave up (the whole log goes to the debug log).
fn summarize(err: &ProgramError) -> String {
    let mut text = err.to_string();
    // The errno is in the source chain (e.g. of a failed bpf_link_create).
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(&format!(": {more}"));
        }
        source = e.source();
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 4 {
        return lines.join(" ");
    }
    // The whole log, for whoever debugs a program this kernel refuses.
    log::debug!("{text}");
    let first = lines[0]
        .split("Verifier output:")
        .next()
        .unwrap_or(lines[0])
        .trim();
    format!(
        "{first} … verifier: {}",
        lines[lines.len() - 3..].join(" / ")
    )
}

/// The default `LoadOptions::repeat_window_ms`: a second, short beside the windows the rules
/// correlate over, long beside a loop that opens one file a million times a second.
pub const DEFAULT_REPEAT_WINDOW_MS: u32 = 1000;

/// Options that shape what is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Size of the event ring buffer in bytes (a power of two).
    pub ring_bytes: u32,
    /// Executable names (comm, at most 15 bytes) that make a process an agent at exec.
    pub discovery_executables: Vec<String>,
    /// Whether `AGENT_SENSOR_AGENT=<name>` in an environment makes a process an agent.
    pub discovery_env_marker: bool,
    /// Send file calls that failed because their path named nothing (otherwise only counted,
    /// see `agent_sensor_common::report::MISSING_PATHS`).
    pub report_missing_paths: bool,
    /// Milliseconds during which a process's repeated open of a file, the same way, is only
    /// counted (see `agent_sensor_common::RepeatKey`); 0 sends every open.
    pub repeat_window_ms: u32,
    /// DNS resolvers besides /etc/resolv.conf's.
    pub resolvers: Vec<std::net::IpAddr>,
    /// Pin maps and links under this bpffs directory (see `persist`).
    pub persist: Option<std::path::PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: 8 * 1024 * 1024,
            discovery_executables: Vec::new(),
            discovery_env_marker: false,
            report_missing_paths: false,
            repeat_window_ms: DEFAULT_REPEAT_WINDOW_MS,
            resolvers: Vec::new(),
            persist: None,
        }
    }
}

/// The egress programs, each on its own hook of the cgroup v2 root.
pub const EGRESS_PROGRAMS: [&str; 4] = [
    "egress_connect4",
    "egress_connect6",
    "egress_sendmsg4",
    "egress_sendmsg6",
];
/// The program that refuses enforced agents the sockets the egress programs cannot see (the
/// cgroup `sock_create` hook).
pub const SOCKET_PROGRAM: &str = "egress_sock_create";
/// The program that records the DNS queries agents send, from the packets (cgroup `skb`
/// egress hook; it only looks).
pub const DNS_PACKET_PROGRAM: &str = "net_dns_egress";

/// Attaches the egress programs to the root of the cgroup v2 hierarchy, so they see every
/// socket on the host: the agent is found from the calling process (tracked by ancestry),
/// not from the socket's cgroup, so a root process of an agent that moved itself out of the
/// agent's cgroup is still held to its allowlist. For any other process the programs cost a
/// map lookup per connect, addressed send or socket, and a look at the IP and UDP headers of
/// every packet sent (`DNS_PACKET_PROGRAM`). Attached as bpf links, which coexist with
/// other links on the same cgroup (another sensor instance's, say); each program decides only
/// for its own agents.
fn attach_egress(ebpf: &mut Ebpf, attached: &mut Vec<&'static str>) -> Result<(), LoadError> {
    let root = system::cgroup2_root()?;
    let cgroup = std::fs::File::open(&root).map_err(|source| LoadError::EgressCgroup {
        path: root.clone(),
        source,
    })?;
    for program in EGRESS_PROGRAMS {
        let prog = load_program(ebpf, program, CgroupSockAddr::load)?;
        prog.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|error| LoadError::Program { program, error })?;
        attached.push(program);
    }
    // Optional: the header a record starts with asks the kernel for the current task's ids,
    // which a `cgroup_skb` program may not on kernels older than this VM's. Without it DNS
    // queries are read at their syscalls only.
    match attach_dns_packets(ebpf, &cgroup) {
        Ok(()) => attached.push(DNS_PACKET_PROGRAM),
        Err(e) => {
            log::warn!("DNS queries are read at their syscalls only (not from their packets): {e}")
        }
    }
    let program = SOCKET_PROGRAM;
    let prog = load_program(ebpf, program, CgroupSock::load)?;
    prog.attach(&cgroup, CgroupAttachMode::Single)
        .map_err(|error| LoadError::Program { program, error })?;
    attached.push(program);
    Ok(())
}

fn attach_dns_packets(ebpf: &mut Ebpf, cgroup: &std::fs::File) -> Result<(), LoadError> {
    let program = DNS_PACKET_PROGRAM;
    let prog = load_program(ebpf, program, CgroupSkb::load)?;
    prog.attach(
        cgroup,
        CgroupSkbAttachType::Egress,
        CgroupAttachMode::Single,
    )
    .map_err(|error| LoadError::Program { program, error })?;
    Ok(())
}

/// Whether the ring's reader waits. Records are committed without waking it; the first record
/// committed while this is set wakes it and clears it (see `emit::wake_reader` in the eBPF
/// crate). Set it before the last look at the ring that precedes a sleep.
pub struct ReaderFlag {
    map: Array<MapData, u64>,
    /// The map's value mapped into this process, when the map allows it: raising and reading
    /// the flag are then a store and a load, not a bpf() syscall each (the daemon does both
    /// at every sleep: 4 % of its CPU in a coding session). A pinned map of an older daemon
    /// may not allow it; the syscalls remain.
    mapped: Option<MappedFlag>,
}

impl ReaderFlag {
    fn new(data: MapData) -> Result<Self, LoadError> {
        let name = "RING_READER_WAITING";
        let mapped = MappedFlag::map(&data);
        let map = Array::try_from(Map::Array(data)).map_err(map_err(name))?;
        let mut flag = Self { map, mapped };
        if flag.mapped.is_some() && !flag.mapping_is_coherent()? {
            log::warn!("{name}: the mapped value does not follow the map; using bpf() instead");
            flag.mapped = None;
        }
        Ok(flag)
    }

    /// Whether a store through the mapping is what the map holds, and the other way round.
    fn mapping_is_coherent(&mut self) -> Result<bool, LoadError> {
        let Some(mapped) = &self.mapped else {
            return Ok(false);
        };
        let name = "RING_READER_WAITING";
        mapped.value().store(1, Ordering::SeqCst);
        let seen_by_map = self.map.get(&0, 0).map_err(map_err(name))?;
        self.map.set(0, 0, 0).map_err(map_err(name))?;
        let seen_by_mapping = mapped.value().load(Ordering::SeqCst);
        Ok(seen_by_map == 1 && seen_by_mapping == 0)
    }

    pub fn set_waiting(&mut self) -> Result<(), LoadError> {
        match &self.mapped {
            Some(mapped) => mapped.value().store(1, Ordering::SeqCst),
            None => self
                .map
                .set(0, 1, 0)
                .map_err(map_err("RING_READER_WAITING"))?,
        }
        // The store must be visible before this thread reads the ring's producer position (a
        // store followed by a load may be reordered even on x86).
        std::sync::atomic::fence(Ordering::SeqCst);
        Ok(())
    }

    /// Whether the flag is still up (no record took the wake-up since `set_waiting`).
    pub fn is_waiting(&self) -> Result<bool, LoadError> {
        let value = match &self.mapped {
            Some(mapped) => mapped.value().load(Ordering::SeqCst),
            None => self
                .map
                .get(&0, 0)
                .map_err(map_err("RING_READER_WAITING"))?,
        };
        Ok(value != 0)
    }
}

/// The first page of a `BPF_F_MMAPABLE` array map, mapped shared: entry 0 at its start.
struct MappedFlag {
    page: std::ptr::NonNull<AtomicU64>,
    len: usize,
}

impl MappedFlag {
    fn map(data: &MapData) -> Option<Self> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        // SAFETY: sysconf has no preconditions.
        let len = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel refuses maps created
        // without BPF_F_MMAPABLE (EINVAL), which leaves the syscalls.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            log::debug!(
                "RING_READER_WAITING is not mappable ({}): the flag goes through bpf()",
                std::io::Error::last_os_error()
            );
            return None;
        }
        let page = std::ptr::NonNull::new(addr.cast::<AtomicU64>())?;
        Some(Self { page, len })
    }

    fn value(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, at least 8 bytes long and lives as long as
        // `self`; the kernel's programs access the same u64 only with single loads and stores.
        unsafe { self.page.as_ref() }
    }
}

impl Drop for MappedFlag {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.page.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is plain shared memory accessed through an atomic.
unsafe impl Send for MappedFlag {}

/// Program `program` of the object as a `P`, loaded into the kernel with `load` (its type's
/// `load`). The one-line error keeps the verifier's last words; all of them go to the debug log.
fn load_program<'a, P>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
    load: impl FnOnce(&mut P) -> Result<(), ProgramError>,
) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let prog: &mut P = ebpf
        .program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?
        .try_into()
        .map_err(|error| LoadError::Program { program, error })?;
    load(prog).map_err(|error| {
        log::debug!("verifier output for {program}: {error}");
        LoadError::Program { program, error }
    })?;
    Ok(prog)
}

/// Programs reached only by tail call from `syscall_sys_exit`, in their `TAIL` slots: loaded,
/// never attached.
const TAIL_PROGRAMS: [&str; 2] = ["syscall_dns_answer", "syscall_compat_exit"];

fn load_tail_calls(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), LoadError> {
    for (slot, program) in TAIL_PROGRAMS.into_iter().enumerate() {
        let prog = load_program(ebpf, program, |p: &mut BtfTracePoint| {
            p.load("sys_exit", btf)
        })?;
        let fd = prog
            .fd()
            .map_err(|error| LoadError::Program { program, error })?
            .try_clone()
            .map_err(|e| LoadError::Program {
                program,
                error: ProgramError::IOError(e),
            })?;
        let mut tail: ProgramArray<_> =
            ProgramArray::try_from(ebpf.map_mut("TAIL").ok_or(LoadError::MissingMap("TAIL"))?)
                .map_err(map_err("TAIL"))?;
        tail.set(slot as u32, &fd, 0).map_err(map_err("TAIL"))?;
    }
    Ok(())
}

/// The host's DNS resolvers: the nameservers of /etc/resolv.conf plus `extra` (the policy's
/// `enforcement.resolvers`). Port 53 to them is name resolution, not egress, for the kernel's
/// egress programs and the daemon's rules alike.
fn host_resolvers(extra: &[std::net::IpAddr]) -> Vec<std::net::IpAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    conf.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.parse().ok())
                .flatten()
        })
        .chain(extra.iter().copied())
        .collect()
}

/// Gives the kernel the host's resolvers; returns them.
fn fill_resolvers(
    ebpf: &mut Ebpf,
    extra: &[std::net::IpAddr],
) -> Result<Vec<std::net::IpAddr>, LoadError> {
    let mut resolvers: HashMap<_, [u8; 16], u32> = HashMap::try_from(
        ebpf.map_mut("DNS_RESOLVERS")
            .ok_or(LoadError::MissingMap("DNS_RESOLVERS"))?,
    )
    .map_err(map_err("DNS_RESOLVERS"))?;
    let found = host_resolvers(extra);
    for ip in &found {
        let v6 = match *ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        resolvers
            .insert(v6.octets(), 1, 0)
            .map_err(map_err("DNS_RESOLVERS"))?;
    }
    Ok(found)
}

/// A comm as the kernel keeps it: at most 15 bytes, NUL-padded to 16.
pub fn comm_key(name: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

/// The hook family of an attached program, as `agent-sensor probe` names it.
pub fn hook_family(program: &str) -> &'static str {
    if SYSCALL_PROGRAMS.iter().any(|(name, _)| *name == program) || program == URING_PROGRAM.0 {
        "tp_btf"
    } else if EGRESS_PROGRAMS.contains(&program) {
        "cgroup_sock_addr"
    } else if program == SOCKET_PROGRAM {
        "cgroup_sock"
    } else if program == DNS_PACKET_PROGRAM {
        "cgroup_skb"
    } else {
        "raw_tracepoint"
    }
}

/// The `agent_sensor_common::lists` bits of the lists in `ebpf` that hold an entry.
fn lists_holding_entries(ebpf: &Ebpf) -> Result<u32, LoadError> {
    let name = "KILL_ON_ACCESS";
    let map = ebpf.map(name).ok_or(LoadError::MissingMap(name))?;
    let kill_list: HashMap<_, [u64; 2], u32> = HashMap::try_from(map).map_err(map_err(name))?;
    Ok(if kill_list.keys().next().is_some() {
        lists::KILL_ON_ACCESS
    } else {
        0
    })
}

/// The loaded and attached sensor.
pub struct LoadedSensor {
    pub ebpf: Ebpf,
    pub attached: Vec<&'static str>,
    /// Set with `--persist`: what is pinned, and where.
    pub pins: Option<persist::Pins>,
    /// The host's DNS resolvers the egress programs were given (`host_resolvers`).
    pub resolvers: Vec<std::net::IpAddr>,
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map { map, source }
}

impl LoadedSensor {
    /// Checks the host, loads the object with this kernel's offsets and attaches every program.
    pub fn load(options: &LoadOptions) -> Result<Self, LoadError> {
        if SENSOR_OBJECT.is_empty() {
            return Err(LoadError::StubObject);
        }
        system::require_root()?;
        system::require_btf()?;
        let ring = options.ring_bytes;
        if ring < 4096 || !ring.is_power_of_two() {
            return Err(LoadError::RingSize(ring));
        }
        let btf = Btf::from_sys_fs()?;
        let typed_casts = offsets::typed_casts(&btf);
        let offsets = offsets::resolve(&btf, typed_casts)?;
        let casts = match typed_casts {
            Some(casts) => {
                log::info!("kernel structs are read with typed loads (bpf_rdonly_cast)");
                kfuncs::Casts::Kfunc(casts.kfunc)
            }
            None => {
                log::info!(
                    "kernel structs are read with bpf_probe_read_kernel \
                     (no bpf_rdonly_cast kfunc, or {} is set)",
                    offsets::NO_TYPED_CASTS_ENV
                );
                kfuncs::Casts::Moves
            }
        };
        let object = kfuncs::patch(SENSOR_OBJECT, casts)?;
        let pins = match &options.persist {
            Some(dir) => Some(persist::Pins::prepare(dir)?),
            None => None,
        };
        let mut loader = EbpfLoader::new();
        loader
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("EVENTS", ring);
        if let Some(pins) = &pins {
            pins.apply(&mut loader, object.bytes());
        }
        let mut ebpf = loader.load(object.bytes()).map_err(LoadError::Load)?;

        // A kill list pinned by a daemon before this one goes on killing from the start.
        let lists = lists_holding_entries(&ebpf)?;
        let mut config: Array<_, SensorConfig> = Array::try_from(
            ebpf.map_mut("CONFIG")
                .ok_or(LoadError::MissingMap("CONFIG"))?,
        )
        .map_err(map_err("CONFIG"))?;
        let sensor = SensorConfig {
            sensor_tgid: std::process::id(),
            discovery: if options.discovery_env_marker {
                discovery::ENV_MARKER
            } else {
                0
            },
            report: if options.report_missing_paths {
                report::MISSING_PATHS
            } else {
                0
            },
            repeat_window_ms: options.repeat_window_ms,
            lists,
            _pad0: 0,
        };
        config.set(0, sensor, 0).map_err(map_err("CONFIG"))?;

        let mut comms: HashMap<_, [u8; 16], u32> = HashMap::try_from(
            ebpf.map_mut("DISCOVERY_COMMS")
                .ok_or(LoadError::MissingMap("DISCOVERY_COMMS"))?,
        )
        .map_err(map_err("DISCOVERY_COMMS"))?;
        for (index, name) in options.discovery_executables.iter().enumerate() {
            comms
                .insert(comm_key(name), index as u32, 0)
                .map_err(map_err("DISCOVERY_COMMS"))?;
        }

        let mut specs: Array<_, SyscallSpec> = Array::try_from(
            ebpf.map_mut("SYSCALL_SPECS")
                .ok_or(LoadError::MissingMap("SYSCALL_SPECS"))?,
        )
        .map_err(map_err("SYSCALL_SPECS"))?;
        for (nr, spec) in syscalls::x86_64_table() {
            specs.set(nr, spec, 0).map_err(map_err("SYSCALL_SPECS"))?;
        }
        let mut compat: Array<_, syscalls::CompatCall> = Array::try_from(
            ebpf.map_mut("COMPAT_CALLS")
                .ok_or(LoadError::MissingMap("COMPAT_CALLS"))?,
        )
        .map_err(map_err("COMPAT_CALLS"))?;
        for (slot, call) in syscalls::compat_slots() {
            compat.set(slot, call, 0).map_err(map_err("COMPAT_CALLS"))?;
        }

        let mut attached = Vec::new();
        for (program, tracepoint) in PROGRAMS {
            let prog = load_program(&mut ebpf, program, RawTracePoint::load)?;
            prog.attach(tracepoint)
                .map_err(|error| LoadError::Program { program, error })?;
            attached.push(program);
        }
        let kernel_btf = aya::Btf::from_sys_fs().map_err(LoadError::AyaBtf)?;
        let uring = (offsets.uring.present != 0).then_some(URING_PROGRAM);
        if uring.is_none() {
            log::warn!(
                "io_uring requests are not recorded: this kernel's BTF has no io_uring (or \
                 its request structs changed)"
            );
        }
        for (program, tracepoint) in SYSCALL_PROGRAMS.into_iter().chain(uring) {
            let prog = load_program(&mut ebpf, program, |p: &mut BtfTracePoint| {
                p.load(tracepoint, &kernel_btf)
            })?;
            prog.attach()
                .map_err(|error| LoadError::Program { program, error })?;
            attached.push(program);
        }
        load_tail_calls(&mut ebpf, &kernel_btf)?;
        attach_egress(&mut ebpf, &mut attached)?;
        let resolvers = fill_resolvers(&mut ebpf, &options.resolvers)?;
        if let Some(pins) = &pins {
            let keeper = pins.spawn_keeper()?;
            log::info!("programs held by keeper process {keeper}: they outlive this daemon");
            // Only now, with this daemon's programs in place, do the old ones go.
            let retired = pins.retire_predecessors();
            if retired > 0 {
                log::info!("took over from a previous daemon ({retired} links retired)");
            }
        }
        Ok(Self {
            ebpf,
            attached,
            pins,
            resolvers,
        })
    }

    /// Takes the event ring buffer out of the object (once).
    pub fn take_events(&mut self) -> Result<EventRing, LoadError> {
        match self.ebpf.take_map("EVENTS") {
            Some(Map::RingBuf(map)) => EventRing::new(map).map_err(LoadError::Ring),
            Some(_) => Err(LoadError::Ring(ring::RingError::NotARing)),
            None => Err(LoadError::MissingMap("EVENTS")),
        }
    }

    /// The flag through which the daemon tells the programs it is about to sleep on the ring
    /// (taken out of the object once, like the ring).
    pub fn take_reader_flag(&mut self) -> Result<ReaderFlag, LoadError> {
        let name = "RING_READER_WAITING";
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(LoadError::MissingMap(name))?;
        match map {
            Map::Array(data) => ReaderFlag::new(data),
            other => Err(Array::<MapData, u64>::try_from(other)
                .err()
                .map_or(LoadError::MissingMap(name), map_err(name))),
        }
    }

    /// The tracked-task map (tgid → agent).
    pub fn tracked_tasks(&mut self) -> Result<HashMap<&mut MapData, u32, TrackedTask>, LoadError> {
        let map = self
            .ebpf
            .map_mut("TRACKED_TASKS")
            .ok_or(LoadError::MissingMap("TRACKED_TASKS"))?;
        HashMap::try_from(map).map_err(map_err("TRACKED_TASKS"))
    }

    /// The tracked-cgroup map (cgroup id → agent).
    pub fn tracked_cgroups(
        &mut self,
    ) -> Result<HashMap<&mut MapData, u64, TrackedTask>, LoadError> {
        let map = self
            .ebpf
            .map_mut("TRACKED_CGROUPS")
            .ok_or(LoadError::MissingMap("TRACKED_CGROUPS"))?;
        HashMap::try_from(map).map_err(map_err("TRACKED_CGROUPS"))
    }

    /// Tells the syscall programs that `TRACKED_TASKS` changed (call after the change): their
    /// per-CPU cached decisions become stale. A jump by 2^32 cannot collide with the kernel's
    /// own increments, even if one races this read-modify-write.
    pub fn bump_tracking_generation(&mut self) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut("TRACKING_GENERATION")
            .ok_or(LoadError::MissingMap("TRACKING_GENERATION"))?;
        let mut generation: Array<_, u64> =
            Array::try_from(map).map_err(map_err("TRACKING_GENERATION"))?;
        let now = generation
            .get(&0, 0)
            .map_err(map_err("TRACKING_GENERATION"))?;
        generation
            .set(0, now.wrapping_add(1 << 32), 0)
            .map_err(map_err("TRACKING_GENERATION"))
    }

    /// Tells the programs which in-kernel lists hold entries (call after filling one): they
    /// skip the lookups of the empty ones.
    pub fn refresh_lists(&mut self) -> Result<(), LoadError> {
        let lists = lists_holding_entries(&self.ebpf)?;
        let map = self
            .ebpf
            .map_mut("CONFIG")
            .ok_or(LoadError::MissingMap("CONFIG"))?;
        let mut config: Array<_, SensorConfig> = Array::try_from(map).map_err(map_err("CONFIG"))?;
        let now = config.get(&0, 0).map_err(map_err("CONFIG"))?;
        config
            .set(0, SensorConfig { lists, ..now }, 0)
            .map_err(map_err("CONFIG"))
    }

    /// Byte counts of agent sockets (key: `struct sock` address).
    pub fn sock_stats(&mut self) -> Result<HashMap<&mut MapData, u64, SockStats>, LoadError> {
        let map = self
            .ebpf
            .map_mut("SOCKETS")
            .ok_or(LoadError::MissingMap("SOCKETS"))?;
        HashMap::try_from(map).map_err(map_err("SOCKETS"))
    }

    /// Per-CPU loss counters summed over CPUs, indexed by drop slot.
    pub fn drop_counts(&self) -> Result<Vec<u64>, LoadError> {
        self.per_cpu_totals("DROPS", agent_sensor_common::DROP_SLOTS)
    }

    /// Per-CPU counters of calls counted and not sent, summed over CPUs, indexed by filter
    /// slot.
    pub fn filtered_counts(&self) -> Result<Vec<u64>, LoadError> {
        self.per_cpu_totals("FILTERED", agent_sensor_common::FILTER_SLOTS)
    }

    fn per_cpu_totals(&self, name: &'static str, slots: u32) -> Result<Vec<u64>, LoadError> {
        let map = self.ebpf.map(name).ok_or(LoadError::MissingMap(name))?;
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_err(name))?;
        let mut totals = Vec::with_capacity(slots as usize);
        for slot in 0..slots {
            let per_cpu = counters.get(&slot, 0).map_err(map_err(name))?;
            totals.push(per_cpu.iter().sum());
        }
        Ok(totals)
    }
}
