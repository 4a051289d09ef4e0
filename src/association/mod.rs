//! The DICOM upper layer and DIMSE: listener, negotiation, P-DATA reassembly, command sets.
//!
//! Owns: everything that knows PDUs. dicom-ul supplies the PDU codec; the association state
//! machine (PS3.8), negotiation policy and the DIMSE message layer (PS3.7) are ours.
//! Must not: know SQL or where instances are stored; it hands data set bytes to `ingest`.

pub mod client;
pub mod command;
pub mod negotiation;
pub mod pdu;
mod server;
mod session;
pub mod sop;

pub use server::{AssociationError, Listener, Shared};
