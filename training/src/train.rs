//! The training loop: seeded initialisation and batch order, AdamW with a multi-step schedule,
//! optional global-norm gradient clipping, a NaN guard (a batch with a non-finite loss or
//! gradient is skipped and reported), checkpoints (backbone safetensors loadable by
//! `ikol_backbone::Backbone::load`, plus a `.state.safetensors` with the optimiser moments, step
//! and config) with exact resume, evaluation (MPJPE, PA-MPJPE) and CSV metrics.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle_core::Shape;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use ikol_backbone::{HeatmapNet, RegressorNet, RegressorNetConfig};
use ikol_body::BodyModel;
use ikol_solver::batch::BatchIkolOptions;
use ikol_types::nalgebra::{Matrix3, Vector3};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{DataConfig, TrainConfig};
use crate::data::{
    Batch, Dataset, InMemory, ShardDataset, SynthDataset, SynthOptions, sample_seed,
};
use crate::dist::Communicator;
use crate::loss::{
    LossValues, RestBasis, compute_losses, heatmap_solution, posed_joints, predicted_joints,
    regressor_losses, solve,
};
use crate::optim::AdamW;
use crate::spin::{FitStore, Prediction, SpinLoop, Supervision, labels_hidden, store_path_for};
use ikol_eval::metrics::{mpjpe, pa_mpjpe};

/// Metadata keys of the state file.
const META_STEP: &str = "ikol.train.step";
const META_CONFIG: &str = "ikol.train.config";
const META_ADAM_T: &str = "ikol.train.adam_t";
const META_SKIPPED: &str = "ikol.train.skipped";

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The step just taken (0-based).
    pub step: usize,
    pub losses: LossValues,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The NaN guard skipped this batch.
    pub skipped: bool,
    /// Samples supervised by a stored fit (SPIN) in this batch.
    pub fits: usize,
    pub seconds: f64,
}

/// Evaluation figures (millimetres).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalReport {
    /// MPJPE of the IKOL layer's joints.
    pub mpjpe_mm: f64,
    /// PA-MPJPE of the IKOL layer's joints.
    pub pa_mpjpe_mm: f64,
    /// MPJPE of the joints straight from uvd (no solver).
    pub mpjpe_uvd_mm: f64,
    /// Per-vertex error of the mesh (predicted beta and solved rotations vs the ground truth),
    /// root-aligned.
    pub pve_mm: f64,
    pub samples: usize,
}

/// A `VarBuilder` over `varmap` whose new variables are drawn from an RNG seeded by (`seed`,
/// variable name), with the distribution their `Init` names (as `candle_nn::Init::var`: constant,
/// normal, uniform, Kaiming normal/uniform with PyTorch's fan and gain). candle's own
/// initialisers draw from an unseeded RNG; with this a run's starting weights are a function of
/// its seed, on every worker of a group and in every repeated run.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend: Box<dyn SimpleBackend> = Box::new(SeededVarMap {
        map: varmap.clone(),
        seed,
    });
    VarBuilder::from_backend(backend, dtype, device.clone())
}

struct SeededVarMap {
    map: VarMap,
    seed: u64,
}

impl SeededVarMap {
    fn draw(&self, init: Init, shape: &Shape, name: &str) -> candle_core::Result<Tensor> {
        // FNV-1a of the name, mixed with the run's seed.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut rng = StdRng::seed_from_u64(sample_seed(self.seed, h));
        let n = shape.elem_count();
        let normal = |rng: &mut StdRng, mean: f64, std: f64| -> Vec<f64> {
            // Box-Muller: two uniforms per value (the second of each pair is not used).
            (0..n)
                .map(|_| {
                    let u1: f64 = 1.0 - rng.random::<f64>();
                    let u2: f64 = rng.random::<f64>();
                    mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                })
                .collect()
        };
        let uniform = |rng: &mut StdRng, lo: f64, up: f64| -> Vec<f64> {
            (0..n).map(|_| rng.random_range(lo..up)).collect()
        };
        let v = match init {
            Init::Const(c) => vec![c; n],
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        uniform(&mut rng, -bound, bound)
                    }
                }
            }
        };
        Tensor::from_vec(v, shape, &Device::Cpu)
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self
            .map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(v) = data.get(name) {
            if v.shape() != &shape {
                candle_core::bail!("shape mismatch on {name}: {shape:?} <> {:?}", v.shape())
            }
            return Ok(v.as_tensor().clone());
        }
        let var = Var::from_tensor(
            &self
                .draw(init, &shape, name)?
                .to_dtype(dtype)?
                .to_device(dev)?,
        )?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: a training VarMap creates variables with a shape and an Init")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().is_ok_and(|d| d.contains_key(name))
    }
}

