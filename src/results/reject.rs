//! Withdrawing results the PACS already holds (IHE IOCM): a study triaged again rejects the
//! objects of the result it replaces, and an admin may retract a study's results. Either way one
//! rejection note (`kos`) names every object of the withdrawn results (the reports and the maps
//! and pictures each report names), is written durably and queued like the other result objects,
//! ahead of anything new.
//!
//! What was sent and what was withdrawn are read from the queued objects themselves: a report
//! names its pictures (Pertinent Other Evidence), a note names what it rejected, so an object
//! is rejected once.
//!
//! Owns: which objects a withdrawal names. Must not: send anything (the outbox does).

use std::collections::HashSet;

use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

use super::dataset::{text, uid};
use super::kos::{self, Reason};
use super::sr::{self, ImageRef};
use super::{read_header, Built, Publisher, ResultsError};
use crate::db::{Db, NewOutboxItem, ObjectKind};
use tracing::warn;

/// A report the node sent and what it named: the report and its maps and pictures.
#[derive(Debug, Clone)]
pub struct SentReport {
    /// The model, from the report's Series Description.
    pub description: String,
    pub header: InMemDicomObject,
    /// The report itself first, then its maps and pictures.
    pub objects: Vec<ImageRef>,
}

impl Publisher {
    /// The study's reports not withdrawn yet, newest first, from the queued reports and notes.
    pub fn standing_reports(&self, reports: &[String], notes: &[String]) -> Result<Vec<SentReport>, ResultsError> {
        let mut withdrawn = HashSet::new();
        for path in notes {
            if let Some(note) = self.queued_header(path)? {
                withdrawn.extend(super::reidentify::references(&note));
            }
        }
        let mut out = Vec::new();
        for path in reports {
            let Some(h) = self.queued_header(path)? else { continue };
            let Some(sop) = text(&h, tags::SOP_INSTANCE_UID) else { continue };
            if withdrawn.contains(&sop) {
                continue;
            }
            let mut objects = vec![ImageRef {
                sop_class_uid: uids::COMPREHENSIVE3_DSR_STORAGE.into(),
                sop_instance_uid: sop,
                series_instance_uid: text(&h, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
                frame: None,
            }];
            objects.extend(pertinent(&h).into_iter().filter(|o| !withdrawn.contains(&o.sop_instance_uid)));
            out.push(SentReport { description: text(&h, tags::SERIES_DESCRIPTION).unwrap_or_default(), header: h, objects });
        }
        Ok(out)
    }

    /// The rejection note for `rejected` (objects of the study of `identity`, a de-identified
    /// header), written durably. `salt` tells two notes of the same objects apart.
    pub fn rejection_note(
        &self,
        identity: &InMemDicomObject,
        rejected: Vec<ImageRef>,
        reason: Reason,
        description: Option<String>,
        salt: &str,
    ) -> Result<Built, ResultsError> {
        let study = text(identity, tags::STUDY_INSTANCE_UID).unwrap_or_default();
        let root = self.settings.uid_root.as_str();
        let mut parts: Vec<&str> = vec![&study, "rejection", salt];
        parts.extend(rejected.iter().map(|r| r.sop_instance_uid.as_str()));
        let note_uid = uid(root, &parts);
        let series = uid(root, &[&study, "rejection-series"]);
        let note = kos::Rejection {
            sop_instance_uid: note_uid.clone(),
            series_uid: series.clone(),
            series_number: self.settings.series_number + 3,
            reason,
            description,
            rejected,
            created_ms: crate::domain::now_ms(),
            station: self.station.clone(),
        };
        let mut obj = kos::build(&note, identity);
        let node = super::dataset::Algorithm {
            manufacturer: "triage-node".into(),
            model: "triage-node".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            device_uid: uid(root, &["device", &self.station]),
        };
        super::dataset::put_algorithm(&mut obj, &node, note.created_ms);
        Ok(Built { path: self.write(&obj, kos::SOP_CLASS, &note_uid)?, kind: ObjectKind::Kos, sop_instance_uid: note_uid, series_instance_uid: series })
    }

    /// The header of a queued result object; None when it is gone or unreadable (logged).
    fn queued_header(&self, path: &str) -> Result<Option<InMemDicomObject>, ResultsError> {
        let read = match self.blobs.fetch_blocking(path) {
            Ok(file) => read_header(&file),
            Err(e) if e.is_missing() => Err(ResultsError::ReadKeyImage { path: path.into(), reason: e.to_string() }),
            Err(e) => return Err(e.into()),
        };
        Ok(read.map_err(|error| warn!(%error, "a queued result object cannot be read: it is not withdrawn")).ok())
    }

    /// Retract every standing result of `study_id`: one rejection note naming their objects,
    /// written durably, and the SOP Instance UIDs (the node's own) it names. None when nothing
    /// stands (never sent, or withdrawn already) or no destination is configured.
    pub async fn retract(&self, db: &Db, study_id: i64, reason: Reason, description: &str) -> Result<Option<(Built, Vec<String>)>, ResultsError> {
        if !self.sends_objects() {
            return Ok(None);
        }
        let reports = db.outbox_study_paths(study_id, ObjectKind::Sr).await?;
        let notes = db.outbox_study_paths(study_id, ObjectKind::Kos).await?;
        let me = self.clone();
        let description = description.to_string();
        tokio::task::spawn_blocking(move || {
            let standing = me.standing_reports(&reports, &notes)?;
            let Some(first) = standing.first() else { return Ok(None) };
            let identity = first.header.clone();
            let rejected: Vec<ImageRef> = standing.into_iter().flat_map(|r| r.objects).collect();
            let mut seen = HashSet::new();
            let named: Vec<String> = rejected.iter().filter(|r| seen.insert(&r.sop_instance_uid)).map(|r| r.sop_instance_uid.clone()).collect();
            let note = me.rejection_note(&identity, rejected, reason, Some(description), &crate::domain::now_ms().to_string())?;
            Ok(Some((note, named)))
        })
        .await
        .map_err(|e| ResultsError::Task(e.to_string()))?
    }
}

impl Publisher {
    /// The RIS's correction of a retracted study (`[hl7] enabled`), written durably, and its
    /// outbox row: the newest HL7 report queued for the study, made a retraction (OBR-25 C, its
    /// observations deleted, no priority; `hl7::oru_r01`) under a control ID of its own. None
    /// when HL7 is off or the RIS was never sent a report that stands (none queued, or the
    /// newest is a retraction already).
    pub async fn retraction_hl7(&self, db: &Db, study_id: i64, reason: Reason) -> Result<Option<NewOutboxItem>, ResultsError> {
        if !self.hl7 {
            return Ok(None);
        }
        let Some(path) = db.outbox_study_paths(study_id, ObjectKind::Hl7).await?.into_iter().next() else { return Ok(None) };
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            // Unreadable: an error, not a silent retraction the RIS is never told of.
            let unreadable = |why: String| ResultsError::Task(format!("reading the HL7 report {path} the RIS was sent: {why}"));
            let file = match me.blobs.fetch_blocking(&path) {
                Ok(file) => file,
                Err(e) if e.is_missing() => return Err(unreadable(e.to_string())),
                Err(e) => return Err(e.into()),
            };
            let bytes = std::fs::read(&file).map_err(|e| unreadable(e.to_string()))?;
            let sent: crate::hl7::Report = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
            if sent.retracted.is_some() {
                return Ok(None);
            }
            let now = crate::domain::now_ms();
            let report = crate::hl7::Report {
                // MSH-10 is at most 20 characters: R, seconds, the study row.
                control_id: format!("TNR{}S{study_id}", now / 1000),
                created_ms: now,
                lowered_from: None,
                correction: true,
                reasons: Vec::new(),
                retracted: Some(reason.title().meaning),
                verdicts: Vec::new(),
                // The newest may be the order update that followed the ORU: the correction is an ORU.
                order_update: crate::hl7::OrderUpdate::None,
                ..sent
            };
            me.hl7_item(study_id, &report).map(Some)
        })
        .await
        .map_err(|e| ResultsError::Task(e.to_string()))?
    }
}

