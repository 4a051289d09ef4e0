//! Who may associate: access control as a trait, so the network layer decides nothing about
//! AEs itself. The database-backed registry (`services::access::AeRegistry`) is one
//! implementation; tests or a future directory service can be others.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

pub use super::ul::negotiation::CallerDecision;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lookup that could not be made (the caller is then refused, transiently).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AccessError(pub Box<dyn std::error::Error + Send + Sync>);

/// How a caller reached us: over TLS or not, and the leaf certificate it showed (DER, already
/// verified against the site's client CA), if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Channel<'a> {
    pub tls: bool,
    pub certificate: Option<&'a [u8]>,
}

pub trait AccessControl: Send + Sync {
    /// May `calling` associate from `peer`, over this `channel`, and in which role?
    fn check_caller<'a>(&'a self, calling: &'a str, peer: IpAddr, channel: Channel<'a>) -> BoxFuture<'a, Result<CallerDecision, AccessError>>;

    /// Is `calling` a registered, enabled AE calling from its bound host, over TLS if it must,
    /// with the certificate it is bound to (whatever the registration requirement says)? Such
    /// callers may take the slots kept for registered AEs.
    fn is_registered<'a>(&'a self, calling: &'a str, peer: IpAddr, channel: Channel<'a>) -> BoxFuture<'a, Result<bool, AccessError>>;
}

/// Does `peer` (the connection's address) belong to `host` (an IP address or a name resolved now)?
pub async fn host_matches(host: &str, peer: IpAddr) -> bool {
    let peer = canonical(peer);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return canonical(ip) == peer;
    }
    match tokio::net::lookup_host((host, 0)).await {
        Ok(addrs) => addrs.map(|a| canonical(a.ip())).any(|ip| ip == peer),
        Err(_) => false,
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    crate::domain::canonical_ip(ip)
}
