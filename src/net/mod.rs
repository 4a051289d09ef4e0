//! The DICOM network, in layers: `ul` (PDUs, negotiation), `dimse` (command sets and the one
//! message reader/writer both sides use), `association` (an accepted association as services
//! see it, generic over its byte stream), `service` (the contract services implement and their
//! registry), `session` (the accepting side's state machine), `access` (who may associate, as a
//! trait), `server` (listener, limits), `client` (the requesting side), `tls` (the TLS transport of both sides) and
//! `settings` (the `[dicom]` section).
//!
//! Must not: know SQL, where instances are stored, or any service's rules: the services are a
//! module of their own, registered at start-up.

pub mod access;
pub mod association;
pub mod client;
pub mod dimse;
pub mod server;
pub mod service;
pub mod session;
pub mod settings;
pub mod tls;
pub mod ul;

pub use association::{Association, AssociationError};
pub use server::Listener;
pub use service::{Offer, Request, Service, Services};
pub use session::Shared;
