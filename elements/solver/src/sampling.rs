//! Joint-limit-aware random poses and the ground truth the solvers are measured against.
//!
//! Distribution of [`PoseDistribution::default`] (per joint, SMPL local axis-angle, radians;
//! model frame y up, x to the subject's left, z forward):
//! - root: heading uniform in [-pi, pi) about y, composed with a tilt whose x and z axis-angle
//!   components are N(0, 0.15^2);
//! - spine1, spine2, spine3 (3, 6, 9): each component N(0, 0.15^2); neck and head (12, 15):
//!   N(0, 0.2^2);
//! - knees (4, 5): hinge about +x (flexion moves the foot backward) by |N(0, 0.8^2)| clamped to
//!   2.4 rad, plus N(0, 0.05^2) on the y and z components;
//! - elbows (18, 19): hinge about -y for the left and +y for the right arm (flexion brings the
//!   forearm forward), |N(0, 0.8^2)| clamped to 2.4 rad, plus N(0, 0.05^2) off-axis;
//! - every other joint: each component N(0, 0.3^2).
//!
//! Shape coefficients: each N(0, sigma^2). All functions take the caller's RNG, so a seeded
//! `StdRng` makes everything reproducible.

use ikol_body::forward_kinematics;
use ikol_types::joints::{HYBRIK29_CHILDREN, HYBRIK29_PARENTS, LEAF_ROTATION_JOINTS, SMPL_JOINTS};
use ikol_types::rotation::{axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_quat};
use nalgebra::{Matrix3, Vector3, Vector4};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::geometry::twist_angle;

/// Parameters of the pose distribution (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoseDistribution {
    /// Per-component sigma of ordinary joints.
    pub sigma: f64,
    /// Per-component sigma of spine1..3.
    pub spine_sigma: f64,
    /// Per-component sigma of neck and head.
    pub neck_sigma: f64,
    /// Sigma of the root tilt components.
    pub tilt_sigma: f64,
    /// Sigma of the half-normal hinge flexion of knees and elbows.
    pub hinge_sigma: f64,
    /// Maximum hinge flexion.
    pub hinge_max: f64,
    /// Sigma of the off-axis components of the hinges.
    pub hinge_off_axis: f64,
    /// Uniform random heading; `false` keeps the heading 0.
    pub random_heading: bool,
}

impl Default for PoseDistribution {
    fn default() -> Self {
        Self {
            sigma: 0.3,
            spine_sigma: 0.15,
            neck_sigma: 0.2,
            tilt_sigma: 0.15,
            hinge_sigma: 0.8,
            hinge_max: 2.4,
            hinge_off_axis: 0.05,
            random_heading: true,
        }
    }
}

fn normal<R: Rng + ?Sized>(rng: &mut R, sigma: f64) -> f64 {
    Normal::new(0.0, sigma.max(0.0)).map_or(0.0, |n| n.sample(rng))
}

fn iid<R: Rng + ?Sized>(rng: &mut R, sigma: f64) -> Vector3<f64> {
    Vector3::new(normal(rng, sigma), normal(rng, sigma), normal(rng, sigma))
}

/// One random pose: 24 local axis-angle vectors (root first).
pub fn sample_pose<R: Rng + ?Sized>(rng: &mut R, dist: &PoseDistribution) -> Vec<Vector3<f64>> {
    let mut pose = vec![Vector3::zeros(); SMPL_JOINTS];
    let heading = if dist.random_heading {
        rng.random_range(-std::f64::consts::PI..std::f64::consts::PI)
    } else {
        0.0
    };
    let tilt = Vector3::new(
        normal(rng, dist.tilt_sigma),
        0.0,
        normal(rng, dist.tilt_sigma),
    );
    pose[0] = matrix_to_axis_angle(
        &(axis_angle_to_matrix(&Vector3::new(0.0, heading, 0.0)) * axis_angle_to_matrix(&tilt)),
    );
    for (k, p) in pose.iter_mut().enumerate().skip(1) {
        let hinge = |rng: &mut R, axis: Vector3<f64>| {
            let flex = normal(rng, dist.hinge_sigma).abs().min(dist.hinge_max);
            let off = iid(rng, dist.hinge_off_axis);
            axis * flex + (off - axis * axis.dot(&off))
        };
        *p = match k {
            3 | 6 | 9 => iid(rng, dist.spine_sigma),
            12 | 15 => iid(rng, dist.neck_sigma),
            4 | 5 => hinge(rng, Vector3::x()),
            18 => hinge(rng, -Vector3::y()),
            19 => hinge(rng, Vector3::y()),
            _ => iid(rng, dist.sigma),
        };
    }
    pose
}

