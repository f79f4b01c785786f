//! One writer per profile. Two processes that each load a profile's MLS state, advance it and
//! write it back fork it: ratchet generations are reused (two messages sealed under one key and
//! nonce) and one fork is lost for good. So every command either
//!
//! - talks to the process that serves the profile — a running `anytime follow` listens on
//!   `anytime.sock` in the profile directory (signal-cli's daemon mode) and runs the command in
//!   its own session, answering with the same output — or
//! - takes the profile's exclusive lock (`anytime.lock`, see `dir_lock`) for its whole run.
//!
//! Nothing else ever loads the MLS state. The wire between the two processes is JSON lines,
//! one request (`{"args": [...], "json": bool, "cwd": dir}`) and then replies (`{"out": line}` …,
//! ending in `{"done": true}`, `{"error": text}` or `{"retry": true}` when the server process was
//! stopping). A command that needs the person at the terminal (a payment PIN) asks with
//! `{"ask": {"kind": …, "prompt": …}}`; the sending process answers with one line,
//! `{"answer": text}` or `{"error": text}`, read from its own terminal or environment.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::dir_lock::{Acquire, DirLock};
use crate::secret::{self, Ask};

/// The lock file of a profile directory.
pub const LOCK_FILE: &str = "anytime.lock";
/// The socket a profile's serving process (`follow`) listens on.
pub const SOCKET_FILE: &str = "anytime.sock";
/// How long a command waits for another one to finish with the profile before giving up.
/// Commands other than `follow` take seconds; a stuck one should be reported, not waited out.
const LOCK_WAIT: Duration = Duration::from_secs(120);
/// Poll interval while waiting for the lock or the socket.
const POLL: Duration = Duration::from_millis(25);
/// After this long waiting, say so on stderr.
const TELL_AFTER: Duration = Duration::from_secs(2);

/// A command sent to the serving process.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The command line after the program name, as typed.
    pub args: Vec<String>,
    pub json: bool,
    /// The sending process's working directory: relative paths in `args` mean paths there.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

/// One line back from the serving process.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// A line of output, already rendered for the request's `json` setting.
    Out(String),
    /// A remark for stderr (e.g. a link preview that could not be made).
    Note(String),
    /// The command finished.
    Done(bool),
    /// The command failed; the text is what the local run would print after `anytime: `.
    Error(String),
    /// The serving process was stopping and did not run the command: try again.
    Retry(bool),
    /// The command needs an answer from the sending process (its terminal or environment).
    Ask(Ask),
}

/// The sending process's answer to a [`Reply::Ask`], one line.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Answer(String),
    /// No answer could be had; the text says why.
    Error(String),
}

/// How this process may use the profile.
pub enum Access {
    /// This process holds the lock: it may load and change the profile.
    Local(DirLock),
    /// Another process serves the profile: send it the command.
    Remote(UnixStream),
}

