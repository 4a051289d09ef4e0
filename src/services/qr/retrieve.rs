//! C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): the matched result objects, re-identified in
//! memory by the same function the outbox delivers with (`results::reidentify`), each sent by
//! a C-STORE sub-operation: for C-MOVE over a sub-association to the destination's registered
//! address, for C-GET on the caller's own association (the caller took the SCP role of the
//! object's class). A Pending response after each with the remaining, completed, failed and
//! warning counts; C-CANCEL looked for between two; the final status is Success only when every
//! sub-operation succeeded, B000 with the Failed SOP Instance UID List otherwise.

use std::collections::BTreeSet;
use std::sync::Arc;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use tracing::{error, info, warn};

use super::{encode, failure, response_field, Operation, QueryRetrieve};
use crate::archive::disclose;
use crate::archive::index::Instance;
use crate::archive::keys::Model;
use crate::archive::query::Query;
use crate::delivery::{self, DeliveryError};
use crate::dicom::Status;
use crate::net::client::{self, ClientError, Proposal};
use crate::net::dimse::command::{self, field, tag, CommandSet};
use crate::net::{Association, AssociationError, Request};

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

#[derive(Debug, Default)]
struct Counts {
    remaining: u16,
    completed: u16,
    failed: u16,
    warning: u16,
    failed_uids: Vec<String>,
}

