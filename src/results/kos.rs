//! The IHE IOCM Rejection Note: a Key Object Selection Document (PS3.3 A.35.4, TID 2010) that
//! tells a PACS to reject every object of a result this node sent earlier (the result was
//! replaced, or retracted by an admin).
//!
//! ```text
//! CONTAINER (113001 | 113037, DCM, "Rejected for ... Reasons")   TID 2010, title from CID 7010
//!  HAS CONCEPT MOD  CODE Language of Content Item and Descendants = en-US   TID 1204
//!  CONTAINS TEXT (113012, DCM, "Key Object Description")         when a description is given
//!  CONTAINS IMAGE      per rejected image (Secondary Capture, Parametric Map), no concept name
//!  CONTAINS COMPOSITE  per rejected SR, no concept name
//! ```
//!
//! Every object the content tree names is in the Current Requested Procedure Evidence Sequence
//! (IOCM), under the note's own study: the rejected objects are in it too. Like the other result
//! objects, the note carries the study's de-identified identity; `reidentify` restores it.
//!
//! Owns: what the note says. Must not: do IO, or decide when a result is rejected.

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

use super::dataset::{ascii, put, put_seq, start_object, text, Code};
use super::sr::{evidence, language, ImageRef};
use crate::dicom::sop::{storage_class, Content};

/// Key Object Selection Document Storage.
pub const SOP_CLASS: &str = uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE;

/// Why the objects are rejected: the note's title (CID 7010, the IOCM rejection titles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// (113001, DCM, "Rejected for Quality Reasons"): the result was replaced by a newer one.
    Quality,
    /// (113037, DCM, "Rejected for Patient Safety Reasons"): the result must not be used.
    PatientSafety,
}

impl Reason {
    pub fn title(self) -> Code {
        match self {
            Reason::Quality => Code::new("113001", "DCM", "Rejected for Quality Reasons"),
            Reason::PatientSafety => Code::new("113037", "DCM", "Rejected for Patient Safety Reasons"),
        }
    }
}

/// What the note rejects, and the identity of the note itself.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub series_number: u32,
    pub reason: Reason,
    /// Free text for (113012, DCM, "Key Object Description"); written ASCII-cleaned.
    pub description: Option<String>,
    /// The rejected objects (class, instance, series; all in the study of `identity`). At least
    /// one: a note without references is not a valid TID 2010 document. Frames are ignored: an
    /// object is rejected whole.
    pub rejected: Vec<ImageRef>,
    pub created_ms: i64,
    pub station: String,
}

/// The Key Object Description item's concept.
pub fn description_concept() -> Code {
    Code::new("113012", "DCM", "Key Object Description")
}

/// The Series Description of rejection notes.
pub const SERIES_DESCRIPTION: &str = "AI triage result rejected";

/// The value type that references an object of class `sop_class` (TID 2010 rows: IMAGE for
/// images, WAVEFORM for waveforms, COMPOSITE for anything else: SR, documents, unknown classes).
fn value_type(sop_class: &str) -> &'static str {
    match storage_class(sop_class).map(|c| c.content) {
        Some(Content::Image) => "IMAGE",
        Some(Content::Waveform) => "WAVEFORM",
        _ => "COMPOSITE",
    }
}

/// A content item: relationship, value type, optional concept name, and the rest.
fn item(rel: &str, value_type: &str, concept: Option<&Code>) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    put(&mut o, tags::RELATIONSHIP_TYPE, VR::CS, rel);
    put(&mut o, tags::VALUE_TYPE, VR::CS, value_type);
    if let Some(c) = concept {
        put_seq(&mut o, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![c.item()]);
    }
    o
}

/// The rejected objects, each once (the first of a repeated SOP Instance UID kept).
fn distinct(rejected: &[ImageRef]) -> Vec<&ImageRef> {
    let mut seen = std::collections::HashSet::new();
    rejected.iter().filter(|r| seen.insert(r.sop_instance_uid.as_str())).collect()
}

