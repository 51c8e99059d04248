//! Workload (d): a realistic coding-agent session. A local bare git repository holding a small
//! Rust crate (no dependencies) is created once; each session clones it, edits two files,
//! builds and tests the crate offline, greps the tree and commits — what an agent does in a
//! short task, process tree and all (git, cargo, rustc, the test binary, grep).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// The session, run by `/bin/sh -c` in an empty worktree directory, with `$ORIGIN` the bare
/// repository. It is cloned through `file://`, as from a server: a clone of the plain path
/// hard-links the repository's objects, which the sensor reports, per object, as
/// `isolation.write_outside_worktree` (a link into the worktree to files outside it).
pub const SCRIPT: &str = r#"set -e
git clone -q "file://$ORIGIN" repo
cd repo
sed -i 's/pub const GREETING: &str = "hello";/pub const GREETING: \&str = "hello, agent";/' src/lib.rs
cat >> src/lib.rs <<'EOF'

/// Counts the lines of `text` that contain `needle`.
pub fn count_matching(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

#[cfg(test)]
mod added_tests {
    use super::*;

    #[test]
    fn counts_matching_lines() {
        assert_eq!(count_matching("a\nab\nb", "a"), 2);
    }
}
EOF
printf '\n## Changes\n\nAdded count_matching.\n' >> README.md
cargo build --offline --quiet
cargo test --offline --quiet >/dev/null 2>&1
grep -rn "pub fn" src >/dev/null
git grep -n GREETING >/dev/null
git status --porcelain >/dev/null
git diff --stat >/dev/null
git add -A
git commit -q -m "Add count_matching"
git log --oneline -n 2 >/dev/null
"#;

/// The crate in the repository: a few functions and their tests.
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[package]\nname = \"wordstat\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    ),
    (".gitignore", "/target\n"),
    ("README.md", "# wordstat\n\nCounts words and lines.\n"),
    (
        "src/lib.rs",
        r#"//! Word and line statistics.

pub const GREETING: &str = "hello";

/// Words separated by whitespace.
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The longest word, the first of equals.
pub fn longest_word(text: &str) -> Option<&str> {
    text.split_whitespace()
        .fold(None, |best: Option<&str>, w| match best {
            Some(b) if b.len() >= w.len() => Some(b),
            _ => Some(w),
        })
}

/// How often each word occurs, most frequent first, then alphabetically.
pub fn frequencies(text: &str) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    let mut list: Vec<(String, usize)> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words() {
        assert_eq!(word_count("a b  c\nd"), 4);
        assert_eq!(word_count(""), 0);
    }

    #[test]
    fn finds_the_longest_word() {
        assert_eq!(longest_word("a bbb cc ddd"), Some("bbb"));
        assert_eq!(longest_word(" "), None);
    }

    #[test]
    fn orders_frequencies() {
        let f = frequencies("b a B c a b");
        assert_eq!(f[0], ("b".to_string(), 3));
        assert_eq!(f[1], ("a".to_string(), 2));
    }

    #[test]
    fn greets() {
        assert!(GREETING.starts_with("hello"));
    }
}
"#,
    ),
    (
        "src/main.rs",
        r#"use std::io::Read;

fn main() {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).expect("stdin");
    println!("{} words", wordstat::word_count(&text));
    for (word, n) in wordstat::frequencies(&text).iter().take(5) {
        println!("{n:5} {word}");
    }
}
"#,
    ),
];

/// Creates `dir/origin.git` holding the crate, one commit; returns its path.
pub fn create_origin(dir: &Path) -> Result<PathBuf> {
    let seed = dir.join("seed");
    std::fs::create_dir_all(seed.join("src"))?;
    for (path, content) in FILES {
        std::fs::write(seed.join(path), content)?;
    }
    git(&seed, &["init", "-q"])?;
    git(&seed, &["add", "-A"])?;
    git(&seed, &["commit", "-q", "-m", "wordstat"])?;
    let origin = dir.join("origin.git");
    git(
        dir,
        &[
            "clone",
            "-q",
            "--bare",
            &seed.display().to_string(),
            &origin.display().to_string(),
        ],
    )?;
    std::fs::remove_dir_all(&seed)?;
    Ok(origin)
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let output = identity(Command::new("git").args(args).current_dir(dir))
        .output()
        .context("cannot run git")?;
    if !output.status.success() {
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn identity(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
}

/// Completes `program` (`/bin/sh`, or `agent-sensor exec … -- /bin/sh`) into the session in
/// `worktree` (an empty directory). The environment is the bench's, without what cargo set
/// for xtask itself (CARGO_*, RUSTFLAGS…), which would leak into the session's cargo.
pub fn command(mut program: Command, origin: &Path, worktree: &Path) -> Command {
    program.arg("-c").arg(SCRIPT);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if (key_text.starts_with("CARGO_") && key_text != "CARGO_HOME")
            || key_text.starts_with("RUSTC")
            || key_text.contains("RUSTFLAGS")
            || key_text == "CARGO"
        {
            program.env_remove(&key);
        }
    }
    program
        .env("ORIGIN", origin)
        .current_dir(worktree)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    identity(&mut program);
    program
}

/// What one session took.
#[derive(Clone, Copy, Debug)]
pub struct SessionTime {
    pub wall: Duration,
    /// User plus system CPU of the session's processes (the shell and every descendant it
    /// waited for, which is all of them: git, cargo, rustc, the tests), in seconds.
    pub cpu_seconds: f64,
}

/// Runs a session command to completion.
pub fn time(mut cmd: Command) -> Result<SessionTime> {
    use std::{io::Read, os::unix::process::ExitStatusExt};

    let start = Instant::now();
    let mut child = cmd.spawn().context("cannot start the session")?;
    // Both pipes are read at once, as `Command::output` does: a session that fills one
    // while we block on the other would never finish.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text
        })
    });
    let mut stdout = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_end(&mut stdout);
    }
    let stderr = stderr
        .map(|reader| reader.join().unwrap_or_default())
        .unwrap_or_default();
    // wait4 rather than `Child::wait`: it also gives the CPU the session's process tree used
    // (rusage counts the children each process waited for).
    let mut status = 0;
    let usage = loop {
        // SAFETY: rusage is plain integers, for which zero is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 fills the status and rusage we own, for our own child.
        if unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) } >= 0 {
            break usage;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            bail!("cannot wait for the session: {error}");
        }
    };
    let wall = start.elapsed();
    let status = std::process::ExitStatus::from_raw(status);
    if !status.success() {
        bail!(
            "the session failed ({status}):\n{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(SessionTime {
        wall,
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    })
}
