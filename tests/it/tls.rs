//! DICOM over TLS (PS3.15 B.9, BCP 195) against real peers: DCMTK `echoscu`/`storescu` with
//! `+tls` in each of its BCP 195 profiles, pynetdicom with an `ssl` context, and DCMTK
//! `storescp +tls` as a PACS that we call. Certificates come from a throwaway CA made with the
//! `openssl` command for each test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A throwaway PKI: `ca` signs the node's, the client's and the PACS's certificates; `rogue`
/// is a second CA nobody trusts, signing an intruder's and an impostor PACS's.
struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl").args(args).current_dir(cwd).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "rogue"] {
            openssl(
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={ca} test CA"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
                d,
            );
        }
        std::fs::write(d.join("leaf.ext"), "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        for (leaf, ca) in [("node", "ca"), ("client", "ca"), ("pacs", "ca"), ("intruder", "rogue"), ("impostor", "rogue")] {
            openssl(
                &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &format!("{leaf}.key"), "-out", &format!("{leaf}.csr"), "-subj", &format!("/CN={leaf}")],
                d,
            );
            openssl(
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{leaf}.csr"),
                    "-CA",
                    &format!("{ca}.crt"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-out",
                    &format!("{leaf}.crt"),
                    "-days",
                    "2",
                    "-extfile",
                    "leaf.ext",
                ],
                d,
            );
        }
        Pki { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `[dicom.tls]` lines for a node serving `node.crt` and trusting `ca` for clients and peers.
    fn node_settings(&self, extra: &[&str]) -> String {
        let mut s = format!(
            "[dicom.tls]\nenabled = true\ncertificate = \"{}\"\nprivate_key = \"{}\"\nclient_ca = \"{}\"\npeer_ca = \"{}\"\n",
            self.file("node.crt"),
            self.file("node.key"),
            self.file("ca.crt"),
            self.file("ca.crt")
        );
        for line in extra {
            s.push_str(line);
            s.push('\n');
        }
        s
    }
}

fn tls_node(pki: &Pki, extra: &[&str], register: Vec<&'static str>) -> Node {
    Node::start(NodeOptions { extra: vec![pki.node_settings(extra)], register, ..Default::default() })
}

/// A DCMTK tool over TLS to the node's TLS port: `identity` is (key, certificate), or None for
/// anonymous TLS (no client certificate).
fn dcmtk_tls(node: &Node, tool: &str, aet: &str, identity: Option<(&str, &str)>, pki: &Pki, extra: &[&str]) -> Output {
    dcmtk_tls_files(node, tool, aet, identity, pki, extra, &[])
}

