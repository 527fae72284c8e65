//! Reading users' SMPL-format model files into plain arrays ([`SmplArrays`]), without Python.
//!
//! Two layouts are read:
//! - the original SMPL `.pkl` (Python 2 pickle, protocol 2, as `basicModel_neutral_lbs_10_207_0_v1.0.0.pkl`
//!   and the v1.1.0 files): `v_template`, `shapedirs`, `posedirs`, `J` may be chumpy `Ch` objects
//!   (pickled as `NEWOBJ chumpy.ch.Ch` + `BUILD` of a state dict whose `x` entry is the numpy array),
//!   `J_regressor` is a `scipy.sparse.csc_matrix` (state dict with `_shape`, `data`, `indices`,
//!   `indptr`), `weights`, `kintree_table`, `f` are numpy arrays, `bs_style` / `bs_type` strings.
//!   Python 3 re-dumps of these files (protocol 2 to 5) read the same way;
//! - the smplx-style `.npz` (same keys as plain arrays, `J_regressor` dense).
//!
//! The layout is chosen from the first bytes (zip `PK\x03\x04` = npz, `\x80` PROTO = pickle) and
//! otherwise from the extension. Arrays are checked against one another (vertex count V from
//! `v_template`, joint count J from `kintree_table`): `shapedirs [V,3,B]`, `posedirs [V,3,9(J-1)]`,
//! `J_regressor [J,V]`, `weights [V,J]`, `f [F,3]` with indices < V, parents preceding their
//! children, and every float finite. Every error names the file and, where one is at fault, the
//! key.
//!
//! Parents follow SMPL's own `smpl_webuser/verts.py`: `kintree_table` row 1 holds joint ids, row 0
//! the parent ids; column 0 is the root (SMPL stores 4294967295 there, i.e. `-1` as uint32) and
//! gets parent -1.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use crate::error::{BodyError, Result};
use crate::npy::{DType, NdArray, NpyError, read_npz_members};
use crate::pickle::{Value, read_pickle};
use crate::sparse::Csr;

/// Which file layout an [`SmplArrays`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmplFileFormat {
    /// Python pickle (`.pkl`).
    Pickle,
    /// NumPy zip archive (`.npz`).
    Npz,
}

/// Options of [`load_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Keep at most this many shape components (SMPL v1.1.0 files carry 300; the networks use
    /// 10). Slicing adds a message to [`SmplArrays::warnings`].
    pub max_betas: Option<usize>,
    /// Required joint count (`Some(24)` for SMPL; `None` accepts any, e.g. SMPL-H 52).
    pub num_joints: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_betas: None,
            num_joints: Some(24),
        }
    }
}

/// An SMPL-format model as plain arrays (float64, C order), checked for consistency.
#[derive(Debug, Clone, PartialEq)]
pub struct SmplArrays {
    /// Layout of the source file.
    pub format: SmplFileFormat,
    /// V.
    pub num_vertices: usize,
    /// J (24 for SMPL).
    pub num_joints: usize,
    /// B, after `max_betas` slicing.
    pub num_betas: usize,
    /// Template vertices `[V*3]`.
    pub v_template: Vec<f64>,
    /// Shape directions `[V*3*B]` (vertex, coordinate, component).
    pub shapedirs: Vec<f64>,
    /// Pose blend shapes `[V*3*P]`, P = 9 (J - 1) (vertex, coordinate, feature), if present.
    pub posedirs: Option<Vec<f64>>,
    /// Joint regressor, J rows x V columns (explicit zeros dropped, columns sorted per row).
    pub j_regressor: Csr,
    /// The file's rest joints `J [J*3]` (template shape), if present.
    pub joints_template: Option<Vec<f64>>,
    /// Skinning weights `[V*J]`, dense.
    pub weights: Vec<f64>,
    /// Parent of every joint, -1 for the root.
    pub parents: Vec<i64>,
    /// Triangles `[F*3]`.
    pub faces: Vec<u32>,
    /// HybrIK's 5 leaf vertices (head top, left/right middle fingertip, left/right big toe)
    /// from the optional key `leaf_vertex_ids` (or `leaf_vertices`), for models whose vertex
    /// ids are not SMPL's.
    pub leaf_vertices: Option<[usize; 5]>,
    /// `bs_style` (`"lbs"` in SMPL files), if present.
    pub bs_style: Option<String>,
    /// `bs_type` (`"lrotmin"` in SMPL files), if present.
    pub bs_type: Option<String>,
    /// Non-fatal findings (sliced betas, weights not summing to one, ...), each naming the file.
    pub warnings: Vec<String>,
}

