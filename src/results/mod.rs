//! AI results returned to the PACS: for each triaged study result, a TID 1500 Structured Report
//! (`sr`, with where each positive finding's evidence lies: `regions`) and, per positive finding,
//! the heatmap as a Parametric Map (`pm`) and as a Secondary Capture picture (`sc`), as
//! `[results] heatmap` says; for a segmenter's positive findings a DICOM Segmentation (`seg`, a
//! segment each, referenced from the SR with its area and volume); a rejection note (`kos`, `reject`) when they replace or retract
//! earlier ones. Built from the result rows and the stored (de-identified) key images, written to
//! `outbox/results/` and queued for every configured destination in the same transaction that
//! saves the result.
//!
//! The queued objects are de-identified like everything else on disk: they carry the study's
//! pseudonymous identity and UIDs. `reidentify` puts the original patient and study identity and
//! the original UIDs of the referenced images back at the moment of sending, in memory, from the
//! sealed re-identification map (each opening audited).
//!
//! Owns: what the result objects say and how they look. Must not: know PDUs or send anything
//! (the outbox does); write an original identifier to disk.

pub mod dataset;
pub mod escalate;
pub mod followup;
pub mod font;
pub mod kos;
pub mod notify;
pub mod pm;
pub mod publish;
pub mod regions;
pub mod reidentify;
pub mod reject;
pub mod sc;
pub mod seg;
pub mod sr;
pub mod ups;
pub mod worklist;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use ndarray::ArrayView2;
use tracing::warn;

use crate::config::{HeatmapObject, ResultsSettings};
use crate::db::{Db, DbError, InstanceRef, NewOutboxItem, ObjectKind, Priority, ResultState, StudyResult};
use crate::inference::heatmap;
use crate::inference::package::{Manifest, OutputKind};
use crate::inference::preprocess::Image;
use dataset::{text, uid, Code};

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("key instance {0} has no row")]
    NoInstance(i64),
    #[error("reading the key image {path}: {reason}")]
    ReadKeyImage { path: PathBuf, reason: String },
    #[error("encoding the result object: {0}")]
    Encode(String),
    #[error("writing {path}: {cause}")]
    Write { path: PathBuf, cause: std::io::Error },
    #[error("building result objects failed: {0}")]
    Task(String),
    /// The store of files (a shared bucket) failed: transient, the job is retried.
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
}

/// One object written to the outbox folder: its path relative to the data directory.
#[derive(Debug, Clone)]
pub struct Built {
    pub path: String,
    /// `Sr`, `Sc`, `Pm`, `Seg` or `Kos`.
    pub kind: ObjectKind,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
}

/// The outbox destination of HL7 reports: the receiver `[hl7]` names at sending.
pub const HL7_DESTINATION: &str = "HL7";

/// Builds and queues the result objects of this node.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// Where the key images are read and the result objects written.
    pub blobs: crate::blobs::Blobs,
    pub settings: ResultsSettings,
    /// This node's AE title (Station Name, Device Serial Number of the objects).
    pub station: String,
    /// The node id the outbox rows belong to.
    pub node: String,
    /// Wakes the outbox worker once objects are queued.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// Queue an HL7 report per triaged study (`[hl7] enabled`).
    pub hl7: bool,
    /// The order message queued after an urgent study's report (`[hl7] order_update`).
    pub hl7_order: crate::config::OrderUpdateSettings,
    /// Queue a notification per study and matching webhook rule (`[notify]`; off: no rules).
    pub notify: crate::config::NotifySettings,
    /// A reader's verdict queues the RIS a follow-up (`[hl7] feedback`): None off, else
    /// whether the reader's comment goes too (`feedback_comment`).
    pub hl7_feedback: Option<bool>,
}

impl Publisher {
    /// Whether anything is to be sent at all (objects to a PACS, reports to the RIS,
    /// workitems to UPS SCPs).
    pub fn enabled(&self) -> bool {
        self.sends_objects() || self.hl7 || !self.notify.rules().is_empty() || !self.settings.ups.is_empty()
    }

    /// Whether result objects go to a PACS.
    pub fn sends_objects(&self) -> bool {
        !self.settings.destinations.is_empty() || !self.settings.dicomweb.is_empty()
    }

