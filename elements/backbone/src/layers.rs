//! Building blocks with PyTorch parameter names: convolution, transposed convolution,
//! BatchNorm with a real training mode, ResNet blocks and the ResNet body of HybrIK
//! (`hybrik/models/layers/Resnet.py`, the torchvision layout without `fc`).

use candle_core::{D, DType, ModuleT, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use std::sync::Arc;

use crate::collective::{Communicator, reduced_with_value};
use crate::config::{BlockKind, ResNetConfig};
use crate::ops;

/// Convolution (groups 1, dilation 1) with an optional bias; weight `[Cout, Cin, k, k]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    pad: usize,
}

impl Conv2d {
    /// Loads `weight` (and `bias`) under `vb`. New weights are He-normal with fan-out (as
    /// torchvision initialises ResNets) unless `init` is given; a new bias is 0.
    pub fn new(
        vb: VarBuilder<'_>,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
        init: Option<Init>,
    ) -> Result<Self> {
        let fan_out = (c_out * k * k) as f64;
        let init = init.unwrap_or(Init::Randn {
            mean: 0.0,
            stdev: (2.0 / fan_out).sqrt(),
        });
        let weight = vb.get_with_hints((c_out, c_in, k, k), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(c_out, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride,
            pad,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The convolution without its bias.
    pub fn forward_no_bias(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.stride, self.pad)
    }
}

impl candle_core::Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.forward_no_bias(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

/// Transposed convolution without bias and output padding; weight `[Cin, Cout, k, k]`.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    stride: usize,
    pad: usize,
}

impl ConvTranspose2d {
    /// New weights ~ N(0, 0.001^2) as HybrIK's `_initialize`.
    pub fn new(
        vb: VarBuilder<'_>,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let weight = vb.get_with_hints(
            (c_in, c_out, k, k),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.001,
            },
        )?;
        Ok(Self {
            weight,
            stride,
            pad,
        })
    }
}

impl candle_core::Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv_transpose2d(x, &self.weight, self.stride, self.pad)
    }
}

/// `BatchNorm2d` as PyTorch: `weight`, `bias`, `running_mean`, `running_var` (the checkpoint's
/// `num_batches_tracked` is not needed). Training mode normalises with the batch statistics
/// (biased variance) and updates the running statistics with `momentum` (unbiased variance);
/// evaluation mode uses the running statistics. Under [`crate::collective::data_parallel`] the
/// batch statistics are those of the global batch of all workers.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    pub fn new(vb: VarBuilder<'_>, c: usize, eps: f64, momentum: f64) -> Result<Self> {
        let weight = vb.get_with_hints(c, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(c, "bias", Init::Const(0.0))?;
        let running_mean = vb.get_with_hints(c, "running_mean", Init::Const(0.0))?;
        let running_var = vb.get_with_hints(c, "running_var", Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            // A tensor that already is a variable (VarMap) is shared, so updates reach the map.
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            eps,
            momentum,
        })
    }

    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    fn per_channel(t: &Tensor) -> Result<Tensor> {
        t.reshape((1, (), 1, 1))
    }

    /// Evaluation-mode `[scale; shift]` (`[2, C]`): `scale = weight / sqrt(running_var + eps)`,
    /// `shift = bias - running_mean * scale`.
    pub fn eval_scale_shift(&self) -> Result<Tensor> {
        let rm = self.running_mean.as_detached_tensor();
        let rv = self.running_var.as_detached_tensor();
        let scale = ((rv + self.eps)?.sqrt()?.recip()? * &self.weight)?;
        let shift = (&self.bias - (rm * &scale)?)?;
        Tensor::stack(&[scale, shift], 0)
    }

    /// `act(bn(x) + residual)`, fused into one pass in evaluation mode. With `reuse_input` the
    /// evaluation path may overwrite `x` (pass only intermediates nobody else holds).
    pub fn forward_act(
        &self,
        x: Tensor,
        residual: Option<&Tensor>,
        relu: bool,
        train: bool,
        reuse_input: bool,
    ) -> Result<Tensor> {
        if train {
            let y = self.forward_t(&x, true)?;
            let y = match residual {
                Some(r) => (y + r)?,
                None => y,
            };
            return if relu { y.relu() } else { Ok(y) };
        }
        ops::channel_affine(x, &self.eval_scale_shift()?, residual, relu, reuse_input)
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let w = Self::per_channel(&self.weight)?;
        let b = Self::per_channel(&self.bias)?;
        if train {
            let (n, _c, h, wd) = x.dims4()?;
            let count = n * h * wd;
            if count < 2 {
                candle_core::bail!(
                    "batch norm in training mode needs more than one value per channel, got {:?}",
                    x.shape()
                )
            }
            // The batch statistics' values are accumulated in f64 and rounded once, so the sums
            // of a data-parallel group's shards give the same f32 mean and variance as one
            // worker's sum over the whole batch (in f32 the two summation orders differ in the
            // last bits, and `x - mean` turns that into visible differences where |mean| >> std).
            // Gradients flow through the same statistics of the local shard in f32 (the
            // reduced op takes the f64 value forward and all-reduces the gradient backward), so
            // training keeps no f64 copies of the activations for the backward pass. Without a
            // group the "group" is this worker alone.
            let comm: Arc<dyn Communicator> = crate::collective::current_group()
                .unwrap_or_else(|| Arc::new(crate::collective::Solo));
            // Every worker holds a shard of equal size.
            let count = (count * comm.world_size()) as f64;
            let dt = x.dtype();
            let xd = x.detach();
            let sum = |t: Tensor| t.sum_keepdim((0, 2, 3));
            let mean_value =
                (comm.all_reduce_sum(&sum(xd.to_dtype(DType::F64)?)?)? / count)?.to_dtype(dt)?;
            let mean = reduced_with_value(&comm, &(sum(x.clone())? / count)?, mean_value.clone())?;
            let centred = x.broadcast_sub(&mean)?;
            let deviation = xd.broadcast_sub(&mean_value)?.to_dtype(DType::F64)?;
            let var_value =
                (comm.all_reduce_sum(&sum(deviation.sqr()?)?)? / count)?.to_dtype(dt)?;
            let var = reduced_with_value(&comm, &(sum(centred.sqr()?)? / count)?, var_value)?;
            let m = self.momentum;
            let unbias = count / (count - 1.0);
            let rm = ((self.running_mean.as_tensor() * (1.0 - m))?
                + (mean.detach().flatten_all()? * m)?)?;
            let rv = ((self.running_var.as_tensor() * (1.0 - m))?
                + (var.detach().flatten_all()? * (m * unbias))?)?;
            self.running_mean.set(&rm)?;
            self.running_var.set(&rv)?;
            let inv = (var + self.eps)?.sqrt()?.recip()?;
            centred
                .broadcast_mul(&inv.broadcast_mul(&w)?)?
                .broadcast_add(&b)
        } else {
            ops::channel_affine(x.clone(), &self.eval_scale_shift()?, None, false, false)
        }
    }
}

