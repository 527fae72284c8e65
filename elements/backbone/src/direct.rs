//! Inference with a body regressor ([`crate::regressor`]: HKMR or the flat HMR/SPIN one): crops
//! -> local rotations, shape and a camera translation, the same per-person quantities the IK
//! solvers produce, so the mesher follows unchanged.
//!
//! Weights are our safetensors with the [`RegressorNetConfig`] as JSON metadata
//! ([`REGRESSOR_CONFIG_KEY`]), written by [`DirectRegressor::save`] and by `ikol-train` for a
//! regressor model.
//!
//! **Camera.** The network's weak-perspective camera `(s, tx, ty)` maps root-relative joints
//! `X` to normalised crop coordinates `s X_xy + t` (-1 .. 1 over the crop side, SPIN). For a
//! crop of side `L` frame pixels seen by a camera of focal length `f`, the perspective camera
//! that agrees with it at the root puts the root at depth `Tz = 2 f / (s L)` (SPIN's
//! `convert_weak_perspective_to_perspective`, generalised to crops off the image centre) and on
//! the ray through the crop point `t`: `T = unproject(crop_to_frame(t), Tz)`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ikol_types::nalgebra::Matrix3;
use ikol_types::rotation::matrix_to_axis_angle;
use ikol_types::{Affine2, Crop, Intrinsics};

use crate::backbone::PersonBox;
use crate::preprocess::{RgbFrame, crop_for_box, crops_tensor};
use crate::regressor::{RegressorNet, RegressorNetConfig, RegressorStep, RotationRepr};
use crate::{Error, Result};

/// Safetensors metadata key holding the JSON [`RegressorNetConfig`].
pub const REGRESSOR_CONFIG_KEY: &str = "ikol.regressor.config";

/// Smallest weak-perspective scale taken as a camera (a person 1000 crops away is not one).
const MIN_SCALE: f64 = 1e-3;

/// A loaded regressor network (evaluation mode).
#[derive(Debug, Clone)]
pub struct DirectRegressor {
    net: RegressorNet,
    cfg: RegressorNetConfig,
    params: HashMap<String, Tensor>,
    device: Device,
}

/// One person's regressed body.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyEstimate {
    /// The crop the network saw.
    pub crop: Crop,
    /// 24 local rotations, axis-angle, root first (camera frame).
    pub theta: Vec<[f64; 3]>,
    pub beta: Vec<f64>,
    /// Weak-perspective camera (s, tx, ty).
    pub cam: [f64; 3],
    /// Camera-frame root position (metres), `None` when the camera is degenerate.
    pub translation: Option<[f64; 3]>,
}

