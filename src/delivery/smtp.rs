//! The SMTP transport: one mail (a notification's text, optionally small attachments such as a
//! PNG preview) handed to a mail server, written by hand on tokio and rustls.
//!
//! The dialogue of RFC 5321: the 220 greeting, EHLO (HELO only over `Plain`), STARTTLS and EHLO
//! again (`StartTls`, the default: a server that does not offer it is refused, nothing goes out
//! in clear), or TLS from the first byte (`Tls`, port 465); AUTH PLAIN (or LOGIN) over TLS only;
//! MAIL FROM, RCPT TO for each recipient, DATA (CRLF line ends, dot-stuffed), QUIT. `Plain` is
//! for a relay on this machine only: a host that is not loopback is refused before connecting,
//! and so is a connection whose peer address turns out not to be loopback. The message is RFC
//! 5322 in 7-bit MIME: Date, From, To, Subject (RFC 2047 when not plain ASCII), the caller's
//! stable Message-ID (receivers deduplicate a mail sent again after a lost answer), then
//! text/plain in UTF-8, or multipart/mixed with base64 attachments.
//!
//! Outcomes as the webhook's (`Posted`): the final 250 after the data = delivered; a 5xx reply =
//! dead with the step and the code; a 4xx, a refused or failed connection, a TLS failure or
//! no answer within `timeout` (which bounds every read and every write) = retry. What the
//! caller gave that cannot be sent (an address with CR/LF or not one `@`, a `Plain` server not
//! on loopback) is dead before any connection.
//!
//! Never logged or kept: the password (read from its file for each mail, zeroized), the body,
//! the recipients' addresses (a reason names a recipient by its position; a server's reply
//! text is kept without any word holding an `@`).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

pub use super::webhook::Posted;
use crate::domain::{base64, canonical_ip, civil_from_days, PeerText};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain TCP, then STARTTLS before anything else; a server that does not offer it is
    /// refused (submission, port 587).
    #[default]
    StartTls,
    /// TLS from the first byte (submissions, port 465).
    Tls,
    /// No TLS at all: only to a loopback host (a relay on this machine).
    Plain,
}

impl Security {
    /// The port this security usually goes with.
    pub fn default_port(self) -> u16 {
        match self {
            Security::StartTls => 587,
            Security::Tls => 465,
            Security::Plain => 25,
        }
    }
}

/// The mail server and how we talk to it.
#[derive(Debug, Clone)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// AUTH (PLAIN, else LOGIN) with this user and the password in `password_file`.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The envelope sender and the From header (a bare address).
    pub from: String,
    /// A PEM file of CAs trusted besides the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// Every read and every write (and the connection) must complete within it.
    pub timeout: Duration,
    /// Our name in EHLO: this machine's fully qualified name.
    pub helo_name: String,
}

impl SmtpServer {
    /// STARTTLS on 587, no AUTH, no extra CA, 30 s, EHLO `localhost`.
    pub fn new(host: impl Into<String>, from: impl Into<String>) -> SmtpServer {
        SmtpServer {
            host: host.into(),
            port: Security::StartTls.default_port(),
            security: Security::StartTls,
            username: None,
            password_file: None,
            from: from.into(),
            ca_file: None,
            timeout: Duration::from_secs(30),
            helo_name: "localhost".into(),
        }
    }
}

/// A file sent with the mail.
#[derive(Clone)]
pub struct Attachment {
    /// Shown to the reader; anything but `[A-Za-z0-9._-]` becomes `_`.
    pub filename: String,
    /// `type/subtype`, e.g. `image/png`.
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// One mail: its recipients, its text and its stable id.
#[derive(Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    /// The Message-ID, stable for this notification (with or without `<>`; without an `@`, the
    /// sender's domain is added).
    pub message_id: String,
    pub attachments: Vec<Attachment>,
}

impl fmt::Debug for Mail {
    /// Sizes only: no address, no subject, no text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("recipients", &self.to.len())
            .field("text_bytes", &self.text.len())
            .field("attachments", &self.attachments.iter().map(|a| a.bytes.len()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a mail was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("smtp settings: {0}")]
    Settings(String),
    #[error("the mail cannot be sent: {0}")]
    Mail(String),
    #[error("reading the smtp password_file: {0}")]
    PasswordFile(std::io::ErrorKind),
    #[error("connecting to the SMTP server: {0}")]
    Connect(String),
    #[error("the SMTP server did not answer {step} within the timeout")]
    Timeout { step: String },
    #[error("{step}: {cause}")]
    Io { step: String, cause: std::io::Error },
    #[error("TLS with the SMTP server: {0}")]
    Tls(String),
    #[error("{step}: the SMTP server answered {reply}")]
    Refused { step: String, reply: Reply },
    #[error("{step}: a malformed answer from the SMTP server ({what})")]
    Protocol { step: String, what: String },
    #[error("the SMTP server does not offer STARTTLS: nothing is sent in clear (security = starttls)")]
    NoStartTls,
    #[error("the SMTP server offers neither AUTH PLAIN nor AUTH LOGIN")]
    NoAuth,
}

impl SmtpError {
    /// The outcome for the outbox: 5xx and what the caller got wrong are dead, the rest later.
    pub fn outcome(&self) -> Posted {
        let why = self.to_string();
        match self {
            SmtpError::Settings(_) | SmtpError::Mail(_) | SmtpError::NoStartTls | SmtpError::NoAuth => Posted::Dead(why),
            SmtpError::Refused { reply, .. } if reply.code >= 500 => Posted::Dead(why),
            // 421: the service is closing the channel (busy, shutting down): the whole lane waits.
            SmtpError::Refused { reply, .. } => Posted::Retry { why, unreachable: reply.code == 421 },
            SmtpError::PasswordFile(_) | SmtpError::Protocol { .. } => Posted::Retry { why, unreachable: false },
            SmtpError::Connect(_) | SmtpError::Timeout { .. } | SmtpError::Io { .. } | SmtpError::Tls(_) => Posted::Retry { why, unreachable: true },
        }
    }
}

/// A server's reply: its code and the text of each line (`Debug` and `Display` show the code
/// and the first line without addresses).
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply({self}, {} lines)", self.lines.len())
    }
}

