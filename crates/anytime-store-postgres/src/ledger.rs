//! The wallet ledger's store on PostgreSQL: `LedgerStore` for several nodes sharing one database.
//!
//! A commit is one transaction (PostgreSQL's default READ COMMITTED is enough): a new account is
//! `INSERT … ON CONFLICT DO NOTHING`, a changed one `UPDATE … WHERE id = $ AND version =
//! $expected`, a transfer `INSERT … ON CONFLICT DO NOTHING`; a statement that wrote no row means
//! another node got there first, and the whole transaction is rolled back as
//! [`CommitError::Conflict`]. Under READ COMMITTED an `UPDATE` that meets a row another
//! transaction is changing waits for it and re-checks `version` on the committed row, and an
//! `INSERT` that meets an uncommitted row with its key waits for that transaction: so exactly one
//! of two racing writers from the same version wins, whatever the interleaving. Rows are written
//! in id order (accounts, then transfers, then holds), so two commits take row locks in the same
//! order and cannot deadlock each other; should PostgreSQL still report a deadlock or a
//! serialization failure, nothing was written, and that too is a `Conflict`.
//!
//! Amounts are NUMERIC(39, 0) (`ledger_amount`), passed and read as decimal text: every `u128`
//! fits exactly, so no amount the ledger can produce is refused or rounded. Ids are 16-byte
//! big-endian BYTEA, which PostgreSQL compares bytewise, i.e. in `u128` order.

use anytime_ledger::{
    Account, AccountId, AccountKind, Changes, CommitError, Currency, HoldStatus, LedgerStore, Loaded, StoreError,
    Totals, Transfer, TransferId, TransferKind,
};
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::PgStore;

type Params<'a> = [&'a (dyn ToSql + Sync)];

fn store_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::new(error)
}

/// What a failed statement or commit means for the caller: lost a race (nothing written, post
/// again), or the store failed.
fn commit_error(error: tokio_postgres::Error) -> CommitError {
    match error.code() {
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE => {
            CommitError::Conflict
        }
        _ => CommitError::Store(store_error(error)),
    }
}

fn id_bytes(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

fn id_of(bytes: &[u8]) -> Result<u128, StoreError> {
    let array: [u8; 16] =
        bytes.try_into().map_err(|_| store_error(format!("a ledger id of {} bytes, not 16", bytes.len())))?;
    Ok(u128::from_be_bytes(array))
}

/// An amount as the decimal text the statements cast to NUMERIC (`$n::text::numeric`):
/// tokio-postgres has no `u128` ⇄ NUMERIC conversion, and text is exact.
fn amount_text(amount: u128) -> String {
    amount.to_string()
}

fn amount_of(text: &str) -> Result<u128, StoreError> {
    text.parse().map_err(|_| store_error(format!("the amount {text:?} is not a u128")))
}

/// A time for a BIGINT column that is ordered (history, expiry): refused beyond `i64::MAX` rather
/// than wrapped into a negative time that would sort first.
fn time(ms: u64) -> Result<i64, StoreError> {
    i64::try_from(ms).map_err(|_| store_error(format!("the time {ms} ms does not fit the database")))
}

fn time_of(ms: i64) -> Result<u64, StoreError> {
    u64::try_from(ms).map_err(|_| store_error(format!("a negative time ({ms} ms) in the ledger")))
}

fn currency_of(code: &str) -> Result<Currency, StoreError> {
    Currency::parse(code).map_err(store_error)
}

/// A column of `row`, or why it could not be read (never a panic on what the database holds).
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index).map_err(store_error)
}

const ACCOUNT_COLUMNS: &str = "id, currency, kind, owner, debits_pending::text, debits_posted::text, \
                               credits_pending::text, credits_posted::text, version";

