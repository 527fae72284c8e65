//! ikol-render: a CPU rasteriser for body meshes, skeletons and boxes into packed RGB/RGBA/BGRx
//! frames and planar I420 ones (the `ikoloverlay` element and the `ikol` command draw with it).
//!
//! Triangles are projected with the pinhole model (OpenCV convention, camera frame x right, y
//! down, z forward), culled when seen from behind (meshes that enclose a volume; open sheets
//! are two-sided), drawn in bands of rows, rasterised with edge functions over pixel centres
//! (four pixels of a row at a time, portable SIMD through `wide`), depth-tested against a
//! z-buffer of 1/z (affine in screen space, so perspective-correct without a division per
//! pixel), and shaded with Lambert's law from per-vertex normals under a light at the camera.
//! Meshes go into a [`Canvas`] layer first and are blended into the frame once per pixel, so a
//! translucent body shows its nearest surface only. `examples/render-bench.rs` measures it;
//! `tests/reference.rs` holds it to the picture of the straightforward rasteriser it replaced.

pub mod image;

use ikol_types::yuv::{YuvDecoder, YuvEncoder};
use ikol_types::{Intrinsics, YuvMatrix};
use std::ops::{Add, Mul};
use wide::f32x4;

/// Pixel layout of a frame buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb,
    Rgba,
    Bgrx,
    /// Planar YUV 4:2:0: the frame's `data` is the luma plane (see [`Frame::i420`]).
    I420,
}

impl PixelFormat {
    /// Bytes per pixel of `data` (the luma plane for I420).
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::I420 => 1,
            PixelFormat::Rgb => 3,
            PixelFormat::Rgba | PixelFormat::Bgrx => 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    #[error("frame buffer of {len} bytes is too small for {width}x{height} with stride {stride}")]
    BufferTooSmall {
        len: usize,
        width: usize,
        height: usize,
        stride: usize,
    },
    #[error("face {face} refers to vertex {vertex}, but there are {count} vertices")]
    BadFace {
        face: usize,
        vertex: u32,
        count: usize,
    },
    #[error("{colors} vertex colours for {vertices} vertices")]
    ColorCount { colors: usize, vertices: usize },
    #[error("{0:?} is a planar format: make the frame with Frame::i420")]
    Planar(PixelFormat),
    #[error("more than 255 meshes added to a canvas without compositing")]
    TooManyMeshes,
    #[error("canvas of {}x{} for a {}x{} frame", canvas.0, canvas.1, frame.0, frame.1)]
    CanvasSize {
        canvas: (usize, usize),
        frame: (usize, usize),
    },
}

/// Blends `rgb` over one pixel `px` (`format.bytes_per_pixel()` bytes) with opacity `alpha`
/// `a` = [`fixed_alpha`]: p (1 - alpha) + c alpha per channel, rounded, in 8.8 fixed point
/// (within one grey level of the exact value; exact at alpha 0 and 1); RGBA becomes opaque.
#[inline(always)]
fn blend_pixel(px: &mut [u8], format: PixelFormat, rgb: [u8; 3], a: u32) {
    match format {
        PixelFormat::Rgb => blend_as::<false, false>(px, rgb, a, true),
        PixelFormat::Rgba => blend_as::<false, true>(px, rgb, a, true),
        PixelFormat::Bgrx => blend_as::<true, false>(px, rgb, a, true),
        // planar: [`Frame::blend`] blends its planes itself
        PixelFormat::I420 => {}
    }
}

/// [`blend_pixel`] for a layout known at compile time: channels reversed when `BGR`, the
/// fourth byte made opaque when `ALPHA` and `drawn` (a = 0 alone changes no channel).
#[inline(always)]
fn blend_as<const BGR: bool, const ALPHA: bool>(px: &mut [u8], rgb: [u8; 3], a: u32, drawn: bool) {
    let c = if BGR { [rgb[2], rgb[1], rgb[0]] } else { rgb };
    for (p, c) in px.iter_mut().zip(c) {
        *p = blend_channel(*p, c, a);
    }
    if ALPHA && drawn {
        px[3] = 255;
    }
}

/// p (1 - alpha) + c alpha for one channel, `a` = [`fixed_alpha`] (exactly p at a = 0).
#[inline(always)]
fn blend_channel(p: u8, c: u8, a: u32) -> u8 {
    ((u32::from(p) * (256 - a) + u32::from(c) * a + 128) >> 8) as u8
}

/// Opacity in [0, 1] as a blend weight out of 256 (NaN -> 0, clamped).
fn fixed_alpha(alpha: f32) -> u32 {
    ((alpha * 256.0 + 0.5) as u32).min(256)
}

/// A mutable view of a packed frame, or of an I420 frame's three planes.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The packed pixels, or the luma plane.
    pub data: &'a mut [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    /// Set by the constructors only: it decides how `data` (and the chroma planes) are read.
    format: PixelFormat,
    chroma: Option<Chroma<'a>>,
}

/// The chroma planes of an I420 frame (half resolution, rounded up) and its colorimetry.
#[derive(Debug)]
struct Chroma<'a> {
    u: &'a mut [u8],
    v: &'a mut [u8],
    stride: usize,
    encoder: YuvEncoder,
    decoder: YuvDecoder,
}

fn too_small(len: usize, width: usize, height: usize, stride: usize) -> RenderError {
    RenderError::BufferTooSmall {
        len,
        width,
        height,
        stride,
    }
}

/// Whether `len` bytes hold `height` rows of `stride` with `row` bytes used.
fn holds(len: usize, height: usize, stride: usize, row: usize) -> bool {
    stride >= row && (height == 0 || len >= stride * (height - 1) + row)
}

