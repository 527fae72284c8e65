//! Fuzz targets: one per parser that reads bytes from outside. Each takes arbitrary bytes and
//! must return (an error is fine) without panicking, crashing, hanging or allocating without
//! bound. Used by the coverage-guided fuzzer (`make fuzz`: cargo-fuzz / libFuzzer, crate
//! `tests/fuzz`) and by `make test`, which replays every case in `tests/data/fuzz/<target>/`
//! and runs a short mutation round (`tests/tests/fuzz.rs`).

use std::path::{Path, PathBuf};

use ikol_body::nalgebra::{Matrix3, Vector3};

/// A fuzz target: bytes in, nothing out (it must not panic).
pub type Target = fn(&[u8]);

/// Every target by name (the names of the `tests/fuzz` binaries and `tests/data/fuzz` folders).
pub const TARGETS: [(&str, Target); 8] = [
    ("pth", pth),
    ("pickle", pickle),
    ("npz", npz),
    ("smpl", smpl),
    ("body_safetensors", body_safetensors),
    ("tflite", tflite),
    ("pw3d", pw3d),
    ("solve_json", solve_json),
];

/// The name of a fake input file in error messages.
fn name() -> &'static Path {
    Path::new("fuzz-input")
}

/// PyTorch zip checkpoints (the bounded reader of `ikol_backbone::pth`).
pub fn pth(data: &[u8]) {
    let _ = ikol_backbone::pth::read_pth_bytes(data, &["state_dict", "model"]);
}

/// Python pickles with persistent ids (the unpickler under every `.pkl` and `.pth`).
pub fn pickle(data: &[u8]) {
    let _ = ikol_body::pickle::read_pickle_with_persistent_ids(data);
}

/// `.npz` archives.
pub fn npz(data: &[u8]) {
    let _ = ikol_body::npy::read_npz_bytes(data);
}

/// SMPL-format body models (`.pkl` and `.npz` by content), then a forward pass of what loads.
pub fn smpl(data: &[u8]) {
    let opts = ikol_body::smpl_file::LoadOptions::default();
    let _ = ikol_body::smpl_file::from_bytes(data, name(), &opts);
}

/// Our safetensors body models, posed once when they load.
pub fn body_safetensors(data: &[u8]) {
    if let Ok(m) = ikol_body::ikolfile::read(data, name()) {
        let _ = m.forward(&vec![0.0; m.num_betas], &[Matrix3::identity(); 24]);
    }
}

/// TensorFlow Lite flatbuffers, and the interpreter's model built from them.
pub fn tflite(data: &[u8]) {
    if let Ok(f) = ikol_detect::tflite::TfliteFile::parse(data.to_vec(), "fuzz-input") {
        let _ = ikol_detect::tflite::Model::from_file(&f);
    }
}

/// 3DPW sequence pickles.
pub fn pw3d(data: &[u8]) {
    let _ = ikol_eval::pw3d::Sequence::from_bytes(data, name());
}

