//! Pixel preprocessing: decode a stored instance (any transfer syntax the node accepts), apply
//! the Modality LUT, a VOI window (the file's, a fixed one such as a CT window in HU, or a
//! percentile window), MONOCHROME1 inversion, and a bilinear resize: the array a model sees.
//!
//! Owns: the order and arithmetic of those steps (PS3.3 C.11.1 Modality LUT, C.11.2 VOI LUT,
//! linear function of C.11.2.1.2.1). Must not: know tch or log pixel values.

use std::path::Path;

use dicom_pixeldata::{ConvertOptions, PixelDecoder};
use ndarray::{Array2, Array3, ArrayView2, Axis};

#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    #[error("reading the DICOM file: {0}")]
    Open(String),
    #[error("decoding pixel data: {0}")]
    Decode(String),
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("the pixel decoder crashed on this instance's pixel data (a malformed stream)")]
    Crashed,
}

/// A VOI window (center and width, in the units after the Modality LUT: HU for CT).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
}

/// Decoded pixel values with the Modality LUT applied, one grayscale plane per frame.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub values: Array3<f32>,
    pub photometric: String,
    /// The windows the file declares, first one first.
    pub windows: Vec<Window>,
}

/// The attributes that route an instance to a model (trimmed; empty when absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageAttrs {
    pub modality: String,
    pub body_part: String,
    pub sop_class_uid: String,
    pub photometric: String,
    /// Image Type (0008,0008) values, upper case.
    pub image_type: Vec<String>,
    /// Slice Thickness (0018,0050) in mm.
    pub slice_thickness: Option<f64>,
    /// Convolution Kernel (0018,1210) values joined by `\`.
    pub kernel: String,
    /// Contrast/Bolus Agent (0018,0010) present and not empty.
    pub contrast: bool,
}

/// An opened Part 10 file: its routing attributes, pixels not yet decoded.
pub struct Image {
    obj: dicom_object::DefaultDicomObject,
    pub attrs: ImageAttrs,
}

impl Image {
    pub fn open(path: &Path) -> Result<Image, PixelError> {
        let obj = dicom_object::open_file(path).map_err(|e| PixelError::Open(e.to_string()))?;
        let text = |tag| obj.get(tag).and_then(|e| e.to_str().ok()).map(|v| v.trim().trim_end_matches('\0').to_string()).unwrap_or_default();
        use dicom_dictionary_std::tags;
        let attrs = ImageAttrs {
            modality: text(tags::MODALITY),
            body_part: text(tags::BODY_PART_EXAMINED),
            sop_class_uid: text(tags::SOP_CLASS_UID),
            photometric: text(tags::PHOTOMETRIC_INTERPRETATION),
            image_type: text(tags::IMAGE_TYPE).split('\\').map(|v| v.trim().to_ascii_uppercase()).filter(|v| !v.is_empty()).collect(),
            slice_thickness: text(tags::SLICE_THICKNESS).trim().parse().ok(),
            kernel: text(tags::CONVOLUTION_KERNEL),
            contrast: !text(tags::CONTRAST_BOLUS_AGENT).is_empty(),
        };
        Ok(Image { obj, attrs })
    }

    /// Decode every frame and apply the Modality LUT (rescale slope/intercept or LUT sequence).
    pub fn decode(&self) -> Result<Decoded, PixelError> {
        if self.obj.get(dicom_dictionary_std::tags::PIXEL_DATA).is_none() {
            return Err(PixelError::Unsupported("no Pixel Data".into()));
        }
        let pixels = self.obj.decode_pixel_data().map_err(|e| PixelError::Decode(e.to_string()))?;
        let photometric = pixels.photometric_interpretation().as_str().to_string();
        let windows = pixels.window().ok().flatten().map(|ws| ws.iter().map(|w| Window { center: w.center, width: w.width }).collect()).unwrap_or_default();
        let arr = pixels.to_ndarray_with_options::<f32>(&ConvertOptions::new()).map_err(|e| PixelError::Decode(e.to_string()))?;
        let values = match arr.shape()[3] {
            1 => arr.index_axis(Axis(3), 0).to_owned(),
            3 => arr.mean_axis(Axis(3)).ok_or_else(|| PixelError::Unsupported("empty color image".into()))?,
            n => return Err(PixelError::Unsupported(format!("{n} samples per pixel"))),
        };
        if values.iter().any(|v| !v.is_finite()) {
            return Err(PixelError::Decode("non-finite pixel values".into()));
        }
        Ok(Decoded { values, photometric, windows })
    }
}

