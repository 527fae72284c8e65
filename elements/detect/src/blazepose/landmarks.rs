//! Decoding of the landmark model's outputs (`pose_landmark_full.tflite`) into frame pixels
//! and rotated world coordinates, and the next frame's ROI from the auxiliary landmarks.
//!
//! Facts from mediapipe v0.10.21 (`mediapipe/modules/pose_landmark/`, confirmed in the
//! subgraphs compiled into the 0.10.21 wheel):
//! - `tensors_to_pose_landmarks_and_segmentation.pbtxt`: outputs in model order are
//!   landmarks `Identity [1,195]`, pose flag `Identity_1 [1,1]`, segmentation
//!   `Identity_2 [1,256,256,1]`, heatmap `Identity_3 [1,64,64,39]`, world landmarks
//!   `Identity_4 [1,117]`. The pose flag goes through `TensorsToFloatsCalculator` without
//!   activation (the model ends that branch with its own LOGISTIC op, so the value is already a
//!   probability) and `ThresholdingCalculator` (`threshold: 0.5`, present iff `value > 0.5`;
//!   the Python solution sets it from `min_tracking_confidence`, default 0.5). Landmarks:
//!   `TensorsToLandmarksCalculator` `num_landmarks: 39`, `input_image_width/height: 256`,
//!   `visibility_activation`/`presence_activation: SIGMOID` (so 195 = 39 x 5: x, y, z in crop
//!   pixels, visibility and presence logits), then `RefineLandmarksFromHeatmapCalculator`
//!   (`kernel_size: 7` in the config, but the wheel behaves as 9: see [`REFINE_KERNEL_SIZE`]),
//!   then split 0..33 (body) and 33..35 (auxiliary). World landmarks:
//!   `num_landmarks: 39` (117 = 39 x 3, metres), split 0..33, visibility and presence copied
//!   from the body landmarks (`VisibilityCopyCalculator`).
//! - `mediapipe/calculators/tensor/tensors_to_landmarks_calculator.cc`: normalised
//!   `x / 256`, `y / 256`, `z / 256 / normalize_z` (`normalize_z` default 1).
//! - `mediapipe/calculators/util/refine_landmarks_from_heatmap_calculator.cc`
//!   (`RefineLandmarksFromHeatMap`; `min_confidence_to_refine` default 0.5, refine presence and
//!   visibility default false): centre cell `(int)(x * 64), (int)(y * 64)`, a kernel x kernel
//!   window clipped to the map, sigmoid confidences; if the window's maximum confidence is
//!   >= 0.5 the landmark moves to the confidence-weighted mean cell index divided by 64.
//! - `pose_landmarks_and_segmentation_inverse_projection.pbtxt`:
//!   `LandmarkLetterboxRemovalCalculator` (`x' = (x - left) / (1 - left - right)`, same for y,
//!   `z' = z / (1 - left - right)`), then `LandmarkProjectionCalculator` with the ROI only
//!   (`landmark_projection_calculator.cc`: `(x, y) - 0.5` rotated by the ROI rotation, times the
//!   ROI width / height, plus the ROI centre; `z` times the ROI width), and
//!   `WorldLandmarkProjectionCalculator` (`world_landmark_projection_calculator.cc`: x and y
//!   rotated by the ROI rotation, z unchanged).
//! - `pose_landmarks_to_roi.pbtxt`: the next ROI from the two auxiliary landmarks as alignment
//!   points (start = 33, end = 34), same options as from a detection.

use ikol_body::nalgebra::{Matrix3, Vector3};

use super::BlazePoseError;
use super::roi::{Padding, RoiOptions, RotatedRect, roi_from_alignment_points};

/// Landmarks the model outputs (`num_landmarks: 39`).
pub const MODEL_LANDMARKS: usize = 39;
/// Body landmarks (split range 0..33).
pub const BODY_LANDMARKS: usize = 33;
/// The body landmarks' left/right pairs (mediapipe's landmark topology: eyes, ear, mouth,
/// shoulders, elbows, wrists, pinky, index, thumb, hips, knees, ankles, heels, foot index).
pub const LEFT_RIGHT_PAIRS: [(usize, usize); 16] = [
    (1, 4),
    (2, 5),
    (3, 6),
    (7, 8),
    (9, 10),
    (11, 12),
    (13, 14),
    (15, 16),
    (17, 18),
    (19, 20),
    (21, 22),
    (23, 24),
    (25, 26),
    (27, 28),
    (29, 30),
    (31, 32),
];

