//! The DICOM Segmentation of a segmenter's result (PS3.3 A.51): one segment per positive label,
//! its mask on the grid of the source frames (the model's per-pixel probabilities resampled by
//! `regions::on_grid`), one frame per segment and source frame, in the source's Frame of
//! Reference with its plane position, orientation and pixel spacing where it has them.
//!
//! ```text
//! Modality SEG, Image Type DERIVED\PRIMARY, MONOCHROME2
//! FRACTIONAL (PROBABILITY, 8 bits, Maximum Fractional Value 255) or BINARY (1 bit, >= 0.5)
//! Segment Sequence: Segment Number, Label, Segmented Property Category (Morphologically
//!   Abnormal Structure) and Type (the finding's code), AUTOMATIC, the model as algorithm
//! Shared functional groups: Pixel Measures and Plane Orientation when every frame has the same
//! Per frame: Frame Content (Dimension Index Values: segment, In-Stack Position; a stack per
//!   segment), Plane Position, Derivation Image (Source Image: the source frame, purpose 121322), Segment
//!   Identification (Referenced Segment Number)
//! ```
//!
//! Owns: what the segmentation object says, and what a segment covers (`Extent`). Must not: do
//! IO or resample the values.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::dataset::{ascii, put, put_seq, put_u16, start_object, text, uid, Code};
use super::pm::{
    derivation, ds, frame_content, in_stack_positions, long_string, pixel_measures, plane_orientation, put_strs, referenced_series, same_measures,
    same_orientation, shared_or_per_frame, source_item, MapFrame, Placement,
};

/// Segmentation Storage.
pub const SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// Where a mask counts as the segment (a binary segmentation's threshold, and the area and
/// volume's).
pub const INSIDE: f32 = 0.5;

/// How the masks are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// FRACTIONAL, PROBABILITY: the probability scaled to 0..255 in 8 bits.
    #[default]
    Fractional,
    /// BINARY: 1 bit, set where the probability is at least `INSIDE`.
    Binary,
}

/// One segment: a positive label's mask over the frames it stands on.
#[derive(Debug, Clone)]
pub struct Segment {
    pub label: String,
    /// The finding's code (Segmented Property Type).
    pub finding: Code,
    pub frames: Vec<MapFrame>,
}

/// What the segmentation object is.
#[derive(Debug, Clone)]
pub struct Seg {
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub series_number: u32,
    pub model: String,
    pub version: String,
    /// The source's Frame of Reference, or one the caller made when the source has none.
    pub frame_of_reference_uid: String,
    pub created_ms: i64,
    pub station: String,
}

/// The segmentation's Series Description.
pub fn series_description(model: &str, version: &str) -> String {
    ascii(&format!("AI segmentation {model} {version}")).trim_end().chars().take(64).collect()
}

/// What a segment covers where its mask is at least `INSIDE`: on the first frame (the key
/// image, or a volume's first slice: see `key`), in pixels and, with Pixel Spacing, in mm²; over
/// a volume's frames, in mm³ where every frame has its geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extent {
    pub pixels: usize,
    pub area_mm2: Option<f64>,
    pub volume_mm3: Option<f64>,
}

impl Extent {
    /// The extent of a segment on `frames`, measured on `key` (an index into `frames`), the
    /// spacing of frames without a geometry read from `identity` (a radiograph's own).
    pub fn of(frames: &[MapFrame], key: usize, identity: &InMemDicomObject) -> Extent {
        let count = |f: &MapFrame| f.values.iter().filter(|v| **v >= INSIDE).count();
        let places: Vec<Placement> = frames.iter().map(|f| Placement::of(f, identity)).collect();
        let pixels = frames.get(key).map_or(0, count);
        let area_mm2 = places.get(key).and_then(|p| p.spacing).map(|s| pixels as f64 * s[0] * s[1]);
        Extent { pixels, area_mm2, volume_mm3: volume(frames, &places, count) }
    }
}

