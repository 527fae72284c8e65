// SPDX-License-Identifier: MIT OR Apache-2.0
//! SECTION:element-ikoloverlay
//!
//! Draws the results of the `IkolFrameMeta` into I420 (as decoders give it and encoders take it)
//! or packed RGB, RGBA or BGRx video, in place:
//! the shaded body mesh of every person (camera-metre `vertices` from `ikolmesher`, projected with
//! the meta's `intrinsics`, faces from the body model named in the meta, z-buffered so people
//! occlude each other, the nearest surface blended once with `opacity`), the 2D skeleton (`joints_2d`, SMPL-24 or
//! HybrIK-29 bones) and the boxes with their track ids. Each person gets the colour of
//! `colors[track_id % len]`. Parts that no upstream element filled are simply not drawn (no
//! `ikolmesher`: no mesh); the meta itself passes through unchanged.
//!
//! ## Example launch line
//! ```sh
//! gst-launch-1.0 filesrc location=walk.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB \
//!   ! ikolcrop ! ikolbackbone checkpoint=ikol.safetensors ! ikolsolver \
//!   ! ikolmesher output-vertices=true ! ikoloverlay mode=all opacity=0.6 \
//!   ! videoconvert ! x264enc ! mp4mux ! filesink location=overlay.mp4
//! ```
//!
//! Since: 0.1

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::subclass::prelude::*;
use gst_video::{VideoFormat, VideoFrameExt};
use ikol_body::BodyModel;
use ikol_render::{Canvas, Frame, MeshStyle, PixelFormat};
use ikol_types::joints::{HYBRIK_JOINTS, HYBRIK29_PARENTS, SMPL_JOINTS, SMPL24_PARENTS};

use super::OverlayMode;
use crate::common;
use crate::meta::{self, FrameMeta, Person};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "ikoloverlay",
        gst::DebugColorFlags::empty(),
        Some("ikol mesh, skeleton and box overlay"),
    )
});

const DEFAULT_OPACITY: f64 = 0.7;
/// Six colours that stay distinct on video (Tableau 10): blue, orange, green, red, purple, teal.
const DEFAULT_COLORS: &str = "#4e79a7,#f28e2b,#59a14f,#e15759,#b07aa1,#76b7b2";
/// Fraction of ambient light on the mesh (the rest is Lambertian from the camera).
const MESH_AMBIENT: f32 = 0.3;

/// The formats drawn into (8 bits per sample; I420 first, so a decoder's frames pass through).
const FORMATS: [VideoFormat; 4] = [
    VideoFormat::I420,
    VideoFormat::Rgb,
    VideoFormat::Rgba,
    VideoFormat::Bgrx,
];

/// Parses `"#rrggbb,#rrggbb,..."` (the `#` is optional) into colours.
fn parse_palette(s: &str) -> Result<Vec<[u8; 3]>, String> {
    let colors = s
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let hex = c.strip_prefix('#').unwrap_or(c);
            if hex.len() != 6 || !hex.chars().all(|d| d.is_ascii_hexdigit()) {
                return Err(format!("`{c}` is not a #rrggbb colour"));
            }
            let v = u32::from_str_radix(hex, 16).map_err(|e| format!("`{c}`: {e}"))?;
            Ok([(v >> 16) as u8, (v >> 8) as u8, v as u8])
        })
        .collect::<Result<Vec<_>, _>>()?;
    if colors.is_empty() {
        return Err("no colours".into());
    }
    Ok(colors)
}

fn format_palette(p: &[[u8; 3]]) -> String {
    p.iter()
        .map(|c| format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]))
        .collect::<Vec<_>>()
        .join(",")
}

/// `c` moved a fraction `t` of the way to white.
fn lighten(c: [u8; 3], t: f32) -> [u8; 3] {
    c.map(|x| (f32::from(x) + (255.0 - f32::from(x)) * t).round() as u8)
}

/// Black or white, whichever reads better on `c`.
fn text_on(c: [u8; 3]) -> [u8; 3] {
    let y = 0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2]);
    if y > 140.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

#[derive(Debug, Clone)]
struct Settings {
    mode: OverlayMode,
    opacity: f64,
    colors: Vec<[u8; 3]>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: OverlayMode::default(),
            opacity: DEFAULT_OPACITY,
            colors: parse_palette(DEFAULT_COLORS).unwrap_or_else(|_| vec![[78, 121, 167]]),
        }
    }
}

