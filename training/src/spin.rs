//! SPIN: model fitting in the training loop (Kolotouros et al., "Learning to Reconstruct 3D
//! Human Pose and Shape via Model-fitting in the Loop", ICCV 2019; `../shared/seeds/spin-notes.md`).
//!
//! Each training step, for every sample of the batch, the network's prediction starts the model
//! fitter of `ikol-solver` (`method=fit`: Levenberg-Marquardt over rotations, root and shape
//! against the sample's 2D keypoints, with joint limits, a shape prior and a loose Gaussian
//! around the prediction; SMPLify's role in SPIN): a body regressor's local rotations, shape,
//! and the root translation its weak-perspective camera implies; the heatmap network's IKOL
//! solution (rotations), shape, and the root on the ray through its predicted root pixel at the
//! sample's root depth plus its predicted depth coordinate (the conversion of uvd to camera
//! metres it is trained with takes the root depth as given, as HybrIK's). A per-sample store
//! keeps the best fit seen so far by reprojection error (SPIN's dictionary; filled as samples
//! are first seen, not before training). The network is then supervised, per sample:
//! - by the ground truth where the sample has 3D labels (SPIN: `has_smpl` wins);
//! - else by the stored fit (rotations, shape, its root-relative joints, and for the heatmap
//!   network its twist and the joints' depth coordinates) where the fit is
//!   valid (reprojection error below `max_error` of the crop side, SPIN's threshold) and beats
//!   the prediction's own reprojection error;
//! - else by its 2D keypoints alone.
//!
//! The store holds each fit as the dataset's person, unmirrored: a fit of a draw with the
//! horizontal flip (`augment.flip_prob`) is mirrored back before it is stored
//! ([`crate::augment::mirror_rotations`]: M R M, left and right swapped), and a stored fit
//! supervises a flipped draw mirrored, so one fit serves every draw of its sample.
//!
//! The store is written next to each checkpoint (`<checkpoint>.fits.safetensors`, f64) and read
//! back on resume, so a resumed run continues exactly. In data-parallel training each rank fits
//! its shard and [`FitStore::share`] gives every rank every rank's fits after each step.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use ikol_backbone::direct::weak_to_translation;
use ikol_backbone::{DEPTH_FACTOR_M, NetOutput, RegressorStep};
use ikol_body::{Anchor, BodyModel};
use ikol_solver::fit::{BodyState, FitInput, FitOptions, Keypoint, SurfaceModel, fit};
use ikol_solver::sampling::ground_truth;
use ikol_types::joints::{SMPL_JOINTS, SMPL24_PARENTS};
use ikol_types::nalgebra::{Matrix3, Vector3};
use ikol_types::rotation::{axis_angle_to_matrix, matrix_to_axis_angle};
use ikol_types::{Affine2, Intrinsics};
use serde::{Deserialize, Serialize};

use crate::augment::mirror_rotations;
use crate::data::{Batch, Dataset, sample_seed};
use crate::loss::Targets3d;

/// The `fitting_in_the_loop` section of the training config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpinConfig {
    /// Levenberg-Marquardt iterations per fit.
    pub iterations: usize,
    /// A fit supervises only with a mean reprojection error below this fraction of the crop
    /// side (0.05 = 11 px at 224).
    pub max_error: f64,
    /// Spread of the Gaussian around the network's prediction, radians (the fit's only pose
    /// prior besides the joint limits; SPIN's SMPLify uses a mixture of Gaussians learned on
    /// mocap that we do not have).
    pub sigma_pose: f64,
    /// Fill the store before the first step (SPIN's static fits, which it takes from SMPLify
    /// run offline): every sample whose 3D labels are hidden, drawn without augmentation,
    /// fitted from the rest pose facing the camera and from it turned away
    /// ([`Prediction::rest_pose`]), the better fit kept. Off: the store fills as samples are
    /// first seen.
    pub prefill: bool,
}

impl Default for SpinConfig {
    fn default() -> Self {
        Self {
            iterations: 10,
            max_error: 0.05,
            sigma_pose: 1.0,
            prefill: false,
        }
    }
}

impl SpinConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.iterations > 0,
            "fitting_in_the_loop.iterations must be positive"
        );
        anyhow::ensure!(
            self.max_error > 0.0 && self.max_error.is_finite(),
            "fitting_in_the_loop.max_error must be a positive fraction of the crop side"
        );
        anyhow::ensure!(
            self.sigma_pose > 0.0 && self.sigma_pose.is_finite(),
            "fitting_in_the_loop.sigma_pose must be positive"
        );
        Ok(())
    }
}

