//! The audit trail's rules, as pure functions: how an entry's MAC is computed, how a chain is
//! verified, and the signed checkpoints that anchor it outside the database. Storage is in
//! `db::audit`; this module does no IO.
//!
//! Each entry's hash is HMAC-SHA256, under the site's audit key (derived from the pseudonym
//! key), over the previous entry's hash and the entry's fields, each length-prefixed so that no
//! two different entries can be written as the same bytes. The chain starts from 64 zeros;
//! `audit_head` records the newest sequence number and hash. Without the key nobody can write
//! an entry that verifies, so rewriting the chain is detected; deleting its tail and rewinding
//! the head to an earlier entry is detected against a checkpoint (`audit head`) kept outside
//! the database. An entry without a keyed hash (plain SHA-256, as versions before this one
//! wrote) fails verification: it is exactly what a forger without the key would write.
//! Must not: put patient data in an entry (callers pass row ids, AE titles, counts).

pub mod atna;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an entry records: the event, spelled once here (the stored `event` column), its
/// subject (stored as `kind:value` text) and its details (stored as JSON), all typed. Never
/// patient data: row ids, AE titles, user names, the node's own (de-identified) UIDs, counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An instance was de-identified on ingest (or by `deid`/export): its de-identified UID.
    Deidentify {
        instance: String,
        details: Deidentified,
    },
    /// Originals were opened from the sealed map for one instance (its de-identified UID).
    Reidentify {
        instance: String,
        details: Reidentified,
    },
    /// Originals were opened for the query index at start-up.
    ReidentifyIndex {
        details: IndexOpened,
    },
    /// An AE was registered or updated (its registration), removed, or echoed by an operator.
    AeAdd {
        ae: String,
        details: Registration,
    },
    AeRemove {
        ae: String,
    },
    AeEcho {
        ae: String,
        details: Echoed,
    },
    /// A worklist page naming patients was shown to a user.
    WorklistView {
        user: String,
        details: Viewed,
    },
    /// A study's reading state changed (claim, read, release).
    Reading {
        study: i64,
        details: ReadingChange,
    },
    /// A Q/R caller's query disclosed matches, or its retrieve sent objects: a DICOM AE
    /// (C-FIND, C-MOVE, C-GET) or an HTTP API user (QIDO-RS, WADO-RS).
    Query {
        by: Party,
        details: Queried,
    },
    Retrieve {
        by: Party,
        details: Retrieved,
    },
    /// An admin retracted a study's AI results (its worklist row id).
    Retract {
        study: i64,
        details: Retracted,
    },
    /// Someone acknowledged the on-call notification of a study (its worklist row id).
    Acknowledge {
        study: i64,
        details: Acknowledged,
    },
    /// A reader gave (or changed) a verdict on an AI finding of a study.
    Feedback {
        study: i64,
        details: FeedbackGiven,
    },
    /// A user signed in (the first request with a new single sign-on token), signed out, or
    /// presented a bearer token the node refused (`user` then: the name the token claims if it
    /// is one, else `unknown`). Never the token.
    UserAuth {
        user: String,
        details: Authentication,
    },
    /// The node started or stopped.
    Application {
        details: ApplicationActivity,
    },
    /// An admin promoted a shadow model to live (`model promote`): its name.
    ModelPromote {
        model: String,
        details: Promoted,
    },
}

/// A shadow model made live, and the live version it replaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promoted {
    pub user: String,
    pub version: String,
    /// The live model it was compared with, and its version, now retired.
    pub replaces: String,
    pub replaces_version: String,
    /// Where the retired package was moved (relative to the models folder).
    pub retired_to: String,
}

/// A sign-in, a sign-out or a refused token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authentication {
    /// `login`, `logout` or `refused`.
    pub outcome: String,
    /// `oidc` (the identity provider's access token) or `token` (a static bearer token).
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Why a token was refused (expired, bad signature, wrong audience, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The node's start or stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationActivity {
    /// `start` or `stop`.
    pub action: String,
    pub version: String,
}

