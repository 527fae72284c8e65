//! BlazePose pre- and post-processing in pure Rust (no GStreamer, no model runtime): what
//! mediapipe's `PoseLandmarkCpu` graph does around its two TensorFlow Lite models
//! (`pose_detection.tflite`, `pose_landmark_full.tflite` of the `mediapipe==0.10.21` wheel).
//!
//! Every constant comes from the mediapipe graph configs and calculators at tag `v0.10.21`
//! (google-ai-edge/mediapipe), cited next to it, and was checked against the subgraph configs
//! compiled into the 0.10.21 wheel (`_framework_bindings` shared object) and its
//! `pose_landmark_cpu.binarypb`. Only facts were taken, no code.
//!
//! The chain, per frame (`mediapipe/modules/pose_landmark/pose_landmark_cpu.pbtxt`):
//! 1. without a ROI from the previous frame: [`detector_input`] (letterbox to 224x224, values
//!    in [-1, 1]) -> detector -> [`DetectorPostprocess::run`] (SSD anchors, decoding, weighted
//!    NMS, letterbox removal) -> the first detection -> [`detection_roi`];
//! 2. [`landmark_input`] (the rotated ROI warped to 256x256, values in [0, 1]) -> landmark
//!    model -> [`decode_pose`] (landmarks in frame pixels, world landmarks in metres);
//! 3. [`PoseLandmarks::next_roi`] (from the two auxiliary landmarks) is the next frame's ROI;
//!    when the pose flag is not above the threshold there is no pose and the next frame
//!    detects again. [`RoiTracker`] keeps that state and applies mediapipe's temporal filters
//!    ([`smoothing`]; the auxiliary landmarks are always filtered before they give the ROI).
//!
//! Checked against mediapipe 0.10.21's Python solution (`model_complexity=1`) on real
//! 1080x1920 frames of a person: with the same model outputs, detection scores, boxes and
//! keypoints agree to 2e-7 (normalised), the ROIs to 1e-3 px, landmarks to 0.1 px, world
//! landmarks to 1.5e-4 m, the next ROI to 0.01 px; the 256x256 crop equals OpenCV's
//! `warpPerspective` except for 13 of 196608 bytes (off by <= 2). In video mode, with this
//! crate's TensorFlow Lite interpreter, 16 tracked frames stay within 1.3 px of mediapipe.
//!
//! Geometry: pixel coordinates of the frame, x right, y down; a [`RotatedRect`]'s rotation is
//! in radians, positive clockwise on screen (its "up" turns towards +x).

pub mod anchors;
pub mod detection;
pub mod landmarks;
pub mod roi;
pub mod smoothing;
pub mod warp;

pub use anchors::{Anchor, SsdAnchorOptions, generate_anchors};
pub use detection::{
    BoxFormat, DecodeOptions, NmsAlgorithm, NmsOptions, OverlapType, PoseDetection,
    decode_detections, non_max_suppression, overlap_similarity, remove_letterbox,
};
pub use landmarks::{
    Landmark, LandmarkOutputs, NormLandmark, POSE_PRESENCE_THRESHOLD, PoseLandmarks, WorldLandmark,
    decode_pose, roi_from_aux_landmarks,
};
pub use roi::{
    Letterbox, Padding, RoiOptions, RotatedRect, Square, letterbox, normalize_radians,
    roi_from_alignment_points, roi_from_keypoints,
};
pub use smoothing::{LandmarksSmoother, OneEuroFilter, OneEuroParams, PoseSmoother};
pub use warp::{
    BorderMode, ImageToTensorOptions, TensorInput, check_frame, detector_input, image_to_tensor,
    landmark_input, warp_frame, warp_rgb8,
};

/// Errors of the BlazePose pre- and post-processing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlazePoseError {
    /// A model output or input with the wrong number of values.
    #[error("BlazePose {tensor}: {got} values, expected {expected}")]
    TensorSize {
        /// Which tensor.
        tensor: &'static str,
        /// Values given.
        got: usize,
        /// Values required.
        expected: usize,
    },
    /// An image whose buffer does not match its size.
    #[error(
        "BlazePose input image {width}x{height} with stride {stride} needs more than the {len} bytes given (or is empty)"
    )]
    BadImage {
        width: usize,
        height: usize,
        stride: usize,
        len: usize,
    },
    /// A region of interest that is empty or not finite.
    #[error("BlazePose region of interest {roi:?} is empty or not finite")]
    BadRoi { roi: RotatedRect },
    /// Inconsistent options.
    #[error("BlazePose options: {reason}")]
    BadOptions { reason: String },
}

