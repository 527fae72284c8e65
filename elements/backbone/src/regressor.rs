//! Parameter regressors on the pooled ResNet feature: HKMR's hierarchical kinematic regressor and
//! the flat iterative regressor of HMR / SPIN that it is compared with.
//!
//! Both predict the body directly: 24 local rotations (`theta`, root first, in the camera
//! frame; axis-angle or 6D, [`RotationRepr`]), the shape `beta` and a weak-perspective camera
//! `cam = (s, tx, ty)` that maps a root-relative joint `X` (metres) to normalised crop
//! coordinates `x = s X_xy + (tx, ty)`, -1 .. 1 over the crop side (SPIN's convention). One [`RegressorStep`] per outer iteration is
//! returned, because both papers supervise every iteration (HKMR Eq. 3, HMR's iterative error
//! feedback).
//!
//! **HKMR** (Georgakis et al., "Hierarchical Kinematic Human Mesh Recovery", ECCV 2020,
//! `../shared/seeds/hkmr-paper.md` Sect. 3.2): six kinematic chains ([`CHAINS`]: root = pelvis,
//! spine1-3; head; right and left arm; right and left leg). Each chain `c` has an embedding
//! network `E_c([Phi, beta, theta_c, theta_root])` -> psi (the root chain has no `theta_root`)
//! and per joint `i` one fully connected layer `f_i` for the forward pass (Eq. 1, parent to
//! child: `dtheta_i = f_i([psi, dtheta_0, .., dtheta_{i-1}])`) and `b_i` for the backward pass
//! (Eq. 2, child to parent, re-embedded after the forward update). A forward-backward cycle is
//! repeated `inner` times per chain. The root chain runs first; every other chain reads the
//! root chain's output of the same outer iteration, which is the hierarchy. After the six chains
//! a shape network `[Phi, beta, Theta]` updates beta and a camera network `[Phi, Theta, beta]`
//! the camera; this outer loop runs `outer` times (the paper's best: 3 outer, 4 inner).
//! Choices the paper leaves open, made here: `E_c` is two fully connected layers with ReLU of
//! width `embed_dim`; the shape and camera networks are the same shape and predict residuals
//! (as HMR's feedback); the residuals are axis-angle by default, as in the paper's `theta <-
//! theta + dtheta` (its f_i "outputs three real-valued numbers"); `rotation: 6d` gives either
//! head SPIN's continuous 6D rotations instead ([`RotationRepr`]). The pose prior (a VAE on MoSh
//! data, not available here) is not part of the network.
//!
//! **Flat** (HMR, Kanazawa et al. CVPR 2018; SPIN's `Regressor`, Kolotouros et al. ICCV 2019):
//! `x = [Phi, theta, beta, cam]` -> `fc1` -> dropout -> `fc2` -> dropout (no activation, as
//! SPIN) -> `decpose`, `decshape`, `deccam` residuals, `outer` iterations (3).
//!
//! Both start from the rest pose turned upright in the camera frame (root pi about x: the body
//! model is Y-up, the camera Y-down), zero shape and SPIN's `init_cam` (0.9, 0, 0).
//! Parameter names: `regressor.chains.<chain>.embed.{0,1}`, `...fwd.<i>`, `...bwd.<i>`,
//! `regressor.shape.{0,1,2}`, `regressor.camera.{0,1,2}` (HKMR); `regressor.fc1`, `fc2`,
//! `decpose`, `decshape`, `deccam` (flat, SPIN's names).

use candle_core::{D, DType, Module, ModuleT, Result, Tensor};
use candle_nn::{Dropout, Init, Linear, VarBuilder};
use ikol_types::joints::SMPL_JOINTS;
use serde::{Deserialize, Serialize};

/// The six chains of HKMR in the paper's order, joints parent first (SMPL-24 indices).
pub const CHAINS: [(&str, &[usize]); 6] = [
    ("root", &[0, 3, 6, 9]),
    ("head", &[12, 15]),
    ("right_arm", &[14, 17, 19, 21, 23]),
    ("left_arm", &[13, 16, 18, 20, 22]),
    ("right_leg", &[2, 5, 8, 11]),
    ("left_leg", &[1, 4, 7, 10]),
];

