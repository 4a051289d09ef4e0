//! Notifications of a study's triage to the site's webhooks (`[notify]`): which rules a
//! publication notifies, and the document each gets. `publish` queues one outbox item per
//! matching rule in the results' transaction; the outbox POSTs the document as written.
//!
//! The document is de-identified: priority, findings (code, probability, model), the node's
//! study row id and a link to the study page, never a patient's name, ID, accession or UIDs.
//! Its `id` is stable for a study, rule and triage (the job): every attempt sends the same, and
//! a receiver deduplicates on it (also sent as `Idempotency-Key`).
//!
//! A rule notifies when the study reaches a priority it lists: a study triaged again that keeps
//! such a priority is not notified again; one that rises to it (or whose earlier result was
//! retracted) is. A notice says `"status": "active"`; when an admin retracts the study's
//! results, each rule whose notice stands (`notified`: judged from the worklist row being
//! retracted, the same record `matching` reads) gets a `"retracted"` one (`retraction_notice`),
//! with the rejection code but never the admin's reason. Must not: send anything (the outbox
//! does); carry an identifier.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::kos::Reason;
use super::worklist::{StudyPriority, WorklistEntry};
use crate::config::NotifyRule;
use crate::db::WorklistRow;
use crate::inference::package::Manifest;

/// What every notification says about itself.
pub const NOT_FOR_DIAGNOSIS: &str = "AI triage notification: a prompt to open the study, not for diagnosis. Read the images; the AI result may be wrong.";

/// One finding as a notification gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeFinding {
    pub label: String,
    /// Coding scheme (SCT, or the private 99TRIAGE), code value and meaning.
    pub scheme: String,
    pub code: String,
    pub meaning: String,
    pub probability: f64,
    pub urgent: bool,
    pub model: String,
    pub model_version: String,
}

/// Whether a notice's result stands or was withdrawn by the site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeStatus {
    #[default]
    Active,
    Retracted,
}

/// Why a result was withdrawn: the rejection note's title (DCM 113001 or 113037). Never the
/// admin's own words (they may name the patient).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeRetraction {
    pub code: String,
    pub meaning: String,
}

/// The document POSTed to a webhook (kept in the outbox as the JSON sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// Stable for the study, the rule and the triage (or the retraction of a result): the
    /// receiver deduplicates on it.
    pub id: String,
    /// `active`, or `retracted`: the result this rule was told of is withdrawn (notices written
    /// before the field existed read as active).
    #[serde(default)]
    pub status: NoticeStatus,
    /// A retracted notice's reason code; absent from active ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retraction: Option<NoticeRetraction>,
    /// The rule (`[[notify.rules]] name`).
    pub rule: String,
    /// 0: made by the study's triage; 1, 2, ...: an escalation of the chain (nobody
    /// acknowledged the notice before it in time).
    #[serde(default)]
    pub level: u32,
    /// An escalation's previous rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_from: Option<String>,
    /// The one-time acknowledgement link (`<link_base>/ack/<token>`): opening it shows a page
    /// whose button acknowledges the chain. Absent without `notify.link_base`, and on retracted
    /// notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge: Option<String>,
    /// The first positive finding's heatmap, small (the rule's `preview`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
    /// URGENT or POSITIVE.
    pub priority: String,
    /// The study's row id on this node (`/api/studies/{id}`), not a DICOM identifier.
    pub node_study_id: i64,
    /// The study page, when `notify.link_base` is set.
    pub link: Option<String>,
    /// The positive findings (of the rule's models, when it names any).
    pub findings: Vec<NoticeFinding>,
    /// A result came from a demonstration model (not clinically validated).
    pub demonstration: bool,
    /// When the notification was made: RFC 3339 and milliseconds since the epoch.
    pub created_at: String,
    pub created_ms: i64,
    pub notice: String,
}

/// A small picture of a finding's heatmap: never for diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub media_type: String,
    pub caption: String,
    /// The PNG, base64.
    pub data_base64: String,
}

/// The caption of every preview.
pub const PREVIEW_CAPTION: &str = "AI heatmap thumbnail: a prompt to open the study, not for diagnosis.";

impl Preview {
    pub fn png(bytes: &[u8]) -> Preview {
        Preview { media_type: "image/png".into(), caption: PREVIEW_CAPTION.into(), data_base64: crate::domain::base64(bytes) }
    }
}

/// Whether `rule` lists `priority`.
fn lists(rule: &NotifyRule, priority: StudyPriority) -> bool {
    rule.priorities.iter().any(|p| p.as_str() == priority.as_str())
}

/// The study's priority as `rule` sees it: none when the study has none of its modalities;
/// with models or findings named, from the positive findings of those alone (urgent if one is).
fn rule_priority(rule: &NotifyRule, entry: &WorklistEntry, modalities: &[String]) -> Option<StudyPriority> {
    if !rule.modalities.is_empty() && !modalities.iter().any(|m| rule.modalities.iter().any(|r| r.eq_ignore_ascii_case(m))) {
        return None;
    }
    if rule.models.is_empty() && rule.findings.is_empty() {
        return Some(entry.priority);
    }
    let mut theirs = entry
        .findings
        .iter()
        .filter(|f| f.positive && (rule.models.is_empty() || rule.models.contains(&f.model)) && (rule.findings.is_empty() || rule.findings.contains(&f.label)))
        .peekable();
    theirs.peek()?;
    Some(if theirs.any(|f| f.urgent) { StudyPriority::Urgent } else { StudyPriority::Positive })
}

/// Whether the rule's `hours` (local time) hold at minute-of-day `minute`.
fn in_hours(rule: &NotifyRule, minute: u32) -> bool {
    rule.hours.as_deref().is_none_or(|h| crate::config::within_hours(h, minute))
}

