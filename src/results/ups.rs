//! The site's worklist told by standard means: a Unified Procedure Step (PS3.4 Annex CC, UPS
//! Push) per study whose priority `[results] ups_priorities` lists, for each `[results] ups`
//! SCP. `build` makes the N-CREATE attribute list (Table CC.2.5-3: every Type 1 and 2
//! attribute present, empty where unknown) from the study's de-identified header, key images and
//! AI report; `Publisher::ups_item` writes it as a Part 10 file under `outbox/ups/` (its SOP
//! Class UPS Push, its SOP Instance UID the workitem's: made once per triage, so every attempt
//! creates the same workitem) and the outbox rows, one per SCP (`ups:<AE>`).
//!
//! The file is de-identified like every result object; at sending, `reidentify` puts the
//! patient and the original UIDs back in memory and `for_sending` moves the accession number to
//! where the UPS keeps it (the Referenced Request Sequence) and drops what the UPS IOD does not
//! have. Must not: send anything (the outbox does); write an original identifier to disk.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::dataset::{self, put, put_seq, text, Code};

/// Unified Procedure Step - Push SOP Class (PS3.4 CC.3.1).
pub const UPS_PUSH: &str = dicom_dictionary_std::uids::UNIFIED_PROCEDURE_STEP_PUSH;

/// The label a worklist shows (Procedure Step Label, Worklist Label).
pub const LABEL: &str = "AI triage";

/// One referenced object (de-identified UIDs; the node's own for the AI report).
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    /// Where it can be retrieved from (the PACS for the key images, this node for the report).
    pub retrieve_ae: String,
}

/// What a workitem says about a study's triage.
#[derive(Debug, Clone, PartialEq)]
pub struct Workitem {
    /// The workitem's SOP Instance UID (the N-CREATE's Affected SOP Instance UID).
    pub sop_instance_uid: String,
    /// The study's priority as the worklist spells it (URGENT, POSITIVE).
    pub priority: String,
    /// The positive findings' meanings, for the comment.
    pub findings: Vec<String>,
    pub demonstration: bool,
    /// Key images, then the AI report: the Input Information Sequence (an item per series).
    pub inputs: Vec<Input>,
    /// Scheduled Procedure Step Start DateTime: when the result was made.
    pub scheduled_ms: i64,
}

impl Workitem {
    /// Scheduled Procedure Step Priority (0074,1200): HIGH for urgent, MEDIUM for positive.
    pub fn ups_priority(&self) -> &'static str {
        match self.priority.as_str() {
            "URGENT" => "HIGH",
            "POSITIVE" => "MEDIUM",
            _ => "LOW",
        }
    }
}

/// The attributes of the study header (`header`, de-identified) a workitem carries at top
/// level; the accession number goes into the Referenced Request Sequence.
const PATIENT: [(Tag, VR); 4] = [(tags::PATIENT_NAME, VR::PN), (tags::PATIENT_ID, VR::LO), (tags::PATIENT_BIRTH_DATE, VR::DA), (tags::PATIENT_SEX, VR::CS)];

/// Attributes `reidentify` puts at top level that the UPS IOD does not have there.
const NOT_IN_UPS: [Tag; 6] =
    [tags::ACCESSION_NUMBER, tags::STUDY_DATE, tags::STUDY_TIME, tags::REFERRING_PHYSICIAN_NAME, tags::STUDY_ID, tags::STUDY_DESCRIPTION];

fn empty(obj: &mut InMemDicomObject, tag: Tag, vr: VR) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
}

fn empty_seq(obj: &mut InMemDicomObject, tag: Tag) {
    put_seq(obj, tag, Vec::new());
}

