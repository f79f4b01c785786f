//! Durable wallet-ledger transfers per second, side by side in one run (issue 11).
//!
//! - A, `sqlite-ledger`: the Anytime ledger on `SqliteStore` (a real file in a temporary
//!   directory; group commit, `synchronous=FULL`);
//! - B, `pg-ledger`: the Anytime ledger on `PgStore` (a fresh database per round, dropped after);
//! - C, `pg-sql`: the usual hand-built wallet on the same PostgreSQL: one SQL transaction per
//!   transfer (`SELECT … FOR UPDATE` of both accounts in id order, balance check, two `UPDATE`s,
//!   one `INSERT`, `COMMIT`) from a pool the size of the server's `PgStore` pool.
//!
//! In A and B, `--clients` tasks each submit one transfer at a time (unique id, random pair of
//! distinct pre-funded wallets, 1–100 cents) to one writer task shaped like the server's
//! (`anytime-server-core/src/wallet/writer.rs`): it drains every waiting job into one batch of at
//! most `LEDGER_BATCH_COMMANDS_MAX` commands, prefetches, posts, commits once and then answers
//! each job. In C the same clients run their SQL transactions directly. Only transfers whose
//! commit returned are counted; the rate is that count over the time from start until the last
//! client's last answer. Every round starts on a fresh store and ends with checks that the
//! ledger balances (`totals()`), that the wallets moved exactly what was acknowledged and that
//! every acknowledged transfer is stored. PostgreSQL is checkpointed after setup, before each
//! window. Each round prints CPU over its window (this process, PostgreSQL's processes, the whole
//! machine), bytes written to storage, and for A and B where the writer spent its time.
//!
//! ```sh
//! ANYTIME_BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench -p anytime-server --bench ledger_throughput -- --rounds 5
//! ```
//!
//! Options (`--name value` or `--name=value`, or the environment variable in brackets):
//! `--clients` (ANYTIME_BENCH_CLIENTS, 256), `--accounts` (ANYTIME_BENCH_ACCOUNTS, 10000),
//! `--secs` per round and system (ANYTIME_BENCH_SECS, 10), `--rounds` (ANYTIME_BENCH_ROUNDS, 3),
//! `--systems` (ANYTIME_BENCH_SYSTEMS, `sqlite,pg,sql`), `--pg-connections`
//! (ANYTIME_BENCH_PG_CONNECTIONS, 16: the server's `POSTGRES_CONNECTIONS`), `--dir` for the
//! SQLite file (ANYTIME_BENCH_DIR, the system's temporary directory). Without
//! ANYTIME_BENCH_PG_URL, B and C are skipped with a message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use anytime_ledger::{
    Account, AccountId, AccountKind, Command, CommitError, Currency, Ledger, LedgerStore, Posted, TransferError,
    TransferId,
};
use anytime_proto::limits::{COMMIT_ATTEMPTS_MAX, LEDGER_BATCH_COMMANDS_MAX, LEDGER_QUEUE_JOBS_MAX};
use tokio::sync::{mpsc, oneshot};

/// What each wallet is funded with before a round, cents: no transfer is refused for funds.
const FUNDED: u128 = 1_000_000_000;
/// Transfers move 1..=AMOUNT_MAX cents.
const AMOUNT_MAX: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    SqliteLedger,
    PgLedger,
    PgSql,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::SqliteLedger => "A sqlite-ledger",
            System::PgLedger => "B pg-ledger",
            System::PgSql => "C pg-sql",
        }
    }

    fn key(self) -> &'static str {
        match self {
            System::SqliteLedger => "sqlite",
            System::PgLedger => "pg",
            System::PgSql => "sql",
        }
    }
}

struct Config {
    clients: u64,
    accounts: u64,
    secs: f64,
    rounds: usize,
    systems: Vec<System>,
    pg_url: Option<String>,
    pg_connections: usize,
    dir: Option<PathBuf>,
}