impl fmt::Display for Reply {
    /// The code and the first line's text, escaped, without any word holding an `@` (servers
    /// echo the address they refuse), at most 160 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.lines.first().map(String::as_str).unwrap_or("");
        let kept: Vec<&str> = text.split(' ').map(|w| if w.contains('@') { "<address>" } else { w }).collect();
        let mut kept = kept.join(" ");
        if kept.chars().count() > 160 {
            kept = kept.chars().take(160).collect::<String>() + "...";
        }
        if kept.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, PeerText(&kept))
        }
    }
}

/// The longest reply line read (RFC 5321 says 512 octets; some servers write longer ones).
const MAX_REPLY_LINE: u64 = 4096;
/// The most lines of one reply.
const MAX_REPLY_LINES: usize = 100;
/// Writes go out in pieces of this size, each within the timeout.
const WRITE_CHUNK: usize = 16 * 1024;

/// One line of a reply: its code, whether more lines follow, its text.
fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, String), String> {
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&line[0]) {
        return Err("a line that does not start with a reply code".into());
    }
    let code = (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
    let (more, text) = match line.get(3) {
        None => (false, &line[3..]),
        Some(b' ') => (false, &line[4..]),
        Some(b'-') => (true, &line[4..]),
        Some(_) => return Err("a reply code followed by neither a space nor a hyphen".into()),
    };
    Ok((code, more, String::from_utf8_lossy(text).into_owned()))
}

/// Read one reply (every line of a multi-line one), bounded in line length and line count.
async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Reply, ReadError> {
    let mut reply: Option<Reply> = None;
    let mut buf = Vec::with_capacity(128);
    loop {
        buf.clear();
        let n = (&mut *reader).take(MAX_REPLY_LINE).read_until(b'\n', &mut buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        if buf.last() != Some(&b'\n') {
            return Err(if n as u64 == MAX_REPLY_LINE { ReadError::Malformed("a reply line too long".into()) } else { ReadError::Closed });
        }
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let (code, more, text) = parse_reply_line(&buf).map_err(ReadError::Malformed)?;
        let r = reply.get_or_insert_with(|| Reply { code, lines: Vec::new() });
        if r.code != code {
            return Err(ReadError::Malformed("the lines of one reply carry different codes".into()));
        }
        r.lines.push(text);
        if !more {
            return Ok(reply.expect("set above"));
        }
        if r.lines.len() >= MAX_REPLY_LINES {
            return Err(ReadError::Malformed("a reply of too many lines".into()));
        }
    }
}

#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Closed,
    Malformed(String),
}

/// What the server's EHLO reply offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Extensions {
    starttls: bool,
    /// AUTH mechanisms, upper case.
    auth: Vec<String>,
    /// SIZE: the largest message accepted (None: not said, or no limit).
    size: Option<u64>,
}

impl Extensions {
    /// The EHLO reply's lines after the first (the server's greeting to us).
    fn parse(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            match keyword.to_ascii_uppercase().as_str() {
                "STARTTLS" => ext.starttls = true,
                "AUTH" => ext.auth.extend(words.map(str::to_ascii_uppercase)),
                "SIZE" => ext.size = words.next().and_then(|n| n.parse::<u64>().ok()).filter(|n| *n > 0),
                _ => {}
            }
        }
        ext
    }
}

/// Anything a session's stream may be: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open SMTP connection; every read and write bounded by `timeout`.
struct Session {
    io: BufReader<Box<dyn Io>>,
    timeout: Duration,
}

