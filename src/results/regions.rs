//! Where a finding's evidence lies: the model's class activation map resampled onto the source
//! frame's pixel grid (the values of the Parametric Map), its peak, and the region around the
//! peak where the activation is at least half way from the map's lowest to its peak value (the
//! connected part of the thresholded map that holds the peak), as the SR's Image Region.
//!
//! Coordinates are PS3.3 C.18.6.1.1 image coordinates: column then row, (0, 0) the top left
//! corner of the top left pixel, so a pixel's centre is at (c + 0.5, r + 0.5).
//!
//! Owns: the region rule. Must not: do IO.

use ndarray::{Array2, ArrayView2};

use crate::inference::preprocess::resize;

/// The activation that counts as part of a finding's region: half way from the map's lowest
/// value to its peak.
pub const REGION_LEVEL: f32 = 0.5;

/// A finding's evidence on its source frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// The peak's centre, (column, row) in image coordinates.
    pub peak: (f32, f32),
    /// A closed polygon (first point repeated last) around the region: the convex hull of its
    /// cells, in image coordinates of the source frame.
    pub outline: Vec<(f32, f32)>,
}

/// The activation map `cam` (any size) resampled onto a `rows` x `cols` frame: bilinear, as the
/// node's pictures resize it (registered to the whole frame: the model's input was the whole
/// frame, resized without cropping). The values are the model's own, not rescaled.
pub fn on_grid(cam: ArrayView2<f32>, rows: usize, cols: usize) -> Array2<f32> {
    resize(cam, rows, cols)
}

/// The region of `cam` (at its own resolution) mapped onto a `rows` x `cols` frame. None when
/// the map is empty, flat or not finite (no place stands out).
pub fn locate(cam: ArrayView2<f32>, rows: usize, cols: usize) -> Option<Region> {
    let (h, w) = cam.dim();
    if h == 0 || w == 0 || rows == 0 || cols == 0 || cam.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let (mut lo, mut hi, mut at) = (f32::MAX, f32::MIN, (0, 0));
    for ((r, c), &v) in cam.indexed_iter() {
        lo = lo.min(v);
        if v > hi {
            hi = v;
            at = (r, c);
        }
    }
    if hi <= lo {
        return None;
    }
    let level = lo + REGION_LEVEL * (hi - lo);
    // The 4-connected cells at or above the level that hold the peak.
    let mut inside = Array2::<bool>::from_elem((h, w), false);
    let mut todo = vec![at];
    inside[at] = true;
    let mut corners = Vec::new();
    while let Some((r, c)) = todo.pop() {
        corners.extend([(c, r), (c + 1, r), (c, r + 1), (c + 1, r + 1)]);
        let next = [(r.wrapping_sub(1), c), (r + 1, c), (r, c.wrapping_sub(1)), (r, c + 1)];
        for (nr, nc) in next {
            if nr < h && nc < w && !inside[(nr, nc)] && cam[(nr, nc)] >= level {
                inside[(nr, nc)] = true;
                todo.push((nr, nc));
            }
        }
    }
    // Cells of the map cover the frame evenly.
    let (sx, sy) = (cols as f32 / w as f32, rows as f32 / h as f32);
    let mut outline: Vec<(f32, f32)> = hull(corners).into_iter().map(|(x, y)| (x as f32 * sx, y as f32 * sy)).collect();
    outline.push(outline[0]);
    let peak = ((at.1 as f32 + 0.5) * sx, (at.0 as f32 + 0.5) * sy);
    Some(Region { peak, outline })
}

