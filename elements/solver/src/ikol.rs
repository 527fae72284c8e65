//! IKOL: the inverse kinematics optimisation layer (Zhang et al., AAAI 2023), damped
//! Gauss-Newton over one swing angle per joint (reference 3).
//!
//! Forward model f(alpha) (IKOL Eq. 2-3, reference 3.3), along the tree for joint k with parent
//! p and swing child c:
//! - t_k = R_p^T (p_c - p_k), the target bone in the parent's *current* frame;
//! - n_k = (r_c x t_k)/|r_c x t_k|, so the axis depends on the ancestors' angles;
//! - R_{p,k} = R_sw(alpha_k, n_k) R_tw(phi_k) (IKOL Eq. 2), R_k = R_p R_{p,k} (IKOL Eq. 1);
//! - q_k = q_p + R_p (t_k - t_p) (HybrIK Eq. 2).
//!
//! The root is closed form (HybrIK Appendix A), leaf-rotation joints take the given quaternions,
//! and spine3 either swings toward the neck or takes the three-children SVD (then its angle is
//! inert: its global rotation is fixed by the targets).
//!
//! Solver (IKOL Eq. 8-11, Alg. 1): residual r = W^(1/2) (f(alpha) - P) over all joints (72 values
//! for 24), delta = (J^T J + sigma I)^-1 J^T r by Cholesky, alpha <- alpha - delta; upstream
//! defaults sigma = 0.1, 5 iterations, alpha_0 = 0 (reference 3.4).
//!
//! Jacobian, analytic, by forward propagation of a tangent along the tree. Each global rotation
//! moves as dR_k = `[w_k]x` R_k; then
//! - dq_k = dq_p + w_p x (R_p b_k) + R_p db_k, b_k = t_k - t_p the rest bone;
//! - w_k = w_p + R_p l_k, with l_k the angular velocity of the local rotation (parent frame):
//!   - swing: l = n dalpha_k + sin(alpha) dn + (1 - cos(alpha)) n x dn (the left Jacobian of
//!     exp(alpha `[n]x`) restricted to |n| = 1), where dn = (I - n n^T) dw/|w|,
//!     dw = dr x t + r x dt and dt = t x (R_p^T w_p);
//!   - twist (only when the rest changes with the shape): l += R_sw (sin(phi) du +
//!     (1 - cos(phi)) u x du), du = (I - u u^T) dr/|r|;
//!   - given leaf rotations: l = 0; three-children SVD spine3 and the root: the Kabsch tangent
//!     ([`crate::geometry::kabsch_tangent`]), non-zero only through the rest skeleton.
//!
//! Implementation: the rest-dependent parts (root and spine3 fits, rest bones, twist rotations)
//! are computed once per problem, evaluations live in fixed-size arrays reused across the
//! iterations, each Jacobian column is propagated over its joint's subtree only, and the normal
//! equations are summed joint by joint over the unknowns that move the joint (the dense
//! J^T J and nalgebra's Cholesky give the same iterates to rounding: `solver-bench --against`).
//!
//! Beyond upstream (all options, defaults as upstream): convergence tolerances, per-joint
//! weights, Levenberg-Marquardt adaptive damping (Nielsen's update), initialisation from the
//! adaptive HybrIK solution (each angle projected onto IKOL's axis) or given angles, and shape
//! refinement (beta as extra unknowns through the linear rest joints, with a Gaussian prior
//! around the given beta). With 29 targets the leaf parents 10, 11, 15, 22, 23 get swing angles
//! too (23 unknowns) and the residual covers the 29 joints.

use ikol_types::joints::{HYBRIK_JOINTS, HYBRIK29_CHILDREN, INDEX_18_TO_24, SMPL_JOINTS};
use ikol_types::rotation::rodrigues;
use nalgebra::{DMatrix, DVector, Matrix3, Vector3};

use crate::geometry::{Swing, kabsch_tangent, project_angle, swing, twist_axis, twist_rotation};
use crate::hybrik::{
    AnalyticOptions, ROOT_CHILDREN, RootMethod, SPINE3, SPINE3_CHILDREN, Spine3Method, analytic,
    root_rotation, spine3_global,
};
use crate::problem::Prepared;
use crate::{IkInput, IkSolution, SolverError};

/// Upstream's fixed damping sigma (reference 3.4), in m^2.
pub const DEFAULT_DAMPING: f64 = 0.1;
/// Upstream's iteration count (reference 3.4).
pub const DEFAULT_ITERATIONS: usize = 5;
/// Default weight of the shape prior (per unit beta^2, against squared metres).
pub const DEFAULT_SHAPE_PRIOR: f64 = 1e-3;

/// The joints whose swing angle IKOL optimises, in unknown order: `INDEX_18_TO_24` for 24
/// targets; every joint 1..23 (the leaf parents too) for 29.
pub fn swing_joints(n_targets: usize) -> Vec<usize> {
    if n_targets == SMPL_JOINTS {
        INDEX_18_TO_24.to_vec()
    } else {
        (1..SMPL_JOINTS)
            .filter(|&k| HYBRIK29_CHILDREN[k] >= 0)
            .collect()
    }
}

