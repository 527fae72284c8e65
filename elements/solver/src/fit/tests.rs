use super::*;
use crate::sampling::{PoseDistribution, sample_beta, sample_pose};
use ikol_body::{Anchor, BodyModel};
use ikol_types::rotation::axis_angle_to_matrix;
use rand::{Rng, SeedableRng};

fn model() -> std::sync::Arc<BodyModel> {
    BodyModel::embedded_default().expect("embedded model")
}

fn anchors(m: &BodyModel) -> Vec<Anchor> {
    crate::fixtures::fit_anchors(m)
}

fn intrinsics() -> Intrinsics {
    Intrinsics {
        fx: 1200.0,
        fy: 1200.0,
        cx: 540.0,
        cy: 960.0,
    }
}

/// A random body 3.5 m in front of the camera, facing it (root rotated by pi about x: model y
/// up to camera y down).
fn random_state(rng: &mut rand::rngs::StdRng, nb: usize) -> BodyState {
    let pose = sample_pose(rng, &PoseDistribution::default());
    let flip = axis_angle_to_matrix(&Vector3::new(std::f64::consts::PI, 0.0, 0.0));
    let mut rotations: Vec<Matrix3<f64>> = pose.iter().map(axis_angle_to_matrix).collect();
    rotations[0] = flip * rotations[0];
    BodyState {
        rotations,
        translation: Vector3::new(
            rng.random_range(-0.3..0.3),
            rng.random_range(-0.2..0.2),
            3.5,
        ),
        beta: sample_beta(rng, nb, 1.0),
    }
}

#[test]
fn point_jacobians_match_finite_differences() {
    let m = model();
    let sm = SurfaceModel::new(&m, &anchors(&m)).expect("surface model");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let s = random_state(&mut rng, sm.betas());
    let posed = sm.pose(&s);
    let n = sm.parameters();
    let h = 1e-6;
    let mut pj = PointJacobian::default();
    let mut worst: f64 = 0.0;
    for i in 0..sm.len() {
        sm.point_jacobian(&posed, &s, i, &mut pj);
        let mut dense = vec![Vector3::zeros(); n];
        for (&c, d) in pj.cols.iter().zip(&pj.d) {
            dense[c] += d;
        }
        for (c, analytic) in dense.iter().enumerate() {
            let mut d = vec![0.0; n];
            d[c] = h;
            let plus = sm.pose(&s.step(&d)).points[i];
            d[c] = -h;
            let minus = sm.pose(&s.step(&d)).points[i];
            let fd = (plus - minus) / (2.0 * h);
            worst = worst.max((fd - analytic).norm() / (1.0 + fd.norm()));
        }
    }
    assert!(worst < 1e-6, "worst relative difference {worst}");
    // Joints through the joint Jacobian too (the temporal term uses it).
    for j in 0..SMPL_JOINTS {
        sm.joint_jacobian(&posed, j, &mut pj);
        for (&c, analytic) in pj.cols.iter().zip(&pj.d) {
            let mut d = vec![0.0; n];
            d[c] = h;
            let plus = sm.pose(&s.step(&d)).joints[j];
            d[c] = -h;
            let minus = sm.pose(&s.step(&d)).joints[j];
            let fd = (plus - minus) / (2.0 * h);
            assert!((fd - analytic).norm() < 1e-6, "joint {j} column {c}");
        }
    }
}

#[test]
fn surface_points_match_the_body_model() {
    // The fitter's skinned anchors equal ikol-body's LBS (default model: no pose blend shapes).
    let m = model();
    let a = anchors(&m);
    let sm = SurfaceModel::new(&m, &a).expect("surface model");
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let s = random_state(&mut rng, sm.betas());
    let posed = sm.pose(&s);
    let body = m.forward(&s.beta, &s.rotations).expect("forward");
    let root = body.joints[0];
    for (i, an) in a.iter().enumerate() {
        let want = an.on(&body) - root + s.translation;
        assert!((posed.points[i] - want).norm() < 1e-5, "anchor {i}");
    }
}

