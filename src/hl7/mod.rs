//! HL7 v2.5.1 for the RIS: the ORU^R01 that carries a study's AI triage (`Report`, rendered by
//! `oru_r01` with the patient as the RIS knows them) and MLLP, the framing it travels in
//! (`send`: one message, one ACK, its MSA read). Pure but for `send`'s socket.
//!
//! A `Report` is what the node keeps on disk for the outbox: row ids and de-identified UIDs,
//! findings and priority, never a patient's identifiers. The originals are put in only when
//! the message is rendered for sending, in memory (`Identity`).
//! Must not: know the database, DICOM files or the outbox's rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One finding as the RIS gets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportFinding {
    /// Coding scheme (SCT, or the private 99TRIAGE), code value and meaning.
    pub scheme: String,
    pub code: String,
    pub meaning: String,
    pub probability: f64,
    pub positive: bool,
    pub urgent: bool,
    pub model: String,
    pub model_version: String,
}

/// What an ORU^R01 says about one study, de-identified (kept in the outbox as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// MSH-10, the same on every attempt: the receiver knows a retry by it.
    pub control_id: String,
    /// When the result was made (MSH-7, OBR-22), milliseconds since the epoch.
    pub created_ms: i64,
    /// URGENT, POSITIVE, NEGATIVE, FAILED or NOT_ANALYSED.
    pub priority: String,
    /// The priority an earlier message gave, when this one lowers it (sent as a correction).
    pub lowered_from: Option<String>,
    /// An earlier ORU for this study was queued: this one is a correction (OBR-25 C).
    pub correction: bool,
    pub findings: Vec<ReportFinding>,
    /// Why the study could not be analysed (FAILED), or was not (NOT_ANALYSED).
    pub reasons: Vec<String>,
    pub demonstration: bool,
    /// The AI report's SOP Instance UID and its series (ours, the same as the delivered SR).
    pub sr_sop_instance_uid: Option<String>,
    pub sr_series_instance_uid: Option<String>,
    /// A de-identified SOP Instance UID of the study: whose sealed record names the patient.
    pub instance_uid: String,
    /// The AI result was withdrawn (an admin retracted it; the meaning of the rejection note's
    /// title): this message is a correction (OBR-25 C) that deletes every observation the
    /// earlier one sent (OBX-11 D) and gives no priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retracted: Option<String>,
    /// Not the ORU: the order message (`order_message`) that raises the order's priority,
    /// queued after the study's ORU with its own control ID.
    #[serde(default, skip_serializing_if = "OrderUpdate::is_none")]
    pub order_update: OrderUpdate,
    /// A NEGATIVE whose call is in the lowest confidence tier (a score near the operating
    /// point): said in an NTE, so the reader opens it before the confident negatives.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
    /// Readers' verdicts on the AI findings (`[hl7] feedback`): this message is the follow-up
    /// a verdict sends, a correction (OBR-25 C) repeating the result with every verdict of the
    /// study in OBX lines (OBX-11 C, corrected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<ReaderVerdict>,
}

/// One reader's verdict on one AI finding, as the RIS gets it. No reader's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReaderVerdict {
    /// The AI finding judged: coding scheme, code value and meaning; its model.
    pub scheme: String,
    pub code: String,
    pub meaning: String,
    pub model: String,
    pub model_version: String,
    /// `agree`, `disagree` or `not_assessable`.
    pub verdict: String,
    /// What the reader said the finding should have been (coded; `NOFINDING` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected: Option<(String, String, String)>,
    /// The reader's words, only where the site allows them (`[hl7] feedback_comment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl ReaderVerdict {
    /// OBX-5 of the verdict (CWE).
    fn coded(&self) -> String {
        let (code, text) = match self.verdict.as_str() {
            "agree" => ("AGREE", "Reader agrees with the AI finding"),
            "disagree" => ("DISAGREE", "Reader disagrees with the AI finding"),
            _ => ("NOTASSESSABLE", "Reader could not assess the AI finding"),
        };
        format!("{code}^{text}^99TRIAGE")
    }
}

/// Which order message raises the RIS's order priority after an urgent result (`[hl7]
/// order_update`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderUpdate {
    #[default]
    None,
    /// OMI^O23 (v2.5.1 imaging order): ORC-1 XO, TQ1-9 the priority, IPC the Study Instance UID.
    Omi,
    /// ORM^O01 (older RIS): ORC-1 XO, ORC-7 `^^^^^<priority>`.
    Orm,
}

impl OrderUpdate {
    pub fn is_none(&self) -> bool {
        *self == OrderUpdate::None
    }
}

