//! A study's publication: everything one triage of a study tells the world, made and saved as
//! one. From the study's results: the result objects (SR, heatmaps) written durably, the HL7
//! report for the RIS, the webhook notifications, their outbox rows and the study's worklist row, saved with the results in
//! one transaction, fenced by the job's claim. A job whose claim was taken over saves nothing
//! and removes what it wrote.
//!
//! Owns: what is published for which result (a triaged result's objects, a failed or
//! not-analysed result's report naming the images, nothing for a not-applicable one or for a
//! study whose instances name several patients), the HL7 report's content, which webhook rules
//! are notified (`notify`), the order (objects durable before the transaction that queues them). Must not: send anything (the outbox does).

use tracing::{error, warn};

use super::worklist::{self, StudyPriority, WorklistEntry};
use super::{notify, Built, Publisher, ResultsError};
use crate::db::{ClaimedJob, Db, DbError, NewNotification, NewOutboxItem, ObjectKind, ResultState, StudyResult, WorklistRow};
use crate::domain::now_ms;
use crate::inference::package::Manifest;

/// A study's results, ready to be published.
pub struct Study<'a> {
    pub job: &'a ClaimedJob,
    pub results: &'a [StudyResult],
    pub manifests: &'a [Manifest],
    /// Instances whose pass failed: a failed result's report names them.
    pub failed: &'a [i64],
    /// Per model, the instances it would take that were stored without their pixels: a
    /// not-analysed result's report names them.
    pub not_analysed: &'a [(String, Vec<i64>)],
    /// The study's instances name several patients: nothing goes to the PACS or the RIS.
    pub conflicting: bool,
    /// The scanner of its key image (`results::scanner`), for the worklist row.
    pub scanner: Option<String>,
    /// Shadow models' results: saved with the others, never sent, listed or notified.
    pub shadows: &'a [crate::db::ShadowResult],
    /// Live models' study embeddings (similar prior cases): saved with the results.
    pub embeddings: &'a [crate::db::StudyEmbedding],
}

/// What publishing did.
#[derive(Debug)]
pub enum Published {
    Saved {
        /// The priority the worklist (and the RIS) had been given, when this one is lower.
        lowered_from: Option<String>,
        /// The study's place on the worklist (None: no row).
        priority: Option<StudyPriority>,
        /// Outbox items queued.
        queued: usize,
    },
    /// Another claimer runs the job now: nothing was saved, this run's objects are removed.
    ClaimLost(i64),
}

