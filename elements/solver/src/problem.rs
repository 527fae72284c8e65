//! Solver inputs and outputs, validation, and the preprocessing every solver shares
//! (reference 2.2): targets and rest joints made root-relative, twist normalised, leaf rotations
//! turned into matrices.

use ikol_body::forward_kinematics;
use ikol_types::joints::{
    HYBRIK_JOINTS, HYBRIK29_CHILDREN, HYBRIK29_PARENTS, IKOL24_CHILDREN, LEAF_ROTATION_JOINTS,
    SMPL_JOINTS,
};
use ikol_types::rotation::{matrix_to_axis_angle, quat_to_matrix};
use nalgebra::{Matrix3, Vector3, Vector4};

use crate::geometry::normalise_twist;
use crate::{JointShapeBasis, SolverError};

/// Number of twist pairs: joints 1..23, indexed by joint - 1 (reference 1.3).
pub const TWIST_PAIRS: usize = 23;

/// Where the rest skeleton comes from.
#[derive(Debug, Clone, Copy)]
pub enum Rest<'a> {
    /// Absolute rest joints in the model frame (24 or 29 rows; 29 needed for 29 targets).
    Joints(&'a [Vector3<f64>]),
    /// Rest joints from a linear shape basis and coefficients (needed for shape refinement).
    Shape {
        /// The joint-shape basis.
        basis: &'a JointShapeBasis,
        /// Shape coefficients (the initial value when IKOL refines the shape).
        beta: &'a [f64],
    },
}

/// One person's solver input.
#[derive(Debug, Clone, Copy)]
pub struct IkInput<'a> {
    /// Target joints P, root-relative (the root row is subtracted again), metres: 24 SMPL joints,
    /// or 29 with the HybrIK leaves (which then define the swing of 10, 11, 15, 22, 23).
    pub targets: &'a [Vector3<f64>],
    /// Twist (cos phi, sin phi) for joints 1..23 at index joint - 1, unnormalised.
    pub twist: &'a [[f64; 2]],
    /// Rest skeleton.
    pub rest: Rest<'a>,
    /// Local rotations of joints [10, 11, 15, 22, 23] as quaternions (w, x, y, z), the IKOL-24
    /// leaf output; used with 24 targets (identity when absent), ignored with 29.
    pub leaf_rotations: Option<&'a [Vector4<f64>]>,
}

/// One person's solution.
#[derive(Debug, Clone, PartialEq)]
pub struct IkSolution {
    /// Local rotations of the 24 SMPL joints (root first: the global orientation).
    pub local_rotations: Vec<Matrix3<f64>>,
    /// The same as axis-angle vectors (angle in [0, pi]).
    pub axis_angle: Vec<Vector3<f64>>,
    /// Reconstructed joints Q = FK(result), root-relative; as many rows as the targets.
    pub joints: Vec<Vector3<f64>>,
    /// Per-joint |P - Q| in metres, one per target row.
    pub residual: Vec<f64>,
    /// Gauss-Newton iterations run (0 for the analytic solvers).
    pub iterations: usize,
    /// IKOL's swing angles, one per optimised joint (see [`crate::ikol::swing_joints`]).
    pub swing_angles: Option<Vec<f64>>,
    /// Shape coefficients after refinement (IKOL with shape refinement only).
    pub beta: Option<Vec<f64>>,
}

impl IkSolution {
    /// Mean of the per-joint residuals (metres).
    pub fn mean_residual(&self) -> f64 {
        self.residual.iter().sum::<f64>() / self.residual.len().max(1) as f64
    }
}

pub(crate) fn check_finite(input: &'static str, rows: &[Vector3<f64>]) -> Result<(), SolverError> {
    match rows.iter().position(|v| !v.iter().all(|x| x.is_finite())) {
        Some(row) => Err(SolverError::NonFinite { input, row }),
        None => Ok(()),
    }
}

/// The validated, root-relative problem every solver works on.
#[derive(Debug, Clone)]
pub(crate) struct Prepared<'a> {
    /// Number of target joints (24 or 29).
    pub n: usize,
    /// P - P_0.
    pub targets: Vec<Vector3<f64>>,
    /// Normalised (cos, sin) per joint 1..23 at index joint - 1.
    pub twist: [(f64, f64); TWIST_PAIRS],
    /// Rest joints minus the rest root, `n` rows.
    pub rest: Vec<Vector3<f64>>,
    /// Local rotations of [10, 11, 15, 22, 23] (24 targets only; identity when absent).
    pub leaf: [Matrix3<f64>; 5],
    /// The child defining each of the 24 joints' swing, -1 where the rotation is given.
    pub children: [i8; SMPL_JOINTS],
    /// The shape basis and initial coefficients, when the rest comes from a basis.
    pub shape: Option<(&'a JointShapeBasis, Vec<f64>)>,
}

