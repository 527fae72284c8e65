//! Our body-model file: one safetensors file (format `ikol-body-model`, version 1) holding
//! `v_template` F32 [V,3], `shapedirs` F32 [V,3,B], optional `posedirs` F32 [V,3,207],
//! `faces` I32 [F,3], `parents` I32 [24], sparse CSR triplets `weights.{indptr,indices,data}`
//! (V x 24), `j_regressor.*` (24 x V), optional `j_regressor_h36m.*` (17 x V), optional
//! `leaf_vertices` I32 [5]; and string metadata `format`, `format_version`, `name`,
//! `joint_names` (JSON array), `num_betas`, `licence`, `attribution`, `source`, `rest_pose`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{BodyError, Result};
use crate::model::{BodyModel, BodyModelParts, POSE_FEATURES};
use crate::sparse::Csr;

pub const FORMAT: &str = "ikol-body-model";
pub const FORMAT_VERSION: &str = "1";

fn format_err(path: &Path, message: impl Into<String>) -> BodyError {
    BodyError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

struct Reader<'a> {
    st: SafeTensors<'a>,
    path: &'a Path,
}

impl Reader<'_> {
    fn view(&self, key: &str) -> Result<Option<TensorView<'_>>> {
        match self.st.tensor(key) {
            Ok(v) => Ok(Some(v)),
            Err(safetensors::SafeTensorError::TensorNotFound(_)) => Ok(None),
            Err(e) => Err(BodyError::bad(self.path, key, e.to_string())),
        }
    }

    fn required(&self, key: &str) -> Result<TensorView<'_>> {
        self.view(key)?.ok_or_else(|| BodyError::MissingKey {
            path: self.path.to_path_buf(),
            key: key.into(),
        })
    }

    fn f32s(&self, v: &TensorView<'_>, key: &str) -> Result<Vec<f32>> {
        match v.dtype() {
            Dtype::F32 => Ok(v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            Dtype::F64 => Ok(v
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(std::array::from_fn(|i| b[i])) as f32)
                .collect()),
            d => Err(BodyError::bad(
                self.path,
                key,
                format!("element type {d:?}, expected F32"),
            )),
        }
    }

    fn i64s(&self, v: &TensorView<'_>, key: &str) -> Result<Vec<i64>> {
        match v.dtype() {
            Dtype::I32 => Ok(v
                .data()
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect()),
            Dtype::I64 => Ok(v
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(std::array::from_fn(|i| b[i])))
                .collect()),
            d => Err(BodyError::bad(
                self.path,
                key,
                format!("element type {d:?}, expected I32"),
            )),
        }
    }

    fn dense_f32(&self, key: &str, shape_tail: &[usize]) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let Some(v) = self.view(key)? else {
            return Ok(None);
        };
        let shape = v.shape().to_vec();
        if shape.len() != shape_tail.len() + 1
            || shape[1..]
                .iter()
                .zip(shape_tail)
                .any(|(&a, &b)| b != 0 && a != b)
        {
            return Err(BodyError::bad(
                self.path,
                key,
                format!("shape {shape:?}, expected [N, {shape_tail:?}]"),
            ));
        }
        Ok(Some((self.f32s(&v, key)?, shape)))
    }

    fn csr(&self, key: &str, rows: usize, cols: usize) -> Result<Option<Csr>> {
        let Some(indptr) = self.view(&format!("{key}.indptr"))? else {
            return Ok(None);
        };
        let indptr = self.i64s(&indptr, key)?;
        let indices = self.i64s(&self.required(&format!("{key}.indices"))?, key)?;
        let data = self.f32s(&self.required(&format!("{key}.data"))?, key)?;
        if indptr
            .iter()
            .chain(&indices)
            .any(|&i| i < 0 || i > u32::MAX as i64)
        {
            return Err(BodyError::bad(
                self.path,
                key,
                "negative or oversized sparse index",
            ));
        }
        Ok(Some(Csr {
            rows,
            cols,
            indptr: indptr.iter().map(|&i| i as usize).collect(),
            indices: indices.iter().map(|&i| i as u32).collect(),
            data: data.iter().map(|&x| f64::from(x)).collect(),
        }))
    }
}

