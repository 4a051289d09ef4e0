//! Attribute matching for C-FIND (PS3.4 C.2.2.2): the value of one key in a query, parsed into
//! what it asks for, and matched against a candidate's value. Pure: no IO, no data set types.
//!
//! Supported: Universal Matching (an empty value, or `*`), Single Value Matching (leading and
//! trailing spaces insignificant; PN case-insensitive unless asked otherwise, trailing empty
//! components insignificant, a query without `=` compared with the alphabetic group), List of
//! UID Matching (`\`-separated UIDs), Wild Card Matching (`*` any run, `?` one character; for the
//! string VRs PS3.4 allows it on), Range Matching for DA, TM and DT (`a-b`, `-b`, `a-`; bounds
//! inclusive; a partial value as a bound covers its whole extent, so `2024-2024` is the year);
//! several `\`-separated values of a text key match when any does.
//! A candidate with several values (`\`) matches when one of them does. Not here: Sequence
//! Matching (the caller matches items key by key), combined date-time matching (extended
//! negotiation), time zone offsets in DT (a single value's offset is ignored; a range's bounds
//! take none).

use std::fmt;

/// The value representations matching distinguishes (others match as strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// AE, CS, LO, LT, SH, ST, UC, UR, UT: wild cards allowed, case-sensitive.
    Text,
    /// PN: wild cards allowed, case-insensitive unless `Options::case_sensitive_names`.
    PersonName,
    /// UI: single value or a list of UIDs; no wild cards.
    Uid,
    Date,
    Time,
    DateTime,
    /// IS, DS, US, UL and the like: single value only.
    Number,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Match PN values case-sensitively (PS3.4 leaves it to the SCP; the default is not to).
    pub case_sensitive_names: bool,
}

/// A query value that cannot be matched (answered with a failure status and this reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchError(pub String);

impl fmt::Display for MatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MatchError {}

/// What one key of a query asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    Universal,
    /// The normalised value (and, for PN, whether case is folded).
    Single {
        value: String,
        fold_case: bool,
    },
    UidList(Vec<String>),
    Wildcard {
        pattern: Vec<char>,
        fold_case: bool,
    },
    /// Inclusive bounds, each normalised to a comparable string of fixed width.
    Range {
        low: Option<String>,
        high: Option<String>,
        kind: Kind,
    },
    /// Several `\`-separated values of a code string key (Modalities in Study `CT\MR`): any of
    /// them matching is a match.
    AnyOf(Vec<Matcher>),
}

impl Matcher {
    /// Parse the value `query` of a key of kind `kind`.
    pub fn parse(kind: Kind, query: &str, options: Options) -> Result<Matcher, MatchError> {
        let value = query.trim_matches(|c| c == ' ' || c == '\0');
        // A lone `*` is universal for every kind (PS3.4 C.2.2.2.4; SCUs send it for UIDs and
        // dates too).
        if value.is_empty() || value == "*" {
            return Ok(Matcher::Universal);
        }
        let fold_case = kind == Kind::PersonName && !options.case_sensitive_names;
        match kind {
            Kind::Uid => {
                let uids: Vec<String> = value.split('\\').map(|u| u.trim_matches(|c| c == ' ' || c == '\0').to_string()).collect();
                if let Some(bad) = uids.iter().find(|u| !is_uid(u)) {
                    return Err(MatchError(format!("{bad:?} is not a UID")));
                }
                Ok(if uids.len() == 1 {
                    Matcher::Single { value: uids.into_iter().next().unwrap_or_default(), fold_case: false }
                } else {
                    Matcher::UidList(uids)
                })
            }
            Kind::Date | Kind::Time | Kind::DateTime => {
                if value.contains('\\') {
                    return Err(MatchError("a date or time key takes one value or one range".into()));
                }
                match value.split_once('-') {
                    // DT values may carry a "-hhmm" time zone offset: only a range has a
                    // leading, trailing or second-half value around the hyphen.
                    Some((low, high)) if kind != Kind::DateTime || is_dt_range(value) => {
                        let low = (!low.is_empty()).then(|| bound(kind, low, false)).transpose()?;
                        let high = (!high.is_empty()).then(|| bound(kind, high, true)).transpose()?;
                        if low.is_none() && high.is_none() {
                            return Err(MatchError("a range needs at least one bound".into()));
                        }
                        Ok(Matcher::Range { low, high, kind })
                    }
                    _ => {
                        // A single date or time: the whole extent it names.
                        let low = bound(kind, value, false)?;
                        let high = bound(kind, value, true)?;
                        Ok(Matcher::Range { low: Some(low), high: Some(high), kind })
                    }
                }
            }
            Kind::Text if value.contains('\\') => {
                let each: Result<Vec<Matcher>, MatchError> =
                    value.split('\\').filter(|v| !v.trim().is_empty()).map(|v| Matcher::parse(kind, v, options)).collect();
                let each = each?;
                Ok(if each.contains(&Matcher::Universal) || each.is_empty() { Matcher::Universal } else { Matcher::AnyOf(each) })
            }
            Kind::Text | Kind::PersonName if value.contains(['*', '?']) => {
                let normal = if kind == Kind::PersonName { normal_name(value) } else { value.to_string() };
                let normal = if fold_case { normal.to_lowercase() } else { normal };
                Ok(Matcher::Wildcard { pattern: normal.chars().collect(), fold_case })
            }
            Kind::PersonName => {
                let normal = normal_name(value);
                Ok(Matcher::Single { value: if fold_case { normal.to_lowercase() } else { normal }, fold_case })
            }
            Kind::Text | Kind::Number => Ok(Matcher::Single { value: value.to_string(), fold_case: false }),
        }
    }

