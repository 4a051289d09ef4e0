//! Webhook notifications through the outbox (`[notify]`), against a real HTTP receiver
//! (`tests/peers/webhook_receiver.py`, the standard library's http.server) and the demo chest
//! model: an urgent study gives exactly one POST, with its idempotency key in the header and the
//! body and the bearer token from the rule's file; the body names no patient, accession or UID;
//! a negative study gives none; a receiver that is down at first gets the notification once it
//! is up, after retries; a retraction on the CLI gives one more POST, `retracted`, with a new key
//! and without the admin's reason.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

struct Receiver(Child);

impl Receiver {
    fn start(port: u16, out: &Path) -> Receiver {
        let mut child = Command::new(python().unwrap())
            .arg(repo().join("tests/peers/webhook_receiver.py"))
            .args(["--port", &port.to_string(), "--out", out.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "listening");
        Receiver(child)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn received(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn attr(file: &Path, tag: dicom_core::Tag) -> String {
    let obj = dicom_object::open_file(file).unwrap();
    obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().trim_end_matches('\0').to_string()).unwrap_or_default()
}

fn wait_until(what: &str, timeout: Duration, node: &Node, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_urgent_study_notifies_the_webhook_once_de_identified_after_it_comes_up() {
    if !peers_ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    // case000 is urgent for the demo nodule model (p ~ 1.0), case001 negative.
    let (urgent, negative) = (dir.join("case000.dcm"), dir.join("case001.dcm"));
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("webhook.jsonl");
    let token_file = work.path().join("oncall.token");
    std::fs::write(&token_file, "s3cret-oncall-token\n").unwrap();
    let port = free_port();
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", repo().join("models").display())],
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"300ms\"".into(), "retry_max = \"600ms\"".into()],
        extra: vec![format!(
            "[notify]\nenabled = true\nlink_base = \"https://triage.example/\"\ntimeout = \"5s\"\n\
             [[notify.webhooks]]\nname = \"oncall\"\nurl = \"http://127.0.0.1:{port}/hooks/SECRETPATH\"\ntoken_file = \"{}\"\n",
            token_file.display()
        )],
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let notices = || rt.block_on(db.outbox_list(None)).unwrap().into_iter().filter(|i| i.kind == "notice").collect::<Vec<_>>();

    // The receiver is down: the notification is queued and retried.
    assert!(node.storescu(&[urgent.clone(), negative.clone()]).status.success(), "{}", node.log());
    wait_until("the notification retried while the webhook is down", Duration::from_secs(60), &node, || {
        notices().iter().any(|i| i.state == "pending" && i.attempts >= 2)
    });
    let failing = notices().remove(0);
    assert_eq!(failing.destination, "webhook:oncall");
    let why = failing.last_error.clone().unwrap_or_default();
    assert!(why.contains("connecting to the webhook"), "{why}");
    assert!(!why.contains("SECRETPATH"), "the URL is never in an error: {why}");

    // Up: delivered, once.
    let _receiver = Receiver::start(port, &out);
    wait_until("the notification delivered", Duration::from_secs(30), &node, || notices().iter().all(|i| i.state == "delivered"));
    // Both studies triaged (the negative one's result saved), and nothing more comes.
    let study_ids: Vec<i64> = [&urgent, &negative]
        .iter()
        .map(|f| {
            let uid = deid_uid(&study_uid_of(f));
            let mut results = Vec::new();
            wait_until("the study's result", Duration::from_secs(60), &node, || {
                results = rt.block_on(db.study_results(&uid)).unwrap();
                !results.is_empty()
            });
            assert_eq!(results[0].priority.map(|p| p.as_str()), Some(if *f == &urgent { "urgent" } else { "negative" }), "the demo cases' priorities");
            results[0].study_id
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let items = notices();
    assert_eq!(items.len(), 1, "one notification: the urgent study's, none for the negative one: {items:?}");
    assert_eq!(items[0].study_id, Some(study_ids[0]));
    assert!(!items[0].reidentify);
    let got = received(&out);
    assert_eq!(got.len(), 1, "exactly one POST: {got:?}");

    // The request: key in the header and the body, the token, the JSON.
    let request = &got[0];
    assert_eq!(request["path"], "/hooks/SECRETPATH");
    let headers = &request["headers"];
    assert_eq!(headers["authorization"], "Bearer s3cret-oncall-token");
    assert_eq!(headers["content-type"], "application/json");
    let body_text = request["body"].as_str().unwrap();
    let body: Value = serde_json::from_str(body_text).unwrap();
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("tn-"), "{id}");
    assert_eq!(headers["idempotency-key"], id);
    assert_eq!(body["rule"], "oncall");
    assert_eq!(body["priority"], "URGENT");
    assert_eq!(body["node_study_id"], study_ids[0]);
    assert_eq!(body["link"], format!("https://triage.example/#/study/{}", study_ids[0]));
    assert_eq!(body["demonstration"], true);
    assert!(body["notice"].as_str().unwrap().contains("not for diagnosis"));
    let finding = &body["findings"][0];
    assert_eq!((finding["label"].as_str(), finding["model"].as_str(), finding["urgent"].as_bool()), (Some("nodule"), Some("demo-nodule"), Some(true)));
    assert!(finding["probability"].as_f64().unwrap() >= 0.99);
    eprintln!("the webhook's body (case000, urgent):\n{body_text}");

    // No patient identifier, no UID (original or de-identified) in the body; no token or URL
    // secret in the log.
    let study_uid = study_uid_of(&urgent);
    for value in [
        attr(&urgent, dicom_dictionary_std::tags::PATIENT_ID),
        attr(&urgent, dicom_dictionary_std::tags::PATIENT_NAME),
        attr(&urgent, dicom_dictionary_std::tags::ACCESSION_NUMBER),
        study_uid.clone(),
        deid_uid(&study_uid),
        attr(&urgent, dicom_dictionary_std::tags::SOP_INSTANCE_UID),
    ] {
        assert!(value.len() < 3 || !body_text.contains(&value), "the body names {value:?}: {body_text}");
    }
    assert!(!body_text.contains("1.2.") && !body_text.contains("2.25."), "no UID at all: {body_text}");
    let log = node.log();
    assert!(!log.contains("s3cret-oncall-token") && !log.contains("SECRETPATH"), "{log}");
    assert!(!log.contains("never kept"), "the receiver's answer is not logged");

    // Retracted by an admin: exactly one more POST, the same rule told the result is withdrawn,
    // a new key, the code but not the admin's words, still "not for diagnosis".
    let reason = "Wrong patient RETRACTREASON";
    let cli = node.cli(&["results", "retract", &study_ids[0].to_string(), "--reason", reason]);
    assert!(cli.status.success(), "{}{}", String::from_utf8_lossy(&cli.stdout), String::from_utf8_lossy(&cli.stderr));
    wait_until("the retraction's notification", Duration::from_secs(30), &node, || received(&out).len() >= 2);
    std::thread::sleep(Duration::from_secs(1));
    let got = received(&out);
    assert_eq!(got.len(), 2, "exactly one more POST: {got:?}");
    let text = got[1]["body"].as_str().unwrap();
    let retracted: Value = serde_json::from_str(text).unwrap();
    assert_eq!((body["status"].as_str(), retracted["status"].as_str()), (Some("active"), Some("retracted")), "{text}");
    assert_eq!((&retracted["rule"], &retracted["node_study_id"], &retracted["retraction"]["code"]), (&body["rule"], &body["node_study_id"], &"113001".into()));
    let key = got[1]["headers"]["idempotency-key"].as_str().unwrap();
    assert!(key != id && retracted["id"] == key, "{key} {id}");
    assert!(retracted["notice"].as_str().unwrap().contains("not for diagnosis"));
    assert!(!text.contains("RETRACTREASON") && !text.contains("1.2.") && !text.contains("2.25."), "{text}");
    for value in [attr(&urgent, dicom_dictionary_std::tags::PATIENT_ID), attr(&urgent, dicom_dictionary_std::tags::PATIENT_NAME)] {
        assert!(value.len() < 3 || !text.contains(&value), "the body names {value:?}: {text}");
    }
}
