//! A C-FIND (or C-MOVE / C-GET) identifier read into what it asks for, matched against a
//! snapshot of the index one candidate at a time (nothing is collected: the caller sends each
//! response as the iterator yields it), and each match's response identifier.
//!
//! Hierarchical queries only (no relational extended negotiation): a query below the model's
//! top level names the unique key of each level above it with a single value. Keys the index
//! does not hold, or keys of a level below the query's, are returned zero-length and not
//! matched (the SCP says so with Pending status FF01).

use std::collections::BTreeSet;
use std::sync::Arc;

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::index::{Attr, Attrs, Instance, Item, Patient, Series, Snapshot, Study};
use super::keys::{self, Key, Level, Model};
use crate::dicom::matching::{Matcher, Options};
use crate::dicom::Status;

/// An identifier that cannot be answered: the failure status and the Error Comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub status: Status,
    pub comment: String,
}

fn mismatch(comment: impl Into<String>) -> QueryError {
    QueryError { status: Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, comment: comment.into() }
}

fn unable(comment: impl Into<String>) -> QueryError {
    QueryError { status: Status::UNABLE_TO_PROCESS, comment: comment.into() }
}

/// Keys answered at every level without being stored.
const RETRIEVE_AE_TITLE: Tag = tags::RETRIEVE_AE_TITLE;
const INSTANCE_AVAILABILITY: Tag = tags::INSTANCE_AVAILABILITY;

#[derive(Debug, Clone)]
struct QueryKey {
    tag: Tag,
    vr: VR,
    /// What the index holds for it at this level; None: returned empty, not matched.
    def: Option<&'static Key>,
    /// None: universal (or not matched).
    matcher: Option<Matcher>,
    /// For a sequence key: the keys of its item (empty: every item whole).
    items: Vec<QueryKey>,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub model: Model,
    pub level: Level,
    keys: Vec<QueryKey>,
    /// Some key is not supported for matching: Pending responses carry FF01.
    pub unsupported_keys: bool,
}

/// One match: the node at the query's level and those above it.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    pub patient: &'a Patient,
    pub study: Option<&'a Study>,
    pub series: Option<&'a Series>,
    pub instance: Option<&'a Arc<Instance>>,
}

impl<'a> Hit<'a> {
    /// The result objects at and below this match.
    pub fn instances(&self) -> Vec<&'a Arc<Instance>> {
        match (self.instance, self.series, self.study) {
            (Some(i), ..) => vec![i],
            (None, Some(s), _) => s.instances.iter().collect(),
            (None, None, Some(st)) => st.series.iter().flat_map(|s| s.instances.iter()).collect(),
            (None, None, None) => self.patient.studies.iter().flat_map(|st| st.series.iter()).flat_map(|s| s.instances.iter()).collect(),
        }
    }

    fn attrs(&self, level: Level) -> Option<&'a Attrs> {
        match level {
            // The patient as this study's objects carry it, where the match is below PATIENT.
            Level::Patient => Some(self.study.map(|s| &s.patient).unwrap_or(&self.patient.attrs)),
            Level::Study => self.study.map(|s| &s.attrs),
            Level::Series => self.series.map(|s| &s.attrs),
            Level::Image => self.instance.map(|i| &i.attrs),
        }
    }

    fn computed(&self, tag: Tag) -> Option<String> {
        let studies = || self.patient.studies.iter();
        let study_series = || self.study.into_iter().flat_map(|s| s.series.iter());
        let n = |v: usize| Some(v.to_string());
        match tag {
            t if t == tags::NUMBER_OF_PATIENT_RELATED_STUDIES => n(self.patient.studies.len()),
            t if t == tags::NUMBER_OF_PATIENT_RELATED_SERIES => n(studies().map(|s| s.series.len()).sum()),
            t if t == tags::NUMBER_OF_PATIENT_RELATED_INSTANCES => n(studies().flat_map(|s| s.series.iter()).map(|s| s.instances.len()).sum()),
            t if t == tags::NUMBER_OF_STUDY_RELATED_SERIES => n(self.study?.series.len()),
            t if t == tags::NUMBER_OF_STUDY_RELATED_INSTANCES => n(study_series().map(|s| s.instances.len()).sum()),
            t if t == tags::NUMBER_OF_SERIES_RELATED_INSTANCES => n(self.series?.instances.len()),
            t if t == tags::MODALITIES_IN_STUDY => {
                let all: BTreeSet<&str> = study_series().map(|s| s.attrs.text(tags::MODALITY)).filter(|m| !m.is_empty()).collect();
                Some(all.into_iter().collect::<Vec<_>>().join("\\"))
            }
            t if t == tags::SOP_CLASSES_IN_STUDY => {
                let all: BTreeSet<&str> = study_series().flat_map(|s| s.instances.iter()).map(|i| i.sop_class_uid.as_str()).collect();
                Some(all.into_iter().collect::<Vec<_>>().join("\\"))
            }
            _ => None,
        }
    }

    fn value(&self, key: &Key) -> Option<Attr> {
        if key.computed {
            return self.computed(key.tag).map(|v| Attr::Text(key.vr, v));
        }
        self.attrs(key.level)?.get(key.tag).cloned()
    }
}

impl Query {
    /// Read a C-FIND identifier of `model`.
    pub fn parse(identifier: &InMemDicomObject, model: Model, options: Options) -> Result<Query, QueryError> {
        Query::parse_as(identifier, model, options, true)
    }

