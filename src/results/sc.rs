//! The heatmap Secondary Capture of a positive finding: the key image windowed as the model saw
//! it, the class activation map blended over it in colour (`inference::heatmap`), a colour
//! legend on the right and a burned-in label below (finding, probability, "AI RESULT", the
//! model, and for a demonstration model that it is not clinically validated). RGB, 8 bits,
//! Burned In Annotation YES.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use ndarray::Array3;

use super::dataset::{ascii, put, put_seq, put_u16, start_object, Code};
use super::font;
use super::pm::capitalised;
use super::sr::ImageRef;
use crate::inference::heatmap;

/// What the label says.
#[derive(Debug, Clone)]
pub struct Label {
    pub finding: String,
    pub probability: f64,
    pub urgent: bool,
    pub tier: String,
    pub model: String,
    pub version: String,
    pub demonstration: bool,
}

impl Label {
    fn lines(&self) -> Vec<String> {
        let flag = if self.urgent { "URGENT" } else { "POSITIVE" };
        let tier = self.tier.replace('_', " ");
        let mut lines = vec![
            format!("AI RESULT: {} {} ({flag}, {tier} CONFIDENCE)", self.finding, percent(self.probability)),
            format!("{} {} - HEATMAP SHOWS WHERE THE MODEL LOOKED", self.model, self.version),
        ];
        lines.push(if self.demonstration { "DEMONSTRATION MODEL, NOT CLINICALLY VALIDATED".into() } else { "NOT A DIAGNOSIS: FOR PRIORITISATION ONLY".into() });
        lines.into_iter().map(|l| ascii(&l).to_uppercase()).collect()
    }
}

/// A probability as a percentage, rounded down: never a certainty the model did not give.
fn percent(p: f64) -> String {
    format!("{:.1}%", (p * 1000.0).floor() / 10.0)
}

/// The full picture: blended image (rows x cols), legend strip on the right, label band below.
pub fn render(blended: &Array3<u8>, label: &Label) -> Array3<u8> {
    let (rows, cols, _) = blended.dim();
    let scale = (cols.max(rows) / 512).clamp(1, 4);
    let pad = 4 * scale;
    let lines = label.lines();
    let band = pad * 2 + lines.len() * font::CELL_H * scale;
    let legend_w = font::width("1.0", scale) + 16 * scale + pad * 3;
    let (h, w) = (rows + band, cols + legend_w);
    let mut img = Array3::<u8>::zeros((h, w, 3));
    img.slice_mut(ndarray::s![..rows, ..cols, ..]).assign(blended);
    // Legend: the colour scale from the floor (bottom) to 1.0 (top), with its end values.
    let bar_x = cols + pad;
    let bar_w = 16 * scale;
    let (top, bottom) = (pad + font::CELL_H * scale, rows.saturating_sub(pad + font::CELL_H * scale));
    for r in top..bottom.max(top + 1) {
        let v = 1.0 - (r - top) as f32 / (bottom.max(top + 1) - top) as f32 * (1.0 - heatmap::FLOOR);
        let c = heatmap::colour(v);
        for x in bar_x..bar_x + bar_w {
            for k in 0..3 {
                img[[r, x, k]] = (c[k] * 255.0).round() as u8;
            }
        }
    }
    font::draw(&mut img, "1.0", pad, bar_x, scale, [255, 255, 255]);
    font::draw(&mut img, &format!("{:.1}", heatmap::FLOOR), bottom + scale, bar_x, scale, [255, 255, 255]);
    // Label band.
    for (i, line) in lines.iter().enumerate() {
        let text = font::fit(line, w - 2 * pad, scale);
        let colour = if i == 0 { [255, 220, 0] } else { [255, 255, 255] };
        font::draw(&mut img, &text, rows + pad + i * font::CELL_H * scale, pad, scale, colour);
    }
    img
}

/// What the SC object is.
#[derive(Debug, Clone)]
pub struct Capture {
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub series_number: u32,
    pub instance_number: u32,
    pub source: ImageRef,
    pub model: String,
    pub version: String,
    /// How the map was made (`pm::map_method`).
    pub method: &'static str,
    pub created_ms: i64,
    pub station: String,
}