impl Counts {
    fn record(&mut self, uid: &str, outcome: Outcome) {
        self.remaining = self.remaining.saturating_sub(1);
        match outcome {
            Outcome::Completed => self.completed = self.completed.saturating_add(1),
            Outcome::Warning => self.warning = self.warning.saturating_add(1),
            Outcome::Failed => {
                self.failed = self.failed.saturating_add(1);
                self.failed_uids.push(uid.to_string());
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Warning,
    Failed,
}

fn outcome(status: Status) -> Outcome {
    let code = status.code();
    if code == 0x0000 {
        Outcome::Completed
    } else if code == 0x0001 || code & 0xF000 == 0xB000 {
        Outcome::Warning
    } else {
        Outcome::Failed
    }
}

/// Where the sub-operations go (one per retrieve, on its task: the size difference costs
/// nothing).
#[allow(clippy::large_enum_variant)]
enum Sink {
    /// C-MOVE: a sub-association to the destination.
    Moved(client::Association),
    /// C-GET: back over the caller's association.
    Got { next_message_id: u16 },
}

pub(super) async fn serve(
    qr: &QueryRetrieve,
    association: &mut Association,
    rq: &Request,
    model: Model,
    op: Operation,
    identifier: &InMemDicomObject,
) -> Result<(), AssociationError> {
    let name = "query/retrieve";
    let refuse = |status: Status, comment: &str| failure(rq, op, status, comment);
    let query = match Query::parse_retrieve(identifier, model) {
        Ok(q) => q,
        Err(e) => {
            warn!(status = %e.status, "retrieve identifier refused");
            association.tally(name, false);
            return association.send_command(rq.pc, &refuse(e.status, &e.comment)).await;
        }
    };
    let caller = association.calling_ae().to_string();
    // C-MOVE: the destination must be a registered AE with an address.
    let mut destination = None;
    if op == Operation::Move {
        let to = rq.command.string(tag::MOVE_DESTINATION).unwrap_or_default();
        match delivery::resolve(qr.archive.db(), &to, &qr.ae_title, qr.timeout, &qr.tls).await {
            // Re-identified results go only where results belong: an AE of the `pacs` role (a
            // modality registered with a port is no destination).
            Ok(peer) if !qr.archive.may_receive(&to).await.unwrap_or(false) => {
                warn!(destination = %crate::domain::PeerText(&to), "C-MOVE to an AE that is not of the pacs role refused");
                association.tally(name, false);
                let comment = format!("move destination {to:?} is not a PACS (only AEs of the pacs role receive results)");
                drop(peer);
                return association.send_command(rq.pc, &refuse(Status::MOVE_DESTINATION_UNKNOWN, &comment)).await;
            }
            Ok(peer) => destination = Some(peer),
            Err(e @ (DeliveryError::UnknownAe(_) | DeliveryError::Disabled(_) | DeliveryError::NoAddress(_) | DeliveryError::BadTitle(_))) => {
                warn!(error = %e, "C-MOVE to a destination that is not registered with an address");
                association.tally(name, false);
                let comment = format!("move destination {to:?} unknown (triage-node ae add)");
                return association.send_command(rq.pc, &refuse(Status::MOVE_DESTINATION_UNKNOWN, &comment)).await;
            }
            Err(error) => {
                error!(%error, "resolving a C-MOVE destination failed");
                association.tally(name, false);
                return association.send_command(rq.pc, &refuse(Status::UNABLE_TO_PROCESS, "the AE registry could not be read")).await;
            }
        }
    }
    let snapshot = match qr.archive.snapshot().await {
        Ok(s) => s,
        Err(error) => {
            error!(%error, "the query index could not be refreshed");
            association.tally(name, false);
            return association.send_command(rq.pc, &refuse(Status::UNABLE_TO_PROCESS, "the index could not be read")).await;
        }
    };
    // The objects to send: references into the snapshot, not their contents.
    let objects: Vec<Arc<Instance>> = disclose::objects(&query, &snapshot);
    drop(snapshot);
    let mut counts = Counts { remaining: objects.len().min(usize::from(u16::MAX)) as u16, ..Counts::default() };
    let message_id = rq.command.message_id().unwrap_or(0);

    let destination_ae = if op == Operation::Move { rq.command.string(tag::MOVE_DESTINATION).unwrap_or_default() } else { caller.clone() };
    // The disclosure is recorded before anything is sent (while the sub-association, if any,
    // is being opened): one entry naming the AEs, the count and the objects (the node's own
    // UIDs of its result objects, no patient data). Without it, nothing is sent.
    let audit = async {
        let details = crate::audit::Retrieved {
            operation: if op == Operation::Move { "C-MOVE" } else { "C-GET" }.into(),
            destination: destination_ae,
            model: model.as_str().into(),
            level: query.level.as_str().into(),
            objects: objects.len() as u64,
            sop_instances: objects.iter().map(|o| o.uid.clone()).collect(),
        };
        qr.archive.record_retrieve(&disclose::Party::Ae(caller.to_string()), details).await
    };
    let connect = async {
        let peer = destination.filter(|_| !objects.is_empty())?;
        let classes: BTreeSet<&str> = objects.iter().map(|o| o.sop_class_uid.as_str()).collect();
        let proposals: Vec<Proposal> =
            classes.iter().map(|c| Proposal { abstract_syntax: c.to_string(), transfer_syntaxes: vec![EXPLICIT_LE.into(), IMPLICIT_LE.into()] }).collect();
        Some((client::Association::request(&peer, &proposals).await, peer.called_ae))
    };
    let (audited, connected) = tokio::join!(audit, connect);
    if let Err(error) = audited {
        error!(%error, "recording a retrieve in the audit trail failed; nothing is sent");
        if let Some((Ok(a), _)) = connected {
            let _ = a.release().await;
        }
        association.tally(name, false);
        return association.send_command(rq.pc, &refuse(Status::UNABLE_TO_PROCESS, "the audit trail could not be written")).await;
    }
    let mut sink = match connected {
        None => Sink::Got { next_message_id: 1 },
        Some((Ok(a), _)) => Sink::Moved(a),
        Some((Err(e), called)) => {
            warn!(error = %e, destination = %called, "C-MOVE sub-association refused or failed");
            association.tally(name, false);
            let mut rsp = refuse(Status::UNABLE_TO_PERFORM_SUB_OPERATIONS, "the move destination could not be reached");
            counts.failed = counts.remaining;
            counts.remaining = 0;
            counts.failed_uids = objects.iter().map(|o| o.uid.clone()).collect();
            set_counts(&mut rsp, &counts, false);
            return send_final(association, rq, rsp, &counts).await;
        }
    };
    let mut cancelled = false;
    for (i, object) in objects.iter().enumerate() {
        if association.cancelled(message_id).await? {
            cancelled = true;
            break;
        }
        let sent = match qr.archive.reidentified(object).await {
            Ok(r) => send_one(association, &mut sink, &r.object, &r.sop_class_uid, &r.sop_instance_uid, &caller, message_id, &mut cancelled).await?,
            Err(error) => {
                warn!(%error, object = i, "a result object could not be re-identified for retrieval");
                Outcome::Failed
            }
        };
        counts.record(&object.uid, sent);
        if i + 1 < objects.len() && !cancelled {
            let mut rsp = command::response(&rq.command, response_field(op), Status::PENDING, &rq.context.abstract_syntax);
            set_counts(&mut rsp, &counts, true);
            association.send_command(rq.pc, &rsp).await?;
        }
        if cancelled {
            break;
        }
    }
    if let Sink::Moved(a) = sink {
        if let Err(error) = a.release().await {
            warn!(%error, "releasing the C-MOVE sub-association failed");
        }
    }
    info!(operation = ?op, level = query.level.as_str(), completed = counts.completed, failed = counts.failed, warning = counts.warning, cancelled, "retrieve");
    association.tally(name, true);
    let status = if cancelled {
        Status::CANCEL
    } else if counts.failed > 0 || counts.warning > 0 {
        Status::SUB_OPERATIONS_WITH_FAILURES
    } else {
        Status::SUCCESS
    };
    let mut rsp = command::response(&rq.command, response_field(op), status, &rq.context.abstract_syntax);
    set_counts(&mut rsp, &counts, cancelled);
    send_final(association, rq, rsp, &counts).await
}

/// One C-STORE sub-operation; a C-CANCEL that arrives while a C-GET's sub-operation is
/// outstanding sets `cancelled` (the sub-operation itself completes).
#[allow(clippy::too_many_arguments)]
async fn send_one(
    association: &mut Association,
    sink: &mut Sink,
    object: &InMemDicomObject,
    sop_class: &str,
    sop_instance: &str,
    caller: &str,
    message_id: u16,
    cancelled: &mut bool,
) -> Result<Outcome, AssociationError> {
    match sink {
        Sink::Moved(sub) => {
            let Some(ts) = sub.transfer_syntax(sop_class).map(str::to_string) else {
                return Ok(Outcome::Failed); // the destination refused the class
            };
            let data = match encode(object, &ts) {
                Ok(d) => d,
                Err(_) => return Ok(Outcome::Failed),
            };
            match sub.store_dataset(sop_class, sop_instance, &data, Some((caller, message_id))).await {
                Ok(rsp) => Ok(outcome(rsp.status)),
                Err(e @ (ClientError::Aborted | ClientError::Write(_) | ClientError::Pdu(_) | ClientError::Message(_) | ClientError::Timeout(_))) => {
                    warn!(error = %e, "the C-MOVE sub-association broke");
                    Ok(Outcome::Failed)
                }
                Err(e) => {
                    warn!(error = %e, "a C-MOVE sub-operation failed");
                    Ok(Outcome::Failed)
                }
            }
        }
        Sink::Got { next_message_id } => {
            // The context on which the caller takes the SCP role of this class.
            let Some((pc, ts)) = association.context_for(sop_class, None).filter(|c| c.caller_is_scp).map(|c| (c.id, c.transfer_syntax.uid)) else {
                return Ok(Outcome::Failed);
            };
            let data = match encode(object, ts) {
                Ok(d) => d,
                Err(_) => return Ok(Outcome::Failed),
            };
            let id = *next_message_id;
            *next_message_id = next_message_id.wrapping_add(1).max(1);
            association.send_command(pc, &command::store_rq(sop_class, sop_instance, id)).await?;
            association.send_data(pc, &data).await?;
            loop {
                let (_, rsp) = association.next_command().await?;
                if rsp.command_field().ok() == Some(field::C_STORE_RSP) {
                    association.skip_data().await?;
                    if rsp.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO).ok() != Some(id) {
                        return Err(AssociationError::Protocol("C-STORE-RSP to another message".into()));
                    }
                    return Ok(rsp.status().map(outcome).unwrap_or(Outcome::Failed));
                }
                if association.is_cancel_of(&rsp, message_id).await? {
                    *cancelled = true;
                }
            }
        }
    }
}

fn set_counts(rsp: &mut CommandSet, c: &Counts, with_remaining: bool) {
    if with_remaining {
        rsp.set_u16(tag::REMAINING_SUB_OPERATIONS, c.remaining);
    }
    rsp.set_u16(tag::COMPLETED_SUB_OPERATIONS, c.completed).set_u16(tag::FAILED_SUB_OPERATIONS, c.failed).set_u16(tag::WARNING_SUB_OPERATIONS, c.warning);
}

/// The final response; with the Failed SOP Instance UID List when something failed.
async fn send_final(association: &mut Association, rq: &Request, mut rsp: CommandSet, counts: &Counts) -> Result<(), AssociationError> {
    if counts.failed_uids.is_empty() {
        return association.send_command(rq.pc, &rsp).await;
    }
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("ISO_IR 192")));
    o.put(DataElement::new(tags::FAILED_SOP_INSTANCE_UID_LIST, VR::UI, PrimitiveValue::Strs(counts.failed_uids.iter().cloned().collect())));
    match encode(&o, rq.context.transfer_syntax.uid) {
        Ok(data) => {
            rsp.set_u16(tag::COMMAND_DATA_SET_TYPE, 0x0000);
            association.send_command(rq.pc, &rsp).await?;
            association.send_data(rq.pc, &data).await
        }
        Err(_) => association.send_command(rq.pc, &rsp).await,
    }
}
