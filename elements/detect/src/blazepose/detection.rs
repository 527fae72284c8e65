//! Decoding of the pose detector's raw outputs, weighted non-maximum suppression, and removal
//! of the input letterbox.
//!
//! Facts from mediapipe v0.10.21:
//! - `mediapipe/calculators/tensor/tensors_to_detections_calculator.cc` (`DecodeBoxes`,
//!   `ProcessCPU`, `ConvertToDetections`, `GetBoxFormat`): with `reverse_output_order` the raw
//!   box is (x_center, y_center, w, h) and each keypoint (x, y); then
//!   `x = raw_x / x_scale * anchor.w + anchor.x_center` (same for y and every keypoint),
//!   `w = raw_w / w_scale * anchor.w` (same for h); the box is (ymin, xmin, ymax, xmax) around
//!   the centre. Scores: clip the logit to +-`score_clipping_thresh`, then sigmoid; a detection
//!   is kept when `score >= min_score_thresh` and its width and height are >= 0 and not NaN.
//! - `mediapipe/calculators/util/non_max_suppression_calculator.cc`
//!   (`WeightedNonMaxSuppression`, `OverlapSimilarity`): sort by score (descending); take the
//!   best remaining detection; every remaining detection whose overlap with it is
//!   `> min_suppression_threshold` (the best one included) is a candidate; the output keeps the
//!   best one's score and replaces its box corners (xmin, ymin, xmax, ymax) and keypoints by the
//!   score-weighted mean over the candidates; the rest go to the next round. The loop stops
//!   when nothing is left or nothing was removed.
//! - `mediapipe/calculators/util/detection_letterbox_removal_calculator.cc`:
//!   `x' = (x - left) / (1 - left - right)`, `y' = (y - top) / (1 - top - bottom)`, widths and
//!   heights divided by the same factors.
//!
//! Options from `mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt`, confirmed in the
//! `PoseDetectionCpu` subgraph compiled into the 0.10.21 wheel.

use super::BlazePoseError;
use super::anchors::Anchor;
use super::roi::Padding;
use ikol_types::BBox;

/// A detection with its box and keypoints normalised to an image (0..1), as mediapipe's
/// `Detection` with `RELATIVE_BOUNDING_BOX` location data. Which image depends on the stage:
/// the letterboxed detector input after decoding and NMS, the frame after
/// [`remove_letterbox`].
#[derive(Debug, Clone, PartialEq)]
pub struct PoseDetection {
    /// Sigmoid score in [0, 1].
    pub score: f32,
    pub xmin: f32,
    pub ymin: f32,
    pub width: f32,
    pub height: f32,
    /// Keypoints (x, y). For the pose detector: 0 mid-hip centre, 1 the point encoding the
    /// full-body size and rotation, 2 mid-shoulder centre, 3 the point encoding the upper-body
    /// size and rotation (comment of `pose_detection_cpu.pbtxt`).
    pub keypoints: Vec<[f32; 2]>,
}

impl PoseDetection {
    /// The box in pixels of a `width` x `height` image. For the pose detector this is the box of
    /// the face, not of the body (comment of `pose_detection_cpu.pbtxt`).
    pub fn bbox_pixels(&self, width: usize, height: usize) -> BBox {
        let (w, h) = (width as f64, height as f64);
        BBox {
            x: f64::from(self.xmin) * w,
            y: f64::from(self.ymin) * h,
            w: f64::from(self.width) * w,
            h: f64::from(self.height) * h,
        }
    }

    /// The keypoints in pixels of a `width` x `height` image.
    pub fn keypoints_pixels(&self, width: usize, height: usize) -> Vec<[f64; 2]> {
        self.keypoints
            .iter()
            .map(|k| {
                [
                    f64::from(k[0]) * width as f64,
                    f64::from(k[1]) * height as f64,
                ]
            })
            .collect()
    }
}

/// The order of the four box values in the raw tensor (`BoxFormat` of
/// tensors_to_detections_calculator.proto; `reverse_output_order: true` selects `Xywh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFormat {
    /// (y_center, x_center, h, w), keypoints (y, x).
    Yxhw,
    /// (x_center, y_center, w, h), keypoints (x, y).
    Xywh,
}

