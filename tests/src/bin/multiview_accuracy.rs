//! `multiview-accuracy`: how close the single-view product comes to a multi-view reference on
//! real video (issue 14, item 7).
//!
//! ```text
//! cargo run --release -p ikol-tests --bin multiview-accuracy -- [--media DIR] [--ikol PATH]
//!     [--pipeline FILE] [--methods ikol,hybrik,fit] [--keep DIR [--reuse]] [--out DIR]
//!     [--var NAME=VALUE ...] [--set ELEMENT.PROPERTY=VALUE ...] [--view camNN]
//! ```
//! (`--var` passes a pipeline variable and `--set` an element property to every run, e.g.
//! `--set ikolsolver.fit-sigma-accel=0.03`; the baseline run's own `FLIP_TEST=false` wins over
//! a `--var FLIP_TEST=...`; `--view` runs and judges the chain on another of
//! the four views, cam01 by default.)
//! (`make multiview-accuracy` fetches the media and models, builds and runs it.)
//!
//! **Data.** The 4 synchronised views of pose2sim 0.10.49's `Demo_SinglePerson` (100 frames,
//! 60 fps, portrait; `tests/tools/fetch_multiview.sh` puts `cam01.mp4`..`cam04.mp4` and
//! `Calib.qca.txt` in `--media`, default `~/.cache/ikol/media/pose2sim-multiview`).
//!
//! **Calibration** (Qualisys `.qca` XML, read as Pose2Sim's `read_qca` + `calib_qca_fun` do):
//! intrinsics are in sensor sub-pixels, 64 per pixel: fx = focalLengthU / 64, fy =
//! focalLengthV / 64, cx = centerPointU / 64 - fov_video.left, cy = centerPointV / 64 -
//! fov_video.top. The `transform` holds the camera's position in world millimetres (x, y, z)
//! and a matrix M (r11..r33, row-major); world to OpenCV camera (x right, y down, z forward) is
//! X_c = diag(1, -1, -1) M (X_w - C), C = (x, y, z) / 1000 (Pose2Sim: transpose, invert, then a
//! half turn about x). Distortion (OpenCV model k1, k2, p1, p2, k3) is Pose2Sim's: the file's
//! values divided by 64 (Pose2Sim's triangulation does not use them at all; here they move the
//! reprojection error by < 0.1 px). cam01 and cam02 are 1080 px wide while the calibration is
//! 1088 wide: as in Pose2Sim, cx is left as it is (the video is the sensor's first 1080
//! columns), which gives the lowest reprojection error of the crops tried. The binary prints
//! the reference's reprojection error under the alternatives (no / raw distortion, other
//! crops, transposed M) as evidence for these choices.
//!
//! **Reference 3D** (independent of the single-view chain): every frame of every view goes
//! through the project's BlazePose (detector on every frame; the subject is the largest
//! region, following the previous frame's subject among the large ones, so that the observer
//! at the back of cam01/cam02 is not taken; the landmark model runs on the detector's region, then
//! once more on the region from its own landmarks). The 33 landmarks are undistorted and
//! triangulated per frame by weighted DLT (weights = visibility; SVD of the stacked 2n x 4
//! system, in normalised camera coordinates), in the calibration's world frame (metres).
//! Left/right repair: per frame, every combination of "view v has its left/right labels
//! swapped" is tried (separately for the upper body incl. face and hands, landmarks 0-22, and
//! the legs, 23-32), and the one with the lowest visibility-weighted mean reprojection error is
//! kept. A combination and its complement (all views flipped) give the same error: of the two,
//! the one where the body is not mirrored is kept ((left - right) x up points forward, with up
//! = shoulders - ankles and forward = toes - heels, both free of the labelling).
//!
//! **Predictions**: `ikol run pipelines/video-to-overlay.pipeline` on cam01 (or `--view`) for
//! each method (`METHOD=M INIT=analytic DETECTOR=blazepose MODEL=blazepose FOCAL=fx
//! PRINCIPAL=cx,cy`; a pipeline without `PRINCIPAL` is run again without it, the principal point
//! then being the frame centre). Per frame the subject is the person of the track that is most
//! often the tallest (`bbox`), unless it is much smaller than the tallest person of that frame.
//! Rows: `BlazePose world landmarks` (`landmarks_3d`, 2D from `landmarks_2d`) of one more run
//! with `FLIP_TEST=false` (`landmarks.jsonl`: BlazePose as mediapipe gives it, the baseline:
//! `ikolbackbone` turns the world landmarks from the crop's view into camera axes
//! (`crop_to_camera`), which this row undoes with the exported `roi`'s centre: the hull of the
//! region the landmark pass used where `ikolcrop` passes the fed-back region on as the person's
//! box, as it does for a followed person; a detector box merged in on a periodic search can
//! move it by a few pixels: a tenth of a degree of turn at fx 1681), the same turned
//! (`..., in camera axes`: as the chain uses them), and `BlazePose world landmarks, the runs'
//! front end` (of the first method run: the pipeline's default front end, with the flip test,
//! in camera axes), `M (mesh at landmark anchors)`
//! (`surface_landmarks_3d`), `M (SMPL joints)` (`joints_3d`, SMPL joints 16-21, 1, 2, 4, 5, 7,
//! 8 against landmarks 11-16, 23-28), and the front end's 2D line per run (`landmarks_2d`).
//!
//! **Metrics** on the 12 limb points (shoulders, elbows, wrists, hips, knees, ankles), over
//! the frames that have both a prediction and a reference (missing frames are counted and
//! reported, not filled); mm unless stated:
//! - PA-MPJPE: per frame, the similarity transform (scale, rotation, translation; Umeyama, no
//!   reflection) that best maps the 12 predicted points onto the reference; mean distance.
//! - MPJPE: predictions rotated from the view's (cam01's) camera axes into the world frame
//!   (rotation only), each set minus its hip centre (mean of the two hips); mean distance.
//! - |x|, |y|, |z|: mean absolute error per axis of the same root-aligned points, in cam01's
//!   camera axes (z = depth).
//! - L/R: frames whose 12 points, root-aligned, are nearer the reference with their left and
//!   right labels exchanged (a front end's swap the product did not repair).
//! - accel: mean |p[t+1] - 2 p[t] + p[t-1]| (mm/frame^2) of the root-aligned points, over the
//!   frames t whose neighbours are present; "ref accel" is the reference's own on the same
//!   frames; accel err (VIBE) = mean |acc_pred - acc_ref|. The reference is not smoothed: most
//!   of its own accel is per-frame jitter (printed: its accel after a 5-frame moving average).
//! - flexion err: the angle at each knee and elbow between its two bones (degrees), |pred -
//!   ref| averaged over the 4 joints.
//! - 2D (px): against the reference projected into cam01 with its distortion. Mesh and joint
//!   rows project their camera-frame points with cam01's pinhole (fx, fy, cx, cy; the frame
//!   centre as principal point when the pipeline had no PRINCIPAL); the BlazePose row uses `landmarks_2d`; the front-end lines are `landmarks_2d` of each run.
//!
//! Diagnosis (per BlazePose baseline and mesh row): where the 3D error comes from. PA-MPJPE
//! again with every limb bone (upper arm, forearm, thigh, shin) given the reference's mean
//! length, its direction kept, rebuilt outwards from the shoulders and hips; and with every limb
//! bone's depth component (camera z) given the sign of the reference's, its length kept; per
//! bone the frames whose depth sign differs from the reference's, and the mean bone lengths.
//! (A single view fixes a bone's depth from its image and length only up to that sign.) One
//! more diagnosis row, `BlazePose image landmarks (x, y, z)`: the landmark model's other 3D
//! output (its image landmarks' z, depth relative to the hips, a separate head from the world
//! landmarks) from the reference's own BlazePose pass on the view, as camera-axis points at the
//! reference's mean root depth; its z is not on the scale of x in practice (bones 1.1-2.5x the
//! reference's on cam01), so only its depth signs are to be read: whether that head knows a
//! sign the world landmarks get wrong.
//!
//! Ratios: each method's mesh row over the (first) BlazePose row (PA-MPJPE, MPJPE, accel err,
//! flexion), its mean accel over the reference's, and its 2D error over its own run's front-end
//! 2D error.
//!
//! Writes the table to stdout and `--out` (default `out/`) as `multiview-accuracy.md`, and all
//! numbers as `multiview-accuracy.json`. With `--keep DIR`, intermediate files (landmarks per
//! view, reference, each run's JSON lines and video) stay in DIR; `--reuse` then takes the
//! landmarks and runs already there instead of recomputing them (runs kept before `2ec58d3`,
//! whose world landmarks were not yet turned into camera axes, must be run again: the
//! baseline row would undo a turn they lack).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use ikol_detect::RgbImage;
use ikol_detect::blazepose::RotatedRect;
use ikol_detect::blazepose::landmarks::{BODY_LANDMARKS, LEFT_RIGHT_PAIRS};
use ikol_detect::blazepose_model::{
    BETA_RIDGE, BlazePoseDetector, BlazePoseLandmarker, crop_to_camera, models_dir,
};
use ikol_eval::metrics::{mean_distance, procrustes_align};
use ikol_types::nalgebra::{DMatrix, Matrix3, Vector3};
use ikol_types::{FrameResult, Intrinsics, PersonResult};
use serde_json::{Value, json};

/// Frames in each clip.
const FRAMES: usize = 100;
/// BlazePose landmarks.
const NL: usize = BODY_LANDMARKS;
/// Views, in the calibration's order.
const VIEWS: [&str; 4] = ["cam01", "cam02", "cam03", "cam04"];
/// The evaluated view unless `--view` names another.
const EVAL_VIEW: usize = 0;
/// First landmark of the legs group (hips down); 0..LEGS is the upper body with face and hands.
const LEGS: usize = 23;
/// The 12 limb landmarks: L/R shoulder, elbow, wrist, hip, knee, ankle.
const LIMB_LANDMARKS: [usize; 12] = [11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28];
/// The SMPL-24 joints at the same places.
const LIMB_SMPL: [usize; 12] = [16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8];
/// Hips within the 12.
const HIP_L: usize = 6;
const HIP_R: usize = 7;
/// The files of the baseline run (BlazePose without the flip test) in the work folder.
const LANDMARKS_RUN: &str = "landmarks";
/// (proximal, joint, distal) within the 12: L/R elbow, L/R knee.
const FLEXION: [(usize, usize, usize); 4] = [(0, 2, 4), (1, 3, 5), (6, 8, 10), (7, 9, 11)];

/// The left/right partner of a landmark (itself for the nose).
fn mirror(l: usize) -> usize {
    LEFT_RIGHT_PAIRS
        .iter()
        .find_map(|&(a, b)| {
            if a == l {
                Some(b)
            } else if b == l {
                Some(a)
            } else {
                None
            }
        })
        .unwrap_or(l)
}

// ------------------------------------------------------------------------------------------
// Calibration

/// How the distortion values of the file are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DistortionUnits {
    /// Ignored.
    None,
    /// As written in the file.
    Raw,
    /// Divided by 64, as Pose2Sim's `read_qca` does.
    Per64,
}

/// Where a video narrower than the calibrated sensor sits on it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Crop {
    /// Sensor column 0 = video column 0.
    Left,
    /// The middle columns.
    Centre,
    /// The last columns.
    Right,
    /// The whole sensor width scaled to the video's.
    Scale,
}

/// The choices made when reading the file.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Conventions {
    distortion: DistortionUnits,
    crop: Crop,
    /// Use M^T instead of M (a check: wrong).
    transpose: bool,
}

/// The conventions used (see the module documentation and the printed check).
const CHOSEN: Conventions = Conventions {
    distortion: DistortionUnits::Per64,
    crop: Crop::Left,
    transpose: false,
};

/// One camera of the `.qca` file, as written.
#[derive(Debug, Clone)]
struct QcaCamera {
    serial: String,
    fov_video: HashMap<String, f64>,
    intrinsic: HashMap<String, f64>,
    transform: HashMap<String, f64>,
}

