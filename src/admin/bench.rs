//! Benchmark fixtures (scripts/bench-query.sh): many result studies made from one real
//! result object, the way the node keeps them: a sealed map record per (synthetic) source
//! instance, the de-identified object in `outbox/results/`, and its outbox row (delivered). The
//! synthetic patients are named BENCH^PATIENTnnnnn: no patient data is involved.

use std::collections::HashMap;

use dicom_dictionary_std::tags;

use super::{open, Access, AdminError};
use crate::config::Settings;
use crate::db::SealedRecord;
use crate::domain::now_ms;
use crate::results::{dataset, reidentify};

/// What `seed_results` made.
#[derive(Debug, serde::Serialize)]
pub struct Seeded {
    pub studies: usize,
    pub patients: usize,
    pub files: usize,
}

/// Make `studies` result studies (two per patient, study dates spread over 2024) from the
/// de-identified result object `template` (an SR this node produced), queued for `destination`
/// and marked delivered.
pub async fn seed_results(settings: &Settings, template: &std::path::Path, studies: usize, destination: &str) -> Result<Seeded, AdminError> {
    let keys = settings.deid.deidentifier().map_err(|source| AdminError::Keys { why: "seeding needs the site keys", source })?.keys().clone();
    let db = open(settings, Access::Read).await?;
    let file = dicom_object::open_file(template).map_err(|e| AdminError::Invalid(format!("{}: {e}", template.display())))?;
    let class = file.meta().media_storage_sop_class_uid().trim_end_matches('\0').to_string();
    let obj = file.into_inner();
    let text = |t| dataset::text(&obj, t).unwrap_or_default();
    let (t_study, t_series, t_sop) = (text(tags::STUDY_INSTANCE_UID), text(tags::SERIES_INSTANCE_UID), text(tags::SOP_INSTANCE_UID));
    let Some(t_ref) = reidentify::references(&obj).into_iter().next() else {
        return Err(AdminError::Invalid("the template references no image".into()));
    };
    // The referenced image's series, as the evidence names it.
    let t_ref_series = nested_series(&obj).into_iter().find(|s| *s != t_series).unwrap_or_default();
    let dir = settings.storage.data_dir.join("outbox/results");
    std::fs::create_dir_all(&dir).map_err(|source| AdminError::Io { what: "creating", path: dir.display().to_string(), source })?;
    let node = settings.node_id();
    let mut rows = Vec::with_capacity(studies);
    for i in 0..studies {
        let patient = i / 2;
        let day = (i * 7) % 366;
        let (month, dom) = month_day(day);
        let root = "1.2.826.0.1.3680043.10.999.77";
        let originals = serde_json::json!({
            "specific_character_set": "ISO_IR 192", "patient_id": format!("BENCH{patient:05}"), "issuer_of_patient_id": null,
            "patient_name": format!("BENCH^PATIENT{patient:05}"), "patient_birth_date": "19600101", "patient_sex": if patient % 2 == 0 { "F" } else { "M" },
            "accession_number": format!("BACC{i:06}"), "study_instance_uid": format!("{root}.1.{i}"), "series_instance_uid": format!("{root}.2.{i}"),
            "sop_instance_uid": format!("{root}.3.{i}"), "study_date": format!("2024{month:02}{dom:02}"), "study_time": "101500",
            "study_id": format!("{}", i % 1000), "referring_physician_name": "REFERRER^BENCH", "study_description": "CHEST PA"
        });
        let deid = |u: &str| keys.uid(u);
        let (study, series, sop) = (deid(&format!("{root}.1.{i}")), deid(&format!("{root}.2.{i}")), deid(&format!("{root}.3.{i}")));
        let plain = serde_json::to_vec(&originals).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let (nonce, sealed) = keys.seal(&plain, &sop).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let record = SealedRecord {
            sop_instance_uid: sop.clone(),
            study_instance_uid: study.clone(),
            key_id: keys.map_key_id(),
            nonce,
            sealed,
            created_at_ms: now_ms(),
        };
        let own_sop = dataset::uid("", &["bench-sr", &i.to_string()]);
        let own_series = dataset::uid("", &["bench-series", &i.to_string()]);
        let map: HashMap<String, String> =
            [(t_study.clone(), study), (t_ref.clone(), sop), (t_ref_series.clone(), series), (t_sop.clone(), own_sop.clone()), (t_series.clone(), own_series)]
                .into_iter()
                .collect();
        let mut made = reidentify::replace_uids(obj.clone(), &map);
        dataset::put(&mut made, tags::PATIENT_ID, dicom_core::VR::LO, &keys.patient_pseudonym("", &format!("BENCH{patient:05}")));
        let bytes = dataset::part10(&made, &class, &own_sop).map_err(AdminError::Engine)?;
        let rel = format!("outbox/results/bench-{i:06}.dcm");
        let path = settings.storage.data_dir.join(&rel);
        std::fs::write(&path, bytes).map_err(|source| AdminError::Io { what: "writing", path: path.display().to_string(), source })?;
        rows.push((record, rel));
    }
    db.seed_result_objects(&node, destination, &rows).await?;
    db.close().await;
    Ok(Seeded { studies, patients: studies.div_ceil(2), files: rows.len() })
}