/// A volume's segmented volume: every frame's area times the slice spacing (the median distance
/// of adjacent positions along the normal, else the slice thickness); None for one frame or
/// frames without geometry.
fn volume(frames: &[MapFrame], places: &[Placement], count: impl Fn(&MapFrame) -> usize) -> Option<f64> {
    if frames.len() < 2 || places.iter().any(|p| p.position.is_none() || p.spacing.is_none() || p.orientation != places[0].orientation) {
        return None;
    }
    let o = places[0].orientation?;
    let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
    let mut along: Vec<f64> = places.iter().filter_map(|p| p.position).map(|x| x[0] * n[0] + x[1] * n[1] + x[2] * n[2]).collect();
    along.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = along.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 1e-6).collect();
    gaps.sort_by(f64::total_cmp);
    let spacing = gaps.get(gaps.len() / 2).copied().or(places[0].thickness)?;
    Some(frames.iter().zip(places).map(|(f, p)| p.spacing.map_or(0.0, |s| count(f) as f64 * s[0] * s[1])).sum::<f64>() * spacing)
}

/// Segmented Property Category of a finding: (49755003, SCT, "Morphologically Abnormal
/// Structure").
pub fn category() -> Code {
    Code::new("49755003", "SCT", "Morphologically Abnormal Structure")
}