fn unreadable(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::CheckpointUnreadable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl DirectRegressor {
    /// Reads our safetensors file (config in the metadata, every parameter present, finite).
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|e| unreadable(path, e))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&data)
            .map_err(|e| unreadable(path, format!("not a safetensors file: {e}")))?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(REGRESSOR_CONFIG_KEY))
            .ok_or_else(|| {
                unreadable(
                    path,
                    format!(
                        "no {REGRESSOR_CONFIG_KEY} metadata: not a regressor (HKMR / flat) \
                         checkpoint (a heatmap network loads with model=heatmap)"
                    ),
                )
            })?;
        let cfg: RegressorNetConfig = serde_json::from_str(json)
            .map_err(|e| unreadable(path, format!("bad {REGRESSOR_CONFIG_KEY}: {e}")))?;
        cfg.validate()
            .map_err(|e| unreadable(path, format!("config: {e}")))?;
        let tensors = candle_core::safetensors::load_buffer(&data, &Device::Cpu)
            .map_err(|e| unreadable(path, e))?;
        Self::from_tensors(path, &cfg, tensors, device)
    }

    /// Builds from named tensors after checking names, shapes and values against `cfg`.
    pub fn from_tensors(
        origin: &Path,
        cfg: &RegressorNetConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let expected = expected_parameters(cfg)?;
        let mut problems = Vec::new();
        for (name, shape) in &expected {
            match tensors.get(name) {
                None => problems.push(format!("missing {name}")),
                Some(t) if t.dims() != shape.as_slice() => problems.push(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.dims()
                )),
                Some(_) => {}
            }
        }
        let mut extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !expected.contains_key(*k) && !crate::weights::is_ignored_key(k))
            .collect();
        extra.sort();
        problems.extend(extra.into_iter().map(|k| format!("unexpected {k}")));
        if !problems.is_empty() {
            return Err(unreadable(origin, problems.join("; ")));
        }
        let mut params = HashMap::with_capacity(expected.len());
        let mut bad = Vec::new();
        for name in expected.keys() {
            let t = tensors[name].to_dtype(DType::F32)?;
            if t.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .any(|x| !x.is_finite())
            {
                bad.push(name.clone());
            }
            params.insert(name.clone(), t.to_device(device)?);
        }
        if !bad.is_empty() {
            return Err(unreadable(
                origin,
                format!("non-finite (NaN or infinite) values in {}", bad.join(", ")),
            ));
        }
        let vb = VarBuilder::from_tensors(params.clone(), DType::F32, device);
        Ok(Self {
            net: RegressorNet::new(cfg, vb)?,
            cfg: *cfg,
            params,
            device: device.clone(),
        })
    }

    /// The network of a training `VarMap` (parameters and BatchNorm statistics), for
    /// evaluation and checkpoints.
    pub fn from_varmap(
        cfg: &RegressorNetConfig,
        varmap: &candle_nn::VarMap,
        device: &Device,
    ) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .map_err(|_| Error::InvalidInput("parameter map poisoned".into()))?
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<_>>()?;
        Self::from_tensors(Path::new("<training parameters>"), cfg, tensors, device)
    }

    /// A network with freshly initialised weights (PyTorch's defaults, HMR's small decoders):
    /// what training starts from; untrained, it predicts about the initial upright pose.
    pub fn initialised(cfg: &RegressorNetConfig, device: &Device) -> Result<Self> {
        let varmap = candle_nn::VarMap::new();
        RegressorNet::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Self::from_varmap(cfg, &varmap, device)
    }

    pub fn net(&self) -> &RegressorNet {
        &self.net
    }

    pub fn config(&self) -> &RegressorNetConfig {
        &self.cfg
    }

    /// Writes our safetensors (config in the metadata).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save_regressor(path.as_ref(), &self.cfg, &self.params)
    }

    /// The network's last step on normalised crops `[N, 3, S, S]`.
    pub fn infer(&self, crops: &Tensor) -> Result<RegressorStep> {
        let crops = crops.to_device(&self.device)?.to_dtype(DType::F32)?;
        let mut steps = self.net.forward_t(&crops, false)?;
        steps
            .pop()
            .ok_or_else(|| Error::InvalidInput("the regressor ran no iteration".into()))
    }

    /// Crops every person, runs the network as one batch and places each body in the camera.
    pub fn estimate(
        &self,
        frame: &RgbFrame<'_>,
        people: &[PersonBox],
        intrinsics: &Intrinsics,
    ) -> Result<Vec<BodyEstimate>> {
        if people.is_empty() {
            return Ok(Vec::new());
        }
        if !intrinsics.is_valid() {
            return Err(Error::InvalidInput(format!(
                "invalid intrinsics {intrinsics:?}"
            )));
        }
        let crops = people
            .iter()
            .map(|p| crop_for_box(&p.bbox, self.cfg.input_size))
            .collect::<Result<Vec<_>>>()?;
        let host = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.to_device(&Device::Cpu)?
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?)
        };
        let (mut theta, mut beta, mut cam) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in crops.chunks(crate::backbone::MAX_BATCH) {
            let step = self.infer(&crops_tensor(frame, chunk, &self.device)?)?;
            // Axis-angle out: as the head gives it, or from the matrices of a 6D head.
            match step.rotation {
                RotationRepr::AxisAngle => theta.extend(host(&step.theta)?),
                RotationRepr::SixD => {
                    theta.extend(host(&step.rotations()?)?.chunks_exact(9).flat_map(|m| {
                        let w = matrix_to_axis_angle(&Matrix3::from_row_slice(m));
                        [w.x, w.y, w.z]
                    }))
                }
            }
            beta.extend(host(&step.beta)?);
            cam.extend(host(&step.cam)?);
        }
        let nb = self.cfg.head.num_betas;
        let joints = theta.len() / (3 * crops.len());
        Ok(crops
            .into_iter()
            .enumerate()
            .map(|(i, crop)| {
                let cam = [cam[3 * i], cam[3 * i + 1], cam[3 * i + 2]];
                BodyEstimate {
                    theta: theta[3 * joints * i..3 * joints * (i + 1)]
                        .chunks_exact(3)
                        .map(|c| [c[0], c[1], c[2]])
                        .collect(),
                    beta: beta[nb * i..nb * (i + 1)].to_vec(),
                    translation: crop
                        .affine()
                        .inverse()
                        .and_then(|inv| weak_to_translation(&cam, &inv, crop.size, intrinsics)),
                    cam,
                    crop,
                }
            })
            .collect())
    }
}

