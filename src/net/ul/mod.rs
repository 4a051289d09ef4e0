//! The DICOM upper layer (PS3.8): PDU framing (`pdu`, over dicom-ul's codec) and A-ASSOCIATE
//! negotiation as a pure function (`negotiation`).

pub mod negotiation;
pub mod pdu;
