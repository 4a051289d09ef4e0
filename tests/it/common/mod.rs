//! Test harness: launches the real `triage-node` binary with a generated config in its own temp
//! dir, learns the port from the `listening port=` log line, and drives real peers (DCMTK,
//! pynetdicom). A missing external tool skips the test with a message, except under `CI=true`,
//! where it fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Skip (locally) or fail (under CI=true) when a prerequisite is missing.
pub fn require(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    let msg = format!("{what} is missing: run scripts/setup-test-env.sh");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

pub fn have_tool(name: &str) -> bool {
    require(name, Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().map(|o| o.status.success()).unwrap_or(false))
}

pub fn testdata() -> Option<PathBuf> {
    let dir = repo().join(".testdata");
    require("the test corpus (.testdata/)", dir.join("VERSION").exists()).then_some(dir)
}

pub fn python() -> Option<PathBuf> {
    let py = repo().join(".venv/bin/python");
    require("the Python venv (.venv)", py.exists()).then_some(py)
}

/// Everything the DCMTK + pynetdicom tests need.
pub fn peers_ready() -> bool {
    have_tool("storescu") && testdata().is_some() && python().is_some()
}

pub struct NodeOptions {
    /// Extra TOML lines for each generated section.
    pub dicom: Vec<String>,
    pub storage: Vec<String>,
    pub ingest: Vec<String>,
    pub deid: Vec<String>,
    pub delivery: Vec<String>,
    /// [inference] lines; without `models_dir`, the node loads no model package.
    pub inference: Vec<String>,
    /// [results] lines (destinations, uid_root, ...).
    pub results: Vec<String>,
    pub database_url: Option<String>,
    /// [http] lines (the API listens on a free port with the test tokens unless told otherwise).
    pub http: Vec<String>,
    /// Whole sections appended as they are (`[hl7]\nenabled = true`).
    pub extra: Vec<String>,
    pub json_logs: bool,
    pub register: Vec<&'static str>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            dicom: vec![],
            storage: vec![],
            ingest: vec![],
            deid: vec![],
            delivery: vec![],
            inference: vec![],
            results: vec![],
            database_url: None,
            http: vec![],
            extra: vec![],
            json_logs: false,
            register: vec!["STORESCU", "ECHOSCU", "PYNETDICOM"],
        }
    }
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    /// The TLS port, when `[dicom.tls]` is enabled.
    pub tls_port: Option<u16>,
    /// The HTTP API's port, when it is enabled.
    pub http_port: Option<u16>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Node {
    pub fn start(opts: NodeOptions) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("node.toml");
        let mut toml = String::from("[dicom]\nbind = \"127.0.0.1\"\n");
        let section = |toml: &mut String, lines: &[String]| {
            for line in lines {
                toml.push_str(line);
                toml.push('\n');
            }
        };
        let mut dicom = opts.dicom.clone();
        for (key, default) in [("artim_timeout", "\"5s\""), ("idle_timeout", "\"30s\"")] {
            if !dicom.iter().any(|l| l.starts_with(key)) {
                dicom.push(format!("{key} = {default}"));
            }
        }
        section(&mut toml, &dicom);
        toml.push_str(&format!("[storage]\ndata_dir = \"{}\"\n", dir.path().join("data").display()));
        let mut storage = opts.storage.clone();
        if !storage.iter().any(|l| l.contains("min_free_disk")) {
            storage.push("min_free_disk = \"0\"".into());
        }
        section(&mut toml, &storage);
        toml.push_str("[ingest]\n");
        let mut ingest = opts.ingest.clone();
        if !ingest.iter().any(|l| l.contains("study_quiet_period")) {
            ingest.push("study_quiet_period = \"2s\"".into());
        }
        section(&mut toml, &ingest);
        if !opts.deid.is_empty() {
            toml.push_str("[deid]\n");
            section(&mut toml, &opts.deid);
        }
        if !opts.delivery.is_empty() {
            toml.push_str("[delivery]\n");
            section(&mut toml, &opts.delivery);
        }
        toml.push_str("[inference]\n");
        let mut inference = opts.inference.clone();
        if !inference.iter().any(|l| l.starts_with("device")) {
            inference.push("device = \"cpu\"".into());
        }
        if !inference.iter().any(|l| l.starts_with("models_dir")) {
            inference.push(format!("models_dir = \"{}\"", dir.path().join("no-models").display()));
        }
        section(&mut toml, &inference);
        if !opts.results.is_empty() {
            toml.push_str("[results]\n");
            section(&mut toml, &opts.results);
        }
        if !opts.http.is_empty() {
            toml.push_str("[http]\n");
            section(&mut toml, &opts.http);
        }
        if let Some(url) = &opts.database_url {
            toml.push_str(&format!("[database]\nurl = \"{url}\"\n"));
        }
        for section in &opts.extra {
            toml.push_str(section);
            toml.push('\n');
        }
        toml.push_str(&format!("[log]\nformat = \"{}\"\nlevel = \"debug,sqlx=warn\"\n", if opts.json_logs { "json" } else { "text" }));
        std::fs::write(&config, toml).unwrap();
        let mut node = Node { dir, config, port: 0, tls_port: None, http_port: None, child: None, log: Arc::new(Mutex::new(String::new())) };
        for ae in &opts.register {
            let out = node.cli(&["ae", "add", ae]);
            assert!(out.status.success(), "ae add {ae}: {}", String::from_utf8_lossy(&out.stderr));
        }
        node.launch();
        node
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Start the binary (again) on the same config and data; wait for its listening line.
    pub fn launch(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_triage-node"))
            .args(["--config", self.config.to_str().unwrap(), "serve"])
            // The port comes from the environment layer: proves TRIAGE__SECTION__KEY overrides.
            .env("TRIAGE__DICOM__PORT", "0")
            .env("TRIAGE__DICOM__TLS__PORT", "0")
            .env("TRIAGE__HTTP__PORT", "0")
            .env("TRIAGE_HTTP_TOKENS", TEST_TOKENS)
            .envs(test_keys())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn triage-node");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if line.contains("listening ") && (line.contains(" port=") || line.contains("tls_port=")) {
                    let _ = tx.send(Listening::Dicom(listening_port(&line), port_after(&line, "tls_port=")));
                }
                if let Some(port) = port_after(&line, "http_port=") {
                    let _ = tx.send(Listening::Http(port));
                }
            }
        });
        self.child = Some(child);
        self.http_port = None;
        // The HTTP API binds before the DICOM listener logs its port.
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Listening::Http(port)) => self.http_port = Some(port),
                Ok(Listening::Dicom(port, tls)) => {
                    self.port = port.unwrap_or(0);
                    self.tls_port = tls;
                    break;
                }
                Err(_) => panic!("node did not log `listening port=`; log:\n{}", self.log()),
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Run an administrative command against this node's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_triage-node")).envs(test_keys()).arg("--config").arg(&self.config).args(args).output().expect("run triage-node")
    }

    /// The running node's peak resident memory (VmHWM), in KiB.
    pub fn peak_rss_kb(&self) -> u64 {
        let pid = self.child.as_ref().expect("node running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()).unwrap()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code (None if it had to be killed).
    /// The running node's process id (to send it a signal).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn sigterm(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub async fn db(&self) -> triage_node::db::Db {
        let settings = triage_node::config::Settings::load(Some(&self.config)).unwrap();
        triage_node::db::Db::open(&settings.database_url(), 2).await.unwrap()
    }

    /// A DCMTK tool run against this node, Nagle off as in production.
    pub fn dcmtk(&self, tool: &str, args: &[&str]) -> Output {
        let port = self.port.to_string();
        Command::new(tool).env("TCP_NODELAY", "1").args(args).args(["127.0.0.1", &port]).output().expect("run DCMTK tool")
    }

    /// storescu proposing exactly each file's own transfer syntax (-R: required contexts only).
    pub fn storescu(&self, files: &[PathBuf]) -> Output {
        let port = self.port.to_string();
        Command::new("storescu")
            .env("TCP_NODELAY", "1")
            .args(["-v", "-R", "-aet", "STORESCU", "-aec", "TRIAGE", "127.0.0.1", &port])
            .args(files)
            .output()
            .expect("run storescu")
    }

    /// The pynetdicom peer (tests/peers/pynetdicom_peer.py); returns its stdout lines.
    pub fn pynetdicom(&self, args: &[&str]) -> Vec<String> {
        let out = self.pynetdicom_command(args).output().expect("run pynetdicom peer");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "pynetdicom peer failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout.lines().map(str::to_string).collect()
    }

    /// Send `files` in one pynetdicom association, each exactly as on disk; returns its lines.
    pub fn pynetdicom_store<P: AsRef<Path>>(&self, files: &[P]) -> Vec<String> {
        let names: Vec<String> = files.iter().map(|p| p.as_ref().display().to_string()).collect();
        let mut args = vec!["store"];
        args.extend(names.iter().map(String::as_str));
        self.pynetdicom(&args)
    }

    pub fn pynetdicom_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(python().expect("venv"));
        c.arg(repo().join("tests/peers/pynetdicom_peer.py")).args(["--port", &self.port.to_string()]).args(args);
        c
    }

    pub fn stored_files(&self) -> Vec<PathBuf> {
        walk(&self.data_dir().join("store"))
    }

    pub fn spool_files(&self) -> Vec<PathBuf> {
        walk(&self.data_dir().join("spool"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What the node's log said it listens on: the DICOM ports (plain, TLS), or the HTTP port.
enum Listening {
    Dicom(Option<u16>, Option<u16>),
    Http(u16),
}

fn port_after(line: &str, key: &str) -> Option<u16> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

/// The test tokens every node accepts (TRIAGE_HTTP_TOKENS): two readers and an admin.
pub const READER_TOKEN: &str = "reader-token-0123456789abcdef";
pub const READER2_TOKEN: &str = "reader2-token-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef0";
/// A `modality` token (STOW-RS only), for the gateway `ct-gateway`.
pub const MODALITY_TOKEN: &str = "modality-token-0123456789abcdef";
pub const TEST_TOKENS: &str = "dr.grey:reader:reader-token-0123456789abcdef,dr.house:reader:reader2-token-0123456789abcdef,it-admin:admin:admin-token-0123456789abcdef0,ct-gateway:modality:modality-token-0123456789abcdef";

pub fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening port=")? + "listening port=".len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The site secrets every test node runs with (64 hex digits each).
pub const PSEUDONYM_KEY: &str = "5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed5e1ec7ed";
pub const MAP_KEY: &str = "0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c";

pub fn test_keys() -> [(&'static str, &'static str); 2] {
    [("TRIAGE_PSEUDONYM_KEY", PSEUDONYM_KEY), ("TRIAGE_REID_MAP_KEY", MAP_KEY)]
}

/// The engine a test node runs with default options.
pub fn deidentifier() -> triage_node::deid::Deidentifier {
    let keys = triage_node::deid::Keys::from_hex(PSEUDONYM_KEY, MAP_KEY).unwrap();
    triage_node::deid::Deidentifier::new(keys, vec![], vec![])
}

/// The UID a test node gives an original UID.
pub fn deid_uid(original: &str) -> String {
    deidentifier().keys().uid(original)
}

/// What a test node must have stored for `file` (its de-identified form, the whole Part 10 file).
pub fn expected_deid(file: &Path) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let (path, _) = triage_node::deid::file::export(&deidentifier(), file, out.path(), true).unwrap();
    std::fs::read(path).unwrap()
}

/// The bytes of a Part 10 file's top-level pixel group (group 7FE0 elements), as encoded.
pub fn pixel_data_bytes(path: &Path) -> Vec<u8> {
    let layout = triage_node::deid::file::describe(path).unwrap();
    let (start, end) = layout.pixel_range().expect("file has Pixel Data");
    let offset = layout.dataset_offset;
    std::fs::read(path).unwrap()[(offset + start) as usize..(offset + end) as usize].to_vec()
}

/// The data set bytes of a Part 10 file (everything after the File Meta Information).
pub fn dataset_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[128..132], b"DICM", "{} is not Part 10", path.display());
    // (0002,0000) File Meta Information Group Length, explicit VR LE: tag 4 + VR 2 + len 2 + UL 4.
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    bytes[144 + group_len..].to_vec()
}

