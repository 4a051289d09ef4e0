//! Similar prior cases: for a study's embedding (per live model with `outputs.embedding`), the
//! k nearest EARLIER studies of the same model version that have a confirmed finding (a
//! positive finding a reader agreed with, no reader disagreeing), by cosine distance (1 - the
//! dot product of unit vectors). The nearness is the model's embedding distance, not a
//! diagnosis.
//!
//! Owns: the in-process cache per model version (embeddings read incrementally, rows after the
//! last id seen plus young rows again, so a cluster node sees other nodes' studies; the
//! confirmations of the studies whose verdicts changed), the exact search (every distance,
//! up to `[similar] exact_limit` confirmed studies) and above it an HNSW index
//! (instant-distance) over the confirmed studies, rebuilt when a tenth more were confirmed since
//! (the newer ones searched exactly meanwhile), and the lookup the API answers: each candidate
//! checked against the database (still confirmed, not retracted), de-identified (row ids, labels,
//! probabilities, receive times, heatmap links; no patient of another study), audited as a query.
//! Must not: name a patient; say the cases are alike clinically.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use instant_distance::{Builder, HnswMap, Point, Search};
use serde::Serialize;

use super::AdminError;
use crate::db::Db;

/// The most neighbours one lookup returns.
pub const K_MAX: usize = 20;

/// How the nearest are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `exact` up to `exact_limit` confirmed studies, `hnsw` above.
    Auto,
    Exact,
    Hnsw,
}

/// A unit vector; distance 1 - cosine.
#[derive(Clone)]
struct Unit(Arc<[f32]>);

impl Point for Unit {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Entry {
    id: i64,
    vector: Arc<[f32]>,
    received_at_ms: i64,
}

struct Index {
    map: HnswMap<Unit, i64>,
    studies: HashSet<i64>,
}

/// One model version's embeddings and confirmations.
#[derive(Default)]
struct Space {
    entries: HashMap<i64, Entry>,
    last_id: i64,
    /// study -> (label, probability) of its strongest confirmed finding.
    confirmed: HashMap<i64, (String, f64)>,
    /// When verdicts were last read (None: never).
    verdicts_read_ms: Option<i64>,
    index: Option<Index>,
}

/// A candidate: (study, distance).
pub type Hit = (i64, f32);

impl Space {
    fn eligible(&self, study: i64, me: i64, received_at_ms: i64) -> Option<&Entry> {
        let e = self.entries.get(&study)?;
        (study != me && self.confirmed.contains_key(&study) && (e.received_at_ms, study) < (received_at_ms, me)).then_some(e)
    }

    /// Every eligible confirmed study's distance, the `m` nearest.
    fn exact(&self, query: &[f32], me: i64, received_at_ms: i64, m: usize, among: impl Iterator<Item = i64>) -> Vec<Hit> {
        let hits: Vec<Hit> = among.filter_map(|s| self.eligible(s, me, received_at_ms).map(|e| (s, 1.0 - dot(query, &e.vector)))).collect();
        nearest(hits, m)
    }

    /// The HNSW index over the confirmed studies, (re)built when missing or when more than a
    /// tenth (at least 256) of the confirmed studies are newer than it.
    fn ensure_index(&mut self) -> &Index {
        let tail = self.index.as_ref().map_or(usize::MAX, |i| self.confirmed.keys().filter(|s| !i.studies.contains(s)).count());
        let size = self.index.as_ref().map_or(0, |i| i.studies.len());
        if self.index.is_none() || tail > (size / 10).max(256) {
            let studies: Vec<i64> = self.confirmed.keys().copied().filter(|s| self.entries.contains_key(s)).collect();
            let points = studies.iter().map(|s| Unit(self.entries[s].vector.clone())).collect();
            let map = Builder::default().ef_search(128).ef_construction(100).seed(7).build(points, studies.clone());
            self.index = Some(Index { map, studies: studies.into_iter().collect() });
        }
        self.index.as_ref().expect("built above")
    }

