// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikolexport` through `gst_check::Harness`: JSON lines in a file, bus messages, vertices on
//! request, and the errors for an uncreatable file, a full disk and a missing upstream.

use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, anyhow, ensure};
use gst::glib;
use gst::prelude::*;
use gst_check::Harness;
use gstikol::meta::{FrameMeta, Person};
use ikol_types::{BBox, FrameResult, Intrinsics};

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("gst::init");
        gstikol::plugin_register_static().expect("register the ikol plugin");
    });
}

/// A fresh path in the temp dir (removed by the caller).
fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "ikolexport-{}-{tag}-{}.jsonl",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn person(track_id: u64, k: f32) -> Person {
    Person {
        track_id,
        score: 0.5 + 0.1 * f64::from(k),
        bbox: BBox {
            x: 10.0 * f64::from(k),
            y: 20.0,
            w: 30.5,
            h: 60.25,
        },
        joints_3d: (0..24).map(|j| [j as f32 * 0.01, -k, 0.125]).collect(),
        joints_2d: (0..24).map(|j| [j as f32 + 0.5, k * 3.0]).collect(),
        theta: (0..24).map(|j| [0.1 * k, j as f32 * 0.02, -0.3]).collect(),
        beta: (0..10).map(|b| b as f32 * 0.1 - k).collect(),
        translation: Some([0.1, -0.2, 3.0 + k]),
        residual: vec![0.001 * k; 24],
        vertices: (0..5).map(|v| [v as f32, k, 2.5]).collect(),
        mesh_joints: (0..24)
            .map(|j| [j as f32 * 0.02, 0.1 - k, 3.0 + k])
            .collect(),
        person_box: Some(BBox {
            x: 12.0 * f64::from(k),
            y: 21.0,
            w: 20.0,
            h: 40.0,
        }),
        ..Default::default()
    }
}

/// Frame i: i+1 people for i < 2, none in frame 2; pts 40 ms apart, none on frame 2.
fn frame_meta(i: u64) -> FrameMeta {
    let people = if i < 2 {
        (0..=i).map(|p| person(p + 7, (i * 2 + p) as f32)).collect()
    } else {
        Vec::new()
    };
    FrameMeta {
        stages: vec![
            "ikolcrop".into(),
            "ikolbackbone".into(),
            "ikolsolver".into(),
        ],
        intrinsics: Some(Intrinsics {
            fx: 300.0,
            fy: 300.0,
            cx: 32.0,
            cy: 24.0,
        }),
        body_model: Some("small".into()),
        people,
        ..FrameMeta::default()
    }
}

fn pts(i: u64) -> Option<gst::ClockTime> {
    (i < 2).then(|| gst::ClockTime::from_mseconds(40 * i))
}

fn buffer(meta: Option<&FrameMeta>, pts: Option<gst::ClockTime>) -> Result<gst::Buffer> {
    let mut buf = gst::Buffer::from_mut_slice(vec![17u8; 64 * 48 * 3]);
    {
        let b = buf.get_mut().context("fresh buffer is writable")?;
        b.set_pts(pts);
        if let Some(m) = meta {
            m.write(b)?;
        }
    }
    Ok(buf)
}

/// An ikolexport in a harness, with `props` set before it starts and a bus to read.
fn harness(props: &[(&str, glib::Value)]) -> Result<(Harness, gst::Bus)> {
    let el = gst::ElementFactory::make("ikolexport").build()?;
    for (name, value) in props {
        // Strings for non-string properties (enums) as a launch line gives them.
        match (value.get::<&str>(), el.find_property(name)) {
            (Ok(v), Some(p)) if p.value_type() != String::static_type() => {
                el.set_property_from_str(name, v)
            }
            _ => el.set_property_from_value(name, value),
        }
    }
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=RGB,width=64,height=48,framerate=25/1");
    Ok((h, bus))
}

