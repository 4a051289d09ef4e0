//! The AE registry as access control: who may associate is read from the database on every
//! association, so `triage-node ae ...` changes apply to the next one without a restart. An AE
//! registered as TLS (`ae add --tls`) is refused unless it calls on the TLS port.

use std::net::IpAddr;

use tracing::warn;

use crate::db::Db;
use crate::domain::AeRole;
use crate::net::access::{host_matches, AccessControl, AccessError, BoxFuture, CallerDecision};

pub struct AeRegistry {
    db: Db,
    /// `dicom.require_registered_calling_ae`: when false, an unregistered caller is a modality.
    require_registered: bool,
}

impl AeRegistry {
    pub fn new(db: Db, require_registered: bool) -> AeRegistry {
        AeRegistry { db, require_registered }
    }
}

impl AccessControl for AeRegistry {
    fn check_caller<'a>(&'a self, calling: &'a str, peer: IpAddr, tls: bool) -> BoxFuture<'a, Result<CallerDecision, AccessError>> {
        Box::pin(async move {
            let registered = self.db.find_ae(calling.trim()).await.map_err(|e| AccessError(Box::new(e)))?;
            let Some(ae) = registered else {
                return Ok(if self.require_registered { CallerDecision::NotRecognized } else { CallerDecision::Allowed(AeRole::Modality) });
            };
            if !ae.enabled {
                return Ok(CallerDecision::NotRecognized);
            }
            if ae.tls && !tls {
                warn!(calling_ae = %ae.ae_title, "refused: this AE is registered as TLS and called on the plain port");
                return Ok(CallerDecision::NotRecognized);
            }
            let allowed = CallerDecision::Allowed(ae.role);
            match ae.host.as_deref() {
                None | Some("") => Ok(allowed),
                Some(host) => Ok(if host_matches(host, peer).await { allowed } else { CallerDecision::NotRecognized }),
            }
        })
    }

    fn is_registered<'a>(&'a self, calling: &'a str, peer: IpAddr, tls: bool) -> BoxFuture<'a, Result<bool, AccessError>> {
        Box::pin(async move {
            let Some(ae) = self.db.find_ae(calling.trim()).await.map_err(|e| AccessError(Box::new(e)))? else { return Ok(false) };
            Ok(ae.enabled
                && (tls || !ae.tls)
                && match ae.host.as_deref() {
                    None | Some("") => true,
                    Some(host) => host_matches(host, peer).await,
                })
        })
    }
}
