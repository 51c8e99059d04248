//! The daemon side: accepts connections, checks the peer is root, reads requests and hands
//! them to the run loop (which owns the registry and the kernel maps) through a channel.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
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
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, tx.clone()));
        }
    });
    Ok((
        ControlSocket {
            path: path.to_path_buf(),
        },
        rx,
    ))
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
    let mut lines = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 * 64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.len() > MAX_REQUEST_BYTES {
            let _ = respond(
                &mut write,
                &Reply::Error {
                    message: "request too long".into(),
                },
            )
            .await;
            return;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
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
