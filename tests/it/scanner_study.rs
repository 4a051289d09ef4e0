//! Studies as real modalities send them (issue 16): every standard storage class accepted, the
//! objects with content outside the header kept as de-identified headers, a site's refused
//! classes rejected at negotiation, and study completion from Modality Performed Procedure Step.
//! The objects are built from the registry packages' real files (tests/peers/scanner_study.py).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// The files of one generated scanner study and the other rooms' objects, by kind.
fn make_objects(dir: &Path) -> Vec<(String, PathBuf)> {
    let out = Command::new(python().unwrap()).arg(repo().join("tests/peers/scanner_study.py")).arg(dir).output().unwrap();
    assert!(out.status.success(), "scanner_study.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("MADE "))
        .map(|l| {
            let (kind, path) = l.split_once(' ').unwrap();
            (kind.to_string(), PathBuf::from(path))
        })
        .collect()
}

fn dcmsend(node: &Node, files: &[PathBuf]) -> std::process::Output {
    Command::new("dcmsend")
        .env("TCP_NODELAY", "1")
        .args(["-v", "-nh", "-aet", "STORESCU", "-aec", "TRIAGE", "127.0.0.1", &node.port.to_string()])
        .args(files)
        .output()
        .unwrap()
}

/// Every file under the data directory and the whole log, searched for each planted marker.
fn assert_nothing_planted(node: &Node, markers: &[&str]) {
    for path in walk(&node.data_dir()) {
        let bytes = std::fs::read(&path).unwrap();
        for m in markers {
            assert!(!bytes.windows(m.len()).any(|w| w == m.as_bytes()), "{m} found in {}", path.display());
        }
    }
    let log = node.log();
    for m in markers {
        assert!(!log.contains(m), "{m} found in the log");
    }
}

/// A CT scanner's study (axial series, localizer, dose SR, dose screen, KOS, presentation state)
/// sent with storescu, and MG, XA, NM, breast tomosynthesis, US, SEG, RT, ECG, SR and PDF objects
/// sent with dcmsend: every instance Success, each stored de-identified, the objects with content
/// outside the header stored as their header only (the reason recorded), and no planted value
/// anywhere under the data directory or in the log.
#[test]
fn a_scanner_study_and_every_other_rooms_objects_are_stored_de_identified() {
    if !peers_ready() || !have_tool("dcmsend") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let objects = make_objects(work.path());
    // A CT model that takes original primary axial images and, of several such series, the thinnest.
    let models = tempfile::tempdir().unwrap();
    let manifest = format!("{}\n[series]\nimage_type_all = [\"ORIGINAL\", \"PRIMARY\", \"AXIAL\"]\npick = \"thinnest\"\n", TINY.replace("MODALITY", "CT"));
    let node = Node::start(NodeOptions { inference: vec![tiny_package(models.path(), &manifest)], ..Default::default() });
    let (ct, others): (Vec<_>, Vec<_>) =
        objects.iter().partition(|(kind, _)| ["ct-axial", "ct-thick", "ct-localizer", "dose-sr", "dose-screen", "kos", "gsps"].contains(&kind.as_str()));
    let ct: Vec<PathBuf> = ct.iter().map(|(_, p)| p.clone()).collect();
    let others: Vec<PathBuf> = others.iter().map(|(_, p)| p.clone()).collect();
    let out = node.storescu(&ct);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "storescu: {text}");
    assert_eq!(text.matches("Received Store Response (Success)").count(), ct.len(), "storescu: {text}");
    let out = dcmsend(&node, &others);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "dcmsend: {text}");
    assert_eq!(text.matches("Received C-STORE Response (Success)").count(), others.len(), "dcmsend: {text}");
    assert_eq!(node.stored_files().len(), objects.len());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let excluded: std::collections::BTreeMap<String, i64> = rt.block_on(db.excluded_counts()).unwrap().into_iter().collect();
    let count = |reason: &str| excluded.get(reason).copied().unwrap_or(0);
    // dose SR, KOS, SR; the PDF; the ECG; the presentation state.
    assert_eq!(count("header only: structured content (Content Sequence) not kept"), 3, "{excluded:?}");
    assert_eq!(count("header only: encapsulated document not kept"), 1, "{excluded:?}");
    assert_eq!(count("header only: waveform data not kept"), 1, "{excluded:?}");
    assert_eq!(count("header only: graphic and text annotations not kept"), 1, "{excluded:?}");
    assert_eq!(count("Burned In Annotation is YES"), 1, "the dose screen: {excluded:?}");
    // The store holds exactly what `triage-node deid` makes of each received file. dcmsend
    // proposes Explicit VR beside an Implicit VR file's own syntax and converts it when the
    // node chooses Explicit (its preference): those were not received as on disk.
    let stored: Vec<Vec<u8>> = node.stored_files().iter().map(|p| std::fs::read(p).unwrap()).collect();
    let as_sent: Vec<&(String, PathBuf)> = objects.iter().filter(|(_, p)| meta_of(p).1.trim_end_matches('\0') != "1.2.840.10008.1.2").collect();
    assert!(as_sent.len() >= objects.len() - 2, "{}", as_sent.len());
    let differing: Vec<&str> = as_sent.iter().filter(|(_, p)| !stored.contains(&expected_deid(p))).map(|(k, _)| k.as_str()).collect();
    assert!(differing.is_empty(), "stored differently from `triage-node deid`: {differing:?}");

    // One result for the CT study, from the thin axial series: not the thick one, not the
    // localizer, the dose report, the dose screen, the KOS or the presentation state.
    let first = |kind: &str| objects.iter().find(|(k, _)| k == kind).unwrap().1.clone();
    let uid = |path: &Path, tag| dicom_object::open_file(path).unwrap().element(tag).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
    use dicom_dictionary_std::tags;
    let study = deid_uid(&uid(&first("ct-axial"), tags::STUDY_INSTANCE_UID));
    let results = wait_results(&rt, &db, std::slice::from_ref(&study), Duration::from_secs(60), &node).remove(0);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].series_instance_uid.as_deref(), Some(deid_uid(&uid(&first("ct-axial"), tags::SERIES_INSTANCE_UID)).as_str()));
    assert_eq!(results[0].images_inferred, 6, "the thin axial series' six images");
    assert_nothing_planted(&node, &["PLANTED"]);
}