#[test]
fn right_jacobian_inverse_matches_finite_differences() {
    for phi in [
        Vector3::new(0.3, -0.2, 0.5),
        Vector3::new(1e-6, 0.0, 0.0),
        Vector3::new(2.0, 1.0, -1.5),
    ] {
        let r = axis_angle_to_matrix(&phi);
        let j = right_jacobian_inv(&phi);
        let h = 1e-6;
        for c in 0..3 {
            let mut d = Vector3::zeros();
            d[c] = h;
            let plus = matrix_to_axis_angle(&(r * axis_angle_to_matrix(&d)));
            let minus = matrix_to_axis_angle(&(r * axis_angle_to_matrix(&-d)));
            let fd = (plus - minus) / (2.0 * h);
            assert!((fd - j.column(c)).norm() < 1e-6, "{phi:?} column {c}");
        }
    }
}

/// Keypoints and 3D points of a body (exact, or with pixel noise).
fn observe(
    sm: &SurfaceModel,
    s: &BodyState,
    noise_px: f64,
    rng: &mut rand::rngs::StdRng,
) -> (Vec<Keypoint>, Vec<Point3>) {
    let posed = sm.pose(s);
    let k = intrinsics();
    let kps = posed
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let uv = k.project(p).expect("in front");
            let mut n = || {
                let g: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng);
                g * noise_px
            };
            Keypoint {
                point: i,
                uv: [uv[0] + n(), uv[1] + n()],
                weight: 1.0,
            }
        })
        .collect();
    let c = (posed.points[1] + posed.points[2]) / 2.0;
    let p3 = posed
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| Point3 {
            point: i,
            xyz: p - c,
            weight: 1.0,
        })
        .collect();
    (kps, p3)
}

#[test]
fn normal_equations_are_half_the_energy_gradient() {
    // Every term at once, each one active: keypoints (robust), 3D, prior, limits (a knee
    // hyper-extended), shape and track shape, acceleration.
    let m = model();
    let sm = SurfaceModel::new(&m, &anchors(&m)).expect("surface model");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let truth = random_state(&mut rng, sm.betas());
    let (kps, p3) = observe(&sm, &truth, 3.0, &mut rng);
    let mut s = random_state(&mut rng, sm.betas());
    s.translation = truth.translation + Vector3::new(0.05, -0.03, 0.2);
    s.rotations[4] = axis_angle_to_matrix(&Vector3::new(-0.3, 0.1, 0.0));
    let prior = random_state(&mut rng, sm.betas()).rotations;
    let hist: Vec<Vec<Vector3<f64>>> = (0..2)
        .map(|_| sm.pose(&random_state(&mut rng, sm.betas())).joints)
        .collect();
    let rot_hist: Vec<Vec<Matrix3<f64>>> = (0..2)
        .map(|_| random_state(&mut rng, sm.betas()).rotations)
        .collect();
    let track = vec![0.5; sm.betas()];
    let k = intrinsics();
    let input = FitInput {
        intrinsics: &k,
        keypoints: &kps,
        points_3d: &p3,
        centre: &[1, 2],
        pose_prior: Some(&prior),
        beta_track: Some(&track),
        translation_prior: Some(s.translation + Vector3::new(0.1, 0.2, -0.3)),
        history: &hist,
        rotation_history: &rot_hist,
    };
    // Also with the shape prior off (`fit-sigma-beta=0`), where its term is left out.
    for sigma_beta in [FitOptions::default().sigma_beta, 0.0] {
        let o = FitOptions {
            sigma_angular_accel: 0.1,
            sigma_beta,
            ..FitOptions::default()
        };
        let n = sm.parameters();
        let mut nm = Normal::new(n);
        energy_and_normal(&sm, &input, &s, &o, Some(&mut nm));
        let h = 1e-6;
        for c in 0..n {
            let mut d = vec![0.0; n];
            d[c] = h;
            let plus = energy_and_normal(&sm, &input, &s.step(&d), &o, None);
            d[c] = -h;
            let minus = energy_and_normal(&sm, &input, &s.step(&d), &o, None);
            let fd = (plus - minus) / (4.0 * h);
            assert!(
                (fd - nm.g[c]).abs() < 1e-4 * (1.0 + fd.abs()),
                "sigma_beta {sigma_beta}, parameter {c}: finite differences {fd}, analytic {}",
                nm.g[c]
            );
        }
    }
}