/// Rounds a blended 8-bit value.
#[inline(always)]
fn to_u8(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

impl<'a> Frame<'a> {
    /// A packed frame (`format` RGB, RGBA or BGRx).
    pub fn new(
        data: &'a mut [u8],
        width: usize,
        height: usize,
        stride: usize,
        format: PixelFormat,
    ) -> Result<Self, RenderError> {
        if format == PixelFormat::I420 {
            return Err(RenderError::Planar(format));
        }
        if !holds(data.len(), height, stride, width * format.bytes_per_pixel()) {
            return Err(too_small(data.len(), width, height, stride));
        }
        Ok(Self {
            data,
            width,
            height,
            stride,
            format,
            chroma: None,
        })
    }

    /// An I420 frame: luma `y` (`y_stride`), chroma `u` and `v` (`uv_stride`, half the width
    /// and height rounded up), converted with `matrix`. Drawn colours are converted to YUV
    /// ([`YuvMatrix::from_rgb`]); a mesh's chroma is the mean of the blended colours of each 2x2
    /// block ([`Canvas::composite`]), a line's or label's is blended at the block's top-left
    /// pixel.
    #[allow(clippy::too_many_arguments)]
    pub fn i420(
        y: &'a mut [u8],
        u: &'a mut [u8],
        v: &'a mut [u8],
        width: usize,
        height: usize,
        y_stride: usize,
        uv_stride: usize,
        matrix: YuvMatrix,
    ) -> Result<Self, RenderError> {
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        if !holds(y.len(), height, y_stride, width) {
            return Err(too_small(y.len(), width, height, y_stride));
        }
        for plane in [&u, &v] {
            if !holds(plane.len(), ch, uv_stride, cw) {
                return Err(too_small(plane.len(), cw, ch, uv_stride));
            }
        }
        Ok(Self {
            data: y,
            width,
            height,
            stride: y_stride,
            format: PixelFormat::I420,
            chroma: Some(Chroma {
                u,
                v,
                stride: uv_stride,
                encoder: matrix.encoder(),
                decoder: matrix.decoder(),
            }),
        })
    }

    /// The pixel layout.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// Blends `rgb` over pixel (x, y) with opacity `alpha` in [0, 1].
    #[inline]
    pub fn blend(&mut self, x: usize, y: usize, rgb: [u8; 3], alpha: f32) {
        let bpp = self.format.bytes_per_pixel();
        let o = y * self.stride + x * bpp;
        if let Some(c) = self.chroma.as_mut() {
            let a = alpha.clamp(0.0, 1.0);
            if a.is_nan() {
                return;
            }
            let [ly, lu, lv] = c.encoder.yuv(rgb);
            let p = &mut self.data[o];
            *p = to_u8(f32::from(*p) + a * (ly - f32::from(*p)));
            if x.is_multiple_of(2) && y.is_multiple_of(2) {
                let o = (y / 2) * c.stride + x / 2;
                for (plane, target) in [(&mut *c.u, lu), (&mut *c.v, lv)] {
                    let p = &mut plane[o];
                    *p = to_u8(f32::from(*p) + a * (target - f32::from(*p)));
                }
            }
            return;
        }
        blend_pixel(
            &mut self.data[o..o + bpp],
            self.format,
            rgb,
            fixed_alpha(alpha),
        );
    }

    /// Reads pixel (x, y) as RGB (I420: with the chroma of its 2x2 block).
    pub fn rgb(&self, x: usize, y: usize) -> [u8; 3] {
        let o = y * self.stride + x * self.format.bytes_per_pixel();
        if let Some(c) = self.chroma.as_ref() {
            let co = (y / 2) * c.stride + x / 2;
            let (l, u, v) = (self.data[o], c.u[co], c.v[co]);
            return c
                .decoder
                .rgb(f32::from(l), f32::from(u), f32::from(v))
                .map(to_u8);
        }
        let p = &self.data[o..o + 3];
        match self.format {
            PixelFormat::Bgrx => [p[2], p[1], p[0]],
            _ => [p[0], p[1], p[2]],
        }
    }
}

/// Per row, the columns `lo..hi` that may hold something (empty when `lo >= hi`), so clearing
/// and compositing touch only where people were drawn, not their whole box (a figure with its
/// arms out covers a third of it).
#[derive(Debug, Clone)]
struct RowSpans {
    spans: Vec<(u32, u32)>,
    /// Rows `y0..y1` hold every non-empty span.
    y0: usize,
    y1: usize,
}

impl RowSpans {
    const EMPTY: (u32, u32) = (u32::MAX, 0);
    fn new(height: usize) -> Self {
        Self {
            spans: vec![Self::EMPTY; height],
            y0: usize::MAX,
            y1: 0,
        }
    }
    #[inline]
    fn add(&mut self, y: usize, lo: usize, hi: usize) {
        let s = &mut self.spans[y];
        s.0 = s.0.min(lo as u32);
        s.1 = s.1.max(hi as u32);
        self.y0 = self.y0.min(y);
        self.y1 = self.y1.max(y + 1);
    }
    /// The non-empty rows and their columns; forgets them.
    fn take(&mut self) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        let rows = if self.y0 < self.y1 {
            self.y0..self.y1
        } else {
            0..0
        };
        self.y0 = usize::MAX;
        self.y1 = 0;
        self.spans[rows.clone()]
            .iter_mut()
            .zip(rows)
            .map(|(s, y)| (y, std::mem::replace(s, Self::EMPTY)))
            .filter(|(_, (lo, hi))| lo < hi)
            .map(|(y, (lo, hi))| (y, lo as usize..hi as usize))
    }
}

/// One pixel of a [`Canvas`].
#[derive(Debug, Clone, Copy)]
struct Texel {
    /// 1/z of the nearest surface drawn, 0 where nothing is: 1/z is affine in screen space, so
    /// the depth test needs no division per pixel.
    inv_depth: f32,
    /// Its shaded colour.
    rgb: [u8; 3],
    /// Which mesh since the last composite drew it (1-based), 0 = none.
    mesh: u8,
}

impl Texel {
    const EMPTY: Texel = Texel {
        inv_depth: 0.0,
        rgb: [0; 3],
        mesh: 0,
    };
}

