//! The query index as one immutable snapshot: patients, their studies, series and the result
//! objects in them, each with the attributes a C-FIND can match and return, taken from the
//! object as it is delivered (re-identified). A refresh builds the next snapshot beside the old
//! one (nodes are shared, `Arc`), so a query in progress keeps reading the one it started on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::keys::{Level, KEYS};
use crate::deid::Originals;

/// The originals an object is re-identified with: per referenced stored instance (its
/// de-identified SOP Instance UID), what its map record holds.
pub type Opened = Arc<[(String, Originals)]>;

/// One attribute as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// Its values as text, several joined by `\`.
    Text(VR, String),
    /// A sequence: each item's attributes, nested sequences included (up to `MAX_DEPTH`).
    Items(Vec<Item>),
}

/// The attributes of one sequence item, in the item's order.
pub type Item = Vec<(Tag, Attr)>;

/// Sequence levels kept below a key (Contributing Equipment > Purpose of Reference is 2).
const MAX_DEPTH: usize = 3;

/// The attributes of one node, by tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs(Vec<(Tag, Attr)>);

impl Attrs {
    pub fn get(&self, tag: Tag) -> Option<&Attr> {
        self.0.iter().find(|(t, _)| *t == tag).map(|(_, a)| a)
    }

    pub fn text(&self, tag: Tag) -> &str {
        match self.get(tag) {
            Some(Attr::Text(_, v)) => v,
            _ => "",
        }
    }

    /// The attributes of `level` that `obj` has (stored keys only; computed ones are not).
    fn of(obj: &InMemDicomObject, level: Level) -> Attrs {
        let mut out = Vec::new();
        for key in KEYS.iter().filter(|k| k.level == level && !k.computed) {
            let Some(e) = obj.get(key.tag) else { continue };
            let attr = match e.value() {
                Value::Sequence(seq) => Attr::Items(items_of(seq.items(), 1)),
                _ => match text_of(e) {
                    Some(v) => Attr::Text(key.vr, v),
                    None => continue,
                },
            };
            out.push((key.tag, attr));
        }
        Attrs(out)
    }
}

/// The items of a sequence `depth` levels below a key; deeper sequences are left out.
fn items_of(items: &[InMemDicomObject], depth: usize) -> Vec<Item> {
    let attr = |e: &dicom_core::DataElement<InMemDicomObject>| match e.value() {
        Value::Sequence(seq) if depth < MAX_DEPTH => Some(Attr::Items(items_of(seq.items(), depth + 1))),
        _ => text_of(e).map(|v| Attr::Text(e.vr(), v)),
    };
    items.iter().map(|item| item.iter().filter_map(|e| attr(e).map(|a| (e.tag(), a))).collect()).collect()
}

fn text_of(e: &dicom_core::DataElement<InMemDicomObject>) -> Option<String> {
    if matches!(e.value(), Value::Sequence(_) | Value::PixelSequence(_)) {
        return None;
    }
    let values = e.to_multi_str().ok()?;
    Some(values.iter().map(|v| v.trim_matches(|c| c == ' ' || c == '\0')).collect::<Vec<_>>().join("\\"))
}

#[derive(Debug, Clone)]
pub struct Patient {
    pub attrs: Attrs,
    pub studies: Vec<Arc<Study>>,
}

#[derive(Debug, Clone)]
pub struct Study {
    pub uid: String,
    /// Study attributes and, for the Study Root model, the patient's as this study's objects
    /// carry them.
    pub attrs: Attrs,
    pub patient: Attrs,
    pub series: Vec<Arc<Series>>,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub uid: String,
    pub attrs: Attrs,
    pub instances: Vec<Arc<Instance>>,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub uid: String,
    pub sop_class_uid: String,
    pub attrs: Attrs,
    /// The de-identified file, relative to the data directory.
    pub path: String,
    /// The originals it is re-identified with (per referenced stored instance, by its
    /// de-identified SOP Instance UID), opened from the sealed map when it was indexed.
    pub originals: Opened,
    /// An IHE IOCM rejection note: never hidden by another note.
    pub rejection_note: bool,
}

