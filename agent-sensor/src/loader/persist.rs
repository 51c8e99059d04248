//! Persistence: with `--persist DIR` tracking, capture into the ring buffer and in-kernel
//! enforcement go on while the daemon is down (a crash, `kill -9`, an upgrade).
//!
//! - Maps are pinned in bpffs under DIR/maps; the next daemon reuses them (the ring buffer
//!   still holds what happened meanwhile).
//! - Links are held by a small keeper process forked from the daemon once everything is
//!   attached (written down in /run/agent-sensor/keepers/); `kill -9` of the daemon leaves it running. (Pinning
//!   the links in bpffs would do too, but some hosts' BPF-LSM policy refuses BPF_OBJ_PIN on
//!   links with EPERM — the CI machines do — while a held descriptor works everywhere. Link
//!   pins found under DIR/links, left by other tools or builds, are retired like keepers.)
//! - The next daemon attaches its own programs first and only then retires its predecessor's
//!   links or keeper: there is no window without programs.
//! - `agent-sensor uninstall` (or a stop with `--detach`) removes everything.

use std::path::{Path, PathBuf};

use aya::{maps::MapInfo, programs::links::PinnedLink, EbpfLoader};

use super::LoadError;
use crate::system;

/// Maps whose contents must outlive a daemon: tracking, the ring, enforcement, counters.
/// (Per-CPU scratch maps are not state: each load has its own.)
pub const PERSISTENT_MAPS: [&str; 20] = [
    "EVENTS",
    "RING_READER_WAITING",
    "TRACKED_TASKS",
    "TRACKING_GENERATION",
    "TRACKED_CGROUPS",
    "DROPS",
    "FILTERED",
    "CONFIG",
    "SYSCALL_SPECS",
    "SOCKETS",
    "SOCK_OWNERS",
    "DISCOVERY_COMMS",
    "EGRESS_AGENTS",
    "EGRESS_ALLOW4",
    "EGRESS_ALLOW6",
    "ALLOWED_NAMES",
    "DNS_RESOLVERS",
    "KILL_ON_ACCESS",
    "FORBIDDEN_EXEC",
    "TAIL",
];

/// Where this daemon's pins go; links carry the daemon's pid so that the next daemon can tell
/// its predecessor's from its own.
#[derive(Debug, Clone)]
pub struct Pins {
    dir: PathBuf,
    tag: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Pins {
        path: path.to_path_buf(),
        source,
    }
}

impl Pins {
    /// Mounts bpffs if needed and creates `dir/maps` and `dir/links`.
    pub fn prepare(dir: &Path) -> Result<Self, LoadError> {
        system::ensure_mounted(system::BPFFS)?;
        for sub in ["maps", "links"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tag: std::process::id().to_string(),
        })
    }

    /// Reuse (or create and pin) every persistent map. Pins of maps this version no longer
    /// has (an older daemon's) are removed: each would hold its map's memory in the kernel.
    /// So are pins of maps whose shape this version changed: `object`'s programs would be
    /// refused against them (the map starts empty instead).
    pub fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>, object: &[u8]) {
        let maps = self.dir.join("maps");
        for stale in stale_map_pins(&maps) {
            if std::fs::remove_file(&stale).is_ok() {
                log::info!(
                    "removed the pin of a map this version no longer has: {}",
                    stale.display()
                );
            }
        }
        let built = built_shapes(object);
        for name in PERSISTENT_MAPS {
            let pin = maps.join(name);
            let pinned = MapInfo::from_pin(&pin).ok().map(|info| Shape {
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
            });
            if let (Some(pinned), Some(built)) = (pinned, built.get(name)) {
                if let Some(change) = shape_change(name, pinned, *built) {
                    if std::fs::remove_file(&pin).is_ok() {
                        log::warn!(
                            "removed the pin of {}: {change} in this version; the map starts empty",
                            pin.display()
                        );
                    }
                }
            }
            loader.map_pin_path(name, pin);
        }
    }

    /// Forks the keeper: a copy of this process that holds every descriptor open (the links
    /// are what matters) until the next daemon or `uninstall` ends it. Call it once every
    /// program is attached, before any socket is opened.
    pub fn spawn_keeper(&self) -> Result<u32, LoadError> {
        let keepers = keeper_dir(&self.dir);
        std::fs::create_dir_all(&keepers).map_err(io_err(&keepers))?;
        let pidfile = keepers.join(format!("keeper.{}", self.tag));
        // SAFETY: the child only calls async-signal-safe functions (setsid, open, dup2, prctl,
        // signal, pause) and never returns into Rust code that could take a lock.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(LoadError::Pins {
                path: pidfile,
                source: std::io::Error::last_os_error(),
            });
        }
        if pid == 0 {
            // SAFETY: as above.
            unsafe { keeper_main() };
        }
        std::fs::write(&pidfile, pid.to_string()).map_err(io_err(&pidfile))?;
        Ok(pid as u32)
    }

    /// Detaches the links of earlier daemons (after this one's are attached): their pins and
    /// their keepers.
    pub fn retire_predecessors(&self) -> usize {
        let mut retired = 0;
        for path in link_pins(&self.dir) {
            let ours = path.extension().and_then(|e| e.to_str()) == Some(self.tag.as_str());
            if !ours && unpin(&path) {
                retired += 1;
            }
        }
        for (pidfile, pid) in keepers(&self.dir) {
            if pidfile.extension().and_then(|e| e.to_str()) != Some(self.tag.as_str()) {
                stop_keeper(&pidfile, pid);
                retired += 1;
            }
        }
        retired
    }

    /// Removes this daemon's links and every map pin: nothing of the sensor stays in the kernel
    /// once the daemon's descriptors close.
    pub fn remove(&self) {
        remove_all(&self.dir);
    }
}

