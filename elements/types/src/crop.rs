//! Person boxes and the crop affine that maps a frame to the network's square input.
//!
//! HybrIK's `_box_to_center_scale` pads the box's shorter side to a square and enlarges it by
//! 1.25; `get_affine_transform(center, scale, rot, (256, 256))` then maps the box centre to the
//! crop centre and the box's top edge midpoint (rotated by `rot`) to the crop's top edge midpoint.
//! That transform is the similarity A(p) = s R(-rot) (p - c) + (W/2, H/2) with s = W / side.

use nalgebra::{Matrix2, Vector2};
use serde::{Deserialize, Serialize};

/// Crop side used by the networks (pixels).
pub const CROP_SIZE: u32 = 256;
/// HybrIK's box enlargement (`scale_mult`).
pub const BOX_SCALE_MULT: f64 = 1.25;
/// Most person boxes one frame or command takes (each is a crop through the network): the bound
/// on what a `roi` list or `--box` flags may ask to allocate.
pub const MAX_BOXES: usize = 256;
/// Largest box coordinate or size in pixels: a few times an 8K frame.
pub const MAX_BOX_PX: f64 = 100_000.0;

/// An axis-aligned box in frame pixels: top-left corner and size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl BBox {
    /// From corners (x1, y1) - (x2, y2).
    pub fn from_xyxy(x1: f64, y1: f64, x2: f64, y2: f64) -> Self {
        Self {
            x: x1.min(x2),
            y: y1.min(y2),
            w: (x2 - x1).abs(),
            h: (y2 - y1).abs(),
        }
    }

    /// The box around points, enlarged about its centre by `scale` (3DPW boxes use 1.2).
    pub fn around_points(points: impl IntoIterator<Item = [f64; 2]>, scale: f64) -> Option<Self> {
        let mut it = points
            .into_iter()
            .filter(|p| p[0].is_finite() && p[1].is_finite());
        let first = it.next()?;
        let (mut lo, mut hi) = (first, first);
        for p in it {
            lo = [lo[0].min(p[0]), lo[1].min(p[1])];
            hi = [hi[0].max(p[0]), hi[1].max(p[1])];
        }
        let c = [0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1])];
        let (w, h) = ((hi[0] - lo[0]) * scale, (hi[1] - lo[1]) * scale);
        Some(Self {
            x: c[0] - 0.5 * w,
            y: c[1] - 0.5 * h,
            w,
            h,
        })
    }

    pub fn center(&self) -> [f64; 2] {
        [self.x + 0.5 * self.w, self.y + 0.5 * self.h]
    }

    /// Finite with positive size.
    pub fn is_valid(&self) -> bool {
        [self.x, self.y, self.w, self.h]
            .iter()
            .all(|v| v.is_finite())
            && self.w > 0.0
            && self.h > 0.0
    }

    /// Intersection over union with another box (0 when either is empty).
    pub fn iou(&self, o: &BBox) -> f64 {
        let ix = ((self.x + self.w).min(o.x + o.w) - self.x.max(o.x)).max(0.0);
        let iy = ((self.y + self.h).min(o.y + o.h) - self.y.max(o.y)).max(0.0);
        let inter = ix * iy;
        let union = self.w * self.h + o.w * o.h - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// A 2x3 affine map of pixel coordinates, `[a b tx; c d ty]`, as OpenCV's `warpAffine` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine2 {
    pub m: [[f64; 3]; 2],
}

impl Affine2 {
    /// Applies the map to a point.
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let m = &self.m;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + m[0][2],
            m[1][0] * p[0] + m[1][1] * p[1] + m[1][2],
        ]
    }

    /// The inverse map; `None` if the linear part is singular.
    pub fn inverse(&self) -> Option<Affine2> {
        let m = &self.m;
        let lin = Matrix2::new(m[0][0], m[0][1], m[1][0], m[1][1]).try_inverse()?;
        let t = -(lin * Vector2::new(m[0][2], m[1][2]));
        Some(Affine2 {
            m: [
                [lin[(0, 0)], lin[(0, 1)], t.x],
                [lin[(1, 0)], lin[(1, 1)], t.y],
            ],
        })
    }

    /// The uniform scale of a similarity (crop pixels per frame pixel).
    pub fn scale(&self) -> f64 {
        (self.m[0][0] * self.m[1][1] - self.m[0][1] * self.m[1][0])
            .abs()
            .sqrt()
    }
}

/// The square crop of a person: box centre and side (after padding to a square and enlarging by
/// `scale_mult`), rotation in degrees, output size; and the frame -> crop affine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Crop {
    pub center: [f64; 2],
    pub side: f64,
    pub rot_deg: f64,
    pub size: u32,
}

