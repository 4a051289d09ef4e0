//! The Parametric Map of a finding's activation map (PS3.3 A.75, IHE AI Results): the model's
//! values as 32-bit float pixels (Float Pixel Data), exactly as computed, on the grid of the
//! source frames, one frame per source frame (a radiograph, or CT slices), in the source's
//! Frame of Reference with its plane position, orientation and pixel spacing where it has them.
//!
//! ```text
//! Image Type DERIVED\PRIMARY\VOLUME|STATIC\QUANTITY, MONOCHROME2, Bits Allocated 32
//! Shared functional groups: Identity Pixel Value Transformation, Frame VOI LUT (the value
//!   range), Real World Value Mapping (identity, UCUM "1", Quantity = the finding's code),
//!   Parametric Map Frame Type, Frame Anatomy (known body parts), Pixel Measures and Plane
//!   Orientation when every frame has the same
//! Per frame: Frame Content (Stack ID 1, In-Stack Position), Plane Position, Derivation Image
//!   (the source frame, purpose 121322)
//! Shown in grey (MONOCHROME, windowed over the value range), or on request (`Display`) in
//!   the Hot Iron palette over the value range (COLOR_RANGE: the palette, Stored Value Color
//!   Range, an sRGB ICC profile)
//! ```
//!
//! Owns: what the map object says. Must not: do IO, resample or rescale the values.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use ndarray::Array2;

use super::dataset::{ascii, put, put_seq, put_u16, start_object, text, uid, Code};
use super::sr::{ImageRef, PRIVATE_SCHEME};

/// Parametric Map Storage.
pub const SOP_CLASS: &str = uids::PARAMETRIC_MAP_STORAGE;

/// Where a source frame lies in the patient (Image Position/Orientation (Patient), Pixel
/// Spacing, Slice Thickness).
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    pub position: [f64; 3],
    pub orientation: [f64; 6],
    /// Row spacing, column spacing (mm), in the patient.
    pub spacing: [f64; 2],
    pub thickness: Option<f64>,
}

impl Geometry {
    /// The geometry of a single-frame image's header; None unless position, orientation and
    /// spacing are all present and valid (a radiograph has none).
    pub fn of(header: &InMemDicomObject) -> Option<Geometry> {
        let orientation = numbers::<6>(header, tags::IMAGE_ORIENTATION_PATIENT).filter(|o| unit(&o[..3]) && unit(&o[3..]))?;
        let thickness = numbers::<1>(header, tags::SLICE_THICKNESS).map(|t| t[0]).filter(|&t| t > 0.0);
        Some(Geometry { position: numbers::<3>(header, tags::IMAGE_POSITION_PATIENT)?, orientation, spacing: pixel_spacing(header)?, thickness })
    }
}

/// Pixel Spacing (in the patient; never Imager Pixel Spacing, which is at the detector), when
/// valid: some radiographs say 0\0.
pub(super) fn pixel_spacing(header: &InMemDicomObject) -> Option<[f64; 2]> {
    numbers::<2>(header, tags::PIXEL_SPACING).filter(|s| s.iter().all(|&v| v > 0.0))
}

/// What the map says of a frame's place: its geometry, or for a frame without one that is the
/// identity's own image (a radiograph), that image's pixel spacing alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Placement {
    pub(super) position: Option<[f64; 3]>,
    pub(super) orientation: Option<[f64; 6]>,
    pub(super) spacing: Option<[f64; 2]>,
    pub(super) thickness: Option<f64>,
}

impl Placement {
    pub(super) fn of(f: &MapFrame, identity: &InMemDicomObject) -> Placement {
        match &f.geometry {
            Some(g) => Placement { position: Some(g.position), orientation: Some(g.orientation), spacing: Some(g.spacing), thickness: g.thickness },
            None if text(identity, tags::SOP_INSTANCE_UID).as_deref() == Some(f.source.sop_instance_uid.as_str()) => {
                Placement { spacing: pixel_spacing(identity), ..Placement::default() }
            }
            None => Placement::default(),
        }
    }
}

/// `N` finite decimal values of a DS attribute, else None.
fn numbers<const N: usize>(header: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let s = text(header, tag)?;
    let v: Vec<f64> = s.split('\\').map(|p| p.trim().parse::<f64>()).collect::<Result<_, _>>().ok()?;
    let v: [f64; N] = v.try_into().ok()?;
    v.iter().all(|x| x.is_finite()).then_some(v)
}

/// A direction cosine of about unit length.
fn unit(v: &[f64]) -> bool {
    (v.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 0.01
}

/// One frame of the map: the model's values on the grid of one source frame.
#[derive(Debug, Clone)]
pub struct MapFrame {
    pub source: ImageRef,
    pub geometry: Option<Geometry>,
    /// Rows x columns of the source frame.
    pub values: Array2<f32>,
}

/// What the map object is.
#[derive(Debug, Clone)]
pub struct Map {
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub series_number: u32,
    pub instance_number: u32,
    pub model: String,
    pub version: String,
    /// The finding the map is for (Quantity Definition).
    pub finding: Code,
    /// The model's label of the finding (Content Label).
    pub label: String,
    /// How the map was made, for the descriptions: "class activation map" (the model's own)
    /// or "gradient saliency" (the node's, `outputs.saliency`).
    pub method: &'static str,
    /// The source's Frame of Reference, or one the caller made when the source has none.
    pub frame_of_reference_uid: String,
    pub created_ms: i64,
    pub station: String,
}

/// How a map was made, as the descriptions say it.
pub fn map_method(gradient_saliency: bool) -> &'static str {
    if gradient_saliency {
        "gradient saliency"
    } else {
        "class activation map"
    }
}

pub(super) fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The map's Series Description.
pub fn series_description(model: &str, version: &str) -> String {
    ascii(&format!("AI map {model} {version}")).trim_end().chars().take(64).collect()
}

/// How a viewer is told to show the values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Display {
    /// Pixel Presentation MONOCHROME: grey, windowed over the value range (Frame VOI LUT).
    #[default]
    Grey,
    /// Pixel Presentation COLOR_RANGE: the Hot Iron palette spread over the value range (Stored
    /// Value Color Range), with an sRGB ICC profile, as PS3.17 Annex BBBB shows for a float
    /// map. Valid per PS3.3, but dicom3tools' dciodvfy reports two errors on it: it checks the
    /// FD Minimum/Maximum Stored Value Mapped against the enumerated values YES and NO.
    HotIron,
}

