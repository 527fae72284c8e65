//! Model fitting (`method=fit`): the body that agrees with the image, in 3D and over time.
//!
//! Per person and frame, Levenberg-Marquardt over the 24 local rotations, the camera translation
//! of the root and the shape minimises (SMPLify, Bogo et al. ECCV 2016, Eq. 1, with the terms
//! below in place of its learned priors, and SPIN's use of it as in `seeds/spin-notes.md`):
//!
//! ```text
//! E = sum_i w_i / s2d^2 rho(|pi(p_i) - u_i|^2)                 2D keypoints, Geman-McClure rho
//!   + sum_i w_i / s3d^2 |(p_i - c) - (q_i - c_q)|^2             front-end 3D, centre-aligned
//!   + sum_k |log(P_k^T R_k)|^2 / sp^2                           Gaussian around the IK solution
//!   + sum_hinges |a - clamp(a, lo, hi)|^2 / sl^2                 joint limits (knees, elbows)
//!   + |beta|^2 / sb^2 + |beta - beta_track|^2 / sbt^2            shape prior, shape of the track
//!   + |t - t_ik|^2 / st^2                                        root where the IK layer put it
//!   + sum_j |J_j - 2 J_j' + J_j''|^2 / sa^2                      acceleration against the track's
//!                                                               previous two frames (causal)
//!   + sum_k |log(R_k'^T R_k) - log(R_k''^T R_k')|^2 / sw^2       angular acceleration of each joint
//! ```
//!
//! The root prior matters for depth: the keypoints fix the body's image, and its distance only
//! through its size, so without it the acceleration term (a constant-velocity prediction) lets
//! a small drift in depth run on for frames; the IK layer's closed-form translation from the
//! front end's metric 3D and its 2D (`camera_translation`) is unbiased per frame.
//!
//! `rho(s) = c^2 s / (c^2 + s)` (Geman-McClure as SMPLify's GMoF, scale `c` in pixels) is
//! minimised by iteratively reweighted Gauss-Newton: each keypoint's rows are scaled by
//! `sqrt(rho'(s))`. Points `p_i` are joints or skinned surface vertices (anchors, see
//! [`surface`]) so hand, foot and face keypoints observe the forearm, shin and head twist and the
//! leaf rotations. The Jacobians are analytic ([`surface`]; the rotation terms use the inverse
//! right Jacobian of SO(3), [`right_jacobian_inv`]) and checked against finite differences in
//! the tests.
//!
//! Joint limits: hinge ranges from the AAOS normal ranges of motion (Greene & Heckman, "The
//! Clinical Measurement of Joint Motion", AAOS 1994): knee flexion 0-140 degrees with up to 5
//! degrees of hyperextension, elbow flexion 0-150 with 5 of hyperextension; off-axis rotation of
//! the hinges small (knee varus/valgus +-10, tibial rotation +-30; elbow out-of-plane +-15,
//! forearm pronation/supination +-90 which SMPL puts at the elbow). They apply to the axis-angle
//! components in SMPL's joint frames (knee flexion about +x, elbow flexion about -y on the left
//! and +y on the right, as in [`crate::sampling`]).

pub mod surface;

use ikol_body::nalgebra::{DMatrix, DVector, Matrix2x3, Matrix3, Vector2, Vector3};
use ikol_types::Intrinsics;
use ikol_types::camera::MIN_ROOT_DEPTH_M;
use ikol_types::joints::SMPL_JOINTS;
use ikol_types::rotation::{matrix_to_axis_angle, skew};

pub use surface::{BETA, BodyState, PointJacobian, Posed, SurfaceModel, TRANSLATION};

use crate::SolverError;

/// One 2D keypoint: anchor point `point` seen at pixel `uv` with confidence `weight`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keypoint {
    pub point: usize,
    pub uv: [f64; 2],
    pub weight: f64,
}

/// One 3D measurement of anchor point `point`: `xyz` relative to the measurement's centre
/// (metres, camera axes), with confidence `weight`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point3 {
    pub point: usize,
    pub xyz: Vector3<f64>,
    pub weight: f64,
}