/// Random shape coefficients, each N(0, sigma^2).
pub fn sample_beta<R: Rng + ?Sized>(rng: &mut R, coefficients: usize, sigma: f64) -> Vec<f64> {
    (0..coefficients).map(|_| normal(rng, sigma)).collect()
}

/// Everything a solver is given about a posed person, derived exactly from a pose and a rest
/// skeleton (the HybrIK Table 3 protocol: ground-truth joints by FK, true twist).
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// The 24 local rotations.
    pub local: Vec<Matrix3<f64>>,
    /// Posed joints, root-relative (29 rows when the rest has 29, else 24).
    pub joints: Vec<Vector3<f64>>,
    /// True twist (cos, sin) of joints 1..23 about their rest bone to the HybrIK-29 child.
    pub twist: Vec<[f64; 2]>,
    /// True local rotations of [10, 11, 15, 22, 23] as quaternions (w, x, y, z).
    pub leaf_rotations: Vec<Vector4<f64>>,
}

/// Pose the rest skeleton (24 or 29 rows, absolute) with 24 local axis-angle vectors.
pub fn ground_truth(rest: &[Vector3<f64>], pose: &[Vector3<f64>]) -> GroundTruth {
    let local: Vec<Matrix3<f64>> = pose.iter().map(axis_angle_to_matrix).collect();
    let mut all = local.clone();
    all.resize(rest.len(), Matrix3::identity());
    let (_, posed) = forward_kinematics(&all, rest, &HYBRIK29_PARENTS[..rest.len()]);
    let joints = posed.iter().map(|p| p - posed[0]).collect();
    // The twist about the bone to the 29-joint child; leaf parents need the leaves, which a
    // 24-row rest lacks: their twist is then unused anyway (rotations come from quaternions).
    let twist = (1..SMPL_JOINTS)
        .map(|k| {
            let c = HYBRIK29_CHILDREN[k] as usize;
            let bone = rest.get(c).map_or_else(Vector3::zeros, |rc| rc - rest[k]);
            match crate::geometry::twist_axis(&bone) {
                Some(u) => {
                    let phi = twist_angle(&local[k], &u);
                    [phi.cos(), phi.sin()]
                }
                None => [1.0, 0.0],
            }
        })
        .collect();
    let leaf_rotations = LEAF_ROTATION_JOINTS
        .iter()
        .map(|&j| matrix_to_quat(&local[j]))
        .collect();
    GroundTruth {
        local,
        joints,
        twist,
        leaf_rotations,
    }
}

/// Add uniform noise in [-amplitude, amplitude] to every coordinate of every non-root joint (the
/// Table 3 jitter; the root stays at the origin, as for root-relative network output, so the mean
/// input error over 24 joints is about 0.92 amplitude).
pub fn jitter<R: Rng + ?Sized>(
    rng: &mut R,
    joints: &[Vector3<f64>],
    amplitude: f64,
) -> Vec<Vector3<f64>> {
    let root = joints.first().copied().unwrap_or_else(Vector3::zeros);
    joints
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let p = p - root;
            if amplitude > 0.0 && j > 0 {
                p + Vector3::from_fn(|_, _| rng.random_range(-amplitude..=amplitude))
            } else {
                p
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn seeded_and_limited() {
        let d = PoseDistribution::default();
        let a = sample_pose(&mut StdRng::seed_from_u64(7), &d);
        let b = sample_pose(&mut StdRng::seed_from_u64(7), &d);
        assert_eq!(a, b);
        let mut rng = StdRng::seed_from_u64(1);
        let mut knee_flex = 0.0;
        for _ in 0..200 {
            let p = sample_pose(&mut rng, &d);
            // Knees and elbows bend one way only.
            assert!(p[4].x >= 0.0 && p[5].x >= 0.0);
            assert!(p[18].y <= 0.0 && p[19].y >= 0.0);
            assert!(p[4].norm() < 2.6);
            knee_flex += p[4].x;
            assert!(p.iter().all(|v| v.iter().all(|x| x.is_finite())));
        }
        assert!(knee_flex / 200.0 > 0.4, "flexion-biased");
    }

    #[test]
    fn ground_truth_twist_matches_rotation() {
        let rest = crate::fixtures::hand_skeleton();
        let pose = sample_pose(&mut StdRng::seed_from_u64(3), &PoseDistribution::default());
        let gt = ground_truth(&rest, &pose);
        assert_eq!(gt.joints.len(), 29);
        assert_eq!(gt.twist.len(), 23);
        assert_eq!(gt.joints[0], Vector3::zeros());
        for t in &gt.twist {
            assert!((t[0] * t[0] + t[1] * t[1] - 1.0).abs() < 1e-12);
        }
    }
}
