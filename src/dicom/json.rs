//! The DICOM JSON Model (PS3.18 Annex F.2) of a data set, as QIDO-RS answers and WADO-RS
//! `metadata` return it: each attribute keyed by its tag as eight upper-case hex digits, with
//! its `vr` and its `Value` array. Person names as `{"Alphabetic", "Ideographic", "Phonetic"}`
//! objects, IS / DS and binary numbers as JSON numbers (a malformed IS / DS as its text), AT as
//! tag strings, sequences as arrays of data sets, a zero-length attribute with its `vr` only,
//! an empty component of a multi-valued one as `null`. Binary values (OB, OW, OF, OD, OL, OV,
//! UN) of at most `INLINE_MAX` bytes as `InlineBinary` (base64); larger ones (Pixel Data, Float
//! Pixel Data) and encapsulated pixel data are left out: the caller retrieves the instance.
//! Group lengths (gggg,0000) are left out. Pure: no IO.

use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::VR;
use dicom_object::InMemDicomObject;
use serde_json::{json, Map, Value as Json};

/// The largest binary value given inline.
pub const INLINE_MAX: usize = 4096;

/// `obj` as a DICOM JSON object.
pub fn to_json(obj: &InMemDicomObject) -> Json {
    let mut out = Map::new();
    for e in obj {
        let tag = e.tag();
        if tag.element() == 0 {
            continue;
        }
        let vr = e.vr();
        let mut attr = Map::new();
        attr.insert("vr".into(), Json::String(vr.to_string().into()));
        match e.value() {
            Value::Sequence(seq) => {
                if !seq.items().is_empty() {
                    attr.insert("Value".into(), Json::Array(seq.items().iter().map(to_json).collect()));
                }
            }
            Value::PixelSequence(_) => continue,
            Value::Primitive(p) => match values(vr, p) {
                Some(Field::Values(v)) if !v.is_empty() => {
                    attr.insert("Value".into(), Json::Array(v));
                }
                Some(Field::Values(_)) => {}
                Some(Field::Inline(b64)) => {
                    attr.insert("InlineBinary".into(), Json::String(b64));
                }
                None => continue,
            },
        }
        out.insert(format!("{:04X}{:04X}", tag.group(), tag.element()), Json::Object(attr));
    }
    Json::Object(out)
}

enum Field {
    Values(Vec<Json>),
    Inline(String),
}

fn is_binary(vr: VR) -> bool {
    matches!(vr, VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN)
}

/// The `Value` (or `InlineBinary`) of a primitive value; None: left out (large binary).
fn values(vr: VR, p: &PrimitiveValue) -> Option<Field> {
    if matches!(p, PrimitiveValue::Empty) {
        return Some(Field::Values(Vec::new()));
    }
    if is_binary(vr) {
        let bytes = p.to_bytes();
        return (bytes.len() <= INLINE_MAX).then(|| Field::Inline(base64(&bytes)));
    }
    let texts = || -> Vec<String> {
        match vr {
            // One value each, backslashes included (PS3.5 6.2).
            VR::LT | VR::ST | VR::UT | VR::UR => vec![p.to_str().trim_end_matches([' ', '\0']).to_string()],
            _ => p.to_multi_str().iter().map(|v| v.trim_matches([' ', '\0']).to_string()).collect(),
        }
    };
    let out: Vec<Json> = match vr {
        VR::PN => texts().into_iter().map(|v| if v.is_empty() { Json::Null } else { person_name(&v) }).collect(),
        VR::IS | VR::DS => texts()
            .into_iter()
            .map(|v| {
                if v.is_empty() {
                    Json::Null
                } else if let Ok(i) = v.parse::<i64>() {
                    json!(i)
                } else {
                    v.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| json!(f)).unwrap_or(Json::String(v))
                }
            })
            .collect(),
        VR::US | VR::SS | VR::UL | VR::SL | VR::UV | VR::SV => match p {
            PrimitiveValue::U16(v) => v.iter().map(|x| json!(x)).collect(),
            PrimitiveValue::I16(v) => v.iter().map(|x| json!(x)).collect(),
            PrimitiveValue::U32(v) => v.iter().map(|x| json!(x)).collect(),
            PrimitiveValue::I32(v) => v.iter().map(|x| json!(x)).collect(),
            PrimitiveValue::U64(v) => v.iter().map(|x| json!(x)).collect(),
            PrimitiveValue::I64(v) => v.iter().map(|x| json!(x)).collect(),
            other => other.to_multi_int::<i64>().map(|v| v.into_iter().map(|x| json!(x)).collect()).unwrap_or_default(),
        },
        VR::FL | VR::FD => p.to_multi_float64().map(|v| v.into_iter().map(|x| if x.is_finite() { json!(x) } else { Json::Null }).collect()).unwrap_or_default(),
        VR::AT => match p {
            PrimitiveValue::Tags(t) => t.iter().map(|t| Json::String(format!("{:04X}{:04X}", t.group(), t.element()))).collect(),
            _ => Vec::new(),
        },
        _ => texts().into_iter().map(|v| if v.is_empty() { Json::Null } else { Json::String(v) }).collect(),
    };
    // A single empty text value is a zero-length attribute.
    if out.len() == 1 && out[0].is_null() {
        return Some(Field::Values(Vec::new()));
    }
    Some(Field::Values(out))
}

