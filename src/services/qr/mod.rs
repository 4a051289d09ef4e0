//! Query/Retrieve SCP (PS3.4 Annex C) over the AI result objects of this node: C-FIND
//! (`find`), C-MOVE and C-GET (`retrieve`), Patient Root and Study Root, levels PATIENT to
//! IMAGE, answered from `archive` with the identifiers the PACS knows. Who may use it and what
//! each disclosure records is `archive::disclose`, the rule DICOMweb shares: negotiation
//! refuses the contexts to AEs of other roles; every query or retrieve that discloses
//! identities is one audit entry.

mod find;
mod retrieve;

use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use crate::archive::disclose::MAY_QUERY;
use crate::archive::keys::Model;
use crate::archive::Archive;
use crate::dicom::matching::Options;
use crate::dicom::sop::{self, ServiceClass, SOP_CLASSES};
use crate::dicom::Status;
use crate::domain::AeTitle;
use crate::net::access::BoxFuture;
use crate::net::dimse::command::{self, field, tag, CommandSet};
use crate::net::tls::Connector;
use crate::net::{Association, AssociationError, Offer, Request, Service};

/// The largest identifier we read (a query is a few hundred bytes; a long UID list a few KiB).
const MAX_IDENTIFIER_BYTES: usize = 1 << 20;

/// The storage classes of the objects a C-GET sends back (the caller takes their SCP role):
/// report, heatmap (Secondary Capture or Parametric Map), rejection note.
pub const RESULT_CLASSES: [&str; 4] =
    [uids::COMPREHENSIVE3_DSR_STORAGE, uids::SECONDARY_CAPTURE_IMAGE_STORAGE, uids::PARAMETRIC_MAP_STORAGE, uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE];

pub struct QueryRetrieve {
    archive: Arc<Archive>,
    ae_title: AeTitle,
    options: Options,
    /// Connection and response timeout of a C-MOVE's sub-association.
    timeout: Duration,
    /// How a C-MOVE destination registered as TLS is reached.
    tls: Connector,
}

impl QueryRetrieve {
    pub fn new(archive: Arc<Archive>, ae_title: AeTitle, options: Options, timeout: Duration, tls: Connector) -> QueryRetrieve {
        QueryRetrieve { archive, ae_title, options, timeout, tls }
    }
}

/// What a Q/R SOP class is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Find,
    Move,
    Get,
}

fn operation(sop_class: &str) -> Option<Operation> {
    use sop::qr::*;
    match sop_class {
        PATIENT_ROOT_FIND | STUDY_ROOT_FIND => Some(Operation::Find),
        PATIENT_ROOT_MOVE | STUDY_ROOT_MOVE => Some(Operation::Move),
        PATIENT_ROOT_GET | STUDY_ROOT_GET => Some(Operation::Get),
        _ => None,
    }
}

impl Service for QueryRetrieve {
    fn name(&self) -> &'static str {
        "query/retrieve"
    }

    fn offers(&self) -> Vec<Offer> {
        offers()
    }

    fn commands(&self) -> &'static [u16] {
        &[field::C_FIND_RQ, field::C_MOVE_RQ, field::C_GET_RQ]
    }

    fn serve<'a>(&'a self, association: &'a mut Association, rq: Request) -> BoxFuture<'a, Result<(), AssociationError>> {
        Box::pin(async move {
            let class = rq.context.abstract_syntax.clone();
            let (Some(model), Some(op)) = (Model::of(&class), operation(&class)) else {
                association.skip_data().await?;
                return association.unrecognized(rq.pc, &rq.command).await;
            };
            let expected = match op {
                Operation::Find => field::C_FIND_RQ,
                Operation::Move => field::C_MOVE_RQ,
                Operation::Get => field::C_GET_RQ,
            };
            if rq.command.command_field().ok() != Some(expected) {
                association.skip_data().await?;
                return association.unrecognized(rq.pc, &rq.command).await;
            }
            let identifier = read_identifier(association, &rq).await?;
            let identifier = match identifier {
                Ok(obj) => obj,
                Err(comment) => {
                    association.tally(self.name(), false);
                    let rsp = failure(&rq, op, Status::UNABLE_TO_PROCESS, &comment);
                    return association.send_command(rq.pc, &rsp).await;
                }
            };
            match op {
                Operation::Find => find::serve(self, association, &rq, model, &identifier).await,
                Operation::Move | Operation::Get => retrieve::serve(self, association, &rq, model, op, &identifier).await,
            }
        })
    }
}

/// The identifier of `rq`, parsed in its context's transfer syntax (and its Specific Character
/// Set); Err: why it cannot be, as an Error Comment.
async fn read_identifier(association: &mut Association, rq: &Request) -> Result<Result<InMemDicomObject, String>, AssociationError> {
    if !rq.has_data {
        return Ok(Err("the request has no identifier".into()));
    }
    let Some(bytes) = association.data_within(MAX_IDENTIFIER_BYTES).await? else {
        return Ok(Err(format!("identifier larger than {MAX_IDENTIFIER_BYTES} bytes")));
    };
    let Some(ts) = TransferSyntaxRegistry.get(rq.context.transfer_syntax.uid) else {
        return Ok(Err("transfer syntax unknown".into()));
    };
    // The structural scan first (bounded nesting, every length checked): the parser recurses
    // into sequences without a depth limit, and a deep enough identifier would overflow the stack.
    if crate::dicom::scan::scan(&bytes[..], Some(bytes.len() as u64), rq.context.transfer_syntax).is_err() {
        return Ok(Err(format!("identifier is not a well-formed data set in {}", rq.context.transfer_syntax.name)));
    }
    Ok(InMemDicomObject::read_dataset_with_ts(&bytes[..], ts).map_err(|_| format!("identifier is not a data set in {}", rq.context.transfer_syntax.name)))
}

fn response_field(op: Operation) -> u16 {
    match op {
        Operation::Find => field::C_FIND_RSP,
        Operation::Move => field::C_MOVE_RSP,
        Operation::Get => field::C_GET_RSP,
    }
}

/// A final response with a failure status and an Error Comment (PS3.7: LO, 64 characters).
fn failure(rq: &Request, op: Operation, status: Status, comment: &str) -> CommandSet {
    let mut rsp = command::response(&rq.command, response_field(op), status, &rq.context.abstract_syntax);
    rsp.set_text(tag::ERROR_COMMENT, comment, 64);
    rsp
}

/// Encode a response identifier in the context's transfer syntax.
fn encode(obj: &InMemDicomObject, ts_uid: &str) -> Result<Vec<u8>, String> {
    let ts = TransferSyntaxRegistry.get(ts_uid).ok_or_else(|| format!("transfer syntax {ts_uid}"))?;
    let mut out = Vec::with_capacity(1024);
    obj.write_dataset_with_ts(&mut out, ts).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The Q/R SOP classes, for PACS-role callers (native syntaxes: identifiers are small), and the
/// storage classes of the result objects with the caller in the SCP role, for C-GET.
pub fn offers() -> Vec<Offer> {
    let qr = SOP_CLASSES.iter().filter(|c| c.service == ServiceClass::QueryRetrieve).map(|class| Offer {
        class,
        roles: MAY_QUERY,
        caller_is_scp: false,
        native_only: true,
    });
    let get =
        SOP_CLASSES.iter().filter(|c| RESULT_CLASSES.contains(&c.uid)).map(|class| Offer { class, roles: MAY_QUERY, caller_is_scp: true, native_only: true });
    qr.chain(get).collect()
}
