//! An admin retracts a study's AI results, on the CLI and on the HTTP API: a real study pushed by
//! DCMTK, triaged by the demo model, its SR and heatmap delivered to a real PACS (DCMTK
//! storescp) and its HL7 report to a real MLLP receiver; then the PACS receives an IHE IOCM
//! rejection note (Key Object Selection) naming exactly those objects, the RIS a correction,
//! the study leaves the worklist and the audit trail has the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const KOS: &str = "1.2.840.10008.5.1.4.1.1.88.59";

/// A node with the demo model sending SR and heatmap SC to `pacs_port` (registered as PACS),
/// HL7 to `hl7_port` when given; then `file` stored and every outbox item delivered.
fn triaged(pacs_port: u16, hl7_port: Option<u16>, file: &Path) -> (Node, i64) {
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", repo().join("models").display())],
        results: vec!["destinations = [\"PACS\"]".into(), "heatmap = [\"secondary_capture\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"500ms\"".into(), "retry_max = \"1s\"".into()],
        extra: hl7_port.map(|p| format!("[hl7]\nenabled = true\nhost = \"127.0.0.1\"\nport = {p}\n")).into_iter().collect(),
        ..Default::default()
    });
    let out = node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &pacs_port.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(node.storescu(&[file.to_path_buf()]).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uid = deid_uid(&study_uid_of(file));
    let study = wait_results(&rt, &db, std::slice::from_ref(&uid), Duration::from_secs(90), &node).remove(0).remove(0).study_id;
    wait_until("every result object and report delivered", Duration::from_secs(60), || {
        let items = rt.block_on(db.outbox_list(None)).unwrap();
        !items.is_empty() && items.iter().all(|i| i.state == "delivered")
    });
    rt.block_on(db.close());
    (node, study)
}

