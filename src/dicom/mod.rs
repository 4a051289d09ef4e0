//! The DICOM vocabulary every other module speaks: transfer syntaxes and SOP classes (`sop`),
//! DIMSE statuses (`status`), Part 10 files (`part10`), multipart/related bodies for DICOMweb
//! (`multipart`: a streaming reader and a writer), the DICOM JSON Model (`json`, PS3.18 F.2), the bounded-memory structural scan
//! of a data set (`scan`), and C-FIND attribute matching (`matching`, PS3.4 C.2.2.2). UIDs come from `dicom_dictionary_std::uids`, re-exported here.
//!
//! A leaf: it imports nothing else of this crate, so the network layer, ingest, de-identification
//! and results can all use it without depending on each other.

pub mod json;
pub mod matching;
pub mod multipart;
pub mod part10;
pub mod scan;
pub mod sop;
pub mod status;

pub use dicom_dictionary_std::uids;
pub use sop::{ServiceClass, SopClass, TransferSyntax};
pub use status::{Status, StatusKind};
