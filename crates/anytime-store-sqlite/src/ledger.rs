//! The wallet ledger's store on SQLite: `LedgerStore` over the same database and group-commit
//! writer as messages, so a batch of transfers costs one fsync shared with whatever else is
//! being written.

use anytime_ledger::{
    Account, AccountId, AccountKind, Changes, CommitError, Currency, HoldStatus, LedgerStore, Loaded, StoreError,
    Totals, Transfer, TransferId, TransferKind,
};
use anytime_proto::ErrorCode;
use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::SqliteStore;

type Sql<T> = Result<T, anytime_server_core::store::StoreError>;

fn id_bytes(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

fn id_of(bytes: &[u8]) -> rusqlite::Result<u128> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| rusqlite::Error::InvalidColumnType(0, "id".into(), rusqlite::types::Type::Blob))?;
    Ok(u128::from_be_bytes(array))
}

/// Amounts are `u128` in the ledger and INTEGER here: refused when they do not fit.
fn int(amount: u128) -> Sql<i64> {
    i64::try_from(amount).map_err(|_| {
        anytime_server_core::store::StoreError::Backend(format!("amount {amount} does not fit the database"))
    })
}

fn amount(row: &Row<'_>, index: usize) -> rusqlite::Result<u128> {
    Ok(row.get::<_, i64>(index)?.max(0) as u128)
}