/// One version of the index.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub patients: Vec<Arc<Patient>>,
    /// The newest outbox row read into it.
    pub high_water: i64,
    pub instances: usize,
    patient_at: HashMap<(String, String), usize>,
    study_at: HashMap<String, (usize, usize)>,
    paths: HashSet<String>,
    /// The originals of an indexed object of each study and patient, by de-identified Study
    /// Instance UID and Patient ID (pseudonym): the identity of an object that references no
    /// stored instance (a rejection note).
    study_originals: HashMap<(String, String), Opened>,
    /// The SOP Instance UIDs the indexed rejection notes name: hidden from query and retrieve
    /// (IHE IOCM), whether indexed before the note or after it.
    rejected: HashSet<String>,
}

impl Snapshot {
    pub fn studies(&self) -> usize {
        self.study_at.len()
    }

    pub fn has_path(&self, path: &str) -> bool {
        self.paths.contains(path)
    }

    /// The originals an indexed object of the study and patient `deid` (de-identified Study
    /// Instance UID, Patient ID) was re-identified with, already opened.
    pub fn study_originals(&self, deid: &(String, String)) -> Option<Opened> {
        self.study_originals.get(deid).cloned()
    }

    /// Whether an indexed rejection note names the object `sop_instance_uid`.
    pub fn is_rejected(&self, sop_instance_uid: &str) -> bool {
        self.rejected.contains(sop_instance_uid)
    }

    /// Add a re-identified object (`path` its de-identified file, `deid` its Study Instance UID
    /// and Patient ID there). An object with the SOP Instance UID of one already indexed
    /// replaces it (a result published again). A rejection note (IHE IOCM) is indexed like any
    /// object and hides what it names: those objects leave their series (a series left empty
    /// leaves its study, a study its patient), and one that arrives later is not indexed (its
    /// path is, so it is not read again); a note itself is never hidden.
    pub fn insert(&mut self, obj: &InMemDicomObject, path: &str, deid: &(String, String), originals: Opened) {
        let text = |t: Tag| text_of_tag(obj, t);
        let (Some(study_uid), Some(series_uid), Some(sop_uid)) =
            (text(tags::STUDY_INSTANCE_UID), text(tags::SERIES_INSTANCE_UID), text(tags::SOP_INSTANCE_UID))
        else {
            return;
        };
        self.paths.insert(path.to_string());
        if !originals.is_empty() && !self.study_originals.contains_key(deid) {
            self.study_originals.insert(deid.clone(), originals.clone());
        }
        let rejects = rejection_note(obj);
        if rejects.is_none() && self.rejected.contains(&sop_uid) {
            return;
        }
        let patient_key = (text(tags::ISSUER_OF_PATIENT_ID).unwrap_or_default(), text(tags::PATIENT_ID).unwrap_or_default());
        let patient_attrs = Attrs::of(obj, Level::Patient);
        let (pi, si) = match self.study_at.get(&study_uid) {
            Some(&at) => at,
            None => {
                let pi = match self.patient_at.get(&patient_key) {
                    Some(&pi) => pi,
                    None => {
                        self.patients.push(Arc::new(Patient { attrs: patient_attrs.clone(), studies: Vec::new() }));
                        self.patient_at.insert(patient_key, self.patients.len() - 1);
                        self.patients.len() - 1
                    }
                };
                let patient = Arc::make_mut(&mut self.patients[pi]);
                patient.studies.push(Arc::new(Study {
                    uid: study_uid.clone(),
                    attrs: Attrs::of(obj, Level::Study),
                    patient: patient_attrs,
                    series: Vec::new(),
                }));
                let at = (pi, patient.studies.len() - 1);
                self.study_at.insert(study_uid.clone(), at);
                at
            }
        };
        let study = Arc::make_mut(&mut Arc::make_mut(&mut self.patients[pi]).studies[si]);
        let series_i = match study.series.iter().position(|s| s.uid == series_uid) {
            Some(i) => i,
            None => {
                study.series.push(Arc::new(Series { uid: series_uid, attrs: Attrs::of(obj, Level::Series), instances: Vec::new() }));
                study.series.len() - 1
            }
        };
        let series = Arc::make_mut(&mut study.series[series_i]);
        let instance = Arc::new(Instance {
            uid: sop_uid.clone(),
            sop_class_uid: text(tags::SOP_CLASS_UID).unwrap_or_default(),
            attrs: Attrs::of(obj, Level::Image),
            path: path.to_string(),
            originals,
            rejection_note: rejects.is_some(),
        });
        match series.instances.iter().position(|i| i.uid == sop_uid) {
            Some(i) => series.instances[i] = instance,
            None => {
                series.instances.push(instance);
                self.instances += 1;
            }
        }
        if let Some(rejects) = rejects {
            self.hide(study_uid, rejects);
        }
    }

