-- Foundation schema: registered AEs, received studies and instances, pipeline jobs.
-- Times are milliseconds since the Unix epoch (BIGINT) on every engine.

CREATE TABLE ae_titles (
    ae_title       TEXT PRIMARY KEY,
    host           TEXT,
    port           BIGINT,
    role           TEXT NOT NULL,
    enabled        BIGINT NOT NULL DEFAULT 1,
    created_at_ms  BIGINT NOT NULL
);

CREATE TABLE studies (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    study_instance_uid   TEXT NOT NULL UNIQUE,
    state                TEXT NOT NULL,
    first_received_at_ms BIGINT NOT NULL,
    last_received_at_ms  BIGINT NOT NULL,
    instance_count       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX studies_state_last ON studies (state, last_received_at_ms);

CREATE TABLE instances (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_instance_uid    TEXT NOT NULL UNIQUE,
    sop_class_uid       TEXT NOT NULL,
    study_instance_uid  TEXT NOT NULL,
    -- NULL until the study tracker attaches the instance to its study (off the C-STORE path).
    study_id            BIGINT REFERENCES studies (id),
    series_instance_uid TEXT NOT NULL,
    modality            TEXT,
    transfer_syntax_uid TEXT NOT NULL,
    calling_ae_title    TEXT NOT NULL,
    path                TEXT NOT NULL,
    size_bytes          BIGINT NOT NULL,
    dataset_sha256      TEXT NOT NULL,
    received_at_ms      BIGINT NOT NULL
);
CREATE INDEX instances_study ON instances (study_id);
CREATE INDEX instances_unattached ON instances (study_instance_uid) WHERE study_id IS NULL;

CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    study_id       BIGINT NOT NULL REFERENCES studies (id),
    state          TEXT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state, kind);
