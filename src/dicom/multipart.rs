//! multipart/related bodies (RFC 2046 5.1, RFC 2387) as DICOMweb sends them (PS3.18 8.6.1.2):
//! a streaming reader over any stream of `Bytes` chunks and a writer.
//!
//! The reader never holds a request whole: it hands out a part's headers, then the part's bytes
//! a chunk at a time, keeping in memory only what it needs to recognise the next delimiter. Every
//! part is bounded (`Limits::part`), the header block and the preamble too; a body that ends
//! before the close delimiter is `Truncated`. Delimiters are recognised as RFC 2046 says: CRLF,
//! `--`, the boundary, optional transport padding (spaces and tabs), then CRLF or `--` (the close
//! delimiter); the first may open the body without the CRLF. Boundary-like bytes that are not
//! followed that way are content. Preamble and epilogue are discarded.
//!
//! Must not: know HTTP frameworks (no axum types) or anything else of this crate; buffer a part.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// The most spaces and tabs accepted after a boundary before its CRLF (transport padding).
const MAX_PADDING: usize = 256;

/// Bounds on what a peer's body may make the reader hold or accept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most bytes one part's content may have.
    pub part: u64,
    /// The most bytes one part's header block may have.
    pub headers: usize,
    /// The most bytes before the first boundary.
    pub preamble: usize,
    /// The most bytes the whole body may have.
    pub total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { part: 64 << 20, headers: 16 << 10, preamble: 64 << 10, total: u64::MAX }
    }
}

/// Why a multipart body was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Content-Type is not multipart/related")]
    NotMultipartRelated,
    #[error("the Content-Type has no usable boundary parameter")]
    NoBoundary,
    #[error("the body has no boundary delimiter within its first {limit} bytes")]
    NoDelimiter { limit: usize },
    #[error("the body ended before the close delimiter")]
    Truncated,
    #[error("a part is larger than the limit of {limit} bytes")]
    PartTooLarge { limit: u64 },
    #[error("a part's headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("a part's headers are malformed")]
    MalformedHeaders,
    #[error("the body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the transport padding after a boundary is longer than {MAX_PADDING} bytes")]
    Padding,
    #[error("reading the body")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A parsed Content-Type (or any header value of the form `type/subtype; name=value; ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower case.
    pub essence: String,
    /// Parameters, names lower case, values unquoted.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses `type/subtype *(; name=value)`, values tokens or quoted strings (RFC 9110 5.6.6).
    pub fn parse(value: &str) -> Option<MediaType> {
        let mut rest = value.trim_start();
        let end = rest.find(';').unwrap_or(rest.len());
        let essence = rest[..end].trim().to_ascii_lowercase();
        let (ty, sub) = essence.split_once('/')?;
        if ty.is_empty() || sub.is_empty() || !essence.bytes().all(is_token_char_or_slash) {
            return None;
        }
        rest = &rest[end..];
        let mut params = Vec::new();
        while let Some(after) = rest.strip_prefix(';') {
            let after = after.trim_start();
            if after.is_empty() {
                break;
            }
            let eq = after.find('=')?;
            let name = after[..eq].trim().to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return None;
            }
            let v = &after[eq + 1..];
            let (val, tail) = if let Some(q) = v.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = q.char_indices();
                let mut close = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => out.push(chars.next()?.1),
                        '"' => {
                            close = Some(i);
                            break;
                        }
                        c => out.push(c),
                    }
                }
                (out, &q[close? + 1..])
            } else {
                let end = v.find(';').unwrap_or(v.len());
                (v[..end].trim().to_string(), &v[end..])
            };
            params.push((name, val));
            rest = tail.trim_start();
        }
        if !rest.trim().is_empty() {
            return None;
        }
        Some(MediaType { essence, params })
    }

    /// The value of a parameter (name case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token_char_or_slash(b: u8) -> bool {
    b == b'/' || is_token_char(b)
}

