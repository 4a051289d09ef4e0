-- Similar prior cases (outputs.embedding): each frame output's embedding, as the model gave it,
-- f32 little-endian (NULL for a model without one); and per study and live model the
-- embedding of the study's key image (its strongest finding's, else its most probable image's),
-- L2-normalised, f32 little-endian, written with the study's results and replaced with them.
-- De-identified: row ids and the model's numbers only.
ALTER TABLE slice_results ADD COLUMN embedding BLOB;
CREATE TABLE study_embeddings (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id        BIGINT NOT NULL REFERENCES studies (id),
    model           TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    key_instance_id BIGINT NOT NULL,
    key_frame       BIGINT NOT NULL,
    dims            BIGINT NOT NULL,
    vector          BLOB NOT NULL,
    -- The study's last instance's receive time ("earlier" studies are compared with it).
    received_at_ms  BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL
);
CREATE UNIQUE INDEX study_embeddings_one ON study_embeddings (study_id, model);
CREATE INDEX study_embeddings_space ON study_embeddings (model, model_version, id);
CREATE INDEX feedback_changed ON feedback (model, updated_at_ms);
