//! The `[dicom]` configuration section: the network layer's settings, read by `config` into
//! the settings tree and validated there.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomSettings {
    pub ae_title: crate::domain::AeTitle,
    pub bind: IpAddr,
    pub port: u16,
    pub max_associations: usize,
    /// Of `max_associations`, slots only a registered calling AE may take (once its
    /// A-ASSOCIATE-RQ shows who it is): unknown or silent peers cannot lock every modality out.
    pub reserved_for_registered: usize,
    /// Connections one peer address may hold open at once.
    pub max_associations_per_host: usize,
    pub max_pdu_length: u32,
    #[serde(with = "humantime_serde")]
    pub artim_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub require_registered_calling_ae: bool,
    pub transfer_syntax_preference: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub tls: TlsSettings,
}

/// `[dicom.tls]`: DICOM over TLS (PS3.15 B.9), see `net::tls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Open the TLS port.
    pub enabled: bool,
    pub port: u16,
    /// Keep the plain port open beside the TLS one (false: TLS only).
    pub plain_port: bool,
    /// Our certificate chain and its key (PEM): served on the TLS port, and shown to the TLS
    /// peers we call when they ask for a client certificate.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// CA certificates (PEM) that sign the client certificates we accept on the TLS port.
    /// Empty: no client certificate is asked for.
    pub client_ca: PathBuf,
    /// CA certificates (PEM) that sign the certificates of the AEs we call over TLS.
    pub peer_ca: PathBuf,
}
