-- Issue 15: an AE registered as TLS is refused on the plain port, and we call it over TLS
-- (PS3.15 B.9). Existing registrations stay plain.
ALTER TABLE ae_titles ADD COLUMN tls BIGINT NOT NULL DEFAULT 0;