impl Session {
    async fn reply(&mut self, step: &str) -> Result<Reply, SmtpError> {
        match tokio::time::timeout(self.timeout, read_reply(&mut self.io)).await {
            Err(_) => Err(SmtpError::Timeout { step: step.into() }),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(ReadError::Io(cause))) => Err(SmtpError::Io { step: step.into(), cause }),
            Ok(Err(ReadError::Closed)) => Err(SmtpError::Io { step: step.into(), cause: std::io::ErrorKind::UnexpectedEof.into() }),
            Ok(Err(ReadError::Malformed(what))) => Err(SmtpError::Protocol { step: step.into(), what }),
        }
    }

    /// A reply whose code is one of `ok`, else `Refused`.
    async fn expect(&mut self, step: &str, ok: &[u16]) -> Result<Reply, SmtpError> {
        let reply = self.reply(step).await?;
        if ok.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(SmtpError::Refused { step: step.into(), reply })
        }
    }

    async fn write(&mut self, step: &str, bytes: &[u8]) -> Result<(), SmtpError> {
        for chunk in bytes.chunks(WRITE_CHUNK) {
            written(step, tokio::time::timeout(self.timeout, self.io.write_all(chunk)).await)?;
        }
        written(step, tokio::time::timeout(self.timeout, self.io.flush()).await)
    }

    /// Send one command line (CRLF added) and read its reply, expecting one of `ok`.
    async fn command(&mut self, step: &str, line: &str, ok: &[u16]) -> Result<Reply, SmtpError> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(line.len() + 2));
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(step, &bytes).await?;
        self.expect(step, ok).await
    }

    /// TLS over the stream so far (nothing may be left unread: bytes a server sent before the
    /// handshake would otherwise be taken as sent under it).
    async fn start_tls(&mut self, host: &str, config: Arc<rustls::ClientConfig>) -> Result<(), SmtpError> {
        if !self.io.buffer().is_empty() {
            return Err(SmtpError::Protocol { step: "STARTTLS".into(), what: "data sent before the TLS handshake".into() });
        }
        let name = server_name(host)?;
        let placeholder: Box<dyn Io> = Box::new(tokio::io::duplex(1).0);
        let plain = std::mem::replace(&mut self.io, BufReader::new(placeholder)).into_inner();
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = match tokio::time::timeout(self.timeout, connector.connect(name, plain)).await {
            Err(_) => return Err(SmtpError::Timeout { step: "the TLS handshake".into() }),
            Ok(Err(e)) => return Err(SmtpError::Tls(e.to_string())),
            Ok(Ok(tls)) => tls,
        };
        self.io = BufReader::new(Box::new(tls));
        Ok(())
    }

    /// EHLO, or for `Plain` HELO when EHLO is refused.
    async fn hello(&mut self, server: &SmtpServer) -> Result<Extensions, SmtpError> {
        match self.command("EHLO", &format!("EHLO {}", server.helo_name), &[250]).await {
            Ok(reply) => Ok(Extensions::parse(&reply)),
            Err(SmtpError::Refused { reply, .. }) if server.security == Security::Plain && reply.code >= 500 => {
                self.command("HELO", &format!("HELO {}", server.helo_name), &[250]).await?;
                Ok(Extensions::default())
            }
            Err(e) => Err(e),
        }
    }

    /// QUIT and close, each bounded; what happens is of no consequence.
    async fn quit(&mut self) {
        let short = self.timeout.min(Duration::from_secs(5));
        let _ = tokio::time::timeout(short, async {
            if self.io.write_all(b"QUIT\r\n").await.is_ok() && self.io.flush().await.is_ok() {
                let _ = read_reply(&mut self.io).await;
            }
            let _ = self.io.shutdown().await;
        })
        .await;
    }
}

/// A bounded write's result as ours.
fn written(step: &str, result: Result<std::io::Result<()>, tokio::time::error::Elapsed>) -> Result<(), SmtpError> {
    match result {
        Err(_) => Err(SmtpError::Timeout { step: step.into() }),
        Ok(Err(cause)) => Err(SmtpError::Io { step: step.into(), cause }),
        Ok(Ok(())) => Ok(()),
    }
}

/// Send `mail` through `server`.
pub async fn send(server: &SmtpServer, mail: &Mail) -> Posted {
    match deliver(server, mail).await {
        Ok(()) => Posted::Delivered,
        Err(e) => e.outcome(),
    }
}

/// Send `mail` through `server`; the error says why not.
pub async fn deliver(server: &SmtpServer, mail: &Mail) -> Result<(), SmtpError> {
    check_settings(server)?;
    let message = build_message(&server.from, mail, SystemTime::now(), &format!("=_triage_{}", uuid::Uuid::new_v4().simple()))?;
    let data = data_block(&message);
    let password = match (&server.username, &server.password_file) {
        (Some(_), Some(path)) => Some(read_password(path).await?),
        (Some(_), None) => return Err(SmtpError::Settings("a username without a password_file".into())),
        (None, _) => None,
    };
    let tls = match server.security {
        Security::Plain => None,
        _ => Some(tls_config(server.ca_file.as_deref())?),
    };
    let mut session = connect(server).await?;
    if let (Security::Tls, Some(config)) = (server.security, &tls) {
        session.start_tls(&server.host, config.clone()).await?;
    }
    let result = dialogue(&mut session, server, mail, tls, password.as_ref(), &data, message.len()).await;
    // After a refusal the server is still talking: say goodbye. After a transport failure
    // there is nobody to say it to.
    if matches!(result, Ok(()) | Err(SmtpError::Refused { .. } | SmtpError::NoStartTls | SmtpError::NoAuth | SmtpError::Mail(_))) {
        session.quit().await;
    }
    result
}

