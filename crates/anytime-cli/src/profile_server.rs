//! The serving side of `profile_access`: while `anytime follow` holds a profile, it listens on
//! the profile's socket and hands every command that arrives to its session loop, which runs it
//! between two server pushes — so one process, one session, writes the profile.
//!
//! This file only moves requests and replies; running them is `commands::serve_remote`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};

use crate::profile_access::{Answer, Reply, Request, SOCKET_FILE};

/// Commands connected at once (each waits its turn in the session loop).
const CONNECTIONS_MAX: usize = 256;
/// Largest request line: a command line, not a payload.
const REQUEST_BYTES_MAX: u64 = 64 * 1024;
/// A client that connects must send its command promptly.
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// Replies buffered per connection; a streaming `follow` that falls this far behind is dropped.
pub const REPLY_QUEUE_LEN: usize = 1024;

/// A command for the session loop, with where its replies go and where the sending process's
/// answers to its questions (`Reply::Ask`) arrive.
pub struct Incoming {
    pub request: Request,
    pub reply: mpsc::Sender<Reply>,
    pub answers: mpsc::Receiver<Result<String, String>>,
}

/// The listening socket; removed (and no longer served) when dropped.
pub struct Listening {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts serving the profile in `dir`, whose lock this process holds.
pub fn listen(dir: &Path, requests: mpsc::Sender<Incoming>) -> std::io::Result<Listening> {
    let path = dir.join(SOCKET_FILE);
    // We hold the lock, so a socket file here is a crashed holder's leftover.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let owner = std::fs::metadata(dir)?.uid();
    let task = tokio::spawn(accept(listener, owner, requests));
    Ok(Listening { path, task })
}

async fn accept(listener: UnixListener, owner: u32, requests: mpsc::Sender<Incoming>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        // The semaphore is never closed.
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, _)) => {
                let requests = requests.clone();
                tokio::spawn(async move {
                    connection(stream, owner, requests).await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "could not accept a command on the profile socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, owner: u32, requests: mpsc::Sender<Incoming>) {
    // Only the profile's owner may use it (the socket is 0600 too).
    if !stream.peer_cred().is_ok_and(|cred| cred.uid() == owner) {
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(REQUEST_BYTES_MAX));
    let request = match tokio::time::timeout(REQUEST_WAIT, reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => serde_json::from_str::<Request>(line.trim_end()),
        _ => return,
    };
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            let _ = send(&mut write, &Reply::Error(format!("unreadable command: {error}"))).await;
            return;
        }
    };
    let (reply, mut replies) = mpsc::channel(REPLY_QUEUE_LEN);
    let (answer_tx, answers) = mpsc::channel(1);
    if requests.send(Incoming { request, reply, answers }).await.is_err() {
        // The session loop has ended: this process is stopping.
        let _ = send(&mut write, &Reply::Retry(true)).await;
        return;
    }
    // Lines after the request are answers to the command's questions.
    let mut lines = reader.lines();
    let mut answer = Some(answer_tx);
    loop {
        tokio::select! {
            next = replies.recv() => {
                let Some(reply) = next else { break };
                let last = !matches!(reply, Reply::Out(_) | Reply::Note(_) | Reply::Ask(_));
                if send(&mut write, &reply).await.is_err() || last {
                    return;
                }
            }
            // `next_line` is cancel safe: a line cut short by a reply is finished next time.
            line = lines.next_line(), if answer.is_some() => match line {
                Ok(Some(line)) => {
                    let given = match serde_json::from_str::<Answer>(&line) {
                        Ok(Answer::Answer(text)) => Ok(text),
                        Ok(Answer::Error(text)) => Err(text),
                        Err(error) => Err(format!("unreadable answer: {error}")),
                    };
                    // Nobody waits for an answer nobody asked for.
                    if let Some(answer) = &answer {
                        let _ = answer.try_send(given);
                    }
                }
                // The sender closed its side (or sent too much): a question waiting for its
                // answer learns that none will come.
                _ => answer = None,
            },
        }
    }
    // Dropped unanswered: the loop stopped before running it (a `follow` attached to it ends here).
    let _ = send(&mut write, &Reply::Retry(true)).await;
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    // Plain enums of strings always serialise.
    let mut line = serde_json::to_string(reply).unwrap_or_default();
    line.push('\n');
    write.write_all(line.as_bytes()).await
}
