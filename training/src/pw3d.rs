//! 3DPW as training data: every valid person-frame of a split (sequence files read by
//! `ikol_eval::pw3d`, JPEG frames), cropped from the ground-truth box (keypoints x1.2, then the
//! backbone's 1.25x square crop) with targets from the body model posed by the ground truth in
//! camera coordinates (reference 5.1: root = R_cam R(pose[0:3])).
//!
//! Upstream trains on the neutral model's joints of the ground-truth pose; here the targets come
//! from the configured body model, so with the default model they are that model's joints for
//! 3DPW's SMPL parameters (an approximation of the real people, like the evaluation's).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use ikol_backbone::preprocess::RgbFrame;
use ikol_body::BodyModel;
use ikol_eval::pw3d::{PersonTruth, Sequence, person_truth, sequence_files};
use ikol_types::joints::SMPL_JOINTS;
use ikol_types::nalgebra::Vector3;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::augment::{Augment, Draw};
use crate::data::{Dataset, Sample, build_sample};

/// The valid person-frames of a 3DPW split.
#[derive(Debug, Clone)]
pub struct Pw3dDataset {
    root: PathBuf,
    sequences: Vec<Sequence>,
    /// (sequence, frame, person) of every valid sample.
    index: Vec<(usize, usize, usize)>,
    body: Arc<BodyModel>,
    input_size: usize,
    num_betas: usize,
}

impl Pw3dDataset {
    /// Reads the sequence files of `split` (`sequence` = a name or `all`) under `root`.
    pub fn open(
        root: &Path,
        split: &str,
        sequence: &str,
        body: Arc<BodyModel>,
        input_size: usize,
        num_betas: usize,
    ) -> anyhow::Result<Self> {
        let mut sequences = Vec::new();
        let mut index = Vec::new();
        for file in sequence_files(root, split, sequence)? {
            let seq = Sequence::load(&file)?;
            let si = sequences.len();
            for f in 0..seq.num_frames() {
                for p in 0..seq.people.len() {
                    if seq.people[p].valid[f] && seq.bbox(p, f).is_some() {
                        index.push((si, f, p));
                    }
                }
            }
            sequences.push(seq);
        }
        anyhow::ensure!(
            !index.is_empty(),
            "{}: no valid person-frames in split `{split}`",
            root.display()
        );
        Ok(Self {
            root: root.to_path_buf(),
            sequences,
            index,
            body,
            input_size,
            num_betas,
        })
    }
}

impl Dataset for Pw3dDataset {
    fn len(&self) -> usize {
        self.index.len()
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

impl Pw3dDataset {
    fn sample(&self, i: usize, draw: &Draw) -> anyhow::Result<Sample> {
        let &(si, f, p) = self
            .index
            .get(i)
            .with_context(|| format!("sample {i} of {}", self.index.len()))?;
        let seq = &self.sequences[si];
        let path = seq.image_path(&self.root, f);
        let img = ikol_render::image::read_jpeg(&path)?;
        let rgb = RgbFrame::new(&img.pixels, img.width, img.height, 3 * img.width as usize)?;
        let bbox = seq.bbox(p, f).context("person without keypoints")?;
        let cam = seq.camera_pose(p, f);
        let PersonTruth {
            mut beta,
            rest,
            truth,
        } = person_truth(&self.body, &cam.theta, &cam.betas)?;
        let root = seq.root_in_camera(p, f, &rest[0]);
        let abs: Vec<Vector3<f64>> = truth.joints[..SMPL_JOINTS]
            .iter()
            .map(|j| root + j)
            .collect();
        beta.resize(self.num_betas, 0.0);
        build_sample(
            &rgb,
            &seq.intrinsics,
            &bbox,
            &abs,
            &truth,
            &truth.local,
            &beta,
            self.input_size,
            draw,
        )
        .with_context(|| format!("{} frame {f} person {p}", seq.name))
    }
}
