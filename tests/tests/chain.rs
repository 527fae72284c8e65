//! The whole chain on a rendered frame: the default body model drawn by ikol-render at a known
//! pose and camera, then ikolcrop ! ikolbackbone (tiny upstream-format checkpoint) ! ikolsolver
//! ! ikolmesher ! ikoloverlay ! ikolexport, fed by appsrc and drained by appsink.
#![allow(clippy::unwrap_used)]

use anyhow::{Context, Result};
use gst::prelude::*;
use gstikol::meta::FrameMeta;
use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_render::{DepthBuffer, Frame, MeshStyle, PixelFormat, draw_mesh};
use ikol_types::rotation::axis_angle_to_matrix;
use ikol_types::{BBox, FrameResult, Intrinsics};

const W: usize = 320;
const H: usize = 240;

/// The default body, upright in the camera (half-turn about x), arms lowered 45 degrees,
/// root 3 m in front of the camera; returns the RGB frame and the box around the silhouette.
fn rendered_person(k: &Intrinsics) -> Result<(Vec<u8>, BBox)> {
    let model = BodyModel::embedded_default()?;
    let mut rot = vec![Matrix3::<f64>::identity(); 24];
    rot[0] = axis_angle_to_matrix(&Vector3::new(std::f64::consts::PI, 0.0, 0.0));
    rot[16] = axis_angle_to_matrix(&Vector3::new(0.0, 0.0, -std::f64::consts::FRAC_PI_4));
    rot[17] = axis_angle_to_matrix(&Vector3::new(0.0, 0.0, std::f64::consts::FRAC_PI_4));
    let posed = model.forward(&[0.0; 10], &rot)?;
    let root = posed.joints[0];
    let verts: Vec<[f32; 3]> = posed
        .vertices
        .iter()
        .map(|v| {
            [
                (f64::from(v[0]) - root.x) as f32,
                (f64::from(v[1]) - root.y) as f32,
                (f64::from(v[2]) - root.z + 3.0) as f32,
            ]
        })
        .collect();
    let mut px = vec![90u8; W * H * 3];
    let mut frame = Frame::new(&mut px, W, H, 3 * W, PixelFormat::Rgb)?;
    let mut depth = DepthBuffer::new(W, H);
    draw_mesh(
        &mut frame,
        &mut depth,
        k,
        &verts,
        &model.faces,
        &MeshStyle::default(),
    )?;
    let bbox = BBox::around_points(
        verts
            .iter()
            .filter_map(|v| k.project(&Vector3::new(v[0].into(), v[1].into(), v[2].into()))),
        1.0,
    )
    .context("no projected vertices")?;
    Ok((px, bbox))
}

#[test]
fn full_chain_on_a_rendered_person() -> Result<()> {
    gst::init()?;
    gstikol::plugin_register_static()?;
    let k = Intrinsics::from_hfov(W as u32, H as u32, 60.0);
    let (px, bbox) = rendered_person(&k)?;
    assert!(bbox.h > 100.0, "person is {} px tall", bbox.h);
    let json = std::env::temp_dir().join(format!("ikol-chain-{}.jsonl", std::process::id()));
    let ckpt = format!(
        "{}/../elements/backbone/tests/data/ikol24_r34w2.pth",
        env!("CARGO_MANIFEST_DIR")
    );
    let line = format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={W},height={H},framerate=10/1 \
         ! ikolcrop roi=\"{},{},{},{}\" ! ikolbackbone checkpoint=\"{ckpt}\" fov=60 \
         ! ikolsolver method=ikol ! ikolmesher body-model=default ! ikoloverlay mode=all \
         ! ikolexport location=\"{}\" ! appsink name=sink sync=false",
        bbox.x,
        bbox.y,
        bbox.w,
        bbox.h,
        json.display()
    );
    let pipeline = gst::parse::launch(&line)?
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing)?;
    for i in 0..2u64 {
        let mut buf = gst::Buffer::from_mut_slice(px.clone());
        buf.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(100 * i));
        src.push_buffer(buf)?;
    }
    src.end_of_stream()?;
    let mut outs = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(60)) {
        outs.push(s);
    }
    let bus = pipeline.bus().unwrap();
    let err = bus.pop_filtered(&[gst::MessageType::Error]);
    pipeline.set_state(gst::State::Null)?;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(outs.len(), 2);

    // Every stage ran and left its part in the meta.
    let out = outs[0].buffer().unwrap();
    let m = FrameMeta::read(out)?.unwrap();
    for stage in ["ikolcrop", "ikolbackbone", "ikolsolver", "ikolmesher"] {
        assert!(m.has_stage(stage), "{stage} missing from {:?}", m.stages);
    }
    let p = &m.people[0];
    let model = BodyModel::embedded_default()?;
    assert_eq!(p.vertices.len(), model.num_vertices());
    assert_eq!((p.theta.len(), p.mesh_joints.len()), (24, 24));
    // The overlay drew into the frame (box outline at least, mesh where it is in view).
    let map = out.map_readable()?;
    let changed = map.iter().zip(&px).filter(|(a, b)| a != b).count();
    assert!(changed > 500, "overlay changed {changed} bytes");

    // ikolexport wrote one JSON object per frame with the documented fields.
    let text = std::fs::read_to_string(&json)?;
    let _ = std::fs::remove_file(&json);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        let person = &v["people"][0];
        for key in [
            "track_id",
            "bbox",
            "score",
            "joints_3d",
            "joints_2d",
            "theta",
            "beta",
            "translation",
        ] {
            assert!(!person[key].is_null(), "line {i}: no {key} in {l}");
        }
        assert!(
            person["vertices"].is_null(),
            "vertices only with vertices=true"
        );
        let f: FrameResult = serde_json::from_str(l)?;
        assert_eq!(f.frame, i as u64);
        assert_eq!(f.pts_ns, Some(100_000_000 * i as u64));
        assert_eq!(f.people[0].theta.len(), 24);
        assert_eq!(f.people[0].track_id, 1, "same person, same track");
    }
    Ok(())
}