    /// Build the objects of one result: for a triaged one the SR and a heatmap per positive
    /// finding; for a failed one an SR that says so (referencing up to 16 of the `failed`
    /// instances), and for a not-analysed one an SR that says why (`failed` then holds the
    /// instances whose pixels were not kept), so the reader knows the study had no AI read;
    /// none for a not-applicable one.
    /// `manifest` is None only for a failed result that no model can be named for (an instance
    /// whose header could not even be read for routing).
    pub async fn build(&self, db: &Db, manifest: Option<&Manifest>, result: &StudyResult, failed: &[i64], job_id: i64) -> Result<Vec<Built>, ResultsError> {
        let ids: Vec<i64> = match result.state {
            ResultState::Triaged if !result.findings.is_empty() && manifest.is_some() => result.findings.iter().map(|f| f.key_instance_id).collect(),
            ResultState::Failed | ResultState::NotAnalysed if !failed.is_empty() => failed.iter().copied().take(16).collect(),
            _ => return Ok(Vec::new()),
        };
        let mut keys = Vec::with_capacity(ids.len());
        for id in ids {
            keys.push(db.instance_ref(id).await?.ok_or(ResultsError::NoInstance(id))?);
        }
        // The slices a volume's positive findings stand on (their maps have a frame each).
        let mut slices = HashMap::new();
        for f in result.findings.iter().filter(|f| f.positive && f.span.len() > 1) {
            for s in &f.span {
                if let (std::collections::hash_map::Entry::Vacant(e), Some(r)) = (slices.entry(s.instance_id), db.instance_ref(s.instance_id).await?) {
                    e.insert(r);
                }
            }
        }
        let earlier = (db.outbox_study_paths(result.study_id, ObjectKind::Sr).await?, db.outbox_study_paths(result.study_id, ObjectKind::Kos).await?);
        let me = self.clone();
        let (manifest, mut result) = (manifest.cloned(), result.clone());
        if result.model.is_empty() {
            // Failed before any model could be named: the node itself reports.
            result.model = "triage-node".into();
            result.model_version = env!("CARGO_PKG_VERSION").into();
            result.intended_use = "AI triage of incoming studies by the site's configured models.".into();
            result.limits = "This study was not analysed by any model.".into();
        }
        tokio::task::spawn_blocking(move || me.build_blocking(manifest.as_ref(), &result, &keys, &slices, &earlier, job_id))
            .await
            .map_err(|e| ResultsError::Task(e.to_string()))?
    }