/// Series Instance UIDs inside sequences (the evidence's).
fn nested_series(obj: &dicom_object::InMemDicomObject) -> Vec<String> {
    let mut out = Vec::new();
    for e in obj {
        if let Some(items) = e.items() {
            for item in items {
                if let Some(s) = dataset::text(item, tags::SERIES_INSTANCE_UID) {
                    out.push(s);
                }
                out.extend(nested_series(item));
            }
        }
    }
    out
}

fn month_day(day: usize) -> (usize, usize) {
    const DAYS: [usize; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut d = day;
    for (m, len) in DAYS.iter().enumerate() {
        if d < *len {
            return (m + 1, d + 1);
        }
        d -= len;
    }
    (12, 31)
}

/// Make `studies` worklist studies for `scripts/bench-worklist.sh`: a sealed record each
/// (synthetic patients BENCH^WORKLISTnnnnn) and a worklist row, received over the last ten
/// days, priorities in a plausible mix (2% urgent, 10% positive, 3% failed, 80% negative, 5%
/// no model).
pub async fn seed_worklist(settings: &Settings, studies: usize) -> Result<Seeded, AdminError> {
    let keys = settings.deid.deidentifier().map_err(|source| AdminError::Keys { why: "seeding needs the site keys", source })?.keys().clone();
    let db = open(settings, Access::Read).await?;
    let root = "1.2.826.0.1.3680043.10.999.78";
    let now = now_ms();
    let mut rows = Vec::with_capacity(studies);
    for i in 0..studies {
        let originals = serde_json::json!({
            "specific_character_set": "ISO_IR 192", "patient_id": format!("BENCHW{i:06}"), "issuer_of_patient_id": null,
            "patient_name": format!("BENCH^WORKLIST{i:06}"), "patient_birth_date": "19600101", "patient_sex": "F",
            "accession_number": format!("BWACC{i:06}"), "study_instance_uid": format!("{root}.1.{i}"), "series_instance_uid": format!("{root}.2.{i}"),
            "sop_instance_uid": format!("{root}.3.{i}"), "study_date": "20261201", "study_time": "101500",
            "study_id": "1", "referring_physician_name": null, "study_description": "CHEST PA"
        });
        let (study, sop) = (keys.uid(&format!("{root}.1.{i}")), keys.uid(&format!("{root}.3.{i}")));
        let plain = serde_json::to_vec(&originals).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let (nonce, sealed) = keys.seal(&plain, &sop).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let record = SealedRecord { sop_instance_uid: sop, study_instance_uid: study, key_id: keys.map_key_id(), nonce, sealed, created_at_ms: now };
        let bucket = (i * 7919) % 100;
        let (priority, rank) = match bucket {
            0..=1 => ("URGENT", 0),
            2..=11 => ("POSITIVE", 1),
            12..=14 => ("FAILED", 2),
            15..=94 => ("NEGATIVE", 3),
            _ => ("NOT_APPLICABLE", 4),
        };
        let p = 0.5 + ((i * 31) % 500) as f64 / 1000.0;
        let positive = rank <= 1;
        let findings = if rank == 4 || rank == 2 {
            serde_json::json!([])
        } else {
            serde_json::json!([{ "model": "demo-nodule", "model_version": "1.0.0", "label": "nodule", "probability": if positive { p } else { 1.0 - p }, "positive": positive, "urgent": rank == 0, "tier": "high" }])
        };
        let received = now - ((i as i64 * 86_400_000) % (10 * 86_400_000)) - i as i64;
        rows.push((
            record,
            crate::db::WorklistRow {
                study_id: 0,
                study_instance_uid: String::new(),
                priority: priority.into(),
                priority_rank: rank,
                score: positive.then_some(p),
                received_at_ms: received,
                result_at_ms: received + 2_500,
                modalities: vec!["CR".into()],
                models: if rank == 4 { vec![] } else { vec!["demo-nodule".into()] },
                positive_labels: if positive { vec!["nodule".into()] } else { vec![] },
                demonstration: true,
                findings_json: findings.to_string(),
                reasons_json: if rank == 2 { r#"["pixels could not be decoded"]"#.into() } else { "[]".into() },
                lowered_from: None,
                reading: crate::db::Reading::unread(),
                retraction: None,
                notified: Default::default(),
                scanner: None,
            },
        ));
    }
    for chunk in rows.chunks(1000) {
        db.seed_worklist_studies(chunk).await?;
    }
    db.close().await;
    Ok(Seeded { studies, patients: studies, files: 0 })
}

/// What `similar` measured, in milliseconds; per round, so the script can give medians and
/// spread.
#[derive(Debug, serde::Serialize)]
pub struct SimilarBench {
    /// `sqlite` or `postgresql`.
    pub engine: &'static str,
    pub studies: usize,
    pub dims: usize,
    pub seed_s: f64,
    pub exact: LookupTimes,
    pub hnsw: LookupTimes,
    /// The share of the exact nearest that the HNSW search found, over the warm lookups (the
    /// 2k + 5 = 15 candidates a k = 5 lookup asks for).
    pub hnsw_recall: f64,
}

/// One search method's lookups, one value per round.
#[derive(Debug, Default, serde::Serialize)]
pub struct LookupTimes {
    /// The first lookup on an empty cache: every embedding and confirmation read, then the
    /// search (for HNSW, with the index build).
    pub first_ms: Vec<f64>,
    /// Of which the reading (the cache load).
    pub first_load_ms: Vec<f64>,
    /// The median of the round's warm lookups (the study's embedding read, the incremental
    /// refresh, the search).
    pub warm_ms: Vec<f64>,
    /// Of which the search alone (median).
    pub warm_search_ms: Vec<f64>,
}

/// Benchmark fixture and driver (scripts/bench-similar.sh): seed `studies` confirmed studies of a
/// model with `dims`-dimensional embeddings (clustered: 256 random directions, each study one of
/// them plus noise) into the configured database, wait until none is young (`YOUNG_MS`, so a
/// warm refresh reads only what is new, as in steady state), then `rounds` times for each method:
/// a fresh cache's first lookup, then `warm` lookups of other studies. The lookup is what
/// depends on the number of studies (`admin::similar::lookup` without the per-candidate row
/// checks and the audit entry, which cost the same at any size). Synthetic rows only.
pub async fn similar(settings: &Settings, studies: usize, dims: usize, rounds: usize, warm: usize) -> Result<SimilarBench, AdminError> {
    use super::similar::{Method, Similar};
    use std::time::Instant;
    if studies < (rounds * (warm + 1)).max(2) || dims == 0 {
        return Err(AdminError::Invalid(format!("need at least {} studies (rounds x (warm + 1)) and dims > 0", rounds * (warm + 1))));
    }
    let db = open(settings, Access::Read).await?;
    let engine = if settings.database_url().starts_with("postgres") { "postgresql" } else { "sqlite" };
    let (model, version) = ("bench-embedder", format!("bench-{}", now_ms()));
    let centres: Vec<Vec<f32>> = (0..256u64).map(|c| bench_unit(&mut (c + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15), dims, 1.0, None)).collect();
    let noise = 1.2 / (dims as f32).sqrt();
    let vector = |i: usize| bench_unit(&mut (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03), dims, noise, Some(&centres[i % centres.len()]));
    let t = Instant::now();
    let seeded_at = now_ms();
    // Received over the hours before now, so every verdict is older than a refresh re-reads.
    let from = seeded_at - (studies as i64 + 3_600) * 1000;
    let ids = db.bench_seed_embeddings(model, &version, studies, from, vector).await?;
    let seed_s = t.elapsed().as_secs_f64();
    let settle = seeded_at + crate::db::EMBEDDINGS_YOUNG_MS + 1_000 - now_ms();
    if settle > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(settle as u64)).await;
    }
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let m = 15;
    // The latest studies ask (every other one is earlier), a different one each time.
    let mut queries = ids.iter().rev().copied();
    let (mut exact, mut hnsw) = (LookupTimes::default(), LookupTimes::default());
    let (mut found, mut wanted) = (0usize, 0usize);
    for _ in 0..rounds {
        let round: Vec<i64> = queries.by_ref().take(warm + 1).collect();
        for (method, times) in [(Method::Exact, &mut exact), (Method::Hnsw, &mut hnsw)] {
            let similar = Similar::new(&settings.similar);
            let (mut lookups, mut searches) = (Vec::new(), Vec::new());
            for (n, &study) in round.iter().enumerate() {
                let t = Instant::now();
                let own = db.study_embeddings(study).await?.pop().ok_or_else(|| AdminError::Invalid(format!("study {study} has no embedding")))?;
                similar.refresh(&db, model, &version).await?;
                let loaded = ms(t);
                let s = Instant::now();
                let (hits, _) = similar.nearest((model, &version), &own.vector, (study, own.received_at_ms), m, method);
                let search = ms(s);
                let total = ms(t);
                if n == 0 {
                    times.first_ms.push(total);
                    times.first_load_ms.push(loaded);
                    continue;
                }
                lookups.push(total);
                searches.push(search);
                if method == Method::Hnsw {
                    let (want, _) = similar.nearest((model, &version), &own.vector, (study, own.received_at_ms), m, Method::Exact);
                    wanted += want.len();
                    found += hits.iter().filter(|h| want.iter().any(|w| w.0 == h.0)).count();
                }
            }
            times.warm_ms.push(median(&mut lookups));
            times.warm_search_ms.push(median(&mut searches));
        }
    }
    db.close().await;
    Ok(SimilarBench { engine, studies, dims, seed_s, exact, hnsw, hnsw_recall: found as f64 / wanted.max(1) as f64 })
}

/// A reproducible unit vector: `around` plus uniform noise of `amplitude` per dimension (none:
/// the noise alone), from the xorshift state `rng`.
fn bench_unit(rng: &mut u64, dims: usize, amplitude: f32, around: Option<&[f32]>) -> Vec<f32> {
    let v: Vec<f32> = (0..dims)
        .map(|d| {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            let u = (*rng % 2001) as f32 / 1000.0 - 1.0;
            around.map_or(0.0, |c| c[d]) + amplitude * u
        })
        .collect();
    crate::triage::aggregate::unit(&v).unwrap_or_else(|| vec![1.0 / (dims as f32).sqrt(); dims])
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
