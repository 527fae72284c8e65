//! ikolsolver: exact recovery of a known pose and camera translation, option pass-through,
//! missing upstream, zero people, caps.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gst::prelude::*;
use gstikol::meta::{FrameMeta, Person};
use ikol_body::BodyModel;
use ikol_body::nalgebra::Vector3;
use ikol_solver::sampling::{PoseDistribution, ground_truth, sample_pose};
use ikol_types::rotation::axis_angle_to_matrix;
use ikol_types::{BBox, Intrinsics};
use rand::SeedableRng;

const K: Intrinsics = Intrinsics {
    fx: 800.0,
    fy: 800.0,
    cx: 320.0,
    cy: 240.0,
};

/// A person as ikolbackbone would report them if it were exact: joints of the default model
/// posed by a random pose (root-relative), true twist and leaf rotations, and the pixels of the
/// joints placed at `t` in front of the camera.
fn exact_person(seed: u64, t: Vector3<f64>) -> (Person, Vec<Vector3<f64>>) {
    let model = BodyModel::embedded_default().unwrap();
    let rest = model.rest_joints29(&[0.0; 10]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pose = sample_pose(&mut rng, &PoseDistribution::default());
    let gt = ground_truth(&rest, &pose);
    let j24 = &gt.joints[..24];
    let f = |v: &Vector3<f64>| [v.x as f32, v.y as f32, v.z as f32];
    let p = Person {
        track_id: 1,
        score: 1.0,
        bbox: BBox {
            x: 100.0,
            y: 50.0,
            w: 200.0,
            h: 380.0,
        },
        joints_3d: j24.iter().map(f).collect(),
        joints_2d: j24
            .iter()
            .map(|j| {
                let uv = K.project(&(j + t)).unwrap();
                [uv[0] as f32, uv[1] as f32]
            })
            .collect(),
        twist: gt
            .twist
            .iter()
            .map(|c| [c[0] as f32, c[1] as f32])
            .collect(),
        beta: vec![0.0; 10],
        leaf: gt
            .leaf_rotations
            .iter()
            .map(|q| [q[0] as f32, q[1] as f32, q[2] as f32, q[3] as f32])
            .collect(),
        ..Default::default()
    };
    (p, pose)
}

fn input(people: Vec<Person>) -> FrameMeta {
    FrameMeta {
        stages: vec!["ikolcrop".into(), "ikolbackbone".into()],
        intrinsics: Some(K),
        body_model: None,
        people,
        ..FrameMeta::default()
    }
}

#[test]
fn hybrik_recovers_the_pose_and_the_translation() {
    let t = Vector3::new(0.25, -0.1, 4.0);
    let (person, pose) = exact_person(3, t);
    let (mut h, bus) = harness("ikolsolver", &[("method", "hybrik")], &rgb_caps(64, 48));
    let out = h
        .push_and_pull(frame(64, 48, 0, Some(&input(vec![person]))))
        .unwrap();
    assert!(error_text(&bus).is_none());
    let m = meta_of(&out);
    assert_eq!(m.stages, ["ikolcrop", "ikolbackbone", "ikolsolver"]);
    let p = &m.people[0];
    assert_eq!((p.theta.len(), p.residual.len()), (24, 24));
    // Exact input: HybrIK's analytic solution reproduces the joints (f32 meta precision) ...
    let worst = p.residual.iter().cloned().fold(0f32, f32::max);
    assert!(worst < 1e-4, "max residual {worst} m");
    // ... and the rotations of the joints that the joints determine (the root and the limbs).
    for j in [0usize, 1, 2, 4, 5, 16, 17, 18, 19] {
        let a = p.theta[j];
        let got = axis_angle_to_matrix(&Vector3::<f64>::new(a[0].into(), a[1].into(), a[2].into()));
        let want = axis_angle_to_matrix(&pose[j]);
        let d: f64 = (got.transpose() * want).trace();
        let angle = ((d - 1.0) / 2.0).clamp(-1.0, 1.0).acos();
        assert!(angle < 1e-3, "joint {j}: {angle} rad off");
    }
    // Closed-form translation from the 2D-3D correspondences.
    let tr = p.translation.unwrap();
    for k in 0..3 {
        assert!((f64::from(tr[k]) - t[k]).abs() < 1e-3, "{tr:?} vs {t}");
    }
}

#[test]
fn ikol_options_reach_the_solver() {
    let (person, _) = exact_person(5, Vector3::new(0.0, 0.0, 5.0));
    let mut mean = Vec::new();
    for (iterations, init) in [("0", "zero"), ("5", "zero"), ("5", "analytic")] {
        let props = [
            ("method", "ikol"),
            ("iterations", iterations),
            ("init", init),
        ];
        let (mut h, _) = harness("ikolsolver", &props, &rgb_caps(64, 48));
        let m = meta_of(
            &h.push_and_pull(frame(64, 48, 0, Some(&input(vec![person.clone()]))))
                .unwrap(),
        );
        let r = &m.people[0].residual;
        mean.push(r.iter().sum::<f32>() / r.len() as f32);
    }
    // Gauss-Newton from zero swing angles: 5 iterations fit the exact joints ~10x better than
    // none; started from the analytic solution (exact here) it stays exact.
    assert!(mean[1] < 0.1 * mean[0] && mean[1] < 0.03, "{mean:?}");
    assert!(mean[2] < 1e-4, "{mean:?}");
}

#[test]
fn missing_backbone_zero_people_and_caps() {
    let (mut h, bus) = harness("ikolsolver", &[], &rgb_caps(64, 48));
    let only_crop = FrameMeta {
        stages: vec!["ikolcrop".into()],
        ..Default::default()
    };
    assert_eq!(
        h.push(frame(64, 48, 0, Some(&only_crop))),
        Err(gst::FlowError::Error)
    );
    let e = error_text(&bus).unwrap();
    assert!(e.contains("put ikolbackbone upstream of ikolsolver"), "{e}");

    let (mut h, bus) = harness("ikolsolver", &[], &rgb_caps(64, 48));
    let m = meta_of(
        &h.push_and_pull(frame(64, 48, 0, Some(&input(vec![]))))
            .unwrap(),
    );
    assert!(m.people.is_empty() && m.has_stage("ikolsolver") && error_text(&bus).is_none());

    init();
    let mut h = gst_check::Harness::new("ikolsolver");
    h.set_src_caps_str("audio/x-raw,format=S16LE,rate=48000,channels=1,layout=interleaved");
    assert_eq!(
        h.push(gst::Buffer::from_mut_slice(vec![0u8; 64])),
        Err(gst::FlowError::NotNegotiated)
    );

    let (e, bus) = element("ikolsolver", &[("body-model", "/nonexistent/model.pkl")]);
    assert!(e.set_state(gst::State::Paused).is_err());
    let msg = error_text(&bus).unwrap();
    assert!(msg.contains("/nonexistent/model.pkl"), "{msg}");
    e.set_state(gst::State::Null).unwrap();
}
