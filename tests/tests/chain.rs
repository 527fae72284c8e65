//! The whole chain on a rendered frame: the default body model drawn by ikol-render at a known
//! pose and camera, then ikolcrop ! ikolbackbone (tiny upstream-format checkpoint) ! ikolsolver
//! ! ikolmesher ! ikoloverlay ! ikolexport, fed by appsrc and drained by appsink.
#![allow(clippy::unwrap_used)]

use anyhow::{Context, Result};
use gst::prelude::*;
use gstikol::meta::FrameMeta;
use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_render::{Canvas, Frame, MeshStyle, PixelFormat, draw_mesh};
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
    let mut depth = Canvas::new(W, H);
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

/// The BlazePose chain on three real frames (pose2sim's clip, downscaled to 540x960):
/// pngdec ! ikolcrop detector=blazepose ! ikolbackbone model=blazepose !
/// ikolsolver ! ikolmesher. The solved, meshed body must sit where BlazePose saw it: the joints
/// of the posed mesh, projected with the frame's intrinsics, land on the 2D joints. Needs the
/// models (`make models`); without them the test says so and passes.
#[test]
fn blazepose_chain_on_real_frames() -> Result<()> {
    let models = ikol_detect::blazepose_model::models_dir();
    if !models
        .join(ikol_detect::blazepose_model::LANDMARK_FILE)
        .is_file()
    {
        eprintln!(
            "SKIPPED: no BlazePose models in {} (run `make models`)",
            models.display()
        );
        return Ok(());
    }
    gst::init()?;
    gstikol::plugin_register_static()?;
    let mut metas = Vec::new();
    for frame in ["frame_000.png", "frame_050.png", "frame_099.png"] {
        let path = format!(
            "{}/../elements/detect/tests/data/pose2sim/{frame}",
            env!("CARGO_MANIFEST_DIR")
        );
        // The clip's calibrated focal length is 1681 px at 1080 wide: 840.5 px at 540.
        let line = format!(
            "filesrc location=\"{path}\" ! pngdec ! videoconvert ! video/x-raw,format=RGB \
             ! ikolcrop detector=blazepose max-people=1 \
             ! ikolbackbone model=blazepose focal-length=840.5 \
             ! ikolsolver method=ikol init=analytic ! ikolmesher ! appsink name=sink sync=false"
        );
        let pipeline = gst::parse::launch(&line)?
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing)?;
        while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(60)) {
            metas.push(FrameMeta::read(s.buffer().unwrap())?.unwrap());
        }
        let err = pipeline
            .bus()
            .unwrap()
            .pop_filtered(&[gst::MessageType::Error]);
        pipeline.set_state(gst::State::Null)?;
        assert!(err.is_none(), "{frame}: {err:?}");
    }
    assert_eq!(metas.len(), 3);
    for m in &metas {
        assert_eq!(m.people.len(), 1, "one person in the clip");
        let p = &m.people[0];
        let k = m.intrinsics.unwrap();
        assert_eq!(p.mesh_joints.len(), 24);
        let t = p.translation.unwrap();
        assert!((2.0..8.0).contains(&t[2]), "root depth {} m", t[2]);
        // Reprojection of the mesh joints onto the 2D joints, pixels at 540x960.
        let err: f64 = p
            .mesh_joints
            .iter()
            .zip(&p.joints_2d)
            .map(|(j, uv)| {
                let j = Vector3::new(f64::from(j[0]), f64::from(j[1]), f64::from(j[2]));
                let q = k.project(&j).unwrap();
                ((q[0] - f64::from(uv[0])).powi(2) + (q[1] - f64::from(uv[1])).powi(2)).sqrt()
            })
            .sum::<f64>()
            / 24.0;
        eprintln!("mean reprojection error {err:.1} px, root {t:?}");
        assert!(err < 25.0, "mean reprojection error {err:.1} px");
        // Upright: the head is above the ankles in the image.
        assert!(p.joints_2d[15][1] < p.joints_2d[7][1] && p.joints_2d[15][1] < p.joints_2d[8][1]);
    }
    Ok(())
}
