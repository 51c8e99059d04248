//! Alerts to an HTTP webhook, surviving receiver outages and sensor restarts.
//!
//! [`WebhookSink::push`] writes each alert line to its own file in a spool directory
//! (`<20-digit sequence>.alert`, written to a temporary name, synced, then renamed, so a file
//! with the final name is always whole) before returning. A background task POSTs the spooled
//! alerts in sequence order, one per request (`Content-Type: application/json`), and removes
//! each file only after a 2xx answer. Failures (connection refused, timeout, 5xx, 401, 403,
//! 408, 429…) are retried with exponential backoff up to a cap, the same alert first, so order
//! is kept; answers that can never succeed for that body (400, 413, 415, 422) drop it, logged
//! and counted. A new sink on the same directory (after a restart) resumes with what is there.
//!
//! The spool is bounded in alerts and bytes: when full, the oldest alerts are dropped and
//! counted. Delivery is at least once: only a crash between the receiver's 2xx and the file's
//! removal sends an alert twice. Only one sink uses a spool directory at a time (an exclusive
//! `flock` on `<dir>/.lock`).
//!
//! Plain `http://` only: for TLS, point the sink at a local relay that terminates it (see
//! deploy/README.md).

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};

use super::{
    http::{http_request, HttpRequest},
    metrics::Metrics,
};

const SUFFIX: &str = ".alert";
const TMP_SUFFIX: &str = ".tmp";
/// Bytes of a receiver's answer read (the status is all that matters).
const MAX_ANSWER: usize = 64 * 1024;

/// Where and how to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://host[:port][/path]`.
    pub url: String,
    /// Created (mode 0700) if missing.
    pub spool_dir: PathBuf,
    /// Alerts kept at most; past it the oldest are dropped.
    pub max_spool_alerts: usize,
    /// Bytes kept at most; past it the oldest are dropped (the newest alert is always kept).
    pub max_spool_bytes: u64,
    /// First wait after a failure; doubled after each further failure…
    pub initial_backoff: Duration,
    /// …up to this.
    pub max_backoff: Duration,
    /// Connect, send and read the answer within this.
    pub request_timeout: Duration,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
}

impl WebhookConfig {
    pub fn new(url: impl Into<String>, spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            spool_dir: spool_dir.into(),
            max_spool_alerts: 10_000,
            max_spool_bytes: 64 * 1024 * 1024,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            headers: Vec::new(),
        }
    }
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl WebhookUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "webhook URL {url}: https is not supported; send to a local relay that terminates TLS (http://127.0.0.1:PORT/…)"
            ));
        } else {
            return Err(format!("webhook URL {url}: must start with http://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "webhook URL {url}: credentials in the URL are not supported; use a header"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("webhook URL {url}: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("webhook URL {url}: junk after the host")),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("webhook URL {url}: bad port `{p}`"))?,
            None => 80,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!("webhook URL {url}: no valid host"));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "webhook URL {url}: spaces or control characters in the path"
            ));
        }
        Ok(Self { host, port, path })
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Counters of a sink since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub retries: u64,
    /// Dropped because the receiver refused them for good (400, 413, 415, 422).
    pub rejected: u64,
    /// Dropped because the spool was full (oldest first).
    pub dropped: u64,
    /// In the spool now.
    pub pending: u64,
    pub pending_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    len: u64,
}

#[derive(Debug, Default)]
struct Spool {
    queue: VecDeque<Entry>,
    bytes: u64,
    next_seq: u64,
}

struct Shared {
    dir: PathBuf,
    url: WebhookUrl,
    config: WebhookConfig,
    spool: Mutex<Spool>,
    wake: Notify,
    metrics: Option<Arc<Metrics>>,
    delivered: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    /// Holds the spool directory's lock for as long as the sink (and its task) lives.
    _lock: File,
}

