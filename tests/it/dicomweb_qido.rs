//! QIDO-RS and WADO-RS over the AI results, against PyPI dicomweb-client: the studies of the
//! Query/Retrieve fixture (`query::fixture_with`: pushed by DCMTK storescu, triaged by the demo
//! model, reports and heatmaps delivered to a PACS) are searched, retrieved, read as metadata and
//! rendered over HTTP; what WADO-RS sends is byte for byte what DCMTK movescu gets by C-MOVE; bad
//! requests get the right 4xx with a reason; every disclosure is audited without patient data.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::common::*;
use crate::query::{fixture_with, ids, register, Fixture};

const SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";
const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
const PM: &str = "1.2.840.10008.5.1.4.1.1.30";

fn base(f: &Fixture) -> String {
    format!("http://127.0.0.1:{}/dicomweb", f.node.http_port.expect("the HTTP API listens"))
}

/// One dicomweb-client call; `{"result": ...}` or `{"status": ..., "text": ...}`.
fn client(f: &Fixture, call: &str, args: Value, out: Option<&std::path::Path>) -> Value {
    let py = python().unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(repo().join("tests/peers/dicomweb_peer.py")).args([&base(f), READER_TOKEN, call, &args.to_string()]);
    if let Some(out) = out {
        cmd.arg(out);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{call}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{call}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn result(v: Value) -> Vec<Value> {
    v["result"].as_array().unwrap_or_else(|| panic!("{v}")).clone()
}

/// A DICOM JSON attribute's first value as text (a PN's Alphabetic group).
fn first(r: &Value, tag: &str) -> String {
    match &r[tag]["Value"][0] {
        Value::String(s) => s.clone(),
        Value::Object(pn) => pn["Alphabetic"].as_str().unwrap_or_default().to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn sorted(v: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().collect();
    v.sort();
    v
}

/// The parts of a multipart/related body (split here, not by the node's reader).
fn parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type.split(';').map(str::trim).find_map(|p| p.strip_prefix("boundary=")).expect("a boundary").trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let at: Vec<usize> = (0..body.len()).filter(|&i| body[i..].starts_with(&delimiter)).collect();
    let mut out = Vec::new();
    for w in at.windows(2) {
        let part = &body[w[0] + delimiter.len() + 2..w[1] - 2];
        let split = part.windows(4).position(|x| x == b"\r\n\r\n").unwrap();
        out.push((String::from_utf8_lossy(&part[..split]).into_owned(), part[split + 4..].to_vec()));
    }
    assert!(body[*at.last().unwrap()..].starts_with(format!("--{boundary}--").as_bytes()), "the close delimiter");
    out
}

/// Equal bytes, or where they first differ (not the whole object).
fn same(a: &[u8], b: &[u8], what: &str) {
    if a != b {
        let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
        panic!("{what}: {} and {} bytes, first difference at {at}", a.len(), b.len());
    }
}

#[test]
fn a_web_client_searches_and_retrieves_the_ai_results_as_the_qr_scp_serves_them() {
    let Some(f) = fixture_with(&[], &["parametric_map", "secondary_capture"]) else { return };
    if !require("dicomweb-client in the venv", Command::new(python().unwrap()).args(["-c", "import dicomweb_client"]).status().unwrap().success()) {
        return;
    }
    let all: Vec<String> = sorted(f.cases.iter().map(|c| c.study_uid.clone()));
    let positive = &f.cases[2];

    // QIDO-RS studies: every study, with the identifiers the PACS knows.
    let studies = result(client(&f, "search_for_studies", serde_json::json!({}), None));
    assert_eq!(sorted(studies.iter().map(|r| first(r, "0020000D"))), all);
    for r in &studies {
        let case = f.cases.iter().find(|c| first(r, "0020000D") == c.study_uid).unwrap();
        assert_eq!((first(r, "00100020"), first(r, "00100010"), first(r, "00080050")), (case.patient_id.into(), case.name.into(), case.accession.into()));
        assert_eq!(r["00201208"]["Value"][0], if case.positive { 3 } else { 1 }, "NumberOfStudyRelatedInstances as a number: {r}");
    }
    // Matching as C-FIND matches: wild card, range, UID list (comma separated), computed key.
    let search = |filters: Value| {
        sorted(result(client(&f, "search_for_studies", serde_json::json!({"search_filters": filters}), None)).iter().map(|r| first(r, "0020000D")))
    };
    let uids = |which: &[usize]| sorted(which.iter().map(|&i| f.cases[i].study_uid.clone()));
    assert_eq!(search(serde_json::json!({"PatientName": "doe^*"})), uids(&[1, 2]));
    assert_eq!(search(serde_json::json!({"00100020": "QR-1"})), uids(&[0]), "a tag as the parameter");
    assert_eq!(search(serde_json::json!({"StudyDate": "20241101-"})), uids(&[1, 2]));
    assert_eq!(search(serde_json::json!({"StudyInstanceUID": format!("{},{}", f.cases[0].study_uid, f.cases[2].study_uid)})), uids(&[0, 2]));
    assert_eq!(search(serde_json::json!({"ModalitiesInStudy": "OT"})), uids(&[0, 2]));
    assert!(search(serde_json::json!({"PatientID": "NOBODY"})).is_empty(), "no match: 200 and []");
    // limit and offset page the same order; includefield adds attributes.
    let page = result(client(&f, "search_for_studies", serde_json::json!({"limit": 1, "offset": 1}), None));
    assert_eq!(page.iter().map(|r| first(r, "0020000D")).collect::<Vec<_>>(), [first(&studies[1], "0020000D")]);
    let wide = result(client(
        &f,
        "search_for_studies",
        serde_json::json!({"fields": ["SOPClassesInStudy", "00081030"], "search_filters": {"PatientID": "QR-1"}}),
        None,
    ));
    assert_eq!(wide[0]["00080062"]["Value"].as_array().unwrap().len(), 3, "SR, SC and PM: {}", wide[0]);
    assert_eq!(wide[0]["00081030"]["vr"], "LO", "asked for, no value: the vr only");

    // Series and instances, below a study and across all of them.
    let series = result(client(&f, "search_for_series", serde_json::json!({"study_instance_uid": positive.study_uid}), None));
    let modalities = sorted(series.iter().map(|r| first(r, "00080060")));
    assert!(modalities.len() == 3 && modalities.contains(&"SR".into()) && modalities.contains(&"OT".into()), "report, SC (OT) and PM: {modalities:?}");
    let every_series = result(client(&f, "search_for_series", serde_json::json!({"search_filters": {"Modality": "SR"}}), None));
    assert_eq!(every_series.len(), 3, "one report series per study");
    assert!(every_series.iter().all(|r| !first(r, "00100020").is_empty()), "with the study's attributes");
    let instances = result(client(&f, "search_for_instances", serde_json::json!({"study_instance_uid": positive.study_uid}), None));
    let classes: BTreeSet<String> = instances.iter().map(|r| first(r, "00080016")).collect();
    assert_eq!(classes, [SR, SC, PM].iter().map(|s| s.to_string()).collect());
    let pm = instances.iter().find(|r| first(r, "00080016") == PM).unwrap();
    let sc = instances.iter().find(|r| first(r, "00080016") == SC).unwrap();
    let sr = instances.iter().find(|r| first(r, "00080016") == SR).unwrap();
    let one = result(client(
        &f,
        "search_for_instances",
        serde_json::json!({"study_instance_uid": positive.study_uid, "series_instance_uid": first(sr, "0020000E"), "fields": ["all"]}),
        None,
    ));
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["0040A043"]["Value"][0]["00080100"]["Value"][0], "126000", "a sequence, as DICOM JSON");
    assert_eq!(result(client(&f, "search_for_instances", serde_json::json!({"search_filters": {"SOPClassUID": PM}}), None)).len(), 2);

    // WADO-RS: the study through dicomweb-client, re-identified.
    let dirs = tempfile::tempdir().unwrap();
    let got = result(client(&f, "retrieve_study", serde_json::json!({"study_instance_uid": positive.study_uid}), Some(&dirs.path().join("client"))));
    assert_eq!(got.len(), 3);
    for g in &got {
        assert_eq!((g["PatientID"].as_str(), g["AccessionNumber"].as_str()), (Some(positive.patient_id), Some(positive.accession)), "{g}");
    }
    let instance = |r: &Value| serde_json::json!({"study_instance_uid": positive.study_uid, "series_instance_uid": first(r, "0020000E"), "sop_instance_uid": first(r, "00080018")});
    let single = result(client(&f, "retrieve_instance", instance(pm), None));
    assert_eq!(single[0]["SOPInstanceUID"], first(pm, "00080018"));

    // Byte for byte what a C-MOVE sends: DCMTK movescu to a second storescp, and the same study
    // by WADO-RS split here (the data sets; each Part 10 header is its writer's own).
    std::fs::create_dir_all(dirs.path().join("moved")).unwrap();
    // Bit-preserving: the data sets as they arrived on the wire (storescp re-encodes otherwise).
    let (dest, dest_port) = storescp_with(&dirs.path().join("moved"), &["+B"]);
    let _dest = Killed(dest);
    register(&f.node, "MOVEDEST", Some(dest_port));
    let out = Command::new("movescu")
        .args(["-S", "-aet", "VIEWER", "-aec", "TRIAGE", "-aem", "MOVEDEST", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k".to_string(), format!("StudyInstanceUID={}", positive.study_uid)])
        .args(["127.0.0.1", &f.node.port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let moved = walk(&dirs.path().join("moved"));
    assert_eq!(moved.len(), 3, "{moved:?}");
    let http = reqwest::blocking::Client::new();
    let rsp = http
        .get(format!("{}/studies/{}", base(&f), positive.study_uid))
        .bearer_auth(READER_TOKEN)
        .header("Accept", "multipart/related; type=\"application/dicom\"")
        .send()
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let content_type = rsp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("multipart/related; type=\"application/dicom\""), "{content_type}");
    let wado = parts(&content_type, &rsp.bytes().unwrap());
    assert_eq!(wado.len(), 3);
    let wado_dir = dirs.path().join("wado");
    std::fs::create_dir_all(&wado_dir).unwrap();
    for (i, (headers, file)) in wado.iter().enumerate() {
        assert!(headers.contains("application/dicom"), "{headers}");
        let path: PathBuf = wado_dir.join(format!("{i}.dcm"));
        std::fs::write(&path, file).unwrap();
        let (class, sop) = ids(&path);
        let m = moved.iter().find(|m| ids(m).1 == sop).unwrap_or_else(|| panic!("{class} {sop} was not moved"));
        same(&dataset_bytes(&path), &dataset_bytes(m), &format!("{class}: WADO-RS sends what C-MOVE sends"));
    }

    // Metadata: DICOM JSON of each object, the pixels left out.
    let meta = result(client(&f, "retrieve_study_metadata", serde_json::json!({"study_instance_uid": positive.study_uid}), None));
    assert_eq!(meta.len(), 3);
    for m in &meta {
        assert_eq!(first(m, "00100020"), positive.patient_id);
        assert!(m.get("7FE00010").is_none() && m.get("7FE00008").is_none(), "bulk data left out");
    }
    let sc_meta = meta.iter().find(|m| first(m, "00080016") == SC).unwrap();
    assert_eq!(sc_meta["00280002"]["Value"][0], 3, "US as a number");

    // Rendered: the Secondary Capture and the Parametric Map as PNG; the report has no picture.
    let rows = |m: &Value| m["00280010"]["Value"][0].as_u64().unwrap();
    for (r, what) in [(sc, "SC"), (pm, "PM")] {
        let p = &client(&f, "retrieve_instance_rendered", instance(r), None)["result"];
        assert_eq!(p["png"], true, "{what}: {p}");
        let m = meta.iter().find(|m| first(m, "00080018") == first(r, "00080018")).unwrap();
        assert_eq!(p["height"].as_u64(), Some(rows(m)), "{what}: the object's rows");
    }
    assert_eq!(client(&f, "retrieve_instance_rendered", instance(sr), None)["status"], 406);

    // Refusals: the right status and a reason.
    let get = |path: &str, token: Option<&str>, accept: Option<&str>| {
        let mut rq = http.get(format!("{}{path}", base(&f)));
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        if let Some(a) = accept {
            rq = rq.header("Accept", a);
        }
        let rsp = rq.send().unwrap();
        (rsp.status().as_u16(), rsp.text().unwrap())
    };
    let refused = client(&f, "search_for_studies", serde_json::json!({"fuzzymatching": true}), None);
    assert_eq!(refused["status"], 400);
    assert!(refused["text"].as_str().unwrap().contains("fuzzymatching"), "{refused}");
    let (status, text) = get("/studies?Bogus=1", Some(READER_TOKEN), None);
    assert!(status == 400 && text.contains("unknown query parameter"), "{status} {text}");
    let (status, text) = get("/studies?StudyDate=2024-01-01", Some(READER_TOKEN), None);
    assert!(status == 400 && text.contains("StudyDate"), "{status} {text}");
    assert_eq!(get("/studies", None, None).0, 401);
    assert_eq!(get("/studies", Some(MODALITY_TOKEN), None).0, 403, "a modality token only stores");
    assert_eq!(get(&format!("/studies/{}/metadata", positive.study_uid), Some(MODALITY_TOKEN), None).0, 403);
    assert_eq!(get("/studies?PatientID=QR-1", Some(ADMIN_TOKEN), None).0, 200, "an admin searches too");
    assert_eq!(get(&format!("/studies/{}", positive.study_uid), Some("not-a-token-0123456789abcdef"), None).0, 401);
    let (status, text) = get("/studies", Some(READER_TOKEN), Some("application/dicom+xml"));
    assert!(status == 406 && text.contains("application/dicom+json"), "{status} {text}");
    let jpeg = "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50";
    let (status, text) = get(&format!("/studies/{}", positive.study_uid), Some(READER_TOKEN), Some(jpeg));
    assert!(status == 406 && text.contains("1.2.840.10008.1.2.1"), "{status} {text}");
    assert_eq!(client(&f, "retrieve_study", serde_json::json!({"study_instance_uid": "1.2.3.999"}), None)["status"], 404);
    assert_eq!(client(&f, "retrieve_study_metadata", serde_json::json!({"study_instance_uid": "1.2.3.999"}), None)["status"], 404);
    assert_eq!(get("/studies/1.2.*", Some(READER_TOKEN), None).0, 400, "no pattern in a path");

    // An attribute the index does not hold is not matched, and a Warning says so.
    let rsp = http.get(format!("{}/studies?InstitutionName=Nowhere", base(&f))).bearer_auth(READER_TOKEN).send().unwrap();
    assert!(rsp.headers().get("warning").is_some_and(|w| w.to_str().unwrap().starts_with("299 ")), "{:?}", rsp.headers());
    assert_eq!(rsp.json::<Vec<Value>>().unwrap().len(), 3);

    // Latency on this machine (debug build): a study search, and a study's three objects.
    let time = |path: &str, accept: &str, n: usize| {
        let mut ms: Vec<f64> = (0..n)
            .map(|_| {
                let t = std::time::Instant::now();
                let rsp = http.get(format!("{}{path}", base(&f))).bearer_auth(READER_TOKEN).header("Accept", accept).send().unwrap();
                assert_eq!(rsp.status(), 200);
                rsp.bytes().unwrap();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms[n / 2]
    };
    let qido = time("/studies?PatientName=DOE*", "application/dicom+json", 20);
    let wado = time(&format!("/studies/{}", positive.study_uid), "multipart/related; type=\"application/dicom\"", 10);
    eprintln!("median latency: QIDO-RS study search {qido:.1} ms, WADO-RS study retrieve (3 objects) {wado:.1} ms");

    // Audited as the Q/R SCP audits: who (the token's user), no patient data; not in the log.
    let audit = String::from_utf8_lossy(&f.node.cli(&["audit", "list"]).stdout).into_owned();
    let mine: Vec<&str> = audit.lines().filter(|l| l.contains("user:dr.grey")).collect();
    assert!(mine.iter().any(|l| l.contains("query") && l.contains("QIDO-RS")), "{audit}");
    assert!(mine.iter().any(|l| l.contains("retrieve") && l.contains("WADO-RS")), "{audit}");
    assert!(mine.iter().any(|l| l.contains("WADO-RS rendered")) && mine.iter().any(|l| l.contains("WADO-RS metadata")), "{audit}");
    for c in &f.cases {
        for value in [c.study_uid.as_str(), c.patient_id, c.accession, "Müller", "DOE^JOHN"] {
            assert!(!audit.contains(value), "{value} in the audit trail");
            assert!(!f.node.log().contains(value), "{value} in the log");
        }
    }
    assert!(f.node.cli(&["audit", "verify"]).status.success());
}
