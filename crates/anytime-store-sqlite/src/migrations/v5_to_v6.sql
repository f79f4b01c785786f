-- Attachments (anytime-media): sealed blobs the server keeps without reading them. The bytes
-- live in the blob store (files beside this database by default); these rows say whose they are,
-- which conversation may fetch them, how far the upload got and who still has to fetch them.
CREATE TABLE blobs (
    id              BLOB    PRIMARY KEY,
    owner           INTEGER NOT NULL,
    owner_device    INTEGER NOT NULL,
    conv            INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    received        INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    completed_at_ms INTEGER
) WITHOUT ROWID;
-- The quota sums an owner's blobs.
CREATE INDEX blobs_by_owner ON blobs (owner);
-- Collection: abandoned uploads by age, complete blobs by completion.
CREATE INDEX blobs_uploading ON blobs (created_at_ms) WHERE completed_at_ms IS NULL;
CREATE INDEX blobs_completed ON blobs (completed_at_ms) WHERE completed_at_ms IS NOT NULL;
-- Devices a complete blob waits for; a row goes when its device fetched the blob.
CREATE TABLE blob_recipients (
    blob   BLOB    NOT NULL,
    device INTEGER NOT NULL,
    PRIMARY KEY (blob, device)
) WITHOUT ROWID;