    /// Does `candidate` (a stored value, possibly several separated by `\`) match? A candidate
    /// without a value matches only Universal Matching.
    pub fn matches(&self, kind: Kind, candidate: &str) -> bool {
        if *self == Matcher::Universal {
            return true;
        }
        candidate.split('\\').map(|c| c.trim_matches(|c| c == ' ' || c == '\0')).filter(|c| !c.is_empty()).any(|c| self.matches_one(kind, c))
    }

    fn matches_one(&self, kind: Kind, candidate: &str) -> bool {
        let name = |c: &str, fold: bool| {
            let n = normal_name(c);
            if fold {
                n.to_lowercase()
            } else {
                n
            }
        };
        match self {
            Matcher::Universal => true,
            Matcher::Single { value, fold_case } if kind == Kind::PersonName => {
                let c = name(candidate, *fold_case);
                // A query without groups names the alphabetic group.
                &c == value || (!value.contains('=') && c.split('=').next() == Some(value.as_str()))
            }
            Matcher::Single { value, .. } => candidate == value,
            Matcher::UidList(uids) => uids.iter().any(|u| u == candidate),
            Matcher::Wildcard { pattern, fold_case } => {
                let c = if kind == Kind::PersonName { name(candidate, *fold_case) } else { candidate.to_string() };
                let first_group = c.split('=').next().unwrap_or_default().to_string();
                let chars: Vec<char> = c.chars().collect();
                wildcard(pattern, &chars)
                    || (kind == Kind::PersonName && !pattern.contains(&'=') && wildcard(pattern, &first_group.chars().collect::<Vec<_>>()))
            }
            Matcher::AnyOf(each) => each.iter().any(|m| m.matches_one(kind, candidate)),
            Matcher::Range { low, high, kind } => {
                // A stored value is a point (or, if partial, the start of its extent).
                let Ok(point) = bound(*kind, candidate, false) else { return false };
                low.as_ref().is_none_or(|l| point >= *l) && high.as_ref().is_none_or(|h| point <= *h)
            }
        }
    }
}

/// PS3.5 9.1: a UID is dot-separated digit runs, no leading zero in a component, 64 at most.
fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')))
}

/// A DT value is a range when its hyphen is not a time zone offset: `a-b`, `-b` or `a-`.
/// An offset is `-hhmm` with hh at most 14 (PS3.5 Table 6.2-1), so `20240101-0500` is one
/// value and `2023-2024` a range of years.
fn is_dt_range(v: &str) -> bool {
    if v.starts_with('-') || v.ends_with('-') {
        return true;
    }
    match v.split_once('-') {
        Some((_, right)) => {
            let offset = right.len() == 4
                && right.bytes().all(|b| b.is_ascii_digit())
                && right[..2].parse::<u32>().is_ok_and(|h| h <= 14)
                && right[2..].parse::<u32>().is_ok_and(|m| m < 60);
            !offset
        }
        None => false,
    }
}

