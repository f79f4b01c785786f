//! The wallet, as the server offers it over HTTP/JSON: balances, a payment PIN, top-ups through
//! the sandbox provider and payments between users. Rules come from `anytime-wallet` (PIN,
//! limits, ids, sandbox) and money moves only through `anytime-ledger`, posted by this node's one
//! ledger writer (`writer.rs`). The note of a payment never comes here: the client sends it in
//! the chat, end to end encrypted, referring to the transfer id answered here.

mod calls;
mod envelopes;
mod payouts;
mod requests;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anytime_ledger::{
    Account, AccountKind, Command, Currency, HoldStatus, LedgerStore, Posted, Transfer, TransferError, TransferId,
    TransferKind,
};
use anytime_proto::limits::{
    LEDGER_QUEUE_JOBS_MAX, WALLET_DAILY_UNITS_MAX, WALLET_HISTORY_PAGE_MAX, WALLET_TRANSFERS_PER_MINUTE_MAX,
    WALLET_TRANSFER_UNITS_MAX,
};
use anytime_proto::wallet::{
    Balance, History, PayRequest, PinRequest, TopUpConfirm, TopUpRequest, TopUpResult, TransferView, WalletSummary,
};
use anytime_proto::{ErrorCode, UserId};
use anytime_wallet::pin::{self, PinError, PinRecord};
use anytime_wallet::provider::{Charge, PaymentProvider};
use anytime_wallet::{ids, purpose, WalletStore};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{hash_password, verify_password};
use crate::env::EnvExt;
use crate::ServerCore;

/// A sandbox second step must be answered within this, ms.
const CHALLENGE_TTL_MS: u64 = 10 * 60 * 1000;

pub(crate) struct Wallet {
    jobs: mpsc::Sender<writer::Job>,
    ledger: Arc<dyn LedgerStore>,
    store: Arc<dyn WalletStore>,
    /// Where top-ups come from (the sandbox unless the operator configured another).
    provider: Arc<dyn PaymentProvider>,
    /// user → (minute, transfers started in it).
    rate: Mutex<HashMap<UserId, (u64, u32)>>,
    /// Sandbox second steps: challenge → (user, request, expires). In memory: a restart asks the
    /// user to top up again, which the idempotency key makes safe.
    challenges: Mutex<HashMap<String, (UserId, TopUpRequest, u64)>>,
}

pub(super) fn store_failed(error: impl std::fmt::Display) -> ErrorCode {
    tracing::error!(%error, "wallet store failed");
    ErrorCode::Internal
}

pub(super) fn transfer_code(error: TransferError) -> ErrorCode {
    match error {
        TransferError::AmountZero | TransferError::AmountTooLarge => ErrorCode::InvalidAmount,
        TransferError::InsufficientFunds | TransferError::DebitAccountNotFound => ErrorCode::InsufficientFunds,
        TransferError::CreditsExceedDebits => ErrorCode::LimitExceeded,
        TransferError::Duplicate | TransferError::AccountExists => ErrorCode::Duplicate,
        TransferError::Expired | TransferError::ExpiryInPast => ErrorCode::Expired,
        _ => ErrorCode::InvalidArgument,
    }
}

pub(super) fn parse_money(currency: &str, amount: &str) -> Result<(Currency, u128), ErrorCode> {
    let currency = Currency::parse(currency).map_err(|_| ErrorCode::UnknownCurrency)?;
    let amount = currency.parse_amount(amount).map_err(|_| ErrorCode::InvalidAmount)?;
    if amount == 0 {
        return Err(ErrorCode::InvalidAmount);
    }
    Ok((currency, amount))
}

/// A transfer as `user` sees it.
fn view(user: UserId, t: &Transfer, duplicate: bool) -> TransferView {
    let mine = ids::wallet(user, t.currency);
    let out = t.debit == mine;
    let other = if out { t.credit } else { t.debit };
    // Wallet ids carry their owner in the low 64 bits (`AccountId::of`).
    let counterparty = (other.0 >> 112 == u128::from(AccountKind::Wallet.code())).then_some(UserId(other.0 as u64));
    TransferView {
        id: format!("{:032x}", t.id.0),
        direction: if out { "out" } else { "in" }.into(),
        counterparty,
        purpose: purpose::name(t.code).into(),
        amount: t.currency.format(t.amount),
        currency: t.currency.code().into(),
        at_ms: t.timestamp_ms,
        duplicate,
        hold: t.hold.map(|h| {
            match h {
                HoldStatus::Open => "held",
                HoldStatus::Posted => "captured",
                HoldStatus::Voided => "released",
                HoldStatus::Expired => "expired",
            }
            .to_owned()
        }),
    }
}