/// Weights and limits of the fit (the `ikolsolver` properties `fit-*`).
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Most Levenberg-Marquardt iterations.
    pub iterations: usize,
    /// Stop when an accepted step lowers the energy by less than this fraction.
    pub tolerance: f64,
    /// Pixel noise of a keypoint of confidence 1 (s2d).
    pub sigma_2d: f64,
    /// Geman-McClure scale in pixels (c): errors well past it stop pulling.
    pub robust_2d: f64,
    /// Noise of the front end's 3D points, metres (s3d); 0 turns the term off.
    pub sigma_3d: f64,
    /// Spread of the Gaussian around the IK solution, radians (sp); 0 turns it off.
    pub sigma_pose: f64,
    /// Tolerance of a joint-limit violation, radians (sl).
    pub sigma_limit: f64,
    /// Shape prior spread (betas are unit-variance components); 0 turns the prior off.
    pub sigma_beta: f64,
    /// How far the shape may leave the track's running shape (sbt); 0 turns it off.
    pub sigma_beta_track: f64,
    /// Joint acceleration per frame squared, metres (sa); 0 turns the temporal term off.
    pub sigma_accel: f64,
    /// How far the root may leave the IK layer's translation, metres (st); 0 turns it off.
    pub sigma_translation: f64,
    /// Angular acceleration of each local rotation per frame squared, radians (sw); 0 turns
    /// the term off.
    pub sigma_angular_accel: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            iterations: 10,
            tolerance: 1e-4,
            sigma_2d: 6.0,
            robust_2d: 40.0,
            // Chosen on the four pose2sim views (`make multiview-accuracy MULTIVIEW_VIEW=camNN`):
            // 0.04 m against 0.06 m lowers the mean PA-MPJPE of the fit from 79.3 to 77.9 mm with
            // BlazePose as it is and from 75.8 to 74.4 mm with its flip test.
            sigma_3d: 0.04,
            sigma_pose: 0.8,
            sigma_limit: 0.02,
            // Chosen on the four pose2sim views (`make multiview-accuracy MULTIVIEW_VIEW=camNN`):
            // against 1.5, 4 lowers the fit's mean PA-MPJPE from 74.4 to 71.7 mm and its MPJPE
            // from 105.0 to 101.6 mm (flexion error 13.7 degrees both; 2D error 16.1 -> 16.5 px):
            // the default model's mean limbs are far from the pose2sim subject's (its shin
            // 435 mm and forearm 230 mm; the subject's 369-377 and 251-264), and a tight prior
            // keeps them there. 8 gives the same mean (71.8) with a worse flexion error (14.0).
            // (Both settings measured in one session, 2026-12-07.)
            sigma_beta: 4.0,
            sigma_beta_track: 0.1,
            sigma_accel: 0.05,
            sigma_translation: 0.15,
            sigma_angular_accel: 0.1,
        }
    }
}

/// What one frame's fit is given.
#[derive(Debug, Clone, Copy)]
pub struct FitInput<'a> {
    pub intrinsics: &'a Intrinsics,
    /// 2D keypoints on anchor points.
    pub keypoints: &'a [Keypoint],
    /// 3D measurements of anchor points, relative to the mean of `centre`'s points.
    pub points_3d: &'a [Point3],
    /// The anchor points whose mean is the origin of `points_3d` (e.g. the two hips).
    pub centre: &'a [usize],
    /// Local rotations of the IK solution (the Gaussian prior's mean), 24 rows.
    pub pose_prior: Option<&'a [Matrix3<f64>]>,
    /// The track's running shape.
    pub beta_track: Option<&'a [f64]>,
    /// The root translation of the IK solution (the root prior's mean).
    pub translation_prior: Option<Vector3<f64>>,
    /// The track's joints (camera frame) in the previous frames, oldest first; the last two are
    /// used.
    pub history: &'a [Vec<Vector3<f64>>],
    /// The track's local rotations in the previous frames, oldest first; the last two are used
    /// by the angular acceleration term.
    pub rotation_history: &'a [Vec<Matrix3<f64>>],
}

/// The fitted body.
#[derive(Debug, Clone)]
pub struct FitResult {
    pub state: BodyState,
    /// The 24 joints, camera frame, metres.
    pub joints: Vec<Vector3<f64>>,
    /// The anchor points, camera frame, metres.
    pub points: Vec<Vector3<f64>>,
    /// Final energy.
    pub energy: f64,
    /// Accepted Levenberg-Marquardt steps.
    pub iterations: usize,
    /// Confidence-weighted mean 2D error of the keypoints, pixels.
    pub mean_error_2d: f64,
}