impl Settings {
    fn color(&self, track_id: u64) -> [u8; 3] {
        let n = self.colors.len().max(1) as u64;
        self.colors
            .get((track_id % n) as usize)
            .copied()
            .unwrap_or([255, 255, 255])
    }
}

/// Body models by spec (loaded on first use; a failure is kept so it is reported once), the
/// reused canvas (depth and mesh layer), and the warnings already given.
#[derive(Debug, Default)]
struct State {
    models: HashMap<String, Result<Arc<BodyModel>, String>>,
    canvas: Option<Canvas>,
    warned: HashSet<String>,
}

impl State {
    fn model(&mut self, spec: &str) -> Result<Arc<BodyModel>, String> {
        self.models
            .entry(spec.to_owned())
            .or_insert_with(|| BodyModel::from_spec(spec).map_err(|e| e.to_string()))
            .clone()
    }

    /// The canvas for a `w` x `h` frame, cleared (it keeps its memory from frame to frame).
    fn canvas(&mut self, w: usize, h: usize) -> &mut Canvas {
        match &mut self.canvas {
            Some(c) if (c.width(), c.height()) == (w, h) => c.clear(),
            slot => *slot = Some(Canvas::new(w, h)),
        }
        self.canvas.get_or_insert_with(|| Canvas::new(w, h))
    }

    /// `msg` the first time `key` is seen, `None` afterwards.
    fn once(&mut self, key: String, msg: String) -> Option<String> {
        self.warned.insert(key).then_some(msg)
    }
}

#[derive(Debug, Default)]
pub struct IkolOverlay {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

/// Sizes derived from the frame so drawings look alike at every resolution.
struct Scale {
    line: f32,
    label: usize,
}

impl Scale {
    fn of(w: usize, h: usize) -> Self {
        let m = w.min(h) as f32;
        Self {
            line: 2.0 * (m / 360.0).round().max(1.0),
            label: ((m / 240.0).round() as usize).max(1),
        }
    }
}

impl IkolOverlay {
    /// Draws every person's mesh into `f`, sharing one z-buffer; returns warnings to post.
    fn draw_meshes(
        &self,
        f: &mut Frame<'_>,
        meta: &FrameMeta,
        settings: &Settings,
        state: &mut State,
        warnings: &mut Vec<String>,
    ) {
        let people: Vec<&Person> = meta
            .people
            .iter()
            .filter(|p| !p.vertices.is_empty())
            .collect();
        if people.is_empty() {
            return;
        }
        let Some(k) = meta.intrinsics.as_ref() else {
            warnings.extend(
                state.once(
                    "intrinsics".into(),
                    "ikoloverlay: the meta has vertices but no camera intrinsics; meshes not drawn"
                        .into(),
                ),
            );
            return;
        };
        let Some(spec) = meta.body_model.as_deref() else {
            warnings.extend(
                state.once(
                    "body-model".into(),
                    "ikoloverlay: the meta has vertices but names no body model; meshes not drawn"
                        .into(),
                ),
            );
            return;
        };
        let model = match state.model(spec) {
            Ok(m) => m,
            Err(e) => {
                warnings.extend(state.once(
                    format!("model:{spec}"),
                    format!("ikoloverlay: body model `{spec}`: {e}; meshes not drawn"),
                ));
                return;
            }
        };
        let canvas = state.canvas(f.width, f.height);
        let mut mismatched = Vec::new();
        for p in people {
            if p.vertices.len() != model.num_vertices() {
                mismatched.push(p.vertices.len());
                continue;
            }
            let style = MeshStyle {
                color: settings.color(p.track_id),
                opacity: settings.opacity as f32,
                ambient: MESH_AMBIENT,
            };
            match canvas.add_mesh(k, &p.vertices, &model.faces, &style) {
                Ok(n) => gst::trace!(CAT, imp = self, "track {}: {n} mesh pixels", p.track_id),
                Err(e) => warnings.push(format!("ikoloverlay: track {}: {e}", p.track_id)),
            }
        }
        // Every person's nearest surface blended once.
        if let Err(e) = canvas.composite(f) {
            warnings.push(format!("ikoloverlay: {e}"));
        }
        for n in mismatched {
            warnings.extend(state.once(
                format!("count:{spec}:{n}"),
                format!(
                    "ikoloverlay: {n} vertices do not fit body model `{spec}` ({} vertices); \
                     mesh not drawn",
                    model.num_vertices()
                ),
            ));
        }
    }

