//! The DICOM network, in layers: `ul` (PDUs, negotiation), `dimse` (command sets and the one
//! message reader/writer), `association` (the accepting side's state machine, generic over its
//! byte stream), `service` (the contract services implement), `access` (who may associate, as
//! a trait), `server` (listener, limits) and `client` (the requesting side).
//!
//! Must not: know SQL, where instances are stored, or any service's rules: services live in
//! `crate::services` and are registered at start-up.

pub mod access;
pub mod association;
pub mod client;
pub mod dimse;
pub mod server;
pub mod service;
pub mod ul;

pub use association::{Association, AssociationError, Shared};
pub use server::Listener;
pub use service::{Request, Service, Services};
