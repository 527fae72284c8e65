//! Rotation conversions (axis-angle, matrix, unit quaternion (w, x, y, z)), defined once for the
//! whole project and generic over the scalar so the same code serves f32 and f64.
//!
//! Rodrigues' formula R = I + sin(a) K + (1 - cos(a)) K^2 with K = [n]x (HybrIK Appendix A, Eq. 4
//! of the IKOL paper's swing rotation); matrix -> quaternion by Shepperd's method, which stays
//! accurate near 180 degrees where the trace-only formula loses precision.

use nalgebra::{Matrix3, RealField, Vector3, Vector4};

/// The cross-product matrix [v]x such that [v]x w = v x w.
pub fn skew<T: RealField + Copy>(v: &Vector3<T>) -> Matrix3<T> {
    let z = T::zero();
    Matrix3::new(z, -v.z, v.y, v.z, z, -v.x, -v.y, v.x, z)
}

/// Rotation about the unit axis `n` by the angle whose cosine and sine are given:
/// R = I + sin K + (1 - cos) K^2, K = [n]x.
pub fn rodrigues<T: RealField + Copy>(n: &Vector3<T>, cos: T, sin: T) -> Matrix3<T> {
    let k = skew(n);
    Matrix3::identity() + k * sin + k * k * (T::one() - cos)
}

/// Axis-angle vector (direction = axis, norm = angle in radians) to a rotation matrix. Exact for
/// all angles; uses the second-order series below 1e-6 rad so zero is handled without division.
pub fn axis_angle_to_matrix<T: RealField + Copy>(v: &Vector3<T>) -> Matrix3<T> {
    let angle = v.norm();
    if angle < nalgebra::convert(1e-6) {
        let k = skew(v);
        return Matrix3::identity() + k + k * k * nalgebra::convert::<f64, T>(0.5);
    }
    rodrigues(&(v / angle), angle.cos(), angle.sin())
}

/// Rotation matrix to a unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method: pivot on the
/// largest of trace and the diagonal entries).
pub fn matrix_to_quat<T: RealField + Copy>(r: &Matrix3<T>) -> Vector4<T> {
    let one = T::one();
    let two: T = nalgebra::convert(2.0);
    let quarter: T = nalgebra::convert(0.25);
    let tr = r[(0, 0)] + r[(1, 1)] + r[(2, 2)];
    let q = if tr > r[(0, 0)] && tr > r[(1, 1)] && tr > r[(2, 2)] {
        let s = (one + tr).sqrt() * two; // s = 4w
        Vector4::new(
            quarter * s,
            (r[(2, 1)] - r[(1, 2)]) / s,
            (r[(0, 2)] - r[(2, 0)]) / s,
            (r[(1, 0)] - r[(0, 1)]) / s,
        )
    } else if r[(0, 0)] > r[(1, 1)] && r[(0, 0)] > r[(2, 2)] {
        let s = (one + r[(0, 0)] - r[(1, 1)] - r[(2, 2)]).sqrt() * two; // s = 4x
        Vector4::new(
            (r[(2, 1)] - r[(1, 2)]) / s,
            quarter * s,
            (r[(0, 1)] + r[(1, 0)]) / s,
            (r[(0, 2)] + r[(2, 0)]) / s,
        )
    } else if r[(1, 1)] > r[(2, 2)] {
        let s = (one + r[(1, 1)] - r[(0, 0)] - r[(2, 2)]).sqrt() * two; // s = 4y
        Vector4::new(
            (r[(0, 2)] - r[(2, 0)]) / s,
            (r[(0, 1)] + r[(1, 0)]) / s,
            quarter * s,
            (r[(1, 2)] + r[(2, 1)]) / s,
        )
    } else {
        let s = (one + r[(2, 2)] - r[(0, 0)] - r[(1, 1)]).sqrt() * two; // s = 4z
        Vector4::new(
            (r[(1, 0)] - r[(0, 1)]) / s,
            (r[(0, 2)] + r[(2, 0)]) / s,
            (r[(1, 2)] + r[(2, 1)]) / s,
            quarter * s,
        )
    };
    let q = q / q.norm();
    if q.x < T::zero() { -q } else { q }
}

/// Quaternion (w, x, y, z), not necessarily normalised, to a rotation matrix. A zero quaternion
/// (which a network can output) gives the identity rather than NaN.
pub fn quat_to_matrix<T: RealField + Copy>(q: &Vector4<T>) -> Matrix3<T> {
    let n = q.norm();
    if n <= T::default_epsilon() {
        return Matrix3::identity();
    }
    let (w, x, y, z) = (q.x / n, q.y / n, q.z / n, q.w / n);
    let one = T::one();
    let two: T = nalgebra::convert(2.0);
    Matrix3::new(
        one - two * (y * y + z * z),
        two * (x * y - w * z),
        two * (x * z + w * y),
        two * (x * y + w * z),
        one - two * (x * x + z * z),
        two * (y * z - w * x),
        two * (x * z - w * y),
        two * (y * z + w * x),
        one - two * (x * x + y * y),
    )
}

