-- Durable outbox: one row per (object, destination). A worker claims due rows, sends them by
-- C-STORE, and records delivered, retry-later (with backoff) or dead (with the reason).
-- Objects live in the queueing node's data directory, so each node claims only its own rows.

CREATE TABLE outbox (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path                TEXT NOT NULL,
    destination         TEXT NOT NULL,
    node                TEXT NOT NULL,
    state               TEXT NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL,
    lease_until_ms      BIGINT NOT NULL DEFAULT 0,
    last_error          TEXT,
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL,
    delivered_at_ms     BIGINT,
    UNIQUE (path, destination)
);
CREATE INDEX outbox_due ON outbox (node, state, next_attempt_at_ms);
