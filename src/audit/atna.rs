//! An audit entry as a DICOM Audit Message (PS3.15 A.5, the RFC 3881 lineage IHE ATNA sends
//! over syslog): a pure function of the entry, the node's identity and what the caller looked
//! up about the entry's instance. `delivery::atna` frames and sends it.
//!
//! The message names what the entry names: AE titles, user names, the node's own
//! (de-identified) UIDs and row ids. Patient identity appears only where the site asks for it
//! (`[audit_export] patient_identity`) and the caller opened the sealed map for it: then each
//! patient the entry concerns is a Patient participant object (PS3.15 A.5.2: type 1 Person,
//! role 1 Patient, ID type RFC-3881 2 "Patient Number", the ID in HL7 CX form `ID^^^ISSUER`,
//! the name only if asked). Never an original UID: the study objects stay de-identified.
//!
//! Codes: DCM (PS3.16 CID 400-405) for events, roles and object ID types. Where the node has
//! an identifier DCM has no code for (a worklist row id, a bare SOP Instance UID, an AE title
//! as a security resource), a private coding scheme, `99TRIAGE`, says what it is.

use super::{Entry, Event, Party};

/// Who writes the messages: the node (AuditSourceID) and its AE title.
#[derive(Debug, Clone)]
pub struct Source {
    pub node_id: String,
    pub ae_title: String,
}

/// What the caller found about the entry: for a `deidentify` or `reidentify` entry its
/// instance's study (de-identified Study Instance UID) and SOP Class UID; and, where the site
/// exports patient identity, the patients the entry concerns.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    pub study_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    pub patients: Vec<Patient>,
}

/// A patient an entry concerns, from the sealed map: the ID (with its issuer) and, if the site
/// exports it, the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Patient {
    pub id: String,
    pub issuer: Option<String>,
    pub name: Option<String>,
}

impl Patient {
    /// HL7 v2 CX: `ID^^^ISSUER` (IHE ITI's form of a patient ID in an audit message), the ID
    /// alone without an issuer; `^` and `&` in the values escaped as HL7 does.
    fn cx(&self) -> String {
        let hl7 = |v: &str| v.replace('\\', "\\E\\").replace('^', "\\S\\").replace('&', "\\T\\");
        match self.issuer.as_deref().filter(|i| !i.trim().is_empty()) {
            Some(issuer) => format!("{}^^^{}", hl7(&self.id), hl7(issuer)),
            None => hl7(&self.id),
        }
    }
}

/// A DCM code: (code, meaning).
type Code = (&'static str, &'static str);

const APPLICATION_ACTIVITY: Code = ("110100", "Application Activity");
const USER_AUTHENTICATION: Code = ("110114", "User Authentication");
const APPLICATION_START: Code = ("110120", "Application Start");
const APPLICATION_STOP: Code = ("110121", "Application Stop");
const LOGIN: Code = ("110122", "Login");
const LOGOUT: Code = ("110123", "Logout");
const INSTANCES_ACCESSED: Code = ("110103", "DICOM Instances Accessed");
const INSTANCES_TRANSFERRED: Code = ("110104", "DICOM Instances Transferred");
const EXPORT: Code = ("110106", "Export");
const PATIENT_RECORD: Code = ("110110", "Patient Record");
const QUERY: Code = ("110112", "Query");
const SECURITY_ALERT: Code = ("110113", "Security Alert");
const NETWORK_CONFIGURATION: Code = ("110128", "Network Configuration");
const SOFTWARE_CONFIGURATION: Code = ("110129", "Software Configuration");
const RESTRICTED_FUNCTION: Code = ("110132", "Use of Restricted Function");
const DESTINATION: Code = ("110152", "Destination Role ID");
const SOURCE: Code = ("110153", "Source Role ID");
const APPLICATION: Code = ("110150", "Application");
const STUDY_UID: Code = ("110180", "Study Instance UID");
const SOP_CLASS_UID: Code = ("110181", "SOP Class UID");
const NODE_ID: Code = ("110182", "Node ID");
/// RFC 3881 participant object ID type 2 (PS3.15 A.5.2, the Patient's).
const PATIENT_NUMBER: Code = ("2", "Patient Number");

/// The private scheme for identifiers DCM has no code for.
const PRIVATE: &str = "99TRIAGE";
const STUDY_ROW: (&str, &str) = ("study-row", "Worklist study row id");
const SOP_INSTANCE: (&str, &str) = ("sop-instance", "SOP Instance UID");