/// `key="value"` pairs of one tag, numeric values only (others skipped).
fn attributes(tag: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq]
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("")
            .to_owned();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        out.insert(key, after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

/// The attributes of the first `<name ...>` tag in `block`.
fn tag_attributes(block: &str, name: &str) -> Option<HashMap<String, String>> {
    let start = block.find(&format!("<{name} "))?;
    let end = block[start..].find('>')? + start;
    Some(attributes(&block[start..end]))
}

fn numeric(attrs: HashMap<String, String>, what: &str) -> Result<HashMap<String, f64>> {
    attrs
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "serial" | "model"))
        .map(|(k, v)| {
            let x: f64 = v
                .trim()
                .parse()
                .with_context(|| format!("{what}: attribute {k}={v:?} is not a number"))?;
            Ok((k, x))
        })
        .collect()
}

/// The cameras of a Qualisys `.qca` XML text.
fn parse_qca(text: &str) -> Result<Vec<QcaCamera>> {
    let mut cams = Vec::new();
    for (i, chunk) in text.split("<camera ").enumerate().skip(1) {
        let block = chunk.split("</camera>").next().unwrap_or(chunk);
        let head = attributes(&block[..block.find('>').unwrap_or(block.len())]);
        let serial = head
            .get("serial")
            .cloned()
            .unwrap_or_else(|| format!("camera {i}"));
        let get = |name: &str| {
            tag_attributes(block, name)
                .ok_or_else(|| anyhow!("camera {serial}: no <{name}> element"))
                .and_then(|a| numeric(a, &format!("camera {serial} <{name}>")))
        };
        cams.push(QcaCamera {
            fov_video: get("fov_video")?,
            intrinsic: get("intrinsic")?,
            transform: get("transform")?,
            serial,
        });
    }
    if cams.is_empty() {
        bail!("no <camera> element");
    }
    Ok(cams)
}

fn field(map: &HashMap<String, f64>, key: &str, serial: &str) -> Result<f64> {
    map.get(key)
        .copied()
        .ok_or_else(|| anyhow!("camera {serial}: attribute {key} missing"))
}

/// A calibrated camera: OpenCV pinhole + distortion (k1, k2, p1, p2, k3), world -> camera.
#[derive(Debug, Clone)]
struct Camera {
    name: String,
    fx: f64,
    fy: f64,
    cx: f64,
    cy: f64,
    /// k1, k2, k3.
    k: [f64; 3],
    /// p1, p2.
    p: [f64; 2],
    /// World -> camera rotation.
    r: Matrix3<f64>,
    /// World -> camera translation (metres).
    t: Vector3<f64>,
    /// The calibrated image size (fov_video).
    calib_size: [f64; 2],
}

impl Camera {
    /// From the file's values, for a video of `video_size` pixels.
    fn from_qca(q: &QcaCamera, video_size: [usize; 2], conv: Conventions) -> Result<Self> {
        let s = q.serial.as_str();
        let i = |k: &str| field(&q.intrinsic, k, s);
        let f = |k: &str| field(&q.fov_video, k, s);
        let tr = |k: &str| field(&q.transform, k, s);
        let (left, top) = (f("left")?, f("top")?);
        let calib_w = f("right")? - left + 1.0;
        let calib_h = f("bottom")? - top + 1.0;
        let mut fx = i("focalLengthU")? / 64.0;
        let fy = i("focalLengthV")? / 64.0;
        let mut cx = i("centerPointU")? / 64.0 - left;
        let cy = i("centerPointV")? / 64.0 - top;
        let extra = calib_w - video_size[0] as f64;
        match conv.crop {
            Crop::Left => {}
            Crop::Centre => cx -= 0.5 * extra,
            Crop::Right => cx -= extra,
            Crop::Scale => {
                let sc = video_size[0] as f64 / calib_w;
                fx *= sc;
                cx *= sc;
            }
        }
        let scale = match conv.distortion {
            DistortionUnits::None => 0.0,
            DistortionUnits::Raw => 1.0,
            DistortionUnits::Per64 => 1.0 / 64.0,
        };
        let k = [
            i("radialDistortion1")? * scale,
            i("radialDistortion2")? * scale,
            i("radialDistortion3")? * scale,
        ];
        let p = [
            i("tangentalDistortion1")? * scale,
            i("tangentalDistortion2")? * scale,
        ];
        let mut m = Matrix3::zeros();
        for (row, col) in (0..3).flat_map(|r| (0..3).map(move |c| (r, c))) {
            m[(row, col)] = tr(&format!("r{}{}", row + 1, col + 1))?;
        }
        if conv.transpose {
            m = m.transpose();
        }
        let det = m.determinant();
        if (det - 1.0).abs() > 1e-3 {
            bail!("camera {s}: the rotation's determinant is {det}, not 1");
        }
        let r = Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, -1.0)) * m;
        let centre = Vector3::new(tr("x")?, tr("y")?, tr("z")?) / 1000.0;
        Ok(Self {
            name: s.to_owned(),
            fx,
            fy,
            cx,
            cy,
            k,
            p,
            r,
            t: -(r * centre),
            calib_size: [calib_w, calib_h],
        })
    }

    /// Normalised camera coordinates after the distortion.
    fn distort(&self, x: f64, y: f64) -> (f64, f64) {
        let [k1, k2, k3] = self.k;
        let [p1, p2] = self.p;
        let r2 = x * x + y * y;
        let radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3));
        (
            x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
            y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y,
        )
    }

    /// Pixel -> undistorted normalised coordinates (OpenCV's fixed-point iteration).
    fn undistort(&self, u: f64, v: f64) -> [f64; 2] {
        let xd = (u - self.cx) / self.fx;
        let yd = (v - self.cy) / self.fy;
        let [k1, k2, k3] = self.k;
        let [p1, p2] = self.p;
        let (mut x, mut y) = (xd, yd);
        for _ in 0..30 {
            let r2 = x * x + y * y;
            let icdist = 1.0 / (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3)));
            let dx = 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x);
            let dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y;
            x = (xd - dx) * icdist;
            y = (yd - dy) * icdist;
        }
        [x, y]
    }

    fn to_camera(&self, pw: &Vector3<f64>) -> Vector3<f64> {
        self.r * pw + self.t
    }

    /// A world point in pixels, with distortion; `None` behind the camera.
    fn project(&self, pw: &Vector3<f64>) -> Option<[f64; 2]> {
        let pc = self.to_camera(pw);
        if pc.z <= 1e-9 {
            return None;
        }
        let (x, y) = self.distort(pc.x / pc.z, pc.y / pc.z);
        Some([self.fx * x + self.cx, self.fy * y + self.cy])
    }
}

