//! The geometric kernels every solver shares, each defined once and generic over the scalar.
//!
//! - Swing (HybrIK Eq. 7-9): the minimal rotation taking the rest bone `r` to the target bone `t`,
//!   about n = (r x t)/|r x t| by the angle with cos = r.t/(|r||t|), sin = |r x t|/(|r||t|).
//! - Twist (HybrIK Eq. 10): rotation by phi about the rest bone direction.
//! - Kabsch / SVD root (HybrIK Appendix A, Eq. 24-33): R = V diag(1, 1, det(V U^T)) U^T for
//!   S = sum_c rest_c target_c^T = U Sigma V^T; plus its first-order tangent (used by the shape
//!   refinement and by the batched twin's backward pass).
//! - Swing-twist decomposition of a rotation about a bone (Baerlocher and Boulic 2001), used to
//!   read the twist of ground-truth rotations and to project an analytic solution onto IKOL's
//!   one-angle swing parametrisation.
//!
//! Degenerate geometry never yields NaN: zero-length vectors give the identity, a target parallel
//! to the rest bone gives the identity and an anti-parallel one a half turn about the
//! deterministic perpendicular axis of [`perpendicular_axis`] (reference 7: upstream silently
//! returns the identity there).

use ikol_types::rotation::{matrix_to_quat, rodrigues, skew};
use nalgebra::{Matrix3, RealField, Vector3};

/// Below this norm a vector counts as zero (metres or unitless; far below any bone or twist).
pub const TINY: f64 = 1e-12;
/// A swing is degenerate (target parallel or anti-parallel to the rest bone) when
/// sin = |r x t|/(|r||t|) falls below this.
pub const PARALLEL_EPS: f64 = 1e-10;
/// A twist (cos, sin) pair shorter than this is treated as no twist (identity). Upstream divides
/// by (|phi| + 1e-8) (reference 1.3); we normalise exactly above this threshold so R_tw stays a
/// rotation, which differs from upstream by at most 1e-8 relative.
pub const TWIST_EPS: f64 = 1e-8;

fn c<T: RealField + Copy>(x: f64) -> T {
    nalgebra::convert(x)
}

/// Deterministic unit vector perpendicular to `v`: `v x e_m` normalised, where `e_m` is the
/// coordinate axis least aligned with `v` (first such axis on ties). Returns the x axis for a
/// zero vector.
pub fn perpendicular_axis<T: RealField + Copy>(v: &Vector3<T>) -> Vector3<T> {
    let (ax, ay, az) = (v.x.abs(), v.y.abs(), v.z.abs());
    let e = if ax <= ay && ax <= az {
        Vector3::x()
    } else if ay <= az {
        Vector3::y()
    } else {
        Vector3::z()
    };
    let p = v.cross(&e);
    let n = p.norm();
    if n > c(TINY) { p / n } else { Vector3::x() }
}

/// Normalised twist (cos phi, sin phi) from a raw network pair (reference 1.3, HybrIK Eq. 10);
/// a pair shorter than [`TWIST_EPS`] (for example all zeros) gives the identity twist (1, 0).
pub fn normalise_twist<T: RealField + Copy>(cos: T, sin: T) -> (T, T) {
    let n = (cos * cos + sin * sin).sqrt();
    if n > c(TWIST_EPS) {
        (cos / n, sin / n)
    } else {
        (T::one(), T::zero())
    }
}

/// The swing geometry between a rest bone `r` and a target bone `t` (HybrIK Eq. 7-8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Swing<T: RealField + Copy> {
    /// Unit swing axis n = w/|w|, w = r x t ([`perpendicular_axis`] of `r` when degenerate).
    pub axis: Vector3<T>,
    /// cos of the analytic swing angle, r.t/(|r||t|) (exactly +-1 when degenerate).
    pub cos: T,
    /// sin of the analytic swing angle, |r x t|/(|r||t|) (exactly 0 when degenerate).
    pub sin: T,
    /// w = r x t (not normalised); its derivative drives IKOL's axis Jacobian.
    pub w: Vector3<T>,
    /// |w|, or zero when the axis is the fallback (then the axis has zero derivative).
    pub w_norm: T,
}

impl<T: RealField + Copy> Swing<T> {
    /// True when the axis is the deterministic fallback (parallel, anti-parallel or zero bones).
    pub fn degenerate(&self) -> bool {
        self.w_norm == T::zero()
    }

    /// The analytic swing angle in [0, pi].
    pub fn angle(&self) -> T {
        self.sin.atan2(self.cos)
    }

