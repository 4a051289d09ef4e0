//! Pixel preprocessing: decode a stored instance (any transfer syntax the node accepts), apply
//! the Modality LUT, a VOI window (the file's, a fixed one such as a CT window in HU, or a
//! percentile window), MONOCHROME1 inversion, and a bilinear resize; then the manifest's
//! channels (the grey image repeated, a window per channel, or the RGB planes), scale (0..1 or
//! 0..255), per-channel mean/std and layout (NCHW or NHWC): the array a model sees.
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
    /// Frames x rows x columns; a colour image's samples averaged.
    pub values: Array3<f32>,
    pub photometric: String,
    /// The windows the file declares, first one first.
    pub windows: Vec<Window>,
    /// A colour image's RGB samples scaled to 0..1 (value / (2^Bits Stored - 1), as an image
    /// library gives 8-bit RGB divided by 255), frames x rows x columns x 3; None for grey.
    pub rgb: Option<ndarray::Array4<f32>>,
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
    /// Pixel Spacing (0028,0030) in mm, row then column spacing, when present and above zero
    /// (in the patient; never Imager Pixel Spacing, which is at the detector).
    pub pixel_spacing: Option<[f64; 2]>,
}

/// An opened Part 10 file: its routing attributes, pixels not yet decoded.
pub struct Image {
    obj: dicom_object::DefaultDicomObject,
    pub attrs: ImageAttrs,
}

impl Image {
    pub fn open(path: &Path) -> Result<Image, PixelError> {
        let obj = dicom_object::open_file(path).map_err(|e| PixelError::Open(e.to_string()))?;
        let attrs = attrs_of(&obj);
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
        let mut arr = pixels.to_ndarray_with_options::<f32>(&ConvertOptions::new()).map_err(|e| PixelError::Decode(e.to_string()))?;
        let (values, rgb) = match arr.shape()[3] {
            1 => (arr.index_axis(Axis(3), 0).to_owned(), None),
            3 => {
                // Compressed colour decodes to RGB; native YBR_FULL is converted here (PS3.3
                // C.7.6.3.1.2); other colour models are kept grey only.
                let full = ((1u32 << pixels.bits_stored().clamp(1, 16)) - 1) as f32;
                let colour = match photometric.as_str() {
                    "RGB" => true,
                    "YBR_FULL" => {
                        ybr_full_to_rgb(&mut arr, full);
                        true
                    }
                    _ => false,
                };
                let grey = arr.mean_axis(Axis(3)).ok_or_else(|| PixelError::Unsupported("empty color image".into()))?;
                (grey, colour.then(|| arr.mapv(|v| v / full)))
            }
            n => return Err(PixelError::Unsupported(format!("{n} samples per pixel"))),
        };
        if values.iter().any(|v| !v.is_finite()) {
            return Err(PixelError::Decode("non-finite pixel values".into()));
        }
        Ok(Decoded { values, photometric, windows, rgb })
    }
}

/// An object's routing attributes (its header is enough).
pub fn attrs_of(obj: &dicom_object::DefaultDicomObject) -> ImageAttrs {
    let text = |tag| obj.get(tag).and_then(|e| e.to_str().ok()).map(|v| v.trim().trim_end_matches('\0').to_string()).unwrap_or_default();
    use dicom_dictionary_std::tags;
    ImageAttrs {
        modality: text(tags::MODALITY),
        body_part: text(tags::BODY_PART_EXAMINED),
        sop_class_uid: text(tags::SOP_CLASS_UID),
        photometric: text(tags::PHOTOMETRIC_INTERPRETATION),
        image_type: text(tags::IMAGE_TYPE).split('\\').map(|v| v.trim().to_ascii_uppercase()).filter(|v| !v.is_empty()).collect(),
        slice_thickness: text(tags::SLICE_THICKNESS).trim().parse().ok(),
        kernel: text(tags::CONVOLUTION_KERNEL),
        contrast: !text(tags::CONTRAST_BOLUS_AGENT).is_empty(),
        pixel_spacing: {
            let v: Vec<f64> = text(tags::PIXEL_SPACING).split('\\').filter_map(|v| v.trim().parse().ok()).collect();
            match v[..] {
                [r, c] if r > 0.0 && c > 0.0 && r.is_finite() && c.is_finite() => Some([r, c]),
                _ => None,
            }
        },
    }
}

