//! `blazepose-bench`: per-stage time and frame rate of the BlazePose front end (issue 7,
//! "Measurements"), against mediapipe's Python solution on the same frames in the same run.
//!
//! ```text
//! cargo run --release -p ikol-detect --bin blazepose-bench -- DIR [--repeat N] [--fps F]
//!     [--warmup N] [--python PYTHON | --no-mediapipe] [--profile] [--no-segmentation]
//!     [--graphs N]
//! ```
//!
//! `DIR` holds the frames as PNG (RGB8), read into memory before any timing. The 640x480 clip of
//! the issue is made from the demo clip (1080x1920 portrait, pose2sim 0.10.49) by scaling it to
//! 480 rows and padding it with black columns to 640 (`videoscale add-borders=true` with a
//! square pixel aspect ratio):
//!
//! ```text
//! mkdir -p /tmp/bp640 && gst-launch-1.0 -q filesrc location=$HOME/.cache/ikol/media/pose2sim/cam01.mp4 \
//!   ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! videoscale add-borders=true \
//!   ! video/x-raw,width=640,height=480,pixel-aspect-ratio=1/1,format=RGB \
//!   ! pngenc compression-level=1 ! multifilesink location=/tmp/bp640/frame_%03d.png
//! ```
//!
//! Two runs over the frames (each after `--warmup` frames of frame 0 on the same state, and
//! `--repeat` passes in a row):
//! * **image mode**: the detector on every frame, its first ROI to the landmark model, the
//!   landmarks to SMPL-24 ([`BodyFromLandmarks`]);
//! * **tracking mode**: the detector only when the [`RoiTracker`] has no ROI (first frame, or
//!   the pose was lost), else the ROI from the previous frame's landmarks; landmarks smoothed
//!   (mediapipe's video mode with its default `smooth_landmarks`); timestamps at `--fps`
//!   (60, the clip's rate).
//!
//! Stages: detector input (letterbox to 224x224), detector model, detector decoding (anchors,
//! NMS, ROI), landmark input (the ROI warped to 256x256), landmark model, landmark decoding
//! (heatmap refinement, projection; in tracking mode also the filters and the next ROI),
//! landmarks -> SMPL. "Model" includes the copy into and out of candle tensors. Medians are
//! over the frames where the stage ran; the frame rate is frames / total time.
//!
//! Then it runs `tools/bench_mediapipe.py` with `--python` (default: `$IKOL_MEDIAPIPE_PYTHON`,
//! else `/tmp/mpcheck/bin/python` if present, else `python3`; it needs `mediapipe==0.10.21` and
//! `numpy<2`, see the script) on the same directory, `model_complexity=1`, in
//! `static_image_mode=True` and `False`, and prints the ratios. `--profile` also prints the time
//! per kind of kernel and the slowest operators of both models in image mode
//! ([`tflite::Model::run_profiled`]). `--no-segmentation` drops the landmark model's
//! segmentation branch ([`tflite::Model::retain_outputs`]; the landmarks are the same, the
//! mask is not used): what the landmark stage costs once [`BlazePoseLandmarker`] does the
//! same, as mediapipe computes the mask even with `enable_segmentation=False`.
//!
//! `--graphs N` times only the two TensorFlow Lite graphs, N runs each on 1 and 2 threads, and
//! sets them beside Google's runtime with XNNPACK on the same graphs (see [`graphs`]).
//!
//! The models come from [`models_dir`] (`make models`).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use ikol_body::BodyModel;
use ikol_detect::RgbImage;
use ikol_detect::blazepose::{
    DetectorPostprocess, LandmarkOutputs, POSE_PRESENCE_THRESHOLD, PoseLandmarks, RoiTracker,
    RotatedRect, decode_pose, detection_roi, detector_input, landmark_input,
};
use ikol_detect::blazepose_model::{
    BlazePoseDetector, BlazePoseLandmarker, BodyFromLandmarks, DETECTOR_FILE, LANDMARK_FILE,
    models_dir,
};
use ikol_detect::tflite;

