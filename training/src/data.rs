//! Training data: the [`Dataset`] trait, the synthetic dataset (rendered on the fly, seeded, exact
//! targets) and disk shards (safetensors + `manifest.json`).
//!
//! A synthetic sample: a body model (SMPL layout) in a pose from
//! [`ikol_solver::sampling::sample_pose`] and a shape from `sample_beta`, placed in front of a
//! pinhole camera (model frame y up -> camera frame y down: `X_cam = Rx(pi) (X - root) + t`),
//! drawn by `ikol_render::draw_mesh_colors` (clothing-like vertex colours) over a random background, then cropped as the backbone does
//! at inference (`crop_for_box` of the tight box, `warp_affine_rgb`, `normalize_rgb`). Targets:
//! uvd by `ikol_backbone::camera::cam_to_uvd` (reference 4.3), root-relative camera joints in
//! metres, twist (cos, sin) and leaf quaternions from `sampling::ground_truth`, beta, and the
//! local rotations with the camera rotation folded into the root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use ikol_backbone::DEPTH_FACTOR_M;
use ikol_backbone::camera::{cam_to_uvd, k_inv};
use ikol_backbone::preprocess::{RgbFrame, crop_for_box, normalize_rgb, warp_affine_rgb};
use ikol_body::BodyModel;
use ikol_render::{Canvas, Frame, MeshStyle, PixelFormat, draw_mesh_colors};
use ikol_solver::sampling::{
    GroundTruth, PoseDistribution, ground_truth, sample_beta, sample_pose,
};
use ikol_types::joints::{LEAF_ROTATION_JOINTS, SMPL_JOINTS};
use ikol_types::nalgebra::{Matrix3, Vector3};
use ikol_types::{BBox, Intrinsics};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::augment::{self, Augment, Draw};
use crate::config::BodyChoice;

pub const NUM_TWISTS: usize = SMPL_JOINTS - 1;
pub const NUM_LEAVES: usize = LEAF_ROTATION_JOINTS.len();

/// One training sample with exact targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Normalised crop, CHW, `3 * S * S`.
    pub image: Vec<f32>,
    /// uvd targets (network units), 24 x 3.
    pub uvd: Vec<[f32; 3]>,
    /// Root-relative camera-frame joints, metres, 24 x 3.
    pub joints: Vec<[f32; 3]>,
    /// Twist (cos, sin) of joints 1..23.
    pub twist: Vec<[f32; 2]>,
    /// Shape coefficients (the network's count; zero-padded).
    pub beta: Vec<f32>,
    /// Leaf quaternions (w, x, y, z) of joints [10, 11, 15, 22, 23].
    pub leaf: Vec<[f32; 4]>,
    /// Local rotations, root in the camera frame, 24 x 9 row-major.
    pub rotations: Vec<[f32; 9]>,
    /// Crop pixels -> frame pixels, 2 x 3 row-major.
    pub crop_to_frame: [f32; 6],
    /// Inverse intrinsics, 3 x 3 row-major.
    pub k_inv: [f32; 9],
    /// Camera depth of the root joint, metres.
    pub root_depth: f32,
    /// The person is the mirror image of the dataset's (a flip was drawn): what SPIN's fit
    /// store needs to keep one fit per sample whichever way it is drawn.
    pub mirrored: bool,
}

/// A random-access source of samples.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Network input side the samples are cropped to.
    fn input_size(&self) -> usize;
    fn get(&self, index: usize) -> anyhow::Result<Sample>;
    /// Sample `index` augmented by `aug` drawn from `seed`. Datasets that hold finished crops
    /// (shards, in memory) return it as stored.
    fn get_augmented(&self, index: usize, aug: &Augment, seed: u64) -> anyhow::Result<Sample> {
        let _ = (aug, seed);
        self.get(index)
    }
}

/// Options of the synthetic generator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SynthOptions {
    /// Network input side S.
    pub input_size: usize,
    /// Number of shape coefficients of the targets (the network's).
    pub num_betas: usize,
    pub body: BodyChoice,
    /// Rendered frame side (pixels).
    pub frame_size: usize,
    /// Horizontal field of view of the camera, degrees.
    pub hfov_deg: f64,
    /// Camera distance range of the root, metres.
    pub distance: [f64; 2],
    /// Sigma of the sampled shape coefficients.
    pub beta_sigma: f64,
}