async fn dialogue(
    s: &mut Session,
    server: &SmtpServer,
    mail: &Mail,
    tls: Option<Arc<rustls::ClientConfig>>,
    password: Option<&Zeroizing<String>>,
    data: &[u8],
    size: usize,
) -> Result<(), SmtpError> {
    s.expect("the greeting", &[220]).await?;
    let mut ext = s.hello(server).await?;
    if server.security == Security::StartTls {
        if !ext.starttls {
            return Err(SmtpError::NoStartTls);
        }
        let Some(config) = tls else { return Err(SmtpError::Settings("no TLS configuration for STARTTLS".into())) };
        s.command("STARTTLS", "STARTTLS", &[220]).await?;
        s.start_tls(&server.host, config).await?;
        // RFC 3207: what was learnt before TLS is forgotten.
        ext = s.hello(server).await?;
    }
    if let (Some(user), Some(password)) = (&server.username, password) {
        authenticate(s, &ext, user, password).await?;
    }
    if let Some(limit) = ext.size {
        if size as u64 > limit {
            return Err(SmtpError::Mail(format!("the message is {size} bytes, the server takes at most {limit} (SIZE)")));
        }
    }
    let size_param = if ext.size.is_some() { format!(" SIZE={size}") } else { String::new() };
    s.command("MAIL FROM", &format!("MAIL FROM:<{}>{size_param}", server.from), &[250]).await?;
    let n = mail.to.len();
    for (i, to) in mail.to.iter().enumerate() {
        s.command(&format!("RCPT TO (recipient {} of {n})", i + 1), &format!("RCPT TO:<{to}>"), &[250, 251]).await?;
    }
    s.command("DATA", "DATA", &[354]).await?;
    s.write("the message", data).await?;
    s.expect("the end of the message", &[250]).await?;
    Ok(())
}

/// AUTH PLAIN (RFC 4616) when offered, else AUTH LOGIN.
async fn authenticate(s: &mut Session, ext: &Extensions, user: &str, password: &Zeroizing<String>) -> Result<(), SmtpError> {
    if ext.auth.iter().any(|m| m == "PLAIN") {
        let credentials = Zeroizing::new(format!("\0{user}\0{}", password.as_str()));
        let line = Zeroizing::new(format!("AUTH PLAIN {}", base64(credentials.as_bytes())));
        s.command("AUTH PLAIN", &line, &[235]).await?;
    } else if ext.auth.iter().any(|m| m == "LOGIN") {
        s.command("AUTH LOGIN", "AUTH LOGIN", &[334]).await?;
        s.command("AUTH LOGIN", &base64(user.as_bytes()), &[334]).await?;
        s.command("AUTH LOGIN", &Zeroizing::new(base64(password.as_bytes())), &[235]).await?;
    } else {
        return Err(SmtpError::NoAuth);
    }
    Ok(())
}

/// Whether `host` names this machine (`localhost` or a loopback address).
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| canonical_ip(ip).is_loopback())
}

fn check_settings(server: &SmtpServer) -> Result<(), SmtpError> {
    let bad = |what: &str| Err(SmtpError::Settings(what.into()));
    if server.host.is_empty() || !server.host.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("host is empty or holds spaces or control characters");
    }
    if server.security == Security::Plain && !is_loopback_host(&server.host) {
        return bad("security = plain is only for a relay on this machine (localhost, 127.0.0.1, ::1): use starttls or tls");
    }
    if server.helo_name.is_empty() || !server.helo_name.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("helo_name is empty or holds spaces or control characters");
    }
    if let Some(user) = &server.username {
        if user.is_empty() || user.chars().any(char::is_control) {
            return bad("username is empty or holds control characters");
        }
    }
    check_address(&server.from).map_err(|why| SmtpError::Settings(format!("from: {why}")))?;
    if server.timeout.is_zero() {
        return bad("timeout is zero");
    }
    Ok(())
}

async fn read_password(path: &Path) -> Result<Zeroizing<String>, SmtpError> {
    let text = Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(|e| SmtpError::PasswordFile(e.kind()))?);
    let password = Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_string());
    if password.is_empty() || password.chars().any(|c| c == '\0' || c == '\r' || c == '\n') {
        return Err(SmtpError::Settings("the password_file holds no usable password (empty, or several lines)".into()));
    }
    Ok(password)
}

async fn connect(server: &SmtpServer) -> Result<Session, SmtpError> {
    let host = server.host.trim_start_matches('[').trim_end_matches(']');
    let stream = match tokio::time::timeout(server.timeout, TcpStream::connect((host, server.port))).await {
        Err(_) => return Err(SmtpError::Connect("no connection within the timeout".into())),
        Ok(Err(e)) => return Err(SmtpError::Connect(e.to_string())),
        Ok(Ok(stream)) => stream,
    };
    if server.security == Security::Plain {
        let peer = stream.peer_addr().map_err(|e| SmtpError::Connect(e.to_string()))?;
        if !canonical_ip(peer.ip()).is_loopback() {
            return Err(SmtpError::Settings("security = plain, and the host resolved to an address that is not loopback".into()));
        }
    }
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = Box::new(stream);
    Ok(Session { io: BufReader::new(io), timeout: server.timeout })
}

fn server_name(host: &str) -> Result<ServerName<'static>, SmtpError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| SmtpError::Settings(format!("host is not a name TLS can verify: {e}")))
}

