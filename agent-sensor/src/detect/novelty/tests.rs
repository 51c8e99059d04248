use super::super::{testkit::*, Detector, Finding};
use super::*;
use crate::policy::RuleId;

fn novel(findings: Vec<Finding>) -> Vec<Finding> {
    findings
        .into_iter()
        .filter(|f| f.rule == RuleId::NovelBehavior)
        .collect()
}

const START: u64 = 1_700_000_000;
const LEARNING: u64 = 3_600;

/// What the profile does while learning: git, cargo, its own build output, its LLM endpoint,
/// the cargo registry.
fn learning_session(fx: &mut Fixture) {
    for _ in 0..20 {
        fx.feed(exec(PID + 1, "/usr/bin/git", &["git", "status"]));
        fx.feed(exec(PID + 2, "/usr/bin/cargo", &["cargo", "build"]));
        fx.feed(exec(PID + 3, "/work/a/target/debug/app", &["app"]));
        fx.feed(connect(PID, "160.79.104.10", 443).dns_name("api.anthropic.com"));
        fx.feed(open(PID, "/home/u/.cargo/registry/index/x", WRITE));
        fx.advance_secs(1);
    }
}

#[test]
fn after_learning_what_is_new_is_reported_once_and_what_is_known_is_not() {
    let mut fx = Fixture::new();
    fx.detector.novelty.set_now(START);
    learning_session(&mut fx);
    fx.detector.novelty.set_now(START + LEARNING);

    assert!(novel(fx.feed(exec(PID + 1, "/usr/bin/git", &["git", "log"]))).is_empty());
    assert!(novel(fx.feed(exec(
        PID + 4,
        "/work/a/target/debug/deps/app-1a2b3c4d5e6f",
        &["t"]
    )))
    .is_empty());
    assert!(
        novel(fx.feed(connect(PID, "160.79.104.11", 443).dns_name("API.anthropic.com"))).is_empty()
    );

    let found = novel(fx.feed(exec(PID + 5, "/tmp/x/payload", &["payload"])));
    assert_eq!(found.len(), 1, "{found:#?}");
    let score = found[0].score.expect("novelty has a score");
    assert!(score >= 80, "{score}");
    assert_eq!(found[0].severity, severity(score));
    assert!(
        found[0]
            .summary
            .starts_with("ran /tmp/x/payload, a binary profile test has not used before"),
        "{}",
        found[0].summary
    );
    // Learned once reported.
    assert!(novel(fx.feed(exec(PID + 5, "/tmp/x/payload", &["payload"]))).is_empty());

    let found = novel(fx.feed(connect(PID, "203.0.113.5", 8443)));
    assert_eq!(found.len(), 1);
    assert!(found[0]
        .summary
        .contains("reached 203.0.113.5:8443, a destination"));
    // The neighbouring address of the same service is the same destination.
    assert!(novel(fx.feed(connect(PID, "203.0.113.6", 8443))).is_empty());

    let found = novel(fx.feed(open(PID, "/home/u/.config/autostart/x.desktop", WRITE)));
    assert_eq!(found.len(), 1);
    assert!(found[0].summary.contains("wrote under /home/u/.config"));
    assert_eq!(found[0].severity, crate::policy::Severity::Medium);
}

#[test]
fn nothing_is_reported_while_learning() {
    let mut fx = Fixture::new();
    fx.detector.novelty.set_now(START);
    learning_session(&mut fx);
    fx.detector.novelty.set_now(START + LEARNING - 1);
    assert!(novel(fx.feed(exec(PID + 5, "/tmp/x/payload", &["payload"]))).is_empty());
}

#[test]
fn a_profile_that_has_seen_little_scores_below_the_minimum() {
    let mut fx = Fixture::with_policy(&policy_with("learning_secs", "0"));
    // Nothing learned yet: anything is as likely new as not, score 43 for a system binary.
    assert!(novel(fx.feed(exec(PID + 1, "/usr/bin/make", &["make"]))).is_empty());
}