/// SOP Instance UID and Transfer Syntax UID from a file's meta.
pub fn meta_of(path: &Path) -> (String, String) {
    let meta = dicom_object::meta::FileMetaTable::from_reader(&std::fs::read(path).unwrap()[128..]).unwrap();
    (meta.media_storage_sop_instance_uid().to_string(), meta.transfer_syntax().to_string())
}

/// A fresh PostgreSQL database for one test, or None (skip locally, fail under CI) when no
/// server answers. Override the admin URL with TRIAGE_TEST_POSTGRES.
pub async fn postgres_database() -> Option<String> {
    use sqlx::Executor;
    let admin = std::env::var("TRIAGE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let pool = match sqlx::AnyPool::connect(&admin).await {
        Ok(p) => p,
        Err(e) => {
            require(&format!("PostgreSQL at {admin} ({e})"), false);
            return None;
        }
    };
    let name = format!("triage_test_{}", uuid::Uuid::new_v4().simple());
    pool.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    pool.close().await;
    let base = admin.rsplit_once('/').unwrap().0;
    Some(format!("{base}/{name}"))
}

/// Drop a database made by `postgres_database` (best effort: a leftover is harmless).
pub async fn drop_postgres_database(url: &str) {
    use sqlx::Executor;
    let admin = std::env::var("TRIAGE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = url.rsplit('/').next().unwrap_or_default();
    if let Ok(pool) = sqlx::AnyPool::connect(&admin).await {
        let _ = pool.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
        pool.close().await;
    }
}

/// The Study Instance UID of a Part 10 file.
pub fn study_uid_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    obj.element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0').trim().to_string()
}

