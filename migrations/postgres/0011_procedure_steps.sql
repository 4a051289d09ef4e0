-- Issue 16: Modality Performed Procedure Step (PS3.4 Annex F). A modality's N-CREATE and
-- N-SET tell the node which instances a procedure step performed; once a step has ended and
-- every instance it lists is stored, its studies are complete without waiting for the quiet
-- period. Only de-identified UIDs are kept (the same keyed replacements ingest gives the
-- instances, so the two meet); no patient attribute of the step is stored anywhere.
CREATE TABLE procedure_steps (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sop_instance_uid  TEXT NOT NULL UNIQUE,
    state             TEXT NOT NULL,
    calling_ae_title  TEXT NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);
CREATE TABLE procedure_step_studies (
    step_id            BIGINT NOT NULL REFERENCES procedure_steps (id),
    study_instance_uid TEXT NOT NULL,
    PRIMARY KEY (step_id, study_instance_uid)
);
CREATE INDEX procedure_step_studies_study ON procedure_step_studies (study_instance_uid);
-- The instances the step's Performed Series Sequence lists (replaced by each N-SET that sends it).
CREATE TABLE procedure_step_instances (
    step_id          BIGINT NOT NULL REFERENCES procedure_steps (id),
    sop_instance_uid TEXT NOT NULL,
    PRIMARY KEY (step_id, sop_instance_uid)
);
