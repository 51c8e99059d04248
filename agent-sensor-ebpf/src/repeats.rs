//! Opens a process repeats: counted in the kernel, not sent, within the repeat window (see
//! `agent_sensor_common::RepeatKey` for what makes two opens the same and why that is safe).
//!
//! A repeat found in this CPU's `HOT_OPEN` costs a tracked open a kernel read and a few
//! compares; one found in `RECENT_OPENS` a hash lookup and a clock read more. A record it
//! saves costs the path walk, the ring's reservation and copy, and the daemon's decoding and
//! rules (BENCHMARKS.md: a tracked open/close loop that sends every open).

use agent_sensor_common::{filter_slot, RepeatKey, RepeatState};
use aya_ebpf::helpers::generated::{bpf_jiffies64, bpf_ktime_get_ns};

use crate::{
    kernel::{current_mm, path_parts},
    maps::{count_filtered, off, CONFIG, HOT_OPEN, RECENT_OPENS},
};

/// Whether an open must be sent, and with how many repeats counted since its key last was.
pub enum Repeat {
    /// Within the window of the last one sent: counted, nothing to send.
    Counted,
    /// Send it; the value goes into `FileEvent::repeats`.
    Send(u32),
}

/// The longest scheduler tick (HZ = 100): a window at least this long outlasts the tick in
/// which an open was last found inside it, which is what `maps::HotOpen` relies on.
const LONGEST_TICK_MS: u32 = 10;

/// Checks the successful open of `file` (a `struct file *`) with `flags` by the current
/// process of `agent` against the window, and records it.
#[inline(always)]
pub fn check(agent: u64, tgid: u32, file: u64, flags: u32) -> Repeat {
    let window_ms = CONFIG.get(0).map_or(0, |config| config.repeat_window_ms);
    if window_ms == 0 {
        return Repeat::Send(0);
    }
    let Some((mnt, dentry)) = path_parts(file + off!(file_path)) else {
        return Repeat::Send(0);
    };
    let key = RepeatKey {
        agent_id: agent,
        dentry,
        mnt,
        mm: current_mm(),
        tgid,
        flags,
    };
    // SAFETY: plain helper call.
    let tick = unsafe { bpf_jiffies64() };
    let Some(hot) = HOT_OPEN.get_ptr_mut(0) else {
        return check_window(&key, window_ms);
    };
    // SAFETY: this CPU's entry; nothing else runs on this CPU while we hold it.
    let hot = unsafe { &mut *hot };
    if window_ms >= LONGEST_TICK_MS && hot.tick == tick && same_key(&hot.key, &key) {
        hot.pending += 1;
        count_filtered(filter_slot::REPEAT);
        return Repeat::Counted;
    }
    if hot.pending > 0 {
        if let Some(state) = RECENT_OPENS.get_ptr_mut(&hot.key) {
            // SAFETY: pointer into the map value just found.
            unsafe { (*state).repeats = (*state).repeats.saturating_add(hot.pending) };
        }
        hot.pending = 0;
    }
    let repeat = check_window(&key, window_ms);
    // Inside the window now, so for the rest of this tick (see `HotOpen`).
    set_key(&mut hot.key, &key);
    hot.tick = tick;
    repeat
}

/// The window's verdict from `RECENT_OPENS`, which it updates.
#[inline(always)]
fn check_window(key: &RepeatKey, window_ms: u32) -> Repeat {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(state) = RECENT_OPENS.get_ptr_mut(key) {
        // SAFETY: pointer into the map value just found. Threads of one process racing on
        // two CPUs can at worst lose a count of `repeats` (the per-CPU count stays exact) or
        // both send.
        unsafe {
            if now.wrapping_sub((*state).sent_ns) < window_ms as u64 * 1_000_000 {
                (*state).repeats = (*state).repeats.saturating_add(1);
                count_filtered(filter_slot::REPEAT);
                return Repeat::Counted;
            }
            let repeats = (*state).repeats;
            (*state).sent_ns = now;
            (*state).repeats = 0;
            return Repeat::Send(repeats);
        }
    }
    // A full map evicts its least recently used key: at worst an open is sent again.
    let state = RepeatState {
        sent_ns: now,
        repeats: 0,
        _pad0: 0,
    };
    let _ = RECENT_OPENS.insert(key, &state, 0);
    Repeat::Send(0)
}

/// Field by field: a derived comparison or copy of the 40 bytes may become a call to the
/// linker's memcmp or memcpy, byte loops.
#[inline(always)]
fn same_key(a: &RepeatKey, b: &RepeatKey) -> bool {
    a.dentry == b.dentry
        && a.mm == b.mm
        && a.mnt == b.mnt
        && a.agent_id == b.agent_id
        && a.tgid == b.tgid
        && a.flags == b.flags
}

#[inline(always)]
fn set_key(to: &mut RepeatKey, from: &RepeatKey) {
    // SAFETY: plain stores into a valid struct (volatile so that they stay stores).
    unsafe {
        core::ptr::addr_of_mut!(to.agent_id).write_volatile(from.agent_id);
        core::ptr::addr_of_mut!(to.dentry).write_volatile(from.dentry);
        core::ptr::addr_of_mut!(to.mnt).write_volatile(from.mnt);
        core::ptr::addr_of_mut!(to.mm).write_volatile(from.mm);
        core::ptr::addr_of_mut!(to.tgid).write_volatile(from.tgid);
        core::ptr::addr_of_mut!(to.flags).write_volatile(from.flags);
    }
}
