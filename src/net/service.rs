//! The contract between an association and the DIMSE services it carries: each service is one
//! type implementing `Service`, registered in `Services` at start-up. The association names no
//! service: it negotiates the SOP classes the registered services serve and hands each request
//! to the service that performs its command on its context.

use std::sync::Arc;

use super::access::BoxFuture;
use super::association::{Association, AssociationError};
use super::dimse::CommandSet;
use super::ul::negotiation::AcceptedContext;
use crate::dicom::sop::{SopClass, SOP_CLASSES};

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
    /// The SOP classes it serves, as SCP (or, for a report a peer sends us, as its receiver).
    fn sop_classes(&self) -> Vec<&'static SopClass>;
    /// The request Command Field values it performs.
    fn commands(&self) -> &'static [u16];
    /// Perform one request: read its data set, if any, and send the response(s). It may send
    /// sub-operations on the same association and read their responses (C-GET). An error ends
    /// the association; a refusal is a response with a failure status, not an error.
    fn serve<'a>(&'a self, association: &'a mut Association, request: Request) -> BoxFuture<'a, Result<(), AssociationError>>;
}

/// The services of this node, in registration order.
#[derive(Clone, Default)]
pub struct Services {
    list: Vec<Arc<dyn Service>>,
}

impl Services {
    pub fn new() -> Services {
        Services::default()
    }

    pub fn with(mut self, service: impl Service + 'static) -> Services {
        self.list.push(Arc::new(service));
        self
    }

    /// Every SOP class some service serves, in the order of the conformance table.
    pub fn sop_classes(&self) -> Vec<&'static SopClass> {
        let served: Vec<&'static SopClass> = self.list.iter().flat_map(|s| s.sop_classes()).collect();
        SOP_CLASSES.iter().filter(|c| served.iter().any(|s| s.uid == c.uid)).collect()
    }

    /// The service that performs `command_field` on `abstract_syntax`.
    pub fn find(&self, command_field: u16, abstract_syntax: &str) -> Option<Arc<dyn Service>> {
        self.list
            .iter()
            .find(|s| s.commands().contains(&command_field) && s.sop_classes().iter().any(|c| c.uid == abstract_syntax))
            .cloned()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|s| s.name()).collect()
    }
}
