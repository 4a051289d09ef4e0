//! The Query/Retrieve SCP over the AI results, against real peers: studies pushed by DCMTK
//! storescu, triaged by the demo model, their reports and heatmaps delivered to a PACS
//! (storescp); then queried and retrieved by DCMTK findscu / movescu / getscu, pynetdicom,
//! Orthanc (REST query and retrieve) and compared with DCMTK dcmqrscp holding the objects the
//! PACS received.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";
const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
const PM: &str = "1.2.840.10008.5.1.4.1.1.30";
const KOS: &str = "1.2.840.10008.5.1.4.1.1.88.59";

fn ready() -> bool {
    peers_ready() && have_tool("findscu") && have_tool("movescu") && have_tool("getscu") && have_tool("storescp")
}

/// SOP Class and SOP Instance UID from a file's meta.
pub(crate) fn ids(path: &Path) -> (String, String) {
    let meta = dicom_object::meta::FileMetaTable::from_reader(&std::fs::read(path).unwrap()[128..]).unwrap();
    let t = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    (t(meta.media_storage_sop_class_uid()), t(meta.media_storage_sop_instance_uid()))
}

/// One study sent to the node, as its modality made it.
pub(crate) struct Case {
    pub(crate) study_uid: String,
    pub(crate) patient_id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) accession: &'static str,
    pub(crate) positive: bool,
}

/// A node whose AI results were delivered; shared with the DICOMweb tests (`dicomweb_qido`).
pub(crate) struct Fixture {
    pub(crate) node: Node,
    pub(crate) cases: Vec<Case>,
    /// What the PACS received from the outbox.
    pub(crate) delivered: Vec<PathBuf>,
    _pacs: Killed,
    _dirs: tempfile::TempDir,
}

pub(crate) fn register(node: &Node, ae: &str, port: Option<u16>) {
    let mut args = vec!["ae", "add", ae, "--role", "pacs", "--host", "127.0.0.1"];
    let port = port.map(|p| p.to_string());
    if let Some(p) = &port {
        args.extend(["--port", p]);
    }
    let out = node.cli(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Three studies of two patients (one named in ISO_IR 100 with letters outside ASCII), two
/// positive: five result objects delivered to a PACS (reports and heatmap Secondary Captures).
fn fixture(extra_results: &[&str]) -> Option<Fixture> {
    fixture_with(extra_results, &["secondary_capture"])
}

/// The same, with each positive finding's heatmap sent as `heatmaps` (`[results] heatmap`).
pub(crate) fn fixture_with(extra_results: &[&str], heatmaps: &[&str]) -> Option<Fixture> {
    if !ready() {
        return None;
    }
    let (dir, _) = demo_cases()?;
    let dirs = tempfile::tempdir().unwrap();
    let pacs_dir = dirs.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let (pacs, pacs_port) = storescp(&pacs_dir);
    let pacs = Killed(pacs);
    let mut destinations = vec!["\"PACS\"".to_string()];
    destinations.extend(extra_results.iter().map(|d| format!("\"{d}\"")));
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", repo().join("models").display())],
        results: vec![
            format!("destinations = [{}]", destinations.join(", ")),
            format!("heatmap = [{}]", heatmaps.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ")),
        ],
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"1s\"".into()],
        ..Default::default()
    });
    register(&node, "PACS", Some(pacs_port));
    register(&node, "VIEWER", Some(free_port()));
    let specs: [(&str, &str, &str, &str, &str, &str, bool); 3] = [
        ("case000.dcm", "QR-1", "Müller^Anna", "QRACC1", "20240105", "ISO_IR 100", true),
        ("case001.dcm", "QR-2", "DOE^JOHN", "QRACC2", "20241130", "ISO_IR 100", false),
        ("case004.dcm", "QR-2", "DOE^JOHN", "QRACC3", "20241201", "ISO_IR 100", true),
    ];
    let mut cases = Vec::new();
    let mut files = Vec::new();
    for (src, id, name, acc, date, charset, positive) in specs {
        let dst = dirs.path().join(format!("{id}-{acc}.dcm"));
        let made = qr_peer(&[
            "variant",
            dir.join(src).to_str().unwrap(),
            dst.to_str().unwrap(),
            &format!("SpecificCharacterSet={charset}"),
            &format!("PatientID={id}"),
            &format!("PatientName={name}"),
            &format!("AccessionNumber={acc}"),
            &format!("StudyDate={date}"),
        ]);
        cases.push(Case { study_uid: made[0]["StudyInstanceUID"].as_str().unwrap().to_string(), patient_id: id, name, accession: acc, positive });
        files.push(dst);
    }
    assert!(node.storescu(&files).status.success(), "{}", node.log());
    wait_until("three reports delivered", Duration::from_secs(120), || node.log().matches("AI report delivered").count() >= 3);
    let delivered = walk(&pacs_dir);
    assert_eq!(delivered.len(), 3 + 2 * heatmaps.len(), "{delivered:?}");
    Some(Fixture { node, cases, delivered, _pacs: pacs, _dirs: dirs })
}

fn find(f: &Fixture, calling: &str, model: &str, query: Value) -> (Vec<Value>, Value) {
    let mut out = qr_peer(&["find", &f.node.port.to_string(), calling, model, &query.to_string()]);
    let last = out.pop().expect("a final response");
    (out, last)
}

