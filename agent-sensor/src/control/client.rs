//! The client side, used by the CLI (blocking: the CLI has no runtime).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use thiserror::Error;

use super::{Reply, Request};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "the agent-sensor daemon is not running or not reachable at {socket} ({source}); \
         start it with `agent-sensor run` (as root)"
    )]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error("talking to the daemon failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent an unreadable reply: {0}")]
    Reply(#[from] serde_json::Error),
    #[error("the daemon refused: {0}")]
    Refused(String),
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            socket: socket.display().to_string(),
            source,
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and waits for its reply; a daemon-side error becomes `Refused`.
    pub fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut reply = String::new();
        if self.reader.read_line(&mut reply)? == 0 {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            )));
        }
        match serde_json::from_str(&reply)? {
            Reply::Error { message } => Err(ClientError::Refused(message)),
            reply => Ok(reply),
        }
    }
}
