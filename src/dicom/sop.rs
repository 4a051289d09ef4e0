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
    /// Modality Performed Procedure Step SCP (PS3.4 Annex F): study completion from the modality.
    ProcedureStep,
}

/// What an object of a storage class carries besides its header, which decides what is stored
/// (PS3.15 Annex E has no rule for content outside the attributes; `deid` says what it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Pixel data (single or multi-frame images, segmentations, dose grids): the header
    /// de-identified, the pixels as received unless the burned-in rule excludes them.
    Image,
    /// SR documents (incl. Key Object Selection and the dose reports): the Content Sequence.
    Structured,
    /// Encapsulated PDF, CDA, STL, OBJ, MTL: the document's bytes.
    Document,
    /// Waveforms: samples and their annotations.
    Waveform,
    /// Presentation states: graphic and text annotations.
    PresentationState,
    /// Other non-image objects (RT plans and records, registrations, measurements, protocols).
    Other,
}

impl Content {
    pub fn as_str(self) -> &'static str {
        match self {
            Content::Image => "image",
            Content::Structured => "structured report",
            Content::Document => "encapsulated document",
            Content::Waveform => "waveform",
            Content::PresentationState => "presentation state",
            Content::Other => "other non-image",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SopClass {
    pub uid: &'static str,
    pub name: &'static str,
    pub service: ServiceClass,
    /// A storage class the Storage SCP takes in (every standard one is; a site may refuse some
    /// with `[storage] refuse_sop_classes` / `accept_sop_classes`).
    pub ingested: bool,
    pub content: Content,
}

const fn storage(uid: &'static str, name: &'static str, content: Content) -> SopClass {
    SopClass { uid, name, service: ServiceClass::Storage, ingested: true, content }
}

const fn qr(uid: &'static str, name: &'static str) -> SopClass {
    SopClass { uid, name, service: ServiceClass::QueryRetrieve, ingested: false, content: Content::Other }
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

/// Modality Performed Procedure Step (PS3.4 Annex F): N-CREATE and N-SET from a modality.
pub const MPPS: &str = "1.2.840.10008.3.1.2.3.3";

/// Every abstract syntax the node accepts as SCP. The storage classes are those of PS3.4
/// Table B.5-1 (2025 editions), in UID order.
pub const SOP_CLASSES: &[SopClass] = &[
    SopClass { uid: uids::VERIFICATION, name: "Verification", service: ServiceClass::Verification, ingested: false, content: Content::Other },
    storage("1.2.840.10008.5.1.4.1.1.1", "Computed Radiography Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.1.1", "Digital X-Ray Image Storage - For Presentation", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.1.1.1", "Digital X-Ray Image Storage - For Processing", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.1.2", "Digital Mammography X-Ray Image Storage - For Presentation", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.1.2.1", "Digital Mammography X-Ray Image Storage - For Processing", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.1.3", "Digital Intra-Oral X-Ray Image Storage - For Presentation", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.1.3.1", "Digital Intra-Oral X-Ray Image Storage - For Processing", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.2", "CT Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.2.1", "Enhanced CT Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.2.2", "Legacy Converted Enhanced CT Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.3.1", "Ultrasound Multi-frame Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.4", "MR Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.4.1", "Enhanced MR Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.4.2", "MR Spectroscopy Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.4.3", "Enhanced MR Color Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.4.4", "Legacy Converted Enhanced MR Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.6.1", "Ultrasound Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.6.2", "Enhanced US Volume Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.6.3", "Photoacoustic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.7.1", "Multi-frame Single Bit Secondary Capture Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.7.2", "Multi-frame Grayscale Byte Secondary Capture Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.7.3", "Multi-frame Grayscale Word Secondary Capture Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.7.4", "Multi-frame True Color Secondary Capture Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.9.1.1", "12-lead ECG Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.1.2", "General ECG Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.1.3", "Ambulatory ECG Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.1.4", "General 32-bit ECG Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.2.1", "Hemodynamic Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.3.1", "Cardiac Electrophysiology Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.4.1", "Basic Voice Audio Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.4.2", "General Audio Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.5.1", "Arterial Pulse Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.6.1", "Respiratory Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.6.2", "Multi-channel Respiratory Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.7.1", "Routine Scalp Electroencephalogram Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.7.2", "Electromyogram Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.7.3", "Electrooculogram Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.7.4", "Sleep Electroencephalogram Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.8.1", "Body Position Waveform Storage", Content::Waveform),
    storage("1.2.840.10008.5.1.4.1.1.9.100.1", "Waveform Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.9.100.2", "Waveform Acquisition Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.1", "Grayscale Softcopy Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.2", "Color Softcopy Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.3", "Pseudo-Color Softcopy Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.4", "Blending Softcopy Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.5", "XA/XRF Grayscale Softcopy Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.6", "Grayscale Planar MPR Volumetric Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.7", "Compositing Planar MPR Volumetric Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.8", "Advanced Blending Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.9", "Volume Rendering Volumetric Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.10", "Segmented Volume Rendering Volumetric Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.11", "Multiple Volume Rendering Volumetric Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.11.12", "Variable Modality LUT Softcopy Presentation State Storage", Content::PresentationState),
    storage("1.2.840.10008.5.1.4.1.1.12.1", "X-Ray Angiographic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.12.1.1", "Enhanced XA Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.12.2", "X-Ray Radiofluoroscopic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.12.2.1", "Enhanced XRF Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.13.1.1", "X-Ray 3D Angiographic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.13.1.2", "X-Ray 3D Craniofacial Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.13.1.3", "Breast Tomosynthesis Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.13.1.4", "Breast Projection X-Ray Image Storage - For Presentation", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.13.1.5", "Breast Projection X-Ray Image Storage - For Processing", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.14.1", "Intravascular Optical Coherence Tomography Image Storage - For Presentation", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.14.2", "Intravascular Optical Coherence Tomography Image Storage - For Processing", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.20", "Nuclear Medicine Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.30", "Parametric Map Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.66", "Raw Data Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.66.1", "Spatial Registration Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.66.2", "Spatial Fiducials Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.66.3", "Deformable Spatial Registration Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.66.4", "Segmentation Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.66.5", "Surface Segmentation Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.66.6", "Tractography Results Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.66.7", "Label Map Segmentation Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.66.8", "Height Map Segmentation Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.67", "Real World Value Mapping Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.68.1", "Surface Scan Mesh Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.68.2", "Surface Scan Point Cloud Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.77.1.1", "VL Endoscopic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.1.1", "Video Endoscopic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.2", "VL Microscopic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.2.1", "Video Microscopic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.3", "VL Slide-Coordinates Microscopic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.4", "VL Photographic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.4.1", "Video Photographic Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.5.1", "Ophthalmic Photography 8 Bit Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.5.2", "Ophthalmic Photography 16 Bit Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.5.3", "Stereometric Relationship Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.77.1.5.4", "Ophthalmic Tomography Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.5.5", "Wide Field Ophthalmic Photography Stereographic Projection Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.5.6", "Wide Field Ophthalmic Photography 3D Coordinates Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.5.7", "Ophthalmic Optical Coherence Tomography En Face Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.5.8", "Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.6", "VL Whole Slide Microscopy Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.7", "Dermoscopic Photography Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.8", "Confocal Microscopy Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.77.1.9", "Confocal Microscopy Tiled Pyramidal Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.78.1", "Lensometry Measurements Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.78.2", "Autorefraction Measurements Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.78.3", "Keratometry Measurements Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.78.4", "Subjective Refraction Measurements Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.78.5", "Visual Acuity Measurements Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.78.6", "Spectacle Prescription Report Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.78.7", "Ophthalmic Axial Measurements Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.78.8", "Intraocular Lens Calculations Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.79.1", "Macular Grid Thickness and Volume Report Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.80.1", "Ophthalmic Visual Field Static Perimetry Measurements Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.81.1", "Ophthalmic Thickness Map Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.82.1", "Corneal Topography Map Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.88.11", "Basic Text SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.22", "Enhanced SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.34", "Comprehensive 3D SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.35", "Extensible SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.40", "Procedure Log Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.50", "Mammography CAD SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.59", "Key Object Selection Document Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.65", "Chest CAD SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.67", "X-Ray Radiation Dose SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.68", "Radiopharmaceutical Radiation Dose SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.69", "Colon CAD SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.70", "Implantation Plan SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.71", "Acquisition Context SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.72", "Simplified Adult Echo SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.73", "Patient Radiation Dose SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.74", "Planned Imaging Agent Administration SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.75", "Performed Imaging Agent Administration SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.76", "Enhanced X-Ray Radiation Dose SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.88.77", "Waveform Annotation SR Storage", Content::Structured),
    storage("1.2.840.10008.5.1.4.1.1.90.1", "Content Assessment Results Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.91.1", "Microscopy Bulk Simple Annotations Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.104.1", "Encapsulated PDF Storage", Content::Document),
    storage("1.2.840.10008.5.1.4.1.1.104.2", "Encapsulated CDA Storage", Content::Document),
    storage("1.2.840.10008.5.1.4.1.1.104.3", "Encapsulated STL Storage", Content::Document),
    storage("1.2.840.10008.5.1.4.1.1.104.4", "Encapsulated OBJ Storage", Content::Document),
    storage("1.2.840.10008.5.1.4.1.1.104.5", "Encapsulated MTL Storage", Content::Document),
    storage("1.2.840.10008.5.1.4.1.1.128", "Positron Emission Tomography Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.128.1", "Legacy Converted Enhanced PET Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.130", "Enhanced PET Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.131", "Basic Structured Display Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.200.2", "CT Performed Procedure Protocol Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.200.8", "XA Performed Procedure Protocol Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.1", "RT Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.481.2", "RT Dose Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.4", "RT Beams Treatment Record Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.5", "RT Plan Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.6", "RT Brachy Treatment Record Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.7", "RT Treatment Summary Record Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.8", "RT Ion Plan Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.9", "RT Ion Beams Treatment Record Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.10", "RT Physician Intent Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.11", "RT Segment Annotation Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.12", "RT Radiation Set Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.13", "C-Arm Photon-Electron Radiation Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.14", "Tomotherapeutic Radiation Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.15", "Robotic-Arm Radiation Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.16", "RT Radiation Record Set Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.17", "RT Radiation Salvage Record Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.18", "Tomotherapeutic Radiation Record Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.19", "C-Arm Photon-Electron Radiation Record Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.20", "Robotic Radiation Record Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.21", "RT Radiation Set Delivery Instruction Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.22", "RT Treatment Preparation Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.1.1.481.23", "Enhanced RT Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.481.24", "Enhanced Continuous RT Image Storage", Content::Image),
    storage("1.2.840.10008.5.1.4.1.1.481.25", "RT Patient Position Acquisition Instruction Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.34.7", "RT Beams Delivery Instruction Storage", Content::Other),
    storage("1.2.840.10008.5.1.4.34.10", "RT Brachy Application Setup Delivery Instruction Storage", Content::Other),
    SopClass {
        uid: uids::STORAGE_COMMITMENT_PUSH_MODEL,
        name: "Storage Commitment Push Model",
        service: ServiceClass::Commitment,
        ingested: false,
        content: Content::Other,
    },
    SopClass { uid: MPPS, name: "Modality Performed Procedure Step", service: ServiceClass::ProcedureStep, ingested: false, content: Content::Other },
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

/// The storage class `uid`, if it is one the Storage SCP takes in.
pub fn storage_class(uid: &str) -> Option<&'static SopClass> {
    sop_class(uid).filter(|c| c.service == ServiceClass::Storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_is_listed_once_and_the_families_are_classified() {
        let mut seen = std::collections::HashSet::new();
        for c in SOP_CLASSES {
            assert!(seen.insert(c.uid), "{} twice", c.uid);
        }
        let content = |uid: &str| storage_class(uid).unwrap().content;
        assert_eq!(content(uids::X_RAY_RADIATION_DOSE_SR_STORAGE), Content::Structured);
        assert_eq!(content(uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE), Content::Structured);
        assert_eq!(content(uids::ENCAPSULATED_PDF_STORAGE), Content::Document);
        assert_eq!(content(uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE), Content::Waveform);
        assert_eq!(content(uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE), Content::PresentationState);
        assert_eq!(content(uids::BREAST_TOMOSYNTHESIS_IMAGE_STORAGE), Content::Image);
        assert_eq!(content(uids::RT_PLAN_STORAGE), Content::Other);
        assert!(storage_class(MPPS).is_none() && storage_class(uids::VERIFICATION).is_none());
    }
}
