//! Modality Performed Procedure Step (PS3.4 Annex F) as study completion: what a modality's
//! N-CREATE and N-SET say it performed, read from their data sets and kept as de-identified
//! UIDs only.
//!
//! The UIDs are replaced with the same keyed function that de-identifies the stored instances,
//! so a step's instance list meets the `instances` rows without either side keeping an original.
//! No other attribute of the step is kept: the patient, the accession and the procedure codes
//! it carries exist only in memory while the request is read (the sealed map already holds the
//! study's originals, from its instances).
//!
//! Owns: the step's attributes and their checks, the status each refusal gets.
//! Must not: know PDUs; log a UID or any value of the data set.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use tracing::info;

use super::Ingest;
use crate::db::{ProcedureStepState, StepCreated};
use crate::dicom::sop::TransferSyntax;
use crate::dicom::Status;

/// The largest N-CREATE / N-SET data set held (a step listing ~20 000 instances).
pub const MAX_STEP_BYTES: usize = 4 << 20;

/// Why an N-CREATE or N-SET was refused, with the status PS3.4 F.7.2 gives it.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The data set is not well-formed in the negotiated transfer syntax (the parser's own
    /// words are not kept: they could quote a value).
    #[error("the data set cannot be parsed")]
    Unparseable,
    #[error("the request's SOP Class UID is not the presentation context's")]
    ClassMismatch,
    #[error("the data set is larger than the node holds for a procedure step")]
    TooLarge,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("a procedure step with this SOP Instance UID exists")]
    Duplicate,
    #[error("no procedure step with this SOP Instance UID")]
    NoSuchInstance,
    #[error("the procedure step has ended (COMPLETED or DISCONTINUED) and may no longer be updated")]
    Ended,
    #[error("the procedure step was created by another AE")]
    OtherCaller,
    #[error("this AE holds too many procedure steps in progress")]
    TooManyOpen,
    #[error("the node could not record the procedure step")]
    Database(#[from] crate::db::DbError),
}

impl StepError {
    pub fn dimse_status(&self) -> Status {
        match self {
            StepError::Unparseable => Status::PROCESSING_FAILURE,
            StepError::ClassMismatch => Status::REFUSED_SOP_CLASS_NOT_SUPPORTED,
            StepError::TooLarge | StepError::TooManyOpen => Status::RESOURCE_LIMITATION,
            StepError::Missing(_) => Status::MISSING_ATTRIBUTE,
            StepError::Invalid(_) => Status::INVALID_ATTRIBUTE_VALUE,
            StepError::Duplicate => Status::DUPLICATE_SOP_INSTANCE,
            StepError::NoSuchInstance => Status::NO_SUCH_OBJECT_INSTANCE,
            StepError::Ended | StepError::OtherCaller | StepError::Database(_) => Status::PROCESSING_FAILURE,
        }
    }

    /// Error ID (0000,0903): PS3.4 F.7.2.2.4 names 0xA710 for a step that may no longer be updated.
    pub fn error_id(&self) -> Option<u16> {
        matches!(self, StepError::Ended).then_some(0xA710)
    }

    /// The Error Comment sent to the modality: the reason in its terms, no local detail.
    pub fn peer_comment(&self) -> String {
        match self {
            StepError::Database(_) => "the node could not record the procedure step".into(),
            other => other.to_string(),
        }
    }
}

/// What one request's data set says.
struct Step {
    state: Option<ProcedureStepState>,
    /// De-identified Study Instance UIDs of the Scheduled Step Attributes Sequence.
    studies: Vec<String>,
    /// De-identified SOP Instance UIDs the Performed Series Sequence lists; None when absent.
    instances: Option<Vec<String>>,
}

impl Ingest {
    /// N-CREATE: a new step, IN PROGRESS. Returns the SOP Instance UID (the caller's, or one
    /// assigned here when the request had none, to be returned in the response).
    pub async fn create_procedure_step(&self, calling_ae: &str, requested_uid: Option<String>, data: &[u8], ts: &TransferSyntax) -> Result<String, StepError> {
        let step = self.read_step(data, ts)?;
        match step.state {
            Some(ProcedureStepState::InProgress) => {}
            Some(_) => return Err(StepError::Invalid("Performed Procedure Step Status (0040,0252) must be IN PROGRESS in an N-CREATE")),
            None => return Err(StepError::Missing("Performed Procedure Step Status (0040,0252)")),
        }
        if step.studies.is_empty() {
            return Err(StepError::Missing("Study Instance UID (0020,000D) in the Scheduled Step Attributes Sequence (0040,0270)"));
        }
        let uid = match requested_uid.filter(|u| !u.trim().is_empty()) {
            Some(uid) => uid,
            None => format!("2.25.{}", uuid::Uuid::new_v4().as_u128()),
        };
        // One AE may hold only so many steps open, so that a peer cannot fill the table.
        let day_ago = crate::domain::now_ms() - 24 * 3600 * 1000;
        if self.db.open_procedure_steps(calling_ae, day_ago).await? >= i64::from(self.max_open_steps) {
            return Err(StepError::TooManyOpen);
        }
        let stored_uid = self.deid.keys().uid(&uid);
        let instances = step.instances.unwrap_or_default();
        match self.db.create_procedure_step(&stored_uid, ProcedureStepState::InProgress, calling_ae, &step.studies, &instances).await? {
            StepCreated::Created(id) => {
                info!(step_id = id, studies = step.studies.len(), instances = instances.len(), "procedure step in progress");
                Ok(uid)
            }
            StepCreated::Duplicate => Err(StepError::Duplicate),
        }
    }