/// A boundary RFC 2046 allows: 1 to 70 of its `bchars`, not ending in a space.
pub fn valid_boundary(b: &str) -> bool {
    (1..=70).contains(&b.len()) && !b.ends_with(' ') && b.bytes().all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

/// The boundary of a `multipart/related` Content-Type, with the parsed media type (for `type=`).
pub fn related_boundary(content_type: &str) -> Result<(MediaType, String), Error> {
    let mt = MediaType::parse(content_type).ok_or(Error::NotMultipartRelated)?;
    if mt.essence != "multipart/related" {
        return Err(Error::NotMultipartRelated);
    }
    let b = mt.param("boundary").ok_or(Error::NoBoundary)?.to_string();
    if !valid_boundary(&b) {
        return Err(Error::NoBoundary);
    }
    Ok((mt, b))
}

/// One part's header fields, in order; names lower case.
#[derive(Debug, Clone, Default)]
pub struct PartHeaders {
    pub fields: Vec<(String, String)>,
}

impl PartHeaders {
    /// The first value of a header field (name case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The part's Content-Type, if it has one.
    pub fn content_type(&self) -> Option<&str> {
        self.get("content-type")
    }

    fn parse(block: &[u8]) -> Result<PartHeaders, Error> {
        let text = std::str::from_utf8(block).map_err(|_| Error::MalformedHeaders)?;
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with([' ', '\t']) {
                // obsolete line folding: continues the previous field's value
                let last = fields.last_mut().ok_or(Error::MalformedHeaders)?;
                if !last.1.is_empty() {
                    last.1.push(' ');
                }
                last.1.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':').ok_or(Error::MalformedHeaders)?;
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(Error::MalformedHeaders);
            }
            fields.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        Ok(PartHeaders { fields })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    Headers,
    Body,
    /// After a part's content ended at a delimiter; the next part's headers follow.
    BetweenParts,
    Done,
}

/// Reads a multipart body part by part: `next_part` gives the next part's headers, then
/// `next_chunk` its content until `None`. Calling `next_part` before a part's content is read to
/// its end skips the rest of it (still bounded by the part limit).
pub struct Reader<S> {
    stream: S,
    /// `\r\n--boundary`.
    delim: Vec<u8>,
    buf: BytesMut,
    state: State,
    limits: Limits,
    part_len: u64,
    /// Bytes of the body read so far.
    read: u64,
    eof: bool,
}

impl<S, E> Reader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A reader of the body `stream` delimited by `boundary` (already validated, unquoted).
    pub fn new(stream: S, boundary: &str, limits: Limits) -> Self {
        let mut delim = b"\r\n--".to_vec();
        delim.extend_from_slice(boundary.as_bytes());
        Reader { stream, delim, buf: BytesMut::new(), state: State::Preamble, limits, part_len: 0, read: 0, eof: false }
    }

    /// Reads more of the body into the buffer; false at its end.
    async fn fill(&mut self) -> Result<bool, Error> {
        if self.eof {
            return Ok(false);
        }
        loop {
            match self.stream.next().await {
                None => {
                    self.eof = true;
                    return Ok(false);
                }
                Some(Err(e)) => return Err(Error::Body(e.into())),
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    self.read += chunk.len() as u64;
                    if self.read > self.limits.total {
                        return Err(Error::BodyTooLarge { limit: self.limits.total });
                    }
                    self.buf.extend_from_slice(&chunk);
                    return Ok(true);
                }
            }
        }
    }

    /// Where the delimiter at `at` (its bytes present in the buffer) ends: `Some(Some((len,
    /// close)))` when it is one (len includes padding and CRLF or `--`), `Some(None)` when the
    /// bytes after it show it is not, `None` when more bytes are needed to tell.
    fn delimiter_end(&self, at: usize) -> Result<Option<Option<(usize, bool)>>, Error> {
        let mut i = at + self.delim.len();
        let b = &self.buf[..];
        if b.len() >= i + 2 && &b[i..i + 2] == b"--" {
            return Ok(Some(Some((i + 2 - at, true))));
        }
        if b.len() == i + 1 && b[i] == b'-' {
            return Ok(None);
        }
        let start = i;
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
            if i - start > MAX_PADDING {
                return Err(Error::Padding);
            }
        }
        if i == b.len() || (i + 1 == b.len() && b[i] == b'\r') {
            return Ok(None);
        }
        if i + 1 < b.len() && &b[i..i + 2] == b"\r\n" {
            Ok(Some(Some((i + 2 - at, false))))
        } else {
            Ok(Some(None))
        }
    }

    /// Moves to the next part and returns its headers; `None` after the close delimiter.
    pub async fn next_part(&mut self) -> Result<Option<PartHeaders>, Error> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Preamble => self.skip_preamble().await?,
                State::Body => while self.next_chunk().await?.is_some() {},
                State::BetweenParts => self.state = State::Headers,
                State::Headers => return self.read_headers().await.map(Some),
            }
        }
    }

    async fn skip_preamble(&mut self) -> Result<(), Error> {
        // The first delimiter may open the body without its CRLF: look as if it had one.
        if self.buf.is_empty() {
            self.buf.extend_from_slice(b"\r\n");
        }
        let mut from = 0;
        loop {
            if let Some(at) = find(&self.buf[from..], &self.delim).map(|i| i + from) {
                // `at` counts the CRLF put in front.
                if at > self.limits.preamble + 2 {
                    return Err(Error::NoDelimiter { limit: self.limits.preamble });
                }
                match self.delimiter_end(at)? {
                    Some(Some((len, close))) => {
                        self.buf.advance(at + len);
                        self.state = if close { State::Done } else { State::Headers };
                        if close {
                            self.buf.clear();
                        }
                        return Ok(());
                    }
                    Some(None) => {
                        from = at + 1;
                        continue;
                    }
                    None => {}
                }
            }
            if self.buf.len() > self.limits.preamble + 2 + self.delim.len() {
                return Err(Error::NoDelimiter { limit: self.limits.preamble });
            }
            if !self.fill().await? {
                return Err(Error::NoDelimiter { limit: self.limits.preamble });
            }
        }
    }

    async fn read_headers(&mut self) -> Result<PartHeaders, Error> {
        loop {
            // A part with no header fields starts with the empty line at once.
            if self.buf.starts_with(b"\r\n") {
                self.buf.advance(2);
                return self.begin_body(PartHeaders::default());
            }
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                if end > self.limits.headers {
                    return Err(Error::HeadersTooLarge { limit: self.limits.headers });
                }
                let headers = PartHeaders::parse(&self.buf[..end])?;
                self.buf.advance(end + 4);
                return self.begin_body(headers);
            }
            if self.buf.len() > self.limits.headers + 4 {
                return Err(Error::HeadersTooLarge { limit: self.limits.headers });
            }
            if !self.fill().await? {
                return Err(Error::Truncated);
            }
        }
    }

    fn begin_body(&mut self, headers: PartHeaders) -> Result<PartHeaders, Error> {
        self.state = State::Body;
        self.part_len = 0;
        Ok(headers)
    }

    /// The next bytes of the current part's content; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        if self.state != State::Body {
            return Ok(None);
        }
        let mut from = 0;
        loop {
            let found = find(&self.buf[from..], &self.delim).map(|i| i + from);
            let (emit, end) = match found {
                Some(at) => match self.delimiter_end(at)? {
                    Some(Some((len, close))) => (at, Some((at + len, close))),
                    Some(None) => {
                        from = at + 1;
                        continue;
                    }
                    // Everything before a possible delimiter is content either way.
                    None => (at, None),
                },
                // The tail might be the start of a delimiter: keep it.
                None => (self.buf.len().saturating_sub(self.delim.len() - 1).max(from), None),
            };
            if emit > 0 {
                return self.emit(emit).map(Some);
            }
            if let Some((len, close)) = end {
                self.buf.advance(len);
                self.state = if close {
                    self.buf.clear();
                    State::Done
                } else {
                    State::BetweenParts
                };
                return Ok(None);
            }
            if !self.fill().await? {
                return Err(Error::Truncated);
            }
            from = 0;
        }
    }

    fn emit(&mut self, n: usize) -> Result<Bytes, Error> {
        self.part_len += n as u64;
        if self.part_len > self.limits.part {
            return Err(Error::PartTooLarge { limit: self.limits.part });
        }
        Ok(self.buf.split_to(n).freeze())
    }

    /// The rest of the current part's content in one buffer (bounded by the part limit).
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        while let Some(c) = self.next_chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// Reads and discards the epilogue, so that a body ends cleanly (call after `next_part`
    /// returned `None`).
    pub async fn finish(&mut self) -> Result<(), Error> {
        while self.state == State::Done && self.fill().await? {
            self.buf.clear();
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// A fresh boundary: 32 hex digits of a random UUID (never in a DICOM part by chance).
pub fn new_boundary() -> String {
    format!("{}", uuid::Uuid::new_v4().simple())
}

/// The Content-Type of a multipart/related body whose root parts are `root_type`
/// (`multipart/related; type="application/dicom"; boundary=...`).
pub fn related_content_type(root_type: &str, boundary: &str) -> String {
    if boundary.bytes().all(is_token_char) {
        format!("multipart/related; type=\"{root_type}\"; boundary={boundary}")
    } else {
        format!("multipart/related; type=\"{root_type}\"; boundary=\"{boundary}\"")
    }
}

/// Writes a multipart body a part at a time: `part` gives the bytes that open a part (to be
/// followed by its content), `finish` the close delimiter. For streaming a body without holding
/// its parts.
#[derive(Debug, Clone)]
pub struct Writer {
    boundary: String,
    started: bool,
}

impl Writer {
    pub fn new(boundary: &str) -> Writer {
        Writer { boundary: boundary.to_string(), started: false }
    }

    /// The delimiter and headers that open a part of `content_type`.
    pub fn part(&mut self, content_type: &str) -> Bytes {
        let lead = if self.started { "\r\n" } else { "" };
        self.started = true;
        Bytes::from(format!("{lead}--{}\r\nContent-Type: {content_type}\r\n\r\n", self.boundary))
    }

    /// The close delimiter.
    pub fn finish(self) -> Bytes {
        let lead = if self.started { "\r\n" } else { "" };
        Bytes::from(format!("{lead}--{}--\r\n", self.boundary))
    }
}

/// A whole body of `parts` (content type, content), delimited by `boundary`.
pub fn write<'a>(boundary: &str, parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut w = Writer::new(boundary);
    let mut out = Vec::new();
    for (ct, content) in parts {
        out.extend_from_slice(&w.part(ct));
        out.extend_from_slice(content);
    }
    out.extend_from_slice(&w.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field whose value starts on a folded line has no leading space (found by the
    /// multipart_body fuzz target: written back, it read differently).
    #[test]
    fn a_value_on_a_folded_line_is_trimmed() {
        let h = PartHeaders::parse(b"Content-Type:\r\n application/dicom\r\nX-A: one\r\n\ttwo").unwrap();
        assert_eq!(h.content_type(), Some("application/dicom"));
        assert_eq!(h.get("x-a"), Some("one two"));
    }

    type Chunks = futures_util::stream::Iter<std::vec::IntoIter<Result<Bytes, std::io::Error>>>;

    /// The body split into chunks of `size` bytes.
    fn chunks(body: &[u8], size: usize) -> Chunks {
        let v: Vec<Result<Bytes, std::io::Error>> = body.chunks(size.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures_util::stream::iter(v)
    }

    fn read_all(body: &[u8], boundary: &str, size: usize, limits: Limits) -> Result<Vec<(PartHeaders, Vec<u8>)>, Error> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut r = Reader::new(chunks(body, size), boundary, limits);
            let mut out = Vec::new();
            while let Some(h) = r.next_part().await? {
                let content = r.read_to_end().await?;
                out.push((h, content));
            }
            r.finish().await?;
            Ok(out)
        })
    }

    fn contents(body: &[u8], boundary: &str) -> Vec<Vec<u8>> {
        for size in [1, 2, 3, 7, 64, 1 << 20] {
            let parts = read_all(body, boundary, size, Limits::default()).unwrap_or_else(|e| panic!("chunk size {size}: {e}"));
            let got: Vec<Vec<u8>> = parts.into_iter().map(|(_, c)| c).collect();
            if size == 1 {
                continue;
            }
            let again: Vec<Vec<u8>> = read_all(body, boundary, 1, Limits::default()).unwrap().into_iter().map(|(_, c)| c).collect();
            assert_eq!(got, again, "chunk size {size} differs from byte by byte");
        }
        read_all(body, boundary, 5, Limits::default()).unwrap().into_iter().map(|(_, c)| c).collect()
    }

    #[test]
    fn round_trip() {
        let a = b"DICM first part".to_vec();
        let b: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let empty: Vec<u8> = Vec::new();
        let boundary = new_boundary();
        let body = write(&boundary, [("application/dicom", a.as_slice()), ("application/dicom", b.as_slice()), ("application/dicom", empty.as_slice())]);
        assert_eq!(contents(&body, &boundary), vec![a, b, empty]);
        let parts = read_all(&body, &boundary, 13, Limits::default()).unwrap();
        assert_eq!(parts[0].0.content_type(), Some("application/dicom"));
    }

    #[test]
    fn no_parts_is_an_empty_body() {
        let body = write("b", std::iter::empty());
        assert_eq!(contents(&body, "b"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn preamble_epilogue_padding_and_header_forms() {
        let body = b"This is the preamble --b not yet\r\n--bX neither\r\n--b \t\r\n\
Content-Type: application/dicom\r\nX-Long: one\r\n two\r\n\r\nfirst\r\n--b\r\n\r\nno headers\r\n--b--  \r\nepilogue --b\r\n";
        let parts = read_all(body, "b", 4, Limits::default()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, b"first");
        assert_eq!(parts[0].0.get("x-long"), Some("one two"));
        assert_eq!(parts[1].1, b"no headers");
        assert!(parts[1].0.fields.is_empty());
    }

    #[test]
    fn boundary_like_bytes_inside_a_part_are_content() {
        let content = b"--b at the start\r\n--bb\r\n--b-x\r\n-\r\n--\r\n--b\tno crlf after padding x\r\n\r\n--";
        // `--b-x` is not a close delimiter (`--b--`), `--b\t...x` has no CRLF after its padding.
        let body = write("b", [("application/dicom", content.as_slice())]);
        assert_eq!(contents(&body, "b"), vec![content.to_vec()]);
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let body = write("bnd", [("application/dicom", b"0123456789".as_slice())]);
        // every strict prefix after the first delimiter fails as truncated
        for cut in 7..body.len() - 2 {
            let r = read_all(&body[..cut], "bnd", 3, Limits::default());
            assert!(matches!(r, Err(Error::Truncated)), "cut at {cut}: {r:?}");
        }
        // nothing that looks like a delimiter at all
        let r = read_all(b"no multipart here", "bnd", 3, Limits::default());
        assert!(matches!(r, Err(Error::NoDelimiter { .. })), "{r:?}");
        let r = read_all(b"", "bnd", 3, Limits::default());
        assert!(matches!(r, Err(Error::NoDelimiter { .. })), "{r:?}");
    }

    #[test]
    fn an_oversized_part_names_the_limit() {
        let big = vec![7u8; 1000];
        let body = write("b", [("application/dicom", &big[..100]), ("application/dicom", big.as_slice())]);
        let limits = Limits { part: 999, ..Limits::default() };
        let e = read_all(&body, "b", 64, limits).unwrap_err();
        assert!(matches!(e, Error::PartTooLarge { limit: 999 }), "{e:?}");
        assert!(e.to_string().contains("999 bytes"), "{e}");
        let limits = Limits { part: 1000, ..Limits::default() };
        assert_eq!(read_all(&body, "b", 64, limits).unwrap().len(), 2);
        let limits = Limits { total: body.len() as u64 - 1, ..Limits::default() };
        let e = read_all(&body, "b", 64, limits).unwrap_err();
        assert!(matches!(e, Error::BodyTooLarge { .. }), "{e:?}");
    }

    #[test]
    fn oversized_headers_and_preamble_are_errors() {
        let mut body = b"--b\r\nX: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', 100));
        body.extend_from_slice(b"\r\n\r\nx\r\n--b--");
        let limits = Limits { headers: 50, ..Limits::default() };
        let e = read_all(&body, "b", 8, limits).unwrap_err();
        assert!(matches!(e, Error::HeadersTooLarge { limit: 50 }), "{e:?}");
        let limits = Limits { preamble: 10, ..Limits::default() };
        let mut body = vec![b'p'; 100];
        body.extend_from_slice(b"\r\n--b\r\n\r\nx\r\n--b--");
        let e = read_all(&body, "b", 8, limits).unwrap_err();
        assert!(matches!(e, Error::NoDelimiter { limit: 10 }), "{e:?}");
    }

    #[test]
    fn content_types_and_quoted_boundaries() {
        let (mt, b) = related_boundary(r#"Multipart/Related; type="application/dicom"; boundary="a b:\c=d""#).unwrap();
        assert_eq!(b, "a b:c=d");
        assert_eq!(mt.param("TYPE"), Some("application/dicom"));
        let (_, b) = related_boundary("multipart/related;boundary=abc ;type=application/dicom").unwrap();
        assert_eq!(b, "abc");
        assert!(matches!(related_boundary("application/dicom"), Err(Error::NotMultipartRelated)));
        assert!(matches!(related_boundary("multipart/related; type=\"application/dicom\""), Err(Error::NoBoundary)));
        assert!(matches!(related_boundary("multipart/related; boundary=\"\""), Err(Error::NoBoundary)));
        assert!(MediaType::parse("multipart/related; boundary=\"open").is_none());
        // a quoted boundary with a space round-trips through the writer's Content-Type
        let ct = related_content_type("application/dicom", "with space:1");
        let (_, b) = related_boundary(&ct).unwrap();
        assert_eq!(b, "with space:1");
        let body = write(&b, [("application/dicom", b"x".as_slice())]);
        assert_eq!(contents(&body, &b), vec![b"x".to_vec()]);
    }

    #[test]
    fn stream_errors_are_reported() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let items: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"--b\r\n\r\nabc")), Err(std::io::Error::other("reset"))];
        let mut r = Reader::new(futures_util::stream::iter(items), "b", Limits::default());
        let e = rt.block_on(async {
            r.next_part().await.unwrap().unwrap();
            r.read_to_end().await.unwrap_err()
        });
        assert!(matches!(e, Error::Body(_)), "{e:?}");
    }
}