/// The Segmentation data set (with its pixels), the de-identified patient and study of
/// `identity` (the key image's header), stored as `kind`; or why the segments cannot make one
/// image: none, without frames, of different sizes, or larger than 65535 on a side.
pub fn try_build(s: &Seg, segments: &[Segment], identity: &InMemDicomObject, kind: Kind) -> Result<InMemDicomObject, String> {
    let frames: Vec<(u16, &MapFrame)> = segments.iter().enumerate().flat_map(|(i, seg)| seg.frames.iter().map(move |f| (i as u16 + 1, f))).collect();
    let first = frames.first().ok_or("a segmentation needs at least one segment with a frame")?.1;
    let (rows, cols) = first.values.dim();
    if rows == 0 || cols == 0 || rows > u16::MAX as usize || cols > u16::MAX as usize {
        return Err(format!("a frame of {rows} x {cols} values cannot be an image"));
    }
    if let Some((_, f)) = frames.iter().find(|(_, f)| f.values.dim() != (rows, cols)) {
        return Err(format!("frames of different sizes: {rows} x {cols} and {} x {}", f.values.nrows(), f.values.ncols()));
    }
    let places: Vec<Placement> = frames.iter().map(|(_, f)| Placement::of(f, identity)).collect();
    let mut o = start_object(SOP_CLASS, &s.sop_instance_uid, identity, s.created_ms);

    // General Series, Segmentation Series.
    put(&mut o, tags::MODALITY, VR::CS, "SEG");
    put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &s.series_uid);
    put(&mut o, tags::SERIES_NUMBER, VR::IS, &s.series_number.to_string());
    put(&mut o, tags::SERIES_DESCRIPTION, VR::LO, &series_description(&s.model, &s.version));
    // Frame of Reference (the indicator only when it is the source's own), with the planes'
    // functional groups, where the frames have their geometry; a radiograph's segmentation has
    // neither (PS3.3 A.51.3: its frames are placed by their Derivation Image alone).
    let placed = places.iter().all(|p| p.position.is_some() && p.orientation.is_some());
    if placed {
        put(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, &s.frame_of_reference_uid);
        let own = text(identity, tags::FRAME_OF_REFERENCE_UID).as_deref() == Some(s.frame_of_reference_uid.as_str());
        let indicator = if own { text(identity, tags::POSITION_REFERENCE_INDICATOR).unwrap_or_default() } else { String::new() };
        put(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, &indicator);
    }
    // General and Enhanced General Equipment.
    put(&mut o, tags::MANUFACTURER, VR::LO, "triage-node");
    put(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "triage-node");
    put(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, &long_string(&s.station));
    put(&mut o, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
    put(&mut o, tags::STATION_NAME, VR::SH, &ascii(&s.station).chars().take(16).collect::<String>());

    // General Image, Segmentation Image (with the Content Identification Macro).
    put(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
    if !placed {
        // Patient Orientation (Type 2C without a plane orientation): the source's, else empty.
        match identity.get(tags::PATIENT_ORIENTATION) {
            Some(e) => o.put(e.clone()),
            None => o.put(DataElement::new(tags::PATIENT_ORIENTATION, VR::CS, PrimitiveValue::Empty)),
        };
    }
    put_strs(&mut o, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "PRIMARY"]);
    put(&mut o, tags::CONTENT_LABEL, VR::CS, "AI_SEGMENTATION");
    put(&mut o, tags::CONTENT_DESCRIPTION, VR::LO, &long_string(&format!("AI segmentation ({} {})", s.model, s.version)));
    let pn = |v: &str| ascii(v).replace(['^', '=', '\\'], " ");
    put(&mut o, tags::CONTENT_CREATOR_NAME, VR::PN, &long_string(&format!("{}^{}", pn(&s.model), pn(&s.version))));
    put(&mut o, tags::CONTENT_QUALIFICATION, VR::CS, "RESEARCH");
    put(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put(&mut o, tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO");
    let lossy = text(identity, tags::LOSSY_IMAGE_COMPRESSION).as_deref() == Some("01");
    put(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, if lossy { "01" } else { "00" });
    if lossy {
        for tag in [tags::LOSSY_IMAGE_COMPRESSION_RATIO, tags::LOSSY_IMAGE_COMPRESSION_METHOD] {
            if let Some(e) = identity.get(tag) {
                o.put(e.clone());
            }
        }
    }
    put_seq(&mut o, tags::SOURCE_IMAGE_SEQUENCE, dedup_sources(&frames));
    put_u16(&mut o, tags::SAMPLES_PER_PIXEL, 1);
    put(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_u16(&mut o, tags::ROWS, rows as u16);
    put_u16(&mut o, tags::COLUMNS, cols as u16);
    let bits = if kind == Kind::Fractional { 8 } else { 1 };
    put_u16(&mut o, tags::BITS_ALLOCATED, bits);
    put_u16(&mut o, tags::BITS_STORED, bits);
    put_u16(&mut o, tags::HIGH_BIT, bits - 1);
    put_u16(&mut o, tags::PIXEL_REPRESENTATION, 0);
    match kind {
        Kind::Fractional => {
            put(&mut o, tags::SEGMENTATION_TYPE, VR::CS, "FRACTIONAL");
            put(&mut o, tags::SEGMENTATION_FRACTIONAL_TYPE, VR::CS, "PROBABILITY");
            put_u16(&mut o, tags::MAXIMUM_FRACTIONAL_VALUE, 255);
        }
        Kind::Binary => put(&mut o, tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
    }
    put(&mut o, tags::SEGMENTS_OVERLAP, VR::CS, "UNDEFINED");
    let items = segments
        .iter()
        .enumerate()
        .map(|(i, seg)| {
            let mut item = InMemDicomObject::new_empty();
            item.put(DataElement::new(tags::SEGMENT_NUMBER, VR::US, PrimitiveValue::from(i as u16 + 1)));
            put(&mut item, tags::SEGMENT_LABEL, VR::LO, &long_string(&seg.label));
            put(&mut item, tags::SEGMENT_DESCRIPTION, VR::ST, &ascii(&format!("{} by AI model {} {}", seg.finding.meaning, s.model, s.version)));
            put(&mut item, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
            put(&mut item, tags::SEGMENT_ALGORITHM_NAME, VR::LO, &long_string(&format!("{} {}", s.model, s.version)));
            put_seq(&mut item, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, vec![category().item()]);
            put_seq(&mut item, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![seg.finding.item()]);
            put(&mut item, tags::TRACKING_ID, VR::UT, &ascii(&format!("{} {}", s.model, seg.label)));
            put(&mut item, tags::TRACKING_UID, VR::UI, &uid("", &[&s.sop_instance_uid, &seg.label, "segment"]));
            item
        })
        .collect();
    put_seq(&mut o, tags::SEGMENT_SEQUENCE, items);

    // Multi-frame Functional Groups.
    put(&mut o, tags::NUMBER_OF_FRAMES, VR::IS, &frames.len().to_string());
    let mut shared = InMemDicomObject::new_empty();
    let mut per_frame: Vec<InMemDicomObject> = frames.iter().map(|_| InMemDicomObject::new_empty()).collect();
    if placed || places.iter().all(|p| p.spacing.is_some()) {
        shared_or_per_frame(&mut shared, &mut per_frame, &places, tags::PIXEL_MEASURES_SEQUENCE, same_measures, pixel_measures);
    }
    if placed {
        shared_or_per_frame(&mut shared, &mut per_frame, &places, tags::PLANE_ORIENTATION_SEQUENCE, same_orientation, plane_orientation);
    }
    // In-Stack Positions within each segment's frames.
    let mut stack = vec![0u32; frames.len()];
    let mut at = 0;
    for seg in segments {
        let n = seg.frames.len();
        stack[at..at + n].copy_from_slice(&in_stack_positions(&places[at..at + n]));
        at += n;
    }
    for (((item, (segment, f)), place), position) in per_frame.iter_mut().zip(&frames).zip(&places).zip(stack) {
        put_seq(item, tags::FRAME_CONTENT_SEQUENCE, vec![frame_content(*segment, position)]);
        if let (true, Some(p)) = (placed, place.position) {
            let mut plane = InMemDicomObject::new_empty();
            put_strs(&mut plane, tags::IMAGE_POSITION_PATIENT, VR::DS, &p.map(ds));
            put_seq(item, tags::PLANE_POSITION_SEQUENCE, vec![plane]);
        }
        let description = format!("Segmentation by AI model {} {}", s.model, s.version);
        put_seq(item, tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation(&description, Code::new("113076", "DCM", "Segmentation"), &f.source)]);
        let mut id = InMemDicomObject::new_empty();
        id.put(DataElement::new(tags::REFERENCED_SEGMENT_NUMBER, VR::US, PrimitiveValue::from(*segment)));
        put_seq(item, tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![id]);
    }
    put_seq(&mut o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]);
    put_seq(&mut o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame);

    // Multi-frame Dimension: Referenced Segment Number, In-Stack Position Number.
    let organization = uid("", &[&s.sop_instance_uid, "dimension organization"]);
    let mut org = InMemDicomObject::new_empty();
    put(&mut org, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organization);
    put_seq(&mut o, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org]);
    let index = |pointer: Tag, group: Tag, label: &str| {
        let mut i = InMemDicomObject::new_empty();
        i.put(DataElement::new(tags::DIMENSION_INDEX_POINTER, VR::AT, PrimitiveValue::Tags([pointer][..].into())));
        i.put(DataElement::new(tags::FUNCTIONAL_GROUP_POINTER, VR::AT, PrimitiveValue::Tags([group][..].into())));
        put(&mut i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organization);
        put(&mut i, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        i
    };
    put_seq(
        &mut o,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            index(tags::REFERENCED_SEGMENT_NUMBER, tags::SEGMENT_IDENTIFICATION_SEQUENCE, "Segment Number"),
            index(tags::IN_STACK_POSITION_NUMBER, tags::FRAME_CONTENT_SEQUENCE, "In-Stack Position Number"),
        ],
    );
    // Common Instance Reference: the sources, by series (all in this study).
    let all: Vec<MapFrame> = frames.iter().map(|(_, f)| (*f).clone()).collect();
    put_seq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, referenced_series(&all));

    let values = frames.iter().flat_map(|(_, f)| f.values.iter().copied());
    let pixels = match kind {
        Kind::Fractional => values.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect::<Vec<u8>>(),
        Kind::Binary => pack_bits(values.map(|v| v >= INSIDE)),
    };
    let mut pixels = pixels;
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    o.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(pixels.into())));
    Ok(o)
}

