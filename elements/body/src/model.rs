//! The one internal body-model representation ([`BodyModel`]) and its evaluation:
//! shape blend -> rest joints -> forward kinematics -> (pose blend) -> linear blend skinning.
//!
//! SMPL (Loper et al. 2015, Eq. 1-4 and 7): v_shaped = T + B_S(beta); J = J_regressor v_shaped;
//! v_posed = v_shaped + B_P(theta) with B_P = sum_k (R_k - I) P_k over joints 1..23;
//! v_i = sum_j w_ij A_j [v_posed_i; 1] with A_j = G_j [I | -J_j] (the global transform of joint j
//! relative to its rest position). Because J is linear in beta, the rest joints are computed from
//! precomputed regressed bases J = J_regressor T + sum_l beta_l (J_regressor S_l), which is
//! algebraically the same as regressing v_shaped and much cheaper.

use std::path::Path;

use ikol_types::joints::{SMPL_JOINTS, SMPL24_NAMES, SMPL24_PARENTS};
use nalgebra::{Matrix3, Vector3};

use crate::error::{BodyError, Result};
use crate::joint_basis::JointShapeBasis;
use crate::kinematics::forward_kinematics;
use crate::sparse::Csr;

/// Number of pose-blend-shape features (23 joints x 9 entries of R - I).
pub const POSE_FEATURES: usize = (SMPL_JOINTS - 1) * 9;

/// A body model in SMPL layout. Arrays used in the skinning loop are f32 (vertex data), joint
/// bases f64 (they feed the IK solvers).
#[derive(Debug, Clone)]
pub struct BodyModel {
    /// Short name (`ikol-default`, `ikol-small`, or the file stem).
    pub name: String,
    /// Template vertices [V*3].
    pub v_template: Vec<f32>,
    /// Shape directions [V*3*B] (smplx layout: vertex, coordinate, component).
    pub shapedirs: Vec<f32>,
    pub num_betas: usize,
    /// Pose blend shapes as [POSE_FEATURES][V*3] (feature-major, so each feature is one axpy).
    pub posedirs: Option<Vec<f32>>,
    /// Joint regressor, 24 x V.
    pub j_regressor: Csr,
    /// Skinning weights, V x 24.
    pub weights: Csr,
    pub parents: [i8; SMPL_JOINTS],
    pub faces: Vec<[u32; 3]>,
    /// HybrIK leaf vertices (head top, left/right middle fingertip, left/right big toe).
    pub leaf_vertices: Option<[usize; 5]>,
    /// Human3.6M-17 joint regressor, 17 x V.
    pub j_regressor_h36m: Option<Csr>,
    pub joint_names: Vec<String>,
    /// Licence and attribution text carried by the file.
    pub licence: String,
    /// Non-fatal findings of the loader (sliced shape components, weights not summing to 1).
    pub warnings: Vec<String>,
    /// Rest joints (24) as a linear function of beta, regressed once.
    joints24: JointShapeBasis,
}

/// A posed body: vertices (f32, model frame, metres) and joints (f64).
#[derive(Debug, Clone, Default)]
pub struct Posed {
    pub vertices: Vec<[f32; 3]>,
    /// Posed SMPL-24 joints.
    pub joints: Vec<Vector3<f64>>,
    /// Global joint rotations.
    pub global_rotations: Vec<Matrix3<f64>>,
}

/// Parts of a body model before validation, as every loader produces them.
#[derive(Debug, Clone)]
pub struct BodyModelParts {
    pub name: String,
    pub v_template: Vec<f32>,
    pub shapedirs: Vec<f32>,
    pub num_betas: usize,
    /// As in SMPL files: [V*3][POSE_FEATURES] (vertex-coordinate-major).
    pub posedirs: Option<Vec<f32>>,
    pub j_regressor: Csr,
    pub weights: Csr,
    pub parents: Vec<i64>,
    pub faces: Vec<[u32; 3]>,
    pub leaf_vertices: Option<[usize; 5]>,
    pub j_regressor_h36m: Option<Csr>,
    pub joint_names: Option<Vec<String>>,
    pub licence: String,
}

