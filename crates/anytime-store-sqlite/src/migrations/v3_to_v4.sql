-- Schema version 4: the wallet's double-entry ledger (crates/anytime-ledger). Ids are 16-byte
-- big-endian u128s; amounts are minor units, checked into INTEGER range when written.
CREATE TABLE ledger_accounts (
    id BLOB PRIMARY KEY,
    currency TEXT NOT NULL,
    kind INTEGER NOT NULL,
    owner INTEGER NOT NULL,
    debits_pending INTEGER NOT NULL,
    debits_posted INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL,
    credits_posted INTEGER NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE ledger_transfers (
    id BLOB PRIMARY KEY,
    debit BLOB NOT NULL,
    credit BLOB NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    kind TEXT NOT NULL,          -- posted, pending, post, void
    expires_at_ms INTEGER,       -- pending only
    pending_id BLOB,             -- post and void only
    code INTEGER NOT NULL,
    reference BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    hold TEXT                    -- pending only: open, posted, voided, expired
) WITHOUT ROWID;
CREATE INDEX ledger_transfers_by_debit ON ledger_transfers(debit, timestamp_ms, id);
CREATE INDEX ledger_transfers_by_credit ON ledger_transfers(credit, timestamp_ms, id);
CREATE INDEX ledger_open_holds ON ledger_transfers(expires_at_ms) WHERE hold = 'open';
-- The wallet's payment PINs (argon2id hashes) and their wrong-try counters.
CREATE TABLE wallet_pins (
    user_id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL
);
-- Red envelopes: the shares are fixed at creation (comma-separated minor units, in grab order).
CREATE TABLE wallet_envelopes (
    id BLOB PRIMARY KEY,
    owner INTEGER NOT NULL,
    conv INTEGER NOT NULL,
    currency TEXT NOT NULL,
    total INTEGER NOT NULL,
    shares TEXT NOT NULL,
    share_count INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX wallet_envelopes_due ON wallet_envelopes(expires_at_ms) WHERE status = 'open';
CREATE TABLE wallet_envelope_claims (
    envelope BLOB NOT NULL,
    idx INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (envelope, idx),
    UNIQUE (envelope, user_id)
) WITHOUT ROWID;
-- Money requests (and the requests of split bills).
CREATE TABLE wallet_requests (
    id BLOB PRIMARY KEY,
    requester INTEGER NOT NULL,
    payer INTEGER NOT NULL,
    conv INTEGER NOT NULL,
    currency TEXT NOT NULL,
    amount INTEGER NOT NULL,
    split BLOB,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX wallet_requests_by_split ON wallet_requests(split, position) WHERE split IS NOT NULL;
