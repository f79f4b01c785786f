//! The one writer of this node's ledger: a task that owns the `Ledger` working set and takes
//! jobs from a bounded queue. Every job waiting when it wakes goes into one batch — prefetch,
//! post, one store commit (group commit: one fsync for the batch) — and only then are the jobs
//! answered. A commit that lost a race with another node (`Conflict`) is checked against the
//! limits and posted again on fresh state; ids make that safe.

use std::collections::HashMap;
use std::sync::Arc;

use anytime_ledger::{
    AccountId, Command, CommitError, HoldStatus, Ledger, LedgerStore, Posted, TransferError, TransferId,
};
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
    // (account, UTC day) → sent that day, as far as this node knows. Like the ledger's working
    // set it may be stale when other nodes share the store; a commit that lost a race drops
    // both, so the limits are checked again on what the store holds (see `settle`).
    let mut spent: HashMap<(AccountId, u64), u128> = HashMap::new();
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        let mut commands = batch[0].commands.len();
        while commands < LEDGER_BATCH_COMMANDS_MAX {
            let Ok(job) = jobs.try_recv() else { break };
            commands += job.commands.len();
            batch.push(job);
        }
        settle(&mut ledger, &mut spent, &*store, env.now_ms(), batch).await;
    }
}

/// Checks the daily limits, posts and commits one batch, and answers its jobs. A commit that lost
/// a race with another node (`Conflict`) means someone else changed one of its accounts — maybe
/// the payer's, by a payment on another node — so the limits are checked again, on fresh state,
/// before posting again: across nodes a user cannot spend more than the daily limit.
async fn settle(
    ledger: &mut Ledger,
    spent: &mut HashMap<(AccountId, u64), u128>,
    store: &dyn LedgerStore,
    now: u64,
    mut batch: Vec<Job>,
) {
    let day = limits::day_start(now);
    spent.retain(|(_, d), _| *d == day);
    for _ in 0..COMMIT_ATTEMPTS_MAX {
        batch = within_limits(spent, store, day, batch).await;
        if batch.is_empty() {
            return;
        }
        let all: Vec<Command> = batch.iter().flat_map(|j| j.commands.iter().cloned()).collect();
        let expire: Vec<TransferId> = batch.iter().flat_map(|j| j.expire.iter().copied()).collect();
        let results = match post(ledger, store, now, &all, &expire).await {
            Ok(results) => results,
            Err(Attempt::Conflict) => {
                spent.clear();
                continue;
            }
            Err(Attempt::Failed(code)) => {
                // The ledger's working set was dropped; the counts go with it (see `run`).
                spent.clear();
                for job in batch {
                    let _ = job.reply.send(Err(code));
                }
                return;
            }
        };
        // A released hold no longer counts toward the limit; which wallet's it was is in the
        // store, read again the next time (voids are rare: declined payouts, expiries).
        let released = !expire.is_empty() || all.iter().any(|c| matches!(c, Command::Void { .. }));
        let mut results = results.into_iter();
        for job in batch {
            let mine: Results = results.by_ref().take(job.commands.len()).collect();
            if let Some(spend) = &job.spend {
                let moved = mine.iter().any(|r| matches!(r, Ok(Posted::Transfer { duplicate: false, .. })));
                if moved {
                    *spent.entry((spend.account, day)).or_default() += spend.amount;
                }
            }
            let _ = job.reply.send(Ok(mine));
        }
        if released {
            spent.clear();
        }
        return;
    }
    for job in batch {
        let _ = job.reply.send(Err(ErrorCode::LedgerConflict));
    }
}

/// The jobs of `batch` whose spend fits under today's limit, counting the earlier jobs of the
/// batch as if they succeed (conservative); the others are answered `limit_exceeded`. A refusal
/// from a remembered count is checked again on the store's (a hold released elsewhere).
async fn within_limits(
    spent: &mut HashMap<(AccountId, u64), u128>,
    store: &dyn LedgerStore,
    day: u64,
    batch: Vec<Job>,
) -> Vec<Job> {
    let mut accepted = Vec::with_capacity(batch.len());
    let mut provisional: HashMap<AccountId, u128> = HashMap::new();
    for job in batch {
        if let Some(spend) = &job.spend {
            let earlier = provisional.get(&spend.account).copied().unwrap_or(0);
            let remembered = spent.contains_key(&(spend.account, day));
            let mut verdict = fits(spent, store, spend, day, earlier).await;
            if remembered && verdict == Err(ErrorCode::LimitExceeded) {
                spent.remove(&(spend.account, day));
                verdict = fits(spent, store, spend, day, earlier).await;
            }
            if let Err(code) = verdict {
                let _ = job.reply.send(Err(code));
                continue;
            }
            *provisional.entry(spend.account).or_default() += spend.amount;
        }
        accepted.push(job);
    }
    accepted
}

/// Whether `spend` fits under today's limit after what the account sent today and `earlier`.
async fn fits(
    spent: &mut HashMap<(AccountId, u64), u128>,
    store: &dyn LedgerStore,
    spend: &Spend,
    day: u64,
    earlier: u128,
) -> Result<(), ErrorCode> {
    let so_far = spent_today(store, spent, spend.account, day).await? + earlier;
    limits::check(spend.currency, spend.amount, so_far).map_err(|error| {
        tracing::debug!(%error, "wallet limit");
        ErrorCode::LimitExceeded
    })
}

/// Why one attempt at a batch did not commit.
enum Attempt {
    /// Another node changed one of its accounts first: check and post again on fresh state.
    Conflict,
    Failed(ErrorCode),
}

/// Prefetches, posts and commits `commands` (and releases the expired holds `expire`) once.
async fn post(
    ledger: &mut Ledger,
    store: &dyn LedgerStore,
    now: u64,
    commands: &[Command],
    expire: &[TransferId],
) -> Result<Results, Attempt> {
    // Expiring a hold needs what releasing it would: the hold and its accounts.
    let mut wanted = commands.to_vec();
    wanted.extend(expire.iter().map(|hold| Command::Void { id: *hold, pending: *hold }));
    while let Some(want) = ledger.wants(&wanted) {
        let found = store.load(&want.accounts, &want.transfers).await.map_err(|e| {
            tracing::error!(error = %e, "ledger load failed");
            ledger.reset();
            Attempt::Failed(ErrorCode::Internal)
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
        Ok(()) => Ok(results),
        Err(CommitError::Conflict) => {
            ledger.reset();
            Err(Attempt::Conflict)
        }
        Err(CommitError::Store(e)) => {
            tracing::error!(error = %e, "ledger commit failed");
            ledger.reset();
            Err(Attempt::Failed(ErrorCode::Internal))
        }
    }
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
            // A hold counts while it is held and once captured, not once released.
            let spends = match t.kind {
                anytime_ledger::TransferKind::Posted => true,
                anytime_ledger::TransferKind::Pending { .. } => {
                    !matches!(t.hold, Some(HoldStatus::Voided | HoldStatus::Expired))
                }
                _ => false,
            };
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
