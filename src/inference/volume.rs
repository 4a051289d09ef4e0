//! A series as a slab or volume model sees it: each slice's geometry (Image Orientation and
//! Position (Patient), Pixel Spacing, rows and columns) read from its header, the slices ordered
//! along the slice normal (never by Instance Number), the series refused when it is not one
//! regular stack (mixed orientation or size, a gap over 1.5 times the median spacing, two
//! slices at one position, fewer than the manifest's `input.min_slices`), and the trilinear
//! resampling of the series in HU (as torch's `interpolate(trilinear, align_corners=False)`
//! when the whole series is resized to `input.size`; centred at `input.spacing` otherwise),
//! slice by slice into one buffer of the model's size, windowed at the end; a model's 3D map
//! sampled back onto each source slice; a slab's slice indices (the edge slice repeated).
//!
//! Owns: that geometry and arithmetic. Must not: know tch, read the database, or log pixel
//! values or positions.

use std::path::Path;

use ndarray::{Array2, ArrayView2};

use super::preprocess::{window_value, Decoded, ImageAttrs, PixelError, Window, WindowRule};

/// Why a series cannot be given to a slab or volume model (the study's result for that model
/// fails with this reason).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VolumeError {
    #[error("the series has {got} slice(s); the model needs at least {min} (input.min_slices)")]
    TooFew { got: usize, min: usize },
    #[error("slice {index} of the series lacks {what}: its position along the slice normal is unknown")]
    NoGeometry { index: usize, what: &'static str },
    #[error("the series mixes slice orientations (Image Orientation (Patient)); a volume needs one")]
    MixedOrientation,
    #[error("the series mixes image sizes or pixel spacings; a volume needs one")]
    MixedSize,
    #[error("two slices of the series share one position along the slice normal")]
    Duplicate,
    #[error("missing or uneven slices: a gap of {gap:.2} mm after slice {after} of {slices} (median spacing {median:.2} mm; more than 1.5 times it)")]
    Gap { after: usize, slices: usize, gap: f64, median: f64 },
    #[error("slice {index} of the series: {reason}")]
    Pixels { index: usize, reason: String },
}

/// One slice's geometry, from its header.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Geometry {
    pub rows: usize,
    pub cols: usize,
    /// Image Orientation (Patient): row direction, then column direction.
    pub orientation: Option<[f64; 6]>,
    /// Image Position (Patient): the centre of the first pixel, mm.
    pub position: Option<[f64; 3]>,
    /// Pixel Spacing: between rows, between columns, mm.
    pub pixel_spacing: Option<[f64; 2]>,
}

/// A slice's routing attributes and geometry, its header read up to the pixel data.
pub fn read_header(path: &Path) -> Result<(ImageAttrs, Geometry), PixelError> {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path).map_err(|e| PixelError::Open(e.to_string()))?;
    let attrs = super::preprocess::attrs_of(&obj);
    let numbers = |tag| -> Vec<f64> {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|v| v.split('\\').filter_map(|x| x.trim().trim_end_matches('\0').parse().ok()).collect())
            .unwrap_or_default()
    };
    let count = |tag| numbers(tag).first().map_or(0, |v| *v as usize);
    let (iop, ipp) = (numbers(tags::IMAGE_ORIENTATION_PATIENT), numbers(tags::IMAGE_POSITION_PATIENT));
    let geometry = Geometry {
        rows: count(tags::ROWS),
        cols: count(tags::COLUMNS),
        orientation: <[f64; 6]>::try_from(iop.as_slice()).ok().filter(|v| v.iter().all(|x| x.is_finite())),
        position: <[f64; 3]>::try_from(ipp.as_slice()).ok().filter(|v| v.iter().all(|x| x.is_finite())),
        pixel_spacing: attrs.pixel_spacing,
    };
    Ok((attrs, geometry))
}

/// A series checked as one regular stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Indices into the slices given, ordered along the slice normal (increasing position).
    pub order: Vec<usize>,
    /// Each ordered slice's position along the normal, mm.
    pub positions: Vec<f64>,
    /// The median distance between adjacent slices, mm (1 for a single slice).
    pub spacing: f64,
    pub rows: usize,
    pub cols: usize,
    /// Between rows, between columns, mm (1, 1 when the slices have none).
    pub pixel_spacing: [f64; 2],
}