/// Starting angles.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum IkolInit {
    /// alpha_0 = 0 (paper and code).
    #[default]
    Zero,
    /// From the adaptive HybrIK solution (same root and spine3 methods, this fallback), each
    /// joint's swing projected onto IKOL's axis in IKOL's own parent frame.
    Analytic {
        /// The adaptive solver's fallback threshold (metres), `None` for the 2021 behaviour.
        fallback: Option<f64>,
    },
    /// Given angles, one per [`swing_joints`] entry (for example the previous video frame).
    Angles(Vec<f64>),
}

/// How the damping evolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DampingMode {
    /// Fixed sigma, every step taken (upstream).
    #[default]
    Fixed,
    /// Levenberg-Marquardt: a step that does not lower the cost is rejected and the damping
    /// raised; accepted steps lower it by Nielsen's rule max(1/3, 1 - (2 rho - 1)^3).
    Adaptive,
}

/// Early stopping (absent upstream, which always runs 5 iterations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Stop when max |delta| falls below this (radians, and beta units).
    pub step: f64,
    /// Stop when an accepted step lowers the cost by less than this fraction of it.
    pub cost: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            step: 1e-9,
            cost: 1e-12,
        }
    }
}

/// Shape refinement: beta as extra unknowns (needs [`crate::Rest::Shape`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeRefinement {
    /// Prior weight lambda: the cost gains lambda/2 |beta - beta_given|^2.
    pub prior_weight: f64,
}

impl Default for ShapeRefinement {
    fn default() -> Self {
        Self {
            prior_weight: DEFAULT_SHAPE_PRIOR,
        }
    }
}

/// Options of the IKOL solver; the defaults are upstream's test path.
#[derive(Debug, Clone, PartialEq)]
pub struct IkolOptions {
    /// Maximum iterations (upstream 5).
    pub iterations: usize,
    /// Damping sigma (upstream 0.1), the starting value in adaptive mode.
    pub damping: f64,
    /// Fixed or Levenberg-Marquardt damping.
    pub damping_mode: DampingMode,
    /// Starting angles.
    pub init: IkolInit,
    /// Early stopping; `None` runs every iteration.
    pub tolerance: Option<Tolerance>,
    /// Per-joint residual weights (one per target row); `None` weighs all joints 1.
    pub weights: Option<Vec<f64>>,
    /// Root rotation method (upstream test: SVD).
    pub root: RootMethod,
    /// Spine3 method (upstream test: three-children SVD).
    pub spine3: Spine3Method,
    /// Shape refinement, off by default.
    pub shape: Option<ShapeRefinement>,
}

