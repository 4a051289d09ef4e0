//! The bytes after association: P-DATA-TF PDUs, their PDVs, command sets reassembled and
//! decoded, data set fragments, release and abort, read as the accepting side reads them.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use triage_node::net::dimse::{Event, MessageReader};

include!("../common.rs");

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    common::rt().block_on(async {
        let reader = MessageReader::new(rest, Duration::from_secs(5), 16384, 1024, "");
        let mut reader = if mode & 1 == 1 { reader.lenient() } else { reader };
        for _ in 0..10_000 {
            match reader.next().await {
                Ok(Event::Command { command, .. }) => {
                    let _ = (command.command_field(), command.message_id(), command.has_data_set(), command.status());
                    let _ = command.string(0x0002);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
});
