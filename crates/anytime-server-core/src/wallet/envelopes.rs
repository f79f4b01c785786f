//! Red envelopes in group chats: made with a PIN (the total moves into the envelope's escrow
//! account), grabbed by members first come first served (the wallet store hands out each share
//! once; the ledger pays it once, by a transfer id per share), and swept after their expiry (the
//! rest back to the owner). Every step can be retried after a crash without moving money twice.

use anytime_ledger::{Account, AccountKind, Command, Currency, Posted};
use anytime_proto::frame::ConvKind;
use anytime_proto::limits::ENVELOPE_SWEEP_MAX;
use anytime_proto::wallet::{EnvelopeGrab, EnvelopeRequest, EnvelopeView, GrabResult};
use anytime_proto::{ConvId, ErrorCode, UserId};
use anytime_wallet::envelope::{self, Envelope, Grab, Split, Status};
use anytime_wallet::{ids, purpose};

use super::{parse_money, store_failed, transfer_code, writer};
use crate::auth::store_code;
use crate::env::EnvExt;
use crate::ServerCore;

fn parse_id(id: &str) -> Result<u128, ErrorCode> {
    u128::from_str_radix(id, 16).map_err(|_| ErrorCode::InvalidArgument)
}

impl ServerCore {
    async fn member_of_group(&self, user: UserId, conv: ConvId) -> Result<(), ErrorCode> {
        let record = self.store.conversation(conv).await.map_err(store_code)?;
        let members = self.store.members(conv).await.map_err(store_code)?;
        match record {
            Some(c) if members.iter().any(|m| m.user == user) => match c.kind {
                ConvKind::Group => Ok(()),
                _ => Err(ErrorCode::NotAGroup),
            },
            _ => Err(ErrorCode::ConversationNotFound),
        }
    }

    async fn envelope_view(&self, e: &Envelope) -> Result<EnvelopeView, ErrorCode> {
        let claims = self.wallet()?.store.claims(e.id).await.map_err(store_failed)?;
        let taken: u128 = claims.iter().map(|c| c.amount).sum();
        let left = if e.status == Status::Refunded { 0 } else { e.total - taken };
        Ok(EnvelopeView {
            id: format!("{:032x}", e.id),
            owner: e.owner,
            conv: e.conv,
            currency: e.currency.code().into(),
            total: e.currency.format(e.total),
            shares: e.shares.len() as u32,
            status: e.status.name().into(),
            expires_at_ms: e.expires_at_ms,
            grabs: claims
                .iter()
                .map(|c| EnvelopeGrab { user: c.user, amount: e.currency.format(c.amount), at_ms: c.at_ms })
                .collect(),
            left: e.currency.format(left),
        })
    }

