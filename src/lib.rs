//! triage-node: a DICOM Storage SCP that de-identifies and triages studies with AI.
//! See ARCHITECTURE.md for the data flow and the invariants of each module.

pub mod admin;
pub mod archive;
pub mod audit;
pub mod blobs;
pub mod config;
pub mod context;
pub mod db;
pub mod deid;
pub mod delivery;
pub mod dicom;
pub mod domain;
pub mod hl7;
pub mod http;
pub mod inference;
pub mod ingest;
pub mod net;
pub mod node;
pub mod results;
pub mod services;
pub mod triage;
pub mod worker;
