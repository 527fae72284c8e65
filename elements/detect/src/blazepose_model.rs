//! The two pretrained BlazePose networks (mediapipe 0.10.21, Apache-2.0) run on the TensorFlow
//! Lite interpreter ([`crate::tflite`]) with mediapipe's pre- and post-processing
//! ([`crate::blazepose`]), and the conversion of their landmarks into what the IK solver needs
//! ([`crate::landmarks_smpl`]).
//!
//! - [`BlazePoseDetector`]: the person detector of `ikolcrop detector=blazepose`.
//! - [`BlazePoseLandmarker`]: 33 landmarks (frame pixels) and world landmarks (metres) in a
//!   rotated region of interest.
//! - [`BodyFromLandmarks`]: SMPL-24 joints, shape and confidences from a decoded pose.
//!
//! The model files are fetched at set-up (`make models`) into [`models_dir`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_body::{BodyModel, JointShapeBasis};
use ikol_types::rotation::skew;
use ikol_types::{BBox, Intrinsics};

use crate::blazepose::Padding;
use crate::blazepose::landmarks::{mirrored_roi, sides_disagree, swap_left_right};
use crate::blazepose::{
    DetectorPostprocess, LandmarkOutputs, POSE_PRESENCE_THRESHOLD, PoseDetection, PoseLandmarks,
    RotatedRect, decode_pose, detection_roi, detector_input, landmark_input,
};
use crate::landmarks_smpl::{LANDMARKS, LandmarkMap, fit_beta};
use crate::tflite;
use crate::{DetectError, Detection, Frame, PersonDetector};

/// File name of the person detector in the models folder.
pub const DETECTOR_FILE: &str = "pose_detection.tflite";
/// File name of the landmark model in the models folder.
pub const LANDMARK_FILE: &str = "pose_landmark_full.tflite";

/// Where the models are: `$IKOL_MODELS`, else `~/.cache/ikol/models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IKOL_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/ikol/models")
}

fn failed(reason: impl std::fmt::Display) -> DetectError {
    DetectError::Failed {
        detector: "blazepose".into(),
        reason: reason.to_string(),
    }
}

fn load(dir: &Path, file: &str) -> Result<tflite::Model, DetectError> {
    let path = dir.join(file);
    if !path.is_file() {
        return Err(failed(format!(
            "{} not found; fetch the models with `make models` \
             (elements/detect/tools/fetch_mediapipe_models.sh) or set IKOL_MODELS",
            path.display()
        )));
    }
    tflite::Model::load(&path).map_err(failed)
}

/// Runs `model` on one NHWC input and returns its outputs by name, flattened.
fn run(
    model: &tflite::Model,
    data: Vec<f32>,
    h: usize,
    w: usize,
) -> Result<Vec<(String, Vec<f32>)>, DetectError> {
    let x = Tensor::from_vec(data, (1, h, w, 3), &Device::Cpu).map_err(failed)?;
    let outs = model.run(&[x]).map_err(failed)?;
    model
        .outputs()
        .into_iter()
        .zip(outs)
        .map(|(spec, t)| {
            let v = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(failed)?;
            Ok((spec.name, v))
        })
        .collect()
}

fn output<'a>(outs: &'a [(String, Vec<f32>)], name: &str) -> Result<&'a [f32], DetectError> {
    outs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .ok_or_else(|| failed(format!("the model has no output `{name}`")))
}

/// The BlazePose person detector.
#[derive(Debug)]
pub struct BlazePoseDetector {
    model: tflite::Model,
    post: DetectorPostprocess,
}

impl BlazePoseDetector {
    /// Loads `pose_detection.tflite` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, DetectError> {
        Ok(Self {
            model: load(dir, DETECTOR_FILE)?,
            post: DetectorPostprocess::pose_detection(),
        })
    }

    /// Detections (best first) with the landmark model's region of interest of each.
    pub fn detect_poses<'a>(
        &self,
        image: impl Into<Frame<'a>>,
    ) -> Result<Vec<(PoseDetection, RotatedRect)>, DetectError> {
        let image: Frame<'a> = image.into();
        let input = detector_input(image).map_err(failed)?;
        let (h, w) = (input.height, input.width);
        let outs = run(&self.model, input.data, h, w)?;
        let dets = self
            .post
            .run(
                output(&outs, "Identity")?,
                output(&outs, "Identity_1")?,
                &input.padding,
            )
            .map_err(failed)?;
        Ok(dets
            .into_iter()
            .filter_map(|d| detection_roi(&d, image.width(), image.height()).map(|r| (d, r)))
            .collect())
    }
}

