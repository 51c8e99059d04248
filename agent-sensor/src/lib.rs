//! agent-sensor: an eBPF host sensor that watches AI-agent processes.
//!
//! Data flows `loader` (eBPF into the kernel) → `events` (decode ring records) → `daemon`
//! (the run loop and its sinks); `probe` checks what the running kernel supports.

/// `memchr::memmem::find($haystack, $needle)` for a constant needle, its searcher built once:
/// building one was most of a search in a short path, and these run for every file event.
macro_rules! find_constant {
    ($haystack:expr, $needle:expr) => {{
        static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new($needle));
        FINDER.find($haystack)
    }};
}

pub mod agents;
pub mod btf;
pub mod control;
pub mod daemon;
pub mod detect;
pub mod events;
pub mod export;
pub mod fasthash;
pub mod loader;
pub mod lock;
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
