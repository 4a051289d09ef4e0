//! The SOP classes and transfer syntaxes this node negotiates: data, not logic.
//!
//! Owns: the tables the conformance statement (conformance/) documents; a unit test there keeps
//! the two equal. Must not: decide preference order (that is configuration) or do IO.

use dicom_dictionary_std::uids;

/// What a transfer syntax means for reading the data set that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSyntax {
    pub uid: &'static str,
    pub name: &'static str,
    pub explicit_vr: bool,
    pub big_endian: bool,
    pub deflated: bool,
}

const fn ts(uid: &'static str, name: &'static str, explicit_vr: bool, big_endian: bool, deflated: bool) -> TransferSyntax {
    TransferSyntax { uid, name, explicit_vr, big_endian, deflated }
}

/// Every transfer syntax the node can store as received.
pub const TRANSFER_SYNTAXES: &[TransferSyntax] = &[
    ts(uids::IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian", false, false, false),
    ts(uids::EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian", true, false, false),
    ts("1.2.840.10008.1.2.2", "Explicit VR Big Endian (retired)", true, true, false),
    ts(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, "Deflated Explicit VR Little Endian", true, false, true),
    ts(uids::JPEG_BASELINE8_BIT, "JPEG Baseline (Process 1)", true, false, false),
    ts(uids::JPEG_LOSSLESS, "JPEG Lossless, Non-Hierarchical (Process 14)", true, false, false),
    ts(uids::JPEG_LOSSLESS_SV1, "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])", true, false, false),
    ts(uids::JPEGLS_LOSSLESS, "JPEG-LS Lossless Image Compression", true, false, false),
    ts(uids::JPEGLS_NEAR_LOSSLESS, "JPEG-LS Lossy (Near-Lossless) Image Compression", true, false, false),
    ts(uids::JPEG2000_LOSSLESS, "JPEG 2000 Image Compression (Lossless Only)", true, false, false),
    ts(uids::JPEG2000, "JPEG 2000 Image Compression", true, false, false),
    ts(uids::RLE_LOSSLESS, "RLE Lossless", true, false, false),
];

pub fn transfer_syntax(uid: &str) -> Option<&'static TransferSyntax> {
    TRANSFER_SYNTAXES.iter().find(|t| t.uid == uid)
}

/// Which DIMSE service a negotiated abstract syntax belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Verification,
    Storage,
    /// Storage Commitment Push Model, as SCU: the PACS's N-EVENT-REPORT (commitment results)
    /// arrives on an association it opens, taking the SCP role by role selection.
    Commitment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SopClass {
    pub uid: &'static str,
    pub name: &'static str,
    pub service: Service,
}

const fn storage(uid: &'static str, name: &'static str) -> SopClass {
    SopClass { uid, name, service: Service::Storage }
}

/// Every abstract syntax the node accepts as SCP.
pub const SOP_CLASSES: &[SopClass] = &[
    SopClass { uid: uids::VERIFICATION, name: "Verification", service: Service::Verification },
    storage(uids::CT_IMAGE_STORAGE, "CT Image Storage"),
    storage(uids::ENHANCED_CT_IMAGE_STORAGE, "Enhanced CT Image Storage"),
    storage(uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE, "Computed Radiography Image Storage"),
    storage(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION, "Digital X-Ray Image Storage - For Presentation"),
    storage(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PROCESSING, "Digital X-Ray Image Storage - For Processing"),
    storage(uids::MR_IMAGE_STORAGE, "MR Image Storage"),
    storage(uids::ENHANCED_MR_IMAGE_STORAGE, "Enhanced MR Image Storage"),
    storage(uids::SECONDARY_CAPTURE_IMAGE_STORAGE, "Secondary Capture Image Storage"),
    SopClass { uid: uids::STORAGE_COMMITMENT_PUSH_MODEL, name: "Storage Commitment Push Model", service: Service::Commitment },
];

pub fn sop_class(uid: &str) -> Option<&'static SopClass> {
    SOP_CLASSES.iter().find(|c| c.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATEMENT: &str = include_str!("../../conformance/conformance-statement.md");

    /// The rows of the table that follows `<!-- table:NAME -->`, as cells, header excluded.
    fn table(name: &str) -> Vec<Vec<String>> {
        let start = STATEMENT.find(&format!("<!-- table:{name} -->")).unwrap_or_else(|| panic!("no table {name}"));
        let body = &STATEMENT[start..];
        let end = body.find("<!-- end -->").unwrap();
        body[..end]
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
            .collect()
    }

    #[test]
    fn conformance_statement_matches_the_code() {
        let sop_rows: Vec<(String, String)> = table("sop-classes").into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
        let sop_code: Vec<(String, String)> = SOP_CLASSES.iter().map(|c| (c.name.to_string(), c.uid.to_string())).collect();
        assert_eq!(sop_rows, sop_code, "SOP class table differs from association::sop::SOP_CLASSES");

        // The transfer syntax table is in the default preference order.
        let ts_rows: Vec<(String, String)> = table("transfer-syntaxes").into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
        let defaults = crate::config::Settings::load(None).unwrap().dicom.transfer_syntax_preference;
        let ts_code: Vec<(String, String)> =
            defaults.iter().map(|uid| (transfer_syntax(uid).unwrap().name.to_string(), uid.clone())).collect();
        assert_eq!(ts_rows, ts_code, "transfer syntax table differs from the default preference");
        assert_eq!(ts_rows.len(), TRANSFER_SYNTAXES.len(), "every storable syntax is offered by default");

        // Every C-STORE status the code can send is documented, and nothing else.
        use crate::ingest::IngestError as E;
        let mut code_statuses: Vec<u16> = [
            E::OutOfDisk { available: 0, floor: 1 },
            E::Unparseable(crate::ingest::scan::ScanError::Truncated { offset: 0 }),
            E::SopClassMismatch,
            E::NotNegotiated,
            E::Task(String::new()),
        ]
        .iter()
        .map(E::dimse_status)
        .chain([0x0000])
        .collect();
        code_statuses.sort();
        let mut documented: Vec<u16> =
            table("store-statuses").iter().map(|r| u16::from_str_radix(r[0].trim_start_matches("0x"), 16).unwrap()).collect();
        documented.sort();
        assert_eq!(documented, code_statuses);

        // Association rejections: the reasons the negotiation code produces.
        let rejections = table("association-rejections");
        assert_eq!(rejections.len(), 7);
        let limit = super::super::negotiation::local_limit_exceeded();
        assert_eq!((limit.result as u8, rejections[4][1].starts_with('2')), (2, true));
    }
}
