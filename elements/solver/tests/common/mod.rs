//! Shared fixtures for the solver tests: random people on the hand skeleton and a central
//! finite-difference Jacobian.

#![allow(dead_code)]

use ikol_solver::fixtures::{hand_skeleton, random_shape_basis};
use ikol_solver::sampling::{
    GroundTruth, PoseDistribution, ground_truth, jitter, sample_beta, sample_pose,
};
use ikol_solver::{IkInput, JointShapeBasis, Rest};
use nalgebra::{DMatrix, DVector, Vector3, Vector4};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// One random person with everything a solver needs, owned.
#[derive(Debug, Clone)]
pub struct Case {
    pub basis: JointShapeBasis,
    pub beta: Vec<f64>,
    /// Absolute rest joints (29 rows) at `beta`.
    pub rest: Vec<Vector3<f64>>,
    pub gt: GroundTruth,
    /// Targets (29 rows; the first 24 for the 24-joint layout), possibly jittered.
    pub targets: Vec<Vector3<f64>>,
    pub twist: Vec<[f64; 2]>,
    pub leaf: Vec<Vector4<f64>>,
}

impl Case {
    /// A random pose and shape; targets are the exact FK joints plus `jitter_m` uniform noise.
    pub fn random(seed: u64, jitter_m: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let basis = random_shape_basis(10, 99);
        let beta = sample_beta(&mut rng, 10, 1.0);
        let rest = basis.rest_joints(&beta);
        let pose = sample_pose(&mut rng, &PoseDistribution::default());
        let gt = ground_truth(&rest, &pose);
        let targets = jitter(&mut rng, &gt.joints, jitter_m);
        Self {
            twist: gt.twist.clone(),
            leaf: gt.leaf_rotations.clone(),
            basis,
            beta,
            rest,
            gt,
            targets,
        }
    }

    /// The T-pose of the plain hand skeleton, identity twist.
    pub fn t_pose() -> Self {
        let rest = hand_skeleton();
        let gt = ground_truth(&rest, &[Vector3::zeros(); 24]);
        Self {
            basis: random_shape_basis(10, 99),
            beta: vec![0.0; 10],
            targets: gt.joints.clone(),
            twist: gt.twist.clone(),
            leaf: gt.leaf_rotations.clone(),
            rest,
            gt,
        }
    }

    /// IKOL-24 layout: 24 targets and the leaf quaternions.
    pub fn input24(&self) -> IkInput<'_> {
        IkInput {
            targets: &self.targets[..24],
            twist: &self.twist,
            rest: Rest::Joints(&self.rest),
            leaf_rotations: Some(&self.leaf),
        }
    }

    /// HybrIK-29 layout: 29 targets (leaves define the leaf parents' swing).
    pub fn input29(&self) -> IkInput<'_> {
        IkInput {
            targets: &self.targets,
            twist: &self.twist,
            rest: Rest::Joints(&self.rest),
            leaf_rotations: None,
        }
    }

    /// IKOL-24 layout with the rest from the shape basis.
    pub fn input24_shape<'a>(&'a self, beta: &'a [f64]) -> IkInput<'a> {
        IkInput {
            rest: Rest::Shape {
                basis: &self.basis,
                beta,
            },
            ..self.input24()
        }
    }
}

/// Central differences (f(x + h e_i) - f(x - h e_i)) / 2h, column by column.
pub fn fd_jacobian(f: impl Fn(&[f64]) -> DVector<f64>, x: &[f64], h: f64) -> DMatrix<f64> {
    let rows = f(x).len();
    let mut jac = DMatrix::zeros(rows, x.len());
    for i in 0..x.len() {
        let step = h * x[i].abs().max(1.0);
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[i] += step;
        xm[i] -= step;
        let d = (f(&xp) - f(&xm)) / (2.0 * step);
        jac.set_column(i, &d);
    }
    jac
}

/// Largest absolute entry.
pub fn max_abs(m: &DMatrix<f64>) -> f64 {
    m.iter().fold(0.0, |a, x| a.max(x.abs()))
}
