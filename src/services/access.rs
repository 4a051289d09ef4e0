//! The AE registry as access control: who may associate is read from the database on every
//! association, so `triage-node ae ...` changes apply to the next one without a restart. An AE
//! registered as TLS (`ae add --tls`) is refused unless it calls on the TLS port; an AE bound to
//! a certificate identity (`ae add --tls-identity NAME`) is refused on the TLS port unless the
//! client certificate it showed names it, and where the node asks for client certificates a
//! TLS-only AE must be bound to one (or any certificate the site CA signed could use its title).

use std::net::IpAddr;

use tracing::warn;

use crate::db::{Db, RegisteredAe};
use crate::domain::AeRole;
use crate::net::access::{host_matches, AccessControl, AccessError, BoxFuture, CallerDecision, Channel};

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

/// Why `ae` may not use this channel (TLS and its certificate), or None when it may.
fn channel_refusal(ae: &RegisteredAe, channel: Channel<'_>) -> Option<&'static str> {
    if ae.tls && !channel.tls {
        return Some("this AE is registered as TLS and called on the plain port");
    }
    if ae.tls_identity.is_some() && !channel.tls {
        return Some("this AE title is bound to a certificate identity and called on the plain port");
    }
    if !channel.tls {
        return None;
    }
    match (&ae.tls_identity, channel.certificate) {
        (Some(identity), Some(der)) if crate::net::tls::certificate_names(der, identity) => None,
        (Some(_), Some(_)) => Some("the client certificate does not name the identity this AE title is bound to"),
        (Some(_), None) => Some("this AE title is bound to a certificate identity and the caller showed no certificate"),
        // Client certificates are asked for, and this AE title is TLS only: unbound, any
        // certificate of the site CA could claim it.
        (None, Some(_)) if ae.tls => Some("this AE is registered as TLS but bound to no certificate identity (ae add --tls-identity)"),
        (None, _) => None,
    }
}

impl AccessControl for AeRegistry {
    fn check_caller<'a>(&'a self, calling: &'a str, peer: IpAddr, channel: Channel<'a>) -> BoxFuture<'a, Result<CallerDecision, AccessError>> {
        Box::pin(async move {
            let registered = self.db.find_ae(calling.trim()).await.map_err(|e| AccessError(Box::new(e)))?;
            let Some(ae) = registered else {
                return Ok(if self.require_registered { CallerDecision::NotRecognized } else { CallerDecision::Allowed(AeRole::Modality) });
            };
            if !ae.enabled {
                return Ok(CallerDecision::NotRecognized);
            }
            if let Some(why) = channel_refusal(&ae, channel) {
                warn!(calling_ae = %ae.ae_title, reason = why, "refused");
                let label = if channel.tls { "tls_identity" } else { "tls_required" };
                metrics::counter!("triage_associations_rejected_total", "reason" => label).increment(1);
                return Ok(CallerDecision::NotRecognized);
            }
            let allowed = CallerDecision::Allowed(ae.role);
            match ae.host.as_deref() {
                None | Some("") => Ok(allowed),
                Some(host) => Ok(if host_matches(host, peer).await { allowed } else { CallerDecision::NotRecognized }),
            }
        })
    }

    fn is_registered<'a>(&'a self, calling: &'a str, peer: IpAddr, channel: Channel<'a>) -> BoxFuture<'a, Result<bool, AccessError>> {
        Box::pin(async move {
            let Some(ae) = self.db.find_ae(calling.trim()).await.map_err(|e| AccessError(Box::new(e)))? else { return Ok(false) };
            Ok(ae.enabled
                && channel_refusal(&ae, channel).is_none()
                && match ae.host.as_deref() {
                    None | Some("") => true,
                    Some(host) => host_matches(host, peer).await,
                })
        })
    }
}