/// The rejection note's data set, with the de-identified patient and study attributes of
/// `identity` (a stored instance's header, or the rejected result's).
pub fn build(r: &Rejection, identity: &InMemDicomObject) -> InMemDicomObject {
    // SOP Common, Patient, General Study; Content Date and Time (Key Object Document).
    let mut o = start_object(SOP_CLASS, &r.sop_instance_uid, identity, r.created_ms);
    // Key Object Document Series.
    put(&mut o, tags::MODALITY, VR::CS, "KO");
    put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &r.series_uid);
    put(&mut o, tags::SERIES_NUMBER, VR::IS, &r.series_number.to_string());
    put(&mut o, tags::SERIES_DESCRIPTION, VR::LO, SERIES_DESCRIPTION);
    put_seq(&mut o, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]);
    // General Equipment.
    put(&mut o, tags::MANUFACTURER, VR::LO, "triage-node");
    put(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "triage-node");
    put(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, &ascii(&r.station));
    put(&mut o, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
    put(&mut o, tags::STATION_NAME, VR::SH, &ascii(&r.station).chars().take(16).collect::<String>());
    // Key Object Document: every rejected object, by study, series and instance.
    put(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
    let study_uid = text(identity, tags::STUDY_INSTANCE_UID).unwrap_or_default();
    let rejected = distinct(&r.rejected);
    put_seq(&mut o, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, evidence(&study_uid, &rejected));

    // SR Document Content: the root container (no Relationship Type at the root).
    put(&mut o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    put_seq(&mut o, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![r.reason.title().item()]);
    put(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut template = InMemDicomObject::new_empty();
    put(&mut template, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put(&mut template, tags::TEMPLATE_IDENTIFIER, VR::CS, "2010");
    put_seq(&mut o, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template]);
    let mut children = Vec::with_capacity(rejected.len() + 2);
    let mut lang = item("HAS CONCEPT MOD", "CODE", Some(&Code::new("121049", "DCM", "Language of Content Item and Descendants")));
    put_seq(&mut lang, tags::CONCEPT_CODE_SEQUENCE, vec![language().item()]);
    children.push(lang);
    if let Some(d) = r.description.as_deref().map(|d| ascii(d.trim())).filter(|d| !d.is_empty()) {
        let mut t = item("CONTAINS", "TEXT", Some(&description_concept()));
        put(&mut t, tags::TEXT_VALUE, VR::UT, &d);
        children.push(t);
    }
    // TID 2010: the references carry no concept name (no purpose of reference).
    for x in &rejected {
        let mut c = item("CONTAINS", value_type(&x.sop_class_uid), None);
        let mut sop = InMemDicomObject::new_empty();
        put(&mut sop, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &x.sop_class_uid);
        put(&mut sop, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &x.sop_instance_uid);
        put_seq(&mut c, tags::REFERENCED_SOP_SEQUENCE, vec![sop]);
        children.push(c);
    }
    put_seq(&mut o, tags::CONTENT_SEQUENCE, children);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";
    const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
    const PM: &str = "1.2.840.10008.5.1.4.1.1.30";

    fn identity() -> InMemDicomObject {
        let mut h = InMemDicomObject::new_empty();
        put(&mut h, tags::PATIENT_ID, VR::LO, "PSEUDO");
        put(&mut h, tags::PATIENT_NAME, VR::PN, "PSEUDO");
        put(&mut h, tags::STUDY_INSTANCE_UID, VR::UI, "2.25.100");
        put(&mut h, tags::STUDY_DATE, VR::DA, "20260101");
        put(&mut h, tags::ACCESSION_NUMBER, VR::SH, "ACC");
        h
    }

    fn reference(class: &str, instance: &str, series: &str) -> ImageRef {
        ImageRef { sop_class_uid: class.into(), sop_instance_uid: instance.into(), series_instance_uid: series.into(), frame: None }
    }

    fn rejection() -> Rejection {
        Rejection {
            sop_instance_uid: "2.25.900".into(),
            series_uid: "2.25.901".into(),
            series_number: 9903,
            reason: Reason::Quality,
            description: Some("Replaced by a newer AI result\u{e9}\n".into()),
            rejected: vec![
                reference(SR, "2.25.1", "2.25.10"),
                reference(SC, "2.25.2", "2.25.20"),
                reference(PM, "2.25.3", "2.25.30"),
                ImageRef { frame: Some(2), ..reference(SC, "2.25.2", "2.25.20") }, // a repeat
            ],
            created_ms: 1_796_135_405_250,
            station: "TRIAGE".into(),
        }
    }

    fn s(o: &InMemDicomObject, t: dicom_core::Tag) -> String {
        o.get(t).unwrap().to_str().unwrap().trim_end_matches(['\0', ' ']).to_string()
    }

    fn items(o: &InMemDicomObject, t: dicom_core::Tag) -> &[InMemDicomObject] {
        o.get(t).unwrap().items().unwrap()
    }

    #[test]
    fn the_note_is_a_key_object_document_in_the_study() {
        let o = build(&rejection(), &identity());
        assert_eq!(s(&o, tags::SOP_CLASS_UID), "1.2.840.10008.5.1.4.1.1.88.59");
        assert_eq!(s(&o, tags::SOP_INSTANCE_UID), "2.25.900");
        assert_eq!(s(&o, tags::MODALITY), "KO");
        assert_eq!(s(&o, tags::SERIES_INSTANCE_UID), "2.25.901");
        assert_eq!(s(&o, tags::SERIES_NUMBER), "9903");
        assert_eq!(s(&o, tags::INSTANCE_NUMBER), "1");
        assert_eq!(s(&o, tags::STUDY_INSTANCE_UID), "2.25.100");
        assert_eq!(s(&o, tags::PATIENT_ID), "PSEUDO");
        assert_eq!(s(&o, tags::MANUFACTURER), "triage-node");
        assert_eq!((s(&o, tags::CONTENT_DATE), s(&o, tags::CONTENT_TIME)), ("20261201".into(), "143005.250".into()));
        assert!(items(&o, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE).is_empty(), "Type 2: present, empty");
        assert!(o.get(tags::PATIENT_BIRTH_DATE).is_some(), "Type 2 identity attributes present");
        assert!(o.get(tags::RELATIONSHIP_TYPE).is_none(), "the root has no relationship");
    }

    #[test]
    fn every_rejected_object_is_in_the_evidence_once_by_series() {
        let o = build(&rejection(), &identity());
        let studies = items(&o, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE);
        assert_eq!(studies.len(), 1);
        assert_eq!(s(&studies[0], tags::STUDY_INSTANCE_UID), "2.25.100");
        let series = items(&studies[0], tags::REFERENCED_SERIES_SEQUENCE);
        let listed: Vec<(String, String, String)> = series
            .iter()
            .flat_map(|se| {
                items(se, tags::REFERENCED_SOP_SEQUENCE)
                    .iter()
                    .map(|i| (s(se, tags::SERIES_INSTANCE_UID), s(i, tags::REFERENCED_SOP_CLASS_UID), s(i, tags::REFERENCED_SOP_INSTANCE_UID)))
            })
            .collect();
        let want = [("2.25.10", SR, "2.25.1"), ("2.25.20", SC, "2.25.2"), ("2.25.30", PM, "2.25.3")];
        assert_eq!(listed, want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())));
    }

    #[test]
    fn the_content_tree_follows_tid_2010() {
        let o = build(&rejection(), &identity());
        assert_eq!(s(&o, tags::VALUE_TYPE), "CONTAINER");
        assert_eq!(s(&o, tags::CONTINUITY_OF_CONTENT), "SEPARATE");
        let title = &items(&o, tags::CONCEPT_NAME_CODE_SEQUENCE)[0];
        assert_eq!((s(title, tags::CODE_VALUE), s(title, tags::CODING_SCHEME_DESIGNATOR)), ("113001".into(), "DCM".into()));
        let template = &items(&o, tags::CONTENT_TEMPLATE_SEQUENCE)[0];
        assert_eq!((s(template, tags::MAPPING_RESOURCE), s(template, tags::TEMPLATE_IDENTIFIER)), ("DCMR".into(), "2010".into()));
        let children = items(&o, tags::CONTENT_SEQUENCE);
        let kinds: Vec<(String, String)> = children.iter().map(|c| (s(c, tags::RELATIONSHIP_TYPE), s(c, tags::VALUE_TYPE))).collect();
        let want = [("HAS CONCEPT MOD", "CODE"), ("CONTAINS", "TEXT"), ("CONTAINS", "COMPOSITE"), ("CONTAINS", "IMAGE"), ("CONTAINS", "IMAGE")];
        assert_eq!(kinds, want.map(|(a, b)| (a.to_string(), b.to_string())));
        let text = &children[1];
        assert_eq!(s(&items(text, tags::CONCEPT_NAME_CODE_SEQUENCE)[0], tags::CODE_VALUE), "113012");
        assert_eq!(s(text, tags::TEXT_VALUE), "Replaced by a newer AI result-", "ASCII only, trimmed");
        let refs: Vec<String> = children[2..]
            .iter()
            .map(|c| {
                assert!(c.get(tags::CONCEPT_NAME_CODE_SEQUENCE).is_none(), "TID 2010 references have no concept name");
                let sop = &items(c, tags::REFERENCED_SOP_SEQUENCE)[0];
                assert!(sop.get(tags::REFERENCED_FRAME_NUMBER).is_none(), "an object is rejected whole");
                s(sop, tags::REFERENCED_SOP_INSTANCE_UID)
            })
            .collect();
        assert_eq!(refs, ["2.25.1", "2.25.2", "2.25.3"]);
    }

    #[test]
    fn patient_safety_titles_and_no_description() {
        let r = Rejection { reason: Reason::PatientSafety, description: Some("  \n".into()), ..rejection() };
        let o = build(&r, &identity());
        assert_eq!(s(&items(&o, tags::CONCEPT_NAME_CODE_SEQUENCE)[0], tags::CODE_VALUE), "113037");
        assert!(items(&o, tags::CONTENT_SEQUENCE).iter().all(|c| s(c, tags::VALUE_TYPE) != "TEXT"), "a blank description is left out");
        let o = build(&Rejection { description: None, ..rejection() }, &identity());
        assert_eq!(items(&o, tags::CONTENT_SEQUENCE).len(), 4);
    }

    #[test]
    fn the_note_encodes_as_part_10() {
        let r = rejection();
        let bytes = crate::results::dataset::part10(&build(&r, &identity()), SOP_CLASS, &r.sop_instance_uid).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("note.dcm");
        std::fs::write(&path, &bytes).unwrap();
        let back = dicom_object::open_file(&path).unwrap();
        assert_eq!(back.meta().media_storage_sop_class_uid().trim_end_matches('\0'), SOP_CLASS);
        assert_eq!(back.element(tags::CONTENT_SEQUENCE).unwrap().items().unwrap().len(), 5);
    }
}