/// YBR_FULL to RGB in place (PS3.3 C.7.6.3.1.2, the inverse of its equations), clamped to
/// 0..`full`.
fn ybr_full_to_rgb(arr: &mut ndarray::Array4<f32>, full: f32) {
    let half = (full + 1.0) / 2.0;
    for mut px in arr.lanes_mut(Axis(3)) {
        let (y, cb, cr) = (px[0], px[1] - half, px[2] - half);
        px[0] = (y + 1.402 * cr).clamp(0.0, full);
        px[1] = (y - 0.344_136 * cb - 0.714_136 * cr).clamp(0.0, full);
        px[2] = (y + 1.772 * cb).clamp(0.0, full);
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

/// Where a model's channels come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Color {
    /// The windowed grey image (MONOCHROME2), repeated over the channels, or one window per
    /// channel.
    #[default]
    Grey,
    /// The RGB planes of a colour image, as an image library gives them (no window).
    Rgb,
}

/// The order of a model's input tensor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Layout {
    /// [N, channels, rows, cols].
    #[default]
    Nchw,
    /// [N, rows, cols, channels] (channels last).
    Nhwc,
}

/// A manifest's word for one of `options`, or an error that lists them.
pub fn one_of<T: Copy>(value: &str, options: &[(&str, T)]) -> Result<T, String> {
    options.iter().find(|(name, _)| *name == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
        format!("{value:?} is not {}", names.join(" or "))
    })
}

impl TryFrom<String> for Color {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        one_of(&v, &[("grey", Color::Grey), ("rgb", Color::Rgb)])
    }
}

impl TryFrom<String> for Layout {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        one_of(&v, &[("nchw", Layout::Nchw), ("nhwc", Layout::Nhwc)])
    }
}

/// What a model needs as input, from its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub rows: usize,
    pub cols: usize,
    pub channels: usize,
    /// The grey image's window (with a window per channel, the first channel's): the heatmaps
    /// are drawn over the frame in this window.
    pub window: WindowRule,
    /// One window per channel (e.g. brain, subdural and bone windows of a CT), else empty.
    pub channel_windows: Vec<WindowRule>,
    pub color: Color,
    pub layout: Layout,
    /// What white (full intensity) becomes: 1 (0..1) or 255 (0..255).
    pub scale: f32,
    /// Per channel, after scaling: (x - mean) / std.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// One frame as the model sees it.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub frame: usize,
    /// The frame's tensor in the model's layout (channels x rows x cols, or rows x cols x
    /// channels), row-major.
    pub values: Vec<f32>,
    /// The frame's size before resizing: the class activation map registers to it.
    pub source_rows: usize,
    pub source_cols: usize,
    pub window: Window,
    /// The first channel's values as windowed (0..1, before scale, mean and std) in
    /// `HISTOGRAM_BINS` bins: the input statistics the drift check compares (`histogram`).
    pub histogram: [f32; HISTOGRAM_BINS],
}

/// How many bins an input histogram has (each 0.1 wide over 0..1).
pub const HISTOGRAM_BINS: usize = 10;

