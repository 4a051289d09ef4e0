//! A structural scan of a received data set: proves it parses, extracts the few top-level
//! attributes ingest needs, and does so in bounded memory whatever the instance size.
//!
//! Owns: walking elements, sequences, items and encapsulated fragments in any transfer syntax
//! the node accepts (explicit/implicit VR, little/big endian, deflated). Values are skipped, not
//! loaded, except the handful of short top-level strings listed in `HeaderFields`.
//! Must not: log values (they may identify a patient), or write anything.

use std::io::{self, BufRead, BufReader, Read};

use super::sop::TransferSyntax;

/// Nesting deeper than this is treated as corrupt input rather than recursed into.
const MAX_DEPTH: u32 = 64;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIMITATION: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: (u16, u16) = (0xFFFE, 0xE0DD);

/// The top-level attributes ingest reads. They identify instances, so never log them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderFields {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    pub modality: Option<String>,
    /// Offset (from the start of the data set) of the first top-level element of group 7FE0
    /// (pixel data and its offset tables): where de-identification splits header from pixels.
    pub pixel_group_at: Option<u64>,
    /// Offset of the first top-level element after group 7FE0 (padding, signatures, private
    /// groups): the end of what is kept. Offsets are meaningless for a deflated data set.
    pub trailing_from: Option<u64>,
}

