//! ikol-solver: inverse kinematics from 3D joints to SMPL-24 local rotations.
//!
//! - [`hybrik_naive`], [`hybrik_adaptive`]: HybrIK's analytic twist-and-swing IK (Li et al.,
//!   CVPR 2021, Alg. 1 and 2), see [`hybrik`];
//! - [`ikol()`]: the IKOL damped Gauss-Newton layer over one swing angle per joint (Zhang et
//!   al., AAAI 2023, Eq. 8-11) with an analytic Jacobian, see [`ikol`](mod@ikol);
//! - [`batch`]: the batched, differentiable candle twin of IKOL for training (GN-Diff);
//! - [`sampling`]: joint-limit-aware random poses for tests and the accuracy benchmark.
//!
//! Everything per person is f64 (nalgebra); kernels in [`geometry`] are generic over
//! `RealField`. Inputs follow upstream (shared reference `ikol-hybrik.md`): root-relative target
//! joints in metres (24, or 29 with the HybrIK leaves), 23 twist (cos, sin) pairs indexed by
//! joint - 1, the rest skeleton, and for 24 joints optionally the 5 leaf quaternions (w, x, y, z)
//! of joints [10, 11, 15, 22, 23].

pub mod batch;
pub mod benchmark;
mod error;
pub mod fit;
pub mod fixtures;
pub mod geometry;
pub mod hybrik;
pub mod ikol;
mod problem;
pub mod sampling;
mod shape;
mod translation;

pub use error::SolverError;
pub use hybrik::{AnalyticOptions, RootMethod, Spine3Method, hybrik_adaptive, hybrik_naive};
pub use ikol::{
    DampingMode, IkolInit, IkolModel, IkolOptions, ShapeRefinement, Tolerance, ikol, swing_joints,
};
pub use problem::{IkInput, IkSolution, Rest, TWIST_PAIRS};
pub use shape::JointShapeBasis;
pub use translation::camera_translation;

/// Which solver to run, with its options (the `method` property of the solver element).
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Naive HybrIK.
    HybrikNaive(AnalyticOptions),
    /// Adaptive HybrIK.
    Hybrik(AnalyticOptions),
    /// IKOL Gauss-Newton.
    Ikol(IkolOptions),
}

impl Method {
    /// The method's name as used on command lines and element properties.
    pub fn name(&self) -> &'static str {
        match self {
            Self::HybrikNaive(_) => "hybrik-naive",
            Self::Hybrik(_) => "hybrik",
            Self::Ikol(_) => "ikol",
        }
    }

    /// The method with default options from its name (`hybrik-naive`, `hybrik`, `ikol`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "hybrik-naive" => Some(Self::HybrikNaive(AnalyticOptions::default())),
            "hybrik" => Some(Self::Hybrik(AnalyticOptions::default())),
            "ikol" => Some(Self::Ikol(IkolOptions::default())),
            _ => None,
        }
    }
}

/// Solve one person with the given method.
pub fn solve(input: &IkInput<'_>, method: &Method) -> Result<IkSolution, SolverError> {
    match method {
        Method::HybrikNaive(o) => hybrik_naive(input, o),
        Method::Hybrik(o) => hybrik_adaptive(input, o),
        Method::Ikol(o) => ikol(input, o),
    }
}