impl Crop {
    /// HybrIK's crop of a box: pad the shorter side to a square (aspect ratio 1), enlarge by
    /// `scale_mult`.
    pub fn from_box(b: &BBox, scale_mult: f64, size: u32) -> Self {
        Self {
            center: b.center(),
            side: b.w.max(b.h) * scale_mult,
            rot_deg: 0.0,
            size,
        }
    }

    /// The frame -> crop map A(p) = s R(-rot) (p - c) + (size/2, size/2), s = size / side.
    pub fn affine(&self) -> Affine2 {
        let s = f64::from(self.size) / self.side;
        let (sn, cs) = self.rot_deg.to_radians().sin_cos();
        // R(-rot) = [cs sn; -sn cs]
        let (a, b, c, d) = (s * cs, s * sn, -s * sn, s * cs);
        let h = 0.5 * f64::from(self.size);
        let [cx, cy] = self.center;
        Affine2 {
            m: [[a, b, h - a * cx - b * cy], [c, d, h - c * cx - d * cy]],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use proptest::prelude::*;

    #[test]
    fn crop_of_a_tall_box() {
        // Box 100x200 at (50, 20): centre (100, 120); square side 200 * 1.25 = 250; s = 256/250.
        let b = BBox {
            x: 50.0,
            y: 20.0,
            w: 100.0,
            h: 200.0,
        };
        let crop = Crop::from_box(&b, BOX_SCALE_MULT, CROP_SIZE);
        assert_eq!(crop.center, [100.0, 120.0]);
        assert_eq!(crop.side, 250.0);
        let a = crop.affine();
        assert_eq!(a.apply([100.0, 120.0]), [128.0, 128.0]);
        // Top of the box: y = 20 is 100 px above the centre -> 128 - 100 * 256/250 = 25.6.
        let top = a.apply([100.0, 20.0]);
        assert_relative_eq!(top[1], 25.6, epsilon = 1e-12);
        assert_relative_eq!(a.scale(), 1.024, epsilon = 1e-12);
        // The enlarged square's corner is the crop corner.
        let corner = a.apply([100.0 - 125.0, 120.0 - 125.0]);
        assert_relative_eq!(corner[0], 0.0, epsilon = 1e-12);
        assert_relative_eq!(corner[1], 0.0, epsilon = 1e-12);
    }

    #[test]
    fn rotation_matches_hybrik_get_dir() {
        // HybrIK maps c + R(rot) (0, -side/2) to the crop's top-centre (128, 0).
        let crop = Crop {
            center: [300.0, 200.0],
            side: 128.0,
            rot_deg: 30.0,
            size: 256,
        };
        let (sn, cs) = 30f64.to_radians().sin_cos();
        let (dx, dy) = (0.0 * cs - (-64.0) * sn, 0.0 * sn + (-64.0) * cs);
        let p = crop.affine().apply([300.0 + dx, 200.0 + dy]);
        assert_relative_eq!(p[0], 128.0, epsilon = 1e-12);
        assert_relative_eq!(p[1], 0.0, epsilon = 1e-12);
    }

    #[test]
    fn boxes() {
        let b = BBox::around_points([[0.0, 0.0], [10.0, 20.0], [f64::NAN, 1.0]], 1.2).unwrap();
        assert_relative_eq!(b.w, 12.0, epsilon = 1e-12);
        assert_relative_eq!(b.h, 24.0, epsilon = 1e-12);
        assert_eq!(b.center(), [5.0, 10.0]);
        assert!(BBox::around_points([], 1.0).is_none());
        let a = BBox::from_xyxy(0.0, 0.0, 2.0, 2.0);
        assert_relative_eq!(
            a.iou(&BBox {
                x: 1.0,
                y: 0.0,
                w: 2.0,
                h: 2.0
            }),
            2.0 / 6.0,
            epsilon = 1e-12
        );
        assert!(
            !BBox {
                x: 0.0,
                y: 0.0,
                w: 0.0,
                h: 1.0
            }
            .is_valid()
        );
    }

    proptest! {
        #[test]
        fn affine_round_trip(cx in -500.0..2000.0f64, cy in -500.0..2000.0f64, side in 4.0..3000.0f64,
                             rot in -180.0..180.0f64, px in -100.0..2000.0f64, py in -100.0..2000.0f64) {
            let a = Crop { center: [cx, cy], side, rot_deg: rot, size: 256 }.affine();
            let inv = a.inverse().unwrap();
            let q = inv.apply(a.apply([px, py]));
            prop_assert!((q[0] - px).abs() < 1e-9 && (q[1] - py).abs() < 1e-9);
            prop_assert!((a.scale() - 256.0 / side).abs() < 1e-9 * a.scale());
        }
    }
}