fn account_row(row: &Row) -> Result<Account, StoreError> {
    let kind: i32 = column(row, 2)?;
    Ok(Account {
        id: AccountId(id_of(column(row, 0)?)?),
        currency: currency_of(column(row, 1)?)?,
        kind: u16::try_from(kind)
            .ok()
            .and_then(AccountKind::from_code)
            .ok_or_else(|| store_error(format!("an account of unknown kind {kind}")))?,
        owner: crate::pg::uid(column(row, 3)?),
        debits_pending: amount_of(column(row, 4)?)?,
        debits_posted: amount_of(column(row, 5)?)?,
        credits_pending: amount_of(column(row, 6)?)?,
        credits_posted: amount_of(column(row, 7)?)?,
        version: crate::pg::uid(column(row, 8)?),
    })
}

const TRANSFER_COLUMNS: &str = "id, debit, credit, amount::text AS amount, currency, kind, expires_at_ms, pending_id, \
                                code, reference, timestamp_ms, hold";

fn transfer_row(row: &Row) -> Result<Transfer, StoreError> {
    let kind: &str = column(row, 5)?;
    let pending = || -> Result<TransferId, StoreError> {
        let id: Option<&[u8]> = column(row, 7)?;
        Ok(TransferId(id_of(id.ok_or_else(|| store_error("a post or void without its hold"))?)?))
    };
    let kind = match kind {
        "posted" => TransferKind::Posted,
        "pending" => {
            let expires: Option<i64> = column(row, 6)?;
            TransferKind::Pending {
                expires_at_ms: time_of(expires.ok_or_else(|| store_error("a hold without its expiry"))?)?,
            }
        }
        "post" => TransferKind::Post { pending: pending()? },
        "void" => TransferKind::Void { pending: pending()? },
        other => return Err(store_error(format!("a transfer of unknown kind {other:?}"))),
    };
    let code: i32 = column(row, 8)?;
    let hold: Option<&str> = column(row, 11)?;
    Ok(Transfer {
        id: TransferId(id_of(column(row, 0)?)?),
        debit: AccountId(id_of(column(row, 1)?)?),
        credit: AccountId(id_of(column(row, 2)?)?),
        amount: amount_of(column(row, 3)?)?,
        currency: currency_of(column(row, 4)?)?,
        kind,
        code: u16::try_from(code).map_err(|_| store_error(format!("a transfer code {code} beyond u16")))?,
        reference: id_of(column(row, 9)?)?,
        timestamp_ms: time_of(column(row, 10)?)?,
        hold: match hold {
            None => None,
            Some(name) => {
                Some(HoldStatus::from_name(name).ok_or_else(|| store_error(format!("a hold status {name:?}")))?)
            }
        },
    })
}

async fn query<C: GenericClient>(c: &C, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.query(&statement, params).await
}

async fn exec<C: GenericClient>(c: &C, sql: &str, params: &Params<'_>) -> Result<u64, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.execute(&statement, params).await
}

async fn load(pool: &Pool, accounts: &[AccountId], transfers: &[TransferId]) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::default();
    if accounts.is_empty() && transfers.is_empty() {
        return Ok(loaded);
    }
    let c = pool.get().await.map_err(store_error)?;
    // One primary-key lookup per id, in one statement per table.
    if !accounts.is_empty() {
        let ids: Vec<[u8; 16]> = accounts.iter().map(|a| id_bytes(a.0)).collect();
        let ids: Vec<&[u8]> = ids.iter().map(|id| &id[..]).collect();
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id = ANY($1)");
        for row in query(&c, &sql, &[&ids]).await.map_err(store_error)? {
            loaded.accounts.push(account_row(&row)?);
        }
    }
    if !transfers.is_empty() {
        let ids: Vec<[u8; 16]> = transfers.iter().map(|t| id_bytes(t.0)).collect();
        let ids: Vec<&[u8]> = ids.iter().map(|id| &id[..]).collect();
        let sql = format!("SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = ANY($1)");
        for row in query(&c, &sql, &[&ids]).await.map_err(store_error)? {
            loaded.transfers.push(transfer_row(&row)?);
        }
    }
    Ok(loaded)
}

const INSERT_ACCOUNT: &str = "INSERT INTO ledger_accounts
     (id, currency, kind, owner, debits_pending, debits_posted, credits_pending, credits_posted, version)
     VALUES ($1, $2, $3, $4, $5::text::numeric, $6::text::numeric, $7::text::numeric, $8::text::numeric, $9)
     ON CONFLICT (id) DO NOTHING";

