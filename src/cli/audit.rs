//! `triage-node audit ...`: verify the chain, print a checkpoint, list the entries (`admin::audit`).

use clap::Subcommand;

use triage_node::admin;
use triage_node::config::Settings;

#[derive(Subcommand)]
pub enum AuditAction {
    /// Check every entry's keyed hash and link; exit 1 naming the first altered or missing
    /// entry. With --checkpoint (a line printed by `audit head`, or a file holding one), also
    /// check that the entry it names is still there unchanged (detects a deleted tail).
    Verify {
        #[arg(long)]
        checkpoint: Option<String>,
    },
    /// Print a signed checkpoint of the chain's head, to keep outside the database.
    Head,
    /// Print the entries (they hold no patient data).
    List,
}

/// Run one audit command and print what it returns.
pub async fn run(action: AuditAction, settings: &Settings) -> anyhow::Result<()> {
    match action {
        AuditAction::Verify { checkpoint } => {
            let v = admin::audit::verify(settings, checkpoint.as_deref()).await?;
            if let Some(seq) = v.checkpoint_seq {
                println!("checkpoint of entry {seq} holds");
            }
            println!("audit log intact: {} entries, head {}", v.entries, v.head_hash);
        }
        AuditAction::Head => println!("{}", admin::audit::head(settings).await?),
        AuditAction::List => {
            for e in admin::audit::list(settings).await? {
                println!("{:>6}  {}  {:<12}  {:<16}  {}", e.seq, e.at_ms, e.event, e.subject, e.details);
            }
        }
    }
    Ok(())
}
