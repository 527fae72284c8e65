//! ikol-eval: the papers' evaluation, shared by the `ikoleval` element, `ikol eval-3dpw` and the
//! training crate.
//!
//! * [`metrics`]: MPJPE, PA-MPJPE (similarity Procrustes), mean distances;
//! * [`pw3d`]: 3DPW sequence files (Python 2 pickles) and the dataset tree;
//! * [`protocol`]: the 3DPW protocol on posed meshes (14 H36M joints, PVE, 24 joints) and its
//!   reports (table, per-sequence CSV, summary JSON).

pub mod metrics;
pub mod protocol;
pub mod pw3d;

pub use protocol::{Report, Scores, score};
pub use pw3d::{DatasetError, Sequence};