/// `Conv2d(1x1, stride, no bias)` + `BatchNorm2d`, PyTorch keys `downsample.0` / `downsample.1`.
#[derive(Debug, Clone)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ModuleT for Downsample {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        use candle_core::Module;
        self.bn
            .forward_act(self.conv.forward(x)?, None, false, train, true)
    }
}

/// A residual block: Basic (ResNet-18/34) or Bottleneck (ResNet-50+; stride on the 3x3).
#[derive(Debug, Clone)]
pub struct Block {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<Downsample>,
}

impl Block {
    pub fn new(
        vb: VarBuilder<'_>,
        kind: BlockKind,
        in_planes: usize,
        planes: usize,
        stride: usize,
        eps: f64,
        momentum: f64,
    ) -> Result<Self> {
        let out = planes * kind.expansion();
        let layers: Vec<(usize, usize, usize, usize, usize)> = match kind {
            // (c_in, c_out, k, stride, pad)
            BlockKind::Basic => vec![(in_planes, planes, 3, stride, 1), (planes, planes, 3, 1, 1)],
            BlockKind::Bottleneck => vec![
                (in_planes, planes, 1, 1, 0),
                (planes, planes, 3, stride, 1),
                (planes, out, 1, 1, 0),
            ],
        };
        let convs = layers
            .into_iter()
            .enumerate()
            .map(|(i, (ci, co, k, s, p))| {
                let conv = Conv2d::new(
                    vb.pp(format!("conv{}", i + 1)),
                    ci,
                    co,
                    k,
                    s,
                    p,
                    false,
                    None,
                )?;
                let bn = BatchNorm2d::new(vb.pp(format!("bn{}", i + 1)), co, eps, momentum)?;
                Ok((conv, bn))
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if stride != 1 || in_planes != out {
            let vb = vb.pp("downsample");
            Some(Downsample {
                conv: Conv2d::new(vb.pp(0), in_planes, out, 1, stride, 0, false, None)?,
                bn: BatchNorm2d::new(vb.pp(1), out, eps, momentum)?,
            })
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        use candle_core::Module;
        let identity = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            let residual = (i == last).then_some(&identity);
            // The convolution output is a fresh intermediate: BN + residual + ReLU may reuse it.
            y = bn.forward_act(conv.forward(&y)?, residual, true, train, true)?;
        }
        Ok(y)
    }
}

/// HybrIK's ResNet body (`preact`): conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2 pad 1 -> four
/// stages. Output: `feature_channels x H/32 x W/32`.
#[derive(Debug, Clone)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    stages: Vec<Vec<Block>>,
}

impl ResNet {
    pub fn new(vb: VarBuilder<'_>, cfg: &ResNetConfig, eps: f64, momentum: f64) -> Result<Self> {
        let w = cfg.width;
        let conv1 = Conv2d::new(vb.pp("conv1"), 3, w, 7, 2, 3, false, None)?;
        let bn1 = BatchNorm2d::new(vb.pp("bn1"), w, eps, momentum)?;
        let mut in_planes = w;
        let mut stages = Vec::with_capacity(4);
        for (i, &blocks) in cfg.layers.iter().enumerate() {
            let planes = w << i;
            let stride = if i == 0 { 1 } else { 2 };
            let vb = vb.pp(format!("layer{}", i + 1));
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let s = if b == 0 { stride } else { 1 };
                stage.push(Block::new(
                    vb.pp(b),
                    cfg.block,
                    in_planes,
                    planes,
                    s,
                    eps,
                    momentum,
                )?);
                in_planes = planes * cfg.block.expansion();
            }
            stages.push(stage);
        }
        Ok(Self { conv1, bn1, stages })
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        use candle_core::Module;
        let y = self
            .bn1
            .forward_act(self.conv1.forward(x)?, None, true, train, true)?;
        let mut y = ops::max_pool2d(&y, 3, 2, 1)?;
        for stage in &self.stages {
            for block in stage {
                y = block.forward_t(&y, train)?;
            }
        }
        Ok(y)
    }
}

/// Global average pooling `[N, C, H, W] -> [N, C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}