fn values(rs: &[Value], key: &str) -> Vec<String> {
    let mut v: Vec<String> = rs.iter().map(|r| r[key].as_str().unwrap_or("<absent>").to_string()).collect();
    v.sort();
    v
}

fn study_uids(f: &Fixture, which: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = which.iter().map(|&i| f.cases[i].study_uid.clone()).collect();
    v.sort();
    v
}

#[test]
fn a_pacs_finds_and_retrieves_the_ai_results_as_it_knows_the_patient() {
    let Some(f) = fixture(&[]) else { return };
    let port = f.node.port.to_string();
    let all = [0, 1, 2];

    // STUDY level, Study Root: every study, with the identifiers the PACS knows.
    let (rs, fin) = find(
        &f,
        "VIEWER",
        "study",
        serde_json::json!({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientName": "", "PatientID": "", "AccessionNumber": "",
            "StudyDate": "", "ModalitiesInStudy": "", "SOPClassesInStudy": "", "NumberOfStudyRelatedSeries": "", "NumberOfStudyRelatedInstances": ""}),
    );
    assert_eq!(fin["status"], "0x0000", "{fin}\n{}", f.node.log());
    assert_eq!(values(&rs, "StudyInstanceUID"), study_uids(&f, &all));
    for r in &rs {
        let case = f.cases.iter().find(|c| r["StudyInstanceUID"] == c.study_uid.as_str()).unwrap();
        assert_eq!(
            (r["PatientID"].as_str(), r["PatientName"].as_str(), r["AccessionNumber"].as_str()),
            (Some(case.patient_id), Some(case.name), Some(case.accession)),
            "{r}"
        );
        assert_eq!(r["SpecificCharacterSet"], "ISO_IR 192");
        let (modalities, classes, series, instances) =
            if case.positive { ("OT\\SR", format!("{SR}\\{SC}"), "2", "2") } else { ("SR", SR.to_string(), "1", "1") };
        assert_eq!(r["ModalitiesInStudy"], modalities);
        assert_eq!(r["SOPClassesInStudy"].as_str().unwrap().split('\\').collect::<BTreeSet<_>>(), classes.split('\\').collect::<BTreeSet<_>>());
        assert_eq!((r["NumberOfStudyRelatedSeries"].as_str(), r["NumberOfStudyRelatedInstances"].as_str()), (Some(series), Some(instances)));
    }

    // Each matching type.
    let q = |keys: Value| {
        let mut query = serde_json::json!({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""});
        query.as_object_mut().unwrap().extend(keys.as_object().unwrap().clone());
        let (rs, fin) = find(&f, "VIEWER", "study", query);
        assert_eq!(fin["status"], "0x0000", "{fin}");
        values(&rs, "StudyInstanceUID")
    };
    assert_eq!(q(serde_json::json!({"AccessionNumber": "QRACC2"})), study_uids(&f, &[1]), "single value");
    assert_eq!(q(serde_json::json!({"PatientName": "doe^*"})), study_uids(&f, &[1, 2]), "wild card, PN case-insensitive");
    assert_eq!(q(serde_json::json!({"PatientName": "D?E^JOHN"})), study_uids(&f, &[1, 2]));
    assert_eq!(q(serde_json::json!({"SpecificCharacterSet": "ISO_IR 100", "PatientName": "MÜLLER*"})), study_uids(&f, &[0]), "a query in ISO_IR 100");
    assert_eq!(q(serde_json::json!({"SpecificCharacterSet": "ISO_IR 192", "PatientName": "müller^anna"})), study_uids(&f, &[0]), "a query in UTF-8");
    assert_eq!(q(serde_json::json!({"StudyDate": "20241101-"})), study_uids(&f, &[1, 2]), "open range");
    assert_eq!(q(serde_json::json!({"StudyDate": "-20240630"})), study_uids(&f, &[0]));
    assert_eq!(q(serde_json::json!({"StudyDate": "20241130-20241130"})), study_uids(&f, &[1]));
    assert_eq!(q(serde_json::json!({"StudyInstanceUID": format!("{}\\{}", f.cases[0].study_uid, f.cases[2].study_uid)})), study_uids(&f, &[0, 2]), "UID list");
    assert_eq!(q(serde_json::json!({"ModalitiesInStudy": "OT"})), study_uids(&f, &[0, 2]), "a computed key matched");
    assert!(q(serde_json::json!({"PatientID": "NOBODY"})).is_empty());

    // PATIENT level, Patient Root, with the patient's counts.
    let (rs, fin) = find(
        &f,
        "VIEWER",
        "patient",
        serde_json::json!({"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": "", "NumberOfPatientRelatedStudies": "", "NumberOfPatientRelatedInstances": ""}),
    );
    assert_eq!(fin["status"], "0x0000");
    assert_eq!(values(&rs, "PatientID"), ["QR-1", "QR-2"]);
    let two = rs.iter().find(|r| r["PatientID"] == "QR-2").unwrap();
    assert_eq!((two["NumberOfPatientRelatedStudies"].as_str(), two["NumberOfPatientRelatedInstances"].as_str()), (Some("2"), Some("3")));

    // SERIES and IMAGE levels: hierarchical, exactly the objects the PACS received.
    let c = &f.cases[2];
    let (rs, _) = find(
        &f,
        "VIEWER",
        "study",
        serde_json::json!({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": c.study_uid, "SeriesInstanceUID": "", "Modality": "", "SeriesNumber": "", "NumberOfSeriesRelatedInstances": ""}),
    );
    assert_eq!(values(&rs, "Modality"), ["OT", "SR"]);
    assert!(rs.iter().all(|r| r["NumberOfSeriesRelatedInstances"] == "1"));
    let delivered: Vec<Value> = qr_peer(&[&["dump"], f.delivered.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>().as_slice()].concat());
    for r in &rs {
        let (images, fin) = find(
            &f,
            "VIEWER",
            "patient",
            serde_json::json!({"QueryRetrieveLevel": "IMAGE", "PatientID": c.patient_id, "StudyInstanceUID": c.study_uid,
            "SeriesInstanceUID": r["SeriesInstanceUID"], "SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": ""}),
        );
        assert_eq!((fin["status"].as_str(), images.len()), (Some("0x0000"), 1));
        let sent = delivered.iter().find(|d| d["SOPInstanceUID"] == images[0]["SOPInstanceUID"]).expect("the PACS has the object the node lists");
        for key in ["SOPClassUID", "InstanceNumber", "SeriesInstanceUID"] {
            assert_eq!(sent[key], images[0][key], "{key}");
        }
        assert_eq!(
            (sent["PatientID"].as_str(), sent["StudyInstanceUID"].as_str(), sent["AccessionNumber"].as_str()),
            (Some(c.patient_id), Some(c.study_uid.as_str()), Some(c.accession))
        );
    }
    // Sequence matching: the SR's document title.
    let (rs, _) = find(
        &f,
        "VIEWER",
        "study",
        serde_json::json!({"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": c.study_uid,
        "SeriesInstanceUID": rs.iter().find(|r| r["Modality"] == "SR").unwrap()["SeriesInstanceUID"], "SOPInstanceUID": "",
        "ConceptNameCodeSequence": [{"CodeValue": "126000", "CodeMeaning": ""}]}),
    );
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0]["ConceptNameCodeSequence"][0]["CodeMeaning"], "Imaging Measurement Report");

    // Bad identifiers: the right failure, with a reason.
    let (_, fin) = find(&f, "VIEWER", "study", serde_json::json!({"QueryRetrieveLevel": "SERIES", "Modality": "SR"}));
    assert_eq!(fin["status"], "0xA900");
    assert!(fin["comment"].as_str().unwrap().contains("StudyInstanceUID"), "{fin}");
    let (_, fin) = find(&f, "VIEWER", "study", serde_json::json!({"QueryRetrieveLevel": "STUDY", "StudyDate": "2024-01-01-02"}));
    assert_eq!(fin["status"], "0xC000", "{fin}");
    let (_, fin) = find(&f, "VIEWER", "study", serde_json::json!({"QueryRetrieveLevel": "PATIENT", "PatientID": ""}));
    assert_eq!(fin["status"], "0xA900", "no PATIENT level in Study Root: {fin}");

    // DCMTK findscu, both models.
    let out_dir = f.node.dir.path().join("findscu");
    std::fs::create_dir_all(&out_dir).unwrap();
    let findscu = |args: &[&str]| {
        let out = Command::new("findscu")
            .args(["-aet", "VIEWER", "-aec", "TRIAGE", "-X", "-od", out_dir.to_str().unwrap()])
            .args(args)
            .args(["127.0.0.1", &port])
            .env("TCP_NODELAY", "1")
            .output()
            .unwrap();
        out
    };
    let out = findscu(&["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=DOE*", "-k", "StudyInstanceUID", "-k", "AccessionNumber"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files: Vec<PathBuf> = walk(&out_dir);
    let got = qr_peer(&[&["dump"], files.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>().as_slice()].concat());
    assert_eq!(values(&got, "AccessionNumber"), ["QRACC2", "QRACC3"]);
    for p in files {
        std::fs::remove_file(p).unwrap();
    }
    let out = findscu(&["-P", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=QR-1", "-k", "PatientName", "-k", "NumberOfPatientRelatedStudies"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = qr_peer(&[&["dump"], walk(&out_dir).iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>().as_slice()].concat());
    assert_eq!(got.len(), 1);
    assert_eq!((got[0]["PatientName"].as_str(), got[0]["NumberOfPatientRelatedStudies"].as_str()), (Some("Müller^Anna"), Some("1")));

    // A modality may not query: its contexts are refused at negotiation.
    let out = Command::new("findscu")
        .args(["-S", "-aet", "STORESCU", "-aec", "TRIAGE", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "127.0.0.1", &port])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("No Acceptable Presentation Contexts"), "{text}");

    // C-CANCEL on the wire right behind the C-FIND-RQ: Cancel, nothing matched is sent, and
    // nothing follows the final response.
    let r = &qr_peer(&["cancel-find", &port, "VIEWER", &serde_json::json!({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}).to_string()])[0];
    assert_eq!((r["status"].as_str(), r["pending"].as_i64(), r["after_final"].as_i64()), (Some("0xFE00"), Some(0), Some(0)), "{r}");

    // The log names no patient; the queries are audited without patient data.
    for c in &f.cases {
        for value in [c.study_uid.as_str(), c.patient_id, c.accession, "Müller", "DOE^JOHN"] {
            assert!(!f.node.log().contains(value), "{value} in the log");
        }
    }
    let audit = String::from_utf8_lossy(&f.node.cli(&["audit", "list"]).stdout).into_owned();
    assert!(audit.contains("query") && audit.contains("ae:VIEWER"), "{audit}");
    for c in &f.cases {
        assert!(!audit.contains(c.patient_id) && !audit.contains(c.study_uid.as_str()), "{audit}");
    }
    assert!(f.node.cli(&["audit", "verify"]).status.success());

    // Nothing the queries answered is at rest outside the sealed map: not in the database
    // files, the store or the outbox (the index lives in memory).
    for file in walk(&f.node.data_dir()) {
        let bytes = std::fs::read(&file).unwrap();
        for c in &f.cases {
            for value in [c.patient_id, c.accession, c.study_uid.as_str(), "DOE^JOHN"] {
                assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()), "{value} at rest in {}", file.display());
            }
        }
    }
}

/// Many PACS querying at once (issue 36): the audit entries of queries that wait together share
/// one commit, and still every C-FIND that disclosed anything has its own entry, committed
/// before its final response, each caller's in the order it asked, on one chain that verifies.
#[test]
fn concurrent_finds_are_each_audited_in_order_on_a_valid_chain() {
    let Some(f) = fixture(&[]) else { return };
    let (callers, repeats) = (8, 3);
    for i in 0..callers {
        register(&f.node, &format!("FIND{i}"), Some(free_port()));
    }
    let port = f.node.port.to_string();
    let runs: Vec<_> = (0..callers)
        .map(|i| {
            let port = port.clone();
            std::thread::spawn(move || {
                // One association each, `repeats` C-FINDs on it, one after another.
                Command::new("findscu")
                    .args(["-v", "-S", "-aet", &format!("FIND{i}"), "-aec", "TRIAGE", "--repeat", &repeats.to_string()])
                    .args(["-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=QR-2", "-k", "StudyInstanceUID"])
                    .args(["127.0.0.1", &port])
                    .env("TCP_NODELAY", "1")
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for run in runs {
        let out = run.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        // Two studies of QR-2 each time, then Success: the final response came after the entry.
        assert_eq!(text.matches("(Pending)").count(), 2 * repeats, "{text}");
        assert_eq!(text.matches("Final Find Response (Success)").count(), repeats, "{text}");
    }
    let audit = String::from_utf8_lossy(&f.node.cli(&["audit", "list"]).stdout).into_owned();
    let mut last_seq = vec![0i64; callers];
    let mut entries = vec![0usize; callers];
    for line in audit.lines().filter(|l| l.contains(" query ")) {
        let Some(i) = (0..callers).find(|i| line.contains(&format!("ae:FIND{i} "))) else { continue };
        let seq: i64 = line.split_whitespace().next().unwrap().parse().unwrap();
        assert!(seq > last_seq[i], "FIND{i}'s entries out of order: {audit}");
        assert!(line.contains("\"matches\":2"), "{line}");
        (last_seq[i], entries[i]) = (seq, entries[i] + 1);
    }
    assert_eq!(entries, vec![repeats; callers], "{audit}");
    let verify = f.node.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}

/// IMAGE level, as a PACS lists a study's AI results without retrieving them (IHE AIR): what
/// each object is, when the analysis made it and which algorithm, each answer as the object was
/// delivered, and each key matched the way the conformance statement says.
#[test]
fn image_level_keys_list_a_studys_ai_results_as_delivered() {
    let Some(f) = fixture_with(&[], &["parametric_map", "secondary_capture"]) else { return };
    let c = &f.cases[2];
    let sent: Vec<Value> = qr_peer(&[&["dump"], f.delivered.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>().as_slice()].concat())
        .into_iter()
        .filter(|d| d["StudyInstanceUID"] == c.study_uid.as_str())
        .collect();
    assert!(sent.iter().any(|d| d["SOPClassUID"] == SR) && sent.len() >= 2, "a report and a heatmap: {}", sent.len());
    let (series, fin) =
        find(&f, "VIEWER", "study", serde_json::json!({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": c.study_uid, "SeriesInstanceUID": ""}));
    assert_eq!(fin["status"], "0x0000", "{fin}");
    let image = |series: &str, keys: Value| {
        let mut q = serde_json::json!({"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": c.study_uid, "SeriesInstanceUID": series, "SOPInstanceUID": ""});
        q.as_object_mut().unwrap().extend(keys.as_object().unwrap().clone());
        let (rs, fin) = find(&f, "VIEWER", "study", q);
        assert_eq!(fin["status"], "0x0000", "{fin}");
        rs
    };
    const TEXT: [&str; 6] = ["SOPClassUID", "ContentDate", "ContentTime", "ContentLabel", "ContentDescription", "ContentCreatorName"];
    const SEQUENCES: [&str; 2] = ["ConceptNameCodeSequence", "ContributingEquipmentSequence"];
    let mut all = serde_json::Map::new();
    for k in TEXT {
        all.insert(k.into(), "".into());
    }
    for k in SEQUENCES {
        all.insert(k.into(), Value::Array(Vec::new()));
    }
    let (mut listed, mut algorithm_keys) = (0, 0);
    for s in &series {
        let series = s["SeriesInstanceUID"].as_str().unwrap();
        for r in image(series, Value::Object(all.clone())) {
            let d = sent.iter().find(|d| d["SOPInstanceUID"] == r["SOPInstanceUID"]).expect("the PACS has each object the node lists");
            let class = d["SOPClassUID"].as_str().unwrap();
            assert!([SR, SC, PM, KOS].contains(&class), "{class}");
            // Every value as delivered; what the object lacks, zero-length.
            for k in TEXT {
                assert_eq!(r[k], d.get(k).cloned().unwrap_or_else(|| "".into()), "{k} of {class}");
            }
            for k in SEQUENCES {
                assert_eq!(r[k], d.get(k).cloned().unwrap_or_else(|| Value::Array(Vec::new())), "{k} of {class}");
            }
            listed += 1;

            let hits = |keys: Value| image(series, keys).iter().filter(|x| x["SOPInstanceUID"] == d["SOPInstanceUID"]).count();
            // What: SOP Class UID as a list of UIDs.
            assert_eq!(hits(serde_json::json!({"SOPClassUID": format!("{KOS}\\{class}")})), 1, "{class} in a list");
            assert_eq!(hits(serde_json::json!({"SOPClassUID": format!("{KOS}\\1.2.3")})), 0, "{class} not in a list");
            // When: Content Date and Time, single values and ranges.
            let (date, time) = (d["ContentDate"].as_str().unwrap(), d["ContentTime"].as_str().unwrap());
            assert_eq!(hits(serde_json::json!({"ContentDate": format!("{date}-"), "ContentTime": format!("{}-", &time[..6])})), 1, "{date} {time}");
            assert_eq!(hits(serde_json::json!({"ContentDate": date, "ContentTime": format!("-{}", &time[..6])})), 1);
            assert_eq!(hits(serde_json::json!({"ContentDate": "-19991231"})), 0);
            // Which algorithm: the keys that name it, where the object carries them.
            let models: Vec<&str> =
                d["ContributingEquipmentSequence"].as_array().into_iter().flatten().filter_map(|i| i["ManufacturerModelName"].as_str()).collect();
            for model in models {
                let named = |m: &str| serde_json::json!({"ContributingEquipmentSequence": [{"ManufacturerModelName": m, "SoftwareVersions": ""}]});
                assert_eq!(hits(named(model)), 1, "{class} made by {model}");
                assert_eq!(hits(named("no-such-model")), 0);
                algorithm_keys += 1;
            }
            if let Some(creator) = d["ContentCreatorName"].as_str().filter(|v| !v.is_empty()) {
                let prefix: String = creator.chars().take(4).collect();
                assert_eq!(hits(serde_json::json!({"ContentCreatorName": format!("{}*", prefix.to_lowercase())})), 1, "{class} by {creator}");
                assert_eq!(hits(serde_json::json!({"ContentCreatorName": "no-such-model"})), 0);
                algorithm_keys += 1;
            }
        }
    }
    assert_eq!(listed, sent.len(), "every AI result of the study is listed once");
    // The report, found by its title among the study's results.
    let report = sent.iter().find(|d| d["SOPClassUID"] == SR).unwrap();
    let rs = image(
        report["SeriesInstanceUID"].as_str().unwrap(),
        serde_json::json!({"SOPClassUID": SR, "ConceptNameCodeSequence": [{"CodeValue": "126000", "CodingSchemeDesignator": "DCM"}]}),
    );
    assert_eq!(values(&rs, "SOPInstanceUID"), [report["SOPInstanceUID"].as_str().unwrap()]);
    eprintln!("{listed} results listed, {algorithm_keys} algorithm keys matched");

    // pynetdicom C-GET of the study, taking the SCP role of each result class: the report and
    // both heatmaps (a Parametric Map among them).
    let port = f.node.port.to_string();
    let study = serde_json::json!({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": c.study_uid}).to_string();
    let dirs = tempfile::tempdir().unwrap();
    let get = |into: &str| {
        let out = dirs.path().join(into);
        let r = qr_peer(&["get", &port, "VIEWER", "study", &study, out.to_str().unwrap()]).remove(0);
        assert_eq!((r["status"].as_str(), r["failed"].as_i64()), (Some("0x0000"), Some(0)), "{r}");
        let mut got: Vec<(String, String)> = walk(&out).iter().map(|p| ids(p)).collect();
        got.sort();
        got
    };
    let mut want: Vec<(String, String)> =
        sent.iter().map(|d| (d["SOPClassUID"].as_str().unwrap().into(), d["SOPInstanceUID"].as_str().unwrap().into())).collect();
    want.sort();
    assert_eq!(get("got-before"), want);
    assert!(want.iter().any(|(class, _)| class == PM));

    // Retracted (IHE IOCM): the rejection note hides what it names from query and retrieve, and
    // is itself found and retrieved.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(f.node.db());
    let study_id = rt.block_on(db.study_results(&deid_uid(&c.study_uid))).unwrap()[0].study_id;
    rt.block_on(db.close());
    let out = f.node.cli(&["results", "retract", &study_id.to_string(), "--reason", "query test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (after, fin) = find(&f, "VIEWER", "study", serde_json::json!({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": c.study_uid, "Modality": ""}));
    assert_eq!(fin["status"], "0x0000", "{fin}");
    assert_eq!(values(&after, "Modality"), ["KO"], "the emptied series are gone");
    for s in &series {
        assert!(image(s["SeriesInstanceUID"].as_str().unwrap(), serde_json::json!({})).is_empty(), "a rejected object listed");
    }
    let notes = image(after[0]["SeriesInstanceUID"].as_str().unwrap(), serde_json::json!({"SOPClassUID": ""}));
    assert_eq!(values(&notes, "SOPClassUID"), [KOS]);
    let got = get("got-after");
    assert_eq!(got, [(KOS.to_string(), notes[0]["SOPInstanceUID"].as_str().unwrap().to_string())], "only the note is retrieved");
}

#[test]
fn results_are_moved_and_got_with_counts_and_failures() {
    let Some(f) = fixture(&[]) else { return };
    let port = f.node.port.to_string();
    let dirs = tempfile::tempdir().unwrap();
    // A second PACS, and one that takes reports but refuses heatmaps.
    let (dest, dest_port) = storescp(dirs.path());
    let _dest = Killed(dest);
    let picky_port = free_port();
    let picky_dir = dirs.path().join("picky");
    let _picky = python_peer("qr_peer.py", &["store-scp", &picky_port.to_string(), "PICKY", picky_dir.to_str().unwrap(), SR], "ready");
    register(&f.node, "MOVEDEST", Some(dest_port));
    register(&f.node, "PICKY", Some(picky_port));
    let positive = &f.cases[2];
    let study = serde_json::json!({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": positive.study_uid});

    // DCMTK movescu: the study's report and heatmap arrive, byte for byte as the outbox sent them.
    let out = Command::new("movescu")
        .args([
            "-S",
            "-aet",
            "VIEWER",
            "-aec",
            "TRIAGE",
            "-aem",
            "MOVEDEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={}", positive.study_uid),
            "127.0.0.1",
            &port,
        ])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stderr), f.node.log());
    let moved: Vec<PathBuf> = walk(dirs.path()).into_iter().filter(|p| !p.starts_with(&picky_dir)).collect();
    assert_eq!(moved.len(), 2, "{moved:?}");
    for m in &moved {
        let (class, sop) = ids(m);
        let original = f.delivered.iter().find(|d| ids(d).1 == sop).unwrap_or_else(|| panic!("{sop} was not delivered"));
        assert_eq!(dataset_bytes(m), dataset_bytes(original), "{class}: moved as delivered");
    }

    // pynetdicom C-MOVE: counts; a destination that refuses one class: B000 and the list.
    let r = &qr_peer(&["move", &port, "VIEWER", "MOVEDEST", &study.to_string()])[0];
    assert_eq!(
        (r["status"].as_str(), r["completed"].as_i64(), r["failed"].as_i64(), r["pending"].as_i64()),
        (Some("0x0000"), Some(2), Some(0), Some(1)),
        "{r}"
    );
    let r = &qr_peer(&["move", &port, "VIEWER", "PICKY", &study.to_string()])[0];
    assert_eq!((r["status"].as_str(), r["completed"].as_i64(), r["failed"].as_i64()), (Some("0xB000"), Some(1), Some(1)), "{r}");
    let heatmap = moved.iter().map(|m| ids(m)).find(|(class, _)| class == SC).unwrap().1;
    assert_eq!(r["failed_list"], heatmap.as_str());
    assert_eq!(walk(&picky_dir).len(), 1);
    let r = &qr_peer(&["move", &port, "VIEWER", "NOWHERE", &study.to_string()])[0];
    assert_eq!(r["status"], "0xA801", "{r}");
    assert!(r["comment"].as_str().unwrap().contains("NOWHERE"));
    // Re-identified results go only to AEs of the pacs role: a modality registered with the
    // address of a working SCP is refused as a destination, and receives nothing.
    let dest_port_text = dest_port.to_string();
    let added = f.node.cli(&["ae", "add", "MODALITYDEST", "--role", "modality", "--host", "127.0.0.1", "--port", &dest_port_text]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let before = walk(dirs.path()).len();
    let r = &qr_peer(&["move", &port, "VIEWER", "MODALITYDEST", &study.to_string()])[0];
    assert_eq!(r["status"], "0xA801", "{r}");
    assert!(r["comment"].as_str().unwrap().contains("not a PACS"), "{r}");
    assert_eq!(walk(dirs.path()).len(), before, "nothing sent to a modality");
    // A Patient ID pattern that matches everyone (`**`, `?*`, `*?`) names nothing to retrieve.
    for (i, pattern) in ["**", "?*", "*?"].iter().enumerate() {
        let out = dirs.path().join(format!("wild{i}"));
        let r = &qr_peer(&[
            "get",
            &port,
            "VIEWER",
            "patient",
            &serde_json::json!({"QueryRetrieveLevel": "PATIENT", "PatientID": pattern}).to_string(),
            out.to_str().unwrap(),
        ])[0];
        assert_ne!(r["status"], "0x0000", "{pattern}: {r}");
        assert_eq!(r["completed"].as_i64().unwrap_or(0), 0, "{pattern}: {r}");
        assert!(walk(&out).is_empty(), "{pattern}: results retrieved");
    }
    // C-CANCEL right behind the C-MOVE-RQ: Cancel, nothing sent, the remaining count told.
    let r = &qr_peer(&["cancel-move", &port, "VIEWER", "MOVEDEST", &study.to_string()])[0];
    assert_eq!(
        (r["status"].as_str(), r["completed"].as_i64(), r["remaining"].as_i64(), r["after_final"].as_i64()),
        (Some("0xFE00"), Some(0), Some(2), Some(0)),
        "{r}\n{}",
        f.node.log()
    );

    // C-GET on the caller's association: DCMTK getscu and pynetdicom.
    let got_dir = dirs.path().join("got");
    std::fs::create_dir_all(&got_dir).unwrap();
    let out = Command::new("getscu")
        .args([
            "-S",
            "-aet",
            "VIEWER",
            "-aec",
            "TRIAGE",
            "-od",
            got_dir.to_str().unwrap(),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={}", positive.study_uid),
            "127.0.0.1",
            &port,
        ])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stderr), f.node.log());
    let got = walk(&got_dir);
    assert_eq!(got.iter().map(|g| ids(g).1).collect::<BTreeSet<_>>(), moved.iter().map(|m| ids(m).1).collect::<BTreeSet<_>>());
    let r = &qr_peer(&[
        "get",
        &port,
        "VIEWER",
        "patient",
        &serde_json::json!({"QueryRetrieveLevel": "PATIENT", "PatientID": "QR-2"}).to_string(),
        dirs.path().join("got2").to_str().unwrap(),
    ])[0];
    assert_eq!((r["status"].as_str(), r["completed"].as_i64(), r["failed"].as_i64()), (Some("0x0000"), Some(3), Some(0)), "{r}");
    assert_eq!(r["files"].as_array().unwrap().len(), 3);

    // A modality may not retrieve.
    let out = Command::new("movescu")
        .args([
            "-S",
            "-aet",
            "STORESCU",
            "-aec",
            "TRIAGE",
            "-aem",
            "MOVEDEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={}", positive.study_uid),
            "127.0.0.1",
            &port,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("No Acceptable Presentation Contexts"), "{text}");

    // Each retrieve that sends anything is one audit entry, written before the first object
    // goes out, naming the AEs, the count and the objects (the node's own UIDs), no patient data.
    let audit = String::from_utf8_lossy(&f.node.cli(&["audit", "list"]).stdout).into_owned();
    let retrieves: Vec<&str> = audit.lines().filter(|l| l.contains("retrieve")).collect();
    // movescu, move, PICKY move, cancel-move (audited: the objects were about to go), getscu, get
    assert_eq!(retrieves.len(), 6, "{audit}");
    assert!(retrieves.iter().any(|l| l.contains("\"destination\":\"MOVEDEST\"") && l.contains("ae:VIEWER") && l.contains(&heatmap)), "{audit}");
    assert!(!audit.contains(positive.patient_id) && !audit.contains(positive.study_uid.as_str()));
    assert!(f.node.cli(&["audit", "verify"]).status.success());
    for value in [positive.study_uid.as_str(), positive.patient_id, "DOE^JOHN"] {
        assert!(!f.node.log().contains(value), "{value} in the log");
    }
}

/// DCMTK dcmqrscp serving the objects the PACS received, as a Q/R SCP to compare with.
fn dcmqrscp(files: &[PathBuf], dir: &Path) -> (Killed, u16) {
    let port = free_port();
    let db = dir.join("qrdb");
    std::fs::create_dir_all(&db).unwrap();
    let cfg = dir.join("dcmqrscp.cfg");
    std::fs::write(
        &cfg,
        format!(
            "NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\nHostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\nAETable BEGIN\nDCMQR {} RW (200, 1024mb) ANY\nAETable END\n",
            db.display()
        ),
    )
    .unwrap();
    let out = Command::new("dcmqridx").arg(&db).args(files).output().unwrap();
    assert!(out.status.success(), "dcmqridx: {}", String::from_utf8_lossy(&out.stderr));
    let child = Command::new("dcmqrscp")
        .args(["-c", cfg.to_str().unwrap(), "--disable-get"])
        .env("TCP_NODELAY", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("dcmqrscp to listen", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    (Killed(child), port)
}

/// The matches of a query as sets of (key, value), for the keys compared.
fn answers(port: u16, called: &str, model: &str, query: &Value, keys: &[&str]) -> BTreeSet<Vec<(String, String)>> {
    let out = Command::new(python().unwrap())
        .arg(repo().join("tests/peers/qr_peer.py"))
        .args(["find", &port.to_string(), "VIEWER", model, &query.to_string()])
        .env("QR_CALLED", called)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rs: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let fin = rs.pop().unwrap();
    assert_eq!(fin["status"], "0x0000", "{called}: {query} -> {fin}");
    rs.iter().map(|r| keys.iter().map(|k| (k.to_string(), r[*k].as_str().unwrap_or("").trim().to_string())).collect()).collect()
}

#[test]
fn dcmqrscp_holding_the_same_objects_answers_the_same_and_orthanc_queries_and_retrieves() {
    let Some(f) = fixture(&[]) else { return };
    if !have_tool("dcmqrscp") || !have_tool("Orthanc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_qr, qr_port) = dcmqrscp(&f.delivered, dir.path());
    let study_keys = ["StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyID"];
    let with = |level: &str, extra: Value, keys: &[&str]| {
        let mut q = serde_json::json!({"QueryRetrieveLevel": level});
        for k in keys {
            q[*k] = "".into();
        }
        q.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        q
    };
    let mut queries: Vec<(&str, Value, Vec<&str>)> = vec![
        ("study", with("STUDY", serde_json::json!({}), &study_keys), study_keys.to_vec()),
        ("study", with("STUDY", serde_json::json!({"PatientID": "QR-2"}), &study_keys), study_keys.to_vec()),
        ("study", with("STUDY", serde_json::json!({"PatientName": "DOE*"}), &study_keys), study_keys.to_vec()),
        ("study", with("STUDY", serde_json::json!({"PatientName": "D?E^JOHN"}), &study_keys), study_keys.to_vec()),
        ("study", with("STUDY", serde_json::json!({"StudyDate": "20241101-"}), &study_keys), study_keys.to_vec()),
        ("study", with("STUDY", serde_json::json!({"StudyDate": "20240101-20241130"}), &study_keys), study_keys.to_vec()),
        ("study", with("STUDY", serde_json::json!({"StudyDate": "-20240630"}), &study_keys), study_keys.to_vec()),
        ("study", with("STUDY", serde_json::json!({"AccessionNumber": "QRACC1"}), &study_keys), study_keys.to_vec()),
        (
            "study",
            with("STUDY", serde_json::json!({"StudyInstanceUID": format!("{}\\{}", f.cases[1].study_uid, f.cases[2].study_uid)}), &study_keys),
            study_keys.to_vec(),
        ),
        ("patient", with("PATIENT", serde_json::json!({}), &["PatientID", "PatientName"]), vec!["PatientID", "PatientName"]),
        ("patient", with("STUDY", serde_json::json!({"PatientID": "QR-2"}), &study_keys), study_keys.to_vec()),
    ];
    for c in &f.cases {
        let series = ["SeriesInstanceUID", "Modality", "SeriesNumber"];
        queries.push(("study", with("SERIES", serde_json::json!({"StudyInstanceUID": c.study_uid}), &series), series.to_vec()));
    }
    let ours_series = answers(
        f.node.port,
        "TRIAGE",
        "study",
        &with("SERIES", serde_json::json!({"StudyInstanceUID": f.cases[0].study_uid}), &["SeriesInstanceUID"]),
        &["SeriesInstanceUID"],
    );
    for s in &ours_series {
        let image = ["SOPInstanceUID", "InstanceNumber"];
        queries.push((
            "study",
            with("IMAGE", serde_json::json!({"StudyInstanceUID": f.cases[0].study_uid, "SeriesInstanceUID": s[0].1}), &image),
            image.to_vec(),
        ));
    }
    for (model, query, keys) in &queries {
        let ours = answers(f.node.port, "TRIAGE", model, query, keys);
        let theirs = answers(qr_port, "DCMQR", model, query, keys);
        assert!(!theirs.is_empty() || query.get("PatientName").is_some_and(|n| n == "NOBODY"), "dcmqrscp found nothing for {query}");
        assert_eq!(ours, theirs, "{model} {query}");
    }

    // Orthanc, as the PACS: its REST API queries the node, then retrieves into itself.
    let pacs = Orthanc::start_knowing(&[("TRIAGE", f.node.port)]);
    register(&f.node, "ORTHANC", Some(pacs.dicom_port));
    let rest = |args: &[&str]| -> Vec<Value> {
        let out = pacs.python(args);
        assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), f.node.log());
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let http = pacs.http_port.to_string();
    let mut found = rest(&[
        "query",
        &http,
        "triage",
        "Study",
        &serde_json::json!({"PatientID": "QR-2", "AccessionNumber": "", "PatientName": "", "StudyDate": "20240101-20241231"}).to_string(),
    ]);
    let qid = found.pop().unwrap()["query"].as_str().unwrap().to_string();
    let mut accessions: Vec<&str> = found.iter().map(|a| a["AccessionNumber"].as_str().unwrap()).collect();
    accessions.sort();
    assert_eq!(accessions, ["QRACC2", "QRACC3"], "{found:?}");
    assert!(found.iter().all(|a| a["PatientName"] == "DOE^JOHN"));
    let held = rest(&["retrieve", &http, &qid]);
    assert_eq!(held.len(), 3, "the two studies' report, heatmap and report: {held:?}");
    for h in &held {
        assert_eq!(h["PatientID"], "QR-2");
        let delivered = f.delivered.iter().any(|d| ids(d).1 == h["SOPInstanceUID"].as_str().unwrap());
        assert!(delivered, "{h}");
    }
}