/// How an instance was de-identified (`method`: the profile and options, as recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deidentified {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling_ae: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at_ms: Option<i64>,
    /// By the research export, not on ingest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub export: bool,
    pub method: serde_json::Value,
    /// `kept`, or `not kept: <why>`.
    pub pixels: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reidentified {
    pub purpose: String,
    /// The study's de-identified UID.
    pub study: String,
}

/// The purpose of the map records the audit export opens (`delivery::atna`).
pub const AUDIT_EXPORT: &str = "audit export";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexOpened {
    pub purpose: String,
    pub objects: u64,
    pub map_records: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub role: String,
    pub enabled: bool,
    pub tls: bool,
    pub tls_identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Echoed {
    pub user: String,
    pub success: bool,
    pub status: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Viewed {
    pub user: String,
    /// Worklist row ids.
    pub studies: Vec<i64>,
    /// Sealed records opened.
    pub opened: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingChange {
    pub action: String,
    pub reader: String,
    pub from: String,
    pub to: String,
}

/// Who a query or retrieve disclosed results to: stored as the subject `ae:<title>` or
/// `user:<token's user name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Party {
    Ae(String),
    User(String),
}

impl Party {
    pub fn name(&self) -> &str {
        match self {
            Party::Ae(n) | Party::User(n) => n,
        }
    }

    fn subject(&self) -> String {
        match self {
            Party::Ae(ae) => format!("ae:{ae}"),
            Party::User(user) => format!("user:{user}"),
        }
    }

    fn parse(subject: &str) -> Option<Party> {
        subject.strip_prefix("ae:").map(|a| Party::Ae(a.into())).or_else(|| subject.strip_prefix("user:").map(|u| Party::User(u.into())))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queried {
    pub model: String,
    pub level: String,
    pub matches: u64,
    pub cancelled: bool,
    /// The service, where not C-FIND (`QIDO-RS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrieved {
    /// C-MOVE or C-GET.
    pub operation: String,
    /// The Move Destination; for C-GET, the caller.
    pub destination: String,
    pub model: String,
    pub level: String,
    pub objects: u64,
    /// The node's own UIDs of the result objects.
    pub sop_instances: Vec<String>,
}

/// A retraction: who, why (the admin's own words, kept here only), what was withdrawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retracted {
    pub user: String,
    pub reason: String,
    /// The rejection note's title (CID 7010): 113001 quality, 113037 patient safety.
    pub code: String,
    /// The rejection note's SOP Instance UID (the node's own), when one was queued.
    pub note: Option<String>,
    /// The rejected objects (the node's own UIDs).
    pub objects: Vec<String>,
    /// A correction was queued for the RIS.
    pub hl7: bool,
}

/// An acknowledgement of a study's on-call notification: by whom, how, which notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledged {
    /// The reader's user (API), or `link` (the notification's one-time link).
    pub user: String,
    /// `link` or `api`.
    pub via: String,
    /// The notification's stable id and its rule.
    pub notification: String,
    pub rule: String,
    /// Milliseconds from the notification being made to its acknowledgement.
    pub after_ms: i64,
}

/// A reader's verdict on a finding: who, which finding, what they said (never their comment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackGiven {
    pub user: String,
    pub model: String,
    pub model_version: String,
    pub label: String,
    /// `agree`, `disagree` or `not_assessable`.
    pub verdict: String,
    pub corrected_label: Option<String>,
    /// It replaced the reader's earlier verdict.
    pub edited: bool,
}

impl Event {
    /// Every event name, as stored.
    pub const NAMES: [&'static str; 15] = [
        "deidentify",
        "reidentify",
        "ae_add",
        "ae_remove",
        "ae_echo",
        "worklist_view",
        "reading",
        "query",
        "retrieve",
        "retract",
        "acknowledge",
        "feedback",
        "user_auth",
        "application",
        "model_promote",
    ];

    /// The stored `event`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Deidentify { .. } => "deidentify",
            Event::Reidentify { .. } | Event::ReidentifyIndex { .. } => "reidentify",
            Event::AeAdd { .. } => "ae_add",
            Event::AeRemove { .. } => "ae_remove",
            Event::AeEcho { .. } => "ae_echo",
            Event::WorklistView { .. } => "worklist_view",
            Event::Reading { .. } => "reading",
            Event::Query { .. } => "query",
            Event::Retrieve { .. } => "retrieve",
            Event::Retract { .. } => "retract",
            Event::Acknowledge { .. } => "acknowledge",
            Event::Feedback { .. } => "feedback",
            Event::UserAuth { .. } => "user_auth",
            Event::Application { .. } => "application",
            Event::ModelPromote { .. } => "model_promote",
        }
    }

    /// The stored `subject`.
    pub fn subject(&self) -> String {
        match self {
            Event::Deidentify { instance, .. } | Event::Reidentify { instance, .. } => format!("instance:{instance}"),
            // The map opened in bulk: for the query index, or for the audit export's patient objects.
            Event::ReidentifyIndex { details } if details.purpose == AUDIT_EXPORT => "audit-export".into(),
            Event::ReidentifyIndex { .. } => "query-index".into(),
            // AE registrations name the AE title alone, as entries always have.
            Event::AeAdd { ae, .. } | Event::AeRemove { ae } | Event::AeEcho { ae, .. } => ae.clone(),
            Event::WorklistView { user, .. } | Event::UserAuth { user, .. } => format!("user:{user}"),
            Event::Application { .. } => "node".into(),
            Event::ModelPromote { model, .. } => format!("model:{model}"),
            Event::Reading { study, .. } | Event::Retract { study, .. } | Event::Acknowledge { study, .. } | Event::Feedback { study, .. } => {
                format!("study:{study}")
            }
            Event::Query { by, .. } | Event::Retrieve { by, .. } => by.subject(),
        }
    }

    /// The stored `details` (JSON).
    pub fn details(&self) -> String {
        let json = match self {
            Event::Deidentify { details, .. } => serde_json::to_string(details),
            Event::Reidentify { details, .. } => serde_json::to_string(details),
            Event::ReidentifyIndex { details } => serde_json::to_string(details),
            Event::AeAdd { details, .. } => serde_json::to_string(details),
            Event::AeRemove { .. } => Ok("{}".to_string()),
            Event::AeEcho { details, .. } => serde_json::to_string(details),
            Event::WorklistView { details, .. } => serde_json::to_string(details),
            Event::Reading { details, .. } => serde_json::to_string(details),
            Event::Query { details, .. } => serde_json::to_string(details),
            Event::Retrieve { details, .. } => serde_json::to_string(details),
            Event::Retract { details, .. } => serde_json::to_string(details),
            Event::Acknowledge { details, .. } => serde_json::to_string(details),
            Event::Feedback { details, .. } => serde_json::to_string(details),
            Event::UserAuth { details, .. } => serde_json::to_string(details),
            Event::Application { details } => serde_json::to_string(details),
            Event::ModelPromote { details, .. } => serde_json::to_string(details),
        };
        // Plain structs of strings and numbers always serialize.
        json.unwrap_or_else(|_| "{}".into())
    }

    /// The event an entry's stored `event`, `subject` and `details` say; None for anything
    /// else (another event, a subject or details of another shape).
    pub fn parse(event: &str, subject: &str, details: &str) -> Option<Event> {
        let after = |prefix: &str| subject.strip_prefix(prefix).map(str::to_string);
        fn read<T: serde::de::DeserializeOwned>(details: &str) -> Option<T> {
            serde_json::from_str(details).ok()
        }
        Some(match event {
            "deidentify" => Event::Deidentify { instance: after("instance:")?, details: read(details)? },
            "reidentify" if subject == "query-index" || subject == "audit-export" => Event::ReidentifyIndex { details: read(details)? },
            "reidentify" => Event::Reidentify { instance: after("instance:")?, details: read(details)? },
            "ae_add" => Event::AeAdd { ae: subject.to_string(), details: read(details)? },
            "ae_remove" => Event::AeRemove { ae: subject.to_string() },
            "ae_echo" => Event::AeEcho { ae: subject.to_string(), details: read(details)? },
            "worklist_view" => Event::WorklistView { user: after("user:")?, details: read(details)? },
            "reading" => Event::Reading { study: after("study:")?.parse().ok()?, details: read(details)? },
            "query" => Event::Query { by: Party::parse(subject)?, details: read(details)? },
            "retrieve" => Event::Retrieve { by: Party::parse(subject)?, details: read(details)? },
            "retract" => Event::Retract { study: after("study:")?.parse().ok()?, details: read(details)? },
            "acknowledge" => Event::Acknowledge { study: after("study:")?.parse().ok()?, details: read(details)? },
            "feedback" => Event::Feedback { study: after("study:")?.parse().ok()?, details: read(details)? },
            "user_auth" => Event::UserAuth { user: after("user:")?, details: read(details)? },
            "application" if subject == "node" => Event::Application { details: read(details)? },
            "model_promote" => Event::ModelPromote { model: after("model:")?, details: read(details)? },
            _ => return None,
        })
    }
}

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: i64,
    pub at_ms: i64,
    pub event: String,
    pub subject: String,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
    /// HMAC-SHA256 under the audit key (false: a plain SHA-256 entry from before).
    pub keyed: bool,
}

