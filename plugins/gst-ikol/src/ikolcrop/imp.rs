// SPDX-License-Identifier: MIT OR Apache-2.0
//! SECTION:element-ikolcrop
//!
//! Decides which people each frame holds and attaches the `IkolFrameMeta` with, per person, the
//! box, the network crop (HybrIK's square box enlarged 1.25x, as a frame-to-crop affine), a
//! stable track id and a score. Boxes come, in this order of precedence (overlapping boxes of a
//! lower source are dropped), from:
//!
//! 1. an `IkolFrameMeta` already on the buffer (e.g. ground-truth boxes of a dataset source);
//!    when all its people have track ids they are used as they are (with any ground truth they
//!    carry) and nothing else is consulted;
//! 2. `GstVideoRegionOfInterestMeta`s on the buffer;
//! 3. the `detector`, when no track is alive; and while people are followed, every
//!    `detect-period` milliseconds of stream time (buffer timestamps; without them, or with
//!    `detect-period=0`, every `detect-interval` frames; `detect-interval=0`: never), on a
//!    copy of the frame in a background thread (`background-search`, the default): its people
//!    join a later frame below tracking, so a followed person keeps the box the tracking gives
//!    and only people not yet followed start tracks, and no frame waits for the search (the
//!    whole frame and its tiles: about 290 ms at 1080 x 1920);
//! 4. tracking: the boxes `ikolbackbone` measured around each person's joints in the previous
//!    frame (sent upstream as a custom event);
//! 5. the `roi` property, when none of the above gave anything.
//!
//! Track ids are kept by intersection-over-union matching; at most `max-people` people per frame.
//! A buffer flagged DISCONT ends all tracks (new ids from there on).
//!
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 videotestsrc num-buffers=10 ! video/x-raw,format=RGB,width=640,height=480 \
//!   ! ikolcrop roi=200,80,240,400 max-people=1 ! ikolexport ! fakesink
//! ```
//!
//! Since: 0.1

use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use ikol_detect::{
    DetectError, Detection, Frame, PersonDetector, Tracker, TrackerConfig, create_detector,
};
use ikol_types::{BBox, BOX_SCALE_MULT, CROP_SIZE, Crop};

use super::CropDetector;
use crate::common;
use crate::meta::{self, FrameMeta, Person};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "ikolcrop",
        gst::DebugColorFlags::empty(),
        Some("ikol person boxes and tracking"),
    )
});

const DEFAULT_MAX_PEOPLE: u32 = 4;
const DEFAULT_DETECT_INTERVAL: u32 = 30;
/// Once a second: the search (the whole frame and its tiles, about 290 ms of CPU at
/// 1080 x 1920) only finds people who walked in, so its rate follows the clock, not the camera's
/// frame rate (30 frames were half a second on a 60 fps clip).
const DEFAULT_DETECT_PERIOD_MS: u32 = 1000;
const DEFAULT_TRACKING: bool = true;
const DEFAULT_BACKGROUND_SEARCH: bool = true;
/// A box of a lower-precedence source overlapping a kept one by more than this is the same person.
const SAME_PERSON_IOU: f64 = 0.5;

#[derive(Debug, Clone)]
struct Settings {
    roi: Vec<BBox>,
    roi_text: String,
    detector: CropDetector,
    max_people: u32,
    detect_interval: u32,
    detect_period_ms: u32,
    tracking: bool,
    background_search: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            roi: Vec::new(),
            roi_text: String::new(),
            detector: CropDetector::default(),
            max_people: DEFAULT_MAX_PEOPLE,
            detect_interval: DEFAULT_DETECT_INTERVAL,
            detect_period_ms: DEFAULT_DETECT_PERIOD_MS,
            tracking: DEFAULT_TRACKING,
            background_search: DEFAULT_BACKGROUND_SEARCH,
        }
    }
}

/// A detector shared by the streaming thread and the background search.
type SharedDetector = Arc<Mutex<Box<dyn PersonDetector>>>;