/// SPIN's `init_cam`: scale 0.9, no offset.
pub const INIT_CAM: [f64; 3] = [0.9, 0.0, 0.0];

/// Which regressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegressorKind {
    /// HKMR's hierarchical kinematic regressor.
    #[default]
    Hkmr,
    /// HMR / SPIN's flat iterative regressor.
    Flat,
}

impl RegressorKind {
    pub fn name(self) -> &'static str {
        match self {
            RegressorKind::Hkmr => "hkmr",
            RegressorKind::Flat => "flat",
        }
    }
}

/// Sizes of a regressor head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressorConfig {
    pub kind: RegressorKind,
    /// Channels of the pooled feature (512 for ResNet-18/34, 2048 for ResNet-50).
    pub feature_dim: usize,
    pub num_betas: usize,
    /// HKMR: width of psi and of the shape/camera networks; flat: width of fc1/fc2 (1024).
    pub hidden: usize,
    /// Outer iterations (HKMR T = 3; HMR 3).
    pub outer: usize,
    /// HKMR forward-backward cycles per chain and outer iteration (4); unused by the flat one.
    pub inner: usize,
    /// Flat: dropout after fc1 and fc2 (SPIN 0.5); unused by HKMR.
    pub dropout: f32,
    /// How the head parameterises each rotation and adds its residuals (absent in the configs
    /// of earlier checkpoints: axis-angle).
    #[serde(default)]
    pub rotation: RotationRepr,
}

/// A rotation parameterisation of the regressors: residuals are added to it, and
/// [`RotationRepr::to_matrices`] turns it into rotation matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum RotationRepr {
    /// Axis-angle, 3 numbers (HMR; HKMR's f_i "outputs three real-valued numbers").
    #[default]
    #[serde(rename = "axis-angle")]
    AxisAngle,
    /// The continuous 6D representation (Zhou et al., "On the Continuity of Rotation
    /// Representations in Neural Networks", CVPR 2019), as SPIN's regressor uses it: the first
    /// two columns of the matrix, stored as the 3x2 matrix row by row ([`rot6d_to_matrix`]).
    #[serde(rename = "6d")]
    SixD,
}

impl RotationRepr {
    /// Numbers per rotation.
    pub fn width(self) -> usize {
        match self {
            RotationRepr::AxisAngle => 3,
            RotationRepr::SixD => 6,
        }
    }

    /// `[..., width]` to rotation matrices `[..., 3, 3]`, differentiable.
    pub fn to_matrices(self, theta: &Tensor) -> Result<Tensor> {
        match self {
            RotationRepr::AxisAngle => axis_angle_to_matrix(theta),
            RotationRepr::SixD => rot6d_to_matrix(theta),
        }
    }

    /// The parameters of the identity and of the upright root (pi about x: diag(1, -1, -1)).
    fn identity_and_upright(self) -> (Vec<f64>, Vec<f64>) {
        match self {
            RotationRepr::AxisAngle => (vec![0.0; 3], vec![std::f64::consts::PI, 0.0, 0.0]),
            // Columns (1, 0, 0) and (0, 1, 0) / (0, -1, 0), row by row.
            RotationRepr::SixD => (
                vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
                vec![1.0, 0.0, 0.0, -1.0, 0.0, 0.0],
            ),
        }
    }
}

impl RegressorConfig {
    /// The paper's sizes over `feature_dim` channels: HKMR psi 512 wide (not stated in the
    /// paper), 3 outer / 4 inner; flat 1024 wide, 3 iterations, dropout 0.5.
    pub fn paper(kind: RegressorKind, feature_dim: usize) -> Self {
        Self {
            kind,
            feature_dim,
            num_betas: 10,
            hidden: match kind {
                RegressorKind::Hkmr => 512,
                RegressorKind::Flat => 1024,
            },
            outer: 3,
            inner: 4,
            dropout: 0.5,
            rotation: RotationRepr::AxisAngle,
        }
    }

