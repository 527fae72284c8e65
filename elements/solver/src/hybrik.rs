//! HybrIK's analytic twist-and-swing inverse kinematics (Li et al., CVPR 2021): naive (Alg. 1)
//! and adaptive (Alg. 2), as implemented upstream (reference 2).
//!
//! For each joint k along the tree, with parent p and swing child c:
//! - target bone, in the parent's frame: t_k = R_p^T (p_c - p_k) (naive, HybrIK Eq. 11) or
//!   t_k = R_p^T (p_c - q_k) with q_k the joint reconstructed so far (adaptive, Eq. 16);
//! - R_{p,k} = D^sw(t_k, r_c) D^tw(r_c, phi_k) (Eq. 6, 9, 10), r_c the rest bone to c;
//! - R_k = R_p R_{p,k} (Eq. 3).
//!
//! The root comes from the SVD fit over spine1 and both hips (Appendix A, children order
//! [3, 1, 2]) or from upstream's training-path "spine then hips" construction (reference 2.3).
//! Spine3 either swings toward the neck with its own twist (upstream HybrIK, reference 1.2 and
//! HybrIK issue #16) or takes the SVD fit over its three children neck and both collars (IKOL's
//! test path, reference 2.5 `batch_get_3children_orient_svd`). With 29 targets the leaf joints
//! define the swing of 10, 11, 15, 22 and 23; with 24 those rotations are the given leaf
//! quaternions (identity if absent).

use ikol_types::joints::SMPL_JOINTS;
use ikol_types::rotation::rodrigues;
use nalgebra::{Matrix3, Vector3};

use crate::geometry::{TINY, kabsch, swing, twist_rotation};
use crate::problem::Prepared;
use crate::{IkInput, IkSolution, SolverError};

/// The adaptive solver's fallback threshold (reference 2.5): 15 mm, in metres.
pub const FALLBACK_M: f64 = 0.015;
/// Spine3, the joint with three children.
pub const SPINE3: usize = 9;
/// Spine3's children used by the three-children SVD: neck, left and right collar.
pub const SPINE3_CHILDREN: [usize; 3] = [12, 13, 14];
/// The root's children used by the SVD root fit, in upstream order (spine1, left, right hip).
pub const ROOT_CHILDREN: [usize; 3] = [3, 1, 2];

/// How the global root rotation is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootMethod {
    /// SVD (Kabsch) fit of the rest spine1 and hips onto the targets (HybrIK Appendix A;
    /// upstream test path).
    #[default]
    Svd,
    /// Swing the spine onto its target, then turn about the target spine so the mean of the
    /// hips matches (upstream training path, `batch_get_pelvis_orient`). The second turn takes
    /// its signed angle about the spine directly, so unlike upstream it does not fail near a
    /// 180-degree heading (reference 9).
    SpineThenHips,
}

/// How spine3 (joint 9, three children) is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spine3Method {
    /// An ordinary swing toward the neck plus its own twist (HybrIK; IKOL training path).
    #[default]
    SwingToNeck,
    /// The SVD fit of its rest bones to neck and both collars (IKOL test path); its twist is
    /// unused and IKOL does not optimise its swing angle.
    ThreeChildrenSvd,
}

/// Options of the analytic solvers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnalyticOptions {
    /// Root rotation method.
    pub root: RootMethod,
    /// Spine3 method.
    pub spine3: Spine3Method,
    /// Adaptive solver only: when the adaptive target bone differs from the naive one (rescaled
    /// to the rest bone length) by more than this many metres, use the naive one (upstream
    /// HEAD, 15 mm). `None` is the 2021 release, which measured better under noise
    /// (reference 9).
    pub fallback: Option<f64>,
}

impl Default for AnalyticOptions {
    fn default() -> Self {
        Self {
            root: RootMethod::Svd,
            spine3: Spine3Method::SwingToNeck,
            fallback: Some(FALLBACK_M),
        }
    }
}

