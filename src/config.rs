//! Typed settings for every component, loaded once at start-up.
//!
//! Owns: the `Settings` tree, its layering (built-in defaults -> `--config` file ->
//! `TRIAGE__SECTION__KEY` environment variables) and `validate()`, which runs before any
//! port is bound or file is written. Must not: read settings anywhere else, or log secrets.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::domain::{AeTitle, ByteSize};

/// The defaults shipped in `config/default.toml`, compiled in so the binary runs anywhere.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The `[dicom]` section is the network layer's own (`net::settings`).
pub use crate::net::settings::DicomSettings;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(config::ConfigError),
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        ConfigError::Load(e)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub dicom: DicomSettings,
    pub storage: StorageSettings,
    pub database: DatabaseSettings,
    pub ingest: IngestSettings,
    pub deid: DeidSettings,
    pub inference: InferenceSettings,
    pub delivery: DeliverySettings,
    pub results: ResultsSettings,
    pub query: QuerySettings,
    pub http: HttpSettings,
    pub hl7: Hl7Settings,
    pub notify: NotifySettings,
    pub log: LogSettings,
}

/// Notifications of studies a rule matches (URGENT by default), through the outbox: a
/// de-identified JSON document POSTed to each matching webhook, once per study and rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    pub enabled: bool,
    /// The worklist page as readers reach it (`https://triage.example/`): a notification links
    /// to the study there (`<link_base>#/study/<id>`). Empty: no link.
    pub link_base: String,
    /// One POST may take this long (connect, send, the answer's head).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub webhooks: Vec<WebhookRule>,
}

/// One webhook and which studies it is told about.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRule {
    /// Unique; the outbox destination is `webhook:<name>`. Letters, digits, `-` and `_`.
    pub name: String,
    /// `https://...`; plain `http://` only to a loopback host. Never logged.
    pub url: String,
    /// The study priorities that notify (default: urgent only).
    #[serde(default = "urgent_only")]
    pub priorities: Vec<NotifyPriority>,
    /// Only studies where one of these models gave the priority; empty: any model.
    #[serde(default)]
    pub models: Vec<String>,
    /// A file holding a bearer token sent as `Authorization: Bearer ...` (read at each send).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for WebhookRule {
    /// The URL's path and query may carry a secret (many webhook services put one there).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRule")
            .field("name", &self.name)
            .field("url", &redact_webhook_url(&self.url))
            .field("priorities", &self.priorities)
            .field("models", &self.models)
            .field("token_file", &self.token_file)
            .finish()
    }
}

fn urgent_only() -> Vec<NotifyPriority> {
    vec![NotifyPriority::Urgent]
}

/// A study priority a notification rule can match.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum NotifyPriority {
    #[serde(rename = "urgent", alias = "URGENT")]
    Urgent,
    #[serde(rename = "positive", alias = "POSITIVE")]
    Positive,
}

impl NotifyPriority {
    /// As the worklist spells it (`URGENT`, `POSITIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyPriority::Urgent => "URGENT",
            NotifyPriority::Positive => "POSITIVE",
        }
    }
}

/// The outbox destination of a webhook rule's notifications.
pub fn webhook_destination(name: &str) -> String {
    format!("{WEBHOOK_PREFIX}{name}")
}

/// What every webhook destination starts with (an AE title cannot be one of them: see
/// `NotifySettings::validate`).
pub const WEBHOOK_PREFIX: &str = "webhook:";

impl NotifySettings {
    /// The rules in force (none when notifications are off).
    pub fn rules(&self) -> &[WebhookRule] {
        if self.enabled {
            &self.webhooks
        } else {
            &[]
        }
    }

    /// The rule a destination (`webhook:<name>`) names.
    pub fn rule_for(&self, destination: &str) -> Option<&WebhookRule> {
        let name = destination.strip_prefix(WEBHOOK_PREFIX)?;
        self.rules().iter().find(|r| r.name == name)
    }

