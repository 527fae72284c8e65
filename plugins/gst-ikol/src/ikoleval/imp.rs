// SPDX-License-Identifier: MIT OR Apache-2.0
//! SECTION:element-ikoleval
//!
//! Scores predictions against the ground truth that a dataset source (`ikol3dpwsrc`) put in the
//! `IkolFrameMeta`, with the 3DPW protocol of IKOL/HybrIK: both meshes from `body-model` (the
//! prediction from the solver's `theta` and `beta`, the ground truth from `gt-theta` and
//! `gt-beta`), 14 joints from the H36M-17 regressor (pelvis-aligned) for MPJPE and PA-MPJPE, PVE
//! with both meshes centred at their regressed pelvis, and MPJPE / PA-MPJPE over the 24 model
//! joints. A ground-truth person without a prediction counts as missing.
//!
//! At end of stream it prints the table (mm, per sequence and overall) to stdout, writes
//! `<sequence>.csv` and `summary.json` into `location` (when set) and posts an element message
//! `ikol-eval` (fields `table`, `summary` = the JSON text, `samples`, `missing`).
//!
//! The published protocol needs SMPL's neutral model (`body-model=/path/SMPL_NEUTRAL.pkl`) and
//! its `J_regressor_h36m.npy` (`h36m-regressor`); with any other model the same protocol runs and
//! the report says that the numbers are not comparable to published ones.
//!
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 ikol3dpwsrc location=/data/3DPW ground-truth-joints=true ! ikolsolver \
//!   ! ikoleval location=eval-out
//! ```
//!
//! Since: 0.1

use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use ikol_body::BodyModel;
use ikol_eval::Report;

use crate::common;
use crate::meta::{self, Person};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "ikoleval",
        gst::DebugColorFlags::empty(),
        Some("ikol evaluation"),
    )
});

const ELEMENT: &str = "ikoleval";
const DEFAULT_BODY_MODEL: &str = "default";
const DEFAULT_PRINT: bool = true;
/// SMPL's vertex count: with its H36M regressor, the published protocol.
const SMPL_VERTICES: usize = 6890;

#[derive(Debug, Clone)]
struct Settings {
    body_model: String,
    h36m_regressor: Option<String>,
    location: Option<String>,
    print: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            body_model: DEFAULT_BODY_MODEL.into(),
            h36m_regressor: None,
            location: None,
            print: DEFAULT_PRINT,
        }
    }
}

#[derive(Debug)]
struct State {
    model: Arc<BodyModel>,
    comparable: bool,
    report: Report,
    frames: u64,
    /// The report was written (EOS seen).
    done: bool,
}

#[derive(Debug, Default)]
pub struct IkolEval {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl IkolEval {
    /// Scores one person; `Ok(None)` when there is no prediction to score.
    fn score(&self, model: &BodyModel, p: &Person) -> Result<Option<ikol_eval::Scores>, String> {
        if p.theta.len() != 24 {
            return Ok(None);
        }
        let gt = common::pose_model(model, &p.gt_theta, &p.gt_beta)
            .map_err(|e| format!("{ELEMENT}: ground truth of track {}: {e}", p.track_id))?;
        let pred = common::pose_model(model, &p.theta, &p.beta)
            .map_err(|e| format!("{ELEMENT}: prediction of track {}: {e}", p.track_id))?;
        ikol_eval::score(model, &pred, &gt)
            .map(Some)
            .map_err(|e| format!("{ELEMENT}: {e}"))
    }

