// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikoloverlay` through `gst_check::Harness`: a real body mesh (the embedded small model in its
//! rest pose, 3 m in front of the camera) drawn into grey RGB, RGBA and BGRx frames.

use std::str::FromStr;
use std::sync::Once;

use anyhow::{Context, Result, anyhow, ensure};
use gst::glib;
use gst::prelude::*;
use gst_check::Harness;
use gstikol::ikoloverlay::OverlayMode;
use gstikol::meta::{FrameMeta, Person};
use ikol_body::BodyModel;
use ikol_body::nalgebra::Matrix3;
use ikol_types::{BBox, Intrinsics};

const W: usize = 320;
const H: usize = 240;
const GREY: u8 = 128;
const TRACK: u64 = 1;
/// Colour of track 1 in the default palette (`#f28e2b`).
const TRACK_RGB: [u8; 3] = [0xf2, 0x8e, 0x2b];

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("gst::init");
        gstikol::plugin_register_static().expect("register the ikol plugin");
    });
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fmt {
    Rgb,
    Rgba,
    Bgrx,
}

impl Fmt {
    fn name(self) -> &'static str {
        match self {
            Fmt::Rgb => "RGB",
            Fmt::Rgba => "RGBA",
            Fmt::Bgrx => "BGRx",
        }
    }
    fn bpp(self) -> usize {
        if self == Fmt::Rgb { 3 } else { 4 }
    }
    /// Pixel (x, y) of a frame in this format as RGB.
    fn rgb(self, data: &[u8], x: usize, y: usize) -> [u8; 3] {
        let o = (y * W + x) * self.bpp();
        match self {
            Fmt::Bgrx => [data[o + 2], data[o + 1], data[o]],
            _ => [data[o], data[o + 1], data[o + 2]],
        }
    }
}

/// The test scene: one person (track 1) and where it projects.
struct Scene {
    meta: FrameMeta,
    /// Bounds of the projected vertices (x0, y0, x1, y1), pixels.
    silhouette: [f32; 4],
    /// Projected joints (24).
    joints_2d: Vec<[f32; 2]>,
}

fn scene() -> Result<Scene> {
    let model = BodyModel::embedded_small()?;
    let posed = model.forward(&[0.0; 10], &[Matrix3::identity(); 24])?;
    // Model axes (y up, z toward the viewer) to camera axes (y down, z forward): 180 degrees
    // about x. Then centre the body on the optical axis and put it 3 m away.
    let cam = |p: [f32; 3]| [p[0], -p[1], -p[2]];
    let vs: Vec<[f32; 3]> = posed.vertices.iter().map(|&v| cam(v)).collect();
    let lo = |i: usize| vs.iter().map(|v| v[i]).fold(f32::INFINITY, f32::min);
    let hi = |i: usize| vs.iter().map(|v| v[i]).fold(f32::NEG_INFINITY, f32::max);
    let centre = [(lo(0) + hi(0)) / 2.0, (lo(1) + hi(1)) / 2.0, lo(2)];
    let place = |p: [f32; 3]| [p[0] - centre[0], p[1] - centre[1], p[2] - centre[2] + 3.0];
    let vertices: Vec<[f32; 3]> = vs.into_iter().map(place).collect();
    let joints: Vec<[f32; 3]> = posed
        .joints
        .iter()
        .map(|j| place(cam([j.x as f32, j.y as f32, j.z as f32])))
        .collect();
    let k = Intrinsics {
        fx: 200.0,
        fy: 200.0,
        cx: (W as f64 - 1.0) / 2.0,
        cy: (H as f64 - 1.0) / 2.0,
    };
    let project = |p: &[f32; 3]| {
        [
            k.fx as f32 * p[0] / p[2] + k.cx as f32,
            k.fy as f32 * p[1] / p[2] + k.cy as f32,
        ]
    };
    let uv: Vec<[f32; 2]> = vertices.iter().map(project).collect();
    let silhouette = [
        uv.iter().map(|p| p[0]).fold(f32::INFINITY, f32::min),
        uv.iter().map(|p| p[1]).fold(f32::INFINITY, f32::min),
        uv.iter().map(|p| p[0]).fold(f32::NEG_INFINITY, f32::max),
        uv.iter().map(|p| p[1]).fold(f32::NEG_INFINITY, f32::max),
    ];
    ensure!(
        silhouette[0] > 30.0
            && silhouette[1] > 30.0
            && silhouette[2] < W as f32 - 30.0
            && silhouette[3] < H as f32 - 30.0
            && silhouette[3] - silhouette[1] > 80.0,
        "the body fills the middle of the frame: {silhouette:?}"
    );
    let joints_2d: Vec<[f32; 2]> = joints.iter().map(project).collect();
    let margin = 8.0;
    let person = Person {
        bbox: BBox {
            x: f64::from(silhouette[0] - margin).round(),
            y: f64::from(silhouette[1] - margin).round(),
            w: f64::from(silhouette[2] - silhouette[0] + 2.0 * margin).round(),
            h: f64::from(silhouette[3] - silhouette[1] + 2.0 * margin).round(),
        },
        joints_2d: joints_2d.clone(),
        vertices,
        ..Person::new(TRACK, BBox::default(), 0.9)
    };
    Ok(Scene {
        meta: FrameMeta {
            stages: ["ikolcrop", "ikolbackbone", "ikolsolver", "ikolmesher"]
                .map(String::from)
                .to_vec(),
            intrinsics: Some(k),
            body_model: Some("small".into()),
            people: vec![person],
            ..FrameMeta::default()
        },
        silhouette,
        joints_2d,
    })
}

