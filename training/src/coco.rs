//! 3DPW as upstream HybrIK / IKOL load it for training and testing: the COCO-style annotation
//! JSON of the I2L-MeshNet parse (`json/3DPW_test_new.json`, `3DPW_train_our.json`, reference
//! 5.1), images at `<image_root>/imageFiles/<sequence>/<file_name>`.
//!
//! Keys read (others are ignored):
//! * `images[i]`: `id`, `width`, `height`, `sequence`, `file_name`, `cam_param {focal [fx, fy],
//!   princpt [cx, cy]}`;
//! * `annotations[i]`: `id`, `image_id`, `bbox` (x, y, w, h), `smpl_param {shape, pose}` (pose:
//!   72 axis-angle values, the root already in camera axes), `smpl_joint_cam` (24 or 29 rows,
//!   camera metres; row 0 is the root joint) and optionally `angle_twist {angle, cos, sin}` (23
//!   each, joints 1..23; an angle of -999, i.e. below -10 as upstream tests it, is unknown).
//!
//! Arrays may be flat or nested (upstream reshapes them). As upstream's `pw3d.py`, the box is
//! taken as `(x, y, x + max(w - 1, 0), y + max(h - 1, 0))`, clipped to `[0, W - 1] x [0, H - 1]`,
//! and the annotation skipped when the clipped box is less than 5 px wide or high; the crop is
//! the backbone's 1.25x square crop of the clipped box.
//!
//! Targets as in [`crate::pw3d`]: the configured body model posed by `smpl_param` (shape, pose)
//! with the root joint placed at `smpl_joint_cam[0]`; twist (cos, sin) from `angle_twist` where
//! it is known, else from the pose (`ikol_solver::sampling::ground_truth`); intrinsics from
//! `cam_param`. Upstream trains on the neutral SMPL joints of the same parameters; with another
//! body model the root-relative joints are that model's.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use ikol_backbone::preprocess::RgbFrame;
use ikol_body::BodyModel;
use ikol_eval::pw3d::{PersonTruth, person_truth};
use ikol_types::joints::SMPL_JOINTS;
use ikol_types::nalgebra::Vector3;
use ikol_types::{BBox, Intrinsics};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};

use crate::augment::{Augment, Draw};
use crate::data::{Dataset, NUM_TWISTS, Sample, build_sample};

/// Upstream's marker of an unknown twist angle in `angle_twist.angle`.
pub const INVALID_TWIST: f64 = -999.0;
/// Angles at or below this are unknown (upstream: `phi_weight = angle > -10`).
pub const TWIST_VALID_ABOVE: f64 = -10.0;
/// Annotations whose clipped box is narrower or lower than this (pixels) are skipped.
pub const MIN_BOX_SIDE: f64 = 5.0;

/// One usable annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoEntry {
    pub annotation_id: i64,
    pub image_id: i64,
    /// `<image_root>/imageFiles/<sequence>/<file_name>`.
    pub image: PathBuf,
    pub width: u32,
    pub height: u32,
    pub intrinsics: Intrinsics,
    /// The box the crop is taken from (upstream's clipped box).
    pub bbox: BBox,
    /// 24 axis-angle rotations, the root in camera axes.
    pub pose: [[f64; 3]; SMPL_JOINTS],
    pub shape: Vec<f64>,
    /// `smpl_joint_cam[0]`: the camera-frame root joint, metres.
    pub root_cam: [f64; 3],
    /// Twist (cos, sin) of joints 1..23 from `angle_twist`; `None` where unknown.
    pub twist: [Option<[f64; 2]>; NUM_TWISTS],
}

/// The usable annotations of a COCO-style 3DPW JSON.
#[derive(Debug, Clone)]
pub struct CocoDataset {
    json: PathBuf,
    entries: Vec<CocoEntry>,
    skipped: usize,
    body: Arc<BodyModel>,
    input_size: usize,
    num_betas: usize,
}

