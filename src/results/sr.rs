//! The Structured Report of a study result: Comprehensive 3D SR following TID 1500 (Measurement
//! Report), one TID 1501 measurement group per model label.
//!
//! ```text
//! CONTAINER (126000, DCM, "Imaging Measurement Report")                  TID 1500
//!  HAS CONCEPT MOD  CODE Language of Content Item and Descendants = en-US
//!  HAS OBS CONTEXT  TID 1001/1004: Observer Type = Device, Device Observer UID, Name,
//!                   Manufacturer, Model Name (the model package)
//!  HAS CONCEPT MOD  CODE Procedure reported
//!  CONTAINS CONTAINER (126010, DCM, "Imaging Measurements")
//!   CONTAINS CONTAINER (125007, DCM, "Measurement Group")                 TID 1501, per label
//!    HAS OBS CONTEXT TEXT Tracking Identifier, UIDREF Tracking Unique Identifier
//!    CONTAINS CODE Finding = the label's code
//!    HAS CONCEPT MOD TEXT Algorithm Name, Algorithm Version             TID 4019
//!    CONTAINS IMAGE Source of Measurement = the key image (frame)
//!    CONTAINS IMAGE Illustration of ROI = the heatmap Parametric Map, Secondary Capture (positive)
//!    CONTAINS NUM (122157, DCM, "Probability") in UCUM "1"
//!    CONTAINS CODE <finding> = Present | Absent                         qualitative evaluation
//!    CONTAINS CODE (99TRIAGE, CONFIDENCE) = HIGH | MEDIUM | REVIEW      qualitative evaluation
//!   CONTAINS CONTAINER (125007, DCM, "Measurement Group")                 TID 1410, per positive
//!    Tracking Identifier "<model> <label> region", Tracking UID          finding with a location:
//!    CONTAINS CODE Finding, HAS CONCEPT MOD Algorithm Name, Version        "region" (closed POLYLINE),
//!    CONTAINS SCOORD (111030, DCM, "Image Region") > SELECTED FROM IMAGE   "peak" (POINT), and
//!    CONTAINS CODE <finding> = Present                                      "peak in patient"
//!                                                                           (SCOORD3D POINT)
//!   CONTAINS CONTAINER (125007, DCM, "Measurement Group")                 TID 1410, per box of a
//!    Tracking Identifier "<model> <label> box N", Tracking UID            positive detector
//!    CONTAINS CODE Finding, HAS CONCEPT MOD Algorithm Name, Version        finding: "box N" (closed
//!    CONTAINS SCOORD (111030, DCM, "Image Region") > SELECTED FROM IMAGE   5-point POLYLINE), and
//!    CONTAINS NUM (122157, DCM, "Probability") = the box's score          "box N in patient"
//!    CONTAINS CODE <finding> = Present                                     (SCOORD3D POLYLINE)
//!   CONTAINS CONTAINER (125007, DCM, "Measurement Group")                 TID 1411 (a volume) or
//!    Tracking Identifier "<model> <label> segment", Tracking UID          1410 (one image), per
//!    CONTAINS CODE Finding, HAS CONCEPT MOD Algorithm Name, Version        positive segmenter
//!    CONTAINS IMAGE Referenced Segment (1411) | Referenced Segmentation    finding: the segment of
//!      Frame (1410): the SEG, Referenced Segment Number                   the result's SEG
//!    CONTAINS UIDREF Source series for segmentation (1411) | IMAGE Source
//!      image for segmentation (1410) = the key image (frame)
//!    CONTAINS NUM (42798000, SCT, "Area") mm2 | {pixels}; NUM (118565006, SCT, "Volume") mm3
//!    CONTAINS CODE <finding> = Present
//!  CONTAINS CONTAINER (C0034375, UMLS, "Qualitative Evaluations")
//!   CONTAINS CODE (260870009, SCT, "Priority") = (99TRIAGE, URGENT | POSITIVE | NEGATIVE)
//!   CONTAINS TEXT (121106, DCM, "Comment") = the model's intended use and limits
//! ```
//!
//! Standard codes (DCM, SCT, UMLS) wherever they exist; the private scheme `99TRIAGE`
//! (declared in the Coding Scheme Identification Sequence and in the conformance statement)
//! only for the confidence tier and the triage priority values.

use dicom_core::header::Header;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::dataset::{ascii, put, put_seq, start_object, Code};

pub const PRIVATE_SCHEME: &str = "99TRIAGE";

