//! AI triage of stored studies: each instance is inferred as soon as it is stored (so a CT's
//! slices are done while the rest of the series arrives), and when a study is complete its
//! `study_ready` job catches up anything missed (a full arrival queue, a restart), waits for
//! passes still running, and aggregates the outputs into one result per model, with findings.
//!
//! Owns: the per-instance pass (claim -> decode and preprocess on the blocking pool, bounded to
//! the cores -> engine -> one transaction), the study job, and the failure rule: an instance
//! whose pixels cannot be decoded is recorded as failed with the reason and fails its study's
//! result (visible, never a crash). Must not: know tch or PDUs; log identifying values (rows
//! are named by id).

pub mod aggregate;
pub mod evaluate;
pub mod offline;
pub mod worklist;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};

use crate::db::{ClaimedJob, Db, DbError, FrameOutput, InferenceState, Priority, ResultState};
use crate::domain::now_ms;
use crate::inference::engine::{Engine, EngineError};
use crate::inference::package::Manifest;
use crate::inference::preprocess::{Image, ModelInput, PixelError};
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError};
use aggregate::Tiers;

#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("instance {0} has no row")]
    NoInstance(i64),
    #[error("preprocessing task failed: {0}")]
    Task(String),
    #[error("reading the instance file: {0}")]
    Blob(#[from] crate::blobs::BlobError),
}


pub struct Triage {
    db: Db,
    engine: Engine,
    /// The instance files, wherever they live (a shared bucket: any node's instances).
    blobs: crate::blobs::Blobs,
    /// How long a claimed instance pass or study job is held before another node may take it
    /// over; a running job renews its claim every third of it.
    lease: Duration,
    tiers: Tiers,
    preprocess: Arc<Semaphore>,
    /// Builds the SR and heatmaps of each result and queues them (None: results stay here).
    publisher: Option<crate::results::Publisher>,
}

/// One image of an instance, ready for model `model`.
struct Prepared {
    model: usize,
    input: ModelInput,
}

