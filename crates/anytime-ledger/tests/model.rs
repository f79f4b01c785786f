//! The ledger against a model: random sequences of fundings, payments, holds, captures, voids,
//! expiries, retries, conflicting ids and restarts (a fresh `Ledger` over the same store) run
//! through the real state machine and memory store and through a few lines of obvious
//! bookkeeping; after every step both agree on every result and balance, and the invariants hold.

use std::collections::BTreeMap;

use anytime_ledger::conformance::{post, transfer};
use anytime_ledger::{
    Account, AccountId, AccountKind, Command, Currency, HoldStatus, Ledger, LedgerStore, MemoryLedgerStore, Posted,
    TransferError, TransferId,
};
use proptest::prelude::*;

const WALLETS: u64 = 4;
const FUNDING: AccountId = AccountId(100);
const YEN: AccountId = AccountId(200);

fn wallet(n: u64) -> AccountId {
    AccountId(u128::from(n) + 1)
}

#[derive(Debug, Clone)]
enum Op {
    Fund {
        to: u64,
        amount: u128,
    },
    Pay {
        from: u64,
        to: u64,
        amount: u128,
    },
    /// Pay or hold exactly what is available, one less or one more: the edge of "enough".
    PayAll {
        from: u64,
        to: u64,
        delta: i8,
        hold: bool,
    },
    Hold {
        from: u64,
        to: u64,
        amount: u128,
        ttl: u64,
    },
    Capture {
        hold: usize,
        amount: Option<u128>,
    },
    Void {
        hold: usize,
    },
    /// Time passes; then the sweeper expires what is due.
    Advance {
        ms: u64,
    },
    /// The same request again (a client retry).
    Retry {
        op: usize,
    },
    /// Another request under an id already used.
    Reuse {
        op: usize,
        amount: u128,
    },
    /// The process restarts: the working set is gone, the store remains.
    Restart,
    /// Wrong currency, a missing account, zero or huge amounts.
    Bad {
        kind: u8,
        from: u64,
        amount: u128,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WALLETS;
    let amount = 1..5_000u128;
    prop_oneof![
        3 => (w.clone(), amount.clone()).prop_map(|(to, amount)| Op::Fund { to, amount }),
        5 => (w.clone(), w.clone(), amount.clone()).prop_map(|(from, to, amount)| Op::Pay { from, to, amount }),
        2 => (w.clone(), w.clone(), -1..=1i8, any::<bool>()).prop_map(|(from, to, delta, hold)| Op::PayAll { from, to, delta, hold }),
        3 => (w.clone(), w.clone(), amount.clone(), 1..2_000u64).prop_map(|(from, to, amount, ttl)| Op::Hold { from, to, amount, ttl }),
        2 => (0..20usize, proptest::option::of(0..6_000u128)).prop_map(|(hold, amount)| Op::Capture { hold, amount }),
        1 => (0..20usize).prop_map(|hold| Op::Void { hold }),
        1 => (0..1_500u64).prop_map(|ms| Op::Advance { ms }),
        2 => (0..40usize).prop_map(|op| Op::Retry { op }),
        1 => (0..40usize, amount.clone()).prop_map(|(op, amount)| Op::Reuse { op, amount }),
        1 => Just(Op::Restart),
        1 => (0..4u8, w, 0..u128::MAX).prop_map(|(kind, from, amount)| Op::Bad { kind, from, amount }),
    ]
}

/// The obvious bookkeeping the ledger must agree with.
#[derive(Default)]
struct Model {
    /// account → (debits posted, credits posted, debits pending, credits pending)
    sums: BTreeMap<AccountId, [u128; 4]>,
    /// hold id → (debit, credit, amount, expires, status)
    holds: BTreeMap<TransferId, (AccountId, AccountId, u128, u64, HoldStatus)>,
    /// The command each applied id answered and the amount it moved, for retries.
    applied: BTreeMap<TransferId, (Command, u128)>,
}

impl Model {
    fn available(&self, id: AccountId) -> u128 {
        let [dp, cp, dh, _] = self.sums[&id];
        cp - dp - dh
    }

