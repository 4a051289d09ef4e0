-- De-identification: the re-identification map (originals sealed with AES-256-GCM, keyed by the
-- de-identified UIDs); per instance, how it was de-identified, why it is not sent to the AI stage
-- (burned-in annotation), and the audit entry that records its de-identification (NULL until the
-- audit sweep has appended it). Every other table holds de-identified UIDs only.

CREATE TABLE reid_map (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_instance_uid  TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    nonce               TEXT NOT NULL,
    sealed              TEXT NOT NULL,
    created_at_ms       BIGINT NOT NULL
);
CREATE INDEX reid_map_study ON reid_map (study_instance_uid);

ALTER TABLE instances ADD COLUMN excluded_reason TEXT;
ALTER TABLE instances ADD COLUMN deid_method TEXT;
ALTER TABLE instances ADD COLUMN audit_seq BIGINT;
CREATE INDEX instances_unaudited ON instances (id) WHERE audit_seq IS NULL;