/// The Parametric Map data set (with its pixels), the de-identified patient and study of
/// `identity` (the key image's header: patient and study attributes, its modality, body part,
/// Frame of Reference's indicator, lossy compression, and a radiograph's pixel spacing), shown as
/// `display`; or why the frames cannot make one image: none, empty, of different sizes, or
/// larger than 65535 on a side.
pub fn try_build(m: &Map, frames: &[MapFrame], identity: &InMemDicomObject, display: Display) -> Result<InMemDicomObject, String> {
    let first = frames.first().ok_or("a parametric map needs at least one frame")?;
    let (rows, cols) = first.values.dim();
    if rows == 0 || cols == 0 || rows > u16::MAX as usize || cols > u16::MAX as usize {
        return Err(format!("a frame of {rows} x {cols} values cannot be an image"));
    }
    if let Some(f) = frames.iter().find(|f| f.values.dim() != (rows, cols)) {
        return Err(format!("frames of different sizes: {rows} x {cols} and {} x {}", f.values.nrows(), f.values.ncols()));
    }
    let (lo, hi) = value_range(frames);
    let places: Vec<Placement> = frames.iter().map(|f| Placement::of(f, identity)).collect();
    let flavour = if frames.iter().all(|f| f.geometry.is_some()) { "VOLUME" } else { "STATIC" };
    let image_type = ["DERIVED", "PRIMARY", flavour, "QUANTITY"];
    let mut o = start_object(SOP_CLASS, &m.sop_instance_uid, identity, m.created_ms);

    // General Series, Parametric Map Series: the source's modality, as the standard expects.
    put(&mut o, tags::MODALITY, VR::CS, &text(identity, tags::MODALITY).unwrap_or_else(|| "OT".into()));
    put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &m.series_uid);
    put(&mut o, tags::SERIES_NUMBER, VR::IS, &m.series_number.to_string());
    put(&mut o, tags::SERIES_DESCRIPTION, VR::LO, &series_description(&m.model, &m.version));
    if let Some(body) = identity.get(tags::BODY_PART_EXAMINED) {
        o.put(body.clone());
    }
    // Frame of Reference: the indicator only when it is the source's own.
    put(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, &m.frame_of_reference_uid);
    let own = text(identity, tags::FRAME_OF_REFERENCE_UID).as_deref() == Some(m.frame_of_reference_uid.as_str());
    let indicator = if own { text(identity, tags::POSITION_REFERENCE_INDICATOR).unwrap_or_default() } else { String::new() };
    put(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, &indicator);
    // General and Enhanced General Equipment.
    put(&mut o, tags::MANUFACTURER, VR::LO, "triage-node");
    put(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "triage-node");
    put(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, &long_string(&m.station));
    put(&mut o, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
    put(&mut o, tags::STATION_NAME, VR::SH, &ascii(&m.station).chars().take(16).collect::<String>());

    // General Image, Parametric Map Image (with the Content Identification Macro).
    put(&mut o, tags::INSTANCE_NUMBER, VR::IS, &m.instance_number.to_string());
    put_strs(&mut o, tags::IMAGE_TYPE, VR::CS, &image_type);
    put(&mut o, tags::CONTENT_LABEL, VR::CS, &content_label(&m.label));
    put(&mut o, tags::CONTENT_DESCRIPTION, VR::LO, &long_string(&format!("AI {}: {} ({} {})", m.method, m.finding.meaning, m.model, m.version)));
    // A machine's name: the model as family name, its version as given name.
    let pn = |s: &str| ascii(s).replace(['^', '=', '\\'], " ");
    put(&mut o, tags::CONTENT_CREATOR_NAME, VR::PN, &long_string(&format!("{}^{}", pn(&m.model), pn(&m.version))));
    // Whether a model is a cleared product is not known here: never claimed.
    put(&mut o, tags::CONTENT_QUALIFICATION, VR::CS, "RESEARCH");
    put(&mut o, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
    put(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put(&mut o, tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO");
    // Derived from lossy compressed pixels: said so, with the source's ratio and method.
    if text(identity, tags::LOSSY_IMAGE_COMPRESSION).as_deref() == Some("01") {
        put(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01");
        for tag in [tags::LOSSY_IMAGE_COMPRESSION_RATIO, tags::LOSSY_IMAGE_COMPRESSION_METHOD] {
            if let Some(e) = identity.get(tag) {
                o.put(e.clone());
            }
        }
    } else {
        put(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    }
    // General Reference: the source images (also in each frame's Derivation Image).
    put_seq(&mut o, tags::SOURCE_IMAGE_SEQUENCE, frames.iter().map(|f| source_item(&f.source)).collect());

    // Floating Point Image Pixel.
    put_u16(&mut o, tags::SAMPLES_PER_PIXEL, 1);
    put(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_u16(&mut o, tags::ROWS, rows as u16);
    put_u16(&mut o, tags::COLUMNS, cols as u16);
    put_u16(&mut o, tags::BITS_ALLOCATED, 32);

    // Display: grey through the Frame VOI LUT, or the Hot Iron palette over the value range.
    match display {
        Display::Grey => put(&mut o, tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME"),
        Display::HotIron => {
            put(&mut o, tags::PIXEL_PRESENTATION, VR::CS, "COLOR_RANGE");
            palette(&mut o);
            o.put(DataElement::new(tags::ICC_PROFILE, VR::OB, PrimitiveValue::U8(srgb_icc().into())));
            put(&mut o, tags::COLOR_SPACE, VR::CS, "SRGB");
        }
    }

    // Multi-frame Functional Groups.
    put(&mut o, tags::NUMBER_OF_FRAMES, VR::IS, &frames.len().to_string());
    let mut shared = InMemDicomObject::new_empty();
    let mut per_frame: Vec<InMemDicomObject> = frames.iter().map(|_| InMemDicomObject::new_empty()).collect();
    shared_or_per_frame(&mut shared, &mut per_frame, &places, tags::PIXEL_MEASURES_SEQUENCE, same_measures, pixel_measures);
    shared_or_per_frame(&mut shared, &mut per_frame, &places, tags::PLANE_ORIENTATION_SEQUENCE, same_orientation, plane_orientation);
    let mut transform = InMemDicomObject::new_empty();
    put(&mut transform, tags::RESCALE_INTERCEPT, VR::DS, "0");
    put(&mut transform, tags::RESCALE_SLOPE, VR::DS, "1");
    put(&mut transform, tags::RESCALE_TYPE, VR::LO, "US");
    put_seq(&mut shared, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, vec![transform]);
    let mut voi = InMemDicomObject::new_empty();
    put(&mut voi, tags::WINDOW_CENTER, VR::DS, &ds((lo + hi) / 2.0));
    put(&mut voi, tags::WINDOW_WIDTH, VR::DS, &ds(hi - lo));
    put(&mut voi, tags::VOILUT_FUNCTION, VR::CS, "LINEAR");
    put_seq(&mut shared, tags::FRAME_VOILUT_SEQUENCE, vec![voi]);
    put_seq(&mut shared, tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE, vec![real_world(m, lo, hi)]);
    let mut frame_type = InMemDicomObject::new_empty();
    put_strs(&mut frame_type, tags::FRAME_TYPE, VR::CS, &image_type);
    put_seq(&mut shared, tags::PARAMETRIC_MAP_FRAME_TYPE_SEQUENCE, vec![frame_type]);
    if display == Display::HotIron {
        let mut range = InMemDicomObject::new_empty();
        range.put(DataElement::new(tags::MINIMUM_STORED_VALUE_MAPPED, VR::FD, PrimitiveValue::from(lo)));
        range.put(DataElement::new(tags::MAXIMUM_STORED_VALUE_MAPPED, VR::FD, PrimitiveValue::from(hi)));
        put_seq(&mut shared, tags::STORED_VALUE_COLOR_RANGE_SEQUENCE, vec![range]);
    }
    match frame_anatomy(identity) {
        Some(anatomy) => put_seq(&mut shared, tags::FRAME_ANATOMY_SEQUENCE, vec![anatomy]),
        // General Series: laterality unknown (Type 2C) where no Frame Laterality says it.
        None => {
            o.put(DataElement::new(tags::LATERALITY, VR::CS, PrimitiveValue::Empty));
        }
    }
    let stack = in_stack_positions(&places);
    for (((item, f), place), position) in per_frame.iter_mut().zip(frames).zip(&places).zip(stack) {
        put_seq(item, tags::FRAME_CONTENT_SEQUENCE, vec![frame_content(1, position)]);
        let mut plane = InMemDicomObject::new_empty();
        if let Some(p) = place.position {
            put_strs(&mut plane, tags::IMAGE_POSITION_PATIENT, VR::DS, &p.map(ds));
        }
        put_seq(item, tags::PLANE_POSITION_SEQUENCE, vec![plane]);
        let description = format!("{} of AI model {} {} for {}", capitalised(m.method), m.model, m.version, m.finding.meaning);
        put_seq(item, tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation(&description, derivation_code(), &f.source)]);
    }
    put_seq(&mut o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]);
    put_seq(&mut o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame);

    // Multi-frame Dimension: Stack ID, In-Stack Position Number.
    let organization = uid("", &[&m.sop_instance_uid, "dimension organization"]);
    let mut org = InMemDicomObject::new_empty();
    put(&mut org, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organization);
    put_seq(&mut o, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org]);
    let index = |pointer: Tag, label: &str| {
        let mut i = InMemDicomObject::new_empty();
        i.put(DataElement::new(tags::DIMENSION_INDEX_POINTER, VR::AT, PrimitiveValue::Tags([pointer][..].into())));
        i.put(DataElement::new(tags::FUNCTIONAL_GROUP_POINTER, VR::AT, PrimitiveValue::Tags([tags::FRAME_CONTENT_SEQUENCE][..].into())));
        put(&mut i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organization);
        put(&mut i, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        i
    };
    put_seq(&mut o, tags::DIMENSION_INDEX_SEQUENCE, vec![index(tags::STACK_ID, "Stack ID"), index(tags::IN_STACK_POSITION_NUMBER, "In-Stack Position Number")]);
    // Acquisition Context: nothing to say.
    put_seq(&mut o, tags::ACQUISITION_CONTEXT_SEQUENCE, vec![]);
    // Common Instance Reference: the sources, by series (all in this study).
    put_seq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, referenced_series(frames));
    // SOP Common: the private scheme of the derivation code.
    let mut scheme = InMemDicomObject::new_empty();
    put(&mut scheme, tags::CODING_SCHEME_DESIGNATOR, VR::SH, PRIVATE_SCHEME);
    put(&mut scheme, tags::CODING_SCHEME_NAME, VR::ST, "triage-node AI triage codes");
    put(&mut scheme, tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION, VR::ST, "triage-node (see its DICOM conformance statement)");
    put_seq(&mut o, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, vec![scheme]);

    let pixels: Vec<f32> = frames.iter().flat_map(|f| f.values.iter().copied()).collect();
    o.put(DataElement::new(tags::FLOAT_PIXEL_DATA, VR::OF, PrimitiveValue::F32(pixels.into())));
    Ok(o)
}

/// The range the palette, the window and the mapping cover: 0..1 when every value is in it
/// (probabilities), else the values' own minimum and maximum. Never empty.
fn value_range(frames: &[MapFrame]) -> (f64, f64) {
    let (lo, hi) = frames.iter().flat_map(|f| f.values.iter()).filter(|v| v.is_finite()).fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if lo > hi || (lo >= 0.0 && hi <= 1.0) {
        return (0.0, 1.0);
    }
    let (lo, hi) = (lo as f64, hi as f64);
    if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + 1.0)
    }
}

/// One item for every frame, or one shared when every frame's `same`.
pub(super) fn shared_or_per_frame(
    shared: &mut InMemDicomObject,
    per_frame: &mut [InMemDicomObject],
    places: &[Placement],
    tag: Tag,
    same: impl Fn(&Placement, &Placement) -> bool,
    item: impl Fn(&Placement) -> InMemDicomObject,
) {
    if places.iter().all(|p| same(p, &places[0])) {
        put_seq(shared, tag, vec![item(&places[0])]);
    } else {
        for (group, p) in per_frame.iter_mut().zip(places) {
            put_seq(group, tag, vec![item(p)]);
        }
    }
}

/// In-Stack Position Numbers (1-based): frames of one orientation are numbered along its
/// normal, others in the order given.
/// A frame's Pixel Measures item: its spacing and slice thickness, where known.
pub(super) fn pixel_measures(g: &Placement) -> InMemDicomObject {
    let mut i = InMemDicomObject::new_empty();
    if let Some(s) = g.spacing {
        put_strs(&mut i, tags::PIXEL_SPACING, VR::DS, &s.map(ds));
    }
    if let Some(t) = g.thickness {
        put(&mut i, tags::SLICE_THICKNESS, VR::DS, &ds(t));
    }
    i
}

pub(super) fn same_measures(a: &Placement, b: &Placement) -> bool {
    a.spacing == b.spacing && a.thickness == b.thickness
}

/// A frame's Plane Orientation item, where known.
pub(super) fn plane_orientation(g: &Placement) -> InMemDicomObject {
    let mut i = InMemDicomObject::new_empty();
    if let Some(v) = g.orientation {
        put_strs(&mut i, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &v.map(ds));
    }
    i
}

pub(super) fn same_orientation(a: &Placement, b: &Placement) -> bool {
    a.orientation == b.orientation
}

/// A frame's Frame Content item: Dimension Index Values (stack, position), Stack ID and In-Stack
/// Position Number.
pub(super) fn frame_content(stack: u16, position: u32) -> InMemDicomObject {
    let mut content = InMemDicomObject::new_empty();
    content.put(DataElement::new(tags::DIMENSION_INDEX_VALUES, VR::UL, PrimitiveValue::U32([u32::from(stack), position].into())));
    put(&mut content, tags::STACK_ID, VR::SH, &stack.to_string());
    content.put(DataElement::new(tags::IN_STACK_POSITION_NUMBER, VR::UL, PrimitiveValue::from(position)));
    content
}

/// A frame's Derivation Image item: how it was derived (`code`) from its source image.
pub(super) fn derivation(description: &str, code: Code, source: &ImageRef) -> InMemDicomObject {
    let mut d = InMemDicomObject::new_empty();
    put(&mut d, tags::DERIVATION_DESCRIPTION, VR::ST, &ascii(description));
    put_seq(&mut d, tags::DERIVATION_CODE_SEQUENCE, vec![code.item()]);
    put_seq(&mut d, tags::SOURCE_IMAGE_SEQUENCE, vec![source_item(source)]);
    d
}

pub(super) fn in_stack_positions(places: &[Placement]) -> Vec<u32> {
    let orientation = places[0].orientation;
    let along: Option<Vec<f64>> = orientation.and_then(|o| {
        let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
        places
            .iter()
            .map(|p| match (p.orientation == orientation, p.position) {
                (true, Some(x)) => Some(x[0] * n[0] + x[1] * n[1] + x[2] * n[2]),
                _ => None,
            })
            .collect()
    });
    let mut order: Vec<usize> = (0..places.len()).collect();
    if let Some(d) = along {
        order.sort_by(|&a, &b| d[a].total_cmp(&d[b]));
    }
    let mut positions = vec![0u32; places.len()];
    for (rank, i) in order.into_iter().enumerate() {
        positions[i] = rank as u32 + 1;
    }
    positions
}

/// The Real World Value Mapping item: stored values are the values (identity), unitless.
fn real_world(m: &Map, low: f64, high: f64) -> InMemDicomObject {
    let mut i = InMemDicomObject::new_empty();
    i.put(DataElement::new(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_FIRST_VALUE_MAPPED, VR::FD, PrimitiveValue::from(low)));
    i.put(DataElement::new(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_LAST_VALUE_MAPPED, VR::FD, PrimitiveValue::from(high)));
    i.put(DataElement::new(tags::REAL_WORLD_VALUE_INTERCEPT, VR::FD, PrimitiveValue::from(0.0f64)));
    i.put(DataElement::new(tags::REAL_WORLD_VALUE_SLOPE, VR::FD, PrimitiveValue::from(1.0f64)));
    put(&mut i, tags::LUT_EXPLANATION, VR::LO, &long_string(&format!("AI activation: {}", m.finding.meaning)));
    let label: String = ascii(&m.label).trim().chars().take(16).collect();
    put(&mut i, tags::LUT_LABEL, VR::SH, if label.trim().is_empty() { "activation" } else { label.trim() });
    put_seq(&mut i, tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![Code::new("1", "UCUM", "no units").item()]);
    // Quantity Definition: a CODE content item, (246205007, SCT, "Quantity") = the finding.
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::VALUE_TYPE, VR::CS, "CODE");
    put_seq(&mut item, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![Code::new("246205007", "SCT", "Quantity").item()]);
    put_seq(&mut item, tags::CONCEPT_CODE_SEQUENCE, vec![m.finding.item()]);
    put_seq(&mut i, tags::QUANTITY_DEFINITION_SEQUENCE, vec![item]);
    i
}

/// The derivation: a class activation map of an AI model (no standard code names it).
pub fn derivation_code() -> Code {
    Code::new("ACTIVATIONMAP", PRIVATE_SCHEME, "AI model activation map")
}

/// A source image reference with its purpose (CID 7222) and the same pixel grid.
pub(super) fn source_item(s: &ImageRef) -> InMemDicomObject {
    let mut i = InMemDicomObject::new_empty();
    put(&mut i, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &s.sop_class_uid);
    put(&mut i, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &s.sop_instance_uid);
    if let Some(f) = s.frame {
        put(&mut i, tags::REFERENCED_FRAME_NUMBER, VR::IS, &f.to_string());
    }
    put_seq(&mut i, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![Code::new("121322", "DCM", "Source image for image processing operation").item()]);
    put(&mut i, tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");
    i
}

/// Common Instance Reference items: each source series with its instances (each once).
pub(super) fn referenced_series(frames: &[MapFrame]) -> Vec<InMemDicomObject> {
    let mut series: Vec<(&str, Vec<&ImageRef>)> = Vec::new();
    for f in frames {
        let s = &f.source;
        match series.iter_mut().find(|(uid, _)| *uid == s.series_instance_uid) {
            Some((_, refs)) if refs.iter().any(|r| r.sop_instance_uid == s.sop_instance_uid) => {}
            Some((_, refs)) => refs.push(s),
            None => series.push((&s.series_instance_uid, vec![s])),
        }
    }
    series
        .into_iter()
        .map(|(uid, refs)| {
            let mut item = InMemDicomObject::new_empty();
            put(&mut item, tags::SERIES_INSTANCE_UID, VR::UI, uid);
            let instances = refs
                .into_iter()
                .map(|r| {
                    let mut i = InMemDicomObject::new_empty();
                    put(&mut i, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &r.sop_class_uid);
                    put(&mut i, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &r.sop_instance_uid);
                    i
                })
                .collect();
            put_seq(&mut item, tags::REFERENCED_INSTANCE_SEQUENCE, instances);
            item
        })
        .collect()
}

/// Frame Anatomy from the source's Body Part Examined (PS3.16 Annex L), for the body parts
/// the node's models read; laterality from the source, else unpaired.
fn frame_anatomy(identity: &InMemDicomObject) -> Option<InMemDicomObject> {
    let region = match text(identity, tags::BODY_PART_EXAMINED)?.to_uppercase().as_str() {
        "CHEST" | "THORAX" => Code::new("51185008", "SCT", "Chest"),
        "HEAD" => Code::new("69536005", "SCT", "Head"),
        "BRAIN" => Code::new("12738006", "SCT", "Brain"),
        "NECK" => Code::new("45048000", "SCT", "Neck"),
        "ABDOMEN" => Code::new("818981001", "SCT", "Abdomen"),
        "PELVIS" => Code::new("816092008", "SCT", "Pelvis"),
        _ => return None,
    };
    let laterality = [tags::IMAGE_LATERALITY, tags::LATERALITY]
        .into_iter()
        .find_map(|t| text(identity, t).filter(|l| ["R", "L", "B"].contains(&l.as_str())))
        .unwrap_or_else(|| "U".into());
    let mut i = InMemDicomObject::new_empty();
    put(&mut i, tags::FRAME_LATERALITY, VR::CS, &laterality);
    put_seq(&mut i, tags::ANATOMIC_REGION_SEQUENCE, vec![region.item()]);
    Some(i)
}

/// The well-known Hot Iron palette (PS3.6 Annex B, UID 1.2.840.10008.1.5.1): 256 8-bit entries
/// per channel, black through red and yellow to white.
pub fn hot_iron() -> [[u8; 256]; 3] {
    let top = |i: usize, v: usize| if i == 255 { 255 } else { v as u8 };
    [
        std::array::from_fn(|i| (2 * i).min(255) as u8),
        std::array::from_fn(|i| top(i, (2 * i).saturating_sub(256))),
        std::array::from_fn(|i| top(i, (4 * i).saturating_sub(764))),
    ]
}

/// The Palette Color Lookup Table module: Hot Iron's colours as 16-bit entries (the module's
/// descriptors take 16 bits). Not the palette's UID: the Parametric Map Image module takes the
/// UID (with no data) or the module, not both.
fn palette(o: &mut InMemDicomObject) {
    let descriptors =
        [tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR];
    let data = [tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA];
    for ((descriptor, data), lut) in descriptors.into_iter().zip(data).zip(hot_iron()) {
        o.put(DataElement::new(descriptor, VR::US, PrimitiveValue::U16([256u16, 0, 16][..].into())));
        let entries: Vec<u16> = lut.iter().map(|&v| u16::from(v) * 257).collect();
        o.put(DataElement::new(data, VR::OW, PrimitiveValue::U16(entries.into())));
    }
}

/// A small ICC v2.4 display profile of sRGB (IEC 61966-2.1 primaries adapted to D50, the sRGB
/// transfer curve sampled at 1024 points), for the palette's colours.
pub fn srgb_icc() -> Vec<u8> {
    fn s15(v: f64) -> [u8; 4] {
        ((v * 65536.0).round() as i32).to_be_bytes()
    }
    fn xyz(v: [f64; 3]) -> Vec<u8> {
        let mut t = b"XYZ \0\0\0\0".to_vec();
        v.iter().for_each(|&c| t.extend(s15(c)));
        t
    }
    let mut desc = b"desc\0\0\0\0".to_vec();
    let name = b"sRGB (triage-node)\0";
    desc.extend((name.len() as u32).to_be_bytes());
    desc.extend(name);
    desc.extend([0u8; 4 + 4 + 2 + 1 + 67]);
    let mut cprt = b"text\0\0\0\0".to_vec();
    cprt.extend(b"No copyright, use freely\0");
    let mut curve = b"curv\0\0\0\0".to_vec();
    curve.extend(1024u32.to_be_bytes());
    for k in 0..1024 {
        let x = k as f64 / 1023.0;
        let y = if x <= 0.04045 { x / 12.92 } else { ((x + 0.055) / 1.055).powf(2.4) };
        curve.extend(((y * 65535.0).round() as u16).to_be_bytes());
    }
    // (signature, data); the three curves share one block.
    let blocks: [(&[u8; 4], Vec<u8>); 7] = [
        (b"desc", desc),
        (b"cprt", cprt),
        (b"wtpt", xyz([0.9505, 1.0, 1.089])),
        (b"rXYZ", xyz([0.436_074_7, 0.222_504_5, 0.013_932_2])),
        (b"gXYZ", xyz([0.385_064_9, 0.716_878_6, 0.097_104_5])),
        (b"bXYZ", xyz([0.143_080_4, 0.060_616_9, 0.714_173_3])),
        (b"rTRC", curve),
    ];
    let count = blocks.len() + 2;
    let mut table = Vec::new();
    let mut body = Vec::new();
    let start = 128 + 4 + 12 * count;
    let mut curve_at = (0u32, 0u32);
    for (sig, data) in &blocks {
        let at = (start + body.len()) as u32;
        table.extend(*sig);
        table.extend(at.to_be_bytes());
        table.extend((data.len() as u32).to_be_bytes());
        if *sig == b"rTRC" {
            curve_at = (at, data.len() as u32);
        }
        body.extend(data);
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    for sig in [b"gTRC", b"bTRC"] {
        table.extend(sig);
        table.extend(curve_at.0.to_be_bytes());
        table.extend(curve_at.1.to_be_bytes());
    }
    let size = (start + body.len()) as u32;
    let mut header = Vec::with_capacity(128);
    header.extend(size.to_be_bytes());
    header.extend([0u8; 4]); // preferred CMM
    header.extend(0x0240_0000u32.to_be_bytes());
    header.extend(b"mntrRGB XYZ ");
    for v in [2024u16, 1, 1, 0, 0, 0] {
        header.extend(v.to_be_bytes());
    }
    header.extend(b"acsp");
    header.extend([0u8; 4 + 4 + 4 + 4 + 8 + 4]); // platform, flags, manufacturer, model, attributes, intent
    for v in [0.9642, 1.0, 0.8249] {
        header.extend(s15(v)); // the PCS illuminant, D50
    }
    header.resize(128, 0);
    let mut icc = header;
    icc.extend((count as u32).to_be_bytes());
    icc.extend(table);
    icc.extend(body);
    icc
}

pub(super) fn put_strs<S: AsRef<str>>(o: &mut InMemDicomObject, tag: Tag, vr: VR, values: &[S]) {
    let values: Vec<String> = values.iter().map(|s| s.as_ref().to_string()).collect();
    o.put(DataElement::new(tag, vr, PrimitiveValue::Strs(values.into())));
}

/// A Content Label (CS): upper-case letters, digits and underscores, at most 16.
fn content_label(label: &str) -> String {
    let s: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).take(16).collect();
    if s.trim_matches('_').is_empty() {
        "AI_MAP".into()
    } else {
        s
    }
}

/// An LO value: printable ASCII, at most 64 characters.
pub(super) fn long_string(s: &str) -> String {
    ascii(s).chars().take(64).collect::<String>().trim_end().to_string()
}

/// A DS value (at most 16 characters): the closest of the plain and exponent forms that fit.
pub(super) fn ds(v: f64) -> String {
    let plain = format!("{v}");
    if plain.len() <= 16 {
        return plain;
    }
    let fixed = (0..16).map(|p| format!("{v:.p$}")).map(|s| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s });
    let exponent = (0..12).map(|p| format!("{v:.p$e}"));
    let error = |s: &String| s.parse::<f64>().map_or(f64::INFINITY, |x| (x - v).abs());
    fixed.chain(exponent).filter(|s| s.len() <= 16).min_by(|a, b| error(a).total_cmp(&error(b))).unwrap_or_else(|| "0".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grey map of frames that make one image.
    fn build(m: &Map, frames: &[MapFrame], identity: &InMemDicomObject) -> InMemDicomObject {
        try_build(m, frames, identity, Display::Grey).expect("frames of one image")
    }
    use std::path::PathBuf;

    /// A real header of the test corpus (scripts/setup-test-env.sh), or None (skipped) where
    /// it is absent; under CI=true its absence fails.
    fn corpus(name: &str) -> Option<InMemDicomObject> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".testdata/ts").join(name);
        if !path.exists() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{} is missing", path.display());
            eprintln!("skipped: {} is missing", path.display());
            return None;
        }
        Some(dicom_object::OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(&path).unwrap().into_inner())
    }

    fn source(h: &InMemDicomObject, frame: Option<u32>) -> ImageRef {
        ImageRef {
            sop_class_uid: text(h, tags::SOP_CLASS_UID).unwrap(),
            sop_instance_uid: text(h, tags::SOP_INSTANCE_UID).unwrap(),
            series_instance_uid: text(h, tags::SERIES_INSTANCE_UID).unwrap(),
            frame,
        }
    }

    fn map(h: &InMemDicomObject) -> Map {
        Map {
            method: "class activation map",
            sop_instance_uid: "2.25.1001".into(),
            series_uid: "2.25.1002".into(),
            series_number: 9902,
            instance_number: 1,
            model: "demo-cxr".into(),
            version: "1.2".into(),
            finding: Code::new("27925004", "SCT", "Nodule"),
            label: "nodule".into(),
            frame_of_reference_uid: text(h, tags::FRAME_OF_REFERENCE_UID).unwrap_or_else(|| "2.25.1003".into()),
            created_ms: 1_796_135_405_250,
            station: "TRIAGE".into(),
        }
    }

    /// Values that a lossy path would change: a ramp with fine steps, a peak above 1.
    fn values(rows: usize, cols: usize, k: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(r, c)| (r * cols + c) as f32 / (rows * cols) as f32 * 1.5 - 0.25 + k as f32 * 1e-4)
    }

    /// A CT slice `k` slices along the normal from `h`.
    fn slice(h: &InMemDicomObject, k: usize) -> MapFrame {
        let mut g = Geometry::of(h).unwrap();
        g.position[2] += 5.0 * k as f64;
        let (rows, cols) = (text(h, tags::ROWS).unwrap().parse().unwrap(), text(h, tags::COLUMNS).unwrap().parse().unwrap());
        let mut s = source(h, None);
        s.sop_instance_uid = format!("{}.{k}", s.sop_instance_uid);
        MapFrame { source: s, geometry: Some(g), values: values(rows, cols, k) }
    }

    fn items(o: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
        o.get(tag).and_then(|e| e.items()).unwrap_or_else(|| panic!("no sequence {tag}"))
    }

    fn strs(o: &InMemDicomObject, tag: Tag) -> Vec<String> {
        o.get(tag).unwrap_or_else(|| panic!("no {tag}")).to_multi_str().unwrap().iter().map(|s| s.trim().to_string()).collect()
    }

    /// Encoded as the outbox would write it, and read back by the parser.
    fn round_trip(o: &InMemDicomObject, m: &Map) -> InMemDicomObject {
        let bytes = super::super::dataset::part10(o, SOP_CLASS, &m.sop_instance_uid).unwrap();
        if let Ok(dir) = std::env::var("TRIAGE_PM_OUT") {
            std::fs::write(PathBuf::from(dir).join(format!("{}.dcm", m.sop_instance_uid)), &bytes).unwrap();
        }
        dicom_object::from_reader(&bytes[128..]).unwrap().into_inner()
    }

    #[test]
    fn geometry_comes_from_the_header_where_present_and_valid() {
        let mut h = InMemDicomObject::new_empty();
        assert_eq!(Geometry::of(&h), None);
        put(&mut h, tags::IMAGE_POSITION_PATIENT, VR::DS, "-122.500\\-112.400\\47.000 ");
        put(&mut h, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0");
        put(&mut h, tags::PIXEL_SPACING, VR::DS, "0.5\\0.25");
        put(&mut h, tags::SLICE_THICKNESS, VR::DS, "5.000000");
        let g = Geometry::of(&h).unwrap();
        assert_eq!(g, Geometry { position: [-122.5, -112.4, 47.0], orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], spacing: [0.5, 0.25], thickness: Some(5.0) });
        put(&mut h, tags::SLICE_THICKNESS, VR::DS, "abc");
        assert_eq!(Geometry::of(&h).unwrap().thickness, None);
        // Zero spacing (as some radiographs carry), wrong counts, non-unit cosines: none.
        for (tag, bad) in [(tags::PIXEL_SPACING, "0.000\\0.000"), (tags::IMAGE_POSITION_PATIENT, "1\\2"), (tags::IMAGE_ORIENTATION_PATIENT, "0\\0\\0\\0\\1\\0")]
        {
            let mut b = h.clone();
            put(&mut b, tag, VR::DS, bad);
            assert_eq!(Geometry::of(&b), None, "{bad}");
        }
        h.remove_element(tags::IMAGE_POSITION_PATIENT);
        assert_eq!(Geometry::of(&h), None);
    }

    #[test]
    fn real_ct_and_cr_headers_give_their_geometry() {
        let (Some(ct), Some(cr)) = (corpus("ct_explicit_le.dcm"), corpus("cr_explicit_le.dcm")) else { return };
        let g = Geometry::of(&ct).unwrap();
        assert_eq!(
            g,
            Geometry { position: [-122.5, -112.4, 47.0], orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], spacing: [0.478516, 0.478516], thickness: Some(5.0) }
        );
        // A radiograph has no position; the chest CR even says Pixel Spacing 0.000\0.000.
        assert_eq!(Geometry::of(&cr), None);
        assert_eq!(pixel_spacing(&cr), None);
    }

    #[test]
    fn a_ct_map_of_three_slices_carries_geometry_references_and_exact_values() {
        let Some(ct) = corpus("ct_explicit_le.dcm") else { return };
        let mut m = map(&ct);
        m.sop_instance_uid = "2.25.1001.3".into();
        // Given out of spatial order: In-Stack Position Numbers follow the position.
        let frames = vec![slice(&ct, 1), slice(&ct, 0), slice(&ct, 2)];
        let o = round_trip(&build(&m, &frames, &ct), &m);
        assert_eq!(text(&o, tags::SOP_CLASS_UID).as_deref(), Some("1.2.840.10008.5.1.4.1.1.30"));
        assert_eq!(text(&o, tags::MODALITY).as_deref(), Some("CT"));
        assert_eq!(text(&o, tags::SERIES_DESCRIPTION).as_deref(), Some("AI map demo-cxr 1.2"));
        assert_eq!(text(&o, tags::NUMBER_OF_FRAMES).as_deref(), Some("3"));
        assert_eq!(strs(&o, tags::IMAGE_TYPE), ["DERIVED", "PRIMARY", "VOLUME", "QUANTITY"]);
        assert_eq!(text(&o, tags::FRAME_OF_REFERENCE_UID).as_deref(), Some("2.25.1003"));
        // The source has no Frame of Reference: its Position Reference Indicator is not ours.
        assert_eq!(text(&o, tags::POSITION_REFERENCE_INDICATOR), None);
        assert_eq!(o.get(tags::BITS_ALLOCATED).unwrap().to_int::<u16>().unwrap(), 32);
        for absent in [tags::BITS_STORED, tags::HIGH_BIT, tags::PIXEL_REPRESENTATION, tags::PIXEL_DATA, tags::PLANAR_CONFIGURATION] {
            assert!(o.get(absent).is_none(), "{absent}");
        }
        let stored = o.get(tags::FLOAT_PIXEL_DATA).unwrap().to_multi_float32().unwrap();
        let written: Vec<f32> = frames.iter().flat_map(|f| f.values.iter().copied()).collect();
        assert_eq!(stored, written);

        let shared = &items(&o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)[0];
        let measures = &items(shared, tags::PIXEL_MEASURES_SEQUENCE)[0];
        assert_eq!(strs(measures, tags::PIXEL_SPACING), ["0.478516", "0.478516"]);
        assert_eq!(strs(&items(shared, tags::PLANE_ORIENTATION_SEQUENCE)[0], tags::IMAGE_ORIENTATION_PATIENT), ["1", "0", "0", "0", "1", "0"]);
        let rwvm = &items(shared, tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE)[0];
        assert_eq!(text(&items(rwvm, tags::MEASUREMENT_UNITS_CODE_SEQUENCE)[0], tags::CODE_VALUE).as_deref(), Some("1"));
        let quantity = &items(rwvm, tags::QUANTITY_DEFINITION_SEQUENCE)[0];
        assert_eq!(text(&items(quantity, tags::CONCEPT_CODE_SEQUENCE)[0], tags::CODE_VALUE).as_deref(), Some("27925004"));
        // The values are outside 0..1: the range is theirs.
        let first = rwvm.get(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_FIRST_VALUE_MAPPED).unwrap().to_float64().unwrap();
        assert_eq!(first, -0.25);
        let last = rwvm.get(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_LAST_VALUE_MAPPED).unwrap().to_float64().unwrap();
        assert_eq!(last, written.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64);
        let voi = &items(shared, tags::FRAME_VOILUT_SEQUENCE)[0];
        let number = |t| text(voi, t).unwrap().parse::<f64>().unwrap();
        let (center, width) = (number(tags::WINDOW_CENTER), number(tags::WINDOW_WIDTH));
        assert!((center - width / 2.0 - first).abs() < 1e-9 && (center + width / 2.0 - last).abs() < 1e-9, "{center} {width}");

        let per_frame = items(&o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
        assert_eq!(per_frame.len(), 3);
        let z: Vec<String> = per_frame.iter().map(|f| strs(&items(f, tags::PLANE_POSITION_SEQUENCE)[0], tags::IMAGE_POSITION_PATIENT)[2].clone()).collect();
        assert_eq!(z, ["52", "47", "57"]);
        let stack: Vec<u32> =
            per_frame.iter().map(|f| items(f, tags::FRAME_CONTENT_SEQUENCE)[0].get(tags::IN_STACK_POSITION_NUMBER).unwrap().to_int().unwrap()).collect();
        assert_eq!(stack, [2, 1, 3]);
        let derivation = &items(&per_frame[1], tags::DERIVATION_IMAGE_SEQUENCE)[0];
        let src = &items(derivation, tags::SOURCE_IMAGE_SEQUENCE)[0];
        assert_eq!(text(src, tags::REFERENCED_SOP_INSTANCE_UID), Some(frames[1].source.sop_instance_uid.clone()));
        assert_eq!(text(&items(src, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE)[0], tags::CODE_VALUE).as_deref(), Some("121322"));
        let series = items(&o, tags::REFERENCED_SERIES_SEQUENCE);
        assert_eq!(series.len(), 1);
        assert_eq!(items(&series[0], tags::REFERENCED_INSTANCE_SEQUENCE).len(), 3);

        // One slice: the same, one frame.
        m.sop_instance_uid = "2.25.1001.1".into();
        let one = [slice(&ct, 0)];
        let o = round_trip(&build(&m, &one, &ct), &m);
        assert_eq!(text(&o, tags::NUMBER_OF_FRAMES).as_deref(), Some("1"));
        assert_eq!(o.get(tags::FLOAT_PIXEL_DATA).unwrap().to_multi_float32().unwrap(), one[0].values.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn a_radiograph_map_has_one_frame_without_geometry() {
        let Some(cr) = corpus("cr_explicit_le.dcm") else { return };
        let m = Map { sop_instance_uid: "2.25.1001.2".into(), ..map(&cr) };
        let values = Array2::from_shape_fn((1955, 1841), |(r, c)| ((r + c) % 1000) as f32 / 999.0);
        let frames = [MapFrame { source: source(&cr, None), geometry: Geometry::of(&cr), values: values.clone() }];
        assert!(frames[0].geometry.is_none());
        let o = round_trip(&build(&m, &frames, &cr), &m);
        assert_eq!(text(&o, tags::MODALITY).as_deref(), Some("CR"));
        assert_eq!((text(&o, tags::ROWS).as_deref(), text(&o, tags::COLUMNS).as_deref()), (Some("1955"), Some("1841")));
        assert_eq!(strs(&o, tags::IMAGE_TYPE)[2], "STATIC");
        assert_eq!(text(&o, tags::CONTENT_LABEL).as_deref(), Some("NODULE"));
        assert_eq!(text(&o, tags::CONTENT_QUALIFICATION).as_deref(), Some("RESEARCH"));
        assert_eq!(text(&o, tags::PIXEL_PRESENTATION).as_deref(), Some("MONOCHROME"));
        assert!(o.get(tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA).is_none() && o.get(tags::ICC_PROFILE).is_none());
        assert_eq!(text(&o, tags::DEVICE_SERIAL_NUMBER).as_deref(), Some("TRIAGE"));
        assert_eq!(text(&o, tags::SOFTWARE_VERSIONS).as_deref(), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(o.get(tags::FLOAT_PIXEL_DATA).unwrap().to_multi_float32().unwrap(), values.iter().copied().collect::<Vec<_>>());
        let shared = &items(&o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)[0];
        // Values in 0..1: the whole probability range is shown.
        let voi = &items(shared, tags::FRAME_VOILUT_SEQUENCE)[0];
        assert_eq!((text(voi, tags::WINDOW_CENTER).as_deref(), text(voi, tags::WINDOW_WIDTH).as_deref()), (Some("0.5"), Some("1")));
        let anatomy = &items(shared, tags::FRAME_ANATOMY_SEQUENCE)[0];
        assert_eq!(text(anatomy, tags::FRAME_LATERALITY).as_deref(), Some("U"));
        assert_eq!(text(&items(anatomy, tags::ANATOMIC_REGION_SEQUENCE)[0], tags::CODE_VALUE).as_deref(), Some("51185008"));
        // The groups are there, with nothing the source did not say.
        assert!(items(shared, tags::PIXEL_MEASURES_SEQUENCE)[0].get(tags::PIXEL_SPACING).is_none());
        let frame = &items(&o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)[0];
        assert!(items(frame, tags::PLANE_POSITION_SEQUENCE)[0].get(tags::IMAGE_POSITION_PATIENT).is_none());
        assert_eq!(text(&items(&o, tags::SOURCE_IMAGE_SEQUENCE)[0], tags::REFERENCED_SOP_INSTANCE_UID), Some(frames[0].source.sop_instance_uid.clone()));
    }

    #[test]
    fn a_single_ct_slice_from_a_synthetic_header() {
        let mut h = InMemDicomObject::new_empty();
        for (tag, vr, v) in [
            (tags::SOP_CLASS_UID, VR::UI, uids::ENHANCED_CT_IMAGE_STORAGE),
            (tags::SOP_INSTANCE_UID, VR::UI, "2.25.7"),
            (tags::SERIES_INSTANCE_UID, VR::UI, "2.25.8"),
            (tags::STUDY_INSTANCE_UID, VR::UI, "2.25.9"),
            (tags::FRAME_OF_REFERENCE_UID, VR::UI, "2.25.10"),
            (tags::POSITION_REFERENCE_INDICATOR, VR::LO, "OM"),
            (tags::MODALITY, VR::CS, "CT"),
            (tags::IMAGE_POSITION_PATIENT, VR::DS, "0\\0\\0"),
            (tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\0.7071068\\-0.7071068"),
            (tags::PIXEL_SPACING, VR::DS, "0.7\\0.7"),
            (tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01"),
            (tags::LOSSY_IMAGE_COMPRESSION_RATIO, VR::DS, "8"),
        ] {
            put(&mut h, tag, vr, v);
        }
        let m = Map { sop_instance_uid: "2.25.1001.4".into(), ..map(&h) };
        let frame = MapFrame { source: source(&h, Some(3)), geometry: Geometry::of(&h), values: Array2::from_elem((4, 6), 0.5) };
        let o = round_trip(&build(&m, &[frame], &h), &m);
        assert_eq!(text(&o, tags::FRAME_OF_REFERENCE_UID).as_deref(), Some("2.25.10"));
        assert_eq!(text(&o, tags::POSITION_REFERENCE_INDICATOR).as_deref(), Some("OM"));
        assert_eq!(text(&o, tags::LOSSY_IMAGE_COMPRESSION).as_deref(), Some("01"));
        assert_eq!(text(&o, tags::LOSSY_IMAGE_COMPRESSION_RATIO).as_deref(), Some("8"));
        // No body part: no Frame Anatomy; a multi-frame source's frame is referenced.
        let shared = &items(&o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)[0];
        assert!(shared.get(tags::FRAME_ANATOMY_SEQUENCE).is_none());
        assert_eq!(text(&items(&o, tags::SOURCE_IMAGE_SEQUENCE)[0], tags::REFERENCED_FRAME_NUMBER).as_deref(), Some("3"));
        // A flat map still has a range to show.
        let voi = &items(shared, tags::FRAME_VOILUT_SEQUENCE)[0];
        assert_eq!(text(voi, tags::WINDOW_WIDTH).as_deref(), Some("1"));
    }

    #[test]
    fn a_radiograph_keeps_its_own_pixel_spacing() {
        let mut h = InMemDicomObject::new_empty();
        for (tag, vr, v) in [
            (tags::SOP_CLASS_UID, VR::UI, uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION),
            (tags::SOP_INSTANCE_UID, VR::UI, "2.25.17"),
            (tags::SERIES_INSTANCE_UID, VR::UI, "2.25.18"),
            (tags::MODALITY, VR::CS, "DX"),
            (tags::PIXEL_SPACING, VR::DS, "0.139\\0.139"),
        ] {
            put(&mut h, tag, vr, v);
        }
        let m = map(&h);
        let measures = |frame: MapFrame| {
            let o = build(&m, &[frame], &h);
            let shared = items(&o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)[0].clone();
            items(&shared, tags::PIXEL_MEASURES_SEQUENCE)[0].get(tags::PIXEL_SPACING).map(|e| e.to_multi_str().unwrap().to_vec())
        };
        let own = MapFrame { source: source(&h, None), geometry: None, values: Array2::zeros((2, 2)) };
        assert_eq!(measures(own.clone()), Some(vec!["0.139".to_string(), "0.139".to_string()]));
        // Another image's frame does not get this one's spacing.
        let other = MapFrame { source: ImageRef { sop_instance_uid: "2.25.19".into(), ..own.source.clone() }, ..own };
        assert_eq!(measures(other), None);
    }

    #[test]
    fn the_hot_iron_display_carries_palette_range_and_profile() {
        let Some(cr) = corpus("cr_explicit_le.dcm") else { return };
        let m = Map { sop_instance_uid: "2.25.1001.5".into(), ..map(&cr) };
        let values = Array2::from_shape_fn((64, 48), |(r, c)| (r * c) as f32 / 10.0);
        let frames = [MapFrame { source: source(&cr, None), geometry: None, values }];
        let o = round_trip(&try_build(&m, &frames, &cr, Display::HotIron).unwrap(), &m);
        assert_eq!(text(&o, tags::PIXEL_PRESENTATION).as_deref(), Some("COLOR_RANGE"));
        assert_eq!(o.get(tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR).unwrap().to_multi_int::<u16>().unwrap(), [256, 0, 16]);
        let green = o.get(tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA).unwrap().to_multi_int::<u16>().unwrap();
        assert_eq!(green, hot_iron()[1].map(|v| v as u16 * 257));
        assert!(o.get(tags::PALETTE_COLOR_LOOKUP_TABLE_UID).is_none());
        assert_eq!(o.get(tags::ICC_PROFILE).unwrap().to_bytes().unwrap().as_ref(), srgb_icc().as_slice());
        let shared = &items(&o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)[0];
        let range = &items(shared, tags::STORED_VALUE_COLOR_RANGE_SEQUENCE)[0];
        let mapped = |t| range.get(t).unwrap().to_float64().unwrap();
        assert_eq!((mapped(tags::MINIMUM_STORED_VALUE_MAPPED), mapped(tags::MAXIMUM_STORED_VALUE_MAPPED)), (0.0, ((63 * 47) as f32 / 10.0) as f64));
    }

    #[test]
    fn frames_that_cannot_make_one_image_are_refused() {
        let h = InMemDicomObject::new_empty();
        let m = map(&h);
        let r = ImageRef { sop_class_uid: "1.2".into(), sop_instance_uid: "1.3".into(), series_instance_uid: "1.4".into(), frame: None };
        let frame = |rows, cols| MapFrame { source: r.clone(), geometry: None, values: Array2::zeros((rows, cols)) };
        let build = |frames: &[MapFrame]| try_build(&m, frames, &h, Display::Grey);
        assert!(build(&[]).is_err());
        assert!(build(&[frame(0, 4)]).is_err());
        assert!(build(&[frame(4, 4), frame(4, 5)]).is_err());
        assert!(build(&[frame(4, 4), frame(4, 4)]).is_ok());
    }

    #[test]
    fn palette_icc_profile_and_text_helpers() {
        let [r, g, b] = hot_iron();
        assert_eq!([r[0], g[0], b[0]], [0, 0, 0]);
        assert_eq!([r[127], r[128], g[129], g[191], g[192], b[192], b[193], g[254], b[254]], [254, 255, 2, 126, 128, 4, 8, 252, 252]);
        assert_eq!([r[255], g[255], b[255]], [255, 255, 255]);
        let icc = srgb_icc();
        assert_eq!(u32::from_be_bytes(icc[..4].try_into().unwrap()) as usize, icc.len());
        assert_eq!(&icc[36..40], b"acsp");
        assert_eq!(icc.len() % 4, 0);
        assert_eq!(content_label("pleural effusion (left)"), "PLEURAL_EFFUSION");
        assert_eq!(content_label("??"), "AI_MAP");
        assert_eq!(ds(0.478516), "0.478516");
        assert_eq!(ds(6.123233995736766e-17), "6.1232339957e-17");
        assert_eq!(ds(0.5000971555709839), "0.50009715557098");
        assert_eq!(ds(-122.5), "-122.5");
        assert_eq!(ds(-1234567.123456789), "-1234567.1234568");
    }
}
