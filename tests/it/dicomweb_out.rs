//! STOW-RS as a delivery destination (`[[results.dicomweb]]`), against a real DICOMweb archive:
//! Orthanc from Debian with its DICOMweb plugin (`orthanc-dicomweb`). A chest radiograph pushed
//! by DCMTK storescu is triaged by the demo model and its AI results are POSTed, re-identified,
//! into the original study: first while the archive is down (retried), then once it is up
//! (delivered); to an archive that refuses the node's credentials (dead with the reason, nothing
//! lost: queued again once the password is right, delivered); and over https, trusting the
//! site's CA (delivered) and only that (without it: refused, retried).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use triage_node::db::{OutboxItem, OutboxState};

fn ready() -> bool {
    peers_ready() && have_tool("Orthanc") && require("Orthanc's DICOMweb plugin (orthanc-dicomweb)", std::path::Path::new(DICOMWEB_PLUGIN).exists())
}

fn demo_models() -> String {
    format!("models_dir = \"{}\"", repo().join("models").display())
}

/// The first demo case labelled positive (so the results include heatmaps).
fn positive_case() -> Option<PathBuf> {
    let (_, cases) = demo_cases()?;
    cases.into_iter().find(|(_, positive)| *positive).map(|(f, _)| f)
}

fn node_sending_to(destinations: &str) -> Node {
    Node::start(NodeOptions {
        inference: vec![demo_models()],
        results: vec![format!("dicomweb = [{destinations}]")],
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"1s\"".into(), "retry_max = \"2s\"".into()],
        ..Default::default()
    })
}

fn outbox(node: &Node) -> Vec<OutboxItem> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { node.db().await.outbox_list(None).await.unwrap() })
}

