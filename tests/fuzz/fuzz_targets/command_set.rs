//! A DIMSE command set (group 0000, implicit VR little endian) from arbitrary bytes: what
//! decodes must encode, and its encoding decode to the same encoding (the Command Group Length
//! is always written, whether or not the input had it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use triage_node::net::dimse::CommandSet;

fuzz_target!(|data: &[u8]| {
    let Ok(command) = CommandSet::decode(data) else { return };
    let _ = (command.command_field(), command.message_id(), command.has_data_set(), command.status());
    for element in [0x0002u16, 0x0003, 0x1000, 0x1001, 0x0600, 0x0902] {
        let _ = command.string(element);
    }
    let encoded = command.encode();
    let again = CommandSet::decode(&encoded).expect("a decoded command set re-encodes");
    assert_eq!(again.encode(), encoded);
});