// ------------------------------------------------------------------------------------------------
// file layout

#[derive(Debug, Deserialize)]
struct CocoFile {
    images: Vec<ImageRecord>,
    annotations: Vec<AnnotationRecord>,
}

#[derive(Debug, Deserialize)]
struct ImageRecord {
    id: i64,
    width: u32,
    height: u32,
    sequence: String,
    file_name: String,
    cam_param: CamParam,
}

#[derive(Debug, Deserialize)]
struct CamParam {
    focal: Flat,
    princpt: Flat,
}

#[derive(Debug, Deserialize)]
struct AnnotationRecord {
    id: i64,
    image_id: i64,
    bbox: Flat,
    smpl_param: SmplParam,
    smpl_joint_cam: Flat,
    angle_twist: Option<AngleTwist>,
}

#[derive(Debug, Deserialize)]
struct SmplParam {
    shape: Flat,
    pose: Flat,
}

#[derive(Debug, Deserialize)]
struct AngleTwist {
    angle: Flat,
    cos: Flat,
    sin: Flat,
}

/// A number or a (nested) array of numbers, flattened in order.
#[derive(Debug, Clone, Default, PartialEq)]
struct Flat(Vec<f64>);

impl<'de> Deserialize<'de> for Flat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = Vec::new();
        d.deserialize_any(Push(&mut v))?;
        Ok(Flat(v))
    }
}

struct Push<'a>(&'a mut Vec<f64>);

impl<'de> Visitor<'de> for Push<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a (nested) array of numbers")
    }

    fn visit_f64<E>(self, x: f64) -> Result<(), E> {
        self.0.push(x);
        Ok(())
    }

    fn visit_i64<E>(self, x: i64) -> Result<(), E> {
        self.0.push(x as f64);
        Ok(())
    }

    fn visit_u64<E>(self, x: u64) -> Result<(), E> {
        self.0.push(x as f64);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Push(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Push<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// `what` has `len` (or one of `lens`) finite values.
fn check(what: &str, v: &Flat, lens: &[usize]) -> anyhow::Result<()> {
    anyhow::ensure!(
        lens.contains(&v.0.len()),
        "`{what}` has {} values, expected {}",
        v.0.len(),
        lens.iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    );
    anyhow::ensure!(
        v.0.iter().all(|x| x.is_finite()),
        "`{what}` contains NaN or infinity"
    );
    Ok(())
}

/// Upstream's box: xywh -> (x, y, x + max(w - 1, 0), y + max(h - 1, 0)) clipped to the image;
/// `None` when less than [`MIN_BOX_SIDE`] wide or high.
fn upstream_box(b: &[f64], width: u32, height: u32) -> Option<BBox> {
    let (xmax, ymax) = (f64::from(width) - 1.0, f64::from(height) - 1.0);
    let x0 = b[0].clamp(0.0, xmax.max(0.0));
    let y0 = b[1].clamp(0.0, ymax.max(0.0));
    let x1 = (b[0] + (b[2] - 1.0).max(0.0)).clamp(0.0, xmax.max(0.0));
    let y1 = (b[1] + (b[3] - 1.0).max(0.0)).clamp(0.0, ymax.max(0.0));
    (x1 - x0 >= MIN_BOX_SIDE && y1 - y0 >= MIN_BOX_SIDE).then_some(BBox {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    })
}

/// A parse error of `json`, with the image or annotation it is in when the file is valid JSON
/// (found by parsing again, slowly, into `serde_json::Value`; only on this error path).
fn locate_error(json: &Path, bytes: &[u8], e: serde_json::Error) -> anyhow::Error {
    let whole = || {
        anyhow::Error::new(e).context(format!(
            "{}: not a COCO-style 3DPW annotation file",
            json.display()
        ))
    };
    // Syntax errors (a truncated or broken file) have no record to name.
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return whole();
    };
    let id = |r: &serde_json::Value| {
        r.get("id")
            .map_or_else(|| "without an id".to_owned(), ToString::to_string)
    };
    let records = |key: &str| v.get(key).and_then(serde_json::Value::as_array);
    for r in records("images").into_iter().flatten() {
        if let Err(err) = ImageRecord::deserialize(r) {
            return anyhow::anyhow!("{}: image {}: {err}", json.display(), id(r));
        }
    }
    for r in records("annotations").into_iter().flatten() {
        if let Err(err) = AnnotationRecord::deserialize(r) {
            return anyhow::anyhow!("{}: annotation {}: {err}", json.display(), id(r));
        }
    }
    whole()
}

struct ImageInfo<'a> {
    record: &'a ImageRecord,
    intrinsics: Intrinsics,
}

