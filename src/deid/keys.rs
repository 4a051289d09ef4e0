//! The two site secrets and everything derived from them.
//!
//! - The pseudonym key: HMAC-SHA256 over an original value gives its pseudonym (UIDs, patient
//!   identity, the per-patient date shift). Same key, same input -> same output, so a study's
//!   references stay consistent and a patient's studies stay linked.
//! - The map key: AES-256-GCM for the re-identification map.
//!
//! Each is 32 bytes written as 64 hex digits, read from an environment variable or from a file
//! named in the configuration; never from the repository, never logged (Debug prints only a
//! fingerprint). Demo keys exist for the demo and say so loudly.
//! Must not: log a key or an input value.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const PSEUDONYM_KEY_ENV: &str = "TRIAGE_PSEUDONYM_KEY";
pub const MAP_KEY_ENV: &str = "TRIAGE_REID_MAP_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no {what}: set {env} (64 hex digits, e.g. from `triage-node keygen`) or deid.{file_key} to a file holding it; \
         for a demonstration without patient data only, set deid.demo_keys = true"
    )]
    Missing { what: &'static str, env: &'static str, file_key: &'static str },
    #[error("reading the {what} from {path}: {cause}")]
    Read { what: &'static str, path: String, cause: std::io::Error },
    #[error("the {what} must be exactly 64 hex digits (32 bytes)")]
    Malformed { what: &'static str },
    #[error("the pseudonym key and the re-identification map key must differ")]
    Same,
    #[error("the {what} file {path} is readable by others (mode {mode:04o}): make it readable by the node's user alone (chmod 0400 or 0600)")]
    Exposed { what: &'static str, path: String, mode: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("re-identification record cannot be decrypted with this key (key {expected}, record {found}) or was altered")]
    Open { expected: String, found: String },
    #[error("sealing a re-identification record failed")]
    Seal,
}

#[derive(Clone)]
pub struct Keys {
    pseudonym: [u8; 32],
    map: [u8; 32],
    pub demo: bool,
}

/// Keys leave no copy in freed memory: every clone is overwritten when dropped.
impl Drop for Keys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.pseudonym.zeroize();
        self.map.zeroize();
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys {{ map_key_id: {}, demo: {} }}", self.map_key_id(), self.demo)
    }
}

/// Where each key may come from: the environment variable wins over the file.
pub struct KeySources<'a> {
    pub pseudonym_key_file: Option<&'a Path>,
    pub map_key_file: Option<&'a Path>,
    pub demo_keys: bool,
}

impl Keys {
    pub fn load(src: &KeySources<'_>) -> Result<Keys, KeyError> {
        if src.demo_keys {
            return Ok(Keys::demo());
        }
        let pseudonym = one("pseudonym key", PSEUDONYM_KEY_ENV, "pseudonym_key_file", src.pseudonym_key_file)?;
        let map = one("re-identification map key", MAP_KEY_ENV, "map_key_file", src.map_key_file)?;
        if pseudonym == map {
            return Err(KeyError::Same);
        }
        Ok(Keys { pseudonym, map, demo: false })
    }

    /// Keys from their 64-hex-digit forms (what the environment variables hold).
    pub fn from_hex(pseudonym: &str, map: &str) -> Result<Keys, KeyError> {
        let parse = |what, text: &str| -> Result<[u8; 32], KeyError> {
            hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or(KeyError::Malformed { what })
        };
        let (pseudonym, map) = (parse("pseudonym key", pseudonym)?, parse("re-identification map key", map)?);
        if pseudonym == map {
            return Err(KeyError::Same);
        }
        Ok(Keys { pseudonym, map, demo: false })
    }

    /// Fixed, public keys: anyone can reverse what they protect. For demos without patient data.
    pub fn demo() -> Keys {
        let derive = |label: &str| -> [u8; 32] { Sha256::digest(format!("triage-node public demo key: {label}")).into() };
        Keys { pseudonym: derive("pseudonym"), map: derive("map"), demo: true }
    }

