//! The DIMSE message layer (PS3.7 section 9, PS3.8 section 9.3.5), one implementation for the
//! requesting and the accepting side: a message is a command set, then optionally a data set,
//! each sent as PDV fragments in P-DATA-TF PDUs.
//!
//! `MessageReader` reassembles command sets (bounded) and hands data set fragments out as they
//! arrive, a chunk at a time, so a data set is never held whole; it enforces the PS3.8 rules of
//! fragment order. `MessageWriter` splits messages into PDUs within the peer's Maximum Length,
//! and streams a data set from any reader. Both are generic over the byte stream.

use std::time::Duration;

use dicom_ul::pdu::{AbortRQServiceProviderReason, AbortRQSource, Pdu};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::command::CommandSet;
use crate::net::ul::pdu::{self, PduError, TYPE_ABORT, TYPE_P_DATA, TYPE_RELEASE_RP, TYPE_RELEASE_RQ};

/// A command set larger than this is not a command set (ours are a few hundred bytes).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Pdu(#[from] PduError),
    #[error("no PDU within the idle timeout of {0:?}")]
    Idle(Duration),
    /// The peer broke the PDV rules (PS3.8 9.3.5): answered with A-ABORT (invalid PDU parameter).
    #[error("malformed P-DATA-TF: {0}")]
    Malformed(String),
    /// Fragments out of order (PS3.7 9.1): answered with A-ABORT (invalid PDU parameter).
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{side}command set larger than {limit} bytes")]
    CommandTooLarge { side: &'static str, limit: usize },
    #[error("unexpected PDU type {0:#04x} on an established association")]
    UnexpectedPdu(u8),
}

impl MessageError {
    /// The A-ABORT a provider sends for this error, if one is due (PS3.8 9.3.8).
    pub fn abort_reason(&self) -> Option<AbortRQServiceProviderReason> {
        match self {
            MessageError::Malformed(_) | MessageError::Protocol(_) | MessageError::CommandTooLarge { .. } => {
                Some(AbortRQServiceProviderReason::InvalidPduParameter)
            }
            MessageError::Pdu(PduError::TooLarge { .. }) => Some(AbortRQServiceProviderReason::InvalidPduParameter),
            MessageError::Idle(_) => Some(AbortRQServiceProviderReason::ReasonNotSpecified),
            MessageError::UnexpectedPdu(_) => Some(AbortRQServiceProviderReason::UnexpectedPdu),
            MessageError::Pdu(_) => None,
        }
    }
}

/// What arrived. Its `Debug` names the event and sizes, never values (a data set may
/// identify a patient).
pub enum Event<'a> {
    /// A complete command set, received on context `pc`. If it announces a data set, `Data`
    /// events follow until one with `last`.
    Command {
        pc: u8,
        command: CommandSet,
    },
    /// A piece of the data set of the message in progress.
    Data {
        pc: u8,
        bytes: &'a [u8],
        last: bool,
    },
    ReleaseRq,
    ReleaseRp,
    /// The peer aborted (A-ABORT).
    Abort,
}

impl std::fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Command { pc, command } => write!(f, "a command (field {:#06X}) on context {pc}", command.command_field().unwrap_or(0)),
            Event::Data { pc, bytes, last } => write!(f, "{} data set bytes on context {pc}{}", bytes.len(), if *last { " (last)" } else { "" }),
            Event::ReleaseRq => f.write_str("A-RELEASE-RQ"),
            Event::ReleaseRp => f.write_str("A-RELEASE-RP"),
            Event::Abort => f.write_str("A-ABORT"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Between messages.
    Idle,
    /// Reading the command set's fragments.
    Command { pc: u8, bytes: Vec<u8> },
    /// The data set of the message whose command arrived on `pc`.
    Data { pc: u8 },
}

/// The receiving half of an association, after negotiation.
pub struct MessageReader<R> {
    rd: R,
    idle: Duration,
    /// Our Maximum Length: a P-DATA-TF PDU longer than this is refused.
    max_pdu: u32,
    /// Prefix of the "command set too large" error ("response " on the requesting side).
    side: &'static str,
    /// The requesting side's reading of responses: a data set a response announces but the
    /// caller does not want may be cut short by the next command, a data fragment outside any
    /// message is dropped, and a missing or malformed Command Data Set Type means none (as
    /// peers in the field send it; nothing we act on hangs on it).
    lenient: bool,
    /// Body bytes not yet read of the current P-DATA-TF PDU.
    pdu_left: u64,
    /// The PDV item being read: context ID, message control header, value bytes not yet read.
    item: Option<(u8, u8, usize)>,
    phase: Phase,
    chunk: Vec<u8>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// `chunk`: the most data set bytes one `Data` event carries.
    pub fn new(rd: R, idle: Duration, max_pdu: u32, chunk: usize, side: &'static str) -> Self {
        MessageReader { rd, idle, max_pdu, side, lenient: false, pdu_left: 0, item: None, phase: Phase::Idle, chunk: vec![0; chunk.max(1)] }
    }

