-- Every on-call notification made (`results::notify`): one row per notice queued, made at a
-- study's publication (level 0) or by escalation (level 1, 2, ...: the next rule of a chain
-- nobody acknowledged in time). De-identified: ids, rule names, times; the acknowledgement
-- link's token is kept only as its SHA-256.
CREATE TABLE notifications (
    -- The notice's stable id (`tn-...`), as the receiver sees it.
    id                  TEXT PRIMARY KEY,
    study_id            BIGINT NOT NULL REFERENCES studies (id),
    -- The first notice's id: one acknowledgement stands for the whole chain.
    chain               TEXT NOT NULL,
    level               BIGINT NOT NULL,
    rule                TEXT NOT NULL,
    priority            TEXT NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    -- The study's last instance received before the triage that notified.
    last_instance_at_ms BIGINT,
    delivered_at_ms     BIGINT,
    -- When the chain escalates unless acknowledged (NULL: the rule does not escalate).
    escalate_at_ms      BIGINT,
    escalated_at_ms     BIGINT,
    ack_token_sha256    TEXT,
    acknowledged_at_ms  BIGINT,
    acknowledged_by     TEXT,
    -- A retraction withdrew the result: the chain no longer escalates.
    withdrawn_at_ms     BIGINT
);
CREATE INDEX notifications_study ON notifications (study_id, created_at_ms);
CREATE INDEX notifications_escalation ON notifications (escalate_at_ms);
CREATE UNIQUE INDEX notifications_token ON notifications (ack_token_sha256);
-- The worklist shows when the study's notification reached someone and when it was acknowledged.
ALTER TABLE worklist ADD COLUMN notified_at_ms BIGINT;
ALTER TABLE worklist ADD COLUMN acknowledged_at_ms BIGINT;
ALTER TABLE worklist ADD COLUMN acknowledged_by TEXT;