    /// Makes a red envelope in a group: the total leaves the owner's wallet at once.
    pub async fn wallet_create_envelope(
        &self,
        token: &str,
        request: EnvelopeRequest,
    ) -> Result<EnvelopeView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        if !ids::valid_key(&request.key) {
            return Err(ErrorCode::InvalidArgument);
        }
        let (currency, total) = parse_money(&request.currency, &request.total)?;
        let split = match request.split.as_str() {
            "random" => Split::Random,
            "equal" => Split::Equal,
            _ => return Err(ErrorCode::InvalidArgument),
        };
        self.member_of_group(user, request.conv).await?;
        let shares = {
            let env = self.env.clone();
            envelope::split(total, request.shares, split, move || env.random_u64())
                .map_err(|_| ErrorCode::InvalidAmount)?
        };
        self.wallet_rate(user)?;
        self.check_pin(user, &request.pin).await?;
        let now = self.env.now_ms();
        let id = ids::transfer_id(user, "envelope", &request.key);
        let made = Envelope {
            id: id.0,
            owner: user,
            conv: request.conv,
            currency,
            total,
            shares,
            created_at_ms: now,
            expires_at_ms: now + self.config.envelope_ttl_ms,
            status: Status::Open,
        };
        // The record first, then the money: a crash between leaves an envelope nobody can grab
        // from (its escrow is empty) until the owner's retry funds it, and never money without
        // an envelope.
        let wallet = self.wallet()?;
        if !wallet.store.create_envelope(&made).await.map_err(store_failed)? {
            return Err(ErrorCode::Duplicate);
        }
        let stored = wallet.store.envelope(id.0).await.map_err(store_failed)?.ok_or(ErrorCode::Internal)?;
        if stored.status == Status::Refunded {
            // Over: funded once and swept (answer it), or never funded (a new key makes a new one).
            let funded = wallet.ledger.load(&[], &[id]).await.map_err(store_failed)?;
            return match funded.transfers.is_empty() {
                true => Err(ErrorCode::Expired),
                false => self.envelope_view(&stored).await,
            };
        }
        let escrow = envelope::escrow(id.0, currency);
        let commands = vec![
            Command::Open(Account::new(escrow, currency, AccountKind::Escrow, 0)),
            Command::Transfer {
                id,
                debit: ids::wallet(user, currency),
                credit: escrow,
                amount: total,
                currency,
                code: purpose::ENVELOPE,
                reference: id.0,
                hold: None,
            },
        ];
        let spend = writer::Spend { account: ids::wallet(user, currency), currency, amount: total };
        match self.post(commands, Some(spend)).await?.into_iter().last() {
            Some(Ok(Posted::Transfer { .. })) => self.envelope_view(&stored).await,
            Some(Err(e)) => {
                // Not funded (a funded one answers its retry as a duplicate): nobody can grab from
                // it, and the sweeper has nothing to give back.
                wallet.store.set_envelope_status(id.0, Status::Refunded).await.map_err(store_failed)?;
                Err(transfer_code(e))
            }
            _ => Err(ErrorCode::Internal),
        }
    }

    /// Grabs the caller's share of an envelope (a member of its group; the owner too).
    pub async fn wallet_grab_envelope(&self, token: &str, id: &str) -> Result<GrabResult, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let id = parse_id(id)?;
        let wallet = self.wallet()?;
        let envelope = wallet.store.envelope(id).await.map_err(store_failed)?.ok_or(ErrorCode::InvalidArgument)?;
        self.member_of_group(user, envelope.conv).await.map_err(|_| ErrorCode::InvalidArgument)?;
        let now = self.env.now_ms();
        if envelope.status != Status::Open || envelope.expires_at_ms <= now {
            return Err(ErrorCode::Expired);
        }
        let (claim, again) = match wallet.store.grab(id, user, now).await.map_err(store_failed)? {
            Grab::Empty => {
                let envelope = self.envelope_view(&envelope).await?;
                return Ok(GrabResult { status: "empty".into(), amount: None, again: false, envelope });
            }
            Grab::Share { claim, fresh } => (claim, !fresh),
        };
        self.pay_share(&envelope, claim.index, claim.user, claim.amount).await?;
        let view = self.envelope_view(&envelope).await?;
        Ok(GrabResult {
            status: "grabbed".into(),
            amount: Some(envelope.currency.format(claim.amount)),
            again,
            envelope: view,
        })
    }

    /// The ledger transfer of one share (its id per share: paying it again moves nothing).
    async fn pay_share(&self, e: &Envelope, index: u32, user: UserId, amount: u128) -> Result<(), ErrorCode> {
        let commands = vec![
            Command::Open(Account::new(ids::wallet(user, e.currency), e.currency, AccountKind::Wallet, user.0)),
            Command::Transfer {
                id: envelope::share_transfer(e.id, index),
                debit: envelope::escrow(e.id, e.currency),
                credit: ids::wallet(user, e.currency),
                amount,
                currency: e.currency,
                code: purpose::ENVELOPE_SHARE,
                reference: e.id,
                hold: None,
            },
        ];
        match self.post(commands, None).await?.into_iter().last() {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(transfer_code(e)),
            None => Err(ErrorCode::Internal),
        }
    }

    pub async fn wallet_envelope(&self, token: &str, id: &str) -> Result<EnvelopeView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let id = parse_id(id)?;
        let envelope =
            self.wallet()?.store.envelope(id).await.map_err(store_failed)?.ok_or(ErrorCode::InvalidArgument)?;
        self.member_of_group(user, envelope.conv).await.map_err(|_| ErrorCode::InvalidArgument)?;
        self.envelope_view(&envelope).await
    }

    /// Expired holds released (payouts never answered), and expired envelopes: every grabbed
    /// share paid (a crash may have come between a grab and its transfer), then what is left
    /// back to the owner. Called periodically by the shell.
    pub async fn wallet_sweep(&self) -> Result<usize, ErrorCode> {
        let Some(wallet) = self.wallet.clone() else { return Ok(0) };
        let holds = self.expire_holds().await?;
        let now = self.env.now_ms();
        let due = wallet.store.envelopes_due(now, ENVELOPE_SWEEP_MAX).await.map_err(store_failed)?;
        for id in &due {
            let Some(e) = wallet.store.envelope(*id).await.map_err(store_failed)? else { continue };
            for claim in wallet.store.claims(*id).await.map_err(store_failed)? {
                // One share that cannot be paid (an envelope whose funding never happened) must
                // not keep every other envelope from being swept.
                if let Err(code) = self.pay_share(&e, claim.index, claim.user, claim.amount).await {
                    tracing::warn!(%code, envelope = %format!("{:032x}", e.id), "a grabbed share could not be paid");
                }
            }
            let escrow = envelope::escrow(e.id, e.currency);
            let left = wallet.ledger.load(&[escrow], &[]).await.map_err(store_failed)?;
            let left = left.accounts.first().map_or(0, |a| a.available());
            if left > 0 {
                self.refund(&e, left).await?;
            }
            wallet.store.set_envelope_status(e.id, Status::Refunded).await.map_err(store_failed)?;
        }
        Ok(due.len() + holds)
    }

    async fn refund(&self, e: &Envelope, left: u128) -> Result<(), ErrorCode> {
        let currency: Currency = e.currency;
        let commands = vec![Command::Transfer {
            id: envelope::refund_transfer(e.id),
            debit: envelope::escrow(e.id, currency),
            credit: ids::wallet(e.owner, currency),
            amount: left,
            currency,
            code: purpose::ENVELOPE_REFUND,
            reference: e.id,
            hold: None,
        }];
        match self.post(commands, None).await?.into_iter().last() {
            Some(Ok(_)) => Ok(()),
            Some(Err(error)) => Err(transfer_code(error)),
            None => Err(ErrorCode::Internal),
        }
    }
}
