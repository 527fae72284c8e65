// SPDX-License-Identifier: MIT OR Apache-2.0
//! SECTION:element-ikolexport
//!
//! With `format=jsonl` (the default) writes the `IkolFrameMeta` of every frame as one JSON
//! object per line (JSON Lines) to `location`, or to stdout when `location` is unset. Each line is an `ikol_types::FrameResult`:
//! `frame` (buffer index from the start of the stream), `pts_ns` (when the buffer has a
//! timestamp) and `people`, each with `track_id`, `bbox` (the tight box of the solved body),
//! `roi` (the region the front end looked at), `score` and whatever upstream elements filled:
//! the solved body (`joints_3d`: its 24 joints in camera metres, `joints_2d`: their projection,
//! `surface_landmarks_3d`, `theta`, `beta`, `translation`, `residual`; `vertices` only with
//! `vertices=true`) and the front end's measurements (`targets_3d`, `keypoints_2d`,
//! `confidence`, `landmarks_2d`, `landmarks_3d`). With `post-messages=true` the same line is also posted on the bus as an
//! element message `ikol-frame` with fields `frame` (u64), `pts` (u64 nanoseconds, when known),
//! `people` (u32) and `json` (string), so applications can read results without a file. Video
//! buffers pass through unchanged (the element works in pass-through mode).
//!
//! With `format=bvh|glb|trc|npz` it collects every track's solved bodies (`theta`, `beta`,
//! `translation`) and, at end of stream (also on Ctrl-C when the application sends EOS, as
//! `ikol run` and `gst-launch-1.0 -e` do; else when the element stops), writes one motion file per
//! track with at least `min-frames` solved frames to `location`, where `%t` stands for the track id
//! (without `%t`, `-<id>` goes before the extension). The formats, the Y-up world they share and
//! the timeline (gaps interpolated, `frame-rate` resampling) are documented in the `ikol-export`
//! crate. For each file an element message `ikol-take` is posted with fields `track` (u64),
//! `location` (string), `format` (string) and `frames` (u32).
//!
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 filesrc location=walk.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB \
//!   ! ikolcrop ! ikolbackbone checkpoint=ikol.safetensors ! ikolsolver \
//!   ! ikolexport location=walk.jsonl ! fakesink
//! gst-launch-1.0 -e filesrc location=walk.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB \
//!   ! ikolcrop detector=blazepose ! ikolbackbone model=blazepose ! ikolsolver method=fit \
//!   ! ikolexport format=glb location=walk-%t.glb ! fakesink
//! ```
//!
//! Since: 0.1

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Stdout, Write};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use ikol_export::{Marker, Take, TrackSample};
use ikol_types::joints::SMPL_JOINTS;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use crate::common;
use crate::meta;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "ikolexport",
        gst::DebugColorFlags::empty(),
        Some("ikol JSON-lines and motion-file export"),
    )
});

const DEFAULT_LOCATION: Option<&str> = None;
const DEFAULT_POST_MESSAGES: bool = false;
const DEFAULT_VERTICES: bool = false;
const DEFAULT_BODY_MODEL: &str = "default";
const DEFAULT_FRAME_RATE: f64 = 0.0;
const DEFAULT_MIN_FRAMES: u32 = 10;
/// Frame rate assumed when the caps carry none (variable-rate streams).
const FALLBACK_FPS: f64 = 30.0;
/// Name of the element messages posted with `post-messages=true`.
const MESSAGE_NAME: &str = "ikol-frame";
/// Name of the element message posted for each motion file written.
const TAKE_MESSAGE: &str = "ikol-take";

/// What `ikolexport` writes.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIkolExportFormat")]
pub enum ExportFormat {
    #[enum_value(
        name = "JSON lines: one object per frame (every person)",
        nick = "jsonl"
    )]
    Jsonl = 0,
    #[enum_value(
        name = "BVH motion per track (skeleton + Euler channels, cm)",
        nick = "bvh"
    )]
    Bvh = 1,
    #[enum_value(
        name = "glTF 2.0 binary per track (skinned mesh + animation)",
        nick = "glb"
    )]
    Glb = 2,
    #[enum_value(name = "TRC markers per track (OpenSim / Pose2Sim, mm)", nick = "trc")]
    Trc = 3,
    #[enum_value(name = "NPZ SMPL parameters per track (AMASS layout)", nick = "npz")]
    Npz = 4,
}

