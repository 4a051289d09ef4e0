//! The `[dicom]` configuration section: the network layer's settings, read by `config` into
//! the settings tree and validated there.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomSettings {
    pub ae_title: String,
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
}
