//! Rest joints as an affine function of the shape coefficients.
//!
//! SMPL's rest joints are J_regressor (T + S beta) (SMPL Eq. 9; HybrIK reads the leaves from
//! v_shaped, reference 6.2): linear in beta, so a model reduces to a small per-joint basis (24
//! rows, or 29 with the leaf vertices) that is all the IK solvers and the rest-joint evaluation
//! need.

use nalgebra::Vector3;

/// rest_joints(beta) = template + sum_l beta_l dirs_l.
#[derive(Debug, Clone, PartialEq)]
pub struct JointShapeBasis {
    /// Rest joints at beta = 0, model frame, metres (24 or 29 rows).
    pub template: Vec<Vector3<f64>>,
    /// One direction per shape coefficient: `dirs[l][j]` is d rest_joint_j / d beta_l.
    pub dirs: Vec<Vec<Vector3<f64>>>,
}

impl JointShapeBasis {
    /// Number of joints (rows of the template).
    pub fn joints(&self) -> usize {
        self.template.len()
    }

    /// Number of shape coefficients.
    pub fn coefficients(&self) -> usize {
        self.dirs.len()
    }

    /// rest_joints(beta) = template + sum_l beta_l dirs_l (missing coefficients count as 0,
    /// extra ones are ignored).
    pub fn rest_joints(&self, beta: &[f64]) -> Vec<Vector3<f64>> {
        let mut out = self.template.clone();
        for (b, dir) in beta.iter().zip(&self.dirs) {
            for (o, d) in out.iter_mut().zip(dir) {
                *o += d * *b;
            }
        }
        out
    }
}
