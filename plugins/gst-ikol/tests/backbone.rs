//! ikolbackbone: a tiny upstream-format checkpoint on a real frame; camera geometry of the
//! outputs; tracking feedback upstream; errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gst::prelude::*;
use gstikol::meta::{self, FrameMeta, Person};
use ikol_types::{BBox, Intrinsics};

fn checkpoint() -> String {
    format!(
        "{}/../../elements/backbone/tests/data/ikol24_r34w2.pth",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A 320x240 RGB frame with a gradient (so the crop is not uniform) and ikolcrop's meta for one
/// person.
fn input(intrinsics: Option<Intrinsics>) -> gst::Buffer {
    let (w, h) = (320usize, 240usize);
    let mut px = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let i = 3 * (y * w + x);
            px[i] = (x * 255 / w) as u8;
            px[i + 1] = (y * 255 / h) as u8;
            px[i + 2] = ((x + y) % 256) as u8;
        }
    }
    let mut buf = gst::Buffer::from_mut_slice(px);
    let m = FrameMeta {
        stages: vec!["ikolcrop".into()],
        intrinsics,
        people: vec![Person::new(
            7,
            BBox {
                x: 100.0,
                y: 20.0,
                w: 100.0,
                h: 200.0,
            },
            0.9,
        )],
        ..Default::default()
    };
    m.write(buf.get_mut().unwrap()).unwrap();
    buf
}

#[test]
fn fills_joints_twist_shape_leaf_in_camera_geometry() {
    let (mut h, bus) = harness(
        "ikolbackbone",
        &[("checkpoint", &checkpoint()), ("fov", "60")],
        &rgb_caps(320, 240),
    );
    let out = h.push_and_pull(input(None)).unwrap();
    assert!(error_text(&bus).is_none());
    let m = meta_of(&out);
    assert_eq!(m.stages, ["ikolcrop", "ikolbackbone"]);
    // Intrinsics from the 60 degree horizontal field of view: fx = (320/2) / tan(30 deg), principal
    // point at the centre of the pixel grid ((W - 1) / 2, (H - 1) / 2).
    let k = m.intrinsics.unwrap();
    assert!(
        (k.fx - 160.0 / (30f64.to_radians()).tan()).abs() < 1e-9 && k.cx == 159.5 && k.cy == 119.5
    );
    let p = &m.people[0];
    assert_eq!(
        (
            p.joints_uvd.len(),
            p.joints_3d.len(),
            p.joints_2d.len(),
            p.twist.len(),
            p.beta.len(),
            p.leaf.len()
        ),
        (24, 24, 24, 23, 10, 5)
    );
    // Pixels and metres agree: root + joint projects onto the joint's pixel (pinhole).
    let root = p.root.unwrap();
    assert!(root[2] > 0.0);
    for (j, uv) in p.joints_3d.iter().zip(&p.joints_2d) {
        let c = [0, 1, 2].map(|i| f64::from(root[i]) + f64::from(j[i]));
        let u = k.fx * c[0] / c[2] + k.cx;
        let v = k.fy * c[1] / c[2] + k.cy;
        assert!(
            (u - f64::from(uv[0])).abs() < 0.05 && (v - f64::from(uv[1])).abs() < 0.05,
            "{u},{v} vs {uv:?}"
        );
    }
    // The root joint is the origin of the root-relative joints.
    assert!(p.joints_3d[0].iter().all(|x| x.abs() < 1e-6));
    // The box around the joints went upstream for tracking, under the person's track id.
    let mut fed = None;
    while let Some(ev) = h.try_pull_upstream_event() {
        if let Some(t) = meta::parse_feedback(&ev) {
            fed = Some(t);
        }
    }
    let fed = fed.expect("a feedback event");
    assert_eq!(fed.len(), 1);
    assert_eq!(fed[0].0, 7);
    let b = fed[0].1;
    for uv in &p.joints_2d {
        let (u, v) = (f64::from(uv[0]), f64::from(uv[1]));
        assert!(u >= b.x && u <= b.x + b.w && v >= b.y && v <= b.y + b.h);
    }
}