/// Square tiles of `side` pixels over a `width` x `height` frame, neighbours overlapping by at
/// least a quarter of a tile: (x, y, side) (none when the tile does not fit).
fn tiles(width: usize, height: usize, side: usize) -> Vec<(usize, usize, usize)> {
    if side == 0 || side > width || side > height {
        return Vec::new();
    }
    let starts = |len: usize| -> Vec<usize> {
        if len == side {
            return vec![0];
        }
        let n = (4 * len).div_ceil(3 * side).max(2);
        (0..n).map(|i| (len - side) * i / (n - 1)).collect()
    };
    let xs = starts(width);
    starts(height)
        .into_iter()
        .flat_map(|y| xs.iter().map(move |&x| (x, y, side)))
        .collect()
}

/// The tile sizes searched besides the whole frame: the short side (when the frame is longer
/// than 4:3) and half of it (when that is still larger than the detector's 224-pixel input).
fn tile_sides(width: usize, height: usize) -> Vec<usize> {
    let (long, short) = (width.max(height), width.min(height));
    let mut sides = Vec::new();
    if long * 3 > short * 4 {
        sides.push(short);
    }
    if short / 2 >= MIN_TILE {
        sides.push(short / 2);
    }
    sides
}

/// Smallest tile searched: a little over the detector's input size (224).
const MIN_TILE: usize = 256;

/// Two regions of interest are the same person when their centres are closer than this
/// fraction of the smaller one's side and their sides differ by less than [`SAME_SIZE`]: two
/// people side by side (regions ~1.25 body heights wide) stay apart from about a third of a
/// body height on.
const SAME_CENTRE: f64 = 0.25;
/// Largest ratio of the two sides of regions of the same person.
const SAME_SIZE: f64 = 1.5;

fn same_person(a: &BBox, b: &BBox) -> bool {
    let ([ax, ay], [bx, by]) = (a.center(), b.center());
    let (sa, sb) = (a.w.max(a.h), b.w.max(b.h));
    let (small, large) = (sa.min(sb), sa.max(sb));
    (ax - bx).hypot(ay - by) < SAME_CENTRE * small && large < SAME_SIZE * small
}

/// The axis-aligned box around a region of interest (the body, where the detection box is the
/// face).
pub fn roi_box(roi: &RotatedRect) -> Option<BBox> {
    BBox::around_points(roi.corners(), 1.0).filter(BBox::is_valid)
}

impl BlazePoseDetector {
    /// People in the whole frame and in square tiles of it ([`tile_sides`]): the detector sees
    /// its input letterboxed to 224 x 224, where a person at the back of a 1080 x 1920 frame is
    /// a few pixels tall (the face it keys on, one or two). Regions of the same person are
    /// merged (best score kept); best first. Costs one detector run per tile (18 at 1080 x
    /// 1920, with the whole frame 19), which `ikolcrop` spends once a `detect-period` (a second),
    /// and on every frame while it follows nobody.
    pub fn detect_people<'a>(
        &self,
        image: impl Into<Frame<'a>>,
    ) -> Result<Vec<Detection>, DetectError> {
        let image: Frame<'a> = image.into();
        let mut found: Vec<Detection> = Vec::new();
        let mut add = |dets: Vec<(PoseDetection, RotatedRect)>, dx: usize, dy: usize| {
            for (d, mut roi) in dets {
                roi.cx += dx as f64;
                roi.cy += dy as f64;
                if let Some(bbox) = roi_box(&roi) {
                    found.push(Detection {
                        bbox,
                        score: f64::from(d.score),
                    });
                }
            }
        };
        add(self.detect_poses(image)?, 0, 0);
        let grid = tile_sides(image.width(), image.height())
            .into_iter()
            .flat_map(|side| tiles(image.width(), image.height(), side));
        for (x, y, side) in grid {
            add(self.detect_poses(image.tile(x, y, side))?, x, y);
        }
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Detection> = Vec::new();
        for d in found {
            if !kept.iter().any(|k| same_person(&k.bbox, &d.bbox)) {
                kept.push(d);
            }
        }
        Ok(kept)
    }
}

