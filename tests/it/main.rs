//! The integration tests: one binary (it links libtorch once), one module per area. Each test
//! starts the real `triage-node` binary against real peers (DCMTK, pynetdicom, Orthanc,
//! SQLite, PostgreSQL); `common` holds the harness.

mod common;

mod association_policy;
mod atna;
mod backup;
mod browser;
mod cluster;
mod config_and_logs;
mod db_engines;
mod deid;
mod detection;
mod dicomweb_out;
mod dicomweb_qido;
mod dicomweb_stow;
mod doctor;
mod durability;
mod hl7;
mod hostile;
mod http;
mod layering;
mod model_import;
mod notify;
mod oidc;
mod onnx;
mod outbox;
mod package;
mod preprocess;
mod protocol_edges;
mod query;
mod refusals;
mod results;
mod retract;
mod saliency;
mod scanner_study;
mod segmentation;
mod send_scu;
mod similar;
mod smtp;
mod status;
mod storage_scp;
mod tls;
mod torch_runtime;
mod triage;
mod ups;
mod volume;
mod worklist;
