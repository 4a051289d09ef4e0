//! PS3.15 Table E.1-1 as data: the action for every listed attribute, under the Basic Profile
//! and under each option column. The rows live in `table_e1_1.tsv`, transcribed from the
//! standard; this module parses them once and answers "what happens to this tag".
//!
//! Owns: the edition name, the action codes (Table E.1-1a), option precedence. Must not: touch
//! values (the engine in `engine.rs` does) or know about files.

use std::collections::HashMap;
use std::sync::OnceLock;

pub const EDITION: &str = "PS3.15 2024b";
const TSV: &str = include_str!("table_e1_1.tsv");

/// Table E.1-1a action codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Replace with a non-zero-length dummy value consistent with the VR.
    D,
    /// Replace with a zero-length value (or a dummy).
    Z,
    /// Remove.
    X,
    /// Keep (sequences are still cleaned: their items are processed).
    K,
    /// Clean: replace with values of similar meaning that do not identify.
    C,
    /// Replace the UID with one consistent across the instances of a set.
    U,
    /// Z unless D is required to keep the IOD conformant.
    ZD,
    /// X unless Z is required.
    XZ,
    /// X unless D is required.
    XD,
    /// X unless Z or D is required.
    XZD,
    /// X unless Z, or replacing the UIDs contained in the sequence, is required.
    XZU,
}

impl Action {
    fn parse(code: &str) -> Option<Action> {
        Some(match code {
            "D" => Action::D,
            "Z" => Action::Z,
            "X" => Action::X,
            "K" => Action::K,
            "C" => Action::C,
            "U" => Action::U,
            "Z/D" => Action::ZD,
            "X/Z" => Action::XZ,
            "X/D" => Action::XD,
            "X/Z/D" => Action::XZD,
            "X/Z/U*" => Action::XZU,
            _ => return None,
        })
    }
}

/// The option columns of Table E.1-1, in the standard's order. Each names its CID 7050 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileOption {
    RetainSafePrivate,
    RetainUids,
    RetainDeviceIdentity,
    RetainInstitutionIdentity,
    RetainPatientCharacteristics,
    RetainLongitudinalFullDates,
    RetainLongitudinalModifiedDates,
    CleanDescriptors,
    CleanStructuredContent,
    CleanGraphics,
}

impl ProfileOption {
    pub const ALL: [ProfileOption; 10] = [
        ProfileOption::RetainSafePrivate,
        ProfileOption::RetainUids,
        ProfileOption::RetainDeviceIdentity,
        ProfileOption::RetainInstitutionIdentity,
        ProfileOption::RetainPatientCharacteristics,
        ProfileOption::RetainLongitudinalFullDates,
        ProfileOption::RetainLongitudinalModifiedDates,
        ProfileOption::CleanDescriptors,
        ProfileOption::CleanStructuredContent,
        ProfileOption::CleanGraphics,
    ];

    /// (code value, code meaning) in CID 7050, coding scheme DCM.
    pub fn code(self) -> (&'static str, &'static str) {
        match self {
            ProfileOption::RetainSafePrivate => ("113111", "Retain Safe Private Option"),
            ProfileOption::RetainUids => ("113110", "Retain UIDs Option"),
            ProfileOption::RetainDeviceIdentity => ("113109", "Retain Device Identity Option"),
            ProfileOption::RetainInstitutionIdentity => ("113112", "Retain Institution Identity Option"),
            ProfileOption::RetainPatientCharacteristics => ("113108", "Retain Patient Characteristics Option"),
            ProfileOption::RetainLongitudinalFullDates => ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
            ProfileOption::RetainLongitudinalModifiedDates => ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
            ProfileOption::CleanDescriptors => ("113105", "Clean Descriptors Option"),
            ProfileOption::CleanStructuredContent => ("113104", "Clean Structured Content Option"),
            ProfileOption::CleanGraphics => ("113103", "Clean Graphics Option"),
        }
    }
}

/// The Basic Profile's code in CID 7050.
pub const BASIC_PROFILE_CODE: (&str, &str) = ("113100", "Basic Application Confidentiality Profile");

#[derive(Debug, Clone)]
pub struct Row {
    /// `GGGGEEEE` with `x` for any hex digit, or `private`.
    pub tag: &'static str,
    pub basic: Action,
    /// One entry per `ProfileOption::ALL`, `None` where the standard's cell is empty.
    pub options: [Option<Action>; 10],
    pub name: &'static str,
}

