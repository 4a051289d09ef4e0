//! The structural scan every received data set goes through before anything parses it (nesting
//! bounded, every length checked), and the pixel-group helpers of the streaming store.
#![no_main]
use libfuzzer_sys::fuzz_target;
use triage_node::dicom::scan;

include!("../common.rs");

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let ts = common::syntax(selector);
    let _ = scan::scan(rest, Some(rest.len() as u64), ts);
    let _ = scan::scan(rest, None, ts);
    let _ = scan::undefined_un_elements(rest, ts);
    let _ = scan::locate_pixel_group(rest, ts);
    // The pixel group's end, fed in uneven pieces: never more bytes out than in.
    let mut end = scan::PixelGroupEnd::new(ts);
    let (mut fed, mut out) = (0usize, 0usize);
    for piece in rest.chunks(usize::from(selector % 7) + 1) {
        let (released, n) = end.feed(piece);
        fed += piece.len();
        out += released.len() + n;
        assert!(n <= piece.len());
        assert!(out <= fed, "{out} bytes out of {fed} in");
    }
});