const UPDATE_ACCOUNT: &str = "UPDATE ledger_accounts SET debits_pending = $1::text::numeric,
     debits_posted = $2::text::numeric, credits_pending = $3::text::numeric, credits_posted = $4::text::numeric,
     version = $5
     WHERE id = $6 AND version = $7";

const INSERT_TRANSFER: &str = "INSERT INTO ledger_transfers
     (id, debit, credit, amount, currency, kind, expires_at_ms, pending_id, code, reference, timestamp_ms, hold)
     VALUES ($1, $2, $3, $4::text::numeric, $5, $6, $7, $8, $9, $10, $11, $12)
     ON CONFLICT (id) DO NOTHING";

const UPDATE_HOLD: &str = "UPDATE ledger_transfers SET hold = $1 WHERE id = $2 AND hold IS NOT NULL";

/// The statements of one commit, inside its transaction; `Err(Conflict)` as soon as one of them
/// finds another writer was first.
async fn write<C: GenericClient>(c: &C, changes: &Changes) -> Result<(), CommitError> {
    // In id order whatever order `changes` has: every commit locks rows in one order.
    let mut accounts: Vec<&(Account, Option<u64>)> = changes.accounts.iter().collect();
    accounts.sort_by_key(|(a, _)| a.id);
    for (a, expected) in accounts {
        let id = id_bytes(a.id.0);
        let sums = [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted].map(amount_text);
        let version = crate::pg::id(a.version);
        let written = match expected {
            None => {
                exec(
                    c,
                    INSERT_ACCOUNT,
                    &[
                        &&id[..],
                        &a.currency.code(),
                        &i32::from(a.kind.code()),
                        &crate::pg::id(a.owner),
                        &sums[0],
                        &sums[1],
                        &sums[2],
                        &sums[3],
                        &version,
                    ],
                )
                .await
            }
            Some(expected) => {
                exec(
                    c,
                    UPDATE_ACCOUNT,
                    &[&sums[0], &sums[1], &sums[2], &sums[3], &version, &&id[..], &crate::pg::id(*expected)],
                )
                .await
            }
        }
        .map_err(commit_error)?;
        if written != 1 {
            return Err(CommitError::Conflict);
        }
    }
    let mut transfers: Vec<&Transfer> = changes.transfers.iter().collect();
    transfers.sort_by_key(|t| t.id);
    for t in transfers {
        let (kind, expires, pending) = match t.kind {
            TransferKind::Posted => ("posted", None, None),
            TransferKind::Pending { expires_at_ms } => ("pending", Some(time(expires_at_ms)?), None),
            TransferKind::Post { pending } => ("post", None, Some(id_bytes(pending.0))),
            TransferKind::Void { pending } => ("void", None, Some(id_bytes(pending.0))),
        };
        let written = exec(
            c,
            INSERT_TRANSFER,
            &[
                &&id_bytes(t.id.0)[..],
                &&id_bytes(t.debit.0)[..],
                &&id_bytes(t.credit.0)[..],
                &amount_text(t.amount),
                &t.currency.code(),
                &kind,
                &expires,
                &pending.as_ref().map(|p| &p[..]),
                &i32::from(t.code),
                &&id_bytes(t.reference)[..],
                &time(t.timestamp_ms)?,
                &t.hold.map(HoldStatus::name),
            ],
        )
        .await
        .map_err(commit_error)?;
        if written != 1 {
            return Err(CommitError::Conflict);
        }
    }
    let mut holds: Vec<&(TransferId, HoldStatus)> = changes.holds.iter().collect();
    holds.sort_by_key(|(id, _)| *id);
    for (id, status) in holds {
        if exec(c, UPDATE_HOLD, &[&status.name(), &&id_bytes(id.0)[..]]).await.map_err(commit_error)? != 1 {
            return Err(CommitError::Store(store_error(format!("no hold {:032x} to update", id.0))));
        }
    }
    Ok(())
}

