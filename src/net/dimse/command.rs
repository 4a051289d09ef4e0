//! DIMSE command sets (PS3.7 section 9.3 and Annex E): group 0000 in Implicit VR Little Endian.
//!
//! Owns: decoding and encoding command sets, the command field constants. Statuses are
//! `dicom::Status`.
//! Must not: decide service behaviour (the services do) or touch the network.

use std::collections::BTreeMap;

use crate::dicom::Status;

/// Command Field values (PS3.7 Table E.1-1).
pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    pub const N_ACTION_RQ: u16 = 0x0130;
    pub const N_ACTION_RSP: u16 = 0x8130;
    pub const N_SET_RQ: u16 = 0x0120;
    pub const N_SET_RSP: u16 = 0x8120;
    pub const N_CREATE_RQ: u16 = 0x0140;
    pub const N_CREATE_RSP: u16 = 0x8140;
}

/// Element numbers of group 0000 that we read or write.
pub mod tag {
    pub const GROUP_LENGTH: u16 = 0x0000;
    pub const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
    pub const COMMAND_FIELD: u16 = 0x0100;
    pub const MESSAGE_ID: u16 = 0x0110;
    pub const MESSAGE_ID_BEING_RESPONDED_TO: u16 = 0x0120;
    pub const PRIORITY: u16 = 0x0700;
    pub const COMMAND_DATA_SET_TYPE: u16 = 0x0800;
    pub const STATUS: u16 = 0x0900;
    pub const ERROR_COMMENT: u16 = 0x0902;
    pub const ERROR_ID: u16 = 0x0903;
    pub const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;
    pub const REQUESTED_SOP_CLASS_UID: u16 = 0x0003;
    pub const REQUESTED_SOP_INSTANCE_UID: u16 = 0x1001;
    pub const EVENT_TYPE_ID: u16 = 0x1002;
    pub const ACTION_TYPE_ID: u16 = 0x1008;
    pub const MOVE_DESTINATION: u16 = 0x0600;
    pub const REMAINING_SUB_OPERATIONS: u16 = 0x1020;
    pub const COMPLETED_SUB_OPERATIONS: u16 = 0x1021;
    pub const FAILED_SUB_OPERATIONS: u16 = 0x1022;
    pub const WARNING_SUB_OPERATIONS: u16 = 0x1023;
    pub const MOVE_ORIGINATOR_AE_TITLE: u16 = 0x1030;
    pub const MOVE_ORIGINATOR_MESSAGE_ID: u16 = 0x1031;
}

/// Command Data Set Type value meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    #[error("command element (0000,{0:04X}) is not in group 0000")]
    WrongGroup(u16),
    #[error("command set lacks (0000,{0:04X})")]
    Missing(u16),
    #[error("command element (0000,{0:04X}) has a malformed value")]
    BadValue(u16),
}

/// A decoded command set: element number -> raw value bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSet {
    elements: BTreeMap<u16, Vec<u8>>,
}

impl CommandSet {
    pub fn decode(bytes: &[u8]) -> Result<CommandSet, CommandError> {
        let mut elements = BTreeMap::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let header = bytes.get(pos..pos + 8).ok_or(CommandError::Truncated(pos))?;
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if group != 0x0000 {
                return Err(CommandError::WrongGroup(element));
            }
            let value = bytes.get(pos + 8..pos + 8 + len).ok_or(CommandError::Truncated(pos))?;
            elements.insert(element, value.to_vec());
            pos += 8 + len;
        }
        Ok(CommandSet { elements })
    }

    /// Encode with a correct (0000,0000) Command Group Length.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        for (&element, value) in self.elements.iter().filter(|(&e, _)| e != tag::GROUP_LENGTH) {
            body.extend_from_slice(&0u16.to_le_bytes());
            body.extend_from_slice(&element.to_le_bytes());
            body.extend_from_slice(&(value.len() as u32).to_le_bytes());
            body.extend_from_slice(value);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn u16(&self, element: u16) -> Result<u16, CommandError> {
        let v = self.elements.get(&element).ok_or(CommandError::Missing(element))?;
        match v.as_slice() {
            [a, b] => Ok(u16::from_le_bytes([*a, *b])),
            _ => Err(CommandError::BadValue(element)),
        }
    }

    /// A string value with trailing NUL/space padding removed.
    pub fn string(&self, element: u16) -> Result<String, CommandError> {
        let v = self.elements.get(&element).ok_or(CommandError::Missing(element))?;
        let s = std::str::from_utf8(v).map_err(|_| CommandError::BadValue(element))?;
        Ok(s.trim_end_matches(['\0', ' ']).trim_start().to_string())
    }

    pub fn has(&self, element: u16) -> bool {
        self.elements.contains_key(&element)
    }

    pub fn set_u16(&mut self, element: u16, value: u16) -> &mut Self {
        self.elements.insert(element, value.to_le_bytes().to_vec());
        self
    }

    /// Set a UI value (padded with NUL to even length).
    pub fn set_uid(&mut self, element: u16, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        self.elements.insert(element, v);
        self
    }

    /// Set a text value (padded with a space to even length), truncated to `max` characters.
    pub fn set_text(&mut self, element: u16, value: &str, max: usize) -> &mut Self {
        let mut v: Vec<u8> = value.bytes().filter(|b| (0x20..0x7f).contains(b)).take(max).collect();
        if v.len() % 2 == 1 {
            v.push(b' ');
        }
        self.elements.insert(element, v);
        self
    }

    pub fn command_field(&self) -> Result<u16, CommandError> {
        self.u16(tag::COMMAND_FIELD)
    }

    pub fn message_id(&self) -> Result<u16, CommandError> {
        self.u16(tag::MESSAGE_ID)
    }

    pub fn has_data_set(&self) -> Result<bool, CommandError> {
        Ok(self.u16(tag::COMMAND_DATA_SET_TYPE)? != NO_DATA_SET)
    }

    pub fn status(&self) -> Result<Status, CommandError> {
        self.u16(tag::STATUS).map(Status)
    }

    pub fn set_status(&mut self, status: Status) -> &mut Self {
        self.set_u16(tag::STATUS, status.0)
    }
}

