//! CPU kernels of the TensorFlow Lite interpreter, as candle custom ops on NHWC `f32` tensors
//! (batch first, channels last, as the graphs store them). The semantics follow the TensorFlow
//! Lite builtin operators:
//!
//! * window geometry: `SAME` gives `out = ceil(in / s)` and pads `total = max(0, (out - 1) s +
//!   (k - 1) d + 1 - in)` with `floor(total / 2)` before; `VALID` gives
//!   `out = floor((in - (k - 1) d - 1) / s) + 1` and no padding. A PAD operator that only feeds
//!   a VALID convolution is folded into the window as explicit padding (zeros either way);
//! * [`Depthwise`]: `y[oy, ox, c m + j] = b[c m + j] + sum_{ky, kx} x[oy s - p + ky d,
//!   ox s - p + kx d, c] w[ky, kx, c m + j]` (depth multiplier `m`), zero outside the image,
//!   then the fused activation. A direct kernel with the channel loop innermost (contiguous in
//!   NHWC, so it vectorises); candle's grouped convolution would run one convolution per
//!   channel;
//! * [`Im2Col`]: the lowering of a convolution to a matrix product (Chellapilla et al. 2006) in
//!   NHWC order: row `oy * W_out + ox` holds the patch `(ky, kx, c)`, the same order as a
//!   TensorFlow Lite `[C_out, kh, kw, C_in]` filter, so `conv = im2col(x) . W^T`;
//! * [`ConvDirect`]: the same convolution as one dot product per output channel (with `LANES`
//!   partial sums), for the layers with very few output channels (a matrix product with 1
//!   column wastes the im2col copy);
//! * [`BiasAct`]: `y += b` per channel then the activation, in place after a matrix product;
//! * [`AddAct`]: `act(a + b)` for equal shapes in one pass;
//! * [`Pad`]: zero padding of an NHWC tensor in one pass;
//! * [`ResizeBilinear`]: `scale = (in - 1) / (out - 1)` with `align_corners` (and out > 1),
//!   else `in / out`; source coordinate `(o + 0.5) scale - 0.5` with `half_pixel_centers`, else
//!   `o scale`; lower neighbour `max(floor(src), 0)`, upper `min(ceil(src), in - 1)`, weights
//!   `src - lower` and `1 - (src - lower)`;
//! * [`MaxPool`]: maximum over the window's in-image elements (padding never wins).
//!
//! Large kernels split their output rows over candle's thread count (`RAYON_NUM_THREADS`, else
//! the number of CPUs) with scoped threads.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, InplaceOp1, Layout, Result, Shape, bail};

use super::Padding;

/// Activation fused into a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    None,
    Relu,
    Relu6,
}

impl Act {
    fn apply_all(self, xs: &mut [f32]) {
        match self {
            Act::None => {}
            Act::Relu => xs.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Relu6 => xs.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    }
}

/// Work (multiply-adds) below which a kernel stays on the calling thread: starting a scoped
/// thread costs ~70 us here, the time of ~1M multiply-adds.
const PAR_MIN_WORK: usize = 1 << 21;

/// Channels processed together by the vectorised inner loops.
const LANES: usize = 8;

/// Runs `f(first_row, band)` over bands of whole `row`-sized rows of `out`, one band per
/// thread when the work (`work_per_row` per row) is large enough, else on the calling thread.
fn par_rows(
    out: &mut [f32],
    row: usize,
    work_per_row: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let row = row.max(1);
    let rows = out.len() / row;
    let threads = candle_core::utils::get_num_threads().clamp(1, rows.max(1));
    if threads == 1 || rows * work_per_row < PAR_MIN_WORK {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        let mut bands = out.chunks_mut(per * row).enumerate();
        let first = bands.next();
        for (i, band) in bands {
            let f = &f;
            s.spawn(move || f(i * per, band));
        }
        if let Some((_, band)) = first {
            f(0, band);
        }
    });
}

