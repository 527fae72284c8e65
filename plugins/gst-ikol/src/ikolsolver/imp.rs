// SPDX-License-Identifier: MIT OR Apache-2.0
//! SECTION:element-ikolsolver
//!
//! Inverse kinematics per person: reads the 3D joints, twist, shape and leaf rotations that
//! `ikolbackbone` put in the `IkolFrameMeta`, solves the 24 SMPL local rotations with IKOL (damped
//! Gauss-Newton), adaptive HybrIK or naive HybrIK, and the camera translation of the root in
//! closed form from the 2D-3D joint correspondences; writes `theta`, `translation` and the
//! per-joint `residual` back to the meta. The rest skeleton comes from `body-model` at the
//! person's shape.
//!
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 filesrc location=walk.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB \
//!   ! ikolcrop roi=200,80,240,400 ! ikolbackbone checkpoint=ikol.safetensors \
//!   ! ikolsolver method=ikol iterations=5 damping=0.1 ! ikolexport ! fakesink
//! ```
//!
//! Since: 0.1

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use ikol_body::nalgebra::{Vector3, Vector4};
use ikol_solver::{
    AnalyticOptions, IkInput, IkolInit, IkolOptions, JointShapeBasis, Method, Rest,
    camera_translation,
};
use ikol_types::joints::{HYBRIK_JOINTS, SMPL_JOINTS};

use super::{SolverInit, SolverMethod};
use crate::common;
use crate::meta::{self, FrameMeta, Person};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "ikolsolver",
        gst::DebugColorFlags::empty(),
        Some("ikol inverse-kinematics solver"),
    )
});

const DEFAULT_ITERATIONS: u32 = ikol_solver::ikol::DEFAULT_ITERATIONS as u32;
const DEFAULT_DAMPING: f64 = ikol_solver::ikol::DEFAULT_DAMPING;
const DEFAULT_BODY_MODEL: &str = "default";

#[derive(Debug, Clone)]
struct Settings {
    method: SolverMethod,
    iterations: u32,
    damping: f64,
    init: SolverInit,
    body_model: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            method: SolverMethod::default(),
            iterations: DEFAULT_ITERATIONS,
            damping: DEFAULT_DAMPING,
            init: SolverInit::default(),
            body_model: DEFAULT_BODY_MODEL.into(),
        }
    }
}

impl Settings {
    fn method(&self) -> Method {
        match self.method {
            SolverMethod::Hybrik => Method::Hybrik(AnalyticOptions::default()),
            SolverMethod::HybrikNaive => Method::HybrikNaive(AnalyticOptions::default()),
            SolverMethod::Ikol => Method::Ikol(IkolOptions {
                iterations: self.iterations as usize,
                damping: self.damping,
                init: match self.init {
                    SolverInit::Zero => IkolInit::Zero,
                    SolverInit::Analytic => IkolInit::Analytic {
                        fallback: AnalyticOptions::default().fallback,
                    },
                },
                ..IkolOptions::default()
            }),
        }
    }
}

#[derive(Debug)]
/// Rest-skeleton bases of the body model (24 joints, and 29 for HybrIK-29 targets).
struct State {
    basis24: JointShapeBasis,
    basis29: Option<JointShapeBasis>,
}

#[derive(Debug, Default)]
pub struct IkolSolver {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl IkolSolver {
    fn solve_person(&self, p: &mut Person, state: &State, method: &Method, meta: &FrameMeta) {
        let n = p.joints_3d.len();
        let basis = match n {
            SMPL_JOINTS => &state.basis24,
            HYBRIK_JOINTS => match &state.basis29 {
                Some(b) => b,
                None => {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "body model has no leaf vertices for 29 joints"
                    );
                    return;
                }
            },
            0 => return,
            _ => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "track {}: {n} joints, expected 24 or 29",
                    p.track_id
                );
                return;
            }
        };
        let targets: Vec<Vector3<f64>> = p
            .joints_3d
            .iter()
            .map(|j| Vector3::new(j[0].into(), j[1].into(), j[2].into()))
            .collect();
        // Missing twist means zero twist (cos 1, sin 0), as HybrIK does for untrained heads.
        let twist: Vec<[f64; 2]> = if p.twist.len() == ikol_solver::TWIST_PAIRS {
            p.twist.iter().map(|t| [t[0].into(), t[1].into()]).collect()
        } else {
            vec![[1.0, 0.0]; ikol_solver::TWIST_PAIRS]
        };
        let mut beta: Vec<f64> = p.beta.iter().map(|&b| b.into()).collect();
        beta.resize(basis.coefficients(), 0.0);
        let leaf: Vec<Vector4<f64>> = p
            .leaf
            .iter()
            .map(|q| Vector4::new(q[0].into(), q[1].into(), q[2].into(), q[3].into()))
            .collect();
        let input = IkInput {
            targets: &targets,
            twist: &twist,
            rest: Rest::Shape { basis, beta: &beta },
            leaf_rotations: (leaf.len() == 5).then_some(leaf.as_slice()),
        };
        let sol = match ikol_solver::solve(&input, method) {
            Ok(s) => s,
            Err(e) => {
                gst::warning!(CAT, imp = self, "track {}: not solved: {e}", p.track_id);
                return;
            }
        };
        p.theta = sol
            .axis_angle
            .iter()
            .map(|a| [a.x as f32, a.y as f32, a.z as f32])
            .collect();
        p.residual = sol.residual.iter().map(|&r| r as f32).collect();
        if let Some(b) = &sol.beta {
            p.beta = b.iter().map(|&x| x as f32).collect();
        }
        let uv: Vec<[f64; 2]> = p
            .joints_2d
            .iter()
            .map(|q| [q[0].into(), q[1].into()])
            .collect();
        let w: Vec<f64> = p.confidence.iter().map(|&c| c.into()).collect();
        let t = meta.intrinsics.as_ref().and_then(|k| {
            camera_translation(
                &sol.joints,
                &uv,
                (w.len() == sol.joints.len()).then_some(w.as_slice()),
                k,
            )
        });
        p.translation = t.map(|t| [t.x as f32, t.y as f32, t.z as f32]).or(p.root);
    }
}