/// The 4 cameras for the videos' sizes.
fn cameras(qca: &[QcaCamera], sizes: &[[usize; 2]], conv: Conventions) -> Result<Vec<Camera>> {
    VIEWS
        .iter()
        .zip(sizes)
        .map(|(name, size)| {
            let q = qca
                .iter()
                .find(|q| q.serial == *name)
                .ok_or_else(|| anyhow!("the calibration has no camera {name}"))?;
            Camera::from_qca(q, *size, conv)
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Geometry

/// Weighted DLT: `obs` = (camera, undistorted normalised point, weight). `None` with fewer
/// than 2 weighted views or a point at infinity.
fn triangulate(obs: &[(&Camera, [f64; 2], f64)]) -> Option<Vector3<f64>> {
    let used: Vec<_> = obs.iter().filter(|o| o.2 > 0.0).collect();
    if used.len() < 2 {
        return None;
    }
    let mut a = DMatrix::<f64>::zeros(2 * used.len(), 4);
    for (i, (cam, [x, y], w)) in used.iter().enumerate() {
        for c in 0..4 {
            let p = |row: usize| {
                if c < 3 { cam.r[(row, c)] } else { cam.t[row] }
            };
            a[(2 * i, c)] = w * (x * p(2) - p(0));
            a[(2 * i + 1, c)] = w * (y * p(2) - p(1));
        }
    }
    let svd = a.svd(false, true);
    let vt = svd.v_t?;
    let (imin, _) = svd
        .singular_values
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))?;
    let h = vt.row(imin);
    (h[3].abs() > 1e-12).then(|| Vector3::new(h[0] / h[3], h[1] / h[3], h[2] / h[3]))
}

/// Mean of points.
/// The angle at `b` between b->a and b->c, degrees.
fn angle_deg(a: &Vector3<f64>, b: &Vector3<f64>, c: &Vector3<f64>) -> f64 {
    let (u, v) = (a - b, c - b);
    let cos = u.dot(&v) / (u.norm() * v.norm()).max(1e-12);
    cos.clamp(-1.0, 1.0).acos().to_degrees()
}

/// Second differences p[t+1] - 2 p[t] + p[t-1] of each point at frame t; `None` unless frames
/// t - 1, t and t + 1 are present.
fn accelerations(s: &[Option<Vec<Vector3<f64>>>], t: usize) -> Option<Vec<Vector3<f64>>> {
    let (a, b, c) = (
        s.get(t.checked_sub(1)?)?.as_ref()?,
        s.get(t)?.as_ref()?,
        s.get(t + 1)?.as_ref()?,
    );
    Some(
        a.iter()
            .zip(b)
            .zip(c)
            .map(|((a, b), c)| c - 2.0 * b + a)
            .collect(),
    )
}

/// Mean |acceleration| over points and frames of a series.
fn mean_accel(s: &[Option<Vec<Vector3<f64>>>]) -> Option<f64> {
    let norms: Vec<f64> = (1..s.len())
        .filter_map(|t| accelerations(s, t))
        .flatten()
        .map(|a| a.norm())
        .collect();
    (!norms.is_empty()).then(|| norms.iter().sum::<f64>() / norms.len() as f64)
}

/// Centred moving average over 2 `half` + 1 frames (`None` unless the whole window is present).
fn moving_average(s: &[Option<Vec<Vector3<f64>>>], half: usize) -> Vec<Option<Vec<Vector3<f64>>>> {
    (0..s.len())
        .map(|t| {
            let window = s.get(t.checked_sub(half)?..=t + half)?;
            let mut sum = window.first()?.clone()?;
            for w in &window[1..] {
                for (a, b) in sum.iter_mut().zip(w.as_ref()?) {
                    *a += b;
                }
            }
            Some(sum.into_iter().map(|p| p / window.len() as f64).collect())
        })
        .collect()
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

// ------------------------------------------------------------------------------------------
// Video and BlazePose

/// One decoded RGB frame.
struct Frame {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

fn read_byte(r: &mut impl Read) -> std::io::Result<Option<u8>> {
    let mut b = [0u8];
    Ok((r.read(&mut b)? == 1).then_some(b[0]))
}

/// The next binary PPM (P6, maxval 255) of a stream; `None` at the end.
fn read_ppm(r: &mut impl BufRead) -> Result<Option<Frame>> {
    let mut tokens: Vec<String> = Vec::new();
    while tokens.len() < 4 {
        let mut tok = Vec::new();
        loop {
            let Some(b) = read_byte(r)? else {
                if tokens.is_empty() && tok.is_empty() {
                    return Ok(None);
                }
                bail!("PPM stream ends inside a header");
            };
            if b == b'#' && tok.is_empty() {
                let mut comment = Vec::new();
                r.read_until(b'\n', &mut comment)?;
            } else if b.is_ascii_whitespace() {
                if !tok.is_empty() {
                    break;
                }
            } else {
                tok.push(b);
            }
        }
        tokens.push(String::from_utf8_lossy(&tok).into_owned());
    }
    if tokens[0] != "P6" || tokens[3] != "255" {
        bail!("not an 8-bit binary PPM (header {tokens:?})");
    }
    let width: usize = tokens[1].parse().context("PPM width")?;
    let height: usize = tokens[2].parse().context("PPM height")?;
    let mut rgb = vec![0u8; width * height * 3];
    r.read_exact(&mut rgb).context("PPM pixels")?;
    Ok(Some(Frame { width, height, rgb }))
}

/// A view's BlazePose landmarks: per frame, 33 x (x px, y px, visibility) of the subject.
#[derive(Debug, Clone, Default)]
struct ViewLandmarks {
    size: [usize; 2],
    frames: Vec<Option<Vec<[f64; 3]>>>,
    /// Per frame, the image landmarks' z (depth relative to the hips, on the scale of x: px),
    /// a head of the landmark model apart from the world landmarks (empty when read from a
    /// file written before it was kept).
    depth: Vec<Option<Vec<f64>>>,
    /// Frames where the detector found more than one person.
    crowded: usize,
}

impl ViewLandmarks {
    fn to_json(&self) -> Value {
        json!({
            "size": self.size,
            "crowded": self.crowded,
            "frames": self.frames,
            "depth": self.depth,
        })
    }

    fn from_json(v: &Value) -> Result<Self> {
        let size: [usize; 2] = serde_json::from_value(v["size"].clone()).context("size")?;
        let frames: Vec<Option<Vec<[f64; 3]>>> =
            serde_json::from_value(v["frames"].clone()).context("frames")?;
        if frames.iter().flatten().any(|f| f.len() != NL) {
            bail!("a frame does not have {NL} landmarks");
        }
        let depth: Vec<Option<Vec<f64>>> =
            serde_json::from_value(v["depth"].clone()).unwrap_or_default();
        if depth.iter().flatten().any(|f| f.len() != NL) {
            bail!("a frame does not have {NL} landmark depths");
        }
        Ok(Self {
            size,
            frames,
            depth,
            crowded: v["crowded"].as_u64().unwrap_or(0) as usize,
        })
    }
}

/// Decodes `video` (GStreamer, any codec decodebin reads) and runs BlazePose on each frame.
fn blazepose_view(
    video: &Path,
    det: &BlazePoseDetector,
    lm: &BlazePoseLandmarker,
) -> Result<ViewLandmarks> {
    let mut child = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(["filesrc", &format!("location={}", video.display())])
        .args(["!", "decodebin", "!", "videoconvert", "!"])
        .args([
            "video/x-raw,format=RGB",
            "!",
            "pnmenc",
            "!",
            "fdsink",
            "fd=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting gst-launch-1.0 (GStreamer tools)")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("gst-launch-1.0 has no stdout"))?;
    let mut reader = BufReader::with_capacity(1 << 22, stdout);
    let mut out = ViewLandmarks::default();
    let mut prev_centre: Option<[f64; 2]> = None;
    while let Some(frame) = read_ppm(&mut reader).context("reading decoded frames")? {
        out.size = [frame.width, frame.height];
        let img = RgbImage {
            data: &frame.rgb,
            width: frame.width,
            height: frame.height,
            stride: 3 * frame.width,
        };
        let rois: Vec<RotatedRect> = det
            .detect_poses(img)
            .map_err(|e| anyhow!("BlazePose detector: {e}"))?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        out.crowded += usize::from(rois.len() > 1);
        let landmarks = match pick_subject(&rois, prev_centre) {
            Some(roi) => {
                let first = lm
                    .landmarks(img, &roi)
                    .map_err(|e| anyhow!("BlazePose landmarks: {e}"))?;
                // Once more on the region from its own landmarks (what tracking would use).
                match first.as_ref().and_then(|p| p.next_roi()) {
                    Some(r2) => lm
                        .landmarks(img, &r2)
                        .map_err(|e| anyhow!("BlazePose landmarks: {e}"))?
                        .or(first),
                    None => first,
                }
            }
            None => None,
        };
        let depth = landmarks
            .as_ref()
            .map(|p| p.landmarks.iter().map(|l| l.z).collect::<Vec<_>>());
        let pts = landmarks.map(|p| {
            p.landmarks
                .iter()
                .map(|l| [l.x, l.y, f64::from(l.visibility)])
                .collect::<Vec<_>>()
        });
        if let Some(p) = &pts {
            prev_centre = Some([0.5 * (p[23][0] + p[24][0]), 0.5 * (p[23][1] + p[24][1])]);
        }
        out.depth.push(depth.filter(|z| z.len() == NL));
        out.frames.push(pts.filter(|p| p.len() == NL));
    }
    let status = child.wait().context("waiting for gst-launch-1.0")?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("gst-launch-1.0 failed ({status}): {}", err.trim());
    }
    if out.frames.len() != FRAMES {
        eprintln!(
            "multiview-accuracy: {}: {} frames decoded, expected {FRAMES}",
            video.display(),
            out.frames.len()
        );
    }
    Ok(out)
}

/// The subject's region: the largest, or, once a subject was seen, the large region closest
/// to it.
fn pick_subject(rois: &[RotatedRect], prev: Option<[f64; 2]>) -> Option<RotatedRect> {
    let area = |r: &RotatedRect| r.w * r.h;
    let largest = rois.iter().map(area).fold(0.0, f64::max);
    let large = rois.iter().filter(|r| area(r) >= 0.5 * largest);
    match prev {
        Some([x, y]) => large
            .min_by(|a, b| {
                let d = |r: &RotatedRect| (r.cx - x).hypot(r.cy - y);
                d(a).total_cmp(&d(b))
            })
            .copied(),
        None => rois
            .iter()
            .max_by(|a, b| area(a).total_cmp(&area(b)))
            .copied(),
    }
}

// ------------------------------------------------------------------------------------------
// Reference

/// The triangulated reference.
#[derive(Debug, Clone)]
struct Reference {
    /// Per frame, the 33 landmarks in world metres (None where fewer than 2 views saw the
    /// subject).
    points: Vec<Option<Vec<Vector3<f64>>>>,
    /// Per frame and view: [upper body swapped, legs swapped].
    swapped: Vec<Vec<[bool; 2]>>,
    /// Per view, the reprojection errors (px) of all landmarks over all frames.
    errors: Vec<Vec<f64>>,
    /// Same, the 12 limb landmarks only.
    limb_errors: Vec<Vec<f64>>,
}

impl Reference {
    fn mean_error(&self, limbs: bool) -> f64 {
        let e = if limbs {
            &self.limb_errors
        } else {
            &self.errors
        };
        let all: Vec<f64> = e.iter().flatten().copied().collect();
        mean(&all).unwrap_or(f64::NAN)
    }

    fn swaps(&self, view: usize) -> [usize; 2] {
        let count = |g: usize| {
            self.swapped
                .iter()
                .filter(|s| s.get(view).is_some_and(|s| s[g]))
                .count()
        };
        [count(0), count(1)]
    }
}

/// One view in one frame, when it saw the subject: the 33 landmarks (pixels x, y and
/// visibility) and their undistorted normalised coordinates.
type Observation = Option<(Vec<[f64; 3]>, Vec<[f64; 2]>)>;

/// The label of landmark `l` in a view whose labels are swapped (`swap`).
fn source(l: usize, swap: bool) -> usize {
    if swap { mirror(l) } else { l }
}

/// Triangulates landmarks `ls` with view `v` read swapped where bit v of `combo` is set;
/// returns the points and the visibility-weighted sum of reprojection errors and weights.
fn triangulate_group(
    cams: &[Camera],
    obs: &[Observation],
    ls: std::ops::Range<usize>,
    combo: usize,
) -> (Vec<Option<Vector3<f64>>>, f64, f64) {
    let (mut err, mut wsum) = (0.0, 0.0);
    let mut pts = Vec::new();
    for l in ls {
        let views: Vec<(&Camera, [f64; 2], f64, [f64; 2])> = obs
            .iter()
            .enumerate()
            .filter_map(|(v, o)| {
                let (px, norm) = o.as_ref()?;
                let s = source(l, combo >> v & 1 == 1);
                let w = px[s][2].max(1e-3);
                Some((&cams[v], norm[s], w, [px[s][0], px[s][1]]))
            })
            .collect();
        let p = triangulate(
            &views
                .iter()
                .map(|(c, n, w, _)| (*c, *n, *w))
                .collect::<Vec<_>>(),
        );
        if let Some(p) = &p {
            for (c, _, w, [u, v]) in &views {
                if let Some([pu, pv]) = c.project(p) {
                    err += w * (pu - u).hypot(pv - v);
                    wsum += w;
                }
            }
        }
        pts.push(p);
    }
    (pts, err, wsum)
}

/// Is the labelled body not mirrored: ((left - right) x up) . forward > 0?
fn chirality(p: &[Vector3<f64>], left: usize, right: usize) -> f64 {
    let mid = |a: usize, b: usize| 0.5 * (p[a] + p[b]);
    let up = mid(11, 12) - mid(27, 28);
    let forward = mid(31, 32) - mid(29, 30);
    (p[left] - p[right]).cross(&up).dot(&forward)
}

/// The reference from the views' landmarks (see the module documentation).
fn build_reference(cams: &[Camera], views: &[ViewLandmarks]) -> Reference {
    let n = views.iter().map(|v| v.frames.len()).max().unwrap_or(0);
    let mut r = Reference {
        points: Vec::new(),
        swapped: Vec::new(),
        errors: vec![Vec::new(); cams.len()],
        limb_errors: vec![Vec::new(); cams.len()],
    };
    for f in 0..n {
        let obs: Vec<Observation> = views
            .iter()
            .zip(cams)
            .map(|(v, c)| {
                let px = v.frames.get(f)?.clone()?;
                let norm = px.iter().map(|p| c.undistort(p[0], p[1])).collect();
                Some((px, norm))
            })
            .collect();
        let present: usize = obs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_some())
            .map(|(v, _)| 1 << v)
            .sum();
        if present.count_ones() < 2 {
            r.points.push(None);
            r.swapped.push(vec![[false; 2]; cams.len()]);
            continue;
        }
        let groups = [0..LEGS, LEGS..NL];
        // Per group, the combination with the least error (of a complementary pair, either).
        let mut best = [0usize; 2];
        for (g, range) in groups.iter().enumerate() {
            let mut best_err = f64::INFINITY;
            for combo in 0..(1usize << cams.len()) {
                if combo & !present != 0 || combo & 1 != 0 {
                    // Absent views have no labels; of a pair, the one with view 0 unswapped.
                    continue;
                }
                let (_, e, w) = triangulate_group(cams, &obs, range.clone(), combo);
                let e = e / w.max(1e-9);
                if e < best_err {
                    best_err = e;
                    best[g] = combo;
                }
            }
        }
        let all = |best: [usize; 2]| -> Option<Vec<Vector3<f64>>> {
            let mut p = triangulate_group(cams, &obs, groups[0].clone(), best[0]).0;
            p.extend(triangulate_group(cams, &obs, groups[1].clone(), best[1]).0);
            p.into_iter().collect()
        };
        let Some(p) = all(best) else {
            r.points.push(None);
            r.swapped.push(vec![[false; 2]; cams.len()]);
            continue;
        };
        // Not mirrored: upper body judged on the shoulders, legs on the hips.
        if chirality(&p, 11, 12) < 0.0 {
            best[0] ^= present;
        }
        if chirality(&p, 23, 24) < 0.0 {
            best[1] ^= present;
        }
        let Some(p) = all(best) else {
            r.points.push(None);
            r.swapped.push(vec![[false; 2]; cams.len()]);
            continue;
        };
        for (v, o) in obs.iter().enumerate() {
            let Some((px, _)) = o else { continue };
            for l in 0..NL {
                let s = source(l, best[usize::from(l >= LEGS)] >> v & 1 == 1);
                if let Some([u, w]) = cams[v].project(&p[l]) {
                    let e = (u - px[s][0]).hypot(w - px[s][1]);
                    r.errors[v].push(e);
                    if LIMB_LANDMARKS.contains(&l) {
                        r.limb_errors[v].push(e);
                    }
                }
            }
        }
        r.swapped.push(
            (0..cams.len())
                .map(|v| [best[0] >> v & 1 == 1, best[1] >> v & 1 == 1])
                .collect(),
        );
        r.points.push(Some(p));
    }
    r
}

// ------------------------------------------------------------------------------------------
// Predictions

/// One `ikol run`.
#[derive(Debug)]
struct RunOutcome {
    method: String,
    /// The subject per frame, or why the run failed.
    result: Result<Vec<Option<PersonResult>>, String>,
    /// The pipeline took PRINCIPAL (else the principal point is the frame centre).
    principal: bool,
    seconds: f64,
}

/// One `ikol run` of the chain with `method` (and `extra` NAME=value variables), its files named
/// after `tag` in `dir`; `Ok(principal point given)`.
fn run_ikol(
    a: &Args,
    tag: &str,
    method: &str,
    mut extra: &[&str],
    cam: &Camera,
    input: &Path,
    dir: &Path,
) -> Result<bool, String> {
    let json = dir.join(format!("{tag}.jsonl"));
    let mut with_principal = true;
    loop {
        let mut cmd = Command::new(&a.ikol);
        cmd.arg("run")
            .arg(&a.pipeline)
            .arg(format!("INPUT={}", input.display()))
            .arg(format!(
                "OUTPUT={}",
                dir.join(format!("{tag}.mp4")).display()
            ))
            .arg(format!("JSON={}", json.display()))
            .arg(format!("METHOD={method}"))
            .args(["INIT=analytic", "DETECTOR=blazepose", "MODEL=blazepose"])
            .arg(format!("FOCAL={:.3}", cam.fx))
            // The run's own variables (the baseline's FLIP_TEST=false) over the user's.
            .args(a.vars.iter().filter(|v| {
                let name = v.split('=').next();
                !extra.iter().any(|e| e.split('=').next() == name)
            }))
            .args(extra);
        for set in &a.sets {
            cmd.args(["--set", set]);
        }
        if with_principal {
            cmd.arg(format!("PRINCIPAL={:.3},{:.3}", cam.cx, cam.cy));
        }
        let out = cmd
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", a.ikol.display()))?;
        if out.status.success() {
            return Ok(with_principal);
        }
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !extra.is_empty() && text.contains("unknown variable") && text.contains("FLIP_TEST") {
            eprintln!("multiview-accuracy: {tag}: the pipeline has no FLIP_TEST; again without");
            extra = &[];
            continue;
        }
        if with_principal && text.contains("unknown variable") && text.contains("PRINCIPAL") {
            eprintln!("multiview-accuracy: {method}: the pipeline has no PRINCIPAL; again without");
            with_principal = false;
            continue;
        }
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("pipeline: "))
            .take_while(|l| !l.starts_with("Stack backtrace"))
            .collect();
        // The error message (`Error: ...` and its context), else the last lines.
        let msg = match lines.iter().position(|l| l.starts_with("Error")) {
            Some(i) => lines[i..].iter().take(2).copied().collect::<Vec<_>>(),
            None => lines[lines.len().saturating_sub(3)..].to_vec(),
        };
        return Err(format!(
            "ikol run exited with {}: {}",
            out.status,
            msg.join(" / ")
        ));
    }
}

