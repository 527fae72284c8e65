//! BlazePose's world landmarks are in the view of the crop the network saw (as if the camera
//! looked straight at the person); `crop_to_camera` turns them into camera axes. On renders of
//! the body model with known 3D, a person 21 degrees to either side of the optical axis: the
//! SMPL joints mapped from the turned landmarks are nearer the truth than from the landmarks as
//! given, on each side (a turn the wrong way, or none, fails). On these 6 renders per side the
//! two differ by 22 and 20 mm (108.2 / 128.6 mm against 130.1 / 148.7; reversed, 196.4 at
//! +1.2 m), on 100 per side (`frontend-accuracy -- 100 +-1.2`) by 16 and 27 mm: the test asks
//! for 5. It checks the turn itself; `ikolbackbone` applies it to every pass (its module doc).
//!
//! Skipped, with a note, when the BlazePose models have not been fetched (`make test` fetches
//! them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ikol_body::BodyModel;
use ikol_body::nalgebra::Vector3;
use ikol_detect::RgbImage;
use ikol_detect::blazepose_model::{
    BlazePoseDetector, BlazePoseLandmarker, BodyFromLandmarks, DETECTOR_FILE, LANDMARK_FILE,
    crop_to_camera, models_dir,
};
use ikol_eval::metrics::mean_distance;
use ikol_tests::renders::{H, W, camera, random_body};
use rand::SeedableRng;

#[test]
fn world_landmarks_turned_into_camera_axes_are_nearer_the_truth_off_axis() {
    let dir = models_dir();
    if ![DETECTOR_FILE, LANDMARK_FILE]
        .iter()
        .all(|f| dir.join(f).is_file())
    {
        eprintln!(
            "SKIPPED: BlazePose models not in {} (elements/detect/tools/fetch_mediapipe_models.sh)",
            dir.display()
        );
        return;
    }
    let model = BodyModel::embedded_default().unwrap();
    let det = BlazePoseDetector::load(&dir).unwrap();
    let lm = BlazePoseLandmarker::load(&dir).unwrap();
    let body = BodyFromLandmarks::new(&model).unwrap();
    let k = camera();
    for side in [1.2, -1.2] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut turned, mut given, mut found) = (0.0, 0.0, 0);
        for _ in 0..6 {
            let r = random_body(&mut rng, &model, side).unwrap();
            let image = RgbImage {
                data: &r.rgb,
                width: W,
                height: H,
                stride: 3 * W,
            };
            let Some((_, roi)) = det.detect_poses(image).unwrap().into_iter().next() else {
                continue;
            };
            let Some(pose) = lm.landmarks(image, &roi).unwrap() else {
                continue;
            };
            found += 1;
            let joints = |p: &ikol_detect::blazepose::PoseLandmarks| -> Vec<Vector3<f64>> {
                body.estimate(p)
                    .joints_3d
                    .iter()
                    .map(|j| Vector3::from(*j))
                    .collect()
            };
            given += mean_distance(&joints(&pose), &r.joints);
            let to_camera = crop_to_camera(&k, [roi.cx, roi.cy]);
            turned += mean_distance(&joints(&pose.turned(&to_camera)), &r.joints);
        }
        assert!(
            found >= 5,
            "side {side}: BlazePose found {found} of 6 renders"
        );
        let (turned, given) = (1e3 * turned / found as f64, 1e3 * given / found as f64);
        println!("side {side} m: turned {turned:.1} mm, as given {given:.1} mm");
        assert!(
            turned + 5.0 < given,
            "side {side} m: turned {turned:.1} mm, as given {given:.1} mm"
        );
    }
}