impl Triage {
    /// The HL7 report of a study's triage: its priority (and whether it lowers the one the
    /// RIS was given), coded findings, the AI report's UIDs. De-identified: the patient is put
    /// in at sending.
    async fn hl7_report(&self, job: &ClaimedJob, e: &worklist::WorklistEntry, built: &[crate::results::Built]) -> Result<Option<crate::hl7::Report>, TriageError> {
        let Some(instance_uid) = self.db.study_any_instance_uid(job.study_id).await? else { return Ok(None) };
        let previous = self.db.worklist_row(job.study_id).await?;
        let lowered_from = previous.as_ref().filter(|p| p.priority_rank < e.priority.rank()).map(|p| p.lowered_from.clone().unwrap_or(p.priority.clone()));
        let sr = built.iter().find(|b| b.kind == crate::db::ObjectKind::Sr);
        let findings = e
            .findings
            .iter()
            .map(|f| {
                let code = crate::results::coded_finding(self.engine.manifests().iter().find(|m| m.name == f.model), &f.label);
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
        }))
    }

    pub fn new(db: Db, engine: Engine, blobs: crate::blobs::Blobs, lease: Duration, tiers: Tiers, preprocess_threads: usize, publisher: Option<crate::results::Publisher>) -> Arc<Triage> {
        let publisher = publisher.filter(crate::results::Publisher::enabled);
        Arc::new(Triage { db, engine, blobs, lease, tiers, preprocess: Arc::new(Semaphore::new(preprocess_threads.max(1))), publisher })
    }

    /// Run instance `id`'s pass unless it is excluded, done, or running elsewhere.
    pub async fn infer_instance(&self, id: i64) -> Result<(), TriageError> {
        // The preprocessing slot first, then the claim: under a backlog a pass claimed while it
        // waits for a slot could outlive its lease and be run twice.
        let permit = self.preprocess.clone().acquire_owned().await.map_err(|e| TriageError::Task(e.to_string()))?;
        let now = now_ms();
        if !self.db.claim_inference(id, now, now + self.lease.as_millis() as i64).await? {
            return Ok(());
        }
        // Renewed while the pass runs, as a job's claim: only a dead node's passes expire.
        let db = self.db.clone();
        let _heartbeat = Heartbeat::start(self.lease, move |until| {
            let db = db.clone();
            async move { db.renew_inference(id, until).await }
        });
        let path = self.db.instance_path(id).await?.ok_or(TriageError::NoInstance(id))?;
        let full = match self.blobs.fetch(&path).await {
            Ok(full) => full,
            // The file is gone (not the bucket): the pass fails, and the study's result says so.
            Err(e) if e.is_missing() => {
                error!(error = %e, "the instance's file is missing");
                return Ok(self.db.record_inference(id, InferenceState::Failed, Some("the instance's stored file is missing"), &[]).await?);
            }
            Err(e) => {
                // The bucket is unreachable: the pass runs again later (the study job waits).
                let _ = self.db.release_inference(id).await;
                return Err(e.into());
            }
        };
        let manifests: Vec<Manifest> = self.engine.manifests().to_vec();
        let started = Instant::now();
        let prepared = match tokio::task::spawn_blocking(move || prepare(&full, &manifests)).await {
            Ok(prepared) => prepared,
            // A decoder that panics on these pixels would panic again on every retry: the
            // instance fails (and its study's result says so) instead of staying claimed.
            Err(e) if e.is_panic() => Err(PixelError::Crashed),
            Err(e) => return Err(TriageError::Task(e.to_string())),
        };
        drop(permit);
        let preprocess_us = started.elapsed().as_micros() as i64;
        let mut images = match prepared {
            Ok(images) if images.is_empty() => {
                debug!("no model accepts this instance");
                return Ok(self.db.record_inference(id, InferenceState::NotRouted, None, &[]).await?);
            }
            Ok(images) => images,
            Err(e) => {
                warn!(error = %e, "instance pixels cannot be prepared; its study's result will say so");
                return Ok(self.db.record_inference(id, InferenceState::Failed, Some(&e.to_string()), &[]).await?);
            }
        };
        let per_image_us = preprocess_us / images.len() as i64;
        // Queue every image first, each model's together, so they can share a batch; then collect.
        let mut waiting = Vec::with_capacity(images.len());
        let mut models: Vec<usize> = images.iter().map(|p| p.model).collect();
        models.sort_unstable();
        models.dedup();
        for model in models {
            let (mine, rest): (Vec<_>, Vec<_>) = images.into_iter().partition(|p| p.model == model);
            images = rest;
            match self.engine.submit_many(model, mine.iter().map(|p| p.input.values.clone()).collect()).await {
                Ok(answers) => waiting.extend(mine.into_iter().zip(answers.into_iter().map(Ok))),
                Err(e) => waiting.extend(mine.into_iter().map(|p| (p, Err(e.clone())))),
            }
        }
        let mut rows = Vec::with_capacity(waiting.len());
        let mut failure: Option<EngineError> = None;
        for (p, answer) in waiting {
            let out = match answer {
                Ok(rx) => rx.await.unwrap_or(Err(EngineError::Stopped)),
                Err(e) => Err(e),
            };
            match out {
                Ok(o) => {
                    let m = &self.engine.manifests()[p.model];
                    rows.push(FrameOutput {
                        instance_id: id,
                        model: m.name.clone(),
                        model_version: m.version.clone(),
                        frame: p.input.frame as i64,
                        probabilities: o.probabilities,
                        source_rows: p.input.source_rows as i64,
                        source_cols: p.input.source_cols as i64,
                        cam_rows: o.cam_rows as i64,
                        cam_cols: o.cam_cols as i64,
                        cam: o.cam,
                        preprocess_us: per_image_us,
                        queue_us: o.queue_us as i64,
                        forward_us: o.forward_us as i64,
                        batch_size: o.batch_size as i64,
                        created_at_ms: 0,
                    })
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            // The engine stopped (shutdown): leave the claim to expire, the study job retries.
            Some(EngineError::Stopped) => Ok(()),
            Some(e) => {
                error!(error = %e, "inference failed");
                Ok(self.db.record_inference(id, InferenceState::Failed, Some(&e.to_string()), &[]).await?)
            }
            None => Ok(self.db.record_inference(id, InferenceState::Done, None, &rows).await?),
        }
    }

    /// Run a claimed study job: catch up, wait for running passes, aggregate, save.
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
        loop {
            let pending = self.db.pending_inference(job.study_id, now_ms()).await?;
            if pending.claimable.is_empty() && pending.running == 0 {
                break;
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
        let slices = self.db.study_frame_outputs(job.study_id).await?;
        let (failed, _not_routed) = self.db.study_inference_outcomes(job.study_id).await?;
        let series = self.study_series(job.study_id, &slices).await?;
        let not_analysed = self.not_analysed(job.study_id).await?;
        let ctx = aggregate::Context {
            study_id: job.study_id,
            manifests: self.engine.manifests(),
            tiers: self.tiers,
            failed: &failed,
            series: &series,
            not_analysed: &not_analysed,
            last_received_at_ms: job.last_received_at_ms,
            ready_at_ms: job.ready_at_ms,
            triaged_at_ms: now_ms(),
        };
        let mut results = aggregate::study_results(&ctx, &slices);
        // A study whose instances name different patients (mislabelled, or two studies merged
        // under one UID) is not triaged as one: its findings would be filed under whichever
        // patient the first instance names. Every result fails with the reason, and nothing
        // goes to the PACS (whose patient would it be filed under?).
        let patients = self.db.study_patient_count(job.study_id).await?;
        let conflicting = patients > 1;
        if conflicting {
            let why = format!("the study's instances name {patients} different patients (mislabelled or merged): not triaged, nothing sent to the PACS");
            warn!(patients, "study not triaged: its instances name different patients");
            for r in results.iter_mut() {
                r.state = ResultState::Failed;
                r.priority = None;
                r.findings.clear();
                r.error = Some(why.clone());
            }
        }
        // The result objects are written (and synced) before the transaction that saves the
        // results queues them: a crash in between leaves unqueued files, never a queued ghost.
        let mut outbox = Vec::new();
        let mut all_built = Vec::new();
        if let (Some(p), false) = (self.publisher.as_ref().filter(|p| p.sends_objects()), conflicting) {
            let failed_ids: Vec<i64> = failed.iter().map(|(id, _)| *id).collect();
            for r in &results {
                let m = self.engine.manifests().iter().find(|m| m.name == r.model);
                // A not-analysed result's SR names the images that were not looked at.
                let skipped = not_analysed.iter().find(|(model, _, _)| *model == r.model).map(|(_, _, ids)| ids.clone()).unwrap_or_default();
                let about = if r.state == ResultState::NotAnalysed { &skipped } else { &failed_ids };
                match p.build(&self.db, m, r, about, job.id).await {
                    Ok(built) => {
                        outbox.extend(p.outbox_rows(job.study_id, &built));
                        all_built.extend(built);
                    }
                    // A transient cause (the database) retries the job; anything else would fail
                    // the same way again, so the result is saved without its objects, loudly.
                    Err(crate::results::ResultsError::Db(e)) => return Err(e.into()),
                    Err(crate::results::ResultsError::Blob(e)) => return Err(e.into()),
                    Err(error) => error!(
                        model = %r.model,
                        %error,
                        "AI result objects could not be built: the result is saved, but the PACS gets nothing for it"
                    ),
                }
            }
        }
        let node = self.publisher.as_ref().map_or("", |p| p.node.as_str());
        let modalities = self.db.study_modalities(job.study_id).await?;
        let entry = worklist::entries(&results).into_iter().next();
        let row = entry.as_ref().map(|e| e.to_row(modalities));
        if let (Some(p), Some(e), false) = (&self.publisher, &entry, conflicting) {
            if p.hl7 && e.priority != worklist::StudyPriority::NotApplicable {
                match self.hl7_report(&job, e, &all_built).await? {
                    // Off the runtime's threads: the report is written to the store of files.
                    Some(report) => match {
                        let (p, study_id) = (p.clone(), job.study_id);
                        tokio::task::spawn_blocking(move || p.hl7_item(study_id, &report)).await.map_err(|e| TriageError::Task(e.to_string()))?
                    } {
                        Ok(item) => outbox.push(item),
                        Err(crate::results::ResultsError::Blob(e)) => return Err(e.into()),
                        Err(error) => error!(%error, "the HL7 report could not be written: the RIS gets nothing for this study"),
                    },
                    None => warn!("no stored instance names the study's patient: no HL7 report"),
                }
            }
        }
        let saved = match self.db.save_study_results(&job, &results, row.as_ref(), node, &outbox).await {
            Err(DbError::ClaimLost(id)) => {
                // Another node runs this job now and queues its own objects: ours go.
                warn!(job_id = id, "the study job was taken over while it ran: its results and objects are dropped here");
                for item in &outbox {
                    if let Err(error) = self.blobs.delete(&item.path).await {
                        warn!(%error, "removing an unqueued result object failed");
                    }
                }
                return Ok(());
            }
            saved => saved?,
        };
        if let Some(lowered) = saved {
            warn!(from = %lowered, to = row.as_ref().map_or("-", |r| r.priority.as_str()), "a new analysis lowered the study's priority; the worklist says so");
        }
        if let (Some(p), false) = (&self.publisher, outbox.is_empty()) {
            p.wake.notify_one();
        }
        for r in &results {
            info!(
                model = %r.model,
                state = %r.state,
                priority = r.priority.map_or("-", Priority::as_str),
                images = r.images_inferred,
                failed = r.instances_failed,
                preprocess_ms = format_args!("{:.1}", r.preprocess_ms),
                forward_ms = format_args!("{:.1}", r.forward_ms),
                after_quiet_period_ms = r.triaged_at_ms - r.ready_at_ms,
                queued = outbox.len(),
                "study triaged"
            );
        }
        Ok(())
    }
}

impl Triage {
    /// (model, reason, instances) for every model that would take instances of the study stored
    /// without their pixels: each de-identified header is routed as the pass would route it.
    async fn not_analysed(&self, study_id: i64) -> Result<Vec<(String, String, Vec<i64>)>, TriageError> {
        let excluded = self.db.study_excluded_instances(study_id).await?;
        let mut out: Vec<(String, String, Vec<i64>)> = Vec::new();
        for (id, path, reason) in excluded {
            let full = match self.blobs.fetch(&path).await {
                Ok(full) => full,
                Err(e) if e.is_missing() => continue,
                Err(e) => return Err(e.into()),
            };
            let manifests: Vec<Manifest> = self.engine.manifests().to_vec();
            let takers = tokio::task::spawn_blocking(move || match Image::open(&full) {
                Ok(image) => manifests.iter().filter(|m| m.takes(&image.attrs)).map(|m| m.name.clone()).collect(),
                Err(_) => Vec::new(),
            })
            .await
            .map_err(|e| TriageError::Task(e.to_string()))?;
            for model in takers {
                match out.iter_mut().find(|(m, _, _)| *m == model) {
                    Some((_, _, ids)) => ids.push(id),
                    None => out.push((model, reason.clone(), vec![id])),
                }
            }
        }
        Ok(out)
    }
}

/// The span of one instance's inference pass (the instance's row id, never its UIDs).
fn pass_span(id: i64) -> tracing::Span {
    tracing::info_span!("pass", instance = id)
}

/// Runs the pass of each instance as it arrives (the channel the C-STORE path feeds).
pub struct Arrivals {
    triage: Arc<Triage>,
    rx: mpsc::Receiver<i64>,
    next: Option<i64>,
    closed: bool,
    passes: TaskTracker,
}

impl Arrivals {
    pub fn new(triage: Arc<Triage>, rx: mpsc::Receiver<i64>) -> Arrivals {
        Arrivals { triage, rx, next: None, closed: false, passes: TaskTracker::new() }
    }
}

impl Worker for Arrivals {
    fn name(&self) -> &'static str {
        "arrivals"
    }

    /// Start the pass of one arrived instance (on its own task: passes run side by side).
    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            let id = match self.next.take() {
                Some(id) => id,
                None => match self.rx.try_recv() {
                    Ok(id) => id,
                    Err(mpsc::error::TryRecvError::Empty) => return Ok(if self.closed { WorkState::Done } else { WorkState::Idle }),
                    Err(mpsc::error::TryRecvError::Disconnected) => return Ok(WorkState::Done),
                },
            };
            let me = self.triage.clone();
            self.passes.spawn(
                async move {
                    if let Err(e) = me.infer_instance(id).await {
                        error!(error = %e, "inference pass failed");
                    }
                }
                .instrument(pass_span(id)),
            );
            Ok(WorkState::Busy)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match self.rx.recv().await {
                Some(id) => self.next = Some(id),
                None => self.closed = true,
            }
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.passes.close();
            self.passes.wait().await;
        })
    }
}

