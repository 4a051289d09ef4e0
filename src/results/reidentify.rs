//! Re-identification of a queued result object at the moment of sending, in memory: the
//! original patient and study identity and the original UIDs of every referenced image come back
//! from the sealed map (each record opened is audited with the purpose); the object on disk stays
//! de-identified.
//!
//! Every Referenced SOP Instance UID in the object that names a stored instance is looked up;
//! the identity comes from the first one. De-identified UIDs are `keys.uid(original)`, so the
//! originals of study, series and instance map each pseudonymous UID back wherever it occurs
//! (Study Instance UID, evidence sequences, content items, Source Image Sequence). UIDs the node
//! created itself (the objects' own, tracking UIDs) are not in the map and stay as they are.

use std::collections::HashMap;
use std::path::Path;

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::dataset::{self, IDENTITY};
use crate::db::Db;
use crate::deid::{self, Keys, MapError, Originals};

#[derive(Debug, thiserror::Error)]
pub enum ReidError {
    #[error("reading the queued object: {0}")]
    Read(String),
    #[error("the queued object references no stored instance, so its patient is unknown")]
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
    Ok(Reidentified { object: apply(obj, keys, &opened)?, sop_class_uid, sop_instance_uid })
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
/// from the first.
pub fn apply(obj: InMemDicomObject, keys: &Keys, opened: &[(String, Originals)]) -> Result<InMemDicomObject, ReidError> {
    let identity = opened.first().map(|(_, o)| o).ok_or(ReidError::NoReference)?;
    let mut map: HashMap<String, String> = HashMap::new();
    for (uid, o) in opened {
        map.insert(keys.uid(&o.study_instance_uid), o.study_instance_uid.clone());
        map.insert(keys.uid(&o.series_instance_uid), o.series_instance_uid.clone());
        map.insert(uid.clone(), o.sop_instance_uid.clone());
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
}