/// The rules this publication notifies, at local minute-of-day `minute`: the study's priority as
/// the rule sees it (its modalities, models, findings) is one it lists, within its hours, and
/// the study's standing worklist row (`previous`, unless retracted) did not already have one
/// it lists.
pub fn matching<'a>(rules: &'a [NotifyRule], entry: &WorklistEntry, modalities: &[String], previous: Option<&WorklistRow>, minute: u32) -> Vec<&'a NotifyRule> {
    let before = previous.filter(|p| p.retraction.is_none()).map(|p| (WorklistEntry::from_row(p), p.modalities.clone()));
    rules
        .iter()
        .filter(|rule| {
            let now = rule_priority(rule, entry, modalities).is_some_and(|p| lists(rule, p)) && in_hours(rule, minute);
            let told = before.as_ref().and_then(|(e, m)| rule_priority(rule, e, m)).is_some_and(|p| lists(rule, p));
            now && !told
        })
        .collect()
}

/// The rules whose notice about the study of `row` (its worklist row, about to be retracted)
/// stands by the rules' own filters: the row is not retracted and the priority the rule sees
/// is one it lists (what `matching` reads to hold back a second notice). For notices made
/// before the notifications ledger; the ledger says which rules were told.
pub fn notified<'a>(rules: &'a [NotifyRule], row: &WorklistRow) -> Vec<&'a NotifyRule> {
    if row.retraction.is_some() {
        return Vec::new();
    }
    let entry = WorklistEntry::from_row(row);
    rules.iter().filter(|rule| rule_priority(rule, &entry, &row.modalities).is_some_and(|p| lists(rule, p))).collect()
}

/// `tn-` and 32 hex digits of SHA-256 over `parts`, each length-prefixed.
fn stable_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("tn-{}", &hex::encode(h.finalize())[..32])
}

/// The stable id of `rule`'s notification of the triage `job_id` of study `study_id` on the node
/// `station`: `tn-` and 32 hex digits of SHA-256 over them.
pub fn notice_id(station: &str, study_id: i64, rule: &str, job_id: i64) -> String {
    stable_id(&["triage-node notice", station, &study_id.to_string(), rule, &job_id.to_string()])
}

/// The stable id of `rule`'s notice that the result of study `study_id` saved at
/// `result_at_ms` (the worklist row retracted) was withdrawn: the same for every attempt and
/// every try of the same retraction, new for the retraction of a later result.
pub fn retraction_id(station: &str, study_id: i64, rule: &str, result_at_ms: i64) -> String {
    stable_id(&["triage-node retraction", station, &study_id.to_string(), rule, &result_at_ms.to_string()])
}

/// The stable id of the `level`th escalation of the chain that began with notice `chain`, to
/// `rule`.
pub fn escalation_id(chain: &str, level: u32, rule: &str) -> String {
    stable_id(&["triage-node escalation", chain, &level.to_string(), rule])
}

/// A one-time acknowledgement token (244 random bits, hex) and its SHA-256 (hex), which is all
/// the database keeps.
pub fn ack_token() -> (String, String) {
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let sha = token_sha256(&token);
    (token, sha)
}

/// SHA-256 (hex) of an acknowledgement token, as the database keeps it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The acknowledgement link of `token` under `link_base` (None without a link base).
pub fn ack_link(link_base: &str, token: &str) -> Option<String> {
    (!link_base.is_empty()).then(|| format!("{}/ack/{token}", link_base.trim_end_matches('/')))
}

/// The notice escalating `previous` (the chain's notice at level `previous.level`, as it was
/// sent) to `next`: the same study, priority and findings, a new stable id, level one up, the
/// previous rule named, made at `created_ms`, with the acknowledgement link of `token`.
pub fn escalation_notice(previous: &Notice, chain: &str, next: &NotifyRule, link_base: &str, token: &str, created_ms: i64) -> Notice {
    let level = previous.level + 1;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(created_ms.max(0) as u64);
    Notice {
        id: escalation_id(chain, level, &next.name),
        rule: next.name.clone(),
        level,
        escalated_from: Some(previous.rule.clone()),
        acknowledge: ack_link(link_base, token),
        // The picture travels on when the next rule asks for one too.
        preview: previous.preview.clone().filter(|_| next.preview),
        created_at: humantime::format_rfc3339_millis(at).to_string(),
        created_ms,
        ..previous.clone()
    }
}

/// `rule`'s notice that the result in `row` (the study's worklist row, before it is marked
/// retracted) was withdrawn for `reason`: the notice's shape, `priority` the one withdrawn, no
/// findings (none stands).
pub fn retraction_notice(rule: &NotifyRule, row: &WorklistRow, reason: Reason, station: &str, link_base: &str, created_ms: i64) -> Notice {
    let mut n = notice(rule, &WorklistEntry::from_row(row), &[], station, 0, link_base, created_ms);
    let title = reason.title();
    n.id = retraction_id(station, row.study_id, &rule.name, row.result_at_ms);
    n.findings.clear();
    n.status = NoticeStatus::Retracted;
    n.retraction = Some(NoticeRetraction { code: title.value, meaning: title.meaning });
    n
}