impl Default for IkolOptions {
    fn default() -> Self {
        Self {
            iterations: DEFAULT_ITERATIONS,
            damping: DEFAULT_DAMPING,
            damping_mode: DampingMode::Fixed,
            init: IkolInit::Zero,
            tolerance: None,
            weights: None,
            root: RootMethod::Svd,
            spine3: Spine3Method::ThreeChildrenSvd,
            shape: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Swing toward `child`, angle from unknown `slot`.
    Swing { child: usize, slot: usize },
    /// Global rotation from the three-children SVD.
    Spine3Svd,
    /// Given local rotation.
    Fixed(Matrix3<f64>),
}

// Joint sets are bit masks over the (at most 29) target joints.
const _: () = assert!(HYBRIK_JOINTS <= u32::BITS as usize);

/// The parts of the forward model that depend on the rest skeleton but not on the angles:
/// computed once per problem, or once per evaluation when the shape is refined.
#[derive(Debug, Clone)]
struct Skeleton {
    /// Rest joints minus the rest root (`n` rows).
    rest: [Vector3<f64>; HYBRIK_JOINTS],
    /// Rest bones b_k = t_k - t_p (HybrIK Eq. 2).
    bone: [Vector3<f64>; HYBRIK_JOINTS],
    /// Global root rotation (HybrIK Appendix A) and its Kabsch input M.
    root: Matrix3<f64>,
    root_m: Matrix3<f64>,
    /// Spine3's global rotation from the three-children SVD and its Kabsch input M (identity
    /// and zero unless spine3 takes the SVD): it depends on the targets and the rest only.
    spine3: Matrix3<f64>,
    spine3_m: Matrix3<f64>,
    /// Per swing joint k: the rest bone r_c = t_c - t_k and R_tw(phi_k) about it (HybrIK Eq. 10).
    r: [Vector3<f64>; SMPL_JOINTS],
    r_tw: [Matrix3<f64>; SMPL_JOINTS],
}

impl Skeleton {
    fn new(
        prep: &Prepared<'_>,
        kinds: &[Kind; SMPL_JOINTS],
        root: RootMethod,
        rest: &[Vector3<f64>],
    ) -> Self {
        let parents = prep.parents();
        let mut s = Self {
            rest: [Vector3::zeros(); HYBRIK_JOINTS],
            bone: [Vector3::zeros(); HYBRIK_JOINTS],
            root: root_rotation(root, &prep.targets, rest),
            root_m: kabsch_m(
                &ROOT_CHILDREN.map(|c| rest[c]),
                &ROOT_CHILDREN.map(|c| prep.targets[c]),
            ),
            spine3: Matrix3::identity(),
            spine3_m: Matrix3::zeros(),
            r: [Vector3::zeros(); SMPL_JOINTS],
            r_tw: [Matrix3::identity(); SMPL_JOINTS],
        };
        s.rest[..prep.n].copy_from_slice(&rest[..prep.n]);
        for k in 1..prep.n {
            s.bone[k] = rest[k] - rest[parents[k] as usize];
        }
        for k in 1..SMPL_JOINTS {
            match kinds[k] {
                Kind::Swing { child, .. } => {
                    s.r[k] = rest[child] - rest[k];
                    let (cos, sin) = prep.twist[k - 1];
                    s.r_tw[k] = twist_rotation(&s.r[k], cos, sin);
                }
                Kind::Spine3Svd => {
                    let origin = prep.targets[SPINE3];
                    s.spine3_m = kabsch_m(
                        &SPINE3_CHILDREN.map(|c| rest[c] - rest[SPINE3]),
                        &SPINE3_CHILDREN.map(|c| prep.targets[c] - origin),
                    );
                    s.spine3 = spine3_global(rest, &prep.targets, &origin);
                }
                Kind::Fixed(_) => {}
            }
        }
        s
    }
}

/// Per-joint values of one evaluation, kept for the Jacobian.
#[derive(Debug, Clone, Copy)]
struct SwingCache {
    t: Vector3<f64>,
    r: Vector3<f64>,
    swing: Swing<f64>,
    /// sin and cos of the swing angle alpha_k, shared by every Jacobian column.
    sin: f64,
    cos: f64,
    r_sw: Matrix3<f64>,
    /// 1 / |w| (0 when the axis is the fallback): one division per evaluation instead of three
    /// per Jacobian column through the joint.
    inv_w_norm: f64,
}

/// One evaluation of the forward model, in fixed-size storage so that the iterations reuse two
/// of them without allocating.
#[derive(Debug, Clone)]
struct Eval {
    /// The skeleton at this evaluation's shape coefficients; `None` when the shape is not
    /// refined (the model's own skeleton applies).
    shaped: Option<Skeleton>,
    local: [Matrix3<f64>; SMPL_JOINTS],
    global: [Matrix3<f64>; SMPL_JOINTS],
    /// Posed joints q (`n` rows).
    pos: [Vector3<f64>; HYBRIK_JOINTS],
    /// Posed bones R_p b_k (`n` rows), shared by the position and every Jacobian column.
    posed_bone: [Vector3<f64>; HYBRIK_JOINTS],
    /// Set at the swing joints.
    cache: [Option<SwingCache>; SMPL_JOINTS],
}

impl Eval {
    fn new() -> Self {
        Self {
            shaped: None,
            local: [Matrix3::identity(); SMPL_JOINTS],
            global: [Matrix3::identity(); SMPL_JOINTS],
            pos: [Vector3::zeros(); HYBRIK_JOINTS],
            posed_bone: [Vector3::zeros(); HYBRIK_JOINTS],
            cache: [None; SMPL_JOINTS],
        }
    }
}

/// IKOL's least-squares problem for one person: residual, analytic Jacobian and solver.
#[derive(Debug, Clone)]
pub struct IkolModel<'a> {
    prep: Prepared<'a>,
    opts: IkolOptions,
    kinds: [Kind; SMPL_JOINTS],
    slots: Vec<usize>,
    /// sqrt of the per-joint weights.
    sqrt_w: Vec<f64>,
    /// Number of refined shape coefficients (0 without refinement).
    n_beta: usize,
    beta0: Vec<f64>,
    /// The skeleton at the given rest joints (every evaluation's, unless the shape is refined).
    skel: Skeleton,
    /// Per swing joint k, the target bone P_c - P_k in the world frame.
    target_bone: [Vector3<f64>; SMPL_JOINTS],
    /// Per refined coefficient l, the root-relative rest direction d t / d beta_l (`n` rows).
    drest: Vec<[Vector3<f64>; HYBRIK_JOINTS]>,
    /// Per unknown, the joints its Jacobian column can move (bit j for joint j): a swing angle
    /// only its joint's subtree, a shape coefficient every joint but the root.
    support: Vec<u32>,
    /// Per joint, the swing angles whose Jacobian column can be non-zero in its rows (bit s for
    /// slot s; at most 23). Every shape coefficient moves every joint but the root.
    joint_swings: [u32; HYBRIK_JOINTS],
}

impl<'a> IkolModel<'a> {
    /// Validate the input and options and set up the problem.
    pub fn new(input: &IkInput<'a>, opts: &IkolOptions) -> Result<Self, SolverError> {
        let prep = Prepared::new(input)?;
        if !(opts.damping.is_finite() && opts.damping > 0.0) {
            return Err(SolverError::InvalidOption {
                option: "damping",
                reason: "must be finite and positive",
            });
        }
        if let Some(t) = opts.tolerance
            && !(t.step >= 0.0 && t.cost >= 0.0)
        {
            return Err(SolverError::InvalidOption {
                option: "tolerance",
                reason: "must be non-negative",
            });
        }
        let sqrt_w = match &opts.weights {
            Some(w) if w.len() != prep.n => {
                return Err(SolverError::SizeMismatch {
                    input: "weights",
                    got: w.len(),
                    expected: "one per target joint",
                });
            }
            Some(w) if w.iter().any(|x| !(x.is_finite() && *x >= 0.0)) => {
                return Err(SolverError::InvalidOption {
                    option: "weights",
                    reason: "must be finite and non-negative",
                });
            }
            Some(w) => w.iter().map(|x| x.sqrt()).collect(),
            None => vec![1.0; prep.n],
        };
        let (n_beta, beta0) = match (&opts.shape, &prep.shape) {
            (None, _) => (0, Vec::new()),
            (Some(_), None) => {
                return Err(SolverError::InvalidOption {
                    option: "shape",
                    reason: "shape refinement needs the rest joints as a shape basis",
                });
            }
            (Some(s), Some((basis, beta))) => {
                if !(s.prior_weight.is_finite() && s.prior_weight >= 0.0) {
                    return Err(SolverError::InvalidOption {
                        option: "shape.prior_weight",
                        reason: "must be finite and non-negative",
                    });
                }
                if opts.root != RootMethod::Svd {
                    return Err(SolverError::InvalidOption {
                        option: "shape",
                        reason: "shape refinement needs the SVD root",
                    });
                }
                if basis.joints() < prep.n {
                    return Err(SolverError::SizeMismatch {
                        input: "basis",
                        got: basis.joints(),
                        expected: "at least as many joints as the targets",
                    });
                }
                (basis.coefficients(), beta.clone())
            }
        };
        let slots = swing_joints(prep.n);
        let mut kinds = [Kind::Fixed(Matrix3::identity()); SMPL_JOINTS];
        let mut target_bone = [Vector3::zeros(); SMPL_JOINTS];
        for k in 1..SMPL_JOINTS {
            kinds[k] = match (prep.child(k), slots.iter().position(|&j| j == k)) {
                _ if k == SPINE3 && opts.spine3 == Spine3Method::ThreeChildrenSvd => {
                    Kind::Spine3Svd
                }
                (Some(child), Some(slot)) => {
                    target_bone[k] = prep.targets[child] - prep.targets[k];
                    Kind::Swing { child, slot }
                }
                _ => Kind::Fixed(prep.leaf_rotation(k)),
            };
        }
        if let IkolInit::Angles(a) = &opts.init {
            if a.len() != slots.len() {
                return Err(SolverError::SizeMismatch {
                    input: "initial angles",
                    got: a.len(),
                    expected: "one per swing joint",
                });
            }
            if a.iter().any(|x| !x.is_finite()) {
                return Err(SolverError::NonFinite {
                    input: "initial angles",
                    row: a.iter().position(|x| !x.is_finite()).unwrap_or(0),
                });
            }
        }
        let parents = prep.parents();
        let subtree = |root: usize| {
            let mut inside = 1u32 << root;
            for k in root + 1..prep.n {
                if inside & (1 << parents[k]) != 0 {
                    inside |= 1 << k;
                }
            }
            inside
        };
        let all_but_root = (1u32 << prep.n) - 2;
        // Spine3's angle under the three-children SVD is inert: its column is zero.
        let support: Vec<u32> = slots
            .iter()
            .map(|&k| match kinds[k] {
                Kind::Swing { .. } => subtree(k),
                _ => 0,
            })
            .chain(std::iter::repeat_n(all_but_root, n_beta))
            .collect();
        let mut joint_swings = [0u32; HYBRIK_JOINTS];
        for (u, &joints) in support[..slots.len()].iter().enumerate() {
            for j in BitSet(joints) {
                joint_swings[j] |= 1 << u;
            }
        }
        let drest = match &prep.shape {
            Some((basis, _)) if n_beta > 0 => basis
                .dirs
                .iter()
                .map(|d| {
                    let mut rel = [Vector3::zeros(); HYBRIK_JOINTS];
                    for (r, v) in rel.iter_mut().zip(&d[..prep.n]) {
                        *r = v - d[0];
                    }
                    rel
                })
                .collect(),
            _ => Vec::new(),
        };
        let skel = Skeleton::new(&prep, &kinds, opts.root, &prep.rest);
        Ok(Self {
            prep,
            opts: opts.clone(),
            kinds,
            slots,
            sqrt_w,
            n_beta,
            beta0,
            skel,
            target_bone,
            drest,
            support,
            joint_swings,
        })
    }