/// The N-CREATE attribute list of `w` for the study of `header` (a stored instance's
/// de-identified header): PS3.4 Table CC.2.5-3's N-CREATE column. SOP Class and Instance UIDs
/// travel in the command, a Transaction UID is not allowed in a SCHEDULED workitem.
pub fn build(w: &Workitem, header: &InMemDicomObject) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    put(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    // Unified Procedure Step Scheduled Procedure Information Module.
    put(&mut o, tags::SCHEDULED_PROCEDURE_STEP_PRIORITY, VR::CS, w.ups_priority());
    put(&mut o, tags::PROCEDURE_STEP_LABEL, VR::LO, &format!("{LABEL}: {}", w.priority));
    put(&mut o, tags::WORKLIST_LABEL, VR::LO, LABEL);
    empty_seq(&mut o, tags::SCHEDULED_PROCESSING_PARAMETERS_SEQUENCE);
    empty_seq(&mut o, tags::SCHEDULED_STATION_NAME_CODE_SEQUENCE);
    empty_seq(&mut o, tags::SCHEDULED_STATION_CLASS_CODE_SEQUENCE);
    empty_seq(&mut o, tags::SCHEDULED_STATION_GEOGRAPHIC_LOCATION_CODE_SEQUENCE);
    let (date, time) = dataset::date_time(w.scheduled_ms);
    put(&mut o, tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME, VR::DT, &format!("{date}{time}+0000"));
    // CID 9231 Workitem Definition: the study is to be read.
    put_seq(&mut o, tags::SCHEDULED_WORKITEM_CODE_SEQUENCE, vec![Code::new("110005", "DCM", "Interpretation").item()]);
    put(&mut o, tags::COMMENTS_ON_THE_SCHEDULED_PROCEDURE_STEP, VR::LT, &comment(w));
    put(&mut o, tags::INPUT_READINESS_STATE, VR::CS, "READY");
    let study = text(header, tags::STUDY_INSTANCE_UID).unwrap_or_default();
    put_seq(&mut o, tags::INPUT_INFORMATION_SEQUENCE, inputs(&study, &w.inputs));
    put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &study);
    // Unified Procedure Step Relationship Module: the patient, the request.
    for (tag, vr) in PATIENT {
        match header.get(tag) {
            Some(e) => {
                o.put(e.clone());
            }
            None => empty(&mut o, tag, vr),
        }
    }
    if let Some(e) = header.get(tags::ISSUER_OF_PATIENT_ID) {
        o.put(e.clone());
    }
    empty(&mut o, tags::ADMISSION_ID, VR::LO);
    empty_seq(&mut o, tags::ISSUER_OF_ADMISSION_ID_SEQUENCE);
    empty(&mut o, tags::ADMITTING_DIAGNOSES_DESCRIPTION, VR::LO);
    empty_seq(&mut o, tags::ADMITTING_DIAGNOSES_CODE_SEQUENCE);
    let mut request = InMemDicomObject::new_empty();
    put(&mut request, tags::STUDY_INSTANCE_UID, VR::UI, &study);
    match header.get(tags::ACCESSION_NUMBER) {
        Some(e) => {
            request.put(e.clone());
        }
        None => empty(&mut request, tags::ACCESSION_NUMBER, VR::SH),
    }
    empty_seq(&mut request, tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE);
    empty(&mut request, tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST, VR::LO);
    empty(&mut request, tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST, VR::LO);
    empty(&mut request, tags::REQUESTED_PROCEDURE_ID, VR::SH);
    empty(&mut request, tags::REQUESTED_PROCEDURE_DESCRIPTION, VR::LO);
    empty_seq(&mut request, tags::REQUESTED_PROCEDURE_CODE_SEQUENCE);
    put_seq(&mut o, tags::REFERENCED_REQUEST_SEQUENCE, vec![request]);
    // Unified Procedure Step Progress Information Module.
    put(&mut o, tags::PROCEDURE_STEP_STATE, VR::CS, "SCHEDULED");
    empty_seq(&mut o, tags::PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE);
    // Unified Procedure Step Performed Procedure Information Module.
    empty_seq(&mut o, tags::UNIFIED_PROCEDURE_STEP_PERFORMED_PROCEDURE_SEQUENCE);
    o
}

/// What the worklist's reader is told (no identifier).
fn comment(w: &Workitem) -> String {
    let mut s = format!("AI triage priority {}", w.priority);
    if !w.findings.is_empty() {
        s.push_str(&format!(": {}", w.findings.join(", ")));
    }
    s.push_str(". For prioritisation only; not a diagnosis. Read the images.");
    if w.demonstration {
        s.push_str(" Demonstration model, not clinically validated: not for patient care.");
    }
    dataset::ascii(&s).chars().take(10240).collect()
}

/// The Input Information Sequence (Referenced Instances and Access Macro, PS3.3 Table 10-3b):
/// an item per series, in the order first named.
fn inputs(study: &str, all: &[Input]) -> Vec<InMemDicomObject> {
    let mut series: Vec<(&str, &str, Vec<&Input>)> = Vec::new();
    for i in all {
        match series.iter_mut().find(|(s, ae, _)| *s == i.series_instance_uid && *ae == i.retrieve_ae) {
            Some((_, _, refs)) if !refs.iter().any(|r| r.sop_instance_uid == i.sop_instance_uid) => refs.push(i),
            Some(_) => {}
            None => series.push((&i.series_instance_uid, &i.retrieve_ae, vec![i])),
        }
    }
    series
        .into_iter()
        .map(|(uid, ae, refs)| {
            let mut item = InMemDicomObject::new_empty();
            put(&mut item, tags::TYPE_OF_INSTANCES, VR::CS, "DICOM");
            put(&mut item, tags::STUDY_INSTANCE_UID, VR::UI, study);
            put(&mut item, tags::SERIES_INSTANCE_UID, VR::UI, uid);
            let sops = refs
                .iter()
                .map(|r| {
                    let mut s = InMemDicomObject::new_empty();
                    put(&mut s, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &r.sop_class_uid);
                    put(&mut s, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &r.sop_instance_uid);
                    s
                })
                .collect();
            put_seq(&mut item, tags::REFERENCED_SOP_SEQUENCE, sops);
            let mut retrieval = InMemDicomObject::new_empty();
            put(&mut retrieval, tags::RETRIEVE_AE_TITLE, VR::AE, ae);
            put_seq(&mut item, tags::DICOM_RETRIEVAL_SEQUENCE, vec![retrieval]);
            item
        })
        .collect()
}