    fn search(&mut self, query: &[f32], me: i64, received_at_ms: i64, m: usize, method: Method, exact_limit: usize) -> (Vec<Hit>, Method) {
        let exact = match method {
            Method::Auto => self.confirmed.len() <= exact_limit,
            Method::Exact => true,
            Method::Hnsw => false,
        };
        if exact {
            let all: Vec<i64> = self.confirmed.keys().copied().collect();
            return (self.exact(query, me, received_at_ms, m, all.into_iter()), Method::Exact);
        }
        let studies: Vec<i64> = {
            let index = self.ensure_index();
            let mut search = Search::default();
            index.map.search(&Unit(query.into()), &mut search).map(|item| *item.value).collect()
        };
        let index = self.index.as_ref().expect("built above");
        let tail: Vec<i64> = self.confirmed.keys().copied().filter(|s| !index.studies.contains(s)).collect();
        let mut hits = self.exact(query, me, received_at_ms, m, studies.into_iter().chain(tail));
        // Too few among the approximate neighbours (most of them later studies, say): exactly.
        if hits.len() < m {
            let all: Vec<i64> = self.confirmed.keys().copied().collect();
            hits = self.exact(query, me, received_at_ms, m, all.into_iter());
        }
        (hits, Method::Hnsw)
    }

    fn apply_verdicts(&mut self, rows: Vec<crate::db::LabelVerdicts>) {
        let mut by_study: HashMap<i64, Option<(String, f64)>> = HashMap::new();
        for r in rows {
            let best = by_study.entry(r.study_id).or_default();
            if let Some((p, true)) = r.finding {
                if r.agree > 0 && r.disagree == 0 && best.as_ref().is_none_or(|(_, q)| p > *q) {
                    *best = Some((r.label, p));
                }
            }
        }
        for (study, best) in by_study {
            match best {
                Some(b) => self.confirmed.insert(study, b),
                None => self.confirmed.remove(&study),
            };
        }
    }
}

/// The `m` nearest of `hits`, nearest first (ties by study id).
fn nearest(mut hits: Vec<Hit>, m: usize) -> Vec<Hit> {
    let order = |a: &Hit, b: &Hit| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
    if hits.len() > m && m > 0 {
        hits.select_nth_unstable_by(m - 1, order);
        hits.truncate(m);
    }
    hits.sort_by(order);
    hits.truncate(m);
    hits
}

/// Per (model, version), its space.
type Spaces = HashMap<(String, String), Arc<Mutex<Space>>>;

/// The caches of every model version looked up, shared by the node's HTTP handlers.
#[derive(Clone)]
pub struct Similar {
    spaces: Arc<Mutex<Spaces>>,
    /// One refresh at a time per node (a refresh reads the rows after the last seen).
    refreshing: Arc<tokio::sync::Mutex<()>>,
    exact_limit: usize,
}

impl Similar {
    pub fn new(settings: &crate::config::SimilarSettings) -> Similar {
        Similar { spaces: Arc::default(), refreshing: Arc::default(), exact_limit: settings.exact_limit }
    }

    fn space(&self, model: &str, version: &str) -> Arc<Mutex<Space>> {
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        spaces.entry((model.to_string(), version.to_string())).or_default().clone()
    }

