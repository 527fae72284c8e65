//! Camera translation of the root from 2D-3D joint correspondences (DESIGN, "Root translation").
//!
//! Joint `j` has root-relative camera-frame position `X_j = (x, y, z)` and pixel `(u, v)`. The
//! pinhole model `u = fx (x + tx) / (z + tz) + cx` (and the same for v) multiplied out gives two
//! equations linear in the translation `t`:
//!
//! ```text
//! fx tx - (u - cx) tz = (u - cx) z - fx x
//! fy ty - (v - cy) tz = (v - cy) z - fy y
//! ```
//!
//! solved in the weighted least-squares sense through the 3x3 normal equations.

use ikol_types::Intrinsics;
use nalgebra::{Matrix3, Vector3};

/// The translation `t` that best places root-relative joints `joints` (metres, camera axes) on
/// their pixels `uv`; `weights` (one per joint, e.g. confidences) default to 1. `None` when fewer
/// than two joints have positive weight or the system is degenerate.
pub fn camera_translation(
    joints: &[Vector3<f64>],
    uv: &[[f64; 2]],
    weights: Option<&[f64]>,
    k: &Intrinsics,
) -> Option<Vector3<f64>> {
    let n = joints.len().min(uv.len());
    let mut ata = Matrix3::<f64>::zeros();
    let mut atb = Vector3::<f64>::zeros();
    let mut used = 0;
    for j in 0..n {
        let w = weights.and_then(|w| w.get(j).copied()).unwrap_or(1.0);
        let (x, p) = (&joints[j], uv[j]);
        if !w.is_finite() || w <= 0.0 || !x.iter().chain(&p).all(|v| v.is_finite()) {
            continue;
        }
        used += 1;
        let du = p[0] - k.cx;
        let dv = p[1] - k.cy;
        for (row, rhs) in [
            (Vector3::new(k.fx, 0.0, -du), du * x.z - k.fx * x.x),
            (Vector3::new(0.0, k.fy, -dv), dv * x.z - k.fy * x.y),
        ] {
            ata += w * row * row.transpose();
            atb += w * rhs * row;
        }
    }
    if used < 2 {
        return None;
    }
    let t = ata.try_inverse()? * atb;
    t.iter().all(|v| v.is_finite()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> Intrinsics {
        Intrinsics {
            fx: 1000.0,
            fy: 990.0,
            cx: 320.0,
            cy: 240.0,
        }
    }

    fn skeleton() -> Vec<Vector3<f64>> {
        (0..24)
            .map(|i| {
                let a = i as f64 * 0.7;
                Vector3::new(
                    0.4 * a.sin(),
                    0.8 * (a * 0.3).cos() - 0.2,
                    0.2 * (a * 1.3).sin(),
                )
            })
            .collect()
    }

    #[test]
    fn recovers_the_translation_that_projected_the_joints() {
        let t = Vector3::new(0.3, -0.2, 4.5);
        let xs = skeleton();
        let uv: Vec<[f64; 2]> = xs.iter().map(|x| k().project(&(x + t)).unwrap()).collect();
        let got = camera_translation(&xs, &uv, None, &k()).unwrap();
        assert!((got - t).norm() < 1e-9, "{got} vs {t}");
        // Zero-weight joints are ignored, so a wild outlier with weight 0 changes nothing.
        let mut uv2 = uv.clone();
        uv2[3] = [5000.0, -900.0];
        let mut w = vec![1.0; 24];
        w[3] = 0.0;
        let got = camera_translation(&xs, &uv2, Some(&w), &k()).unwrap();
        assert!((got - t).norm() < 1e-9);
    }

    #[test]
    fn too_few_joints_give_none() {
        let xs = skeleton();
        let uv = vec![[320.0, 240.0]; 24];
        assert!(camera_translation(&xs[..1], &uv[..1], None, &k()).is_none());
        assert!(camera_translation(&xs, &uv, Some(&[0.0; 24]), &k()).is_none());
    }
}