impl PersonDetector for BlazePoseDetector {
    fn name(&self) -> &str {
        "blazepose"
    }

    /// People as the boxes around their landmark regions of interest (square, 1.25x the body),
    /// from the whole frame and its tiles ([`BlazePoseDetector::detect_people`]).
    fn detect(&mut self, image: &Frame<'_>) -> Result<Vec<Detection>, DetectError> {
        self.detect_people(image)
    }
}

/// Which passes of the landmark model [`BlazePoseLandmarker::landmarks_pass`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The crop.
    Plain,
    /// The mirrored crop, decoded as the crop of a mirrored frame and mirrored back.
    Mirrored,
    /// Both, averaged (the flip test).
    Both,
}

/// The BlazePose landmark model (full).
#[derive(Debug)]
pub struct BlazePoseLandmarker {
    model: tflite::Model,
    flip_test: bool,
}

impl BlazePoseLandmarker {
    /// Loads `pose_landmark_full.tflite` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, DetectError> {
        let mut model = load(dir, LANDMARK_FILE)?;
        // The segmentation mask (`Identity_2`) is not used: skip its steps (~4 ms per frame).
        model
            .retain_outputs(&["Identity", "Identity_1", "Identity_3", "Identity_4"])
            .map_err(failed)?;
        Ok(Self {
            model,
            flip_test: false,
        })
    }

    /// Also runs the mirrored crop and averages the two poses (the flip test of SimpleBaseline /
    /// HybrIK; [`crate::blazepose::landmarks::mirrored_roi`]): twice the model time.
    pub fn with_flip_test(mut self, on: bool) -> Self {
        self.flip_test = on;
        self
    }

    /// The pose in `roi`, or `None` when the model says no pose is there.
    pub fn landmarks<'a>(
        &self,
        image: impl Into<Frame<'a>>,
        roi: &RotatedRect,
    ) -> Result<Option<PoseLandmarks>, DetectError> {
        let pass = if self.flip_test {
            Pass::Both
        } else {
            Pass::Plain
        };
        self.landmarks_pass(image, roi, pass)
    }

    /// [`Self::landmarks`] with the passes given: the crop, its mirror image, or both averaged.
    pub fn landmarks_pass<'a>(
        &self,
        image: impl Into<Frame<'a>>,
        roi: &RotatedRect,
        pass: Pass,
    ) -> Result<Option<PoseLandmarks>, DetectError> {
        let input = landmark_input(image, roi).map_err(failed)?;
        let (h, w) = (input.height, input.width);
        // Each row's pixels in reverse order, each pixel's channels kept.
        let mirror = |mut m: Vec<f32>| {
            for row in m.chunks_exact_mut(3 * w) {
                row.reverse();
                for px in row.chunks_exact_mut(3) {
                    px.reverse();
                }
            }
            m
        };
        let decode = |data: Vec<f32>, roi: &RotatedRect, padding: &Padding| {
            let outs = run(&self.model, data, h, w)?;
            let flag = output(&outs, "Identity_1")?;
            let out = LandmarkOutputs {
                landmarks: output(&outs, "Identity")?,
                pose_flag: flag.first().copied().unwrap_or(0.0),
                heatmap: Some(output(&outs, "Identity_3")?),
                world: output(&outs, "Identity_4")?,
            };
            decode_pose(&out, roi, padding, POSE_PRESENCE_THRESHOLD).map_err(failed)
        };
        // The mirrored crop is decoded as the crop of a mirrored frame.
        let (m_roi, m_padding) = mirrored_roi(&input.roi, &input.padding, w);
        match pass {
            Pass::Plain => decode(input.data, &input.roi, &input.padding),
            Pass::Mirrored => {
                Ok(decode(mirror(input.data), &m_roi, &m_padding)?.map(PoseLandmarks::unmirrored))
            }
            Pass::Both => {
                // The flip test: each pass refined from its own heatmap (the refinement puts a
                // landmark at the index of its heatmap cell, 1.5 crop pixels short of the
                // cell's centre; mirrored, the offset changes sign in x and the mean cancels
                // it), and the two poses averaged. The two passes run side by side on rayon's
                // pool: one graph's kernels keep two cores only partly busy.
                let data = mirror(input.data.clone());
                let (pose, other) = rayon::join(
                    || decode(input.data, &input.roi, &input.padding),
                    || decode(data, &m_roi, &m_padding),
                );
                let Some(pose) = pose? else {
                    return Ok(None);
                };
                let Some(other) = other? else {
                    return Ok(Some(pose));
                };
                Ok(Some(flip_mean(pose, other.unmirrored())))
            }
        }
    }
}

