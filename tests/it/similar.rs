//! Similar prior cases (`GET /api/studies/{id}/similar`): a tiny TorchScript classifier whose
//! embedding is the 4 x 4 block means of its input (tests/peers/make_tiny_embedder.py) triages
//! generated CR studies; a reader confirms some findings (feedback agree) through the API; the
//! query study's planted near-duplicates come first, a study nobody confirmed (the query's own
//! pattern) and the study itself never come, no other patient is named, the lookup is audited.
//! On SQLite and on PostgreSQL.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::Value;

use crate::common::*;

const EMBEDDER: &str = r#"
name = "tiny-embedder"
version = "0.1"
intended_use = "Test fixture: a classifier with an embedding output."
limits = "Not a medical device."
[routing]
modalities = ["CR"]
[input]
size = [64, 64]
channels = 1
[outputs]
labels = ["finding"]
positive = [0.5]
urgent = [1.0]
probabilities = 0
cam = 1
embedding = 2
[aggregate]
method = "max"
"#;

fn similar_cases(database_url: Option<String>) {
    if !peers_ready() {
        return;
    }
    let models = tempfile::tempdir().unwrap();
    let Some(models_dir) = scripted_package(models.path(), "tiny-embedder", "make_tiny_embedder.py", EMBEDDER) else { return };
    let studies = tempfile::tempdir().unwrap();
    let made = std::process::Command::new(python().unwrap())
        .arg(repo().join("tests/peers/make_tiny_embedder.py"))
        .arg("--studies")
        .arg(studies.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let files: Vec<(String, std::path::PathBuf)> = String::from_utf8_lossy(&made.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            (p.next()? == "MADE").then(|| (p.next().unwrap().to_string(), p.next().unwrap().into()))
        })
        .collect();
    let node = Node::start(NodeOptions { inference: vec![models_dir], database_url, ..Default::default() });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let api = format!("http://127.0.0.1:{}", node.http_port.unwrap());
    let client = Client::new();
    let get = |path: &str, token: &str| -> (u16, String) {
        let rsp = client.get(format!("{api}{path}")).bearer_auth(token).send().unwrap();
        (rsp.status().as_u16(), rsp.text().unwrap())
    };
    // Every study but the query first (received earlier), each triaged.
    let (query, earlier): (Vec<_>, Vec<_>) = files.iter().partition(|(name, _)| name == "query");
    for (_, file) in &earlier {
        assert!(node.storescu(std::slice::from_ref(file)).status.success(), "{}", node.log());
        wait_results(&rt, &db, &[deid_uid(&study_uid_of(file))], Duration::from_secs(60), &node);
    }
    let ids = |node_names: &mut HashMap<String, i64>| {
        let (status, page) = get("/api/worklist?limit=50", READER_TOKEN);
        assert_eq!(status, 200, "{page}");
        let page: Value = serde_json::from_str(&page).unwrap();
        for item in page["items"].as_array().unwrap() {
            let name = item["patient"]["name"].as_str().unwrap().trim_start_matches("PATIENT^").to_lowercase();
            node_names.insert(name, item["study_id"].as_i64().unwrap());
        }
    };
    let mut id = HashMap::new();
    ids(&mut id);
    // A reader confirms the near-duplicates and the far ones; nobody confirms "unconfirmed".
    for name in ["near1", "near2", "far1", "far2", "far3", "far4"] {
        let rsp = client
            .put(format!("{api}/api/studies/{}/feedback", id[name]))
            .bearer_auth(READER_TOKEN)
            .json(&serde_json::json!({"model": "tiny-embedder", "label": "finding", "verdict": "agree"}))
            .send()
            .unwrap();
        assert_eq!(rsp.status().as_u16(), 200, "{}", rsp.text().unwrap());
    }
    // A disagreement takes far4 out again.
    let rsp = client
        .put(format!("{api}/api/studies/{}/feedback", id["far4"]))
        .bearer_auth(READER2_TOKEN)
        .json(&serde_json::json!({"model": "tiny-embedder", "label": "finding", "verdict": "disagree"}))
        .send()
        .unwrap();
    assert_eq!(rsp.status().as_u16(), 200);
    let (_, file) = query[0];
    assert!(node.storescu(std::slice::from_ref(file)).status.success(), "{}", node.log());
    wait_results(&rt, &db, &[deid_uid(&study_uid_of(file))], Duration::from_secs(60), &node);
    ids(&mut id);

    let (status, body) = get(&format!("/api/studies/{}/similar?k=5", id["query"]), READER_TOKEN);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["meaning"], "nearest by the model's embedding distance; not a diagnosis");
    let m = &v["models"][0];
    assert_eq!((m["model"].as_str(), m["method"].as_str()), (Some("tiny-embedder"), Some("exact")), "{v:#}");
    let found: Vec<i64> = m["cases"].as_array().unwrap().iter().map(|c| c["study_id"].as_i64().unwrap()).collect();
    let near: std::collections::BTreeSet<i64> = [id["near1"], id["near2"]].into();
    assert_eq!(found[..2].iter().copied().collect::<std::collections::BTreeSet<_>>(), near, "the planted near-duplicates first: {v:#}");
    assert_eq!(found.len(), 5, "near1, near2, far1..far3: {v:#}");
    assert!(!found.contains(&id["unconfirmed"]) && !found.contains(&id["query"]) && !found.contains(&id["far4"]), "{v:#}");
    let d: Vec<f64> = m["cases"].as_array().unwrap().iter().map(|c| c["distance"].as_f64().unwrap()).collect();
    assert!(d.windows(2).all(|w| w[0] <= w[1]) && d[0] < 0.05 && d[2] > d[1], "{d:?}");
    let first = &m["cases"][0];
    assert_eq!((first["label"].as_str(), first["verdict"].as_str()), (Some("finding"), Some("agree")));
    // The heatmap link is the other study's, as its page serves it.
    let heatmap = first["heatmap"].as_str().unwrap();
    assert!(heatmap.starts_with(&format!("/api/studies/{}/heatmaps/", found[0])), "{heatmap}");
    let png = client.get(format!("{api}{heatmap}?size=thumbnail")).bearer_auth(READER_TOKEN).send().unwrap();
    assert_eq!((png.status().as_u16(), png.headers()["content-type"].to_str().unwrap()), (200, "image/png"));
    // No other patient is named (nor this one: the study page does that, audited).
    assert!(!body.contains("PATIENT^") && !body.contains("PID"), "{body}");
    // k is bounded; no token, no answer.
    assert_eq!(get(&format!("/api/studies/{}/similar?k=21", id["query"]), READER_TOKEN).0, 400);
    assert_eq!(client.get(format!("{api}/api/studies/{}/similar", id["query"])).send().unwrap().status().as_u16(), 401);
    // The earliest confirmed study has no earlier one.
    let (_, body) = get(&format!("/api/studies/{}/similar", id["far1"]), ADMIN_TOKEN);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["models"][0]["cases"].as_array().unwrap().is_empty(), "{v:#}");
    // Each lookup is a query entry of the audit trail.
    let audit = node.cli(&["audit", "list"]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(text.contains(&format!("similar-cases study:{}", id["query"])), "{text}");
}

#[test]
fn similar_cases_on_sqlite_are_the_planted_near_duplicates_first() {
    similar_cases(None);
}

#[test]
fn similar_cases_on_postgres_are_the_planted_near_duplicates_first() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(url) = rt.block_on(postgres_database()) else { return };
    similar_cases(Some(url.clone()));
    rt.block_on(drop_postgres_database(&url));
}
