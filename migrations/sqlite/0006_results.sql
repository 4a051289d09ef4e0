-- AI results queued for the PACS: what each outbox item is, which study it belongs to (for the
-- delivery latency), and whether it is re-identified at sending (result objects are kept
-- de-identified on disk; files queued by hand with `outbox add` are sent as they are).

ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'file';
ALTER TABLE outbox ADD COLUMN study_id BIGINT;
ALTER TABLE outbox ADD COLUMN reidentify BIGINT NOT NULL DEFAULT 0;
CREATE INDEX outbox_study ON outbox (study_id);