impl BodyModel {
    /// Validates the parts and precomputes the joint bases. `path` names the source in errors.
    pub fn from_parts(p: BodyModelParts, path: &Path) -> Result<Self> {
        let nv = p.v_template.len() / 3;
        if nv == 0 || p.v_template.len() != nv * 3 {
            return Err(BodyError::bad(
                path,
                "v_template",
                format!("{} values is not [V, 3]", p.v_template.len()),
            ));
        }
        check_bounded(path, "v_template", &p.v_template, MAX_VERTEX_M)?;
        if p.shapedirs.len() != nv * 3 * p.num_betas {
            return Err(BodyError::bad(
                path,
                "shapedirs",
                format!(
                    "{} values, expected [V={nv}, 3, B={}]",
                    p.shapedirs.len(),
                    p.num_betas
                ),
            ));
        }
        check_bounded(path, "shapedirs", &p.shapedirs, MAX_BLEND_SHAPE_M)?;
        let posedirs = match p.posedirs {
            Some(pd) => {
                if pd.len() != nv * 3 * POSE_FEATURES {
                    return Err(BodyError::bad(
                        path,
                        "posedirs",
                        format!("{} values, expected [V={nv}, 3, {POSE_FEATURES}]", pd.len()),
                    ));
                }
                check_bounded(path, "posedirs", &pd, MAX_BLEND_SHAPE_M)?;
                // Transpose to feature-major for the skinning loop.
                let mut t = vec![0f32; pd.len()];
                for i in 0..nv * 3 {
                    for k in 0..POSE_FEATURES {
                        t[k * nv * 3 + i] = pd[i * POSE_FEATURES + k];
                    }
                }
                Some(t)
            }
            None => None,
        };
        check_csr(path, "J_regressor", &p.j_regressor, SMPL_JOINTS, nv)?;
        check_regressor(path, "J_regressor", &p.j_regressor)?;
        check_csr(path, "weights", &p.weights, nv, SMPL_JOINTS)?;
        if let Some(h) = &p.j_regressor_h36m {
            check_csr(
                path,
                "J_regressor_h36m",
                h,
                ikol_types::joints::H36M_JOINTS,
                nv,
            )?;
            check_regressor(path, "J_regressor_h36m", h)?;
        }
        for v in 0..nv {
            if let Some((j, w)) = p
                .weights
                .row(v)
                .find(|&(_, w)| !(-1e-6..=1.0 + 1e-6).contains(&w))
            {
                return Err(BodyError::bad(
                    path,
                    "weights",
                    format!("vertex {v}, joint {j}: weight {w} is outside [0, 1]"),
                ));
            }
            let s: f64 = p.weights.row(v).map(|(_, w)| w).sum();
            if (s - 1.0).abs() > 1e-3 {
                return Err(BodyError::bad(
                    path,
                    "weights",
                    format!("row {v} sums to {s}, not 1"),
                ));
            }
        }
        let parents = parse_parents(path, &p.parents)?;
        if let Some(f) = p.faces.iter().flatten().find(|&&i| i as usize >= nv) {
            return Err(BodyError::bad(
                path,
                "faces",
                format!("vertex index {f} out of range (V = {nv})"),
            ));
        }
        if let Some(i) = p.leaf_vertices.iter().flatten().find(|&&i| i >= nv) {
            return Err(BodyError::bad(
                path,
                "leaf_vertices",
                format!("vertex {i} out of range (V = {nv})"),
            ));
        }
        let joint_names = p
            .joint_names
            .unwrap_or_else(|| SMPL24_NAMES.iter().map(|s| s.to_string()).collect());
        if joint_names.len() != SMPL_JOINTS {
            return Err(BodyError::bad(
                path,
                "joint_names",
                format!("{} names, expected 24", joint_names.len()),
            ));
        }
        // Regressed joint bases: J(beta) = J_reg T + sum_l beta_l J_reg S_l.
        let tmpl: Vec<f64> = p.v_template.iter().map(|&x| f64::from(x)).collect();
        let jt = p.j_regressor.mul_dense(&tmpl, 3);
        let template = (0..SMPL_JOINTS)
            .map(|j| Vector3::new(jt[3 * j], jt[3 * j + 1], jt[3 * j + 2]))
            .collect();
        let mut sd = vec![0f64; nv * 3 * p.num_betas];
        for (d, &s) in sd.iter_mut().zip(&p.shapedirs) {
            *d = f64::from(s);
        }
        let jd = p.j_regressor.mul_dense(&sd, 3 * p.num_betas);
        let dirs = (0..p.num_betas)
            .map(|l| {
                (0..SMPL_JOINTS)
                    .map(|j| {
                        let b = j * 3 * p.num_betas;
                        Vector3::new(
                            jd[b + l],
                            jd[b + p.num_betas + l],
                            jd[b + 2 * p.num_betas + l],
                        )
                    })
                    .collect()
            })
            .collect();
        Ok(BodyModel {
            name: p.name,
            v_template: p.v_template,
            shapedirs: p.shapedirs,
            num_betas: p.num_betas,
            posedirs,
            j_regressor: p.j_regressor,
            weights: p.weights,
            parents,
            faces: p.faces,
            leaf_vertices: p.leaf_vertices,
            j_regressor_h36m: p.j_regressor_h36m,
            joint_names,
            licence: p.licence,
            warnings: Vec::new(),
            joints24: JointShapeBasis { template, dirs },
        })
    }