    /// Read a query that need not name the levels above its own (QIDO-RS `/series`,
    /// `/instances`: PS3.18 10.6.1 searches every study): matched as `parse` matches, each
    /// upper level's keys included.
    pub fn parse_relational(identifier: &InMemDicomObject, model: Model, options: Options) -> Result<Query, QueryError> {
        Query::parse_as(identifier, model, options, false)
    }

    fn parse_as(identifier: &InMemDicomObject, model: Model, options: Options, hierarchical: bool) -> Result<Query, QueryError> {
        let level_text =
            identifier.get(tags::QUERY_RETRIEVE_LEVEL).and_then(|e| e.to_str().ok()).ok_or_else(|| mismatch("no Query/Retrieve Level (0008,0052)"))?;
        let level = Level::parse(&level_text).ok_or_else(|| mismatch("(0008,0052) is not PATIENT, STUDY, SERIES or IMAGE"))?;
        if level < model.top() {
            return Err(mismatch(format!("the {} model has no {} level", model.as_str(), level.as_str())));
        }
        let mut keys = Vec::new();
        let mut unsupported_keys = false;
        for e in identifier {
            let tag = e.tag();
            if tag == tags::SPECIFIC_CHARACTER_SET || tag == tags::QUERY_RETRIEVE_LEVEL || tag.element() == 0 {
                continue;
            }
            let key = parse_key(e, level, model, options)?;
            unsupported_keys |= key.def.is_none() && tag != RETRIEVE_AE_TITLE && tag != INSTANCE_AVAILABILITY;
            keys.push(key);
        }
        // Hierarchical: each level above the query's is named by one value of its unique key.
        let mut upper = model.top();
        while hierarchical && upper < level {
            let unique = upper.unique_key();
            let single = keys.iter().any(|k| k.tag == unique && matches!(k.matcher, Some(Matcher::Single { .. })));
            if !single {
                let name = keys::key(unique).map(|k| k.name).unwrap_or("?");
                return Err(mismatch(format!("{} query needs one {name} (hierarchical)", level.as_str())));
            }
            upper = next(upper);
        }
        Ok(Query { model, level, keys, unsupported_keys })
    }

    /// Read a C-MOVE or C-GET identifier: as a query, and the level's unique key must name
    /// what to retrieve: a single value or a list of UIDs (PS3.4 C.4.2.2.1), never a pattern
    /// (`**`, `?*` and the like match every patient as a lone `*` does) or a range.
    pub fn parse_retrieve(identifier: &InMemDicomObject, model: Model) -> Result<Query, QueryError> {
        let q = Query::parse(identifier, model, Options::default())?;
        let unique = q.level.unique_key();
        let names = |m: &Option<Matcher>| matches!(m, Some(Matcher::Single { .. } | Matcher::UidList(_)));
        if !q.keys.iter().any(|k| k.tag == unique && names(&k.matcher)) {
            let name = keys::key(unique).map(|k| k.name).unwrap_or("?");
            return Err(mismatch(format!("{} retrieve needs {name} value(s)", q.level.as_str())));
        }
        Ok(q)
    }

    /// The matches in `snapshot`, one at a time.
    pub fn matches<'a>(&'a self, snapshot: &'a Snapshot) -> Box<dyn Iterator<Item = Hit<'a>> + Send + 'a> {
        let keep = move |h: &Hit<'a>| self.keys.iter().all(|k| key_matches(k, h));
        match self.level {
            Level::Patient => Box::new(patients(snapshot).filter(keep)),
            Level::Study => Box::new(studies(snapshot).filter(keep)),
            Level::Series => Box::new(series(snapshot).filter(keep)),
            Level::Image => Box::new(images(snapshot).filter(keep)),
        }
    }

    /// The response identifier for `hit`: the requested keys (with the match's values, or
    /// zero-length where it has none or the key is not supported), the level's unique key, in
    /// UTF-8. `retrieve_ae` answers Retrieve AE Title.
    pub fn response(&self, hit: &Hit<'_>, retrieve_ae: &str) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        o.put(DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("ISO_IR 192")));
        o.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from(self.level.as_str())));
        for k in &self.keys {
            o.put(response_element(k, hit, retrieve_ae));
        }
        let unique = self.level.unique_key();
        if o.get(unique).is_none() {
            if let Some(def) = keys::key(unique) {
                let key = QueryKey { tag: unique, vr: def.vr, def: Some(def), matcher: None, items: Vec::new() };
                o.put(response_element(&key, hit, retrieve_ae));
            }
        }
        o
    }
}

fn patients(s: &Snapshot) -> impl Iterator<Item = Hit<'_>> + Send {
    s.patients.iter().map(|p| Hit { patient: p, study: None, series: None, instance: None })
}

fn studies(s: &Snapshot) -> impl Iterator<Item = Hit<'_>> + Send {
    patients(s).flat_map(|h| h.patient.studies.iter().map(move |st| Hit { study: Some(st), ..h }))
}

fn series(s: &Snapshot) -> impl Iterator<Item = Hit<'_>> + Send {
    studies(s).flat_map(|h| h.study.into_iter().flat_map(|st| st.series.iter()).map(move |se| Hit { series: Some(se), ..h }))
}

