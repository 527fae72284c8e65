//! Rotated regions of interest: the letterbox of the detector input, the landmark crop from a
//! detection or from the previous frame's landmarks, and the affine maps between a frame and a
//! crop.
//!
//! Facts from mediapipe v0.10.21:
//! - `mediapipe/calculators/tensor/image_to_tensor_utils.cc`: `GetRoi` (no rect: the whole
//!   image, centre (W/2, H/2), size W x H, rotation 0), `PadRoi` (with `keep_aspect_ratio` the
//!   ROI grows to the tensor's aspect ratio and the padding fractions are returned as
//!   left, top, right, bottom), `GetRotatedSubRectToRectTransformMatrix`;
//! - `mediapipe/calculators/tensor/image_to_tensor_converter_opencv.cc`: the ROI's corners
//!   (`cv::boxPoints`: centre + R(rotation) (+-w/2, +-h/2)) are mapped to the tensor corners
//!   (0, 0), (W, 0), (W, H), (0, H): a crop pixel q is the frame point
//!   `p = c + R(theta) ((q_x / W_out - 1/2) w, (q_y / H_out - 1/2) h)`, with
//!   `R(theta) = [cos -sin; sin cos]` in image coordinates (y down);
//! - `mediapipe/calculators/util/alignment_points_to_rects_calculator.cc`: centre = start
//!   keypoint, side = 2 |end - start| (in pixels, so the rect is square in pixels);
//! - `mediapipe/calculators/util/detections_to_rects_calculator.cc` (`ComputeRotation`,
//!   `NormalizeRadians`): `rotation = normalize(target - atan2(-(y1 - y0), x1 - x0))`, wrapped to
//!   [-pi, pi);
//! - `mediapipe/calculators/util/rect_transformation_calculator.cc`
//!   (`TransformNormalizedRect`): shift (rotated), then `square_long` (both sides = the longer
//!   side in pixels), then scale.
//!
//! The ROI options are those of `mediapipe/modules/pose_landmark/pose_detection_to_roi.pbtxt`
//! and `pose_landmarks_to_roi.pbtxt` (identical), confirmed in the compiled 0.10.21 wheel.

use ikol_types::Affine2;
use std::f64::consts::PI;

/// A rotated rectangle in frame pixels: centre, size, and rotation in radians (positive turns
/// the rectangle's "up" (0, -1) towards +x, i.e. clockwise on screen).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotatedRect {
    pub cx: f64,
    pub cy: f64,
    pub w: f64,
    pub h: f64,
    pub rotation: f64,
}

/// Letterbox padding as fractions of the padded ROI: left, top, right, bottom (the
/// `LETTERBOX_PADDING` stream of `ImageToTensorCalculator`).
pub type Padding = [f64; 4];

/// `NormalizeRadians` of detections_to_rects_calculator.h: wraps to [-pi, pi).
pub fn normalize_radians(angle: f64) -> f64 {
    angle - 2.0 * PI * ((angle + PI) / (2.0 * PI)).floor()
}

impl RotatedRect {
    /// `GetRoi` without a rect: the whole `width` x `height` image.
    pub fn full_image(width: usize, height: usize) -> Self {
        Self {
            cx: 0.5 * width as f64,
            cy: 0.5 * height as f64,
            w: width as f64,
            h: height as f64,
            rotation: 0.0,
        }
    }

    /// `PadRoi` with `keep_aspect_ratio: true`: the ROI enlarged (about its centre, in its own
    /// frame) to the aspect ratio of a `tensor_w` x `tensor_h` tensor, and the padding
    /// fractions. `None` for an empty ROI or tensor.
    pub fn pad_to_aspect(&self, tensor_w: usize, tensor_h: usize) -> Option<(Self, Padding)> {
        if tensor_w == 0 || tensor_h == 0 || !(self.w > 0.0 && self.h > 0.0) {
            return None;
        }
        let tensor_aspect = tensor_h as f64 / tensor_w as f64;
        let roi_aspect = self.h / self.w;
        let mut r = *self;
        let (mut horizontal, mut vertical) = (0.0, 0.0);
        if tensor_aspect > roi_aspect {
            r.h = self.w * tensor_aspect;
            vertical = (1.0 - roi_aspect / tensor_aspect) / 2.0;
        } else {
            r.w = self.h / tensor_aspect;
            horizontal = (1.0 - tensor_aspect / roi_aspect) / 2.0;
        }
        Some((r, [horizontal, vertical, horizontal, vertical]))
    }

