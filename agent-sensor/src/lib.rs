//! agent-sensor: an eBPF host sensor that watches AI-agent processes.
//!
//! Data flows `loader` (eBPF into the kernel) → `events` (decode ring records) → `daemon`
//! (the run loop and its sinks); `probe` checks what the running kernel supports.

pub mod agents;
pub mod btf;
pub mod control;
pub mod daemon;
pub mod detect;
pub mod events;
pub mod export;
pub mod fasthash;
pub mod loader;
pub mod pipeline;
pub mod policy;
pub mod probe;
pub mod respond;
pub mod system;
pub mod tracking;

/// Target of the probe's uprobe: it must be a real, unmangled symbol of this binary.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn agent_sensor_uprobe_target(value: u64) -> u64 {
    std::hint::black_box(value).wrapping_add(1)
}