/// `rule`'s notification of `entry` (the study's worklist entry of job `job_id`).
pub fn notice(rule: &NotifyRule, entry: &WorklistEntry, manifests: &[Manifest], station: &str, job_id: i64, link_base: &str, created_ms: i64) -> Notice {
    let findings = entry
        .findings
        .iter()
        .filter(|f| f.positive && (rule.models.is_empty() || rule.models.contains(&f.model)))
        .map(|f| {
            let code = super::coded_finding(manifests.iter().find(|m| m.name == f.model), &f.label);
            NoticeFinding {
                label: f.label.clone(),
                scheme: code.scheme,
                code: code.value,
                meaning: code.meaning,
                probability: f.probability,
                urgent: f.urgent,
                model: f.model.clone(),
                model_version: f.model_version.clone(),
            }
        })
        .collect();
    let link = (!link_base.is_empty()).then(|| format!("{}/#/study/{}", link_base.trim_end_matches('/'), entry.study_id));
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(created_ms.max(0) as u64);
    Notice {
        id: notice_id(station, entry.study_id, &rule.name, job_id),
        status: NoticeStatus::Active,
        retraction: None,
        rule: rule.name.clone(),
        level: 0,
        escalated_from: None,
        acknowledge: None,
        preview: None,
        priority: entry.priority.as_str().into(),
        node_study_id: entry.study_id,
        link,
        findings,
        demonstration: entry.demonstration,
        created_at: humantime::format_rfc3339_millis(at).to_string(),
        created_ms,
        notice: NOT_FOR_DIAGNOSIS.into(),
    }
}

/// The value of placeholder `name` of a webhook's template (`[[notify.rules]] template`) for
/// notice `n`: the same de-identified content as the JSON, as text.
pub fn template_value(n: &Notice, name: &str) -> String {
    let findings =
        || n.findings.iter().map(|f| format!("{} {:.2}{}", f.meaning, f.probability, if f.urgent { " (urgent)" } else { "" })).collect::<Vec<_>>().join(", ");
    match name {
        "id" => n.id.clone(),
        "rule" => n.rule.clone(),
        "level" => n.level.to_string(),
        "status" => match n.status {
            NoticeStatus::Active => "active".into(),
            NoticeStatus::Retracted => "retracted".into(),
        },
        "priority" => n.priority.clone(),
        "study" => n.node_study_id.to_string(),
        "link" => n.link.clone().unwrap_or_default(),
        "acknowledge" => n.acknowledge.clone().unwrap_or_default(),
        "findings" => findings(),
        "summary" => {
            let (subject, _) = email_text(n);
            let mut text = subject;
            if let Some(link) = &n.link {
                text.push_str(&format!(" | open: {link}"));
            }
            if let Some(ack) = &n.acknowledge {
                text.push_str(&format!(" | acknowledge: {ack}"));
            }
            text.push_str(" | not for diagnosis");
            text
        }
        _ => String::new(),
    }
}

/// The e-mail made from a notice: its subject and plain text. The same content as the JSON
/// (de-identified: priority, findings, model, the node's study id, links), for a person.
pub fn email_text(n: &Notice) -> (String, String) {
    let headline = n.findings.first().map(|f| f.meaning.as_str()).unwrap_or("AI result");
    let subject = match (n.status, n.level) {
        (NoticeStatus::Retracted, _) => format!("[RETRACTED] AI triage result withdrawn: study {}", n.node_study_id),
        (_, 0) => format!("[{}] AI triage: {headline} - study {}", n.priority, n.node_study_id),
        (_, level) => format!("[{}] ESCALATED ({level}): AI triage: {headline} - study {}", n.priority, n.node_study_id),
    };
    let mut text = String::new();
    let mut line = |s: &str| {
        text.push_str(s);
        text.push('\n');
    };
    line(&format!("Priority: {}", n.priority));
    line(&format!("Study (this node's id): {}", n.node_study_id));
    if let Some(from) = &n.escalated_from {
        line(&format!("Escalated: nobody acknowledged the notification to {from:?} in time (level {}).", n.level));
    }
    if let Some(r) = &n.retraction {
        line(&format!("The AI result this rule was told of is withdrawn: {} ({}).", r.meaning, r.code));
    }
    for f in &n.findings {
        line(&format!(
            "Finding: {} ({} {}: {}), probability {:.3}{}, model {} {}",
            f.label,
            f.scheme,
            f.code,
            f.meaning,
            f.probability,
            if f.urgent { ", urgent" } else { "" },
            f.model,
            f.model_version
        ));
    }
    if n.demonstration {
        line("A result came from a demonstration model, not clinically validated.");
    }
    if let Some(link) = &n.link {
        line(&format!("Open the study: {link}"));
    }
    if let Some(ack) = &n.acknowledge {
        line(&format!("Acknowledge (stops escalation): {ack}"));
    }
    if let Some(p) = &n.preview {
        line(&format!("Attached: preview.png. {}", p.caption));
    }
    line(&format!("Made: {}", n.created_at));
    line(&format!("Notification id: {}", n.id));
    line("");
    line(&n.notice);
    (subject, text)
}

/// What a drift notice says about itself.
pub const DRIFT_NOTICE: &str = "AI model monitoring: the model's score distribution moved away from its validation set (a new scanner, protocol or population, or a fault upstream). It says the inputs changed, not that the model got worse: check the readers' verdicts on the performance page.";

/// What an input drift notice says about itself.
pub const INPUT_DRIFT_NOTICE: &str = "AI model monitoring: the images given to the model (their intensities after windowing, pixel spacing or slice thickness) moved away from its validation set's (a new scanner, protocol or window, or a fault upstream). The model may be working outside what it was validated on: check the readers' verdicts on the performance page.";

