-- AI triage: per instance, the inference pass (state and its claim); per (instance, model,
-- frame), the model's raw output; per (study, model), the aggregated result and its findings.
-- Every row holds de-identified UIDs or row ids only.

-- NULL: not yet inferred; 'running' (claimed until inference_lease_until_ms); 'done';
-- 'not_routed' (no model accepts it); 'failed' (inference_error says why).
ALTER TABLE instances ADD COLUMN inference_state TEXT;
ALTER TABLE instances ADD COLUMN inference_lease_until_ms BIGINT;
ALTER TABLE instances ADD COLUMN inference_error TEXT;
CREATE INDEX instances_study_inference ON instances (study_id, inference_state);

ALTER TABLE jobs ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;

CREATE TABLE slice_results (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id     BIGINT NOT NULL REFERENCES instances (id),
    model           TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    frame           BIGINT NOT NULL,
    -- JSON array, one probability per label of the model.
    probabilities   TEXT NOT NULL,
    source_rows     BIGINT NOT NULL,
    source_cols     BIGINT NOT NULL,
    cam_rows        BIGINT NOT NULL,
    cam_cols        BIGINT NOT NULL,
    -- JSON array [labels][cam_rows][cam_cols], flattened, 4 decimals.
    cam             TEXT NOT NULL,
    preprocess_us   BIGINT NOT NULL,
    queue_us        BIGINT NOT NULL,
    forward_us      BIGINT NOT NULL,
    batch_size      BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    UNIQUE (instance_id, model, frame)
);

CREATE TABLE study_results (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_id            BIGINT NOT NULL REFERENCES studies (id),
    job_id              BIGINT NOT NULL REFERENCES jobs (id),
    -- '' when no model accepted any instance of the study.
    model               TEXT NOT NULL,
    model_version       TEXT NOT NULL,
    demonstration       BIGINT NOT NULL,
    intended_use        TEXT NOT NULL,
    limits              TEXT NOT NULL,
    -- 'triaged', 'failed' (error says why; read the study without AI), 'not_applicable'.
    state               TEXT NOT NULL,
    -- 'urgent', 'positive', 'negative'; NULL unless triaged.
    priority            TEXT,
    error               TEXT,
    images_inferred     BIGINT NOT NULL,
    instances_failed    BIGINT NOT NULL,
    preprocess_ms       DOUBLE PRECISION NOT NULL,
    forward_ms          DOUBLE PRECISION NOT NULL,
    last_received_at_ms BIGINT NOT NULL,
    ready_at_ms         BIGINT NOT NULL,
    triaged_at_ms       BIGINT NOT NULL,
    UNIQUE (study_id, model)
);

CREATE TABLE findings (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_result_id  BIGINT NOT NULL REFERENCES study_results (id) ON DELETE CASCADE,
    label            TEXT NOT NULL,
    probability      DOUBLE PRECISION NOT NULL,
    positive         BIGINT NOT NULL,
    urgent           BIGINT NOT NULL,
    -- 'high', 'medium', 'needs_review': confidence in the call (p if positive, else 1 - p).
    tier             TEXT NOT NULL,
    -- The image the probability comes from and its class activation map, registered to it:
    -- the map covers the whole source frame (source_rows x source_cols), cell by cell.
    key_instance_id  BIGINT NOT NULL REFERENCES instances (id),
    key_frame        BIGINT NOT NULL,
    source_rows      BIGINT NOT NULL,
    source_cols      BIGINT NOT NULL,
    cam_rows         BIGINT NOT NULL,
    cam_cols         BIGINT NOT NULL,
    cam              TEXT NOT NULL
);
CREATE INDEX findings_result ON findings (study_result_id);