/// Swaps left and right labels of a body's landmarks (any per-landmark rows, 33 or more).
pub fn swap_left_right<T>(rows: &mut [T]) {
    for (l, r) in LEFT_RIGHT_PAIRS {
        if r < rows.len() {
            rows.swap(l, r);
        }
    }
}

/// Auxiliary landmarks used for tracking (split range 33..35).
pub const AUX_LANDMARKS: std::ops::Range<usize> = 33..35;
/// Values per landmark in `Identity` (195 / 39).
pub const LANDMARK_DIMS: usize = 5;
/// Values per world landmark in `Identity_4` (117 / 39).
pub const WORLD_DIMS: usize = 3;
/// The landmark model's input side (`input_image_width/height: 256`).
pub const LANDMARK_INPUT_SIZE: usize = 256;
/// Heatmap `Identity_3`: 64 x 64 x 39.
pub const HEATMAP_SIZE: usize = 64;
/// The heatmap refinement window. `tensors_to_pose_landmarks_and_segmentation.pbtxt` sets
/// `RefineLandmarksFromHeatmapCalculatorOptions.kernel_size: 7` (also in the subgraph compiled
/// into the 0.10.21 wheel), but the wheel's output matches the proto default, 9
/// (`refine_landmarks_from_heatmap_calculator.proto` field 1), on every landmark (within
/// 0.03 px on three real 1080x1920 frames, against up to 3.4 px with 7). We follow the wheel.
pub const REFINE_KERNEL_SIZE: usize = 9;
/// `min_confidence_to_refine` (not set: proto default 0.5).
pub const MIN_CONFIDENCE_TO_REFINE: f32 = 0.5;
/// `ThresholdingCalculatorOptions.threshold: 0.5` on the pose flag.
pub const POSE_PRESENCE_THRESHOLD: f32 = 0.5;

/// The 33 body landmark names, in model order (comment of `pose_landmark_cpu.pbtxt`).
pub const LANDMARK_NAMES: [&str; BODY_LANDMARKS] = [
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
];

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// A landmark normalised to the model's input crop (0..1), `z` on the scale of `x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormLandmark {
    pub x: f32,
    pub y: f32,
    pub z: f32,
    pub visibility: f32,
    pub presence: f32,
}

/// A landmark in frame pixels; `z` is depth relative to the hips on the scale of `x` (pixels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Landmark {
    pub x: f64,
    pub y: f64,
    pub z: f64,
    /// Sigmoid of the visibility logit.
    pub visibility: f32,
    /// Sigmoid of the presence logit.
    pub presence: f32,
}

/// A world landmark: metres, origin at the hips' centre, in the view of the crop (x right,
/// y down, after undoing the ROI's in-plane rotation): the axes of a camera looking along the
/// ray through the crop's centre, until [`PoseLandmarks::turned`] puts them in camera axes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorldLandmark {
    pub x: f64,
    pub y: f64,
    pub z: f64,
    pub visibility: f32,
    pub presence: f32,
}

/// The landmark model's outputs, flattened.
#[derive(Debug, Clone, Copy)]
pub struct LandmarkOutputs<'a> {
    /// `Identity`, 195 values.
    pub landmarks: &'a [f32],
    /// `Identity_1`, the pose-presence probability.
    pub pose_flag: f32,
    /// `Identity_3`, 64 x 64 x 39 heatmap logits (HWC), or `None` to skip the refinement.
    pub heatmap: Option<&'a [f32]>,
    /// `Identity_4`, 117 values.
    pub world: &'a [f32],
}

/// The ROI and letterbox under which a horizontally **mirrored** crop of `width` pixels is the
/// crop of a frame mirrored about `x = 0`: centre `(-cx, cy)`, rotation negated, left and right
/// padding exchanged. Crop pixel `i` sits at `u = i / width` of the crop
/// ([`RotatedRect::crop_to_frame`]), so the mirror `i -> width - 1 - i` is
/// `u -> (width - 1) / width - u`: the padding moves by one pixel's fraction to the left. A pose
/// decoded from the mirrored crop with them ([`decode_pose`]) is the pose of that mirrored
/// frame; [`PoseLandmarks::unmirrored`] turns it back.
pub fn mirrored_roi(roi: &RotatedRect, padding: &Padding, width: usize) -> (RotatedRect, Padding) {
    let pixel = 1.0 / width.max(1) as f64;
    (
        RotatedRect {
            cx: -roi.cx,
            rotation: -roi.rotation,
            ..*roi
        },
        [
            padding[2] - pixel,
            padding[1],
            padding[0] + pixel,
            padding[3],
        ],
    )
}