/// Pushes the three frames and EOS; checks that each buffer passes through unchanged.
fn push_three(h: &mut Harness) -> Result<()> {
    for i in 0..3 {
        let m = frame_meta(i);
        h.push(buffer(Some(&m), pts(i))?)
            .map_err(|e| anyhow!("push {i}: {e:?}"))?;
        let out = h.pull()?;
        ensure!(out.pts() == pts(i), "pts kept");
        ensure!(
            out.map_readable()?.as_slice() == [17u8; 64 * 48 * 3],
            "video untouched"
        );
        ensure!(FrameMeta::read(&out)? == Some(m), "meta untouched");
    }
    ensure!(h.push_event(gst::event::Eos::new()), "EOS handled");
    Ok(())
}

fn read_lines(path: &PathBuf) -> Result<Vec<FrameResult>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .map(|l| serde_json::from_str::<FrameResult>(l).with_context(|| format!("line {l}")))
        .collect()
}

#[test]
fn writes_one_json_line_per_frame() -> Result<()> {
    init();
    let path = temp_path("lines");
    let (mut h, _bus) = harness(&[("location", path.to_str().context("utf-8")?.to_value())])?;
    push_three(&mut h)?;
    let lines = read_lines(&path)?;
    assert_eq!(lines.len(), 3);
    for (i, r) in lines.iter().enumerate() {
        let i = i as u64;
        let m = frame_meta(i);
        assert_eq!(r.frame, i);
        assert_eq!(r.pts_ns, pts(i).map(gst::ClockTime::nseconds));
        assert_eq!(r.people.len(), m.people.len());
        for (got, want) in r.people.iter().zip(&m.people) {
            assert_eq!(got.track_id, want.track_id);
            // The tight box is the bbox, the region looked at the roi.
            assert_eq!(got.bbox, want.person_box);
            assert_eq!(got.roi, Some(want.bbox));
            assert_eq!(got.score, Some(want.score as f32));
            // What was solved: the body's joints and their pinhole projection (fx 300, c 32/24).
            assert_eq!(got.joints_3d, want.mesh_joints);
            assert_eq!(got.joints_2d.len(), 24);
            for (uv, j) in got.joints_2d.iter().zip(&want.mesh_joints) {
                let (u, v) = (300.0 * j[0] / j[2] + 32.0, 300.0 * j[1] / j[2] + 24.0);
                assert!((uv[0] - u).abs() < 1e-3 && (uv[1] - v).abs() < 1e-3);
            }
            // What was measured: the front end's joints.
            assert_eq!(got.targets_3d, want.joints_3d);
            assert_eq!(got.keypoints_2d, want.joints_2d);
            assert_eq!(got.theta, want.theta);
            assert_eq!(got.beta, want.beta);
            assert_eq!(got.translation, want.translation);
            assert_eq!(got.residual, want.residual);
            assert!(got.vertices.is_empty(), "vertices only on request");
        }
        assert_eq!(
            *r,
            m.to_result(i, pts(i).map(gst::ClockTime::nseconds), false)
        );
    }
    // Pts 0 is a known timestamp and is written; frame 2 has none and omits the key.
    let text = std::fs::read_to_string(&path)?;
    let raw: Vec<&str> = text.lines().collect();
    assert!(raw[0].contains("\"pts_ns\":0"), "{}", raw[0]);
    assert!(!raw[2].contains("pts_ns"), "{}", raw[2]);
    assert_eq!(raw[2], "{\"frame\":2,\"people\":[]}");
    drop(h);
    std::fs::remove_file(&path)?;
    Ok(())
}

#[test]
fn vertices_on_request() -> Result<()> {
    init();
    let path = temp_path("vertices");
    let (mut h, _bus) = harness(&[
        ("location", path.to_str().context("utf-8")?.to_value()),
        ("vertices", true.to_value()),
    ])?;
    push_three(&mut h)?;
    let lines = read_lines(&path)?;
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[1].people[1].vertices,
        frame_meta(1).people[1].vertices
    );
    assert_eq!(lines[0].people[0].vertices.len(), 5);
    drop(h);
    std::fs::remove_file(&path)?;
    Ok(())
}