/// Decode every frame of a Part 10 file and apply its Modality LUT (rescale slope/intercept).
pub fn decode(path: &Path) -> Result<Decoded, PixelError> {
    Image::open(path)?.decode()
}

/// How a frame is windowed to 0..1 before the model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowRule {
    /// A fixed window (a CT window in HU).
    Fixed(Window),
    /// The file's first VOI window, else the percentile window.
    File { percentiles: [f64; 2] },
    /// The window spanning these percentiles of the frame's values.
    Percentile([f64; 2]),
}

/// What a model needs as input, from its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub rows: usize,
    pub cols: usize,
    pub channels: usize,
    pub window: WindowRule,
    pub mean: f32,
    pub std: f32,
}

/// One frame as the model sees it.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub frame: usize,
    /// channels x rows x cols values, row-major.
    pub values: Vec<f32>,
    /// The frame's size before resizing: the class activation map registers to it.
    pub source_rows: usize,
    pub source_cols: usize,
    pub window: Window,
}

impl Decoded {
    /// The window `rule` gives for frame `frame`.
    pub fn window_for(&self, frame: usize, rule: WindowRule) -> Window {
        let plane = || self.values.index_axis(Axis(0), frame).insert_axis(Axis(0)).to_owned();
        match rule {
            WindowRule::Fixed(w) => w,
            WindowRule::File { .. } if !self.windows.is_empty() => self.windows[0],
            WindowRule::File { percentiles: p } | WindowRule::Percentile(p) => percentile_window(&plane(), p[0], p[1]),
        }
    }

    /// Frame `frame` windowed to 0..1 and shown as MONOCHROME2 (bright = dense), at source size.
    pub fn display_frame(&self, frame: usize, rule: WindowRule) -> (Array2<f32>, Window) {
        let w = self.window_for(frame, rule);
        let plane = self.values.index_axis(Axis(0), frame).insert_axis(Axis(0)).to_owned();
        let mut windowed = apply_window(&plane, w);
        to_monochrome2(&mut windowed, &self.photometric);
        (windowed.index_axis_move(Axis(0), 0), w)
    }

    /// Every frame as the model of `spec` sees it: windowed, MONOCHROME2, resized, replicated to
    /// the model's channels and normalised.
    pub fn model_inputs(&self, spec: &InputSpec) -> Vec<ModelInput> {
        let (frames, source_rows, source_cols) = self.values.dim();
        (0..frames)
            .map(|frame| {
                let (display, window) = self.display_frame(frame, spec.window);
                let resized = resize(display.view(), spec.rows, spec.cols);
                let plane: Vec<f32> = resized.iter().map(|x| (x - spec.mean) / spec.std).collect();
                let values = plane.repeat(spec.channels);
                ModelInput { frame, values, source_rows, source_cols, window }
            })
            .collect()
    }
}

/// PS3.3 C.11.2.1.2.1 linear VOI function, mapped to [0, 1].
pub fn apply_window(values: &Array3<f32>, w: Window) -> Array3<f32> {
    let (c, width) = (w.center, w.width.max(1.0));
    let lower = c - 0.5 - (width - 1.0) / 2.0;
    let upper = c - 0.5 + (width - 1.0) / 2.0;
    values.mapv(|x| {
        let x = f64::from(x);
        (if x <= lower {
            0.0
        } else if x > upper {
            1.0
        } else {
            (x - (c - 0.5)) / (width - 1.0).max(f64::MIN_POSITIVE) + 0.5
        }) as f32
    })
}

