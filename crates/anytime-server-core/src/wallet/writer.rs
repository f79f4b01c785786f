//! The one writer of this node's ledger: a task that owns the `Ledger` working set and takes
//! jobs from a bounded queue. Every job waiting when it wakes goes into one batch — prefetch,
//! post, one store commit (group commit: one fsync for the batch) — and only then are the jobs
//! answered. A commit that lost a race with another node (`Conflict`) is posted again on fresh
//! state; ids make that safe.

use std::collections::HashMap;
use std::sync::Arc;

use anytime_ledger::{AccountId, Command, CommitError, Ledger, LedgerStore, Posted, TransferError, TransferId};
use anytime_proto::limits::{COMMIT_ATTEMPTS_MAX, LEDGER_BATCH_COMMANDS_MAX};
use anytime_proto::ErrorCode;
use anytime_wallet::limits;
use tokio::sync::{mpsc, oneshot};

use crate::env::Env;

pub(crate) type Results = Vec<Result<Posted, TransferError>>;

/// Money leaving a wallet under the daily limit: checked by the writer, which alone knows what
/// this node let through today.
pub(crate) struct Spend {
    pub account: AccountId,
    pub currency: anytime_ledger::Currency,
    pub amount: u128,
}

pub(crate) struct Job {
    pub commands: Vec<Command>,
    pub spend: Option<Spend>,
    /// Holds to release as expired (the sweeper's), in the same batch and commit.
    pub expire: Vec<TransferId>,
    pub reply: oneshot::Sender<Result<Results, ErrorCode>>,
}

pub(crate) fn start(store: Arc<dyn LedgerStore>, env: Arc<dyn Env>, jobs: mpsc::Receiver<Job>) {
    tokio::spawn(run(store, env, jobs));
}

async fn run(store: Arc<dyn LedgerStore>, env: Arc<dyn Env>, mut jobs: mpsc::Receiver<Job>) {
    let mut ledger = Ledger::new();
    // (account, UTC day) → sent that day, as far as this node knows.
    let mut spent: HashMap<(AccountId, u64), u128> = HashMap::new();
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        let mut commands = batch[0].commands.len();
        while commands < LEDGER_BATCH_COMMANDS_MAX {
            let Ok(job) = jobs.try_recv() else { break };
            commands += job.commands.len();
            batch.push(job);
        }
        let now = env.now_ms();
        let day = limits::day_start(now);
        spent.retain(|(_, d), _| *d == day);
        // Daily limits, counting earlier jobs of this batch as if they succeed (conservative).
        let mut accepted = Vec::with_capacity(batch.len());
        let mut provisional: HashMap<AccountId, u128> = HashMap::new();
        for job in batch {
            if let Some(spend) = &job.spend {
                let so_far = match spent_today(&*store, &mut spent, spend.account, day).await {
                    Ok(so_far) => so_far + provisional.get(&spend.account).copied().unwrap_or(0),
                    Err(code) => {
                        let _ = job.reply.send(Err(code));
                        continue;
                    }
                };
                if let Err(error) = limits::check(spend.currency, spend.amount, so_far) {
                    tracing::debug!(%error, "wallet limit");
                    let _ = job.reply.send(Err(ErrorCode::LimitExceeded));
                    continue;
                }
                *provisional.entry(spend.account).or_default() += spend.amount;
            }
            accepted.push(job);
        }
        if accepted.is_empty() {
            continue;
        }
        let all: Vec<Command> = accepted.iter().flat_map(|j| j.commands.iter().cloned()).collect();
        let expire: Vec<TransferId> = accepted.iter().flat_map(|j| j.expire.iter().copied()).collect();
        let outcome = post(&mut ledger, &*store, now, &all, &expire).await;
        let mut results = match outcome {
            Ok(results) => results.into_iter(),
            Err(code) => {
                for job in accepted {
                    let _ = job.reply.send(Err(code));
                }
                continue;
            }
        };
        for job in accepted {
            let mine: Results = results.by_ref().take(job.commands.len()).collect();
            if let Some(spend) = &job.spend {
                let moved = mine.iter().any(|r| matches!(r, Ok(Posted::Transfer { duplicate: false, .. })));
                if moved {
                    *spent.entry((spend.account, day)).or_default() += spend.amount;
                }
            }
            let _ = job.reply.send(Ok(mine));
        }
    }
}

/// Prefetches, posts and commits `commands` (and releases the expired holds `expire`), again on
/// fresh state after a lost race.
async fn post(
    ledger: &mut Ledger,
    store: &dyn LedgerStore,
    now: u64,
    commands: &[Command],
    expire: &[TransferId],
) -> Result<Results, ErrorCode> {
    // Expiring a hold needs what releasing it would: the hold and its accounts.
    let mut wanted = commands.to_vec();
    wanted.extend(expire.iter().map(|hold| Command::Void { id: *hold, pending: *hold }));
    for _ in 0..COMMIT_ATTEMPTS_MAX {
        while let Some(want) = ledger.wants(&wanted) {
            let found = store.load(&want.accounts, &want.transfers).await.map_err(|e| {
                tracing::error!(error = %e, "ledger load failed");
                ledger.reset();
                ErrorCode::Internal
            })?;
            ledger.loaded(&want, found);
        }
        let results = ledger.post_batch(now, commands);
        if !expire.is_empty() {
            let expired = ledger.expire(now, expire);
            tracing::debug!(holds = expired.len(), "holds expired");
        }
        let changes = ledger.take_changes();
        match store.commit(&changes).await {
            Ok(()) => return Ok(results),
            Err(CommitError::Conflict) => ledger.reset(),
            Err(CommitError::Store(e)) => {
                tracing::error!(error = %e, "ledger commit failed");
                ledger.reset();
                return Err(ErrorCode::Internal);
            }
        }
    }
    Err(ErrorCode::LedgerConflict)
}

/// What `account` sent today (payments, envelopes and paid requests out, posted or held), from
/// the store the first time.
async fn spent_today(
    store: &dyn LedgerStore,
    spent: &mut HashMap<(AccountId, u64), u128>,
    account: AccountId,
    day: u64,
) -> Result<u128, ErrorCode> {
    if let Some(known) = spent.get(&(account, day)) {
        return Ok(*known);
    }
    let mut total = 0u128;
    let mut before = None;
    'pages: loop {
        let page = store.transfers_of(account, before, 500).await.map_err(|e| {
            tracing::error!(error = %e, "ledger history failed");
            ErrorCode::Internal
        })?;
        for t in &page {
            if t.timestamp_ms < day {
                break 'pages;
            }
            // Everything a user sends counts: payments, envelopes, paid requests, payouts (the
            // same jobs that carry a `Spend`).
            let payment = matches!(
                t.code,
                anytime_wallet::purpose::PAYMENT
                    | anytime_wallet::purpose::ENVELOPE
                    | anytime_wallet::purpose::REQUEST
                    | anytime_wallet::purpose::PAYOUT
            );
            let out = t.debit == account;
            let spends =
                matches!(t.kind, anytime_ledger::TransferKind::Posted | anytime_ledger::TransferKind::Pending { .. });
            if payment && out && spends {
                total += t.amount;
            }
        }
        match page.last() {
            Some(last) if page.len() == 500 => before = Some((last.timestamp_ms, last.id)),
            _ => break,
        }
    }
    spent.insert((account, day), total);
    Ok(total)
}
