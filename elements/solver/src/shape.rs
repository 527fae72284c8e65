//! Linear joint-shape basis: rest_joints(beta) = template + sum_l beta_l dirs_l.
//!
//! For SMPL-like models the rest joints are J_regressor (v_template + shapedirs beta) (HybrIK
//! Eq. 20, reference 6.2), which is linear in beta; the body crate reduces that to this small
//! per-joint basis (24 rows, or 29 with the leaf vertices), which is all the solvers need.

use crate::SolverError;

pub use ikol_body::JointShapeBasis;

/// Checks that every direction has as many rows as the template and that all are finite.
pub(crate) fn validate_basis(basis: &JointShapeBasis) -> Result<(), SolverError> {
    crate::problem::check_finite("basis template", &basis.template)?;
    for d in &basis.dirs {
        if d.len() != basis.template.len() {
            return Err(SolverError::SizeMismatch {
                input: "basis direction",
                got: d.len(),
                expected: "as many rows as the template",
            });
        }
        crate::problem::check_finite("basis direction", d)?;
    }
    Ok(())
}
