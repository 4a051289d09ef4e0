-- Issue 12: each node's background workers report their status here (every few seconds and
-- at stop), so `triage-node status` (and the HTTP API) can show them without reaching into
-- the running process. Errors name operations and row ids, never patient data.
CREATE TABLE worker_status (
    node TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    units BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    restarts BIGINT NOT NULL,
    last_error TEXT,
    last_error_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (node, name)
);
