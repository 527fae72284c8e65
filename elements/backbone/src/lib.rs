//! ikol-backbone: the heatmap network of IKOL / HybrIK on candle, and everything around it from
//! a frame to camera-space joints.
//!
//! * **Network** ([`net::HeatmapNet`], [`Config`]): ResNet-18/34/50 (HybrIK's `preact`), three
//!   transposed convolutions and a 1x1 convolution to `J x D` heatmap channels, an FC branch for
//!   shape, twist and (for [`Variant::Ikol24`]) leaf quaternions. Li et al., "HybrIK: A Hybrid
//!   Analytical-Neural Inverse Kinematics Solution for 3D Human Pose and Shape Estimation",
//!   CVPR 2021 (arXiv:2011.14672); Zhang et al., "IKOL: Inverse kinematics optimization layer
//!   for 3D human pose and shape estimation via Gauss-Newton differentiation", AAAI 2023
//!   (arXiv:2302.01058). Parameter names are the upstream `state_dict` keys. Training mode is
//!   real (`forward_t(x, true)`: BatchNorm batch statistics with running-stat updates, dropout),
//!   and every op has a backward pass, including the stem's 3x3/2 padded max-pool.
//! * **Soft-argmax** ([`ops::soft_argmax`]): softmax over the whole `D x H x W` volume per
//!   joint, expected indices, `u = E[x]/W - 0.5` etc.
//! * **Camera** ([`camera`]): uvd -> frame pixels and camera metres with the crop affine,
//!   intrinsics and a root depth (depth factor 2 m). Outputs are root-relative **metres**: the
//!   network's units of 2 m are converted once, here.
//! * **Flip test** ([`flip`], [`Backbone::with_flip_test`]).
//! * **Preprocessing** ([`preprocess`]): the 1.25x square crop warped like `cv2.warpAffine` and
//!   HybrIK's channel normalisation.
//! * **Weights** ([`weights`]): upstream `.pth` checkpoints (`module.` prefixes and
//!   `state_dict`/`model` wrappers handled; missing / unexpected / mis-shaped keys all listed in
//!   one error naming the file) and our safetensors.
//!
//! # Inference
//!
//! ```no_run
//! use ikol_backbone::{Backbone, PersonBox, Variant, preprocess::RgbFrame};
//! use ikol_types::{BBox, Intrinsics};
//! # fn main() -> ikol_backbone::Result<()> {
//! let device = ikol_backbone::open_device("cpu".parse()?)?;
//! let net = Backbone::load("ikol_res34.pth", Variant::Ikol24, &device)?.with_flip_test(true);
//! # let (pixels, width, height) = (vec![0u8; 640 * 480 * 3], 640u32, 480u32);
//! let frame = RgbFrame::new(&pixels, width, height, 3 * width as usize)?;
//! let k = Intrinsics::from_hfov(width, height, ikol_types::DEFAULT_HFOV_DEG);
//! let people = [PersonBox { bbox: BBox { x: 200.0, y: 80.0, w: 150.0, h: 340.0 }, root_depth: None }];
//! for p in net.estimate(&frame, &people, &k)? {
//!     println!("pelvis at {:?} m, left wrist {:?} m from it", p.root_m, p.xyz_m[20]);
//! }
//! # Ok(()) }
//! ```
//!
//! The `ikol backbone` command (in `pipelines/`) is a thin wrapper: open the device with
//! [`open_device`], [`Backbone::load`] the weights, decode images to RGB, call
//! [`Backbone::estimate`] and print [`PersonEstimate`]s (or [`PersonEstimate::fill_result`]
//! into `ikol_types::PersonResult` for JSON). Lower level: [`preprocess::crops_tensor`] +
//! [`Backbone::infer`] + [`Output::people`].
//!
//! # Training
//!
//! Build the same network over a `VarMap`:
//! `HeatmapNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))`, call
//! `forward_t(x, true)`, optimise [`weights::trainable_vars`], save with
//! [`weights::save_varmap`]. [`camera::uvd_to_cam_tensor`] is the differentiable camera
//! mapping and [`camera::cam_to_uvd`] builds uvd targets.
//!
//! # Devices and features
//!
//! CPU by default. The CPU path uses this crate's kernels ([`ops`]: im2col/col2im
//! convolutions and transposed convolutions on candle's matrix multiply, padded max-pool,
//! fused evaluation-mode BatchNorm + residual + ReLU, fused soft-argmax with the final layer's
//! bias), multi-threaded with rayon and vectorised for AVX2/AVX-512 through `pulp`'s run-time
//! dispatch; the `gemm` crate under candle gets its AVX-512 kernels (`x86-v4`). When nothing is
//! tracked for gradients (weights loaded with [`Backbone::load`]), inference reuses
//! intermediate buffers in place and computes the final 1x1 convolution a few joints at a time
//! straight into the soft-argmax, so the 24 x 64^3 logit volume is never stored.
//! Feature `cuda` forwards to `candle-core/cuda` and `candle-nn/cuda` (candle's own convolution,
//! pooling and softmax run on the GPU; the padded max-pool and soft-argmax then have no custom
//! backward, so train on the CPU or extend [`ops`]); `cudnn` adds `candle-core/cudnn`. Both need
//! the CUDA toolkit with `nvcc` at build time and are never enabled by default. Asking for
//! `cuda` in a build without the feature, or without a usable GPU, is
//! [`Error::CudaUnavailable`]. Threads: candle's and this crate's kernels share rayon's global
//! pool (`RAYON_NUM_THREADS`).
//!
//! # Performance
//!
//! `cargo run --release -p ikol-backbone --bin backbone-bench` times the full-size IKOL-24
//! network (ResNet-34, 27.5 M parameters) at 1 x 3 x 256 x 256 against PyTorch on the same
//! architecture (`tools/bench_torch.py`), alternating the two. On the 2-core development VM
//! (Xeon Sapphire Rapids, AVX-512, shared with other jobs), in its quieter moments: candle
//! 111-116 ms median (102-107 ms best) vs PyTorch 2.15 108-113 ms (98-103 ms), i.e. a ratio of
//! 0.98-1.07; the forward's working set is +30 MiB over the weights (PyTorch +102 MiB). Under
//! load from other processes PyTorch's OpenMP threads degrade far more (seen: 1.1 s median vs
//! candle's 0.21 s). The ResNet body is where candle still loses (about 69 vs 50 ms: the
//! `gemm` crate reaches 100-200 GFLOP/s on these im2col products, oneDNN 200-300); the head is
//! close. `--convs` prints a per-layer table.

pub mod backbone;
pub mod camera;
pub mod collective;
pub mod config;
pub mod device;
pub mod direct;
pub mod error;
pub mod flip;
pub mod layers;
pub mod net;
pub mod ops;
pub mod preprocess;
pub mod pth;
pub mod regressor;
pub mod weights;

pub use backbone::{Backbone, Output, PersonBox, PersonEstimate};
pub use camera::{CamJoints, CropCamera, DEPTH_FACTOR_M};
/// The candle version this crate is built on (devices and tensors in its API).
pub use candle_core as candle;
pub use config::{BlockKind, Config, ResNetConfig, Variant};
pub use device::{DeviceChoice, open_device};
pub use direct::{BodyEstimate, DirectRegressor};
pub use error::{Error, Result};
pub use net::{HeatmapNet, NetOutput};
pub use regressor::{
    Regressor, RegressorConfig, RegressorKind, RegressorNet, RegressorNetConfig, RegressorStep,
    RotationRepr,
};
