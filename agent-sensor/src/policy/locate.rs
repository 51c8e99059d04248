//! Where each key of a TOML text is, so that every error can name its line and its key path.
//!
//! toml 0.8 reports a byte span for an error but not the key it belongs to, and has no
//! spanned document type. [`KeyLocations`] deserializes the text once more into a tree that
//! records the span of every key and value (through the `Spanned` protocol of the toml
//! deserializer), then answers "which key holds this offset" and "where is this key".

use std::{fmt, ops::Range};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A dotted key path (`profiles.default.egress.ports`). Array elements share their array's
/// path: errors name the list, their message names the element.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<String>);

impl KeyPath {
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(keys.into_iter().map(Into::into).collect())
    }

    pub fn child(&self, key: &str) -> Self {
        let mut keys = self.0.clone();
        keys.push(key.to_string());
        Self(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            if is_bare_key(key) {
                f.write_str(key)?;
            } else {
                write!(f, "{key:?}")?;
            }
        }
        Ok(())
    }
}

/// Keys TOML accepts unquoted (rule ids hold dots, so they print quoted, as written).
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Something wrong at a key path (located in the text later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: KeyPath,
    pub message: String,
}

impl Problem {
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}

/// 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[derive(Debug, Clone)]
struct Entry {
    path: KeyPath,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// The spans of every key and value of one TOML text.
#[derive(Debug, Clone, Default)]
pub struct KeyLocations {
    entries: Vec<Entry>,
}

impl KeyLocations {
    /// Fails exactly when the text is not TOML (the error is the syntax error).
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        let root: Node = toml::from_str(text)?;
        let mut locations = Self::default();
        locations.collect(&KeyPath::default(), &root);
        Ok(locations)
    }

    fn collect(&mut self, path: &KeyPath, node: &Node) {
        match node {
            Node::Table(entries) => {
                for (key, value) in entries {
                    let child = path.child(&key.name);
                    self.entries.push(Entry {
                        path: child.clone(),
                        key: key.span.clone(),
                        value: value.span.clone(),
                    });
                    self.collect(&child, &value.node);
                }
            }
            Node::Array(items) => {
                for item in items {
                    self.collect(path, &item.node);
                }
            }
            Node::Leaf => {}
        }
    }

    /// The deepest key whose name or value holds `offset`.
    pub fn path_at(&self, offset: usize) -> Option<&KeyPath> {
        self.entries
            .iter()
            .filter(|e| [&e.key, &e.value].iter().any(|s| holds(s, offset)))
            .max_by_key(|e| e.path.0.len())
            .map(|e| &e.path)
    }

    /// Where `path`, or failing that its longest present prefix, is written.
    pub fn offset_of(&self, path: &KeyPath) -> Option<usize> {
        (1..=path.0.len()).rev().find_map(|len| {
            let prefix = &path.0[..len];
            self.entries
                .iter()
                .filter(|e| e.path.0 == prefix)
                .find_map(|e| e.key.as_ref().or(e.value.as_ref()).map(|s| s.start))
        })
    }

    /// The text `path` and everything below it occupy (to blank it out after an error).
    pub fn extent_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let spans = self
            .entries
            .iter()
            .filter(|e| e.path.0.starts_with(&path.0))
            .flat_map(|e| [e.key.clone(), e.value.clone()])
            .flatten();
        spans.fold(None, |acc: Option<Range<usize>>, s| match acc {
            None => Some(s),
            Some(a) => Some(a.start.min(s.start)..a.end.max(s.end)),
        })
    }
}

fn holds(span: &Option<Range<usize>>, offset: usize) -> bool {
    span.as_ref()
        .is_some_and(|s| s.contains(&offset) || (s.is_empty() && s.start == offset))
}