/// A sliding window over an `in_h x in_w` image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub in_h: usize,
    pub in_w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Window {
    /// The TensorFlow Lite geometry of a `kh x kw` window with strides and dilations.
    pub(crate) fn new(
        (in_h, in_w): (usize, usize),
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (dh, dw): (usize, usize),
        padding: Padding,
    ) -> Option<Self> {
        let eff = |k: usize, d: usize| (k.max(1) - 1) * d + 1;
        match padding {
            Padding::Same => {
                let oh = in_h.div_ceil(sh);
                let ow = in_w.div_ceil(sw);
                let th = ((oh.max(1) - 1) * sh + eff(kh, dh)).saturating_sub(in_h);
                let tw = ((ow.max(1) - 1) * sw + eff(kw, dw)).saturating_sub(in_w);
                Self::explicit(
                    (in_h, in_w),
                    (kh, kw),
                    (sh, sw),
                    (dh, dw),
                    (th / 2, th - th / 2),
                    (tw / 2, tw - tw / 2),
                )
            }
            Padding::Valid => {
                Self::explicit((in_h, in_w), (kh, kw), (sh, sw), (dh, dw), (0, 0), (0, 0))
            }
        }
    }

    /// A VALID window over the image padded by `(top, bottom)` and `(left, right)` zeros.
    pub(crate) fn explicit(
        (in_h, in_w): (usize, usize),
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (dh, dw): (usize, usize),
        (pt, pb): (usize, usize),
        (pl, pr): (usize, usize),
    ) -> Option<Self> {
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 || dh == 0 || dw == 0 {
            return None;
        }
        let (ekh, ekw) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
        let (ph, pw) = (in_h + pt + pb, in_w + pl + pr);
        if ph < ekh || pw < ekw {
            return None;
        }
        Some(Self {
            in_h,
            in_w,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            pad_top: pt,
            pad_left: pl,
            out_h: (ph - ekh) / sh + 1,
            out_w: (pw - ekw) / sw + 1,
        })
    }

    /// Input row of window row `k` for output row `o`, `None` when in the padding.
    #[inline(always)]
    fn src_y(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.sh + k * self.dh)
            .checked_sub(self.pad_top)
            .filter(|&y| y < self.in_h)
    }

    #[inline(always)]
    fn src_x(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.sw + k * self.dw)
            .checked_sub(self.pad_left)
            .filter(|&x| x < self.in_w)
    }

    /// Whether output row `oy` sees only image rows (no padding).
    #[inline(always)]
    fn inside_y(&self, oy: usize) -> bool {
        let top = oy * self.sh;
        top >= self.pad_top && top - self.pad_top + (self.kh - 1) * self.dh < self.in_h
    }

    #[inline(always)]
    fn inside_x(&self, ox: usize) -> bool {
        let left = ox * self.sw;
        left >= self.pad_left && left - self.pad_left + (self.kw - 1) * self.dw < self.in_w
    }

    /// Offsets (in elements of a `c`-channel NHWC image) of every tap from the window's
    /// top-left pixel, in `(ky, kx)` order.
    fn tap_offsets(&self, c: usize) -> Vec<usize> {
        let mut v = Vec::with_capacity(self.kh * self.kw);
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                v.push((ky * self.dh * self.in_w + kx * self.dw) * c);
            }
        }
        v
    }

    /// The element offset of the window's top-left pixel for an inside output pixel.
    #[inline(always)]
    fn origin(&self, oy: usize, ox: usize, c: usize) -> usize {
        ((oy * self.sh - self.pad_top) * self.in_w + ox * self.sw - self.pad_left) * c
    }
}

