//! Input tensors: an RGB8 frame warped through a rotated ROI into an NHWC float tensor, as
//! mediapipe's `ImageToTensorCalculator` does on CPU.
//!
//! Facts from mediapipe v0.10.21:
//! - `mediapipe/calculators/tensor/image_to_tensor_calculator.cc` (`Process`): ROI = the
//!   `NORM_RECT` input or the whole image (`GetRoi`), padded to the tensor's aspect ratio when
//!   `keep_aspect_ratio` (`PadRoi`), then converted by the OpenCV converter on CPU.
//! - `mediapipe/calculators/tensor/image_to_tensor_converter_opencv.cc` (`Convert`): the ROI
//!   corners (`cv::boxPoints`) go to the tensor corners (0, H), (0, 0), (W, 0), (W, H);
//!   `cv::warpPerspective` with `INTER_LINEAR` and `BORDER_CONSTANT` (zero) or
//!   `BORDER_REPLICATE` produces an 8-bit RGB image, which `convertTo` maps to floats with
//!   `GetValueRangeTransformation(0, 255, min, max)`: `v * (max - min) / 255 + min`.
//!   So zero padding becomes `min` (-1 for the detector), not 0.
//! - `mediapipe/calculators/tensor/image_to_tensor_utils.cc` (`GetBorderMode`): an unset
//!   `border_mode` means `BORDER_REPLICATE`.
//!
//! The 8-bit bilinear warp follows OpenCV's fixed-point `INTER_LINEAR` (`imgwarp.cpp`, facts
//! only): the source position of destination pixel (i, j) (pixel centres at integer
//! coordinates) is rounded to 1/32 pixel (`INTER_BITS = 5`), the four weights are
//! `(32 - ax or ax) (32 - ay or ay) 32` (sum 2^15, `INTER_REMAP_COEF_BITS = 15`), and the
//! result is `(sum + 2^14) >> 15`. Matching this keeps our input tensors equal to mediapipe's
//! up to rare rounding ties.
//!
//! Options from `mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt` and
//! `mediapipe/modules/pose_landmark/pose_landmark_by_roi_cpu.pbtxt`, confirmed in the compiled
//! 0.10.21 wheel.

use super::BlazePoseError;
use super::roi::{Padding, RotatedRect};
use crate::{Frame, I420Image, RgbImage};
use ikol_types::Affine2;

/// What is sampled outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BorderMode {
    /// `BORDER_ZERO` (`cv::BORDER_CONSTANT` with 0).
    Zero,
    /// `BORDER_REPLICATE` (also what an unset `border_mode` means).
    Replicate,
}

/// The subset of `ImageToTensorCalculatorOptions` used on CPU with float output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageToTensorOptions {
    pub output_width: usize,
    pub output_height: usize,
    pub keep_aspect_ratio: bool,
    /// `output_tensor_float_range` (min, max).
    pub range: (f32, f32),
    pub border: BorderMode,
}

impl ImageToTensorOptions {
    /// `ImageToTensorCalculator` of `pose_detection_cpu.pbtxt`.
    pub const POSE_DETECTION: ImageToTensorOptions = ImageToTensorOptions {
        output_width: 224,        // output_tensor_width: 224
        output_height: 224,       // output_tensor_height: 224
        keep_aspect_ratio: true,  // keep_aspect_ratio: true
        range: (-1.0, 1.0),       // output_tensor_float_range { min: -1.0 max: 1.0 }
        border: BorderMode::Zero, // border_mode: BORDER_ZERO
    };

    /// `ImageToTensorCalculator` of `pose_landmark_by_roi_cpu.pbtxt`.
    pub const POSE_LANDMARK: ImageToTensorOptions = ImageToTensorOptions {
        output_width: 256,       // output_tensor_width: 256
        output_height: 256,      // output_tensor_height: 256
        keep_aspect_ratio: true, // keep_aspect_ratio: true
        range: (0.0, 1.0),       // output_tensor_float_range { min: 0.0 max: 1.0 }
        // border_mode not set: BORDER_UNSPECIFIED -> kReplicate (image_to_tensor_utils.cc)
        border: BorderMode::Replicate,
    };
}

