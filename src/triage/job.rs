//! The study job: claim (renewed by a heartbeat) -> catch up passes never run and wait for
//! running ones -> aggregate into one result per model -> publish (`results::publish`). And
//! `StudyJobs`, the worker that claims jobs, any node's, up to a bound at a time.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn, Instrument};

use super::aggregate;
use super::heartbeat::Heartbeat;
use super::pass::pass_span;
use super::series::SeriesOutputs;
use super::{Triage, TriageError};
use crate::db::{ClaimedJob, Priority, ResultState};
use crate::domain::now_ms;
use crate::inference::package::{Manifest, Mode};
use crate::inference::preprocess::Image;
use crate::results::publish::Published;
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError};

impl Triage {
    /// Run a claimed study job: claim (renewed) -> passes -> aggregate -> publish.
    pub async fn run_job(self: &Arc<Self>, job: ClaimedJob) -> Result<(), TriageError> {
        // The claim's heartbeat: renewed every third of the lease while the job runs, so a
        // short lease only ever expires for a node that died (or stalled past it: then the
        // other node's claim wins, and this one cannot save its results: `ClaimLost`).
        let (db, claim) = (self.db.clone(), job.clone());
        let _heartbeat = Heartbeat::start(self.lease, move |until| {
            let (db, claim) = (db.clone(), claim.clone());
            async move {
                let ours = db.renew_study_job(&claim, until).await?;
                if !ours {
                    warn!("the study job's claim was taken over by another claimer");
                }
                Ok(ours)
            }
        });
        self.run_passes(&job).await?;
        // Slab and volume models take whole series: run now the study is complete.
        let series = self.run_series_models(job.study_id).await?;
        let study = self.aggregate(&job, series).await?;
        let publication = crate::results::publish::Study {
            job: &job,
            results: &study.results,
            manifests: self.engine.manifests(),
            failed: &study.failed,
            not_analysed: &study.not_analysed,
            conflicting: study.conflicting,
            scanner: crate::results::scanner(&self.db, &self.blobs, &study.results).await,
            shadows: &study.shadows,
            embeddings: &study.embeddings,
        };
        let node = self.publisher.as_ref().map_or("", |p| p.node.as_str());
        let queued = match crate::results::publish::publish(&self.db, self.publisher.as_ref(), node, publication).await.map_err(TriageError::Publish)? {
            Published::ClaimLost(_) => return Ok(()),
            Published::Saved { lowered_from, priority, queued } => {
                if let Some(lowered) = lowered_from {
                    warn!(from = %lowered, to = priority.map_or("-", |p| p.as_str()), "a new analysis lowered the study's priority; the worklist says so");
                }
                queued
            }
        };
        for r in &study.results {
            info!(
                model = %r.model,
                state = %r.state,
                priority = r.priority.map_or("-", Priority::as_str),
                images = r.images_inferred,
                failed = r.instances_failed,
                preprocess_ms = format_args!("{:.1}", r.preprocess_ms),
                forward_ms = format_args!("{:.1}", r.forward_ms),
                after_quiet_period_ms = r.triaged_at_ms - r.ready_at_ms,
                queued,
                "study triaged"
            );
        }
        Ok(())
    }