/// A PN value's component groups (PS3.18 F.2.2).
fn person_name(v: &str) -> Json {
    let mut o = Map::new();
    for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"].into_iter().zip(v.split('=')) {
        if !group.is_empty() {
            o.insert(name.into(), Json::String(group.to_string()));
        }
    }
    Json::Object(o)
}

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, Length, Tag};
    use dicom_dictionary_std::tags;

    use super::*;

    fn el(tag: Tag, vr: VR, v: PrimitiveValue) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, vr, v)
    }

    #[test]
    fn base64_pads_as_rfc_4648_says() {
        for (input, expected) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn each_vr_is_written_as_annex_f_says() {
        let mut o = InMemDicomObject::new_empty();
        o.put(el(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Müller^Anna=ミュラー^アンナ")));
        o.put(el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, PrimitiveValue::Empty));
        o.put(el(tags::MODALITIES_IN_STUDY, VR::CS, PrimitiveValue::Strs(["OT".to_string(), "SR".to_string()].into_iter().collect())));
        o.put(el(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, PrimitiveValue::from("2 ")));
        o.put(el(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from("0.5")));
        o.put(el(tags::ROWS, VR::US, PrimitiveValue::from(512u16)));
        o.put(el(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("bogus")));
        o.put(el(tags::LUT_DESCRIPTOR, VR::SS, PrimitiveValue::I16([-1i16, 2].into_iter().collect())));
        o.put(el(tags::FRAME_INCREMENT_POINTER, VR::AT, PrimitiveValue::Tags([tags::FRAME_TIME].into_iter().collect())));
        o.put(el(tags::TEXT_VALUE, VR::UT, PrimitiveValue::from("a\\b")));
        o.put(el(tags::ENCAPSULATED_DOCUMENT, VR::OB, PrimitiveValue::U8([1u8, 2, 3].into_iter().collect())));
        o.put(el(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U8(vec![0u8; INLINE_MAX + 2].into())));
        o.put(el(Tag(0x0008, 0x0000), VR::UL, PrimitiveValue::from(4u32)));
        let mut item = InMemDicomObject::new_empty();
        item.put(el(tags::CODE_VALUE, VR::SH, PrimitiveValue::from("126000")));
        o.put(DataElement::new(tags::CONCEPT_NAME_CODE_SEQUENCE, VR::SQ, DataSetSequence::new(vec![item], Length::UNDEFINED)));
        o.put(DataElement::new(tags::CONTENT_SEQUENCE, VR::SQ, DataSetSequence::new(Vec::<InMemDicomObject>::new(), Length::UNDEFINED)));
        let j = to_json(&o);
        let want = json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Anna", "Ideographic": "ミュラー^アンナ"}]},
            "00080090": {"vr": "PN"},
            "00080061": {"vr": "CS", "Value": ["OT", "SR"]},
            "00201208": {"vr": "IS", "Value": [2]},
            "00180050": {"vr": "DS", "Value": [0.5]},
            "00280010": {"vr": "US", "Value": [512]},
            "00281053": {"vr": "DS", "Value": ["bogus"]},
            "00283002": {"vr": "SS", "Value": [-1, 2]},
            "00280009": {"vr": "AT", "Value": ["00181063"]},
            "0040A160": {"vr": "UT", "Value": ["a\\b"]},
            "00420011": {"vr": "OB", "InlineBinary": "AQID"},
            "0040A043": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["126000"]}}]},
            "0040A730": {"vr": "SQ"},
        });
        assert_eq!(j, want, "{}", serde_json::to_string_pretty(&j).unwrap());
    }
}
