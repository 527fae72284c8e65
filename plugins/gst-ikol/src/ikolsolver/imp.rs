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
//! `method=fit` fits the body to the front end's measurements instead (`ikol_solver::fit`):
//! BlazePose's 33 landmarks in 2D (robust reprojection of the matching surface points, so hand,
//! foot and face landmarks observe twist) and in 3D, or the heatmap network's 24 joints; a
//! Gaussian around the HybrIK solution, hinge limits, the shape prior, and per track a warm start
//! from the last frame, its running shape and an acceleration term over its last two frames
//! (causal). A track whose labels come left/right swapped (the swapped labelling fits the last
//! body much better) is repaired before the fit. The `fit-*` properties are the term weights.
//!
//! Every method writes the solved body's joints (`mesh-joints`, camera metres), its surface at
//! the landmarks (`surface-landmarks`, with BlazePose) and the tight box around its projection
//! (`person-box`). A person whose solve or fit fails (for the fit: non-finite keypoints, no
//! visible keypoint, a person a few pixels wide) is left without a body and a warning says why.
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
use ikol_solver::fit::{BodyState, FitOptions};
use ikol_solver::{
    AnalyticOptions, IkInput, IkolInit, IkolOptions, JointShapeBasis, Method, Rest,
    camera_translation,
};
use ikol_types::joints::{HYBRIK_JOINTS, SMPL_JOINTS};
use ikol_types::rotation::axis_angle_to_matrix;

use super::fitting::Bodies;
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
    fit: FitOptions,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            method: SolverMethod::default(),
            iterations: DEFAULT_ITERATIONS,
            damping: DEFAULT_DAMPING,
            init: SolverInit::default(),
            body_model: DEFAULT_BODY_MODEL.into(),
            fit: FitOptions::default(),
        }
    }
}

/// The `fit-*` properties: (name, blurb, maximum), each a field of [`FitOptions`].
const FIT_PROPERTIES: [(&str, &str, f64); 9] = [
    (
        "fit-sigma-2d",
        "method=fit: pixel noise of a keypoint of confidence 1 (smaller: follow the 2D keypoints more)",
        1e4,
    ),
    (
        "fit-robust-2d",
        "method=fit: Geman-McClure scale in pixels: keypoints further off than this stop pulling",
        1e5,
    ),
    (
        "fit-sigma-3d",
        "method=fit: noise of the front end's 3D points in metres (0: ignore them)",
        100.0,
    ),
    (
        "fit-sigma-pose",
        "method=fit: radians the pose may leave the IK solution (0: no such prior)",
        100.0,
    ),
    (
        "fit-sigma-accel",
        "method=fit: joint acceleration in metres per frame squared (0: no temporal term)",
        100.0,
    ),
    (
        "fit-sigma-angular",
        "method=fit: angular acceleration of each joint in radians per frame squared (0: off)",
        100.0,
    ),
    (
        "fit-sigma-translation",
        "method=fit: metres the root may leave the IK layer's translation (0: free)",
        100.0,
    ),
    (
        "fit-sigma-shape",
        "method=fit: how far the shape may leave the track's running shape (0: free per frame)",
        100.0,
    ),
    (
        "fit-sigma-beta",
        "method=fit: spread of the shape prior around the mean shape, in standard deviations of \
         the shape components (0: no prior; the shape then follows the keypoints, held only by \
         fit-sigma-shape)",
        100.0,
    ),
];

fn fit_field<'a>(o: &'a mut FitOptions, name: &str) -> Option<&'a mut f64> {
    Some(match name {
        "fit-sigma-2d" => &mut o.sigma_2d,
        "fit-robust-2d" => &mut o.robust_2d,
        "fit-sigma-3d" => &mut o.sigma_3d,
        "fit-sigma-pose" => &mut o.sigma_pose,
        "fit-sigma-accel" => &mut o.sigma_accel,
        "fit-sigma-shape" => &mut o.sigma_beta_track,
        "fit-sigma-beta" => &mut o.sigma_beta,
        "fit-sigma-translation" => &mut o.sigma_translation,
        "fit-sigma-angular" => &mut o.sigma_angular_accel,
        _ => return None,
    })
}