/// Whether sample `index` has its 3D labels hidden: a draw per index from a fixed seed, so every
/// run of a comparison hides the same samples; `fraction` of them on average.
pub fn labels_hidden(index: usize, fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let draw = sample_seed(0x0041_DE3D, index as u64) % 1_000_000;
    (draw as f64) < fraction * 1e6
}

/// The best fit per training sample: axis-angle rotations (24 x 3), shape, and the mean
/// reprojection error as a fraction of the crop side (infinite: no fit yet).
#[derive(Debug, Clone, PartialEq)]
pub struct FitStore {
    pub theta: Vec<[f64; 3 * SMPL_JOINTS]>,
    pub beta: Vec<Vec<f64>>,
    pub error: Vec<f64>,
    /// The fits are of the dataset's person, a flipped draw's mirrored back (every store since
    /// fits were flip-aware; false for a file written before, whose metadata lacks
    /// [`FITS_FRAME_KEY`]).
    pub dataset_frame: bool,
}

/// Metadata key of a saved store: `"dataset"` when its fits are of the dataset's person.
pub const FITS_FRAME_KEY: &str = "ikol.fits.frame";

/// `x.safetensors` -> `x.fits.safetensors`.
pub fn store_path_for(weights: &Path) -> PathBuf {
    let stem = weights
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    weights.with_file_name(format!("{stem}.fits.safetensors"))
}

impl FitStore {
    pub fn new(samples: usize, num_betas: usize) -> Self {
        Self {
            theta: vec![[0.0; 3 * SMPL_JOINTS]; samples],
            beta: vec![vec![0.0; num_betas]; samples],
            error: vec![f64::INFINITY; samples],
            dataset_frame: true,
        }
    }

    /// Data-parallel training: every rank's fits of this step, shared. This rank fitted the
    /// samples `indices`, the global batch's positions `first..first + indices.len()` of
    /// `positions`; one all-reduce (sum) of a row per position (index + 1, error, rotations,
    /// shape; zeros where another rank writes) gives every rank every row, and each sample
    /// keeps the lowest error of its rows and its stored fit. Every rank calls it at the same
    /// point of the step; the stores stay equal, bit for bit.
    pub fn share(
        &mut self,
        comm: &std::sync::Arc<dyn ikol_backbone::collective::Communicator>,
        indices: &[usize],
        first: usize,
        positions: usize,
        device: &Device,
    ) -> anyhow::Result<()> {
        let nb = self.beta.first().map_or(0, Vec::len);
        let w = 2 + 3 * SMPL_JOINTS + nb;
        anyhow::ensure!(
            first + indices.len() <= positions,
            "fit store: positions {first}..{} of a global batch of {positions}",
            first + indices.len()
        );
        let mut rows = vec![0f64; positions * w];
        for (i, &index) in indices.iter().enumerate() {
            let row = &mut rows[(first + i) * w..(first + i + 1) * w];
            row[0] = (index + 1) as f64;
            // No fit yet: no row (an infinite error would stay infinite in the sum anyway).
            if self.error[index].is_finite() {
                row[1] = self.error[index];
                row[2..2 + 3 * SMPL_JOINTS].copy_from_slice(&self.theta[index]);
                row[2 + 3 * SMPL_JOINTS..].copy_from_slice(&self.beta[index]);
            } else {
                row[0] = 0.0;
            }
        }
        let all = comm
            .all_reduce_sum(&Tensor::from_vec(rows, positions * w, device)?)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        for row in all.chunks_exact(w) {
            if row[0] < 0.5 {
                continue;
            }
            let index = (row[0] - 1.0).round() as usize;
            anyhow::ensure!(
                index < self.error.len(),
                "fit store: a rank shared sample {index} of {}",
                self.error.len()
            );
            if row[1] < self.error[index] {
                self.error[index] = row[1];
                self.theta[index].copy_from_slice(&row[2..2 + 3 * SMPL_JOINTS]);
                self.beta[index].copy_from_slice(&row[2 + 3 * SMPL_JOINTS..]);
            }
        }
        Ok(())
    }

