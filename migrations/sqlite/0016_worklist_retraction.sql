-- An admin retracted the study's AI results (`triage-node results retract`, or the API): the
-- PACS got a rejection note (IHE IOCM), the RIS a correction. The row stays (its history) but
-- leaves every listing; when the study is triaged again the new result replaces the row and
-- clears these. The reason itself is in the audit trail only.
ALTER TABLE worklist ADD COLUMN retracted_at_ms BIGINT;
ALTER TABLE worklist ADD COLUMN retracted_by TEXT;
-- The rejection note's title: 113001 (quality) or 113037 (patient safety).
ALTER TABLE worklist ADD COLUMN retraction_reason TEXT;