impl Settings {
    fn method(&self) -> Method {
        match self.method {
            SolverMethod::Hybrik | SolverMethod::Fit | SolverMethod::None => {
                Method::Hybrik(AnalyticOptions::default())
            }
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
    bodies: Bodies,
    /// The fit's track clock: frames since start, counted from the timestamps when the stream
    /// has them (a frame a leaky queue dropped still counts), else one per buffer.
    frame: u64,
    /// Timestamp of the last buffer, nanoseconds.
    last_pts: Option<u64>,
    /// Frame duration from the caps' framerate, nanoseconds.
    frame_ns: Option<u64>,
    /// Width and height of the video (for clipping boxes).
    size: Option<(u32, u32)>,
}

/// Frames the track clock advances for a buffer at `pts` after one at `last`, `frame_ns`
/// apart: the frames between them, at least one; one when a timestamp or the rate is unknown
/// (or time went backwards). The fit's acceleration terms assume consecutive frames one frame
/// apart, so a gap must show as one.
fn clock_step(last: Option<u64>, pts: Option<u64>, frame_ns: Option<u64>) -> u64 {
    match (last, pts, frame_ns) {
        (Some(l), Some(p), Some(d)) if d > 0 && p > l => ((p - l).saturating_add(d / 2) / d).max(1),
        _ => 1,
    }
}

#[derive(Debug, Default)]
pub struct IkolSolver {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl IkolSolver {
    fn solve_person(&self, p: &mut Person, state: &mut State, s: &Settings, meta: &FrameMeta) {
        let method = s.method();
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
        // A body regressor (ikolbackbone model=hkmr|hmr) gave the body itself: it is the start
        // of a fit, or kept as it is (method=none); the IK methods need joints and twist.
        let given = regressed_body(p, state.bodies.betas());
        match (&given, s.method) {
            (None, SolverMethod::None) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "track {}: method=none keeps a regressor's body, and there is none \
                     (ikolbackbone model=hkmr or hmr gives one)",
                    p.track_id
                );
                return;
            }
            (Some(_), SolverMethod::Ikol | SolverMethod::Hybrik | SolverMethod::HybrikNaive) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "track {}: a regressor's body has no twist for {:?}; use method=none or fit",
                    p.track_id,
                    s.method
                );
                return;
            }
            _ => {}
        }
        let k = meta.intrinsics.as_ref();
        let root = p
            .root
            .map(|r| Vector3::new(r[0].into(), r[1].into(), r[2].into()));
        let (ik, t, ik_residual) = match given {
            Some(b) => {
                let t = Some(b.translation);
                (b, t, Vec::new())
            }
            None => {
                let sol = match ikol_solver::solve(&input, &method) {
                    Ok(s) => s,
                    Err(e) => {
                        gst::warning!(CAT, imp = self, "track {}: not solved: {e}", p.track_id);
                        return;
                    }
                };
                let uv: Vec<[f64; 2]> = p
                    .joints_2d
                    .iter()
                    .map(|q| [q[0].into(), q[1].into()])
                    .collect();
                let w: Vec<f64> = p.confidence.iter().map(|&c| c.into()).collect();
                let t = k.and_then(|k| {
                    camera_translation(
                        &sol.joints,
                        &uv,
                        (w.len() == sol.joints.len()).then_some(w.as_slice()),
                        k,
                    )
                });
                let ik = BodyState {
                    rotations: sol.local_rotations.clone(),
                    translation: t.or(root).unwrap_or_else(Vector3::zeros),
                    beta: {
                        let mut b = sol.beta.clone().unwrap_or(beta);
                        b.resize(state.bodies.betas(), 0.0);
                        b
                    },
                };
                let residual: Vec<f32> = sol.residual.iter().map(|&r| r as f32).collect();
                (ik, t, residual)
            }
        };
        let body = if s.method == SolverMethod::Fit {
            let Some(k) = k else {
                gst::warning!(
                    CAT,
                    imp = self,
                    "track {}: no intrinsics to fit with",
                    p.track_id
                );
                return;
            };
            let known = t.or(root).is_some();
            match state.bodies.fit(p, &ik, known, k, state.frame, &s.fit) {
                Ok(f) => {
                    gst::trace!(
                        CAT,
                        imp = self,
                        "track {}: fitted, mean keypoint error {:.1} px",
                        p.track_id,
                        f.error_2d
                    );
                    if f.repaired {
                        gst::info!(
                            CAT,
                            imp = self,
                            "track {}: left/right labels repaired",
                            p.track_id
                        );
                    }
                    f.state
                }
                Err(e) => {
                    gst::warning!(CAT, imp = self, "track {}: not fitted: {e}", p.track_id);
                    return;
                }
            }
        } else {
            ik
        };
        // A diverged solve (non-finite numbers) is no body: the person stays without one.
        let finite = body
            .rotations
            .iter()
            .all(|r| r.iter().all(|x| x.is_finite()))
            && body.translation.iter().all(|x| x.is_finite())
            && body.beta.iter().all(|x| x.is_finite());
        if !finite {
            gst::warning!(
                CAT,
                imp = self,
                "track {}: the solve diverged (non-finite result): no body",
                p.track_id
            );
            return;
        }
        // Without a translation the body cannot be placed: no joints, no box.
        let placed = s.method == SolverMethod::Fit || t.or(root).is_some();
        state
            .bodies
            .write(p, &body, k.filter(|_| placed), state.size);
        // The residual stays the IK layer's (targets vs its joints); for a fit, the distance of
        // the fitted joints to the targets, both root-relative.
        p.residual = if s.method == SolverMethod::Fit {
            let j0 = body_joint(p, 0);
            (0..targets.len().min(p.mesh_joints.len()))
                .map(|j| ((body_joint(p, j) - j0) - (targets[j] - targets[0])).norm() as f32)
                .collect()
        } else {
            ik_residual
        };
        if t.is_none() && root.is_none() {
            p.translation = None;
        }
    }
}