fn caps(fmt: Fmt) -> String {
    format!(
        "video/x-raw,format={},width={W},height={H},framerate=30/1",
        fmt.name()
    )
}

/// A grey frame (alpha / x bytes 255) carrying `meta`.
fn frame(fmt: Fmt, meta: Option<&FrameMeta>) -> Result<gst::Buffer> {
    let mut buf = gst::Buffer::from_mut_slice(vec![GREY; W * H * fmt.bpp()]);
    {
        let b = buf.get_mut().context("fresh buffer is writable")?;
        if fmt != Fmt::Rgb {
            let mut map = b.map_writable()?;
            map.chunks_exact_mut(4).for_each(|p| p[3] = 255);
        }
        if let Some(m) = meta {
            m.write(b)?;
        }
    }
    Ok(buf)
}

/// An ikoloverlay in a harness with `props`, negotiated to `fmt`, and its bus.
fn harness(fmt: Fmt, props: &[(&str, glib::Value)]) -> Result<(Harness, gst::Bus)> {
    let el = gst::ElementFactory::make("ikoloverlay").build()?;
    for (name, value) in props {
        el.set_property_from_value(name, value);
    }
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str(&caps(fmt));
    Ok((h, bus))
}

/// Draws `meta` into a grey `fmt` frame; returns the output bytes and buffer.
fn draw(
    fmt: Fmt,
    meta: &FrameMeta,
    props: &[(&str, glib::Value)],
) -> Result<(Vec<u8>, gst::Buffer, gst::Bus)> {
    let (mut h, bus) = harness(fmt, props)?;
    h.push(frame(fmt, Some(meta))?)
        .map_err(|e| anyhow!("push: {e:?}"))?;
    let out = h.pull()?;
    let bytes = out.map_readable()?.as_slice().to_vec();
    Ok((bytes, out, bus))
}

fn px(j: [f32; 2]) -> (usize, usize) {
    (j[0].round() as usize, j[1].round() as usize)
}

fn mode(m: OverlayMode) -> (&'static str, glib::Value) {
    ("mode", m.to_value())
}