async fn commit(pool: &Pool, changes: &Changes) -> Result<(), CommitError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut client = pool.get().await.map_err(store_error)?;
    let tx = client.transaction().await.map_err(commit_error)?;
    match write(&tx, changes).await {
        // Durable when this returns (`synchronous_commit = on`, the server's default).
        Ok(()) => tx.commit().await.map_err(commit_error),
        Err(e) => {
            // Dropping the transaction would roll it back too; waiting for it hands the pool a
            // clean connection. If the rollback fails, the connection is broken and PostgreSQL
            // discards the transaction anyway: `e` is still the answer.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "ledger: rolling back a refused commit failed");
            }
            Err(e)
        }
    }
}

/// One side (debit or credit) of an account's history: a backward range scan of its index.
fn history_side(column: &str) -> String {
    format!(
        "(SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE {column} = $1 AND (timestamp_ms, id) < ($2, $3)
          ORDER BY timestamp_ms DESC, id DESC LIMIT $4)"
    )
}

/// Both sides merged (a transfer never debits and credits one account, so none appears twice).
/// An `OR` of the two sides would scan the table.
fn history_sql() -> String {
    format!(
        "SELECT * FROM ({} UNION ALL {}) AS history ORDER BY timestamp_ms DESC, id DESC LIMIT $4",
        history_side("debit"),
        history_side("credit")
    )
}

const EXPIRED_HOLDS: &str =
    "SELECT id FROM ledger_transfers WHERE hold = 'open' AND expires_at_ms <= $1 ORDER BY expires_at_ms, id LIMIT $2";

const TOTALS: &str = "SELECT currency, SUM(debits_posted)::text, SUM(credits_posted)::text,
     SUM(debits_pending)::text, SUM(credits_pending)::text
     FROM ledger_accounts GROUP BY currency ORDER BY currency";

async fn transfers_of(
    pool: &Pool,
    account: AccountId,
    before: Option<(u64, TransferId)>,
    limit: u32,
) -> Result<Vec<Transfer>, StoreError> {
    // No bound: past every stored transfer (times are at most i64::MAX, and 17 bytes of 0xff sort
    // after every 16-byte id).
    let (at, id): (i64, Vec<u8>) = match before {
        Some((at, id)) if at <= i64::MAX as u64 => (at as i64, id_bytes(id.0).to_vec()),
        _ => (i64::MAX, vec![0xff; 17]),
    };
    let c = pool.get().await.map_err(store_error)?;
    let rows = query(&c, &history_sql(), &[&&id_bytes(account.0)[..], &at, &id, &i64::from(limit)])
        .await
        .map_err(store_error)?;
    rows.iter().map(transfer_row).collect()
}

async fn expired_holds(pool: &Pool, now_ms: u64, limit: u32) -> Result<Vec<TransferId>, StoreError> {
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let c = pool.get().await.map_err(store_error)?;
    let rows = query(&c, EXPIRED_HOLDS, &[&now, &i64::from(limit)]).await.map_err(store_error)?;
    rows.iter().map(|r| Ok(TransferId(id_of(column(r, 0)?)?))).collect()
}

async fn totals(pool: &Pool) -> Result<Vec<(Currency, Totals)>, StoreError> {
    let c = pool.get().await.map_err(store_error)?;
    let rows = query(&c, TOTALS, &[]).await.map_err(store_error)?;
    rows.iter()
        .map(|r| {
            // Sums of NOT NULL columns over a non-empty group: never NULL. A sum beyond u128 is
            // refused by `amount_of`.
            Ok((
                currency_of(column(r, 0)?)?,
                Totals {
                    debits_posted: amount_of(column(r, 1)?)?,
                    credits_posted: amount_of(column(r, 2)?)?,
                    debits_pending: amount_of(column(r, 3)?)?,
                    credits_pending: amount_of(column(r, 4)?)?,
                },
            ))
        })
        .collect()
}

#[async_trait]
impl LedgerStore for PgStore {
    async fn load(&self, accounts: &[AccountId], transfers: &[TransferId]) -> Result<Loaded, StoreError> {
        load(&self.pool, accounts, transfers).await
    }