    /// Names unique and plain, URLs http(s) (https unless the host is loopback), no credentials
    /// in a URL (a token file instead), a rule matches some priority.
    pub fn validate(&self, destinations: &[AeTitle]) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.webhooks.is_empty() {
            return Err("notify.enabled needs at least one [[notify.webhooks]] rule".into());
        }
        if self.timeout.is_zero() {
            return Err("notify.timeout must be above zero".into());
        }
        if !self.link_base.is_empty() {
            let url = reqwest13::Url::parse(&self.link_base).map_err(|e| format!("notify.link_base: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err("notify.link_base must be an http(s) URL with a host".into());
            }
        }
        for (i, rule) in self.webhooks.iter().enumerate() {
            let name = &rule.name;
            if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("notify.webhooks: {name:?} must be 1 to 32 letters, digits, '-' or '_'"));
            }
            if self.webhooks[..i].iter().any(|r| r.name == *name) {
                return Err(format!("notify.webhooks: the name {name:?} is used twice"));
            }
            if destinations.iter().any(|d| d.as_str() == webhook_destination(name)) {
                return Err(format!("notify.webhooks: results.destinations names the AE {:?}, the webhook's outbox destination", webhook_destination(name)));
            }
            let url = reqwest13::Url::parse(&rule.url).map_err(|e| format!("notify.webhooks {name}: the url is not a URL ({e})"))?;
            let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
                return Err(format!("notify.webhooks {name}: the url has no host"));
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
            match url.scheme() {
                "https" => {}
                "http" if loopback => {}
                "http" => return Err(format!("notify.webhooks {name}: plain http only to a loopback host; use https")),
                other => return Err(format!("notify.webhooks {name}: the url's scheme is {other:?}, not http(s)")),
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!("notify.webhooks {name}: no credentials in the url; put a bearer token in token_file"));
            }
            if rule.priorities.is_empty() {
                return Err(format!("notify.webhooks {name}: priorities must not be empty"));
            }
            if rule.token_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(format!("notify.webhooks {name}: token_file is empty (leave it out for no token)"));
            }
        }
        Ok(())
    }
}

/// A webhook URL as settings print it: scheme, host and port; the path and query (where
/// webhook services put their secrets) replaced.
pub fn redact_webhook_url(url: &str) -> String {
    match reqwest13::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path() == "/" && u.query().is_none() { "/" } else { "/<redacted>" };
            format!("{}://{}{port}{rest}", u.scheme(), u.host_str().unwrap_or(""))
        }
        Err(_) => "<redacted>".into(),
    }
}

/// ORU^R01 to the RIS over MLLP, through the outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Settings {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub priority_field: String,
    pub urgent: String,
    pub positive: String,
    pub negative: String,
    pub failed: String,
}

impl Hl7Settings {
    pub fn mapping(&self) -> crate::hl7::Mapping {
        crate::hl7::Mapping {
            sending_application: self.sending_application.clone(),
            sending_facility: self.sending_facility.clone(),
            receiving_application: self.receiving_application.clone(),
            receiving_facility: self.receiving_facility.clone(),
            priority_field: self.priority_field.clone(),
            urgent: self.urgent.clone(),
            positive: self.positive.clone(),
            negative: self.negative.clone(),
            failed: self.failed.clone(),
        }
    }
}

/// The HTTP API, the worklist page and the metrics. Tokens are never settings: they come from
/// TRIAGE_HTTP_TOKENS or the hashed tokens file named here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub enabled: bool,
    pub bind: String,
    /// 0 = any free port (logged as `http_port=<n>`).
    pub port: u16,
    /// Lines `NAME ROLE sha256:HEX` (`triage-node token add` writes them); empty: none.
    pub tokens_file: Option<PathBuf>,
    /// How often the worklist page reloads its rows.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// Time a client has to send a whole request head, from the accept or the previous response.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection idle this long after a response (no byte, no request) is closed.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// Time a request may take (its body and its handler) before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// HTTP connections open at once, and per peer address (past either: 503, closed).
    pub max_connections: usize,
    pub max_connections_per_host: usize,
}

/// The Query/Retrieve SCP over the AI result objects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    /// Serve C-FIND, C-MOVE and C-GET to AEs registered with the pacs role.
    pub enabled: bool,
    /// Match PN values case-sensitively (PS3.4 leaves it to the SCP).
    pub case_sensitive_names: bool,
}