/// With both shape priors off (`fit-sigma-beta=0`, and no track shape) the shape is left to the
/// keypoints alone: the fit still converges to a finite body that matches them.
#[test]
fn a_fit_without_shape_priors_stays_finite() {
    let o = FitOptions {
        sigma_beta: 0.0,
        ..recovery_options()
    };
    let (pa, _) = recovery(2.0, 1, &o);
    assert!(pa < 0.02, "PA-MPJPE {pa} m");
}

/// PA-MPJPE (similarity Procrustes) of the 24 joints, metres.
fn pa_mpjpe(a: &[Vector3<f64>], b: &[Vector3<f64>]) -> f64 {
    let ca: Vector3<f64> = a.iter().sum::<Vector3<f64>>() / a.len() as f64;
    let cb: Vector3<f64> = b.iter().sum::<Vector3<f64>>() / b.len() as f64;
    let mut m = Matrix3::zeros();
    let mut va = 0.0;
    for (p, q) in a.iter().zip(b) {
        m += (q - cb) * (p - ca).transpose();
        va += (p - ca).norm_squared();
    }
    let svd = m.svd(true, true);
    let (u, vt) = (svd.u.expect("u"), svd.v_t.expect("v"));
    let mut d = Matrix3::identity();
    if (u * vt).determinant() < 0.0 {
        d[(2, 2)] = -1.0;
    }
    let r = u * d * vt;
    let scale = (svd.singular_values.component_mul(&d.diagonal())).sum() / va;
    a.iter()
        .zip(b)
        .map(|(p, q)| (scale * r * (p - ca) + cb - q).norm())
        .sum::<f64>()
        / a.len() as f64
}

/// The options [`recovery`] fits with by default.
fn recovery_options() -> FitOptions {
    FitOptions {
        iterations: 30,
        ..FitOptions::default()
    }
}

/// Fits bodies from a perturbed start (as an IK solution would give) with options `o` and
/// returns the mean PA-MPJPE and root-relative MPJPE over `n` random bodies (every fitted joint
/// must be finite).
fn recovery(noise_px: f64, n: usize, o: &FitOptions) -> (f64, f64) {
    let m = model();
    let sm = SurfaceModel::new(&m, &anchors(&m)).expect("surface model");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let k = intrinsics();
    let (mut pa, mut mp) = (0.0, 0.0);
    for _ in 0..n {
        let truth = random_state(&mut rng, sm.betas());
        let (kps, p3) = observe(&sm, &truth, noise_px, &mut rng);
        let mut start = truth.clone();
        for r in start.rotations.iter_mut().skip(1) {
            let w = Vector3::from_fn(|_, _| rng.random_range(-0.15..0.15));
            *r *= axis_angle_to_matrix(&w);
        }
        start.translation += Vector3::new(0.1, -0.05, 0.3);
        start.beta = vec![0.0; sm.betas()];
        let input = FitInput {
            intrinsics: &k,
            keypoints: &kps,
            points_3d: &p3,
            centre: &[1, 2],
            pose_prior: Some(&start.rotations),
            beta_track: None,
            translation_prior: None,
            history: &[],
            rotation_history: &[],
        };
        let r = fit(&sm, &input, &start, o).expect("fit");
        assert!(r.joints.iter().all(|j| j.iter().all(|v| v.is_finite())));
        let want = sm.pose(&truth).joints;
        pa += pa_mpjpe(&r.joints, &want);
        mp += r
            .joints
            .iter()
            .zip(&want)
            .map(|(a, b)| ((a - r.joints[0]) - (b - want[0])).norm())
            .sum::<f64>()
            / 24.0;
    }
    (pa / n as f64, mp / n as f64)
}

