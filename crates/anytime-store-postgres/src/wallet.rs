//! The wallet's own records on PostgreSQL (`anytime_wallet::WalletStore`): payment PINs and red
//! envelopes. A grab locks its envelope's row, so concurrent grabs on any node take the next
//! share one at a time.

use anytime_ledger::Currency;
use anytime_proto::{ConvId, UserId};
use anytime_wallet::envelope::{Claim, Envelope, Grab, Status};
use anytime_wallet::pin::PinRecord;
use anytime_wallet::request::{self, MoneyRequest};
use anytime_wallet::{WalletStore, WalletStoreError};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStore;

fn failed(error: impl std::fmt::Display) -> WalletStoreError {
    WalletStoreError(error.to_string())
}

#[async_trait]
impl WalletStore for PgStore {
    async fn pin(&self, user: UserId) -> Result<Option<PinRecord>, WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let row = c
            .query_opt(
                "SELECT hash, failures, locked_until_ms FROM wallet_pins WHERE user_id = $1",
                &[&crate::pg::id(user.0)],
            )
            .await
            .map_err(failed)?;
        let Some(row) = row else { return Ok(None) };
        let failures: i32 = row.try_get(1).map_err(failed)?;
        let locked: i64 = row.try_get(2).map_err(failed)?;
        Ok(Some(PinRecord {
            hash: row.try_get(0).map_err(failed)?,
            failures: u32::try_from(failures).map_err(failed)?,
            locked_until_ms: u64::try_from(locked).map_err(failed)?,
        }))
    }

    async fn put_pin(&self, user: UserId, record: &PinRecord) -> Result<(), WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let failures = i32::try_from(record.failures).map_err(failed)?;
        let locked = i64::try_from(record.locked_until_ms).map_err(failed)?;
        c.execute(
            "INSERT INTO wallet_pins (user_id, hash, failures, locked_until_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET hash = EXCLUDED.hash, failures = EXCLUDED.failures,
             locked_until_ms = EXCLUDED.locked_until_ms",
            &[&crate::pg::id(user.0), &record.hash, &failures, &locked],
        )
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn create_envelope(&self, e: &Envelope) -> Result<bool, WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let shares: Vec<String> = e.shares.iter().map(u128::to_string).collect();
        let inserted = c
            .execute(
                "INSERT INTO wallet_envelopes (id, owner, conv, currency, total, shares, created_at_ms, expires_at_ms, status)
                 VALUES ($1, $2, $3, $4, $5::text::numeric, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                &[
                    &e.id.to_be_bytes().to_vec(),
                    &crate::pg::id(e.owner.0),
                    &crate::pg::id(e.conv.0),
                    &e.currency.code(),
                    &e.total.to_string(),
                    &shares.join(","),
                    &ms(e.created_at_ms)?,
                    &ms(e.expires_at_ms)?,
                    &e.status.name(),
                ],
            )
            .await
            .map_err(failed)?;
        if inserted == 1 {
            return Ok(true);
        }
        let existing = read_envelope(&c, e.id).await?;
        Ok(existing.is_some_and(|existing| anytime_wallet::same_envelope(&existing, e)))
    }

    async fn envelope(&self, id: u128) -> Result<Option<Envelope>, WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        read_envelope(&c, id).await
    }

    async fn grab(&self, id: u128, user: UserId, now_ms: u64) -> Result<Grab, WalletStoreError> {
        let mut c = self.pool.get().await.map_err(failed)?;
        let tx = c.transaction().await.map_err(failed)?;
        let key = id.to_be_bytes().to_vec();
        // The row lock serialises grabs of this envelope until commit.
        let row = tx
            .query_opt(&format!("SELECT {ENVELOPE_COLUMNS} FROM wallet_envelopes WHERE id = $1 FOR UPDATE"), &[&key])
            .await
            .map_err(failed)?;
        let Some(row) = row else { return Ok(Grab::Empty) };
        let envelope = envelope_row(&row)?;
        let mine = tx
            .query_opt(
                "SELECT user_id, idx, amount::text, at_ms FROM wallet_envelope_claims WHERE envelope = $1 AND user_id = $2",
                &[&key, &crate::pg::id(user.0)],
            )
            .await
            .map_err(failed)?;
        if let Some(row) = mine {
            return Ok(Grab::Share { claim: claim_row(&row)?, fresh: false });
        }
        let taken: i64 = tx
            .query_one("SELECT COUNT(*) FROM wallet_envelope_claims WHERE envelope = $1", &[&key])
            .await
            .map_err(failed)?
            .try_get(0)
            .map_err(failed)?;
        let Some(share) = envelope.shares.get(taken as usize) else { return Ok(Grab::Empty) };
        let claim = Claim { user, index: taken as u32, amount: *share, at_ms: now_ms };
        tx.execute(
            "INSERT INTO wallet_envelope_claims (envelope, idx, user_id, amount, at_ms) VALUES ($1, $2, $3, $4::text::numeric, $5)",
            &[&key, &(claim.index as i32), &crate::pg::id(user.0), &claim.amount.to_string(), &ms(now_ms)?],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(Grab::Share { claim, fresh: true })
    }

    async fn claims(&self, id: u128) -> Result<Vec<Claim>, WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let rows = c
            .query(
                "SELECT user_id, idx, amount::text, at_ms FROM wallet_envelope_claims WHERE envelope = $1 ORDER BY idx",
                &[&id.to_be_bytes().to_vec()],
            )
            .await
            .map_err(failed)?;
        rows.iter().map(claim_row).collect()
    }

    async fn set_envelope_status(&self, id: u128, status: Status) -> Result<(), WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        c.execute(
            "UPDATE wallet_envelopes SET status = $1 WHERE id = $2",
            &[&status.name(), &id.to_be_bytes().to_vec()],
        )
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn envelopes_due(&self, now_ms: u64, limit: u32) -> Result<Vec<u128>, WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let rows = c
            .query(
                "SELECT id FROM wallet_envelopes WHERE status = 'open' AND expires_at_ms <= $1 ORDER BY expires_at_ms, id LIMIT $2",
                &[&ms(now_ms)?, &i64::from(limit)],
            )
            .await
            .map_err(failed)?;
        rows.iter().map(|r| id_of(&r.try_get::<_, Vec<u8>>(0).map_err(failed)?)).collect()
    }

    async fn create_requests(&self, requests: &[MoneyRequest]) -> Result<bool, WalletStoreError> {
        let mut c = self.pool.get().await.map_err(failed)?;
        let tx = c.transaction().await.map_err(failed)?;
        for r in requests {
            let inserted = tx
                .execute(
                    "INSERT INTO wallet_requests (id, requester, payer, conv, currency, amount, split, created_at_ms, expires_at_ms, status)
                     VALUES ($1, $2, $3, $4, $5, $6::text::numeric, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
                    &[
                        &r.id.to_be_bytes().to_vec(),
                        &crate::pg::id(r.requester.0),
                        &crate::pg::id(r.payer.0),
                        &crate::pg::id(r.conv.0),
                        &r.currency.code(),
                        &r.amount.to_string(),
                        &r.split.map(|s| s.to_be_bytes().to_vec()),
                        &ms(r.created_at_ms)?,
                        &ms(r.expires_at_ms)?,
                        &r.status.name(),
                    ],
                )
                .await
                .map_err(failed)?;
            if inserted == 0 {
                let row = tx
                    .query_one(
                        &format!("SELECT {REQUEST_COLUMNS} FROM wallet_requests WHERE id = $1"),
                        &[&r.id.to_be_bytes().to_vec()],
                    )
                    .await
                    .map_err(failed)?;
                if !request::same_request(&request_row(&row)?, r) {
                    // Dropping the transaction rolls the batch back.
                    return Ok(false);
                }
            }
        }
        tx.commit().await.map_err(failed)?;
        Ok(true)
    }

    async fn request(&self, id: u128) -> Result<Option<MoneyRequest>, WalletStoreError> {
        Ok(self.wallet_requests_where("id = $1", id.to_be_bytes().to_vec()).await?.into_iter().next())
    }

    async fn set_request_status(
        &self,
        id: u128,
        status: request::Status,
        only_if_open: bool,
    ) -> Result<bool, WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let sql = if only_if_open {
            "UPDATE wallet_requests SET status = $1 WHERE id = $2 AND status = 'open'"
        } else {
            "UPDATE wallet_requests SET status = $1 WHERE id = $2"
        };
        let changed = c.execute(sql, &[&status.name(), &id.to_be_bytes().to_vec()]).await.map_err(failed)?;
        Ok(changed == 1)
    }

    async fn split_requests(&self, split: u128) -> Result<Vec<MoneyRequest>, WalletStoreError> {
        self.wallet_requests_where("split = $1", split.to_be_bytes().to_vec()).await
    }

    async fn open_requests_for(
        &self,
        payer: UserId,
        now_ms: u64,
        limit: u32,
    ) -> Result<Vec<MoneyRequest>, WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let rows = c
            .query(
                &format!(
                    "SELECT {REQUEST_COLUMNS} FROM wallet_requests WHERE payer = $1 AND status = 'open' \
                     AND expires_at_ms > $2 ORDER BY created_at_ms DESC, position DESC LIMIT $3"
                ),
                &[&(payer.0 as i64), &ms(now_ms)?, &i64::from(limit)],
            )
            .await
            .map_err(failed)?;
        rows.iter().map(request_row).collect()
    }
}