/// rustls with ring, TLS 1.2 and 1.3, the platform's roots plus `ca_file`'s.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, SmtpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = match ca_file {
        None => Vec::new(),
        Some(path) => {
            let bad = |reason: String| SmtpError::Settings(format!("ca_file {}: {reason}", path.display()));
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?.collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            certs
        }
    };
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
        .map_err(|e| SmtpError::Settings(format!("the TLS roots (the platform's, ca_file): {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SmtpError::Settings(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A bare address we are willing to write in a command or a header: printable ASCII, no
/// space, exactly one `@` with something either side, none of the characters that delimit
/// addresses or headers. No CR or LF gets through, so no header or command can be injected.
fn check_address(address: &str) -> Result<(), &'static str> {
    if address.is_empty() || address.len() > 254 {
        return Err("an address is empty or longer than 254 characters");
    }
    if !address.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an address holds a space, a control character (CR, LF) or a character outside ASCII");
    }
    if address.bytes().any(|b| b"<>()[]\\,;:\"".contains(&b)) {
        return Err("an address holds one of < > ( ) [ ] \\ , ; : \"");
    }
    match address.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => Ok(()),
        _ => Err("an address does not hold exactly one @ between a local part and a domain"),
    }
}

/// The Message-ID header's value, `<left@right>`.
fn message_id(id: &str, from: &str) -> Result<String, SmtpError> {
    let bare = id.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(id);
    let full = if bare.contains('@') { bare.to_string() } else { format!("{bare}@{}", from.rsplit('@').next().unwrap_or("localhost")) };
    check_address(&full).map_err(|_| SmtpError::Mail("the message_id is not `left@right` of printable ASCII without delimiters".into()))?;
    Ok(format!("<{full}>"))
}

/// RFC 5322 date-time in UTC: `Thu, 01 Jan 1970 00:00:00 +0000`.
fn rfc5322_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The Subject header's value: as is when short printable ASCII, else RFC 2047 encoded words
/// (UTF-8, base64; none split inside a character), folded. Control characters become spaces.
fn encode_subject(subject: &str) -> String {
    let clean: String = subject.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.is_ascii() && clean.len() <= 900 && !clean.contains("=?") {
        return clean;
    }
    // An encoded word is at most 75 characters: `=?UTF-8?B?` + 60 base64 characters (45 bytes) + `?=`.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in clean.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// `text` with every line end CRLF, ending in one.
fn crlf_lines(text: &str) -> String {
    let mut out = text.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "\r\n");
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out
}

/// The text part's transfer encoding and body: 7bit when it is ASCII in lines of at most 998
/// characters not holding `avoid` (the boundary), else base64 of its UTF-8.
fn text_body(text: &str, avoid: &str) -> (&'static str, String) {
    let text = crlf_lines(text);
    let seven_bit = text.is_ascii() && !text.contains('\0') && text.split("\r\n").all(|l| l.len() <= 998) && (avoid.is_empty() || !text.contains(avoid));
    if seven_bit {
        ("7bit", text)
    } else {
        ("base64", base64_lines(text.as_bytes()))
    }
}

fn check_mime(mime: &str) -> bool {
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    matches!(mime.split_once('/'), Some((t, s)) if token(t) && token(s))
}

fn safe_filename(name: &str) -> String {
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).take(100).collect();
    if name.is_empty() {
        "attachment".into()
    } else {
        name
    }
}

/// The RFC 5322 / MIME message (CRLF line ends, 7-bit), before dot-stuffing. In multipart, each
/// body ends with its own CRLF and the delimiter brings another (RFC 2046 5.1.1: the CRLF before
/// `--boundary` belongs to the delimiter), so the text keeps its last line end.
fn build_message(from: &str, mail: &Mail, at: SystemTime, boundary: &str) -> Result<Vec<u8>, SmtpError> {
    if mail.to.is_empty() {
        return Err(SmtpError::Mail("no recipient".into()));
    }
    let n = mail.to.len();
    for (i, to) in mail.to.iter().enumerate() {
        check_address(to).map_err(|why| SmtpError::Mail(format!("recipient {} of {n}: {why}", i + 1)))?;
    }
    check_address(from).map_err(|why| SmtpError::Mail(format!("from: {why}")))?;
    for (i, a) in mail.attachments.iter().enumerate() {
        if !check_mime(&a.mime) {
            return Err(SmtpError::Mail(format!("attachment {} of {}: its type is not `type/subtype`", i + 1, mail.attachments.len())));
        }
    }
    let mut m = String::new();
    m.push_str(&format!("Date: {}\r\n", rfc5322_date(at)));
    m.push_str(&format!("From: {from}\r\n"));
    m.push_str("To: ");
    let mut width = 4;
    for (i, to) in mail.to.iter().enumerate() {
        if i > 0 {
            m.push(',');
            if width + to.len() + 2 > 76 {
                m.push_str("\r\n");
                width = 0;
            }
            m.push(' ');
            width += 2;
        }
        m.push_str(to);
        width += to.len();
    }
    m.push_str("\r\n");
    m.push_str(&format!("Subject: {}\r\n", encode_subject(&mail.subject)));
    m.push_str(&format!("Message-ID: {}\r\n", message_id(&mail.message_id, from)?));
    m.push_str("MIME-Version: 1.0\r\n");
    // RFC 3834: no vacation auto-reply to a machine's notice.
    m.push_str("Auto-Submitted: auto-generated\r\n");
    if mail.attachments.is_empty() {
        let (encoding, body) = text_body(&mail.text, "");
        m.push_str(&format!("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{body}"));
    } else {
        let (encoding, body) = text_body(&mail.text, boundary);
        m.push_str(&format!("Content-Type: multipart/mixed;\r\n boundary=\"{boundary}\"\r\n\r\n"));
        m.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{body}"));
        for a in &mail.attachments {
            let name = safe_filename(&a.filename);
            m.push_str(&format!(
                "\r\n--{boundary}\r\nContent-Type: {}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                a.mime
            ));
            m.push_str(&base64_lines(&a.bytes));
        }
        m.push_str(&format!("\r\n--{boundary}--\r\n"));
    }
    Ok(m.into_bytes())
}

