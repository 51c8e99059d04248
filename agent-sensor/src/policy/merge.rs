//! Combining TOML tables before they are deserialized: a user file over the built-in one, and
//! each profile over the profile it extends.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::locate::{KeyPath, Problem};

/// Lays `over` onto `base` key by key: tables merge recursively, any other value (a list
/// included) replaces the base's.
pub fn overlay(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base_table)), Value::Table(over_table)) => {
                overlay(base_table, over_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Adds `child` onto `parent`: lists are appended (parent's first, without repeats), tables
/// merge recursively, other values replace.
fn inherit(parent: &Table, child: &Table) -> Table {
    let mut merged = parent.clone();
    for (key, value) in child {
        let combined = match (merged.get(key), value) {
            (Some(Value::Table(p)), Value::Table(c)) => Value::Table(inherit(p, c)),
            (Some(Value::Array(p)), Value::Array(c)) => Value::Array(append(p, c)),
            (_, value) => value.clone(),
        };
        merged.insert(key.clone(), combined);
    }
    merged
}

fn append(parent: &[Value], child: &[Value]) -> Vec<Value> {
    let mut all = parent.to_vec();
    for item in child {
        if !all.contains(item) {
            all.push(item.clone());
        }
    }
    all
}

pub const DEFAULT_PROFILE: &str = "default";

/// The profile `name` extends, given its table: `extends` if set (`""`: none), else
/// `default` for every profile but `default` itself.
pub fn parent_of(name: &str, profile: &Table) -> Option<String> {
    match profile.get("extends").and_then(Value::as_str) {
        Some("") => None,
        Some(parent) => Some(parent.to_string()),
        None if name == DEFAULT_PROFILE => None,
        None => Some(DEFAULT_PROFILE.to_string()),
    }
}

/// Checks that every `extends` names a profile and that no chain loops. A loop is reported at
/// each `extends` written on it (not at the implied `extends = "default"`), so at the lines
/// that made it.
pub fn check_extends(profiles: &Table) -> Vec<Problem> {
    let parents = parents(profiles);
    let mut problems = Vec::new();
    for (name, parent) in &parents {
        let Some(parent) = parent else { continue };
        let path = KeyPath::new(["profiles", name.as_str(), "extends"]);
        if !parents.contains_key(parent) {
            problems.push(Problem {
                path,
                message: format!("no profile {parent:?} to extend"),
            });
        } else if let Some(cycle) = cycle_from(name, &parents).filter(|_| written(profiles, name)) {
            problems.push(Problem {
                path,
                message: format!(
                    "profiles extend each other in a loop: {}",
                    cycle.join(" → ")
                ),
            });
        }
    }
    problems
}

fn written(profiles: &Table, name: &str) -> bool {
    profiles
        .get(name)
        .and_then(Value::as_table)
        .is_some_and(|t| t.contains_key("extends"))
}

fn parents(profiles: &Table) -> BTreeMap<String, Option<String>> {
    profiles
        .iter()
        .map(|(name, value)| {
            let parent = value.as_table().and_then(|t| parent_of(name, t));
            (name.clone(), parent)
        })
        .collect()
}

/// The loop `start` is on, if following its parents comes back to it.
fn cycle_from(start: &str, parents: &BTreeMap<String, Option<String>>) -> Option<Vec<String>> {
    let mut chain = vec![start.to_string()];
    let mut current = start;
    while let Some(Some(parent)) = parents.get(current) {
        chain.push(parent.clone());
        if parent == start {
            return Some(chain);
        }
        if chain[..chain.len() - 1].contains(parent) {
            return None; // a loop further up, reported for its own members
        }
        current = parent;
    }
    None
}

/// Replaces every profile by itself laid onto its ancestors. Expects [`check_extends`] to
/// have passed. `extends` is kept as written (it documents where things came from).
pub fn resolve_profiles(profiles: &mut Table) {
    let parents = parents(profiles);
    let resolved: Table = profiles
        .iter()
        .map(|(name, _)| {
            (
                name.clone(),
                Value::Table(resolved(name, profiles, &parents)),
            )
        })
        .collect();
    *profiles = resolved;
}

fn resolved(name: &str, profiles: &Table, parents: &BTreeMap<String, Option<String>>) -> Table {
    let own = profiles
        .get(name)
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default();
    let mut table = match parents.get(name) {
        Some(Some(parent)) => inherit(&resolved(parent, profiles, parents), &own),
        _ => own,
    };
    match table.get("extends") {
        Some(_) => {}
        None => {
            if let Some(Some(parent)) = parents.get(name) {
                table.insert("extends".into(), Value::String(parent.clone()));
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().unwrap()
    }

    #[test]
    fn overlay_merges_tables_and_replaces_lists() {
        let mut base = table("[p]\na = [1, 2]\nb = 1\n[p.t]\nx = 1\ny = 2\n[q]\nz = 1\n");
        overlay(&mut base, table("[p]\na = [3]\n[p.t]\ny = 5\n"));
        assert_eq!(
            base,
            table("[p]\na = [3]\nb = 1\n[p.t]\nx = 1\ny = 5\n[q]\nz = 1\n")
        );
    }

    #[test]
    fn profiles_inherit_lists_and_keys() {
        let mut profiles = table(
            "[default]\nw = [\"a\"]\nt = { x = 1, y = 2 }\n\
             [child]\nw = [\"b\", \"a\"]\nt = { y = 3 }\n\
             [bare]\nextends = \"\"\nw = [\"c\"]\n",
        );
        assert!(check_extends(&profiles).is_empty());
        resolve_profiles(&mut profiles);
        assert_eq!(
            profiles["child"],
            Value::Table(table(
                "w = [\"a\", \"b\"]\nt = { x = 1, y = 3 }\nextends = \"default\"\n"
            ))
        );
        assert_eq!(
            profiles["bare"],
            Value::Table(table("extends = \"\"\nw = [\"c\"]\n"))
        );
    }

    #[test]
    fn extends_problems_are_found() {
        let profiles = table(
            "[default]\n[a]\nextends = \"b\"\n[b]\nextends = \"a\"\n[c]\nextends = \"nope\"\n",
        );
        let problems = check_extends(&profiles);
        let paths: Vec<String> = problems.iter().map(|p| p.path.to_string()).collect();
        assert_eq!(
            paths,
            [
                "profiles.a.extends",
                "profiles.b.extends",
                "profiles.c.extends"
            ]
        );
        assert!(problems[0].message.contains("a → b → a"));
    }
}