/// A model's score distribution drifted (`admin::drift`): the notice each rule with
/// `drift = true` gets, once per crossing of `[drift] threshold`. Names and figures only: no
/// study, no patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftNotice {
    /// Stable for the node, the model version, label, scanner group, crossing and rule.
    pub id: String,
    /// Always `drift` (a study's notice has no `event`).
    pub event: String,
    pub rule: String,
    pub model: String,
    pub model_version: String,
    /// The label whose scores drifted ("" for an input statistic).
    pub label: String,
    /// The input statistic that drifted (`intensity`, `pixel_spacing`, `slice_thickness`);
    /// absent for a label's scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The scanner the figures are of (absent: every study of the window, or a group's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    /// The site-defined scanner group the figures are of (`[[performance.groups]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub psi: f64,
    pub threshold: f64,
    /// `[drift] window`: the newest this many triaged studies make the live distribution;
    /// `live_studies` of them were there (of the scanner group).
    pub window: usize,
    pub live_studies: usize,
    pub reference_studies: usize,
    /// 1 for the first crossing; the next only after the PSI fell below the threshold.
    pub crossing: i64,
    /// The admin's performance page, when `notify.link_base` is set.
    pub link: Option<String>,
    pub created_at: String,
    pub created_ms: i64,
    pub notice: String,
}

/// What drifted, as `admin::drift` hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct Drifted {
    pub model: String,
    pub model_version: String,
    pub label: String,
    /// An input statistic's name; None for a label's scores.
    pub feature: Option<String>,
    pub scanner: Option<String>,
    pub group: Option<String>,
    pub psi: f64,
    pub threshold: f64,
    pub window: usize,
    pub live_studies: usize,
    pub reference_studies: usize,
    pub crossing: i64,
}

/// The rules a drift of `model` is told to: `drift = true`, and `models` empty or naming it.
pub fn drift_rules<'a>(rules: &'a [NotifyRule], model: &str) -> Vec<&'a NotifyRule> {
    rules.iter().filter(|r| r.drift && (r.models.is_empty() || r.models.iter().any(|m| m == model))).collect()
}

/// `rule`'s notice of the drift `d` on the node `station`, made at `created_ms`.
pub fn drift_notice(rule: &NotifyRule, d: &Drifted, station: &str, link_base: &str, created_ms: i64) -> DriftNotice {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(created_ms.max(0) as u64);
    // A label's notice keeps the id it had before input statistics were checked.
    let label = match &d.feature {
        Some(f) => format!("input:{f}"),
        None => d.label.clone(),
    };
    DriftNotice {
        id: stable_id(&[
            "triage-node drift",
            station,
            &d.model,
            &d.model_version,
            &label,
            d.scanner.as_deref().unwrap_or(""),
            d.group.as_deref().unwrap_or(""),
            &d.crossing.to_string(),
            &rule.name,
        ]),
        event: "drift".into(),
        rule: rule.name.clone(),
        model: d.model.clone(),
        model_version: d.model_version.clone(),
        label: d.label.clone(),
        feature: d.feature.clone(),
        scanner: d.scanner.clone(),
        group: d.group.clone(),
        psi: d.psi,
        threshold: d.threshold,
        window: d.window,
        live_studies: d.live_studies,
        reference_studies: d.reference_studies,
        crossing: d.crossing,
        link: (!link_base.is_empty()).then(|| format!("{}/#/performance", link_base.trim_end_matches('/'))),
        created_at: humantime::format_rfc3339_millis(at).to_string(),
        created_ms,
        notice: if d.feature.is_some() { INPUT_DRIFT_NOTICE } else { DRIFT_NOTICE }.into(),
    }
}

impl DriftNotice {
    /// " on scanner S" or " on scanner group G", or nothing for every study.
    fn where_(&self) -> String {
        match (&self.scanner, &self.group) {
            (Some(s), _) => format!(" on scanner {s}"),
            (None, Some(g)) => format!(" on scanner group {g}"),
            (None, None) => String::new(),
        }
    }

    /// "label L" or "input F" (the statistic in words).
    fn what(&self) -> String {
        match &self.feature {
            Some(f) => format!("input {}", input_words(f)),
            None => format!("label {}", self.label),
        }
    }

    /// One line: what drifted, by how much, over what.
    fn headline(&self) -> String {
        format!(
            "model {} {} {}{}: {} drifted (PSI {:.2} >= {:.2} over the last {} studies, window {})",
            self.model,
            self.model_version,
            self.what(),
            self.where_(),
            if self.feature.is_some() { "input statistics" } else { "score distribution" },
            self.psi,
            self.threshold,
            self.live_studies,
            self.window
        )
    }
}

/// An input statistic's name in a sentence.
fn input_words(feature: &str) -> String {
    match feature {
        "intensity" => "intensity histogram".into(),
        other => other.replace('_', " "),
    }
}

/// An outbox notification as written: a study's notice, or a drift notice.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Study(Box<Notice>),
    Drift(Box<DriftNotice>),
}

impl Message {
    /// The JSON written to the outbox: a drift notice says `"event": "drift"`.
    pub fn read(bytes: &[u8]) -> Result<Message, serde_json::Error> {
        let v: serde_json::Value = serde_json::from_slice(bytes)?;
        if v.get("event").and_then(|e| e.as_str()) == Some("drift") {
            serde_json::from_value(v).map(|d| Message::Drift(Box::new(d)))
        } else {
            serde_json::from_value(v).map(|n| Message::Study(Box::new(n)))
        }
    }

    /// The stable id the receiver deduplicates on.
    pub fn id(&self) -> &str {
        match self {
            Message::Study(n) => &n.id,
            Message::Drift(d) => &d.id,
        }
    }

    pub fn preview(&self) -> Option<&Preview> {
        match self {
            Message::Study(n) => n.preview.as_ref(),
            Message::Drift(_) => None,
        }
    }

