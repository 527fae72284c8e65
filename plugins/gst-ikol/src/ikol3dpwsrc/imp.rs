// SPDX-License-Identifier: MIT OR Apache-2.0
//! SECTION:element-ikol3dpwsrc
//!
//! Plays the sequences of a 3DPW tree (`location` = the directory holding `imageFiles/` and
//! `sequenceFiles/`): for each sequence of `split` (`sequence` = one name or `all`, in name
//! order) it decodes `imageFiles/<sequence>/image_%05d.jpg` in frame order and outputs RGB
//! frames at 30 fps (caps change when the next sequence's size differs). Each frame carries the
//! `IkolFrameMeta` with the camera intrinsics, `sequence`, `frame-id` and, for every person whose
//! camera pose is valid (`campose_valid`), the ground-truth box (2D keypoints with confidence > 0,
//! enlarged 1.2 times about their centre, as upstream), `track-id` = person index + 1, and the
//! ground truth in camera axes: `gt-theta` (root = R_cam R(pose[0:3])), `gt-beta` (10) and
//! `gt-root` (R_cam (J0 + trans) + t_cam, J0 from `body-model`).
//!
//! With `ground-truth-joints=true` it also fills what `ikolbackbone` would (root-relative 3D
//! joints of `body-model` posed with the ground truth, 29 with leaves when the model has leaf
//! vertices, their projection, twist, leaf rotations, shape, root), so `ikolsolver` can be
//! evaluated alone: `ikol3dpwsrc ! ikolsolver ! ikoleval`.
//!
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 ikol3dpwsrc location=/data/3DPW split=test ground-truth-joints=true \
//!   ! ikolsolver method=ikol ! ikoleval location=eval-out
//! ```
//!
//! Since: 0.1

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use gst_video::VideoFormat;
use ikol_body::BodyModel;
use ikol_eval::pw3d::{self, FRAME_RATE, PersonTruth, Sequence, person_truth};

use crate::common;
use crate::meta::{self, FrameMeta, Person};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "ikol3dpwsrc",
        gst::DebugColorFlags::empty(),
        Some("ikol 3DPW source"),
    )
});

const STAGE: &str = "ikol3dpwsrc";
const DEFAULT_SPLIT: &str = "test";
const DEFAULT_SEQUENCE: &str = "all";
const DEFAULT_BODY_MODEL: &str = "default";
const DEFAULT_GT_JOINTS: bool = false;

#[derive(Debug, Clone)]
struct Settings {
    location: Option<String>,
    split: String,
    sequence: String,
    body_model: String,
    ground_truth_joints: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            location: None,
            split: DEFAULT_SPLIT.into(),
            sequence: DEFAULT_SEQUENCE.into(),
            body_model: DEFAULT_BODY_MODEL.into(),
            ground_truth_joints: DEFAULT_GT_JOINTS,
        }
    }
}

#[derive(Debug)]
struct State {
    root: PathBuf,
    files: Vec<PathBuf>,
    next_file: usize,
    seq: Option<Sequence>,
    frame_in_seq: usize,
    /// Frames output so far (timestamps count on across sequences).
    emitted: u64,
    model: Arc<BodyModel>,
    oracle: bool,
    /// Size of the negotiated caps.
    size: Option<(u32, u32)>,
}

#[derive(Debug, Default)]
pub struct Ikol3dpwSrc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Frames of all selected sequences (duration queries), 0 before `start`.
    total_frames: AtomicU64,
}

fn caps_for(w: u32, h: u32) -> gst::Caps {
    gst_video::VideoCapsBuilder::new()
        .format(VideoFormat::Rgb)
        .width(w as i32)
        .height(h as i32)
        .framerate(gst::Fraction::new(FRAME_RATE as i32, 1))
        .build()
}

fn frame_time(n: u64) -> gst::ClockTime {
    gst::ClockTime::SECOND
        .mul_div_floor(n, u64::from(FRAME_RATE))
        .unwrap_or(gst::ClockTime::ZERO)
}

/// Frames of a sequence file as its image folder holds them (for the duration query).
fn count_frames(root: &Path, file: &Path) -> u64 {
    let Some(name) = file.file_stem() else {
        return 0;
    };
    std::fs::read_dir(root.join("imageFiles").join(name)).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
            .count() as u64
    })
}

impl Ikol3dpwSrc {
    fn fail(&self, msg: String) -> gst::FlowError {
        gst::element_imp_error!(self, gst::ResourceError::Read, ("{msg}"));
        gst::FlowError::Error
    }

