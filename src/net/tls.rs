//! DICOM over TLS: the BCP 195 TLS Secure Transport Connection Profile (PS3.15 B.9), with
//! rustls. The accepting side of the TLS port (our certificate; optionally a client certificate
//! signed by a configured CA), and the requesting side of our own associations to AEs
//! registered as TLS (`ae add --tls`): outbox deliveries, C-MOVE sub-associations, Storage
//! Commitment, and the operator's `echo` and `send`.
//!
//! The profile asks for TLS 1.2 or later with the cipher suites of BCP 195 (RFC 9325): ECDHE key
//! exchange and AES-GCM for TLS 1.2, and the TLS 1.3 suites. Those are the only ones offered or
//! accepted; rustls has no renegotiation, compression or TLS 1.0/1.1 to turn off.
//!
//! A handshake is a transport detail: once it is done, the association sees the same boxed
//! byte stream as over TCP (`association::BoxRead`/`BoxWrite`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::association::{BoxRead, BoxWrite};
use super::settings::TlsSettings;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("dicom.tls.{key}: {path}: {reason}")]
    File { key: &'static str, path: PathBuf, reason: String },
    #[error("dicom.tls.{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("TLS: {0}")]
    Rustls(rustls::Error),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}

/// The crypto provider restricted to the profile's cipher suites.
fn provider() -> Arc<CryptoProvider> {
    use ring::cipher_suite as cs;
    let mut p = ring::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    Arc::new(p)
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn is_set(p: &Path) -> bool {
    !p.as_os_str().is_empty()
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |reason: String| TlsError::File { key, path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| file(e.to_string()))?.collect::<Result<Vec<_>, _>>().map_err(|e| file(e.to_string()))?;
    if certs.is_empty() {
        return Err(file("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File { key: "private_key", path: path.to_path_buf(), reason: e.to_string() })
}

fn roots(key: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(key, path)? {
        store.add(cert).map_err(|e| TlsError::File { key, path: path.to_path_buf(), reason: e.to_string() })?;
    }
    Ok(Arc::new(store))
}

/// Our certificate chain and key, when both are configured.
fn identity(s: &TlsSettings) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    match (is_set(&s.certificate), is_set(&s.private_key)) {
        (true, true) => Ok(Some((certificates("certificate", &s.certificate)?, private_key(&s.private_key)?))),
        (false, false) => Ok(None),
        _ => Err(TlsError::Invalid { key: "certificate", reason: "certificate and private_key go together".into() }),
    }
}

/// The accepting side of the TLS port, or `None` when `enabled` is false.
pub fn acceptor(s: &TlsSettings) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    if !s.enabled {
        return Ok(None);
    }
    let Some((chain, key)) = identity(s)? else {
        return Err(TlsError::Invalid { key: "certificate", reason: "the TLS port needs our certificate and private_key (PEM files)".into() });
    };
    let provider = provider();
    let verifier = if is_set(&s.client_ca) {
        WebPkiClientVerifier::builder_with_provider(roots("client_ca", &s.client_ca)?, provider.clone())
            .build()
            .map_err(|e| TlsError::Invalid { key: "client_ca", reason: e.to_string() })?
    } else {
        WebPkiClientVerifier::no_client_auth()
    };
    let config =
        ServerConfig::builder_with_provider(provider).with_protocol_versions(VERSIONS)?.with_client_cert_verifier(verifier).with_single_cert(chain, key)?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Does the client certificate `der` (already verified against the site's client CA) carry
/// `identity` exactly: as a subject alternative name (a DNS name, compared without case; a
/// wildcard name never matches, or one certificate for `*.radiology.example` could claim every
/// AE bound under it; an IP address; a URI), or as a common name of its subject (without case)?
/// A certificate that cannot be parsed carries nothing.
pub fn certificate_names(der: &[u8], identity: &str) -> bool {
    let der = CertificateDer::from(der);
    let Ok(cert) = webpki::EndEntityCert::try_from(&der) else { return false };
    if let Ok(ip) = identity.parse::<std::net::IpAddr>() {
        return cert.verify_is_valid_for_subject_name(&ServerName::IpAddress(ip.into())).is_ok();
    }
    cert.valid_dns_names().any(|dns| !dns.starts_with('*') && dns.eq_ignore_ascii_case(identity))
        || cert.valid_uri_names().any(|uri| uri == identity)
        || common_names(cert.subject()).iter().any(|cn| cn.eq_ignore_ascii_case(identity))
}

/// The common names (2.5.4.3) of a DER Name, without its outer SEQUENCE: a SEQUENCE of SETs of
/// (OID, string) SEQUENCEs. Whatever does not parse is skipped.
fn common_names(mut name: &[u8]) -> Vec<String> {
    /// One DER TLV: (tag, value, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, b) = b.split_first()?;
        let (len, b) = if first < 0x80 {
            (usize::from(first), b)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            (b[..n].iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)), &b[n..])
        };
        (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
    }
    const CN: [u8; 3] = [0x55, 0x04, 0x03];
    let mut out = Vec::new();
    while let Some((0x31, mut set, rest)) = tlv(name) {
        name = rest;
        while let Some((0x30, attribute, more)) = tlv(set) {
            set = more;
            let Some((0x06, oid, value)) = tlv(attribute) else { continue };
            // UTF8String, PrintableString, IA5String, TeletexString (its bytes read as UTF-8).
            if let (true, Some((0x0C | 0x13 | 0x16 | 0x14, text, _))) = (oid == CN, tlv(value)) {
                out.push(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    out
}

/// The requesting side: how we reach AEs registered as TLS. Cheap to clone.
#[derive(Clone, Default)]
pub struct Connector(Option<Arc<ClientConfig>>);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Connector(configured)" } else { "Connector(none)" })
    }
}

impl Connector {
    /// From `[dicom.tls]`: configured when `peer_ca` names the CAs that sign our TLS peers'
    /// certificates; our own certificate, if any, is shown to peers that ask for one.
    pub fn from_settings(s: &TlsSettings) -> Result<Connector, TlsError> {
        if !is_set(&s.peer_ca) {
            // Still check an identity that is given, so a broken file is found at start.
            identity(s)?;
            return Ok(Connector(None));
        }
        let builder = ClientConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?.with_root_certificates(roots("peer_ca", &s.peer_ca)?);
        let config = match identity(s)? {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
            None => builder.with_no_client_auth(),
        };
        Ok(Connector(Some(Arc::new(config))))
    }

    pub fn is_configured(&self) -> bool {
        self.0.is_some()
    }

    /// Run the client handshake over `tcp` to `host` (its certificate must name that host or
    /// address). Bounded by the caller's timeout.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> std::io::Result<(BoxRead, BoxWrite)> {
        let Some(config) = &self.0 else {
            return Err(std::io::Error::other("this node has no TLS client configuration (dicom.tls.peer_ca)"));
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?} is not a TLS server name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await?;
        Ok(split(stream))
    }
}

/// Box the two halves of a TLS stream (one reader and one writer share the session).
pub fn split<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S) -> (BoxRead, BoxWrite) {
    let (rd, wr) = tokio::io::split(stream);
    (Box::new(rd), Box::new(wr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TlsSettings {
        TlsSettings {
            enabled: true,
            port: 0,
            plain_port: true,
            certificate: PathBuf::new(),
            private_key: PathBuf::new(),
            client_ca: PathBuf::new(),
            peer_ca: PathBuf::new(),
        }
    }

    #[test]
    fn the_tls_port_without_a_certificate_is_a_configuration_error() {
        let err = acceptor(&settings()).err().expect("refused");
        assert!(err.to_string().contains("dicom.tls.certificate"), "{err}");
        // Disabled: nothing is needed.
        assert!(acceptor(&TlsSettings { enabled: false, ..settings() }).unwrap().is_none());
    }

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let s = TlsSettings { certificate: dir.path().join("absent.pem"), private_key: empty.clone(), ..settings() };
        let err = acceptor(&s).err().unwrap().to_string();
        assert!(err.contains("dicom.tls.certificate") && err.contains("absent.pem"), "{err}");
        let s = TlsSettings { certificate: empty.clone(), private_key: empty.clone(), ..settings() };
        let err = acceptor(&s).err().unwrap().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let s = TlsSettings { enabled: false, peer_ca: empty.clone(), ..settings() };
        let err = Connector::from_settings(&s).err().unwrap().to_string();
        assert!(err.contains("dicom.tls.peer_ca"), "{err}");
        // Half an identity is refused too.
        let s = TlsSettings { enabled: false, certificate: empty, ..settings() };
        assert!(Connector::from_settings(&s).err().unwrap().to_string().contains("go together"));
    }

    #[test]
    fn only_the_profiles_cipher_suites_are_offered() {
        for suite in provider().cipher_suites.iter() {
            let name = format!("{:?}", suite.suite());
            assert!(name.contains("GCM") || name.starts_with("TLS13_"), "{name}");
            if suite.version() == &rustls::version::TLS12 {
                assert!(name.starts_with("TLS_ECDHE_"), "{name}");
            }
        }
    }
}