impl ExportFormat {
    /// The motion-file format; `None` for JSON lines.
    fn motion(self) -> Option<ikol_export::Format> {
        match self {
            ExportFormat::Jsonl => None,
            ExportFormat::Bvh => Some(ikol_export::Format::Bvh),
            ExportFormat::Glb => Some(ikol_export::Format::Glb),
            ExportFormat::Trc => Some(ikol_export::Format::Trc),
            ExportFormat::Npz => Some(ikol_export::Format::Npz),
        }
    }
}

#[derive(Debug, Clone)]
struct Settings {
    location: Option<String>,
    post_messages: bool,
    vertices: bool,
    format: ExportFormat,
    body_model: String,
    frame_rate: f64,
    min_frames: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            location: DEFAULT_LOCATION.map(str::to_owned),
            post_messages: DEFAULT_POST_MESSAGES,
            vertices: DEFAULT_VERTICES,
            format: ExportFormat::Jsonl,
            body_model: DEFAULT_BODY_MODEL.to_owned(),
            frame_rate: DEFAULT_FRAME_RATE,
            min_frames: DEFAULT_MIN_FRAMES,
        }
    }
}

/// The per-track motion of a stream, written at its end.
#[derive(Debug)]
struct Takes {
    format: ikol_export::Format,
    /// Location pattern (`%t` = track id).
    pattern: String,
    model: Arc<ikol_body::BodyModel>,
    /// Surface markers for TRC (BlazePose's 33 landmarks on the mesh).
    markers: Vec<Marker>,
    tracks: BTreeMap<u64, Vec<TrackSample>>,
    /// The stream's frame rate from the caps.
    fps: Option<f64>,
    frame_rate: Option<f64>,
    min_frames: usize,
    /// Index of the next buffer.
    frame: u64,
    /// Files were written (at EOS): not again at stop.
    written: bool,
}

/// The file of track `id`: `%t` replaced, or `-<id>` inserted before the extension.
fn take_path(pattern: &str, id: u64) -> PathBuf {
    if pattern.contains("%t") {
        return PathBuf::from(pattern.replace("%t", &id.to_string()));
    }
    let p = std::path::Path::new(pattern);
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match p.extension() {
        Some(e) => format!("{stem}-{id}.{}", e.to_string_lossy()),
        None => format!("{stem}-{id}"),
    };
    p.with_file_name(name)
}

/// Where the lines go.
#[derive(Debug)]
enum Output {
    Stdout(BufWriter<Stdout>),
    File(BufWriter<File>),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::File(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File(w) => w.flush(),
        }
    }
}

#[derive(Debug)]
enum State {
    Lines(Lines),
    Takes(Box<Takes>),
}

#[derive(Debug)]
struct Lines {
    out: Output,
    /// The destination as error messages name it: `` `path` `` or `stdout`.
    name: String,
    /// Index of the next buffer.
    frame: u64,
    /// A write failed (and was reported): nothing more is written.
    failed: bool,
}

impl Lines {
    fn flush(&mut self) -> Result<(), String> {
        if self.failed {
            return Ok(());
        }
        self.out
            .flush()
            .map_err(|e| format!("ikolexport: cannot write to {}: {e}", self.name))
    }
}

/// Why a frame was not written: a flow return to give as is, or an error to post first.
#[derive(Debug)]
enum Failure {
    Flow(gst::FlowError),
    Report(String),
}

#[derive(Debug, Default)]
pub struct IkolExport {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl IkolExport {
    /// Flushes the output; an error is returned as the message to post (after the lock is gone).
    fn flush(&self) -> Result<(), String> {
        let mut guard = common::lock(&self.state);
        match guard.as_mut() {
            Some(State::Lines(l)) => l.flush(),
            _ => Ok(()),
        }
    }