/// An input tensor and the geometry that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInput {
    /// NHWC `[1, height, width, 3]` floats.
    pub data: Vec<f32>,
    pub width: usize,
    pub height: usize,
    /// The ROI asked for (the whole frame for the detector): what
    /// [`super::landmarks::decode_pose`] takes with [`TensorInput::padding`].
    pub roi: RotatedRect,
    /// The ROI after padding to the tensor's aspect ratio: [`RotatedRect::crop_to_frame`] of it
    /// maps tensor pixels to frame pixels (equal to `roi` for a square ROI and tensor).
    pub padded_roi: RotatedRect,
    /// Letterbox padding (left, top, right, bottom) as fractions of the padded ROI.
    pub padding: Padding,
}

impl TensorInput {
    /// The shape `[1, height, width, 3]`.
    pub fn shape(&self) -> [usize; 4] {
        [1, self.height, self.width, 3]
    }
}

/// Checks that `img` holds `height` rows of `stride` bytes with `3 * width` used.
pub fn check_image(img: &RgbImage<'_>) -> Result<(), BlazePoseError> {
    let ok = img.width > 0
        && img.height > 0
        && img.stride >= 3 * img.width
        && img.data.len() >= (img.height - 1) * img.stride + 3 * img.width;
    if ok {
        Ok(())
    } else {
        Err(BlazePoseError::BadImage {
            width: img.width,
            height: img.height,
            stride: img.stride,
            len: img.data.len(),
        })
    }
}

/// [`check_image`] for either kind of frame.
pub fn check_frame(img: &Frame<'_>) -> Result<(), BlazePoseError> {
    match img {
        Frame::Rgb(i) => check_image(i),
        Frame::I420(i) if i.is_valid() => Ok(()),
        Frame::I420(i) => Err(BlazePoseError::BadImage {
            width: i.width,
            height: i.height,
            stride: i.y_stride,
            len: i.y.len(),
        }),
    }
}

/// `ImageToTensorCalculator` on CPU: the ROI (`None` = the whole image), padded when
/// `keep_aspect_ratio`, warped into an `output_width` x `output_height` float tensor.
pub fn image_to_tensor<'a>(
    img: impl Into<Frame<'a>>,
    roi: Option<&RotatedRect>,
    o: &ImageToTensorOptions,
) -> Result<TensorInput, BlazePoseError> {
    let img: Frame<'a> = img.into();
    check_frame(&img)?;
    let roi = roi
        .copied()
        .unwrap_or_else(|| RotatedRect::full_image(img.width(), img.height()));
    let bad_roi = || BlazePoseError::BadRoi { roi };
    if !roi.is_valid() || o.output_width == 0 || o.output_height == 0 {
        return Err(bad_roi());
    }
    let (padded_roi, padding) = if o.keep_aspect_ratio {
        roi.pad_to_aspect(o.output_width, o.output_height)
            .ok_or_else(bad_roi)?
    } else {
        (roi, [0.0; 4])
    };
    let pixels = warp_frame(
        &img,
        &padded_roi.crop_to_frame(o.output_width, o.output_height),
        o.output_width,
        o.output_height,
        o.border,
    )?;
    // GetValueRangeTransformation(0, 255, min, max)
    let scale = (o.range.1 - o.range.0) / 255.0;
    let offset = o.range.0;
    Ok(TensorInput {
        data: pixels
            .iter()
            .map(|&v| f32::from(v) * scale + offset)
            .collect(),
        width: o.output_width,
        height: o.output_height,
        roi,
        padded_roi,
        padding,
    })
}

/// The detector input: the whole frame letterboxed into 224x224, values in [-1, 1], zero
/// (i.e. -1) padding.
pub fn detector_input<'a>(img: impl Into<Frame<'a>>) -> Result<TensorInput, BlazePoseError> {
    image_to_tensor(img, None, &ImageToTensorOptions::POSE_DETECTION)
}

