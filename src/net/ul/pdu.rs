//! PDU framing over a byte stream (PS3.8 section 9.3).
//!
//! Owns: reading PDU headers, decoding control PDUs with dicom-ul's codec, writing PDUs, and
//! splitting outgoing DIMSE messages into P-DATA-TF PDUs within the peer's maximum length.
//! P-DATA-TF bodies are *not* read here: the association loop streams their PDV items so a large
//! data set never sits in memory. Must not: interpret DIMSE or make policy decisions.

use dicom_ul::pdu::{read_pdu, write_pdu, Pdu, MAXIMUM_PDU_SIZE};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const TYPE_ASSOCIATE_RQ: u8 = 0x01;
pub const TYPE_P_DATA: u8 = 0x04;
pub const TYPE_RELEASE_RQ: u8 = 0x05;
pub const TYPE_RELEASE_RP: u8 = 0x06;
pub const TYPE_ABORT: u8 = 0x07;

/// Largest control PDU (A-ASSOCIATE-RQ, release, abort) we read into memory.
pub const MAX_CONTROL_PDU: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("connection closed by peer")]
    Closed,
    #[error("reading PDU: {0}")]
    Read(std::io::Error),
    #[error("PDU of type {pdu_type:#04x} is {length} bytes, more than the {limit} allowed")]
    TooLarge { pdu_type: u8, length: u32, limit: u32 },
    #[error("malformed PDU: {0}")]
    Malformed(String),
}

impl From<std::io::Error> for PduError {
    fn from(e: std::io::Error) -> Self {
        PduError::Read(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduHeader {
    pub pdu_type: u8,
    pub length: u32,
}

/// Read the 6-byte PDU header. `Ok(None)` is a clean close before any byte of a new PDU.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<PduHeader>, PduError> {
    let mut b = [0u8; 6];
    if r.read(&mut b[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut b[1..]).await.map_err(eof_is_closed)?;
    Ok(Some(PduHeader { pdu_type: b[0], length: u32::from_be_bytes([b[2], b[3], b[4], b[5]]) }))
}

/// Read the body of a control PDU whose header was just read and decode it.
pub async fn read_control_pdu<R: AsyncRead + Unpin>(r: &mut R, header: PduHeader) -> Result<Pdu, PduError> {
    if header.length > MAX_CONTROL_PDU {
        return Err(PduError::TooLarge { pdu_type: header.pdu_type, length: header.length, limit: MAX_CONTROL_PDU });
    }
    let mut buf = Vec::with_capacity(6 + header.length as usize);
    buf.extend_from_slice(&[header.pdu_type, 0]);
    buf.extend_from_slice(&header.length.to_be_bytes());
    buf.resize(6 + header.length as usize, 0);
    r.read_exact(&mut buf[6..]).await.map_err(eof_is_closed)?;
    match read_pdu(&buf[..], MAXIMUM_PDU_SIZE, false) {
        Ok(Some(pdu)) => Ok(pdu),
        Ok(None) => Err(PduError::Malformed("truncated PDU".into())),
        Err(e) => Err(PduError::Malformed(e.to_string())),
    }
}

/// Encode one PDU.
pub fn encode(pdu: &Pdu) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec fails only on values the PDU format cannot carry, which we never build.
    write_pdu(&mut out, pdu).expect("PDU built by this node is encodable");
    out
}

/// Encode a whole DIMSE message part (command or data set) as P-DATA-TF PDUs, each within
/// `peer_max_pdu` (the peer's Maximum Length; 0 means unlimited).
pub fn encode_pdata(pc_id: u8, is_command: bool, bytes: &[u8], peer_max_pdu: u32) -> Vec<u8> {
    let chunk = max_fragment(peer_max_pdu);
    let pieces: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(chunk).collect() };
    let last_index = pieces.len() - 1;
    let mut out = Vec::with_capacity(bytes.len() + 12 * pieces.len());
    for (i, piece) in pieces.into_iter().enumerate() {
        out.extend_from_slice(&encode_pdv(pc_id, is_command, i == last_index, piece));
    }
    out
}

/// One P-DATA-TF PDU holding one PDV item.
pub fn encode_pdv(pc_id: u8, is_command: bool, is_last: bool, bytes: &[u8]) -> Vec<u8> {
    let item_len = bytes.len() as u32 + 2;
    let mut out = Vec::with_capacity(bytes.len() + 12);
    out.extend_from_slice(&[TYPE_P_DATA, 0]);
    out.extend_from_slice(&(item_len + 4).to_be_bytes());
    out.extend_from_slice(&item_len.to_be_bytes());
    out.push(pc_id);
    out.push(u8::from(is_command) | if is_last { 0x02 } else { 0x00 });
    out.extend_from_slice(bytes);
    out
}

/// The most PDV data bytes one PDU may carry under the peer's Maximum Length (0 = unlimited,
/// sent in 1 MiB PDUs). Even, so that only a message's last fragment can have odd length.
pub fn max_fragment(peer_max_pdu: u32) -> usize {
    if peer_max_pdu == 0 {
        1 << 20
    } else {
        ((peer_max_pdu.max(64) - 6) & !1) as usize
    }
}

/// The Maximum Length sub-item of an association's user information (0 = not given).
pub fn max_length(user_variables: &[dicom_ul::pdu::UserVariableItem]) -> u32 {
    user_variables
        .iter()
        .find_map(|v| match v {
            dicom_ul::pdu::UserVariableItem::MaxLength(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0)
}

fn eof_is_closed(e: std::io::Error) -> PduError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        PduError::Closed
    } else {
        PduError::Read(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdata_fragments_respect_peer_limit() {
        let data = vec![7u8; 10_000];
        let out = encode_pdata(3, false, &data, 4096);
        // Walk the PDUs back and check each one's size and the reassembled payload.
        let (mut pos, mut payload, mut lasts) = (0usize, Vec::new(), 0);
        while pos < out.len() {
            assert_eq!(out[pos], TYPE_P_DATA);
            let len = u32::from_be_bytes(out[pos + 2..pos + 6].try_into().unwrap());
            assert!(len <= 4096, "PDU of {len} bytes exceeds the peer's limit");
            let item_len = u32::from_be_bytes(out[pos + 6..pos + 10].try_into().unwrap()) as usize;
            assert_eq!(out[pos + 10], 3);
            if out[pos + 11] & 0x02 != 0 {
                lasts += 1;
            }
            assert_eq!(out[pos + 11] & 0x01, 0);
            payload.extend_from_slice(&out[pos + 12..pos + 10 + item_len]);
            pos += 6 + len as usize;
        }
        assert_eq!(payload, data);
        assert_eq!(lasts, 1);
    }

    #[test]
    fn empty_command_is_one_last_fragment() {
        let out = encode_pdata(1, true, &[], 0);
        assert_eq!(out.len(), 12);
        assert_eq!(out[11], 0x03);
    }
}