/// A claim's heartbeat: a task renewing it every third of the lease until `renew` says it is no
/// longer ours; aborted when the work ends, however it ends.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start<F, Fut>(lease: Duration, mut renew: F) -> Heartbeat
    where
        F: FnMut(i64) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<bool, DbError>> + Send,
    {
        Heartbeat(tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match renew(now_ms() + lease.as_millis() as i64).await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(error) => warn!(%error, "renewing a claim failed"),
                    }
                }
            }
            .in_current_span(),
        ))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
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
            let all = |series: &str, f: &dyn Fn(&(i64, String, Option<f64>, Option<f64>)) -> bool| read.iter().filter(|r| r.1 == series).all(f);
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
        obj.get(tag).and_then(|e| e.to_str().ok()).map(|v| v.split('\\').filter_map(|x| x.trim().trim_end_matches('\0').parse().ok()).collect()).unwrap_or_default()
    };
    let (ipp, iop) = (numbers(tags::IMAGE_POSITION_PATIENT), numbers(tags::IMAGE_ORIENTATION_PATIENT));
    let position = (ipp.len() == 3 && iop.len() == 6).then(|| {
        let n = [iop[1] * iop[5] - iop[2] * iop[4], iop[2] * iop[3] - iop[0] * iop[5], iop[0] * iop[4] - iop[1] * iop[3]];
        ipp[0] * n[0] + ipp[1] * n[1] + ipp[2] * n[2]
    });
    SliceHeader { thickness: numbers(tags::SLICE_THICKNESS).first().copied(), position, number: numbers(tags::INSTANCE_NUMBER).first().copied() }
}

/// Open the instance, route it, decode once and prepare every frame for every model that
/// accepts it. Empty when none does.
fn prepare(path: &std::path::Path, manifests: &[Manifest]) -> Result<Vec<Prepared>, PixelError> {
    if manifests.is_empty() {
        return Ok(Vec::new());
    }
    let image = Image::open(path)?;
    let models: Vec<usize> = (0..manifests.len()).filter(|&i| manifests[i].takes(&image.attrs)).collect();
    if models.is_empty() {
        return Ok(Vec::new());
    }
    let decoded = image.decode()?;
    let mut out = Vec::new();
    for m in models {
        let spec = manifests[m].input.spec(&image.attrs.modality);
        out.extend(decoded.model_inputs(&spec).into_iter().map(|input| Prepared { model: m, input }));
    }
    Ok(out)
}
