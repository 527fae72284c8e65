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
//! Beyond upstream (all options, defaults as upstream): convergence tolerances, per-joint
//! weights, Levenberg-Marquardt adaptive damping (Nielsen's update), initialisation from the
//! adaptive HybrIK solution (each angle projected onto IKOL's axis) or given angles, and shape
//! refinement (beta as extra unknowns through the linear rest joints, with a Gaussian prior
//! around the given beta). With 29 targets the leaf parents 10, 11, 15, 22, 23 get swing angles
//! too (23 unknowns) and the residual covers the 29 joints.

use ikol_types::joints::{HYBRIK29_CHILDREN, INDEX_18_TO_24, SMPL_JOINTS};
use nalgebra::{Cholesky, DMatrix, DVector, Matrix3, Vector3};

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

/// Per-joint values of one evaluation, kept for the Jacobian.
#[derive(Debug, Clone, Copy)]
struct SwingCache {
    t: Vector3<f64>,
    r: Vector3<f64>,
    swing: Swing<f64>,
    alpha: f64,
    r_sw: Matrix3<f64>,
}

#[derive(Debug, Clone)]
struct Eval {
    rest: Vec<Vector3<f64>>,
    local: Vec<Matrix3<f64>>,
    global: Vec<Matrix3<f64>>,
    pos: Vec<Vector3<f64>>,
    cache: Vec<Option<SwingCache>>,
    /// Kabsch inputs M of the root and of spine3 (for their tangents).
    root_m: Matrix3<f64>,
    spine3_m: Matrix3<f64>,
}