/// The DATA section: CRLF line ends (a bare CR or LF becomes CRLF), a `.` doubled at the start
/// of a line (RFC 5321 4.5.2), then the terminating `.` line.
fn data_block(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut line_start = true;
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' | b'\n' => {
                if message[i] == b'\r' && message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                out.extend_from_slice(b"\r\n");
                line_start = true;
            }
            b => {
                if line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                line_start = false;
            }
        }
        i += 1;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Base64 in lines of 76 characters, each ended by CRLF (RFC 2045 6.8).
fn base64_lines(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + bytes.len() / 38 + 4);
    // 57 bytes make 76 characters.
    for chunk in bytes.chunks(57) {
        out.push_str(&base64(chunk));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(bytes: &[u8]) -> Result<Reply, String> {
        let mut reader = bytes;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(read_reply(&mut reader)).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn replies_parse_single_and_multi_line() {
        let check = |input: &[u8], code: u16, lines: &[&str]| {
            let r = reply(input).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(input)));
            assert_eq!(r, Reply { code, lines: lines.iter().map(|s| s.to_string()).collect() }, "{:?}", String::from_utf8_lossy(input));
        };
        check(b"220 smtp.test ESMTP ready\r\n", 220, &["smtp.test ESMTP ready"]);
        check(b"250-smtp.test\r\n250-SIZE 1000\r\n250-STARTTLS\r\n250 HELP\r\n", 250, &["smtp.test", "SIZE 1000", "STARTTLS", "HELP"]);
        check(b"354\r\n", 354, &[""]);
        check(b"250 ok\n", 250, &["ok"]);
        check(b"550 5.1.1 no\r\nleftover", 550, &["5.1.1 no"]);
    }

    #[test]
    fn malformed_replies_are_refused() {
        for bad in [&b"2x0 hi\r\n"[..], b"hello\r\n", b"250-a\r\n251 b\r\n", b"250+x\r\n", b"650 no\r\n", b"250-only\r\n", b"", b"250 no end"] {
            assert!(reply(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"250 ".to_vec(), vec![b'a'; 5000], b"\r\n".to_vec()].concat();
        assert!(reply(&long).unwrap_err().contains("too long"));
        let many: Vec<u8> = std::iter::repeat_n(&b"250-x\r\n"[..], 200).flatten().copied().collect();
        assert!(reply(&many).unwrap_err().contains("too many"));
    }

    #[test]
    fn extensions_are_read_from_ehlo() {
        let r = Reply { code: 250, lines: ["smtp.test hello", "SIZE 33554432", "8BITMIME", "starttls", "AUTH login PLAIN", "HELP"].map(String::from).to_vec() };
        assert_eq!(Extensions::parse(&r), Extensions { starttls: true, auth: vec!["LOGIN".into(), "PLAIN".into()], size: Some(33_554_432) });
        // The greeting line is not an extension, SIZE 0 is no limit.
        let r = Reply { code: 250, lines: ["STARTTLS", "SIZE 0"].map(String::from).to_vec() };
        assert_eq!(Extensions::parse(&r), Extensions::default());
    }

    #[test]
    fn reply_text_in_reasons_drops_addresses() {
        let r = Reply { code: 550, lines: vec!["5.1.1 <someone@example.org>: Recipient address rejected\u{1b}[31m".into()] };
        assert_eq!(r.to_string(), "550 5.1.1 <address> Recipient address rejected\\u{1b}[31m");
        let e = SmtpError::Refused { step: "RCPT TO (recipient 2 of 3)".into(), reply: r };
        assert!(matches!(e.outcome(), Posted::Dead(w) if w.starts_with("RCPT TO (recipient 2 of 3): the SMTP server answered 550 5.1.1") && !w.contains('@')));
        assert_eq!(Reply { code: 354, lines: vec![String::new()] }.to_string(), "354");
    }

    #[test]
    fn outcomes_follow_the_reply_class() {
        let refused = |code| SmtpError::Refused { step: "MAIL FROM".into(), reply: Reply { code, lines: vec!["x".into()] } }.outcome();
        assert!(matches!(refused(550), Posted::Dead(w) if w.contains("550")));
        assert!(matches!(refused(535), Posted::Dead(_)));
        assert!(matches!(refused(450), Posted::Retry { unreachable: false, .. }));
        assert!(matches!(refused(421), Posted::Retry { unreachable: true, .. }));
        assert!(matches!(SmtpError::Connect("refused".into()).outcome(), Posted::Retry { unreachable: true, .. }));
        assert!(matches!(SmtpError::Timeout { step: "DATA".into() }.outcome(), Posted::Retry { unreachable: true, .. }));
        assert!(matches!(SmtpError::NoStartTls.outcome(), Posted::Dead(_)));
        assert!(matches!(SmtpError::PasswordFile(std::io::ErrorKind::NotFound).outcome(), Posted::Retry { unreachable: false, .. }));
    }

    #[test]
    fn dot_stuffing_and_line_ends() {
        let check = |input: &[u8], expected: &[u8]| assert_eq!(data_block(input), expected, "{:?}", String::from_utf8_lossy(input));
        check(b"", b".\r\n");
        check(b"a\r\n", b"a\r\n.\r\n");
        check(b"a", b"a\r\n.\r\n");
        check(b".\r\n", b"..\r\n.\r\n");
        check(b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n");
        check(b"a\n.\nb\rc\r\n", b"a\r\n..\r\nb\r\nc\r\n.\r\n");
        check(b"x.y\r\n a.\r\n", b"x.y\r\n a.\r\n.\r\n");
        check(b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, expected) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
        let lines = base64_lines(&[7u8; 200]);
        assert!(lines.split("\r\n").all(|l| l.len() <= 76));
        assert_eq!(lines.split("\r\n").next().unwrap().len(), 76);
        assert!(lines.ends_with("\r\n"));
    }

    #[test]
    fn subjects_are_encoded_when_not_plain_ascii() {
        assert_eq!(encode_subject("Urgent: ICH on CT head"), "Urgent: ICH on CT head");
        assert_eq!(encode_subject("a\r\nBcc: evil@x"), "a  Bcc: evil@x");
        assert_eq!(encode_subject("Befund prüfen"), "=?UTF-8?B?QmVmdW5kIHByw7xmZW4=?=");
        let long = encode_subject(&"é".repeat(100));
        for line in long.split("\r\n") {
            let word = line.trim_start();
            assert!(word.len() <= 75 && word.starts_with("=?UTF-8?B?") && word.ends_with("?="), "{word}");
        }
        assert_eq!(long.split("\r\n").count(), 5);
        // Text that looks like an encoded word is itself encoded.
        assert!(encode_subject("=?x?=").starts_with("=?UTF-8?B?"));
    }

    #[test]
    fn addresses_that_could_inject_are_refused() {
        for ok in ["oncall@hospital.example", "a.b+c@d-e.f", "x@y"] {
            assert_eq!(check_address(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "oncall@hospital.example\r\nBcc: evil@x",
            "oncall@hospital.example\nRCPT TO:<evil@x>",
            "a@b\r",
            "no-at-sign",
            "two@at@signs",
            "@domain",
            "local@",
            "with space@x",
            "<a@b>",
            "a@b>,<c@d",
            "\"quoted\"@x",
            "nön@ascii",
            "a@b;c",
        ] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
        let mail =
            |to: &str| Mail { to: vec!["ok@x".into(), to.into()], subject: "s".into(), text: "t".into(), message_id: "id@x".into(), attachments: vec![] };
        let e = build_message("from@x", &mail("a@b\r\nBcc: c@d"), UNIX_EPOCH, "b").unwrap_err();
        assert!(matches!(e.outcome(), Posted::Dead(w) if w.contains("recipient 2 of 2") && !w.contains("a@b")));
        assert!(build_message("from@x\r\nBcc: c@d", &mail("a@b"), UNIX_EPOCH, "b").is_err());
        let mut bad_id = mail("a@b");
        bad_id.message_id = "id@x>\r\nBcc: <c@d".into();
        assert!(build_message("from@x", &bad_id, UNIX_EPOCH, "b").is_err());
        let mut no_one = mail("a@b");
        no_one.to.clear();
        assert!(build_message("from@x", &no_one, UNIX_EPOCH, "b").is_err());
    }

    #[test]
    fn settings_are_checked_before_connecting() {
        let mut s = SmtpServer::new("smtp.example.org", "triage@example.org");
        assert!(check_settings(&s).is_ok());
        s.security = Security::Plain;
        assert!(matches!(check_settings(&s), Err(SmtpError::Settings(w)) if w.contains("plain")));
        for host in ["localhost", "127.0.0.1", "::1", "[::1]", "::ffff:127.0.0.1"] {
            s.host = host.into();
            assert!(check_settings(&s).is_ok(), "{host}");
        }
        s.helo_name = "a b".into();
        assert!(check_settings(&s).is_err());
        s.helo_name = "node.example".into();
        s.username = Some("u\r\nx".into());
        assert!(check_settings(&s).is_err());
    }

    #[test]
    fn message_ids_and_dates() {
        assert_eq!(message_id("abc@node", "f@x").unwrap(), "<abc@node>");
        assert_eq!(message_id("<abc@node>", "f@x").unwrap(), "<abc@node>");
        assert_eq!(message_id("notice-42", "f@hospital.example").unwrap(), "<notice-42@hospital.example>");
        assert!(message_id("a b", "f@x").is_err());
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_767_323_045)), "Fri, 02 Jan 2026 03:04:05 +0000");
    }

    /// A scripted server on loopback: answers each line it reads with the next of `answers`
    /// (the first is the greeting, sent at once); silent once they run out.
    async fn scripted(answers: &'static [&'static str]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut answers = answers.iter();
            if let Some(greeting) = answers.next() {
                stream.get_mut().write_all(greeting.as_bytes()).await.unwrap();
            }
            let mut line = String::new();
            while stream.read_line(&mut line).await.unwrap_or(0) > 0 {
                line.clear();
                match answers.next() {
                    Some(a) => stream.get_mut().write_all(a.as_bytes()).await.unwrap(),
                    None => std::future::pending::<()>().await,
                }
            }
        });
        port
    }

    fn loopback(port: u16, security: Security) -> SmtpServer {
        SmtpServer { port, security, timeout: Duration::from_millis(300), ..SmtpServer::new("127.0.0.1", "triage@node.test") }
    }

    fn one_mail() -> Mail {
        Mail { to: vec!["a@x".into()], subject: "s".into(), text: "t".into(), message_id: "id@node".into(), attachments: vec![] }
    }

    #[tokio::test]
    async fn a_silent_server_is_retried_after_the_timeout() {
        let port = scripted(&["220 hi\r\n"]).await;
        match send(&loopback(port, Security::Plain), &one_mail()).await {
            Posted::Retry { why, unreachable: true } => assert_eq!(why, "the SMTP server did not answer EHLO within the timeout"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bytes_sent_before_the_tls_handshake_are_refused() {
        // The STARTTLS answer and an injected reply in one segment: the injected one must not
        // be taken as said under TLS.
        let port = scripted(&["220 hi\r\n", "250-hi\r\n250 STARTTLS\r\n", "220 go ahead\r\n250 injected\r\n"]).await;
        match send(&loopback(port, Security::StartTls), &one_mail()).await {
            Posted::Retry { why, unreachable: false } => assert!(why.contains("data sent before the TLS handshake"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn plain_falls_back_to_helo_and_delivers() {
        let port =
            scripted(&["220 hi\r\n", "502 no EHLO\r\n", "250 hello\r\n", "250 ok\r\n", "250 ok\r\n", "354 go\r\n", "250 queued\r\n", "221 bye\r\n"]).await;
        assert_eq!(send(&loopback(port, Security::Plain), &one_mail()).await, Posted::Delivered);
    }

    fn text(mail: &Mail) -> String {
        String::from_utf8(build_message("triage@node.example", mail, UNIX_EPOCH + Duration::from_secs(1_767_323_045), "=_b").unwrap()).unwrap()
    }

    #[test]
    fn plain_text_mail() {
        let mail = Mail {
            to: vec!["a@x".into(), "b@y".into()],
            subject: "Urgent".into(),
            text: "line 1\n.line 2\n".into(),
            message_id: "n1@node".into(),
            attachments: vec![],
        };
        assert_eq!(
            text(&mail),
            "Date: Fri, 02 Jan 2026 03:04:05 +0000\r\nFrom: triage@node.example\r\nTo: a@x, b@y\r\nSubject: Urgent\r\nMessage-ID: <n1@node>\r\n\
             MIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
             line 1\r\n.line 2\r\n"
        );
        let utf8 = Mail { text: "Blutung ä".into(), ..mail.clone() };
        assert!(text(&utf8).ends_with("Content-Transfer-Encoding: base64\r\n\r\nQmx1dHVuZyDDpA0K\r\n"));
        let many = Mail { to: (0..20).map(|i| format!("someone{i}@hospital.example")).collect(), ..mail };
        let message = text(&many);
        assert!(message.split("\r\n").all(|l| l.len() <= 78), "{message}");
        assert_eq!(message.matches("@hospital.example").count(), 20);
    }

    #[test]
    fn attachments_make_multipart_mixed() {
        let mail = Mail {
            to: vec!["a@x".into()],
            subject: "s".into(),
            text: "see the preview".into(),
            message_id: "n1@node".into(),
            attachments: vec![Attachment { filename: "pre\"view\r\n.png".into(), mime: "image/png".into(), bytes: vec![0x89; 100] }],
        };
        let message = text(&mail);
        assert!(message.contains("Content-Type: multipart/mixed;\r\n boundary=\"=_b\"\r\n\r\n--=_b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nsee the preview\r\n\r\n--=_b\r\n"));
        assert!(message.contains("Content-Type: image/png; name=\"pre_view__.png\"\r\nContent-Disposition: attachment; filename=\"pre_view__.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
        assert!(message.ends_with("\r\n\r\n--=_b--\r\n"));
        assert!(message.split("\r\n").all(|l| l.len() <= 76));
        // A text holding the boundary goes in base64.
        let tricky = Mail { text: "--=_b--".into(), ..mail.clone() };
        assert!(text(&tricky).contains("Content-Transfer-Encoding: base64\r\n\r\nLS09X2ItLQ0K\r\n"));
        let bad = Mail { attachments: vec![Attachment { filename: "x".into(), mime: "image/png\r\nX: y".into(), bytes: vec![] }], ..mail };
        assert!(build_message("f@x", &bad, UNIX_EPOCH, "b").is_err());
    }
}