    pub fn num_vertices(&self) -> usize {
        self.v_template.len() / 3
    }

    /// Rest joints as a linear function of beta: 24 rows, or 29 with `leaves` (the HybrIK leaf
    /// vertices of the shaped template, linear in beta too).
    pub fn joint_shape_basis(&self, leaves: bool) -> Result<JointShapeBasis> {
        let mut b = self.joints24.clone();
        if leaves {
            let ids = self
                .leaf_vertices
                .ok_or_else(|| self.input_error("the model has no leaf vertices".into()))?;
            for v in ids {
                b.template.push(Vector3::from_fn(|c, _| {
                    f64::from(self.v_template[3 * v + c])
                }));
                for (l, d) in b.dirs.iter_mut().enumerate() {
                    d.push(Vector3::from_fn(|c, _| {
                        f64::from(self.shapedirs[(3 * v + c) * self.num_betas + l])
                    }));
                }
            }
        }
        Ok(b)
    }

    fn check_beta(&self, beta: &[f64]) -> Result<()> {
        if beta.len() > self.num_betas {
            return Err(self.input_error(format!(
                "{} shape coefficients given, the model has {}",
                beta.len(),
                self.num_betas
            )));
        }
        if beta.iter().any(|b| !b.is_finite()) {
            return Err(self.input_error("shape coefficients contain NaN or infinity".into()));
        }
        Ok(())
    }

    fn input_error(&self, message: String) -> BodyError {
        BodyError::Input {
            model: self.name.clone(),
            message,
        }
    }

    /// Rest joints (SMPL-24) for shape `beta` (fewer coefficients than the model has are padded
    /// with zeros).
    pub fn rest_joints(&self, beta: &[f64]) -> Result<Vec<Vector3<f64>>> {
        self.check_beta(beta)?;
        Ok(self.joints24.rest_joints(beta))
    }

    /// Rest joints for HybrIK-29: SMPL-24 then the 5 leaf vertices of the shaped template
    /// (HybrIK reads `rest_J[24:29]` from `v_shaped`).
    pub fn rest_joints29(&self, beta: &[f64]) -> Result<Vec<Vector3<f64>>> {
        self.check_beta(beta)?;
        Ok(self.joint_shape_basis(true)?.rest_joints(beta))
    }

    /// Shaped template vertices (rest pose) [V*3].
    pub fn shaped_vertices(&self, beta: &[f64]) -> Result<Vec<f32>> {
        self.check_beta(beta)?;
        let beta32: Vec<f32> = beta.iter().map(|&b| b as f32).collect();
        Ok((0..self.v_template.len())
            .map(|i| self.shaped_coord(i, &beta32))
            .collect())
    }

    /// Coordinate `i` of v_shaped = T + S beta (SMPL Eq. 1's shape blend), the one place it is
    /// computed for both the rest mesh and posing.
    #[inline]
    fn shaped_coord(&self, i: usize, beta32: &[f32]) -> f32 {
        let nb = self.num_betas;
        let s = &self.shapedirs[i * nb..i * nb + beta32.len()];
        self.v_template[i] + s.iter().zip(beta32).map(|(s, b)| s * b).sum::<f32>()
    }

    /// Poses the model: `rotations` are the 24 local joint rotations (root first, SMPL order).
    /// Vertices and joints are in the model frame with the root joint at its rest position
    /// (as SMPL without translation).
    pub fn forward(&self, beta: &[f64], rotations: &[Matrix3<f64>]) -> Result<Posed> {
        let mut out = Posed::default();
        self.forward_into(beta, rotations, &mut out)?;
        Ok(out)
    }

