//! What every component of a running node shares, computed once at start by `node`: who the
//! node is (AE title, node id), where things are kept (the database, the object store), the site
//! keys, and how it calls AEs registered as TLS. A component's constructor takes its own settings
//! section plus this.
//!
//! Must not: hold anything a single component owns (its settings, its wake-ups, its state).

use crate::blobs::Blobs;
use crate::db::Db;
use crate::deid::Keys;
use crate::domain::AeTitle;
use crate::net::tls::Connector;

#[derive(Clone)]
pub struct NodeContext {
    pub ae_title: AeTitle,
    /// `host:data_dir`: whose outbox rows and worker statuses are whose.
    pub node_id: String,
    pub db: Db,
    /// The instance files and result objects (the data directory, or the cluster's bucket).
    pub blobs: Blobs,
    pub keys: Keys,
    /// How we call AEs registered as TLS.
    pub tls: Connector,
}
