//! BlazePose end to end on real frames against mediapipe's own Python solution (issue 7, items
//! 2 and 3): three frames of pose2sim's demo clip (`tests/data/pose2sim/`, 540x960) through
//! [`BlazePoseDetector::detect_poses`] -> first ROI -> [`BlazePoseLandmarker::landmarks`],
//! compared with what
//!
//! ```python
//! mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, smooth_landmarks=False)
//! ```
//!
//! (mediapipe 0.10.21) gives on the same PNGs, stored in `tests/data/blazepose_expected.json` by
//! `tools/gen_blazepose_fixture.py` (run it with the venv its doc string describes).
//!
//! Then [`BodyFromLandmarks`] on the same poses, with plausibility checks of the SMPL joints.
//!
//! Skipped, with a note, when the models have not been fetched
//! (`elements/detect/tools/fetch_mediapipe_models.sh`, which `make test` runs); when they are
//! present any difference beyond the tolerances fails.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use ikol_body::BodyModel;
use ikol_body::nalgebra::Vector3;
use ikol_detect::RgbImage;
use ikol_detect::blazepose::landmarks::swap_left_right;
use ikol_detect::blazepose::{PoseLandmarks, RotatedRect};
use ikol_detect::blazepose_model::{
    AlternatingFlip, BlazePoseDetector, BlazePoseLandmarker, BodyFromLandmarks, DETECTOR_FILE,
    LANDMARK_FILE, models_dir, roi_box,
};
use serde_json::Value;

const FIXTURE: &str = include_str!("data/blazepose_expected.json");

// Tolerances. Our interpreter and mediapipe's (TensorFlow Lite with XNNPACK) sum in different
// orders, so the raw model outputs differ by float32 rounding (~1e-5 relative, tests/tflite.rs),
// which the decoding carries into the ROI and the landmarks. Largest differences measured on
// these three frames, with two implementations of the interpreter's kernels (candle's matrix
// product with separate multiply and add; this crate's AVX-512 / AVX2 kernels with fused
// multiply-adds):
//
//   detection score 6.3e-7 | ROI centre/size 2.9e-4 px | ROI rotation 3.7e-7 rad
//   landmark x/y 0.029 px (mean 0.006) | landmark z 0.26 px | world 0.21 mm | visibility 1.3e-4
//
// Each limit below is 10x or more the largest of those (room for other summation orders:
// other SIMD widths, thread counts), and the landmark one is checked to catch a real error: a
// crop off by half a pixel (the ROI moved by half a crop pixel, ~1.1 px here) moves landmarks
// by 2.4-3.5 px, five times the limit (measured by the test itself, below). The issue's
// suggested limits (1.5 px, 5 mm, 0.02) would not see that crop error.

/// Detection score (probability).
const TOL_SCORE: f64 = 1e-3;
/// ROI centre and size, frame pixels.
const TOL_ROI_PX: f64 = 0.05;
/// ROI rotation, radians.
const TOL_ROI_RAD: f64 = 1e-4;
/// Landmark x and y, frame pixels (540x960 frames; the person is ~500 px tall).
const TOL_LANDMARK_PX: f64 = 0.5;
/// Landmark z (pixels on x's scale; the model's depth is the least constrained output).
const TOL_LANDMARK_Z_PX: f64 = 3.0;
/// World landmarks, metres.
const TOL_WORLD_M: f64 = 2e-3;
/// Visibility (probability).
const TOL_VISIBILITY: f64 = 5e-3;

fn models_present() -> Option<PathBuf> {
    let dir = models_dir();
    let missing: Vec<_> = [DETECTOR_FILE, LANDMARK_FILE]
        .iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: BlazePose models {missing:?} not in {} (run \
             elements/detect/tools/fetch_mediapipe_models.sh or `make models`, or set IKOL_MODELS)",
            dir.display()
        );
        None
    }
}