impl SmplArrays {
    /// Number of triangles.
    pub fn num_faces(&self) -> usize {
        self.faces.len() / 3
    }

    /// The skinning weights as a sparse V x J matrix (exact zeros dropped).
    pub fn weights_csr(&self) -> Csr {
        Csr::from_dense(self.num_vertices, self.num_joints, &self.weights, 0.0)
    }
}

/// Loads an SMPL `.pkl` or `.npz` with default options (24 joints, all shape components).
pub fn load(path: impl AsRef<Path>) -> Result<SmplArrays> {
    load_with(path, &LoadOptions::default())
}

/// Loads an SMPL `.pkl` or `.npz`.
pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<SmplArrays> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| BodyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes, path, opts)
}

/// Parses a model file held in memory; `path` is used for the layout (extension) and messages.
pub fn from_bytes(bytes: &[u8], path: &Path, opts: &LoadOptions) -> Result<SmplArrays> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        SmplFileFormat::Npz
    } else if bytes.first() == Some(&0x80) {
        SmplFileFormat::Pickle
    } else {
        match ext.as_deref() {
            Some("npz") => SmplFileFormat::Npz,
            Some("pkl" | "pickle") => SmplFileFormat::Pickle,
            _ => {
                return Err(BodyError::Format {
                    path: path.to_path_buf(),
                    message: format!(
                        "not an SMPL .pkl or .npz model (first bytes {:02x?})",
                        &bytes[..bytes.len().min(8)]
                    ),
                });
            }
        }
    };
    match format {
        SmplFileFormat::Pickle => {
            let value = read_pickle(bytes).map_err(|e| BodyError::Format {
                path: path.to_path_buf(),
                message: format!("cannot read the SMPL pickle: {e}"),
            })?;
            if value.as_dict().is_none() {
                return Err(BodyError::Format {
                    path: path.to_path_buf(),
                    message: format!(
                        "the pickle holds a {}, not the dict of an SMPL model",
                        value.type_name()
                    ),
                });
            }
            extract(Source::Pickle(&value), path, format, opts)
        }
        SmplFileFormat::Npz => {
            let members = read_npz_members(Cursor::new(bytes)).map_err(|e| BodyError::Format {
                path: path.to_path_buf(),
                message: format!("cannot read the npz archive: {e}"),
            })?;
            extract(Source::Npz(&members), path, format, opts)
        }
    }
}

// ---------------------------------------------------------------------------------------------