    /// Samples that have a fit.
    pub fn filled(&self) -> usize {
        self.error.iter().filter(|e| e.is_finite()).count()
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let n = self.error.len();
        let nb = self.beta.first().map_or(0, Vec::len);
        let theta: Vec<f64> = self.theta.iter().flatten().copied().collect();
        let beta: Vec<f64> = self.beta.iter().flatten().copied().collect();
        let items = vec![
            (
                "fits.theta".to_string(),
                Tensor::from_vec(theta, (n, 3 * SMPL_JOINTS), &Device::Cpu)?,
            ),
            (
                "fits.beta".to_string(),
                Tensor::from_vec(beta, (n, nb), &Device::Cpu)?,
            ),
            (
                "fits.error".to_string(),
                Tensor::from_vec(self.error.clone(), n, &Device::Cpu)?,
            ),
        ];
        let meta =
            std::collections::HashMap::from([(FITS_FRAME_KEY.to_string(), "dataset".to_string())]);
        safetensors::serialize_to_file(items, Some(meta), path)
            .with_context(|| format!("writing the fit store {path:?}"))
    }

    /// Reads a store written by [`FitStore::save`] for `samples` samples of `num_betas` shapes.
    pub fn load(path: &Path, samples: usize, num_betas: usize) -> anyhow::Result<Self> {
        let data =
            std::fs::read(path).with_context(|| format!("reading the fit store {path:?}"))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&data)
            .with_context(|| format!("reading the fit store {path:?}"))?;
        let dataset_frame = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(FITS_FRAME_KEY))
            .is_some_and(|v| v == "dataset");
        let t = candle_core::safetensors::load_buffer(&data, &Device::Cpu)
            .with_context(|| format!("reading the fit store {path:?}"))?;
        let get = |k: &str| -> anyhow::Result<&Tensor> {
            t.get(k).with_context(|| format!("{path:?} lacks {k}"))
        };
        let theta = get("fits.theta")?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let beta = get("fits.beta")?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let error = get("fits.error")?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        anyhow::ensure!(
            theta.len() == samples
                && beta.len() == samples
                && error.len() == samples
                && theta.iter().all(|r| r.len() == 3 * SMPL_JOINTS)
                && beta.iter().all(|r| r.len() == num_betas),
            "{path:?} holds fits of another training set ({} samples, expected {samples})",
            error.len()
        );
        Ok(Self {
            theta: theta
                .into_iter()
                .map(|r| {
                    let mut a = [0.0; 3 * SMPL_JOINTS];
                    a.copy_from_slice(&r);
                    a
                })
                .collect(),
            beta,
            error,
            dataset_frame,
        })
    }
}

/// What the fits add to one batch: targets with fits in place of hidden labels, and per sample
/// the weight of the 3D terms (1: ground truth or a fit, 0: 2D only).
#[derive(Debug, Clone)]
pub struct Supervision {
    pub joints: Tensor,
    pub rotations: Tensor,
    pub beta: Tensor,
    /// (B, 23, 2) twist (cos, sin) targets of the heatmap network.
    pub twist: Tensor,
    pub weight_3d: Tensor,
    /// Samples supervised by a fit in this batch.
    pub from_fits: usize,
    /// Per sample, the prediction's own mean reprojection error (fraction of the crop side).
    pub predicted_error: Vec<f64>,
}

/// The network's prediction that starts each sample's fit, on the host: local rotations (root in
/// camera axes; 24 row-major 3x3 per sample), shape, and the root's camera translation (None:
/// no usable camera, no fit).
#[derive(Debug, Clone)]
pub struct Prediction {
    pub rotations: Vec<Vec<f32>>,
    pub beta: Vec<Vec<f32>>,
    pub translation: Vec<Option<Vector3<f64>>>,
}

/// A batch tensor as one host row per sample.
fn host_rows(t: &Tensor) -> anyhow::Result<Vec<Vec<f32>>> {
    let b = t.dim(0)?;
    Ok(t.to_dtype(DType::F32)?.reshape((b, ()))?.to_vec2::<f32>()?)
}

impl Prediction {
    /// A body regressor's last outer iteration; the translation from its weak-perspective
    /// camera (depth 2f / (s L), [`weak_to_translation`]).
    pub fn from_regressor(
        last: &RegressorStep,
        batch: &Batch,
        input_size: usize,
    ) -> anyhow::Result<Self> {
        let (c2f, kinv) = (host_rows(&batch.crop_to_frame)?, host_rows(&batch.k_inv)?);
        let translation = host_rows(&last.cam)?
            .iter()
            .enumerate()
            .map(|(i, cam)| {
                let (crop_to_frame, k) = camera(&c2f[i], &kinv[i])?;
                let c = [cam[0], cam[1], cam[2]].map(f64::from);
                weak_to_translation(&c, &crop_to_frame, input_size as u32, &k).map(Vector3::from)
            })
            .collect();
        Ok(Self {
            rotations: host_rows(&last.rotations()?)?,
            beta: host_rows(&last.beta)?,
            translation,
        })
    }

