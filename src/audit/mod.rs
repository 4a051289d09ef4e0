//! The audit trail's rules, as pure functions: how an entry's hash is computed and how a chain
//! is verified. Storage is in `db::audit`; this module does no IO.
//!
//! Each entry's hash is SHA-256 over the previous entry's hash and the entry's fields, each
//! length-prefixed so that no two different entries can be written as the same bytes. The
//! chain starts from 64 zeros; `audit_head` records the newest sequence number and hash, so a
//! deleted last entry is detected as well as an altered or deleted one in the middle.
//! Must not: put patient data in an entry (callers pass row ids, AE titles, counts).

use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: i64,
    pub at_ms: i64,
    pub event: String,
    pub subject: String,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

pub fn entry_hash(prev_hash: &str, seq: i64, at_ms: i64, event: &str, subject: &str, details: &str) -> String {
    let mut h = Sha256::new();
    for field in [prev_hash.as_bytes(), &seq.to_be_bytes(), &at_ms.to_be_bytes(), event.as_bytes(), subject.as_bytes(), details.as_bytes()] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    hex::encode(h.finalize())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("entry {seq}: its hash does not match its contents (altered)")]
    Altered { seq: i64 },
    #[error("entry {seq}: it does not follow entry {expected_prev} (an entry was deleted or inserted)")]
    Broken { seq: i64, expected_prev: i64 },
    #[error("the log ends at entry {last} but its head says {head}: entries were deleted from the end")]
    Truncated { last: i64, head: i64 },
    #[error("the head's hash does not match the last entry")]
    HeadMismatch,
}

/// Verify `entries` (in sequence order) against the head; returns how many entries were checked.
pub fn verify(entries: &[Entry], head_seq: i64, head_hash: &str) -> Result<usize, VerifyError> {
    let mut prev_hash = GENESIS.to_string();
    let mut prev_seq = 0;
    for e in entries {
        if e.seq != prev_seq + 1 || e.prev_hash != prev_hash {
            return Err(VerifyError::Broken { seq: e.seq, expected_prev: prev_seq });
        }
        if entry_hash(&e.prev_hash, e.seq, e.at_ms, &e.event, &e.subject, &e.details) != e.hash {
            return Err(VerifyError::Altered { seq: e.seq });
        }
        prev_hash = e.hash.clone();
        prev_seq = e.seq;
    }
    if prev_seq != head_seq {
        return Err(VerifyError::Truncated { last: prev_seq, head: head_seq });
    }
    if prev_hash != head_hash {
        return Err(VerifyError::HeadMismatch);
    }
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map(|e| e.hash.clone()).unwrap_or_else(|| GENESIS.to_string());
            let (event, subject, details) = ("ae_add".to_string(), format!("CT{seq}"), "{\"role\":\"modality\"}".to_string());
            let hash = entry_hash(&prev, seq, 1000 + seq, &event, &subject, &details);
            out.push(Entry { seq, at_ms: 1000 + seq, event, subject, details, prev_hash: prev, hash });
        }
        out
    }

    #[test]
    fn tampering_of_every_kind_is_detected() {
        let good = chain(5);
        let head = (5, good[4].hash.clone());
        assert_eq!(verify(&good, head.0, &head.1), Ok(5));
        assert_eq!(verify(&[], 0, GENESIS), Ok(0));

        let check = |entries: Vec<Entry>, head_seq: i64, head_hash: &str, expected: VerifyError| {
            assert_eq!(verify(&entries, head_seq, head_hash), Err(expected));
        };
        let mut altered = good.clone();
        altered[2].details = "{\"role\":\"pacs\"}".into();
        check(altered, head.0, &head.1, VerifyError::Altered { seq: 3 });

        let mut rehashed = good.clone(); // altered and re-hashed: the next link breaks
        rehashed[2].subject = "EVIL".into();
        rehashed[2].hash = entry_hash(&rehashed[2].prev_hash, 3, rehashed[2].at_ms, &rehashed[2].event, "EVIL", &rehashed[2].details);
        check(rehashed, head.0, &head.1, VerifyError::Broken { seq: 4, expected_prev: 3 });

        let mut deleted = good.clone();
        deleted.remove(1);
        check(deleted, head.0, &head.1, VerifyError::Broken { seq: 3, expected_prev: 1 });

        let truncated = good[..4].to_vec();
        check(truncated, head.0, &head.1, VerifyError::Truncated { last: 4, head: 5 });

        check(good.clone(), head.0, GENESIS, VerifyError::HeadMismatch);

        let mut reordered = good.clone();
        reordered.swap(1, 2);
        check(reordered, head.0, &head.1, VerifyError::Broken { seq: 3, expected_prev: 1 });
    }

    #[test]
    fn fields_cannot_be_shifted_between_each_other() {
        // Length prefixes: "ab"+"c" and "a"+"bc" hash differently.
        assert_ne!(entry_hash(GENESIS, 1, 1, "ab", "c", ""), entry_hash(GENESIS, 1, 1, "a", "bc", ""));
    }
}
