//! BENCHMARKS.md: its sections (each between `bench:NAME:start` and `bench:NAME:end` markers,
//! rewritten in place by its command), the capture section's rendering, and the helpers every
//! section uses (statistics, number formats, target verdicts).

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result};

use super::{workload::WARM_UP_ITERATIONS, Capture, LoopScenario};

/// The file's first lines, written when the whole file is rewritten.
const INTRO: &str = "# Benchmarks

Every number in this file was produced by the command shown beside it, on the machine described
there; none is typed in by hand. Each section is rewritten in place by its command (between the
`bench:…:start` and `bench:…:end` markers), so a rerun replaces the previous results:
`cargo xtask bench` runs every section's scenarios in one run and rewrites them all;
`cargo xtask bench <section>` reruns one.
";

// Targets from the issue.
const UNTRACKED_MAX_OVERHEAD: f64 = 0.02;
const TRACKED_MAX_OVERHEAD: f64 = 0.15;
const MIN_EVENTS_PER_SECOND: f64 = 1_000_000.0;
const MAX_RSS_MIB: f64 = 64.0;

/// Where the numbers were measured.
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub revision: String,
    /// Which binary was measured: built here from `revision`, or given.
    pub sensor: String,
}

impl Machine {
    pub fn current() -> Result<Self> {
        let read = |path: &str| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
        };
        let cpuinfo = read("/proc/cpuinfo")?;
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown".into(), |(_, model)| model.trim().to_string());
        Ok(Self {
            // What `uname -r` prints.
            kernel: read("/proc/sys/kernel/osrelease")?.trim().to_string(),
            cpu_model,
            cores: cpuinfo
                .lines()
                .filter(|line| line.starts_with("processor"))
                .count(),
            memory_gib: read("/proc/meminfo")?
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
                .map_or(0.0, |kib| kib / 1024.0 / 1024.0),
            sensor: format!("`target/release/agent-sensor` built from {}", revision()),
            revision: revision(),
        })
    }

    /// "kernel `…`, CPU …, N cores, M GiB".
    pub fn describe(&self) -> String {
        format!(
            "kernel `{}`, CPU {}, {} cores, {:.0} GiB of memory",
            self.kernel, self.cpu_model, self.cores, self.memory_gib
        )
    }
}

/// The commit the sensor was built from, and whether the tree had uncommitted changes.
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(crate::workspace_root())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match (
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["status", "--porcelain"]),
    ) {
        (Some(commit), Some(status)) if changes_beyond_results(&status) => {
            format!("commit {commit} plus uncommitted changes")
        }
        (Some(commit), _) => format!("commit {commit}"),
        _ => "an unknown revision".into(),
    }
}

/// Whether `git status --porcelain` lists a change other than the bench's own results (a
/// previous run's BENCHMARKS.md and plot, not committed yet, build nothing).
fn changes_beyond_results(status: &str) -> bool {
    // `XY path`; the caller may have trimmed the first line's leading blank (` M`).
    status.lines().any(|line| {
        let path = line
            .trim_start()
            .split_once(' ')
            .map_or(line, |(_, path)| path.trim_start());
        !matches!(path, "BENCHMARKS.md" | "BENCHMARKS-overhead.png")
    })
}