    /// The joints to draw: the solved body's, projected, when a solver ran; else the front end's.
    fn skeleton_of(p: &Person, k: Option<&ikol_types::Intrinsics>) -> Vec<[f32; 2]> {
        k.filter(|_| p.mesh_joints.len() == SMPL_JOINTS)
            .and_then(|k| p.solved_joints_2d(k))
            .unwrap_or_else(|| p.joints_2d.clone())
    }

    fn draw_skeleton(f: &mut Frame<'_>, j: &[[f32; 2]], color: [u8; 3], s: &Scale) {
        let parents: &[i8] = match j.len() {
            SMPL_JOINTS => &SMPL24_PARENTS,
            HYBRIK_JOINTS => &HYBRIK29_PARENTS,
            _ => &[],
        };
        let ok = |q: &[f32; 2]| q[0].is_finite() && q[1].is_finite();
        let bone = lighten(color, 0.6);
        for (i, &par) in parents.iter().enumerate() {
            let Ok(par) = usize::try_from(par) else {
                continue;
            };
            if ok(&j[i]) && ok(&j[par]) {
                ikol_render::draw_line(f, j[par], j[i], s.line, bone);
            }
        }
        for q in j.iter().filter(|q| ok(q)) {
            ikol_render::draw_line(f, *q, *q, s.line + 2.0, [255, 255, 255]);
        }
    }

    fn draw_box(f: &mut Frame<'_>, p: &Person, color: [u8; 3], s: &Scale) {
        // The person's tight box when a solver gave one, else the region the front end used.
        let b = p.person_box.unwrap_or(p.bbox);
        if !b.is_valid() {
            return;
        }
        ikol_render::draw_box(f, &b, s.line, color);
        let text = format!("#{}", p.track_id);
        let (_, lh) = ikol_render::label_size(&text, s.label);
        let (x, y) = (b.x.round() as i64, b.y.round() as i64);
        // Above the box when there is room, else just inside its top edge.
        let y = if y >= lh as i64 { y - lh as i64 } else { y };
        ikol_render::draw_label(f, x, y, &text, s.label, text_on(color), Some(color));
    }

