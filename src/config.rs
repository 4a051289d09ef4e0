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
    pub audit_export: AuditExportSettings,
    pub drift: DriftSettings,
    /// `[[performance.groups]]`: the site's scanner groups (absent: none).
    #[serde(default)]
    pub performance: PerformanceSettings,
    pub similar: SimilarSettings,
    pub log: LogSettings,
}

/// Similar prior cases (`admin::similar`): the search over studies' embeddings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilarSettings {
    /// Up to this many confirmed studies of a model version are searched exactly (every
    /// distance computed); above it, an approximate HNSW index is searched.
    pub exact_limit: usize,
}

impl Default for SimilarSettings {
    fn default() -> SimilarSettings {
        SimilarSettings { exact_limit: 200_000 }
    }
}

/// Live performance and drift by the site's own scanner groups, besides per scanner.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceSettings {
    #[serde(default)]
    pub groups: Vec<ScannerGroup>,
}

/// A site-defined scanner group: the studies whose key image's scanner (as the node records
/// it: "Manufacturer Model (kernel K)") matches every list given (each: any of its values,
/// letters' case and runs of spaces ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerGroup {
    /// Unique, 1 to 64 characters, shown as the group's name.
    pub name: String,
    /// Manufacturer (0008,0070): the scanner name starts with it.
    #[serde(default)]
    pub manufacturers: Vec<String>,
    /// Manufacturer's Model Name (0008,1090): the scanner name (before its kernel) ends with it.
    #[serde(default)]
    pub models: Vec<String>,
    /// Convolution Kernel (0018,1210): one of the kernel's values is it.
    #[serde(default)]
    pub kernels: Vec<String>,
}

impl ScannerGroup {
    /// Whether the recorded `scanner` ("Manufacturer Model (kernel K1/K2)") is in the group.
    pub fn matches(&self, scanner: &str) -> bool {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let scanner = norm(scanner);
        let (device, kernel) = match scanner.strip_suffix(')').and_then(|s| s.rsplit_once(" (kernel ")) {
            Some((device, kernel)) => (device.to_string(), Some(kernel.to_string())),
            None => (scanner.clone(), None),
        };
        let any = |list: &[String], test: &dyn Fn(&str) -> bool| list.is_empty() || list.iter().map(|v| norm(v)).any(|v| !v.is_empty() && test(&v));
        any(&self.manufacturers, &|m| device == m || device.starts_with(&format!("{m} ")))
            && any(&self.models, &|m| device == m || device.ends_with(&format!(" {m}")))
            && any(&self.kernels, &|k| kernel.as_deref().is_some_and(|kernel| kernel.split('/').any(|x| x == k)))
    }
}

impl PerformanceSettings {
    fn validate(&self) -> Result<(), String> {
        for (i, g) in self.groups.iter().enumerate() {
            if g.name.trim().is_empty() || g.name.chars().count() > 64 || g.name.chars().any(char::is_control) {
                return Err(format!("{:?} must be 1 to 64 characters, no control characters", g.name));
            }
            if self.groups[..i].iter().any(|o| o.name == g.name) {
                return Err(format!("the name {:?} is used twice", g.name));
            }
            if g.manufacturers.is_empty() && g.models.is_empty() && g.kernels.is_empty() {
                return Err(format!("{}: name at least one of manufacturers, models, kernels", g.name));
            }
        }
        Ok(())
    }
}

/// Score drift per model and label against the package's reference.json (`admin::drift`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    /// The newest this many triaged studies of a model version make the live distribution.
    pub window: usize,
    /// Below this many, nothing is said.
    pub min_studies: usize,
    /// PSI at or above it is a warning (status, /readyz, a metric, the log).
    pub threshold: f64,
    /// How often a crossing of the threshold is looked for, to tell the `[[notify.rules]]` with
    /// `drift = true` (once per crossing).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for DriftSettings {
    fn default() -> DriftSettings {
        DriftSettings { window: 200, min_studies: 50, threshold: 0.25, check_interval: Duration::from_secs(60) }
    }
}

/// The audit trail exported to the site's audit record repository (IHE ATNA): each entry, in
/// order, as a DICOM Audit Message over syslog (RFC 5424 framing, RFC 5425 TLS transport).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditExportSettings {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// `tls` (RFC 5425) or `tcp` (plain, only to a loopback host: a relay on this machine).
    pub transport: AuditTransport,
    /// CA certificates (PEM) that sign the repository's certificate.
    pub ca_file: Option<PathBuf>,
    /// Our client certificate chain and key (PEM), for a repository that asks for one.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Connect, handshake and write bounded by this.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the trail is read for new entries when idle.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Whether messages name the patients their entries concern (a Patient participant object,
    /// from the sealed map; each batch that opens it is audited first).
    pub patient_identity: PatientIdentity,
}

/// What of a patient's identity the audit export puts in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatientIdentity {
    /// None: the messages name only de-identified studies and rows (the default).
    None,
    /// The Patient ID with its issuer.
    Id,
    /// The Patient ID with its issuer, and the name.
    IdAndName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditTransport {
    Tls,
    Tcp,
}

impl AuditExportSettings {
    fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.host.trim().is_empty() || self.port == 0 {
            return Err("audit_export.host/port: name the audit record repository's syslog listener".into());
        }
        if self.timeout.is_zero() || self.poll_interval.is_zero() {
            return Err("audit_export.timeout and poll_interval must be above zero".into());
        }
        match self.transport {
            AuditTransport::Tls => {
                if self.ca_file.is_none() {
                    return Err("audit_export.ca_file: name the CA that signs the repository's certificate (transport = tls)".into());
                }
                if self.certificate.is_some() != self.private_key.is_some() {
                    return Err("audit_export.certificate and private_key go together".into());
                }
            }
            AuditTransport::Tcp => {
                let loopback = matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1");
                if !loopback {
                    return Err("audit_export.transport = tcp is only for a relay on this machine (localhost, 127.0.0.1, ::1): use tls".into());
                }
            }
        }
        Ok(())
    }
}