/// Whether two poses of one person name left and right the other way round: their paired body
/// landmarks lie nearer each other in the frame with one pose's sides exchanged. (BlazePose may
/// see a back for a front in one pass and not in the other.) A NaN compares false: no.
pub fn sides_disagree(a: &PoseLandmarks, b: &PoseLandmarks) -> bool {
    let px = |p: &Landmark, q: &Landmark| (p.x - q.x).hypot(p.y - q.y);
    let (mut same, mut exchanged) = (0.0, 0.0);
    for (l, r) in LEFT_RIGHT_PAIRS {
        if let (Some(al), Some(ar), Some(bl), Some(br)) = (
            a.landmarks.get(l),
            a.landmarks.get(r),
            b.landmarks.get(l),
            b.landmarks.get(r),
        ) {
            same += px(al, bl) + px(ar, br);
            exchanged += px(al, br) + px(ar, bl);
        }
    }
    exchanged < same
}

/// A decoded pose.
#[derive(Debug, Clone, PartialEq)]
pub struct PoseLandmarks {
    /// The pose-presence probability (`Identity_1`).
    pub presence: f32,
    /// 33 body landmarks in frame pixels.
    pub landmarks: Vec<Landmark>,
    /// The 2 auxiliary landmarks in frame pixels (hip centre, full-body size/rotation point).
    pub auxiliary: Vec<Landmark>,
    /// 33 world landmarks in metres.
    pub world: Vec<WorldLandmark>,
}

impl PoseLandmarks {
    /// The ROI for the next frame (`PoseLandmarksToRoi`).
    pub fn next_roi(&self) -> Option<RotatedRect> {
        roi_from_aux_landmarks(&self.auxiliary)
    }

    /// The pose of a frame mirrored about `x = 0` ([`mirrored_roi`]) as the pose of the frame:
    /// `x -> -x` (pixels and world), left and right landmarks exchanged. The auxiliary
    /// landmarks (hip centre, body-size point) lie on the midline: mirrored, not exchanged.
    pub fn unmirrored(mut self) -> Self {
        for l in self.landmarks.iter_mut().chain(&mut self.auxiliary) {
            l.x = -l.x;
        }
        for w in &mut self.world {
            w.x = -w.x;
        }
        swap_left_right(&mut self.landmarks);
        swap_left_right(&mut self.world);
        self
    }

    /// The pose with its world landmarks turned by `r` (from the crop's view into camera axes:
    /// [`crate::blazepose_model::crop_to_camera`]).
    pub fn turned(mut self, r: &Matrix3<f64>) -> Self {
        for w in &mut self.world {
            let v = r * Vector3::new(w.x, w.y, w.z);
            (w.x, w.y, w.z) = (v.x, v.y, v.z);
        }
        self
    }

    /// The mean of two poses of the same person (positions, world positions, probabilities).
    pub fn mean_with(mut self, o: &Self) -> Self {
        self.presence = 0.5 * (self.presence + o.presence);
        let mean = |a: &mut Landmark, b: &Landmark| {
            a.x = 0.5 * (a.x + b.x);
            a.y = 0.5 * (a.y + b.y);
            a.z = 0.5 * (a.z + b.z);
            a.visibility = 0.5 * (a.visibility + b.visibility);
            a.presence = 0.5 * (a.presence + b.presence);
        };
        for (a, b) in self.landmarks.iter_mut().zip(&o.landmarks) {
            mean(a, b);
        }
        for (a, b) in self.auxiliary.iter_mut().zip(&o.auxiliary) {
            mean(a, b);
        }
        for (a, b) in self.world.iter_mut().zip(&o.world) {
            a.x = 0.5 * (a.x + b.x);
            a.y = 0.5 * (a.y + b.y);
            a.z = 0.5 * (a.z + b.z);
            a.visibility = 0.5 * (a.visibility + b.visibility);
            a.presence = 0.5 * (a.presence + b.presence);
        }
        self
    }
}

