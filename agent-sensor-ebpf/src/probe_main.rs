//! Capability probe: one tiny program per hook family. `agent-sensor probe` loads and attaches
//! each one and triggers it, so "works" means the kernel really ran it, not merely accepted it.
#![no_std]
#![no_main]

use agent_sensor_common::probe::{slot, target};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal},
    macros::{
        btf_tracepoint, cgroup_sock_addr, fentry, kprobe, lsm, map, raw_tracepoint, tracepoint,
        uprobe,
    },
    maps::{Array, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, LsmContext, ProbeContext, RawTracePointContext,
        SockAddrContext, TracePointContext,
    },
    EbpfContext,
};

#[map]
static HITS: Array<u64> = Array::with_max_entries(slot::COUNT, 0);

#[map]
static TARGET: Array<u32> = Array::with_max_entries(target::COUNT, 0);

#[map]
static PROBE_RING: RingBuf = RingBuf::with_byte_size(4096, 0);

fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

fn target(index: u32) -> u32 {
    TARGET.get(index).copied().unwrap_or(0)
}

/// Counts a hit in `slot` when the current task belongs to the probing process.
fn hit_if_prober(slot: u32) -> bool {
    let prober = target(target::PROBER);
    if prober == 0 || current_tgid() != prober {
        return false;
    }
    if let Some(count) = HITS.get_ptr_mut(slot) {
        // SAFETY: the pointer comes from a successful lookup in an array map.
        unsafe { *count += 1 };
    }
    true
}

#[tracepoint(category = "syscalls", name = "sys_enter_getppid")]
pub fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
    hit_if_prober(slot::TRACEPOINT);
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    hit_if_prober(slot::RAW_TRACEPOINT);
    0
}

#[btf_tracepoint(function = "sys_enter")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    hit_if_prober(slot::TP_BTF);
    0
}

#[fentry(function = "do_sys_openat2")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    hit_if_prober(slot::FENTRY);
    0
}

#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    hit_if_prober(slot::LSM);
    0
}

#[kprobe(function = "do_sys_openat2")]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    hit_if_prober(slot::KPROBE);
    0
}

#[uprobe]
pub fn probe_uprobe(_ctx: ProbeContext) -> u32 {
    hit_if_prober(slot::UPROBE);
    0
}

/// Attached to a throw-away cgroup that only the probe's child joins: every call is ours.
#[cgroup_sock_addr(connect4)]
pub fn probe_sock_addr(_ctx: SockAddrContext) -> i32 {
    if let Some(count) = HITS.get_ptr_mut(slot::SOCK_ADDR) {
        // SAFETY: the pointer comes from a successful lookup in an array map.
        unsafe { *count += 1 };
    }
    1 // allow
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_ring_buf(_ctx: RawTracePointContext) -> i32 {
    if hit_if_prober(slot::RING_BUF) {
        let _ = PROBE_RING.output::<u64>(&0x6167_656e_7473_656e_u64, 0);
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_send_signal(ctx: RawTracePointContext) -> i32 {
    let victim = target(target::SIGNAL_VICTIM);
    if victim != 0 && ctx.tgid() == victim {
        // SAFETY: plain helper call; the verifier checks the program type allows it.
        let ret = unsafe { bpf_send_signal(9) };
        if ret == 0 {
            if let Some(count) = HITS.get_ptr_mut(slot::SEND_SIGNAL) {
                // SAFETY: the pointer comes from a successful lookup in an array map.
                unsafe { *count += 1 };
            }
        }
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