/// The labelled demo cases made at set-up (scripts/train-demo-model.py cases), with labels.
pub fn demo_cases() -> Option<(PathBuf, Vec<(PathBuf, bool)>)> {
    let dir = testdata()?.join("demo-cases");
    let labels = std::fs::read_to_string(dir.join("labels.csv")).ok();
    require("the demo cases (scripts/setup-test-env.sh)", labels.is_some()).then_some(())?;
    let cases = labels.unwrap().lines().skip(1).filter_map(|l| l.split_once(',')).map(|(f, v)| (dir.join(f), v.trim() == "1")).collect();
    Some((dir, cases))
}

/// A TCP port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `N` distinct free ports: all bound at once, then released (two `free_port` calls in a row
/// may get the same port back).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// Where Debian's `orthanc-dicomweb` puts the plugin.
pub const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// A real PACS: Orthanc from Debian, on loopback, with its own config and storage in a temp dir.
pub struct Orthanc {
    pub dir: tempfile::TempDir,
    pub dicom_port: u16,
    pub http_port: u16,
    child: Child,
}

impl Orthanc {
    pub fn start() -> Orthanc {
        Orthanc::start_knowing(&[])
    }

    /// Start with `modalities` (AE title, port on 127.0.0.1) declared, so Orthanc can open
    /// associations to them (Storage Commitment reports).
    pub fn start_knowing(modalities: &[(&str, u16)]) -> Orthanc {
        Orthanc::start_with(modalities, serde_json::json!({}))
    }