fn link_pins(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("links"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Unpins a link; its program detaches when the last reference (the pin) goes.
fn unpin(path: &Path) -> bool {
    match PinnedLink::from_pin(path) {
        Ok(link) => link.unpin().is_ok(),
        // Not a link (or already gone): remove the file anyway.
        Err(_) => std::fs::remove_file(path).is_ok(),
    }
}

/// The keeper's comm: what `stop_keeper` checks before signalling a pid from a file.
const KEEPER_COMM: &[u8] = b"as-link-keeper\0";

/// The keeper's whole life: detach from the daemon's session and descriptors 0–2, name
/// itself, and wait (holding every descriptor it inherited, the links among them).
unsafe fn keeper_main() -> ! {
    // SAFETY (whole body): async-signal-safe calls only.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        libc::prctl(libc::PR_SET_NAME, KEEPER_COMM.as_ptr());
        // A keeper must not die with the daemon's terminal or its stop signals.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        loop {
            libc::pause();
        }
    }
}

/// Where the keepers of the pins in `dir` are written down (bpffs holds only BPF objects).
fn keeper_dir(dir: &Path) -> PathBuf {
    let name = dir.to_string_lossy().replace('/', "_");
    Path::new("/run/agent-sensor/keepers").join(name.trim_start_matches('_'))
}

/// The file whose lock claims the pins in `dir` for one daemon (see `lock`), beside the
/// keepers' directory: bpffs holds only BPF objects, and `remove_all` removes that directory.
pub fn lock_file(dir: &Path) -> PathBuf {
    let keepers = keeper_dir(dir);
    let mut name = keepers.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    keepers.with_file_name(name)
}