    /// The lenient reading the requesting side uses for responses (see the field).
    pub fn lenient(mut self) -> Self {
        self.lenient = true;
        self
    }

    /// No message is in progress (its command and any data set were read whole).
    pub fn between_messages(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Whether the peer sent something not read yet (a C-CANCEL while we answer its request):
    /// the rest of a PDU, or bytes buffered or waiting on the stream (an end of stream too, so
    /// that the next read reports it). Never waits.
    pub async fn input_ready(&mut self) -> bool
    where
        R: tokio::io::AsyncBufRead,
    {
        use std::task::Poll;
        if self.pdu_left > 0 || self.item.is_some() {
            return true;
        }
        let rd = &mut self.rd;
        std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *rd).poll_fill_buf(cx).is_ready())).await
    }

    /// The next event. A data set's bytes are handed out as they arrive, never held whole.
    pub async fn next(&mut self) -> Result<Event<'_>, MessageError> {
        loop {
            if let Some((pc, control, left)) = self.item {
                let last_fragment = control & 0x02 != 0;
                if control & 0x01 == 0 {
                    let n = left.min(self.chunk.len());
                    read_exact(&mut self.rd, &mut self.chunk[..n], self.idle).await?;
                    let left = left - n;
                    self.item = (left > 0).then_some((pc, control, left));
                    let last = left == 0 && last_fragment;
                    if last {
                        self.phase = Phase::Idle;
                    }
                    if n == 0 && !last {
                        continue; // an empty fragment that ends nothing
                    }
                    return Ok(Event::Data { pc, bytes: &self.chunk[..n], last });
                }
                let Phase::Command { bytes, .. } = &mut self.phase else {
                    return Err(MessageError::Protocol("command fragment outside a command".into()));
                };
                let start = bytes.len();
                bytes.resize(start + left, 0);
                read_exact(&mut self.rd, &mut bytes[start..], self.idle).await?;
                self.item = None;
                if last_fragment {
                    let Phase::Command { pc, bytes } = std::mem::replace(&mut self.phase, Phase::Idle) else {
                        return Err(MessageError::Protocol("command fragment outside a command".into()));
                    };
                    let bad = |e| MessageError::Protocol(format!("command set: {e}"));
                    let command = CommandSet::decode(&bytes).map_err(bad)?;
                    let has_data = match command.has_data_set() {
                        Ok(has) => has,
                        Err(_) if self.lenient => false,
                        Err(e) => return Err(bad(e)),
                    };
                    if has_data {
                        self.phase = Phase::Data { pc };
                    }
                    return Ok(Event::Command { pc, command });
                }
                continue;
            }
            if self.pdu_left > 0 {
                self.next_item().await?;
                continue;
            }
            let header = match tokio::time::timeout(self.idle, pdu::read_header(&mut self.rd)).await {
                Err(_) => return Err(MessageError::Idle(self.idle)),
                Ok(Ok(Some(h))) => h,
                Ok(Ok(None)) => return Err(MessageError::Pdu(PduError::Closed)),
                Ok(Err(e)) => return Err(e.into()),
            };
            match header.pdu_type {
                TYPE_P_DATA => {
                    if header.length > self.max_pdu {
                        return Err(PduError::TooLarge { pdu_type: TYPE_P_DATA, length: header.length, limit: self.max_pdu }.into());
                    }
                    self.pdu_left = u64::from(header.length);
                }
                TYPE_RELEASE_RQ | TYPE_RELEASE_RP | TYPE_ABORT => {
                    let pdu = tokio::time::timeout(self.idle, pdu::read_control_pdu(&mut self.rd, header)).await.map_err(|_| MessageError::Idle(self.idle));
                    // A peer that aborts may close before its A-ABORT is whole: it aborted all the same.
                    if header.pdu_type == TYPE_ABORT {
                        return Ok(Event::Abort);
                    }
                    return match pdu?? {
                        Pdu::ReleaseRQ => Ok(Event::ReleaseRq),
                        Pdu::ReleaseRP => Ok(Event::ReleaseRp),
                        other => Err(MessageError::Protocol(format!("unexpected {}", other.short_description()))),
                    };
                }
                other => return Err(MessageError::UnexpectedPdu(other)),
            }
        }
    }

    /// Read the next PDV item header of the current P-DATA-TF PDU and check it against the
    /// message in progress (PS3.8 9.3.5.1, PS3.7 9.1).
    async fn next_item(&mut self) -> Result<(), MessageError> {
        if self.pdu_left < 6 {
            return Err(MessageError::Malformed(format!("{} bytes left for a PDV item header", self.pdu_left)));
        }
        let mut h = [0u8; 6];
        read_exact(&mut self.rd, &mut h, self.idle).await?;
        let item_len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if item_len < 2 || u64::from(item_len) + 4 > self.pdu_left {
            return Err(MessageError::Malformed(format!("PDV item length {item_len} does not fit its PDU")));
        }
        self.pdu_left -= 4 + u64::from(item_len);
        let (pc, control) = (h[4], h[5]);
        let len = (item_len - 2) as usize;
        if control & 0x01 != 0 {
            if self.phase == Phase::Idle || (self.lenient && matches!(self.phase, Phase::Data { .. })) {
                self.phase = Phase::Command { pc, bytes: Vec::new() };
            }
            let Phase::Command { pc: current, bytes } = &self.phase else {
                return Err(MessageError::Protocol("command fragment while a data set was expected".into()));
            };
            if *current != pc {
                return Err(MessageError::Protocol("command fragments on two presentation contexts".into()));
            }
            if bytes.len() + len > MAX_COMMAND_BYTES {
                return Err(MessageError::CommandTooLarge { side: self.side, limit: MAX_COMMAND_BYTES });
            }
        } else if self.lenient && self.phase == Phase::Idle {
            // A data fragment no response announced: read past it.
            self.item = None;
            let mut left = len;
            while left > 0 {
                let n = left.min(self.chunk.len());
                read_exact(&mut self.rd, &mut self.chunk[..n], self.idle).await?;
                left -= n;
            }
            return Ok(());
        } else {
            let Phase::Data { pc: current } = &self.phase else {
                return Err(MessageError::Protocol("data set fragment without a command".into()));
            };
            if *current != pc {
                return Err(MessageError::Protocol("data set fragment on another presentation context than its command".into()));
            }
        }
        self.item = Some((pc, control, len));
        Ok(())
    }
}