/// Notifications of studies a rule matches (URGENT by default), through the outbox: a
/// de-identified JSON document POSTed to a webhook, or the same content e-mailed, once per
/// study and rule; unacknowledged in time, the next rule of the chain (`escalate_to`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    pub enabled: bool,
    /// The worklist page as readers reach it (`https://triage.example/`): a notification links
    /// to the study there (`<link_base>#/study/<id>`) and to its acknowledgement
    /// (`<link_base>/ack/<token>`). Empty: no links.
    pub link_base: String,
    /// One POST or one SMTP session may take this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `[[notify.rules]]`; `[[notify.webhooks]]` is read the same (this section's first name).
    #[serde(default, alias = "webhooks")]
    pub rules: Vec<NotifyRule>,
    /// The mail server e-mail rules send through.
    #[serde(default)]
    pub smtp: SmtpSettings,
}

/// One rule: which studies it is told about, where (a webhook `url` or `email` recipients), and
/// whom it escalates to when nobody acknowledges.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRule {
    /// Unique; the outbox destination is `webhook:<name>` or `email:<name>`. Letters, digits,
    /// `-` and `_`.
    pub name: String,
    /// A webhook: `https://...`; plain `http://` only to a loopback host. Never logged.
    #[serde(default)]
    pub url: Option<String>,
    /// E-mail recipients (through `[notify.smtp]`). Never logged.
    #[serde(default)]
    pub email: Vec<String>,
    /// The study priorities that notify (default: urgent only). Empty: the rule is only reached
    /// by escalation.
    #[serde(default = "urgent_only")]
    pub priorities: Vec<NotifyPriority>,
    /// Only studies where one of these models gave the priority; empty: any model.
    #[serde(default)]
    pub models: Vec<String>,
    /// A webhook's bearer token file, sent as `Authorization: Bearer ...` (read at each send).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Unacknowledged this long after the notification was made, the chain escalates to the
    /// rule `escalate_to` names (both or neither).
    #[serde(default, with = "humantime_serde::option")]
    pub escalate_after: Option<Duration>,
    #[serde(default)]
    pub escalate_to: Option<String>,
    /// Only studies with a positive finding of these labels (as the models name them); empty:
    /// any finding.
    #[serde(default)]
    pub findings: Vec<String>,
    /// Only studies of these modalities (`CT`, `CR`, ...); empty: any.
    #[serde(default)]
    pub modalities: Vec<String>,
    /// Only while the node's local time is within `"HH:MM-HH:MM"` (it may wrap midnight:
    /// `"18:00-08:00"`); unset: at any hour. Escalation reaches a rule at any hour.
    #[serde(default)]
    pub hours: Option<String>,
    /// A webhook's body as the receiver wants it (a chat service's `{"text": "{summary}"}`):
    /// JSON with placeholders `{id}`, `{rule}`, `{level}`, `{status}`, `{priority}`, `{study}`,
    /// `{link}`, `{acknowledge}`, `{findings}`, `{summary}`, each replaced by its value escaped
    /// for a JSON string. Unset: the notice's own JSON.
    #[serde(default)]
    pub template: Option<String>,
    /// Send a small preview of the first positive finding's heatmap (PNG, 256 pixels, the same
    /// picture as the heatmap Secondary Capture, labelled "not for diagnosis"): in the JSON as
    /// `preview`, attached to an e-mail. De-identified pixels, but a picture of the patient:
    /// off by default.
    #[serde(default)]
    pub preview: bool,
    /// Also told when a model's score distribution drifts (`[drift]`): once per crossing of the
    /// threshold, at any hour, for the rule's `models` (empty: any); `priorities`,
    /// `findings`, `modalities` and `hours` are about studies and do not apply.
    #[serde(default)]
    pub drift: bool,
}

/// What a rule sends through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Webhook,
    Email,
}

impl NotifyRule {
    pub fn channel(&self) -> Channel {
        if self.url.is_some() {
            Channel::Webhook
        } else {
            Channel::Email
        }
    }

    /// The outbox destination of the rule's notifications.
    pub fn destination(&self) -> String {
        match self.channel() {
            Channel::Webhook => format!("{WEBHOOK_PREFIX}{}", self.name),
            Channel::Email => format!("{EMAIL_PREFIX}{}", self.name),
        }
    }
}

impl std::fmt::Debug for NotifyRule {
    /// The URL's path and query may carry a secret (many webhook services put one there); the
    /// addresses are people's.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyRule")
            .field("name", &self.name)
            .field("url", &self.url.as_deref().map(redact_webhook_url))
            .field("email", &format!("<{} recipients>", self.email.len()))
            .field("priorities", &self.priorities)
            .field("models", &self.models)
            .field("token_file", &self.token_file)
            .field("escalate_after", &self.escalate_after)
            .field("escalate_to", &self.escalate_to)
            .field("findings", &self.findings)
            .field("modalities", &self.modalities)
            .field("hours", &self.hours)
            .field("template", &self.template.as_ref().map(|t| t.len()))
            .field("preview", &self.preview)
            .field("drift", &self.drift)
            .finish()
    }
}

/// How the SMTP session is protected.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// STARTTLS required (port 587): a server that does not offer it is not sent to.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only to a loopback host (a local relay).
    Plain,
}

/// The mail server e-mail rules send through.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// Empty: no authentication.
    pub username: String,
    /// The password, read at each send (never in this file, never logged).
    pub password_file: Option<PathBuf>,
    /// The sender address.
    pub from: String,
    /// A CA certificate (PEM) trusted besides the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// The name said in EHLO (empty: the node id).
    pub helo_name: String,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            host: String::new(),
            port: 587,
            security: SmtpSecurity::Starttls,
            username: String::new(),
            password_file: None,
            from: String::new(),
            ca_file: None,
            helo_name: String::new(),
        }
    }
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &(!self.username.is_empty()).then_some("<set>"))
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
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

/// What every webhook destination starts with (an AE title cannot be one of them: see
/// `NotifySettings::validate`).
pub const WEBHOOK_PREFIX: &str = "webhook:";
/// What every e-mail destination starts with.
pub const EMAIL_PREFIX: &str = "email:";