#[glib::object_subclass]
impl ObjectSubclass for IkolSolver {
    const NAME: &'static str = "GstIkolSolver";
    type Type = super::IkolSolver;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for IkolSolver {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("method", SolverMethod::default())
                    .nick("Method")
                    .blurb("Inverse-kinematics solver: ikol, hybrik or hybrik-naive")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("iterations")
                    .nick("Iterations")
                    .blurb("Gauss-Newton iterations (method=ikol)")
                    .minimum(0)
                    .maximum(100)
                    .default_value(DEFAULT_ITERATIONS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("damping")
                    .nick("Damping")
                    .blurb("Gauss-Newton damping sigma (method=ikol)")
                    .minimum(0.0)
                    .maximum(1e6)
                    .default_value(DEFAULT_DAMPING)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("init", SolverInit::default())
                    .nick("Init")
                    .blurb("Starting swing angles (method=ikol): zero or analytic")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("body-model")
                    .nick("Body model")
                    .blurb("Rest skeleton: default, small, or a model file (.safetensors, SMPL .npz/.pkl)")
                    .default_value(Some(DEFAULT_BODY_MODEL))
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = common::lock(&self.settings);
        match pspec.name() {
            "method" => s.method = value.get().unwrap_or_default(),
            "iterations" => s.iterations = value.get().unwrap_or(DEFAULT_ITERATIONS),
            "damping" => s.damping = value.get().unwrap_or(DEFAULT_DAMPING),
            "init" => s.init = value.get().unwrap_or_default(),
            "body-model" => {
                s.body_model =
                    common::string_value(value).unwrap_or_else(|| DEFAULT_BODY_MODEL.into())
            }
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "method" => s.method.to_value(),
            "iterations" => s.iterations.to_value(),
            "damping" => s.damping.to_value(),
            "init" => s.init.to_value(),
            _ => s.body_model.to_value(),
        }
    }
}

impl GstObjectImpl for IkolSolver {}

impl ElementImpl for IkolSolver {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ikol IK solver",
                "Filter/Analyzer/Video",
                "Solves SMPL joint rotations and camera translation from ikolbackbone joints \
                 (IKOL Gauss-Newton or HybrIK)",
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

impl BaseTransformImpl for IkolSolver {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let spec = common::lock(&self.settings).body_model.clone();
        let model = common::body_model("ikolsolver", &spec)?;
        let basis24 = model.joint_shape_basis(false).map_err(|e| {
            gst::error_msg!(
                gst::LibraryError::Settings,
                ("ikolsolver: body-model `{spec}`: {e}")
            )
        })?;
        let basis29 = model.joint_shape_basis(true).ok();
        *common::lock(&self.state) = Some(State { basis24, basis29 });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *common::lock(&self.state) = None;
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let method = common::lock(&self.settings).method();
        // ikol3dpwsrc ground-truth-joints=true fills the backbone's fields itself.
        let mut m = meta::require_one_of(
            buf,
            "ikolsolver",
            &["ikolbackbone", meta::GROUND_TRUTH_JOINTS],
        )
        .map_err(|msg| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("{msg}"));
            gst::FlowError::Error
        })?;
        {
            let guard = common::lock(&self.state);
            let Some(state) = guard.as_ref() else {
                return Err(gst::FlowError::Flushing);
            };
            let frame = m.clone();
            for p in &mut m.people {
                self.solve_person(p, state, &method, &frame);
            }
        }
        m.mark("ikolsolver");
        m.write(buf).map_err(|e| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("ikolsolver: {e}"));
            gst::FlowError::Error
        })?;
        Ok(gst::FlowSuccess::Ok)
    }
}
