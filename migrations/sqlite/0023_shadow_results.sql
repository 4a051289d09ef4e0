-- Results of shadow models (model.toml mode = "shadow"): stored beside the live ones to compare
-- them, never sent, listed or reported. Replaced with the study's results when it is triaged again.
CREATE TABLE shadow_results (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id       BIGINT NOT NULL REFERENCES studies (id),
    model          TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    -- The live model it is compared with.
    shadow_of      TEXT NOT NULL,
    -- 'triaged', 'failed', 'not_analysed', 'not_applicable'.
    state          TEXT NOT NULL,
    -- 'urgent', 'positive', 'negative'; NULL unless triaged.
    priority       TEXT,
    -- JSON: [{"label", "probability", "positive", "urgent"}].
    findings       TEXT NOT NULL,
    triaged_at_ms  BIGINT NOT NULL
);
CREATE INDEX shadow_results_study ON shadow_results (study_id);
