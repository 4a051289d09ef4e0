-- Issue 28: an AE title bound to the identity its TLS client certificate must carry (a SAN DNS
-- name, IP address or URI, or the subject's common name). NULL: not bound.
ALTER TABLE ae_titles ADD COLUMN tls_identity TEXT;