    /// The people of frame `i` of `seq`, and how many valid ones had no box.
    fn people(seq: &Sequence, i: usize, state: &State) -> Result<(Vec<Person>, u32), String> {
        let model = &state.model;
        let mut out = Vec::new();
        let mut dropped = 0;
        for p in 0..seq.people.len() {
            // Upstream evaluates only frames where the person's camera pose is valid.
            if !seq.people[p].valid[i] {
                continue;
            }
            let Some(bbox) = seq.bbox(p, i) else {
                dropped += 1;
                continue;
            };
            let gt = seq.camera_pose(p, i);
            let PersonTruth { beta, rest, truth } = person_truth(model, &gt.theta, &gt.betas)
                .map_err(|e| format!("{STAGE}: {}: person {p}: {e}", seq.path.display()))?;
            let root = seq.root_in_camera(p, i, &rest[0]);
            let mut person = Person::new(p as u64 + 1, bbox, 1.0);
            person.gt_theta = gt.theta.iter().map(|t| t.map(|x| x as f32)).collect();
            person.gt_beta = gt.betas.iter().map(|&b| b as f32).collect();
            person.gt_root = Some([root.x as f32, root.y as f32, root.z as f32]);
            if state.oracle {
                person.joints_3d = truth
                    .joints
                    .iter()
                    .map(|j| [j.x as f32, j.y as f32, j.z as f32])
                    .collect();
                // A joint behind the camera (never in valid 3DPW frames) has no pixel: NaN.
                person.joints_2d = truth
                    .joints
                    .iter()
                    .map(|j| {
                        seq.intrinsics
                            .project(&(root + j))
                            .map_or([f32::NAN; 2], |p| p.map(|x| x as f32))
                    })
                    .collect();
                person.confidence = vec![1.0; truth.joints.len()];
                person.twist = truth
                    .twist
                    .iter()
                    .map(|t| [t[0] as f32, t[1] as f32])
                    .collect();
                // The leaf joints' rotations are part of the pose whatever the model's leaf
                // vertices (IKOL-24 takes them as given).
                person.leaf = truth
                    .leaf_rotations
                    .iter()
                    .map(|q| q.map(|x| x as f32).into())
                    .collect();
                person.beta = beta.iter().map(|&b| b as f32).collect();
                person.root = person.gt_root;
            }
            out.push(person);
        }
        Ok((out, dropped))
    }

    /// The next frame: its meta, image, index and whether caps change; moves on to the next
    /// sequence file when one is done. `Err(None)` is the end of the stream, `Err(Some(msg))` an
    /// error to post (the caller posts it after the state lock is gone).
    fn next_frame(&self) -> Result<Frame, Option<String>> {
        let mut guard = common::lock(&self.state);
        let Some(state) = guard.as_mut() else {
            return Err(Some(format!("{STAGE}: not started")));
        };
        let mut first = false;
        while state
            .seq
            .as_ref()
            .is_none_or(|s| state.frame_in_seq >= s.num_frames())
        {
            let Some(file) = state.files.get(state.next_file).cloned() else {
                return Err(None);
            };
            state.next_file += 1;
            state.frame_in_seq = 0;
            first = true;
            let seq = Sequence::load(&file).map_err(|e| Some(format!("{STAGE}: {e}")))?;
            gst::info!(
                CAT,
                imp = self,
                "sequence {} ({} frames, {} people)",
                seq.name,
                seq.num_frames(),
                seq.people.len()
            );
            state.seq = Some(seq);
        }
        let i = state.frame_in_seq;
        state.frame_in_seq += 1;
        let Some(seq) = state.seq.as_ref() else {
            return Err(None);
        };
        let path = seq.image_path(&state.root, i);
        let image =
            ikol_render::image::read_jpeg(&path).map_err(|e| Some(format!("{STAGE}: {e}")))?;
        let (people, gt_dropped) = Self::people(seq, i, state).map_err(Some)?;
        let mut stages = vec![STAGE.to_owned()];
        if state.oracle {
            stages.push(meta::GROUND_TRUTH_JOINTS.to_owned());
        }
        let meta = FrameMeta {
            stages,
            intrinsics: Some(seq.intrinsics),
            people,
            sequence: Some(seq.name.clone()),
            frame_id: Some(seq.img_frame_ids[i]),
            gt_dropped,
            ..Default::default()
        };
        let n = state.emitted;
        state.emitted += 1;
        let size = (image.width, image.height);
        let new_caps = state.size != Some(size);
        state.size = Some(size);
        Ok(Frame {
            meta,
            image,
            n,
            new_caps,
            first,
        })
    }
}

/// One frame ready to be output.
struct Frame {
    meta: FrameMeta,
    image: ikol_render::image::RgbImage,
    n: u64,
    new_caps: bool,
    /// The first frame of a sequence (marked DISCONT).
    first: bool,
}