impl SynthOptions {
    pub fn new(input_size: usize, num_betas: usize, body: BodyChoice) -> Self {
        Self {
            input_size,
            num_betas,
            body,
            frame_size: 2 * input_size,
            hfov_deg: 50.0,
            distance: [3.0, 5.0],
            beta_sigma: 1.0,
        }
    }
}

/// Seed of sample `index` of a dataset seeded with `seed` (SplitMix64 of both).
pub fn sample_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index)
        .wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Renders one synthetic sample from `rng`.
pub fn render_sample(
    body: &BodyModel,
    opts: &SynthOptions,
    rng: &mut StdRng,
    draw: &Draw,
) -> anyhow::Result<Sample> {
    let pose = sample_pose(rng, &PoseDistribution::default());
    let nb = opts.num_betas.min(body.num_betas);
    let mut beta = sample_beta(rng, nb, opts.beta_sigma);
    let rest29 = body.rest_joints29(&beta)?;
    let gt = ground_truth(&rest29, &pose);
    let posed = body.forward(&beta, &gt.local)?;
    beta.resize(opts.num_betas, 0.0);

    // Camera: flip y and z (model y up, facing +z -> camera y down, looking along +z).
    let flip = Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, -1.0));
    let dist = rng.random_range(opts.distance[0]..opts.distance[1]);
    let t = Vector3::new(
        rng.random_range(-0.3..0.3),
        rng.random_range(-0.3..0.3),
        dist,
    );
    let root = posed.joints[0];
    let size = opts.frame_size;
    let k = Intrinsics::from_hfov(size as u32, size as u32, opts.hfov_deg);
    let to_cam = |p: &Vector3<f64>| flip * (p - root) + t;

    // Background: a random colour and brightness with mild per-pixel noise.
    let bright: f64 = rng.random_range(0.4..1.2);
    let bg: [f64; 3] = [
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
        rng.random_range(0.0..255.0),
    ];
    let mut pixels = vec![0u8; size * size * 3];
    for px in pixels.chunks_exact_mut(3) {
        for c in 0..3 {
            let noise: f64 = rng.random_range(-12.0..12.0);
            px[c] = (bg[c] * bright + noise).clamp(0.0, 255.0) as u8;
        }
    }
    let verts: Vec<[f32; 3]> = posed
        .vertices
        .iter()
        .map(|v| {
            let p = to_cam(&Vector3::new(
                f64::from(v[0]),
                f64::from(v[1]),
                f64::from(v[2]),
            ));
            [p.x as f32, p.y as f32, p.z as f32]
        })
        .collect();
    let style = MeshStyle {
        opacity: 1.0,
        ambient: rng.random_range(0.1..0.5),
        ..MeshStyle::default()
    };
    let colors = clothing_colors(body, rng);
    {
        let mut frame = Frame::new(&mut pixels, size, size, 3 * size, PixelFormat::Rgb)?;
        let mut depth = Canvas::new(size, size);
        draw_mesh_colors(
            &mut frame,
            &mut depth,
            &k,
            &verts,
            &body.faces,
            &colors,
            &style,
        )?;
    }

    // Tight box of the projected vertices, then the backbone's crop.
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for v in &verts {
        let p = [f64::from(v[0]), f64::from(v[1]), f64::from(v[2])];
        if let Some(uv) = k.project(&Vector3::new(p[0], p[1], p[2])) {
            x0 = x0.min(uv[0]);
            y0 = y0.min(uv[1]);
            x1 = x1.max(uv[0]);
            y1 = y1.max(uv[1]);
        }
    }
    let bbox = BBox {
        x: x0,
        y: y0,
        w: (x1 - x0).max(1.0),
        h: (y1 - y0).max(1.0),
    };
    let abs: Vec<Vector3<f64>> = posed.joints[..SMPL_JOINTS].iter().map(to_cam).collect();
    // The camera rotation folds into the root rotation.
    let mut local = gt.local.clone();
    local[0] = flip * local[0];
    let rgb = RgbFrame::new(&pixels, size as u32, size as u32, 3 * size)?;
    build_sample(
        &rgb,
        &k,
        &bbox,
        &abs,
        &gt,
        &local,
        &beta,
        opts.input_size,
        draw,
    )
}