type Res<T> = Result<T, Box<dyn Error>>;

/// The landmark model's outputs the decoding reads (all but the segmentation mask).
const LANDMARK_OUTPUTS: [&str; 4] = ["Identity", "Identity_1", "Identity_3", "Identity_4"];

const STAGES: [&str; 7] = [
    "detector input",
    "detector model",
    "detector decode",
    "landmark input",
    "landmark model",
    "landmark decode",
    "landmarks -> SMPL",
];
const DET_INPUT: usize = 0;
const DET_MODEL: usize = 1;
const DET_DECODE: usize = 2;
const LM_INPUT: usize = 3;
const LM_MODEL: usize = 4;
const LM_DECODE: usize = 5;
const SMPL: usize = 6;

struct Args {
    dir: PathBuf,
    repeat: usize,
    warmup: usize,
    fps: f64,
    python: Option<String>,
    mediapipe: bool,
    profile: bool,
    no_segmentation: bool,
    /// `--graphs N`: time the two graphs alone, N runs each, instead of the chain.
    graphs: Option<usize>,
}

fn usage() -> String {
    "usage: blazepose-bench DIR [--repeat N] [--warmup N] [--fps F] [--python PYTHON | \
     --no-mediapipe] [--profile] [--no-segmentation] [--graphs N]"
        .into()
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        dir: PathBuf::new(),
        repeat: 1,
        warmup: 3,
        fps: 60.0,
        python: std::env::var("IKOL_MEDIAPIPE_PYTHON").ok(),
        mediapipe: true,
        profile: false,
        no_segmentation: false,
        graphs: None,
    };
    let mut it = std::env::args().skip(1);
    let mut dir = None;
    while let Some(s) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match s.as_str() {
            "--repeat" => a.repeat = val("--repeat")?.parse()?,
            "--warmup" => a.warmup = val("--warmup")?.parse()?,
            "--fps" => a.fps = val("--fps")?.parse()?,
            "--python" => a.python = Some(val("--python")?),
            "--no-mediapipe" => a.mediapipe = false,
            "--profile" => a.profile = true,
            "--no-segmentation" => a.no_segmentation = true,
            "--graphs" => a.graphs = Some(val("--graphs")?.parse::<usize>()?.max(1)),
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other if other.starts_with('-') => return Err(format!("{other}? {}", usage()).into()),
            other => dir = Some(PathBuf::from(other)),
        }
    }
    a.dir = dir.ok_or_else(usage)?;
    a.repeat = a.repeat.max(1);
    Ok(a)
}

/// An RGB8 frame.
struct Frame {
    rgb: Vec<u8>,
    width: usize,
    height: usize,
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

fn load_png(path: &Path) -> Res<Frame> {
    let mut dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    buf.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        other => return Err(format!("{}: PNG colour type {other:?}", path.display()).into()),
    };
    Ok(Frame {
        rgb,
        width: info.width as usize,
        height: info.height as usize,
    })
}

fn load_frames(dir: &Path) -> Res<Vec<Frame>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("{}: no PNG frames", dir.display()).into());
    }
    paths.iter().map(|p| load_png(p)).collect()
}

/// The chain, stage by stage, from the crate's public pieces (what `BlazePoseDetector` and
/// `BlazePoseLandmarker` do inside, checked equal in `main`).
struct Chain {
    detector: tflite::Model,
    post: DetectorPostprocess,
    landmarker: tflite::Model,
    body: BodyFromLandmarks,
    /// Per model (detector, landmarks): accumulated time of each step, with its description.
    profile: Option<[Vec<(String, Duration)>; 2]>,
}

/// Per-frame stage times.
type Times = [Option<Duration>; 7];

fn timed<T>(times: &mut Times, stage: usize, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let v = f();
    *times[stage].get_or_insert(Duration::ZERO) += t0.elapsed();
    v
}