fn image_info(im: &ImageRecord) -> anyhow::Result<ImageInfo<'_>> {
    check("cam_param.focal", &im.cam_param.focal, &[2])?;
    check("cam_param.princpt", &im.cam_param.princpt, &[2])?;
    let (f, c) = (&im.cam_param.focal.0, &im.cam_param.princpt.0);
    anyhow::ensure!(
        f[0] > 0.0 && f[1] > 0.0,
        "`cam_param.focal` {f:?} is not positive"
    );
    anyhow::ensure!(
        im.width > 0 && im.height > 0,
        "image size {}x{}",
        im.width,
        im.height
    );
    anyhow::ensure!(
        !im.sequence.is_empty() && !im.file_name.is_empty(),
        "empty `sequence` or `file_name`"
    );
    Ok(ImageInfo {
        record: im,
        intrinsics: Intrinsics {
            fx: f[0],
            fy: f[1],
            cx: c[0],
            cy: c[1],
        },
    })
}

/// The entry of one annotation; `None` when its box is too small.
fn entry(
    a: &AnnotationRecord,
    img: &ImageInfo<'_>,
    image_root: &Path,
) -> anyhow::Result<Option<CocoEntry>> {
    let im = img.record;
    check("bbox", &a.bbox, &[4])?;
    check("smpl_param.pose", &a.smpl_param.pose, &[3 * SMPL_JOINTS])?;
    // Any number of shape coefficients (upstream's files hold 10); cut or padded to the model's.
    let shape = &a.smpl_param.shape;
    anyhow::ensure!(!shape.0.is_empty(), "`smpl_param.shape` is empty");
    check("smpl_param.shape", shape, &[shape.0.len()])?;
    check("smpl_joint_cam", &a.smpl_joint_cam, &[72, 87])?;
    let mut twist = [None; NUM_TWISTS];
    if let Some(t) = &a.angle_twist {
        check("angle_twist.angle", &t.angle, &[NUM_TWISTS])?;
        check("angle_twist.cos", &t.cos, &[NUM_TWISTS])?;
        check("angle_twist.sin", &t.sin, &[NUM_TWISTS])?;
        for (k, tw) in twist.iter_mut().enumerate() {
            if t.angle.0[k] > TWIST_VALID_ABOVE {
                *tw = Some([t.cos.0[k], t.sin.0[k]]);
            }
        }
    }
    let Some(bbox) = upstream_box(&a.bbox.0, im.width, im.height) else {
        return Ok(None);
    };
    let p = &a.smpl_param.pose.0;
    let j = &a.smpl_joint_cam.0;
    Ok(Some(CocoEntry {
        annotation_id: a.id,
        image_id: a.image_id,
        image: image_root
            .join("imageFiles")
            .join(&im.sequence)
            .join(&im.file_name),
        width: im.width,
        height: im.height,
        intrinsics: img.intrinsics,
        bbox,
        pose: std::array::from_fn(|k| [p[3 * k], p[3 * k + 1], p[3 * k + 2]]),
        shape: a.smpl_param.shape.0.clone(),
        root_cam: [j[0], j[1], j[2]],
        twist,
    }))
}

