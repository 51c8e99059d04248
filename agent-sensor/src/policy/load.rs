//! From text to a validated [`Policy`]: syntax, types, the merge with the built-in policy,
//! profile inheritance and the semantic checks, collecting every error with its line and key.

use toml::{Table, Value};

use super::{
    locate::{approximate_path_at, line_of, KeyLocations, KeyPath, Problem},
    merge,
    model::PolicyFile,
    validate, Policy, PolicyError,
};

pub(super) const BUILTIN_TEXT: &str = include_str!("default.toml");

/// Stop collecting type errors after this many (a file that wrong needs rewriting anyway).
const MAX_TYPE_ERRORS: usize = 50;

/// A problem and where in the text it was found (`None`: not in this text).
struct Finding {
    offset: Option<usize>,
    problem: Problem,
}

/// Parses `text` (named `origin` in messages), lays it over the built-in policy and checks the
/// result. Every error found is returned, in line order.
pub fn check(text: &str, origin: &str) -> Result<Policy, Vec<PolicyError>> {
    let locations = match KeyLocations::parse(text) {
        Ok(locations) => locations,
        Err(e) => return Err(vec![syntax_error(text, origin, &e)]),
    };
    let report = |findings: Vec<Finding>| report(text, origin, findings);
    let (clean, mut findings) = type_errors(text, &locations);
    let Some(clean) = clean else {
        return Err(report(findings));
    };
    let mut merged = builtin_table();
    match clean.parse::<Table>() {
        Ok(user) => merge::overlay(&mut merged, user),
        Err(e) => return Err(vec![syntax_error(text, origin, &e)]),
    }
    let semantic = semantic_problems(&merged);
    findings.extend(semantic.into_iter().map(|problem| Finding {
        offset: locations.offset_of(&problem.path),
        problem,
    }));
    if !findings.is_empty() {
        return Err(report(findings));
    }
    resolve(merged).map_err(|problem| {
        report(vec![Finding {
            offset: None,
            problem,
        }])
    })
}

/// Problems of the merged (not yet inherited) file: `extends` first, then the rest.
fn semantic_problems(merged: &Table) -> Vec<Problem> {
    let profiles = merged
        .get("profiles")
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default();
    let mut problems = merge::check_extends(&profiles);
    match deserialize(merged.clone()) {
        Ok(file) => problems.extend(validate::problems(&file)),
        Err(problem) => problems.push(problem),
    }
    problems
}

/// Applies profile inheritance and compiles.
fn resolve(mut merged: Table) -> Result<Policy, Problem> {
    if let Some(Value::Table(profiles)) = merged.get_mut("profiles") {
        merge::resolve_profiles(profiles);
    }
    let file = deserialize(merged)?;
    Policy::compile(file).map_err(|why| Problem::new(KeyPath::default(), why))
}

fn deserialize(table: Table) -> Result<PolicyFile, Problem> {
    Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| Problem::new(KeyPath::default(), one_line(e.message())))
}

pub(super) fn builtin_table() -> Table {
    BUILTIN_TEXT
        .parse()
        .expect("the built-in policy is TOML (checked by a unit test)")
}

/// Type errors: wrong types, unknown keys, unknown rule ids — all of them, not only the
/// first serde stops at. After each, the entry at fault is blanked out of a copy of the text
/// (with spaces, so every offset stays valid) and the copy is deserialized again. Returns the
/// cleaned copy once it deserializes, with the errors; `None` if it could not be cleaned.
fn type_errors(text: &str, locations: &KeyLocations) -> (Option<String>, Vec<Finding>) {
    let mut clean = text.to_string();
    let mut findings = Vec::new();
    while findings.len() < MAX_TYPE_ERRORS {
        let error = match toml::from_str::<PolicyFile>(&clean) {
            Ok(_) => return (Some(clean), findings),
            Err(error) => error,
        };
        let offset = error.span().map(|s| s.start);
        let path = offset
            .and_then(|o| locations.path_at(o))
            .cloned()
            .unwrap_or_default();
        findings.push(Finding {
            offset,
            problem: Problem::new(path.clone(), one_line(error.message())),
        });
        match blank_entry(&clean, &path, locations) {
            Some(next) => clean = next,
            None => break,
        }
    }
    (None, findings)
}

/// `text` without the entry at `path`, or without its closest ancestor whose removal leaves
/// valid TOML (removing `b = 1` from `{ a = 1, b = 1 }` leaves a dangling comma).
fn blank_entry(text: &str, path: &KeyPath, locations: &KeyLocations) -> Option<String> {
    (1..=path.0.len()).rev().find_map(|len| {
        let ancestor = KeyPath(path.0[..len].to_vec());
        blanked(text, locations.extent_of(&ancestor)?)
    })
}

/// `text` with `range` replaced by spaces (line breaks kept), if that changes it and leaves
/// valid TOML.
fn blanked(text: &str, range: std::ops::Range<usize>) -> Option<String> {
    let mut bytes = text.as_bytes().to_vec();
    let target = bytes.get_mut(range)?;
    let mut changed = false;
    for byte in target.iter_mut().filter(|b| !b" \n\r".contains(b)) {
        *byte = b' ';
        changed = true;
    }
    let next = String::from_utf8(bytes).ok()?;
    (changed && next.parse::<Table>().is_ok()).then_some(next)
}

fn syntax_error(text: &str, origin: &str, error: &toml::de::Error) -> PolicyError {
    let offset = error.span().map(|s| before_trailing_space(text, s.start));
    let path = offset
        .map(|o| approximate_path_at(text, o))
        .unwrap_or_default();
    let problem = Problem::new(path, one_line(error.message()));
    to_error(text, origin, Finding { offset, problem })
}

/// An error at the end of the text (an unclosed list) belongs to the last line written, not
/// to the empty one after it.
fn before_trailing_space(text: &str, offset: usize) -> usize {
    let written = text.trim_end().len();
    match offset >= written {
        true => written.saturating_sub(1),
        false => offset,
    }
}

fn report(text: &str, origin: &str, findings: Vec<Finding>) -> Vec<PolicyError> {
    let mut errors: Vec<(usize, PolicyError)> = findings
        .into_iter()
        .map(|f| (f.offset.unwrap_or(usize::MAX), to_error(text, origin, f)))
        .collect();
    errors.sort_by_key(|(offset, _)| *offset);
    errors.into_iter().map(|(_, e)| e).collect()
}

/// Line 0 when the problem is not in this text (it came from the built-in policy).
fn to_error(text: &str, origin: &str, finding: Finding) -> PolicyError {
    let Problem { path, message } = finding.problem;
    PolicyError::Invalid {
        origin: origin.to_string(),
        line: finding.offset.map(|o| line_of(text, o)).unwrap_or(0),
        message: if path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        },
    }
}

/// toml puts "expected …" on a line of its own; one error is one line here.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}
