//! The wallet's own records on SQLite (`anytime_wallet::WalletStore`): payment PINs and red
//! envelopes. Grabs run in the single writer, which makes "take the next share" atomic.

use anytime_ledger::Currency;
use anytime_proto::{ConvId, UserId};
use anytime_wallet::envelope::{Claim, Envelope, Grab, Status};
use anytime_wallet::pin::PinRecord;
use anytime_wallet::request::{self, MoneyRequest};
use anytime_wallet::{WalletStore, WalletStoreError};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::engine::backend;
use crate::SqliteStore;

fn failed(error: anytime_server_core::store::StoreError) -> WalletStoreError {
    WalletStoreError(error.to_string())
}

#[async_trait]
impl WalletStore for SqliteStore {
    async fn pin(&self, user: UserId) -> Result<Option<PinRecord>, WalletStoreError> {
        self.engine
            .read(move |c| {
                c.query_row(
                    "SELECT hash, failures, locked_until_ms FROM wallet_pins WHERE user_id = ?",
                    [user.0 as i64],
                    |r| {
                        Ok(PinRecord {
                            hash: r.get(0)?,
                            failures: r.get(1)?,
                            locked_until_ms: r.get::<_, i64>(2)? as u64,
                        })
                    },
                )
                .optional()
                .map_err(backend)
            })
            .await
            .map_err(failed)
    }

    async fn put_pin(&self, user: UserId, record: &PinRecord) -> Result<(), WalletStoreError> {
        let record = record.clone();
        self.engine
            .write(move |c| {
                c.execute(
                    "INSERT INTO wallet_pins (user_id, hash, failures, locked_until_ms) VALUES (?, ?, ?, ?)
                     ON CONFLICT(user_id) DO UPDATE SET hash = excluded.hash, failures = excluded.failures,
                     locked_until_ms = excluded.locked_until_ms",
                    params![user.0 as i64, record.hash, record.failures, record.locked_until_ms as i64],
                )
                .map(|_| ())
                .map_err(backend)
            })
            .await
            .map_err(failed)
    }

    async fn create_envelope(&self, envelope: &Envelope) -> Result<bool, WalletStoreError> {
        let envelope = envelope.clone();
        self.engine.write(move |c| create_envelope(c, &envelope)).await.map_err(failed)
    }

    async fn envelope(&self, id: u128) -> Result<Option<Envelope>, WalletStoreError> {
        self.engine.read(move |c| read_envelope(c, id).map_err(backend)).await.map_err(failed)
    }

    async fn grab(&self, id: u128, user: UserId, now_ms: u64) -> Result<Grab, WalletStoreError> {
        self.engine.write(move |c| grab(c, id, user, now_ms).map_err(backend)).await.map_err(failed)
    }

    async fn claims(&self, id: u128) -> Result<Vec<Claim>, WalletStoreError> {
        self.engine.read(move |c| claims(c, id).map_err(backend)).await.map_err(failed)
    }

    async fn set_envelope_status(&self, id: u128, status: Status) -> Result<(), WalletStoreError> {
        self.engine
            .write(move |c| {
                c.execute(
                    "UPDATE wallet_envelopes SET status = ? WHERE id = ?",
                    params![status.name(), &id.to_be_bytes()[..]],
                )
                .map(|_| ())
                .map_err(backend)
            })
            .await
            .map_err(failed)
    }

    async fn envelopes_due(&self, now_ms: u64, limit: u32) -> Result<Vec<u128>, WalletStoreError> {
        self.engine
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT id FROM wallet_envelopes WHERE status = 'open' AND expires_at_ms <= ? ORDER BY expires_at_ms, id LIMIT ?",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![now_ms as i64, i64::from(limit)], |r| id_of(&r.get::<_, Vec<u8>>(0)?))
                    .map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)
            })
            .await
            .map_err(failed)
    }

    async fn create_requests(&self, requests: &[MoneyRequest]) -> Result<bool, WalletStoreError> {
        let requests = requests.to_vec();
        self.engine.write(move |c| create_requests(c, &requests)).await.map_err(failed)
    }

    async fn request(&self, id: u128) -> Result<Option<MoneyRequest>, WalletStoreError> {
        Ok(self.wallet_requests_where("id = ?", id.to_be_bytes().to_vec()).await?.into_iter().next())
    }

    async fn set_request_status(
        &self,
        id: u128,
        status: request::Status,
        only_if_open: bool,
    ) -> Result<bool, WalletStoreError> {
        self.engine
            .write(move |c| {
                let sql = if only_if_open {
                    "UPDATE wallet_requests SET status = ? WHERE id = ? AND status = 'open'"
                } else {
                    "UPDATE wallet_requests SET status = ? WHERE id = ?"
                };
                c.execute(sql, params![status.name(), &id.to_be_bytes()[..]]).map(|n| n == 1).map_err(backend)
            })
            .await
            .map_err(failed)
    }

    async fn split_requests(&self, split: u128) -> Result<Vec<MoneyRequest>, WalletStoreError> {
        self.wallet_requests_where("split = ?", split.to_be_bytes().to_vec()).await
    }

    async fn open_requests_for(
        &self,
        payer: UserId,
        now_ms: u64,
        limit: u32,
    ) -> Result<Vec<MoneyRequest>, WalletStoreError> {
        self.engine
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {REQUEST_COLUMNS} FROM wallet_requests WHERE payer = ? AND status = 'open' \
                         AND expires_at_ms > ? ORDER BY created_at_ms DESC, position DESC LIMIT ?"
                    ))
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(rusqlite::params![payer.0 as i64, now_ms as i64, limit], request_row)
                    .map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)
            })
            .await
            .map_err(failed)
    }
}

