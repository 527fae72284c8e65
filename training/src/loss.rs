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
//! Body regressors (HKMR Eq. 3, HMR / SPIN), summed over the outer iterations t:
//!
//! ```text
//! L_3D    = mean |FK(theta_hat^t, rest(beta_hat^t)) - X|_1          (root-relative, metres)
//! L_2D    = mean |s^t X_hat_xy + t^t - 2 uv|_1                        (normalised crop, -1..1)
//! L_rot   = mean (R(theta_hat^t) - R)^2 ;  L_beta = mean (beta_hat^t - beta)^2   (L_smpl)
//! L_prior = mean beta_hat^2
//! ```
//!
//! `w_j` is 0 for a joint with a target coordinate outside [-0.5, 0.5]. `xyz(.)` is the
//! differentiable `uvd_to_cam_tensor` with the sample's crop and camera, so L_opt reaches the
//! heatmap head through the solver. The rotation loss uses matrices rather than upstream's
//! quaternions (sign-free; HybrIK HEAD made the same change).

use candle_core::{DType, Device, Tensor};
use ikol_backbone::camera::uvd_to_cam_tensor;
use ikol_backbone::collective::global_count;
use ikol_backbone::{DEPTH_FACTOR_M, NetOutput, RegressorStep};
use ikol_body::BodyModel;
use ikol_solver::batch::{BatchIkolOptions, BatchInput, BatchSolution, ikol_batch};
use ikol_types::joints::{SMPL_JOINTS, SMPL24_PARENTS};

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

    /// The floating-point type of the basis (the run's precision).
    pub fn dtype(&self) -> DType {
        self.template.dtype()
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
    /// Regressors: L_3D and L_2D of the last outer iteration.
    pub joints_3d: Option<Tensor>,
    pub keypoints_2d: Option<Tensor>,
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
    pub joints_3d: f64,
    pub keypoints_2d: f64,
}

impl LossValues {
    /// The values in field order (total, beta, twist, uvd, opt, theta, joints_3d, keypoints_2d).
    pub fn to_array(&self) -> [f64; 8] {
        [
            self.total,
            self.beta,
            self.twist,
            self.uvd,
            self.opt,
            self.theta,
            self.joints_3d,
            self.keypoints_2d,
        ]
    }

    /// The inverse of [`LossValues::to_array`].
    pub fn from_slice(v: &[f64]) -> candle_core::Result<Self> {
        let [total, beta, twist, uvd, opt, theta, joints_3d, keypoints_2d] =
            <[f64; 8]>::try_from(v).map_err(|_| {
                candle_core::Error::Msg(format!("{} loss values, 8 expected", v.len()))
            })?;
        Ok(Self {
            total,
            beta,
            twist,
            uvd,
            opt,
            theta,
            joints_3d,
            keypoints_2d,
        })
    }
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
            joints_3d: self
                .joints_3d
                .as_ref()
                .map(scalar)
                .transpose()?
                .unwrap_or(0.0),
            keypoints_2d: self
                .keypoints_2d
                .as_ref()
                .map(scalar)
                .transpose()?
                .unwrap_or(0.0),
        })
    }
}

/// Weighted L1 of uvd in heatmap cells, joints with any target outside [-0.5, 0.5] masked out
/// (divided by the valid coordinates of the global batch under data-parallel training).
pub fn uvd_loss(
    pred: &Tensor,
    target: &Tensor,
    heatmap_size: usize,
) -> candle_core::Result<Tensor> {
    uvd_loss_weighted(pred, target, heatmap_size, None)
}

/// [`uvd_loss`] with the depth coordinate of sample b weighted by `depth_weight[b]` (B,): 0 for
/// a sample whose 3D labels are hidden (its u, v are its 2D keypoints, still supervised).
pub fn uvd_loss_weighted(
    pred: &Tensor,
    target: &Tensor,
    heatmap_size: usize,
    depth_weight: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let dt = pred.dtype();
    let inside = target.abs()?.le(0.5)?.to_dtype(dt)?;
    // A joint counts only if all three coordinates are inside.
    let mut w = inside
        .min_keepdim(2)?
        .broadcast_as(pred.shape())?
        .contiguous()?;
    if let Some(dw) = depth_weight {
        let b = pred.dim(0)?;
        let ones = Tensor::ones((b, 1, 2), dt, pred.device())?;
        let per = Tensor::cat(&[&ones, &dw.to_dtype(dt)?.reshape((b, 1, 1))?], 2)?;
        w = w.broadcast_mul(&per)?;
    }
    let err = pred
        .sub(target)?
        .abs()?
        .affine(heatmap_size as f64, 0.0)?
        .mul(&w)?
        .sum_all()?;
    // Valid coordinates of the global batch (data-parallel training: all workers').
    let n = global_count(&w.sum_all()?)?.affine(1.0, 1e-9)?;
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
    solver_losses_weighted(sol, target_joints, target_rotations, None)
}

