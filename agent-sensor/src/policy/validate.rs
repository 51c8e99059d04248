//! Checks beyond types: references between tables, pattern and host syntax, value ranges,
//! responses a rule can have. Run on the merged file before profiles are resolved, so a bad
//! entry is reported once, where it is written, not once per profile inheriting it.

use std::collections::BTreeMap;

use super::{
    egress,
    locate::{KeyPath, Problem},
    model::{AgentFile, Egress, PolicyFile, ProfileFile, Response, RuleId, Thresholds},
    pattern,
};

/// Every problem of `file`, in file order of tables.
pub fn problems(file: &PolicyFile) -> Vec<Problem> {
    let mut found = Vec::new();
    check_sensor(file, &mut found);
    check_paths(file, &mut found);
    check_discovery(file, &mut found);
    check_rules(file, &mut found);
    check_enforcement(file, &mut found);
    for (name, profile) in &file.profiles {
        check_profile(
            &KeyPath::new(["profiles", name.as_str()]),
            profile,
            &mut found,
        );
    }
    for (name, agent) in &file.agents {
        check_agent(
            file,
            &KeyPath::new(["agents", name.as_str()]),
            agent,
            &mut found,
        );
    }
    found
}

fn check_sensor(file: &PolicyFile, found: &mut Vec<Problem>) {
    if !file.sensor.state_dir.starts_with('/') {
        found.push(Problem::new(
            KeyPath::new(["sensor", "state_dir"]),
            "must be an absolute path",
        ));
    }
    if file.sensor.recent_events == 0 {
        found.push(Problem::new(
            KeyPath::new(["sensor", "recent_events"]),
            "must be at least 1",
        ));
    }
}

fn check_paths(file: &PolicyFile, found: &mut Vec<Problem>) {
    for dir in &file.paths.tmp {
        if !dir.starts_with('/') {
            found.push(Problem::new(
                KeyPath::new(["paths", "tmp"]),
                format!("{dir:?}: temp dirs are absolute paths"),
            ));
        }
    }
}

/// The kernel keeps 15 bytes of an executable's name (`comm`).
const COMM_MAX: usize = 15;

fn check_discovery(file: &PolicyFile, found: &mut Vec<Problem>) {
    let discovery = &file.discovery;
    for exe in &discovery.executables {
        if exe.is_empty() || exe.contains('/') || exe.len() > COMM_MAX {
            found.push(Problem::new(
                KeyPath::new(["discovery", "executables"]),
                format!("{exe:?}: an executable name (not a path) of 1 to {COMM_MAX} bytes, as the kernel keeps it"),
            ));
        }
    }
    check_profile_exists(
        file,
        KeyPath::new(["discovery", "profile"]),
        &discovery.profile,
        found,
    );
    // A mapping for an executable not listed is allowed: replacing `executables` must not
    // make the built-in mappings errors.
    for (exe, profile) in &discovery.profiles {
        let path = KeyPath::new(["discovery", "profiles", exe.as_str()]);
        check_profile_exists(file, path, profile, found);
    }
}

fn check_profile_exists(file: &PolicyFile, path: KeyPath, name: &str, found: &mut Vec<Problem>) {
    if !file.profiles.contains_key(name) {
        let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
        found.push(Problem::new(
            path,
            format!("unknown profile {name:?} (profiles: {})", known.join(", ")),
        ));
    }
}

fn check_rules(file: &PolicyFile, found: &mut Vec<Problem>) {
    for (id, rule) in &file.rules {
        let path = KeyPath::new(["rules", id.as_str(), "response"]);
        check_response(path, *id, rule.response, found);
    }
}

/// The in-kernel lists name files the daemon looks up when it starts (by device and inode),
/// the same for every agent: only an absolute path names one file (`~/` would be whose home?
/// a relative path, relative to the daemon's working directory). Whether the file exists is
/// for the daemon to say: the policy may be checked on another host.
fn check_enforcement(file: &PolicyFile, found: &mut Vec<Problem>) {
    let lists = [
        ("kill_on_access", &file.enforcement.kill_on_access),
        ("forbidden_exec", &file.enforcement.forbidden_exec),
    ];
    for (key, paths) in lists {
        for path in paths.iter().filter(|p| !p.starts_with('/')) {
            found.push(Problem::new(
                KeyPath::new(["enforcement", key]),
                format!("{path:?}: an absolute path (the list is the same for every agent, so `~/` or a relative path names no one file)"),
            ));
        }
    }
}

fn check_response(path: KeyPath, id: RuleId, response: Response, found: &mut Vec<Problem>) {
    if response == Response::Deny && !id.may_deny() {
        let deniable: Vec<&str> = RuleId::DENIABLE.iter().map(|r| r.as_str()).collect();
        found.push(Problem::new(
            path,
            format!(
                "\"deny\" is only possible for {} (for {} the act has already happened: use alert, freeze or kill)",
                deniable.join(" and "),
                id.as_str()
            ),
        ));
    }
}