/// A reference to an image (and frame, for multi-frame images), by its de-identified UIDs.
#[derive(Debug, Clone)]
pub struct ImageRef {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    /// 1-based, for multi-frame images only.
    pub frame: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct FindingReport {
    pub label: String,
    pub code: Code,
    pub probability: f64,
    pub positive: bool,
    pub urgent: bool,
    /// `high`, `medium` or `needs_review`.
    pub tier: String,
    pub source: ImageRef,
    /// The finding's maps and pictures (Parametric Map, Secondary Capture), in that order.
    pub illustrations: Vec<ImageRef>,
    pub tracking_uid: String,
    /// Where the model's evidence lies on the source frame (positive findings).
    pub location: Option<Location>,
    /// A detector's boxes on the source frame (positive findings), best first.
    pub boxes: Vec<BoxRegion>,
    /// A segmenter's positive finding: its segment of the Segmentation, with what it covers.
    pub segment: Option<SegmentReport>,
}

/// A positive finding's segment in the result's Segmentation (TID 1410 on one image, TID 1411
/// over a volume's slices).
#[derive(Debug, Clone)]
pub struct SegmentReport {
    /// The Segmentation (class, instance, series); `frame`: the segment's frame on the key image
    /// (TID 1410's Referenced Segmentation Frame).
    pub seg: ImageRef,
    pub number: u16,
    /// Where the mask is at least 0.5 on the key image: (value, unit) in mm² (UCUM "mm2") with
    /// Pixel Spacing, else in pixels ({pixels}).
    pub area: (f64, Code),
    /// Over a volume's slices, in mm³; None on one image (TID 1410).
    pub volume_mm3: Option<f64>,
    /// The source series (TID 1411's Source series for segmentation).
    pub source_series: String,
    pub uid: String,
}

/// One box a detector found, on its finding's source frame, with a Tracking UID of its own
/// (stable for the same study, model, label and rank).
#[derive(Debug, Clone)]
pub struct BoxRegion {
    /// x0, y0, x1, y1 in image coordinates of the source frame.
    pub corners: [f32; 4],
    pub score: f64,
    pub uid: String,
    /// The box in the patient's coordinates (its four corners, the first repeated), when the
    /// source frame has a Frame of Reference and its geometry: (Frame of Reference UID, points
    /// in mm, Tracking UID).
    pub patient: Option<(String, Vec<[f64; 3]>, String)>,
}

impl BoxRegion {
    /// The closed rectangle: the four corners clockwise from the top left, the first repeated.
    pub fn outline(&self) -> Vec<(f32, f32)> {
        let [x0, y0, x1, y1] = self.corners;
        vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    }
}

/// A finding's evidence on its source frame, each shape with a Tracking UID of its own, stable
/// for the same study, model and label (a re-triage reports the same finding the same way).
#[derive(Debug, Clone)]
pub struct Location {
    pub region: super::regions::Region,
    pub region_uid: String,
    pub peak_uid: String,
    /// The peak in the patient's coordinates, when the source frame has a Frame of Reference and
    /// its geometry: (Frame of Reference UID, point in mm, Tracking UID).
    pub patient: Option<(String, [f64; 3], String)>,
}

/// What the SR says, and the identity of the SR object itself.
#[derive(Debug, Clone)]
pub struct Report {
    pub model: String,
    pub version: String,
    pub manufacturer: String,
    pub demonstration: bool,
    pub intended_use: String,
    pub limits: String,
    /// `urgent`, `positive`, `negative`, `failed` (the study could not be analysed) or
    /// `not_analysed` (the node did not look at the images: their pixels were not kept).
    pub priority: String,
    /// Why the analysis failed, or why it was not made, for a failed or not-analysed result.
    pub failure: Option<String>,
    /// Procedure reported (CID 100).
    pub procedure: Code,
    /// The procedure as precisely as known (Performed Procedure Code Sequence).
    pub performed_procedure: Code,
    pub findings: Vec<FindingReport>,
    /// The images the result is about (Current Requested Procedure Evidence): the findings' key
    /// images, or for a failed result the images that could not be analysed.
    pub evidence: Vec<ImageRef>,
    pub device_uid: String,
    pub series_uid: String,
    pub series_number: u32,
    pub sop_instance_uid: String,
    pub created_ms: i64,
    pub station: String,
}

pub fn language() -> Code {
    Code::new("en-US", "RFC5646", "English (United States)")
}
pub fn present() -> Code {
    Code::new("52101004", "SCT", "Present")
}
pub fn absent() -> Code {
    Code::new("2667000", "SCT", "Absent")
}
pub fn probability() -> Code {
    Code::new("122157", "DCM", "Probability")
}
pub fn confidence() -> Code {
    Code::new("CONFIDENCE", PRIVATE_SCHEME, "AI confidence tier")
}
pub fn tier_code(tier: &str) -> Code {
    match tier {
        "high" => Code::new("HIGH", PRIVATE_SCHEME, "High confidence"),
        "medium" => Code::new("MEDIUM", PRIVATE_SCHEME, "Medium confidence"),
        _ => Code::new("REVIEW", PRIVATE_SCHEME, "Low confidence, needs review"),
    }
}
pub fn priority_code(priority: &str) -> Code {
    match priority {
        "urgent" => Code::new("URGENT", PRIVATE_SCHEME, "AI triage: urgent"),
        "positive" => Code::new("POSITIVE", PRIVATE_SCHEME, "AI triage: positive"),
        "failed" => Code::new("FAILED", PRIVATE_SCHEME, "AI triage: failed, read without AI"),
        "not_analysed" => Code::new("NOTANALYSED", PRIVATE_SCHEME, "AI triage: not analysed, read without AI"),
        _ => Code::new("NEGATIVE", PRIVATE_SCHEME, "AI triage: negative"),
    }
}

/// The statement every result carries about the model (and, for a failed one, that it failed).
pub fn statement(r: &Report) -> String {
    let failed = match (&r.failure, r.priority.as_str()) {
        (Some(why), "not_analysed") => {
            format!("AI TRIAGE NOT PERFORMED: this study was not analysed ({why}). This is not a negative result. Read it without AI. ")
        }
        (Some(why), _) => format!("AI TRIAGE FAILED: this study could not be analysed ({why}). Read it without AI. "),
        (None, _) => String::new(),
    };
    let demo = if r.demonstration { "DEMONSTRATION MODEL, NOT CLINICALLY VALIDATED. " } else { "" };
    format!("{failed}{demo}AI result by {} {}. Intended use: {} Limits: {}", r.model, r.version, r.intended_use.trim(), r.limits.trim())
}

/// Content items.
enum Item {
    Container {
        rel: &'static str,
        concept: Code,
        template: Option<&'static str>,
        children: Vec<Item>,
    },
    Code {
        rel: &'static str,
        concept: Code,
        value: Code,
    },
    Text {
        rel: &'static str,
        concept: Code,
        text: String,
    },
    UidRef {
        rel: &'static str,
        concept: Code,
        uid: String,
    },
    Num {
        rel: &'static str,
        concept: Code,
        value: f64,
        unit: Code,
    },
    Image {
        rel: &'static str,
        concept: Code,
        image: ImageRef,
    },
    /// A segment of a Segmentation by its number, or (TID 1410) its frame on the image, which
    /// names the segment.
    Segment {
        rel: &'static str,
        concept: Code,
        image: ImageRef,
        segment: u16,
    },
    /// An image a coordinate is selected from (no concept name).
    SelectedFrom {
        image: ImageRef,
    },
    /// Image coordinates (column, row) on the image of its one `SelectedFrom` child.
    Scoord {
        rel: &'static str,
        concept: Code,
        graphic: &'static str,
        points: Vec<(f32, f32)>,
        image: ImageRef,
    },
    /// Patient coordinates (mm) in a Frame of Reference.
    Scoord3d {
        rel: &'static str,
        concept: Code,
        graphic: &'static str,
        points: Vec<[f64; 3]>,
        frame_of_reference: String,
    },
}

impl Item {
    fn encode(&self) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        let (rel, concept) = match self {
            Item::Container { rel, concept, .. }
            | Item::Code { rel, concept, .. }
            | Item::Text { rel, concept, .. }
            | Item::UidRef { rel, concept, .. }
            | Item::Num { rel, concept, .. }
            | Item::Image { rel, concept, .. }
            | Item::Segment { rel, concept, .. }
            | Item::Scoord { rel, concept, .. }
            | Item::Scoord3d { rel, concept, .. } => (*rel, Some(concept)),
            Item::SelectedFrom { .. } => ("SELECTED FROM", None),
        };
        put(&mut o, tags::RELATIONSHIP_TYPE, VR::CS, rel);
        if let Some(concept) = concept {
            put_seq(&mut o, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![concept.item()]);
        }
        match self {
            Item::Container { template, children, .. } => {
                put(&mut o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
                put(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
                if let Some(t) = template {
                    o.put(template_sequence(t));
                }
                put_seq(&mut o, tags::CONTENT_SEQUENCE, children.iter().map(Item::encode).collect());
            }
            Item::Code { value, .. } => {
                put(&mut o, tags::VALUE_TYPE, VR::CS, "CODE");
                put_seq(&mut o, tags::CONCEPT_CODE_SEQUENCE, vec![value.item()]);
            }
            Item::Text { text, .. } => {
                put(&mut o, tags::VALUE_TYPE, VR::CS, "TEXT");
                put(&mut o, tags::TEXT_VALUE, VR::UT, text);
            }
            Item::UidRef { uid, .. } => {
                put(&mut o, tags::VALUE_TYPE, VR::CS, "UIDREF");
                put(&mut o, tags::UID, VR::UI, uid);
            }
            Item::Num { value, unit, .. } => {
                put(&mut o, tags::VALUE_TYPE, VR::CS, "NUM");
                let mut mv = InMemDicomObject::new_empty();
                put_seq(&mut mv, tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![unit.item()]);
                put(&mut mv, tags::NUMERIC_VALUE, VR::DS, &decimal_string(*value));
                mv.put(DataElement::new(tags::FLOATING_POINT_VALUE, VR::FD, PrimitiveValue::from(*value)));
                put_seq(&mut o, tags::MEASURED_VALUE_SEQUENCE, vec![mv]);
            }
            Item::Image { image, .. } | Item::SelectedFrom { image } => {
                put(&mut o, tags::VALUE_TYPE, VR::CS, "IMAGE");
                put_seq(&mut o, tags::REFERENCED_SOP_SEQUENCE, vec![image_reference(image)]);
            }
            Item::Segment { image, segment, .. } => {
                put(&mut o, tags::VALUE_TYPE, VR::CS, "IMAGE");
                let mut r = image_reference(image);
                // A frame names its segment (PS3.3 Image SOP Instance Reference Macro: never both).
                if image.frame.is_none() {
                    r.put(DataElement::new(tags::REFERENCED_SEGMENT_NUMBER, VR::US, PrimitiveValue::from(*segment)));
                }
                put_seq(&mut o, tags::REFERENCED_SOP_SEQUENCE, vec![r]);
            }
            Item::Scoord { graphic, points, image, .. } => {
                put(&mut o, tags::VALUE_TYPE, VR::CS, "SCOORD");
                put(&mut o, tags::GRAPHIC_TYPE, VR::CS, graphic);
                let data: Vec<f32> = points.iter().flat_map(|&(x, y)| [x, y]).collect();
                o.put(DataElement::new(tags::GRAPHIC_DATA, VR::FL, PrimitiveValue::F32(data.into())));
                put_seq(&mut o, tags::CONTENT_SEQUENCE, vec![Item::SelectedFrom { image: image.clone() }.encode()]);
            }
            Item::Scoord3d { graphic, points, frame_of_reference, .. } => {
                put(&mut o, tags::VALUE_TYPE, VR::CS, "SCOORD3D");
                put(&mut o, tags::REFERENCED_FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference);
                put(&mut o, tags::GRAPHIC_TYPE, VR::CS, graphic);
                let data: Vec<f32> = points.iter().flat_map(|p| p.map(|v| v as f32)).collect();
                o.put(DataElement::new(tags::GRAPHIC_DATA, VR::FL, PrimitiveValue::F32(data.into())));
            }
        }
        o
    }
}

/// A Referenced SOP Sequence item: class, instance and (multi-frame) frame.
fn image_reference(image: &ImageRef) -> InMemDicomObject {
    let mut r = InMemDicomObject::new_empty();
    put(&mut r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &image.sop_class_uid);
    put(&mut r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &image.sop_instance_uid);
    if let Some(f) = image.frame {
        put(&mut r, tags::REFERENCED_FRAME_NUMBER, VR::IS, &f.to_string());
    }
    r
}

fn template_sequence(id: &str) -> DataElement<InMemDicomObject> {
    let mut t = InMemDicomObject::new_empty();
    put(&mut t, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put(&mut t, tags::TEMPLATE_IDENTIFIER, VR::CS, id);
    DataElement::new(tags::CONTENT_TEMPLATE_SEQUENCE, VR::SQ, dicom_core::value::DataSetSequence::new(vec![t], dicom_core::Length::UNDEFINED))
}

/// A DS value (at most 16 characters).
fn decimal_string(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.chars().take(16).collect()
}

fn group(r: &Report, f: &FindingReport) -> Item {
    let mut children = vec![
        Item::Text { rel: "HAS OBS CONTEXT", concept: Code::new("112039", "DCM", "Tracking Identifier"), text: ascii(&format!("{} {}", r.model, f.label)) },
        Item::UidRef { rel: "HAS OBS CONTEXT", concept: Code::new("112040", "DCM", "Tracking Unique Identifier"), uid: f.tracking_uid.clone() },
        Item::Code { rel: "CONTAINS", concept: Code::new("121071", "DCM", "Finding"), value: f.code.clone() },
        Item::Text { rel: "HAS CONCEPT MOD", concept: Code::new("111001", "DCM", "Algorithm Name"), text: r.model.clone() },
        Item::Text { rel: "HAS CONCEPT MOD", concept: Code::new("111003", "DCM", "Algorithm Version"), text: r.version.clone() },
        Item::Image { rel: "CONTAINS", concept: Code::new("121112", "DCM", "Source of Measurement"), image: f.source.clone() },
    ];
    for h in &f.illustrations {
        children.push(Item::Image { rel: "CONTAINS", concept: Code::new("121200", "DCM", "Illustration of ROI"), image: h.clone() });
    }
    if f.probability.is_finite() {
        children.push(Item::Num { rel: "CONTAINS", concept: probability(), value: f.probability, unit: Code::new("1", "UCUM", "no units") });
    }
    children.push(Item::Code { rel: "CONTAINS", concept: f.code.clone(), value: if f.positive { present() } else { absent() } });
    children.push(Item::Code { rel: "CONTAINS", concept: confidence(), value: tier_code(&f.tier) });
    Item::Container { rel: "CONTAINS", concept: Code::new("125007", "DCM", "Measurement Group"), template: Some("1501"), children }
}

/// The TID 1410 groups of a finding's location: the region around the evidence and the peak on
/// the source image, and the peak in the patient where the image has a Frame of Reference.
fn location_groups(r: &Report, f: &FindingReport, at: &Location) -> Vec<Item> {
    let region = || Code::new("111030", "DCM", "Image Region");
    let roi = |what: &str, uid: &str, shape: Item| roi_group(r, f, what, uid, shape, None);
    let mut groups = vec![
        roi(
            "region",
            &at.region_uid,
            Item::Scoord { rel: "CONTAINS", concept: region(), graphic: "POLYLINE", points: at.region.outline.clone(), image: f.source.clone() },
        ),
        roi("peak", &at.peak_uid, Item::Scoord { rel: "CONTAINS", concept: region(), graphic: "POINT", points: vec![at.region.peak], image: f.source.clone() }),
    ];
    if let Some((frame_of_reference, point, uid)) = &at.patient {
        groups.push(roi(
            "peak in patient",
            uid,
            Item::Scoord3d { rel: "CONTAINS", concept: region(), graphic: "POINT", points: vec![*point], frame_of_reference: frame_of_reference.clone() },
        ));
    }
    groups
}

/// The TID 1410 groups of a detector's boxes: per box, "box N" (a closed POLYLINE rectangle on
/// the source image) and, where the image has a Frame of Reference and its geometry, "box N in
/// patient" (the same rectangle as a SCOORD3D POLYLINE), each with the box's score as a
/// Probability.
fn box_groups(r: &Report, f: &FindingReport) -> Vec<Item> {
    let region = || Code::new("111030", "DCM", "Image Region");
    let mut groups = Vec::new();
    for (n, b) in f.boxes.iter().enumerate() {
        let what = format!("box {}", n + 1);
        let shape = Item::Scoord { rel: "CONTAINS", concept: region(), graphic: "POLYLINE", points: b.outline(), image: f.source.clone() };
        groups.push(roi_group(r, f, &what, &b.uid, shape, Some(b.score)));
        if let Some((frame_of_reference, points, uid)) = &b.patient {
            let shape = Item::Scoord3d {
                rel: "CONTAINS",
                concept: region(),
                graphic: "POLYLINE",
                points: points.clone(),
                frame_of_reference: frame_of_reference.clone(),
            };
            groups.push(roi_group(r, f, &format!("{what} in patient"), uid, shape, Some(b.score)));
        }
    }
    groups
}

/// The measurement group of a segmenter's positive finding: TID 1411 (Volumetric ROI) over a
/// volume's slices, with the segment, its source series and the volume (mm³) and area on the
/// key slice; TID 1410 (Planar ROI) on one image, with the segment's frame, the key image as
/// its source image for segmentation, and its area.
fn segment_group(r: &Report, f: &FindingReport, s: &SegmentReport) -> Item {
    let volumetric = s.volume_mm3.is_some();
    let mut seg = s.seg.clone();
    let shape = if volumetric {
        seg.frame = None;
        Item::Segment { rel: "CONTAINS", concept: Code::new("121191", "DCM", "Referenced Segment"), image: seg, segment: s.number }
    } else {
        Item::Segment { rel: "CONTAINS", concept: Code::new("121214", "DCM", "Referenced Segmentation Frame"), image: seg, segment: s.number }
    };
    let Item::Container { children, .. } = roi_group(r, f, "segment", &s.uid, shape, None) else { unreachable!("roi_group makes a container") };
    let mut children = children;
    let present = children.pop();
    if volumetric {
        children.push(Item::UidRef { rel: "CONTAINS", concept: Code::new("121232", "DCM", "Source series for segmentation"), uid: s.source_series.clone() });
    } else {
        // TID 1410 requires the image a Referenced Segmentation Frame was segmented from.
        children.push(Item::Image { rel: "CONTAINS", concept: Code::new("121233", "DCM", "Source image for segmentation"), image: f.source.clone() });
    }
    children.push(Item::Num { rel: "CONTAINS", concept: Code::new("42798000", "SCT", "Area"), value: s.area.0, unit: s.area.1.clone() });
    if let Some(v) = s.volume_mm3 {
        children.push(Item::Num {
            rel: "CONTAINS",
            concept: Code::new("118565006", "SCT", "Volume"),
            value: v,
            unit: Code::new("mm3", "UCUM", "cubic millimeter"),
        });
    }
    children.extend(present);
    let template = if volumetric { "1411" } else { "1410" };
    Item::Container { rel: "CONTAINS", concept: Code::new("125007", "DCM", "Measurement Group"), template: Some(template), children }
}

/// One TID 1410 Planar ROI measurement group of finding `f`: tracked as "<model> <label>
/// <what>", its shape, and a score as a Probability (TID 1419) where it has one.
fn roi_group(r: &Report, f: &FindingReport, what: &str, uid: &str, shape: Item, score: Option<f64>) -> Item {
    let mut children = vec![
        Item::Text {
            rel: "HAS OBS CONTEXT",
            concept: Code::new("112039", "DCM", "Tracking Identifier"),
            text: ascii(&format!("{} {} {what}", r.model, f.label)),
        },
        Item::UidRef { rel: "HAS OBS CONTEXT", concept: Code::new("112040", "DCM", "Tracking Unique Identifier"), uid: uid.to_string() },
        Item::Code { rel: "CONTAINS", concept: Code::new("121071", "DCM", "Finding"), value: f.code.clone() },
        Item::Text { rel: "HAS CONCEPT MOD", concept: Code::new("111001", "DCM", "Algorithm Name"), text: r.model.clone() },
        Item::Text { rel: "HAS CONCEPT MOD", concept: Code::new("111003", "DCM", "Algorithm Version"), text: r.version.clone() },
        shape,
    ];
    if let Some(score) = score.filter(|s| s.is_finite()) {
        children.push(Item::Num { rel: "CONTAINS", concept: probability(), value: score, unit: Code::new("1", "UCUM", "no units") });
    }
    children.push(Item::Code { rel: "CONTAINS", concept: f.code.clone(), value: present() });
    Item::Container { rel: "CONTAINS", concept: Code::new("125007", "DCM", "Measurement Group"), template: Some("1410"), children }
}

/// The SR data set, with the de-identified patient and study attributes of `identity`.
pub fn build(r: &Report, identity: &InMemDicomObject) -> InMemDicomObject {
    let mut o = start_object(dicom_dictionary_std::uids::COMPREHENSIVE3_DSR_STORAGE, &r.sop_instance_uid, identity, r.created_ms);
    // SR Document Series.
    put(&mut o, tags::MODALITY, VR::CS, "SR");
    put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &r.series_uid);
    put(&mut o, tags::SERIES_NUMBER, VR::IS, &r.series_number.to_string());
    put(&mut o, tags::SERIES_DESCRIPTION, VR::LO, &series_description(&r.model, &r.version));
    put_seq(&mut o, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]);
    // General and Enhanced General Equipment.
    put(&mut o, tags::MANUFACTURER, VR::LO, "triage-node");
    put(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "triage-node");
    put(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, &ascii(&r.station));
    put(&mut o, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
    put(&mut o, tags::STATION_NAME, VR::SH, &ascii(&r.station).chars().take(16).collect::<String>());
    // SR Document General.
    put(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
    put(&mut o, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put(&mut o, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put(&mut o, tags::PRELIMINARY_FLAG, VR::CS, "PRELIMINARY");
    put_seq(&mut o, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![r.performed_procedure.item()]);
    let study_uid = super::dataset::text(identity, tags::STUDY_INSTANCE_UID).unwrap_or_default();
    let sources: Vec<&ImageRef> = r.evidence.iter().collect();
    put_seq(&mut o, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, evidence(&study_uid, &sources));
    let heatmaps: Vec<&ImageRef> = r.findings.iter().flat_map(|f| f.illustrations.iter().chain(f.segment.iter().map(|s| &s.seg))).collect();
    if !heatmaps.is_empty() {
        put_seq(&mut o, tags::PERTINENT_OTHER_EVIDENCE_SEQUENCE, evidence(&study_uid, &heatmaps));
    }
    let mut scheme = InMemDicomObject::new_empty();
    put(&mut scheme, tags::CODING_SCHEME_DESIGNATOR, VR::SH, PRIVATE_SCHEME);
    put(&mut scheme, tags::CODING_SCHEME_NAME, VR::ST, "triage-node AI triage codes");
    put(&mut scheme, tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION, VR::ST, "triage-node (see its DICOM conformance statement)");
    put_seq(&mut o, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, vec![scheme]);

    // SR Document Content: the root container.
    let root = Item::Container {
        rel: "",
        concept: Code::new("126000", "DCM", "Imaging Measurement Report"),
        template: Some("1500"),
        children: {
            let mut c = vec![
                Item::Code { rel: "HAS CONCEPT MOD", concept: Code::new("121049", "DCM", "Language of Content Item and Descendants"), value: language() },
                Item::Code { rel: "HAS OBS CONTEXT", concept: Code::new("121005", "DCM", "Observer Type"), value: Code::new("121007", "DCM", "Device") },
                Item::UidRef { rel: "HAS OBS CONTEXT", concept: Code::new("121012", "DCM", "Device Observer UID"), uid: r.device_uid.clone() },
                Item::Text { rel: "HAS OBS CONTEXT", concept: Code::new("121013", "DCM", "Device Observer Name"), text: r.model.clone() },
                Item::Text { rel: "HAS OBS CONTEXT", concept: Code::new("121014", "DCM", "Device Observer Manufacturer"), text: r.manufacturer.clone() },
                Item::Text {
                    rel: "HAS OBS CONTEXT",
                    concept: Code::new("121015", "DCM", "Device Observer Model Name"),
                    text: format!("{} {}", r.model, r.version),
                },
                Item::Code { rel: "HAS CONCEPT MOD", concept: Code::new("121058", "DCM", "Procedure reported"), value: r.procedure.clone() },
            ];
            // A failed result has no measurements: only the qualitative statement below.
            if !r.findings.is_empty() {
                c.push(Item::Container {
                    rel: "CONTAINS",
                    concept: Code::new("126010", "DCM", "Imaging Measurements"),
                    template: None,
                    children: r
                        .findings
                        .iter()
                        .flat_map(|f| {
                            std::iter::once(group(r, f))
                                .chain(f.location.iter().flat_map(|at| location_groups(r, f, at)))
                                .chain(box_groups(r, f))
                                .chain(f.segment.iter().map(|s| segment_group(r, f, s)))
                        })
                        .collect(),
                });
            }
            c.push(Item::Container {
                rel: "CONTAINS",
                concept: Code::new("C0034375", "UMLS", "Qualitative Evaluations"),
                template: None,
                children: vec![
                    Item::Code { rel: "CONTAINS", concept: Code::new("260870009", "SCT", "Priority"), value: priority_code(&r.priority) },
                    Item::Text { rel: "CONTAINS", concept: Code::new("121106", "DCM", "Comment"), text: statement(r) },
                ],
            });
            c
        },
    };
    let encoded = root.encode();
    for e in encoded {
        if e.tag() != tags::RELATIONSHIP_TYPE {
            o.put(e);
        }
    }
    o
}

/// The reports' Series Description: it names the model (and is how an earlier report of the
/// same model is recognised).
pub fn series_description(model: &str, version: &str) -> String {
    ascii(&format!("AI triage report {model} {version}")).trim_end().chars().take(64).collect()
}

/// Hierarchical SOP Instance Reference items (study -> series -> instances) for `images`.
pub fn evidence(study_uid: &str, images: &[&ImageRef]) -> Vec<InMemDicomObject> {
    let mut series: Vec<(String, Vec<&ImageRef>)> = Vec::new();
    for i in images {
        match series.iter_mut().find(|(s, _)| *s == i.series_instance_uid) {
            Some((_, v)) => {
                if !v.iter().any(|x| x.sop_instance_uid == i.sop_instance_uid) {
                    v.push(i)
                }
            }
            None => series.push((i.series_instance_uid.clone(), vec![i])),
        }
    }
    let mut study = InMemDicomObject::new_empty();
    put(&mut study, tags::STUDY_INSTANCE_UID, VR::UI, study_uid);
    let items = series
        .into_iter()
        .map(|(uid, refs)| {
            let mut s = InMemDicomObject::new_empty();
            put(&mut s, tags::SERIES_INSTANCE_UID, VR::UI, &uid);
            let sops = refs
                .iter()
                .map(|r| {
                    let mut o = InMemDicomObject::new_empty();
                    put(&mut o, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &r.sop_class_uid);
                    put(&mut o, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &r.sop_instance_uid);
                    o
                })
                .collect();
            put_seq(&mut s, tags::REFERENCED_SOP_SEQUENCE, sops);
            s
        })
        .collect();
    put_seq(&mut study, tags::REFERENCED_SERIES_SEQUENCE, items);
    vec![study]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(uid: &str) -> ImageRef {
        ImageRef { sop_class_uid: "1.2.840.10008.5.1.4.1.1.1".into(), sop_instance_uid: uid.into(), series_instance_uid: "1.2.3".into(), frame: None }
    }

    /// The groups under a container, as (tracking identifier, its content items).
    fn groups(o: &InMemDicomObject) -> Vec<(String, Vec<InMemDicomObject>)> {
        let items = |o: &InMemDicomObject| o.get(tags::CONTENT_SEQUENCE).and_then(|e| e.items()).map(<[InMemDicomObject]>::to_vec).unwrap_or_default();
        let mut out = Vec::new();
        for c in items(o) {
            let children = items(&c);
            let tracking = children.iter().find_map(|i| i.get(tags::TEXT_VALUE)?.to_str().ok().map(|t| t.to_string()));
            if let Some(t) = tracking.filter(|t| t.starts_with("m ")) {
                out.push((t, children.clone()));
            }
            out.extend(groups(&c));
        }
        out
    }

    /// A detector's finding: per box a TID 1410 group with a closed 5-point POLYLINE selected
    /// from the key image and the score as a Probability, and one in the patient where the
    /// image has geometry.
    #[test]
    fn a_detectors_boxes_are_image_regions_with_their_scores() {
        let finding = FindingReport {
            label: "nodule".into(),
            code: Code::new("27925004", "SCT", "Nodule"),
            probability: 0.9,
            positive: true,
            urgent: false,
            tier: "high".into(),
            source: image("1.2.3.4"),
            illustrations: vec![],
            tracking_uid: "1.2.3.5".into(),
            location: None,
            boxes: vec![
                BoxRegion { corners: [10.0, 20.0, 30.0, 60.0], score: 0.9, uid: "1.2.3.6".into(), patient: None },
                BoxRegion {
                    corners: [1.0, 2.0, 3.0, 4.0],
                    score: 0.55,
                    uid: "1.2.3.7".into(),
                    patient: Some((
                        "1.2.3.9".into(),
                        vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
                        "1.2.3.8".into(),
                    )),
                },
            ],
            segment: None,
        };
        let report = Report {
            model: "m".into(),
            version: "1".into(),
            manufacturer: "x".into(),
            demonstration: true,
            intended_use: "test".into(),
            limits: "test".into(),
            priority: "positive".into(),
            failure: None,
            procedure: Code::new("1", "99X", "p"),
            performed_procedure: Code::new("1", "99X", "p"),
            findings: vec![finding],
            evidence: vec![image("1.2.3.4")],
            device_uid: "1.2.3.10".into(),
            series_uid: "1.2.3.11".into(),
            series_number: 9,
            sop_instance_uid: "1.2.3.12".into(),
            created_ms: 0,
            station: "s".into(),
        };
        let sr = build(&report, &InMemDicomObject::new_empty());
        let found = groups(&sr);
        let names: Vec<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["m nodule", "m nodule box 1", "m nodule box 2", "m nodule box 2 in patient"]);
        let value_type = |i: &InMemDicomObject| i.get(tags::VALUE_TYPE).and_then(|e| e.to_str().ok()).map(|s| s.trim().to_string()).unwrap_or_default();
        let graphic = |items: &[InMemDicomObject], vt: &str| {
            let i = items.iter().find(|i| value_type(i) == vt).unwrap_or_else(|| panic!("no {vt}"));
            let kind = i.get(tags::GRAPHIC_TYPE).unwrap().to_str().unwrap().trim().to_string();
            (kind, i.get(tags::GRAPHIC_DATA).unwrap().to_multi_float32().unwrap(), i.clone())
        };
        let (kind, data, scoord) = graphic(&found[1].1, "SCOORD");
        assert_eq!(kind, "POLYLINE");
        assert_eq!(data, [10.0, 20.0, 30.0, 20.0, 30.0, 60.0, 10.0, 60.0, 10.0, 20.0]);
        let selected = &scoord.get(tags::CONTENT_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(selected.get(tags::RELATIONSHIP_TYPE).unwrap().to_str().unwrap().trim(), "SELECTED FROM");
        let num = found[1].1.iter().find(|i| value_type(i) == "NUM").expect("the score");
        let mv = &num.get(tags::MEASURED_VALUE_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(mv.get(tags::NUMERIC_VALUE).unwrap().to_str().unwrap().trim(), "0.9");
        let (kind, data, _) = graphic(&found[3].1, "SCOORD3D");
        assert_eq!((kind.as_str(), data.len()), ("POLYLINE", 15));
        assert!(found[3].1.iter().any(|i| value_type(i) == "NUM"));

        // A segmenter's finding: TID 1410 on one image (the segment's frame, the area), TID 1411
        // over a volume (the segment, its source series, the volume), each naming the segment.
        for (volume, template) in [(None, "1410"), (Some(120.0), "1411")] {
            let mut report = report.clone();
            let first = report.findings[0].clone();
            let seg = ImageRef { sop_class_uid: super::super::seg::SOP_CLASS.into(), frame: Some(3), ..image("1.2.3.20") };
            let segment = SegmentReport {
                seg,
                number: 2,
                area: (42.5, Code::new("mm2", "UCUM", "square millimeter")),
                volume_mm3: volume,
                source_series: "1.2.3.21".into(),
                uid: "1.2.3.22".into(),
            };
            report.findings = vec![FindingReport { boxes: vec![], segment: Some(segment), ..first }];
            let sr = build(&report, &InMemDicomObject::new_empty());
            let found = groups(&sr);
            let (_, items) = found.iter().find(|(t, _)| t == "m nodule segment").expect("the segment's group");
            let image = items.iter().find(|i| value_type(i) == "IMAGE").unwrap();
            let r = &image.get(tags::REFERENCED_SOP_SEQUENCE).unwrap().items().unwrap()[0];
            let number = r.get(tags::REFERENCED_SEGMENT_NUMBER).map(|e| e.to_int::<u16>().unwrap());
            let frame = r.get(tags::REFERENCED_FRAME_NUMBER).map(|e| e.to_int::<u32>().unwrap());
            assert_eq!((number, frame), if volume.is_some() { (Some(2), None) } else { (None, Some(3)) }, "{template}");
            let nums: Vec<String> = items
                .iter()
                .filter(|i| value_type(i) == "NUM")
                .map(|i| {
                    let mv = &i.get(tags::MEASURED_VALUE_SEQUENCE).unwrap().items().unwrap()[0];
                    mv.get(tags::NUMERIC_VALUE).unwrap().to_str().unwrap().trim().to_string()
                })
                .collect();
            assert_eq!(nums, if volume.is_some() { vec!["42.5", "120"] } else { vec!["42.5"] });
            assert_eq!(
                items.iter().any(|i| value_type(i) == "UIDREF" && i.get(tags::UID).unwrap().to_str().unwrap().trim_end_matches('\0') == "1.2.3.21"),
                volume.is_some()
            );
            // TID 1410: the segmentation frame's source image is the key image; TID 1411 names the series.
            let sources: Vec<String> = items
                .iter()
                .filter(|i| value_type(i) == "IMAGE" && format!("{:?}", i.get(tags::CONCEPT_NAME_CODE_SEQUENCE).unwrap()).contains("121233"))
                .map(|i| {
                    i.get(tags::REFERENCED_SOP_SEQUENCE).unwrap().items().unwrap()[0]
                        .get(tags::REFERENCED_SOP_INSTANCE_UID)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(sources, if volume.is_some() { vec![] } else { vec!["1.2.3.4".to_string()] }, "{template}");
            let evidence = sr.get(tags::PERTINENT_OTHER_EVIDENCE_SEQUENCE).expect("the SEG is pertinent evidence");
            assert!(format!("{evidence:?}").contains("1.2.3.20"));
        }
    }
}