    /// R_sw = I + sin `[n]x` + (1 - cos)`[n]x^2` for the analytic angle (HybrIK Eq. 9).
    pub fn rotation(&self) -> Matrix3<T> {
        rodrigues(&self.axis, self.cos, self.sin)
    }

    /// R_sw(alpha) about the same axis by an arbitrary angle (IKOL Eq. 2, reference 3.3).
    pub fn rotation_by(&self, alpha: T) -> Matrix3<T> {
        rodrigues(&self.axis, alpha.cos(), alpha.sin())
    }
}

/// Swing axis and angle taking the rest bone `r` toward the target bone `t` (HybrIK Eq. 7-8).
pub fn swing<T: RealField + Copy>(r: &Vector3<T>, t: &Vector3<T>) -> Swing<T> {
    let rt = r.norm() * t.norm();
    let w = r.cross(t);
    if rt <= c(TINY * TINY) {
        return Swing {
            axis: perpendicular_axis(r),
            cos: T::one(),
            sin: T::zero(),
            w,
            w_norm: T::zero(),
        };
    }
    let w_norm = w.norm();
    let dot = r.dot(t);
    if w_norm <= rt * c(PARALLEL_EPS) {
        // Parallel: identity. Anti-parallel: half turn about a deterministic perpendicular.
        return Swing {
            axis: perpendicular_axis(r),
            cos: if dot >= T::zero() {
                T::one()
            } else {
                -T::one()
            },
            sin: T::zero(),
            w,
            w_norm: T::zero(),
        };
    }
    Swing {
        axis: w / w_norm,
        cos: dot / rt,
        sin: w_norm / rt,
        w,
        w_norm,
    }
}

/// Unit twist axis of a rest bone, `None` for a zero-length bone (whose twist is the identity).
pub fn twist_axis<T: RealField + Copy>(bone: &Vector3<T>) -> Option<Vector3<T>> {
    let n = bone.norm();
    (n > c(TINY)).then(|| bone / n)
}

/// R_tw = I + sin phi `[u]x` + (1 - cos phi)`[u]x^2` about u = bone/|bone| (HybrIK Eq. 10), with
/// (cos phi, sin phi) already normalised. A zero-length bone gives the identity.
pub fn twist_rotation<T: RealField + Copy>(bone: &Vector3<T>, cos: T, sin: T) -> Matrix3<T> {
    match twist_axis(bone) {
        Some(u) => rodrigues(&u, cos, sin),
        None => Matrix3::identity(),
    }
}

/// The rotation in SO(3) that best maps the `rest` vectors onto the `target` vectors in the
/// least-squares sense (HybrIK Appendix A): S = sum rest target^T = U Sigma V^T,
/// R = V diag(1, 1, det(V U^T)) U^T. A zero S gives the identity (upstream, reference 2.3).
pub fn kabsch<T: RealField + Copy>(rest: &[Vector3<T>], target: &[Vector3<T>]) -> Matrix3<T> {
    let mut m = Matrix3::zeros(); // M = S^T = sum target rest^T; R is its rotation factor.
    for (r, t) in rest.iter().zip(target) {
        m += t * r.transpose();
    }
    kabsch_from_m(&m)
}

/// Rotation factor of M = sum target rest^T (the [`kabsch`] solution given M directly).
pub fn kabsch_from_m<T: RealField + Copy>(m: &Matrix3<T>) -> Matrix3<T> {
    if m.iter().all(|x| x.abs() <= c(TINY * TINY)) {
        return Matrix3::identity();
    }
    let svd = m.svd(true, true);
    let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else {
        return Matrix3::identity();
    };
    // M = U' S V'^T with U' = V and V' = U in the notation of S; det fix on the smallest
    // singular value (nalgebra sorts them in descending order).
    let mut d = Matrix3::identity();
    if (u * v_t).determinant() < T::zero() {
        d[(2, 2)] = -T::one();
    }
    let r = u * d * v_t;
    if r.iter().all(|x| x.is_finite()) {
        r
    } else {
        Matrix3::identity()
    }
}

/// vee of a skew matrix: the vector a with `[a]x` = A (antisymmetric part taken).
pub fn vee<T: RealField + Copy>(a: &Matrix3<T>) -> Vector3<T> {
    Vector3::new(
        a[(2, 1)] - a[(1, 2)],
        a[(0, 2)] - a[(2, 0)],
        a[(1, 0)] - a[(0, 1)],
    ) * c::<T>(0.5)
}