    /// Read what is new for `model` `version`: embeddings after the last row seen (and young
    /// rows again), verdicts changed since the last read (and those of re-triaged studies).
    pub async fn refresh(&self, db: &Db, model: &str, version: &str) -> Result<(), AdminError> {
        let _one = self.refreshing.lock().await;
        let space = self.space(model, version);
        let now = crate::domain::now_ms();
        let (last_id, read_ms) = {
            let s = space.lock().unwrap_or_else(|p| p.into_inner());
            (s.last_id, s.verdicts_read_ms)
        };
        let rows = db.embeddings_since(model, version, last_id, now - crate::db::EMBEDDINGS_YOUNG_MS).await?;
        let mut retriaged = Vec::new();
        {
            let mut s = space.lock().unwrap_or_else(|p| p.into_inner());
            for e in rows {
                s.last_id = s.last_id.max(e.id);
                match s.entries.get(&e.study_id) {
                    Some(old) if old.id >= e.id => continue,
                    Some(_) => retriaged.push(e.study_id),
                    None => {}
                }
                s.entries.insert(e.study_id, Entry { id: e.id, vector: e.vector.into(), received_at_ms: e.received_at_ms });
            }
        }
        let since = read_ms.map_or(i64::MIN, |t| t - crate::db::EMBEDDINGS_YOUNG_MS);
        let mut verdicts = db.label_verdicts(model, version, since, 0).await?;
        if read_ms.is_some() {
            for study in retriaged {
                verdicts.extend(db.label_verdicts(model, version, i64::MAX, study).await?);
            }
        }
        let mut s = space.lock().unwrap_or_else(|p| p.into_inner());
        s.apply_verdicts(verdicts);
        s.verdicts_read_ms = Some(now);
        Ok(())
    }

    /// The `m` nearest eligible studies of `space` (model, version) to `query` (unit length) of
    /// study `me`, received at `received_at_ms`, from the cache as it is, and how they were found. Runs on the caller's
    /// thread (an index build is CPU work: call it on the blocking pool).
    pub fn nearest(&self, space: (&str, &str), query: &[f32], (me, received_at_ms): (i64, i64), m: usize, method: Method) -> (Vec<Hit>, Method) {
        let space = self.space(space.0, space.1);
        let mut s = space.lock().unwrap_or_else(|p| p.into_inner());
        s.search(query, me, received_at_ms, m, method, self.exact_limit)
    }

    /// How many confirmed studies and embeddings the cache holds for `model` `version`.
    pub fn sizes(&self, model: &str, version: &str) -> (usize, usize) {
        let space = self.space(model, version);
        let s = space.lock().unwrap_or_else(|p| p.into_inner());
        (s.confirmed.len(), s.entries.len())
    }

    fn confirmed_finding(&self, model: &str, version: &str, study: i64) -> Option<(String, f64)> {
        let space = self.space(model, version);
        let s = space.lock().unwrap_or_else(|p| p.into_inner());
        s.confirmed.get(&study).cloned()
    }
}

/// One similar earlier case, de-identified.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimilarCase {
    /// The node's worklist study id (its page: `/api/studies/{id}`).
    pub study_id: i64,
    /// 1 - cosine of the two studies' embeddings: 0 the same direction, 2 the opposite.
    pub distance: f32,
    /// The confirmed finding: its label and probability, and the readers' verdict.
    pub label: String,
    pub probability: f64,
    pub verdict: &'static str,
    /// When the study's last instance was received (not the acquisition date).
    pub received_at_ms: i64,
    /// The finding's heatmap, as the study page serves it (None: no map).
    pub heatmap: Option<String>,
}

/// A model's similar cases of a study.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimilarCases {
    pub model: String,
    pub model_version: String,
    /// `exact` or `hnsw`.
    pub method: Method,
    /// Confirmed studies of the model version known to the node (the searched space).
    pub confirmed: usize,
    pub cases: Vec<SimilarCase>,
}

/// What the lookup says besides the cases.
pub const MEANING: &str = "nearest by the model's embedding distance; not a diagnosis";