    /// Number of unknowns: swing angles, then refined shape coefficients.
    pub fn unknowns(&self) -> usize {
        self.slots.len() + self.n_beta
    }

    /// Number of residual rows: 3 per target joint, plus one per refined coefficient.
    pub fn residuals(&self) -> usize {
        3 * self.prep.n + self.n_beta
    }

    /// The joints whose angles are the first unknowns.
    pub fn swing_joints(&self) -> &[usize] {
        &self.slots
    }

    /// The skeleton an evaluation was made on.
    fn skeleton<'s>(&'s self, ev: &'s Eval) -> &'s Skeleton {
        ev.shaped.as_ref().unwrap_or(&self.skel)
    }

    /// Forward model at `x` into `ev`. With `project`, each swing angle is instead chosen to
    /// match those global rotations as closely as IKOL's axis allows, and written into `x`.
    fn evaluate_into(&self, x: &mut [f64], project: Option<&[Matrix3<f64>]>, ev: &mut Eval) {
        let prep = &self.prep;
        let n_slots = self.slots.len();
        ev.shaped = (self.n_beta > 0).then(|| {
            let (basis, _) = prep.shape.as_ref().expect("shape unknowns need a basis");
            let abs = basis.rest_joints(&x[n_slots..]);
            let rest: Vec<_> = abs[..prep.n].iter().map(|r| r - abs[0]).collect();
            Skeleton::new(prep, &self.kinds, self.opts.root, &rest)
        });
        let skel = ev.shaped.as_ref().unwrap_or(&self.skel);
        let parents = prep.parents();
        ev.local[0] = skel.root;
        ev.global[0] = skel.root;
        for k in 1..prep.n {
            let p = parents[k] as usize;
            ev.posed_bone[k] = ev.global[p] * skel.bone[k];
            ev.pos[k] = ev.pos[p] + ev.posed_bone[k];
            if k >= SMPL_JOINTS {
                continue;
            }
            ev.local[k] = match self.kinds[k] {
                Kind::Fixed(m) => m,
                Kind::Spine3Svd => ev.global[p].transpose() * skel.spine3,
                Kind::Swing { slot, .. } => {
                    let t = ev.global[p].transpose() * self.target_bone[k];
                    let r = skel.r[k];
                    let sw = swing(&r, &t);
                    let r_tw = skel.r_tw[k];
                    if let Some(target) = project {
                        // Swing part of the wanted local rotation, projected on IKOL's axis.
                        let wanted = ev.global[p].transpose() * target[k] * r_tw.transpose();
                        x[slot] = project_angle(&sw.axis, &wanted);
                    }
                    let (sin, cos) = x[slot].sin_cos();
                    // R_sw(alpha_k, n_k) (IKOL Eq. 2).
                    let r_sw = rodrigues(&sw.axis, cos, sin);
                    ev.cache[k] = Some(SwingCache {
                        t,
                        r,
                        inv_w_norm: if sw.degenerate() {
                            0.0
                        } else {
                            1.0 / sw.w_norm
                        },
                        swing: sw,
                        sin,
                        cos,
                        r_sw,
                    });
                    r_sw * r_tw
                }
            };
            ev.global[k] = ev.global[p] * ev.local[k];
        }
    }