/// [`solver_losses`] with sample b weighted by `weight[b]` (None: all alike).
fn solver_losses_weighted(
    sol: &BatchSolution,
    target_joints: &Tensor,
    target_rotations: &Tensor,
    weight: Option<&Tensor>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dt = sol.joints.dtype();
    let opt = sol.joints.sub(&target_joints.to_dtype(dt)?)?.abs()?;
    let theta = sol
        .local_rotations
        .sub(&target_rotations.to_dtype(dt)?)?
        .sqr()?;
    Ok((mean_of(&opt, weight)?, mean_of(&theta, weight)?))
}

/// The mean of `err`, or its per-sample [`weighted_mean`] when `weight` is given.
fn mean_of(err: &Tensor, weight: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match weight {
        None => err.mean_all(),
        Some(w) => weighted_mean(err, w),
    }
}

/// The IKOL layer on a heatmap network's output (L_opt's input): its uvd as camera joints, its
/// twist, the rest joints of its shape and its leaf rotations.
pub fn heatmap_solution(
    out: &NetOutput,
    batch: &Batch,
    input_size: usize,
    basis: &RestBasis,
    opts: &BatchIkolOptions,
) -> candle_core::Result<BatchSolution> {
    let xyz = predicted_joints(&out.uvd, batch, input_size)?;
    let rest = basis.rest(&out.beta)?;
    solve(&xyz, &out.phi, &rest, out.leaf.as_ref(), opts)
}

/// All losses of a network output on a batch; `solution` ([`heatmap_solution`]; None: the
/// solver is off) gives L_opt and L_theta.
/// `targets` (None: the batch's labels, every sample alike) replace the 3D labels and weigh
/// each sample's 3D terms: L_beta, L_twist, L_opt, L_theta and the depth coordinate of L_uvd
/// (whose target becomes the target joints' root-relative depth / `DEPTH_FACTOR_M`, as
/// `cam_to_uvd` makes it); a sample of weight 0 keeps the u, v of L_uvd (its 2D keypoints).
pub fn compute_losses(
    out: &NetOutput,
    batch: &Batch,
    weights: &LossWeights,
    input_size: usize,
    solution: Option<&BatchSolution>,
    targets: Option<Targets3d<'_>>,
) -> candle_core::Result<Losses> {
    let dt = out.uvd.dtype();
    let w = targets.map(|t| t.weight.to_dtype(dt)).transpose()?;
    let (t_joints, t_rotations, t_beta, t_twist) = match targets {
        Some(t) => (t.joints, t.rotations, t.beta, t.twist),
        None => (&batch.joints, &batch.rotations, &batch.beta, &batch.twist),
    };
    let beta = mean_of(&out.beta.sub(&t_beta.to_dtype(dt)?)?.sqr()?, w.as_ref())?;
    let twist = mean_of(&out.phi.sub(&t_twist.to_dtype(dt)?)?.sqr()?, w.as_ref())?;
    let uvd = match &w {
        None => uvd_loss(&out.uvd, &batch.uvd, input_size / 4)?,
        Some(w) => {
            let b = batch.len();
            let depth = t_joints
                .to_dtype(dt)?
                .narrow(2, 2, 1)?
                .affine(1.0 / DEPTH_FACTOR_M, 0.0)?
                .broadcast_mul(&w.reshape((b, 1, 1))?)?;
            let target = Tensor::cat(&[&batch.uvd.to_dtype(dt)?.narrow(2, 0, 2)?, &depth], 2)?;
            uvd_loss_weighted(&out.uvd, &target, input_size / 4, Some(w))?
        }
    };
    let mut total = beta
        .affine(weights.beta, 0.0)?
        .add(&twist.affine(weights.twist, 0.0)?)?
        .add(&uvd.affine(weights.uvd, 0.0)?)?;
    let (mut opt, mut theta) = (None, None);
    if let Some(sol) = solution {
        let (o, th) = solver_losses_weighted(sol, t_joints, t_rotations, w.as_ref())?;
        total = total
            .add(&o.affine(weights.opt, 0.0)?)?
            .add(&th.affine(weights.theta, 0.0)?)?;
        opt = Some(o);
        theta = Some(th);
    }
    Ok(Losses {
        total,
        beta,
        twist,
        uvd,
        opt,
        theta,
        joints_3d: None,
        keypoints_2d: None,
    })
}

