//! Training augmentation as upstream configures it (reference 4.4): scale x clip(N(1, 0.3),
//! 0.7, 1.3); in-plane rotation clip(N(0, 30 deg), +-60 deg) with probability 0.6; horizontal
//! flip with probability 0.5 (left/right joints swapped, twist sin negated, leaf quaternions'
//! y and z negated, reference 1.3-1.4); colour x U(0.8, 1.2) per channel; one synthetic-occlusion
//! rectangle (0-30 % of the box, aspect 0.5-2, uniform noise).
//!
//! Scale and rotation act on the crop (`Crop::side`, `Crop::rot_deg`): the uvd targets follow
//! from the augmented crop affine and the camera-frame targets are unchanged, since uvd -> camera
//! goes through the same affine. The flip mirrors the frame itself (pixels, principal point,
//! box) and the ground truth with it, so every target stays exact.

use ikol_types::joints::{
    LEAF_FLIP_PAIRS, QUAT_FLIP_SIGNS, SMPL24_FLIP_PAIRS, TWIST_FLIP_PAIRS, TWIST_FLIP_SIGNS,
};
use ikol_types::nalgebra::{Matrix3, Vector3, Vector4};
use ikol_types::{Affine2, BBox, Intrinsics};
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// Augmentation settings (the `augment` section of the training config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    pub enabled: bool,
    /// Standard deviation of the box scale factor (clipped to 1 +- this).
    pub scale: f64,
    /// Standard deviation of the rotation, degrees (clipped to +- twice this).
    pub rotation_deg: f64,
    pub rotation_prob: f64,
    pub flip_prob: f64,
    /// Per-channel gain range 1 +- this.
    pub colour: f64,
    /// Largest occluder area as a fraction of the box (0: no occlusion).
    pub occlusion_area: f64,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            enabled: true,
            scale: 0.3,
            rotation_deg: 30.0,
            rotation_prob: 0.6,
            flip_prob: 0.5,
            colour: 0.2,
            occlusion_area: 0.3,
        }
    }
}

/// What was drawn for one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub scale: f64,
    pub rotation_deg: f64,
    pub flip: bool,
    pub gains: [f32; 3],
    /// Occluder in crop pixels (x, y, w, h) and its noise seed.
    pub occluder: Option<([usize; 4], u64)>,
}

impl Draw {
    /// No change at all.
    pub const IDENTITY: Draw = Draw {
        scale: 1.0,
        rotation_deg: 0.0,
        flip: false,
        gains: [1.0; 3],
        occluder: None,
    };
}

/// A standard normal deviate (Box-Muller; `rand_distr` is not needed for one).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Augment {
    /// Rejects settings the draws cannot use, naming the `augment.*` key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let in_range = |v: f64, lo: f64, hi: f64, hi_open: bool| {
            v.is_finite() && v >= lo && if hi_open { v < hi } else { v <= hi }
        };
        for (key, v, lo, hi, open) in [
            ("scale", self.scale, 0.0, 1.0, true),
            ("rotation_deg", self.rotation_deg, 0.0, 180.0, false),
            ("rotation_prob", self.rotation_prob, 0.0, 1.0, false),
            ("flip_prob", self.flip_prob, 0.0, 1.0, false),
            ("colour", self.colour, 0.0, 1.0, true),
            ("occlusion_area", self.occlusion_area, 0.0, 1.0, false),
        ] {
            anyhow::ensure!(
                in_range(v, lo, hi, open),
                "augment.{key} = {v}: expected {lo} <= value {} {hi}",
                if open { "<" } else { "<=" }
            );
        }
        Ok(())
    }

    /// Draws one sample's augmentation; `crop_size` is the network input side.
    pub fn draw(&self, rng: &mut StdRng, crop_size: usize) -> Draw {
        if !self.enabled {
            return Draw::IDENTITY;
        }
        let scale = (1.0 + self.scale * normal(rng)).clamp(1.0 - self.scale, 1.0 + self.scale);
        let rotation_deg = if rng.random_range(0.0..1.0) < self.rotation_prob {
            (self.rotation_deg * normal(rng))
                .clamp(-2.0 * self.rotation_deg, 2.0 * self.rotation_deg)
        } else {
            0.0
        };
        let flip = rng.random_range(0.0..1.0) < self.flip_prob;
        let lo = (1.0 - self.colour) as f32;
        let hi = (1.0 + self.colour) as f32;
        let gains = if self.colour > 0.0 {
            [0; 3].map(|_| rng.random_range(lo..hi))
        } else {
            [1.0; 3]
        };
        // The box fills 1 / 1.25 of the crop side.
        let occluder = (self.occlusion_area > 0.0).then(|| {
            let side = crop_size as f64 / ikol_types::crop::BOX_SCALE_MULT;
            let area = rng.random_range(0.0..self.occlusion_area) * side * side;
            let aspect: f64 = rng.random_range(0.5..2.0);
            let w = (area * aspect).sqrt().min(side).max(1.0);
            let h = (area / aspect).sqrt().min(side).max(1.0);
            let x0 = 0.5 * (crop_size as f64 - side);
            let x = x0 + rng.random_range(0.0..=(side - w).max(0.0));
            let y = x0 + rng.random_range(0.0..=(side - h).max(0.0));
            (
                [x as usize, y as usize, w as usize, h as usize],
                rng.random::<u64>(),
            )
        });
        Draw {
            scale,
            rotation_deg,
            flip,
            gains,
            occluder,
        }
    }
}

