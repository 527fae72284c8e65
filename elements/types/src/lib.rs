//! Types shared by every ikol stage: joint tables (SMPL-24, HybrIK-29, H36M-17), rotations,
//! camera intrinsics, boxes and the crop affine, and the per-frame results.
//!
//! Units everywhere: metres, radians, pixels. Camera frame as OpenCV (x right, y down, z forward);
//! body-model frame as SMPL (y up, z toward the viewer, x to the subject's left).

pub mod camera;
pub mod crop;
pub mod joints;
pub mod result;
pub mod rotation;
pub mod yuv;

pub use camera::{DEFAULT_HFOV_DEG, Intrinsics};
pub use crop::{Affine2, BBox, BOX_SCALE_MULT, CROP_SIZE, Crop, MAX_BOX_PX, MAX_BOXES};
pub use nalgebra;
pub use result::{FrameResult, PersonResult};
pub use yuv::YuvMatrix;