/// Whether `path` is one of our regressor checkpoints (its metadata names the config); reads
/// only the header.
pub fn is_regressor_checkpoint(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return false;
    }
    // The JSON header of a safetensors file, bounded: a header is a few kB per hundred tensors.
    let n = u64::from_le_bytes(len);
    if n > 64 << 20 {
        return false;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).is_ok()
        && serde_json::from_slice::<serde_json::Value>(&header).is_ok_and(|v| {
            v.get("__metadata__")
                .and_then(|m| m.get(REGRESSOR_CONFIG_KEY))
                .is_some()
        })
}

/// The camera-frame root position that agrees with the weak-perspective camera `cam` of a crop
/// (module docs): `crop_to_frame` maps crop pixels (`size` square) to frame pixels. `None` for a
/// scale below `MIN_SCALE`, a degenerate crop or a root nearer than `MIN_ROOT_DEPTH_M` (a
/// crop far larger than the person gives such a depth: followed, it would grow without bound).
pub fn weak_to_translation(
    cam: &[f64; 3],
    crop_to_frame: &Affine2,
    size: u32,
    k: &Intrinsics,
) -> Option<[f64; 3]> {
    let [s, tx, ty] = *cam;
    let side = f64::from(size) * crop_to_frame.scale();
    if !(s.is_finite() && tx.is_finite() && ty.is_finite())
        || s < MIN_SCALE
        || !side.is_finite()
        || side <= 0.0
    {
        return None;
    }
    let z = 2.0 * k.fx / (s * side);
    if z < ikol_types::camera::MIN_ROOT_DEPTH_M {
        return None;
    }
    let half = f64::from(size) / 2.0;
    let [u, v] = crop_to_frame.apply([half + tx * half, half + ty * half]);
    let p = k.unproject(u, v, z);
    let t = [p.x, p.y, p.z];
    t.iter().all(|x| x.is_finite()).then_some(t)
}

/// Every parameter the network of `cfg` reads, with its shape.
pub fn expected_parameters(
    cfg: &RegressorNetConfig,
) -> Result<std::collections::BTreeMap<String, Vec<usize>>> {
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    RegressorNet::new(cfg, vb)?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::InvalidInput("parameter map poisoned".into()))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().dims().to_vec()))
        .collect())
}