    /// One transaction; returns once PostgreSQL committed it.
    async fn commit(&self, changes: &Changes) -> Result<(), CommitError> {
        commit(&self.pool, changes).await
    }

    async fn expired_holds(&self, now_ms: u64, limit: u32) -> Result<Vec<TransferId>, StoreError> {
        expired_holds(&self.pool, now_ms, limit).await
    }

    async fn transfers_of(
        &self,
        account: AccountId,
        before: Option<(u64, TransferId)>,
        limit: u32,
    ) -> Result<Vec<Transfer>, StoreError> {
        transfers_of(&self.pool, account, before, limit).await
    }

    async fn totals(&self) -> Result<Vec<(Currency, Totals)>, StoreError> {
        totals(&self.pool).await
    }
}

#[cfg(test)]
mod tests {
    //! On a real PostgreSQL: each store gets its own fresh database, created on the server named
    //! by `ANYTIME_TEST_PG_URL` and dropped afterwards (as `tests/store.rs` does).

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use anytime_ledger::conformance::{post, transfer};
    use anytime_ledger::{
        Account, AccountId, AccountKind, Command, CommitError, Currency, Ledger, LedgerStore, Posted, TransferError,
        TransferId,
    };

    use crate::PgStore;

    /// The server, and the databases made on it for one test.
    struct Server {
        admin: tokio_postgres::Client,
        base: String,
        prefix: String,
        made: Mutex<Vec<String>>,
    }

    impl Server {
        async fn connect(test: &str) -> Server {
            let Ok(base) = std::env::var("ANYTIME_TEST_PG_URL") else {
                panic!("set ANYTIME_TEST_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run this test");
            };
            let (admin, connection) =
                tokio_postgres::connect(&base, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
            tokio::spawn(connection);
            let prefix = format!("anytime_ledger_{test}_{}", std::process::id());
            Server { admin, base, prefix, made: Mutex::new(Vec::new()) }
        }

        /// A store on a new, empty database.
        async fn fresh(&self) -> PgStore {
            let db = {
                let mut made = self.made.lock().expect("not poisoned");
                let db = format!("{}_{}", self.prefix, made.len());
                made.push(db.clone());
                db
            };
            // One statement per call: multi-statement strings run as one transaction block.
            self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).await.expect("drop database");
            self.admin.batch_execute(&format!("CREATE DATABASE {db}")).await.expect("create database");
            let url = format!("{}/{db}", self.base.rsplit_once('/').map(|(head, _)| head).unwrap_or(&self.base));
            PgStore::open(&url, 8, Arc::new(anytime_server_core::Metrics::default())).await.expect("open PgStore")
        }