/// The subset of `TensorsToDetectionsCalculatorOptions` used without a post-processing op in
/// the model.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    pub num_classes: usize,
    pub num_boxes: usize,
    pub num_coords: usize,
    pub box_coord_offset: usize,
    pub keypoint_coord_offset: usize,
    pub num_keypoints: usize,
    pub num_values_per_keypoint: usize,
    pub box_format: BoxFormat,
    pub x_scale: f32,
    pub y_scale: f32,
    pub w_scale: f32,
    pub h_scale: f32,
    pub apply_exponential_on_box_size: bool,
    pub sigmoid_score: bool,
    pub score_clipping_thresh: Option<f32>,
    pub min_score_thresh: Option<f32>,
}

impl DecodeOptions {
    /// The `TensorsToDetectionsCalculator` node of `pose_detection_cpu.pbtxt`.
    pub fn pose_detection() -> Self {
        Self {
            num_classes: 1,                       // num_classes: 1
            num_boxes: 2254,                      // num_boxes: 2254
            num_coords: 12,                       // num_coords: 12
            box_coord_offset: 0,                  // box_coord_offset: 0
            keypoint_coord_offset: 4,             // keypoint_coord_offset: 4
            num_keypoints: 4,                     // num_keypoints: 4
            num_values_per_keypoint: 2,           // num_values_per_keypoint: 2
            box_format: BoxFormat::Xywh,          // reverse_output_order: true (GetBoxFormat)
            x_scale: 224.0,                       // x_scale: 224.0
            y_scale: 224.0,                       // y_scale: 224.0
            w_scale: 224.0,                       // w_scale: 224.0
            h_scale: 224.0,                       // h_scale: 224.0
            apply_exponential_on_box_size: false, // not set: proto default false
            sigmoid_score: true,                  // sigmoid_score: true
            score_clipping_thresh: Some(100.0),   // score_clipping_thresh: 100.0
            // min_score_thresh: 0.5 (the Python solution overrides it with
            // min_detection_confidence, default 0.5: mediapipe/python/solutions/pose.py)
            min_score_thresh: Some(0.5),
        }
    }
}

/// Decodes `raw_boxes` (`[num_boxes, num_coords]`, the detector's `Identity`) and `raw_scores`
/// (`[num_boxes, num_classes]` logits, `Identity_1`) against `anchors` into detections
/// normalised to the detector input, in anchor order (`ProcessCPU` + `DecodeBoxes` +
/// `ConvertToDetections`).
pub fn decode_detections(
    raw_boxes: &[f32],
    raw_scores: &[f32],
    anchors: &[Anchor],
    o: &DecodeOptions,
) -> Result<Vec<PoseDetection>, BlazePoseError> {
    let n = o.num_boxes;
    check_len("raw boxes", raw_boxes.len(), n * o.num_coords)?;
    check_len("raw scores", raw_scores.len(), n * o.num_classes)?;
    check_len("anchors", anchors.len(), n)?;
    let keypoints_end = o.keypoint_coord_offset + o.num_keypoints * o.num_values_per_keypoint;
    if o.num_values_per_keypoint < 2
        || keypoints_end > o.num_coords
        || o.box_coord_offset + 4 > o.num_coords
    {
        return Err(BlazePoseError::BadOptions {
            reason: format!(
                "num_coords {} cannot hold a box at {} and {} keypoints of {} values at {}",
                o.num_coords,
                o.box_coord_offset,
                o.num_keypoints,
                o.num_values_per_keypoint,
                o.keypoint_coord_offset
            ),
        });
    }
    let mut out = Vec::new();
    for (i, a) in anchors.iter().enumerate() {
        // best class score
        let mut score = f32::MIN;
        for c in 0..o.num_classes {
            let mut s = raw_scores[i * o.num_classes + c];
            if o.sigmoid_score {
                if let Some(t) = o.score_clipping_thresh {
                    s = s.clamp(-t, t);
                }
                s = 1.0 / (1.0 + (-s).exp());
            }
            score = score.max(s);
        }
        if o.min_score_thresh.is_some_and(|t| score < t) {
            continue;
        }
        let raw = &raw_boxes[i * o.num_coords..(i + 1) * o.num_coords];
        let b = &raw[o.box_coord_offset..o.box_coord_offset + 4];
        let (xc, yc, w, h) = match o.box_format {
            BoxFormat::Yxhw => (b[1], b[0], b[3], b[2]),
            BoxFormat::Xywh => (b[0], b[1], b[2], b[3]),
        };
        let xc = xc / o.x_scale * a.w + a.x_center;
        let yc = yc / o.y_scale * a.h + a.y_center;
        let (w, h) = if o.apply_exponential_on_box_size {
            ((w / o.w_scale).exp() * a.w, (h / o.h_scale).exp() * a.h)
        } else {
            (w / o.w_scale * a.w, h / o.h_scale * a.h)
        };
        let (xmin, ymin) = (xc - w / 2.0, yc - h / 2.0);
        let (xmax, ymax) = (xc + w / 2.0, yc + h / 2.0);
        let (width, height) = (xmax - xmin, ymax - ymin);
        if width.is_nan() || height.is_nan() || width < 0.0 || height < 0.0 {
            continue;
        }
        let keypoints = (0..o.num_keypoints)
            .map(|k| {
                let off = o.keypoint_coord_offset + k * o.num_values_per_keypoint;
                let (kx, ky) = match o.box_format {
                    BoxFormat::Yxhw => (raw[off + 1], raw[off]),
                    BoxFormat::Xywh => (raw[off], raw[off + 1]),
                };
                [
                    kx / o.x_scale * a.w + a.x_center,
                    ky / o.y_scale * a.h + a.y_center,
                ]
            })
            .collect();
        out.push(PoseDetection {
            score,
            xmin,
            ymin,
            width,
            height,
            keypoints,
        });
    }
    Ok(out)
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), BlazePoseError> {
    if got == expected {
        Ok(())
    } else {
        Err(BlazePoseError::TensorSize {
            tensor: what,
            got,
            expected,
        })
    }
}

