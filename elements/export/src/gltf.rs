//! glTF 2.0 binary (`.glb`): the take's body as a skinned mesh with one animation.
//!
//! - Mesh: the rest vertices of the take's shape (model frame: y up, facing +z, metres; glTF's
//!   own convention), smooth normals, the model's triangles, a light grey PBR material.
//! - Skin: 24 joint nodes named as SMPL names them, each translated from its parent by the rest
//!   bone (the root by its rest position), inverse bind matrices `translate(-J_j)` (the rest pose
//!   has no joint rotation); `JOINTS_0`/`WEIGHTS_0` the model's skinning weights limited to the 4
//!   largest per vertex and renormalised to sum to 1. Pose blend shapes (SMPL's corrective
//!   offsets) have no glTF equivalent, so the glTF body is plain linear blend skinning.
//! - Animation `take`: per joint a rotation channel (unit quaternions, LINEAR interpolation,
//!   sign-continuous frame to frame), and the root's translation channel (the root joint's world
//!   position); key times `i / fps` seconds.
//!
//! The file passes the Khronos glTF validator with no errors (tested in `make test`).

use ikol_body::BodyModel;
use ikol_body::nalgebra::{Rotation3, UnitQuaternion, Vector3};
use ikol_types::joints::SMPL24_NAMES;
use serde_json::{Value, json};

use crate::{ExportError, Take};

const ARRAY_BUFFER: u32 = 34962;
const ELEMENT_ARRAY_BUFFER: u32 = 34963;
const FLOAT: u32 = 5126;
const UNSIGNED_BYTE: u32 = 5121;
const UNSIGNED_INT: u32 = 5125;

/// Skinning influences per vertex that glTF's `JOINTS_0`/`WEIGHTS_0` carry.
pub const INFLUENCES: usize = 4;

/// The binary chunk and the JSON objects that point into it.
#[derive(Default)]
struct Builder {
    bin: Vec<u8>,
    views: Vec<Value>,
    accessors: Vec<Value>,
}

impl Builder {
    /// Appends `bytes` as a buffer view (4-byte aligned) and one accessor over it; returns the
    /// accessor index.
    fn add(
        &mut self,
        bytes: &[u8],
        target: Option<u32>,
        component: u32,
        kind: &str,
        count: usize,
        min_max: Option<(Vec<f32>, Vec<f32>)>,
    ) -> usize {
        while !self.bin.len().is_multiple_of(4) {
            self.bin.push(0);
        }
        let mut view =
            json!({"buffer": 0, "byteOffset": self.bin.len(), "byteLength": bytes.len()});
        if let Some(t) = target {
            view["target"] = json!(t);
        }
        self.bin.extend_from_slice(bytes);
        self.views.push(view);
        let mut acc = json!({
            "bufferView": self.views.len() - 1,
            "componentType": component,
            "count": count,
            "type": kind,
        });
        if let Some((lo, hi)) = min_max {
            acc["min"] = json!(lo);
            acc["max"] = json!(hi);
        }
        self.accessors.push(acc);
        self.accessors.len() - 1
    }

    /// f32 rows of `width` components, with per-component min/max when asked.
    fn floats(
        &mut self,
        values: &[f32],
        width: usize,
        kind: &str,
        target: Option<u32>,
        bounds: bool,
    ) -> usize {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let min_max = bounds.then(|| {
            let mut lo = vec![f32::MAX; width];
            let mut hi = vec![f32::MIN; width];
            for row in values.chunks_exact(width) {
                for c in 0..width {
                    lo[c] = lo[c].min(row[c]);
                    hi[c] = hi[c].max(row[c]);
                }
            }
            (lo, hi)
        });
        self.add(&bytes, target, FLOAT, kind, values.len() / width, min_max)
    }
}

/// Area-weighted vertex normals (unit; +y where a vertex has no face).
fn normals(v: &[f32], faces: &[[u32; 3]]) -> Vec<f32> {
    let p = |i: u32| {
        let i = i as usize * 3;
        Vector3::new(f64::from(v[i]), f64::from(v[i + 1]), f64::from(v[i + 2]))
    };
    let mut acc = vec![Vector3::<f64>::zeros(); v.len() / 3];
    for f in faces {
        let n = (p(f[1]) - p(f[0])).cross(&(p(f[2]) - p(f[0])));
        for &i in f {
            acc[i as usize] += n;
        }
    }
    acc.iter()
        .flat_map(|n| {
            let u = n.try_normalize(1e-20).unwrap_or(Vector3::y());
            [u.x as f32, u.y as f32, u.z as f32]
        })
        .collect()
}

