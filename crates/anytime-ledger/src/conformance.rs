//! The cases every [`LedgerStore`] must pass (feature `conformance`): the memory store runs them
//! here, the SQLite and PostgreSQL stores in their crates. Each case gets a fresh, empty store.

use std::future::Future;

use crate::currency::Currency;
use crate::ledger::{Ledger, Posted};
use crate::store::{Changes, CommitError, LedgerStore};
use crate::types::{Account, AccountId, AccountKind, Command, HoldStatus, TransferId, TransferKind};
use crate::TransferError;

pub async fn run_all<S: LedgerStore, F: Future<Output = S>>(mut fresh: impl FnMut() -> F) {
    batches_round_trip_and_sum_to_zero(&fresh().await).await;
    a_stale_account_version_is_refused_whole(&fresh().await).await;
    holds_expire_and_history_pages(&fresh().await).await;
}

const FUNDING: AccountId = AccountId(1);
const ALICE: AccountId = AccountId(2);
const BOB: AccountId = AccountId(3);

fn open(id: AccountId, kind: AccountKind, owner: u64) -> Command {
    Command::Open(Account::new(id, Currency::USD, kind, owner))
}

pub fn transfer(id: u128, debit: AccountId, credit: AccountId, amount: u128, hold: Option<u64>) -> Command {
    Command::Transfer {
        id: TransferId(id),
        debit,
        credit,
        amount,
        currency: Currency::USD,
        code: 1,
        reference: 0,
        hold,
    }
}

/// Prefetches, posts and commits one batch, as a shell does.
pub async fn post<S: LedgerStore>(
    ledger: &mut Ledger,
    store: &S,
    now_ms: u64,
    batch: &[Command],
) -> Result<Vec<Result<Posted, TransferError>>, CommitError> {
    while let Some(want) = ledger.wants(batch) {
        let found = store.load(&want.accounts, &want.transfers).await?;
        ledger.loaded(&want, found);
    }
    let results = ledger.post_batch(now_ms, batch);
    let changes = ledger.take_changes();
    if let Err(e) = store.commit(&changes).await {
        ledger.reset();
        return Err(e);
    }
    Ok(results)
}

