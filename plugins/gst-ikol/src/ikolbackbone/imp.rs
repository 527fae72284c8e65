// SPDX-License-Identifier: MIT OR Apache-2.0
//! SECTION:element-ikolbackbone
//!
//! Runs the heatmap network (ResNet + deconvolution head + FC branch, see ikol-backbone) on the
//! crop of every person `ikolcrop` found, as one batch, and writes to the `IkolFrameMeta` per
//! person: joints as uvd, in frame pixels and root-relative in camera metres, the root position,
//! twist (cos, sin) of joints 1..23, shape and (ikol24) the 5 leaf rotations. The camera is the
//! meta's intrinsics when a source set them, else `focal-length` (pixels) or `fov` (horizontal
//! degrees). After each frame it sends upstream, per track, the box around the joints it found,
//! so `ikolcrop` follows people.
//!
//! `checkpoint` takes our safetensors (written by ikol-train) or an upstream HybrIK/IKOL `.pth`.
//!
//! With `model=blazepose` the pretrained BlazePose landmark model (mediapipe 0.10.21, fetched by
//! `make models` into `$IKOL_MODELS`) runs instead, in the square region of each box (as
//! `ikolcrop detector=blazepose` gives them); its 33 landmarks become SMPL-24 joints by a map
//! fitted on `body-model` (see ikol-detect's `landmarks_smpl`), the shape is fitted to the bone
//! lengths, confidences come from landmark visibility, and twist is left at zero (`ikolsolver
//! method=fit` observes it from the landmarks themselves, which are passed on). The world
//! landmarks are turned from the crop's view into camera axes first (the network sees each
//! person as if the camera looked straight at them; `crop_to_camera`, which relies on the
//! intrinsics above). The box sent upstream is then mediapipe's next region of interest from
//! the tracking landmarks.
//!
//! With `model=hkmr` (or `hmr`) a body regressor from `checkpoint` (our safetensors written by
//! `ikol-train` for an HKMR or flat regressor; see ikol-backbone's `regressor`) predicts the
//! body itself: the 24 local rotations, the shape and a weak-perspective camera, turned into the
//! root's camera position. The element writes theta, beta and the translation, as a solver
//! would, and the body's joints (posed `body-model`) root-relative in metres and projected to
//! pixels, so `ikolmesher` follows directly (or `ikolsolver method=fit` refines the body against
//! its own joints). A person whose camera is degenerate is dropped.
//!
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 filesrc location=walk.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB \
//!   ! ikolcrop roi=200,80,240,400 ! ikolbackbone checkpoint=ikol.safetensors variant=ikol24 fov=60 \
//!   ! ikolexport location=joints.jsonl ! fakesink
//! ```
//!
//! Since: 0.1

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::VideoFormat;
use ikol_backbone::preprocess::RgbFrame;
use ikol_backbone::{
    Backbone, DeviceChoice, DirectRegressor, PersonBox, RegressorKind, open_device,
};
use ikol_body::BodyModel;
use ikol_body::nalgebra::Vector3;
use ikol_types::joints::SMPL24_PARENTS;
use ikol_types::rotation::axis_angle_to_matrix;
use ikol_types::{BBox, Intrinsics, camera::DEFAULT_HFOV_DEG};
use rayon::prelude::*;

use super::{BackboneDevice, BackboneModel, BackboneVariant, FlipTest};
use crate::common;
use crate::meta::{self, FrameMeta, Person};
use ikol_detect::Frame;
use ikol_detect::blazepose::RotatedRect;
use ikol_detect::blazepose_model::{
    AlternatingFlip, BlazePoseLandmarker, BodyFromLandmarks, Pass, crop_to_camera, models_dir,
    roi_box,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "ikolbackbone",
        gst::DebugColorFlags::empty(),
        Some("ikol heatmap backbone"),
    )
});

const DEFAULT_DEVICE_INDEX: u32 = 0;
const DEFAULT_FLIP_TEST: FlipTest = FlipTest::Off;
const DEFAULT_FOCAL: f64 = 0.0;
/// The box sent back to `ikolcrop` is the joints' extent enlarged by this factor (the joints
/// sit inside the body outline: head top and feet extend beyond them).
const FEEDBACK_BOX_SCALE: f64 = 1.2;
/// A person's box this close to the hull of the region we tracked them with is that region.
const TRACKED_IOU: f64 = 0.9;