/// The body a regressor wrote (24 axis-angle rotations, a translation, no twist), with its shape
/// padded or cut to `betas`; `None` for any other front end.
fn regressed_body(p: &Person, betas: usize) -> Option<BodyState> {
    if p.theta.len() != SMPL_JOINTS || !p.twist.is_empty() {
        return None;
    }
    let t = p.translation?;
    let mut beta: Vec<f64> = p.beta.iter().map(|&b| b.into()).collect();
    beta.resize(betas, 0.0);
    Some(BodyState {
        rotations: p
            .theta
            .iter()
            .map(|w| axis_angle_to_matrix(&Vector3::new(w[0].into(), w[1].into(), w[2].into())))
            .collect(),
        translation: Vector3::new(t[0].into(), t[1].into(), t[2].into()),
        beta,
    })
}

fn body_joint(p: &Person, j: usize) -> Vector3<f64> {
    let m = p.mesh_joints[j];
    Vector3::new(m[0].into(), m[1].into(), m[2].into())
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
            let mut v = vec![
                glib::ParamSpecEnum::builder_with_default("method", SolverMethod::default())
                    .nick("Method")
                    .blurb("Inverse-kinematics solver: ikol, hybrik, hybrik-naive, or fit (model fitting to the keypoints)")
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
                glib::ParamSpecUInt::builder("fit-iterations")
                    .nick("Fit iterations")
                    .blurb("method=fit: most Levenberg-Marquardt iterations per person and frame")
                    .minimum(1)
                    .maximum(200)
                    .default_value(FitOptions::default().iterations as u32)
                    .mutable_playing()
                    .build(),
            ];
            let mut defaults = FitOptions::default();
            for (name, blurb, max) in FIT_PROPERTIES {
                let d = fit_field(&mut defaults, name).map_or(0.0, |v| *v);
                // The keypoint noise and its robust scale divide: they cannot be 0.
                let min = if name.ends_with("-2d") { 0.1 } else { 0.0 };
                v.push(
                    glib::ParamSpecDouble::builder(name)
                        .blurb(blurb)
                        .minimum(min)
                        .maximum(max)
                        .default_value(d)
                        .mutable_playing()
                        .build(),
                );
            }
            v
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
            "fit-iterations" => {
                s.fit.iterations = value
                    .get::<u32>()
                    .map_or(FitOptions::default().iterations, |n| n as usize)
            }
            other => match (fit_field(&mut s.fit, other), value.get::<f64>()) {
                (Some(f), Ok(x)) => *f = x,
                _ => gst::warning!(CAT, imp = self, "unknown property {other}"),
            },
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "method" => s.method.to_value(),
            "iterations" => s.iterations.to_value(),
            "damping" => s.damping.to_value(),
            "init" => s.init.to_value(),
            "fit-iterations" => (s.fit.iterations as u32).to_value(),
            name => {
                let mut o = s.fit.clone();
                match fit_field(&mut o, name) {
                    Some(v) => v.to_value(),
                    None => s.body_model.to_value(),
                }
            }
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
        let (bodies, missing) = Bodies::new(&model).map_err(|e| {
            gst::error_msg!(
                gst::LibraryError::Settings,
                ("ikolsolver: body-model `{spec}`: {e}")
            )
        })?;
        if let Some(why) = missing {
            gst::warning!(
                CAT,
                imp = self,
                "body-model `{spec}`: no landmark anchors ({why}): the fit uses the joints only"
            );
        }
        *common::lock(&self.state) = Some(State {
            basis24,
            basis29,
            bodies,
            frame: 0,
            last_pts: None,
            frame_ns: None,
            size: None,
        });
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        if let Some(s) = common::lock(&self.state).as_mut() {
            s.size = common::frame_size(incaps);
            s.frame_ns = common::frame_rate(incaps).map(|f| {
                let (n, d) = (f.numer() as u128, f.denom() as u128);
                ((1_000_000_000 * d + n / 2) / n) as u64
            });
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *common::lock(&self.state) = None;
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = common::lock(&self.settings).clone();
        let discont = buf.flags().contains(gst::BufferFlags::DISCONT);
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
            let mut guard = common::lock(&self.state);
            let Some(state) = guard.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            // A new sequence or a reconnected camera: no track continues.
            if discont {
                state.bodies.reset();
            }
            let pts = buf.pts().map(gst::ClockTime::nseconds);
            let frame_ns = state
                .frame_ns
                .or_else(|| buf.duration().map(gst::ClockTime::nseconds));
            state.frame += clock_step(state.last_pts, pts, frame_ns);
            state.last_pts = pts.or(state.last_pts);
            state.bodies.forget_old(state.frame);
            let frame = m.clone();
            for p in &mut m.people {
                self.solve_person(p, state, &settings, &frame);
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

#[cfg(test)]
mod tests {
    use super::clock_step;

    #[test]
    fn the_track_clock_counts_frames_from_timestamps() {
        let d = Some(16_666_667); // 60 fps
        assert_eq!(clock_step(Some(0), Some(16_666_667), d), 1);
        // Two frames a leaky queue dropped: the next buffer is three frames on.
        assert_eq!(clock_step(Some(0), Some(50_000_000), d), 3);
        // Jitter of a third of a frame still rounds to one.
        assert_eq!(clock_step(Some(0), Some(11_000_000), d), 1);
        // No timestamp, no rate, time going backwards or standing: one per buffer.
        assert_eq!(clock_step(None, Some(50_000_000), d), 1);
        assert_eq!(clock_step(Some(0), None, d), 1);
        assert_eq!(clock_step(Some(0), Some(50_000_000), None), 1);
        assert_eq!(clock_step(Some(50_000_000), Some(0), d), 1);
        assert_eq!(clock_step(Some(0), Some(0), d), 1);
    }
}