/// The detector's post-processing: anchors, decoding, NMS and letterbox removal, with the
/// options of `pose_detection_cpu.pbtxt`.
#[derive(Debug, Clone)]
pub struct DetectorPostprocess {
    pub anchors: Vec<Anchor>,
    pub decode: DecodeOptions,
    pub nms: NmsOptions,
}

impl Default for DetectorPostprocess {
    fn default() -> Self {
        Self::pose_detection()
    }
}

impl DetectorPostprocess {
    /// mediapipe's pose detector settings (2254 anchors).
    pub fn pose_detection() -> Self {
        Self {
            anchors: generate_anchors(&SsdAnchorOptions::pose_detection()),
            decode: DecodeOptions::pose_detection(),
            nms: NmsOptions::POSE_DETECTION,
        }
    }

    /// Detections normalised to the frame (0..1), best first: `raw_boxes` is the detector's
    /// `Identity` ([1, 2254, 12]) and `raw_scores` its `Identity_1` ([1, 2254, 1]) flattened;
    /// `padding` is [`TensorInput::padding`] of the detector input.
    pub fn run(
        &self,
        raw_boxes: &[f32],
        raw_scores: &[f32],
        padding: &Padding,
    ) -> Result<Vec<PoseDetection>, BlazePoseError> {
        let decoded = decode_detections(raw_boxes, raw_scores, &self.anchors, &self.decode)?;
        let kept = non_max_suppression(&decoded, &self.nms);
        Ok(kept.iter().map(|d| remove_letterbox(d, padding)).collect())
    }
}

/// The landmark ROI of a detection normalised to a `width` x `height` frame
/// (`PoseDetectionToRoi`: keypoint 0 = hip centre, keypoint 1 = full-body size and rotation).
pub fn detection_roi(d: &PoseDetection, width: usize, height: usize) -> Option<RotatedRect> {
    let r = roi_from_keypoints(&d.keypoints_pixels(width, height), &RoiOptions::POSE)?;
    r.is_valid().then_some(r)
}

impl PoseDetection {
    /// As the crate's generic [`crate::Detection`] (face box in pixels and score).
    pub fn to_detection(&self, width: usize, height: usize) -> crate::Detection {
        crate::Detection {
            bbox: self.bbox_pixels(width, height),
            score: f64::from(self.score),
        }
    }
}

/// The tracking state of `PoseLandmarkCpu` in video mode: the ROI from the previous frame's
/// (filtered) auxiliary landmarks, if the pose was present; otherwise the next frame runs the
/// detector (`GateCalculator` `DISALLOW:prev_pose_rect_from_landmarks_is_present` in
/// `pose_landmark_cpu.pbtxt`). It also applies `PoseLandmarkFiltering` to each pose.
#[derive(Debug, Clone)]
pub struct RoiTracker {
    prev: Option<RotatedRect>,
    smoother: PoseSmoother,
}

impl Default for RoiTracker {
    /// With `smooth_landmarks` on, the Python solution's default in video mode.
    fn default() -> Self {
        Self::new(true)
    }
}

impl RoiTracker {
    /// `smooth_landmarks`: also filter the body and world landmarks (the auxiliary landmarks
    /// that give the next ROI are always filtered, as in mediapipe).
    pub fn new(smooth_landmarks: bool) -> Self {
        Self {
            prev: None,
            smoother: PoseSmoother::new(smooth_landmarks),
        }
    }

    /// The ROI to use for this frame, or `None` when the detector must run.
    pub fn roi(&self) -> Option<RotatedRect> {
        self.prev
    }

    /// Records this frame's result at `timestamp_us` (increasing): filters the pose in place
    /// and keeps the next ROI from its auxiliary landmarks; `None` (pose lost) resets the
    /// filters and makes the next frame detect.
    pub fn update(&mut self, pose: Option<&mut PoseLandmarks>, timestamp_us: i64) {
        match pose {
            Some(p) => {
                self.smoother.apply(Some(&mut *p), timestamp_us);
                self.prev = p.next_roi();
            }
            None => self.reset(),
        }
    }

    /// Forgets the ROI and the filter history (the next frame detects).
    pub fn reset(&mut self) {
        self.prev = None;
        self.smoother.reset();
    }
}