/// The trainable parameters of a varmap, sorted by name (BatchNorm statistics and `init_shape`
/// excluded, as `ikol_backbone::weights::trainable_vars`).
pub fn named_trainable(varmap: &VarMap) -> anyhow::Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, _)| {
            !(k.ends_with("running_mean")
                || k.ends_with("running_var")
                || k.as_str() == "init_shape")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Opens the configured training set.
pub fn open_training_set(cfg: &TrainConfig) -> anyhow::Result<Box<dyn Dataset>> {
    Ok(match &cfg.data {
        DataConfig::Synthetic { count, seed } => {
            let opts = SynthOptions::new(cfg.net.input_size, cfg.net.num_betas, cfg.body);
            Box::new(InMemory::collect(&SynthDataset::new(opts, *seed, *count)?)?)
        }
        DataConfig::Shards { dir } => {
            let ds = ShardDataset::open(dir)?;
            anyhow::ensure!(
                ds.input_size() == cfg.net.input_size,
                "shards are {} px, the network takes {}",
                ds.input_size(),
                cfg.net.input_size
            );
            Box::new(ds)
        }
        DataConfig::Pw3d {
            root,
            split,
            sequence,
        } => Box::new(crate::pw3d::Pw3dDataset::open(
            root,
            split,
            sequence,
            cfg.body.load()?,
            cfg.net.input_size,
            cfg.net.num_betas,
        )?),
        DataConfig::Coco { json, image_root } => Box::new(crate::coco::CocoDataset::open(
            json,
            image_root,
            cfg.body.load()?,
            cfg.net.input_size,
            cfg.net.num_betas,
        )?),
    })
}

fn to_rows(t: &Tensor) -> anyhow::Result<Vec<Vec<Vector3<f64>>>> {
    let v = t.to_dtype(DType::F64)?.to_vec3::<f64>()?;
    Ok(v.into_iter()
        .map(|p| p.iter().map(|j| Vector3::new(j[0], j[1], j[2])).collect())
        .collect())
}

fn to_matrices(t: &Tensor) -> anyhow::Result<Vec<Vec<Matrix3<f64>>>> {
    let (b, j) = (t.dim(0)?, t.dim(1)?);
    let v = t
        .to_dtype(DType::F64)?
        .reshape((b, j, 9))?
        .to_vec3::<f64>()?;
    Ok(v.into_iter()
        .map(|p| p.iter().map(|m| Matrix3::from_row_slice(m)).collect())
        .collect())
}

fn to_betas(t: &Tensor, nb: usize) -> anyhow::Result<Vec<Vec<f64>>> {
    let v = t.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    Ok(v.into_iter()
        .map(|b| b[..nb.min(b.len())].to_vec())
        .collect())
}

/// Running sums of the evaluation figures (metres).
#[derive(Default)]
struct Scores {
    mpjpe: f64,
    pa: f64,
    direct: f64,
    pve: f64,
    n: usize,
}

impl Scores {
    /// Adds a batch: predicted root-relative joints and body (local rotations, beta) against
    /// the batch's ground truth; `direct` are joints before a solver (heatmap network only).
    fn add(
        &mut self,
        body: &BodyModel,
        batch: &Batch,
        joints: &Tensor,
        direct: Option<&Tensor>,
        rotations: &Tensor,
        beta: &Tensor,
    ) -> anyhow::Result<()> {
        let nb = body.num_betas;
        let gt = to_rows(&batch.joints)?;
        let pred = to_rows(joints)?;
        let direct = direct.map(to_rows).transpose()?;
        let (rot_p, rot_g) = (to_matrices(rotations)?, to_matrices(&batch.rotations)?);
        let (beta_p, beta_g) = (to_betas(beta, nb)?, to_betas(&batch.beta, nb)?);
        for (i, (g, p)) in gt.iter().zip(&pred).enumerate() {
            self.mpjpe += mpjpe(p, g);
            self.pa += pa_mpjpe(p, g);
            if let Some(d) = &direct {
                self.direct += mpjpe(&d[i], g);
            }
            let mp = body.forward(&beta_p[i], &rot_p[i])?;
            let mg = body.forward(&beta_g[i], &rot_g[i])?;
            self.pve += vertex_error(&mp, &mg);
            self.n += 1;
        }
        Ok(())
    }

    fn report(&self, has_direct: bool) -> EvalReport {
        let k = 1000.0 / self.n.max(1) as f64;
        EvalReport {
            mpjpe_mm: self.mpjpe * k,
            pa_mpjpe_mm: self.pa * k,
            mpjpe_uvd_mm: if has_direct {
                self.direct * k
            } else {
                f64::NAN
            },
            pve_mm: self.pve * k,
            samples: self.n,
        }
    }
}

/// Batches of `batch_size` over the whole of `ds`, in order.
fn batches(
    ds: &dyn Dataset,
    batch_size: usize,
    device: &Device,
) -> impl Iterator<Item = anyhow::Result<Batch>> {
    let step = batch_size.max(1);
    (0..ds.len()).step_by(step).map(move |start| {
        let idx: Vec<usize> = (start..(start + step).min(ds.len())).collect();
        Batch::gather(ds, &idx, device)
    })
}

/// Evaluates `net` on `ds` (evaluation mode; solver on the test path with `iterations`).
pub fn evaluate(
    net: &HeatmapNet,
    ds: &dyn Dataset,
    body: &BodyModel,
    basis: &RestBasis,
    iterations: usize,
    batch_size: usize,
    device: &Device,
) -> anyhow::Result<EvalReport> {
    let opts = BatchIkolOptions {
        iterations,
        ..BatchIkolOptions::default()
    };
    let s = net.config().input_size;
    let mut scores = Scores::default();
    for batch in batches(ds, batch_size, device) {
        // In the run's precision (the basis is built in it).
        let batch = batch?.with_dtype(basis.dtype())?;
        let out = net.forward_t(&batch.images, false)?;
        let xyz = predicted_joints(&out.uvd.detach(), &batch, s)?;
        let rest = basis.rest(&out.beta.detach())?;
        let leaf = out.leaf.as_ref().map(Tensor::detach);
        let sol = solve(&xyz, &out.phi.detach(), &rest, leaf.as_ref(), &opts)?;
        scores.add(
            body,
            &batch,
            &sol.joints,
            Some(&xyz),
            &sol.local_rotations,
            &out.beta,
        )?;
    }
    Ok(scores.report(true))
}

/// Evaluates a body regressor on `ds` (evaluation mode): its last outer iteration's body, posed
/// by forward kinematics on `basis`; `mpjpe_uvd_mm` is NaN (there is no uvd).
pub fn evaluate_regressor(
    net: &RegressorNet,
    ds: &dyn Dataset,
    body: &BodyModel,
    basis: &RestBasis,
    batch_size: usize,
    device: &Device,
) -> anyhow::Result<EvalReport> {
    let mut scores = Scores::default();
    for batch in batches(ds, batch_size, device) {
        // In the run's precision (the basis is built in it).
        let batch = batch?.with_dtype(basis.dtype())?;
        let steps = net.forward_t(&batch.images, false)?;
        let last = steps.last().context("the regressor ran no iteration")?;
        let rot = last.rotations()?.detach();
        let joints = posed_joints(&rot, &basis.rest(&last.beta.detach())?)?;
        scores.add(body, &batch, &joints, None, &rot, &last.beta)?;
    }
    Ok(scores.report(false))
}

/// Mean vertex distance of two posed meshes after aligning their root joints.
fn vertex_error(a: &ikol_body::Posed, b: &ikol_body::Posed) -> f64 {
    let (ra, rb) = (a.joints[0], b.joints[0]);
    let n = a.vertices.len().max(1) as f64;
    a.vertices
        .iter()
        .zip(&b.vertices)
        .map(|(p, q)| {
            let p = Vector3::new(f64::from(p[0]), f64::from(p[1]), f64::from(p[2])) - ra;
            let q = Vector3::new(f64::from(q[0]), f64::from(q[1]), f64::from(q[2])) - rb;
            (p - q).norm()
        })
        .sum::<f64>()
        / n
}

/// A training run in progress.
pub struct Trainer {
    pub cfg: TrainConfig,
    device: Device,
    varmap: VarMap,
    net: Model,
    opt: AdamW,
    step: usize,
    skipped: usize,
    basis: RestBasis,
    body: std::sync::Arc<BodyModel>,
    train: TrainSet,
    eval: Option<InMemory>,
    spin: Option<SpinLoop>,
    /// The data-parallel group (None: one worker).
    comm: Option<Arc<dyn Communicator>>,
}

struct TrainSet(Box<dyn Dataset>);

/// The network being trained.
#[derive(Debug)]
enum Model {
    Heatmap(HeatmapNet),
    Regressor(RegressorNet, RegressorNetConfig),
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.step)
            .field("skipped", &self.skipped)
            .field("train", &self.train)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TrainSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrainSet({} samples)", self.0.len())
    }
}

