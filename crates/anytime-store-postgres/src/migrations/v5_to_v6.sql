-- Attachments (anytime-media): the records of sealed blobs; the bytes live in the blob store.
CREATE TABLE blobs (
    id              BYTEA  PRIMARY KEY,
    owner           BIGINT NOT NULL,
    owner_device    BIGINT NOT NULL,
    conv            BIGINT NOT NULL,
    size            BIGINT NOT NULL,
    received        BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    completed_at_ms BIGINT
);
CREATE INDEX blobs_by_owner ON blobs (owner);
CREATE INDEX blobs_uploading ON blobs (created_at_ms) WHERE completed_at_ms IS NULL;
CREATE INDEX blobs_completed ON blobs (completed_at_ms) WHERE completed_at_ms IS NOT NULL;
CREATE TABLE blob_recipients (
    blob   BYTEA  NOT NULL,
    device BIGINT NOT NULL,
    PRIMARY KEY (blob, device)
);
