//! BlazePose pre- and post-processing geometry, against values worked out by hand from the
//! mediapipe v0.10.21 graph configs and calculators (formulas restated next to each check):
//! SSD anchors, box/keypoint decoding, weighted NMS, the letterbox, ROI rotation, the warp into
//! input tensors, and the landmark projection.

use ikol_detect::RgbImage;
use ikol_detect::blazepose::landmarks::{
    AUX_LANDMARKS, HEATMAP_SIZE, LANDMARK_DIMS, MODEL_LANDMARKS, WORLD_DIMS,
};
use ikol_detect::blazepose::*;
use ikol_types::Affine2;
use std::f64::consts::{FRAC_PI_2, FRAC_PI_4, PI};

fn close(a: f64, b: f64, eps: f64) -> bool {
    (a - b).abs() <= eps
}

macro_rules! assert_close {
    ($a:expr, $b:expr, $eps:expr) => {{
        let (a, b) = (f64::from($a), f64::from($b));
        assert!(
            close(a, b, $eps),
            "{} = {a}, expected {b} (eps {})",
            stringify!($a),
            $eps
        );
    }};
}

// ------------------------------------------------------------------------------------------------
// SSD anchors

#[test]
fn anchor_count_and_closed_form_positions() {
    let a = generate_anchors(&SsdAnchorOptions::pose_detection());
    // 28x28 cells x 2 (stride 8) + 14x14 x 2 (stride 16) + 7x7 x 6 (three stride-32 layers x 2)
    assert_eq!(a.len(), 28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6);
    assert_eq!(a.len(), 2254);
    // first: cell (0, 0) of the 28x28 grid: ((0 + 0.5) / 28, (0 + 0.5) / 28), fixed size 1
    for k in 0..2 {
        assert_close!(a[k].x_center, 0.5 / 28.0, 1e-7);
        assert_close!(a[k].y_center, 0.5 / 28.0, 1e-7);
        assert_eq!((a[k].w, a[k].h), (1.0, 1.0));
    }
    // last of the stride-8 group: cell (27, 27)
    assert_close!(a[1567].x_center, 27.5 / 28.0, 1e-7);
    assert_close!(a[1567].y_center, 27.5 / 28.0, 1e-7);
    // a middle one: stride-16 group starts at 1568; row 3, column 5 -> (5.5 / 14, 3.5 / 14)
    let m = 1568 + 2 * (14 * 3 + 5);
    assert_close!(a[m].x_center, 5.5 / 14.0, 1e-7);
    assert_close!(a[m].y_center, 3.5 / 14.0, 1e-7);
    // stride-32 group starts at 1568 + 392 = 1960, 6 anchors per cell; row 2, column 4
    let m = 1960 + 6 * (7 * 2 + 4) + 5;
    assert_close!(a[m].x_center, 4.5 / 7.0, 1e-7);
    assert_close!(a[m].y_center, 2.5 / 7.0, 1e-7);
    // last: cell (6, 6) of the 7x7 grid
    assert_close!(a[2253].x_center, 6.5 / 7.0, 1e-7);
    assert_close!(a[2253].y_center, 6.5 / 7.0, 1e-7);
    assert!(a.iter().all(|x| x.w == 1.0 && x.h == 1.0));
}

#[test]
fn anchor_sizes_without_fixed_size_follow_the_scale_formula() {
    // scale_i = 0.1484375 + (0.75 - 0.1484375) i / 4: 0.1484375, 0.298828125, 0.44921875,
    // 0.599609375, 0.75; each layer adds (s_i, s_i) and the interpolated sqrt(s_i s_{i+1})
    // (s_5 = 1); aspect ratio 1 so w = h.
    let o = SsdAnchorOptions {
        fixed_anchor_size: false,
        ..SsdAnchorOptions::pose_detection()
    };
    let a = generate_anchors(&o);
    assert_eq!(a.len(), 2254);
    let s = [0.1484375f64, 0.298828125, 0.44921875, 0.599609375, 0.75];
    assert_close!(a[0].w, s[0], 1e-7);
    assert_close!(a[1].w, (s[0] * s[1]).sqrt(), 1e-7);
    assert_close!(a[1568].w, s[1], 1e-7);
    assert_close!(a[1569].h, (s[1] * s[2]).sqrt(), 1e-7);
    let last_cell: Vec<f64> = a[2248..2254].iter().map(|x| f64::from(x.w)).collect();
    let expected = [
        s[2],
        (s[2] * s[3]).sqrt(),
        s[3],
        (s[3] * s[4]).sqrt(),
        s[4],
        s[4].sqrt(), // sqrt(0.75 * 1.0) = 0.8660254
    ];
    for (g, e) in last_cell.iter().zip(expected) {
        assert_close!(*g, e, 1e-6);
    }
}

// ------------------------------------------------------------------------------------------------
// Decoding

/// Index of the anchor at the centre cell (3, 3) of the 7x7 grid, centre (0.5, 0.5).
const CENTRE_ANCHOR: usize = 1960 + 6 * (7 * 3 + 3);

fn raw_tensors() -> (Vec<f32>, Vec<f32>) {
    let boxes = vec![0f32; 2254 * 12];
    let scores = vec![-10f32; 2254]; // sigmoid(-10) = 4.5e-5 < 0.5: rejected
    (boxes, scores)
}

#[test]
fn decoding_a_hand_made_box() {
    let (mut boxes, mut scores) = raw_tensors();
    let k = CENTRE_ANCHOR;
    // (x_center, y_center, w, h) in 224-pixel units (reverse_output_order), then keypoints (x, y)
    boxes[k * 12..k * 12 + 12].copy_from_slice(&[
        22.4, -11.2, 44.8, 67.2, // box
        0.0, 0.0, // kp0
        22.4, 44.8, // kp1
        -112.0, 0.0, // kp2
        0.0, 112.0, // kp3
    ]);
    scores[k] = 2.0;
    let anchors = generate_anchors(&SsdAnchorOptions::pose_detection());
    assert_close!(anchors[k].x_center, 0.5, 1e-7);
    assert_close!(anchors[k].y_center, 0.5, 1e-7);
    let d = decode_detections(&boxes, &scores, &anchors, &DecodeOptions::pose_detection()).unwrap();
    assert_eq!(d.len(), 1);
    let d = &d[0];
    // centre (0.5 + 22.4/224, 0.5 - 11.2/224) = (0.6, 0.45), size (0.2, 0.3)
    assert_close!(d.score, 1.0 / (1.0 + (-2.0f64).exp()), 1e-6); // 0.880797
    assert_close!(d.xmin, 0.5, 1e-6);
    assert_close!(d.ymin, 0.3, 1e-6);
    assert_close!(d.width, 0.2, 1e-6);
    assert_close!(d.height, 0.3, 1e-6);
    let expected = [[0.5, 0.5], [0.6, 0.7], [0.0, 0.5], [0.5, 1.0]];
    for (kp, e) in d.keypoints.iter().zip(expected) {
        assert_close!(kp[0], e[0], 1e-6);
        assert_close!(kp[1], e[1], 1e-6);
    }
}