    /// The map from crop pixels of a `out_w` x `out_h` tensor to frame pixels (the inverse of
    /// [`RotatedRect::frame_to_crop`]); mediapipe's `GetRotatedSubRectToRectTransformMatrix`
    /// scaled to pixels.
    pub fn crop_to_frame(&self, out_w: usize, out_h: usize) -> Affine2 {
        let (s, c) = self.rotation.sin_cos();
        let (sx, sy) = (self.w / out_w as f64, self.h / out_h as f64);
        Affine2 {
            m: [
                [
                    c * sx,
                    -s * sy,
                    self.cx - 0.5 * c * self.w + 0.5 * s * self.h,
                ],
                [
                    s * sx,
                    c * sy,
                    self.cy - 0.5 * s * self.w - 0.5 * c * self.h,
                ],
            ],
        }
    }

    /// The map from frame pixels to crop pixels of a `out_w` x `out_h` tensor:
    /// `q = diag(out_w / w, out_h / h) R(-theta) (p - c) + (out_w / 2, out_h / 2)`.
    pub fn frame_to_crop(&self, out_w: usize, out_h: usize) -> Affine2 {
        let (s, c) = self.rotation.sin_cos();
        let (kx, ky) = (out_w as f64 / self.w, out_h as f64 / self.h);
        // rows of R(-theta) = [c s; -s c], scaled
        let (a, b, d, e) = (kx * c, kx * s, -ky * s, ky * c);
        Affine2 {
            m: [
                [a, b, 0.5 * out_w as f64 - a * self.cx - b * self.cy],
                [d, e, 0.5 * out_h as f64 - d * self.cx - e * self.cy],
            ],
        }
    }

    /// The corners in `cv::boxPoints` order: bottom-left, top-left, top-right, bottom-right of
    /// the unrotated rectangle (these map to tensor corners (0, H), (0, 0), (W, 0), (W, H)).
    pub fn corners(&self) -> [[f64; 2]; 4] {
        let (s, c) = self.rotation.sin_cos();
        let p = |u: f64, v: f64| {
            [
                self.cx + c * u * self.w - s * v * self.h,
                self.cy + s * u * self.w + c * v * self.h,
            ]
        };
        [p(-0.5, 0.5), p(-0.5, -0.5), p(0.5, -0.5), p(0.5, 0.5)]
    }

    /// A usable ROI: finite with positive size.
    pub fn is_valid(&self) -> bool {
        [self.cx, self.cy, self.w, self.h, self.rotation]
            .iter()
            .all(|v| v.is_finite())
            && self.w > 0.0
            && self.h > 0.0
    }
}

/// How `RectTransformationCalculator` squares the rect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Square {
    None,
    /// `square_long`: both sides become the longer side (in pixels).
    Long,
    /// `square_short`: both sides become the shorter side (in pixels).
    Short,
}

/// `DetectionsToRectsCalculatorOptions` (alignment) + `RectTransformationCalculatorOptions`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiOptions {
    /// `rotation_vector_start_keypoint_index`: the ROI centre.
    pub start_keypoint: usize,
    /// `rotation_vector_end_keypoint_index`: half the ROI side away from the centre.
    pub end_keypoint: usize,
    /// `rotation_vector_target_angle_degrees`, in radians.
    pub target_angle: f64,
    pub shift_x: f64,
    pub shift_y: f64,
    pub square: Square,
    pub scale_x: f64,
    pub scale_y: f64,
}

impl RoiOptions {
    /// `pose_detection_to_roi.pbtxt` and `pose_landmarks_to_roi.pbtxt` (same values).
    pub const POSE: RoiOptions = RoiOptions {
        // AlignmentPointsRectsCalculator: rotation_vector_start_keypoint_index: 0
        start_keypoint: 0,
        // ... rotation_vector_end_keypoint_index: 1
        end_keypoint: 1,
        // ... rotation_vector_target_angle_degrees: 90
        target_angle: PI / 2.0,
        // RectTransformationCalculator: shift_x / shift_y not set (0)
        shift_x: 0.0,
        shift_y: 0.0,
        // ... square_long: true
        square: Square::Long,
        // ... scale_x: 1.25, scale_y: 1.25
        scale_x: 1.25,
        scale_y: 1.25,
    };
}