/// The rasteriser's reusable state for frames of one size: the z-buffer (shared by every mesh
/// drawn until [`Canvas::clear`], so people occlude each other), the mesh layer (per pixel the
/// nearest surface's shaded colour and opacity, blended into a frame once by
/// [`Canvas::composite`]), and scratch space, so that drawing allocates nothing per frame.
///
/// Blending once per pixel is what a translucent body should look like: surfaces hidden behind
/// the nearest one do not show through it, whatever order the triangles come in.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: usize,
    height: usize,
    /// Depth and layer in one array (8 bytes a pixel), so a triangle's row touches one cache
    /// line, not three: the body's triangles are small and come in mesh order, scattered over
    /// buffers far larger than the cache.
    texels: Vec<Texel>,
    /// Opacity ([`fixed_alpha`]) of each mesh added since the last composite (`Texel::mesh` - 1
    /// indexes it).
    opacities: Vec<u32>,
    /// Where depth may be set and where the layer may be.
    depth_rows: RowSpans,
    layer_rows: RowSpans,
    screen: Vec<[f32; 3]>,
    normals: Vec<[f32; 3]>,
    /// Faces to draw with their bands, the band counts, and the faces ordered by band
    /// (scratch).
    order: Vec<[u32; 2]>,
    bands: Vec<u32>,
    sorted: Vec<u32>,
    /// The layer's rows while compositing into I420 (scratch).
    spans: Vec<(usize, std::ops::Range<usize>)>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            texels: vec![Texel::EMPTY; width * height],
            opacities: Vec::new(),
            depth_rows: RowSpans::new(height),
            layer_rows: RowSpans::new(height),
            screen: Vec::new(),
            normals: Vec::new(),
            order: Vec::new(),
            bands: Vec::new(),
            sorted: Vec::new(),
            spans: Vec::new(),
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Forgets every surface drawn (depth and anything not yet composited).
    pub fn clear(&mut self) {
        let w = self.width;
        // The layer's spans lie inside the depth's.
        for (y, x) in self.depth_rows.take() {
            self.texels[y * w + x.start..y * w + x.end].fill(Texel::EMPTY);
        }
        self.layer_rows.take().for_each(drop);
        self.opacities.clear();
    }

    /// Camera depth (metres) of the nearest surface drawn at (x, y); infinity where none is.
    pub fn depth_at(&self, x: usize, y: usize) -> f32 {
        1.0 / self.texels[y * self.width + x].inv_depth
    }

    /// Rasterises a triangle mesh given in camera coordinates (metres) into the layer, with
    /// `style.color`. Triangles with a vertex behind the near plane (z < 1 cm) are skipped.
    /// Returns the number of fragments that passed the depth test.
    pub fn add_mesh(
        &mut self,
        k: &Intrinsics,
        vertices: &[[f32; 3]],
        faces: &[[u32; 3]],
        style: &MeshStyle,
    ) -> Result<usize, RenderError> {
        let c = style.color.map(|c| f32x4::splat(f32::from(c)));
        self.raster(k, vertices, faces, style, |_, _| c)
    }

    /// [`Canvas::add_mesh`] with a colour per vertex (interpolated across each triangle, then
    /// shaded); `style.color` is unused.
    pub fn add_mesh_colors(
        &mut self,
        k: &Intrinsics,
        vertices: &[[f32; 3]],
        faces: &[[u32; 3]],
        colors: &[[u8; 3]],
        style: &MeshStyle,
    ) -> Result<usize, RenderError> {
        if colors.len() != vertices.len() {
            return Err(RenderError::ColorCount {
                colors: colors.len(),
                vertices: vertices.len(),
            });
        }
        self.raster(k, vertices, faces, style, |f, w| {
            let [a, b, c] = f.map(|i| colors[i as usize].map(|c| f32x4::splat(f32::from(c))));
            lerp3(w[0], w[1], w[2], a, b, c)
        })
    }

    /// Blends the layer into `frame` (each covered pixel once, with its mesh's opacity) and
    /// empties the layer; the depth stays until [`Canvas::clear`].
    pub fn composite(&mut self, frame: &mut Frame<'_>) -> Result<(), RenderError> {
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(RenderError::CanvasSize {
                canvas: (self.width, self.height),
                frame: (frame.width, frame.height),
            });
        }
        // Blend weight by `Texel::mesh`: 0 (nothing drawn) blends nothing, exactly.
        let mut alpha = [0u32; 256];
        alpha[1..=self.opacities.len()].copy_from_slice(&self.opacities);
        // Per instruction set, as [`Canvas::raster`].
        pulp::Arch::new().dispatch(
            #[inline(always)]
            || match frame.format {
                PixelFormat::Rgb => self.composite_rows::<3, false, false>(frame, &alpha),
                PixelFormat::Rgba => self.composite_rows::<4, false, true>(frame, &alpha),
                PixelFormat::Bgrx => self.composite_rows::<4, true, false>(frame, &alpha),
                PixelFormat::I420 => self.composite_i420(frame, &alpha),
            },
        );
        self.opacities.clear();
        Ok(())
    }

    /// [`Canvas::composite`] for one pixel layout (`BPP` bytes, channels reversed when `BGR`,
    /// the fourth byte made opaque where drawn when `ALPHA`), without a branch per pixel.
    #[inline(always)]
    fn composite_rows<const BPP: usize, const BGR: bool, const ALPHA: bool>(
        &mut self,
        frame: &mut Frame<'_>,
        alpha: &[u32; 256],
    ) {
        for (y, x) in self.layer_rows.take() {
            let texels = &mut self.texels[y * self.width + x.start..y * self.width + x.end];
            let out = &mut frame.data[y * frame.stride + x.start * BPP..][..x.len() * BPP];
            for (t, px) in texels.iter_mut().zip(out.chunks_exact_mut(BPP)) {
                blend_as::<BGR, ALPHA>(px, t.rgb, alpha[usize::from(t.mesh)], t.mesh != 0);
                t.mesh = 0;
            }
        }
    }

    /// [`Canvas::composite`] into I420: luma blended per pixel; chroma per 2x2 block by the
    /// mean of its pixels' blends (four, fewer at the edge of an odd size: what blending in RGB, then averaging each block's
    /// chroma, gives: the conversion is affine).
    #[inline(always)]
    fn composite_i420(&mut self, frame: &mut Frame<'_>, alpha: &[u32; 256]) {
        let Some(c) = frame.chroma.as_mut() else {
            return;
        };
        let w = self.width;
        let mut spans = std::mem::take(&mut self.spans);
        spans.clear();
        spans.extend(self.layer_rows.take());
        let mut i = 0;
        while i < spans.len() {
            // The one or two rows of this chroma row.
            let (y, ref first) = spans[i];
            let second = spans
                .get(i + 1)
                .filter(|(y2, _)| y.is_multiple_of(2) && *y2 == y + 1)
                .map(|(_, r)| r.clone());
            let (lo, hi) = match &second {
                Some(r) => (first.start.min(r.start), first.end.max(r.end)),
                None => (first.start, first.end),
            };
            let cy = y / 2;
            let rows = [2 * cy, 2 * cy + 1];
            // Pixels of a block inside the frame (fewer in the last column or row of an odd
            // size): each block's chroma is the mean over those.
            let block_rows = if 2 * cy + 1 < self.height { 2 } else { 1 };
            // Each drawn pixel once: its luma blended, its chroma change summed for its block.
            for cx in lo / 2..hi.div_ceil(2) {
                let block_cols = if 2 * cx + 1 < w { 2 } else { 1 };
                let share = 1.0 / (block_rows * block_cols) as f32;
                let (mut du, mut dv, mut any) = (0.0f32, 0.0f32, false);
                let o = cy * c.stride + cx;
                let (u0, v0) = (f32::from(c.u[o]), f32::from(c.v[o]));
                for &ry in &rows[..block_rows] {
                    for rx in 2 * cx..2 * cx + block_cols {
                        // (outside this pair's spans nothing is drawn: mesh 0)
                        let t = &mut self.texels[ry * w + rx];
                        if t.mesh == 0 {
                            continue;
                        }
                        let a = alpha[usize::from(t.mesh)];
                        let [ty, tu, tv] = c.encoder.yuv(t.rgb);
                        let p = &mut frame.data[ry * frame.stride + rx];
                        *p = blend_channel(*p, to_u8(ty), a);
                        let af = a as f32 / 256.0;
                        du += af * (tu - u0);
                        dv += af * (tv - v0);
                        any = true;
                        t.mesh = 0;
                    }
                }
                if any {
                    c.u[o] = to_u8(u0 + share * du);
                    c.v[o] = to_u8(v0 + share * dv);
                }
            }
            let n = if second.is_some() { 2 } else { 1 };
            i += n;
        }
        self.spans = spans;
    }

    /// The rasteriser behind both `add_mesh`es: `color(face, barycentric weights)` gives the
    /// unshaded colour of four pixels. Compiled once per instruction set and picked at run
    /// time ([`pulp::Arch`]): the same four-lane arithmetic (no fused multiply-add, so the
    /// picture is the same bit for bit), but with AVX's three-operand forms and, on AVX-512,
    /// 32 registers, where SSE2's 16 spill the row loop's operands to the stack.
    fn raster(
        &mut self,
        k: &Intrinsics,
        vertices: &[[f32; 3]],
        faces: &[[u32; 3]],
        style: &MeshStyle,
        color: impl Fn(&[u32; 3], [f32x4; 3]) -> [f32x4; 3],
    ) -> Result<usize, RenderError> {
        pulp::Arch::new().dispatch(
            #[inline(always)]
            || self.raster_body(k, vertices, faces, style, color),
        )
    }

    /// [`Canvas::raster`]'s body, inlined into each instruction set's copy.
    #[inline(always)]
    fn raster_body(
        &mut self,
        k: &Intrinsics,
        vertices: &[[f32; 3]],
        faces: &[[u32; 3]],
        style: &MeshStyle,
        color: impl Fn(&[u32; 3], [f32x4; 3]) -> [f32x4; 3],
    ) -> Result<usize, RenderError> {
        if let Some((face, &vertex)) = faces.iter().enumerate().find_map(|(i, f)| {
            f.iter()
                .find(|&&v| v as usize >= vertices.len())
                .map(|v| (i, v))
        }) {
            return Err(RenderError::BadFace {
                face,
                vertex,
                count: vertices.len(),
            });
        }
        if self.opacities.len() == usize::from(u8::MAX) {
            return Err(RenderError::TooManyMeshes);
        }
        self.opacities.push(fixed_alpha(style.opacity));
        let mesh = self.opacities.len() as u8;
        let outward = normals_and_orientation(vertices, faces, &mut self.normals);
        let (fx, fy, cx, cy) = (k.fx as f32, k.fy as f32, k.cx as f32, k.cy as f32);
        self.screen.clear();
        self.screen.extend(
            vertices
                .iter()
                .map(|v| [fx * v[0] / v[2] + cx, fy * v[1] / v[2] + cy, v[2]]),
        );
        let ambient = f32x4::splat(style.ambient);
        // The faces to draw, ordered by the band of rows where they start (a counting sort,
        // stable, so mesh order within a band): the body's faces come in mesh order, scattered
        // over a z-buffer far larger than the cache, and drawn band by band a triangle finds
        // its rows' cache lines already loaded by its neighbours.
        let mut order = std::mem::take(&mut self.order);
        let mut bands = std::mem::take(&mut self.bands);
        order.clear();
        bands.clear();
        let last_band = self.height.div_ceil(BAND_ROWS).max(1) - 1;
        bands.resize(last_band + 2, 0);
        let band_of = |ymin: f32| ((ymin.max(0.0) as usize) / BAND_ROWS).min(last_band);
        for (i, f) in faces.iter().enumerate() {
            // Back-face culling: a face is seen from behind when its outward normal points away
            // from the camera (at the origin): n . a > 0, with n = (b - a) x (c - a) times the
            // mesh's winding.
            if outward != 0.0 && triple(f.map(|i| vertices[i as usize])) * outward >= 0.0 {
                continue;
            }
            let [a, b, c] = f.map(|i| self.screen[i as usize]);
            if a[2] < 0.01 || b[2] < 0.01 || c[2] < 0.01 {
                continue;
            }
            let band = band_of(a[1].min(b[1]).min(c[1]));
            order.push([i as u32, band as u32]);
            bands[band + 1] += 1;
        }
        for i in 1..bands.len() {
            bands[i] += bands[i - 1];
        }
        let mut sorted = std::mem::take(&mut self.sorted);
        sorted.clear();
        sorted.resize(order.len(), 0);
        for &[i, band] in &order {
            let slot = &mut bands[band as usize];
            sorted[*slot as usize] = i;
            *slot += 1;
        }
        let mut written = 0;
        for &i in &sorted {
            let f = &faces[i as usize];
            let [a, b, c] = f.map(|i| self.screen[i as usize]);
            let area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
            // Also skips non-finite vertices.
            if !area.is_finite() || area.abs() < 1e-12 {
                continue;
            }
            let (xmin, xmax) = (a[0].min(b[0]).min(c[0]), a[0].max(b[0]).max(c[0]));
            let (ymin, ymax) = (a[1].min(b[1]).min(c[1]), a[1].max(b[1]).max(c[1]));
            // Only pixel centres the triangle can reach: it widened by the edge tolerance
            // (w_i >= -e is the triangle scaled by 1 + 3e about its centroid, so it grows by
            // at most 3e times its extent) plus rounding. Without this, a triangle of ~15
            // pixels had two empty rows of its box tested pixel by pixel. (The box test of the
            // rasteriser before could also pass a pixel up to ~0.2 px outside a near-degenerate
            // sliver, by rounding in the weights at large coordinates; such pixels are no
            // longer drawn: 11 of 200,000 random triangles differed, all slivers.)
            let margin = 0.01 + 4.0 * -EDGE_EPS * (xmax - xmin + ymax - ymin);
            let x0 = ceil_i32(xmin - margin).max(0);
            let x1 = floor_i32(xmax + margin).min(self.width as i32 - 1);
            let y0 = ceil_i32(ymin - margin).max(0);
            let y1 = floor_i32(ymax + margin).min(self.height as i32 - 1);
            if x1 < x0 || y1 < y0 {
                continue;
            }
            let (x0, x1) = (x0 as usize, x1 as usize);
            let inv_area = 1.0 / area;
            let [iza, izb, izc] = [a, b, c].map(|v| f32x4::splat(1.0 / v[2]));
            let [na, nb, nc] = f.map(|i| self.normals[i as usize].map(f32x4::splat));
            let [va, vb, vc] = f.map(|i| vertices[i as usize].map(f32x4::splat));
            // Barycentric weights are affine in x along a row: w_i(x) = s_i x + t_i(y).
            let s0 = (b[1] - c[1]) * inv_area;
            let s1 = (c[1] - a[1]) * inv_area;
            let mut drawn = 0;
            for y in y0 as usize..=y1 as usize {
                let py = y as u32 as f32;
                let t0 = (b[0] * (c[1] - py) - (b[1] - py) * c[0]) * inv_area;
                let t1 = (c[0] * (a[1] - py) - (c[1] - py) * a[0]) * inv_area;
                let row = y * self.width;
                // Every pixel centre of the box's row, four at a time, without a branch on the
                // triangle's shape: a pixel is the triangle's when all three barycentric
                // weights reach the tolerance, and is drawn when it is also nearer than what
                // is there. Each lane takes the same operations in the same order as a pixel
                // alone would (the picture does not depend on the lanes).
                let (mut first, mut last) = (usize::MAX, 0);
                for x in (x0..=x1).step_by(4) {
                    let lanes = (x1 + 1 - x).min(4);
                    // Through u32: a u64 to f32 conversion is several instructions on x86-64.
                    let px = f32x4::from(LANE_OFFSETS) + f32x4::splat(x as u32 as f32);
                    let w0 = f32x4::splat(s0) * px + f32x4::splat(t0);
                    let w1 = f32x4::splat(s1) * px + f32x4::splat(t1);
                    let w2 = f32x4::ONE - w0 - w1;
                    let eps = f32x4::splat(EDGE_EPS);
                    let inside = w0.simd_ge(eps) & w1.simd_ge(eps) & w2.simd_ge(eps);
                    // Perspective-correct depth: 1/z is affine in screen space.
                    let iz = w0 * iza + w1 * izb + w2 * izc;
                    let old: [f32; 4] =
                        std::array::from_fn(|i| self.texels[row + x + i.min(lanes - 1)].inv_depth);
                    let pass =
                        (inside & iz.simd_gt(f32x4::from(old))).to_bitmask() & ((1 << lanes) - 1);
                    if pass == 0 {
                        continue;
                    }
                    first = first.min(x + pass.trailing_zeros() as usize);
                    last = x + (31 - pass.leading_zeros()) as usize;
                    // Lambert with the light at the camera: cos = |n . (-p/|p|)|; two-sided.
                    let n = lerp3(w0, w1, w2, na, nb, nc);
                    let p = lerp3(w0, w1, w2, va, vb, vc);
                    let nl = ((n[0] * n[0] + n[1] * n[1] + n[2] * n[2])
                        * (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]))
                        .sqrt();
                    let lambert = nl.simd_gt(f32x4::ZERO).select(
                        ((n[0] * p[0] + n[1] * p[1] + n[2] * p[2]) / nl).abs(),
                        f32x4::ONE,
                    );
                    let shade = ambient + (f32x4::ONE - ambient) * lambert;
                    // As `f32 as u8`: clamped to 0..=255, truncated, NaN -> 0 (SSE's and
                    // NEON's max give 0 for NaN; wide's scalar fallback would give 255).
                    let rgb = color(f, [w0, w1, w2]).map(|c| {
                        (c * shade)
                            .fast_max(f32x4::ZERO)
                            .fast_min(f32x4::splat(255.0))
                            .fast_trunc_int()
                            .to_array()
                    });
                    let iz = iz.to_array();
                    let mut bits = pass;
                    while bits != 0 {
                        let i = bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        let t = &mut self.texels[row + x + i];
                        t.inv_depth = iz[i];
                        t.rgb = rgb.map(|c| c[i] as u8);
                        t.mesh = mesh;
                        drawn += 1;
                    }
                }
                if first <= last {
                    self.depth_rows.add(y, first, last + 1);
                    self.layer_rows.add(y, first, last + 1);
                }
            }
            written += drawn;
        }
        self.order = order;
        self.bands = bands;
        self.sorted = sorted;
        Ok(written)
    }
}