/// Forward kinematics on tensors: local rotations (B, 24, 3, 3) and rest joints (B, 24, 3) ->
/// posed joints (B, 24, 3) relative to the root (SMPL's `batch_rigid_transform`, as
/// `ikol_body::forward_kinematics`: p_j = p_parent + G_parent (J_j - J_parent)).
pub fn posed_joints(rotations: &Tensor, rest: &Tensor) -> candle_core::Result<Tensor> {
    let mut global: Vec<Tensor> = Vec::with_capacity(SMPL_JOINTS);
    let mut pos: Vec<Tensor> = Vec::with_capacity(SMPL_JOINTS);
    for j in 0..SMPL_JOINTS {
        let r = rotations.narrow(1, j, 1)?.squeeze(1)?;
        match usize::try_from(SMPL24_PARENTS[j]) {
            Ok(p) => {
                let bone = rest.narrow(1, j, 1)?.sub(&rest.narrow(1, p, 1)?)?;
                let moved = global[p].matmul(&bone.transpose(1, 2)?)?.transpose(1, 2)?;
                pos.push(pos[p].add(&moved)?);
                global.push(global[p].matmul(&r)?);
            }
            Err(_) => {
                pos.push(rest.narrow(1, 0, 1)?.zeros_like()?);
                global.push(r);
            }
        }
    }
    Tensor::cat(&pos, 1)
}

/// Mean of `err` (B, ...) over each sample, weighted by `w` (B,): sum_b w_b mean(err_b) /
/// sum_b w_b (the sum of weights of the global batch under data-parallel training), and 0 when no
/// sample has weight.
fn weighted_mean(err: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let b = err.dim(0)?;
    let per = err.reshape((b, ()))?.mean(1)?;
    let w = w.to_dtype(err.dtype())?;
    per.mul(&w)?
        .sum_all()?
        .div(&global_count(&w.sum_all()?)?.affine(1.0, 1e-9)?)
}

/// 3D targets of a regressor batch: the batch's own, or SPIN's with fits in place of hidden
/// labels; `weight` (B,) weighs each sample's 3D terms (0: 2D only).
#[derive(Debug, Clone, Copy)]
pub struct Targets3d<'a> {
    pub joints: &'a Tensor,
    pub rotations: &'a Tensor,
    pub beta: &'a Tensor,
    /// (B, 23, 2); used by the heatmap network only.
    pub twist: &'a Tensor,
    pub weight: &'a Tensor,
}

/// The losses of a body regressor's outer iterations on a batch (module docs); `targets`
/// default to the batch's labels with every sample weighted 1.
pub fn regressor_losses(
    steps: &[RegressorStep],
    batch: &Batch,
    weights: &LossWeights,
    basis: &RestBasis,
    targets: Option<Targets3d<'_>>,
) -> candle_core::Result<Losses> {
    let Some(last) = steps.last() else {
        candle_core::bail!("the regressor returned no iteration")
    };
    let dt = last.theta.dtype();
    let ones = Tensor::ones(batch.len(), dt, last.theta.device())?;
    let t = targets.unwrap_or(Targets3d {
        joints: &batch.joints,
        rotations: &batch.rotations,
        beta: &batch.beta,
        twist: &batch.twist,
        weight: &ones,
    });
    let target_2d = batch.uvd.narrow(2, 0, 2)?.to_dtype(dt)?.affine(2.0, 0.0)?;
    let target_3d = t.joints.to_dtype(dt)?;
    let target_rot = t.rotations.to_dtype(dt)?;
    let target_beta = t.beta.to_dtype(dt)?;
    let mut total = Tensor::zeros((), dt, last.theta.device())?;
    let mut terms = None;
    for step in steps {
        let rot = step.rotations()?;
        let joints = posed_joints(&rot, &basis.rest(&step.beta)?)?;
        let j3 = weighted_mean(&joints.sub(&target_3d)?.abs()?, t.weight)?;
        let (scale, shift) = (step.cam.narrow(1, 0, 1)?, step.cam.narrow(1, 1, 2)?);
        let proj = joints
            .narrow(2, 0, 2)?
            .broadcast_mul(&scale.unsqueeze(2)?)?
            .broadcast_add(&shift.unsqueeze(1)?)?;
        let k2 = proj.sub(&target_2d)?.abs()?.mean_all()?;
        let r = weighted_mean(&rot.sub(&target_rot)?.sqr()?, t.weight)?;
        let b = weighted_mean(&step.beta.sub(&target_beta)?.sqr()?, t.weight)?;
        let prior = step.beta.sqr()?.mean_all()?;
        total = total
            .add(&j3.affine(weights.joints_3d, 0.0)?)?
            .add(&k2.affine(weights.keypoints_2d, 0.0)?)?
            .add(&r.affine(weights.rotation, 0.0)?)?
            .add(&b.affine(weights.beta, 0.0)?)?
            .add(&prior.affine(weights.shape_prior, 0.0)?)?;
        terms = Some((j3, k2, r, b));
    }
    let Some((j3, k2, r, b)) = terms else {
        candle_core::bail!("the regressor returned no iteration")
    };
    let zero = total.zeros_like()?;
    Ok(Losses {
        total,
        beta: b,
        twist: zero.clone(),
        uvd: zero,
        opt: None,
        theta: Some(r),
        joints_3d: Some(j3),
        keypoints_2d: Some(k2),
    })
}