/// The patient and the order as the RIS knows them, from the sealed map, in memory only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub patient_id: Option<String>,
    pub issuer_of_patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub accession_number: Option<String>,
    pub study_instance_uid: String,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
}

/// Where the priority goes and how it is spelled: the site's interface engine decides.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Mapping {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// `TQ1-9` (v2.5.1's own), `OBR-27` (Quantity/Timing, component 6) or `OBR-5`.
    pub priority_field: String,
    /// The code sent for each priority (HL7 table 0485: S = STAT, A = ASAP, R = routine).
    pub urgent: String,
    pub positive: String,
    pub negative: String,
    pub failed: String,
}

impl Mapping {
    pub fn validate(&self) -> Result<(), String> {
        if !["TQ1-9", "OBR-27", "OBR-5"].contains(&self.priority_field.as_str()) {
            return Err("priority_field must be TQ1-9, OBR-27 or OBR-5".into());
        }
        for (name, v) in [("urgent", &self.urgent), ("positive", &self.positive), ("negative", &self.negative), ("failed", &self.failed)] {
            if v.is_empty() || v.len() > 16 || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("priority code {name} must be 1-16 letters or digits"));
            }
        }
        Ok(())
    }

    fn code(&self, priority: &str) -> &str {
        match priority {
            "URGENT" => &self.urgent,
            "POSITIVE" => &self.positive,
            // Both are read without AI: the site's code for a study the AI did not analyse.
            "FAILED" | "NOT_ANALYSED" => &self.failed,
            _ => &self.negative,
        }
    }
}

/// HL7 table 0485 meaning of the codes it defines.
fn priority_text(code: &str) -> &str {
    match code {
        "S" => "STAT",
        "A" => "ASAP",
        "R" => "Routine",
        "P" => "Preop",
        "C" => "Callback",
        "T" => "Timing critical",
        _ => "",
    }
}

