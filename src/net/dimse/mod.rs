//! DIMSE (PS3.7): command sets (`command`) and the one message reader/writer both sides of an
//! association use (`message`).

pub mod command;
pub mod message;

pub use command::{field, tag, CommandSet};
pub use message::{Event, MessageError, MessageReader, MessageWriter};
