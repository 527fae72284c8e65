//! The 3DPW reader and the ground truth in camera coordinates, against the fixture tree written
//! by tests/data/3dpw/gen_3dpw_fixture.py (Python 2 protocol-2 pickles; `expected.json` holds
//! the same values and smplx's LBS of the default body model in camera coordinates).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_eval::pw3d::{self, DatasetError, Sequence};
use ikol_types::rotation::axis_angle_to_matrix;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/3dpw")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(root().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn load(seq: &Value) -> Sequence {
    let name = seq["name"].as_str().unwrap();
    Sequence::load(&root().join(format!("sequenceFiles/test/{name}.pkl"))).unwrap()
}

#[test]
fn sequence_files_load_exactly() {
    let exp = expected();
    for es in exp["sequences"].as_array().unwrap() {
        let s = load(es);
        assert_eq!(s.name, es["name"].as_str().unwrap());
        let n = es["num_frames"].as_u64().unwrap() as usize;
        assert_eq!(s.num_frames(), n);
        let k = floats(&es["intrinsics"]);
        assert_eq!(
            [
                s.intrinsics.fx,
                s.intrinsics.fy,
                s.intrinsics.cx,
                s.intrinsics.cy
            ],
            [k[0], k[1], k[2], k[3]]
        );
        let ids: Vec<u64> = es["img_frame_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(s.img_frame_ids, ids);
        for (i, cp) in es["cam_poses"].as_array().unwrap().iter().enumerate() {
            let rows: Vec<Vec<f64>> = cp.as_array().unwrap().iter().map(floats).collect();
            let (r, t) = &s.cam_poses[i];
            for a in 0..3 {
                assert_eq!(t[a], rows[a][3]);
                for b in 0..3 {
                    assert_eq!(r[(a, b)], rows[a][b]);
                }
            }
        }
        let people = es["people"].as_array().unwrap();
        assert_eq!(s.people.len(), people.len());
        for (sp, ep) in s.people.iter().zip(people) {
            assert_eq!(sp.gender, ep["gender"].as_str().unwrap());
            assert_eq!(sp.betas, floats(&ep["betas"]));
            for (i, fr) in ep["frames"].as_array().unwrap().iter().enumerate() {
                assert_eq!(sp.valid[i], fr["valid"].as_bool().unwrap());
                assert_eq!(sp.poses[i].to_vec(), floats(&fr["poses"]));
                assert_eq!(sp.trans[i].to_vec(), floats(&fr["trans"]));
                let kp: Vec<Vec<f64>> = fr["poses2d"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(floats)
                    .collect();
                for j in 0..18 {
                    for c in 0..3 {
                        assert_eq!(sp.keypoints[i][j][c], kp[c][j], "poses2d[{c}][{j}]");
                    }
                }
            }
        }
    }
}

#[test]
fn ground_truth_boxes_follow_the_keypoints() {
    let exp = expected();
    for es in exp["sequences"].as_array().unwrap() {
        let s = load(es);
        for (p, ep) in es["people"].as_array().unwrap().iter().enumerate() {
            for (i, fr) in ep["frames"].as_array().unwrap().iter().enumerate() {
                let b = s.bbox(p, i).unwrap();
                let e = floats(&fr["bbox"]);
                for (got, want) in [b.x, b.y, b.w, b.h].iter().zip(&e) {
                    assert!(
                        (got - want).abs() < 1e-9,
                        "{} {p} {i}: {b:?} vs {e:?}",
                        s.name
                    );
                }
            }
        }
    }
}

/// Our camera-frame ground truth (reader + `camera_pose` + our LBS + `root_in_camera`) against
/// smplx's LBS of the same model transformed by the generator.
#[test]
fn camera_frame_ground_truth_matches_smplx() {
    let model = BodyModel::embedded_default().unwrap();
    let exp = expected();
    let mut checked = 0;
    for es in exp["sequences"].as_array().unwrap() {
        let s = load(es);
        for (p, ep) in es["people"].as_array().unwrap().iter().enumerate() {
            for (i, fr) in ep["frames"].as_array().unwrap().iter().enumerate() {
                let gt = s.camera_pose(p, i);
                let want_root = Vector3::from_vec(floats(&fr["global_orient_cam"]));
                let r0 = axis_angle_to_matrix(&Vector3::from(gt.theta[0]));
                assert!((r0 - axis_angle_to_matrix(&want_root)).norm() < 1e-9);
                let rots: Vec<Matrix3<f64>> = gt
                    .theta
                    .iter()
                    .map(|t| axis_angle_to_matrix(&Vector3::from(*t)))
                    .collect();
                let posed = model.forward(&gt.betas, &rots).unwrap();
                let root = s.root_in_camera(p, i, &posed.joints[0]);
                let want_rc = Vector3::from_vec(floats(&fr["root_cam"]));
                assert!((root - want_rc).norm() < 1e-6, "root {root} vs {want_rc}");
                let offset = root - posed.joints[0];
                for (j, w) in fr["joints_cam"].as_array().unwrap().iter().enumerate() {
                    let w = Vector3::from_vec(floats(w));
                    let got = posed.joints[j] + offset;
                    assert!((got - w).norm() < 1e-6, "{} p{p} f{i} joint {j}", s.name);
                }
                let verts: Vec<[f32; 3]> = posed
                    .vertices
                    .iter()
                    .map(|v| {
                        let c = Vector3::from(v.map(f64::from)) + offset;
                        [c.x as f32, c.y as f32, c.z as f32]
                    })
                    .collect();
                let h36m = model.regress_h36m(&verts).unwrap();
                for (j, w) in fr["h36m_cam"].as_array().unwrap().iter().enumerate() {
                    let w = Vector3::from_vec(floats(w));
                    // f32 vertices 4 m from the camera: ~1e-6 relative
                    assert!((h36m[j] - w).norm() < 2e-5, "{} h36m {j}", s.name);
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 13);
}

#[test]
fn split_and_sequence_selection() {
    let all = pw3d::sequence_files(&root(), "test", "all").unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["fixture_pair_01", "fixture_walk_00"]);
    // A comma list (a shard's sequences) picks those, in the sorted order.
    let two = pw3d::sequence_files(&root(), "test", "fixture_walk_00, fixture_pair_01").unwrap();
    assert_eq!(two, all);
    let e = pw3d::sequence_files(&root(), "test", "fixture_walk_00,nope").unwrap_err();
    assert!(e.to_string().contains("no sequence `nope`"), "{e}");
    let one = pw3d::sequence_files(&root(), "test", "fixture_walk_00").unwrap();
    assert_eq!(one.len(), 1);
    let e = pw3d::sequence_files(&root(), "test", "nope").unwrap_err();
    assert!(e.to_string().contains("no sequence `nope`"), "{e}");
    let e = pw3d::sequence_files(&root(), "tset", "all").unwrap_err();
    assert!(e.to_string().contains("unknown split `tset`"), "{e}");
    let e = pw3d::sequence_files(&root(), "train", "all").unwrap_err();
    assert!(e.to_string().contains("sequenceFiles/train"), "{e}");
    assert_eq!(
        pw3d::image_path(&root(), "fixture_walk_00", 3),
        root().join("imageFiles/fixture_walk_00/image_00003.jpg")
    );
}

#[test]
fn truncated_and_malformed_pickles_are_named_errors() {
    let dir = std::env::temp_dir().join(format!("ikol-pw3d-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(root().join("sequenceFiles/test/fixture_walk_00.pkl")).unwrap();

    let cut = dir.join("cut.pkl");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let e = Sequence::load(&cut).unwrap_err();
    assert!(matches!(e, DatasetError::Pickle { .. }), "{e:?}");
    assert!(e.to_string().contains("cut.pkl"), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");

    // A valid pickle of something else: a dict without the 3DPW keys.
    let other = dir.join("other.pkl");
    std::fs::write(&other, b"\x80\x02}q\x00U\x01aK\x01s.").unwrap();
    let e = Sequence::load(&other).unwrap_err().to_string();
    assert!(
        e.contains("other.pkl") && e.contains("no `sequence`"),
        "{e}"
    );

    let missing = dir.join("missing.pkl");
    let e = Sequence::load(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.pkl"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
