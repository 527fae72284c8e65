//! BlazePose's 33 body landmarks to what the IK solver needs: SMPL-24 joint positions, shape
//! coefficients, and per-joint confidences (issue 7, item 4).
//!
//! **Where the landmarks sit on a body model.** Each BlazePose landmark is anchored on the body
//! model ([`Anchor`]): the limb landmarks (shoulders, elbows, wrists, hips, knees, ankles) at the
//! SMPL joints of the same name — BlazePose places them at joint centres; its hips are an
//! approximation of SMPL's hip joints — and the face, hand and foot landmarks at surface vertices
//! picked geometrically on the rest mesh (nose tip, eyes and mouth corners on the face front,
//! ears at the widest points of the head, finger knuckles and thumb tip, heel and toe tip).
//!
//! **The mapping.** Each SMPL joint is an affine combination of a few landmarks (its *support*:
//! e.g. the spine from hips and shoulders, the head from ears, eyes, nose and mouth):
//! `J_j = H + sum_k a_jk (L_k - H)` with `H` the landmark hip centre. The coefficients are fitted
//! by least squares over random poses and shapes of the body model (joint-limit-aware sampling of
//! ikol-solver), the landmarks taken from the posed mesh by their anchors. Joints that coincide
//! with a landmark are copied. [`LandmarkMap::held_out_mpjpe`] measures the fit on other poses.
//!
//! **Shape.** Rest joints are linear in beta ([`JointShapeBasis`]), bone lengths are not: beta is
//! fitted to the limb and torso bone lengths of the mapped joints by a few Gauss-Newton steps
//! with a ridge prior ([`fit_beta`]).

pub use ikol_body::Anchor;
use ikol_body::nalgebra::{DMatrix, DVector, Matrix3, Vector3};
use ikol_body::{BodyModel, JointShapeBasis, Posed};
use ikol_solver::sampling::{PoseDistribution, sample_beta, sample_pose};
use ikol_types::joints::SMPL_JOINTS;
use ikol_types::rotation::axis_angle_to_matrix;
use rand::SeedableRng;

/// BlazePose's 33 body landmarks (names and order: [`crate::blazepose::landmarks::LANDMARK_NAMES`]).
pub const LANDMARKS: usize = crate::blazepose::landmarks::BODY_LANDMARKS;

const NOSE: usize = 0;
const L_HIP: usize = 23;
const R_HIP: usize = 24;

/// Landmarks that coincide with an SMPL joint: (landmark, SMPL joint).
const AT_JOINTS: [(usize, usize); 12] = [
    (11, 16),
    (12, 17),
    (13, 18),
    (14, 19),
    (15, 20),
    (16, 21),
    (23, 1),
    (24, 2),
    (25, 4),
    (26, 5),
    (27, 7),
    (28, 8),
];

/// The landmarks each SMPL joint is fitted from; joints absent here are copied from their
/// landmark ([`AT_JOINTS`]).
fn support(joint: usize) -> &'static [usize] {
    const TORSO: &[usize] = &[11, 12, 23, 24];
    match joint {
        0 | 3 | 6 | 9 => TORSO,
        12 => &[11, 12, 7, 8, 0, 9, 10],
        13 | 14 => &[11, 12, 23, 24, 7, 8],
        15 => &[7, 8, 0, 2, 5, 9, 10, 11, 12],
        22 => &[15, 17, 19, 21],
        23 => &[16, 18, 20, 22],
        10 => &[27, 29, 31],
        11 => &[28, 30, 32],
        _ => &[],
    }
}

/// The fitted landmark-to-SMPL map for one body model.
#[derive(Debug, Clone)]
pub struct LandmarkMap {
    anchors: [Anchor; LANDMARKS],
    /// Per SMPL joint: (landmark, coefficient) of `J = H + sum a (L - H)`.
    rows: Vec<Vec<(usize, f64)>>,
}

fn vec3(v: &[f32], i: usize) -> Vector3<f64> {
    Vector3::new(v[3 * i].into(), v[3 * i + 1].into(), v[3 * i + 2].into())
}

