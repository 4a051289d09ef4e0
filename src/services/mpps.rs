//! Modality Performed Procedure Step SOP Class as SCP (PS3.4 Annex F): a modality's N-CREATE
//! (IN PROGRESS) and N-SET (more series, COMPLETED or DISCONTINUED). What the step lists
//! completes its study without the quiet period; reading and recording the step is `ingest`'s
//! (`ingest::procedure_step`).

use std::sync::Arc;

use tracing::{info, warn};

use crate::dicom::sop::{ServiceClass, SOP_CLASSES};
use crate::dicom::Status;
use crate::domain::AeRole;
use crate::ingest::procedure_step::{StepError, MAX_STEP_BYTES};
use crate::ingest::Ingest;
use crate::net::access::BoxFuture;
use crate::net::dimse::command::{self, field, tag};
use crate::net::{Association, AssociationError, Offer, Request, Service};

pub struct ProcedureSteps {
    ingest: Arc<Ingest>,
}

impl ProcedureSteps {
    pub fn new(ingest: Arc<Ingest>) -> ProcedureSteps {
        ProcedureSteps { ingest }
    }
}

impl Service for ProcedureSteps {
    fn name(&self) -> &'static str {
        "mpps"
    }

    fn offers(&self) -> Vec<Offer> {
        offers()
    }

    fn commands(&self) -> &'static [u16] {
        &[field::N_CREATE_RQ, field::N_SET_RQ]
    }

    fn serve<'a>(&'a self, association: &'a mut Association, rq: Request) -> BoxFuture<'a, Result<(), AssociationError>> {
        Box::pin(self.step(association, rq))
    }
}

impl ProcedureSteps {
    async fn step(&self, association: &mut Association, rq: Request) -> Result<(), AssociationError> {
        let cmd = &rq.command;
        let create = cmd.u16(tag::COMMAND_FIELD).ok() == Some(field::N_CREATE_RQ);
        let read = if rq.has_data { association.data_within(MAX_STEP_BYTES).await? } else { Some(Vec::new()) };
        let too_big = read.is_none();
        let bytes = read.unwrap_or_default();
        let ts = rq.context.transfer_syntax;
        let calling = association.calling_ae().to_string();
        let class_tag = if create { tag::AFFECTED_SOP_CLASS_UID } else { tag::REQUESTED_SOP_CLASS_UID };
        let instance_tag = if create { tag::AFFECTED_SOP_INSTANCE_UID } else { tag::REQUESTED_SOP_INSTANCE_UID };
        let requested = cmd.string(instance_tag).ok().filter(|u| !u.is_empty());
        let result: Result<String, StepError> = if cmd.string(class_tag).ok().as_deref() != Some(rq.context.abstract_syntax.as_str()) {
            Err(StepError::ClassMismatch)
        } else if too_big {
            Err(StepError::TooLarge)
        } else if !rq.has_data {
            Err(StepError::Missing("the request's data set"))
        } else if create {
            self.ingest.create_procedure_step(&calling, requested, &bytes, ts).await
        } else {
            match requested {
                None => Err(StepError::Missing("Requested SOP Instance UID (0000,1001)")),
                Some(uid) => self.ingest.set_procedure_step(&calling, &uid, &bytes, ts).await.map(|_| uid),
            }
        };
        let rsp_field = if create { field::N_CREATE_RSP } else { field::N_SET_RSP };
        let (status, uid) = match &result {
            Ok(uid) => (Status::SUCCESS, Some(uid.clone())),
            Err(e) => (e.dimse_status(), cmd.string(instance_tag).ok().filter(|u| !u.is_empty())),
        };
        let mut rsp = command::response(cmd, rsp_field, status, &rq.context.abstract_syntax);
        if let Some(uid) = &uid {
            rsp.set_uid(tag::AFFECTED_SOP_INSTANCE_UID, uid);
        }
        if let Err(e) = &result {
            rsp.set_text(tag::ERROR_COMMENT, &e.peer_comment(), 64);
            if let Some(id) = e.error_id() {
                rsp.set_u16(tag::ERROR_ID, id);
            }
            match e {
                StepError::Database(_) => warn!(status = %status, error = %e, "procedure step not recorded"),
                _ => info!(status = %status, error = %e, "procedure step refused"),
            }
        }
        association.tally(self.name(), result.is_ok());
        association.send_command(rq.pc, &rsp).await
    }
}

/// Only a modality reports its procedure steps; the data sets are small, in a native syntax.
pub fn offers() -> Vec<Offer> {
    SOP_CLASSES
        .iter()
        .filter(|c| c.service == ServiceClass::ProcedureStep)
        .map(|class| Offer { class, roles: &[AeRole::Modality], caller_is_scp: false, native_only: true })
        .collect()
}