/// Reads our safetensors body-model format from bytes; `path` names the source in errors.
pub fn read(bytes: &[u8], path: &Path) -> Result<BodyModel> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format_err(path, format!("not a safetensors file: {e}")))?;
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| format_err(path, e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).cloned();
    if get("format").as_deref() != Some(FORMAT) {
        return Err(format_err(
            path,
            format!(
                "metadata `format` is {:?}, expected \"{FORMAT}\"",
                get("format")
            ),
        ));
    }
    if get("format_version").as_deref() != Some(FORMAT_VERSION) {
        return Err(format_err(
            path,
            format!("unsupported format_version {:?}", get("format_version")),
        ));
    }
    let r = Reader { st, path };
    let (v_template, vshape) =
        r.dense_f32("v_template", &[3])?
            .ok_or_else(|| BodyError::MissingKey {
                path: path.into(),
                key: "v_template".into(),
            })?;
    let nv = vshape[0];
    let (shapedirs, sshape) =
        r.dense_f32("shapedirs", &[3, 0])?
            .ok_or_else(|| BodyError::MissingKey {
                path: path.into(),
                key: "shapedirs".into(),
            })?;
    if sshape[0] != nv {
        return Err(BodyError::bad(
            path,
            "shapedirs",
            format!("shape {sshape:?}, expected [{nv}, 3, B]"),
        ));
    }
    let posedirs = match r.dense_f32("posedirs", &[3, POSE_FEATURES])? {
        Some((p, s)) if s[0] == nv => Some(p),
        Some((_, s)) => {
            return Err(BodyError::bad(
                path,
                "posedirs",
                format!("shape {s:?}, expected [{nv}, 3, 207]"),
            ));
        }
        None => None,
    };
    let faces_v = r.required("faces")?;
    if faces_v.shape().len() != 2 || faces_v.shape()[1] != 3 {
        return Err(BodyError::bad(
            path,
            "faces",
            format!("shape {:?}, expected [F, 3]", faces_v.shape()),
        ));
    }
    let faces_i = r.i64s(&faces_v, "faces")?;
    if let Some(&bad) = faces_i.iter().find(|&&i| i < 0 || i as usize >= nv) {
        return Err(BodyError::bad(
            path,
            "faces",
            format!("vertex index {bad} out of range (V = {nv})"),
        ));
    }
    let faces = faces_i
        .chunks_exact(3)
        .map(|f| [f[0] as u32, f[1] as u32, f[2] as u32])
        .collect();
    let parents = r.i64s(&r.required("parents")?, "parents")?;
    let missing = |key: &str| BodyError::MissingKey {
        path: path.into(),
        key: format!("{key}.indptr"),
    };
    let weights = r
        .csr("weights", nv, 24)?
        .ok_or_else(|| missing("weights"))?;
    let j_regressor = r
        .csr("j_regressor", 24, nv)?
        .ok_or_else(|| missing("j_regressor"))?;
    let j_regressor_h36m = r.csr("j_regressor_h36m", 17, nv)?;
    let leaf_vertices = match r.view("leaf_vertices")? {
        Some(v) => {
            let l = r.i64s(&v, "leaf_vertices")?;
            let l: [i64; 5] = l.try_into().map_err(|l: Vec<i64>| {
                BodyError::bad(
                    path,
                    "leaf_vertices",
                    format!("{} entries, expected 5", l.len()),
                )
            })?;
            if l.iter().any(|&i| i < 0) {
                return Err(BodyError::bad(
                    path,
                    "leaf_vertices",
                    "negative vertex index",
                ));
            }
            Some(l.map(|i| i as usize))
        }
        None => None,
    };
    let joint_names = match get("joint_names") {
        Some(s) => Some(
            serde_json::from_str::<Vec<String>>(&s)
                .map_err(|e| BodyError::bad(path, "joint_names", e.to_string()))?,
        ),
        None => None,
    };
    let licence = [get("licence"), get("attribution")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n");
    let name = get("name").unwrap_or_else(|| {
        path.file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned())
    });
    BodyModel::from_parts(
        BodyModelParts {
            name,
            v_template,
            num_betas: sshape[2],
            shapedirs,
            posedirs,
            j_regressor,
            weights,
            parents,
            faces,
            leaf_vertices,
            j_regressor_h36m,
            joint_names,
            licence,
        },
        path,
    )
}