/// A window spanning the `low`..`high` percentiles (0-100) of the values.
pub fn percentile_window(values: &Array3<f32>, low: f64, high: f64) -> Window {
    let mut v: Vec<f32> = values.iter().copied().collect();
    if v.is_empty() {
        return Window { center: 0.0, width: 1.0 };
    }
    let last = v.len() - 1;
    let mut pick = |p: f64| -> f64 {
        let k = (((p / 100.0) * last as f64).round() as usize).min(last);
        let (_, x, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
        f64::from(*x)
    };
    let (lo, hi) = (pick(low), pick(high));
    Window { center: (lo + hi) / 2.0 + 0.5, width: (hi - lo).max(1.0) + 1.0 }
}

/// MONOCHROME1 displays low values as white: invert so that every input reads MONOCHROME2.
pub fn to_monochrome2(windowed: &mut Array3<f32>, photometric: &str) {
    if photometric == "MONOCHROME1" {
        windowed.mapv_inplace(|x| 1.0 - x);
    }
}

/// Bilinear resize of one plane (pixel centres aligned, as in OpenCV/PyTorch align_corners=False).
pub fn resize(plane: ArrayView2<f32>, rows: usize, cols: usize) -> Array2<f32> {
    let (h, w) = plane.dim();
    let sy = h as f64 / rows as f64;
    let sx = w as f64 / cols as f64;
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        let y = ((r as f64 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f64);
        let x = ((c as f64 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f64);
        let (y0, x0) = (y.floor() as usize, x.floor() as usize);
        let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
        let (fy, fx) = ((y - y0 as f64) as f32, (x - x0 as f64) as f32);
        let top = plane[[y0, x0]] * (1.0 - fx) + plane[[y0, x1]] * fx;
        let bottom = plane[[y1, x0]] * (1.0 - fx) + plane[[y1, x1]] * fx;
        top * (1.0 - fy) + bottom * fy
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn linear_window_follows_ps33() {
        // Center 40, width 400 (a soft-tissue CT window): -160 HU and below is 0, 240 and above 1.
        let v = Array3::from_shape_vec((1, 1, 5), vec![-1000.0, -160.0, 40.0, 239.0, 3000.0]).unwrap();
        let out = apply_window(&v, Window { center: 40.0, width: 400.0 });
        let got: Vec<f32> = out.iter().copied().collect();
        assert_eq!(got[0], 0.0);
        assert!(got[1] < 0.002, "{got:?}");
        assert!((got[2] - 0.5013).abs() < 1e-3, "{got:?}");
        assert!(got[3] > 0.998, "{got:?}");
        assert_eq!(got[4], 1.0);
    }

    #[test]
    fn monochrome1_is_inverted_only() {
        let mut a = Array3::from_elem((1, 1, 2), 0.25f32);
        to_monochrome2(&mut a, "MONOCHROME2");
        assert_eq!(a[[0, 0, 0]], 0.25);
        to_monochrome2(&mut a, "MONOCHROME1");
        assert_eq!(a[[0, 0, 0]], 0.75);
    }

    #[test]
    fn resize_keeps_constants_and_averages() {
        let p = array![[0.0f32, 1.0], [0.0, 1.0]];
        let r = resize(p.view(), 2, 4);
        assert_eq!(r.dim(), (2, 4));
        assert_eq!(r[[0, 0]], 0.0);
        assert_eq!(r[[0, 3]], 1.0);
        assert!((r[[0, 1]] - 0.25).abs() < 1e-6 && (r[[0, 2]] - 0.75).abs() < 1e-6, "{r:?}");
        let c = Array2::from_elem((7, 5), 3.5f32);
        assert!(resize(c.view(), 3, 11).iter().all(|&x| (x - 3.5).abs() < 1e-6));
    }

    #[test]
    fn percentile_window_spans_the_range() {
        let v = Array3::from_shape_fn((1, 10, 10), |(_, r, c)| (r * 10 + c) as f32);
        let w = percentile_window(&v, 0.0, 100.0);
        assert_eq!((w.center, w.width), (50.0, 100.0));
        let out = apply_window(&v, w);
        assert_eq!(out[[0, 0, 0]], 0.0);
        assert!(out[[0, 9, 9]] >= 0.99);
    }
}