const DEFAULT_BODY_MODEL: &str = "default";

#[derive(Debug, Clone)]
struct Settings {
    model: BackboneModel,
    body_model: String,
    checkpoint: Option<PathBuf>,
    variant: BackboneVariant,
    device: BackboneDevice,
    device_index: u32,
    flip_test: FlipTest,
    focal_length: f64,
    fov: f64,
    /// Principal point "cx,cy" in pixels; empty: the frame centre (checked at start).
    principal_point: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: BackboneModel::default(),
            body_model: DEFAULT_BODY_MODEL.into(),
            checkpoint: None,
            variant: BackboneVariant::default(),
            device: BackboneDevice::default(),
            device_index: DEFAULT_DEVICE_INDEX,
            flip_test: DEFAULT_FLIP_TEST,
            focal_length: DEFAULT_FOCAL,
            fov: DEFAULT_HFOV_DEG,
            principal_point: String::new(),
        }
    }
}

/// The joint network, boxed once in [`State`]: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Net {
    Heatmap(Backbone),
    BlazePose {
        landmarker: BlazePoseLandmarker,
        body: BodyFromLandmarks,
        /// Per track, the rotated region of interest the last frame's landmarks gave (the box
        /// sent upstream is its axis-aligned hull, so the rotation is kept here).
        rois: HashMap<u64, RotatedRect>,
        /// `flip-test=alternate`: the passes in turn and each track's previous pose.
        alternate: Option<AlternatingFlip>,
    },
    /// A body regressor (HKMR or flat) and the body model its joints are posed on.
    Direct {
        net: DirectRegressor,
        body: std::sync::Arc<BodyModel>,
    },
}

#[derive(Debug)]
struct State {
    net: Box<Net>,
    info: Option<gst_video::VideoInfo>,
    principal_point: Option<[f64; 2]>,
}

#[derive(Debug, Default)]
pub struct IkolBackbone {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl IkolBackbone {
    fn fail(&self, msg: String) -> gst::FlowError {
        gst::element_imp_error!(self, gst::StreamError::Failed, ("{msg}"));
        gst::FlowError::Error
    }

    /// The heatmap network on every person's crop, as one batch; returns the tracking boxes.
    fn heatmap(
        &self,
        net: &Backbone,
        m: &mut FrameMeta,
        data: &[u8],
        info: &gst_video::VideoInfo,
        stride: usize,
        k: &Intrinsics,
    ) -> Result<Vec<(u64, BBox)>, gst::FlowError> {
        let rgb = RgbFrame::new(data, info.width(), info.height(), stride)
            .map_err(|e| self.fail(format!("ikolbackbone: {e}")))?;
        let boxes: Vec<PersonBox> = m
            .people
            .iter()
            .map(|p| PersonBox {
                bbox: p.bbox,
                root_depth: None,
            })
            .collect();
        let estimates = net
            .estimate(&rgb, &boxes, k)
            .map_err(|e| self.fail(format!("ikolbackbone: {e}")))?;
        let mut feedback = Vec::with_capacity(estimates.len());
        for (p, e) in m.people.iter_mut().zip(&estimates) {
            p.joints_uvd = e.uvd.clone();
            p.joints_3d = e.xyz_m.iter().map(|v| v.map(|x| x as f32)).collect();
            p.joints_2d = e.joints_px.iter().map(|v| v.map(|x| x as f32)).collect();
            p.root = Some(e.root_m.map(|x| x as f32));
            p.twist = e.phi.clone();
            p.beta = e.beta.clone();
            p.leaf = e.leaf.clone().unwrap_or_default();
            if let Some(b) = BBox::around_points(e.joints_px.iter().copied(), FEEDBACK_BOX_SCALE)
                .filter(BBox::is_valid)
            {
                feedback.push((p.track_id, b));
            }
        }
        Ok(feedback)
    }