/// The person's height in pixels (box, else region, else landmark span).
fn person_height(p: &PersonResult) -> f64 {
    if let Some(b) = p.bbox.or(p.roi) {
        return b.h;
    }
    let ys = p.landmarks_2d.iter().map(|l| f64::from(l[1]));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if hi > lo { hi - lo } else { 0.0 }
}

/// The subject per frame: of the track most often the tallest, unless that person is under
/// 60 % of the tallest person's height in the frame (then the tallest).
fn select_subjects(frames: &[FrameResult]) -> Vec<Option<PersonResult>> {
    let tallest = |people: &[PersonResult]| -> Option<usize> {
        (0..people.len())
            .max_by(|&a, &b| person_height(&people[a]).total_cmp(&person_height(&people[b])))
    };
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for f in frames {
        if let Some(i) = tallest(&f.people) {
            *counts.entry(f.people[i].track_id).or_default() += 1;
        }
    }
    let dominant = counts
        .into_iter()
        .max_by_key(|&(id, c)| (c, std::cmp::Reverse(id)))
        .map(|(id, _)| id);
    let mut out = vec![None; FRAMES];
    for f in frames {
        let Some(slot) = out.get_mut(f.frame as usize) else {
            continue;
        };
        let Some(t) = tallest(&f.people) else {
            continue;
        };
        let h_max = person_height(&f.people[t]);
        let own = f
            .people
            .iter()
            .filter(|p| Some(p.track_id) == dominant)
            .max_by(|a, b| person_height(a).total_cmp(&person_height(b)))
            .filter(|p| person_height(p) >= 0.6 * h_max);
        *slot = Some(own.unwrap_or(&f.people[t]).clone());
    }
    out
}

fn read_jsonl(path: &Path) -> Result<Vec<FrameResult>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Metrics

/// One evaluated row: per frame, the 12 points in cam01 camera axes (metres; root-relative
/// allowed) and, optionally, their pixels in cam01.
struct RowInput {
    points: Vec<Option<Vec<Vector3<f64>>>>,
    pixels: Vec<Option<Vec<[f64; 2]>>>,
}

/// The reference for the metrics: per frame the 12 limb points in world metres and in cam01
/// pixels.
struct RefLimbs {
    world: Vec<Option<Vec<Vector3<f64>>>>,
    pixels: Vec<Option<Vec<[f64; 2]>>>,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    frames: usize,
    missing: usize,
    pa_mpjpe: Option<f64>,
    mpjpe: Option<f64>,
    axis: Option<[f64; 3]>,
    accel: Option<f64>,
    ref_accel: Option<f64>,
    accel_err: Option<f64>,
    flexion: Option<f64>,
    px: Option<f64>,
    /// Frames whose points are nearer the reference with their left/right labels swapped.
    swapped: usize,
}

impl Metrics {
    fn to_json(&self) -> Value {
        json!({
            "frames": self.frames, "missing": self.missing,
            "pa_mpjpe_mm": self.pa_mpjpe, "mpjpe_mm": self.mpjpe,
            "abs_error_camera_axes_mm": self.axis,
            "mean_accel_mm_per_frame2": self.accel, "reference_mean_accel_same_frames": self.ref_accel,
            "accel_error_mm_per_frame2": self.accel_err, "flexion_error_deg": self.flexion,
            "error_2d_px": self.px, "left_right_swapped_frames": self.swapped,
        })
    }
}

fn hip_centre(p: &[Vector3<f64>]) -> Vector3<f64> {
    0.5 * (p[HIP_L] + p[HIP_R])
}

/// Root-aligned, world axes, millimetres.
fn root_aligned_world(p: &[Vector3<f64>], r_cw: &Matrix3<f64>) -> Vec<Vector3<f64>> {
    let h = hip_centre(p);
    p.iter().map(|q| r_cw * (q - h) * 1000.0).collect()
}

/// PA-MPJPE of one frame's points against the reference's (metres in, millimetres out).
fn pa_mpjpe_mm(p: &[Vector3<f64>], g: &[Vector3<f64>]) -> f64 {
    let p: Vec<_> = p.iter().map(|v| v * 1000.0).collect();
    let g: Vec<_> = g.iter().map(|v| v * 1000.0).collect();
    mean_distance(&procrustes_align(&p, &g), &g)
}

/// The limb bones among the 12 points (indices into [`LIMB_LANDMARKS`]), each parent listed
/// before its child.
const LIMB_BONES: [(usize, usize, &str); 8] = [
    (0, 2, "left upper arm"),
    (2, 4, "left forearm"),
    (1, 3, "right upper arm"),
    (3, 5, "right forearm"),
    (6, 8, "left thigh"),
    (8, 10, "left shin"),
    (7, 9, "right thigh"),
    (9, 11, "right shin"),
];

/// The limb bones of [`LIMB_BONES`] (mm) on the default body model's rest skeleton: at the
/// mean shape, and at the shape `fit_beta` finds, with the front end's shape prior
/// ([`BETA_RIDGE`]), for the rest joints with each limb bone stretched to `reference` (mm; a
/// bone whose reference is not a positive number keeps its length).
fn default_model_lengths(reference: &[f64]) -> Result<[Vec<f64>; 2]> {
    let model = ikol_body::BodyModel::embedded_default()?;
    let basis = model.joint_shape_basis(false)?;
    let rest = basis.rest_joints(&[]);
    let lengths = |joints: &[Vector3<f64>]| -> Vec<f64> {
        LIMB_BONES
            .iter()
            .map(|&(p, c, _)| 1e3 * (joints[LIMB_SMPL[c]] - joints[LIMB_SMPL[p]]).norm())
            .collect()
    };
    // Parents come before children in LIMB_BONES, so each child moves with its parent.
    let mut target = rest.clone();
    for (&(p, c, _), want) in LIMB_BONES.iter().zip(reference) {
        let (jp, jc) = (LIMB_SMPL[p], LIMB_SMPL[c]);
        let bone = rest[jc] - rest[jp];
        let len = if want.is_finite() && *want > 0.0 {
            want / 1e3
        } else {
            bone.norm()
        };
        target[jc] = target[jp] + bone.normalize() * len;
    }
    let beta = ikol_detect::landmarks_smpl::fit_beta(&basis, &target, BETA_RIDGE);
    Ok([lengths(&rest), lengths(&basis.rest_joints(&beta))])
}

/// Where a row's 3D error comes from: its bone lengths, and the sign of each limb bone's depth.
#[derive(Debug, Clone, Default)]
struct Diagnosis {
    /// Mean length per bone of [`LIMB_BONES`], mm: (row, reference).
    lengths: Vec<(f64, f64)>,
    /// Per bone: frames where the bone points towards the camera in the row and away from it
    /// in the reference, or the other way round.
    depth_sign: Vec<usize>,
    pa: Option<f64>,
    /// PA-MPJPE with every limb bone given the reference's mean length (directions kept).
    pa_reference_lengths: Option<f64>,
    /// PA-MPJPE with every limb bone's depth component given the reference's sign (lengths
    /// kept).
    pa_reference_signs: Option<f64>,
}

/// Rebuilds the limb chains of `p` bone by bone from the shoulders and hips with `bone`
/// giving each bone's new vector from (bone index, its vector).
fn rebuild(
    p: &[Vector3<f64>],
    bone: impl Fn(usize, Vector3<f64>) -> Vector3<f64>,
) -> Vec<Vector3<f64>> {
    let mut q = p.to_vec();
    for (k, &(a, b, _)) in LIMB_BONES.iter().enumerate() {
        q[b] = q[a] + bone(k, p[b] - p[a]);
    }
    q
}

