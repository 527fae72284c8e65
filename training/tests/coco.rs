//! The COCO-style 3DPW annotations (tests/data/3dpw/json/3DPW_test_new.json, upstream's I2L-MeshNet
//! format): targets against the file's own joints, the sequence fixture's expected.json and the
//! sequence-file loader; twist from the file against ours from the pose; errors; flip.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ikol_backbone::DEPTH_FACTOR_M;
use ikol_backbone::camera::{CropCamera, uvd_to_cam};
use ikol_body::BodyModel;
use ikol_solver::sampling::ground_truth;
use ikol_train::augment::Augment;
use ikol_train::coco::CocoDataset;
use ikol_train::data::{Dataset, Sample};
use ikol_train::pw3d::Pw3dDataset;
use ikol_types::joints::SMPL24_FLIP_PAIRS;
use ikol_types::nalgebra::Vector3;
use ikol_types::{Affine2, Intrinsics};
use serde_json::Value;

const S: usize = 64;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/3dpw")
}

fn json_path() -> PathBuf {
    root().join("json/3DPW_test_new.json")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn open(json: &Path) -> anyhow::Result<CocoDataset> {
    CocoDataset::open(json, &root(), BodyModel::embedded_default()?, S, 10)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

/// The sample's uvd back in the camera with its own crop, intrinsics and root depth.
fn back_to_camera(s: &Sample, k: &Intrinsics) -> Vec<[f64; 3]> {
    let cam = CropCamera {
        crop_to_frame: crop_to_frame(s),
        intrinsics: *k,
        root_depth: f64::from(s.root_depth),
        depth_factor: DEPTH_FACTOR_M,
    };
    uvd_to_cam(&s.uvd, S as f64, &cam).xyz_abs_m
}

fn crop_to_frame(s: &Sample) -> Affine2 {
    let m = s.crop_to_frame.map(f64::from);
    Affine2 {
        m: [[m[0], m[1], m[2]], [m[3], m[4], m[5]]],
    }
}

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ikol-coco-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_json(name: &str, v: &Value) -> PathBuf {
    let p = scratch(name).join("3DPW_test_new.json");
    std::fs::write(&p, serde_json::to_string(v).unwrap()).unwrap();
    p
}

#[test]
fn samples_match_the_file_the_sequences_and_ground_truth() {
    let ds = open(&json_path()).unwrap();
    let file = read_json(&json_path());
    let exp = read_json(&root().join("expected.json"));
    let body = BodyModel::embedded_default().unwrap();
    // 5 + 4 + 4 person-frames, one without a valid camera pose.
    assert_eq!(ds.len(), 12);
    assert_eq!(ds.skipped(), 0);
    let anns = file["annotations"].as_array().unwrap();
    assert_eq!(anns.len(), 12);
    let images = file["images"].as_array().unwrap();

    // The sequence loader's samples: sequences by name, frame-major, valid people only.
    let pw3d = Pw3dDataset::open(&root(), "test", "all", body.clone(), S, 10).unwrap();
    let mut seqs: Vec<&Value> = exp["sequences"].as_array().unwrap().iter().collect();
    seqs.sort_by_key(|s| s["name"].as_str().unwrap().to_owned());
    let mut pw3d_index = Vec::new();
    for s in &seqs {
        for f in 0..s["num_frames"].as_u64().unwrap() as usize {
            for p in 0..s["num_people"].as_u64().unwrap() as usize {
                if s["people"][p]["frames"][f]["valid"].as_bool().unwrap() {
                    pw3d_index.push((s["name"].as_str().unwrap().to_owned(), f, p));
                }
            }
        }
    }
    assert_eq!(pw3d_index.len(), pw3d.len());

    let mut matched = 0;
    for (i, ann) in anns.iter().enumerate() {
        let e = &ds.entries()[i];
        assert_eq!(e.annotation_id, ann["id"].as_i64().unwrap());
        let img = images
            .iter()
            .find(|im| im["id"] == ann["image_id"])
            .unwrap();
        let cam = &img["cam_param"];
        let (f, c) = (floats(&cam["focal"]), floats(&cam["princpt"]));
        let k = Intrinsics {
            fx: f[0],
            fy: f[1],
            cx: c[0],
            cy: c[1],
        };
        assert_eq!(e.intrinsics, k);
        let seq_name = img["sequence"].as_str().unwrap();
        let file_name = img["file_name"].as_str().unwrap();
        assert_eq!(
            e.image,
            root().join("imageFiles").join(seq_name).join(file_name)
        );
        let frame: usize = file_name
            .trim_start_matches("image_")
            .trim_end_matches(".jpg")
            .parse()
            .unwrap();

        let s = ds.get(i).unwrap();
        let joint_cam = rows(&ann["smpl_joint_cam"]);
        let joint_img = rows(&ann["smpl_joint_img"]);
        let r = &joint_cam[0];
        // Root-relative joints: the file's (from the world-frame smplx mesh of the sequence file,
        // through the camera pose) against the body model posed by the file's camera-axes pose.
        for j in 0..24 {
            for a in 0..3 {
                let want = joint_cam[j][a] - r[a];
                assert!(
                    (f64::from(s.joints[j][a]) - want).abs() < 1e-5,
                    "annotation {i} joint {j}: {:?} vs {want}",
                    s.joints[j]
                );
            }
        }
        assert!((f64::from(s.root_depth) - r[2]).abs() < 1e-5);
        // trans + J0 (the model's rest root joint) is the same root.
        let shape = floats(&ann["smpl_param"]["shape"]);
        let trans = floats(&ann["smpl_param"]["trans"]);
        let j0 = body.rest_joints(&shape).unwrap()[0];
        for a in 0..3 {
            assert!((trans[a] + j0[a] - r[a]).abs() < 1e-6, "annotation {i}");
        }
        assert_eq!(s.beta, shape.iter().map(|&b| b as f32).collect::<Vec<_>>());

        // Twist: the file's (cos, sin) as they are, and the Python swing-twist decomposition
        // against ours from the pose.
        let tw = &ann["angle_twist"];
        let (angle, cos, sin) = (floats(&tw["angle"]), floats(&tw["cos"]), floats(&tw["sin"]));
        for k in 0..23 {
            assert_eq!(s.twist[k], [cos[k] as f32, sin[k] as f32], "twist {k}");
            assert!((angle[k].cos() - cos[k]).abs() < 1e-12);
        }
        let pose = floats(&ann["smpl_param"]["pose"]);
        let pose: Vec<Vector3<f64>> = pose
            .chunks_exact(3)
            .map(|p| Vector3::new(p[0], p[1], p[2]))
            .collect();
        let gt = ground_truth(&body.rest_joints29(&shape).unwrap(), &pose);
        for k in 0..23 {
            assert!(
                (gt.twist[k][0] - cos[k]).abs() < 1e-5 && (gt.twist[k][1] - sin[k]).abs() < 1e-5,
                "annotation {i} twist of joint {}: ours {:?}, file ({}, {})",
                k + 1,
                gt.twist[k],
                cos[k],
                sin[k]
            );
        }

        // uvd -> camera gives the file's joints back; uv through the crop gives its pixels.
        let back = back_to_camera(&s, &k);
        let c2f = crop_to_frame(&s);
        for j in 0..24 {
            for a in 0..3 {
                assert!(
                    (back[j][a] - joint_cam[j][a]).abs() < 1e-4,
                    "annotation {i} joint {j}: {:?}",
                    back[j]
                );
            }
            let u = (f64::from(s.uvd[j][0]) + 0.5) * S as f64;
            let v = (f64::from(s.uvd[j][1]) + 0.5) * S as f64;
            let px = c2f.apply([u, v]);
            assert!(
                (px[0] - joint_img[j][0]).abs() < 1e-3 && (px[1] - joint_img[j][1]).abs() < 1e-3,
                "annotation {i} joint {j}: {px:?} vs {:?}",
                joint_img[j]
            );
            assert_eq!(joint_img[j][2], joint_cam[j][2]);
        }

        // The same person-frame of the sequence fixture: the person whose box this is.
        let seq = seqs.iter().find(|s| s["name"] == seq_name).unwrap();
        let people = seq["people"].as_array().unwrap();
        let p = people
            .iter()
            .position(|pp| pp["frames"][frame]["bbox"] == ann["bbox"])
            .unwrap();
        let fr = &people[p]["frames"][frame];
        assert!(fr["valid"].as_bool().unwrap());
        let (jc, rc) = (rows(&fr["joints_cam"]), floats(&fr["root_cam"]));
        for j in 0..24 {
            for a in 0..3 {
                assert!((f64::from(s.joints[j][a]) - (jc[j][a] - rc[a])).abs() < 1e-5);
            }
        }
        assert_eq!(rows(&fr["h36m_cam"]), rows(&ann["h36m_joints"]));
        // ... and the sequence-file loader's sample of it: the same targets (the crops differ by
        // upstream's box convention: w - 1, clipped).
        let q = pw3d
            .get(
                pw3d_index
                    .iter()
                    .position(|x| *x == (seq_name.to_owned(), frame, p))
                    .unwrap(),
            )
            .unwrap();
        for j in 0..24 {
            for a in 0..3 {
                assert!((s.joints[j][a] - q.joints[j][a]).abs() < 1e-6);
            }
            for (x, y) in s.rotations[j].iter().zip(&q.rotations[j]) {
                assert!((x - y).abs() < 1e-6, "annotation {i} rotation {j}");
            }
        }
        for k in 0..23 {
            for a in 0..2 {
                assert!((s.twist[k][a] - q.twist[k][a]).abs() < 1e-6);
            }
        }
        assert_eq!((&s.beta, &s.leaf.len()), (&q.beta, &5));
        assert!((s.root_depth - q.root_depth).abs() < 1e-6);
        matched += 1;
    }
    assert_eq!(matched, 12);
}

#[test]
fn upstream_box_clipped_and_small_boxes_skipped() {
    let mut file = read_json(&json_path());
    let ds = open(&json_path()).unwrap();
    // (x, y, x + w - 1, y + h - 1) inside the 240 x 320 frame: not clipped here.
    let b = floats(&file["annotations"][2]["bbox"]);
    let e = &ds.entries()[2].bbox;
    assert_eq!([e.x, e.y, e.w, e.h], [b[0], b[1], b[2] - 1.0, b[3] - 1.0]);

    // Annotation 0 sticks out of the frame on the left (clipped at x = 0); annotation 1 is 5 px
    // wide (4 after the -1: skipped).
    let b0 = floats(&file["annotations"][0]["bbox"]);
    file["annotations"][0]["bbox"] = serde_json::json!([-20.0, b0[1], b0[0] + b0[2] + 20.0, b0[3]]);
    file["annotations"][1]["bbox"][2] = serde_json::json!(5.0);
    let ds = open(&write_json("boxes", &file)).unwrap();
    assert_eq!((ds.len(), ds.skipped()), (11, 1));
    let e = &ds.entries()[0].bbox;
    assert_eq!([e.x, e.y], [0.0, b0[1]]);
    assert!((e.w - (b0[0] + b0[2] - 1.0)).abs() < 1e-9);
    assert_eq!(ds.entries()[1].annotation_id, 2);
    assert!(ds.get(0).is_ok());
}

#[test]
fn unknown_or_absent_twist_comes_from_the_pose() {
    let mut file = read_json(&json_path());
    // Annotation 0: joint 5's angle unknown (-999, with meaningless cos and sin); annotation 1: no
    // `angle_twist` at all.
    let tw = &mut file["annotations"][0]["angle_twist"];
    tw["angle"][4] = serde_json::json!(-999.0);
    tw["cos"][4] = serde_json::json!(-999.0);
    tw["sin"][4] = serde_json::json!(-999.0);
    file["annotations"][1]
        .as_object_mut()
        .unwrap()
        .remove("angle_twist");
    let ds = open(&write_json("twist", &file)).unwrap();
    let orig = open(&json_path()).unwrap();
    assert!(ds.entries()[0].twist[4].is_none() && ds.entries()[0].twist[3].is_some());
    assert!(ds.entries()[1].twist.iter().all(Option::is_none));
    for i in 0..2 {
        let (a, o) = (ds.get(i).unwrap(), orig.get(i).unwrap());
        for k in 0..23 {
            // From the pose instead of the file: the same to the decomposition's accuracy.
            for c in 0..2 {
                assert!((a.twist[k][c] - o.twist[k][c]).abs() < 1e-5);
            }
            if i == 0 && k != 4 {
                assert_eq!(a.twist[k], o.twist[k]);
            }
        }
        assert_eq!((&a.joints, &a.uvd), (&o.joints, &o.uvd));
    }
}

#[test]
fn errors_name_the_file_and_the_annotation() {
    let text = std::fs::read_to_string(json_path()).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();

    // Truncated file.
    let p = scratch("truncated").join("3DPW_test_new.json");
    std::fs::write(&p, &text[..text.len() / 2]).unwrap();
    let e = format!("{:#}", open(&p).unwrap_err());
    assert!(e.contains(&p.display().to_string()), "{e}");
    assert!(e.contains("EOF"), "{e}");

    // Missing file.
    let missing = scratch("missing").join("nope.json");
    let e = format!("{:#}", open(&missing).unwrap_err());
    assert!(e.contains(&missing.display().to_string()), "{e}");

    // An annotation pointing at an image id that is not in `images`.
    let mut f = file.clone();
    f["annotations"][3]["image_id"] = serde_json::json!(999);
    let p = write_json("image-id", &f);
    let e = format!("{:#}", open(&p).unwrap_err());
    assert!(e.contains(&p.display().to_string()), "{e}");
    assert!(e.contains("annotation 3") && e.contains("999"), "{e}");

    // An image file that is not on disk: found when the sample is read.
    let mut f = file.clone();
    f["images"][0]["file_name"] = serde_json::json!("image_09999.jpg");
    let p = write_json("image-file", &f);
    let ds = open(&p).unwrap();
    let e = format!("{:#}", ds.get(0).unwrap_err());
    assert!(e.contains(&p.display().to_string()), "{e}");
    assert!(e.contains("annotation 0"), "{e}");
    assert!(e.contains("fixture_walk_00/image_09999.jpg"), "{e}");
    assert!(ds.get(1).is_ok());

    // Malformed values.
    for (name, edit, want) in [
        (
            "pose",
            Box::new(|f: &mut Value| {
                f["annotations"][5]["smpl_param"]["pose"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }) as Box<dyn Fn(&mut Value)>,
            "annotation 5: `smpl_param.pose` has 71 values, expected 72",
        ),
        (
            "joints",
            Box::new(|f: &mut Value| {
                f["annotations"][7]["smpl_joint_cam"] = serde_json::json!([[0.0, 0.0, 4.0]]);
            }),
            "annotation 7: `smpl_joint_cam` has 3 values, expected 72 or 87",
        ),
        (
            "twist",
            Box::new(|f: &mut Value| {
                f["annotations"][2]["angle_twist"]["sin"] = serde_json::json!([0.0]);
            }),
            "annotation 2: `angle_twist.sin` has 1 values, expected 23",
        ),
        (
            "string",
            Box::new(|f: &mut Value| {
                f["annotations"][4]["bbox"][1] = serde_json::json!("ten");
            }),
            "annotation 4: invalid type: string \"ten\", expected a number or a (nested) array of numbers",
        ),
        (
            "gender-only",
            Box::new(|f: &mut Value| {
                f["annotations"][9]["smpl_param"] = serde_json::json!({"gender": "male"});
            }),
            "annotation 9: missing field `shape`",
        ),
        (
            "width",
            Box::new(|f: &mut Value| {
                f["images"][2]["width"] = serde_json::json!(-240);
            }),
            "image 2: invalid value: integer `-240`",
        ),
        (
            "focal",
            Box::new(|f: &mut Value| {
                f["images"][6]["cam_param"]["focal"] = serde_json::json!([0.0, 302.0]);
            }),
            "image 6: `cam_param.focal` [0.0, 302.0] is not positive",
        ),
    ] {
        let mut f = file.clone();
        edit(&mut f);
        let p = write_json(name, &f);
        let e = format!("{:#}", open(&p).unwrap_err());
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn flip_mirrors_the_targets() {
    let ds = open(&json_path()).unwrap();
    let flip = Augment {
        enabled: true,
        scale: 0.0,
        rotation_deg: 0.0,
        rotation_prob: 0.0,
        flip_prob: 1.0,
        colour: 0.0,
        occlusion_area: 0.0,
    };
    let pair_of = |j: usize| {
        SMPL24_FLIP_PAIRS
            .iter()
            .find_map(|&(a, b)| (a == j).then_some(b).or((b == j).then_some(a)))
            .unwrap_or(j)
    };
    for i in [0, 6] {
        let o = ds.get(i).unwrap();
        let f = ds.get_augmented(i, &flip, 3).unwrap();
        for j in 0..24 {
            let p = pair_of(j);
            assert_eq!(
                f.joints[j],
                [-o.joints[p][0], o.joints[p][1], o.joints[p][2]]
            );
            assert!((f.uvd[j][0] + o.uvd[p][0]).abs() < 1e-5, "u {j}");
            assert!((f.uvd[j][1] - o.uvd[p][1]).abs() < 1e-5, "v {j}");
            assert!((f.uvd[j][2] - o.uvd[p][2]).abs() < 1e-6, "d {j}");
            if j > 0 {
                // The file's twist, mirrored: sin negated, left/right swapped.
                let t = o.twist[p - 1];
                assert_eq!(f.twist[j - 1], [t[0], -t[1]]);
            }
        }
        assert_eq!((f.root_depth, &f.beta), (o.root_depth, &o.beta));
        // The flipped crop is the mirror image of the unflipped one about the crop centre.
        let mut diff = 0.0;
        let mut n = 0;
        for c in 0..3 {
            for y in 0..S {
                for x in 1..S {
                    diff += (f.image[c * S * S + y * S + x] - o.image[c * S * S + y * S + (S - x)])
                        .abs();
                    n += 1;
                }
            }
        }
        assert!(diff / (n as f32) < 1e-3, "{}", diff / n as f32);
    }
}

/// The trainer takes the JSON through its config (`data.kind = coco`).
#[test]
fn trains_from_the_json() {
    let cfg = ikol_train::config::TrainConfig {
        data: ikol_train::config::DataConfig::Coco {
            json: json_path(),
            image_root: root(),
        },
        body: ikol_train::config::BodyChoice::Default,
        batch_size: 4,
        steps: 1,
        eval_every: 0,
        eval_count: 0,
        checkpoint_every: 0,
        out_dir: std::env::temp_dir().join(format!("ikol-train-coco-{}", std::process::id())),
        ..Default::default()
    };
    let mut tr = ikol_train::train::Trainer::new(cfg, &candle_core::Device::Cpu).unwrap();
    let r = tr.train_step().unwrap();
    assert!(r.losses.total.is_finite() && !r.skipped);
}
