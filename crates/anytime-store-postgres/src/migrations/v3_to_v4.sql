-- Schema version 4: the wallet's payment PINs (argon2id hashes) and their wrong-try counters.
CREATE TABLE wallet_pins (
    user_id BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until_ms BIGINT NOT NULL
);
-- Red envelopes: the shares are fixed at creation (comma-separated minor units, in grab order).
CREATE TABLE wallet_envelopes (
    id BYTEA PRIMARY KEY,
    owner BIGINT NOT NULL,
    conv BIGINT NOT NULL,
    currency TEXT NOT NULL,
    total NUMERIC(39, 0) NOT NULL,
    shares TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX wallet_envelopes_due ON wallet_envelopes (expires_at_ms) WHERE status = 'open';
CREATE TABLE wallet_envelope_claims (
    envelope BYTEA NOT NULL REFERENCES wallet_envelopes (id),
    idx INTEGER NOT NULL,
    user_id BIGINT NOT NULL,
    amount NUMERIC(39, 0) NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (envelope, idx),
    UNIQUE (envelope, user_id)
);
-- Money requests (and the requests of split bills).
CREATE TABLE wallet_requests (
    id BYTEA PRIMARY KEY,
    requester BIGINT NOT NULL,
    payer BIGINT NOT NULL,
    conv BIGINT NOT NULL,
    currency TEXT NOT NULL,
    amount NUMERIC(39, 0) NOT NULL,
    split BYTEA,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    position BIGSERIAL
);
CREATE INDEX wallet_requests_by_split ON wallet_requests (split, position) WHERE split IS NOT NULL;
