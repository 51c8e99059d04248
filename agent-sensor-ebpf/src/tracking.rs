//! Which tasks belong to an agent.

use agent_sensor_common::{discovery, drop_slot, TrackedTask};
use aya_ebpf::helpers::generated::bpf_get_current_cgroup_id;

use crate::maps::{
    count_drop, CONFIG, DISCOVERY_COMMS, ENV_SCRATCH, HOT_DECISION, TRACKED_CGROUPS, TRACKED_TASKS,
    TRACKING_GENERATION,
};

/// The hot-path check every syscall of every task on the host pays: one hash lookup.
#[inline(always)]
pub fn tracked_agent(tgid: u32) -> Option<u64> {
    // SAFETY: the value is copied out at once; entries are plain integers.
    unsafe { TRACKED_TASKS.get(&tgid) }.map(|t| t.agent_id)
}

/// Agent of a cgroup v2 id, if that cgroup is an agent's.
#[inline(always)]
pub fn cgroup_agent(cgroup_id: u64) -> Option<u64> {
    // SAFETY: as above.
    unsafe { TRACKED_CGROUPS.get(&cgroup_id) }.map(|t| t.agent_id)
}

/// Agent of the current task, by ancestry first and then by its cgroup. A task found through
/// its cgroup is added to the task map, so its next syscalls pay only the first lookup.
#[inline(always)]
pub fn current_agent(tgid: u32) -> Option<(u64, bool)> {
    if let Some(agent) = tracked_agent(tgid) {
        return Some((agent, false));
    }
    // SAFETY: plain helper call.
    let agent = cgroup_agent(unsafe { bpf_get_current_cgroup_id() })?;
    track(tgid, agent);
    Some((agent, true))
}

/// Adds `tgid` to `agent`, counting a loss when the map is full. Never tracks the sensor.
#[inline(always)]
pub fn track(tgid: u32, agent: u64) {
    if is_sensor(tgid) {
        return;
    }
    if TRACKED_TASKS
        .insert(&tgid, &TrackedTask::new(agent), 0)
        .is_err()
    {
        count_drop(drop_slot::TRACKING_FULL);
    }
    bump_generation();
}

#[inline(always)]
pub fn untrack(tgid: u32) {
    let _ = TRACKED_TASKS.remove(&tgid);
    bump_generation();
}

#[inline(always)]
fn bump_generation() {
    if let Some(generation) = TRACKING_GENERATION.get_ptr_mut(0) {
        // SAFETY: pointer into an array map value; the add is atomic across CPUs.
        unsafe { crate::kernel::atomic_add(generation, 1) };
    }
}

/// A tracked process as the syscall hot path sees it.
#[derive(Clone, Copy)]
pub struct Tracked {
    pub agent: u64,
    /// `TrackedTask::flags`.
    pub flags: u64,
}

/// `tracked_agent` for the syscall hot path: the last decision on this CPU is reused while
/// the same process goes on making syscalls and nothing was tracked or untracked meanwhile.
#[inline(always)]
pub fn hot_tracked(tgid: u32) -> Option<Tracked> {
    let (Some(generation), Some(cache)) =
        (TRACKING_GENERATION.get_ptr(0), HOT_DECISION.get_ptr_mut(0))
    else {
        // SAFETY: the value is copied out at once; entries are plain integers.
        return unsafe { TRACKED_TASKS.get(&tgid) }.map(|t| Tracked {
            agent: t.agent_id,
            flags: t.flags,
        });
    };
    // SAFETY: pointers from array lookups; the per-CPU entry is this CPU's alone.
    unsafe {
        // Read the generation before the lookup: a change after it is seen next time.
        let generation = core::ptr::read_volatile(generation);
        if (*cache).tgid != tgid as u64 || (*cache).generation != generation {
            let task = TRACKED_TASKS.get(&tgid);
            (*cache).tgid = tgid as u64;
            (*cache).generation = generation;
            (*cache).agent = task.map_or(0, |t| t.agent_id);
            (*cache).flags = task.map_or(0, |t| t.flags);
        }
        let agent = (*cache).agent;
        if agent == 0 {
            return None;
        }
        Some(Tracked {
            agent,
            flags: (*cache).flags,
        })
    }
}

/// Sets `flag` in the `TrackedTask` of process `tgid`, and makes every CPU's cached decision
/// stale so that the next syscall sees it.
#[inline(always)]
pub fn set_task_flag(tgid: u32, flag: u64) {
    let Some(task) = TRACKED_TASKS.get_ptr_mut(&tgid) else {
        return;
    };
    // SAFETY: pointer into the map value just found; the or is atomic across CPUs.
    unsafe { crate::kernel::atomic_or(core::ptr::addr_of_mut!((*task).flags), flag) };
    bump_generation();
}

