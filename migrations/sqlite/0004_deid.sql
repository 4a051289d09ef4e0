-- De-identification: the re-identification map (originals sealed with AES-256-GCM, keyed by the
-- de-identified UIDs), and why an instance is not sent to the AI stage (burned-in annotation).
-- Every other table holds de-identified UIDs only.

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