    #[cfg(test)]
    pub fn for_tests(seed: u8) -> Keys {
        Keys { pseudonym: [seed; 32], map: [seed ^ 0xFF; 32], demo: false }
    }

    /// HMAC-SHA256(pseudonym key, domain || 0x00 || parts joined by 0x00).
    fn hmac(&self, domain: &str, parts: &[&str]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.pseudonym).expect("HMAC takes any key length");
        mac.update(domain.as_bytes());
        for p in parts {
            mac.update(&[0]);
            mac.update(p.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// A keyed digest of received bytes (`instances.dataset_digest`): it tells two receptions of
    /// the same bytes apart from different ones, but without the key it cannot be computed
    /// from the original file, so it links no stored row to a copy of the identified original.
    /// BLAKE3 in its keyed mode, under a key derived from the pseudonym key: every received
    /// byte goes through it, and it costs a quarter of HMAC-SHA256 (0.10 ms instead of 0.31 ms
    /// for a 512x512 CT slice on the development machine).
    pub fn content_mac(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.hmac("received-dataset", &[]))
    }

    /// The key of the audit chain's HMAC: derived from the pseudonym key, so the chain cannot be
    /// rewritten (nor a truncated one made to verify) by anyone who holds only the database.
    pub fn audit_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.hmac("audit-chain", &[]))
    }

    /// `2.25.<decimal of the first 128 bits of the HMAC>` (PS3.5 B.2: a UUID-derived UID).
    pub fn uid(&self, original: &str) -> String {
        let h = self.hmac("uid", &[original]);
        let n = u128::from_be_bytes(h[..16].try_into().unwrap());
        format!("2.25.{n}")
    }

    /// A patient's pseudonym: 16 upper-case hex digits, from Issuer of Patient ID and Patient ID.
    pub fn patient_pseudonym(&self, issuer: &str, patient_id: &str) -> String {
        hex::encode_upper(&self.hmac("patient", &[issuer, patient_id])[..8])
    }

    /// Days to move this patient's dates back: 1..=3650, fixed per patient under one key, so
    /// intervals between a patient's studies are kept (Retain Longitudinal Modified Dates).
    pub fn date_shift_days(&self, issuer: &str, patient_id: &str) -> i64 {
        let h = self.hmac("date-shift", &[issuer, patient_id]);
        1 + i64::from(u32::from_be_bytes(h[..4].try_into().unwrap()) % 3650)
    }

    /// A short fingerprint of the map key, stored beside each record so a key mix-up is named.
    pub fn map_key_id(&self) -> String {
        hex::encode(&Sha256::digest([b"map-key-id".as_slice(), &self.map].concat())[..4])
    }

    /// Encrypt `plain` bound to `aad` (the record's de-identified SOP Instance UID, so records
    /// cannot be swapped between rows). Returns (nonce hex, ciphertext hex).
    pub fn seal(&self, plain: &[u8], aad: &str) -> Result<(String, String), SealError> {
        let cipher = Aes256Gcm::new_from_slice(&self.map).map_err(|_| SealError::Seal)?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = cipher.encrypt(&nonce, Payload { msg: plain, aad: aad.as_bytes() }).map_err(|_| SealError::Seal)?;
        Ok((hex::encode(nonce), hex::encode(sealed)))
    }

    pub fn open(&self, nonce_hex: &str, sealed_hex: &str, aad: &str, key_id: &str) -> Result<Vec<u8>, SealError> {
        let fail = || SealError::Open { expected: self.map_key_id(), found: key_id.to_string() };
        let nonce = hex::decode(nonce_hex).map_err(|_| fail())?;
        let sealed = hex::decode(sealed_hex).map_err(|_| fail())?;
        if nonce.len() != 12 {
            return Err(fail());
        }
        let cipher = Aes256Gcm::new_from_slice(&self.map).map_err(|_| fail())?;
        cipher.decrypt(Nonce::from_slice(&nonce), Payload { msg: &sealed, aad: aad.as_bytes() }).map_err(|_| fail())
    }
}