fn dcmtk_tls_files(node: &Node, tool: &str, aet: &str, identity: Option<(&str, &str)>, pki: &Pki, extra: &[&str], files: &[&str]) -> Output {
    let mut c = Command::new(tool);
    c.env("TCP_NODELAY", "1").args(["-aet", aet, "-aec", "TRIAGE"]);
    match identity {
        Some((key, cert)) => c.args(["+tls", &pki.file(key), &pki.file(cert)]),
        None => c.arg("+tla"),
    };
    c.args(["+cf", &pki.file("ca.crt")]).args(extra).args(["127.0.0.1", &node.tls_port.expect("TLS port").to_string()]).args(files);
    c.output().expect("run DCMTK tool")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn pynetdicom_tls(node: &Node, pki: &Pki, cert: Option<&str>) -> Vec<String> {
    let port = node.tls_port.unwrap().to_string();
    let mut c = Command::new(python().unwrap());
    c.arg(repo().join("tests/peers/pynetdicom_peer.py")).args(["--port", &port, "--tls-ca", &pki.file("ca.crt")]);
    if let Some(name) = cert {
        c.args(["--tls-cert", &pki.file(&format!("{name}.crt")), "--tls-key", &pki.file(&format!("{name}.key"))]);
    }
    let out = c.arg("echo").output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn dcmtk_and_pynetdicom_associate_over_tls_with_a_certificate_the_node_trusts() {
    if !peers_ready() || !have_tool("openssl") {
        return;
    }
    let pki = Pki::new();
    let node = tls_node(&pki, &[], vec!["STORESCU", "ECHOSCU", "PYNETDICOM"]);
    assert!(node.tls_port.is_some() && node.port != 0, "both ports are open: {}", node.log());

    // echoscu in each of DCMTK's BCP 195 profiles: the default non-downgrading one, the plain
    // one (TLS 1.2 suites) and the extended one.
    for profile in ["+py", "+px", "+pz"] {
        let out = dcmtk_tls(&node, "echoscu", "ECHOSCU", Some(("client.key", "client.crt")), &pki, &[profile, "-v"]);
        assert!(out.status.success(), "echoscu {profile}: {}\n{}", text(&out), node.log());
    }
    // The retired AES profile (TLS_RSA_WITH_AES_128_CBC_SHA, no forward secrecy) is not BCP 195.
    let out = dcmtk_tls(&node, "echoscu", "ECHOSCU", Some(("client.key", "client.crt")), &pki, &["+pa"]);
    assert!(!out.status.success(), "the retired AES profile was accepted: {}", text(&out));

    // An instance stored over TLS is stored like any other.
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let out = dcmtk_tls_files(&node, "storescu", "STORESCU", Some(("client.key", "client.crt")), &pki, &["-v", "-R"], &[file.to_str().unwrap()]);
    assert!(text(&out).contains("Received Store Response (Success)"), "{}\n{}", text(&out), node.log());
    assert_eq!(node.stored_files().len(), 1);
    let (uid, _) = meta_of(&file);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    assert!(rt.block_on(db.find_instance(&deid_uid(&uid))).unwrap().is_some(), "no row for the instance stored over TLS");

    // pynetdicom through Python's ssl module, which also checks that the node's certificate
    // names the address it called.
    let lines = pynetdicom_tls(&node, &pki, Some("client"));
    assert!(lines.iter().any(|l| l == "ECHO 0x0000"), "{lines:?}\n{}", node.log());
}

#[test]
fn a_client_certificate_from_another_ca_or_none_is_refused_and_the_node_goes_on() {
    if !peers_ready() || !have_tool("openssl") {
        return;
    }
    let pki = Pki::new();
    let node = tls_node(&pki, &[], vec!["ECHOSCU", "PYNETDICOM"]);
    let intruder = dcmtk_tls(&node, "echoscu", "ECHOSCU", Some(("intruder.key", "intruder.crt")), &pki, &[]);
    assert!(!intruder.status.success(), "a certificate from another CA was accepted: {}", text(&intruder));
    let anonymous = dcmtk_tls(&node, "echoscu", "ECHOSCU", None, &pki, &[]);
    assert!(!anonymous.status.success(), "no client certificate was accepted: {}", text(&anonymous));
    let lines = pynetdicom_tls(&node, &pki, None);
    assert!(!lines.iter().any(|l| l.starts_with("ECHO")), "{lines:?}");
    assert!(node.wait_for_log("TLS handshake failed", Duration::from_secs(5)), "{}", node.log());
    // Plain TCP to the TLS port is no way round it: the bytes are not a TLS handshake.
    let plain = Command::new("echoscu")
        .env("TCP_NODELAY", "1")
        .args(["-aet", "ECHOSCU", "-aec", "TRIAGE", "127.0.0.1", &node.tls_port.unwrap().to_string()])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "{}", text(&plain));
    // The node still answers, on both ports.
    let ok = dcmtk_tls(&node, "echoscu", "ECHOSCU", Some(("client.key", "client.crt")), &pki, &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(node.dcmtk("echoscu", &["-aet", "ECHOSCU", "-aec", "TRIAGE"]).status.success());
}

#[test]
fn an_ae_registered_as_tls_is_refused_on_the_plain_port() {
    if !peers_ready() || !have_tool("openssl") {
        return;
    }
    let pki = Pki::new();
    let node = tls_node(&pki, &[], vec!["ECHOSCU"]);
    assert!(node.cli(&["ae", "add", "SECURECT", "--tls", "--tls-identity", "client"]).status.success());
    let listed = String::from_utf8_lossy(&node.cli(&["ae", "list"]).stdout).to_string();
    assert!(listed.lines().any(|l| l.split_whitespace().take(4).collect::<Vec<_>>() == ["SECURECT", "modality", "yes", "yes"]), "{listed}");
    let plain = node.dcmtk("echoscu", &["-aet", "SECURECT", "-aec", "TRIAGE"]);
    assert!(!plain.status.success(), "{}", text(&plain));
    assert!(text(&plain).contains("Calling AE Title Not Recognized"), "{}", text(&plain));
    assert!(node.wait_for_log("registered as TLS and called on the plain port", Duration::from_secs(5)), "{}", node.log());
    let secure = dcmtk_tls(&node, "echoscu", "SECURECT", Some(("client.key", "client.crt")), &pki, &[]);
    assert!(secure.status.success(), "{}\n{}", text(&secure), node.log());
    // Other AEs keep the plain port.
    assert!(node.dcmtk("echoscu", &["-aet", "ECHOSCU", "-aec", "TRIAGE"]).status.success());
}

/// An AE title is bound to the identity its client certificate must carry: a modality's
/// certificate, signed by the site CA, calling as the PACS's AE title is refused with
/// A-ASSOCIATE-RJ (calling AE title not recognized); the PACS's own certificate is answered as
/// the PACS. A TLS-only AE bound to no identity is refused while client certificates are asked
/// for (any certificate of the site CA could claim it), and says how to fix it.
#[test]
fn a_client_certificate_must_name_the_ae_title_it_calls_as() {
    if !peers_ready() || !have_tool("openssl") {
        return;
    }
    let pki = Pki::new();
    let node = tls_node(&pki, &[], vec!["ECHOSCU"]);
    let port = node.port.to_string();
    for args in [
        vec!["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &port, "--tls", "--tls-identity", "pacs"],
        vec!["ae", "add", "CTROOM", "--tls", "--tls-identity", "client"],
        vec!["ae", "add", "LOOSE", "--tls"],
    ] {
        let out = node.cli(&args);
        assert!(out.status.success(), "{}", text(&out));
    }
    let listed = String::from_utf8_lossy(&node.cli(&["ae", "list"]).stdout).to_string();
    assert!(listed.lines().any(|l| l.starts_with("PACS") && l.trim_end().ends_with("pacs")), "{listed}");
    // An identity binds only where a certificate is shown: it needs TLS only.
    let plain = node.cli(&["ae", "add", "HALFBOUND", "--tls-identity", "client"]);
    assert!(!plain.status.success() && text(&plain).contains("--tls-identity needs --tls"), "{}", text(&plain));
    // On the plain port the PACS's AE title is refused outright.
    let plain_pacs = node.dcmtk("echoscu", &["-aet", "PACS", "-aec", "TRIAGE"]);
    assert!(!plain_pacs.status.success(), "{}", text(&plain_pacs));

    let impostor = dcmtk_tls(&node, "echoscu", "PACS", Some(("client.key", "client.crt")), &pki, &[]);
    assert!(!impostor.status.success(), "a modality's certificate was answered as the PACS: {}", text(&impostor));
    assert!(text(&impostor).contains("Calling AE Title Not Recognized"), "{}", text(&impostor));
    assert!(node.wait_for_log("does not name the identity this AE title is bound to", Duration::from_secs(5)), "{}", node.log());
    let pacs = dcmtk_tls(&node, "echoscu", "PACS", Some(("pacs.key", "pacs.crt")), &pki, &[]);
    assert!(
        pacs.status.success(),
        "{}
{}",
        text(&pacs),
        node.log()
    );
    let modality = dcmtk_tls(&node, "echoscu", "CTROOM", Some(("client.key", "client.crt")), &pki, &[]);
    assert!(
        modality.status.success(),
        "{}
{}",
        text(&modality),
        node.log()
    );
    let loose = dcmtk_tls(&node, "echoscu", "LOOSE", Some(("client.key", "client.crt")), &pki, &[]);
    assert!(!loose.status.success(), "{}", text(&loose));
    assert!(node.wait_for_log("bound to no certificate identity (ae add --tls-identity)", Duration::from_secs(5)), "{}", node.log());
    // Refusals are counted by reason.
    let http = format!("http://127.0.0.1:{}", node.http_port.expect("the HTTP port"));
    let metrics = reqwest::blocking::get(format!("{http}/metrics")).unwrap().text().unwrap();
    assert!(metrics.contains("triage_associations_rejected_total{reason=\"tls_identity\"} 2"), "{metrics}");
}

#[test]
fn tls_only_opens_no_plain_port_and_a_silent_handshake_ends_within_artim() {
    if !peers_ready() || !have_tool("openssl") {
        return;
    }
    let pki = Pki::new();
    let node = Node::start(NodeOptions {
        dicom: vec!["artim_timeout = \"1s\"".into()],
        extra: vec![pki.node_settings(&["plain_port = false"])],
        register: vec!["ECHOSCU"],
        ..Default::default()
    });
    assert_eq!(node.port, 0, "a plain port was opened: {}", node.log());
    let log = node.log();
    let line = log.lines().find(|l| l.contains("listening tls_port=") || l.contains("listening port=")).unwrap();
    assert!(line.contains("tls_port=") && !line.contains(" port="), "{line}");
    let ok = dcmtk_tls(&node, "echoscu", "ECHOSCU", Some(("client.key", "client.crt")), &pki, &[]);
    assert!(ok.status.success(), "{}", text(&ok));

    // A client that connects and never finishes its handshake holds a slot only until ARTIM:
    // one that sends nothing, and one that stops half-way through its ClientHello.
    use std::io::{Read, Write};
    for first_bytes in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", node.tls_port.unwrap())).unwrap();
        socket.write_all(first_bytes).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let closed = matches!(socket.read(&mut buf), Ok(0) | Err(_));
        assert!(closed && started.elapsed() < Duration::from_secs(15), "the connection was held for {:?}", started.elapsed());
    }
    assert!(node.wait_for_log("TLS handshake not finished within the ARTIM timeout", Duration::from_secs(5)), "{}", node.log());
}

/// DCMTK storescp as a PACS on TLS: `cert` is its certificate ("pacs" from our CA, or
/// "impostor" from the rogue one); it requires a client certificate from our CA.
fn tls_storescp(pki: &Pki, cert: &str, port: u16, dir: &Path) -> Child {
    let child = Command::new("storescp")
        .env("TCP_NODELAY", "1")
        .args(["-aet", "PACS", "+tls", &pki.file(&format!("{cert}.key")), &pki.file(&format!("{cert}.crt")), "+cf", &pki.file("ca.crt"), "-rc", "-od"])
        .arg(dir)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "storescp did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn we_call_a_tls_pacs_over_tls_and_check_its_certificate() {
    if !peers_ready() || !have_tool("openssl") || !have_tool("storescp") {
        return;
    }
    let pki = Pki::new();
    let node = tls_node(&pki, &[], vec![]);
    let received = tempfile::tempdir().unwrap();
    let port = free_port();
    let _pacs = Killed(tls_storescp(&pki, "pacs", port, received.path()));
    let add = node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &port.to_string(), "--tls"]);
    assert!(add.status.success(), "{}", text(&add));

    // The operator's C-ECHO, and a C-STORE through the durable outbox, both over TLS.
    let echo = node.cli(&["echo", "--to", "PACS"]);
    assert!(echo.status.success(), "{}", text(&echo));
    let files: Vec<PathBuf> = walk(&testdata().unwrap().join("series")).into_iter().take(2).collect();
    let mut args = vec!["outbox".to_string(), "add".into(), "--to".into(), "PACS".into()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let out = node.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    while walk(received.path()).len() < files.len() {
        assert!(Instant::now() < deadline, "not delivered over TLS: {}\n{}", String::from_utf8_lossy(&node.cli(&["outbox", "list"]).stdout), node.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // The same registration pointing at a PACS whose certificate our CA did not sign: refused.
    let port2 = free_port();
    let _impostor = Killed(tls_storescp(&pki, "impostor", port2, received.path()));
    assert!(node.cli(&["ae", "add", "PACS2", "--role", "pacs", "--host", "127.0.0.1", "--port", &port2.to_string(), "--tls"]).status.success());
    let echo = node.cli(&["echo", "--to", "PACS2"]);
    assert!(!echo.status.success());
    assert!(text(&echo).contains("TLS handshake with 127.0.0.1"), "{}", text(&echo));
}

#[test]
fn a_tls_ae_without_a_tls_client_configuration_is_a_clear_error() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { register: vec![], ..Default::default() });
    assert!(node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", "104", "--tls"]).status.success());
    let echo = node.cli(&["echo", "--to", "PACS"]);
    assert!(!echo.status.success());
    assert!(text(&echo).contains("registered as TLS, and this node has no TLS client configuration (dicom.tls.peer_ca)"), "{}", text(&echo));
}

#[test]
fn a_tls_port_without_a_certificate_stops_the_node_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[dicom]\nport = 0\n[dicom.tls]\nenabled = true\nport = 0\n[storage]\ndata_dir = \"{}\"\n[inference]\nmodels_dir = \"{}\"\n",
            dir.path().join("data").display(),
            dir.path().join("none").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triage-node")).envs(test_keys()).args(["--config", config.to_str().unwrap(), "serve"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("dicom.tls.certificate"), "{}", text(&out));
}