/// Order `slices` along their normal and check them: one orientation (within 1e-4), one size
/// and pixel spacing, no two at one position, no gap over 1.5 times the median spacing, at
/// least `min_slices`.
pub fn stack(slices: &[Geometry], min_slices: usize) -> Result<Stack, VolumeError> {
    if slices.len() < min_slices.max(1) {
        return Err(VolumeError::TooFew { got: slices.len(), min: min_slices.max(1) });
    }
    let first = &slices[0];
    let mut keyed = Vec::with_capacity(slices.len());
    let iop0 = first.orientation.ok_or(VolumeError::NoGeometry { index: 0, what: "Image Orientation (Patient)" })?;
    let normal = [iop0[1] * iop0[5] - iop0[2] * iop0[4], iop0[2] * iop0[3] - iop0[0] * iop0[5], iop0[0] * iop0[4] - iop0[1] * iop0[3]];
    for (index, s) in slices.iter().enumerate() {
        let iop = s.orientation.ok_or(VolumeError::NoGeometry { index, what: "Image Orientation (Patient)" })?;
        let ipp = s.position.ok_or(VolumeError::NoGeometry { index, what: "Image Position (Patient)" })?;
        if iop.iter().zip(iop0).any(|(a, b)| (a - b).abs() > 1e-4) {
            return Err(VolumeError::MixedOrientation);
        }
        let same_spacing = match (s.pixel_spacing, first.pixel_spacing) {
            (Some(a), Some(b)) => (a[0] - b[0]).abs() <= 1e-4 && (a[1] - b[1]).abs() <= 1e-4,
            (a, b) => a.is_none() && b.is_none(),
        };
        if s.rows != first.rows || s.cols != first.cols || s.rows == 0 || s.cols == 0 || !same_spacing {
            return Err(VolumeError::MixedSize);
        }
        keyed.push((ipp[0] * normal[0] + ipp[1] * normal[1] + ipp[2] * normal[2], index));
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positions: Vec<f64> = keyed.iter().map(|k| k.0).collect();
    let gaps: Vec<f64> = positions.windows(2).map(|w| w[1] - w[0]).collect();
    if gaps.iter().any(|g| *g < 1e-3) {
        return Err(VolumeError::Duplicate);
    }
    let spacing = median(&gaps).unwrap_or(1.0);
    if let Some((after, gap)) = gaps.iter().enumerate().find(|(_, g)| **g > 1.5 * spacing) {
        return Err(VolumeError::Gap { after: after + 1, slices: positions.len(), gap: *gap, median: spacing });
    }
    Ok(Stack {
        order: keyed.iter().map(|k| k.1).collect(),
        positions,
        spacing,
        rows: first.rows,
        cols: first.cols,
        pixel_spacing: first.pixel_spacing.unwrap_or([1.0, 1.0]),
    })
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// How one axis of the model's grid maps onto the source's: the whole source resized to
/// `output` (torch's align_corners=False: src = (o + 0.5) * in / out - 0.5), or centred at a
/// spacing ratio (src = (in - 1) / 2 + (o - (out - 1) / 2) * out_spacing / in_spacing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    pub input: usize,
    pub output: usize,
    /// out_spacing / in_spacing; None: resize.
    pub ratio: Option<f64>,
}

/// The two source samples of one output sample and the second's weight; None outside the source.
pub type Tap = Option<(usize, usize, f32)>;

impl Axis {
    /// The source coordinate of output coordinate `o`.
    pub fn source_of(&self, o: f64) -> f64 {
        let (i, n) = (self.input as f64, self.output as f64);
        match self.ratio {
            None => (o + 0.5) * i / n - 0.5,
            Some(r) => (i - 1.0) / 2.0 + (o - (n - 1.0) / 2.0) * r,
        }
    }

    /// The output coordinate of source coordinate `s` (the inverse of `source_of`).
    pub fn output_of(&self, s: f64) -> f64 {
        let (i, n) = (self.input as f64, self.output as f64);
        match self.ratio {
            None => (s + 0.5) * n / i - 0.5,
            Some(r) => (n - 1.0) / 2.0 + (s - (i - 1.0) / 2.0) / r,
        }
    }

    /// Per output sample, its linear interpolation taps in the source. Resizing clamps to the
    /// edge (as torch does); at a spacing, a sample more than half a sample outside is None.
    pub fn taps(&self) -> Vec<Tap> {
        (0..self.output).map(|o| tap(self.source_of(o as f64), self.input, self.ratio.is_some())).collect()
    }
}

/// Linear interpolation taps at coordinate `s` of `len` samples; `bounded`: None beyond half a
/// sample outside, else clamped to the edge.
fn tap(s: f64, len: usize, bounded: bool) -> Tap {
    if len == 0 || (bounded && (s < -0.5 || s > len as f64 - 0.5)) {
        return None;
    }
    let s = s.clamp(0.0, (len - 1) as f64);
    let i0 = (s.floor() as usize).min(len - 1);
    let i1 = (i0 + 1).min(len - 1);
    Some((i0, i1, (s - i0 as f64) as f32))
}

/// The model's grid over a stack: one `Axis` per dimension (z, y, x).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub z: Axis,
    pub y: Axis,
    pub x: Axis,
}

