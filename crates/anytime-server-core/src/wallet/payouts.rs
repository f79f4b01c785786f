//! Money out: a payout to a card, as a two-phase transfer. The amount is first *held* on the
//! wallet (it cannot be spent twice while the provider works), then the provider is asked; paid
//! → the hold is captured into the settlement account, declined → it is released. A provider
//! that does not answer leaves the hold open: asking again with the same key asks the provider
//! again (it takes the payout's id as its idempotency key, so it pays once), and a hold nobody
//! completes expires (`wallet_sweep`) and the money is back. Every step has its own derived id,
//! so a retry after a crash at any point moves nothing twice.

use anytime_ledger::{Account, AccountKind, Command, HoldStatus, Posted, Transfer, TransferId};
use anytime_proto::limits::HOLD_SWEEP_MAX;
use anytime_proto::wallet::{PayoutRequest, PayoutResult};
use anytime_proto::ErrorCode;
use anytime_wallet::provider::Payout;
use anytime_wallet::{ids, purpose};

use super::{parse_money, store_failed, transfer_code, view, writer};
use crate::ServerCore;

fn status(hold: Option<HoldStatus>) -> &'static str {
    match hold {
        Some(HoldStatus::Posted) => "paid",
        Some(HoldStatus::Voided) => "declined",
        Some(HoldStatus::Expired) => "expired",
        _ => "pending",
    }
}

impl ServerCore {
    /// Pays out of the caller's wallet to a (sandbox) card: PIN, limits, hold, provider, then
    /// capture or release. A retry with the same key answers where the first one got to, and
    /// finishes it if the provider has answered since.
    pub async fn wallet_payout(&self, token: &str, request: PayoutRequest) -> Result<PayoutResult, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        if !ids::valid_key(&request.key) {
            return Err(ErrorCode::InvalidArgument);
        }
        let (currency, amount) = parse_money(&request.currency, &request.amount)?;
        let wallet = self.wallet()?;
        if !wallet.provider.pays_out_to(&request.card) {
            return Err(ErrorCode::InvalidArgument);
        }
        self.check_pin(user, &request.pin).await?;
        self.wallet_rate(user)?;
        let from = ids::wallet(user, currency);
        let hold_id = ids::transfer_id(user, "payout", &request.key);
        let commands = vec![
            Command::Open(Account::new(ids::settlement(currency), currency, AccountKind::Settlement, 0)),
            Command::Transfer {
                id: hold_id,
                debit: from,
                credit: ids::settlement(currency),
                amount,
                currency,
                code: purpose::PAYOUT,
                reference: 0,
                hold: Some(self.env.now_ms() + self.config.payout_hold_ttl_ms),
            },
        ];
        let spend = writer::Spend { account: from, currency, amount };
        let hold = match self.post(commands, Some(spend)).await?.into_iter().last() {
            Some(Ok(Posted::Transfer { transfer, duplicate: false })) => transfer,
            // A retry: where the hold stands now is in the store (another node may have
            // finished it).
            Some(Ok(Posted::Transfer { transfer, duplicate: true })) => self.stored(transfer.id).await?,
            Some(Err(e)) => return Err(transfer_code(e)),
            _ => return Err(ErrorCode::Internal),
        };
        if hold.hold != Some(HoldStatus::Open) {
            return Ok(PayoutResult { status: status(hold.hold).into(), transfer: view(user, &hold, true) });
        }
        let key = format!("{:032x}", hold_id.0);
        let outcome = wallet.provider.payout(&request.card, currency, amount, &key).await;
        let finish = match outcome {
            Payout::Pending => None,
            Payout::Paid => Some(Command::Post {
                id: ids::transfer_id(user, "payout_capture", &request.key),
                pending: hold_id,
                amount: None,
            }),
            Payout::Declined | Payout::Refused => {
                Some(Command::Void { id: ids::transfer_id(user, "payout_release", &request.key), pending: hold_id })
            }
        };
        if let Some(finish) = finish {
            match self.post(vec![finish], None).await?.into_iter().next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(transfer_code(e)),
                None => return Err(ErrorCode::Internal),
            }
        }
        if outcome == Payout::Refused {
            // The provider refused the card after all: the hold is released, the request refused.
            return Err(ErrorCode::InvalidArgument);
        }
        let hold = self.stored(hold_id).await?;
        Ok(PayoutResult { status: status(hold.hold).into(), transfer: view(user, &hold, false) })
    }

    async fn stored(&self, id: TransferId) -> Result<Transfer, ErrorCode> {
        let loaded = self.wallet()?.ledger.load(&[], &[id]).await.map_err(store_failed)?;
        loaded.transfers.into_iter().next().ok_or(ErrorCode::Internal)
    }

    /// Releases holds past their expiry (payouts the provider never answered): the money is
    /// back in the wallet. Called periodically by the shell, through `wallet_sweep`.
    pub(super) async fn expire_holds(&self) -> Result<usize, ErrorCode> {
        let wallet = self.wallet()?;
        let due = wallet.ledger.expired_holds(self.env.now_ms(), HOLD_SWEEP_MAX).await.map_err(store_failed)?;
        if due.is_empty() {
            return Ok(0);
        }
        self.expire(due).await
    }
}