pub fn render(capture: &Capture, machine: &Machine) -> String {
    let args = &capture.args;
    let [no_sensor, hook_alone, untracked, tracked, every_open, no_sensor_again] = &capture.loops;
    let baseline = median(&no_sensor.ns_per_iteration);
    let overhead = |scenario: &LoopScenario| median(&scenario.ns_per_iteration) / baseline - 1.0;
    let mut out = vec![
        heading(),
        format!(
            "(N = {} open/close pairs per run, R = {} runs per scenario, {} s per sustained load)",
            thousands(args.iterations),
            args.runs,
            args.load_seconds
        ),
        String::new(),
        format!("Machine: {}.  ", machine.describe()),
        format!("Sensor: {}.", machine.sensor),
        String::new(),
        "#### open/close loop".into(),
        String::new(),
        format!(
            "`open(\"/dev/null\", O_RDONLY)` + `close` N times in a process of its own, timed \
             with the monotonic clock around the loop only, after {} untimed iterations; nothing \
             pinned. The sensor (`agent-sensor run --events /dev/null --track-cgroup <cgroup>`, with a \
             state dir and control socket of its own and `--metrics-addr none`) is started \
             once per scenario; a tracked loop joins the tracked cgroup before it \
             execs. \"Other CPU\" is what processes other than the bench's own used meanwhile \
             (host busy time from /proc/stat minus the bench's and its children's): a build \
             running beside the bench shows there. \"sys_exit hook alone\" is no sensor but \
             `agent-sensor probe --hold-syscall-hooks`: a program that checks the pid and \
             returns, as a raw tracepoint on sys_exit (the sensor's own is a BTF tracepoint \
             on the same, which the kernel runs the same way; it has none on sys_enter) — \
             the part of the untracked cost that is the kernel's dispatch to any such hook, \
             not the sensor's check. By default a process that opens a file again the same \
             way within a second of an open that was sent is counted in the kernel, not sent \
             (`run --repeat-window-ms`): the tracked loop makes its first open's record and \
             then one a second; \"every open sent\" is the same loop with the window at 0, \
             one record per iteration, its path walked by the kernel. The last row repeats \
             the first: how far the baseline moves on its own is the noise the other rows \
             should be read against.",
            thousands(WARM_UP_ITERATIONS)
        ),
        String::new(),
        "| scenario | median ns/iteration | min–max over R runs | vs. no sensor | other CPU \
         (cores) |"
            .into(),
        "| --- | ---: | ---: | ---: | ---: |".into(),
    ];
    for scenario in &capture.loops {
        let versus = if std::ptr::eq(scenario, no_sensor) {
            "—".to_string()
        } else {
            percent(overhead(scenario))
        };
        out.push(format!(
            "| {} | {:.1} | {:.1}–{:.1} | {versus} | {:.2} |",
            scenario.name,
            median(&scenario.ns_per_iteration),
            min(&scenario.ns_per_iteration),
            max(&scenario.ns_per_iteration),
            scenario.other_cpu_cores,
        ));
    }
    out.push(String::new());
    // Loop iterations each sensor saw: R runs of N timed and the untimed warm-up.
    let iterations = args.runs as u64 * (args.iterations + WARM_UP_ITERATIONS);
    for scenario in &capture.loops {
        let Some(totals) = scenario.sensor else {
            continue;
        };
        out.push(format!(
            "{}: the sensor decoded {} events, the kernel dropped {} and {} were undecodable \
             ({:.2} records per loop iteration).  ",
            scenario.name,
            thousands(totals.events),
            thousands(totals.kernel_dropped),
            thousands(totals.undecodable),
            (totals.events + totals.kernel_dropped + totals.undecodable) as f64 / iterations as f64,
        ));
    }
    out.extend([
        String::new(),
        "#### sustained decode".into(),
        String::new(),
        "The tracked loop in P processes at once, each for the given time, every open sent \
         (`--repeat-window-ms 0`): the open/close loop \
         (one record per iteration, its path walked by the kernel) or a kill(self, 0) loop (one \
         small record per call, nothing to walk: the fastest a process makes records, to load \
         the decoder harder than open/close loops can with the two cores shared); \"event stream\" says \
         whether the sensor also wrote every event as a JSON line (`--events /dev/null`) or only \
         decoded, correlated and judged them (the default deployment: alerts and metrics). \
         events/s is the sensor's own `stopped: N events` count over the \
         wall time of the load (the count includes what was still queued in the ring buffer when \
         the load ended, at most its 8 MiB); kernel drops are the sum of its `kernel dropped` lines; CPU is \
         its utime+stime over the same time (1.00 = one core busy); \"per CPU-second\" is events \
         decoded per second of sensor CPU, what one core fully given to the sensor would decode \
         (the loops, which need a core each, leave the sensor less than one here); memory is \
         read from /proc/<pid>/status at the end of the load."
            .into(),
        String::new(),
        "| P | loop | event stream | wall s | loop iterations | events decoded | events/s | kernel drops \
         | undecodable | sensor CPU (cores) | per CPU-second | VmHWM MiB | VmRSS MiB \
         | other CPU (cores) |"
            .into(),
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            .into(),
    ]);
    for load in &capture.loads {
        out.push(format!(
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {:.2} | {} | {:.1} | {:.1} | {:.2} |",
            load.processes,
            load.generator.name(),
            if load.event_stream { "yes" } else { "no" },
            load.wall.as_secs_f64(),
            thousands(load.iterations),
            thousands(load.totals.events),
            thousands(load.events_per_second() as u64),
            thousands(load.totals.kernel_dropped),
            thousands(load.totals.undecodable),
            load.sensor_cpu_seconds / load.wall.as_secs_f64(),
            thousands(load.per_cpu_second() as u64),
            mib(load.sensor_memory.peak_rss_kib),
            mib(load.sensor_memory.rss_kib),
            load.other_cpu_cores,
        ));
    }

    out.extend([
        String::new(),
        "#### targets".into(),
        String::new(),
        "| target | measured | result |".into(),
        "| --- | --- | --- |".into(),
    ]);
    let drift = overhead(no_sensor_again);
    let untracked_overhead = overhead(untracked);
    out.push(format!(
        "| untracked loop within noise: ≤ {} | {} (the syscall hook alone: {}) | {} |",
        percent(UNTRACKED_MAX_OVERHEAD),
        percent(untracked_overhead),
        percent(overhead(hook_alone)),
        overhead_verdict(untracked_overhead, UNTRACKED_MAX_OVERHEAD, drift),
    ));
    let tracked_overhead = overhead(tracked);
    out.push(format!(
        "| tracked loop: ≤ {} | {} (every open sent: {}) | {} |",
        percent(TRACKED_MAX_OVERHEAD),
        percent(tracked_overhead),
        percent(overhead(every_open)),
        overhead_verdict(tracked_overhead, TRACKED_MAX_OVERHEAD, drift),
    ));
    let best_lossless = capture
        .loads
        .iter()
        .filter(|load| load.totals.lossless())
        .max_by(|a, b| a.events_per_second().total_cmp(&b.events_per_second()));
    let (measured, verdict) = match best_lossless {
        Some(load) => {
            let rate = load.events_per_second();
            (
                format!(
                    "{} events/s (best lossless load, P = {}, {} loop)",
                    thousands(rate as u64),
                    load.processes,
                    load.generator.name()
                ),
                if rate >= MIN_EVENTS_PER_SECOND {
                    "PASS".to_string()
                } else {
                    format!(
                        "MISS ({:.0} % of the target)",
                        rate / MIN_EVENTS_PER_SECOND * 100.0
                    )
                },
            )
        }
        None => {
            // Every load outran the decoder: its best rate bounds the lossless rate from above.
            let fastest = capture
                .loads
                .iter()
                .max_by(|a, b| a.events_per_second().total_cmp(&b.events_per_second()));
            let measured = fastest.map_or("no load ran".into(), |load| {
                format!(
                    "no load was lossless; at most {} events/s decoded (P = {}, {} loop, {} dropped)",
                    thousands(load.events_per_second() as u64),
                    load.processes,
                    load.generator.name(),
                    thousands(load.totals.kernel_dropped + load.totals.undecodable)
                )
            });
            (measured, "MISS".to_string())
        }
    };
    // What one core decodes, from the load that kept the decoder busiest.
    let capacity = capture
        .loads
        .iter()
        .filter(|load| !load.event_stream)
        .max_by(|a, b| a.per_cpu_second().total_cmp(&b.per_cpu_second()))
        .map(|load| {
            format!(
                "; decoding alone: {} events per sensor CPU-second (P = {}, {} loop)",
                thousands(load.per_cpu_second() as u64),
                load.processes,
                load.generator.name()
            )
        })
        .unwrap_or_default();
    out.push(format!(
        "| ≥ {} events/s decoded with zero loss | {measured}{capacity} | {verdict} |",
        thousands(MIN_EVENTS_PER_SECOND as u64)
    ));
    let peak_mib = capture
        .loads
        .iter()
        .map(|load| mib(load.sensor_memory.peak_rss_kib))
        .fold(0.0, f64::max);
    out.push(format!(
        "| sensor RSS ≤ {MAX_RSS_MIB:.0} MiB | peak (VmHWM) {peak_mib:.1} MiB | {} |",
        if peak_mib <= MAX_RSS_MIB {
            "PASS"
        } else {
            "MISS"
        }
    ));
    out.push(String::new());
    out.join("\n")
}