fn images(s: &Snapshot) -> impl Iterator<Item = Hit<'_>> + Send {
    series(s).flat_map(|h| h.series.into_iter().flat_map(|se| se.instances.iter()).map(move |i| Hit { instance: Some(i), ..h }))
}

fn next(level: Level) -> Level {
    match level {
        Level::Patient => Level::Study,
        Level::Study => Level::Series,
        Level::Series | Level::Image => Level::Image,
    }
}

fn parse_key(e: &DataElement<InMemDicomObject>, level: Level, model: Model, options: Options) -> Result<QueryKey, QueryError> {
    let tag = e.tag();
    // A key of the query's level or above (the patient's keys are in every model's study).
    let def = keys::key(tag).filter(|d| d.level <= level && (d.level >= model.top() || d.level == Level::Patient));
    let vr = def.map(|d| d.vr).unwrap_or(e.vr());
    let at = || format!("({:04X},{:04X})", tag.group(), tag.element());
    match e.value() {
        Value::Sequence(seq) => {
            let mut items = match seq.items().first() {
                Some(item) => item_keys(item, options, &at())?,
                None => Vec::new(),
            };
            let def = def.filter(|d| d.vr == VR::SQ);
            if def.is_none() {
                items.iter_mut().for_each(unmatched);
            }
            Ok(QueryKey { tag, vr: VR::SQ, def, matcher: None, items })
        }
        _ => {
            let value = match e.to_str() {
                Ok(v) => v.to_string(),
                Err(_) => String::new(),
            };
            let def = def.filter(|d| d.vr != VR::SQ);
            let matcher = match def {
                Some(d) => {
                    let m = Matcher::parse(keys::kind(d.vr), &value, options).map_err(|m| unable(format!("{} {}: {m}", at(), d.name)))?;
                    (m != Matcher::Universal).then_some(m)
                }
                None => None,
            };
            Ok(QueryKey { tag, vr, def, matcher, items: Vec::new() })
        }
    }
}

/// The keys of a sequence key's item (PS3.4 C.2.2.2.6), a sequence among them with its own.
fn item_keys(item: &InMemDicomObject, options: Options, at: &str) -> Result<Vec<QueryKey>, QueryError> {
    let mut out = Vec::new();
    for ie in item {
        if ie.tag().element() == 0 {
            continue;
        }
        out.push(match ie.value() {
            Value::Sequence(seq) => {
                let items = match seq.items().first() {
                    Some(i) => item_keys(i, options, at)?,
                    None => Vec::new(),
                };
                QueryKey { tag: ie.tag(), vr: VR::SQ, def: None, matcher: None, items }
            }
            _ => {
                let value = ie.to_str().map(|s| s.to_string()).unwrap_or_default();
                let matcher = Matcher::parse(keys::kind(ie.vr()), &value, options).map_err(|m| unable(format!("{at} item {}: {m}", tag_text(ie.tag()))))?;
                QueryKey { tag: ie.tag(), vr: ie.vr(), def: None, matcher: (matcher != Matcher::Universal).then_some(matcher), items: Vec::new() }
            }
        });
    }
    Ok(out)
}

fn unmatched(k: &mut QueryKey) {
    k.matcher = None;
    k.items.iter_mut().for_each(unmatched);
}

/// Universal matching, in the key and all its items' keys.
fn universal(k: &QueryKey) -> bool {
    k.matcher.is_none() && k.items.iter().all(universal)
}

fn tag_text(t: Tag) -> String {
    format!("({:04X},{:04X})", t.group(), t.element())
}

fn key_matches(k: &QueryKey, hit: &Hit<'_>) -> bool {
    let Some(def) = k.def else { return true };
    if universal(k) {
        return true;
    }
    match hit.value(def) {
        Some(Attr::Text(_, v)) => k.matcher.as_ref().is_none_or(|m| m.matches(keys::kind(def.vr), &v)),
        Some(Attr::Items(items)) => items.iter().any(|item| item_matches(&k.items, item)),
        // A candidate without the attribute matches only universal matching.
        None => false,
    }
}

/// An item matches when each of its keys does; a sequence key, when one of its items does.
fn item_matches(wanted: &[QueryKey], item: &[(Tag, Attr)]) -> bool {
    wanted.iter().filter(|k| !universal(k)).all(|k| match item.iter().find(|(t, _)| *t == k.tag).map(|(_, a)| a) {
        Some(Attr::Text(vr, v)) => k.matcher.as_ref().is_none_or(|m| m.matches(keys::kind(*vr), v)),
        Some(Attr::Items(items)) => items.iter().any(|i| item_matches(&k.items, i)),
        None => false,
    })
}

/// A sequence in a response: the items that match `wanted`, each with the requested item keys
/// (every attribute it has when none is named); a requested key an item lacks, zero-length.
fn sequence(tag: Tag, wanted: &[QueryKey], items: &[Item]) -> DataElement<InMemDicomObject> {
    let out: Vec<InMemDicomObject> = items
        .iter()
        .filter(|item| item_matches(wanted, item))
        .map(|item| {
            let mut o = InMemDicomObject::new_empty();
            for (t, attr) in item {
                let ik = wanted.iter().find(|ik| ik.tag == *t);
                if ik.is_none() && !wanted.is_empty() {
                    continue;
                }
                o.put(match attr {
                    Attr::Text(vr, v) => DataElement::new(*t, *vr, PrimitiveValue::from(v.as_str())),
                    Attr::Items(sub) => sequence(*t, ik.map(|ik| ik.items.as_slice()).unwrap_or(&[]), sub),
                });
            }
            let missing: Vec<&QueryKey> = wanted.iter().filter(|ik| o.get(ik.tag).is_none()).collect();
            for ik in missing {
                o.put(empty(ik.tag, ik.vr));
            }
            o
        })
        .collect();
    DataElement::new(tag, VR::SQ, DataSetSequence::new(out, Length::UNDEFINED))
}

