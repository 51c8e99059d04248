//! anomaly.novel_behavior: after a learning period, what a profile has never done — a binary
//! it never ran, a destination it never reached, an area of the file system it never wrote.
//!
//! Each profile (shared by the agents that use it) counts what it saw. The learning period is
//! wall-clock time since the profile was first seen, persisted with the counts in
//! `<state_dir>/novelty/<profile>.json`, so a restart neither forgets nor restarts it. After
//! learning, something new is scored 0–100 by how settled the profile is (Good–Turing: the
//! share of observations that were one-offs estimates how likely anything new is), weighted by
//! kind and adjusted for where it is (a binary in /tmp is more telling than one in /usr).
//! Something new is reported once, then learned.

mod store;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{
    access::{self, is_device_sink, proc_entry, under, Access, Outcome},
    candidate::{text, Candidate},
    exfil, isolation,
    state::AgentState,
    Context,
};
use crate::{
    events::{Body, Event},
    policy::{RuleId, Severity},
};

/// Items learned per kind per profile; beyond this new ones are scored but not learned.
const MAX_ITEMS: usize = 4096;
/// Profiles kept (the policy names them, so this is only a guard).
const MAX_PROFILES: usize = 256;
/// observe() writes changed profiles at most this often.
const AUTOSAVE_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Binary,
    Destination,
    PathArea,
}

impl Kind {
    /// How much a new item of this kind says on its own.
    fn weight(self) -> f64 {
        match self {
            Kind::Destination => 0.9,
            Kind::Binary => 0.85,
            Kind::PathArea => 0.75,
        }
    }
}

/// Counts of what a profile did of one kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Learned {
    pub observations: u64,
    pub items: BTreeMap<String, u64>,
}

impl Learned {
    fn observe(&mut self, item: &str) {
        self.observations = self.observations.saturating_add(1);
        if let Some(count) = self.items.get_mut(item) {
            *count = count.saturating_add(1);
        } else if self.items.len() < MAX_ITEMS {
            self.items.insert(item.to_string(), 1);
        }
    }

    /// Good–Turing estimate that the next observation is something new, smoothed so an empty
    /// profile says one half.
    fn chance_of_new(&self) -> f64 {
        let once = self.items.values().filter(|c| **c == 1).count() as f64;
        (once + 1.0) / (self.observations as f64 + 2.0)
    }
}

/// One profile's learned behaviour, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub first_seen_unix: u64,
    pub binaries: Learned,
    pub destinations: Learned,
    pub path_areas: Learned,
    #[serde(skip)]
    dirty: bool,
}

impl Profile {
    fn learned(&mut self, kind: Kind) -> &mut Learned {
        match kind {
            Kind::Binary => &mut self.binaries,
            Kind::Destination => &mut self.destinations,
            Kind::PathArea => &mut self.path_areas,
        }
    }
}

/// Something a profile did, normalised so that what varies by chance (build hashes, temp
/// names) does not make it new.
struct Observation {
    kind: Kind,
    item: String,
    /// Score points added (or taken) for where it is.
    risk: i32,
    /// For the summary.
    shown: String,
}

#[derive(Debug, Default)]
pub struct Novelty {
    /// `<state_dir>/novelty`, when profiles persist.
    dir: Option<std::path::PathBuf>,
    profiles: HashMap<String, Profile>,
    last_save_unix: u64,
    /// Writes the autosaves; `None` until the first one, and after `save`.
    writer: Option<store::Writer>,
    /// Tests set the wall clock.
    now_override: Option<u64>,
}