/// A class the site refuses is rejected at negotiation; the rest of the send goes on.
#[test]
fn a_refused_storage_class_is_rejected_at_negotiation_and_nothing_else_is() {
    if !peers_ready() || !have_tool("dcmsend") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let objects = make_objects(work.path());
    let pick = |kind: &str| objects.iter().find(|(k, _)| k == kind).unwrap().1.clone();
    let node = Node::start(NodeOptions { storage: vec!["refuse_sop_classes = [\"1.2.840.10008.5.1.4.1.1.104.1\"]".into()], ..Default::default() });
    let out = dcmsend(&node, &[pick("pdf"), pick("mg")]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("No presentation context found for sending C-STORE with SOP Class / Transfer Syntax: EncapsulatedPDFStorage"), "{text}");
    assert_eq!(text.matches("Received C-STORE Response (Success)").count(), 1, "{text}");
    assert_eq!(node.stored_files().len(), 1);
    // A class that is not a standard storage class is a configuration error, named.
    let cfg = work.path().join("bad.toml");
    std::fs::write(&cfg, "[storage]\naccept_sop_classes = [\"1.2.3\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triage-node")).args(["--config", cfg.to_str().unwrap(), "serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage.accept_sop_classes") && err.contains("1.2.3 is not a standard Storage SOP Class UID"), "{err}");
}