impl ServerCore {
    /// Offers the wallet, its money kept by `ledger`, its own records by `store`, top-ups through
    /// `provider`; starts this node's ledger writer.
    pub fn with_wallet(
        mut self,
        ledger: Arc<dyn LedgerStore>,
        store: Arc<dyn WalletStore>,
        provider: Arc<dyn PaymentProvider>,
    ) -> ServerCore {
        let (jobs, rx) = mpsc::channel(LEDGER_QUEUE_JOBS_MAX);
        writer::start(ledger.clone(), self.env.clone(), rx);
        self.wallet = Some(Arc::new(Wallet {
            jobs,
            ledger,
            store,
            provider,
            rate: Mutex::default(),
            challenges: Mutex::default(),
        }));
        self
    }

    pub(super) fn wallet(&self) -> Result<&Wallet, ErrorCode> {
        self.wallet.as_deref().ok_or(ErrorCode::InvalidArgument)
    }

    pub(super) async fn post(
        &self,
        commands: Vec<Command>,
        spend: Option<writer::Spend>,
    ) -> Result<writer::Results, ErrorCode> {
        let wallet = self.wallet()?;
        let (reply, answer) = oneshot::channel();
        let job = writer::Job { commands, spend, expire: Vec::new(), reply };
        wallet.jobs.send(job).await.map_err(|_| ErrorCode::Internal)?;
        answer.await.map_err(|_| ErrorCode::Internal)?
    }

    /// Releases the holds `due` that are past their expiry (through this node's writer).
    pub(super) async fn expire(&self, due: Vec<TransferId>) -> Result<usize, ErrorCode> {
        let wallet = self.wallet()?;
        let count = due.len();
        let (reply, answer) = oneshot::channel();
        let job = writer::Job { commands: Vec::new(), spend: None, expire: due, reply };
        wallet.jobs.send(job).await.map_err(|_| ErrorCode::Internal)?;
        answer.await.map_err(|_| ErrorCode::Internal)??;
        Ok(count)
    }

