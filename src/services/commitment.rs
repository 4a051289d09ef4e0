//! Storage Commitment Push Model results (PS3.4 Annex J): the N-EVENT-REPORT a PACS sends,
//! on an association it opens taking the SCP role, for what the outbox asked it to commit.
//! Recording the report is `delivery::commitment`'s.

use tracing::warn;

use crate::db::Db;
use crate::dicom::sop::{ServiceClass, SOP_CLASSES};
use crate::dicom::Status;
use crate::domain::AeRole;
use crate::net::access::BoxFuture;
use crate::net::dimse::command::{self, field, tag};
use crate::net::{Association, AssociationError, Offer, Request, Service};

/// The largest N-EVENT-REPORT data set we hold (a report of ~20 000 objects).
const MAX_REPORT_BYTES: usize = 4 << 20;

pub struct CommitmentReports {
    db: Db,
}

impl CommitmentReports {
    pub fn new(db: Db) -> CommitmentReports {
        CommitmentReports { db }
    }
}

impl Service for CommitmentReports {
    fn name(&self) -> &'static str {
        "commitment report"
    }

    fn offers(&self) -> Vec<Offer> {
        offers()
    }

    fn commands(&self) -> &'static [u16] {
        &[field::N_EVENT_REPORT_RQ]
    }

    fn serve<'a>(&'a self, association: &'a mut Association, rq: Request) -> BoxFuture<'a, Result<(), AssociationError>> {
        Box::pin(async move {
            if !rq.has_data {
                return association.unrecognized(rq.pc, &rq.command).await;
            }
            // A few KiB, held in memory up to MAX_REPORT_BYTES; beyond that its bytes are
            // dropped and it is answered with Processing Failure.
            let read = association.data_within(MAX_REPORT_BYTES).await?;
            let too_big = read.is_none();
            let bytes = read.unwrap_or_default();
            let cmd = &rq.command;
            let event_type = cmd.u16(tag::EVENT_TYPE_ID).unwrap_or(0);
            let status = if too_big {
                warn!("storage commitment report larger than we hold; refused");
                Status::PROCESSING_FAILURE
            } else if !(1..=2).contains(&event_type) {
                Status::NO_SUCH_EVENT_TYPE
            } else {
                crate::delivery::commitment::receive(&self.db, association.calling_ae(), event_type, &bytes, rq.context.transfer_syntax.uid).await
            };
            association.tally(self.name(), status.is_success());
            let mut rsp = command::response(cmd, field::N_EVENT_REPORT_RSP, status, &rq.context.abstract_syntax);
            rsp.set_uid(tag::AFFECTED_SOP_INSTANCE_UID, &cmd.string(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default());
            if status.is_success() {
                rsp.set_u16(tag::EVENT_TYPE_ID, event_type);
            }
            association.send_command(rq.pc, &rsp).await
        })
    }
}

/// The SOP classes of the Commitment service class. Only a PACS reports, taking the SCP role of the class we use as SCU; the reports are small
/// non-image data sets, in a native little endian syntax.
pub fn offers() -> Vec<Offer> {
    SOP_CLASSES
        .iter()
        .filter(|c| c.service == ServiceClass::Commitment)
        .map(|class| Offer { class, roles: &[AeRole::Pacs], caller_is_scp: true, native_only: true })
        .collect()
}