/// The Secondary Capture data set (with pixels), de-identified identity from `identity`.
pub fn build(c: &Capture, rgb: &Array3<u8>, identity: &InMemDicomObject) -> InMemDicomObject {
    let (rows, cols, _) = rgb.dim();
    let mut o = start_object(dicom_dictionary_std::uids::SECONDARY_CAPTURE_IMAGE_STORAGE, &c.sop_instance_uid, identity, c.created_ms);
    // General Series.
    put(&mut o, tags::MODALITY, VR::CS, "OT");
    o.put(DataElement::new(tags::LATERALITY, VR::CS, PrimitiveValue::Empty));
    put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &c.series_uid);
    put(&mut o, tags::SERIES_NUMBER, VR::IS, &c.series_number.to_string());
    put(&mut o, tags::SERIES_DESCRIPTION, VR::LO, &ascii(&format!("AI heatmap {} {}", c.model, c.version)).chars().take(64).collect::<String>());
    // General Equipment, SC Equipment.
    put(&mut o, tags::MANUFACTURER, VR::LO, "triage-node");
    put(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "triage-node");
    put(&mut o, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
    put(&mut o, tags::STATION_NAME, VR::SH, &ascii(&c.station).chars().take(16).collect::<String>());
    put(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
    // General Image, SC Image.
    put(&mut o, tags::INSTANCE_NUMBER, VR::IS, &c.instance_number.to_string());
    o.put(DataElement::new(tags::PATIENT_ORIENTATION, VR::CS, PrimitiveValue::Empty));
    o.put(DataElement::new(tags::IMAGE_TYPE, VR::CS, PrimitiveValue::Strs(["DERIVED".to_string(), "SECONDARY".to_string()].into())));
    put(
        &mut o,
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        &ascii(&format!("{} of AI model {} {} blended over the source image as windowed for the model", capitalised(c.method), c.model, c.version)),
    );
    let mut src = InMemDicomObject::new_empty();
    put(&mut src, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &c.source.sop_class_uid);
    put(&mut src, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &c.source.sop_instance_uid);
    if let Some(f) = c.source.frame {
        put(&mut src, tags::REFERENCED_FRAME_NUMBER, VR::IS, &f.to_string());
    }
    put_seq(&mut src, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![Code::new("121322", "DCM", "Source image for image processing operation").item()]);
    put_seq(&mut o, tags::SOURCE_IMAGE_SEQUENCE, vec![src]);
    put(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    // Image Pixel.
    put_u16(&mut o, tags::SAMPLES_PER_PIXEL, 3);
    put(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    put_u16(&mut o, tags::PLANAR_CONFIGURATION, 0);
    put_u16(&mut o, tags::ROWS, rows as u16);
    put_u16(&mut o, tags::COLUMNS, cols as u16);
    put_u16(&mut o, tags::BITS_ALLOCATED, 8);
    put_u16(&mut o, tags::BITS_STORED, 8);
    put_u16(&mut o, tags::HIGH_BIT, 7);
    put_u16(&mut o, tags::PIXEL_REPRESENTATION, 0);
    let mut pixels: Vec<u8> = rgb.iter().copied().collect();
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    o.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(pixels.into())));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picture_has_legend_and_label_outside_the_image() {
        let blended = Array3::<u8>::from_elem((512, 400, 3), 100);
        let label = Label {
            finding: "nodule".into(),
            probability: 0.97,
            urgent: false,
            tier: "high".into(),
            model: "demo".into(),
            version: "1".into(),
            demonstration: true,
        };
        let img = render(&blended, &label);
        let (h, w, _) = img.dim();
        assert!(h > 512 && w > 400);
        // The image itself is untouched; the legend's top is red-dominated, the label band has text.
        assert_eq!(img[[10, 10, 0]], 100);
        let top = (0..h).find(|&r| img[[r, 400 + 4 + 2, 0]] > 0 && img[[r, 400 + 4 + 2, 2]] == 0).expect("legend");
        assert!(top < 40);
        assert!((512..h).any(|r| (0..w).any(|c| img[[r, c, 0]] == 255)));
        assert!(label.lines()[2].contains("NOT CLINICALLY VALIDATED"));
        assert!(label.lines()[0].contains("NODULE 97.0%"), "{}", label.lines()[0]);
        assert_eq!(percent(0.99999), "99.9%");
        assert_eq!(percent(0.9996), "99.9%");
    }
}