/// IKOL's least-squares problem for one person: residual, analytic Jacobian and solver.
#[derive(Debug, Clone)]
pub struct IkolModel<'a> {
    prep: Prepared<'a>,
    opts: IkolOptions,
    kinds: Vec<Kind>,
    slots: Vec<usize>,
    /// sqrt of the per-joint weights.
    sqrt_w: Vec<f64>,
    /// Number of refined shape coefficients (0 without refinement).
    n_beta: usize,
    beta0: Vec<f64>,
    /// Per swing unknown, its joint's subtree (topological order): the only joints its
    /// Jacobian column touches.
    subtrees: Vec<Vec<usize>>,
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
        let mut kinds = vec![Kind::Fixed(Matrix3::identity()); SMPL_JOINTS];
        for k in 1..SMPL_JOINTS {
            kinds[k] = match (prep.child(k), slots.iter().position(|&j| j == k)) {
                _ if k == SPINE3 && opts.spine3 == Spine3Method::ThreeChildrenSvd => {
                    Kind::Spine3Svd
                }
                (Some(child), Some(slot)) => Kind::Swing { child, slot },
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
        let subtrees = slots
            .iter()
            .map(|&root| {
                let mut inside = vec![false; prep.n];
                inside[root] = true;
                for k in root + 1..prep.n {
                    inside[k] = inside[parents[k] as usize];
                }
                (root..prep.n).filter(|&k| inside[k]).collect()
            })
            .collect();
        Ok(Self {
            prep,
            opts: opts.clone(),
            kinds,
            slots,
            sqrt_w,
            n_beta,
            beta0,
            subtrees,
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

    fn rest_at(&self, beta: &[f64]) -> Vec<Vector3<f64>> {
        match &self.prep.shape {
            Some((basis, _)) if self.n_beta > 0 => {
                let abs = basis.rest_joints(beta);
                abs[..self.prep.n].iter().map(|r| r - abs[0]).collect()
            }
            _ => self.prep.rest.clone(),
        }
    }

    /// Forward model. With `project`, each swing angle is instead chosen to match those global
    /// rotations as closely as IKOL's axis allows, and written into `x`.
    fn evaluate_with(&self, x: &mut [f64], project: Option<&[Matrix3<f64>]>) -> Eval {
        let prep = &self.prep;
        let rest = self.rest_at(&x[self.slots.len()..]);
        let parents = prep.parents();
        let mut local = vec![Matrix3::identity(); SMPL_JOINTS];
        let mut global = vec![Matrix3::identity(); SMPL_JOINTS];
        let mut pos = vec![Vector3::zeros(); prep.n];
        let mut cache = vec![None; SMPL_JOINTS];
        let root_m = kabsch_m(
            &ROOT_CHILDREN.map(|c| rest[c]),
            &ROOT_CHILDREN.map(|c| prep.targets[c]),
        );
        local[0] = root_rotation(self.opts.root, &prep.targets, &rest);
        global[0] = local[0];
        let mut spine3_m = Matrix3::zeros();
        for k in 1..prep.n {
            let p = parents[k] as usize;
            pos[k] = pos[p] + global[p] * (rest[k] - rest[p]);
            if k >= SMPL_JOINTS {
                continue;
            }
            local[k] = match self.kinds[k] {
                Kind::Fixed(m) => m,
                Kind::Spine3Svd => {
                    let origin = prep.targets[SPINE3];
                    spine3_m = kabsch_m(
                        &SPINE3_CHILDREN.map(|c| rest[c] - rest[SPINE3]),
                        &SPINE3_CHILDREN.map(|c| prep.targets[c] - origin),
                    );
                    global[p].transpose() * spine3_global(&rest, &prep.targets, &origin)
                }
                Kind::Swing { child, slot } => {
                    let t = global[p].transpose() * (prep.targets[child] - prep.targets[k]);
                    let r = rest[child] - rest[k];
                    let sw = swing(&r, &t);
                    let (cos, sin) = prep.twist[k - 1];
                    let r_tw = twist_rotation(&r, cos, sin);
                    if let Some(target) = project {
                        // Swing part of the wanted local rotation, projected on IKOL's axis.
                        let wanted = global[p].transpose() * target[k] * r_tw.transpose();
                        x[slot] = project_angle(&sw.axis, &wanted);
                    }
                    let alpha = x[slot];
                    let r_sw = sw.rotation_by(alpha);
                    cache[k] = Some(SwingCache {
                        t,
                        r,
                        swing: sw,
                        alpha,
                        r_sw,
                    });
                    r_sw * r_tw
                }
            };
            global[k] = global[p] * local[k];
        }
        Eval {
            rest,
            local,
            global,
            pos,
            cache,
            root_m,
            spine3_m,
        }
    }

    fn evaluate(&self, x: &[f64]) -> Eval {
        let mut x = x.to_vec();
        self.evaluate_with(&mut x, None)
    }

    fn residual_of(&self, ev: &Eval, x: &[f64]) -> DVector<f64> {
        let n = self.prep.n;
        let mut r = DVector::zeros(self.residuals());
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
        r
    }

    /// Residual r(x) = W^(1/2) (f(x) - P) (3 rows per joint, root included), then the shape
    /// prior rows; x = swing angles then refined shape coefficients.
    pub fn residual(&self, x: &[f64]) -> DVector<f64> {
        self.residual_of(&self.evaluate(x), x)
    }

    /// d q / d x along one unknown (forward tangent propagation, see the module docs).
    fn tangent(&self, ev: &Eval, unknown: usize) -> Vec<Vector3<f64>> {
        let prep = &self.prep;
        let parents = prep.parents();
        let n_slots = self.slots.len();
        let slot = (unknown < n_slots).then_some(unknown);
        let drest: Option<Vec<Vector3<f64>>> = (unknown >= n_slots).then(|| {
            let (basis, _) = prep.shape.as_ref().expect("shape unknowns need a basis");
            let d = &basis.dirs[unknown - n_slots];
            d[..prep.n].iter().map(|v| v - d[0]).collect()
        });
        let drest_at = |j: usize| drest.as_ref().map_or_else(Vector3::zeros, |d| d[j]);
        let mut w = vec![Vector3::zeros(); SMPL_JOINTS];
        let mut dq = vec![Vector3::zeros(); prep.n];
        if drest.is_some() && self.opts.root == RootMethod::Svd {
            let dm = kabsch_m(
                &ROOT_CHILDREN.map(drest_at),
                &ROOT_CHILDREN.map(|c| prep.targets[c]),
            );
            w[0] = ev.global[0] * kabsch_tangent(&ev.global[0], &ev.root_m, &dm);
        }
        // A swing angle moves only its joint's subtree; the shape moves everything.
        let all: Vec<usize>;
        let joints = match slot {
            Some(s) => &self.subtrees[s][..],
            None => {
                all = (1..prep.n).collect();
                &all[..]
            }
        };
        for &k in joints {
            let p = parents[k] as usize;
            let b = ev.rest[k] - ev.rest[p];
            dq[k] = dq[p]
                + w[p].cross(&(ev.global[p] * b))
                + ev.global[p] * (drest_at(k) - drest_at(p));
            if k >= SMPL_JOINTS {
                continue;
            }
            w[k] = match self.kinds[k] {
                Kind::Fixed(_) => w[p],
                Kind::Spine3Svd => match &drest {
                    Some(_) => {
                        let origin = prep.targets[SPINE3];
                        let dm = kabsch_m(
                            &SPINE3_CHILDREN.map(|c| drest_at(c) - drest_at(SPINE3)),
                            &SPINE3_CHILDREN.map(|c| prep.targets[c] - origin),
                        );
                        let g = ev.global[k];
                        g * kabsch_tangent(&g, &ev.spine3_m, &dm)
                    }
                    None => Vector3::zeros(),
                },
                Kind::Swing { child, slot: s } => {
                    let c = ev.cache[k].as_ref().expect("swing joints are cached");
                    let n = c.swing.axis;
                    let dt = c.t.cross(&(ev.global[p].transpose() * w[p]));
                    let dr = drest_at(child) - drest_at(k);
                    let dn = if c.swing.degenerate() {
                        Vector3::zeros()
                    } else {
                        let dw = dr.cross(&c.t) + c.r.cross(&dt);
                        (dw - n * n.dot(&dw)) / c.swing.w_norm
                    };
                    let (sa, ca) = c.alpha.sin_cos();
                    let mut l = dn * sa + n.cross(&dn) * (1.0 - ca);
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
                    w[p] + ev.global[p] * l
                }
            };
        }
        dq
    }

    fn jacobian_of(&self, ev: &Eval) -> DMatrix<f64> {
        let n = self.prep.n;
        let mut jac = DMatrix::zeros(self.residuals(), self.unknowns());
        for u in 0..self.unknowns() {
            let dq = self.tangent(ev, u);
            for j in 0..n {
                let d = dq[j] * self.sqrt_w[j];
                jac.fixed_view_mut::<3, 1>(3 * j, u).copy_from(&d);
            }
        }
        if let Some(s) = &self.opts.shape {
            let sl = s.prior_weight.sqrt();
            for l in 0..self.n_beta {
                jac[(3 * n + l, self.slots.len() + l)] = sl;
            }
        }
        jac
    }

    /// The analytic Jacobian d r / d x (rows as [`Self::residual`], columns as the unknowns).
    pub fn jacobian(&self, x: &[f64]) -> DMatrix<f64> {
        self.jacobian_of(&self.evaluate(x))
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
                self.evaluate_with(&mut x, Some(&a.global));
            }
        }
        x
    }

    /// Run damped Gauss-Newton (IKOL Alg. 1 forward pass; Levenberg-Marquardt when asked).
    pub fn solve(&self) -> Result<IkSolution, SolverError> {
        let mut x = self.initial();
        let mut ev = self.evaluate(&x);
        let mut r = self.residual_of(&ev, &x);
        let mut cost = 0.5 * r.norm_squared();
        let mut mu = self.opts.damping;
        let mut nu = 2.0;
        let mut used = 0;
        let m = self.unknowns();
        for it in 0..self.opts.iterations {
            used = it + 1;
            let jac = self.jacobian_of(&ev);
            let g = jac.tr_mul(&r);
            let mut a = jac.tr_mul(&jac);
            for i in 0..m {
                a[(i, i)] += mu;
            }
            // IKOL Eq. 10: delta = (J^T J + sigma I)^-1 J^T r.
            let delta = Cholesky::new(a)
                .ok_or(SolverError::NotPositiveDefinite { iteration: it })?
                .solve(&g);
            if delta.iter().any(|d| !d.is_finite()) {
                return Err(SolverError::NotPositiveDefinite { iteration: it });
            }
            // IKOL Eq. 11 (with the sign of reference 3.4: r = f - P).
            let x_new: Vec<f64> = x.iter().zip(delta.iter()).map(|(a, d)| a - d).collect();
            let ev_new = self.evaluate(&x_new);
            let r_new = self.residual_of(&ev_new, &x_new);
            let cost_new = 0.5 * r_new.norm_squared();
            let accept = match self.opts.damping_mode {
                DampingMode::Fixed => true,
                DampingMode::Adaptive => {
                    // Gain ratio: actual over predicted decrease, L(0) - L(h) = delta^T(mu delta + g)/2.
                    let predicted = 0.5 * delta.dot(&(&delta * mu + &g));
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
                x = x_new;
                ev = ev_new;
                r = r_new;
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
        Ok(self.prep.solution(
            ev.local.clone(),
            &ev.rest,
            used,
            Some(x[..n_slots].to_vec()),
            beta,
        ))
    }
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