    /// Run the passes never run (a full arrival queue, a restart) and wait for those running
    /// (here or on another node), until none is left.
    async fn run_passes(self: &Arc<Self>, job: &ClaimedJob) -> Result<(), TriageError> {
        loop {
            let pending = self.db.pending_inference(job.study_id, now_ms()).await?;
            if pending.claimable.is_empty() && pending.running == 0 {
                return Ok(());
            }
            let mut passes = tokio::task::JoinSet::new();
            for id in pending.claimable.iter().copied() {
                let me = self.clone();
                passes.spawn(
                    async move {
                        let failed = me.infer_instance(id).await;
                        if let Err(e) = &failed {
                            error!(error = %e, "inference pass failed");
                        }
                        failed.is_err()
                    }
                    .instrument(pass_span(id)),
                );
            }
            let mut errors = 0;
            while let Some(joined) = passes.join_next().await {
                errors += usize::from(joined.unwrap_or(true));
            }
            if errors > 0 {
                // A pass that could not run (the bucket unreachable, the database): not again
                // at once; the job keeps its claim meanwhile.
                tokio::time::sleep(Duration::from_secs(2)).await;
            } else if pending.claimable.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The study's results, one per model, from its passes' outputs (`aggregate`), and what
    /// its publication needs to know besides.
    async fn aggregate(&self, job: &ClaimedJob, whole_series: SeriesOutputs) -> Result<Aggregated, TriageError> {
        let mut slices = self.db.study_frame_outputs(job.study_id).await?;
        slices.extend(whole_series.slices);
        let (mut failed, _not_routed) = self.db.study_inference_outcomes(job.study_id).await?;
        let series = self.study_series(job.study_id, &slices).await?;
        let (not_analysed, unreadable) = self.not_analysed(job.study_id).await?;
        failed.extend(unreadable);
        // Live models' results count; shadow models' are only stored and compared.
        let (live, shadow): (Vec<Manifest>, Vec<Manifest>) = self.engine.manifests().iter().cloned().partition(|m| m.mode == Mode::Live);
        let ctx = aggregate::Context {
            study_id: job.study_id,
            manifests: &live,
            tiers: self.tiers,
            failed: &failed,
            series: &series,
            not_analysed: &not_analysed,
            last_received_at_ms: job.last_received_at_ms,
            ready_at_ms: job.ready_at_ms,
            triaged_at_ms: now_ms(),
        };
        let mut results = aggregate::study_results(&ctx, &slices);
        let shadow_ctx = aggregate::Context { manifests: &shadow, ..ctx };
        let mut shadow_results: Vec<crate::db::StudyResult> = if shadow.is_empty() { Vec::new() } else { aggregate::study_results(&shadow_ctx, &slices) };
        for (model, reason) in &whole_series.failed {
            if let Some(m) = live.iter().find(|m| &m.name == model) {
                aggregate::fail_model(&ctx, &mut results, m, reason);
            } else if let Some(m) = shadow.iter().find(|m| &m.name == model) {
                aggregate::fail_model(&shadow_ctx, &mut shadow_results, m, reason);
            }
        }
        // A study whose instances name different patients (mislabelled, or two studies merged
        // under one UID) is not triaged as one: its findings would be filed under whichever
        // patient the first instance names. Every result fails with the reason, and nothing
        // goes to the PACS (whose patient would it be filed under?).
        let patients = self.db.study_patient_count(job.study_id).await?;
        let conflicting = patients > 1;
        if conflicting {
            let why = format!("the study's instances name {patients} different patients (mislabelled or merged): not triaged, nothing sent to the PACS");
            warn!(patients, "study not triaged: its instances name different patients");
            for r in results.iter_mut().chain(shadow_results.iter_mut()) {
                r.state = ResultState::Failed;
                r.priority = None;
                r.findings.clear();
                r.error = Some(why.clone());
            }
        }
        // A shadow that took nothing of the study has nothing to compare.
        let shadows = shadow_results
            .into_iter()
            .filter_map(|r| {
                let of = shadow.iter().find(|m| m.name == r.model)?.shadow_of.clone()?;
                Some(crate::db::ShadowResult {
                    study_id: r.study_id,
                    shadow_of: of,
                    state: r.state,
                    priority: r.priority,
                    findings: r
                        .findings
                        .iter()
                        .map(|f| crate::db::ShadowFinding { label: f.label.clone(), probability: f.probability, positive: f.positive, urgent: f.urgent })
                        .collect(),
                    triaged_at_ms: r.triaged_at_ms,
                    model: r.model,
                    model_version: r.model_version,
                })
            })
            .collect();
        // Shadow models' embeddings are not kept: only live results are looked up.
        let embeddings = aggregate::study_embeddings(&results, &slices);
        Ok(Aggregated {
            embeddings,
            results,
            shadows,
            failed: failed.iter().map(|(id, _)| *id).collect(),
            not_analysed: not_analysed.into_iter().map(|(model, _, ids)| (model, ids)).collect(),
            conflicting,
        })
    }
}

/// A study's results and what its publication needs besides.
struct Aggregated {
    results: Vec<crate::db::StudyResult>,
    /// Live results' study embeddings (similar prior cases).
    embeddings: Vec<crate::db::StudyEmbedding>,
    /// Shadow models' results (never published).
    shadows: Vec<crate::db::ShadowResult>,
    /// Instances whose pass failed.
    failed: Vec<i64>,
    /// Per model, the instances it would take that were stored without their pixels.
    not_analysed: Vec<(String, Vec<i64>)>,
    /// The study's instances name several patients.
    conflicting: bool,
}

impl Triage {
    /// (model, reason, instances) for every model that would take instances of the study stored
    /// without their pixels: each de-identified header is routed as the pass would route it.
    /// An instance whose header cannot be read for that is returned as failed (with the
    /// reason): whether a model would have taken it is unknown, which must not read as
    /// "no model takes it".
    async fn not_analysed(&self, study_id: i64) -> Result<(Vec<(String, String, Vec<i64>)>, Vec<(i64, String)>), TriageError> {
        let excluded = self.db.study_excluded_instances(study_id).await?;
        let mut out: Vec<(String, String, Vec<i64>)> = Vec::new();
        let mut unreadable = Vec::new();
        for (id, path, reason) in excluded {
            let full = match self.blobs.fetch(&path).await {
                Ok(full) => full,
                Err(e) if e.is_missing() => {
                    unreadable.push((id, "the stored header of an instance kept without its pixels is missing".to_string()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let manifests: Vec<Manifest> = self.engine.manifests().to_vec();
            let takers = tokio::task::spawn_blocking(move || {
                Image::open(&full).map(|image| manifests.iter().filter(|m| m.takes(&image.attrs)).map(|m| m.name.clone()).collect::<Vec<_>>())
            })
            .await
            .map_err(|e| TriageError::Task(e.to_string()))?;
            let takers = match takers {
                Ok(takers) => takers,
                Err(_) => {
                    unreadable.push((id, "the stored header of an instance kept without its pixels cannot be read".to_string()));
                    continue;
                }
            };
            for model in takers {
                match out.iter_mut().find(|(m, _, _)| *m == model) {
                    Some((_, _, ids)) => ids.push(id),
                    None => out.push((model, reason.clone(), vec![id])),
                }
            }
        }
        Ok((out, unreadable))
    }
}

/// Claims and runs study jobs, up to `concurrency` at a time.
pub struct StudyJobs {
    triage: Arc<Triage>,
    poll: Duration,
    concurrency: usize,
    running: tokio::task::JoinSet<()>,
    /// Rung when a job is queued (by any node: `db::Wake::Jobs`), besides the poll.
    wake: Arc<tokio::sync::Notify>,
}

impl StudyJobs {
    pub fn new(triage: Arc<Triage>, poll: Duration, concurrency: usize) -> StudyJobs {
        StudyJobs { triage, poll, concurrency: concurrency.max(1), running: tokio::task::JoinSet::new(), wake: Arc::default() }
    }

    /// Also look for jobs when `wake` is rung.
    pub fn with_waker(mut self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.wake = wake;
        self
    }
}

impl Worker for StudyJobs {
    fn name(&self) -> &'static str {
        "study jobs"
    }

    /// Claim due jobs while there is room, each run on its own task.
    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            while self.running.try_join_next().is_some() {}
            while self.running.len() < self.concurrency {
                let now = now_ms();
                let Some(job) = self.triage.db.claim_study_job(now, now + self.triage.lease.as_millis() as i64).await? else { break };
                let me = self.triage.clone();
                let span = tracing::info_span!("study_job", job_id = job.id, study_id = job.study_id);
                span.in_scope(|| info!(attempt = job.attempt, "study job claimed"));
                self.running.spawn(
                    async move {
                        let id = job.id;
                        if let Err(e) = me.run_job(job).await {
                            error!(error = %e, "study triage failed; retried after its lease");
                            let _ = me.db.fail_job(id, &e.to_string()).await;
                        }
                    }
                    .instrument(span),
                );
            }
            Ok(WorkState::Idle)
        })
    }

    /// The poll interval, or sooner when a running job ends (room for the next).
    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = self.wake.notified() => {}
                Some(_) = self.running.join_next(), if !self.running.is_empty() => {}
            }
        })
    }

    /// Running jobs are stopped (their leases bring them back).
    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.running.shutdown())
    }
}