/// The Source Image Sequence of the image: each source once.
fn dedup_sources(frames: &[(u16, &MapFrame)]) -> Vec<InMemDicomObject> {
    let mut seen: Vec<(&str, Option<u32>)> = Vec::new();
    let mut items = Vec::new();
    for (_, f) in frames {
        let key = (f.source.sop_instance_uid.as_str(), f.source.frame);
        if !seen.contains(&key) {
            seen.push(key);
            items.push(source_item(&f.source));
        }
    }
    items
}

/// Bits packed as a BINARY segmentation stores them: continuously across frames, the first
/// pixel in the lowest bit of the first byte.
fn pack_bits(bits: impl Iterator<Item = bool>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, b) in bits.enumerate() {
        if i % 8 == 0 {
            out.push(0);
        }
        if b {
            *out.last_mut().unwrap_or(&mut 0) |= 1 << (i % 8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::pm::Geometry;
    use crate::results::sr::ImageRef;
    use ndarray::Array2;

    fn frame(uid: &str, z: f64, values: Array2<f32>) -> MapFrame {
        MapFrame {
            source: ImageRef {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: uid.into(),
                series_instance_uid: "1.2.3".into(),
                frame: None,
            },
            geometry: Some(Geometry { position: [0.0, 0.0, z], orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], spacing: [0.5, 0.5], thickness: Some(3.0) }),
            values,
        }
    }

    #[test]
    fn bits_pack_continuously_lowest_bit_first() {
        assert_eq!(pack_bits([true, false, false, false, false, false, false, false, true].into_iter()), vec![1, 1]);
        assert_eq!(pack_bits([false, true, true].into_iter()), vec![6]);
        assert!(pack_bits(std::iter::empty()).is_empty());
    }

    /// Area on the key frame with its spacing; volume over the slices by the spacing of their
    /// positions (2 mm here, not the 3 mm thickness).
    #[test]
    fn extent_is_area_on_the_key_frame_and_volume_over_slices() {
        let mut a = Array2::<f32>::zeros((4, 4));
        a[[1, 1]] = 0.9;
        a[[1, 2]] = 0.5;
        a[[2, 2]] = 0.49;
        let mut b = Array2::<f32>::zeros((4, 4));
        b[[0, 0]] = 1.0;
        let frames = vec![frame("1", 0.0, a.clone()), frame("2", 2.0, b)];
        let e = Extent::of(&frames, 0, &InMemDicomObject::new_empty());
        assert_eq!(e.pixels, 2);
        assert_eq!(e.area_mm2, Some(0.5));
        assert_eq!(e.volume_mm3, Some(3.0 * 0.25 * 2.0));
        // One image without geometry: pixels only.
        let lone = MapFrame { geometry: None, ..frame("1", 0.0, a) };
        assert_eq!(Extent::of(&[lone], 0, &InMemDicomObject::new_empty()), Extent { pixels: 2, area_mm2: None, volume_mm3: None });
    }

    #[test]
    fn a_fractional_segmentation_has_a_frame_per_segment_and_source() {
        let mut a = Array2::<f32>::zeros((4, 4));
        a[[1, 1]] = 1.0;
        a[[2, 2]] = 0.5;
        let segments = vec![
            Segment {
                label: "lesion".into(),
                finding: Code::new("27925004", "SCT", "Nodule"),
                frames: vec![frame("1", 0.0, a.clone()), frame("2", 2.0, a.clone())],
            },
            Segment { label: "cyst".into(), finding: Code::new("441457006", "SCT", "Cyst"), frames: vec![frame("1", 0.0, a)] },
        ];
        let s = Seg {
            sop_instance_uid: "1.2.3.4".into(),
            series_uid: "1.2.3.5".into(),
            series_number: 9004,
            model: "m".into(),
            version: "1".into(),
            frame_of_reference_uid: "1.2.3.6".into(),
            created_ms: 0,
            station: "NODE".into(),
        };
        let o = try_build(&s, &segments, &InMemDicomObject::new_empty(), Kind::Fractional).unwrap();
        assert_eq!(text(&o, tags::NUMBER_OF_FRAMES).as_deref(), Some("3"));
        assert_eq!(text(&o, tags::SEGMENTATION_TYPE).as_deref(), Some("FRACTIONAL"));
        let pixels = o.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(pixels.len(), 48);
        assert_eq!((pixels[5], pixels[10], pixels[0]), (255, 128, 0));
        let per_frame = o.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).unwrap().items().unwrap();
        let segment_of = |i: usize| {
            per_frame[i].get(tags::SEGMENT_IDENTIFICATION_SEQUENCE).unwrap().items().unwrap()[0]
                .get(tags::REFERENCED_SEGMENT_NUMBER)
                .unwrap()
                .to_int::<u16>()
                .unwrap()
        };
        assert_eq!([segment_of(0), segment_of(1), segment_of(2)], [1, 1, 2]);
        let binary = try_build(&s, &segments[1..], &InMemDicomObject::new_empty(), Kind::Binary).unwrap();
        assert_eq!(binary.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().as_ref(), &[0x20, 0x04]);
        assert!(try_build(&s, &[], &InMemDicomObject::new_empty(), Kind::Fractional).is_err());
    }
}