    fn evaluate(&self, x: &[f64]) -> Box<Eval> {
        let mut x = x.to_vec();
        let mut ev = Box::new(Eval::new());
        self.evaluate_into(&mut x, None, &mut ev);
        ev
    }

    fn residual_into(&self, ev: &Eval, x: &[f64], r: &mut DVector<f64>) {
        let n = self.prep.n;
        for j in 0..n {
            let d = (ev.pos[j] - self.prep.targets[j]) * self.sqrt_w[j];
            r.fixed_rows_mut::<3>(3 * j).copy_from(&d);
        }
        if let Some(s) = &self.opts.shape {
            let sl = s.prior_weight.sqrt();
            for l in 0..self.n_beta {
                r[3 * n + l] = sl * (x[self.slots.len() + l] - self.beta0[l]);
            }
        }
    }

    /// Residual r(x) = W^(1/2) (f(x) - P) (3 rows per joint, root included), then the shape
    /// prior rows; x = swing angles then refined shape coefficients.
    pub fn residual(&self, x: &[f64]) -> DVector<f64> {
        let mut r = DVector::zeros(self.residuals());
        self.residual_into(&self.evaluate(x), x, &mut r);
        r
    }

    /// W^(1/2) d q / d x along one unknown (forward tangent propagation, see the module docs)
    /// into the joint rows of its Jacobian column `col`; only the rows of the unknown's support
    /// are written (the others are zero). `w` and `dq` are scratch, read only where written.
    fn tangent_into(
        &self,
        ev: &Eval,
        unknown: usize,
        w: &mut [Vector3<f64>; SMPL_JOINTS],
        dq: &mut [Vector3<f64>; HYBRIK_JOINTS],
        col: &mut [f64],
    ) {
        let prep = &self.prep;
        let skel = self.skeleton(ev);
        let parents = prep.parents();
        let n_slots = self.slots.len();
        let slot = (unknown < n_slots).then_some(unknown);
        let own = slot.map(|s| self.slots[s]);
        let drest = unknown.checked_sub(n_slots).map(|l| &self.drest[l]);
        let drest_at = |j: usize| drest.map_or_else(Vector3::zeros, |d| d[j]);
        // Outside the support nothing moves but the root, through the shape only.
        let w_root = match drest {
            Some(d) if self.opts.root == RootMethod::Svd => {
                let dm = kabsch_m(
                    &ROOT_CHILDREN.map(|c| d[c]),
                    &ROOT_CHILDREN.map(|c| prep.targets[c]),
                );
                ev.global[0] * kabsch_tangent(&ev.global[0], &skel.root_m, &dm)
            }
            _ => Vector3::zeros(),
        };
        let support = self.support[unknown];
        // In increasing joint order: parents (lower indices) come first.
        for k in BitSet(support) {
            let p = parents[k] as usize;
            let (dq_p, w_p) = if support & (1 << p) != 0 {
                (dq[p], w[p])
            } else {
                (Vector3::zeros(), w_root)
            };
            if drest.is_none() && w_p == Vector3::zeros() && own != Some(k) {
                // Nothing above this joint turns (below spine3 under the SVD, which undoes the
                // turn): it and its subtree only translate, and every term below is zero.
                dq[k] = dq_p;
                col[3 * k..3 * k + 3].copy_from_slice((dq_p * self.sqrt_w[k]).as_slice());
                if k < SMPL_JOINTS {
                    w[k] = Vector3::zeros();
                }
                continue;
            }
            let mut dq_k = dq_p + w_p.cross(&ev.posed_bone[k]);
            if let Some(d) = drest {
                dq_k += ev.global[p] * (d[k] - d[p]);
            }
            dq[k] = dq_k;
            col[3 * k..3 * k + 3].copy_from_slice((dq_k * self.sqrt_w[k]).as_slice());
            if k >= SMPL_JOINTS {
                continue;
            }
            w[k] = match self.kinds[k] {
                Kind::Fixed(_) => w_p,
                Kind::Spine3Svd => match drest {
                    Some(d) => {
                        let origin = prep.targets[SPINE3];
                        let dm = kabsch_m(
                            &SPINE3_CHILDREN.map(|c| d[c] - d[SPINE3]),
                            &SPINE3_CHILDREN.map(|c| prep.targets[c] - origin),
                        );
                        let g = ev.global[k];
                        g * kabsch_tangent(&g, &skel.spine3_m, &dm)
                    }
                    None => Vector3::zeros(),
                },
                Kind::Swing { child, slot: s } => {
                    let c = ev.cache[k].as_ref().expect("swing joints are cached");
                    let n = c.swing.axis;
                    let dt = c.t.cross(&ev.global[p].tr_mul(&w_p));
                    let dr = drest_at(child) - drest_at(k);
                    let dn = if c.swing.degenerate() {
                        Vector3::zeros()
                    } else {
                        let mut dw = c.r.cross(&dt);
                        if drest.is_some() {
                            dw += dr.cross(&c.t);
                        }
                        (dw - n * n.dot(&dw)) * c.inv_w_norm
                    };
                    let mut l = dn * c.sin + n.cross(&dn) * (1.0 - c.cos);
                    if slot == Some(s) {
                        l += n;
                    }
                    if drest.is_some()
                        && let Some(u) = twist_axis(&c.r)
                    {
                        let du = (dr - u * u.dot(&dr)) / c.r.norm();
                        let (cp, sp) = prep.twist[k - 1];
                        l += c.r_sw * (du * sp + u.cross(&du) * (1.0 - cp));
                    }
                    w_p + ev.global[p] * l
                }
            };
        }
    }