/// The share of `values` (windowed, 0..1) in each of `HISTOGRAM_BINS` equal bins over 0..1: bin
/// k holds k/10 <= v < (k+1)/10, the last also 1.0 (values outside 0..1 are clamped, non-finite
/// ones skipped); all zeros for no values.
pub fn histogram(values: impl IntoIterator<Item = f32>) -> [f32; HISTOGRAM_BINS] {
    let mut counts = [0u64; HISTOGRAM_BINS];
    for v in values.into_iter().filter(|v| v.is_finite()) {
        counts[((v * HISTOGRAM_BINS as f32).floor().max(0.0) as usize).min(HISTOGRAM_BINS - 1)] += 1;
    }
    let total = counts.iter().sum::<u64>().max(1) as f64;
    counts.map(|c| (c as f64 / total) as f32)
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

    /// Every frame as the model of `spec` sees it: each channel's plane (the grey image
    /// windowed and shown as MONOCHROME2, in the channel's own window if it has one, or an RGB
    /// plane), resized, scaled, normalised with the channel's mean and std, laid out as the
    /// model takes it. A model that takes RGB refuses a grey image.
    pub fn model_inputs(&self, spec: &InputSpec) -> Result<Vec<ModelInput>, PixelError> {
        let (frames, source_rows, source_cols) = self.values.dim();
        if spec.color == Color::Rgb && self.rgb.is_none() {
            return Err(PixelError::Unsupported(format!("the model takes RGB images; this one is {}", self.photometric)));
        }
        let at = |v: &[f32], c: usize| v.get(c).or(v.last()).copied().unwrap_or_default();
        Ok((0..frames)
            .map(|frame| {
                let (display, window) = self.display_frame(frame, spec.window);
                let mut histogram = [0.0; HISTOGRAM_BINS];
                let planes: Vec<Array2<f32>> = (0..spec.channels)
                    .map(|c| match (&self.rgb, spec.color, spec.channel_windows.get(c)) {
                        (Some(rgb), Color::Rgb, _) => resize(rgb.index_axis(Axis(0), frame).index_axis(Axis(2), c.min(2)), spec.rows, spec.cols),
                        (_, _, Some(&rule)) => resize(self.display_frame(frame, rule).0.view(), spec.rows, spec.cols),
                        _ => resize(display.view(), spec.rows, spec.cols),
                    })
                    .enumerate()
                    .map(|(c, plane)| {
                        if c == 0 {
                            histogram = self::histogram(plane.iter().copied());
                        }
                        let (mean, std) = (at(&spec.mean, c), at(&spec.std, c));
                        plane.mapv_into(|x| (x * spec.scale - mean) / std)
                    })
                    .collect();
                let values = match spec.layout {
                    Layout::Nchw => planes.iter().flat_map(|p| p.iter().copied()).collect(),
                    Layout::Nhwc => {
                        let mut v = Vec::with_capacity(spec.channels * spec.rows * spec.cols);
                        for (r, c) in (0..spec.rows).flat_map(|r| (0..spec.cols).map(move |c| (r, c))) {
                            v.extend(planes.iter().map(|p| p[[r, c]]));
                        }
                        v
                    }
                };
                ModelInput { frame, values, source_rows, source_cols, window, histogram }
            })
            .collect())
    }
}

/// PS3.3 C.11.2.1.2.1 linear VOI function, mapped to [0, 1].
pub fn apply_window(values: &Array3<f32>, w: Window) -> Array3<f32> {
    values.mapv(|x| window_value(x, w))
}