/// Smallest integer >= x (saturating at the i32 range; NaN -> 0), without a libm call on
/// targets that lack a rounding instruction.
#[inline(always)]
fn ceil_i32(x: f32) -> i32 {
    let i = x as i32;
    if (i as f32) < x {
        i.saturating_add(1)
    } else {
        i
    }
}

/// Largest integer <= x (as [`ceil_i32`]).
#[inline(always)]
fn floor_i32(x: f32) -> i32 {
    let i = x as i32;
    if (i as f32) > x {
        i.saturating_sub(1)
    } else {
        i
    }
}

/// Pixel centres on an edge belong to the triangle (the z-test keeps shared edges from being
/// drawn twice); the tolerance on the barycentric weights absorbs rounding.
const EDGE_EPS: f32 = -1e-5;

/// Offsets of the four pixels shaded together.
const LANE_OFFSETS: [f32; 4] = [0.0, 1.0, 2.0, 3.0];

/// Rows per band of the draw order (16 rows of a 1080-wide z-buffer: 135 KiB).
const BAND_ROWS: usize = 16;

/// How a mesh is drawn.
#[derive(Debug, Clone, Copy)]
pub struct MeshStyle {
    pub color: [u8; 3],
    pub opacity: f32,
    /// Fraction of light that is ambient (the rest is Lambertian from the camera).
    pub ambient: f32,
}

impl Default for MeshStyle {
    fn default() -> Self {
        Self {
            color: [150, 180, 230],
            opacity: 1.0,
            ambient: 0.25,
        }
    }
}

/// a . (b x c): six times the signed volume of the tetrahedron (0, a, b, c); with a at the
/// origin of the face, a . ((b - a) x (c - a)) is the same number.
#[inline(always)]
fn triple([a, b, c]: [[f32; 3]; 3]) -> f32 {
    a[0] * (b[1] * c[2] - b[2] * c[1])
        + a[1] * (b[2] * c[0] - b[0] * c[2])
        + a[2] * (b[0] * c[1] - b[1] * c[0])
}

/// w0 a + w1 b + w2 c.
#[inline(always)]
fn lerp3<T: Copy + Mul<Output = T> + Add<Output = T>>(
    w0: T,
    w1: T,
    w2: T,
    a: [T; 3],
    b: [T; 3],
    c: [T; 3],
) -> [T; 3] {
    [
        w0 * a[0] + w1 * b[0] + w2 * c[0],
        w0 * a[1] + w1 * b[1] + w2 * c[1],
        w0 * a[2] + w1 * b[2] + w2 * c[2],
    ]
}

