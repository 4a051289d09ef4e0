-- A reader's verdict on one AI finding of a study (the trust loop): agree, disagree or not
-- assessable, optionally the label they would have given and a comment. One row per study,
-- model, label and reader, editable until the study is marked read. Keyed by names, not by the
-- findings' row ids (a new triage replaces those); `result_at_ms` says which result was judged.
CREATE TABLE feedback (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id        BIGINT NOT NULL REFERENCES studies (id),
    model           TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    label           TEXT NOT NULL,
    -- What the model said of the finding when it was judged.
    probability     REAL NOT NULL,
    positive        BIGINT NOT NULL,
    -- 'agree', 'disagree', 'not_assessable'.
    verdict         TEXT NOT NULL,
    corrected_label TEXT,
    -- The reader's own words: kept here only (never in the audit trail, the log or an export).
    comment         TEXT,
    reader          TEXT NOT NULL,
    result_at_ms    BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);
CREATE UNIQUE INDEX feedback_one_per_reader ON feedback (study_id, model, label, reader);
CREATE INDEX feedback_model ON feedback (model, model_version);