    /// A template's placeholder (`template_value` for a study's notice).
    pub fn template_value(&self, name: &str) -> String {
        match self {
            Message::Study(n) => template_value(n, name),
            Message::Drift(d) => match name {
                "id" => d.id.clone(),
                "rule" => d.rule.clone(),
                "level" => "0".into(),
                "status" => "drifted".into(),
                "priority" => "DRIFT".into(),
                "link" => d.link.clone().unwrap_or_default(),
                "findings" => format!("{} PSI {:.2}", d.feature.as_deref().map(input_words).unwrap_or_else(|| d.label.clone()), d.psi),
                "summary" => {
                    let mut text = format!("[DRIFT] {}", d.headline());
                    if let Some(link) = &d.link {
                        text.push_str(&format!(" | open: {link}"));
                    }
                    text
                }
                _ => String::new(),
            },
        }
    }

    /// The e-mail's subject and text.
    pub fn email_text(&self) -> (String, String) {
        match self {
            Message::Study(n) => email_text(n),
            Message::Drift(d) => {
                let what = match &d.feature {
                    Some(f) => format!("input {}", input_words(f)),
                    None => format!("{} scores", d.label),
                };
                let subject = format!("[DRIFT] AI model {} {}: {what} drifted{} (PSI {:.2})", d.model, d.model_version, d.where_(), d.psi);
                let mut text = format!("{}.\n", d.headline());
                text.push_str(&format!(
                    "Reference: {} studies of the package's validation set. Crossing {} of this threshold.\n",
                    d.reference_studies, d.crossing
                ));
                if let Some(link) = &d.link {
                    text.push_str(&format!("Performance page: {link}\n"));
                }
                text.push_str(&format!("Made: {}\nNotification id: {}\n\n{}\n", d.created_at, d.id, d.notice));
                (subject, text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotifyPriority;
    use crate::results::worklist::ListedFinding;

    fn rule(name: &str, priorities: &[NotifyPriority], models: &[&str]) -> NotifyRule {
        NotifyRule {
            name: name.into(),
            url: Some("https://hooks.example/x".into()),
            email: vec![],
            priorities: priorities.to_vec(),
            models: models.iter().map(|m| m.to_string()).collect(),
            token_file: None,
            escalate_after: None,
            escalate_to: None,
            findings: vec![],
            modalities: vec![],
            hours: None,
            template: None,
            preview: false,
            drift: false,
        }
    }

    fn entry(priority: StudyPriority) -> WorklistEntry {
        WorklistEntry {
            study_id: 42,
            priority,
            score: Some(0.995),
            uncertain: false,
            findings: vec![
                ListedFinding {
                    model: "demo-nodule".into(),
                    model_version: "1.0.0".into(),
                    label: "nodule".into(),
                    probability: 0.995,
                    positive: true,
                    urgent: true,
                    tier: "high".into(),
                    boxes: 0,
                    largest_box: None,
                },
                ListedFinding {
                    model: "other".into(),
                    model_version: "2".into(),
                    label: "effusion".into(),
                    probability: 0.1,
                    positive: false,
                    urgent: false,
                    tier: "high".into(),
                    boxes: 0,
                    largest_box: None,
                },
            ],
            demonstration: true,
            reasons: vec![],
            received_at_ms: 1_700_000_000_000,
            time_to_result_ms: 5_000,
        }
    }

    fn row(priority: &str) -> WorklistRow {
        let mut r = entry(StudyPriority::Urgent).to_row(vec!["CR".into()]);
        r.priority = priority.into();
        r
    }

    #[test]
    fn a_rule_notifies_when_the_study_reaches_its_priority_not_while_it_stays_there() {
        let rules = [rule("oncall", &[NotifyPriority::Urgent], &[]), rule("both", &[NotifyPriority::Urgent, NotifyPriority::Positive], &[])];
        let names = |v: Vec<&NotifyRule>| v.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let urgent = entry(StudyPriority::Urgent);
        assert_eq!(names(matching(&rules, &urgent, &[], None, 0)), ["oncall", "both"]);
        // Triaged again, still urgent: nobody is called again.
        assert!(matching(&rules, &urgent, &[], Some(&row("URGENT")), 0).is_empty());
        // Raised from positive: the urgent-only rule notifies, the other had been told.
        assert_eq!(names(matching(&rules, &urgent, &[], Some(&row("POSITIVE")), 0)), ["oncall"]);
        assert_eq!(names(matching(&rules, &urgent, &[], Some(&row("NEGATIVE")), 0)), ["oncall", "both"]);
        // A retracted result told nobody anything that stands.
        let mut retracted = row("URGENT");
        retracted.retraction = Some(crate::db::Retraction { at_ms: 1, code: "113001".into(), by: "admin".into() });
        assert_eq!(names(matching(&rules, &urgent, &[], Some(&retracted), 0)), ["oncall", "both"]);
        // Negative, failed: no rule lists them.
        assert!(matching(&rules, &entry(StudyPriority::Negative), &[], None, 0).is_empty());
        assert!(matching(&rules, &entry(StudyPriority::Failed), &[], None, 0).is_empty());
        assert_eq!(names(matching(&rules, &entry(StudyPriority::Positive), &[], None, 0)), ["both"]);
    }

    #[test]
    fn the_notice_is_de_identified_stable_and_says_not_for_diagnosis() {
        let r = rule("oncall", &[NotifyPriority::Urgent], &[]);
        let e = entry(StudyPriority::Urgent);
        let n = notice(&r, &e, &[], "TRIAGE", 7, "https://triage.example/", 1_700_000_005_000);
        assert_eq!(n.id, notice(&r, &e, &[], "TRIAGE", 7, "", 1_800_000_000_000).id, "the same for every attempt and run");
        assert_ne!(n.id, notice(&r, &e, &[], "TRIAGE", 8, "", 0).id, "a new triage is a new notification");
        assert_ne!(n.id, notice(&rule("other", &[NotifyPriority::Urgent], &[]), &e, &[], "TRIAGE", 7, "", 0).id);
        assert!(n.id.starts_with("tn-") && n.id.len() == 35, "{}", n.id);
        assert_eq!(n.priority, "URGENT");
        assert_eq!(n.node_study_id, 42);
        assert_eq!(n.link.as_deref(), Some("https://triage.example/#/study/42"));
        assert_eq!(n.created_at, "2023-11-14T22:13:25.000Z");
        // Positive findings only, coded (a label the manifest does not know: the private scheme).
        assert_eq!(n.findings.len(), 1);
        assert_eq!((n.findings[0].label.as_str(), n.findings[0].code.as_str(), n.findings[0].scheme.as_str()), ("nodule", "NODULE", "99TRIAGE"));
        assert!(n.demonstration);
        assert_eq!((n.status, n.retraction.as_ref()), (NoticeStatus::Active, None));
        let json = serde_json::to_string(&n).unwrap();
        assert!(json.contains("not for diagnosis"), "{json}");
        assert!(json.contains(r#""status":"active""#), "{json}");
        let keys: std::collections::BTreeSet<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json).unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["id", "status", "rule", "level", "priority", "node_study_id", "link", "findings", "demonstration", "created_at", "created_ms", "notice"]
                .map(String::from)
                .into(),
            "nothing else: no patient, accession or UID field"
        );
        // Without a link base: no link.
        assert_eq!(notice(&r, &e, &[], "TRIAGE", 7, "", 0).link, None);
        // A rule naming models gives their findings only.
        assert!(notice(&rule("o", &[NotifyPriority::Urgent], &["other"]), &e, &[], "TRIAGE", 7, "", 0).findings.is_empty());
    }

    #[test]
    fn a_retraction_tells_the_rules_whose_notice_stands_with_its_code_only() {
        let rules = [
            rule("oncall", &[NotifyPriority::Urgent], &[]),
            rule("both", &[NotifyPriority::Urgent, NotifyPriority::Positive], &[]),
            rule("other-model", &[NotifyPriority::Urgent], &["other"]),
            rule("nodules", &[NotifyPriority::Urgent], &["demo-nodule"]),
        ];
        let names = |v: Vec<&NotifyRule>| v.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let urgent = row("URGENT");
        assert_eq!(names(notified(&rules, &urgent)), ["oncall", "both", "nodules"], "the rules that notify an urgent study");
        let mut positive = entry(StudyPriority::Positive);
        positive.findings[0].urgent = false;
        assert_eq!(names(notified(&rules, &positive.to_row(vec![]))), ["both"], "a rule naming models: from their findings");
        let mut negative = entry(StudyPriority::Negative);
        negative.findings[0].positive = false;
        assert!(notified(&rules, &negative.to_row(vec![])).is_empty());
        let mut retracted = row("URGENT");
        retracted.retraction = Some(crate::db::Retraction { at_ms: 1, code: "113001".into(), by: "admin".into() });
        assert!(notified(&rules, &retracted).is_empty(), "retracted already: nothing stands");

        let n = retraction_notice(&rules[0], &urgent, Reason::PatientSafety, "TRIAGE", "https://triage.example", 1_700_000_009_000);
        assert_eq!(n.status, NoticeStatus::Retracted);
        assert_eq!(n.retraction, Some(NoticeRetraction { code: "113037".into(), meaning: "Rejected for Patient Safety Reasons".into() }));
        assert_eq!((n.rule.as_str(), n.priority.as_str(), n.node_study_id), ("oncall", "URGENT", 42));
        assert_eq!(n.link.as_deref(), Some("https://triage.example/#/study/42"));
        assert!(n.findings.is_empty(), "nothing stands");
        assert!(n.notice.contains("not for diagnosis"));
        // Stable across attempts and tries; new for another rule or a later result; never the
        // id of a triage's notice.
        assert_eq!(n.id, retraction_notice(&rules[0], &urgent, Reason::Quality, "TRIAGE", "", 0).id);
        assert_ne!(n.id, retraction_notice(&rules[1], &urgent, Reason::PatientSafety, "TRIAGE", "", 0).id);
        let mut later = row("URGENT");
        later.result_at_ms += 60_000;
        assert_ne!(n.id, retraction_notice(&rules[0], &later, Reason::PatientSafety, "TRIAGE", "", 0).id);
        assert_ne!(n.id, notice_id("TRIAGE", 42, "oncall", urgent.result_at_ms));
        assert!(n.id.starts_with("tn-") && n.id.len() == 35, "{}", n.id);
        let json = serde_json::to_string(&n).unwrap();
        assert!(json.contains(r#""status":"retracted""#) && json.contains(r#""code":"113037""#), "{json}");
        // A notice written before `status` existed reads as active.
        let mut old: serde_json::Value = serde_json::to_value(notice(&rules[0], &entry(StudyPriority::Urgent), &[], "TRIAGE", 7, "", 0)).unwrap();
        old.as_object_mut().unwrap().remove("status");
        assert_eq!(serde_json::from_value::<Notice>(old).unwrap().status, NoticeStatus::Active);
    }

    #[test]
    fn an_escalation_is_the_same_news_for_the_next_rule_with_its_own_id_and_link() {
        let (first, backup) = (rule("oncall", &[NotifyPriority::Urgent], &[]), rule("backup", &[], &[]));
        let e = entry(StudyPriority::Urgent);
        let (token, sha) = ack_token();
        assert_eq!((token.len(), sha.len()), (64, 64));
        assert_ne!(ack_token().0, token, "random");
        assert_eq!(token_sha256(&token), sha);
        let mut n = notice(&first, &e, &[], "TRIAGE", 7, "https://triage.example/", 1_700_000_005_000);
        n.acknowledge = ack_link("https://triage.example/", &token);
        assert_eq!(n.acknowledge.as_deref(), Some(format!("https://triage.example/ack/{token}").as_str()));
        assert_eq!(ack_link("", &token), None, "no link base: no link");
        let (token2, _) = ack_token();
        let up = escalation_notice(&n, &n.id, &backup, "https://triage.example", &token2, 1_700_000_605_000);
        assert_eq!((up.rule.as_str(), up.level, up.escalated_from.as_deref()), ("backup", 1, Some("oncall")));
        assert_eq!((up.priority.as_str(), up.node_study_id, &up.findings), (n.priority.as_str(), n.node_study_id, &n.findings));
        assert_eq!(up.acknowledge, Some(format!("https://triage.example/ack/{token2}")));
        assert_eq!(up.created_ms, 1_700_000_605_000);
        assert_ne!(up.id, n.id);
        assert_eq!(up.id, escalation_notice(&n, &n.id, &backup, "", &token, 0).id, "stable for the chain, level and rule");
        let again = escalation_notice(&up, &n.id, &first, "", &token, 0);
        assert_eq!((again.level, again.escalated_from.as_deref()), (2, Some("backup")));
        assert!(up.id.starts_with("tn-") && up.id.len() == 35);
        let json = serde_json::to_string(&up).unwrap();
        assert!(json.contains(r#""escalated_from":"oncall""#) && json.contains(r#""level":1"#), "{json}");
    }

    #[test]
    fn a_drift_notice_names_the_model_and_figures_only_and_reads_back_as_one() {
        let mut models = rule("models", &[], &[]);
        models.drift = true;
        let mut other = rule("other", &[NotifyPriority::Urgent], &["other"]);
        other.drift = true;
        let oncall = rule("oncall", &[NotifyPriority::Urgent], &[]);
        let rules = [models, other, oncall];
        let names = |v: Vec<&NotifyRule>| v.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(drift_rules(&rules, "demo-nodule")), ["models"], "drift = true, and models filters");
        assert_eq!(names(drift_rules(&rules, "other")), ["models", "other"]);
        let d = Drifted {
            model: "demo-nodule".into(),
            model_version: "1.0.0".into(),
            label: "nodule".into(),
            feature: None,
            scanner: Some("ACME Scan 3000".into()),
            group: None,
            psi: 0.4312,
            threshold: 0.25,
            window: 200,
            live_studies: 57,
            reference_studies: 400,
            crossing: 1,
        };
        let n = drift_notice(&rules[0], &d, "TRIAGE", "https://triage.example/", 1_700_000_005_000);
        assert_eq!(n.link.as_deref(), Some("https://triage.example/#/performance"));
        assert!(n.id.starts_with("tn-") && n.id.len() == 35);
        assert_eq!(n.id, drift_notice(&rules[0], &d, "TRIAGE", "", 0).id, "stable for every attempt");
        assert_ne!(n.id, drift_notice(&rules[0], &Drifted { crossing: 2, ..d.clone() }, "TRIAGE", "", 0).id, "a new crossing, a new id");
        assert_ne!(n.id, drift_notice(&rules[1], &d, "TRIAGE", "", 0).id, "another rule");
        assert_ne!(n.id, drift_notice(&rules[0], &Drifted { scanner: None, ..d.clone() }, "TRIAGE", "", 0).id, "another scanner");
        let grouped = drift_notice(&rules[0], &Drifted { scanner: None, group: Some("CT room 1".into()), ..d.clone() }, "TRIAGE", "", 0);
        assert_ne!(grouped.id, n.id, "a group");
        assert!(Message::Drift(Box::new(grouped)).email_text().0.contains("drifted on scanner group CT room 1 (PSI"));
        let json = serde_json::to_vec(&n).unwrap();
        let m = Message::read(&json).unwrap();
        assert_eq!(m, Message::Drift(Box::new(n.clone())));
        assert_eq!((m.id(), m.preview()), (n.id.as_str(), None));
        let keys: std::collections::BTreeSet<String> =
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "id",
                "event",
                "rule",
                "model",
                "model_version",
                "label",
                "scanner",
                "psi",
                "threshold",
                "window",
                "live_studies",
                "reference_studies",
                "crossing",
                "link",
                "created_at",
                "created_ms",
                "notice"
            ]
            .map(String::from)
            .into(),
            "names and figures: no study, no patient"
        );
        // A study's notice reads back as one.
        let study = notice(&rules[2], &entry(StudyPriority::Urgent), &[], "TRIAGE", 7, "", 0);
        assert_eq!(Message::read(&serde_json::to_vec(&study).unwrap()).unwrap(), Message::Study(Box::new(study)));
        let (subject, text) = m.email_text();
        assert_eq!(subject, "[DRIFT] AI model demo-nodule 1.0.0: nodule scores drifted on scanner ACME Scan 3000 (PSI 0.43)");
        assert!(text.starts_with("model demo-nodule 1.0.0 label nodule on scanner ACME Scan 3000: score distribution drifted (PSI 0.43 >= 0.25 over the last 57 studies, window 200)."), "{text}");
        assert!(
            text.contains("Performance page: https://triage.example/#/performance") && text.contains(&n.id) && text.contains("not that the model got worse"),
            "{text}"
        );
        assert_eq!(m.template_value("priority"), "DRIFT");
        assert!(m.template_value("summary").starts_with("[DRIFT] model demo-nodule 1.0.0 label nodule"), "{}", m.template_value("summary"));
        // An input statistic's drift names the statistic, has an id of its own, and reads back.
        let input = drift_notice(&rules[0], &Drifted { label: String::new(), feature: Some("intensity".into()), scanner: None, ..d.clone() }, "TRIAGE", "", 0);
        assert_ne!(input.id, drift_notice(&rules[0], &Drifted { scanner: None, ..d.clone() }, "TRIAGE", "", 0).id);
        let thickness =
            drift_notice(&rules[0], &Drifted { label: String::new(), feature: Some("slice_thickness".into()), scanner: None, ..d.clone() }, "TRIAGE", "", 0);
        assert_ne!(input.id, thickness.id, "each statistic its own id");
        let m = Message::read(&serde_json::to_vec(&input).unwrap()).unwrap();
        assert_eq!(m, Message::Drift(Box::new(input.clone())));
        let (subject, text) = m.email_text();
        assert_eq!(subject, "[DRIFT] AI model demo-nodule 1.0.0: input intensity histogram drifted (PSI 0.43)");
        assert!(text.starts_with("model demo-nodule 1.0.0 input intensity histogram: input statistics drifted (PSI 0.43 >= 0.25"), "{text}");
        assert!(text.contains("outside what it was validated on"), "{text}");
        assert_eq!(m.template_value("findings"), "intensity histogram PSI 0.43");
    }

    #[test]
    fn the_e_mail_says_what_the_json_says_and_no_more() {
        let r = rule("oncall", &[NotifyPriority::Urgent], &[]);
        let mut n = notice(&r, &entry(StudyPriority::Urgent), &[], "TRIAGE", 7, "https://triage.example/", 1_700_000_005_000);
        n.acknowledge = ack_link("https://triage.example/", "abc");
        let (subject, text) = email_text(&n);
        assert_eq!(subject, "[URGENT] AI triage: nodule - study 42");
        assert!(text.contains("Open the study: https://triage.example/#/study/42"), "{text}");
        assert!(text.contains("Acknowledge (stops escalation): https://triage.example/ack/abc"), "{text}");
        assert!(text.contains("probability 0.995, urgent, model demo-nodule 1.0.0"), "{text}");
        assert!(text.contains("not for diagnosis") && text.contains("demonstration model"), "{text}");
        assert!(text.contains(&n.id));
        let up = escalation_notice(&n, &n.id, &rule("backup", &[], &[]), "", "x", 0);
        assert!(email_text(&up).0.starts_with("[URGENT] ESCALATED (1): "), "{}", email_text(&up).0);
        assert!(email_text(&up).1.contains("nobody acknowledged the notification to \"oncall\""));
    }

    #[test]
    fn a_template_gets_the_notice_as_text_escaped_and_a_rule_its_own_filters() {
        let r = rule("chat", &[NotifyPriority::Urgent], &[]);
        let mut n = notice(&r, &entry(StudyPriority::Urgent), &[], "TRIAGE", 7, "https://triage.example/", 0);
        n.acknowledge = ack_link("https://triage.example/", "abc");
        let body = crate::config::fill_template(r#"{"text": "{summary}", "p": "{priority}", "f": "{findings}", "x": "{nothing}"}"#, |k| template_value(&n, k));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["text"],
            "[URGENT] AI triage: nodule - study 42 | open: https://triage.example/#/study/42 | acknowledge: https://triage.example/ack/abc | not for diagnosis"
        );
        assert_eq!((v["p"].as_str(), v["f"].as_str(), v["x"].as_str()), (Some("URGENT"), Some("nodule 0.99 (urgent)"), Some("{nothing}")));
        // A quote or a brace in a value stays inside its string.
        let odd = crate::config::fill_template(r#"{"t": "{rule}"}"#, |_| "a\"b{summary}".into());
        assert_eq!(serde_json::from_str::<serde_json::Value>(&odd).unwrap()["t"], "a\"b{summary}");

        // Filters: modality, finding label; hours (wrapping midnight).
        let urgent = entry(StudyPriority::Urgent);
        let names = |v: Vec<&NotifyRule>| v.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let mut ct_only = rule("ct", &[NotifyPriority::Urgent], &[]);
        ct_only.modalities = vec!["CT".into()];
        let mut effusion = rule("effusion", &[NotifyPriority::Urgent, NotifyPriority::Positive], &[]);
        effusion.findings = vec!["effusion".into()];
        let mut nodule = rule("nodule", &[NotifyPriority::Urgent], &[]);
        nodule.findings = vec!["nodule".into()];
        let mut night = rule("night", &[NotifyPriority::Urgent], &[]);
        night.hours = Some("18:00-08:00".into());
        let rules = [ct_only, effusion, nodule, night];
        assert_eq!(names(matching(&rules, &urgent, &["CR".to_string()], None, 12 * 60)), ["nodule"], "noon, a CR with an urgent nodule");
        assert_eq!(names(matching(&rules, &urgent, &["CT".to_string()], None, 23 * 60)), ["ct", "nodule", "night"]);
        assert_eq!(names(matching(&rules, &urgent, &["CR".to_string()], None, 7 * 60 + 59)), ["nodule", "night"]);
        assert!(crate::config::within_hours("08:00-18:00", 8 * 60) && !crate::config::within_hours("08:00-18:00", 18 * 60));
        assert_eq!(crate::config::parse_hours("8:00-18:00"), None);
        assert_eq!(crate::config::parse_hours("08:00-08:00"), None);
    }
}
