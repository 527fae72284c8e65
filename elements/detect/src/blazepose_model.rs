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

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ikol_body::nalgebra::Vector3;
use ikol_body::{BodyModel, JointShapeBasis};
use ikol_types::BBox;

use crate::blazepose::{
    DetectorPostprocess, LandmarkOutputs, POSE_PRESENCE_THRESHOLD, PoseDetection, PoseLandmarks,
    RotatedRect, decode_pose, detection_roi, detector_input, landmark_input,
};
use crate::landmarks_smpl::{LANDMARKS, LandmarkMap, fit_beta};
use crate::tflite;
use crate::{DetectError, Detection, PersonDetector, RgbImage};

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
    pub fn detect_poses(
        &self,
        image: &RgbImage<'_>,
    ) -> Result<Vec<(PoseDetection, RotatedRect)>, DetectError> {
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
            .filter_map(|d| detection_roi(&d, image.width, image.height).map(|r| (d, r)))
            .collect())
    }
}

/// The axis-aligned box around a region of interest (the body, where the detection box is the
/// face).
pub fn roi_box(roi: &RotatedRect) -> Option<BBox> {
    BBox::around_points(roi.corners(), 1.0).filter(BBox::is_valid)
}

impl PersonDetector for BlazePoseDetector {
    fn name(&self) -> &str {
        "blazepose"
    }

    /// People as the boxes around their landmark regions of interest (square, 1.25x the body).
    fn detect(&mut self, image: &RgbImage<'_>) -> Result<Vec<Detection>, DetectError> {
        Ok(self
            .detect_poses(image)?
            .into_iter()
            .filter_map(|(d, roi)| {
                roi_box(&roi).map(|bbox| Detection {
                    bbox,
                    score: f64::from(d.score),
                })
            })
            .collect())
    }
}

/// The BlazePose landmark model (full).
#[derive(Debug)]
pub struct BlazePoseLandmarker {
    model: tflite::Model,
}

impl BlazePoseLandmarker {
    /// Loads `pose_landmark_full.tflite` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, DetectError> {
        let mut model = load(dir, LANDMARK_FILE)?;
        // The segmentation mask (`Identity_2`) is not used: skip its steps (~4 ms per frame).
        model
            .retain_outputs(&["Identity", "Identity_1", "Identity_3", "Identity_4"])
            .map_err(failed)?;
        Ok(Self { model })
    }

    /// The pose in `roi`, or `None` when the model says no pose is there.
    pub fn landmarks(
        &self,
        image: &RgbImage<'_>,
        roi: &RotatedRect,
    ) -> Result<Option<PoseLandmarks>, DetectError> {
        let input = landmark_input(image, roi).map_err(failed)?;
        let (h, w) = (input.height, input.width);
        let outs = run(&self.model, input.data, h, w)?;
        let flag = output(&outs, "Identity_1")?;
        let out = LandmarkOutputs {
            landmarks: output(&outs, "Identity")?,
            pose_flag: flag.first().copied().unwrap_or(0.0),
            heatmap: Some(output(&outs, "Identity_3")?),
            world: output(&outs, "Identity_4")?,
        };
        decode_pose(&out, &input.roi, &input.padding, POSE_PRESENCE_THRESHOLD).map_err(failed)
    }
}

/// What the solver needs about one person, from BlazePose landmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyEstimate {
    /// SMPL-24 joints, root-relative, metres, camera axes (x right, y down, z forward).
    pub joints_3d: Vec<[f64; 3]>,
    /// SMPL-24 joints in frame pixels.
    pub joints_2d: Vec<[f64; 2]>,
    /// Per joint, the lowest visibility of the landmarks it is made from.
    pub confidence: Vec<f64>,
    /// Shape fitted to the bone lengths.
    pub beta: Vec<f64>,
    /// The 33 landmarks in frame pixels (x, y) with their visibility.
    pub landmarks_2d: Vec<[f64; 3]>,
    /// The 33 world landmarks: metres, origin between the hips, camera axes.
    pub landmarks_3d: Vec<[f64; 3]>,
}

/// Landmarks to SMPL-24 for one body model (the map is fitted once at construction).
#[derive(Debug, Clone)]
pub struct BodyFromLandmarks {
    map: LandmarkMap,
    basis: JointShapeBasis,
}

/// Ridge weight of the shape prior in [`fit_beta`] (betas are unit-variance components).
const BETA_RIDGE: f64 = 1e-3;
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

    /// Joints, shape and confidences of a decoded pose.
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
