//! Newtypes shared by every stage.
//!
//! Owns: `AeTitle` (PS3.5 AE value rules), `ByteSize` (human sizes in config), `Redacted`
//! (a wrapper whose Debug/Display never print the value: use it for anything identifying),
//! civil-calendar day arithmetic (store folders, date shifting).
//! Must not: do IO, or know about PDUs, SQL or tensors.

use std::fmt;

use serde::{de, Deserialize, Deserializer};

/// An Application Entity title: 1 to 16 characters of the default repertoire without
/// backslash or control characters; leading and trailing spaces are not significant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AeTitle(String);

impl AeTitle {
    pub fn parse(raw: &str) -> Result<AeTitle, &'static str> {
        let trimmed = raw.trim_matches(' ');
        if trimmed.is_empty() {
            return Err("AE title must not be empty or all spaces");
        }
        if trimmed.len() > 16 {
            return Err("AE title must be at most 16 characters");
        }
        if !trimmed.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\') {
            return Err("AE title must be printable ASCII without backslash");
        }
        Ok(AeTitle(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Read from the settings as text, checked as `parse` checks it (the error names the key).
impl<'de> Deserialize<'de> for AeTitle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        AeTitle::parse(&raw).map_err(|reason| de::Error::custom(format!("{raw:?}: {reason}")))
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A size in bytes, written in configuration as an integer or a string such as "512MiB".
/// What a registered AE is to the node: a modality stores into the pipeline; a PACS receives
/// results and reports Storage Commitment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeRole {
    Modality,
    Pacs,
}

impl fmt::Display for AeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            AeRole::Modality => "modality",
            AeRole::Pacs => "pacs",
        })
    }
}

impl std::str::FromStr for AeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "modality" => Ok(AeRole::Modality),
            "pacs" => Ok(AeRole::Pacs),
            other => Err(format!("unknown role {other:?} (expected modality or pacs)")),
        }
    }
}

/// What a background worker is doing (`worker::Workers` keeps it; `worker_status` stores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Idle,
    Busy,
    /// The last unit failed; the worker retries after its backoff.
    Error,
    Stopped,
}

impl WorkerState {
    pub const ALL: &'static [WorkerState] = &[WorkerState::Idle, WorkerState::Busy, WorkerState::Error, WorkerState::Stopped];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Error => "error",
            WorkerState::Stopped => "stopped",
        }
    }
}

impl std::str::FromStr for WorkerState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkerState::ALL.iter().copied().find(|w| w.as_str() == s).ok_or_else(|| format!("unknown worker state {s:?}"))
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(raw: &str) -> Result<ByteSize, String> {
        let s = raw.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("{raw:?} is not a size"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            "tb" => 1_000_000_000_000,
            "tib" | "t" => 1 << 40,
            "pb" => 1_000_000_000_000_000,
            "pib" | "p" => 1 << 50,
            other => return Err(format!("unknown size unit {other:?} in {raw:?}")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("{raw:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(de::Error::custom),
        }
    }
}

/// A string a peer chose (an AE title from an A-ASSOCIATE-RQ, say), as it may appear in a log
/// line: anything but printable ASCII is escaped (`\n`, `\u{1b}`), so a peer can neither forge
/// log lines nor hide text in them.
pub struct PeerText<'a>(pub &'a str);

impl fmt::Display for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == ' ' || c.is_ascii_graphic() && c != '\\' {
                fmt::Write::write_char(f, c)?;
            } else {
                write!(f, "{}", c.escape_default())?;
            }
        }
        Ok(())
    }
}

/// Holds a value that may identify a patient. It can be used but never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Milliseconds since the Unix epoch: the one time format in the database.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(std::net::IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Connections open per peer address, each held by a `HostSlot` (IPv4-mapped IPv6 addresses
/// counted as the IPv4 address): the DICOM and the HTTP listeners bound what one peer may
/// hold with it.
#[derive(Default)]
pub struct HostCounts(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's place in its address's count, given back when dropped.
pub struct HostSlot {
    counts: std::sync::Arc<HostCounts>,
    ip: std::net::IpAddr,
}

impl HostCounts {
    /// A place for a connection from `ip`, unless `limit` are open from it.
    pub fn take(self: std::sync::Arc<Self>, ip: std::net::IpAddr, limit: usize) -> Option<HostSlot> {
        let ip = canonical_ip(ip);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        drop(map);
        Some(HostSlot { counts: self, ip })
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(BASE64[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of standard base64 with padding; None for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 4 != 0 {
        return None;
    }
    let value = |c: u8| BASE64.iter().position(|&b| b == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (i, quad) in text.chunks(4).enumerate() {
        let last = i + 1 == text.len() / 4;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_address_gets_its_own_count_and_gives_it_back() {
        let hosts = std::sync::Arc::new(HostCounts::default());
        let a: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let first = hosts.clone().take(a, 2).unwrap();
        let _second = hosts.clone().take(mapped, 2).unwrap();
        assert!(hosts.clone().take(a, 2).is_none(), "a mapped address counts as its IPv4 one");
        assert!(hosts.clone().take("127.0.0.3".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(hosts.clone().take(a, 2).is_some());
    }
    use super::*;

    #[test]
    fn peer_text_escapes_what_could_forge_a_log_line() {
        assert_eq!(PeerText("CT_ROOM1").to_string(), "CT_ROOM1");
        assert_eq!(PeerText("CT 1").to_string(), "CT 1");
        assert_eq!(PeerText("X\n2026-12-01T00:00:00Z INFO forged").to_string(), "X\\n2026-12-01T00:00:00Z INFO forged");
        assert_eq!(PeerText("\u{1b}[2Jé\\").to_string(), "\\u{1b}[2J\\u{e9}\\\\");
    }

    #[test]
    fn ae_titles() {
        let check = |raw: &str, expected: Option<&str>| {
            assert_eq!(AeTitle::parse(raw).ok().map(|a| a.0), expected.map(str::to_string), "{raw:?}");
        };
        check("TRIAGE", Some("TRIAGE"));
        check("  CT1  ", Some("CT1"));
        check("A", Some("A"));
        check("SIXTEEN_CHARS_OK", Some("SIXTEEN_CHARS_OK"));
        check("SEVENTEEN_CHARS_X", None);
        check("", None);
        check("    ", None);
        check("BAD\\AE", None);
        check("TAB\tAE", None);
    }

    #[test]
    fn byte_sizes() {
        let check = |raw: &str, expected: Option<u64>| {
            assert_eq!(ByteSize::parse(raw).ok().map(|b| b.0), expected, "{raw:?}");
        };
        check("0", Some(0));
        check("1024", Some(1024));
        check("1GiB", Some(1 << 30));
        check("2 GB", Some(2_000_000_000));
        check("512MiB", Some(512 << 20));
        check("100PB", Some(100_000_000_000_000_000));
        check("12 parsecs", None);
        check("GiB", None);
    }

    #[test]
    fn base64_round_trips() {
        for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0, 255, 128, 7]] {
            assert_eq!(base64_decode(&base64(bytes)).as_deref(), Some(bytes));
        }
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_decode("Zm9vYg=="), Some(b"foob".to_vec()));
        assert_eq!(base64_decode("Zm9"), None);
        assert_eq!(base64_decode("Z=9v"), None);
        assert_eq!(base64_decode("Zm9v!mFy"), None);
    }

    #[test]
    fn redacted_never_prints() {
        let r = Redacted("DOE^JOHN");
        assert_eq!(format!("{r} {r:?}"), "<redacted> <redacted>");
    }
}
