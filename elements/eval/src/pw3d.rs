//! 3DPW (von Marcard et al., ECCV 2018) as distributed: `imageFiles/<sequence>/image_%05d.jpg`
//! and `sequenceFiles/{train,validation,test}/<sequence>.pkl`, Python 2 pickles (protocol 2,
//! latin-1 strings, numpy arrays) read with ikol-body's unpickler.
//!
//! Keys used (reference 5.1): `sequence`, `betas` (per person, first 10), `poses` (per person,
//! N x 72), `trans` (per person, N x 3), `poses2d` (per person, N x 3 x 18, OpenPose COCO-18 with
//! confidence), `cam_poses` (N x 4 x 4, world to camera), `cam_intrinsics` (3 x 3),
//! `campose_valid` (per person, N), `genders`, `img_frame_ids` (N). Other keys (`jointPositions`,
//! `v_template_clothed`, `texture_maps`, ...) are ignored.
//!
//! World vertices are `LBS(pose, beta) + trans` with LBS rotating about the rest root joint J0,
//! so in the camera (`R_c`, `t_c`): root orientation `R_c R(pose[0:3])`, root joint at
//! `R_c (J0 + trans) + t_c` (the mmhuman3d converter IKOL uses does the same).

use std::path::{Path, PathBuf};

use ikol_body::BodyModel;
use ikol_body::pickle::{Value, read_pickle_file};
use ikol_solver::sampling::{GroundTruth, ground_truth};
use ikol_types::nalgebra::{Matrix3, Vector3};
use ikol_types::rotation::{axis_angle_to_matrix, matrix_to_axis_angle};
use ikol_types::{BBox, Intrinsics};

/// The splits of 3DPW's `sequenceFiles/`.
pub const SPLITS: [&str; 3] = ["train", "validation", "test"];
/// 3DPW's video frame rate (its images are the 30 Hz frames).
pub const FRAME_RATE: u32 = 30;
/// Ground-truth boxes: the keypoint extent enlarged about its centre (reference 5.1).
pub const BOX_SCALE: f64 = 1.2;
/// Shape coefficients kept (the networks and the neutral-model protocol use 10).
pub const BETAS: usize = 10;

/// A problem with a 3DPW file or tree; always names the path.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Pickle {
        path: PathBuf,
        source: ikol_body::pickle::PickleError,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, DatasetError>;

/// One person of a sequence file.
#[derive(Debug, Clone, PartialEq)]
pub struct SequencePerson {
    pub gender: String,
    /// The first [`BETAS`] shape coefficients.
    pub betas: Vec<f64>,
    /// Per frame: 72 axis-angle values, SMPL order, root first (world frame).
    pub poses: Vec<[f64; 72]>,
    /// Per frame: world translation.
    pub trans: Vec<[f64; 3]>,
    /// Per frame: 18 keypoints (x, y, confidence) in pixels.
    pub keypoints: Vec<[[f64; 3]; 18]>,
    /// Per frame: whether the camera pose (and so the ground truth) is valid.
    pub valid: Vec<bool>,
}

/// A 3DPW sequence file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub name: String,
    pub path: PathBuf,
    pub intrinsics: Intrinsics,
    /// Per frame: world-to-camera rotation and translation.
    pub cam_poses: Vec<(Matrix3<f64>, Vector3<f64>)>,
    /// Per frame: the image number (`image_%05d.jpg`).
    pub img_frame_ids: Vec<u64>,
    pub people: Vec<SequencePerson>,
}

/// A person's ground truth in the camera frame of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraPose {
    /// 24 axis-angle rotations; the root is `R_c R(pose[0:3])`.
    pub theta: [[f64; 3]; 24],
    pub betas: Vec<f64>,
}

impl Sequence {
    /// Reads a sequence `.pkl`; every missing or malformed key is an error naming file and key.
    pub fn load(path: &Path) -> Result<Self> {
        let v = read_pickle_file(path).map_err(|source| DatasetError::Pickle {
            path: path.to_path_buf(),
            source,
        })?;
        Reader { path, root: &v }.sequence()
    }