/// The flip test's mean of a pass and the other pass (mirrored back), the other's labels made
/// to follow the first's. A mirrored pass that names the sides otherwise (a back seen for a
/// front) follows the first pass's labelling, which the solver's left/right repair judges over
/// time. Its depths are then not the first pass's mirror image, yet averaging beats leaving it
/// out where this happens (pose2sim cam02, the subject from behind: fit PA-MPJPE 71.6 against
/// 74.2 mm, acceleration 55 against 75 mm/frame², `make multiview-accuracy
/// MULTIVIEW_VIEW=cam02`); no other view has such frames.
fn flip_mean(pose: PoseLandmarks, mut other: PoseLandmarks) -> PoseLandmarks {
    if sides_disagree(&pose, &other) {
        swap_left_right(&mut other.landmarks);
        swap_left_right(&mut other.world);
    }
    pose.mean_with(&other)
}

/// The flip test spread over time, for live use at the cost of one landmark pass per person and
/// frame: frames take the crop and its mirror image in turn ([`Self::begin_frame`]), and a
/// person's pose is the flip test's mean ([`flip_mean`], labels following the plain pass's) of
/// this frame's pass and the previous frame's other pass ([`Self::combine`]), half a frame late.
/// On a still picture it is the flip test. Each pass alone is biased its own way (the heatmap
/// refinement's 1.5 crop pixels in x have opposite signs, and the depths differ), so using the
/// passes in turn without the mean makes the pose flicker at half the frame rate (pose2sim
/// cam01: world landmarks' acceleration 111 mm/frame² against 37 with one pass and 25 with the
/// flip test).
#[derive(Debug, Default)]
pub struct AlternatingFlip {
    frame: u64,
    /// Per track, the frame and pass of its last pose, before any mean; `next` collects this
    /// frame's.
    last: HashMap<u64, (u64, Pass, PoseLandmarks)>,
    next: HashMap<u64, (u64, Pass, PoseLandmarks)>,
}

impl AlternatingFlip {
    /// Starts the next frame (also one without people: it ends every pairing); returns the
    /// pass that every person of it takes.
    pub fn begin_frame(&mut self) -> Pass {
        self.frame += 1;
        self.last.extend(self.next.drain());
        self.last.retain(|_, (f, _, _)| *f + 1 == self.frame);
        if self.frame.is_multiple_of(2) {
            Pass::Mirrored
        } else {
            Pass::Plain
        }
    }

    /// `pose` (this frame's `pass` for `track`: the frame's, or the plain one where the
    /// mirrored pass found nobody) averaged with the track's pose of the frame before when that
    /// was the other pass; unchanged otherwise (a new track's first frame).
    pub fn combine(&mut self, track: u64, pass: Pass, pose: PoseLandmarks) -> PoseLandmarks {
        let out = match self.last.get(&track) {
            Some((_, Pass::Plain, plain)) if pass == Pass::Mirrored => {
                flip_mean(plain.clone(), pose.clone())
            }
            Some((_, Pass::Mirrored, mirrored)) if pass == Pass::Plain => {
                flip_mean(pose.clone(), mirrored.clone())
            }
            _ => pose.clone(),
        };
        self.next.insert(track, (self.frame, pass, pose));
        out
    }