    /// At start-up, before any job runs: delete result files no outbox row names (written by a
    /// run that crashed before its transaction; never queued, never sent). Returns how many.
    /// With a shared bucket nothing is listed: another node may be writing objects it has not
    /// queued yet (a stopped job's objects stay there, unqueued and never sent).
    pub async fn remove_unqueued(&self, db: &Db) -> Result<usize, ResultsError> {
        if self.blobs.is_shared() {
            return Ok(0);
        }
        let dir = self.blobs.data_dir().join("outbox/results");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(0) };
        let queued = db.outbox_paths_under("outbox/results/").await?;
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !queued.contains(&format!("outbox/results/{name}")) && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Outbox rows for `built`: every object to every destination, a rejection note first (the
    /// old result withdrawn before the new one arrives), heatmaps before the report that
    /// references them.
    pub fn outbox_rows(&self, study_id: i64, built: &[Built]) -> Vec<NewOutboxItem> {
        let rank = |k: ObjectKind| [ObjectKind::Kos, ObjectKind::Seg, ObjectKind::Pm, ObjectKind::Sc, ObjectKind::Sr].iter().position(|x| *x == k).unwrap_or(5);
        let mut ordered: Vec<&Built> = built.iter().collect();
        ordered.sort_by_key(|b| rank(b.kind));
        let mut rows = Vec::new();
        for dest in self.settings.object_destinations() {
            for b in &ordered {
                rows.push(NewOutboxItem { path: b.path.clone(), destination: dest.clone(), kind: b.kind, study_id: Some(study_id), reidentify: true });
            }
        }
        rows
    }

    fn build_blocking(
        &self,
        manifest: Option<&Manifest>,
        result: &StudyResult,
        keys: &[InstanceRef],
        slices: &HashMap<i64, InstanceRef>,
        (reports, notes): &(Vec<String>, Vec<String>),
        job_id: i64,
    ) -> Result<Vec<Built>, ResultsError> {
        // The study's identity from the first key image whose header can be read (for a failed
        // result, some of them may be unreadable).
        let mut header = Err(ResultsError::NoInstance(0));
        let mut first = &keys[0];
        for k in keys {
            header = match self.blobs.fetch_blocking(&k.path) {
                Ok(file) => read_header(&file),
                // Gone: as unreadable (the next key image is tried). Unreachable: retried.
                Err(e) if e.is_missing() => Err(ResultsError::ReadKeyImage { path: k.path.clone().into(), reason: e.to_string() }),
                Err(e) => return Err(e.into()),
            };
            if header.is_ok() {
                first = k;
                break;
            }
        }
        let header = header?;
        let study_uid = text(&header, tags::STUDY_INSTANCE_UID).unwrap_or_else(|| first.study_instance_uid.clone());
        let root = self.settings.uid_root.as_str();
        let stamp = result.triaged_at_ms.to_string();
        let job = job_id.to_string();
        let base = |what: &str| uid(root, &[&study_uid, &result.model, &result.model_version, &job, &stamp, what]);
        let created_ms = crate::domain::now_ms();
        let (sr_series, sc_series, pm_series) = (base("sr-series"), base("sc-series"), base("pm-series"));

        let algorithm = dataset::Algorithm {
            manufacturer: match manifest {
                Some(m) => m.manufacturer.clone().unwrap_or_else(|| "unknown (not given in model.toml)".into()),
                None => "triage-node".into(),
            },
            model: result.model.clone(),
            version: result.model_version.clone(),
            device_uid: uid(root, &["device", &self.station, &result.model, &result.model_version]),
        };
        let mut built = Vec::new();
        let mut findings = Vec::new();
        // A segmenter's positive findings: a segment each, in one Segmentation of its own series.
        let (seg_uid, seg_series) = (base("seg"), base("seg-series"));
        let mut segments: Vec<seg::Segment> = Vec::new();
        let mut seg_frame_of_reference = None;
        let mut seg_identity = None;
        let mut evidence: Vec<sr::ImageRef> = Vec::new();
        if matches!(result.state, ResultState::Failed | ResultState::NotAnalysed) {
            evidence = keys.iter().map(|k| image_ref(k, None)).collect();
        }
        // Findings need their model's manifest (codes, window); a failed result has none.
        for (i, (f, key)) in result.findings.iter().zip(keys).enumerate() {
            let Some(manifest) = manifest else { break };
            let key_path = match self.blobs.fetch_blocking(&key.path) {
                Ok(file) => file,
                Err(e) if e.is_missing() => return Err(ResultsError::ReadKeyImage { path: key.path.clone().into(), reason: e.to_string() }),
                Err(e) => return Err(e.into()),
            };
            let key_header = if key.path == first.path { header.clone() } else { read_header(&key_path)? };
            let frames = text(&key_header, tags::NUMBER_OF_FRAMES).and_then(|s| s.parse::<u32>().ok()).unwrap_or(1);
            let source = image_ref(key, (frames > 1).then_some(f.key_frame as u32 + 1));
            let code = coded_finding(Some(manifest), &f.label);
            // Stable for the same study, model and label: a re-triage tracks the same finding.
            let tracking = |what: &str| uid(root, &[&study_uid, &result.model, &f.label, what]);
            // A model without a class activation map gives findings without one (0 x 0): no
            // region, no Parametric Map, no Secondary Capture.
            let cam = ArrayView2::from_shape((f.cam_rows as usize, f.cam_cols as usize), &f.cam[..]).ok().filter(|c| !c.is_empty());
            let (rows, cols) =
                (number(&key_header, tags::ROWS).unwrap_or(f.source_rows as usize), number(&key_header, tags::COLUMNS).unwrap_or(f.source_cols as usize));
            let geometry = pm::Geometry::of(&key_header);
            let frame_of_reference = text(&key_header, tags::FRAME_OF_REFERENCE_UID);
            let location = cam.filter(|_| f.positive).and_then(|cam| regions::locate(cam, rows, cols)).map(|region| sr::Location {
                patient: match (&geometry, &frame_of_reference) {
                    (Some(g), Some(u)) if frames == 1 => {
                        Some((u.clone(), regions::to_patient(region.peak, g.position, g.orientation, g.spacing), tracking("peak in patient")))
                    }
                    _ => None,
                },
                region_uid: tracking("region"),
                peak_uid: tracking("peak"),
                region,
            });
            // A detector's boxes, where the finding is positive; in the patient too where the
            // source frame has a Frame of Reference and its geometry.
            let boxes = if f.positive { box_regions(f, &geometry, frame_of_reference.as_deref().filter(|_| frames == 1), &tracking) } else { Vec::new() };
            let segment = match (f.positive && manifest.outputs.kind == OutputKind::Segmentation, cam) {
                (true, Some(mask)) => {
                    let key_frame = pm::MapFrame { source: source.clone(), geometry: geometry.clone(), values: regions::on_grid(mask, rows, cols) };
                    let frames = self.span_frames(f, slices, (rows, cols))?.unwrap_or_else(|| vec![key_frame]);
                    let key_at =
                        frames.iter().position(|m| m.source.sop_instance_uid == source.sop_instance_uid && m.source.frame == source.frame).unwrap_or(0);
                    let extent = seg::Extent::of(&frames, key_at, &key_header);
                    let before: usize = segments.iter().map(|s| s.frames.len()).sum();
                    seg_frame_of_reference
                        .get_or_insert_with(|| frame_of_reference.clone().unwrap_or_else(|| uid(root, &[&key.sop_instance_uid, "frame of reference"])));
                    seg_identity.get_or_insert_with(|| key_header.clone());
                    let report = sr::SegmentReport {
                        seg: sr::ImageRef {
                            sop_class_uid: seg::SOP_CLASS.into(),
                            sop_instance_uid: seg_uid.clone(),
                            series_instance_uid: seg_series.clone(),
                            frame: Some((before + key_at + 1) as u32),
                        },
                        number: segments.len() as u16 + 1,
                        area: match extent.area_mm2 {
                            Some(a) => (a, Code::new("mm2", "UCUM", "square millimeter")),
                            None => (extent.pixels as f64, Code::new("{pixels}", "UCUM", "pixels")),
                        },
                        volume_mm3: extent.volume_mm3,
                        source_series: source.series_instance_uid.clone(),
                        uid: tracking("segment"),
                    };
                    segments.push(seg::Segment { label: f.label.clone(), finding: code.clone(), frames });
                    Some(report)
                }
                _ => None,
            };
            let method = pm::map_method(manifest.outputs.saliency.is_some());
            let mut illustrations = Vec::new();
            if let (true, true, Some(cam)) = (f.positive, self.settings.heatmap.contains(&HeatmapObject::ParametricMap), cam) {
                let pm_uid = base(&format!("pm {}", f.label));
                let map = pm::Map {
                    sop_instance_uid: pm_uid.clone(),
                    series_uid: pm_series.clone(),
                    series_number: self.settings.series_number + 2,
                    instance_number: (i + 1) as u32,
                    model: result.model.clone(),
                    version: result.model_version.clone(),
                    finding: code.clone(),
                    label: f.label.clone(),
                    method,
                    // A radiograph has none: the map gets one of its own, the same for every map
                    // of the image.
                    frame_of_reference_uid: frame_of_reference.clone().unwrap_or_else(|| uid(root, &[&key.sop_instance_uid, "frame of reference"])),
                    created_ms,
                    station: self.station.clone(),
                };
                let frame = pm::MapFrame { source: source.clone(), geometry: geometry.clone(), values: regions::on_grid(cam, rows, cols) };
                // A volume's finding: a frame per slice of its run, where every slice can be read
                // and has the key slice's size; else the key slice alone.
                let frames = match self.span_frames(f, slices, (rows, cols))? {
                    Some(frames) => frames,
                    None => vec![frame],
                };
                let mut obj = pm::try_build(&map, &frames, &key_header, pm::Display::HotIron).map_err(ResultsError::Encode)?;
                dataset::put_algorithm(&mut obj, &algorithm, created_ms);
                built.push(Built {
                    path: self.write(&obj, uids::PARAMETRIC_MAP_STORAGE, &pm_uid)?,
                    kind: ObjectKind::Pm,
                    sop_instance_uid: pm_uid.clone(),
                    series_instance_uid: pm_series.clone(),
                });
                illustrations.push(sr::ImageRef {
                    sop_class_uid: uids::PARAMETRIC_MAP_STORAGE.into(),
                    sop_instance_uid: pm_uid,
                    series_instance_uid: pm_series.clone(),
                    frame: None,
                });
            }
            if f.positive && cam.is_some() && self.settings.heatmap.contains(&HeatmapObject::SecondaryCapture) {
                let sc_uid = base(&format!("sc {}", f.label));
                match heatmap_picture(&key_path, manifest, result, f, self.settings.heatmap_max_size) {
                    Ok(rgb) => {
                        let capture = sc::Capture {
                            sop_instance_uid: sc_uid.clone(),
                            series_uid: sc_series.clone(),
                            series_number: self.settings.series_number + 1,
                            instance_number: (i + 1) as u32,
                            source: source.clone(),
                            model: result.model.clone(),
                            version: result.model_version.clone(),
                            method,
                            created_ms,
                            station: self.station.clone(),
                        };
                        let mut obj = sc::build(&capture, &rgb, &key_header);
                        dataset::put_algorithm(&mut obj, &algorithm, created_ms);
                        built.push(Built {
                            path: self.write(&obj, uids::SECONDARY_CAPTURE_IMAGE_STORAGE, &sc_uid)?,
                            kind: ObjectKind::Sc,
                            sop_instance_uid: sc_uid.clone(),
                            series_instance_uid: sc_series.clone(),
                        });
                        illustrations.push(sr::ImageRef {
                            sop_class_uid: uids::SECONDARY_CAPTURE_IMAGE_STORAGE.into(),
                            sop_instance_uid: sc_uid,
                            series_instance_uid: sc_series.clone(),
                            frame: None,
                        });
                    }
                    // The report still goes out, without the picture; the reason is logged.
                    Err(e) => warn!(study_id = result.study_id, model = %result.model, error = %e, "heatmap not rendered"),
                }
            }
            evidence.push(source.clone());
            findings.push(sr::FindingReport {
                label: f.label.clone(),
                code,
                probability: f.probability,
                positive: f.positive,
                urgent: f.urgent,
                tier: f.tier.clone(),
                source,
                illustrations,
                tracking_uid: tracking("finding"),
                location,
                boxes,
                segment,
            });
        }
        if let (false, Some(identity)) = (segments.is_empty(), &seg_identity) {
            let s = seg::Seg {
                sop_instance_uid: seg_uid.clone(),
                series_uid: seg_series.clone(),
                // After the rejection notes' (plus three).
                series_number: self.settings.series_number + 4,
                model: result.model.clone(),
                version: result.model_version.clone(),
                frame_of_reference_uid: seg_frame_of_reference.clone().unwrap_or_default(),
                created_ms,
                station: self.station.clone(),
            };
            let kind = match manifest.map(|m| m.outputs.segmentation_type()) {
                Some(crate::inference::package::SegmentationType::Binary) => seg::Kind::Binary,
                _ => seg::Kind::Fractional,
            };
            let mut obj = seg::try_build(&s, &segments, identity, kind).map_err(ResultsError::Encode)?;
            dataset::put_algorithm(&mut obj, &algorithm, created_ms);
            built.push(Built {
                path: self.write(&obj, seg::SOP_CLASS, &seg_uid)?,
                kind: ObjectKind::Seg,
                sop_instance_uid: seg_uid.clone(),
                series_instance_uid: seg_series.clone(),
            });
        }
        let sr_uid = base("sr");
        let report = sr::Report {
            model: result.model.clone(),
            version: result.model_version.clone(),
            manufacturer: algorithm.manufacturer.clone(),
            demonstration: result.demonstration,
            intended_use: result.intended_use.clone(),
            limits: result.limits.clone(),
            priority: match result.state {
                ResultState::Failed => "failed".into(),
                ResultState::NotAnalysed => "not_analysed".into(),
                _ => result.priority.unwrap_or(Priority::Negative).as_str().into(),
            },
            failure: matches!(result.state, ResultState::Failed | ResultState::NotAnalysed)
                .then(|| dataset::ascii(result.error.as_deref().unwrap_or("no reason recorded"))),
            procedure: procedure(&header).0,
            performed_procedure: procedure(&header).1,
            findings,
            evidence,
            device_uid: algorithm.device_uid.clone(),
            series_uid: sr_series.clone(),
            series_number: self.settings.series_number,
            sop_instance_uid: sr_uid.clone(),
            created_ms,
            station: self.station.clone(),
        };
        let mut obj = sr::build(&report, &header);
        dataset::put_algorithm(&mut obj, &algorithm, created_ms);
        // A study triaged again (a late instance re-opened it): the new report names the one it
        // replaces, so a PACS or viewer can show it as superseded, and a rejection note (IOCM)
        // withdraws the old report and its maps and pictures before the new ones arrive.
        let standing = self.standing_reports(reports, notes)?;
        if let Some(previous) = standing.into_iter().find(|r| reject::is_models(&r.description, &result.model)) {
            let study = text(&header, tags::STUDY_INSTANCE_UID).unwrap_or_default();
            dataset::put_seq(&mut obj, tags::PREDECESSOR_DOCUMENTS_SEQUENCE, sr::evidence(&study, &[&previous.objects[0]]));
            let why = format!("Replaced by a newer result of {} {}: the study was triaged again.", result.model, result.model_version);
            built.push(self.rejection_note(&previous.header, previous.objects, kos::Reason::Quality, Some(why), &sr_uid)?);
        }
        built.push(Built {
            path: self.write(&obj, uids::COMPREHENSIVE3_DSR_STORAGE, &sr_uid)?,
            kind: ObjectKind::Sr,
            sop_instance_uid: sr_uid.clone(),
            series_instance_uid: sr_series.clone(),
        });
        Ok(built)
    }

    /// The map frames of a volume's finding, one per slice of its run in slice order; None when
    /// it stands on one image, or a slice is gone, unreadable or of another size.
    fn span_frames(&self, f: &crate::db::Finding, slices: &HashMap<i64, InstanceRef>, size: (usize, usize)) -> Result<Option<Vec<pm::MapFrame>>, ResultsError> {
        if f.span.len() < 2 {
            return Ok(None);
        }
        let mut frames = Vec::with_capacity(f.span.len());
        for s in &f.span {
            let Some(r) = slices.get(&s.instance_id) else { return Ok(None) };
            let header = match self.blobs.fetch_blocking(&r.path) {
                Ok(file) => read_header(&file),
                Err(e) if e.is_missing() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let Ok(header) = header else { return Ok(None) };
            let (rows, cols) = (number(&header, tags::ROWS), number(&header, tags::COLUMNS));
            let cam = ArrayView2::from_shape((f.cam_rows as usize, f.cam_cols as usize), &s.cam[..]);
            let (Some(rows), Some(cols), Ok(cam)) = (rows, cols, cam) else { return Ok(None) };
            if (rows, cols) != size {
                return Ok(None);
            }
            let multi = number(&header, tags::NUMBER_OF_FRAMES).is_some_and(|n| n > 1);
            frames.push(pm::MapFrame {
                source: image_ref(r, multi.then_some(s.frame as u32 + 1)),
                geometry: pm::Geometry::of(&header),
                values: regions::on_grid(cam, rows, cols),
            });
        }
        Ok(Some(frames))
    }

    /// Write `obj` as `outbox/results/<uid>.dcm`, durably (file and folder synced).
    fn write(&self, obj: &InMemDicomObject, sop_class: &str, sop_uid: &str) -> Result<String, ResultsError> {
        let bytes = dataset::part10(obj, sop_class, sop_uid).map_err(ResultsError::Encode)?;
        self.write_durably(&format!("outbox/results/{sop_uid}.dcm"), &bytes)
    }

    /// The HL7 report of a study for the RIS, written durably as JSON (de-identified: it is
    /// rendered with the patient's identifiers only when sent), and its outbox row.
    pub fn hl7_item(&self, study_id: i64, report: &crate::hl7::Report) -> Result<NewOutboxItem, ResultsError> {
        let json = serde_json::to_vec_pretty(report).map_err(|e| ResultsError::Encode(e.to_string()))?;
        // A name of its own per run: a job run again (taken over after a node died) writes its
        // report beside the first run's unqueued one, never over it.
        let key = format!("outbox/hl7/{}.{}.json", report.control_id, &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let path = self.write_durably(&key, &json)?;
        Ok(NewOutboxItem { path, destination: HL7_DESTINATION.into(), kind: ObjectKind::Hl7, study_id: Some(study_id), reidentify: true })
    }

    /// A notification, written durably as the JSON a webhook is sent (de-identified; an e-mail
    /// is made from it at sending), and its outbox row (destination `webhook:<rule>` or
    /// `email:<rule>`, sent as written).
    pub fn notice_item(&self, study_id: i64, notice: &notify::Notice) -> Result<NewOutboxItem, ResultsError> {
        let json = serde_json::to_vec_pretty(notice).map_err(|e| ResultsError::Encode(e.to_string()))?;
        self.message_item(Some(study_id), &notice.rule, &notice.id, &json)
    }

    /// A drift notice (`notify::DriftNotice`, of no study), written durably, and its outbox row.
    pub fn drift_item(&self, notice: &notify::DriftNotice) -> Result<NewOutboxItem, ResultsError> {
        let json = serde_json::to_vec_pretty(notice).map_err(|e| ResultsError::Encode(e.to_string()))?;
        self.message_item(None, &notice.rule, &notice.id, &json)
    }

    fn message_item(&self, study_id: Option<i64>, rule: &str, id: &str, json: &[u8]) -> Result<NewOutboxItem, ResultsError> {
        // The rule's channel: `webhook:<name>` or `email:<name>`.
        let destination = self
            .notify
            .rule_named(rule)
            .map(|r| r.destination())
            .ok_or_else(|| ResultsError::Encode(format!("no [[notify.rules]] rule is named {rule:?} any more")))?;
        // A name of its own per run, as the HL7 report's.
        let key = format!("outbox/notify/{id}.{}.json", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let path = self.write_durably(&key, json)?;
        Ok(NewOutboxItem { path, destination, kind: ObjectKind::Notice, study_id, reidentify: false })
    }

    /// A study's UPS workitem (`ups::build` over the de-identified header of `header_of`, a
    /// stored instance of the study), written durably as a Part 10 file named by its UID, and
    /// its outbox rows: one per `[results] ups` SCP (`ups:<AE>`), re-identified at sending.
    pub fn ups_items(&self, study_id: i64, work: &ups::Workitem, header_of: &InstanceRef) -> Result<Vec<NewOutboxItem>, ResultsError> {
        let file = match self.blobs.fetch_blocking(&header_of.path) {
            Ok(file) => file,
            Err(e) if e.is_missing() => return Err(ResultsError::ReadKeyImage { path: header_of.path.clone().into(), reason: e.to_string() }),
            Err(e) => return Err(e.into()),
        };
        let header = read_header(&file)?;
        let obj = ups::build(work, &header);
        let bytes = dataset::part10(&obj, ups::UPS_PUSH, &work.sop_instance_uid).map_err(ResultsError::Encode)?;
        let path = self.write_durably(&format!("outbox/ups/{}.dcm", work.sop_instance_uid), &bytes)?;
        Ok(self
            .settings
            .ups
            .iter()
            .map(|ae| NewOutboxItem {
                path: path.clone(),
                destination: crate::config::ups_destination(ae),
                kind: ObjectKind::Ups,
                study_id: Some(study_id),
                reidentify: true,
            })
            .collect())
    }

    /// Write `bytes` as `relative` durably: under the data directory (staged, synced,
    /// renamed, the folder synced) or in the shared bucket (acknowledged).
    fn write_durably(&self, relative: &str, bytes: &[u8]) -> Result<String, ResultsError> {
        self.blobs.write_blocking(relative, bytes)?;
        Ok(relative.to_string())
    }
}

/// A reference to a stored instance (and a 1-based frame of it) by its de-identified UIDs.
/// A detector's finding's boxes as the SR reports them: each box on the source frame with its
/// score and a Tracking UID ("box N", stable per study, model, label and rank), and in the
/// patient where `geometry` and `frame_of_reference` are known.
fn box_regions(
    f: &crate::db::Finding,
    geometry: &Option<pm::Geometry>,
    frame_of_reference: Option<&str>,
    tracking: &dyn Fn(&str) -> String,
) -> Vec<sr::BoxRegion> {
    f.boxes
        .iter()
        .enumerate()
        .map(|(n, b)| {
            let mut region =
                sr::BoxRegion { corners: [b.x0, b.y0, b.x1, b.y1], score: f64::from(b.score), uid: tracking(&format!("box {}", n + 1)), patient: None };
            if let (Some(g), Some(u)) = (geometry, frame_of_reference) {
                let points = region.outline().into_iter().map(|p| regions::to_patient(p, g.position, g.orientation, g.spacing)).collect();
                region.patient = Some((u.to_string(), points, tracking(&format!("box {} in patient", n + 1))));
            }
            region
        })
        .collect()
}

fn image_ref(k: &InstanceRef, frame: Option<u32>) -> sr::ImageRef {
    sr::ImageRef {
        sop_class_uid: k.sop_class_uid.clone(),
        sop_instance_uid: k.sop_instance_uid.clone(),
        series_instance_uid: k.series_instance_uid.clone(),
        frame,
    }
}

/// A numeric attribute of `obj` (US, IS).
fn number(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<usize> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok()).map(|v| v as usize).filter(|&v| v > 0)
}

/// The scanner of the first triaged result's key image, for performance and drift per
/// scanner: "Manufacturer Model" and, when given, "(kernel K)" (device attributes the profile
/// keeps); None without a key image or those attributes, or when it cannot be read (the result
/// does not wait for it: said in the log).
pub async fn scanner(db: &Db, blobs: &crate::blobs::Blobs, results: &[StudyResult]) -> Option<String> {
    let id = results.iter().filter(|r| r.state == ResultState::Triaged).flat_map(|r| r.findings.first()).map(|f| f.key_instance_id).next()?;
    let key = match db.instance_ref(id).await {
        Ok(key) => key?,
        Err(error) => {
            warn!(%error, "the key image's scanner is not known: its row could not be read");
            return None;
        }
    };
    let blobs = blobs.clone();
    let header = tokio::task::spawn_blocking(move || blobs.fetch_blocking(&key.path).map_err(ResultsError::from).and_then(|file| read_header(&file))).await;
    match header {
        Ok(Ok(header)) => scanner_of(&header),
        Ok(Err(error)) => {
            warn!(%error, "the key image's scanner is not known: its header could not be read");
            None
        }
        Err(_) => None,
    }
}

/// "Manufacturer Model (kernel K)" from a header, at most 64 characters; None if it names no
/// manufacturer and no model.
pub fn scanner_of(header: &InMemDicomObject) -> Option<String> {
    let words = |tag| text(header, tag).map(|t| t.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|t| !t.is_empty());
    let device: Vec<String> = [tags::MANUFACTURER, tags::MANUFACTURER_MODEL_NAME].into_iter().filter_map(words).collect();
    if device.is_empty() {
        return None;
    }
    let mut name = device.join(" ");
    if let Some(kernel) = words(tags::CONVOLUTION_KERNEL) {
        name.push_str(&format!(" (kernel {})", kernel.replace('\\', "/")));
    }
    Some(name.chars().take(64).collect())
}

/// The header of a stored instance (everything before the pixel data).
fn read_header(path: &Path) -> Result<InMemDicomObject, ResultsError> {
    dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map(|f| f.into_inner())
        .map_err(|e| ResultsError::ReadKeyImage { path: path.to_path_buf(), reason: e.to_string() })
}

/// The manifest's code for label `i` ("SCHEME:VALUE:Meaning"), else a private code.
fn finding_code(manifest: &Manifest, i: usize, label: &str) -> Code {
    manifest
        .outputs
        .codes
        .get(i)
        .and_then(|c| {
            let mut parts = c.splitn(3, ':');
            let (scheme, value, meaning) = (parts.next()?, parts.next()?, parts.next()?);
            Some(Code::new(value, scheme, meaning))
        })
        .unwrap_or_else(|| private_code(label))
}

/// A label's code in the private scheme: the label itself (a Code Value is at most 16 characters).
fn private_code(label: &str) -> Code {
    Code::new(&dataset::ascii(label).to_uppercase().chars().take(16).collect::<String>(), sr::PRIVATE_SCHEME, &label.chars().take(64).collect::<String>())
}

/// The procedure, from the study's modality and body part: (Procedure reported, from CID 100
/// as TID 1500 requires; the procedure as precisely as known, for the Performed Procedure Code
/// Sequence). CID 100 has a CT code but no radiography one, so a radiograph reports the
/// generic imaging procedure there and says "Plain chest X-ray" in the header.
fn procedure(header: &InMemDicomObject) -> (Code, Code) {
    let modality = text(header, tags::MODALITY).unwrap_or_default().to_uppercase();
    let body = text(header, tags::BODY_PART_EXAMINED).unwrap_or_default().to_uppercase();
    let imaging = Code::new("363679005", "SCT", "Imaging procedure");
    match (modality.as_str(), body.as_str()) {
        ("CR" | "DX", "CHEST") => (imaging, Code::new("168537006", "SCT", "Plain chest X-ray")),
        ("CR" | "DX", _) => (imaging, Code::new("363680008", "SCT", "Radiographic imaging procedure")),
        ("CT", _) => (Code::new("25045-6", "LN", "CT unspecified body region"), Code::new("77477000", "SCT", "Computerized axial tomography")),
        _ => (imaging.clone(), imaging),
    }
}

/// A finding's code as the SR, the heatmap's label and the HL7 report give it: the manifest's,
/// else (no manifest, or a label the current manifest no longer has: never another label's
/// code) the private scheme's.
pub fn coded_finding(manifest: Option<&Manifest>, label: &str) -> dataset::Code {
    match manifest.and_then(|m| m.outputs.labels.iter().position(|l| l == label).map(|i| (m, i))) {
        Some((m, i)) => finding_code(m, i, label),
        None => private_code(label),
    }
}

/// The heatmap picture of one finding, as its Secondary Capture and the worklist page show it
/// (the key frame as the model saw it, the map blended over it, legend and label), at most
/// `max` pixels on its long side. `key_path` is the de-identified key image. Blocking (decodes).
pub fn heatmap_picture(key_path: &Path, manifest: &Manifest, result: &StudyResult, f: &crate::db::Finding, max: usize) -> Result<ndarray::Array3<u8>, String> {
    let label = sc::Label {
        finding: coded_finding(Some(manifest), &f.label).meaning,
        probability: f.probability,
        urgent: f.urgent,
        tier: f.tier.clone(),
        model: result.model.clone(),
        version: result.model_version.clone(),
        demonstration: result.demonstration,
    };
    render_key_image(key_path, manifest, f, max, &label)
}

/// An RGB picture as PNG bytes.
pub fn png_bytes(rgb: &ndarray::Array3<u8>) -> Result<Vec<u8>, String> {
    let (rows, cols, _) = rgb.dim();
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, cols as u32, rows as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| e.to_string())?;
    let data: Vec<u8> = rgb.iter().copied().collect();
    writer.write_image_data(&data).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// The key frame as the model saw it, the map blended over it, legend and label around it.
fn render_key_image(path: &Path, manifest: &Manifest, f: &crate::db::Finding, max: usize, label: &sc::Label) -> Result<ndarray::Array3<u8>, String> {
    let image = Image::open(path).map_err(|e| e.to_string())?;
    let spec = manifest.input.spec(&image.attrs.modality);
    let decoded = image.decode().map_err(|e| e.to_string())?;
    // A finding holds the map of its own label only.
    let cam = ArrayView2::from_shape((f.cam_rows as usize, f.cam_cols as usize), &f.cam[..]).map_err(|e| e.to_string())?;
    if cam.is_empty() {
        return Err("the model gives no class activation map for this finding".into());
    }
    Ok(sc::render(&heatmap::over_frame(&decoded, f.key_frame as usize, spec.window, cam, max), label))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_scanner_is_named_by_its_device_attributes() {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        let mut h = InMemDicomObject::new_empty();
        assert_eq!(scanner_of(&h), None);
        h.put(DataElement::new(tags::MANUFACTURER, VR::LO, PrimitiveValue::from("GE MEDICAL  SYSTEMS ")));
        assert_eq!(scanner_of(&h).as_deref(), Some("GE MEDICAL SYSTEMS"));
        h.put(DataElement::new(tags::MANUFACTURER_MODEL_NAME, VR::LO, PrimitiveValue::from("LightSpeed16")));
        h.put(DataElement::new(tags::CONVOLUTION_KERNEL, VR::SH, PrimitiveValue::Strs(["STANDARD".to_string(), "B30f".to_string()].into())));
        assert_eq!(scanner_of(&h).as_deref(), Some("GE MEDICAL SYSTEMS LightSpeed16 (kernel STANDARD/B30f)"));
    }

    use super::*;

    fn manifest(codes: &str) -> Manifest {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            r#"name = "m"
version = "1"
intended_use = "test"
limits = "test"
[routing]
modalities = ["CR"]
[input]
size = [8, 8]
channels = 1
window = {{ CR = "file" }}
[outputs]
labels = ["nodule", "effusion"]
positive = [0.5, 0.5]
urgent = [0.9, 0.9]
probabilities = 0
cam = 1
{codes}
[aggregate]
method = "max"
"#
        );
        std::fs::write(dir.path().join("model.toml"), toml).unwrap();
        Manifest::load(&dir.path().join("model.toml")).unwrap()
    }

    #[test]
    fn finding_codes_come_from_the_manifest_else_a_private_scheme() {
        let m = manifest(r#"codes = ["SCT:27925004:Nodule", "SCT:60046008:Pleural effusion"]"#);
        assert_eq!(finding_code(&m, 1, "effusion"), Code::new("60046008", "SCT", "Pleural effusion"));
        let m = manifest("");
        assert_eq!(finding_code(&m, 0, "nodule"), Code::new("NODULE", sr::PRIVATE_SCHEME, "nodule"));
    }
}
