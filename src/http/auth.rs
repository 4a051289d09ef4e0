//! Bearer tokens and roles. A token is a secret of at least 24 characters; the node keeps only
//! its SHA-256 (from the tokens file, or hashed at start from TRIAGE_HTTP_TOKENS) and finds
//! the caller by the hash of what it presents, so no comparison runs over the secret itself.
//! Tokens never reach a log: the access log names the token's user only.

use std::collections::HashMap;
use std::path::Path;

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

#[derive(Debug, Default, Clone)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], User>,
}

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
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

impl Tokens {
    /// The tokens of the environment value (if any) and of the file (if named).
    pub fn load(env: Option<&str>, file: Option<&Path>) -> Result<Tokens, TokenError> {
        let mut tokens = Tokens::default();
        if let Some(env) = env {
            for (i, entry) in env.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
                let where_ = format!("{TOKENS_ENV} entry {}", i + 1);
                let mut parts = entry.splitn(3, ':');
                let (name, role, secret) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let user = user(&where_, name, role)?;
                if secret.len() < MIN_SECRET {
                    return Err(TokenError::Invalid { where_, why: format!("the secret must be at least {MIN_SECRET} characters") });
                }
                tokens.insert(&where_, hash(secret), user)?;
            }
        }
        if let Some(path) = file {
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
                tokens.insert(&where_, bytes, user)?;
            }
        }
        Ok(tokens)
    }

    fn insert(&mut self, where_: &str, digest: [u8; 32], user: User) -> Result<(), TokenError> {
        if self.by_hash.insert(digest, user).is_some() {
            return Err(TokenError::Invalid { where_: where_.into(), why: "the same token is given twice".into() });
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The user of an `Authorization` header value, if it is `Bearer <known token>`.
    pub fn user(&self, authorization: Option<&str>) -> Option<&User> {
        let secret = authorization?.strip_prefix("Bearer ")?.trim();
        self.by_hash.get(&hash(secret))
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
        assert_eq!(t.user(Some("Bearer 0123456789abcdef0123456789abcdef")), Some(&User { name: "dr.grey".into(), role: Role::Reader }));
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
}
