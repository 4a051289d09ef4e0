//! For operations: `/healthz` (the process answers; no auth), `/readyz` (database reachable,
//! models loaded, no worker in error; no auth: `{"ready": bool}` and the status only, the
//! details and reasons for an admin's token), `/metrics` (Prometheus text format;
//! no auth, no patient data: labels are statuses, reasons, kinds, states and worker names).

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use super::auth::Role;
use super::Shared;
use crate::worker::WorkerState;

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics_text))
}

/// The process-wide metrics recorder, installed once (the first call); None if another
/// recorder was installed first.
pub fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
            let fine = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
            // From the last instance to a person told, and to their acknowledgement: seconds to
            // an hour.
            let people = [1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0];
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("triage_ingest_phase_seconds".into()), &fine)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("triage_time_to_notification_seconds".into()), &people))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("triage_time_to_acknowledgement_seconds".into()), &people))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("triage_inference_batch_size".into()), &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]))
                .and_then(|b| b.install_recorder());
            match built {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct WorkerView {
    name: String,
    state: String,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    database: bool,
    models: usize,
    workers: Vec<WorkerView>,
    /// Why not ready.
    reasons: Vec<String>,
    /// Shown, not a reason: a model's score distribution or input statistics have drifted
    /// (`/api/drift`).
    warnings: Vec<String>,
    /// Destinations (by AE title) whose items wait too long or keep failing: shown, not a
    /// reason to take this node out of service (ingest and the worklist still work, and with a
    /// shared bucket every node would say the same).
    destinations: Vec<String>,
}

async fn readyz(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let mut reasons = Vec::new();
    let database = crate::admin::report::database_answers(&state.db).await;
    if !database {
        reasons.push("the database does not answer".to_string());
    }
    if state.manifests.is_empty() {
        reasons.push("no model package is loaded: nothing is triaged".into());
    }
    let workers: Vec<WorkerView> = state
        .workers
        .statuses()
        .into_iter()
        .map(|w| WorkerView { name: w.name.into(), state: format!("{:?}", w.state).to_lowercase(), last_error: w.last_error.clone() })
        .collect();
    for w in state.workers.statuses().iter().filter(|w| w.state == WorkerState::Error) {
        reasons.push(format!("worker {} is in error", w.name));
    }
    let ready = reasons.is_empty();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // Drift is a warning for the site, not a reason to take the node out of service.
    let warnings: Vec<String> = match state.drift.check(&state.db).await {
        Ok(labels) => labels.iter().filter_map(|d| d.warning()).collect(),
        Err(e) => vec![format!("drift not checked: {e}")],
    };
    // The reasons name workers, AE titles and errors: for an admin only.
    let admin = super::known_user(&state, headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).is_some_and(|u| u.role >= Role::Admin);
    if !admin {
        return (status, Json(serde_json::json!({ "ready": ready }))).into_response();
    }
    let destinations = crate::delivery::outbox::destination_warnings();
    let body = Readiness { ready, database, models: state.manifests.len(), workers, reasons, warnings, destinations };
    (status, Json(body)).into_response()
}

/// The counters and histograms the code records, plus the queue depths read now.
async fn metrics_text(State(state): State<Shared>) -> Response {
    let Some(handle) = &state.metrics else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder not installed\n").into_response();
    };
    if let Err(error) = sample_gauges(&state).await {
        tracing::warn!(%error, "reading queue depths for /metrics failed");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

async fn sample_gauges(state: &Shared) -> Result<(), crate::admin::AdminError> {
    let depths = crate::admin::report::depths(&state.db).await?;
    metrics::gauge!("triage_instances_awaiting_inference").set(depths.awaiting_inference as f64);
    for (s, n) in depths.studies {
        metrics::gauge!("triage_studies", "state" => s).set(n as f64);
    }
    for (s, n) in depths.jobs {
        // Counted as `kind:state`.
        let (kind, job_state) = s.split_once(':').map(|(k, v)| (k.to_string(), v.to_string())).unwrap_or((String::new(), s));
        metrics::gauge!("triage_jobs", "kind" => kind, "state" => job_state).set(n as f64);
    }
    for (s, n) in depths.outbox {
        metrics::gauge!("triage_outbox_items", "state" => s).set(n as f64);
    }
    for (s, n) in depths.procedure_steps {
        metrics::gauge!("triage_procedure_steps", "state" => s).set(n as f64);
    }
    for (p, r, n) in depths.worklist {
        metrics::gauge!("triage_worklist_studies", "priority" => p, "reading" => r).set(n as f64);
    }
    for w in state.workers.statuses() {
        for s in [WorkerState::Idle, WorkerState::Busy, WorkerState::Error] {
            let on = if w.state == s { 1.0 } else { 0.0 };
            metrics::gauge!("triage_worker_state", "worker" => w.name, "state" => format!("{s:?}").to_lowercase()).set(on);
        }
        metrics::gauge!("triage_worker_errors", "worker" => w.name).set(w.errors as f64);
    }
    metrics::gauge!("triage_models_loaded").set(state.manifests.len() as f64);
    // One series per loaded model version and label, and per input statistic (bounded by the
    // packages), of every study in the window.
    for d in state.drift.check(&state.db).await? {
        if let (Some(psi), None, None) = (d.psi, &d.scanner, &d.group) {
            match d.feature {
                crate::admin::drift::Feature::Score => {
                    metrics::gauge!("triage_model_score_psi", "model" => d.model, "version" => d.model_version, "label" => d.label).set(psi);
                }
                f => metrics::gauge!("triage_model_input_psi", "model" => d.model, "version" => d.model_version, "feature" => f.as_str()).set(psi),
            }
        }
    }
    Ok(())
}