impl AnalyticOptions {
    /// The original 2021 release: adaptive without the fallback.
    pub fn release_2021() -> Self {
        Self {
            fallback: None,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), SolverError> {
        match self.fallback {
            Some(f) if !(f.is_finite() && f >= 0.0) => Err(SolverError::InvalidOption {
                option: "fallback",
                reason: "must be finite and non-negative",
            }),
            _ => Ok(()),
        }
    }
}

/// Global root rotation from root-relative targets and rest joints (reference 2.3).
pub fn root_rotation(
    method: RootMethod,
    targets: &[Vector3<f64>],
    rest: &[Vector3<f64>],
) -> Matrix3<f64> {
    match method {
        RootMethod::Svd => {
            let r = ROOT_CHILDREN.map(|c| rest[c] - rest[0]);
            let t = ROOT_CHILDREN.map(|c| targets[c] - targets[0]);
            kabsch(&r, &t)
        }
        RootMethod::SpineThenHips => {
            let rest_spine = rest[3] - rest[0];
            let target_spine = targets[3] - targets[0];
            let r_spine = swing(&rest_spine, &target_spine).rotation();
            let mid = |v: &[Vector3<f64>]| (v[1] + v[2]) * 0.5 - v[0];
            let rest_hips = r_spine * mid(rest);
            let target_hips = mid(targets);
            let s_norm = target_spine.norm();
            if s_norm <= TINY {
                return r_spine;
            }
            let s = target_spine / s_norm;
            let a = rest_hips - s * s.dot(&rest_hips);
            let b = target_hips - s * s.dot(&target_hips);
            let ab = a.norm() * b.norm();
            if a.norm() <= TINY || b.norm() <= TINY {
                return r_spine;
            }
            // Both projections are perpendicular to s: turn about s by their signed angle.
            let cos = a.dot(&b) / ab;
            let sin = s.dot(&a.cross(&b)) / ab;
            rodrigues(&s, cos, sin) * r_spine
        }
    }
}

/// Global rotation of spine3 from the SVD fit of its three rest child bones to the target
/// children seen from `origin` (the target or reconstructed spine3). The fit is equivariant, so
/// this equals R_p times upstream's fit in the parent frame.
pub fn spine3_global(
    prep_rest: &[Vector3<f64>],
    targets: &[Vector3<f64>],
    origin: &Vector3<f64>,
) -> Matrix3<f64> {
    let r = SPINE3_CHILDREN.map(|c| prep_rest[c] - prep_rest[SPINE3]);
    let t = SPINE3_CHILDREN.map(|c| targets[c] - origin);
    kabsch(&r, &t)
}

/// Result of the analytic pass: local and global rotations of the 24 joints.
#[derive(Debug, Clone)]
pub(crate) struct Analytic {
    pub local: Vec<Matrix3<f64>>,
    pub global: Vec<Matrix3<f64>>,
}

/// The target bone from joint k to its child c (world frame): naive p_c - p_k, or adaptive
/// p_c - q_k with upstream's fallback to the naive bone rescaled to the rest length.
fn target_bone(
    prep: &Prepared<'_>,
    k: usize,
    c: usize,
    q_k: Option<&Vector3<f64>>,
    fallback: Option<f64>,
) -> Vector3<f64> {
    let naive = prep.targets[c] - prep.targets[k];
    let Some(q_k) = q_k else { return naive };
    let adaptive = prep.targets[c] - q_k;
    match fallback {
        Some(limit) => {
            let len = naive.norm();
            let rescaled = if len > TINY {
                naive * ((prep.rest[c] - prep.rest[k]).norm() / len)
            } else {
                Vector3::zeros()
            };
            if (adaptive - rescaled).norm() > limit {
                rescaled
            } else {
                adaptive
            }
        }
        None => adaptive,
    }
}

/// HybrIK Alg. 1 (naive) or Alg. 2 (adaptive) over the 24 joints.
pub(crate) fn analytic(prep: &Prepared<'_>, opts: &AnalyticOptions, adaptive: bool) -> Analytic {
    let rest = &prep.rest;
    let parents = prep.parents();
    let mut local = vec![Matrix3::identity(); SMPL_JOINTS];
    let mut global = vec![Matrix3::identity(); SMPL_JOINTS];
    let mut pos = vec![Vector3::zeros(); SMPL_JOINTS];
    local[0] = root_rotation(opts.root, &prep.targets, rest);
    global[0] = local[0];
    let fallback = if adaptive { opts.fallback } else { None };
    for k in 1..SMPL_JOINTS {
        let p = parents[k] as usize;
        pos[k] = pos[p] + global[p] * (rest[k] - rest[p]);
        let q_k = adaptive.then_some(&pos[k]);
        local[k] = if k == SPINE3 && opts.spine3 == Spine3Method::ThreeChildrenSvd {
            let origin = q_k.copied().unwrap_or(prep.targets[SPINE3]);
            // Upstream rotates each (adaptive) child vector into the parent frame; the fallback
            // is not applied to the three-children fit.
            global[p].transpose() * spine3_global(rest, &prep.targets, &origin)
        } else if let Some(c) = prep.child(k) {
            let bone = target_bone(prep, k, c, q_k, fallback);
            let t = global[p].transpose() * bone;
            let r = rest[c] - rest[k];
            let (cos, sin) = prep.twist[k - 1];
            swing(&r, &t).rotation() * twist_rotation(&r, cos, sin)
        } else {
            prep.leaf_rotation(k)
        };
        global[k] = global[p] * local[k];
    }
    Analytic { local, global }
}

/// Naive HybrIK (HybrIK Alg. 1; upstream HEAD's training path).
pub fn hybrik_naive(
    input: &IkInput<'_>,
    opts: &AnalyticOptions,
) -> Result<IkSolution, SolverError> {
    opts.validate()?;
    let prep = Prepared::new(input)?;
    let a = analytic(&prep, opts, false);
    Ok(prep.solution(a.local, &prep.rest, 0, None, None))
}

/// Adaptive HybrIK (HybrIK Alg. 2; upstream test path, with the 15 mm fallback unless
/// `opts.fallback` is `None`).
pub fn hybrik_adaptive(
    input: &IkInput<'_>,
    opts: &AnalyticOptions,
) -> Result<IkSolution, SolverError> {
    opts.validate()?;
    let prep = Prepared::new(input)?;
    let a = analytic(&prep, opts, true);
    Ok(prep.solution(a.local, &prep.rest, 0, None, None))
}