        /// Runs `test` with this server, then drops its databases even if it failed.
        async fn run<F, Fut>(self, test: F)
        where
            F: FnOnce(Arc<Server>) -> Fut,
            Fut: std::future::Future<Output = ()> + Send + 'static,
        {
            let server = Arc::new(self);
            let outcome = tokio::spawn(test(server.clone())).await;
            let made = std::mem::take(&mut *server.made.lock().expect("not poisoned"));
            for db in made {
                server.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await.expect("drop");
            }
            if let Err(failed) = outcome {
                std::panic::resume_unwind(failed.into_panic());
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: ANYTIME_TEST_PG_URL, then -- --ignored (cargo xtask test does both when it is set)"]
    async fn ledger_passes_the_ledger_store_conformance_cases() {
        Server::connect("conformance")
            .await
            .run(|server| async move {
                anytime_ledger::conformance::run_all(|| {
                    let server = server.clone();
                    async move { server.fresh().await }
                })
                .await;
            })
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: ANYTIME_TEST_PG_URL, then -- --ignored (cargo xtask test does both when it is set)"]
    async fn ledger_amounts_and_times_round_trip_at_their_limits() {
        Server::connect("limits")
            .await
            .run(|server| async move {
                let store = server.fresh().await;
                // Sums the ledger can reach are stored exactly, however large.
                let mut big = Account::new(AccountId(u128::MAX), Currency::JPY, AccountKind::Funding, u64::MAX);
                big.debits_posted = u128::MAX;
                big.credits_pending = u128::MAX - 1;
                let changes = anytime_ledger::Changes { accounts: vec![(big.clone(), None)], ..Default::default() };
                store.commit(&changes).await.expect("commit");
                let loaded = store.load(&[big.id], &[]).await.expect("load").accounts;
                assert_eq!(loaded, vec![big.clone()]);
                let totals = store.totals().await.expect("totals");
                assert_eq!(totals.len(), 1);
                assert_eq!((totals[0].1.debits_posted, totals[0].1.credits_pending), (u128::MAX, u128::MAX - 1));
                // The same account again is a conflict, not an error.
                assert!(matches!(store.commit(&changes).await, Err(CommitError::Conflict)));
                // A time past i64::MAX is refused whole, not wrapped into the past.
                let mut ledger = Ledger::new();
                let setup = [
                    Command::Open(Account::new(AccountId(1), Currency::USD, AccountKind::Funding, 0)),
                    Command::Open(Account::new(AccountId(2), Currency::USD, AccountKind::Wallet, 1)),
                ];
                post(&mut ledger, &store, 1, &setup).await.expect("commit");
                let far = transfer(7, AccountId(1), AccountId(2), 5, Some(u64::MAX));
                let outcome = post(&mut ledger, &store, 2, &[far]).await;
                assert!(matches!(outcome, Err(CommitError::Store(_))), "{outcome:?}");
                assert!(store.load(&[], &[TransferId(7)]).await.expect("load").transfers.is_empty());
                assert_eq!(store.load(&[AccountId(2)], &[]).await.expect("load").accounts[0].credits_pending, 0);
            })
            .await;
    }

    /// The wallet both nodes spend from, a sink per node and one both pay into.
    const FUNDING: AccountId = AccountId(10);
    const WALLET: AccountId = AccountId(11);
    const SHARED: AccountId = AccountId(12);
    const FUNDED: u128 = 1_000;
    const OWN: u128 = 3;
    const TOGETHER: u128 = 5;

    fn sink(node: u128) -> AccountId {
        AccountId(20 + node)
    }

    /// What one node saw acknowledged: transfer id → (amount, timestamp).
    type Acked = BTreeMap<u128, (u128, u64)>;

    /// A node: posts, until the wallet is empty, batches of its own transfer and one that the
    /// other node posts too (a client retrying on another node), each from the wallet; on a
    /// conflict it reloads and posts the batch again.
    async fn node(store: Arc<PgStore>, clock: Arc<AtomicU64>, node: u128) -> (Acked, u64) {
        let mut ledger = Ledger::new();
        let (mut acked, mut conflicts) = (Acked::new(), 0);
        for round in 0u128.. {
            let batch = [
                transfer(1_000_000 * (node + 1) + round, WALLET, sink(node), OWN, None),
                transfer(round, WALLET, SHARED, TOGETHER, None),
            ];
            let results = loop {
                let now = clock.fetch_add(1, Ordering::SeqCst);
                match post(&mut ledger, &*store, now, &batch).await {
                    Ok(results) => break results,
                    Err(CommitError::Conflict) => conflicts += 1,
                    Err(CommitError::Store(e)) => panic!("node {node}: {e}"),
                }
            };
            let mut refused = 0;
            for result in results {
                match result {
                    Ok(Posted::Transfer { transfer, .. }) => {
                        let seen = (transfer.amount, transfer.timestamp_ms);
                        // A duplicate answer is the first result: the same amount and instant.
                        if let Some(first) = acked.insert(transfer.id.0, seen) {
                            assert_eq!(first, seen);
                        }
                    }
                    Err(TransferError::InsufficientFunds) => refused += 1,
                    other => panic!("node {node}: {other:?}"),
                }
            }
            if refused == batch.len() {
                break;
            }
        }
        (acked, conflicts)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: ANYTIME_TEST_PG_URL, then -- --ignored (cargo xtask test does both when it is set)"]
    async fn ledger_two_nodes_spending_one_wallet_never_overspend_nor_write_twice() {
        Server::connect("race")
            .await
            .run(|server| async move {
                let store = Arc::new(server.fresh().await);
                let open = |id, kind, owner| Command::Open(Account::new(id, Currency::USD, kind, owner));
                let setup = [
                    open(FUNDING, AccountKind::Funding, 0),
                    open(WALLET, AccountKind::Wallet, 1),
                    open(SHARED, AccountKind::Wallet, 2),
                    open(sink(0), AccountKind::Wallet, 3),
                    open(sink(1), AccountKind::Wallet, 4),
                ];
                let mut ledger = Ledger::new();
                post(&mut ledger, &*store, 1, &setup).await.expect("commit");
                let fund = [transfer(u128::MAX, FUNDING, WALLET, FUNDED, None)];
                post(&mut ledger, &*store, 2, &fund).await.expect("commit");

                let clock = Arc::new(AtomicU64::new(10));
                let nodes: Vec<_> = (0..2).map(|n| tokio::spawn(node(store.clone(), clock.clone(), n))).collect();
                let mut acked = Acked::new();
                let mut conflicts = 0;
                for handle in nodes {
                    let (seen, lost) = handle.await.expect("node");
                    conflicts += lost;
                    for (id, first) in seen {
                        if let Some(other) = acked.insert(id, first) {
                            assert_eq!(other, first, "both nodes acknowledged transfer {id} as the same one");
                        }
                    }
                }
                eprintln!(
                    "{} transfers acknowledged, {conflicts} commits lost a race and were posted again",
                    acked.len()
                );

                // The wallet never went below zero: it only paid out after being funded once, and
                // it paid out exactly what was acknowledged.
                let wallet = store.load(&[WALLET], &[]).await.expect("load").accounts.remove(0);
                let paid: u128 = acked.values().map(|(amount, _)| amount).sum();
                assert_eq!(wallet.credits_posted, FUNDED);
                assert_eq!(wallet.debits_posted, paid);
                assert!(wallet.debits_posted + wallet.debits_pending <= wallet.credits_posted);
                assert!(wallet.available() < OWN, "both nodes went on until it was (nearly) empty");
                for (_, t) in store.totals().await.expect("totals") {
                    assert_eq!((t.debits_posted, t.debits_pending), (t.credits_posted, t.credits_pending));
                }
                // Every acknowledged transfer is stored exactly once, and nothing else was.
                let mut history = Vec::new();
                let mut before = None;
                loop {
                    let page = store.transfers_of(WALLET, before, 64).await.expect("history");
                    let Some(last) = page.last() else { break };
                    before = Some((last.timestamp_ms, last.id));
                    history.extend(page);
                }
                let mut stored = Acked::new();
                for t in history.iter().filter(|t| t.debit == WALLET) {
                    assert!(stored.insert(t.id.0, (t.amount, t.timestamp_ms)).is_none(), "{:?} listed twice", t.id);
                }
                assert_eq!(stored, acked);
                let ids: Vec<TransferId> = acked.keys().map(|id| TransferId(*id)).collect();
                assert_eq!(store.load(&[], &ids).await.expect("load").transfers.len(), acked.len());
            })
            .await;
    }

    /// The attachment index shares this test server helper too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: ANYTIME_TEST_PG_URL, then -- --ignored (cargo xtask test does both when it is set)"]
    async fn blob_index_passes_the_blob_index_conformance_cases() {
        Server::connect("blobs")
            .await
            .run(|server| async move {
                anytime_media::conformance::run_index(|| {
                    let server = server.clone();
                    async move { server.fresh().await }
                })
                .await;
            })
            .await;
    }

    /// The wallet's own store (PINs, red envelopes) shares this test server helper.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: ANYTIME_TEST_PG_URL, then -- --ignored (cargo xtask test does both when it is set)"]
    async fn wallet_store_passes_the_wallet_store_conformance_cases() {
        Server::connect("wallet")
            .await
            .run(|server| async move {
                anytime_wallet::conformance::run_all(|| {
                    let server = server.clone();
                    async move { server.fresh().await }
                })
                .await;
            })
            .await;
    }
}