    /// [`Sequence::load`] of a file's bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let v = ikol_body::pickle::read_pickle(bytes).map_err(|source| DatasetError::Pickle {
            path: path.to_path_buf(),
            source,
        })?;
        Reader { path, root: &v }.sequence()
    }

    pub fn num_frames(&self) -> usize {
        self.img_frame_ids.len()
    }

    /// The JPEG of frame `i` under the dataset root.
    pub fn image_path(&self, root: &Path, i: usize) -> PathBuf {
        image_path(root, &self.name, self.img_frame_ids[i])
    }

    /// The ground-truth box of person `p` at frame `i`: keypoints with confidence > 0, their
    /// extent enlarged by [`BOX_SCALE`]; `None` without such keypoints.
    pub fn bbox(&self, p: usize, i: usize) -> Option<BBox> {
        let kp = &self.people[p].keypoints[i];
        BBox::around_points(
            kp.iter().filter(|k| k[2] > 0.0).map(|k| [k[0], k[1]]),
            BOX_SCALE,
        )
        .filter(|b| b.w > 0.0 && b.h > 0.0)
    }

    /// Person `p` at frame `i` in camera coordinates (rotations and shape; the root position
    /// needs the body model's J0, see [`Sequence::root_in_camera`]).
    pub fn camera_pose(&self, p: usize, i: usize) -> CameraPose {
        let pose = &self.people[p].poses[i];
        let (rc, _) = &self.cam_poses[i];
        let mut theta = [[0.0; 3]; 24];
        for (j, t) in theta.iter_mut().enumerate() {
            *t = [pose[3 * j], pose[3 * j + 1], pose[3 * j + 2]];
        }
        let r0 = rc * axis_angle_to_matrix(&Vector3::from(theta[0]));
        theta[0] = matrix_to_axis_angle(&r0).into();
        CameraPose {
            theta,
            betas: self.people[p].betas.clone(),
        }
    }

    /// Camera-frame root joint of person `p` at frame `i`: `R_c (J0 + trans) + t_c`, where `j0`
    /// is the body model's rest root joint for the person's shape.
    pub fn root_in_camera(&self, p: usize, i: usize, j0: &Vector3<f64>) -> Vector3<f64> {
        let (rc, tc) = &self.cam_poses[i];
        rc * (j0 + Vector3::from(self.people[p].trans[i])) + tc
    }
}

/// A person's ground truth posed by a body model: the shape padded or cut to the model's count,
/// its rest skeleton (HybrIK-29 when the model has leaf vertices, else SMPL-24) and what a
/// solver is given ([`ground_truth`]: root-relative joints, twist, leaf rotations, locals).
#[derive(Debug, Clone, PartialEq)]
pub struct PersonTruth {
    pub beta: Vec<f64>,
    pub rest: Vec<Vector3<f64>>,
    pub truth: GroundTruth,
}

/// [`PersonTruth`] of 24 axis-angle rotations (root in camera axes) and shape coefficients.
pub fn person_truth(
    model: &BodyModel,
    theta: &[[f64; 3]],
    betas: &[f64],
) -> std::result::Result<PersonTruth, ikol_body::BodyError> {
    let mut beta = betas[..betas.len().min(model.num_betas)].to_vec();
    beta.resize(model.num_betas, 0.0);
    let rest = if model.leaf_vertices.is_some() {
        model.rest_joints29(&beta)?
    } else {
        model.rest_joints(&beta)?
    };
    let pose: Vec<Vector3<f64>> = theta.iter().map(|t| Vector3::from(*t)).collect();
    let truth = ground_truth(&rest, &pose);
    Ok(PersonTruth { beta, rest, truth })
}

/// `root/imageFiles/<sequence>/image_%05d.jpg`.
pub fn image_path(root: &Path, sequence: &str, frame_id: u64) -> PathBuf {
    root.join("imageFiles")
        .join(sequence)
        .join(format!("image_{frame_id:05}.jpg"))
}

