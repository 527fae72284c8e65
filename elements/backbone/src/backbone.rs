//! The inference API used by the `ikolbackbone` element and the `ikol backbone` command.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ikol_types::{BBox, Crop, Intrinsics, PersonResult};

use crate::camera::{CamJoints, CropCamera, DEPTH_FACTOR_M, root_depth_from_crop, uvd_to_cam};
use crate::config::{Config, Variant};
use crate::flip;
use crate::net::{HeatmapNet, NetOutput};
use crate::preprocess::{RgbFrame, crop_for_box, crops_tensor};
use crate::weights::{check_fit, infer_config, read_checkpoint, save_safetensors};
use crate::{Error, Result};

/// Most crops in one forward pass of [`Backbone::estimate`] (and the regressors'): the full-size
/// ResNet-34 at 256 px peaks at +200 MiB over its weights for 8 crops (`backbone-bench --batch
/// 8`: 315 MiB in all; +30 MiB for one), so 256 people in one batch would need about 6 GiB.
pub const MAX_BATCH: usize = 8;

/// A loaded network ready for inference (evaluation mode).
#[derive(Debug, Clone)]
pub struct Backbone {
    net: HeatmapNet,
    params: HashMap<String, Tensor>,
    device: Device,
    flip_test: bool,
}

/// Network outputs for a batch of crops, as tensors on the backbone's device.
#[derive(Debug, Clone)]
pub struct Output {
    /// `[N, J, 3]` u, v (crop side units, -0.5..0.5) and d (root-relative depth in units of the
    /// 2 m depth factor).
    pub uvd: Tensor,
    /// `[N, 23, 2]` raw (cos, sin) twist of joints 1..23.
    pub phi: Tensor,
    /// `[N, 10]` shape.
    pub beta: Tensor,
    /// `[N, 5, 4]` leaf quaternions (w, x, y, z), `ikol24` only.
    pub leaf: Option<Tensor>,
}

/// One person to estimate in a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PersonBox {
    pub bbox: BBox,
    /// Camera-frame depth of the pelvis in metres; `None` uses
    /// [`root_depth_from_crop`] with the 2 m extent.
    pub root_depth: Option<f64>,
}

/// Everything the backbone says about one person, in frame pixels and metres.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonEstimate {
    /// The crop the network saw.
    pub crop: Crop,
    /// `[J]` raw uvd.
    pub uvd: Vec<[f32; 3]>,
    /// `[J]` joints in frame pixels.
    pub joints_px: Vec<[f64; 2]>,
    /// `[J]` root-relative camera-frame joints, metres.
    pub xyz_m: Vec<[f64; 3]>,
    /// Camera-frame root (pelvis) position used, metres.
    pub root_m: [f64; 3],
    /// `[23]` raw twist (cos, sin) of joints 1..23.
    pub phi: Vec<[f32; 2]>,
    /// Shape coefficients.
    pub beta: Vec<f32>,
    /// `[5]` leaf quaternions (w, x, y, z), `ikol24` only.
    pub leaf: Option<Vec<[f32; 4]>>,
}

impl PersonEstimate {
    /// Fills the backbone's part of a pipeline result: 3D joints (root-relative metres), 2D
    /// joints (frame pixels) and beta.
    pub fn fill_result(&self, r: &mut PersonResult) {
        r.joints_3d = self
            .xyz_m
            .iter()
            .map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
            .collect();
        r.joints_2d = self
            .joints_px
            .iter()
            .map(|p| [p[0] as f32, p[1] as f32])
            .collect();
        r.beta = self.beta.clone();
    }
}

fn rows<const K: usize>(t: &Tensor) -> Result<Vec<Vec<[f32; K]>>> {
    let v = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .to_vec3::<f32>()?;
    Ok(v.into_iter()
        .map(|person| {
            person
                .into_iter()
                .map(|r| {
                    let mut a = [0f32; K];
                    for (d, s) in a.iter_mut().zip(r) {
                        *d = s;
                    }
                    a
                })
                .collect()
        })
        .collect())
}

