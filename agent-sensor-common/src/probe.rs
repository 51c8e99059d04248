//! Shared definitions of the capability-probe object (`agent-sensor probe`).

/// Slots of the probe's `HITS` array: each probe program bumps its own slot when it runs for the
/// probing process, so the probe can tell "attached" from "attached and really fired".
pub mod slot {
    pub const TRACEPOINT: u32 = 0;
    pub const RAW_TRACEPOINT: u32 = 1;
    pub const TP_BTF: u32 = 2;
    pub const FENTRY: u32 = 3;
    pub const LSM: u32 = 4;
    pub const KPROBE: u32 = 5;
    pub const UPROBE: u32 = 6;
    pub const SOCK_ADDR: u32 = 7;
    pub const RING_BUF: u32 = 8;
    pub const SEND_SIGNAL: u32 = 9;
    pub const COUNT: u32 = 10;
}

/// Slots of the probe's `TARGET` array.
pub mod target {
    /// tgid of the probing process: programs count hits only for it.
    pub const PROBER: u32 = 0;
    /// tgid of the child the send-signal probe must kill.
    pub const SIGNAL_VICTIM: u32 = 1;
    pub const COUNT: u32 = 2;
}