async fn read_exact<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut [u8], idle: Duration) -> Result<(), MessageError> {
    match tokio::time::timeout(idle, rd.read_exact(buf)).await {
        Err(_) => Err(MessageError::Idle(idle)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(PduError::Closed.into()),
        Ok(Err(e)) => Err(PduError::Read(e).into()),
    }
}

/// Why streaming a data set stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("reading the data set to send: {0}")]
    Source(std::io::Error),
    #[error("sending: {0}")]
    Write(std::io::Error),
}

/// The sending half of an association.
pub struct MessageWriter<W> {
    wr: W,
    /// The peer's Maximum Length (0 = unlimited): the bound for every PDU we send.
    peer_max_pdu: u32,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    pub fn new(wr: W) -> Self {
        MessageWriter { wr, peer_max_pdu: 0 }
    }

    pub fn set_peer_max_pdu(&mut self, peer_max_pdu: u32) {
        self.peer_max_pdu = peer_max_pdu;
    }

    // Every write of a whole PDU or message ends with a flush: a no-op on TCP, but a TLS
    // session may keep what it encrypted buffered until flushed, and the peer then waits for a
    // response that never leaves.

    /// A control PDU (A-ASSOCIATE-*, A-RELEASE-*).
    pub async fn pdu(&mut self, pdu: &Pdu) -> std::io::Result<()> {
        self.wr.write_all(&pdu::encode(pdu)).await?;
        self.wr.flush().await
    }

    pub async fn command(&mut self, pc: u8, command: &CommandSet) -> std::io::Result<()> {
        self.wr.write_all(&pdu::encode_pdata(pc, true, &command.encode(), self.peer_max_pdu)).await?;
        self.wr.flush().await
    }

    /// A data set held in memory (a few KiB: identifiers, commitment requests).
    pub async fn data(&mut self, pc: u8, bytes: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(&pdu::encode_pdata(pc, false, bytes, self.peer_max_pdu)).await?;
        self.wr.flush().await
    }

