//! The heatmap network of HybrIK / IKOL (IKOL: `ikol/models/IKOL24.py` class `IKOL24`; HybrIK:
//! `hybrik/models/simple3dposeBaseSMPL{24,}.py`), without the body-model layer:
//!
//! ```text
//! x [N,3,S,S] -> preact (ResNet) -> f [N,C,S/32,S/32]
//!   f -> deconv_layers (3 x [ConvTranspose 4/2/1, BN, ReLU]) -> final_layer (1x1, bias)
//!     -> [N, J*D, S/4, S/4] -> soft-argmax over D x S/4 x S/4 per joint -> uvd [N,J,3]
//!   f -> global average pool -> fc1 -> Dropout -> fc2 -> Dropout   (no activation)
//!     -> decshape (+ init_shape) = beta [N,10];  decphi -> phi [N,23,2];  decleaf -> leaf [N,5,4]
//! ```
//!
//! Parameter paths equal the upstream `state_dict` keys (`preact.layer1.0.conv1.weight`,
//! `deconv_layers.0.weight`, `deconv_layers.1.running_mean`, `final_layer.bias`, `fc1.weight`,
//! `decshape.weight`, `decphi.weight`, `decleaf.weight`, `init_shape`), so the same code loads
//! upstream checkpoints, our safetensors and a `VarMap` for training.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Dropout, Init, Linear, VarBuilder};

use crate::config::Config;
use crate::layers::{BatchNorm2d, Conv2d, ConvTranspose2d, ResNet, global_avg_pool};
use crate::ops;
use crate::regressor::linear;

/// Number of twist angles (joints 1..23).
pub const NUM_TWISTS: usize = 23;
/// Number of leaf quaternions (`ikol24`).
pub const NUM_LEAVES: usize = 5;

/// Raw network outputs in HybrIK's units.
#[derive(Debug, Clone)]
pub struct NetOutput {
    /// `[N, J, 3]`: u, v in crop units (-0.5 .. 0.5 over the crop width/height), d in units of
    /// the depth factor (2 m) relative to the root, also -0.5 .. 0.5.
    pub uvd: Tensor,
    /// `[N, 23, 2]` raw (cos, sin) of the twist of joints 1..23 (not normalised).
    pub phi: Tensor,
    /// `[N, num_betas]` shape: `decshape + init_shape`.
    pub beta: Tensor,
    /// `[N, num_betas]` `decshape` alone (upstream `pred_delta_shape`).
    pub delta_beta: Tensor,
    /// `[N, 5, 4]` leaf quaternions (w, x, y, z), raw, for `ikol24`.
    pub leaf: Option<Tensor>,
}

/// The deconvolution head: 3 x [ConvTranspose2d(k4, s2, p1, no bias), BN, ReLU], PyTorch
/// `nn.Sequential` indices 0/1, 3/4, 6/7.
#[derive(Debug, Clone)]
pub struct DeconvHead {
    layers: Vec<(ConvTranspose2d, BatchNorm2d)>,
}

impl DeconvHead {
    pub fn new(
        vb: VarBuilder<'_>,
        c_in: usize,
        filters: &[usize],
        eps: f64,
        momentum: f64,
    ) -> Result<Self> {
        let mut c = c_in;
        let mut layers = Vec::with_capacity(filters.len());
        for (i, &f) in filters.iter().enumerate() {
            let deconv = ConvTranspose2d::new(vb.pp(3 * i), c, f, 4, 2, 1)?;
            let bn = BatchNorm2d::new(vb.pp(3 * i + 1), f, eps, momentum)?;
            layers.push((deconv, bn));
            c = f;
        }
        Ok(Self { layers })
    }
}

impl ModuleT for DeconvHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for (deconv, bn) in &self.layers {
            y = bn.forward_act(deconv.forward(&y)?, None, true, train, true)?;
        }
        Ok(y)
    }
}

/// The whole network (see the module docs).
#[derive(Debug, Clone)]
pub struct HeatmapNet {
    cfg: Config,
    preact: ResNet,
    deconv_layers: DeconvHead,
    final_layer: Conv2d,
    fc1: Linear,
    fc2: Linear,
    dropout: Dropout,
    decshape: Linear,
    decphi: Linear,
    decleaf: Option<Linear>,
    init_shape: Tensor,
}