/// An address a rule may send to: one `@` with text either side, no spaces, controls, angle
/// brackets or commas (nothing that could end a header or add a recipient).
pub fn plain_address(a: &str) -> bool {
    let mut parts = a.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && a.len() <= 254
        && a.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')' | '[' | ']' | '\\'))
}

impl NotifySettings {
    /// The rules in force (none when notifications are off).
    pub fn rules(&self) -> &[NotifyRule] {
        if self.enabled {
            &self.rules
        } else {
            &[]
        }
    }

    /// The rule a destination (`webhook:<name>`, `email:<name>`) names.
    pub fn rule_for(&self, destination: &str) -> Option<&NotifyRule> {
        self.rules().iter().find(|r| r.destination() == destination)
    }

    /// The rule named `name`.
    pub fn rule_named(&self, name: &str) -> Option<&NotifyRule> {
        self.rules().iter().find(|r| r.name == name)
    }

    /// Names unique and plain; a webhook's URL http(s) (https unless the host is loopback),
    /// no credentials in it (a token file instead); e-mail addresses plain, with a mail server
    /// and a sender; escalation to a rule that exists, with a delay, never round a cycle; a
    /// rule matches some priority unless escalation reaches it.
    pub fn validate(&self, destinations: &[AeTitle]) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.rules.is_empty() {
            return Err("notify.enabled needs at least one [[notify.rules]] rule".into());
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
        for (i, rule) in self.rules.iter().enumerate() {
            let name = &rule.name;
            if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("notify.rules: {name:?} must be 1 to 32 letters, digits, '-' or '_'"));
            }
            if self.rules[..i].iter().any(|r| r.name == *name) {
                return Err(format!("notify.rules: the name {name:?} is used twice"));
            }
            if destinations.iter().any(|d| d.as_str() == rule.destination()) {
                return Err(format!("notify.rules: results.destinations names the AE {:?}, the rule's outbox destination", rule.destination()));
            }
            match (&rule.url, rule.email.is_empty()) {
                (Some(url), true) => validate_webhook_url(name, url)?,
                (None, false) => {
                    if let Some(bad) = rule.email.iter().position(|a| !plain_address(a)) {
                        return Err(format!("notify.rules {name}: e-mail address {} is not a plain address (name@domain)", bad + 1));
                    }
                    if self.smtp.host.is_empty() || !plain_address(&self.smtp.from) {
                        return Err(format!("notify.rules {name}: e-mail needs [notify.smtp] host and a plain from address"));
                    }
                    if rule.token_file.is_some() {
                        return Err(format!("notify.rules {name}: token_file is for webhooks"));
                    }
                }
                (Some(_), false) => return Err(format!("notify.rules {name}: either url (a webhook) or email, not both")),
                (None, true) => return Err(format!("notify.rules {name}: needs a webhook url or email recipients")),
            }
            let escalated_to = self.rules.iter().any(|r| r.escalate_to.as_deref() == Some(name.as_str()));
            if rule.priorities.is_empty() && !escalated_to && !rule.drift {
                return Err(format!("notify.rules {name}: priorities must not be empty (or another rule must escalate to it, or it says drift = true)"));
            }
            if rule.token_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(format!("notify.rules {name}: token_file is empty (leave it out for no token)"));
            }
            if let Some(hours) = &rule.hours {
                parse_hours(hours)
                    .ok_or_else(|| format!("notify.rules {name}: hours must be \"HH:MM-HH:MM\" (local time; it may wrap midnight), not {hours:?}"))?;
            }
            if let Some(template) = &rule.template {
                if rule.url.is_none() {
                    return Err(format!("notify.rules {name}: template is for webhooks"));
                }
                check_template(template).map_err(|why| format!("notify.rules {name}: template: {why}"))?;
            }
            match (&rule.escalate_to, rule.escalate_after) {
                (None, None) => {}
                (Some(to), Some(after)) => {
                    if after.is_zero() {
                        return Err(format!("notify.rules {name}: escalate_after must be above zero"));
                    }
                    if !self.rules.iter().any(|r| r.name == *to) || to == name {
                        return Err(format!("notify.rules {name}: escalate_to names no other rule ({to:?})"));
                    }
                }
                _ => return Err(format!("notify.rules {name}: escalate_to and escalate_after go together")),
            }
            // Follow the chain: it must end.
            let mut seen = vec![name.as_str()];
            let mut at = rule;
            while let Some(next) = at.escalate_to.as_deref().and_then(|to| self.rules.iter().find(|r| r.name == to)) {
                if seen.contains(&next.name.as_str()) {
                    return Err(format!("notify.rules {name}: escalation goes round a cycle ({} -> {})", seen.join(" -> "), next.name));
                }
                seen.push(&next.name);
                at = next;
            }
        }
        if self.smtp.security == SmtpSecurity::Plain && !self.smtp.host.is_empty() && !loopback_host(&self.smtp.host) {
            return Err("notify.smtp: security = \"plain\" only to a loopback host; use starttls or tls".into());
        }
        Ok(())
    }
}

/// `"HH:MM-HH:MM"` as minutes of the day (start, end).
pub fn parse_hours(s: &str) -> Option<(u32, u32)> {
    let minutes = |t: &str| {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && t.trim().len() == 5).then_some(h * 60 + m)
    };
    let (a, b) = s.split_once('-')?;
    let (a, b) = (minutes(a)?, minutes(b)?);
    (a != b).then_some((a, b))
}

/// Whether minute-of-day `now` falls in `hours` (`"18:00-08:00"` wraps midnight).
pub fn within_hours(hours: &str, now: u32) -> bool {
    match parse_hours(hours) {
        Some((a, b)) if a < b => (a..b).contains(&now),
        Some((a, b)) => now >= a || now < b,
        None => false,
    }
}

/// The placeholders a webhook template may use.
pub const TEMPLATE_FIELDS: [&str; 10] = ["id", "rule", "level", "status", "priority", "study", "link", "acknowledge", "findings", "summary"];

