//! The cases every [`WalletStore`] must pass (feature `conformance`): memory here, SQLite and
//! PostgreSQL in their crates. Each case gets a fresh store.

use std::future::Future;
use std::sync::Arc;

use anytime_ledger::Currency;
use anytime_proto::{ConvId, UserId};

use crate::envelope::{Envelope, Grab, Status};
use crate::pin::PinRecord;
use crate::request::{self, MoneyRequest};
use crate::WalletStore;

pub async fn run_all<S: WalletStore + 'static, F: Future<Output = S>>(mut fresh: impl FnMut() -> F) {
    pins_round_trip(&fresh().await).await;
    envelopes_are_created_once(&fresh().await).await;
    concurrent_grabs_take_each_share_once(Arc::new(fresh().await)).await;
    requests_are_created_once_and_settled_once(&fresh().await).await;
    a_payer_sees_their_open_requests_newest_first(&fresh().await).await;
}

pub fn request(id: u128, payer: u64, amount: u128, split: Option<u128>) -> MoneyRequest {
    MoneyRequest {
        id,
        requester: UserId(1),
        payer: UserId(payer),
        conv: ConvId(9),
        currency: Currency::USD,
        amount,
        split,
        created_at_ms: 1_000,
        expires_at_ms: 9_000,
        status: request::Status::Open,
    }
}

pub async fn requests_are_created_once_and_settled_once<S: WalletStore>(store: &S) {
    let split = vec![request(10, 2, 334, Some(77)), request(11, 3, 333, Some(77))];
    assert!(store.create_requests(&split).await.expect("create"));
    assert!(store.create_requests(&split).await.expect("again"), "a retry is not an error");
    let clash = vec![request(12, 4, 1, Some(78)), request(11, 3, 999, Some(78))];
    assert!(!store.create_requests(&clash).await.expect("create"), "another request under an id is refused");
    assert_eq!(store.request(12).await.expect("read"), None, "and nothing of that batch is stored");
    assert_eq!(store.split_requests(77).await.expect("split"), split, "in creation order");
    assert!(store.create_requests(&[request(13, 2, 50, None)]).await.expect("create"));
    assert!(store.split_requests(78).await.expect("split").is_empty());
    assert!(store.set_request_status(10, request::Status::Declined, true).await.expect("decline"));
    assert!(!store.set_request_status(10, request::Status::Cancelled, true).await.expect("only open"));
    assert!(store.set_request_status(10, request::Status::Paid, false).await.expect("forced"));
    assert_eq!(store.request(10).await.expect("read").map(|r| r.status), Some(request::Status::Paid));
    assert!(!store.set_request_status(99, request::Status::Paid, false).await.expect("unknown"));
}

pub async fn a_payer_sees_their_open_requests_newest_first<S: WalletStore>(store: &S) {
    let at = |mut r: MoneyRequest, created: u64, expires: u64| {
        r.created_at_ms = created;
        r.expires_at_ms = expires;
        r
    };
    let requests = [
        at(request(20, 2, 100, None), 1_000, 50_000),
        at(request(21, 3, 200, None), 2_000, 50_000),
        at(request(22, 2, 300, Some(79)), 3_000, 50_000),
        at(request(23, 2, 400, None), 4_000, 5_000),
        at(request(24, 2, 500, None), 5_000, 50_000),
    ];
    for r in &requests {
        assert!(store.create_requests(std::slice::from_ref(r)).await.expect("create"));
    }
    assert!(store.set_request_status(24, request::Status::Paid, true).await.expect("pay"));
    let ids = |list: Vec<MoneyRequest>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let open = store.open_requests_for(UserId(2), 6_000, 10).await.expect("list");
    assert_eq!(ids(open), [22, 20], "newest first; not another payer's, not paid, not expired");
    assert_eq!(ids(store.open_requests_for(UserId(2), 4_500, 1).await.expect("list")), [23], "the limit");
    assert!(store.open_requests_for(UserId(9), 0, 10).await.expect("list").is_empty());
}