/// `NonMaxSuppressionCalculatorOptions.OverlapType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapType {
    /// Intersection over the area of the enclosing box (`Rectangle::Union` is the enclosing
    /// box in mediapipe).
    Jaccard,
    /// Intersection over the area of the retained (best) box.
    ModifiedJaccard,
    /// Intersection over union of areas.
    IntersectionOverUnion,
}

/// `NonMaxSuppressionCalculatorOptions.NmsAlgorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NmsAlgorithm {
    /// Keep the best, drop what overlaps it.
    Default,
    /// Replace the best by the score-weighted mean of what overlaps it.
    Weighted,
}

/// The subset of `NonMaxSuppressionCalculatorOptions` for one detection stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmsOptions {
    pub min_suppression_threshold: f32,
    pub overlap_type: OverlapType,
    pub algorithm: NmsAlgorithm,
    /// Only applied when > 0 (proto default -1).
    pub min_score_threshold: f32,
    /// `None` = no limit (proto default -1). Like mediapipe, only the default algorithm reads it.
    pub max_num_detections: Option<usize>,
}

impl NmsOptions {
    /// The `NonMaxSuppressionCalculator` node of `pose_detection_cpu.pbtxt`.
    pub const POSE_DETECTION: NmsOptions = NmsOptions {
        min_suppression_threshold: 0.3, // min_suppression_threshold: 0.3
        overlap_type: OverlapType::IntersectionOverUnion, // overlap_type: INTERSECTION_OVER_UNION
        algorithm: NmsAlgorithm::Weighted, // algorithm: WEIGHTED
        min_score_threshold: -1.0,      // not set: proto default -1.0
        max_num_detections: None,       // not set: proto default -1
    };
}

/// `OverlapSimilarity(type, rect1, rect2)` of non_max_suppression_calculator.cc; `rect2` is the
/// retained (best) box.
pub fn overlap_similarity(t: OverlapType, r1: &PoseDetection, r2: &PoseDetection) -> f32 {
    let (ax0, ay0, ax1, ay1) = (r1.xmin, r1.ymin, r1.xmin + r1.width, r1.ymin + r1.height);
    let (bx0, by0, bx1, by1) = (r2.xmin, r2.ymin, r2.xmin + r2.width, r2.ymin + r2.height);
    // Rectangle::Intersects: neither empty and they touch or overlap
    let empty = |x0: f32, y0: f32, x1: f32, y1: f32| x0 > x1 || y0 > y1;
    if empty(ax0, ay0, ax1, ay1)
        || empty(bx0, by0, bx1, by1)
        || bx1 < ax0
        || ax1 < bx0
        || by1 < ay0
        || ay1 < by0
    {
        return 0.0;
    }
    let inter = (ax1.min(bx1) - ax0.max(bx0)) * (ay1.min(by1) - ay0.max(by0));
    let area_a = (ax1 - ax0) * (ay1 - ay0);
    let area_b = (bx1 - bx0) * (by1 - by0);
    let norm = match t {
        OverlapType::Jaccard => (ax1.max(bx1) - ax0.min(bx0)) * (ay1.max(by1) - ay0.min(by0)),
        OverlapType::ModifiedJaccard => area_b,
        OverlapType::IntersectionOverUnion => area_a + area_b - inter,
    };
    if norm > 0.0 { inter / norm } else { 0.0 }
}