/// [`Diagnosis`] of a row against the reference, in `cam`'s camera axes (z = depth).
fn diagnose(row: &RowInput, reference: &RefLimbs, cam: &Camera) -> Diagnosis {
    let mut pairs = Vec::new();
    for f in 0..FRAMES {
        if let (Some(Some(p)), Some(Some(g))) = (row.points.get(f), reference.world.get(f)) {
            pairs.push((p.clone(), g.clone()));
        }
    }
    let n = pairs.len();
    let mut d = Diagnosis {
        lengths: vec![(0.0, 0.0); LIMB_BONES.len()],
        depth_sign: vec![0; LIMB_BONES.len()],
        ..Diagnosis::default()
    };
    if n == 0 {
        return d;
    }
    // Per frame, each bone's depth component in the reference (camera axes).
    let depths: Vec<Vec<f64>> = pairs
        .iter()
        .map(|(_, g)| {
            LIMB_BONES
                .iter()
                .map(|&(a, b, _)| (cam.r * (g[b] - g[a])).z)
                .collect()
        })
        .collect();
    for ((p, g), gz) in pairs.iter().zip(&depths) {
        for (k, &(a, b, _)) in LIMB_BONES.iter().enumerate() {
            d.lengths[k].0 += (p[b] - p[a]).norm() * 1000.0 / n as f64;
            d.lengths[k].1 += (g[b] - g[a]).norm() * 1000.0 / n as f64;
            if (p[b] - p[a]).z * gz[k] < 0.0 {
                d.depth_sign[k] += 1;
            }
        }
    }
    let (mut a, mut l, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for ((p, g), gz) in pairs.iter().zip(&depths) {
        a.push(pa_mpjpe_mm(p, g));
        let q = rebuild(p, |k, v| match v.try_normalize(1e-12) {
            Some(u) => u * d.lengths[k].1 / 1000.0,
            None => v,
        });
        l.push(pa_mpjpe_mm(&q, g));
        let q = rebuild(p, |k, v| {
            if v.z * gz[k] < 0.0 {
                Vector3::new(v.x, v.y, -v.z)
            } else {
                v
            }
        });
        s.push(pa_mpjpe_mm(&q, g));
    }
    d.pa = mean(&a);
    d.pa_reference_lengths = mean(&l);
    d.pa_reference_signs = mean(&s);
    d
}

fn evaluate(row: &RowInput, reference: &RefLimbs, cam: &Camera) -> Metrics {
    let r_cw = cam.r.transpose();
    let ident = Matrix3::identity();
    let mut m = Metrics::default();
    let (mut pa, mut mp, mut ax, mut flex, mut px) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut pred_seq: Vec<Option<Vec<Vector3<f64>>>> = vec![None; FRAMES];
    let mut ref_seq: Vec<Option<Vec<Vector3<f64>>>> = vec![None; FRAMES];
    for f in 0..FRAMES {
        let pred = row.points.get(f).cloned().flatten();
        let Some(gt) = reference.world.get(f).cloned().flatten() else {
            m.missing += 1;
            continue;
        };
        let Some(pred) = pred else {
            m.missing += 1;
            continue;
        };
        m.frames += 1;
        pa.push(pa_mpjpe_mm(&pred, &gt));
        let pw = root_aligned_world(&pred, &r_cw);
        let gw = root_aligned_world(&gt, &ident);
        mp.push(mean_distance(&pw, &gw));
        // The 12 points alternate left, right.
        let mirrored: Vec<_> = (0..pw.len()).map(|i| pw[i ^ 1]).collect();
        if mean_distance(&mirrored, &gw) < mean_distance(&pw, &gw) {
            m.swapped += 1;
        }
        // Camera axes: the prediction as it is, the reference rotated into cam01.
        for (p, g) in pw.iter().zip(&gw) {
            let d = cam.r * (p - g);
            ax.push([d.x.abs(), d.y.abs(), d.z.abs()]);
        }
        for &(a, b, c) in &FLEXION {
            flex.push(
                (angle_deg(&pw[a], &pw[b], &pw[c]) - angle_deg(&gw[a], &gw[b], &gw[c])).abs(),
            );
        }
        if let (Some(Some(pp)), Some(Some(gp))) = (row.pixels.get(f), reference.pixels.get(f)) {
            px.extend(
                pp.iter()
                    .zip(gp)
                    .map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1])),
            );
        }
        pred_seq[f] = Some(pw);
        ref_seq[f] = Some(gw);
    }
    m.pa_mpjpe = mean(&pa);
    m.mpjpe = mean(&mp);
    m.axis = (!ax.is_empty()).then(|| {
        let n = ax.len() as f64;
        [0, 1, 2].map(|k| ax.iter().map(|a| a[k]).sum::<f64>() / n)
    });
    m.flexion = mean(&flex);
    m.px = mean(&px);
    let (mut acc, mut acc_ref, mut acc_err) = (Vec::new(), Vec::new(), Vec::new());
    for t in 1..FRAMES {
        if let (Some(a), Some(b)) = (accelerations(&pred_seq, t), accelerations(&ref_seq, t)) {
            for (a, b) in a.iter().zip(&b) {
                acc.push(a.norm());
                acc_ref.push(b.norm());
                acc_err.push((a - b).norm());
            }
        }
    }
    m.accel = mean(&acc);
    m.ref_accel = mean(&acc_ref);
    m.accel_err = mean(&acc_err);
    m
}

/// 2D error of a run's `landmarks_2d` against the reference's pixels (the front end).
fn front_end_px(subjects: &[Option<PersonResult>], reference: &RefLimbs) -> (Option<f64>, usize) {
    let mut e = Vec::new();
    let mut frames = 0;
    for (s, g) in subjects.iter().zip(&reference.pixels) {
        let (Some(s), Some(g)) = (s, g) else { continue };
        if s.landmarks_2d.len() != NL {
            continue;
        }
        frames += 1;
        for (&l, gp) in LIMB_LANDMARKS.iter().zip(g) {
            let p = s.landmarks_2d[l];
            e.push((f64::from(p[0]) - gp[0]).hypot(f64::from(p[1]) - gp[1]));
        }
    }
    (mean(&e), frames)
}

/// A row of one run: points from `field` (33 landmarks or 24 joints) at `index`, and their
/// pinhole projections with `k` = (fx, fy, cx, cy).
fn points_row(
    subjects: &[Option<PersonResult>],
    field: impl Fn(&PersonResult) -> &Vec<[f32; 3]>,
    index: &[usize; 12],
    need: usize,
    k: [f64; 4],
) -> RowInput {
    let points: Vec<Option<Vec<Vector3<f64>>>> = subjects
        .iter()
        .map(|s| {
            let v = field(s.as_ref()?);
            (v.len() == need).then(|| {
                index
                    .iter()
                    .map(|&i| Vector3::new(v[i][0], v[i][1], v[i][2]).cast::<f64>())
                    .collect()
            })
        })
        .collect();
    let pixels = points
        .iter()
        .map(|p| {
            p.as_ref()?
                .iter()
                .map(|q| (q.z > 1e-6).then(|| [k[0] * q.x / q.z + k[2], k[1] * q.y / q.z + k[3]]))
                .collect()
        })
        .collect();
    RowInput { points, pixels }
}

/// The landmark model's other 3D output, for the diagnosis: the view's image landmarks (the
/// reference's own BlazePose pass on it) as camera-axis points, pixels over fx at the
/// reference's mean root depth in this camera (weak perspective: x, y and the relative z are
/// on one scale), so that their bones' depth signs and lengths compare with the reference's.
fn image_landmarks_row(
    view: &ViewLandmarks,
    reference: &Reference,
    cam: &Camera,
) -> Option<RowInput> {
    // A landmarks file written before the depth was kept has none: no row.
    if view.depth.iter().all(Option::is_none) {
        return None;
    }
    let depths: Vec<f64> = reference
        .points
        .iter()
        .flatten()
        .map(|p| (cam.r * (0.5 * (p[23] + p[24])) + cam.t).z)
        .collect();
    let z = mean(&depths)?;
    let points = view
        .frames
        .iter()
        .zip(view.depth.iter().chain(std::iter::repeat(&None)))
        .map(|(f, d)| {
            let (f, d) = (f.as_ref()?, d.as_ref()?);
            Some(
                LIMB_LANDMARKS
                    .iter()
                    .map(|&i| {
                        let (x, y) = ((f[i][0] - cam.cx) / cam.fx, (f[i][1] - cam.cy) / cam.fy);
                        Vector3::new(x, y, d[i] / cam.fx) * z
                    })
                    .collect(),
            )
        })
        .collect();
    Some(RowInput {
        points,
        pixels: Vec::new(),
    })
}

/// The intrinsics a run's chain had (`FOCAL`: fx = fy = the camera's fx): the camera's principal
/// point, or the centre of a `size` frame where the pipeline took no `PRINCIPAL`.
fn run_intrinsics(cam: &Camera, principal: bool, size: [f64; 2]) -> Intrinsics {
    let (cx, cy) = if principal {
        (cam.cx, cam.cy)
    } else {
        (0.5 * (size[0] - 1.0), 0.5 * (size[1] - 1.0))
    };
    Intrinsics {
        fx: cam.fx,
        fy: cam.fx,
        cx,
        cy,
    }
}

/// The BlazePose row: world landmarks and 2D landmarks of a run; with `crop_view`, the world
/// landmarks turned back from camera axes into the view of the crop (the `roi`'s centre) they
/// were predicted in, as mediapipe gives them (a frame without its `roi` is then missing).
fn blazepose_row(subjects: &[Option<PersonResult>], crop_view: Option<&Intrinsics>) -> RowInput {
    let mut row = points_row(
        subjects,
        |p| &p.landmarks_3d,
        &LIMB_LANDMARKS,
        NL,
        [1.0, 1.0, 0.0, 0.0],
    );
    if let Some(k) = crop_view {
        for (points, s) in row.points.iter_mut().zip(subjects) {
            let roi = s.as_ref().and_then(|p| p.roi);
            *points = points.take().zip(roi).map(|(v, r)| {
                let back = crop_to_camera(k, r.center()).transpose();
                v.iter().map(|q| back * q).collect()
            });
        }
    }
    row.pixels = subjects
        .iter()
        .map(|s| {
            let l = &s.as_ref()?.landmarks_2d;
            (l.len() == NL).then(|| {
                LIMB_LANDMARKS
                    .iter()
                    .map(|&i| [f64::from(l[i][0]), f64::from(l[i][1])])
                    .collect()
            })
        })
        .collect();
    row
}

// ------------------------------------------------------------------------------------------
// Command line and report

#[derive(Debug)]
struct Args {
    media: PathBuf,
    ikol: PathBuf,
    pipeline: PathBuf,
    methods: Vec<String>,
    keep: Option<PathBuf>,
    reuse: bool,
    out: PathBuf,
    /// Extra pipeline variables for every run (`--var NAME=VALUE`).
    vars: Vec<String>,
    /// Element properties for every run (`--set ELEMENT.PROPERTY=VALUE`, as `ikol run`).
    sets: Vec<String>,
    /// The view the product runs on and is evaluated in (index into [`VIEWS`]).
    view: usize,
}

const USAGE: &str = "usage: multiview-accuracy [--media DIR] [--ikol PATH] [--pipeline FILE] \
                     [--methods ikol,hybrik,fit] [--keep DIR [--reuse]] [--out DIR] \
                     [--var NAME=VALUE ...] [--set ELEMENT.PROPERTY=VALUE ...] [--view camNN]";

fn parse_args() -> Result<Args> {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        media: std::env::var_os("IKOL_MEDIA")
            .map_or_else(|| home.join(".cache/ikol/media"), PathBuf::from)
            .join("pose2sim-multiview"),
        ikol: PathBuf::from("target/release/ikol"),
        pipeline: PathBuf::from("pipelines/video-to-overlay.pipeline"),
        methods: vec!["ikol".into(), "hybrik".into(), "fit".into()],
        keep: None,
        reuse: false,
        out: PathBuf::from("out"),
        vars: Vec::new(),
        sets: Vec::new(),
        view: EVAL_VIEW,
    };
    if !a.ikol.exists() {
        a.ikol = root.join("target/release/ikol");
    }
    if !a.pipeline.exists() {
        a.pipeline = root.join("pipelines/video-to-overlay.pipeline");
    }
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match s.as_str() {
            "--media" => a.media = val("--media")?.into(),
            "--ikol" => a.ikol = val("--ikol")?.into(),
            "--pipeline" => a.pipeline = val("--pipeline")?.into(),
            "--methods" => {
                a.methods = val("--methods")?
                    .split(',')
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty())
                    .collect()
            }
            "--keep" => a.keep = Some(val("--keep")?.into()),
            "--reuse" => a.reuse = true,
            "--out" => a.out = val("--out")?.into(),
            "--var" => a.vars.push(val("--var")?),
            "--set" => a.sets.push(val("--set")?),
            "--view" => {
                let v = val("--view")?;
                a.view = VIEWS
                    .iter()
                    .position(|n| *n == v)
                    .ok_or_else(|| anyhow!("--view {v}: not one of {}", VIEWS.join(", ")))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if a.reuse && a.keep.is_none() {
        bail!("--reuse needs --keep DIR");
    }
    Ok(a)
}

fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn f2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn table_row(name: &str, m: &Metrics) -> String {
    let ax = m.axis.map(|a| a.map(Some));
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        m.frames,
        m.missing,
        f1(m.pa_mpjpe),
        f1(m.mpjpe),
        f1(ax.and_then(|a| a[0])),
        f1(ax.and_then(|a| a[1])),
        f1(ax.and_then(|a| a[2])),
        f2(m.accel),
        f2(m.ref_accel),
        f2(m.accel_err),
        f1(m.flexion),
        f1(m.px),
        m.swapped,
    )
}