/// A value escaped for HL7 v2 (PS: the encoding characters `|^~\&` and line breaks).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '&' => out.push_str("\\T\\"),
            '\r' | '\n' => out.push_str("\\.br\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A DICOM PN (`Family^Given^Middle^Prefix^Suffix`, first component group) as an XPN: the same
/// component order, each component escaped.
fn xpn(pn: &str) -> String {
    let alphabetic = pn.split('=').next().unwrap_or("");
    alphabetic.split('^').map(escape).collect::<Vec<_>>().join("^").trim_end_matches('^').to_string()
}

/// `YYYYMMDDHHMMSS` (UTC, as `+0000`) of epoch milliseconds.
pub fn hl7_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::domain::civil_from_days(days);
    format!("{y:04}{m:02}{d:02}{:02}{:02}{:02}+0000", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The MSH segment of a message of `kind` (`ORU^R01^ORU_R01`, ...) with `control_id` (MSH-10).
fn msh(map: &Mapping, when: &str, kind: &str, control_id: &str) -> String {
    format!(
        "MSH|^~\\&|{}|{}|{}|{}|{when}||{kind}|{}|P|2.5.1|||AL|NE||UNICODE UTF-8",
        escape(&map.sending_application),
        escape(&map.sending_facility),
        escape(&map.receiving_application),
        escape(&map.receiving_facility),
        escape(control_id),
    )
}

/// The PID segment of the patient `who` names (re-identified at sending).
fn pid(who: &Identity) -> String {
    let opt = |v: &Option<String>| v.as_deref().map(escape).unwrap_or_default();
    let issuer = who.issuer_of_patient_id.as_deref().map(|i| format!("^^^{}", escape(i))).unwrap_or_default();
    format!("PID|1||{}{issuer}||{}||{}|{}", opt(&who.patient_id), who.patient_name.as_deref().map(xpn).unwrap_or_default(), opt(&who.birth_date), opt(&who.sex),)
}

/// The ORU^R01 of `report` for the patient `who`, segments separated by CR.
pub fn oru_r01(report: &Report, who: &Identity, map: &Mapping) -> String {
    let opt = |v: &Option<String>| v.as_deref().map(escape).unwrap_or_default();
    let when = hl7_time(report.created_ms);
    // Table 0123 (OBR-25): C, correction to results. Table 0085 (OBX-11): D, deletes the OBX
    // record: a withdrawn result's observations are deleted, not replaced.
    let status = if report.correction || report.retracted.is_some() { "C" } else { "P" };
    let obx_status = if report.retracted.is_some() { "D" } else { status };
    let code = map.code(&report.priority);
    let priority = format!("{code}^{}^HL70485", priority_text(code));
    let accession = opt(&who.accession_number);
    let mut segs: Vec<String> = vec![msh(map, &when, "ORU^R01^ORU_R01", &report.control_id), pid(who)];
    // The order is the RIS's: its accession number is the filler order number.
    segs.push(format!("ORC|RE||{accession}||CM"));
    let observed = match (&who.study_date, &who.study_time) {
        (Some(d), Some(t)) => format!("{}{}", escape(d), escape(t.split('.').next().unwrap_or(""))),
        (Some(d), None) => escape(d),
        _ => String::new(),
    };
    let mut obr: Vec<String> = vec![String::new(); 28];
    obr[0] = "OBR".into();
    obr[1] = "1".into();
    obr[3] = accession.clone();
    obr[4] = "AITRIAGE^AI triage of the imaging study^99TRIAGE".into();
    obr[7] = observed;
    obr[22] = when.clone();
    obr[25] = status.into();
    // A withdrawn result gives no priority: the one it gave is withdrawn with it.
    let prioritised = report.retracted.is_none();
    match map.priority_field.as_str() {
        "OBR-5" if prioritised => obr[5] = code.into(),
        "OBR-27" if prioritised => obr[27] = format!("^^^^^{code}"),
        _ => {}
    }
    segs.push(obr.join("|").trim_end_matches('|').to_string());
    if map.priority_field == "TQ1-9" && prioritised {
        segs.push(format!("TQ1|1||||||||{priority}"));
    }
    let mut n = 0;
    let mut obx = |segs: &mut Vec<String>, fields: String| {
        n += 1;
        segs.push(format!("OBX|{n}|{fields}"));
    };
    obx(
        &mut segs,
        format!(
            "CWE|PRIORITY^AI triage priority^99TRIAGE||{}^{}^99TRIAGE||||||{obx_status}",
            escape(&report.priority),
            escape(&report.priority.to_lowercase())
        ),
    );
    for f in &report.findings {
        // The coded finding, its probability (unit 1), and the abnormal flag.
        let flag = if f.urgent {
            "AA"
        } else if f.positive {
            "A"
        } else {
            "N"
        };
        obx(
            &mut segs,
            format!(
                "NM|{}^{}^{}||{:.4}|1^^UCUM||{flag}|||{obx_status}|||{when}||{}^{}",
                escape(&f.code),
                escape(&f.meaning),
                escape(&f.scheme),
                f.probability,
                escape(&f.model),
                escape(&f.model_version),
            ),
        );
    }
    obx(&mut segs, format!("ST|STUDYUID^Study Instance UID^99TRIAGE||{}||||||{obx_status}", escape(&who.study_instance_uid)));
    if let Some(sr) = &report.sr_sop_instance_uid {
        obx(&mut segs, format!("ST|SRUID^AI report SOP Instance UID^99TRIAGE||{}||||||{obx_status}", escape(sr)));
    }
    // Each verdict a group of its own (OBX-4, the sub-ID): the finding judged, the verdict,
    // the finding as corrected, the comment where allowed; corrected observations (OBX-11 C).
    for (i, v) in report.verdicts.iter().enumerate().filter(|_| report.retracted.is_none()) {
        let sub = i + 1;
        let producer = format!("{}^{}", escape(&v.model), escape(&v.model_version));
        obx(
            &mut segs,
            format!(
                "CWE|AIFINDING^AI finding judged^99TRIAGE|{sub}|{}^{}^{}||||||C|||{when}||{producer}",
                escape(&v.code),
                escape(&v.meaning),
                escape(&v.scheme)
            ),
        );
        obx(&mut segs, format!("CWE|VERDICT^Reader verdict on the AI finding^99TRIAGE|{sub}|{}||||||C|||{when}", v.coded()));
        if let Some((scheme, code, meaning)) = &v.corrected {
            obx(
                &mut segs,
                format!(
                    "CWE|CORRECTED^Finding as corrected by the reader^99TRIAGE|{sub}|{}^{}^{}||||||C|||{when}",
                    escape(code),
                    escape(meaning),
                    escape(scheme)
                ),
            );
        }
        if let Some(comment) = &v.comment {
            obx(&mut segs, format!("TX|COMMENT^Reader comment on the AI finding^99TRIAGE|{sub}|{}||||||C|||{when}", escape(comment)));
        }
    }
    let mut notes: Vec<String> = Vec::new();
    if let Some(why) = &report.retracted {
        notes.push(format!("AI triage result withdrawn by the site ({why}): disregard it and the AI report it names."));
    } else if let Some(from) = &report.lowered_from {
        notes.push(format!("Priority lowered from {from} to {} by a new analysis of the study.", report.priority));
    }
    for r in report.reasons.iter().filter(|_| report.retracted.is_none()) {
        notes.push(format!("Not analysed by AI: {r}. Read without AI."));
    }
    if !report.verdicts.is_empty() && report.retracted.is_none() {
        notes.push(format!(
            "Readers' verdicts on the AI findings ({}): a correction of the AI result's report, each verdict one reader's.",
            report.verdicts.len()
        ));
    }
    if report.uncertain && report.retracted.is_none() {
        notes.push("Uncertain negative: an AI score near the operating point (lowest confidence tier). Read before the confident negatives.".into());
    }
    notes.push(if report.demonstration {
        "Demonstration model, not clinically validated: not for patient care.".into()
    } else {
        "AI triage for prioritisation only; not a diagnosis.".into()
    });
    for (i, note) in notes.iter().enumerate() {
        segs.push(format!("NTE|{}|L|{}", i + 1, escape(note)));
    }
    segs.join("\r") + "\r"
}

/// The message `report` is sent as: the ORU^R01, or the order message it asks for.
pub fn render(report: &Report, who: &Identity, map: &Mapping) -> String {
    match report.order_update {
        OrderUpdate::None => oru_r01(report, who, map),
        style => order_message(report, who, map, style),
    }
}

/// The order message that raises the priority of the RIS's order for the study (`style`
/// OMI^O23 or ORM^O01), segments separated by CR: a change order (ORC-1 XO) of the order the
/// accession number names (placer and filler order number, OBR-2/3, ORC-2/3), the priority code
/// in ORC-7's sixth component (both) and TQ1-9 (OMI), the Study Instance UID in the IPC (OMI).
pub fn order_message(report: &Report, who: &Identity, map: &Mapping, style: OrderUpdate) -> String {
    let opt = |v: &Option<String>| v.as_deref().map(escape).unwrap_or_default();
    let when = hl7_time(report.created_ms);
    let code = map.code(&report.priority);
    let accession = opt(&who.accession_number);
    let kind = if style == OrderUpdate::Orm { "ORM^O01^ORM_O01" } else { "OMI^O23^OMI_O23" };
    let mut segs: Vec<String> = vec![msh(map, &when, kind, &report.control_id), pid(who)];
    // The order the accession names, changed (XO): only its priority; the reason in ORC-16.
    let mut orc: Vec<String> = vec![String::new(); 17];
    orc[0] = "ORC".into();
    orc[1] = "XO".into();
    orc[2] = accession.clone();
    orc[3] = accession.clone();
    orc[7] = format!("^^^^^{code}");
    orc[9] = when.clone();
    orc[16] = format!("AIPRIORITY^Priority raised by AI triage: {}^99TRIAGE", escape(&report.priority));
    segs.push(orc.join("|"));
    if style == OrderUpdate::Omi {
        segs.push(format!("TQ1|1||||||||{code}^{}^HL70485", priority_text(code)));
    }
    let mut obr: Vec<String> = vec![String::new(); 28];
    obr[0] = "OBR".into();
    obr[1] = "1".into();
    obr[2] = accession.clone();
    obr[3] = accession.clone();
    obr[4] = "AITRIAGE^AI triage of the imaging study^99TRIAGE".into();
    if style == OrderUpdate::Orm {
        obr[27] = format!("^^^^^{code}");
    }
    segs.push(obr.join("|").trim_end_matches('|').to_string());
    if style == OrderUpdate::Omi {
        // IPC-1 accession identifier, IPC-2 requested procedure ID (unknown here: the accession),
        // IPC-3 Study Instance UID, IPC-4 scheduled procedure step ID.
        segs.push(format!("IPC|{accession}|{accession}|{}|{accession}", escape(&who.study_instance_uid)));
    }
    segs.push(format!(
        "NTE|1|L|{}",
        escape(if report.demonstration {
            "Priority raised by a demonstration AI model, not clinically validated: not for patient care."
        } else {
            "Priority raised by AI triage for prioritisation only; not a diagnosis."
        })
    ));
    segs.join("\r") + "\r"
}

const START: u8 = 0x0B;
const END: [u8; 2] = [0x1C, 0x0D];
/// Largest ACK read.
const MAX_ACK: usize = 64 * 1024;

/// What the receiver answered (MSA-1). Its text (MSA-3, ERR) is not kept: a receiver's error
/// text often quotes the message, names included, and it would land in the database and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// AA / CA: accepted.
    Accepted,
    /// AE / CE: an application error; may pass on a retry.
    Error(String),
    /// AR / CR: rejected; it will be rejected again.
    Rejected(String),
}

#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    #[error("connecting to the HL7 receiver {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HL7 receiver {0}: {1}")]
    Io(String, std::io::Error),
    #[error("HL7 receiver {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("HL7 receiver {0} sent an unreadable ACK: {1}")]
    BadAck(String, String),
}

