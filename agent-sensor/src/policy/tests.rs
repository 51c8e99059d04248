//! Tests of the policy as other modules see it: the built-in default, error reports, merging,
//! and the scope questions.

use std::{net::IpAddr, path::Path};

use super::*;

const HOME: &str = "/home/dev";
const WORKTREE: &str = "/work/a";

fn identity(profile: &str) -> AgentIdentity {
    AgentIdentity {
        name: "agent-1".into(),
        profile: profile.into(),
        worktree: WORKTREE.into(),
        home: HOME.into(),
    }
}

fn builtin_scope(profile: &str) -> AgentScope {
    Policy::builtin().scope_for(&identity(profile))
}

fn home(rest: &str) -> Vec<u8> {
    format!("{HOME}/{rest}").into_bytes()
}

fn errors_of(text: &str) -> Vec<String> {
    match check(text, "policy.toml") {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

// ---- the built-in policy ----

#[test]
fn builtin_parses_validates_and_lists_every_rule() {
    let checked = check(Policy::builtin_text(), "built-in");
    assert!(checked.is_ok(), "{:?}", checked.err());
    let policy = Policy::builtin();
    assert_eq!(policy.mode(), Mode::Monitor);
    for id in RuleId::ALL {
        assert!(
            policy.file.rules.contains_key(&id),
            "{} missing",
            id.as_str()
        );
        // Exfiltration is refused and remote control killed in enforce mode; the rest alerts.
        let expected = match id {
            RuleId::UnallowedEgress | RuleId::SensitiveThenEgress => Response::Deny,
            RuleId::DnsTunnel | RuleId::ReverseShell => Response::Kill,
            _ => Response::Alert,
        };
        assert_eq!(policy.rule(id).response, expected, "{}", id.as_str());
    }
    let severity = |id| policy.rule(id).severity;
    assert_eq!(severity(RuleId::SensitiveThenEgress), Severity::Critical);
    assert_eq!(severity(RuleId::UnallowedEgress), Severity::Medium);
    assert_eq!(severity(RuleId::NovelBehavior), Severity::Low);
    assert_eq!(severity(RuleId::TamperSensor), Severity::Critical);
    for profile in ["default", "claude", "codex", "aider", "gemini"] {
        assert!(policy.file.profiles.contains_key(profile), "{profile}");
    }
    // The file states the same numbers the code falls back to.
    let default = &policy.file.profiles["default"];
    assert_eq!(default.thresholds, Some(Thresholds::default()));
    // An empty file is the built-in policy.
    let empty = check("", "empty.toml").unwrap();
    assert_eq!(empty.file, policy.file);
}

#[test]
fn builtin_discovery_maps_executables_to_profiles() {
    let policy = Policy::builtin();
    assert_eq!(policy.discovered_profile(b"claude"), Some("claude"));
    assert_eq!(
        policy.discovered_profile(b"cursor-agent"),
        Some("cursor-agent")
    );
    assert_eq!(policy.discovered_profile(b"bash"), None);
    let discovery = &policy.file.discovery;
    for exe in [
        "claude",
        "codex",
        "aider",
        "gemini",
        "goose",
        "opencode",
        "cursor-agent",
    ] {
        assert!(discovery.executables.iter().any(|e| e == exe), "{exe}");
    }
}

// ---- errors: line and key ----

#[test]
fn syntax_errors_name_line_and_key() {
    let errors =
        errors_of("[sensor]\nmode = \"monitor\"\n\n[profiles.default]\nwritable = [\"a\",\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("policy.toml:5: profiles.default.writable: invalid array"),
        "{}",
        errors[0]
    );
}

#[test]
fn type_errors_name_line_and_key() {
    let errors = errors_of("[profiles.default.egress]\nhosts = []\nports = [443, \"x\"]\n");
    assert_eq!(
        errors,
        [r#"policy.toml:3: profiles.default.egress.ports: invalid type: string "x", expected u16"#]
    );
}

#[test]
fn unknown_keys_and_rules_name_line_and_key() {
    let errors = errors_of(
        "[profiles.default]\nwriteable = []\n\n[rules.\"exfil.nope\"]\nseverity = \"high\"\n",
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0]
            .starts_with("policy.toml:2: profiles.default.writeable: unknown field `writeable`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("policy.toml:4: rules.\"exfil.nope\": unknown variant `exfil.nope`"),
        "{}",
        errors[1]
    );
}

#[test]
fn semantic_errors_name_line_and_key() {
    let text = r#"
[discovery]
profile = "ghost"

[rules."exec.reverse_shell"]
response = "deny"

[profiles.mine]
writable = ["~/ok/**", "relative/path", "/a/[b"]

[profiles.mine.egress]
hosts = ["*.ok.com", "bad*.com"]

[agents.bob]
profile = "nope"
worktree = ""
"#;
    let errors = errors_of(text);
    let expected = [
        "policy.toml:3: discovery.profile: unknown profile \"ghost\"",
        "policy.toml:6: rules.\"exec.reverse_shell\".response: \"deny\" is only possible for",
        "policy.toml:9: profiles.mine.writable: \"relative/path\": a path pattern starts with",
        "policy.toml:9: profiles.mine.writable: \"/a/[b\": invalid glob",
        "policy.toml:12: profiles.mine.egress.hosts: \"bad*.com\":",
        "policy.toml:15: agents.bob.profile: unknown profile \"nope\"",
        "policy.toml:16: agents.bob.worktree: empty",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, start) in errors.iter().zip(expected) {
        assert!(
            error.starts_with(start),
            "{error}\n  should start with\n{start}"
        );
    }
}

#[test]
fn enforcement_lists_take_absolute_paths_only() {
    let text = r#"
[enforcement]
kill_on_access = ["/etc/shadow", "~/.ssh/id_test"]
forbidden_exec = [
    "/usr/bin/nc",
    "nc",
]
"#;
    let errors = errors_of(text);
    let expected = [
        "policy.toml:3: enforcement.kill_on_access: \"~/.ssh/id_test\": an absolute path",
        "policy.toml:4: enforcement.forbidden_exec: \"nc\": an absolute path",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, start) in errors.iter().zip(expected) {
        assert!(
            error.starts_with(start),
            "{error}\n  should start with\n{start}"
        );
    }
    // Whether the files exist is the daemon's to say, when it starts in enforce mode.
    let fine = "[enforcement]\nkill_on_access = [\"/nonexistent/key\"]\nforbidden_exec = []\n";
    assert!(check(fine, "policy.toml").is_ok());
}

#[test]
fn every_error_is_reported_types_and_semantics_together() {
    let text = r#"
[sensor]
mode = "watch"

[profiles.default.thresholds]
dns_label_max = 99
exfil_window_secs = "long"

[profiles.x]
extends = "y"

[profiles.y]
extends = "x"
"#;
    let errors = errors_of(text);
    let lines: Vec<&str> = errors
        .iter()
        .map(|e| e.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "policy.toml:3:",
            "policy.toml:6:",
            "policy.toml:7:",
            "policy.toml:10:",
            "policy.toml:13:"
        ],
        "{errors:#?}"
    );
    assert!(errors[0].contains("sensor.mode: unknown variant `watch`"));
    assert!(errors[1].contains("dns_label_max: a DNS label has 1 to 63 bytes"));
    assert!(errors[2].contains("exfil_window_secs: invalid type: string"));
    assert!(errors[3].contains("profiles.x.extends: profiles extend each other in a loop"));
}

#[test]
fn errors_after_one_inside_an_inline_table_are_still_found() {
    let text = "[profiles.default]\negress = { hosts = [\"a.com\"], ports = [\"x\"] }\nthresholds.dns_label_max = -1\n[[agents]]\nx = 1\n";
    let errors = errors_of(text);
    let starts = [
        "policy.toml:2: profiles.default.egress.ports: invalid type: string \"x\"",
        "policy.toml:3: profiles.default.thresholds.dns_label_max: invalid value: integer `-1`",
        "policy.toml:4: agents: invalid type: sequence, expected a map",
    ];
    assert_eq!(errors.len(), starts.len(), "{errors:#?}");
    for (error, start) in errors.iter().zip(starts) {
        assert!(error.starts_with(start), "{error}");
    }
}

#[test]
fn a_loop_through_a_builtin_profile_is_reported_where_it_was_written() {
    let errors = errors_of("[profiles.default]\nextends = \"claude\"\n");
    assert_eq!(
        errors,
        ["policy.toml:2: profiles.default.extends: profiles extend each other in a loop: default → claude → default"]
    );
}

#[test]
fn from_toml_str_returns_the_first_error() {
    let error = Policy::from_toml_str(
        "[agents.a]\nprofile = \"p\"\n[agents.b]\nprofile = \"q\"\n",
        "f",
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message
            .starts_with("f:2: agents.a.profile: unknown profile \"p\" (profiles: aider, claude,"),
        "{message}"
    );
}

#[test]
fn deny_is_accepted_for_egress_rules() {
    let text = "[rules.\"exfil.unallowed_egress\"]\nresponse = \"deny\"\n[profiles.claude.responses]\n\"exfil.sensitive_then_egress\" = \"deny\"\n";
    let policy = check(text, "policy.toml").unwrap();
    assert_eq!(
        policy.rule(RuleId::UnallowedEgress).response,
        Response::Deny
    );
    let errors = errors_of("[agents.a.responses]\n\"tamper.sensor\" = \"deny\"\n");
    assert!(errors[0].starts_with("policy.toml:2: agents.a.responses.\"tamper.sensor\": \"deny\""));
}

// ---- merging ----

#[test]
fn a_user_file_overrides_key_by_key() {
    let text = r#"
[sensor]
mode = "enforce"

[rules."exfil.dns_tunnel"]
response = "kill"

[profiles.default]
writable = ["/scratch/**"]

[profiles.default.thresholds]
exfil_window_secs = 60
"#;
    let policy = check(text, "policy.toml").unwrap();
    let builtin = Policy::builtin();
    assert_eq!(policy.mode(), Mode::Enforce);
    // The rule keeps its built-in severity; other rules are untouched.
    let tunnel = policy.rule(RuleId::DnsTunnel);
    assert_eq!(
        (tunnel.severity, tunnel.response),
        (Severity::High, Response::Kill)
    );
    assert_eq!(
        policy.rule(RuleId::ReverseShell),
        builtin.rule(RuleId::ReverseShell)
    );
    // A list given replaces the built-in list; keys not given are kept.
    let default = &policy.file.profiles["default"];
    assert_eq!(default.writable, ["/scratch/**"]);
    assert_eq!(
        default.sensitive,
        builtin.file.profiles["default"].sensitive
    );
    let thresholds = default.thresholds.clone().unwrap();
    assert_eq!(thresholds.exfil_window_secs, 60);
    assert_eq!(thresholds.dns_label_max, 52);
    // Profiles not in the file are kept, and inherit the changed default.
    let scope = policy.scope_for(&identity("claude"));
    assert!(scope.may_write(b"/scratch/x"));
    assert!(!scope.may_write(b"/tmp/x"));
    assert!(scope.may_write(&home(".claude/history.jsonl")));
    assert_eq!(scope.thresholds.exfil_window_secs, 60);
    assert_eq!(scope.response(RuleId::DnsTunnel), Response::Kill);
}

#[test]
fn profiles_extend_default_and_agents_add() {
    let text = r#"
[profiles.ci]
writable = ["/builds/**"]
readable = ["~/.config/gh/hosts.yml"]
responses = { "exec.suspicious_tool" = "kill" }
[profiles.ci.egress]
hosts = ["gitlab.example.com"]
ports = [22]
[profiles.ci.thresholds]
dns_label_max = 40

[profiles.bare]
extends = ""
writable = ["/only/**"]

[agents.bot]
profile = "ci"
worktree = "~/src/bot"
writable = ["/extra/**"]
sensitive = ["{worktree}/secrets/**"]
thresholds = { exfil_window_secs = 30 }
responses = { "exfil.unallowed_egress" = "alert" }
egress = { cidrs = ["10.0.0.0/8"] }
"#;
    let policy = check(text, "policy.toml").unwrap();
    let who = policy.identity("bot", Path::new(HOME), "default", Path::new("/elsewhere"));
    assert_eq!(who.profile, "ci");
    assert_eq!(who.worktree, Path::new("/home/dev/src/bot"));
    let scope = policy.scope_for(&who);
    // Inherited from default, plus the profile's and the agent's own.
    assert!(scope.may_write(b"/tmp/x"));
    assert!(scope.may_write(b"/builds/1/out"));
    assert!(scope.may_write(b"/extra/y"));
    assert!(scope.is_sensitive(&home(".aws/credentials")));
    assert!(!scope.is_sensitive(&home(".config/gh/hosts.yml")));
    assert!(scope.is_sensitive(b"/home/dev/src/bot/secrets/key"));
    assert!(scope.egress_allowed(ip("140.82.112.3"), 443, Some(b"github.com")));
    assert!(scope.egress_allowed(ip("192.0.2.1"), 22, Some(b"gitlab.example.com")));
    assert!(scope.egress_allowed(ip("10.2.3.4"), 443, None));
    assert!(!scope.egress_allowed(ip("10.2.3.4"), 8080, None));
    assert_eq!(scope.thresholds.dns_label_max, 40);
    assert_eq!(scope.thresholds.exfil_window_secs, 30);
    assert_eq!(scope.thresholds.dns_burst_unique, 40);
    assert_eq!(scope.response(RuleId::SuspiciousTool), Response::Kill);
    assert_eq!(scope.response(RuleId::UnallowedEgress), Response::Alert);
    assert_eq!(scope.response(RuleId::TamperSensor), Response::Alert);
    // Another agent of the profile gets none of bot's additions.
    let other = policy.scope_for(&identity("ci"));
    assert!(!other.may_write(b"/extra/y"));
    // bot's own `alert` override is bot's; the profile's `kill` is every ci agent's.
    assert_eq!(other.response(RuleId::UnallowedEgress), Response::Deny);
    assert_eq!(other.response(RuleId::SuspiciousTool), Response::Kill);
    // `extends = ""` starts from nothing.
    let bare = policy.scope_for(&identity("bare"));
    assert!(bare.may_write(b"/only/z"));
    assert!(!bare.may_write(b"/tmp/x"));
    assert!(!bare.is_sensitive(&home(".ssh/id_ed25519")));
}

#[test]
fn an_unknown_profile_falls_back_to_default() {
    let scope = builtin_scope("no-such-profile");
    assert_eq!(scope.profile, "default");
    assert!(scope.is_sensitive(&home(".claude/.credentials.json")));
}

// ---- scope: paths ----

#[test]
fn the_worktree_is_matched_component_wise() {
    let scope = builtin_scope("default");
    assert!(scope.in_worktree(b"/work/a"));
    assert!(scope.in_worktree(b"/work/a/src/lib.rs"));
    assert!(!scope.in_worktree(b"/work/ab/src/lib.rs"));
    assert!(!scope.in_worktree(b"/work"));
    assert!(scope.may_write(b"/work/a/target/debug/build/x"));
    assert!(!scope.may_write(b"/work/ab/file"));
    let nowhere = Policy::builtin().scope_for(&AgentIdentity {
        worktree: "".into(),
        ..identity("default")
    });
    assert!(!nowhere.in_worktree(b"/work/a/x"));
}

#[test]
fn temp_dirs_caches_and_devices_are_writable() {
    let scope = builtin_scope("default");
    for path in [
        &b"/tmp/cargo-install123/x"[..],
        b"/var/tmp/y",
        b"/dev/shm/z",
        b"/dev/null",
        b"/dev/tty",
        b"/dev/pts/3",
        b"/proc/self/fd/1",
        &home(".cargo/registry/cache/index.crates.io-6f17d22bba15001f/serde-1.0.0.crate"),
        &home(".cargo/git/db/x"),
        &home(".rustup/toolchains/stable/lib/x"),
        &home(".npm/_cacache/index"),
        &home(".cache/pip/http/x"),
        &home(".cache/go-build/ab/cd"),
    ] {
        assert!(scope.may_write(path), "{}", String::from_utf8_lossy(path));
    }
    for path in [
        &b"/etc/passwd"[..],
        b"/usr/local/bin/x",
        b"/tmpfoo/x",
        &home(".cargo/bin/cargo-evil"),
        &home(".local/bin/x"),
        &home(".bashrc"),
        &home("other-project/src/main.rs"),
    ] {
        assert!(!scope.may_write(path), "{}", String::from_utf8_lossy(path));
    }
}

#[test]
fn an_agent_tmpdir_can_be_added() {
    let mut scope = builtin_scope("default");
    assert!(!scope.may_write(b"/run/user/1000/tmp/x"));
    scope.add_tmp_dir(Path::new("/run/user/1000/tmp"));
    assert!(scope.may_write(b"/run/user/1000/tmp/x"));
}

#[test]
fn an_added_tmpdir_changes_remembered_sensitivity_answers() {
    let text = r#"
[profiles.default]
sensitive = ["{tmp}/keys/**"]
"#;
    let policy = check(text, "policy.toml").unwrap();
    let mut scope = policy.scope_for(&identity("default"));
    let key = b"/run/user/1000/tmp/keys/id";
    // Asked twice: the second answer is the remembered one.
    assert!(!scope.is_sensitive(key));
    assert!(!scope.is_sensitive(key));
    scope.add_tmp_dir(Path::new("/run/user/1000/tmp"));
    assert!(scope.is_sensitive(key));
    // A clone (another agent's scope) remembers nothing of this one's roots.
    assert!(scope.clone().is_sensitive(key));
}

#[test]
fn sensitive_paths() {
    let scope = builtin_scope("default");
    for path in [
        home(".ssh/id_ed25519"),
        home(".ssh/deploy_key"),
        home(".aws/credentials"),
        home(".config/gcloud/application_default_credentials.json"),
        home(".kube/config"),
        home(".docker/config.json"),
        home(".git-credentials"),
        home(".config/gh/hosts.yml"),
        home(".mozilla/firefox/abc.default/logins.json"),
        home(".claude/.credentials.json"),
        home(".codex/auth.json"),
        home(".aider.conf.yml"),
        b"/repo/.env".to_vec(),
        b"/work/a/.env.production".to_vec(),
        b"/etc/shadow".to_vec(),
        b"/proc/4242/environ".to_vec(),
        b"/proc/4242/mem".to_vec(),
    ] {
        assert!(
            scope.is_sensitive(&path),
            "{}",
            String::from_utf8_lossy(&path)
        );
        assert!(!scope.may_read(&path));
    }
    for path in [
        home(".ssh/known_hosts"),
        home(".ssh/id_ed25519.pub"),
        home(".ssh/config"),
        home(".gitconfig"),
        b"/work/a/.env.example".to_vec(),
        b"/work/a/src/env.rs".to_vec(),
        b"/etc/passwd".to_vec(),
        b"/proc/4242/status".to_vec(),
        b"/home/devx/.ssh/id_rsa".to_vec(),
    ] {
        assert!(
            !scope.is_sensitive(&path),
            "{}",
            String::from_utf8_lossy(&path)
        );
        assert!(scope.may_read(&path));
    }
    assert_eq!(
        scope.sensitive_pattern(&home(".ssh/id_rsa")),
        Some("~/.ssh/**")
    );
}

#[test]
fn an_agent_may_use_its_own_state_but_not_another_agents() {
    let claude = builtin_scope("claude");
    let codex = builtin_scope("codex");
    let credentials = home(".claude/.credentials.json");
    let settings = home(".claude/settings.json");
    assert!(!claude.is_sensitive(&credentials));
    assert!(claude.may_write(&home(".claude/projects/x.jsonl")));
    assert!(!claude.is_startup(&settings));
    assert!(claude.is_own_state(&settings));
    assert!(codex.is_sensitive(&credentials));
    assert!(codex.is_startup(&settings));
    assert!(!codex.may_write(&settings));
    assert!(!codex.is_startup(&home(".codex/config.toml")));
    assert!(claude.is_startup(&home(".codex/config.toml")));
    // Own state is the agent's own: another agent's store stays sensitive for it.
    assert!(claude.is_sensitive(&home(".codex/auth.json")));
}

#[test]
fn startup_files() {
    let scope = builtin_scope("default");
    for path in [
        home(".bashrc"),
        home(".profile"),
        home(".zshrc"),
        home(".config/fish/config.fish"),
        home(".config/systemd/user/evil.service"),
        home(".ssh/authorized_keys"),
        b"/var/spool/cron/crontabs/dev".to_vec(),
        b"/etc/cron.d/job".to_vec(),
        b"/etc/systemd/system/x.service".to_vec(),
        b"/etc/sudoers.d/dev".to_vec(),
        b"/etc/ld.so.preload".to_vec(),
        b"/other/repo/.git/hooks/pre-commit".to_vec(),
        b"/work/a/.git/hooks/pre-commit".to_vec(),
        home(".claude/settings.json"),
        b"/other/repo/.claude/settings.local.json".to_vec(),
    ] {
        assert!(
            scope.is_startup(&path),
            "{}",
            String::from_utf8_lossy(&path)
        );
    }
    for path in [
        home(".bash_history"),
        home(".cache/x"),
        b"/work/a/src/main.rs".to_vec(),
        b"/work/a/.git/objects/ab/cd".to_vec(),
        b"/etc/hosts".to_vec(),
    ] {
        assert!(
            !scope.is_startup(&path),
            "{}",
            String::from_utf8_lossy(&path)
        );
    }
}

#[test]
fn paths_need_not_be_utf8() {
    let odd_home = AgentIdentity {
        home: std::ffi::OsStr::from_bytes(b"/home/d\xe9v").into(),
        worktree: std::ffi::OsStr::from_bytes(b"/work/\xff").into(),
        ..identity("default")
    };
    let scope = Policy::builtin().scope_for(&odd_home);
    assert!(scope.is_sensitive(b"/home/d\xe9v/.ssh/id_rsa"));
    assert!(scope.may_write(b"/home/d\xe9v/.cache/\xfe"));
    assert!(scope.in_worktree(b"/work/\xff/src/\x80.rs"));
    assert!(scope.is_sensitive(b"/work/\xff/.env"));
    assert!(scope.may_write(b"/tmp/\xc3\x28"));
    assert!(!scope.may_write(b"/work/\xfe/x"));
}

use std::os::unix::ffi::OsStrExt;

#[test]
fn proc_pids_are_read_from_paths() {
    assert_eq!(proc_pid_of(b"/proc/4242/environ"), Some(4242));
    assert_eq!(proc_pid_of(b"/proc/1/task/2/mem"), Some(1));
    assert_eq!(proc_pid_of(b"/proc/self/environ"), None);
    assert_eq!(proc_pid_of(b"/procx/1/environ"), None);
}

// ---- scope: egress ----

#[test]
fn builtin_egress_allows_model_apis_and_registries_on_web_ports() {
    let scope = builtin_scope("claude");
    let remote = ip("203.0.113.10");
    for name in [
        &b"api.anthropic.com"[..],
        b"statsig.anthropic.com",
        b"api.openai.com",
        b"generativelanguage.googleapis.com",
        b"index.crates.io",
        b"static.crates.io",
        b"registry.npmjs.org",
        b"files.pythonhosted.org",
        b"codeload.github.com",
        b"objects.githubusercontent.com",
        b"API.Anthropic.COM.",
    ] {
        assert!(
            scope.egress_allowed(remote, 443, Some(name)),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    assert!(!scope.egress_allowed(remote, 443, Some(b"evilanthropic.com")));
    assert!(!scope.egress_allowed(remote, 443, Some(b"anthropic.com.evil.net")));
    assert!(!scope.egress_allowed(remote, 443, Some(b"pastebin.com")));
    assert!(!scope.egress_allowed(remote, 443, None));
    assert!(!scope.egress_allowed(remote, 4444, Some(b"api.anthropic.com")));
    assert!(scope.egress_allowed(ip("127.0.0.1"), 4444, None));
    assert!(scope.egress_allowed(ip("::1"), 5432, None));
    // Profile endpoints are the profile's.
    assert!(scope.egress_allowed(remote, 443, Some(b"o1.ingest.sentry.io")));
    assert!(!builtin_scope("codex").egress_allowed(remote, 443, Some(b"o1.ingest.sentry.io")));
}

#[test]
fn egress_by_cidr_and_port() {
    let text = "[profiles.default.egress]\ncidrs = [\"10.20.0.0/16\", \"2001:db8::/32\"]\nports = [443, 8443]\n";
    let scope = check(text, "policy.toml")
        .unwrap()
        .scope_for(&identity("default"));
    assert!(scope.egress_allowed(ip("10.20.1.1"), 8443, None));
    assert!(!scope.egress_allowed(ip("10.21.1.1"), 8443, None));
    assert!(!scope.egress_allowed(ip("10.20.1.1"), 80, None));
    assert!(scope.egress_allowed(ip("2001:db8::5"), 443, None));
    // The built-in hosts are still there (only the keys given were replaced).
    assert!(scope.egress_allowed(ip("198.51.100.1"), 443, Some(b"github.com")));
}