    fn draw(
        &self,
        f: &mut Frame<'_>,
        meta: &FrameMeta,
        settings: &Settings,
        state: &mut State,
        warnings: &mut Vec<String>,
    ) {
        let s = Scale::of(f.width, f.height);
        if settings.mode.mesh() {
            self.draw_meshes(f, meta, settings, state, warnings);
        }
        if settings.mode.skeleton() {
            for p in &meta.people {
                let j = Self::skeleton_of(p, meta.intrinsics.as_ref());
                if ![0, SMPL_JOINTS, HYBRIK_JOINTS].contains(&j.len()) {
                    warnings.extend(state.once(
                        format!("joints:{}", j.len()),
                        format!(
                            "ikoloverlay: {} 2D joints (expected 24 or 29): joints drawn without \
                             bones",
                            j.len()
                        ),
                    ));
                }
                Self::draw_skeleton(f, &j, settings.color(p.track_id), &s);
            }
        }
        if settings.mode.boxes() {
            for p in &meta.people {
                Self::draw_box(f, p, settings.color(p.track_id), &s);
            }
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for IkolOverlay {
    const NAME: &'static str = "GstIkolOverlay";
    type Type = super::IkolOverlay;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for IkolOverlay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("mode", OverlayMode::default())
                    .nick("Mode")
                    .blurb("What to draw: all (mesh, skeleton, boxes), mesh, skeleton or boxes")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("opacity")
                    .nick("Opacity")
                    .blurb("Opacity of the shaded mesh, 0 (invisible) to 1 (opaque)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_OPACITY)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("colors")
                    .nick("Colours")
                    .blurb(
                        "Comma-separated #rrggbb palette; a person gets colour \
                         track-id modulo its length",
                    )
                    .default_value(Some(DEFAULT_COLORS))
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = common::lock(&self.settings);
        match pspec.name() {
            "mode" => s.mode = value.get().unwrap_or_default(),
            "opacity" => s.opacity = value.get().unwrap_or(DEFAULT_OPACITY),
            "colors" => {
                let text = common::string_value(value).unwrap_or_else(|| DEFAULT_COLORS.into());
                match parse_palette(&text) {
                    Ok(p) => s.colors = p,
                    Err(e) => gst::warning!(
                        CAT,
                        imp = self,
                        "colors `{text}`: {e}; keeping {}",
                        format_palette(&s.colors)
                    ),
                }
            }
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = common::lock(&self.settings);
        match pspec.name() {
            "mode" => s.mode.to_value(),
            "opacity" => s.opacity.to_value(),
            _ => format_palette(&s.colors).to_value(),
        }
    }
}

impl GstObjectImpl for IkolOverlay {}

impl ElementImpl for IkolOverlay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ikol overlay",
                "Filter/Effect/Video",
                "Draws the body meshes, 2D skeletons and tracked boxes of the ikol frame meta \
                 into the video",
                "ikol developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> =
            LazyLock::new(|| common::templates(&common::video_formats(&FORMATS)));
        T.as_ref()
    }
}

impl BaseTransformImpl for IkolOverlay {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        *common::lock(&self.state) = Some(State::default());
        Ok(())
    }

    /// Passes upstream's allocation query on (the frame is drawn in place, so downstream must
    /// read what upstream writes) and keeps of downstream's answer only video meta (the one
    /// meta the overlay and the front end read: a crop meta, say, would be ignored) and no
    /// pool: with `x264enc`'s pool proposed, `avdec_h264` made a new buffer pool on 98 of 100
    /// frames of the demo clip, each time after a serialized query through every queue in
    /// between, so the decoder never ran ahead (the I420 chain 6.9-7.3 s against 5.6-6.1 s).
    fn propose_allocation(
        &self,
        decide_query: Option<&gst::query::Allocation>,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        self.parent_propose_allocation(decide_query, query)?;
        let pools = query.allocation_pools().count() as u32;
        for i in (0..pools).rev() {
            query.remove_nth_allocation_pool(i);
        }
        let video_meta = <gst_video::VideoMeta as gst::MetaAPI>::meta_api();
        let other: Vec<u32> = query
            .allocation_metas()
            .enumerate()
            .filter(|(_, (api, _))| *api != video_meta)
            .map(|(i, _)| i as u32)
            .collect();
        for i in other.into_iter().rev() {
            query.remove_nth_allocation_meta(i);
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *common::lock(&self.state) = None;
        Ok(())
    }
}

impl VideoFilterImpl for IkolOverlay {
    fn transform_frame_ip(
        &self,
        frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let meta = meta::require(frame.buffer(), "ikoloverlay", "ikolcrop").map_err(|msg| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("{msg}"));
            gst::FlowError::Error
        })?;
        if meta.people.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let settings = common::lock(&self.settings).clone();
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let failed = |e: &dyn std::fmt::Display| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ("ikoloverlay: {e}"));
            gst::FlowError::Error
        };
        let format = match frame.format() {
            VideoFormat::Rgb => PixelFormat::Rgb,
            VideoFormat::Rgba => PixelFormat::Rgba,
            VideoFormat::Bgrx => PixelFormat::Bgrx,
            VideoFormat::I420 => PixelFormat::I420,
            other => {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("ikoloverlay: cannot draw into {other:?}; use I420, RGB, RGBA or BGRx")
                );
                return Err(gst::FlowError::NotNegotiated);
            }
        };
        let [stride, uv_stride] = common::frame_strides(frame).map_err(|e| failed(&e))?;
        let mut f = if format == PixelFormat::I420 {
            let matrix = common::yuv_matrix(frame.info());
            let [y, u, v, _] = frame.planes_data_mut();
            Frame::i420(y, u, v, w, h, stride, uv_stride, matrix).map_err(|e| failed(&e))?
        } else {
            let data = frame.plane_data_mut(0).map_err(|e| failed(&e))?;
            Frame::new(data, w, h, stride, format).map_err(|e| failed(&e))?
        };
        let mut warnings = Vec::new();
        {
            let mut guard = common::lock(&self.state);
            let Some(state) = guard.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            self.draw(&mut f, &meta, &settings, state, &mut warnings);
        }
        for w in warnings {
            gst::warning!(CAT, imp = self, "{w}");
            gst::element_imp_warning!(self, gst::StreamError::Format, ("{w}"));
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_parses_and_formats() {
        let p = parse_palette(DEFAULT_COLORS).unwrap();
        assert_eq!(p.len(), 6);
        assert_eq!(format_palette(&p), DEFAULT_COLORS);
        assert_eq!(
            parse_palette(" ff0000 , #00FF00").unwrap(),
            vec![[255, 0, 0], [0, 255, 0]]
        );
        for bad in ["", "#ff00", "#gg0000", "red", ",,"] {
            assert!(parse_palette(bad).is_err(), "{bad}");
        }
        assert_eq!(lighten([0, 100, 255], 0.5), [128, 178, 255]);
        assert_eq!(text_on([255, 255, 255]), [0, 0, 0]);
    }
}
