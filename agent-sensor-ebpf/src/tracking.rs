//! Which tasks belong to an agent.

use agent_sensor_common::{drop_slot, TrackedTask};
use aya_ebpf::helpers::generated::bpf_get_current_cgroup_id;

use crate::maps::{count_drop, CONFIG, TRACKED_CGROUPS, TRACKED_TASKS};

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
        .insert(&tgid, &TrackedTask { agent_id: agent }, 0)
        .is_err()
    {
        count_drop(drop_slot::TRACKING_FULL);
    }
}

#[inline(always)]
pub fn untrack(tgid: u32) {
    let _ = TRACKED_TASKS.remove(&tgid);
}

#[inline(always)]
pub fn is_sensor(tgid: u32) -> bool {
    CONFIG
        .get(0)
        .is_some_and(|config| config.sensor_tgid != 0 && config.sensor_tgid == tgid)
}