/// `a` after `b` (maps p to a(b(p))).
pub fn compose(a: &Affine2, b: &Affine2) -> Affine2 {
    let (x, y) = (&a.m, &b.m);
    let row = |r: usize| {
        [
            x[r][0] * y[0][0] + x[r][1] * y[1][0],
            x[r][0] * y[0][1] + x[r][1] * y[1][1],
            x[r][0] * y[0][2] + x[r][1] * y[1][2] + x[r][2],
        ]
    };
    Affine2 {
        m: [row(0), row(1)],
    }
}

/// Frame pixels -> mirrored frame pixels (x -> W - 1 - x); its own inverse.
pub fn mirror_affine(width: usize) -> Affine2 {
    Affine2 {
        m: [[-1.0, 0.0, width as f64 - 1.0], [0.0, 1.0, 0.0]],
    }
}

/// The mirrored camera: pixel x -> W - 1 - x, i.e. cx -> W - 1 - cx.
pub fn mirror_intrinsics(k: &Intrinsics, width: usize) -> Intrinsics {
    Intrinsics {
        cx: width as f64 - 1.0 - k.cx,
        ..*k
    }
}

/// The mirrored box.
pub fn mirror_box(b: &BBox, width: usize) -> BBox {
    BBox {
        x: width as f64 - 1.0 - (b.x + b.w),
        ..*b
    }
}

fn swap<T>(v: &mut [T], pairs: &[(usize, usize)]) {
    for &(a, b) in pairs {
        v.swap(a, b);
    }
}

/// The ground truth of the mirrored person (X -> -X in the camera): joints mirrored and their
/// left/right labels swapped, local rotations M R M (M = diag(-1, 1, 1)) swapped, twist angles
/// negated (sin -> -sin) and swapped (twist is indexed by joint - 1), leaf quaternions
/// (w, x, -y, -z) swapped.
pub fn mirror_truth(
    abs: &mut [Vector3<f64>],
    local: &mut [Matrix3<f64>],
    twist: &mut [[f64; 2]],
    leaf: &mut [Vector4<f64>],
) {
    for p in abs.iter_mut() {
        p.x = -p.x;
    }
    swap(abs, &SMPL24_FLIP_PAIRS);
    mirror_rotations(local);
    for t in twist.iter_mut() {
        *t = std::array::from_fn(|i| t[i] * f64::from(TWIST_FLIP_SIGNS[i]));
    }
    swap(twist, &TWIST_FLIP_PAIRS);
    for q in leaf.iter_mut() {
        *q = Vector4::from_fn(|i, _| q[i] * f64::from(QUAT_FLIP_SIGNS[i]));
    }
    swap(leaf, &LEAF_FLIP_PAIRS);
}

/// The local rotations (SMPL-24 order, the root's in the camera frame) of the mirrored pose:
/// M R M (M = diag(-1, 1, 1)), left and right swapped; its own inverse.
pub fn mirror_rotations(local: &mut [Matrix3<f64>]) {
    let m = Matrix3::from_diagonal(&Vector3::new(-1.0, 1.0, 1.0));
    for r in local.iter_mut() {
        *r = m * *r * m;
    }
    swap(local, &SMPL24_FLIP_PAIRS);
}

/// Per-channel gains and the occluder on a crop (packed RGB, `size` x `size`).
pub fn photometric(crop: &mut [u8], size: usize, d: &Draw) {
    if d.gains != [1.0; 3] {
        for px in crop.chunks_exact_mut(3) {
            for (c, g) in px.iter_mut().zip(d.gains) {
                *c = (f32::from(*c) * g).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    if let Some(([x, y, w, h], seed)) = d.occluder {
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(seed);
        for yy in y..(y + h).min(size) {
            for xx in x..(x + w).min(size) {
                for c in 0..3 {
                    crop[3 * (yy * size + xx) + c] = rng.random();
                }
            }
        }
    }
}