impl<'a> Prepared<'a> {
    pub fn new(input: &IkInput<'a>) -> Result<Self, SolverError> {
        let n = input.targets.len();
        if n != SMPL_JOINTS && n != HYBRIK_JOINTS {
            return Err(SolverError::SizeMismatch {
                input: "targets",
                got: n,
                expected: "24 or 29",
            });
        }
        check_finite("targets", input.targets)?;
        if input.twist.len() != TWIST_PAIRS {
            return Err(SolverError::SizeMismatch {
                input: "twist",
                got: input.twist.len(),
                expected: "23",
            });
        }
        if let Some(row) = input
            .twist
            .iter()
            .position(|p| !(p[0].is_finite() && p[1].is_finite()))
        {
            return Err(SolverError::NonFinite {
                input: "twist",
                row,
            });
        }
        let (rest_abs, shape) = match input.rest {
            Rest::Joints(j) => (j.to_vec(), None),
            Rest::Shape { basis, beta } => {
                crate::shape::validate_basis(basis)?;
                if beta.iter().any(|b| !b.is_finite()) {
                    return Err(SolverError::NonFinite {
                        input: "beta",
                        row: beta.iter().position(|b| !b.is_finite()).unwrap_or(0),
                    });
                }
                if beta.len() > basis.coefficients() {
                    return Err(SolverError::SizeMismatch {
                        input: "beta",
                        got: beta.len(),
                        expected: "at most the basis' coefficients",
                    });
                }
                let mut b = beta.to_vec();
                b.resize(basis.coefficients(), 0.0);
                (basis.rest_joints(&b), Some((basis, b)))
            }
        };
        if rest_abs.len() < n || (rest_abs.len() != SMPL_JOINTS && rest_abs.len() != HYBRIK_JOINTS)
        {
            return Err(SolverError::SizeMismatch {
                input: "rest joints",
                got: rest_abs.len(),
                expected: "24 or 29, and at least as many as the targets",
            });
        }
        check_finite("rest joints", &rest_abs)?;
        let mut leaf = [Matrix3::identity(); 5];
        if n == SMPL_JOINTS
            && let Some(q) = input.leaf_rotations
        {
            if q.len() != LEAF_ROTATION_JOINTS.len() {
                return Err(SolverError::SizeMismatch {
                    input: "leaf rotations",
                    got: q.len(),
                    expected: "5",
                });
            }
            if let Some(row) = q.iter().position(|v| !v.iter().all(|x| x.is_finite())) {
                return Err(SolverError::NonFinite {
                    input: "leaf rotations",
                    row,
                });
            }
            for (m, q) in leaf.iter_mut().zip(q) {
                *m = quat_to_matrix(q);
            }
        }
        let mut twist = [(1.0, 0.0); TWIST_PAIRS];
        for (t, p) in twist.iter_mut().zip(input.twist) {
            *t = normalise_twist(p[0], p[1]);
        }
        let mut children = [0i8; SMPL_JOINTS];
        children.copy_from_slice(if n == SMPL_JOINTS {
            &IKOL24_CHILDREN[..]
        } else {
            &HYBRIK29_CHILDREN[..SMPL_JOINTS]
        });
        let root = input.targets[0];
        let rest_root = rest_abs[0];
        Ok(Self {
            n,
            targets: input.targets.iter().map(|p| p - root).collect(),
            twist,
            rest: rest_abs[..n].iter().map(|r| r - rest_root).collect(),
            leaf,
            children,
            shape,
        })
    }

    /// The child of joint `k` (< 24) that defines its swing, if any.
    pub fn child(&self, k: usize) -> Option<usize> {
        usize::try_from(self.children[k]).ok()
    }

    /// The given local rotation of a leaf-rotation joint (24 targets).
    pub fn leaf_rotation(&self, k: usize) -> Matrix3<f64> {
        LEAF_ROTATION_JOINTS
            .iter()
            .position(|&j| j == k)
            .map_or_else(Matrix3::identity, |i| self.leaf[i])
    }

    /// Parents of the `n` target joints.
    pub fn parents(&self) -> &'static [i8] {
        &HYBRIK29_PARENTS[..self.n]
    }

    /// FK of 24 local rotations over the `n` joints (leaves 24..28 carry the identity), the
    /// residuals against the targets, and the solution record.
    pub fn solution(
        &self,
        local: Vec<Matrix3<f64>>,
        rest: &[Vector3<f64>],
        iterations: usize,
        swing_angles: Option<Vec<f64>>,
        beta: Option<Vec<f64>>,
    ) -> IkSolution {
        let joints = self.fk(&local, rest);
        self.solution_with_joints(local, joints, iterations, swing_angles, beta)
    }

    /// [`Self::solution`] when the posed joints (root-relative, `n` rows) are already known.
    pub fn solution_with_joints(
        &self,
        local: Vec<Matrix3<f64>>,
        joints: Vec<Vector3<f64>>,
        iterations: usize,
        swing_angles: Option<Vec<f64>>,
        beta: Option<Vec<f64>>,
    ) -> IkSolution {
        let residual = joints
            .iter()
            .zip(&self.targets)
            .map(|(q, p)| (q - p).norm())
            .collect();
        IkSolution {
            axis_angle: local.iter().map(matrix_to_axis_angle).collect(),
            local_rotations: local,
            joints,
            residual,
            iterations,
            swing_angles,
            beta,
        }
    }

    /// Posed joints (root-relative) of 24 local rotations on the `n`-joint rest skeleton.
    pub fn fk(&self, local: &[Matrix3<f64>], rest: &[Vector3<f64>]) -> Vec<Vector3<f64>> {
        let mut all = local.to_vec();
        all.resize(self.n, Matrix3::identity());
        forward_kinematics(&all, rest, self.parents()).1
    }
}