/// The convex hull of integer points, counter-clockwise in (x, y), without repeated or collinear
/// points (Andrew's monotone chain).
fn hull(mut p: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    p.sort_unstable();
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let cross = |o: (usize, usize), a: (usize, usize), b: (usize, usize)| {
        (a.0 as i64 - o.0 as i64) * (b.1 as i64 - o.1 as i64) - (a.1 as i64 - o.1 as i64) * (b.0 as i64 - o.0 as i64)
    };
    let mut lower: Vec<(usize, usize)> = Vec::new();
    for &q in &p {
        while lower.len() >= 2 && cross(lower[lower.len() - 2], lower[lower.len() - 1], q) <= 0 {
            lower.pop();
        }
        lower.push(q);
    }
    let mut upper: Vec<(usize, usize)> = Vec::new();
    for &q in p.iter().rev() {
        while upper.len() >= 2 && cross(upper[upper.len() - 2], upper[upper.len() - 1], q) <= 0 {
            upper.pop();
        }
        upper.push(q);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    lower
}

/// A point of a frame in patient coordinates (mm), PS3.3 C.7.6.2.1.1: `position` the centre of
/// the first pixel, `orientation` the row then column direction cosines, `spacing` (row spacing,
/// column spacing). `point` is in image coordinates (a pixel's centre at +0.5).
pub fn to_patient(point: (f32, f32), position: [f64; 3], orientation: [f64; 6], spacing: [f64; 2]) -> [f64; 3] {
    let (i, j) = (point.0 as f64 - 0.5, point.1 as f64 - 0.5);
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        *o = position[k] + orientation[k] * spacing[1] * i + orientation[3 + k] * spacing[0] * j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_the_connected_part_around_the_peak_scaled_to_the_frame() {
        // 4 x 4 map; a bright 2 x 2 block top-left, a separate bright cell bottom-right.
        let mut cam = Array2::<f32>::zeros((4, 4));
        cam[(0, 0)] = 1.0;
        cam[(0, 1)] = 0.8;
        cam[(1, 0)] = 0.7;
        cam[(1, 1)] = 0.6;
        cam[(3, 3)] = 0.9;
        let r = locate(cam.view(), 400, 200).unwrap();
        // Each map cell is 50 columns wide and 100 rows high on the frame.
        assert_eq!(r.peak, (25.0, 50.0));
        assert_eq!(r.outline.first(), r.outline.last(), "closed");
        assert_eq!(&r.outline[..r.outline.len() - 1], &[(0.0, 0.0), (100.0, 0.0), (100.0, 200.0), (0.0, 200.0)][..]);
        // The separate cell above the level is not part of the peak's region.
        assert!(r.outline.iter().all(|&(x, y)| x <= 100.0 && y <= 200.0));
        // A flat or empty map has no region.
        assert_eq!(locate(Array2::<f32>::ones((3, 3)).view(), 10, 10), None);
        assert_eq!(locate(Array2::<f32>::zeros((0, 0)).view(), 10, 10), None);
        let mut nan = Array2::<f32>::zeros((2, 2));
        nan[(0, 0)] = f32::NAN;
        assert_eq!(locate(nan.view(), 10, 10), None);
    }

    #[test]
    fn a_single_cell_region_is_its_square_and_an_l_shape_its_hull() {
        let mut cam = Array2::<f32>::zeros((3, 3));
        cam[(1, 1)] = 1.0;
        let r = locate(cam.view(), 3, 3).unwrap();
        assert_eq!(r.outline.len(), 5);
        assert_eq!(r.peak, (1.5, 1.5));
        cam[(1, 2)] = 1.0;
        cam[(2, 1)] = 1.0;
        let r = locate(cam.view(), 3, 3).unwrap();
        // The hull of the L: five corners, the inner corner (2, 2) not among them.
        assert_eq!(r.outline.len(), 6, "{:?}", r.outline);
        assert!(!r.outline.contains(&(2.0, 2.0)));
    }

    #[test]
    fn image_points_map_to_the_patient_as_the_standard_says() {
        // Axial slice: rows run along +x, columns along +y; first pixel centre at (-100, -50, 20).
        let p = to_patient((0.5, 0.5), [-100.0, -50.0, 20.0], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.5, 0.7]);
        assert_eq!(p, [-100.0, -50.0, 20.0]);
        // 10 columns right (x by the column spacing 0.7), 4 rows down (y by the row spacing 0.5).
        let p = to_patient((10.5, 4.5), [-100.0, -50.0, 20.0], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.5, 0.7]);
        assert!((p[0] - (-93.0)).abs() < 1e-9 && (p[1] - (-48.0)).abs() < 1e-9 && p[2] == 20.0, "{p:?}");
        // The resampled map keeps the model's values.
        let cam = Array2::from_shape_vec((2, 2), vec![0.0f32, 2.0, 4.0, 6.0]).unwrap();
        let g = on_grid(cam.view(), 4, 4);
        assert_eq!(g[(0, 0)], 0.0);
        assert_eq!(g[(3, 3)], 6.0);
    }
}