/// `TensorsToLandmarksCalculator` with normalised output: `raw` holds `n` landmarks of
/// `raw.len() / n` values (x, y, z, visibility logit, presence logit) in pixels of an
/// `input_w` x `input_h` crop. Missing values (fewer than 5 dims) are 0.
pub fn tensor_to_landmarks(
    raw: &[f32],
    n: usize,
    input_w: usize,
    input_h: usize,
) -> Result<Vec<NormLandmark>, BlazePoseError> {
    if n == 0 || raw.len() < n || !raw.len().is_multiple_of(n) {
        return Err(BlazePoseError::TensorSize {
            tensor: "landmarks",
            got: raw.len(),
            expected: n * LANDMARK_DIMS,
        });
    }
    let dims = raw.len() / n;
    let get = |v: &[f32], k: usize| v.get(k).copied();
    Ok(raw
        .chunks_exact(dims)
        .map(|v| NormLandmark {
            x: v[0] / input_w as f32,
            y: get(v, 1).unwrap_or(0.0) / input_h as f32,
            // normalize_z default 1.0
            z: get(v, 2).unwrap_or(0.0) / input_w as f32,
            visibility: get(v, 3).map(sigmoid).unwrap_or(0.0),
            presence: get(v, 4).map(sigmoid).unwrap_or(0.0),
        })
        .collect())
}

/// `RefineLandmarksFromHeatMap` (positions only): `heatmap` is `hm_h` x `hm_w` x
/// `landmarks.len()` logits (HWC).
pub fn refine_from_heatmap(
    landmarks: &mut [NormLandmark],
    heatmap: &[f32],
    hm_h: usize,
    hm_w: usize,
    kernel_size: usize,
    min_confidence: f32,
) -> Result<(), BlazePoseError> {
    let ch = landmarks.len();
    if heatmap.len() != hm_h * hm_w * ch {
        return Err(BlazePoseError::TensorSize {
            tensor: "heatmap",
            got: heatmap.len(),
            expected: hm_h * hm_w * ch,
        });
    }
    let (hw, hh) = (hm_w as i64, hm_h as i64);
    let off = (kernel_size as i64 - 1) / 2;
    for (l, lm) in landmarks.iter_mut().enumerate() {
        // C++ float -> int conversion truncates towards zero, as `as` does
        let col = (lm.x * hm_w as f32) as i64;
        let row = (lm.y * hm_h as f32) as i64;
        if col < 0 || col >= hw || row < 0 || row >= hh {
            continue;
        }
        let (mut sum, mut wc, mut wr, mut max_conf) = (0f32, 0f32, 0f32, 0f32);
        for r in (row - off).max(0)..(row + off + 1).min(hh) {
            for c in (col - off).max(0)..(col + off + 1).min(hw) {
                let conf = sigmoid(heatmap[(r as usize * hm_w + c as usize) * ch + l]);
                sum += conf;
                max_conf = max_conf.max(conf);
                wc += c as f32 * conf;
                wr += r as f32 * conf;
            }
        }
        if max_conf >= min_confidence && sum > 0.0 {
            lm.x = wc / hm_w as f32 / sum;
            lm.y = wr / hm_h as f32 / sum;
        }
    }
    Ok(())
}

/// `LandmarkLetterboxRemovalCalculator` then `LandmarkProjectionCalculator` (ROI without image
/// dimensions), in pixels: `roi` is the ROI the crop was requested for (before padding) and
/// `padding` the letterbox of the crop.
pub fn project_landmarks(
    lms: &[NormLandmark],
    roi: &RotatedRect,
    padding: &Padding,
) -> Vec<Landmark> {
    let [left, top, right, bottom] = *padding;
    let (sx, sy) = (1.0 - left - right, 1.0 - top - bottom);
    let (s, c) = roi.rotation.sin_cos();
    lms.iter()
        .map(|lm| {
            let x = (f64::from(lm.x) - left) / sx - 0.5;
            let y = (f64::from(lm.y) - top) / sy - 0.5;
            let z = f64::from(lm.z) / sx;
            Landmark {
                x: (c * x - s * y) * roi.w + roi.cx,
                y: (s * x + c * y) * roi.h + roi.cy,
                z: z * roi.w,
                visibility: lm.visibility,
                presence: lm.presence,
            }
        })
        .collect()
}

