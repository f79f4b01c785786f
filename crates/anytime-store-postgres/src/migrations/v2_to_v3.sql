-- Schema version 3: the wallet's double-entry ledger (crates/anytime-ledger; the same model as the
-- SQLite schema v4). Ids are 16-byte big-endian u128s (BYTEA compares bytewise, so rows sort in id
-- order). Amounts are minor units in NUMERIC(39, 0), which holds every u128 exactly (u128::MAX has
-- 39 digits): nothing the ledger can produce is refused or rounded. Times are milliseconds since
-- the epoch in BIGINT (the store refuses a time beyond i64::MAX rather than wrap it); owner and
-- version are u64s as BIGINT (two's complement, as every 64-bit id of this schema).
CREATE DOMAIN ledger_amount AS NUMERIC(39, 0)
    CHECK (VALUE >= 0 AND VALUE <= 340282366920938463463374607431768211455);
CREATE TABLE ledger_accounts (
    id BYTEA PRIMARY KEY CHECK (length(id) = 16),
    currency TEXT NOT NULL,
    kind INTEGER NOT NULL,
    owner BIGINT NOT NULL,
    debits_pending ledger_amount NOT NULL,
    debits_posted ledger_amount NOT NULL,
    credits_pending ledger_amount NOT NULL,
    credits_posted ledger_amount NOT NULL,
    version BIGINT NOT NULL);
CREATE TABLE ledger_transfers (
    id BYTEA PRIMARY KEY CHECK (length(id) = 16),
    debit BYTEA NOT NULL,
    credit BYTEA NOT NULL,
    amount ledger_amount NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('posted', 'pending', 'post', 'void')),
    expires_at_ms BIGINT,         -- pending only
    pending_id BYTEA,             -- post and void only
    code INTEGER NOT NULL,
    reference BYTEA NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    hold TEXT CHECK (hold IN ('open', 'posted', 'voided', 'expired')), -- pending only
    CHECK ((kind = 'pending') = (expires_at_ms IS NOT NULL)),
    CHECK ((kind = 'pending') = (hold IS NOT NULL)),
    CHECK ((kind IN ('post', 'void')) = (pending_id IS NOT NULL)));
-- An account's history, newest first: one backward range scan per side, merged.
CREATE INDEX ledger_transfers_by_debit ON ledger_transfers (debit, timestamp_ms, id);
CREATE INDEX ledger_transfers_by_credit ON ledger_transfers (credit, timestamp_ms, id);
-- Open holds by expiry: only open holds are in it, so it stays as small as what is held now.
CREATE INDEX ledger_open_holds ON ledger_transfers (expires_at_ms, id) WHERE hold = 'open';