    /// Hide the objects a rejection note of `study_uid` names: look for them in that study and
    /// in the studies its evidence names.
    fn hide(&mut self, study_uid: String, rejects: Rejects) {
        let Rejects { studies, instances } = rejects;
        self.rejected.extend(instances.iter().cloned());
        let mut emptied = false;
        for study_uid in std::iter::once(study_uid).chain(studies) {
            let Some(&(pi, si)) = self.study_at.get(&study_uid) else { continue };
            let hidden = |i: &Arc<Instance>| !i.rejection_note && instances.contains(&i.uid);
            let study = &self.patients[pi].studies[si];
            if !study.series.iter().any(|se| se.instances.iter().any(hidden)) {
                continue;
            }
            let study = Arc::make_mut(&mut Arc::make_mut(&mut self.patients[pi]).studies[si]);
            for series in study.series.iter_mut() {
                let before = series.instances.len();
                if series.instances.iter().any(hidden) {
                    Arc::make_mut(series).instances.retain(|i| !hidden(i));
                }
                self.instances -= before - series.instances.len();
            }
            study.series.retain(|se| !se.instances.is_empty());
            if study.series.is_empty() {
                let patient = Arc::make_mut(&mut self.patients[pi]);
                patient.studies.remove(si);
                emptied = true;
            }
        }
        if emptied {
            self.patients.retain(|p| !p.studies.is_empty());
            self.reindex();
        }
    }

    /// The positions of patients and studies again, after some were removed.
    fn reindex(&mut self) {
        self.patient_at.clear();
        self.study_at.clear();
        for (pi, p) in self.patients.iter().enumerate() {
            self.patient_at.insert((p.attrs.text(tags::ISSUER_OF_PATIENT_ID).to_string(), p.attrs.text(tags::PATIENT_ID).to_string()), pi);
            for (si, st) in p.studies.iter().enumerate() {
                self.study_at.insert(st.uid.clone(), (pi, si));
            }
        }
    }
}

/// The IHE IOCM rejection note titles (CID 7011): a Key Object Selection Document with one of
/// them rejects the objects it references.
const REJECTION_TITLES: [&str; 4] = ["113001", "113037", "113038", "113039"];

/// What a rejection note names.
struct Rejects {
    /// The Study Instance UIDs of its Current Requested Procedure Evidence Sequence.
    studies: Vec<String>,
    /// The SOP Instance UIDs of that sequence and of its content tree.
    instances: HashSet<String>,
}