    /// [`forward`](Self::forward) into a reused output (no allocation after the first call).
    pub fn forward_into(
        &self,
        beta: &[f64],
        rotations: &[Matrix3<f64>],
        out: &mut Posed,
    ) -> Result<()> {
        if rotations.len() != SMPL_JOINTS {
            return Err(
                self.input_error(format!("{} rotations given, expected 24", rotations.len()))
            );
        }
        if rotations.iter().any(|r| r.iter().any(|x| !x.is_finite())) {
            return Err(self.input_error("rotations contain NaN or infinity".into()));
        }
        let rest = self.rest_joints(beta)?;
        let (global, posed) = forward_kinematics(rotations, &rest, &self.parents);
        // A_j = [G_j | p_j - G_j J_j] as f32 rows.
        let a: Vec<[f32; 12]> = (0..SMPL_JOINTS)
            .map(|j| {
                let t = posed[j] - global[j] * rest[j];
                let g = &global[j];
                std::array::from_fn(|k| {
                    let (r, c) = (k / 4, k % 4);
                    (if c == 3 { t[r] } else { g[(r, c)] }) as f32
                })
            })
            .collect();
        let nv = self.num_vertices();
        // v_shaped, then pose blend shapes, into the output buffer used as scratch.
        let mut vs = std::mem::take(&mut out.vertices);
        vs.clear();
        vs.reserve(nv);
        let beta32: Vec<f32> = beta.iter().map(|&b| b as f32).collect();
        for v in 0..nv {
            vs.push(std::array::from_fn(|c| {
                self.shaped_coord(3 * v + c, &beta32)
            }));
        }
        if let Some(pd) = &self.posedirs {
            for j in 1..SMPL_JOINTS {
                let r = &rotations[j];
                for e in 0..9 {
                    let f = (r[(e / 3, e % 3)] - if e % 4 == 0 { 1.0 } else { 0.0 }) as f32;
                    if f == 0.0 {
                        continue;
                    }
                    let dir = &pd[((j - 1) * 9 + e) * nv * 3..((j - 1) * 9 + e + 1) * nv * 3];
                    for (v, d) in vs.iter_mut().zip(dir.chunks_exact(3)) {
                        v[0] += f * d[0];
                        v[1] += f * d[1];
                        v[2] += f * d[2];
                    }
                }
            }
        }
        // Skinning: T = sum_j w_vj A_j, v = T [v_posed; 1].
        for (v, p) in vs.iter_mut().enumerate() {
            let mut t = [0f32; 12];
            for (j, w) in self.weights.row(v) {
                let w = w as f32;
                for (tk, ak) in t.iter_mut().zip(&a[j]) {
                    *tk += w * ak;
                }
            }
            *p = [
                t[0] * p[0] + t[1] * p[1] + t[2] * p[2] + t[3],
                t[4] * p[0] + t[5] * p[1] + t[6] * p[2] + t[7],
                t[8] * p[0] + t[9] * p[1] + t[10] * p[2] + t[11],
            ];
        }
        out.vertices = vs;
        out.joints = posed;
        out.global_rotations = global;
        Ok(())
    }