#[test]
fn posts_the_same_line_on_the_bus() -> Result<()> {
    init();
    let path = temp_path("messages");
    let (mut h, bus) = harness(&[
        ("location", path.to_str().context("utf-8")?.to_value()),
        ("post-messages", true.to_value()),
    ])?;
    push_three(&mut h)?;
    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut n = 0;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        let s = msg.structure().context("element message has a structure")?;
        if s.name() != "ikol-frame" {
            continue;
        }
        let frame = s.get::<u64>("frame")?;
        assert_eq!(frame, n);
        assert_eq!(s.get::<u32>("people")? as usize, frame_meta(n).people.len());
        assert_eq!(s.get::<String>("json")?, lines[n as usize]);
        match pts(n) {
            Some(p) => assert_eq!(s.get::<u64>("pts")?, p.nseconds()),
            None => assert!(!s.has_field("pts")),
        }
        n += 1;
    }
    assert_eq!(n, 3);
    drop(h);
    std::fs::remove_file(&path)?;
    Ok(())
}

#[test]
fn uncreatable_location_fails_the_state_change_naming_the_file() -> Result<()> {
    init();
    let bad = "/nonexistent/dir/x.jsonl";
    let el = gst::ElementFactory::make("ikolexport")
        .property("location", bad)
        .build()?;
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    assert!(el.set_state(gst::State::Paused).is_err());
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .context("an error message")?;
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    assert!(e.error().message().contains(bad), "{}", e.error());
    el.set_state(gst::State::Null)?;
    Ok(())
}

#[test]
fn write_error_names_the_file() -> Result<()> {
    init();
    let full = "/dev/full";
    if !std::path::Path::new(full).exists() {
        return Ok(());
    }
    let (mut h, bus) = harness(&[("location", full.to_value())])?;
    let r = h.push(buffer(Some(&frame_meta(0)), pts(0))?);
    assert_eq!(r, Err(gst::FlowError::Error));
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .context("an error message")?;
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    assert!(e.error().message().contains(full), "{}", e.error());
    Ok(())
}

#[test]
fn missing_meta_names_ikolcrop() -> Result<()> {
    init();
    let path = temp_path("nometa");
    let (mut h, bus) = harness(&[("location", path.to_str().context("utf-8")?.to_value())])?;
    assert_eq!(h.push(buffer(None, pts(0))?), Err(gst::FlowError::Error));
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .context("an error message")?;
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = e.error().message().to_owned();
    assert!(
        text.contains("ikolcrop") && text.contains("ikolexport"),
        "{text}"
    );
    drop(h);
    std::fs::remove_file(&path)?;
    Ok(())
}

#[test]
fn defaults() -> Result<()> {
    init();
    let el = gst::ElementFactory::make("ikolexport").build()?;
    assert_eq!(el.property::<Option<String>>("location"), None);
    assert!(!el.property::<bool>("post-messages"));
    assert!(!el.property::<bool>("vertices"));
    Ok(())
}

/// A solved person for the motion formats: upright in the camera (root a half turn about x),
/// left knee bent by `knee`, root at `t` (camera metres).
fn solved(track_id: u64, knee: f32, t: [f32; 3]) -> Person {
    let mut theta = vec![[0.0f32; 3]; 24];
    theta[0] = [std::f32::consts::PI, 0.0, 0.0];
    theta[4] = [knee, 0.0, 0.0];
    Person {
        track_id,
        theta,
        beta: vec![0.3; 10],
        translation: Some(t),
        ..Default::default()
    }
}

