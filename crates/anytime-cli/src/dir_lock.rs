//! An exclusive lock on a directory — a server's data directory, a client profile — with a note
//! saying who holds it, so that a second process can name the one in its way.
//!
//! The lock is `flock` on a file in the directory (std's `File::try_lock`): the kernel releases
//! it when the holder exits, however it exits, so a crash can never leave a lock that blocks the
//! next start. What a crash does leave is the holder's note; the next holder finds it, reports it
//! as stale (and logs that it cleared it), and writes its own.
//!
//! The note is plain `key=value` lines (`pid`, `what`, `url`) so that `cargo xtask run` can read
//! it without sharing this crate.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Who holds (or held) a lock, as its note says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    pub pid: u32,
    /// What the holder is doing: `anytime serve`, `anytime follow`, ….
    pub what: String,
    /// Where a server holder listens, once it does.
    pub url: Option<String>,
}

impl Holder {
    fn to_note(&self) -> String {
        let mut note = format!("pid={}\nwhat={}\n", self.pid, self.what.replace('\n', " "));
        if let Some(url) = &self.url {
            note.push_str(&format!("url={url}\n"));
        }
        note
    }

    fn from_note(note: &str) -> Option<Holder> {
        let mut holder = Holder::default();
        for line in note.lines() {
            match line.split_once('=') {
                Some(("pid", pid)) => holder.pid = pid.parse().ok()?,
                Some(("what", what)) => holder.what = what.to_owned(),
                Some(("url", url)) => holder.url = Some(url.to_owned()),
                _ => {}
            }
        }
        (holder.pid != 0).then_some(holder)
    }

    /// "process 123 (`anytime follow`)", for messages.
    pub fn describe(&self) -> String {
        format!("process {} (`{}`)", self.pid, self.what)
    }
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    file: File,
    holder: Holder,
    /// The note a previous holder left without releasing cleanly (it crashed or was killed).
    pub stale: Option<Holder>,
}

/// The outcome of [`DirLock::try_acquire`].
#[derive(Debug)]
pub enum Acquire {
    Acquired(DirLock),
    /// Someone else holds it; their note, if it was readable.
    Held(Option<Holder>),
}

impl DirLock {
    /// Takes the lock file `name` in `dir` without waiting.
    pub fn try_acquire(dir: &Path, name: &str, what: &str) -> std::io::Result<Acquire> {
        let path = dir.join(name);
        // Not truncated on open: the note belongs to whoever holds the lock.
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(Acquire::Held(read_note(&mut file))),
            Err(TryLockError::Error(error)) => return Err(error),
        }
        let stale = read_note(&mut file).filter(|old| old.pid != std::process::id());
        let holder = Holder { pid: std::process::id(), what: what.to_owned(), url: None };
        let mut lock = DirLock { file, holder, stale };
        lock.write_note()?;
        Ok(Acquire::Acquired(lock))
    }

    /// Records where the holder listens (a server, once bound).
    pub fn set_url(&mut self, url: &str) -> std::io::Result<()> {
        self.holder.url = Some(url.to_owned());
        self.write_note()
    }

    fn write_note(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(self.holder.to_note().as_bytes())?;
        self.file.flush()
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // A clean release leaves no note behind, so the next holder does not report it stale.
        let _ = self.file.set_len(0);
    }
}

fn read_note(file: &mut File) -> Option<Holder> {
    let mut note = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut note).ok()?;
    Holder::from_note(&note)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "test.lock";

    fn acquired(outcome: Acquire) -> DirLock {
        match outcome {
            Acquire::Acquired(lock) => lock,
            Acquire::Held(holder) => panic!("expected to get the lock, held by {holder:?}"),
        }
    }

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = acquired(DirLock::try_acquire(dir.path(), NAME, "anytime serve").unwrap());
        first.set_url("http://127.0.0.1:8080/").unwrap();
        // flock locks belong to the open file description: a second open in this same process
        // conflicts exactly as another process would.
        match DirLock::try_acquire(dir.path(), NAME, "anytime serve").unwrap() {
            Acquire::Held(Some(holder)) => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.what, "anytime serve");
                assert_eq!(holder.url.as_deref(), Some("http://127.0.0.1:8080/"));
            }
            other => panic!("second acquire: {other:?}"),
        }
        drop(first);
        let again = acquired(DirLock::try_acquire(dir.path(), NAME, "anytime follow").unwrap());
        assert_eq!(again.stale, None, "a clean release leaves no stale note");
        assert!(
            matches!(DirLock::try_acquire(dir.path(), NAME, "x").unwrap(), Acquire::Held(Some(h)) if h.what == "anytime follow")
        );
    }

    #[test]
    fn a_crashed_holders_note_is_reported_stale_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // What a SIGKILLed holder leaves: its note, and no lock (the kernel dropped it).
        std::fs::write(dir.path().join(NAME), "pid=4194301\nwhat=anytime follow\n").unwrap();
        let lock = acquired(DirLock::try_acquire(dir.path(), NAME, "anytime send").unwrap());
        let stale = lock.stale.clone().expect("the crashed holder's note is reported");
        assert_eq!(stale.pid, 4_194_301);
        assert_eq!(stale.what, "anytime follow");
        let note = std::fs::read_to_string(dir.path().join(NAME)).unwrap();
        assert_eq!(note, format!("pid={}\nwhat=anytime send\n", std::process::id()));
    }

    #[test]
    fn notes_that_are_not_ours_are_ignored() {
        assert_eq!(Holder::from_note(""), None);
        assert_eq!(Holder::from_note("pid=abc\n"), None);
        assert_eq!(Holder::from_note("garbage"), None);
        let holder = Holder { pid: 7, what: "a\nb".into(), url: Some("http://x/".into()) };
        assert_eq!(Holder::from_note(&holder.to_note()), Some(Holder { what: "a b".into(), ..holder }));
    }
}