#[test]
fn intrinsics_from_the_source_win() {
    let k = Intrinsics {
        fx: 1000.0,
        fy: 1000.0,
        cx: 150.0,
        cy: 130.0,
    };
    let (mut h, _) = harness(
        "ikolbackbone",
        &[("checkpoint", &checkpoint()), ("focal-length", "300")],
        &rgb_caps(320, 240),
    );
    let m = meta_of(&h.push_and_pull(input(Some(k))).unwrap());
    assert_eq!(m.intrinsics, Some(k));
    // Without source intrinsics, focal-length beats fov.
    let m = meta_of(&h.push_and_pull(input(None)).unwrap());
    assert_eq!(m.intrinsics.unwrap().fx, 300.0);
}

#[test]
fn errors_name_the_problem() {
    // No crop upstream.
    let (mut h, bus) = harness(
        "ikolbackbone",
        &[("checkpoint", &checkpoint())],
        &rgb_caps(320, 240),
    );
    assert_eq!(h.push(frame(320, 240, 0, None)), Err(gst::FlowError::Error));
    let e = error_text(&bus).unwrap();
    assert!(e.contains("put ikolcrop upstream of ikolbackbone"), "{e}");
    // No checkpoint, a missing file, a checkpoint of the other variant, no CUDA in this build.
    let ck = checkpoint();
    for (props, expect) in [
        (vec![], "no checkpoint set".to_owned()),
        (
            vec![("checkpoint", "/nonexistent/w.pth")],
            "/nonexistent/w.pth".to_owned(),
        ),
        (
            vec![("checkpoint", ck.as_str()), ("variant", "hybrik29")],
            "ikol24_r34w2.pth".to_owned(),
        ),
        (
            vec![("checkpoint", ck.as_str()), ("device", "cuda")],
            "cuda".to_owned(),
        ),
    ] {
        let (e, bus) = element("ikolbackbone", &props);
        assert!(e.set_state(gst::State::Paused).is_err());
        let msg = error_text(&bus).unwrap();
        assert!(
            msg.contains(&expect) && msg.contains("ikolbackbone"),
            "{msg}"
        );
        e.set_state(gst::State::Null).unwrap();
    }
    // Zero people: the meta passes with the stage marked and nothing computed.
    let (mut h, _) = harness(
        "ikolbackbone",
        &[("checkpoint", &checkpoint())],
        &rgb_caps(320, 240),
    );
    let empty = FrameMeta {
        stages: vec!["ikolcrop".into()],
        ..Default::default()
    };
    let m = meta_of(&h.push_and_pull(frame(320, 240, 0, Some(&empty))).unwrap());
    assert!(m.people.is_empty() && m.has_stage("ikolbackbone"));
}

/// A tiny regressor checkpoint of `kind` with fresh weights, written once per process.
fn regressor_checkpoint(kind: ikol_backbone::RegressorKind) -> String {
    let path = std::env::temp_dir().join(format!(
        "ikol-backbone-test-{}-{}.safetensors",
        kind.name(),
        std::process::id()
    ));
    if !path.exists() {
        let cfg = ikol_backbone::RegressorNetConfig::tiny(kind);
        ikol_backbone::DirectRegressor::initialised(&cfg, &cpu())
            .unwrap()
            .save(&path)
            .unwrap();
    }
    path.display().to_string()
}

fn cpu() -> ikol_backbone::candle::Device {
    ikol_backbone::open_device(ikol_backbone::DeviceChoice::Cpu).unwrap()
}

#[test]
fn a_body_regressor_writes_the_body_in_camera_geometry() {
    for (model, kind) in [
        ("hkmr", ikol_backbone::RegressorKind::Hkmr),
        ("hmr", ikol_backbone::RegressorKind::Flat),
    ] {
        let ck = regressor_checkpoint(kind);
        let (mut h, bus) = harness(
            "ikolbackbone",
            &[
                ("model", model),
                ("checkpoint", &ck),
                ("body-model", "small"),
                ("fov", "60"),
            ],
            &rgb_caps(320, 240),
        );
        let out = h.push_and_pull(input(None)).unwrap();
        assert!(error_text(&bus).is_none());
        let m = meta_of(&out);
        let k = m.intrinsics.unwrap();
        let p = &m.people[0];
        assert_eq!(
            (
                p.theta.len(),
                p.joints_3d.len(),
                p.joints_2d.len(),
                p.beta.len()
            ),
            (24, 24, 24, 10)
        );
        // Untrained, the network stays near its start: upright (root about pi around x).
        assert!(
            (p.theta[0][0] - std::f32::consts::PI).abs() < 0.5,
            "{:?}",
            p.theta[0]
        );
        let t = p.translation.unwrap();
        assert_eq!(p.root, Some(t));
        // Depth from the weak camera: 2 f / (s L), s about 0.9, L = 1.25 x 200 px.
        let z = 2.0 * k.fx / (0.9 * 250.0);
        assert!((f64::from(t[2]) / z - 1.0).abs() < 0.2, "{t:?} vs {z}");
        // Pixels and metres agree (pinhole) and the root joint is the origin.
        assert!(p.joints_3d[0].iter().all(|x| x.abs() < 1e-6));
        for (j, uv) in p.joints_3d.iter().zip(&p.joints_2d) {
            let c = [0, 1, 2].map(|i| f64::from(t[i]) + f64::from(j[i]));
            let u = k.fx * c[0] / c[2] + k.cx;
            let v = k.fy * c[1] / c[2] + k.cy;
            assert!((u - f64::from(uv[0])).abs() < 0.05 && (v - f64::from(uv[1])).abs() < 0.05);
        }
        // Upright: the head (15) above the pelvis in the image, the feet (10, 11) below.
        assert!(p.joints_2d[15][1] < p.joints_2d[0][1] && p.joints_2d[10][1] > p.joints_2d[0][1]);
    }
}