    fn expected(&mut self, now: u64, command: &Command) -> Result<(), TransferError> {
        match command {
            Command::Transfer { id, debit, credit, amount, currency, hold, .. } => {
                if let Some((previous, _)) = self.applied.get(id) {
                    return if same_transfer(previous, command) { Ok(()) } else { Err(TransferError::Duplicate) };
                }
                if *amount == 0 {
                    return Err(TransferError::AmountZero);
                }
                if *amount > anytime_ledger::AMOUNT_MAX {
                    return Err(TransferError::AmountTooLarge);
                }
                if debit == credit {
                    return Err(TransferError::SameAccount);
                }
                if !self.sums.contains_key(debit) {
                    return Err(TransferError::DebitAccountNotFound);
                }
                if !self.sums.contains_key(credit) {
                    return Err(TransferError::CreditAccountNotFound);
                }
                if *currency != Currency::USD || *debit == YEN || *credit == YEN {
                    return Err(TransferError::CurrencyMismatch);
                }
                if hold.is_some_and(|at| at <= now) {
                    return Err(TransferError::ExpiryInPast);
                }
                if *debit != FUNDING && self.available(*debit) < *amount {
                    return Err(TransferError::InsufficientFunds);
                }
                let slot = if hold.is_some() { 2 } else { 0 };
                self.sums.get_mut(debit).expect("checked")[slot] += amount;
                self.sums.get_mut(credit).expect("checked")[slot + 1] += amount;
                if let Some(expires) = hold {
                    self.holds.insert(*id, (*debit, *credit, *amount, *expires, HoldStatus::Open));
                }
                self.applied.insert(*id, (command.clone(), *amount));
                Ok(())
            }
            Command::Post { id, pending, amount } => self.settle(now, *id, *pending, Some(*amount), command),
            Command::Void { id, pending } => self.settle(now, *id, *pending, None, command),
            _ => unreachable!("the model posts transfers, captures and voids"),
        }
    }

    /// A capture (`capture`: the amount asked, None for all) or a void (`capture` None).
    fn settle(
        &mut self,
        now: u64,
        id: TransferId,
        pending: TransferId,
        capture: Option<Option<u128>>,
        command: &Command,
    ) -> Result<(), TransferError> {
        if let Some((previous, moved)) = self.applied.get(&id) {
            let same = match (previous, capture) {
                (Command::Post { pending: p, .. }, Some(asked)) => *p == pending && asked.is_none_or(|a| a == *moved),
                (Command::Void { pending: p, .. }, None) => *p == pending,
                _ => false,
            };
            return if same { Ok(()) } else { Err(TransferError::Duplicate) };
        }
        let Some(&(debit, credit, held, expires, status)) = self.holds.get(&pending) else {
            return Err(TransferError::HoldNotFound);
        };
        match status {
            HoldStatus::Open if expires <= now => {
                self.release(pending, HoldStatus::Expired);
                return Err(TransferError::Expired);
            }
            HoldStatus::Open => {}
            HoldStatus::Posted => return Err(TransferError::HoldAlreadyPosted),
            HoldStatus::Voided => return Err(TransferError::HoldAlreadyVoided),
            HoldStatus::Expired => return Err(TransferError::Expired),
        }
        let Some(asked) = capture else {
            self.release(pending, HoldStatus::Voided);
            self.applied.insert(id, (command.clone(), held));
            return Ok(());
        };
        let take = asked.unwrap_or(held);
        if take == 0 {
            return Err(TransferError::AmountZero);
        }
        if take > held {
            return Err(TransferError::AmountExceedsHold);
        }
        self.release(pending, HoldStatus::Posted);
        self.sums.get_mut(&debit).expect("held")[0] += take;
        self.sums.get_mut(&credit).expect("held")[1] += take;
        self.applied.insert(id, (command.clone(), take));
        Ok(())
    }