/// `### <date>` and the command line that produced a section.
pub fn heading() -> String {
    let command: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "### {}\n\nCommand: `cargo xtask {}`  ",
        utc_now(),
        command.join(" ")
    )
}

/// One target of the issue and how this run did.
pub struct Target {
    pub name: String,
    pub measured: String,
    /// PASS, MISS …, or "—" for what is reported without a number to meet.
    pub verdict: String,
}

impl Target {
    /// PASS when `value` ≤ `limit`, else MISS by the gap; a value closer to the limit than
    /// `noise` says so.
    pub fn limit(name: String, value: f64, limit: f64, noise: f64) -> Self {
        Self {
            name,
            measured: percent(value),
            verdict: overhead_verdict(value, limit, noise),
        }
    }

    pub fn passed(&self) -> Option<bool> {
        if self.verdict.starts_with("PASS") {
            Some(true)
        } else if self.verdict.starts_with("MISS") {
            Some(false)
        } else {
            None
        }
    }
}

pub fn targets_table(targets: &[Target]) -> Vec<String> {
    let mut out = vec![
        "| target | measured | result |".to_string(),
        "| --- | --- | --- |".to_string(),
    ];
    for t in targets {
        out.push(format!("| {} | {} | {} |", t.name, t.measured, t.verdict));
    }
    out
}