/// A C-STORE-RQ (medium priority) announcing a data set.
pub fn store_rq(sop_class: &str, sop_instance: &str, message_id: u16) -> CommandSet {
    let mut rq = CommandSet::default();
    rq.set_uid(tag::AFFECTED_SOP_CLASS_UID, sop_class)
        .set_u16(tag::COMMAND_FIELD, field::C_STORE_RQ)
        .set_u16(tag::MESSAGE_ID, message_id)
        .set_u16(tag::PRIORITY, 0)
        .set_u16(tag::COMMAND_DATA_SET_TYPE, 0x0000)
        .set_uid(tag::AFFECTED_SOP_INSTANCE_UID, sop_instance);
    rq
}

/// Build a response command set for `request` with the given command field and status.
pub fn response(request: &CommandSet, response_field: u16, status: Status, sop_class: &str) -> CommandSet {
    let mut rsp = CommandSet::default();
    rsp.set_uid(tag::AFFECTED_SOP_CLASS_UID, sop_class)
        .set_u16(tag::COMMAND_FIELD, response_field)
        .set_u16(tag::MESSAGE_ID_BEING_RESPONDED_TO, request.message_id().unwrap_or(0))
        .set_u16(tag::COMMAND_DATA_SET_TYPE, NO_DATA_SET)
        .set_u16(tag::STATUS, status.0);
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo request as DCMTK's echoscu sends it (message ID 7).
    fn echo_rq_bytes() -> Vec<u8> {
        let mut c = CommandSet::default();
        c.set_uid(tag::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.1.1")
            .set_u16(tag::COMMAND_FIELD, field::C_ECHO_RQ)
            .set_u16(tag::MESSAGE_ID, 7)
            .set_u16(tag::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        c.encode()
    }

    #[test]
    fn round_trip_and_group_length() {
        let bytes = echo_rq_bytes();
        let c = CommandSet::decode(&bytes).unwrap();
        assert_eq!(c.command_field(), Ok(field::C_ECHO_RQ));
        assert_eq!(c.message_id(), Ok(7));
        assert_eq!(c.has_data_set(), Ok(false));
        assert_eq!(c.string(tag::AFFECTED_SOP_CLASS_UID).unwrap(), "1.2.840.10008.1.1");
        let group_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(group_len, bytes.len() - 12);
    }

    #[test]
    fn response_answers_the_request_message_id() {
        let rq = CommandSet::decode(&echo_rq_bytes()).unwrap();
        let rsp = CommandSet::decode(&response(&rq, field::C_ECHO_RSP, Status::SUCCESS, "1.2.840.10008.1.1").encode()).unwrap();
        assert_eq!(rsp.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO), Ok(7));
        assert_eq!(rsp.u16(tag::STATUS), Ok(0));
        assert_eq!(rsp.command_field(), Ok(field::C_ECHO_RSP));
        assert!(!rsp.has(tag::MESSAGE_ID));
    }

    #[test]
    fn malformed_command_sets_are_errors_not_panics() {
        let good = echo_rq_bytes();
        for cut in 1..good.len() {
            let _ = CommandSet::decode(&good[..cut]); // must not panic
        }
        assert_eq!(CommandSet::decode(&good[..5]), Err(CommandError::Truncated(0)));
        let mut wrong_group = good.clone();
        wrong_group[0] = 8;
        assert!(matches!(CommandSet::decode(&wrong_group), Err(CommandError::WrongGroup(_))));
        let c = CommandSet::decode(&good).unwrap();
        assert_eq!(c.u16(tag::STATUS), Err(CommandError::Missing(tag::STATUS)));
        // Pseudo-random bytes (xorshift, so failures reproduce): errors, never panics.
        let mut x = 88172645463325252u64;
        for len in 0..3000usize {
            let bytes: Vec<u8> = (0..len % 600)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = CommandSet::decode(&bytes);
        }
    }

    #[test]
    fn text_is_padded_and_bounded() {
        let mut c = CommandSet::default();
        c.set_text(tag::ERROR_COMMENT, "abc", 64);
        c.set_uid(tag::AFFECTED_SOP_INSTANCE_UID, "1.2.3");
        let d = CommandSet::decode(&c.encode()).unwrap();
        assert_eq!(d.string(tag::ERROR_COMMENT).unwrap(), "abc");
        assert_eq!(d.string(tag::AFFECTED_SOP_INSTANCE_UID).unwrap(), "1.2.3");
        c.set_text(tag::ERROR_COMMENT, &"x".repeat(100), 64);
        assert_eq!(CommandSet::decode(&c.encode()).unwrap().string(tag::ERROR_COMMENT).unwrap().len(), 64);
    }
}