#[test]
fn draws_mesh_skeleton_and_box_and_keeps_the_meta() -> Result<()> {
    init();
    let s = scene()?;
    let (out, buf, bus) = draw(Fmt::Rgb, &s.meta, &[])?;
    let grey = [GREY; 3];
    // Inside the body: pelvis, spine and chest joints are covered (mesh and skeleton).
    for j in [0, 3, 6, 9] {
        let (x, y) = px(s.joints_2d[j]);
        assert_ne!(Fmt::Rgb.rgb(&out, x, y), grey, "joint {j} at ({x}, {y})");
    }
    // The box outline has the track colour: middle of the right and bottom edges.
    let b = s.meta.people[0].bbox;
    let (bx0, by0) = (b.x as usize, b.y as usize);
    let (bx1, by1) = ((b.x + b.w) as usize, (b.y + b.h) as usize);
    assert_eq!(Fmt::Rgb.rgb(&out, bx1, (by0 + by1) / 2), TRACK_RGB);
    assert_eq!(Fmt::Rgb.rgb(&out, (bx0 + bx1) / 2, by1), TRACK_RGB);
    // The track-id label sits above the box, on the track colour.
    assert_eq!(Fmt::Rgb.rgb(&out, bx0 + 1, by0 - 8), TRACK_RGB);
    // Nothing drawn outside the box (plus the line half-width) except the label above it.
    let (lw, lh) = ikol_render::label_size("#1", 1);
    for y in 0..H {
        for x in 0..W {
            let near_box = x + 2 >= bx0 && x <= bx1 + 2 && y + 2 >= by0 && y <= by1 + 2;
            let in_label = x >= bx0 && x < bx0 + lw && y + lh >= by0 && y < by0;
            if !near_box && !in_label {
                assert_eq!(Fmt::Rgb.rgb(&out, x, y), grey, "({x}, {y}) is outside");
            }
        }
    }
    // The meta passes through unchanged; no warnings or errors.
    assert_eq!(FrameMeta::read(&buf)?, Some(s.meta.clone()));
    assert!(
        bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Warning])
            .is_none()
    );
    Ok(())
}

#[test]
fn mesh_mode_shades_the_silhouette_only() -> Result<()> {
    init();
    let s = scene()?;
    let (out, _, _) = draw(Fmt::Rgb, &s.meta, &[mode(OverlayMode::Mesh)])?;
    let [x0, y0, x1, y1] = s.silhouette;
    let mut changed = 0;
    for y in 0..H {
        for x in 0..W {
            if Fmt::Rgb.rgb(&out, x, y) == [GREY; 3] {
                continue;
            }
            changed += 1;
            let (fx, fy) = (x as f32, y as f32);
            assert!(
                fx >= x0 - 1.0 && fx <= x1 + 1.0 && fy >= y0 - 1.0 && fy <= y1 + 1.0,
                "({x}, {y}) changed outside the silhouette bounds"
            );
        }
    }
    assert!(changed > 1500, "only {changed} mesh pixels");
    // The torso is tinted toward the orange of track 1 (opacity 0.7 over grey).
    let (x, y) = px(s.joints_2d[3]);
    let c = Fmt::Rgb.rgb(&out, x, y);
    assert!(c[0] > c[2] + 40, "orange tint at the spine: {c:?}");
    // No skeleton and no box in mesh mode: the box edge stays grey.
    let b = s.meta.people[0].bbox;
    let mid_y = (b.y + b.h / 2.0) as usize;
    assert_eq!(Fmt::Rgb.rgb(&out, (b.x + b.w) as usize, mid_y), [GREY; 3]);
    // Opacity 0 draws nothing visible.
    let (out0, _, _) = draw(
        Fmt::Rgb,
        &s.meta,
        &[mode(OverlayMode::Mesh), ("opacity", 0.0f64.to_value())],
    )?;
    assert!(out0.iter().all(|&v| v == GREY));
    Ok(())
}

