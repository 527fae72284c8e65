//! 3DPW training data on the fixture tree (tests/data/3dpw): targets against the generator's
//! smplx values, the crop geometry inverted by `uvd_to_cam`, and a training step on it.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use ikol_backbone::DEPTH_FACTOR_M;
use ikol_backbone::camera::{CropCamera, uvd_to_cam};
use ikol_body::BodyModel;
use ikol_train::config::{BodyChoice, DataConfig, TrainConfig};
use ikol_train::data::Dataset;
use ikol_train::pw3d::Pw3dDataset;
use ikol_train::train::Trainer;
use ikol_types::Affine2;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/3dpw")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn samples_match_the_generator_and_invert() {
    let body = BodyModel::embedded_default().unwrap();
    let ds = Pw3dDataset::open(&root(), "test", "all", body, 64, 10).unwrap();
    // 5 + 4 + 4 person-frames, one of them without a valid camera pose.
    assert_eq!(ds.len(), 12);
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("expected.json")).unwrap())
            .unwrap();
    // Sequences in name order: pair first, frame-major, person-minor.
    let pair = &exp["sequences"][1];
    assert_eq!(pair["name"], "fixture_pair_01");
    let k = floats(&pair["intrinsics"]);
    let s = ds.get(1).unwrap(); // frame 0, person 1
    let fr = &pair["people"][1]["frames"][0];
    let want: Vec<Vec<f64>> = fr["joints_cam"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let root_cam = floats(&fr["root_cam"]);
    for (j, w) in want.iter().enumerate() {
        for c in 0..3 {
            let rel = w[c] - root_cam[c];
            assert!((f64::from(s.joints[j][c]) - rel).abs() < 1e-5, "joint {j}");
        }
    }
    assert_eq!(
        s.beta.iter().map(|&b| f64::from(b)).collect::<Vec<_>>(),
        floats(&pair["people"][1]["betas"])
            .iter()
            .map(|&b| f64::from(b as f32))
            .collect::<Vec<_>>()
    );
    // uvd back to the camera with the sample's own crop and root depth gives the joints again.
    let m = s.crop_to_frame.map(f64::from);
    let cam = CropCamera {
        crop_to_frame: Affine2 {
            m: [[m[0], m[1], m[2]], [m[3], m[4], m[5]]],
        },
        intrinsics: ikol_types::Intrinsics {
            fx: k[0],
            fy: k[1],
            cx: k[2],
            cy: k[3],
        },
        root_depth: f64::from(s.root_depth),
        depth_factor: DEPTH_FACTOR_M,
    };
    let back = uvd_to_cam(&s.uvd, 64.0, &cam);
    for (j, w) in want.iter().enumerate() {
        for c in 0..3 {
            assert!(
                (back.xyz_abs_m[j][c] - w[c]).abs() < 1e-4,
                "joint {j}: {:?}",
                back.xyz_abs_m[j]
            );
        }
    }
    assert!((f64::from(s.root_depth) - root_cam[2]).abs() < 1e-5);
    // The crop holds the person: its centre pixels differ from its corners (background).
    let px = |x: usize, y: usize, c: usize| s.image[c * 64 * 64 + y * 64 + x];
    let centre: f32 = (0..3).map(|c| (px(32, 32, c) - px(1, 1, c)).abs()).sum();
    assert!(centre > 0.1, "{centre}");
}

#[test]
fn trains_on_3dpw_files() {
    let cfg = TrainConfig {
        data: DataConfig::Pw3d {
            root: root(),
            split: "test".into(),
            sequence: "fixture_walk_00".into(),
        },
        body: BodyChoice::Default,
        batch_size: 4,
        // One pass over the 5 walk frames: ceil(5 / 4) = 2 steps.
        epochs: 1,
        steps: 1000,
        eval_every: 0,
        eval_count: 0,
        checkpoint_every: 0,
        seed: 5,
        out_dir: std::env::temp_dir().join(format!("ikol-train-pw3d-{}", std::process::id())),
        ..TrainConfig::default()
    };
    let out = cfg.out_dir.clone();
    let mut tr = Trainer::new(cfg, &Device::Cpu).unwrap();
    tr.run(false).unwrap();
    assert_eq!(tr.step(), 2);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    for line in csv.lines().skip(1) {
        let total: f64 = line.split(',').nth(1).unwrap().parse().unwrap();
        assert!(total.is_finite() && total > 0.0, "{line}");
    }
    std::fs::remove_dir_all(&out).ok();

    let bad = TrainConfig {
        data: DataConfig::Pw3d {
            root: root(),
            split: "train".into(),
            sequence: "all".into(),
        },
        ..TrainConfig::default()
    };
    let e = Trainer::new(bad, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("sequenceFiles/train"), "{e}");
}
