//! A C-FIND / C-MOVE / C-GET identifier as the Q/R service reads it: the structural scan
//! first, then the parser, then the query for both information models.
#![no_main]
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use libfuzzer_sys::fuzz_target;
use triage_node::archive::keys::Model;
use triage_node::archive::query::Query;
use triage_node::dicom::matching::Options;
use triage_node::dicom::scan;

include!("../common.rs");

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let ts = common::syntax(selector);
    if scan::scan(rest, Some(rest.len() as u64), ts).is_err() {
        return;
    }
    let Ok(obj) = InMemDicomObject::read_dataset_with_ts(rest, TransferSyntaxRegistry.get(ts.uid).unwrap()) else { return };
    for model in [Model::StudyRoot, Model::PatientRoot] {
        for case_sensitive_names in [false, true] {
            let _ = Query::parse(&obj, model, Options { case_sensitive_names });
        }
        let _ = Query::parse_retrieve(&obj, model);
    }
});