/// An RGB8 PNG: (pixels, width, height).
fn load_png(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width as usize, info.height as usize);
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        other => bail!("{}: unexpected PNG colour type {other:?}", path.display()),
    };
    ensure!(rgb.len() == w * h * 3, "{}: short PNG", path.display());
    Ok((rgb, w, h))
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().expect("array").iter().map(f64s).collect()
}

/// One frame of the fixture, run through our chain.
struct Frame {
    name: String,
    width: usize,
    height: usize,
    rgb: Vec<u8>,
    expected: Value,
    score: f32,
    roi: RotatedRect,
    pose: PoseLandmarks,
}

impl Frame {
    fn image(&self) -> RgbImage<'_> {
        RgbImage {
            data: &self.rgb,
            width: self.width,
            height: self.height,
            stride: 3 * self.width,
        }
    }
}

fn run_frames(dir: &Path) -> Result<Vec<Frame>> {
    let detector = BlazePoseDetector::load(dir)?;
    let landmarker = BlazePoseLandmarker::load(dir)?;
    let fixture: Value = serde_json::from_str(FIXTURE)?;
    let mut out = Vec::new();
    for f in fixture["frames"].as_array().context("frames")? {
        let name = f["file"].as_str().context("file")?.to_owned();
        let (rgb, width, height) = load_png(&data_dir().join("pose2sim").join(&name))?;
        ensure!(
            f["width"].as_u64() == Some(width as u64)
                && f["height"].as_u64() == Some(height as u64),
            "{name}: size differs from the fixture"
        );
        let image = RgbImage {
            data: &rgb,
            width,
            height,
            stride: 3 * width,
        };
        let dets = detector.detect_poses(image)?;
        let (det, roi) = dets
            .into_iter()
            .next()
            .with_context(|| format!("{name}: no person detected"))?;
        let pose = landmarker
            .landmarks(image, &roi)?
            .with_context(|| format!("{name}: the landmark model found no pose"))?;
        out.push(Frame {
            name,
            width,
            height,
            expected: f.clone(),
            score: det.score,
            roi,
            pose,
            rgb,
        });
    }
    ensure!(out.len() == 3, "expected 3 frames, got {}", out.len());
    Ok(out)
}

/// Largest difference seen of one quantity, with where.
#[derive(Default)]
struct MaxDiff {
    value: f64,
    at: String,
}

impl MaxDiff {
    fn see(&mut self, d: f64, at: impl FnOnce() -> String) {
        // a NaN difference is kept (and then fails the check)
        if d.is_nan() || d > self.value {
            self.value = d;
            self.at = at();
        }
    }

    fn check(&self, what: &str, tol: f64, failures: &mut Vec<String>) {
        let line = format!(
            "{what:<22} max |diff| {:.3e} (tol {tol:.1e}) at {}",
            self.value, self.at
        );
        eprintln!("  {line}");
        if self.value.is_nan() || self.value > tol {
            failures.push(line);
        }
    }
}