fn original(file: &std::path::Path, keyword: &str) -> String {
    let out = Command::new(python().unwrap())
        .args(["-c", &format!("import pydicom,sys; print(pydicom.dcmread(sys.argv[1]).get('{keyword}', ''))"), file.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn stow_rs_results_reach_the_original_study_once_the_archive_is_up() {
    if !ready() {
        return;
    }
    let Some(file) = positive_case() else { return };
    let port = free_port();
    let node = node_sending_to(&format!("{{ name = \"archive\", url = \"http://127.0.0.1:{port}/dicom-web/\" }}"));
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());

    // The archive is down: each object is tried, and waits to be tried again.
    wait_for(&node, "a failed STOW-RS attempt", Duration::from_secs(60), || node.log().contains("delivery failed; will retry"));
    let waiting = outbox(&node);
    assert!(!waiting.is_empty() && waiting.iter().all(|i| i.destination == "dicomweb:archive" && i.state != OutboxState::Delivered), "{waiting:?}");
    assert!(waiting.iter().any(|i| i.last_error.as_deref().is_some_and(|e| e.contains("connecting to the DICOMweb archive"))), "{waiting:?}");

    // Up, holding the original study (the modality sent it there too).
    let pacs = Orthanc::start_dicomweb(Some(port), &[]);
    let to_pacs = Command::new("storescu").args(["-aec", "ORTHANC", "127.0.0.1", &pacs.dicom_port.to_string()]).arg(&file).output().unwrap();
    assert!(to_pacs.status.success(), "{}", String::from_utf8_lossy(&to_pacs.stderr));
    wait_for(&node, "every object delivered", Duration::from_secs(60), || outbox(&node).iter().all(|i| i.state == OutboxState::Delivered));
    assert!(node.log().contains("AI report delivered"), "{}", node.log());

    let items = outbox(&node);
    // What was tried while the archive was down was tried again (the rest of a lane whose
    // archive did not answer is given back untried).
    assert!(items.iter().any(|i| i.attempts >= 2), "retried: {items:?}");
    let study_uid = study_uid_of(&file);
    let patient_id = original(&file, "PatientID");
    let held = pacs.study(&study_uid);
    // The original image, the report and the positive finding's heatmap as a Parametric Map and
    // a Secondary Capture: one study, the original patient.
    assert_eq!(held.len(), 1 + items.len(), "{held:?}\nOrthanc log:\n{}", pacs.log());
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(held.iter().any(|i| i["modality"] == "SR"), "{held:?}");
    assert!(held.iter().all(|i| i["patient_id"] == patient_id.as_str()), "{held:?}");
    assert!(!node.log().contains(&patient_id), "the patient's id is in the node's log");
}

#[test]
fn stow_rs_refused_credentials_are_dead_with_the_reason_and_nothing_is_lost() {
    if !ready() {
        return;
    }
    let Some(file) = positive_case() else { return };
    let pacs = Orthanc::start_dicomweb(None, &[("triage", "right-horse-battery")]);
    let secrets = tempfile::tempdir().unwrap();
    let (password, token) = (secrets.path().join("password"), secrets.path().join("token"));
    for (path, text) in [(&password, "wrong-staple-42\n"), (&token, "not-a-valid-token\n")] {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let url = pacs.dicomweb_url();
    let node = node_sending_to(&format!(
        "{{ name = \"basic\", url = \"{url}\", auth = \"basic\", username = \"triage\", password_file = \"{}\" }}, \
         {{ name = \"bearer\", url = \"{url}\", auth = \"bearer\", token_file = \"{}\" }}",
        password.display(),
        token.display()
    ));
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());

    let all_dead = || {
        let items = outbox(&node);
        !items.is_empty() && items.iter().all(|i| i.state == OutboxState::Dead)
    };
    wait_for(&node, "every object dead-lettered", Duration::from_secs(60), all_dead);
    let items = outbox(&node);
    assert_eq!(items.iter().filter(|i| i.destination == "dicomweb:basic").count(), 3, "{items:?}");
    assert_eq!(items.iter().filter(|i| i.destination == "dicomweb:bearer").count(), 3, "{items:?}");
    for i in &items {
        // Refused at once, not retried: the archive will refuse these credentials again.
        assert_eq!(i.attempts, 1, "{i:?}");
        let why = i.last_error.as_deref().unwrap_or_default();
        assert!(why.contains("401 Unauthorized") && why.contains("credentials"), "{why}");
        assert!(node.data_dir().join(&i.path).exists(), "the queued object is kept: {}", i.path);
    }
    let listed = String::from_utf8(node.cli(&["outbox", "list", "--state", "dead"]).stdout).unwrap();
    assert!(listed.contains("401 Unauthorized"), "{listed}");
    // `doctor` says so before any result is sent.
    let doctor = String::from_utf8(node.cli(&["doctor"]).stdout).unwrap();
    let line = |name: &str| doctor.lines().find(|l| l.contains(name)).unwrap_or_default().to_string();
    assert!(line("DICOMweb basic").contains("FAIL") && line("DICOMweb basic").contains("credentials"), "{doctor}");
    assert!(line("DICOMweb bearer").contains("FAIL"), "{doctor}");
    assert_eq!(held_instances(&pacs), 0, "nothing was stored");
    let log = node.log();
    assert!(!log.contains("wrong-staple-42") && !log.contains("not-a-valid-token"), "a credential is in the log");

    // The password put right (read at each send), the dead items queued again: delivered.
    std::fs::write(&password, "right-horse-battery\n").unwrap();
    let basic: Vec<i64> = items.iter().filter(|i| i.destination == "dicomweb:basic").map(|i| i.id).collect();
    for id in &basic {
        assert!(node.cli(&["outbox", "retry", &id.to_string()]).status.success());
    }
    wait_for(&node, "the basic destination's objects delivered", Duration::from_secs(60), || {
        outbox(&node).iter().filter(|i| basic.contains(&i.id)).all(|i| i.state == OutboxState::Delivered)
    });
    let doctor = String::from_utf8(node.cli(&["doctor"]).stdout).unwrap();
    assert!(doctor.lines().any(|l| l.contains("DICOMweb basic") && l.contains("ok")), "{doctor}");
    assert!(outbox(&node).iter().filter(|i| i.destination == "dicomweb:bearer").all(|i| i.state == OutboxState::Dead));
    assert_eq!(held_instances(&pacs), basic.len(), "the results, once each");
}

/// How many instances the archive (asking for basic auth) holds, by its REST API.
fn held_instances(pacs: &Orthanc) -> usize {
    let url = format!("http://127.0.0.1:{}/instances", pacs.http_port);
    let rsp = reqwest::blocking::Client::new().get(url).basic_auth("triage", Some("right-horse-battery")).send().unwrap();
    assert!(rsp.status().is_success(), "{}", rsp.status());
    rsp.json::<Vec<String>>().unwrap().len()
}

#[test]
fn stow_rs_over_https_trusts_the_sites_ca_and_no_other() {
    if !ready() || !have_tool("openssl") {
        return;
    }
    let Some(file) = positive_case() else { return };
    let pki = tempfile::tempdir().unwrap();
    crate::smtp::certificates(pki.path());
    let pacs = Orthanc::start_dicomweb(None, &[]);
    // The archive behind a TLS terminator (its certificate signed by the site's CA).
    let port = free_port();
    let (cert, key) = (pki.path().join("server.crt"), pki.path().join("server.key"));
    let args =
        ["--port", &port.to_string(), "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), "--to", &pacs.http_port.to_string()].map(String::from);
    let _tls = python_peer("tls_proxy.py", &args.iter().map(String::as_str).collect::<Vec<_>>(), "listening");
    let url = format!("https://localhost:{port}/dicom-web");
    let ca = pki.path().join("ca.crt");
    let node = node_sending_to(&format!(
        "{{ name = \"site\", url = \"{url}\", ca_file = \"{}\" }}, {{ name = \"platform-roots-only\", url = \"{url}\" }}",
        ca.display()
    ));
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());

    let of = |dest: &str| outbox(&node).into_iter().filter(|i| i.destination == dest).collect::<Vec<_>>();
    wait_for(&node, "the site's objects delivered over https", Duration::from_secs(60), || {
        let site = of("dicomweb:site");
        !site.is_empty() && site.iter().all(|i| i.state == OutboxState::Delivered)
    });
    // Without the site's CA the archive's certificate is not trusted: nothing sent, retried.
    wait_for(&node, "a refused certificate", Duration::from_secs(30), || {
        of("dicomweb:platform-roots-only").iter().any(|i| i.last_error.as_deref().is_some_and(|e| e.contains("certificate")))
    });
    assert!(of("dicomweb:platform-roots-only").iter().all(|i| i.state != OutboxState::Delivered && i.state != OutboxState::Dead));
    // What came over TLS is in the archive, once.
    assert_eq!(pacs.study(&study_uid_of(&file)).len(), of("dicomweb:site").len());
}