    fn release(&mut self, hold: TransferId, status: HoldStatus) {
        let entry = self.holds.get_mut(&hold).expect("a known hold");
        let (debit, credit, amount) = (entry.0, entry.1, entry.2);
        entry.4 = status;
        self.sums.get_mut(&debit).expect("held")[2] -= amount;
        self.sums.get_mut(&credit).expect("held")[3] -= amount;
    }
}

fn same_transfer(a: &Command, b: &Command) -> bool {
    match (a, b) {
        (
            Command::Transfer { debit, credit, amount, currency, code, reference, hold, .. },
            Command::Transfer { debit: d, credit: c, amount: m, currency: cu, code: co, reference: r, hold: h, .. },
        ) => {
            debit == d
                && credit == c
                && amount == m
                && currency == cu
                && code == co
                && reference == r
                && hold.is_some() == h.is_some()
        }
        _ => false,
    }
}

fn command_id(command: &Command) -> TransferId {
    match command {
        Command::Transfer { id, .. } | Command::Post { id, .. } | Command::Void { id, .. } => *id,
        Command::Open(a) => TransferId(a.id.0),
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async move {
        let store = MemoryLedgerStore::new();
        let mut ledger = Ledger::new();
        let mut model = Model::default();
        let mut opens = vec![Command::Open(Account::new(FUNDING, Currency::USD, AccountKind::Funding, 0))];
        opens.push(Command::Open(Account::new(YEN, Currency::JPY, AccountKind::Wallet, 99)));
        for n in 0..WALLETS {
            opens.push(Command::Open(Account::new(wallet(n), Currency::USD, AccountKind::Wallet, n)));
        }
        post(&mut ledger, &store, 0, &opens).await.expect("open");
        for command in &opens {
            if let Command::Open(a) = command {
                model.sums.insert(a.id, [0; 4]);
            }
        }
        let mut now = 1_000u64;
        let mut next_id = 1_000u128;
        let mut history: Vec<Command> = Vec::new();
        let mut hold_ids: Vec<TransferId> = Vec::new();
        for op in ops {
            let mut fresh = || {
                next_id += 1;
                next_id
            };
            let command = match op {
                Op::Fund { to, amount } => transfer(fresh(), FUNDING, wallet(to), amount, None),
                Op::Pay { from, to, amount } => transfer(fresh(), wallet(from), wallet(to), amount, None),
                Op::PayAll { from, to, delta, hold } => {
                    let amount = model.available(wallet(from)).saturating_add_signed(i128::from(delta));
                    let id = fresh();
                    if hold {
                        hold_ids.push(TransferId(id));
                    }
                    transfer(id, wallet(from), wallet(to), amount, hold.then_some(now + 500))
                }
                Op::Hold { from, to, amount, ttl } => {
                    let id = fresh();
                    hold_ids.push(TransferId(id));
                    transfer(id, wallet(from), wallet(to), amount, Some(now + ttl))
                }
                Op::Capture { hold, amount } => match hold_ids.get(hold) {
                    Some(pending) => Command::Post { id: TransferId(fresh()), pending: *pending, amount },
                    None => continue,
                },
                Op::Void { hold } => match hold_ids.get(hold) {
                    Some(pending) => Command::Void { id: TransferId(fresh()), pending: *pending },
                    None => continue,
                },
                Op::Advance { ms } => {
                    now += ms;
                    let due = store.expired_holds(now, 100).await.expect("expired holds");
                    let voids: Vec<Command> =
                        due.iter().map(|id| Command::Void { id: TransferId(0), pending: *id }).collect();
                    while let Some(want) = ledger.wants(&voids) {
                        let found = store.load(&want.accounts, &want.transfers).await.expect("load");
                        ledger.loaded(&want, found);
                    }
                    let expired = ledger.expire(now, &due);
                    prop_assert_eq!(&expired, &due, "every due hold expires");
                    for id in &expired {
                        model.release(*id, HoldStatus::Expired);
                    }
                    store.commit(&ledger.take_changes()).await.expect("commit");
                    check(&store, &model).await?;
                    continue;
                }
                Op::Retry { op } => match history.get(op) {
                    Some(previous) => previous.clone(),
                    None => continue,
                },
                Op::Reuse { op, amount } => match history.get(op) {
                    Some(previous) => transfer(command_id(previous).0, wallet(0), wallet(1), amount, None),
                    None => continue,
                },
                Op::Restart => {
                    ledger = Ledger::new();
                    continue;
                }
                Op::Bad { kind, from, amount } => match kind {
                    0 => transfer(fresh(), wallet(from), YEN, 1, None),
                    1 => transfer(fresh(), wallet(from), AccountId(999), 1, None),
                    2 => transfer(fresh(), wallet(from), wallet((from + 1) % WALLETS), 0, None),
                    _ => transfer(fresh(), FUNDING, wallet(from), amount.max(anytime_ledger::AMOUNT_MAX + 1), None),
                },
            };
            let expected = model.expected(now, &command);
            let results = post(&mut ledger, &store, now, std::slice::from_ref(&command)).await.expect("commit");
            let got = results.into_iter().next().expect("one result").map(|posted| match posted {
                Posted::Transfer { .. } => (),
                Posted::Opened { .. } => (),
            });
            prop_assert_eq!(got, expected, "{:?} at {}", command, now);
            history.push(command);
            check(&store, &model).await?;
        }
        Ok(())
    })
}

/// Store and model agree on every account; per currency debits equal credits; no wallet is
/// below zero.
async fn check(store: &MemoryLedgerStore, model: &Model) -> Result<(), TestCaseError> {
    let ids: Vec<AccountId> = model.sums.keys().copied().collect();
    let loaded = store.load(&ids, &[]).await.expect("load");
    for account in &loaded.accounts {
        let sums = [account.debits_posted, account.credits_posted, account.debits_pending, account.credits_pending];
        prop_assert_eq!(sums, model.sums[&account.id], "{:?}", account.id);
        if account.kind == AccountKind::Wallet {
            prop_assert!(account.debits_posted + account.debits_pending <= account.credits_posted);
        }
    }
    for (currency, totals) in store.totals().await.expect("totals") {
        prop_assert_eq!(totals.debits_posted, totals.credits_posted, "{}", currency);
        prop_assert_eq!(totals.debits_pending, totals.credits_pending, "{}", currency);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_agrees_with_the_model_after_every_step(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