#[test]
fn blazepose_matches_mediapipe_on_real_frames() -> Result<()> {
    let Some(dir) = models_present() else {
        return Ok(());
    };
    let frames = run_frames(&dir)?;
    let [
        mut score,
        mut roi_px,
        mut roi_rad,
        mut xy,
        mut z,
        mut world,
        mut vis,
    ] = std::array::from_fn(|_| MaxDiff::default());
    let mut mean_xy = 0.0;
    for f in &frames {
        let e = &f.expected;
        let n = &f.name;
        score.see(
            (f64::from(f.score) - e["detection"]["score"].as_f64().unwrap_or(f64::NAN)).abs(),
            || n.clone(),
        );
        let r = f64s(&e["roi"]);
        let ours = [f.roi.cx, f.roi.cy, f.roi.w, f.roi.h];
        for (k, (a, b)) in ours.iter().zip(&r).enumerate() {
            roi_px.see((a - b).abs(), || format!("{n} [{k}]"));
        }
        roi_rad.see((f.roi.rotation - r[4]).abs(), || n.clone());

        let lm = rows(&e["landmarks"]);
        let wl = rows(&e["world"]);
        assert_eq!((lm.len(), wl.len(), f.pose.landmarks.len()), (33, 33, 33));
        let mut sum = 0.0;
        for (i, (l, m)) in f.pose.landmarks.iter().zip(&lm).enumerate() {
            let d = (l.x - m[0]).abs().max((l.y - m[1]).abs());
            sum += (l.x - m[0]).hypot(l.y - m[1]);
            xy.see(d, || format!("{n} landmark {i}"));
            z.see((l.z - m[2]).abs(), || format!("{n} landmark {i}"));
            vis.see((f64::from(l.visibility) - m[3]).abs(), || {
                format!("{n} landmark {i}")
            });
        }
        mean_xy += sum / 33.0 / frames.len() as f64;
        for (i, (w, m)) in f.pose.world.iter().zip(&wl).enumerate() {
            let d = [w.x - m[0], w.y - m[1], w.z - m[2]]
                .iter()
                .fold(0.0f64, |a, v| a.max(v.abs()));
            world.see(d, || format!("{n} world {i}"));
        }
    }
    eprintln!("BlazePose vs mediapipe 0.10.21 on {} frames:", frames.len());
    let mut failures = Vec::new();
    score.check("detection score", TOL_SCORE, &mut failures);
    roi_px.check("ROI centre/size (px)", TOL_ROI_PX, &mut failures);
    roi_rad.check("ROI rotation (rad)", TOL_ROI_RAD, &mut failures);
    xy.check("landmark x/y (px)", TOL_LANDMARK_PX, &mut failures);
    eprintln!("  landmark x/y mean distance {mean_xy:.3} px");
    z.check("landmark z (px)", TOL_LANDMARK_Z_PX, &mut failures);
    world.check("world landmarks (m)", TOL_WORLD_M, &mut failures);
    vis.check("visibility", TOL_VISIBILITY, &mut failures);
    ensure!(
        failures.is_empty(),
        "beyond tolerance:\n{}",
        failures.join("\n")
    );

    // The landmark tolerance separates: the ROI moved by half a crop pixel (what an
    // off-by-half-a-pixel warp would do) moves the landmarks by more than it.
    let landmarker = BlazePoseLandmarker::load(&dir)?;
    for f in &frames {
        let step = 0.5 * f.roi.w / 256.0;
        let shifted = RotatedRect {
            cx: f.roi.cx + step,
            cy: f.roi.cy + step,
            ..f.roi
        };
        let moved = landmarker
            .landmarks(f.image(), &shifted)?
            .context("no pose in the shifted ROI")?;
        let d = moved
            .landmarks
            .iter()
            .zip(&f.pose.landmarks)
            .map(|(a, b)| (a.x - b.x).abs().max((a.y - b.y).abs()))
            .fold(0.0, f64::max);
        eprintln!(
            "  {}: the ROI shifted by ({step:.2}, {step:.2}) px moves landmarks by up to {d:.2} px",
            f.name
        );
        ensure!(
            d > TOL_LANDMARK_PX,
            "{}: the tolerance would not see a half-pixel crop shift ({d:.2} px)",
            f.name
        );
    }
    Ok(())
}