/// The fields of an entry, length-prefixed.
fn fields<'a>(prev_hash: &'a str, seq: &'a [u8; 8], at_ms: &'a [u8; 8], event: &'a str, subject: &'a str, details: &'a str) -> [&'a [u8]; 6] {
    [prev_hash.as_bytes(), seq, at_ms, event.as_bytes(), subject.as_bytes(), details.as_bytes()]
}

/// The unkeyed SHA-256 chaining of versions before the chain was keyed (what anyone can
/// compute; kept to recognise such entries in tests).
pub fn entry_hash(prev_hash: &str, seq: i64, at_ms: i64, event: &str, subject: &str, details: &str) -> String {
    let mut h = Sha256::new();
    for field in fields(prev_hash, &seq.to_be_bytes(), &at_ms.to_be_bytes(), event, subject, details) {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    hex::encode(h.finalize())
}

/// An entry's keyed hash.
pub fn entry_mac(key: &[u8; 32], prev_hash: &str, seq: i64, at_ms: i64, event: &str, subject: &str, details: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"triage-node audit entry\0");
    for field in fields(prev_hash, &seq.to_be_bytes(), &at_ms.to_be_bytes(), event, subject, details) {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("entry {seq}: its hash does not match its contents under this site's key (altered, or written without the key)")]
    Altered { seq: i64 },
    #[error("entry {seq}: it does not follow entry {expected_prev} (an entry was deleted or inserted)")]
    Broken { seq: i64, expected_prev: i64 },
    #[error("the log ends at entry {last} but its head says {head}: entries were deleted from the end")]
    Truncated { last: i64, head: i64 },
    #[error("the head's hash does not match the last entry")]
    HeadMismatch,
    #[error("entry {seq} has no keyed hash (written by a version before the chain was keyed, or forged): it cannot be trusted")]
    Unkeyed { seq: i64 },
    #[error("the checkpoint is not one this site signed (wrong key, or altered): {0}")]
    CheckpointForged(String),
    #[error("the checkpoint names entry {seq}, which the log no longer holds as it was: entries were deleted or rewritten since")]
    CheckpointMissing { seq: i64 },
}