/// What `obj` rejects, when it is a rejection note (Key Object Selection Document titled with a
/// rejection title, coding scheme DCM).
fn rejection_note(obj: &InMemDicomObject) -> Option<Rejects> {
    if text_of_tag(obj, tags::SOP_CLASS_UID).as_deref() != Some(dicom_dictionary_std::uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE) {
        return None;
    }
    let items = |o: &InMemDicomObject, t: Tag| o.get(t).and_then(|e| e.items().map(|i| i.to_vec())).unwrap_or_default();
    let title = items(obj, tags::CONCEPT_NAME_CODE_SEQUENCE).into_iter().next()?;
    let code = text_of_tag(&title, tags::CODE_VALUE).unwrap_or_default();
    if !REJECTION_TITLES.contains(&code.as_str()) || text_of_tag(&title, tags::CODING_SCHEME_DESIGNATOR).as_deref() != Some("DCM") {
        return None;
    }
    let mut out = Rejects { studies: Vec::new(), instances: HashSet::new() };
    for study in items(obj, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE) {
        out.studies.extend(text_of_tag(&study, tags::STUDY_INSTANCE_UID));
        for series in items(&study, tags::REFERENCED_SERIES_SEQUENCE) {
            out.instances.extend(items(&series, tags::REFERENCED_SOP_SEQUENCE).iter().filter_map(|i| text_of_tag(i, tags::REFERENCED_SOP_INSTANCE_UID)));
        }
    }
    fn content(items: &[InMemDicomObject], out: &mut HashSet<String>) {
        for item in items {
            for r in item.get(tags::REFERENCED_SOP_SEQUENCE).and_then(|e| e.items()).unwrap_or_default() {
                out.extend(text_of_tag(r, tags::REFERENCED_SOP_INSTANCE_UID));
            }
            content(item.get(tags::CONTENT_SEQUENCE).and_then(|e| e.items()).unwrap_or_default(), out);
        }
    }
    content(obj.get(tags::CONTENT_SEQUENCE).and_then(|e| e.items()).unwrap_or_default(), &mut out.instances);
    Some(out)
}

#[cfg(test)]
impl Snapshot {
    pub fn insert_test(&mut self, obj: &InMemDicomObject, path: &str) {
        self.insert(obj, path, &Default::default(), Arc::from(Vec::new()));
    }
}