/// For a syntax error, where no tree can be built: the table header and key in force at
/// `offset`, read line by line. Good for the usual cases (a bad value after `key =`, a bad
/// header); a multi-line value is attributed to the key that opened it.
pub fn approximate_path_at(text: &str, offset: usize) -> KeyPath {
    let mut table = KeyPath::default();
    let mut key: Option<String> = None;
    let last_line = line_of(text, offset);
    for line in text.lines().take(last_line) {
        let line = line.trim_start();
        if let Some(header) = line.strip_prefix('[') {
            table = header_path(header);
            key = None;
        } else if let Some(name) = key_before_equals(line) {
            key = Some(name);
        }
    }
    match key {
        Some(key) => KeyPath(table.0.into_iter().chain(key_parts(&key)).collect()),
        None => table,
    }
}

fn header_path(header: &str) -> KeyPath {
    let header = header.trim_start_matches('[');
    let inside = header.split(']').next().unwrap_or(header);
    KeyPath(key_parts(inside).collect())
}

/// `name` of a `name = value` line, if the line is one.
fn key_before_equals(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let (name, _) = line.split_once('=')?;
    let name = name.trim();
    let plausible = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'' | ' '));
    plausible.then(|| name.to_string())
}

/// Splits a dotted key, honouring quotes (`rules."exfil.dns_tunnel"`).
fn key_parts(dotted: &str) -> impl Iterator<Item = String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in dotted.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '.') => parts.push(std::mem::take(&mut current)),
            (None, c) if c.is_whitespace() => {}
            (None, c) => current.push(c),
        }
    }
    parts.push(current);
    parts.into_iter().filter(|p| !p.is_empty())
}

// ---- the spanned tree ----

/// A TOML value with what it holds; spans are absent where the deserializer has none
/// (tables only implied by a dotted key or a header such as `[a.b]` for `a`).
#[derive(Debug)]
struct Located {
    span: Option<Range<usize>>,
    node: Node,
}

#[derive(Debug)]
enum Node {
    Table(Vec<(Key, Located)>),
    Array(Vec<Located>),
    Leaf,
}

#[derive(Debug)]
struct Key {
    name: String,
    span: Option<Range<usize>>,
}

/// The struct name and field names `toml::Spanned` asks a deserializer for. They are private
/// to serde_spanned, so they are learned from it at run time rather than copied: a
/// deserializer that records the request and fails.
fn spanned_protocol() -> (&'static str, &'static [&'static str]) {
    use std::sync::OnceLock;
    static PROTOCOL: OnceLock<(&'static str, &'static [&'static str])> = OnceLock::new();
    *PROTOCOL.get_or_init(|| {
        let recorder = ProtocolRecorder::default();
        let _ = toml::Spanned::<()>::deserialize(&recorder);
        recorder
            .0
            .get()
            .expect("toml::Spanned deserializes through deserialize_struct")
    })
}

#[derive(Default)]
struct ProtocolRecorder(std::cell::Cell<Option<(&'static str, &'static [&'static str])>>);

#[derive(Debug)]
struct Recorded;

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("recorded")
    }
}

impl std::error::Error for Recorded {}

impl de::Error for Recorded {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Recorded
    }
}

impl<'de> Deserializer<'de> for &ProtocolRecorder {
    type Error = Recorded;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
        Err(Recorded)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Recorded> {
        self.0.set(Some((name, fields)));
        Err(Recorded)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, fields) = spanned_protocol();
        deserializer.deserialize_struct(name, fields, LocatedVisitor { fields })
    }
}

impl<'de> Deserialize<'de> for Node {
    /// The value inside a span: asked for without the span protocol, which would recurse.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (_, fields) = spanned_protocol();
        deserializer
            .deserialize_any(LocatedVisitor { fields })
            .map(|located| located.node)
    }
}

/// Reads a value that may come wrapped in the span protocol (a map whose first key is the
/// protocol's start field) or bare.
struct LocatedVisitor {
    fields: &'static [&'static str],
}

impl LocatedVisitor {
    fn bare(node: Node) -> Located {
        Located { span: None, node }
    }
}