#[inline(always)]
pub fn is_sensor(tgid: u32) -> bool {
    CONFIG
        .get(0)
        .is_some_and(|config| config.sensor_tgid != 0 && config.sensor_tgid == tgid)
}

/// Makes the current task an agent at exec when its new executable is a known agent's or its
/// environment carries the marker. Returns the agent id the kernel gave it.
#[inline(always)]
pub fn discover(task: u64, tgid: u32) -> Option<u64> {
    let comm = aya_ebpf::helpers::bpf_get_current_comm().ok()?;
    // SAFETY: the value is only tested for presence.
    let known = unsafe { DISCOVERY_COMMS.get(&comm) }.is_some();
    let marked = !known
        && CONFIG
            .get(0)
            .is_some_and(|c| c.discovery & discovery::ENV_MARKER != 0)
        && env_has_marker(task);
    if !known && !marked {
        return None;
    }
    let agent = discovery::DISCOVERED_AGENT_BIT | tgid as u64;
    track(tgid, agent);
    Some(agent)
}

/// Whether an environment string of `task` starts with `AGENT_SENSOR_AGENT=` (first
/// `ENV_SCAN_BYTES` bytes of the environment block).
#[inline(always)]
fn env_has_marker(task: u64) -> bool {
    use crate::{
        kernel::{read, read_ptr},
        maps::off,
    };
    let Some(mm) = read_ptr(task, off!(task_mm)) else {
        return false;
    };
    let (Some(start), Some(end)) = (
        read::<u64>(mm, off!(mm_env_start)),
        read::<u64>(mm, off!(mm_env_end)),
    ) else {
        return false;
    };
    if end <= start {
        return false;
    }
    let Some(scratch) = ENV_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let len = (end - start).min(discovery::ENV_SCAN_BYTES as u64 - 1);
    let len = len & (discovery::ENV_SCAN_BYTES as u64 - 1);
    // SAFETY: per-CPU scratch with ENV_SCAN_BYTES + 32 bytes; `len` is below ENV_SCAN_BYTES.
    let buf = unsafe { (*scratch).buf.as_mut_ptr() };
    // The block goes one byte in, after a NUL, so every string (the first too) follows a NUL.
    // SAFETY: as above; the helper checks the user address.
    if unsafe {
        *buf = 0;
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            buf.add(1).cast(),
            len as u32,
            start as *const _,
        )
    } != 0
    {
        return false;
    }
    let mut scan = EnvScan { buf, len, found: 0 };
    // bpf_loop: the step is verified once, not once per byte (a 4 KiB byte loop exceeds the
    // verifier's jump-history limit).
    // SAFETY: the callback has the signature bpf_loop expects; `scan` outlives the call.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            (discovery::ENV_SCAN_BYTES / 8) as u32,
            env_scan_step as *mut core::ffi::c_void,
            (&mut scan as *mut EnvScan).cast(),
            0,
        );
    }
    scan.found != 0
}

/// State of one environment scan, shared with `env_scan_step`.
#[repr(C)]
struct EnvScan {
    buf: *const u8,
    len: u64,
    found: u64,
}

/// Checks the 8 byte positions of chunk `index` for the marker at the start of a string.
/// Returns 1 to stop the loop (found, or past the end), 0 to go on.
#[inline(never)]
extern "C" fn env_scan_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer `env_has_marker` gave it.
    let scan = unsafe { &mut *ctx.cast::<EnvScan>() };
    let marker = discovery::MARKER;
    let head = u64::from_ne_bytes([
        marker[0], marker[1], marker[2], marker[3], marker[4], marker[5], marker[6], marker[7],
    ]);
    let middle = u64::from_ne_bytes([
        marker[8], marker[9], marker[10], marker[11], marker[12], marker[13], marker[14],
        marker[15],
    ]);
    let base = (index * 8) & (discovery::ENV_SCAN_BYTES as u64 - 8);
    for k in 0..8u64 {
        let i = base + k;
        if i >= scan.len {
            return 1;
        }
        // SAFETY: i < ENV_SCAN_BYTES; string byte i is at buf[i + 1] (buf[0] is a NUL), and
        // the buffer has 32 bytes of slack past ENV_SCAN_BYTES.
        let found = unsafe {
            let before = scan.buf.add(i as usize);
            let at = before.add(1);
            *before == 0
                && at.cast::<u64>().read_unaligned() == head
                && at.add(8).cast::<u64>().read_unaligned() == middle
                && *at.add(16) == marker[16]
                && *at.add(17) == marker[17]
                && *at.add(18) == marker[18]
        };
        if found {
            scan.found = 1;
            return 1;
        }
    }
    0
}
