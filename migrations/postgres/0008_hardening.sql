-- Issue 11 hardening.
-- The audit chain is keyed (HMAC-SHA256 under the site's audit key). Entries written before
-- keep their plain SHA-256 hash, are marked unkeyed, and fail `audit verify` (anyone could
-- have written them).
ALTER TABLE audit_log ADD COLUMN keyed BIGINT NOT NULL DEFAULT 0;
-- The de-identified patient pseudonym each instance carries (never an original value), so a
-- study whose instances name different patients is detected before it is triaged as one.
ALTER TABLE instances ADD COLUMN patient_pseudonym TEXT;