#[test]
fn score_threshold_and_clipping() {
    let (boxes, mut scores) = raw_tensors();
    scores[0] = 0.0; // sigmoid = 0.5 exactly: kept (rejected only when < 0.5)
    scores[1] = -0.01; // 0.4975: rejected
    scores[2] = 1000.0; // clipped to 100: sigmoid = 1
    scores[3] = 3.0;
    let anchors = generate_anchors(&SsdAnchorOptions::pose_detection());
    let d = decode_detections(&boxes, &scores, &anchors, &DecodeOptions::pose_detection()).unwrap();
    let s: Vec<f32> = d.iter().map(|x| x.score).collect();
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(s[0], 0.5);
    assert_eq!(s[1], 1.0);
    assert_close!(s[2], 0.952574, 1e-6);
}

#[test]
fn decoding_rejects_wrong_sizes() {
    let anchors = generate_anchors(&SsdAnchorOptions::pose_detection());
    let e = decode_detections(
        &[0.0; 12],
        &[0.0; 2254],
        &anchors,
        &DecodeOptions::pose_detection(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("12 values") && e.contains("27048"), "{e}");
}

// ------------------------------------------------------------------------------------------------
// Non-maximum suppression

fn det(score: f32, xmin: f32, ymin: f32, kp: [f32; 2]) -> PoseDetection {
    PoseDetection {
        score,
        xmin,
        ymin,
        width: 1.0,
        height: 1.0,
        keypoints: vec![kp],
    }
}

fn assert_det_close(g: &PoseDetection, e: &PoseDetection) {
    assert_eq!(g.score, e.score);
    assert_close!(g.xmin, e.xmin, 1e-6);
    assert_close!(g.ymin, e.ymin, 1e-6);
    assert_close!(g.width, e.width, 1e-6);
    assert_close!(g.height, e.height, 1e-6);
    assert_eq!(g.keypoints.len(), e.keypoints.len());
    for (a, b) in g.keypoints.iter().zip(&e.keypoints) {
        assert_close!(a[0], b[0], 1e-6);
        assert_close!(a[1], b[1], 1e-6);
    }
}

#[test]
fn weighted_nms_of_overlapping_boxes() {
    let a = det(0.9, 0.0, 0.0, [0.5, 0.5]);
    let b = det(0.6, 0.1, 0.0, [0.8, 0.2]); // IoU with a: 0.9 / 1.1 = 0.818 > 0.3
    let c = det(0.7, 3.0, 3.0, [3.5, 3.5]); // far away
    let d = det(0.5, 0.5, 0.5, [1.0, 1.0]); // IoU with a: 0.25 / 1.75 = 0.143 < 0.3
    assert_close!(
        overlap_similarity(OverlapType::IntersectionOverUnion, &b, &a),
        0.9 / 1.1,
        1e-6
    );
    assert_close!(
        overlap_similarity(OverlapType::IntersectionOverUnion, &d, &a),
        0.25 / 1.75,
        1e-6
    );
    let out = non_max_suppression(
        &[b.clone(), d.clone(), a.clone(), c.clone()],
        &NmsOptions::POSE_DETECTION,
    );
    assert_eq!(out.len(), 3);
    // round 1: a and b, weights 0.9 and 0.6 (total 1.5):
    // xmin = (0 * 0.9 + 0.1 * 0.6) / 1.5 = 0.04, xmax = (1 * 0.9 + 1.1 * 0.6) / 1.5 = 1.04,
    // ymin = 0, ymax = 1; keypoint ((0.45 + 0.48) / 1.5, (0.45 + 0.12) / 1.5) = (0.62, 0.38);
    // the score stays the best one's
    let w = &out[0];
    assert_eq!(w.score, 0.9);
    assert_close!(w.xmin, 0.04, 1e-6);
    assert_close!(w.width, 1.0, 1e-6);
    assert_close!(w.ymin, 0.0, 1e-6);
    assert_close!(w.height, 1.0, 1e-6);
    assert_close!(w.keypoints[0][0], 0.62, 1e-6);
    assert_close!(w.keypoints[0][1], 0.38, 1e-6);
    // then c alone, then d alone: unchanged (up to the float rounding of a mean of one)
    assert_det_close(&out[1], &c);
    assert_det_close(&out[2], &d);

    // the default algorithm keeps a, c, d as they are
    let plain = NmsOptions {
        algorithm: NmsAlgorithm::Default,
        ..NmsOptions::POSE_DETECTION
    };
    assert_eq!(
        non_max_suppression(&[b, d.clone(), a.clone(), c.clone()], &plain),
        vec![a, c, d]
    );
}

// ------------------------------------------------------------------------------------------------
// Letterbox

#[test]
fn letterbox_of_640x480() {
    let lb = letterbox(640, 480, 224, 224).unwrap();
    // the whole frame padded to a 640x640 square centred on (320, 240); 80 px (0.125) above
    // and below
    assert_eq!(
        lb.roi,
        RotatedRect {
            cx: 320.0,
            cy: 240.0,
            w: 640.0,
            h: 640.0,
            rotation: 0.0
        }
    );
    assert_eq!(lb.padding, [0.0, 0.125, 0.0, 0.125]);
    // frame -> tensor: q = (p - (0, -80)) * 224 / 640
    let f2t = lb.frame_to_tensor();
    for (p, q) in [
        ([0.0, 0.0], [0.0, 28.0]),
        ([640.0, 480.0], [224.0, 196.0]),
        ([320.0, 240.0], [112.0, 112.0]),
        ([100.0, 50.0], [35.0, 45.5]),
    ] {
        let g = f2t.apply(p);
        assert_close!(g[0], q[0], 1e-9);
        assert_close!(g[1], q[1], 1e-9);
    }
    // round trip
    let t2f = lb.tensor_to_frame();
    for p in [[13.0, 477.0], [639.5, 0.25], [-20.0, 300.0]] {
        let r = t2f.apply(f2t.apply(p));
        assert_close!(r[0], p[0], 1e-9);
        assert_close!(r[1], p[1], 1e-9);
    }
    // letterbox removal on normalised coordinates: y' = (y - 0.125) / 0.75
    let r = lb.remove([0.25, 0.25]);
    assert_close!(r[0] * 640.0, 160.0, 1e-9);
    assert_close!(r[1] * 480.0, 80.0, 1e-9);
    // ... and the detection version agrees with the affine map
    let d = remove_letterbox(&det(0.9, 0.25, 0.25, [0.25, 0.25]), &lb.padding);
    let px = d.keypoints_pixels(640, 480)[0];
    let via_affine = t2f.apply([56.0, 56.0]);
    assert_close!(px[0], via_affine[0], 1e-4);
    assert_close!(px[1], via_affine[1], 1e-4);
    assert_close!(d.bbox_pixels(640, 480).w, 640.0 / 1.0, 1e-3); // width 1 of the tensor
    assert_close!(d.bbox_pixels(640, 480).h, 640.0, 1e-3); // height 1 / 0.75 of 480 px

    // portrait: padding left and right
    let lb = letterbox(480, 640, 224, 224).unwrap();
    assert_eq!(lb.padding, [0.125, 0.0, 0.125, 0.0]);
    assert_eq!(letterbox(0, 480, 224, 224), None);
}

// ------------------------------------------------------------------------------------------------
// ROI

#[test]
fn roi_rotation_from_alignment_points() {
    let o = RoiOptions::POSE;
    let hip = [100.0, 300.0];
    let roi = |end: [f64; 2]| roi_from_alignment_points(hip, end, &o);
    // upright: the size point 100 px straight above the hips -> rotation 0, side 2 * 100 * 1.25
    let up = roi([100.0, 200.0]);
    assert_close!(up.rotation, 0.0, 1e-12);
    assert_eq!((up.cx, up.cy, up.w, up.h), (100.0, 300.0, 250.0, 250.0));
    // lying with the head to the right: +90 degrees; to the left: -90 degrees
    assert_close!(roi([200.0, 300.0]).rotation, FRAC_PI_2, 1e-12);
    assert_close!(roi([0.0, 300.0]).rotation, -FRAC_PI_2, 1e-12);
    // upside down: pi wraps to -pi ([-pi, pi))
    assert_close!(roi([100.0, 400.0]).rotation, -PI, 1e-12);
    // leaning right by 45 degrees
    let s = 100.0 / 2f64.sqrt();
    let lean = roi([100.0 + s, 300.0 - s]);
    assert_close!(lean.rotation, FRAC_PI_4, 1e-12);
    assert_close!(lean.w, 250.0, 1e-9);
    assert_close!(normalize_radians(3.0 * PI / 2.0), -FRAC_PI_2, 1e-12);
}

#[test]
fn the_head_direction_goes_to_the_top_of_the_crop() {
    let o = RoiOptions::POSE;
    let hip = [320.0, 240.0];
    let s = 100.0 / 2f64.sqrt();
    for end in [
        [320.0, 140.0],
        [420.0, 240.0],
        [220.0, 240.0],
        [320.0 + s, 240.0 - s],
    ] {
        let r = roi_from_alignment_points(hip, end, &o);
        let f2c = r.frame_to_crop(256, 256);
        // centre -> crop centre; size point (100 px away, side 250) -> 100 * 256 / 250 above it
        let c = f2c.apply(hip);
        assert_close!(c[0], 128.0, 1e-9);
        assert_close!(c[1], 128.0, 1e-9);
        let e = f2c.apply(end);
        assert_close!(e[0], 128.0, 1e-9);
        assert_close!(e[1], 128.0 - 100.0 * 256.0 / 250.0, 1e-9);
        // the two maps are inverse, and crop corners are the rect's corners (boxPoints order)
        let c2f = r.crop_to_frame(256, 256);
        for (q, p) in [[0.0, 256.0], [0.0, 0.0], [256.0, 0.0], [256.0, 256.0]]
            .iter()
            .zip(r.corners())
        {
            let g = c2f.apply(*q);
            assert_close!(g[0], p[0], 1e-9);
            assert_close!(g[1], p[1], 1e-9);
            let back = f2c.apply(g);
            assert_close!(back[0], q[0], 1e-9);
            assert_close!(back[1], q[1], 1e-9);
        }
    }
}

#[test]
fn roi_of_a_decoded_detection_in_a_640x480_frame() {
    let (mut boxes, mut scores) = raw_tensors();
    let k = CENTRE_ANCHOR;
    // kp0 at the tensor centre (0.5, 0.5), kp1 44.8 px (0.2) above it
    boxes[k * 12..k * 12 + 8].copy_from_slice(&[0.0, 0.0, 44.8, 44.8, 0.0, 0.0, 0.0, -44.8]);
    scores[k] = 3.0;
    let post = DetectorPostprocess::pose_detection();
    let lb = letterbox(640, 480, 224, 224).unwrap();
    let dets = post.run(&boxes, &scores, &lb.padding).unwrap();
    assert_eq!(dets.len(), 1);
    let kps = dets[0].keypoints_pixels(640, 480);
    // tensor (0.5, 0.5) -> frame (320, 240); tensor (0.5, 0.3) -> y = (0.3 - 0.125) / 0.75 * 480
    assert_close!(kps[0][0], 320.0, 1e-3);
    assert_close!(kps[0][1], 240.0, 1e-3);
    assert_close!(kps[1][0], 320.0, 1e-3);
    assert_close!(kps[1][1], 112.0, 1e-3);
    let roi = detection_roi(&dets[0], 640, 480).unwrap();
    // side 2 * 128 * 1.25 = 320, upright
    assert_close!(roi.cx, 320.0, 1e-3);
    assert_close!(roi.cy, 240.0, 1e-3);
    assert_close!(roi.w, 320.0, 1e-3);
    assert_close!(roi.h, 320.0, 1e-3);
    assert_close!(roi.rotation, 0.0, 1e-6);
    // the face box: 0.2 x 0.2 of the tensor = 128 x 128 frame pixels
    let b = dets[0].to_detection(640, 480).bbox;
    assert_close!(b.w, 128.0, 1e-3);
    assert_close!(b.h, 128.0, 1e-3);
}

// ------------------------------------------------------------------------------------------------
// Warp into input tensors

/// A `w` x `h` RGB image with a 2-byte row padding; pixel (x, y) = (x, y, x + y) mod 256.
fn gradient(w: usize, h: usize) -> (Vec<u8>, usize) {
    let stride = 3 * w + 2;
    let mut data = vec![7u8; stride * h];
    for y in 0..h {
        for x in 0..w {
            let o = y * stride + 3 * x;
            data[o] = (x % 256) as u8;
            data[o + 1] = (y % 256) as u8;
            data[o + 2] = ((x + y) % 256) as u8;
        }
    }
    (data, stride)
}

fn px(data: &[u8], stride: usize, x: usize, y: usize) -> [u8; 3] {
    let o = y * stride + 3 * x;
    [data[o], data[o + 1], data[o + 2]]
}

fn translation(tx: f64, ty: f64) -> Affine2 {
    Affine2 {
        m: [[1.0, 0.0, tx], [0.0, 1.0, ty]],
    }
}

#[test]
fn warp_with_integer_and_half_pixel_shifts() {
    let (data, stride) = gradient(40, 30);
    let img = RgbImage {
        data: &data,
        width: 40,
        height: 30,
        stride,
    };
    // destination (i, j) samples source (i + 10, j + 5): an exact copy
    let out = warp_rgb8(&img, &translation(10.0, 5.0), 8, 6, BorderMode::Zero).unwrap();
    for j in 0..6 {
        for i in 0..8 {
            assert_eq!(px(&out, 24, i, j), px(&data, stride, i + 10, j + 5));
        }
    }
    // half a pixel in x: the mean of two neighbours, rounded half up ((a + b) / 2)
    let out = warp_rgb8(&img, &translation(10.5, 5.0), 1, 1, BorderMode::Zero).unwrap();
    // red: (10 + 11) / 2 = 10.5 -> 11; green 5; blue (15 + 16) / 2 -> 16
    assert_eq!(px(&out, 3, 0, 0), [11, 5, 16]);
    // a quarter pixel in y: green 5 * 0.75 + 6 * 0.25 = 5.25 -> 5
    let out = warp_rgb8(&img, &translation(10.0, 5.25), 1, 1, BorderMode::Zero).unwrap();
    assert_eq!(px(&out, 3, 0, 0), [10, 5, 15]);
    // outside: zero or the nearest edge pixel
    let out = warp_rgb8(&img, &translation(-5.0, -5.0), 1, 1, BorderMode::Zero).unwrap();
    assert_eq!(px(&out, 3, 0, 0), [0, 0, 0]);
    let out = warp_rgb8(&img, &translation(100.0, 12.0), 1, 1, BorderMode::Replicate).unwrap();
    assert_eq!(px(&out, 3, 0, 0), px(&data, stride, 39, 12));
    // half a pixel past the last column with a zero border: (255 * 0 + edge) / 2
    let out = warp_rgb8(&img, &translation(39.5, 0.0), 1, 1, BorderMode::Zero).unwrap();
    assert_eq!(px(&out, 3, 0, 0), [20, 0, 20]); // 39 / 2 = 19.5 -> 20
    // an empty output is empty, not a panic
    for (w, h) in [(0, 4), (4, 0), (0, 0)] {
        let out = warp_rgb8(&img, &translation(1.0, 1.0), w, h, BorderMode::Zero).unwrap();
        assert!(out.is_empty());
    }
}

/// The warp against its closed form on rotated, scaled and shifted maps that reach past every
/// edge: the source position rounded to 1/32 pixel (half to even), bilinear weights of those
/// 32nds in exact f64 arithmetic, the border rule per tap, the sum rounded half up.
#[test]
fn warp_matches_the_fixed_point_closed_form() {
    let (width, height) = (37usize, 23usize);
    let stride = 3 * width + 5;
    let data: Vec<u8> = (0..stride * height)
        .map(|i| ((i * 7919) % 256) as u8)
        .collect();
    let img = RgbImage {
        data: &data,
        width,
        height,
        stride,
    };
    let (out_w, out_h) = (29usize, 31usize);
    let mut maps: Vec<Affine2> = [0.0, 0.3, -1.1, 2.5]
        .into_iter()
        .enumerate()
        .map(|(k, angle)| {
            let scale = 0.7 + 0.35 * k as f64;
            let (c, s) = (scale * f64::cos(angle), scale * f64::sin(angle));
            Affine2 {
                m: [[c, -s, -6.3 + 3.1 * k as f64], [s, c, 4.7 - 2.2 * k as f64]],
            }
        })
        .collect();
    // Steps of 1/64 pixel: every other position is a tie between two 32nds (half to even).
    maps.push(Affine2 {
        m: [
            [1.0 + 1.0 / 64.0, 0.0, 1.0 / 64.0],
            [0.0, 1.0 - 1.0 / 64.0, -3.0 / 64.0],
        ],
    });
    for (k, map) in maps.iter().enumerate() {
        for border in [BorderMode::Zero, BorderMode::Replicate] {
            let out = warp_rgb8(&img, map, out_w, out_h, border).unwrap();
            for j in 0..out_h {
                for i in 0..out_w {
                    let (x, y) = (i as f64, j as f64);
                    let q = |v: f64| (v * 32.0).round_ties_even();
                    let fx = q(map.m[0][0] * x + map.m[0][1] * y + map.m[0][2]);
                    let fy = q(map.m[1][0] * x + map.m[1][1] * y + map.m[1][2]);
                    let (sx, sy) = ((fx / 32.0).floor(), (fy / 32.0).floor());
                    let (ax, ay) = (fx / 32.0 - sx, fy / 32.0 - sy);
                    let mut want = [0.0f64; 3];
                    for (dy, wy) in [(0.0, 1.0 - ay), (1.0, ay)] {
                        for (dx, wx) in [(0.0, 1.0 - ax), (1.0, ax)] {
                            let (u, v) = (sx + dx, sy + dy);
                            let inside =
                                u >= 0.0 && v >= 0.0 && u < width as f64 && v < height as f64;
                            let (u, v) = match border {
                                _ if wx * wy == 0.0 => continue,
                                BorderMode::Zero if !inside => continue,
                                BorderMode::Zero => (u, v),
                                BorderMode::Replicate => (
                                    u.clamp(0.0, width as f64 - 1.0),
                                    v.clamp(0.0, height as f64 - 1.0),
                                ),
                            };
                            for (ch, w) in px(&data, stride, u as usize, v as usize)
                                .iter()
                                .zip(want.iter_mut())
                            {
                                *w += wx * wy * f64::from(*ch);
                            }
                        }
                    }
                    let want = want.map(|v| (v + 0.5).floor() as u8);
                    assert_eq!(
                        px(&out, 3 * out_w, i, j),
                        want,
                        "map {k}, {border:?}, pixel ({i}, {j})"
                    );
                }
            }
        }
    }
}

#[test]
fn detector_input_of_640x480() {
    let (data, stride) = gradient(640, 480);
    let img = RgbImage {
        data: &data,
        width: 640,
        height: 480,
        stride,
    };
    let t = detector_input(img).unwrap();
    assert_eq!(t.shape(), [1, 224, 224, 3]);
    assert_eq!(t.data.len(), 224 * 224 * 3);
    assert_eq!(t.padding, [0.0, 0.125, 0.0, 0.125]);
    assert_eq!((t.roi.w, t.roi.h), (640.0, 480.0));
    assert_eq!((t.padded_roi.w, t.padded_roi.h), (640.0, 640.0));
    let at = |i: usize, j: usize| &t.data[3 * (j * 224 + i)..3 * (j * 224 + i) + 3];
    // letterbox rows (y < 0 or y >= 480 in the frame) hold zeros, i.e. -1 after 2 v / 255 - 1
    assert_eq!(at(0, 0), &[-1.0, -1.0, -1.0]);
    assert_eq!(at(100, 200), &[-1.0, -1.0, -1.0]);
    // tensor (112, 112) -> frame (320, 240): (320 mod 256, 240, 560 mod 256) = (64, 240, 48)
    let v = |b: f32| b * 2.0 / 255.0 - 1.0;
    let got = at(112, 112);
    for (g, e) in got.iter().zip([64.0, 240.0, 48.0]) {
        assert_close!(*g, v(e), 1e-6);
    }
    // tensor (0, 28) -> frame (0, 0)
    for g in at(0, 28) {
        assert_close!(*g, v(0.0), 1e-6);
    }
    // every value in [-1, 1]
    assert!(t.data.iter().all(|x| (-1.0..=1.0).contains(x)));
}

#[test]
fn landmark_input_of_a_rotated_roi() {
    // one bright pixel 50 px to the right of the ROI centre: with the ROI rotated by +90
    // degrees (head to the right), it lands 50 px above the crop centre
    let (w, h) = (400usize, 300usize);
    let stride = 3 * w;
    let mut data = vec![0u8; stride * h];
    let (cx, cy) = (200usize, 150usize);
    let o = cy * stride + 3 * (cx + 50);
    data[o..o + 3].copy_from_slice(&[255, 128, 51]);
    let img = RgbImage {
        data: &data,
        width: w,
        height: h,
        stride,
    };
    let roi = RotatedRect {
        cx: cx as f64,
        cy: cy as f64,
        w: 256.0,
        h: 256.0,
        rotation: FRAC_PI_2,
    };
    let t = landmark_input(img, &roi).unwrap();
    assert_eq!(t.shape(), [1, 256, 256, 3]);
    assert_eq!(t.padding, [0.0; 4]);
    let at = |i: usize, j: usize| &t.data[3 * (j * 256 + i)..3 * (j * 256 + i) + 3];
    for (g, e) in at(128, 78).iter().zip([255.0, 128.0, 51.0]) {
        assert_close!(*g, e / 255.0, 1e-6);
    }
    let bright = t.data.chunks(3).filter(|p| p[0] > 0.0).count();
    assert_eq!(bright, 1);
    // replicate border: a ROI hanging off the image repeats the edge instead of zeros
    let (gd, gs) = gradient(40, 30);
    let g = RgbImage {
        data: &gd,
        width: 40,
        height: 30,
        stride: gs,
    };
    let off = RotatedRect {
        cx: 0.0,
        cy: 0.0,
        w: 256.0,
        h: 256.0,
        rotation: 0.0,
    };
    let t = landmark_input(g, &off).unwrap();
    // crop (0, 0) -> frame (-128, -128): clamped to pixel (0, 0) = (0, 0, 0); crop (130, 2) ->
    // frame (2, -126) -> pixel (2, 0) = (2, 0, 2)
    assert_eq!(&t.data[0..3], &[0.0, 0.0, 0.0]);
    let q = 3 * (2 * 256 + 130);
    for (g, e) in t.data[q..q + 3].iter().zip([2.0, 0.0, 2.0]) {
        assert_close!(*g, e / 255.0, 1e-7);
    }
    // a bad buffer is an error, not a panic
    let bad = RgbImage {
        data: &gd[..10],
        width: 40,
        height: 30,
        stride: gs,
    };
    assert!(landmark_input(bad, &off).is_err());
}

// ------------------------------------------------------------------------------------------------
// Landmarks

fn landmark_outputs() -> (Vec<f32>, Vec<f32>) {
    let mut lm = vec![0f32; MODEL_LANDMARKS * LANDMARK_DIMS];
    let mut world = vec![0f32; MODEL_LANDMARKS * WORLD_DIMS];
    // landmark 0 at crop pixel (128, 64), z 10, visibility logit 0, presence logit 2
    lm[0..5].copy_from_slice(&[128.0, 64.0, 10.0, 0.0, 2.0]);
    // auxiliary landmarks: hip centre at the crop centre, size point 64 px above it
    let a = AUX_LANDMARKS.start * LANDMARK_DIMS;
    lm[a..a + 2].copy_from_slice(&[128.0, 128.0]);
    lm[a + 5..a + 7].copy_from_slice(&[128.0, 64.0]);
    world[0..3].copy_from_slice(&[0.1, -0.5, 0.2]);
    (lm, world)
}

#[test]
fn landmark_projection_through_the_roi() {
    let (lm, world) = landmark_outputs();
    let out = LandmarkOutputs {
        landmarks: &lm,
        pose_flag: 0.9,
        heatmap: None,
        world: &world,
    };
    let mut roi = RotatedRect {
        cx: 320.0,
        cy: 240.0,
        w: 512.0,
        h: 512.0,
        rotation: 0.0,
    };
    let p = decode_pose(&out, &roi, &[0.0; 4], POSE_PRESENCE_THRESHOLD)
        .unwrap()
        .unwrap();
    assert_eq!(p.landmarks.len(), 33);
    assert_eq!(p.auxiliary.len(), 2);
    assert_eq!(p.world.len(), 33);
    // (0.5, 0.25) of the crop -> (320 + 0 * 512, 240 - 0.25 * 512); z = 10 / 256 * 512
    let l = p.landmarks[0];
    assert_close!(l.x, 320.0, 1e-6);
    assert_close!(l.y, 112.0, 1e-6);
    assert_close!(l.z, 20.0, 1e-6);
    assert_close!(l.visibility, 0.5, 1e-7);
    assert_close!(l.presence, 0.880797, 1e-6);
    assert_close!(p.world[0].x, 0.1, 1e-7);
    assert_close!(p.world[0].y, -0.5, 1e-7);
    assert_eq!(p.world[0].visibility, l.visibility);
    // next ROI from the auxiliary landmarks: (320, 240) and (320, 112): side 2 * 128 * 1.25
    let next = p.next_roi().unwrap();
    assert_close!(next.cx, 320.0, 1e-9);
    assert_close!(next.cy, 240.0, 1e-9);
    assert_close!(next.w, 320.0, 1e-9);
    assert_close!(next.rotation, 0.0, 1e-12);

    // rotated by +90 degrees: crop "up" is frame "right"
    roi.rotation = FRAC_PI_2;
    let p = decode_pose(&out, &roi, &[0.0; 4], POSE_PRESENCE_THRESHOLD)
        .unwrap()
        .unwrap();
    assert_close!(p.landmarks[0].x, 320.0 + 128.0, 1e-6);
    assert_close!(p.landmarks[0].y, 240.0, 1e-6);
    // world (0.1, -0.5, 0.2) rotated: (cos x - sin y, sin x + cos y, z) = (0.5, 0.1, 0.2)
    assert_close!(p.world[0].x, 0.5, 1e-7);
    assert_close!(p.world[0].y, 0.1, 1e-7);
    assert_close!(p.world[0].z, 0.2, 1e-7);
    let next = p.next_roi().unwrap();
    assert_close!(next.rotation, FRAC_PI_2, 1e-9);

    // tracking: the ROI follows the landmarks while the pose is present
    // (the first sample passes the 1-euro filters unchanged)
    let mut tracker = RoiTracker::new(true);
    assert_eq!(tracker.roi(), None);
    let mut tracked = p.clone();
    tracker.update(Some(&mut tracked), 33_333);
    // (up to the float state of mediapipe's filters)
    for (a, b) in tracked.landmarks.iter().zip(&p.landmarks) {
        assert_close!(a.x, b.x, 1e-4);
        assert_close!(a.y, b.y, 1e-4);
        assert_close!(a.z, b.z, 1e-4);
    }
    for (a, b) in tracked.world.iter().zip(&p.world) {
        assert_close!(a.x, b.x, 1e-7);
        assert_close!(a.y, b.y, 1e-7);
        assert_close!(a.z, b.z, 1e-7);
    }
    assert_eq!(tracker.roi(), Some(next));
    // the pose flag must be above 0.5: at 0.5 there is no pose and tracking is lost
    let gone = LandmarkOutputs {
        pose_flag: 0.5,
        ..out
    };
    let none = decode_pose(&gone, &roi, &[0.0; 4], POSE_PRESENCE_THRESHOLD).unwrap();
    assert!(none.is_none());
    tracker.update(None, 66_666);
    assert_eq!(tracker.roi(), None);
}

#[test]
fn heatmap_refinement_moves_to_the_weighted_mean_cell() {
    let (lm, world) = landmark_outputs();
    // logits -100 (sigmoid 0) except two cells of landmark 0's channel near its cell
    // (col 32, row 16): (col 33, row 16) and (col 35, row 16) at +100 (sigmoid 1), both in the
    // 7x7 window -> mean col 34, row 16 -> (34 / 64, 16 / 64)
    let n = HEATMAP_SIZE;
    let mut hm = vec![-100f32; n * n * MODEL_LANDMARKS];
    for col in [33usize, 35] {
        hm[(16 * n + col) * MODEL_LANDMARKS] = 100.0;
    }
    // a bright cell outside landmark 0's window is ignored
    hm[(16 * n + 40) * MODEL_LANDMARKS] = 100.0;
    let out = LandmarkOutputs {
        landmarks: &lm,
        pose_flag: 0.9,
        heatmap: Some(&hm),
        world: &world,
    };
    let roi = RotatedRect {
        cx: 320.0,
        cy: 240.0,
        w: 512.0,
        h: 512.0,
        rotation: 0.0,
    };
    let p = decode_pose(&out, &roi, &[0.0; 4], POSE_PRESENCE_THRESHOLD)
        .unwrap()
        .unwrap();
    // x = 320 + (34 / 64 - 0.5) * 512 = 336, y = 240 + (16 / 64 - 0.5) * 512 = 112
    assert_close!(p.landmarks[0].x, 336.0, 1e-4);
    assert_close!(p.landmarks[0].y, 112.0, 1e-4);
    // landmarks whose window has no confident cell stay where the regression put them
    assert_close!(p.auxiliary[0].x, 320.0, 1e-6);
    assert_close!(p.auxiliary[0].y, 240.0, 1e-6);
}

#[test]
fn letterboxed_landmark_crop_is_undone() {
    // a ROI twice as wide as high is padded to a square: padding 0.25 top and bottom; a
    // landmark at crop (0.5, 0.25) is on the ROI's top edge: (cx, cy - h / 2)
    let (mut lm, world) = landmark_outputs();
    lm[0..5].copy_from_slice(&[128.0, 64.0, 0.0, 0.0, 0.0]);
    let roi = RotatedRect {
        cx: 300.0,
        cy: 200.0,
        w: 200.0,
        h: 100.0,
        rotation: 0.0,
    };
    let (padded, padding) = roi.pad_to_aspect(256, 256).unwrap();
    assert_eq!(padding, [0.0, 0.25, 0.0, 0.25]);
    assert_eq!((padded.w, padded.h), (200.0, 200.0));
    let out = LandmarkOutputs {
        landmarks: &lm,
        pose_flag: 1.0,
        heatmap: None,
        world: &world,
    };
    let p = decode_pose(&out, &roi, &padding, POSE_PRESENCE_THRESHOLD)
        .unwrap()
        .unwrap();
    assert_close!(p.landmarks[0].x, 300.0, 1e-9);
    assert_close!(p.landmarks[0].y, 150.0, 1e-9);
    // and the same point through the padded crop's affine map
    let q = padded.crop_to_frame(256, 256).apply([128.0, 64.0]);
    assert_close!(q[0], 300.0, 1e-9);
    assert_close!(q[1], 150.0, 1e-9);
}

// ------------------------------------------------------------------------------------------------
// Temporal filter

#[test]
fn one_euro_filter_of_the_auxiliary_landmarks() {
    // POSE_AUX: min_cutoff 0.01, beta 10, derivate_cutoff 1; object scale 100 px -> value scale
    // 0.01; samples every 33333 us (f = 1 / 0.033333 = 30.0003 Hz, te = 1 / f).
    // alpha(c) = 1 / (1 + (1 / (2 pi c)) / te).
    // t1, x = 100: passes through.
    // t2, x = 110: dx = 10 * 0.01 * f = 3.00003; low-passed with alpha(1) = 0.173169 from 0:
    //   0.519513; cutoff = 0.01 + 10 * 0.519513 = 5.205131; alpha = 0.521565;
    //   x = 0.521565 * 110 + 0.478435 * 100 = 105.215652.
    // t3, x = 110: dx = 0 -> 0.826831 * 0.519513 = 0.429549; cutoff 4.305494; alpha 0.474163;
    //   x = 0.474163 * 110 + 0.525837 * 105.215652 = 107.484215.
    let mut f = OneEuroFilter::new(&OneEuroParams::POSE_AUX);
    assert_eq!(f.apply(33_333_000, 0.01, 100.0), 100.0);
    assert_close!(f.apply(66_666_000, 0.01, 110.0), 105.215652, 1e-4);
    assert_close!(f.apply(99_999_000, 0.01, 110.0), 107.484215, 1e-4);
    // a timestamp that does not increase returns the input
    assert_eq!(f.apply(99_999_000, 0.01, 50.0), 50.0);
}

// ------------------------------------------------------------------------------------------------
// Flip test: the mirrored crop decoded as the crop of the frame mirrored about x = 0.

#[test]
fn mirrored_roi_projects_the_mirrored_crop_onto_the_mirrored_frame() {
    // Crop pixel i sits at u = i / 256 (RotatedRect::crop_to_frame); mirrored, it is pixel
    // 255 - i, at 255/256 - u. Projected through the mirrored ROI and letterbox that must land
    // on the mirror (x -> -x) of where u lands through the ROI: LandmarkProjectionCalculator,
    // p = centre + R(rotation) [((u - left) / (1 - left - right) - 1/2) w, ...].
    let roi = RotatedRect {
        cx: 310.0,
        cy: 455.0,
        w: 660.0,
        h: 640.0,
        rotation: 0.3,
    };
    let padding = [0.1, 0.05, 0.02, 0.0];
    let (mroi, mpad) = landmarks::mirrored_roi(&roi, &padding, 256);
    for (u, v) in [(0.2f32, 0.7f32), (0.5, 0.5), (0.93, 0.11)] {
        let lm = |x: f32| NormLandmark {
            x,
            y: v,
            z: 0.25,
            visibility: 0.5,
            presence: 0.5,
        };
        let p = landmarks::project_landmarks(&[lm(u)], &roi, &padding)[0];
        let q = landmarks::project_landmarks(&[lm(255.0 / 256.0 - u)], &mroi, &mpad)[0];
        // By hand for the first point, then the mirror relation for all.
        if u == 0.2 {
            let (x, y) = ((0.2 - 0.1) / 0.88 - 0.5, (0.7 - 0.05) / 0.95 - 0.5);
            let (s, c) = 0.3f64.sin_cos();
            assert_close!(p.x, 310.0 + (c * x - s * y) * 660.0, 1e-3);
            assert_close!(p.y, 455.0 + (s * x + c * y) * 640.0, 1e-3);
        }
        assert_close!(q.x, -p.x, 1e-3);
        assert_close!(q.y, p.y, 1e-3);
        assert_close!(q.z, p.z, 1e-3);
    }
}

#[test]
fn an_unmirrored_pose_exchanges_sides_but_not_the_midline() {
    let lm = |x: f64| Landmark {
        x,
        y: 2.0 * x,
        z: 0.0,
        visibility: 0.9,
        presence: 0.9,
    };
    let wl = |x: f64| WorldLandmark {
        x,
        y: 3.0 * x,
        z: x,
        visibility: 0.9,
        presence: 0.9,
    };
    let pose = PoseLandmarks {
        presence: 0.8,
        landmarks: (0..33).map(|i| lm(i as f64 + 1.0)).collect(),
        auxiliary: vec![lm(100.0), lm(200.0)],
        world: (0..33).map(|i| wl(i as f64 + 1.0)).collect(),
    };
    let m = pose.clone().unmirrored();
    // 11 (left shoulder) <-> 12 (right shoulder): the right one is the left one mirrored.
    assert_close!(m.landmarks[12].x, -12.0, 1e-12);
    assert_close!(m.landmarks[12].y, 24.0, 1e-12);
    assert_close!(m.landmarks[11].x, -13.0, 1e-12);
    assert_close!(m.world[12].x, -12.0, 1e-12);
    assert_close!(m.world[12].y, 36.0, 1e-12);
    assert_close!(m.world[12].z, 12.0, 1e-12);
    // The nose (0) stays itself; the auxiliary points are mirrored in place.
    assert_close!(m.landmarks[0].x, -1.0, 1e-12);
    assert_close!(m.auxiliary[0].x, -100.0, 1e-12);
    assert_close!(m.auxiliary[1].y, 400.0, 1e-12);
    // Twice is the identity; the mean with itself is itself; sides are told apart.
    assert_eq!(m.clone().unmirrored(), pose);
    assert_eq!(pose.clone().mean_with(&pose), pose);
    let mut swapped = pose.clone();
    landmarks::swap_left_right(&mut swapped.landmarks);
    landmarks::swap_left_right(&mut swapped.world);
    assert!(landmarks::sides_disagree(&pose, &swapped));
    assert!(!landmarks::sides_disagree(&pose, &pose));
    let mut lost = pose.clone();
    lost.landmarks[11].x = f64::NAN;
    assert!(!landmarks::sides_disagree(&pose, &lost));
}

/// I420 frames: on planes that are affine in position (where bilinear sampling is exact), the
/// warp equals the closed form: the map's source point, luma and chroma of the affine planes
/// there (chroma at its siting: co-sited with even luma columns or centred), converted by
/// ITU-R BT.709 / BT.601 in limited or full range; for a tile view (odd origin) and both
/// borders. Written from the standards' equations, not from `ikol_detect::frame`.
#[test]
fn i420_warp_matches_the_closed_form() {
    use ikol_detect::{Frame, I420Image, YuvMatrix};
    let (w, h) = (96usize, 80usize);
    let (cw, ch) = (w / 2, h / 2);
    // Y = 20 + x + y (luma pixels), U = 30 + 4 cx, V = 50 + 4 cy (chroma samples): steep
    // enough that a quarter-sample error in the chroma siting costs 2 levels.
    let y: Vec<u8> = (0..h)
        .flat_map(|r| (0..w).map(move |c| (20 + c + r) as u8))
        .collect();
    let u: Vec<u8> = (0..ch)
        .flat_map(|_| (0..cw).map(move |c| (30 + 4 * c) as u8))
        .collect();
    let v: Vec<u8> = (0..ch)
        .flat_map(|r| (0..cw).map(move |_| (50 + 4 * r) as u8))
        .collect();
    let convert = |m: (f64, f64, bool), yy: f64, uu: f64, vv: f64| -> [f64; 3] {
        let (kr, kb, full) = m;
        let kg = 1.0 - kr - kb;
        let (yp, cb, cr) = if full {
            (yy, uu - 128.0, vv - 128.0)
        } else {
            (
                (yy - 16.0) * 255.0 / 219.0,
                (uu - 128.0) * 255.0 / 224.0,
                (vv - 128.0) * 255.0 / 224.0,
            )
        };
        [
            yp + 2.0 * (1.0 - kr) * cr,
            yp - 2.0 * kb * (1.0 - kb) / kg * cb - 2.0 * kr * (1.0 - kr) / kg * cr,
            yp + 2.0 * (1.0 - kb) * cb,
        ]
    };
    // (matrix, its constants, chroma co-sited horizontally, vertically, view origin, view
    // size less than the planes')
    let cases = [
        (
            YuvMatrix::BT709,
            (0.2126, 0.0722, false),
            true,
            false,
            (0usize, 0usize),
            (4usize, 4usize),
        ),
        (
            YuvMatrix::BT601.full(),
            (0.299, 0.114, true),
            false,
            false,
            (0, 0),
            (4, 4),
        ),
        (
            YuvMatrix::BT709,
            (0.2126, 0.0722, false),
            false,
            false,
            (7, 5),
            (4, 4),
        ),
        // co-sited both ways (DV-style), an odd-sized view at an odd origin
        (
            YuvMatrix::BT709,
            (0.2126, 0.0722, false),
            true,
            true,
            (3, 1),
            (6, 8),
        ),
    ];
    // a slight rotation and scale, inside the view
    let map = Affine2 {
        m: [[0.9, 0.12, 10.3], [-0.1, 0.95, 12.7]],
    };
    let mut checked = 0;
    // The whole planes as one view (BT.709, MPEG-2 siting); the cases take windows of them.
    let whole = I420Image {
        y: &y,
        u: &u,
        v: &v,
        y_stride: w,
        uv_stride: cw,
        width: w,
        height: h,
        x0: 0,
        y0: 0,
        colour: YuvMatrix::BT709,
        h_cosited: true,
        v_cosited: false,
    };
    for (colour, m, cosited, v_cosited, (x0, y0), (less_w, less_h)) in cases {
        let img = I420Image {
            width: w - x0 - less_w,
            height: h - y0 - less_h,
            x0,
            y0,
            colour,
            h_cosited: cosited,
            v_cosited,
            ..whole
        };
        let (ow, oh) = (40, 36);
        let out = warp_frame(&Frame::I420(img), &map, ow, oh, BorderMode::Replicate).unwrap();
        for j in 0..oh {
            for i in 0..ow {
                let [sx, sy] = map.apply([i as f64, j as f64]);
                let (ax, ay) = (sx + x0 as f64, sy + y0 as f64);
                let cx = ax / 2.0 - if cosited { 0.0 } else { 0.25 };
                let cy = ay / 2.0 - if v_cosited { 0.0 } else { 0.25 };
                let want = convert(m, 20.0 + ax + ay, 30.0 + 4.0 * cx, 50.0 + 4.0 * cy);
                for c in 0..3 {
                    let got = f64::from(out[3 * (j * ow + i) + c]);
                    assert!(
                        (got - want[c].clamp(0.0, 255.0)).abs() <= 1.0,
                        "{colour:?} cosited {cosited} origin ({x0},{y0}) pixel ({i},{j}) channel {c}: {got} vs {}",
                        want[c]
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 40 * 36);
    // Borders: far outside, zero gives black and replicate the nearest edge pixel's colour.
    let img = whole;
    let far = translation(-50.0, -50.0);
    let zero = warp_frame(&Frame::I420(img), &far, 2, 2, BorderMode::Zero).unwrap();
    assert_eq!(zero, vec![0; 12]);
    let rep = warp_frame(&Frame::I420(img), &far, 1, 1, BorderMode::Replicate).unwrap();
    let corner = convert((0.2126, 0.0722, false), 20.0, 30.0, 50.0);
    for c in 0..3 {
        assert!(
            (f64::from(rep[c]) - corner[c].clamp(0.0, 255.0)).abs() <= 1.0,
            "{rep:?} vs {corner:?}"
        );
    }
    // A view the planes do not hold is refused.
    let short = I420Image { u: &u[..10], ..img };
    assert!(warp_frame(&Frame::I420(short), &far, 1, 1, BorderMode::Zero).is_err());
}