/// Is `p` inside the rotated rectangle `r` (grown by `margin` pixels)?
fn inside(r: &RotatedRect, p: [f64; 2], margin: f64) -> bool {
    let (dx, dy) = (p[0] - r.cx, p[1] - r.cy);
    let (s, c) = r.rotation.sin_cos();
    // the ROI's own axes: x' = R(-rotation) (p - centre)
    let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
    u.abs() <= 0.5 * r.w + margin && v.abs() <= 0.5 * r.h + margin
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Weak-perspective fit `s * (x, y) + t` of the 3D joints to the 2D ones: (s, RMS residual px).
fn weak_perspective(j3: &[[f64; 3]], j2: &[[f64; 2]]) -> (f64, f64) {
    let n = j3.len() as f64;
    let m3 = [0, 1].map(|k| j3.iter().map(|p| p[k]).sum::<f64>() / n);
    let m2 = [0, 1].map(|k| j2.iter().map(|p| p[k]).sum::<f64>() / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (a, b) in j3.iter().zip(j2) {
        for k in 0..2 {
            num += (a[k] - m3[k]) * (b[k] - m2[k]);
            den += (a[k] - m3[k]).powi(2);
        }
    }
    let s = num / den;
    let ss: f64 = j3
        .iter()
        .zip(j2)
        .map(|(a, b)| {
            (0..2)
                .map(|k| (s * (a[k] - m3[k]) - (b[k] - m2[k])).powi(2))
                .sum::<f64>()
        })
        .sum();
    (s, (ss / n).sqrt())
}

#[test]
fn smpl_joints_from_real_landmarks_are_plausible() -> Result<()> {
    let Some(dir) = models_present() else {
        return Ok(());
    };
    let frames = run_frames(&dir)?;
    let model = BodyModel::embedded_default()?;
    let body = BodyFromLandmarks::new(&model).map_err(anyhow::Error::msg)?;
    // SMPL-24: 0 pelvis, 1/2 hips, 4/5 knees, 7/8 ankles, 15 head, 16/17 shoulders, 18/19 elbows
    const BONES: [(&str, usize, usize); 6] = [
        ("left thigh", 1, 4),
        ("right thigh", 2, 5),
        ("left shin", 4, 7),
        ("right shin", 5, 8),
        ("left upper arm", 16, 18),
        ("right upper arm", 17, 19),
    ];
    for f in &frames {
        let n = &f.name;
        let est = body.estimate(&f.pose);
        ensure!(est.joints_3d.len() == 24 && est.joints_2d.len() == 24);
        let bbox = roi_box(&f.roi).context("ROI box")?;
        // root-relative
        ensure!(
            est.joints_3d[0].iter().all(|v| v.abs() < 1e-12),
            "{n}: root not at 0"
        );
        // 2D joints inside the person's ROI, and inside its axis-aligned box
        for (j, p) in est.joints_2d.iter().enumerate() {
            ensure!(
                inside(&f.roi, *p, 0.0),
                "{n}: joint {j} at {p:?} outside the ROI {:?}",
                f.roi
            );
            ensure!(
                p[0] >= bbox.x
                    && p[0] <= bbox.x + bbox.w
                    && p[1] >= bbox.y
                    && p[1] <= bbox.y + bbox.h,
                "{n}: joint {j} at {p:?} outside the ROI box {bbox:?}"
            );
        }
        // head above pelvis, in the image (y down) and in the camera-axis 3D joints
        ensure!(
            est.joints_2d[15][1] < est.joints_2d[0][1] - 50.0,
            "{n}: head not above pelvis"
        );
        ensure!(est.joints_3d[15][1] < -0.3, "{n}: 3D head not above pelvis");
        // bone lengths of an adult
        let mut lens = Vec::new();
        for (what, a, b) in BONES {
            let l = dist(est.joints_3d[a], est.joints_3d[b]);
            ensure!((0.2..=0.6).contains(&l), "{n}: {what} {l:.3} m");
            lens.push(format!("{what} {l:.3}"));
        }
        // hips and shoulders are the landmarks themselves (copied joints)
        // hips, knees, ankles and shoulders are the world landmarks themselves (relative to
        // the left hip here, as the joints are pelvis-relative and the landmarks hip-centred)
        let w = &f.pose.world;
        for (j, l) in [(2, 24), (4, 25), (8, 28), (16, 11), (17, 12)] {
            let d = dist(
                [0, 1, 2].map(|k| est.joints_3d[j][k] - est.joints_3d[1][k]),
                [w[l].x - w[23].x, w[l].y - w[23].y, w[l].z - w[23].z],
            );
            ensure!(d < 1e-9, "{n}: joint {j} is not landmark {l} ({d} m)");
        }
        // the 3D joints, seen in weak perspective, match the 2D joints
        let (scale, rms) = weak_perspective(&est.joints_3d, &est.joints_2d);
        let conf_ok = est.confidence.iter().all(|c| (0.0..=1.0).contains(c));
        let beta_max = est.beta.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        eprintln!(
            "{n}: {}; weak perspective {scale:.0} px/m, rms {rms:.1} px; |beta| <= {beta_max:.2}",
            lens.join(", ")
        );
        ensure!(
            scale > 0.0,
            "{n}: the 3D joints are mirrored against the 2D ones"
        );
        ensure!(
            rms < 0.05 * f.roi.h,
            "{n}: 3D and 2D joints disagree ({rms:.1} px rms)"
        );
        ensure!(conf_ok, "{n}: confidences {:?}", est.confidence);
        ensure!(
            est.beta.iter().all(|b| b.is_finite()) && beta_max < 5.0,
            "{n}: beta {:?}",
            est.beta
        );
    }
    Ok(())
}

/// The flip test (`with_flip_test`) mirrors the model's input crop and turns the outputs back
/// (`mirrored_roi`, `unmirrored`). Checked against an independent route: the plain landmark
/// model on the mirrored *frame* (pixel k to W - 1 - k; the warp puts pixel k at x = k), in the
/// mirrored ROI (centre `W - 1 - cx`, rotation negated), its landmarks turned back by
/// `x -> W - 1 - x` with left and right exchanged. The flip-tested pose must be
/// (nearly) the mean of that and the plain pose.
///
/// Not exactly: the crop of the mirrored frame is the mirrored crop only to a fraction of a
/// pixel (the warp's sampling grid; mean difference 0.004-0.03 of the input range on these
/// frames), and this model moves its landmarks by 2-3 px for a half-pixel shift of its crop
/// (see above). So the test compares means over the 33 landmarks: the flip-tested pose must lie
/// clearly nearer the expected mean than the plain pose does (which differs from it by half the
/// two passes' disagreement). Measured: 0.76 px and 6.3 mm against 1.91 px and 29.9 mm. Two
/// earlier versions failed it: one that averaged the raw outputs (one heatmap refinement of the
/// mean heatmap, whose offset of 1.5 crop pixels then does not cancel) at 4.1 px, and one that
/// mirrored crop coordinates as `u -> 1 - u` instead of `(255 - i) / 256` at 1.43 px (one crop
/// pixel, ~2 frame pixels, off in the mirrored pass).
#[test]
fn flip_test_is_the_mean_with_the_mirrored_frame() -> Result<()> {
    let Some(dir) = models_present() else {
        return Ok(());
    };
    let frames = run_frames(&dir)?;
    let plain = BlazePoseLandmarker::load(&dir)?;
    let flipped = BlazePoseLandmarker::load(&dir)?.with_flip_test(true);
    // Mean distances from the expected mean: [flip test, plain pass]; landmarks px, world m.
    let (mut xy, mut world) = ([0.0f64; 2], [0.0f64; 2]);
    let mut n = 0.0;
    for f in &frames {
        let w = f.width;
        let mirrored: Vec<u8> = f
            .rgb
            .chunks_exact(3 * w)
            .flat_map(|row| row.chunks_exact(3).rev().flatten().copied())
            .collect();
        let image = RgbImage {
            data: &mirrored,
            width: w,
            height: f.height,
            stride: 3 * w,
        };
        let roi = RotatedRect {
            cx: (w - 1) as f64 - f.roi.cx,
            rotation: -f.roi.rotation,
            ..f.roi
        };
        let m = plain
            .landmarks(image, &roi)?
            .with_context(|| format!("{}: no pose in the mirrored frame", f.name))?;
        let both = flipped
            .landmarks(f.image(), &f.roi)?
            .with_context(|| format!("{}: no pose with the flip test", f.name))?;
        // Landmark i of the mirrored frame is landmark mirror(i) of the frame.
        let mut lm = m.landmarks.clone();
        let mut wl = m.world.clone();
        swap_left_right(&mut lm);
        swap_left_right(&mut wl);
        for i in 0..33 {
            let (p, q) = (&f.pose.landmarks[i], &lm[i]);
            let mean = [0.5 * (p.x + ((w - 1) as f64 - q.x)), 0.5 * (p.y + q.y)];
            for (k, b) in [&both.landmarks[i], p].into_iter().enumerate() {
                xy[k] += (b.x - mean[0]).hypot(b.y - mean[1]);
            }
            let (p, q) = (&f.pose.world[i], &wl[i]);
            let mean = Vector3::new(0.5 * (p.x - q.x), 0.5 * (p.y + q.y), 0.5 * (p.z + q.z));
            for (k, b) in [&both.world[i], p].into_iter().enumerate() {
                world[k] += (Vector3::new(b.x, b.y, b.z) - mean).norm();
            }
            n += 1.0;
        }
    }
    let [xy, world] = [xy, world].map(|v| v.map(|x| x / n));
    eprintln!(
        "mean distance from the mean of the frame's and the mirrored frame's pose: flip test \
         {:.2} px, {:.1} mm; plain pass {:.2} px, {:.1} mm",
        xy[0],
        world[0] * 1e3,
        xy[1],
        world[1] * 1e3
    );
    ensure!(
        xy[0] < 0.5 * xy[1] && world[0] < 0.5 * world[1],
        "the flip test is not the mean of the two passes"
    );
    Ok(())
}

/// `flip-test=alternate` ([`AlternatingFlip`]): on a still picture, the second frame's pose
/// (the mirrored pass averaged with the first frame's plain pass) is the flip test's, and the
/// first frame's is the plain pass alone; a track last seen three frames ago is not paired. Checked
/// against the flip test's own route (both passes on one frame, side by side).
#[test]
fn alternating_flip_on_a_still_picture_is_the_flip_test() -> Result<()> {
    let Some(dir) = models_present() else {
        return Ok(());
    };
    let frames = run_frames(&dir)?;
    let single = BlazePoseLandmarker::load(&dir)?;
    let flipped = BlazePoseLandmarker::load(&dir)?.with_flip_test(true);
    let gap = |a: &PoseLandmarks, b: &PoseLandmarks| {
        let xy = a.landmarks.iter().zip(&b.landmarks);
        let world = a.world.iter().zip(&b.world);
        xy.map(|(p, q)| (p.x - q.x).abs().max((p.y - q.y).abs()))
            .chain(world.map(|(p, q)| 1e3 * (p.z - q.z).abs().max((p.x - q.x).abs())))
            .fold(0.0f64, f64::max)
    };
    for f in &frames {
        let mut alt = AlternatingFlip::default();
        let frame = |alt: &mut AlternatingFlip, pair: bool| -> Result<PoseLandmarks> {
            let pass = alt.begin_frame();
            let pose = single
                .landmarks_pass(f.image(), &f.roi, pass)?
                .with_context(|| format!("{}: no pose in the {pass:?} pass", f.name))?;
            Ok(if pair {
                alt.combine(7, pass, pose)
            } else {
                pose
            })
        };
        let first = frame(&mut alt, true)?;
        ensure!(
            gap(&first, &f.pose) == 0.0,
            "{}: frame 1 is not the plain pass",
            f.name
        );
        let second = frame(&mut alt, true)?;
        let both = flipped.landmarks(f.image(), &f.roi)?.context("flip test")?;
        let (d_both, d_plain) = (gap(&second, &both), gap(&second, &f.pose));
        eprintln!(
            "{}: frame 2 against the flip test {d_both:.2e}, against the plain pass {d_plain:.2} \
             (px or mm)",
            f.name
        );
        ensure!(
            d_both < 1e-4 && d_plain > 0.1,
            "{}: frame 2 is not the flip test",
            f.name
        );
        // Frames 3 and 4 pass the track by; frame 5 (plain) has nothing to pair with (frame
        // 2's mirrored pose would move it by the passes' disagreement).
        frame(&mut alt, false)?;
        frame(&mut alt, false)?;
        let fifth = frame(&mut alt, true)?;
        ensure!(
            gap(&fifth, &f.pose) == 0.0,
            "{}: frame 5 was paired across a gap",
            f.name
        );
    }
    Ok(())
}
