//! The files an agent's `sensitive` lists name, found on disk by device and inode when its
//! scope is built. Read under another name — a hard link planted in the worktree, a bind mount
//! of the secrets' directory in another mount namespace — a secret is still that secret, and
//! the open event carries the device and inode of what was really opened.

use std::{
    ffi::OsStr,
    os::unix::{
        ffi::{OsStrExt as _, OsStringExt as _},
        fs::MetadataExt as _,
    },
    path::Path,
    time::{Duration, Instant},
};

use crate::fasthash::HashMap;

/// Directory entries looked at per scope, at most, and for how long: browser profiles hold
/// thousands of files, and a scope is built on the daemon's loop (at registration and reload),
/// where events wait meanwhile.
const MAX_VISITED: usize = 4096;
const MAX_TIME: Duration = Duration::from_millis(5);
/// Directory levels below a pattern's literal prefix, at most (for `**`).
const MAX_DEPTH: usize = 8;

#[derive(Debug, Default)]
pub struct SecretFiles {
    /// (device as `stat` reports it, inode) → the path that made it a secret.
    by_inode: HashMap<(u64, u64), Vec<u8>>,
}

impl SecretFiles {
    /// Walks each of `prefixes` (a file or a directory tree, as deep as its bound says, `None`
    /// for any depth) and keeps the regular files for which `is_secret` holds. Symlinks are
    /// not followed: what they point to is found by its own name or not at all.
    pub fn find(prefixes: &[(Vec<u8>, Option<usize>)], is_secret: impl Fn(&[u8]) -> bool) -> Self {
        let mut by_inode = HashMap::default();
        let mut visited = 0;
        let start = Instant::now();
        let mut pending: Vec<(Vec<u8>, usize)> = prefixes
            .iter()
            .map(|(path, depth)| (path.clone(), depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH)))
            .collect();
        // `levels`: how many directory levels below `path` may still hold a match.
        while let Some((path, levels)) = pending.pop() {
            if visited == MAX_VISITED || start.elapsed() > MAX_TIME {
                log::debug!(
                    "sensitive files: stopped after {visited} entries in {:?}; the rest is \
                     matched by name only",
                    start.elapsed()
                );
                break;
            }
            visited += 1;
            let Ok(meta) = std::fs::symlink_metadata(OsStr::from_bytes(&path)) else {
                continue;
            };
            if meta.is_file() {
                if is_secret(&path) {
                    by_inode.insert((meta.dev(), meta.ino()), path);
                }
            } else if meta.is_dir() && levels > 0 {
                let Ok(entries) = std::fs::read_dir(Path::new(OsStr::from_bytes(&path))) else {
                    continue;
                };
                for entry in entries.flatten() {
                    pending.push((entry.path().into_os_string().into_vec(), levels - 1));
                }
            }
        }
        Self { by_inode }
    }

    /// The name under which the file with this device and inode is a secret.
    pub fn name_of(&self, dev: u64, ino: u64) -> Option<&[u8]> {
        if ino == 0 {
            return None;
        }
        self.by_inode.get(&(dev, ino)).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_found_by_inode_under_any_name() {
        let dir = std::env::temp_dir().join(format!("secret-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("keys/deep")).unwrap();
        std::fs::write(dir.join("keys/id"), "k").unwrap();
        std::fs::write(dir.join("keys/id.pub"), "p").unwrap();
        std::fs::write(dir.join("keys/deep/token"), "t").unwrap();
        std::fs::hard_link(dir.join("keys/id"), dir.join("innocent.txt")).unwrap();
        let keys = dir.join("keys").into_os_string().into_vec();

        let found = SecretFiles::find(&[(keys, None)], |p| !p.ends_with(b".pub"));
        let name = |p: &str| {
            let meta = std::fs::metadata(dir.join(p)).unwrap();
            found.name_of(meta.dev(), meta.ino()).map(|n| n.to_vec())
        };
        let id = dir.join("keys/id").into_os_string().into_vec();
        assert_eq!(name("innocent.txt"), Some(id.clone()));
        assert_eq!(name("keys/id"), Some(id));
        assert!(name("keys/deep/token").is_some());
        assert_eq!(name("keys/id.pub"), None);
        assert_eq!(found.by_inode.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