/// Picks the landmark anchors on the rest mesh (mean shape, T-pose, model frame: y up, +x the
/// subject's left, +z the front). Right-side landmarks mirror the left ones in x.
pub fn anchors(model: &BodyModel) -> Result<[Anchor; LANDMARKS], String> {
    let nb = model.num_betas;
    let v = model
        .shaped_vertices(&vec![0.0; nb])
        .map_err(|e| e.to_string())?;
    let j = model
        .rest_joints(&vec![0.0; nb])
        .map_err(|e| e.to_string())?;
    let n = v.len() / 3;
    let verts: Vec<Vector3<f64>> = (0..n).map(|i| vec3(&v, i)).collect();
    let best = |score: &dyn Fn(&Vector3<f64>) -> Option<f64>| -> Result<usize, String> {
        verts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| score(p).map(|s| (i, s)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
            .ok_or_else(|| "no vertex matches a landmark rule".to_owned())
    };
    let nearest = |t: Vector3<f64>| best(&|p: &Vector3<f64>| Some(-(p - t).norm()));
    let (neck, head) = (j[12], j[15]);
    // Nose tip: the most forward vertex on the midline of the head.
    let nose = best(&|p| (p.x.abs() < 0.01 && p.y > neck.y + 0.04).then_some(p.z))?;
    let ny = verts[nose].y;
    // Face front at a given height and lateral offset.
    let front = |x: f64, y: f64| {
        best(&move |p: &Vector3<f64>| {
            ((p.x - x).abs() < 0.006 && (p.y - y).abs() < 0.012 && p.y > neck.y + 0.04)
                .then_some(p.z)
        })
    };
    // Ears: the widest points of the head at eye level (the head above the neck).
    let ear = |side: f64| {
        best(&move |p: &Vector3<f64>| {
            (p.y > neck.y + 0.06 && (p.y - ny).abs() < 0.05 && (p.z - head.z).abs() < 0.08)
                .then_some(side * p.x)
        })
    };
    let mut a = [Anchor::Joint(0); LANDMARKS];
    a[NOSE] = Anchor::Vertex(nose);
    let eye_y = ny + 0.035;
    for (side, base) in [(1.0, 1usize), (-1.0, 4usize)] {
        a[base] = Anchor::Vertex(front(side * 0.017, eye_y)?);
        a[base + 1] = Anchor::Vertex(front(side * 0.032, eye_y)?);
        a[base + 2] = Anchor::Vertex(front(side * 0.045, eye_y)?);
    }
    a[7] = Anchor::Vertex(ear(1.0)?);
    a[8] = Anchor::Vertex(ear(-1.0)?);
    a[9] = Anchor::Vertex(front(0.025, ny - 0.045)?);
    a[10] = Anchor::Vertex(front(-0.025, ny - 0.045)?);
    for (lm, jt) in AT_JOINTS {
        a[lm] = Anchor::Joint(jt);
    }
    // Hands, T-pose with palms down: knuckles of the index (front, +z) and pinky (back), and
    // the thumb tip (the most forward point of the hand).
    for (side, wrist, pinky, index, thumb) in [
        (1.0, 20usize, 17usize, 19usize, 21usize),
        (-1.0, 21, 18, 20, 22),
    ] {
        let w = j[wrist];
        let along = Vector3::new(side, 0.0, 0.0);
        a[index] = Anchor::Vertex(nearest(w + 0.085 * along + Vector3::new(0.0, 0.0, 0.025))?);
        a[pinky] = Anchor::Vertex(nearest(w + 0.075 * along + Vector3::new(0.0, 0.0, -0.03))?);
        a[thumb] = Anchor::Vertex(best(&move |p: &Vector3<f64>| {
            (side * (p.x - w.x) > 0.02 && side * (p.x - w.x) < 0.15).then_some(p.z)
        })?);
    }
    // Feet: heel (the back-most point below the ankle) and toe tip (the front-most).
    for (ankle, heel, toe) in [(7usize, 29usize, 31usize), (8, 30, 32)] {
        let k = j[ankle];
        let foot = move |p: &Vector3<f64>| (p.x - k.x).abs() < 0.04 && p.y < k.y;
        a[heel] = Anchor::Vertex(best(&move |p: &Vector3<f64>| foot(p).then_some(-p.z))?);
        a[toe] = Anchor::Vertex(best(&move |p: &Vector3<f64>| foot(p).then_some(p.z))?);
    }
    Ok(a)
}

/// The landmark positions on a posed body (its vertices and joints).
pub fn landmarks_on(anchors: &[Anchor; LANDMARKS], posed: &Posed) -> Vec<Vector3<f64>> {
    anchors.iter().map(|a| a.on(posed)).collect()
}

fn hip_centre<T: Copy + std::ops::Add<Output = T> + std::ops::Mul<f64, Output = T>>(l: &[T]) -> T {
    (l[L_HIP] + l[R_HIP]) * 0.5
}

/// Landmarks and SMPL joints of one posed body.
type Sample = (Vec<Vector3<f64>>, Vec<Vector3<f64>>);

/// One posed sample: (landmarks, SMPL joints).
fn sample(
    model: &BodyModel,
    anchors: &[Anchor; LANDMARKS],
    rng: &mut rand::rngs::StdRng,
) -> Result<Sample, String> {
    let pose = sample_pose(rng, &PoseDistribution::default());
    let beta = sample_beta(rng, model.num_betas, 1.0);
    let rot: Vec<Matrix3<f64>> = pose.iter().map(axis_angle_to_matrix).collect();
    let posed = model.forward(&beta, &rot).map_err(|e| e.to_string())?;
    Ok((landmarks_on(anchors, &posed), posed.joints.clone()))
}

impl LandmarkMap {
    /// Fits the map on `poses` random poses and shapes of `model` (deterministic for a seed).
    pub fn fit(model: &BodyModel, poses: usize, seed: u64) -> Result<Self, String> {
        let anchors = anchors(model)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let train = (0..poses)
            .map(|_| sample(model, &anchors, &mut rng))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows = vec![Vec::new(); SMPL_JOINTS];
        for (lm, jt) in AT_JOINTS {
            rows[jt] = vec![(lm, 1.0)];
        }
        for (jt, row) in rows.iter_mut().enumerate() {
            let sup = support(jt);
            if sup.is_empty() {
                continue;
            }
            // Least squares over x, y, z of every sample: (L_k - H) a = J - H, with a tiny ridge.
            let m = sup.len();
            let mut ata = DMatrix::<f64>::identity(m, m) * 1e-9;
            let mut atb = DVector::<f64>::zeros(m);
            for (l, joints) in &train {
                let h = hip_centre(l);
                let y = joints[jt] - h;
                for c in 0..3 {
                    let x = DVector::from_iterator(m, sup.iter().map(|&k| (l[k] - h)[c]));
                    ata += &x * x.transpose();
                    atb += &x * y[c];
                }
            }
            let a = ata
                .cholesky()
                .ok_or_else(|| format!("landmark fit for SMPL joint {jt} is singular"))?
                .solve(&atb);
            *row = sup.iter().copied().zip(a.iter().copied()).collect();
        }
        Ok(Self { anchors, rows })
    }

    /// Mean joint error (metres) of the map on `poses` random poses and shapes of `model` drawn
    /// with `seed` (use another seed than the fit's for a held-out figure).
    pub fn held_out_mpjpe(
        &self,
        model: &BodyModel,
        poses: usize,
        seed: u64,
    ) -> Result<f64, String> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut err = 0.0;
        for _ in 0..poses {
            let (l, joints) = sample(model, &self.anchors, &mut rng)?;
            err += self
                .joints(&l)
                .iter()
                .zip(&joints)
                .map(|(a, b)| (a - b).norm())
                .sum::<f64>()
                / SMPL_JOINTS as f64;
        }
        Ok(err / poses.max(1) as f64)
    }

    pub fn anchors(&self) -> &[Anchor; LANDMARKS] {
        &self.anchors
    }

    /// The 24 SMPL joints from 33 landmarks (any frame, e.g. BlazePose's world landmarks).
    pub fn joints(&self, landmarks: &[Vector3<f64>]) -> Vec<Vector3<f64>> {
        let h = hip_centre(landmarks);
        self.rows
            .iter()
            .map(|row| {
                h + row
                    .iter()
                    .map(|&(k, a)| (landmarks[k] - h) * a)
                    .sum::<Vector3<f64>>()
            })
            .collect()
    }

    /// The same affine combinations of 2D landmarks (pixels): the image of the mapped joints up
    /// to perspective effects across the support (centimetres for a body metres away).
    pub fn joints_2d(&self, landmarks: &[[f64; 2]]) -> Vec<[f64; 2]> {
        let l: Vec<Vector3<f64>> = landmarks
            .iter()
            .map(|p| Vector3::new(p[0], p[1], 0.0))
            .collect();
        self.joints(&l).iter().map(|p| [p.x, p.y]).collect()
    }

    /// Per SMPL joint, the lowest visibility among the landmarks it is made from.
    pub fn confidences(&self, visibility: &[f64]) -> Vec<f64> {
        self.rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&(k, _)| visibility.get(k).copied().unwrap_or(0.0))
                    .fold(1.0, f64::min)
            })
            .collect()
    }
}