fn config() -> Result<Config> {
    let mut given: HashMap<String, String> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // `cargo bench` passes `--bench` to every bench target.
        if arg == "--bench" {
            continue;
        }
        let Some(option) = arg.strip_prefix("--") else {
            bail!("unexpected argument {arg:?} (the options are at the top of benches/ledger_throughput.rs)");
        };
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (option.to_string(), args.next().with_context(|| format!("--{option} needs a value"))?),
        };
        given.insert(name, value);
    }
    let value = |name: &str, env: &str, default: &str| -> String {
        given.get(name).cloned().or_else(|| std::env::var(env).ok()).unwrap_or_else(|| default.to_string())
    };
    let number = |name: &str, env: &str, default: &str| -> Result<f64> {
        let text = value(name, env, default);
        text.replace('_', "").parse().with_context(|| format!("--{name} {text:?} is not a number"))
    };
    let mut systems = Vec::new();
    for key in value("systems", "ANYTIME_BENCH_SYSTEMS", "sqlite,pg,sql").split(',') {
        let system = [System::SqliteLedger, System::PgLedger, System::PgSql]
            .into_iter()
            .find(|s| s.key() == key.trim())
            .with_context(|| format!("unknown system {key:?} (sqlite, pg, sql)"))?;
        systems.push(system);
    }
    let known = ["clients", "accounts", "secs", "rounds", "systems", "pg-connections", "dir"];
    if let Some(unknown) = given.keys().find(|k| !known.contains(&k.as_str())) {
        bail!("unknown option --{unknown} (known: {})", known.join(", "));
    }
    let config = Config {
        clients: number("clients", "ANYTIME_BENCH_CLIENTS", "256")? as u64,
        accounts: number("accounts", "ANYTIME_BENCH_ACCOUNTS", "10000")? as u64,
        secs: number("secs", "ANYTIME_BENCH_SECS", "10")?,
        rounds: number("rounds", "ANYTIME_BENCH_ROUNDS", "3")? as usize,
        systems,
        pg_url: std::env::var("ANYTIME_BENCH_PG_URL").ok().filter(|u| !u.is_empty()),
        pg_connections: number("pg-connections", "ANYTIME_BENCH_PG_CONNECTIONS", "16")? as usize,
        dir: given.get("dir").cloned().or_else(|| std::env::var("ANYTIME_BENCH_DIR").ok()).map(PathBuf::from),
    };
    ensure!(config.clients >= 1 && config.accounts >= 2 && config.rounds >= 1 && config.secs > 0.0, "nothing to run");
    ensure!(config.clients < 1 << 20, "at most 2^20 clients (transfer ids of the SQL baseline are client << 40 | n)");
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// Load: the same pairs for every system

/// splitmix64: the same seed gives every system the same sequence of pairs and amounts.
struct Rng(u64);

impl Rng {
    fn new(round: usize, client: u64) -> Rng {
        Rng(0x9e37_79b9_7f4a_7c15 ^ ((round as u64) << 32) ^ client)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Two distinct wallets (owners 1..=accounts) and an amount in cents.
    fn transfer(&mut self, accounts: u64) -> (u64, u64, u64) {
        let debit = 1 + self.next() % accounts;
        let credit = 1 + (debit + self.next() % (accounts - 1)) % accounts;
        (debit, credit, 1 + self.next() % AMOUNT_MAX)
    }
}

/// What the clients of one round saw answered.
#[derive(Default)]
struct Tally {
    acked: u64,
    amount: u128,
    refused: u64,
    /// Transactions the SQL baseline ran again after a deadlock or serialization failure.
    retries: u64,
    /// Acknowledged ledger transfer ids, to check afterwards that each is stored.
    ids: Vec<TransferId>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.acked += other.acked;
        self.amount += other.amount;
        self.refused += other.refused;
        self.retries += other.retries;
        self.ids.extend(other.ids);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------------------------
// CPU over the measured window: this process, PostgreSQL's processes, the whole machine

#[derive(Clone, Copy)]
struct Cpu {
    own: f64,
    postgres: f64,
    machine: f64,
    /// Bytes sent to storage (`write_bytes` of /proc/PID/io) by this process and by PostgreSQL's.
    own_written: f64,
    postgres_written: f64,
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, seconds.
fn process_cpu(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// `write_bytes` of a process (0 where it cannot be read).
fn written(io: &str) -> f64 {
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

fn cpu_now() -> Cpu {
    let own = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| process_cpu(&s)).unwrap_or(0.0);
    let own_written = written(&std::fs::read_to_string("/proc/self/io").unwrap_or_default());
    let (mut postgres, mut postgres_written) = (0.0, 0.0);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let path = entry.path();
            let is_pid =
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
            if !is_pid {
                continue;
            }
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.trim() == "postgres" {
                postgres +=
                    std::fs::read_to_string(path.join("stat")).ok().and_then(|s| process_cpu(&s)).unwrap_or(0.0);
                postgres_written += written(&std::fs::read_to_string(path.join("io")).unwrap_or_default());
            }
        }
    }
    // Busy time of all cores: everything but idle and iowait.
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
            let total: f64 = v.iter().take(8).sum();
            Some((total - v.get(3)? - v.get(4)?) / ticks_per_second())
        })
        .unwrap_or(0.0);
    Cpu { own, postgres, machine, own_written, postgres_written }
}

