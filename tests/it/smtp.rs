//! The SMTP transport (`delivery::smtp::send`) against a real SMTP server: aiosmtpd
//! (`tests/peers/smtp_receiver.py`), with a throwaway CA and certificate made with `openssl`.
//! The receiver parses each message with Python's email package and writes what it found, so the
//! checks read a MIME parser's view of our message, not our own.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::Digest;
use triage_node::delivery::smtp::{self, Attachment, Mail, Posted, Security, SmtpServer};

use crate::common::*;

struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(out: &Path, args: &[&str]) -> Receiver {
        let mut child = Command::new(python().unwrap())
            .arg(repo().join("tests/peers/smtp_receiver.py"))
            .args(["--out", out.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("ready port=").unwrap_or_else(|| panic!("smtp_receiver said {line:?}")).parse().unwrap();
        Receiver { child, port, out: out.to_path_buf() }
    }

    /// The records (`<n>.json`) of the messages received, in order.
    fn received(&self) -> Vec<Value> {
        (1..)
            .map(|n| self.out.join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python with aiosmtpd, and openssl for the certificates.
fn ready() -> bool {
    let Some(py) = python() else { return false };
    let aiosmtpd = Command::new(py).args(["-c", "import aiosmtpd"]).output().map(|o| o.status.success()).unwrap_or(false);
    require("aiosmtpd in .venv", aiosmtpd) && have_tool("openssl")
}

fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl").args(args).current_dir(cwd).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `ca.crt` and the server's `server.crt`/`server.key` (localhost, 127.0.0.1) signed by it.
pub(crate) fn certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let with_key = |head: &[&'static str], tail: &[&'static str]| [head, &ec[..], tail].concat();
    openssl(&with_key(&["req", "-x509"], &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=smtp test CA"]), dir);
    openssl(&with_key(&["req"], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]), dir);
    std::fs::write(dir.join("leaf.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
        dir,
    );
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        std::fs::write(dir.path().join("password"), "s3cret pass\n").unwrap();
        std::fs::write(dir.path().join("wrong"), "guess\n").unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls_receiver(&self, extra: &[&str]) -> Receiver {
        let (cert, key) = (self.path("server.crt"), self.path("server.key"));
        let args = [&["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()][..], extra].concat();
        Receiver::start(&self.path("out"), &args)
    }

    fn server(&self, port: u16, security: Security) -> SmtpServer {
        SmtpServer {
            port,
            security,
            username: Some("triage".into()),
            password_file: Some(self.path("password")),
            ca_file: Some(self.path("ca.crt")),
            timeout: Duration::from_secs(5),
            helo_name: "node.test".into(),
            ..SmtpServer::new("127.0.0.1", "triage@node.test")
        }
    }
}

const PREVIEW: &[u8] = b"\x89PNG\r\n\x1a\n a small preview, not a real picture .\r\n.\r\n";

fn mail() -> Mail {
    Mail {
        to: vec!["oncall@hospital.test".into(), "radiology@hospital.test".into()],
        subject: "Dringend: Blutung – CT Kopf".into(),
        text: "An urgent finding.\n.a line that starts with a dot\n.\nend\n".into(),
        message_id: "notice-1f2e3d@node.test".into(),
        attachments: vec![Attachment { filename: "preview.png".into(), mime: "image/png".into(), bytes: PREVIEW.to_vec() }],
    }
}

#[tokio::test]
async fn starttls_auth_plain_mail_is_delivered_and_parses() {
    if !ready() {
        return;
    }
    let setup = Setup::new();
    let receiver = setup.tls_receiver(&["--starttls", "--require-starttls", "--auth", "triage:s3cret pass"]);
    let server = setup.server(receiver.port, Security::StartTls);
    assert_eq!(smtp::send(&server, &mail()).await, Posted::Delivered);

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m["tls"], true, "{m}");
    assert_eq!(m["authenticated"], true);
    assert_eq!(m["login"], "triage");
    assert_eq!(m["mail_from"], "triage@node.test");
    assert_eq!(m["rcpt_tos"], serde_json::json!(["oncall@hospital.test", "radiology@hospital.test"]));
    let h = &m["headers"];
    assert_eq!(h["subject"], "Dringend: Blutung – CT Kopf");
    assert_eq!(h["message_id"], "<notice-1f2e3d@node.test>");
    assert_eq!(h["from"], "triage@node.test");
    assert_eq!(h["to"], "oncall@hospital.test, radiology@hospital.test");
    assert_eq!(h["mime_version"], "1.0");
    assert_eq!(h["content_type"], "multipart/mixed");
    assert!(h["date"].as_str().unwrap().ends_with("+0000"));
    assert_eq!(m["defects"], serde_json::json!([]));
    assert_eq!(m["text"].as_str().unwrap().replace("\r\n", "\n"), "An urgent finding.\n.a line that starts with a dot\n.\nend\n");
    let attachments = m["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0]["filename"], "preview.png");
    assert_eq!(attachments[0]["content_type"], "image/png");
    assert_eq!(attachments[0]["size"], PREVIEW.len());
    assert_eq!(attachments[0]["sha256"], hex::encode(sha2::Sha256::digest(PREVIEW)));
    let eml = String::from_utf8(std::fs::read(receiver.out.join("1.eml")).unwrap()).unwrap();
    assert!(eml.split("\r\n").all(|l| l.len() <= 78), "{eml}");
}

#[tokio::test]
async fn implicit_tls_with_auth_login_is_delivered() {
    if !ready() {
        return;
    }
    let setup = Setup::new();
    let receiver = setup.tls_receiver(&["--implicit-tls", "--auth", "triage:s3cret pass", "--no-auth-plain"]);
    let server = setup.server(receiver.port, Security::Tls);
    let plain = Mail { attachments: vec![], ..mail() };
    assert_eq!(smtp::send(&server, &plain).await, Posted::Delivered);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["tls"], true);
    assert_eq!(got[0]["authenticated"], true);
    assert_eq!(got[0]["headers"]["content_type"], "text/plain");
    assert_eq!(got[0]["text"].as_str().unwrap().replace("\r\n", "\n"), "An urgent finding.\n.a line that starts with a dot\n.\nend\n");
}

#[tokio::test]
async fn server_without_starttls_is_refused_and_nothing_is_sent_in_clear() {
    if !ready() {
        return;
    }
    let setup = Setup::new();
    let receiver = Receiver::start(&setup.path("out"), &[]);
    let mut server = setup.server(receiver.port, Security::StartTls);
    server.username = None;
    match smtp::send(&server, &mail()).await {
        Posted::Dead(why) => assert!(why.contains("STARTTLS"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn untrusted_certificate_is_retried_and_nothing_is_sent() {
    if !ready() {
        return;
    }
    let setup = Setup::new();
    let receiver = setup.tls_receiver(&["--starttls"]);
    let mut server = setup.server(receiver.port, Security::StartTls);
    server.ca_file = None;
    server.username = None;
    match smtp::send(&server, &mail()).await {
        Posted::Retry { why, unreachable: true } => assert!(why.contains("TLS"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn wrong_password_is_dead() {
    if !ready() {
        return;
    }
    let setup = Setup::new();
    let receiver = setup.tls_receiver(&["--starttls", "--require-starttls", "--auth", "triage:s3cret pass"]);
    let mut server = setup.server(receiver.port, Security::StartTls);
    server.password_file = Some(setup.path("wrong"));
    match smtp::send(&server, &mail()).await {
        Posted::Dead(why) => assert!(why.starts_with("AUTH PLAIN: the SMTP server answered 535"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn refused_recipient_is_dead_and_deferred_one_is_retried() {
    if !ready() {
        return;
    }
    let setup = Setup::new();
    let receiver = Receiver::start(&setup.path("out"), &["--reject-rcpt", "nobody", "--defer-rcpt", "busy"]);
    let mut server = setup.server(receiver.port, Security::Plain);
    server.username = None;
    let to = |second: &str| Mail { to: vec!["oncall@hospital.test".into(), second.into()], ..mail() };
    match smtp::send(&server, &to("nobody@hospital.test")).await {
        Posted::Dead(why) => {
            assert!(why.starts_with("RCPT TO (recipient 2 of 2): the SMTP server answered 550 5.1.1"), "{why}");
            assert!(!why.contains('@'), "{why}");
        }
        other => panic!("{other:?}"),
    }
    match smtp::send(&server, &to("busy@hospital.test")).await {
        Posted::Retry { why, unreachable: false } => assert!(why.contains("450"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(receiver.received().is_empty());
    // The same server takes a mail to good addresses, over plain TCP on loopback.
    assert_eq!(smtp::send(&server, &to("radiology@hospital.test")).await, Posted::Delivered);
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn server_down_is_retried_as_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut server = SmtpServer::new("127.0.0.1", "triage@node.test");
    server.port = port;
    server.timeout = Duration::from_secs(2);
    match smtp::send(&server, &mail()).await {
        Posted::Retry { why, unreachable: true } => assert!(why.starts_with("connecting to the SMTP server"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn plain_to_a_remote_host_is_refused_before_connecting() {
    let mut server = SmtpServer::new("smtp.example.org", "triage@node.test");
    server.security = Security::Plain;
    assert!(matches!(smtp::send(&server, &mail()).await, Posted::Dead(why) if why.contains("plain")));
}