/// Publish `study`: build, write and queue what goes out (through `publisher`; None: results
/// stay here), then save the results, the worklist row and the outbox rows in one transaction.
/// A transient failure (the database, the store of files) is an error, and the job is retried;
/// objects that cannot be built are logged and the result saved without them.
pub async fn publish(db: &Db, publisher: Option<&Publisher>, node: &str, study: Study<'_>) -> Result<Published, ResultsError> {
    let job = study.job;
    // The result objects are written (and synced) before the transaction that saves the
    // results queues them: a crash in between leaves unqueued files, never a queued ghost.
    let mut outbox: Vec<NewOutboxItem> = Vec::new();
    let mut notifications: Vec<NewNotification> = Vec::new();
    let mut all_built: Vec<Built> = Vec::new();
    if let (Some(p), false) = (publisher.filter(|p| p.sends_objects()), study.conflicting) {
        for r in study.results {
            let m = study.manifests.iter().find(|m| m.name == r.model);
            // A not-analysed result's SR names the images that were not looked at.
            let skipped = study.not_analysed.iter().find(|(model, _)| *model == r.model).map(|(_, ids)| ids.as_slice()).unwrap_or_default();
            let about = if r.state == ResultState::NotAnalysed { skipped } else { study.failed };
            match p.build(db, m, r, about, job.id).await {
                Ok(built) => {
                    outbox.extend(p.outbox_rows(job.study_id, &built));
                    all_built.extend(built);
                }
                // A transient cause (the database, the store) retries the job; anything else would
                // fail the same way again, so the result is saved without its objects, loudly.
                Err(e @ (ResultsError::Db(_) | ResultsError::Blob(_))) => return Err(e),
                Err(error) => error!(
                    model = %r.model,
                    %error,
                    "AI result objects could not be built: the result is saved, but the PACS gets nothing for it"
                ),
            }
        }
    }
    let modalities = db.study_modalities(job.study_id).await?;
    let entry = worklist::entries(study.results).into_iter().next();
    let mut row = entry.as_ref().map(|e| e.to_row(modalities));
    if let Some(row) = row.as_mut() {
        row.scanner = study.scanner.clone();
    }
    // The worklist row this publication replaces: what the RIS and the webhooks were told.
    let previous = match (publisher, &entry) {
        (Some(_), Some(_)) => db.worklist_row(job.study_id).await?,
        _ => None,
    };
    if let (Some(p), Some(e), false) = (publisher, &entry, study.conflicting) {
        if p.hl7 && e.priority != StudyPriority::NotApplicable {
            match hl7_report(db, study.manifests, job, e, &all_built, previous.as_ref()).await? {
                Some(report) => {
                    // Off the runtime's threads: the report is written to the store of files.
                    let (writer, study_id) = (p.clone(), job.study_id);
                    let written =
                        tokio::task::spawn_blocking(move || writer.hl7_item(study_id, &report)).await.map_err(|e| ResultsError::Task(e.to_string()))?;
                    match written {
                        Ok(item) => outbox.push(item),
                        Err(e @ ResultsError::Blob(_)) => return Err(e),
                        Err(error) => error!(%error, "the HL7 report could not be written: the RIS gets nothing for this study"),
                    }
                }
                None => warn!("no stored instance names the study's patient: no HL7 report"),
            }
        }
        // The order message that raises the RIS's order priority, after the ORU (queued after
        // it, so sent after it in the HL7 lane).
        let oru_queued = outbox.iter().any(|i| i.kind == ObjectKind::Hl7);
        if let (Some(style), true) = (p.hl7_order.for_priority(e.priority.as_str()), oru_queued) {
            match hl7_report(db, study.manifests, job, e, &all_built, previous.as_ref()).await? {
                Some(report) if !raised_before(previous.as_ref(), &p.hl7_order) => {
                    let report = crate::hl7::Report { control_id: format!("TN{}S{}O", job.id, job.study_id), order_update: style, ..report };
                    let (writer, study_id) = (p.clone(), job.study_id);
                    let written =
                        tokio::task::spawn_blocking(move || writer.hl7_item(study_id, &report)).await.map_err(|e| ResultsError::Task(e.to_string()))?;
                    match written {
                        Ok(item) => outbox.push(item),
                        Err(e @ ResultsError::Blob(_)) => return Err(e),
                        Err(error) => error!(%error, "the HL7 order update could not be written: the RIS's order keeps its priority"),
                    }
                }
                _ => {}
            }
        }
        // A UPS workitem for the site's worklist managers (`[results] ups`), once per study at a
        // listed priority (not again while its standing row had one).
        if p.settings.ups_for(e.priority.as_str())
            && !previous.as_ref().is_some_and(|r| r.retraction.is_none() && StudyPriority::parse(&r.priority).is_some_and(|b| p.settings.ups_for(b.as_str())))
        {
            match ups_workitem(db, p, job, e, study.results, &all_built).await? {
                Some((work, header_of)) => {
                    let (writer, study_id) = (p.clone(), job.study_id);
                    let written = tokio::task::spawn_blocking(move || writer.ups_items(study_id, &work, &header_of))
                        .await
                        .map_err(|e| ResultsError::Task(e.to_string()))?;
                    match written {
                        Ok(items) => outbox.extend(items),
                        Err(e @ ResultsError::Blob(_)) => return Err(e),
                        Err(error) => error!(%error, "the UPS workitem could not be written: the worklist managers get nothing for this study"),
                    }
                }
                None => warn!("no key image of the study: no UPS workitem"),
            }
        }
        // A notification per rule the study now matches (de-identified: no patient needed),
        // each with its one-time acknowledgement link and its ledger row, written like the
        // report, queued in the same transaction.
        let modalities = row.as_ref().map(|r| r.modalities.as_slice()).unwrap_or_default();
        let rules = notify::matching(p.notify.rules(), e, modalities, previous.as_ref(), local_minute_of_day());
        if !rules.is_empty() {
            let created_ms = now_ms();
            let last_instance_at_ms = study.results.iter().map(|r| r.last_received_at_ms).max();
            let made: Vec<(notify::Notice, NewNotification)> = rules
                .iter()
                .map(|r| {
                    let mut n = notify::notice(r, e, study.manifests, &p.station, job.id, &p.notify.link_base, created_ms);
                    let (token, sha) = notify::ack_token();
                    n.acknowledge = notify::ack_link(&p.notify.link_base, &token);
                    let row = NewNotification {
                        id: n.id.clone(),
                        study_id: job.study_id,
                        chain: n.id.clone(),
                        level: 0,
                        rule: r.name.clone(),
                        priority: n.priority.clone(),
                        created_at_ms: created_ms,
                        last_instance_at_ms,
                        escalate_at_ms: r.escalate_after.map(|d| created_ms + d.as_millis() as i64),
                        ack_token_sha256: Some(sha),
                    };
                    (n, row)
                })
                .collect();
            let preview = if rules.iter().any(|r| r.preview) { preview(db, p, study.manifests, study.results).await } else { None };
            let made: Vec<(notify::Notice, NewNotification)> = made
                .into_iter()
                .zip(&rules)
                .map(|((mut n, row), r)| {
                    n.preview = preview.clone().filter(|_| r.preview);
                    (n, row)
                })
                .collect();
            let (writer, study_id) = (p.clone(), job.study_id);
            let written = tokio::task::spawn_blocking(move || made.into_iter().map(|(n, row)| (writer.notice_item(study_id, &n), row)).collect::<Vec<_>>())
                .await
                .map_err(|e| ResultsError::Task(e.to_string()))?;
            for (item, row) in written {
                match item {
                    Ok(item) => {
                        outbox.push(item);
                        notifications.push(row);
                    }
                    Err(e @ ResultsError::Blob(_)) => return Err(e),
                    Err(error) => error!(%error, "a notification could not be written: its rule is not told about this study"),
                }
            }
        }
    }
    let save = crate::db::StudySave {
        results: study.results,
        worklist: row.as_ref(),
        outbox: &outbox,
        notifications: &notifications,
        shadows: study.shadows,
        embeddings: study.embeddings,
    };
    let saved = match db.save_study_results(job, node, save).await {
        Err(DbError::ClaimLost(id)) => {
            // Another node runs this job now and queues its own objects: ours go.
            warn!(job_id = id, "the study job was taken over while it ran: its results and objects are dropped here");
            if let Some(p) = publisher {
                for item in &outbox {
                    if let Err(error) = p.blobs.delete(&item.path).await {
                        warn!(%error, "removing an unqueued result object failed");
                    }
                }
            }
            return Ok(Published::ClaimLost(id));
        }
        saved => saved?,
    };
    if let (Some(p), false) = (publisher, outbox.is_empty()) {
        p.wake.notify_one();
    }
    Ok(Published::Saved { lowered_from: saved, priority: entry.map(|e| e.priority), queued: outbox.len() })
}