/// A search running on a copy of a frame; `sequence` is the state's at its start (a discontinuity
/// since then makes its people stale).
#[derive(Debug)]
struct Search {
    sequence: u64,
    handle: JoinHandle<Result<Vec<Detection>, DetectError>>,
}

#[derive(Debug)]
struct State {
    info: Option<gst_video::VideoInfo>,
    detector: Option<SharedDetector>,
    tracker: Tracker,
    frame: u64,
    /// Timestamp of the frame the last search started on (this sequence).
    last_search: Option<gst::ClockTime>,
    /// Counts the stream's discontinuities (DISCONT buffers, flushes, new caps): a search
    /// started before one is of another sequence.
    sequence: u64,
    search: Option<Search>,
}

impl State {
    /// A new sequence: a running search's people are dropped when it finishes.
    fn new_sequence(&mut self) {
        self.sequence += 1;
        self.search = None;
        // the dropped search is replaced at the next followed frame, not a period later
        self.last_search = None;
    }

    /// A discontinuity ends every track; frames count from 1 again.
    fn restart(&mut self) {
        self.tracker.clear();
        self.frame = 0;
        self.new_sequence();
    }
}

/// Whether the periodic search is due on this frame while people are followed: never with
/// `detect-interval=0`; else once `detect-period` of stream time has passed since the last
/// search started (a timestamp that went back, as when a source loops without a flush, counts
/// as due; timestamps that stand still never make it due); where the period is 0 or the buffer
/// has no timestamp, on frames 1, 1 + N, 1 + 2N, ... of `detect-interval`.
fn search_due(settings: &Settings, state: &State, pts: Option<gst::ClockTime>) -> bool {
    if settings.detect_interval == 0 {
        return false;
    }
    match pts {
        Some(pts) if settings.detect_period_ms > 0 => state.last_search.is_none_or(|t| {
            let period = gst::ClockTime::from_mseconds(settings.detect_period_ms.into());
            pts < t || pts - t >= period
        }),
        // Frames count from 1.
        _ => (state.frame - 1).is_multiple_of(u64::from(settings.detect_interval)),
    }
}

#[derive(Debug, Default)]
pub struct IkolCrop {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Boxes from downstream (per track id) received since the last frame.
    feedback: Mutex<Vec<(u64, BBox)>>,
}

/// Adds `cands` to `kept` except those overlapping a kept box (same person from a better source).
fn merge(kept: &mut Vec<Detection>, cands: impl IntoIterator<Item = Detection>) {
    for c in cands {
        if c.bbox.is_valid() && !kept.iter().any(|k| k.bbox.iou(&c.bbox) > SAME_PERSON_IOU) {
            kept.push(c);
        }
    }
}

impl IkolCrop {
    fn fail(&self, msg: String) -> gst::FlowError {
        gst::element_imp_error!(self, gst::StreamError::Failed, ("{msg}"));
        gst::FlowError::Error
    }