    /// A start that needs no network (SMPLify's): the body model's rest pose at the mean shape,
    /// facing the camera (`away`: turned half round about its vertical axis), its root on the
    /// ray through the sample's root keypoint at the depth where the rest body's torso (hips'
    /// centre to shoulders' centre) projects as long as the keypoints' torso (similar
    /// triangles: z = f L / l). None for a sample whose torso keypoints coincide.
    pub fn rest_pose(
        body: &BodyModel,
        batch: &Batch,
        input_size: usize,
        away: bool,
    ) -> anyhow::Result<Self> {
        // The camera's y and z flip of the model's axes (y up, facing +z), as the data
        // generator's root; turned away: a half turn about the model's y first.
        let facing = Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, -1.0));
        let root = if away {
            facing * Matrix3::from_diagonal(&Vector3::new(-1.0, 1.0, -1.0))
        } else {
            facing
        };
        let mut rotations = vec![Matrix3::identity(); SMPL_JOINTS];
        rotations[0] = root;
        let nb = batch.beta.dim(1)?;
        let rest = joints_of(body, &rotations, &vec![0.0; body.num_betas])?;
        let centre = |p: &[Vector3<f64>], a: usize, b: usize| 0.5 * (p[a] + p[b]);
        // SMPL joints: hips 1, 2; shoulders 16, 17.
        let torso_3d = (centre(&rest, 16, 17) - centre(&rest, 1, 2)).norm();
        let (uvd, c2f, kinv) = (
            host_rows(&batch.uvd)?,
            host_rows(&batch.crop_to_frame)?,
            host_rows(&batch.k_inv)?,
        );
        let s = input_size as f64;
        let translation = (0..batch.len())
            .map(|i| {
                let (crop_to_frame, k) = camera(&c2f[i], &kinv[i])?;
                let px: Vec<Vector3<f64>> = (0..SMPL_JOINTS)
                    .map(|j| {
                        let [u, v] = [uvd[i][3 * j], uvd[i][3 * j + 1]].map(f64::from);
                        let [x, y] = crop_to_frame.apply([(u + 0.5) * s, (v + 0.5) * s]);
                        Vector3::new(x, y, 0.0)
                    })
                    .collect();
                let torso_2d = (centre(&px, 16, 17) - centre(&px, 1, 2)).norm();
                (torso_2d > 1.0).then(|| {
                    let z = 0.5 * (k.fx + k.fy) * torso_3d / torso_2d;
                    Vector3::new((px[0].x - k.cx) / k.fx * z, (px[0].y - k.cy) / k.fy * z, z)
                })
            })
            .collect();
        let flat: Vec<f32> = rotations
            .iter()
            .flat_map(|r| (0..9).map(move |e| r[(e / 3, e % 3)] as f32))
            .collect();
        Ok(Self {
            rotations: vec![flat; batch.len()],
            beta: vec![vec![0.0; nb]; batch.len()],
            translation,
        })
    }

    /// The heatmap network through the IKOL layer: the solved local rotations, the predicted
    /// shape, and the root where its predicted uv and the sample's root depth put it
    /// ([`ikol_backbone::camera::uvd_to_cam_tensor`]: the ray through the root's pixel at depth
    /// `root_depth + d_root * DEPTH_FACTOR_M`).
    pub fn from_solution(
        local_rotations: &Tensor,
        out: &NetOutput,
        batch: &Batch,
        input_size: usize,
    ) -> anyhow::Result<Self> {
        let (c2f, kinv) = (host_rows(&batch.crop_to_frame)?, host_rows(&batch.k_inv)?);
        let depth = host_rows(&batch.root_depth.unsqueeze(1)?)?;
        let s = input_size as f64;
        let translation = host_rows(&out.uvd)?
            .iter()
            .enumerate()
            .map(|(i, uvd)| {
                let (crop_to_frame, k) = camera(&c2f[i], &kinv[i])?;
                let [u, v, d] = [uvd[0], uvd[1], uvd[2]].map(f64::from);
                let [x, y] = crop_to_frame.apply([(u + 0.5) * s, (v + 0.5) * s]);
                let z = f64::from(depth[i][0]) + d * DEPTH_FACTOR_M;
                Some(Vector3::new(
                    (x - k.cx) / k.fx * z,
                    (y - k.cy) / k.fy * z,
                    z,
                ))
            })
            .collect();
        Ok(Self {
            rotations: host_rows(&local_rotations.detach())?,
            beta: host_rows(&out.beta.detach())?,
            translation,
        })
    }
}

