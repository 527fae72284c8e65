//! The body as a function of the fit's parameters: the 24 joints and a set of anchor points
//! (joints or skinned surface vertices), their positions in the camera frame and their analytic
//! Jacobians with respect to every parameter.
//!
//! **Parameters.** A body state is 24 local rotations `R_k` (root first, the root one maps the
//! model frame to camera axes), the camera position `t` of the root joint, and the shape `beta`.
//! A step perturbs each rotation on the right, `R_k <- R_k exp([d_k])`, so a point moved by
//! joint `k` turns about the axis `G_k d_k` through the posed joint `J_k`
//! (`G_k` the global rotation of `k`):
//!
//! ```text
//! dp / d d_k  = -[p_b - J_k]_x G_k            for every bone b below k that moves p
//! dp / d t    = I
//! dp / d beta = G_b (S_l - D_b,l) + dJ_b / d beta_l
//! dJ_j / d beta_l = sum over a in chain(j), a != root: G_parent(a) (D_a,l - D_parent(a),l)
//! ```
//!
//! with `D` the joint-shape directions and `S` the vertex shape directions (SMPL Eq. 1 and 9).
//! Skinned points follow LBS (SMPL Eq. 2-4): `p = sum_b w_b (G_b (v - rest_b) + J_b)`. Pose
//! blend shapes are not applied to the anchors (the default model has none; for SMPL their
//! effect on single vertices is millimetres).
//!
//! Parameter layout: `3k..3k+3` rotation of joint k, [`TRANSLATION`]`..+3` the translation,
//! then the shape coefficients.

use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_body::{Anchor, BodyModel, JointShapeBasis};
use ikol_types::joints::SMPL_JOINTS;
use ikol_types::rotation::{axis_angle_to_matrix, skew};

use crate::SolverError;

/// Index of the translation's first parameter.
pub const TRANSLATION: usize = 3 * SMPL_JOINTS;
/// Index of the first shape coefficient.
pub const BETA: usize = TRANSLATION + 3;

/// One body: local rotations, camera position of the root joint, shape.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyState {
    /// 24 local rotations, root first (root: model frame to camera axes).
    pub rotations: Vec<Matrix3<f64>>,
    /// Camera-frame position of the root joint, metres.
    pub translation: Vector3<f64>,
    /// Shape coefficients (as many as the model's joint basis).
    pub beta: Vec<f64>,
}

impl BodyState {
    /// Applies a parameter step (layout in the module doc).
    pub fn step(&self, d: &[f64]) -> Self {
        let mut s = self.clone();
        for (k, r) in s.rotations.iter_mut().enumerate() {
            let w = Vector3::new(d[3 * k], d[3 * k + 1], d[3 * k + 2]);
            *r *= axis_angle_to_matrix(&w);
        }
        s.translation += Vector3::new(d[TRANSLATION], d[TRANSLATION + 1], d[TRANSLATION + 2]);
        for (b, db) in s.beta.iter_mut().zip(&d[BETA..]) {
            *b += db;
        }
        s
    }
}

/// A skinned anchor vertex: rest position linear in beta and its skinning weights.
#[derive(Debug, Clone)]
struct Skinned {
    template: Vector3<f64>,
    dirs: Vec<Vector3<f64>>,
    weights: Vec<(usize, f64)>,
}

#[derive(Debug, Clone)]
enum Point {
    Joint(usize),
    Skinned(Skinned),
}

/// The parts of a body model the fitter needs, for a chosen list of anchors.
#[derive(Debug, Clone)]
pub struct SurfaceModel {
    parents: [i8; SMPL_JOINTS],
    basis: JointShapeBasis,
    points: Vec<Point>,
    /// Per joint, its ancestors and itself, root first.
    chains: Vec<Vec<usize>>,
}

/// A posed body: global rotations, joints and anchor points in the camera frame.
#[derive(Debug, Clone)]
pub struct Posed {
    pub global: Vec<Matrix3<f64>>,
    pub joints: Vec<Vector3<f64>>,
    pub rest: Vec<Vector3<f64>>,
    pub points: Vec<Vector3<f64>>,
}

/// The Jacobian of one 3D point: its non-zero columns and d p / d column for each.
#[derive(Debug, Clone, Default)]
pub struct PointJacobian {
    pub cols: Vec<usize>,
    pub d: Vec<Vector3<f64>>,
}

impl PointJacobian {
    fn clear(&mut self) {
        self.cols.clear();
        self.d.clear();
    }

    fn push(&mut self, col: usize, d: Vector3<f64>) {
        self.cols.push(col);
        self.d.push(d);
    }

    fn push_block(&mut self, first: usize, m: &Matrix3<f64>) {
        for c in 0..3 {
            self.push(first + c, m.column(c).into_owned());
        }
    }
}