#[test]
fn body_regressor_errors_name_the_problem() {
    let hkmr = regressor_checkpoint(ikol_backbone::RegressorKind::Hkmr);
    for (props, expect) in [
        (vec![("model", "hkmr")], "needs checkpoint".to_owned()),
        (
            vec![("model", "hkmr"), ("checkpoint", checkpoint().as_str())],
            "ikol24_r34w2.pth".to_owned(),
        ),
        (
            vec![("model", "hmr"), ("checkpoint", hkmr.as_str())],
            "holds a hkmr regressor".to_owned(),
        ),
    ] {
        let (e, bus) = element("ikolbackbone", &props);
        assert!(e.set_state(gst::State::Paused).is_err());
        let msg = error_text(&bus).unwrap();
        assert!(
            msg.contains(&expect) && msg.contains("ikolbackbone"),
            "{msg}"
        );
        e.set_state(gst::State::Null).unwrap();
    }
}

/// `ikolsolver method=none` keeps the regressor's body and writes its joints and box; the IK
/// methods refuse it (no twist) and leave the person without a body.
#[test]
fn the_solver_keeps_a_regressed_body() {
    let ck = regressor_checkpoint(ikol_backbone::RegressorKind::Hkmr);
    for (method, kept) in [("none", true), ("ikol", false)] {
        init();
        let line = format!(
            "ikolbackbone model=hkmr checkpoint=\"{ck}\" body-model=small fov=60 \
             ! ikolsolver method={method} body-model=small"
        );
        let mut h = gst_check::Harness::new_parse(&line);
        h.set_src_caps_str(&rgb_caps(320, 240));
        let m = meta_of(&h.push_and_pull(input(None)).unwrap());
        let p = &m.people[0];
        assert_eq!(p.mesh_joints.len() == 24, kept, "{method}");
        if kept {
            let t = p.translation.unwrap();
            for (mj, j) in p.mesh_joints.iter().zip(&p.joints_3d) {
                for c in 0..3 {
                    assert!(
                        (mj[c] - (t[c] + j[c])).abs() < 1e-3,
                        "{mj:?} vs {j:?} + {t:?}"
                    );
                }
            }
            assert!(p.person_box.is_some());
        }
    }
}

/// The pads offer I420 (read without conversion) only to BlazePose; the other networks read
/// packed RGB, so an upstream `videoconvert` converts for them.
#[test]
fn i420_only_for_blazepose() {
    init();
    for (model, i420) in [("blazepose", true), ("heatmap", false), ("hkmr", false)] {
        let (e, _bus) = element("ikolbackbone", &[("model", model)]);
        for pad in ["sink", "src"] {
            let caps = e.static_pad(pad).unwrap().query_caps(None);
            let formats: Vec<String> = caps
                .iter()
                .flat_map(|s| {
                    s.get::<gst::List>("format")
                        .map(|l| l.iter().filter_map(|v| v.get::<String>().ok()).collect())
                        .or_else(|_| s.get::<String>("format").map(|f| vec![f]))
                        .unwrap_or_default()
                })
                .collect();
            assert!(
                formats.contains(&"RGB".to_string()),
                "{model} {pad}: {caps}"
            );
            assert_eq!(
                formats.contains(&"I420".to_string()),
                i420,
                "{model} {pad}: {caps}"
            );
        }
    }
}