/// Waits until the profile is served by another process or free to lock.
pub fn open(dir: &Path, what: &str) -> anyhow::Result<Access> {
    std::fs::create_dir_all(dir).with_context(|| format!("while creating the profile directory {}", dir.display()))?;
    let started = Instant::now();
    let mut told = false;
    loop {
        if let Ok(stream) = UnixStream::connect(dir.join(SOCKET_FILE)) {
            return Ok(Access::Remote(stream));
        }
        let outcome = DirLock::try_acquire(dir, LOCK_FILE, what)
            .with_context(|| format!("while locking the profile {}", dir.display()))?;
        match outcome {
            Acquire::Acquired(lock) => {
                if let Some(stale) = &lock.stale {
                    tracing::info!(pid = stale.pid, what = %stale.what, "cleared the lock of a command that did not finish cleanly");
                }
                // Held by us, the socket cannot be served by anyone: a crashed `follow` left it.
                let _ = std::fs::remove_file(dir.join(SOCKET_FILE));
                return Ok(Access::Local(lock));
            }
            Acquire::Held(holder) => {
                let who = holder.map(|h| h.describe()).unwrap_or_else(|| "another anytime command".into());
                if started.elapsed() > LOCK_WAIT {
                    bail!("the profile {} is still in use by {who}; wait for it to finish, or stop it", dir.display());
                }
                if !told && started.elapsed() > TELL_AFTER {
                    eprintln!("anytime: waiting for {who} to finish with this profile…");
                    told = true;
                }
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Outcome of [`forward`].
pub enum Forwarded {
    Finished,
    /// The serving process went away without running the command: open the profile again.
    Retry,
}

/// Runs a command in the serving process and prints what it answers. `follow_for` ends a
/// forwarded `follow` after that long (it streams until then, or until interrupted).
pub fn forward(mut stream: UnixStream, request: &Request, follow_for: Option<Duration>) -> anyhow::Result<Forwarded> {
    let mut line = serde_json::to_string(request).context("while encoding the request")?;
    line.push('\n');
    stream.write_all(line.as_bytes()).context("while sending the command to the process serving this profile")?;
    let deadline = follow_for.map(|d| Instant::now() + d);
    let mut reader = BufReader::new(stream.try_clone().context("while reading the answer")?);
    let mut stdout = std::io::stdout().lock();
    let mut buffer = String::new();
    loop {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Forwarded::Finished);
            }
            stream.set_read_timeout(Some(left)).context("while waiting for output")?;
        }
        buffer.clear();
        match reader.read_line(&mut buffer) {
            Ok(0) => bail!("the process serving this profile stopped before answering; run the command again"),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e).context("while reading the answer of the process serving this profile"),
        }
        let reply: Reply = serde_json::from_str(buffer.trim_end())
            .with_context(|| format!("unreadable answer from the process serving this profile: {buffer:?}"))?;
        match reply {
            Reply::Out(text) => {
                writeln!(stdout, "{text}")?;
                stdout.flush()?;
            }
            Reply::Note(text) => eprintln!("anytime: {text}"),
            Reply::Done(_) => return Ok(Forwarded::Finished),
            Reply::Error(text) => bail!("{text}"),
            Reply::Retry(_) => return Ok(Forwarded::Retry),
            Reply::Ask(ask) => {
                let answer = match secret::answer(&ask) {
                    Ok(text) => Answer::Answer(text),
                    Err(error) => Answer::Error(format!("{error:#}")),
                };
                let mut line = serde_json::to_string(&answer).context("while encoding the answer")?;
                line.push('\n');
                stream.write_all(line.as_bytes()).context("while answering the process serving this profile")?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_one_json_object_per_line() {
        let line = serde_json::to_string(&Reply::Out("a\nb".into())).unwrap();
        assert_eq!(line, r#"{"out":"a\nb"}"#);
        assert_eq!(serde_json::from_str::<Reply>(r#"{"done":true}"#).unwrap(), Reply::Done(true));
        assert_eq!(serde_json::from_str::<Reply>(r#"{"error":"x"}"#).unwrap(), Reply::Error("x".into()));
        let ask = Reply::Ask(Ask { kind: secret::AskKind::Pin, prompt: "PIN: ".into() });
        assert_eq!(serde_json::to_string(&ask).unwrap(), r#"{"ask":{"kind":"pin","prompt":"PIN: "}}"#);
        assert_eq!(serde_json::to_string(&Answer::Answer("1234".into())).unwrap(), r#"{"answer":"1234"}"#);
        let old = serde_json::from_str::<Request>(r#"{"args":["sync"],"json":false}"#).unwrap();
        assert_eq!(old.cwd, None, "a request without a working directory still reads");
    }

    #[test]
    fn a_free_profile_is_locked_and_a_held_one_waits() {
        let dir = tempfile::tempdir().unwrap();
        // A crashed `follow` left its socket file: nobody listens, so it is removed.
        std::fs::write(dir.path().join(SOCKET_FILE), b"").unwrap();
        let Access::Local(lock) = open(dir.path(), "anytime send").unwrap() else { panic!("expected the lock") };
        assert!(!dir.path().join(SOCKET_FILE).exists());
        let waiter = {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || matches!(open(&dir, "anytime send"), Ok(Access::Local(_))))
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "the second command waits while the first holds the profile");
        drop(lock);
        assert!(waiter.join().unwrap(), "and gets it once the first is done");
    }
}
