//! De-identification (PS3.15 Annex E, Basic Application Level Confidentiality Profile) and the
//! re-identification map.
//!
//! Every received instance passes through here before it is stored: the store, the database
//! (except the encrypted map) and the logs only ever see the de-identified instance. The
//! originals needed to file results back into the patient's study are sealed with AES-256-GCM
//! into `reid_map`; opening one is audited.
//!
//! - `table`: Table E.1-1 as data (the edition is `table::EDITION`).
//! - `keys`: the site secrets and everything derived from them (pseudonyms, UIDs, date shift,
//!   sealing).
//! - `engine`: the profile applied to a parsed data set.
//! - `safe_text`: the reviewed free-text attributes the table does not list that are kept.
//! - `file`: Part 10 file in, de-identified Part 10 file out, in bounded memory.
//!
//! Must not: log any original value, or write one anywhere but the sealed map.

pub mod engine;
pub mod file;
pub mod keys;
pub mod safe_text;
pub mod table;

pub use engine::{Deidentified, Deidentifier, Originals, SafePrivate};
pub use keys::{KeyError, Keys};

use crate::db::{Db, DbError, SealedRecord};
use crate::domain::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Seal(#[from] keys::SealError),
    #[error("no re-identification record for that instance")]
    NotFound,
    #[error("re-identification record is not valid JSON: {0}")]
    Format(String),
}

/// Seal the originals of one instance for the `reid_map` row keyed by its de-identified UIDs.
pub fn seal(keys: &Keys, deid: &Deidentified) -> Result<SealedRecord, MapError> {
    let plain = serde_json::to_vec(&deid.originals).map_err(|e| MapError::Format(e.to_string()))?;
    let (nonce, sealed) = keys.seal(&plain, &deid.sop_instance_uid)?;
    Ok(SealedRecord {
        sop_instance_uid: deid.sop_instance_uid.clone(),
        study_instance_uid: deid.study_instance_uid.clone(),
        key_id: keys.map_key_id(),
        nonce,
        sealed,
        created_at_ms: now_ms(),
    })
}

/// Open the originals of a de-identified instance, appending a `reidentify` audit entry that
/// names the purpose (no patient data in it).
pub async fn reidentify(db: &Db, keys: &Keys, deid_sop_instance_uid: &str, purpose: &str) -> Result<Originals, MapError> {
    let record = db.reid_record(deid_sop_instance_uid).await?.ok_or(MapError::NotFound)?;
    reidentify_record(db, keys, &record, purpose).await
}

/// Open a record the caller has read, appending the same `reidentify` audit entry as
/// `reidentify` (the record's instance, the purpose, its de-identified study).
pub async fn reidentify_record(db: &Db, keys: &Keys, record: &SealedRecord, purpose: &str) -> Result<Originals, MapError> {
    let originals = open(keys, record)?;
    let details = crate::audit::Reidentified { purpose: purpose.to_string(), study: record.study_instance_uid.clone() };
    db.audit_append(&crate::audit::Event::Reidentify { instance: record.sop_instance_uid.clone(), details }).await?;
    Ok(originals)
}

/// Open a sealed record, without an audit entry: only for a caller that audits the opening
/// itself (the query index, built in memory at start-up, records one entry for all it opened).
pub fn open(keys: &Keys, record: &SealedRecord) -> Result<Originals, MapError> {
    let plain = zeroize::Zeroizing::new(keys.open(&record.nonce, &record.sealed, &record.sop_instance_uid, &record.key_id)?);
    // The serde message could quote a decrypted value: never let it into an error string.
    serde_json::from_slice(&plain).map_err(|e| MapError::Format(format!("{:?} at line {} column {}", e.classify(), e.line(), e.column())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record sealed before `frame_of_reference_uid` was kept (its JSON lacks the field).
    #[test]
    fn records_sealed_before_the_frame_of_reference_was_kept_still_open() {
        let keys = Keys::for_tests(6);
        let old = serde_json::json!({
            "specific_character_set": null, "patient_id": "12345", "issuer_of_patient_id": null,
            "patient_name": "DOE^JANE", "patient_birth_date": null, "patient_sex": "F", "accession_number": "A1",
            "study_instance_uid": "1.2.3", "series_instance_uid": "1.2.3.4", "sop_instance_uid": "1.2.3.4.5",
            "study_date": "20260101", "study_time": null, "study_id": null, "referring_physician_name": null, "study_description": null
        });
        let (nonce, sealed) = keys.seal(old.to_string().as_bytes(), "2.25.5").unwrap();
        let record =
            SealedRecord { sop_instance_uid: "2.25.5".into(), study_instance_uid: "2.25.3".into(), key_id: keys.map_key_id(), nonce, sealed, created_at_ms: 0 };
        let o = open(&keys, &record).unwrap();
        assert_eq!((o.patient_id.as_deref(), o.study_instance_uid.as_str()), (Some("12345"), "1.2.3"));
        assert_eq!(o.frame_of_reference_uid, None);
        // And a new record keeps it.
        let new = Originals { frame_of_reference_uid: Some("1.2.3.9".into()), ..o };
        let json: serde_json::Value = serde_json::to_value(&new).unwrap();
        assert_eq!(json["frame_of_reference_uid"], "1.2.3.9");
        assert_eq!(serde_json::from_value::<Originals>(json).unwrap(), new);
    }
}