enum Source<'a> {
    Pickle(&'a Value),
    Npz(&'a BTreeMap<String, std::result::Result<NdArray, NpyError>>),
}

/// A numeric entry: a dense array or a (structurally checked) sparse matrix.
enum Entry<'a> {
    Dense(&'a NdArray),
    Sparse(Sparse),
}

/// A scipy sparse matrix as (row, column, value) triplets, sorted, explicit zeros dropped. The
/// dimensions come from the file and are only trusted after the caller compares them with the
/// model's, so nothing here allocates from them.
struct Sparse {
    rows: usize,
    cols: usize,
    trip: Vec<(u32, u32, f64)>,
}

impl Sparse {
    fn to_csr(&self) -> Csr {
        let mut m = Csr {
            rows: self.rows,
            cols: self.cols,
            indptr: vec![0; self.rows + 1],
            indices: Vec::with_capacity(self.trip.len()),
            data: Vec::with_capacity(self.trip.len()),
        };
        for &(r, c, x) in &self.trip {
            m.indptr[r as usize + 1] += 1;
            m.indices.push(c);
            m.data.push(x);
        }
        for r in 0..self.rows {
            m.indptr[r + 1] += m.indptr[r];
        }
        m
    }
}

struct Reader<'a> {
    src: Source<'a>,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn bad(&self, key: &str, message: impl Into<String>) -> BodyError {
        BodyError::BadArray {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn missing(&self, key: &str) -> BodyError {
        BodyError::MissingKey {
            path: self.path.to_path_buf(),
            key: key.to_owned(),
        }
    }

    /// The entry under `key`, `None` if absent.
    fn entry(&self, key: &str) -> Result<Option<Entry<'a>>> {
        match &self.src {
            Source::Npz(m) => match m.get(key) {
                None => Ok(None),
                Some(Ok(a)) => Ok(Some(Entry::Dense(a))),
                Some(Err(e)) => Err(self.bad(key, format!("cannot read the array: {e}"))),
            },
            Source::Pickle(v) => match v.get(key) {
                None => Ok(None),
                Some(x) => self.value_entry(key, x, 0).map(Some),
            },
        }
    }

    fn value_entry(&self, key: &str, v: &'a Value, depth: usize) -> Result<Entry<'a>> {
        match v {
            Value::Array(a) => Ok(Entry::Dense(a)),
            Value::Object(o) if o.module.starts_with("chumpy") => {
                // chumpy.ch.Ch keeps its value in the state dict's `x`; other chumpy classes
                // are lazy expressions this reader cannot evaluate.
                match v.get("x") {
                    Some(x) if depth < 4 => self.value_entry(key, x, depth + 1),
                    _ => Err(self.bad(
                        key,
                        format!(
                            "is a chumpy expression ({}) without a stored array `x`; re-save the model with plain numpy arrays",
                            o.qualname()
                        ),
                    )),
                }
            }
            Value::Object(o) if o.module.starts_with("scipy.sparse") => {
                self.sparse(key, v, &o.name).map(Entry::Sparse)
            }
            other => Err(self.bad(
                key,
                format!("expected a numpy array, found {}", other.type_name()),
            )),
        }
    }

    /// A scipy `csc_matrix` / `csr_matrix` (or `_array`) from its pickled state.
    fn sparse(&self, key: &str, v: &Value, class: &str) -> Result<Sparse> {
        let kind = if class.starts_with("csc") {
            "csc"
        } else if class.starts_with("csr") {
            "csr"
        } else {
            return Err(self.bad(
                key,
                format!("scipy sparse class {class} is not supported (csc or csr only)"),
            ));
        };
        let shape = v.get("_shape").or_else(|| v.get("shape"));
        let dims: Vec<i64> = shape
            .and_then(Value::as_list)
            .map(|l| l.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let (rows, cols) = match dims.as_slice() {
            [r, c]
                if *r >= 0 && *c >= 0 && *r <= i64::from(u32::MAX) && *c <= i64::from(u32::MAX) =>
            {
                (*r as usize, *c as usize)
            }
            _ => return Err(self.bad(key, "scipy sparse matrix without a 2-D `_shape`")),
        };
        let arr = |name: &str| -> Result<&NdArray> {
            v.get(name)
                .and_then(Value::as_array)
                .ok_or_else(|| self.bad(key, format!("scipy sparse matrix without `{name}` array")))
        };
        let conv = |e: NpyError| self.bad(key, e.to_string());
        let data = arr("data")?.to_f64().map_err(conv)?;
        let indices = arr("indices")?.to_i64().map_err(conv)?;
        let indptr = arr("indptr")?.to_i64().map_err(conv)?;
        // compressed axis: columns for csc, rows for csr
        let (n_major, n_minor) = if kind == "csc" {
            (cols, rows)
        } else {
            (rows, cols)
        };
        if indptr.len() != n_major + 1 {
            return Err(self.bad(
                key,
                format!(
                    "{kind} indptr has {} entries for {n_major} {}",
                    indptr.len(),
                    if kind == "csc" { "columns" } else { "rows" }
                ),
            ));
        }
        let nnz = data.len();
        if indices.len() != nnz
            || indptr.first() != Some(&0)
            || indptr.windows(2).any(|w| w[0] > w[1])
            || indptr.last().copied() != i64::try_from(nnz).ok()
        {
            return Err(self.bad(
                key,
                format!(
                    "inconsistent {kind} structure: indptr must rise from 0 to nnz = {nnz}, with {} indices",
                    indices.len()
                ),
            ));
        }
        if let Some(&bad) = indices
            .iter()
            .find(|&&i| i < 0 || i as u64 >= n_minor as u64 || i > i64::from(u32::MAX))
        {
            return Err(self.bad(
                key,
                format!("{kind} index {bad} out of range (size {n_minor})"),
            ));
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(self.bad(key, format!("sparse value {i} is {}", data[i])));
        }
        // Gather (row, col, value) triplets, drop explicit zeros, build sorted CSR.
        let mut trip: Vec<(u32, u32, f64)> = Vec::with_capacity(nnz);
        for major in 0..n_major {
            for k in indptr[major] as usize..indptr[major + 1] as usize {
                if data[k] == 0.0 {
                    continue;
                }
                let (r, c) = if kind == "csc" {
                    (indices[k] as u32, major as u32)
                } else {
                    (major as u32, indices[k] as u32)
                };
                trip.push((r, c, data[k]));
            }
        }
        trip.sort_by_key(|&(r, c, _)| (r, c));
        if trip
            .windows(2)
            .any(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1))
        {
            return Err(self.bad(key, "sparse matrix has duplicate entries"));
        }
        Ok(Sparse { rows, cols, trip })
    }

    /// A required float array. A sparse matrix is accepted (and densified) only when `dims` says
    /// which 2-D shape is expected.
    fn dense(&self, key: &str, dims: Option<(usize, usize)>) -> Result<(Vec<usize>, Vec<f64>)> {
        self.dense_opt(key, dims)?.ok_or_else(|| self.missing(key))
    }

    /// An optional float array (see [`Reader::dense`]), NaN/inf refused.
    fn dense_opt(
        &self,
        key: &str,
        dims: Option<(usize, usize)>,
    ) -> Result<Option<(Vec<usize>, Vec<f64>)>> {
        let Some(e) = self.entry(key)? else {
            return Ok(None);
        };
        let (shape, values) = match e {
            Entry::Dense(a) => (
                a.shape.clone(),
                a.to_f64().map_err(|e| self.bad(key, e.to_string()))?,
            ),
            Entry::Sparse(m) => match dims {
                Some(d) if d == (m.rows, m.cols) => (vec![m.rows, m.cols], m.to_csr().to_dense()),
                Some((r, c)) => {
                    return Err(self.bad(
                        key,
                        format!("sparse shape [{}, {}], expected [{r}, {c}]", m.rows, m.cols),
                    ));
                }
                None => {
                    return Err(
                        self.bad(key, "expected a dense array, found a scipy sparse matrix")
                    );
                }
            },
        };
        self.finite(key, &shape, &values)?;
        Ok(Some((shape, values)))
    }

    fn finite(&self, key: &str, shape: &[usize], values: &[f64]) -> Result<()> {
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            // C-order multi-index of element i
            let mut idx = vec![0usize; shape.len()];
            let mut rem = i;
            for d in (0..shape.len()).rev() {
                if shape[d] > 0 {
                    idx[d] = rem % shape[d];
                    rem /= shape[d];
                }
            }
            return Err(self.bad(
                key,
                format!("value at index {idx:?} is {} (must be finite)", values[i]),
            ));
        }
        Ok(())
    }

    /// A required integer array.
    fn ints(&self, key: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let e = self.entry(key)?.ok_or_else(|| self.missing(key))?;
        let Entry::Dense(a) = e else {
            return Err(self.bad(key, "expected an integer array, found a sparse matrix"));
        };
        let values = if a.dtype == DType::U64 {
            // uint64 all-ones is -1 written unsigned; other values must fit in i64
            let mut out = Vec::with_capacity(a.len());
            let c = a.to_c_order().map_err(|e| self.bad(key, e.to_string()))?;
            for ch in c.data.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(ch);
                let u = u64::from_le_bytes(b);
                out.push(if u == u64::MAX {
                    -1
                } else {
                    i64::try_from(u).map_err(|_| self.bad(key, format!("value {u} too large")))?
                });
            }
            out
        } else {
            a.to_i64().map_err(|e| self.bad(key, e.to_string()))?
        };
        Ok((a.shape.clone(), values))
    }

    /// An optional string entry (pickle `str` / py2 `str`; npz string arrays are not read).
    fn string(&self, key: &str) -> Option<String> {
        match &self.src {
            Source::Pickle(v) => v.get(key).and_then(|x| x.as_str()).map(|s| s.into_owned()),
            Source::Npz(_) => None,
        }
    }
}