    /// The frame as the detector reads it.
    fn image<'b>(
        &self,
        frame: &'b gst_video::VideoFrameRef<&gst::BufferRef>,
        info: &gst_video::VideoInfo,
    ) -> Result<Frame<'b>, gst::FlowError> {
        common::front_end_frame("ikolcrop", frame, info).map_err(|e| self.fail(e))
    }

    /// The detector's people in this frame, now.
    fn detect(
        &self,
        state: &mut State,
        buf: &gst::BufferRef,
    ) -> Result<Vec<Detection>, gst::FlowError> {
        state.last_search = buf.pts();
        let (Some(det), Some(info)) = (state.detector.as_ref(), state.info.as_ref()) else {
            return Ok(Vec::new());
        };
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info)
            .map_err(|_| self.fail("ikolcrop: cannot map the video frame".into()))?;
        let image = self.image(&frame, info)?;
        common::lock(det)
            .detect(&image)
            .map_err(|e| self.fail(format!("ikolcrop: {e}")))
    }

    /// Starts a search of this frame in a background thread (unless one is running, or there
    /// is no detector).
    fn search_in_background(
        &self,
        state: &mut State,
        buf: &gst::BufferRef,
    ) -> Result<(), gst::FlowError> {
        let (Some(det), Some(info)) = (state.detector.as_ref(), state.info.as_ref()) else {
            return Ok(());
        };
        if state.search.is_some() {
            return Ok(());
        }
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info)
            .map_err(|_| self.fail("ikolcrop: cannot map the video frame".into()))?;
        let image = self.image(&frame, info)?.to_owned();
        let det = Arc::clone(det);
        let handle = std::thread::Builder::new()
            .name("ikolcrop-search".into())
            .spawn(move || common::lock(&det).detect(&image.frame()))
            .map_err(|e| self.fail(format!("ikolcrop: cannot start the search thread: {e}")))?;
        state.search = Some(Search {
            sequence: state.sequence,
            handle,
        });
        state.last_search = buf.pts();
        Ok(())
    }

    /// The people of a finished background search of this sequence (none while it runs).
    /// With `wait`, waits for a running one.
    fn searched(&self, state: &mut State, wait: bool) -> Result<Vec<Detection>, gst::FlowError> {
        if !wait
            && !state
                .search
                .as_ref()
                .is_some_and(|s| s.handle.is_finished())
        {
            return Ok(Vec::new());
        }
        let Some(search) = state.search.take() else {
            return Ok(Vec::new());
        };
        let people = search
            .handle
            .join()
            .map_err(|_| self.fail("ikolcrop: the search thread panicked".into()))?
            .map_err(|e| self.fail(format!("ikolcrop: {e}")))?;
        Ok(if search.sequence == state.sequence {
            people
        } else {
            Vec::new()
        })
    }
}