impl HeaderFields {
    fn slot(&mut self, tag: (u16, u16)) -> Option<&mut Option<String>> {
        match tag {
            (0x0008, 0x0016) => Some(&mut self.sop_class_uid),
            (0x0008, 0x0018) => Some(&mut self.sop_instance_uid),
            (0x0008, 0x0060) => Some(&mut self.modality),
            (0x0020, 0x000D) => Some(&mut self.study_instance_uid),
            (0x0020, 0x000E) => Some(&mut self.series_instance_uid),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("data set ends inside an element at byte {offset}")]
    Truncated { offset: u64 },
    #[error("element ({group:04X},{element:04X}) at byte {offset}: {problem}")]
    Element { group: u16, element: u16, offset: u64, problem: &'static str },
    #[error("sequences nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("reading the data set: {0}")]
    Io(io::Error),
    #[error("the deflated data set inflates to more than {} MiB", .limit >> 20)]
    InflatesTooLarge { limit: u64 },
    /// Internal to `locate_pixel_group`: the walk stopped at the first group 7FE0 element.
    #[error("reached pixel data at byte {0}")]
    ReachedPixelGroup(u64),
}

/// The elements that make up the pixel group (PS3.3 C.7.6.3 and the retired coefficients): what
/// is carried over byte for byte after the de-identified header. Any other element, in group
/// 7FE0 or not, is not pixel data and never travels with it.
pub fn is_pixel_group_element(group: u16, element: u16) -> bool {
    group == 0x7FE0 && matches!(element, 0x0001 | 0x0002 | 0x0003 | 0x0008 | 0x0009 | 0x0010 | 0x0020 | 0x0030 | 0x0040)
}

/// The most a deflated data set may inflate to (it is then held in memory whole to be
/// de-identified): past this it is refused as out of resources, before it is held.
pub const MAX_INFLATED: u64 = 64 << 20;

/// Scan `dataset` (the bytes after the File Meta Information, `len` of them when known).
pub fn scan<R: Read>(dataset: R, len: Option<u64>, ts: &TransferSyntax) -> Result<HeaderFields, ScanError> {
    if ts.deflated {
        let inflated = flate2::read::DeflateDecoder::new(BufReader::with_capacity(64 * 1024, dataset));
        Walker::new(Capped::new(inflated, MAX_INFLATED), ts).run(None).map_err(Capped::<&[u8]>::explain)
    } else {
        Walker::new(dataset, ts).run(len)
    }
}

/// Inflate a deflated data set into memory, refusing past `MAX_INFLATED` bytes (a small
/// deflated stream can claim gigabytes).
pub fn inflate(deflated: &[u8]) -> Result<Vec<u8>, ScanError> {
    let mut out = Vec::new();
    let mut capped = Capped::new(flate2::read::DeflateDecoder::new(deflated), MAX_INFLATED);
    capped.read_to_end(&mut out).map_err(|e| Capped::<&[u8]>::explain(ScanError::Io(e)))?;
    Ok(out)
}

/// A reader that fails once more than `limit` bytes have come through it.
pub struct Capped<R> {
    inner: R,
    left: u64,
}

const CAP_REACHED: &str = "inflation limit reached";

impl<R: Read> Capped<R> {
    pub fn new(inner: R, limit: u64) -> Capped<R> {
        Capped { inner, left: limit }
    }

    fn explain(e: ScanError) -> ScanError {
        match e {
            ScanError::Io(io) if io.to_string() == CAP_REACHED => ScanError::InflatesTooLarge { limit: MAX_INFLATED },
            other => other,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more means the stream goes on past the limit.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(CAP_REACHED)),
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Follows the top-level elements of the pixel group (7FE0) as their bytes arrive, to find
/// where the group ends: what comes after it (trailing padding, signatures, private or
/// out-of-order elements) is removed by the profile, so its bytes are never written anywhere.
/// Values are skipped by their lengths; the whole data set is still scanned at the end.
#[derive(Debug)]
pub struct PixelGroupEnd {
    explicit: bool,
    big: bool,
    state: GroupState,
    header: [u8; 12],
    have: usize,
    /// Bytes of the group seen so far (from its first element).
    pub kept: u64,
    /// Set once a top-level element outside group 7FE0 has started.
    pub ended: bool,
}

#[derive(Debug, Clone, Copy)]
enum GroupState {
    /// Reading a top-level element header.
    Element,
    /// Reading a fragment item header of encapsulated pixel data.
    Fragment,
    /// Skipping a value, then reading the header given.
    Skip { left: u64, then_fragment: bool },
}

impl PixelGroupEnd {
    pub fn new(ts: &TransferSyntax) -> PixelGroupEnd {
        PixelGroupEnd { explicit: ts.explicit_vr, big: ts.big_endian, state: GroupState::Element, header: [0; 12], have: 0, kept: 0, ended: false }
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = [self.header[at], self.header[at + 1]];
        if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = [self.header[at], self.header[at + 1], self.header[at + 2], self.header[at + 3]];
        if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// The pixels are not kept after all (Burned In Annotation): nothing more comes through,
    /// and nothing counts as kept.
    pub fn discard_rest(&mut self) {
        self.ended = true;
        self.kept = 0;
    }

    /// Header bytes needed before the header can be read.
    fn need(&self, fragment: bool) -> usize {
        if fragment || !self.explicit {
            8
        } else if self.have < 6 {
            6
        } else if matches!(&self.header[4..6], b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UR" | b"UT" | b"UN" | b"SV" | b"UV") {
            12
        } else {
            8
        }
    }

    /// Feed the next bytes. Returns what belongs to the pixel group: first `release` (the start
    /// of a header held back from earlier calls until it was known to belong), then the
    /// prefix `bytes[..n]`. Nothing after the group is ever returned.
    pub fn feed(&mut self, bytes: &[u8]) -> (Vec<u8>, usize) {
        // Header bytes from earlier calls not let through yet: a top-level tag until it is known
        // to be of the group, a fragment item header until it is known to be one.
        let mut held = match self.state {
            GroupState::Element if self.have < 4 => self.have,
            GroupState::Fragment => self.have,
            _ => 0,
        };
        let mut release = Vec::new();
        let (mut at, mut kept_to) = (0usize, 0usize);
        // Where, in this call, the header being read began (0: in an earlier call).
        let mut header_from = 0usize;
        while at < bytes.len() && !self.ended {
            match self.state {
                GroupState::Skip { left, then_fragment } => {
                    let n = (bytes.len() - at).min(left.min(usize::MAX as u64) as usize);
                    at += n;
                    kept_to = at;
                    let left = left - n as u64;
                    self.state = match (left, then_fragment) {
                        (0, true) => GroupState::Fragment,
                        (0, false) => GroupState::Element,
                        (left, then_fragment) => GroupState::Skip { left, then_fragment },
                    };
                }
                GroupState::Element | GroupState::Fragment => {
                    let fragment = matches!(self.state, GroupState::Fragment);
                    let need = self.need(fragment);
                    if self.have < need {
                        let before = self.have;
                        if before == 0 {
                            header_from = at;
                        }
                        let n = (need - before).min(bytes.len() - at);
                        self.header[before..before + n].copy_from_slice(&bytes[at..at + n]);
                        self.have += n;
                        at += n;
                        if !fragment && before < 4 && self.have >= 4 {
                            if !is_pixel_group_element(self.u16_at(0), self.u16_at(2)) {
                                // A top-level element outside the group: the group ended before it.
                                self.ended = true;
                                break;
                            }
                            if held > 0 {
                                release.extend_from_slice(&self.header[..held]);
                                held = 0;
                            }
                        }
                        // A fragment item header, or a tag not yet known, is held back until
                        // the header is known to belong; the rest of an element header is kept.
                        if !fragment && self.have >= 4 {
                            kept_to = at;
                        }
                        if self.have < self.need(fragment) {
                            continue;
                        }
                    }
                    let need = self.need(fragment);
                    let len = if need == 12 {
                        self.u32_at(8)
                    } else if fragment || !self.explicit {
                        self.u32_at(4)
                    } else {
                        u32::from(self.u16_at(6))
                    };
                    let tag = (self.u16_at(0), self.u16_at(2));
                    // Inside encapsulated pixel data only items and the sequence delimiter may
                    // come; anything else (a missing delimiter, then a trailer) ends the group
                    // here, so that its bytes are not taken for a fragment and kept.
                    let malformed = if fragment {
                        (tag != ITEM && tag != SEQUENCE_DELIMITATION) || (tag == ITEM && len == UNDEFINED)
                    } else {
                        len == UNDEFINED && tag != PIXEL_DATA
                    };
                    if malformed {
                        self.ended = true;
                        // The header's bytes of this call were counted kept: take them back.
                        kept_to = kept_to.min(header_from);
                        break;
                    }
                    if fragment {
                        if held > 0 {
                            release.extend_from_slice(&self.header[..held]);
                            held = 0;
                        }
                        kept_to = at;
                    }
                    self.have = 0;
                    self.state = match (fragment, tag, len) {
                        (true, SEQUENCE_DELIMITATION, _) => GroupState::Element,
                        (_, _, 0) if fragment => GroupState::Fragment,
                        (_, _, 0) => GroupState::Element,
                        (true, _, len) => GroupState::Skip { left: u64::from(len), then_fragment: true },
                        (false, _, UNDEFINED) => GroupState::Fragment,
                        (false, _, len) => GroupState::Skip { left: u64::from(len), then_fragment: false },
                    };
                }
            }
        }
        self.kept += (release.len() + kept_to) as u64;
        (release, kept_to)
    }
}

/// The undefined-length UN elements of a complete header (explicit VR): their byte ranges, and
/// whether each is at top level. PS3.5 6.2.2 puts Implicit VR Little Endian items inside them,
/// which a parser reading the explicit syntax cannot follow; de-identification reads them apart.
pub fn undefined_un_elements(head: &[u8], ts: &TransferSyntax) -> Result<Vec<(u64, u64, bool)>, ScanError> {
    if !ts.explicit_vr || ts.deflated {
        return Ok(Vec::new());
    }
    let mut walker = Walker::new(head, ts);
    walker.stop_at_pixel_group = true;
    if walker.at_eof()? {
        return Ok(Vec::new());
    }
    match walker.walk_items_of_dataset(Some(head.len() as u64), 0, true) {
        Ok(()) | Err(ScanError::ReachedPixelGroup(_)) => Ok(walker.undefined_un),
        Err(e) => Err(e),
    }
}

/// Where the first top-level group 7FE0 element starts in the first bytes of a data set that is
/// still arriving: `Ok(None)` when `head` ends before it (send more), an error when `head` is
/// already malformed. Not for deflated data sets.
pub fn locate_pixel_group(head: &[u8], ts: &TransferSyntax) -> Result<Option<u64>, ScanError> {
    let mut walker = Walker::new(head, ts);
    walker.stop_at_pixel_group = true;
    match walker.run(None) {
        Err(ScanError::ReachedPixelGroup(at)) => Ok(Some(at)),
        Err(ScanError::Truncated { .. }) | Ok(_) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The VR the data set parser gives `tag` in an implicit VR data set: OW for Pixel Data and
/// Overlay Data, else the standard dictionary's (an ambiguous one relaxed as the parser relaxes
/// it: US/SS to US, OB/OW to OW, US/OW to OW); `None`: unknown, read as bytes (UN).
fn implicit_vr(tag: (u16, u16)) -> Option<[u8; 2]> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    if tag == PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
        return Some(*b"OW");
    }
    match dicom_dictionary_std::StandardDataDictionary.by_tag(dicom_core::Tag(tag.0, tag.1)) {
        Some(entry) => Some(entry.vr().relaxed().to_bytes()),
        None if tag.1 == 0x0000 => Some(*b"UL"), // group length
        None => None,
    }
}

/// The size of one value of a binary VR: the parser reads a value of such a VR as whole
/// numbers of these, so a length that is not a multiple would leave it out of step with us.
fn value_unit(vr: &[u8; 2]) -> u32 {
    match vr {
        b"US" | b"SS" | b"OW" => 2,
        b"UL" | b"SL" | b"FL" | b"AT" | b"OL" | b"OF" => 4,
        b"FD" | b"SV" | b"UV" | b"OD" | b"OV" => 8,
        _ => 1,
    }
}

struct Walker<R: Read> {
    r: BufReader<R>,
    pos: u64,
    explicit: bool,
    big: bool,
    found: HeaderFields,
    stop_at_pixel_group: bool,
    /// Undefined-length UN elements met: (start, end, at top level).
    undefined_un: Vec<(u64, u64, bool)>,
}

impl<R: Read> Walker<R> {
    fn new(r: R, ts: &TransferSyntax) -> Self {
        Walker {
            r: BufReader::with_capacity(64 * 1024, r),
            pos: 0,
            explicit: ts.explicit_vr,
            big: ts.big_endian,
            found: HeaderFields::default(),
            stop_at_pixel_group: false,
            undefined_un: Vec::new(),
        }
    }

    fn run(mut self, len: Option<u64>) -> Result<HeaderFields, ScanError> {
        if self.at_eof()? {
            return Err(ScanError::Truncated { offset: 0 });
        }
        self.walk_items_of_dataset(len, 0, true)?;
        Ok(self.found)
    }

    fn at_eof(&mut self) -> Result<bool, ScanError> {
        Ok(self.r.fill_buf().map_err(ScanError::Io)?.is_empty())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ScanError> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|e| self.eof(e))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn eof(&self, e: io::Error) -> ScanError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ScanError::Truncated { offset: self.pos }
        } else {
            ScanError::Io(e)
        }
    }

    fn u16(&mut self) -> Result<u16, ScanError> {
        let b = self.bytes::<2>()?;
        Ok(if self.big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    fn u32(&mut self) -> Result<u32, ScanError> {
        let b = self.bytes::<4>()?;
        Ok(if self.big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    fn tag(&mut self) -> Result<(u16, u16), ScanError> {
        Ok((self.u16()?, self.u16()?))
    }

    fn skip(&mut self, n: u64) -> Result<(), ScanError> {
        let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink()).map_err(ScanError::Io)?;
        self.pos += copied;
        if copied < n {
            return Err(ScanError::Truncated { offset: self.pos });
        }
        Ok(())
    }

    /// Walk elements until `end` (a defined length), an item delimiter (undefined-length item),
    /// or, at top level, the end of the stream.
    fn walk_items_of_dataset(&mut self, end: Option<u64>, depth: u32, top: bool) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::TooDeep);
        }
        loop {
            match end {
                Some(end) if self.pos == end => return Ok(()),
                Some(end) if self.pos > end => {
                    return Err(ScanError::Element { group: 0, element: 0, offset: self.pos, problem: "element runs past the end of its item" })
                }
                None if top && self.at_eof()? => return Ok(()),
                _ => {}
            }
            let offset = self.pos;
            let tag = self.tag()?;
            let err = |problem| ScanError::Element { group: tag.0, element: tag.1, offset, problem };
            if tag == ITEM_DELIMITATION {
                self.u32()?;
                return if end.is_none() && !top { Ok(()) } else { Err(err("unexpected item delimiter")) };
            }
            if tag.0 == 0xFFFE {
                return Err(err("unexpected item or sequence delimiter"));
            }
            let pixel_element = is_pixel_group_element(tag.0, tag.1);
            if top && pixel_element && self.found.trailing_from.is_none() {
                if self.stop_at_pixel_group {
                    return Err(ScanError::ReachedPixelGroup(offset));
                }
                self.found.pixel_group_at.get_or_insert(offset);
            }
            // Whatever follows the pixel group ends it, whatever its tag: an element out of
            // order after the pixels (say a Patient's Name) is as much a trailer as padding,
            // and so is any group 7FE0 element that is not pixel data.
            if top && !pixel_element && self.found.pixel_group_at.is_some() {
                self.found.trailing_from.get_or_insert(offset);
            }
            let (vr, len) = if self.explicit {
                let vr = self.bytes::<2>()?;
                if !vr.iter().all(u8::is_ascii_uppercase) {
                    return Err(err("invalid value representation"));
                }
                // A VR this edition does not define is read as UN, with a reserved field and a
                // 32-bit length, as the data set parser reads it (and as VRs added to the
                // standard later are encoded); the 16-bit length is only for the VRs that have one.
                let short = matches!(
                    &vr,
                    b"AE"
                        | b"AS"
                        | b"AT"
                        | b"CS"
                        | b"DA"
                        | b"DS"
                        | b"DT"
                        | b"FL"
                        | b"FD"
                        | b"IS"
                        | b"LO"
                        | b"LT"
                        | b"PN"
                        | b"SH"
                        | b"SL"
                        | b"SS"
                        | b"ST"
                        | b"TM"
                        | b"UI"
                        | b"UL"
                        | b"US"
                );
                let vr = if short || matches!(&vr, b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UR" | b"UT" | b"UN" | b"SV" | b"UV") {
                    vr
                } else {
                    *b"UN"
                };
                let len = if !short {
                    self.skip(2)?;
                    self.u32()?
                } else {
                    u32::from(self.u16()?)
                };
                (Some(vr), len)
            } else {
                (None, self.u32()?)
            };
            if len == UNDEFINED {
                match vr.as_ref() {
                    _ if tag == PIXEL_DATA => self.walk_fragments()?,
                    None | Some(b"SQ") => self.walk_sequence(None, depth)?,
                    Some(b"UN") => {
                        // PS3.5 6.2.2: an undefined-length UN is a sequence in Implicit VR LE.
                        let saved = (self.explicit, self.big);
                        (self.explicit, self.big) = (false, false);
                        let walked = self.walk_sequence(None, depth);
                        (self.explicit, self.big) = saved;
                        walked?;
                        self.undefined_un.push((offset, self.pos, top));
                    }
                    Some(_) => return Err(err("undefined length on a value representation that cannot have one")),
                }
                continue;
            }
            let value_end = self.pos + u64::from(len);
            if end.is_some_and(|end| value_end > end) {
                return Err(err("value length runs past the end of its item"));
            }
            // In implicit VR the parser reads an element by the VR the dictionary gives it: an
            // SQ as a sequence (so it is walked as one here too, its items' lengths checked like
            // any other), a binary VR in whole values.
            let vr = vr.or_else(|| implicit_vr(tag));
            if vr.is_some_and(|vr| len % value_unit(&vr) != 0) {
                return Err(err("value length is not a multiple of its value representation's size"));
            }
            if vr.as_ref() == Some(b"SQ") {
                self.walk_sequence(Some(value_end), depth)?;
            } else if top && len <= 128 && self.found.slot(tag).is_some() {
                let mut v = vec![0u8; len as usize];
                self.r.read_exact(&mut v).map_err(|e| self.eof(e))?;
                self.pos += u64::from(len);
                let text = String::from_utf8_lossy(&v).trim_matches(['\0', ' ']).to_string();
                if let Some(slot) = self.found.slot(tag) {
                    *slot = (!text.is_empty()).then_some(text);
                }
            } else {
                self.skip(u64::from(len))?;
            }
        }
    }

    fn walk_sequence(&mut self, end: Option<u64>, depth: u32) -> Result<(), ScanError> {
        loop {
            if let Some(end) = end {
                if self.pos == end {
                    return Ok(());
                }
            }
            let offset = self.pos;
            let tag = self.tag()?;
            let len = self.u32()?;
            let err = |problem| ScanError::Element { group: tag.0, element: tag.1, offset, problem };
            match tag {
                SEQUENCE_DELIMITATION if end.is_none() => return Ok(()),
                ITEM if len == UNDEFINED => self.walk_items_of_dataset(None, depth + 1, false)?,
                ITEM => {
                    let item_end = self.pos + u64::from(len);
                    if end.is_some_and(|end| item_end > end) {
                        return Err(err("item runs past the end of its sequence"));
                    }
                    self.walk_items_of_dataset(Some(item_end), depth + 1, false)?
                }
                _ => return Err(err("expected an item in a sequence")),
            }
        }
    }

    fn walk_fragments(&mut self) -> Result<(), ScanError> {
        loop {
            let offset = self.pos;
            let tag = self.tag()?;
            let len = self.u32()?;
            match tag {
                SEQUENCE_DELIMITATION => return Ok(()),
                ITEM if len != UNDEFINED => self.skip(u64::from(len))?,
                _ => return Err(ScanError::Element { group: tag.0, element: tag.1, offset, problem: "expected a pixel data fragment" }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::sop::transfer_syntax;

    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
    const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

    /// Build explicit-VR elements: (group, element, VR, value).
    fn explicit(elements: &[(u16, u16, &str, &[u8])], big: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let u16b = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let u32b = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        for (g, e, vr, value) in elements {
            out.extend_from_slice(&u16b(*g));
            out.extend_from_slice(&u16b(*e));
            out.extend_from_slice(vr.as_bytes());
            if matches!(*vr, "OB" | "OW" | "SQ" | "UN" | "UT") {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&u32b(value.len() as u32));
            } else {
                out.extend_from_slice(&u16b(value.len() as u16));
            }
            out.extend_from_slice(value);
        }
        out
    }

    fn header(big: bool) -> Vec<u8> {
        explicit(
            &[
                (0x0008, 0x0016, "UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
                (0x0008, 0x0018, "UI", b"1.2.3.4\0"),
                (0x0008, 0x0060, "CS", b"CT"),
                (0x0020, 0x000D, "UI", b"1.2.3\0"),
                (0x0020, 0x000E, "UI", b"1.2.3.5\0"),
            ],
            big,
        )
    }

    fn run(bytes: &[u8], ts: &str) -> Result<HeaderFields, ScanError> {
        scan(bytes, Some(bytes.len() as u64), transfer_syntax(ts).unwrap())
    }

    #[test]
    fn reads_the_identifying_attributes() {
        for (big, ts) in [(false, EXPLICIT_LE), (true, EXPLICIT_BE)] {
            let h = run(&header(big), ts).unwrap();
            assert_eq!(h.sop_class_uid.as_deref(), Some("1.2.840.10008.5.1.4.1.1.2"));
            assert_eq!(h.sop_instance_uid.as_deref(), Some("1.2.3.4"));
            assert_eq!(h.study_instance_uid.as_deref(), Some("1.2.3"));
            assert_eq!(h.series_instance_uid.as_deref(), Some("1.2.3.5"));
            assert_eq!(h.modality.as_deref(), Some("CT"));
        }
    }

    #[test]
    fn sequences_and_fragments() {
        // Top-level elements, kept apart so that the valid cut points are known.
        let mut elements: Vec<Vec<u8>> = vec![header(false)];
        // A defined-length SQ with one defined-length item.
        let item_body = explicit(&[(0x0008, 0x0100, "SH", b"T-1234")], false);
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        item.extend_from_slice(&(item_body.len() as u32).to_le_bytes());
        item.extend_from_slice(&item_body);
        elements.push(explicit(&[(0x0008, 0x1032, "SQ", &item)], false));
        // An undefined-length SQ with an undefined-length item.
        let mut sq = vec![0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        sq.extend(explicit(&[(0x0008, 0x1150, "UI", b"1.2\0")], false));
        sq.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        sq.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        elements.push(sq);
        // Encapsulated pixel data: empty offset table and one fragment.
        let mut px = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        px.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        px.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 1, 2, 3, 4]);
        px.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        elements.push(px);

        let bytes = elements.concat();
        assert!(run(&bytes, EXPLICIT_LE).is_ok());
        let boundaries: Vec<usize> = elements
            .iter()
            .scan(0, |acc, e| {
                *acc += e.len();
                Some(*acc)
            })
            .collect();
        // Every cut inside the sequences or the pixel data is refused, never a panic or a success.
        for cut in boundaries[0] + 1..bytes.len() {
            let result = run(&bytes[..cut], EXPLICIT_LE);
            assert_eq!(result.is_ok(), boundaries.contains(&cut), "cut at {cut}: {result:?}");
        }
    }

    #[test]
    fn corrupt_data_sets_are_refused() {
        let mut overlong = header(false);
        overlong.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 0xFF, 0x7F, b'X', b'Y']);
        assert!(run(&overlong, EXPLICIT_LE).is_err());
        assert!(matches!(scan(&overlong[..], None, transfer_syntax(EXPLICIT_LE).unwrap()), Err(ScanError::Truncated { .. })));

        let mut bad_vr = header(false);
        bad_vr.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'p', b'n', 2, 0, b'X', b'Y']);
        assert!(matches!(run(&bad_vr, EXPLICIT_LE), Err(ScanError::Element { problem: "invalid value representation", .. })));

        assert!(matches!(run(&[], EXPLICIT_LE), Err(ScanError::Truncated { offset: 0 })));
        assert!(run(&[0x08, 0x00, 0x16], EXPLICIT_LE).is_err());
    }

    #[test]
    fn implicit_vr() {
        let mut bytes = Vec::new();
        for (g, e, v) in [(0x0008u16, 0x0016u16, &b"1.2.840.10008.5.1.4.1.1.1\0"[..]), (0x0008, 0x0018, b"9.8\0"), (0x0020, 0x000D, b"7.7\0")] {
            bytes.extend_from_slice(&g.to_le_bytes());
            bytes.extend_from_slice(&e.to_le_bytes());
            bytes.extend_from_slice(&(v.len() as u32).to_le_bytes());
            bytes.extend_from_slice(v);
        }
        // Undefined-length sequence in implicit VR.
        bytes.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let h = run(&bytes, IMPLICIT_LE).unwrap();
        assert_eq!(h.sop_instance_uid.as_deref(), Some("9.8"));
        assert_eq!(h.study_instance_uid.as_deref(), Some("7.7"));
    }

    /// Found by fuzzing (tests/fuzz, target deidentify): in implicit VR a defined-length
    /// element the dictionary calls SQ was skipped as opaque bytes, but the data set parser
    /// reads it as a sequence; a 4 GB length inside one of its items then passed the scan, and
    /// the parser allocated 4 GB for a 6 KB C-STORE before finding the data short.
    #[test]
    fn implicit_vr_sequences_of_defined_length_are_walked_too() {
        let le32 = |v: u32| v.to_le_bytes();
        let item = |inner: &[u8]| [&[0xFE, 0xFF, 0x00, 0xE0][..], &le32(inner.len() as u32), inner].concat();
        // Referenced Image Sequence (0008,1140), one item holding Patient ID with a length far
        // past the end of its item.
        let liar = [&[0x10, 0x00, 0x20, 0x00][..], &le32(0xFF00_0008), b"ID"].concat();
        let sequence = |items: &[u8]| [&[0x08, 0x00, 0x40, 0x11][..], &le32(items.len() as u32), items].concat();
        let bad = sequence(&item(&liar));
        assert!(
            matches!(run(&bad, IMPLICIT_LE), Err(ScanError::Element { problem: "value length runs past the end of its item", .. })),
            "{:?}",
            run(&bad, IMPLICIT_LE)
        );
        // A well-formed one passes, and so does a defined-length element that is no sequence.
        let good = [&[0x10, 0x00, 0x20, 0x00][..], &le32(2), b"ID"].concat();
        assert!(run(&sequence(&item(&good)), IMPLICIT_LE).is_ok());
        let private = [&[0x09, 0x00, 0x10, 0x10][..], &le32(4), &[0xFE, 0xFF, 0x00, 0xE0]].concat();
        assert!(run(&private, IMPLICIT_LE).is_ok());
    }

    /// Found by fuzzing (target query_identifier): an explicit VR this edition does not define
    /// ("YN") was read with a 16-bit length here, but the parser reads it as UN with a 32-bit
    /// one, and allocated 3.5 GB for a 103-byte C-FIND identifier.
    #[test]
    fn an_undefined_vr_is_read_as_un_with_a_32_bit_length() {
        let mut unknown = vec![0x10, 0x00, 0x10, 0x00, b'Y', b'N', 0x04, 0x00, 0xBB, 0xB0, 0xBA, 0xD5];
        assert!(
            matches!(run(&unknown, EXPLICIT_LE), Err(ScanError::Element { problem: "value length runs past the end of its item", .. })),
            "{:?}",
            run(&unknown, EXPLICIT_LE)
        );
        // With a 32-bit length that fits, it is skipped like any UN.
        unknown.truncate(6);
        unknown.extend_from_slice(&[0, 0, 2, 0, 0, 0, b'a', b'b']);
        assert!(run(&unknown, EXPLICIT_LE).is_ok());
    }

    /// Found by fuzzing (targets query_identifier, commitment_report): a UL of length 1 or 2
    /// (a group length, in implicit VR) is read by the parser as no value and no bytes, so the
    /// next element's header came from the middle of this one, with a length of 2-4 GB.
    #[test]
    fn a_binary_value_of_a_length_its_vr_cannot_have_is_refused() {
        let le32 = |v: u32| v.to_le_bytes();
        let group_length = [&[0x00, 0x02, 0x00, 0x00][..], &le32(2), &[0, 0], &[0x00, 0x02, 0x00, 0x00], &le32(0)].concat();
        assert!(
            matches!(
                run(&group_length, IMPLICIT_LE),
                Err(ScanError::Element { problem: "value length is not a multiple of its value representation's size", .. })
            ),
            "{:?}",
            run(&group_length, IMPLICIT_LE)
        );
        let us = explicit(&[(0x0028, 0x0010, "US", &[1, 2, 3])], false);
        assert!(run(&us, EXPLICIT_LE).is_err());
        assert!(run(&explicit(&[(0x0028, 0x0010, "US", &[1, 2])], false), EXPLICIT_LE).is_ok());
        let rows = [&[0x28, 0x00, 0x10, 0x00][..], &le32(2), &[0, 2]].concat();
        assert!(run(&rows, IMPLICIT_LE).is_ok());
    }

    /// Found by fuzzing (target query_identifier, after 6 million runs): Overlay Data (6000,3000)
    /// of length 1 in implicit VR, which the parser reads as OW (no values, no bytes).
    #[test]
    fn implicit_vr_overlay_and_pixel_data_are_ow() {
        let le32 = |v: u32| v.to_le_bytes();
        let overlay = [&[0x00, 0x60, 0x00, 0x30][..], &le32(1), &[0]].concat();
        assert!(
            matches!(run(&overlay, IMPLICIT_LE), Err(ScanError::Element { problem: "value length is not a multiple of its value representation's size", .. })),
            "{:?}",
            run(&overlay, IMPLICIT_LE)
        );
        let even = [&[0x00, 0x60, 0x00, 0x30][..], &le32(2), &[0, 0]].concat();
        assert!(run(&even, IMPLICIT_LE).is_ok());
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut bytes = Vec::new();
        for _ in 0..200 {
            bytes.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        assert!(matches!(run(&bytes, EXPLICIT_LE), Err(ScanError::TooDeep)));
    }
}

#[cfg(test)]
mod group_end {
    use super::*;
    use crate::dicom::sop::transfer_syntax;

    /// What a tracker lets through when fed `parts` in turn.
    fn through(end: &mut PixelGroupEnd, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            let (release, n) = end.feed(part);
            out.extend_from_slice(&release);
            out.extend_from_slice(&part[..n]);
        }
        out
    }

    /// Native and encapsulated pixel groups, followed by trailers, fed in every split of two
    /// and byte by byte: exactly the group comes through, none of the trailers.
    #[test]
    fn the_pixel_group_ends_where_the_first_other_element_starts() {
        let le = |v: u32| v.to_le_bytes();
        let mut native = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0];
        native.extend_from_slice(&le(6));
        native.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let mut encapsulated = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        encapsulated.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        encapsulated.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 0xE0, 0x7F, 0x10, 0x00]);
        encapsulated.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        // An out-of-order Patient's Name, then a private element.
        let mut trailer = vec![0x10, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'D', b'O', b'E', b' '];
        trailer.extend_from_slice(&[0x99, 0x00, 0x10, 0x10, b'L', b'O', 2, 0, b'X', b' ']);
        let ts = transfer_syntax("1.2.840.10008.1.2.1").unwrap();
        let two = [native.clone(), vec![0xE0, 0x7F, 0x20, 0x00, b'O', b'W', 0, 0, 0, 0, 0, 0]].concat();
        for group in [native.clone(), encapsulated.clone(), two] {
            let bytes = [group.clone(), trailer.clone()].concat();
            for cut in 0..=bytes.len() {
                let mut end = PixelGroupEnd::new(ts);
                assert_eq!(through(&mut end, &[&bytes[..cut], &bytes[cut..]]), group, "cut at {cut}");
                assert!(end.ended);
                assert_eq!(end.kept, group.len() as u64);
            }
            let mut end = PixelGroupEnd::new(ts);
            let singles: Vec<&[u8]> = bytes.iter().map(std::slice::from_ref).collect();
            assert_eq!(through(&mut end, &singles), group);
            // Without trailers everything comes through and the group has not ended.
            let mut end = PixelGroupEnd::new(ts);
            assert_eq!(through(&mut end, &[&group]), group);
            assert!(!end.ended);
        }
    }

    /// A group 7FE0 element that is not pixel data (a name in (7FE0,0050)) ends the group like
    /// any trailer; so does anything but an item inside encapsulated pixel data (a missing
    /// sequence delimiter, then a trailer), whose header is not mistaken for a fragment.
    #[test]
    fn only_pixel_data_elements_pass() {
        let ts = transfer_syntax("1.2.840.10008.1.2.1").unwrap();
        let native = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 2, 0, 0, 0, 9, 9];
        let name = [0xE0, 0x7F, 0x50, 0x00, b'P', b'N', 4, 0, b'D', b'O', b'E', b' '];
        let bytes = [native.clone(), name.to_vec()].concat();
        for cut in 0..=bytes.len() {
            let mut end = PixelGroupEnd::new(ts);
            assert_eq!(through(&mut end, &[&bytes[..cut], &bytes[cut..]]), native, "cut at {cut}");
        }
        let mut enc = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        enc.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 1, 2]);
        let trailer = [0x10, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'D', b'O', b'E', b' '];
        let bytes = [enc.clone(), trailer.to_vec()].concat();
        for cut in 0..=bytes.len() {
            let mut end = PixelGroupEnd::new(ts);
            let out = through(&mut end, &[&bytes[..cut], &bytes[cut..]]);
            assert!(!out.windows(3).any(|w| w == b"DOE") && out.len() <= enc.len() + 4, "cut at {cut}: {out:?}");
            assert!(end.ended);
        }
    }

    /// The walker agrees: a high-group element before the pixels is no trailer (the header is
    /// not cut), a non-pixel 7FE0 element after them is.
    #[test]
    fn trailers_start_only_after_the_pixel_group() {
        let ts = transfer_syntax("1.2.840.10008.1.2.1").unwrap();
        let mut bytes = vec![0x08, 0x00, 0x18, 0x00, b'U', b'I', 4, 0, b'1', b'.', b'2', 0];
        bytes.extend_from_slice(&[0xFC, 0xFF, 0xFC, 0xFF, b'O', b'B', 0, 0, 2, 0, 0, 0, 0, 0]);
        let pixels_at = bytes.len() as u64;
        bytes.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 2, 0, 0, 0, 9, 9]);
        let trailer_at = bytes.len() as u64;
        bytes.extend_from_slice(&[0xE0, 0x7F, 0x50, 0x00, b'P', b'N', 4, 0, b'D', b'O', b'E', b' ']);
        let f = scan(&bytes[..], Some(bytes.len() as u64), ts).unwrap();
        assert_eq!((f.pixel_group_at, f.trailing_from), (Some(pixels_at), Some(trailer_at)));
    }

    #[test]
    fn a_deflated_data_set_may_not_inflate_without_bound() {
        use std::io::Write;
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        // A private OB element whose value is more zeros than the limit.
        let big = (MAX_INFLATED + (1 << 20)) as u32;
        z.write_all(&[0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0]).unwrap();
        z.write_all(&big.to_le_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(big >> 20) {
            z.write_all(&zeros).unwrap();
        }
        let bomb = z.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "{} bytes deflated", bomb.len());
        assert!(matches!(inflate(&bomb), Err(ScanError::InflatesTooLarge { .. })));
        let ts = transfer_syntax("1.2.840.10008.1.2.1.99").unwrap();
        assert!(matches!(scan(&bomb[..], Some(bomb.len() as u64), ts), Err(ScanError::InflatesTooLarge { .. })));
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"small").unwrap();
        assert_eq!(inflate(&z.finish().unwrap()).unwrap(), b"small");
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use crate::dicom::sop::TRANSFER_SYNTAXES;

    /// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn arbitrary_bytes_never_panic_in_any_transfer_syntax() {
        for seed in 1..3000u64 {
            let bytes = noise(seed, (seed % 600) as usize);
            for ts in TRANSFER_SYNTAXES {
                let _ = scan(&bytes[..], Some(bytes.len() as u64), ts);
            }
        }
    }

    #[test]
    fn huge_declared_lengths_are_refused_without_allocating() {
        // An element claiming 4 GiB - 2 must be refused from the declared length alone.
        let mut bytes = vec![0x08, 0x00, 0x16, 0x00, b'U', b'I', 0x10, 0x00];
        bytes.extend_from_slice(b"1.2.3.4.5.6.7.8\0");
        bytes.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 0xFE, 0xFF, 0xFF, 0xFF]);
        let ts = crate::dicom::sop::transfer_syntax("1.2.840.10008.1.2.1").unwrap();
        assert!(scan(&bytes[..], Some(bytes.len() as u64), ts).is_err());
    }
}