/// Bones whose lengths fix the shape: (parent, child) SMPL joints — legs, arms, hip and
/// shoulder widths, and the trunk.
const BONES: [(usize, usize); 11] = [
    (1, 4),
    (4, 7),
    (2, 5),
    (5, 8),
    (16, 18),
    (18, 20),
    (17, 19),
    (19, 21),
    (1, 2),
    (16, 17),
    (0, 12),
];

/// Shape coefficients whose rest skeleton has the bone lengths of `joints` (24 SMPL joints,
/// metres): Gauss-Newton on `sum_b (|J_c - J_p|(beta) - len_b)^2 + ridge |beta|^2`, from 0.
pub fn fit_beta(basis: &JointShapeBasis, joints: &[Vector3<f64>], ridge: f64) -> Vec<f64> {
    let nb = basis.coefficients();
    let target: Vec<f64> = BONES
        .iter()
        .map(|&(p, c)| (joints[c] - joints[p]).norm())
        .collect();
    let mut beta = vec![0.0; nb];
    for _ in 0..10 {
        let rest = basis.rest_joints(&beta);
        let mut jac = DMatrix::<f64>::zeros(BONES.len() + nb, nb);
        let mut r = DVector::<f64>::zeros(BONES.len() + nb);
        for (b, &(p, c)) in BONES.iter().enumerate() {
            let d = rest[c] - rest[p];
            let len = d.norm().max(1e-9);
            r[b] = len - target[b];
            for l in 0..nb {
                // d|d|/d beta_l = (d / |d|) . (dir_c - dir_p)
                jac[(b, l)] = d.dot(&(basis.dirs[l][c] - basis.dirs[l][p])) / len;
            }
        }
        let s = ridge.sqrt();
        for l in 0..nb {
            jac[(BONES.len() + l, l)] = s;
            r[BONES.len() + l] = s * beta[l];
        }
        let jt = jac.transpose();
        let Some(step) = (&jt * &jac).cholesky().map(|c| c.solve(&(&jt * &r))) else {
            break;
        };
        for l in 0..nb {
            beta[l] -= step[l];
        }
    }
    beta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_where_their_names_say() {
        let model = BodyModel::embedded_default().unwrap();
        let a = anchors(&model).unwrap();
        let v = model.shaped_vertices(&[0.0; 10]).unwrap();
        let j = model.rest_joints(&[0.0; 10]).unwrap();
        let pos = |k: usize| match a[k] {
            Anchor::Joint(i) => j[i],
            Anchor::Vertex(i) => vec3(&v, i),
        };
        // Face landmarks lie above the neck and in front of the head joint; left is +x.
        for k in 0..11 {
            assert!(
                pos(k).y > j[12].y && pos(k).z > j[15].z - 0.05,
                "{}",
                crate::blazepose::landmarks::LANDMARK_NAMES[k]
            );
        }
        assert!(pos(7).x > 0.05 && pos(8).x < -0.05, "ears at the sides");
        assert!(pos(2).x > 0.0 && pos(5).x < 0.0 && pos(2).y > pos(NOSE).y);
        // Hands beyond the wrists, feet below the ankles; toes in front of heels.
        assert!(pos(19).x > j[20].x && pos(20).x < j[21].x);
        assert!(pos(31).z > pos(29).z + 0.1 && pos(31).y < j[7].y);
    }

    #[test]
    fn the_map_recovers_smpl_joints_from_model_landmarks() {
        let model = BodyModel::embedded_default().unwrap();
        let map = LandmarkMap::fit(&model, 200, 1).unwrap();
        let held_out = map.held_out_mpjpe(&model, 200, 2).unwrap();
        // Copied joints are exact; the fitted ones (spine, neck, collars, head, hands, feet) are
        // close: the mean over all 24 joints of held-out poses stays within 2 cm.
        eprintln!("landmark map held-out MPJPE: {:.1} mm", 1e3 * held_out);
        assert!(held_out < 0.02, "{held_out} m");
        // Affine: a translated set of landmarks gives translated joints.
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (l, _) = sample(&model, map.anchors(), &mut rng).unwrap();
        let t = Vector3::new(0.3, -1.0, 4.0);
        let moved: Vec<_> = l.iter().map(|p| p + t).collect();
        for (a, b) in map.joints(&l).iter().zip(map.joints(&moved)) {
            assert!((a + t - b).norm() < 1e-12);
        }
    }

    #[test]
    fn beta_from_bone_lengths() {
        let model = BodyModel::embedded_default().unwrap();
        let basis = model.joint_shape_basis(false).unwrap();
        let truth = [1.5, -0.8, 0.3, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0];
        let joints = basis.rest_joints(&truth);
        let beta = fit_beta(&basis, &joints, 1e-6);
        // The bone lengths are reproduced (the coefficients themselves need not be unique).
        let got = basis.rest_joints(&beta);
        for &(p, c) in &BONES {
            let (a, b) = ((got[c] - got[p]).norm(), (joints[c] - joints[p]).norm());
            assert!((a - b).abs() < 2e-3, "bone {p}-{c}: {a} vs {b}");
        }
        // Height follows beta0 (the first component is height in the default model).
        assert!((beta[0] - truth[0]).abs() < 0.3, "{beta:?}");
    }
}
