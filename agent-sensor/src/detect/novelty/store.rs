//! Novelty profiles on disk: `<dir>/<profile>.json`, one per profile, each written to a
//! temporary file first and renamed into place so a crash never leaves half a profile.

use std::{
    collections::HashMap,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::mpsc,
};

use serde::{Deserialize, Serialize};

use super::Profile;

/// Bumped when the stored form changes incompatibly.
const VERSION: u32 = 1;

#[derive(Serialize)]
struct StoredRef<'a> {
    version: u32,
    #[serde(flatten)]
    profile: &'a Profile,
}

#[derive(Deserialize)]
struct Stored {
    version: u32,
    #[serde(flatten)]
    profile: Profile,
}

/// Every profile in `dir`. A file that cannot be read as a profile is renamed to
/// `<name>.corrupt` (kept for inspection) and its profile starts afresh.
pub fn load_all(dir: &Path) -> io::Result<HashMap<String, Profile>> {
    let mut profiles = HashMap::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(profile_name)
        else {
            continue;
        };
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                if stored.version != VERSION {
                    return Err(format!("unknown version {}", stored.version));
                }
                Ok(stored.profile)
            });
        match parsed {
            Ok(profile) => {
                profiles.insert(name, profile);
            }
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                log::warn!(
                    "novelty profile {} is unreadable ({e}); moved to {} and learning afresh",
                    path.display(),
                    aside.display()
                );
                fs::rename(&path, &aside)?;
            }
        }
    }
    Ok(profiles)
}

pub fn save(dir: &Path, name: &str, profile: &Profile) -> io::Result<()> {
    write(dir, name, &encode(profile)?)
}

/// The stored form of `profile`.
pub fn encode(profile: &Profile) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(&StoredRef {
        version: VERSION,
        profile,
    })
    .map_err(io::Error::other)
}

/// Writes an encoded profile into place (synced: a slow disk makes this take milliseconds).
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_atomic(&dir.join(format!("{}.json", file_stem(name))), bytes)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension(format!("json.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // The rename is durable once the directory is; failing to sync it is not worth an error.
    if let Some(dir) = path.parent() {
        let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// The thread that writes autosaved profiles, off the run loop.
#[derive(Debug)]
pub struct Writer {
    queue: Option<mpsc::SyncSender<(String, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Profiles waiting to be written; more wait for the next autosave.
const QUEUED: usize = 16;

impl Writer {
    pub fn start(dir: PathBuf) -> Self {
        let (queue, queued) = mpsc::sync_channel::<(String, Vec<u8>)>(QUEUED);
        let thread = std::thread::Builder::new()
            .name("novelty-writer".into())
            .spawn(move || {
                for (name, bytes) in queued {
                    if let Err(e) = write(&dir, &name, &bytes) {
                        log::warn!("cannot save novelty profile {name}: {e}");
                    }
                }
            });
        match thread {
            Ok(thread) => Self {
                queue: Some(queue),
                thread: Some(thread),
            },
            Err(e) => {
                log::warn!("no novelty writer thread ({e}): profiles are saved at stop only");
                Self {
                    queue: None,
                    thread: None,
                }
            }
        }
    }

    /// Queues a profile; false when the queue is full (or the thread is gone).
    pub fn queue(&self, name: &str, bytes: Vec<u8>) -> bool {
        self.queue
            .as_ref()
            .is_some_and(|q| q.try_send((name.to_string(), bytes)).is_ok())
    }
}

/// Dropping a writer waits until everything it queued is written, whoever drops it (a save, a
/// detector replaced or dropped on an error path): a thread left writing would put files back
/// into a directory its owner has moved on from, or removed (the unit tests' temporary ones
/// were left behind so).
impl Drop for Writer {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Profile names come from the policy; in file names every byte outside `[A-Za-z0-9_-]` (and
/// a dot anywhere but first) is `%XX`, so a name can neither leave the directory nor collide.
fn file_stem(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn profile_name(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = stem.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_round_trip_and_stay_in_the_directory() {
        for name in [
            "default",
            "claude-code",
            "a/../../etc",
            ".hidden",
            "ünï",
            "a%b",
        ] {
            let stem = file_stem(name);
            assert!(!stem.contains('/') && !stem.starts_with('.'), "{stem}");
            assert_eq!(profile_name(&stem).as_deref(), Some(name));
        }
    }

    #[test]
    fn a_dropped_writer_has_written_all_it_queued() {
        let dir = crate::detect::testkit::TempDir::new("novelty-writer-drop");
        let writer = Writer::start(dir.0.clone());
        // Each write syncs a file and its directory: the thread is still busy when the
        // writer is dropped.
        let names: Vec<String> = (0..QUEUED).map(|i| format!("p{i}")).collect();
        for name in &names {
            assert!(writer.queue(name, b"{}".to_vec()));
        }
        drop(writer);
        for name in &names {
            assert!(dir.0.join(format!("{name}.json")).exists(), "{name}");
        }
    }
}