impl Grid {
    /// The grid of a model of `size` [D, H, W] (at `spacing` [z, y, x] mm when given) over `s`.
    pub fn new(s: &Stack, size: [usize; 3], spacing: Option<[f64; 3]>) -> Grid {
        let ratio = |i: usize, source: f64| spacing.map(|sp| sp[i] / source);
        Grid {
            z: Axis { input: s.positions.len(), output: size[0], ratio: ratio(0, s.spacing) },
            y: Axis { input: s.rows, output: size[1], ratio: ratio(1, s.pixel_spacing[0]) },
            x: Axis { input: s.cols, output: size[2], ratio: ratio(2, s.pixel_spacing[1]) },
        }
    }
}

/// A value below every window: a voxel outside the series (windowed to the window's bottom).
const OUTSIDE: f32 = f32::MIN;

/// The volume being resampled: slices are added in stack order, one at a time, each resized in
/// the plane and added to the output planes that sample it (trilinear). Holds D x H x W f32
/// and nothing of a slice once added.
pub struct Resampler {
    grid: Grid,
    z: Vec<Tap>,
    y: Vec<Tap>,
    x: Vec<Tap>,
    /// HU, D x H x W.
    values: Vec<f32>,
}

impl Resampler {
    pub fn new(grid: Grid) -> Resampler {
        let (z, y, x) = (grid.z.taps(), grid.y.taps(), grid.x.taps());
        let plane = grid.y.output * grid.x.output;
        let mut values = vec![0.0f32; grid.z.output * plane];
        for (d, t) in z.iter().enumerate() {
            if t.is_none() {
                values[d * plane..(d + 1) * plane].fill(OUTSIDE);
            }
        }
        Resampler { grid, z, y, x, values }
    }

    /// Add slice `k` (in stack order; rows x cols values in HU).
    pub fn add(&mut self, k: usize, slice: ArrayView2<f32>) {
        let (h, w) = (self.grid.y.output, self.grid.x.output);
        let plane = Array2::from_shape_fn((h, w), |(r, c)| match (self.y[r], self.x[c]) {
            (Some((y0, y1, fy)), Some((x0, x1, fx))) => {
                let top = slice[[y0, x0]] * (1.0 - fx) + slice[[y0, x1]] * fx;
                let bottom = slice[[y1, x0]] * (1.0 - fx) + slice[[y1, x1]] * fx;
                top * (1.0 - fy) + bottom * fy
            }
            _ => OUTSIDE,
        });
        for (d, t) in self.z.iter().enumerate() {
            let Some((i0, i1, f)) = *t else { continue };
            let weight = if i0 == k && i1 == k {
                1.0
            } else if i0 == k {
                1.0 - f
            } else if i1 == k {
                f
            } else {
                continue;
            };
            let out = &mut self.values[d * h * w..(d + 1) * h * w];
            for (o, p) in out.iter_mut().zip(plane.iter()) {
                // Outside the plane stays outside (never blended with a real value).
                *o = if *p == OUTSIDE || *o == OUTSIDE { OUTSIDE } else { *o + weight * p };
            }
        }
    }

