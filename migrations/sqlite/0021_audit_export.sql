-- Issue 35: the IHE ATNA audit export's position in the audit trail. `seq` is the last entry
-- delivered to the audit repository (syslog); the export worker sends the entries after it,
-- in order, and moves it only after a message was written and the connection found still
-- open afterwards. One row: one export per database.
CREATE TABLE audit_export (
    id            INTEGER PRIMARY KEY,
    seq           BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
INSERT INTO audit_export (id, seq, updated_at_ms) VALUES (1, 0, 0);
