//! The `/metrics` endpoint: a deliberately small HTTP/1.1 server on tokio, plus the minimal
//! client the webhook sink (and the tests) use.
//!
//! The server answers `GET /metrics` (and `HEAD`) with the text exposition, 404 for any other
//! path, 405 for any other method, and closes the connection after every answer. It is built
//! for a privileged daemon that may be reachable by hostile local clients: a request must
//! arrive whole within [`ServerLimits::request_timeout`] and fit in
//! [`ServerLimits::max_request_bytes`] (no body is read), the answer must be taken within
//! [`ServerLimits::write_timeout`], and at most [`ServerLimits::max_connections`] connections
//! are served at once (more are closed at once). Nothing a client sends is echoed back.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
    time::timeout,
};

use super::metrics::{Metrics, CONTENT_TYPE};

/// The default `--metrics-addr`: loopback only. Exposing it further is a deliberate choice
/// (`--metrics-addr 0.0.0.0:9464`, e.g. for a Prometheus in a pod network).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// Bounds of the metrics server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time for the whole request head to arrive (slow clients are cut off).
    pub request_timeout: Duration,
    /// Time for the whole answer to be taken.
    pub write_timeout: Duration,
    /// Bytes of request head (request line and headers) accepted.
    pub max_request_bytes: usize,
    /// Connections served at once; more are closed unanswered.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_request_bytes: 8 * 1024,
            max_connections: 16,
        }
    }
}

/// A running metrics server; dropping it (or [`MetricsServer::shutdown`]) stops it.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address actually bound (the port is chosen by the kernel for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and waits for the accept loop to end (connections being answered are
    /// dropped).
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Binds `addr` now (so a bad address or a port in use is an error at start) and serves
/// `metrics` from a spawned task. Must be called inside a tokio runtime.
pub async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<MetricsServer> {
    serve_metrics_with(addr, metrics, ServerLimits::default()).await
}

/// [`serve_metrics`] with explicit limits.
pub async fn serve_metrics_with(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    limits: ServerLimits,
) -> io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for metrics: {e}"),
        )
    })?;
    let local_addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, metrics, limits));
    Ok(MetricsServer {
        local_addr,
        task: Some(task),
    })
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, limits: ServerLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                log::warn!("metrics server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            log::debug!("metrics server: too many connections, closing one from {peer}");
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &metrics, limits).await {
                log::debug!("metrics server: connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics { head: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
    TooLarge,
}

/// Reads the request head: everything up to the blank line, within the size bound.
async fn read_head(stream: &mut TcpStream, max: usize) -> io::Result<Result<Vec<u8>, Route>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the request was complete",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&head) {
            head.truncate(end);
            return Ok(Ok(head));
        }
        if head.len() > max {
            return Ok(Err(Route::TooLarge));
        }
    }
}

/// End of the request head (`\r\n\r\n`, or `\n\n` from lenient clients).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::MethodNotAllowed,
    }
}

fn response(
    status: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

fn plain(status: &str, extra: &str, text: &str) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        extra,
        text.as_bytes(),
        false,
    )
}

async fn serve_connection(
    mut stream: TcpStream,
    metrics: &Metrics,
    limits: ServerLimits,
) -> io::Result<()> {
    let route = match timeout(
        limits.request_timeout,
        read_head(&mut stream, limits.max_request_bytes),
    )
    .await
    {
        Err(_) => {
            // Too slow: say so (best effort, bounded) and close.
            let answer = plain("408 Request Timeout", "", "request timeout\n");
            let _ = timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head too slow",
            ));
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(route))) => route,
        Ok(Ok(Ok(head))) => route(&head),
    };
    let answer = match route {
        Route::Metrics { head } => response(
            "200 OK",
            CONTENT_TYPE,
            "",
            metrics.encode().as_bytes(),
            head,
        ),
        Route::NotFound => plain("404 Not Found", "", "not found: metrics are at /metrics\n"),
        Route::MethodNotAllowed => plain(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "method not allowed\n",
        ),
        Route::BadRequest => plain("400 Bad Request", "", "bad request\n"),
        Route::TooLarge => plain(
            "431 Request Header Fields Too Large",
            "",
            "request head too large\n",
        ),
    };
    match timeout(limits.write_timeout, async {
        stream.write_all(&answer).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client too slow to read",
        )),
    }
}