    /// The resampled values in HU (D x H x W; `f32::MIN` outside the series).
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The window `rule` gives the volume (a `File` rule takes `first`'s window, a percentile
    /// one the volume's values).
    fn window(&self, rule: WindowRule, first: &Decoded) -> Window {
        match rule {
            WindowRule::Fixed(w) => w,
            WindowRule::File { .. } if !first.windows.is_empty() => first.windows[0],
            WindowRule::File { percentiles: p } | WindowRule::Percentile(p) => {
                let inside: Vec<f32> = self.values.iter().copied().filter(|v| *v != OUTSIDE).collect();
                super::preprocess::percentile_window(&ndarray::Array3::from_shape_vec((1, 1, inside.len()), inside).expect("shape"), p[0], p[1])
            }
        }
    }

    /// The input histogram (`preprocess::histogram`) of the volume's first channel: its voxels
    /// inside the series, windowed (and MONOCHROME1 inverted) as `finish` windows them.
    pub fn histogram(&self, spec: &super::preprocess::InputSpec, first: &Decoded) -> [f32; super::preprocess::HISTOGRAM_BINS] {
        let w = self.window(spec.channel_windows.first().copied().unwrap_or(spec.window), first);
        let invert = first.photometric == "MONOCHROME1";
        super::preprocess::histogram(self.values.iter().filter(|v| **v != OUTSIDE).map(|&x| {
            let v = window_value(x, w);
            if invert {
                1.0 - v
            } else {
                v
            }
        }))
    }

    /// The volume as the model takes it, [C, D, H, W]: each channel windowed (its own window,
    /// else `window`; a `File` rule takes `first`'s window, a percentile one the volume's
    /// values), MONOCHROME1 inverted, scaled, normalised with the channel's mean and std. One
    /// channel is made in place (no second buffer).
    pub fn finish(self, spec: &super::preprocess::InputSpec, first: &Decoded) -> Vec<f32> {
        let windows: Vec<Window> = (0..spec.channels.max(1)).map(|c| self.window(spec.channel_windows.get(c).copied().unwrap_or(spec.window), first)).collect();
        let values = self.values;
        let at = |v: &[f32], c: usize| v.get(c).or(v.last()).copied().unwrap_or_default();
        let invert = first.photometric == "MONOCHROME1";
        let channel = |c: usize| {
            let w = windows[c.min(windows.len() - 1)];
            let (mean, std, scale) = (at(&spec.mean, c), at(&spec.std, c), spec.scale);
            move |x: f32| {
                let v = window_value(x, w);
                let v = if invert { 1.0 - v } else { v };
                (v * scale - mean) / std
            }
        };
        if spec.channels <= 1 {
            let f = channel(0);
            let mut values = values;
            values.iter_mut().for_each(|x| *x = f(*x));
            return values;
        }
        let mut out = Vec::with_capacity(spec.channels * values.len());
        for c in 0..spec.channels {
            let f = channel(c);
            out.extend(values.iter().map(|x| f(*x)));
        }
        out
    }
}

/// A volume model's input from `files` (stack order, each `rows` x `cols`): each slice decoded
/// one at a time and added to `grid`'s resampler, then windowed as `spec` says ([C, D, H, W]).
pub fn read_volume(files: &[std::path::PathBuf], grid: Grid, spec: &super::preprocess::InputSpec, rows: usize, cols: usize) -> Result<Vec<f32>, VolumeError> {
    read_volume_with_histogram(files, grid, spec, rows, cols).map(|(values, _)| values)
}

/// `read_volume`, and the volume's input histogram (`Resampler::histogram`).
pub fn read_volume_with_histogram(
    files: &[std::path::PathBuf],
    grid: Grid,
    spec: &super::preprocess::InputSpec,
    rows: usize,
    cols: usize,
) -> Result<(Vec<f32>, [f32; super::preprocess::HISTOGRAM_BINS]), VolumeError> {
    let mut resampler = Resampler::new(grid);
    let mut first = None;
    for (k, file) in files.iter().enumerate() {
        let pixels = |e: PixelError| VolumeError::Pixels { index: k, reason: e.to_string() };
        let decoded = super::preprocess::Image::open(file).and_then(|i| i.decode()).map_err(pixels)?;
        if decoded.values.dim().1 != rows || decoded.values.dim().2 != cols {
            return Err(VolumeError::MixedSize);
        }
        resampler.add(k, decoded.values.index_axis(ndarray::Axis(0), 0));
        if first.is_none() {
            first = Some(decoded);
        }
    }
    let first = first.ok_or(VolumeError::TooFew { got: 0, min: 1 })?;
    let histogram = resampler.histogram(spec, &first);
    Ok((resampler.finish(spec, &first), histogram))
}

/// A model's 3D map (one label: D' x H' x W') sampled on source slice `k` of the stack, over
/// the whole frame as `cells` [rows, cols] cells spanning it; 0 outside the model's grid.
/// Trilinear.
pub fn map_on_slice(grid: &Grid, map: &[f32], dims: [usize; 3], k: usize, cells: [usize; 2]) -> Vec<f32> {
    let [md, mh, mw] = dims;
    let [rows, cols] = cells;
    // A model coordinate to the map's (align_corners=False between the model's grid and the
    // map's), None outside the model's grid.
    let to_map =
        |o: f64, model: usize, len: usize| tap((o + 0.5) * len as f64 / model as f64 - 0.5, len, true).filter(|_| o >= -0.5 && o <= model as f64 - 0.5);
    let z = to_map(grid.z.output_of(k as f64), grid.z.output, md);
    let Some((z0, z1, fz)) = z else { return vec![0.0; rows * cols] };
    // Cell centres of an H' x W' grid over the source frame, in source pixels.
    let cell = |i: usize, cells: usize, source: usize| (i as f64 + 0.5) * source as f64 / cells as f64 - 0.5;
    let ys: Vec<Tap> = (0..rows).map(|r| to_map(grid.y.output_of(cell(r, rows, grid.y.input)), grid.y.output, mh)).collect();
    let xs: Vec<Tap> = (0..cols).map(|c| to_map(grid.x.output_of(cell(c, cols, grid.x.input)), grid.x.output, mw)).collect();
    let v = |d: usize, r: usize, c: usize| map[(d * mh + r) * mw + c];
    let mut out = Vec::with_capacity(rows * cols);
    for y in &ys {
        for x in &xs {
            out.push(match (y, x) {
                (Some((y0, y1, fy)), Some((x0, x1, fx))) => {
                    let plane = |d: usize| {
                        let top = v(d, *y0, *x0) * (1.0 - fx) + v(d, *y0, *x1) * fx;
                        let bottom = v(d, *y1, *x0) * (1.0 - fx) + v(d, *y1, *x1) * fx;
                        top * (1.0 - fy) + bottom * fy
                    };
                    plane(z0) * (1.0 - fz) + plane(z1) * fz
                }
                _ => 0.0,
            });
        }
    }
    out
}

/// The stack indices of the slab of `k` slices centred on slice `centre` of `n`: the edge
/// slice repeated beyond either end.
pub fn slab_indices(n: usize, k: usize, centre: usize) -> Vec<usize> {
    let r = (k / 2) as i64;
    (-r..=r).map(|j| (centre as i64 + j).clamp(0, n as i64 - 1) as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axial(z: f64) -> Geometry {
        Geometry { rows: 4, cols: 4, orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), position: Some([-10.0, -10.0, z]), pixel_spacing: Some([0.5, 0.5]) }
    }

    /// Slices are ordered by position along the normal, whatever order they come in (the
    /// normal of a sagittal series is x: its positions are x).
    #[test]
    fn slices_are_ordered_along_the_normal() {
        let s = stack(&[axial(5.0), axial(-5.0), axial(0.0), axial(2.5), axial(-2.5)], 1).unwrap();
        assert_eq!(s.order, [1, 4, 2, 3, 0]);
        assert_eq!(s.positions, [-5.0, -2.5, 0.0, 2.5, 5.0]);
        assert_eq!(s.spacing, 2.5);
        // Sagittal: rows along y, columns along -z; normal = row x col = (-1, 0, 0), so the
        // position along it is -x: the largest x comes first.
        let sag = |x: f64| Geometry { orientation: Some([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]), position: Some([x, 0.0, 100.0]), ..axial(0.0) };
        let s = stack(&[sag(1.0), sag(3.0), sag(2.0)], 1).unwrap();
        assert_eq!(s.order, [1, 2, 0]);
        assert_eq!(s.positions, [-3.0, -2.0, -1.0]);
    }

    #[test]
    fn gaps_mixtures_and_too_few_slices_are_refused() {
        // 0, 1, 2, 4, 5: median gap 1, one gap of 2 > 1.5.
        let e = stack(&[axial(0.0), axial(1.0), axial(2.0), axial(4.0), axial(5.0)], 1).unwrap_err();
        assert_eq!(e, VolumeError::Gap { after: 3, slices: 5, gap: 2.0, median: 1.0 });
        assert!(e.to_string().contains("missing or uneven slices"), "{e}");
        // 1.4 times the median is not a gap.
        assert!(stack(&[axial(0.0), axial(1.0), axial(2.0), axial(3.4)], 1).is_ok());
        assert_eq!(stack(&[axial(0.0), axial(1.0)], 3).unwrap_err(), VolumeError::TooFew { got: 2, min: 3 });
        let tilted = Geometry { orientation: Some([1.0, 0.0, 0.0, 0.0, 0.9, 0.1]), ..axial(2.0) };
        assert_eq!(stack(&[axial(0.0), axial(1.0), tilted], 1).unwrap_err(), VolumeError::MixedOrientation);
        let big = Geometry { rows: 8, ..axial(2.0) };
        assert_eq!(stack(&[axial(0.0), axial(1.0), big], 1).unwrap_err(), VolumeError::MixedSize);
        let coarse = Geometry { pixel_spacing: Some([0.7, 0.7]), ..axial(2.0) };
        assert_eq!(stack(&[axial(0.0), axial(1.0), coarse], 1).unwrap_err(), VolumeError::MixedSize);
        assert_eq!(stack(&[axial(0.0), axial(1.0), axial(1.0)], 1).unwrap_err(), VolumeError::Duplicate);
        let lost = Geometry { position: None, ..axial(2.0) };
        assert!(matches!(stack(&[axial(0.0), lost], 1).unwrap_err(), VolumeError::NoGeometry { index: 1, .. }));
    }

    /// The axis arithmetic against hand-computed values: torch's align_corners=False resize,
    /// and the centred spacing grid.
    #[test]
    fn axes_map_as_torch_and_at_a_spacing() {
        // 4 -> 2: src = (o + 0.5) * 2 - 0.5 = 0.5, 2.5.
        let a = Axis { input: 4, output: 2, ratio: None };
        assert_eq!(a.taps(), [Some((0, 1, 0.5)), Some((2, 3, 0.5))]);
        // 2 -> 4: src = (o + 0.5) / 2 - 0.5 = -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1).
        let b = Axis { input: 2, output: 4, ratio: None };
        assert_eq!(b.taps(), [Some((0, 1, 0.0)), Some((0, 1, 0.25)), Some((0, 1, 0.75)), Some((1, 1, 0.0))]);
        assert!((b.output_of(b.source_of(2.0)) - 2.0).abs() < 1e-12);
        // 5 source samples at 1 mm, 4 output at 2 mm, centred: src = 2 + (o - 1.5) * 2 = -1, 1, 3, 5.
        let c = Axis { input: 5, output: 4, ratio: Some(2.0) };
        assert_eq!(c.taps(), [None, Some((1, 2, 0.0)), Some((3, 4, 0.0)), None]);
        assert!((c.output_of(c.source_of(1.3)) - 1.3).abs() < 1e-12);
    }

    /// Trilinear resampling, slice by slice, equals the hand-computed interpolation.
    #[test]
    fn trilinear_resampling_slice_by_slice() {
        // 3 slices of 2 x 2, values 100 * z + 10 * y + x; resized to 2 x 1 x 1.
        let s = Stack { order: vec![0, 1, 2], positions: vec![0.0, 1.0, 2.0], spacing: 1.0, rows: 2, cols: 2, pixel_spacing: [1.0, 1.0] };
        let grid = Grid::new(&s, [2, 1, 1], None);
        let mut r = Resampler::new(grid);
        for z in 0..3 {
            let plane = Array2::from_shape_fn((2, 2), |(y, x)| (100 * z + 10 * y + x) as f32);
            r.add(z, plane.view());
        }
        // z: src = (o + 0.5) * 1.5 - 0.5 = 0.25, 1.75; y, x: 0.5 (the mean of the plane: +5.5).
        let want = [0.25 * 100.0 + 5.5, 1.75 * 100.0 + 5.5];
        assert!(r.values().iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-3), "{:?}", r.values());
        // A 3D map 2 x 1 x 1 (values 0 and 1) back on the source slices: z of slice k in the
        // model's grid = (k + 0.5) * 2 / 3 - 0.5 = -1/6, 0.5, 7/6 -> 0 (clamped), 0.5, 1.
        let got: Vec<f32> = (0..3).map(|k| map_on_slice(&grid, &[0.0, 1.0], [2, 1, 1], k, [1, 1])[0]).collect();
        assert!(got.iter().zip([0.0, 0.5, 1.0]).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?}");
    }

