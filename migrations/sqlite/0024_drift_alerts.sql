-- Score drift crossings (admin::drift): one row per model version, label and scanner group
-- ('' for every study of the window). `drifted` is 1 while the PSI stands at or above the
-- threshold; a crossing (0 -> 1) is claimed by one conditional UPDATE, in the transaction that
-- queues its notifications, so it is told once (by one node) until the PSI falls below the
-- threshold (1 -> 0) and crosses again. No patient data: names and figures only.
CREATE TABLE drift_alerts (
    model          TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    label          TEXT NOT NULL,
    scanner        TEXT NOT NULL,
    drifted        BIGINT NOT NULL,
    -- How many times it crossed (the notices' ids are made from it).
    crossings      BIGINT NOT NULL,
    psi            REAL,
    changed_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (model, model_version, label, scanner)
);