/// Cores used between two readings `secs` apart (and bytes written between them).
fn cores(before: Cpu, after: Cpu, secs: f64) -> Cpu {
    Cpu {
        own: (after.own - before.own) / secs,
        postgres: (after.postgres - before.postgres) / secs,
        machine: (after.machine - before.machine) / secs,
        own_written: after.own_written - before.own_written,
        postgres_written: after.postgres_written - before.postgres_written,
    }
}

// ---------------------------------------------------------------------------------------------
// A and B: the ledger behind one writer task, as in the server

type Results = Vec<Result<Posted, TransferError>>;

struct Job {
    commands: Vec<Command>,
    reply: oneshot::Sender<Result<Results, String>>,
}

/// Where the writer spent its time, and how much it committed.
#[derive(Default)]
struct WriterStats {
    commits: AtomicU64,
    committed: AtomicU64,
    conflicts: AtomicU64,
    load_ns: AtomicU64,
    post_ns: AtomicU64,
    commit_ns: AtomicU64,
    busy_ns: AtomicU64,
}

fn add_time(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Relaxed);
}

/// The shape of `anytime-server-core/src/wallet/writer.rs` (without the daily limits, which
/// these transfers would not use): drain, post, one commit, answer.
async fn writer(store: Arc<dyn LedgerStore>, mut jobs: mpsc::Receiver<Job>, stats: Arc<WriterStats>) {
    let mut ledger = Ledger::new();
    while let Some(first) = jobs.recv().await {
        let busy = Instant::now();
        let mut batch = vec![first];
        let mut commands = batch[0].commands.len();
        while commands < LEDGER_BATCH_COMMANDS_MAX {
            let Ok(job) = jobs.try_recv() else { break };
            commands += job.commands.len();
            batch.push(job);
        }
        let all: Vec<Command> = batch.iter().flat_map(|j| j.commands.iter().cloned()).collect();
        match post(&mut ledger, &*store, now_ms(), &all, &stats).await {
            Ok(results) => {
                stats.commits.fetch_add(1, Relaxed);
                stats.committed.fetch_add(all.len() as u64, Relaxed);
                let mut results = results.into_iter();
                for job in batch {
                    let mine: Results = results.by_ref().take(job.commands.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(error) => {
                for job in batch {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
        add_time(&stats.busy_ns, busy);
    }
}

/// Prefetches, posts and commits `commands`, again on fresh state after a lost race.
async fn post(
    ledger: &mut Ledger,
    store: &dyn LedgerStore,
    now: u64,
    commands: &[Command],
    stats: &WriterStats,
) -> Result<Results, String> {
    for _ in 0..COMMIT_ATTEMPTS_MAX {
        let started = Instant::now();
        while let Some(want) = ledger.wants(commands) {
            let found = store.load(&want.accounts, &want.transfers).await.map_err(|e| {
                ledger.reset();
                format!("ledger load failed: {e}")
            })?;
            ledger.loaded(&want, found);
        }
        add_time(&stats.load_ns, started);
        let started = Instant::now();
        let results = ledger.post_batch(now, commands);
        let changes = ledger.take_changes();
        add_time(&stats.post_ns, started);
        let started = Instant::now();
        let committed = store.commit(&changes).await;
        add_time(&stats.commit_ns, started);
        match committed {
            Ok(()) => return Ok(results),
            Err(CommitError::Conflict) => {
                stats.conflicts.fetch_add(1, Relaxed);
                ledger.reset();
            }
            Err(CommitError::Store(e)) => {
                ledger.reset();
                return Err(format!("ledger commit failed: {e}"));
            }
        }
    }
    Err("the ledger conflicted on every attempt".into())
}

fn wallet(owner: u64) -> AccountId {
    AccountId::of(AccountKind::Wallet, Currency::USD, owner)
}

fn funding() -> AccountId {
    AccountId::of(AccountKind::Funding, Currency::USD, 0)
}

/// A posted USD transfer (the conformance cases' helper).
fn transfer(id: u128, debit: AccountId, credit: AccountId, amount: u128) -> Command {
    anytime_ledger::conformance::transfer(id, debit, credit, amount, None)
}

/// Opens the funding account and the wallets and funds each wallet, in batches of the
/// writer's size (not measured).
async fn ledger_setup(store: &dyn LedgerStore, accounts: u64) -> Result<()> {
    let mut commands = vec![Command::Open(Account::new(funding(), Currency::USD, AccountKind::Funding, 0))];
    for owner in 1..=accounts {
        commands.push(Command::Open(Account::new(wallet(owner), Currency::USD, AccountKind::Wallet, owner)));
    }
    // Funding transfer ids have the top bit set: no client id has it.
    commands
        .extend((1..=accounts).map(|owner| transfer((1 << 127) | u128::from(owner), funding(), wallet(owner), FUNDED)));
    let mut ledger = Ledger::new();
    let stats = WriterStats::default();
    for batch in commands.chunks(LEDGER_BATCH_COMMANDS_MAX) {
        let results = post(&mut ledger, store, now_ms(), batch, &stats).await.map_err(anyhow::Error::msg)?;
        if let Some(refused) = results.iter().find_map(|r| r.as_ref().err()) {
            bail!("setup refused: {refused}");
        }
    }
    Ok(())
}

async fn ledger_client(
    jobs: mpsc::Sender<Job>,
    round: usize,
    client: u64,
    accounts: u64,
    end: Instant,
) -> Result<Tally> {
    let mut rng = Rng::new(round, client);
    let mut tally = Tally::default();
    let mut n: u128 = 0;
    while Instant::now() < end {
        let (debit, credit, amount) = rng.transfer(accounts);
        n += 1;
        let id = (u128::from(client + 1) << 64) | n;
        let (reply, answer) = oneshot::channel();
        let command = transfer(id, wallet(debit), wallet(credit), u128::from(amount));
        if jobs.send(Job { commands: vec![command], reply }).await.is_err() {
            bail!("the writer stopped");
        }
        let results = answer.await.context("the writer dropped a job")?.map_err(anyhow::Error::msg)?;
        match results.first() {
            Some(Ok(Posted::Transfer { duplicate: false, .. })) => {
                tally.acked += 1;
                tally.amount += u128::from(amount);
                tally.ids.push(TransferId(id));
            }
            _ => tally.refused += 1,
        }
    }
    Ok(tally)
}

/// Checks that the store balances, that the wallets moved exactly what was acknowledged and
/// that every acknowledged transfer is stored.
async fn ledger_verify(store: &dyn LedgerStore, accounts: u64, tally: &Tally) -> Result<()> {
    let totals = store.totals().await?;
    ensure!(!totals.is_empty(), "no totals");
    for (currency, t) in &totals {
        ensure!(
            t.debits_posted == t.credits_posted,
            "{currency}: posted debits {} ≠ credits {}",
            t.debits_posted,
            t.credits_posted
        );
        ensure!(t.debits_pending == t.credits_pending, "{currency}: pending debits ≠ credits");
    }
    let ids: Vec<AccountId> = (1..=accounts).map(wallet).collect();
    let (mut debits, mut credits) = (0u128, 0u128);
    let mut found = 0;
    for chunk in ids.chunks(LEDGER_BATCH_COMMANDS_MAX) {
        for a in store.load(chunk, &[]).await?.accounts {
            ensure!(a.debits_posted + a.debits_pending <= a.credits_posted, "{:?} overspent", a.id);
            debits += a.debits_posted;
            credits += a.credits_posted;
            found += 1;
        }
    }
    ensure!(found == accounts, "{found} of {accounts} wallets stored");
    ensure!(debits == tally.amount, "wallets were debited {debits}, the clients were told {}", tally.amount);
    ensure!(credits == tally.amount + FUNDED * u128::from(accounts), "wallets were credited {credits}");
    let mut stored = 0;
    for chunk in tally.ids.chunks(LEDGER_BATCH_COMMANDS_MAX) {
        stored += store.load(&[], chunk).await?.transfers.len();
    }
    ensure!(stored == tally.ids.len(), "{stored} of {} acknowledged transfers stored", tally.ids.len());
    Ok(())
}

/// `pg`: the server to checkpoint before the window (PostgreSQL systems), so that no round pays
/// for writing back what setup or an earlier round left in PostgreSQL's buffers.
async fn ledger_round(
    store: Arc<dyn LedgerStore>,
    config: &Config,
    round: usize,
    pg: Option<&PgServer>,
) -> Result<Outcome> {
    ledger_setup(&*store, config.accounts).await.context("setup")?;
    let (jobs, queue) = mpsc::channel(LEDGER_QUEUE_JOBS_MAX);
    let stats = Arc::new(WriterStats::default());
    let writer_task = tokio::spawn(writer(store.clone(), queue, stats.clone()));
    if let Some(pg) = pg {
        pg.checkpoint().await?;
    }
    let cpu = cpu_now();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(config.secs);
    let clients: Vec<_> = (0..config.clients)
        .map(|c| tokio::spawn(ledger_client(jobs.clone(), round, c, config.accounts, end)))
        .collect();
    drop(jobs);
    let mut tally = Tally::default();
    let mut failed = None;
    for client in clients {
        match client.await {
            Ok(Ok(t)) => tally.add(t),
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(anyhow::anyhow!("a client panicked: {e}")),
        }
    }
    let elapsed = started.elapsed();
    let cpu = cores(cpu, cpu_now(), elapsed.as_secs_f64());
    writer_task.await.context("the writer panicked")?;
    if let Some(e) = failed {
        return Err(e);
    }
    ledger_verify(&*store, config.accounts, &tally).await.context("verification")?;
    let busy = stats.busy_ns.load(Relaxed) as f64;
    let share = |ns: &AtomicU64| ns.load(Relaxed) as f64 / elapsed.as_nanos() as f64;
    let writer = WriterShares {
        batch: stats.committed.load(Relaxed) as f64 / stats.commits.load(Relaxed).max(1) as f64,
        commits_per_sec: stats.commits.load(Relaxed) as f64 / elapsed.as_secs_f64(),
        conflicts: stats.conflicts.load(Relaxed),
        load: share(&stats.load_ns),
        post: share(&stats.post_ns),
        commit: share(&stats.commit_ns),
        idle: 1.0 - busy / elapsed.as_nanos() as f64,
    };
    Ok(Outcome { tally, elapsed, cpu, writer: Some(writer) })
}

// ---------------------------------------------------------------------------------------------
// C: one SQL transaction per transfer

const BASELINE_SCHEMA: &str = "
CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0));
CREATE TABLE transfers (id BIGINT PRIMARY KEY, debit BIGINT NOT NULL, credit BIGINT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0), created_at_ms BIGINT NOT NULL);
CREATE INDEX transfers_by_debit ON transfers (debit, created_at_ms, id);
CREATE INDEX transfers_by_credit ON transfers (credit, created_at_ms, id);";

fn retryable(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    error.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

enum SqlOutcome {
    Committed,
    Refused,
    Retry,
}

/// BEGIN; SELECT … FOR UPDATE (both rows, id order); check; UPDATE; UPDATE; INSERT; COMMIT.
async fn sql_transfer(
    pool: &deadpool_postgres::Pool,
    id: i64,
    debit: i64,
    credit: i64,
    amount: i64,
) -> Result<SqlOutcome> {
    let mut client = pool.get().await?;
    let attempt = async {
        let tx = client.transaction().await?;
        let lock =
            tx.prepare_cached("SELECT id, balance FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE").await?;
        let rows = tx.query(&lock, &[&vec![debit.min(credit), debit.max(credit)]]).await?;
        let balance = rows.iter().find(|r| r.get::<_, i64>(0) == debit).map(|r| r.get::<_, i64>(1));
        if rows.len() != 2 || balance.is_none_or(|b| b < amount) {
            tx.rollback().await?;
            return Ok::<_, tokio_postgres::Error>(false);
        }
        let take = tx.prepare_cached("UPDATE accounts SET balance = balance - $2 WHERE id = $1").await?;
        tx.execute(&take, &[&debit, &amount]).await?;
        let give = tx.prepare_cached("UPDATE accounts SET balance = balance + $2 WHERE id = $1").await?;
        tx.execute(&give, &[&credit, &amount]).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO transfers (id, debit, credit, amount, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        tx.execute(&insert, &[&id, &debit, &credit, &amount, &(now_ms() as i64)]).await?;
        tx.commit().await?;
        Ok(true)
    };
    match attempt.await {
        Ok(true) => Ok(SqlOutcome::Committed),
        Ok(false) => Ok(SqlOutcome::Refused),
        Err(e) if retryable(&e) => Ok(SqlOutcome::Retry),
        Err(e) => Err(e.into()),
    }
}

async fn sql_client(
    pool: deadpool_postgres::Pool,
    round: usize,
    client: u64,
    accounts: u64,
    end: Instant,
) -> Result<Tally> {
    let mut rng = Rng::new(round, client);
    let mut tally = Tally::default();
    let mut n: i64 = 0;
    while Instant::now() < end {
        let (debit, credit, amount) = rng.transfer(accounts);
        n += 1;
        let id = ((client as i64) << 40) | n;
        loop {
            match sql_transfer(&pool, id, debit as i64, credit as i64, amount as i64).await? {
                SqlOutcome::Committed => {
                    tally.acked += 1;
                    tally.amount += u128::from(amount);
                }
                SqlOutcome::Refused => tally.refused += 1,
                SqlOutcome::Retry => {
                    tally.retries += 1;
                    continue;
                }
            }
            break;
        }
    }
    Ok(tally)
}

async fn sql_round(url: &str, config: &Config, round: usize, pg: &PgServer) -> Result<Outcome> {
    let database: tokio_postgres::Config = url.parse()?;
    let manager = deadpool_postgres::Manager::from_config(
        database,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    let pool = deadpool_postgres::Pool::builder(manager).max_size(config.pg_connections).build()?;
    {
        let c = pool.get().await?;
        c.batch_execute(BASELINE_SCHEMA).await?;
        let funded = i64::try_from(FUNDED)?;
        c.execute(
            "INSERT INTO accounts SELECT g, $1 FROM generate_series(1, $2::bigint) g",
            &[&funded, &(config.accounts as i64)],
        )
        .await?;
    }
    pg.checkpoint().await?;
    let cpu = cpu_now();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(config.secs);
    let clients: Vec<_> =
        (0..config.clients).map(|c| tokio::spawn(sql_client(pool.clone(), round, c, config.accounts, end))).collect();
    let mut tally = Tally::default();
    let mut failed = None;
    for client in clients {
        match client.await {
            Ok(Ok(t)) => tally.add(t),
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(anyhow::anyhow!("a client panicked: {e}")),
        }
    }
    let elapsed = started.elapsed();
    let cpu = cores(cpu, cpu_now(), elapsed.as_secs_f64());
    if let Some(e) = failed {
        return Err(e);
    }
    // The same checks as for the ledger: money is conserved, and exactly what was acknowledged
    // is stored.
    let c = pool.get().await?;
    let row = c
        .query_one(
            "SELECT (SELECT SUM(balance)::text FROM accounts), (SELECT MIN(balance) FROM accounts),
                    (SELECT COUNT(*) FROM transfers), (SELECT COALESCE(SUM(amount), 0)::text FROM transfers)",
            &[],
        )
        .await?;
    let total: u128 = row.get::<_, String>(0).parse()?;
    let (min, count, moved): (i64, i64, String) = (row.get(1), row.get(2), row.get(3));
    ensure!(total == FUNDED * u128::from(config.accounts), "the balances add up to {total}");
    ensure!(min >= 0, "a balance went below zero");
    ensure!(count as u64 == tally.acked, "{count} transfers stored, {} acknowledged", tally.acked);
    ensure!(moved.parse::<u128>()? == tally.amount, "transfers moved {moved}, the clients were told {}", tally.amount);
    Ok(Outcome { tally, elapsed, cpu, writer: None })
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: one database per round and system

struct PgServer {
    admin: tokio_postgres::Client,
    base: String,
}

impl PgServer {
    async fn connect(url: &str) -> Result<PgServer> {
        let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        tokio::spawn(connection);
        let base = url.rsplit_once('/').map_or(url, |(head, _)| head).to_string();
        Ok(PgServer { admin, base })
    }

    async fn create(&self, name: &str) -> Result<String> {
        self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        self.admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        Ok(format!("{}/{name}", self.base))
    }

    async fn checkpoint(&self) -> Result<()> {
        self.admin.batch_execute("CHECKPOINT").await.context("CHECKPOINT (needs a superuser or pg_checkpoint)")
    }

    async fn drop_database(&self, name: &str) {
        if let Err(e) = self.admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await {
            eprintln!("could not drop database {name}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rounds and report

struct WriterShares {
    batch: f64,
    commits_per_sec: f64,
    conflicts: u64,
    load: f64,
    post: f64,
    commit: f64,
    idle: f64,
}

struct Outcome {
    tally: Tally,
    elapsed: Duration,
    cpu: Cpu,
    writer: Option<WriterShares>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.tally.acked as f64 / self.elapsed.as_secs_f64()
    }
}

async fn run_one(system: System, config: &Config, pg: Option<&PgServer>, round: usize) -> Result<Outcome> {
    match system {
        System::SqliteLedger => {
            let dir = match &config.dir {
                Some(dir) => tempfile::tempdir_in(dir)?,
                None => tempfile::tempdir()?,
            };
            let store = anytime_store_sqlite::SqliteStore::open(&dir.path().join("ledger.sqlite3"), Arc::default())?;
            let outcome = ledger_round(Arc::new(store), config, round, None).await;
            drop(dir);
            outcome
        }
        System::PgLedger | System::PgSql => {
            let pg = pg.context("no PostgreSQL")?;
            let name = format!("anytime_bench_{}_{}_{}", std::process::id(), round, system.key());
            let url = pg.create(&name).await?;
            let outcome = if system == System::PgLedger {
                match anytime_store_postgres::PgStore::open(&url, config.pg_connections, Arc::default()).await {
                    Ok(store) => ledger_round(Arc::new(store), config, round, Some(pg)).await,
                    Err(e) => Err(e.into()),
                }
            } else {
                sql_round(&url, config, round, pg).await
            };
            pg.drop_database(&name).await;
            outcome
        }
    }
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

fn main() -> Result<()> {
    let mut config = config()?;
    if config.pg_url.is_none() {
        let dropped: Vec<&str> =
            config.systems.iter().filter(|s| **s != System::SqliteLedger).map(|s| s.name()).collect();
        if !dropped.is_empty() {
            println!(
                "ANYTIME_BENCH_PG_URL is not set: skipping {} (e.g. ANYTIME_BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres)",
                dropped.join(" and ")
            );
        }
        config.systems.retain(|s| *s == System::SqliteLedger);
    }
    ensure!(!config.systems.is_empty(), "no system left to measure");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> Result<()> {
    let pg = match &config.pg_url {
        Some(url) => Some(PgServer::connect(url).await?),
        None => None,
    };
    println!(
        "durable ledger transfers/s: {} clients, {} wallets, {} s per round and system, {} rounds, batch ≤ {}, PostgreSQL pool {}; {} cores",
        config.clients,
        config.accounts,
        config.secs,
        config.rounds,
        LEDGER_BATCH_COMMANDS_MAX,
        config.pg_connections,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); config.systems.len()];
    let mut own_cpu: Vec<Vec<f64>> = vec![Vec::new(); config.systems.len()];
    let mut pg_cpu: Vec<Vec<f64>> = vec![Vec::new(); config.systems.len()];
    let mut written: Vec<Vec<f64>> = vec![Vec::new(); config.systems.len()];
    for round in 0..config.rounds {
        // Rotate the order (ABC, BCA, CAB, …) so no system always runs first.
        let n = config.systems.len();
        for k in 0..n {
            let index = (k + round) % n;
            let system = config.systems[index];
            let outcome = run_one(system, &config, pg.as_ref(), round)
                .await
                .with_context(|| format!("round {}: {}", round + 1, system.name()))?;
            let t = &outcome.tally;
            let secs = outcome.elapsed.as_secs_f64();
            let per_transfer = |bytes: f64| bytes / 1024.0 / t.acked.max(1) as f64;
            let mut line = format!(
                "round {} {:<16} {:>9} transfers/s ({} in {:.2} s; refused {}, retried {})\n        cpu: bench {:.2}, postgres {:.2}, whole machine {:.2} cores; written to storage: bench {:.0} MB/s ({:.1} KiB/transfer), postgres {:.0} MB/s ({:.1} KiB/transfer)",
                round + 1,
                system.name(),
                thousands(outcome.rate()),
                thousands(t.acked as f64),
                secs,
                t.refused,
                t.retries,
                outcome.cpu.own,
                outcome.cpu.postgres,
                outcome.cpu.machine,
                outcome.cpu.own_written / secs / 1e6,
                per_transfer(outcome.cpu.own_written),
                outcome.cpu.postgres_written / secs / 1e6,
                per_transfer(outcome.cpu.postgres_written),
            );
            if let Some(w) = &outcome.writer {
                line += &format!(
                    "\n        writer: {:.1} transfers/commit, {} commits/s, {} conflicts; time in load {:.0}%, post {:.0}%, commit {:.0}%, waiting {:.0}%",
                    w.batch,
                    thousands(w.commits_per_sec),
                    w.conflicts,
                    w.load * 100.0,
                    w.post * 100.0,
                    w.commit * 100.0,
                    w.idle * 100.0
                );
            }
            println!("{line}   [verified]");
            rates[index].push(outcome.rate());
            own_cpu[index].push(outcome.cpu.own);
            pg_cpu[index].push(outcome.cpu.postgres);
            written[index].push(per_transfer(outcome.cpu.own_written + outcome.cpu.postgres_written));
        }
    }
    println!();
    println!(
        "| system | transfers/s per round | median [min–max] | bench CPU, cores | postgres CPU, cores | KiB written per transfer |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (i, system) in config.systems.iter().enumerate() {
        let per_round: Vec<String> = rates[i].iter().map(|r| thousands(*r)).collect();
        let (lo, hi) = min_max(&rates[i]);
        let (clo, chi) = min_max(&own_cpu[i]);
        let (plo, phi) = min_max(&pg_cpu[i]);
        let (wlo, whi) = min_max(&written[i]);
        println!(
            "| {} | {} | {} [{}–{}] | {clo:.2}–{chi:.2} | {plo:.2}–{phi:.2} | {wlo:.1}–{whi:.1} |",
            system.name(),
            per_round.join(" · "),
            thousands(median(&rates[i])),
            thousands(lo),
            thousands(hi)
        );
    }
    println!();
    for (i, a) in config.systems.iter().enumerate() {
        for (j, b) in config.systems.iter().enumerate().skip(i + 1) {
            println!("ratio of medians {} / {}: {:.2}", a.name(), b.name(), median(&rates[i]) / median(&rates[j]));
        }
    }
    Ok(())
}