/// The `k` nearest earlier confirmed cases of study `study_id`, per model with an embedding of
/// it; audited (a `query` entry by `user`, the study's row id and the count).
pub async fn lookup(db: &Db, similar: &Similar, study_id: i64, k: usize, user: &str) -> Result<Vec<SimilarCases>, AdminError> {
    if k == 0 || k > K_MAX {
        return Err(AdminError::Invalid(format!("k must be 1 to {K_MAX}")));
    }
    let mut out = Vec::new();
    for own in db.study_embeddings(study_id).await? {
        similar.refresh(db, &own.model, &own.model_version).await?;
        let (s, model, version, vector) = (similar.clone(), own.model.clone(), own.model_version.clone(), own.vector.clone());
        // Room for candidates the database no longer confirms (retracted, re-triaged).
        let m = 2 * k + 5;
        let (hits, method) = tokio::task::spawn_blocking(move || s.nearest((&model, &version), &vector, (study_id, own.received_at_ms), m, Method::Auto))
            .await
            .map_err(|e| AdminError::Invalid(format!("the similar-case search failed: {e}")))?;
        let mut cases = Vec::new();
        for (study, distance) in hits {
            if cases.len() == k {
                break;
            }
            if let Some(case) = checked(db, similar, &own.model, &own.model_version, study, distance).await? {
                cases.push(case);
            }
        }
        let (confirmed, _) = similar.sizes(&own.model, &own.model_version);
        out.push(SimilarCases { model: own.model, model_version: own.model_version, method, confirmed, cases });
    }
    let matches = out.iter().map(|m| m.cases.len() as u64).sum();
    let details =
        crate::audit::Queried { model: "STUDY".into(), level: "STUDY".into(), matches, cancelled: false, via: Some(format!("similar-cases study:{study_id}")) };
    db.audit_append(&crate::audit::Event::Query { by: crate::audit::Party::User(user.to_string()), details }).await?;
    Ok(out)
}