fn text_of_tag(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag).and_then(text_of).filter(|s| !s.is_empty())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::results::dataset::put;

    pub fn object(patient: &str, study: &str, series: &str, sop: &str) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, tags::PATIENT_ID, VR::LO, patient);
        put(&mut o, tags::PATIENT_NAME, VR::PN, "DOE^JANE");
        put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, study);
        put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, series);
        put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop);
        put(&mut o, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.88.34");
        put(&mut o, tags::MODALITY, VR::CS, "SR");
        o
    }

    #[test]
    fn objects_fall_into_their_patient_study_and_series_and_a_new_snapshot_leaves_the_old_alone() {
        let mut s = Snapshot::default();
        s.insert_test(&object("P1", "1.1", "1.1.1", "1.1.1.1"), "a");
        s.insert_test(&object("P1", "1.1", "1.1.2", "1.1.2.1"), "b");
        let before = s.clone();
        s.insert_test(&object("P1", "1.2", "1.2.1", "1.2.1.1"), "c");
        s.insert_test(&object("P2", "2.1", "2.1.1", "2.1.1.1"), "d");
        s.insert_test(&object("P2", "2.1", "2.1.1", "2.1.1.1"), "e"); // published again: replaced
        assert_eq!((s.patients.len(), s.studies(), s.instances), (2, 3, 4));
        assert_eq!(s.patients[0].studies.len(), 2);
        assert_eq!(s.patients[0].studies[0].series.len(), 2);
        assert_eq!(s.patients[1].studies[0].series[0].instances[0].path, "e");
        assert_eq!(s.patients[0].attrs.text(tags::PATIENT_NAME), "DOE^JANE");
        assert_eq!((before.patients.len(), before.studies(), before.instances), (1, 1, 2));
        assert_eq!(before.patients[0].studies.len(), 1);
    }

    /// A rejection note in `study` (series `series`) naming `evidence` (study, series, instance)
    /// in its Current Requested Procedure Evidence Sequence and `content` in its content tree.
    pub fn note(study: &str, series: &str, sop: &str, title: &str, evidence: &[(&str, &str, &str)], content: &[&str]) -> InMemDicomObject {
        use crate::results::dataset::put_seq;
        let mut o = object("P1", study, series, sop);
        put(&mut o, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.88.59");
        put(&mut o, tags::MODALITY, VR::CS, "KO");
        let mut code = InMemDicomObject::new_empty();
        put(&mut code, tags::CODE_VALUE, VR::SH, title);
        put(&mut code, tags::CODING_SCHEME_DESIGNATOR, VR::SH, "DCM");
        put_seq(&mut o, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code]);
        let studies = evidence
            .iter()
            .map(|(st, se, i)| {
                let mut r = InMemDicomObject::new_empty();
                put(&mut r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, i);
                let mut series = InMemDicomObject::new_empty();
                put(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, se);
                put_seq(&mut series, tags::REFERENCED_SOP_SEQUENCE, vec![r]);
                let mut s = InMemDicomObject::new_empty();
                put(&mut s, tags::STUDY_INSTANCE_UID, VR::UI, st);
                put_seq(&mut s, tags::REFERENCED_SERIES_SEQUENCE, vec![series]);
                s
            })
            .collect();
        put_seq(&mut o, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, studies);
        let items = content
            .iter()
            .map(|i| {
                let mut r = InMemDicomObject::new_empty();
                put(&mut r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, i);
                let mut c = InMemDicomObject::new_empty();
                put(&mut c, tags::VALUE_TYPE, VR::CS, "IMAGE");
                put_seq(&mut c, tags::REFERENCED_SOP_SEQUENCE, vec![r]);
                c
            })
            .collect();
        put_seq(&mut o, tags::CONTENT_SEQUENCE, items);
        o
    }

    fn uids(s: &Snapshot) -> Vec<Vec<Vec<&str>>> {
        s.patients
            .iter()
            .flat_map(|p| p.studies.iter())
            .map(|st| st.series.iter().map(|se| se.instances.iter().map(|i| i.uid.as_str()).collect()).collect())
            .collect()
    }

    #[test]
    fn a_rejection_note_hides_what_it_names_and_stays_itself() {
        let mut s = Snapshot::default();
        s.insert_test(&object("P1", "1.1", "1.1.1", "1.1.1.1"), "sr"); // the report
        s.insert_test(&object("P1", "1.1", "1.1.2", "1.1.2.1"), "map"); // its heatmaps
        s.insert_test(&object("P1", "1.1", "1.1.2", "1.1.2.2"), "picture");
        s.insert_test(&object("P1", "1.1", "1.1.3", "1.1.3.1"), "other"); // another model's report
        s.insert_test(&object("P1", "1.2", "1.2.1", "1.2.1.1"), "elsewhere");
        let before = s.clone();
        // A key object selection that is not a rejection (113000, "Of Interest") hides nothing.
        s.insert_test(&note("1.1", "1.1.8", "1.1.8.1", "113000", &[("1.1", "1.1.1", "1.1.1.1")], &["1.1.1.1"]), "of-interest");
        assert_eq!((s.instances, s.is_rejected("1.1.1.1")), (6, false));
        // The note names the report and a map in its evidence, the picture in its content only.
        let n = note("1.1", "1.1.9", "1.1.9.1", "113001", &[("1.1", "1.1.1", "1.1.1.1"), ("1.1", "1.1.2", "1.1.2.1")], &["1.1.1.1", "1.1.2.2"]);
        s.insert_test(&n, "note");
        assert_eq!(uids(&s), [vec![vec!["1.1.3.1"], vec!["1.1.8.1"], vec!["1.1.9.1"]], vec![vec!["1.2.1.1"]]], "series left empty are gone");
        assert_eq!((s.instances, s.studies(), s.patients.len()), (4, 2, 1));
        assert!(s.is_rejected("1.1.2.2") && !s.is_rejected("1.1.9.1"));
        let kept = &s.patients[0].studies[0].series[2].instances[0];
        assert!(kept.rejection_note && kept.path == "note", "the note itself stays");
        assert_eq!(uids(&before).concat().concat().len(), 5, "the snapshot a query started on is left alone");
        // Named objects that arrive later (a slower node's row, or published again) stay hidden,
        // and are not read again; the note indexed again stays.
        s.insert_test(&object("P1", "1.1", "1.1.2", "1.1.2.1"), "map-again");
        s.insert_test(&n, "note");
        assert_eq!((s.instances, s.has_path("map-again")), (4, true));
        // A note hides even a note's named objects in another study, and a study (and patient)
        // left empty leaves the index; the positions of the rest still hold.
        s.insert_test(&object("P2", "2.1", "2.1.1", "2.1.1.1"), "p2");
        s.insert_test(&note("1.1", "1.1.9", "1.1.9.2", "113037", &[("1.2", "1.2.1", "1.2.1.1"), ("2.1", "2.1.1", "2.1.1.1")], &["1.1.9.1"]), "note2");
        assert_eq!(uids(&s), [vec![vec!["1.1.3.1"], vec!["1.1.8.1"], vec!["1.1.9.1", "1.1.9.2"]]], "a note is never hidden");
        assert_eq!((s.instances, s.studies(), s.patients.len()), (4, 1, 1));
        s.insert_test(&object("P2", "2.2", "2.2.1", "2.2.1.1"), "p2-new");
        s.insert_test(&object("P1", "1.1", "1.1.3", "1.1.3.2"), "other-2");
        assert_eq!((s.instances, s.studies(), s.patients.len()), (6, 2, 2));
        assert_eq!(s.patients[0].studies[0].series[0].instances.len(), 2);
    }

    #[test]
    fn sequences_are_kept_with_their_nested_sequences_and_a_study_keeps_its_identity() {
        use dicom_core::value::DataSetSequence;
        use dicom_core::{DataElement, Length};
        let seq = |items: Vec<InMemDicomObject>| DataSetSequence::new(items, Length::UNDEFINED);
        let mut o = object("P1", "1.1", "1.1.1", "1.1.1.1");
        let mut purpose = InMemDicomObject::new_empty();
        put(&mut purpose, tags::CODE_VALUE, VR::SH, "Newcode1");
        let mut algorithm = InMemDicomObject::new_empty();
        put(&mut algorithm, tags::MANUFACTURER_MODEL_NAME, VR::LO, "demo-nodule");
        algorithm.put(DataElement::new(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, VR::SQ, seq(vec![purpose])));
        o.put(DataElement::new(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, VR::SQ, seq(vec![algorithm])));
        put(&mut o, tags::CONTENT_LABEL, VR::CS, "HEATMAP");
        let originals: crate::deid::Originals = serde_json::from_value(serde_json::json!({
            "specific_character_set": null, "patient_id": "P1", "issuer_of_patient_id": null, "patient_name": null,
            "patient_birth_date": null, "patient_sex": null, "accession_number": null, "study_instance_uid": "1.1",
            "series_instance_uid": "1.0.1", "sop_instance_uid": "1.0.1.1", "study_date": null, "study_time": null, "study_id": null,
            "referring_physician_name": null, "study_description": null
        }))
        .unwrap();
        let mut s = Snapshot::default();
        let deid = ("2.25.7".to_string(), "PSEUDO".to_string());
        s.insert(&o, "a", &deid, Arc::from(vec![("2.25.8".to_string(), originals)]));
        let attrs = &s.patients[0].studies[0].series[0].instances[0].attrs;
        assert_eq!(attrs.text(tags::CONTENT_LABEL), "HEATMAP");
        let Some(Attr::Items(items)) = attrs.get(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE) else { panic!("no sequence") };
        assert_eq!(items[0][0], (tags::MANUFACTURER_MODEL_NAME, Attr::Text(VR::LO, "demo-nodule".into())));
        assert_eq!(items[0][1], (tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, Attr::Items(vec![vec![(tags::CODE_VALUE, Attr::Text(VR::SH, "Newcode1".into()))]])));
        assert_eq!(s.study_originals(&deid).map(|o| o[0].0.clone()).as_deref(), Some("2.25.8"));
        assert!(s.study_originals(&("2.25.7".into(), "OTHER".into())).is_none(), "another patient's");
        assert!(s.study_originals(&("2.25.9".into(), "PSEUDO".into())).is_none());
    }
}