/// Unit quaternion (w, x, y, z) to an axis-angle vector with angle in [0, pi].
pub fn quat_to_axis_angle<T: RealField + Copy>(q: &Vector4<T>) -> Vector3<T> {
    let q = if q.x < T::zero() { -q } else { *q };
    let v = Vector3::new(q.y, q.z, q.w);
    let s = v.norm();
    if s < nalgebra::convert(1e-12) {
        // angle ~ 2 s / w: first order, exact in the limit.
        return v * nalgebra::convert::<f64, T>(2.0);
    }
    let angle = s.atan2(q.x) * nalgebra::convert::<f64, T>(2.0);
    v * (angle / s)
}

/// Rotation matrix to an axis-angle vector (angle in [0, pi]), accurate near 0 and near pi.
pub fn matrix_to_axis_angle<T: RealField + Copy>(r: &Matrix3<T>) -> Vector3<T> {
    quat_to_axis_angle(&matrix_to_quat(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use proptest::prelude::*;

    fn axis_angle() -> impl Strategy<Value = Vector3<f64>> {
        (
            -1.0..1.0f64,
            -1.0..1.0f64,
            -1.0..1.0f64,
            0.0..std::f64::consts::PI,
        )
            .prop_filter("non-degenerate axis", |(x, y, z, _)| {
                x * x + y * y + z * z > 1e-4
            })
            .prop_map(|(x, y, z, a)| Vector3::new(x, y, z).normalize() * a)
    }

    #[test]
    fn known_values() {
        // 90 degrees about z maps x to y (closed form).
        let r = axis_angle_to_matrix(&Vector3::new(0.0, 0.0, std::f64::consts::FRAC_PI_2));
        assert_relative_eq!(r * Vector3::x(), Vector3::y(), epsilon = 1e-15);
        let q = matrix_to_quat(&r);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert_relative_eq!(q, Vector4::new(h, 0.0, 0.0, h), epsilon = 1e-15);
        // 180 degrees about x: Shepperd's pivot on x.
        let r = axis_angle_to_matrix(&Vector3::new(std::f64::consts::PI, 0.0, 0.0));
        assert_relative_eq!(
            r,
            Matrix3::new(1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0),
            epsilon = 1e-15
        );
        assert_relative_eq!(
            matrix_to_axis_angle(&r).norm(),
            std::f64::consts::PI,
            epsilon = 1e-12
        );
        assert_eq!(
            quat_to_matrix(&Vector4::<f64>::zeros()),
            Matrix3::identity()
        );
        assert_eq!(
            axis_angle_to_matrix(&Vector3::<f64>::zeros()),
            Matrix3::identity()
        );
    }

    proptest! {
        #[test]
        fn round_trips(v in axis_angle()) {
            let r = axis_angle_to_matrix(&v);
            prop_assert!((r.transpose() * r - Matrix3::identity()).norm() < 1e-12);
            prop_assert!((r.determinant() - 1.0).abs() < 1e-12);
            let v2 = matrix_to_axis_angle(&r);
            // Axis-angle is unique for angles in [0, pi) .
            if v.norm() < std::f64::consts::PI - 1e-6 {
                prop_assert!((v - v2).norm() < 1e-9, "{v:?} vs {v2:?}");
            }
            prop_assert!((axis_angle_to_matrix(&v2) - r).norm() < 1e-9);
            let q = matrix_to_quat(&r);
            prop_assert!((quat_to_matrix(&q) - r).norm() < 1e-12);
            prop_assert!((quat_to_matrix(&(q * 3.0)) - r).norm() < 1e-12);
            // f32 agrees with f64 to single precision.
            let r32 = axis_angle_to_matrix(&v.cast::<f32>());
            prop_assert!((r32.cast::<f64>() - r).norm() < 1e-5);
        }

        #[test]
        fn rodrigues_rotates_about_axis(v in axis_angle()) {
            let a = v.norm();
            prop_assume!(a > 1e-3);
            let n = v / a;
            let r = rodrigues(&n, a.cos(), a.sin());
            prop_assert!((r * n - n).norm() < 1e-12);
            prop_assert!((skew(&n) * Vector3::x() - n.cross(&Vector3::x())).norm() < 1e-15);
        }
    }
}