impl Output {
    /// Number of crops.
    pub fn len(&self) -> usize {
        self.uvd.dims().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Converts to per-person host values; `cams[i]` places crop `i` in the camera
    /// (`input_size` = crop side in pixels).
    pub fn people(
        &self,
        crops: &[Crop],
        cams: &[CropCamera],
        input_size: f64,
    ) -> Result<Vec<PersonEstimate>> {
        let n = self.len();
        if crops.len() != n || cams.len() != n {
            return Err(Error::InvalidInput(format!(
                "{n} network outputs but {} crops and {} cameras",
                crops.len(),
                cams.len()
            )));
        }
        let uvd = rows::<3>(&self.uvd)?;
        let phi = rows::<2>(&self.phi)?;
        let leaf = self.leaf.as_ref().map(rows::<4>).transpose()?;
        let beta = self
            .beta
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let CamJoints {
                uv_px,
                xyz_abs_m,
                xyz_m,
            } = uvd_to_cam(&uvd[i], input_size, &cams[i]);
            out.push(PersonEstimate {
                crop: crops[i],
                uvd: uvd[i].clone(),
                joints_px: uv_px,
                xyz_m,
                root_m: xyz_abs_m.first().copied().unwrap_or([0.0; 3]),
                phi: phi[i].clone(),
                beta: beta[i].clone(),
                leaf: leaf.as_ref().map(|l| l[i].clone()),
            });
        }
        Ok(out)
    }
}

impl Backbone {
    /// Loads weights (upstream `.pth` or our `.safetensors`; format from the content) for
    /// `variant` onto `device`. The architecture is read from the file; the input size is 256.
    pub fn load(path: impl AsRef<Path>, variant: Variant, device: &Device) -> Result<Self> {
        Self::load_inner(path.as_ref(), variant, None, device)
    }

    /// As [`Backbone::load`] with a different crop size (a multiple of 32), e.g. for tiny test
    /// networks.
    pub fn load_with_input_size(
        path: impl AsRef<Path>,
        variant: Variant,
        input_size: usize,
        device: &Device,
    ) -> Result<Self> {
        Self::load_inner(path.as_ref(), variant, Some(input_size), device)
    }

    fn load_inner(
        path: &Path,
        variant: Variant,
        input_size: Option<usize>,
        device: &Device,
    ) -> Result<Self> {
        let ckpt = read_checkpoint(path)?;
        let mut cfg = match ckpt.config {
            Some(c) if c.variant == variant => c,
            Some(c) => {
                return Err(Error::InvalidInput(format!(
                    "{} holds a {} network, not {variant}",
                    path.display(),
                    c.variant
                )));
            }
            None => infer_config(&ckpt.tensors, variant, 256).map_err(|e| match e {
                Error::InvalidInput(m) => Error::CheckpointUnreadable {
                    path: path.to_path_buf(),
                    reason: m,
                },
                e => e,
            })?,
        };
        if let Some(s) = input_size {
            cfg.input_size = s;
        }
        Self::from_tensors(path, &cfg, ckpt.tensors, device)
    }