/// The landmark input: `roi` warped into 256x256, values in [0, 1], replicated border.
pub fn landmark_input<'a>(
    img: impl Into<Frame<'a>>,
    roi: &RotatedRect,
) -> Result<TensorInput, BlazePoseError> {
    image_to_tensor(img, Some(roi), &ImageToTensorOptions::POSE_LANDMARK)
}

/// INTER_BITS: source positions in 1/32 pixel.
const BITS: i32 = 5;
/// INTER_TAB_SIZE = 32.
const TAB: f64 = (1 << BITS) as f64;

/// A source coordinate in 1/32 pixel as OpenCV's `saturate_cast<int>(double)`: rounded half to
/// even, clamped to the int range (clamping first gives the same, as rounding is monotone).
#[inline(always)]
fn fixed(v: f64) -> i32 {
    // 1.5 * 2^52: adding and subtracting it rounds any |v| < 2^51 to an integer, half to even
    // (the FPU's default mode), without the libm call `round_ties_even` becomes on baseline
    // x86-64 (two per pixel were most of the warp's time).
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let v = (v * TAB).clamp(f64::from(i32::MIN), f64::from(i32::MAX));
    ((v + ROUND) - ROUND) as i32
}

/// OpenCV-style fixed-point bilinear warp of an RGB8 image: destination pixel (i, j) samples
/// the source at `dst_to_src.apply([i, j])`. Returns `out_h` rows of `3 * out_w` bytes.
pub fn warp_rgb8(
    img: &RgbImage<'_>,
    dst_to_src: &Affine2,
    out_w: usize,
    out_h: usize,
    border: BorderMode,
) -> Result<Vec<u8>, BlazePoseError> {
    check_image(img)?;
    if out_w == 0 || out_h == 0 {
        return Ok(Vec::new());
    }
    let (stride, data) = (img.stride, img.data);
    let (w, h) = (img.width, img.height);
    Ok(warp_footprints(
        dst_to_src,
        (w, h),
        (out_w, out_h),
        border,
        |_, fp, dst| {
            let mut acc = [0u32; 3];
            match *fp {
                Footprint::Inside { x, y, tap } => {
                    let o = y * stride + 3 * x;
                    let (top, bottom) = (&data[o..o + 6], &data[o + stride..o + stride + 6]);
                    for c in 0..3 {
                        acc[c] = tap[0] * u32::from(top[c])
                            + tap[1] * u32::from(top[3 + c])
                            + tap[2] * u32::from(bottom[c])
                            + tap[3] * u32::from(bottom[3 + c]);
                    }
                }
                Footprint::Edge { taps, n } => {
                    for &(x, y, weight) in &taps[..n] {
                        let o = y * stride + 3 * x;
                        for c in 0..3 {
                            acc[c] += weight * u32::from(data[o + c]);
                        }
                    }
                }
            }
            for c in 0..3 {
                dst[c] = ((acc[c] + (1 << 14)) >> 15).min(255) as u8;
            }
        },
    ))
}

/// Where one output pixel samples the source: OpenCV's four bilinear taps, weights
/// `(32 - ax or ax) (32 - ay or ay) 32` out of 2^15.
enum Footprint {
    /// The 2x2 block at (x, y) lies inside the image (almost every pixel): no border rule
    /// applies, and a tap of weight zero adds zero, so all four are summed unconditionally.
    /// Weights of (x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1).
    Inside { x: usize, y: usize, tap: [u32; 4] },
    /// The first `n` taps (pixel, weight) after the border rule: zero-weight taps and, for
    /// [`BorderMode::Zero`], taps outside are left out; [`BorderMode::Replicate`] clamps.
    Edge {
        taps: [(usize, usize, u32); 4],
        n: usize,
    },
}