/// Per-vertex unit normals (area-weighted face normals), for shading.
pub fn vertex_normals(vertices: &[[f32; 3]], faces: &[[u32; 3]]) -> Vec<[f32; 3]> {
    let mut n = Vec::new();
    normals_and_orientation(vertices, faces, &mut n);
    n
}

/// [`vertex_normals`] into a reused buffer (faces must index `vertices`), and the faces'
/// winding, in the same pass over them: +1 when they wind counter-clockwise seen from outside
/// (their right-hand normals point out), -1 when clockwise, 0 when the mesh encloses no clear
/// volume (an open sheet, which is then drawn two-sided). Summed about the centroid g, the
/// faces' signed tetrahedron volumes (a - g) . ((b - a) x (c - a)) give the enclosed volume
/// with the winding's sign; for a closed mesh it is at least half the sum of their magnitudes
/// (all of it when convex), for a sheet it is near zero.
fn normals_and_orientation(
    vertices: &[[f32; 3]],
    faces: &[[u32; 3]],
    n: &mut Vec<[f32; 3]>,
) -> f32 {
    let count = vertices.len().max(1) as f64;
    let g = vertices.iter().fold([0f64; 3], |g, v| {
        [
            g[0] + f64::from(v[0]),
            g[1] + f64::from(v[1]),
            g[2] + f64::from(v[2]),
        ]
    });
    let g = g.map(|x| (x / count) as f32);
    let (mut volume, mut magnitude) = (0f64, 0f64);
    n.clear();
    n.resize(vertices.len(), [0.0; 3]);
    for f in faces {
        let [a, b, c] = f.map(|i| vertices[i as usize]);
        let e1 = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
        let e2 = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
        let fnrm = [
            e1[1] * e2[2] - e1[2] * e2[1],
            e1[2] * e2[0] - e1[0] * e2[2],
            e1[0] * e2[1] - e1[1] * e2[0],
        ];
        let t =
            f64::from((a[0] - g[0]) * fnrm[0] + (a[1] - g[1]) * fnrm[1] + (a[2] - g[2]) * fnrm[2]);
        volume += t;
        magnitude += t.abs();
        for &i in f {
            for k in 0..3 {
                n[i as usize][k] += fnrm[k];
            }
        }
    }
    for v in n.iter_mut() {
        let l = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if l > 0.0 {
            v.iter_mut().for_each(|x| *x /= l);
        }
    }
    if volume.abs() >= 0.5 * magnitude && magnitude > 0.0 {
        volume.signum() as f32
    } else {
        0.0
    }
}

/// Draws one triangle mesh (camera coordinates, metres) into `frame`: [`Canvas::add_mesh`]
/// then [`Canvas::composite`]. Meshes drawn one after another through the same canvas occlude
/// each other; to blend several translucent meshes once, add them all, then composite.
pub fn draw_mesh(
    frame: &mut Frame<'_>,
    canvas: &mut Canvas,
    k: &Intrinsics,
    vertices: &[[f32; 3]],
    faces: &[[u32; 3]],
    style: &MeshStyle,
) -> Result<usize, RenderError> {
    let n = canvas.add_mesh(k, vertices, faces, style)?;
    canvas.composite(frame)?;
    Ok(n)
}

/// [`draw_mesh`] with a colour per vertex ([`Canvas::add_mesh_colors`]).
pub fn draw_mesh_colors(
    frame: &mut Frame<'_>,
    canvas: &mut Canvas,
    k: &Intrinsics,
    vertices: &[[f32; 3]],
    faces: &[[u32; 3]],
    colors: &[[u8; 3]],
    style: &MeshStyle,
) -> Result<usize, RenderError> {
    let n = canvas.add_mesh_colors(k, vertices, faces, colors, style)?;
    canvas.composite(frame)?;
    Ok(n)
}

