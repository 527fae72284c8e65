// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikolsolver`: joints, twist and shape from `ikolbackbone` to SMPL rotations and camera
//! translation.

use gst::glib;
use gst::prelude::*;

mod fitting;
mod imp;

/// The `method` property.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIkolSolverMethod")]
pub enum SolverMethod {
    /// IKOL damped Gauss-Newton (Zhang et al. 2023).
    #[default]
    #[enum_value(name = "IKOL damped Gauss-Newton", nick = "ikol")]
    Ikol,
    /// Adaptive HybrIK (Li et al. 2021, Alg. 2).
    #[enum_value(name = "Adaptive HybrIK", nick = "hybrik")]
    Hybrik,
    /// Naive HybrIK (Li et al. 2021, Alg. 1).
    #[enum_value(name = "Naive HybrIK", nick = "hybrik-naive")]
    HybrikNaive,
    /// Model fitting to the front end's 2D keypoints and 3D points, per track over time
    /// (`ikol_solver::fit`), started from adaptive HybrIK.
    #[enum_value(
        name = "Fit the body to the keypoints (SMPLify-style, temporal)",
        nick = "fit"
    )]
    Fit,
    /// Keep the body a regressor gave (`ikolbackbone model=hkmr|hmr`): only its joints, surface
    /// landmarks and box are written.
    #[enum_value(name = "Keep the network's body (model=hkmr or hmr)", nick = "none")]
    None,
}

/// The `init` property (IKOL's starting swing angles).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIkolSolverInit")]
pub enum SolverInit {
    /// All swing angles zero, as the paper.
    #[default]
    #[enum_value(name = "Zero angles (paper)", nick = "zero")]
    Zero,
    /// From the adaptive HybrIK solution.
    #[enum_value(name = "From the analytic HybrIK solution", nick = "analytic")]
    Analytic,
}

glib::wrapper! {
    pub struct IkolSolver(ObjectSubclass<imp::IkolSolver>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "ikolsolver",
        gst::Rank::NONE,
        IkolSolver::static_type(),
    )
}
