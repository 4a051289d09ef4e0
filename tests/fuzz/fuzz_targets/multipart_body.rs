//! A STOW-RS request body (multipart/related) from arbitrary bytes, fed in chunks of a size the
//! input chooses: the reader never holds a part past its limit, never reads past the body, and
//! what it reads writes back (`multipart::write`) to a body it reads the same again.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use triage_node::dicom::multipart::{self, Limits, Reader};

include!("../common.rs");

const LIMITS: Limits = Limits { part: 4096, headers: 1024, preamble: 1024, total: 1 << 20 };

/// Every part (its Content-Type and content), or None where the body is refused.
async fn parts(body: &[u8], boundary: &str, chunk: usize) -> Option<Vec<(String, Vec<u8>)>> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = body.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let mut reader = Reader::new(futures_util::stream::iter(chunks), boundary, LIMITS);
    let mut out = Vec::new();
    while let Some(headers) = reader.next_part().await.ok()? {
        let content = reader.read_to_end().await.ok()?;
        assert!(content.len() as u64 <= LIMITS.part, "a part past its limit: {}", content.len());
        out.push((headers.content_type().unwrap_or("application/octet-stream").to_string(), content));
    }
    reader.finish().await.ok()?;
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let chunk = usize::from(selector % 64) + 1;
    // The request's Content-Type: the input's first line when it has one, else a fixed one.
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n').filter(|&i| i < 256) {
        Some(i) if selector & 0x80 != 0 => (String::from_utf8_lossy(&rest[..i]).into_owned(), &rest[i + 1..]),
        _ => ("multipart/related; type=\"application/dicom\"; boundary=XyZ".to_string(), rest),
    };
    let Ok((_, boundary)) = multipart::related_boundary(&content_type) else { return };
    common::rt().block_on(async {
        let Some(read) = parts(body, &boundary, chunk).await else { return };
        let written = multipart::write(&boundary, read.iter().map(|(t, c)| (t.as_str(), c.as_slice())));
        // Re-read in whole, the contents compared (a header value is free text the writer
        // copies as given; the node writes only its own media types): a part whose content
        // holds the delimiter cannot round trip, and the writer never escapes it (whoever
        // writes chooses the boundary).
        if let Some(again) = parts(&written, &boundary, 4096).await {
            if read.iter().all(|(_, c)| !c.windows(boundary.len() + 4).any(|w| w.starts_with(b"\r\n--") && w.ends_with(boundary.as_bytes()))) {
                let contents = |v: &[(String, Vec<u8>)]| v.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>();
                assert_eq!(contents(&again), contents(&read), "written back, read differently");
            }
        }
    });
});
