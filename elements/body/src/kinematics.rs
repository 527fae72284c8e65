//! Forward kinematics of a kinematic tree given local rotations and rest joint positions.
//!
//! SMPL's `batch_rigid_transform`: G_0 = R_0 about the rest root, G_j = G_parent(j) R_j, and the
//! posed joint p_j = p_parent(j) + G_parent(j) (J_j - J_parent(j)) with p_0 = J_0 (rest root).
//! Works for 24 joints (SMPL) or 29 (HybrIK leaves carry identity rotations).

use nalgebra::{Matrix3, RealField, Vector3};

/// Global rotations and posed positions of every joint. `parents[j] < j` (topological order),
/// -1 for the root; `local` and `rest` have one entry per joint.
pub fn forward_kinematics<T: RealField + Copy>(
    local: &[Matrix3<T>],
    rest: &[Vector3<T>],
    parents: &[i8],
) -> (Vec<Matrix3<T>>, Vec<Vector3<T>>) {
    let n = rest.len();
    debug_assert!(local.len() >= n && parents.len() >= n);
    let mut global = Vec::with_capacity(n);
    let mut posed = Vec::with_capacity(n);
    for j in 0..n {
        match usize::try_from(parents[j]) {
            Ok(p) => {
                global.push(global[p] * local[j]);
                posed.push(posed[p] + global[p] * (rest[j] - rest[p]));
            }
            Err(_) => {
                global.push(local[j]);
                posed.push(rest[j]);
            }
        }
    }
    (global, posed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikol_types::rotation::axis_angle_to_matrix;

    #[test]
    fn two_bone_arm_closed_form() {
        // Chain root(0,0,0) -> a(1,0,0) -> b(2,0,0). Rotate a by 90 deg about z: b goes to (1,1,0).
        let rest = [
            Vector3::zeros(),
            Vector3::new(1.0, 0.0, 0.0),
            Vector3::new(2.0, 0.0, 0.0),
        ];
        let rz = axis_angle_to_matrix(&Vector3::new(0.0, 0.0, std::f64::consts::FRAC_PI_2));
        let (g, p) = forward_kinematics(
            &[Matrix3::identity(), rz, Matrix3::identity()],
            &rest,
            &[-1, 0, 1],
        );
        assert!((p[1] - rest[1]).norm() < 1e-15);
        assert!((p[2] - Vector3::new(1.0, 1.0, 0.0)).norm() < 1e-15);
        assert!((g[2] - rz).norm() < 1e-15);
        // Rotating the root rotates everything about the root joint.
        let (_, p) = forward_kinematics(
            &[rz, Matrix3::identity(), Matrix3::identity()],
            &rest,
            &[-1, 0, 1],
        );
        assert!((p[2] - Vector3::new(0.0, 2.0, 0.0)).norm() < 1e-15);
    }
}
