//! Losses: upstream IKOL's `L1LossDimSMPL` terms (reference 4.5) plus the paper's L_opt on the
//! output of the unrolled IKOL layer (GN-Diff, reference 3.5, IKOL Eq. 4-7):
//!
//! ```text
//! L_beta  = mean (beta_hat - beta)^2
//! L_twist = mean (phi_hat_raw - phi)^2                 (phi_hat not normalised)
//! L_uvd   = sum_j w_j |H (uvd_hat_j - uvd_j)|_1 / (3 sum_j w_j)   (H = heatmap side: cells)
//! L_opt   = mean |IKOL(xyz(uvd_hat), phi_hat, rest(beta_hat), leaf_hat) - X|_1   (metres)
//! L_theta = mean (R_hat_local - R_local)^2             (3x3 matrices, solver output)
//! ```
//!
//! `w_j` is 0 for a joint with a target coordinate outside [-0.5, 0.5]. `xyz(.)` is the
//! differentiable `uvd_to_cam_tensor` with the sample's crop and camera, so L_opt reaches the
//! heatmap head through the solver. The rotation loss uses matrices rather than upstream's
//! quaternions (sign-free; HybrIK HEAD made the same change).

use candle_core::{DType, Device, Tensor};
use ikol_backbone::camera::uvd_to_cam_tensor;
use ikol_backbone::{DEPTH_FACTOR_M, NetOutput};
use ikol_body::BodyModel;
use ikol_solver::batch::{BatchIkolOptions, BatchInput, BatchSolution, ikol_batch};
use ikol_types::joints::SMPL_JOINTS;

use crate::config::LossWeights;
use crate::data::Batch;

/// Rest joints as a tensor function of beta: `template (24, 3) + beta (B, L) @ dirs (L, 72)`.
#[derive(Debug, Clone)]
pub struct RestBasis {
    template: Tensor,
    dirs: Tensor,
}

impl RestBasis {
    /// The model's 24-joint basis, padded with zero directions up to `num_betas`.
    pub fn new(
        body: &BodyModel,
        num_betas: usize,
        dtype: DType,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let basis = body.joint_shape_basis(false)?;
        let template: Vec<f64> = basis
            .template
            .iter()
            .flat_map(|p| [p.x, p.y, p.z])
            .collect();
        let mut dirs = vec![0f64; num_betas * 3 * SMPL_JOINTS];
        for (l, d) in basis.dirs.iter().enumerate().take(num_betas) {
            for (j, p) in d.iter().enumerate() {
                for c in 0..3 {
                    dirs[l * 3 * SMPL_JOINTS + 3 * j + c] = p[c];
                }
            }
        }
        Ok(Self {
            template: Tensor::from_vec(template, (1, SMPL_JOINTS, 3), device)?.to_dtype(dtype)?,
            dirs: Tensor::from_vec(dirs, (num_betas, 3 * SMPL_JOINTS), device)?.to_dtype(dtype)?,
        })
    }

    /// (B, L) -> (B, 24, 3).
    pub fn rest(&self, beta: &Tensor) -> candle_core::Result<Tensor> {
        let b = beta.dim(0)?;
        beta.matmul(&self.dirs)?
            .reshape((b, SMPL_JOINTS, 3))?
            .broadcast_add(&self.template)
    }
}

/// Loss terms of one batch (each unweighted) and the weighted total.
#[derive(Debug, Clone)]
pub struct Losses {
    pub total: Tensor,
    pub beta: Tensor,
    pub twist: Tensor,
    pub uvd: Tensor,
    pub opt: Option<Tensor>,
    pub theta: Option<Tensor>,
}

/// Scalar values of [`Losses`], for logging.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossValues {
    pub total: f64,
    pub beta: f64,
    pub twist: f64,
    pub uvd: f64,
    pub opt: f64,
    pub theta: f64,
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

impl Losses {
    pub fn values(&self) -> candle_core::Result<LossValues> {
        Ok(LossValues {
            total: scalar(&self.total)?,
            beta: scalar(&self.beta)?,
            twist: scalar(&self.twist)?,
            uvd: scalar(&self.uvd)?,
            opt: self.opt.as_ref().map(scalar).transpose()?.unwrap_or(0.0),
            theta: self.theta.as_ref().map(scalar).transpose()?.unwrap_or(0.0),
        })
    }
}