impl Chain {
    fn run_model(
        &mut self,
        which: usize,
        data: Vec<f32>,
        h: usize,
        w: usize,
    ) -> Res<Vec<(String, Vec<f32>)>> {
        let model = if which == 0 {
            &self.detector
        } else {
            &self.landmarker
        };
        let x = Tensor::from_vec(data, (1, h, w, 3), &Device::Cpu)?;
        let outs = match self.profile.as_mut() {
            Some(acc) => {
                let acc = &mut acc[which];
                let (outs, steps) = model.run_profiled(&[x])?;
                if acc.is_empty() {
                    acc.extend((0..steps.len()).map(|i| (model.describe_step(i), Duration::ZERO)));
                }
                for (a, (_, t)) in acc.iter_mut().zip(steps) {
                    a.1 += t;
                }
                outs
            }
            None => model.run(&[x])?,
        };
        model
            .outputs()
            .into_iter()
            .zip(outs)
            .map(|(s, t)| Ok((s.name, t.flatten_all()?.to_vec1::<f32>()?)))
            .collect()
    }

    /// Detector stages: the first ROI.
    fn detect(&mut self, img: &RgbImage<'_>, t: &mut Times) -> Res<Option<RotatedRect>> {
        let input = timed(t, DET_INPUT, || detector_input(img))?;
        let (h, w) = (input.height, input.width);
        let t0 = Instant::now();
        let outs = self.run_model(0, input.data, h, w)?;
        t[DET_MODEL] = Some(t0.elapsed());
        timed(t, DET_DECODE, || {
            let dets = self.post.run(
                out(&outs, "Identity")?,
                out(&outs, "Identity_1")?,
                &input.padding,
            )?;
            Ok(dets
                .iter()
                .find_map(|d| detection_roi(d, img.width, img.height)))
        })
    }

    /// Landmark stages (decoding without the tracker).
    fn landmarks(
        &mut self,
        img: &RgbImage<'_>,
        roi: &RotatedRect,
        t: &mut Times,
    ) -> Res<Option<PoseLandmarks>> {
        let input = timed(t, LM_INPUT, || landmark_input(img, roi))?;
        let (h, w) = (input.height, input.width);
        let t0 = Instant::now();
        let outs = self.run_model(1, input.data, h, w)?;
        t[LM_MODEL] = Some(t0.elapsed());
        timed(t, LM_DECODE, || {
            let o = LandmarkOutputs {
                landmarks: out(&outs, "Identity")?,
                pose_flag: out(&outs, "Identity_1")?.first().copied().unwrap_or(0.0),
                heatmap: Some(out(&outs, "Identity_3")?),
                world: out(&outs, "Identity_4")?,
            };
            Ok(decode_pose(
                &o,
                &input.roi,
                &input.padding,
                POSE_PRESENCE_THRESHOLD,
            )?)
        })
    }

    fn smpl(&self, pose: &PoseLandmarks, t: &mut Times) {
        let est = timed(t, SMPL, || self.body.estimate(pose));
        std::hint::black_box(est);
    }

    /// Image mode on one frame: did it find a pose?
    fn image_mode(&mut self, img: &RgbImage<'_>, t: &mut Times) -> Res<bool> {
        let Some(roi) = self.detect(img, t)? else {
            return Ok(false);
        };
        let Some(pose) = self.landmarks(img, &roi, t)? else {
            return Ok(false);
        };
        self.smpl(&pose, t);
        Ok(true)
    }

    /// Tracking mode on one frame: did it find a pose?
    fn tracking_mode(
        &mut self,
        img: &RgbImage<'_>,
        tracker: &mut RoiTracker,
        timestamp_us: i64,
        t: &mut Times,
    ) -> Res<bool> {
        let roi = match tracker.roi() {
            Some(r) => r,
            None => match self.detect(img, t)? {
                Some(r) => r,
                None => {
                    tracker.update(None, timestamp_us);
                    return Ok(false);
                }
            },
        };
        let mut pose = self.landmarks(img, &roi, t)?;
        timed(t, LM_DECODE, || tracker.update(pose.as_mut(), timestamp_us));
        if let Some(p) = &pose {
            self.smpl(p, t);
        }
        Ok(pose.is_some())
    }
}

