//! A result object as a picture (WADO-RS `rendered`, PS3.18 10.4.1.1.3): the heatmap
//! Secondary Capture (8-bit RGB, interleaved) as it is, the Parametric Map's first frame of
//! float values windowed to grey over the frame's own range (lowest black, highest white), each
//! as PNG. Other objects (a report, a rejection note) have no picture. Pure: no IO.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// Why an object has no picture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("this object has no picture (only the Secondary Capture and the Parametric Map are rendered)")]
    NotAnImage,
    #[error("the object's pixels cannot be read: {0}")]
    Pixels(String),
}

fn number(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<usize> {
    obj.get(tag)?.to_int::<u32>().ok().map(|v| v as usize)
}

/// The picture of `obj` as PNG bytes.
pub fn png(obj: &InMemDicomObject) -> Result<Vec<u8>, RenderError> {
    let (Some(rows), Some(cols)) = (number(obj, tags::ROWS), number(obj, tags::COLUMNS)) else {
        return Err(RenderError::NotAnImage);
    };
    let bad = |why: &str| RenderError::Pixels(why.to_string());
    if rows == 0 || cols == 0 {
        return Err(bad("no rows or columns"));
    }
    let n = rows * cols;
    if let Some(floats) = obj.get(tags::FLOAT_PIXEL_DATA) {
        let values = floats.to_multi_float32().map_err(|_| bad("Float Pixel Data is not 32-bit floats"))?;
        let frame = values.get(..n).ok_or_else(|| bad("Float Pixel Data shorter than one frame"))?;
        let finite = || frame.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = (finite().fold(f32::INFINITY, f32::min), finite().fold(f32::NEG_INFINITY, f32::max));
        let width = if hi > lo { hi - lo } else { 1.0 };
        let grey: Vec<u8> = frame.iter().map(|v| if v.is_finite() { (((v - lo) / width) * 255.0).round().clamp(0.0, 255.0) as u8 } else { 0 }).collect();
        return encode(&grey, rows, cols, png::ColorType::Grayscale);
    }
    let samples = number(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let bits = number(obj, tags::BITS_ALLOCATED).unwrap_or(0);
    let planar = number(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0);
    let photometric = obj.get(tags::PHOTOMETRIC_INTERPRETATION).and_then(|e| e.to_str().ok()).map(|s| s.trim().to_string()).unwrap_or_default();
    if samples != 3 || bits != 8 || planar != 0 || photometric != "RGB" {
        return Err(RenderError::NotAnImage);
    }
    let pixels = obj.get(tags::PIXEL_DATA).ok_or(RenderError::NotAnImage)?;
    let bytes = pixels.to_bytes().map_err(|_| bad("Pixel Data is encapsulated"))?;
    let frame = bytes.get(..n * 3).ok_or_else(|| bad("Pixel Data shorter than one frame"))?;
    encode(frame, rows, cols, png::ColorType::Rgb)
}

fn encode(data: &[u8], rows: usize, cols: usize, colour: png::ColorType) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, cols as u32, rows as u32);
    enc.set_color(colour);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| RenderError::Pixels(e.to_string()))?;
    writer.write_image_data(data).map_err(|e| RenderError::Pixels(e.to_string()))?;
    writer.finish().map_err(|e| RenderError::Pixels(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};

    use super::*;
    use crate::results::dataset::put;

    fn decode(png_bytes: &[u8]) -> (png::ColorType, u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(png_bytes).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.color_type, info.width, info.height, buf)
    }

    fn image(rows: u16, cols: u16) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        o.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)));
        o.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)));
        o
    }

    #[test]
    fn a_parametric_map_is_windowed_to_grey_over_its_range() {
        let mut o = image(2, 2);
        o.put(DataElement::new(tags::FLOAT_PIXEL_DATA, VR::OF, PrimitiveValue::F32(vec![0.25, 0.5, 0.75, f32::NAN, 9.0, 9.0, 9.0, 9.0].into())));
        let (colour, w, h, px) = decode(&png(&o).unwrap());
        assert_eq!((colour, w, h), (png::ColorType::Grayscale, 2, 2));
        assert_eq!(px, [0, 128, 255, 0], "the first frame only; not a number is black");
        let mut flat = image(1, 2);
        flat.put(DataElement::new(tags::FLOAT_PIXEL_DATA, VR::OF, PrimitiveValue::F32(vec![3.0, 3.0].into())));
        assert_eq!(decode(&png(&flat).unwrap()).3, [0, 0]);
    }

    #[test]
    fn an_rgb_secondary_capture_is_its_pixels() {
        let mut o = image(1, 2);
        o.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16)));
        o.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16)));
        o.put(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, PrimitiveValue::from(0u16)));
        put(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
        o.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(vec![1, 2, 3, 4, 5, 6].into())));
        assert_eq!(decode(&png(&o).unwrap()), (png::ColorType::Rgb, 2, 1, vec![1, 2, 3, 4, 5, 6]));
        let mut short = o.clone();
        short.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(vec![1, 2].into())));
        assert!(matches!(png(&short), Err(RenderError::Pixels(_))));
        assert_eq!(png(&InMemDicomObject::new_empty()), Err(RenderError::NotAnImage), "a report");
        let mut grey = o;
        put(&mut grey, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        assert_eq!(png(&grey), Err(RenderError::NotAnImage));
    }
}
