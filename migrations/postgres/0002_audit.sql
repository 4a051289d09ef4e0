-- Append-only audit trail, hash-chained with SHA-256: each entry carries the hash of the one
-- before it, and audit_head holds the newest sequence number and hash, so an altered, deleted or
-- truncated entry is detected by `triage-node audit verify`. Entries never hold patient data.

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    event      TEXT NOT NULL,
    subject    TEXT NOT NULL,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);

-- One row: serialises appends (its row lock) and anchors the end of the chain.
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