/// The contiguous `f32` data of a `[N, H, W, C]` tensor.
fn nhwc<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<(&'a [f32], [usize; 4])> {
    let dims = l.shape().dims();
    let &[n, h, w, c] = dims else {
        bail!("{op}: expected a rank-4 NHWC tensor, got shape {dims:?}");
    };
    Ok((contiguous(s, l, op)?, [n, h, w, c]))
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        bail!("{op}: only f32 tensors are supported");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Depthwise convolution with bias and fused activation; weights `[kh, kw, C * m]`.
#[derive(Debug, Clone)]
pub(crate) struct Depthwise {
    pub win: Window,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub multiplier: usize,
    pub act: Act,
}

impl Depthwise {
    /// One output row (`ow * co` values) of image `img`.
    fn row(
        &self,
        img: &[f32],
        c: usize,
        oy: usize,
        taps: &[usize],
        dst: &mut [f32],
        tmp: &mut [f32],
    ) {
        let win = &self.win;
        let m = self.multiplier;
        let co = c * m;
        let inside_y = win.inside_y(oy);
        for (ox, d) in dst.chunks_exact_mut(co).enumerate() {
            d.copy_from_slice(&self.bias);
            if m == 1 && inside_y && win.inside_x(ox) && c.is_multiple_of(LANES) {
                // Inside the image: no bounds per tap; LANES channels at a time kept in
                // registers across all taps.
                let o = win.origin(oy, ox, c);
                for j in (0..c).step_by(LANES) {
                    let mut acc = [0f32; LANES];
                    acc.copy_from_slice(&self.bias[j..j + LANES]);
                    for (t, &off) in taps.iter().enumerate() {
                        let px = &img[o + off + j..][..LANES];
                        let wt = &self.weights[t * co + j..][..LANES];
                        for l in 0..LANES {
                            acc[l] += px[l] * wt[l];
                        }
                    }
                    d[j..j + LANES].copy_from_slice(&acc);
                }
            } else if m == 1 && inside_y && win.inside_x(ox) {
                let o = win.origin(oy, ox, c);
                for (t, &off) in taps.iter().enumerate() {
                    let px = &img[o + off..o + off + c];
                    let wt = &self.weights[t * co..(t + 1) * co];
                    for ((a, &xv), &wv) in d.iter_mut().zip(px).zip(wt) {
                        *a += xv * wv;
                    }
                }
            } else {
                for ky in 0..win.kh {
                    let Some(iy) = win.src_y(oy, ky) else {
                        continue;
                    };
                    for kx in 0..win.kw {
                        let Some(ix) = win.src_x(ox, kx) else {
                            continue;
                        };
                        let px = &img[(iy * win.in_w + ix) * c..(iy * win.in_w + ix + 1) * c];
                        let t = ky * win.kw + kx;
                        let wt = &self.weights[t * co..(t + 1) * co];
                        let src = if m == 1 {
                            px
                        } else {
                            for (i, e) in tmp.iter_mut().enumerate() {
                                *e = px[i / m];
                            }
                            &tmp[..]
                        };
                        for ((a, &xv), &wv) in d.iter_mut().zip(src).zip(wt) {
                            *a += xv * wv;
                        }
                    }
                }
            }
            self.act.apply_all(d);
        }
    }
}

impl CustomOp1 for Depthwise {
    fn name(&self) -> &'static str {
        "tflite-depthwise-conv2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [n, h, w, c]) = nhwc(s, l, self.name())?;
        let win = &self.win;
        let co = c * self.multiplier;
        if (h, w) != (win.in_h, win.in_w)
            || self.bias.len() != co
            || self.weights.len() != win.kh * win.kw * co
        {
            bail!("depthwise conv: input {h}x{w}x{c} does not fit the prepared kernel");
        }
        let (oh, ow) = (win.out_h, win.out_w);
        let taps = win.tap_offsets(c);
        let mut out = vec![0f32; n * oh * ow * co];
        par_rows(&mut out, ow * co, ow * co * taps.len(), |r0, band| {
            let mut tmp = vec![0f32; co];
            for (i, dst) in band.chunks_exact_mut(ow * co).enumerate() {
                let (b, oy) = ((r0 + i) / oh, (r0 + i) % oh);
                let img = &x[b * h * w * c..(b + 1) * h * w * c];
                self.row(img, c, oy, &taps, dst, &mut tmp);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from_dims(&[n, oh, ow, co])))
    }
}

/// NHWC im2col: `[N, H, W, C] -> [N * H_out * W_out, kh * kw * C]`, zeros in the padding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Im2Col {
    pub win: Window,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "tflite-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [n, h, w, c]) = nhwc(s, l, self.name())?;
        let win = &self.win;
        if (h, w) != (win.in_h, win.in_w) {
            bail!("im2col: input {h}x{w} does not fit the prepared window");
        }
        let (oh, ow) = (win.out_h, win.out_w);
        let k = win.kh * win.kw * c;
        let mut out = vec![0f32; n * oh * ow * k];
        par_rows(&mut out, ow * k, ow * k, |r0, band| {
            for (i, dst) in band.chunks_exact_mut(ow * k).enumerate() {
                let (b, oy) = ((r0 + i) / oh, (r0 + i) % oh);
                let img = &x[b * h * w * c..(b + 1) * h * w * c];
                for (ox, patch) in dst.chunks_exact_mut(k).enumerate() {
                    let row_inside = win.dw == 1 && win.inside_x(ox);
                    for ky in 0..win.kh {
                        let Some(iy) = win.src_y(oy, ky) else {
                            continue;
                        };
                        if row_inside {
                            // The kw taps of this window row are adjacent pixels: one copy.
                            let len = win.kw * c;
                            let src = (iy * w + ox * win.sw - win.pad_left) * c;
                            patch[ky * len..(ky + 1) * len].copy_from_slice(&img[src..src + len]);
                            continue;
                        }
                        for kx in 0..win.kw {
                            let Some(ix) = win.src_x(ox, kx) else {
                                continue;
                            };
                            let d = (ky * win.kw + kx) * c;
                            patch[d..d + c]
                                .copy_from_slice(&img[(iy * w + ix) * c..(iy * w + ix + 1) * c]);
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from_dims(&[n * oh * ow, k])))
    }
}

/// Direct convolution, one dot product per output channel; weights `[C_out, kh, kw, C_in]`.
#[derive(Debug, Clone)]
pub(crate) struct ConvDirect {
    pub win: Window,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub act: Act,
}

impl CustomOp1 for ConvDirect {
    fn name(&self) -> &'static str {
        "tflite-conv2d-direct"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [n, h, w, c]) = nhwc(s, l, self.name())?;
        let win = &self.win;
        let co = self.bias.len();
        let kk = win.kh * win.kw;
        if (h, w) != (win.in_h, win.in_w) || self.weights.len() != co * kk * c {
            bail!("conv: input {h}x{w}x{c} does not fit the prepared kernel");
        }
        let (oh, ow) = (win.out_h, win.out_w);
        let mut out = vec![0f32; n * oh * ow * co];
        par_rows(&mut out, ow * co, ow * co * kk * c, |r0, band| {
            for (i, dst) in band.chunks_exact_mut(ow * co).enumerate() {
                let (b, oy) = ((r0 + i) / oh, (r0 + i) % oh);
                let img = &x[b * h * w * c..(b + 1) * h * w * c];
                for (ox, d) in dst.chunks_exact_mut(co).enumerate() {
                    for (o, a) in d.iter_mut().enumerate() {
                        // LANES partial sums over all taps, one horizontal sum at the end.
                        let mut lanes = [0f32; LANES];
                        let mut tail = 0f32;
                        for ky in 0..win.kh {
                            let Some(iy) = win.src_y(oy, ky) else {
                                continue;
                            };
                            for kx in 0..win.kw {
                                let Some(ix) = win.src_x(ox, kx) else {
                                    continue;
                                };
                                let px = &img[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                                let t = o * kk + ky * win.kw + kx;
                                let wt = &self.weights[t * c..(t + 1) * c];
                                let (pc, wc) = (px.chunks_exact(LANES), wt.chunks_exact(LANES));
                                for (p, q) in pc.remainder().iter().zip(wc.remainder()) {
                                    tail += p * q;
                                }
                                for (p, q) in pc.zip(wc) {
                                    for l in 0..LANES {
                                        lanes[l] += p[l] * q[l];
                                    }
                                }
                            }
                        }
                        *a = self.bias[o] + lanes.iter().sum::<f32>() + tail;
                    }
                    self.act.apply_all(d);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from_dims(&[n, oh, ow, co])))
    }
}

/// In place: `y[.., c] = act(y[.., c] + b[c])` over a contiguous `[.., C]` tensor.
#[derive(Debug, Clone)]
pub(crate) struct BiasAct {
    pub bias: Vec<f32>,
    pub act: Act,
}

impl InplaceOp1 for BiasAct {
    fn name(&self) -> &'static str {
        "tflite-bias-act"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = s else {
            bail!("bias: only f32 tensors are supported");
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            bail!("bias: tensor must be contiguous");
        };
        let c = self.bias.len();
        if l.shape().dims().last() != Some(&c) {
            bail!("bias: {c} values for shape {:?}", l.shape().dims());
        }
        par_rows(&mut data[a..b], c, c, |_, band| {
            for row in band.chunks_exact_mut(c) {
                for (v, &bv) in row.iter_mut().zip(&self.bias) {
                    *v += bv;
                }
            }
            self.act.apply_all(band);
        });
        Ok(())
    }
}

/// `act(a + b)` for two contiguous tensors of the same shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddAct {
    pub act: Act,
}

impl CustomOp2 for AddAct {
    fn name(&self) -> &'static str {
        "tflite-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!("add: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
        }
        let (a, b) = (
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
        );
        let mut out = vec![0f32; a.len()];
        const ROW: usize = 4096;
        par_rows(&mut out, ROW, ROW, |r0, band| {
            let start = r0 * ROW;
            let (a, b) = (&a[start..start + band.len()], &b[start..start + band.len()]);
            for ((o, &x), &y) in band.iter_mut().zip(a).zip(b) {
                *o = x + y;
            }
            self.act.apply_all(band);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Zero padding of a rank-4 tensor: `(before, after)` per dimension.
#[derive(Debug, Clone)]
pub(crate) struct Pad {
    pub pads: [(usize, usize); 4],
}

impl CustomOp1 for Pad {
    fn name(&self) -> &'static str {
        "tflite-pad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [n, h, w, c]) = nhwc(s, l, self.name())?;
        let p = &self.pads;
        let [on, oh, ow, oc] = [
            n + p[0].0 + p[0].1,
            h + p[1].0 + p[1].1,
            w + p[2].0 + p[2].1,
            c + p[3].0 + p[3].1,
        ];
        let mut out = vec![0f32; on * oh * ow * oc];
        par_rows(&mut out, ow * oc, ow * oc, |r0, band| {
            for (i, dst) in band.chunks_exact_mut(ow * oc).enumerate() {
                let (ob, oy) = ((r0 + i) / oh, (r0 + i) % oh);
                let (Some(b), Some(y)) = (ob.checked_sub(p[0].0), oy.checked_sub(p[1].0)) else {
                    continue;
                };
                if b >= n || y >= h {
                    continue;
                }
                for xx in 0..w {
                    let src = &x[((b * h + y) * w + xx) * c..((b * h + y) * w + xx + 1) * c];
                    let d = (xx + p[2].0) * oc + p[3].0;
                    dst[d..d + c].copy_from_slice(src);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from_dims(&[on, oh, ow, oc])))
    }
}

/// Bilinear resize of an NHWC tensor to `out_h x out_w`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResizeBilinear {
    pub out_h: usize,
    pub out_w: usize,
    pub align_corners: bool,
    pub half_pixel_centers: bool,
}

/// Source coordinates of each output index: `(lower, upper, weight of upper)`.
fn interp_coords(out: usize, inp: usize, align: bool, half: bool) -> Vec<(usize, usize, f32)> {
    let scale = if align && out > 1 {
        (inp as f32 - 1.0) / (out as f32 - 1.0)
    } else {
        inp as f32 / out as f32
    };
    (0..out)
        .map(|o| {
            let src = if half {
                (o as f32 + 0.5) * scale - 0.5
            } else {
                o as f32 * scale
            };
            let lo = (src.floor().max(0.0) as usize).min(inp - 1);
            let hi = (src.ceil().max(0.0) as usize).min(inp - 1);
            (lo, hi, src - lo as f32)
        })
        .collect()
}

impl CustomOp1 for ResizeBilinear {
    fn name(&self) -> &'static str {
        "tflite-resize-bilinear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [n, h, w, c]) = nhwc(s, l, self.name())?;
        if h == 0 || w == 0 {
            bail!("resize: empty input");
        }
        let (oh, ow) = (self.out_h, self.out_w);
        let ys = interp_coords(oh, h, self.align_corners, self.half_pixel_centers);
        let xs = interp_coords(ow, w, self.align_corners, self.half_pixel_centers);
        let mut out = vec![0f32; n * oh * ow * c];
        par_rows(&mut out, ow * c, ow * c * 4, |r0, band| {
            for (i, dst) in band.chunks_exact_mut(ow * c).enumerate() {
                let (b, oy) = ((r0 + i) / oh, (r0 + i) % oh);
                let img = &x[b * h * w * c..(b + 1) * h * w * c];
                let px = |y: usize, xx: usize| &img[(y * w + xx) * c..(y * w + xx + 1) * c];
                let (y0, y1, fy) = ys[oy];
                for (d, &(x0, x1, fx)) in dst.chunks_exact_mut(c).zip(&xs) {
                    let (p00, p01, p10, p11) = (px(y0, x0), px(y0, x1), px(y1, x0), px(y1, x1));
                    let (w00, w01) = ((1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx);
                    let (w10, w11) = (fy * (1.0 - fx), fy * fx);
                    for (k, o) in d.iter_mut().enumerate() {
                        *o = p00[k] * w00 + p01[k] * w01 + p10[k] * w10 + p11[k] * w11;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from_dims(&[n, oh, ow, c])))
    }
}

/// Max pooling with fused activation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPool {
    pub win: Window,
    pub act: Act,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "tflite-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, [n, h, w, c]) = nhwc(s, l, self.name())?;
        let win = &self.win;
        if (h, w) != (win.in_h, win.in_w) {
            bail!("max pool: input {h}x{w} does not fit the prepared window");
        }
        let (oh, ow) = (win.out_h, win.out_w);
        let mut out = vec![f32::NEG_INFINITY; n * oh * ow * c];
        par_rows(&mut out, ow * c, ow * c * win.kh * win.kw, |r0, band| {
            for (i, dst) in band.chunks_exact_mut(ow * c).enumerate() {
                let (b, oy) = ((r0 + i) / oh, (r0 + i) % oh);
                let img = &x[b * h * w * c..(b + 1) * h * w * c];
                for (ox, d) in dst.chunks_exact_mut(c).enumerate() {
                    for ky in 0..win.kh {
                        let Some(iy) = win.src_y(oy, ky) else {
                            continue;
                        };
                        for kx in 0..win.kw {
                            let Some(ix) = win.src_x(ox, kx) else {
                                continue;
                            };
                            let p = &img[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                            for (o, &v) in d.iter_mut().zip(p) {
                                *o = o.max(v);
                            }
                        }
                    }
                    self.act.apply_all(d);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from_dims(&[n, oh, ow, c])))
    }
}
