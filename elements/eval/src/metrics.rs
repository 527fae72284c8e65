//! Evaluation metrics (reference 5.2): MPJPE (mean per-joint position error after aligning the
//! roots) and PA-MPJPE (after a similarity Procrustes alignment: scale, rotation, translation;
//! Umeyama 1991 closed form, reflection excluded).

use ikol_types::nalgebra::{Matrix3, Vector3};

/// Mean Euclidean distance between corresponding points (NaN for empty or unequal sets).
pub fn mean_distance(a: &[Vector3<f64>], b: &[Vector3<f64>]) -> f64 {
    if a.is_empty() || a.len() != b.len() {
        return f64::NAN;
    }
    a.iter().zip(b).map(|(p, g)| (p - g).norm()).sum::<f64>() / a.len() as f64
}

/// Mean Euclidean distance between root-aligned joint sets, the root being row 0 (same units as
/// the input).
pub fn mpjpe(pred: &[Vector3<f64>], gt: &[Vector3<f64>]) -> f64 {
    if pred.is_empty() || pred.len() != gt.len() {
        return f64::NAN;
    }
    let (p0, g0) = (pred[0], gt[0]);
    let p: Vec<_> = pred.iter().map(|p| p - p0).collect();
    let g: Vec<_> = gt.iter().map(|g| g - g0).collect();
    mean_distance(&p, &g)
}

/// `pred` aligned to `gt` by the best similarity transform (s R pred + t).
pub fn procrustes_align(pred: &[Vector3<f64>], gt: &[Vector3<f64>]) -> Vec<Vector3<f64>> {
    let n = pred.len() as f64;
    let mp = pred.iter().sum::<Vector3<f64>>() / n;
    let mg = gt.iter().sum::<Vector3<f64>>() / n;
    let mut cov = Matrix3::zeros();
    let mut var_p = 0.0;
    for (p, g) in pred.iter().zip(gt) {
        let (a, b) = (p - mp, g - mg);
        cov += b * a.transpose();
        var_p += a.norm_squared();
    }
    let svd = cov.svd(true, true);
    let (Some(u), Some(vt)) = (svd.u, svd.v_t) else {
        return pred.to_vec();
    };
    let mut d = Matrix3::identity();
    if (u * vt).determinant() < 0.0 {
        d[(2, 2)] = -1.0;
    }
    let r = u * d * vt;
    let s = if var_p > 0.0 {
        (Matrix3::from_diagonal(&svd.singular_values) * d).trace() / var_p
    } else {
        1.0
    };
    pred.iter().map(|p| s * r * (p - mp) + mg).collect()
}

/// MPJPE after similarity Procrustes alignment.
pub fn pa_mpjpe(pred: &[Vector3<f64>], gt: &[Vector3<f64>]) -> f64 {
    if pred.is_empty() || pred.len() != gt.len() {
        return f64::NAN;
    }
    mean_distance(&procrustes_align(pred, gt), gt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procrustes_undoes_similarity() {
        let gt: Vec<Vector3<f64>> = (0..10)
            .map(|i| {
                let x = i as f64;
                Vector3::new(x.sin(), (2.0 * x).cos(), 0.3 * x)
            })
            .collect();
        let r = ikol_types::rotation::axis_angle_to_matrix(&Vector3::new(0.3, -0.5, 0.9));
        let pred: Vec<Vector3<f64>> = gt
            .iter()
            .map(|g| 1.7 * r * g + Vector3::new(1.0, 2.0, 3.0))
            .collect();
        assert!(pa_mpjpe(&pred, &gt) < 1e-9);
        assert!(mpjpe(&pred, &gt) > 0.1);
        assert!(mpjpe(&gt, &gt) < 1e-12);
    }
}