/// `keeper.<pid of the daemon that forked it>` files: (path, keeper pid).
fn keepers(dir: &Path) -> Vec<(PathBuf, i32)> {
    std::fs::read_dir(keeper_dir(dir))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("keeper."))
                })
                .filter_map(|p| {
                    let pid = std::fs::read_to_string(&p).ok()?.trim().parse().ok()?;
                    Some((p, pid))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Ends a keeper (only if that pid still is one: pids get reused) and removes its file.
fn stop_keeper(pidfile: &Path, pid: i32) {
    let comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
    let expected = &KEEPER_COMM[..KEEPER_COMM.len() - 1];
    if comm.strip_suffix(b"\n").unwrap_or(&comm) == expected {
        // SAFETY: signalling a process verified to be a keeper.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_file(pidfile);
}

/// `agent-sensor uninstall`: every link pin, keeper and map pin under `dir`, then `dir`
/// itself. Returns the links (pins and keepers) and maps removed.
pub fn remove_all(dir: &Path) -> (usize, usize) {
    let mut links = link_pins(dir).iter().filter(|p| unpin(p)).count();
    for (pidfile, pid) in keepers(dir) {
        stop_keeper(&pidfile, pid);
        links += 1;
    }
    let maps = std::fs::read_dir(dir.join("maps"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| std::fs::remove_file(e.path()).is_ok())
                .count()
        })
        .unwrap_or(0);
    for sub in ["links", "maps", ""] {
        let _ = std::fs::remove_dir(dir.join(sub));
    }
    let _ = std::fs::remove_dir(keeper_dir(dir));
    (links, maps)
}

/// What the programs built against a map assume of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

/// The shapes of the maps `object` defines, by name (none if it does not parse: the load
/// that follows says why).
fn built_shapes(object: &[u8]) -> std::collections::HashMap<String, Shape> {
    let Ok(parsed) = aya_obj::Object::parse(object) else {
        return Default::default();
    };
    parsed
        .maps
        .iter()
        .map(|(name, map)| {
            let shape = Shape {
                key_size: map.key_size(),
                value_size: map.value_size(),
                max_entries: map.max_entries(),
            };
            (name.clone(), shape)
        })
        .collect()
}

/// How a pinned map differs from the one this version's programs were built against, if it
/// does in a way they would notice. The ring buffer's size is the daemon's option, not the
/// build's: a ring of another size serves as well.
fn shape_change(name: &str, pinned: Shape, built: Shape) -> Option<String> {
    if pinned.key_size != built.key_size {
        return Some(format!(
            "keys of {} bytes are {} bytes",
            pinned.key_size, built.key_size
        ));
    }
    if pinned.value_size != built.value_size {
        return Some(format!(
            "values of {} bytes are {} bytes",
            pinned.value_size, built.value_size
        ));
    }
    if name != "EVENTS" && pinned.max_entries != built.max_entries {
        return Some(format!(
            "{} entries are {}",
            pinned.max_entries, built.max_entries
        ));
    }
    None
}

/// Pins in `maps` that name no map of `PERSISTENT_MAPS`.
fn stale_map_pins(maps: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(maps) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            !name
                .to_str()
                .is_some_and(|name| PERSISTENT_MAPS.contains(&name))
        })
        .map(|entry| entry.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_map_of_another_shape_is_a_change_and_a_resized_ring_is_not() {
        let built = Shape {
            key_size: 4,
            value_size: 16,
            max_entries: 1,
        };
        assert_eq!(shape_change("CONFIG", built, built), None);
        let old_config = Shape {
            value_size: 8,
            ..built
        };
        assert_eq!(
            shape_change("CONFIG", old_config, built).as_deref(),
            Some("values of 8 bytes are 16 bytes")
        );
        let resized = Shape {
            max_entries: 4,
            ..built
        };
        assert!(shape_change("DROPS", resized, built).is_some());
        assert_eq!(shape_change("EVENTS", resized, built), None);
    }

    #[test]
    fn the_built_object_defines_every_persistent_map() {
        if super::super::SENSOR_OBJECT.is_empty() {
            return; // AYA_BUILD_SKIP: a stub object.
        }
        let shapes = built_shapes(super::super::SENSOR_OBJECT);
        for name in PERSISTENT_MAPS {
            assert!(
                shapes.contains_key(name),
                "{name} not in {:?}",
                shapes.keys()
            );
        }
        assert_eq!(
            shapes["CONFIG"].value_size as usize,
            std::mem::size_of::<agent_sensor_common::SensorConfig>()
        );
    }

    #[test]
    fn the_lock_of_a_pin_dir_is_beside_its_keepers_not_among_them() {
        let dir = Path::new("/sys/fs/bpf/agent-sensor");
        assert_eq!(
            keeper_dir(dir),
            Path::new("/run/agent-sensor/keepers/sys_fs_bpf_agent-sensor")
        );
        assert_eq!(
            lock_file(dir),
            Path::new("/run/agent-sensor/keepers/sys_fs_bpf_agent-sensor.lock")
        );
    }

    #[test]
    fn pins_of_maps_a_version_dropped_are_stale_and_the_others_are_not() {
        let maps = std::env::temp_dir().join(format!("agent-sensor-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&maps);
        std::fs::create_dir_all(&maps).unwrap();
        for name in ["EVENTS", "TRACKED_TASKS", "PENDING"] {
            std::fs::write(maps.join(name), b"").unwrap();
        }
        assert_eq!(stale_map_pins(&maps), vec![maps.join("PENDING")]);
        std::fs::remove_dir_all(&maps).unwrap();
        assert!(stale_map_pins(&maps).is_empty());
    }
}
