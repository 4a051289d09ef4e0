//! The command line's groups, one file each: parse (clap) -> one `admin` operation -> print.
//! `main` dispatches to them; what is not here yet is dispatched in `main` itself.

pub mod ae;
pub mod audit;
pub mod offline;
pub mod outbox;
