//! `triage-node ae ...`: register, list and remove application entities (`admin::ae`).

use clap::Subcommand;

use triage_node::admin::{self, Access};
use triage_node::config::Settings;
use triage_node::domain::AeRole;

#[derive(Subcommand)]
pub enum AeAction {
    /// Register (or update) an AE title.
    Add {
        ae_title: String,
        /// Host or IP the AE must call from (modality) or where we reach it (pacs).
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        /// modality | pacs
        #[arg(long, default_value = "modality")]
        role: String,
        /// Register it disabled.
        #[arg(long)]
        disabled: bool,
        /// TLS only (PS3.15 B.9): refused on the plain port; we call it over TLS.
        #[arg(long)]
        tls: bool,
        /// The name its TLS client certificate must carry (a SAN DNS name, IP address or URI, or
        /// the subject's common name): on the TLS port, a caller using this AE title with a
        /// certificate that does not name it is refused. Needed with --tls where the node asks
        /// for client certificates (dicom.tls.client_ca).
        #[arg(long)]
        tls_identity: Option<String>,
    },
    /// List registered AE titles.
    List,
    /// Remove an AE title.
    Remove { ae_title: String },
}

pub async fn run(action: AeAction, settings: &Settings) -> anyhow::Result<()> {
    // Changes are audited, and the audit chain is keyed with the site keys.
    let access = if matches!(action, AeAction::List) { Access::Read } else { Access::Audited };
    let db = admin::open(settings, access).await?;
    let result = ae_action(action, &db).await;
    db.close().await;
    result
}

async fn ae_action(action: AeAction, db: &triage_node::db::Db) -> anyhow::Result<()> {
    match action {
        AeAction::Add { ae_title, host, port, role, disabled, tls, tls_identity } => {
            let role = role.parse::<AeRole>().map_err(anyhow::Error::msg)?;
            let ae = admin::ae::register(db, admin::ae::AeRegistration { ae_title, host, port, role, enabled: !disabled, tls, tls_identity }).await?;
            let bound = ae.tls_identity.as_ref().map(|i| format!(", certificate {i}")).unwrap_or_default();
            println!("registered {} ({}){}{bound}{}", ae.ae_title, ae.role, if ae.tls { " TLS only" } else { "" }, if ae.enabled { "" } else { " disabled" });
        }
        AeAction::List => {
            println!("{:<16}  {:<8}  {:<7}  {:<3}  {:<24}  {:<5}  CERTIFICATE", "AE TITLE", "ROLE", "ENABLED", "TLS", "HOST", "PORT");
            for ae in admin::ae::list(db).await? {
                println!(
                    "{:<16}  {:<8}  {:<7}  {:<3}  {:<24}  {:<5}  {}",
                    ae.ae_title,
                    ae.role,
                    if ae.enabled { "yes" } else { "no" },
                    if ae.tls { "yes" } else { "no" },
                    ae.host.as_deref().unwrap_or("*"),
                    ae.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    ae.tls_identity.as_deref().unwrap_or("-")
                );
            }
        }
        AeAction::Remove { ae_title } => {
            let title = admin::ae::remove(db, &ae_title).await?;
            println!("removed {title}");
        }
    }
    Ok(())
}