/// The webhook sink: push alerts; a background task delivers them.
pub struct WebhookSink {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.shared.config.url)
            .field("spool_dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

fn spool_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

fn parse_spool_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn lock_dir(dir: &Path) -> io::Result<File> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(".lock"))?;
    // SAFETY: a valid descriptor owned by `lock`.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "webhook spool {} is in use by another agent-sensor",
                    dir.display()
                ),
            )
        } else {
            e
        });
    }
    Ok(lock)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Shared {
    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(spool_name(seq))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the oldest alerts while the spool is over a bound (never the newest one).
    fn enforce_bounds(&self, spool: &mut Spool) {
        let mut dropped = 0;
        while spool.queue.len() > 1
            && (spool.queue.len() > self.config.max_spool_alerts
                || spool.bytes > self.config.max_spool_bytes)
        {
            let Some(oldest) = spool.queue.pop_front() else {
                break;
            };
            spool.bytes -= oldest.len;
            let _ = fs::remove_file(self.path(oldest.seq));
            dropped += 1;
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.webhook_spool_dropped(dropped);
            }
            log::warn!(
                "webhook spool {} full: dropped the {dropped} oldest alert(s)",
                self.dir.display()
            );
        }
    }

    fn publish(&self, spool: &Spool) {
        if let Some(m) = &self.metrics {
            m.set_webhook_spool(spool.queue.len() as u64, spool.bytes);
        }
    }

    /// Removes a delivered (or rejected) alert: its file, and its queue entry if it is still
    /// the oldest (a full spool may have dropped it meanwhile).
    fn remove(&self, entry: Entry) {
        let mut spool = self.lock();
        let _ = fs::remove_file(self.path(entry.seq));
        if spool.queue.front() == Some(&entry) {
            spool.queue.pop_front();
            spool.bytes -= entry.len;
        }
        self.publish(&spool);
    }
}

impl WebhookSink {
    /// Opens (or creates) the spool, takes its lock, and starts delivering what is in it.
    /// Must be called inside a tokio runtime.
    pub fn start(config: WebhookConfig, metrics: Option<Arc<Metrics>>) -> io::Result<Self> {
        let url = WebhookUrl::parse(&config.url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let dir = config.spool_dir.clone();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create webhook spool {}: {e}", dir.display()),
                )
            })?;
        let lock = lock_dir(&dir)?;

        let mut found = Vec::new();
        for item in fs::read_dir(&dir)? {
            let item = item?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TMP_SUFFIX) {
                // Never renamed into place: the push that wrote it did not return.
                let _ = fs::remove_file(item.path());
            } else if let Some(seq) = parse_spool_name(&name) {
                let len = item.metadata()?.len();
                found.push(Entry { seq, len });
            }
        }
        found.sort_by_key(|e| e.seq);
        let mut spool = Spool {
            bytes: found.iter().map(|e| e.len).sum(),
            next_seq: found.last().map(|e| e.seq + 1).unwrap_or(1),
            queue: found.into(),
        };

        let shared = Arc::new(Shared {
            dir,
            url,
            config,
            spool: Mutex::new(Spool::default()),
            wake: Notify::new(),
            metrics,
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            _lock: lock,
        });
        shared.enforce_bounds(&mut spool);
        shared.publish(&spool);
        if !spool.queue.is_empty() {
            log::info!(
                "webhook spool {}: resuming delivery of {} alert(s)",
                shared.dir.display(),
                spool.queue.len()
            );
            shared.wake.notify_one();
        }
        *shared.lock() = spool;
        let task = tokio::spawn(deliver(shared.clone()));
        Ok(Self {
            shared,
            task: Some(task),
        })
    }

    /// Spools one alert (a JSON line; the newline is added if missing) and returns once it is
    /// on disk. A line break inside it is refused: one alert, one line.
    pub fn push(&self, line: &[u8]) -> io::Result<()> {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if body.is_empty() || body.contains(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an alert is one non-empty line",
            ));
        }
        let shared = &self.shared;
        let mut spool = shared.lock();
        let seq = spool.next_seq;
        let tmp = shared.dir.join(format!("{seq:020}{TMP_SUFFIX}"));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(body)?;
            file.write_all(b"\n")?;
            file.sync_data()?;
            fs::rename(&tmp, shared.path(seq))
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io::Error::new(
                e.kind(),
                format!("cannot spool alert in {}: {e}", shared.dir.display()),
            ));
        }
        sync_dir(&shared.dir);
        spool.next_seq += 1;
        let len = body.len() as u64 + 1;
        spool.queue.push_back(Entry { seq, len });
        spool.bytes += len;
        shared.enforce_bounds(&mut spool);
        shared.publish(&spool);
        drop(spool);
        shared.wake.notify_one();
        Ok(())
    }

    /// [`WebhookSink::push`] of a JSON value.
    pub fn push_json(&self, value: &serde_json::Value) -> io::Result<()> {
        self.push(&serde_json::to_vec(value).map_err(io::Error::other)?)
    }

    pub fn stats(&self) -> WebhookStats {
        let s = &self.shared;
        let spool = s.lock();
        WebhookStats {
            delivered: s.delivered.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            pending: spool.queue.len() as u64,
            pending_bytes: spool.bytes,
        }
    }

    /// Stops delivering and releases the spool (what is not delivered stays for the next
    /// start). An alert being sent is abandoned and sent again next time.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What an answer means for the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Retry,
    Reject,
}

fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        // The body itself is what the receiver refuses: retrying cannot help.
        400 | 413 | 415 | 422 => Verdict::Reject,
        _ => Verdict::Retry,
    }
}

async fn post(shared: &Shared, body: &[u8]) -> io::Result<u16> {
    let url = &shared.url;
    let addr = tokio::time::timeout(
        shared.config.request_timeout,
        tokio::net::lookup_host((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "name lookup timed out"))??
    .next()
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} has no address", url.host),
        )
    })?;
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    headers.extend(shared.config.headers.iter().cloned());
    let request = HttpRequest {
        host: &url.authority(),
        method: "POST",
        path: &url.path,
        headers: &headers,
        body,
    };
    let answer = http_request(addr, &request, shared.config.request_timeout, MAX_ANSWER).await?;
    Ok(answer.status)
}

/// The delivery loop: oldest first, one at a time, backing off while the receiver fails.
async fn deliver(shared: Arc<Shared>) {
    let initial = shared.config.initial_backoff.max(Duration::from_millis(1));
    let cap = shared.config.max_backoff.max(initial);
    let mut backoff = initial;
    let mut failing_since: Option<u64> = None;
    loop {
        let front = shared.lock().queue.front().copied();
        let Some(entry) = front else {
            shared.wake.notified().await;
            continue;
        };
        let body = match fs::read(shared.path(entry.seq)) {
            Ok(mut body) => {
                if body.last() == Some(&b'\n') {
                    body.pop();
                }
                body
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Dropped by a full spool meanwhile.
                shared.remove(entry);
                continue;
            }
            Err(e) => {
                log::error!(
                    "webhook spool: cannot read {}: {e}",
                    shared.path(entry.seq).display()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cap);
                continue;
            }
        };
        if body.is_empty() {
            shared.remove(entry);
            continue;
        }
        let result = post(&shared, &body).await;
        let outcome = match &result {
            Ok(status) => verdict(*status),
            Err(_) => Verdict::Retry,
        };
        match outcome {
            Verdict::Delivered => {
                shared.remove(entry);
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &shared.metrics {
                    m.webhook_delivery("delivered");
                }
                if let Some(failures) = failing_since.take() {
                    log::info!(
                        "webhook {}: delivering again after {failures} failed attempt(s)",
                        shared.config.url
                    );
                }
                backoff = initial;
            }
            Verdict::Reject => {
                shared.remove(entry);
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &shared.metrics {
                    m.webhook_delivery("rejected");
                }
                log::error!(
                    "webhook {} refused an alert for good ({:?}); dropped it",
                    shared.config.url,
                    result
                );
            }
            Verdict::Retry => {
                shared.retries.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &shared.metrics {
                    m.webhook_delivery("retried");
                }
                let failures = failing_since.get_or_insert(0);
                *failures += 1;
                let what = match &result {
                    Ok(status) => format!("answered {status}"),
                    Err(e) => e.to_string(),
                };
                // The first failure of an outage is a warning; the rest only at debug.
                if *failures == 1 {
                    log::warn!(
                        "webhook {}: {what}; alerts stay spooled, retrying with backoff up to {cap:?}",
                        shared.config.url
                    );
                } else {
                    log::debug!(
                        "webhook {}: {what} (attempt {failures}, next in {backoff:?})",
                        shared.config.url
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cap);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, SocketAddr},
        time::Instant,
    };

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::export::promtool::TempDir;

    /// What a test receiver saw: every POST body it answered 2xx, in arrival order, and every
    /// attempt.
    #[derive(Default)]
    struct Seen {
        accepted: Vec<String>,
        attempts: usize,
    }

    /// A local HTTP receiver answering `statuses` in turn (then 200 forever).
    struct Receiver {
        task: JoinHandle<()>,
    }

    impl Receiver {
        async fn start(addr: SocketAddr, statuses: Vec<u16>, seen: Arc<Mutex<Seen>>) -> Self {
            let listener = TcpListener::bind(addr).await.expect("receiver binds");
            let script = Arc::new(Mutex::new(VecDeque::from(statuses)));
            let task = {
                let seen = seen.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok((mut stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let mut raw = Vec::new();
                        let mut chunk = [0u8; 4096];
                        let body = loop {
                            let Ok(n) = stream.read(&mut chunk).await else {
                                break None;
                            };
                            if n == 0 {
                                break None;
                            }
                            raw.extend_from_slice(&chunk[..n]);
                            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                                continue;
                            };
                            let head = String::from_utf8_lossy(&raw[..end]).to_string();
                            assert!(
                                head.starts_with("POST /alerts?src=test HTTP/1.1\r\n"),
                                "{head}"
                            );
                            assert!(head.contains("\r\nContent-Type: application/json\r\n"));
                            assert!(head.contains("\r\nX-Token: t0k3n\r\n"));
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .and_then(|l| l.trim().parse().ok())
                                .expect("content length");
                            if raw.len() >= end + 4 + length {
                                break Some(
                                    String::from_utf8(raw[end + 4..end + 4 + length].to_vec())
                                        .unwrap(),
                                );
                            }
                        };
                        let Some(body) = body else { continue };
                        let status = script.lock().unwrap().pop_front().unwrap_or(200);
                        {
                            let mut seen = seen.lock().unwrap();
                            seen.attempts += 1;
                            if (200..300).contains(&status) {
                                seen.accepted.push(body);
                            }
                        }
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                })
            };
            Self { task }
        }

        async fn stop(self) {
            self.task.abort();
            let _ = self.task.await;
        }
    }

    fn free_port() -> SocketAddr {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn config(addr: SocketAddr, dir: &Path) -> WebhookConfig {
        WebhookConfig {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(80),
            request_timeout: Duration::from_secs(2),
            headers: vec![("X-Token".into(), "t0k3n".into())],
            ..WebhookConfig::new(format!("http://{addr}/alerts?src=test"), dir)
        }
    }

    fn alert(i: usize) -> String {
        format!("{{\"rule\":\"exec.reverse_shell\",\"n\":{i}}}")
    }

    fn spooled(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(SUFFIX))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                fs::read_to_string(dir.join(n))
                    .unwrap()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn urls() {
        let u = WebhookUrl::parse("http://127.0.0.1:8080/hook?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/hook?x=1")
        );
        assert_eq!(u.authority(), "127.0.0.1:8080");
        let u = WebhookUrl::parse("http://relay.local").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("relay.local", 80, "/")
        );
        assert_eq!(u.authority(), "relay.local");
        let u = WebhookUrl::parse("http://[::1]:9000?a").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9000, "/?a")
        );
        assert_eq!(u.authority(), "[::1]:9000");
        assert!(WebhookUrl::parse("https://siem.example/x")
            .unwrap_err()
            .contains("relay"));
        assert!(WebhookUrl::parse("ftp://x").is_err());
        assert!(WebhookUrl::parse("http://").is_err());
        assert!(WebhookUrl::parse("http://h:0/").is_err());
        assert!(WebhookUrl::parse("http://h:99999/").is_err());
        assert!(WebhookUrl::parse("http://u:p@h/").is_err());
        assert!(WebhookUrl::parse("http://h/a b").is_err());
        assert!(WebhookUrl::parse("http://h/a\r\nX: y").is_err());
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(200), Verdict::Delivered);
        assert_eq!(verdict(204), Verdict::Delivered);
        for status in [500, 502, 503, 401, 403, 404, 408, 429, 301] {
            assert_eq!(verdict(status), Verdict::Retry, "{status}");
        }
        for status in [400, 413, 415, 422] {
            assert_eq!(verdict(status), Verdict::Reject, "{status}");
        }
    }

    /// The receiver is down, then up; the sink restarts twice on the same spool: every alert
    /// arrives exactly once, in order.
    #[tokio::test]
    async fn survives_an_outage_and_restarts_exactly_once_in_order() {
        let dir = TempDir::new("webhook-spool");
        let addr = free_port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let metrics = Arc::new(Metrics::default());

        // Receiver down: alerts are spooled, attempts fail and back off.
        let sink = WebhookSink::start(config(addr, dir.path()), Some(metrics.clone())).unwrap();
        for i in 0..4 {
            sink.push(alert(i).as_bytes()).unwrap();
        }
        wait_until("a few failed attempts", || sink.stats().retries >= 3).await;
        assert_eq!(spooled(dir.path()), (0..4).map(alert).collect::<Vec<_>>());
        assert_eq!(sink.stats().pending, 4);
        assert_eq!(sink.stats().delivered, 0);
        // Restart while the receiver is still down.
        sink.shutdown().await;

        let sink = WebhookSink::start(config(addr, dir.path()), Some(metrics.clone())).unwrap();
        assert_eq!(sink.stats().pending, 4);
        sink.push(format!("{}\n", alert(4)).as_bytes()).unwrap();
        sink.push(alert(5).as_bytes()).unwrap();
        assert_eq!(spooled(dir.path()).len(), 6);

        // The receiver comes up, first failing twice with 503 (retried, not dropped).
        let receiver = Receiver::start(addr, vec![503, 503], seen.clone()).await;
        wait_until("six deliveries", || sink.stats().delivered == 6).await;
        assert!(spooled(dir.path()).is_empty());
        sink.shutdown().await;

        // Third life: resumes with an empty spool and goes on numbering.
        let sink = WebhookSink::start(config(addr, dir.path()), Some(metrics.clone())).unwrap();
        assert_eq!(sink.stats().pending, 0);
        sink.push(alert(6).as_bytes()).unwrap();
        sink.push(alert(7).as_bytes()).unwrap();
        wait_until("two more deliveries", || sink.stats().delivered == 2).await;
        sink.shutdown().await;
        receiver.stop().await;

        let seen = seen.lock().unwrap();
        assert_eq!(seen.accepted, (0..8).map(alert).collect::<Vec<_>>());
        assert_eq!(seen.attempts, 8 + 2);
        assert!(spooled(dir.path()).is_empty());
        let text = metrics.encode();
        assert!(text.contains("agent_sensor_webhook_deliveries_total{outcome=\"delivered\"} 8"));
        assert!(text.contains("agent_sensor_webhook_spool_alerts 0"));
    }

    #[tokio::test]
    async fn a_full_spool_drops_the_oldest_and_counts_it() {
        let dir = TempDir::new("webhook-bound");
        let addr = free_port();
        let metrics = Arc::new(Metrics::default());
        let cfg = WebhookConfig {
            max_spool_alerts: 3,
            ..config(addr, dir.path())
        };
        let sink = WebhookSink::start(cfg.clone(), Some(metrics.clone())).unwrap();
        for i in 0..5 {
            sink.push(alert(i).as_bytes()).unwrap();
        }
        let stats = sink.stats();
        assert_eq!((stats.pending, stats.dropped), (3, 2));
        assert_eq!(spooled(dir.path()), (2..5).map(alert).collect::<Vec<_>>());
        assert!(metrics
            .encode()
            .contains("agent_sensor_webhook_spool_dropped_total 2"));
        sink.shutdown().await;

        // A tighter byte bound at the next start drops more, oldest first.
        let cfg = WebhookConfig {
            max_spool_bytes: (alert(3).len() + 1) as u64 * 2,
            ..cfg
        };
        let sink = WebhookSink::start(cfg, None).unwrap();
        assert_eq!(sink.stats().dropped, 1);
        assert_eq!(spooled(dir.path()), (3..5).map(alert).collect::<Vec<_>>());

        let seen = Arc::new(Mutex::new(Seen::default()));
        let receiver = Receiver::start(addr, vec![], seen.clone()).await;
        wait_until("delivery", || sink.stats().delivered == 2).await;
        assert_eq!(seen.lock().unwrap().accepted, vec![alert(3), alert(4)]);
        sink.shutdown().await;
        receiver.stop().await;
    }

    #[tokio::test]
    async fn refused_bodies_are_dropped_and_the_rest_goes_on() {
        let dir = TempDir::new("webhook-reject");
        let addr = free_port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let receiver = Receiver::start(addr, vec![400], seen.clone()).await;
        let sink = WebhookSink::start(config(addr, dir.path()), None).unwrap();
        for i in 0..3 {
            sink.push(alert(i).as_bytes()).unwrap();
        }
        wait_until("delivery", || sink.stats().delivered == 2).await;
        assert_eq!(sink.stats().rejected, 1);
        assert_eq!(seen.lock().unwrap().accepted, vec![alert(1), alert(2)]);
        sink.shutdown().await;
        receiver.stop().await;
    }

    #[tokio::test]
    async fn one_sink_per_spool_and_hostile_input_refused() {
        let dir = TempDir::new("webhook-lock");
        let addr = free_port();
        let sink = WebhookSink::start(config(addr, dir.path()), None).unwrap();
        let err = WebhookSink::start(config(addr, dir.path()), None).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        assert!(sink.push(b"{\"a\":1}\n{\"forged\":2}").is_err());
        assert!(sink.push(b"").is_err());
        assert!(sink.push(b"\n").is_err());
        assert_eq!(sink.stats().pending, 0);
        sink.push_json(&serde_json::json!({"rule": "x"})).unwrap();
        assert_eq!(spooled(dir.path()), vec!["{\"rule\":\"x\"}".to_string()]);
        // Spool files are private to the sensor.
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(spool_name(1)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        sink.shutdown().await;
        // Released: a new sink may take it, and a leftover temp file is cleaned up.
        fs::write(
            dir.path().join(format!("{:020}{TMP_SUFFIX}", 9)),
            b"partial",
        )
        .unwrap();
        fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let sink = WebhookSink::start(config(addr, dir.path()), None).unwrap();
        assert_eq!(sink.stats().pending, 1);
        assert!(!dir.path().join(format!("{:020}{TMP_SUFFIX}", 9)).exists());
        sink.shutdown().await;
        assert!(WebhookSink::start(WebhookConfig::new("https://x/", dir.path()), None).is_err());
    }
}
