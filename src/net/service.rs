//! The contract between an association and the DIMSE services it carries: each service is one
//! type implementing `Service`, registered in `Services` at start-up. The association names no
//! service: it negotiates the SOP classes the registered services serve and hands each request
//! to the service that performs its command on its context.

use std::sync::Arc;

use super::access::BoxFuture;
use super::association::{Association, AssociationError};
use super::dimse::CommandSet;
use super::ul::negotiation::AcceptedContext;
pub use super::ul::negotiation::Offer;
use crate::dicom::sop::SOP_CLASSES;

/// One DIMSE request, its command set read whole. If `has_data`, its data set follows: the
/// service reads it with `Association::data` (or drops it with `Association::skip_data`).
pub struct Request {
    pub pc: u8,
    pub context: AcceptedContext,
    pub command: CommandSet,
    pub has_data: bool,
}

pub trait Service: Send + Sync {
    /// A short name for logs and the association's summary ("store", "echo").
    fn name(&self) -> &'static str;
    /// The SOP classes it serves (as SCP, or as the receiver of a report a peer sends us), and
    /// who may use them: negotiation offers exactly these, on these terms.
    fn offers(&self) -> Vec<Offer>;
    /// The request Command Field values it performs.
    fn commands(&self) -> &'static [u16];
    /// Perform one request: read its data set, if any, and send the response(s). It may send
    /// sub-operations on the same association and read their responses (C-GET). An error ends
    /// the association; a refusal is a response with a failure status, not an error.
    fn serve<'a>(&'a self, association: &'a mut Association, request: Request) -> BoxFuture<'a, Result<(), AssociationError>>;
}

/// The services of this node, in registration order, with their offers read once at
/// registration (they are fixed), not per association or per request.
#[derive(Clone, Default)]
pub struct Services {
    list: Vec<(Arc<dyn Service>, Vec<Offer>)>,
    /// Every SOP class some service serves, in the order of the conformance table.
    offers: Vec<Offer>,
}

impl Services {
    pub fn new() -> Services {
        Services::default()
    }

    pub fn with(mut self, service: impl Service + 'static) -> Services {
        let offers = service.offers();
        self.list.push((Arc::new(service), offers));
        // A class may be offered on several terms (stored by a modality; sent to a PACS that
        // retrieves it by C-GET), by one service each.
        let all: Vec<Offer> = self.list.iter().flat_map(|(_, o)| o.iter().copied()).collect();
        self.offers = SOP_CLASSES.iter().flat_map(|c| all.iter().filter(move |o| o.class.uid == c.uid).copied()).collect();
        self
    }

    /// Every SOP class some service serves, on its terms, in the order of the conformance table.
    pub fn offers(&self) -> &[Offer] {
        &self.offers
    }

    /// The service that performs `command_field` on `context`: one that offered its class on
    /// the terms it was accepted on (a C-STORE-RQ on a context where the caller took the SCP
    /// role is nobody's).
    pub fn find(&self, command_field: u16, context: &AcceptedContext) -> Option<Arc<dyn Service>> {
        self.list
            .iter()
            .find(|(s, offers)| {
                s.commands().contains(&command_field)
                    && offers.iter().any(|o| o.class.uid == context.abstract_syntax && o.caller_is_scp == context.caller_is_scp)
            })
            .map(|(s, _)| s.clone())
    }
}