/// The linear map K = tr(H) I - H, H = R^T M, of the Kabsch tangent: if R = kabsch(M) then
/// dR = R `[w]x` with K w = vee(R^T dM - dM^T R) (differentiating the optimality condition
/// "R^T M symmetric"; `[w]x` H + H `[w]x` = [(tr H I - H) w]x for symmetric H). Returns `None` when K
/// is singular (two smallest singular values of M sum to zero: the fit is not unique).
pub fn kabsch_tangent_map<T: RealField + Copy>(
    r: &Matrix3<T>,
    m: &Matrix3<T>,
) -> Option<Matrix3<T>> {
    let h = r.transpose() * m;
    let h = (h + h.transpose()) * c::<T>(0.5);
    let k = Matrix3::identity() * h.trace() - h;
    let inv = k.try_inverse()?;
    inv.iter().all(|x| x.is_finite()).then_some(inv)
}

/// Body-frame angular velocity w (dR = R `[w]x`) of the Kabsch rotation R = kabsch(M) along the
/// direction dM (see [`kabsch_tangent_map`]; zero when the fit is not unique).
pub fn kabsch_tangent<T: RealField + Copy>(
    r: &Matrix3<T>,
    m: &Matrix3<T>,
    dm: &Matrix3<T>,
) -> Vector3<T> {
    let Some(k_inv) = kabsch_tangent_map(r, m) else {
        return Vector3::zeros();
    };
    let a = r.transpose() * dm;
    // vee(A - A^T) = 2 vee(A) for the antisymmetric part.
    k_inv * (vee(&a) * c::<T>(2.0))
}

/// Twist angle of the rotation `rot` about the unit `axis` in its swing-twist decomposition
/// rot = R_sw R_tw (R_tw about `axis`, R_sw with axis perpendicular to `axis`): with the
/// quaternion (w, v) of `rot`, phi = 2 atan2(v . axis, w), wrapped to (-pi, pi].
pub fn twist_angle<T: RealField + Copy>(rot: &Matrix3<T>, axis: &Vector3<T>) -> T {
    let q = matrix_to_quat(rot);
    let along = q.y * axis.x + q.z * axis.y + q.w * axis.z;
    let mut phi = along.atan2(q.x) * c(2.0);
    let pi = T::pi();
    if phi > pi {
        phi -= pi * c(2.0);
    } else if phi <= -pi {
        phi += pi * c(2.0);
    }
    phi
}

