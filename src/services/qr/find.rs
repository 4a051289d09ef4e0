//! C-FIND SCP (PS3.4 C.4.1): each match sent as a Pending response as the index yields it,
//! C-CANCEL looked for between two, then the final status; one audit entry when anything was
//! disclosed.

use dicom_object::InMemDicomObject;
use tracing::{debug, error, warn};

use super::{encode, failure, Operation, QueryRetrieve};
use crate::archive::disclose::Party;
use crate::archive::keys::Model;
use crate::archive::query::Query;
use crate::dicom::Status;
use crate::net::dimse::command::{self, field, tag};
use crate::net::{Association, AssociationError, Request};

pub(super) async fn serve(
    qr: &QueryRetrieve,
    association: &mut Association,
    rq: &Request,
    model: Model,
    identifier: &InMemDicomObject,
) -> Result<(), AssociationError> {
    let name = "query/retrieve";
    let query = match Query::parse(identifier, model, qr.options) {
        Ok(q) => q,
        Err(e) => {
            warn!(status = %e.status, "C-FIND identifier refused");
            association.tally(name, false);
            return association.send_command(rq.pc, &failure(rq, Operation::Find, e.status, &e.comment)).await;
        }
    };
    let snapshot = match qr.archive.snapshot().await {
        Ok(s) => s,
        Err(error) => {
            error!(%error, "the query index could not be refreshed");
            association.tally(name, false);
            return association.send_command(rq.pc, &failure(rq, Operation::Find, Status::UNABLE_TO_PROCESS, "the index could not be read")).await;
        }
    };
    let message_id = rq.command.message_id().unwrap_or(0);
    let class = &rq.context.abstract_syntax;
    let ts = rq.context.transfer_syntax.uid;
    let pending = if query.unsupported_keys { Status::PENDING_WITH_WARNINGS } else { Status::PENDING };
    let (mut matches, mut cancelled) = (0u64, false);
    for hit in query.matches(&snapshot) {
        if association.cancelled(message_id).await? {
            cancelled = true;
            break;
        }
        let data = match encode(&query.response(&hit, qr.ae_title.as_str()), ts) {
            Ok(d) => d,
            Err(e) => {
                error!(error = %e, "encoding a C-FIND response failed");
                continue;
            }
        };
        let mut rsp = command::response(&rq.command, field::C_FIND_RSP, pending, class);
        rsp.set_u16(tag::COMMAND_DATA_SET_TYPE, 0x0000);
        association.send_command(rq.pc, &rsp).await?;
        association.send_data(rq.pc, &data).await?;
        matches += 1;
    }
    drop(snapshot);
    let details = crate::audit::Queried { model: model.as_str().into(), level: query.level.as_str().into(), matches, cancelled, via: None };
    if let Err(error) = qr.archive.record_query(&Party::Ae(association.calling_ae().to_string()), details).await {
        error!(%error, "recording a query in the audit trail failed");
    }
    debug!(level = query.level.as_str(), matches, cancelled, "C-FIND");
    association.tally(name, true);
    let status = if cancelled { Status::CANCEL } else { Status::SUCCESS };
    association.send_command(rq.pc, &command::response(&rq.command, field::C_FIND_RSP, status, class)).await
}