fn out<'a>(outs: &'a [(String, Vec<f32>)], name: &str) -> Res<&'a [f32]> {
    outs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .ok_or_else(|| format!("no model output {name}").into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// Results of one mode.
struct Run {
    frames: Vec<Times>,
    poses: usize,
}

impl Run {
    fn stage_median(&self, s: usize) -> (Option<f64>, usize) {
        let v: Vec<f64> = self.frames.iter().filter_map(|t| t[s].map(ms)).collect();
        let n = v.len();
        (median(v), n)
    }

    fn totals(&self) -> Vec<f64> {
        self.frames
            .iter()
            .map(|t| t.iter().flatten().map(|d| ms(*d)).sum())
            .collect()
    }

    fn mean_ms(&self) -> f64 {
        let t = self.totals();
        t.iter().sum::<f64>() / t.len() as f64
    }
}

fn frame_ts(i: usize, fps: f64) -> i64 {
    (i as f64 * 1e6 / fps).round() as i64
}

fn run_image(chain: &mut Chain, frames: &[Frame], a: &Args) -> Res<Run> {
    for _ in 0..a.warmup {
        chain.image_mode(&frames[0].image(), &mut [None; 7])?;
    }
    let mut run = Run {
        frames: Vec::new(),
        poses: 0,
    };
    for _ in 0..a.repeat {
        for f in frames {
            let mut t = [None; 7];
            run.poses += usize::from(chain.image_mode(&f.image(), &mut t)?);
            run.frames.push(t);
        }
    }
    Ok(run)
}

fn run_tracking(chain: &mut Chain, frames: &[Frame], a: &Args) -> Res<Run> {
    let mut tracker = RoiTracker::new(true);
    let mut i = 0;
    for _ in 0..a.warmup {
        chain.tracking_mode(
            &frames[0].image(),
            &mut tracker,
            frame_ts(i, a.fps),
            &mut [None; 7],
        )?;
        i += 1;
    }
    let mut run = Run {
        frames: Vec::new(),
        poses: 0,
    };
    for _ in 0..a.repeat {
        for f in frames {
            let mut t = [None; 7];
            let ts = frame_ts(i, a.fps);
            i += 1;
            run.poses += usize::from(chain.tracking_mode(&f.image(), &mut tracker, ts, &mut t)?);
            run.frames.push(t);
        }
    }
    Ok(run)
}

/// `--graphs N`: each graph alone on frame 0's inputs (the detector's letterboxed frame; the
/// landmark model's crop of the first detection, else of the whole frame), on rayon pools of 1
/// and 2 threads, N runs each after 3 warm-up runs: the median per run. The landmark model
/// whole (with its segmentation head, as Google's runtime and mediapipe run it) and as
/// `ikolbackbone` runs it. Then, unless `--no-mediapipe`, Google's runtime (`ai-edge-litert`
/// with XNNPACK) on the same graphs through `tools/gen_tflite_fixture.py --time-only` with
/// `--python` (it needs `ai-edge-litert` and `numpy` there), and the ratios.
fn graphs(a: &Args, frame: &Frame, dir: &Path, runs: usize) -> Res<()> {
    let img = frame.image();
    let detector = tflite::Model::load(dir.join(DETECTOR_FILE))?;
    let landmarker = tflite::Model::load(dir.join(LANDMARK_FILE))?;
    let mut no_seg = tflite::Model::load(dir.join(LANDMARK_FILE))?;
    no_seg.retain_outputs(&LANDMARK_OUTPUTS)?;
    let det_in = detector_input(img)?;
    let roi = BlazePoseDetector::load(dir)?
        .detect_poses(img)?
        .into_iter()
        .next()
        .map(|(_, r)| r)
        .unwrap_or_else(|| RotatedRect::full_image(img.width, img.height));
    let lm_in = landmark_input(img, &roi)?;
    let tensor = |t: &ikol_detect::blazepose::TensorInput| {
        Tensor::from_slice(&t.data, &t.shape(), &Device::Cpu)
    };
    let (det_x, lm_x) = (tensor(&det_in)?, tensor(&lm_in)?);
    let cases = [
        ("pose_detection", &detector, &det_x),
        ("pose_landmark_full", &landmarker, &lm_x),
        ("pose_landmark_full without segmentation", &no_seg, &lm_x),
    ];
    println!(
        "blazepose-bench --graphs {runs}: median ms per run, frame 0 of {}",
        a.dir.display()
    );
    println!("{:<42}{:>12}{:>12}", "graph", "1 thread", "2 threads");
    let mut ours = Vec::new();
    for (name, model, x) in cases {
        let mut row = [0.0; 2];
        for (k, threads) in [1, 2].into_iter().enumerate() {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?;
            let mut t = pool.install(|| -> Result<Vec<f64>, tflite::Error> {
                for _ in 0..3 {
                    model.run(&[(*x).clone()])?;
                }
                (0..runs)
                    .map(|_| {
                        let t0 = Instant::now();
                        model.run(&[(*x).clone()])?;
                        Ok(t0.elapsed().as_secs_f64() * 1e3)
                    })
                    .collect()
            })?;
            t.sort_by(f64::total_cmp);
            row[k] = t[t.len() / 2];
        }
        println!("{name:<42}{:>12.2}{:>12.2}", row[0], row[1]);
        ours.push((name, row));
    }
    if !a.mediapipe {
        return Ok(());
    }
    let python = a.python.clone().unwrap_or_else(|| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gen_tflite_fixture.py");
    let o = match Command::new(&python)
        .arg(&script)
        .args(["--models", &dir.to_string_lossy(), "--time-only"])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("XNNPACK comparison SKIPPED ({python}: {e})");
            return Ok(());
        }
    };
    let stdout = String::from_utf8_lossy(&o.stdout);
    // "pose_detection: {'xnnpack_1t_ms_median_of_5x10': 10.41, 'xnnpack_2t_ms_...': 5.27}"
    let xnnpack = |graph: &str, threads: usize| -> Option<f64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{graph}: ")))?;
        let key = format!("'xnnpack_{threads}t_ms_median_of_5x10': ");
        let rest = &line[line.find(&key)? + key.len()..];
        rest.split([',', '}']).next()?.trim().parse().ok()
    };
    if !o.status.success() || xnnpack("pose_detection", 1).is_none() {
        println!(
            "XNNPACK comparison SKIPPED ({python} {}): {}",
            script.display(),
            stderr_tail(&o, 3)
        );
        return Ok(());
    }
    println!("\nai-edge-litert with XNNPACK (median of 5 x 10 runs) and ours / XNNPACK:");
    for (name, row) in &ours {
        let graph = name.split(' ').next().unwrap_or(name);
        let x = [xnnpack(graph, 1), xnnpack(graph, 2)];
        let cell =
            |k: usize| x[k].map_or("-".to_string(), |v| format!("{v:.2} ({:.2}x)", row[k] / v));
        println!("{name:<42}{:>16}{:>16}", cell(0), cell(1));
    }
    println!("(< 1 = ours faster; the row without segmentation is set against the whole graph)");
    Ok(())
}

