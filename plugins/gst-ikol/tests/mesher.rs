//! ikolmesher: the posed mesh lands at the solved translation; options; errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gst::prelude::*;
use gstikol::meta::{FrameMeta, Person};
use ikol_body::BodyModel;
use ikol_types::BBox;

fn solved(theta: Vec<[f32; 3]>, t: [f32; 3]) -> FrameMeta {
    FrameMeta {
        stages: vec![
            "ikolcrop".into(),
            "ikolbackbone".into(),
            "ikolsolver".into(),
        ],
        people: vec![Person {
            track_id: 4,
            score: 1.0,
            bbox: BBox {
                x: 0.0,
                y: 0.0,
                w: 10.0,
                h: 10.0,
            },
            theta,
            beta: vec![1.0, -0.5],
            translation: Some(t),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn mesh_is_placed_at_the_translation() {
    // Root turned half a turn about x (model y-up to camera y-down).
    let mut theta = vec![[0.0f32; 3]; 24];
    theta[0] = [std::f32::consts::PI, 0.0, 0.0];
    let t = [0.3f32, -0.2, 3.5];
    let (mut h, bus) = harness("ikolmesher", &[("body-model", "small")], &rgb_caps(64, 48));
    let m = meta_of(
        &h.push_and_pull(frame(64, 48, 0, Some(&solved(theta.clone(), t))))
            .unwrap(),
    );
    assert!(error_text(&bus).is_none());
    assert_eq!(m.body_model.as_deref(), Some("small"));
    assert!(m.has_stage("ikolmesher"));
    let p = &m.people[0];
    let model = BodyModel::embedded_small().unwrap();
    assert_eq!(
        (p.vertices.len(), p.mesh_joints.len()),
        (model.num_vertices(), 24)
    );
    // The root joint sits at the translation.
    for k in 0..3 {
        assert!((p.mesh_joints[0][k] - t[k]).abs() < 1e-5);
    }
    // Independent check of the placement: with only the root rotated, skinning is the rigid
    // motion v -> R (v - J0) + t of the shaped rest mesh (pose blend shapes depend on the
    // non-root joints only), R a half-turn about x: (x, y, z) -> (x, -y, -z).
    let rest_v = model.shaped_vertices(&[1.0, -0.5]).unwrap();
    let rest_j = model.rest_joints(&[1.0, -0.5]).unwrap();
    let mut worst = 0f64;
    for (i, got) in p.vertices.iter().enumerate() {
        let v = [0, 1, 2].map(|k| f64::from(rest_v[3 * i + k]) - rest_j[0][k]);
        let want = [v[0], -v[1], -v[2]];
        for k in 0..3 {
            worst = worst.max((f64::from(got[k]) - f64::from(t[k]) - want[k]).abs());
        }
    }
    assert!(worst < 1e-5, "worst vertex error {worst} m");
    // Everything is in front of the camera and the body is upright (head above feet: smaller y).
    assert!(p.vertices.iter().all(|v| v[2] > 2.0));
    assert!(p.mesh_joints[15][1] < p.mesh_joints[10][1]);
}

#[test]
fn output_vertices_off_keeps_joints_only() {
    let (mut h, _) = harness(
        "ikolmesher",
        &[("body-model", "small"), ("output-vertices", "false")],
        &rgb_caps(64, 48),
    );
    let m = meta_of(
        &h.push_and_pull(frame(
            64,
            48,
            0,
            Some(&solved(vec![[0.0; 3]; 24], [0.0, 0.0, 3.0])),
        ))
        .unwrap(),
    );
    assert!(m.people[0].vertices.is_empty() && m.people[0].mesh_joints.len() == 24);
    assert!(m.body_model.is_none());
}

#[test]
fn missing_solver_and_bad_model() {
    let (mut h, bus) = harness("ikolmesher", &[("body-model", "small")], &rgb_caps(64, 48));
    let m = FrameMeta {
        stages: vec!["ikolcrop".into(), "ikolbackbone".into()],
        ..Default::default()
    };
    assert_eq!(
        h.push(frame(64, 48, 0, Some(&m))),
        Err(gst::FlowError::Error)
    );
    let e = error_text(&bus).unwrap();
    assert!(e.contains("put ikolsolver upstream of ikolmesher"), "{e}");
    // No meta at all names the same missing element.
    let (mut h, bus) = harness("ikolmesher", &[("body-model", "small")], &rgb_caps(64, 48));
    assert_eq!(h.push(frame(64, 48, 0, None)), Err(gst::FlowError::Error));
    assert!(error_text(&bus).unwrap().contains("ikolsolver"));

    let (e, bus) = element(
        "ikolmesher",
        &[("body-model", "/tmp/ikol-no-such-model.npz")],
    );
    assert!(e.set_state(gst::State::Paused).is_err());
    let msg = error_text(&bus).unwrap();
    assert!(
        msg.contains("ikol-no-such-model.npz") && msg.contains("ikolmesher"),
        "{msg}"
    );
    e.set_state(gst::State::Null).unwrap();
}

/// Extreme upstream values never give non-finite or absurd vertices (issue 19): a beta of
/// 1e38 (which overflows f32 vertices) is clipped to +-10, the same as a beta of 10; a NaN
/// beta gives no mesh, and the element goes on.
#[test]
fn extreme_shapes_are_clipped_non_finite_ones_dropped() {
    let (mut h, bus) = harness("ikolmesher", &[("body-model", "small")], &rgb_caps(64, 48));
    let mesh = |h: &mut gst_check::Harness, beta: Vec<f32>, i: u8| {
        let mut m = solved(vec![[0.0; 3]; 24], [0.0, 0.0, 3.0]);
        m.people[0].beta = beta;
        meta_of(&h.push_and_pull(frame(64, 48, i, Some(&m))).unwrap()).people[0].clone()
    };
    let huge = mesh(&mut h, vec![1e38, -1e38], 0);
    let ten = mesh(&mut h, vec![10.0, -10.0], 1);
    assert!(!huge.vertices.is_empty() && huge.vertices.iter().flatten().all(|x| x.is_finite()));
    assert_eq!(huge.vertices, ten.vertices);
    let nan = mesh(&mut h, vec![f32::NAN, 0.0], 2);
    assert!(nan.vertices.is_empty() && nan.mesh_joints.is_empty());
    assert!(error_text(&bus).is_none(), "a warning, not an error");
}