    /// Start with its DICOMweb plugin (Debian `orthanc-dicomweb`, at `/dicom-web/`): `http_port`
    /// chosen (None: a free one), and `users` (name, password) required by HTTP basic auth when
    /// given.
    pub fn start_dicomweb(http_port: Option<u16>, users: &[(&str, &str)]) -> Orthanc {
        let mut extra = serde_json::json!({
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": true, "Root": "/dicom-web/"},
        });
        if let Some(port) = http_port {
            extra["HttpPort"] = port.into();
        }
        if !users.is_empty() {
            extra["AuthenticationEnabled"] = true.into();
            extra["RegisteredUsers"] = users.iter().map(|(u, p)| (u.to_string(), serde_json::json!(p))).collect::<serde_json::Map<_, _>>().into();
        }
        Orthanc::start_with(&[], extra)
    }

    /// The DICOMweb service's base URL (STOW-RS at `<base>/studies`).
    pub fn dicomweb_url(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.http_port)
    }

    /// Start with `extra` keys of Orthanc's configuration replacing the tests' defaults.
    pub fn start_with(modalities: &[(&str, u16)], extra: serde_json::Value) -> Orthanc {
        let dir = tempfile::tempdir().unwrap();
        let [dicom_port, spare] = free_ports();
        let http_port = extra.get("HttpPort").and_then(|p| p.as_u64()).map_or(spare, |p| p as u16);
        let mut config = serde_json::json!({
            "Name": "triage-node-tests",
            "StorageDirectory": dir.path().join("db"),
            "IndexDirectory": dir.path().join("db"),
            "DicomAet": "ORTHANC",
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": true,
            "DicomAlwaysAllowStore": true,
            "UnknownSopClassAccepted": false,
            "Plugins": [],
            "StableAge": 1,
            "DicomModalities": modalities.iter().map(|(ae, port)| (ae.to_lowercase(), serde_json::json!([ae, "127.0.0.1", port]))).collect::<serde_json::Map<_, _>>(),
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            config[key] = value.clone();
        }
        let path = dir.path().join("orthanc.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let child = Command::new("Orthanc")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("orthanc.log")).unwrap())
            .spawn()
            .expect("start Orthanc");
        let orthanc = Orthanc { dir, dicom_port, http_port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !orthanc.python(&["ready", &http_port.to_string()]).status.success() {
            assert!(Instant::now() < deadline, "Orthanc did not start: {}", orthanc.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        orthanc
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }

    pub fn python(&self, args: &[&str]) -> Output {
        Command::new(python().unwrap()).arg(repo().join("tests/peers/orthanc.py")).args(args).output().unwrap()
    }

    /// Every instance Orthanc holds in the study with this Study Instance UID, downloaded.
    pub fn study(&self, study_uid: &str) -> Vec<serde_json::Value> {
        let out_dir = self.dir.path().join("download").join(study_uid);
        let out = self.python(&["study", &self.http_port.to_string(), study_uid, out_dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Pixelmed SR validator (the one IHE AI Results names) on an SR file: its error lines.
/// Warnings are not errors; the two it gives on our findings are explained in the conformance
/// statement (2.2.3).
pub fn pixelmed_errors(file: &Path) -> Vec<String> {
    let out = Command::new("java")
        .args(["-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0"])
        .args(["-cp", "/usr/share/java/pixelmed.jar", "com.pixelmed.validate.DicomSRValidator"])
        .arg(file)
        .output()
        .expect("run the Pixelmed SR validator");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || text.contains("Error"), "the validator did not run: {text}");
    assert!(text.contains("Validat") || text.contains("Found"), "no validation output: {text}");
    let sr = dicom_object::open_file(file).ok();
    text.lines().filter(|l| l.starts_with("Error") && !sr.as_ref().is_some_and(|sr| pixelmed_defect(sr, l))).map(str::to_string).collect()
}

/// Pixelmed's own defects (its 2022 release, Debian's libpixelmed-java), not the object's:
/// - under TID 1500's Imaging Measurements it checks every Measurement Group against TID 1410,
///   1411 or 1501 at once, chosen by one test over all the groups (exactly one SCOORD Image Region
///   among them, or any Referenced Segmentation Frame, or any Referenced Segment), not by the
///   template each group declares: an error of template T at a group whose Content Template
///   Sequence names another template is that choice, dropped;
/// - its TID 1410 has no SCOORD3D Image Region (111030, DCM) row (a region in the patient's
///   coordinates, which PS3.16 TID 1410 and highdicom's ImageRegion3D allow): the Row 5 / Row 7
///   "Missing conditional content item" of a TID 1410 group holding one is dropped.
fn pixelmed_defect(sr: &dicom_object::InMemDicomObject, line: &str) -> bool {
    use dicom_dictionary_std::tags;
    let Some(template) = line.strip_prefix("Error: Template ").and_then(|r| r.split(' ').next()) else { return false };
    let Some(at) = line.split("within ").nth(1).and_then(|r| r.split(':').next()) else { return false };
    // "1.8.3": the root, its 8th content item (Imaging Measurements), that one's 3rd (the group).
    let path: Vec<usize> = at.split('.').skip(1).take(2).filter_map(|n| n.parse().ok()).collect();
    let children = |o: &dicom_object::InMemDicomObject| o.get(tags::CONTENT_SEQUENCE).and_then(|e| e.items()).map(<[_]>::to_vec).unwrap_or_default();
    let concept = |o: &dicom_object::InMemDicomObject| {
        o.get(tags::CONCEPT_NAME_CODE_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|i| i.first().and_then(|c| c.get(tags::CODE_VALUE)).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let text = |o: &dicom_object::InMemDicomObject, tag| o.get(tag).and_then(|e| e.to_str().ok()).map(|v| v.trim().to_string()).unwrap_or_default();
    let [measurements, group] = path[..] else { return false };
    let Some(container) = children(sr).get(measurements.wrapping_sub(1)).cloned().filter(|c| concept(c) == "126010") else { return false };
    let Some(group) = children(&container).get(group.wrapping_sub(1)).cloned().filter(|g| concept(g) == "125007") else { return false };
    let declared = group
        .get(tags::CONTENT_TEMPLATE_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|i| i.first().map(|t| text(t, tags::TEMPLATE_IDENTIFIER)))
        .unwrap_or_default();
    if declared != template {
        return true;
    }
    let region_in_patient = children(&group).iter().any(|i| text(i, tags::VALUE_TYPE) == "SCOORD3D" && concept(i) == "111030");
    template == "1410"
        && region_in_patient
        && line.ends_with("Missing conditional content item")
        && (line.contains("[Row 5] SCOORD (111030") || line.contains("[Row 7] IMAGE (121214"))
}

/// `dciodvfy` on a file: its error lines (an empty list is a pass; warnings are not errors).
pub fn dciodvfy_errors(file: &Path) -> Vec<String> {
    let out = Command::new("dciodvfy").arg(file).output().expect("run dciodvfy");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().filter(|l| l.starts_with("Error") && !DCIODVFY_DEFECTS.contains(l)).map(str::to_string).collect()
}

/// dciodvfy's own defects, not the object's: it checks Minimum and Maximum Stored Value Mapped
/// (0028,1231/1232), FD numbers of a float Parametric Map's colour range (PS3.3 C.7.6.16.2.38;
/// PS3.17 Annex BBBB is such a map), as if they were enumerated strings.
const DCIODVFY_DEFECTS: [&str; 2] = [
    "Error - Non-string attribute while verifying string enumerated value for attribute <Minimum Stored Value Mappe>",
    "Error - Non-string attribute while verifying string enumerated value for attribute <Maximum Stored Value Mapped>",
];

/// A models folder holding the tiny test model under `manifest`.
pub fn tiny_package(root: &Path, manifest: &str) -> String {
    let dir = root.join("tiny");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(testdata().unwrap().join("models/tiny.pt"), dir.join("model.pt")).unwrap();
    std::fs::write(dir.join("model.toml"), manifest).unwrap();
    format!("models_dir = \"{}\"", root.display())
}

pub const TINY: &str = r#"
name = "tiny"
version = "0.1"
intended_use = "Test fixture: two made-up findings."
limits = "Not a medical device; fixed random weights."
[routing]
modalities = ["MODALITY"]
[input]
size = [8, 8]
channels = 1
window = { CT = { center = 40, width = 400 } }
[outputs]
labels = ["nodule", "effusion"]
positive = [0.5, 0.5]
urgent = [0.9, 0.95]
probabilities = 0
cam = 1
[aggregate]
method = "mean_top_k"
k = 3
"#;

/// Wait until every study in `uids` has a result.
pub fn wait_results(
    rt: &tokio::runtime::Runtime,
    db: &triage_node::db::Db,
    uids: &[String],
    timeout: Duration,
    node: &Node,
) -> Vec<Vec<triage_node::db::StudyResult>> {
    let deadline = Instant::now() + timeout;
    loop {
        let all: Vec<Vec<triage_node::db::StudyResult>> = uids.iter().map(|u| rt.block_on(db.study_results(u)).unwrap()).collect();
        if all.iter().all(|r| !r.is_empty()) {
            return all;
        }
        assert!(Instant::now() < deadline, "no result for every study in {timeout:?}; log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// DCMTK storescp listening on a free port: (the process, its port). A port that was free
/// when drawn can be taken before storescp binds it (by another test's outgoing connection, as
/// storescp binds every address); then storescp exits, and another port is tried.
pub fn storescp(dir: &Path) -> (Child, u16) {
    storescp_with(dir, &["+uf"])
}

/// `storescp` with options of its own (`-aet PACS`, `+xa`, ...) before the output folder.
pub fn storescp_with(dir: &Path, options: &[&str]) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("storescp")
            .args(options)
            .args(["-od", dir.to_str().unwrap(), &port.to_string()])
            .env("TCP_NODELAY", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("storescp");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, port);
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("storescp did not listen on any of 5 free ports");
}

/// DCMTK storescp on `port` (chosen before: a PACS registered while it is down), with
/// `options`, once it listens.
pub fn storescp_at(port: u16, dir: &Path, options: &[&str]) -> Killed {
    let child = Command::new("storescp")
        .args(options)
        .args(["-od", dir.to_str().unwrap(), &port.to_string()])
        .env("TCP_NODELAY", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescp");
    let mut scp = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline && scp.0.try_wait().ok().flatten().is_none(), "storescp did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    scp
}

/// A models folder under `root` holding package `name`: its model.pt made by the Python script
/// `script` of tests/peers, its manifest `manifest`. None (skipped) without the venv.
pub fn scripted_package(root: &Path, name: &str, script: &str, manifest: &str) -> Option<String> {
    let python = python()?;
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(python).arg(repo().join("tests/peers").join(script)).arg(dir.join("model.pt")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("model.toml"), manifest).unwrap();
    Some(format!("models_dir = \"{}\"", root.display()))
}

/// Poll `done` every 100 ms until it holds; panic after `timeout` with the node's log.
pub fn wait_for(node: &Node, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The text of `tag` in a DICOM file, trimmed ("" when absent).
pub fn attr_text(file: &Path, tag: dicom_core::Tag) -> String {
    let obj = dicom_object::open_file(file).unwrap();
    obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().trim_end_matches('\0').to_string()).unwrap_or_default()
}

/// Each line of a JSON Lines file (none when it does not exist yet).
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tests/peers/qr_peer.py (pynetdicom Q/R SCU and more): one JSON value per line it printed.
pub fn qr_peer(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(python().unwrap()).arg(repo().join("tests/peers/qr_peer.py")).args(args).output().unwrap();
    assert!(out.status.success(), "qr_peer {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("{l}"))).collect()
}

/// Poll `done` every 100 ms until it holds; panic after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Python peer script of tests/peers run with `args`, once it has printed `ready` (its first
/// line); killed when dropped.
pub fn python_peer(script: &str, args: &[&str], ready: &str) -> Killed {
    let mut child = Command::new(python().unwrap()).arg(repo().join("tests/peers").join(script)).args(args).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), ready);
    Killed(child)
}