/// Joints whose vertices wear the trousers (pelvis, legs, feet) and show skin (head, hands).
const LOWER_BODY: [usize; 9] = [0, 1, 2, 4, 5, 7, 8, 10, 11];
const SKIN: [usize; 5] = [15, 20, 21, 22, 23];

/// Clothing-like vertex colours: random trousers and shirt colours and a skin tone, chosen per
/// vertex by its dominant skinning joint, with +-20 per-vertex noise (texture variation).
fn clothing_colors(body: &BodyModel, rng: &mut StdRng) -> Vec<[u8; 3]> {
    let mut cloth = || [0; 3].map(|_| rng.random_range(30.0..255.0f32));
    let (shirt, trousers) = (cloth(), cloth());
    let r: f32 = rng.random_range(120.0..240.0);
    let skin = [
        r,
        r * rng.random_range(0.65..0.85),
        r * rng.random_range(0.5..0.7),
    ];
    (0..body.num_vertices())
        .map(|v| {
            let joint = body
                .weights
                .row(v)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(j, _)| j);
            let base = if SKIN.contains(&joint) {
                skin
            } else if LOWER_BODY.contains(&joint) {
                trousers
            } else {
                shirt
            };
            let noise: f32 = rng.random_range(-20.0..20.0);
            base.map(|c| (c + noise).clamp(0.0, 255.0) as u8)
        })
        .collect()
}