impl<'de> Visitor<'de> for LocatedVisitor {
    type Value = Located;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Located, A::Error> {
        let Some(first) = map.next_key::<Key>()? else {
            return Ok(Self::bare(Node::Table(Vec::new())));
        };
        if first.name == self.fields[0] {
            let start: usize = map.next_value()?;
            map.next_key::<de::IgnoredAny>()?;
            let end: usize = map.next_value()?;
            map.next_key::<de::IgnoredAny>()?;
            let node: Node = map.next_value()?;
            return Ok(Located {
                span: Some(start..end),
                node,
            });
        }
        let mut entries = vec![(first, map.next_value()?)];
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Self::bare(Node::Table(entries)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Located, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Self::bare(Node::Array(items)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Located, E> {
        Ok(Self::bare(Node::Leaf))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Located, E> {
        Ok(Self::bare(Node::Leaf))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Located, E> {
        Ok(Self::bare(Node::Leaf))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Located, E> {
        Ok(Self::bare(Node::Leaf))
    }

    fn visit_str<E>(self, _: &str) -> Result<Located, E> {
        Ok(Self::bare(Node::Leaf))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, fields) = spanned_protocol();
        deserializer.deserialize_struct(name, fields, KeyVisitor)
    }
}

/// A key: spanned where the deserializer knows its place, a bare string otherwise (the
/// protocol's own field names, a datetime's private key).
struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML key")
    }

    fn visit_str<E>(self, name: &str) -> Result<Key, E> {
        Ok(Key {
            name: name.to_string(),
            span: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        map.next_key::<de::IgnoredAny>()?;
        let start: usize = map.next_value()?;
        map.next_key::<de::IgnoredAny>()?;
        let end: usize = map.next_value()?;
        map.next_key::<de::IgnoredAny>()?;
        let name: String = map.next_value()?;
        Ok(Key {
            name,
            span: Some(start..end),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
[sensor]
mode = \"monitor\"

[profiles.default]
writable = [\"a\", \"b\"]
egress.hosts = [\"x\"]
thresholds = { dns_label_max = 3 }

[rules.\"exfil.dns_tunnel\"]
severity = \"high\"
when = 1979-05-27T07:32:00Z
";

    fn at(text: &str, needle: &str) -> usize {
        text.find(needle).unwrap()
    }

    #[test]
    fn finds_the_key_of_an_offset() {
        let locations = KeyLocations::parse(TEXT).unwrap();
        let path = |needle| locations.path_at(at(TEXT, needle)).unwrap().to_string();
        assert_eq!(path("\"b\""), "profiles.default.writable");
        assert_eq!(path("\"x\""), "profiles.default.egress.hosts");
        assert_eq!(path("3 }"), "profiles.default.thresholds.dns_label_max");
        assert_eq!(path("\"high\""), "rules.\"exfil.dns_tunnel\".severity");
        assert_eq!(path("monitor"), "sensor.mode");
    }

    #[test]
    fn finds_where_a_key_is() {
        let locations = KeyLocations::parse(TEXT).unwrap();
        let line = |keys: &[&str]| {
            line_of(
                TEXT,
                locations
                    .offset_of(&KeyPath::new(keys.iter().copied()))
                    .unwrap(),
            )
        };
        assert_eq!(line(&["sensor", "mode"]), 2);
        assert_eq!(line(&["profiles", "default", "egress", "hosts"]), 6);
        // Absent keys are placed at their closest present ancestor.
        assert_eq!(line(&["profiles", "default", "egress", "ports"]), 6);
        assert_eq!(line(&["rules", "exfil.dns_tunnel", "response"]), 9);
        assert_eq!(locations.offset_of(&KeyPath::new(["nothing"])), None);
    }

    #[test]
    fn approximates_paths_of_syntax_errors() {
        let text = "[profiles.default]\nwritable = [\"a\",\n[rules.\"exfil.dns_tunnel\"]\nseverity = high\n";
        assert_eq!(
            approximate_path_at(text, at(text, "\"a\"")).to_string(),
            "profiles.default.writable"
        );
        assert_eq!(
            approximate_path_at(text, at(text, "high")).to_string(),
            "rules.\"exfil.dns_tunnel\".severity"
        );
    }
}
