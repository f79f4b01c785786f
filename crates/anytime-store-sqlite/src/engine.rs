//! Group commit on SQLite, and the pool of readers.
//!
//! SQLite has one writer at a time, so all writes go to one thread. It takes every job that is
//! waiting (up to `SQLITE_BATCH_JOBS_MAX`), runs them in one transaction, each inside its own savepoint
//! (a rejected job rolls back only itself), commits once — one fsync with `synchronous=FULL` —
//! and only then answers each caller. Under load, jobs pile up while the previous batch is
//! being fsynced, so the batch grows with the load and the fsync cost per message shrinks.
//! Readers use their own connections; WAL lets them run while the writer writes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anytime_proto::limits::{SQLITE_BATCH_JOBS_MAX, SQLITE_QUEUE_JOBS_MAX, SQLITE_READERS_IDLE_MAX};
use anytime_server_core::store::{PendingWrite, StoreError, StoreResult};
use anytime_server_core::Metrics;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

/// How long a connection waits for a lock held by another before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A unit of work for the writer thread.
trait WriteJob: Send {
    /// Runs inside the batch transaction; returns false if the job failed and its savepoint
    /// must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Called once the batch committed (Ok) or failed as a whole (Err).
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Job<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match committed {
            Ok(()) => self.result.unwrap_or_else(|| Err(StoreError::Backend("write job never ran".into()))),
            Err(error) => Err(error),
        };
        // The caller may have gone away (connection closed); the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

pub(crate) struct Engine {
    jobs: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Arc<ReaderPool>,
    /// Set by a job that deleted message content; the writer then truncates the WAL after the
    /// batch, so deleted ciphertext does not linger in old WAL frames.
    truncate_wal: Arc<AtomicBool>,
}

pub(crate) fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

impl Engine {
    pub(crate) fn open(path: &Path, metrics: Arc<Metrics>) -> Result<Engine, crate::OpenError> {
        let mut conn = open_connection(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)
            .map_err(|source| crate::OpenError::Open { path: path.to_owned(), source })?;
        crate::migrate::migrate(&mut conn)?;
        let (jobs, rx) = mpsc::channel(SQLITE_QUEUE_JOBS_MAX);
        let truncate_wal = Arc::new(AtomicBool::new(false));
        let writer_truncate_wal = truncate_wal.clone();
        std::thread::Builder::new()
            .name("anytime-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, metrics, writer_truncate_wal))
            .map_err(crate::OpenError::Thread)?;
        let readers = Arc::new(ReaderPool { path: path.to_owned(), idle: Mutex::new(Vec::new()) });
        Ok(Engine { jobs, readers, truncate_wal })
    }

    /// Asks the writer to checkpoint and truncate the WAL after the current batch.
    pub(crate) fn request_wal_truncate(&self) {
        self.truncate_wal.store(true, Ordering::Release);
    }

    /// Runs `work` in the next group-commit batch; returns once it is durable.
    pub(crate) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(work).await?.await
    }

    /// Queues `work` (waiting only for queue space) and returns a future for its durable result.
    /// Jobs run in the order they were queued.
    pub(crate) async fn submit<T, F>(&self, work: F) -> StoreResult<PendingWrite<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job { work: Some(work), result: None, reply });
        if self.jobs.send(job).await.is_err() {
            return Err(StoreError::Backend("the database writer has stopped".into()));
        }
        Ok(Box::pin(async move {
            answer.await.map_err(|_| StoreError::Backend("the database writer dropped a job".into()))?
        }))
    }

    /// Runs `work` on a reader connection, off the async workers.
    pub(crate) async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = work(&conn);
            readers.put(conn);
            result
        })
        .await
        .map_err(|error| StoreError::Backend(format!("reader task failed: {error}")))?
    }
}

fn open_connection(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: the WAL is fsynced at every commit, so a committed batch survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Deleted rows are overwritten with zeros: a delivered message is gone, not just
        // unlinked from the b-tree.
        conn.pragma_update(None, "secure_delete", "ON")?;
        // Every job of a batch runs in its own savepoint. SQLite keeps the savepoints'
        // sub-journal in memory only up to 64 KiB and then writes it to a temporary file: with
        // batches of thousands of jobs that spilled, and those writes were ~40% of the writer
        // thread's time (perf, BENCHMARKS.md). In memory it is a few MiB per batch at most.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn WriteJob>>,
    metrics: Arc<Metrics>,
    truncate_wal: Arc<AtomicBool>,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(SQLITE_BATCH_JOBS_MAX);
    // Ends when every sender (the store) is dropped and the queue is drained.
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < SQLITE_BATCH_JOBS_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = run_batch(&conn, &mut batch, &metrics);
        if let Err(error) = &committed {
            tracing::error!(%error, jobs = batch.len(), "group commit failed");
        }
        metrics.commit_batch_size.observe(batch.len() as f64);
        for job in batch.drain(..) {
            job.finish(committed.clone());
        }
        if truncate_wal.swap(false, Ordering::AcqRel) {
            // Readers may hold the WAL; then the checkpoint is partial and the next GC retries.
            if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(%error, "WAL checkpoint failed");
            }
        }
    }
    tracing::debug!("database writer stopped");
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteJob>], metrics: &Metrics) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    for job in batch.iter_mut() {
        // Cached statements: these run twice per job, so parsing them each time would show.
        let step = exec_cached(conn, "SAVEPOINT job").and_then(|()| {
            if job.run(conn) {
                exec_cached(conn, "RELEASE job")
            } else {
                exec_cached(conn, "ROLLBACK TO job").and_then(|()| exec_cached(conn, "RELEASE job"))
            }
        });
        if let Err(error) = step {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(backend(error));
        }
    }
    let started = Instant::now();
    if let Err(error) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(backend(error));
    }
    metrics.fsync_seconds.observe(started.elapsed().as_secs_f64());
    Ok(())
}

fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn take(&self) -> StoreResult<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|poison| poison.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(backend),
        }
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|poison| poison.into_inner());
        if idle.len() < SQLITE_READERS_IDLE_MAX {
            idle.push(conn);
        }
    }
}