/// The angle alpha about the unit axis `n` whose rotation is closest to `target` (maximises
/// tr(R(alpha, n)^T target)): with N = `[n]x`, alpha = atan2(tr(N^T target), -tr(N^2 target)).
/// Exact when `target` is itself a rotation about `n`.
pub fn project_angle<T: RealField + Copy>(n: &Vector3<T>, target: &Matrix3<T>) -> T {
    let k = skew(n);
    let a = (k.transpose() * target).trace();
    let b = (k * k * target).trace();
    a.atan2(-b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikol_types::rotation::axis_angle_to_matrix;
    use proptest::prelude::*;

    fn vec3() -> impl Strategy<Value = Vector3<f64>> {
        (-1.0..1.0f64, -1.0..1.0f64, -1.0..1.0f64).prop_map(|(x, y, z)| Vector3::new(x, y, z))
    }

    #[test]
    fn swing_maps_rest_onto_target_direction() {
        let r = Vector3::new(0.0, -0.4, 0.0);
        let t = Vector3::new(0.3, -0.1, 0.2);
        let s = swing(&r, &t);
        let got = s.rotation() * r;
        assert!((got.normalize() - t.normalize()).norm() < 1e-14);
        assert!((s.rotation_by(s.angle()) - s.rotation()).norm() < 1e-14);
    }

    #[test]
    fn swing_degenerate_cases() {
        let r = Vector3::new(0.0f64, 0.3, 0.0);
        // Parallel: identity, fallback axis flagged.
        let s = swing(&r, &(r * 2.0));
        assert!(s.degenerate());
        assert_eq!(s.rotation(), Matrix3::identity());
        // Anti-parallel: a half turn about a perpendicular axis, mapping r to -r.
        let s = swing(&r, &(-r));
        assert!(s.degenerate());
        assert!((s.rotation() * r + r).norm() < 1e-15);
        assert!(s.axis.dot(&r).abs() < 1e-15);
        assert_eq!(s.axis, swing(&r, &(-r * 3.0)).axis, "deterministic");
        // Zero-length rest or target: identity, no NaN.
        for (a, b) in [(Vector3::zeros(), r), (r, Vector3::zeros())] {
            let s = swing(&a, &b);
            assert_eq!(s.rotation(), Matrix3::identity());
            assert!(s.axis.iter().all(|x| x.is_finite()));
        }
        assert_eq!(
            twist_rotation(&Vector3::zeros(), 0.0, 1.0),
            Matrix3::identity()
        );
        assert_eq!(normalise_twist(0.0, 0.0), (1.0, 0.0));
        let (c, s) = normalise_twist(3.0f64, 4.0);
        assert!((c - 0.6).abs() < 1e-15 && (s - 0.8).abs() < 1e-15);
    }

    #[test]
    fn kabsch_recovers_rotation_and_fixes_reflection() {
        let rot = axis_angle_to_matrix(&Vector3::new(0.3f64, -2.0, 0.5));
        let rest = [
            Vector3::new(0.0, 0.11, 0.0),
            Vector3::new(0.09, -0.09, 0.0),
            Vector3::new(-0.09, -0.09, 0.0),
        ];
        let target: Vec<_> = rest.iter().map(|r| rot * r).collect();
        assert!((kabsch(&rest, &target) - rot).norm() < 1e-12);
        // Mirrored targets: still a proper rotation.
        let mirrored: Vec<_> = target
            .iter()
            .map(|t| Vector3::new(-t.x, t.y, t.z))
            .collect();
        let r = kabsch(&rest, &mirrored);
        assert!((r.determinant() - 1.0).abs() < 1e-12);
        assert_eq!(
            kabsch::<f64>(&rest, &[Vector3::zeros(); 3]),
            Matrix3::identity()
        );
    }

    #[test]
    fn kabsch_tangent_matches_finite_differences() {
        let rest = [
            Vector3::new(0.0, 0.11, 0.01),
            Vector3::new(0.09, -0.09, 0.0),
            Vector3::new(-0.09, -0.09, 0.02),
        ];
        let rot = axis_angle_to_matrix(&Vector3::new(0.2, 1.0, -0.4));
        let target: Vec<_> = rest
            .iter()
            .enumerate()
            .map(|(i, r)| rot * r + Vector3::new(0.01 * i as f64, -0.005, 0.003))
            .collect();
        let m_of = |t: &[Vector3<f64>]| {
            let mut m = Matrix3::zeros();
            for (r, t) in rest.iter().zip(t) {
                m += t * r.transpose();
            }
            m
        };
        let m = m_of(&target);
        let r = kabsch_from_m(&m);
        let dm = Matrix3::new(0.3, -0.1, 0.2, 0.05, 0.4, -0.3, 0.1, 0.2, -0.2);
        let h = 1e-6;
        let fd = (kabsch_from_m(&(m + dm * h)) - kabsch_from_m(&(m - dm * h))) / (2.0 * h);
        let w = kabsch_tangent(&r, &m, &dm);
        let an = r * skew(&w);
        assert!((fd - an).norm() < 1e-7 * an.norm().max(1.0), "{fd} vs {an}");
    }

    proptest! {
        #[test]
        fn twist_and_projection_round_trip(axis in vec3(), swing_v in vec3(), phi in -3.0..3.0f64) {
            prop_assume!(axis.norm() > 0.1);
            let u = axis.normalize();
            // A swing perpendicular to u, then a twist about u: the decomposition recovers phi.
            let sw_axis = swing_v - u * swing_v.dot(&u);
            prop_assume!(sw_axis.norm() < 2.5);
            let r_sw = axis_angle_to_matrix(&sw_axis);
            let r_tw = rodrigues(&u, phi.cos(), phi.sin());
            let got = twist_angle(&(r_sw * r_tw), &u);
            prop_assert!((got - phi).abs() < 1e-9, "{got} vs {phi}");
            prop_assert!((project_angle(&u, &r_tw) - phi).abs() < 1e-9);
        }

        #[test]
        fn swing_is_a_rotation(r in vec3(), t in vec3()) {
            let s = swing(&r, &t);
            let rot = s.rotation();
            prop_assert!((rot.transpose() * rot - Matrix3::identity()).norm() < 1e-12);
            if r.norm() > 1e-3 && t.norm() > 1e-3 {
                prop_assert!((rot * r.normalize() - t.normalize()).norm() < 1e-9);
            }
        }
    }
}