impl SqliteStore {
    async fn wallet_requests_where(
        &self,
        clause: &'static str,
        key: Vec<u8>,
    ) -> Result<Vec<MoneyRequest>, WalletStoreError> {
        self.engine
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {REQUEST_COLUMNS} FROM wallet_requests WHERE {clause} ORDER BY position"
                    ))
                    .map_err(backend)?;
                let rows = stmt.query_map([&key[..]], request_row).map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)
            })
            .await
            .map_err(failed)
    }
}

const REQUEST_COLUMNS: &str =
    "id, requester, payer, conv, currency, amount, split, created_at_ms, expires_at_ms, status";

fn request_row(r: &Row<'_>) -> rusqlite::Result<MoneyRequest> {
    let bad = |column: usize, what: &str| {
        rusqlite::Error::InvalidColumnType(column, what.into(), rusqlite::types::Type::Text)
    };
    let currency: String = r.get(4)?;
    let status: String = r.get(9)?;
    Ok(MoneyRequest {
        id: id_of(&r.get::<_, Vec<u8>>(0)?)?,
        requester: UserId(r.get::<_, i64>(1)? as u64),
        payer: UserId(r.get::<_, i64>(2)? as u64),
        conv: ConvId(r.get::<_, i64>(3)? as u64),
        currency: Currency::parse(&currency).map_err(|_| bad(4, "currency"))?,
        amount: r.get::<_, i64>(5)?.max(0) as u128,
        split: r.get::<_, Option<Vec<u8>>>(6)?.map(|b| id_of(&b)).transpose()?,
        created_at_ms: r.get::<_, i64>(7)? as u64,
        expires_at_ms: r.get::<_, i64>(8)? as u64,
        status: request::Status::from_name(&status).ok_or_else(|| bad(9, "status"))?,
    })
}

fn create_requests(c: &Connection, requests: &[MoneyRequest]) -> Sql<bool> {
    let mut read =
        c.prepare_cached(&format!("SELECT {REQUEST_COLUMNS} FROM wallet_requests WHERE id = ?")).map_err(backend)?;
    let mut fresh = Vec::new();
    for r in requests {
        match read.query_row([&r.id.to_be_bytes()[..]], request_row).optional().map_err(backend)? {
            Some(existing) if !request::same_request(&existing, r) => return Ok(false),
            Some(_) => {}
            None => fresh.push(r),
        }
    }
    let next: i64 = c
        .query_row("SELECT COALESCE(MAX(position), 0) + 1 FROM wallet_requests", [], |row| row.get(0))
        .map_err(backend)?;
    for (i, r) in fresh.into_iter().enumerate() {
        c.execute(
            "INSERT INTO wallet_requests (id, requester, payer, conv, currency, amount, split, created_at_ms, expires_at_ms, status, position)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                &r.id.to_be_bytes()[..],
                r.requester.0 as i64,
                r.payer.0 as i64,
                r.conv.0 as i64,
                r.currency.code(),
                amount(r.amount)?,
                r.split.map(|s| s.to_be_bytes().to_vec()),
                r.created_at_ms as i64,
                r.expires_at_ms as i64,
                r.status.name(),
                next + i as i64,
            ],
        )
        .map_err(backend)?;
    }
    Ok(true)
}

type Sql<T> = Result<T, anytime_server_core::store::StoreError>;

fn id_of(bytes: &[u8]) -> rusqlite::Result<u128> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| rusqlite::Error::InvalidColumnType(0, "id".into(), rusqlite::types::Type::Blob))?;
    Ok(u128::from_be_bytes(array))
}

fn amount(value: u128) -> Sql<i64> {
    i64::try_from(value).map_err(|_| {
        anytime_server_core::store::StoreError::Backend(format!("amount {value} does not fit the database"))
    })
}

