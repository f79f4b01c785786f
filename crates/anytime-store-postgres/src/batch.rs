//! Group commit on PostgreSQL for the delivery hot path (sends and acks).
//!
//! One task per node takes every queued job (up to `POSTGRES_BATCH_JOBS_MAX`), runs them in one
//! transaction — each in its own savepoint, so a rejected job undoes only itself — commits once,
//! then answers each caller. Jobs are sorted by conversation (stably, so one conversation keeps
//! submission order): every node then takes conversation row locks in the same order, and two
//! nodes' batches cannot deadlock.

use anytime_proto::frame::Seq;
use anytime_proto::{ConvId, DeviceId};
use std::sync::Arc;

use anytime_server_core::store::{Appended, NewMessage, PendingWrite, StoreError, StoreResult};
use anytime_server_core::Metrics;
use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::{mpsc, oneshot};

use crate::{delivery, pg};
use anytime_proto::limits::{POSTGRES_BATCH_JOBS_MAX, POSTGRES_QUEUE_JOBS_MAX};

enum Job {
    Message(NewMessage, oneshot::Sender<StoreResult<Appended>>),
    Ack(DeviceId, ConvId, Seq, oneshot::Sender<StoreResult<()>>),
}

impl Job {
    fn conv(&self) -> ConvId {
        match self {
            Job::Message(m, _) => m.conv,
            Job::Ack(_, conv, _, _) => *conv,
        }
    }
}

/// The result a job computed inside the transaction, sent once the batch committed.
enum Done {
    Message(StoreResult<Appended>, oneshot::Sender<StoreResult<Appended>>),
    Ack(StoreResult<()>, oneshot::Sender<StoreResult<()>>),
}

pub(crate) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    pub(crate) fn start(pool: Pool, metrics: Arc<Metrics>) -> Batcher {
        let (jobs, rx) = mpsc::channel(POSTGRES_QUEUE_JOBS_MAX);
        tokio::spawn(run(pool, rx, metrics));
        Batcher { jobs }
    }

    pub(crate) async fn message(&self, message: NewMessage) -> StoreResult<PendingWrite<Appended>> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Message(message, tx)).await.map_err(|_| stopped())?;
        Ok(Box::pin(async move { rx.await.map_err(|_| stopped())? }))
    }

    pub(crate) async fn ack(&self, device: DeviceId, conv: ConvId, seq: Seq) -> StoreResult<PendingWrite<()>> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Ack(device, conv, seq, tx)).await.map_err(|_| stopped())?;
        Ok(Box::pin(async move { rx.await.map_err(|_| stopped())? }))
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the PostgreSQL batch writer has stopped".into())
}

async fn run(pool: Pool, mut rx: mpsc::Receiver<Job>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(POSTGRES_BATCH_JOBS_MAX);
    // Ends when the store (every sender) is dropped.
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < POSTGRES_BATCH_JOBS_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch.sort_by_key(Job::conv);
        let jobs = std::mem::take(&mut batch);
        metrics.commit_batch_size.observe(jobs.len() as f64);
        let started = std::time::Instant::now();
        let (done, committed) = run_batch(&pool, jobs).await;
        metrics.fsync_seconds.observe(started.elapsed().as_secs_f64());
        if let Err(error) = &committed {
            tracing::error!(%error, "PostgreSQL batch failed");
        }
        for result in done {
            match result {
                Done::Message(result, reply) => {
                    let _ = reply.send(committed.clone().and(result));
                }
                Done::Ack(result, reply) => {
                    let _ = reply.send(committed.clone().and(result));
                }
            }
        }
    }
}

async fn run_batch(pool: &Pool, jobs: Vec<Job>) -> (Vec<Done>, Result<(), StoreError>) {
    let mut done = Vec::with_capacity(jobs.len());
    let mut client = match pg::client_for_batch(pool).await {
        Ok(client) => client,
        Err(error) => return (fail_all(jobs), Err(error)),
    };
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(error) => return (fail_all(jobs), Err(pg::to_backend(error))),
    };
    for job in jobs {
        if let Err(error) = tx.batch_execute("SAVEPOINT job").await {
            done.push(fail(job));
            return (done, Err(pg::to_backend(error)));
        }
        let (result_ok, item) = match job {
            Job::Message(message, reply) => {
                let result = delivery::append_message_in(&tx, &message).await;
                (result.is_ok(), Done::Message(result, reply))
            }
            Job::Ack(device, conv, seq, reply) => {
                let result = delivery::ack_in(&tx, device, conv, seq).await;
                (result.is_ok(), Done::Ack(result, reply))
            }
        };
        let end = if result_ok { "RELEASE SAVEPOINT job" } else { "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job" };
        done.push(item);
        if let Err(error) = tx.batch_execute(end).await {
            return (done, Err(pg::to_backend(error)));
        }
    }
    let committed = tx.commit().await.map_err(pg::to_backend);
    (done, committed)
}

fn fail(job: Job) -> Done {
    match job {
        Job::Message(_, reply) => Done::Message(Err(stopped()), reply),
        Job::Ack(_, _, _, reply) => Done::Ack(Err(stopped()), reply),
    }
}

fn fail_all(jobs: Vec<Job>) -> Vec<Done> {
    jobs.into_iter().map(fail).collect()
}
