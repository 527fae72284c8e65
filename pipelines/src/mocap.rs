//! `ikol mocap`: a video in, one motion file per tracked person out (BVH, glTF binary, TRC,
//! NPZ; several formats in one pass). Runs the default chain (BlazePose detector and landmarks
//! with the flip test, the body fitted per track, `method=fit`) with one `ikolexport` per
//! output, through the same runner as `ikol run` (progress, Ctrl-C finalises the files).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use ikol_export::Format;

use crate::run::{PipelineFile, RunArgs, run_file};

/// Options of `ikol mocap`.
#[derive(Debug, Args)]
pub struct MocapArgs {
    /// The video (any file decodebin reads: MP4, MKV, WebM, ...).
    pub video: PathBuf,
    /// Output file; the extension picks the format (.bvh, .glb, .trc, .npz). One file per
    /// track: `%t` in the name is the track id, else `-<id>` goes before the extension.
    /// Repeat for several formats in one pass. `.jsonl`: every frame's results as `ikol run`
    /// writes them (one file).
    #[arg(long, required = true)]
    pub output: Vec<PathBuf>,
    /// `default`, `small`, or a body model file (our .safetensors, SMPL .npz or .pkl).
    #[arg(long, default_value = "default")]
    pub body_model: String,
    /// Frames per second of the files (resampled by interpolation); default: the video's.
    #[arg(long)]
    pub fps_out: Option<f64>,
    /// Tracks with fewer solved frames are not written.
    #[arg(long, default_value_t = 10)]
    pub min_frames: u32,
    /// Stop after about N frames of the video: end of stream follows the Nth decoded frame
    /// (frames the decoder already had in flight still arrive).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Focal length in pixels from a calibration (default: a 60-degree horizontal view).
    #[arg(long)]
    pub focal: Option<f64>,
    /// Principal point "cx,cy" in pixels from a calibration (default: the frame centre).
    #[arg(long)]
    pub principal: Option<String>,
    /// Most people per frame.
    #[arg(long, default_value_t = 4)]
    pub max_people: u32,
    /// BlazePose without its flip test (the mirrored crop averaged in): about 1.5x faster,
    /// less accurate in 3D.
    #[arg(long)]
    pub no_flip_test: bool,
    /// Print the pipeline and exit.
    #[arg(long)]
    pub dry_run: bool,
}

/// Quotes a value for a GStreamer launch line.
fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The launch line of a mocap run.
pub fn description(a: &MocapArgs) -> Result<String> {
    if let Some(f) = a.fps_out
        && !(f.is_finite() && f > 0.0 && f <= 1000.0)
    {
        bail!("--fps-out {f}: must be in (0, 1000]");
    }
    if let Some(f) = a.focal
        && !(f.is_finite() && f > 0.0)
    {
        bail!("--focal {f}: must be a positive number of pixels");
    }
    let video = a
        .video
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{}: the path is not valid UTF-8", a.video.display()))?;
    if !a.video.is_file() {
        bail!("{}: no such file", a.video.display());
    }
    let bm = quoted(&a.body_model);
    let mut d = format!(
        "filesrc location={} ! decodebin ! videoconvert",
        quoted(video)
    );
    if let Some(n) = a.frames {
        // EOS after N frames: the files are finalised as at the end of the video.
        let _ = write!(d, " ! identity eos-after={n}");
    }
    let _ = write!(
        d,
        " ! ikolcrop detector=blazepose max-people={} tracking=true \
         ! ikolbackbone model=blazepose flip-test={} body-model={bm} focal-length={} \
         principal-point={} \
         ! ikolsolver method=fit init=analytic body-model={bm}",
        a.max_people,
        !a.no_flip_test,
        a.focal.unwrap_or(0.0),
        quoted(a.principal.as_deref().unwrap_or("")),
    );
    for out in &a.output {
        let jsonl = out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
        let format = match Format::from_path(out) {
            Some(f) => f.extension(),
            None if jsonl => "jsonl",
            None => bail!(
                "--output {}: the extension must be one of .bvh, .glb, .trc, .npz, .jsonl",
                out.display()
            ),
        };
        let loc = out
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("{}: the path is not valid UTF-8", out.display()))?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            bail!("--output {}: no directory {}", out.display(), dir.display());
        }
        let _ = write!(
            d,
            " ! ikolexport format={} location={} body-model={bm} frame-rate={} min-frames={}",
            format,
            quoted(loc),
            a.fps_out.unwrap_or(0.0),
            a.min_frames
        );
    }
    d.push_str(" ! fakesink sync=false");
    Ok(d)
}

/// The command.
pub fn main(a: &MocapArgs) -> Result<()> {
    let d = description(a)?;
    if a.dry_run {
        crate::run::say(&format!("{d}\n"));
        return Ok(());
    }
    let file = PipelineFile::parse(Path::new("ikol mocap"), &d)?;
    run_file(&file, &RunArgs::default())
}
