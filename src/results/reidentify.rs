//! Re-identification of a queued result object at the moment of sending, in memory: the
//! original patient and study identity and the original UIDs of every referenced image come back
//! from the sealed map (each record opened is audited with the purpose); the object on disk stays
//! de-identified.
//!
//! Every Referenced SOP Instance UID in the object that names a stored instance is looked up;
//! the identity comes from the first one. An object that names none (a rejection note names
//! only the node's own objects) takes the record of a stored instance of its de-identified
//! study, of the same patient pseudonym (`study_record`). De-identified UIDs are
//! `keys.uid(original)`, so the originals of study, series, instance and Frame of Reference map
//! each pseudonymous UID back wherever it occurs (Study Instance UID, evidence sequences, content
//! items, Source Image Sequence, a map's Frame of Reference UID). UIDs the node created itself
//! (the objects' own, tracking UIDs) are not in the map and stay as they are.

use std::collections::HashMap;
use std::path::Path;

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::dataset::{self, IDENTITY};
use crate::db::{Db, SealedRecord};
use crate::deid::{self, Keys, MapError, Originals};

#[derive(Debug, thiserror::Error)]
pub enum ReidError {
    #[error("reading the queued object: {0}")]
    Read(String),
    #[error("the queued object references no stored instance and its study has none, so its patient is unknown")]
    NoReference,
    #[error("re-identification map: {0}")]
    Map(MapError),
    #[error("encoding the re-identified object: {0}")]
    Encode(String),
}

impl From<MapError> for ReidError {
    fn from(e: MapError) -> Self {
        ReidError::Map(e)
    }
}

impl ReidError {
    /// Worth retrying later (a database hiccup), as opposed to a defect of the object or map.
    pub fn transient(&self) -> bool {
        matches!(self, ReidError::Map(MapError::Db(_)))
    }
}

/// The Part 10 bytes of the object at `path`, re-identified. `purpose` goes into each audit entry.
pub async fn for_delivery(db: &Db, keys: &Keys, path: &Path, purpose: &str) -> Result<Vec<u8>, ReidError> {
    let r = reidentified(db, keys, path, purpose).await?;
    dataset::part10(&r.object, &r.sop_class_uid, &r.sop_instance_uid).map_err(ReidError::Encode)
}

