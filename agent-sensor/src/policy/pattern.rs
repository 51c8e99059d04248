//! Path patterns: globs rooted at `/`, `~`, `{worktree}` or `{tmp}`.
//!
//! A pattern is split into its root and a glob relative to it, and globs are compiled per root.
//! Matching strips the agent's root directory off the path as bytes and matches the rest: a
//! home or worktree that is not UTF-8 or holds glob syntax (`/work/proj[1]`) is still matched
//! literally, and one compiled set serves every agent of a profile.

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::Path};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::memo::PathMemo;

/// What a pattern is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Filesystem,
    Home,
    Worktree,
    Tmp,
}

impl Root {
    const ALL: [Root; 4] = [Root::Filesystem, Root::Home, Root::Worktree, Root::Tmp];

    fn index(self) -> usize {
        self as usize
    }
}

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub root: Root,
    /// Relative to the root, without a leading `/`; empty for the root itself.
    pub glob: String,
    /// `!pattern`: excludes what it matches.
    pub excluded: bool,
}

const PLACEHOLDERS: [(&str, Root); 2] = [("{worktree}", Root::Worktree), ("{tmp}", Root::Tmp)];

/// Parses and checks one pattern as written in the policy.
pub fn parse(text: &str) -> Result<Pattern, String> {
    let (excluded, body) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (root, rest) = split_root(body)?;
    let glob = rest
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string();
    if let Some((placeholder, _)) = PLACEHOLDERS.iter().find(|(p, _)| glob.contains(p)) {
        return Err(format!("{placeholder} may only start a pattern"));
    }
    build_glob(&glob).map_err(|e| format!("invalid glob: {}", e.kind()))?;
    Ok(Pattern {
        root,
        glob,
        excluded,
    })
}

fn split_root(body: &str) -> Result<(Root, &str), String> {
    if body == "~" || body.starts_with("~/") {
        return Ok((Root::Home, &body[1..]));
    }
    if body.starts_with('~') {
        return Err("`~user` is not supported: `~` is the agent user's home".into());
    }
    for (placeholder, root) in PLACEHOLDERS {
        if let Some(rest) = body.strip_prefix(placeholder) {
            if rest.is_empty() || rest.starts_with('/') {
                return Ok((root, rest));
            }
            return Err(format!("{placeholder} must be followed by `/`"));
        }
    }
    if body.starts_with('/') {
        return Ok((Root::Filesystem, body));
    }
    if body == "**" || body.starts_with("**/") {
        return Ok((Root::Filesystem, body));
    }
    Err("a path pattern starts with `/`, `~/`, `{worktree}`, `{tmp}` or `**/`".into())
}

/// `*` and `?` stay within one path component; `**` crosses them.
fn build_glob(glob: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// The directories the roots stand for, for one agent (bytes, as paths in events are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    pub home: Vec<u8>,
    pub worktree: Vec<u8>,
    pub tmp: Vec<Vec<u8>>,
}

impl Roots {
    /// Without allocating: this runs for every path an agent touches.
    fn dirs(&self, root: Root) -> impl Iterator<Item = &[u8]> {
        let single: Option<&[u8]> = match root {
            Root::Filesystem => Some(b"/"),
            Root::Home => Some(&self.home),
            Root::Worktree => Some(&self.worktree),
            Root::Tmp => None,
        };
        let several: &[Vec<u8>] = match root {
            Root::Tmp => &self.tmp,
            _ => &[],
        };
        single.into_iter().chain(several.iter().map(Vec::as_slice))
    }
}

/// The part of absolute `path` below `dir` (empty for `dir` itself), compared component-wise.
/// An empty `dir` (a root the agent has none of) holds nothing.
pub fn relative_to<'p>(path: &'p [u8], dir: &[u8]) -> Option<&'p [u8]> {
    if dir.is_empty() || !path.starts_with(b"/") {
        return None;
    }
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    let rest = path.strip_prefix(dir)?;
    match rest {
        [] => Some(rest),
        [b'/', tail @ ..] => Some(tail),
        _ => None,
    }
}

/// Globs of one root, with the index of the source pattern of each.
#[derive(Debug, Clone)]
struct RootedGlobs {
    set: GlobSet,
    sources: Vec<usize>,
}

/// One list of patterns (a profile's `sensitive`, say), compiled.
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    /// The patterns as written, for reporting which one matched.
    sources: Vec<String>,
    included: [Option<RootedGlobs>; 4],
    excluded: [Option<RootedGlobs>; 4],
    host_paths: HostPathCache,
}