impl Triage {
    /// Where each of the study's inferred instances sits (`aggregate::SliceOf`). Headers are
    /// read (up to the pixel data) only when needed: every instance's when a model aggregates a
    /// volume (`adjacent`: slice order), else one per series when there are several (the pick
    /// rule needs the Slice Thickness).
    async fn study_series(&self, study_id: i64, slices: &[crate::db::FrameOutput]) -> Result<Vec<aggregate::SliceOf>, TriageError> {
        let inferred: std::collections::BTreeSet<i64> = slices.iter().map(|s| s.instance_id).collect();
        let rows: Vec<(i64, String, String)> = self.db.study_instance_series(study_id).await?.into_iter().filter(|(id, _, _)| inferred.contains(id)).collect();
        let volume = self.engine.manifests().iter().any(|m| m.aggregate.method == "adjacent");
        let several = rows.iter().map(|(_, s, _)| s.as_str()).collect::<std::collections::BTreeSet<_>>().len() > 1;
        let blobs = self.blobs.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut thickness: std::collections::HashMap<String, Option<f64>> = std::collections::HashMap::new();
            // (id, series, position from Image Position (Patient), Instance Number)
            let mut read = Vec::with_capacity(rows.len());
            for (id, series, path) in rows {
                let need = volume || (several && !thickness.contains_key(&series));
                // An unreadable file (or an unreachable bucket) reads as no header, as before.
                let h = match need.then(|| blobs.fetch_blocking(&path)) {
                    Some(Ok(file)) => slice_header(&file),
                    _ => SliceHeader::default(),
                };
                if need {
                    let first = thickness.entry(series.clone()).or_insert(h.thickness);
                    *first = first.or(h.thickness);
                }
                read.push((id, series, h.position, h.number));
            }
            // One ordering per series: positions when every slice has one, else Instance Numbers
            // when every slice has one, else the order of arrival (never a mix of the two).
            type Read = (i64, String, Option<f64>, Option<f64>);
            let all = |series: &str, f: &dyn Fn(&Read) -> bool| read.iter().filter(|r| r.1 == series).all(f);
            let mut by_position = std::collections::HashMap::new();
            for r in &read {
                by_position.entry(r.1.clone()).or_insert_with(|| (all(&r.1, &|x| x.2.is_some()), all(&r.1, &|x| x.3.is_some())));
            }
            read.iter()
                .map(|(id, s, position, number)| {
                    let place = match by_position.get(s) {
                        Some((true, _)) => *position,
                        Some((false, true)) => *number,
                        _ => None,
                    };
                    (*id, s.clone(), thickness.get(s).copied().flatten(), place)
                })
                .collect::<Vec<aggregate::SliceOf>>()
        });
        task.await.map_err(|e| TriageError::Task(e.to_string()))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct SliceHeader {
    thickness: Option<f64>,
    /// Image Position (Patient) along the normal of Image Orientation (Patient).
    position: Option<f64>,
    number: Option<f64>,
}

/// What orders and picks a stored instance's slice, its header read up to the pixel data.
fn slice_header(path: &std::path::Path) -> SliceHeader {
    use dicom_dictionary_std::tags;
    let Ok(obj) = dicom_object::OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path) else { return SliceHeader::default() };
    let numbers = |tag| -> Vec<f64> {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|v| v.split('\\').filter_map(|x| x.trim().trim_end_matches('\0').parse().ok()).collect())
            .unwrap_or_default()
    };
    let (ipp, iop) = (numbers(tags::IMAGE_POSITION_PATIENT), numbers(tags::IMAGE_ORIENTATION_PATIENT));
    let position = (ipp.len() == 3 && iop.len() == 6).then(|| {
        let n = [iop[1] * iop[5] - iop[2] * iop[4], iop[2] * iop[3] - iop[0] * iop[5], iop[0] * iop[4] - iop[1] * iop[3]];
        ipp[0] * n[0] + ipp[1] * n[1] + ipp[2] * n[2]
    });
    SliceHeader { thickness: numbers(tags::SLICE_THICKNESS).first().copied(), position, number: numbers(tags::INSTANCE_NUMBER).first().copied() }
}
