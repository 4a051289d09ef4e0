//! The re-identification map's storage: sealed records only; this module never sees a
//! plaintext original (sealing and opening are in `deid`).

use super::{get, q, Db, DbError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRecord {
    /// De-identified SOP Instance UID (also the AES-GCM associated data).
    pub sop_instance_uid: String,
    /// De-identified Study Instance UID.
    pub study_instance_uid: String,
    pub key_id: String,
    pub nonce: String,
    pub sealed: String,
    pub created_at_ms: i64,
}

impl Db {
    pub async fn reid_record(&self, sop_instance_uid: &str) -> Result<Option<SealedRecord>, DbError> {
        let row = sqlx::query("SELECT sop_instance_uid, study_instance_uid, key_id, nonce, sealed, created_at_ms FROM reid_map WHERE sop_instance_uid = $1")
            .bind(sop_instance_uid)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select reid record"))?;
        row.map(|r| {
            Ok(SealedRecord {
                sop_instance_uid: get(&r, "sop_instance_uid")?,
                study_instance_uid: get(&r, "study_instance_uid")?,
                key_id: get(&r, "key_id")?,
                nonce: get(&r, "nonce")?,
                sealed: get(&r, "sealed")?,
                created_at_ms: get(&r, "created_at_ms")?,
            })
        })
        .transpose()
    }
}