// ---- client ---------------------------------------------------------------------------------

/// An HTTP answer as the minimal client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the minimal client sends.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The `Host` header value.
    pub host: &'a str,
    pub method: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl<'a> HttpRequest<'a> {
    /// A `GET` without headers.
    pub fn get(host: &'a str, path: &'a str) -> Self {
        Self {
            host,
            method: "GET",
            path,
            headers: &[],
            body: b"",
        }
    }
}

/// One HTTP/1.1 request over a new connection (`Connection: close`), all of it (connect,
/// send, read) within `deadline`; at most `max_response` bytes of answer are read. Plain
/// http only: TLS is for a local relay (see deploy/README.md).
pub async fn http_request(
    addr: SocketAddr,
    request: &HttpRequest<'_>,
    deadline: Duration,
    max_response: usize,
) -> io::Result<HttpResponse> {
    let HttpRequest {
        host,
        method,
        path,
        headers,
        body,
    } = *request;
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: agent-sensor/{}\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in headers {
            if name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "header with a line break",
                ));
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await?;
        stream.flush().await?;

        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
            if raw.len() >= max_response {
                raw.truncate(max_response);
                break;
            }
            // Stop as soon as a Content-Length answer is complete (some servers keep the
            // connection open despite `Connection: close`).
            if let Some(done) = complete_length(&raw) {
                raw.truncate(done);
                break;
            }
        }
        parse_response(&raw)
    };
    match timeout(deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no complete answer from {addr} within {deadline:?}"),
        )),
    }
}

