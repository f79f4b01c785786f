-- Schema version 4: the wallet's payment PINs (argon2id hashes) and their wrong-try counters.
CREATE TABLE wallet_pins (
    user_id BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until_ms BIGINT NOT NULL
);