/// BlazePose landmarks of each view, computed or reused from the keep folder.
fn view_landmarks(a: &Args) -> Result<(Vec<ViewLandmarks>, Vec<f64>)> {
    let mut models: Option<(BlazePoseDetector, BlazePoseLandmarker)> = None;
    let mut views = Vec::new();
    let mut seconds = Vec::new();
    for name in VIEWS {
        let cache = a
            .keep
            .as_ref()
            .map(|k| k.join(format!("blazepose-{name}.json")));
        if a.reuse
            && let Some(c) = cache.as_ref().filter(|c| c.is_file())
        {
            let text =
                std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?;
            let v: Value =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", c.display()))?;
            views.push(ViewLandmarks::from_json(&v).with_context(|| c.display().to_string())?);
            seconds.push(0.0);
            eprintln!("multiview-accuracy: {name}: landmarks from {}", c.display());
            continue;
        }
        if models.is_none() {
            let dir = models_dir();
            models = Some((
                BlazePoseDetector::load(&dir).map_err(|e| anyhow!("{e}"))?,
                BlazePoseLandmarker::load(&dir).map_err(|e| anyhow!("{e}"))?,
            ));
        }
        let (det, lm) = models
            .as_ref()
            .ok_or_else(|| anyhow!("BlazePose models not loaded"))?;
        let video = a.media.join(format!("{name}.mp4"));
        if !video.is_file() {
            bail!(
                "{}: not found; fetch it with tests/tools/fetch_multiview.sh {}",
                video.display(),
                a.media.display()
            );
        }
        let t0 = Instant::now();
        let v = blazepose_view(&video, det, lm)
            .with_context(|| format!("BlazePose on {}", video.display()))?;
        seconds.push(t0.elapsed().as_secs_f64());
        eprintln!(
            "multiview-accuracy: {name}: {} frames, subject found in {}, several people in {} ({:.1} s)",
            v.frames.len(),
            v.frames.iter().flatten().count(),
            v.crowded,
            t0.elapsed().as_secs_f64()
        );
        if let Some(c) = &cache {
            std::fs::write(c, v.to_json().to_string())
                .with_context(|| format!("writing {}", c.display()))?;
        }
        views.push(v);
    }
    Ok((views, seconds))
}