    /// Poses many people, spread over the available cores.
    pub fn forward_batch(&self, people: &[(Vec<f64>, Vec<Matrix3<f64>>)]) -> Result<Vec<Posed>> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(people.len().max(1));
        let chunk = people.len().div_ceil(threads).max(1);
        let mut out: Vec<Posed> = vec![Posed::default(); people.len()];
        std::thread::scope(|s| {
            let handles: Vec<_> = people
                .chunks(chunk)
                .zip(out.chunks_mut(chunk))
                .map(|(inp, outp)| {
                    s.spawn(move || -> Result<()> {
                        for ((beta, rots), o) in inp.iter().zip(outp) {
                            self.forward_into(beta, rots, o)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(self.input_error("worker panicked".into())))
            })
        })?;
        Ok(out)
    }

    /// Regresses Human3.6M-17 joints from posed vertices.
    pub fn regress_h36m(&self, vertices: &[[f32; 3]]) -> Option<Vec<Vector3<f64>>> {
        let r = self.j_regressor_h36m.as_ref()?;
        Some(
            (0..r.rows)
                .map(|j| {
                    r.row(j).fold(Vector3::zeros(), |acc, (v, w)| {
                        acc + Vector3::from(vertices[v].map(f64::from)) * w
                    })
                })
                .collect(),
        )
    }
}

/// Largest |beta| the elements and commands accept by default: shape coefficients are in
/// standard deviations of the training bodies (SMPL's fits stay within about 5), so 10 is
/// already no human.
pub const MAX_ABS_BETA: f64 = 10.0;

/// Physical bounds of a body model's arrays: a human body fits in a 10 m box around its
/// origin; one unit of a shape or pose blend shape moves a vertex by centimetres (SMPL's are
/// below 0.1 m), so a metre is already absurd; joint regressor rows are convex-ish combinations
/// of vertices (weights summing to 1; SMPL's lie in [0, 1], ours in about [-0.3, 1.4]).
pub const MAX_VERTEX_M: f32 = 10.0;
/// See [`MAX_VERTEX_M`].
pub const MAX_BLEND_SHAPE_M: f32 = 1.0;
/// See [`MAX_VERTEX_M`].
pub const MAX_REGRESSOR_WEIGHT: f64 = 10.0;
/// Largest deviation of a joint regressor row's sum from 1.
pub const REGRESSOR_SUM_TOLERANCE: f64 = 0.01;

/// Every value finite and within +-`max`.
fn check_bounded(path: &Path, key: &str, v: &[f32], max: f32) -> Result<()> {
    match v.iter().position(|x| !x.is_finite() || x.abs() > max) {
        Some(i) if !v[i].is_finite() => Err(BodyError::bad(
            path,
            key,
            format!("value {i} is {} (NaN or infinity)", v[i]),
        )),
        Some(i) => Err(BodyError::bad(
            path,
            key,
            format!(
                "value {i} is {} m, beyond the {max} m a human body model can have",
                v[i]
            ),
        )),
        None => Ok(()),
    }
}

/// Joint regressor rows: weights finite, bounded, summing to 1 (each joint is a weighted
/// average of vertices).
fn check_regressor(path: &Path, key: &str, m: &Csr) -> Result<()> {
    for r in 0..m.rows {
        let mut sum = 0.0;
        for (c, w) in m.row(r) {
            if !(w.is_finite() && w.abs() <= MAX_REGRESSOR_WEIGHT) {
                return Err(BodyError::bad(
                    path,
                    key,
                    format!(
                        "row {r}, column {c}: weight {w} is not within +-{MAX_REGRESSOR_WEIGHT}"
                    ),
                ));
            }
            sum += w;
        }
        if (sum - 1.0).abs() > REGRESSOR_SUM_TOLERANCE {
            return Err(BodyError::bad(
                path,
                key,
                format!("row {r} sums to {sum}, not 1 (a joint is a weighted average of vertices)"),
            ));
        }
    }
    Ok(())
}

fn check_csr(path: &Path, key: &str, m: &Csr, rows: usize, cols: usize) -> Result<()> {
    if m.rows != rows || m.cols != cols {
        return Err(BodyError::bad(
            path,
            key,
            format!("shape [{}, {}], expected [{rows}, {cols}]", m.rows, m.cols),
        ));
    }
    m.validate().map_err(|e| BodyError::bad(path, key, e))
}

fn parse_parents(path: &Path, p: &[i64]) -> Result<[i8; SMPL_JOINTS]> {
    if p.len() != SMPL_JOINTS {
        return Err(BodyError::bad(
            path,
            "parents",
            format!("{} entries, expected 24", p.len()),
        ));
    }
    let mut out = [0i8; SMPL_JOINTS];
    for (j, &v) in p.iter().enumerate() {
        // SMPL files store the root's parent as 2^32 - 1 (uint32 -1).
        out[j] = if j == 0 { -1 } else { v as i8 };
        if j > 0 && !(0..j as i64).contains(&v) {
            return Err(BodyError::bad(
                path,
                "parents",
                format!("joint {j} has parent {v}; parents must precede children"),
            ));
        }
    }
    if out != SMPL24_PARENTS {
        return Err(BodyError::bad(
            path,
            "parents",
            format!("{out:?} is not the SMPL kinematic tree"),
        ));
    }
    Ok(out)
}