/// What pydicom reads of the files a PACS received: class, instance, study, patient, and for a
/// rejection note its title code and the instances its evidence names.
fn received(dir: &Path) -> Vec<Value> {
    let script = r#"
import json, sys, pydicom
for path in sys.argv[1:]:
    d = pydicom.dcmread(path)
    o = {"class": str(d.SOPClassUID), "instance": str(d.SOPInstanceUID), "study": str(d.StudyInstanceUID), "patient": str(d.get("PatientID", "")), "path": path}
    if "ConceptNameCodeSequence" in d and "CurrentRequestedProcedureEvidenceSequence" in d:
        o["title"] = [d.ConceptNameCodeSequence[0].CodeValue, d.ConceptNameCodeSequence[0].CodingSchemeDesignator]
        o["rejects"] = sorted(str(i.ReferencedSOPInstanceUID) for s in d.CurrentRequestedProcedureEvidenceSequence
                              for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence)
    print(json.dumps(o))
"#;
    let files: Vec<PathBuf> = walk(dir);
    if files.is_empty() {
        return Vec::new();
    }
    let out = Command::new(python().unwrap()).arg("-c").arg(script).args(&files).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn field(msg: &str, seg: &str, n: usize) -> String {
    msg.split('\r').find(|s| s.starts_with(&format!("{seg}|"))).and_then(|s| s.split('|').nth(n)).unwrap_or("").to_string()
}

#[test]
fn an_admin_retracts_on_the_cli_the_pacs_gets_a_rejection_note_and_the_ris_a_correction() {
    if !peers_ready() || !have_tool("storescp") {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let file = dir.join("case000.dcm"); // positive: a report and a heatmap
    let work = tempfile::tempdir().unwrap();
    let (pacs_dir, ris) = (work.path().join("pacs"), work.path().join("ris.jsonl"));
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let (pacs, pacs_port) = storescp(&pacs_dir);
    let _pacs = Killed(pacs);
    let hl7_port = free_port();
    let _ris = python_peer("mllp_receiver.py", &["--port", &hl7_port.to_string(), "--out", ris.to_str().unwrap()], "listening");
    let (node, study) = triaged(pacs_port, Some(hl7_port), &file);
    let before = received(&pacs_dir);
    assert_eq!(before.len(), 2, "the report and the heatmap: {before:?}");
    let messages = || std::fs::read_to_string(&ris).unwrap_or_default().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect::<Vec<_>>();
    assert_eq!(messages().len(), 1);

    // Refusals first: nothing is written.
    let cli = |args: &[&str]| {
        let out = node.cli(args);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let id = study.to_string();
    let (ok, _, err) = cli(&["results", "retract", &id, "--reason", " \n "]);
    assert!(!ok && err.contains("a reason is required"), "{err}");
    let (ok, _, err) = cli(&["results", "retract", "999999", "--reason", "wrong"]);
    assert!(!ok && err.contains("no worklist study 999999"), "{err}");

    let reason = "Model v1.0 miscalibrated on portable films (ticket 4711)";
    let (ok, out, err) = cli(&["results", "retract", &id, "--reason", reason, "--patient-safety"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("113037") && out.contains("rejection note of 2 objects queued for PACS") && out.contains("correction queued"), "{out}");

    // The PACS gets one rejection note naming exactly the objects it received, in their study.
    wait_until("the rejection note at the PACS", Duration::from_secs(60), || received(&pacs_dir).iter().any(|o| o["class"] == KOS));
    let after = received(&pacs_dir);
    let notes: Vec<&Value> = after.iter().filter(|o| o["class"] == KOS).collect();
    assert_eq!(notes.len(), 1, "{after:?}");
    let note = notes[0];
    assert_eq!(note["title"], serde_json::json!(["113037", "DCM"]));
    let mut sent: Vec<&str> = before.iter().map(|o| o["instance"].as_str().unwrap()).collect();
    sent.sort();
    assert_eq!(note["rejects"], serde_json::json!(sent));
    assert_eq!(note["study"], study_uid_of(&file).as_str(), "filed in the original study");
    assert_eq!(note["patient"], before[0]["patient"]);
    let note_file = Path::new(note["path"].as_str().unwrap());
    assert!(dciodvfy_errors(note_file).is_empty(), "{:?}", dciodvfy_errors(note_file));
    assert!(pixelmed_errors(note_file).is_empty(), "{:?}", pixelmed_errors(note_file));

    // The RIS gets a correction withdrawing what it was told, for the same patient.
    wait_until("the correction at the RIS", Duration::from_secs(60), || messages().len() == 2);
    let got = messages();
    let (first, correction) = (got[0]["message"].as_str().unwrap(), got[1]["message"].as_str().unwrap());
    assert_ne!(got[0]["control_id"], got[1]["control_id"]);
    assert_eq!(field(correction, "PID", 3), field(first, "PID", 3));
    assert_eq!(field(correction, "OBR", 25), "C");
    let obx: Vec<&str> = correction.split('\r').filter(|s| s.starts_with("OBX|")).collect();
    assert!(!obx.is_empty() && obx.iter().all(|s| s.split('|').nth(11) == Some("D")), "every observation deleted: {correction}");
    assert!(!correction.contains("TQ1|") && correction.contains("withdrawn"), "{correction}");

    // Off the worklist; once only; audited with the reason, which is nowhere else.
    let (ok, listed, _) = cli(&["worklist", "--json"]);
    assert!(ok && listed.trim().is_empty(), "{listed}");
    let (ok, _, err) = cli(&["results", "retract", &id, "--reason", "again"]);
    assert!(!ok && err.contains("nothing to retract"), "{err}");
    let (ok, audit, _) = cli(&["audit", "list"]);
    assert!(ok);
    let entry = audit.lines().find(|l| l.contains("retract") && l.contains(&format!("study:{study}"))).unwrap_or_else(|| panic!("{audit}"));
    assert!(entry.contains(reason) && entry.contains("113037"), "{entry}");
    assert!(cli(&["audit", "verify"]).0);
    assert!(!node.log().contains(reason), "the reason is in the audit trail only");
    // `results` (with and without --limit) still lists it, with the note's delivery.
    wait_until("the note recorded delivered", Duration::from_secs(30), || cli(&["results", "--limit", "5"]).1.contains("1 kos delivered"));
    let (ok, listed, _) = cli(&["results"]);
    assert!(ok && listed.contains("RETRACTED (113037) by cli:"), "{listed}");
}

#[test]
fn the_api_retracts_for_admins_only_and_shows_the_retraction_to_admins() {
    if !peers_ready() || !have_tool("storescp") {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let file = dir.join("case001.dcm");
    let work = tempfile::tempdir().unwrap();
    let pacs_dir = work.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let (pacs, pacs_port) = storescp(&pacs_dir);
    let _pacs = Killed(pacs);
    let (node, study) = triaged(pacs_port, None, &file);
    let base = format!("http://127.0.0.1:{}", node.http_port.unwrap());
    let client = reqwest::blocking::Client::new();
    let post = |token: &str, id: i64, body: Value| client.post(format!("{base}/api/studies/{id}/retract")).bearer_auth(token).json(&body).send().unwrap();
    let get = |token: &str, path: &str| client.get(format!("{base}{path}")).bearer_auth(token).send().unwrap();
    let error = |rsp: reqwest::blocking::Response| rsp.json::<Value>().unwrap()["error"].as_str().unwrap().to_string();

    let body = serde_json::json!({ "reason": "wrong body part", "patient_safety": false });
    assert_eq!(post(READER_TOKEN, study, body.clone()).status(), StatusCode::FORBIDDEN);
    let rsp = post(ADMIN_TOKEN, study, serde_json::json!({ "reason": "  " }));
    assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
    assert!(error(rsp).contains("reason is required"));
    assert_eq!(post(ADMIN_TOKEN, study, serde_json::json!({ "reason": "x", "colour": 1 })).status(), StatusCode::BAD_REQUEST);
    assert_eq!(post(ADMIN_TOKEN, 999_999, body.clone()).status(), StatusCode::NOT_FOUND);

    let rsp = post(ADMIN_TOKEN, study, body.clone());
    assert_eq!(rsp.status(), StatusCode::OK);
    let done: Value = rsp.json().unwrap();
    assert_eq!((done["study_id"].as_i64(), done["code"].as_str(), done["by"].as_str()), (Some(study), Some("113001"), Some("it-admin")), "{done}");
    assert_eq!(done["destinations"], serde_json::json!(["PACS"]));
    assert!(done["objects"].as_i64().unwrap() >= 1 && done["hl7"] == false, "{done}");
    let rsp = post(ADMIN_TOKEN, study, body);
    assert_eq!(rsp.status(), StatusCode::CONFLICT);
    assert!(error(rsp).contains("nothing to retract"));

    // Off the worklist; by id, for admins only, with the retraction.
    let page: Value = get(READER_TOKEN, "/api/worklist").json().unwrap();
    assert!(page["items"].as_array().unwrap().is_empty(), "{page}");
    assert_eq!(get(READER_TOKEN, &format!("/api/studies/{study}")).status(), StatusCode::NOT_FOUND);
    assert_eq!(get(READER_TOKEN, &format!("/api/studies/{study}/objects/0")).status(), StatusCode::NOT_FOUND);
    let shown: Value = get(ADMIN_TOKEN, &format!("/api/studies/{study}")).json().unwrap();
    assert_eq!(shown["retraction"]["code"], "113001", "{shown}");
    assert_eq!(shown["retraction"]["by"], "it-admin");
    wait_until("the rejection note at the PACS", Duration::from_secs(60), || received(&pacs_dir).iter().any(|o| o["class"] == KOS));
}