impl QuerySettings {
    pub fn matching(&self) -> crate::dicom::matching::Options {
        crate::dicom::matching::Options { case_sensitive_names: self.case_sensitive_names }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    /// Where instance files and result objects live: the data directory, or an S3 bucket
    /// shared by a cluster (`blobs`).
    pub backend: crate::blobs::Backend,
    pub s3: crate::blobs::S3Settings,
    pub min_free_disk: ByteSize,
    pub fsync: bool,
    /// Storage SOP Class UIDs a modality may send; empty: every standard class (PS3.4 B.5-1).
    pub accept_sop_classes: Vec<String>,
    /// Storage SOP Class UIDs refused at negotiation even if accepted above.
    pub refuse_sop_classes: Vec<String>,
}

impl StorageSettings {
    /// Whether the site lets modalities store objects of class `uid` (a standard storage class).
    pub fn accepts_sop_class(&self, uid: &str) -> bool {
        (self.accept_sop_classes.is_empty() || self.accept_sop_classes.iter().any(|u| u == uid)) && !self.refuse_sop_classes.iter().any(|u| u == uid)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    #[serde(with = "humantime_serde")]
    pub study_quiet_period: Duration,
    /// AEs whose procedure steps may complete any study (besides the AEs that sent it).
    pub mpps_trusted_aes: Vec<AeTitle>,
    /// Procedure steps one AE may hold open.
    pub mpps_max_open_steps: u32,
}

/// De-identification (PS3.15 Annex E). The keys themselves are never settings: they come from
/// TRIAGE_PSEUDONYM_KEY / TRIAGE_REID_MAP_KEY or from the files named here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeidSettings {
    pub pseudonym_key_file: Option<PathBuf>,
    pub map_key_file: Option<PathBuf>,
    pub demo_keys: bool,
    pub retain_longitudinal_modified_dates: bool,
    pub retain_patient_characteristics: bool,
    pub retain_device_identity: bool,
    pub retain_institution_identity: bool,
    pub clean_descriptors: bool,
    pub safe_private: Vec<String>,
    pub burned_in_annotation: BurnedInPolicy,
    /// Modalities (0008,0060) whose images count as possibly showing identity when Burned In
    /// Annotation (0028,0301) is absent.
    pub burned_in_when_absent: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BurnedInPolicy {
    /// Keep the de-identified header only; do not send the instance to the AI stage.
    Exclude,
    /// Keep the pixels and send them to the AI stage (the site accepts burned-in text there).
    Process,
}

impl DeidSettings {
    /// The engine, with keys loaded from the environment or the key files.
    pub fn deidentifier(&self) -> Result<crate::deid::Deidentifier, crate::deid::KeyError> {
        use crate::deid::table::ProfileOption as O;
        let keys = crate::deid::Keys::load(&crate::deid::keys::KeySources {
            pseudonym_key_file: self.pseudonym_key_file.as_deref().filter(|p| !p.as_os_str().is_empty()),
            map_key_file: self.map_key_file.as_deref().filter(|p| !p.as_os_str().is_empty()),
            demo_keys: self.demo_keys,
        })?;
        let mut options = Vec::new();
        for (on, opt) in [
            (self.retain_longitudinal_modified_dates, O::RetainLongitudinalModifiedDates),
            (self.retain_patient_characteristics, O::RetainPatientCharacteristics),
            (self.retain_device_identity, O::RetainDeviceIdentity),
            (self.retain_institution_identity, O::RetainInstitutionIdentity),
            (self.clean_descriptors, O::CleanDescriptors),
            (!self.safe_private.is_empty(), O::RetainSafePrivate),
        ] {
            if on {
                options.push(opt);
            }
        }
        let safe = self.safe_private.iter().filter_map(|s| crate::deid::SafePrivate::parse(s).ok()).collect();
        Ok(crate::deid::Deidentifier::new(keys, options, safe).with_burned_in_when_absent(&self.burned_in_when_absent))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSettings {
    /// Folder of model packages (`<name>/model.pt` + `<name>/model.toml`).
    pub models_dir: PathBuf,
    /// `auto`, `cpu` or `cuda:N`.
    pub device: crate::inference::runtime::DeviceChoice,
    /// Images of one model run together when they wait together, up to this many.
    pub max_batch: usize,
    /// Images waiting for the engine; past it, passes wait (memory stays bounded).
    pub queue_depth: usize,
    /// Instances decoded and preprocessed at once; 0 = one per CPU core.
    pub preprocess_threads: usize,
    /// libtorch intra-op threads of the engine thread; 0 = one per CPU core but one.
    pub torch_threads: usize,
    /// Studies aggregated at once.
    pub concurrent_studies: usize,
    /// How long a study job or an instance pass is claimed; jobs renew it while they run.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Confidence tiers (confidence = p for a positive call, 1 - p for a negative one).
    pub tier_high: f64,
    pub tier_medium: f64,
}

impl InferenceSettings {
    /// What starting the inference engine takes.
    pub fn engine(&self) -> crate::inference::engine::Options {
        crate::inference::engine::Options {
            models_dir: self.models_dir.clone(),
            device: self.device,
            max_batch: self.max_batch,
            queue_depth: self.queue_depth,
            torch_threads: self.torch_threads,
        }
    }

    /// The confidence tiers (`tier_high`, `tier_medium`).
    pub fn tiers(&self) -> (f64, f64) {
        (self.tier_high, self.tier_medium)
    }

    pub fn preprocess_threads(&self) -> usize {
        if self.preprocess_threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            self.preprocess_threads
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// After delivering, ask the destination to commit to the objects' safekeeping (Storage
    /// Commitment Push Model); its report is recorded per object.
    pub storage_commitment: bool,
    /// Destinations sent to at once, each in its own lane (a slow one holds only its own).
    pub lanes: usize,
    /// `/readyz` is not ready while a destination's oldest due item has waited longer.
    #[serde(with = "humantime_serde")]
    pub warn_after: Duration,
    /// `/readyz` is not ready while an item waiting for a destination failed this many times.
    pub warn_failures: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsSettings {
    /// AE titles (registered with `triage-node ae add`) that receive every result object.
    pub destinations: Vec<AeTitle>,
    /// UID root for the objects the node creates; empty: `2.25.` UUID-derived UIDs.
    pub uid_root: String,
    /// Series Number of the reports; the Secondary Captures' series is this plus one, the
    /// Parametric Maps' plus two, the rejection notes' plus three.
    pub series_number: u32,
    /// What a positive finding's heatmap is sent as, each its own object.
    pub heatmap: Vec<HeatmapObject>,
    /// Long side of a heatmap Secondary Capture's image part, in pixels.
    pub heatmap_max_size: usize,
}

/// A heatmap object kind (`[results] heatmap`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeatmapObject {
    /// The model's activation as values on the key image's grid (PS3.3 A.75; IHE AIR's choice).
    ParametricMap,
    /// The activation blended over the key image, burned in (for a PACS that cannot show a map).
    SecondaryCapture,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Load defaults, then `file` (if any), then `TRIAGE__*` environment variables; validate.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("TRIAGE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("dicom.transfer_syntax_preference")
                .with_list_parse_key("deid.safe_private")
                .with_list_parse_key("deid.burned_in_when_absent")
                .with_list_parse_key("results.destinations"),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dicom.max_associations == 0 {
            return Err(invalid("dicom.max_associations", "must be at least 1"));
        }
        if self.dicom.max_associations_per_host == 0 {
            return Err(invalid("dicom.max_associations_per_host", "must be at least 1"));
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.dicom.max_pdu_length) {
            return Err(invalid("dicom.max_pdu_length", "must be between 4096 and 16777216 bytes"));
        }
        if self.dicom.transfer_syntax_preference.is_empty() {
            return Err(invalid("dicom.transfer_syntax_preference", "must not be empty"));
        }
        for ts in &self.dicom.transfer_syntax_preference {
            if crate::dicom::sop::transfer_syntax(ts).is_none() {
                return Err(ConfigError::Invalid {
                    key: "dicom.transfer_syntax_preference",
                    reason: format!("{ts} is not a transfer syntax this node can store"),
                });
            }
        }
        for (key, list) in [("storage.accept_sop_classes", &self.storage.accept_sop_classes), ("storage.refuse_sop_classes", &self.storage.refuse_sop_classes)]
        {
            if let Some(uid) = list.iter().find(|u| crate::dicom::sop::storage_class(u).is_none()) {
                return Err(ConfigError::Invalid { key, reason: format!("{uid} is not a standard Storage SOP Class UID (conformance statement 2.2.1.1)") });
            }
        }
        if !self.storage.accept_sop_classes.is_empty() && self.storage.accept_sop_classes.iter().all(|u| self.storage.refuse_sop_classes.contains(u)) {
            return Err(invalid("storage.accept_sop_classes", "every accepted class is also refused: no modality could store anything"));
        }
        let tls = &self.dicom.tls;
        if !tls.enabled && !tls.plain_port {
            return Err(invalid("dicom.tls.plain_port", "false closes the plain port, so dicom.tls.enabled must be true (or no port would be open)"));
        }
        if tls.enabled && tls.plain_port && tls.port != 0 && tls.port == self.dicom.port {
            return Err(invalid("dicom.tls.port", "must differ from dicom.port"));
        }
        if self.dicom.artim_timeout.is_zero() || self.dicom.idle_timeout.is_zero() {
            return Err(invalid("dicom.artim_timeout/idle_timeout", "must be above zero"));
        }
        let root = &self.results.uid_root;
        if !root.is_empty()
            && (root.len() > 40 || !root.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0'))))
        {
            return Err(invalid(
                "results.uid_root",
                "must be a UID root of at most 40 characters: digits in components separated by dots, no leading zeros (or empty for 2.25 UIDs)",
            ));
        }
        let kinds = &self.results.heatmap;
        if kinds.iter().enumerate().any(|(i, k)| kinds[..i].contains(k)) {
            return Err(invalid("results.heatmap", "lists an object kind twice"));
        }
        if !(64..=4096).contains(&self.results.heatmap_max_size) {
            return Err(invalid("results.heatmap_max_size", "must be between 64 and 4096 pixels"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.ingest.mpps_max_open_steps == 0 {
            return Err(invalid("ingest.mpps_max_open_steps", "must be above zero"));
        }
        if self.ingest.study_quiet_period.is_zero() {
            return Err(invalid("ingest.study_quiet_period", "must be above zero"));
        }
        let d = &self.delivery;
        if d.poll_interval.is_zero() || d.retry_base.is_zero() || d.timeout.is_zero() || d.lease < d.timeout * 2 {
            return Err(invalid("delivery", "intervals must be above zero and the lease at least twice the timeout"));
        }
        if d.retry_max < d.retry_base || d.max_attempts == 0 {
            return Err(invalid("delivery", "retry_max must be at least retry_base, and max_attempts at least 1"));
        }
        if d.lanes == 0 || d.lanes > 256 || d.warn_after.is_zero() || d.warn_failures == 0 {
            return Err(invalid("delivery", "lanes must be 1 to 256, warn_after above zero and warn_failures at least 1"));
        }
        for entry in &self.deid.safe_private {
            crate::deid::SafePrivate::parse(entry).map_err(|reason| ConfigError::Invalid { key: "deid.safe_private", reason })?;
        }
        let i = &self.inference;
        if i.max_batch == 0 || i.queue_depth == 0 || i.concurrent_studies == 0 {
            return Err(invalid("inference", "max_batch, queue_depth and concurrent_studies must be at least 1"));
        }
        if !(0.5..=1.0).contains(&i.tier_medium) || !(i.tier_medium..=1.0).contains(&i.tier_high) {
            return Err(invalid("inference.tier_high/tier_medium", "need 0.5 <= tier_medium <= tier_high <= 1"));
        }
        if self.http.enabled && self.http.bind.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid("http.bind", "must be an IP address (0.0.0.0 for every interface)"));
        }
        if self.hl7.enabled {
            if self.hl7.host.trim().is_empty() || self.hl7.port == 0 {
                return Err(invalid("hl7.host/port", "name the RIS or interface engine's MLLP listener when hl7.enabled"));
            }
            if self.hl7.timeout.is_zero() {
                return Err(invalid("hl7.timeout", "must be above zero"));
            }
            self.hl7.mapping().validate().map_err(|reason| ConfigError::Invalid { key: "hl7", reason })?;
        }
        self.notify.validate(&self.results.destinations).map_err(|reason| ConfigError::Invalid { key: "notify", reason })?;
        if self.notify.enabled && self.delivery.lease < self.notify.timeout * 2 {
            return Err(invalid("notify.timeout", "delivery.lease must be at least twice notify.timeout"));
        }
        if self.inference.lease < Duration::from_secs(1) {
            return Err(invalid("inference.lease", "must be at least 1s"));
        }
        if self.http.refresh < Duration::from_secs(2) {
            return Err(invalid("http.refresh", "must be at least 2s"));
        }
        let h = &self.http;
        if h.header_timeout < Duration::from_secs(1) || h.header_timeout > Duration::from_secs(300) {
            return Err(invalid("http.header_timeout", "must be between 1s and 5m"));
        }
        if h.keep_alive_timeout < Duration::from_secs(1) || h.keep_alive_timeout > h.header_timeout {
            return Err(invalid(
                "http.keep_alive_timeout",
                "must be at least 1s and at most http.header_timeout (the wait for the next request's head counts against both)",
            ));
        }
        if h.request_timeout < Duration::from_secs(1) || h.request_timeout > Duration::from_secs(3600) {
            return Err(invalid("http.request_timeout", "must be between 1s and 1h"));
        }
        if !(1..=100_000).contains(&h.max_connections) || !(1..=h.max_connections).contains(&h.max_connections_per_host) {
            return Err(invalid("http.max_connections/max_connections_per_host", "need 1 <= max_connections_per_host <= max_connections <= 100000"));
        }
        if self.storage.backend == crate::blobs::Backend::S3 {
            if let Some((key, reason)) = self.storage.s3.problem() {
                return Err(invalid(key, &reason));
            }
            if !self.database.url.starts_with("postgres") {
                return Err(invalid(
                    "database.url",
                    "storage.backend = \"s3\" shares the files between nodes: the nodes must share a PostgreSQL database (postgres://...) too",
                ));
            }
        }
        let db = self.database_url();
        if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return Err(invalid("database.url", "must start with sqlite: or postgres://"));
        }
        Ok(())
    }

    /// This node's identity in a shared database: host name and absolute data directory. Stable
    /// across restarts, distinct between nodes (each owns its data directory).
    pub fn node_id(&self) -> String {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into a valid buffer.
        let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "localhost".into()
        };
        let dir = std::fs::canonicalize(&self.storage.data_dir).unwrap_or_else(|_| self.storage.data_dir.clone());
        format!("{host}:{}", dir.display())
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}?mode=rwc", self.storage.data_dir.join("triage.db").display())
        } else {
            self.database.url.clone()
        }
    }
}

impl Settings {
    /// The settings as `show-config` prints them: passwords in the database URL replaced.
    /// (Keys are never settings: only the paths of their files are.)
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        s.database.url = redact_url(&s.database.url);
        for w in &mut s.notify.webhooks {
            w.url = redact_webhook_url(&w.url);
        }
        s
    }
}

/// `scheme://user:secret@host/...?password=secret` -> the same with `<redacted>` for secrets.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "<redacted>");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword") => format!("{k}=<redacted>"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

fn invalid(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_database_urls_are_redacted() {
        assert_eq!(redact_url("postgres://triage:s3cret@db.example:5432/triage"), "postgres://triage:<redacted>@db.example:5432/triage");
        assert_eq!(
            redact_url("postgres://db/triage?user=t&password=s3cret&sslmode=require"),
            "postgres://db/triage?user=t&password=<redacted>&sslmode=require"
        );
        assert_eq!(redact_url("postgres://triage@db/x"), "postgres://triage@db/x");
        assert_eq!(redact_url("sqlite:///var/lib/triage/triage.db?mode=rwc"), "sqlite:///var/lib/triage/triage.db?mode=rwc");
        assert_eq!(redact_url(""), "");
        let mut s = Settings::load(None).unwrap();
        s.database.url = "postgres://u:p4ss@h/d".into();
        assert!(!format!("{:?}", s.redacted()).contains("p4ss"));
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::load(None).expect("defaults are valid");
        assert_eq!(s.dicom.ae_title.as_str(), "TRIAGE");
        assert_eq!(s.dicom.port, 11112);
        assert_eq!(s.dicom.bind.to_string(), "0.0.0.0");
        assert_eq!(s.ingest.study_quiet_period, Duration::from_secs(10));
        assert!(s.database_url().starts_with("sqlite://"));
        assert!(s.database_url().contains("triage.db"));
    }

    #[test]
    fn webhook_rules_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let load = |notify: &str| {
            let path = dir.path().join("n.toml");
            std::fs::write(&path, format!("[notify]\nenabled = true\n{notify}")).unwrap();
            Settings::load(Some(&path)).map_err(|e| e.to_string())
        };
        let rule = |name: &str, url: &str| format!("[[notify.webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\n");
        let s = load(&format!("link_base = \"https://triage.example/\"\n{}", rule("oncall", "https://hooks.example/t/SECRET?k=v"))).unwrap();
        let w = &s.notify.rules()[0];
        assert_eq!(w.priorities, [NotifyPriority::Urgent], "urgent by default");
        assert!(w.models.is_empty() && w.token_file.is_none());
        assert_eq!(s.notify.rule_for("webhook:oncall").map(|r| r.name.as_str()), Some("oncall"));
        assert!(s.notify.rule_for("oncall").is_none() && s.notify.rule_for("webhook:other").is_none());
        // The URL's secret path never prints.
        assert!(!format!("{:?}", s.redacted()).contains("SECRET") && !format!("{s:?}").contains("SECRET"));
        assert!(format!("{:?}", s.redacted()).contains("https://hooks.example/<redacted>"));
        // Plain http only to loopback.
        assert!(load(&rule("a", "http://127.0.0.1:9000/x")).is_ok());
        assert!(load(&rule("a", "http://[::1]:9000/x")).is_ok());
        assert!(load(&rule("a", "http://localhost/x")).is_ok());
        assert!(load(&rule("a", "http://hooks.example/x")).unwrap_err().contains("https"));
        assert!(load(&rule("a", "ftp://hooks.example/x")).unwrap_err().contains("scheme"));
        assert!(load(&rule("a", "not a url")).unwrap_err().contains("not a URL"));
        assert!(load(&rule("a", "https://user:pw@hooks.example/x")).unwrap_err().contains("token_file"));
        // Names: unique, plain.
        assert!(load(&format!("{}{}", rule("a", "https://h.example/1"), rule("a", "https://h.example/2"))).unwrap_err().contains("twice"));
        assert!(load(&rule("on call", "https://h.example/1")).unwrap_err().contains("letters"));
        assert!(load(&rule("", "https://h.example/1")).unwrap_err().contains("letters"));
        // Enabled with no rule, an empty priority list, a bad link base, a timeout past the lease.
        assert!(load("").unwrap_err().contains("at least one"));
        assert!(load(&format!("{}priorities = []\n", rule("a", "https://h.example/1"))).unwrap_err().contains("priorities"));
        assert!(load(&format!("{}priorities = [\"negative\"]\n", rule("a", "https://h.example/1"))).is_err());
        let both = load(&format!("{}priorities = [\"urgent\", \"POSITIVE\"]\nmodels = [\"demo-nodule\"]\n", rule("a", "https://h.example/1"))).unwrap();
        assert_eq!(both.notify.webhooks[0].priorities, [NotifyPriority::Urgent, NotifyPriority::Positive]);
        assert!(load(&format!("link_base = \"file:///x\"\n{}", rule("a", "https://h.example/1"))).unwrap_err().contains("link_base"));
        assert!(load(&format!("timeout = \"1h\"\n{}", rule("a", "https://h.example/1"))).unwrap_err().contains("lease"));
        // Off: the rules are not in force (and not checked).
        let path = dir.path().join("off.toml");
        std::fs::write(&path, format!("[notify]\nenabled = false\n{}", rule("a", "http://hooks.example/x"))).unwrap();
        assert!(Settings::load(Some(&path)).unwrap().notify.rules().is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[dicom]\nae_titel = \"X\"\n").unwrap();
        let err = Settings::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("ae_titel"), "{err}");
    }

    #[test]
    fn unknown_transfer_syntax_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ts.toml");
        std::fs::write(&path, "[dicom]\ntransfer_syntax_preference = [\"1.2.3\"]\n").unwrap();
        let err = Settings::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("1.2.3"), "{err}");
    }
}