    /// Prints, writes and posts the report (once).
    fn finish(&self) -> Result<(), String> {
        let settings = common::lock(&self.settings).clone();
        let mut guard = common::lock(&self.state);
        let Some(state) = guard.as_mut() else {
            return Ok(());
        };
        if state.done {
            return Ok(());
        }
        state.done = true;
        let summary = state.report.summary(&settings.body_model, state.comparable);
        let table = summary.table();
        let json = serde_json::to_string(&summary).map_err(|e| format!("{ELEMENT}: {e}"))?;
        if settings.print {
            print!("{table}");
        }
        if let Some(dir) = &settings.location {
            state
                .report
                .write(std::path::Path::new(dir), &summary)
                .map_err(|e| format!("{ELEMENT}: cannot write the report into `{dir}`: {e}"))?;
        }
        drop(guard);
        let s = gst::Structure::builder("ikol-eval")
            .field("table", table)
            .field("summary", json)
            .field("samples", summary.all.samples as u64)
            .field("missing", summary.all.missing)
            .build();
        let msg = gst::message::Element::builder(s).src(&*self.obj()).build();
        if self.obj().post_message(msg).is_err() {
            gst::debug!(CAT, imp = self, "no bus to post the report on");
        }
        Ok(())
    }
}

#[glib::object_subclass]
impl ObjectSubclass for IkolEval {
    const NAME: &'static str = "GstIkolEval";
    type Type = super::IkolEval;
    type ParentType = gst_base::BaseSink;
}

impl ObjectImpl for IkolEval {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("body-model")
                    .nick("Body model")
                    .blurb(
                        "Model for both meshes: `default`, `small` or a file (SMPL neutral \
                         .pkl/.npz for the published protocol)",
                    )
                    .default_value(Some(DEFAULT_BODY_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("h36m-regressor")
                    .nick("H36M regressor")
                    .blurb("J_regressor_h36m.npy (17 x V) replacing the model's own, if any")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb("Directory for <sequence>.csv and summary.json (unset: none written)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("print")
                    .nick("Print")
                    .blurb("Print the table to stdout at end of stream")
                    .default_value(DEFAULT_PRINT)
                    .mutable_ready()
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
            "h36m-regressor" => {
                s.h36m_regressor = common::string_value(value).filter(|l| !l.is_empty())
            }
            "location" => s.location = common::string_value(value).filter(|l| !l.is_empty()),
            "print" => s.print = value.get().unwrap_or(DEFAULT_PRINT),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "body-model" => s.body_model.to_value(),
            "h36m-regressor" => s.h36m_regressor.to_value(),
            "location" => s.location.to_value(),
            _ => s.print.to_value(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        // Evaluation runs as fast as frames come, not at their timestamps.
        self.obj().set_sync(false);
    }
}

impl GstObjectImpl for IkolEval {}

impl ElementImpl for IkolEval {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ikol evaluation",
                "Sink/Analyzer/Video",
                "Scores predictions against dataset ground truth (3DPW protocol: PVE, MPJPE, \
                 PA-MPJPE) and reports the table, per-sequence CSV and a summary JSON",
                "ikol developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &common::any_video(),
            )
            .map(|t| vec![t])
            .unwrap_or_default()
        });
        T.as_ref()
    }
}

impl BaseSinkImpl for IkolEval {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = common::lock(&self.settings).clone();
        let shared = common::body_model(ELEMENT, &s.body_model)?;
        let model = match &s.h36m_regressor {
            Some(path) => {
                let mut m = (*shared).clone();
                m.set_h36m_regressor(std::path::Path::new(path))
                    .map_err(|e| {
                        gst::error_msg!(
                            gst::LibraryError::Settings,
                            ("{ELEMENT}: h36m-regressor: {e}")
                        )
                    })?;
                Arc::new(m)
            }
            None => shared,
        };
        if model.j_regressor_h36m.is_none() {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                (
                    "{ELEMENT}: body model `{}` has no H36M-17 regressor; set h36m-regressor=J_regressor_h36m.npy",
                    s.body_model
                )
            ));
        }
        let comparable = model.num_vertices() == SMPL_VERTICES && s.h36m_regressor.is_some();
        if !comparable {
            gst::warning!(
                CAT,
                imp = self,
                "body model `{}`: numbers are not comparable to published 3DPW results",
                s.body_model
            );
        }
        *common::lock(&self.state) = Some(State {
            model,
            comparable,
            report: Report::default(),
            frames: 0,
            done: false,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *common::lock(&self.state) = None;
        Ok(())
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let fail = |msg: String| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("{msg}"));
            gst::FlowError::Error
        };
        let m = meta::require(buffer, ELEMENT, "ikol3dpwsrc").map_err(fail)?;
        let model = match common::lock(&self.state).as_ref() {
            Some(s) => s.model.clone(),
            None => return Err(gst::FlowError::Flushing),
        };
        let seq = m.sequence.clone().unwrap_or_else(|| "unknown".into());
        let mut scored = Vec::new();
        for p in m.people.iter().filter(|p| p.gt_theta.len() == 24) {
            // A person that cannot be scored (e.g. a non-finite prediction) counts as missing
            // rather than ending the evaluation.
            let s = self.score(&model, p).unwrap_or_else(|msg| {
                gst::warning!(CAT, imp = self, "{msg}; counted as missing");
                None
            });
            scored.push((p.track_id, s));
        }
        let mut guard = common::lock(&self.state);
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        let frame = m.frame_id.unwrap_or(state.frames);
        state.frames += 1;
        for (track, s) in scored {
            match s {
                Some(s) => state.report.add(&seq, frame, track, s),
                None => state.report.add_missing(&seq),
            }
        }
        for _ in 0..m.gt_dropped {
            state.report.add_missing(&seq);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view()
            && let Err(msg) = self.finish()
        {
            gst::element_imp_error!(self, gst::ResourceError::Write, ("{msg}"));
        }
        self.parent_event(event)
    }
}