/// Whether the RIS's order was already raised for the study's standing (not retracted) row.
fn raised_before(previous: Option<&WorklistRow>, order: &crate::config::OrderUpdateSettings) -> bool {
    previous.is_some_and(|r| r.retraction.is_none() && StudyPriority::parse(&r.priority).is_some_and(|p| order.for_priority(p.as_str()).is_some()))
}

/// A study's UPS workitem (de-identified) and the stored instance whose header names its
/// patient: the positive findings' key images (retrieved from the first `[results]`
/// destination, else this node) and the AI report (from this node, which serves its results
/// by Query/Retrieve) as input. None when no finding names a key image.
async fn ups_workitem(
    db: &Db,
    p: &Publisher,
    job: &ClaimedJob,
    e: &WorklistEntry,
    results: &[StudyResult],
    built: &[Built],
) -> Result<Option<(super::ups::Workitem, crate::db::InstanceRef)>, ResultsError> {
    let pacs = p.settings.destinations.first().map(|a| a.to_string()).unwrap_or_else(|| p.station.clone());
    let mut inputs = Vec::new();
    let mut first = None;
    for f in results.iter().flat_map(|r| &r.findings).filter(|f| f.positive) {
        let Some(k) = db.instance_ref(f.key_instance_id).await? else { continue };
        inputs.push(super::ups::Input {
            sop_class_uid: k.sop_class_uid.clone(),
            sop_instance_uid: k.sop_instance_uid.clone(),
            series_instance_uid: k.series_instance_uid.clone(),
            retrieve_ae: pacs.clone(),
        });
        first.get_or_insert(k);
    }
    let Some(first) = first else { return Ok(None) };
    for b in built.iter().filter(|b| b.kind == ObjectKind::Sr) {
        inputs.push(super::ups::Input {
            sop_class_uid: dicom_dictionary_std::uids::COMPREHENSIVE3_DSR_STORAGE.into(),
            sop_instance_uid: b.sop_instance_uid.clone(),
            series_instance_uid: b.series_instance_uid.clone(),
            retrieve_ae: p.station.clone(),
        });
    }
    let study = first.study_instance_uid.clone();
    let work = super::ups::Workitem {
        sop_instance_uid: super::dataset::uid(&p.settings.uid_root, &[&study, "ups", &job.id.to_string(), &now_ms().to_string()]),
        priority: e.priority.as_str().into(),
        findings: e.findings.iter().filter(|f| f.positive).map(|f| f.label.clone()).collect(),
        demonstration: e.demonstration,
        inputs,
        scheduled_ms: now_ms(),
    };
    Ok(Some((work, first)))
}

