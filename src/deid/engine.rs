//! The de-identification engine: applies Table E.1-1 to a parsed data set, recursively through
//! sequences, with keyed pseudonyms, and returns the originals the re-identification map keeps.
//!
//! Owns: value replacement per action and VR, the pseudonym rules (UIDs, patient identity,
//! date shift), the private-attribute policy, the burned-in-annotation rule and the attributes
//! that declare what was done (PS3.15 E.1.1: Patient Identity Removed, De-identification Method
//! and its Code Sequence, Longitudinal Temporal Information Modified). Pure: no IO, no logging.

use std::collections::HashSet;

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use super::keys::Keys;
use super::table::{Action, ProfileOption, Table, BASIC_PROFILE_CODE, EDITION};
use crate::domain::{civil_from_days, days_from_civil};

const MAX_DEPTH: u32 = 64;
const DUMMY_TEXT: &str = "ANONYMIZED";
const DUMMY_DATE: &str = "19000101";
const SCRUBBED: &str = "***";

#[derive(Debug, thiserror::Error)]
pub enum DeidError {
    #[error("sequences nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("the data set lacks {0}")]
    Missing(&'static str),
}

/// A private attribute the site declares safe (Retain Safe Private Option): the block's
/// Private Creator and the element's low byte, in an odd group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePrivate {
    pub group: u16,
    pub creator: String,
    pub element: u8,
}

impl SafePrivate {
    /// `GGGG,CREATOR,EE` (hex group, creator text, hex low byte of the element).
    pub fn parse(raw: &str) -> Result<SafePrivate, String> {
        let parts: Vec<&str> = raw.splitn(3, ',').collect();
        let bad = || format!("{raw:?} is not GGGG,PRIVATE CREATOR,EE");
        if parts.len() != 3 {
            return Err(bad());
        }
        let group = u16::from_str_radix(parts[0].trim(), 16).map_err(|_| bad())?;
        let element = u8::from_str_radix(parts[2].trim(), 16).map_err(|_| bad())?;
        if group % 2 == 0 || parts[1].trim().is_empty() {
            return Err(bad());
        }
        Ok(SafePrivate { group, creator: parts[1].trim().to_string(), element })
    }
}

/// The identifying values kept, encrypted, in the re-identification map: what returning a
/// result into the original study needs (PS3.3 Patient and General Study modules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Originals {
    pub specific_character_set: Option<String>,
    pub patient_id: Option<String>,
    pub issuer_of_patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    pub accession_number: Option<String>,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub study_id: Option<String>,
    pub referring_physician_name: Option<String>,
    pub study_description: Option<String>,
    /// The original Frame of Reference UID (a map registered on the image needs it back).
    /// Absent in records sealed before it was kept: they open with None.
    #[serde(default)]
    pub frame_of_reference_uid: Option<String>,
}

/// What de-identifying one instance produced.
#[derive(Debug)]
pub struct Deidentified {
    pub object: InMemDicomObject,
    pub originals: Originals,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// Why the pixels may hold identifying text, when they may (Burned In Annotation).
    pub burned_in: Option<&'static str>,
    /// What content outside the header was not kept (SR content, an encapsulated document,
    /// waveforms, graphic annotations): the object is stored as its de-identified header.
    pub content_removed: Option<&'static str>,
}

/// Top-level attributes that hold an object's content rather than its header: free text,
/// names and dates in any form, which Table E.1-1 cannot reach (a PDF's bytes, a waveform's
/// annotations) or reaches only with options this node does not implement (Clean Structured
/// Content, Clean Graphics). They are removed, whatever the SOP class, and the instance is kept
/// as its de-identified header only.
const CONTENT: [(Tag, &str); 6] = [
    (tags::CONTENT_SEQUENCE, "header only: structured content (Content Sequence) not kept"),
    (tags::ENCAPSULATED_DOCUMENT, "header only: encapsulated document not kept"),
    (tags::WAVEFORM_SEQUENCE, "header only: waveform data not kept"),
    (tags::WAVEFORM_ANNOTATION_SEQUENCE, "header only: waveform annotations not kept"),
    (tags::GRAPHIC_ANNOTATION_SEQUENCE, "header only: graphic and text annotations not kept"),
    (tags::ANNOTATION_GROUP_SEQUENCE, "header only: annotation groups not kept"),
];

#[derive(Debug, Clone)]
pub struct Deidentifier {
    keys: Keys,
    options: Vec<ProfileOption>,
    safe_private: Vec<SafePrivate>,
    /// `method_json()`, computed once: it is recorded with every stored instance.
    method_json: String,
    /// Modalities whose absent Burned In Annotation counts as YES.
    burned_in_when_absent: Vec<String>,
}

/// The default of `deid.burned_in_when_absent` (config/default.toml says why).
pub const BURNED_IN_WHEN_ABSENT: [&str; 2] = ["CR", "US"];

/// Per-instance context: the patient the pseudonyms and date shift belong to, and the
/// identifying strings that Clean removes from free text.
struct Ctx<'a> {
    d: &'a Deidentifier,
    table: &'static Table,
    issuer: String,
    patient_id: String,
    shift_days: i64,
    scrub: Vec<String>,
    /// A non-image object (or one of a class this node does not know): its top-level sequences
    /// and long texts are read as Table E.1-1 reads a dummied sequence, every free text, name,
    /// date and time replaced.
    non_image: bool,
}

impl Deidentifier {
    /// The options this node implements; others (full dates, UIDs, clean pixel data, ...) are
    /// refused by configuration.
    pub const SUPPORTED: [ProfileOption; 6] = [
        ProfileOption::RetainSafePrivate,
        ProfileOption::RetainDeviceIdentity,
        ProfileOption::RetainInstitutionIdentity,
        ProfileOption::RetainPatientCharacteristics,
        ProfileOption::RetainLongitudinalModifiedDates,
        ProfileOption::CleanDescriptors,
    ];

    pub fn new(keys: Keys, mut options: Vec<ProfileOption>, safe_private: Vec<SafePrivate>) -> Deidentifier {
        options.retain(|o| Deidentifier::SUPPORTED.contains(o));
        if safe_private.is_empty() {
            options.retain(|o| *o != ProfileOption::RetainSafePrivate);
        }
        options.sort();
        options.dedup();
        let method_json = serde_json::json!({ "profile": EDITION, "options": options.iter().map(|o| o.code().0).collect::<Vec<_>>() }).to_string();
        let burned_in_when_absent = BURNED_IN_WHEN_ABSENT.iter().map(|m| m.to_string()).collect();
        Deidentifier { keys, options, safe_private, method_json, burned_in_when_absent }
    }