/// `ikol solve`'s JSON input: a person's joints, twist and shape from JSON, solved by the
/// analytic and Gauss-Newton solvers on the small model.
pub fn solve_json(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let rows = |key: &str, width: usize| -> Option<Vec<Vec<f64>>> {
        v.get(key)?
            .as_array()?
            .iter()
            .map(|r| {
                let r: Option<Vec<f64>> = r.as_array()?.iter().map(|x| x.as_f64()).collect();
                r.filter(|r| r.len() == width)
            })
            .collect()
    };
    let Some(joints) = rows("joints", 3) else {
        return;
    };
    let twist = rows("twist", 2).unwrap_or_else(|| vec![vec![1.0, 0.0]; 23]);
    let beta: Vec<f64> = v
        .get("beta")
        .and_then(|b| b.as_array())
        .map(|b| b.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    let Ok(model) = ikol_body::BodyModel::embedded_small() else {
        return;
    };
    let Ok(basis) = model.joint_shape_basis(joints.len() == 29) else {
        return;
    };
    let targets: Vec<Vector3<f64>> = joints
        .iter()
        .map(|j| Vector3::new(j[0], j[1], j[2]))
        .collect();
    let twist: Vec<[f64; 2]> = twist.iter().map(|t| [t[0], t[1]]).collect();
    for method in ["hybrik", "ikol"] {
        let Some(m) = ikol_solver::Method::from_name(method) else {
            continue;
        };
        let _ = ikol_solver::solve(
            &ikol_solver::IkInput {
                targets: &targets,
                twist: &twist,
                rest: ikol_solver::Rest::Shape {
                    basis: &basis,
                    beta: &beta,
                },
                leaf_rotations: None,
            },
            &m,
        );
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Seed files of a target: committed fixtures in the real formats.
pub fn seed_files(target: &str) -> Vec<PathBuf> {
    let r = repo();
    let models = std::env::var_os("IKOL_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ikol/models")
        });
    let files: Vec<PathBuf> = match target {
        "pth" => vec![r.join("elements/backbone/tests/data/ikol24_r34w2.pth")],
        "pickle" | "smpl" => vec![
            r.join("tests/data/body/random_smpl.pkl"),
            r.join("tests/data/body/random_smpl_py3.pkl"),
            r.join("tests/data/body/random_smpl.npz"),
        ],
        "npz" => vec![r.join("tests/data/body/random_smpl.npz")],
        "body_safetensors" => vec![r.join("elements/body/assets/ikol-small.safetensors")],
        "tflite" => vec![models.join("pose_detection.tflite")],
        "pw3d" => vec![
            r.join("tests/data/3dpw/sequenceFiles/test/fixture_walk_00.pkl"),
            r.join("tests/data/body/pw3d_like_py2.pkl"),
        ],
        // (its seed is in tests/data/fuzz/solve_json/)
        "solve_json" => Vec::new(),
        _ => Vec::new(),
    };
    let mut out: Vec<PathBuf> = files.into_iter().filter(|p| p.is_file()).collect();
    // Regression cases found by fuzzing are seeds too.
    if let Ok(dir) = std::fs::read_dir(r.join("tests/data/fuzz").join(target)) {
        let mut cases: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        cases.sort();
        out.extend(cases);
    }
    out
}

/// A small deterministic mutator (xorshift): bit flips, byte sets to interesting values,
/// insertions, deletions, copies within the input and truncation; for the short round in
/// `make test` (the coverage-guided fuzzing is libFuzzer's).
#[derive(Debug)]
pub struct Mutator(u64);

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A mutated copy of `input` (1 to 8 edits).
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'(', b'.', b'0'];
        let mut b = input.to_vec();
        for _ in 0..1 + self.below(8) {
            let n = b.len();
            match self.below(7) {
                0 if n > 0 => {
                    let i = self.below(n);
                    b[i] ^= 1 << self.below(8);
                }
                1 if n > 0 => {
                    let i = self.below(n);
                    b[i] = INTERESTING[self.below(INTERESTING.len())];
                }
                2 => {
                    let i = self.below(n + 1);
                    let v = self.next() as u8;
                    b.insert(i, v);
                }
                3 if n > 0 => {
                    let i = self.below(n);
                    let k = 1 + self.below(16.min(n - i));
                    b.drain(i..i + k);
                }
                4 if n > 8 => {
                    // Copy a run of bytes elsewhere (duplicates opcodes, lengths, headers).
                    let (src, dst) = (self.below(n - 4), self.below(n - 4));
                    let k = 1 + self.below(4);
                    let run: Vec<u8> = b[src..src + k].to_vec();
                    b[dst..dst + k].copy_from_slice(&run);
                }
                5 if n > 4 => {
                    // A 32-bit little-endian length set to an extreme.
                    let i = self.below(n - 4);
                    let v: u32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, 0x1000_0000][self.below(5)];
                    b[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
                6 if n > 1 => {
                    let k = self.below(n);
                    b.truncate(k.max(1));
                }
                _ => {}
            }
        }
        b
    }
}
