//! What happens to each decoded record: finish its paths, correlate it with what came before,
//! write it. Kept apart from the run loop so that it can be driven by tests and benchmarks.

use std::{
    collections::HashSet,
    io::{BufWriter, Write},
};

use agent_sensor_common::{EventKind, SockCloseEvent, SockStats};
use aya::maps::{HashMap, MapData, RingBuf};

use crate::{
    agents::Correlator,
    events::{self, Body, Clock, Event},
};

pub type Sink = BufWriter<Box<dyn Write + Send>>;

/// Counters the pipeline keeps (exported as metrics by a later stage).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub events: u64,
    pub decode_errors: u64,
    /// Kernel-side losses by drop slot, as last read.
    pub kernel_drops: Vec<u64>,
}

pub struct Pipeline {
    pub clock: Clock,
    pub sink: Option<Sink>,
    pub stats: Stats,
    pub correlator: Correlator,
    /// Processes that exited since the last `report_exited_sockets`.
    exited: HashSet<u32>,
}

impl Pipeline {
    pub fn new(sink: Option<Sink>) -> Self {
        Self {
            clock: Clock::new(),
            sink,
            stats: Stats::default(),
            correlator: Correlator::default(),
            exited: HashSet::new(),
        }
    }

    /// Decodes and handles every record waiting in the ring.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) -> std::io::Result<()> {
        while let Some(item) = ring.next() {
            match events::decode(&item) {
                Ok(event) => self.handle(event)?,
                Err(e) => {
                    self.stats.decode_errors += 1;
                    // The first few and then every thousandth: a flood stays visible without
                    // drowning the log.
                    let n = self.stats.decode_errors;
                    if n <= 10 || n % 1000 == 0 {
                        log::warn!("undecodable record #{n}: {e}");
                    }
                }
            }
        }
        self.flush()
    }

    pub fn handle(&mut self, mut event: Event) -> std::io::Result<()> {
        self.stats.events += 1;
        events::resolve::resolve_on_host(&mut event);
        self.correlator.observe(&mut event);
        if event.kind == EventKind::ProcessExit {
            self.exited.insert(event.tgid);
        }
        if let Some(sink) = self.sink.as_mut() {
            serde_json::to_writer(&mut *sink, &event.to_json(&self.clock))?;
            sink.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self.sink.as_mut() {
            Some(sink) => sink.flush(),
            None => Ok(()),
        }
    }

    /// Sockets of exited processes that were never closed by a syscall (the kernel closed
    /// them at exit) are reported from the kernel's counters and removed from them.
    pub fn report_exited_sockets(
        &mut self,
        sockets: &mut HashMap<&mut MapData, u64, SockStats>,
    ) -> std::io::Result<()> {
        if self.exited.is_empty() {
            return Ok(());
        }
        let orphans: Vec<(u64, SockStats)> = sockets
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, stats)| self.exited.contains(&stats.tgid))
            .collect();
        self.exited.clear();
        for (key, stats) in orphans {
            let _ = sockets.remove(&key);
            let close = SockCloseEvent {
                fd: stats.fd,
                bytes_sent: stats.bytes_sent,
                bytes_received: stats.bytes_received,
                ..Default::default()
            };
            self.handle(Event {
                kind: EventKind::NetClose,
                flags: 0,
                ktime_ns: Clock::now_ktime_ns(),
                pid: stats.tgid,
                tgid: stats.tgid,
                ppid: 0,
                uid: 0,
                gid: 0,
                cgroup_id: 0,
                agent_id: stats.agent_id,
                comm: Vec::new(),
                body: Body::SockClose(events::sock_close(&close, true)),
            })?;
        }
        self.flush()
    }
}
