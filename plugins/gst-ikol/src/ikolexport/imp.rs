// SPDX-License-Identifier: MIT OR Apache-2.0
//! SECTION:element-ikolexport
//!
//! Writes the `IkolFrameMeta` of every frame as one JSON object per line (JSON Lines) to
//! `location`, or to stdout when `location` is unset. Each line is an `ikol_types::FrameResult`:
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
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 filesrc location=walk.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB \
//!   ! ikolcrop ! ikolbackbone checkpoint=ikol.safetensors ! ikolsolver \
//!   ! ikolexport location=walk.jsonl ! fakesink
//! ```
//!
//! Since: 0.1

use std::fs::File;
use std::io::{BufWriter, Stdout, Write};
use std::sync::{LazyLock, Mutex};

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
        Some("ikol JSON-lines export"),
    )
});

const DEFAULT_LOCATION: Option<&str> = None;
const DEFAULT_POST_MESSAGES: bool = false;
const DEFAULT_VERTICES: bool = false;
/// Name of the element messages posted with `post-messages=true`.
const MESSAGE_NAME: &str = "ikol-frame";

#[derive(Debug, Clone)]
struct Settings {
    location: Option<String>,
    post_messages: bool,
    vertices: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            location: DEFAULT_LOCATION.map(str::to_owned),
            post_messages: DEFAULT_POST_MESSAGES,
            vertices: DEFAULT_VERTICES,
        }
    }
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
struct State {
    out: Output,
    /// The destination as error messages name it: `` `path` `` or `stdout`.
    name: String,
    /// Index of the next buffer.
    frame: u64,
    /// A write failed (and was reported): nothing more is written.
    failed: bool,
}

impl State {
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
            Some(state) => state.flush(),
            None => Ok(()),
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
        let Some(state) = guard.as_mut() else {
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
                    .blurb("File to write the JSON lines to (created or truncated); unset: stdout")
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
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "location" => s.location.to_value(),
            "post-messages" => s.post_messages.to_value(),
            _ => s.vertices.to_value(),
        }
    }
}

impl GstObjectImpl for IkolExport {}

impl ElementImpl for IkolExport {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ikol JSON export",
                "Filter/Analyzer/Video",
                "Writes each frame's ikol results (boxes, joints, rotations, shape, translation) \
                 as a JSON line to a file or stdout, optionally as bus messages",
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
        let location = common::lock(&self.settings).location.clone();
        let (out, name) = match location {
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
        *common::lock(&self.state) = Some(State {
            out,
            name,
            frame: 0,
            failed: false,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = common::lock(&self.state).take();
        // Reported, but the element still stops: an application must be able to shut down.
        if let Some(Err(msg)) = state.map(|mut s| s.flush()) {
            gst::element_imp_error!(self, gst::ResourceError::Write, ("{msg}"));
        }
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view()
            && let Err(msg) = self.flush()
        {
            gst::element_imp_error!(self, gst::ResourceError::Write, ("{msg}"));
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