/// MPPS from pynetdicom as the modality: N-CREATE, the C-STOREs, N-SET COMPLETED listing them,
/// and the study is ready although the quiet period (10 minutes) has not passed. A step listing
/// an instance not yet stored waits for it; a DISCONTINUED step that lists nothing leaves the
/// study to the quiet period. The statuses of PS3.4 F.7.2 for the requests it must refuse, and
/// nothing of the step's patient anywhere under the data directory or in the log.
#[test]
fn a_completed_procedure_step_completes_its_study_without_the_quiet_period() {
    if !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let first = make_objects(&work.path().join("a"));
    let second = make_objects(&work.path().join("b"));
    let third = make_objects(&work.path().join("c"));
    let node = Node::start(NodeOptions { ingest: vec!["study_quiet_period = \"10m\"".into()], ..Default::default() });
    let of = |objects: &[(String, PathBuf)], kind: &str| -> Vec<String> {
        objects.iter().filter(|(k, _)| k == kind).map(|(_, p)| p.display().to_string()).collect()
    };
    let ready = || node.log().matches("by=\"procedure step\"").count() + node.log().matches("by=procedure step").count();

    // 1. The usual order, with the refusals probed after the step ended.
    let axial = of(&first, "ct-axial");
    let mut args = vec!["mpps", "--probe", "--store"];
    args.extend(axial.iter().map(String::as_str));
    let lines = node.pynetdicom(&args);
    let status = |kind: &str| lines.iter().find(|l| l.starts_with(&format!("{kind} "))).cloned().unwrap_or_default();
    assert!(status("NCREATE").starts_with("NCREATE 0x0000"), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("STORED 0x0000")).count(), axial.len(), "{lines:?}");
    assert_eq!(status("NSET"), "NSET 0x0000");
    assert_eq!(status("NSET-AGAIN"), "NSET-AGAIN 0x0110 A710", "an ended step may no longer be updated");
    assert_eq!(status("NSET-UNKNOWN"), "NSET-UNKNOWN 0x0112");
    assert_eq!(status("NCREATE-DUPLICATE"), "NCREATE-DUPLICATE 0x0111");
    assert_eq!(status("NCREATE-COMPLETED"), "NCREATE-COMPLETED 0x0106");
    assert!(node.wait_for_log("study ready", Duration::from_secs(20)), "not promoted by the step:\n{}", node.log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ready(), 1, "{}", node.log());

    // 2. DISCONTINUED, listing nothing: the quiet period decides.
    let thick = of(&third, "ct-thick");
    let mut args = vec!["mpps", "--state", "DISCONTINUED", "--list", "--store"];
    args.extend(thick.iter().map(String::as_str));
    let lines = node.pynetdicom(&args);
    assert!(lines.iter().any(|l| l == "NSET 0x0000"), "{lines:?}");

    // 3. COMPLETED first, listing three instances of which two are sent: the study waits.
    let thick = of(&second, "ct-thick");
    let mut args = vec!["mpps", "--set-first", "--list"];
    args.extend(thick.iter().map(String::as_str));
    args.push("--store");
    args.extend(thick[..2].iter().map(String::as_str));
    let lines = node.pynetdicom(&args);
    assert!(lines.iter().any(|l| l == "NSET 0x0000"), "{lines:?}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ready(), 1, "a study promoted before its listed instances, or a DISCONTINUED step without any:\n{}", node.log());
    let stored = node.pynetdicom_store(&thick[2..]);
    assert!(stored[1].starts_with("STORED 0x0000"), "{stored:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ready() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ready(), 2, "the last listed instance did not complete the study:\n{}", node.log());
    let status = String::from_utf8_lossy(&node.cli(&["status"]).stdout).to_string();
    assert!(status.contains("procedure steps (MPPS) COMPLETED: 2") && status.contains("procedure steps (MPPS) DISCONTINUED: 1"), "{status}");
    assert_nothing_planted(&node, &["PLANTED", "MPPSPATIENT"]);
}

/// A procedure step from an AE that sent none of the study's instances (another modality naming
/// the study) is recorded and has no effect: the study waits for its own modality's step (or the
/// quiet period). And one AE may hold only so many steps in progress: 0x0213 beyond.
#[test]
fn only_a_modality_that_sent_the_study_completes_it_by_mpps() {
    if !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let objects = make_objects(&work.path().join("a"));
    let node = Node::start(NodeOptions { ingest: vec!["study_quiet_period = \"10m\"".into(), "mpps_max_open_steps = 2".into()], ..Default::default() });
    assert!(node.cli(&["ae", "add", "OTHERMOD", "--host", "127.0.0.1"]).status.success());
    let axial: Vec<String> = objects.iter().filter(|(k, _)| k == "ct-axial").map(|(_, p)| p.display().to_string()).collect();
    assert!(axial.len() >= 3, "{axial:?}");
    let ready = || node.log().matches("by=\"procedure step\"").count() + node.log().matches("by=procedure step").count();

    // The study's modality (PYNETDICOM) stores one slice; another modality's completed step
    // names the study and lists exactly that slice.
    let stored = node.pynetdicom_store(&axial[..1]);
    assert!(stored.iter().any(|l| l.starts_with("STORED 0x0000")), "{stored:?}");
    let lines = node.pynetdicom(&["--aet", "OTHERMOD", "mpps", "--list", &axial[0]]);
    assert!(lines.iter().any(|l| l.starts_with("NCREATE 0x0000")) && lines.iter().any(|l| l == "NSET 0x0000"), "{lines:?}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ready(), 0, "another modality's step completed the study:\n{}", node.log());

    // The study's own modality ends its step listing every slice it sends: that completes it.
    let mut args = vec!["mpps", "--list"];
    args.extend(axial.iter().map(String::as_str));
    args.push("--store");
    args.extend(axial[1..].iter().map(String::as_str));
    let lines = node.pynetdicom(&args);
    assert!(lines.iter().any(|l| l == "NSET 0x0000"), "{lines:?}");
    assert!(node.wait_for_log("study ready", Duration::from_secs(20)), "not promoted by its own modality's step:\n{}", node.log());

    // Two steps in progress are the cap here; the third N-CREATE is refused.
    let study = String::from_utf8(
        Command::new(python().unwrap())
            .args(["-c", "import pydicom,sys; print(pydicom.dcmread(sys.argv[1], stop_before_pixels=True).StudyInstanceUID)", &axial[0]])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut creates = Vec::new();
    for _ in 0..3 {
        let lines = node.pynetdicom(&["--aet", "OTHERMOD", "mpps", "--study", study.trim(), "--state", "IN PROGRESS", "--list"]);
        creates.push(lines.iter().find(|l| l.starts_with("NCREATE ")).cloned().unwrap_or_default());
    }
    assert!(creates[0].starts_with("NCREATE 0x0000") && creates[1].starts_with("NCREATE 0x0000"), "{creates:?}");
    assert!(creates[2].starts_with("NCREATE 0x0213"), "{creates:?}");
}

/// The shipped CT demonstration model on generated head CT series (real slice, synthetic
/// lesion): the lesion's study is positive with its key slice inside the lesion and the result
/// naming the series; the study without one is negative. Each study is completed by its MPPS.
#[test]
fn the_ct_demo_model_finds_the_lesion_on_adjacent_slices_and_names_its_series() {
    if !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let script = repo().join("scripts/train-ct-demo-model.py");
    let make = |name: &str, lesion: bool| -> (Vec<PathBuf>, Option<(usize, usize)>) {
        let dir = work.path().join(name);
        let mut c = Command::new(python().unwrap());
        c.arg(&script).args(["series", dir.to_str().unwrap(), "24"]);
        if lesion {
            c.arg("lesion");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("LESION")).unwrap().to_string();
        let range: Vec<usize> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        let mut files: Vec<PathBuf> = walk(&dir);
        files.sort();
        (files, (range.len() == 2).then(|| (range[0], range[1])))
    };
    let (with, spread) = make("with", true);
    let (without, _) = make("without", false);
    let (first, last) = spread.unwrap();
    let pacs_dir = work.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let (pacs, pacs_port) = crate::common::storescp(&pacs_dir);
    let _pacs = Killed(pacs);
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", repo().join("models").display())],
        ingest: vec!["study_quiet_period = \"10m\"".into()],
        results: vec!["destinations = [\"PACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        ..Default::default()
    });
    let added = node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &pacs_port.to_string()]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    for files in [&with, &without] {
        let mut args = vec!["mpps".to_string(), "--store".to_string()];
        args.extend(files.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let lines = node.pynetdicom(&args);
        assert!(lines.iter().any(|l| l == "NSET 0x0000"), "{lines:?}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uid = |path: &Path, tag| dicom_object::open_file(path).unwrap().element(tag).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
    use dicom_dictionary_std::tags;
    let studies = [deid_uid(&uid(&with[0], tags::STUDY_INSTANCE_UID)), deid_uid(&uid(&without[0], tags::STUDY_INSTANCE_UID))];
    let results = wait_results(&rt, &db, &studies, Duration::from_secs(90), &node);
    let ct = |r: &[triage_node::db::StudyResult]| r.iter().find(|r| r.model == "demo-ct-hyperdense").cloned().unwrap_or_else(|| panic!("no CT result: {r:?}"));
    let (pos, neg) = (ct(&results[0]), ct(&results[1]));
    assert_eq!(pos.series_instance_uid.as_deref(), Some(deid_uid(&uid(&with[0], tags::SERIES_INSTANCE_UID)).as_str()));
    assert_eq!(pos.images_inferred, 24);
    let finding = &pos.findings[0];
    assert!(finding.positive, "the lesion's study: {pos:?}");
    assert!(!neg.findings[0].positive, "the study without a lesion: {:?}", neg.findings[0]);
    // The key slice is one the lesion shows on.
    let key = rt.block_on(db.instance_ref(finding.key_instance_id)).unwrap().unwrap();
    let index = with.iter().position(|p| deid_uid(&uid(p, tags::SOP_INSTANCE_UID)) == key.sop_instance_uid).unwrap();
    assert!((first..=last).contains(&index), "key slice {index}, lesion on {first}..={last}");

    // At the PACS, in the positive study: the Parametric Map on the key slice's grid and in its
    // Frame of Reference, holding the model's activation; the SR's region and peak on the key
    // slice, and the peak in the patient, in the slice's plane.
    wait_until("both reports at the PACS", Duration::from_secs(60), || node.log().matches("AI report delivered").count() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    let delivered = walk(&pacs_dir);
    let read = crate::results::check(&delivered.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let study = uid(&with[0], tags::STUDY_INSTANCE_UID);
    let ours: Vec<&serde_json::Value> = read.iter().filter(|r| r["study_uid"] == study.as_str()).collect();
    let map = ours.iter().find(|r| r["sop_class"] == crate::results::PM).unwrap_or_else(|| panic!("a map: {ours:?}"));
    let map_file = Path::new(map["file"].as_str().unwrap());
    let compared = crate::results::compare_map(map_file, finding);
    assert!(compared["max_abs_difference"].as_f64().unwrap() < 1e-3, "{compared}");
    let key_file = &with[index];
    // A frame per slice of the run the finding stands on (k = 2 adjacent slices), in slice
    // order, the key slice among them, each slice one the lesion shows on.
    assert_eq!(finding.span.len(), 2, "{:?}", finding.span.iter().map(|s| s.instance_id).collect::<Vec<_>>());
    let frame_sources: Vec<String> = compared["frame_sources"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(frame_sources.len(), 2, "{compared}");
    let slice_of = |sop: &str| with.iter().position(|p| uid(p, tags::SOP_INSTANCE_UID) == sop).unwrap();
    let places: Vec<usize> = frame_sources.iter().map(|s| slice_of(s)).collect();
    assert!(places.contains(&index) && places.iter().all(|i| (first..=last).contains(i)), "{places:?}, lesion on {first}..={last}");
    assert_eq!(places[1].abs_diff(places[0]), 1, "adjacent slices: {places:?}");
    assert_eq!(compared["frame_of_reference"].as_str(), Some(uid(key_file, tags::FRAME_OF_REFERENCE_UID).as_str()), "re-identified: the slice's own");
    let sr = ours.iter().find(|r| r["modality"] == "SR").unwrap();
    let sr_file = Path::new(sr["file"].as_str().unwrap());
    for f in [map_file, sr_file] {
        assert!(dciodvfy_errors(f).is_empty(), "dciodvfy on {}: {:?}", f.display(), dciodvfy_errors(f));
    }
    assert!(pixelmed_errors(sr_file).is_empty(), "{:?}", pixelmed_errors(sr_file));
    let regions = sr["sr"]["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 3, "region, peak, and the peak in the patient: {regions:?}");
    let in_patient = regions.iter().find(|r| r.get("frame_of_reference").is_some()).unwrap();
    assert_eq!(in_patient["frame_of_reference"].as_str(), Some(uid(key_file, tags::FRAME_OF_REFERENCE_UID).as_str()));
    let z = uid(key_file, tags::IMAGE_POSITION_PATIENT).split('\\').nth(2).unwrap().trim().parse::<f64>().unwrap();
    let peak_z = in_patient["points"][0][2].as_f64().unwrap();
    assert!((peak_z - z).abs() < 1e-3, "an axial slice's point lies in its plane: {peak_z} vs {z}");
}
