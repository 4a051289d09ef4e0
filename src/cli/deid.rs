//! `triage-node keygen`, `deid` and `reid`: the site keys, the research export, opening the sealed map.

use std::path::PathBuf;

use triage_node::admin;
use triage_node::config::Settings;

/// `keygen`: a new site key, printed.
pub fn keygen() -> anyhow::Result<()> {
    println!("{}", triage_node::deid::keys::generate());
    Ok(())
}

/// `deid`: de-identify files into a folder (the research export), as ingest would.
pub async fn deid(settings: &Settings, input: PathBuf, out: PathBuf) -> anyhow::Result<()> {
    let export = admin::export::deidentify(settings, &input, &out).await?;
    if export.demo_keys {
        eprintln!("triage-node: WARNING: demo keys (deid.demo_keys = true): these pseudonyms can be reversed by anyone");
    }
    let mut failed = 0;
    for f in &export.files {
        match &f.result {
            Ok(done) => {
                let note = done.pixels_left_out.as_ref().map(|why| format!(" (pixels left out: {why})")).unwrap_or_default();
                println!("deidentified {} -> {}{note}", f.input.display(), done.output.display());
            }
            Err(e) => {
                failed += 1;
                println!("failed       {} ({e})", f.input.display());
            }
        }
    }
    println!("{} de-identified into {}, {failed} failed", export.files.len() - failed, out.display());
    if failed > 0 {
        anyhow::bail!("{failed} of {} files could not be de-identified", export.files.len());
    }
    Ok(())
}

/// `reid`: the originals of one instance, opened from the sealed map (audited with the purpose).
pub async fn reid(settings: &Settings, instance_uid: String, purpose: String) -> anyhow::Result<()> {
    let originals = admin::reid::originals(settings, &instance_uid, &purpose).await?;
    println!("{}", serde_json::to_string_pretty(&originals)?);
    Ok(())
}
