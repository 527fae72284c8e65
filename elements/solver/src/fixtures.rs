//! A hand-built SMPL-like rest skeleton and a random linear joint-shape basis, for tests, property
//! tests and the benchmark until the real body model is wired in.
//!
//! T-pose, metres, y up, x to the subject's left, z forward; SMPL-24 joint order then the five
//! HybrIK leaves (head top, left/right middle fingertip, left/right big toe).

use nalgebra::Vector3;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};

use crate::JointShapeBasis;

/// The 29 rest joints of the hand skeleton.
pub fn hand_skeleton() -> Vec<Vector3<f64>> {
    let v = Vector3::new;
    vec![
        v(0.0, 0.0, 0.0),      // 0 pelvis
        v(0.09, -0.09, 0.0),   // 1 left hip
        v(-0.09, -0.09, 0.0),  // 2 right hip
        v(0.0, 0.11, 0.0),     // 3 spine1
        v(0.1, -0.48, 0.0),    // 4 left knee
        v(-0.1, -0.48, 0.0),   // 5 right knee
        v(0.0, 0.24, 0.0),     // 6 spine2
        v(0.1, -0.88, 0.0),    // 7 left ankle
        v(-0.1, -0.88, 0.0),   // 8 right ankle
        v(0.0, 0.30, 0.0),     // 9 spine3
        v(0.11, -0.93, 0.12),  // 10 left foot
        v(-0.11, -0.93, 0.12), // 11 right foot
        v(0.0, 0.52, 0.0),     // 12 neck
        v(0.08, 0.42, 0.0),    // 13 left collar
        v(-0.08, 0.42, 0.0),   // 14 right collar
        v(0.0, 0.6, 0.02),     // 15 head
        v(0.18, 0.44, 0.0),    // 16 left shoulder
        v(-0.18, 0.44, 0.0),   // 17 right shoulder
        v(0.44, 0.44, 0.0),    // 18 left elbow
        v(-0.44, 0.44, 0.0),   // 19 right elbow
        v(0.70, 0.44, 0.0),    // 20 left wrist
        v(-0.70, 0.44, 0.0),   // 21 right wrist
        v(0.78, 0.44, 0.0),    // 22 left hand
        v(-0.78, 0.44, 0.0),   // 23 right hand
        v(0.0, 0.78, 0.02),    // 24 head top
        v(0.86, 0.44, 0.0),    // 25 left middle fingertip
        v(-0.86, 0.44, 0.0),   // 26 right middle fingertip
        v(0.12, -0.95, 0.2),   // 27 left big toe
        v(-0.12, -0.95, 0.2),  // 28 right big toe
    ]
}

/// A random shape basis around the hand skeleton with `coefficients` directions: the first
/// scales the whole skeleton by 4 % per unit beta (height), the others move each joint by
/// N(0, 1 cm) per coordinate per unit beta. Deterministic for a seed.
pub fn random_shape_basis(coefficients: usize, seed: u64) -> JointShapeBasis {
    let template = hand_skeleton();
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 0.01).expect("valid sigma");
    let dirs = (0..coefficients)
        .map(|l| {
            if l == 0 {
                template.iter().map(|j| j * 0.04).collect()
            } else {
                template
                    .iter()
                    .map(|_| {
                        Vector3::new(
                            normal.sample(&mut rng),
                            normal.sample(&mut rng),
                            normal.sample(&mut rng),
                        )
                    })
                    .collect()
            }
        })
        .collect();
    JointShapeBasis { template, dirs }
}

/// 33 anchor points for fitting tests and the fit benchmark, as many as BlazePose's landmarks:
/// the 24 joints and surface vertices that observe twist (two per hand off the wrist axis,
/// heel and toe of each foot, nose and ears), picked as the rest vertices nearest to offsets
/// from the rest joints.
pub fn fit_anchors(m: &ikol_body::BodyModel) -> Vec<ikol_body::Anchor> {
    use ikol_body::Anchor;
    let (Ok(v), Ok(j)) = (m.shaped_vertices(&[]), m.rest_joints(&[])) else {
        return (0..24).map(Anchor::Joint).collect();
    };
    let nearest = |t: Vector3<f64>| {
        let d = |i: usize| {
            (Vector3::new(v[3 * i].into(), v[3 * i + 1].into(), v[3 * i + 2].into()) - t).norm()
        };
        (0..v.len() / 3)
            .min_by(|&a, &b| d(a).total_cmp(&d(b)))
            .unwrap_or(0)
    };
    let mut a: Vec<Anchor> = (0..24).map(Anchor::Joint).collect();
    for (wrist, side) in [(20usize, 1.0), (21, -1.0)] {
        a.push(Anchor::Vertex(nearest(
            j[wrist] + Vector3::new(side * 0.09, 0.0, 0.03),
        )));
        a.push(Anchor::Vertex(nearest(
            j[wrist] + Vector3::new(side * 0.08, 0.0, -0.03),
        )));
    }
    for ankle in [7usize, 8] {
        a.push(Anchor::Vertex(nearest(
            j[ankle] + Vector3::new(0.0, -0.06, -0.06),
        )));
        a.push(Anchor::Vertex(nearest(
            j[ankle] + Vector3::new(0.0, -0.07, 0.15),
        )));
    }
    a.push(Anchor::Vertex(nearest(
        j[15] + Vector3::new(0.0, 0.0, 0.12),
    )));
    a.push(Anchor::Vertex(nearest(
        j[15] + Vector3::new(0.08, 0.0, 0.0),
    )));
    a.push(Anchor::Vertex(nearest(
        j[15] + Vector3::new(-0.08, 0.0, 0.0),
    )));
    a
}