/// A sample from a frame, its intrinsics, the person's box and ground truth: the backbone's crop
/// of `bbox` (`crop_for_box`, `warp_affine_rgb`, `normalize_rgb`), uvd targets of the camera-frame
/// joints `abs` (24), root-relative joints, twist and leaves of `gt`, the local rotations `local`
/// (root in camera axes) and `beta` (already the network's length); augmented by `draw`
/// (`Draw::IDENTITY` for none; see [`crate::augment`]).
#[allow(clippy::too_many_arguments)]
pub fn build_sample(
    rgb: &RgbFrame<'_>,
    k: &Intrinsics,
    bbox: &BBox,
    abs: &[Vector3<f64>],
    gt: &GroundTruth,
    local: &[Matrix3<f64>],
    beta: &[f64],
    input_size: usize,
    draw: &Draw,
) -> anyhow::Result<Sample> {
    let s = input_size;
    let mut abs = abs.to_vec();
    let mut local = local.to_vec();
    let mut twist = gt.twist.clone();
    let mut leaf = gt.leaf_rotations.clone();
    let (mut k, mut bbox) = (*k, *bbox);
    if draw.flip {
        // The mirrored frame is never built: its crop is the original frame warped through
        // the mirror, and the targets are the mirrored person's.
        let w = rgb.width();
        k = augment::mirror_intrinsics(&k, w);
        bbox = augment::mirror_box(&bbox, w);
        augment::mirror_truth(&mut abs, &mut local, &mut twist, &mut leaf);
    }
    let mut crop = crop_for_box(&bbox, s)?;
    crop.side *= draw.scale;
    crop.rot_deg = draw.rotation_deg;
    let frame_to_crop = crop.affine();
    let crop_to_frame = frame_to_crop.inverse().context("degenerate crop affine")?;
    let sampling = if draw.flip {
        augment::compose(&frame_to_crop, &augment::mirror_affine(rgb.width()))
    } else {
        frame_to_crop
    };
    let mut pixels = warp_affine_rgb(rgb, &sampling, s);
    augment::photometric(&mut pixels, s, draw);
    let image = normalize_rgb(&pixels, s);
    let abs: Vec<[f64; 3]> = abs.iter().map(|c| [c.x, c.y, c.z]).collect();
    let root_depth = abs[0][2];
    let uvd = cam_to_uvd(
        &abs,
        &frame_to_crop,
        &k,
        root_depth,
        s as f64,
        DEPTH_FACTOR_M,
    )
    .into_iter()
    .map(|u| {
        u.map(|u| u.map(|x| x as f32))
            .context("joint behind the camera")
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    let joints = abs
        .iter()
        .map(|p| {
            [
                (p[0] - abs[0][0]) as f32,
                (p[1] - abs[0][1]) as f32,
                (p[2] - abs[0][2]) as f32,
            ]
        })
        .collect();
    let rotations = local
        .iter()
        .map(|r| {
            let mut o = [0f32; 9];
            for a in 0..3 {
                for b in 0..3 {
                    o[3 * a + b] = r[(a, b)] as f32;
                }
            }
            o
        })
        .collect();
    let ki = k_inv(&k);
    let m = crop_to_frame.m;
    Ok(Sample {
        image,
        uvd,
        joints,
        twist: twist.iter().map(|t| [t[0] as f32, t[1] as f32]).collect(),
        beta: beta.iter().map(|&b| b as f32).collect(),
        leaf: leaf
            .iter()
            .map(|q| [q[0] as f32, q[1] as f32, q[2] as f32, q[3] as f32])
            .collect(),
        rotations,
        crop_to_frame: [m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2]].map(|x| x as f32),
        k_inv: [
            ki[0][0], ki[0][1], ki[0][2], ki[1][0], ki[1][1], ki[1][2], ki[2][0], ki[2][1],
            ki[2][2],
        ]
        .map(|x| x as f32),
        root_depth: root_depth as f32,
        mirrored: draw.flip,
    })
}

/// Synthetic samples generated on demand: sample `i` is a pure function of (seed, i).
#[derive(Debug, Clone)]
pub struct SynthDataset {
    body: std::sync::Arc<BodyModel>,
    opts: SynthOptions,
    seed: u64,
    count: usize,
}

impl SynthDataset {
    pub fn new(opts: SynthOptions, seed: u64, count: usize) -> anyhow::Result<Self> {
        Ok(Self {
            body: opts.body.load()?,
            opts,
            seed,
            count,
        })
    }

    pub fn options(&self) -> &SynthOptions {
        &self.opts
    }
}

impl Dataset for SynthDataset {
    fn len(&self) -> usize {
        self.count
    }

    fn input_size(&self) -> usize {
        self.opts.input_size
    }

    fn get(&self, index: usize) -> anyhow::Result<Sample> {
        anyhow::ensure!(index < self.count, "sample {index} of {}", self.count);
        let mut rng = StdRng::seed_from_u64(sample_seed(self.seed, index as u64));
        render_sample(&self.body, &self.opts, &mut rng, &Draw::IDENTITY)
    }

    fn get_augmented(&self, index: usize, aug: &Augment, seed: u64) -> anyhow::Result<Sample> {
        anyhow::ensure!(index < self.count, "sample {index} of {}", self.count);
        let draw = aug.draw(&mut StdRng::seed_from_u64(seed), self.opts.input_size);
        let mut rng = StdRng::seed_from_u64(sample_seed(self.seed, index as u64));
        render_sample(&self.body, &self.opts, &mut rng, &draw)
    }
}

/// All samples of a dataset held in memory (generated once).
#[derive(Debug, Clone)]
pub struct InMemory {
    samples: Vec<Sample>,
    input_size: usize,
}

impl InMemory {
    pub fn collect(ds: &dyn Dataset) -> anyhow::Result<Self> {
        Ok(Self {
            samples: (0..ds.len())
                .map(|i| ds.get(i))
                .collect::<anyhow::Result<_>>()?,
            input_size: ds.input_size(),
        })
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn input_size(&self) -> usize {
        self.input_size
    }

    fn get(&self, index: usize) -> anyhow::Result<Sample> {
        self.samples
            .get(index)
            .cloned()
            .with_context(|| format!("sample {index} of {}", self.samples.len()))
    }
}

/// A batch on a device (f32).
#[derive(Debug, Clone)]
pub struct Batch {
    /// (B, 3, S, S).
    pub images: Tensor,
    /// (B, 24, 3).
    pub uvd: Tensor,
    /// (B, 24, 3) metres, root-relative camera frame.
    pub joints: Tensor,
    /// (B, 23, 2).
    pub twist: Tensor,
    /// (B, num_betas).
    pub beta: Tensor,
    /// (B, 5, 4).
    pub leaf: Tensor,
    /// (B, 24, 3, 3).
    pub rotations: Tensor,
    /// (B, 2, 3).
    pub crop_to_frame: Tensor,
    /// (B, 3, 3).
    pub k_inv: Tensor,
    /// (B,).
    pub root_depth: Tensor,
    /// Per sample, [`Sample::mirrored`] (host side).
    pub mirrored: Vec<bool>,
}

impl Batch {
    /// The batch in floating-point type `dt` (the run's precision).
    pub fn with_dtype(self, dt: DType) -> candle_core::Result<Self> {
        if self.images.dtype() == dt {
            return Ok(self);
        }
        Ok(Self {
            images: self.images.to_dtype(dt)?,
            uvd: self.uvd.to_dtype(dt)?,
            joints: self.joints.to_dtype(dt)?,
            twist: self.twist.to_dtype(dt)?,
            beta: self.beta.to_dtype(dt)?,
            leaf: self.leaf.to_dtype(dt)?,
            rotations: self.rotations.to_dtype(dt)?,
            crop_to_frame: self.crop_to_frame.to_dtype(dt)?,
            k_inv: self.k_inv.to_dtype(dt)?,
            root_depth: self.root_depth.to_dtype(dt)?,
            mirrored: self.mirrored,
        })
    }

    pub fn len(&self) -> usize {
        self.images.dims().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn from_samples(samples: &[Sample], device: &Device) -> anyhow::Result<Self> {
        let b = samples.len();
        anyhow::ensure!(b > 0, "empty batch");
        let s = ((samples[0].image.len() / 3) as f64).sqrt().round() as usize;
        let nb = samples[0].beta.len();
        let cat = |f: &dyn Fn(&Sample) -> Vec<f32>, shape: &[usize]| -> anyhow::Result<Tensor> {
            let v: Vec<f32> = samples.iter().flat_map(f).collect();
            let mut dims = vec![b];
            dims.extend_from_slice(shape);
            Ok(Tensor::from_vec(v, dims, device)?)
        };
        Ok(Self {
            images: cat(&|x| x.image.clone(), &[3, s, s])?,
            uvd: cat(&|x| x.uvd.concat(), &[SMPL_JOINTS, 3])?,
            joints: cat(&|x| x.joints.concat(), &[SMPL_JOINTS, 3])?,
            twist: cat(&|x| x.twist.concat(), &[NUM_TWISTS, 2])?,
            beta: cat(&|x| x.beta.clone(), &[nb])?,
            leaf: cat(&|x| x.leaf.concat(), &[NUM_LEAVES, 4])?,
            rotations: cat(&|x| x.rotations.concat(), &[SMPL_JOINTS, 3, 3])?,
            crop_to_frame: cat(&|x| x.crop_to_frame.to_vec(), &[2, 3])?,
            k_inv: cat(&|x| x.k_inv.to_vec(), &[3, 3])?,
            root_depth: cat(&|x| vec![x.root_depth], &[])?,
            mirrored: samples.iter().map(|x| x.mirrored).collect(),
        })
    }

    /// Gathers `indices` from `ds`.
    pub fn gather(ds: &dyn Dataset, indices: &[usize], device: &Device) -> anyhow::Result<Self> {
        let samples: Vec<Sample> = indices
            .iter()
            .map(|&i| ds.get(i))
            .collect::<anyhow::Result<_>>()?;
        Self::from_samples(&samples, device)
    }

    /// Gathers `indices` from `ds`, augmented; sample `i`'s draw is seeded by `sample_seed(seed,
    /// i)`, so a resumed run repeats it.
    pub fn gather_augmented(
        ds: &dyn Dataset,
        indices: &[usize],
        aug: &Augment,
        seed: u64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let samples: Vec<Sample> = indices
            .iter()
            .map(|&i| ds.get_augmented(i, aug, sample_seed(seed, i as u64)))
            .collect::<anyhow::Result<_>>()?;
        Self::from_samples(&samples, device)
    }

    fn named(&self) -> Vec<(&'static str, &Tensor)> {
        vec![
            ("image", &self.images),
            ("uvd", &self.uvd),
            ("joints", &self.joints),
            ("twist", &self.twist),
            ("beta", &self.beta),
            ("leaf", &self.leaf),
            ("rotations", &self.rotations),
            ("crop_to_frame", &self.crop_to_frame),
            ("k_inv", &self.k_inv),
            ("root_depth", &self.root_depth),
        ]
    }
}

/// `manifest.json` of a shard directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub count: usize,
    pub input_size: usize,
    pub num_betas: usize,
    pub seed: u64,
    pub generator: SynthOptions,
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub count: usize,
}

/// Writes `ds` as safetensors shards of at most `shard_size` samples plus `manifest.json`.
pub fn write_shards(
    ds: &SynthDataset,
    seed: u64,
    out: &Path,
    shard_size: usize,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {out:?}"))?;
    let shard_size = shard_size.max(1);
    let mut shards = Vec::new();
    let mut start = 0;
    while start < ds.len() {
        let n = shard_size.min(ds.len() - start);
        let idx: Vec<usize> = (start..start + n).collect();
        let batch = Batch::gather(ds, &idx, &Device::Cpu)?;
        let file = format!("shard-{:05}.safetensors", shards.len());
        let items: Vec<(&str, &Tensor)> = batch.named();
        safetensors::serialize_to_file(items, None, &out.join(&file))
            .with_context(|| format!("writing {file}"))?;
        shards.push(ShardEntry { file, count: n });
        start += n;
        progress(start);
    }
    let opts = *ds.options();
    let manifest = Manifest {
        count: ds.len(),
        input_size: opts.input_size,
        num_betas: opts.num_betas,
        seed,
        generator: opts,
        shards,
    };
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    Ok(manifest)
}

/// Samples read back from a shard directory (all held in memory).
#[derive(Debug, Clone)]
pub struct ShardDataset {
    pub manifest: Manifest,
    dir: PathBuf,
    samples: Vec<Sample>,
}

fn rows(t: &HashMap<String, Tensor>, name: &str, i: usize) -> anyhow::Result<Vec<f32>> {
    Ok(t.get(name)
        .with_context(|| format!("shard lacks {name}"))?
        .get(i)?
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?)
}

fn arr<const N: usize>(v: &[f32]) -> anyhow::Result<Vec<[f32; N]>> {
    v.chunks_exact(N)
        .map(|c| <[f32; N]>::try_from(c).context("bad row"))
        .collect()
}

impl ShardDataset {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let mpath = dir.join("manifest.json");
        let manifest: Manifest = serde_json::from_str(
            &std::fs::read_to_string(&mpath).with_context(|| format!("reading {mpath:?}"))?,
        )?;
        let mut samples = Vec::with_capacity(manifest.count);
        for sh in &manifest.shards {
            let t = candle_core::safetensors::load(dir.join(&sh.file), &Device::Cpu)
                .with_context(|| format!("reading {}", sh.file))?;
            for i in 0..sh.count {
                let c2f = rows(&t, "crop_to_frame", i)?;
                let ki = rows(&t, "k_inv", i)?;
                samples.push(Sample {
                    image: rows(&t, "image", i)?,
                    uvd: arr(&rows(&t, "uvd", i)?)?,
                    joints: arr(&rows(&t, "joints", i)?)?,
                    twist: arr(&rows(&t, "twist", i)?)?,
                    beta: rows(&t, "beta", i)?,
                    leaf: arr(&rows(&t, "leaf", i)?)?,
                    rotations: arr(&rows(&t, "rotations", i)?)?,
                    crop_to_frame: c2f.as_slice().try_into().context("crop_to_frame")?,
                    k_inv: ki.as_slice().try_into().context("k_inv")?,
                    root_depth: rows(&t, "root_depth", i)?
                        .first()
                        .copied()
                        .context("root_depth")?,
                    // Stored samples are drawn without augmentation.
                    mirrored: false,
                });
            }
        }
        anyhow::ensure!(
            samples.len() == manifest.count,
            "manifest says {} samples, shards hold {}",
            manifest.count,
            samples.len()
        );
        Ok(Self {
            manifest,
            dir: dir.to_path_buf(),
            samples,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Dataset for ShardDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn input_size(&self) -> usize {
        self.manifest.input_size
    }

    fn get(&self, index: usize) -> anyhow::Result<Sample> {
        self.samples
            .get(index)
            .cloned()
            .with_context(|| format!("sample {index} of {}", self.samples.len()))
    }
}