#[glib::object_subclass]
impl ObjectSubclass for Ikol3dpwSrc {
    const NAME: &'static str = "GstIkol3dpwSrc";
    type Type = super::Ikol3dpwSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for Ikol3dpwSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb("3DPW root directory (holding imageFiles/ and sequenceFiles/)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("split")
                    .nick("Split")
                    .blurb("train, validation or test")
                    .default_value(Some(DEFAULT_SPLIT))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("sequence")
                    .nick("Sequence")
                    .blurb("One sequence name (e.g. downtown_walking_00), several separated by commas, or `all`")
                    .default_value(Some(DEFAULT_SEQUENCE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("body-model")
                    .nick("Body model")
                    .blurb(
                        "Model for the ground-truth root joint and joints: `default`, `small` or \
                         a file (.safetensors, SMPL .pkl/.npz)",
                    )
                    .default_value(Some(DEFAULT_BODY_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("ground-truth-joints")
                    .nick("Ground-truth joints")
                    .blurb(
                        "Also fill the backbone's fields (3D/2D joints, twist, leaf rotations, \
                         shape, root) from the ground truth, to evaluate the solver alone",
                    )
                    .default_value(DEFAULT_GT_JOINTS)
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
            "split" => {
                s.split = common::string_value(value).unwrap_or_else(|| DEFAULT_SPLIT.into())
            }
            "sequence" => {
                s.sequence = common::string_value(value).unwrap_or_else(|| DEFAULT_SEQUENCE.into())
            }
            "body-model" => {
                s.body_model =
                    common::string_value(value).unwrap_or_else(|| DEFAULT_BODY_MODEL.into())
            }
            "ground-truth-joints" => {
                s.ground_truth_joints = value.get().unwrap_or(DEFAULT_GT_JOINTS)
            }
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "location" => s.location.to_value(),
            "split" => s.split.to_value(),
            "sequence" => s.sequence.to_value(),
            "body-model" => s.body_model.to_value(),
            _ => s.ground_truth_joints.to_value(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_format(gst::Format::Time);
        obj.set_live(false);
    }
}

impl GstObjectImpl for Ikol3dpwSrc {}

impl ElementImpl for Ikol3dpwSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ikol 3DPW source",
                "Source/Video",
                "Plays 3DPW sequences (JPEG frames, 30 fps) with ground truth, intrinsics and \
                 ground-truth boxes in the ikol frame meta",
                "ikol developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format(VideoFormat::Rgb)
                .build();
            gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &caps,
            )
            .map(|t| vec![t])
            .unwrap_or_default()
        });
        T.as_ref()
    }
}

impl BaseSrcImpl for Ikol3dpwSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = common::lock(&self.settings).clone();
        let Some(location) = s.location else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("{STAGE}: no `location` set (the 3DPW root holding imageFiles/ and sequenceFiles/)")
            ));
        };
        let root = PathBuf::from(&location);
        let files = pw3d::sequence_files(&root, &s.split, &s.sequence)
            .map_err(|e| gst::error_msg!(gst::ResourceError::NotFound, ("{STAGE}: {e}")))?;
        let model = common::body_model(STAGE, &s.body_model)?;
        let total_frames: u64 = files.iter().map(|f| count_frames(&root, f)).sum();
        self.total_frames.store(total_frames, Ordering::Relaxed);
        gst::info!(
            CAT,
            imp = self,
            "{} sequences, {total_frames} frames under {location}",
            files.len()
        );
        *common::lock(&self.state) = Some(State {
            root,
            files,
            next_file: 0,
            seq: None,
            frame_in_seq: 0,
            emitted: 0,
            model,
            oracle: s.ground_truth_joints,
            size: None,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *common::lock(&self.state) = None;
        self.total_frames.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        // Caps are set in `create`, from each sequence's first frame.
        Ok(())
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        // Answered without the state lock, which `create` holds while loading a sequence.
        if let gst::QueryViewMut::Duration(q) = query.view_mut()
            && q.format() == gst::Format::Time
        {
            let total = self.total_frames.load(Ordering::Relaxed);
            if total > 0 {
                q.set(frame_time(total));
                return true;
            }
        }
        BaseSrcImplExt::parent_query(self, query)
    }
}

impl PushSrcImpl for Ikol3dpwSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let f = match self.next_frame() {
            Ok(f) => f,
            Err(None) => return Err(gst::FlowError::Eos),
            Err(Some(msg)) => return Err(self.fail(msg)),
        };
        let (w, h) = (f.image.width, f.image.height);
        if f.new_caps {
            let caps = caps_for(w, h);
            self.obj()
                .set_caps(&caps)
                .map_err(|e| self.fail(format!("{STAGE}: cannot set caps {caps}: {e}")))?;
        }
        let info = gst_video::VideoInfo::builder(VideoFormat::Rgb, w, h)
            .build()
            .map_err(|e| self.fail(format!("{STAGE}: {w}x{h}: {e}")))?;
        let stride = info.stride()[0] as usize;
        let row = 3 * w as usize;
        let mut buffer = gst::Buffer::with_size(info.size())
            .map_err(|e| self.fail(format!("{STAGE}: buffer of {} bytes: {e}", info.size())))?;
        {
            let b = buffer.get_mut().ok_or(gst::FlowError::Error)?;
            let n = f.n;
            b.set_pts(frame_time(n));
            b.set_duration(frame_time(n + 1) - frame_time(n));
            b.set_offset(n);
            if f.first {
                // A new sequence: downstream trackers must not carry tracks over.
                b.set_flags(gst::BufferFlags::DISCONT);
            }
            {
                let mut map = b.map_writable().map_err(|_| gst::FlowError::Error)?;
                for (dst, src) in map.chunks_mut(stride).zip(f.image.pixels.chunks_exact(row)) {
                    dst[..row].copy_from_slice(src);
                }
            }
            f.meta
                .write(b)
                .map_err(|e| self.fail(format!("{STAGE}: {e}")))?;
        }
        Ok(CreateSuccess::NewBuffer(buffer))
    }
}