/// Pelvis (the first marker) of every TRC row, mm, and the header's DataRate and NumFrames.
fn trc_pelvis(path: &std::path::Path) -> Result<(f64, usize, Vec<[f64; 3]>)> {
    let text = std::fs::read_to_string(path)?;
    let lines: Vec<&str> = text.lines().collect();
    let head: Vec<&str> = lines[2].split('\t').collect();
    let rows = lines[5..]
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Vec<f64> = l
                .split('\t')
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect();
            [v[2], v[3], v[4]]
        })
        .collect();
    Ok((head[0].parse()?, head[2].parse()?, rows))
}

#[test]
fn motion_files_per_track_at_end_of_stream() -> Result<()> {
    init();
    let dir = std::env::temp_dir().join(format!("ikolexport-takes-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pattern = dir.join("take-%t.trc");
    for (rate, frames) in [(0.0, 12usize), (50.0, 23)] {
        let (mut h, bus) = harness(&[
            ("format", "trc".to_value()),
            ("location", pattern.to_str().context("utf-8")?.to_value()),
            ("body-model", "small".to_value()),
            ("min-frames", 2u32.to_value()),
            ("frame-rate", rate.to_value()),
        ])?;
        let t = |i: u64| [0.1 * i as f32, 0.2, 3.0 + 0.05 * i as f32];
        for i in 0..12u64 {
            let mut m = frame_meta(0);
            // Track 7 in every frame but 5; track 9 once (fewer than min-frames).
            m.people = if i == 5 {
                Vec::new()
            } else {
                vec![solved(7, 0.1 * i as f32, t(i))]
            };
            if i == 0 {
                m.people.push(solved(9, 0.0, t(0)));
            }
            h.push(buffer(
                Some(&m),
                Some(gst::ClockTime::from_mseconds(40 * i)),
            )?)
            .map_err(|e| anyhow!("push {i}: {e:?}"))?;
        }
        ensure!(h.push_event(gst::event::Eos::new()), "EOS handled");
        // Written before EOS went on.
        let (data_rate, n, pelvis) = trc_pelvis(&dir.join("take-7.trc"))?;
        assert!(
            !dir.join("take-9.trc").exists(),
            "track 9 is under min-frames"
        );
        assert_eq!((n, pelvis.len()), (frames, frames));
        assert_eq!(data_rate, if rate > 0.0 { rate } else { 25.0 });
        // The root moves as the camera translation does, turned into the Y-up world
        // (x, -y, -z), in mm; the missing frame 5 is halfway between 4 and 6.
        let step = if rate > 0.0 { 25.0 / rate } else { 1.0 };
        let last = (frames - 1) as f64 * step;
        let world = |i: f64| [100.0 * i, -200.0, -(3000.0 + 50.0 * i)];
        for (k, p) in [(0usize, 0.0), (frames - 1, last)] {
            for c in [0, 2] {
                let d = (pelvis[k][c] - pelvis[0][c]) - (world(p)[c] - world(0.0)[c]);
                assert!(d.abs() < 0.01, "frame {k} axis {c}: {:?}", pelvis[k]);
            }
        }
        if rate == 0.0 {
            for c in 0..3 {
                let mid = 0.5 * (pelvis[4][c] + pelvis[6][c]);
                assert!((pelvis[5][c] - mid).abs() < 0.01, "{:?}", pelvis[5]);
            }
        }
        let mut takes = Vec::new();
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
            let s = msg.structure().context("structure")?;
            if s.name() == "ikol-take" {
                takes.push((s.get::<u64>("track")?, s.get::<u32>("frames")?));
                assert_eq!(s.get::<String>("format")?, "trc");
            }
        }
        assert_eq!(takes, vec![(7, frames as u32)]);
        drop(h);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn motion_format_needs_a_location() -> Result<()> {
    init();
    let el = gst::ElementFactory::make("ikolexport")
        .property_from_str("format", "bvh")
        .build()?;
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    assert!(el.set_state(gst::State::Paused).is_err());
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .context("an error message")?;
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    assert!(
        e.error().message().contains("set location"),
        "{}",
        e.error()
    );
    el.set_state(gst::State::Null)?;
    Ok(())
}

/// Every closed set is a GEnum listing its values (what gst-inspect-1.0 prints); launch lines
/// set them by nick; a typo fails at parse time.
#[test]
fn closed_sets_are_enums() -> Result<()> {
    init();
    let sets: [(&str, &str, &[&str]); 9] = [
        ("ikolcrop", "detector", &["none", "blazepose"]),
        ("ikolbackbone", "flip-test", &["false", "true", "alternate"]),
        ("ikolbackbone", "model", &["heatmap", "blazepose"]),
        ("ikolbackbone", "variant", &["ikol24", "hybrik29"]),
        ("ikolbackbone", "device", &["cpu", "cuda"]),
        (
            "ikolsolver",
            "method",
            &["ikol", "hybrik", "hybrik-naive", "fit"],
        ),
        ("ikolsolver", "init", &["zero", "analytic"]),
        ("ikoloverlay", "mode", &["all", "mesh", "skeleton", "boxes"]),
        (
            "ikolexport",
            "format",
            &["jsonl", "bvh", "glb", "trc", "npz"],
        ),
    ];
    for (factory, prop, values) in sets {
        let el = gst::ElementFactory::make(factory).build()?;
        let pspec = el.find_property(prop).context("property")?;
        let en = pspec
            .downcast_ref::<glib::ParamSpecEnum>()
            .with_context(|| format!("{factory}.{prop} is not an enum"))?;
        let nicks: Vec<String> = en
            .enum_class()
            .values()
            .iter()
            .map(|v| v.nick().to_owned())
            .collect();
        for v in values {
            assert!(nicks.iter().any(|n| n == v), "{factory}.{prop}: {nicks:?}");
            el.set_property_from_str(prop, v);
        }
        let ok = gst::parse::launch(&format!(
            "fakesrc ! {factory} {prop}={} ! fakesink",
            values[1]
        ));
        assert!(ok.is_ok(), "{factory} {prop}={}", values[1]);
        let typo = gst::parse::launch(&format!(
            "fakesrc ! {factory} {prop}=no-such-value ! fakesink"
        ));
        let err = typo
            .err()
            .with_context(|| format!("{factory}.{prop}: typo accepted"))?;
        assert!(err.to_string().contains(prop), "{err}");
    }
    Ok(())
}

/// Stopped without end of stream (an upstream error, an application tearing down): what was
/// collected is still written.
#[test]
fn motion_files_written_when_stopped_without_eos() -> Result<()> {
    init();
    let dir = std::env::temp_dir().join(format!("ikolexport-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let loc = dir.join("t.npz");
    let (mut h, _bus) = harness(&[
        ("format", "npz".to_value()),
        ("location", loc.to_str().context("utf-8")?.to_value()),
        ("body-model", "small".to_value()),
        ("min-frames", 3u32.to_value()),
    ])?;
    for i in 0..3u64 {
        let mut m = frame_meta(0);
        m.people = vec![solved(4, 0.2, [0.0, 0.1, 2.5])];
        h.push(buffer(
            Some(&m),
            Some(gst::ClockTime::from_mseconds(40 * i)),
        )?)
        .map_err(|e| anyhow!("push {i}: {e:?}"))?;
    }
    let written = dir.join("t-4.npz");
    assert!(!written.exists(), "nothing before the end");
    drop(h); // the harness stops the element (no EOS)
    let arrays = ikol_body::npy::read_npz(&written)?;
    assert_eq!(arrays["poses"].shape, vec![3, 72]);
    // The knee as given (left knee, joint 4, x component); the root upright in the world.
    let poses = arrays["poses"].to_f64()?;
    assert!(
        (poses[12] - 0.2).abs() < 1e-6 && poses[0].abs() < 1e-6,
        "{:?}",
        &poses[..15]
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