/// Read the MSA of an ACK for `control_id`.
pub fn parse_ack(ack: &str, control_id: &str) -> Result<Ack, String> {
    let msa = ack.split(['\r', '\n']).find(|s| s.starts_with("MSA|")).ok_or("no MSA segment")?;
    let fields: Vec<&str> = msa.split('|').collect();
    let code = fields.get(1).copied().unwrap_or("");
    let acked = fields.get(2).copied().unwrap_or("");
    if acked != control_id {
        return Err(format!("MSA-2 acknowledges another message ({} characters), not {control_id}", acked.len()));
    }
    let said = if fields.get(3).is_some_and(|t| !t.is_empty()) { " (its text withheld: it may name the patient)" } else { "" };
    match code {
        "AA" | "CA" => Ok(Ack::Accepted),
        "AE" | "CE" => Ok(Ack::Error(format!("the receiver answered {code}, application error{said}"))),
        "AR" | "CR" => Ok(Ack::Rejected(format!("the receiver answered {code}, rejected{said}"))),
        other => Err(format!("MSA-1 {other:?} is not an acknowledgment code")),
    }
}

/// Send one message over MLLP to `host:port` and read its ACK, each step within `timeout`.
pub async fn send(host: &str, port: u16, message: &str, control_id: &str, timeout: Duration) -> Result<Ack, MllpError> {
    let addr = format!("{host}:{port}");
    let step = |what: std::io::Result<()>| what.map_err(|e| MllpError::Io(addr.clone(), e));
    let mut stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| MllpError::Timeout(addr.clone(), timeout))?
        .map_err(|e| MllpError::Connect(addr.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let mut framed = Vec::with_capacity(message.len() + 3);
    framed.push(START);
    framed.extend_from_slice(message.as_bytes());
    framed.extend_from_slice(&END);
    tokio::time::timeout(timeout, stream.write_all(&framed))
        .await
        .map_err(|_| MllpError::Timeout(addr.clone(), timeout))?
        .map_err(|e| MllpError::Io(addr.clone(), e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the ACK ended"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(2).any(|w| w == END) || buf.len() > MAX_ACK {
                return Ok(());
            }
        }
    };
    step(tokio::time::timeout(timeout, read).await.map_err(|_| MllpError::Timeout(addr.clone(), timeout))?)?;
    let _ = stream.shutdown().await;
    let start = buf.iter().position(|&b| b == START).map_or(0, |i| i + 1);
    let end = buf.windows(2).position(|w| w == END).ok_or_else(|| MllpError::BadAck(addr.clone(), "no MLLP end block".into()))?;
    let ack = String::from_utf8_lossy(&buf[start..end.max(start)]).into_owned();
    parse_ack(&ack, control_id).map_err(|why| MllpError::BadAck(addr.clone(), why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(field: &str) -> Mapping {
        Mapping {
            sending_application: "TRIAGE_NODE".into(),
            sending_facility: "HOSP".into(),
            receiving_application: "RIS".into(),
            receiving_facility: "HOSP".into(),
            priority_field: field.into(),
            urgent: "S".into(),
            positive: "A".into(),
            negative: "R".into(),
            failed: "R".into(),
        }
    }

    fn report() -> Report {
        Report {
            control_id: "TN42S7".into(),
            created_ms: 1_764_670_000_000,
            priority: "URGENT".into(),
            lowered_from: None,
            correction: false,
            findings: vec![ReportFinding {
                scheme: "SCT".into(),
                code: "27925004".into(),
                meaning: "Nodule".into(),
                probability: 0.93456,
                positive: true,
                urgent: true,
                model: "demo-nodule".into(),
                model_version: "1.0".into(),
            }],
            reasons: vec![],
            demonstration: true,
            sr_sop_instance_uid: Some("2.25.1".into()),
            sr_series_instance_uid: Some("2.25.2".into()),
            instance_uid: "2.25.3".into(),
            retracted: None,
            order_update: OrderUpdate::None,
            uncertain: false,
            verdicts: vec![],
        }
    }

    #[test]
    fn an_uncertain_negative_says_so() {
        let r = Report { priority: "NEGATIVE".into(), uncertain: true, ..report() };
        let m = oru_r01(&r, &who(), &mapping("TQ1-9"));
        assert!(m.contains("NTE|1|L|Uncertain negative: an AI score near the operating point"), "{m}");
        assert!(!oru_r01(&report(), &who(), &mapping("TQ1-9")).contains("Uncertain"));
        // Reports kept before the field existed read as certain.
        let mut old = serde_json::to_value(report()).unwrap();
        old.as_object_mut().unwrap().remove("uncertain");
        assert!(!serde_json::from_value::<Report>(old).unwrap().uncertain);
    }

    #[test]
    fn an_urgent_order_update_raises_the_accession_s_order_to_stat() {
        let r = Report { control_id: "TN42S7O".into(), order_update: OrderUpdate::Omi, ..report() };
        let m = render(&r, &who(), &mapping("OBR-5"));
        assert!(m.ends_with('\r') && !m.contains('\n'));
        let segs: Vec<&str> = m.split('\r').filter(|s| !s.is_empty()).map(|s| &s[..3]).collect();
        assert_eq!(segs, ["MSH", "PID", "ORC", "TQ1", "OBR", "IPC", "NTE"], "OMI_O23's order: {m}");
        assert_eq!(field(&m, "MSH", 9), "OMI^O23^OMI_O23");
        assert_eq!(field(&m, "MSH", 10), "TN42S7O");
        assert_eq!(field(&m, "MSH", 12), "2.5.1");
        assert_eq!(field(&m, "PID", 3), "MRN\\F\\1^^^HOSP");
        assert_eq!(field(&m, "PID", 5), "O'NEIL^MARY^ANN");
        assert_eq!(field(&m, "ORC", 1), "XO", "a change order");
        assert_eq!((field(&m, "ORC", 2), field(&m, "ORC", 3)), ("ACC\\T\\1", "ACC\\T\\1"));
        assert_eq!(field(&m, "ORC", 7), "^^^^^S");
        assert_eq!(field(&m, "TQ1", 9), "S^STAT^HL70485", "TQ1-9 whatever the ORU's priority field");
        assert_eq!((field(&m, "OBR", 2), field(&m, "OBR", 3)), ("ACC\\T\\1", "ACC\\T\\1"));
        assert_eq!(field(&m, "IPC", 1), "ACC\\T\\1");
        assert_eq!(field(&m, "IPC", 3), "1.2.3", "the original Study Instance UID");
        assert!(field(&m, "NTE", 3).contains("demonstration"));

        let r = Report { order_update: OrderUpdate::Orm, ..r };
        let m = render(&r, &who(), &mapping("TQ1-9"));
        let segs: Vec<&str> = m.split('\r').filter(|s| !s.is_empty()).map(|s| &s[..3]).collect();
        assert_eq!(segs, ["MSH", "PID", "ORC", "OBR", "NTE"], "ORM_O01: no TQ1, no IPC: {m}");
        assert_eq!(field(&m, "MSH", 9), "ORM^O01^ORM_O01");
        assert_eq!((field(&m, "ORC", 1), field(&m, "ORC", 7)), ("XO", "^^^^^S"));
        assert_eq!(field(&m, "OBR", 27), "^^^^^S");
        // A positive study's order (when configured) gets the site's positive code.
        let m = render(&Report { priority: "POSITIVE".into(), ..r.clone() }, &who(), &mapping("TQ1-9"));
        assert_eq!(field(&m, "ORC", 7), "^^^^^A");
        // The kept report: the ORU's spelling has no field for it, an order update says so.
        let json = serde_json::to_string(&report()).unwrap();
        assert!(!json.contains("order_update"));
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.order_update, OrderUpdate::Orm);
        assert_eq!(render(&report(), &who(), &mapping("TQ1-9")), oru_r01(&report(), &who(), &mapping("TQ1-9")));
    }

    fn who() -> Identity {
        Identity {
            patient_id: Some("MRN|1".into()),
            issuer_of_patient_id: Some("HOSP".into()),
            patient_name: Some("O'NEIL^MARY^ANN".into()),
            birth_date: Some("19700101".into()),
            sex: Some("F".into()),
            accession_number: Some("ACC&1".into()),
            study_instance_uid: "1.2.3".into(),
            study_date: Some("20261202".into()),
            study_time: Some("101500.123".into()),
        }
    }

    fn field<'a>(msg: &'a str, seg: &str, n: usize) -> &'a str {
        let s = msg.split('\r').find(|s| s.starts_with(&format!("{seg}|"))).unwrap_or_else(|| panic!("no {seg}"));
        // MSH-1 is the field separator itself, so MSH fields are one off.
        let n = if seg == "MSH" { n - 1 } else { n };
        s.split('|').nth(n).unwrap_or("")
    }

    #[test]
    fn an_urgent_study_is_stat_in_the_site_s_field_with_its_finding_coded() {
        let m = oru_r01(&report(), &who(), &mapping("TQ1-9"));
        assert!(m.ends_with('\r') && !m.contains('\n'));
        assert_eq!(field(&m, "MSH", 9), "ORU^R01^ORU_R01");
        assert_eq!(field(&m, "MSH", 10), "TN42S7");
        assert_eq!(field(&m, "MSH", 12), "2.5.1");
        assert_eq!(field(&m, "MSH", 7), "20251202100640+0000");
        assert_eq!(field(&m, "PID", 3), "MRN\\F\\1^^^HOSP", "separators in values are escaped");
        assert_eq!(field(&m, "PID", 5), "O'NEIL^MARY^ANN");
        assert_eq!(field(&m, "OBR", 3), "ACC\\T\\1");
        assert_eq!(field(&m, "OBR", 7), "20261202101500");
        assert_eq!(field(&m, "OBR", 25), "P", "preliminary");
        assert_eq!(field(&m, "TQ1", 9), "S^STAT^HL70485");
        let obx: Vec<&str> = m.split('\r').filter(|s| s.starts_with("OBX|")).collect();
        assert!(obx[1].starts_with("OBX|2|NM|27925004^Nodule^SCT||0.9346|1^^UCUM||AA|||P"), "{}", obx[1]);
        assert!(obx.iter().any(|s| s.contains("STUDYUID") && s.contains("||1.2.3||")));
        assert!(obx.iter().any(|s| s.contains("SRUID") && s.contains("||2.25.1||")));
        assert!(m.contains("NTE|1|L|Demonstration model"));
        for (f, seg, n, v) in [("OBR-27", "OBR", 27, "^^^^^S"), ("OBR-5", "OBR", 5, "S")] {
            let m = oru_r01(&report(), &who(), &mapping(f));
            assert_eq!(field(&m, seg, n), v, "{f}");
            assert!(!m.contains("TQ1|"));
        }
    }

    #[test]
    fn a_lowered_priority_is_a_correction_that_says_so() {
        let r = Report { priority: "NEGATIVE".into(), lowered_from: Some("URGENT".into()), correction: true, findings: vec![], ..report() };
        let m = oru_r01(&r, &who(), &mapping("TQ1-9"));
        assert_eq!(field(&m, "OBR", 25), "C");
        assert_eq!(field(&m, "TQ1", 9), "R^Routine^HL70485");
        assert!(m.contains("Priority lowered from URGENT to NEGATIVE"), "{m}");
    }

    #[test]
    fn a_reader_s_verdict_is_a_correction_with_the_result_and_one_obx_group_per_verdict() {
        let verdict = |v: &str, corrected: Option<(&str, &str, &str)>, comment: Option<&str>| ReaderVerdict {
            scheme: "SCT".into(),
            code: "27925004".into(),
            meaning: "Nodule".into(),
            model: "demo-nodule".into(),
            model_version: "1.0".into(),
            verdict: v.into(),
            corrected: corrected.map(|(a, b, c)| (a.into(), b.into(), c.into())),
            comment: comment.map(Into::into),
        };
        let r = Report {
            control_id: "TNF19adb1c4f80S7".into(),
            correction: true,
            verdicts: vec![verdict("disagree", Some(("99TRIAGE", "NOFINDING", "No finding")), Some("calcified | old")), verdict("agree", None, None)],
            ..report()
        };
        let msg = oru_r01(&r, &who(), &mapping("TQ1-9"));
        let segs: Vec<&str> = msg.split('\r').filter(|s| !s.is_empty()).collect();
        let obr: Vec<&str> = segs.iter().find(|s| s.starts_with("OBR|")).unwrap().split('|').collect();
        assert_eq!(obr[25], "C", "a correction to results (table 0123)");
        assert!(segs.contains(&"TQ1|1||||||||S^STAT^HL70485"), "the priority stands: {segs:?}");
        let obx: Vec<&str> = segs.iter().copied().filter(|s| s.starts_with("OBX|")).collect();
        // The result again (corrected), then the verdicts' groups.
        assert!(obx[0].starts_with("OBX|1|CWE|PRIORITY^") && obx[0].ends_with("|C"), "{obx:?}");
        let when = hl7_time(r.created_ms);
        assert_eq!(
            &obx[4..],
            [
                format!("OBX|5|CWE|AIFINDING^AI finding judged^99TRIAGE|1|27925004^Nodule^SCT||||||C|||{when}||demo-nodule^1.0"),
                format!("OBX|6|CWE|VERDICT^Reader verdict on the AI finding^99TRIAGE|1|DISAGREE^Reader disagrees with the AI finding^99TRIAGE||||||C|||{when}"),
                format!("OBX|7|CWE|CORRECTED^Finding as corrected by the reader^99TRIAGE|1|NOFINDING^No finding^99TRIAGE||||||C|||{when}"),
                format!("OBX|8|TX|COMMENT^Reader comment on the AI finding^99TRIAGE|1|calcified \\F\\ old||||||C|||{when}"),
                format!("OBX|9|CWE|AIFINDING^AI finding judged^99TRIAGE|2|27925004^Nodule^SCT||||||C|||{when}||demo-nodule^1.0"),
                format!("OBX|10|CWE|VERDICT^Reader verdict on the AI finding^99TRIAGE|2|AGREE^Reader agrees with the AI finding^99TRIAGE||||||C|||{when}"),
            ]
        );
        assert!(msg.contains("NTE|1|L|Readers' verdicts on the AI findings (2): a correction"), "{msg}");
        // A withdrawn result carries no verdicts.
        let gone = oru_r01(&Report { retracted: Some("Rejected for Quality Reasons".into()), ..r }, &who(), &mapping("TQ1-9"));
        assert!(!gone.contains("VERDICT") && !gone.contains("Readers'"), "{gone}");
    }

    #[test]
    fn a_withdrawn_result_is_a_correction_deleting_every_observation_without_a_priority() {
        let r = Report { control_id: "TNR1S7".into(), correction: true, retracted: Some("Rejected for Patient Safety Reasons".into()), ..report() };
        for f in ["TQ1-9", "OBR-27", "OBR-5"] {
            let m = oru_r01(&r, &who(), &mapping(f));
            assert_eq!(field(&m, "OBR", 25), "C", "{f}");
            assert!(!m.contains("TQ1|") && field(&m, "OBR", 5).is_empty() && field(&m, "OBR", 27).is_empty(), "no priority: {m}");
            let obx: Vec<&str> = m.split('\r').filter(|s| s.starts_with("OBX|")).collect();
            assert_eq!(obx.len(), 4, "priority, finding, study, report: {m}");
            for o in &obx {
                assert_eq!(o.split('|').nth(11), Some("D"), "OBX-11 D, deleted: {o}");
            }
            assert!(m.contains("NTE|1|L|AI triage result withdrawn by the site (Rejected for Patient Safety Reasons)"), "{m}");
        }
        // Reports kept before the field existed still read.
        let old = serde_json::to_value(report()).unwrap();
        assert!(old.get("retracted").is_none());
        assert_eq!(serde_json::from_value::<Report>(old).unwrap(), report());
    }

    #[test]
    fn acks_are_read_by_their_msa_for_this_message_only() {
        let ack = |code: &str, id: &str| format!("MSH|^~\\&|RIS||||20261202||ACK|1|P|2.5.1\rMSA|{code}|{id}|bad PID for DOE^JOHN\r");
        assert_eq!(parse_ack(&ack("AA", "TN1"), "TN1"), Ok(Ack::Accepted));
        assert_eq!(parse_ack(&ack("CA", "TN1"), "TN1"), Ok(Ack::Accepted));
        assert!(matches!(parse_ack(&ack("AE", "TN1"), "TN1"), Ok(Ack::Error(_))));
        assert!(matches!(parse_ack(&ack("AR", "TN1"), "TN1"), Ok(Ack::Rejected(_))));
        let Ok(Ack::Rejected(why)) = parse_ack(&ack("AR", "TN1"), "TN1") else { unreachable!() };
        assert!(!why.contains("DOE") && why.contains("withheld"), "{why}");
        assert!(parse_ack(&ack("AA", "TN2"), "TN1").is_err(), "another message's ACK");
        assert!(parse_ack("MSH|^~\\&|x\r", "TN1").is_err());
        assert!(parse_ack(&ack("ZZ", "TN1"), "TN1").is_err());
        assert_eq!(escape("a|b^c~d\\e&f\ng"), "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f\\.br\\g");
        assert_eq!(hl7_time(0), "19700101000000+0000");
    }

    /// A receiver that accepts and never reads: the write (or, for a message its buffers hold,
    /// the wait for the ACK) ends with a timeout instead of holding the sender.
    #[tokio::test]
    async fn a_receiver_that_never_reads_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let big = "OBX|".repeat(8 << 20);
        let started = std::time::Instant::now();
        let sent = send("127.0.0.1", port, &big, "X", Duration::from_millis(500)).await;
        assert!(matches!(sent, Err(MllpError::Timeout(..))), "{sent:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        held.abort();
    }
}
