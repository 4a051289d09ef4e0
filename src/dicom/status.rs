//! DIMSE status codes (PS3.7 Annex C): any code a peer sends, classified, and named constants
//! for the ones this node sends or acts on.

use std::fmt;

/// A DIMSE Status (0000,0900) value. Any `u16` is a status; `kind` says what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub u16);

/// PS3.7 C.1: the class a status code belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Success,
    Warning,
    Failure,
    Cancel,
    Pending,
}

impl Status {
    pub const SUCCESS: Status = Status(0x0000);
    /// C-STORE Warning: the SCP coerced data elements (PS3.4 B.2.3).
    pub const WARNING_COERCION: Status = Status(0xB000);
    pub const CANCEL: Status = Status(0xFE00);
    pub const PENDING: Status = Status(0xFF00);
    pub const PENDING_WITH_WARNINGS: Status = Status(0xFF01);

    pub const INVALID_ATTRIBUTE_VALUE: Status = Status(0x0106);
    pub const PROCESSING_FAILURE: Status = Status(0x0110);
    pub const DUPLICATE_SOP_INSTANCE: Status = Status(0x0111);
    pub const NO_SUCH_OBJECT_INSTANCE: Status = Status(0x0112);
    pub const NO_SUCH_EVENT_TYPE: Status = Status(0x0113);
    pub const CLASS_INSTANCE_CONFLICT: Status = Status(0x0119);
    pub const MISSING_ATTRIBUTE: Status = Status(0x0120);
    pub const REFUSED_SOP_CLASS_NOT_SUPPORTED: Status = Status(0x0122);
    pub const DUPLICATE_TRANSACTION_UID: Status = Status(0x0131);
    pub const UNRECOGNIZED_OPERATION: Status = Status(0x0211);
    pub const RESOURCE_LIMITATION: Status = Status(0x0213);
    /// Refused: Out of Resources (C-STORE, C-FIND, C-MOVE, C-GET: A7xx).
    pub const OUT_OF_RESOURCES: Status = Status(0xA700);
    /// C-STORE: Data Set does not match SOP Class; C-FIND/C-MOVE/C-GET: Identifier does not match.
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Status = Status(0xA900);
    /// C-STORE, C-FIND, C-MOVE, C-GET: Cannot understand (Cxxx).
    pub const CANNOT_UNDERSTAND: Status = Status(0xC000);
    /// C-FIND, C-MOVE, C-GET: Identifier does not match SOP Class (A900).
    pub const IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Status = Status(0xA900);
    /// C-FIND, C-MOVE, C-GET: Unable to process (C000).
    pub const UNABLE_TO_PROCESS: Status = Status(0xC000);
    /// C-MOVE, C-GET: Refused: Out of Resources – Unable to perform sub-operations (A702).
    pub const UNABLE_TO_PERFORM_SUB_OPERATIONS: Status = Status(0xA702);
    /// C-MOVE: Refused: Move Destination unknown (A801).
    pub const MOVE_DESTINATION_UNKNOWN: Status = Status(0xA801);
    /// C-MOVE, C-GET: Warning: Sub-operations Complete – One or more Failures or Warnings (B000).
    pub const SUB_OPERATIONS_WITH_FAILURES: Status = Status(0xB000);

    pub fn code(self) -> u16 {
        self.0
    }

    pub fn kind(self) -> StatusKind {
        match self.0 {
            0x0000 => StatusKind::Success,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusKind::Warning,
            0xFE00 => StatusKind::Cancel,
            0xFF00 | 0xFF01 => StatusKind::Pending,
            _ => StatusKind::Failure,
        }
    }

    pub fn is_success(self) -> bool {
        self.kind() == StatusKind::Success
    }

    /// Success or Warning: the operation was performed (a C-STORE with a warning stored the
    /// instance).
    pub fn is_performed(self) -> bool {
        matches!(self.kind(), StatusKind::Success | StatusKind::Warning)
    }

    pub fn is_failure(self) -> bool {
        self.kind() == StatusKind::Failure
    }

    pub fn is_pending(self) -> bool {
        self.kind() == StatusKind::Pending
    }

    /// Refused: Out of Resources, any of its codes (A7xx): the peer may accept later.
    pub fn is_out_of_resources(self) -> bool {
        (0xA700..=0xA7FF).contains(&self.0)
    }
}

/// `0xA700`, as DICOM documents write it.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06X}", self.0)
    }
}

impl fmt::UpperHex for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::UpperHex::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code classifies as PS3.7 C.1 says, and nothing panics.
    #[test]
    fn every_code_has_its_ps37_class() {
        use StatusKind::*;
        let cases = [
            (0x0000, Success),
            (0x0001, Warning),
            (0x0107, Warning),
            (0x0116, Warning),
            (0xB000, Warning),
            (0xB007, Warning),
            (0xFE00, Cancel),
            (0xFF00, Pending),
            (0xFF01, Pending),
            (0x0110, Failure),
            (0x0122, Failure),
            (0x0211, Failure),
            (0xA700, Failure),
            (0xA801, Failure),
            (0xA900, Failure),
            (0xC000, Failure),
            (0xC0FF, Failure),
        ];
        for (code, kind) in cases {
            assert_eq!(Status(code).kind(), kind, "{code:#06X}");
        }
        let counts = (0..=u16::MAX).map(|c| Status(c).kind()).fold([0usize; 5], |mut n, k| {
            n[k as usize] += 1;
            n
        });
        assert_eq!(counts, [1, 3 + 0x1000, 65536 - 1 - (3 + 0x1000) - 1 - 2, 1, 2]);
        assert_eq!(Status::OUT_OF_RESOURCES.to_string(), "0xA700");
        assert!(Status(0xB006).is_performed() && !Status(0xA700).is_performed());
    }
}