    /// Modalities (0008,0060) whose images may show identity when Burned In Annotation is absent.
    pub fn with_burned_in_when_absent(mut self, modalities: &[String]) -> Deidentifier {
        self.burned_in_when_absent = modalities.iter().map(|m| m.trim().to_ascii_uppercase()).collect();
        self
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn options(&self) -> &[ProfileOption] {
        &self.options
    }

    /// The De-identification Method (0012,0063) text: edition and options, at most 64 chars per value.
    pub fn method(&self) -> Vec<String> {
        let mut v = vec![format!("triage-node {EDITION} Basic Profile")];
        v.extend(self.options.iter().map(|o| o.code().1.trim_end_matches(" Option").chars().take(64).collect()));
        v
    }

    /// The method as recorded beside each instance and in its audit entry (no patient data).
    pub fn method_json(&self) -> &str {
        &self.method_json
    }

    /// De-identify `obj` (a data set without its File Meta Information).
    pub fn apply(&self, obj: InMemDicomObject) -> Result<Deidentified, DeidError> {
        let text = |tag: Tag| top_string(&obj, tag);
        let originals = Originals {
            specific_character_set: text(tags::SPECIFIC_CHARACTER_SET),
            patient_id: text(tags::PATIENT_ID),
            issuer_of_patient_id: text(tags::ISSUER_OF_PATIENT_ID),
            patient_name: text(tags::PATIENT_NAME),
            patient_birth_date: text(tags::PATIENT_BIRTH_DATE),
            patient_sex: text(tags::PATIENT_SEX),
            accession_number: text(tags::ACCESSION_NUMBER),
            study_instance_uid: text(tags::STUDY_INSTANCE_UID).ok_or(DeidError::Missing("Study Instance UID"))?,
            series_instance_uid: text(tags::SERIES_INSTANCE_UID).ok_or(DeidError::Missing("Series Instance UID"))?,
            sop_instance_uid: text(tags::SOP_INSTANCE_UID).ok_or(DeidError::Missing("SOP Instance UID"))?,
            study_date: text(tags::STUDY_DATE),
            study_time: text(tags::STUDY_TIME),
            study_id: text(tags::STUDY_ID),
            referring_physician_name: text(tags::REFERRING_PHYSICIAN_NAME),
            study_description: text(tags::STUDY_DESCRIPTION),
            frame_of_reference_uid: text(tags::FRAME_OF_REFERENCE_UID),
        };
        let sop_class_uid = text(tags::SOP_CLASS_UID).ok_or(DeidError::Missing("SOP Class UID"))?;
        let burned_in = burned_in_reason(&obj, &sop_class_uid, &self.burned_in_when_absent);
        let mut obj = obj;
        let mut content_removed = None;
        for (tag, reason) in CONTENT {
            if obj.remove_element(tag) {
                content_removed = content_removed.or(Some(reason));
            }
        }
        let non_image = crate::dicom::sop::storage_class(&sop_class_uid).is_none_or(|c| c.content != crate::dicom::sop::Content::Image);
        let issuer = originals.issuer_of_patient_id.clone().unwrap_or_default();
        let patient_id = originals.patient_id.clone().unwrap_or_default();
        let ctx = Ctx {
            d: self,
            table: Table::standard(),
            shift_days: self.keys.date_shift_days(&issuer, &patient_id),
            scrub: scrub_list(&obj),
            issuer,
            patient_id,
            non_image,
        };
        let mut object = ctx.process(obj, 0, false)?;
        // Table E.1-1 gives the Ethics Committee Name D (it is Type 1C: required when the
        // Approval Number is present) and the Approval Number X. A dummy name without its number
        // makes the Clinical Trial Subject module invalid, so the name goes with the number.
        if object.get(Tag(0x0012, 0x0082)).is_none() {
            object.remove_element(Tag(0x0012, 0x0081));
        }
        self.declare(&mut object);
        Ok(Deidentified {
            sop_class_uid,
            sop_instance_uid: self.keys.uid(&originals.sop_instance_uid),
            study_instance_uid: self.keys.uid(&originals.study_instance_uid),
            series_instance_uid: self.keys.uid(&originals.series_instance_uid),
            object,
            originals,
            burned_in,
            content_removed,
        })
    }

    /// PS3.15 E.1.1 item 6 and E.3.6: record that, and how, the instance was de-identified.
    fn declare(&self, obj: &mut InMemDicomObject) {
        obj.put(DataElement::new(tags::PATIENT_IDENTITY_REMOVED, VR::CS, PrimitiveValue::from("YES")));
        obj.put(DataElement::new(tags::DEIDENTIFICATION_METHOD, VR::LO, PrimitiveValue::Strs(self.method().into())));
        let code = |(value, meaning): (&str, &str)| {
            InMemDicomObject::from_element_iter([
                DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
                DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from("DCM")),
                DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
            ])
        };
        let items: Vec<InMemDicomObject> = std::iter::once(code(BASIC_PROFILE_CODE)).chain(self.options.iter().map(|o| code(o.code()))).collect();
        obj.put(DataElement::new(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED)));
        let temporal = if self.options.contains(&ProfileOption::RetainLongitudinalModifiedDates) { "MODIFIED" } else { "REMOVED" };
        obj.put(DataElement::new(tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, VR::CS, PrimitiveValue::from(temporal)));
    }
}

impl Ctx<'_> {
    /// `strict`: inside a sequence the table replaces with a dummy (D: Content Sequence and the
    /// like), where every free-text, name, date and time value is replaced, listed or not.
    fn process(&self, obj: InMemDicomObject, depth: u32, strict: bool) -> Result<InMemDicomObject, DeidError> {
        if depth > MAX_DEPTH {
            return Err(DeidError::TooDeep);
        }
        let kept_private = self.safe_private_tags(&obj);
        let remove_overlays = !self.d.options.contains(&ProfileOption::CleanGraphics);
        let mut out: Vec<InMemElement> = Vec::new();
        for elem in obj {
            let tag = elem.tag();
            if tag.element() == 0 && tag.group() != 0x0008 {
                continue; // group lengths (retired): stale after any change
            }
            // Command (0000) and File Meta Information (0002) elements have no place in a data
            // set; a sender that puts them there may put anything there (PS3.10 7.1).
            if tag.group() <= 0x0002 {
                continue;
            }
            if tag.group() % 2 == 1 {
                if kept_private.contains(&tag) {
                    out.push(elem);
                }
                continue;
            }
            // Overlay Data is removed (Table E.1-1); the rest of its repeating group would then
            // describe an overlay that is not there, so the whole group goes.
            if remove_overlays && (0x6000..=0x601E).contains(&tag.group()) {
                continue;
            }
            // The rule for an element comes from the dictionary's definition of its tag, never
            // from the VR the sender wrote: a value of unknown VR (UN), or of a VR its attribute
            // does not have (a sequence sent as OB, a UID as LO), is read again as the
            // attribute's VR, or as the sequence its bytes encode (PS3.5 6.2.2), so that it gets
            // the treatment of the same attribute sent with its VR; what cannot be read that
            // way is removed.
            let Some(elem) = conform_vr(elem) else { continue };
            let strict = strict || (depth == 0 && self.non_image && matches!(elem.vr(), VR::SQ | VR::LT | VR::ST | VR::UT | VR::UC));
            let action = match self.table.lookup(tag.group(), tag.element()) {
                Some(row) => Some(row.action(&self.d.options)),
                None => unlisted_action(tag, elem.vr(), depth, strict, self.d.options.contains(&ProfileOption::RetainLongitudinalModifiedDates)),
            };
            if let Some(replaced) = self.act(elem, action, depth, strict)? {
                out.push(replaced);
            }
        }
        Ok(InMemDicomObject::from_element_iter(out))
    }

    /// Apply one action to one element; `None` removes it. `action` is `None` for attributes
    /// the table does not list: they are kept, and sequences among them are still processed.
    fn act(&self, elem: InMemElement, action: Option<Action>, depth: u32, strict: bool) -> Result<Option<InMemElement>, DeidError> {
        let tag = elem.tag();
        let vr = elem.vr();
        let non_empty = !is_empty(&elem);
        // Patient identity becomes the keyed pseudonym wherever it appears (the Basic Profile's
        // Z and Z/D both allow a dummy value; ours is stable per patient).
        if tag == tags::PATIENT_ID {
            let id = elem.to_str().map(|s| s.trim().to_string()).unwrap_or_default();
            return Ok(Some(text_elem(tag, vr, &self.d.keys.patient_pseudonym(&self.issuer, &id))));
        }
        if tag == tags::PATIENT_NAME {
            let token = self.d.keys.patient_pseudonym(&self.issuer, &self.patient_id);
            return Ok(Some(text_elem(tag, vr, &format!("ANON^{token}"))));
        }
        let resolved = match action {
            None | Some(Action::K) => return self.items(elem, depth, strict).map(Some),
            Some(Action::X) => return Ok(None),
            Some(Action::Z) => Action::Z,
            Some(Action::D) => Action::D,
            Some(Action::C) => Action::C,
            Some(Action::U) => Action::U,
            // Combined actions, resolved without per-IOD type tables so that the output stays as
            // conformant as the input: a present value is replaced by a dummy (what a Type 1
            // attribute needs), an empty one stays empty (Type 2), and X/Z keeps an empty element.
            Some(Action::ZD | Action::XD | Action::XZD) => {
                if non_empty {
                    Action::D
                } else {
                    Action::Z
                }
            }
            // An empty sequence is invalid where a sequence is optional (Type 3 needs an item),
            // so X/Z removes sequences, except the one listed X/Z sequence that is Type 2 where
            // it is used (Acquisition Context, PS3.3 C.7.6.14), and empties other values (valid
            // for Type 2 and 3 alike).
            Some(Action::XZ) if vr == VR::SQ && tag != tags::ACQUISITION_CONTEXT_SEQUENCE => return Ok(None),
            Some(Action::XZ) => Action::Z,
            // X unless Z or replacing the contained UIDs is needed: keep the sequence, whose
            // items' UIDs (themselves U in the table) are replaced by the recursion.
            Some(Action::XZU) => return self.items(elem, depth, strict).map(Some),
        };
        Ok(Some(match resolved {
            Action::Z => empty_elem(tag, vr),
            Action::U => self.replace_uids(elem),
            Action::C => self.clean(elem, depth)?,
            _ => self.dummy(elem, depth)?,
        }))
    }

    /// Process a sequence's items (non-sequences are returned as they are).
    fn items(&self, elem: InMemElement, depth: u32, strict: bool) -> Result<InMemElement, DeidError> {
        if elem.vr() != VR::SQ {
            return Ok(elem);
        }
        let (header, value) = elem.into_parts();
        let value = match value {
            Value::Sequence(seq) => {
                let mut items = Vec::with_capacity(seq.items().len());
                for item in seq.items().iter().cloned() {
                    items.push(self.process(item, depth + 1, strict)?);
                }
                Value::Sequence(DataSetSequence::new(items, Length::UNDEFINED))
            }
            other => other,
        };
        Ok(DataElement::new(header.tag, header.vr, value))
    }

    /// Every UID value becomes its keyed replacement, except UIDs the standard itself defines
    /// (`1.2.840.10008.*`: SOP classes, transfer syntaxes, coding schemes, well-known frames of
    /// reference), which identify no one and must keep their meaning.
    fn replace_uids(&self, elem: InMemElement) -> InMemElement {
        let tag = elem.tag();
        let uids: Vec<String> = match elem.to_multi_str() {
            Ok(values) => values
                .iter()
                .map(|v| v.trim_end_matches(['\0', ' ']))
                .filter(|v| !v.is_empty())
                .map(|v| if is_standard_uid(v) { v.to_string() } else { self.d.keys.uid(v) })
                .collect(),
            Err(_) => Vec::new(),
        };
        if uids.is_empty() {
            return empty_elem(tag, VR::UI);
        }
        DataElement::new(tag, VR::UI, PrimitiveValue::Strs(uids.into()))
    }

    /// C: dates move by the patient's shift (Retain Longitudinal Modified Dates), times stay,
    /// text loses the identifying values of this instance, device/AE values (Retain Device
    /// Identity) and safe-private content are kept, sequences are processed.
    fn clean(&self, elem: InMemElement, depth: u32) -> Result<InMemElement, DeidError> {
        let (tag, vr) = (elem.tag(), elem.vr());
        Ok(match vr {
            VR::SQ => self.items(elem, depth, false)?,
            VR::DA | VR::DT => {
                let values: Vec<String> =
                    elem.to_multi_str().map(|v| v.iter().map(|d| shift_date(d.trim(), self.shift_days, vr)).collect()).unwrap_or_default();
                if values.is_empty() {
                    empty_elem(tag, vr)
                } else {
                    DataElement::new(tag, vr, PrimitiveValue::Strs(values.into()))
                }
            }
            VR::TM | VR::AE | VR::CS | VR::AS | VR::DS | VR::IS | VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD => elem,
            VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC | VR::PN => {
                let text = elem.to_str().map(|s| s.into_owned()).unwrap_or_default();
                let cleaned = scrub(&text, &self.scrub);
                let limit = match vr {
                    VR::SH => 16,
                    VR::LO => 64,
                    _ => usize::MAX,
                };
                text_elem(tag, vr, &cleaned.chars().take(limit).collect::<String>())
            }
            _ => empty_elem(tag, vr),
        })
    }

    /// D: a non-empty value of the right VR that identifies no one.
    fn dummy(&self, elem: InMemElement, depth: u32) -> Result<InMemElement, DeidError> {
        let (tag, vr) = (elem.tag(), elem.vr());
        let value = match vr {
            VR::SQ => return self.items(elem, depth, true),
            VR::UI => return Ok(self.replace_uids(elem)),
            VR::DA => PrimitiveValue::from(DUMMY_DATE),
            VR::DT => PrimitiveValue::from("19000101000000"),
            VR::TM => PrimitiveValue::from("000000"),
            VR::DS | VR::IS => PrimitiveValue::from("0"),
            VR::AS => PrimitiveValue::from("000Y"),
            VR::AE | VR::CS | VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC | VR::PN => PrimitiveValue::from(DUMMY_TEXT),
            VR::UR => PrimitiveValue::from("urn:anonymized"),
            VR::US => PrimitiveValue::from(0u16),
            VR::SS => PrimitiveValue::from(0i16),
            VR::UL => PrimitiveValue::from(0u32),
            VR::SL => PrimitiveValue::from(0i32),
            VR::FL => PrimitiveValue::from(0f32),
            VR::FD => PrimitiveValue::from(0f64),
            _ => PrimitiveValue::from(vec![0u8, 0u8]),
        };
        Ok(DataElement::new(tag, vr, value))
    }

    /// Private tags to keep under Retain Safe Private: the listed elements and their creators.
    fn safe_private_tags(&self, obj: &InMemDicomObject) -> HashSet<Tag> {
        let mut kept = HashSet::new();
        if !self.d.options.contains(&ProfileOption::RetainSafePrivate) {
            return kept;
        }
        for elem in obj.iter() {
            let tag = elem.tag();
            if tag.group() % 2 == 0 || !(0x0010..=0x00FF).contains(&tag.element()) {
                continue;
            }
            let creator = elem.to_str().map(|s| s.trim().to_string()).unwrap_or_default();
            let block = tag.element() << 8;
            for safe in self.d.safe_private.iter().filter(|s| s.group == tag.group() && s.creator == creator) {
                kept.insert(tag);
                kept.insert(Tag(tag.group(), block | u16::from(safe.element)));
            }
        }
        kept
    }
}

