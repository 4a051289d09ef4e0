//! Small helpers to build the data sets the node creates (SR, Secondary Capture), and their
//! Part 10 encoding (Explicit VR Little Endian).

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use sha2::{Digest, Sha256};

use crate::dicom::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// A coded concept: (value, scheme designator, meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

impl Code {
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Code {
        Code { value: value.into(), scheme: scheme.into(), meaning: meaning.into() }
    }

    /// A code sequence item (Code Value, Coding Scheme Designator, Code Meaning).
    pub fn item(&self) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, tags::CODE_VALUE, VR::SH, &self.value);
        put(&mut o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, &self.scheme);
        put(&mut o, tags::CODE_MEANING, VR::LO, &self.meaning);
        o
    }
}

pub fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

pub fn put_u16(obj: &mut InMemDicomObject, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

pub fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED)));
}

/// A UID for an object the node creates, stable for the same `parts`: under `root` when one is
/// configured, else `2.25.` and 128 bits of SHA-256 (PS3.5 B.2). At most 64 characters.
pub fn uid(root: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let n = u128::from_be_bytes(d[..16].try_into().expect("16 bytes"));
    let root = root.trim_end_matches('.');
    if root.is_empty() {
        return format!("2.25.{n}");
    }
    let room = 64usize.saturating_sub(root.len() + 1).clamp(1, 39);
    let digits = n.to_string();
    let tail = digits[digits.len().saturating_sub(room)..].trim_start_matches('0');
    format!("{root}.{}", if tail.is_empty() { "0" } else { tail })
}

/// DICOM DA and TM of a time in milliseconds since the epoch (UTC).
pub fn date_time(ms: i64) -> (String, String) {
    let (year, month, day) = crate::domain::civil_from_days(ms.div_euclid(86_400_000));
    let in_day = ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    (format!("{year:04}{month:02}{day:02}"), format!("{h:02}{m:02}{s:02}.{milli:03}"))
}

/// What every object the node creates starts with: SOP Common (UTF-8 character set, class,
/// instance), the study's identity (`copy_identity`), and its creation, series and content
/// date and time (`created_ms`).
pub fn start_object(sop_class: &str, sop_instance: &str, identity: &InMemDicomObject, created_ms: i64) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    put(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put(&mut o, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop_instance);
    copy_identity(&mut o, identity);
    let (date, time) = date_time(created_ms);
    for (d, t) in
        [(tags::INSTANCE_CREATION_DATE, tags::INSTANCE_CREATION_TIME), (tags::SERIES_DATE, tags::SERIES_TIME), (tags::CONTENT_DATE, tags::CONTENT_TIME)]
    {
        put(&mut o, d, VR::DA, &date);
        put(&mut o, t, VR::TM, &time);
    }
    o
}

/// The algorithm that made a result object, as IHE AI Results names it: an item of the
/// Contributing Equipment Sequence (PS3.3 C.12.1.1.5), purpose (109102, DCM, "Processing
/// Equipment"), the model as Manufacturer's Model Name and Software Versions.
#[derive(Debug, Clone)]
pub struct Algorithm {
    pub manufacturer: String,
    pub model: String,
    pub version: String,
    pub device_uid: String,
}

/// Put `algorithm` in `obj` as its Contributing Equipment Sequence, contributed at `at_ms`.
pub fn put_algorithm(obj: &mut InMemDicomObject, algorithm: &Algorithm, at_ms: i64) {
    let mut item = InMemDicomObject::new_empty();
    put_seq(&mut item, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![Code::new("109102", "DCM", "Processing Equipment").item()]);
    put(&mut item, tags::MANUFACTURER, VR::LO, &ascii(&algorithm.manufacturer).chars().take(64).collect::<String>());
    put(&mut item, tags::MANUFACTURER_MODEL_NAME, VR::LO, &ascii(&algorithm.model).chars().take(64).collect::<String>());
    put(&mut item, tags::SOFTWARE_VERSIONS, VR::LO, &ascii(&algorithm.version).chars().take(64).collect::<String>());
    put(&mut item, tags::DEVICE_UID, VR::UI, &algorithm.device_uid);
    let (date, time) = date_time(at_ms);
    put(&mut item, tags::CONTRIBUTION_DATE_TIME, VR::DT, &format!("{date}{time}+0000"));
    put(&mut item, tags::CONTRIBUTION_DESCRIPTION, VR::ST, "AI model that produced this object");
    put_seq(obj, tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, vec![item]);
}

/// Encode `obj` as a Part 10 file in Explicit VR Little Endian.
pub fn part10(obj: &InMemDicomObject, sop_class: &str, sop_instance: &str) -> Result<Vec<u8>, String> {
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| e.to_string())?;
    let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut out = Vec::with_capacity(64 << 10);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| e.to_string())?;
    obj.write_dataset_with_ts(&mut out, &ts).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Only printable ASCII survives (burned-in text and generated strings are ASCII by design).
pub fn ascii(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '-' }).collect()
}

/// The patient and study attributes a result object copies from its study (Patient and General
/// Study modules; all Type 2 or 3, written empty when the study has no value). In the outbox
/// these are the de-identified values; `reidentify` puts the originals back at sending time.
pub const IDENTITY: [(Tag, VR); 12] = [
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::ISSUER_OF_PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_INSTANCE_UID, VR::UI),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
    (tags::STUDY_DESCRIPTION, VR::LO),
];

/// Copy the identity attributes of `source` (a stored instance's header) into `obj`.
pub fn copy_identity(obj: &mut InMemDicomObject, source: &InMemDicomObject) {
    for (tag, vr) in IDENTITY {
        match source.get(tag) {
            Some(e) => {
                obj.put(e.clone());
            }
            None if tag == tags::ISSUER_OF_PATIENT_ID || tag == tags::STUDY_DESCRIPTION => {}
            None => {
                obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
            }
        }
    }
}

/// A string attribute of `obj`, trimmed; None when absent or empty.
pub fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag).and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_valid_and_short() {
        let a = uid("", &["study", "model"]);
        assert_eq!(a, uid("", &["study", "model"]));
        assert_ne!(a, uid("", &["studym", "odel"]));
        assert!(a.starts_with("2.25.") && a.len() <= 64);
        let b = uid("1.2.826.0.1.3680043.10.999.12345678901234567890", &["x"]);
        assert!(b.len() <= 64 && b.starts_with("1.2.826.0.1.3680043.10.999.12345678901234567890."), "{b}");
        assert!(b.split('.').all(|c| !c.is_empty() && (c == "0" || !c.starts_with('0'))), "{b}");
    }

    #[test]
    fn dates_are_dicom() {
        assert_eq!(date_time(0), ("19700101".to_string(), "000000.000".to_string()));
        // 2026-12-01 14:30:05.250 UTC
        assert_eq!(date_time(1_796_135_405_250), ("20261201".to_string(), "143005.250".to_string()));
        assert_eq!(date_time(951_782_400_000).0, "20000229");
    }
}