/// Verify `entries` (in sequence order) against the head, under the site's audit key; returns
/// how many entries were checked.
pub fn verify(key: &[u8; 32], entries: &[Entry], head_seq: i64, head_hash: &str) -> Result<usize, VerifyError> {
    let mut prev_hash = GENESIS.to_string();
    let mut prev_seq = 0;
    for e in entries {
        if e.seq != prev_seq + 1 || e.prev_hash != prev_hash {
            return Err(VerifyError::Broken { seq: e.seq, expected_prev: prev_seq });
        }
        if !e.keyed {
            return Err(VerifyError::Unkeyed { seq: e.seq });
        }
        if entry_mac(key, &e.prev_hash, e.seq, e.at_ms, &e.event, &e.subject, &e.details) != e.hash {
            return Err(VerifyError::Altered { seq: e.seq });
        }
        prev_hash = e.hash.clone();
        prev_seq = e.seq;
    }
    if prev_seq != head_seq {
        return Err(VerifyError::Truncated { last: prev_seq, head: head_seq });
    }
    if prev_hash != head_hash {
        return Err(VerifyError::HeadMismatch);
    }
    Ok(entries.len())
}

/// A signed statement of the chain's head at a moment, to keep outside the database (a
/// ticket, a write-once log, paper): one line, no patient data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub at_ms: i64,
}