fn main() -> Result<()> {
    let t_start = Instant::now();
    let a = parse_args()?;
    if let Some(k) = &a.keep {
        std::fs::create_dir_all(k).with_context(|| format!("creating {}", k.display()))?;
    }
    let calib_path = a.media.join("Calib.qca.txt");
    let calib_text = std::fs::read_to_string(&calib_path).with_context(|| {
        format!(
            "reading {}; fetch it with tests/tools/fetch_multiview.sh",
            calib_path.display()
        )
    })?;
    let qca =
        parse_qca(&calib_text).with_context(|| format!("parsing {}", calib_path.display()))?;

    let (views, bp_seconds) = view_landmarks(&a)?;
    let sizes: Vec<[usize; 2]> = views.iter().map(|v| v.size).collect();
    let cams = cameras(&qca, &sizes, CHOSEN).with_context(|| calib_path.display().to_string())?;
    let t_ref = Instant::now();
    let reference = build_reference(&cams, &views);
    let ref_seconds = t_ref.elapsed().as_secs_f64();

    // The evidence for the conventions: the same reference under the alternatives.
    let mut checks = Vec::new();
    let alternatives = [
        (
            "chosen (Pose2Sim's): distortion / 64, cx as written, M",
            CHOSEN,
        ),
        (
            "no distortion",
            Conventions {
                distortion: DistortionUnits::None,
                ..CHOSEN
            },
        ),
        (
            "distortion as written",
            Conventions {
                distortion: DistortionUnits::Raw,
                ..CHOSEN
            },
        ),
        (
            "video = middle 1080 columns (cx - 4)",
            Conventions {
                crop: Crop::Centre,
                ..CHOSEN
            },
        ),
        (
            "video = last 1080 columns (cx - 8)",
            Conventions {
                crop: Crop::Right,
                ..CHOSEN
            },
        ),
        (
            "video = sensor scaled to 1080 wide",
            Conventions {
                crop: Crop::Scale,
                ..CHOSEN
            },
        ),
        (
            "rotation M^T",
            Conventions {
                transpose: true,
                ..CHOSEN
            },
        ),
    ];
    for (label, conv) in alternatives {
        let (all, limbs) = match cameras(&qca, &sizes, conv) {
            Ok(c) => {
                let r = if conv == CHOSEN {
                    reference.clone()
                } else {
                    build_reference(&c, &views)
                };
                (r.mean_error(false), r.mean_error(true))
            }
            Err(_) => (f64::NAN, f64::NAN),
        };
        checks.push((label, all, limbs));
    }

    let cam = &cams[a.view];
    let ref_limbs = RefLimbs {
        world: reference
            .points
            .iter()
            .map(|p| {
                p.as_ref()
                    .map(|p| LIMB_LANDMARKS.iter().map(|&l| p[l]).collect())
            })
            .collect(),
        pixels: reference
            .points
            .iter()
            .map(|p| {
                let p = p.as_ref()?;
                LIMB_LANDMARKS.iter().map(|&l| cam.project(&p[l])).collect()
            })
            .collect(),
    };
    let ref_world_aligned: Vec<Option<Vec<Vector3<f64>>>> = ref_limbs
        .world
        .iter()
        .map(|p| {
            p.as_ref()
                .map(|p| root_aligned_world(p, &Matrix3::identity()))
        })
        .collect();
    let ref_accel = mean_accel(&ref_world_aligned);
    let ref_accel_smoothed = mean_accel(&moving_average(&ref_world_aligned, 2));

    // Predictions.
    let tmp;
    let work = match &a.keep {
        Some(k) => k.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("ikol-multiview-{}", std::process::id()));
            std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            tmp.clone()
        }
    };
    let input = a.media.join(format!("{}.mp4", VIEWS[a.view]));
    let mut runs = Vec::new();
    // The baseline is BlazePose's world landmarks as mediapipe gives them: one more run of the
    // chain without the flip test (the pipelines' default front end has it), its landmarks only.
    let landmarks_run = (LANDMARKS_RUN, "ikol", ["FLIP_TEST=false"].as_slice());
    let method_runs = a
        .methods
        .iter()
        .map(|m| (m.as_str(), m.as_str(), [].as_slice()));
    for (tag, method, extra) in std::iter::once(landmarks_run).chain(method_runs) {
        let json = work.join(format!("{tag}.jsonl"));
        let t0 = Instant::now();
        let marker = work.join(format!("{tag}.principal"));
        let status = if a.reuse && json.is_file() {
            eprintln!("multiview-accuracy: {tag}: reusing {}", json.display());
            Ok(marker.is_file())
        } else {
            eprintln!("multiview-accuracy: {tag}: ikol run on {}", input.display());
            let s = run_ikol(&a, tag, method, extra, cam, &input, &work);
            if s == Ok(true) {
                let _ = std::fs::write(&marker, "");
            } else {
                let _ = std::fs::remove_file(&marker);
            }
            s
        };
        let result = status
            .clone()
            .and_then(|_| read_jsonl(&json).map_err(|e| format!("{e:#}")))
            .map(|frames| select_subjects(&frames));
        if let Err(e) = &result {
            eprintln!("multiview-accuracy: {tag}: FAILED: {e}");
        }
        runs.push(RunOutcome {
            method: tag.to_owned(),
            result,
            principal: status.unwrap_or(false),
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    if a.keep.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }

    // Rows.
    let (w, h) = (views[a.view].size[0] as f64, views[a.view].size[1] as f64);
    let mut rows: Vec<(String, Option<Metrics>, Option<String>)> = Vec::new();
    let mut fronts: Vec<(String, Option<f64>, usize)> = Vec::new();
    let mut baseline: Option<Metrics> = None;
    let mut per_method: Vec<(String, Option<Metrics>, Option<f64>)> = Vec::new();
    let (plain, runs) = runs.split_at(1);
    let mut diagnoses: Vec<(String, Diagnosis)> = Vec::new();
    let mut baseline_name = "nothing (no run worked)";
    if let Ok(s) = &plain[0].result {
        let k = run_intrinsics(cam, plain[0].principal, [w, h]);
        let row = blazepose_row(s, Some(&k));
        diagnoses.push((
            "BlazePose world landmarks".into(),
            diagnose(&row, &ref_limbs, cam),
        ));
        let m = evaluate(&row, &ref_limbs, cam);
        rows.push((
            "BlazePose world landmarks".into(),
            Some(m.clone()),
            Some("as mediapipe gives them (the chain with FLIP_TEST=false)".into()),
        ));
        baseline = Some(m);
        baseline_name = "BlazePose world landmarks";
        rows.push((
            "BlazePose world landmarks, in camera axes".into(),
            Some(evaluate(&blazepose_row(s, None), &ref_limbs, cam)),
            Some(
                "the same as ikolbackbone turns them from the crop's view into camera axes".into(),
            ),
        ));
    } else if let Err(e) = &plain[0].result {
        rows.push(("BlazePose world landmarks".into(), None, Some(e.clone())));
    }
    if let Some(row) = image_landmarks_row(&views[a.view], &reference, cam) {
        diagnoses.push((
            "BlazePose image landmarks (x, y, z)".into(),
            diagnose(&row, &ref_limbs, cam),
        ));
    }
    if let Some(first) = runs.iter().find(|r| r.result.is_ok())
        && let Ok(s) = &first.result
    {
        let m = evaluate(&blazepose_row(s, None), &ref_limbs, cam);
        rows.push((
            "BlazePose world landmarks, the runs' front end".into(),
            Some(m.clone()),
            Some(format!(
                "from the {} run: the pipeline's front end ({})",
                first.method,
                a.vars
                    .iter()
                    .find(|v| v.starts_with("FLIP_TEST="))
                    .map_or("its default: the flip test", String::as_str)
            )),
        ));
        if baseline.is_none() {
            baseline = Some(m);
            baseline_name = "BlazePose world landmarks, the runs' front end";
        }
    }
    for r in runs {
        match &r.result {
            Ok(s) => {
                let ki = run_intrinsics(cam, r.principal, [w, h]);
                let k = [ki.fx, ki.fy, ki.cx, ki.cy];
                let note = (!r.principal).then(|| "principal point: frame centre".to_owned());
                let mesh_row = points_row(s, |p| &p.surface_landmarks_3d, &LIMB_LANDMARKS, NL, k);
                let mesh = evaluate(&mesh_row, &ref_limbs, cam);
                diagnoses.push((
                    format!("{} (mesh at landmark anchors)", r.method),
                    diagnose(&mesh_row, &ref_limbs, cam),
                ));
                let joints = evaluate(
                    &points_row(s, |p| &p.joints_3d, &LIMB_SMPL, 24, k),
                    &ref_limbs,
                    cam,
                );
                let (fe, fe_frames) = front_end_px(s, &ref_limbs);
                rows.push((
                    format!("{} (mesh at landmark anchors)", r.method),
                    Some(mesh.clone()),
                    note.clone(),
                ));
                rows.push((format!("{} (SMPL joints)", r.method), Some(joints), note));
                fronts.push((r.method.clone(), fe, fe_frames));
                per_method.push((r.method.clone(), Some(mesh), fe));
            }
            Err(e) => {
                rows.push((
                    format!("{} (mesh at landmark anchors)", r.method),
                    None,
                    Some(e.clone()),
                ));
                rows.push((format!("{} (SMPL joints)", r.method), None, Some(e.clone())));
                per_method.push((r.method.clone(), None, None));
            }
        }
    }

    // Report.
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## multiview-accuracy: {} single view vs a 4-view triangulated reference\n",
        VIEWS[a.view]
    );
    let _ = writeln!(
        md,
        "Data: pose2sim 0.10.49 Demo_SinglePerson ({}), {FRAMES} frames at 60 fps; 12 limb points.\n",
        a.media.display()
    );
    let n_ref = reference.points.iter().flatten().count();
    let _ = writeln!(
        md,
        "Reference: {n_ref}/{FRAMES} frames triangulated; mean reprojection error {:.2} px over all 33 landmarks, {:.2} px over the 12 limb landmarks.\n",
        reference.mean_error(false),
        reference.mean_error(true)
    );
    let _ = writeln!(
        md,
        "| View | fx | fy | cx | cy | frames with the subject | frames with several people | reproj. all (px) | reproj. limbs (px) | L/R swaps repaired: upper body | legs |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (v, c) in cams.iter().enumerate() {
        let sw = reference.swaps(v);
        let _ = writeln!(
            md,
            "| {} ({}x{}) | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
            c.name,
            views[v].size[0],
            views[v].size[1],
            c.fx,
            c.fy,
            c.cx,
            c.cy,
            views[v].frames.iter().flatten().count(),
            views[v].crowded,
            f2(mean(&reference.errors[v])),
            f2(mean(&reference.limb_errors[v])),
            sw[0],
            sw[1]
        );
    }
    let _ = writeln!(
        md,
        "\nCalibration check (reference reprojection error, px):\n"
    );
    let _ = writeln!(md, "| Conventions | all 33 | 12 limbs |\n|---|---|---|");
    for (label, all, limbs) in &checks {
        let _ = writeln!(md, "| {label} | {all:.2} | {limbs:.2} |");
    }
    let _ = writeln!(
        md,
        "\nAccuracy (mm unless stated; accel in mm/frame^2; root = hip centre; axes of the per-axis errors: {}'s, z = depth; L/R: frames nearer the reference with left and right exchanged):\n",
        VIEWS[a.view]
    );
    let _ = writeln!(
        md,
        "| Row | frames | missing | PA-MPJPE | MPJPE | abs x | abs y | abs z | accel | ref accel | accel err | flexion err (deg) | 2D (px) | L/R |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| reference (triangulated) | {n_ref} | {} | - | - | - | - | - | {} | {} | - | - | - | - |",
        FRAMES - n_ref,
        f2(ref_accel),
        f2(ref_accel)
    );
    let mut notes = vec![format!(
        "reference accel after a centred 5-frame moving average: {} mm/frame^2 (the rest of its \
         accel is per-frame triangulation jitter, which also sets a floor under every accel err)",
        f2(ref_accel_smoothed)
    )];
    for (name, m, note) in &rows {
        match m {
            Some(m) => {
                let _ = writeln!(md, "{}", table_row(name, m));
                if let Some(n) = note {
                    notes.push(format!("{name}: {n}"));
                }
            }
            None => {
                let _ = writeln!(
                    md,
                    "| {name} | FAILED: {} |||||||||||",
                    note.as_deref().unwrap_or("").replace('|', "/")
                );
            }
        }
    }
    for (method, fe, n) in &fronts {
        let _ = writeln!(
            md,
            "| front end 2D (landmarks_2d), {method} run | {n} | {} | | | | | | | | | | {} | |",
            FRAMES - n,
            f1(*fe)
        );
    }
    let _ = writeln!(md, "\nNotes: {}.", notes.join("; "));
    let _ = writeln!(
        md,
        "\nRatios (mesh at landmark anchors / {baseline_name}; mean accel / reference's; 2D / the run's front-end 2D):\n"
    );
    let _ = writeln!(
        md,
        "| Method | PA-MPJPE | MPJPE | accel err | mean accel / ref | flexion | 2D / front-end 2D |\n|---|---|---|---|---|---|---|"
    );
    let mut ratios_json = serde_json::Map::new();
    for (method, mesh, fe) in &per_method {
        let b = baseline.as_ref();
        let r = mesh.as_ref().map(|m| {
            [
                ratio(m.pa_mpjpe, b.and_then(|b| b.pa_mpjpe)),
                ratio(m.mpjpe, b.and_then(|b| b.mpjpe)),
                ratio(m.accel_err, b.and_then(|b| b.accel_err)),
                ratio(m.accel, ref_accel),
                ratio(m.flexion, b.and_then(|b| b.flexion)),
                ratio(m.px, *fe),
            ]
        });
        match r {
            Some(r) => {
                let _ = writeln!(
                    md,
                    "| {method} | {} | {} | {} | {} | {} | {} |",
                    f2(r[0]),
                    f2(r[1]),
                    f2(r[2]),
                    f2(r[3]),
                    f2(r[4]),
                    f2(r[5])
                );
                ratios_json.insert(
                    method.clone(),
                    json!({
                        "pa_mpjpe": r[0], "mpjpe": r[1], "accel_error": r[2],
                        "mean_accel_over_reference": r[3], "flexion": r[4],
                        "error_2d_over_front_end": r[5],
                    }),
                );
            }
            None => {
                let _ = writeln!(md, "| {method} | failed ||||||");
            }
        }
    }
    let _ = writeln!(
        md,
        "\nDiagnosis of the 3D error ({}'s camera axes, z = depth): PA-MPJPE as is, with every limb \
         bone given the reference's mean length (its direction kept), and with every limb bone's \
         depth component given the reference's sign (its length kept); then per bone the frames \
         where it points towards the camera and the reference's away, or the other way round:\n",
        VIEWS[a.view]
    );
    let names: Vec<&str> = LIMB_BONES.iter().map(|b| b.2).collect();
    let _ = writeln!(
        md,
        "| Row | PA-MPJPE | reference lengths | reference depth signs | {} |\n|---|---|---|---|{}",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for (name, d) in &diagnoses {
        let signs: Vec<String> = d.depth_sign.iter().map(usize::to_string).collect();
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            f1(d.pa),
            f1(d.pa_reference_lengths),
            f1(d.pa_reference_signs),
            signs.join(" | ")
        );
    }
    let ref_lengths: Vec<f64> = (0..names.len())
        .map(|k| diagnoses.first().map_or(f64::NAN, |(_, d)| d.lengths[k].1))
        .collect();
    // What the default body model can be at a plausible shape: its rest skeleton at the mean
    // shape, and the shape the front end's `fit_beta` (its ridge, [`BETA_RIDGE`]) finds for the
    // rest joints with each limb bone set to the reference's mean length. (A ridge of 1e-6
    // reaches the pose2sim subject's legs, at |beta| = 16.5 standard deviations.)
    let model_lengths = default_model_lengths(&ref_lengths);
    let _ = writeln!(
        md,
        "\nMean bone lengths (mm); the last two columns: the default body model's rest skeleton at \
         the mean shape, and at the shape `fit_beta` finds for the reference's lengths with the \
         front end's shape prior (ridge {BETA_RIDGE}):\n\n| Bone | reference | {} | body model, \
         mean shape | body model, shape fitted to the reference |\n|---|---|{}---|---|",
        diagnoses
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(diagnoses.len())
    );
    for (k, bone) in names.iter().enumerate() {
        let model = |i: usize| model_lengths.as_ref().ok().map(|m: &[Vec<f64>; 2]| m[i][k]);
        let _ = writeln!(
            md,
            "| {bone} | {} | {} | {} | {} |",
            f1(Some(ref_lengths[k]).filter(|v| v.is_finite())),
            diagnoses
                .iter()
                .map(|(_, d)| f1(Some(d.lengths[k].0)))
                .collect::<Vec<_>>()
                .join(" | "),
            f1(model(0)),
            f1(model(1))
        );
    }
    if let Err(e) = &model_lengths {
        let _ = writeln!(md, "\n(body model columns not computed: {e})");
    }
    let total = t_start.elapsed().as_secs_f64();
    let _ = writeln!(
        md,
        "\nTime: {total:.0} s (BlazePose on the 4 views {:.0} s, reference {ref_seconds:.1} s, runs {}).",
        bp_seconds.iter().sum::<f64>(),
        plain
            .iter()
            .chain(runs)
            .map(|r| format!("{} {:.0} s", r.method, r.seconds))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print!("{md}");

    let report = json!({
        "media": a.media.display().to_string(),
        "frames": FRAMES,
        "cameras": cams.iter().zip(&views).map(|(c, v)| json!({
            "name": c.name, "video_size": v.size, "calibration_size": c.calib_size,
            "fx": c.fx, "fy": c.fy, "cx": c.cx, "cy": c.cy, "k": c.k, "p": c.p,
            "frames_with_subject": v.frames.iter().flatten().count(), "frames_with_several_people": v.crowded,
        })).collect::<Vec<_>>(),
        "reference": {
            "frames": n_ref,
            "reprojection_px": reference.mean_error(false),
            "reprojection_limbs_px": reference.mean_error(true),
            "per_view": (0..cams.len()).map(|v| json!({
                "view": VIEWS[v],
                "reprojection_px": mean(&reference.errors[v]),
                "reprojection_limbs_px": mean(&reference.limb_errors[v]),
                "swaps_upper_body": reference.swaps(v)[0],
                "swaps_legs": reference.swaps(v)[1],
            })).collect::<Vec<_>>(),
            "mean_accel_mm_per_frame2": ref_accel,
            "mean_accel_5_frame_moving_average_mm_per_frame2": ref_accel_smoothed,
            "calibration_check": checks.iter().map(|(l, e, el)| json!({
                "conventions": l, "reprojection_px": e, "reprojection_limbs_px": el,
            })).collect::<Vec<_>>(),
        },
        "diagnosis": diagnoses.iter().map(|(name, d)| json!({
            "row": name, "pa_mpjpe_mm": d.pa,
            "pa_mpjpe_reference_lengths_mm": d.pa_reference_lengths,
            "pa_mpjpe_reference_depth_signs_mm": d.pa_reference_signs,
            "bones": LIMB_BONES.iter().enumerate().map(|(k, b)| json!({
                "bone": b.2, "length_mm": d.lengths[k].0, "reference_length_mm": d.lengths[k].1,
                "frames_depth_sign_differs": d.depth_sign[k],
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "rows": rows.iter().map(|(name, m, note)| json!({
            "row": name,
            "metrics": m.as_ref().map(Metrics::to_json),
            "note": note,
        })).collect::<Vec<_>>(),
        "front_end_2d_px": fronts.iter().map(|(m, e, n)| json!({
            "run": m, "error_2d_px": e, "frames": n,
        })).collect::<Vec<_>>(),
        "ratios_mesh_over_baseline": ratios_json,
        "runs": runs.iter().map(|r| json!({
            "method": r.method, "ok": r.result.is_ok(),
            "error": r.result.as_ref().err(), "principal_point_given": r.principal,
            "seconds": r.seconds,
        })).collect::<Vec<_>>(),
        "seconds": {
            "total": total, "blazepose_views": bp_seconds, "reference": ref_seconds,
        },
    });
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let md_path = a.out.join("multiview-accuracy.md");
    let json_path = a.out.join("multiview-accuracy.json");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report).context("serialising the report")?,
    )
    .with_context(|| format!("writing {}", json_path.display()))?;
    if let Some(k) = &a.keep {
        let path = k.join("reference.json");
        let pts: Vec<Option<Vec<[f64; 3]>>> = reference
            .points
            .iter()
            .map(|p| {
                p.as_ref()
                    .map(|p| p.iter().map(|q| [q.x, q.y, q.z]).collect())
            })
            .collect();
        let v = json!({ "world_points_m": pts, "swapped_upper_legs": reference.swapped });
        std::fs::write(&path, v.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "multiview-accuracy: wrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look_at(eye: Vector3<f64>, target: Vector3<f64>) -> (Matrix3<f64>, Vector3<f64>) {
        // Camera z towards the target, y down (world z up).
        let z = (target - eye).normalize();
        let x = z.cross(&Vector3::z()).normalize();
        let y = z.cross(&x);
        let r = Matrix3::from_rows(&[x.transpose(), y.transpose(), z.transpose()]);
        (r, -(r * eye))
    }

    fn synthetic_cameras() -> Vec<Camera> {
        (0..4)
            .map(|i| {
                let a = 0.4 + i as f64 * 1.5;
                let (r, t) = look_at(
                    Vector3::new(3.0 * a.cos(), 3.0 * a.sin(), 1.8),
                    Vector3::new(0.0, 0.0, 1.0),
                );
                Camera {
                    name: format!("c{i}"),
                    fx: 1680.0,
                    fy: 1679.0,
                    cx: 533.0,
                    cy: 948.0,
                    k: [-0.05, 0.14, 0.0],
                    p: [0.0006, 0.0007],
                    r,
                    t,
                    calib_size: [1088.0, 1920.0],
                }
            })
            .collect()
    }

    /// A body-like point set: landmark l at a point, mirrored pairs at mirrored x.
    fn body() -> Vec<Vector3<f64>> {
        (0..NL)
            .map(|l| {
                let m = mirror(l);
                let side = if l == m {
                    0.0
                } else if l < m {
                    // Left landmarks of a subject facing -y (forward) are at +x... chosen so
                    // that ((left - right) x up) . forward > 0 with forward = toes - heels.
                    -1.0
                } else {
                    1.0
                };
                let k = l.min(m) as f64;
                let z = 1.8 - 0.055 * k;
                let fwd = match l.min(m) {
                    31 => 0.15,
                    29 => -0.05,
                    _ => 0.02 * (k * 0.7).sin(),
                };
                Vector3::new(side * (0.1 + 0.01 * k), fwd, z)
            })
            .collect()
    }

    /// Exact observations; views whose bit is set in `swapped` have their labels swapped.
    fn observe(cams: &[Camera], pts: &[Vector3<f64>], swapped: usize) -> Vec<ViewLandmarks> {
        cams.iter()
            .enumerate()
            .map(|(v, c)| ViewLandmarks {
                size: [1088, 1920],
                crowded: 0,
                depth: Vec::new(),
                frames: vec![Some(
                    (0..NL)
                        .map(|l| {
                            let s = source(l, swapped >> v & 1 == 1);
                            let [u, w] = c.project(&pts[s]).unwrap();
                            [u, w, 0.9]
                        })
                        .collect(),
                )],
            })
            .collect()
    }

    /// The diagnosis on constructed rows: the reference seen by a camera with one bone's depth
    /// mirrored is found (that bone's frames counted, the reference's signs undo the error), and
    /// bones lengthened along themselves are undone by the reference's lengths.
    #[test]
    fn diagnosis_finds_a_mirrored_bone_and_wrong_lengths() {
        let cam = &synthetic_cameras()[0];
        let limbs: Vec<Vector3<f64>> = LIMB_LANDMARKS.iter().map(|&l| body()[l]).collect();
        let frames = 3;
        let reference = RefLimbs {
            world: vec![Some(limbs.clone()); frames],
            pixels: vec![None; frames],
        };
        let seen: Vec<Vector3<f64>> = limbs.iter().map(|p| cam.to_camera(p)).collect();
        let row = |points: Vec<Vector3<f64>>| RowInput {
            points: vec![Some(points); frames],
            pixels: vec![None; frames],
        };
        // The left forearm (elbow 2 -> wrist 4) mirrored in depth.
        let (elbow, wrist) = (2, 4);
        let v = seen[wrist] - seen[elbow];
        assert!(v.z.abs() > 0.01, "the test bone must have depth");
        let mut mirrored = seen.clone();
        mirrored[wrist] = seen[elbow] + Vector3::new(v.x, v.y, -v.z);
        let d = diagnose(&row(mirrored), &reference, cam);
        assert_eq!(d.depth_sign, vec![0, frames, 0, 0, 0, 0, 0, 0]);
        assert!(d.pa.is_some_and(|e| e > 1.0), "{d:?}");
        assert!(d.pa_reference_signs.is_some_and(|e| e < 1e-6), "{d:?}");
        // Same lengths: rebuilding with the reference's lengths changes nothing.
        assert!((d.pa_reference_lengths.unwrap_or(0.0) - d.pa.unwrap_or(1.0)).abs() < 1e-6);
        // Every limb bone 20 % longer (children moved along their bones, outwards).
        let longer = rebuild(&seen, |_, v| 1.2 * v);
        let d = diagnose(&row(longer), &reference, cam);
        assert_eq!(d.depth_sign, vec![0; 8]);
        assert!(d.pa.is_some_and(|e| e > 1.0), "{d:?}");
        assert!(d.pa_reference_lengths.is_some_and(|e| e < 1e-6), "{d:?}");
        for (row, reference) in &d.lengths {
            assert!((row / reference - 1.2).abs() < 1e-9, "{row} vs {reference}");
        }
    }

    /// The image-landmark row: exact projections with the depth relative to the hips in pixels
    /// (weak perspective at the root's depth) give every bone the reference's depth sign, and
    /// the left wrist's depth mirrored about the elbow's is counted on the left forearm alone.
    #[test]
    fn image_landmarks_row_keeps_the_depth_signs() {
        let cams = synthetic_cameras();
        let cam = &cams[0];
        let pts = body();
        let seen: Vec<Vector3<f64>> = pts.iter().map(|p| cam.to_camera(p)).collect();
        let root = 0.5 * (seen[23] + seen[24]);
        let mut view = observe(&cams, &pts, 0).swap_remove(0);
        view.depth = vec![Some(
            seen.iter()
                .map(|p| (p.z - root.z) * cam.fx / root.z)
                .collect(),
        )];
        let reference = Reference {
            points: vec![Some(pts.clone())],
            swapped: Vec::new(),
            errors: Vec::new(),
            limb_errors: Vec::new(),
        };
        let limbs = RefLimbs {
            world: vec![Some(LIMB_LANDMARKS.iter().map(|&l| pts[l]).collect())],
            pixels: vec![None],
        };
        let row = image_landmarks_row(&view, &reference, cam).unwrap();
        assert_eq!(diagnose(&row, &limbs, cam).depth_sign, vec![0; 8]);
        // Left elbow and wrist: landmarks 13 and 15.
        if let Some(d) = view.depth[0].as_mut() {
            d[15] = 2.0 * d[13] - d[15];
        }
        let row = image_landmarks_row(&view, &reference, cam).unwrap();
        assert_eq!(
            diagnose(&row, &limbs, cam).depth_sign,
            vec![0, 1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn triangulation_is_exact_on_exact_points() {
        let cams = synthetic_cameras();
        for p in [Vector3::new(0.1, -0.2, 1.3), Vector3::new(-0.3, 0.25, 0.1)] {
            let obs: Vec<_> = cams
                .iter()
                .map(|c| {
                    let [u, v] = c.project(&p).unwrap();
                    (c, c.undistort(u, v), 0.5)
                })
                .collect();
            let q = triangulate(&obs).unwrap();
            assert!((q - p).norm() < 1e-6, "{q} vs {p}");
        }
    }

    #[test]
    fn swapped_view_is_repaired() {
        let cams = synthetic_cameras();
        let pts = body();
        // The test body is not mirrored by construction.
        assert!(chirality(&pts, 11, 12) > 0.0 && chirality(&pts, 23, 24) > 0.0);
        let r = build_reference(&cams, &observe(&cams, &pts, 0b0010));
        assert_eq!(r.swapped[0][1], [true, true]);
        assert_eq!(r.swapped[0][0], [false, false]);
        let p = r.points[0].as_ref().unwrap();
        for (a, b) in p.iter().zip(&pts) {
            assert!((a - b).norm() < 1e-6);
        }
        assert!(r.mean_error(false) < 1e-6);
        // No view swapped: nothing to repair.
        let r = build_reference(&cams, &observe(&cams, &pts, 0));
        assert!(r.swapped[0].iter().all(|s| *s == [false, false]));
        // All views swapped: consistent but mirrored, so every view is flipped back.
        let r = build_reference(&cams, &observe(&cams, &pts, 0b1111));
        assert!(r.swapped[0].iter().all(|s| *s == [true, true]));
        let p = r.points[0].as_ref().unwrap();
        assert!((p[11] - pts[11]).norm() < 1e-6 && (p[28] - pts[28]).norm() < 1e-6);
    }

    #[test]
    fn procrustes_undoes_a_similarity() {
        let gt: Vec<Vector3<f64>> = (0..12)
            .map(|i| {
                let x = i as f64;
                Vector3::new(x.sin(), (2.0 * x).cos(), 0.3 * x)
            })
            .collect();
        let (r, _) = look_at(Vector3::new(1.0, 2.0, 0.5), Vector3::zeros());
        let pred: Vec<_> = gt
            .iter()
            .map(|g| 1.7 * r * g + Vector3::new(1.0, 2.0, 3.0))
            .collect();
        assert!(mean_distance(&procrustes_align(&pred, &gt), &gt) < 1e-9);
    }

    #[test]
    fn acceleration_of_a_parabola() {
        // p(t) = a t^2 + b t + c: second difference 2a for every t.
        let a = Vector3::new(0.5, -1.0, 2.0);
        let s: Vec<Option<Vec<Vector3<f64>>>> = (0..10)
            .map(|t| {
                let t = t as f64;
                Some(vec![
                    a * t * t + Vector3::new(3.0, 1.0, 0.0) * t + Vector3::new(1.0, 1.0, 1.0),
                ])
            })
            .collect();
        assert!((mean_accel(&s).unwrap() - 2.0 * a.norm()).abs() < 1e-9);
        let mut gap = s.clone();
        gap[5] = None;
        // Frames 4, 5, 6 lack a neighbour or themselves: 8 - 3 = 5 second differences remain.
        assert_eq!((1..10).filter_map(|t| accelerations(&gap, t)).count(), 5);
    }

    #[test]
    fn moving_average_keeps_a_line() {
        let s: Vec<Option<Vec<Vector3<f64>>>> = (0..6)
            .map(|t| Some(vec![Vector3::new(t as f64, 1.0, -2.0 * t as f64)]))
            .collect();
        let m = moving_average(&s, 2);
        assert!(m[0].is_none() && m[1].is_none() && m[4].is_none() && m[5].is_none());
        assert!((m[2].as_ref().unwrap()[0] - Vector3::new(2.0, 1.0, -4.0)).norm() < 1e-12);
    }

    #[test]
    fn flexion_of_a_right_angle() {
        let d = angle_deg(
            &Vector3::new(1.0, 0.0, 0.0),
            &Vector3::zeros(),
            &Vector3::new(0.0, 0.0, 2.0),
        );
        assert!((d - 90.0).abs() < 1e-9);
        let straight = angle_deg(
            &Vector3::new(0.0, 1.0, 0.0),
            &Vector3::zeros(),
            &Vector3::new(0.0, -1.0, 0.0),
        );
        assert!((straight - 180.0).abs() < 1e-9);
    }

    #[test]
    fn qca_camera_is_read_like_pose2sim() {
        let text = r#"<calibration><cameras>
            <camera active="1" serial="cam01" viewrotation="0">
              <fov_video bottom="1919" left="0" right="1087" top="0"/>
              <transform r11="0.5536380477336265" r12="0.8046719867383512" r13="0.2144479094331626" r21="-0.4345300743838753" r22="0.05946489349975602" r23="0.8986921279821063" r31="0.7104002579937896" r32="-0.5907342212870501" r33="0.3825762057979294" x="1460.2323709212087" y="-1909.1590482454608" z="1896.5058524092062"/>
              <intrinsic centerPointU="34110.316406" centerPointV="60680.792969" focalLengthU="107599.671875" focalLengthV="107588.828125" radialDistortion1="-0.046183" radialDistortion2="0.139983" radialDistortion3="0.000000" tangentalDistortion1="0.000608" tangentalDistortion2="0.00069"/>
            </camera></cameras></calibration>"#;
        let q = parse_qca(text).unwrap();
        assert_eq!(q.len(), 1);
        let c = Camera::from_qca(&q[0], [1088, 1920], CHOSEN).unwrap();
        assert!((c.fx - 1681.245).abs() < 0.01 && (c.cx - 532.974).abs() < 0.01);
        assert!((c.cy - 948.137).abs() < 0.01);
        assert!((c.k[0] + 0.046183 / 64.0).abs() < 1e-12);
        // The camera sees the world origin (the treadmill) in front of it, inside the image.
        let [u, v] = c.project(&Vector3::zeros()).unwrap();
        assert!(
            (0.0..1088.0).contains(&u) && (0.0..1920.0).contains(&v),
            "{u} {v}"
        );
        // A narrower video: the sensor's first columns (as Pose2Sim), or its middle ones.
        let c = Camera::from_qca(&q[0], [1080, 1920], CHOSEN).unwrap();
        assert!((c.cx - 532.974).abs() < 0.01);
        let centre = Conventions {
            crop: Crop::Centre,
            ..CHOSEN
        };
        let c = Camera::from_qca(&q[0], [1080, 1920], centre).unwrap();
        assert!((c.cx - 528.974).abs() < 0.01);
    }

    #[test]
    fn ppm_stream_frames() {
        let mut data = b"P6\n2 1\n255\n".to_vec();
        data.extend([1, 2, 3, 4, 5, 6]);
        data.extend(b"P6 1 1 255\n");
        data.extend([7, 8, 9]);
        let mut r = std::io::Cursor::new(data);
        let a = read_ppm(&mut r).unwrap().unwrap();
        assert_eq!((a.width, a.height, a.rgb), (2, 1, vec![1, 2, 3, 4, 5, 6]));
        let b = read_ppm(&mut r).unwrap().unwrap();
        assert_eq!(b.rgb, vec![7, 8, 9]);
        assert!(read_ppm(&mut r).unwrap().is_none());
    }
}