#[test]
fn learned_profiles_survive_a_restart() {
    let dir = TempDir::new("novelty-restart");
    let mut fx = Fixture::new();
    fx.detector = Detector::with_state_dir(&dir.0).unwrap();
    fx.detector.novelty.set_now(START);
    learning_session(&mut fx);
    fx.detector.save().unwrap();
    let file = dir.0.join("novelty/test.json");
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["first_seen_unix"], START);
    assert_eq!(stored["binaries"]["items"]["/usr/bin/git"], 20);

    // A new daemon: the learning period is not restarted and what was learned is known.
    fx.detector = Detector::with_state_dir(&dir.0).unwrap();
    fx.detector.novelty.set_now(START + LEARNING);
    assert!(novel(fx.feed(exec(PID + 1, "/usr/bin/git", &["git"]))).is_empty());
    assert_eq!(
        novel(fx.feed(exec(PID + 5, "/tmp/x/payload", &["p"]))).len(),
        1
    );
    // As at a daemon's stop: the autosave thread may still be writing (through a temporary
    // file) what those events changed; the save waits for it.
    fx.detector.save().unwrap();
    assert!(!dir
        .0
        .join("novelty")
        .read_dir()
        .unwrap()
        .any(|e| { e.unwrap().file_name().to_string_lossy().contains(".tmp") }));
}

#[test]
fn with_a_zero_learning_period_a_seeded_profile_judges_at_once() {
    let dir = TempDir::new("novelty-seeded");
    std::fs::create_dir_all(dir.0.join("novelty")).unwrap();
    std::fs::write(
        dir.0.join("novelty/test.json"),
        r#"{"version": 1, "first_seen_unix": 5,
            "binaries": {"observations": 100, "items": {"/usr/bin/git": 100}},
            "destinations": {"observations": 0, "items": {}},
            "path_areas": {"observations": 0, "items": {}}}"#,
    )
    .unwrap();
    let mut fx = Fixture::with_policy(&policy_with("learning_secs", "0"));
    fx.detector = Detector::with_state_dir(&dir.0).unwrap();
    assert!(novel(fx.feed(exec(PID + 1, "/usr/bin/git", &["git"]))).is_empty());
    let found = novel(fx.feed(exec(PID + 2, "/usr/bin/strace", &["strace", "-p", "1"])));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].score, Some(84));
    assert_eq!(found[0].severity, crate::policy::Severity::High);
}

#[test]
fn observe_saves_changed_profiles_without_being_asked() {
    let dir = TempDir::new("novelty-autosave");
    let mut fx = Fixture::new();
    fx.detector = Detector::with_state_dir(&dir.0).unwrap();
    fx.detector.novelty.set_now(START);
    fx.feed(exec(PID + 1, "/usr/bin/git", &["git"]));
    // Written by the writer thread, off the run loop: it lands shortly after.
    let file = dir.0.join("novelty/test.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(file.exists(), "no autosave within 5 s");
}

#[test]
fn an_unreadable_profile_is_set_aside_and_learning_starts_afresh() {
    let dir = TempDir::new("novelty-corrupt");
    std::fs::create_dir_all(dir.0.join("novelty")).unwrap();
    std::fs::write(dir.0.join("novelty/test.json"), "{not json").unwrap();
    let mut fx = Fixture::new();
    fx.detector = Detector::with_state_dir(&dir.0).unwrap();
    assert!(dir.0.join("novelty/test.json.corrupt").exists());
    fx.detector.novelty.set_now(START);
    fx.feed(exec(PID + 1, "/usr/bin/git", &["git"]));
    fx.detector.save().unwrap();
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.0.join("novelty/test.json")).unwrap()).unwrap();
    assert_eq!(stored["first_seen_unix"], START);
}

#[test]
fn generated_names_and_areas_are_generalised() {
    assert_eq!(
        generalise("/tmp/go-build1234567/b001/exe/main"),
        "/tmp/go-*/b001/exe/main"
    );
    assert_eq!(
        generalise("/home/u/.npm/_npx/4f2a9c1b0e7d6c3a/x"),
        "/home/u/.npm/_npx/*/x"
    );
    assert_eq!(generalise("/usr/bin/python3.12"), "/usr/bin/python3.12");
    assert_eq!(
        generalise("/usr/lib/x86_64-linux-gnu/libc.so.6"),
        "/usr/lib/x86_64-linux-gnu/libc.so.6"
    );
    assert_eq!(
        path_area(b"/home/u/.config/autostart/x.desktop"),
        b"/home/u/.config"
    );
    assert_eq!(path_area(b"/etc/passwd"), b"/etc");
    assert_eq!(path_area(b"/tmp/tmpab12cd34/x/y"), b"/tmp");
    assert_eq!(path_area(b"/x"), b"/");
    assert_eq!(
        network_of("203.0.113.77".parse().unwrap(), 443),
        "203.0.113.0/24:443"
    );
    assert_eq!(
        network_of("2001:db8:1:2:3::4".parse().unwrap(), 443),
        "2001:db8:1:2::/64:443"
    );
}