/// The fixed-point warp both frame kinds share: for every output pixel (rows of `3 * out_w`
/// bytes, zero-filled) its source point in 1/32 pixel (`dst_to_src` applied to the pixel
/// centre, [`fixed`]) and footprint in a `w` x `h` image, handed to `sample` with the pixel's
/// three bytes. (`w` and `h` are at least 1.)
#[inline(always)]
fn warp_footprints(
    dst_to_src: &Affine2,
    (w, h): (usize, usize),
    (out_w, out_h): (usize, usize),
    border: BorderMode,
    mut sample: impl FnMut((i32, i32), &Footprint, &mut [u8]),
) -> Vec<u8> {
    let m = &dst_to_src.m;
    let (wi, hi) = (w as i64, h as i64);
    let mut out = vec![0u8; out_w * out_h * 3];
    // A row's source positions first (a loop without branches), then its samples.
    let mut pos = vec![(0i32, 0i32); out_w];
    for (j, row) in out.chunks_exact_mut(3 * out_w).enumerate() {
        let y = j as f64;
        for (i, p) in pos.iter_mut().enumerate() {
            let x = i as f64;
            *p = (
                fixed(m[0][0] * x + m[0][1] * y + m[0][2]),
                fixed(m[1][0] * x + m[1][1] * y + m[1][2]),
            );
        }
        for (dst, &(fx, fy)) in row.chunks_exact_mut(3).zip(&pos) {
            // saturate_cast<short>(X >> INTER_BITS)
            let sx = i64::from((fx >> BITS).clamp(i32::from(i16::MIN), i32::from(i16::MAX)));
            let sy = i64::from((fy >> BITS).clamp(i32::from(i16::MIN), i32::from(i16::MAX)));
            let ax = (fx & ((1 << BITS) - 1)) as u32;
            let ay = (fy & ((1 << BITS) - 1)) as u32;
            let wx = [32 - ax, ax];
            let wy = [32 - ay, ay];
            let fp = if sx >= 0 && sy >= 0 && sx + 1 < wi && sy + 1 < hi {
                Footprint::Inside {
                    x: sx as usize,
                    y: sy as usize,
                    tap: [
                        wy[0] * wx[0] * 32,
                        wy[0] * wx[1] * 32,
                        wy[1] * wx[0] * 32,
                        wy[1] * wx[1] * 32,
                    ],
                }
            } else if border == BorderMode::Zero
                && (sx + 1 < 0 || sy + 1 < 0 || sx >= wi || sy >= hi)
            {
                // all four taps outside (a letterbox's padding): nothing to read
                Footprint::Edge {
                    taps: [(0, 0, 0); 4],
                    n: 0,
                }
            } else {
                let mut taps = [(0, 0, 0); 4];
                let mut n = 0;
                for (dy, &wyv) in wy.iter().enumerate() {
                    for (dx, &wxv) in wx.iter().enumerate() {
                        let weight = wyv * wxv * 32;
                        if weight == 0 {
                            continue;
                        }
                        let (px, py) = (sx + dx as i64, sy + dy as i64);
                        let (px, py) = match border {
                            BorderMode::Zero => {
                                if px < 0 || py < 0 || px >= wi || py >= hi {
                                    continue;
                                }
                                (px, py)
                            }
                            BorderMode::Replicate => (px.clamp(0, wi - 1), py.clamp(0, hi - 1)),
                        };
                        taps[n] = (px as usize, py as usize, weight);
                        n += 1;
                    }
                }
                Footprint::Edge { taps, n }
            };
            sample((fx, fy), &fp, dst);
        }
    }
    out
}

/// [`warp_rgb8`] of either kind of frame. An I420 frame is sampled in YUV and converted once
/// per output pixel ([`crate::frame`]): luma with [`warp_rgb8`]'s fixed-point taps and border
/// rule, chroma bilinearly at the same point of its half-resolution planes (clamped to the
/// chroma samples the frame covers), so the result is the warp of the frame converted to RGB
/// up to rounding and the chroma filter (within a few levels at sharp colour edges).
pub fn warp_frame(
    img: &Frame<'_>,
    dst_to_src: &Affine2,
    out_w: usize,
    out_h: usize,
    border: BorderMode,
) -> Result<Vec<u8>, BlazePoseError> {
    match img {
        Frame::Rgb(i) => warp_rgb8(i, dst_to_src, out_w, out_h, border),
        Frame::I420(i) => warp_i420(i, dst_to_src, out_w, out_h, border),
    }
}

