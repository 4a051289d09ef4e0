//! Registering and removing application entities: validated, and audited in the same
//! transaction as the change.

use super::AdminError;
use crate::db::{Db, RegisteredAe};
use crate::domain::{AeRole, AeTitle};

/// What an operator asks to register (or update).
#[derive(Debug, Clone)]
pub struct AeRegistration {
    pub ae_title: String,
    /// Host or IP the AE must call from (modality) or where we reach it (pacs).
    pub host: Option<String>,
    pub port: Option<u16>,
    pub role: AeRole,
    pub enabled: bool,
    /// TLS only (PS3.15 B.9): refused on the plain port, called over TLS.
    pub tls: bool,
    /// The identity its TLS client certificate must carry (SAN DNS name, IP address or URI, or
    /// subject common name); an AE registered TLS only needs one where the node asks callers
    /// for certificates (`dicom.tls.client_ca`).
    pub tls_identity: Option<String>,
}

/// Validate and save a registration with its `ae_add` audit entry (one transaction).
pub async fn register(db: &Db, r: AeRegistration) -> Result<RegisteredAe, AdminError> {
    let ae_title = AeTitle::parse(&r.ae_title).map_err(|e| AdminError::Invalid(format!("{:?}: {e}", r.ae_title)))?;
    if r.role == AeRole::Pacs && (r.host.is_none() || r.port.is_none()) {
        return Err(AdminError::Invalid("a pacs AE needs --host and --port so results can be sent to it".into()));
    }
    let tls_identity = r.tls_identity.map(|i| i.trim().to_string()).filter(|i| !i.is_empty());
    if let Some(identity) = &tls_identity {
        if identity.len() > 255 || identity.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(AdminError::Invalid(
                "--tls-identity must be a certificate name (DNS name, IP address, URI or common name) of at most 255 characters, without spaces".into(),
            ));
        }
    }
    // An identity binds the AE title to a certificate only where a certificate is shown: on the
    // plain port anyone could use the title, so an identity needs TLS only.
    if tls_identity.is_some() && !r.tls {
        return Err(AdminError::Invalid("--tls-identity needs --tls: on the plain port no certificate is shown, so anyone could use the AE title".into()));
    }
    let ae = RegisteredAe { ae_title, host: r.host, port: r.port, role: r.role, enabled: r.enabled, tls: r.tls, tls_identity };
    db.save_ae_audited(&ae).await?;
    Ok(ae)
}

/// Remove a registration with its `ae_remove` audit entry (one transaction).
pub async fn remove(db: &Db, ae_title: &str) -> Result<AeTitle, AdminError> {
    let title = AeTitle::parse(ae_title).map_err(|e| AdminError::Invalid(format!("{ae_title:?}: {e}")))?;
    if !db.remove_ae_audited(&title).await? {
        return Err(AdminError::UnknownAe(title));
    }
    Ok(title)
}

/// One registration, or None.
pub async fn find(db: &Db, ae_title: &str) -> Result<Option<RegisteredAe>, AdminError> {
    Ok(db.find_ae(ae_title.trim()).await?)
}

pub async fn list(db: &Db) -> Result<Vec<RegisteredAe>, AdminError> {
    Ok(db.list_aes().await?)
}

/// Enable or disable a registration, audited (`ae_add` with the new state, like an edit).
pub async fn set_enabled(db: &Db, ae_title: &str, enabled: bool) -> Result<RegisteredAe, AdminError> {
    let title = AeTitle::parse(ae_title).map_err(|e| AdminError::Invalid(format!("{ae_title:?}: {e}")))?;
    let Some(mut ae) = db.find_ae(title.as_str()).await? else { return Err(AdminError::UnknownAe(title)) };
    ae.enabled = enabled;
    db.save_ae_audited(&ae).await?;
    Ok(ae)
}

/// What a C-ECHO of a registered AE answered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EchoOutcome {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// The C-ECHO response status, when the association was made.
    pub status: Option<u16>,
    pub success: bool,
    /// Why it failed (connection refused, association rejected, ...).
    pub error: Option<String>,
}

/// C-ECHO a registered AE as our AE title, audited (`ae_echo`: who asked and the outcome).
pub async fn echo(
    db: &Db,
    ours: &AeTitle,
    ae_title: &str,
    timeout: std::time::Duration,
    tls: &crate::net::tls::Connector,
    user: &str,
) -> Result<EchoOutcome, AdminError> {
    let peer = crate::delivery::resolve(db, ae_title, ours, timeout, tls).await?;
    let (status, error) = match crate::delivery::echo(&peer).await {
        Ok(rsp) => (Some(rsp.status.0), (!rsp.is_success()).then(|| format!("status {:#06X}", rsp.status.0))),
        Err(e) => (None, Some(e.to_string())),
    };
    let outcome = EchoOutcome { ae_title: peer.called_ae.to_string(), host: peer.host.clone(), port: peer.port, success: error.is_none(), status, error };
    let details = crate::audit::Echoed { user: user.to_string(), success: outcome.success, status: outcome.status };
    db.audit_append(&crate::audit::Event::AeEcho { ae: outcome.ae_title.clone(), details }).await?;
    Ok(outcome)
}
