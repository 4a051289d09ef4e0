//! Sending to other AEs: resolve a registered AE, open an association, C-ECHO or C-STORE.
//!
//! Serves the operator commands (`triage-node echo`, `send`) and the durable outbox worker
//! (`outbox`), which the results of later stages are queued to. Must not: know PDUs (net::client
//! does) or transcode anything: files go out in the transfer syntax they are stored in.

pub mod atna;
pub mod commitment;
pub mod escalation;
pub mod outbox;
pub mod smtp;
pub mod stow;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::db::{Db, DbError};
use crate::domain::AeTitle;
use crate::net::client::{self, Association, ClientError, Peer, Proposal, Response};
/// How AEs registered as TLS are reached (for callers that name no `net` type).
pub use crate::net::tls::Connector;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no AE titled {0} is registered (triage-node ae add {0} --role pacs --host H --port P)")]
    UnknownAe(String),
    #[error("AE {0} is disabled")]
    Disabled(String),
    #[error("AE {0} has no host and port to send to")]
    NoAddress(String),
    #[error("AE {0} is registered as TLS, and this node has no TLS client configuration (dicom.tls.peer_ca)")]
    NoTls(String),
    #[error("{0}")]
    BadTitle(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("reading or writing {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
}

/// Resolve a registered AE to a peer we can associate with, calling as `ours`; over TLS
/// through `tls` when the AE is registered as TLS.
pub async fn resolve(db: &Db, to: &str, ours: &AeTitle, timeout: Duration, tls: &Connector) -> Result<Peer, DeliveryError> {
    let ae = db.find_ae(to).await?.ok_or_else(|| DeliveryError::UnknownAe(to.to_string()))?;
    if !ae.enabled {
        return Err(DeliveryError::Disabled(to.to_string()));
    }
    let (Some(host), Some(port)) = (ae.host.clone(), ae.port) else {
        return Err(DeliveryError::NoAddress(to.to_string()));
    };
    let tls = match (ae.tls, tls.is_configured()) {
        (false, _) => None,
        (true, true) => Some(tls.clone()),
        (true, false) => return Err(DeliveryError::NoTls(to.to_string())),
    };
    Ok(Peer { host, port, called_ae: ae.ae_title, calling_ae: ours.clone(), timeout, tls })
}

pub async fn echo(peer: &Peer) -> Result<Response, DeliveryError> {
    let mut assoc = Association::request(peer, &[Proposal::verification()]).await?;
    let rsp = assoc.echo().await?;
    assoc.release().await?;
    Ok(rsp)
}

/// The outcome for one file.
#[derive(Debug)]
pub struct Sent {
    pub path: PathBuf,
    pub result: Result<Response, ClientError>,
}

/// Send every file (directories are walked) in one association; one outcome per file.
pub async fn send(peer: &Peer, paths: &[PathBuf]) -> Result<Vec<Sent>, DeliveryError> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    let mut metas = Vec::new();
    let mut outcomes = Vec::new();
    for f in files {
        match client::read_part10(&f) {
            Ok(meta) => metas.push((f, meta)),
            Err(e) => outcomes.push(Sent { path: f, result: Err(e) }),
        }
    }
    if metas.is_empty() {
        return Ok(outcomes);
    }
    let proposals = client::proposals_for(&metas.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>());
    for batch in proposals.chunks(128) {
        let mut assoc = Association::request(peer, batch).await?;
        for (path, _) in
            metas.iter().filter(|(_, m)| batch.iter().any(|p| p.abstract_syntax == m.sop_class_uid && p.transfer_syntaxes[0] == m.transfer_syntax_uid))
        {
            let result = assoc.store_file(path).await;
            let fatal =
                matches!(result, Err(ClientError::Aborted | ClientError::Write(_) | ClientError::Pdu(_) | ClientError::Message(_) | ClientError::Timeout(_)));
            outcomes.push(Sent { path: path.clone(), result });
            if fatal {
                return Ok(outcomes);
            }
        }
        assoc.release().await?;
    }
    Ok(outcomes)
}

/// Queue files for delivery to a registered AE: each is checked to be Part 10, copied into
/// `data_dir/outbox/` and synced (the outbox owns its objects; with a shared bucket, uploaded
/// to it, so any node can send it), then recorded. Returns each file with its item id (`None`:
/// that object was already queued for that AE).
pub async fn enqueue(db: &Db, node: &str, blobs: &crate::blobs::Blobs, to: &str, files: &[PathBuf]) -> Result<Vec<(PathBuf, Option<i64>)>, DeliveryError> {
    if db.find_ae(to).await?.is_none() {
        return Err(DeliveryError::UnknownAe(to.to_string()));
    }
    let data_dir = blobs.data_dir();
    let dir = data_dir.join("outbox");
    let io = |source| DeliveryError::Io { path: dir.display().to_string(), cause: source };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        client::read_part10(file)?;
        let relative = format!("outbox/{}.dcm", uuid::Uuid::new_v4());
        let target = data_dir.join(&relative);
        std::fs::copy(file, &target).map_err(|source| DeliveryError::Io { path: file.display().to_string(), cause: source })?;
        std::fs::File::open(&target).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io)?;
        blobs.upload(&relative, &target).await?;
        blobs.adopt(&relative, &target);
        out.push((file.clone(), db.outbox_enqueue(node, &relative, to).await?));
    }
    Ok(out)
}

/// Every file named, and every file under the directories named (sorted, recursively).
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DeliveryError> {
    let mut out = Vec::new();
    for p in paths {
        collect(p, &mut out)?;
    }
    Ok(out)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), DeliveryError> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| DeliveryError::Io { path: path.display().to_string(), cause: source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            collect(&e, out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// The mail server `[notify.smtp]` names, as the SMTP transport takes it (EHLO names the node
/// unless `helo_name` is set).
pub fn smtp_server(notify: &crate::config::NotifySettings, node: &str) -> smtp::SmtpServer {
    let s = &notify.smtp;
    smtp::SmtpServer {
        host: s.host.clone(),
        port: s.port,
        security: match s.security {
            crate::config::SmtpSecurity::Starttls => smtp::Security::StartTls,
            crate::config::SmtpSecurity::Tls => smtp::Security::Tls,
            crate::config::SmtpSecurity::Plain => smtp::Security::Plain,
        },
        username: (!s.username.is_empty()).then(|| s.username.clone()),
        password_file: s.password_file.clone(),
        from: s.from.clone(),
        ca_file: s.ca_file.clone(),
        timeout: notify.timeout,
        helo_name: if s.helo_name.is_empty() { node.to_string() } else { s.helo_name.clone() },
    }
}