impl Novelty {
    /// Profiles kept in `dir`, loading those already there.
    pub fn persistent(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            profiles: store::load_all(dir)?,
            dir: Some(dir.to_path_buf()),
            ..Self::default()
        })
    }

    /// Writes the profiles that changed since the last save, here and now (at stop). Writes
    /// the autosave thread still has queued land first, so none overwrites a newer one.
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        // Dropping the writer waits for what it has queued.
        drop(self.writer.take());
        for (name, profile) in self.profiles.iter_mut().filter(|(_, p)| p.dirty) {
            store::save(dir, name, profile)?;
            profile.dirty = false;
        }
        Ok(())
    }

    /// Hands the changed profiles to the writer thread: a save syncs a file and its directory,
    /// tens of milliseconds on a slow disk, in which the run loop would leave a busy ring
    /// buffer to overflow. A profile the writer has no room for stays changed, for next time.
    fn autosave(&mut self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let writer = self
            .writer
            .get_or_insert_with(|| store::Writer::start(dir.clone()));
        for (name, profile) in self.profiles.iter_mut().filter(|(_, p)| p.dirty) {
            match store::encode(profile) {
                Ok(bytes) => {
                    if writer.queue(name, bytes) {
                        profile.dirty = false;
                    }
                }
                Err(e) => log::warn!("cannot encode novelty profile {name}: {e}"),
            }
        }
    }

    fn now(&self) -> u64 {
        self.now_override.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
    }

    #[cfg(test)]
    pub fn set_now(&mut self, unix_secs: u64) {
        self.now_override = Some(unix_secs);
    }

    pub fn observe(&mut self, ctx: &Context, event: &Event, state: &AgentState) -> Vec<Candidate> {
        if !ctx.enabled(RuleId::NovelBehavior) {
            return Vec::new();
        }
        let observations = observations(ctx, event, state);
        if observations.is_empty() {
            return Vec::new();
        }
        let now = self.now();
        let name = ctx.agent.profile;
        if !self.profiles.contains_key(name) && self.profiles.len() >= MAX_PROFILES {
            return Vec::new();
        }
        let thresholds = &ctx.agent.scope.thresholds;
        let profile = self
            .profiles
            .entry(name.to_string())
            .or_insert_with(|| Profile {
                first_seen_unix: now,
                ..Profile::default()
            });
        let learning = now.saturating_sub(profile.first_seen_unix) < thresholds.learning_secs;
        let mut out = Vec::new();
        for o in observations {
            let learned = profile.learned(o.kind);
            if !learning && !learned.items.contains_key(&o.item) {
                let score = score(o.kind, learned, o.risk);
                if score >= thresholds.novelty_min_score {
                    out.push(candidate(event, name, &o, score));
                }
            }
            learned.observe(&o.item);
        }
        profile.dirty = true;
        if self.dir.is_some() && now.saturating_sub(self.last_save_unix) >= AUTOSAVE_SECS {
            self.last_save_unix = now;
            self.autosave();
        }
        out
    }
}

/// Severity grows with the score.
pub fn severity(score: u32) -> Severity {
    match score {
        0..=59 => Severity::Low,
        60..=79 => Severity::Medium,
        _ => Severity::High,
    }
}

fn score(kind: Kind, learned: &Learned, risk: i32) -> u32 {
    let base = kind.weight() * 100.0 * (1.0 - learned.chance_of_new());
    (base.round() as i32 + risk).clamp(0, 100) as u32
}

fn candidate(event: &Event, profile: &str, o: &Observation, score: u32) -> Candidate {
    let (did, what) = match o.kind {
        Kind::Binary => ("ran", "a binary"),
        Kind::Destination => ("reached", "a destination"),
        Kind::PathArea => ("wrote under", "a path area"),
    };
    let summary = format!(
        "{did} {}, {what} profile {profile} has not used before (novelty score {score})",
        o.shown
    );
    let mut c = Candidate::new(
        RuleId::NovelBehavior,
        format!("{}:{}", what, o.item),
        summary,
        vec![event.clone()],
    );
    c.score = Some(score);
    c
}