/// `TensorsToLandmarksCalculator` (absolute) + `WorldLandmarkProjectionCalculator`: the first
/// `n` of the `raw.len() / 3` world landmarks, x and y rotated by `rotation` (radians).
pub fn project_world_landmarks(
    raw: &[f32],
    rotation: f64,
    n: usize,
) -> Result<Vec<WorldLandmark>, BlazePoseError> {
    if !raw.len().is_multiple_of(WORLD_DIMS) || raw.len() < n * WORLD_DIMS {
        return Err(BlazePoseError::TensorSize {
            tensor: "world landmarks",
            got: raw.len(),
            expected: MODEL_LANDMARKS * WORLD_DIMS,
        });
    }
    let (s, c) = rotation.sin_cos();
    Ok(raw
        .chunks_exact(WORLD_DIMS)
        .take(n)
        .map(|v| {
            let (x, y) = (f64::from(v[0]), f64::from(v[1]));
            WorldLandmark {
                x: c * x - s * y,
                y: s * x + c * y,
                z: f64::from(v[2]),
                visibility: 0.0,
                presence: 0.0,
            }
        })
        .collect())
}

/// The whole landmark post-processing of `PoseLandmarkByRoiCpu`: `None` when the pose flag is
/// not above `presence_threshold` ([`POSE_PRESENCE_THRESHOLD`] in mediapipe's graph). `roi` is
/// the requested ROI and `padding` the crop's letterbox (both in
/// [`super::warp::TensorInput`]).
pub fn decode_pose(
    out: &LandmarkOutputs<'_>,
    roi: &RotatedRect,
    padding: &Padding,
    presence_threshold: f32,
) -> Result<Option<PoseLandmarks>, BlazePoseError> {
    if out.landmarks.len() != MODEL_LANDMARKS * LANDMARK_DIMS {
        return Err(BlazePoseError::TensorSize {
            tensor: "landmarks (Identity)",
            got: out.landmarks.len(),
            expected: MODEL_LANDMARKS * LANDMARK_DIMS,
        });
    }
    if out.world.len() != MODEL_LANDMARKS * WORLD_DIMS {
        return Err(BlazePoseError::TensorSize {
            tensor: "world landmarks (Identity_4)",
            got: out.world.len(),
            expected: MODEL_LANDMARKS * WORLD_DIMS,
        });
    }
    // ThresholdingCalculator: accept iff value > threshold
    let present = out.pose_flag > presence_threshold;
    if !present {
        return Ok(None);
    }
    let mut norm = tensor_to_landmarks(
        out.landmarks,
        MODEL_LANDMARKS,
        LANDMARK_INPUT_SIZE,
        LANDMARK_INPUT_SIZE,
    )?;
    if let Some(hm) = out.heatmap {
        refine_from_heatmap(
            &mut norm,
            hm,
            HEATMAP_SIZE,
            HEATMAP_SIZE,
            REFINE_KERNEL_SIZE,
            MIN_CONFIDENCE_TO_REFINE,
        )?;
    }
    let landmarks = project_landmarks(&norm[..BODY_LANDMARKS], roi, padding);
    let auxiliary = project_landmarks(&norm[AUX_LANDMARKS], roi, padding);
    let mut world = project_world_landmarks(out.world, roi.rotation, BODY_LANDMARKS)?;
    for (w, l) in world.iter_mut().zip(&landmarks) {
        // VisibilityCopyCalculator: copy_visibility, copy_presence
        w.visibility = l.visibility;
        w.presence = l.presence;
    }
    Ok(Some(PoseLandmarks {
        presence: out.pose_flag,
        landmarks,
        auxiliary,
        world,
    }))
}

/// The ROI from the two auxiliary landmarks in frame pixels (`PoseLandmarksToRoi`).
pub fn roi_from_aux_landmarks(aux: &[Landmark]) -> Option<RotatedRect> {
    let o = RoiOptions::POSE;
    let start = aux.get(o.start_keypoint)?;
    let end = aux.get(o.end_keypoint)?;
    let r = roi_from_alignment_points([start.x, start.y], [end.x, end.y], &o);
    r.is_valid().then_some(r)
}