    /// Writes the line of one frame; returns (frame index, people, line).
    fn write_frame(
        &self,
        m: &meta::FrameMeta,
        pts_ns: Option<u64>,
        vertices: bool,
    ) -> Result<(u64, usize, String), Failure> {
        let mut guard = common::lock(&self.state);
        let Some(State::Lines(state)) = guard.as_mut() else {
            return Err(Failure::Flow(gst::FlowError::Flushing));
        };
        if state.failed {
            return Err(Failure::Flow(gst::FlowError::Error));
        }
        let frame = state.frame;
        state.frame += 1;
        let result = m.to_result(frame, pts_ns, vertices);
        let line = serde_json::to_string(&result).map_err(|e| {
            Failure::Report(format!(
                "ikolexport: frame {frame}: cannot encode JSON: {e}"
            ))
        })?;
        // One flush per line: readers can follow the file live, and a full disk is reported on
        // the frame that hit it.
        if let Err(e) = writeln!(state.out, "{line}").and_then(|()| state.out.flush()) {
            state.failed = true;
            return Err(Failure::Report(format!(
                "ikolexport: cannot write to {}: {e}",
                state.name
            )));
        }
        Ok((frame, result.people.len(), line))
    }
}

#[glib::object_subclass]
impl ObjectSubclass for IkolExport {
    const NAME: &'static str = "GstIkolExport";
    type Type = super::IkolExport;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for IkolExport {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb(
                        "File to write to (created or truncated). jsonl: unset = stdout; motion \
                         formats: required, `%t` = track id (else -<id> before the extension)",
                    )
                    .default_value(DEFAULT_LOCATION)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb(
                        "Also post each frame's line on the bus as an element message \
                         `ikol-frame` (fields frame, pts, people, json)",
                    )
                    .default_value(DEFAULT_POST_MESSAGES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("vertices")
                    .nick("Vertices")
                    .blurb("Include the posed mesh vertices (camera metres) of each person")
                    .default_value(DEFAULT_VERTICES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("format", ExportFormat::Jsonl)
                    .nick("Format")
                    .blurb(
                        "jsonl: a JSON line per frame; bvh, glb, trc, npz: a motion file per \
                         track, written at end of stream",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("body-model")
                    .nick("Body model")
                    .blurb(
                        "Motion formats: the body model the solver used (default, small, or a \
                         model file): skeleton, mesh and markers",
                    )
                    .default_value(Some(DEFAULT_BODY_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("frame-rate")
                    .nick("Frame rate")
                    .blurb(
                        "Motion formats: frames per second of the files (resampled by \
                         interpolation); 0 = the stream's",
                    )
                    .minimum(0.0)
                    .maximum(1000.0)
                    .default_value(DEFAULT_FRAME_RATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("min-frames")
                    .nick("Minimum frames")
                    .blurb(
                        "Motion formats: tracks with fewer solved frames are not written \
                         (spurious detections)",
                    )
                    .minimum(1)
                    .default_value(DEFAULT_MIN_FRAMES)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = common::lock(&self.settings);
        match pspec.name() {
            "location" => s.location = common::string_value(value).filter(|l| !l.is_empty()),
            "post-messages" => s.post_messages = value.get().unwrap_or(DEFAULT_POST_MESSAGES),
            "vertices" => s.vertices = value.get().unwrap_or(DEFAULT_VERTICES),
            "format" => s.format = value.get().unwrap_or(ExportFormat::Jsonl),
            "body-model" => {
                s.body_model =
                    common::string_value(value).unwrap_or_else(|| DEFAULT_BODY_MODEL.to_owned());
            }
            "frame-rate" => s.frame_rate = value.get().unwrap_or(DEFAULT_FRAME_RATE),
            "min-frames" => s.min_frames = value.get().unwrap_or(DEFAULT_MIN_FRAMES),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "location" => s.location.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "format" => s.format.to_value(),
            "body-model" => s.body_model.to_value(),
            "frame-rate" => s.frame_rate.to_value(),
            "min-frames" => s.min_frames.to_value(),
            _ => s.vertices.to_value(),
        }
    }
}

impl GstObjectImpl for IkolExport {}

impl ElementImpl for IkolExport {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ikol export",
                "Filter/Analyzer/Video",
                "Writes each frame's ikol results (boxes, joints, rotations, shape, translation) \
                 as a JSON line to a file or stdout, optionally as bus messages, or each \
                 track's motion as BVH, glTF (.glb), TRC or NPZ",
                "ikol developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> =
            LazyLock::new(|| common::templates(&common::any_video()));
        T.as_ref()
    }
}

impl BaseTransformImpl for IkolExport {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    // Same caps in and out: pass-through, buffers are only read (never made writable).
    const PASSTHROUGH_ON_SAME_CAPS: bool = true;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = common::lock(&self.settings).clone();
        if let Some(format) = settings.format.motion() {
            let Some(pattern) = settings.location else {
                return Err(gst::error_msg!(
                    gst::ResourceError::NotFound,
                    (
                        "ikolexport: format={} writes a file per track: set location (with %t \
                         for the track id)",
                        format.extension()
                    )
                ));
            };
            let model = common::body_model("ikolexport", &settings.body_model)?;
            let markers = surface_markers(&model).unwrap_or_else(|e| {
                gst::warning!(
                    CAT,
                    imp = self,
                    "no surface markers on this body model: {e}"
                );
                Vec::new()
            });
            gst::debug!(
                CAT,
                imp = self,
                "writing {} per track to {pattern}",
                format.extension()
            );
            *common::lock(&self.state) = Some(State::Takes(Box::new(Takes {
                format,
                pattern,
                model,
                markers,
                tracks: BTreeMap::new(),
                fps: None,
                frame_rate: (settings.frame_rate > 0.0).then_some(settings.frame_rate),
                min_frames: settings.min_frames.max(1) as usize,
                frame: 0,
                written: false,
            })));
            return Ok(());
        }
        let (out, name) = match settings.location {
            None => (
                Output::Stdout(BufWriter::new(std::io::stdout())),
                "stdout".to_owned(),
            ),
            Some(path) => {
                let f = File::create(&path).map_err(|e| {
                    gst::error_msg!(
                        gst::ResourceError::OpenWrite,
                        ("ikolexport: cannot create `{path}`: {e}")
                    )
                })?;
                (Output::File(BufWriter::new(f)), format!("`{path}`"))
            }
        };
        gst::debug!(CAT, imp = self, "writing JSON lines to {name}");
        *common::lock(&self.state) = Some(State::Lines(Lines {
            out,
            name,
            frame: 0,
            failed: false,
        }));
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = common::lock(&self.state).take();
        // Reported, but the element still stops: an application must be able to shut down.
        match state {
            Some(State::Lines(mut l)) => {
                if let Err(msg) = l.flush() {
                    gst::element_imp_error!(self, gst::ResourceError::Write, ("{msg}"));
                }
            }
            // Stopped without end of stream (an error upstream, a state change): what was
            // collected is still written.
            Some(State::Takes(mut t)) if !t.written => self.write_takes(&mut t),
            _ => {}
        }
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let fps = common::frame_rate(incaps).map(|f| f64::from(f.numer()) / f64::from(f.denom()));
        if let Some(State::Takes(t)) = common::lock(&self.state).as_mut() {
            t.fps = fps;
        }
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view() {
            if let Err(msg) = self.flush() {
                gst::element_imp_error!(self, gst::ResourceError::Write, ("{msg}"));
            }
            // Files are complete before EOS goes on, so an application that sees EOS on the
            // bus finds them written.
            let mut guard = common::lock(&self.state);
            if let Some(State::Takes(t)) = guard.as_mut()
                && !t.written
            {
                self.write_takes(t);
            }
        }
        self.parent_sink_event(event)
    }

    fn transform_ip_passthrough(
        &self,
        buf: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.export(buf)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        // Only reached if pass-through is switched off (it is on whenever caps match, which they
        // always do here); the buffer is still only read.
        self.export(buf)
    }
}

impl IkolExport {
    /// Writes (and posts) the results of one buffer.
    fn export(&self, buf: &gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = common::lock(&self.settings).clone();
        let m = meta::require(buf, "ikolexport", "ikolcrop").map_err(|msg| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("{msg}"));
            gst::FlowError::Error
        })?;
        if settings.format.motion().is_some() {
            return self.collect(&m);
        }
        let pts_ns = buf.pts().map(gst::ClockTime::nseconds);
        let (frame, people, line) = match self.write_frame(&m, pts_ns, settings.vertices) {
            Ok(r) => r,
            Err(Failure::Flow(flow)) => return Err(flow),
            Err(Failure::Report(msg)) => {
                gst::element_imp_error!(self, gst::ResourceError::Write, ("{msg}"));
                return Err(gst::FlowError::Error);
            }
        };
        if settings.post_messages {
            let mut s = gst::Structure::builder(MESSAGE_NAME)
                .field("frame", frame)
                .field("people", u32::try_from(people).unwrap_or(u32::MAX))
                .field("json", line)
                .build();
            if let Some(p) = pts_ns {
                s.set("pts", p);
            }
            let msg = gst::message::Element::builder(s).src(&*self.obj()).build();
            if self.obj().post_message(msg).is_err() {
                gst::debug!(CAT, imp = self, "frame {frame}: no bus to post on");
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

/// BlazePose's 33 landmarks at their anchors on `model`'s surface, as TRC markers.
fn surface_markers(model: &ikol_body::BodyModel) -> Result<Vec<Marker>, String> {
    let anchors = ikol_detect::landmarks_smpl::anchors(model)?;
    Ok(ikol_detect::blazepose::landmarks::LANDMARK_NAMES
        .iter()
        .zip(anchors)
        .map(|(n, anchor)| Marker {
            name: (*n).to_owned(),
            anchor,
        })
        .collect())
}

impl IkolExport {
    /// Keeps the solved bodies of one frame, per track.
    fn collect(&self, m: &meta::FrameMeta) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = common::lock(&self.state);
        let Some(State::Takes(t)) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        let frame = t.frame;
        t.frame += 1;
        let f64s = |v: &[f32; 3]| v.map(f64::from);
        for p in &m.people {
            // Only solved bodies: a person the solver left without one (no pose, a failed fit)
            // is a gap, filled by interpolation when the track goes on.
            let Some(tr) = p.translation.filter(|_| p.theta.len() == SMPL_JOINTS) else {
                continue;
            };
            let samples = t.tracks.entry(p.track_id).or_default();
            if samples.len() >= ikol_export::take::MAX_FRAMES {
                continue;
            }
            samples.push(TrackSample {
                frame,
                theta: p.theta.iter().map(f64s).collect(),
                translation: f64s(&tr),
                beta: p.beta.iter().map(|&b| f64::from(b)).collect(),
            });
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Writes every long-enough track (errors are posted; the others are still written).
    fn write_takes(&self, t: &mut Takes) {
        t.written = true;
        let fps = t.fps.unwrap_or_else(|| {
            gst::warning!(
                CAT,
                imp = self,
                "the caps carry no frame rate: motion files assume {FALLBACK_FPS} fps"
            );
            FALLBACK_FPS
        });
        for (&id, samples) in &t.tracks {
            if samples.len() < t.min_frames {
                gst::info!(
                    CAT,
                    imp = self,
                    "track {id}: {} solved frames, fewer than min-frames={}: not written",
                    samples.len(),
                    t.min_frames
                );
                continue;
            }
            let path = take_path(&t.pattern, id);
            let result = Take::new(id, samples, fps, t.frame_rate, &t.model).and_then(|take| {
                t.format
                    .write(&take, &t.model, &t.markers, &path)
                    .map(|()| take.len())
            });
            match result {
                Ok(frames) => {
                    gst::info!(CAT, imp = self, "track {id}: wrote {}", path.display());
                    let s = gst::Structure::builder(TAKE_MESSAGE)
                        .field("track", id)
                        .field("location", path.display().to_string())
                        .field("format", t.format.extension())
                        .field("frames", u32::try_from(frames).unwrap_or(u32::MAX))
                        .build();
                    let msg = gst::message::Element::builder(s).src(&*self.obj()).build();
                    if self.obj().post_message(msg).is_err() {
                        gst::debug!(CAT, imp = self, "track {id}: no bus to post on");
                    }
                }
                Err(e) => gst::element_imp_error!(
                    self,
                    gst::ResourceError::Write,
                    (
                        "ikolexport: track {id}: cannot write `{}`: {e}",
                        path.display()
                    )
                ),
            }
        }
    }
}
