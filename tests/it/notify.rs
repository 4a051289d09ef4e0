//! Webhook notifications through the outbox (`[notify]`), against a real HTTP receiver
//! (`tests/peers/webhook_receiver.py`, the standard library's http.server) and the demo chest
//! model: an urgent study gives exactly one POST, with its idempotency key in the header and the
//! body and the bearer token from the rule's file; the body names no patient, accession or UID;
//! a negative study gives none; a receiver that is down at first gets the notification once it
//! is up, after retries; a retraction on the CLI gives one more POST, `retracted`, with a new key
//! and without the admin's reason.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

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
    wait_for(&node, "the notification retried while the webhook is down", Duration::from_secs(60), || {
        notices().iter().any(|i| i.state == "pending" && i.attempts >= 2)
    });
    let failing = notices().remove(0);
    assert_eq!(failing.destination, "webhook:oncall");
    let why = failing.last_error.clone().unwrap_or_default();
    assert!(why.contains("connecting to the webhook"), "{why}");
    assert!(!why.contains("SECRETPATH"), "the URL is never in an error: {why}");

    // Up: delivered, once.
    let _receiver = webhook_receiver(port, &out);
    wait_for(&node, "the notification delivered", Duration::from_secs(30), || notices().iter().all(|i| i.state == "delivered"));
    // Both studies triaged (the negative one's result saved), and nothing more comes.
    let study_ids: Vec<i64> = [&urgent, &negative]
        .iter()
        .map(|f| {
            let uid = deid_uid(&study_uid_of(f));
            let mut results = Vec::new();
            wait_for(&node, "the study's result", Duration::from_secs(60), || {
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
    let got = jsonl(&out);
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
        attr_text(&urgent, dicom_dictionary_std::tags::PATIENT_ID),
        attr_text(&urgent, dicom_dictionary_std::tags::PATIENT_NAME),
        attr_text(&urgent, dicom_dictionary_std::tags::ACCESSION_NUMBER),
        study_uid.clone(),
        deid_uid(&study_uid),
        attr_text(&urgent, dicom_dictionary_std::tags::SOP_INSTANCE_UID),
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
    wait_for(&node, "the retraction's notification", Duration::from_secs(30), || jsonl(&out).len() >= 2);
    std::thread::sleep(Duration::from_secs(1));
    let got = jsonl(&out);
    assert_eq!(got.len(), 2, "exactly one more POST: {got:?}");
    let text = got[1]["body"].as_str().unwrap();
    let retracted: Value = serde_json::from_str(text).unwrap();
    assert_eq!((body["status"].as_str(), retracted["status"].as_str()), (Some("active"), Some("retracted")), "{text}");
    assert_eq!((&retracted["rule"], &retracted["node_study_id"], &retracted["retraction"]["code"]), (&body["rule"], &body["node_study_id"], &"113001".into()));
    let key = got[1]["headers"]["idempotency-key"].as_str().unwrap();
    assert!(key != id && retracted["id"] == key, "{key} {id}");
    assert!(retracted["notice"].as_str().unwrap().contains("not for diagnosis"));
    assert!(!text.contains("RETRACTREASON") && !text.contains("1.2.") && !text.contains("2.25."), "{text}");
    for value in [attr_text(&urgent, dicom_dictionary_std::tags::PATIENT_ID), attr_text(&urgent, dicom_dictionary_std::tags::PATIENT_NAME)] {
        assert!(value.len() < 3 || !text.contains(&value), "the body names {value:?}: {text}");
    }
}

/// `tests/peers/webhook_receiver.py` on `port`, appending each POST to `out`.
fn webhook_receiver(port: u16, out: &Path) -> Killed {
    python_peer("webhook_receiver.py", &["--port", &port.to_string(), "--out", out.to_str().unwrap()], "listening")
}

/// `tests/peers/smtp_receiver.py` (aiosmtpd), plain SMTP on loopback: each message as
/// `<n>.json` (envelope and parsed message) in `out`.
fn mail_receiver(out: &Path) -> (Killed, u16) {
    let mut child = Command::new(python().unwrap())
        .arg(repo().join("tests/peers/smtp_receiver.py"))
        .args(["--host", "127.0.0.1", "--port", "0", "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("ready port=").unwrap_or_else(|| panic!("{line}")).parse().unwrap();
    (Killed(child), port)
}

fn mails(out: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(out).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files.iter().filter_map(|p| std::fs::read_to_string(p).ok()).filter_map(|t| serde_json::from_str(&t).ok()).collect()
}

/// The chain of the brief: the on-call webhook first; unacknowledged after `escalate_after`, an
/// e-mail to the backup (a real SMTP server); a study whose notification is acknowledged by its
/// one-time link in time escalates to nobody. The acknowledgement is audited, on the worklist
/// row and at /metrics; a GET of the link changes nothing.
#[test]
fn an_unacknowledged_notification_escalates_to_e_mail_and_an_acknowledged_one_does_not() {
    if !peers_ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    // Urgent and positive for the demo nodule model (the on-call rule takes both).
    let (first, second) = (dir.join("case000.dcm"), dir.join("case004.dcm"));
    let work = tempfile::tempdir().unwrap();
    let hooks = work.path().join("webhook.jsonl");
    let mail_dir = work.path().join("mail");
    std::fs::create_dir_all(&mail_dir).unwrap();
    let hook_port = free_port();
    let _receiver = webhook_receiver(hook_port, &hooks);
    // A chat service's webhook: its own body shape (a template), chest radiographs only.
    let (chat_port, chat) = (free_port(), work.path().join("chat.jsonl"));
    let _chat = webhook_receiver(chat_port, &chat);
    let (_mail, smtp_port) = mail_receiver(&mail_dir);
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", repo().join("models").display())],
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"300ms\"".into(), "retry_max = \"600ms\"".into()],
        extra: vec![format!(
            "[notify]\nenabled = true\nlink_base = \"https://triage.example/\"\ntimeout = \"5s\"\n\
             [[notify.rules]]\nname = \"oncall\"\nurl = \"http://127.0.0.1:{hook_port}/hooks\"\npriorities = [\"urgent\", \"positive\"]\nescalate_after = \"4s\"\nescalate_to = \"backup\"\npreview = true\n\
             [[notify.rules]]\nname = \"backup\"\nemail = [\"neuro.backup@hospital.example\"]\npriorities = []\npreview = true\n\
             [[notify.rules]]\nname = \"chat\"\nurl = \"http://127.0.0.1:{chat_port}/chat\"\nmodalities = [\"CR\"]\ntemplate = '{{\"text\": \"{{summary}}\"}}'\n\
             [notify.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"plain\"\nfrom = \"triage@hospital.example\"\n"
        )],
        ..Default::default()
    });
    let http = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // The links name the site's address (a proxy in front); the test reaches the node directly.
    let base = "https://triage.example".to_string();
    let node_base = format!("http://127.0.0.1:{}", node.http_port.unwrap());
    let direct = |link: &str| link.replace(&base, &node_base);

    // The first study: the webhook is told; nobody acknowledges; the backup gets an e-mail.
    assert!(node.storescu(std::slice::from_ref(&first)).status.success(), "{}", node.log());
    wait_for(&node, "the first webhook POST", Duration::from_secs(60), || jsonl(&hooks).len() == 1);
    let notice: Value = serde_json::from_str(jsonl(&hooks)[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!((notice["rule"].as_str(), notice["level"].as_u64()), (Some("oncall"), Some(0)));
    // The preview: a small PNG of the heatmap, captioned "not for diagnosis".
    assert_eq!(notice["preview"]["media_type"], "image/png");
    assert!(notice["preview"]["caption"].as_str().unwrap().contains("not for diagnosis"));
    assert!(notice["preview"]["data_base64"].as_str().unwrap().starts_with("iVBORw0KGgo"), "a PNG");
    let link = notice["acknowledge"].as_str().unwrap().to_string();
    assert!(link.starts_with(&format!("{base}/ack/")) && link.len() == base.len() + 5 + 64, "{link}");
    wait_for(&node, "the escalation e-mail", Duration::from_secs(30), || mails(&mail_dir).len() == 1);
    let mail = &mails(&mail_dir)[0];
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["neuro.backup@hospital.example"]), "{mail}");
    let subject = mail["headers"]["subject"].as_str().unwrap_or_default().to_string();
    let text = mail["text"].as_str().unwrap_or_default().to_string();
    let mail_text = mail.to_string();
    assert!(subject.starts_with("[URGENT] ESCALATED (1): AI triage"), "{mail}");
    assert!(text.contains("nobody acknowledged the notification to \"oncall\""), "{mail}");
    assert!(text.contains("not for diagnosis") && text.contains(&format!("Acknowledge (stops escalation): {base}/ack/")), "{mail}");
    let attached = &mail["attachments"][0];
    assert_eq!((attached["filename"].as_str(), attached["content_type"].as_str()), (Some("preview.png"), Some("image/png")), "{mail}");
    let up_id = notice_id_in(&text);
    assert_eq!(mail["headers"]["message_id"], format!("<{up_id}@hospital.example>"), "the stable id, for deduplication");
    assert!(!up_id.is_empty() && up_id != notice["id"].as_str().unwrap(), "a new id for the escalation: {mail}");
    eprintln!("the escalation e-mail: {subject}\n{text}");
    for value in [
        attr_text(&first, dicom_dictionary_std::tags::PATIENT_ID),
        attr_text(&first, dicom_dictionary_std::tags::PATIENT_NAME),
        attr_text(&first, dicom_dictionary_std::tags::ACCESSION_NUMBER),
    ] {
        assert!(value.len() < 3 || !mail_text.contains(&value), "the e-mail names {value:?}");
    }
    assert!(!mail_text.contains("1.2.") && !mail_text.contains("2.25."), "no UID: {mail}");

    // The chat webhook got the urgent chest study in its own shape, the same news as text.
    wait_for(&node, "the chat POST", Duration::from_secs(30), || !jsonl(&chat).is_empty());
    let said: Value = serde_json::from_str(jsonl(&chat)[0]["body"].as_str().unwrap()).unwrap();
    let text = said["text"].as_str().unwrap();
    assert!(text.starts_with("[URGENT] AI triage: Nodule - study ") && text.contains("| acknowledge: https://triage.example/ack/"), "{said}");
    assert!(text.ends_with("not for diagnosis") && said.as_object().unwrap().len() == 1, "{said}");
    let chat_key = jsonl(&chat)[0]["headers"]["idempotency-key"].as_str().unwrap().to_string();
    assert!(chat_key.starts_with("tn-") && chat_key != notice["id"].as_str().unwrap(), "its own stable id: {chat_key}");

    // The second study: its notification is acknowledged by its link within the deadline.
    assert!(node.storescu(std::slice::from_ref(&second)).status.success(), "{}", node.log());
    wait_for(&node, "the second webhook POST", Duration::from_secs(60), || jsonl(&hooks).len() == 2);
    let notice2: Value = serde_json::from_str(jsonl(&hooks)[1]["body"].as_str().unwrap()).unwrap();
    let link2 = notice2["acknowledge"].as_str().unwrap().to_string();
    // Opening the link (a mail scanner would) changes nothing; the button does.
    let page = http.get(direct(&link2)).send().unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let page = page.text().unwrap();
    assert!(page.contains("<form method=\"post\">") && page.contains("POSITIVE"), "{page}");
    let pressed = http.post(direct(&link2)).send().unwrap();
    assert_eq!(pressed.status(), 200);
    assert!(pressed.text().unwrap().contains("<h1>Acknowledged</h1>"));
    let again = http.post(direct(&link2)).send().unwrap().text().unwrap();
    assert!(again.contains("Already acknowledged") && again.contains("by link"), "{again}");
    assert_eq!(http.get(format!("{node_base}/ack/{}", "0".repeat(64))).send().unwrap().status(), 404, "an unknown token");
    assert_eq!(http.get(format!("{node_base}/ack/x")).send().unwrap().status(), 404, "not a token");
    // Past its deadline: nobody else is called for it.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(mails(&mail_dir).len(), 1, "no escalation of an acknowledged notification");
    assert_eq!(jsonl(&hooks).len(), 2);

    // The first chain can still be acknowledged by a reader (the API), after its escalation.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let study1 = rt.block_on(db.study_results(&deid_uid(&study_uid_of(&first)))).unwrap()[0].study_id;
    let study2 = rt.block_on(db.study_results(&deid_uid(&study_uid_of(&second)))).unwrap()[0].study_id;
    let ack = http.post(format!("{node_base}/api/studies/{study1}/acknowledge")).bearer_auth(READER_TOKEN).send().unwrap();
    assert_eq!(ack.status(), 200);
    let ack: Value = ack.json().unwrap();
    assert_eq!((ack["outcome"].as_str(), ack["acknowledged_by"].as_str()), (Some("acknowledged"), Some("dr.grey")), "{ack}");
    let study: Value = http.get(format!("{node_base}/api/studies/{study1}")).bearer_auth(READER_TOKEN).send().unwrap().json().unwrap();
    let chain = study["notifications"].as_array().unwrap();
    let mut rules: Vec<(&str, i64)> = chain.iter().map(|n| (n["rule"].as_str().unwrap(), n["level"].as_i64().unwrap())).collect();
    rules.sort();
    assert_eq!(rules, [("backup", 1), ("chat", 0), ("oncall", 0)], "the webhooks and the escalation: {study}");
    assert!(chain.iter().all(|n| n["delivered_at_ms"].is_i64() && n["acknowledged_by"] == "dr.grey"), "{study}");
    let worklist: Value = http.get(format!("{node_base}/api/worklist")).bearer_auth(READER_TOKEN).send().unwrap().json().unwrap();
    let rows = worklist["items"].as_array().unwrap();
    let row = |id: i64| rows.iter().find(|r| r["study_id"] == id).unwrap()["notification"].clone();
    assert_eq!(row(study2)["acknowledged_by"], "link");
    assert!(row(study2)["time_to_notification_ms"].as_i64().unwrap() <= row(study2)["time_to_acknowledgement_ms"].as_i64().unwrap());
    assert_eq!(row(study1)["acknowledged_by"], "dr.grey");

    // Audited (who, how, which rule), counted, with no patient data.
    let audit = String::from_utf8_lossy(&node.cli(&["audit", "list"]).stdout).into_owned();
    assert_eq!(audit.lines().filter(|l| l.contains("acknowledge")).count(), 2, "{audit}");
    assert!(audit.contains(&format!("study:{study2}")) && audit.contains("\"via\":\"link\""), "{audit}");
    let metrics = http.get(format!("{node_base}/metrics")).send().unwrap().text().unwrap();
    for line in [
        "triage_notifications_acknowledged_total{via=\"link\"} 1",
        "triage_notifications_acknowledged_total{via=\"api\"} 1",
        "triage_notifications_escalated_total{rule=\"oncall\"} 1",
        "triage_time_to_notification_seconds_count{priority=\"URGENT\"} 1",
        "triage_time_to_notification_seconds_count{priority=\"POSITIVE\"} 1",
        "triage_time_to_acknowledgement_seconds_count{priority=\"URGENT\"} 1",
        "triage_time_to_acknowledgement_seconds_count{priority=\"POSITIVE\"} 1",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}");
    }
    let log = node.log();
    assert!(!log.contains("neuro.backup") && !log.contains(&link2[link2.len() - 64..]), "no address or token in the log");
}

/// The `Notification id: tn-...` line of an e-mail.
fn notice_id_in(text: &str) -> String {
    text.split("Notification id: ").nth(1).map(|s| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect()).unwrap_or_default()
}

/// Score drift told once (`[[notify.rules]] drift = true`): two packages of the demo network
/// score the same eight demo cases; `demo-nodule` against its validation scores (the demo cases
/// drift from them), `demo-steady` against the cases' own scores (from `triage-node infer`, the
/// node's pipeline: stable). The drift rule gets exactly one POST, of the drifted model, with its
/// figures and no study or patient; the stable model raises none; later checks add nothing.
#[test]
fn a_drifted_model_is_told_once_and_a_stable_one_not_at_all() {
    if !peers_ready() {
        return;
    }
    let Some((_, cases)) = demo_cases() else { return };
    let files: Vec<std::path::PathBuf> = cases.into_iter().take(8).map(|(f, _)| f).collect();
    let work = tempfile::tempdir().unwrap();
    let models = work.path().join("models");
    let (drifting, steady) = (models.join("demo-nodule"), models.join("demo-steady"));
    for dir in [&drifting, &steady] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(repo().join("models/demo-nodule/model.pt"), dir.join("model.pt")).unwrap();
    }
    for f in ["model.toml", "reference.json"] {
        std::fs::copy(repo().join("models/demo-nodule").join(f), drifting.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(drifting.join("model.toml")).unwrap();
    std::fs::write(steady.join("model.toml"), manifest.replace("name = \"demo-nodule\"", "name = \"demo-steady\"")).unwrap();
    // The steady reference: the cases' own probabilities as the node keeps them (four
    // decimals, f32), each a hair lower (so that a live score falls in its own decile bin
    // whatever its last bits), ten times over.
    let out = Command::new(env!("CARGO_BIN_EXE_triage-node"))
        .env("TRIAGE__INFERENCE__MODELS_DIR", repo().join("models"))
        .env("TRIAGE__INFERENCE__DEVICE", "cpu")
        .arg("infer")
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let own: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["results"][0]["findings"][0]["probability"].as_f64().unwrap())
        .collect();
    assert_eq!(own.len(), 8);
    let kept = |p: f64| ((p * 1e4).round() / 1e4) as f32 as f64;
    let reference: Vec<f64> = (0..10).flat_map(|_| own.iter().map(|&p| (kept(p) - 1e-6).max(0.0))).collect();
    std::fs::write(steady.join("reference.json"), serde_json::json!({ "source": "the demo cases", "scores": { "nodule": reference } }).to_string()).unwrap();

    let hooks = work.path().join("drift.jsonl");
    let port = free_port();
    let _receiver = webhook_receiver(port, &hooks);
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", models.display())],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        extra: vec![
            "[drift]\nwindow = 8\nmin_studies = 8\ncheck_interval = \"300ms\"".into(),
            format!(
                "[notify]\nenabled = true\nlink_base = \"https://triage.example/\"\ntimeout = \"5s\"\n\
                 [[notify.rules]]\nname = \"models\"\nurl = \"http://127.0.0.1:{port}/drift\"\npriorities = []\ndrift = true\n"
            ),
        ],
        ..Default::default()
    });
    assert!(node.storescu(&files).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uids: Vec<String> = files.iter().map(|f| deid_uid(&study_uid_of(f))).collect();
    wait_results(&rt, &db, &uids, Duration::from_secs(120), &node);
    wait_for(&node, "the drift notification", Duration::from_secs(30), || !jsonl(&hooks).is_empty());
    // Many more checks (every 300 ms) of the same window: nothing more.
    std::thread::sleep(Duration::from_secs(3));
    let got = jsonl(&hooks);
    assert_eq!(got.len(), 1, "exactly one POST, of the drifted model: {got:?}");
    let text = got[0]["body"].as_str().unwrap();
    let body: Value = serde_json::from_str(text).unwrap();
    eprintln!("the drift notice:\n{text}");
    assert_eq!(got[0]["headers"]["idempotency-key"], body["id"]);
    assert_eq!(
        (body["event"].as_str(), body["rule"].as_str(), body["model"].as_str(), body["model_version"].as_str(), body["label"].as_str()),
        (Some("drift"), Some("models"), Some("demo-nodule"), Some("1.0.0"), Some("nodule"))
    );
    assert_eq!(
        (body["window"].as_u64(), body["live_studies"].as_u64(), body["threshold"].as_f64(), body["crossing"].as_i64()),
        (Some(8), Some(8), Some(0.25), Some(1))
    );
    assert_eq!(body["link"], "https://triage.example/#/performance");
    assert!(body.get("scanner").is_none(), "one scanner: the figures of every study");
    // The PSI told is the one /api/drift gives; the stable copy's is below 0.1.
    let drift = rt
        .block_on(
            triage_node::admin::drift::Watch::from_models_dir(&models, triage_node::config::DriftSettings { window: 8, min_studies: 8, ..Default::default() })
                .unwrap()
                .check(&db),
        )
        .unwrap();
    let of = |model: &str| drift.iter().find(|d| d.model == model && d.scanner.is_none()).unwrap().clone();
    let (nodule, stable) = (of("demo-nodule"), of("demo-steady"));
    assert!(nodule.psi.unwrap() >= 0.25 && (body["psi"].as_f64().unwrap() - nodule.psi.unwrap()).abs() < 1e-9, "{nodule:?} {body}");
    assert!(stable.psi.unwrap() < 0.1, "the steady copy is stable: {stable:?}");
    // Names and figures only: no study, no UID.
    assert!(body.get("node_study_id").is_none() && !text.contains("1.2.") && !text.contains("2.25."), "{text}");
    // The crossing is recorded once; the stable model has no row.
    let alerts = rt.block_on(db.drift_alerts()).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!((alerts[0].key.model.as_str(), alerts[0].drifted, alerts[0].crossings), ("demo-nodule", true, 1));
    let notices: Vec<_> = rt.block_on(db.outbox_list(None)).unwrap().into_iter().filter(|i| i.kind == "notice").collect();
    assert_eq!((notices.len(), notices[0].study_id, notices[0].state.as_str()), (1, None, "delivered"), "{notices:?}");
}