/// Serialises a model in our format (used to convert SMPL files and by tests).
pub fn write(m: &BodyModel, metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
    let nv = m.num_vertices();
    let f32b = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let i32b = |v: &mut dyn Iterator<Item = i64>| {
        v.flat_map(|x| (x as i32).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let mut t: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
        (
            "v_template".into(),
            Dtype::F32,
            vec![nv, 3],
            f32b(&m.v_template),
        ),
        (
            "shapedirs".into(),
            Dtype::F32,
            vec![nv, 3, m.num_betas],
            f32b(&m.shapedirs),
        ),
        (
            "faces".into(),
            Dtype::I32,
            vec![m.faces.len(), 3],
            i32b(&mut m.faces.iter().flatten().map(|&i| i64::from(i))),
        ),
        (
            "parents".into(),
            Dtype::I32,
            vec![24],
            i32b(&mut m.parents.iter().map(|&p| i64::from(p))),
        ),
    ];
    if let Some(pd) = &m.posedirs {
        // Back from feature-major to [V, 3, 207].
        let mut o = vec![0f32; pd.len()];
        for k in 0..POSE_FEATURES {
            for i in 0..nv * 3 {
                o[i * POSE_FEATURES + k] = pd[k * nv * 3 + i];
            }
        }
        t.push((
            "posedirs".into(),
            Dtype::F32,
            vec![nv, 3, POSE_FEATURES],
            f32b(&o),
        ));
    }
    let mut sparse = |key: &str, c: &Csr| {
        t.push((
            format!("{key}.indptr"),
            Dtype::I32,
            vec![c.indptr.len()],
            i32b(&mut c.indptr.iter().map(|&i| i as i64)),
        ));
        t.push((
            format!("{key}.indices"),
            Dtype::I32,
            vec![c.indices.len()],
            i32b(&mut c.indices.iter().map(|&i| i64::from(i))),
        ));
        t.push((
            format!("{key}.data"),
            Dtype::F32,
            vec![c.data.len()],
            f32b(&c.data.iter().map(|&x| x as f32).collect::<Vec<_>>()),
        ));
    };
    sparse("weights", &m.weights);
    sparse("j_regressor", &m.j_regressor);
    if let Some(h) = &m.j_regressor_h36m {
        sparse("j_regressor_h36m", h);
    }
    if let Some(l) = m.leaf_vertices {
        t.push((
            "leaf_vertices".into(),
            Dtype::I32,
            vec![5],
            i32b(&mut l.iter().map(|&i| i as i64)),
        ));
    }
    let views: Vec<(String, TensorView<'_>)> = t
        .iter()
        .map(|(k, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (k.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(|e| BodyError::Input {
            model: m.name.clone(),
            message: e.to_string(),
        })?;
    let mut meta = metadata.clone();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("format_version".into(), FORMAT_VERSION.into());
    meta.entry("name".into()).or_insert_with(|| m.name.clone());
    meta.insert("num_betas".into(), m.num_betas.to_string());
    meta.insert(
        "joint_names".into(),
        serde_json::to_string(&m.joint_names).unwrap_or_default(),
    );
    meta.entry("licence".into())
        .or_insert_with(|| m.licence.clone());
    safetensors::serialize(views, Some(meta)).map_err(|e| BodyError::Input {
        model: m.name.clone(),
        message: e.to_string(),
    })
}