const REQUEST_COLUMNS: &str =
    "id, requester, payer, conv, currency, amount::text, split, created_at_ms, expires_at_ms, status";

fn request_row(r: &Row) -> Result<MoneyRequest, WalletStoreError> {
    let int = |i: usize| -> Result<i64, WalletStoreError> { r.try_get(i).map_err(failed) };
    let text = |i: usize| -> Result<String, WalletStoreError> { r.try_get(i).map_err(failed) };
    let split: Option<Vec<u8>> = r.try_get(6).map_err(failed)?;
    Ok(MoneyRequest {
        id: id_of(&r.try_get::<_, Vec<u8>>(0).map_err(failed)?)?,
        requester: UserId(int(1)? as u64),
        payer: UserId(int(2)? as u64),
        conv: ConvId(int(3)? as u64),
        currency: Currency::parse(&text(4)?).map_err(failed)?,
        amount: number(&text(5)?)?,
        split: split.map(|b| id_of(&b)).transpose()?,
        created_at_ms: u64::try_from(int(7)?).map_err(failed)?,
        expires_at_ms: u64::try_from(int(8)?).map_err(failed)?,
        status: request::Status::from_name(&text(9)?).ok_or_else(|| failed("an unknown request status"))?,
    })
}

impl PgStore {
    async fn wallet_requests_where(&self, clause: &str, key: Vec<u8>) -> Result<Vec<MoneyRequest>, WalletStoreError> {
        let c = self.pool.get().await.map_err(failed)?;
        let rows = c
            .query(&format!("SELECT {REQUEST_COLUMNS} FROM wallet_requests WHERE {clause} ORDER BY position"), &[&key])
            .await
            .map_err(failed)?;
        rows.iter().map(request_row).collect()
    }
}