    /// The Jacobian into `jac`, which must be zero outside the supports (as the last call left
    /// it, or freshly zeroed).
    fn jacobian_into(&self, ev: &Eval, jac: &mut DMatrix<f64>) {
        let n = self.prep.n;
        let rows = self.residuals();
        let mut w = [Vector3::zeros(); SMPL_JOINTS];
        let mut dq = [Vector3::zeros(); HYBRIK_JOINTS];
        for (u, col) in jac.as_mut_slice().chunks_exact_mut(rows).enumerate() {
            self.tangent_into(ev, u, &mut w, &mut dq, col);
        }
        if let Some(s) = &self.opts.shape {
            let sl = s.prior_weight.sqrt();
            for l in 0..self.n_beta {
                jac[(3 * n + l, self.slots.len() + l)] = sl;
            }
        }
    }

    /// The analytic Jacobian d r / d x (rows as [`Self::residual`], columns as the unknowns).
    pub fn jacobian(&self, x: &[f64]) -> DMatrix<f64> {
        let mut jac = DMatrix::zeros(self.residuals(), self.unknowns());
        self.jacobian_into(&self.evaluate(x), &mut jac);
        jac
    }

    /// Where unknown u sits in the normal equations: the swing angles in reverse (children
    /// before their ancestors), then the shape coefficients. A[u][v] is non-zero only when one
    /// joint is the other's ancestor (their subtrees meet), so with descendants eliminated
    /// first the Cholesky factor has no fill-in (an angle's ancestors are all coupled already).
    fn position(&self, u: usize) -> usize {
        let n_slots = self.slots.len();
        if u < n_slots { n_slots - 1 - u } else { u }
    }