const CHECKPOINT_PREFIX: &str = "triage-node audit checkpoint v1";

impl Checkpoint {
    fn mac(&self, key: &[u8; 32]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(format!("{CHECKPOINT_PREFIX}\0{}\0{}\0{}", self.seq, self.hash, self.at_ms).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// `triage-node audit checkpoint v1 seq=N hash=H at_ms=T mac=M`
    pub fn signed(&self, key: &[u8; 32]) -> String {
        format!("{CHECKPOINT_PREFIX} seq={} hash={} at_ms={} mac={}", self.seq, self.hash, self.at_ms, self.mac(key))
    }

    /// Read a signed checkpoint line and check its signature.
    pub fn parse(key: &[u8; 32], text: &str) -> Result<Checkpoint, VerifyError> {
        let forged = |why: &str| VerifyError::CheckpointForged(why.to_string());
        let line = text.lines().map(str::trim).find(|l| l.starts_with(CHECKPOINT_PREFIX)).ok_or_else(|| forged("no checkpoint line"))?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
                .ok_or_else(|| forged(&format!("no {name}")))
        };
        let number = |name: &str| field(name)?.parse::<i64>().map_err(|_| forged(&format!("{name} is not a number")));
        let cp = Checkpoint { seq: number("seq")?, hash: field("hash")?, at_ms: number("at_ms")? };
        if cp.mac(key) != field("mac")? {
            return Err(forged("its signature does not match"));
        }
        Ok(cp)
    }

    /// The chain still holds the entry this checkpoint names, unchanged.
    pub fn check(&self, entries: &[Entry]) -> Result<(), VerifyError> {
        match entries.iter().find(|e| e.seq == self.seq) {
            Some(e) if e.hash == self.hash => Ok(()),
            _ if self.seq == 0 && self.hash == GENESIS => Ok(()),
            _ => Err(VerifyError::CheckpointMissing { seq: self.seq }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    /// Each event is spelled once: it reads back from its stored name, subject and details as
    /// itself, every name is in `NAMES`, and nothing else parses.
    #[test]
    fn events_round_trip_through_their_stored_text() {
        let all = [
            Event::Deidentify {
                instance: "2.25.1".into(),
                details: Deidentified {
                    instance_id: Some(7),
                    calling_ae: Some("CT1".into()),
                    received_at_ms: Some(1),
                    export: false,
                    method: serde_json::json!({"profile": "PS3.15"}),
                    pixels: "kept".into(),
                },
            },
            Event::Deidentify {
                instance: "2.25.9".into(),
                details: Deidentified {
                    instance_id: None,
                    calling_ae: None,
                    received_at_ms: None,
                    export: true,
                    method: serde_json::Value::Null,
                    pixels: "kept".into(),
                },
            },
            Event::Reidentify { instance: "2.25.2".into(), details: Reidentified { purpose: "test".into(), study: "2.25.3".into() } },
            Event::ReidentifyIndex { details: IndexOpened { purpose: "query index".into(), objects: 3, map_records: 2 } },
            Event::AeAdd {
                ae: "PACS".into(),
                details: Registration {
                    host: Some("10.0.0.1".into()),
                    port: Some(104),
                    role: "pacs".into(),
                    enabled: true,
                    tls: true,
                    tls_identity: Some("pacs".into()),
                },
            },
            Event::AeRemove { ae: "PACS".into() },
            Event::AeEcho { ae: "PACS".into(), details: Echoed { user: "it".into(), success: false, status: None } },
            Event::WorklistView { user: "dr.grey".into(), details: Viewed { user: "dr.grey".into(), studies: vec![1, 2], opened: 2 } },
            Event::Reading {
                study: 42,
                details: ReadingChange { action: "claim".into(), reader: "dr.grey".into(), from: "unread".into(), to: "claimed".into() },
            },
            Event::Query {
                by: Party::Ae("VIEWER".into()),
                details: Queried { model: "STUDY".into(), level: "STUDY".into(), matches: 1, cancelled: false, via: None },
            },
            Event::Query {
                by: Party::User("dr.grey".into()),
                details: Queried { model: "study root".into(), level: "SERIES".into(), matches: 2, cancelled: false, via: Some("QIDO-RS".into()) },
            },
            Event::Retrieve {
                by: Party::Ae("VIEWER".into()),
                details: Retrieved {
                    operation: "C-MOVE".into(),
                    destination: "PACS".into(),
                    model: "STUDY".into(),
                    level: "STUDY".into(),
                    objects: 1,
                    sop_instances: vec!["2.25.4".into()],
                },
            },
            Event::Retract {
                study: 42,
                details: Retracted {
                    user: "it-admin".into(),
                    reason: "wrong model version \"v2\"".into(),
                    code: "113037".into(),
                    note: Some("2.25.5".into()),
                    objects: vec!["2.25.6".into(), "2.25.7".into()],
                    hl7: true,
                },
            },
            Event::Acknowledge {
                study: 42,
                details: Acknowledged { user: "link".into(), via: "link".into(), notification: "tn-0123".into(), rule: "oncall".into(), after_ms: 90_000 },
            },
            Event::Feedback {
                study: 42,
                details: FeedbackGiven {
                    user: "dr.grey".into(),
                    model: "demo-nodule".into(),
                    model_version: "1.0.0".into(),
                    label: "nodule".into(),
                    verdict: "disagree".into(),
                    corrected_label: None,
                    edited: true,
                },
            },
            Event::UserAuth {
                user: "dr.grey".into(),
                details: Authentication { outcome: "login".into(), via: "oidc".into(), role: Some("reader".into()), reason: None },
            },
            Event::UserAuth {
                user: "unknown".into(),
                details: Authentication { outcome: "refused".into(), via: "oidc".into(), role: None, reason: Some("expired".into()) },
            },
            Event::Application { details: ApplicationActivity { action: "start".into(), version: "1.0.0".into() } },
            Event::ModelPromote {
                model: "next".into(),
                details: Promoted {
                    user: "cli:ann".into(),
                    version: "2".into(),
                    replaces: "old".into(),
                    replaces_version: "1".into(),
                    retired_to: ".retired/old-1-5".into(),
                },
            },
        ];
        for e in &all {
            assert_eq!(Event::parse(e.name(), &e.subject(), &e.details()).as_ref(), Some(e), "{e:?}");
            assert!(!e.details().contains("eyJ"), "no token in an entry");
            assert!(Event::NAMES.contains(&e.name()), "{e:?}");
        }
        assert_eq!(Event::NAMES.iter().collect::<std::collections::BTreeSet<_>>().len(), Event::NAMES.len());
        assert_eq!(Event::parse("reading", "study:x", "{}"), None);
        assert_eq!(Event::parse("ae_echo", "PACS", "{\"user\": 3}"), None, "details of another shape");
        assert_eq!(Event::parse("export", "x", "{}"), None);
    }

    fn chain(n: i64) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map(|e| e.hash.clone()).unwrap_or_else(|| GENESIS.to_string());
            let (event, subject, details) = ("ae_add".to_string(), format!("CT{seq}"), "{\"role\":\"modality\"}".to_string());
            let hash = entry_mac(&KEY, &prev, seq, 1000 + seq, &event, &subject, &details);
            out.push(Entry { seq, at_ms: 1000 + seq, event, subject, details, prev_hash: prev, hash, keyed: true });
        }
        out
    }

    #[test]
    fn tampering_of_every_kind_is_detected() {
        let good = chain(5);
        let head = (5, good[4].hash.clone());
        assert_eq!(verify(&KEY, &good, head.0, &head.1), Ok(5));
        assert_eq!(verify(&KEY, &[], 0, GENESIS), Ok(0));

        let check = |entries: Vec<Entry>, head_seq: i64, head_hash: &str, expected: VerifyError| {
            assert_eq!(verify(&KEY, &entries, head_seq, head_hash), Err(expected));
        };
        let mut altered = good.clone();
        altered[2].details = "{\"role\":\"pacs\"}".into();
        check(altered, head.0, &head.1, VerifyError::Altered { seq: 3 });

        let mut rehashed = good.clone(); // altered and re-hashed: the next link breaks
        rehashed[2].subject = "EVIL".into();
        rehashed[2].hash = entry_mac(&KEY, &rehashed[2].prev_hash, 3, rehashed[2].at_ms, &rehashed[2].event, "EVIL", &rehashed[2].details);
        check(rehashed, head.0, &head.1, VerifyError::Broken { seq: 4, expected_prev: 3 });

        let mut deleted = good.clone();
        deleted.remove(1);
        check(deleted, head.0, &head.1, VerifyError::Broken { seq: 3, expected_prev: 1 });

        let truncated = good[..4].to_vec();
        check(truncated, head.0, &head.1, VerifyError::Truncated { last: 4, head: 5 });

        check(good.clone(), head.0, GENESIS, VerifyError::HeadMismatch);

        let mut reordered = good.clone();
        reordered.swap(1, 2);
        check(reordered, head.0, &head.1, VerifyError::Broken { seq: 3, expected_prev: 1 });
    }

    /// Whoever holds only the database cannot rewrite the chain: every entry recomputed with
    /// plain SHA-256 (what the unkeyed chain allowed), or with another key, fails.
    #[test]
    fn a_chain_rewritten_without_the_key_fails() {
        let mut forged = chain(3);
        let mut prev = GENESIS.to_string();
        for e in forged.iter_mut() {
            e.subject = "EVIL".into();
            e.prev_hash = prev.clone();
            e.hash = entry_mac(&[9; 32], &prev, e.seq, e.at_ms, &e.event, &e.subject, &e.details);
            prev = e.hash.clone();
        }
        assert_eq!(verify(&KEY, &forged, 3, &prev), Err(VerifyError::Altered { seq: 1 }));
        // Every entry rewritten with plain SHA-256 (what the unkeyed chain allowed): each is
        // refused, whatever its flag says.
        let mut rewritten = chain(3);
        let mut prev = GENESIS.to_string();
        for e in rewritten.iter_mut() {
            e.prev_hash = prev.clone();
            e.hash = entry_hash(&prev, e.seq, e.at_ms, &e.event, &e.subject, &e.details);
            prev = e.hash.clone();
        }
        assert_eq!(verify(&KEY, &rewritten, 3, &prev), Err(VerifyError::Altered { seq: 1 }));
        for e in rewritten.iter_mut() {
            e.keyed = false;
        }
        assert_eq!(verify(&KEY, &rewritten, 3, &prev), Err(VerifyError::Unkeyed { seq: 1 }));
    }

    /// Deleting the tail and rewinding the head verifies on its own (every remaining entry is
    /// genuine); a checkpoint taken before detects it. A checkpoint is signed.
    #[test]
    fn a_checkpoint_detects_a_rewound_head() {
        let good = chain(5);
        let cp = Checkpoint { seq: 5, hash: good[4].hash.clone(), at_ms: 42 };
        let line = cp.signed(&KEY);
        let parsed = Checkpoint::parse(&KEY, &format!("exported 2026-12-01\n{line}\n")).unwrap();
        assert_eq!(parsed, cp);
        let rewound = good[..3].to_vec();
        assert!(verify(&KEY, &rewound, 3, &good[2].hash).is_ok());
        assert_eq!(parsed.check(&rewound), Err(VerifyError::CheckpointMissing { seq: 5 }));
        assert_eq!(parsed.check(&good), Ok(()));
        assert!(matches!(Checkpoint::parse(&[1; 32], &line), Err(VerifyError::CheckpointForged(_))));
        assert!(matches!(Checkpoint::parse(&KEY, &line.replace("seq=5", "seq=4")), Err(VerifyError::CheckpointForged(_))));
        assert!(matches!(Checkpoint::parse(&KEY, "nothing"), Err(VerifyError::CheckpointForged(_))));
    }

    #[test]
    fn fields_cannot_be_shifted_between_each_other() {
        // Length prefixes: "ab"+"c" and "a"+"bc" hash differently.
        assert_ne!(entry_mac(&KEY, GENESIS, 1, 1, "ab", "c", ""), entry_mac(&KEY, GENESIS, 1, 1, "a", "bc", ""));
        assert_ne!(entry_hash(GENESIS, 1, 1, "ab", "c", ""), entry_hash(GENESIS, 1, 1, "a", "bc", ""));
    }
}
