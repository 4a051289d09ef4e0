//! Storage SOP Classes as SCP (PS3.4 Annex B): C-STORE into the ingest pipeline. The data set
//! is streamed, a chunk at a time, into `ingest`'s incoming file; the response is sent only
//! after `ingest` has made the instance durable (or refused it with the PS3.4 status).

use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::dicom::sop::{ServiceClass, SOP_CLASSES};
use crate::dicom::Status;
use crate::domain::AeRole;
use crate::domain::Redacted;
use crate::ingest::spool::IncomingFile;
use crate::ingest::{Ingest, IngestError, StoreOutcome, StoreRequest};
use crate::net::access::BoxFuture;
use crate::net::dimse::command::{self, field, tag};
use crate::net::{Association, AssociationError, Offer, Request, Service};

pub struct Store {
    ingest: Arc<Ingest>,
    /// The site's choice of storage classes (`[storage] accept_sop_classes` / `refuse_sop_classes`).
    accepts: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl Store {
    pub fn new(ingest: Arc<Ingest>, accepts: impl Fn(&str) -> bool + Send + Sync + 'static) -> Store {
        Store { ingest, accepts: Box::new(accepts) }
    }
}

impl Service for Store {
    fn name(&self) -> &'static str {
        "store"
    }

    fn offers(&self) -> Vec<Offer> {
        offers().into_iter().filter(|o| (self.accepts)(o.class.uid)).collect()
    }

    fn commands(&self) -> &'static [u16] {
        &[field::C_STORE_RQ]
    }

    fn serve<'a>(&'a self, association: &'a mut Association, rq: Request) -> BoxFuture<'a, Result<(), AssociationError>> {
        Box::pin(self.store(association, rq))
    }
}

impl Store {
    async fn store(&self, association: &mut Association, rq: Request) -> Result<(), AssociationError> {
        if !rq.has_data {
            return association.unrecognized(rq.pc, &rq.command).await;
        }
        let cmd = &rq.command;
        let req = StoreRequest {
            sop_class_uid: Redacted(cmd.string(tag::AFFECTED_SOP_CLASS_UID).unwrap_or_default()),
            sop_instance_uid: Redacted(cmd.string(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default()),
            transfer_syntax: rq.context.transfer_syntax,
            calling_ae: association.calling_ae().to_string(),
        };
        let begun = if req.sop_class_uid.0 != rq.context.abstract_syntax {
            Err(IngestError::NotNegotiated)
        } else if req.sop_instance_uid.0.is_empty() {
            Err(IngestError::MissingAttribute("Affected SOP Instance UID (0000,1000) in the request"))
        } else {
            self.ingest.begin(&req)
        };
        let started = std::time::Instant::now();
        let result = match begun {
            Ok(file) => match receive(association, file).await? {
                Ok(file) => {
                    metrics::histogram!("triage_ingest_phase_seconds", "phase" => "receive").record(started.elapsed().as_secs_f64());
                    self.ingest.complete(&req, file).await
                }
                Err(error) => Err(error),
            },
            // Refused already (e.g. no disk): the peer's bytes are read and dropped.
            Err(error) => {
                association.skip_data().await?;
                Err(error)
            }
        };
        let mut rsp = match &result {
            Ok(_) => command::response(cmd, field::C_STORE_RSP, Status::SUCCESS, &req.sop_class_uid.0),
            Err(e) => {
                let mut rsp = command::response(cmd, field::C_STORE_RSP, e.dimse_status(), &req.sop_class_uid.0);
                rsp.set_text(tag::ERROR_COMMENT, &e.peer_comment(), 64);
                rsp
            }
        };
        rsp.set_uid(tag::AFFECTED_SOP_INSTANCE_UID, &req.sop_instance_uid.0);
        association.tally(self.name(), result.is_ok());
        let status = match &result {
            Ok(_) => Status::SUCCESS,
            Err(e) => e.dimse_status(),
        };
        metrics::counter!("triage_cstore_responses_total", "status" => format!("{:#06X}", status.0)).increment(1);
        if matches!(result, Ok(StoreOutcome::Stored { .. })) {
            metrics::counter!("triage_instances_received_total").increment(1);
        }
        match result {
            Ok(StoreOutcome::Stored { instance_id }) => debug!(instance_id, "instance stored"),
            Ok(StoreOutcome::Duplicate { instance_id }) => info!(instance_id, "duplicate SOP Instance UID: first copy kept, Success returned"),
            Err(error) => warn!(status = %error.dimse_status(), %error, "C-STORE refused"),
        }
        let sent = association.send_command(rq.pc, &rsp).await;
        metrics::histogram!("triage_ingest_phase_seconds", "phase" => "total").record(started.elapsed().as_secs_f64());
        sent
    }
}

/// Stream the data set into `file`. The outer error ends the association (the file is
/// discarded: never acknowledged); the inner one refuses the instance once its bytes are read.
async fn receive(association: &mut Association, mut file: IncomingFile) -> Result<Result<IncomingFile, IngestError>, AssociationError> {
    loop {
        let bytes = match association.data().await {
            Ok(Some(bytes)) => {
                metrics::counter!("triage_bytes_received_total").increment(bytes.len() as u64);
                bytes
            }
            Ok(None) => return Ok(Ok(file)),
            Err(e) => {
                file.discard().await;
                return Err(e);
            }
        };
        if let Err(e) = file.write(bytes).await {
            // Keep reading the peer's bytes, answer Out of Resources at the end.
            file.discard().await;
            association.skip_data().await?;
            return Ok(Err(e.into()));
        }
    }
}

/// The SOP classes of the Storage service class. Only a modality stores into the pipeline (a PACS may not).
pub fn offers() -> Vec<Offer> {
    SOP_CLASSES
        .iter()
        .filter(|c| c.service == ServiceClass::Storage && c.ingested)
        .map(|class| Offer { class, roles: &[AeRole::Modality], caller_is_scp: false, native_only: false })
        .collect()
}