/// The 4 largest skinning weights of every vertex, renormalised so the f32 values sum to 1
/// (the largest takes the rounding), as (`JOINTS_0` u8, `WEIGHTS_0` f32).
fn influences(model: &BodyModel) -> Result<(Vec<u8>, Vec<f32>), ExportError> {
    let nv = model.num_vertices();
    let mut joints = Vec::with_capacity(nv * INFLUENCES);
    let mut weights = Vec::with_capacity(nv * INFLUENCES);
    for r in 0..nv {
        let mut row: Vec<(usize, f64)> = model.weights.row(r).filter(|&(_, w)| w > 0.0).collect();
        row.sort_by(|a, b| b.1.total_cmp(&a.1));
        row.truncate(INFLUENCES);
        let total: f64 = row.iter().map(|&(_, w)| w).sum();
        if row.is_empty() || total <= 0.0 {
            return Err(ExportError::Input(format!(
                "glTF: vertex {r} of the body model has no skinning weight"
            )));
        }
        let mut w4 = [0f32; INFLUENCES];
        let mut j4 = [0u8; INFLUENCES];
        for (k, &(j, w)) in row.iter().enumerate() {
            j4[k] = u8::try_from(j).map_err(|_| {
                ExportError::Input(format!("glTF: joint {j} does not fit JOINTS_0"))
            })?;
            w4[k] = (w / total) as f32;
        }
        w4[0] = 1.0 - w4[1..].iter().sum::<f32>();
        joints.extend_from_slice(&j4);
        weights.extend_from_slice(&w4);
    }
    Ok((joints, weights))
}

