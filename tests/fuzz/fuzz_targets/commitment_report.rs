//! A Storage Commitment N-EVENT-REPORT data set from a PACS.
#![no_main]
use libfuzzer_sys::fuzz_target;

include!("../common.rs");

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let _ = triage_node::delivery::commitment::parse_report(rest, common::syntax(selector).uid);
});