/// The node's local time as minutes since midnight (a rule's `hours`); UTC where the local
/// time cannot be read.
fn local_minute_of_day() -> u32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r writes only into `tm`, which lives for the call; `now` is a valid
    // time_t. A null result leaves `tm` zeroed and UTC is used instead.
    let local = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if local {
        (tm.tm_hour as u32) * 60 + tm.tm_min as u32
    } else {
        ((now as u64 / 60) % (24 * 60)) as u32
    }
}

/// The preview a notification carries: the first positive finding's heatmap (with a map), 256
/// pixels on its long side, as PNG. None (logged) when it cannot be drawn: the notification goes
/// without it.
async fn preview(db: &Db, p: &Publisher, manifests: &[Manifest], results: &[StudyResult]) -> Option<notify::Preview> {
    let (result, finding) = results.iter().flat_map(|r| r.findings.iter().map(move |f| (r, f))).find(|(_, f)| f.positive && !f.cam.is_empty())?;
    let manifest = manifests.iter().find(|m| m.name == result.model)?.clone();
    let drawn = async {
        let key = db.instance_ref(finding.key_instance_id).await.map_err(|e| e.to_string())?.ok_or("the key image has no row")?;
        let path = p.blobs.fetch(&key.path).await.map_err(|e| e.to_string())?;
        let (result, finding) = (result.clone(), finding.clone());
        tokio::task::spawn_blocking(move || super::heatmap_picture(&path, &manifest, &result, &finding, 256).and_then(|rgb| super::png_bytes(&rgb)))
            .await
            .map_err(|e| e.to_string())?
    };
    match drawn.await {
        Ok(png) => Some(notify::Preview::png(&png)),
        Err(error) => {
            warn!(%error, "the notification's preview could not be drawn: it goes without one");
            None
        }
    }
}

/// The HL7 report of a study's triage: its priority (and whether it lowers the one the RIS was
/// given), coded findings, the AI report's UIDs. De-identified: the patient is put in at
/// sending. None when no stored instance names the study's patient.
async fn hl7_report(
    db: &Db,
    manifests: &[Manifest],
    job: &ClaimedJob,
    e: &WorklistEntry,
    built: &[Built],
    previous: Option<&WorklistRow>,
) -> Result<Option<crate::hl7::Report>, ResultsError> {
    let Some(instance_uid) = db.study_any_instance_uid(job.study_id).await? else { return Ok(None) };
    // A retracted priority was withdrawn (the RIS was told): a new one lowers nothing.
    let lowered_from =
        previous.filter(|p| p.retraction.is_none() && p.priority_rank < e.priority.rank()).map(|p| p.lowered_from.clone().unwrap_or(p.priority.clone()));
    let sr = built.iter().find(|b| b.kind == ObjectKind::Sr);
    let findings = e
        .findings
        .iter()
        .map(|f| {
            let code = super::coded_finding(manifests.iter().find(|m| m.name == f.model), &f.label);
            crate::hl7::ReportFinding {
                scheme: code.scheme,
                code: code.value,
                meaning: code.meaning,
                probability: f.probability,
                positive: f.positive,
                urgent: f.urgent,
                model: f.model.clone(),
                model_version: f.model_version.clone(),
            }
        })
        .collect();
    Ok(Some(crate::hl7::Report {
        control_id: format!("TN{}S{}", job.id, job.study_id),
        created_ms: now_ms(),
        priority: e.priority.as_str().into(),
        lowered_from,
        correction: previous.is_some(),
        findings,
        reasons: e.reasons.clone(),
        demonstration: e.demonstration,
        sr_sop_instance_uid: sr.map(|b| b.sop_instance_uid.clone()),
        sr_series_instance_uid: sr.map(|b| b.series_instance_uid.clone()),
        instance_uid,
        retracted: None,
        uncertain: e.uncertain,
        order_update: crate::hl7::OrderUpdate::None,
        verdicts: Vec::new(),
    }))
}
