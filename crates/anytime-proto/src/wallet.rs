//! The wallet's HTTP/JSON bodies (docs/protocol.md, "Wallet"). Amounts are decimal strings in
//! the currency's unit ("12.34" dollars, "1500" yen): exact, and safe from JavaScript's floats.

use serde::{Deserialize, Serialize};

use crate::UserId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletSummary {
    /// The payment provider is the sandbox: test cards, no real money.
    pub sandbox: bool,
    pub pin_set: bool,
    pub balances: Vec<Balance>,
    /// Currencies a wallet can hold.
    pub currencies: Vec<String>,
    /// Per transfer and per UTC day, in whole units of any currency.
    pub transfer_units_max: u64,
    pub daily_units_max: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub currency: String,
    /// Posted balance.
    pub balance: String,
    /// What can be spent now: the balance less money on hold.
    pub available: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRequest {
    pub pin: String,
    /// Required to change a PIN that is set.
    #[serde(default)]
    pub current_pin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpRequest {
    /// Idempotency key: a retry with the same key tops up once.
    pub key: String,
    pub currency: String,
    pub amount: String,
    /// A sandbox test card number.
    pub card: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpConfirm {
    pub challenge: String,
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpResult {
    /// "succeeded" or "confirmation_required" (then `challenge` names the second step).
    pub status: String,
    #[serde(default)]
    pub challenge: Option<String>,
    #[serde(default)]
    pub transfer: Option<TransferView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayRequest {
    /// Idempotency key: a retry with the same key pays once and gets the first answer.
    pub key: String,
    pub to: UserId,
    pub currency: String,
    pub amount: String,
    pub pin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRequest {
    /// Idempotency key: a retry with the same key pays out once and gets the first answer.
    pub key: String,
    pub currency: String,
    pub amount: String,
    /// A sandbox test card number to pay out to.
    pub card: String,
    pub pin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutResult {
    /// "paid" (the hold was captured), "declined" (released: the money is back), "pending" (the
    /// provider has not answered: the money stays held; ask again with the same key) or
    /// "expired" (never answered before the hold's expiry: the money is back).
    pub status: String,
    /// The hold on the wallet that carries the payout.
    pub transfer: TransferView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferView {
    /// 32 hex digits: what a payment message in a chat refers to.
    pub id: String,
    /// "in" or "out", seen from the caller's wallet.
    pub direction: String,
    /// The other user (absent for top-ups).
    #[serde(default)]
    pub counterparty: Option<UserId>,
    /// "payment", "top_up", …
    pub purpose: String,
    pub amount: String,
    pub currency: String,
    pub at_ms: u64,
    /// True when this answers a retry: the first result, nothing moved again.
    #[serde(default)]
    pub duplicate: bool,
    /// For a hold (money out waiting for the provider): "held", "captured", "released" or
    /// "expired"; absent for an ordinary transfer.
    #[serde(default)]
    pub hold: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub transfers: Vec<TransferView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeRequest {
    /// Idempotency key: a retry makes the envelope once.
    pub key: String,
    /// The group chat it is for: only its members may grab.
    pub conv: crate::ConvId,
    pub currency: String,
    /// The whole amount, shared out.
    pub total: String,
    pub shares: u32,
    /// "random" (each share a random amount) or "equal".
    pub split: String,
    pub pin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeView {
    /// 32 hex digits: what the red-envelope message in the chat refers to.
    pub id: String,
    pub owner: UserId,
    pub conv: crate::ConvId,
    pub currency: String,
    pub total: String,
    pub shares: u32,
    /// "open" or "refunded" (expired; the rest went back to the owner).
    pub status: String,
    pub expires_at_ms: u64,
    pub grabs: Vec<EnvelopeGrab>,
    /// What is still in it.
    pub left: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeGrab {
    pub user: UserId,
    pub amount: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrabResult {
    /// "grabbed" (your share; `again` when you had grabbed before) or "empty".
    pub status: String,
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub again: bool,
    pub envelope: EnvelopeView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyRequestBody {
    pub key: String,
    /// The chat it is asked in: both people must be members.
    pub conv: crate::ConvId,
    pub payer: UserId,
    pub currency: String,
    pub amount: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBody {
    pub key: String,
    pub conv: crate::ConvId,
    pub currency: String,
    /// Equal split: the total and who shares it (the maker may be one of them: their own share
    /// is not requested).
    #[serde(default)]
    pub total: Option<String>,
    #[serde(default)]
    pub people: Vec<UserId>,
    /// Custom split instead: each member's amount.
    #[serde(default)]
    pub shares: Vec<SplitShare>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitShare {
    pub user: UserId,
    pub amount: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyRequestView {
    /// 32 hex digits: what the request message in the chat refers to.
    pub id: String,
    pub requester: UserId,
    pub payer: UserId,
    pub conv: crate::ConvId,
    pub amount: String,
    pub currency: String,
    /// "open", "paid", "declined", "cancelled" or "expired".
    pub status: String,
    pub expires_at_ms: u64,
    #[serde(default)]
    pub split: Option<String>,
    /// Once paid: the ledger transfer that paid it.
    #[serde(default)]
    pub transfer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitView {
    pub id: String,
    pub requester: UserId,
    pub currency: String,
    /// The tracker: one request per member, with its status.
    pub requests: Vec<MoneyRequestView>,
    /// What has come in, and what was asked.
    pub paid: String,
    pub asked: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayRequestBody {
    pub pin: String,
}

/// One wallet operation sent over the WebSocket in a `WalletCall` frame: the same operations,
/// bodies, rules and error codes as the HTTP routes (docs/protocol.md), for clients that keep
/// one connection. The session's own token authenticates it, checked again on every call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletOp {
    /// `GET /v1/wallet`
    Summary,
    /// `POST /v1/wallet/pin`
    SetPin(PinRequest),
    /// `POST /v1/wallet/top-up`
    TopUp(TopUpRequest),
    /// `POST /v1/wallet/top-up/confirm`
    ConfirmTopUp(TopUpConfirm),
    /// `POST /v1/wallet/pay`
    Pay(PayRequest),
    /// `POST /v1/wallet/payouts`
    Payout(PayoutRequest),
    /// `GET /v1/wallet/history`
    History { currency: String, before: Option<String>, limit: u32 },
    /// `GET /v1/wallet/transfers/{id}`
    Transfer { id: String },
    /// `POST /v1/wallet/envelopes`
    CreateEnvelope(EnvelopeRequest),
    /// `GET /v1/wallet/envelopes/{id}`
    Envelope { id: String },
    /// `POST /v1/wallet/envelopes/{id}/grab`
    GrabEnvelope { id: String },
    /// `POST /v1/wallet/requests`
    CreateRequest(MoneyRequestBody),
    /// `GET /v1/wallet/requests`: open requests asked of the caller.
    RequestsOfMine,
    /// `GET /v1/wallet/requests/{id}`
    Request { id: String },
    /// `POST /v1/wallet/requests/{id}/pay`
    PayRequest { id: String, pin: String },
    /// `POST /v1/wallet/requests/{id}/close`
    CloseRequest { id: String },
    /// `POST /v1/wallet/splits`
    CreateSplit(SplitBody),
    /// `GET /v1/wallet/splits/{id}`
    Split { id: String },
}

/// The answer to a `WalletOp`, in a `WalletResult` frame (a refusal is an `Error` frame with the
/// wallet's stable code instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletReply {
    Summary(WalletSummary),
    /// The PIN was set.
    Done,
    TopUp(TopUpResult),
    Transfer(TransferView),
    Payout(PayoutResult),
    History(History),
    Envelope(EnvelopeView),
    Grab(GrabResult),
    Request(MoneyRequestView),
    Requests(Vec<MoneyRequestView>),
    Split(SplitView),
}