#[test]
fn same_drawing_in_rgb_rgba_and_bgrx() -> Result<()> {
    init();
    let s = scene()?;
    let (rgb, _, _) = draw(Fmt::Rgb, &s.meta, &[])?;
    for fmt in [Fmt::Rgba, Fmt::Bgrx] {
        let (out, buf, _) = draw(fmt, &s.meta, &[])?;
        assert_eq!(FrameMeta::read(&buf)?, Some(s.meta.clone()));
        for y in 0..H {
            for x in 0..W {
                assert_eq!(
                    fmt.rgb(&out, x, y),
                    Fmt::Rgb.rgb(&rgb, x, y),
                    "{fmt:?} ({x}, {y})"
                );
                assert_eq!(out[(y * W + x) * 4 + 3], 255, "{fmt:?} 4th byte");
            }
        }
    }
    Ok(())
}

#[test]
fn boxes_mode_draws_no_mesh() -> Result<()> {
    init();
    let s = scene()?;
    let (out, _, _) = draw(Fmt::Rgb, &s.meta, &[mode(OverlayMode::Boxes)])?;
    let b = s.meta.people[0].bbox;
    let (bx0, by0) = (b.x as usize, b.y as usize);
    let (bx1, by1) = ((b.x + b.w) as usize, (b.y + b.h) as usize);
    for y in by0 + 3..by1 - 2 {
        for x in bx0 + 3..bx1 - 2 {
            assert_eq!(
                Fmt::Rgb.rgb(&out, x, y),
                [GREY; 3],
                "({x}, {y}) inside the box"
            );
        }
    }
    assert_eq!(Fmt::Rgb.rgb(&out, bx1, (by0 + by1) / 2), TRACK_RGB);
    // Skeleton mode draws bones but no box.
    let (sk, _, _) = draw(Fmt::Rgb, &s.meta, &[mode(OverlayMode::Skeleton)])?;
    let (x, y) = px(s.joints_2d[0]);
    assert_ne!(Fmt::Rgb.rgb(&sk, x, y), [GREY; 3]);
    assert_eq!(Fmt::Rgb.rgb(&sk, bx1, (by0 + by1) / 2), [GREY; 3]);
    Ok(())
}

#[test]
fn no_mesher_upstream_draws_skeleton_and_box_only() -> Result<()> {
    init();
    let s = scene()?;
    let mut m = s.meta.clone();
    m.stages.retain(|st| st != "ikolmesher");
    m.body_model = None;
    m.people[0].vertices.clear();
    let (mesh, _, bus) = draw(Fmt::Rgb, &m, &[mode(OverlayMode::Mesh)])?;
    assert!(mesh.iter().all(|&v| v == GREY), "no vertices, no mesh");
    assert!(
        bus.pop_filtered(&[gst::MessageType::Warning]).is_none(),
        "a missing mesher is not a problem"
    );
    let (all, _, _) = draw(Fmt::Rgb, &m, &[])?;
    let (x, y) = px(s.joints_2d[0]);
    assert_ne!(Fmt::Rgb.rgb(&all, x, y), [GREY; 3], "skeleton drawn");
    Ok(())
}

#[test]
fn vertex_count_mismatch_warns_once_and_skips_the_mesh() -> Result<()> {
    init();
    let s = scene()?;
    let mut m = s.meta.clone();
    m.people[0].vertices.truncate(100);
    let (mut h, bus) = harness(Fmt::Rgb, &[mode(OverlayMode::Mesh)])?;
    for _ in 0..2 {
        h.push(frame(Fmt::Rgb, Some(&m))?)
            .map_err(|e| anyhow!("push: {e:?}"))?;
        let out = h.pull()?;
        assert!(out.map_readable()?.iter().all(|&v| v == GREY));
    }
    let warnings: Vec<String> =
        std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Warning]))
            .filter_map(|msg| match msg.view() {
                gst::MessageView::Warning(w) => Some(w.error().message().to_owned()),
                _ => None,
            })
            .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("100 vertices"), "{}", warnings[0]);
    Ok(())
}