/// What happens to an attribute Table E.1-1 does not list (`None`: kept, sequences processed).
/// The table names what its edition knew; later editions, private-turned-public attributes and
/// retired ones are not in it, so this node decides by what a value can carry:
/// - Patient module attributes (group 0010) are removed: the table lists every one of them a
///   result needs, and any other may identify the patient (e.g. Birth Date in Alternative
///   Calendar).
/// - Every UID gets the keyed replacement, except those naming a class, a syntax or a code
///   system (`keeps_uid_meaning`), whose values are defined by the standard or a vendor, not by
///   an instance.
/// - Dates and date-times are removed, or shifted with the patient's dates under Retain
///   Longitudinal Temporal Information Modified Dates; times are removed, or kept under it.
/// - Any Person Name (PN) becomes a dummy; inside sequences so do long texts (LT, ST, UT, UC,
///   e.g. an SR Text Value); and inside a sequence the table replaces with a dummy, so do all
///   names, texts, dates and times except the parts of a code (value, scheme, meaning).
/// - Any other free text (LO, SH, LT, ST, UT, UC, UR) becomes a dummy unless it is on the
///   reviewed safe list (`safe_text`: codes, equipment make and model, technique, display).
fn unlisted_action(tag: Tag, vr: VR, depth: u32, strict: bool, modified_dates: bool) -> Option<Action> {
    const CODE_PARTS: [Tag; 6] = [Tag(0x0008, 0x0100), Tag(0x0008, 0x0102), Tag(0x0008, 0x0103), Tag(0x0008, 0x0104), Tag(0x0008, 0x0119), Tag(0x0008, 0x0120)];
    let long_text = matches!(vr, VR::LT | VR::ST | VR::UT | VR::UC);
    let any_text = long_text || matches!(vr, VR::LO | VR::SH | VR::DA | VR::DT | VR::TM | VR::AE | VR::UR);
    if tag.group() == 0x0010 {
        return Some(Action::X);
    }
    // A tag the data dictionary does not know (a later edition's, or a vendor's in an even
    // group): nothing says what it holds, so it goes, whatever VR it was sent with.
    {
        use dicom_core::dictionary::DataDictionary;
        if dicom_dictionary_std::StandardDataDictionary.by_tag(tag).is_none() {
            return Some(Action::X);
        }
    }
    if vr == VR::PN || (depth > 0 && long_text) || (strict && any_text && !CODE_PARTS.contains(&tag)) {
        return Some(Action::ZD);
    }
    // Free text the table does not list is kept only when it is on the reviewed safe list.
    if super::safe_text::is_free_text(vr) && !super::safe_text::is_safe(tag) {
        return Some(Action::ZD);
    }
    match vr {
        VR::UI if keeps_uid_meaning(tag) => None,
        VR::UI => Some(Action::U),
        VR::DA | VR::DT if modified_dates => Some(Action::C),
        VR::TM if modified_dates => None,
        VR::DA | VR::DT | VR::TM => Some(Action::X),
        _ => None,
    }
}

/// UID attributes whose value names a kind of thing (a SOP class, a transfer syntax, a coding
/// scheme, a template or context group, an implementation), never an instance or a person.
pub fn keeps_uid_meaning(tag: Tag) -> bool {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    const NAMED: [&str; 9] = [
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextGroupExtensionCreatorUID",
        "ContextUID",
        "MappingResourceUID",
        "TemplateExtensionOrganizationUID",
        "TemplateExtensionCreatorUID",
        "PrivateInformationCreatorUID",
        "ManufacturerDeviceClassUID",
    ];
    match dicom_dictionary_std::StandardDataDictionary.by_tag(tag) {
        Some(entry) => {
            let keyword = entry.alias();
            keyword.contains("SOPClass") || keyword.contains("TransferSyntax") || NAMED.contains(&keyword)
        }
        None => false,
    }
}

/// A UID under the standard's own root: defined by PS3.6, identifies no instance.
fn is_standard_uid(uid: &str) -> bool {
    uid.starts_with("1.2.840.10008.")
}