fn extract(
    src: Source<'_>,
    path: &Path,
    format: SmplFileFormat,
    opts: &LoadOptions,
) -> Result<SmplArrays> {
    let rd = Reader { src, path };
    let mut warnings = Vec::new();
    let shape_str = |s: &[usize]| format!("{s:?}");

    // ---- vertices
    let (vt_shape, v_template) = rd.dense("v_template", None)?;
    let nv = match vt_shape.as_slice() {
        [v, 3] if *v > 0 => *v,
        _ => {
            return Err(rd.bad(
                "v_template",
                format!("shape {}, expected [V, 3]", shape_str(&vt_shape)),
            ));
        }
    };

    // ---- kinematic tree (gives J)
    let (kt_shape, kt) = rd.ints("kintree_table")?;
    let nj = match kt_shape.as_slice() {
        [2, j] if *j > 0 => *j,
        _ => {
            return Err(rd.bad(
                "kintree_table",
                format!("shape {}, expected [2, J]", shape_str(&kt_shape)),
            ));
        }
    };
    if let Some(want) = opts.num_joints
        && nj != want
    {
        return Err(rd.bad(
            "kintree_table",
            format!("the model has {nj} joints, expected {want}"),
        ));
    }
    let (parent_ids, joint_ids) = kt.split_at(nj);
    let col_of = |id: i64| joint_ids.iter().position(|&x| x == id);
    let mut parents = vec![-1i64; nj];
    for j in 1..nj {
        let p = col_of(parent_ids[j]).ok_or_else(|| {
            rd.bad(
                "kintree_table",
                format!(
                    "joint {j} names parent id {} that is not a joint id",
                    parent_ids[j]
                ),
            )
        })?;
        if p >= j {
            return Err(rd.bad(
                "kintree_table",
                format!("joint {j} has parent {p}; parents must precede their children"),
            ));
        }
        parents[j] = p as i64;
    }
    let mut sorted_ids = joint_ids.to_vec();
    sorted_ids.sort_unstable();
    if sorted_ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(rd.bad("kintree_table", "row 1 repeats a joint id"));
    }

    // ---- shape blend shapes
    let (sd_shape, mut shapedirs) = rd.dense("shapedirs", None)?;
    let mut nb = match sd_shape.as_slice() {
        [v, 3, b] if *v == nv && *b > 0 => *b,
        _ => {
            return Err(rd.bad(
                "shapedirs",
                format!("shape {}, expected [V={nv}, 3, B]", shape_str(&sd_shape)),
            ));
        }
    };
    if let Some(max) = opts.max_betas {
        if max == 0 {
            return Err(rd.bad("shapedirs", "max_betas = 0 would leave no shape components"));
        }
        if nb > max {
            shapedirs = shapedirs
                .chunks_exact(nb)
                .flat_map(|row| row[..max].iter().copied())
                .collect();
            warnings.push(format!(
                "{}: shapedirs has {nb} shape components; keeping the first {max} (max_betas)",
                path.display()
            ));
            nb = max;
        }
    }

    // ---- pose blend shapes (optional)
    let posedirs = match rd.dense_opt("posedirs", None)? {
        None => None,
        Some((shape, values)) => {
            let p = 9 * (nj - 1);
            if shape.as_slice() != [nv, 3, p] {
                return Err(rd.bad(
                    "posedirs",
                    format!(
                        "shape {}, expected [V={nv}, 3, 9*(J-1)={p}]",
                        shape_str(&shape)
                    ),
                ));
            }
            Some(values)
        }
    };

    // ---- joint regressor
    let j_regressor = match rd.entry("J_regressor")? {
        None => return Err(rd.missing("J_regressor")),
        Some(Entry::Sparse(m)) => {
            if (m.rows, m.cols) != (nj, nv) {
                return Err(rd.bad(
                    "J_regressor",
                    format!(
                        "sparse shape [{}, {}], expected [J={nj}, V={nv}]",
                        m.rows, m.cols
                    ),
                ));
            }
            m.to_csr()
        }
        Some(Entry::Dense(a)) => {
            let values = a
                .to_f64()
                .map_err(|e| rd.bad("J_regressor", e.to_string()))?;
            rd.finite("J_regressor", &a.shape, &values)?;
            if a.shape.len() != 2 {
                return Err(rd.bad(
                    "J_regressor",
                    format!("shape {}, expected [J={nj}, V={nv}]", shape_str(&a.shape)),
                ));
            }
            Csr::from_dense(a.shape[0], a.shape[1], &values, 0.0)
        }
    };
    if (j_regressor.rows, j_regressor.cols) != (nj, nv) {
        return Err(rd.bad(
            "J_regressor",
            format!(
                "shape [{}, {}], expected [J={nj}, V={nv}]",
                j_regressor.rows, j_regressor.cols
            ),
        ));
    }
    j_regressor
        .validate()
        .map_err(|m| rd.bad("J_regressor", m))?;

    // ---- skinning weights
    let (w_shape, weights) = rd.dense("weights", Some((nv, nj)))?;
    if w_shape.as_slice() != [nv, nj] {
        return Err(rd.bad(
            "weights",
            format!("shape {}, expected [V={nv}, J={nj}]", shape_str(&w_shape)),
        ));
    }
    let off_rows = weights
        .chunks_exact(nj)
        .filter(|row| (row.iter().sum::<f64>() - 1.0).abs() > 1e-3)
        .count();
    if off_rows > 0 {
        warnings.push(format!(
            "{}: weights: {off_rows} of {nv} vertices have weights not summing to 1",
            path.display()
        ));
    }
    if weights.iter().any(|&w| w < 0.0) {
        warnings.push(format!(
            "{}: weights: negative skinning weights",
            path.display()
        ));
    }

    // ---- faces
    let (f_shape, f) = rd.ints("f")?;
    if f_shape.len() != 2 || f_shape[1] != 3 {
        return Err(rd.bad(
            "f",
            format!("shape {}, expected [F, 3]", shape_str(&f_shape)),
        ));
    }
    let mut faces = Vec::with_capacity(f.len());
    for (i, &x) in f.iter().enumerate() {
        if x < 0 || x as u64 >= nv as u64 {
            return Err(rd.bad(
                "f",
                format!(
                    "face {} uses vertex index {x}, but the model has {nv} vertices",
                    i / 3
                ),
            ));
        }
        faces.push(x as u32);
    }

    // ---- optional extras
    let joints_template = match rd.dense_opt("J", None)? {
        None => None,
        Some((shape, values)) => {
            if shape.as_slice() != [nj, 3] {
                return Err(rd.bad(
                    "J",
                    format!("shape {}, expected [J={nj}, 3]", shape_str(&shape)),
                ));
            }
            Some(values)
        }
    };
    // ---- HybrIK leaf vertices (optional)
    let mut leaf_vertices = None;
    for key in ["leaf_vertex_ids", "leaf_vertices"] {
        if leaf_vertices.is_some() || rd.entry(key)?.is_none() {
            continue;
        }
        let (shape, ids) = rd.ints(key)?;
        let ids: Vec<usize> = ids
            .iter()
            .map(|&i| usize::try_from(i).ok().filter(|&i| i < nv))
            .collect::<Option<_>>()
            .ok_or_else(|| rd.bad(key, format!("a vertex id outside 0..{nv}")))?;
        leaf_vertices = Some(<[usize; 5]>::try_from(ids).map_err(|_| {
            rd.bad(
                key,
                format!(
                    "shape {}, expected [5] (head top, fingertips, big toes)",
                    shape_str(&shape)
                ),
            )
        })?);
    }
    let bs_style = rd.string("bs_style");
    let bs_type = rd.string("bs_type");
    if let Some(s) = &bs_style
        && s != "lbs"
    {
        warnings.push(format!(
            "{}: bs_style is '{s}'; only linear blend skinning ('lbs') is implemented",
            path.display()
        ));
    }

    Ok(SmplArrays {
        format,
        num_vertices: nv,
        num_joints: nj,
        num_betas: nb,
        v_template,
        shapedirs,
        posedirs,
        j_regressor,
        joints_template,
        weights,
        parents,
        faces,
        leaf_vertices,
        bs_style,
        bs_type,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickle::PyObject;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }
    fn arr(a: NdArray) -> Value {
        Value::Array(a)
    }
    fn obj(module: &str, name: &str, state: Vec<(Value, Value)>) -> Value {
        Value::Object(Box::new(PyObject {
            module: module.into(),
            name: name.into(),
            args: Value::Tuple(vec![]),
            state: Value::Dict(state),
            list_items: vec![],
            dict_items: vec![],
        }))
    }

    /// A 4-vertex, 2-joint model with a scipy csr J_regressor, a uint64 kintree whose root is
    /// 2^64-1 and whose joint ids are not 0..J (ids 7, 3: joint 1 has parent id 7 = column 0).
    fn tiny(j_regressor: Value) -> Value {
        let vt: Vec<f64> = (0..12).map(f64::from).collect();
        let kt: Vec<u8> = [u64::MAX, 7, 7, 3]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        Value::Dict(vec![
            (
                s("v_template"),
                obj(
                    "chumpy.ch",
                    "Ch",
                    vec![(s("x"), arr(NdArray::from_f64(&[4, 3], &vt).unwrap()))],
                ),
            ),
            (
                s("shapedirs"),
                arr(NdArray::from_f64(&[4, 3, 1], &[0.5; 12]).unwrap()),
            ),
            (s("J_regressor"), j_regressor),
            (
                s("weights"),
                arr(
                    NdArray::from_f64(&[4, 2], &[1.0, 0.0, 0.5, 0.5, 0.0, 1.0, 0.25, 0.75])
                        .unwrap(),
                ),
            ),
            (
                s("kintree_table"),
                arr(NdArray::new(vec![2, 2], DType::U64, false, kt).unwrap()),
            ),
            (
                s("f"),
                arr(NdArray::from_i64(&[2, 3], &[0, 1, 2, 1, 2, 3]).unwrap()),
            ),
            (
                Value::Bytes(b"bs_style".to_vec()),
                Value::Bytes(b"lbs".to_vec()),
            ),
        ])
    }

    /// scipy.sparse.csr_matrix([[0, 0.5, 0.5, 0], [0, 0, 0, 1]]) state, with an explicit zero and
    /// unsorted columns in row 0.
    fn csr_state() -> Value {
        obj(
            "scipy.sparse._csr",
            "csr_matrix",
            vec![
                (
                    s("_shape"),
                    Value::Tuple(vec![Value::Int(2), Value::Int(4)]),
                ),
                (
                    s("data"),
                    arr(NdArray::from_f64(&[4], &[0.5, 0.0, 0.5, 1.0]).unwrap()),
                ),
                (
                    s("indices"),
                    arr(NdArray::from_i32(&[4], &[2, 0, 1, 3]).unwrap()),
                ),
                (
                    s("indptr"),
                    arr(NdArray::from_i32(&[3], &[0, 3, 4]).unwrap()),
                ),
            ],
        )
    }

    fn opts() -> LoadOptions {
        LoadOptions {
            max_betas: None,
            num_joints: None,
        }
    }

    #[test]
    fn csr_regressor_uint64_kintree_and_joint_ids() {
        let v = tiny(csr_state());
        let m = extract(
            Source::Pickle(&v),
            Path::new("tiny.pkl"),
            SmplFileFormat::Pickle,
            &opts(),
        )
        .unwrap();
        assert_eq!(m.parents, vec![-1, 0]);
        assert_eq!(m.j_regressor.indptr, vec![0, 2, 3]);
        assert_eq!(m.j_regressor.indices, vec![1, 2, 3]);
        assert_eq!(m.j_regressor.data, vec![0.5, 0.5, 1.0]);
        assert_eq!(m.v_template[11], 11.0);
        assert_eq!(m.bs_style.as_deref(), Some("lbs"));
        assert!(m.warnings.is_empty());
        // default options want 24 joints
        let e = extract(
            Source::Pickle(&v),
            Path::new("tiny.pkl"),
            SmplFileFormat::Pickle,
            &LoadOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "tiny.pkl: key `kintree_table`: the model has 2 joints, expected 24"
        );
    }

    #[test]
    fn bad_sparse_and_objects() {
        let check = |jr: Value, want: &str| {
            let v = tiny(jr);
            let e = extract(
                Source::Pickle(&v),
                Path::new("t.pkl"),
                SmplFileFormat::Pickle,
                &opts(),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with("t.pkl: key `J_regressor`: ") && e.contains(want),
                "{e}"
            );
        };
        let with = |key: &str, val: Value| {
            let Value::Object(mut o) = csr_state() else {
                unreachable!()
            };
            if let Value::Dict(d) = &mut o.state {
                for (k, v) in d.iter_mut() {
                    if k.as_str().as_deref() == Some(key) {
                        *v = val.clone();
                    }
                }
            }
            Value::Object(o)
        };
        check(
            with(
                "indices",
                arr(NdArray::from_i32(&[4], &[2, 0, 1, 9]).unwrap()),
            ),
            "csr index 9 out of range (size 4)",
        );
        check(
            with("indptr", arr(NdArray::from_i32(&[3], &[0, 5, 4]).unwrap())),
            "inconsistent csr structure",
        );
        check(
            with("indptr", arr(NdArray::from_i32(&[2], &[0, 4]).unwrap())),
            "csr indptr has 2 entries for 2 rows",
        );
        check(
            with("_shape", Value::Tuple(vec![Value::Int(2), Value::Int(5)])),
            "sparse shape [2, 5], expected [J=2, V=4]",
        );
        check(
            with(
                "data",
                arr(NdArray::from_f64(&[4], &[0.5, f64::NAN, 0.5, 1.0]).unwrap()),
            ),
            "is NaN",
        );
        check(
            obj("scipy.sparse._coo", "coo_matrix", vec![]),
            "coo_matrix is not supported",
        );
        check(
            obj("chumpy.ch_ops", "add", vec![]),
            "chumpy expression (chumpy.ch_ops.add)",
        );
        check(s("nope"), "expected a numpy array, found str");
        // a huge bogus csc row count is refused by the shape check before any allocation
        let huge = obj(
            "scipy.sparse.csc",
            "csc_matrix",
            vec![
                (
                    s("_shape"),
                    Value::Tuple(vec![Value::Int(4_000_000_000), Value::Int(4)]),
                ),
                (s("data"), arr(NdArray::from_f64(&[0], &[]).unwrap())),
                (s("indices"), arr(NdArray::from_i32(&[0], &[]).unwrap())),
                (s("indptr"), arr(NdArray::from_i32(&[5], &[0; 5]).unwrap())),
            ],
        );
        check(huge, "sparse shape [4000000000, 4], expected [J=2, V=4]");
    }

    #[test]
    fn format_detection() {
        let e = from_bytes(b"\x80\x02N.", Path::new("m.pkl"), &opts())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "m.pkl: the pickle holds a None, not the dict of an SMPL model"
        );
        // protocol-0 pickles have no PROTO byte: chosen by the extension
        let e = from_bytes(b"(dp0\n.", Path::new("m.pkl"), &opts())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "m.pkl: missing key `v_template`");
        let e = from_bytes(b"(dp0\n.", Path::new("m.dat"), &opts())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an SMPL .pkl or .npz"), "{e}");
    }
}