/// Person Name without insignificant padding: trailing spaces in components, trailing empty
/// components (`^`) and groups (`=`).
fn normal_name(v: &str) -> String {
    let groups: Vec<String> = v
        .split('=')
        .map(|g| {
            let comps: Vec<&str> = g.split('^').map(|c| c.trim()).collect();
            let mut n = comps.len();
            while n > 0 && comps[n - 1].is_empty() {
                n -= 1;
            }
            comps[..n].join("^")
        })
        .collect();
    let mut n = groups.len();
    while n > 1 && groups[n - 1].is_empty() {
        n -= 1;
    }
    groups[..n].join("=")
}

/// `*` matches any run (also empty), `?` exactly one character.
fn wildcard(pattern: &[char], text: &[char]) -> bool {
    // Iterative with one backtrack point: linear in practice, never exponential.
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// A date, time or date-time, possibly partial, as a fixed-width comparable string: the start
/// of its extent (`upper` false) or its end (`upper` true). Errors name what is malformed.
fn bound(kind: Kind, v: &str, upper: bool) -> Result<String, MatchError> {
    let bad = || {
        MatchError(format!(
            "{v:?} is not a valid {}",
            match kind {
                Kind::Date => "date (YYYYMMDD)",
                Kind::Time => "time (HH[MM[SS[.F{1,6}]]])",
                _ => "date-time (YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]])",
            }
        ))
    };
    match kind {
        Kind::Date => {
            if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            check_date(v).ok_or_else(bad)?;
            Ok(v.to_string())
        }
        Kind::Time => time_bound(v, upper).ok_or_else(bad),
        _ => {
            // Drop a time zone offset (compared as written: see the module notes).
            let v = match v.find(['+', '-']) {
                Some(i) if i >= 4 => &v[..i],
                _ => v,
            };
            let digits = v.split('.').next().unwrap_or_default();
            if digits.len() < 4 || digits.len() > 14 || digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let (date_part, time_part) = digits.split_at(digits.len().min(8));
            let date = match date_part.len() {
                4 => format!("{date_part}{}", if upper { "1231" } else { "0101" }),
                6 => format!("{date_part}{}", if upper { last_day(date_part).ok_or_else(bad)? } else { "01".to_string() }),
                _ => date_part.to_string(),
            };
            check_date(&date).ok_or_else(bad)?;
            let frac = v.split_once('.').map(|(_, f)| f);
            let time = if time_part.is_empty() {
                time_bound(if upper { "23" } else { "00" }, upper)
            } else {
                time_bound(
                    &match frac {
                        Some(f) => format!("{time_part}.{f}"),
                        None => time_part.to_string(),
                    },
                    upper,
                )
            }
            .ok_or_else(bad)?;
            Ok(format!("{date}{time}"))
        }
    }
}

/// HH[MM[SS[.F{1,6}]]] as HHMMSSFFFFFF, the start or the end of the extent it names.
fn time_bound(v: &str, upper: bool) -> Option<String> {
    let (digits, frac) = match v.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (v, None),
    };
    // Legacy HH:MM:SS is accepted (PS3.5 6.2, retired but still sent).
    let digits: String = digits.chars().filter(|&c| c != ':').collect();
    if digits.is_empty() || digits.len() > 6 || digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.is_some_and(|f| f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) || digits.len() != 6) {
        return None;
    }
    let n = |s: &str| s.parse::<u32>().ok();
    let hh = n(&digits[0..2])?;
    let mm = if digits.len() >= 4 { n(&digits[2..4])? } else { 0 };
    let ss = if digits.len() >= 6 { n(&digits[4..6])? } else { 0 };
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let fill = |len: usize, upper: bool| if upper { "9".repeat(len) } else { "0".repeat(len) };
    let mut out = digits.clone();
    match digits.len() {
        2 => out.push_str(if upper { "5959" } else { "0000" }),
        4 => out.push_str(if upper { "59" } else { "00" }),
        _ => {}
    }
    match frac {
        Some(f) => {
            out.push_str(f);
            out.push_str(&fill(6 - f.len(), upper));
        }
        None => out.push_str(&fill(6, upper)),
    }
    Some(out)
}