fn observations(ctx: &Context, event: &Event, state: &AgentState) -> Vec<Observation> {
    let scope = ctx.agent.scope;
    match &event.body {
        Body::Exec { .. } => {
            let Some(exe) = state
                .processes
                .get(event.tgid)
                .and_then(|p| p.exe.as_deref())
            else {
                return Vec::new();
            };
            let item = if scope.in_worktree(exe) {
                "{worktree}".to_string()
            } else {
                generalise(&text(exe))
            };
            vec![Observation {
                kind: Kind::Binary,
                item,
                risk: binary_risk(exe),
                shown: text(exe),
            }]
        }
        Body::File(file) if access::outcome(file.ret) == Outcome::Done => {
            let cwd = state
                .processes
                .get(event.tgid)
                .and_then(|p| p.cwd.as_deref());
            access::touches(event.kind, file, cwd)
                .into_iter()
                .filter(|t| matches!(t.access, Access::Write(_)))
                .filter(|t| {
                    !(scope.in_worktree(&t.path)
                        || is_device_sink(&t.path)
                        || proc_entry(&t.path).is_some_and(|(pid, _)| state.processes.is_own(pid))
                        || isolation::shared_git(state, event, &t.path, true))
                })
                .map(|t| {
                    let area = path_area(&t.path);
                    Observation {
                        kind: Kind::PathArea,
                        item: generalise(&text(&area)),
                        risk: area_risk(&area),
                        shown: text(&area),
                    }
                })
                .collect()
        }
        Body::Net(_) => {
            let Some((ip, port, name)) = exfil::egress(ctx, event) else {
                return Vec::new();
            };
            if ip.is_loopback() {
                return Vec::new();
            }
            let item = match name {
                Some(name) => text(name).to_ascii_lowercase(),
                None => network_of(ip, port),
            };
            vec![Observation {
                kind: Kind::Destination,
                shown: super::candidate::destination_long(ip, port, name),
                item,
                // Reached without a lookup: a hard-coded address.
                risk: if name.is_none() { 10 } else { 0 },
            }]
        }
        _ => Vec::new(),
    }
}

/// `/24` (IPv4) or `/64` (IPv6) and the port: neighbouring addresses of one service are one
/// destination.
fn network_of(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24:{port}")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64:{port}", s[0], s[1], s[2], s[3])
        }
    }
}

const TEMP_ROOTS: [&[u8]; 3] = [b"/tmp", b"/var/tmp", b"/dev/shm"];
/// Where installed software lives (a binary run from elsewhere is more telling).
const INSTALLED_DIRS: [&[u8]; 7] = [
    b"/usr",
    b"/bin",
    b"/sbin",
    b"/lib",
    b"/opt",
    b"/snap",
    b"/nix/store",
];

/// The directory a write lands in, at most three components deep (`/home/u/.config`); any
/// write in a temp root is that root.
fn path_area(path: &[u8]) -> Vec<u8> {
    if let Some(root) = TEMP_ROOTS.iter().find(|root| under(path, root)) {
        return root.to_vec();
    }
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    let depth = parts.len().saturating_sub(1).min(3);
    if depth == 0 {
        return b"/".to_vec();
    }
    parts[..depth]
        .iter()
        .flat_map(|p| [&b"/"[..], p])
        .flatten()
        .copied()
        .collect()
}

fn binary_risk(exe: &[u8]) -> i32 {
    if TEMP_ROOTS.iter().any(|root| under(exe, root))
        || exe.starts_with(b"/proc/")
        || exe.starts_with(b"/memfd:")
    {
        20
    } else if INSTALLED_DIRS.iter().any(|dir| under(exe, dir)) {
        0
    } else {
        5
    }
}

fn area_risk(area: &[u8]) -> i32 {
    const SYSTEM: [&[u8]; 10] = [
        b"/etc", b"/usr", b"/boot", b"/lib", b"/lib64", b"/bin", b"/sbin", b"/opt", b"/root",
        b"/srv",
    ];
    const CACHES: [&[u8]; 12] = [
        b".cache",
        b".npm",
        b".cargo",
        b".rustup",
        b".local",
        b".m2",
        b".gradle",
        b".pnpm-store",
        b".yarn",
        b".bun",
        b".deno",
        b".nuget",
    ];
    if SYSTEM.iter().any(|dir| under(area, dir))
        || (under(area, b"/var") && !under(area, b"/var/tmp"))
    {
        return 15;
    }
    let parts: Vec<&[u8]> = area
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() == 3 && parts[0] == b"home" && CACHES.contains(&parts[2]) {
        return -15;
    }
    0
}

/// Replaces what looks generated — runs of eight or more letters and digits with a digit
/// among them (`go-build1234567`, `crate-1a2b3c4d`), or six or more digits — with `*`.
fn generalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let digits = run.chars().filter(char::is_ascii_digit).count();
        let generated = (run.len() >= 8 && digits > 0) || (run.len() >= 6 && digits == run.len());
        out.push_str(if generated { "*" } else { run });
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests;
