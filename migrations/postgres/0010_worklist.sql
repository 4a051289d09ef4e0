-- Issue 14: the reading worklist. One row per triaged study, written in the transaction that
-- saves the study's results, so the page and the API sort and filter in SQL (an index on the
-- reading order) instead of aggregating every result per request. Row ids and de-identified
-- values only: the patient's name, ID and accession are re-identified per request from the
-- sealed map for authenticated users, never stored here.
CREATE TABLE worklist (
    study_id            BIGINT PRIMARY KEY REFERENCES studies (id),
    -- 'URGENT', 'POSITIVE', 'FAILED', 'NEGATIVE', 'NOT_APPLICABLE'; rank 0..4 in that order.
    priority            TEXT NOT NULL,
    priority_rank       BIGINT NOT NULL,
    -- The highest probability among positive findings (URGENT and POSITIVE), else NULL.
    score               DOUBLE PRECISION,
    -- The reading order within a rank: -score for URGENT and POSITIVE, 0 otherwise.
    sort_score          DOUBLE PRECISION NOT NULL,
    received_at_ms      BIGINT NOT NULL,
    result_at_ms        BIGINT NOT NULL,
    -- '|CR|DX|': the study's modalities, '|model|' names, '|label|' positive findings, for
    -- filters that match one delimited value.
    modalities          TEXT NOT NULL,
    models              TEXT NOT NULL,
    positive_labels     TEXT NOT NULL,
    demonstration       BIGINT NOT NULL,
    -- JSON: the findings (label, probability, tier, model, version) and failure reasons.
    findings            TEXT NOT NULL,
    reasons             TEXT NOT NULL,
    -- Set when a new analysis lowered the priority the worklist (and the RIS) had been given:
    -- the earlier priority, so the change is said, never silent.
    lowered_from        TEXT,
    -- 'unread', 'claimed' (by reader), 'read' (by reader).
    reading_state       TEXT NOT NULL,
    reader              TEXT,
    reading_at_ms       BIGINT,
    updated_at_ms       BIGINT NOT NULL
);
CREATE INDEX worklist_reading_order ON worklist (priority_rank, sort_score, received_at_ms, study_id);
CREATE INDEX worklist_received ON worklist (received_at_ms, study_id);