/// The fitter, its options and the store.
#[derive(Debug)]
pub struct SpinLoop {
    cfg: SpinConfig,
    body: std::sync::Arc<BodyModel>,
    surface: SurfaceModel,
    pub store: FitStore,
}

/// One sample's camera: crop -> frame affine and intrinsics, from the batch rows.
fn camera(crop_to_frame: &[f32], k_inv: &[f32]) -> Option<(Affine2, Intrinsics)> {
    let a = Affine2 {
        m: [
            [
                f64::from(crop_to_frame[0]),
                f64::from(crop_to_frame[1]),
                f64::from(crop_to_frame[2]),
            ],
            [
                f64::from(crop_to_frame[3]),
                f64::from(crop_to_frame[4]),
                f64::from(crop_to_frame[5]),
            ],
        ],
    };
    let ki = Matrix3::from_row_slice(&k_inv.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
    let k = ki.try_inverse()?;
    Some((
        a,
        Intrinsics {
            fx: k[(0, 0)],
            fy: k[(1, 1)],
            cx: k[(0, 2)],
            cy: k[(1, 2)],
        },
    ))
}

/// Root-relative joints of a body (local rotations, shape).
fn joints_of(
    body: &BodyModel,
    rotations: &[Matrix3<f64>],
    beta: &[f64],
) -> anyhow::Result<Vec<Vector3<f64>>> {
    let nb = body.num_betas.min(beta.len());
    let rest = body.rest_joints(&beta[..nb])?;
    let (_, posed) = ikol_body::forward_kinematics(rotations, &rest, &SMPL24_PARENTS);
    Ok(posed.iter().map(|p| p - posed[0]).collect())
}

impl SpinLoop {
    pub fn new(
        cfg: SpinConfig,
        body: std::sync::Arc<BodyModel>,
        samples: usize,
        num_betas: usize,
    ) -> anyhow::Result<Self> {
        cfg.validate()?;
        let anchors: Vec<Anchor> = (0..SMPL_JOINTS).map(Anchor::Joint).collect();
        let surface = SurfaceModel::new(&body, &anchors)?;
        Ok(Self {
            cfg,
            body,
            surface,
            store: FitStore::new(samples, num_betas),
        })
    }

    /// Whether the store is to be filled before the first step ([`SpinConfig::prefill`]).
    pub fn prefills(&self) -> bool {
        self.cfg.prefill
    }

    /// SPIN's static fits ([`SpinConfig::prefill`]): samples `indices` of `ds`, without
    /// augmentation, fitted from [`Prediction::rest_pose`] facing the camera and turned away;
    /// the store keeps the better of the two (and of anything it held). Returns how many of
    /// them then hold a fit that can supervise (error below `max_error`).
    pub fn prefill(
        &mut self,
        ds: &dyn Dataset,
        indices: &[usize],
        input_size: usize,
        device: &Device,
    ) -> anyhow::Result<usize> {
        for chunk in indices.chunks(64) {
            let batch = Batch::gather(ds, chunk, device)?;
            for away in [false, true] {
                let start = Prediction::rest_pose(&self.body, &batch, input_size, away)?;
                self.step(chunk, &vec![false; chunk.len()], &start, &batch, input_size)?;
            }
        }
        Ok(indices
            .iter()
            .filter(|&&i| self.store.error[i] < self.cfg.max_error)
            .count())
    }

    fn options(&self) -> FitOptions {
        const SPIN_SIGMA_BETA: f64 = 1.5;
        FitOptions {
            iterations: self.cfg.iterations,
            sigma_pose: self.cfg.sigma_pose,
            // 2D keypoints only: no 3D points, no track, no temporal terms.
            sigma_3d: 0.0,
            sigma_beta_track: 0.0,
            // With nothing in 3D the shape is barely observed (a longer limb leans in depth to
            // keep its image), so SMPLify's tight shape prior, not the video default: at 4 the
            // prefill test's fits from the rest pose gained only 4 % on the rest pose (147.8
            // against 154.3 mm PA-MPJPE; the test asks for 10 %).
            sigma_beta: SPIN_SIGMA_BETA,
            sigma_accel: 0.0,
            sigma_translation: 0.0,
            sigma_angular_accel: 0.0,
            ..FitOptions::default()
        }
    }

    /// Fits every sample of the batch from the prediction `pred`, updates the store and
    /// returns the supervision (module docs). `indices` are the samples' training-set indices
    /// and `hidden[i]` says that sample `i` has no 3D labels.
    pub fn step(
        &mut self,
        indices: &[usize],
        hidden: &[bool],
        pred: &Prediction,
        batch: &Batch,
        input_size: usize,
    ) -> anyhow::Result<Supervision> {
        let (uvd, c2f, kinv) = (
            host_rows(&batch.uvd)?,
            host_rows(&batch.crop_to_frame)?,
            host_rows(&batch.k_inv)?,
        );
        let mut joints = host_rows(&batch.joints)?;
        let mut rotations = host_rows(&batch.rotations)?;
        let mut betas = host_rows(&batch.beta)?;
        let mut twists = host_rows(&batch.twist)?;
        let nb = betas.first().map_or(0, Vec::len);
        let mut weight = vec![1f32; indices.len()];
        let mut from_fits = 0;
        let mut predicted_error = vec![f64::INFINITY; indices.len()];
        let model_nb = self.surface.betas();
        let s = input_size as f64;
        for (i, &index) in indices.iter().enumerate() {
            let Some((crop_to_frame, k)) = camera(&c2f[i], &kinv[i]) else {
                weight[i] = if hidden[i] { 0.0 } else { 1.0 };
                continue;
            };
            let side = s * crop_to_frame.scale();
            let keypoints: Vec<Keypoint> = (0..SMPL_JOINTS)
                .map(|j| {
                    let (u, v) = (f64::from(uvd[i][3 * j]), f64::from(uvd[i][3 * j + 1]));
                    let inside = u.abs() <= 0.5 && v.abs() <= 0.5;
                    Keypoint {
                        point: j,
                        uv: crop_to_frame.apply([(u + 0.5) * s, (v + 0.5) * s]),
                        weight: if inside { 1.0 } else { 0.0 },
                    }
                })
                .collect();
            let rot: Vec<Matrix3<f64>> = pred.rotations[i]
                .chunks_exact(9)
                .map(|m| Matrix3::from_row_iterator(m.iter().map(|&x| f64::from(x))))
                .collect();
            let mut b: Vec<f64> = pred.beta[i].iter().map(|&x| f64::from(x)).collect();
            b.resize(model_nb, 0.0);
            let reprojection =
                |rot: &[Matrix3<f64>], beta: &[f64], t: &Vector3<f64>| -> anyhow::Result<f64> {
                    let js = joints_of(&self.body, rot, beta)?;
                    let (mut sum, mut w) = (0.0, 0.0);
                    for kp in &keypoints {
                        if let Some(p) = k.project(&(js[kp.point] + t)) {
                            sum += kp.weight
                                * ((p[0] - kp.uv[0]).powi(2) + (p[1] - kp.uv[1]).powi(2)).sqrt();
                            w += kp.weight;
                        }
                    }
                    Ok(if w > 0.0 {
                        sum / w / side
                    } else {
                        f64::INFINITY
                    })
                };
            let predicted = pred.translation[i].filter(|t| t.z > 0.1);
            let pred_error = match predicted {
                Some(t) => reprojection(&rot, &b, &t)?,
                None => f64::INFINITY,
            };
            predicted_error[i] = pred_error;
            if let Some(t) = predicted {
                let init = BodyState {
                    rotations: rot.clone(),
                    translation: t,
                    beta: b.clone(),
                };
                let input = FitInput {
                    intrinsics: &k,
                    keypoints: &keypoints,
                    points_3d: &[],
                    centre: &[],
                    pose_prior: Some(&rot),
                    beta_track: None,
                    translation_prior: None,
                    history: &[],
                    rotation_history: &[],
                };
                // A fit that fails (degenerate start) leaves the store as it was.
                if let Ok(f) = fit(&self.surface, &input, &init, &self.options()) {
                    let err =
                        reprojection(&f.state.rotations, &f.state.beta, &f.state.translation)?;
                    if err < self.store.error[index] {
                        // Stored as the dataset's person (a flipped draw's fit mirrored back).
                        let mut rotations = f.state.rotations;
                        if batch.mirrored[i] {
                            mirror_rotations(&mut rotations);
                        }
                        let mut th = [0.0; 3 * SMPL_JOINTS];
                        for (j, r) in rotations.iter().enumerate() {
                            let w = matrix_to_axis_angle(r);
                            th[3 * j..3 * j + 3].copy_from_slice(&[w.x, w.y, w.z]);
                        }
                        let mut fb = f.state.beta.clone();
                        fb.resize(nb, 0.0);
                        self.store.theta[index] = th;
                        self.store.beta[index] = fb;
                        self.store.error[index] = err;
                    }
                }
            }
            if !hidden[i] {
                continue;
            }
            let stored = self.store.error[index];
            if stored < self.cfg.max_error && stored < pred_error {
                let th = &self.store.theta[index];
                let mut aa: Vec<Vector3<f64>> = (0..SMPL_JOINTS)
                    .map(|j| Vector3::new(th[3 * j], th[3 * j + 1], th[3 * j + 2]))
                    .collect();
                let mut rs: Vec<Matrix3<f64>> = aa.iter().map(axis_angle_to_matrix).collect();
                if batch.mirrored[i] {
                    // This draw is the mirror image of the stored person.
                    mirror_rotations(&mut rs);
                    aa = rs.iter().map(matrix_to_axis_angle).collect();
                }
                let fb = &self.store.beta[index];
                let js = joints_of(&self.body, &rs, fb)?;
                // The twist targets of the heatmap network (HybrIK's phi), as the data
                // generator derives them from a pose.
                let truth = ground_truth(&self.body.rest_joints29(&fb[..nb.min(model_nb)])?, &aa);
                twists[i] = truth
                    .twist
                    .iter()
                    .flat_map(|t| [t[0] as f32, t[1] as f32])
                    .collect();
                joints[i] = js
                    .iter()
                    .flat_map(|p| [p.x as f32, p.y as f32, p.z as f32])
                    .collect();
                rotations[i] = rs
                    .iter()
                    .flat_map(|r| (0..9).map(move |e| r[(e / 3, e % 3)] as f32))
                    .collect();
                betas[i] = self.store.beta[index].iter().map(|&x| x as f32).collect();
                from_fits += 1;
            } else {
                weight[i] = 0.0;
            }
        }
        let dev = batch.joints.device();
        let b = indices.len();
        let cat = |rows: Vec<Vec<f32>>, shape: &[usize]| -> anyhow::Result<Tensor> {
            let mut dims = vec![b];
            dims.extend_from_slice(shape);
            Ok(Tensor::from_vec(rows.concat(), dims, dev)?)
        };
        Ok(Supervision {
            joints: cat(joints, &[SMPL_JOINTS, 3])?,
            rotations: cat(rotations, &[SMPL_JOINTS, 3, 3])?,
            beta: cat(betas, &[nb])?,
            twist: cat(twists, &[SMPL_JOINTS - 1, 2])?,
            weight_3d: Tensor::from_vec(weight, b, dev)?,
            from_fits,
            predicted_error,
        })
    }
}

impl Supervision {
    /// The batch's own labels, samples whose labels are hidden weighted 0 (training on their 2D
    /// keypoints alone, without SPIN).
    pub fn labels(batch: &Batch, hidden: &[bool]) -> candle_core::Result<Self> {
        Ok(Self {
            joints: batch.joints.clone(),
            rotations: batch.rotations.clone(),
            beta: batch.beta.clone(),
            twist: batch.twist.clone(),
            weight_3d: label_weights(hidden, batch.joints.device())?,
            from_fits: 0,
            predicted_error: Vec::new(),
        })
    }

    pub fn targets(&self) -> Targets3d<'_> {
        Targets3d {
            joints: &self.joints,
            rotations: &self.rotations,
            beta: &self.beta,
            twist: &self.twist,
            weight: &self.weight_3d,
        }
    }
}

/// Per-sample 3D weights without fitting: 0 for samples whose labels are hidden.
pub fn label_weights(hidden: &[bool], device: &Device) -> candle_core::Result<Tensor> {
    let w: Vec<f32> = hidden.iter().map(|&h| if h { 0.0 } else { 1.0 }).collect();
    Tensor::from_vec(w, hidden.len(), device)
}