/// An element as its attribute is defined: the dictionary's VR for the tag decides how the
/// value is read, whatever VR the sender wrote (a sequence sent as OB or UN, a UID as LO, a
/// number as text). `None` (the element is removed) when the value cannot be read as what the
/// attribute is. Tags the dictionary does not know, and attributes defined as UN, are left as
/// they are (`unlisted_action` removes the unknown ones).
fn conform_vr(elem: InMemElement) -> Option<InMemElement> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    let tag = elem.tag();
    let sent = elem.vr();
    let Some(defined) = dicom_dictionary_std::StandardDataDictionary.by_tag(tag).map(|e| e.vr()) else {
        // Unknown: a UN value may still be a sequence, read so that its items can be seen; any
        // other unknown tag is removed by `unlisted_action`.
        return if sent == VR::UN { read_again(tag, elem, None) } else { Some(elem) };
    };
    let fits = match defined {
        VirtualVr::Exact(VR::UN) => true,
        VirtualVr::Exact(vr) => vr == sent,
        VirtualVr::Xs => matches!(sent, VR::US | VR::SS),
        VirtualVr::Ox | VirtualVr::Px => matches!(sent, VR::OB | VR::OW),
        VirtualVr::Lt => matches!(sent, VR::US | VR::SS | VR::OW),
        other => other.relaxed() == sent,
    };
    if fits {
        return Some(elem);
    }
    let want = defined.relaxed();
    // Between a text VR and a binary one, only a number converts: a text's bytes read as binary
    // values (or the reverse) would keep whatever they spell under another VR's rules.
    if is_text(sent) != is_text(want) && !matches!(sent, VR::OB | VR::OW | VR::UN) && want != VR::SQ {
        return convert_number(&elem, want);
    }
    read_again(tag, elem, Some(want))
}

/// A number sent as text where the attribute is binary (DS or IS for US, FD ...), or sent
/// binary where the attribute is text: the values converted, since their bytes read as the
/// other kind would be other numbers. `None` when this is not such a case, or a value does
/// not convert.
fn convert_number(elem: &InMemElement, want: VR) -> Option<InMemElement> {
    const BINARY: [VR; 8] = [VR::US, VR::SS, VR::UL, VR::SL, VR::UV, VR::SV, VR::FL, VR::FD];
    let sent = elem.vr();
    let text = matches!(sent, VR::DS | VR::IS);
    if !(text && BINARY.contains(&want) || BINARY.contains(&sent) && matches!(want, VR::DS | VR::IS)) {
        return None;
    }
    let values = elem.to_multi_float64().ok()?;
    if values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let ints = || values.iter().all(|v| v.fract() == 0.0);
    let value = match want {
        VR::DS => PrimitiveValue::Strs(values.iter().map(|&v| decimal_string(v)).collect::<Option<_>>()?),
        VR::IS if ints() => PrimitiveValue::Strs(values.iter().map(|v| format!("{v}")).collect()),
        VR::US if ints() => PrimitiveValue::U16(values.iter().map(|&v| num_traits_cast(v)).collect::<Option<_>>()?),
        VR::SS if ints() => PrimitiveValue::I16(values.iter().map(|&v| num_traits_cast(v)).collect::<Option<_>>()?),
        VR::UL if ints() => PrimitiveValue::U32(values.iter().map(|&v| num_traits_cast(v)).collect::<Option<_>>()?),
        VR::SL if ints() => PrimitiveValue::I32(values.iter().map(|&v| num_traits_cast(v)).collect::<Option<_>>()?),
        VR::UV if ints() => PrimitiveValue::U64(values.iter().map(|&v| num_traits_cast(v)).collect::<Option<_>>()?),
        VR::SV if ints() => PrimitiveValue::I64(values.iter().map(|&v| num_traits_cast(v)).collect::<Option<_>>()?),
        VR::FL => PrimitiveValue::F32(values.iter().map(|&v| v as f32).collect()),
        VR::FD => PrimitiveValue::F64(values.iter().copied().collect()),
        _ => return None,
    };
    Some(DataElement::new(elem.tag(), want, value))
}

/// VRs whose values are characters (read and written as text).
fn is_text(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE | VR::AS | VR::CS | VR::DA | VR::DS | VR::DT | VR::IS | VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::TM | VR::UC | VR::UI | VR::UR | VR::UT
    )
}

/// `v` as a Decimal String of at most 16 characters (PS3.5), in exponent form when the plain
/// one would be longer; None when neither fits.
fn decimal_string(v: f64) -> Option<String> {
    let plain = format!("{v}");
    if plain.len() <= 16 {
        return Some(plain);
    }
    // The shortest exponent form that reads back as `v`, else the most digits that fit.
    std::iter::once(format!("{v:e}")).chain((1..=15).rev().map(|digits| format!("{v:.digits$e}"))).find(|s| s.len() <= 16)
}

/// `v` as an integer type when it fits exactly.
fn num_traits_cast<T: TryFrom<i128>>(v: f64) -> Option<T> {
    if v.fract() != 0.0 || v.abs() > 1e30 {
        return None;
    }
    T::try_from(v as i128).ok()
}

/// Read a value again (PS3.5 6.2.2) from its bytes: as `known`, the VR the dictionary gives its
/// tag, or, when that is SQ or the bytes start with an item, as a sequence (in Implicit VR
/// Little Endian, as PS3.5 says of UN; a sequence whose VR was replaced may have been written
/// in Explicit VR Little Endian, tried second). `None` (the element is removed) when the tag is
/// unknown and the value no sequence, when the value is a sequence or fragments where the
/// attribute holds a value, or when its bytes do not parse as what they claim.
fn read_again(tag: Tag, elem: InMemElement, known: Option<VR>) -> Option<InMemElement> {
    let bytes: Vec<u8> = match elem.value() {
        Value::Primitive(p) => p.to_bytes().into_owned(),
        // Already read as a sequence (a UN of undefined length): nothing to read again.
        Value::Sequence(_) if known.is_none() || known == Some(VR::SQ) => return Some(DataElement::new(tag, VR::SQ, elem.into_value())),
        Value::Sequence(_) | Value::PixelSequence(_) => return None,
    };
    if known == Some(VR::UN) {
        return Some(elem); // UN by definition (Selector UN Value): the table's action applies
    }
    let items = bytes.len() >= 8 && bytes[..4] == [0xFE, 0xFF, 0x00, 0xE0];
    let as_sequence = known == Some(VR::SQ) || (known.is_none() && items);
    if as_sequence {
        // Undefined length: the parser then reads the value as a sequence whatever the tag;
        // the items keep their own lengths.
        let mut implicit = Vec::with_capacity(bytes.len() + 16);
        implicit.extend_from_slice(&tag.group().to_le_bytes());
        implicit.extend_from_slice(&tag.element().to_le_bytes());
        implicit.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        implicit.extend_from_slice(&bytes);
        implicit.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        if let Some(e) = parse_one(tag, &implicit, "1.2.840.10008.1.2").filter(|e| e.vr() == VR::SQ) {
            return Some(e);
        }
        let mut explicit = Vec::with_capacity(bytes.len() + 20);
        explicit.extend_from_slice(&tag.group().to_le_bytes());
        explicit.extend_from_slice(&tag.element().to_le_bytes());
        explicit.extend_from_slice(b"SQ\0\0");
        explicit.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        explicit.extend_from_slice(&bytes);
        explicit.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        return parse_one(tag, &explicit, "1.2.840.10008.1.2.1").filter(|e| e.vr() == VR::SQ);
    }
    known?;
    let mut encoded = Vec::with_capacity(bytes.len() + 8);
    encoded.extend_from_slice(&tag.group().to_le_bytes());
    encoded.extend_from_slice(&tag.element().to_le_bytes());
    encoded.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    encoded.extend_from_slice(&bytes);
    parse_one(tag, &encoded, "1.2.840.10008.1.2").filter(|e| !matches!(e.vr(), VR::SQ | VR::UN))
}

/// Parse `encoded`, one element of `tag` in the transfer syntax `ts_uid`; the structural scan
/// first: it bounds the nesting (the parser recurses without limit, and a value of nested
/// undefined-length items could exhaust the stack) and proves it parses.
fn parse_one(tag: Tag, encoded: &[u8], ts_uid: &str) -> Option<InMemElement> {
    use dicom_transfer_syntax_registry::TransferSyntaxIndex;
    let syntax = crate::dicom::sop::transfer_syntax(ts_uid)?;
    crate::dicom::scan::scan(encoded, Some(encoded.len() as u64), syntax).ok()?;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts_uid)?;
    let parsed = InMemDicomObject::read_dataset_with_ts(encoded, ts).ok()?;
    let mut parsed = parsed.into_iter();
    let out = parsed.next().filter(|e| e.tag() == tag)?;
    if parsed.next().is_some() {
        return None;
    }
    Some(out)
}

/// Burned In Annotation (0028,0301) = YES, or absent where the SOP class commonly burns text in
/// (Secondary Capture and Ultrasound) or the modality is one the site lists
/// (`deid.burned_in_when_absent`): the pixels may show identity.
fn burned_in_reason(obj: &InMemDicomObject, sop_class_uid: &str, when_absent: &[String]) -> Option<&'static str> {
    // Only exactly NO clears the pixels (PS3.3 C.7.6.1.1.4: the enumerated values are YES and
    // NO); YES, several values ("YES\\NO"), "Y" or anything else may mean text in the pixels.
    match top_string(obj, tags::BURNED_IN_ANNOTATION).map(|v| v.trim().to_ascii_uppercase()) {
        Some(v) if v == "NO" => None,
        Some(v) if v == "YES" => Some("Burned In Annotation is YES"),
        Some(_) => Some("Burned In Annotation is neither YES nor NO"),
        None if sop_class_uid.starts_with("1.2.840.10008.5.1.4.1.1.7") => Some("Burned In Annotation absent on Secondary Capture"),
        None if ["1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.3.1"].contains(&sop_class_uid) => {
            Some("Burned In Annotation absent on Ultrasound")
        }
        None if top_string(obj, tags::MODALITY).is_some_and(|m| when_absent.iter().any(|w| w.eq_ignore_ascii_case(&m))) => {
            Some("Burned In Annotation absent, and the modality is in deid.burned_in_when_absent")
        }
        None => None,
    }
}