/// A result object re-identified in memory, with its own class and instance UIDs (the node's,
/// never re-identified).
pub struct Reidentified {
    pub object: InMemDicomObject,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// The object at `path`, re-identified in memory: the one way a result object goes out, whether
/// the outbox delivers it or a PACS retrieves it. Each map record opened is audited with `purpose`.
pub async fn reidentified(db: &Db, keys: &Keys, path: &Path, purpose: &str) -> Result<Reidentified, ReidError> {
    let (obj, sop_class_uid, sop_instance_uid) = read(path)?;
    let mut opened = Vec::new();
    for uid in references(&obj) {
        if db.reid_record(&uid).await.map_err(MapError::from)?.is_none() {
            continue; // one of the node's own objects (a heatmap referenced by the report)
        }
        let o = deid::reidentify(db, keys, &uid, purpose).await?;
        opened.push((uid, o));
    }
    if opened.is_empty() {
        if let Some(record) = study_record(db, &obj).await? {
            let o = deid::reidentify_record(db, keys, &record, purpose).await?;
            opened.push((record.sop_instance_uid, o));
        }
    }
    Ok(Reidentified { object: apply(obj, keys, &opened)?, sop_class_uid, sop_instance_uid })
}

/// For an object that names no stored instance: the sealed record of a stored instance of its
/// (de-identified) Study Instance UID, recorded under the object's Patient ID (its pseudonym)
/// or before pseudonyms were recorded. Not opened: the caller opens it, audited. None when the
/// study has no such record.
pub async fn study_record(db: &Db, obj: &InMemDicomObject) -> Result<Option<SealedRecord>, ReidError> {
    let Some(study) = dataset::text(obj, tags::STUDY_INSTANCE_UID) else { return Ok(None) };
    let pseudonym = dataset::text(obj, tags::PATIENT_ID);
    db.reid_record_for_study(&study, pseudonym.as_deref()).await.map_err(|e| ReidError::Map(MapError::Db(e)))
}

/// The object at `path`, re-identified with originals already opened (and audited) by the
/// caller: the query index holds them, and audits each retrieve that discloses them.
pub fn with_originals(keys: &Keys, path: &Path, opened: &[(String, Originals)]) -> Result<Reidentified, ReidError> {
    let (obj, sop_class_uid, sop_instance_uid) = read(path)?;
    Ok(Reidentified { object: apply(obj, keys, opened)?, sop_class_uid, sop_instance_uid })
}

/// A queued object: its data set, SOP Class and SOP Instance UIDs.
fn read(path: &Path) -> Result<(InMemDicomObject, String, String), ReidError> {
    let file = dicom_object::open_file(path).map_err(|e| ReidError::Read(e.to_string()))?;
    let sop_class_uid = file.meta().media_storage_sop_class_uid().trim_end_matches('\0').to_string();
    let sop_instance_uid = file.meta().media_storage_sop_instance_uid().trim_end_matches('\0').to_string();
    Ok((file.into_inner(), sop_class_uid, sop_instance_uid))
}

/// The distinct Referenced SOP Instance UIDs of `obj`, at any depth, in order: those that name
/// a stored instance have a map record.
pub fn references(obj: &InMemDicomObject) -> Vec<String> {
    let mut all = Vec::new();
    collect_references(obj, &mut all);
    let mut seen = std::collections::HashSet::new();
    all.retain(|u| seen.insert(u.clone()));
    all
}

/// Put the originals back into `obj`: `opened` holds, for each referenced stored instance (its
/// de-identified SOP Instance UID), the originals its map record holds; the identity comes
/// from the first. For an object that references none (`study_record`), `opened` holds the
/// record of a stored instance of its study.
pub fn apply(obj: InMemDicomObject, keys: &Keys, opened: &[(String, Originals)]) -> Result<InMemDicomObject, ReidError> {
    let identity = opened.first().map(|(_, o)| o).ok_or(ReidError::NoReference)?;
    let mut map: HashMap<String, String> = HashMap::new();
    for (uid, o) in opened {
        map.insert(keys.uid(&o.study_instance_uid), o.study_instance_uid.clone());
        map.insert(keys.uid(&o.series_instance_uid), o.series_instance_uid.clone());
        map.insert(uid.clone(), o.sop_instance_uid.clone());
        if let Some(frame) = &o.frame_of_reference_uid {
            map.insert(keys.uid(frame), frame.clone());
        }
    }
    let mut obj = replace_uids(obj, &map);
    put_identity(&mut obj, identity);
    Ok(obj)
}

fn collect_references(obj: &InMemDicomObject, out: &mut Vec<String>) {
    for e in obj {
        match e.value() {
            Value::Sequence(seq) => seq.items().iter().for_each(|i| collect_references(i, out)),
            _ if e.tag() == tags::REFERENCED_SOP_INSTANCE_UID => {
                if let Ok(v) = e.to_str() {
                    out.push(v.trim_end_matches(['\0', ' ']).to_string());
                }
            }
            _ => {}
        }
    }
}

/// `obj` with every UI value that `map` names replaced, at any depth.
pub fn replace_uids(obj: InMemDicomObject, map: &HashMap<String, String>) -> InMemDicomObject {
    let mut out = InMemDicomObject::new_empty();
    for e in obj {
        let tag = e.tag();
        let vr = e.vr();
        let replaced = match e.value() {
            Value::Sequence(seq) => {
                let items: Vec<InMemDicomObject> = seq.items().iter().cloned().map(|i| replace_uids(i, map)).collect();
                DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
            }
            _ if vr == VR::UI => match e.to_multi_str() {
                Ok(values) => {
                    let new: Vec<String> = values
                        .iter()
                        .map(|v| {
                            let v = v.trim_end_matches(['\0', ' ']);
                            map.get(v).cloned().unwrap_or_else(|| v.to_string())
                        })
                        .collect();
                    DataElement::new(tag, VR::UI, PrimitiveValue::Strs(new.into()))
                }
                Err(_) => e,
            },
            _ => e,
        };
        out.put(replaced);
    }
    out
}

fn put_identity(obj: &mut InMemDicomObject, o: &Originals) {
    for (tag, vr) in IDENTITY {
        let value: Option<&String> = match tag {
            t if t == tags::PATIENT_NAME => o.patient_name.as_ref(),
            t if t == tags::PATIENT_ID => o.patient_id.as_ref(),
            t if t == tags::ISSUER_OF_PATIENT_ID => o.issuer_of_patient_id.as_ref(),
            t if t == tags::PATIENT_BIRTH_DATE => o.patient_birth_date.as_ref(),
            t if t == tags::PATIENT_SEX => o.patient_sex.as_ref(),
            t if t == tags::STUDY_INSTANCE_UID => Some(&o.study_instance_uid),
            t if t == tags::STUDY_DATE => o.study_date.as_ref(),
            t if t == tags::STUDY_TIME => o.study_time.as_ref(),
            t if t == tags::REFERRING_PHYSICIAN_NAME => o.referring_physician_name.as_ref(),
            t if t == tags::STUDY_ID => o.study_id.as_ref(),
            t if t == tags::ACCESSION_NUMBER => o.accession_number.as_ref(),
            t if t == tags::STUDY_DESCRIPTION => o.study_description.as_ref(),
            _ => None,
        };
        match value {
            Some(v) => {
                obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v.as_str())));
            }
            None if tag == tags::ISSUER_OF_PATIENT_ID || tag == tags::STUDY_DESCRIPTION => {
                obj.remove_element(tag);
            }
            None => {
                obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::dataset::put;

    fn with_refs() -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, "2.25.1");
        put(&mut o, tags::PATIENT_ID, VR::LO, "PSEUDONYM");
        put(&mut o, tags::ISSUER_OF_PATIENT_ID, VR::LO, "pseudo-issuer");
        let mut inner = InMemDicomObject::new_empty();
        put(&mut inner, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, "2.25.3");
        let mut series = InMemDicomObject::new_empty();
        put(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, "2.25.2");
        series.put(DataElement::new(tags::REFERENCED_SOP_SEQUENCE, VR::SQ, DataSetSequence::new(vec![inner], Length::UNDEFINED)));
        o.put(DataElement::new(tags::REFERENCED_SERIES_SEQUENCE, VR::SQ, DataSetSequence::new(vec![series], Length::UNDEFINED)));
        put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, "2.25.999"); // the object's own: not in the map
        o
    }

    #[test]
    fn mapped_uids_are_replaced_at_any_depth_and_others_kept() {
        let mut refs = Vec::new();
        collect_references(&with_refs(), &mut refs);
        assert_eq!(refs, ["2.25.3"]);
        let map: HashMap<String, String> =
            [("2.25.1", "1.2.3"), ("2.25.2", "1.2.3.4"), ("2.25.3", "1.2.3.4.5")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let out = replace_uids(with_refs(), &map);
        let text = |o: &InMemDicomObject, t| o.get(t).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
        assert_eq!(text(&out, tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(text(&out, tags::SOP_INSTANCE_UID), "2.25.999");
        let series = &out.get(tags::REFERENCED_SERIES_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(text(series, tags::SERIES_INSTANCE_UID), "1.2.3.4");
        let sop = &series.get(tags::REFERENCED_SOP_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(text(sop, tags::REFERENCED_SOP_INSTANCE_UID), "1.2.3.4.5");
    }

    #[test]
    fn identity_comes_from_the_originals_and_absent_values_stay_empty() {
        let mut o = with_refs();
        let originals: Originals = serde_json::from_value(serde_json::json!({
            "specific_character_set": null, "patient_id": "12345", "issuer_of_patient_id": null,
            "patient_name": "DOE^JANE", "patient_birth_date": null, "patient_sex": "F", "accession_number": "A1",
            "study_instance_uid": "1.2.3", "series_instance_uid": "1.2.3.4", "sop_instance_uid": "1.2.3.4.5",
            "study_date": "20260101", "study_time": null, "study_id": null, "referring_physician_name": null, "study_description": null
        }))
        .unwrap();
        put_identity(&mut o, &originals);
        let text = |t| o.get(t).map(|e| e.to_str().unwrap().trim_end_matches(['\0', ' ']).to_string());
        assert_eq!(text(tags::PATIENT_ID).as_deref(), Some("12345"));
        assert_eq!(text(tags::PATIENT_NAME).as_deref(), Some("DOE^JANE"));
        assert_eq!(text(tags::PATIENT_BIRTH_DATE).as_deref(), Some(""), "Type 2: present, empty");
        assert_eq!(text(tags::ISSUER_OF_PATIENT_ID), None, "the pseudonymous issuer is not left behind");
        assert_eq!(text(tags::ACCESSION_NUMBER).as_deref(), Some("A1"));
    }

    fn originals(patient: &str, study: &str, series: &str, sop: &str) -> Originals {
        Originals {
            patient_id: Some(patient.into()),
            patient_name: Some(format!("{patient}^NAME")),
            study_instance_uid: study.into(),
            series_instance_uid: series.into(),
            sop_instance_uid: sop.into(),
            ..Originals::default()
        }
    }

    #[test]
    fn the_frame_of_reference_of_a_map_is_put_back() {
        let keys = Keys::for_tests(8);
        let mut o = with_refs();
        put(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, &keys.uid("1.2.3.9"));
        let mut derivation = InMemDicomObject::new_empty();
        put(&mut derivation, tags::REFERENCED_FRAME_OF_REFERENCE_UID, VR::UI, &keys.uid("1.2.3.9"));
        o.put(DataElement::new(tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE, VR::SQ, DataSetSequence::new(vec![derivation], Length::UNDEFINED)));
        let opened = [("2.25.3".to_string(), Originals { frame_of_reference_uid: Some("1.2.3.9".into()), ..originals("P", "1.2.3", "1.2.3.4", "1.2.3.4.5") })];
        let out = apply(o, &keys, &opened).unwrap();
        let text = |o: &InMemDicomObject, t| o.get(t).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
        assert_eq!(text(&out, tags::FRAME_OF_REFERENCE_UID), "1.2.3.9");
        let item = &out.get(tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(text(item, tags::REFERENCED_FRAME_OF_REFERENCE_UID), "1.2.3.9");
    }

    /// A rejection note names only the node's own objects: it goes out under the identity of
    /// a stored instance of its study and patient, and that opening is audited.
    #[tokio::test]
    async fn an_object_without_stored_references_takes_its_studys_identity() {
        use crate::results::kos;
        let keys = Keys::for_tests(8);
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("t.db").display()), 1).await.unwrap().with_audit_key(keys.audit_key());
        let study = keys.uid("1.2.3");
        // Two stored instances of the study: the lower SOP Instance UID names another patient.
        for (sop, pseudonym, o) in [
            ("2.25.1", "OTHER", originals("99999", "1.2.3", "1.2.3.7", "1.2.3.7.1")),
            ("2.25.2", "PSEUDO", originals("12345", "1.2.3", "1.2.3.4", "1.2.3.4.5")),
        ] {
            let (nonce, sealed) = keys.seal(&serde_json::to_vec(&o).unwrap(), sop).unwrap();
            let record =
                SealedRecord { sop_instance_uid: sop.into(), study_instance_uid: study.clone(), key_id: keys.map_key_id(), nonce, sealed, created_at_ms: 0 };
            let new = crate::db::NewInstance {
                sop_instance_uid: sop.into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(),
                study_instance_uid: study.clone(),
                series_instance_uid: keys.uid(&o.series_instance_uid),
                modality: Some("CR".into()),
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                calling_ae_title: "MOD".into(),
                path: format!("store/{sop}.dcm"),
                size_bytes: 1,
                dataset_digest: sop.into(),
                received_at_ms: 0,
                excluded_reason: None,
                deid_method: None,
                patient_pseudonym: Some(pseudonym.into()),
            };
            db.insert_instance(&new, Some(&record)).await.unwrap();
        }
        let mut identity = InMemDicomObject::new_empty();
        put(&mut identity, tags::PATIENT_ID, VR::LO, "PSEUDO");
        put(&mut identity, tags::STUDY_INSTANCE_UID, VR::UI, &study);
        let note = kos::Rejection {
            sop_instance_uid: "2.25.900".into(),
            series_uid: "2.25.901".into(),
            series_number: 9903,
            reason: kos::Reason::Quality,
            description: None,
            rejected: vec![crate::results::sr::ImageRef {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.88.34".into(),
                sop_instance_uid: "2.25.800".into(),
                series_instance_uid: "2.25.801".into(),
                frame: None,
            }],
            created_ms: 0,
            station: "T".into(),
        };
        let write = |obj: &InMemDicomObject, name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, dataset::part10(obj, kos::SOP_CLASS, "2.25.900").unwrap()).unwrap();
            path
        };
        let path = write(&kos::build(&note, &identity), "note.dcm");

        let r = reidentified(&db, &keys, &path, "test delivery").await.unwrap();
        let text = |o: &InMemDicomObject, t| o.get(t).unwrap().to_str().unwrap().trim_end_matches(['\0', ' ']).to_string();
        assert_eq!(text(&r.object, tags::PATIENT_ID), "12345", "the patient of the note's pseudonym, not the lowest UID's");
        assert_eq!(text(&r.object, tags::STUDY_INSTANCE_UID), "1.2.3");
        let evidence = &r.object.get(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(text(evidence, tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(references(&r.object), ["2.25.800"], "the node's own objects keep their UIDs");
        assert_eq!(r.sop_instance_uid, "2.25.900");
        let (entries, _, _) = db.audit_chain().await.unwrap();
        let opened: Vec<&str> = entries.iter().filter(|e| e.event == "reidentify").map(|e| e.subject.as_str()).collect();
        assert_eq!(opened, ["instance:2.25.2"], "one audited opening, of the record used");

        // A study the node holds nothing of: still no identity.
        put(&mut identity, tags::STUDY_INSTANCE_UID, VR::UI, "2.25.404");
        let path = write(&kos::build(&note, &identity), "unknown.dcm");
        assert!(matches!(reidentified(&db, &keys, &path, "test").await, Err(ReidError::NoReference)));
    }
}