/// The `.glb` bytes of a take.
pub fn encode(take: &Take, model: &BodyModel) -> Result<Vec<u8>, ExportError> {
    let n = take.len();
    let nj = take.rest_joints.len();
    let verts = model.shaped_vertices(&take.beta)?;
    let mut b = Builder::default();
    let position = b.floats(&verts, 3, "VEC3", Some(ARRAY_BUFFER), true);
    let normal = b.floats(
        &normals(&verts, &model.faces),
        3,
        "VEC3",
        Some(ARRAY_BUFFER),
        false,
    );
    let (j4, w4) = influences(model)?;
    let nv = model.num_vertices();
    let joints0 = b.add(&j4, Some(ARRAY_BUFFER), UNSIGNED_BYTE, "VEC4", nv, None);
    let weights0 = b.floats(&w4, 4, "VEC4", Some(ARRAY_BUFFER), false);
    let idx: Vec<u8> = model
        .faces
        .iter()
        .flatten()
        .flat_map(|i| i.to_le_bytes())
        .collect();
    let indices = b.add(
        &idx,
        Some(ELEMENT_ARRAY_BUFFER),
        UNSIGNED_INT,
        "SCALAR",
        model.faces.len() * 3,
        None,
    );
    // Inverse bind matrices, column-major: translate(-J_j).
    let ibm: Vec<f32> = take
        .rest_joints
        .iter()
        .flat_map(|j| {
            let mut m = [0f32; 16];
            m[0] = 1.0;
            m[5] = 1.0;
            m[10] = 1.0;
            m[15] = 1.0;
            m[12] = -j.x as f32;
            m[13] = -j.y as f32;
            m[14] = -j.z as f32;
            m
        })
        .collect();
    let ibm = b.floats(&ibm, 16, "MAT4", None, false);
    // Animation.
    let times: Vec<f32> = (0..n).map(|i| (i as f64 / take.fps) as f32).collect();
    let input = b.floats(&times, 1, "SCALAR", None, true);
    let mut samplers = Vec::with_capacity(nj + 1);
    let mut channels = Vec::with_capacity(nj + 1);
    for j in 0..nj {
        let mut prev: Option<UnitQuaternion<f64>> = None;
        let mut q = Vec::with_capacity(n * 4);
        for i in 0..n {
            let mut u = UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(
                take.rotations[i][j],
            ));
            if let Some(p) = prev
                && p.coords.dot(&u.coords) < 0.0
            {
                u = UnitQuaternion::new_unchecked(-u.into_inner());
            }
            prev = Some(u);
            // glTF order: x, y, z, w.
            q.extend([u.i as f32, u.j as f32, u.k as f32, u.w as f32]);
        }
        let output = b.floats(&q, 4, "VEC4", None, false);
        samplers.push(json!({"input": input, "output": output, "interpolation": "LINEAR"}));
        channels.push(json!({"sampler": j, "target": {"node": j, "path": "rotation"}}));
    }
    let root: Vec<f32> = take
        .root
        .iter()
        .flat_map(|r| [r.x as f32, r.y as f32, r.z as f32])
        .collect();
    let output = b.floats(&root, 3, "VEC3", None, false);
    samplers.push(json!({"input": input, "output": output, "interpolation": "LINEAR"}));
    channels.push(json!({"sampler": nj, "target": {"node": 0, "path": "translation"}}));
    // Nodes: joints 0..nj (root 0), then the skinned mesh (a root node without transform).
    let mut nodes = Vec::with_capacity(nj + 1);
    for j in 0..nj {
        let t = match usize::try_from(model.parents[j]) {
            Ok(p) => take.rest_joints[j] - take.rest_joints[p],
            Err(_) => take.rest_joints[j],
        };
        let mut node = json!({
            "name": SMPL24_NAMES.get(j).copied().unwrap_or("joint"),
            "translation": [t.x as f32, t.y as f32, t.z as f32],
        });
        let children: Vec<usize> = (0..nj)
            .filter(|&c| usize::try_from(model.parents[c]) == Ok(j))
            .collect();
        if !children.is_empty() {
            node["children"] = json!(children);
        }
        nodes.push(node);
    }
    let roots: Vec<usize> = (0..nj).filter(|&j| model.parents[j] < 0).collect();
    if roots != [0] {
        return Err(ExportError::Input(
            "glTF: the body model's skeleton must have joint 0 as its only root".into(),
        ));
    }
    nodes.push(json!({"name": format!("body_{}", take.track_id), "mesh": 0, "skin": 0}));
    while !b.bin.len().is_multiple_of(4) {
        b.bin.push(0);
    }
    let doc = json!({
        "asset": {"version": "2.0", "generator": concat!("ikol-export ", env!("CARGO_PKG_VERSION"))},
        "scene": 0,
        "scenes": [{"name": format!("track {}", take.track_id), "nodes": [0, nj]}],
        "nodes": nodes,
        "meshes": [{"name": model.name, "primitives": [{
            "attributes": {"POSITION": position, "NORMAL": normal, "JOINTS_0": joints0,
                           "WEIGHTS_0": weights0},
            "indices": indices,
            "material": 0,
            "mode": 4,
        }]}],
        "materials": [{"name": "skin", "pbrMetallicRoughness": {
            "baseColorFactor": [0.8, 0.78, 0.75, 1.0], "metallicFactor": 0.0,
            "roughnessFactor": 0.7}}],
        "skins": [{"name": "smpl", "joints": (0..nj).collect::<Vec<_>>(),
                   "inverseBindMatrices": ibm, "skeleton": 0}],
        "animations": [{"name": "take", "samplers": samplers, "channels": channels}],
        "buffers": [{"byteLength": b.bin.len()}],
        "bufferViews": b.views,
        "accessors": b.accessors,
    });
    let mut text = serde_json::to_vec(&doc)
        .map_err(|e| ExportError::Input(format!("glTF: cannot encode JSON: {e}")))?;
    while !text.len().is_multiple_of(4) {
        text.push(b' ');
    }
    let total = 12 + 8 + text.len() + 8 + b.bin.len();
    let total = u32::try_from(total)
        .map_err(|_| ExportError::Input(format!("glTF: {total} bytes is over 4 GiB")))?;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(b"glTF");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    for (chunk, kind) in [(&text, b"JSON"), (&b.bin, b"BIN\0")] {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrackSample;

    #[test]
    fn container_and_skin() {
        let model = BodyModel::embedded_small().unwrap();
        let mut theta = vec![[0.0; 3]; 24];
        theta[0] = [std::f64::consts::PI, 0.0, 0.0];
        let s = |frame| TrackSample {
            frame,
            theta: theta.clone(),
            translation: [0.0, 0.0, 3.0],
            beta: vec![],
        };
        let take = Take::new(5, &[s(0), s(2)], 30.0, None, &model).unwrap();
        let glb = encode(&take, &model).unwrap();
        assert_eq!(&glb[..4], b"glTF");
        assert_eq!(
            u32::from_le_bytes(glb[8..12].try_into().unwrap()) as usize,
            glb.len()
        );
        let jlen = u32::from_le_bytes(glb[12..16].try_into().unwrap()) as usize;
        assert_eq!(&glb[16..20], b"JSON");
        let doc: Value = serde_json::from_slice(&glb[20..20 + jlen]).unwrap();
        assert_eq!(doc["nodes"].as_array().unwrap().len(), 25);
        assert_eq!(
            doc["animations"][0]["channels"].as_array().unwrap().len(),
            25
        );
        assert_eq!(
            doc["accessors"][doc["animations"][0]["samplers"][0]["input"]
                .as_u64()
                .unwrap() as usize]["count"],
            3
        );
        // Weights: 4 per vertex summing to 1 in f32.
        let (j4, w4) = influences(&model).unwrap();
        assert_eq!(j4.len(), 4 * model.num_vertices());
        for w in w4.chunks_exact(4) {
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 2e-7 && w.iter().all(|&x| x >= 0.0));
        }
    }
}