fn create_envelope(c: &Connection, e: &Envelope) -> Sql<bool> {
    if let Some(existing) = read_envelope(c, e.id).map_err(backend)? {
        return Ok(anytime_wallet::same_envelope(&existing, e));
    }
    let shares: Vec<String> = e.shares.iter().map(u128::to_string).collect();
    c.execute(
        "INSERT INTO wallet_envelopes (id, owner, conv, currency, total, shares, share_count, created_at_ms, expires_at_ms, status)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            &e.id.to_be_bytes()[..],
            e.owner.0 as i64,
            e.conv.0 as i64,
            e.currency.code(),
            amount(e.total)?,
            shares.join(","),
            e.shares.len() as i64,
            e.created_at_ms as i64,
            e.expires_at_ms as i64,
            e.status.name(),
        ],
    )
    .map_err(backend)?;
    Ok(true)
}

fn envelope_row(r: &Row<'_>) -> rusqlite::Result<Envelope> {
    let bad = |column: usize, what: &str| {
        rusqlite::Error::InvalidColumnType(column, what.into(), rusqlite::types::Type::Text)
    };
    let shares: String = r.get(5)?;
    let shares =
        shares.split(',').map(|s| s.parse::<u128>().map_err(|_| bad(5, "shares"))).collect::<Result<_, _>>()?;
    let currency: String = r.get(3)?;
    let status: String = r.get(8)?;
    Ok(Envelope {
        id: id_of(&r.get::<_, Vec<u8>>(0)?)?,
        owner: UserId(r.get::<_, i64>(1)? as u64),
        conv: ConvId(r.get::<_, i64>(2)? as u64),
        currency: Currency::parse(&currency).map_err(|_| bad(3, "currency"))?,
        total: r.get::<_, i64>(4)?.max(0) as u128,
        shares,
        created_at_ms: r.get::<_, i64>(6)? as u64,
        expires_at_ms: r.get::<_, i64>(7)? as u64,
        status: Status::from_name(&status).ok_or_else(|| bad(8, "status"))?,
    })
}

fn read_envelope(c: &Connection, id: u128) -> rusqlite::Result<Option<Envelope>> {
    c.query_row(
        "SELECT id, owner, conv, currency, total, shares, created_at_ms, expires_at_ms, status FROM wallet_envelopes WHERE id = ?",
        [&id.to_be_bytes()[..]],
        envelope_row,
    )
    .optional()
}

fn claim_row(r: &Row<'_>) -> rusqlite::Result<Claim> {
    Ok(Claim {
        user: UserId(r.get::<_, i64>(0)? as u64),
        index: r.get(1)?,
        amount: r.get::<_, i64>(2)?.max(0) as u128,
        at_ms: r.get::<_, i64>(3)? as u64,
    })
}

fn claims(c: &Connection, id: u128) -> rusqlite::Result<Vec<Claim>> {
    let mut stmt = c.prepare_cached(
        "SELECT user_id, idx, amount, at_ms FROM wallet_envelope_claims WHERE envelope = ? ORDER BY idx",
    )?;
    let rows = stmt.query_map([&id.to_be_bytes()[..]], claim_row)?;
    rows.collect()
}

/// In the writer: nothing else writes meanwhile, so "count, then insert the next" is atomic.
fn grab(c: &Connection, id: u128, user: UserId, now_ms: u64) -> rusqlite::Result<Grab> {
    let key = id.to_be_bytes();
    let mine = c
        .query_row(
            "SELECT user_id, idx, amount, at_ms FROM wallet_envelope_claims WHERE envelope = ? AND user_id = ?",
            params![&key[..], user.0 as i64],
            claim_row,
        )
        .optional()?;
    if let Some(claim) = mine {
        return Ok(Grab::Share { claim, fresh: false });
    }
    let Some(envelope) = read_envelope(c, id)? else { return Ok(Grab::Empty) };
    let taken: i64 =
        c.query_row("SELECT COUNT(*) FROM wallet_envelope_claims WHERE envelope = ?", [&key[..]], |r| r.get(0))?;
    let Some(share) = envelope.shares.get(taken as usize) else { return Ok(Grab::Empty) };
    let claim = Claim { user, index: taken as u32, amount: *share, at_ms: now_ms };
    c.execute(
        "INSERT INTO wallet_envelope_claims (envelope, idx, user_id, amount, at_ms) VALUES (?, ?, ?, ?, ?)",
        params![&key[..], claim.index, user.0 as i64, claim.amount as i64, now_ms as i64],
    )?;
    Ok(Grab::Share { claim, fresh: true })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_wallet_store_conformance_cases() {
        let dirs = std::sync::Mutex::new(Vec::new());
        anytime_wallet::conformance::run_all(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = crate::SqliteStore::open(&dir.path().join("w.sqlite3"), Arc::default()).expect("open");
            dirs.lock().expect("not poisoned").push(dir);
            async move { store }
        })
        .await;
    }
}