#[test]
fn fit_recovers_a_known_body() {
    let (pa0, mp0) = recovery(0.0, 6, &recovery_options());
    eprintln!(
        "fit, 0 px: PA-MPJPE {:.1} mm, MPJPE {:.1} mm",
        pa0 * 1e3,
        mp0 * 1e3
    );
    assert!(pa0 < 0.010, "PA-MPJPE {pa0} m at 0 px");
    let (pa2, _) = recovery(2.0, 6, &recovery_options());
    let (pa5, _) = recovery(5.0, 6, &recovery_options());
    eprintln!(
        "fit, 2 / 5 px: PA-MPJPE {:.1} / {:.1} mm",
        pa2 * 1e3,
        pa5 * 1e3
    );
    // Graceful: a few pixels of noise cost millimetres, not a collapse.
    assert!(pa2 < 0.02 && pa5 < 0.035, "{pa2} {pa5}");
}

#[test]
fn joint_limits_stop_a_hyperextended_knee() {
    // Only the limit and a weak prior act: a knee bent backwards returns to its range.
    let m = model();
    let sm = SurfaceModel::new(&m, &anchors(&m)).expect("surface model");
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut s = random_state(&mut rng, sm.betas());
    s.rotations[4] = axis_angle_to_matrix(&Vector3::new(-0.6, 0.0, 0.0));
    let (kps, _) = observe(&sm, &s, 0.0, &mut rng);
    let k = intrinsics();
    let input = FitInput {
        intrinsics: &k,
        keypoints: &kps,
        points_3d: &[],
        centre: &[],
        pose_prior: None,
        beta_track: None,
        translation_prior: None,
        history: &[],
        rotation_history: &[],
    };
    let r = fit(&sm, &input, &s, &FitOptions::default()).expect("fit");
    let a = matrix_to_axis_angle(&r.state.rotations[4]);
    assert!(a.x > -0.087 - 0.03, "knee flexion {} rad", a.x);
}

#[test]
fn bad_keypoints_are_refused() {
    let m = model();
    let sm = SurfaceModel::new(&m, &anchors(&m)).expect("surface model");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let s = random_state(&mut rng, sm.betas());
    let (mut kps, _) = observe(&sm, &s, 0.0, &mut rng);
    let k = intrinsics();
    let run = |kps: &[Keypoint]| {
        let input = FitInput {
            intrinsics: &k,
            keypoints: kps,
            points_3d: &[],
            centre: &[],
            pose_prior: None,
            beta_track: None,
            translation_prior: None,
            history: &[],
            rotation_history: &[],
        };
        fit(&sm, &input, &s, &FitOptions::default())
    };
    kps[3].uv[0] = f64::NAN;
    assert!(matches!(run(&kps), Err(SolverError::NothingToFit(_))));
    kps[3].uv[0] = f64::INFINITY;
    assert!(matches!(run(&kps), Err(SolverError::NothingToFit(_))));
    let zero: Vec<Keypoint> = kps.iter().map(|k| Keypoint { weight: 0.0, ..*k }).collect();
    assert!(matches!(run(&zero), Err(SolverError::NothingToFit(_))));
    let thin: Vec<Keypoint> = kps
        .iter()
        .map(|k| Keypoint {
            uv: [500.0 + 1e-3 * k.point as f64, 900.0],
            ..*k
        })
        .collect();
    assert!(matches!(run(&thin), Err(SolverError::NothingToFit(_))));
    let off = [Keypoint {
        point: 999,
        uv: [0.0; 2],
        weight: 1.0,
    }];
    assert!(run(&off).is_err());
}