    /// The body regressor on every person's crop, as one batch: theta, beta, translation and
    /// the posed body's joints; returns the tracking boxes (around the projected joints).
    fn direct(
        &self,
        net: &DirectRegressor,
        body: &BodyModel,
        m: &mut FrameMeta,
        rgb: &RgbFrame<'_>,
        k: &Intrinsics,
        frame: (u32, u32),
    ) -> Result<Vec<(u64, BBox)>, gst::FlowError> {
        let boxes: Vec<PersonBox> = m
            .people
            .iter()
            .map(|p| PersonBox {
                bbox: p.bbox,
                root_depth: None,
            })
            .collect();
        let estimates = net
            .estimate(rgb, &boxes, k)
            .map_err(|e| self.fail(format!("ikolbackbone: {e}")))?;
        let mut feedback = Vec::with_capacity(estimates.len());
        let mut kept = Vec::with_capacity(estimates.len());
        for (mut p, e) in std::mem::take(&mut m.people).into_iter().zip(estimates) {
            let Some(t) = e.translation else {
                gst::debug!(
                    CAT,
                    imp = self,
                    "track {}: degenerate camera, dropped",
                    p.track_id
                );
                continue;
            };
            let beta: Vec<f64> = e
                .beta
                .iter()
                .map(|b| b.clamp(-ikol_body::MAX_ABS_BETA, ikol_body::MAX_ABS_BETA))
                .collect();
            let rotations: Vec<_> = e
                .theta
                .iter()
                .map(|w| axis_angle_to_matrix(&Vector3::from(*w)))
                .collect();
            let rest = body
                .rest_joints(&beta)
                .map_err(|err| self.fail(format!("ikolbackbone: {err}")))?;
            let (_, posed) =
                ikol_body::kinematics::forward_kinematics(&rotations, &rest, &SMPL24_PARENTS);
            let root = posed[0];
            let t = Vector3::from(t);
            p.joints_3d = posed
                .iter()
                .map(|j| (j - root).map(|x| x as f32).into())
                .collect();
            p.joints_2d = posed
                .iter()
                .map(|j| {
                    k.project(&(j - root + t))
                        .map_or([f32::NAN; 2], |q| q.map(|x| x as f32))
                })
                .collect();
            p.root = Some(t.map(|x| x as f32).into());
            p.translation = p.root;
            p.theta = e.theta.iter().map(|w| w.map(|x| x as f32)).collect();
            p.beta = beta.iter().map(|&b| b as f32).collect();
            // The box sent upstream is clipped to the frame: a wrong depth makes the projected
            // joints huge, and a crop grown from them would make the next estimate worse still.
            if let Some(b) = BBox::around_points(
                p.joints_2d
                    .iter()
                    .filter(|q| q.iter().all(|x| x.is_finite()))
                    .map(|q| q.map(f64::from)),
                FEEDBACK_BOX_SCALE,
            )
            .and_then(|b| {
                common::tight_box(&[[b.x, b.y], [b.x + b.w, b.y + b.h]], 0.0, Some(frame))
            }) {
                feedback.push((p.track_id, b));
            }
            kept.push(p);
        }
        m.people = kept;
        Ok(feedback)
    }

