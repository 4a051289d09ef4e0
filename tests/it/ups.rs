//! The site's worklist told of an urgent study by standard means: a UPS Push N-CREATE to a real
//! UPS SCP (`tests/peers/ups_scp.py`, pynetdicom) through the outbox, and an HL7 order update
//! (OMI^O23) after the ORU to a real MLLP receiver. The workitem is created once, priority HIGH,
//! with the patient and study as the site knows them (re-identified at sending), after the SCP
//! comes up; a negative study creates none. The RIS gets the ORU, then the OMI with the real
//! accession and TQ1-9 S.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// The first value of `tag` (8 hex digits) in a DICOM JSON data set.
fn json_value<'a>(ds: &'a Value, tag: &str) -> &'a Value {
    &ds[tag]["Value"][0]
}

#[test]
fn an_urgent_study_creates_one_high_priority_workitem_at_the_ups_scp_once_it_is_up() {
    if !peers_ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    // case000 is urgent for the demo nodule model, case001 negative.
    let (urgent, negative) = (dir.join("case000.dcm"), dir.join("case001.dcm"));
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ups.jsonl");
    let port = free_port();
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", repo().join("models").display())],
        results: vec!["ups = [\"RISUPS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"300ms\"".into(), "retry_max = \"600ms\"".into(), "timeout = \"5s\"".into()],
        ..Default::default()
    });
    assert!(node.cli(&["ae", "add", "RISUPS", "--role", "pacs", "--host", "127.0.0.1", "--port", &port.to_string()]).status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let items = || rt.block_on(db.outbox_list(None)).unwrap().into_iter().filter(|i| i.kind == "ups").collect::<Vec<_>>();

    // The SCP is down: the workitem waits and is retried.
    assert!(node.storescu(&[urgent.clone(), negative.clone()]).status.success(), "{}", node.log());
    wait_for(&node, "the workitem retried while the SCP is down", Duration::from_secs(90), || items().iter().any(|i| i.state == "pending" && i.attempts >= 2));
    let waiting = items().remove(0);
    assert_eq!(waiting.destination, "ups:RISUPS");
    assert!(waiting.reidentify);

    // Up: created, once.
    let _scp = python_peer("ups_scp.py", &["RISUPS", &port.to_string(), out.to_str().unwrap()], "listening");
    wait_for(&node, "the workitem delivered", Duration::from_secs(30), || items().iter().all(|i| i.state == "delivered"));
    for f in [&urgent, &negative] {
        let uid = deid_uid(&study_uid_of(f));
        wait_for(&node, "the study's result", Duration::from_secs(60), || !rt.block_on(db.study_results(&uid)).unwrap().is_empty());
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(items().len(), 1, "one workitem: the urgent study's, none for the negative one");
    let got = jsonl(&out);
    assert_eq!(got.len(), 1, "exactly one N-CREATE: {got:?}");
    let ds = &got[0]["dataset"];
    eprintln!("the UPS attribute list (case000, urgent):\n{}", serde_json::to_string_pretty(ds).unwrap());
    assert_eq!(json_value(ds, "00741200"), "HIGH", "Scheduled Procedure Step Priority");
    assert_eq!(json_value(ds, "00741000"), "SCHEDULED", "Procedure Step State");
    assert_eq!(json_value(ds, "00404041"), "READY", "Input Readiness State");
    assert!(json_value(ds, "00741204").as_str().unwrap().starts_with("AI triage"), "Procedure Step Label");
    // The patient and study as the site knows them, not the node's pseudonyms.
    let study = study_uid_of(&urgent);
    assert_eq!(json_value(ds, "00100020"), attr_text(&urgent, dicom_dictionary_std::tags::PATIENT_ID).as_str());
    assert_eq!(json_value(ds, "0020000D"), study.as_str());
    let request = json_value(ds, "0040A370");
    assert_eq!(json_value(request, "0020000D"), study.as_str());
    let accession = attr_text(&urgent, dicom_dictionary_std::tags::ACCESSION_NUMBER);
    if !accession.is_empty() {
        assert_eq!(json_value(request, "00080050"), accession.as_str());
    }
    let text = serde_json::to_string(ds).unwrap();
    assert!(!text.contains(&deid_uid(&study)), "no de-identified study UID: {text}");
    let input = json_value(ds, "00404021");
    assert_eq!(json_value(input, "0020000D"), study.as_str());
    assert_eq!(json_value(input, "0040E020"), "DICOM");
    // The workitem's UID is the one the outbox file holds; patient data stays out of the log.
    assert!(
        !node.log().contains(&attr_text(&urgent, dicom_dictionary_std::tags::PATIENT_ID))
            || attr_text(&urgent, dicom_dictionary_std::tags::PATIENT_ID).len() < 3
    );
}

#[test]
fn an_urgent_study_s_oru_is_followed_by_an_omi_raising_the_order_to_stat() {
    if !peers_ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let urgent = dir.join("case000.dcm");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ris.jsonl");
    let port = free_port();
    let _ris = python_peer("mllp_receiver.py", &["--port", &port.to_string(), "--out", out.to_str().unwrap(), "--answer", "AA"], "listening");
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", repo().join("models").display())],
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"500ms\"".into(), "retry_max = \"1s\"".into()],
        extra: vec![format!(
            "[hl7]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\nreceiving_application = \"RIS\"\npriority_field = \"OBR-5\"\norder_update = \"omi\"\n"
        )],
        ..Default::default()
    });
    assert!(node.storescu(std::slice::from_ref(&urgent)).status.success(), "{}", node.log());
    wait_for(&node, "two messages", Duration::from_secs(90), || jsonl(&out).len() >= 2);
    std::thread::sleep(Duration::from_secs(1));
    let got = jsonl(&out);
    assert_eq!(got.len(), 2, "the ORU and the OMI, once each: {got:?}");
    let field = |msg: &str, seg: &str, n: usize| -> String {
        let s = msg.split(['\r', '\n']).find(|s| s.starts_with(&format!("{seg}|"))).unwrap_or_else(|| panic!("no {seg} in {msg}"));
        let n = if seg == "MSH" { n - 1 } else { n };
        s.split('|').nth(n).unwrap_or("").to_string()
    };
    let (oru, omi) = (got[0]["message"].as_str().unwrap(), got[1]["message"].as_str().unwrap());
    assert_eq!(field(oru, "MSH", 9), "ORU^R01^ORU_R01", "the ORU first");
    assert_eq!(field(omi, "MSH", 9), "OMI^O23^OMI_O23");
    assert_eq!(field(omi, "MSH", 10), format!("{}O", field(oru, "MSH", 10)));
    assert_eq!(field(omi, "ORC", 1), "XO");
    assert_eq!(field(omi, "TQ1", 9), "S^STAT^HL70485");
    let accession = attr_text(&urgent, dicom_dictionary_std::tags::ACCESSION_NUMBER);
    assert_eq!(field(omi, "OBR", 3), accession, "the real accession");
    assert_eq!(field(omi, "IPC", 3), study_uid_of(&urgent), "the real Study Instance UID");
    assert_eq!(field(omi, "PID", 3).split('^').next().unwrap(), attr_text(&urgent, dicom_dictionary_std::tags::PATIENT_ID));
    eprintln!("the OMI (case000, urgent):\n{}", omi.replace('\r', "\n"));
}