/// A re-identified workitem (`reidentify` put the patient and study at top level, as for a
/// result object) made a UPS again: the accession number into the Referenced Request Sequence,
/// the General Study attributes the UPS IOD has not removed.
pub fn for_sending(mut obj: InMemDicomObject) -> InMemDicomObject {
    let accession = obj.get(tags::ACCESSION_NUMBER).cloned();
    if let (Some(accession), Some(e)) = (accession, obj.get(tags::REFERENCED_REQUEST_SEQUENCE)) {
        let items: Vec<InMemDicomObject> = e
            .items()
            .unwrap_or_default()
            .iter()
            .cloned()
            .map(|mut i| {
                i.put(accession.clone());
                i
            })
            .collect();
        obj.put(DataElement::new(tags::REFERENCED_REQUEST_SEQUENCE, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED)));
    }
    for tag in NOT_IN_UPS {
        obj.remove_element(tag);
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> InMemDicomObject {
        let mut h = InMemDicomObject::new_empty();
        put(&mut h, tags::PATIENT_NAME, VR::PN, "PSEUDO^NAME");
        put(&mut h, tags::PATIENT_ID, VR::LO, "PSEUDOID");
        put(&mut h, tags::STUDY_INSTANCE_UID, VR::UI, "2.25.10");
        put(&mut h, tags::ACCESSION_NUMBER, VR::SH, "PSEUDOACC");
        h
    }

    fn workitem(priority: &str) -> Workitem {
        let input = |sop: &str, series: &str, ae: &str| Input {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(),
            sop_instance_uid: sop.into(),
            series_instance_uid: series.into(),
            retrieve_ae: ae.into(),
        };
        Workitem {
            sop_instance_uid: "2.25.99".into(),
            priority: priority.into(),
            findings: vec!["Nodule".into()],
            demonstration: true,
            inputs: vec![input("2.25.12", "2.25.11", "PACS"), input("2.25.12", "2.25.11", "PACS"), input("2.25.21", "2.25.20", "TRIAGE")],
            scheduled_ms: 1_764_670_000_000,
        }
    }

    fn s(o: &InMemDicomObject, tag: Tag) -> Option<String> {
        o.get(tag).map(|e| e.to_str().map(|v| v.trim_end_matches(['\0', ' ']).to_string()).unwrap_or_default())
    }

    fn items(o: &InMemDicomObject, tag: Tag) -> Vec<InMemDicomObject> {
        o.get(tag).and_then(|e| e.items().map(|i| i.to_vec())).unwrap_or_else(|| panic!("no sequence {tag}"))
    }

    #[test]
    fn an_urgent_study_s_workitem_is_scheduled_high_with_every_required_attribute() {
        let w = workitem("URGENT");
        let o = build(&w, &header());
        assert_eq!(s(&o, tags::SCHEDULED_PROCEDURE_STEP_PRIORITY).as_deref(), Some("HIGH"));
        assert_eq!(s(&o, tags::PROCEDURE_STEP_STATE).as_deref(), Some("SCHEDULED"));
        assert_eq!(s(&o, tags::INPUT_READINESS_STATE).as_deref(), Some("READY"));
        assert_eq!(s(&o, tags::PROCEDURE_STEP_LABEL).as_deref(), Some("AI triage: URGENT"));
        assert_eq!(s(&o, tags::WORKLIST_LABEL).as_deref(), Some("AI triage"));
        assert_eq!(s(&o, tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME).as_deref(), Some("20251202100640.000+0000"));
        assert_eq!(s(&o, tags::STUDY_INSTANCE_UID).as_deref(), Some("2.25.10"));
        assert_eq!(s(&o, tags::PATIENT_ID).as_deref(), Some("PSEUDOID"));
        // Type 2: present, empty where the study does not say.
        for tag in [tags::PATIENT_BIRTH_DATE, tags::PATIENT_SEX, tags::ADMISSION_ID, tags::ADMITTING_DIAGNOSES_DESCRIPTION] {
            assert_eq!(s(&o, tag).as_deref(), Some(""), "{tag}");
        }
        for tag in [
            tags::SCHEDULED_STATION_NAME_CODE_SEQUENCE,
            tags::SCHEDULED_STATION_CLASS_CODE_SEQUENCE,
            tags::SCHEDULED_STATION_GEOGRAPHIC_LOCATION_CODE_SEQUENCE,
            tags::SCHEDULED_PROCESSING_PARAMETERS_SEQUENCE,
            tags::ISSUER_OF_ADMISSION_ID_SEQUENCE,
            tags::ADMITTING_DIAGNOSES_CODE_SEQUENCE,
            tags::PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE,
            tags::UNIFIED_PROCEDURE_STEP_PERFORMED_PROCEDURE_SEQUENCE,
        ] {
            assert!(items(&o, tag).is_empty(), "{tag}");
        }
        // Not in an N-CREATE's attribute list.
        for tag in [tags::SOP_INSTANCE_UID, tags::SOP_CLASS_UID, tags::TRANSACTION_UID] {
            assert!(o.get(tag).is_none(), "{tag}");
        }
        let code = &items(&o, tags::SCHEDULED_WORKITEM_CODE_SEQUENCE)[0];
        assert_eq!(s(code, tags::CODE_VALUE).as_deref(), Some("110005"));
        let comment = s(&o, tags::COMMENTS_ON_THE_SCHEDULED_PROCEDURE_STEP).unwrap();
        assert!(comment.contains("URGENT: Nodule") && comment.contains("not a diagnosis") && comment.contains("Demonstration"), "{comment}");
        // An item per series (the key image named once), each with where to retrieve it.
        let input = items(&o, tags::INPUT_INFORMATION_SEQUENCE);
        assert_eq!(input.len(), 2);
        assert_eq!(s(&input[0], tags::TYPE_OF_INSTANCES).as_deref(), Some("DICOM"));
        assert_eq!(s(&input[0], tags::STUDY_INSTANCE_UID).as_deref(), Some("2.25.10"));
        assert_eq!(s(&input[0], tags::SERIES_INSTANCE_UID).as_deref(), Some("2.25.11"));
        assert_eq!(items(&input[0], tags::REFERENCED_SOP_SEQUENCE).len(), 1);
        assert_eq!(s(&items(&input[0], tags::DICOM_RETRIEVAL_SEQUENCE)[0], tags::RETRIEVE_AE_TITLE).as_deref(), Some("PACS"));
        assert_eq!(s(&items(&input[1], tags::REFERENCED_SOP_SEQUENCE)[0], tags::REFERENCED_SOP_INSTANCE_UID).as_deref(), Some("2.25.21"));
        assert_eq!(s(&items(&input[1], tags::DICOM_RETRIEVAL_SEQUENCE)[0], tags::RETRIEVE_AE_TITLE).as_deref(), Some("TRIAGE"));
        let request = &items(&o, tags::REFERENCED_REQUEST_SEQUENCE)[0];
        assert_eq!(s(request, tags::ACCESSION_NUMBER).as_deref(), Some("PSEUDOACC"));
        assert_eq!(s(request, tags::STUDY_INSTANCE_UID).as_deref(), Some("2.25.10"));
        assert_eq!(s(request, tags::REQUESTED_PROCEDURE_ID).as_deref(), Some(""));
        // A positive study's (when configured) is MEDIUM.
        assert_eq!(s(&build(&workitem("POSITIVE"), &header()), tags::SCHEDULED_PROCEDURE_STEP_PRIORITY).as_deref(), Some("MEDIUM"));
    }

    #[test]
    fn at_sending_the_accession_goes_into_the_request_and_study_attributes_go() {
        let mut o = build(&workitem("URGENT"), &header());
        // As `reidentify` leaves it: the originals at top level.
        put(&mut o, tags::ACCESSION_NUMBER, VR::SH, "ACC123");
        put(&mut o, tags::STUDY_DATE, VR::DA, "20260101");
        put(&mut o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
        put(&mut o, tags::PATIENT_ID, VR::LO, "MRN1");
        let o = for_sending(o);
        let request = &items(&o, tags::REFERENCED_REQUEST_SEQUENCE)[0];
        assert_eq!(s(request, tags::ACCESSION_NUMBER).as_deref(), Some("ACC123"));
        for tag in NOT_IN_UPS {
            assert!(o.get(tag).is_none(), "{tag}");
        }
        assert_eq!(s(&o, tags::PATIENT_ID).as_deref(), Some("MRN1"));
        assert_eq!(s(&o, tags::SCHEDULED_PROCEDURE_STEP_PRIORITY).as_deref(), Some("HIGH"));
    }
}