/// The objects a report names besides its evidence: its maps and pictures.
fn pertinent(h: &InMemDicomObject) -> Vec<ImageRef> {
    let mut out = Vec::new();
    let Some(studies) = h.get(tags::PERTINENT_OTHER_EVIDENCE_SEQUENCE).and_then(|e| e.items()) else { return out };
    for study in studies {
        for series in study.get(tags::REFERENCED_SERIES_SEQUENCE).and_then(|e| e.items()).unwrap_or_default() {
            let series_uid = text(series, tags::SERIES_INSTANCE_UID).unwrap_or_default();
            for sop in series.get(tags::REFERENCED_SOP_SEQUENCE).and_then(|e| e.items()).unwrap_or_default() {
                if let (Some(class), Some(instance)) = (text(sop, tags::REFERENCED_SOP_CLASS_UID), text(sop, tags::REFERENCED_SOP_INSTANCE_UID)) {
                    out.push(ImageRef { sop_class_uid: class, sop_instance_uid: instance, series_instance_uid: series_uid.clone(), frame: None });
                }
            }
        }
    }
    out
}

/// Whether a report (by its Series Description) is `model`'s.
pub fn is_models(description: &str, model: &str) -> bool {
    description.starts_with(&format!("{} ", sr::series_description(model, "")))
}