/// Writes `tensors` as our safetensors with `cfg` in the metadata.
pub fn save_regressor(
    path: &Path,
    cfg: &RegressorNetConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let json = serde_json::to_string(cfg).map_err(|e| Error::InvalidInput(e.to_string()))?;
    crate::weights::write_safetensors(path, REGRESSOR_CONFIG_KEY, json, tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regressor::{RegressorConfig, RegressorKind};
    use ikol_types::BBox;
    use nalgebra::Vector3;

    #[test]
    fn the_translation_agrees_with_the_weak_camera_at_the_root() {
        let k = Intrinsics {
            fx: 1500.0,
            fy: 1500.0,
            cx: 540.0,
            cy: 960.0,
        };
        // An off-centre crop of side 500 px.
        let crop = Crop::from_box(
            &BBox {
                x: 100.0,
                y: 300.0,
                w: 200.0,
                h: 400.0,
            },
            1.25,
            224,
        );
        let cam = [0.8, 0.1, -0.2];
        let inv = crop.affine().inverse().unwrap();
        let t = weak_to_translation(&cam, &inv, crop.size, &k).unwrap();
        let to_crop = |p: Vector3<f64>| {
            let a = crop.affine().apply(k.project(&p).unwrap());
            [a[0] / 112.0 - 1.0, a[1] / 112.0 - 1.0]
        };
        let root = Vector3::from(t);
        let r = to_crop(root);
        assert!(
            (r[0] - 0.1).abs() < 1e-9 && (r[1] + 0.2).abs() < 1e-9,
            "{r:?}"
        );
        // A small root-relative offset moves s times as far in normalised crop units.
        for d in [Vector3::new(1e-4, 0.0, 0.0), Vector3::new(0.0, 1e-4, 0.0)] {
            let q = to_crop(root + d);
            let moved = ((q[0] - r[0]).powi(2) + (q[1] - r[1]).powi(2)).sqrt();
            assert!((moved / 1e-4 - 0.8).abs() < 1e-3, "{moved}");
        }
        assert!(weak_to_translation(&[0.0, 0.0, 0.0], &inv, crop.size, &k).is_none());
        assert!(weak_to_translation(&[f64::NAN, 0.0, 0.0], &inv, crop.size, &k).is_none());
        // A root nearer than 0.3 m: 2 f / (s L) = 3000 / (s 500) < 0.3 for s > 20.
        assert!(weak_to_translation(&[25.0, 0.0, 0.0], &inv, crop.size, &k).is_none());
    }

    /// A network of `cfg` with freshly initialised weights.
    fn untrained(cfg: &RegressorNetConfig) -> DirectRegressor {
        let varmap = candle_nn::VarMap::new();
        RegressorNet::new(
            cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        DirectRegressor::from_varmap(cfg, &varmap, &Device::Cpu).unwrap()
    }

    /// `net` written to `path` and read back.
    fn saved_and_loaded(net: &DirectRegressor, path: &Path) -> DirectRegressor {
        net.save(path).unwrap();
        DirectRegressor::load(path, &Device::Cpu).unwrap()
    }

    #[test]
    fn checkpoints_round_trip_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("ikol-direct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = RegressorNetConfig::tiny(RegressorKind::Hkmr);
        let net = untrained(&cfg);
        let path = dir.join("hkmr.safetensors");
        let back = saved_and_loaded(&net, &path);
        assert!(is_regressor_checkpoint(&path));
        assert_eq!(back.config(), &cfg);
        let x = Tensor::ones((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let (a, b) = (net.infer(&x).unwrap(), back.infer(&x).unwrap());
        let diff = (a.theta - b.theta)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);

        // A heatmap network's file, a missing tensor, a NaN.
        let mut tensors = back.params.clone();
        let heat = dir.join("heat.safetensors");
        crate::weights::save_safetensors(
            &heat,
            &crate::Config::tiny(crate::Variant::Ikol24),
            &tensors,
        )
        .unwrap();
        let e = DirectRegressor::load(&heat, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("heat.safetensors") && e.contains("not a regressor"),
            "{e}"
        );
        let name = "regressor.camera.2.bias".to_string();
        let good = tensors.remove(&name).unwrap();
        let e = DirectRegressor::from_tensors(&path, &cfg, tensors.clone(), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing regressor.camera.2.bias"), "{e}");
        tensors.insert(name, (good * f64::NAN).unwrap());
        let e = DirectRegressor::from_tensors(&path, &cfg, tensors, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("non-finite") && e.contains("camera.2.bias"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn six_d_checkpoints_round_trip_and_older_configs_read_as_axis_angle() {
        let dir = std::env::temp_dir().join(format!("ikol-direct6d-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = RegressorNetConfig::tiny(RegressorKind::Flat);
        cfg.head.rotation = RotationRepr::SixD;
        let back = saved_and_loaded(&untrained(&cfg), &dir.join("flat6d.safetensors"));
        assert_eq!(back.config(), &cfg);
        let x = Tensor::ones((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let step = back.infer(&x).unwrap();
        assert_eq!(step.theta.dims(), &[1, 24, 6]);
        assert_eq!(step.rotations().unwrap().dims(), &[1, 24, 3, 3]);
        // A checkpoint's config from before the field existed.
        let mut v = serde_json::to_value(cfg.head).unwrap();
        v.as_object_mut().unwrap().remove("rotation");
        let old: RegressorConfig = serde_json::from_value(v).unwrap();
        assert_eq!(old.rotation, RotationRepr::AxisAngle);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