/// The last `n` lines a child process wrote to stderr, in order, joined by " | ".
fn stderr_tail(o: &std::process::Output, n: usize) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// mediapipe's numbers for one mode: (median ms, mean ms, poses).
struct MpMode {
    median_ms: f64,
    mean_ms: f64,
    poses: u64,
}

fn mediapipe(a: &Args) -> Res<(String, MpMode, MpMode)> {
    let python = a.python.clone().unwrap_or_else(|| {
        let venv = "/tmp/mpcheck/bin/python";
        if Path::new(venv).is_file() {
            venv.into()
        } else {
            "python3".into()
        }
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_mediapipe.py");
    let o = Command::new(&python)
        .arg(&script)
        .arg(&a.dir)
        .args(["--repeat", &a.repeat.to_string()])
        .args(["--warmup", &a.warmup.to_string()])
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().last().unwrap_or("");
    if !o.status.success() || !last.starts_with('{') {
        return Err(format!(
            "{python} {} failed ({}): {}",
            script.display(),
            o.status,
            stderr_tail(&o, 5)
        )
        .into());
    }
    let v: serde_json::Value = serde_json::from_str(last)?;
    let mode = |m: &str| -> Res<MpMode> {
        let f = |k: &str| {
            v[m][k]
                .as_f64()
                .ok_or_else(|| format!("mediapipe output: no {m}.{k}"))
        };
        Ok(MpMode {
            median_ms: f("median_ms")?,
            mean_ms: f("mean_ms")?,
            poses: v[m]["poses"].as_u64().unwrap_or(0),
        })
    };
    let version = v["mediapipe"].as_str().unwrap_or("?").to_owned();
    Ok((version, mode("image")?, mode("video")?))
}

/// The slowest steps of each model and the time per kind of kernel, per frame (image mode).
fn print_profile(p: &[Vec<(String, Duration)>; 2], n: usize) {
    for (name, steps) in ["detector", "landmark model"].iter().zip(p) {
        let per = |t: Duration| ms(t) / n as f64;
        let total: Duration = steps.iter().map(|x| x.1).sum();
        println!(
            "\n{name}: {} steps, {:.2} ms/frame; by kernel:",
            steps.len(),
            per(total)
        );
        let mut kinds: Vec<(String, Duration, usize)> = Vec::new();
        for (d, t) in steps {
            // "#i OP -> [shape] kernel..." -> "OP kernel"
            let mut w = d.split_whitespace().skip(1);
            let op = w.next().unwrap_or("");
            let kernel = d
                .split(']')
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .find(|k| ["gemm", "im2col", "direct", "depthwise", "add"].contains(k));
            let key = format!("{op} {}", kernel.unwrap_or(""));
            match kinds.iter_mut().find(|k| k.0 == key) {
                Some(k) => {
                    k.1 += *t;
                    k.2 += 1;
                }
                None => kinds.push((key, *t, 1)),
            }
        }
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        for (k, t, c) in &kinds {
            println!("  {:>7.2} ms  {c:>4} x {k}", per(*t));
        }
        let mut s: Vec<_> = steps.iter().collect();
        s.sort_by_key(|k| std::cmp::Reverse(k.1));
        println!("  slowest:");
        for (d, t) in s.iter().take(8) {
            println!("  {:>7.3} ms  {d}", per(*t));
        }
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn main() -> Res<()> {
    let a = parse_args()?;
    let frames = load_frames(&a.dir)?;
    let dir = models_dir();
    if let Some(runs) = a.graphs {
        return graphs(&a, &frames[0], &dir, runs);
    }
    let model = BodyModel::embedded_default()?;
    let mut chain = Chain {
        detector: tflite::Model::load(dir.join(DETECTOR_FILE))?,
        post: DetectorPostprocess::pose_detection(),
        landmarker: {
            let mut m = tflite::Model::load(dir.join(LANDMARK_FILE))?;
            if a.no_segmentation {
                m.retain_outputs(&LANDMARK_OUTPUTS)?;
            }
            m
        },
        body: BodyFromLandmarks::new(&model)?,
        profile: a.profile.then(Default::default),
    };

    // The staged chain is the crate's: same ROI and landmarks as the public API on frame 0.
    {
        let img = frames[0].image();
        let api_det = BlazePoseDetector::load(&dir)?;
        let api_lm = BlazePoseLandmarker::load(&dir)?;
        let api_roi = api_det
            .detect_poses(img)?
            .into_iter()
            .next()
            .map(|(_, r)| r);
        let mut t = [None; 7];
        let roi = chain.detect(&img, &mut t)?;
        if roi != api_roi {
            return Err(format!("staged ROI {roi:?} differs from the API's {api_roi:?}").into());
        }
        if let Some(r) = roi {
            let ours = chain.landmarks(&img, &r, &mut t)?;
            if ours != api_lm.landmarks(img, &r)? {
                return Err("staged landmarks differ from the API's".into());
            }
        }
    }

    let threads = candle_core::utils::get_num_threads();
    let (w, h) = (frames[0].width, frames[0].height);
    let n = frames.len() * a.repeat;
    println!(
        "blazepose-bench: {} frames {w}x{h} from {} (x{} passes), {threads} threads, candle {}",
        frames.len(),
        a.dir.display(),
        a.repeat,
        if cfg!(debug_assertions) {
            "DEBUG BUILD (use --release)"
        } else {
            "release"
        }
    );
    let image = run_image(&mut chain, &frames, &a)?;
    let profile_image = chain.profile.take();
    chain.profile = a.profile.then(Default::default);
    let tracking = run_tracking(&mut chain, &frames, &a)?;

    println!();
    println!(
        "{:<26}{:>14}{:>22}",
        "stage (median ms)", "image mode", "tracking mode"
    );
    for (s, name) in STAGES.iter().enumerate() {
        let (mi, ni) = image.stage_median(s);
        let (mt, nt) = tracking.stage_median(s);
        let note = |k: usize| {
            if k == n {
                String::new()
            } else {
                format!(" ({k}/{n})")
            }
        };
        println!(
            "{name:<26}{:>14}{:>22}",
            format!("{}{}", fmt_opt(mi), note(ni)),
            format!("{}{}", fmt_opt(mt), note(nt))
        );
    }
    let (ti, tt) = (image.totals(), tracking.totals());
    let (mean_i, mean_t) = (image.mean_ms(), tracking.mean_ms());
    println!(
        "{:<26}{:>14}{:>22}",
        "per frame, median ms",
        fmt_opt(median(ti)),
        fmt_opt(median(tt))
    );
    println!(
        "{:<26}{:>14.2}{:>22.2}",
        "per frame, mean ms", mean_i, mean_t
    );
    println!("{:<26}{:>14.1}{:>22.1}", "fps", 1e3 / mean_i, 1e3 / mean_t);
    println!(
        "{:<26}{:>14}{:>22}",
        "frames with a pose", image.poses, tracking.poses
    );

    if let Some(p) = profile_image {
        print_profile(&p, n);
    }

    if !a.mediapipe {
        return Ok(());
    }
    println!();
    match mediapipe(&a) {
        Ok((version, mi, mv)) => {
            println!(
                "{:<26}{:>14}{:>22}",
                format!("mediapipe {version}"),
                "image mode",
                "video mode"
            );
            println!(
                "{:<26}{:>14.2}{:>22.2}",
                "per frame, median ms", mi.median_ms, mv.median_ms
            );
            println!(
                "{:<26}{:>14.2}{:>22.2}",
                "per frame, mean ms", mi.mean_ms, mv.mean_ms
            );
            println!(
                "{:<26}{:>14.1}{:>22.1}",
                "fps",
                1e3 / mi.mean_ms,
                1e3 / mv.mean_ms
            );
            println!(
                "{:<26}{:>14}{:>22}",
                "frames with a pose", mi.poses, mv.poses
            );
            println!(
                "{:<26}{:>14.2}{:>22.2}",
                "ours / mediapipe (mean)",
                mean_i / mi.mean_ms,
                mean_t / mv.mean_ms
            );
            println!(
                "{:<26}{:>14.2}{:>22.2}",
                "ours / mediapipe (median)",
                median(image.totals()).unwrap_or(f64::NAN) / mi.median_ms,
                median(tracking.totals()).unwrap_or(f64::NAN) / mv.median_ms
            );
            println!(
                "(ours includes landmarks -> SMPL; mediapipe stops at landmarks; < 1 = ours faster)"
            );
        }
        Err(e) => println!("mediapipe comparison SKIPPED: {e}"),
    }
    Ok(())
}