impl Row {
    /// The action with `enabled` options applied: each enabled option that has an entry for
    /// this attribute overrides the Basic Profile's action (later columns win, as none of the
    /// options this node offers conflict on any row).
    pub fn action(&self, enabled: &[ProfileOption]) -> Action {
        let mut action = self.basic;
        for (i, opt) in ProfileOption::ALL.iter().enumerate() {
            if let (true, Some(a)) = (enabled.contains(opt), self.options[i]) {
                action = a;
            }
        }
        action
    }
}

pub struct Table {
    pub rows: Vec<Row>,
    exact: HashMap<u32, usize>,
    /// (mask, value, row) for repeating-group rows such as 60xx3000.
    patterns: Vec<(u32, u32, usize)>,
    private: usize,
}

impl Table {
    /// The transcribed table, parsed once. Panics only if the shipped TSV is malformed, which
    /// the unit tests rule out.
    pub fn standard() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(|| Table::parse(TSV).expect("table_e1_1.tsv is well formed"))
    }

    fn parse(tsv: &'static str) -> Result<Table, String> {
        let mut rows = Vec::new();
        let (mut exact, mut patterns, mut private) = (HashMap::new(), Vec::new(), None);
        for (n, line) in tsv.lines().enumerate().filter(|(_, l)| !l.starts_with('#') && !l.is_empty()) {
            let cells: Vec<&'static str> = line.split('\t').collect();
            let bad = |what: &str| format!("table_e1_1.tsv line {}: {what}", n + 1);
            if cells.len() != 14 {
                return Err(bad("expected 14 columns"));
            }
            let basic = Action::parse(cells[1]).ok_or_else(|| bad("unknown basic action"))?;
            let mut options = [None; 10];
            for (i, cell) in cells[2..12].iter().enumerate() {
                options[i] = match *cell {
                    "-" => None,
                    code => Some(Action::parse(code).ok_or_else(|| bad("unknown option action"))?),
                };
            }
            let tag = cells[0];
            let index = rows.len();
            if tag == "private" {
                private = Some(index);
            } else if tag.len() == 8 && tag.chars().all(|c| c.is_ascii_hexdigit() || c == 'x') {
                if tag.contains('x') {
                    let mask = u32::from_str_radix(&tag.chars().map(|c| if c == 'x' { '0' } else { 'f' }).collect::<String>(), 16).unwrap();
                    let value = u32::from_str_radix(&tag.replace('x', "0"), 16).unwrap();
                    patterns.push((mask, value, index));
                } else if exact.insert(u32::from_str_radix(tag, 16).unwrap(), index).is_some() {
                    return Err(bad("duplicate tag"));
                }
            } else {
                return Err(bad("malformed tag"));
            }
            rows.push(Row { tag, basic, options, name: cells[13] });
        }
        let private = private.ok_or("table_e1_1.tsv has no private-attributes row")?;
        Ok(Table { rows, exact, patterns, private })
    }

    /// The row governing `tag`, if the table lists it. Private (odd-group) tags all share one row.
    pub fn lookup(&self, group: u16, element: u16) -> Option<&Row> {
        if group % 2 == 1 {
            return Some(&self.rows[self.private]);
        }
        let key = (u32::from(group) << 16) | u32::from(element);
        if let Some(&i) = self.exact.get(&key) {
            return Some(&self.rows[i]);
        }
        self.patterns.iter().find(|(mask, value, _)| key & mask == *value).map(|&(_, _, i)| &self.rows[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcription_has_the_standards_shape() {
        let t = Table::standard();
        // PS3.15 2024b Table E.1-1 lists 621 rows: 617 tags, 3 repeating-group patterns, private.
        assert_eq!(t.rows.len(), 621);
        assert_eq!(t.exact.len(), 617);
        assert_eq!(t.patterns.len(), 3);
        let row = |g, e| t.lookup(g, e).unwrap();
        assert_eq!(row(0x0010, 0x0010).name, "Patient's Name");
        assert_eq!(row(0x0010, 0x0010).basic, Action::Z);
        assert_eq!(row(0x0010, 0x0020).basic, Action::ZD);
        assert_eq!(row(0x0020, 0x000D).basic, Action::U);
        assert_eq!(row(0x0008, 0x0020).action(&[]), Action::Z);
        assert_eq!(row(0x0008, 0x0020).action(&[ProfileOption::RetainLongitudinalModifiedDates]), Action::C);
        assert_eq!(row(0x6002, 0x3000).name, "Overlay Data");
        assert_eq!(row(0x5010, 0x1234).name, "Curve Data");
        assert_eq!(row(0x0029, 0x1010).name, "Private Attributes");
        assert!(t.lookup(0x0028, 0x0010).is_none(), "Rows is not an identifying attribute");
    }
}