/// Non-maximum suppression of `NonMaxSuppressionCalculator` (one stream, one class).
pub fn non_max_suppression(detections: &[PoseDetection], o: &NmsOptions) -> Vec<PoseDetection> {
    // GetIndexedScores: indices sorted by descending score (stable here; std::sort is not, so
    // the order of exactly tied scores may differ from mediapipe)
    let mut order: Vec<usize> = (0..detections.len()).collect();
    order.sort_by(|&a, &b| detections[b].score.total_cmp(&detections[a].score));
    match o.algorithm {
        NmsAlgorithm::Default => default_nms(detections, &order, o),
        NmsAlgorithm::Weighted => weighted_nms(detections, order, o),
    }
}

fn default_nms(d: &[PoseDetection], order: &[usize], o: &NmsOptions) -> Vec<PoseDetection> {
    let max = o.max_num_detections.unwrap_or(order.len());
    let mut out: Vec<PoseDetection> = Vec::new();
    for &i in order {
        if o.min_score_threshold > 0.0 && d[i].score < o.min_score_threshold {
            break;
        }
        let suppressed = out
            .iter()
            .any(|r| overlap_similarity(o.overlap_type, r, &d[i]) > o.min_suppression_threshold);
        if !suppressed {
            out.push(d[i].clone());
        }
        if out.len() >= max {
            break;
        }
    }
    out
}

fn weighted_nms(
    d: &[PoseDetection],
    mut remaining: Vec<usize>,
    o: &NmsOptions,
) -> Vec<PoseDetection> {
    let mut out = Vec::new();
    while let Some(&best) = remaining.first() {
        let det = &d[best];
        if o.min_score_threshold > 0.0 && det.score < o.min_score_threshold {
            break;
        }
        let n_before = remaining.len();
        let (candidates, rest): (Vec<usize>, Vec<usize>) = remaining.iter().partition(|&&i| {
            overlap_similarity(o.overlap_type, &d[i], det) > o.min_suppression_threshold
        });
        let mut weighted = det.clone();
        if !candidates.is_empty() {
            let nk = det.keypoints.len();
            let (mut x0, mut y0, mut x1, mut y1, mut total) = (0f32, 0f32, 0f32, 0f32, 0f32);
            let mut kps = vec![[0f32; 2]; nk];
            for &c in &candidates {
                let (cd, s) = (&d[c], d[c].score);
                total += s;
                x0 += cd.xmin * s;
                y0 += cd.ymin * s;
                x1 += (cd.xmin + cd.width) * s;
                y1 += (cd.ymin + cd.height) * s;
                for (k, kp) in kps.iter_mut().enumerate() {
                    if let Some(p) = cd.keypoints.get(k) {
                        kp[0] += p[0] * s;
                        kp[1] += p[1] * s;
                    }
                }
            }
            weighted.xmin = x0 / total;
            weighted.ymin = y0 / total;
            weighted.width = x1 / total - weighted.xmin;
            weighted.height = y1 / total - weighted.ymin;
            weighted.keypoints = kps.iter().map(|k| [k[0] / total, k[1] / total]).collect();
        }
        out.push(weighted);
        if rest.len() == n_before {
            break;
        }
        remaining = rest;
    }
    out
}

/// `DetectionLetterboxRemovalCalculator`: from coordinates normalised to the letterboxed input
/// to coordinates normalised to the original image, given the `padding` of
/// [`super::roi::RotatedRect::pad_to_aspect`] (left, top, right, bottom).
pub fn remove_letterbox(d: &PoseDetection, padding: &Padding) -> PoseDetection {
    let [left, top, right, bottom] = padding.map(|p| p as f32);
    let (sx, sy) = (1.0 - left - right, 1.0 - top - bottom);
    PoseDetection {
        score: d.score,
        xmin: (d.xmin - left) / sx,
        ymin: (d.ymin - top) / sy,
        width: d.width / sx,
        height: d.height / sy,
        keypoints: d
            .keypoints
            .iter()
            .map(|k| [(k[0] - left) / sx, (k[1] - top) / sy])
            .collect(),
    }
}
