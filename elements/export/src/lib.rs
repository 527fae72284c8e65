//! ikol-export: motion out of ikol. A tracked person's solved frames become a [`Take`] (one
//! skeleton, a fixed frame rate, a Y-up world; see [`take`] for the orientation and timeline)
//! written as:
//! - **BVH** ([`bvh`]): the skeleton with SMPL joint names, root position + ZYX Euler channels,
//!   centimetres;
//! - **glTF 2.0 binary** ([`gltf`]): the skinned mesh of the take's shape with one animation;
//! - **TRC** ([`trc`]): OpenSim / Pose2Sim markers (joints and surface points), millimetres;
//! - **NPZ** ([`npz`]): SMPL parameters as AMASS stores them (`poses`, `betas`, `trans`,
//!   `mocap_framerate`, `gender`).
//!
//! ```
//! use ikol_export::{Format, Take, TrackSample};
//! let model = ikol_body::BodyModel::embedded_small()?;
//! let mut theta = vec![[0.0; 3]; 24];
//! theta[0] = [std::f64::consts::PI, 0.0, 0.0]; // upright in the camera (y down)
//! let s = TrackSample { frame: 0, theta, translation: [0.0, 0.0, 3.0], beta: vec![] };
//! let take = Take::new(1, &[s], 30.0, None, &model)?;
//! let bvh = Format::Bvh.encode(&take, &model, &[])?;
//! assert!(bvh.starts_with(b"HIERARCHY"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bvh;
pub mod gltf;
pub mod npz;
pub mod take;
pub mod trc;

use std::path::Path;

pub use take::{Marker, Take, TrackSample, joint_markers, world_from_camera};

/// What can go wrong writing a take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The motion or the markers cannot be written (names the track and the problem).
    #[error("{0}")]
    Input(String),
    /// Posing the body model failed.
    #[error("body model: {0}")]
    Body(#[from] ikol_body::BodyError),
    /// Encoding the NPZ failed.
    #[error("npz: {0}")]
    Npy(#[from] ikol_body::npy::NpyError),
    /// Writing the file failed.
    #[error("cannot write `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The motion file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Bvh,
    Glb,
    Trc,
    Npz,
}

impl Format {
    /// Every format, in the order the docs list them.
    pub const ALL: [Format; 4] = [Format::Bvh, Format::Glb, Format::Trc, Format::Npz];

    /// The file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Bvh => "bvh",
            Format::Glb => "glb",
            Format::Trc => "trc",
            Format::Npz => "npz",
        }
    }

    /// The format a path's extension names (case-insensitive), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Format::ALL.into_iter().find(|f| f.extension() == ext)
    }

    /// The file's bytes. `markers` are extra surface markers for TRC (after the 24 joints);
    /// the other formats ignore them.
    pub fn encode(
        self,
        take: &Take,
        model: &ikol_body::BodyModel,
        markers: &[Marker],
    ) -> Result<Vec<u8>, ExportError> {
        match self {
            Format::Bvh => Ok(bvh::encode(take, model).into_bytes()),
            Format::Glb => gltf::encode(take, model),
            Format::Trc => {
                let mut all = joint_markers();
                all.extend_from_slice(markers);
                Ok(trc::encode(take, model, &all, "take.trc")?.into_bytes())
            }
            Format::Npz => npz::encode(take),
        }
    }

    /// Writes the take to `path` (created or truncated; written whole, then renamed into place,
    /// so a reader never sees half a file).
    pub fn write(
        self,
        take: &Take,
        model: &ikol_body::BodyModel,
        markers: &[Marker],
        path: &Path,
    ) -> Result<(), ExportError> {
        let bytes = match self {
            Format::Trc => {
                let mut all = joint_markers();
                all.extend_from_slice(markers);
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                trc::encode(take, model, &all, &name)?.into_bytes()
            }
            _ => self.encode(take, model, markers)?,
        };
        let io = |source| ExportError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".part");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}