fn check_responses(
    path: &KeyPath,
    responses: &BTreeMap<RuleId, Response>,
    found: &mut Vec<Problem>,
) {
    for (id, response) in responses {
        check_response(path.child(id.as_str()), *id, *response, found);
    }
}

fn check_profile(path: &KeyPath, profile: &ProfileFile, found: &mut Vec<Problem>) {
    let lists = [
        ("readable", &profile.readable),
        ("writable", &profile.writable),
        ("sensitive", &profile.sensitive),
        ("startup", &profile.startup),
        ("own_state", &profile.own_state),
    ];
    for (key, patterns) in lists {
        check_patterns(&path.child(key), patterns, found);
    }
    check_egress(&path.child("egress"), &profile.egress, found);
    if let Some(thresholds) = &profile.thresholds {
        check_thresholds(&path.child("thresholds"), thresholds, found);
    }
    check_responses(&path.child("responses"), &profile.responses, found);
}

fn check_agent(file: &PolicyFile, path: &KeyPath, agent: &AgentFile, found: &mut Vec<Problem>) {
    if let Some(profile) = &agent.profile {
        check_profile_exists(file, path.child("profile"), profile, found);
    }
    if let Some(worktree) = &agent.worktree {
        if let Err(why) = check_worktree(worktree) {
            found.push(Problem::new(path.child("worktree"), why));
        }
    }
    let lists = [
        ("readable", &agent.readable),
        ("writable", &agent.writable),
        ("sensitive", &agent.sensitive),
    ];
    for (key, patterns) in lists {
        check_patterns(&path.child(key), patterns, found);
    }
    if let Some(egress) = &agent.egress {
        check_egress(&path.child("egress"), egress, found);
    }
    if let Some(overrides) = &agent.thresholds {
        let thresholds = overrides.apply_to(&Thresholds::default());
        check_thresholds(&path.child("thresholds"), &thresholds, found);
    }
    check_responses(&path.child("responses"), &agent.responses, found);
}

fn check_worktree(worktree: &str) -> Result<(), String> {
    if worktree.trim().is_empty() {
        return Err("empty: an agent's worktree is the directory it may change".into());
    }
    if worktree == "/" {
        return Err("\"/\" would let the agent write anywhere".into());
    }
    if !(worktree.starts_with('/') || worktree.starts_with("~/")) {
        return Err(format!("{worktree:?}: absolute, or under `~/`"));
    }
    Ok(())
}

fn check_patterns(path: &KeyPath, patterns: &[String], found: &mut Vec<Problem>) {
    for text in patterns {
        if let Err(why) = pattern::parse(text) {
            found.push(Problem::new(path.clone(), format!("{text:?}: {why}")));
        }
    }
}

fn check_egress(path: &KeyPath, egress: &Egress, found: &mut Vec<Problem>) {
    for host in &egress.hosts {
        if let Err(why) = egress::parse_host(host) {
            found.push(Problem::new(path.child("hosts"), why));
        }
    }
    if egress.ports.contains(&0) {
        found.push(Problem::new(
            path.child("ports"),
            "port 0 is not a destination",
        ));
    }
}

fn check_thresholds(path: &KeyPath, t: &Thresholds, found: &mut Vec<Problem>) {
    let mut require = |ok: bool, key: &str, why: &str| {
        if !ok {
            found.push(Problem::new(path.child(key), why));
        }
    };
    require(
        t.exfil_window_secs >= 1,
        "exfil_window_secs",
        "must be at least 1",
    );
    require(
        (1..=63).contains(&t.dns_label_max),
        "dns_label_max",
        "a DNS label has 1 to 63 bytes",
    );
    require(
        t.dns_entropy_bits > 0.0 && t.dns_entropy_bits <= 8.0,
        "dns_entropy_bits",
        "bits per character: above 0, at most 8",
    );
    require(
        t.dns_entropy_min_len >= 1,
        "dns_entropy_min_len",
        "must be at least 1",
    );
    require(
        t.dns_burst_unique >= 1,
        "dns_burst_unique",
        "must be at least 1",
    );
    require(
        t.dns_burst_window_secs >= 1,
        "dns_burst_window_secs",
        "must be at least 1",
    );
    require(
        t.dns_volume_bytes >= 1,
        "dns_volume_bytes",
        "must be at least 1",
    );
    require(
        t.dns_volume_window_secs >= 1,
        "dns_volume_window_secs",
        "must be at least 1",
    );
    require(
        t.novelty_min_score <= 100,
        "novelty_min_score",
        "a score is 0 to 100",
    );
}