    pub async fn wallet_summary(&self, token: &str) -> Result<WalletSummary, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let wallet = self.wallet()?;
        let accounts: Vec<_> = Currency::all().map(|c| ids::wallet(user, c)).collect();
        let loaded = wallet.ledger.load(&accounts, &[]).await.map_err(store_failed)?;
        let mut balances: Vec<Balance> = loaded
            .accounts
            .iter()
            .map(|a| Balance {
                currency: a.currency.code().into(),
                balance: a.currency.format(a.balance()),
                available: a.currency.format(a.available()),
            })
            .collect();
        balances.sort_by(|a, b| a.currency.cmp(&b.currency));
        let pin_set = wallet.store.pin(user).await.map_err(store_failed)?.is_some();
        Ok(WalletSummary {
            sandbox: wallet.provider.is_sandbox(),
            pin_set,
            balances,
            currencies: Currency::all().map(|c| c.code().to_owned()).collect(),
            transfer_units_max: WALLET_TRANSFER_UNITS_MAX,
            daily_units_max: WALLET_DAILY_UNITS_MAX,
        })
    }

    /// Sets the payment PIN; changing one needs the current PIN (wrong tries count).
    pub async fn wallet_set_pin(&self, token: &str, request: PinRequest) -> Result<(), ErrorCode> {
        let user = self.authenticate(token).await?.user;
        if !pin::valid_format(&request.pin) {
            return Err(ErrorCode::InvalidArgument);
        }
        let wallet = self.wallet()?;
        if wallet.store.pin(user).await.map_err(store_failed)?.is_some() {
            self.check_pin(user, request.current_pin.as_deref().unwrap_or_default()).await?;
        }
        let salt: [u8; 16] = self.env.random_array();
        let hash = {
            let _slot = self.password_gate.enter().await?;
            hash_password(request.pin, salt, self.config.argon2_cost).await?
        };
        let record = PinRecord { hash, failures: 0, locked_until_ms: 0 };
        wallet.store.put_pin(user, &record).await.map_err(store_failed)
    }

    pub(super) async fn check_pin(&self, user: UserId, given: &str) -> Result<(), ErrorCode> {
        let wallet = self.wallet()?;
        let now = self.env.now_ms();
        let record = wallet.store.pin(user).await.map_err(store_failed)?;
        let pin_code = |e: PinError| match e {
            PinError::NotSet => ErrorCode::PinWrong,
            PinError::Wrong => ErrorCode::PinWrong,
            PinError::Locked { .. } => ErrorCode::PinLocked,
        };
        pin::may_try(record.as_ref(), now).map_err(pin_code)?;
        let Some(record) = record else { return Err(ErrorCode::PinWrong) };
        let matched = {
            let _slot = self.password_gate.enter().await?;
            verify_password(given.to_owned(), record.hash.clone()).await?
        };
        let (next, answer) = pin::after_try(&record, matched, now);
        if next != record {
            wallet.store.put_pin(user, &next).await.map_err(store_failed)?;
        }
        answer.map_err(pin_code)
    }

    pub(super) fn wallet_rate(&self, user: UserId) -> Result<(), ErrorCode> {
        let wallet = self.wallet()?;
        let minute = self.env.now_ms() / 60_000;
        let mut rate = wallet.rate.lock().unwrap_or_else(|e| e.into_inner());
        rate.retain(|_, (m, _)| *m == minute);
        let slot = rate.entry(user).or_insert((minute, 0));
        if slot.1 >= WALLET_TRANSFERS_PER_MINUTE_MAX {
            return Err(ErrorCode::RateLimited);
        }
        slot.1 += 1;
        Ok(())
    }

    /// Tops a wallet up from a sandbox test card (possibly after a second step).
    pub async fn wallet_top_up(&self, token: &str, request: TopUpRequest) -> Result<TopUpResult, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        if !ids::valid_key(&request.key) {
            return Err(ErrorCode::InvalidArgument);
        }
        let (currency, amount) = parse_money(&request.currency, &request.amount)?;
        if amount > anytime_wallet::limits::per_transfer(currency) {
            return Err(ErrorCode::LimitExceeded);
        }
        self.wallet_rate(user)?;
        match self.wallet()?.provider.charge(&request.card, currency, amount).await {
            Charge::Succeeded => self.fund(user, &request).await,
            Charge::Declined => Ok(TopUpResult { status: "declined".into(), challenge: None, transfer: None }),
            Charge::Refused => Err(ErrorCode::InvalidArgument),
            Charge::NeedsConfirmation => {
                let challenge = format!("{:032x}", u128::from_be_bytes(self.env.random_array()));
                let expires = self.env.now_ms() + CHALLENGE_TTL_MS;
                let mut challenges = self.wallet()?.challenges.lock().unwrap_or_else(|e| e.into_inner());
                let now = self.env.now_ms();
                challenges.retain(|_, (_, _, until)| *until > now);
                challenges.insert(challenge.clone(), (user, request, expires));
                Ok(TopUpResult { status: "confirmation_required".into(), challenge: Some(challenge), transfer: None })
            }
        }
    }

    pub async fn wallet_confirm_top_up(&self, token: &str, confirm: TopUpConfirm) -> Result<TopUpResult, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let wallet = self.wallet()?;
        {
            let mut challenges = wallet.challenges.lock().unwrap_or_else(|e| e.into_inner());
            match challenges.get(&confirm.challenge) {
                Some((owner, _, until)) if *owner == user && *until > self.env.now_ms() => {}
                Some((owner, _, _)) if *owner == user => {
                    challenges.remove(&confirm.challenge);
                    return Err(ErrorCode::Expired);
                }
                _ => return Err(ErrorCode::InvalidArgument),
            }
        }
        if !wallet.provider.confirm(&confirm.code).await {
            return Ok(TopUpResult { status: "declined".into(), challenge: None, transfer: None });
        }
        let request = {
            let mut challenges = wallet.challenges.lock().unwrap_or_else(|e| e.into_inner());
            challenges.remove(&confirm.challenge).map(|(_, request, _)| request).ok_or(ErrorCode::InvalidArgument)?
        };
        self.fund(user, &request).await
    }

    async fn fund(&self, user: UserId, request: &TopUpRequest) -> Result<TopUpResult, ErrorCode> {
        let (currency, amount) = parse_money(&request.currency, &request.amount)?;
        if amount > anytime_wallet::limits::per_transfer(currency) {
            return Err(ErrorCode::LimitExceeded);
        }
        let id = ids::transfer_id(user, "top_up", &request.key);
        let commands = vec![
            Command::Open(Account::new(ids::funding(currency), currency, AccountKind::Funding, 0)),
            Command::Open(Account::new(ids::wallet(user, currency), currency, AccountKind::Wallet, user.0)),
            Command::Transfer {
                id,
                debit: ids::funding(currency),
                credit: ids::wallet(user, currency),
                amount,
                currency,
                code: purpose::TOP_UP,
                reference: 0,
                hold: None,
            },
        ];
        let results = self.post(commands, None).await?;
        match results.into_iter().last() {
            Some(Ok(Posted::Transfer { transfer, duplicate })) => Ok(TopUpResult {
                status: "succeeded".into(),
                challenge: None,
                transfer: Some(view(user, &transfer, duplicate)),
            }),
            Some(Err(e)) => Err(transfer_code(e)),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// Pays another user: PIN, limits, then one ledger transfer. A retry with the same key
    /// answers the first result.
    pub async fn wallet_pay(&self, token: &str, request: PayRequest) -> Result<TransferView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        if !ids::valid_key(&request.key) {
            return Err(ErrorCode::InvalidArgument);
        }
        let (currency, amount) = parse_money(&request.currency, &request.amount)?;
        if request.to == user {
            return Err(ErrorCode::InvalidArgument);
        }
        if self.store.user(request.to).await.map_err(crate::auth::store_code)?.is_none() {
            return Err(ErrorCode::UserNotFound);
        }
        // The PIN first: a check refused as server_busy (the hashing gate is full) must not use
        // up the payer's transfers of this minute.
        self.check_pin(user, &request.pin).await?;
        self.wallet_rate(user)?;
        let (from, to) = (ids::wallet(user, currency), ids::wallet(request.to, currency));
        let commands = vec![
            Command::Open(Account::new(to, currency, AccountKind::Wallet, request.to.0)),
            Command::Transfer {
                id: ids::transfer_id(user, "pay", &request.key),
                debit: from,
                credit: to,
                amount,
                currency,
                code: purpose::PAYMENT,
                reference: 0,
                hold: None,
            },
        ];
        let spend = writer::Spend { account: from, currency, amount };
        let results = self.post(commands, Some(spend)).await?;
        match results.into_iter().last() {
            Some(Ok(Posted::Transfer { transfer, duplicate })) => Ok(view(user, &transfer, duplicate)),
            Some(Err(e)) => Err(transfer_code(e)),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// The caller's transfers in `currency`, newest first; `before` is a previous page's `next`.
    pub async fn wallet_history(
        &self,
        token: &str,
        currency: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<History, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let currency = Currency::parse(currency).map_err(|_| ErrorCode::UnknownCurrency)?;
        let before = match before {
            None => None,
            Some(cursor) => {
                let (at, id) = cursor.split_once('-').ok_or(ErrorCode::InvalidArgument)?;
                let at = at.parse().map_err(|_| ErrorCode::InvalidArgument)?;
                let id = u128::from_str_radix(id, 16).map_err(|_| ErrorCode::InvalidArgument)?;
                Some((at, TransferId(id)))
            }
        };
        let limit = limit.clamp(1, WALLET_HISTORY_PAGE_MAX);
        let wallet = self.wallet()?;
        let page =
            wallet.ledger.transfers_of(ids::wallet(user, currency), before, limit).await.map_err(store_failed)?;
        // Holds appear once, as the hold; their capture or release is the hold's status.
        let next = (page.len() == limit as usize)
            .then(|| page.last().map(|t| format!("{}-{:032x}", t.timestamp_ms, t.id.0)))
            .flatten();
        let transfers = page
            .iter()
            .filter(|t| !matches!(t.kind, TransferKind::Void { .. } | TransferKind::Post { .. }))
            .map(|t| view(user, t, false))
            .collect();
        Ok(History { transfers, next })
    }

    /// One transfer, for its parties only (a payment message in a chat refers to it).
    pub async fn wallet_transfer(&self, token: &str, id: &str) -> Result<TransferView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let id = u128::from_str_radix(id, 16).map_err(|_| ErrorCode::InvalidArgument)?;
        let wallet = self.wallet()?;
        let loaded = wallet.ledger.load(&[], &[TransferId(id)]).await.map_err(store_failed)?;
        let transfer = loaded.transfers.into_iter().next().ok_or(ErrorCode::InvalidArgument)?;
        let mine = ids::wallet(user, transfer.currency);
        if transfer.debit != mine && transfer.credit != mine {
            // Someone else's transfer looks exactly like one that does not exist.
            return Err(ErrorCode::InvalidArgument);
        }
        Ok(view(user, &transfer, false))
    }
}
