//! The IHE ATNA audit export (`delivery::atna`) against a real syslog server: rsyslog
//! (imtcp over gtls, RFC 5425) started unprivileged in the foreground with its own config and a
//! throwaway CA and certificate made with `openssl`; it writes each message it receives to a
//! file. Each message is checked by xmlschema against `tests/atna/audit-message.xsd` (the
//! PS3.15 A.5.1 subset the node uses).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use triage_node::audit::atna::{message, Instance, Patient, Source};
use triage_node::audit::{self, Entry, Event};

use crate::common::*;

fn ready() -> bool {
    let Some(py) = python() else { return false };
    let xmlschema = Command::new(py).args(["-c", "import xmlschema"]).output().map(|o| o.status.success()).unwrap_or(false);
    require("xmlschema in .venv", xmlschema) && have_tool("openssl")
}

fn rsyslogd() -> Option<PathBuf> {
    let path = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"].into_iter().map(PathBuf::from).find(|p| p.exists());
    let gtls = Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists() || Path::new("/usr/lib/rsyslog/lmnsd_gtls.so").exists();
    (require("rsyslogd (Debian rsyslog)", path.is_some()) && require("rsyslog-gnutls", gtls)).then(|| path.unwrap())
}

/// Validate each XML message; one verdict per message (None: valid).
fn schema_errors(messages: &[String]) -> Vec<Option<String>> {
    let mut child = Command::new(python().unwrap()).arg(repo().join("tests/atna/validate.py")).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for m in messages {
        writeln!(stdin, "{m}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let verdicts: Vec<Option<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (!v["ok"].as_bool().unwrap()).then(|| v["error"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    assert_eq!(verdicts.len(), messages.len(), "one verdict per message");
    verdicts
}

struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16) -> Rsyslog {
        let d = dir.display();
        let conf = format!(
            r#"global(workDirectory="{d}/work" maxMessageSize="64k"
  DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{d}/ca.crt"
  DefaultNetstreamDriverCertFile="{d}/server.crt" DefaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="raw" type="string" string="%app-name% %msgid% %pri% %rawmsg%\n")
action(type="omfile" file="{d}/received.log" template="raw" flushOnTXEnd="on" asyncWriting="off")
"#
        );
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let mut rs = Rsyslog { child: None, dir: dir.to_path_buf(), port };
        rs.launch();
        rs
    }

    fn launch(&mut self) {
        let (conf, pid) = (self.dir.join("rsyslog.conf"), self.dir.join("rsyslog.pid"));
        let child = Command::new(rsyslogd().unwrap())
            .args(["-n", "-f", conf.to_str().unwrap(), "-i", pid.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (rsyslog writes what it has received, then closes its sessions) and wait.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// What was received (rsyslog's parse: app-name, msgid, pri; and the raw message), in order.
    fn received(&self) -> Vec<Received> {
        std::fs::read_to_string(self.dir.join("received.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                let raw = f[3].to_string();
                let xml = raw.find("<AuditMessage").map(|i| raw[i..].to_string()).unwrap_or_default();
                let seq = raw.split_once("[meta sequenceId=\"").and_then(|(_, s)| s.split_once('"')).and_then(|(n, _)| n.parse().ok()).unwrap_or(-1);
                Received { app: f[0].into(), msgid: f[1].into(), pri: f[2].into(), seq, raw, xml }
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug)]
struct Received {
    app: String,
    msgid: String,
    pri: String,
    seq: i64,
    raw: String,
    xml: String,
}

/// Every event kind maps to a message the schema accepts, with the event's DCM code.
#[test]
fn every_event_is_a_schema_valid_dicom_audit_message() {
    if !ready() {
        return;
    }
    let events = [
        (r#"{"instance_id":7,"calling_ae":"CT1","received_at_ms":1,"method":{},"pixels":"kept"}"#, "deidentify", "instance:2.25.1", "110104"),
        (r#"{"export":true,"method":null,"pixels":"kept"}"#, "deidentify", "instance:2.25.9", "110106"),
        (r#"{"purpose":"outbox","study":"2.25.3"}"#, "reidentify", "instance:2.25.2", "110110"),
        (r#"{"purpose":"query index","objects":3,"map_records":2}"#, "reidentify", "query-index", "110110"),
        (r#"{"purpose":"audit export","objects":200,"map_records":5}"#, "reidentify", "audit-export", "110110"),
        (r#"{"host":"10.0.0.1","port":104,"role":"pacs","enabled":true,"tls":true,"tls_identity":null}"#, "ae_add", "PACS", "110113"),
        (
            r#"{"user":"cli:ann","version":"2","replaces":"old","replaces_version":"1","retired_to":".retired/old-1-5"}"#,
            "model_promote",
            "model:next",
            "110113",
        ),
        ("{}", "ae_remove", "PACS", "110113"),
        (r#"{"user":"it","success":false,"status":null}"#, "ae_echo", "PACS", "110113"),
        (r#"{"user":"dr.grey","studies":[1,2],"opened":2}"#, "worklist_view", "user:dr.grey", "110110"),
        (r#"{"action":"claim","reader":"dr.grey","from":"unread","to":"claimed"}"#, "reading", "study:42", "110110"),
        (r#"{"model":"STUDY","level":"STUDY","matches":1,"cancelled":false}"#, "query", "ae:VIEWER", "110112"),
        (
            r#"{"operation":"C-MOVE","destination":"PACS","model":"STUDY","level":"STUDY","objects":1,"sop_instances":["2.25.4"]}"#,
            "retrieve",
            "ae:VIEWER",
            "110104",
        ),
        (r#"{"user":"admin","reason":"wrong <model>","code":"113037","note":"2.25.5","objects":["2.25.6"],"hl7":true}"#, "retract", "study:42", "110103"),
        (r#"{"user":"link","via":"link","notification":"tn-1","rule":"oncall","after_ms":9}"#, "acknowledge", "study:42", "110110"),
        (
            r#"{"user":"dr.grey","model":"m","model_version":"1","label":"nodule","verdict":"agree","corrected_label":null,"edited":false}"#,
            "feedback",
            "study:42",
            "110110",
        ),
        (r#"{"outcome":"login","via":"oidc","role":"reader"}"#, "user_auth", "user:dr.grey", "110114"),
        (r#"{"outcome":"refused","via":"oidc","reason":"expired"}"#, "user_auth", "user:unknown", "110114"),
        (r#"{"action":"start","version":"1.0.0"}"#, "application", "node", "110100"),
        (r#"{"action":"stop","version":"1.0.0"}"#, "application", "node", "110100"),
        ("{}", "something_newer", "x", "110113"),
    ];
    let source = Source { node_id: "node-a.example".into(), ae_title: "TRIAGE".into() };
    // Every message also names a patient, as a site exporting identity would send it.
    let patient = Patient { id: "PID-1".into(), issuer: Some("HOSPITAL".into()), name: Some("Doe^Jane".into()) };
    let found = Instance { study_uid: Some("2.25.100".into()), sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.2".into()), patients: vec![patient] };
    let mut seen = std::collections::BTreeSet::new();
    let messages: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(i, (details, event, subject, code))| {
            if let Some(e) = Event::parse(event, subject, details) {
                seen.insert(e.name());
            }
            let entry = Entry {
                seq: i as i64 + 1,
                at_ms: 1_796_000_000_000,
                event: event.to_string(),
                subject: subject.to_string(),
                details: details.to_string(),
                prev_hash: audit::GENESIS.into(),
                hash: String::new(),
                keyed: true,
            };
            let xml = message(&entry, &source, &found);
            assert!(xml.contains(&format!(r#"<EventID csd-code="{code}" codeSystemName="DCM""#)), "{event}: {xml}");
            xml
        })
        .collect();
    assert_eq!(seen.len(), Event::NAMES.len(), "every event kind is covered");
    for (m, verdict) in messages.iter().zip(schema_errors(&messages)) {
        assert_eq!(verdict, None, "{m}");
    }
    // And the schema refuses what it should: a message without its audit source.
    let broken = messages[0].replace("<AuditSourceIdentification", "<Nope").replace("</AuditSourceIdentification>", "</Nope>");
    assert!(schema_errors(&[broken])[0].is_some());
}

/// Store a study, register, echo and remove AEs: the messages reach rsyslog over TLS in order,
/// framed as RFC 5424 with the IHE MSGID, valid against the schema, with no patient
/// identifier. rsyslog stopped and restarted: nothing is lost, nothing reordered (an entry may
/// come twice: at least once).
#[test]
fn the_audit_trail_reaches_rsyslog_over_tls_in_order_and_survives_its_restart() {
    let Some(_) = rsyslogd() else { return };
    if !ready() || !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    crate::smtp::certificates(work.path());
    let port = free_port();
    let mut rsyslog = Rsyslog::start(work.path(), port);
    let node = Node::start(NodeOptions {
        extra: vec![format!(
            "[audit_export]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\ntransport = \"tls\"\nca_file = \"{}\"\npoll_interval = \"200ms\"\n",
            work.path().join("ca.crt").display()
        )],
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let head = || rt.block_on(db.audit_chain()).unwrap().1;
    let wait_for = |what: &str, rsyslog: &Rsyslog, n: i64| {
        let deadline = Instant::now() + Duration::from_secs(40);
        while rsyslog.received().iter().map(|r| r.seq).max().unwrap_or(0) < n {
            assert!(Instant::now() < deadline, "timed out waiting for {what} (entry {n}); got {:?}; log:\n{}", rsyslog.received(), node.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());
    let ok = |args: &[&str]| {
        let out = node.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(&["ae", "add", "AUDITPACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &free_port().to_string()]);
    let _ = node.cli(&["echo", "AUDITPACS"]); // nobody listens: a failed echo, audited
                                              // The sweep audits the stored instance's de-identification after the quiet period.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rt.block_on(db.audit_chain()).unwrap().0.iter().any(|e| e.event == "deidentify") {
        assert!(Instant::now() < deadline, "no deidentify entry; log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = head();
    wait_for("the first entries", &rsyslog, before);

    // The repository goes down; the node goes on auditing; it comes back.
    rsyslog.stop();
    ok(&["ae", "add", "AUDITPACS2", "--role", "pacs", "--host", "127.0.0.1", "--port", "11112"]);
    ok(&["ae", "remove", "AUDITPACS2"]);
    std::thread::sleep(Duration::from_millis(1500));
    rsyslog.launch();
    ok(&["ae", "remove", "AUDITPACS"]);
    let last = head();
    assert!(last >= before + 3);
    wait_for("the entries made while rsyslog was down", &rsyslog, last);
    std::thread::sleep(Duration::from_millis(500));

    let got = rsyslog.received();
    let seqs: Vec<i64> = got.iter().map(|r| r.seq).collect();
    // In order, nothing lost: each message is the next entry, or a replay from an earlier one
    // (after a connection found closed), and every entry arrived.
    for pair in seqs.windows(2) {
        assert!(pair[1] == pair[0] + 1 || pair[1] <= pair[0], "out of order: {seqs:?}");
    }
    let distinct: std::collections::BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(distinct.into_iter().collect::<Vec<_>>(), (1..=last).collect::<Vec<_>>(), "every entry, once or more: {seqs:?}");
    eprintln!("audit export: {} messages for {last} entries (duplicates: {})", seqs.len(), seqs.len() as i64 - last);

    // Framing, mapping, schema, no patient identity.
    let (entries, _, _) = rt.block_on(db.audit_chain()).unwrap();
    for r in &got {
        assert_eq!((r.app.as_str(), r.msgid.as_str(), r.pri.as_str()), ("triage-node", "IHE+RFC-3881", "85"), "{r:?}");
        assert!(r.raw.starts_with("<85>1 "), "{}", r.raw);
        let entry = &entries[(r.seq - 1) as usize];
        let code = match entry.event.as_str() {
            "deidentify" => "110104",
            "ae_add" | "ae_remove" | "ae_echo" => "110113",
            // The node's start (and, across the receiver's restart, nothing else of ours).
            "application" => "110100",
            "user_auth" => "110114",
            other => panic!("unexpected entry {other}"),
        };
        assert!(r.xml.contains(&format!(r#"<EventID csd-code="{code}""#)), "{}: {}", entry.event, r.xml);
    }
    let xmls: Vec<String> = got.iter().map(|r| r.xml.clone()).collect();
    for (x, verdict) in xmls.iter().zip(schema_errors(&xmls)) {
        assert_eq!(verdict, None, "{x}");
    }
    let obj = dicom_object::open_file(&file).unwrap();
    let text = |tag| obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().trim_end_matches('\0').to_string()).unwrap_or_default();
    let all = std::fs::read_to_string(work.path().join("received.log")).unwrap();
    for tag in [dicom_dictionary_std::tags::PATIENT_NAME, dicom_dictionary_std::tags::PATIENT_ID, dicom_dictionary_std::tags::STUDY_INSTANCE_UID] {
        let value = text(tag);
        assert!(!value.is_empty());
        assert!(!all.contains(&value), "{tag} {value:?} is in an audit message");
    }
    let study = deid_uid(&study_uid_of(&file));
    assert!(all.contains(&study), "the de-identified study is named");
}

/// A site that exports patient identity (`patient_identity = "id_and_name"`): the message of
/// a stored instance's de-identification names its patient (Patient participant object, the
/// original Patient ID and name from the sealed map), valid against the schema; the opening of
/// the map is itself on the trail, once for the batch, as a `reidentify` entry (subject
/// audit-export) whose own message opens nothing; the node's log names no patient.
#[test]
fn a_site_exporting_patient_identity_gets_the_patient_and_the_opening_is_audited() {
    let Some(_) = rsyslogd() else { return };
    if !ready() || !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    crate::smtp::certificates(work.path());
    let port = free_port();
    let rsyslog = Rsyslog::start(work.path(), port);
    let node = Node::start(NodeOptions {
        extra: vec![format!(
            "[audit_export]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\ntransport = \"tls\"\nca_file = \"{}\"\npoll_interval = \"200ms\"\npatient_identity = \"id_and_name\"\n",
            work.path().join("ca.crt").display()
        )],
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());
    // The de-identification entry, then the export's own entry for opening the map for it.
    let deadline = Instant::now() + Duration::from_secs(40);
    let opened = loop {
        let entries = rt.block_on(db.audit_chain()).unwrap().0;
        if let Some(e) = entries.iter().find(|e| e.subject == "audit-export") {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no audit-export entry; log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let details: serde_json::Value = serde_json::from_str(&opened.details).unwrap();
    assert_eq!((details["purpose"].as_str(), details["map_records"].as_u64()), (Some("audit export"), Some(1)), "{}", opened.details);
    // Its own message arrives, and nothing more is opened for it.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !rsyslog.received().iter().any(|r| r.seq == opened.seq) {
        assert!(Instant::now() < deadline, "the audit-export entry was not exported; log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let entries = rt.block_on(db.audit_chain()).unwrap().0;
    assert_eq!(entries.iter().filter(|e| e.subject == "audit-export").count(), 1, "exporting the opening opened nothing more");

    let obj = dicom_object::open_file(&file).unwrap();
    let text = |tag| obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().trim_end_matches('\0').to_string()).unwrap_or_default();
    let (id, name) = (text(dicom_dictionary_std::tags::PATIENT_ID), text(dicom_dictionary_std::tags::PATIENT_NAME));
    assert!(!id.is_empty() && !name.is_empty());
    let got = rsyslog.received();
    let deid = entries.iter().find(|e| e.event == "deidentify").unwrap();
    let message = got.iter().find(|r| r.seq == deid.seq).expect("the deidentify message");
    let issuer = text(dicom_dictionary_std::tags::ISSUER_OF_PATIENT_ID);
    let cx = if issuer.is_empty() { id.clone() } else { format!("{id}^^^{issuer}") };
    let object = format!(
        r#"<ParticipantObjectIdentification ParticipantObjectID="{cx}" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode csd-code="2" codeSystemName="RFC-3881" originalText="Patient Number"/><ParticipantObjectName>{name}</ParticipantObjectName></ParticipantObjectIdentification>"#
    );
    assert!(message.xml.contains(&object), "{}", message.xml);
    let own = got.iter().find(|r| r.seq == opened.seq).unwrap();
    assert!(!own.xml.contains("RFC-3881") && !own.xml.contains(&id), "{}", own.xml);
    let xmls: Vec<String> = got.iter().map(|r| r.xml.clone()).collect();
    for (x, verdict) in xmls.iter().zip(schema_errors(&xmls)) {
        assert_eq!(verdict, None, "{x}");
    }
    // The node's own log never names the patient.
    let log = node.log();
    assert!(!log.contains(&id) && !log.contains(&name), "patient identity in the node's log");
}

/// An audit export the site asked for that cannot start (its CA file unreadable) stops the node
/// at start, saying which section: a node never runs without its audit repository unnoticed.
#[test]
fn an_audit_export_that_cannot_start_stops_the_node() {
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage-node"))
        .envs(test_keys())
        .env("TRIAGE__STORAGE__DATA_DIR", root.path().join("data"))
        .env("TRIAGE__DICOM__PORT", "0")
        .env("TRIAGE__HTTP__PORT", "0")
        .env("TRIAGE__INFERENCE__MODELS_DIR", root.path().join("no-models"))
        .env("TRIAGE__AUDIT_EXPORT__ENABLED", "true")
        .env("TRIAGE__AUDIT_EXPORT__HOST", "127.0.0.1")
        .env("TRIAGE__AUDIT_EXPORT__CA_FILE", root.path().join("missing-ca.pem"))
        .arg("serve")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("audit_export"), "{err}");
    assert!(!err.contains("listening port="), "{err}");
}