/// Hinge limits: (joint, [lo, hi] per axis-angle component), radians (module doc).
const LIMITS: [(usize, [[f64; 2]; 3]); 4] = [
    // Knees: flexion about +x 0-140 (-5 hyperextension); tibial rotation (y) +-30; varus (z) +-10.
    (4, [[-0.087, 2.44], [-0.52, 0.52], [-0.17, 0.17]]),
    (5, [[-0.087, 2.44], [-0.52, 0.52], [-0.17, 0.17]]),
    // Elbows: pronation/supination (x) +-90; flexion about -y (left) / +y (right) 0-150
    // (-5); out-of-plane (z) +-15.
    (18, [[-1.57, 1.57], [-2.62, 0.087], [-0.26, 0.26]]),
    (19, [[-1.57, 1.57], [-0.087, 2.62], [-0.26, 0.26]]),
];

/// Inverse right Jacobian of SO(3) at `phi`: `log(exp(phi) exp(d)) = phi + Jr^-1(phi) d + O(d^2)`.
pub fn right_jacobian_inv(phi: &Vector3<f64>) -> Matrix3<f64> {
    let th = phi.norm();
    let k = skew(phi);
    let c = if th < 1e-4 {
        1.0 / 12.0 + th * th / 720.0
    } else {
        1.0 / (th * th) - (1.0 + th.cos()) / (2.0 * th * th.sin().max(1e-9))
    };
    Matrix3::identity() + 0.5 * k + c * k * k
}

/// Normal equations `H d = -g` accumulated from residual rows given as sparse columns.
struct Normal {
    h: DMatrix<f64>,
    g: DVector<f64>,
}

/// A sparse 3-row Jacobian under assembly (columns in insertion order).
struct Rows3 {
    cols: Vec<usize>,
    d: Vec<Vector3<f64>>,
    slot: Vec<usize>,
}

impl Rows3 {
    fn new(n: usize) -> Self {
        Self {
            cols: Vec::with_capacity(n),
            d: Vec::with_capacity(n),
            slot: vec![usize::MAX; n],
        }
    }

    fn clear(&mut self) {
        for &c in &self.cols {
            self.slot[c] = usize::MAX;
        }
        self.cols.clear();
        self.d.clear();
    }

    fn add(&mut self, j: &PointJacobian, scale: f64) {
        for (&c, d) in j.cols.iter().zip(&j.d) {
            match self.slot[c] {
                usize::MAX => {
                    self.slot[c] = self.cols.len();
                    self.cols.push(c);
                    self.d.push(d * scale);
                }
                s => self.d[s] += d * scale,
            }
        }
    }
}

impl Normal {
    fn new(n: usize) -> Self {
        Self {
            h: DMatrix::zeros(n, n),
            g: DVector::zeros(n),
        }
    }

    /// Rows `A J` (A: m x 3 applied to each column's 3-vector) with residual `r`, weight `w`.
    fn add_projected<const M: usize>(
        &mut self,
        cols: &[usize],
        d: &[Vector3<f64>],
        a: &nalgebra::SMatrix<f64, M, 3>,
        r: &nalgebra::SVector<f64, M>,
        w: f64,
    ) {
        let ad: Vec<nalgebra::SVector<f64, M>> = d.iter().map(|d| a * d).collect();
        for (i, &ci) in cols.iter().enumerate() {
            self.g[ci] += w * ad[i].dot(r);
            for (j, &cj) in cols.iter().enumerate().skip(i) {
                let v = w * ad[i].dot(&ad[j]);
                self.h[(ci, cj)] += v;
                if ci != cj {
                    self.h[(cj, ci)] += v;
                }
            }
        }
    }

    /// Rows of a rotation term on joint `k`: `r` with Jacobian `m` (3 x 3) on its 3 columns.
    fn add_block(&mut self, k: usize, m: &Matrix3<f64>, r: &Vector3<f64>, w: f64) {
        let jtj = m.transpose() * m * w;
        let jtr = m.transpose() * r * w;
        for a in 0..3 {
            self.g[3 * k + a] += jtr[a];
            for b in 0..3 {
                self.h[(3 * k + a, 3 * k + b)] += jtj[(a, b)];
            }
        }
    }
}