/// Weighted L1 of uvd in heatmap cells, joints with any target outside [-0.5, 0.5] masked out.
pub fn uvd_loss(
    pred: &Tensor,
    target: &Tensor,
    heatmap_size: usize,
) -> candle_core::Result<Tensor> {
    let inside = target.abs()?.le(0.5)?.to_dtype(pred.dtype())?;
    // A joint counts only if all three coordinates are inside.
    let w = inside.min_keepdim(2)?;
    let err = pred
        .sub(target)?
        .abs()?
        .affine(heatmap_size as f64, 0.0)?
        .broadcast_mul(&w)?
        .sum_all()?;
    let n = w.sum_all()?.affine(3.0, 1e-9)?;
    err.div(&n)
}

/// Root-relative camera joints (metres) from predicted uvd, with the batch's crops and cameras.
pub fn predicted_joints(
    uvd: &Tensor,
    batch: &Batch,
    input_size: usize,
) -> candle_core::Result<Tensor> {
    let dt = uvd.dtype();
    uvd_to_cam_tensor(
        uvd,
        &batch.crop_to_frame.to_dtype(dt)?,
        &batch.k_inv.to_dtype(dt)?,
        &batch.root_depth.to_dtype(dt)?,
        input_size as f64,
        DEPTH_FACTOR_M,
    )
}

/// Runs the IKOL layer on predicted joints (B, 24, 3 metres), twist (B, 23, 2), rest joints
/// (B, 24, 3) and leaf quaternions (B, 5, 4).
pub fn solve(
    joints: &Tensor,
    twist: &Tensor,
    rest: &Tensor,
    leaf: Option<&Tensor>,
    opts: &BatchIkolOptions,
) -> candle_core::Result<BatchSolution> {
    let dt = joints.dtype();
    let leaf = leaf.map(|l| l.to_dtype(dt)).transpose()?;
    ikol_batch(
        &BatchInput {
            targets: joints,
            twist: &twist.to_dtype(dt)?,
            rest: &rest.to_dtype(dt)?,
            leaf_rotations: leaf.as_ref(),
        },
        opts,
        None,
    )
}

/// L_opt (L1, metres) and L_theta (MSE over local rotation matrices) of a solution.
pub fn solver_losses(
    sol: &BatchSolution,
    target_joints: &Tensor,
    target_rotations: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dt = sol.joints.dtype();
    let opt = sol
        .joints
        .sub(&target_joints.to_dtype(dt)?)?
        .abs()?
        .mean_all()?;
    let theta = sol
        .local_rotations
        .sub(&target_rotations.to_dtype(dt)?)?
        .sqr()?
        .mean_all()?;
    Ok((opt, theta))
}

/// All losses of a network output on a batch. `solver` = None switches L_opt and L_theta off.
pub fn compute_losses(
    out: &NetOutput,
    batch: &Batch,
    weights: &LossWeights,
    input_size: usize,
    basis: &RestBasis,
    solver: Option<&BatchIkolOptions>,
) -> candle_core::Result<Losses> {
    let beta = out.beta.sub(&batch.beta)?.sqr()?.mean_all()?;
    let twist = out.phi.sub(&batch.twist)?.sqr()?.mean_all()?;
    let uvd = uvd_loss(&out.uvd, &batch.uvd, input_size / 4)?;
    let mut total = beta
        .affine(weights.beta, 0.0)?
        .add(&twist.affine(weights.twist, 0.0)?)?
        .add(&uvd.affine(weights.uvd, 0.0)?)?;
    let (mut opt, mut theta) = (None, None);
    if let Some(opts) = solver {
        let xyz = predicted_joints(&out.uvd, batch, input_size)?;
        let rest = basis.rest(&out.beta)?;
        let sol = solve(&xyz, &out.phi, &rest, out.leaf.as_ref(), opts)?;
        let (o, t) = solver_losses(&sol, &batch.joints, &batch.rotations)?;
        total = total
            .add(&o.affine(weights.opt, 0.0)?)?
            .add(&t.affine(weights.theta, 0.0)?)?;
        opt = Some(o);
        theta = Some(t);
    }
    Ok(Losses {
        total,
        beta,
        twist,
        uvd,
        opt,
        theta,
    })
}