#[test]
fn colors_property() -> Result<()> {
    init();
    let s = scene()?;
    let el = gst::ElementFactory::make("ikoloverlay").build()?;
    let default = el.property::<String>("colors");
    assert_eq!(default.split(',').count(), 6);
    el.set_property("colors", "not a colour");
    assert_eq!(
        el.property::<String>("colors"),
        default,
        "bad value ignored"
    );
    el.set_property("colors", "#ff0000, 00ff00");
    assert_eq!(el.property::<String>("colors"), "#ff0000,#00ff00");
    assert_eq!(el.property::<f64>("opacity"), 0.7);
    // Track 1 of a two-colour palette is green.
    let (out, _, _) = draw(
        Fmt::Rgb,
        &s.meta,
        &[("colors", "#ff0000,#00ff00".to_value())],
    )?;
    let b = s.meta.people[0].bbox;
    let mid_y = (b.y + b.h / 2.0) as usize;
    assert_eq!(Fmt::Rgb.rgb(&out, (b.x + b.w) as usize, mid_y), [0, 255, 0]);
    Ok(())
}

#[test]
fn nv12_is_refused() -> Result<()> {
    init();
    let mut h = Harness::new("ikoloverlay");
    let el = h.element().context("element")?;
    let sink = el.static_pad("sink").context("sink pad")?;
    let nv12 = gst::Caps::from_str(&caps(Fmt::Rgb).replace("RGB", "NV12"))?;
    assert!(!sink.query_accept_caps(&nv12));
    assert!(sink.query_accept_caps(&gst::Caps::from_str(&caps(Fmt::Bgrx))?));
    // A refused sticky caps event is stored anyway; the data flow then fails.
    h.push_event(gst::event::Caps::new(&nv12));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    let buf = gst::Buffer::from_mut_slice(vec![GREY; W * H * 3 / 2]);
    assert_eq!(h.push(buf), Err(gst::FlowError::NotNegotiated));
    Ok(())
}

/// I420 frames (what decoders give and encoders take) are drawn into directly: the scene
/// drawn into a grey I420 frame equals the scene drawn in RGB and converted to I420 by
/// `videoconvert`, within a few levels (the two differ in rounding and in the chroma of the
/// skeleton's and box's edges, which the overlay takes at each 2x2 block's top-left pixel), so
/// the planes, their strides and their order are the ones GStreamer means.
#[test]
fn i420_draws_what_rgb_then_videoconvert_gives() -> Result<()> {
    init();
    let s = scene()?;
    let (_, rgb, _) = draw(Fmt::Rgb, &s.meta, &[])?;
    let to_i420 = |buf: gst::Buffer, fmt: &str| -> Result<gst::Buffer> {
        let mut h = Harness::new_parse("videoconvert ! capsfilter caps=video/x-raw,format=I420");
        h.set_src_caps_str(&caps(Fmt::Rgb).replace("RGB", fmt));
        h.push(buf).map_err(|e| anyhow!("push: {e:?}"))?;
        Ok(h.pull()?)
    };
    let reference = to_i420(rgb, "RGB")?;
    // The grey frame in I420, with the scene's meta, drawn by the overlay.
    let mut grey = to_i420(frame(Fmt::Rgb, None)?, "RGB")?;
    s.meta.write(grey.make_mut())?;
    let mut h = Harness::new("ikoloverlay");
    h.set_src_caps_str(&caps(Fmt::Rgb).replace("RGB", "I420"));
    h.push(grey).map_err(|e| anyhow!("push: {e:?}"))?;
    let out = h.pull()?;
    let (a, b) = (out.map_readable()?, reference.map_readable()?);
    assert_eq!(a.len(), b.len());
    let plane = |range: std::ops::Range<usize>| -> (f64, usize) {
        let (mut sum, mut big) = (0.0, 0);
        for i in range {
            let d = (f64::from(a[i]) - f64::from(b[i])).abs();
            sum += d;
            big += usize::from(d > 12.0);
        }
        (sum, big)
    };
    let (nl, nc) = (W * H, W.div_ceil(2) * H.div_ceil(2));
    for (name, range) in [
        ("Y", 0..nl),
        ("U", nl..nl + nc),
        ("V", nl + nc..nl + 2 * nc),
    ] {
        let n = range.len();
        let (sum, big) = plane(range);
        assert!(
            sum / n as f64 <= 1.5,
            "{name}: mean difference {}",
            sum / n as f64
        );
        assert!(
            big * 50 <= n,
            "{name}: {big} of {n} samples differ by more than 12 levels"
        );
    }
    // The scene is drawn (the test compares drawings, not two grey frames).
    let drawn = (0..nl).filter(|&i| b[i].abs_diff(b[0]) > 20).count();
    assert!(drawn > 2000, "{drawn} luma samples drawn");
    Ok(())
}