    /// `len` data set bytes read from `source`, a PDU's worth at a time (never the whole data
    /// set). `pad_odd`: PS3.5 A.5, a deflated bit stream of odd length is sent padded with one
    /// NUL byte (some peers, DCMTK among them, refuse odd fragments).
    pub async fn data_from<S: AsyncRead + Unpin>(&mut self, pc: u8, mut source: S, mut left: u64, pad_odd: bool) -> Result<(), SendError> {
        let chunk = pdu::max_fragment(self.peer_max_pdu);
        let mut buf = vec![0u8; chunk];
        let pad = pad_odd && left % 2 == 1;
        while left > 0 {
            let n = (left as usize).min(chunk);
            source.read_exact(&mut buf[..n]).await.map_err(SendError::Source)?;
            left -= n as u64;
            let n = if left == 0 && pad && n < chunk {
                buf[n] = 0;
                n + 1
            } else {
                n
            };
            self.wr.write_all(&pdu::encode_pdv(pc, false, left == 0, &buf[..n])).await.map_err(SendError::Write)?;
        }
        self.wr.flush().await.map_err(SendError::Write)
    }

    /// A-ABORT, then close; errors are ignored (the association is over either way).
    pub async fn abort(&mut self, source: AbortRQSource) {
        let _ = self.wr.write_all(&pdu::encode(&Pdu::AbortRQ { source })).await;
        let _ = self.wr.shutdown().await;
    }

