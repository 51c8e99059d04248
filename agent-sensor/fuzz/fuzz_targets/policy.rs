//! Policy files: `policy::check` must accept or report errors (each with a line) for any
//! text, and a policy it accepts must compile a scope for any agent, answering its questions.
#![no_main]

use std::{net::IpAddr, path::Path};

use agent_sensor::policy::{check, Policy, PolicyError, RuleId};
use libfuzzer_sys::fuzz_target;

/// Questions a detector asks of a scope, on paths that patterns commonly name.
const PATHS: [&[u8]; 6] = [
    b"/home/u/.ssh/id_rsa",
    b"/home/u/work/src/main.rs",
    b"/etc/shadow",
    b"/tmp/x",
    b"/proc/1/environ",
    b"relative\xff",
];

fn exercise(policy: &Policy) {
    let home = Path::new("/home/u");
    let worktree = Path::new("/home/u/work");
    // Building a scope is not cheap: a configured agent (if any) and an unknown one, each
    // with the policy's first profile and one it does not have.
    let names = policy.file.agents.keys().take(1).map(String::as_str);
    let profiles = policy.file.profiles.keys().take(1).map(String::as_str);
    for name in names.chain(["fuzz-agent"]) {
        for profile in profiles.clone().chain(["no-such-profile"]) {
            let identity = policy.identity(name, home, profile, worktree);
            let mut scope = policy.scope_for(&identity);
            scope.add_tmp_dir(Path::new("/run/user/1000/tmp"));
            for path in PATHS {
                let _ = scope.may_read(path);
                let _ = scope.may_write(path);
                let _ = scope.sensitive_pattern(path);
                let _ = scope.startup_pattern(path);
            }
            let ip: IpAddr = [93, 184, 216, 34].into();
            let _ = scope.egress_allowed(ip, 443, Some(b"api.example.com"));
            let _ = scope.host_allowed(b"x.anthropic.com");
            for rule in RuleId::ALL {
                let _ = scope.response(rule);
            }
        }
    }
    let _ = policy.discovered_profile(b"claude");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match check(&text, "fuzz.toml") {
        Ok(policy) => exercise(&policy),
        Err(errors) => {
            assert!(
                !errors.is_empty(),
                "an invalid policy has at least one error"
            );
            for error in &errors {
                let message = error.to_string();
                assert!(!message.is_empty());
                if let PolicyError::Invalid { line, .. } = error {
                    assert!(*line <= text.lines().count() + 1, "line {line}: {message}");
                }
            }
        }
    }
});
