//! Training configuration (JSON). Loss weights follow upstream IKOL (reference 4.5:
//! 1 beta + 0.01 twist + 1 uvd + 0.01 theta), the schedule reference 4.6 (Adam, multi-step decay).

use std::path::Path;

use anyhow::Context;
use ikol_backbone::{
    Config as NetConfig, RegressorConfig, RegressorKind, RegressorNetConfig, RotationRepr, Variant,
};
use ikol_solver::batch::{BatchIkolOptions, JacobianMode};
use serde::{Deserialize, Serialize};

/// Which embedded body model renders and drives the solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BodyChoice {
    /// `ikol-small` (fast rendering; tests).
    #[default]
    Small,
    /// `ikol-default`.
    Default,
}

impl BodyChoice {
    pub fn load(self) -> anyhow::Result<std::sync::Arc<ikol_body::BodyModel>> {
        Ok(match self {
            BodyChoice::Small => ikol_body::BodyModel::embedded_small()?,
            BodyChoice::Default => ikol_body::BodyModel::embedded_default()?,
        })
    }
}

/// Loss weights. Heatmap network: upstream `LOSS.ELEMENTS` for beta, twist, uvd, theta; `opt`
/// is IKOL's L_opt. Body regressors (HKMR Eq. 3, summed over the outer iterations): `joints_3d`,
/// `keypoints_2d`, `rotation` and `beta` (L_smpl), `shape_prior`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    pub beta: f64,
    pub twist: f64,
    pub uvd: f64,
    /// Rotation loss on the solver's local rotations (MSE over 3x3 matrices; solver on only).
    pub theta: f64,
    /// L_opt: L1 (metres) between the solver's joints and the ground truth (solver on only).
    pub opt: f64,
    /// Regressors: L_3D, L1 (metres) of the posed body's root-relative joints.
    pub joints_3d: f64,
    /// Regressors: L_2D, L1 of the weak-perspective projection in normalised crop units (-1..1).
    pub keypoints_2d: f64,
    /// Regressors: the pose part of L_smpl, MSE over local rotation matrices (sign-free).
    pub rotation: f64,
    /// Regressors: mean beta^2 (a Gaussian shape prior; HKMR's pose VAE needs MoSh data).
    pub shape_prior: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            beta: 1.0,
            twist: 0.01,
            uvd: 1.0,
            theta: 0.01,
            opt: 1.0,
            joints_3d: 1.0,
            keypoints_2d: 1.0,
            rotation: 1.0,
            shape_prior: 0.001,
        }
    }
}

/// Which network is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelChoice {
    /// The heatmap network of IKOL / HybrIK (with the IKOL layer when `solver.enabled`).
    #[default]
    Heatmap,
    /// HKMR's hierarchical kinematic regressor on the same ResNet.
    Hkmr,
    /// HMR / SPIN's flat iterative regressor on the same ResNet.
    Flat,
}

/// Head sizes of a body regressor (`model` hkmr or flat); the ResNet, input size and shape
/// count come from `net`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegressorOptions {
    /// HKMR: width of psi and the shape / camera networks; flat: fc1 / fc2 width.
    pub hidden: usize,
    /// Outer iterations (HKMR 3, HMR 3).
    pub outer: usize,
    /// HKMR forward-backward cycles per chain (4).
    pub inner: usize,
    /// Rotation parameterisation: `axis-angle` (HMR, HKMR's paper) or `6d` (SPIN's regressor).
    pub rotation: RotationRepr,
}

impl Default for RegressorOptions {
    fn default() -> Self {
        Self {
            hidden: 64,
            outer: 3,
            inner: 4,
            rotation: RotationRepr::AxisAngle,
        }
    }
}

/// Jacobian handling in the unrolled solver (serde mirror of [`JacobianMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JacobianChoice {
    /// Upstream code: J is a constant.
    #[default]
    Detached,
    /// The paper's GN-Diff: J is differentiated too.
    Differentiated,
}

/// The IKOL layer in the loop (the paper's Table 3 ablation switches `enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SolverConfig {
    pub enabled: bool,
    /// Unrolled Gauss-Newton iterations (upstream 5).
    pub iterations: usize,
    pub jacobian: JacobianChoice,
    /// Upstream's training path (non-SVD root from detached targets, spine3 swings to the neck);
    /// `false` uses the test path (SVD root and spine3).
    pub upstream_training_path: bool,
}