async fn balances<S: LedgerStore>(store: &S, ids: &[AccountId]) -> Vec<(u128, u128, u128, u128)> {
    let loaded = store.load(ids, &[]).await.expect("load");
    ids.iter()
        .map(|id| {
            let a = loaded.accounts.iter().find(|a| a.id == *id).expect("account stored");
            (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
        })
        .collect()
}

pub async fn batches_round_trip_and_sum_to_zero<S: LedgerStore>(store: &S) {
    let mut ledger = Ledger::new();
    let setup = [
        open(FUNDING, AccountKind::Funding, 0),
        open(ALICE, AccountKind::Wallet, 1),
        open(BOB, AccountKind::Wallet, 2),
    ];
    let results = post(&mut ledger, store, 10, &setup).await.expect("commit");
    assert!(results.iter().all(|r| matches!(r, Ok(Posted::Opened { existed: false, .. }))), "{results:?}");
    let batch = [
        transfer(1, FUNDING, ALICE, 10_000, None),
        transfer(2, ALICE, BOB, 2_500, None),
        transfer(3, ALICE, BOB, 1_000, Some(1_000)),
        transfer(4, BOB, ALICE, 99_999, None),
    ];
    let results = post(&mut ledger, store, 20, &batch).await.expect("commit");
    assert_eq!(results[3], Err(TransferError::InsufficientFunds));
    assert_eq!(
        balances(store, &[FUNDING, ALICE, BOB]).await,
        vec![(10_000, 0, 0, 0), (2_500, 10_000, 1_000, 0), (0, 2_500, 0, 1_000)],
        "posted and held amounts, as committed"
    );
    // A fresh ledger (another process) sees the same and recognises a retry.
    let mut other = Ledger::new();
    let retry = post(&mut other, store, 30, &[transfer(2, ALICE, BOB, 2_500, None)]).await.expect("commit");
    assert!(matches!(&retry[0], Ok(Posted::Transfer { duplicate: true, transfer }) if transfer.timestamp_ms == 20));
    let stored = store.load(&[], &[TransferId(3)]).await.expect("load").transfers;
    assert_eq!(
        stored.first().map(|t| (t.kind, t.hold)),
        Some((TransferKind::Pending { expires_at_ms: 1_000 }, Some(HoldStatus::Open)))
    );
    for (_, t) in store.totals().await.expect("totals") {
        assert_eq!(t.debits_posted, t.credits_posted);
        assert_eq!(t.debits_pending, t.credits_pending);
    }
}

pub async fn a_stale_account_version_is_refused_whole<S: LedgerStore>(store: &S) {
    let (mut first, mut second) = (Ledger::new(), Ledger::new());
    let setup = [
        open(FUNDING, AccountKind::Funding, 0),
        open(ALICE, AccountKind::Wallet, 1),
        open(BOB, AccountKind::Wallet, 2),
    ];
    post(&mut first, store, 10, &setup).await.expect("commit");
    post(&mut first, store, 11, &[transfer(1, FUNDING, ALICE, 100, None)]).await.expect("commit");
    // Both load alice at the same version; the first to commit wins.
    post(&mut second, store, 12, &[transfer(2, ALICE, BOB, 60, None)]).await.expect("commit");
    let mut stale = first;
    let outcome = post(&mut stale, store, 13, &[transfer(3, ALICE, BOB, 60, None)]).await;
    assert!(matches!(outcome, Err(CommitError::Conflict)), "a write from a stale copy is refused");
    assert_eq!(balances(store, &[ALICE, BOB]).await, vec![(60, 100, 0, 0), (0, 60, 0, 0)], "and nothing of it written");
    // Reloaded, the same batch is judged on what is really there.
    let again = post(&mut stale, store, 14, &[transfer(3, ALICE, BOB, 60, None)]).await.expect("commit");
    assert_eq!(again[0], Err(TransferError::InsufficientFunds));
    // A transfer id that exists cannot be written twice either.
    let duplicate =
        Changes { transfers: store.load(&[], &[TransferId(2)]).await.expect("load").transfers, ..Changes::default() };
    assert!(matches!(store.commit(&duplicate).await, Err(CommitError::Conflict)));
}

pub async fn holds_expire_and_history_pages<S: LedgerStore>(store: &S) {
    let mut ledger = Ledger::new();
    let setup = [
        open(FUNDING, AccountKind::Funding, 0),
        open(ALICE, AccountKind::Wallet, 1),
        open(BOB, AccountKind::Wallet, 2),
    ];
    post(&mut ledger, store, 10, &setup).await.expect("commit");
    let batch = [
        transfer(1, FUNDING, ALICE, 1_000, None),
        transfer(2, ALICE, BOB, 100, Some(500)),
        transfer(3, ALICE, BOB, 200, Some(400)),
        transfer(4, ALICE, BOB, 300, Some(9_000)),
    ];
    post(&mut ledger, store, 20, &batch).await.expect("commit");
    let mut ledger = Ledger::new();
    let due = store.expired_holds(450, 10).await.expect("expired");
    assert_eq!(due, vec![TransferId(3)], "open holds due by then, oldest expiry first");
    let due = store.expired_holds(600, 10).await.expect("expired");
    assert_eq!(due, vec![TransferId(3), TransferId(2)]);
    let voids: Vec<Command> = due.iter().map(|id| Command::Void { id: TransferId(0), pending: *id }).collect();
    while let Some(want) = ledger.wants(&voids) {
        let found = store.load(&want.accounts, &want.transfers).await.expect("load");
        ledger.loaded(&want, found);
    }
    assert_eq!(ledger.expire(600, &due), due);
    store.commit(&ledger.take_changes()).await.expect("commit");
    assert!(store.expired_holds(600, 10).await.expect("expired").is_empty());
    assert_eq!(balances(store, &[ALICE]).await, vec![(0, 1_000, 300, 0)], "only the open hold is still held");
    let page = store.transfers_of(ALICE, None, 2).await.expect("history");
    let ids: Vec<u128> = page.iter().map(|t| t.id.0).collect();
    assert_eq!(ids, vec![4, 3], "newest first (same instant: higher id first)");
    let last = page.last().map(|t| (t.timestamp_ms, t.id));
    let rest: Vec<u128> = store.transfers_of(ALICE, last, 10).await.expect("history").iter().map(|t| t.id.0).collect();
    assert_eq!(rest, vec![2, 1]);
    assert!(store.transfers_of(AccountId(99), None, 10).await.expect("history").is_empty());
    let expired = store.load(&[], &[TransferId(2)]).await.expect("load").transfers;
    assert_eq!(expired.first().and_then(|t| t.hold), Some(HoldStatus::Expired));
}