/// The sequence files of a split, sorted by name; `sequence` = `all`, one name (without `.pkl`)
/// or several separated by commas (a shard of a job array, `ikol eval-3dpw --shard`).
pub fn sequence_files(root: &Path, split: &str, sequence: &str) -> Result<Vec<PathBuf>> {
    if !SPLITS.contains(&split) {
        return Err(DatasetError::Format {
            path: root.to_path_buf(),
            message: format!("unknown split `{split}`; expected one of {SPLITS:?}"),
        });
    }
    let dir = root.join("sequenceFiles").join(split);
    let entries = std::fs::read_dir(&dir).map_err(|source| DatasetError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pkl"))
        .filter(|p| {
            sequence == "all"
                || p.file_stem()
                    .is_some_and(|s| sequence.split(',').any(|q| s == q.trim()))
        })
        .collect();
    files.sort();
    // Every name of a list must be there (a typo must not shrink the run silently).
    if sequence != "all" && !files.is_empty() {
        let missing: Vec<&str> = sequence
            .split(',')
            .map(str::trim)
            .filter(|q| !files.iter().any(|p| p.file_stem().is_some_and(|s| s == *q)))
            .collect();
        if !missing.is_empty() {
            return Err(DatasetError::Format {
                path: dir,
                message: format!(
                    "no sequence `{}` (no {}.pkl)",
                    missing.join("`, `"),
                    missing.join(".pkl, no ")
                ),
            });
        }
    }
    if files.is_empty() {
        let what = if sequence == "all" {
            "no .pkl sequence files".to_owned()
        } else {
            format!("no sequence `{sequence}` (no {sequence}.pkl)")
        };
        return Err(DatasetError::Format {
            path: dir,
            message: what,
        });
    }
    Ok(files)
}

struct Reader<'a> {
    path: &'a Path,
    root: &'a Value,
}