impl CocoDataset {
    /// Reads `json`; `image_root` is the directory holding `imageFiles/`. Every error names the
    /// file (and the annotation or image id).
    pub fn open(
        json: &Path,
        image_root: &Path,
        body: Arc<BodyModel>,
        input_size: usize,
        num_betas: usize,
    ) -> anyhow::Result<Self> {
        let bytes = std::fs::read(json).with_context(|| format!("reading {}", json.display()))?;
        let file: CocoFile =
            serde_json::from_slice(&bytes).map_err(|e| locate_error(json, &bytes, e))?;
        let mut images = HashMap::with_capacity(file.images.len());
        for im in &file.images {
            let info =
                image_info(im).with_context(|| format!("{}: image {}", json.display(), im.id))?;
            anyhow::ensure!(
                images.insert(im.id, info).is_none(),
                "{}: image id {} appears twice",
                json.display(),
                im.id
            );
        }
        let mut entries = Vec::with_capacity(file.annotations.len());
        let mut skipped = 0;
        for a in &file.annotations {
            let e = images
                .get(&a.image_id)
                .with_context(|| format!("no image with id {}", a.image_id))
                .and_then(|img| entry(a, img, image_root))
                .with_context(|| format!("{}: annotation {}", json.display(), a.id))?;
            match e {
                Some(e) => entries.push(e),
                None => skipped += 1,
            }
        }
        anyhow::ensure!(
            !entries.is_empty(),
            "{}: no usable annotations ({} in the file, {skipped} with boxes under {MIN_BOX_SIDE} px)",
            json.display(),
            file.annotations.len()
        );
        Ok(Self {
            json: json.to_path_buf(),
            entries,
            skipped,
            body,
            input_size,
            num_betas,
        })
    }

    /// The annotation file.
    pub fn path(&self) -> &Path {
        &self.json
    }

    /// The usable annotations, in file order (sample `i` is `entries()[i]`).
    pub fn entries(&self) -> &[CocoEntry] {
        &self.entries
    }

    /// Annotations skipped for their small boxes.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn sample(&self, i: usize, draw: &Draw) -> anyhow::Result<Sample> {
        let e = self
            .entries
            .get(i)
            .with_context(|| format!("sample {i} of {}", self.entries.len()))?;
        self.build(e, draw).with_context(|| {
            format!(
                "{}: annotation {} ({})",
                self.json.display(),
                e.annotation_id,
                e.image.display()
            )
        })
    }

    fn build(&self, e: &CocoEntry, draw: &Draw) -> anyhow::Result<Sample> {
        let img = ikol_render::image::read_jpeg(&e.image)?;
        let rgb = RgbFrame::new(&img.pixels, img.width, img.height, 3 * img.width as usize)?;
        let PersonTruth {
            mut beta,
            truth: mut gt,
            ..
        } = person_truth(&self.body, &e.pose, &e.shape)?;
        for (t, known) in gt.twist.iter_mut().zip(&e.twist) {
            if let Some(k) = known {
                *t = *k;
            }
        }
        let root = Vector3::from(e.root_cam);
        let abs: Vec<Vector3<f64>> = gt.joints[..SMPL_JOINTS].iter().map(|j| root + j).collect();
        beta.resize(self.num_betas, 0.0);
        build_sample(
            &rgb,
            &e.intrinsics,
            &e.bbox,
            &abs,
            &gt,
            &gt.local,
            &beta,
            self.input_size,
            draw,
        )
    }
}

impl Dataset for CocoDataset {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn input_size(&self) -> usize {
        self.input_size
    }

    fn get(&self, i: usize) -> anyhow::Result<Sample> {
        self.sample(i, &Draw::IDENTITY)
    }

    fn get_augmented(&self, i: usize, aug: &Augment, seed: u64) -> anyhow::Result<Sample> {
        let draw = aug.draw(&mut StdRng::seed_from_u64(seed), self.input_size);
        self.sample(i, &draw)
    }
}