impl HeatmapNet {
    /// Builds the network, fetching every parameter from `vb` under its upstream name. With a
    /// `VarMap`-backed builder, new parameters get the upstream initialisation (`_initialize`:
    /// deconvolution and final weights N(0, 0.001^2), final bias 0, BatchNorm 1/0; He-normal
    /// ResNet convolutions; PyTorch's default for linear layers; `init_shape` 0 until set).
    pub fn new(cfg: &Config, vb: VarBuilder<'_>) -> crate::Result<Self> {
        cfg.validate()?;
        let (eps, mom) = (cfg.bn_eps, cfg.bn_momentum);
        let preact = ResNet::new(vb.pp("preact"), &cfg.resnet, eps, mom)?;
        let feat = cfg.resnet.feature_channels();
        let deconv_layers =
            DeconvHead::new(vb.pp("deconv_layers"), feat, &cfg.deconv_filters, eps, mom)?;
        let final_layer = Conv2d::new(
            vb.pp("final_layer"),
            cfg.deconv_filters[2],
            cfg.num_joints() * cfg.depth_dim,
            1,
            1,
            0,
            true,
            Some(Init::Randn {
                mean: 0.0,
                stdev: 0.001,
            }),
        )?;
        let fc1 = linear(vb.pp("fc1"), feat, cfg.fc_dim)?;
        let fc2 = linear(vb.pp("fc2"), cfg.fc_dim, cfg.fc_dim)?;
        let decshape = linear(vb.pp("decshape"), cfg.fc_dim, cfg.num_betas)?;
        let decphi = linear(vb.pp("decphi"), cfg.fc_dim, NUM_TWISTS * 2)?;
        let decleaf = if cfg.variant.has_leaf() {
            Some(linear(vb.pp("decleaf"), cfg.fc_dim, NUM_LEAVES * 4)?)
        } else {
            None
        };
        let init_shape = vb.get_with_hints(cfg.num_betas, "init_shape", Init::Const(0.0))?;
        Ok(Self {
            cfg: *cfg,
            preact,
            deconv_layers,
            final_layer,
            fc1,
            fc2,
            dropout: Dropout::new(cfg.dropout),
            decshape,
            decphi,
            decleaf,
            init_shape,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn backbone_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h % 32 != 0 || w % 32 != 0 {
            candle_core::bail!(
                "network input must be [N, 3, H, W] with H, W multiples of 32, got {:?}",
                x.shape()
            )
        }
        self.preact.forward_t(x, train)
    }

    /// Deconvolution head, final 1x1 convolution (its bias fused into the soft-argmax) and
    /// soft-argmax: `[N, J, 3]`.
    fn uvd_from_features(&self, feat: &Tensor, train: bool) -> Result<Tensor> {
        let hm = self.deconv_layers.forward_t(feat, train)?;
        self.uvd_from_head(&hm)
    }

    /// Final 1x1 convolution + soft-argmax of the deconvolution head's output `[N, C, H, W]`.
    ///
    /// Inference on the CPU (nothing tracked for gradients) computes the logits a few joints at
    /// a time and reduces each chunk while it is in cache, instead of writing and re-reading the
    /// whole `[N, J*D, H, W]` volume (25 MB at 256 x 256); the arithmetic is identical.
    fn uvd_from_head(&self, hm: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = hm.dims4()?;
        let (j, d) = (self.cfg.num_joints(), self.cfg.depth_dim);
        let weight = self.final_layer.weight();
        let bias = self.final_layer.bias();
        let tracked = hm.track_op() || weight.track_op() || bias.is_some_and(|b| b.track_op());
        if hm.device().is_cpu() && !tracked && j > 1 {
            let hm = hm.reshape((n, c, h * w))?;
            let wm = weight.reshape((j * d, c))?;
            let chunk = candle_core::utils::get_num_threads().clamp(2, 8).min(j);
            let mut parts = Vec::with_capacity(j.div_ceil(chunk));
            for j0 in (0..j).step_by(chunk) {
                let nj = chunk.min(j - j0);
                let wj = wm.narrow(0, j0 * d, nj * d)?;
                let logits =
                    wj.broadcast_as((n, nj * d, c))?
                        .matmul(&hm)?
                        .reshape((n, nj, d * h * w))?;
                parts.push(match bias {
                    Some(b) => {
                        ops::soft_argmax_biased(&logits, &b.narrow(0, j0 * d, nj * d)?, d, h, w)?
                    }
                    None => ops::soft_argmax(&logits, d, h, w)?,
                });
            }
            return Tensor::cat(&parts, 1);
        }
        let logits = self.final_layer.forward_no_bias(hm)?;
        let logits = logits.reshape((n, j, d * h * w))?;
        match bias {
            Some(b) => ops::soft_argmax_biased(&logits, b, d, h, w),
            None => ops::soft_argmax(&logits, d, h, w),
        }
    }

    /// Heatmap logits `[N, J, D, S/4, S/4]` (bias included) and the backbone features
    /// `[N, C, S/32, S/32]`.
    pub fn heatmap_logits(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let n = x.dim(0)?;
        let feat = self.backbone_features(x, train)?;
        let hm = self.deconv_layers.forward_t(&feat, train)?;
        let hm = self.final_layer.forward(&hm)?;
        let (_, _, hh, hw) = hm.dims4()?;
        let hm = hm.reshape((n, self.cfg.num_joints(), self.cfg.depth_dim, hh, hw))?;
        Ok((hm, feat))
    }

    /// Evaluation-mode forward that also reports the wall time of each part (ResNet body,
    /// deconvolution head, final 1x1 convolution with the soft-argmax, FC branch), for
    /// benchmarks.
    pub fn forward_profiled(
        &self,
        x: &Tensor,
    ) -> Result<(NetOutput, Vec<(&'static str, std::time::Duration)>)> {
        use std::time::Instant;
        let mut times = Vec::new();
        let mut t = Instant::now();
        let mut lap = |name: &'static str, t: &mut Instant| {
            times.push((name, t.elapsed()));
            *t = Instant::now();
        };
        let feat = self.preact.forward_t(x, false)?;
        lap("preact (ResNet)", &mut t);
        let hm = self.deconv_layers.forward_t(&feat, false)?;
        lap("deconv_layers", &mut t);
        let n = x.dim(0)?;
        let uvd = self.uvd_from_head(&hm)?;
        lap("final 1x1 + soft-argmax", &mut t);
        let xc = global_avg_pool(&feat)?;
        let xc = self.fc2.forward(&self.fc1.forward(&xc)?)?;
        let delta_beta = self.decshape.forward(&xc)?;
        let beta = delta_beta.broadcast_add(&self.init_shape.unsqueeze(0)?)?;
        let phi = self.decphi.forward(&xc)?.reshape((n, NUM_TWISTS, 2))?;
        let leaf = match &self.decleaf {
            Some(l) => Some(l.forward(&xc)?.reshape((n, NUM_LEAVES, 4))?),
            None => None,
        };
        lap("fc branch", &mut t);
        Ok((
            NetOutput {
                uvd,
                phi,
                beta,
                delta_beta,
                leaf,
            },
            times,
        ))
    }

    /// Runs the network. `train` switches BatchNorm to batch statistics (and updates the running
    /// statistics) and enables dropout.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<NetOutput> {
        let n = x.dim(0)?;
        let feat = self.backbone_features(x, train)?;
        let uvd = self.uvd_from_features(&feat, train)?;

        let xc = global_avg_pool(&feat)?;
        let xc = self.dropout.forward_t(&self.fc1.forward(&xc)?, train)?;
        let xc = self.dropout.forward_t(&self.fc2.forward(&xc)?, train)?;
        let delta_beta = self.decshape.forward(&xc)?;
        let beta = delta_beta.broadcast_add(&self.init_shape.unsqueeze(0)?)?;
        let phi = self.decphi.forward(&xc)?.reshape((n, NUM_TWISTS, 2))?;
        let leaf = match &self.decleaf {
            Some(l) => Some(l.forward(&xc)?.reshape((n, NUM_LEAVES, 4))?),
            None => None,
        };
        Ok(NetOutput {
            uvd,
            phi,
            beta,
            delta_beta,
            leaf,
        })
    }
}