    /// Forgets every track (a discontinuity: the next frame has nothing to pair with).
    pub fn reset(&mut self) {
        self.last.clear();
        self.next.clear();
    }
}

/// What the solver needs about one person, from BlazePose landmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyEstimate {
    /// SMPL-24 joints, root-relative, metres, in the axes of `landmarks_3d` (x right, y down,
    /// z forward).
    pub joints_3d: Vec<[f64; 3]>,
    /// SMPL-24 joints in frame pixels.
    pub joints_2d: Vec<[f64; 2]>,
    /// Per joint, the lowest visibility of the landmarks it is made from.
    pub confidence: Vec<f64>,
    /// Shape fitted to the bone lengths.
    pub beta: Vec<f64>,
    /// The 33 landmarks in frame pixels (x, y) with their visibility.
    pub landmarks_2d: Vec<[f64; 3]>,
    /// The 33 world landmarks: metres, origin between the hips, in the pose's axes (camera axes
    /// once turned by [`crop_to_camera`], else the crop's view).
    pub landmarks_3d: Vec<[f64; 3]>,
}

/// The rotation from the view of a crop centred on frame pixel `centre` to camera axes.
///
/// The landmark network sees the person in a crop as if the camera looked straight at them, so
/// its world landmarks are in the axes of a camera turned onto the ray through the crop's
/// centre, not in the frame's camera axes (mediapipe undoes the crop's in-plane rotation only).
/// This is the smallest rotation taking the optical axis `z` onto that ray (Rodrigues:
/// `R = I + [a]x + [a]x^2 / (1 + c)` with `a = z x r`, `c = z . r`); a person 30 degrees off
/// the axis is otherwise seen turned by 30 degrees. On renders 21 degrees off the axis it takes
/// the mapped joints' error from 157.0 to 141.3 mm (`frontend-accuracy -- 100 1.2`); on the
/// pose2sim views the fit's mean PA-MPJPE / MPJPE from 72.5 / 102.9 to 72.3 / 100.4 mm
/// (`make multiview-accuracy MULTIVIEW_VIEW=camNN`, 2026-12-08; README).
///
/// A camera or centre that gives no finite ray (zero focal length, NaN) gives the identity: the
/// landmarks are then left as the network gave them.
pub fn crop_to_camera(k: &Intrinsics, centre: [f64; 2]) -> Matrix3<f64> {
    let r = Vector3::new((centre[0] - k.cx) / k.fx, (centre[1] - k.cy) / k.fy, 1.0).normalize();
    let ax = skew(&Vector3::z().cross(&r));
    let turn = Matrix3::identity() + ax + ax * ax / (1.0 + r.z);
    if turn.iter().all(|x| x.is_finite()) {
        turn
    } else {
        Matrix3::identity()
    }
}

/// Landmarks to SMPL-24 for one body model (the map is fitted once at construction).
#[derive(Debug, Clone)]
pub struct BodyFromLandmarks {
    map: LandmarkMap,
    basis: JointShapeBasis,
}

/// Ridge weight of the shape prior in [`fit_beta`] (betas are unit-variance components).
pub const BETA_RIDGE: f64 = 1e-3;
/// Poses used to fit the landmark map.
const FIT_POSES: usize = 200;

impl BodyFromLandmarks {
    pub fn new(model: &BodyModel) -> Result<Self, String> {
        Ok(Self {
            map: LandmarkMap::fit(model, FIT_POSES, 1)?,
            basis: model.joint_shape_basis(false).map_err(|e| e.to_string())?,
        })
    }

    pub fn map(&self) -> &LandmarkMap {
        &self.map
    }

