//! The audit trail exported to the site's audit record repository (IHE ATNA, `[audit_export]`):
//! a worker that reads the entries after its durable position, in sequence order, turns each
//! into a DICOM Audit Message (`audit::atna`) and sends it over syslog: RFC 5424 messages
//! (facility 10 security/authorization, severity 5 notice: PRI 85; APP-NAME `triage-node`, MSGID
//! `IHE+RFC-3881`, the entry's sequence number as `[meta sequenceId]`), RFC 5425 octet-counting
//! framing, over TLS (the site's CA; our client certificate if the repository asks) or plain TCP
//! to a relay on this machine.
//!
//! What "delivered" means: syslog over TCP has no application acknowledgement. An entry counts
//! as delivered, and the position moves past it, once its message was written and flushed and
//! the connection was then found still open (no FIN, no reset, no TLS close) a moment later;
//! the connection is also checked before each batch. A repository that stops or restarts
//! closes the connection, which the check sees: the worker reconnects (backoff 1 s doubling to
//! a minute while it is down) and sends again from the position, so an entry written into a
//! connection that was already dying is sent again. Nothing is dropped or reordered; an entry
//! may arrive twice (at least once: the repository may have received it before closing, or the
//! node may stop between the write and the position's update). The `[meta sequenceId]` lets the
//! repository see duplicates.
//!
//! Patient identity: none unless the site asks (`patient_identity = "id"` or `"id_and_name"`).
//! Then, for each entry that concerns stored patients (an instance de-identified or
//! re-identified; a worklist row shown, read, retracted, acknowledged or given a verdict), the
//! worker opens the sealed map for those patients and adds a Patient participant object. A batch
//! that opened the map is recorded first, by one `reidentify` entry (subject `audit-export`,
//! purpose `audit export`, how many records) appended before any of its messages is written:
//! that entry concerns no patient, so exporting it opens nothing (no recursion). Query and
//! retrieve entries name no patient in this version (a query is not kept; a retrieve names the
//! result objects' own UIDs).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::collections::HashMap;

use crate::audit::atna::{self, Instance, Patient, Source};
use crate::audit::{Entry, Event, IndexOpened, AUDIT_EXPORT};
use crate::config::{AuditExportSettings, AuditTransport, PatientIdentity};
use crate::db::Db;
use crate::deid::Keys;
use crate::net::association::{BoxRead, BoxWrite};
use crate::net::tls::Connector;
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError};

/// Entries per unit of work.
const BATCH: i64 = 200;
/// How long after a batch is written the connection is checked before the position moves.
const SETTLE: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum AtnaError {
    #[error("audit_export TLS: {0}")]
    Tls(String),
    #[error("connecting to the audit repository {host}:{port}: {cause}")]
    Connect { host: String, port: u16, cause: String },
    #[error("writing to the audit repository: {0}")]
    Write(String),
    #[error("the audit repository closed the connection after entry {seq} was written: sending again from entry {from}")]
    Closed { seq: i64, from: i64 },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("opening the re-identification map for the audit export")]
    Map(#[from] crate::deid::MapError),
}

/// One RFC 5424 message, framed for RFC 5425 (`MSG-LEN SP SYSLOG-MSG`). `hostname` and the
/// process id go in the header; the XML is the MSG, UTF-8 with a BOM.
pub fn frame(seq: i64, hostname: &str, xml: &str) -> Vec<u8> {
    let host: String = hostname.chars().map(|c| if c.is_ascii_graphic() { c } else { '-' }).take(255).collect();
    let host = if host.is_empty() { "-".to_string() } else { host };
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    // RFC 5424 7.3.1: sequenceId is 1 to 2147483647.
    let sd = if (1..=2_147_483_647).contains(&seq) { format!("[meta sequenceId=\"{seq}\"]") } else { "-".to_string() };
    let msg = format!("<85>1 {now} {host} triage-node {} IHE+RFC-3881 {sd} \u{feff}{xml}", std::process::id());
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

struct Connection {
    read: BoxRead,
    write: BoxWrite,
}

impl Connection {
    /// Whether the repository still holds the connection open: nothing to read (a syslog
    /// receiver sends nothing), no end of stream, no error.
    async fn open(&mut self) -> bool {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(20), self.read.read(&mut buf)).await {
            Err(_) => true,
            Ok(Ok(n)) => n > 0,
            Ok(Err(_)) => false,
        }
    }
}

