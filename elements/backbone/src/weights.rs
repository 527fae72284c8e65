//! Weights: upstream PyTorch checkpoints (HybrIK / IKOL `.pth`, the zip format of torch >= 1.6)
//! and our safetensors files.
//!
//! * Key names are the upstream `state_dict` names (see [`crate::net`]). A `module.` prefix
//!   (`nn.DataParallel`) is stripped, and a wrapper dict (`{"state_dict": ...}`, `{"model": ...}`,
//!   as training scripts save) is unwrapped.
//! * Known extras are ignored: `num_batches_tracked` of every BatchNorm and the `smpl.*` buffers
//!   of the upstream body-model layer. Anything else that the network does not use, every key it
//!   needs that the file lacks, and every shape mismatch is reported in one
//!   [`Error::CheckpointMismatch`] naming the file.
//! * The architecture is read from the tensors themselves ([`infer_config`]): ResNet depth and
//!   width, deconvolution filters, depth bins, FC width. Our safetensors also carry the
//!   [`Config`] as JSON metadata (`ikol.backbone.config`).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::config::{BlockKind, Config, ResNetConfig, Variant};
use crate::net::HeatmapNet;
use crate::pth::PthDType;
use crate::{Error, Result};

/// Safetensors metadata key holding the JSON [`Config`].
pub const CONFIG_METADATA_KEY: &str = "ikol.backbone.config";

/// Wrapper keys tried, in order, when a checkpoint's top level is not a state dict.
const WRAPPER_KEYS: [&str; 4] = ["state_dict", "model", "model_state_dict", "net"];

/// A checkpoint read into memory: tensors by normalised name, and the config from metadata.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
    /// Present for our safetensors files.
    pub config: Option<Config>,
}

fn unreadable(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::CheckpointUnreadable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads a `.pth` (torch zip) or `.safetensors` checkpoint onto the CPU. The format is taken
/// from the file's first bytes, not its name.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| unreadable(path, e))?;
    let n = f.read(&mut head).map_err(|e| unreadable(path, e))?;
    drop(f);
    if n >= 4 && head == *b"PK\x03\x04" {
        read_pth(path)
    } else if n >= 2 && head[..2] == [0x80, 0x02] {
        Err(unreadable(
            path,
            "a legacy (torch < 1.6, non-zip) pickle checkpoint; re-save it with torch.save(..., _use_new_zipfile_serialization=True)",
        ))
    } else {
        read_safetensors(path)
    }
}

fn read_safetensors(path: &Path) -> Result<Checkpoint> {
    let data = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&data)
        .map_err(|e| unreadable(path, format!("not a torch zip or safetensors file: {e}")))?;
    let config =
        match meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(CONFIG_METADATA_KEY))
        {
            Some(json) => Some(serde_json::from_str::<Config>(json).map_err(|e| {
                unreadable(path, format!("bad {CONFIG_METADATA_KEY} metadata: {e}"))
            })?),
            None => None,
        };
    let tensors = candle_core::safetensors::load_buffer(&data, &Device::Cpu)
        .map_err(|e| unreadable(path, e))?;
    Ok(Checkpoint {
        tensors: normalise_names(tensors),
        config,
    })
}

fn normalise_names(t: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    t.into_iter()
        .map(|(k, v)| {
            let mut k = k.as_str();
            while let Some(rest) = k.strip_prefix("module.") {
                k = rest;
            }
            (k.to_string(), v)
        })
        .collect()
}

/// Reads a torch zip checkpoint through the bounded reader of [`crate::pth`].
fn read_pth(path: &Path) -> Result<Checkpoint> {
    let tensors = crate::pth::read_pth(path, &WRAPPER_KEYS).map_err(|e| unreadable(path, e))?;
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let dtype = match t.dtype {
            PthDType::F32 => DType::F32,
            PthDType::F64 => DType::F64,
            PthDType::F16 => DType::F16,
            PthDType::BF16 => DType::BF16,
            PthDType::I64 => DType::I64,
            PthDType::U8 => DType::U8,
        };
        let tensor = Tensor::from_raw_buffer(&t.data, dtype, &t.shape, &Device::Cpu)
            .map_err(|e| unreadable(path, format!("tensor {name}: {e}")))?;
        out.insert(name, tensor);
    }
    Ok(Checkpoint {
        tensors: normalise_names(out),
        config: None,
    })
}

// ------------------------------------------------------------------------------------------------
// Expected parameters, config inference, fit check

/// A VarBuilder backend that records what the network asks for and returns zeros.
#[derive(Debug, Default, Clone)]
struct Recorder(Arc<Mutex<BTreeMap<String, Shape>>>);

impl candle_nn::var_builder::SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut m) = self.0.lock() {
            m.insert(name.to_string(), s.clone());
        }
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("unchecked access to {name} while recording parameter names")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// Every parameter and buffer the network of `cfg` reads, with its shape, by upstream name.
pub fn expected_parameters(cfg: &Config) -> Result<BTreeMap<String, Vec<usize>>> {
    let rec = Recorder::default();
    let vb = VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    HeatmapNet::new(cfg, vb)?;
    let m = rec
        .0
        .lock()
        .map_err(|_| Error::InvalidInput("parameter recorder poisoned".into()))?;
    Ok(m.iter()
        .map(|(k, s)| (k.clone(), s.dims().to_vec()))
        .collect())
}

/// Keys present in upstream checkpoints that the network does not need.
pub fn is_ignored_key(k: &str) -> bool {
    k.ends_with("num_batches_tracked") || k.starts_with("smpl.")
}