const ENVELOPE_COLUMNS: &str = "id, owner, conv, currency, total::text, shares, created_at_ms, expires_at_ms, status";

fn ms(value: u64) -> Result<i64, WalletStoreError> {
    i64::try_from(value).map_err(failed)
}

fn id_of(bytes: &[u8]) -> Result<u128, WalletStoreError> {
    let array: [u8; 16] = bytes.try_into().map_err(|_| failed("an envelope id of the wrong length"))?;
    Ok(u128::from_be_bytes(array))
}

fn number(text: &str) -> Result<u128, WalletStoreError> {
    text.parse().map_err(|_| failed(format!("{text:?} is not an amount")))
}

async fn read_envelope(c: &impl GenericClient, id: u128) -> Result<Option<Envelope>, WalletStoreError> {
    let row = c
        .query_opt(
            &format!("SELECT {ENVELOPE_COLUMNS} FROM wallet_envelopes WHERE id = $1"),
            &[&id.to_be_bytes().to_vec()],
        )
        .await
        .map_err(failed)?;
    row.as_ref().map(envelope_row).transpose()
}

fn envelope_row(r: &Row) -> Result<Envelope, WalletStoreError> {
    let get_text = |i: usize| -> Result<String, WalletStoreError> { r.try_get(i).map_err(failed) };
    let get_int = |i: usize| -> Result<i64, WalletStoreError> { r.try_get(i).map_err(failed) };
    let shares = get_text(5)?.split(',').map(number).collect::<Result<_, _>>()?;
    Ok(Envelope {
        id: id_of(&r.try_get::<_, Vec<u8>>(0).map_err(failed)?)?,
        owner: UserId(get_int(1)? as u64),
        conv: ConvId(get_int(2)? as u64),
        currency: Currency::parse(&get_text(3)?).map_err(failed)?,
        total: number(&get_text(4)?)?,
        shares,
        created_at_ms: u64::try_from(get_int(6)?).map_err(failed)?,
        expires_at_ms: u64::try_from(get_int(7)?).map_err(failed)?,
        status: Status::from_name(&get_text(8)?).ok_or_else(|| failed("an unknown envelope status"))?,
    })
}

fn claim_row(r: &Row) -> Result<Claim, WalletStoreError> {
    let user: i64 = r.try_get(0).map_err(failed)?;
    let index: i32 = r.try_get(1).map_err(failed)?;
    let amount: String = r.try_get(2).map_err(failed)?;
    let at: i64 = r.try_get(3).map_err(failed)?;
    Ok(Claim {
        user: UserId(user as u64),
        index: u32::try_from(index).map_err(failed)?,
        amount: number(&amount)?,
        at_ms: u64::try_from(at).map_err(failed)?,
    })
}