/// A template names known placeholders only and, filled in, is JSON.
fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find('}') {
            let name = &after[..close];
            if name.chars().all(|c| c.is_ascii_lowercase()) && !name.is_empty() && !TEMPLATE_FIELDS.contains(&name) {
                return Err(format!("unknown placeholder {{{name}}} (known: {})", TEMPLATE_FIELDS.join(", ")));
            }
        }
        rest = after;
    }
    let sample = fill_template(template, |_| "x \" y".to_string());
    serde_json::from_str::<serde_json::Value>(&sample).map(|_| ()).map_err(|e| format!("filled in, it is not JSON ({e})"))
}

/// `template` with each known `{name}` replaced by `value(name)` escaped for a JSON string (one
/// pass: a value is never read for placeholders).
pub fn fill_template(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').map(|close| (&after[..close], close)).filter(|(name, _)| TEMPLATE_FIELDS.contains(name)) {
            Some((name, close)) => {
                let escaped = serde_json::to_string(&value(name)).unwrap_or_default();
                out.push_str(&escaped[1..escaped.len() - 1]);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

fn validate_webhook_url(name: &str, url: &str) -> Result<(), String> {
    let url = reqwest13::Url::parse(url).map_err(|e| format!("notify.rules {name}: the url is not a URL ({e})"))?;
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(format!("notify.rules {name}: the url has no host"));
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback_host(host) => {}
        "http" => return Err(format!("notify.rules {name}: plain http only to a loopback host; use https")),
        other => return Err(format!("notify.rules {name}: the url's scheme is {other:?}, not http(s)")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("notify.rules {name}: no credentials in the url; put a bearer token in token_file"));
    }
    Ok(())
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
    /// After the ORU^R01, an order message raising the order's priority: `none`, `omi`
    /// (OMI^O23, v2.5.1) or `orm` (ORM^O01, older RIS).
    pub order_update: crate::hl7::OrderUpdate,
    /// The study priorities that send one: `urgent` (STAT) and/or `positive` (ASAP).
    pub order_update_priorities: Vec<NotifyPriority>,
    /// A reader's verdict on an AI finding sends the RIS a follow-up ORU^R01 (a correction
    /// with the study's verdicts).
    #[serde(default)]
    pub feedback: bool,
    /// The reader's comment in it too (free text: may name the patient; off by default).
    #[serde(default)]
    pub feedback_comment: bool,
}

/// `[hl7] order_update` as the publisher needs it (style None when HL7 is off).
#[derive(Debug, Clone, Default)]
pub struct OrderUpdateSettings {
    pub style: crate::hl7::OrderUpdate,
    pub priorities: Vec<NotifyPriority>,
}

impl OrderUpdateSettings {
    /// The order message a study at `priority` (the worklist's spelling) gets after its ORU.
    pub fn for_priority(&self, priority: &str) -> Option<crate::hl7::OrderUpdate> {
        (!self.style.is_none() && self.priorities.iter().any(|p| p.as_str() == priority)).then_some(self.style)
    }
}

impl Hl7Settings {
    /// The follow-up a reader's verdict sends: None while HL7 or `feedback` is off, else
    /// whether the comment goes too.
    pub fn feedback_follow_up(&self) -> Option<bool> {
        (self.enabled && self.feedback).then_some(self.feedback_comment)
    }

    /// The order update the publisher queues (none while HL7 is off).
    pub fn order_update(&self) -> OrderUpdateSettings {
        match self.enabled {
            true => OrderUpdateSettings { style: self.order_update, priorities: self.order_update_priorities.clone() },
            false => OrderUpdateSettings::default(),
        }
    }

    /// The order message a study at `priority` (the worklist's spelling) gets after its ORU.
    pub fn order_update_for(&self, priority: &str) -> Option<crate::hl7::OrderUpdate> {
        self.order_update().for_priority(priority)
    }

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
    /// STOW-RS (`POST /dicomweb/studies`): the most bytes one part (one instance) and one
    /// request may have; past either the request is answered 413.
    pub stow_max_part: ByteSize,
    pub stow_max_request: ByteSize,
    /// Single sign-on: the identity provider's access tokens (`http::oidc`).
    pub oidc: OidcSettings,
}

/// `[http.oidc]`: the page signs in at an OpenID provider (authorization code + PKCE, a
/// public client) and the API accepts its access tokens (JWT, RS256 or ES256, checked against
/// its JWKS). The static tokens keep working beside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    pub enabled: bool,
    /// The provider's issuer URL (its discovery document is `<issuer>/.well-known/openid-configuration`);
    /// https, except on a loopback address.
    pub issuer: String,
    /// The `aud` the provider puts in access tokens for this node (its resource indicator).
    pub audience: String,
    /// The page's client id at the provider (a public client: no secret).
    pub client_id: String,
    /// What the page asks for.
    pub scopes: String,
    /// The claim naming the user (shown on the page, in the access log and audit trail).
    pub name_claim: String,
    /// The claim with the user's roles or groups (a string or a list of strings), and which of
    /// its values make a reader or an admin (admin wins).
    pub roles_claim: String,
    pub reader_values: Vec<String>,
    pub admin_values: Vec<String>,
    /// Tolerance on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// A token signed with an unknown key makes the node fetch the JWKS again, at most this often.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
}

