//! The processes of one agent as its events reveal them: which pids are its own (for
//! `/proc/<pid>/environ`), who each runs as (a uid that turns 0), where each stands (relative
//! exec names), what it runs, and the remote sockets it holds (reverse shells).

use crate::{
    events::{path, Body, Event},
    fasthash::HashMap,
};

/// Processes remembered per agent; beyond this the least recently seen is forgotten.
const MAX_PROCESSES: usize = 4096;
/// Threads remembered per agent (tid → tgid).
const MAX_THREADS: usize = 16384;
/// Remote sockets remembered per process.
const MAX_REMOTE_SOCKETS: usize = 4;
/// Arguments remembered per process, and bytes per argument.
const MAX_ARGS: usize = 8;
const MAX_ARG_BYTES: usize = 128;

/// A socket of a process connected to (or accepted from) a remote peer that is not allowed.
#[derive(Debug, Clone)]
pub struct RemoteSocket {
    pub fd: i32,
    /// The connect or accept that made it.
    pub event: Event,
}

#[derive(Debug, Clone, Default)]
pub struct Process {
    pub uid: u32,
    pub gid: u32,
    pub cwd: Option<Vec<u8>>,
    /// What it runs: the exec filename, made absolute when the cwd was known.
    pub exe: Option<Vec<u8>>,
    /// The first arguments of that exec, each cut to a bound.
    pub argv: Vec<Vec<u8>>,
    /// Inherited across fork and kept across exec, as file descriptors are.
    pub remote: Vec<RemoteSocket>,
    /// A process of the agent whose parent is not: the agent runtime itself (or a process
    /// that entered the agent's cgroup from outside).
    pub agent_root: bool,
    /// Since its last exec it connected to a destination the policy allows (an LLM endpoint,
    /// a registry): the mark of an agent runtime or a tool, not of a shell stager.
    pub reached_allowed: bool,
    last_seen_ns: u64,
}

/// Uid and gid a process had before the current event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Default)]
pub struct Processes {
    by_tgid: HashMap<u32, Process>,
    threads: HashMap<u32, u32>,
    /// Identity of the first event the agent sent: the fallback for a process whose parent is
    /// unknown.
    baseline: Option<Identity>,
}

impl Processes {
    /// Records the event's process (and a forked child) before the rules run; returns the
    /// identity the process had before this event.
    pub fn enter(&mut self, event: &Event) -> Identity {
        let identity = Identity {
            uid: event.uid,
            gid: event.gid,
        };
        let baseline = *self.baseline.get_or_insert(identity);
        if !self.by_tgid.contains_key(&event.tgid) {
            let start = self.start_from(event.ppid, baseline);
            self.insert(event.tgid, start);
        }
        self.note_thread(event.pid, event.tgid);
        let process = self.by_tgid.get_mut(&event.tgid).expect("inserted above");
        let before = Identity {
            uid: process.uid,
            gid: process.gid,
        };
        process.uid = event.uid;
        process.gid = event.gid;
        process.last_seen_ns = event.ktime_ns;
        if let Body::Fork {
            child_pid,
            child_tgid,
        } = &event.body
        {
            if *child_tgid != event.tgid {
                let child = Process {
                    last_seen_ns: event.ktime_ns,
                    agent_root: false,
                    ..process.clone()
                };
                self.insert(*child_tgid, child);
            }
            self.note_thread(*child_pid, *child_tgid);
        }
        if let Body::Exec { filename, argv, .. } = &event.body {
            let process = self.by_tgid.get_mut(&event.tgid).expect("inserted above");
            process.exe = Some(absolute(filename, process.cwd.as_deref()));
            process.reached_allowed = false;
            process.argv = argv
                .iter()
                .take(MAX_ARGS)
                .map(|a| a[..a.len().min(MAX_ARG_BYTES)].to_vec())
                .collect();
        }
        before
    }

    /// Updates what the event changed once the rules have seen it.
    pub fn leave(&mut self, event: &Event) {
        match &event.body {
            Body::Exit { .. } => self.remove(event.tgid),
            Body::SockClose(close) => {
                if let Some(process) = self.by_tgid.get_mut(&event.tgid) {
                    process.remote.retain(|s| s.fd != close.fd);
                }
            }
            Body::File(file) => {
                if let Some(cwd) = super::access::revealed_cwd(event.kind, file) {
                    if let Some(process) = self.by_tgid.get_mut(&event.tgid) {
                        process.cwd = Some(cwd);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether `id` (a pid or a tid) is one of the agent's own.
    pub fn is_own(&self, id: u32) -> bool {
        self.by_tgid.contains_key(&id) || self.threads.contains_key(&id)
    }

    pub fn get(&self, tgid: u32) -> Option<&Process> {
        self.by_tgid.get(&tgid)
    }

    pub fn get_mut(&mut self, tgid: u32) -> Option<&mut Process> {
        self.by_tgid.get_mut(&tgid)
    }

    /// Remembers a remote socket `tgid` holds.
    pub fn add_remote(&mut self, tgid: u32, socket: RemoteSocket) {
        if let Some(process) = self.by_tgid.get_mut(&tgid) {
            process.remote.retain(|s| s.fd != socket.fd);
            if process.remote.len() >= MAX_REMOTE_SOCKETS {
                process.remote.remove(0);
            }
            process.remote.push(socket);
        }
    }

    fn start_from(&self, ppid: u32, baseline: Identity) -> Process {
        match self.by_tgid.get(&ppid) {
            Some(parent) => Process {
                agent_root: false,
                ..parent.clone()
            },
            None => Process {
                uid: baseline.uid,
                gid: baseline.gid,
                agent_root: true,
                ..Process::default()
            },
        }
    }

    fn insert(&mut self, tgid: u32, process: Process) {
        if self.by_tgid.len() >= MAX_PROCESSES && !self.by_tgid.contains_key(&tgid) {
            // Exits normally keep the table small; this only runs when exits were lost.
            if let Some(stalest) = self
                .by_tgid
                .iter()
                .min_by_key(|(_, p)| p.last_seen_ns)
                .map(|(tgid, _)| *tgid)
            {
                self.remove(stalest);
            }
        }
        self.by_tgid.insert(tgid, process);
        self.note_thread(tgid, tgid);
    }

    fn note_thread(&mut self, tid: u32, tgid: u32) {
        if tid == tgid || self.threads.contains_key(&tid) {
            return;
        }
        if self.threads.len() >= MAX_THREADS {
            self.threads
                .retain(|_, owner| self.by_tgid.contains_key(owner));
            if self.threads.len() >= MAX_THREADS {
                self.threads.clear();
            }
        }
        self.threads.insert(tid, tgid);
    }

    fn remove(&mut self, tgid: u32) {
        if self.by_tgid.remove(&tgid).is_some() {
            self.threads.retain(|_, owner| *owner != tgid);
        }
    }
}

/// An exec filename made absolute against the cwd when it was relative and the cwd known.
fn absolute(filename: &[u8], cwd: Option<&[u8]>) -> Vec<u8> {
    match cwd {
        Some(cwd) if !filename.starts_with(b"/") => path::join_lexical(cwd, filename),
        _ => filename.to_vec(),
    }
}