/// A fresh random key as 64 hex digits (for `triage-node keygen`).
pub fn generate() -> String {
    hex::encode(Aes256Gcm::generate_key(&mut OsRng))
}

fn one(what: &'static str, env: &'static str, file_key: &'static str, file: Option<&Path>) -> Result<[u8; 32], KeyError> {
    let text = zeroize::Zeroizing::new(match (std::env::var(env), file) {
        (Ok(v), _) if !v.trim().is_empty() => v,
        (_, Some(path)) => {
            let read = |source| KeyError::Read { what, path: path.display().to_string(), cause: source };
            let file = std::fs::File::open(path).map_err(read)?;
            check_private(what, path, &file.metadata().map_err(read)?)?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut &file, &mut text).map_err(read)?;
            text
        }
        _ => return Err(KeyError::Missing { what, env, file_key }),
    });
    let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(|_| KeyError::Malformed { what })?);
    bytes.as_slice().try_into().map_err(|_| KeyError::Malformed { what })
}

/// A key file must not be readable or writable by group or others.
fn check_private(what: &'static str, path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed { what, path: path.display().to_string(), mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_keyed_and_valid() {
        let (a, b) = (Keys::for_tests(1), Keys::for_tests(2));
        let u = a.uid("1.2.840.113619.2.55.3.1");
        assert_eq!(u, a.uid("1.2.840.113619.2.55.3.1"));
        assert_ne!(u, a.uid("1.2.840.113619.2.55.3.2"));
        assert_ne!(u, b.uid("1.2.840.113619.2.55.3.1"));
        assert!(u.starts_with("2.25.") && u.len() <= 64);
        let digits = &u[5..];
        assert!(digits.chars().all(|c| c.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0')));
    }

    #[test]
    fn seal_round_trips_and_binds_the_row() {
        let k = Keys::for_tests(3);
        let (nonce, sealed) = k.seal(b"{\"patient_id\":\"X\"}", "2.25.1").unwrap();
        assert_eq!(k.open(&nonce, &sealed, "2.25.1", &k.map_key_id()).unwrap(), b"{\"patient_id\":\"X\"}");
        assert!(k.open(&nonce, &sealed, "2.25.2", "x").is_err(), "a record moved to another row does not open");
        assert!(Keys::for_tests(4).open(&nonce, &sealed, "2.25.1", "x").is_err(), "another key does not open it");
    }

    #[test]
    fn date_shift_is_within_ten_years() {
        let k = Keys::for_tests(5);
        for id in ["1", "2", "PAT-3", ""] {
            let d = k.date_shift_days("", id);
            assert!((1..=3650).contains(&d));
            assert_eq!(d, k.date_shift_days("", id));
        }
    }

    #[test]
    fn key_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (p, m) = (dir.path().join("p.key"), dir.path().join("m.key"));
        std::fs::write(&p, generate()).unwrap();
        std::fs::write(&m, generate()).unwrap();
        let load = || Keys::load(&KeySources { pseudonym_key_file: Some(&p), map_key_file: Some(&m), demo_keys: false });
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o400)).unwrap();
            if std::env::var(PSEUDONYM_KEY_ENV).is_err() {
                let e = load().unwrap_err();
                assert!(matches!(e, KeyError::Exposed { .. }), "mode {mode:o}: {e}");
                assert!(e.to_string().contains("chmod"), "{e}");
            }
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        if std::env::var(PSEUDONYM_KEY_ENV).is_err() && std::env::var(MAP_KEY_ENV).is_err() {
            load().unwrap();
        }
    }

    #[test]
    fn generated_keys_parse() {
        let g = generate();
        assert_eq!(g.len(), 64);
        assert_ne!(g, generate());
    }
}