    /// At a spacing the grid is centred on the series; samples beyond it are the window's
    /// bottom, never blended with real values; the window is applied after resampling.
    #[test]
    fn a_spacing_grid_is_centred_and_padded_with_the_windows_bottom() {
        // 3 slices of 2 x 2, 1 mm apart, values 100 * z + 10 * y + x; model 5 x 1 x 1 at
        // [1, 2, 2] mm: z src = 1 + (o - 2) = -1 (outside), 0, 1, 2, 3 (outside); y, x src = 0.5.
        let s = Stack { order: vec![0, 1, 2], positions: vec![0.0, 1.0, 2.0], spacing: 1.0, rows: 2, cols: 2, pixel_spacing: [1.0, 1.0] };
        let mut r = Resampler::new(Grid::new(&s, [5, 1, 1], Some([1.0, 2.0, 2.0])));
        for z in 0..3 {
            r.add(z, Array2::from_shape_fn((2, 2), |(y, x)| (100 * z + 10 * y + x) as f32).view());
        }
        assert_eq!(r.values(), [OUTSIDE, 5.5, 105.5, 205.5, OUTSIDE]);
        let spec = super::super::preprocess::InputSpec {
            rows: 1,
            cols: 1,
            channels: 1,
            window: WindowRule::Fixed(Window { center: 100.0, width: 201.0 }),
            channel_windows: Vec::new(),
            color: super::super::preprocess::Color::Grey,
            layout: super::super::preprocess::Layout::Nchw,
            scale: 1.0,
            mean: vec![0.5],
            std: vec![0.5],
        };
        let first = Decoded { values: ndarray::Array3::zeros((1, 2, 2)), photometric: "MONOCHROME2".into(), windows: Vec::new(), rgb: None };
        // PS3.3 linear window: (x - 99.5) / 200 + 0.5, clamped; then (v - 0.5) / 0.5.
        let want = [0.0f32, (5.5 - 99.5) / 200.0 + 0.5, (105.5 - 99.5) / 200.0 + 0.5, 1.0, 0.0].map(|v| (v - 0.5) / 0.5);
        let got = r.finish(&spec, &first);
        assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} against {want:?}");
    }

    #[test]
    fn slabs_repeat_the_edge_slice() {
        assert_eq!(slab_indices(5, 3, 0), [0, 0, 1]);
        assert_eq!(slab_indices(5, 3, 2), [1, 2, 3]);
        assert_eq!(slab_indices(5, 5, 4), [2, 3, 4, 4, 4]);
        assert_eq!(slab_indices(1, 3, 0), [0, 0, 0]);
    }
}
