//! Time of the model fitter (`ikol_solver::fit`, `ikolsolver method=fit`) per person and frame,
//! on one thread, against the IKOL layer (5 iterations, analytic start) in the same run.
//!
//! ```text
//! cargo run --release -p ikol-solver --bin fit-bench [-- --frames N]
//! ```
//!
//! Workload as in the element with BlazePose: 33 anchor points (24 joints and 9 surface
//! vertices; `fixtures::fit_anchors`), a keypoint and a 3D point on each, the pose prior, the
//! root prior, the shape and track-shape terms, the acceleration term over the last two frames,
//! warm-started from the previous frame of a smoothly moving body (a random pose blended into
//! another over the sequence), keypoints with 3 px of noise. Also the cold start (from a
//! perturbed IK-like body, no history) of the first frame of each sequence.

use std::time::Instant;

use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_solver::fit::{BodyState, FitInput, FitOptions, Keypoint, Point3, SurfaceModel, fit};
use ikol_solver::sampling::{PoseDistribution, sample_beta, sample_pose};
use ikol_solver::{AnalyticOptions, IkInput, IkolInit, IkolOptions, Rest, fixtures, ikol};
use ikol_types::Intrinsics;
use ikol_types::rotation::axis_angle_to_matrix;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

fn main() {
    let mut frames = 300usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--frames", Some(n)) => frames = n,
            _ => {
                eprintln!("usage: fit-bench [--frames N]");
                std::process::exit(2)
            }
        }
    }
    let model = match BodyModel::embedded_default() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("fit-bench: {e}");
            std::process::exit(1)
        }
    };
    let sm = match SurfaceModel::new(&model, &fixtures::fit_anchors(&model)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fit-bench: {e}");
            std::process::exit(1)
        }
    };
    let basis = sm.basis().clone();
    let k = Intrinsics {
        fx: 1500.0,
        fy: 1500.0,
        cx: 540.0,
        cy: 960.0,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let flip = axis_angle_to_matrix(&Vector3::new(std::f64::consts::PI, 0.0, 0.0));
    let (a, b) = (
        sample_pose(&mut rng, &PoseDistribution::default()),
        sample_pose(&mut rng, &PoseDistribution::default()),
    );
    let beta = sample_beta(&mut rng, sm.betas(), 1.0);
    let body = |t: f64| {
        let mut rotations: Vec<Matrix3<f64>> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| axis_angle_to_matrix(&(x * (1.0 - t) + y * t)))
            .collect();
        rotations[0] = flip * rotations[0];
        BodyState {
            rotations,
            translation: Vector3::new(0.1 * t, -0.2, 3.2 + 0.3 * t),
            beta: beta.clone(),
        }
    };
    let o = FitOptions::default();
    let (mut warm, mut cold, mut ikol_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut history: Vec<Vec<Vector3<f64>>> = Vec::new();
    let mut rot_history: Vec<Vec<Matrix3<f64>>> = Vec::new();
    let mut state: Option<BodyState> = None;
    let mut err = 0.0;
    for f in 0..frames {
        let truth = body(f as f64 / frames as f64);
        let posed = sm.pose(&truth);
        let kps: Vec<Keypoint> = posed
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let uv = k.project(p)?;
                let mut n = || {
                    3.0 * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut rng)
                };
                Some(Keypoint {
                    point: i,
                    uv: [uv[0] + n(), uv[1] + n()],
                    weight: 1.0,
                })
            })
            .collect();
        let c = (posed.points[1] + posed.points[2]) / 2.0;
        let p3: Vec<Point3> = posed
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| Point3 {
                point: i,
                xyz: p - c + Vector3::from_fn(|_, _| rng.random_range(-0.03..0.03)),
                weight: 1.0,
            })
            .collect();
        // The IK layer on the (noisy) 3D joints: the reference time, and the prior.
        let targets: Vec<Vector3<f64>> = p3[..24].iter().map(|p| p.xyz - p3[0].xyz).collect();
        let twist = vec![[1.0, 0.0]; 23];
        let input = IkInput {
            targets: &targets,
            twist: &twist,
            rest: Rest::Shape {
                basis: &basis,
                beta: &truth.beta,
            },
            leaf_rotations: None,
        };
        let io = IkolOptions {
            init: IkolInit::Analytic {
                fallback: AnalyticOptions::default().fallback,
            },
            ..IkolOptions::default()
        };
        let t0 = Instant::now();
        let Ok(sol) = ikol(&input, &io) else { continue };
        ikol_t.push(t0.elapsed().as_secs_f64());
        let ik = BodyState {
            rotations: sol.local_rotations.clone(),
            translation: truth.translation + Vector3::new(0.05, -0.05, 0.2),
            beta: vec![0.0; sm.betas()],
        };
        let fin = FitInput {
            intrinsics: &k,
            keypoints: &kps,
            points_3d: &p3,
            centre: &[1, 2],
            pose_prior: Some(&ik.rotations),
            beta_track: state.as_ref().map(|s| s.beta.as_slice()),
            translation_prior: Some(ik.translation),
            history: &history,
            rotation_history: &rot_history,
        };
        if f % 50 == 0 {
            let cold_in = FitInput {
                history: &[],
                rotation_history: &[],
                beta_track: None,
                ..fin
            };
            let t0 = Instant::now();
            let r = fit(&sm, &cold_in, &ik, &o);
            cold.push(t0.elapsed().as_secs_f64());
            if r.is_err() {
                eprintln!("fit-bench: a cold fit failed");
            }
        }
        let start = state.clone().unwrap_or_else(|| ik.clone());
        let t0 = Instant::now();
        let r = match fit(&sm, &fin, &start, &o) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("fit-bench: {e}");
                std::process::exit(1)
            }
        };
        warm.push(t0.elapsed().as_secs_f64());
        err += r
            .joints
            .iter()
            .zip(&posed.joints)
            .map(|(x, y)| ((x - r.joints[0]) - (y - posed.joints[0])).norm())
            .sum::<f64>()
            / 24.0;
        history.push(r.joints.clone());
        rot_history.push(r.state.rotations.clone());
        if history.len() > 2 {
            history.remove(0);
            rot_history.remove(0);
        }
        state = Some(r.state);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN) * 1e3
    };
    let (w, c, i) = (median(&mut warm), median(&mut cold), median(&mut ikol_t));
    println!("fit-bench: {frames} frames, 33 keypoints + 33 3D points, 1 thread (median)");
    println!("  fit, warm start (per person and frame): {w:.3} ms");
    println!("  fit, cold start:                        {c:.3} ms");
    println!(
        "  IKOL layer, 5 iterations, analytic start (same run): {i:.3} ms -> fit/IKOL {:.1}x",
        w / i
    );
    println!(
        "  mean root-relative joint error of the warm fits: {:.1} mm",
        1e3 * err / frames.max(1) as f64
    );
}