impl Default for SolverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            iterations: 5,
            jacobian: JacobianChoice::Detached,
            upstream_training_path: true,
        }
    }
}

impl SolverConfig {
    /// The batch solver options for training.
    pub fn options(&self) -> BatchIkolOptions {
        let base = if self.upstream_training_path {
            BatchIkolOptions::upstream_training()
        } else {
            BatchIkolOptions::default()
        };
        BatchIkolOptions {
            iterations: self.iterations,
            jacobian: match self.jacobian {
                JacobianChoice::Detached => JacobianMode::Detached,
                JacobianChoice::Differentiated => JacobianMode::Differentiated,
            },
            ..base
        }
    }
}

/// Where training samples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DataConfig {
    /// Generated on the fly (seeded), `count` samples, cached in memory.
    Synthetic { count: usize, seed: u64 },
    /// Shards written by `ikol-train synth`.
    Shards { dir: std::path::PathBuf },
    /// 3DPW sequence files and images under `root` (`split`: train, validation or test;
    /// `sequence`: one name or `all`).
    Pw3d {
        root: std::path::PathBuf,
        split: String,
        #[serde(default = "all_sequences")]
        sequence: String,
    },
    /// Upstream's COCO-style annotation JSON (e.g. `3DPW_train_our.json`, reference 5.1) with
    /// images under `image_root/imageFiles/<sequence>/`.
    Coco {
        json: std::path::PathBuf,
        image_root: std::path::PathBuf,
    },
}

fn all_sequences() -> String {
    "all".into()
}

/// Optimiser and schedule (AdamW; upstream uses Adam, i.e. `weight_decay` 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Multi-step decay: at each of these steps the rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    pub gamma: f64,
    /// Clip the global gradient norm to this value (off when absent).
    pub clip_grad_norm: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            milestones: Vec::new(),
            gamma: 0.1,
            clip_grad_norm: None,
        }
    }
}

impl OptimConfig {
    /// Learning rate at `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        let n = self.milestones.iter().filter(|&&m| step >= m).count();
        self.lr * self.gamma.powi(n as i32)
    }
}

/// Everything `ikol-train train` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Which network: the heatmap network (default) or a body regressor.
    pub model: ModelChoice,
    /// The network (the checkpoint's metadata carries it); a regressor takes its ResNet, input
    /// size, shape count and BatchNorm settings from here.
    pub net: NetConfig,
    /// Head sizes of a body regressor.
    pub regressor: RegressorOptions,
    /// SPIN: the model fitter in the loop (see `crate::spin`; the heatmap network needs its IKOL
    /// layer on, whose solution starts the fits).
    pub fitting_in_the_loop: Option<crate::spin::SpinConfig>,
    /// For experiments: this fraction of the training samples (a seeded draw per index) has its
    /// 3D labels (joints, rotations, shape, twist, depth) hidden, leaving the 2D keypoints.
    pub hide_3d_fraction: f64,
    pub body: BodyChoice,
    pub data: DataConfig,
    /// Held-out synthetic set for evaluation.
    pub eval_count: usize,
    pub eval_seed: u64,
    /// Evaluate every N steps (0: never).
    pub eval_every: usize,
    pub batch_size: usize,
    pub steps: usize,
    /// When > 0, train this many passes over the training set instead: `steps` becomes
    /// ceil(epochs x samples / batch_size). Batches are drawn from a fresh seeded permutation
    /// each epoch.
    pub epochs: usize,
    /// Seed of weight initialisation and batch order.
    pub seed: u64,
    pub loss: LossWeights,
    pub solver: SolverConfig,
    pub optim: OptimConfig,
    /// Output directory: checkpoints, `metrics.csv`, `eval.csv`.
    pub out_dir: std::path::PathBuf,
    /// Write a checkpoint every N steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Augmentation of samples built from frames (3DPW, on-the-fly synthetic); cached crops
    /// (synthetic data held in memory, shards) are used as stored.
    pub augment: crate::augment::Augment,
    /// Arithmetic of the weights, activations and losses: `f32` (default) or `f64` (about
    /// twice the time; for numerical experiments: two runs that differ only in summation order
    /// stay together far longer). Checkpoints are written in f32 either way.
    pub precision: Precision,
}

/// Floating-point type of a training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F64,
}