/// A zero-length answer: no value, or a sequence of no items.
fn empty(tag: Tag, vr: VR) -> DataElement<InMemDicomObject> {
    match vr {
        VR::SQ => DataElement::new(tag, VR::SQ, DataSetSequence::new(Vec::<InMemDicomObject>::new(), Length::UNDEFINED)),
        vr => DataElement::new(tag, vr, PrimitiveValue::Empty),
    }
}

fn response_element(k: &QueryKey, hit: &Hit<'_>, retrieve_ae: &str) -> DataElement<InMemDicomObject> {
    let text = |vr: VR, v: &str| {
        if v.is_empty() {
            DataElement::new(k.tag, vr, PrimitiveValue::Empty)
        } else {
            DataElement::new(k.tag, vr, PrimitiveValue::Strs(v.split('\\').map(str::to_string).collect()))
        }
    };
    if k.tag == RETRIEVE_AE_TITLE {
        return text(VR::AE, retrieve_ae);
    }
    if k.tag == INSTANCE_AVAILABILITY {
        return text(VR::CS, "ONLINE");
    }
    let Some(def) = k.def else { return empty(k.tag, k.vr) };
    match hit.value(def) {
        Some(Attr::Text(vr, v)) => text(vr, &v),
        Some(Attr::Items(items)) => sequence(k.tag, &k.items, &items),
        None => empty(k.tag, def.vr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::dataset::put;

    fn object(patient: &str, name: &str, study: &str, date: &str, accession: &str, modality: &str, sop: &str) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, tags::PATIENT_ID, VR::LO, patient);
        put(&mut o, tags::PATIENT_NAME, VR::PN, name);
        put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, study);
        put(&mut o, tags::STUDY_DATE, VR::DA, date);
        put(&mut o, tags::ACCESSION_NUMBER, VR::SH, accession);
        put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &format!("{study}.{}", if modality == "SR" { 1 } else { 2 }));
        put(&mut o, tags::MODALITY, VR::CS, modality);
        put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop);
        put(&mut o, tags::SOP_CLASS_UID, VR::UI, if modality == "SR" { "1.2.840.10008.5.1.4.1.1.88.34" } else { "1.2.840.10008.5.1.4.1.1.7" });
        if modality == "SR" {
            let mut code = InMemDicomObject::new_empty();
            put(&mut code, tags::CODE_VALUE, VR::SH, "126000");
            put(&mut code, tags::CODING_SCHEME_DESIGNATOR, VR::SH, "DCM");
            put(&mut code, tags::CODE_MEANING, VR::LO, "Imaging Measurement Report");
            o.put(DataElement::new(tags::CONCEPT_NAME_CODE_SEQUENCE, VR::SQ, DataSetSequence::new(vec![code], Length::UNDEFINED)));
        }
        o
    }

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.insert_test(&object("P1", "Müller^Anna", "1.1", "20260105", "A1", "SR", "1.1.9.1"), "a");
        s.insert_test(&object("P1", "Müller^Anna", "1.1", "20260105", "A1", "OT", "1.1.9.2"), "b");
        s.insert_test(&object("P2", "DOE^JOHN", "2.1", "20261130", "A2", "SR", "2.1.9.1"), "c");
        s.insert_test(&object("P2", "DOE^JOHN", "2.2", "20261201", "A3", "SR", "2.2.9.1"), "d");
        s
    }

    fn ident(level: &str, keys: &[(Tag, VR, &str)]) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, tags::QUERY_RETRIEVE_LEVEL, VR::CS, level);
        for (t, vr, v) in keys {
            if v.is_empty() {
                o.put(DataElement::new(*t, *vr, PrimitiveValue::Empty));
            } else {
                put(&mut o, *t, *vr, v);
            }
        }
        o
    }

    fn find(model: Model, level: &str, keys: &[(Tag, VR, &str)]) -> Result<Vec<InMemDicomObject>, QueryError> {
        let s = snapshot();
        let q = Query::parse(&ident(level, keys), model, Options::default())?;
        Ok(q.matches(&s).map(|h| q.response(&h, "TRIAGE")).collect())
    }

    fn texts(rs: &[InMemDicomObject], tag: Tag) -> Vec<String> {
        rs.iter().map(|r| r.get(tag).map(|e| e.to_str().unwrap().to_string()).unwrap_or_else(|| "<absent>".into())).collect()
    }

    #[test]
    fn study_level_matching_of_every_kind() {
        let s = |keys: &[(Tag, VR, &str)]| find(Model::StudyRoot, "STUDY", keys).unwrap();
        let uid = |rs: Vec<InMemDicomObject>| texts(&rs, tags::STUDY_INSTANCE_UID);
        assert_eq!(uid(s(&[(tags::STUDY_INSTANCE_UID, VR::UI, "")])), ["1.1", "2.1", "2.2"], "universal");
        assert_eq!(uid(s(&[(tags::ACCESSION_NUMBER, VR::SH, "A2")])), ["2.1"], "single value");
        assert_eq!(uid(s(&[(tags::STUDY_INSTANCE_UID, VR::UI, "2.2\\1.1")])), ["1.1", "2.2"], "UID list");
        assert_eq!(uid(s(&[(tags::PATIENT_NAME, VR::PN, "mül*")])), ["1.1"], "wild card, case folded, not ASCII");
        assert_eq!(uid(s(&[(tags::PATIENT_NAME, VR::PN, "DOE^JOH?")])), ["2.1", "2.2"]);
        assert_eq!(uid(s(&[(tags::STUDY_DATE, VR::DA, "20261130-")])), ["2.1", "2.2"], "open range");
        assert_eq!(uid(s(&[(tags::STUDY_DATE, VR::DA, "-20261130")])), ["1.1", "2.1"]);
        assert_eq!(uid(s(&[(tags::STUDY_DATE, VR::DA, "20261201")])), ["2.2"]);
        assert_eq!(uid(s(&[(tags::MODALITIES_IN_STUDY, VR::CS, "OT")])), ["1.1"], "computed key matched");
        assert!(s(&[(tags::STUDY_DESCRIPTION, VR::LO, "x")]).is_empty(), "no value matches only universal");
    }

    #[test]
    fn responses_hold_the_requested_keys_and_the_unique_key_only() {
        let rs = find(
            Model::StudyRoot,
            "STUDY",
            &[
                (tags::PATIENT_ID, VR::LO, "P1"),
                (tags::MODALITIES_IN_STUDY, VR::CS, ""),
                (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, ""),
                (tags::STUDY_DESCRIPTION, VR::LO, ""),
                (tags::RETRIEVE_AE_TITLE, VR::AE, ""),
            ],
        )
        .unwrap();
        assert_eq!(rs.len(), 1);
        let r = &rs[0];
        let t = |tag| r.get(tag).map(|e| e.to_str().unwrap().to_string());
        assert_eq!(t(tags::MODALITIES_IN_STUDY).as_deref(), Some("OT\\SR"));
        assert_eq!(t(tags::NUMBER_OF_STUDY_RELATED_INSTANCES).as_deref(), Some("2"));
        assert_eq!(t(tags::STUDY_DESCRIPTION).as_deref(), Some(""), "no value: zero length");
        assert_eq!(t(tags::STUDY_INSTANCE_UID).as_deref(), Some("1.1"), "the unique key, unrequested");
        assert_eq!(t(tags::RETRIEVE_AE_TITLE).as_deref(), Some("TRIAGE"));
        assert_eq!(t(tags::SPECIFIC_CHARACTER_SET).as_deref(), Some("ISO_IR 192"));
        assert!(r.get(tags::PATIENT_NAME).is_none(), "not requested, not returned");
        assert_eq!(r.iter().count(), 8);
    }

    #[test]
    fn hierarchical_levels_need_the_keys_above_them() {
        let rs = find(
            Model::StudyRoot,
            "SERIES",
            &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.1"), (tags::MODALITY, VR::CS, ""), (tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, "")],
        )
        .unwrap();
        assert_eq!(texts(&rs, tags::MODALITY), ["SR", "OT"]);
        let e = find(Model::StudyRoot, "SERIES", &[(tags::MODALITY, VR::CS, "SR")]).unwrap_err();
        assert_eq!(e.status, Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS);
        assert!(e.comment.contains("StudyInstanceUID"), "{}", e.comment);
        let e = find(Model::StudyRoot, "PATIENT", &[]).unwrap_err();
        assert!(e.comment.contains("no PATIENT level"));
        assert!(e.comment.len() <= 64);
        let rs = find(Model::PatientRoot, "PATIENT", &[(tags::PATIENT_ID, VR::LO, ""), (tags::NUMBER_OF_PATIENT_RELATED_STUDIES, VR::IS, "")]).unwrap();
        assert_eq!(texts(&rs, tags::NUMBER_OF_PATIENT_RELATED_STUDIES), ["1", "2"]);
        assert!(find(Model::PatientRoot, "STUDY", &[(tags::STUDY_DATE, VR::DA, "")]).is_err(), "a patient root study query names its patient");
        let rs = find(
            Model::PatientRoot,
            "IMAGE",
            &[
                (tags::PATIENT_ID, VR::LO, "P2"),
                (tags::STUDY_INSTANCE_UID, VR::UI, "2.2"),
                (tags::SERIES_INSTANCE_UID, VR::UI, "2.2.1"),
                (tags::SOP_CLASS_UID, VR::UI, ""),
            ],
        )
        .unwrap();
        assert_eq!(texts(&rs, tags::SOP_INSTANCE_UID), ["2.2.9.1"]);
    }

    #[test]
    fn a_relational_query_searches_every_study_with_the_upper_keys_matched() {
        let s = snapshot();
        let series = |keys: &[(Tag, VR, &str)]| {
            let q = Query::parse_relational(&ident("SERIES", keys), Model::StudyRoot, Options::default()).unwrap();
            texts(&q.matches(&s).map(|h| q.response(&h, "T")).collect::<Vec<_>>(), tags::SERIES_INSTANCE_UID)
        };
        assert_eq!(series(&[(tags::MODALITY, VR::CS, "SR")]), ["1.1.1", "2.1.1", "2.2.1"], "no study named: all of them");
        assert_eq!(series(&[(tags::MODALITY, VR::CS, "SR"), (tags::PATIENT_NAME, VR::PN, "DOE*")]), ["2.1.1", "2.2.1"], "a patient key matched");
        assert_eq!(series(&[(tags::STUDY_DATE, VR::DA, "20261201-")]), ["2.2.1"], "a study key matched");
        assert!(Query::parse(&ident("SERIES", &[(tags::MODALITY, VR::CS, "SR")]), Model::StudyRoot, Options::default()).is_err(), "C-FIND stays hierarchical");
    }

    #[test]
    fn sequence_keys_match_item_by_item() {
        let image = |code: &str| {
            let s = snapshot();
            let mut id = ident("IMAGE", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.1"), (tags::SERIES_INSTANCE_UID, VR::UI, "")]);
            let mut item = InMemDicomObject::new_empty();
            put(&mut item, tags::CODE_VALUE, VR::SH, code);
            item.put(DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::Empty));
            id.put(DataElement::new(tags::CONCEPT_NAME_CODE_SEQUENCE, VR::SQ, DataSetSequence::new(vec![item], Length::UNDEFINED)));
            // A SERIES UID universal at IMAGE level is not the single value hierarchy needs.
            assert!(Query::parse(&id, Model::StudyRoot, Options::default()).is_err());
            put(&mut id, tags::SERIES_INSTANCE_UID, VR::UI, "1.1.1");
            let q = Query::parse(&id, Model::StudyRoot, Options::default()).unwrap();
            q.matches(&s).map(|h| q.response(&h, "T")).collect::<Vec<_>>()
        };
        let rs = image("126000");
        assert_eq!(rs.len(), 1);
        let item = &rs[0].get(tags::CONCEPT_NAME_CODE_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(item.get(tags::CODE_MEANING).unwrap().to_str().unwrap(), "Imaging Measurement Report");
        assert!(item.get(tags::CODING_SCHEME_DESIGNATOR).is_none(), "only the requested item keys");
        assert!(image("999").is_empty());
    }

    /// One study's AI results: a report and a Parametric Map naming their algorithm, and a
    /// rejection note a day later.
    fn results() -> Snapshot {
        let seq = |items: Vec<InMemDicomObject>| DataSetSequence::new(items, Length::UNDEFINED);
        let code = |value: &str, meaning: &str| {
            let mut c = InMemDicomObject::new_empty();
            put(&mut c, tags::CODE_VALUE, VR::SH, value);
            put(&mut c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, if value.starts_with("Newcode") { "99IHE" } else { "DCM" });
            put(&mut c, tags::CODE_MEANING, VR::LO, meaning);
            c
        };
        let algorithm = || {
            let mut a = InMemDicomObject::new_empty();
            put(&mut a, tags::MANUFACTURER, VR::LO, "triage-node project");
            put(&mut a, tags::MANUFACTURER_MODEL_NAME, VR::LO, "demo-nodule");
            put(&mut a, tags::SOFTWARE_VERSIONS, VR::LO, "1.0.0");
            put(&mut a, tags::DEVICE_UID, VR::UI, "2.25.42");
            a.put(DataElement::new(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, VR::SQ, seq(vec![code("Newcode1", "Processing Algorithm")])));
            a
        };
        let mut s = Snapshot::default();
        for (n, class, modality, date, time) in [
            (1, "1.2.840.10008.5.1.4.1.1.88.34", "SR", "20260105", "101500.000"),
            (2, "1.2.840.10008.5.1.4.1.1.30", "OT", "20260105", "101501.000"),
            (3, "1.2.840.10008.5.1.4.1.1.88.59", "KO", "20260106", "080000.000"),
        ] {
            let mut o = object("P3", "ROE^JANE", "3.1", "20260105", "A9", modality, &format!("3.1.{n}.1"));
            put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &format!("3.1.{n}"));
            put(&mut o, tags::SOP_CLASS_UID, VR::UI, class);
            put(&mut o, tags::CONTENT_DATE, VR::DA, date);
            put(&mut o, tags::CONTENT_TIME, VR::TM, time);
            match n {
                1 => o.put(DataElement::new(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, VR::SQ, seq(vec![algorithm()]))),
                2 => {
                    put(&mut o, tags::CONTENT_LABEL, VR::CS, "NODULE_MAP");
                    o.put(DataElement::new(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, VR::SQ, seq(vec![algorithm()])))
                }
                _ => o.put(DataElement::new(tags::CONCEPT_NAME_CODE_SEQUENCE, VR::SQ, seq(vec![code("113001", "Rejected for Quality Reasons")]))),
            };
            s.insert_test(&o, &format!("r{n}"));
        }
        s
    }

    #[test]
    fn ai_result_keys_match_at_image_level() {
        let s = results();
        let image = |series: u32, keys: Vec<DataElement<InMemDicomObject>>| {
            let mut id = ident("IMAGE", &[(tags::STUDY_INSTANCE_UID, VR::UI, "3.1"), (tags::SERIES_INSTANCE_UID, VR::UI, &format!("3.1.{series}"))]);
            keys.into_iter().for_each(|k| {
                id.put(k);
            });
            let q = Query::parse(&id, Model::StudyRoot, Options::default()).unwrap();
            assert!(!q.unsupported_keys);
            q.matches(&s).map(|h| q.response(&h, "T")).collect::<Vec<_>>()
        };
        let text = |t: Tag, v: &str| DataElement::new(t, VR::UI, PrimitiveValue::from(v));
        let typed = |t: Tag, vr: VR, v: &str| DataElement::new(t, vr, PrimitiveValue::from(v));
        // SOP Class UID: a list of UIDs.
        let pm_or_kos = "1.2.840.10008.5.1.4.1.1.30\\1.2.840.10008.5.1.4.1.1.88.59";
        assert_eq!(image(2, vec![text(tags::SOP_CLASS_UID, pm_or_kos)]).len(), 1);
        assert_eq!(image(3, vec![text(tags::SOP_CLASS_UID, pm_or_kos)]).len(), 1);
        assert!(image(1, vec![text(tags::SOP_CLASS_UID, pm_or_kos)]).is_empty());
        // Content Date and Time: ranges.
        assert_eq!(image(3, vec![typed(tags::CONTENT_DATE, VR::DA, "20260106-")]).len(), 1);
        assert!(image(1, vec![typed(tags::CONTENT_DATE, VR::DA, "20260106-")]).is_empty());
        assert_eq!(image(2, vec![typed(tags::CONTENT_TIME, VR::TM, "1015-101501")]).len(), 1);
        assert!(image(2, vec![typed(tags::CONTENT_TIME, VR::TM, "-1014")]).is_empty());
        // Content Label: wild card; a KOS has none, so matches only universally.
        let rs = image(2, vec![typed(tags::CONTENT_LABEL, VR::CS, "NODULE*")]);
        assert_eq!(rs[0].get(tags::CONTENT_LABEL).unwrap().to_str().unwrap(), "NODULE_MAP");
        assert!(image(3, vec![typed(tags::CONTENT_LABEL, VR::CS, "*")]).len() == 1 && image(3, vec![typed(tags::CONTENT_LABEL, VR::CS, "N*")]).is_empty());

        // The algorithm: Contributing Equipment Sequence, matched through its nested Purpose of
        // Reference; the matching item comes back with the requested keys only.
        let equipment = |model: &str, purpose: &str| {
            let mut p = InMemDicomObject::new_empty();
            put(&mut p, tags::CODE_VALUE, VR::SH, purpose);
            let mut item = InMemDicomObject::new_empty();
            put(&mut item, tags::MANUFACTURER_MODEL_NAME, VR::LO, model);
            item.put(DataElement::new(tags::SOFTWARE_VERSIONS, VR::LO, PrimitiveValue::Empty));
            item.put(DataElement::new(tags::DEVICE_SERIAL_NUMBER, VR::LO, PrimitiveValue::Empty));
            item.put(DataElement::new(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, VR::SQ, DataSetSequence::new(vec![p], Length::UNDEFINED)));
            DataElement::new(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, VR::SQ, DataSetSequence::new(vec![item], Length::UNDEFINED))
        };
        let rs = image(1, vec![equipment("demo-*", "Newcode1")]);
        assert_eq!(rs.len(), 1);
        let item = &rs[0].get(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE).unwrap().items().unwrap()[0];
        let t = |o: &InMemDicomObject, tag| o.get(tag).unwrap().to_str().unwrap().to_string();
        assert_eq!((t(item, tags::MANUFACTURER_MODEL_NAME), t(item, tags::SOFTWARE_VERSIONS)), ("demo-nodule".into(), "1.0.0".into()));
        assert_eq!(t(item, tags::DEVICE_SERIAL_NUMBER), "", "requested, absent: zero-length");
        assert!(item.get(tags::MANUFACTURER).is_none() && item.get(tags::DEVICE_UID).is_none(), "not requested");
        let purpose = &item.get(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(t(purpose, tags::CODE_VALUE), "Newcode1");
        assert!(purpose.get(tags::CODE_MEANING).is_none());
        assert!(image(1, vec![equipment("other", "Newcode1")]).is_empty());
        assert!(image(1, vec![equipment("demo-nodule", "121322")]).is_empty(), "the nested key is matched too");
        assert!(image(3, vec![equipment("demo-nodule", "Newcode1")]).is_empty(), "the rejection note names no algorithm");
        // Universal (an empty sequence): every item whole; none for an object without it.
        let all = DataElement::new(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, VR::SQ, DataSetSequence::new(Vec::<InMemDicomObject>::new(), Length::UNDEFINED));
        let rs = image(2, vec![all.clone()]);
        let item = &rs[0].get(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(t(item, tags::DEVICE_UID), "2.25.42");
        assert_eq!(t(&item.get(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE).unwrap().items().unwrap()[0], tags::CODE_MEANING), "Processing Algorithm");
        assert!(image(3, vec![all])[0].get(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE).unwrap().items().unwrap().is_empty());
        // The rejection note's title.
        let mut title = InMemDicomObject::new_empty();
        put(&mut title, tags::CODE_VALUE, VR::SH, "113001");
        let rs = image(3, vec![DataElement::new(tags::CONCEPT_NAME_CODE_SEQUENCE, VR::SQ, DataSetSequence::new(vec![title], Length::UNDEFINED))]);
        assert_eq!(rs.len(), 1);
    }

    #[test]
    fn objects_a_rejection_note_names_are_neither_found_nor_retrieved() {
        use super::super::index::tests::note;
        let mut s = snapshot();
        s.insert_test(&note("1.1", "1.1.7", "1.1.7.1", "113001", &[("1.1", "1.1.1", "1.1.9.1")], &["1.1.9.1"]), "note");
        let q = Query::parse(
            &ident(
                "STUDY",
                &[
                    (tags::STUDY_INSTANCE_UID, VR::UI, "1.1"),
                    (tags::MODALITIES_IN_STUDY, VR::CS, ""),
                    (tags::NUMBER_OF_STUDY_RELATED_SERIES, VR::IS, ""),
                    (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, ""),
                ],
            ),
            Model::StudyRoot,
            Options::default(),
        )
        .unwrap();
        let rs: Vec<_> = q.matches(&s).map(|h| q.response(&h, "T")).collect();
        assert_eq!(texts(&rs, tags::MODALITIES_IN_STUDY), ["KO\\OT"], "the report's series is gone");
        assert_eq!(
            (texts(&rs, tags::NUMBER_OF_STUDY_RELATED_SERIES), texts(&rs, tags::NUMBER_OF_STUDY_RELATED_INSTANCES)),
            (vec!["2".into()], vec!["2".into()])
        );
        let image = |series: &str| {
            let id =
                ident("IMAGE", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.1"), (tags::SERIES_INSTANCE_UID, VR::UI, series), (tags::SOP_INSTANCE_UID, VR::UI, "")]);
            let q = Query::parse(&id, Model::StudyRoot, Options::default()).unwrap();
            q.matches(&s).map(|h| q.response(&h, "T")).collect::<Vec<_>>()
        };
        assert!(image("1.1.1").is_empty());
        assert_eq!(texts(&image("1.1.7"), tags::SOP_INSTANCE_UID), ["1.1.7.1"], "the note stays queryable");
        let retrieved = |level: &str, keys: &[(Tag, VR, &str)]| {
            let q = Query::parse_retrieve(&ident(level, keys), Model::StudyRoot).unwrap();
            q.matches(&s).flat_map(|h| h.instances()).map(|i| i.path.clone()).collect::<Vec<_>>()
        };
        assert_eq!(retrieved("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.1")]), ["b", "note"]);
        let by_uid = [(tags::STUDY_INSTANCE_UID, VR::UI, "1.1"), (tags::SERIES_INSTANCE_UID, VR::UI, "1.1.1"), (tags::SOP_INSTANCE_UID, VR::UI, "1.1.9.1")];
        assert!(retrieved("IMAGE", &by_uid).is_empty(), "not even by its own UID");
    }

    #[test]
    fn bad_values_and_unknown_keys() {
        let e = find(Model::StudyRoot, "STUDY", &[(tags::STUDY_DATE, VR::DA, "2026-01-01")]).unwrap_err();
        assert_eq!(e.status, Status::UNABLE_TO_PROCESS);
        assert!(e.comment.starts_with("(0008,0020) StudyDate"), "{}", e.comment);
        assert!(find(Model::StudyRoot, "STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.*")]).is_err(), "no wild cards in UIDs");
        assert!(find(Model::StudyRoot, "BOGUS", &[]).is_err());
        let s = snapshot();
        let q = Query::parse(
            &ident("STUDY", &[(tags::INSTITUTION_NAME, VR::LO, "X"), (tags::SOP_INSTANCE_UID, VR::UI, "9")]),
            Model::StudyRoot,
            Options::default(),
        )
        .unwrap();
        assert!(q.unsupported_keys);
        let rs: Vec<_> = q.matches(&s).map(|h| q.response(&h, "T")).collect();
        assert_eq!(rs.len(), 3, "keys the index does not hold at this level are not matched");
        assert_eq!(texts(&rs, tags::INSTITUTION_NAME), ["", "", ""]);
        assert_eq!(texts(&rs, tags::SOP_INSTANCE_UID), ["", "", ""]);
    }

    #[test]
    fn retrieve_identifiers_name_what_to_retrieve() {
        let s = snapshot();
        let q = Query::parse_retrieve(&ident("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.1\\2.2")]), Model::StudyRoot).unwrap();
        let objects: Vec<String> = q.matches(&s).flat_map(|h| h.instances()).map(|i| i.path.clone()).collect();
        assert_eq!(objects, ["a", "b", "d"]);
        assert!(Query::parse_retrieve(&ident("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "")]), Model::StudyRoot).is_err());
        let q = Query::parse_retrieve(&ident("PATIENT", &[(tags::PATIENT_ID, VR::LO, "P2")]), Model::PatientRoot).unwrap();
        assert_eq!(q.matches(&s).flat_map(|h| h.instances()).count(), 2);
        // A pattern that matches everyone is no name for what to retrieve; nor is any pattern.
        for pattern in ["*", "**", "?*", "*?", "P*", "??"] {
            assert!(Query::parse_retrieve(&ident("PATIENT", &[(tags::PATIENT_ID, VR::LO, pattern)]), Model::PatientRoot).is_err(), "{pattern}");
        }
        assert!(Query::parse_retrieve(&ident("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.*")]), Model::StudyRoot).is_err());
    }
}
