-- Storage Commitment (Push Model) of delivered objects: one row per (transaction, object).
-- `requested` when the N-ACTION is about to go out; `committed` or `failed` (with the PACS's
-- failure reason) when its N-EVENT-REPORT arrives; `refused` when the N-ACTION itself failed.

CREATE TABLE storage_commitments (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_uid   TEXT NOT NULL,
    outbox_id         BIGINT NOT NULL REFERENCES outbox (id),
    sop_instance_uid  TEXT NOT NULL,
    destination       TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT,
    requested_at_ms   BIGINT NOT NULL,
    reported_at_ms    BIGINT
);
CREATE INDEX storage_commitments_transaction ON storage_commitments (transaction_uid);
CREATE INDEX storage_commitments_outbox ON storage_commitments (outbox_id);