fn currency(text: &str) -> rusqlite::Result<Currency> {
    Currency::parse(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

const ACCOUNT_COLUMNS: &str =
    "id, currency, kind, owner, debits_pending, debits_posted, credits_pending, credits_posted, version";

fn account_row(row: &Row<'_>) -> rusqlite::Result<Account> {
    let kind: u16 = row.get(2)?;
    Ok(Account {
        id: AccountId(id_of(&row.get::<_, Vec<u8>>(0)?)?),
        currency: currency(&row.get::<_, String>(1)?)?,
        kind: AccountKind::from_code(kind).ok_or(rusqlite::Error::IntegralValueOutOfRange(2, i64::from(kind)))?,
        owner: row.get::<_, i64>(3)? as u64,
        debits_pending: amount(row, 4)?,
        debits_posted: amount(row, 5)?,
        credits_pending: amount(row, 6)?,
        credits_posted: amount(row, 7)?,
        version: row.get::<_, i64>(8)? as u64,
    })
}

const TRANSFER_COLUMNS: &str =
    "id, debit, credit, amount, currency, kind, expires_at_ms, pending_id, code, reference, timestamp_ms, hold";

fn transfer_row(row: &Row<'_>) -> rusqlite::Result<Transfer> {
    let kind: String = row.get(5)?;
    let pending = || -> rusqlite::Result<TransferId> { Ok(TransferId(id_of(&row.get::<_, Vec<u8>>(7)?)?)) };
    let kind = match kind.as_str() {
        "posted" => TransferKind::Posted,
        "pending" => TransferKind::Pending { expires_at_ms: row.get::<_, i64>(6)? as u64 },
        "post" => TransferKind::Post { pending: pending()? },
        "void" => TransferKind::Void { pending: pending()? },
        _ => return Err(rusqlite::Error::InvalidColumnType(5, kind, rusqlite::types::Type::Text)),
    };
    Ok(Transfer {
        id: TransferId(id_of(&row.get::<_, Vec<u8>>(0)?)?),
        debit: AccountId(id_of(&row.get::<_, Vec<u8>>(1)?)?),
        credit: AccountId(id_of(&row.get::<_, Vec<u8>>(2)?)?),
        amount: amount(row, 3)?,
        currency: currency(&row.get::<_, String>(4)?)?,
        kind,
        code: row.get(8)?,
        reference: id_of(&row.get::<_, Vec<u8>>(9)?)?,
        timestamp_ms: row.get::<_, i64>(10)? as u64,
        hold: row.get::<_, Option<String>>(11)?.as_deref().and_then(HoldStatus::from_name),
    })
}

fn backend(error: rusqlite::Error) -> anytime_server_core::store::StoreError {
    crate::engine::backend(error)
}

fn conflict() -> anytime_server_core::store::StoreError {
    anytime_server_core::store::StoreError::Rejected(ErrorCode::LedgerConflict)
}

fn load(c: &Connection, accounts: &[AccountId], transfers: &[TransferId]) -> Sql<Loaded> {
    let mut loaded = Loaded::default();
    // One statement per id from the statement cache: batches are small and the lookups indexed.
    let mut stmt =
        c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id = ?")).map_err(backend)?;
    for id in accounts {
        if let Some(a) = stmt.query_row([&id_bytes(id.0)[..]], account_row).optional().map_err(backend)? {
            loaded.accounts.push(a);
        }
    }
    let mut stmt =
        c.prepare_cached(&format!("SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = ?")).map_err(backend)?;
    for id in transfers {
        if let Some(t) = stmt.query_row([&id_bytes(id.0)[..]], transfer_row).optional().map_err(backend)? {
            loaded.transfers.push(t);
        }
    }
    Ok(loaded)
}

fn commit(c: &Connection, changes: &Changes) -> Sql<()> {
    for (a, expected) in &changes.accounts {
        let id = id_bytes(a.id.0);
        let sums = [int(a.debits_pending)?, int(a.debits_posted)?, int(a.credits_pending)?, int(a.credits_posted)?];
        let written = match expected {
            None => c
                .prepare_cached(
                    "INSERT INTO ledger_accounts (id, currency, kind, owner, debits_pending, debits_posted, credits_pending, credits_posted, version)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![&id[..], a.currency.code(), a.kind.code(), a.owner as i64, sums[0], sums[1], sums[2], sums[3], a.version as i64])
                }),
            Some(version) => c
                .prepare_cached(
                    "UPDATE ledger_accounts SET debits_pending = ?, debits_posted = ?, credits_pending = ?, credits_posted = ?, version = ?
                     WHERE id = ? AND version = ?",
                )
                .and_then(|mut s| {
                    s.execute(params![sums[0], sums[1], sums[2], sums[3], a.version as i64, &id[..], *version as i64])
                }),
        }
        .map_err(backend)?;
        if written != 1 {
            return Err(conflict());
        }
    }
    let mut insert = c
        .prepare_cached(
            "INSERT INTO ledger_transfers (id, debit, credit, amount, currency, kind, expires_at_ms, pending_id, code, reference, timestamp_ms, hold)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
        )
        .map_err(backend)?;
    for t in &changes.transfers {
        let (kind, expires, pending) = match t.kind {
            TransferKind::Posted => ("posted", None, None),
            TransferKind::Pending { expires_at_ms } => ("pending", Some(expires_at_ms as i64), None),
            TransferKind::Post { pending } => ("post", None, Some(id_bytes(pending.0).to_vec())),
            TransferKind::Void { pending } => ("void", None, Some(id_bytes(pending.0).to_vec())),
        };
        let written = insert
            .execute(params![
                &id_bytes(t.id.0)[..],
                &id_bytes(t.debit.0)[..],
                &id_bytes(t.credit.0)[..],
                int(t.amount)?,
                t.currency.code(),
                kind,
                expires,
                pending,
                t.code,
                &id_bytes(t.reference)[..],
                t.timestamp_ms as i64,
                t.hold.map(HoldStatus::name),
            ])
            .map_err(backend)?;
        if written != 1 {
            return Err(conflict());
        }
    }
    let mut hold =
        c.prepare_cached("UPDATE ledger_transfers SET hold = ? WHERE id = ? AND hold IS NOT NULL").map_err(backend)?;
    for (id, status) in &changes.holds {
        if hold.execute(params![status.name(), &id_bytes(id.0)[..]]).map_err(backend)? != 1 {
            return Err(anytime_server_core::store::StoreError::Backend(format!("no hold {:032x} to update", id.0)));
        }
    }
    Ok(())
}

fn transfers_of(
    c: &Connection,
    account: AccountId,
    before: Option<(u64, TransferId)>,
    limit: u32,
) -> Sql<Vec<Transfer>> {
    let (at, id) = before.map_or((i64::MAX, [0xff; 16]), |(at, id)| (at as i64, id_bytes(id.0)));
    // Two index range scans (debit side, credit side) merged: an OR would scan the table.
    let side = |column: &str| {
        format!(
            "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE {column} = ?1 AND (timestamp_ms < ?2 OR (timestamp_ms = ?2 AND id < ?3))"
        )
    };
    let sql = format!(
        "SELECT * FROM ({} UNION ALL {}) ORDER BY timestamp_ms DESC, id DESC LIMIT ?4",
        side("debit"),
        side("credit")
    );
    let mut stmt = c.prepare_cached(&sql).map_err(backend)?;
    let rows = stmt
        .query_map(params![&id_bytes(account.0)[..], at, &id[..], i64::from(limit)], transfer_row)
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

fn expired_holds(c: &Connection, now_ms: u64, limit: u32) -> Sql<Vec<TransferId>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT id FROM ledger_transfers WHERE hold = 'open' AND expires_at_ms <= ? ORDER BY expires_at_ms, id LIMIT ?",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![now_ms as i64, i64::from(limit)], |r| Ok(TransferId(id_of(&r.get::<_, Vec<u8>>(0)?)?)))
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

fn totals(c: &Connection) -> Sql<Vec<(Currency, Totals)>> {
    let mut stmt = c
        .prepare(
            "SELECT currency, SUM(debits_posted), SUM(credits_posted), SUM(debits_pending), SUM(credits_pending)
             FROM ledger_accounts GROUP BY currency ORDER BY currency",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params_from_iter(std::iter::empty::<i64>()), |r| {
            Ok((
                currency(&r.get::<_, String>(0)?)?,
                Totals {
                    debits_posted: amount(r, 1)?,
                    credits_posted: amount(r, 2)?,
                    debits_pending: amount(r, 3)?,
                    credits_pending: amount(r, 4)?,
                },
            ))
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

fn store_error(error: anytime_server_core::store::StoreError) -> StoreError {
    StoreError::new(error)
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn load(&self, accounts: &[AccountId], transfers: &[TransferId]) -> Result<Loaded, StoreError> {
        let (accounts, transfers) = (accounts.to_vec(), transfers.to_vec());
        self.engine.read(move |c| load(c, &accounts, &transfers)).await.map_err(store_error)
    }

    /// In the next group commit; returns once durable.
    async fn commit(&self, changes: &Changes) -> Result<(), CommitError> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes.clone();
        match self.engine.write(move |c| commit(c, &changes)).await {
            Ok(()) => Ok(()),
            Err(anytime_server_core::store::StoreError::Rejected(ErrorCode::LedgerConflict)) => {
                Err(CommitError::Conflict)
            }
            Err(other) => Err(CommitError::Store(store_error(other))),
        }
    }

    async fn expired_holds(&self, now_ms: u64, limit: u32) -> Result<Vec<TransferId>, StoreError> {
        self.engine.read(move |c| expired_holds(c, now_ms, limit)).await.map_err(store_error)
    }

    async fn transfers_of(
        &self,
        account: AccountId,
        before: Option<(u64, TransferId)>,
        limit: u32,
    ) -> Result<Vec<Transfer>, StoreError> {
        self.engine.read(move |c| transfers_of(c, account, before, limit)).await.map_err(store_error)
    }

    async fn totals(&self) -> Result<Vec<(Currency, Totals)>, StoreError> {
        self.engine.read(totals).await.map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[tokio::test]
    async fn passes_the_ledger_store_conformance_cases() {
        let dirs = std::sync::Mutex::new(Vec::new());
        anytime_ledger::conformance::run_all(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = crate::SqliteStore::open(&dir.path().join("ledger.sqlite3"), Arc::default()).expect("open");
            dirs.lock().expect("not poisoned").push(dir);
            async move { store }
        })
        .await;
    }
}