/// C-FIND SOP classes, by the model the `query` entry names.
fn find_sop_class(model: &str) -> &'static str {
    match model {
        "PATIENT" => "1.2.840.10008.5.1.4.1.2.1.1",
        _ => "1.2.840.10008.5.1.4.1.2.2.1",
    }
}

/// Escape text for an attribute value or element content.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control character; none belongs in an audit message.
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn code(element: &str, (c, meaning): (&str, &str), scheme: &str) -> String {
    format!(r#"<{element} csd-code="{}" codeSystemName="{scheme}" originalText="{}"/>"#, esc(c), esc(meaning))
}

/// A requestor's AE title, where it is an AE (an HTTP user has none).
fn ae_of(by: &Party) -> Option<&str> {
    match by {
        Party::Ae(ae) => Some(ae),
        Party::User(_) => None,
    }
}

#[derive(Clone, Copy)]
struct Participant<'a> {
    user: &'a str,
    requestor: bool,
    role: Option<Code>,
    /// An AE title as the participant's alternative id (`AETITLES=`), PS3.15 A.5.2.
    ae: Option<&'a str>,
    /// The node's own host name (NetworkAccessPointTypeCode 1).
    host: Option<&'a str>,
}

impl Participant<'_> {
    fn xml(&self) -> String {
        let mut attrs = format!(r#" UserID="{}" UserIsRequestor="{}""#, esc(self.user), self.requestor);
        if let Some(ae) = self.ae {
            attrs.push_str(&format!(r#" AlternativeUserID="AETITLES={}""#, esc(ae)));
        }
        if let Some(host) = self.host {
            attrs.push_str(&format!(r#" NetworkAccessPointID="{}" NetworkAccessPointTypeCode="1""#, esc(host)));
        }
        match self.role {
            Some(role) => format!("<ActiveParticipant{attrs}>{}</ActiveParticipant>", code("RoleIDCode", role, "DCM")),
            None => format!("<ActiveParticipant{attrs}/>"),
        }
    }
}

struct Object {
    id: String,
    id_type: (String, String, &'static str),
    type_code: u8,
    role: u8,
    description: Option<String>,
    /// `ParticipantObjectName` (a patient's name).
    name: Option<String>,
    /// SOP Class UID -> instance UIDs (PS3.15 A.5.2.3 `SOPClass`).
    sop_class: Option<(String, Vec<String>)>,
}

impl Object {
    fn study(uid: &str) -> Object {
        Object::new(uid, STUDY_UID, "DCM", 2, 3)
    }

    fn new(id: &str, (c, m): (&str, &str), scheme: &'static str, type_code: u8, role: u8) -> Object {
        Object { id: id.into(), id_type: (c.into(), m.into(), scheme), type_code, role, description: None, name: None, sop_class: None }
    }

    /// A Patient participant object: type 1 Person, role 1 Patient.
    fn patient(p: &Patient) -> Object {
        Object { name: p.name.clone(), ..Object::new(&p.cx(), PATIENT_NUMBER, "RFC-3881", 1, 1) }
    }

    fn described(mut self, text: impl Into<String>) -> Object {
        self.description = Some(text.into());
        self
    }

    fn xml(&self) -> String {
        let (c, m, scheme) = &self.id_type;
        let mut body = code("ParticipantObjectIDTypeCode", (c, m), scheme);
        if let Some(n) = &self.name {
            body.push_str(&format!("<ParticipantObjectName>{}</ParticipantObjectName>", esc(n)));
        }
        if let Some(d) = &self.description {
            body.push_str(&format!("<ParticipantObjectDescription>{}</ParticipantObjectDescription>", esc(d)));
        }
        if let Some((class, instances)) = &self.sop_class {
            body.push_str(&format!(r#"<SOPClass UID="{}" NumberOfInstances="{}">"#, esc(class), instances.len()));
            for uid in instances {
                body.push_str(&format!(r#"<Instance UID="{}"/>"#, esc(uid)));
            }
            body.push_str("</SOPClass>");
        }
        format!(
            r#"<ParticipantObjectIdentification ParticipantObjectID="{}" ParticipantObjectTypeCode="{}" ParticipantObjectTypeCodeRole="{}">{body}</ParticipantObjectIdentification>"#,
            esc(&self.id),
            self.type_code,
            self.role
        )
    }
}

/// The DICOM Audit Message of `entry`, one line of XML (no declaration, no line breaks). An
/// entry whose event this version cannot read is still exported (a Security Alert naming the
/// stored event), never dropped.
pub fn message(entry: &Entry, source: &Source, instance: &Instance) -> String {
    let node = Participant { user: &source.ae_title, requestor: false, role: Some(APPLICATION), ae: Some(&source.ae_title), host: Some(&source.node_id) };
    let event = Event::parse(&entry.event, &entry.subject, &entry.details);
    let (id, action, outcome, type_code, participants, objects): (Code, &str, u8, Option<Code>, Vec<Participant>, Vec<Object>) = match &event {
        Some(Event::Deidentify { instance: uid, details }) => {
            let study = study_or_instance(instance, uid);
            if details.export {
                // The research export: the node wrote a de-identified copy for someone.
                (
                    EXPORT,
                    "R",
                    0,
                    None,
                    vec![Participant { requestor: true, role: Some(SOURCE), ..node }],
                    vec![study.described("de-identified research export")],
                )
            } else {
                let caller = details.calling_ae.as_deref().unwrap_or("unknown");
                (
                    INSTANCES_TRANSFERRED,
                    "C",
                    0,
                    None,
                    vec![
                        Participant { user: caller, requestor: true, role: Some(SOURCE), ae: Some(caller), host: None },
                        Participant { role: Some(DESTINATION), ..node },
                    ],
                    vec![study.described(format!("received and de-identified; pixels {}", details.pixels))],
                )
            }
        }
        Some(Event::Reidentify { instance: uid, details }) => {
            let mut study = Object::study(&details.study).described(format!("original identifiers opened: {}", details.purpose));
            study.sop_class = instance.sop_class_uid.clone().map(|class| (class, vec![uid.clone()]));
            (PATIENT_RECORD, "R", 0, None, vec![Participant { requestor: true, ..node }], vec![study])
        }
        Some(Event::ReidentifyIndex { details }) => (
            PATIENT_RECORD,
            "R",
            0,
            None,
            vec![Participant { requestor: true, ..node }],
            vec![Object::new(&source.node_id, NODE_ID, "DCM", 2, 13)
                .described(format!("original identifiers opened: {}: {} objects, {} map records", details.purpose, details.objects, details.map_records))],
        ),
        Some(Event::AeAdd { ae, details }) => (
            SECURITY_ALERT,
            "E",
            0,
            Some(NETWORK_CONFIGURATION),
            vec![Participant { requestor: true, ..node }],
            vec![Object::new(ae, NODE_ID, "DCM", 2, 13).described(format!(
                "AE registered: role {}, host {}, port {}, enabled {}, TLS {}",
                details.role,
                details.host.as_deref().unwrap_or("-"),
                details.port.map_or("-".to_string(), |p| p.to_string()),
                details.enabled,
                details.tls
            ))],
        ),
        Some(Event::AeRemove { ae }) => (
            SECURITY_ALERT,
            "E",
            0,
            Some(NETWORK_CONFIGURATION),
            vec![Participant { requestor: true, ..node }],
            vec![Object::new(ae, NODE_ID, "DCM", 2, 13).described("AE removed")],
        ),
        Some(Event::AeEcho { ae, details }) => (
            SECURITY_ALERT,
            "E",
            if details.success { 0 } else { 4 },
            Some(RESTRICTED_FUNCTION),
            vec![Participant { user: &details.user, requestor: true, role: None, ae: None, host: None }, node],
            vec![Object::new(ae, NODE_ID, "DCM", 2, 13)
                .described(format!("C-ECHO by an operator, status {}", details.status.map_or("none".to_string(), |s| format!("{s:04X}"))))],
        ),
        Some(Event::WorklistView { user, details }) => (
            PATIENT_RECORD,
            "R",
            0,
            None,
            vec![Participant { user, requestor: true, role: None, ae: None, host: None }, node],
            details.studies.iter().map(|id| study_row(*id).described("worklist page shown with patient names")).collect(),
        ),
        Some(Event::Reading { study, details }) => (
            PATIENT_RECORD,
            "U",
            0,
            None,
            vec![Participant { user: &details.reader, requestor: true, role: None, ae: None, host: None }, node],
            vec![study_row(*study).described(format!("reading {}: {} -> {}", details.action, details.from, details.to))],
        ),
        Some(Event::Query { by, details }) => (
            QUERY,
            "E",
            0,
            None,
            vec![
                Participant { user: by.name(), requestor: true, role: Some(SOURCE), ae: ae_of(by), host: None },
                Participant { role: Some(DESTINATION), ..node },
            ],
            // The query's identifier is not kept (it may name a patient): no ParticipantObjectQuery.
            vec![Object::new(find_sop_class(&details.model), SOP_CLASS_UID, "DCM", 2, 3).described(format!(
                "{} {} level {}: {} matches{}",
                details.via.as_deref().unwrap_or("C-FIND"),
                details.model,
                details.level,
                details.matches,
                if details.cancelled { ", cancelled" } else { "" }
            ))],
        ),
        Some(Event::Retrieve { by, details }) => {
            let mut people =
                vec![Participant { user: by.name(), requestor: true, role: None, ae: ae_of(by), host: None }, Participant { role: Some(SOURCE), ..node }];
            if details.destination != by.name() {
                people.push(Participant { user: &details.destination, requestor: false, role: Some(DESTINATION), ae: Some(&details.destination), host: None });
            } else {
                people[0].role = Some(DESTINATION);
            }
            let objects = details
                .sop_instances
                .iter()
                .map(|uid| Object::new(uid, SOP_INSTANCE, PRIVATE, 2, 3).described(format!("{} of an AI result object", details.operation)))
                .collect();
            (INSTANCES_TRANSFERRED, "R", 0, None, people, objects)
        }
        Some(Event::Retract { study, details }) => {
            let mut row = study_row(*study).described(format!("AI results retracted ({}), HL7 correction {}", details.code, details.hl7));
            row.sop_class = (!details.objects.is_empty()).then(|| ("1.2.840.10008.5.1.4.1.1.88.34".into(), details.objects.clone()));
            (INSTANCES_ACCESSED, "D", 0, None, vec![Participant { user: &details.user, requestor: true, role: None, ae: None, host: None }, node], vec![row])
        }
        Some(Event::Acknowledge { study, details }) => (
            PATIENT_RECORD,
            "R",
            0,
            None,
            vec![Participant { user: &details.user, requestor: true, role: None, ae: None, host: None }, node],
            vec![study_row(*study).described(format!("on-call notice {} (rule {}) acknowledged via {}", details.notification, details.rule, details.via))],
        ),
        Some(Event::Feedback { study, details }) => (
            PATIENT_RECORD,
            "U",
            0,
            None,
            vec![Participant { user: &details.user, requestor: true, role: None, ae: None, host: None }, node],
            vec![study_row(*study).described(format!("reader verdict {} on {} {} {}", details.verdict, details.model, details.model_version, details.label))],
        ),
        // PS3.15 A.5.3.11 User Authentication: the user (requestor) and the node; a refused
        // token is a failed Login naming why.
        Some(Event::UserAuth { user, details }) => (
            USER_AUTHENTICATION,
            "E",
            if details.outcome == "refused" { 4 } else { 0 },
            Some(if details.outcome == "logout" { LOGOUT } else { LOGIN }),
            vec![Participant { user, requestor: true, role: None, ae: None, host: None }, Participant { requestor: false, role: None, ..node }],
            vec![Object::new(&source.node_id, NODE_ID, "DCM", 2, 13).described(format!(
                "{} via {}{}{}",
                details.outcome,
                details.via,
                details.role.as_deref().map(|r| format!(", role {r}")).unwrap_or_default(),
                details.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            ))],
        ),
        // PS3.15 A.5.3.1 Application Activity: the node, as the application started or stopped.
        Some(Event::Application { details }) => (
            APPLICATION_ACTIVITY,
            "E",
            0,
            Some(if details.action == "stop" { APPLICATION_STOP } else { APPLICATION_START }),
            vec![node],
            vec![Object::new(&source.node_id, NODE_ID, "DCM", 2, 13).described(format!("triage-node {} {}", details.version, details.action))],
        ),
        // A software configuration change by an admin: the model now live, the one retired.
        Some(Event::ModelPromote { model, details }) => (
            SECURITY_ALERT,
            "E",
            0,
            Some(SOFTWARE_CONFIGURATION),
            vec![Participant { user: &details.user, requestor: true, role: None, ae: None, host: None }, node],
            vec![Object::new(&source.node_id, NODE_ID, "DCM", 2, 13).described(format!(
                "model {model} {} promoted from shadow to live, replacing {} {} (moved to {})",
                details.version, details.replaces, details.replaces_version, details.retired_to
            ))],
        ),
        // An entry this version cannot read (an older or newer event): still exported, as
        // an application activity on the node naming the stored event, never dropped.
        None => (
            SECURITY_ALERT,
            "E",
            4,
            Some(("110131", "Software Configuration")),
            vec![Participant { requestor: true, ..node }],
            vec![Object::new(&source.node_id, NODE_ID, "DCM", 2, 13).described(format!("audit entry {} of unknown form: event {}", entry.seq, entry.event))],
        ),
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(entry.at_ms.max(0) as u64);
    let mut xml = format!(
        r#"<AuditMessage><EventIdentification EventActionCode="{action}" EventDateTime="{}" EventOutcomeIndicator="{outcome}">{}"#,
        humantime::format_rfc3339_millis(at),
        code("EventID", id, "DCM")
    );
    if let Some(t) = type_code {
        xml.push_str(&code("EventTypeCode", t, "DCM"));
    }
    xml.push_str("</EventIdentification>");
    for p in &participants {
        xml.push_str(&p.xml());
    }
    xml.push_str(&format!(
        r#"<AuditSourceIdentification AuditSourceID="{}">{}</AuditSourceIdentification>"#,
        esc(&source.node_id),
        // 4: application server process (RFC 3881 audit source type).
        code("AuditSourceTypeCode", ("4", "Application Server Process"), "DCM")
    ));
    let patients: Vec<Object> = instance.patients.iter().map(Object::patient).collect();
    for o in objects.iter().chain(&patients) {
        xml.push_str(&o.xml());
    }
    xml.push_str("</AuditMessage>");
    xml
}

fn study_row(id: i64) -> Object {
    Object::new(&id.to_string(), STUDY_ROW, PRIVATE, 2, 3)
}

/// The study (de-identified UID) holding a de-identified instance, with the instance in it;
/// the instance alone when the study is not known.
fn study_or_instance(found: &Instance, uid: &str) -> Object {
    match &found.study_uid {
        Some(study) => {
            let mut o = Object::study(study);
            o.sop_class = Some((found.sop_class_uid.clone().unwrap_or_default(), vec![uid.to_string()]));
            o
        }
        None => Object::new(uid, SOP_INSTANCE, PRIVATE, 2, 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: &Event) -> Entry {
        Entry {
            seq: 7,
            at_ms: 1_796_000_000_000,
            event: event.name().into(),
            subject: event.subject(),
            details: event.details(),
            prev_hash: String::new(),
            hash: String::new(),
            keyed: true,
        }
    }

    #[test]
    fn an_ae_add_is_a_security_alert_naming_the_ae_escaped() {
        let e = Event::AeAdd {
            ae: "PACS<&>".into(),
            details: super::super::Registration {
                host: Some("10.0.0.1".into()),
                port: Some(104),
                role: "pacs".into(),
                enabled: true,
                tls: false,
                tls_identity: None,
            },
        };
        let xml = message(&entry(&e), &Source { node_id: "node-a".into(), ae_title: "TRIAGE".into() }, &Instance::default());
        assert!(xml.starts_with("<AuditMessage><EventIdentification EventActionCode=\"E\" EventDateTime=\"2026-11-30T"), "{xml}");
        assert!(xml.contains(r#"<EventID csd-code="110113" codeSystemName="DCM" originalText="Security Alert"/>"#), "{xml}");
        assert!(xml.contains(r#"<EventTypeCode csd-code="110128""#), "{xml}");
        assert!(xml.contains(r#"ParticipantObjectID="PACS&lt;&amp;&gt;""#), "{xml}");
        assert!(!xml.contains('\n'));
    }

    #[test]
    fn a_patient_the_site_exports_is_a_patient_participant_object_in_cx_form() {
        let e = Event::Feedback {
            study: 12,
            details: super::super::FeedbackGiven {
                user: "dr-a".into(),
                model: "demo-nodule".into(),
                model_version: "1.0.0".into(),
                label: "nodule".into(),
                verdict: "agree".into(),
                corrected_label: None,
                edited: false,
            },
        };
        let patient = Patient { id: "PID^1".into(), issuer: Some("HOSP".into()), name: Some("Doe^Jane".into()) };
        let found = Instance { patients: vec![patient], ..Instance::default() };
        let xml = message(&entry(&e), &Source { node_id: "node-a".into(), ae_title: "TRIAGE".into() }, &found);
        let object = r#"<ParticipantObjectIdentification ParticipantObjectID="PID\S\1^^^HOSP" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode csd-code="2" codeSystemName="RFC-3881" originalText="Patient Number"/><ParticipantObjectName>Doe^Jane</ParticipantObjectName></ParticipantObjectIdentification>"#;
        assert!(xml.ends_with(&format!("{object}</AuditMessage>")), "{xml}");
        // Without the lookup (the default), no patient object at all.
        let xml = message(&entry(&e), &Source { node_id: "node-a".into(), ae_title: "TRIAGE".into() }, &Instance::default());
        assert!(!xml.contains("RFC-3881") && !xml.contains("ParticipantObjectName"), "{xml}");
    }
}
