//! Bearer tokens and roles. A token is a secret of at least 24 characters; the node keeps only
//! its SHA-256 (from the tokens file, or hashed at start from TRIAGE_HTTP_TOKENS) and finds
//! the caller by the hash of what it presents, so no comparison runs over the secret itself.
//! Tokens never reach a log: the access log names the token's user only.
//!
//! The tokens file is read again without a restart (`watch`): on SIGHUP, and when its
//! modification time changes (looked at every `RELOAD_POLL`). A file that does not read keeps
//! the tokens the node had; the log says how many tokens are loaded, never a token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// The environment variable with `name:role:secret` entries, separated by commas.
pub const TOKENS_ENV: &str = "TRIAGE_HTTP_TOKENS";
/// Shortest secret accepted.
pub const MIN_SECRET: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Stores instances by STOW-RS (`POST /dicomweb/studies`) and nothing else: a modality, a
    /// gateway or a script that uploads studies. Lowest, so `Authed` and `AdminUser` refuse it.
    Modality,
    /// Reads the worklist (with patients' names), claims and marks studies read.
    Reader,
    /// Everything a reader may, and AE administration.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "modality" => Some(Role::Modality),
            "reader" => Some(Role::Reader),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Modality => "modality",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
}

/// The static tokens: those of the environment (fixed for the process) and those of the file
/// (reloadable). Clones share the same table.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    by_hash: Arc<RwLock<HashMap<[u8; 32], User>>>,
    /// The environment's entries, hashed (kept to rebuild the table on a reload).
    env: HashMap<[u8; 32], User>,
    file: Option<PathBuf>,
}

/// How often `watch` looks at the tokens file's modification time.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{where_}: {why}")]
    Invalid { where_: String, why: String },
    #[error("reading the tokens file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A user name: letters, digits, `.`, `_`, `-`, `@`; at most 64 (it goes into audit entries).
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

impl Tokens {
    /// The tokens of the environment value (if any) and of the file (if named).
    pub fn load(env: Option<&str>, file: Option<&Path>) -> Result<Tokens, TokenError> {
        let mut env_tokens = HashMap::new();
        if let Some(env) = env {
            for (i, entry) in env.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
                let where_ = format!("{TOKENS_ENV} entry {}", i + 1);
                let mut parts = entry.splitn(3, ':');
                let (name, role, secret) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let user = user(&where_, name, role)?;
                if secret.len() < MIN_SECRET {
                    return Err(TokenError::Invalid { where_, why: format!("the secret must be at least {MIN_SECRET} characters") });
                }
                insert(&mut env_tokens, &where_, hash(secret), user)?;
            }
        }
        let table = match file {
            Some(path) => read_file(&env_tokens, path)?,
            None => env_tokens.clone(),
        };
        Ok(Tokens { by_hash: Arc::new(RwLock::new(table)), env: env_tokens, file: file.map(Path::to_path_buf) })
    }

    /// Read the tokens file again: its tokens replace the file's earlier ones (the
    /// environment's stay). On an error the table is left as it was. Returns how many tokens
    /// are loaded now.
    pub fn reload(&self) -> Result<usize, TokenError> {
        let Some(path) = &self.file else {
            return Ok(self.len());
        };
        let table = read_file(&self.env, path)?;
        let n = table.len();
        *self.by_hash.write().unwrap_or_else(|p| p.into_inner()) = table;
        Ok(n)
    }

    /// The tokens file, if one is named.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub fn len(&self) -> usize {
        self.by_hash.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The user of an `Authorization` header value, if it is `Bearer <known token>`.
    pub fn user(&self, authorization: Option<&str>) -> Option<User> {
        let secret = bearer(authorization)?;
        self.by_hash.read().unwrap_or_else(|p| p.into_inner()).get(&hash(secret)).cloned()
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    Some(authorization?.strip_prefix("Bearer ")?.trim()).filter(|t| !t.is_empty())
}

/// The environment's tokens plus the file's.
fn read_file(env: &HashMap<[u8; 32], User>, path: &Path) -> Result<HashMap<[u8; 32], User>, TokenError> {
    let mut tokens = env.clone();
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.display().to_string(), cause: source })?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let where_ = format!("{} line {}", path.display(), n + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, role, digest] = fields[..] else {
            return Err(TokenError::Invalid { where_, why: "expected `NAME ROLE sha256:HEX`".into() });
        };
        let user = user(&where_, name, role)?;
        let bytes = digest.strip_prefix("sha256:").and_then(|h| hex::decode(h).ok()).and_then(|b| <[u8; 32]>::try_from(b).ok());
        let Some(bytes) = bytes else {
            return Err(TokenError::Invalid { where_, why: "the token must be sha256: and 64 hex digits".into() });
        };
        insert(&mut tokens, &where_, bytes, user)?;
    }
    Ok(tokens)
}

