//! Verification SOP Class as SCP (PS3.4 Annex A): C-ECHO.

use crate::dicom::sop::{ServiceClass, SOP_CLASSES};
use crate::dicom::Status;
use crate::domain::AeRole;
use crate::net::access::BoxFuture;
use crate::net::dimse::command::{self, field};
use crate::net::{Association, AssociationError, Offer, Request, Service};

pub struct Echo;

impl Service for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn offers(&self) -> Vec<Offer> {
        offers()
    }

    fn commands(&self) -> &'static [u16] {
        &[field::C_ECHO_RQ]
    }

    fn serve<'a>(&'a self, association: &'a mut Association, rq: Request) -> BoxFuture<'a, Result<(), AssociationError>> {
        Box::pin(async move {
            if rq.has_data {
                // PS3.7 9.3.5: a C-ECHO-RQ has no data set.
                association.skip_data().await?;
                return association.unrecognized(rq.pc, &rq.command).await;
            }
            tracing::debug!("C-ECHO");
            association.tally(self.name(), true);
            let rsp = command::response(&rq.command, field::C_ECHO_RSP, Status::SUCCESS, &rq.context.abstract_syntax);
            association.send_command(rq.pc, &rsp).await
        })
    }
}

/// The SOP classes of the Verification service class. Every registered AE may verify.
pub fn offers() -> Vec<Offer> {
    SOP_CLASSES
        .iter()
        .filter(|c| c.service == ServiceClass::Verification)
        .map(|class| Offer { class, roles: &[AeRole::Modality, AeRole::Pacs], caller_is_scp: false, native_only: false })
        .collect()
}