pub fn envelope(id: u128, shares: Vec<u128>, expires_at_ms: u64) -> Envelope {
    Envelope {
        id,
        owner: UserId(1),
        conv: ConvId(9),
        currency: Currency::USD,
        total: shares.iter().sum(),
        shares,
        created_at_ms: 1_000,
        expires_at_ms,
        status: Status::Open,
    }
}

pub async fn pins_round_trip<S: WalletStore>(store: &S) {
    assert_eq!(store.pin(UserId(5)).await.expect("read"), None);
    let record = PinRecord { hash: "$argon2id$x".into(), failures: 2, locked_until_ms: 99 };
    store.put_pin(UserId(5), &record).await.expect("write");
    store.put_pin(UserId(5), &PinRecord { failures: 3, ..record.clone() }).await.expect("write");
    assert_eq!(store.pin(UserId(5)).await.expect("read"), Some(PinRecord { failures: 3, ..record }));
    assert_eq!(store.pin(UserId(6)).await.expect("read"), None);
}

pub async fn envelopes_are_created_once<S: WalletStore>(store: &S) {
    let first = envelope(7, vec![5, 3, 2], 5_000);
    assert!(store.create_envelope(&first).await.expect("create"));
    let retried = Envelope { shares: vec![4, 4, 2], ..first.clone() };
    assert!(store.create_envelope(&retried).await.expect("create again"), "a retry is not an error");
    assert_eq!(store.envelope(7).await.expect("read"), Some(first.clone()), "the first shares stand");
    let other = Envelope { total: 11, shares: vec![11], ..first.clone() };
    assert!(!store.create_envelope(&other).await.expect("create"), "a different envelope under the id is refused");
    assert!(store.create_envelope(&envelope(8, vec![1], 9_000)).await.expect("create"));
    assert_eq!(store.envelopes_due(5_000, 10).await.expect("due"), vec![7]);
    assert_eq!(store.envelopes_due(9_000, 10).await.expect("due"), vec![7, 8], "oldest expiry first");
    store.set_envelope_status(7, Status::Refunded).await.expect("status");
    assert_eq!(store.envelopes_due(9_000, 10).await.expect("due"), vec![8]);
    assert_eq!(store.envelope(7).await.expect("read").map(|e| e.status), Some(Status::Refunded));
    assert_eq!(store.envelope(99).await.expect("read"), None);
}

pub async fn concurrent_grabs_take_each_share_once<S: WalletStore + 'static>(store: Arc<S>) {
    let shares: Vec<u128> = (1..=10).collect();
    assert!(store.create_envelope(&envelope(3, shares.clone(), 9_000)).await.expect("create"));
    let mut grabs = tokio::task::JoinSet::new();
    for user in 100..150u64 {
        let store = store.clone();
        grabs.spawn(async move { (user, store.grab(3, UserId(user), 2_000 + user).await.expect("grab")) });
    }
    let mut won = Vec::new();
    while let Some(joined) = grabs.join_next().await {
        let (user, grab) = joined.expect("joined");
        if let Grab::Share { claim, fresh } = grab {
            assert!(fresh);
            assert_eq!(claim.user, UserId(user));
            won.push(claim);
        }
    }
    assert_eq!(won.len(), 10, "exactly as many grabs as shares");
    assert_eq!(won.iter().map(|c| c.amount).sum::<u128>(), shares.iter().sum::<u128>());
    let claims = store.claims(3).await.expect("claims");
    assert_eq!(claims.iter().map(|c| c.index).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>(), "in share order");
    assert!(claims.iter().all(|c| c.amount == shares[c.index as usize]));
    // A winner asking again gets its share back, not another; a loser still gets nothing.
    let again = store.grab(3, claims[4].user, 5_000).await.expect("grab");
    assert_eq!(again, Grab::Share { claim: claims[4].clone(), fresh: false });
    assert_eq!(store.grab(3, UserId(999), 5_000).await.expect("grab"), Grab::Empty);
    assert_eq!(store.grab(4, UserId(1), 5_000).await.expect("grab"), Grab::Empty, "no such envelope");
}