fn insert(tokens: &mut HashMap<[u8; 32], User>, where_: &str, digest: [u8; 32], user: User) -> Result<(), TokenError> {
    if tokens.insert(digest, user).is_some() {
        return Err(TokenError::Invalid { where_: where_.into(), why: "the same token is given twice".into() });
    }
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reload the tokens file on SIGHUP and when its modification time changes, until `shutdown`.
pub async fn watch(tokens: Tokens, shutdown: tokio_util::sync::CancellationToken) {
    let Some(path) = tokens.file().map(Path::to_path_buf) else {
        return;
    };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: the tokens file is reloaded when it changes only");
            None
        }
    };
    let mut seen = modified(&path);
    let mut poll = tokio::time::interval(RELOAD_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = poll.tick() => {
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                "the file changed"
            }
        };
        seen = modified(&path);
        match tokens.reload() {
            Ok(n) => tracing::info!(tokens = n, why, "HTTP API tokens reloaded tokens_loaded={n}"),
            Err(e) => tracing::warn!(error = %e, why, "the tokens file does not read: the tokens loaded before stay"),
        }
    }
}

fn user(where_: &str, name: &str, role: &str) -> Result<User, TokenError> {
    if !valid_name(name) {
        return Err(TokenError::Invalid { where_: where_.into(), why: "the name must be 1-64 letters, digits, '.', '_', '-' or '@'".into() });
    }
    let role =
        Role::parse(role).ok_or_else(|| TokenError::Invalid { where_: where_.into(), why: format!("unknown role {role:?} (reader, admin or modality)") })?;
    Ok(User { name: name.into(), role })
}

/// A new random secret and its tokens-file line (`triage-node token add`).
pub fn new_token(name: &str, role: &str) -> Result<(String, String), TokenError> {
    let u = user("the new token", name, role)?;
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let line = format!("{} {} sha256:{}", u.name, u.role.as_str(), hex::encode(hash(&secret)));
    Ok((secret, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_the_environment_and_the_file_find_their_users_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, line) = new_token("it-admin", "admin").unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, format!("# comment\n\n{line}\n")).unwrap();
        let env = "dr.grey:reader:0123456789abcdef0123456789abcdef";
        let t = Tokens::load(Some(env), Some(&file)).unwrap();
        assert_eq!(t.user(Some("Bearer 0123456789abcdef0123456789abcdef")), Some(User { name: "dr.grey".into(), role: Role::Reader }));
        assert_eq!(t.user(Some(&format!("Bearer {secret}"))).map(|u| u.role), Some(Role::Admin));
        assert!(!std::fs::read_to_string(&file).unwrap().contains(&secret), "the file holds the hash only");
        for bad in
            [None, Some(""), Some("Bearer"), Some("Bearer nope"), Some("Basic 0123456789abcdef0123456789abcdef"), Some("0123456789abcdef0123456789abcdef")]
        {
            assert_eq!(t.user(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_modality_token_is_the_lowest_role() {
        let t = Tokens::load(Some("ct-gateway:modality:0123456789abcdef0123456789abcdef"), None).unwrap();
        let user = t.user(Some("Bearer 0123456789abcdef0123456789abcdef")).unwrap();
        assert_eq!(user.role, Role::Modality);
        // `Authed` (the reading routes) and `AdminUser` compare against these.
        assert!(Role::Modality < Role::Reader && Role::Reader < Role::Admin);
        let (_, line) = new_token("ct-gateway", "modality").unwrap();
        assert!(line.starts_with("ct-gateway modality sha256:"), "{line}");
    }

    #[test]
    fn bad_entries_are_refused_with_where_and_why() {
        let e = |env: &str| Tokens::load(Some(env), None).unwrap_err().to_string();
        assert!(e("a:reader:short").contains("at least 24"), "{}", e("a:reader:short"));
        assert!(e("a:root:0123456789abcdef0123456789abcdef").contains("unknown role"));
        assert!(e("a b:reader:0123456789abcdef0123456789abcdef").contains("name must be"));
        assert!(e("a:reader:0123456789abcdef0123456789abcdef,b:admin:0123456789abcdef0123456789abcdef").contains("entry 2"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "x reader sha256:abcd\n").unwrap();
        let err = Tokens::load(None, Some(&file)).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("64 hex"), "{err}");
        assert!(Tokens::load(None, None).unwrap().is_empty());
    }

    #[test]
    fn a_reload_replaces_the_files_tokens_keeps_the_environments_and_survives_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let (first, line1) = new_token("ann", "admin").unwrap();
        std::fs::write(&file, format!("{line1}\n")).unwrap();
        let env = "dr.grey:reader:0123456789abcdef0123456789abcdef";
        let t = Tokens::load(Some(env), Some(&file)).unwrap();
        let shared = t.clone();
        assert_eq!(t.len(), 2);
        let (second, line2) = new_token("bob", "reader").unwrap();
        std::fs::write(&file, format!("{line2}\n")).unwrap();
        assert_eq!(t.reload().unwrap(), 2);
        assert_eq!(shared.user(Some(&format!("Bearer {first}"))), None, "the removed token is gone for every clone");
        assert_eq!(shared.user(Some(&format!("Bearer {second}"))).unwrap().name, "bob");
        assert!(shared.user(Some("Bearer 0123456789abcdef0123456789abcdef")).is_some(), "the environment's token stays");
        std::fs::write(&file, "broken line\n").unwrap();
        assert!(t.reload().is_err());
        assert_eq!(shared.user(Some(&format!("Bearer {second}"))).unwrap().name, "bob", "a bad file changes nothing");
    }
}