/// A candidate as the database has it now: still on the worklist (not retracted), its result of
/// the model version with the confirmed finding positive; with the finding's heatmap link.
async fn checked(db: &Db, similar: &Similar, model: &str, version: &str, study: i64, distance: f32) -> Result<Option<SimilarCase>, AdminError> {
    let Some((label, _)) = similar.confirmed_finding(model, version, study) else { return Ok(None) };
    let Some(row) = super::worklist::row(db, study).await? else { return Ok(None) };
    if row.retraction.is_some() {
        return Ok(None);
    }
    let results = super::worklist::results(db, &row).await?;
    // The heatmaps the study page serves: positive findings with a map, in model order.
    let mut n = 0;
    for r in &results {
        for f in &r.findings {
            let mapped = f.positive && f.cam_rows > 0 && f.cam_cols > 0;
            if r.model == model && r.model_version == version && f.label == label && f.positive {
                return Ok(Some(SimilarCase {
                    study_id: study,
                    distance,
                    label: f.label.clone(),
                    probability: f.probability,
                    verdict: "agree",
                    received_at_ms: r.last_received_at_ms,
                    heatmap: mapped.then(|| format!("/api/studies/{study}/heatmaps/{n}")),
                }));
            }
            n += usize::from(mapped);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_unit(rng: &mut u64, dims: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                // xorshift: reproducible, no dependency.
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                (*rng % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        crate::triage::aggregate::unit(&v).unwrap()
    }

    fn space(n: usize, dims: usize, confirmed: impl Fn(i64) -> bool) -> (Space, Vec<Vec<f32>>) {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut s = Space::default();
        let mut vectors = Vec::new();
        for i in 0..n as i64 {
            let v = random_unit(&mut rng, dims);
            s.entries.insert(i + 1, Entry { id: i + 1, vector: v.clone().into(), received_at_ms: 1000 * (i + 1) });
            if confirmed(i + 1) {
                s.confirmed.insert(i + 1, ("finding".into(), 0.9));
            }
            vectors.push(v);
        }
        (s, vectors)
    }

    /// Exact search: nearest first, only earlier confirmed studies, never the study itself.
    #[test]
    fn exact_search_takes_earlier_confirmed_studies_nearest_first() {
        let (mut s, v) = space(200, 16, |id| id % 2 == 0);
        // A query equal to study 100's vector, asked for study 150 (received later).
        let (hits, method) = s.search(&v[99], 150, 150_000, 5, Method::Auto, 1000);
        assert_eq!(method, Method::Exact);
        assert_eq!(hits[0].0, 100);
        assert!(hits[0].1.abs() < 1e-5, "{hits:?}");
        assert!(hits.windows(2).all(|w| w[0].1 <= w[1].1), "{hits:?}");
        assert!(hits.iter().all(|(id, _)| id % 2 == 0 && *id < 150), "{hits:?}");
        // The study itself and later ones are never found, unconfirmed ones neither.
        let (hits, _) = s.search(&v[149], 150, 150_000, 200, Method::Exact, 1000);
        assert!(!hits.iter().any(|(id, _)| *id >= 150 || id % 2 == 1));
        assert_eq!(hits.len(), 74, "the earlier confirmed studies: 2, 4, .., 148");
        // A brute-force check of the order.
        let mut want: Vec<Hit> = (1..150).filter(|i| i % 2 == 0).map(|i| (i, 1.0 - dot(&v[149], &v[i as usize - 1]))).collect();
        want.sort_by(|a, b| a.1.total_cmp(&b.1));
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), want.iter().map(|h| h.0).collect::<Vec<_>>());
    }

    /// The HNSW path finds most of the exact nearest neighbours on random data (1500 points of
    /// 16 dimensions; recall@10 over 50 queries at least 0.9), and newer confirmations (not yet in the index) are found too.
    #[test]
    fn hnsw_recall_on_random_data() {
        let (mut s, v) = space(1500, 16, |_| true);
        let (mut found, mut total) = (0usize, 0usize);
        for q in 0..50 {
            let query = &v[1499 - q];
            let me = 1500 - q as i64;
            let (exact, _) = s.search(query, me, me * 1000, 10, Method::Exact, 0);
            let (approx, method) = s.search(query, me, me * 1000, 10, Method::Auto, 100);
            assert_eq!(method, Method::Hnsw);
            let want: HashSet<i64> = exact.iter().map(|h| h.0).collect();
            found += approx.iter().filter(|h| want.contains(&h.0)).count();
            total += want.len();
        }
        let recall = found as f64 / total as f64;
        assert!(recall >= 0.9, "recall@10 {recall}");
        // A study confirmed after the index was built is found (searched exactly beside it).
        let mut rng = 42u64;
        let late = random_unit(&mut rng, 16);
        s.entries.insert(9999, Entry { id: 9999, vector: late.clone().into(), received_at_ms: 1 });
        s.confirmed.insert(9999, ("finding".into(), 0.9));
        let (hits, _) = s.search(&late, 1, 10_000_000, 3, Method::Hnsw, 0);
        assert_eq!(hits[0].0, 9999, "{hits:?}");
    }

    /// A verdict makes a study confirmed only for a positive finding agreed with, none
    /// disagreeing; a changed verdict takes it back.
    #[test]
    fn confirmation_needs_agreement_on_a_positive_finding() {
        let v = |study_id: i64, label: &str, agree: i64, disagree: i64, finding: Option<(f64, bool)>| crate::db::LabelVerdicts {
            study_id,
            label: label.into(),
            agree,
            disagree,
            finding,
        };
        let mut s = Space::default();
        s.apply_verdicts(vec![
            v(1, "a", 1, 0, Some((0.8, true))),
            v(1, "b", 2, 0, Some((0.9, true))),
            v(2, "a", 1, 1, Some((0.9, true))),
            v(3, "a", 1, 0, Some((0.3, false))),
            v(4, "a", 1, 0, None),
        ]);
        assert_eq!(s.confirmed.get(&1), Some(&("b".to_string(), 0.9)));
        assert_eq!(s.confirmed.len(), 1);
        s.apply_verdicts(vec![v(1, "a", 0, 1, Some((0.8, true))), v(1, "b", 0, 1, Some((0.9, true)))]);
        assert!(s.confirmed.is_empty());
    }
}