/// The identifying strings of this instance that Clean must remove from free text: name parts,
/// IDs, birth date, accession, physicians, institution, address. Short tokens (under 3
/// characters) are left, or cleaning would shred ordinary words.
fn scrub_list(obj: &InMemDicomObject) -> Vec<String> {
    let sources = [
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        Tag(0x0010, 0x1000), // Other Patient IDs (retired, still sent)
        tags::OTHER_PATIENT_NAMES,
        tags::PATIENT_BIRTH_DATE,
        tags::PATIENT_BIRTH_NAME,
        tags::PATIENT_MOTHER_BIRTH_NAME,
        tags::PATIENT_ADDRESS,
        tags::PATIENT_TELEPHONE_NUMBERS,
        tags::ACCESSION_NUMBER,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::PERFORMING_PHYSICIAN_NAME,
        tags::NAME_OF_PHYSICIANS_READING_STUDY,
        tags::OPERATORS_NAME,
        tags::INSTITUTION_NAME,
        tags::INSTITUTION_ADDRESS,
        tags::STUDY_ID,
    ];
    let mut out: Vec<String> = Vec::new();
    for tag in sources {
        let Some(elem) = obj.get(tag) else { continue };
        let Ok(values) = elem.to_multi_str() else { continue };
        for v in values.iter() {
            let whole = v.trim().to_string();
            out.push(whole.clone());
            out.extend(whole.split(['^', '=', ' ', ',']).map(str::to_string));
        }
    }
    out.retain(|s| s.chars().count() >= 3);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// Replace every case-insensitive occurrence of each identifying string with `***`.
fn scrub(text: &str, identifying: &[String]) -> String {
    let mut out = text.to_string();
    for needle in identifying {
        let lower_needle = needle.to_lowercase();
        loop {
            let lower = out.to_lowercase();
            // Lower-casing can change byte lengths outside ASCII; only splice when it did not.
            if lower.len() != out.len() {
                if out.contains(needle.as_str()) {
                    out = out.replace(needle.as_str(), SCRUBBED);
                }
                break;
            }
            match lower.find(&lower_needle) {
                Some(at) => out.replace_range(at..at + lower_needle.len(), SCRUBBED),
                None => break,
            }
        }
    }
    out
}

/// Move a DA (`YYYYMMDD`) or the date part of a DT back by `days`; anything unparseable becomes
/// the dummy date (it cannot be kept: it might be an identifying date in another format).
fn shift_date(value: &str, days: i64, vr: VR) -> String {
    let parsed = (value.len() >= 8 && value[..8].bytes().all(|b| b.is_ascii_digit()))
        .then(|| Some((value[..4].parse::<i64>().ok()?, value[4..6].parse::<i64>().ok()?, value[6..8].parse::<i64>().ok()?)))
        .flatten()
        .filter(|&(_, m, d)| (1..=12).contains(&m) && (1..=31).contains(&d));
    let Some((y, m, d)) = parsed else {
        return if vr == VR::DT { "19000101000000".into() } else { DUMMY_DATE.into() };
    };
    let (y2, m2, d2) = civil_from_days(days_from_civil(y, m, d) - days);
    let rest = if vr == VR::DT { &value[8..] } else { "" };
    format!("{y2:04}{m2:02}{d2:02}{rest}")
}

fn top_string(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let elem = obj.get(tag)?;
    let s = elem.to_str().ok()?.trim_matches(['\0', ' ']).to_string();
    (!s.is_empty()).then_some(s)
}

fn is_empty(elem: &InMemElement) -> bool {
    match elem.value() {
        Value::Primitive(PrimitiveValue::Empty) => true,
        Value::Primitive(p) => p.to_str().trim_matches(['\0', ' ']).is_empty() && p.multiplicity() <= 1,
        Value::Sequence(s) => s.items().is_empty(),
        Value::PixelSequence(_) => false,
    }
}

fn empty_elem(tag: Tag, vr: VR) -> InMemElement {
    if vr == VR::SQ {
        return DataElement::new(tag, vr, DataSetSequence::<InMemDicomObject>::new(Vec::new(), Length::UNDEFINED));
    }
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

fn text_elem(tag: Tag, vr: VR, text: &str) -> InMemElement {
    if text.is_empty() {
        return empty_elem(tag, vr);
    }
    DataElement::new(tag, vr, PrimitiveValue::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_shift_across_months_years_and_leap_days() {
        assert_eq!(shift_date("20240301", 1, VR::DA), "20240229");
        assert_eq!(shift_date("20250101", 1, VR::DA), "20241231");
        assert_eq!(shift_date("20240101120000.5+0100", 366, VR::DT), "20221231120000.5+0100");
        assert_eq!(shift_date("2024", 3, VR::DA), DUMMY_DATE);
        assert_eq!(shift_date("not a date", 3, VR::DT), "19000101000000");
    }

    #[test]
    fn scrub_removes_identifiers_case_insensitively() {
        let ids = vec!["DOE^JOHN".to_string(), "JOHN".to_string(), "12345".to_string()];
        assert_eq!(scrub("Chest for john, MRN 12345", &ids), "Chest for ***, MRN ***");
        assert_eq!(scrub("CHEST PA", &ids), "CHEST PA");
    }

    /// A planted value of the attribute's VR; `None` for VRs this table test does not cover.
    fn planted(tag: Tag, vr: VR) -> Option<InMemElement> {
        let nested = || {
            InMemDicomObject::from_element_iter([
                DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4.5.6")),
                DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::from("19230417")),
            ])
        };
        let value = match vr {
            VR::SQ => return Some(DataElement::new(tag, vr, DataSetSequence::new(vec![nested()], Length::UNDEFINED))),
            VR::AE | VR::CS | VR::SH | VR::LO | VR::LT | VR::ST | VR::UT | VR::UC => PrimitiveValue::from("PLANTED"),
            VR::PN => PrimitiveValue::from("PLANTED^NAME"),
            VR::DA => PrimitiveValue::from("20200115"),
            VR::DT => PrimitiveValue::from("20200115103000"),
            VR::TM => PrimitiveValue::from("103000"),
            VR::UI => PrimitiveValue::from("1.2.826.0.1.3680043.10.42"),
            VR::AS => PrimitiveValue::from("042Y"),
            VR::DS | VR::IS => PrimitiveValue::from("42"),
            VR::US => PrimitiveValue::from(42u16),
            VR::OB | VR::UN => PrimitiveValue::from(vec![1u8, 2, 3, 4]),
            _ => return None,
        };
        Some(DataElement::new(tag, vr, value))
    }

    fn minimal() -> Vec<InMemElement> {
        vec![
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.1")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.2")),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.3")),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("PAT1")),
        ]
    }

    /// Table-driven over every attribute of Table E.1-1 that has a single tag: plant a value,
    /// de-identify, and check the outcome against the action the table gives, with no option
    /// and with every supported option on. Combined actions on a present value resolve as
    /// documented: Z/D, X/D, X/Z/D -> D; X/Z -> Z (sequences: X, Acquisition Context: Z).
    #[test]
    fn every_attribute_of_the_profile_gets_its_action() {
        use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
        let dict = dicom_dictionary_std::StandardDataDictionary;
        let keys = Keys::for_tests(9);
        let table = Table::standard();
        let skip = [tags::SOP_CLASS_UID, tags::SOP_INSTANCE_UID, tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID, tags::PATIENT_ID, tags::PATIENT_NAME];
        for options in [vec![], Deidentifier::SUPPORTED.to_vec()] {
            let d = Deidentifier::new(keys.clone(), options.clone(), vec![SafePrivate::parse("0029,SAFE,10").unwrap()]);
            let mut checked = 0;
            for row in &table.rows {
                let Ok(raw) = u32::from_str_radix(row.tag, 16) else { continue };
                let tag = Tag((raw >> 16) as u16, raw as u16);
                if skip.contains(&tag) || tag.group() == 0x0002 || tag.group() == 0x0000 || tag.group() >= 0xFFFA {
                    continue;
                }
                let Some(entry) = dict.by_tag(tag) else { continue };
                let vr = entry.vr().relaxed();
                let Some(elem) = planted(tag, vr) else { continue };
                let mut elements = minimal();
                elements.push(elem.clone());
                // The Ethics Committee Name is kept only beside its Approval Number.
                if tag == Tag(0x0012, 0x0081) {
                    continue;
                }
                let out = d.apply(InMemDicomObject::from_element_iter(elements)).unwrap().object;
                let got = out.get(tag);
                // Content outside the header is not kept, whatever the table's action.
                if CONTENT.iter().any(|(t, _)| *t == tag) {
                    assert!(got.is_none(), "{} {}: content kept", row.tag, row.name);
                    checked += 1;
                    continue;
                }
                let mut action = row.action(d.options());
                action = match action {
                    Action::ZD | Action::XD | Action::XZD => Action::D,
                    Action::XZ if vr == VR::SQ && tag != tags::ACQUISITION_CONTEXT_SEQUENCE => Action::X,
                    Action::XZ => Action::Z,
                    Action::XZU => Action::K,
                    a => a,
                };
                let what = format!("{} {} ({:?}, options {:?})", row.tag, row.name, action, options);
                let text = |e: &InMemElement| e.to_str().map(|s| s.trim_end_matches(['\0', ' ']).to_string()).unwrap_or_default();
                match (action, got) {
                    (Action::X, got) => assert!(got.is_none(), "{what}: not removed"),
                    (_, None) => panic!("{what}: removed"),
                    (Action::Z, Some(g)) => assert!(is_empty(g), "{what}: not emptied"),
                    (_, Some(g)) if vr == VR::SQ => {
                        // Kept, dummied or cleaned: items processed, so the nested UID is replaced
                        // and the nested birth date is gone or replaced.
                        let item = &g.items().expect("a sequence")[0];
                        assert_eq!(text(item.element(tags::REFERENCED_SOP_INSTANCE_UID).unwrap()), keys.uid("1.2.3.4.5.6"), "{what}");
                        let birth = item.get(tags::PATIENT_BIRTH_DATE).map(text);
                        assert_ne!(birth.as_deref(), Some("19230417"), "{what}: nested birth date kept");
                    }
                    (Action::K, Some(g)) => assert!(g == &elem, "{what}: changed"),
                    (Action::U, Some(g)) => assert_eq!(text(g), keys.uid("1.2.826.0.1.3680043.10.42"), "{what}"),
                    (Action::D, Some(g)) => {
                        assert!(!is_empty(g), "{what}: empty");
                        assert_ne!(text(g), text(&elem), "{what}: not replaced");
                    }
                    (Action::C, Some(g)) => match vr {
                        VR::DA | VR::DT => {
                            let shift = keys.date_shift_days("", "PAT1");
                            assert_eq!(text(g), shift_date(&text(&elem), shift, vr), "{what}");
                        }
                        // Binary values cannot be inspected, so cleaning empties them.
                        VR::OB | VR::UN => assert!(is_empty(g), "{what}"),
                        // Nothing identifying was planted in the text, so cleaning keeps it.
                        _ => assert_eq!(text(g), text(&elem), "{what}"),
                    },
                    (a, g) => panic!("{what}: unexpected {a:?} -> {g:?}"),
                }
                checked += 1;
            }
            assert!(checked > 450, "only {checked} attributes checked");
        }
    }

    /// Every attribute of the standard data dictionary that Table E.1-1 does not list and whose
    /// value representation can carry a UID, a date or a time (and every unlisted Patient module
    /// attribute) gets the safe default, with and without the supported options: UIDs replaced
    /// (class, syntax and code-system UIDs kept), dates and times removed (shifted or kept under
    /// Retain Longitudinal Modified Dates), group 0010 removed. Group 0002 and 0000 elements in
    /// the data set are removed.
    #[test]
    fn every_unlisted_attribute_of_the_dictionary_gets_the_safe_default() {
        use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
        let dict = dicom_dictionary_std::StandardDataDictionary;
        let keys = Keys::for_tests(9);
        let table = Table::standard();
        let skip = [tags::SOP_CLASS_UID, tags::SOP_INSTANCE_UID, tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID, tags::PATIENT_ID];
        // The dictionary has no iterator: walk every element of every group it uses (overlay and
        // curve groups are removed whole and tested elsewhere).
        let mut groups: Vec<u16> = (0x0000..=0x0100).step_by(2).collect();
        groups.extend([0x0400, 0x1000, 0x1010, 0x2000, 0x2010, 0x2020, 0x2030, 0x2040, 0x2050, 0x2100, 0x2110, 0x2120, 0x2130, 0x2200]);
        groups.extend([0x3002, 0x3004, 0x3006, 0x3008, 0x300A, 0x300C, 0x300E, 0x4000, 0x4008, 0x4010, 0x4FFE, 0x5200, 0x5400, 0x5600, 0x7FE0]);
        for options in [vec![], Deidentifier::SUPPORTED.to_vec()] {
            let modified = options.contains(&ProfileOption::RetainLongitudinalModifiedDates);
            let d = Deidentifier::new(keys.clone(), options.clone(), vec![]);
            let (mut uids, mut dates, mut patient) = (0, 0, 0);
            for &group in &groups {
                for element in 0..=0xFFFFu16 {
                    let tag = Tag(group, element);
                    if element == 0 || skip.contains(&tag) || table.lookup(group, element).is_some() {
                        continue;
                    }
                    let Some(entry) = dict.by_tag(tag) else { continue };
                    if !matches!(entry.tag_range(), dicom_core::dictionary::TagRange::Single(_)) {
                        continue;
                    }
                    let vr = entry.vr().relaxed();
                    let group_0002 = group <= 0x0002;
                    if !(matches!(vr, VR::UI | VR::DA | VR::DT | VR::TM) || group == 0x0010 || group_0002) {
                        continue;
                    }
                    let Some(elem) = planted(tag, vr) else { continue };
                    let mut elements = minimal();
                    elements.push(elem.clone());
                    let out = d.apply(InMemDicomObject::from_element_iter(elements)).unwrap().object;
                    let got = out.get(tag);
                    let name = entry.alias();
                    let what = format!("({group:04X},{element:04X}) {name} {vr:?} (options {options:?})");
                    let text = |e: &InMemElement| e.to_str().map(|s| s.trim_end_matches(['\0', ' ']).to_string()).unwrap_or_default();
                    if group == 0x0010 || group_0002 {
                        assert!(got.is_none(), "{what}: kept");
                        patient += 1;
                        continue;
                    }
                    match vr {
                        VR::UI if keeps_uid_meaning(tag) => assert!(got == Some(&elem), "{what}: a class or syntax UID was changed"),
                        VR::UI => {
                            assert_eq!(got.map(text), Some(keys.uid("1.2.826.0.1.3680043.10.42")), "{what}: not replaced");
                            uids += 1;
                        }
                        VR::DA | VR::DT if modified => {
                            let shift = keys.date_shift_days("", "PAT1");
                            assert_eq!(got.map(text), Some(shift_date(&text(&elem), shift, vr)), "{what}: not shifted");
                            dates += 1;
                        }
                        VR::TM if modified => assert!(got == Some(&elem), "{what}: time changed"),
                        _ => {
                            assert!(got.is_none(), "{what}: kept");
                            dates += 1;
                        }
                    }
                }
            }
            // PS3.6 2025: some 44 unlisted UI and 13 unlisted DA/DT attributes (and their TM
            // companions), and the unlisted Patient module attributes.
            assert!(uids >= 20 && dates >= 15 && patient >= 10, "only {uids} UIDs, {dates} dates, {patient} patient/meta attributes checked");
        }
    }

    /// A value sent as UN is read again as what it is: a known attribute by its dictionary VR,
    /// a sequence (items in Implicit VR Little Endian) processed like any other, an unknown
    /// non-sequence value removed.
    #[test]
    fn values_of_unknown_vr_are_read_again_and_deidentified() {
        let keys = Keys::for_tests(3);
        let d = Deidentifier::new(keys.clone(), vec![], vec![]);
        let implicit = |elems: Vec<InMemElement>| {
            use dicom_transfer_syntax_registry::TransferSyntaxIndex;
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get("1.2.840.10008.1.2").unwrap();
            let mut out = Vec::new();
            InMemDicomObject::from_element_iter(elems).write_dataset_with_ts(&mut out, ts).unwrap();
            out
        };
        // One item, defined length, holding a name and an instance UID.
        let item = implicit(vec![
            DataElement::new(tags::REFERENCED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.3.1.2.3.1")),
            DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.826.0.1.3680043.10.7")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("UNSEEN^NAME")),
        ]);
        let mut seq = vec![0xFE, 0xFF, 0x00, 0xE0];
        seq.extend_from_slice(&(item.len() as u32).to_le_bytes());
        seq.extend_from_slice(&item);
        let mut elements = minimal();
        // Referenced Image Sequence is X/Z/U*: kept, its UIDs replaced.
        elements.push(DataElement::new(tags::REFERENCED_IMAGE_SEQUENCE, VR::UN, PrimitiveValue::from(seq.clone())));
        // An unknown even tag holding a sequence.
        elements.push(DataElement::new(Tag(0x0041, 0x1010), VR::UN, PrimitiveValue::from(seq)));
        elements.push(DataElement::new(Tag(0x0040, 0xEEE0), VR::UN, PrimitiveValue::from(b"UNSEEN^NAME ".to_vec())));
        elements.push(DataElement::new(tags::STUDY_DESCRIPTION, VR::UN, PrimitiveValue::from(b"CHEST ".to_vec())));
        elements.push(DataElement::new(tags::REFERENCED_FRAME_OF_REFERENCE_UID, VR::UN, PrimitiveValue::from(b"1.2.826.0.1.3680043.10.8\0".to_vec())));
        let out = d.apply(InMemDicomObject::from_element_iter(elements)).unwrap().object;
        let study = out.element(tags::REFERENCED_IMAGE_SEQUENCE).expect("the UN sequence is kept as a sequence");
        assert_eq!(study.vr(), VR::SQ);
        let item = &study.items().unwrap()[0];
        assert_eq!(item.element(tags::REFERENCED_SOP_INSTANCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0'), keys.uid("1.2.826.0.1.3680043.10.7"));
        assert_eq!(item.element(tags::REFERENCED_SOP_CLASS_UID).unwrap().to_str().unwrap().trim_end_matches('\0'), "1.2.840.10008.3.1.2.3.1");
        assert_ne!(item.element(tags::PATIENT_NAME).unwrap().to_str().unwrap(), "UNSEEN^NAME");
        assert!(out.get(Tag(0x0041, 0x1010)).is_none(), "private");
        assert!(out.get(Tag(0x0040, 0xEEE0)).is_none(), "an unknown UN value is removed");
        // Nested undefined-length items deeper than any data set: removed, no stack overflow.
        let mut deep = Vec::new();
        for _ in 0..20_000 {
            deep.extend_from_slice(&[0x08, 0x00, 0x40, 0x11, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let mut e2 = minimal();
        e2.push(DataElement::new(tags::REFERENCED_IMAGE_SEQUENCE, VR::UN, PrimitiveValue::from(deep)));
        e2.push(DataElement::new(Tag(0x0040, 0xEEE1), VR::LO, PrimitiveValue::from("UNSEEN^NAME")));
        let out2 = d.apply(InMemDicomObject::from_element_iter(e2)).unwrap().object;
        assert!(out2.get(tags::REFERENCED_IMAGE_SEQUENCE).is_none());
        assert!(out2.get(Tag(0x0040, 0xEEE1)).is_none(), "an unknown tag is removed whatever its VR");
        assert!(out.get(tags::STUDY_DESCRIPTION).is_none(), "Study Description is X, however it was sent");
        let frame = out.element(tags::REFERENCED_FRAME_OF_REFERENCE_UID).unwrap();
        assert_eq!(frame.vr(), VR::UI);
        assert_eq!(frame.to_str().unwrap().trim_end_matches('\0'), keys.uid("1.2.826.0.1.3680043.10.8"));
        let mut encoded = Vec::new();
        {
            use dicom_transfer_syntax_registry::TransferSyntaxIndex;
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get("1.2.840.10008.1.2.1").unwrap();
            out.write_dataset_with_ts(&mut encoded, ts).unwrap();
        }
        assert!(!encoded.windows(11).any(|w| w == b"UNSEEN^NAME"), "a name inside a UN value survived");
        assert!(!encoded.windows(24).any(|w| w == b"1.2.826.0.1.3680043.10.7"), "a UID inside a UN value survived");
    }

    /// The rule follows the attribute, not the VR the sender wrote: a sequence sent as OB (its
    /// items in Implicit or Explicit VR), a UID attribute sent as LO, a number sent as text are
    /// read as their attributes are defined and de-identified as such; a sequence sent where a
    /// value is defined is removed. Unlisted free text is kept only when on the safe list.
    #[test]
    fn values_sent_with_a_vr_their_attribute_does_not_have_are_read_as_defined() {
        use dicom_transfer_syntax_registry::TransferSyntaxIndex;
        let keys = Keys::for_tests(4);
        let d = Deidentifier::new(keys.clone(), vec![], vec![]);
        let encode = |ts: &str, elems: Vec<InMemElement>| {
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts).unwrap();
            let mut out = Vec::new();
            InMemDicomObject::from_element_iter(elems).write_dataset_with_ts(&mut out, ts).unwrap();
            out
        };
        let item = |body: Vec<u8>| {
            let mut v = vec![0xFE, 0xFF, 0x00, 0xE0];
            v.extend_from_slice(&(body.len() as u32).to_le_bytes());
            v.extend_from_slice(&body);
            v
        };
        let implicit_item = item(encode(
            "1.2.840.10008.1.2",
            vec![
                DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.826.0.1.3680043.10.71")),
                DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("HIDDEN^NAME")),
            ],
        ));
        let explicit_item = item(encode(
            "1.2.840.10008.1.2.1",
            vec![
                DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from("T-D3000")),
                DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from("Chest")),
                DataElement::new(tags::PERSON_NAME, VR::PN, PrimitiveValue::from("HIDDEN^OTHER")),
            ],
        ));
        let mut elements = minimal();
        elements.push(DataElement::new(tags::SOURCE_IMAGE_SEQUENCE, VR::OB, PrimitiveValue::from(implicit_item)));
        elements.push(DataElement::new(tags::ANATOMIC_REGION_SEQUENCE, VR::OB, PrimitiveValue::from(explicit_item)));
        elements.push(DataElement::new(Tag(0x0020, 0x0242), VR::LO, PrimitiveValue::from("1.2.826.0.1.3680043.10.72")));
        elements.push(DataElement::new(tags::ROWS, VR::IS, PrimitiveValue::from("512")));
        // Text where a binary number is defined, not a number: removed, not read as bytes.
        elements.push(DataElement::new(tags::DIFFUSION_B_VALUE, VR::LO, PrimitiveValue::from("HIDDEN^FOURTH")));
        // A binary number where a decimal string is defined: at most 16 characters.
        elements.push(DataElement::new(tags::SLICE_THICKNESS, VR::FD, PrimitiveValue::from(1e20f64)));
        elements.push(DataElement::new(tags::VIEW_NAME, VR::SH, PrimitiveValue::from("SMITH PA")));
        elements.push(DataElement::new(tags::MANUFACTURER, VR::LO, PrimitiveValue::from("ACME")));
        elements.push(DataElement::new(tags::CONVOLUTION_KERNEL, VR::SH, PrimitiveValue::from("B30f")));
        // A sequence where a text is defined cannot be read as that text.
        let nested = InMemDicomObject::from_element_iter([DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("HIDDEN^THIRD"))]);
        elements.push(DataElement::new(tags::SOFTWARE_VERSIONS, VR::SQ, DataSetSequence::new(vec![nested], Length::UNDEFINED)));
        let out = d.apply(InMemDicomObject::from_element_iter(elements)).unwrap().object;
        let text = |e: &InMemElement| e.to_str().unwrap().trim_end_matches(['\0', ' ']).to_string();

        let source = out.element(tags::SOURCE_IMAGE_SEQUENCE).expect("the OB-sent sequence is read as one");
        assert_eq!(source.vr(), VR::SQ);
        let item = &source.items().unwrap()[0];
        assert_eq!(text(item.element(tags::REFERENCED_SOP_INSTANCE_UID).unwrap()), keys.uid("1.2.826.0.1.3680043.10.71"));
        assert_ne!(text(item.element(tags::PATIENT_NAME).unwrap()), "HIDDEN^NAME");
        let region = out.element(tags::ANATOMIC_REGION_SEQUENCE).expect("explicit VR items are read too");
        let item = &region.items().unwrap()[0];
        assert_eq!(text(item.element(tags::CODE_MEANING).unwrap()), "Chest");
        assert_ne!(text(item.element(tags::PERSON_NAME).unwrap()), "HIDDEN^OTHER");
        let concatenation = out.element(Tag(0x0020, 0x0242)).unwrap();
        assert_eq!((concatenation.vr(), text(concatenation)), (VR::UI, keys.uid("1.2.826.0.1.3680043.10.72")));
        let rows = out.element(tags::ROWS).unwrap();
        assert_eq!((rows.vr(), rows.to_int::<u16>().unwrap()), (VR::US, 512));
        assert!(out.get(tags::DIFFUSION_B_VALUE).is_none(), "text where a number is defined is removed");
        let thickness = out.element(tags::SLICE_THICKNESS).unwrap();
        assert_eq!((thickness.vr(), text(thickness)), (VR::DS, "1e20".to_string()));
        assert_eq!(text(out.element(tags::VIEW_NAME).unwrap()), DUMMY_TEXT, "unlisted free text off the safe list");
        assert_eq!(text(out.element(tags::MANUFACTURER).unwrap()), "ACME");
        assert_eq!(text(out.element(tags::CONVOLUTION_KERNEL).unwrap()), "B30f");
        assert!(out.get(tags::SOFTWARE_VERSIONS).is_none(), "a sequence where text is defined is removed");
        let encoded = encode("1.2.840.10008.1.2.1", out.into_iter().collect());
        for leak in [&b"HIDDEN"[..], b"1.2.826.0.1.3680043.10.7", b"SMITH"] {
            assert!(!encoded.windows(leak.len()).any(|w| w == leak), "{} survived", String::from_utf8_lossy(leak));
        }
    }

    #[test]
    fn pseudonyms_replace_patient_identity_and_declare_the_method() {
        let d = Deidentifier::new(Keys::for_tests(7), vec![ProfileOption::CleanDescriptors], vec![]);
        let mut elements = minimal();
        elements.push(DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("DOE^JOHN")));
        elements.push(DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, PrimitiveValue::from("CT head for doe")));
        elements.push(DataElement::new(Tag(0x0029, 0x0010), VR::LO, PrimitiveValue::from("SOMEONE")));
        elements.push(DataElement::new(Tag(0x0029, 0x1010), VR::LO, PrimitiveValue::from("JOHN DOE")));
        let out = d.apply(InMemDicomObject::from_element_iter(elements)).unwrap();
        let text = |t| out.object.element(t).unwrap().to_str().unwrap().trim().to_string();
        let token = Keys::for_tests(7).patient_pseudonym("", "PAT1");
        assert_eq!(text(tags::PATIENT_ID), token);
        assert_eq!(text(tags::PATIENT_NAME), format!("ANON^{token}"));
        assert_eq!(text(tags::STUDY_DESCRIPTION), "CT head for ***");
        assert!(out.object.get(Tag(0x0029, 0x1010)).is_none(), "private attributes are removed");
        assert_eq!(text(tags::PATIENT_IDENTITY_REMOVED), "YES");
        assert_eq!(out.originals.patient_name.as_deref(), Some("DOE^JOHN"));
        assert_eq!(out.originals.sop_instance_uid, "1.2.3.1");
        assert_eq!(out.sop_instance_uid, Keys::for_tests(7).uid("1.2.3.1"));
        assert_eq!(out.originals.frame_of_reference_uid, None, "none in the header: none kept");
        let codes: Vec<String> = out
            .object
            .element(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .iter()
            .map(|i| i.element(tags::CODE_VALUE).unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(codes, ["113100", "113105"]);
    }

    #[test]
    fn the_original_frame_of_reference_is_kept_and_replaced_in_the_object() {
        let keys = Keys::for_tests(7);
        let d = Deidentifier::new(keys.clone(), vec![], vec![]);
        let mut elements = minimal();
        elements.push(DataElement::new(tags::FRAME_OF_REFERENCE_UID, VR::UI, PrimitiveValue::from("1.2.3.9")));
        let out = d.apply(InMemDicomObject::from_element_iter(elements)).unwrap();
        assert_eq!(out.originals.frame_of_reference_uid.as_deref(), Some("1.2.3.9"));
        let stored = out.object.element(tags::FRAME_OF_REFERENCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
        assert_eq!(stored, keys.uid("1.2.3.9"), "the stored header has the keyed replacement `reidentify` maps back");
    }

    #[test]
    fn safe_private_keeps_only_the_listed_elements() {
        let d = Deidentifier::new(Keys::for_tests(7), vec![ProfileOption::RetainSafePrivate], vec![SafePrivate::parse("0029,SAFE,10").unwrap()]);
        let mut elements = minimal();
        elements.push(DataElement::new(Tag(0x0029, 0x0011), VR::LO, PrimitiveValue::from("SAFE")));
        elements.push(DataElement::new(Tag(0x0029, 0x1110), VR::LO, PrimitiveValue::from("kept")));
        elements.push(DataElement::new(Tag(0x0029, 0x1111), VR::LO, PrimitiveValue::from("removed")));
        let out = d.apply(InMemDicomObject::from_element_iter(elements)).unwrap().object;
        assert!(out.get(Tag(0x0029, 0x0011)).is_some());
        assert!(out.get(Tag(0x0029, 0x1110)).is_some());
        assert!(out.get(Tag(0x0029, 0x1111)).is_none());
    }

    /// SR content, an encapsulated document, waveforms and annotations are not kept (the object
    /// is its de-identified header), and a non-image object's top-level sequences and long texts
    /// lose every free text, name and date, listed in Table E.1-1 or not.
    #[test]
    fn content_outside_the_header_is_not_kept() {
        let d = Deidentifier::new(Keys::for_tests(3), vec![], vec![]);
        let with = |class: &str, extra: Vec<InMemElement>| {
            let mut e = minimal();
            e[0] = DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(class));
            e.extend(extra);
            d.apply(InMemDicomObject::from_element_iter(e)).unwrap()
        };
        let text_item = |tag: Tag, vr: VR, v: &str| InMemDicomObject::from_element_iter([DataElement::new(tag, vr, PrimitiveValue::from(v))]);
        let seq = |tag: Tag, item: InMemDicomObject| DataElement::new(tag, VR::SQ, DataSetSequence::new(vec![item], Length::UNDEFINED));
        let sr =
            with(crate::dicom::uids::X_RAY_RADIATION_DOSE_SR_STORAGE, vec![seq(tags::CONTENT_SEQUENCE, text_item(tags::TEXT_VALUE, VR::UT, "PLANTED SMITH"))]);
        assert!(sr.object.get(tags::CONTENT_SEQUENCE).is_none());
        assert_eq!(sr.content_removed, Some(CONTENT[0].1));
        let pdf = with(
            crate::dicom::uids::ENCAPSULATED_PDF_STORAGE,
            vec![
                DataElement::new(tags::ENCAPSULATED_DOCUMENT, VR::OB, PrimitiveValue::from(b"%PDF PLANTED".to_vec())),
                DataElement::new(tags::DOCUMENT_TITLE, VR::ST, PrimitiveValue::from("Report of PLANTED SMITH")),
                seq(tags::CONCEPT_NAME_CODE_SEQUENCE, text_item(tags::CODE_MEANING, VR::LO, "Discharge summary")),
                seq(Tag(0x0040, 0xA078), text_item(tags::PERSON_NAME, VR::PN, "PLANTED^SMITH")),
            ],
        );
        assert!(pdf.object.get(tags::ENCAPSULATED_DOCUMENT).is_none());
        let title = pdf.object.get(tags::DOCUMENT_TITLE).and_then(|e| e.to_str().ok()).unwrap_or_default().to_string();
        assert!(!title.contains("PLANTED"), "document title kept: {title}");
        // Codes keep their meaning; a nested free text of an unlisted sequence does not survive.
        let meaning =
            pdf.object.get(tags::CONCEPT_NAME_CODE_SEQUENCE).unwrap().items().unwrap()[0].element(tags::CODE_MEANING).unwrap().to_str().unwrap().to_string();
        assert_eq!(meaning, "Discharge summary");
        let ecg =
            with(crate::dicom::uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE, vec![seq(tags::WAVEFORM_SEQUENCE, text_item(tags::CHANNEL_LABEL, VR::SH, "PLANTED"))]);
        assert!(ecg.object.get(tags::WAVEFORM_SEQUENCE).is_none() && ecg.content_removed.is_some());
        // An image keeps its unlisted short texts in sequences (no content rule applies).
        let ct = with(crate::dicom::uids::CT_IMAGE_STORAGE, vec![seq(Tag(0x0018, 0x9346), text_item(tags::CODE_MEANING, VR::LO, "kept"))]);
        assert!(ct.content_removed.is_none());
    }

    /// An absent Burned In Annotation counts as YES for the listed modalities (CR by default),
    /// as NO for the others; an explicit value always decides.
    #[test]
    fn absent_burned_in_annotation_follows_the_modality_list() {
        let d = Deidentifier::new(Keys::for_tests(2), vec![], vec![]);
        let with = |modality: &str, burned: Option<&str>| {
            let mut elements = minimal();
            elements.push(DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from(modality)));
            if let Some(b) = burned {
                elements.push(DataElement::new(tags::BURNED_IN_ANNOTATION, VR::CS, PrimitiveValue::from(b)));
            }
            elements
        };
        let burned = |d: &Deidentifier, m, b| d.apply(InMemDicomObject::from_element_iter(with(m, b))).unwrap().burned_in.is_some();
        assert!(burned(&d, "CR", None), "CR without the attribute");
        assert!(!burned(&d, "CR", Some("NO")));
        assert!(burned(&d, "CT", Some("YES")));
        // Only exactly NO clears the pixels.
        for odd in ["YES\\NO", "Y", "no\\yes", "N", "UNKNOWN"] {
            assert!(burned(&d, "CT", Some(odd)), "Burned In Annotation {odd:?} counted as NO");
        }
        assert!(!burned(&d, "CT", Some(" no ")));
        for m in ["CT", "MR", "DX"] {
            assert!(!burned(&d, m, None), "{m} without the attribute");
        }
        let site = d.clone().with_burned_in_when_absent(&["dx".to_string()]);
        assert!(burned(&site, "DX", None) && !burned(&site, "CR", None));
    }

    #[test]
    fn safe_private_entries_parse() {
        assert_eq!(SafePrivate::parse("0029,SIEMENS CSA HEADER,10").unwrap(), SafePrivate { group: 0x29, creator: "SIEMENS CSA HEADER".into(), element: 0x10 });
        assert!(SafePrivate::parse("0028,X,10").is_err(), "even groups are not private");
        assert!(SafePrivate::parse("0029,10").is_err());
    }
}