/// Answers for paths that no pattern rooted at an agent's home, worktree or temp dirs can
/// see: those depend on the path alone, whichever agent asks, and builds open the same files
/// over and over. Glob matching was a seventh of the daemon's work per file event; a repeat is
/// now a hash lookup.
#[derive(Debug, Clone)]
struct HostPathCache(PathMemo<Option<usize>>);

/// Paths remembered per set before the cache starts over (bounded memory, a few hundred KiB).
const HOST_PATHS_KEPT: usize = 2048;

impl Default for HostPathCache {
    fn default() -> Self {
        Self(PathMemo::new(HOST_PATHS_KEPT))
    }
}

impl PatternSet {
    /// Compiles a list; fails with the first bad pattern (lists are validated before).
    pub fn compile(patterns: &[String]) -> Result<Self, String> {
        let parsed = patterns
            .iter()
            .map(|p| parse(p).map_err(|e| format!("{p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut set = Self {
            sources: patterns.to_vec(),
            ..Self::default()
        };
        for root in Root::ALL {
            set.included[root.index()] = rooted_globs(&parsed, root, false)?;
            set.excluded[root.index()] = rooted_globs(&parsed, root, true)?;
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The first pattern (as written) that includes `path`, unless an exclusion matches it.
    pub fn matching(&self, path: &[u8], roots: &Roots) -> Option<&str> {
        let source = if self.agent_roots_reach(path, roots) {
            self.match_now(path, roots)
        } else {
            self.host_answer(path, roots)
        };
        source.map(|source| self.sources[source].as_str())
    }

    pub fn matches(&self, path: &[u8], roots: &Roots) -> bool {
        if self.agent_roots_reach(path, roots) {
            // Uncached, so the cheaper question: is there a match at all, not which is first.
            return any_match(&self.included, path, roots)
                && !any_match(&self.excluded, path, roots);
        }
        self.host_answer(path, roots).is_some()
    }

    /// The answer for a path no agent-rooted pattern of this set can see, remembered.
    fn host_answer(&self, path: &[u8], roots: &Roots) -> Option<usize> {
        self.host_paths
            .0
            .get_or(path, || self.match_now(path, roots))
    }

    fn match_now(&self, path: &[u8], roots: &Roots) -> Option<usize> {
        let source = first_match(&self.included, path, roots)?;
        if any_match(&self.excluded, path, roots) {
            return None;
        }
        Some(source)
    }

    /// Whether a pattern of this set rooted at the agent's home, worktree or temp dirs can
    /// see `path`: then the answer depends on the agent, not on the path alone.
    fn agent_roots_reach(&self, path: &[u8], roots: &Roots) -> bool {
        [Root::Home, Root::Worktree, Root::Tmp]
            .into_iter()
            .any(|root| {
                (self.included[root.index()].is_some() || self.excluded[root.index()].is_some())
                    && roots.dirs(root).any(|dir| relative_to(path, dir).is_some())
            })
    }

    /// Where the files the included patterns can match begin, for finding them on disk: the
    /// literal part (up to the first component with glob syntax) of each pattern rooted at `/`
    /// or `~`, and how many levels below it a match can lie (`None`: any, the pattern has
    /// `**`). Patterns that match anywhere (`**/.env`), under the worktree or temp dirs, or in
    /// /proc, /sys and /dev are left out.
    pub fn literal_prefixes(&self, roots: &Roots) -> Vec<(Vec<u8>, Option<usize>)> {
        let mut out = Vec::new();
        for pattern in self.sources.iter().filter_map(|s| parse(s).ok()) {
            let base: &[u8] = match pattern.root {
                _ if pattern.excluded => continue,
                Root::Filesystem => b"",
                Root::Home if !roots.home.is_empty() => {
                    roots.home.strip_suffix(b"/").unwrap_or(&roots.home)
                }
                _ => continue,
            };
            let components: Vec<&str> = pattern.glob.split('/').collect();
            let literal: Vec<&str> = components
                .iter()
                .copied()
                .take_while(|c| !c.is_empty() && !c.contains(['*', '?', '[', '{', '\\']))
                .collect();
            let rest = &components[literal.len()..];
            let depth = (!rest.contains(&"**")).then_some(rest.len());
            if literal.is_empty() && pattern.root == Root::Filesystem {
                continue;
            }
            if pattern.root == Root::Filesystem
                && matches!(literal.first(), Some(&("proc" | "sys" | "dev")))
            {
                continue;
            }
            let mut prefix = base.to_vec();
            for component in literal {
                prefix.push(b'/');
                prefix.extend_from_slice(component.as_bytes());
            }
            if !out.iter().any(|(p, d)| *p == prefix && *d == depth) {
                out.push((prefix, depth));
            }
        }
        out
    }
}

fn rooted_globs(
    patterns: &[Pattern],
    root: Root,
    excluded: bool,
) -> Result<Option<RootedGlobs>, String> {
    let mut builder = GlobSetBuilder::new();
    let mut sources = Vec::new();
    for (i, pattern) in patterns.iter().enumerate() {
        if pattern.root == root && pattern.excluded == excluded {
            builder.add(build_glob(&pattern.glob).map_err(|e| e.to_string())?);
            sources.push(i);
        }
    }
    if sources.is_empty() {
        return Ok(None);
    }
    let set = builder.build().map_err(|e| e.to_string())?;
    Ok(Some(RootedGlobs { set, sources }))
}

fn candidates<'a>(
    globs: &'a [Option<RootedGlobs>; 4],
    path: &'a [u8],
    roots: &'a Roots,
) -> impl Iterator<Item = (&'a RootedGlobs, &'a Path)> + 'a {
    Root::ALL
        .into_iter()
        .filter_map(move |root| Some((globs[root.index()].as_ref()?, root)))
        .flat_map(move |(rooted, root)| {
            roots.dirs(root).filter_map(move |dir| {
                let rest = relative_to(path, dir)?;
                Some((rooted, Path::new(OsStr::from_bytes(rest))))
            })
        })
}

fn any_match(globs: &[Option<RootedGlobs>; 4], path: &[u8], roots: &Roots) -> bool {
    candidates(globs, path, roots).any(|(g, rest)| g.set.is_match(rest))
}

fn first_match(globs: &[Option<RootedGlobs>; 4], path: &[u8], roots: &Roots) -> Option<usize> {
    candidates(globs, path, roots)
        .filter_map(|(g, rest)| g.set.matches(rest).first().map(|i| g.sources[*i]))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Roots {
        Roots {
            home: b"/home/dev".to_vec(),
            worktree: b"/work/proj[1]".to_vec(),
            tmp: vec![b"/tmp".to_vec(), b"/var/tmp".to_vec()],
        }
    }

    fn set(patterns: &[&str]) -> PatternSet {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        PatternSet::compile(&patterns).unwrap()
    }

    #[test]
    fn parses_roots_and_rejects_the_rest() {
        assert_eq!(parse("~/.ssh/**").unwrap().root, Root::Home);
        assert_eq!(parse("~").unwrap().glob, "");
        assert_eq!(parse("{worktree}/.git/**").unwrap().root, Root::Worktree);
        assert_eq!(parse("{tmp}").unwrap().root, Root::Tmp);
        assert_eq!(parse("**/.env").unwrap().glob, "**/.env");
        assert_eq!(parse("/etc/shadow").unwrap().glob, "etc/shadow");
        assert!(parse("!~/.ssh/known_hosts").unwrap().excluded);
        for bad in [
            ".env",
            "~root/x",
            "{worktree}x",
            "/a/{tmp}/b",
            "/a/[b",
            "{home}/x",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn roots_are_literal_and_component_wise() {
        let s = set(&["{worktree}/**", "~/.cache/**"]);
        assert!(s.matches(b"/work/proj[1]/src/main.rs", &roots()));
        assert!(!s.matches(b"/work/proj1/src/main.rs", &roots()));
        assert!(!s.matches(b"/home/dev/.cachex/a", &roots()));
        assert!(s.matches(b"/home/dev/.cache/pip/x", &roots()));
        assert!(!s.matches(b"relative/.cache/x", &roots()));
    }

    #[test]
    fn star_stays_in_one_component_and_exclusions_win() {
        let s = set(&["/proc/*/environ", "~/.ssh/**", "!~/.ssh/known_hosts*"]);
        assert!(s.matches(b"/proc/12/environ", &roots()));
        assert!(!s.matches(b"/proc/12/task/13/environ", &roots()));
        assert_eq!(
            s.matching(b"/home/dev/.ssh/id_ed25519", &roots()),
            Some("~/.ssh/**")
        );
        assert!(!s.matches(b"/home/dev/.ssh/known_hosts", &roots()));
    }

    #[test]
    fn tmp_stands_for_every_temp_dir_and_bytes_need_not_be_utf8() {
        let s = set(&["{tmp}/**"]);
        assert!(s.matches(b"/var/tmp/x", &roots()));
        assert!(s.matches(b"/tmp/\xff\xfe", &roots()));
        assert!(!s.matches(b"/tmpx/a", &roots()));
        let home = Roots {
            home: b"/home/d\xe9v".to_vec(),
            ..roots()
        };
        assert!(set(&["~/.aws/**"]).matches(b"/home/d\xe9v/.aws/credentials", &home));
    }

    #[test]
    fn literal_prefixes_are_where_fixed_patterns_begin() {
        let set = set(&[
            "~/.aider*",
            "~/.ssh/**",
            "!~/.ssh/*.pub",
            "/etc/shadow",
            "/etc/ssh/ssh_host_*_key",
            "**/.env",
            "/proc/*/environ",
            "{worktree}/.env",
            "~/.aws/credentials",
        ]);
        let prefixes: Vec<(String, Option<usize>)> = set
            .literal_prefixes(&roots())
            .into_iter()
            .map(|(p, depth)| (String::from_utf8(p).unwrap(), depth))
            .collect();
        let expected = [
            // The home itself, but only its entries: `.aider*` is one level deep.
            ("/home/dev", Some(1)),
            ("/home/dev/.ssh", None),
            ("/etc/shadow", Some(0)),
            ("/etc/ssh", Some(1)),
            ("/home/dev/.aws/credentials", Some(0)),
        ];
        assert_eq!(prefixes, expected.map(|(p, d)| (p.to_string(), d)).to_vec());
    }

    #[test]
    fn remembered_answers_are_the_computed_ones_and_never_another_agents() {
        let set = set(&[
            "/etc/shadow",
            "**/.env",
            "~/.ssh/**",
            "{worktree}/secrets/**",
            "{tmp}/drop/*",
            "!/etc/skip/.env",
        ]);
        let agent_a = roots();
        let agent_b = Roots {
            home: b"/home/other".to_vec(),
            worktree: b"/work/b".to_vec(),
            tmp: vec![b"/tmp/b".to_vec()],
        };
        let paths: [&[u8]; 10] = [
            b"/etc/shadow",
            b"/etc/app/.env",
            b"/etc/skip/.env",
            b"/home/dev/.ssh/id_rsa",
            b"/home/other/.ssh/id_rsa",
            b"/work/proj[1]/secrets/key",
            b"/work/b/secrets/key",
            b"/tmp/drop/x",
            b"/tmp/b/drop/x",
            b"relative/.env",
        ];
        // Twice over, agents alternating: the second round answers from what the first left.
        for _ in 0..2 {
            for path in paths {
                for roots in [&agent_a, &agent_b] {
                    let fresh = set.clone();
                    assert_eq!(
                        set.matching(path, roots),
                        fresh
                            .match_now(path, roots)
                            .map(|i| set.sources[i].as_str()),
                        "{}",
                        String::from_utf8_lossy(path)
                    );
                }
            }
        }
        // Another agent's worktree is no secret of this one, whoever asked first.
        assert!(set.matches(b"/work/b/secrets/key", &agent_b));
        assert!(!set.matches(b"/work/b/secrets/key", &agent_a));
        assert!(set.matches(b"/home/other/.ssh/id_rsa", &agent_b));
        assert!(!set.matches(b"/home/other/.ssh/id_rsa", &agent_a));
        // What was remembered is the host's answer: b's worktree means nothing to a, whose
        // answer that was; b is never answered from it.
        let remembered = |path: &[u8]| set.host_paths.0.get(path);
        assert_eq!(remembered(b"/etc/shadow"), Some(Some(0)));
        assert_eq!(remembered(b"/etc/skip/.env"), Some(None));
        assert_eq!(remembered(b"/work/b/secrets/key"), Some(None));
    }

    #[test]
    fn the_remembered_paths_are_bounded() {
        let set = set(&["/etc/**"]);
        for n in 0..(HOST_PATHS_KEPT * 2 + 1) {
            assert!(set.matches(format!("/etc/f{n}").as_bytes(), &roots()));
        }
        assert!(set.host_paths.0.len() <= HOST_PATHS_KEPT);
    }

    #[test]
    fn a_missing_root_holds_nothing() {
        let none = Roots::default();
        assert!(!set(&["{worktree}/**", "~/**"]).matches(b"/anything", &none));
        assert_eq!(relative_to(b"/a/b", b"/"), Some(&b"a/b"[..]));
        assert_eq!(relative_to(b"/a", b"/a/"), Some(&b""[..]));
        assert_eq!(relative_to(b"/ab", b"/a"), None);
    }
}