    /// BlazePose landmarks in the square region of every box, mapped to SMPL-24; returns
    /// mediapipe's next regions of interest as tracking boxes. People without a pose are dropped
    /// (no person without a body leaves the element), and so is a person whose landmarks are
    /// those of an older track ([`same_body`]) or, for a new track, part of an older track's
    /// body ([`part_of`]: a detection of part of someone already followed).
    fn blazepose(
        &self,
        landmarker: &BlazePoseLandmarker,
        body: &BodyFromLandmarks,
        rois: &mut HashMap<u64, RotatedRect>,
        alternate: &mut Option<AlternatingFlip>,
        pass: Option<Pass>,
        k: &Intrinsics,
        m: &mut FrameMeta,
        image: &Frame<'_>,
    ) -> Result<Vec<(u64, BBox)>, gst::FlowError> {
        let mut feedback = Vec::new();
        let mut next = HashMap::new();
        let mut kept: Vec<Person> = Vec::with_capacity(m.people.len());
        // Older tracks (smaller ids) first: they keep their body when a newer one duplicates it.
        m.people.sort_by_key(|p| p.track_id);
        let people = std::mem::take(&mut m.people);
        // Every person's landmarks at once, side by side on rayon's pool (each from its own
        // region; the keeping below goes in track order).
        let poses: Vec<_> = people
            .par_iter()
            .map(|p| {
                // Tracked (the box is the hull of our last region): mediapipe's rotated region.
                // Otherwise (a detection, a given box): the upright square around the box.
                let tracked = rois
                    .get(&p.track_id)
                    .copied()
                    .filter(|r| roi_box(r).is_some_and(|b| b.iou(&p.bbox) > TRACKED_IOU));
                let [cx, cy] = p.bbox.center();
                let side = p.bbox.w.max(p.bbox.h);
                let roi = tracked.unwrap_or(RotatedRect {
                    cx,
                    cy,
                    w: side,
                    h: side,
                    rotation: 0.0,
                });
                let (pass, pose) = match pass {
                    // A mirrored pass that finds nobody: the plain one, rather than losing a
                    // borderline person (and the pairing) on every other frame.
                    Some(Pass::Mirrored) => {
                        match landmarker.landmarks_pass(image, &roi, Pass::Mirrored) {
                            Ok(None) => (
                                Pass::Plain,
                                landmarker.landmarks_pass(image, &roi, Pass::Plain),
                            ),
                            found => (Pass::Mirrored, found),
                        }
                    }
                    Some(pass) => (pass, landmarker.landmarks_pass(image, &roi, pass)),
                    None => (Pass::Both, landmarker.landmarks(image, &roi)),
                };
                // World landmarks from the crop's view into camera axes, each pass with its
                // own crop before any mean over frames.
                let to_camera = crop_to_camera(k, [roi.cx, roi.cy]);
                (pass, pose.map(|p| p.map(|p| p.turned(&to_camera))))
            })
            .collect();
        for (mut p, (pass, pose)) in people.into_iter().zip(poses) {
            let pose = pose.map_err(|e| self.fail(format!("ikolbackbone: {e}")))?;
            let pose = match alternate.as_mut() {
                Some(a) => pose.map(|pose| a.combine(p.track_id, pass, pose)),
                None => pose,
            };
            let Some(pose) = pose else {
                gst::debug!(
                    CAT,
                    imp = self,
                    "track {}: no pose in its box, dropped",
                    p.track_id
                );
                continue;
            };
            let e = body.estimate(&pose);
            let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            p.joints_3d = e.joints_3d.iter().map(|v| v.map(|x| x as f32)).collect();
            p.joints_2d = e.joints_2d.iter().map(|v| v.map(|x| x as f32)).collect();
            p.confidence = f32s(&e.confidence);
            p.beta = f32s(&e.beta);
            p.landmarks_2d = e.landmarks_2d.iter().map(|v| v.map(|x| x as f32)).collect();
            p.landmarks_3d = e.landmarks_3d.iter().map(|v| v.map(|x| x as f32)).collect();
            // A new person (not followed from the last frame) inside an older one's body is a
            // detection of part of that body (a tile of the frame), not someone else.
            let new = !rois.contains_key(&p.track_id);
            if new {
                gst::debug!(
                    CAT,
                    imp = self,
                    "track {}: new, pose presence {:.3}, detection score {:.3}",
                    p.track_id,
                    pose.presence,
                    p.score
                );
            }
            if let Some(old) = kept.iter().find(|k| {
                same_body(&k.landmarks_2d, &p.landmarks_2d)
                    || (new && part_of(&k.landmarks_2d, &p.landmarks_2d))
            }) {
                gst::debug!(
                    CAT,
                    imp = self,
                    "track {}: the body of track {}, dropped",
                    p.track_id,
                    old.track_id
                );
                continue;
            }
            if let Some(r) = pose.next_roi()
                && let Some(b) = roi_box(&r)
            {
                feedback.push((p.track_id, b));
                next.insert(p.track_id, r);
            }
            kept.push(p);
        }
        m.people = kept;
        *rois = next;
        Ok(feedback)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for IkolBackbone {
    const NAME: &'static str = "GstIkolBackbone";
    type Type = super::IkolBackbone;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for IkolBackbone {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("model", BackboneModel::default())
                    .nick("Model")
                    .blurb("heatmap (the IKOL/HybrIK network from checkpoint), blazepose (the \
                            pretrained BlazePose landmarks mapped to SMPL-24), hkmr or hmr (a body \
                            regressor from checkpoint)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("body-model")
                    .nick("Body model")
                    .blurb("model=blazepose: the body model the landmark map is fitted on; hkmr/hmr: \
                            the one the joints are posed on (default, small or a model file; use \
                            the mesher's)")
                    .default_value(Some(DEFAULT_BODY_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("checkpoint")
                    .nick("Checkpoint")
                    .blurb("Network weights: our .safetensors or an upstream HybrIK/IKOL .pth (required)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("variant", BackboneVariant::default())
                    .nick("Variant")
                    .blurb("Network variant: ikol24 or hybrik29")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("device", BackboneDevice::default())
                    .nick("Device")
                    .blurb("cpu or cuda (CUDA needs a build with the cuda feature)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("device-index")
                    .nick("Device index")
                    .blurb("device=cuda: which GPU (CUDA ordinal)")
                    .maximum(63)
                    .default_value(DEFAULT_DEVICE_INDEX)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("flip-test", DEFAULT_FLIP_TEST)
                    .nick("Flip test")
                    .blurb(
                        "true: also run the mirrored crop and average (HybrIK's flip test; heatmap \
                         and blazepose: twice the network time); alternate (blazepose): the crop \
                         and its mirror image on alternate frames, each averaged with the frame \
                         before (one pass per crop); false: one pass",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("focal-length")
                    .nick("Focal length")
                    .blurb("Focal length in pixels when the source gives no intrinsics (0 = use fov)")
                    .minimum(0.0)
                    .maximum(1e6)
                    .default_value(DEFAULT_FOCAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("fov")
                    .nick("Field of view")
                    .blurb("Horizontal field of view in degrees when the source gives no intrinsics \
                            and focal-length is 0")
                    .minimum(1.0)
                    .maximum(179.0)
                    .default_value(DEFAULT_HFOV_DEG)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("principal-point")
                    .nick("Principal point")
                    .blurb("\"cx,cy\" in pixels when the source gives no intrinsics (a \
                            calibration's); empty = the frame centre")
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = common::lock(&self.settings);
        match pspec.name() {
            "model" => s.model = value.get().unwrap_or_default(),
            "body-model" => {
                s.body_model =
                    common::string_value(value).unwrap_or_else(|| DEFAULT_BODY_MODEL.into())
            }
            "checkpoint" => {
                s.checkpoint = common::string_value(value)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
            }
            "variant" => s.variant = value.get().unwrap_or_default(),
            "device" => s.device = value.get().unwrap_or_default(),
            "device-index" => s.device_index = value.get().unwrap_or(DEFAULT_DEVICE_INDEX),
            "flip-test" => s.flip_test = value.get().unwrap_or(DEFAULT_FLIP_TEST),
            "focal-length" => s.focal_length = value.get().unwrap_or(DEFAULT_FOCAL),
            "fov" => s.fov = value.get().unwrap_or(DEFAULT_HFOV_DEG),
            "principal-point" => {
                s.principal_point = common::string_value(value).unwrap_or_default()
            }
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "model" => s.model.to_value(),
            "body-model" => s.body_model.to_value(),
            "checkpoint" => s
                .checkpoint
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "variant" => s.variant.to_value(),
            "device" => s.device.to_value(),
            "device-index" => s.device_index.to_value(),
            "flip-test" => s.flip_test.to_value(),
            "focal-length" => s.focal_length.to_value(),
            "principal-point" => s.principal_point.to_value(),
            _ => s.fov.to_value(),
        }
    }
}

impl GstObjectImpl for IkolBackbone {}

impl ElementImpl for IkolBackbone {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ikol heatmap backbone",
                "Filter/Analyzer/Video",
                "Estimates 3D joints, twist, shape and leaf rotations of every person crop \
                 (ResNet heatmap network on candle)",
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

impl BaseTransformImpl for IkolBackbone {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    /// The same caps on both pads; I420 only for `model=blazepose` (the other networks read
    /// packed RGB), so an upstream `videoconvert` converts for them and passes decoded I420
    /// through for BlazePose.
    fn transform_caps(
        &self,
        _direction: gst::PadDirection,
        caps: &gst::Caps,
        filter: Option<&gst::Caps>,
    ) -> Option<gst::Caps> {
        let model = common::lock(&self.settings).model;
        let mut out = if model == BackboneModel::BlazePose {
            caps.clone()
        } else {
            caps.intersect_with_mode(
                &common::video_formats(&[VideoFormat::Rgb]),
                gst::CapsIntersectMode::First,
            )
        };
        if let Some(f) = filter {
            out = f.intersect_with_mode(&out, gst::CapsIntersectMode::First);
        }
        Some(out)
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = common::lock(&self.settings).clone();
        let settings_err = |msg: String| gst::error_msg!(gst::LibraryError::Settings, ("{msg}"));
        let principal_point = parse_point(&s.principal_point).map_err(|e| {
            settings_err(format!(
                "ikolbackbone: principal-point `{}`: {e}",
                s.principal_point
            ))
        })?;
        let net = match s.model {
            BackboneModel::BlazePose => {
                let landmarker = BlazePoseLandmarker::load(&models_dir())
                    .map_err(|e| settings_err(format!("ikolbackbone: {e}")))?
                    .with_flip_test(s.flip_test == FlipTest::On);
                let model = common::body_model("ikolbackbone", &s.body_model)?;
                let body = BodyFromLandmarks::new(&model).map_err(|e| {
                    settings_err(format!("ikolbackbone: body-model `{}`: {e}", s.body_model))
                })?;
                gst::info!(
                    CAT,
                    imp = self,
                    "BlazePose landmarks, map fitted on {}",
                    s.body_model
                );
                Net::BlazePose {
                    landmarker,
                    body,
                    rois: HashMap::new(),
                    alternate: (s.flip_test == FlipTest::Alternate).then(AlternatingFlip::default),
                }
            }
            BackboneModel::Heatmap => {
                let path = s.checkpoint.ok_or_else(|| {
                    settings_err(
                        "ikolbackbone: no checkpoint set (checkpoint=<file.safetensors|file.pth>, \
                         or model=blazepose)"
                            .into(),
                    )
                })?;
                let choice = match s.device {
                    BackboneDevice::Cpu => DeviceChoice::Cpu,
                    BackboneDevice::Cuda => DeviceChoice::Cuda(s.device_index as usize),
                };
                let device =
                    open_device(choice).map_err(|e| settings_err(format!("ikolbackbone: {e}")))?;
                if s.flip_test == FlipTest::Alternate {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "flip-test=alternate is for model=blazepose; the heatmap network runs \
                         one pass per crop"
                    );
                }
                let net = Backbone::load(&path, s.variant.into(), &device)
                    .map_err(|e| settings_err(format!("ikolbackbone: {e}")))?
                    .with_flip_test(s.flip_test == FlipTest::On);
                gst::info!(
                    CAT,
                    imp = self,
                    "loaded {} ({}) on {choice}",
                    path.display(),
                    net.config().variant
                );
                Net::Heatmap(net)
            }
            BackboneModel::Hkmr | BackboneModel::Hmr => {
                let path = s.checkpoint.ok_or_else(|| {
                    settings_err(format!(
                        "ikolbackbone: model={} needs checkpoint=<file.safetensors> (a regressor \
                         trained by ikol-train)",
                        model_nick(s.model)
                    ))
                })?;
                let choice = match s.device {
                    BackboneDevice::Cpu => DeviceChoice::Cpu,
                    BackboneDevice::Cuda => DeviceChoice::Cuda(s.device_index as usize),
                };
                let device =
                    open_device(choice).map_err(|e| settings_err(format!("ikolbackbone: {e}")))?;
                let net = DirectRegressor::load(&path, &device)
                    .map_err(|e| settings_err(format!("ikolbackbone: {e}")))?;
                let want = match s.model {
                    BackboneModel::Hkmr => RegressorKind::Hkmr,
                    _ => RegressorKind::Flat,
                };
                if net.config().head.kind != want {
                    return Err(settings_err(format!(
                        "ikolbackbone: {} holds a {} regressor, not what model={} runs",
                        path.display(),
                        net.config().head.kind.name(),
                        model_nick(s.model)
                    )));
                }
                if s.flip_test != FlipTest::Off {
                    // The file pipelines turn the flip test on for BlazePose; a regressor has
                    // none (its body is not a set of points to average), so it runs once.
                    gst::info!(
                        CAT,
                        imp = self,
                        "flip-test: not for a body regressor (model={}), ignored",
                        model_nick(s.model)
                    );
                }
                let body = common::body_model("ikolbackbone", &s.body_model)?;
                gst::info!(
                    CAT,
                    imp = self,
                    "loaded {} ({}) on {choice}",
                    path.display(),
                    want.name()
                );
                Net::Direct { net, body }
            }
        };
        *common::lock(&self.state) = Some(State {
            net: Box::new(net),
            info: None,
            principal_point,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *common::lock(&self.state) = None;
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "ikolbackbone: cannot parse caps {incaps}"))?;
        if let Some(s) = common::lock(&self.state).as_mut() {
            s.info = Some(info);
        }
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = common::lock(&self.settings).clone();
        let mut m: FrameMeta =
            meta::require(buf, "ikolbackbone", "ikolcrop").map_err(|msg| self.fail(msg))?;
        let feedback = {
            let mut guard = common::lock(&self.state);
            let Some(state) = guard.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            let Some(info) = state.info.as_ref() else {
                return Err(self.fail("ikolbackbone: buffer before caps".into()));
            };
            let k = *m.intrinsics.get_or_insert_with(|| {
                let mut k = if settings.focal_length > 0.0 {
                    Intrinsics::from_focal(info.width(), info.height(), settings.focal_length)
                } else {
                    Intrinsics::from_hfov(info.width(), info.height(), settings.fov)
                };
                if let Some([cx, cy]) = state.principal_point {
                    (k.cx, k.cy) = (cx, cy);
                }
                k
            });
            // flip-test=alternate: every frame takes its turn (one without people ends the
            // pairings), and a discontinuity ends them too.
            let pass = match state.net.as_mut() {
                Net::BlazePose {
                    alternate: Some(a), ..
                } => {
                    if buf.flags().contains(gst::BufferFlags::DISCONT) {
                        a.reset();
                    }
                    Some(a.begin_frame())
                }
                _ => None,
            };
            if m.people.is_empty() {
                Vec::new()
            } else {
                let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(&*buf, info)
                    .map_err(|_| self.fail("ikolbackbone: cannot map the video frame".into()))?;
                let image = common::front_end_frame("ikolbackbone", &frame, info)
                    .map_err(|e| self.fail(e))?;
                // `transform_caps` offers I420 only to BlazePose; the others read packed RGB.
                let rgb = || match image {
                    Frame::Rgb(i) => Ok((i.data, i.stride)),
                    Frame::I420(_) => Err(self.fail(format!(
                        "ikolbackbone: model={} reads RGB, got I420",
                        model_nick(settings.model)
                    ))),
                };
                match state.net.as_mut() {
                    Net::Heatmap(net) => {
                        let (data, stride) = rgb()?;
                        self.heatmap(net, &mut m, data, info, stride, &k)?
                    }
                    Net::Direct { net, body } => {
                        let (data, stride) = rgb()?;
                        let rgb = RgbFrame::new(data, info.width(), info.height(), stride)
                            .map_err(|e| self.fail(format!("ikolbackbone: {e}")))?;
                        self.direct(net, body, &mut m, &rgb, &k, (info.width(), info.height()))?
                    }
                    Net::BlazePose {
                        landmarker,
                        body,
                        rois,
                        alternate,
                    } => {
                        self.blazepose(landmarker, body, rois, alternate, pass, &k, &mut m, &image)?
                    }
                }
            }
        };
        m.mark("ikolbackbone");
        m.write(buf)
            .map_err(|e| self.fail(format!("ikolbackbone: {e}")))?;
        if !feedback.is_empty() {
            // Tracking for ikolcrop (see its docs); harmless when nobody upstream handles it.
            let _handled = self
                .obj()
                .sink_pad()
                .push_event(meta::feedback_event(&feedback));
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

fn model_nick(m: BackboneModel) -> &'static str {
    match m {
        BackboneModel::Heatmap => "heatmap",
        BackboneModel::BlazePose => "blazepose",
        BackboneModel::Hkmr => "hkmr",
        BackboneModel::Hmr => "hmr",
    }
}

/// "x,y" (finite numbers) or empty.
fn parse_point(text: &str) -> Result<Option<[f64; 2]>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let v: Vec<f64> = t
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|e| format!("`{x}`: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [x, y] if x.is_finite() && y.is_finite() => Ok(Some([*x, *y])),
        _ => Err("expected two finite numbers \"cx,cy\"".into()),
    }
}

/// Landmarks seen (visibility over this) in both bodies are compared.
const SAME_BODY_VISIBILITY: f32 = 0.5;
/// Two landmarks coincide when closer than this fraction of the smaller body's height.
const SAME_BODY_DISTANCE: f32 = 0.06;
/// Two landmark sets are one body when this many landmarks coincide, one of them off the face: a
/// landmark model run on part of someone (a detection of their upper body) still places that
/// part right, while two people never share several landmarks within a few centimetres.
const SAME_BODY_SHARED: usize = 5;
/// First landmark below the face (the shoulders).
const FIRST_BODY_LANDMARK: usize = 11;
/// A new person overlapping an older one (see [`overlap`]) is part of it when at least this
/// many landmarks lie within [`PART_DISTANCE`] of the older one's.
const PART_SHARED: usize = 2;
/// Looser than [`SAME_BODY_DISTANCE`]: a hallucinated body from a partial view places the part
/// it sees roughly right.
const PART_DISTANCE: f32 = 0.15;

fn height(l: &[[f32; 3]]) -> f32 {
    let (lo, hi) = l
        .iter()
        .filter(|p| p[2] > SAME_BODY_VISIBILITY)
        .fold((f32::MAX, f32::MIN), |(lo, hi), p| {
            (lo.min(p[1]), hi.max(p[1]))
        });
    (hi - lo).max(1.0)
}

/// Landmarks seen in both sets and closer than `fraction` of the smaller body's height: how
/// many, and whether one of them is below the face.
fn shared(a: &[[f32; 3]], b: &[[f32; 3]], fraction: f32) -> (usize, bool) {
    let near = fraction * height(a).min(height(b));
    let close: Vec<usize> = a
        .iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (p, q))| {
            p[2] > SAME_BODY_VISIBILITY
                && q[2] > SAME_BODY_VISIBILITY
                && (p[0] - q[0]).hypot(p[1] - q[1]) < near
        })
        .map(|(i, _)| i)
        .collect();
    (close.len(), close.iter().any(|&i| i >= FIRST_BODY_LANDMARK))
}

/// Whether two sets of 33 landmarks (x, y, visibility) are the same person.
fn same_body(a: &[[f32; 3]], b: &[[f32; 3]]) -> bool {
    let (n, body) = shared(a, b, SAME_BODY_DISTANCE);
    n >= SAME_BODY_SHARED && body
}

/// Whether a new person's landmarks `b` are part of an older person's `a`: their landmark boxes
/// overlap and some of the landmarks roughly coincide.
fn part_of(a: &[[f32; 3]], b: &[[f32; 3]]) -> bool {
    overlap(a, b) > NEW_BODY_OVERLAP && shared(a, b, PART_DISTANCE).0 >= PART_SHARED
}

/// A new person whose landmark box overlaps an older person's by more than this (intersection
/// over union) may be part of the older one ([`part_of`]).
const NEW_BODY_OVERLAP: f64 = 0.3;

/// Intersection over union of the boxes around two bodies' visible landmarks.
fn overlap(a: &[[f32; 3]], b: &[[f32; 3]]) -> f64 {
    let boxed = |l: &[[f32; 3]]| {
        BBox::around_points(
            l.iter()
                .filter(|p| p[2] > SAME_BODY_VISIBILITY)
                .map(|p| [f64::from(p[0]), f64::from(p[1])]),
            1.0,
        )
    };
    match (boxed(a), boxed(b)) {
        (Some(x), Some(y)) => x.iou(&y),
        _ => 0.0,
    }
}