pub struct AtnaExporter {
    db: Db,
    settings: AuditExportSettings,
    source: Source,
    tls: Option<Connector>,
    connection: Option<Connection>,
    position: Option<i64>,
    /// The site keys, to open the sealed map when patient identity is exported.
    keys: Keys,
    /// The last entry of a batch whose opening of the map is already recorded (a batch sent
    /// again after a closed connection is not recorded twice).
    opened_through: i64,
}

impl AtnaExporter {
    pub fn new(db: Db, keys: Keys, settings: &AuditExportSettings, node_id: &str, ae_title: &str) -> Result<AtnaExporter, AtnaError> {
        let tls = match settings.transport {
            AuditTransport::Tcp => None,
            AuditTransport::Tls => {
                let path = |p: &Option<std::path::PathBuf>| p.clone().unwrap_or_default();
                let s = crate::net::settings::TlsSettings {
                    enabled: false,
                    port: 0,
                    plain_port: true,
                    certificate: path(&settings.certificate),
                    private_key: path(&settings.private_key),
                    client_ca: Default::default(),
                    peer_ca: path(&settings.ca_file),
                };
                Some(Connector::from_settings(&s).map_err(|e| AtnaError::Tls(e.to_string()))?)
            }
        };
        Ok(AtnaExporter {
            db,
            settings: settings.clone(),
            source: Source { node_id: node_id.to_string(), ae_title: ae_title.to_string() },
            tls,
            connection: None,
            position: None,
            keys,
            opened_through: 0,
        })
    }
}

async fn connect(settings: &AuditExportSettings, tls: Option<&Connector>) -> Result<Connection, AtnaError> {
    let (host, port, timeout) = (&settings.host, settings.port, settings.timeout);
    let failed = |cause: String| AtnaError::Connect { host: host.clone(), port, cause };
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await {
        Err(_) => return Err(failed("timed out".into())),
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    let (read, write) = match tls {
        None => {
            let (r, w) = tcp.into_split();
            (Box::new(r) as BoxRead, Box::new(w) as BoxWrite)
        }
        Some(tls) => match tokio::time::timeout(timeout, tls.connect(host, tcp)).await {
            Err(_) => return Err(failed("TLS handshake timed out".into())),
            Ok(Err(e)) => return Err(failed(format!("TLS: {e}"))),
            Ok(Ok(halves)) => halves,
        },
    };
    Ok(Connection { read, write })
}

/// What the message of one entry names besides the entry itself: its instance's study (for
/// de-identification and re-identification entries) and, where the site exports patient
/// identity, the patients it concerns. `opened` counts the map records opened for it; `cache`
/// keeps a batch from opening one record twice.
struct Lookup<'a> {
    db: &'a Db,
    keys: &'a Keys,
    identity: PatientIdentity,
    cache: HashMap<String, Option<Patient>>,
    opened: u64,
}

impl Lookup<'_> {
    async fn of(&mut self, entry: &Entry) -> Result<Instance, AtnaError> {
        let mut found = Instance::default();
        let instance = entry.subject.strip_prefix("instance:").filter(|_| matches!(entry.event.as_str(), "deidentify" | "reidentify"));
        if let Some(uid) = instance {
            if let Some((study, class)) = self.db.instance_study(uid).await? {
                found = Instance { study_uid: Some(study), sop_class_uid: Some(class), patients: Vec::new() };
            }
        }
        if self.identity == PatientIdentity::None {
            return Ok(found);
        }
        // The stored instances whose patients the entry concerns: its own, or one of each
        // worklist row's study.
        let rows: Vec<i64> = match Event::parse(&entry.event, &entry.subject, &entry.details) {
            Some(Event::Reading { study, .. } | Event::Retract { study, .. } | Event::Acknowledge { study, .. } | Event::Feedback { study, .. }) => vec![study],
            Some(Event::WorklistView { details, .. }) => details.studies.clone(),
            _ => Vec::new(),
        };
        let mut uids: Vec<String> = instance.map(str::to_string).into_iter().collect();
        for row in rows {
            uids.extend(self.db.study_any_instance_uid(row).await?);
        }
        for uid in uids {
            if let Some(patient) = self.patient(&uid).await? {
                if !found.patients.contains(&patient) {
                    found.patients.push(patient);
                }
            }
        }
        Ok(found)
    }

    /// The patient of a stored instance from the sealed map (None: no record, or no Patient ID).
    async fn patient(&mut self, uid: &str) -> Result<Option<Patient>, AtnaError> {
        if let Some(p) = self.cache.get(uid) {
            return Ok(p.clone());
        }
        let patient = match self.db.reid_record(uid).await? {
            None => None,
            Some(record) => {
                self.opened += 1;
                let o = crate::deid::open(self.keys, &record)?;
                o.patient_id.filter(|id| !id.trim().is_empty()).map(|id| Patient {
                    id,
                    issuer: o.issuer_of_patient_id,
                    name: o.patient_name.filter(|_| self.identity == PatientIdentity::IdAndName),
                })
            }
        };
        self.cache.insert(uid.to_string(), patient.clone());
        Ok(patient)
    }
}

