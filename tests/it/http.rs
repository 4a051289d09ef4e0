//! The HTTP API against a running node: real studies pushed by DCMTK and pynetdicom, triaged by
//! the demo model (CR) and the tiny test model (CT, whose broken pixels fail), the MR no model
//! takes. Then: no token, no data; reader and admin roles; the worklist's order, filters and
//! cursor pages; patients named from the sealed map; the study view and heatmap PNGs; the
//! reading state with its conflicts and audit entries; AE administration with a C-ECHO to a
//! real DCMTK peer; /healthz, /readyz, /metrics; every documented route served; no patient
//! data or token in the log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

struct Api {
    base: String,
    client: Client,
}

impl Api {
    fn new(node: &Node) -> Api {
        Api { base: format!("http://127.0.0.1:{}", node.http_port.expect("the HTTP API is enabled by default")), client: Client::new() }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut rq = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        rq.send().unwrap()
    }

    fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> Response {
        let mut rq = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        rq.send().unwrap()
    }

    fn json(&self, path: &str, token: &str) -> Value {
        let rsp = self.get(path, Some(token));
        assert_eq!(rsp.status(), StatusCode::OK, "{path}");
        rsp.json().unwrap()
    }
}

/// A real JPEG 2000 CT whose codestream header is overwritten: stored, but its pixels fail.
fn broken_ct(dir: &Path) -> PathBuf {
    let broken = dir.join("broken_j2k.dcm");
    let mut bytes = std::fs::read(testdata().unwrap().join("ts/ct_j2k_lossless.dcm")).unwrap();
    let soc = bytes.windows(4).position(|w| w == [0xFF, 0x4F, 0xFF, 0x51]).expect("a J2K codestream");
    bytes[soc + 4..soc + 44].fill(0xEE);
    std::fs::write(&broken, bytes).unwrap();
    broken
}

fn text(file: &Path, tag: dicom_core::Tag) -> String {
    let obj = dicom_object::open_file(file).unwrap();
    obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// A node with the demo model and the tiny CT model, fed a mix of studies, all triaged.
pub fn triaged_node() -> Option<(Node, Vec<PathBuf>, tempfile::TempDir)> {
    if !peers_ready() {
        return None;
    }
    let (_, cases) = demo_cases()?;
    let work = tempfile::tempdir().unwrap();
    let models = work.path().join("models");
    let demo = models.join("demo-nodule");
    std::fs::create_dir_all(&demo).unwrap();
    for f in ["model.toml", "model.pt", "reference.json"] {
        std::fs::copy(repo().join("models/demo-nodule").join(f), demo.join(f)).unwrap();
    }
    // A shadow of demo-nodule: the same network, a version with lower thresholds, compared
    // with it and never listed or sent.
    let next = models.join("demo-nodule-next");
    std::fs::create_dir_all(&next).unwrap();
    std::fs::copy(demo.join("model.pt"), next.join("model.pt")).unwrap();
    let manifest = std::fs::read_to_string(demo.join("model.toml")).unwrap();
    let shadow = manifest
        .replace("name = \"demo-nodule\"", "name = \"demo-nodule-next\"")
        .replace("version = \"1.0.0\"", "version = \"2.0.0\"\nmode = \"shadow\"\nshadow_of = \"demo-nodule\"")
        .replace("positive = [0.95]", "positive = [0.5]")
        .replace("urgent = [0.99]", "urgent = [0.9]");
    assert!(shadow.contains("mode = \"shadow\"") && shadow.contains("urgent = [0.9]"), "demo-nodule's manifest changed: {shadow}");
    std::fs::write(next.join("model.toml"), shadow).unwrap();
    let package = tiny_package(&models, &TINY.replace("MODALITY", "CT"));
    // Drift over the eight CR studies sent below; two site-defined scanner groups, one the demo
    // cases' (their key images' Manufacturer), one nobody's (a CT kernel).
    let drift = "[drift]\nwindow = 8\nmin_studies = 8\n\
                 [[performance.groups]]\nname = \"chest room\"\nmanufacturers = [\"philips medical systems\"]\n\
                 [[performance.groups]]\nname = \"CT sharp\"\nkernels = [\"B70f\"]\n"
        .to_string();
    let node = Node::start(NodeOptions { inference: vec![package], extra: vec![drift], ..Default::default() });
    let crs: Vec<PathBuf> = cases.into_iter().take(8).map(|(f, _)| f).collect();
    let mr = testdata().unwrap().join("classes/mr.dcm");
    let mut dcmtk = crs.clone();
    dcmtk.push(mr.clone());
    assert!(node.storescu(&dcmtk).status.success(), "{}", node.log());
    let ct = broken_ct(work.path());
    let lines = node.pynetdicom_store(std::slice::from_ref(&ct));
    assert!(lines.iter().any(|l| l.contains("0x0000")), "{lines:?}");
    let mut sent = dcmtk;
    sent.push(ct);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uids: Vec<String> = sent.iter().map(|f| deid_uid(&study_uid_of(f))).collect();
    wait_results(&rt, &db, &uids, Duration::from_secs(120), &node);
    Some((node, sent, work))
}

/// PSI over the reference's deciles (equal edges merged, an empty share 0.0001), written
/// apart from the node's.
fn psi_by_deciles(reference: &[f64], live: &[f64]) -> f64 {
    let mut sorted = reference.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut edges: Vec<f64> = (1..10).map(|k| sorted[k * sorted.len() / 10]).collect();
    edges.dedup();
    let share = |scores: &[f64]| -> Vec<f64> {
        (0..=edges.len())
            .map(|bin| {
                let inside = |p: f64| edges.iter().filter(|&&e| e <= p).count() == bin;
                (scores.iter().filter(|&&p| inside(p)).count() as f64 / scores.len() as f64).max(1e-4)
            })
            .collect()
    };
    share(reference).iter().zip(share(live)).map(|(e, a)| (a - e) * (a / e).ln()).sum()
}

fn rank(p: &str) -> usize {
    ["URGENT", "POSITIVE", "FAILED", "NEGATIVE", "NOT_APPLICABLE"].iter().position(|x| *x == p).unwrap_or_else(|| panic!("priority {p}"))
}

/// Every item of the worklist, page by page with the cursor.
fn all_pages(api: &Api, query: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/worklist?{query}&limit={limit}&cursor={c}"),
            None => format!("/api/worklist?{query}&limit={limit}"),
        };
        let page = api.json(&path, READER_TOKEN);
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit);
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
        assert!(items.len() < 1000, "the cursor ends");
    }
}

