//! `triage-node token ...`: bearer tokens for the worklist page and API.

use triage_node::config::Settings;

/// `token add`: a new bearer token, its hash appended to `http.tokens_file`, the token printed once.
pub fn add_token(settings: &Settings, name: String, role: String) -> anyhow::Result<()> {
    let Some(file) = settings.http.tokens_file.clone().filter(|p| !p.as_os_str().is_empty()) else {
        anyhow::bail!("http.tokens_file is not set: name the file the node reads its tokens from (or give tokens in {})", triage_node::http::auth::TOKENS_ENV);
    };
    let (secret, line) = triage_node::http::auth::new_token(&name, &role)?;
    // Refuse a name already there: one line per user keeps revoking simple.
    let existing = std::fs::read_to_string(&file).unwrap_or_default();
    if existing.lines().any(|l| l.split_whitespace().next() == Some(name.as_str())) {
        anyhow::bail!("{} already has a token for {name}: remove its line first to replace it", file.display());
    }
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&file).with_context(|| format!("opening {}", file.display()))?;
    writeln!(f, "{line}").and_then(|_| f.sync_all()).with_context(|| format!("writing {}", file.display()))?;
    eprintln!(
        "token for {name} ({role}) added to {}; a running node loads it within seconds (or at once on SIGHUP). The token (shown once, keep it secret):",
        file.display()
    );
    println!("{secret}");
    Ok(())
}