/// Total length of a response whose head is complete and says its `Content-Length`.
fn complete_length(raw: &[u8]) -> Option<usize> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let length: usize = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })?;
    (raw.len() >= end + length).then_some(end + length)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed HTTP answer: {what}"),
    )
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| bad("no status code"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(&response.body).ok_or_else(|| bad("chunked body"))?;
    } else if let Some(length) = response
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        response.body.truncate(length);
    }
    Ok(response)
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, SocketAddr},
        process::{Child, Command, Stdio},
        time::Instant,
    };

    use super::*;
    use crate::export::{
        metrics::MetricsConfig,
        promtool::{self, TempDir},
    };

    fn loopback() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    async fn get(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
        let request = HttpRequest {
            method,
            ..HttpRequest::get("localhost", path)
        };
        http_request(addr, &request, Duration::from_secs(5), 1 << 20)
            .await
            .expect("answer")
    }

    /// Sends raw bytes, then reads everything until the server closes.
    async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        out
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1"),
            Route::Metrics { head: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"GET /metrics/ HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics HTTP/2"), Route::BadRequest);
        assert_eq!(route(b"GET metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe HTTP/1.1"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"Wikipedia");
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn serves_metrics_over_loopback() {
        let metrics = Arc::new(Metrics::default());
        metrics.alert("exec.reverse_shell", "critical");
        let server = serve_metrics(loopback(), metrics.clone()).await.unwrap();
        let addr = server.local_addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0);

        let r = get(addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(body.contains("# TYPE agent_sensor_build_info gauge"));
        assert!(body.contains(
            "agent_sensor_alerts_total{rule=\"exec.reverse_shell\",severity=\"critical\"} 1"
        ));
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );

        // The next scrape sees what changed since.
        metrics.alert("exec.reverse_shell", "critical");
        let body = String::from_utf8(get(addr, "GET", "/metrics?x").await.body).unwrap();
        assert!(body.contains(
            "agent_sensor_alerts_total{rule=\"exec.reverse_shell\",severity=\"critical\"} 2"
        ));

        let head = get(addr, "HEAD", "/metrics").await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());

        let missing = get(addr, "GET", "/").await;
        assert_eq!(missing.status, 404);
        assert!(!String::from_utf8_lossy(&missing.body).contains("agent_sensor"));
        assert_eq!(get(addr, "GET", "/../../etc/passwd").await.status, 404);

        let post = get(addr, "POST", "/metrics").await;
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow"), Some("GET, HEAD"));

        let garbage = raw_exchange(
            addr,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        )
        .await;
        assert!(
            garbage.starts_with(b"HTTP/1.1 400 "),
            "{:?}",
            String::from_utf8_lossy(&garbage)
        );

        server.shutdown().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still listening after shutdown"
        );
    }

    #[tokio::test]
    async fn binding_a_used_port_is_an_error() {
        let metrics = Arc::new(Metrics::default());
        let first = serve_metrics(loopback(), metrics.clone()).await.unwrap();
        let err = serve_metrics(first.local_addr(), metrics)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().contains(&first.local_addr().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn oversized_requests_are_refused() {
        let metrics = Arc::new(Metrics::default());
        let server = serve_metrics(loopback(), metrics).await.unwrap();
        let addr = server.local_addr();
        let mut request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
        while request.len() < 64 * 1024 {
            request.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        request.extend_from_slice(b"\r\n");
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may close before all of it is sent: that is the point.
        let _ = stream.write_all(&request).await;
        let mut answer = Vec::new();
        let _ = timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 431 ") || answer.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        // …and keeps serving.
        assert_eq!(get(addr, "GET", "/metrics").await.status, 200);
    }

    #[tokio::test]
    async fn slow_and_idle_clients_are_cut_off_without_blocking_others() {
        let metrics = Arc::new(Metrics::default());
        let limits = ServerLimits {
            request_timeout: Duration::from_millis(300),
            max_connections: 4,
            ..ServerLimits::default()
        };
        let server = serve_metrics_with(loopback(), metrics, limits)
            .await
            .unwrap();
        let addr = server.local_addr();

        // A slowloris: half a request, then nothing.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metr").await.unwrap();
        // An idle connection that never says anything.
        let mut idle = TcpStream::connect(addr).await.unwrap();

        // Others are served meanwhile.
        let started = Instant::now();
        assert_eq!(get(addr, "GET", "/metrics").await.status, 200);
        assert!(started.elapsed() < Duration::from_millis(300));

        for stream in [&mut slow, &mut idle] {
            let mut answer = Vec::new();
            let waited = Instant::now();
            timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
                .await
                .expect("the server closes a slow connection")
                .unwrap();
            assert!(
                answer.starts_with(b"HTTP/1.1 408 "),
                "{:?}",
                String::from_utf8_lossy(&answer)
            );
            assert!(waited.elapsed() < Duration::from_secs(2));
        }
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed() {
        let metrics = Arc::new(Metrics::default());
        let limits = ServerLimits {
            request_timeout: Duration::from_secs(2),
            max_connections: 2,
            ..ServerLimits::default()
        };
        let server = serve_metrics_with(loopback(), metrics, limits)
            .await
            .unwrap();
        let addr = server.local_addr();
        let hold: Vec<TcpStream> = vec![
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        // Let the server take both slots.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = timeout(Duration::from_secs(2), extra.read_to_end(&mut answer)).await;
        assert!(answer.is_empty(), "served beyond the limit");
        drop(hold);
        // The slots come back once those connections end.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = http_request(
                addr,
                &HttpRequest::get("localhost", "/metrics"),
                Duration::from_secs(1),
                1 << 20,
            )
            .await;
            if matches!(&r, Ok(r) if r.status == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "never served again: {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A Prometheus server process, killed (and its directory removed) when dropped.
    struct PrometheusProcess {
        child: Child,
        addr: SocketAddr,
        _dir: TempDir,
    }

    impl Drop for PrometheusProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_loopback_port() -> SocketAddr {
        std::net::TcpListener::bind(loopback())
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// Starts `prometheus` on loopback scraping `target` every second, with the shipped
    /// alerting rules loaded. (deploy/README.md documents the same by hand.)
    fn start_prometheus(binary: &std::path::Path, target: SocketAddr) -> PrometheusProcess {
        let dir = TempDir::new("prometheus");
        let rules = promtool::deploy_dir().join("prometheus/agent-sensor-rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: agent-sensor\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = free_loopback_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        PrometheusProcess {
            child,
            addr,
            _dir: dir,
        }
    }

    fn urlencode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// `GET /api/v1/query?query=…` → the whole answer.
    async fn query_raw(prometheus: SocketAddr, promql: &str) -> Option<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let r = http_request(
            prometheus,
            &HttpRequest::get("localhost", &path),
            Duration::from_secs(5),
            1 << 20,
        )
        .await
        .ok()?;
        serde_json::from_slice(&r.body).ok()
    }

    /// `GET /api/v1/query?query=…` → the `data.result` array.
    async fn query(prometheus: SocketAddr, promql: &str) -> Option<Vec<serde_json::Value>> {
        let json = query_raw(prometheus, promql).await?;
        (json["status"] == "success")
            .then(|| json["data"]["result"].as_array().cloned())
            .flatten()
    }

    /// The single value a query returns, once it returns one.
    async fn scalar(prometheus: SocketAddr, promql: &str) -> Option<f64> {
        let result = query(prometheus, promql).await?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F, p: &PrometheusProcess)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !check().await {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(p._dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                panic!("timed out waiting for {what}; prometheus log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A real Prometheus scrapes the real server; an alert moves the counter as seen through
    /// the query API, and the shipped rule `AgentSensorRogueAgentDetected` fires.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_prometheus_scrapes_and_sees_an_alert() {
        let Some(binary) = promtool::prometheus() else {
            return;
        };
        let rules = promtool::deploy_dir().join("prometheus/agent-sensor-rules.yml");
        assert!(rules.is_file(), "{} is missing", rules.display());
        let metrics = Arc::new(Metrics::new(MetricsConfig { agent_label_cap: 8 }));
        metrics.declare_rule("exec.reverse_shell", "critical");
        let server = serve_metrics(loopback(), metrics.clone()).await.unwrap();
        let p = start_prometheus(&binary, server.local_addr());
        let prom = p.addr;

        wait_for(
            "the first scrape",
            Duration::from_secs(60),
            || async { scalar(prom, "up{job=\"agent-sensor\"}").await == Some(1.0) },
            &p,
        )
        .await;
        let series = "agent_sensor_alerts_total{job=\"agent-sensor\",rule=\"exec.reverse_shell\",severity=\"critical\"}";
        wait_for(
            "the alert counter at 0",
            Duration::from_secs(30),
            || async { scalar(prom, series).await == Some(0.0) },
            &p,
        )
        .await;

        // The alert, as the pipeline would count it.
        metrics.alert("exec.reverse_shell", "critical");
        metrics.response("kill", "killed in 35 µs");
        metrics.agent_alert("claude", "exec.reverse_shell");

        wait_for(
            "the alert counter at 1",
            Duration::from_secs(30),
            || async { scalar(prom, series).await == Some(1.0) },
            &p,
        )
        .await;
        assert_eq!(
            scalar(
                prom,
                "agent_sensor_responses_total{action=\"kill\",outcome=\"succeeded\"}"
            )
            .await,
            Some(1.0)
        );
        wait_for(
            "AgentSensorRogueAgentDetected to fire",
            Duration::from_secs(30),
            || async {
                scalar(
                    prom,
                    "ALERTS{alertname=\"AgentSensorRogueAgentDetected\",alertstate=\"firing\",rule=\"exec.reverse_shell\"}",
                )
                .await
                    == Some(1.0)
            },
            &p,
        )
        .await;
        // Every query of the shipped dashboard is valid PromQL for this Prometheus.
        for expr in promtool::dashboard_exprs() {
            let answer = query_raw(prom, &expr).await;
            assert!(
                answer.as_ref().is_some_and(|a| a["status"] == "success"),
                "dashboard query refused: {expr}\n{answer:?}"
            );
        }
        drop(p);
        server.shutdown().await;
    }
}
