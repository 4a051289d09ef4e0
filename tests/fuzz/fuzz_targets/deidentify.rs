//! The de-identifier on arbitrary data sets, as ingest runs it (structural scan, parse,
//! de-identify, encode). Property: no identifying value planted in the data set survives in
//! what would be stored, at the top level or inside sequence items; and nothing panics.
//!
//! The planted values are derived from a hash of the input, so the fuzzer cannot put them
//! anywhere else (where keeping them would be right). A planted sequence and a planted UID are
//! also sent with a VR their attributes do not have (chosen by the hash): the rule must follow
//! the attribute, not the VR the sender wrote.
#![no_main]
#![allow(deprecated)] // Other Patient IDs is retired, and still received
use std::sync::OnceLock;

use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use triage_node::deid::{Deidentifier, Keys};
use triage_node::dicom::scan;

include!("../common.rs");

fn deidentifier() -> &'static Deidentifier {
    static D: OnceLock<Deidentifier> = OnceLock::new();
    D.get_or_init(|| Deidentifier::new(Keys::demo(), vec![], vec![]))
}

/// Identifying attributes that must never survive as received (Table E.1-1: removed, emptied
/// or replaced with a dummy or hash).
const IDENTITY: &[(Tag, VR)] = &[
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::OTHER_PATIENT_I_DS, VR::LO),
    (tags::PATIENT_ADDRESS, VR::LO),
    (tags::PATIENT_MOTHER_BIRTH_NAME, VR::PN),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::PERFORMING_PHYSICIAN_NAME, VR::PN),
    (tags::OPERATORS_NAME, VR::PN),
    (tags::INSTITUTION_NAME, VR::LO),
    (tags::ACCESSION_NUMBER, VR::SH),
    (tags::STUDY_ID, VR::SH),
    (tags::STATION_NAME, VR::SH),
    (tags::DEVICE_SERIAL_NUMBER, VR::LO),
    (tags::STUDY_DESCRIPTION, VR::LO),
    (tags::SERIES_DESCRIPTION, VR::LO),
    (tags::IMAGE_COMMENTS, VR::LT),
    (tags::PATIENT_COMMENTS, VR::LT),
    (tags::ADDITIONAL_PATIENT_HISTORY, VR::LT),
];

fn text(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let ts = common::syntax(selector);
    if scan::scan(rest, Some(rest.len() as u64), ts).is_err() {
        return; // ingest refuses it before parsing
    }
    let registry_ts = TransferSyntaxRegistry.get(ts.uid).unwrap();
    let Ok(mut obj) = InMemDicomObject::read_dataset_with_ts(rest, registry_ts) else { return };

    let digest = Sha256::digest(data);
    let marker = format!("Q{}", hex::encode_upper(&digest[..6]));
    let n = u64::from_be_bytes(digest[8..16].try_into().unwrap());
    let uid = |k: u8| format!("1.2.826.0.1.3680043.10.9{k}.{n}");

    for &(tag, vr) in IDENTITY {
        obj.put(text(tag, vr, &marker));
    }
    obj.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &uid(1)));
    obj.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &uid(2)));
    obj.put(text(tags::SOP_INSTANCE_UID, VR::UI, &uid(3)));
    if obj.element(tags::SOP_CLASS_UID).is_err() {
        obj.put(text(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"));
    }
    // Inside every item of every top-level sequence (and one level further down), too.
    let sequences: Vec<Tag> = obj.iter().filter(|e| e.vr() == VR::SQ).map(|e| e.tag()).collect();
    for tag in sequences {
        obj.update_value(tag, |value| {
            if let Some(items) = value.items_mut() {
                for item in items.iter_mut() {
                    item.put(text(tags::PATIENT_NAME, VR::PN, &marker));
                    item.put(text(tags::INSTITUTION_NAME, VR::LO, &marker));
                    item.put(text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &uid(4)));
                    let inner: Vec<Tag> = item.iter().filter(|e| e.vr() == VR::SQ).map(|e| e.tag()).collect();
                    for t in inner {
                        item.update_value(t, |v| {
                            if let Some(items) = v.items_mut() {
                                for i in items.iter_mut() {
                                    i.put(text(tags::PERSON_NAME, VR::PN, &marker));
                                }
                            }
                        });
                    }
                }
            }
        });
    }
    // A sequence and a UID attribute under a VR the sender chose: the sequence's item (Implicit
    // or Explicit VR Little Endian inside) as OB, UN, UT or OW; the UID as LO, SH, UT, UN or OB.
    let item_ts = TransferSyntaxRegistry.get(if digest[16] % 2 == 0 { "1.2.840.10008.1.2" } else { "1.2.840.10008.1.2.1" }).unwrap();
    let mut body = Vec::new();
    let inner = InMemDicomObject::from_element_iter([
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &uid(5)),
        text(tags::PATIENT_NAME, VR::PN, &marker),
    ]);
    if inner.write_dataset_with_ts(&mut body, item_ts).is_ok() {
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        item.extend_from_slice(&(body.len() as u32).to_le_bytes());
        item.extend_from_slice(&body);
        let seq_vr = [VR::OB, VR::UN, VR::UT, VR::OW][usize::from(digest[17] % 4)];
        let seq_tag = [tags::SOURCE_IMAGE_SEQUENCE, tags::ANATOMIC_REGION_SEQUENCE, tags::REFERENCED_IMAGE_SEQUENCE][usize::from(digest[18] % 3)];
        let value = if seq_vr == VR::OW && item.len() % 2 == 0 {
            PrimitiveValue::U16(item.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
        } else {
            PrimitiveValue::from(item)
        };
        obj.put(DataElement::new(seq_tag, seq_vr, value));
    }
    let uid_vr = [VR::LO, VR::SH, VR::UT, VR::UN, VR::OB][usize::from(digest[19] % 5)];
    let concatenation = uid(6);
    obj.put(if matches!(uid_vr, VR::UN | VR::OB) {
        DataElement::new(Tag(0x0020, 0x0242), uid_vr, PrimitiveValue::from(concatenation.into_bytes()))
    } else {
        text(Tag(0x0020, 0x0242), uid_vr, &concatenation)
    });
    let mut planted = Vec::new();
    if obj.write_dataset_with_ts(&mut planted, registry_ts).is_err() {
        return;
    }
    let Ok((_, stored)) = triage_node::deid::file::deidentify_header(deidentifier(), &planted, ts.uid, true) else { return };
    assert!(!contains(&stored, marker.as_bytes()), "a planted identifying value survived de-identification");
    for k in 1..=6 {
        assert!(!contains(&stored, uid(k).as_bytes()), "planted UID {k} survived de-identification");
    }
});