impl Precision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::F64 => candle_core::DType::F64,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            // Dropout 0: candle's dropout mask is drawn from an unseeded RNG, which would break
            // determinism and exact resume.
            net: NetConfig {
                dropout: 0.0,
                ..NetConfig::tiny(Variant::Ikol24)
            },
            model: ModelChoice::Heatmap,
            regressor: RegressorOptions::default(),
            fitting_in_the_loop: None,
            hide_3d_fraction: 0.0,
            body: BodyChoice::Small,
            data: DataConfig::Synthetic {
                count: 256,
                seed: 1,
            },
            eval_count: 64,
            eval_seed: 1_000_003,
            eval_every: 100,
            batch_size: 16,
            steps: 1000,
            seed: 0,
            loss: LossWeights::default(),
            solver: SolverConfig::default(),
            optim: OptimConfig::default(),
            precision: Precision::F32,
            out_dir: "runs/ikol-train".into(),
            checkpoint_every: 500,
            augment: crate::augment::Augment::default(),
            epochs: 0,
        }
    }
}

impl TrainConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let s = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
        let c: Self = serde_json::from_str(&s).with_context(|| format!("parsing {path:?}"))?;
        c.validate()?;
        Ok(c)
    }

    /// The regressor network of `model` hkmr / flat (`None` for the heatmap network).
    pub fn regressor_net(&self) -> Option<RegressorNetConfig> {
        let kind = match self.model {
            ModelChoice::Heatmap => return None,
            ModelChoice::Hkmr => RegressorKind::Hkmr,
            ModelChoice::Flat => RegressorKind::Flat,
        };
        Some(RegressorNetConfig {
            resnet: self.net.resnet,
            head: RegressorConfig {
                kind,
                feature_dim: self.net.resnet.feature_channels(),
                num_betas: self.net.num_betas,
                hidden: self.regressor.hidden,
                outer: self.regressor.outer,
                inner: self.regressor.inner,
                dropout: self.net.dropout,
                rotation: self.regressor.rotation,
            },
            input_size: self.net.input_size,
            bn_eps: self.net.bn_eps,
            bn_momentum: self.net.bn_momentum,
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.net.validate()?;
        match self.regressor_net() {
            Some(r) => r.validate()?,
            None => {
                anyhow::ensure!(
                    self.net.variant == Variant::Ikol24,
                    "training needs the ikol24 variant (the IKOL layer uses the leaf quaternions)"
                );
                anyhow::ensure!(
                    self.fitting_in_the_loop.is_none() || self.solver.enabled,
                    "fitting_in_the_loop with the heatmap network needs the IKOL layer \
                     (solver.enabled): its solution starts the fits"
                );
            }
        }
        if let Some(s) = &self.fitting_in_the_loop {
            s.validate()?;
        }
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.hide_3d_fraction),
            "hide_3d_fraction must be in [0, 1]"
        );
        anyhow::ensure!(self.batch_size > 0, "batch_size must be positive");
        anyhow::ensure!(
            self.optim.lr.is_finite() && self.optim.lr > 0.0,
            "lr must be positive"
        );
        self.augment.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistep_schedule() {
        let o = OptimConfig {
            lr: 1e-3,
            milestones: vec![10, 20],
            gamma: 0.1,
            ..OptimConfig::default()
        };
        assert_eq!(o.lr_at(0), 1e-3);
        assert_eq!(o.lr_at(9), 1e-3);
        assert!((o.lr_at(10) - 1e-4).abs() < 1e-18);
        assert!((o.lr_at(25) - 1e-5).abs() < 1e-18);
    }

    #[test]
    fn json_round_trip_and_defaults() -> anyhow::Result<()> {
        let c = TrainConfig::default();
        let s = serde_json::to_string(&c)?;
        assert_eq!(serde_json::from_str::<TrainConfig>(&s)?, c);
        // Missing fields take their defaults; unknown fields are refused.
        let partial: TrainConfig =
            serde_json::from_str(r#"{"steps": 5, "solver": {"enabled": false}}"#)?;
        assert_eq!(partial.steps, 5);
        assert!(!partial.solver.enabled);
        assert_eq!(partial.solver.iterations, 5);
        assert!(serde_json::from_str::<TrainConfig>(r#"{"stepz": 5}"#).is_err());
        Ok(())
    }
}
