//! Re-identification on an operator's request: the originals of one de-identified instance
//! from the sealed map, audited (with the purpose given) before they are returned.

use super::{open, Access, AdminError};
use crate::config::Settings;
use crate::deid::Originals;

pub async fn originals(settings: &Settings, deid_sop_instance_uid: &str, purpose: &str) -> Result<Originals, AdminError> {
    if purpose.trim().is_empty() {
        return Err(AdminError::Invalid("say why (--purpose): re-identification is audited with it".into()));
    }
    let deid = settings.deid.deidentifier().map_err(|source| AdminError::Keys { why: "the re-identification map is sealed with the site keys", source })?;
    let db = open(settings, Access::Read).await?.with_audit_key(deid.keys().audit_key());
    let originals = crate::deid::reidentify(&db, deid.keys(), deid_sop_instance_uid, purpose).await;
    db.close().await;
    Ok(originals?)
}
