//! How well the BlazePose front end and the IKOL solver recover known poses (issue 7,
//! "Accuracy of the landmark-to-SMPL mapping").
//!
//! Renders the default body model (ikol-render, shaded, grey background, 480x640, 60 degree
//! field of view, 3.2 m away) at random poses (ikol-solver's joint-limit-aware sampling, heading
//! within +-35 degrees of facing the camera) and shapes, runs the BlazePose detector and landmark
//! model on the render, maps the landmarks to SMPL-24 joints, solves IKOL (analytic start) and
//! prints the mean per-joint position error (root-relative, mm) of
//! - the map applied to the exact landmark positions on the mesh (the map's own error),
//! - the map applied to BlazePose's landmarks (the front end's joints),
//! - the joints of the solved pose (what the mesher poses).
//!
//! `cargo run --release -p ikol-tests --bin frontend-accuracy -- [N [X]]` (models from `make
//! models`): `X` metres to the side puts the body off the optical axis (0: on it; 1.2 m at
//! 3.2 m is 21 degrees off). The map's line is given twice: with the world landmarks turned from
//! the crop's view into camera axes (`crop_to_camera`, as `ikolbackbone` does) and as the
//! network gives them.

use anyhow::{Context, Result};
use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_detect::RgbImage;
use ikol_detect::blazepose_model::{
    BlazePoseDetector, BlazePoseLandmarker, BodyFromLandmarks, crop_to_camera, models_dir,
};
use ikol_detect::landmarks_smpl::landmarks_on;
use ikol_eval::metrics::mean_distance;
use ikol_solver::{AnalyticOptions, IkInput, IkolInit, IkolOptions, Method, Rest};
use ikol_tests::renders::{H, W, camera, random_body};
use rand::SeedableRng;

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(40);
    let side: f64 = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(0.0);
    let model = BodyModel::embedded_default()?;
    let dir = models_dir();
    let det = BlazePoseDetector::load(&dir)?;
    let lm = BlazePoseLandmarker::load(&dir)?;
    let body = BodyFromLandmarks::new(&model).map_err(anyhow::Error::msg)?;
    let basis = model.joint_shape_basis(false)?;
    let k = camera();
    let method = Method::Ikol(IkolOptions {
        init: IkolInit::Analytic {
            fallback: AnalyticOptions::default().fallback,
        },
        ..IkolOptions::default()
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut found, mut e_floor, mut e_map, mut e_solved) = (0usize, 0.0, 0.0, 0.0);
    let mut maps = Vec::new();
    let mut e_crop_view = 0.0;
    let mut axis = [0.0f64; 3];
    for _ in 0..n {
        let render = random_body(&mut rng, &model, side)?;
        let gt = &render.joints;
        let exact = landmarks_on(body.map().anchors(), &render.posed);
        let floor = body.map().joints(&exact);
        e_floor += mean_distance(&floor.iter().map(|j| j - floor[0]).collect::<Vec<_>>(), gt);
        let image = RgbImage {
            data: &render.rgb,
            width: W,
            height: H,
            stride: 3 * W,
        };
        let Some((_, roi)) = det.detect_poses(image)?.into_iter().next() else {
            continue;
        };
        let Some(pose) = lm.landmarks(image, &roi)? else {
            continue;
        };
        found += 1;
        let as_given = body.estimate(&pose);
        let e = body.estimate(&pose.turned(&crop_to_camera(&k, [roi.cx, roi.cy])));
        let joints: Vec<Vector3<f64>> = as_given
            .joints_3d
            .iter()
            .map(|j| Vector3::from(*j))
            .collect();
        e_crop_view += mean_distance(&joints, gt);
        let joints: Vec<Vector3<f64>> = e.joints_3d.iter().map(|j| Vector3::from(*j)).collect();
        let m = mean_distance(&joints, gt);
        for c in 0..3 {
            axis[c] += joints
                .iter()
                .zip(gt)
                .map(|(a, b)| (a[c] - b[c]).abs())
                .sum::<f64>()
                / 24.0;
        }
        e_map += m;
        maps.push(m);
        let twist = vec![[1.0, 0.0]; ikol_solver::TWIST_PAIRS];
        let sol = ikol_solver::solve(
            &IkInput {
                targets: &joints,
                twist: &twist,
                rest: Rest::Shape {
                    basis: &basis,
                    beta: &e.beta,
                },
                leaf_rotations: None,
            },
            &method,
        )
        .context("solver")?;
        // The solved pose on the fitted shape: its joints, root-relative.
        let rest_rot: Vec<Matrix3<f64>> = sol.local_rotations.clone();
        let solved = model.forward(&e.beta, &rest_rot)?;
        let sj: Vec<Vector3<f64>> = solved.joints.iter().map(|j| j - solved.joints[0]).collect();
        e_solved += mean_distance(&sj, gt);
    }
    maps.sort_by(f64::total_cmp);
    let f = found.max(1) as f64;
    println!("renders: {n}, {side} m off the axis, person found: {found}");
    println!(
        "map on exact landmarks:      {:.1} mm",
        1e3 * e_floor / n.max(1) as f64
    );
    println!(
        "map on BlazePose landmarks:  {:.1} mm (median {:.1})",
        1e3 * e_map / f,
        1e3 * maps.get(maps.len() / 2).copied().unwrap_or(f64::NAN)
    );
    println!(
        "  the same, world landmarks in the crop's view: {:.1} mm",
        1e3 * e_crop_view / f
    );
    println!(
        "  mean abs error per axis (x right, y down, z depth): {:.1} / {:.1} / {:.1} mm",
        1e3 * axis[0] / f,
        1e3 * axis[1] / f,
        1e3 * axis[2] / f
    );
    println!("after the IKOL solver:       {:.1} mm", 1e3 * e_solved / f);
    Ok(())
}