    /// N-SET: the step's new state and, when sent, its performed instances. A step that has
    /// ended cannot change; only the AE that created a step may change it.
    pub async fn set_procedure_step(&self, calling_ae: &str, uid: &str, data: &[u8], ts: &TransferSyntax) -> Result<ProcedureStepState, StepError> {
        let step = self.read_step(data, ts)?;
        let found = self.db.procedure_step(&self.deid.keys().uid(uid)).await?.ok_or(StepError::NoSuchInstance)?;
        if found.state != ProcedureStepState::InProgress {
            return Err(StepError::Ended);
        }
        if found.calling_ae_title != calling_ae {
            return Err(StepError::OtherCaller);
        }
        let state = step.state.unwrap_or(ProcedureStepState::InProgress);
        // A COMPLETED step must say what it performed (PS3.4 F.7.2.2.2: the Performed Series
        // Sequence has items at completion), now or in an earlier N-SET.
        let lists_nothing = match &step.instances {
            Some(listed) => listed.is_empty(),
            None => found.listed == 0,
        };
        if state == ProcedureStepState::Completed && lists_nothing {
            return Err(StepError::Missing("Performed Series Sequence (0040,0340) items at COMPLETED"));
        }
        if !self.db.update_procedure_step(found.id, state, step.instances.as_deref()).await? {
            return Err(StepError::Ended);
        }
        let listed = step.instances.as_ref().map_or(0, Vec::len);
        info!(step_id = found.id, state = state.as_str(), instances = listed, "procedure step updated");
        if state != ProcedureStepState::InProgress {
            self.study_wake.notify_one();
        }
        Ok(state)
    }

    fn read_step(&self, data: &[u8], ts: &TransferSyntax) -> Result<Step, StepError> {
        if data.len() > MAX_STEP_BYTES {
            return Err(StepError::TooLarge);
        }
        // The structural scan first (bounded nesting, every length checked), as for a C-STORE:
        // the parser below recurses into sequences without a depth limit.
        crate::dicom::scan::scan(data, Some(data.len() as u64), ts).map_err(|_| StepError::Unparseable)?;
        let registered = TransferSyntaxRegistry.get(ts.uid).ok_or(StepError::Unparseable)?;
        let obj = InMemDicomObject::read_dataset_with_ts(data, registered).map_err(|_| StepError::Unparseable)?;
        let state = match text(&obj, tags::PERFORMED_PROCEDURE_STEP_STATUS) {
            None => None,
            Some(v) => Some(
                v.parse::<ProcedureStepState>()
                    .map_err(|_| StepError::Invalid("Performed Procedure Step Status (0040,0252) is not IN PROGRESS, COMPLETED or DISCONTINUED"))?,
            ),
        };
        let keys = self.deid.keys();
        let studies =
            items(&obj, tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE).filter_map(|item| text(item, tags::STUDY_INSTANCE_UID)).map(|uid| keys.uid(&uid)).collect();
        let instances = obj.get(tags::PERFORMED_SERIES_SEQUENCE).map(|_| {
            items(&obj, tags::PERFORMED_SERIES_SEQUENCE)
                .flat_map(|series| {
                    items(series, tags::REFERENCED_IMAGE_SEQUENCE).chain(items(series, tags::REFERENCED_NON_IMAGE_COMPOSITE_SOP_INSTANCE_SEQUENCE))
                })
                .filter_map(|r| text(r, tags::REFERENCED_SOP_INSTANCE_UID))
                .map(|uid| keys.uid(&uid))
                .collect()
        });
        Ok(Step { state, studies, instances })
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.get(tag)?.to_str().ok()?;
    let v = v.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!v.is_empty()).then(|| v.to_string())
}

fn items(obj: &InMemDicomObject, tag: Tag) -> impl Iterator<Item = &InMemDicomObject> {
    obj.get(tag).and_then(|e| e.items()).into_iter().flatten()
}