/// The ROI from two alignment points in frame pixels (`AlignmentPointsRectsCalculator` then
/// `RectTransformationCalculator`). For the pose: `start` = hip centre, `end` = the point that
/// encodes the full-body size and rotation; an upright body (end straight above start) gives
/// rotation 0, a body lying with its head to the right +pi/2.
pub fn roi_from_alignment_points(start: [f64; 2], end: [f64; 2], o: &RoiOptions) -> RotatedRect {
    let (dx, dy) = (end[0] - start[0], end[1] - start[1]);
    let side = 2.0 * (dx * dx + dy * dy).sqrt();
    let rotation = normalize_radians(o.target_angle - (-dy).atan2(dx));
    let mut r = RotatedRect {
        cx: start[0],
        cy: start[1],
        w: side,
        h: side,
        rotation,
    };
    transform_rect(&mut r, o);
    r
}

/// `RectTransformationCalculator::TransformNormalizedRect` in pixels (no extra rotation).
fn transform_rect(r: &mut RotatedRect, o: &RoiOptions) {
    if r.rotation == 0.0 {
        r.cx += r.w * o.shift_x;
        r.cy += r.h * o.shift_y;
    } else {
        let (s, c) = r.rotation.sin_cos();
        r.cx += r.w * o.shift_x * c - r.h * o.shift_y * s;
        r.cy += r.w * o.shift_x * s + r.h * o.shift_y * c;
    }
    match o.square {
        Square::None => {}
        Square::Long => {
            let l = r.w.max(r.h);
            (r.w, r.h) = (l, l);
        }
        Square::Short => {
            let l = r.w.min(r.h);
            (r.w, r.h) = (l, l);
        }
    }
    r.w *= o.scale_x;
    r.h *= o.scale_y;
}

/// The landmark ROI of a detection whose keypoints are in frame pixels
/// (`PoseDetectionToRoi`): keypoints `o.start_keypoint` and `o.end_keypoint`. `None` if the
/// detection has too few keypoints.
pub fn roi_from_keypoints(keypoints: &[[f64; 2]], o: &RoiOptions) -> Option<RotatedRect> {
    let start = *keypoints.get(o.start_keypoint)?;
    let end = *keypoints.get(o.end_keypoint)?;
    Some(roi_from_alignment_points(start, end, o))
}

/// The letterbox of a whole frame into a square (or any) tensor (`ImageToTensorCalculator`
/// without a rect and with `keep_aspect_ratio`): the frame is centred and scaled to fit,
/// the rest is padding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// The padded ROI in frame pixels (centred on the frame, the tensor's aspect ratio).
    pub roi: RotatedRect,
    /// Left, top, right, bottom padding as fractions of the tensor.
    pub padding: Padding,
    pub tensor_w: usize,
    pub tensor_h: usize,
}

/// The letterbox of a `width` x `height` frame into a `tensor_w` x `tensor_h` tensor; `None`
/// for empty sizes. For 640x480 into 224x224: a 640x640 ROI centred at (320, 240), padding
/// 0.125 at top and bottom, scale 224/640 = 0.35.
pub fn letterbox(
    width: usize,
    height: usize,
    tensor_w: usize,
    tensor_h: usize,
) -> Option<Letterbox> {
    if width == 0 || height == 0 {
        return None;
    }
    let (roi, padding) =
        RotatedRect::full_image(width, height).pad_to_aspect(tensor_w, tensor_h)?;
    Some(Letterbox {
        roi,
        padding,
        tensor_w,
        tensor_h,
    })
}

impl Letterbox {
    /// Frame pixels -> tensor pixels.
    pub fn frame_to_tensor(&self) -> Affine2 {
        self.roi.frame_to_crop(self.tensor_w, self.tensor_h)
    }

    /// Tensor pixels -> frame pixels.
    pub fn tensor_to_frame(&self) -> Affine2 {
        self.roi.crop_to_frame(self.tensor_w, self.tensor_h)
    }

    /// A point normalised to the tensor (0..1) -> normalised to the frame (the letterbox
    /// removal of `DetectionLetterboxRemovalCalculator`).
    pub fn remove(&self, p: [f64; 2]) -> [f64; 2] {
        let [l, t, r, b] = self.padding;
        [(p[0] - l) / (1.0 - l - r), (p[1] - t) / (1.0 - t - b)]
    }
}