#[glib::object_subclass]
impl ObjectSubclass for IkolCrop {
    const NAME: &'static str = "GstIkolCrop";
    type Type = super::IkolCrop;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for IkolCrop {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("roi")
                    .nick("Regions")
                    .blurb(
                        "Fixed person boxes \"x,y,w,h[;x,y,w,h...]\" in frame pixels, used when \
                            no other source gives boxes (e.g. to start tracking)",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("detector", CropDetector::default())
                    .nick("Detector")
                    .blurb(
                        "Person detector: none (boxes from metas, roi and tracking) or \
                         blazepose (pretrained; `make models` fetches it)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-people")
                    .nick("Max people")
                    .blurb(
                        "At most this many people per frame, highest scores first (0 = no limit)",
                    )
                    .default_value(DEFAULT_MAX_PEOPLE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("detect-interval")
                    .nick("Detect interval")
                    .blurb(
                        "Run the detector every N frames while tracking, where detect-period \
                         is 0 or buffers have no timestamps (0 = only when no track is alive, \
                         whatever detect-period says)",
                    )
                    .default_value(DEFAULT_DETECT_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("detect-period")
                    .nick("Detect period")
                    .blurb(
                        "Run the detector every this many milliseconds of stream time while \
                         tracking (buffer timestamps; 0 = every detect-interval frames; \
                         detect-interval=0 turns the periodic search off)",
                    )
                    .default_value(DEFAULT_DETECT_PERIOD_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("background-search")
                    .nick("Background search")
                    .blurb(
                        "While people are followed, run the periodic detector search on a copy \
                         of the frame in a background thread; its new people join a later frame \
                         (false: the frame waits for the search)",
                    )
                    .default_value(DEFAULT_BACKGROUND_SEARCH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("tracking")
                    .nick("Tracking")
                    .blurb(
                        "Follow people with the boxes ikolbackbone measured in the previous frame",
                    )
                    .default_value(DEFAULT_TRACKING)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = common::lock(&self.settings);
        match pspec.name() {
            "roi" => {
                let text = common::string_value(value).unwrap_or_default();
                // Checked again in start(), where a bad value fails the state change.
                match common::parse_boxes(&text) {
                    Ok(b) => s.roi = b,
                    Err(e) => gst::warning!(CAT, imp = self, "roi: {e}"),
                }
                s.roi_text = text;
            }
            "detector" => s.detector = value.get().unwrap_or_default(),
            "max-people" => s.max_people = value.get().unwrap_or(DEFAULT_MAX_PEOPLE),
            "detect-interval" => s.detect_interval = value.get().unwrap_or(DEFAULT_DETECT_INTERVAL),
            "detect-period" => s.detect_period_ms = value.get().unwrap_or(DEFAULT_DETECT_PERIOD_MS),
            "background-search" => {
                s.background_search = value.get().unwrap_or(DEFAULT_BACKGROUND_SEARCH)
            }
            "tracking" => s.tracking = value.get().unwrap_or(DEFAULT_TRACKING),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "roi" => s.roi_text.to_value(),
            "detector" => s.detector.to_value(),
            "max-people" => s.max_people.to_value(),
            "detect-interval" => s.detect_interval.to_value(),
            "detect-period" => s.detect_period_ms.to_value(),
            "background-search" => s.background_search.to_value(),
            _ => s.tracking.to_value(),
        }
    }
}

impl GstObjectImpl for IkolCrop {}

impl ElementImpl for IkolCrop {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ikol person crop",
                "Filter/Analyzer/Video",
                "Finds and tracks the people to process (metas, detector, tracking, roi) and \
                 attaches their boxes and crops as IkolFrameMeta",
                "ikol developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> =
            LazyLock::new(|| common::templates(&common::video_formats(&common::FRONT_END_FORMATS)));
        T.as_ref()
    }
}

impl BaseTransformImpl for IkolCrop {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = common::lock(&self.settings).clone();
        common::parse_boxes(&s.roi_text)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("ikolcrop: roi: {e}")))?;
        let detector = create_detector(s.detector.name())
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("ikolcrop: {e}")))?;
        let tracker = Tracker::new(TrackerConfig {
            max_people: s.max_people as usize,
            ..TrackerConfig::default()
        });
        *common::lock(&self.state) = Some(State {
            info: None,
            detector: detector.map(|d| Arc::new(Mutex::new(d))),
            tracker,
            frame: 0,
            last_search: None,
            sequence: 0,
            search: None,
        });
        common::lock(&self.feedback).clear();
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *common::lock(&self.state) = None;
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "ikolcrop: cannot parse caps {incaps}"))?;
        if let Some(s) = common::lock(&self.state).as_mut() {
            // A search running on a frame of other caps would give boxes in its coordinates.
            if s.info.as_ref() != Some(&info) {
                s.new_sequence();
            }
            s.info = Some(info);
        }
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        // A flush (a flushing seek) is a discontinuity even when the next buffer is not marked
        // as one: nothing is followed across it, and a search started before it is dropped.
        if let gst::EventView::FlushStop(_) = event.view() {
            if let Some(s) = common::lock(&self.state).as_mut() {
                s.restart();
            }
            common::lock(&self.feedback).clear();
        }
        self.parent_sink_event(event)
    }

    fn src_event(&self, event: gst::Event) -> bool {
        if let Some(tracks) = meta::parse_feedback(&event) {
            let mut fb = common::lock(&self.feedback);
            for (id, b) in tracks {
                fb.retain(|t| t.0 != id);
                fb.push((id, b));
            }
            return true;
        }
        self.parent_src_event(event)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = common::lock(&self.settings).clone();
        let mut upstream = FrameMeta::read(buf).map_err(|e| self.fail(format!("ikolcrop: {e}")))?;
        let mut feedback = std::mem::take(&mut *common::lock(&self.feedback));

        let mut guard = common::lock(&self.state);
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        // A discontinuity (a new sequence, a reconnected camera) ends every track: nothing is
        // followed across it and the detector runs at once; ids keep counting up.
        if buf.flags().contains(gst::BufferFlags::DISCONT) && state.frame > 0 {
            state.restart();
            feedback.clear();
        }
        state.frame += 1;

        let mut cands: Vec<Detection> = Vec::new();
        // 1. People already in the meta; their ids are kept when they all have one.
        let given: Vec<Person> = upstream
            .as_mut()
            .map(|m| std::mem::take(&mut m.people))
            .unwrap_or_default();
        let keep_ids = !given.is_empty() && given.iter().all(|p| p.track_id != 0);
        // People that arrive with ids (a dataset source's ground truth) are authoritative: kept
        // whole, with their ground-truth fields, even when their boxes overlap.
        if keep_ids {
            let mut g = given;
            if settings.max_people > 0 {
                g.sort_by(|a, b| b.score.total_cmp(&a.score));
                g.truncate(settings.max_people as usize);
            }
            drop(guard);
            return self.attach(buf, upstream, g);
        }
        merge(
            &mut cands,
            given.iter().map(|p| Detection {
                bbox: p.bbox,
                score: p.score,
            }),
        );
        // 2. Region-of-interest metas.
        merge(
            &mut cands,
            buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                .map(|r| {
                    let (x, y, w, h) = r.rect();
                    Detection {
                        bbox: BBox {
                            x: x.into(),
                            y: y.into(),
                            w: w.into(),
                            h: h.into(),
                        },
                        score: 1.0,
                    }
                }),
        );
        // 3. The detector, when nothing is tracked or at the period (interval).
        let tracked = settings.tracking && !feedback.is_empty();
        let due = search_due(&settings, state, buf.pts());
        let mut searched = Vec::new();
        if !tracked {
            // A search still running holds the detector: rather than wait for it and then
            // search again, take its people (a few frames old) when it found any.
            let pending = self.searched(state, true)?;
            let d = if pending.is_empty() {
                self.detect(state, buf)?
            } else {
                pending
            };
            merge(&mut cands, d);
        } else {
            // Collected first, so that a finished search does not keep a due one from starting.
            searched = self.searched(state, false)?;
            if due && settings.background_search {
                self.search_in_background(state, buf)?;
            } else if due {
                let d = self.detect(state, buf)?;
                merge(&mut cands, d);
            }
        }
        // 4. Tracking from the previous frame's joints.
        if settings.tracking {
            for (id, b) in &feedback {
                state.tracker.refine(*id, *b);
            }
            let score = |id: u64| {
                state
                    .tracker
                    .tracks()
                    .iter()
                    .find(|t| t.id == id)
                    .map_or(0.5, |t| t.score)
            };
            merge(
                &mut cands,
                feedback
                    .iter()
                    .map(|(id, b)| Detection {
                        bbox: *b,
                        score: score(*id),
                    })
                    .collect::<Vec<_>>(),
            );
        }
        // 3b. A background search's people (from frames ago): below tracking, and only people
        // nobody follows: a box that overlaps a kept one as much as the tracker needs to
        // continue a track is taken for that person seen earlier; and none beyond max-people,
        // so that an old box cannot push a current one out.
        for c in searched {
            let room = settings.max_people == 0 || cands.len() < settings.max_people as usize;
            if room
                && c.bbox.is_valid()
                && !cands
                    .iter()
                    .any(|k| k.bbox.iou(&c.bbox) >= state.tracker.config.iou_threshold)
            {
                cands.push(c);
            }
        }
        // 5. Fixed regions.
        if cands.is_empty() {
            merge(
                &mut cands,
                settings.roi.iter().map(|b| Detection {
                    bbox: *b,
                    score: 1.0,
                }),
            );
        }

        let people: Vec<Person> = state
            .tracker
            .update(&cands)
            .into_iter()
            .map(|t| Person::new(t.id, t.bbox, t.score))
            .collect();
        drop(guard);
        self.attach(buf, upstream, people)
    }
}

impl IkolCrop {
    /// Writes the meta with `people` and their crop affines.
    fn attach(
        &self,
        buf: &mut gst::BufferRef,
        upstream: Option<FrameMeta>,
        people: Vec<Person>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        gst::trace!(CAT, imp = self, "{} people", people.len());
        let mut m = upstream.unwrap_or_default();
        m.people = people
            .into_iter()
            .map(|mut p| {
                p.crop = Some(Crop::from_box(&p.bbox, BOX_SCALE_MULT, CROP_SIZE).affine());
                p
            })
            .collect();
        m.mark("ikolcrop");
        m.write(buf)
            .map_err(|e| self.fail(format!("ikolcrop: {e}")))?;
        Ok(gst::FlowSuccess::Ok)
    }
}