impl SurfaceModel {
    /// The fitter's view of `model` with the given anchors (joints or vertices).
    pub fn new(model: &BodyModel, anchors: &[Anchor]) -> Result<Self, SolverError> {
        let basis = model
            .joint_shape_basis(false)
            .map_err(|e| SolverError::Input(e.to_string()))?;
        let nb = model.num_betas;
        let nv = model.num_vertices();
        let points = anchors
            .iter()
            .map(|a| match *a {
                Anchor::Joint(j) if j < SMPL_JOINTS => Ok(Point::Joint(j)),
                Anchor::Vertex(v) if v < nv => {
                    let c = |i: usize| f64::from(model.v_template[3 * v + i]);
                    let weights: Vec<(usize, f64)> =
                        model.weights.row(v).filter(|&(_, w)| w != 0.0).collect();
                    if weights.iter().any(|&(j, _)| j >= SMPL_JOINTS) {
                        return Err(SolverError::Input(format!(
                            "vertex {v} is skinned to a joint past {SMPL_JOINTS}"
                        )));
                    }
                    Ok(Point::Skinned(Skinned {
                        template: Vector3::new(c(0), c(1), c(2)),
                        dirs: (0..basis.coefficients().min(nb))
                            .map(|l| {
                                Vector3::from_fn(|i, _| {
                                    f64::from(model.shapedirs[(3 * v + i) * nb + l])
                                })
                            })
                            .collect(),
                        weights,
                    }))
                }
                a => Err(SolverError::Input(format!(
                    "anchor {a:?} is not on the body model ({SMPL_JOINTS} joints, {nv} vertices)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let parents = model.parents;
        let chains = (0..SMPL_JOINTS)
            .map(|j| {
                let mut c = vec![j];
                let mut k = j;
                while let Ok(p) = usize::try_from(parents[k]) {
                    c.push(p);
                    k = p;
                }
                c.reverse();
                c
            })
            .collect();
        Ok(Self {
            parents,
            basis,
            points,
            chains,
        })
    }

    /// Number of anchor points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether there are no anchor points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Number of shape coefficients.
    pub fn betas(&self) -> usize {
        self.basis.coefficients()
    }

    /// Number of parameters: 72 rotation, 3 translation, the shape coefficients.
    pub fn parameters(&self) -> usize {
        BETA + self.betas()
    }

    /// The joint-shape basis (rest joints in beta).
    pub fn basis(&self) -> &JointShapeBasis {
        &self.basis
    }

    /// Poses the body: joints and anchors in the camera frame.
    pub fn pose(&self, s: &BodyState) -> Posed {
        let rest = self.basis.rest_joints(&s.beta);
        let mut global: Vec<Matrix3<f64>> = Vec::with_capacity(SMPL_JOINTS);
        let mut joints: Vec<Vector3<f64>> = Vec::with_capacity(SMPL_JOINTS);
        for j in 0..SMPL_JOINTS {
            match usize::try_from(self.parents[j]) {
                Ok(p) => {
                    global.push(global[p] * s.rotations[j]);
                    joints.push(joints[p] + global[p] * (rest[j] - rest[p]));
                }
                Err(_) => {
                    global.push(s.rotations[j]);
                    joints.push(s.translation);
                }
            }
        }
        let points = self
            .points
            .iter()
            .map(|pt| match pt {
                Point::Joint(j) => joints[*j],
                Point::Skinned(v) => {
                    let rest_v = self.rest_vertex(v, &s.beta);
                    v.weights
                        .iter()
                        .map(|&(b, w)| (global[b] * (rest_v - rest[b]) + joints[b]) * w)
                        .sum()
                }
            })
            .collect();
        Posed {
            global,
            joints,
            rest,
            points,
        }
    }

    fn rest_vertex(&self, v: &Skinned, beta: &[f64]) -> Vector3<f64> {
        v.template
            + v.dirs
                .iter()
                .zip(beta)
                .map(|(d, b)| d * *b)
                .sum::<Vector3<f64>>()
    }

    /// d J_b / d beta_l for the posed joint `b` (the root is the translation: zero).
    fn joint_beta(&self, posed: &Posed, b: usize, l: usize) -> Vector3<f64> {
        let d = &self.basis.dirs[l];
        self.chains[b]
            .iter()
            .skip(1)
            .map(|&a| {
                let p = self.parents[a] as usize;
                posed.global[p] * (d[a] - d[p])
            })
            .sum()
    }

    /// The Jacobian of joint `j` into `out`.
    pub fn joint_jacobian(&self, posed: &Posed, j: usize, out: &mut PointJacobian) {
        out.clear();
        let p = posed.joints[j];
        for &k in &self.chains[j][..self.chains[j].len() - 1] {
            out.push_block(3 * k, &(-skew(&(p - posed.joints[k])) * posed.global[k]));
        }
        out.push_block(TRANSLATION, &Matrix3::identity());
        for l in 0..self.betas() {
            out.push(BETA + l, self.joint_beta(posed, j, l));
        }
    }

    /// The Jacobian of anchor point `i` into `out`.
    pub fn point_jacobian(&self, posed: &Posed, s: &BodyState, i: usize, out: &mut PointJacobian) {
        let v = match &self.points[i] {
            Point::Joint(j) => return self.joint_jacobian(posed, *j, out),
            Point::Skinned(v) => v,
        };
        out.clear();
        let rest_v = self.rest_vertex(v, &s.beta);
        // Rotations: every joint above (or at) a bone that moves the point.
        let mut rot = [Matrix3::<f64>::zeros(); SMPL_JOINTS];
        let mut used = [false; SMPL_JOINTS];
        let mut wsum = 0.0;
        for &(b, w) in &v.weights {
            wsum += w;
            let q = posed.global[b] * (rest_v - posed.rest[b]) + posed.joints[b];
            for &k in &self.chains[b] {
                rot[k] -= skew(&(q - posed.joints[k])) * posed.global[k] * w;
                used[k] = true;
            }
        }
        for k in 0..SMPL_JOINTS {
            if used[k] {
                out.push_block(3 * k, &rot[k]);
            }
        }
        out.push_block(TRANSLATION, &(Matrix3::identity() * wsum));
        for l in 0..self.betas() {
            let d = v
                .weights
                .iter()
                .map(|&(b, w)| {
                    (posed.global[b] * (v.dirs[l] - self.basis.dirs[l][b])
                        + self.joint_beta(posed, b, l))
                        * w
                })
                .sum();
            out.push(BETA + l, d);
        }
    }
}