/// The fit of one frame (see the module doc); `init` is where Levenberg-Marquardt starts.
pub fn fit(
    model: &SurfaceModel,
    input: &FitInput<'_>,
    init: &BodyState,
    o: &FitOptions,
) -> Result<FitResult, SolverError> {
    validate(model, input, init)?;
    if !(o.sigma_2d > 0.0 && o.robust_2d > 0.0) {
        return Err(SolverError::InvalidOption {
            option: "sigma_2d / robust_2d",
            reason: "must be positive",
        });
    }
    let n = model.parameters();
    let mut state = init.clone();
    let mut lambda = 1e-3;
    let mut normal = Normal::new(n);
    let mut energy = energy_and_normal(model, input, &state, o, Some(&mut normal));
    if !energy.is_finite() {
        return Err(SolverError::Diverged(
            "the starting energy is not finite".into(),
        ));
    }
    let mut accepted = 0;
    let mut tries = 0;
    while accepted < o.iterations && tries < 4 * o.iterations.max(1) {
        tries += 1;
        let mut a = normal.h.clone();
        for i in 0..n {
            a[(i, i)] += lambda * (normal.h[(i, i)] + 1e-6);
        }
        let Some(ch) = a.cholesky() else {
            lambda *= 10.0;
            continue;
        };
        let d = ch.solve(&(-&normal.g));
        let next = state.step(d.as_slice());
        // A body may not pass the camera: steps that take the root nearer than MIN_ROOT_DEPTH_M
        // are refused (the keypoints' energy is flat behind the camera).
        let e = if next.translation.z < MIN_ROOT_DEPTH_M {
            f64::INFINITY
        } else {
            energy_and_normal(model, input, &next, o, None)
        };
        if e.is_finite() && e < energy {
            let gain = (energy - e) / energy.max(1e-300);
            state = next;
            accepted += 1;
            lambda = (lambda * 0.3).max(1e-9);
            normal = Normal::new(n);
            energy = energy_and_normal(model, input, &state, o, Some(&mut normal));
            if gain < o.tolerance {
                break;
            }
        } else {
            lambda *= 10.0;
            if lambda > 1e10 {
                break;
            }
        }
    }
    let posed = model.pose(&state);
    let finite = posed
        .points
        .iter()
        .chain(&posed.joints)
        .all(|p| p.iter().all(|x| x.is_finite()))
        && state.beta.iter().all(|b| b.is_finite());
    if !finite {
        return Err(SolverError::Diverged("non-finite body".into()));
    }
    let (mut err, mut wsum) = (0.0, 0.0);
    for k in input.keypoints {
        if let Some(uv) = input.intrinsics.project(&posed.points[k.point]) {
            err += k.weight * ((uv[0] - k.uv[0]).powi(2) + (uv[1] - k.uv[1]).powi(2)).sqrt();
            wsum += k.weight;
        }
    }
    Ok(FitResult {
        state,
        joints: posed.joints,
        points: posed.points,
        energy,
        iterations: accepted,
        mean_error_2d: if wsum > 0.0 {
            err / wsum
        } else {
            f64::INFINITY
        },
    })
}

fn validate(
    model: &SurfaceModel,
    input: &FitInput<'_>,
    init: &BodyState,
) -> Result<(), SolverError> {
    let np = model.len();
    if init.rotations.len() != SMPL_JOINTS
        || init.beta.len() != model.betas()
        || !init.translation.iter().all(|x| x.is_finite())
        || !init.beta.iter().all(|x| x.is_finite())
        || init
            .rotations
            .iter()
            .any(|r| !r.iter().all(|x| x.is_finite()))
    {
        return Err(SolverError::NothingToFit(
            "the starting body is malformed or not finite".into(),
        ));
    }
    if init.translation.z < MIN_ROOT_DEPTH_M {
        return Err(SolverError::NothingToFit(
            "the starting body is not in front of the camera".into(),
        ));
    }
    let k = input.intrinsics;
    if !k.is_valid() {
        return Err(SolverError::NothingToFit("invalid intrinsics".into()));
    }
    if input.keypoints.iter().any(|kp| kp.point >= np)
        || input.points_3d.iter().any(|p| p.point >= np)
        || input.centre.iter().any(|&c| c >= np)
    {
        return Err(SolverError::Input("a keypoint refers to no anchor".into()));
    }
    if input
        .keypoints
        .iter()
        .any(|kp| !kp.uv.iter().all(|x| x.is_finite()) || !kp.weight.is_finite())
        || input
            .points_3d
            .iter()
            .any(|p| !p.xyz.iter().all(|x| x.is_finite()) || !p.weight.is_finite())
    {
        return Err(SolverError::NothingToFit(
            "keypoints are not finite (NaN or infinity)".into(),
        ));
    }
    let seen: Vec<&Keypoint> = input.keypoints.iter().filter(|k| k.weight > 0.0).collect();
    if seen.len() < 4 {
        return Err(SolverError::NothingToFit(format!(
            "{} keypoints with positive confidence, at least 4 needed",
            seen.len()
        )));
    }
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for kp in &seen {
        for c in 0..2 {
            lo[c] = lo[c].min(kp.uv[c]);
            hi[c] = hi[c].max(kp.uv[c]);
        }
    }
    if (hi[0] - lo[0]).max(hi[1] - lo[1]) < 4.0 {
        return Err(SolverError::NothingToFit(format!(
            "the keypoints span {:.1} x {:.1} px",
            hi[0] - lo[0],
            hi[1] - lo[1]
        )));
    }
    Ok(())
}