fn warp_i420(
    img: &I420Image<'_>,
    dst_to_src: &Affine2,
    out_w: usize,
    out_h: usize,
    border: BorderMode,
) -> Result<Vec<u8>, BlazePoseError> {
    check_frame(&Frame::I420(*img))?;
    if out_w == 0 || out_h == 0 {
        return Ok(Vec::new());
    }
    let (ys, us) = (img.y_stride, img.uv_stride);
    let decoder = img.colour.decoder();
    let luma = &img.y[img.y0 * ys + img.x0..];
    // Chroma sample c of the planes sits at luma 2c (co-sited) or 2c + 1/2 (centred), so a
    // point at luma x (in 1/32 pixels of the view, `fx`) is at chroma fx + 32 x0 (- 16 when
    // centred) in 1/64 samples; the view covers chroma x0/2 ..= (x0 + width - 1)/2, rows alike.
    let shift = |origin: usize, cosited: bool| 32 * origin as i64 - if cosited { 0 } else { 16 };
    let (shift_x, shift_y) = (shift(img.x0, img.h_cosited), shift(img.y0, img.v_cosited));
    let range = |origin: usize, len: usize| (origin / 2, (origin + len - 1) / 2);
    let ((cx_lo, cx_hi), (cy_lo, cy_hi)) = (range(img.x0, img.width), range(img.y0, img.height));
    // Bilinear U and V at a point, both x 4096.
    let chroma = |fx: i32, fy: i32| -> (u32, u32) {
        let cx = (i64::from(fx) + shift_x).clamp(64 * cx_lo as i64, 64 * cx_hi as i64);
        let cy = (i64::from(fy) + shift_y).clamp(64 * cy_lo as i64, 64 * cy_hi as i64);
        let (c0, tx) = ((cx >> 6) as usize, (cx & 63) as u32);
        let (r0, ty) = ((cy >> 6) as usize, (cy & 63) as u32);
        let (c1, r1) = ((c0 + 1).min(cx_hi), (r0 + 1).min(cy_hi));
        let w = [
            (64 - tx) * (64 - ty),
            tx * (64 - ty),
            (64 - tx) * ty,
            tx * ty,
        ];
        let o = [r0 * us + c0, r0 * us + c1, r1 * us + c0, r1 * us + c1];
        let (mut u, mut v) = (0u32, 0u32);
        for k in 0..4 {
            u += w[k] * u32::from(img.u[o[k]]);
            v += w[k] * u32::from(img.v[o[k]]);
        }
        (u, v)
    };
    let size = (img.width, img.height);
    Ok(warp_footprints(
        dst_to_src,
        size,
        (out_w, out_h),
        border,
        |(fx, fy), fp, dst| {
            // Luma sum and the weight of the taps read (2^15 unless a zero border drops some).
            let (acc, weight) = match *fp {
                Footprint::Inside { x, y, tap } => {
                    let o = y * ys + x;
                    let (top, bottom) = (&luma[o..o + 2], &luma[o + ys..o + ys + 2]);
                    let acc = tap[0] * u32::from(top[0])
                        + tap[1] * u32::from(top[1])
                        + tap[2] * u32::from(bottom[0])
                        + tap[3] * u32::from(bottom[1]);
                    (acc, 1 << 15)
                }
                Footprint::Edge { taps, n } => {
                    taps[..n].iter().fold((0, 0), |(a, s), &(x, y, t)| {
                        (a + t * u32::from(luma[y * ys + x]), s + t)
                    })
                }
            };
            if weight == 0 {
                return; // zero border all round: black, as the RGB warp gives
            }
            // Outside taps of a zero border are black in RGB, so the converted colour is
            // scaled by the weight inside (the conversion is affine).
            let (u, v) = chroma(fx, fy);
            let rgb = decoder.rgb(
                acc as f32 / weight as f32,
                u as f32 * (1.0 / 4096.0),
                v as f32 * (1.0 / 4096.0),
            );
            let scale = weight as f32 / 32768.0;
            for c in 0..3 {
                dst[c] = (rgb[c] * scale + 0.5).clamp(0.0, 255.0) as u8;
            }
        },
    ))
}