/// Draws a line segment (pixels) with the given thickness, clipped to the frame.
pub fn draw_line(frame: &mut Frame<'_>, p0: [f32; 2], p1: [f32; 2], thickness: f32, rgb: [u8; 3]) {
    let (dx, dy) = (p1[0] - p0[0], p1[1] - p0[1]);
    let len2 = dx * dx + dy * dy;
    let r = thickness * 0.5;
    let x0 = (p0[0].min(p1[0]) - r).floor().max(0.0) as usize;
    let y0 = (p0[1].min(p1[1]) - r).floor().max(0.0) as usize;
    let x1 = ((p0[0].max(p1[0]) + r).ceil().min(frame.width as f32 - 1.0)).max(-1.0);
    let y1 = ((p0[1].max(p1[1]) + r).ceil().min(frame.height as f32 - 1.0)).max(-1.0);
    if x1 < 0.0 || y1 < 0.0 {
        return;
    }
    for y in y0..=y1 as usize {
        for x in x0..=x1 as usize {
            let (px, py) = (x as f32 - p0[0], y as f32 - p0[1]);
            let t = if len2 > 0.0 {
                ((px * dx + py * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (ex, ey) = (px - t * dx, py - t * dy);
            if ex * ex + ey * ey <= r * r {
                frame.blend(x, y, rgb, 1.0);
            }
        }
    }
}

/// Draws an axis-aligned rectangle outline.
pub fn draw_box(frame: &mut Frame<'_>, b: &ikol_types::BBox, thickness: f32, rgb: [u8; 3]) {
    let (x0, y0, x1, y1) = (
        b.x as f32,
        b.y as f32,
        (b.x + b.w) as f32,
        (b.y + b.h) as f32,
    );
    for (p, q) in [
        ([x0, y0], [x1, y0]),
        ([x1, y0], [x1, y1]),
        ([x1, y1], [x0, y1]),
        ([x0, y1], [x0, y0]),
    ] {
        draw_line(frame, p, q, thickness, rgb);
    }
}

/// Width of a glyph of the built-in label font, in font pixels.
pub const GLYPH_WIDTH: usize = 5;
/// Height of a glyph of the built-in label font, in font pixels.
pub const GLYPH_HEIGHT: usize = 7;

/// The built-in 5x7 bitmap font: digits, `# - : .`, space and the letters of short labels
/// (`A D E I J K L M O P R S T V`, lower case drawn as upper case). Each row is 5 bits, the most
/// significant (bit 4) leftmost; anything else is drawn as `?`.
fn glyph(c: char) -> [u8; GLYPH_HEIGHT] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ' ' => [0x00; GLYPH_HEIGHT],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

/// Size in pixels (width, height) of a label drawn by [`draw_label`] at `scale`: one font pixel
/// of padding on every side and one font pixel between glyphs, each font pixel `scale` pixels
/// square.
pub fn label_size(text: &str, scale: usize) -> (usize, usize) {
    let n = text.chars().count();
    let s = scale.max(1);
    let w = if n == 0 {
        2 * s
    } else {
        (n * (GLYPH_WIDTH + 1) + 1) * s
    };
    (w, (GLYPH_HEIGHT + 2) * s)
}

/// Draws `text` (for example a track id, `"#12"`) with the built-in 5x7 font, its top-left
/// corner at (x, y), in colour `fg` over an opaque `bg` box (or over the frame when `bg` is
/// `None`). Parts outside the frame are clipped. Returns the label's size as [`label_size`].
pub fn draw_label(
    frame: &mut Frame<'_>,
    x: i64,
    y: i64,
    text: &str,
    scale: usize,
    fg: [u8; 3],
    bg: Option<[u8; 3]>,
) -> (usize, usize) {
    let s = scale.max(1);
    let (w, h) = label_size(text, s);
    let (fw, fh) = (frame.width as i64, frame.height as i64);
    let put = |frame: &mut Frame<'_>, px: i64, py: i64, rgb: [u8; 3]| {
        if (0..fw).contains(&px) && (0..fh).contains(&py) {
            frame.blend(px as usize, py as usize, rgb, 1.0);
        }
    };
    if let Some(bg) = bg {
        for py in y..y + h as i64 {
            for px in x..x + w as i64 {
                put(frame, px, py, bg);
            }
        }
    }
    for (i, c) in text.chars().enumerate() {
        let gx = x + ((i * (GLYPH_WIDTH + 1) + 1) * s) as i64;
        let gy = y + s as i64;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_WIDTH {
                if bits & (1 << (GLYPH_WIDTH - 1 - col)) == 0 {
                    continue;
                }
                for dy in 0..s {
                    for dx in 0..s {
                        put(
                            frame,
                            gx + (col * s + dx) as i64,
                            gy + (row * s + dy) as i64,
                            fg,
                        );
                    }
                }
            }
        }
    }
    (w, h)
}

/// Writes a packed RGB image as PNG.
pub fn write_png(
    path: &std::path::Path,
    rgb: &[u8],
    width: u32,
    height: u32,
) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    w.write_image_data(rgb).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> Intrinsics {
        Intrinsics {
            fx: 100.0,
            fy: 100.0,
            cx: 32.0,
            cy: 32.0,
        }
    }

    /// A square of side 2s centred on the optical axis at depth z, facing the camera.
    fn square(s: f32, z: f32, dx: f32) -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
        (
            vec![
                [dx - s, -s, z],
                [dx + s, -s, z],
                [dx + s, s, z],
                [dx - s, s, z],
            ],
            vec![[0, 1, 2], [0, 2, 3]],
        )
    }

    #[test]
    fn every_pixel_format_composites_the_same_colours() {
        // One translucent square over a varied background in RGB, RGBA and BGRx: the same
        // blended colour in each; BGRx's fourth byte untouched, RGBA's opaque where drawn.
        let (v, f) = square(0.1, 2.0, 0.0);
        let style = MeshStyle {
            opacity: 0.7,
            ..MeshStyle::default()
        };
        let bg = |x: usize, y: usize, ch: usize| ((x * 7 + y * 13 + ch * 50) % 256) as u8;
        let mut pictures = Vec::new();
        for format in [PixelFormat::Rgb, PixelFormat::Rgba, PixelFormat::Bgrx] {
            let bpp = format.bytes_per_pixel();
            let mut buf: Vec<u8> = (0..64 * 64 * bpp)
                .map(|i| bg(i / bpp % 64, i / bpp / 64, i % bpp))
                .collect();
            if format == PixelFormat::Bgrx {
                for (i, px) in buf.chunks_exact_mut(4).enumerate() {
                    px.swap(0, 2);
                    px[3] = (i % 256) as u8;
                }
            }
            let mut frame = Frame::new(&mut buf, 64, 64, 64 * bpp, format).unwrap();
            let mut canvas = Canvas::new(64, 64);
            canvas.add_mesh(&k(), &v, &f, &style).unwrap();
            canvas.composite(&mut frame).unwrap();
            let rgb: Vec<[u8; 3]> = (0..64 * 64).map(|i| frame.rgb(i % 64, i / 64)).collect();
            for (i, px) in buf.chunks_exact(bpp).enumerate() {
                let drawn = rgb[i] != [0, 1, 2].map(|ch| bg(i % 64, i / 64, ch));
                match format {
                    PixelFormat::Rgba => {
                        assert_eq!(px[3], if drawn { 255 } else { bg(i % 64, i / 64, 3) })
                    }
                    PixelFormat::Bgrx => assert_eq!(px[3], (i % 256) as u8),
                    PixelFormat::Rgb => {}
                    PixelFormat::I420 => unreachable!("packed formats only"),
                }
            }
            pictures.push(rgb);
        }
        let covered = pictures[0]
            .iter()
            .enumerate()
            .filter(|(i, c)| **c != [0, 1, 2].map(|ch| bg(i % 64, i / 64, ch)))
            .count();
        assert!(covered > 50, "{covered} pixels drawn");
        assert_eq!(pictures[0], pictures[1]);
        assert_eq!(pictures[0], pictures[2]);
    }

    /// An I420 frame gets what drawing in RGB and then converting gives: the standards' luma
    /// of each pixel, each 2x2 block's chroma the mean of its pixels' (the reference is
    /// written here from BT.709's equations, not from `ikol_types::yuv`); opaque lines and
    /// boxes give their colour's chroma at the blocks whose top-left pixel they cover.
    #[test]
    fn i420_frames_get_the_rgb_picture_converted() {
        // A small square in the middle and a large one over the bottom-right corner (so the
        // last column and row of an odd size are drawn: their blocks have 2 or 1 pixels).
        let (mut v, mut f) = square(0.13, 2.0, 0.03);
        let (mut v2, f2) = square(0.3, 2.0, 0.5);
        v2.iter_mut().for_each(|p| p[1] += 0.5);
        let n = v.len() as u32;
        v.extend(v2);
        f.extend(f2.iter().map(|t| t.map(|i| i + n)));
        let style = MeshStyle {
            opacity: 0.7,
            ..MeshStyle::default()
        };
        // BT.709 limited range from the equations.
        let yuv = |c: [u8; 3]| -> [f64; 3] {
            let [r, g, b] = c.map(f64::from);
            let (kr, kb) = (0.2126, 0.0722);
            let yp = kr * r + (1.0 - kr - kb) * g + kb * b;
            [
                16.0 + 219.0 / 255.0 * yp,
                128.0 + 224.0 / 255.0 * (b - yp) / (2.0 * (1.0 - kb)),
                128.0 + 224.0 / 255.0 * (r - yp) / (2.0 * (1.0 - kr)),
            ]
        };
        for (w, h) in [(64usize, 64usize), (63, 61)] {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let bg =
                |x: usize, y: usize| [(x * 3 + 20) as u8, (y * 3 + 30) as u8, ((x + y) + 60) as u8];
            // The pixels of chroma block i inside the frame.
            let block_pixels = |i: usize| {
                let (bx, by) = (i % cw, i / cw);
                [(0, 0), (1, 0), (0, 1), (1, 1)]
                    .into_iter()
                    .map(move |(dx, dy)| (2 * bx + dx, 2 * by + dy))
                    .filter(move |&(x, y)| x < w && y < h)
            };
            // I420 of an RGB picture: luma per pixel, chroma the block mean.
            let to_i420 = |rgb: &dyn Fn(usize, usize) -> [u8; 3]| {
                let y: Vec<f64> = (0..w * h).map(|i| yuv(rgb(i % w, i / w))[0]).collect();
                let block = |c: usize| {
                    (0..cw * ch)
                        .map(|i| {
                            let px: Vec<_> = block_pixels(i).collect();
                            px.iter().map(|&(x, y)| yuv(rgb(x, y))[c]).sum::<f64>()
                                / px.len() as f64
                        })
                        .collect::<Vec<f64>>()
                };
                (y, block(1), block(2))
            };
            let line = ([5.0f32, 40.0], [60.0, 46.0], [255u8, 200, 0]);
            // RGB: the picture, then the reference conversion of it.
            let mut rgb: Vec<u8> = (0..w * h).flat_map(|i| bg(i % w, i / w)).collect();
            let mut frame = Frame::new(&mut rgb, w, h, 3 * w, PixelFormat::Rgb).unwrap();
            let mut canvas = Canvas::new(w, h);
            canvas.add_mesh(&k(), &v, &f, &style).unwrap();
            canvas.composite(&mut frame).unwrap();
            draw_line(&mut frame, line.0, line.1, 3.0, line.2);
            let (ry, ru, rv) = to_i420(&|x, y| frame.rgb(x, y));
            // I420: the background converted (rounded), then the same drawing.
            let (by, bu, bv) = to_i420(&|x, y| bg(x, y));
            let round = |p: &[f64]| p.iter().map(|v| (v + 0.5) as u8).collect::<Vec<u8>>();
            let (mut py, mut pu, mut pv) = (round(&by), round(&bu), round(&bv));
            let mut frame =
                Frame::i420(&mut py, &mut pu, &mut pv, w, h, w, cw, YuvMatrix::BT709).unwrap();
            canvas.clear();
            canvas.add_mesh(&k(), &v, &f, &style).unwrap();
            canvas.composite(&mut frame).unwrap();
            draw_line(&mut frame, line.0, line.1, 3.0, line.2);
            let on_line =
                |(x, y): (usize, usize)| rgb[3 * (y * w + x)..3 * (y * w + x) + 3] == line.2;
            for i in 0..w * h {
                assert!(
                    (f64::from(py[i]) - ry[i]).abs() <= 1.5,
                    "{w}x{h} luma at {i}: {} vs {}",
                    py[i],
                    ry[i]
                );
            }
            let (mut drawn, mut edge) = (0, 0);
            for i in 0..cw * ch {
                let corner = on_line((2 * (i % cw), 2 * (i / cw)));
                let (u, v) = (f64::from(pu[i]), f64::from(pv[i]));
                if corner {
                    let [_, lu, lv] = yuv(line.2);
                    assert!(
                        (u - lu).abs() <= 1.5 && (v - lv).abs() <= 1.5,
                        "line block {i}"
                    );
                } else if !block_pixels(i).any(on_line) {
                    assert!(
                        (u - ru[i]).abs() <= 1.5 && (v - rv[i]).abs() <= 1.5,
                        "{w}x{h} chroma block {i}: ({u}, {v}) vs ({}, {})",
                        ru[i],
                        rv[i]
                    );
                    if (ru[i] - bu[i]).abs() > 3.0 {
                        drawn += 1;
                        edge += usize::from(block_pixels(i).count() < 4);
                    }
                }
            }
            assert!(drawn > 30, "{w}x{h}: {drawn} blocks changed by the mesh");
            if w % 2 == 1 {
                assert!(edge > 5, "{w}x{h}: {edge} part blocks changed by the mesh");
            }
        }
    }

    #[test]
    fn projection_lands_where_pinhole_says() {
        // Square half-side 0.1 m at 2 m: projects to 32 +- 100 * 0.1 / 2 = [27, 37].
        let mut buf = vec![0u8; 64 * 64 * 3];
        let mut f = Frame::new(&mut buf, 64, 64, 64 * 3, PixelFormat::Rgb).unwrap();
        let mut d = Canvas::new(64, 64);
        let (v, fc) = square(0.1, 2.0, 0.0);
        let style = MeshStyle {
            ambient: 1.0,
            ..Default::default()
        };
        let n = draw_mesh(&mut f, &mut d, &k(), &v, &fc, &style).unwrap();
        assert_eq!(n, 11 * 11, "pixel centres 27..=37 on both axes");
        assert_eq!(f.rgb(27, 27), style.color);
        assert_eq!(f.rgb(37, 37), style.color);
        assert_eq!(f.rgb(26, 32), [0, 0, 0]);
        assert_eq!(f.rgb(38, 32), [0, 0, 0]);
        assert!((d.depth_at(32, 32) - 2.0).abs() < 1e-5);
    }

    #[test]
    fn vertex_colours_interpolate_barycentrically() {
        let style = MeshStyle {
            ambient: 1.0,
            ..Default::default()
        };
        // A triangle facing the camera at 2 m: screen (a) 22,22 (b) 42,22 (c) 32,42 with f = 100 px
        // and the principal point at 32: 32 + 100 x / 2.
        let v = vec![[-0.2, -0.2, 2.0], [0.2, -0.2, 2.0], [0.0, 0.2, 2.0]];
        let fc = vec![[0u32, 1, 2]];
        let colors = [[255, 0, 0], [0, 255, 0], [0, 0, 255]];
        let mut buf = vec![0u8; 64 * 64 * 3];
        let mut f = Frame::new(&mut buf, 64, 64, 64 * 3, PixelFormat::Rgb).unwrap();
        let mut d = Canvas::new(64, 64);
        draw_mesh_colors(&mut f, &mut d, &k(), &v, &fc, &colors, &style).unwrap();
        // Pixel (32, 28): weight of c = (28 - 22) / 20 = 0.3, a and b 0.35 each by symmetry.
        assert_eq!(f.rgb(32, 28), [89, 89, 76]);
        assert_eq!(f.rgb(22, 22), [255, 0, 0]);
        // One colour everywhere draws exactly what draw_mesh draws.
        let (v, fc) = square(0.1, 2.0, 0.03);
        let shaded = MeshStyle::default();
        let mut a = vec![0u8; 64 * 64 * 3];
        let mut b = a.clone();
        let mut fa = Frame::new(&mut a, 64, 64, 64 * 3, PixelFormat::Rgb).unwrap();
        let mut fb = Frame::new(&mut b, 64, 64, 64 * 3, PixelFormat::Rgb).unwrap();
        draw_mesh(&mut fa, &mut Canvas::new(64, 64), &k(), &v, &fc, &shaded).unwrap();
        let same = vec![shaded.color; v.len()];
        let mut da = Canvas::new(64, 64);
        draw_mesh_colors(&mut fb, &mut da, &k(), &v, &fc, &same, &shaded).unwrap();
        assert_eq!(a, b);
        let mut fb = Frame::new(&mut b, 64, 64, 64 * 3, PixelFormat::Rgb).unwrap();
        let e = draw_mesh_colors(&mut fb, &mut da, &k(), &v, &fc, &same[..2], &shaded).unwrap_err();
        assert!(
            e.to_string().contains("2 vertex colours for 4 vertices"),
            "{e}"
        );
    }

    #[test]
    fn zbuffer_keeps_the_nearer_surface_in_either_order() {
        for near_first in [true, false] {
            let mut buf = vec![0u8; 64 * 64 * 4];
            let mut f = Frame::new(&mut buf, 64, 64, 64 * 4, PixelFormat::Bgrx).unwrap();
            let mut d = Canvas::new(64, 64);
            let near = (
                square(0.1, 2.0, 0.0),
                MeshStyle {
                    color: [255, 0, 0],
                    ambient: 1.0,
                    opacity: 1.0,
                },
            );
            let far = (
                square(0.3, 4.0, 0.0),
                MeshStyle {
                    color: [0, 0, 255],
                    ambient: 1.0,
                    opacity: 1.0,
                },
            );
            let order = if near_first {
                [&near, &far]
            } else {
                [&far, &near]
            };
            for ((v, fc), s) in order {
                draw_mesh(&mut f, &mut d, &k(), v, fc, s).unwrap();
            }
            assert_eq!(f.rgb(32, 32), [255, 0, 0], "near square wins at the centre");
            assert_eq!(f.rgb(25, 32), [0, 0, 255], "far square visible around it");
            assert_eq!(buf[(32 * 64 + 32) * 4], 0, "BGRx stores blue first");
        }
    }

    /// A cube of side 2s centred on the optical axis at depth z, faces wound outward
    /// (counter-clockwise seen from outside) when `outward`, else inward.
    fn cube(s: f32, z: f32, outward: bool) -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
        let v: Vec<[f32; 3]> = (0..8)
            .map(|i| {
                let b = |k: usize| if i >> k & 1 == 1 { s } else { -s };
                [b(0), b(1), z + b(2)]
            })
            .collect();
        // Quads by corner bits (x = 1, y = 2, z = 4), counter-clockwise seen from outside.
        let quads = [
            [0, 2, 3, 1], // z-
            [4, 5, 7, 6], // z+
            [0, 1, 5, 4], // y-
            [2, 6, 7, 3], // y+
            [0, 4, 6, 2], // x-
            [1, 3, 7, 5], // x+
        ];
        let mut f = Vec::new();
        for q in quads {
            for t in [[q[0], q[1], q[2]], [q[0], q[2], q[3]]] {
                f.push(if outward { t } else { [t[0], t[2], t[1]] });
            }
        }
        (v, f)
    }

    #[test]
    fn translucent_cube_blends_once_and_back_faces_are_culled() {
        for outward in [true, false] {
            let (v, fc) = cube(0.1, 2.0, outward);
            // Its winding is found from the enclosed volume either way.
            assert_eq!(
                normals_and_orientation(&v, &fc, &mut Vec::new()),
                if outward { 1.0 } else { -1.0 }
            );
            let mut buf = vec![40u8; 64 * 64 * 3];
            let mut f = Frame::new(&mut buf, 64, 64, 64 * 3, PixelFormat::Rgb).unwrap();
            let mut canvas = Canvas::new(64, 64);
            let style = MeshStyle {
                color: [200, 100, 0],
                opacity: 0.5,
                ambient: 1.0,
            };
            let n = canvas.add_mesh(&k(), &v, &fc, &style).unwrap();
            // Only the front face (z = 1.9: 32 +- 100 * 0.1 / 1.9 -> pixels 27..=37) and
            // the four sides seen edge-on-ish from the axis; the back face (z = 2.1) is culled.
            assert!(n < 2 * 11 * 11, "{n} fragments");
            canvas.composite(&mut f).unwrap();
            // round(40 * 0.5 + c * 0.5), once: a second blend would give 70 / 45 / 10 + ....
            assert_eq!(f.rgb(32, 32), [120, 70, 20]);
            assert_eq!(f.rgb(5, 5), [40, 40, 40]);
            assert!((canvas.depth_at(32, 32) - 1.9).abs() < 1e-5);
            assert_eq!(canvas.depth_at(5, 5), f32::INFINITY);
            // Compositing again adds nothing; clearing forgets the depth.
            canvas.composite(&mut f).unwrap();
            assert_eq!(f.rgb(32, 32), [120, 70, 20]);
            canvas.clear();
            assert_eq!(canvas.depth_at(32, 32), f32::INFINITY);
        }
        // An open sheet is drawn from both sides.
        let (v, fc) = square(0.1, 2.0, 0.0);
        let flipped: Vec<[u32; 3]> = fc.iter().map(|t| [t[0], t[2], t[1]]).collect();
        assert_eq!(normals_and_orientation(&v, &fc, &mut Vec::new()), 0.0);
        let mut c = Canvas::new(64, 64);
        let style = MeshStyle::default();
        assert!(c.add_mesh(&k(), &v, &flipped, &style).unwrap() >= 121);
        let mut buf = vec![0u8; 64 * 64 * 3];
        let mut f = Frame::new(&mut buf, 64, 64, 64 * 3, PixelFormat::Rgb).unwrap();
        c.composite(&mut f).unwrap();
        assert_eq!(buf.chunks(3).filter(|p| p != &[0, 0, 0]).count(), 121);
    }

    #[test]
    fn packed_constructor_refuses_planar_formats() {
        let mut buf = vec![0u8; 64 * 64 * 3];
        let e = Frame::new(&mut buf, 64, 64, 64, PixelFormat::I420).unwrap_err();
        assert!(matches!(e, RenderError::Planar(PixelFormat::I420)), "{e}");
        assert!(e.to_string().contains("Frame::i420"), "{e}");
    }

    #[test]
    fn canvas_errors() {
        let mut c = Canvas::new(64, 64);
        let mut buf = vec![0u8; 32 * 32 * 3];
        let mut f = Frame::new(&mut buf, 32, 32, 96, PixelFormat::Rgb).unwrap();
        let e = c.composite(&mut f).unwrap_err();
        assert_eq!(e.to_string(), "canvas of 64x64 for a 32x32 frame");
        let (v, fc) = square(0.1, 2.0, 0.0);
        for _ in 0..255 {
            c.add_mesh(&k(), &v, &fc, &MeshStyle::default()).unwrap();
        }
        let e = c
            .add_mesh(&k(), &v, &fc, &MeshStyle::default())
            .unwrap_err();
        assert!(matches!(e, RenderError::TooManyMeshes), "{e}");
        c.clear();
        c.add_mesh(&k(), &v, &fc, &MeshStyle::default()).unwrap();
        // Non-finite vertices draw nothing and do not panic.
        let bad = vec![
            [f32::NAN, 0.0, 2.0],
            [0.1, f32::INFINITY, 2.0],
            [0.0, 0.1, 2.0],
        ];
        assert_eq!(
            c.add_mesh(&k(), &bad, &[[0, 1, 2]], &MeshStyle::default())
                .unwrap(),
            0
        );
    }

    #[test]
    fn shading_and_errors() {
        // A plane tilted by 60 degrees about y: Lambert cos ~ 0.5 at the centre.
        let (c, s) = (60f32.to_radians().cos(), 60f32.to_radians().sin());
        let v: Vec<[f32; 3]> = [[-0.1, -0.1], [0.1, -0.1], [0.1, 0.1], [-0.1, 0.1]]
            .iter()
            .map(|p| [p[0] * c, p[1], 2.0 + p[0] * s])
            .collect();
        let mut buf = vec![0u8; 64 * 64 * 3];
        let mut f = Frame::new(&mut buf, 64, 64, 64 * 3, PixelFormat::Rgb).unwrap();
        let mut d = Canvas::new(64, 64);
        let style = MeshStyle {
            color: [200, 200, 200],
            ambient: 0.0,
            opacity: 1.0,
        };
        draw_mesh(&mut f, &mut d, &k(), &v, &[[0, 1, 2], [0, 2, 3]], &style).unwrap();
        let g = f.rgb(32, 32)[0] as f32;
        assert!((g - 100.0).abs() <= 3.0, "lambert 0.5 of 200, got {g}");
        assert!(draw_mesh(&mut f, &mut d, &k(), &v, &[[0, 1, 9]], &style).is_err());
        assert!(Frame::new(&mut [0u8; 10], 4, 4, 12, PixelFormat::Rgb).is_err());
    }

    #[test]
    fn labels_use_the_bitmap_font_and_clip() {
        let mut buf = vec![0u8; 40 * 20 * 3];
        let mut f = Frame::new(&mut buf, 40, 20, 120, PixelFormat::Rgb).unwrap();
        let (w, h) = draw_label(&mut f, 2, 3, "#1", 1, [255, 255, 255], Some([0, 0, 200]));
        assert_eq!((w, h), (13, 9));
        assert_eq!(label_size("#1", 2), (26, 18));
        // Background corners, then glyph pixels: '#' row 0 = .X.X. at x = 2 + 1.
        assert_eq!(f.rgb(2, 3), [0, 0, 200]);
        assert_eq!(f.rgb(14, 11), [0, 0, 200]);
        assert_eq!(f.rgb(15, 11), [0, 0, 0], "nothing right of the label");
        assert_eq!(f.rgb(3, 4), [0, 0, 200]);
        assert_eq!(f.rgb(4, 4), [255, 255, 255]);
        assert_eq!(f.rgb(6, 4), [255, 255, 255]);
        // '1' starts at x = 2 + 1 + 6: its row 0 is ..X.. and row 6 is .XXX.
        assert_eq!(f.rgb(11, 4), [255, 255, 255]);
        assert_eq!(f.rgb(10, 4), [0, 0, 200]);
        assert_eq!(
            (10..13).map(|x| f.rgb(x, 10)).collect::<Vec<_>>(),
            vec![[255; 3]; 3]
        );
        // Lower case draws as upper case; unknown characters as '?'.
        let mut a = vec![0u8; 40 * 20 * 3];
        let mut b = vec![0u8; 40 * 20 * 3];
        for (buf, t) in [(&mut a, "id"), (&mut b, "ID")] {
            let mut f = Frame::new(buf, 40, 20, 120, PixelFormat::Rgb).unwrap();
            draw_label(&mut f, 0, 0, t, 2, [9, 9, 9], None);
        }
        assert_eq!(a, b);
        assert_ne!(glyph('~'), [0; GLYPH_HEIGHT]);
        // Clipped on every side, no panic; transparent background leaves the frame.
        let mut f = Frame::new(&mut buf, 40, 20, 120, PixelFormat::Rgb).unwrap();
        draw_label(&mut f, -7, -5, "0123456789", 3, [1, 2, 3], Some([4, 5, 6]));
        draw_label(&mut f, 35, 15, "88", 2, [1, 2, 3], None);
        assert_eq!(
            f.rgb(39, 19),
            [4, 5, 6],
            "bottom padding row of the clipped label"
        );
    }

    #[test]
    fn lines_and_boxes() {
        let mut buf = vec![0u8; 32 * 32 * 3];
        let mut f = Frame::new(&mut buf, 32, 32, 96, PixelFormat::Rgb).unwrap();
        draw_box(
            &mut f,
            &ikol_types::BBox {
                x: 4.0,
                y: 4.0,
                w: 20.0,
                h: 10.0,
            },
            1.0,
            [0, 255, 0],
        );
        assert_eq!(f.rgb(14, 4), [0, 255, 0]);
        assert_eq!(f.rgb(24, 9), [0, 255, 0]);
        assert_eq!(f.rgb(14, 9), [0, 0, 0]);
        draw_line(&mut f, [-10.0, -10.0], [100.0, 100.0], 2.0, [9, 9, 9]); // clipped, no panic
        assert_eq!(f.rgb(20, 20), [9, 9, 9]);
    }
}