    /// The lower triangle of A = J^T J + mu I and g = J^T r (IKOL Eq. 10), rows and columns
    /// ordered by [`Self::position`], summed joint by joint over the unknowns that can move the
    /// joint (a swing angle moves only its subtree), so each 3-row block costs a product per
    /// pair of its own unknowns, not of all of them.
    fn normal_equations(
        &self,
        jac: &DMatrix<f64>,
        r: &DVector<f64>,
        mu: f64,
        a: &mut DMatrix<f64>,
        g: &mut DVector<f64>,
        moving: &mut Vec<(usize, [f64; 3])>,
    ) {
        let (m, rows, n) = (self.unknowns(), self.residuals(), self.prep.n);
        let cols = jac.as_slice();
        let r = r.as_slice();
        let a = a.as_mut_slice();
        a.fill(0.0);
        g.fill(0.0);
        let n_slots = self.slots.len();
        for j in 1..n {
            // The unknowns that move joint j (its swing ancestors, then every shape
            // coefficient; the root joint, j = 0, moves with none): their place in the normal
            // equations and their 3 rows of joint j, gathered once for all pairs.
            moving.clear();
            let mut gather = |u: usize| {
                let c = &cols[u * rows + 3 * j..u * rows + 3 * j + 3];
                moving.push((self.position(u), [c[0], c[1], c[2]]));
            };
            BitSet(self.joint_swings[j]).for_each(&mut gather);
            (n_slots..m).for_each(gather);
            let r_j = [r[3 * j], r[3 * j + 1], r[3 * j + 2]];
            let dot3 = |x: &[f64; 3], y: &[f64; 3]| x[0] * y[0] + x[1] * y[1] + x[2] * y[2];
            for (i, (pv, j_v)) in moving.iter().enumerate() {
                g[*pv] += dot3(j_v, &r_j);
                for (pu, j_u) in &moving[i..] {
                    // The lower triangle: row >= column.
                    let (row, col) = ((*pu).max(*pv), (*pu).min(*pv));
                    a[row + col * m] += dot3(j_u, j_v);
                }
            }
        }
        // The shape prior's rows: one per refined coefficient, non-zero in its column only.
        for l in 0..self.n_beta {
            let (u, row) = (n_slots + l, 3 * n + l);
            let d = cols[u * rows + row];
            a[u + u * m] += d * d;
            g[u] += d * r[row];
        }
        for v in 0..m {
            a[v + v * m] += mu;
        }
    }

    /// The starting point of the unknowns.
    pub fn initial(&self) -> Vec<f64> {
        let mut x = vec![0.0; self.unknowns()];
        x[self.slots.len()..].copy_from_slice(&self.beta0);
        match &self.opts.init {
            IkolInit::Zero => {}
            IkolInit::Angles(a) => x[..self.slots.len()].copy_from_slice(a),
            IkolInit::Analytic { fallback } => {
                let opts = AnalyticOptions {
                    root: self.opts.root,
                    spine3: self.opts.spine3,
                    fallback: *fallback,
                };
                let a = analytic(&self.prep, &opts, true);
                self.evaluate_into(&mut x, Some(&a.global), &mut Eval::new());
            }
        }
        x
    }

    /// Run damped Gauss-Newton (IKOL Alg. 1 forward pass; Levenberg-Marquardt when asked).
    /// Everything the iterations touch is allocated once, up front.
    pub fn solve(&self) -> Result<IkSolution, SolverError> {
        let (m, rows) = (self.unknowns(), self.residuals());
        let mut x = self.initial();
        let mut x_new = x.clone();
        let mut ev = Box::new(Eval::new());
        let mut ev_new = Box::new(Eval::new());
        let mut r = DVector::zeros(rows);
        let mut r_new = DVector::zeros(rows);
        let mut jac = DMatrix::zeros(rows, m);
        let mut a = DMatrix::zeros(m, m);
        let mut g = DVector::zeros(m);
        let mut delta = DVector::zeros(m);
        let mut scaled = DVector::zeros(m);
        let mut moving = Vec::with_capacity(m);
        let mut sparsity = Sparsity::default();
        self.evaluate_into(&mut x, None, &mut ev);
        self.residual_into(&ev, &x, &mut r);
        let mut cost = 0.5 * r.norm_squared();
        let mut mu = self.opts.damping;
        let mut nu = 2.0;
        let mut used = 0;
        for it in 0..self.opts.iterations {
            used = it + 1;
            self.jacobian_into(&ev, &mut jac);
            self.normal_equations(&jac, &r, mu, &mut a, &mut g, &mut moving);
            // IKOL Eq. 10: delta = (J^T J + sigma I)^-1 J^T r.
            delta.copy_from(&g);
            if !cholesky_solve(&mut a, &mut delta, &mut sparsity)
                || delta.iter().any(|d| !d.is_finite())
            {
                return Err(SolverError::NotPositiveDefinite { iteration: it });
            }
            // IKOL Eq. 11 (with the sign of reference 3.4: r = f - P); delta is in the normal
            // equations' order.
            for (u, (xn, xi)) in x_new.iter_mut().zip(&x).enumerate() {
                *xn = xi - delta[self.position(u)];
            }
            self.evaluate_into(&mut x_new, None, &mut ev_new);
            self.residual_into(&ev_new, &x_new, &mut r_new);
            let cost_new = 0.5 * r_new.norm_squared();
            let accept = match self.opts.damping_mode {
                DampingMode::Fixed => true,
                DampingMode::Adaptive => {
                    // Gain ratio: actual over predicted decrease, L(0) - L(h) = delta^T(mu delta + g)/2.
                    for ((s, d), g) in scaled.iter_mut().zip(delta.iter()).zip(g.iter()) {
                        *s = d * mu + g;
                    }
                    let predicted = 0.5 * delta.dot(&scaled);
                    let rho = (cost - cost_new) / predicted.max(f64::MIN_POSITIVE);
                    if rho > 0.0 {
                        mu *= (1.0f64 / 3.0).max(1.0 - (2.0 * rho - 1.0).powi(3));
                        nu = 2.0;
                        true
                    } else {
                        mu *= nu;
                        nu *= 2.0;
                        false
                    }
                }
            };
            let step = delta.amax();
            let decrease = cost - cost_new;
            if accept {
                std::mem::swap(&mut x, &mut x_new);
                std::mem::swap(&mut ev, &mut ev_new);
                std::mem::swap(&mut r, &mut r_new);
                cost = cost_new;
            }
            if let Some(tol) = self.opts.tolerance {
                let small_step = step <= tol.step;
                let small_gain = accept && decrease.abs() <= tol.cost * cost.max(f64::MIN_POSITIVE);
                if small_step || small_gain || cost == 0.0 {
                    break;
                }
            }
        }
        let n_slots = self.slots.len();
        let beta = (self.n_beta > 0).then(|| x[n_slots..].to_vec());
        // The last evaluation's joints are the forward kinematics of its rotations.
        Ok(self.prep.solution_with_joints(
            ev.local.to_vec(),
            ev.pos[..self.prep.n].to_vec(),
            used,
            Some(x[..n_slots].to_vec()),
            beta,
        ))
    }
}

/// The members of a bit set, in increasing order.
struct BitSet(u32);

impl Iterator for BitSet {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        (self.0 != 0).then(|| {
            let k = self.0.trailing_zeros() as usize;
            self.0 &= self.0 - 1;
            k
        })
    }
}

