//! `triage-node echo` and `send`: the node as an SCU of a registered AE.

use std::path::PathBuf;

use triage_node::admin;
use triage_node::config::Settings;

/// `echo --to AE`: C-ECHO a registered AE.
pub async fn echo(settings: &Settings, to: String) -> anyhow::Result<()> {
    let peer = admin::peer(settings, &to).await?;
    let rsp = triage_node::delivery::echo(&peer).await?;
    println!("C-ECHO {to} ({}:{}): status {:#06X}", peer.host, peer.port, rsp.status);
    if !rsp.is_success() {
        anyhow::bail!("C-ECHO failed with status {:#06X}", rsp.status);
    }
    Ok(())
}

/// `send --to AE FILE|DIR...`: C-STORE files as stored, one line per file.
pub async fn send(settings: &Settings, to: String, paths: Vec<PathBuf>) -> anyhow::Result<()> {
    let peer = admin::peer(settings, &to).await?;
    let sent = triage_node::delivery::send(&peer, &paths).await?;
    let mut failed = 0;
    for s in &sent {
        match &s.result {
            Ok(rsp) if rsp.is_stored() => println!("stored   {:#06X} {}", rsp.status, s.path.display()),
            Ok(rsp) => {
                failed += 1;
                println!("refused  {:#06X} {} ({})", rsp.status, s.path.display(), rsp.error_comment.as_deref().unwrap_or("no comment"));
            }
            Err(e) => {
                failed += 1;
                println!("failed   {} ({e})", s.path.display());
            }
        }
    }
    println!("{} sent to {to}, {failed} not stored", sent.len() - failed);
    if failed > 0 {
        anyhow::bail!("{failed} of {} files were not stored", sent.len());
    }
    Ok(())
}
