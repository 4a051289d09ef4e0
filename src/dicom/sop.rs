//! The SOP classes and transfer syntaxes this node negotiates: data, not logic.
//!
//! Owns: the tables the conformance statement (conformance/) documents; a unit test in
//! `services` keeps the two equal. Must not: decide preference order (that is configuration)
//! or do IO.

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

/// Which DIMSE service class (PS3.4) a negotiated abstract syntax belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceClass {
    Verification,
    Storage,
    /// Storage Commitment Push Model, as SCU: the PACS's N-EVENT-REPORT (commitment results)
    /// arrives on an association it opens, taking the SCP role by role selection.
    Commitment,
    /// Query/Retrieve (PS3.4 Annex C): C-FIND, C-MOVE and C-GET over the node's AI results.
    QueryRetrieve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SopClass {
    pub uid: &'static str,
    pub name: &'static str,
    pub service: ServiceClass,
    /// A storage class the Storage SCP takes in (false: one the node only sends, as the
    /// results it returns or the sub-operations of a C-GET).
    pub ingested: bool,
}

const fn storage(uid: &'static str, name: &'static str) -> SopClass {
    SopClass { uid, name, service: ServiceClass::Storage, ingested: true }
}

const fn sent(uid: &'static str, name: &'static str) -> SopClass {
    SopClass { uid, name, service: ServiceClass::Storage, ingested: false }
}

const fn qr(uid: &'static str, name: &'static str) -> SopClass {
    SopClass { uid, name, service: ServiceClass::QueryRetrieve, ingested: false }
}

/// The Query/Retrieve SOP classes (PS3.4 C.6), by information model and command.
pub mod qr {
    pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
    pub const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
    pub const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
    pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
    pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
}

/// Every abstract syntax the node accepts as SCP.
pub const SOP_CLASSES: &[SopClass] = &[
    SopClass { uid: uids::VERIFICATION, name: "Verification", service: ServiceClass::Verification, ingested: false },
    storage(uids::CT_IMAGE_STORAGE, "CT Image Storage"),
    storage(uids::ENHANCED_CT_IMAGE_STORAGE, "Enhanced CT Image Storage"),
    storage(uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE, "Computed Radiography Image Storage"),
    storage(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION, "Digital X-Ray Image Storage - For Presentation"),
    storage(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PROCESSING, "Digital X-Ray Image Storage - For Processing"),
    storage(uids::MR_IMAGE_STORAGE, "MR Image Storage"),
    storage(uids::ENHANCED_MR_IMAGE_STORAGE, "Enhanced MR Image Storage"),
    storage(uids::SECONDARY_CAPTURE_IMAGE_STORAGE, "Secondary Capture Image Storage"),
    sent(uids::COMPREHENSIVE3_DSR_STORAGE, "Comprehensive 3D SR Storage"),
    SopClass { uid: uids::STORAGE_COMMITMENT_PUSH_MODEL, name: "Storage Commitment Push Model", service: ServiceClass::Commitment, ingested: false },
    qr(qr::PATIENT_ROOT_FIND, "Patient Root Query/Retrieve Information Model - FIND"),
    qr(qr::PATIENT_ROOT_MOVE, "Patient Root Query/Retrieve Information Model - MOVE"),
    qr(qr::PATIENT_ROOT_GET, "Patient Root Query/Retrieve Information Model - GET"),
    qr(qr::STUDY_ROOT_FIND, "Study Root Query/Retrieve Information Model - FIND"),
    qr(qr::STUDY_ROOT_MOVE, "Study Root Query/Retrieve Information Model - MOVE"),
    qr(qr::STUDY_ROOT_GET, "Study Root Query/Retrieve Information Model - GET"),
];

pub fn sop_class(uid: &str) -> Option<&'static SopClass> {
    SOP_CLASSES.iter().find(|c| c.uid == uid)
}