/// Reads the architecture from tensor shapes (what [`Config::upstream`] leaves open: ResNet
/// layout and width, deconvolution filters, depth bins, FC width, betas). Missing tensors fall
/// back to the upstream values; [`check_fit`] then reports them. The input size is not stored in
/// weights and stays `input_size` (256 upstream).
pub fn infer_config(
    tensors: &HashMap<String, Tensor>,
    variant: Variant,
    input_size: usize,
) -> Result<Config> {
    let mut cfg = Config::upstream(variant);
    cfg.input_size = input_size;
    let dims = |k: &str| tensors.get(k).map(|t| t.dims().to_vec());
    if let Some(d) = dims("preact.conv1.weight") {
        cfg.resnet.width = d[0];
    }
    let bottleneck = tensors.contains_key("preact.layer1.0.conv3.weight");
    let mut layers = cfg.resnet.layers;
    for (i, l) in layers.iter_mut().enumerate() {
        let prefix = format!("preact.layer{}.", i + 1);
        let count = tensors
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
            .max()
            .map(|m| m + 1);
        if let Some(c) = count {
            *l = c;
        }
    }
    cfg.resnet = ResNetConfig {
        block: if bottleneck {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        },
        layers,
        width: cfg.resnet.width,
    };
    for (i, f) in cfg.deconv_filters.iter_mut().enumerate() {
        if let Some(d) = dims(&format!("deconv_layers.{}.weight", 3 * i)) {
            *f = d[1];
        }
    }
    if let Some(d) = dims("final_layer.weight") {
        let j = variant.num_joints();
        if d[0] % j != 0 {
            let other = match variant {
                Variant::Ikol24 => Variant::Hybrik29,
                Variant::Hybrik29 => Variant::Ikol24,
            };
            let hint = if d[0] % other.num_joints() == 0 {
                format!(" (it fits {other})")
            } else {
                String::new()
            };
            return Err(Error::InvalidInput(format!(
                "final_layer has {} output channels, not a multiple of {j} joints of {variant}{hint}",
                d[0]
            )));
        }
        cfg.depth_dim = d[0] / j;
    }
    if let Some(d) = dims("fc1.weight") {
        cfg.fc_dim = d[0];
    }
    if let Some(d) = dims("decshape.weight") {
        cfg.num_betas = d[0];
    }
    Ok(cfg)
}

/// Compares the checkpoint with what the network of `cfg` needs; lists every problem.
pub fn check_fit(path: &Path, cfg: &Config, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let want = expected_parameters(cfg)?;
    let mut missing = Vec::new();
    let mut shape_mismatches = Vec::new();
    for (k, shape) in &want {
        match tensors.get(k) {
            None => missing.push(k.clone()),
            Some(t) if t.dims() != shape.as_slice() => {
                shape_mismatches.push((k.clone(), shape.clone(), t.dims().to_vec()))
            }
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !want.contains_key(*k) && !is_ignored_key(k))
        .cloned()
        .collect();
    unexpected.sort();
    if missing.is_empty() && unexpected.is_empty() && shape_mismatches.is_empty() {
        Ok(())
    } else {
        Err(Error::CheckpointMismatch {
            path: path.to_path_buf(),
            variant: cfg.variant.to_string(),
            missing,
            unexpected,
            shape_mismatches,
        })
    }
}

/// Writes `tensors` (upstream names) as safetensors with the config as metadata. Ignored keys
/// (`num_batches_tracked`, `smpl.*`) are dropped.
pub fn save_safetensors(
    path: &Path,
    cfg: &Config,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let json = serde_json::to_string(cfg).map_err(|e| Error::InvalidInput(e.to_string()))?;
    write_safetensors(path, CONFIG_METADATA_KEY, json, tensors)
}

/// Writes `tensors` (ignored keys left out, sorted by name) with `json` under `key` in the
/// metadata: our format for every network.
pub(crate) fn write_safetensors(
    path: &Path,
    key: &str,
    json: String,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert(key.to_string(), json);
    meta.insert("format".to_string(), "pt".to_string());
    let mut items: Vec<(String, Tensor)> = tensors
        .iter()
        .filter(|(k, _)| !is_ignored_key(k))
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    items.sort_by(|a, b| a.0.cmp(&b.0));
    safetensors::serialize_to_file(items, Some(meta), path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })
}

/// Saves a training `VarMap` (parameters and BatchNorm running statistics) for `cfg`.
pub fn save_varmap(path: &Path, cfg: &Config, varmap: &candle_nn::VarMap) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::InvalidInput("VarMap lock poisoned".into()))?;
    // Checkpoints are f32 whatever the training precision (what every loader expects).
    let tensors: HashMap<String, Tensor> = data
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(candle_core::DType::F32)?)))
        .collect::<candle_core::Result<_>>()?;
    drop(data);
    save_safetensors(path, cfg, &tensors)
}

/// The trainable variables of a `VarMap` built by [`HeatmapNet::new`]: everything except the
/// BatchNorm running statistics and the `init_shape` buffer. Pass these to the optimiser.
pub fn trainable_vars(varmap: &candle_nn::VarMap) -> Vec<candle_core::Var> {
    let Ok(data) = varmap.data().lock() else {
        return Vec::new();
    };
    let mut v: Vec<(&String, &candle_core::Var)> = data
        .iter()
        .filter(|(k, _)| {
            !(k.ends_with("running_mean")
                || k.ends_with("running_var")
                || k.as_str() == "init_shape")
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter().map(|(_, var)| var.clone()).collect()
}