impl Trainer {
    /// A fresh run: seeded weights, zero optimiser state.
    pub fn new(cfg: TrainConfig, device: &Device) -> anyhow::Result<Self> {
        cfg.validate()?;
        let train = open_training_set(&cfg)?;
        Self::with_dataset(cfg, train, device)
    }

    /// A fresh run on a given training set.
    pub fn with_dataset(
        mut cfg: TrainConfig,
        train: Box<dyn Dataset>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        cfg.validate()?;
        anyhow::ensure!(!train.is_empty(), "empty training set");
        if cfg.epochs > 0 {
            cfg.steps = (cfg.epochs * train.len()).div_ceil(cfg.batch_size);
        }
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, cfg.seed, cfg.precision.dtype(), device);
        let net = match cfg.regressor_net() {
            Some(r) => Model::Regressor(RegressorNet::new(&r, vb)?, r),
            None => Model::Heatmap(HeatmapNet::new(&cfg.net, vb)?),
        };
        let o = &cfg.optim;
        let opt = AdamW::new(
            named_trainable(&varmap)?,
            o.beta1,
            o.beta2,
            o.eps,
            o.weight_decay,
        )?;
        let body = cfg.body.load()?;
        let basis = RestBasis::new(&body, cfg.net.num_betas, cfg.precision.dtype(), device)?;
        let eval = if cfg.eval_count > 0 && cfg.eval_every > 0 {
            let opts = SynthOptions::new(cfg.net.input_size, cfg.net.num_betas, cfg.body);
            Some(InMemory::collect(&SynthDataset::new(
                opts,
                cfg.eval_seed,
                cfg.eval_count,
            )?)?)
        } else {
            None
        };
        let spin = match cfg.fitting_in_the_loop {
            Some(s) => Some(SpinLoop::new(
                s,
                body.clone(),
                train.len(),
                cfg.net.num_betas,
            )?),
            None => None,
        };
        Ok(Self {
            cfg,
            device: device.clone(),
            varmap,
            net,
            opt,
            step: 0,
            skipped: 0,
            basis,
            body,
            train: TrainSet(train),
            eval,
            spin,
            comm: None,
        })
    }

    /// Makes this trainer one rank of a data-parallel group (see [`crate::dist`]): `batch_size`
    /// becomes the per-worker batch of a global batch `batch_size x world_size`. Every rank must
    /// be built from the same config (and checkpoint, when resuming).
    pub fn with_communicator(mut self, comm: Arc<dyn Communicator>) -> anyhow::Result<Self> {
        if self.cfg.epochs > 0 {
            self.cfg.steps = (self.cfg.epochs * self.train.0.len())
                .div_ceil(self.cfg.batch_size * comm.world_size());
        }
        // Replicas start equal: rank 0's variables (weights, BatchNorm statistics) and optimiser
        // moments everywhere, as DDP does at construction (fresh runs of one seed already start
        // equal; this also covers workers built from different checkpoints or configs).
        {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
            let mut names: Vec<&String> = data.keys().collect();
            names.sort();
            for name in names {
                let var = &data[name];
                var.set(&crate::dist::broadcast_from_rank0(
                    comm.as_ref(),
                    var.as_tensor(),
                )?)?;
            }
        }
        for slot in &mut self.opt.slots {
            slot.m = crate::dist::broadcast_from_rank0(comm.as_ref(), &slot.m)?;
            slot.v = crate::dist::broadcast_from_rank0(comm.as_ref(), &slot.v)?;
        }
        self.comm = Some(comm);
        Ok(self)
    }

    /// This worker's rank (0 without a group).
    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank())
    }

    fn world_size(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.world_size())
    }

    /// Resumes from a checkpoint written by [`Trainer::save_checkpoint`] (`weights` is the
    /// backbone file; the state file sits next to it). The run's config comes from the state
    /// file unless `cfg` is given (e.g. to train for more steps).
    pub fn resume(
        weights: &Path,
        cfg: Option<TrainConfig>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let state_path = state_path_for(weights);
        let (meta, tensors) = read_state(&state_path)?;
        let saved: TrainConfig = serde_json::from_str(
            meta.get(META_CONFIG)
                .context("state file lacks the training config")?,
        )?;
        let cfg = cfg.unwrap_or(saved);
        let mut tr = Self::new(cfg, device)?;
        tr.load_state(weights, &meta, &tensors)?;
        Ok(tr)
    }

    /// Resumes on a given training set.
    pub fn resume_with_dataset(
        weights: &Path,
        cfg: TrainConfig,
        train: Box<dyn Dataset>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let (meta, tensors) = read_state(&state_path_for(weights))?;
        let mut tr = Self::with_dataset(cfg, train, device)?;
        tr.load_state(weights, &meta, &tensors)?;
        Ok(tr)
    }

    fn load_state(
        &mut self,
        weights: &Path,
        meta: &HashMap<String, String>,
        tensors: &HashMap<String, Tensor>,
    ) -> anyhow::Result<()> {
        let w = candle_core::safetensors::load(weights, &self.device)
            .with_context(|| format!("reading {weights:?}"))?;
        {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
            for (name, var) in data.iter() {
                let t = w
                    .get(name)
                    .with_context(|| format!("{weights:?} lacks {name}"))?;
                var.set(&t.to_dtype(var.dtype())?)?;
            }
        }
        let parse = |k: &str| -> anyhow::Result<usize> {
            Ok(meta
                .get(k)
                .with_context(|| format!("state lacks {k}"))?
                .parse()?)
        };
        self.step = parse(META_STEP)?;
        self.skipped = parse(META_SKIPPED)?;
        if let Some(spin) = self.spin.as_mut() {
            let path = store_path_for(weights);
            spin.store = FitStore::load(&path, self.train.0.len(), self.cfg.net.num_betas)?;
            let a = &self.cfg.augment;
            if !spin.store.dataset_frame && a.enabled && a.flip_prob > 0.0 {
                eprintln!(
                    "warning: {} was written before fits were stored unmirrored: the fits of \
                     flipped draws in it supervise their samples mirrored; delete it to fit \
                     afresh",
                    path.display()
                );
            }
        }
        self.opt.t = parse(META_ADAM_T)?;
        for slot in &mut self.opt.slots {
            let get = |p: &str| -> anyhow::Result<Tensor> {
                Ok(tensors
                    .get(&format!("{p}.{}", slot.name))
                    .with_context(|| format!("state lacks {p}.{}", slot.name))?
                    .to_device(&self.device)?)
            };
            slot.m = get("m")?;
            slot.v = get("v")?;
        }
        Ok(())
    }

    pub fn step(&self) -> usize {
        self.step
    }

    fn batchnorm_stats(&self) -> anyhow::Result<Vec<Var>> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
        Ok(data
            .iter()
            .filter(|(k, _)| k.ends_with("running_mean") || k.ends_with("running_var"))
            .map(|(_, v)| v.clone())
            .collect())
    }

    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The heatmap network (None when a body regressor is trained).
    pub fn net(&self) -> Option<&HeatmapNet> {
        match &self.net {
            Model::Heatmap(n) => Some(n),
            Model::Regressor(..) => None,
        }
    }

    /// The body regressor (None when the heatmap network is trained).
    pub fn regressor(&self) -> Option<&RegressorNet> {
        match &self.net {
            Model::Regressor(n, _) => Some(n),
            Model::Heatmap(_) => None,
        }
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Sample indices of this worker's shard of global batch `step`: epoch-wise permutations
    /// seeded by (seed, epoch); rank r of N takes positions `[r B, (r + 1) B)` of the global
    /// batch of `N B`.
    pub fn batch_indices(&self, step: usize) -> Vec<usize> {
        let n = self.train.0.len();
        let b = self.cfg.batch_size;
        let first = (step * self.world_size() + self.rank()) * b;
        let mut cache: Option<(usize, Vec<usize>)> = None;
        (0..b)
            .map(|i| {
                let g = first + i;
                let (epoch, pos) = (g / n, g % n);
                if cache.as_ref().is_none_or(|c| c.0 != epoch) {
                    let mut perm: Vec<usize> = (0..n).collect();
                    let mut rng =
                        StdRng::seed_from_u64(sample_seed(self.cfg.seed ^ 0x5eed, epoch as u64));
                    for k in (1..n).rev() {
                        perm.swap(k, rng.random_range(0..=k));
                    }
                    cache = Some((epoch, perm));
                }
                cache.as_ref().map_or(pos, |c| c.1[pos])
            })
            .collect()
    }

    /// One optimisation step on the next batch.
    pub fn train_step(&mut self) -> anyhow::Result<StepReport> {
        let t0 = Instant::now();
        let step = self.step;
        if let Some(spin) = self.spin.as_mut()
            && step == 0
            && spin.prefills()
            && spin.store.filled() == 0
        {
            // SPIN's static fits, for the samples whose 3D labels are hidden.
            let hidden: Vec<usize> = (0..self.train.0.len())
                .filter(|&i| labels_hidden(i, self.cfg.hide_3d_fraction))
                .collect();
            let good = spin.prefill(
                self.train.0.as_ref(),
                &hidden,
                self.cfg.net.input_size,
                &self.device,
            )?;
            eprintln!(
                "SPIN pre-fill: {good} of {} samples without 3D labels fitted below max_error \
                 ({:.1} s)",
                hidden.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        let idx = self.batch_indices(step);
        let batch = Batch::gather_augmented(
            self.train.0.as_ref(),
            &idx,
            &self.cfg.augment,
            sample_seed(self.cfg.seed ^ 0x05EE_DA06_u64, step as u64),
            &self.device,
        )?
        .with_dtype(self.cfg.precision.dtype())?;
        // The group over the forward and backward pass of a data-parallel step: global-batch
        // BatchNorm and loss denominators.
        let _group = self
            .comm
            .clone()
            .map(ikol_backbone::collective::data_parallel);
        // BatchNorm statistics move in the forward pass: keep a copy to undo a skipped batch.
        let stats = self.batchnorm_stats()?;
        let saved: Vec<Tensor> = stats
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        let fits;
        let hidden: Vec<bool> = idx
            .iter()
            .map(|&i| labels_hidden(i, self.cfg.hide_3d_fraction))
            .collect();
        let input_size = self.cfg.net.input_size;
        let losses = match &self.net {
            Model::Heatmap(net) => {
                let out = net.forward_t(&batch.images, true)?;
                let solution = match self.cfg.solver.enabled {
                    true => Some(heatmap_solution(
                        &out,
                        &batch,
                        input_size,
                        &self.basis,
                        &self.cfg.solver.options(),
                    )?),
                    false => None,
                };
                let sup = match (self.spin.as_mut(), &solution) {
                    (Some(spin), Some(sol)) => {
                        let pred = Prediction::from_solution(
                            &sol.local_rotations,
                            &out,
                            &batch,
                            input_size,
                        )?;
                        Some(spin.step(&idx, &hidden, &pred, &batch, input_size)?)
                    }
                    (Some(_), None) => anyhow::bail!(
                        "fitting_in_the_loop with the heatmap network needs the IKOL layer \
                         (solver.enabled) to start its fits"
                    ),
                    // Decided by the config, not the batch: every worker of a data-parallel
                    // group must take the same losses (their counts are collectives).
                    (None, _) if self.cfg.hide_3d_fraction > 0.0 => {
                        Some(Supervision::labels(&batch, &hidden)?)
                    }
                    (None, _) => None,
                };
                fits = sup.as_ref().map_or(0, |s| s.from_fits);
                compute_losses(
                    &out,
                    &batch,
                    &self.cfg.loss,
                    input_size,
                    solution.as_ref(),
                    sup.as_ref().map(Supervision::targets),
                )?
            }
            Model::Regressor(net, _) => {
                let steps = net.forward_t(&batch.images, true)?;
                let sup = match self.spin.as_mut() {
                    Some(spin) => {
                        let last = steps.last().context("the regressor ran no iteration")?;
                        let pred = Prediction::from_regressor(&last.detach(), &batch, input_size)?;
                        spin.step(&idx, &hidden, &pred, &batch, input_size)?
                    }
                    None => Supervision::labels(&batch, &hidden)?,
                };
                fits = sup.from_fits;
                regressor_losses(
                    &steps,
                    &batch,
                    &self.cfg.loss,
                    &self.basis,
                    Some(sup.targets()),
                )?
            }
        };
        if let (Some(spin), Some(comm)) = (self.spin.as_mut(), self.comm.as_ref())
            && comm.world_size() > 1
        {
            // Every rank fitted its own shard: all of them take every rank's fits, so that the
            // stores stay one (a sample meets another rank in a later epoch).
            let b = self.cfg.batch_size;
            spin.store.share(
                comm,
                &idx,
                comm.rank() * b,
                comm.world_size() * b,
                &self.device,
            )?;
        }
        let mut values = losses.values()?;
        if let Some(comm) = &self.comm {
            // The global batch's losses (and one verdict on finiteness for every rank).
            let mean =
                crate::dist::mean_over_ranks(comm.as_ref(), &values.to_array(), &self.device)?;
            values = LossValues::from_slice(&mean)?;
        }
        let lr = self.cfg.optim.lr_at(step);
        let mut report = StepReport {
            step,
            losses: values,
            lr,
            grad_norm: f64::NAN,
            skipped: false,
            fits,
            seconds: 0.0,
        };
        let mut ok = values.total.is_finite();
        if ok {
            let grads = losses.total.backward()?;
            let mut gs: Vec<Option<Tensor>> = self
                .opt
                .slots
                .iter()
                .map(|s| grads.get(s.var.as_tensor()).cloned())
                .collect();
            if let Some(comm) = &self.comm {
                crate::dist::average_gradients(comm.as_ref(), &mut gs, crate::dist::BUCKET_BYTES)?;
            }
            let mut sq: Option<Tensor> = None;
            for g in gs.iter().flatten() {
                let s = g.sqr()?.sum_all()?.to_dtype(DType::F64)?;
                sq = Some(match sq {
                    Some(a) => a.add(&s)?,
                    None => s,
                });
            }
            let norm = match sq {
                Some(s) => s.to_scalar::<f64>()?.sqrt(),
                None => 0.0,
            };
            report.grad_norm = norm;
            ok = norm.is_finite();
            if ok {
                let scale = match self.cfg.optim.clip_grad_norm {
                    Some(c) if norm > c => c / (norm + 1e-6),
                    _ => 1.0,
                };
                self.opt.step(&gs, lr, scale)?;
            }
        }
        if !ok {
            for (v, t) in stats.iter().zip(&saved) {
                v.set(t)?;
            }
            self.skipped += 1;
            report.skipped = true;
        }
        self.step += 1;
        report.seconds = t0.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Evaluates on the held-out synthetic set (None when evaluation is off).
    pub fn evaluate(&self) -> anyhow::Result<Option<EvalReport>> {
        let Some(ds) = &self.eval else {
            return Ok(None);
        };
        Ok(Some(match &self.net {
            Model::Heatmap(net) => evaluate(
                net,
                ds,
                &self.body,
                &self.basis,
                self.cfg.solver.iterations,
                self.cfg.batch_size,
                &self.device,
            )?,
            Model::Regressor(net, _) => evaluate_regressor(
                net,
                ds,
                &self.body,
                &self.basis,
                self.cfg.batch_size,
                &self.device,
            )?,
        }))
    }

    /// Writes `<dir>/checkpoint-<step>.safetensors` (backbone weights with the network config in
    /// the metadata) and `<dir>/checkpoint-<step>.state.safetensors` (optimiser moments, step,
    /// training config); returns the weights path.
    pub fn save_checkpoint(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir:?}"))?;
        let weights = dir.join(format!("checkpoint-{:07}.safetensors", self.step));
        match &self.net {
            Model::Heatmap(_) => {
                ikol_backbone::weights::save_varmap(&weights, &self.cfg.net, &self.varmap)?
            }
            Model::Regressor(_, r) => {
                ikol_backbone::DirectRegressor::from_varmap(r, &self.varmap, &Device::Cpu)?
                    .save(&weights)?
            }
        }
        if let Some(spin) = &self.spin {
            spin.store.save(&store_path_for(&weights))?;
        }
        let mut meta = HashMap::new();
        meta.insert(META_STEP.to_string(), self.step.to_string());
        meta.insert(META_SKIPPED.to_string(), self.skipped.to_string());
        meta.insert(META_ADAM_T.to_string(), self.opt.t.to_string());
        meta.insert(META_CONFIG.to_string(), serde_json::to_string(&self.cfg)?);
        let mut items: Vec<(String, Tensor)> = Vec::new();
        for s in &self.opt.slots {
            items.push((format!("m.{}", s.name), s.m.to_device(&Device::Cpu)?));
            items.push((format!("v.{}", s.name), s.v.to_device(&Device::Cpu)?));
        }
        safetensors::serialize_to_file(items, Some(meta), &state_path_for(&weights))
            .context("writing the optimiser state")?;
        std::fs::write(
            dir.join("latest.txt"),
            weights
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )?;
        Ok(weights)
    }

    /// Trains up to `cfg.steps`, with checkpoints, evaluation, `metrics.csv` and `eval.csv` in
    /// `cfg.out_dir`, and a progress bar when `progress` (on rank 0 of a data-parallel group;
    /// the other ranks only train).
    pub fn run(&mut self, progress: bool) -> anyhow::Result<()> {
        if self.rank() != 0 {
            // Rank 0 evaluates and writes; the others only take their part of each step.
            while self.step < self.cfg.steps {
                self.train_step()?;
            }
            return Ok(());
        }
        let dir = self.cfg.out_dir.clone();
        std::fs::create_dir_all(&dir)?;
        let fresh = self.step == 0;
        let mut metrics = csv_file(
            &dir.join("metrics.csv"),
            fresh,
            "step,total,beta,twist,uvd,opt,theta,joints_3d,keypoints_2d,fits,lr,grad_norm,skipped,seconds",
        )?;
        let mut evals = csv_file(
            &dir.join("eval.csv"),
            fresh,
            "step,mpjpe_mm,pa_mpjpe_mm,mpjpe_uvd_mm,pve_mm,samples",
        )?;
        let bar = if progress {
            indicatif::ProgressBar::new(self.cfg.steps as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_position(self.step as u64);
        while self.step < self.cfg.steps {
            let r = self.train_step()?;
            let l = r.losses;
            writeln!(
                metrics,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                r.step,
                l.total,
                l.beta,
                l.twist,
                l.uvd,
                l.opt,
                l.theta,
                l.joints_3d,
                l.keypoints_2d,
                r.fits,
                r.lr,
                r.grad_norm,
                u8::from(r.skipped),
                r.seconds
            )?;
            if r.skipped {
                bar.println(format!(
                    "step {}: non-finite loss or gradient, batch skipped ({} so far)",
                    r.step, self.skipped
                ));
            }
            bar.set_message(match self.net {
                Model::Heatmap(_) => format!("loss {:.4} (opt {:.4})", l.total, l.opt),
                Model::Regressor(..) => format!("loss {:.4} (3D {:.4})", l.total, l.joints_3d),
            });
            bar.inc(1);
            let done = self.step;
            let eval_due = self.cfg.eval_every > 0 && done.is_multiple_of(self.cfg.eval_every);
            if eval_due && let Some(e) = self.evaluate()? {
                writeln!(
                    evals,
                    "{done},{},{},{},{},{}",
                    e.mpjpe_mm, e.pa_mpjpe_mm, e.mpjpe_uvd_mm, e.pve_mm, e.samples
                )?;
                bar.println(format!(
                    "step {done}: MPJPE {:.1} mm, PA-MPJPE {:.1} mm, PVE {:.1} mm (uvd only {:.1} mm)",
                    e.mpjpe_mm, e.pa_mpjpe_mm, e.pve_mm, e.mpjpe_uvd_mm
                ));
            }
            if self.cfg.checkpoint_every > 0 && done.is_multiple_of(self.cfg.checkpoint_every) {
                self.save_checkpoint(&dir)?;
            }
            metrics.flush()?;
            evals.flush()?;
        }
        bar.finish();
        self.save_checkpoint(&dir)?;
        Ok(())
    }
}

fn csv_file(path: &Path, fresh: bool, header: &str) -> anyhow::Result<std::fs::File> {
    let exists = path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!fresh)
        .truncate(fresh)
        .open(path)
        .with_context(|| format!("opening {path:?}"))?;
    if fresh || !exists {
        writeln!(f, "{header}")?;
    }
    Ok(f)
}

/// `x.safetensors` -> `x.state.safetensors`.
pub fn state_path_for(weights: &Path) -> PathBuf {
    let stem = weights
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    weights.with_file_name(format!("{stem}.state.safetensors"))
}

type State = (HashMap<String, String>, HashMap<String, Tensor>);

fn read_state(path: &Path) -> anyhow::Result<State> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path:?}"))?;
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let meta = st.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    Ok((meta, tensors))
}