#[test]
fn the_worklist_api_puts_urgent_first_names_patients_to_tokens_only_and_audits_reading() {
    let Some((node, sent, work)) = triaged_node() else { return };
    let api = Api::new(&node);

    // No token, a wrong token: 401 with a reason and the Bearer challenge; no data.
    for token in [None, Some("not-a-token-0123456789abcdef")] {
        let rsp = api.get("/api/worklist", token);
        assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
        assert!(rsp.headers().get("www-authenticate").is_some());
        let body: Value = rsp.json().unwrap();
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
    }
    // A reader may not administer AEs.
    assert_eq!(api.get("/api/aes", Some(READER_TOKEN)).status(), StatusCode::FORBIDDEN);
    assert_eq!(api.json("/api/me", READER_TOKEN)["role"], "reader");

    // The whole list, in reading order, each row named from the sealed map.
    let page = api.json("/api/worklist?limit=500", READER_TOKEN);
    let items = page["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), sent.len(), "{page}");
    assert!(page["next_cursor"].is_null());
    let mut previous: Option<(usize, f64)> = None;
    for item in &items {
        let p = item["priority"].as_str().unwrap();
        let score = item["score"].as_f64().unwrap_or(-1.0);
        if let Some((r, s)) = previous {
            assert!(r <= rank(p), "priority order: {items:#?}");
            if r == rank(p) && r <= 1 {
                assert!(s >= score, "higher scores first");
            }
        }
        previous = Some((rank(p), score));
        assert_eq!(item["reading"]["state"], "unread");
    }
    let priorities: Vec<&str> = items.iter().map(|i| i["priority"].as_str().unwrap()).collect();
    assert!(priorities.contains(&"URGENT") || priorities.contains(&"POSITIVE"), "{priorities:?}");
    assert!(priorities.contains(&"NEGATIVE"), "{priorities:?}");
    assert_eq!(*priorities.last().unwrap(), "NOT_APPLICABLE", "the MR no model takes comes last");
    let failed: Vec<&Value> = items.iter().filter(|i| i["priority"] == "FAILED").collect();
    assert_eq!(failed.len(), 1, "the broken CT: {items:#?}");
    assert!(failed[0]["reasons"][0].as_str().unwrap().contains("could not be processed"), "{}", failed[0]);
    for f in &sent {
        let name = text(f, dicom_dictionary_std::tags::PATIENT_NAME);
        let id = text(f, dicom_dictionary_std::tags::PATIENT_ID);
        let item = items.iter().find(|i| i["patient"]["id"] == id.as_str()).unwrap_or_else(|| panic!("a row names patient {id}: {items:#?}"));
        assert_eq!(item["patient"]["name"], name.as_str());
        let accession = text(f, dicom_dictionary_std::tags::ACCESSION_NUMBER);
        if !accession.is_empty() {
            assert_eq!(item["patient"]["accession"], accession.as_str());
        }
    }

    // Cursor pages of 3 give the same rows in the same order.
    let paged = all_pages(&api, "sort=priority", 3);
    let ids = |v: &[Value]| v.iter().map(|i| i["study_id"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(&paged), ids(&items));
    // By arrival, newest first, paged too.
    let newest = all_pages(&api, "sort=newest", 4);
    let times: Vec<i64> = newest.iter().map(|i| i["received_at_ms"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(newest.len(), items.len());

    // Filters.
    let urgent_or_positive = all_pages(&api, "priority=URGENT,POSITIVE", 50);
    assert!(!urgent_or_positive.is_empty() && urgent_or_positive.iter().all(|i| rank(i["priority"].as_str().unwrap()) <= 1));
    assert_eq!(urgent_or_positive.len(), priorities.iter().filter(|p| rank(p) <= 1).count());
    let mr = all_pages(&api, "modality=mr", 50);
    assert_eq!(mr.len(), 1);
    assert_eq!(mr[0]["priority"], "NOT_APPLICABLE");
    let nodules = all_pages(&api, "finding=nodule&model=demo-nodule", 50);
    assert!(nodules.iter().all(|i| i["findings"].as_array().unwrap().iter().any(|f| f["label"] == "nodule" && f["positive"] == true)));
    assert_eq!(nodules.len(), urgent_or_positive.len());
    assert!(all_pages(&api, "since=2999-01-01T00:00:00Z", 50).is_empty());
    assert_eq!(all_pages(&api, "until=2999-01-01T00:00:00Z", 50).len(), items.len());
    for (bad, why) in [
        ("priority=STAT", "unknown priority"),
        ("state=done", "state must be"),
        ("sort=name", "sort must be"),
        ("limit=0", "limit must be"),
        ("limit=501", "limit must be"),
        ("cursor=abc", "cursor"),
        ("since=yesterday", "RFC 3339"),
        ("colour=red", "unknown field"),
    ] {
        let rsp = api.get(&format!("/api/worklist?{bad}"), Some(READER_TOKEN));
        assert_eq!(rsp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = rsp.json().unwrap();
        assert!(body["error"].as_str().unwrap().contains(why), "{bad}: {body}");
    }

    // One study: its findings, heatmaps as PNG (thumbnail and full), demonstration said.
    let top = &items[0];
    let id = top["study_id"].as_i64().unwrap();
    let study = api.json(&format!("/api/studies/{id}"), READER_TOKEN);
    assert_eq!(study["priority"], top["priority"]);
    assert_eq!(study["patient"], top["patient"]);
    let named = api.get(&format!("/api/studies/{id}"), Some(READER_TOKEN));
    assert_eq!(named.headers()["cache-control"], "no-store", "a study names its patient");
    assert_eq!(named.headers()["pragma"], "no-cache");
    assert_eq!(named.headers()["x-content-type-options"], "nosniff");
    let demo = study["results"].as_array().unwrap().iter().find(|r| r["model"] == "demo-nodule").expect("the demo model's result");
    assert_eq!(demo["demonstration"], true);
    let heatmap = demo["findings"].as_array().unwrap().iter().find_map(|f| f["heatmap"].as_str()).expect("a positive finding has a heatmap").to_string();
    let png_size = |bytes: &[u8]| -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()))
    };
    let thumb = api.get(&format!("{heatmap}?size=thumbnail"), Some(READER_TOKEN));
    assert_eq!(thumb.status(), StatusCode::OK);
    assert_eq!(thumb.headers()["content-type"], "image/png");
    let (w, h) = png_size(&thumb.bytes().unwrap());
    assert!(w.max(h) <= 256 + 160 && w > 32 && h > 32, "thumbnail {w}x{h}");
    let full = api.get(&heatmap, Some(READER_TOKEN)).bytes().unwrap();
    let (fw, fh) = png_size(&full);
    assert!(fw > w && fh > h, "full {fw}x{fh} vs thumbnail {w}x{h}");
    assert_eq!(api.get(&format!("/api/studies/{id}/heatmaps/99"), Some(READER_TOKEN)).status(), StatusCode::NOT_FOUND);
    assert_eq!(api.get(&format!("{heatmap}?size=huge"), Some(READER_TOKEN)).status(), StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/api/studies/0", Some(READER_TOKEN)).status(), StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/api/studies/999999", Some(READER_TOKEN)).status(), StatusCode::NOT_FOUND);
    assert_eq!(api.get(&heatmap, None).status(), StatusCode::UNAUTHORIZED);

    // Reading: dr.grey claims, dr.house conflicts (409), dr.grey marks read.
    let post = |path: &str, token: &str| api.send(reqwest::Method::POST, path, token, None);
    let claimed: Value = post(&format!("/api/studies/{id}/claim"), READER_TOKEN).json().unwrap();
    assert_eq!((claimed["state"].as_str(), claimed["reader"].as_str()), (Some("claimed"), Some("dr.grey")));
    assert_eq!(post(&format!("/api/studies/{id}/claim"), READER_TOKEN).status(), StatusCode::OK, "claiming one's own claim again");
    for action in ["claim", "read", "release"] {
        let rsp = post(&format!("/api/studies/{id}/{action}"), READER2_TOKEN);
        assert_eq!(rsp.status(), StatusCode::CONFLICT, "{action}");
        let body: Value = rsp.json().unwrap();
        assert!(body["error"].as_str().unwrap().contains("dr.grey"), "{body}");
    }
    // Feedback on a finding: each reader's verdict (replaced when they change it), checked
    // against the result's findings and the model's labels; closed once the study is read.
    let label = demo["findings"][0]["label"].as_str().unwrap().to_string();
    let verdict = |token: &str, body: Value| api.send(reqwest::Method::PUT, &format!("/api/studies/{id}/feedback"), token, Some(body));
    let agree = verdict(READER_TOKEN, serde_json::json!({ "model": "demo-nodule", "label": label, "verdict": "agree" }));
    assert_eq!(agree.status(), StatusCode::OK);
    let agree: Value = agree.json().unwrap();
    assert_eq!((agree["verdict"].as_str(), agree["reader"].as_str(), agree["model_version"].as_str()), (Some("agree"), Some("dr.grey"), Some("1.0.0")));
    let other = serde_json::json!({ "model": "demo-nodule", "label": label, "verdict": "disagree", "corrected_label": "no_finding", "comment": "old film PATIENTCOMMENT" });
    assert_eq!(verdict(READER2_TOKEN, other).status(), StatusCode::OK);
    let changed: Value = verdict(READER_TOKEN, serde_json::json!({ "model": "demo-nodule", "label": label, "verdict": "not_assessable" })).json().unwrap();
    assert_eq!((changed["verdict"].as_str(), changed["created_at_ms"] == agree["created_at_ms"]), (Some("not_assessable"), true), "{changed}");
    for (bad, why) in [
        (serde_json::json!({ "model": "demo-nodule", "label": label, "verdict": "maybe" }), "verdict must be"),
        (serde_json::json!({ "model": "demo-nodule", "label": "kidney", "verdict": "agree" }), "has no finding"),
        (serde_json::json!({ "model": "demo-nodule", "label": label, "verdict": "disagree", "corrected_label": "kidney" }), "corrected_label"),
        (serde_json::json!({ "model": "demo-nodule", "label": label, "verdict": "agree", "comment": "x".repeat(501) }), "at most 500"),
    ] {
        let rsp = verdict(READER_TOKEN, bad.clone());
        assert_eq!(rsp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(rsp.text().unwrap().contains(why), "{bad}");
    }
    let study = api.json(&format!("/api/studies/{id}"), READER_TOKEN);
    let given = study["feedback"].as_array().unwrap();
    assert_eq!(
        given.iter().map(|f| (f["reader"].as_str().unwrap(), f["verdict"].as_str().unwrap())).collect::<Vec<_>>(),
        [("dr.grey", "not_assessable"), ("dr.house", "disagree")]
    );
    let read: Value = post(&format!("/api/studies/{id}/read"), READER_TOKEN).json().unwrap();
    assert_eq!(read["state"], "read");
    let closed = verdict(READER_TOKEN, serde_json::json!({ "model": "demo-nodule", "label": label, "verdict": "agree" }));
    assert_eq!(closed.status(), StatusCode::CONFLICT, "closed once read");
    // The vendor's export: admin only; de-identified (no comment, no reader, no patient).
    assert_eq!(api.get("/api/feedback/export", Some(READER_TOKEN)).status(), StatusCode::FORBIDDEN);
    let csv = api.get("/api/feedback/export", Some(ADMIN_TOKEN)).text().unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("node_study_id,model,") && csv.contains(&format!("{id},demo-nodule,1.0.0,{label},")), "{csv}");
    assert!(!csv.contains("PATIENTCOMMENT") && !csv.contains("dr.") && !csv.contains("DEMO"), "{csv}");
    let json: Value = api.json("/api/feedback/export?format=json&model=demo-nodule", ADMIN_TOKEN);
    assert_eq!(json.as_array().unwrap().len(), 2);
    // The performance figures equal a hand count of the worklist and the verdicts: dr.grey's
    // "not assessable" and dr.house's "disagree" on a positive finding (a false positive).
    let mut hand = (0u64, 0u64, 0u64); // studies, positive, negative findings of demo-nodule
    for item in all_pages(&api, "", 50) {
        let theirs: Vec<&Value> = item["findings"].as_array().unwrap().iter().filter(|f| f["model"] == "demo-nodule").collect();
        hand.0 += u64::from(!theirs.is_empty());
        hand.1 += theirs.iter().filter(|f| f["positive"] == true).count() as u64;
        hand.2 += theirs.iter().filter(|f| f["positive"] == false).count() as u64;
    }
    assert_eq!(api.get("/api/performance", Some(READER_TOKEN)).status(), StatusCode::FORBIDDEN);
    let figures: Value = api.json("/api/performance", ADMIN_TOKEN);
    let nodule = figures.as_array().unwrap().iter().find(|m| m["model"] == "demo-nodule").expect("demo-nodule's figures");
    assert_eq!((nodule["studies"].as_u64(), nodule["positive"].as_u64(), nodule["negative"].as_u64()), (Some(hand.0), Some(hand.1), Some(hand.2)), "{nodule}");
    assert_eq!(
        (nodule["verdicts"].as_u64(), nodule["agree"].as_u64(), nodule["disagree"].as_u64(), nodule["not_assessable"].as_u64()),
        (Some(2), Some(0), Some(1), Some(1))
    );
    assert_eq!((nodule["ppv"]["successes"].as_u64(), nodule["ppv"]["total"].as_u64()), (Some(0), Some(1)), "{nodule}");
    assert!(nodule["npv"].is_null() && nodule["turnaround_median_ms"].as_i64().unwrap() > 0, "{nodule}");
    // Per scanner: the key images' Manufacturer and Model Name (kept by de-identification);
    // the eight cases come from one, so its figures are the model's.
    let scanners = nodule["scanners"].as_array().expect("figures per scanner");
    assert_eq!(scanners.len(), 1, "{nodule}");
    assert_eq!(scanners[0]["scanner"], "Philips Medical Systems Cassette Holder Type 9840 500 70201", "{nodule}");
    for field in ["studies", "positive", "negative", "verdicts", "disagree", "ppv"] {
        assert_eq!(scanners[0][field], nodule[field], "{field}");
    }
    // Per site-defined group: the demo cases' room has all eight; the CT group none (absent).
    let groups = nodule["groups"].as_array().expect("figures per scanner group");
    assert_eq!((groups.len(), groups[0]["group"].as_str()), (1, Some("chest room")), "{nodule}");
    for field in ["studies", "positive", "negative", "verdicts", "disagree", "ppv", "turnaround_median_ms"] {
        assert_eq!(groups[0][field], nodule[field], "{field}");
    }
    // Score drift: the eight demo cases (made at 512 rows) against the package's validation
    // scores (native size) drift; the PSI equals one computed here from the worklist's
    // probabilities and reference.json; a warning in /readyz (still ready), status, /metrics.
    assert_eq!(api.get("/api/drift", Some(READER_TOKEN)).status(), StatusCode::FORBIDDEN);
    let drift: Value = api.json("/api/drift", ADMIN_TOKEN);
    let nodule = drift.as_array().unwrap().iter().find(|d| d["model"] == "demo-nodule").expect("demo-nodule's drift");
    let tiny = drift.as_array().unwrap().iter().find(|d| d["model"] != "demo-nodule").unwrap();
    assert_eq!(tiny["state"], "no_reference", "{drift}");
    let live: Vec<f64> = all_pages(&api, "", 50)
        .iter()
        .flat_map(|item| item["findings"].as_array().unwrap().clone())
        .filter(|f| f["model"] == "demo-nodule")
        .map(|f| f["probability"].as_f64().unwrap())
        .collect();
    assert_eq!(live.len(), 8);
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("models/demo-nodule/reference.json")).unwrap()).unwrap();
    let reference: Vec<f64> = reference["scores"]["nodule"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let expected = psi_by_deciles(&reference, &live);
    assert!(expected > 0.25, "the demo cases drift from the validation images: {expected}");
    assert_eq!(
        (nodule["state"].as_str(), nodule["live_studies"].as_u64(), nodule["reference_studies"].as_u64()),
        (Some("drifted"), Some(8), Some(400)),
        "{nodule}"
    );
    assert!((nodule["psi"].as_f64().unwrap() - expected).abs() < 1e-3, "{nodule} vs {expected}");
    // The chest room's group is judged on its own (the same eight studies: the same PSI); the
    // CT group has no studies and no figures.
    let grouped: Vec<&Value> =
        drift.as_array().unwrap().iter().filter(|d| d["model"] == "demo-nodule" && d["feature"] == "score" && !d["group"].is_null()).collect();
    assert_eq!(grouped.len(), 1, "{drift}");
    assert_eq!(
        (grouped[0]["group"].as_str(), grouped[0]["state"].as_str(), &grouped[0]["psi"]),
        (Some("chest room"), Some("drifted"), &nodule["psi"]),
        "{drift}"
    );
    // Their inputs do not drift from the validation images' (the same pipeline at another size).
    let intensity = drift.as_array().unwrap().iter().find(|d| d["model"] == "demo-nodule" && d["feature"] == "intensity").expect("input drift");
    assert_eq!((intensity["state"].as_str(), intensity["reference_studies"].as_u64()), (Some("stable"), Some(400)), "{intensity}");
    let ready: Value = api.get("/readyz", Some(ADMIN_TOKEN)).json().unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["warnings"].as_array().unwrap().len(), 2, "the label's score drift, over all and in its group: {ready}");
    assert!(ready["warnings"][0].as_str().unwrap().contains("model demo-nodule 1.0.0 label nodule: score distribution drifted"), "{ready}");
    let metrics = api.get("/metrics", None).text().unwrap();
    assert!(metrics.contains("triage_model_score_psi{model=\"demo-nodule\",version=\"1.0.0\",label=\"nodule\"}"), "{metrics}");
    let status = String::from_utf8_lossy(&node.cli(&["status"]).stdout).into_owned();
    assert!(status.contains("WARNING: model demo-nodule 1.0.0 label nodule: score distribution drifted"), "{status}");

    // The shadow ran on the same eight studies: never on the worklist, compared with the live
    // model. Same network and inputs, so its probabilities are the live ones: the comparison
    // equals a hand count with its thresholds (positive 0.5, urgent 0.9).
    let items = all_pages(&api, "", 50);
    assert!(items.iter().all(|i| i["findings"].as_array().unwrap().iter().all(|f| f["model"] != "demo-nodule-next")), "a shadow is never listed");
    let (mut agree, mut raise, mut lower) = (0u64, 0u64, 0u64);
    for item in &items {
        let Some(f) = item["findings"].as_array().unwrap().iter().find(|f| f["model"] == "demo-nodule") else { continue };
        let p = f["probability"].as_f64().unwrap();
        let (live_flag, live_urgent) = (f["positive"] == true, f["urgent"] == true);
        agree += u64::from((p >= 0.5) == live_flag);
        raise += u64::from(p >= 0.9 && !live_urgent);
        lower += u64::from(p < 0.9 && live_urgent);
    }
    assert_eq!(api.get("/api/shadow", Some(READER_TOKEN)).status(), StatusCode::FORBIDDEN);
    let shadows: Value = api.json("/api/shadow", ADMIN_TOKEN);
    let next = &shadows[0];
    assert_eq!(
        (next["model"].as_str(), next["model_version"].as_str(), next["shadow_of"].as_str()),
        (Some("demo-nodule-next"), Some("2.0.0"), Some("demo-nodule"))
    );
    assert_eq!((next["studies"].as_u64(), next["both_triaged"].as_u64()), (Some(8), Some(8)), "{next}");
    assert_eq!(
        (next["agreement"]["successes"].as_u64(), next["would_raise_to_urgent"].as_u64(), next["would_lower_from_urgent"].as_u64()),
        (Some(agree), Some(raise), Some(lower)),
        "{next}"
    );
    assert!(raise > 0, "the lower urgent threshold raises some study: {next}");
    assert_eq!(next["score_correlation"].as_f64(), Some(1.0), "{next}");
    let audit = String::from_utf8_lossy(&node.cli(&["audit", "list"]).stdout).into_owned();
    assert_eq!(audit.lines().filter(|l| l.contains("feedback")).count(), 3, "{audit}");
    assert!(!audit.contains("PATIENTCOMMENT"), "the comment is never audited");
    assert_eq!(all_pages(&api, "state=read", 50).len(), 1);
    assert_eq!(post("/api/studies/999999/claim", READER_TOKEN).status(), StatusCode::NOT_FOUND);
    // Another reader may take it once it is read (re-reading a study is allowed).
    assert_eq!(post(&format!("/api/studies/{id}/claim"), READER2_TOKEN).status(), StatusCode::OK);
    assert_eq!(post(&format!("/api/studies/{id}/release"), READER2_TOKEN).status(), StatusCode::OK);

    // AE administration: admin only, audited; a C-ECHO of a real DCMTK peer.
    let (echo_port, echo_dir) = (free_port(), tempfile::tempdir().unwrap());
    let scp = storescp_at(echo_port, echo_dir.path(), &["-aet", "RIS_TEST"]);
    let admin = |m: reqwest::Method, path: &str, body: Option<Value>| api.send(m, path, ADMIN_TOKEN, body);
    let add =
        admin(reqwest::Method::POST, "/api/aes", Some(serde_json::json!({ "ae_title": "RIS_TEST", "role": "pacs", "host": "127.0.0.1", "port": echo_port })));
    assert_eq!(add.status(), StatusCode::CREATED);
    assert_eq!(
        admin(reqwest::Method::POST, "/api/aes", Some(serde_json::json!({ "ae_title": "RIS_TEST", "role": "pacs", "host": "127.0.0.1", "port": echo_port })))
            .status(),
        StatusCode::CONFLICT
    );
    let bad =
        admin(reqwest::Method::POST, "/api/aes", Some(serde_json::json!({ "ae_title": "WAY_TOO_LONG_AE_TITLE", "role": "pacs", "host": "h", "port": 1 })));
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad = admin(reqwest::Method::POST, "/api/aes", Some(serde_json::json!({ "ae_title": "NOADDR", "role": "pacs" })));
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "a pacs needs host and port");
    assert_eq!(
        api.send(reqwest::Method::POST, "/api/aes", READER_TOKEN, Some(serde_json::json!({ "ae_title": "X", "role": "modality" }))).status(),
        StatusCode::FORBIDDEN
    );
    let echo: Value = admin(reqwest::Method::POST, "/api/aes/RIS_TEST/echo", None).json().unwrap();
    assert_eq!(echo["success"], true, "{echo}");
    let disabled: Value = admin(reqwest::Method::POST, "/api/aes/RIS_TEST/disable", None).json().unwrap();
    assert_eq!(disabled["enabled"], false);
    let edited: Value = admin(
        reqwest::Method::PUT,
        "/api/aes/RIS_TEST",
        Some(serde_json::json!({ "role": "pacs", "host": "127.0.0.1", "port": free_port(), "enabled": true })),
    )
    .json()
    .unwrap();
    assert_eq!(edited["enabled"], true);
    let echo: Value = admin(reqwest::Method::POST, "/api/aes/RIS_TEST/echo", None).json().unwrap();
    assert_eq!(echo["success"], false, "nothing listens on the edited port: {echo}");
    assert!(echo["error"].as_str().is_some());
    let list: Value = admin(reqwest::Method::GET, "/api/aes", None).json().unwrap();
    assert!(list.as_array().unwrap().iter().any(|a| a["ae_title"] == "RIS_TEST"));
    assert_eq!(admin(reqwest::Method::DELETE, "/api/aes/RIS_TEST", None).status(), StatusCode::NO_CONTENT);
    assert_eq!(admin(reqwest::Method::DELETE, "/api/aes/RIS_TEST", None).status(), StatusCode::NOT_FOUND);
    drop(scp);

    // Operations endpoints: no token needed, no patient data.
    assert_eq!(api.get("/healthz", None).status(), StatusCode::OK);
    let ready: Value = api.get("/readyz", None).json().unwrap();
    assert_eq!(ready, serde_json::json!({ "ready": true }), "no details without an admin token");
    let ready: Value = api.get("/readyz", Some(ADMIN_TOKEN)).json().unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["models"], 3);
    let metrics = api.get("/metrics", None).text().unwrap();
    for name in [
        "triage_associations_open",
        "triage_associations_accepted_total",
        "triage_instances_received_total",
        "triage_bytes_received_total",
        "triage_cstore_responses_total{status=\"0x0000\"}",
        "triage_inference_seconds_bucket",
        "triage_inference_batch_size_bucket",
        "triage_instances_awaiting_inference",
        "triage_jobs{kind=\"study_ready\",state=\"done\"}",
        "triage_worklist_studies{priority=\"NOT_APPLICABLE\",reading=\"unread\"}",
        "triage_worker_state{worker=\"outbox\",state=\"error\"} 0",
        "triage_http_requests_total",
        "triage_models_loaded 3",
        "triage_ingest_phase_seconds_bucket{phase=\"commit\",le=\"0.0001\"}",
        "triage_ingest_phase_seconds_count{phase=\"total\"} 10",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    let served: Value = api.get("/api/openapi.json", None).json().unwrap();
    assert_eq!(served, serde_json::from_str::<Value>(include_str!("../../src/http/openapi.json")).unwrap());

    // Every documented route is served (not the fallback), with the admin's token.
    for (method, path) in triage_node::http::ROUTES {
        let path = path.replace("{id}", &id.to_string()).replace("{n}", "0").replace("{title}", "NOPE");
        let rsp = api.send(
            method.to_uppercase().parse().unwrap(),
            &path,
            ADMIN_TOKEN,
            (*method == "post" || *method == "put").then(|| serde_json::json!({ "role": "pacs" })),
        );
        let status = rsp.status();
        let body = rsp.text().unwrap_or_default();
        assert!(!body.contains("no such route"), "{method} {path}: {status} {body}");
    }
    assert!(api.get("/api/nothing", Some(READER_TOKEN)).text().unwrap().contains("no such route"));

    // A reload of the same page by the same reader is already recorded; another reader's is not.
    let views = || String::from_utf8_lossy(&node.cli(&["audit", "list"]).stdout).lines().filter(|l| l.contains("worklist_view")).count();
    let before = views();
    api.json("/api/worklist?limit=500", READER_TOKEN);
    assert_eq!(views(), before, "a repeat within the window");
    api.json("/api/worklist?limit=500", READER2_TOKEN);
    assert_eq!(views(), before + 1, "another reader's view");

    // The audit trail has the reading changes and the views, with no patient data.
    let audit = node.cli(&["audit", "list"]);
    let audit = String::from_utf8_lossy(&audit.stdout).into_owned();
    assert!(audit.contains("reading") && audit.contains("dr.house") && audit.contains(&format!("study:{id}")), "{audit}");
    assert!(audit.contains("worklist_view") && audit.contains("ae_echo"), "{audit}");
    let log = node.log();
    assert!(log.contains("http request") && log.contains("route=/api/studies/{id}/claim"), "access log with route templates");
    for f in &sent {
        for tag in [dicom_dictionary_std::tags::PATIENT_NAME, dicom_dictionary_std::tags::PATIENT_ID, dicom_dictionary_std::tags::ACCESSION_NUMBER] {
            let v = text(f, tag);
            if v.len() > 3 {
                assert!(!audit.contains(&v), "audit names {v}");
                assert!(!log.contains(&v), "log names {v}");
            }
        }
    }
    for token in [READER_TOKEN, READER2_TOKEN, ADMIN_TOKEN] {
        assert!(!log.contains(token), "a token in the log");
    }

    // Promoting the shadow: refused for a model that is not one; then its manifest is live,
    // the old package kept under .retired/, the change audited (taking effect at restart).
    let refused = node.cli(&["model", "promote", "demo-nodule"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("0 shadow packages named demo-nodule"), "{refused:?}");
    let promoted = node.cli(&["model", "promote", "demo-nodule-next"]);
    let said = String::from_utf8_lossy(&promoted.stdout).into_owned() + &String::from_utf8_lossy(&promoted.stderr);
    assert!(promoted.status.success() && said.contains("demo-nodule-next 2.0.0 is live, replacing demo-nodule 1.0.0"), "{said}");
    let models = work.path().join("models");
    let manifest = std::fs::read_to_string(models.join("demo-nodule-next/model.toml")).unwrap();
    assert!(!manifest.contains("mode =") && !manifest.contains("shadow_of") && manifest.contains("urgent = [0.9]"), "{manifest}");
    assert!(!models.join("demo-nodule").exists());
    let retired: Vec<_> = std::fs::read_dir(models.join(".retired")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(retired.len() == 1 && retired[0].join("model.pt").exists(), "{retired:?}");
    let audit = String::from_utf8_lossy(&node.cli(&["audit", "list"]).stdout).into_owned();
    assert!(audit.lines().any(|l| l.contains("model_promote") && l.contains("model:demo-nodule-next")), "{audit}");
    assert!(node.cli(&["audit", "verify"]).status.success());
}

/// The node's process id: the `serve` process started with this node's config file.
fn node_pid(node: &Node) -> u32 {
    let config = node.config.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.contains(&config) && args.iter().any(|a| a == "serve") {
            return pid;
        }
    }
    panic!("no triage-node process runs {config}");
}

/// Descriptors the process holds open now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Lower a running process's descriptor limit, soft and hard, to `n` (a smaller host).
fn limit_fds(pid: u32, n: u64) {
    let limit = libc::rlimit64 { rlim_cur: n, rlim_max: n };
    // SAFETY: prlimit64 reads `limit` and writes nothing (null old value).
    let rc = unsafe { libc::prlimit64(pid as libc::pid_t, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Read until the server closes the connection (EOF or reset); false if it is still open
/// after `timeout`.
fn closed_by_server(stream: &mut std::net::TcpStream, timeout: Duration) -> bool {
    use std::io::Read;
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    while std::time::Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return true,
        }
    }
    false
}

/// Issue 28 (2): a slowloris flood on the HTTP port (1,500 connections from eight loopback
/// addresses, each a partial request header trickled a byte a second) against a node that may
/// open only 1,024 descriptors: the HTTP side keeps within its connection limits, so a
/// registered modality's C-STORE still gets through, a half-open request is closed after the
/// header timeout and an idle kept-alive connection after the keep-alive timeout. Afterwards the
/// HTTP side answers again.
#[test]
fn a_slowloris_flood_on_the_http_port_neither_stops_a_c_store_nor_keeps_half_open_requests() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let pid = node_pid(&node);
    limit_fds(pid, 1024);
    let http = node.http_port.expect("the HTTP API is enabled by default");
    // A request whose header never ends: the node must not keep it.
    let mut half_open = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    std::io::Write::write_all(&mut half_open, b"GET /api/worklist HTTP/1.1\r\nHost: triage\r\n").unwrap();
    // A kept-alive connection, answered once and then left idle: not kept either.
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    std::io::Write::write_all(&mut kept, b"GET /healthz HTTP/1.1\r\nHost: triage\r\n\r\n").unwrap();
    let mut answer = [0u8; 15];
    std::io::Read::read_exact(&mut kept, &mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200 OK");
    let flood = std::process::Command::new(python().unwrap())
        .arg(repo().join("scripts/bench-http-flood.py"))
        .args(["flood", "--port", &http.to_string(), "--connections", "1500", "--seconds", "120", "--sources", "8"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut flood = Killed(flood);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(flood.0.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("open "), "{line}");
    let during = open_fds(pid);
    let out = node.storescu(&[testdata().unwrap().join("ts/ct_explicit_le.dcm")]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Received Store Response (Success)"),
        "a C-STORE under an HTTP flood failed ({during} descriptors open, flood: {line}): {text}\n{}",
        node.log().lines().filter(|l| !l.contains("http request")).take(60).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(node.stored_files().len(), 1);
    assert!(closed_by_server(&mut half_open, Duration::from_secs(60)), "a half-open request was still open after a minute");
    assert!(closed_by_server(&mut kept, Duration::from_secs(60)), "an idle kept-alive connection was still open after a minute");
    drop(flood);
    // The flood over, the HTTP side serves again.
    wait_until("the HTTP side answering after the flood", Duration::from_secs(60), || {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{http}/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .is_ok_and(|r| r.status() == StatusCode::OK)
    });
}

/// Issue 28 (7): what names patients is never cached or sniffed, the page is not framed and
/// sends no referrer, and `/readyz` tells an anonymous caller only whether the node is ready.
#[test]
fn patient_responses_are_not_cached_and_readyz_gives_reasons_to_admins_only() {
    if !peers_ready() {
        return;
    }
    // No model package: not ready, for a reason.
    let node = Node::start(NodeOptions::default());
    let api = Api::new(&node);
    let header = |rsp: &Response, name: &str| rsp.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    for (path, token, status) in [
        ("/api/worklist", Some(READER_TOKEN), StatusCode::OK),
        ("/api/worklist?limit=0", Some(READER_TOKEN), StatusCode::BAD_REQUEST),
        ("/api/studies/1", Some(READER_TOKEN), StatusCode::NOT_FOUND),
        ("/api/worklist", None, StatusCode::UNAUTHORIZED),
        ("/", None, StatusCode::OK),
    ] {
        let rsp = api.get(path, token);
        assert_eq!(rsp.status(), status, "{path}");
        assert!(header(&rsp, "cache-control").contains("no-store"), "{path}: {:?}", rsp.headers());
        assert_eq!(header(&rsp, "pragma"), "no-cache", "{path}");
        assert_eq!(header(&rsp, "x-content-type-options"), "nosniff", "{path}");
    }
    let page = api.get("/", None);
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert!(header(&page, "content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");

    // Anonymous and reader callers: ready or not, nothing more.
    for token in [None, Some(READER_TOKEN), Some("not-a-token-0123456789abcdef")] {
        let rsp = api.get("/readyz", token);
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = rsp.json().unwrap();
        assert_eq!(body, serde_json::json!({ "ready": false }), "{token:?}");
    }
    // An admin gets the reasons.
    let rsp = api.get("/readyz", Some(ADMIN_TOKEN));
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = rsp.json().unwrap();
    assert_eq!(body["ready"], false);
    assert!(body["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("no model package")), "{body}");
    assert_eq!(body["models"], 0);
}

/// The `[http]` limits are validated at start, each refusal naming its key.
#[test]
fn http_limits_out_of_range_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    for (line, key) in [
        ("header_timeout = \"0s\"", "http.header_timeout"),
        ("keep_alive_timeout = \"30s\"", "http.keep_alive_timeout"),
        ("request_timeout = \"0s\"", "http.request_timeout"),
        ("max_connections = 0", "http.max_connections"),
        ("max_connections_per_host = 100000", "max_connections_per_host"),
    ] {
        std::fs::write(&path, format!("[http]\n{line}\n")).unwrap();
        let err = triage_node::config::Settings::load(Some(&path)).expect_err(line).to_string();
        assert!(err.contains(key), "{line}: {err}");
    }
    std::fs::write(&path, "[http]\nheader_timeout = \"20s\"\nkeep_alive_timeout = \"20s\"\nmax_connections = 10\nmax_connections_per_host = 10\n").unwrap();
    let http = triage_node::config::Settings::load(Some(&path)).unwrap().http;
    assert_eq!((http.header_timeout, http.keep_alive_timeout, http.max_connections), (Duration::from_secs(20), Duration::from_secs(20), 10));
}