/// Nearest distance to the camera at which a point still counts as projected.
const MIN_DEPTH: f64 = 0.05;

/// The energy of `state`; with `normal`, also its Gauss-Newton normal equations.
fn energy_and_normal(
    model: &SurfaceModel,
    input: &FitInput<'_>,
    state: &BodyState,
    o: &FitOptions,
    mut normal: Option<&mut Normal>,
) -> f64 {
    let posed = model.pose(state);
    let n = model.parameters();
    let mut e = 0.0;
    let mut pj = PointJacobian::default();
    let mut rows = Rows3::new(n);
    let k = input.intrinsics;
    // 2D keypoints, Geman-McClure by reweighting.
    let c2 = o.robust_2d * o.robust_2d;
    for kp in input.keypoints.iter().filter(|kp| kp.weight > 0.0) {
        let p = posed.points[kp.point];
        if p.z < MIN_DEPTH {
            e += kp.weight / (o.sigma_2d * o.sigma_2d) * c2;
            continue;
        }
        let r = Vector2::new(
            k.fx * p.x / p.z + k.cx - kp.uv[0],
            k.fy * p.y / p.z + k.cy - kp.uv[1],
        );
        let s = r.norm_squared();
        let w = kp.weight / (o.sigma_2d * o.sigma_2d);
        e += w * c2 * s / (c2 + s);
        if let Some(nm) = normal.as_deref_mut() {
            let drho = (c2 / (c2 + s)).powi(2);
            let a = Matrix2x3::new(
                k.fx / p.z,
                0.0,
                -k.fx * p.x / (p.z * p.z),
                0.0,
                k.fy / p.z,
                -k.fy * p.y / (p.z * p.z),
            );
            model.point_jacobian(&posed, state, kp.point, &mut pj);
            nm.add_projected(&pj.cols, &pj.d, &a, &r, w * drho);
        }
    }
    // Front-end 3D, both sides centred.
    if o.sigma_3d > 0.0 && !input.points_3d.is_empty() && !input.centre.is_empty() {
        let nc = input.centre.len() as f64;
        let c: Vector3<f64> = input
            .centre
            .iter()
            .map(|&i| posed.points[i])
            .sum::<Vector3<f64>>()
            / nc;
        let mut centre_rows = Rows3::new(n);
        if normal.is_some() {
            for &i in input.centre {
                model.point_jacobian(&posed, state, i, &mut pj);
                centre_rows.add(&pj, -1.0 / nc);
            }
        }
        let centre_j = PointJacobian {
            cols: centre_rows.cols.clone(),
            d: centre_rows.d.clone(),
        };
        for q in input.points_3d.iter().filter(|q| q.weight > 0.0) {
            let r = posed.points[q.point] - c - q.xyz;
            let w = q.weight / (o.sigma_3d * o.sigma_3d);
            e += w * r.norm_squared();
            if let Some(nm) = normal.as_deref_mut() {
                rows.clear();
                model.point_jacobian(&posed, state, q.point, &mut pj);
                rows.add(&pj, 1.0);
                rows.add(&centre_j, 1.0);
                nm.add_projected(&rows.cols, &rows.d, &Matrix3::identity(), &r, w);
            }
        }
    }
    // Gaussian around the IK solution (not the root: its orientation is observed).
    if let Some(prior) = input.pose_prior.filter(|_| o.sigma_pose > 0.0) {
        let w = 1.0 / (o.sigma_pose * o.sigma_pose);
        for j in 1..SMPL_JOINTS.min(prior.len()) {
            let r = matrix_to_axis_angle(&(prior[j].transpose() * state.rotations[j]));
            e += w * r.norm_squared();
            if let Some(nm) = normal.as_deref_mut() {
                nm.add_block(j, &right_jacobian_inv(&r), &r, w);
            }
        }
    }
    // Joint limits of the hinges.
    let wl = 1.0 / (o.sigma_limit * o.sigma_limit);
    for (j, lim) in LIMITS {
        let a = matrix_to_axis_angle(&state.rotations[j]);
        let over = Vector3::from_fn(|c, _| a[c] - a[c].clamp(lim[c][0], lim[c][1]));
        if over.iter().all(|&x| x == 0.0) {
            continue;
        }
        e += wl * over.norm_squared();
        if let Some(nm) = normal.as_deref_mut() {
            let mut m = right_jacobian_inv(&a);
            for c in 0..3 {
                if over[c] == 0.0 {
                    m.row_mut(c).fill(0.0);
                }
            }
            nm.add_block(j, &m, &over, wl);
        }
    }
    // Shape: prior and the track's shape.
    let nb = model.betas();
    let mut beta_term = |target: Option<&[f64]>, sigma: f64, nm: Option<&mut Normal>| {
        let w = 1.0 / (sigma * sigma);
        let mut nm = nm;
        for l in 0..nb {
            let r = state.beta[l] - target.map_or(0.0, |t| t.get(l).copied().unwrap_or(0.0));
            e += w * r * r;
            if let Some(nm) = nm.as_deref_mut() {
                nm.h[(BETA + l, BETA + l)] += w;
                nm.g[BETA + l] += w * r;
            }
        }
    };
    if o.sigma_beta > 0.0 {
        beta_term(None, o.sigma_beta, normal.as_deref_mut());
    }
    if let Some(t) = input.beta_track.filter(|_| o.sigma_beta_track > 0.0) {
        beta_term(Some(t), o.sigma_beta_track, normal.as_deref_mut());
    }
    // Root translation near the IK layer's.
    if let Some(t0) = input
        .translation_prior
        .filter(|_| o.sigma_translation > 0.0)
    {
        let w = 1.0 / (o.sigma_translation * o.sigma_translation);
        let r = state.translation - t0;
        e += w * r.norm_squared();
        if let Some(nm) = normal.as_deref_mut() {
            for c in 0..3 {
                nm.h[(TRANSLATION + c, TRANSLATION + c)] += w;
                nm.g[TRANSLATION + c] += w * r[c];
            }
        }
    }
    // Angular acceleration of every local rotation against the previous two frames.
    if o.sigma_angular_accel > 0.0 && input.rotation_history.len() >= 2 {
        let h = input.rotation_history;
        let (r1, r2) = (&h[h.len() - 1], &h[h.len() - 2]);
        let w = 1.0 / (o.sigma_angular_accel * o.sigma_angular_accel);
        for k in 0..SMPL_JOINTS.min(r1.len()).min(r2.len()) {
            let now = matrix_to_axis_angle(&(r1[k].transpose() * state.rotations[k]));
            let before = matrix_to_axis_angle(&(r2[k].transpose() * r1[k]));
            let r = now - before;
            e += w * r.norm_squared();
            if let Some(nm) = normal.as_deref_mut() {
                nm.add_block(k, &right_jacobian_inv(&now), &r, w);
            }
        }
    }
    // Acceleration of the joints against the previous two frames.
    if o.sigma_accel > 0.0 && input.history.len() >= 2 {
        let h = input.history;
        let (p1, p2) = (&h[h.len() - 1], &h[h.len() - 2]);
        let w = 1.0 / (o.sigma_accel * o.sigma_accel);
        for j in 0..SMPL_JOINTS.min(p1.len()).min(p2.len()) {
            let r = posed.joints[j] - 2.0 * p1[j] + p2[j];
            e += w * r.norm_squared();
            if let Some(nm) = normal.as_deref_mut() {
                model.joint_jacobian(&posed, j, &mut pj);
                nm.add_projected(&pj.cols, &pj.d, &Matrix3::identity(), &r, w);
            }
        }
    }
    e
}

#[cfg(test)]
mod tests;
