//! `triage-node outbox ...`: queue, list and retry outbox items (`admin::outbox`).

use std::path::PathBuf;

use clap::Subcommand;

use triage_node::admin::{self, Access};
use triage_node::config::Settings;

#[derive(Subcommand)]
pub enum OutboxAction {
    /// Queue files for delivery to a registered AE (copied into the data directory first); the
    /// running node's worker sends them, retrying with backoff.
    Add {
        #[arg(long)]
        to: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show queued, delivered and dead items.
    List {
        /// pending | sending | delivered | dead
        #[arg(long)]
        state: Option<String>,
    },
    /// Queue an item again (by id), or every dead item (--dead).
    Retry {
        id: Option<i64>,
        #[arg(long, conflicts_with = "id")]
        dead: bool,
    },
}

pub async fn run(action: OutboxAction, settings: &Settings) -> anyhow::Result<()> {
    let db = admin::open(settings, Access::Read).await?;
    let result = outbox_action(action, settings, &db).await;
    db.close().await;
    result
}

async fn outbox_action(action: OutboxAction, settings: &Settings, db: &triage_node::db::Db) -> anyhow::Result<()> {
    match action {
        OutboxAction::Add { to, files } => {
            for (file, id) in admin::outbox::add(db, settings, &to, &files).await? {
                match id {
                    Some(id) => println!("queued {} for {to} as item {id}", file.display()),
                    None => println!("already queued: {}", file.display()),
                }
            }
        }
        OutboxAction::List { state } => {
            println!("{:>6}  {:<10}  {:<5}  {:>6}  {:<16}  {:>8}  {:<10}  LAST ERROR", "ID", "STATE", "KIND", "STUDY", "DESTINATION", "ATTEMPTS", "COMMITTED");
            for admin::outbox::ListedItem { item, commitment } in admin::outbox::list(db, state.as_deref()).await? {
                let study = item.study_id.map_or("-".to_string(), |s| s.to_string());
                println!(
                    "{:>6}  {:<10}  {:<5}  {:>6}  {:<16}  {:>8}  {:<10}  {}",
                    item.id,
                    item.state.to_string(),
                    item.kind.to_string(),
                    study,
                    item.destination,
                    item.attempts,
                    commitment.as_deref().unwrap_or("-"),
                    item.last_error.as_deref().unwrap_or("-")
                );
            }
        }
        OutboxAction::Retry { id, dead } => {
            if id.is_none() && !dead {
                anyhow::bail!("name an item id, or --dead for every dead item");
            }
            let n = admin::outbox::retry(db, id).await?;
            println!("{n} item(s) queued again");
        }
    }
    Ok(())
}