/// The input histogram (ten shares of 0.1 over 0..1) of a model input written by the training
/// script's `model-input` (f32 LE; demo-nodule: one channel, mean 0, std 1: the windowed image).
fn script_histogram(python: &Path, file: &Path, out: &Path) -> Vec<f64> {
    let run = Command::new(python).arg(repo().join("scripts/train-demo-model.py")).arg("model-input").arg(file).arg(out).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let values: Vec<f32> = std::fs::read(out).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let mut counts = [0usize; 10];
    for v in &values {
        counts[((v * 10.0).floor().max(0.0) as usize).min(9)] += 1;
    }
    counts.iter().map(|&c| c as f64 / values.len() as f64).collect()
}

/// Input drift (issue 33): demo-nodule against a reference whose `inputs` are the eight demo
/// cases' own, computed by the training script's pipeline (`model-input`, not the node's code):
/// the cases themselves are stable (PSI below 0.1); the same cases with another VOI window
/// (Window Center 15000 -> 10000, rewritten with pydicom, new UIDs) drift: a warning in /readyz
/// and `status`, `triage_model_input_psi` at /metrics, and one drift notice naming the
/// statistic, once. The reference has no scores (no score drift) and no spacing or thickness
/// (the cases have none): those are `no_reference`.
#[test]
fn a_shifted_window_raises_input_drift_and_the_reference_cases_do_not() {
    if !peers_ready() {
        return;
    }
    let Some((_, cases)) = demo_cases() else { return };
    let python = python().unwrap();
    let files: Vec<std::path::PathBuf> = cases.into_iter().take(8).map(|(f, _)| f).collect();
    let work = tempfile::tempdir().unwrap();
    let package = work.path().join("models/demo-nodule");
    std::fs::create_dir_all(&package).unwrap();
    for f in ["model.pt", "model.toml"] {
        std::fs::copy(repo().join("models/demo-nodule").join(f), package.join(f)).unwrap();
    }
    let histograms: Vec<Vec<f64>> = files.iter().map(|f| script_histogram(&python, f, &work.path().join("input.f32"))).collect();
    let reference = serde_json::json!({ "source": "the demo cases", "scores": {}, "inputs": { "histogram": histograms } });
    std::fs::write(package.join("reference.json"), reference.to_string()).unwrap();
    // The same cases in another window, as new studies.
    let shifted_dir = work.path().join("shifted");
    std::fs::create_dir_all(&shifted_dir).unwrap();
    let rewrite = Command::new(&python)
        .arg("-c")
        .arg(
            "import sys, pathlib, pydicom\nfrom pydicom.uid import generate_uid\nout = pathlib.Path(sys.argv[1])\n\
             for f in sys.argv[2:]:\n    ds = pydicom.dcmread(f)\n    ds.WindowCenter = 10000\n    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()\n    \
             ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()\n    ds.save_as(out / pathlib.Path(f).name, enforce_file_format=True)\n",
        )
        .arg(&shifted_dir)
        .args(&files)
        .output()
        .unwrap();
    assert!(rewrite.status.success(), "{}", String::from_utf8_lossy(&rewrite.stderr));
    let shifted: Vec<std::path::PathBuf> = files.iter().map(|f| shifted_dir.join(f.file_name().unwrap())).collect();

    let hooks = work.path().join("drift.jsonl");
    let port = free_port();
    let _receiver = webhook_receiver(port, &hooks);
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", work.path().join("models").display())],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        extra: vec![
            "[drift]\nwindow = 8\nmin_studies = 8\ncheck_interval = \"300ms\"".into(),
            format!("[notify]\nenabled = true\ntimeout = \"5s\"\n[[notify.rules]]\nname = \"models\"\nurl = \"http://127.0.0.1:{port}/drift\"\npriorities = []\ndrift = true\n"),
        ],
        ..Default::default()
    });
    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{}", node.http_port.unwrap());
    let drift = || -> Vec<Value> { http.get(format!("{base}/api/drift")).bearer_auth(ADMIN_TOKEN).send().unwrap().json().unwrap() };
    let intensity = |all: &[Value]| all.iter().find(|d| d["feature"] == "intensity" && d["scanner"].is_null() && d["group"].is_null()).cloned().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());

    // The reference cases themselves: stable.
    assert!(node.storescu(&files).status.success(), "{}", node.log());
    let uids: Vec<String> = files.iter().map(|f| deid_uid(&study_uid_of(f))).collect();
    wait_results(&rt, &db, &uids, Duration::from_secs(120), &node);
    let all = drift();
    let stable = intensity(&all);
    eprintln!("the reference cases: {stable}");
    assert_eq!(
        (stable["state"].as_str(), stable["live_studies"].as_u64(), stable["reference_studies"].as_u64()),
        (Some("stable"), Some(8), Some(8)),
        "{all:?}"
    );
    assert!(stable["psi"].as_f64().unwrap() < 0.1, "{stable}");
    for feature in ["pixel_spacing", "slice_thickness"] {
        let d = all.iter().find(|d| d["feature"] == feature).unwrap_or_else(|| panic!("{feature}: {all:?}"));
        assert_eq!(d["state"], "no_reference", "{d}");
    }
    assert_eq!(all.iter().find(|d| d["feature"] == "score").unwrap()["state"], "no_reference");
    let ready: Value = http.get(format!("{base}/readyz")).bearer_auth(ADMIN_TOKEN).send().unwrap().json().unwrap();
    assert_eq!(ready["warnings"], serde_json::json!([]), "{ready}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(jsonl(&hooks).is_empty(), "no notice while stable");

    // The same cases in another window: the newest eight studies are all shifted.
    assert!(node.storescu(&shifted).status.success(), "{}", node.log());
    let uids: Vec<String> = shifted.iter().map(|f| deid_uid(&study_uid_of(f))).collect();
    wait_results(&rt, &db, &uids, Duration::from_secs(120), &node);
    let drifted = intensity(&drift());
    eprintln!("the shifted window: {drifted}");
    assert_eq!((drifted["state"].as_str(), drifted["live_studies"].as_u64()), (Some("drifted"), Some(8)), "{drifted}");
    assert!(drifted["psi"].as_f64().unwrap() >= 0.25 && drifted.get("label").is_none(), "{drifted}");
    let ready: Value = http.get(format!("{base}/readyz")).bearer_auth(ADMIN_TOKEN).send().unwrap().json().unwrap();
    assert_eq!(ready["ready"], true, "a warning, not a reason: {ready}");
    let warning = "model demo-nodule 1.0.0 input intensity histogram: input statistics drifted";
    assert!(ready["warnings"][0].as_str().unwrap().starts_with(warning), "{ready}");
    let status = String::from_utf8_lossy(&node.cli(&["status"]).stdout).into_owned();
    assert!(status.contains(&format!("WARNING: {warning}")), "{status}");
    let metrics = http.get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    let gauge =
        metrics.lines().find(|l| l.starts_with("triage_model_input_psi{") && l.contains("feature=\"intensity\"")).unwrap_or_else(|| panic!("{metrics}"));
    assert!(gauge.contains("model=\"demo-nodule\"") && gauge.contains("version=\"1.0.0\""), "{gauge}");
    // One notice, naming the statistic, once.
    wait_for(&node, "the input drift notification", Duration::from_secs(30), || !jsonl(&hooks).is_empty());
    std::thread::sleep(Duration::from_secs(2));
    let got = jsonl(&hooks);
    assert_eq!(got.len(), 1, "{got:?}");
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (body["event"].as_str(), body["model"].as_str(), body["feature"].as_str(), body["label"].as_str()),
        (Some("drift"), Some("demo-nodule"), Some("intensity"), Some(""))
    );
    assert_eq!((body["live_studies"].as_u64(), body["reference_studies"].as_u64(), body["crossing"].as_i64()), (Some(8), Some(8), Some(1)));
    let alerts = rt.block_on(db.drift_alerts()).unwrap();
    assert_eq!(alerts.iter().map(|a| (a.key.label.as_str(), a.drifted)).collect::<Vec<_>>(), [("input:intensity", true)]);
}
