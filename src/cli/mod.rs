//! The command line's groups, one file each: parse (clap) -> one `admin` operation -> print.
//! `main` parses the command line and dispatches to them.

pub mod ae;
pub mod audit;
pub mod deid;
pub mod dicom;
pub mod model;
pub mod offline;
pub mod outbox;
pub mod report;
pub mod token;
