//! Storage Commitment Push Model (PS3.4 Annex J), as SCU: after delivering objects, the outbox
//! asks the PACS (N-ACTION, Action Type 1) to commit to their safekeeping; the PACS answers with
//! an N-EVENT-REPORT (Event Type 1: all committed; 2: some failed), usually on an association
//! it opens to us, which `services::commitment` receives and hands here.
//!
//! Owns: the N-ACTION data set, reading a report, recording both. Must not: know PDUs.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Length, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use tracing::{info, warn};

use crate::db::Db;
use crate::dicom::Status;

/// The N-ACTION-RQ data set: Transaction UID and the objects (SOP Class, SOP Instance).
pub fn action_dataset(transaction_uid: &str, refs: &[(String, String)], ts_uid: &str) -> Result<Vec<u8>, String> {
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(tags::TRANSACTION_UID, VR::UI, PrimitiveValue::from(transaction_uid)));
    let items: Vec<InMemDicomObject> = refs
        .iter()
        .map(|(class, instance)| {
            let mut i = InMemDicomObject::new_empty();
            i.put(DataElement::new(tags::REFERENCED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from(class.as_str())));
            i.put(DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(instance.as_str())));
            i
        })
        .collect();
    o.put(DataElement::new(tags::REFERENCED_SOP_SEQUENCE, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED)));
    let ts = TransferSyntaxRegistry.get(ts_uid).ok_or_else(|| format!("transfer syntax {ts_uid}"))?;
    let mut out = Vec::new();
    o.write_dataset_with_ts(&mut out, ts).map_err(|e| e.to_string())?;
    Ok(out)
}

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub transaction_uid: String,
    pub committed: Vec<String>,
    /// (SOP Instance UID, Failure Reason as 0xXXXX with its PS3.4 meaning).
    pub failed: Vec<(String, String)>,
}

pub fn parse_report(bytes: &[u8], ts_uid: &str) -> Result<Report, String> {
    let ts = TransferSyntaxRegistry.get(ts_uid).ok_or_else(|| format!("transfer syntax {ts_uid}"))?;
    // The structural scan first (bounded nesting): the parser recurses without a depth limit.
    let ours = crate::dicom::sop::transfer_syntax(ts_uid).ok_or_else(|| format!("transfer syntax {ts_uid}"))?;
    crate::dicom::scan::scan(bytes, Some(bytes.len() as u64), ours).map_err(|e| e.to_string())?;
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| e.to_string())?;
    let uid = |o: &InMemDicomObject, t| o.get(t).and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches(['\0', ' ']).to_string());
    let transaction_uid = uid(&obj, tags::TRANSACTION_UID).ok_or("no Transaction UID (0008,1195)")?;
    let items = |t| obj.get(t).and_then(|e| e.items()).map(<[InMemDicomObject]>::to_vec).unwrap_or_default();
    let committed = items(tags::REFERENCED_SOP_SEQUENCE).iter().filter_map(|i| uid(i, tags::REFERENCED_SOP_INSTANCE_UID)).collect();
    let failed = items(tags::FAILED_SOP_SEQUENCE)
        .iter()
        .filter_map(|i| {
            let code = i.get(tags::FAILURE_REASON).and_then(|e| e.to_int::<u16>().ok());
            Some((uid(i, tags::REFERENCED_SOP_INSTANCE_UID)?, failure_reason(code)))
        })
        .collect();
    Ok(Report { transaction_uid, committed, failed })
}

fn failure_reason(code: Option<u16>) -> String {
    let meaning = match code.map(Status) {
        Some(Status::PROCESSING_FAILURE) => "processing failure",
        Some(Status::NO_SUCH_OBJECT_INSTANCE) => "no such object instance",
        Some(Status::RESOURCE_LIMITATION) => "resource limitation",
        Some(Status::REFUSED_SOP_CLASS_NOT_SUPPORTED) => "referenced SOP Class not supported",
        Some(Status::CLASS_INSTANCE_CONFLICT) => "class/instance conflict",
        Some(Status::DUPLICATE_TRANSACTION_UID) => "duplicate transaction UID",
        _ => "unspecified",
    };
    match code {
        Some(c) => format!("{c:#06X} {meaning}"),
        None => meaning.to_string(),
    }
}

/// Record a report from `calling_ae`; the DIMSE status to answer with.
pub async fn receive(db: &Db, calling_ae: &str, event_type: u16, bytes: &[u8], ts_uid: &str) -> Status {
    let report = match parse_report(bytes, ts_uid) {
        Ok(r) => r,
        Err(error) => {
            warn!(%error, "storage commitment report unreadable");
            return Status::PROCESSING_FAILURE;
        }
    };
    match db.commitment_reported(&report.transaction_uid, calling_ae, &report.committed, &report.failed).await {
        Ok(0) => {
            warn!(event_type, "storage commitment report for a transaction we did not request (from this AE)");
            Status::PROCESSING_FAILURE
        }
        Ok(n) => {
            if report.failed.is_empty() {
                info!(objects = n, "storage commitment: the PACS committed to every object");
            } else {
                let reasons: Vec<&str> = report.failed.iter().map(|(_, r)| r.as_str()).collect();
                warn!(
                    committed = report.committed.len(),
                    failed = report.failed.len(),
                    ?reasons,
                    "storage commitment: the PACS did not commit to some objects"
                );
            }
            Status::SUCCESS
        }
        Err(error) => {
            warn!(%error, "recording a storage commitment report failed");
            Status::PROCESSING_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_what_a_request_names() {
        let refs = vec![("1.2.840.10008.5.1.4.1.1.7".to_string(), "2.25.1".to_string())];
        for ts in ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"] {
            let bytes = action_dataset("2.25.99", &refs, ts).unwrap();
            let r = parse_report(&bytes, ts).unwrap();
            assert_eq!(r, Report { transaction_uid: "2.25.99".into(), committed: vec!["2.25.1".into()], failed: vec![] });
        }
        assert_eq!(failure_reason(Some(0x0112)), "0x0112 no such object instance");
    }
}