    pub fn validate(&self) -> crate::Result<()> {
        if self.feature_dim == 0 || self.hidden == 0 || self.outer == 0 || self.num_betas == 0 {
            return Err(crate::Error::InvalidInput(format!(
                "zero size in regressor config {self:?}"
            )));
        }
        if self.kind == RegressorKind::Hkmr && self.inner == 0 {
            return Err(crate::Error::InvalidInput(
                "HKMR needs at least one inner iteration".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(crate::Error::InvalidInput(format!(
                "dropout {} not in [0, 1)",
                self.dropout
            )));
        }
        Ok(())
    }
}

/// The prediction after one outer iteration.
#[derive(Debug, Clone)]
pub struct RegressorStep {
    /// `[N, 24, width]` local rotations in the head's `rotation` parameterisation, root first
    /// ([`RegressorStep::rotations`] gives matrices).
    pub theta: Tensor,
    pub rotation: RotationRepr,
    /// `[N, num_betas]`.
    pub beta: Tensor,
    /// `[N, 3]` weak-perspective (s, tx, ty).
    pub cam: Tensor,
}

impl RegressorStep {
    /// `[N, 24, 3, 3]` local rotation matrices.
    pub fn rotations(&self) -> Result<Tensor> {
        self.rotation.to_matrices(&self.theta)
    }

    /// The same step cut from the graph (no gradient flows back through it).
    pub fn detach(&self) -> Self {
        Self {
            theta: self.theta.detach(),
            rotation: self.rotation,
            beta: self.beta.detach(),
            cam: self.cam.detach(),
        }
    }
}

/// PyTorch's default `nn.Linear` initialisation, U(-1/sqrt(in), 1/sqrt(in)).
pub(crate) fn linear(vb: VarBuilder<'_>, c_in: usize, c_out: usize) -> Result<Linear> {
    let b = 1.0 / (c_in as f64).sqrt();
    let init = Init::Uniform { lo: -b, up: b };
    let w = vb.get_with_hints((c_out, c_in), "weight", init)?;
    let bias = vb.get_with_hints(c_out, "bias", init)?;
    Ok(Linear::new(w, Some(bias)))
}

/// An output layer that starts near zero: HMR initialises its decoders with Xavier at gain
/// 0.01 so the first predictions stay at the initial pose.
fn small_linear(vb: VarBuilder<'_>, c_in: usize, c_out: usize) -> Result<Linear> {
    let b = 0.01 * (6.0 / (c_in + c_out) as f64).sqrt();
    let w = vb.get_with_hints((c_out, c_in), "weight", Init::Uniform { lo: -b, up: b })?;
    let bias = vb.get_with_hints(c_out, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(bias)))
}

/// Two fully connected layers with ReLU, then a small output layer (`.0`, `.1`, `.2`).
#[derive(Debug, Clone)]
struct Mlp {
    l0: Linear,
    l1: Linear,
    out: Option<Linear>,
}

impl Mlp {
    fn new(vb: VarBuilder<'_>, c_in: usize, hidden: usize, c_out: Option<usize>) -> Result<Self> {
        Ok(Self {
            l0: linear(vb.pp("0"), c_in, hidden)?,
            l1: linear(vb.pp("1"), hidden, hidden)?,
            out: c_out
                .map(|c| small_linear(vb.pp("2"), hidden, c))
                .transpose()?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.l1.forward(&self.l0.forward(x)?.relu()?)?.relu()?;
        match &self.out {
            Some(o) => o.forward(&h),
            None => Ok(h),
        }
    }
}

/// One HKMR chain: `E_c`, `f_i`, `b_i`.
#[derive(Debug, Clone)]
struct Chain {
    joints: &'static [usize],
    embed: Mlp,
    fwd: Vec<Linear>,
    bwd: Vec<Linear>,
}

impl Chain {
    /// `E_c([Phi, beta, theta_c, theta_root])`.
    fn embed(
        &self,
        feat: &Tensor,
        beta: &Tensor,
        theta: &Tensor,
        root: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut parts = vec![feat, beta, theta];
        if let Some(r) = root {
            parts.push(r);
        }
        self.embed.forward(&Tensor::cat(&parts, 1)?)
    }

    /// One pass over the chain's joints in `order`, each layer reading psi and the residuals
    /// predicted before it in this pass (Eq. 1 / Eq. 2); returns the residuals in joint order.
    fn pass(&self, layers: &[Linear], psi: &Tensor, order: &[usize]) -> Result<Tensor> {
        let mut deltas: Vec<Option<Tensor>> = vec![None; self.joints.len()];
        let mut seen: Vec<Tensor> = Vec::with_capacity(order.len());
        for &i in order {
            let mut input = vec![psi.clone()];
            input.extend(seen.iter().cloned());
            let d = layers[i].forward(&Tensor::cat(&input, 1)?)?;
            seen.push(d.clone());
            deltas[i] = Some(d);
        }
        let deltas: Vec<Tensor> = deltas.into_iter().flatten().collect();
        Tensor::cat(&deltas, 1)
    }

    /// `inner` forward-backward cycles from `theta` `[N, width K_c]`.
    fn run(
        &self,
        inner: usize,
        feat: &Tensor,
        beta: &Tensor,
        mut theta: Tensor,
        root: Option<&Tensor>,
    ) -> Result<Tensor> {
        let k = self.joints.len();
        let forward_order: Vec<usize> = (0..k).collect();
        let backward_order: Vec<usize> = (0..k).rev().collect();
        for _ in 0..inner {
            let psi = self.embed(feat, beta, &theta, root)?;
            theta = (theta + self.pass(&self.fwd, &psi, &forward_order)?)?;
            let psi = self.embed(feat, beta, &theta, root)?;
            theta = (theta + self.pass(&self.bwd, &psi, &backward_order)?)?;
        }
        Ok(theta)
    }
}

#[derive(Debug, Clone)]
enum Head {
    Hkmr {
        chains: Vec<Chain>,
        shape: Mlp,
        camera: Mlp,
    },
    Flat {
        fc1: Linear,
        fc2: Linear,
        decpose: Linear,
        decshape: Linear,
        deccam: Linear,
        dropout: Dropout,
    },
}

/// A regressor head (see the module docs).
#[derive(Debug, Clone)]
pub struct Regressor {
    cfg: RegressorConfig,
    head: Head,
}

impl Regressor {
    /// Builds the head under `vb` (the caller's prefix, `regressor` in the networks).
    pub fn new(cfg: &RegressorConfig, vb: VarBuilder<'_>) -> crate::Result<Self> {
        cfg.validate()?;
        let (c, nb, h) = (cfg.feature_dim, cfg.num_betas, cfg.hidden);
        let w = cfg.rotation.width();
        let pose = w * SMPL_JOINTS;
        let head = match cfg.kind {
            RegressorKind::Hkmr => {
                let mut chains = Vec::with_capacity(CHAINS.len());
                for (ci, (name, joints)) in CHAINS.iter().enumerate() {
                    let vb = vb.pp("chains").pp(*name);
                    let k = joints.len();
                    let root_in = if ci == 0 { 0 } else { w * CHAINS[0].1.len() };
                    let embed = Mlp::new(vb.pp("embed"), c + nb + w * k + root_in, h, None)?;
                    let layers = |dir: &str| -> Result<Vec<Linear>> {
                        // f_i reads psi and the residuals of the i joints before it in its pass
                        // (for the first joint the paper's [psi, 0], whose zeros add nothing).
                        (0..k)
                            .map(|i| {
                                let before = match dir {
                                    "fwd" => i,
                                    _ => k - 1 - i,
                                };
                                small_linear(vb.pp(dir).pp(i), h + w * before, w)
                            })
                            .collect()
                    };
                    chains.push(Chain {
                        joints,
                        embed,
                        fwd: layers("fwd")?,
                        bwd: layers("bwd")?,
                    });
                }
                Head::Hkmr {
                    chains,
                    shape: Mlp::new(vb.pp("shape"), c + nb + pose, h, Some(nb))?,
                    camera: Mlp::new(vb.pp("camera"), c + pose + nb, h, Some(3))?,
                }
            }
            RegressorKind::Flat => Head::Flat {
                fc1: linear(vb.pp("fc1"), c + pose + nb + 3, h)?,
                fc2: linear(vb.pp("fc2"), h, h)?,
                decpose: small_linear(vb.pp("decpose"), h, pose)?,
                decshape: small_linear(vb.pp("decshape"), h, nb)?,
                deccam: small_linear(vb.pp("deccam"), h, 3)?,
                dropout: Dropout::new(cfg.dropout),
            },
        };
        Ok(Self { cfg: *cfg, head })
    }

    pub fn config(&self) -> &RegressorConfig {
        &self.cfg
    }

    /// The initial estimate for `n` people: upright rest pose, zero shape, `INIT_CAM`.
    pub fn initial(
        &self,
        n: usize,
        dtype: DType,
        device: &candle_core::Device,
    ) -> Result<RegressorStep> {
        let repr = self.cfg.rotation;
        let (identity, upright) = repr.identity_and_upright();
        let person: Vec<f64> = upright
            .into_iter()
            .chain((1..SMPL_JOINTS).flat_map(|_| identity.iter().copied()))
            .collect();
        let theta: Vec<f64> = (0..n).flat_map(|_| person.iter().copied()).collect();
        let cam: Vec<f64> = (0..n).flat_map(|_| INIT_CAM).collect();
        Ok(RegressorStep {
            theta: Tensor::from_vec(theta, (n, SMPL_JOINTS, repr.width()), device)?
                .to_dtype(dtype)?,
            rotation: repr,
            beta: Tensor::zeros((n, self.cfg.num_betas), dtype, device)?,
            cam: Tensor::from_vec(cam, (n, 3), device)?.to_dtype(dtype)?,
        })
    }

    /// Runs the head on pooled features `[N, feature_dim]`: one step per outer iteration, the
    /// last is the prediction. `train` enables the flat head's dropout.
    pub fn forward_t(&self, feat: &Tensor, train: bool) -> Result<Vec<RegressorStep>> {
        let n = feat.dim(0)?;
        let init = self.initial(n, feat.dtype(), feat.device())?;
        self.forward_from(feat, init, train)
    }

    /// [`Regressor::forward_t`] from a given initial estimate (tests; SPIN-style restarts).
    pub fn forward_from(
        &self,
        feat: &Tensor,
        init: RegressorStep,
        train: bool,
    ) -> Result<Vec<RegressorStep>> {
        let n = feat.dim(0)?;
        let w = self.cfg.rotation.width();
        let pose = w * SMPL_JOINTS;
        let RegressorStep {
            mut theta,
            rotation,
            mut beta,
            mut cam,
        } = init;
        if rotation != self.cfg.rotation || theta.dim(D::Minus1)? != w {
            candle_core::bail!(
                "initial estimate in {rotation:?}, the head regresses {:?}",
                self.cfg.rotation
            );
        }
        let mut steps = Vec::with_capacity(self.cfg.outer);
        for _ in 0..self.cfg.outer {
            match &self.head {
                Head::Hkmr {
                    chains,
                    shape,
                    camera,
                } => {
                    let mut joint_theta: Vec<Option<Tensor>> = vec![None; SMPL_JOINTS];
                    let mut root: Option<Tensor> = None;
                    for chain in chains {
                        let idx = Tensor::new(
                            chain.joints.iter().map(|&j| j as u32).collect::<Vec<_>>(),
                            feat.device(),
                        )?;
                        let start = theta
                            .contiguous()?
                            .index_select(&idx, 1)?
                            .reshape((n, w * chain.joints.len()))?;
                        let out = chain.run(self.cfg.inner, feat, &beta, start, root.as_ref())?;
                        for (i, &j) in chain.joints.iter().enumerate() {
                            joint_theta[j] = Some(out.narrow(1, w * i, w)?);
                        }
                        if root.is_none() {
                            root = Some(out);
                        }
                    }
                    let parts: Vec<Tensor> = joint_theta.into_iter().flatten().collect();
                    theta = Tensor::stack(&parts, 1)?;
                    let flat = theta.reshape((n, pose))?;
                    beta = (&beta + shape.forward(&Tensor::cat(&[feat, &beta, &flat], 1)?)?)?;
                    cam = (&cam + camera.forward(&Tensor::cat(&[feat, &flat, &beta], 1)?)?)?;
                }
                Head::Flat {
                    fc1,
                    fc2,
                    decpose,
                    decshape,
                    deccam,
                    dropout,
                } => {
                    let flat = theta.reshape((n, pose))?;
                    let x = Tensor::cat(&[feat, &flat, &beta, &cam], 1)?;
                    let x = dropout.forward_t(&fc1.forward(&x)?, train)?;
                    let x = dropout.forward_t(&fc2.forward(&x)?, train)?;
                    theta = (flat + decpose.forward(&x)?)?.reshape((n, SMPL_JOINTS, w))?;
                    beta = (&beta + decshape.forward(&x)?)?;
                    cam = (&cam + deccam.forward(&x)?)?;
                }
            }
            steps.push(RegressorStep {
                theta: theta.clone(),
                rotation,
                beta: beta.clone(),
                cam: cam.clone(),
            });
        }
        Ok(steps)
    }
}

/// Axis-angle `[..., 3]` to rotation matrices `[..., 3, 3]`, differentiable everywhere:
/// `R = I + a [w]x + b [w]x^2` with `a = sin t / t`, `b = (1 - cos t) / t^2 = (sin(t/2) /
/// (t/2))^2 / 2` (the half-angle form has no cancellation) and `t = sqrt(|w|^2 + eps)`.
pub fn axis_angle_to_matrix(w: &Tensor) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let m = w.elem_count() / 3;
    let w = w.reshape((m, 3))?;
    let eps = match w.dtype() {
        DType::F64 => 1e-24,
        _ => 1e-12,
    };
    let t = w.sqr()?.sum_keepdim(D::Minus1)?.affine(1.0, eps)?.sqrt()?;
    let a = t.sin()?.div(&t)?;
    let half = t.affine(0.5, 0.0)?;
    let b = half.sin()?.div(&half)?.sqr()?.affine(0.5, 0.0)?;
    let (x, y, z) = (w.narrow(1, 0, 1)?, w.narrow(1, 1, 1)?, w.narrow(1, 2, 1)?);
    let o = x.zeros_like()?;
    let k = Tensor::stack(
        &[
            Tensor::cat(&[&o, &z.neg()?, &y], 1)?,
            Tensor::cat(&[&z, &o, &x.neg()?], 1)?,
            Tensor::cat(&[&y.neg()?, &x, &o], 1)?,
        ],
        1,
    )?;
    let eye = Tensor::eye(3, w.dtype(), w.device())?.unsqueeze(0)?;
    let r = eye
        .broadcast_add(&k.broadcast_mul(&a.unsqueeze(2)?)?)?
        .add(&k.matmul(&k)?.broadcast_mul(&b.unsqueeze(2)?)?)?;
    let mut out = dims;
    out.push(3);
    r.reshape(out)
}

/// 6D `[..., 6]` to rotation matrices `[..., 3, 3]` (Zhou et al. 2019, Sect. 4; SPIN's
/// `rot6d_to_rotmat`): the six numbers are a 3x2 matrix row by row, its columns a1, a2;
/// b1 = a1 / |a1|, b2 = (a2 - (b1 . a2) b1) / |...| (Gram-Schmidt), b3 = b1 x b2, R = [b1 b2 b3].
/// Each norm is sqrt(|v|^2 + 1e-16), so a zero column divides by 1e-8, not by zero.
pub fn rot6d_to_matrix(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let m = x.elem_count() / 6;
    let x = x.reshape((m, 3, 2))?;
    let a1 = x.narrow(2, 0, 1)?.squeeze(2)?;
    let a2 = x.narrow(2, 1, 1)?.squeeze(2)?;
    let unit = |v: &Tensor| -> Result<Tensor> {
        let n = v.sqr()?.sum_keepdim(1)?.affine(1.0, 1e-16)?.sqrt()?;
        v.broadcast_div(&n)
    };
    let b1 = unit(&a1)?;
    let b2 = unit(&(&a2 - b1.broadcast_mul(&(&b1 * &a2)?.sum_keepdim(1)?)?)?)?;
    let col = |t: &Tensor, i: usize| t.narrow(1, i, 1);
    // b3 = b1 x b2.
    let (x1, y1, z1) = (col(&b1, 0)?, col(&b1, 1)?, col(&b1, 2)?);
    let (x2, y2, z2) = (col(&b2, 0)?, col(&b2, 1)?, col(&b2, 2)?);
    let b3 = Tensor::cat(
        &[
            ((&y1 * &z2)? - (&z1 * &y2)?)?,
            ((&z1 * &x2)? - (&x1 * &z2)?)?,
            ((&x1 * &y2)? - (&y1 * &x2)?)?,
        ],
        1,
    )?;
    let r = Tensor::stack(&[b1, b2, b3], 2)?;
    let mut out = dims[..dims.len() - 1].to_vec();
    out.extend([3, 3]);
    r.reshape(out)
}

/// ResNet + global average pool + a [`Regressor`]: the whole HKMR / HMR network.
#[derive(Debug, Clone)]
pub struct RegressorNet {
    preact: crate::layers::ResNet,
    regressor: Regressor,
    input_size: usize,
}

/// Configuration of a [`RegressorNet`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressorNetConfig {
    pub resnet: crate::ResNetConfig,
    pub head: RegressorConfig,
    /// Square input side in pixels (224 in HMR/SPIN; multiple of 32).
    pub input_size: usize,
    pub bn_eps: f64,
    pub bn_momentum: f64,
}

impl RegressorNetConfig {
    /// ResNet-50 (as HMR, SPIN and HKMR) at 224 px with the paper's head sizes.
    pub fn paper(kind: RegressorKind) -> Self {
        let resnet = crate::ResNetConfig::depth(50).unwrap_or(crate::ResNetConfig {
            block: crate::BlockKind::Bottleneck,
            layers: [3, 4, 6, 3],
            width: 64,
        });
        Self {
            resnet,
            head: RegressorConfig::paper(kind, resnet.feature_channels()),
            input_size: 224,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }

    /// A very small network for tests: ResNet-18 layout at width 4, head 16 wide, 2 outer and
    /// 1 inner iterations, 64 px.
    pub fn tiny(kind: RegressorKind) -> Self {
        let resnet = crate::ResNetConfig {
            block: crate::BlockKind::Basic,
            layers: [2, 2, 2, 2],
            width: 4,
        };
        Self {
            resnet,
            head: RegressorConfig {
                hidden: 16,
                outer: 2,
                inner: 1,
                ..RegressorConfig::paper(kind, resnet.feature_channels())
            },
            input_size: 64,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }

    pub fn validate(&self) -> crate::Result<()> {
        if self.input_size == 0 || !self.input_size.is_multiple_of(32) {
            return Err(crate::Error::InvalidInput(format!(
                "input size {} must be a positive multiple of 32",
                self.input_size
            )));
        }
        if self.head.feature_dim != self.resnet.feature_channels() {
            return Err(crate::Error::InvalidInput(format!(
                "regressor reads {} channels but the ResNet gives {}",
                self.head.feature_dim,
                self.resnet.feature_channels()
            )));
        }
        self.head.validate()
    }
}

impl RegressorNet {
    pub fn new(cfg: &RegressorNetConfig, vb: VarBuilder<'_>) -> crate::Result<Self> {
        cfg.validate()?;
        Ok(Self {
            preact: crate::layers::ResNet::new(
                vb.pp("preact"),
                &cfg.resnet,
                cfg.bn_eps,
                cfg.bn_momentum,
            )?,
            regressor: Regressor::new(&cfg.head, vb.pp("regressor"))?,
            input_size: cfg.input_size,
        })
    }

    pub fn regressor(&self) -> &Regressor {
        &self.regressor
    }

    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// `[N, 3, S, S]` normalised crops -> one step per outer iteration.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Vec<RegressorStep>> {
        let feat = self.preact.forward_t(x, train)?;
        let pooled = crate::layers::global_avg_pool(&feat)?;
        self.regressor.forward_t(&pooled, train)
    }
}

#[cfg(test)]
mod tests;