    /// Joints, shape and confidences of a decoded pose, in the axes of its world landmarks
    /// (camera axes once [`PoseLandmarks::turned`] by [`crop_to_camera`]).
    pub fn estimate(&self, pose: &PoseLandmarks) -> BodyEstimate {
        let world: Vec<Vector3<f64>> = pose
            .world
            .iter()
            .take(LANDMARKS)
            .map(|w| Vector3::new(w.x, w.y, w.z))
            .collect();
        let joints = self.map.joints(&world);
        let root = joints[0];
        let px: Vec<[f64; 2]> = pose
            .landmarks
            .iter()
            .take(LANDMARKS)
            .map(|l| [l.x, l.y])
            .collect();
        let vis: Vec<f64> = pose
            .landmarks
            .iter()
            .take(LANDMARKS)
            .map(|l| f64::from(l.visibility))
            .collect();
        BodyEstimate {
            joints_3d: joints
                .iter()
                .map(|j| [j.x - root.x, j.y - root.y, j.z - root.z])
                .collect(),
            joints_2d: self.map.joints_2d(&px),
            confidence: self.map.confidences(&vis),
            beta: fit_beta(&self.basis, &joints, BETA_RIDGE),
            landmarks_2d: pose
                .landmarks
                .iter()
                .take(LANDMARKS)
                .map(|l| [l.x, l.y, f64::from(l.visibility)])
                .collect(),
            landmarks_3d: world.iter().map(|w| [w.x, w.y, w.z]).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{crop_to_camera, tile_sides, tiles};
    use ikol_body::nalgebra::{Matrix3, Vector3};
    use ikol_types::Intrinsics;

    #[test]
    fn the_crop_view_turns_onto_the_ray_through_the_crop_centre() {
        let k = Intrinsics {
            fx: 1681.2,
            fy: 1650.0,
            cx: 533.0,
            cy: 948.1,
        };
        // At the principal point the crop looks along the optical axis.
        let r0 = crop_to_camera(&k, [k.cx, k.cy]);
        assert!((r0 - Matrix3::identity()).norm() < 1e-12);
        for centre in [[40.0, 100.0], [1000.0, 1800.0], [533.0, 20.0]] {
            let r = crop_to_camera(&k, centre);
            // A rotation...
            assert!((r.transpose() * r - Matrix3::identity()).norm() < 1e-12);
            assert!((r.determinant() - 1.0).abs() < 1e-12);
            // ...taking the optical axis onto the ray through the centre: the camera projects
            // the turned axis onto the centre pixel...
            let ray = r * Vector3::z();
            let uv = k.project(&ray).expect("in front of the camera");
            assert!((uv[0] - centre[0]).abs() < 1e-9 && (uv[1] - centre[1]).abs() < 1e-9);
            // ...about the axis perpendicular to both (no roll about the ray): the axis stays put,
            // and the turn is the angle between them.
            let axis = Vector3::z().cross(&ray).normalize();
            assert!((r * axis - axis).norm() < 1e-12);
            let angle = ((r.trace() - 1.0) / 2.0).acos();
            assert!((angle - ray.z.acos()).abs() < 1e-9);
        }
        // No finite ray: the landmarks stay as they are.
        let flat = Intrinsics { fx: 0.0, ..k };
        assert_eq!(crop_to_camera(&flat, [40.0, 100.0]), Matrix3::identity());
        assert_eq!(crop_to_camera(&k, [f64::NAN, 100.0]), Matrix3::identity());
    }

    #[test]
    fn tiles_cover_the_frame_with_overlap() {
        assert_eq!(
            tile_sides(640, 480),
            Vec::<usize>::new(),
            "4:3, 240 px tiles too small"
        );
        assert_eq!(tile_sides(1080, 1920), vec![1080, 540]);
        let t = tiles(1080, 1920, 1080);
        assert_eq!(t, vec![(0, 0, 1080), (0, 420, 1080), (0, 840, 1080)]);
        let t = tiles(1080, 1920, 540);
        // 3 columns x 5 rows, the last ones flush with the frame's edges.
        assert_eq!(t.len(), 15);
        assert!(t.contains(&(540, 1380, 540)) && t.contains(&(0, 0, 540)));
        for w in t.windows(2).filter(|w| w[0].1 == w[1].1) {
            assert!(w[1].0 - w[0].0 <= 540 * 3 / 4, "{t:?}");
        }
        assert!(tiles(100, 100, 540).is_empty());
    }
}