/// Where the factor L of [`cholesky_solve`] is non-zero, found as it is computed: for each
/// column, its rows below the diagonal that hold a non-zero, and for each row, the columns left
/// of the diagonal that do. Kept between calls so that the iterations do not allocate.
#[derive(Debug, Default)]
struct Sparsity {
    /// `rows[k * m .. k * m + rows_len[k]]`: the non-zero rows below the diagonal of column k.
    rows: Vec<usize>,
    rows_len: Vec<usize>,
    /// `cols[j * m .. j * m + cols_len[j]]`: the columns k < j with L[j][k] != 0.
    cols: Vec<usize>,
    cols_len: Vec<usize>,
}

/// Solves A x = b in place (b becomes x) by Cholesky, A = L L^T, for a symmetric A given by its
/// lower triangle, which L overwrites; false when A is not numerically positive definite (a
/// pivot that is not > 0, NaN included). The operations of nalgebra's `Cholesky::new` and
/// `solve_mut` (column updates, then the two triangular solves) without their allocations,
/// skipping the updates by exact zeros (which change nothing): column j is updated only by the
/// columns k with L[j][k] != 0 and only in the rows where column k is non-zero. Under
/// [`IkolModel::position`]'s order those are the ancestors' (no fill-in), so the factorisation
/// costs a product per pair of an angle's ancestors instead of one per entry of the triangle.
fn cholesky_solve(a: &mut DMatrix<f64>, b: &mut DVector<f64>, sp: &mut Sparsity) -> bool {
    let m = a.nrows();
    let a = a.as_mut_slice();
    let b = b.as_mut_slice();
    sp.rows.resize(m * m, 0);
    sp.cols.resize(m * m, 0);
    sp.rows_len.clear();
    sp.rows_len.resize(m, 0);
    sp.cols_len.clear();
    sp.cols_len.resize(m, 0);
    for j in 0..m {
        let (left, right) = a.split_at_mut(j * m);
        let col_j = &mut right[..m];
        for &k in &sp.cols[j * m..j * m + sp.cols_len[j]] {
            let col_k = &left[k * m..(k + 1) * m];
            let l_jk = col_k[j];
            // Rows >= j of column k: j itself, then the non-zero rows after it (in order).
            col_j[j] -= l_jk * l_jk;
            for &i in &sp.rows[k * m..k * m + sp.rows_len[k]] {
                if i > j {
                    col_j[i] -= l_jk * col_k[i];
                }
            }
        }
        // Zero, negative or NaN pivot.
        if col_j[j].partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return false;
        }
        let d = col_j[j].sqrt();
        col_j[j] = d;
        // One division per column, not one per entry.
        let inv = 1.0 / d;
        for (i, x) in col_j.iter_mut().enumerate().skip(j + 1) {
            if *x != 0.0 {
                *x *= inv;
                sp.rows[j * m + sp.rows_len[j]] = i;
                sp.rows_len[j] += 1;
                sp.cols[i * m + sp.cols_len[i]] = j;
                sp.cols_len[i] += 1;
            }
        }
    }
    // L y = b by columns, then L^T x = y by rows.
    for i in 0..m {
        let col_i = &a[i * m..(i + 1) * m];
        b[i] /= col_i[i];
        let y_i = b[i];
        for &r in &sp.rows[i * m..i * m + sp.rows_len[i]] {
            b[r] -= y_i * col_i[r];
        }
    }
    for i in (0..m).rev() {
        let col_i = &a[i * m..(i + 1) * m];
        let dot: f64 = sp.rows[i * m..i * m + sp.rows_len[i]]
            .iter()
            .map(|&r| col_i[r] * b[r])
            .sum();
        b[i] = (b[i] - dot) / col_i[i];
    }
    true
}

/// M = sum target rest^T, the input of the Kabsch fit.
fn kabsch_m(rest: &[Vector3<f64>], target: &[Vector3<f64>]) -> Matrix3<f64> {
    rest.iter()
        .zip(target)
        .fold(Matrix3::zeros(), |m, (r, t)| m + t * r.transpose())
}

/// Solve one person with IKOL.
pub fn ikol(input: &IkInput<'_>, opts: &IkolOptions) -> Result<IkSolution, SolverError> {
    IkolModel::new(input, opts)?.solve()
}