impl AtnaExporter {
    async fn export(&mut self) -> Result<WorkState, AtnaError> {
        let position = match self.position {
            Some(p) => p,
            None => *self.position.insert(self.db.audit_export_position().await?),
        };
        let entries = self.db.audit_after(position, BATCH).await?;
        if entries.is_empty() {
            return Ok(WorkState::Idle);
        }
        let last = entries.last().map_or(position, |e| e.seq);
        let mut lookup = Lookup { db: &self.db, keys: &self.keys, identity: self.settings.patient_identity, cache: HashMap::new(), opened: 0 };
        let mut found = Vec::with_capacity(entries.len());
        for entry in &entries {
            found.push(lookup.of(entry).await?);
        }
        // Patient identity leaves the node only after the opening of the map for it is on
        // the trail (once per batch, even if the batch is sent again).
        if lookup.opened > 0 && last > self.opened_through {
            let details = IndexOpened { purpose: AUDIT_EXPORT.into(), objects: entries.len() as u64, map_records: lookup.opened };
            self.db.audit_append(&Event::ReidentifyIndex { details }).await?;
            self.opened_through = last;
        }
        let mut bytes = Vec::new();
        for (entry, found) in entries.iter().zip(&found) {
            bytes.extend(frame(entry.seq, &self.source.node_id, &atna::message(entry, &self.source, found)));
        }
        if let Some(c) = &mut self.connection {
            if !c.open().await {
                tracing::info!("the audit repository closed the connection while idle: reconnecting");
                self.connection = None;
            }
        }
        let mut connection = match self.connection.take() {
            Some(c) => c,
            None => connect(&self.settings, self.tls.as_ref()).await?,
        };
        let timeout = self.settings.timeout;
        let written = tokio::time::timeout(timeout, async {
            connection.write.write_all(&bytes).await?;
            connection.write.flush().await
        })
        .await;
        match written {
            Err(_) => return Err(AtnaError::Write("timed out".into())),
            Ok(Err(e)) => return Err(AtnaError::Write(e.to_string())),
            Ok(Ok(())) => {}
        }
        tokio::time::sleep(SETTLE).await;
        if !connection.open().await {
            return Err(AtnaError::Closed { seq: last, from: position + 1 });
        }
        self.connection = Some(connection);
        self.db.set_audit_export_position(last).await?;
        self.position = Some(last);
        tracing::debug!(from = position + 1, to = last, "audit entries exported");
        metrics::counter!("triage_audit_exported_total").increment(entries.len() as u64);
        Ok(if entries.len() as i64 == BATCH { WorkState::Busy } else { WorkState::Idle })
    }
}

impl Worker for AtnaExporter {
    fn name(&self) -> &'static str {
        "audit export"
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move { Ok(self.export().await?) })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(self.settings.poll_interval))
    }

    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut c) = self.connection.take() {
                let _ = tokio::time::timeout(Duration::from_secs(1), c.write.shutdown()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_octet_counted_rfc5424() {
        let f = String::from_utf8(frame(12, "node a", "<AuditMessage/>")).unwrap();
        let (len, msg) = f.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        let fields: Vec<&str> = msg.splitn(7, ' ').collect();
        assert_eq!((fields[0], fields[2], fields[3], fields[5]), ("<85>1", "node-a", "triage-node", "IHE+RFC-3881"));
        assert_eq!(fields[6], "[meta sequenceId=\"12\"] \u{feff}<AuditMessage/>");
    }
}
