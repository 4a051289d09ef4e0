//! A class activation map drawn over the image the model saw: the frame windowed as the model
//! saw it (grey, MONOCHROME2), the map resized to cover the whole frame (it is registered to
//! it: the model's input was the whole frame, resized without cropping) and blended in colour
//! where it is above a floor. Used by `triage-node infer` (PNG files) and the Secondary
//! Capture heatmaps of the results.
//!
//! Owns: the colour scale and the blend. Must not: do IO.

use ndarray::{Array2, Array3, ArrayView2};

use super::preprocess::{resize, Decoded, WindowRule};

/// Map values at or below this (after scaling to 0..1) are not coloured.
pub const FLOOR: f32 = 0.2;

/// Blend `cam` (cam_rows x cam_cols, any range: scaled to 0..1 if outside it) over `display`
/// (0..1 grey), at `rows` x `cols`. Returns RGB, rows x cols x 3.
pub fn blend(display: ArrayView2<f32>, cam: ArrayView2<f32>, rows: usize, cols: usize) -> Array3<u8> {
    let grey = resize(display, rows, cols);
    let scaled = scale01(cam);
    let heat = resize(scaled.view(), rows, cols);
    let mut out = Array3::<u8>::zeros((rows, cols, 3));
    for ((r, c), &g) in grey.indexed_iter() {
        let h = heat[[r, c]].clamp(0.0, 1.0);
        let alpha = if h <= FLOOR { 0.0 } else { 0.25 + 0.35 * (h - FLOOR) / (1.0 - FLOOR) };
        let colour = colour(h);
        for k in 0..3 {
            let v = g.clamp(0.0, 1.0) * (1.0 - alpha) + colour[k] * alpha;
            out[[r, c, k]] = (v * 255.0).round() as u8;
        }
    }
    out
}

/// Frame `frame` of `decoded` windowed by `rule` (as the model saw it) with `cam` blended over
/// it, long side at most `max` pixels: the picture `infer --heatmaps` and the heatmap Secondary
/// Captures both show.
pub fn over_frame(decoded: &Decoded, frame: usize, rule: WindowRule, cam: ArrayView2<f32>, max: usize) -> Array3<u8> {
    let (display, _) = decoded.display_frame(frame, rule);
    let (rows, cols) = fit(display.nrows(), display.ncols(), max);
    blend(display.view(), cam, rows, cols)
}

/// Values already in 0..1 (probability maps) are kept; any other range is min-max scaled.
fn scale01(cam: ArrayView2<f32>) -> Array2<f32> {
    let (lo, hi) = cam.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if lo >= 0.0 && hi <= 1.0 {
        return cam.to_owned();
    }
    let span = (hi - lo).max(f32::MIN_POSITIVE);
    cam.mapv(|v| (v - lo) / span)
}

/// A perceptually ordered scale from blue (low) through yellow to red (high).
pub fn colour(v: f32) -> [f32; 3] {
    const STOPS: [(f32, [f32; 3]); 5] =
        [(0.0, [0.0, 0.0, 0.5]), (0.25, [0.0, 0.4, 1.0]), (0.5, [0.2, 0.9, 0.4]), (0.75, [1.0, 0.85, 0.0]), (1.0, [0.9, 0.0, 0.0])];
    let v = v.clamp(0.0, 1.0);
    for pair in STOPS.windows(2) {
        let ((a, ca), (b, cb)) = (pair[0], pair[1]);
        if v <= b {
            let t = (v - a) / (b - a);
            return [ca[0] + (cb[0] - ca[0]) * t, ca[1] + (cb[1] - ca[1]) * t, ca[2] + (cb[2] - ca[2]) * t];
        }
    }
    STOPS[4].1
}

/// The output size for a frame: its own size, scaled down so the long side is at most `max`.
pub fn fit(rows: usize, cols: usize, max: usize) -> (usize, usize) {
    let long = rows.max(cols);
    if long <= max {
        return (rows, cols);
    }
    let s = max as f64 / long as f64;
    (((rows as f64 * s).round() as usize).max(1), ((cols as f64 * s).round() as usize).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_colours_only_where_it_is_high() {
        let display = Array2::from_elem((40, 40), 0.5f32);
        let mut cam = Array2::zeros((4, 4));
        cam[[0, 0]] = 1.0;
        let rgb = blend(display.view(), cam.view(), 40, 40);
        // The hot cell's corner is red-dominated; the far corner stays the grey of the image.
        let (r, g, b) = (rgb[[1, 1, 0]], rgb[[1, 1, 1]], rgb[[1, 1, 2]]);
        assert!(r > g && r > b, "{r} {g} {b}");
        assert_eq!([rgb[[39, 39, 0]], rgb[[39, 39, 1]], rgb[[39, 39, 2]]], [128, 128, 128]);
    }

    #[test]
    fn sizes_fit_the_long_side() {
        assert_eq!(fit(2500, 2000, 1024), (1024, 819));
        assert_eq!(fit(512, 512, 1024), (512, 512));
    }
}