    pub async fn shutdown(&mut self) {
        let _ = self.wr.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(5);

    fn reader(bytes: Vec<u8>) -> MessageReader<std::io::Cursor<Vec<u8>>> {
        MessageReader::new(std::io::Cursor::new(bytes), IDLE, 1 << 20, 4, "")
    }

    fn pdata(items: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = items.concat();
        [vec![TYPE_P_DATA, 0], (body.len() as u32).to_be_bytes().to_vec(), body].concat()
    }

    fn item(len: u32, rest: &[u8]) -> Vec<u8> {
        [len.to_be_bytes().as_slice(), rest].concat()
    }

    fn echo_command(with_data: bool) -> Vec<u8> {
        use super::super::command::{field, tag, NO_DATA_SET};
        let mut c = CommandSet::default();
        c.set_u16(tag::COMMAND_FIELD, field::C_STORE_RQ)
            .set_u16(tag::MESSAGE_ID, 3)
            .set_u16(tag::COMMAND_DATA_SET_TYPE, if with_data { 0 } else { NO_DATA_SET });
        c.encode()
    }

    /// A PDV item shorter than its header, longer than its PDU, or cut off, is an error, never
    /// a panic (a PACS that sent one used to stop the outbox worker).
    #[tokio::test]
    async fn malformed_pdv_items_are_errors() {
        for bad in [item(0, &[1, 3]), item(1, &[1, 3]), item(9, &[1, 3, 0, 0]), vec![0, 0, 0]] {
            let e = reader(pdata(&[bad])).next().await.unwrap_err();
            assert!(matches!(e, MessageError::Malformed(_) | MessageError::Pdu(PduError::Closed)), "{e}");
        }
        // Every prefix and every declared length of a small body: no panic.
        for len in 0..20u32 {
            let body = pdata(&[item(len, &[1, 3, 0, 0, 0, 0])]);
            for cut in 0..body.len() {
                let mut r = reader(body[..cut.max(1)].to_vec());
                for _ in 0..4 {
                    if r.next().await.is_err() {
                        break;
                    }
                }
            }
        }
    }

    /// Commands reassemble across PDUs; a data set comes out in chunks, the last one flagged;
    /// fragments out of order are protocol errors.
    #[tokio::test]
    async fn messages_reassemble_and_fragments_keep_their_order() {
        let cmd = echo_command(true);
        let (a, b) = cmd.split_at(5);
        let bytes = [
            pdata(&[item(a.len() as u32 + 2, &[[1u8, 0x01].as_slice(), a].concat())]),
            pdata(&[item(b.len() as u32 + 2, &[[1u8, 0x03].as_slice(), b].concat()), item(8, &[1, 0x00, 1, 2, 3, 4, 5, 6])]),
            pdata(&[item(3, &[1, 0x02, 7])]),
        ]
        .concat();
        let mut r = reader(bytes);
        assert!(matches!(r.next().await.unwrap(), Event::Command { pc: 1, .. }));
        assert!(!r.between_messages());
        let mut data = Vec::new();
        loop {
            match r.next().await.unwrap() {
                Event::Data { pc: 1, bytes, last } => {
                    assert!(bytes.len() <= 4);
                    data.extend_from_slice(bytes);
                    if last {
                        break;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(data, [1, 2, 3, 4, 5, 6, 7]);
        assert!(r.between_messages());

        let data_first = pdata(&[item(3, &[1, 0x02, 7])]);
        assert!(matches!(reader(data_first).next().await, Err(MessageError::Protocol(_))));
        let cmd = echo_command(true);
        let two_contexts = pdata(&[item(cmd.len() as u32 + 2, &[[1u8, 0x03].as_slice(), &cmd].concat()), item(3, &[3, 0x02, 7])]);
        let mut r = reader(two_contexts);
        r.next().await.unwrap();
        assert!(matches!(r.next().await, Err(MessageError::Protocol(_))));
    }

    /// The requesting side reads a response whose data set type is missing, or that announces
    /// a data set it does not send, as the old client did: the next command ends it.
    #[tokio::test]
    async fn responses_are_read_leniently_on_the_requesting_side() {
        use super::super::command::{field, tag};
        let rsp = |with_type: Option<u16>| {
            let mut c = CommandSet::default();
            c.set_u16(tag::COMMAND_FIELD, field::C_STORE_RSP).set_u16(tag::MESSAGE_ID_BEING_RESPONDED_TO, 1).set_u16(tag::STATUS, 0);
            if let Some(t) = with_type {
                c.set_u16(tag::COMMAND_DATA_SET_TYPE, t);
            }
            let b = c.encode();
            pdata(&[item(b.len() as u32 + 2, &[[1u8, 0x03].as_slice(), &b].concat())])
        };
        let stray = pdata(&[item(4, &[1, 0x02, 9, 9])]);
        let bytes = [rsp(None), stray, rsp(Some(0x0000)), rsp(Some(0x0101))].concat();
        let mut r = MessageReader::new(std::io::Cursor::new(bytes.clone()), IDLE, 1 << 20, 64, "response ").lenient();
        for _ in 0..3 {
            assert!(matches!(r.next().await.unwrap(), Event::Command { .. }));
        }
        // Strict (the accepting side): a missing data set type is a protocol error.
        assert!(matches!(reader(bytes).next().await, Err(MessageError::Protocol(_))));
    }

    /// Pseudo-random bytes after a valid P-DATA header, on both sides' readings: events or
    /// errors, never a panic, and the reader always ends (the input is finite).
    #[tokio::test]
    async fn arbitrary_pdata_never_panics() {
        let mut x = 0x2545F4914F6CDD1Du64;
        for case in 0..2000usize {
            let body: Vec<u8> = (0..case % 300)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Keep some PDV headers plausible: small lengths, context 1, flags 0..3.
                    match i % 6 {
                        0..=2 => 0,
                        3 => (x % 40) as u8,
                        4 => 1,
                        _ => (x % 4) as u8,
                    }
                })
                .collect();
            let bytes = pdata(&[body]);
            for lenient in [false, true] {
                let mut r = MessageReader::new(std::io::Cursor::new(bytes.clone()), IDLE, 1 << 20, 7, "");
                if lenient {
                    r = r.lenient();
                }
                for _ in 0..64 {
                    if r.next().await.is_err() {
                        break;
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn command_sets_are_bounded() {
        let big = vec![0u8; MAX_COMMAND_BYTES];
        let bytes = [
            pdata(&[item(1000 + 2, &[[1u8, 0x01].as_slice(), &big[..1000]].concat())]),
            pdata(&[item(big.len() as u32 + 2, &[[1u8, 0x03].as_slice(), &big].concat())]),
        ]
        .concat();
        let mut r = MessageReader::new(std::io::Cursor::new(bytes), IDLE, 1 << 20, 4, "response ");
        let e = r.next().await.unwrap_err();
        assert_eq!(e.to_string(), "response command set larger than 65536 bytes");
    }

    /// What the writer sends, the reader reads back, within the peer's PDU limit.
    #[tokio::test]
    async fn the_writer_and_reader_agree() {
        let mut w = MessageWriter::new(Vec::new());
        w.set_peer_max_pdu(4096);
        let command = CommandSet::decode(&echo_command(true)).unwrap();
        w.command(5, &command).await.unwrap();
        let payload: Vec<u8> = (0..10_001u32).map(|i| i as u8).collect();
        w.data_from(5, &payload[..], payload.len() as u64, true).await.unwrap();
        let mut r = MessageReader::new(std::io::Cursor::new(w.wr), IDLE, 4096, 1000, "");
        assert!(matches!(r.next().await.unwrap(), Event::Command { pc: 5, command: c } if c == command));
        let mut got = Vec::new();
        while let Event::Data { bytes, last, .. } = r.next().await.unwrap() {
            got.extend_from_slice(bytes);
            if last {
                break;
            }
        }
        assert_eq!(got.len(), payload.len() + 1, "an odd deflated data set is padded");
        assert_eq!(&got[..payload.len()], &payload[..]);
    }
}