/// PASS or MISS against `limit`; a verdict closer to the limit than the baseline's own drift
/// (or another noise estimate) says so, as noise could have decided it.
pub fn overhead_verdict(overhead: f64, limit: f64, drift: f64) -> String {
    let verdict = if overhead <= limit {
        "PASS".to_string()
    } else {
        format!(
            "MISS by {:.1} percentage points",
            (overhead - limit) * 100.0
        )
    };
    if (overhead - limit).abs() < drift.abs() {
        format!(
            "{verdict} (within the noise of ±{})",
            percent_plain(drift.abs())
        )
    } else {
        verdict
    }
}

/// One section of BENCHMARKS.md: its marker name, its heading, its body.
pub struct Section {
    pub name: &'static str,
    pub title: &'static str,
    pub body: String,
}

fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- bench:{name}:start -->"),
        format!("<!-- bench:{name}:end -->"),
    )
}

fn read_or_intro(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(INTRO.to_string()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces one section of BENCHMARKS.md in place (appending it if the file lacks it).
pub fn replace_section(path: &Path, section: &Section) -> Result<()> {
    let old = read_or_intro(path)?;
    std::fs::write(path, with_section(&old, section))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn with_section(old: &str, section: &Section) -> String {
    let (start_marker, end_marker) = markers(section.name);
    let block = format!("{start_marker}\n{}{end_marker}", section.body);
    match (old.find(&start_marker), old.find(&end_marker)) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{block}{}", &old[..start], &old[end + end_marker.len()..])
        }
        _ => format!("{}\n\n## {}\n\n{block}\n", old.trim_end(), section.title),
    }
}

/// Rewrites the whole file: the introduction, then every section in order; sections of the
/// old file that are not given (none, after a full run) are kept after them.
pub fn rewrite(path: &Path, sections: &[Section]) -> Result<()> {
    let old = read_or_intro(path)?;
    let mut text = INTRO.to_string();
    for section in sections {
        text = with_section(&text, section);
    }
    // Sections of the old file this run did not produce.
    let mut rest = old.as_str();
    while let Some(at) = rest.find("<!-- bench:") {
        let after = &rest[at + "<!-- bench:".len()..];
        let Some(name) = after.split(':').next() else {
            break;
        };
        let (start_marker, end_marker) = markers(name);
        let Some(end) = rest.find(&end_marker) else {
            break;
        };
        if !sections.iter().any(|s| s.name == name) && rest[at..].starts_with(&start_marker) {
            let body = &rest[at + start_marker.len()..end];
            // The section keeps the heading it had (the last one above its start marker).
            let title = rest[..at]
                .rfind("\n## ")
                .map(|h| rest[h + 4..at].lines().next().unwrap_or(name).trim())
                .unwrap_or(name);
            text = format!(
                "{}\n\n## {title}\n\n{start_marker}{body}{end_marker}\n",
                text.trim_end()
            );
        }
        rest = &rest[end + end_marker.len()..];
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let sorted = sorted(values);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

pub fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The q-quantile by the nearest-rank method (q = 1: the maximum); None when empty.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let sorted = sorted(values);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// A signed percentage: "+12.3 %".
pub fn percent(ratio: f64) -> String {
    format!("{:+.1} %", ratio * 100.0)
}

/// An unsigned percentage: "12.3 %" (two decimals below 1 %).
pub fn percent_plain(ratio: f64) -> String {
    if ratio > 0.0 && ratio < 0.01 {
        format!("{:.2} %", ratio * 100.0)
    } else {
        format!("{:.1} %", ratio * 100.0)
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

pub fn utc_now() -> String {
    // SAFETY: time(NULL) and gmtime_r into a zeroed struct we own.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::gmtime_r(&now, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_results_alone_are_no_uncommitted_change() {
        assert!(!changes_beyond_results(""));
        assert!(!changes_beyond_results(
            " M BENCHMARKS.md\n M BENCHMARKS-overhead.png"
        ));
        // As `revision` gets it: the output trimmed, so the first status lost its blank.
        assert!(!changes_beyond_results(
            "M BENCHMARKS-overhead.png\n M BENCHMARKS.md"
        ));
        assert!(!changes_beyond_results(
            "MM BENCHMARKS.md\n?? BENCHMARKS-overhead.png"
        ));
        assert!(changes_beyond_results(
            " M BENCHMARKS.md\n M agent-sensor/src/lib.rs"
        ));
        assert!(changes_beyond_results("?? notes.txt"));
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(50.0));
        assert_eq!(percentile(&values, 0.99), Some(99.0));
        assert_eq!(percentile(&values, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn replaces_only_the_section() {
        let (start, end) = markers("capture");
        let old = format!("intro\n\n## capture\n\n{start}\nold\n{end}\n\n## other\n");
        let section = Section {
            name: "capture",
            title: "capture",
            body: "new\n".into(),
        };
        assert_eq!(
            with_section(&old, &section),
            format!("intro\n\n## capture\n\n{start}\nnew\n{end}\n\n## other\n")
        );
        let appended = with_section(
            "intro\n",
            &Section {
                name: "x",
                ..section
            },
        );
        assert!(
            appended.ends_with("## capture\n\n<!-- bench:x:start -->\nnew\n<!-- bench:x:end -->\n")
        );
    }

    #[test]
    fn a_full_rewrite_orders_sections_and_keeps_others() {
        let path = std::env::temp_dir().join(format!("bench-md-{}", std::process::id()));
        let (cs, ce) = markers("capture");
        let (ks, ke) = markers("kept");
        std::fs::write(
            &path,
            format!(
                "old intro\n\n## capture\n\n{cs}\nold\n{ce}\n\n## Kept for good\n\n{ks}\nk\n{ke}\n"
            ),
        )
        .unwrap();
        rewrite(
            &path,
            &[
                Section {
                    name: "summary",
                    title: "Summary",
                    body: "s\n".into(),
                },
                Section {
                    name: "capture",
                    title: "capture",
                    body: "c\n".into(),
                },
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.starts_with(INTRO));
        let summary = text.find("## Summary").unwrap();
        let capture = text.find("## capture").unwrap();
        let kept = text.find(&format!("{ks}\nk\n{ke}")).unwrap();
        assert!(summary < capture && capture < kept, "{text}");
        assert!(
            text.contains("## Kept for good\n"),
            "the kept heading changed: {text}"
        );
        assert!(!text.contains("old intro") && !text.contains("\nold\n"));
    }
}
