//! Who may see which AI result object, and the audit entry each disclosure makes: the one rule
//! the DIMSE Query/Retrieve SCP (`services::qr`) and DICOMweb (`http::dicomweb`) both apply.
//!
//! - Who: an AE of a role in `MAY_QUERY` (negotiation offers the Q/R contexts to those only),
//!   and an HTTP API user with a reader or admin token (authenticated by `http`); a C-MOVE sends
//!   only to a destination of such a role (`may_receive`).
//! - Which: the objects the index holds, as delivered (re-identified); an object a rejection note
//!   names is not among them (IHE IOCM), the note is.
//! - Audit: a query that discloses matches is one `query` entry (who, model, level, count); a
//!   retrieve is one `retrieve` entry naming the objects, written before anything is sent:
//!   without it nothing is sent. No patient data: AE titles, user names, the node's own UIDs.

use std::sync::Arc;

use super::index::Instance;
use super::query::Query;
use super::{Archive, ArchiveError, Snapshot};
use crate::audit::Event;
pub use crate::audit::{Party, Queried, Retrieved};
use crate::domain::AeRole;

/// The AE roles that may query and retrieve the results, and receive them by C-MOVE.
pub const MAY_QUERY: &[AeRole] = &[AeRole::Pacs];

/// The objects a retrieve of `query` sends: every object at and below each match, in index
/// order (references into the snapshot, not their contents).
pub fn objects(query: &Query, snapshot: &Snapshot) -> Vec<Arc<Instance>> {
    query.matches(snapshot).flat_map(|h| h.instances()).cloned().collect()
}

impl Archive {
    /// Whether `ae` may receive result objects (a C-MOVE destination): registered with a role
    /// of `MAY_QUERY`.
    pub async fn may_receive(&self, ae: &str) -> Result<bool, ArchiveError> {
        Ok(matches!(self.db.find_ae(ae).await?, Some(found) if MAY_QUERY.contains(&found.role)))
    }

    /// Record a query that disclosed `details.matches` results to `by` (nothing when none).
    pub async fn record_query(&self, by: &Party, details: Queried) -> Result<(), ArchiveError> {
        if details.matches == 0 {
            return Ok(());
        }
        self.db.audit_append(&Event::Query { by: by.clone(), details }).await?;
        Ok(())
    }

    /// Record a retrieve of `details.sop_instances` by `by`, before any is sent (nothing when
    /// it names none).
    pub async fn record_retrieve(&self, by: &Party, details: Retrieved) -> Result<(), ArchiveError> {
        if details.sop_instances.is_empty() {
            return Ok(());
        }
        self.db.audit_append(&Event::Retrieve { by: by.clone(), details }).await?;
        Ok(())
    }
}
