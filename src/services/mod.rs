//! The DIMSE services of this node, one module each, every one implementing
//! `net::service::Service`: `echo` (Verification SCP), `store` (Storage SCP into `ingest`),
//! `commitment` (Storage Commitment results a PACS reports), `mpps` (Modality Performed
//! Procedure Step SCP: study completion from the modality), `qr` (Query/Retrieve SCP). `access` is the AE registry as the
//! network layer's access control. A new service is a new module here plus one line in
//! `standard`; the association names none of them.

pub mod access;
pub mod commitment;
pub mod echo;
pub mod mpps;
pub mod qr;
pub mod store;

use std::sync::Arc;

use crate::db::Db;
use crate::ingest::Ingest;
use crate::net::Services;

/// The services `serve` registers; the Query/Retrieve SCP where `query` is given.
pub fn standard(ingest: Arc<Ingest>, db: Db, query: Option<qr::QueryRetrieve>, storage: &crate::config::StorageSettings) -> Services {
    let storage = storage.clone();
    let services = Services::new()
        .with(echo::Echo)
        .with(store::Store::new(ingest.clone(), move |uid| storage.accepts_sop_class(uid)))
        .with(mpps::ProcedureSteps::new(ingest))
        .with(commitment::CommitmentReports::new(db));
    match query {
        Some(q) => services.with(q),
        None => services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::dicom::sop::{transfer_syntax, SOP_CLASSES, TRANSFER_SYNTAXES};

    const STATEMENT: &str = include_str!("../../conformance/conformance-statement.md");

    /// The rows of the table that follows `<!-- table:NAME -->`, as cells, header excluded.
    fn table(name: &str) -> Vec<Vec<String>> {
        let start = STATEMENT.find(&format!("<!-- table:{name} -->")).unwrap_or_else(|| panic!("no table {name}"));
        let body = &STATEMENT[start..];
        let end = body.find("<!-- end -->").unwrap();
        body[..end].lines().filter(|l| l.starts_with('|')).skip(2).map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect()).collect()
    }

    #[test]
    fn conformance_statement_matches_the_code() {
        // Every SOP class of the table is served by a registered service, and nothing else.
        use std::collections::BTreeSet;
        let served: BTreeSet<&str> =
            [echo::offers(), store::offers(), commitment::offers(), mpps::offers(), qr::offers()].concat().iter().map(|o| o.class.uid).collect();
        assert_eq!(served, SOP_CLASSES.iter().map(|c| c.uid).collect::<BTreeSet<_>>());
        let sop_rows: Vec<(String, String)> = table("sop-classes").into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
        let sop_code: Vec<(String, String)> = SOP_CLASSES.iter().map(|c| (c.name.to_string(), c.uid.to_string())).collect();
        assert_eq!(sop_rows, sop_code, "SOP class table differs from dicom::sop::SOP_CLASSES");

        // The transfer syntax table is in the default preference order.
        let ts_rows: Vec<(String, String)> = table("transfer-syntaxes").into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
        let defaults = crate::config::Settings::load(None).unwrap().dicom.transfer_syntax_preference;
        let ts_code: Vec<(String, String)> = defaults.iter().map(|uid| (transfer_syntax(uid).unwrap().name.to_string(), uid.clone())).collect();
        assert_eq!(ts_rows, ts_code, "transfer syntax table differs from the default preference");
        assert_eq!(ts_rows.len(), TRANSFER_SYNTAXES.len(), "every storable syntax is offered by default");

        // Every C-STORE status the code can send is documented, and nothing else.
        use crate::ingest::IngestError as E;
        let mut code_statuses: Vec<u16> = [
            E::OutOfDisk { available: 0, floor: 1 },
            E::Unparseable(crate::dicom::scan::ScanError::Truncated { offset: 0 }),
            E::SopClassMismatch,
            E::NotNegotiated,
            E::Task(String::new()),
        ]
        .iter()
        .map(|e| e.dimse_status().code())
        .chain([0x0000])
        .collect();
        code_statuses.sort();
        let mut documented: Vec<u16> = table("store-statuses").iter().map(|r| u16::from_str_radix(r[0].trim_start_matches("0x"), 16).unwrap()).collect();
        documented.sort();
        assert_eq!(documented, code_statuses);

        // Every MPPS status the code can send is documented, and nothing else.
        use crate::ingest::procedure_step::StepError as P;
        let mut step_statuses: Vec<u16> =
            [P::Unparseable, P::ClassMismatch, P::TooLarge, P::Missing(""), P::Invalid(""), P::Duplicate, P::NoSuchInstance, P::Ended, P::OtherCaller]
                .iter()
                .map(|e| e.dimse_status().code())
                .chain([0x0000])
                .collect();
        step_statuses.sort();
        step_statuses.dedup();
        let mut documented: Vec<u16> = table("mpps-statuses").iter().map(|r| u16::from_str_radix(r[0].trim_start_matches("0x"), 16).unwrap()).collect();
        documented.sort();
        assert_eq!(documented, step_statuses);

        // The query keys are the index's.
        let keys: Vec<(String, String, String)> = table("query-keys").into_iter().map(|r| (r[0].clone(), r[1].clone(), r[2].clone())).collect();
        let code: Vec<(String, String, String)> = crate::archive::keys::KEYS
            .iter()
            .map(|k| (k.level.as_str().to_string(), k.name.to_string(), format!("({:04X},{:04X})", k.tag.group(), k.tag.element())))
            .collect();
        assert_eq!(keys, code, "query key table differs from archive::keys::KEYS");
        let qr_statuses: Vec<u16> = table("query-statuses").iter().map(|r| u16::from_str_radix(r[0].trim_start_matches("0x"), 16).unwrap()).collect();
        use crate::dicom::Status as S;
        for s in [
            S::PENDING,
            S::PENDING_WITH_WARNINGS,
            S::SUCCESS,
            S::CANCEL,
            S::SUB_OPERATIONS_WITH_FAILURES,
            S::UNABLE_TO_PERFORM_SUB_OPERATIONS,
            S::MOVE_DESTINATION_UNKNOWN,
            S::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            S::UNABLE_TO_PROCESS,
        ] {
            assert!(qr_statuses.contains(&s.code()), "{s} is not in the query status table");
        }
        assert_eq!(qr_statuses.len(), 9);

        // Association rejections: the reasons the negotiation code produces.
        let rejections = table("association-rejections");
        assert_eq!(rejections.len(), 9);
        let limit = crate::net::ul::negotiation::local_limit_exceeded();
        let row = rejections.iter().find(|r| r[3].contains("local-limit-exceeded")).expect("the local limit row");
        assert_eq!((limit.result as u8, row[1].starts_with('2')), (2, true));
        // A TLS-only AE on the plain port gets the calling-AE reason (services::access).
        assert!(rejections.iter().any(|r| r[0].contains("TLS") && r[3].starts_with("3 calling-AE-title-not-recognized")));
        // So does a certificate that does not name the AE title's identity.
        assert!(rejections.iter().any(|r| r[0].contains("--tls-identity") && r[3].starts_with("3 calling-AE-title-not-recognized")));
    }
}