impl OidcSettings {
    /// Why these settings cannot be used, if enabled.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !self.enabled {
            return None;
        }
        let Ok(url) = reqwest13::Url::parse(&self.issuer) else {
            return Some(("http.oidc.issuer", "must be the provider's issuer URL".into()));
        };
        let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Some(("http.oidc.issuer", "must be https (plain http only to a loopback address)".into()));
        }
        if self.audience.trim().is_empty() {
            return Some(("http.oidc.audience", "must name the audience the provider gives this node's access tokens".into()));
        }
        if self.client_id.trim().is_empty() {
            return Some(("http.oidc.client_id", "must name the page's client at the provider".into()));
        }
        if self.name_claim.is_empty() || self.roles_claim.is_empty() {
            return Some(("http.oidc.name_claim/roles_claim", "must name a claim".into()));
        }
        if self.reader_values.is_empty() && self.admin_values.is_empty() {
            return Some(("http.oidc.reader_values/admin_values", "at least one claim value must map to a role".into()));
        }
        if self.clock_skew > Duration::from_secs(600) {
            return Some(("http.oidc.clock_skew", "must be at most 10m".into()));
        }
        if self.jwks_min_refresh < Duration::from_secs(1) {
            return Some(("http.oidc.jwks_min_refresh", "must be at least 1s".into()));
        }
        None
    }
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
    /// libtorch intra-op threads of the engine thread (and ONNX Runtime's per session); 0 = one
    /// per CPU core but one.
    pub torch_threads: usize,
    /// `libonnxruntime.so` for ONNX packages (`model.onnx`); unset: `ORT_DYLIB_PATH`, else the
    /// onnxruntime wheel of the venv the node was built against. Opened only if a package needs it.
    #[serde(default)]
    pub onnxruntime_library: Option<PathBuf>,
    /// ONNX Runtime's execution provider: `cpu`, or `cuda` / `cuda:N` (the library must have it).
    pub onnx_provider: crate::inference::onnx::Provider,
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
            onnxruntime_library: self.onnxruntime_library.clone(),
            onnx_provider: self.onnx_provider,
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
    /// AE titles (registered) of UPS Push SCPs (the site's worklist manager) that get a
    /// Unified Procedure Step per study whose priority `ups_priorities` lists; empty: none.
    pub ups: Vec<AeTitle>,
    /// The study priorities that create a workitem: `urgent` (Scheduled Procedure Step
    /// Priority HIGH) and/or `positive` (MEDIUM).
    pub ups_priorities: Vec<NotifyPriority>,
    /// DICOMweb archives (`[[results.dicomweb]]`) that receive every result object by STOW-RS,
    /// as `destinations` do by C-STORE; empty: none.
    #[serde(default)]
    pub dicomweb: Vec<DicomwebDestination>,
}

/// What every DICOMweb (STOW-RS) destination starts with (no configured AE title may).
pub const DICOMWEB_PREFIX: &str = "dicomweb:";

/// How a DICOMweb destination authenticates.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DicomwebAuth {
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic` with `username` and the password.
    Basic,
}

/// A DICOMweb archive that receives result objects by STOW-RS (`POST {url}/studies`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomwebDestination {
    /// Unique; the outbox destination is `dicomweb:<name>`. Letters, digits, `-` and `_`.
    pub name: String,
    /// The service's base URL (`https://archive.example/dicomweb`); plain `http://` only to a
    /// loopback host; no credentials, query or fragment in it.
    pub url: String,
    #[serde(default)]
    pub auth: DicomwebAuth,
    /// The bearer token (`auth = "bearer"`), read at each send; the environment variable
    /// `TRIAGE_DICOMWEB_<NAME>_TOKEN` wins over it.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The user (`auth = "basic"`).
    #[serde(default)]
    pub username: String,
    /// The password (`auth = "basic"`), read at each send; `TRIAGE_DICOMWEB_<NAME>_PASSWORD`
    /// wins over it.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A CA certificate (PEM) trusted besides the platform's roots (the site's own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// One request (connect, send, answer) may take this long.
    #[serde(default = "dicomweb_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn dicomweb_timeout() -> Duration {
    Duration::from_secs(30)
}

impl DicomwebDestination {
    /// The outbox destination of the objects sent here.
    pub fn destination(&self) -> String {
        format!("{DICOMWEB_PREFIX}{}", self.name)
    }

    /// The environment variable that holds this destination's `what` (`TOKEN`, `PASSWORD`).
    pub fn secret_env(&self, what: &str) -> String {
        format!("TRIAGE_DICOMWEB_{}_{what}", self.name.to_ascii_uppercase().replace('-', "_"))
    }

    fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("{name:?} must be 1 to 32 letters, digits, '-' or '_'"));
        }
        let url = reqwest13::Url::parse(&self.url).map_err(|e| format!("{name}: the url is not a URL ({e})"))?;
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(format!("{name}: the url has no host"));
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback_host(host) => {}
            "http" => return Err(format!("{name}: plain http only to a loopback host; use https")),
            other => return Err(format!("{name}: the url's scheme is {other:?}, not http(s)")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{name}: no credentials in the url; use auth with token_file or password_file"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{name}: the url is the service's base (STOW-RS goes to <url>/studies): no query or fragment"));
        }
        let set = |f: &Option<PathBuf>| f.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
        let env = |what: &str| std::env::var(self.secret_env(what)).is_ok_and(|v| !v.trim().is_empty());
        match self.auth {
            DicomwebAuth::None if set(&self.token_file) || set(&self.password_file) || !self.username.is_empty() => {
                return Err(format!("{name}: credentials given but auth = \"none\" (say auth = \"bearer\" or \"basic\")"));
            }
            DicomwebAuth::None => {}
            DicomwebAuth::Bearer if !set(&self.token_file) && !env("TOKEN") => {
                return Err(format!("{name}: auth = \"bearer\" needs token_file (or {})", self.secret_env("TOKEN")));
            }
            DicomwebAuth::Basic if self.username.is_empty() || self.username.contains(':') => {
                return Err(format!("{name}: auth = \"basic\" needs a username without ':'"));
            }
            DicomwebAuth::Basic if !set(&self.password_file) && !env("PASSWORD") => {
                return Err(format!("{name}: auth = \"basic\" needs password_file (or {})", self.secret_env("PASSWORD")));
            }
            DicomwebAuth::Bearer | DicomwebAuth::Basic => {}
        }
        if self.timeout.is_zero() {
            return Err(format!("{name}: timeout must be above zero"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for DicomwebDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomwebDestination")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("auth", &self.auth)
            .field("token_file", &self.token_file)
            .field("username", &(!self.username.is_empty()).then_some("<set>"))
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The outbox destination of UPS workitems for the SCP `ae` (a lane of its own, apart from
/// the result objects a PACS of the same AE title gets).
pub fn ups_destination(ae: &AeTitle) -> String {
    format!("{UPS_PREFIX}{ae}")
}

/// What every UPS destination starts with (no configured AE title may: see
/// `ResultsSettings::validate_ups`).
pub const UPS_PREFIX: &str = "ups:";

impl ResultsSettings {
    /// `ups` and `ups_priorities`: each AE once, each priority once, a priority when an AE
    /// is named.
    pub fn validate_ups(&self) -> Result<(), String> {
        if self.ups.iter().enumerate().any(|(i, a)| self.ups[..i].contains(a)) {
            return Err("ups names an AE title twice".into());
        }
        if self.ups.iter().chain(&self.destinations).any(|a| a.as_str().starts_with(UPS_PREFIX)) {
            return Err(format!("an AE title may not start with {UPS_PREFIX:?} (the outbox's UPS destinations do)"));
        }
        let p = &self.ups_priorities;
        if p.iter().enumerate().any(|(i, x)| p[..i].contains(x)) {
            return Err("ups_priorities lists a priority twice".into());
        }
        if !self.ups.is_empty() && p.is_empty() {
            return Err("ups_priorities must list urgent and/or positive when ups names an AE".into());
        }
        Ok(())
    }

    /// `dicomweb`: each destination valid, names unique, no AE title taken for one of them.
    pub fn validate_dicomweb(&self) -> Result<(), String> {
        for (i, d) in self.dicomweb.iter().enumerate() {
            d.validate()?;
            if self.dicomweb[..i].iter().any(|o| o.name == d.name) {
                return Err(format!("the name {:?} is used twice", d.name));
            }
        }
        if self.ups.iter().chain(&self.destinations).any(|a| a.as_str().starts_with(DICOMWEB_PREFIX)) {
            return Err(format!("an AE title may not start with {DICOMWEB_PREFIX:?} (the outbox's DICOMweb destinations do)"));
        }
        Ok(())
    }

    /// Every outbox destination result objects are queued for: the AE titles, then the
    /// DICOMweb destinations.
    pub fn object_destinations(&self) -> Vec<String> {
        self.destinations.iter().map(|d| d.to_string()).chain(self.dicomweb.iter().map(DicomwebDestination::destination)).collect()
    }

    /// Whether a study at `priority` (the worklist's spelling) gets a workitem.
    pub fn ups_for(&self, priority: &str) -> bool {
        !self.ups.is_empty() && self.ups_priorities.iter().any(|p| p.as_str() == priority)
    }
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
                .with_list_parse_key("http.oidc.reader_values")
                .with_list_parse_key("http.oidc.admin_values")
                .with_list_parse_key("deid.burned_in_when_absent")
                .with_list_parse_key("results.destinations")
                .with_list_parse_key("results.ups")
                .with_list_parse_key("results.ups_priorities")
                .with_list_parse_key("hl7.order_update_priorities"),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.drift.window == 0 || self.drift.min_studies == 0 || self.drift.min_studies > self.drift.window {
            return Err(invalid("drift.min_studies", "must be at least 1 and at most drift.window"));
        }
        if !(self.drift.threshold > 0.0 && self.drift.threshold.is_finite()) {
            return Err(invalid("drift.threshold", "must be a positive number (0.25 is the usual line)"));
        }
        if self.drift.check_interval.is_zero() {
            return Err(invalid("drift.check_interval", "must be above zero"));
        }
        if let Err(reason) = self.performance.validate() {
            return Err(ConfigError::Invalid { key: "performance.groups", reason });
        }
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
        self.results.validate_ups().map_err(|reason| ConfigError::Invalid { key: "results.ups", reason })?;
        self.results.validate_dicomweb().map_err(|reason| ConfigError::Invalid { key: "results.dicomweb", reason })?;
        if self.results.dicomweb.iter().any(|d| self.delivery.lease < d.timeout * 2) {
            return Err(invalid("results.dicomweb.timeout", "delivery.lease must be at least twice each DICOMweb destination's timeout"));
        }
        if self.hl7.order_update != crate::hl7::OrderUpdate::None && self.hl7.order_update_priorities.is_empty() {
            return Err(invalid("hl7.order_update_priorities", "must list urgent and/or positive when hl7.order_update is omi or orm"));
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
        self.audit_export.validate().map_err(|reason| ConfigError::Invalid { key: "audit_export", reason })?;
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
        if let Some((key, reason)) = h.oidc.problem() {
            return Err(invalid(key, &reason));
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
        for r in &mut s.notify.rules {
            r.url = r.url.as_deref().map(redact_webhook_url);
            r.email = r.email.iter().map(|_| "<redacted>".to_string()).collect();
        }
        for d in &mut s.results.dicomweb {
            d.url = redact_url(&d.url);
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
    fn a_scanner_group_matches_the_recorded_scanner_by_its_parts() {
        let group = |m: &[&str], models: &[&str], k: &[&str]| ScannerGroup {
            name: "g".into(),
            manufacturers: m.iter().map(|s| s.to_string()).collect(),
            models: models.iter().map(|s| s.to_string()).collect(),
            kernels: k.iter().map(|s| s.to_string()).collect(),
        };
        let ct = "SIEMENS SOMATOM Force (kernel Br40d/3)";
        assert!(group(&["siemens"], &[], &[]).matches(ct));
        assert!(group(&["GE", "Siemens"], &["SOMATOM  Force"], &["Br40d"]).matches(ct));
        assert!(!group(&["SIEM"], &[], &[]).matches(ct), "a whole word, not a prefix of one");
        assert!(!group(&[], &["Force"], &["Br36"]).matches(ct), "every list given must match");
        assert!(!group(&[], &[], &["Br40d"]).matches("SIEMENS SOMATOM Force"), "no kernel recorded");
        let cr = "Philips Medical Systems Cassette Holder Type 9840 500 70201";
        assert!(group(&["Philips Medical Systems"], &["Cassette Holder Type 9840 500 70201"], &[]).matches(cr));
        assert!(!group(&["Philips Medical Systems"], &[], &["B30f"]).matches(cr));
        let settings = |groups: Vec<ScannerGroup>| PerformanceSettings { groups }.validate();
        assert!(settings(vec![group(&["GE"], &[], &[])]).is_ok());
        assert!(settings(vec![group(&[], &[], &[])]).unwrap_err().contains("at least one"));
        assert!(settings(vec![group(&["GE"], &[], &[]), group(&["X"], &[], &[])]).unwrap_err().contains("twice"));
    }

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
    fn ups_and_order_update_settings_are_validated() {
        let s = Settings::load(None).unwrap();
        assert!(s.results.ups.is_empty() && !s.results.ups_for("URGENT"), "off by default");
        assert_eq!(s.results.ups_priorities, vec![NotifyPriority::Urgent]);
        assert_eq!((s.hl7.order_update, s.hl7.order_update_for("URGENT")), (crate::hl7::OrderUpdate::None, None));
        let check = |f: &dyn Fn(&mut Settings), ok: bool| {
            let mut s = Settings::load(None).unwrap();
            f(&mut s);
            assert_eq!(s.validate().is_ok(), ok, "{:?}", s.validate().err());
            s
        };
        let ae = |a: &str| AeTitle::parse(a).unwrap();
        let s = check(&|s| s.results.ups = vec![ae("RISUPS")], true);
        assert!(s.results.ups_for("URGENT") && !s.results.ups_for("POSITIVE"));
        assert_eq!(ups_destination(&s.results.ups[0]), "ups:RISUPS");
        check(&|s| s.results.ups = vec![ae("RISUPS"), ae("RISUPS")], false);
        check(&|s| s.results.ups = vec![ae("ups:X")], false);
        check(&|s| (s.results.ups, s.results.ups_priorities) = (vec![ae("RISUPS")], vec![]), false);
        check(&|s| s.results.ups_priorities = vec![NotifyPriority::Urgent, NotifyPriority::Urgent], false);
        let s = check(&|s| s.results.ups_priorities = vec![NotifyPriority::Urgent, NotifyPriority::Positive], true);
        assert!(!s.results.ups_for("POSITIVE"), "no AE: no workitem");
        let mut s = check(&|s| (s.hl7.enabled, s.hl7.host, s.hl7.order_update) = (true, "ris".into(), crate::hl7::OrderUpdate::Omi), true);
        assert_eq!((s.hl7.order_update_for("URGENT"), s.hl7.order_update_for("POSITIVE")), (Some(crate::hl7::OrderUpdate::Omi), None));
        s.hl7.enabled = false;
        assert_eq!(s.hl7.order_update_for("URGENT"), None, "HL7 off: no order message");
        check(&|s| (s.hl7.order_update, s.hl7.order_update_priorities) = (crate::hl7::OrderUpdate::Orm, vec![]), false);
        // The spelling in a file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[results]\nups = [\"RISUPS\"]\nups_priorities = [\"urgent\", \"positive\"]\n[hl7]\norder_update = \"orm\"\n").unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!((s.results.ups.len(), s.results.ups_priorities.len(), s.hl7.order_update), (1, 2, crate::hl7::OrderUpdate::Orm));
        std::fs::write(&file, "[hl7]\norder_update = \"oml\"\n").unwrap();
        assert!(Settings::load(Some(&file)).is_err(), "an unknown order message is refused");
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
        assert_eq!(both.notify.rules[0].priorities, [NotifyPriority::Urgent, NotifyPriority::Positive]);
        assert!(load(&format!("link_base = \"file:///x\"\n{}", rule("a", "https://h.example/1"))).unwrap_err().contains("link_base"));
        assert!(load(&format!("timeout = \"1h\"\n{}", rule("a", "https://h.example/1"))).unwrap_err().contains("lease"));
        // Off: the rules are not in force (and not checked).
        let path = dir.path().join("off.toml");
        std::fs::write(&path, format!("[notify]\nenabled = false\n{}", rule("a", "http://hooks.example/x"))).unwrap();
        assert!(Settings::load(Some(&path)).unwrap().notify.rules().is_empty());
    }

    #[test]
    fn e_mail_rules_and_escalation_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let load = |notify: &str| {
            let path = dir.path().join("n.toml");
            std::fs::write(&path, format!("[notify]\nenabled = true\n{notify}")).unwrap();
            Settings::load(Some(&path)).map_err(|e| e.to_string())
        };
        let smtp = "[notify.smtp]\nhost = \"smtp.example\"\nfrom = \"triage@hospital.example\"\n";
        let hook = |name: &str, extra: &str| format!("[[notify.rules]]\nname = \"{name}\"\nurl = \"https://h.example/{name}\"\n{extra}");
        let mail = |name: &str, extra: &str| format!("[[notify.rules]]\nname = \"{name}\"\nemail = [\"neuro.oncall@hospital.example\"]\n{extra}");
        let chain = format!("{smtp}{}{}", hook("first", "escalate_after = \"10m\"\nescalate_to = \"backup\"\n"), mail("backup", "priorities = []\n"));
        let s = load(&chain).unwrap();
        let (first, backup) = (s.notify.rule_named("first").unwrap(), s.notify.rule_named("backup").unwrap());
        assert_eq!((first.channel(), backup.channel()), (Channel::Webhook, Channel::Email));
        assert_eq!((first.destination().as_str(), backup.destination().as_str()), ("webhook:first", "email:backup"));
        assert_eq!(first.escalate_after, Some(Duration::from_secs(600)));
        assert_eq!(s.notify.rule_for("email:backup").map(|r| r.name.as_str()), Some("backup"));
        assert!(s.notify.rule_for("webhook:backup").is_none());
        assert_eq!(s.notify.smtp.port, 587, "submission port by default");
        assert_eq!(s.notify.smtp.security, SmtpSecurity::Starttls, "STARTTLS required by default");
        // Addresses never print.
        assert!(!format!("{:?}", s.notify).contains("neuro.oncall") && !format!("{:?}", s.redacted()).contains("neuro.oncall"));
        // Refusals.
        assert!(load(&mail("m", "")).unwrap_err().contains("[notify.smtp]"), "e-mail without a server");
        assert!(load(&format!("{smtp}{}", mail("m", "")).replace("neuro.oncall@hospital.example", "a@b\\r\\nBcc: x@y")).unwrap_err().contains("plain address"));
        assert!(load(&format!("{smtp}[[notify.rules]]\nname = \"x\"\n")).unwrap_err().contains("url"), "neither url nor email");
        assert!(load(&format!("{smtp}{}", hook("x", "email = [\"a@b.example\"]\n"))).unwrap_err().contains("not both"));
        assert!(load(&hook("x", "escalate_to = \"x\"\nescalate_after = \"1m\"\n")).unwrap_err().contains("no other rule"));
        assert!(load(&hook("x", "escalate_to = \"nobody\"\nescalate_after = \"1m\"\n")).unwrap_err().contains("no other rule"));
        assert!(load(&format!("{}{}", hook("x", "escalate_to = \"y\"\n"), hook("y", ""))).unwrap_err().contains("go together"));
        assert!(load(&format!(
            "{}{}",
            hook("x", "escalate_to = \"y\"\nescalate_after = \"1m\"\n"),
            hook("y", "escalate_to = \"x\"\nescalate_after = \"1m\"\n")
        ))
        .unwrap_err()
        .contains("cycle"));
        assert!(load(&format!("{}{}", hook("x", ""), hook("y", "priorities = []\n"))).unwrap_err().contains("priorities"), "nobody escalates to y");
        let plain = "[notify.smtp]\nhost = \"smtp.example\"\nfrom = \"t@h.example\"\nsecurity = \"plain\"\n";
        assert!(load(&format!("{plain}{}", mail("m", ""))).unwrap_err().contains("loopback"));
        assert!(load(&format!("{}{}", plain.replace("smtp.example", "127.0.0.1"), mail("m", ""))).is_ok());
        // Hours and templates.
        assert!(load(&hook("x", "hours = \"18:00-08:00\"\n")).is_ok());
        assert!(load(&hook("x", "hours = \"6pm-8am\"\n")).unwrap_err().contains("HH:MM-HH:MM"));
        assert!(load(&hook("x", "template = '{\"text\": \"{summary}\"}'\n")).is_ok());
        assert!(load(&hook("x", "template = '{\"text\": \"{patient}\"}'\n")).unwrap_err().contains("unknown placeholder {patient}"));
        assert!(load(&hook("x", "template = '{\"text\": {summary}}'\n")).unwrap_err().contains("not JSON"));
        assert!(load(&format!("{smtp}{}", mail("m", "template = '{\"t\": \"{id}\"}'\n"))).unwrap_err().contains("for webhooks"));
        // The section's first name still reads.
        assert!(load("[[notify.webhooks]]\nname = \"old\"\nurl = \"https://h.example/1\"\n").is_ok());
    }

    #[test]
    fn dicomweb_destinations_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let load = |results: &str| {
            let path = dir.path().join("d.toml");
            std::fs::write(&path, format!("[results]\n{results}")).unwrap();
            Settings::load(Some(&path)).map_err(|e| e.to_string())
        };
        let one = |fields: &str| format!("[[results.dicomweb]]\nname = \"cloud\"\n{fields}\n");
        let s = load(&one("url = \"https://dicom.example/dicomweb\"\nauth = \"bearer\"\ntoken_file = \"/etc/t\"")).unwrap();
        let d = &s.results.dicomweb[0];
        assert_eq!((d.destination().as_str(), d.auth, d.timeout), ("dicomweb:cloud", DicomwebAuth::Bearer, Duration::from_secs(30)));
        assert_eq!(s.results.object_destinations(), ["dicomweb:cloud"]);
        assert_eq!(d.secret_env("TOKEN"), "TRIAGE_DICOMWEB_CLOUD_TOKEN");
        // https, or http to a loopback host; no credentials, query or fragment in the url.
        assert!(load(&one("url = \"http://127.0.0.1:8042/dicom-web\"")).is_ok());
        assert!(load(&one("url = \"http://dicom.example/dicomweb\"")).unwrap_err().contains("https"));
        assert!(load(&one("url = \"https://u:p@dicom.example/dicomweb\"")).unwrap_err().contains("credentials"));
        assert!(load(&one("url = \"https://dicom.example/dicomweb?k=v\"")).unwrap_err().contains("query"));
        assert!(load(&one("url = \"ftp://dicom.example/\"")).unwrap_err().contains("scheme"));
        // Auth needs its secret; credentials without auth are a mistake.
        assert!(load(&one("url = \"https://d.example/\"\nauth = \"bearer\"")).unwrap_err().contains("token_file"));
        assert!(load(&one("url = \"https://d.example/\"\nauth = \"basic\"\npassword_file = \"/p\"")).unwrap_err().contains("username"));
        assert!(load(&one("url = \"https://d.example/\"\nauth = \"basic\"\nusername = \"u\"")).unwrap_err().contains("password_file"));
        assert!(load(&one("url = \"https://d.example/\"\nauth = \"basic\"\nusername = \"u\"\npassword_file = \"/p\"")).is_ok());
        assert!(load(&one("url = \"https://d.example/\"\ntoken_file = \"/t\"")).unwrap_err().contains("auth = \"none\""));
        // Names unique and plain; a timeout within the lease; no AE title that looks like one.
        assert!(load(&format!("{}{}", one("url = \"https://a.example/\""), one("url = \"https://b.example/\""))).unwrap_err().contains("twice"));
        assert!(load("[[results.dicomweb]]\nname = \"a b\"\nurl = \"https://a.example/\"\n").unwrap_err().contains("letters"));
        assert!(load(&one("url = \"https://a.example/\"\ntimeout = \"1h\"")).unwrap_err().contains("lease"));
        assert!(load("destinations = [\"dicomweb:x\"]\n").is_err());
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