fn check_date(yyyymmdd: &str) -> Option<()> {
    yyyymmdd.get(0..4)?.parse::<u32>().ok()?;
    let m: u32 = yyyymmdd.get(4..6)?.parse().ok()?;
    let d: u32 = yyyymmdd.get(6..8)?.parse().ok()?;
    let last: u32 = last_day(&yyyymmdd[0..6])?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=last).contains(&d)).then_some(())
}

/// The last day of the month YYYYMM, as two digits.
fn last_day(yyyymm: &str) -> Option<String> {
    let y: u32 = yyyymm.get(0..4)?.parse().ok()?;
    let m: u32 = yyyymm.get(4..6)?.parse().ok()?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let d = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    Some(format!("{d:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: Kind, query: &str, candidate: &str) -> bool {
        Matcher::parse(kind, query, Options::default()).unwrap().matches(kind, candidate)
    }

    #[test]
    fn universal_and_single_value() {
        assert!(m(Kind::Text, "", "anything"));
        assert!(m(Kind::Text, "*", "anything"));
        assert!(m(Kind::Text, "", ""));
        assert!(m(Kind::Text, "ACC123", "ACC123 "));
        assert!(!m(Kind::Text, "ACC123", "acc123"), "text is case-sensitive");
        assert!(!m(Kind::Text, "ACC12", "ACC123"));
        assert!(!m(Kind::Text, "ACC123", ""), "an empty candidate matches only universal matching");
        assert!(m(Kind::Text, "CT", "MR\\CT"), "one of several values");
        assert!(m(Kind::Number, "3", "3"));
    }

    #[test]
    fn person_names() {
        assert!(m(Kind::PersonName, "DOE^JOHN", "Doe^John"), "case-insensitive by default");
        assert!(m(Kind::PersonName, "Doe^John^^^", "Doe^John"), "trailing empty components");
        assert!(m(Kind::PersonName, "Doe^John", "Doe^John=ドウ^ジョン"), "the alphabetic group");
        assert!(!m(Kind::PersonName, "Doe^Jane", "Doe^John"));
        assert!(m(Kind::PersonName, "DOE*", "Doe^John"));
        assert!(m(Kind::PersonName, "D?E^J*", "Doe^John"));
        assert!(!m(Kind::PersonName, "SMITH*", "Doe^John"));
        let strict = Options { case_sensitive_names: true };
        assert!(!Matcher::parse(Kind::PersonName, "DOE^JOHN", strict).unwrap().matches(Kind::PersonName, "Doe^John"));
        assert!(Matcher::parse(Kind::PersonName, "Doe^John", strict).unwrap().matches(Kind::PersonName, "Doe^John"));
    }

    #[test]
    fn wild_cards() {
        for (q, c, want) in [
            ("A*", "ABC", true),
            ("*C", "ABC", true),
            ("A*C", "AC", true),
            ("A?C", "ABC", true),
            ("A?C", "AC", false),
            ("*B*", "ABC", true),
            ("**", "X", true),
            ("A*B*C", "AXXBYYC", true),
            ("A*B*C", "AXXBYY", false),
            ("?", "XY", false),
        ] {
            assert_eq!(m(Kind::Text, q, c), want, "{q} ~ {c}");
        }
        assert!(wildcard(&['*'], &[]) && !wildcard(&['?'], &[]));
        // A long pattern against a long text stays fast (no exponential backtracking).
        let text = "a".repeat(5000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!m(Kind::Text, &pattern, &text));
    }

    #[test]
    fn several_code_values_match_any_of_them() {
        assert!(m(Kind::Text, "CT\\MR", "MR"));
        assert!(m(Kind::Text, "CT\\MR", "OT\\CT"), "a multi-valued candidate (Modalities in Study)");
        assert!(!m(Kind::Text, "CT\\MR", "SR\\OT"));
        assert!(m(Kind::Text, "C*\\XA", "CR"));
    }

    #[test]
    fn uids_and_lists() {
        assert!(m(Kind::Uid, "1.2.3", "1.2.3"));
        assert!(!m(Kind::Uid, "1.2.3", "1.2.30"));
        assert!(m(Kind::Uid, "1.2.3\\1.2.4", "1.2.4"));
        assert!(m(Kind::Uid, "*", "1.2.4") && m(Kind::Date, "*", "20240101"), "a lone * is universal");
        assert!(!m(Kind::Uid, "1.2.3\\1.2.4", "1.2.5"));
        for bad in ["1.2.*", "1..2", "1.02", "abc"] {
            assert!(Matcher::parse(Kind::Uid, bad, Options::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn date_ranges() {
        assert!(m(Kind::Date, "20240115", "20240115"));
        assert!(!m(Kind::Date, "20240115", "20240116"));
        assert!(m(Kind::Date, "20240101-20240131", "20240131"), "bounds inclusive");
        assert!(!m(Kind::Date, "20240101-20240131", "20240201"));
        assert!(m(Kind::Date, "20240101-", "29991231"));
        assert!(m(Kind::Date, "-20240101", "19000101"));
        assert!(!m(Kind::Date, "-20240101", "20240102"));
        assert!(!m(Kind::Date, "20240131-20240101", "20240115"), "an empty range matches nothing");
        for bad in ["2024011", "20241301", "20240230", "2024-01-01-2", "-", "20240101\\20240102"] {
            assert!(Matcher::parse(Kind::Date, bad, Options::default()).is_err(), "{bad}");
        }
        assert!(m(Kind::Date, "20240229", "20240229"), "leap day");
    }

    #[test]
    fn time_ranges() {
        assert!(m(Kind::Time, "1000-1200", "115959.999"));
        assert!(m(Kind::Time, "1000-1200", "1200"), "a partial bound covers its extent");
        assert!(m(Kind::Time, "1000-12", "125959"));
        assert!(!m(Kind::Time, "1000-1200", "120100"));
        assert!(!m(Kind::Time, "1000-1200", "095959"));
        assert!(m(Kind::Time, "10", "103000"), "a single partial time is its whole hour");
        assert!(m(Kind::Time, "10:00-11:00", "10:30:00"), "legacy colons");
        assert!(Matcher::parse(Kind::Time, "2500", Options::default()).is_err());
        assert!(Matcher::parse(Kind::Time, "10.5", Options::default()).is_err(), "fractions only after seconds");
    }

    #[test]
    fn date_time_ranges() {
        assert!(m(Kind::DateTime, "2024-2024", "20240615120000"), "a year");
        assert!(m(Kind::DateTime, "2023-2024", "20230101000000") && !m(Kind::DateTime, "2023-2024", "20250101"), "a range of years");
        assert!(m(Kind::DateTime, "202402", "20240229235959.999999"), "a month, leap year");
        assert!(!m(Kind::DateTime, "202402", "20240301"));
        assert!(m(Kind::DateTime, "20240101120000-", "20240101120000"));
        assert!(m(Kind::DateTime, "20240101-0500", "20240101083000"), "a time zone offset, not a range");
        assert!(m(Kind::DateTime, "20240101-20240102", "20240102235959"));
        assert!(Matcher::parse(Kind::DateTime, "20241", Options::default()).is_err());
    }

    /// Arbitrary query and candidate text never panics in any kind.
    #[test]
    fn arbitrary_values_never_panic() {
        let mut x = 0x9E3779B97F4A7C15u64;
        let alphabet: Vec<char> = "0123456789.-*?\\^= :+aZé".chars().collect();
        let mut text = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect()
        };
        for i in 0..4000 {
            let (q, c) = (text(i % 24), text(i % 17));
            for kind in [Kind::Text, Kind::PersonName, Kind::Uid, Kind::Date, Kind::Time, Kind::DateTime, Kind::Number] {
                if let Ok(matcher) = Matcher::parse(kind, &q, Options::default()) {
                    let _ = matcher.matches(kind, &c);
                }
            }
        }
    }
}
