//! The daemon side: accepts connections, checks the peer is root, reads requests and hands
//! them to the run loop (which owns the registry and the kernel maps) through a channel.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::{Reply, Request, MAX_REQUEST_BYTES};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot create the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A request from a client, with the client's pid and the way back.
pub struct Incoming {
    pub request: Request,
    pub peer_pid: u32,
    pub reply: oneshot::Sender<Reply>,
}

/// The bound socket; removed from the filesystem when dropped.
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket (replacing a stale one), mode 0600, and serves it until the receiver of
/// the returned channel is dropped.
pub fn serve(path: &Path) -> Result<(ControlSocket, mpsc::Receiver<Incoming>), ServerError> {
    let err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket left by a killed daemon; a live daemon would answer a connect.
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tx));
    Ok((
        ControlSocket {
            path: path.to_path_buf(),
        },
        rx,
    ))
}

/// How long a connection may sit in the middle of a request. Idle clients between requests
/// are fine (the CLI keeps one open while it waits); a half-written line is not.
const PARTIAL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts for as long as the daemon runs. A failed accept (out of descriptors) is retried
/// after a pause: losing the control socket would leave frozen agents without a thaw.
/// Connections are not capped (a cap would let idle clients lock out the operator); what
/// each may hold is: one line of at most `MAX_REQUEST_BYTES`, for at most
/// `PARTIAL_REQUEST_TIMEOUT`.
async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<Incoming>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(handle(stream, tx.clone()));
    }
}

async fn handle(stream: UnixStream, tx: mpsc::Sender<Incoming>) {
    let Ok(cred) = stream.peer_cred() else { return };
    let peer_pid = cred.pid().unwrap_or(0).max(0) as u32;
    let (read, mut write) = stream.into_split();
    if cred.uid() != 0 {
        // The socket's mode already keeps others out; this holds even if it were loosened.
        let _ = respond(
            &mut write,
            &Reply::Error {
                message: "root only".into(),
            },
        )
        .await;
        return;
    }
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        // The limit applies while reading: an unfinished line never holds more than this.
        let mut limited = (&mut reader).take(MAX_REQUEST_BYTES as u64 + 1);
        // Wait as long as needed for a request to begin, then bound how long it may take.
        match limited.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(_) => {}
        }
        let read = limited.read_until(b'\n', &mut line);
        match tokio::time::timeout(PARTIAL_REQUEST_TIMEOUT, read).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_REQUEST_BYTES {
            let _ = respond(
                &mut write,
                &Reply::Error {
                    message: format!("request too long (limit {MAX_REQUEST_BYTES} bytes)"),
                },
            )
            .await;
            return;
        }
        let reply = match serde_json::from_slice::<Request>(&line) {
            Ok(request) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                if tx
                    .send(Incoming {
                        request,
                        peer_pid,
                        reply: reply_tx,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                match reply_rx.await {
                    Ok(reply) => reply,
                    Err(_) => return,
                }
            }
            Err(e) => Reply::Error {
                message: format!("malformed request: {e}"),
            },
        };
        if respond(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

async fn respond(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}