    /// Builds from named tensors (upstream names) after checking that they fit `cfg`; `origin`
    /// names the source in errors.
    pub fn from_tensors(
        origin: &Path,
        cfg: &Config,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        check_fit(origin, cfg, &tensors)?;
        let params: HashMap<String, Tensor> = tensors
            .into_iter()
            .filter(|(k, _)| !crate::weights::is_ignored_key(k))
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?.to_device(device)?)))
            .collect::<candle_core::Result<_>>()?;
        // A NaN or infinite weight would not show in the outputs: the fast ReLU and max-pool
        // kernels use f32::max, which drops NaN. Refuse such checkpoints by name instead.
        let mut bad: Vec<&String> = Vec::new();
        for (k, t) in &params {
            let v = t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
            if v.iter().any(|x| !x.is_finite()) {
                bad.push(k);
            }
        }
        if !bad.is_empty() {
            bad.sort();
            return Err(Error::CheckpointUnreadable {
                path: origin.to_path_buf(),
                reason: format!(
                    "non-finite (NaN or infinite) values in {}",
                    bad.iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let vb = VarBuilder::from_tensors(params.clone(), DType::F32, device);
        let net = HeatmapNet::new(cfg, vb)?;
        Ok(Self {
            net,
            params,
            device: device.clone(),
            flip_test: false,
        })
    }

    /// Turns the flip test on or off (off by default). With it on, every crop also runs
    /// mirrored (in the same batch) and the outputs are averaged.
    pub fn with_flip_test(mut self, on: bool) -> Self {
        self.flip_test = on;
        self
    }

    pub fn flip_test(&self) -> bool {
        self.flip_test
    }

    pub fn config(&self) -> &Config {
        self.net.config()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn net(&self) -> &HeatmapNet {
        &self.net
    }

    /// Writes the weights as our safetensors (config in the metadata).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save_safetensors(path.as_ref(), self.config(), &self.params)
    }

    /// Runs the network on normalised crops `[N, 3, S, S]` (see [`crate::preprocess`]).
    pub fn infer(&self, crops: &Tensor) -> Result<Output> {
        let crops = crops.to_device(&self.device)?.to_dtype(DType::F32)?;
        let o: NetOutput = if self.flip_test {
            let both = Tensor::cat(&[&crops, &flip::mirror_images(&crops)?], 0)?;
            let (plain, mirrored) = flip::split_halves(&self.net.forward_t(&both, false)?)?;
            flip::average(
                &plain,
                &flip::unflip_output(&mirrored, self.config().variant)?,
            )?
        } else {
            self.net.forward_t(&crops, false)?
        };
        Ok(Output {
            uvd: o.uvd,
            phi: o.phi,
            beta: o.beta,
            leaf: o.leaf,
        })
    }

    /// Crops every person from the frame, runs the network as one batch and places the joints
    /// in the camera. An empty `people` gives an empty result.
    pub fn estimate(
        &self,
        frame: &RgbFrame<'_>,
        people: &[PersonBox],
        intrinsics: &Intrinsics,
    ) -> Result<Vec<PersonEstimate>> {
        if people.is_empty() {
            return Ok(Vec::new());
        }
        if !intrinsics.is_valid() {
            return Err(Error::InvalidInput(format!(
                "invalid intrinsics {intrinsics:?}"
            )));
        }
        let size = self.config().input_size;
        let crops = people
            .iter()
            .map(|p| crop_for_box(&p.bbox, size))
            .collect::<Result<Vec<_>>>()?;
        let mut cams = Vec::with_capacity(crops.len());
        for (p, c) in people.iter().zip(&crops) {
            let inv = c.affine().inverse().ok_or_else(|| {
                Error::InvalidInput(format!("degenerate crop for box {:?}", p.bbox))
            })?;
            cams.push(CropCamera {
                crop_to_frame: inv,
                intrinsics: *intrinsics,
                root_depth: p
                    .root_depth
                    .unwrap_or_else(|| root_depth_from_crop(c.side, intrinsics, DEPTH_FACTOR_M)),
                depth_factor: DEPTH_FACTOR_M,
            });
        }
        // At most MAX_BATCH crops per forward pass: the working memory grows with the batch,
        // and `roi` / `--box` allow 256 people.
        let mut out = Vec::with_capacity(crops.len());
        for (cr, ca) in crops.chunks(MAX_BATCH).zip(cams.chunks(MAX_BATCH)) {
            let x = crops_tensor(frame, cr, &self.device)?;
            out.extend(self.infer(&x)?.people(cr, ca, size as f64)?);
        }
        Ok(out)
    }
}