impl Reader<'_> {
    fn err(&self, message: impl Into<String>) -> DatasetError {
        DatasetError::Format {
            path: self.path.to_path_buf(),
            message: message.into(),
        }
    }

    fn key(&self, key: &str) -> Result<&Value> {
        self.root.get(key).ok_or_else(|| {
            self.err(format!(
                "no `{key}` in the sequence file (keys: {}); is this a 3DPW sequence file?",
                self.root.keys().join(", ")
            ))
        })
    }

    /// A float array with the given trailing shape; returns (rows, values).
    fn floats(&self, what: &str, v: &Value, tail: &[usize]) -> Result<(usize, Vec<f64>)> {
        let a = v
            .as_array()
            .ok_or_else(|| self.err(format!("`{what}` is a {}, not an array", v.type_name())))?;
        let shape = &a.shape;
        let ok = shape.len() == tail.len() + 1 && shape[1..] == *tail
            || (tail.is_empty() && shape.len() == 1);
        if !ok {
            return Err(self.err(format!(
                "`{what}` has shape {shape:?}, expected [N{}]",
                tail.iter().map(|d| format!(", {d}")).collect::<String>()
            )));
        }
        let vals = a.to_f64().map_err(|e| self.err(format!("`{what}`: {e}")))?;
        if vals.iter().any(|x| !x.is_finite()) {
            return Err(self.err(format!("`{what}` contains NaN or infinity")));
        }
        Ok((shape[0], vals))
    }

    fn per_person<'v>(&self, key: &str, v: &'v Value) -> Result<&'v [Value]> {
        v.as_list()
            .ok_or_else(|| self.err(format!("`{key}` is a {}, not a list", v.type_name())))
    }

    fn sequence(&self) -> Result<Sequence> {
        let name = self
            .key("sequence")?
            .as_str()
            .ok_or_else(|| self.err("`sequence` is not a string"))?
            .into_owned();
        let (_, k) = self.floats("cam_intrinsics", self.key("cam_intrinsics")?, &[3])?;
        if k.len() != 9 {
            return Err(self.err("`cam_intrinsics` is not 3 x 3"));
        }
        let intrinsics = Intrinsics {
            fx: k[0],
            fy: k[4],
            cx: k[2],
            cy: k[5],
        };
        if intrinsics.fx <= 0.0 || intrinsics.fy <= 0.0 {
            return Err(self.err(format!(
                "`cam_intrinsics` has focal lengths {} and {}; expected positive",
                intrinsics.fx, intrinsics.fy
            )));
        }
        // The name becomes image folder and report file names: no path separators.
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(self.err(format!("`sequence` = {name:?} is not a usable name")));
        }
        let (n, cp) = self.floats("cam_poses", self.key("cam_poses")?, &[4, 4])?;
        let cam_poses = cp
            .chunks_exact(16)
            .map(|m| {
                (
                    Matrix3::new(m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]),
                    Vector3::new(m[3], m[7], m[11]),
                )
            })
            .collect();
        let ids = self.key("img_frame_ids")?;
        let img_frame_ids: Vec<u64> = match ids.as_array() {
            Some(a) => a
                .to_i64()
                .map_err(|e| self.err(format!("`img_frame_ids`: {e}")))?
                .into_iter()
                .map(|i| u64::try_from(i).map_err(|_| self.err("negative `img_frame_ids`")))
                .collect::<Result<_>>()?,
            None => return Err(self.err("`img_frame_ids` is not an integer array")),
        };
        if img_frame_ids.len() != n {
            return Err(self.err(format!(
                "{} `img_frame_ids` but {n} `cam_poses`",
                img_frame_ids.len()
            )));
        }
        let poses = self.per_person("poses", self.key("poses")?)?;
        let betas = self.per_person("betas", self.key("betas")?)?;
        let trans = self.per_person("trans", self.key("trans")?)?;
        let poses2d = self.per_person("poses2d", self.key("poses2d")?)?;
        let valid = self.per_person("campose_valid", self.key("campose_valid")?)?;
        let genders = self.per_person("genders", self.key("genders")?)?;
        let np = poses.len();
        for (key, l) in [
            ("betas", betas.len()),
            ("trans", trans.len()),
            ("poses2d", poses2d.len()),
            ("campose_valid", valid.len()),
            ("genders", genders.len()),
        ] {
            if l != np {
                return Err(self.err(format!("{l} people in `{key}` but {np} in `poses`")));
            }
        }
        let mut people = Vec::with_capacity(np);
        for p in 0..np {
            let frames = |key: &str, rows: usize| -> Result<()> {
                if rows == n {
                    Ok(())
                } else {
                    Err(self.err(format!(
                        "person {p}: {rows} frames in `{key}`, expected {n}"
                    )))
                }
            };
            let (r, pv) = self.floats(&format!("poses[{p}]"), &poses[p], &[72])?;
            frames("poses", r)?;
            let (r, tv) = self.floats(&format!("trans[{p}]"), &trans[p], &[3])?;
            frames("trans", r)?;
            let (r, kv) = self.floats(&format!("poses2d[{p}]"), &poses2d[p], &[3, 18])?;
            frames("poses2d", r)?;
            let (_, bv) = self.floats(&format!("betas[{p}]"), &betas[p], &[])?;
            if bv.len() < BETAS {
                return Err(self.err(format!(
                    "person {p}: {} betas, expected at least {BETAS}",
                    bv.len()
                )));
            }
            let vv: Vec<bool> = match (&valid[p].as_array(), valid[p].as_list()) {
                (Some(a), _) => a
                    .to_bool()
                    .map_err(|e| self.err(format!("`campose_valid[{p}]`: {e}")))?,
                (None, Some(l)) => l
                    .iter()
                    .map(|x| x.as_i64().map(|i| i != 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| self.err(format!("`campose_valid[{p}]` is not boolean")))?,
                _ => return Err(self.err(format!("`campose_valid[{p}]` is not an array"))),
            };
            frames("campose_valid", vv.len())?;
            people.push(SequencePerson {
                gender: genders[p].as_str().unwrap_or_default().into_owned(),
                betas: bv[..BETAS].to_vec(),
                poses: pv
                    .chunks_exact(72)
                    .map(|c| std::array::from_fn(|k| c[k]))
                    .collect(),
                trans: tv.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
                // stored as rows x, y, confidence of 18 columns
                keypoints: kv
                    .chunks_exact(54)
                    .map(|c| std::array::from_fn(|k| [c[k], c[18 + k], c[36 + k]]))
                    .collect(),
                valid: vv,
            });
        }
        Ok(Sequence {
            name,
            path: self.path.to_path_buf(),
            intrinsics,
            cam_poses,
            img_frame_ids,
            people,
        })
    }
}