/// One value through the PS3.3 C.11.2.1.2.1 linear VOI function, mapped to [0, 1].
pub fn window_value(x: f32, w: Window) -> f32 {
    let (c, width) = (w.center, w.width.max(1.0));
    let lower = c - 0.5 - (width - 1.0) / 2.0;
    let upper = c - 0.5 + (width - 1.0) / 2.0;
    let x = f64::from(x);
    (if x <= lower {
        0.0
    } else if x > upper {
        1.0
    } else {
        (x - (c - 0.5)) / (width - 1.0).max(f64::MIN_POSITIVE) + 0.5
    }) as f32
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

/// A box x0, y0, x1, y1 in the pixels of a model's `model_rows` x `model_cols` input mapped back
/// onto the `source_rows` x `source_cols` frame it was resized from (the inverse of `resize`:
/// the whole frame, without cropping, so an edge at x in the input is at x * cols / model_cols
/// in the source; both in image coordinates, (0, 0) the top left corner of the top left
/// pixel), ordered and clamped to the frame.
pub fn box_to_source(corners: [f32; 4], model_rows: usize, model_cols: usize, source_rows: usize, source_cols: usize) -> [f32; 4] {
    let (sx, sy) = (source_cols as f64 / model_cols.max(1) as f64, source_rows as f64 / model_rows.max(1) as f64);
    let x = |v: f32| (f64::from(v) * sx).clamp(0.0, source_cols as f64) as f32;
    let y = |v: f32| (f64::from(v) * sy).clamp(0.0, source_rows as f64) as f32;
    let [x0, y0, x1, y1] = corners;
    [x(x0.min(x1)), y(y0.min(y1)), x(x0.max(x1)), y(y0.max(y1))]
}

/// Bilinear resize of one plane (pixel centres aligned, as in OpenCV/PyTorch align_corners=False).
/// The source positions are computed in `f32` the way torch's CPU kernel computes them (scale =
/// in / out; src = max(scale * (dst + 0.5) - 0.5, 0)), so that a sharp edge falls where it
/// falls in a torch training pipeline. An empty plane resizes to zeros.
pub fn resize(plane: ArrayView2<f32>, rows: usize, cols: usize) -> Array2<f32> {
    let (h, w) = plane.dim();
    if h == 0 || w == 0 {
        return Array2::zeros((rows, cols));
    }
    // Per output index: (first source index, second, weight of the second).
    let axis = |input: usize, output: usize| -> Vec<(usize, usize, f32)> {
        let scale = input as f32 / output as f32;
        (0..output)
            .map(|o| {
                if input == output {
                    return (o, o, 0.0);
                }
                let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(input - 1);
                let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
                (i0, i1, (src - i0 as f32).clamp(0.0, 1.0))
            })
            .collect()
    };
    let (ys, xs) = (axis(h, rows), axis(w, cols));
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        let ((y0, y1, fy), (x0, x1, fx)) = (ys[r], xs[c]);
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
    fn the_input_histogram_counts_shares_of_tenths() {
        let check = |values: &[f32], expected: [f32; HISTOGRAM_BINS]| {
            let got = histogram(values.iter().copied());
            assert!(got.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{values:?}: {got:?}");
        };
        // Each bin holds k/10 <= v < (k+1)/10; 1.0 is in the last; outside 0..1 clamped.
        check(&[0.0, 0.05, 0.1, 0.95, 1.0], [0.4, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4]);
        check(&[-0.5, 1.5, f32::NAN], [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]);
        check(&[], [0.0; HISTOGRAM_BINS]);
        // A model input carries its first channel's histogram, before scale, mean and std.
        let s = InputSpec { scale: 255.0, mean: vec![10.0], std: vec![2.0], rows: 2, cols: 3, ..spec(1) };
        let got = grey().model_inputs(&s).unwrap()[0].histogram;
        assert!((got.iter().sum::<f32>() - 1.0).abs() < 1e-6 && (got[9] - 1.0 / 6.0).abs() < 1e-6 && got[0] >= 1.0 / 6.0, "{got:?}");
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
    fn boxes_map_back_onto_the_source_grid() {
        let check = |corners: [f32; 4], model: (usize, usize), source: (usize, usize), expected: [f32; 4]| {
            let got = box_to_source(corners, model.0, model.1, source.0, source.1);
            assert!(got.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-3), "{corners:?} {model:?} -> {source:?}: {got:?}, expected {expected:?}");
        };
        // The whole input is the whole frame.
        check([0.0, 0.0, 128.0, 128.0], (128, 128), (512, 512), [0.0, 0.0, 512.0, 512.0]);
        // Rows and columns scale apart: 2500 x 2000 into 128 x 128.
        check([32.0, 64.0, 48.0, 96.0], (128, 128), (2500, 2000), [500.0, 1250.0, 750.0, 1875.0]);
        // A non-square input: [rows, cols] = [64, 128] from 256 x 256.
        check([10.0, 10.0, 20.0, 30.0], (64, 128), (256, 256), [20.0, 40.0, 40.0, 120.0]);
        // Corners given the wrong way round are ordered; outside the input, clamped to the frame.
        check([48.0, 96.0, 32.0, 64.0], (128, 128), (256, 256), [64.0, 128.0, 96.0, 192.0]);
        check([-5.0, -1.0, 200.0, 64.0], (128, 128), (256, 256), [0.0, 0.0, 256.0, 128.0]);
        // Upsampling: a 4 x 4 image the model saw at 8 x 8.
        check([2.0, 2.0, 6.0, 6.0], (8, 8), (4, 4), [1.0, 1.0, 3.0, 3.0]);
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

    fn spec(channels: usize) -> InputSpec {
        InputSpec {
            rows: 2,
            cols: 3,
            channels,
            window: WindowRule::Fixed(Window { center: 50.5, width: 101.0 }),
            channel_windows: Vec::new(),
            color: Color::Grey,
            layout: Layout::Nchw,
            scale: 1.0,
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// A 2 x 3 grey frame whose values the window 50.5/101 maps to value / 100.
    fn grey() -> Decoded {
        let values = Array3::from_shape_vec((1, 2, 3), vec![0.0, 10.0, 20.0, 30.0, 40.0, 100.0]).unwrap();
        Decoded { values, photometric: "MONOCHROME2".into(), windows: Vec::new(), rgb: None }
    }

    #[test]
    fn grey_repeated_scaled_and_normalised_per_channel() {
        let d = grey();
        let one = d.model_inputs(&spec(1)).unwrap();
        let plane = [0.0f32, 0.1, 0.2, 0.3, 0.4, 1.0];
        assert!(one[0].values.iter().zip(plane).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", one[0].values);
        // Three channels, 0..255, each channel its own mean and std.
        let s = InputSpec { scale: 255.0, mean: vec![10.0, 20.0, 30.0], std: vec![2.0, 4.0, 5.0], ..spec(3) };
        let three = &d.model_inputs(&s).unwrap()[0].values;
        assert_eq!(three.len(), 18);
        for c in 0..3 {
            for (i, p) in plane.iter().enumerate() {
                let want = (p * 255.0 - s.mean[c]) / s.std[c];
                assert!((three[c * 6 + i] - want).abs() < 1e-4, "channel {c} pixel {i}: {} vs {want}", three[c * 6 + i]);
            }
        }
        // NHWC: the same values, channels last.
        let nhwc = &d.model_inputs(&InputSpec { layout: Layout::Nhwc, ..s.clone() }).unwrap()[0].values;
        for c in 0..3 {
            for i in 0..6 {
                assert_eq!(nhwc[i * 3 + c], three[c * 6 + i]);
            }
        }
    }

    #[test]
    fn a_window_per_channel_and_rgb_planes() {
        let d = grey();
        let narrow = WindowRule::Fixed(Window { center: 10.5, width: 21.0 });
        let s = InputSpec { channel_windows: vec![spec(1).window, narrow, WindowRule::Percentile([0.0, 100.0])], ..spec(3) };
        let v = &d.model_inputs(&s).unwrap()[0].values;
        assert!((v[1] - 0.1).abs() < 1e-6 && (v[5] - 1.0).abs() < 1e-6, "the first channel's window: {v:?}");
        assert!(v[6] == 0.0 && (v[7] - 0.5).abs() < 1e-6 && v[8] == 1.0, "the narrow window: {v:?}");
        assert!(v[12] == 0.0 && v[17] >= 0.99, "the percentile window: {v:?}");
        // A grey image given to an RGB model is refused; an RGB one gives its planes.
        let rgb = InputSpec { color: Color::Rgb, ..spec(3) };
        assert!(matches!(d.model_inputs(&rgb), Err(PixelError::Unsupported(_))));
        let planes = ndarray::Array4::from_shape_fn((1, 2, 3, 3), |(_, r, c, k)| (r * 3 + c) as f32 / 10.0 + k as f32);
        let colour = Decoded { rgb: Some(planes), photometric: "RGB".into(), ..grey() };
        let v = &colour.model_inputs(&rgb).unwrap()[0].values;
        assert!((v[4] - 0.4).abs() < 1e-6 && (v[6 + 4] - 1.4).abs() < 1e-6 && (v[12 + 5] - 2.5).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn ybr_full_converts_to_rgb() {
        // Pure grey stays grey; Cr above the middle is red.
        let mut a = ndarray::Array4::from_shape_vec((1, 1, 2, 3), vec![100.0, 128.0, 128.0, 76.0, 85.0, 255.0]).unwrap();
        ybr_full_to_rgb(&mut a, 255.0);
        assert_eq!((a[[0, 0, 0, 0]], a[[0, 0, 0, 1]], a[[0, 0, 0, 2]]), (100.0, 100.0, 100.0));
        assert!(a[[0, 0, 1, 0]] > 250.0 && a[[0, 0, 1, 1]] < 5.0 && a[[0, 0, 1, 2]] < 5.0, "{a:?}");
    }
}