#[test]
fn missing_meta_is_an_error_naming_ikolcrop() -> Result<()> {
    init();
    let (mut h, bus) = harness(Fmt::Rgb, &[])?;
    assert_eq!(h.push(frame(Fmt::Rgb, None)?), Err(gst::FlowError::Error));
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .context("an error message")?;
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = e.error().message().to_owned();
    assert!(
        text.contains("ikolcrop") && text.contains("ikoloverlay"),
        "{text}"
    );
    Ok(())
}

#[test]
fn zero_people_leaves_the_frame_untouched() -> Result<()> {
    init();
    let s = scene()?;
    let m = FrameMeta {
        people: Vec::new(),
        ..s.meta
    };
    for fmt in [Fmt::Rgb, Fmt::Rgba, Fmt::Bgrx] {
        let input = frame(fmt, Some(&m))?.map_readable()?.as_slice().to_vec();
        let (out, buf, _) = draw(fmt, &m, &[])?;
        assert_eq!(out, input, "{fmt:?}");
        assert_eq!(FrameMeta::read(&buf)?, Some(m.clone()));
    }
    Ok(())
}

/// The overlay passes upstream's allocation query on and hands back downstream's video meta
/// but no other meta (it would not read a crop meta) and none of its pools (an encoder's pool
/// made the decoder renegotiate on every frame).
#[test]
fn allocation_answers_keep_downstream_metas_but_no_pool() -> Result<()> {
    init();
    let mut h = Harness::new("ikoloverlay");
    let i420 = caps(Fmt::Rgb).replace("RGB", "I420");
    h.set_src_caps_str(&i420);
    let el = h.element().context("element")?;
    // Downstream (an encoder, say) answers with video meta and a pool of its own.
    let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&forwarded);
    el.static_pad("src").context("src pad")?.add_probe(
        gst::PadProbeType::QUERY_DOWNSTREAM,
        move |_, info| {
            if let Some(gst::PadProbeData::Query(q)) = &mut info.data
                && let gst::QueryViewMut::Allocation(a) = q.view_mut()
            {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                a.add_allocation_meta::<gst_video::VideoMeta>(None);
                a.add_allocation_pool(Some(&gst::BufferPool::new()), 1000, 4, 0);
                return gst::PadProbeReturn::Handled;
            }
            gst::PadProbeReturn::Ok
        },
    );
    let mut q = gst::query::Allocation::new(Some(&gst::Caps::from_str(&i420)?), true);
    assert!(el.static_pad("sink").context("sink pad")?.query(&mut q));
    assert_eq!(forwarded.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(q.find_allocation_meta::<gst_video::VideoMeta>().is_some());
    assert!(
        q.find_allocation_meta::<gst_video::VideoCropMeta>()
            .is_none()
    );
    assert_eq!(q.allocation_pools().count(), 0);
    Ok(())
}
