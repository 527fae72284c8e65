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
//!   then the fused activation. For `m = 1` and 3x3 / 5x5 windows a register-blocked kernel:
//!   8 neighbouring outputs of one vector of channels accumulate in registers, each input
//!   vector is loaded once per window row and feeds every output whose window covers it;
//!   other windows make one pass over the output row per tap;
//! * [`Conv`]: a convolution as a matrix product (Chellapilla et al. 2006): output pixel
//!   `oy W_out + ox` is the row of its NHWC im2col patch `(ky, kx, c)` (the order of a
//!   TensorFlow Lite `[C_out, kh, kw, C_in]` filter; a 1x1 / stride 1 convolution uses the input
//!   rows as they are) times the `[kh kw C_in, C_out]` weights, `y = act(b + patch . W)`. The
//!   product is a GotoBLAS-style register-blocked kernel (Goto & van de Geijn, ACM TOMS 34(3),
//!   2008) on weights packed at load into panels of 32 output columns; bias and activation are
//!   applied as the sums leave the registers;
//! * [`ConvAdd`]: `act2(conv(x) + r)`, the ADD of a residual fused into that epilogue;
//! * a depthwise convolution read only by a pointwise one ([`Conv::pre`]) is computed inside
//!   it, a few output rows at a time into a buffer that stays in L2, and multiplied from there
//!   (the sums are the two kernels' own; one step and one parallel split instead of two);
//! * [`ConvDirect`]: the layers with very few output channels: for stride 1 from a planar,
//!   zero-padded copy of the input (`acc[ox] += w[o, ky, kx, c] x[c][oy + ky][ox + kx]`,
//!   vectorised along the row), else one dot product per output;
//! * [`AddAct`]: `act(a + b)` for equal shapes in one pass;
//! * [`Pad`]: zero padding of an NHWC tensor in one pass;
//! * [`ResizeBilinear`]: `scale = (in - 1) / (out - 1)` with `align_corners` (and out > 1),
//!   else `in / out`; source coordinate `(o + 0.5) scale - 0.5` with `half_pixel_centers`, else
//!   `o scale`; lower neighbour `max(floor(src), 0)`, upper `min(ceil(src), in - 1)`, weights
//!   `src - lower` and `1 - (src - lower)`;
//! * [`MaxPool`]: maximum over the window's in-image elements (padding never wins).
//!
//! SIMD: the inner loops are written once over pulp's `Simd` vectors and compiled for AVX-512,
//! AVX2 + FMA or NEON, chosen at run time (scalar otherwise); sums use fused multiply-adds, so
//! results differ from a separate multiply and add in the last bits (the parity tests hold the
//! outputs to TensorFlow Lite's within 1e-3 relative). Kernels over channels pick the vector
//! width that divides the channel count ([`dispatch_for`]). No closure appears inside the SIMD
//! code: closures do not inherit the target features, and their intrinsics would become calls.
//!
//! Threads: large kernels split their output rows into bands over rayon's pool
//! (`RAYON_NUM_THREADS`, else the number of CPUs); the interpreter runs the whole graph on a
//! pool thread, so a split costs a work-stealing push, not a wake-up of a blocked caller.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, bail};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::Padding;

/// Activation fused into a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    None,
    Relu,
    Relu6,
}

impl Act {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Act::None => v,
            Act::Relu => v.max(0.0),
            Act::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    fn apply_all(self, xs: &mut [f32]) {
        match self {
            Act::None => {}
            Act::Relu => xs.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Relu6 => xs.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    }
}

/// Work (multiply-adds) below which a kernel stays on the calling thread: handing a job to
/// rayon's pool and waking its threads costs ~10 us here, the time of ~200k multiply-adds.
const PAR_MIN_WORK: usize = 1 << 18;

/// Bands of rows per thread in [`par_rows`].
const BANDS_PER_THREAD: usize = 2;

/// Channels processed together by the scalar fallback loops.
const LANES: usize = 8;

/// Runs `f(first_row, band)` over bands of whole `row`-sized rows of `out`, one band per
/// thread of rayon's pool when the work (`work_per_row` per row) is large enough, else on the
/// calling thread.
fn par_rows(
    out: &mut [f32],
    row: usize,
    work_per_row: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let row = row.max(1);
    let rows = out.len() / row;
    let threads = rayon::current_num_threads().clamp(1, rows.max(1));
    if threads == 1 || rows * work_per_row < PAR_MIN_WORK {
        f(0, out);
        return;
    }
    // a few bands per thread, so a thread that starts late takes fewer of them
    let per = rows.div_ceil(threads * BANDS_PER_THREAD);
    out.par_chunks_mut(per * row)
        .enumerate()
        .for_each(|(i, band)| f(i * per, band));
}

// ------------------------------------------------------------------------------------------------
// SIMD helpers (pulp: AVX-512 / AVX2+FMA / NEON, chosen at run time; scalar otherwise)

/// Loads `s[..lanes]` as a vector; a shorter `s` is zero-filled (masked load; pulp makes it an
/// out-of-line call, so hot loops that need no tail use [`load_full`]).
#[inline(always)]
fn load<S: Simd>(simd: S, s: &[f32]) -> S::f32s {
    if s.len() >= S::F32_LANES {
        S::as_simd_f32s(&s[..S::F32_LANES]).0[0]
    } else {
        simd.partial_load_f32s(s)
    }
}

/// Loads `s[..lanes]` (`s` must be that long).
#[inline(always)]
fn load_full<S: Simd>(s: &[f32]) -> S::f32s {
    S::as_simd_f32s(&s[..S::F32_LANES]).0[0]
}

/// Stores a whole vector into `d[..lanes]`.
#[inline(always)]
fn store_full<S: Simd>(d: &mut [f32], v: S::f32s) {
    S::as_mut_simd_f32s(&mut d[..S::F32_LANES]).0[0] = v;
}

/// Stores the first `d.len()` lanes of `v` (all of them when `d` is long enough; fewer by a
/// masked store).
#[inline(always)]
fn store<S: Simd>(simd: S, d: &mut [f32], v: S::f32s) {
    if d.len() >= S::F32_LANES {
        S::as_mut_simd_f32s(&mut d[..S::F32_LANES]).0[0] = v;
    } else {
        simd.partial_store_f32s(d, v);
    }
}

/// Runs `op` with the widest SIMD instructions whose vectors divide `channels` (AVX-512 when
/// it divides by 16, else AVX2 when by 8), so the inner loops need no masked tails; any other
/// count takes the widest available.
fn dispatch_for<Op: WithSimd>(channels: usize, op: Op) -> Op::Output {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if !channels.is_multiple_of(16)
        && channels.is_multiple_of(8)
        && let Some(simd) = pulp::x86::V3::try_new()
    {
        return Simd::vectorize(simd, op);
    }
    Arch::new().dispatch(op)
}

/// The activation on a vector.
#[inline(always)]
fn act_v<S: Simd>(simd: S, act: Act, v: S::f32s) -> S::f32s {
    match act {
        Act::None => v,
        Act::Relu => simd.max_f32s(v, simd.splat_f32s(0.0)),
        Act::Relu6 => simd.min_f32s(simd.max_f32s(v, simd.splat_f32s(0.0)), simd.splat_f32s(6.0)),
    }
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

/// Output rows of a depthwise convolution with multiplier 1, vectorised over channels.
struct DepthwiseRows<'a> {
    op: &'a Depthwise,
    /// The whole input `[n, h, w, c]`.
    x: &'a [f32],
    c: usize,
    /// Global output row (`b * out_h + oy`) of the first row of `band`.
    first: usize,
    band: &'a mut [f32],
}

impl Window {
    /// The output columns `[lo, hi)` whose window tap `kx` falls inside the image.
    fn x_range(&self, kx: usize) -> (usize, usize) {
        let off = kx * self.dw;
        let lo = self.pad_left.saturating_sub(off).div_ceil(self.sw);
        let hi = match (self.in_w + self.pad_left).checked_sub(off + 1) {
            Some(last) => (last / self.sw + 1).min(self.out_w),
            None => 0,
        };
        (lo, hi.max(lo))
    }
}

/// `acc[i] += x[i] * w[i]` (fused multiply-add) over equal-length slices.
#[inline(always)]
fn fma_slices<S: Simd>(simd: S, acc: &mut [f32], x: &[f32], w: &[f32]) {
    let (ah, at) = S::as_mut_simd_f32s(acc);
    let (xh, xt) = S::as_simd_f32s(x);
    let (wh, wt) = S::as_simd_f32s(w);
    for ((a, &x), &w) in ah.iter_mut().zip(xh).zip(wh) {
        *a = simd.mul_add_f32s(x, w, *a);
    }
    for ((a, &x), &w) in at.iter_mut().zip(xt).zip(wt) {
        *a = x.mul_add(w, *a);
    }
}

/// The activation in place over a slice.
#[inline(always)]
fn act_slice<S: Simd>(simd: S, act: Act, xs: &mut [f32]) {
    if act == Act::None {
        return;
    }
    let (h, t) = S::as_mut_simd_f32s(xs);
    for v in h {
        *v = act_v(simd, act, *v);
    }
    for v in t {
        *v = act.apply(*v);
    }
}

/// Output pixels the blocked depthwise kernel keeps in registers.
const DW_BLOCK: usize = 8;

/// One window row of a [`DW_BLOCK`]-pixel block: `acc[p] += x[q] * w[kx]` for every window
/// position `q = p SW + kx` of the block. Without `CHECK`, `row` holds exactly the block's
/// input pixels; with it, `row` is the whole input row, `first` the (possibly negative) input
/// column of position 0, and positions outside the row count as zero (padding).
///
/// The block's input vectors are loaded once into `xs`, then the products run output by
/// output over constant indices, so the loops unroll and `acc` stays in registers. (Looping
/// over input positions and finding the outputs each one reaches indexed `acc` at run time
/// once the 17-19 positions of a stride-2 or 5-wide window were not unrolled, which kept it in
/// memory: 2-3x slower, most of all for the edge blocks that small maps are made of.)
#[inline(always)]
fn dw_block_row<S: Simd, const KW: usize, const SW: usize, const CHECK: bool>(
    simd: S,
    row: &[f32],
    first: isize,
    c: usize,
    j: usize,
    len: usize,
    wk: &[S::f32s; KW],
    acc: &mut [S::f32s; DW_BLOCK],
) {
    // Positions outside the row stay zero vectors (adding 0 w changes no sum), so the edge
    // blocks run the same constant-index products as the others.
    const { assert!(KW <= 5 && SW <= 2) };
    let in_w = row.len() / c.max(1);
    let mut xs = [simd.splat_f32s(0.0); (DW_BLOCK - 1) * 2 + 5];
    for (q, x) in xs.iter_mut().enumerate().take((DW_BLOCK - 1) * SW + KW) {
        if !CHECK {
            *x = load_full::<S>(&row[q * c + j..q * c + j + len]);
        } else if let Ok(ix) = usize::try_from(first + q as isize)
            && ix < in_w
        {
            *x = load_full::<S>(&row[ix * c + j..ix * c + j + len]);
        }
    }
    for (p, a) in acc.iter_mut().enumerate() {
        for (kx, &w) in wk.iter().enumerate() {
            *a = simd.mul_add_f32s(xs[p * SW + kx], w, *a);
        }
    }
}

/// One output row of a depthwise convolution with `KW`-wide windows, horizontal stride `SW`
/// and no dilation, register-blocked: per vector of channels, [`DW_BLOCK`] neighbouring
/// outputs accumulate in registers; per window row, each input pixel vector is loaded once and
/// used by every output of the block whose window covers it (the `KW` weights of the window
/// row stay in registers); pixels outside the image count as zero (padding). Each sum is the
/// scalar kernel's: bias, then taps in `(ky, kx)` order.
#[inline(always)]
fn dw_row_blocked<S: Simd, const KW: usize, const SW: usize>(
    simd: S,
    op: &Depthwise,
    img: &[f32],
    c: usize,
    oy: usize,
    dst: &mut [f32],
) {
    let win = &op.win;
    let (l, ow) = (S::F32_LANES, win.out_w);
    // block outer, channels inner: the block's input pixels (all channels) stay in L1
    let mut ox = 0;
    while ox < ow {
        let mut j = 0;
        while j < c {
            let len = l.min(c - j);
            let bias = load_full::<S>(&op.bias[j..j + len]);
            let mut acc = [bias; DW_BLOCK];
            for ky in 0..win.kh {
                let Some(iy) = win.src_y(oy, ky) else {
                    continue;
                };
                // (no closures in here: they would not inherit the SIMD target features)
                let mut wk = [bias; KW];
                for (kx, w) in wk.iter_mut().enumerate() {
                    let t = (ky * KW + kx) * c + j;
                    *w = load_full::<S>(&op.weights[t..t + len]);
                }
                let row = &img[iy * win.in_w * c..(iy + 1) * win.in_w * c];
                match (ox * SW).checked_sub(win.pad_left) {
                    // the whole block inside the image: no checks per pixel
                    Some(x0) if x0 + (DW_BLOCK - 1) * SW + KW <= win.in_w => {
                        let row = &row[x0 * c..(x0 + (DW_BLOCK - 1) * SW + KW) * c];
                        dw_block_row::<S, KW, SW, false>(simd, row, 0, c, j, len, &wk, &mut acc);
                    }
                    _ => {
                        let first = (ox * SW) as isize - win.pad_left as isize;
                        dw_block_row::<S, KW, SW, true>(simd, row, first, c, j, len, &wk, &mut acc);
                    }
                }
            }
            for (p, &a) in acc.iter().enumerate().take(ow - ox) {
                let d = (ox + p) * c + j;
                store_full::<S>(&mut dst[d..d + len], act_v(simd, op.act, a));
            }
            j += l;
        }
        ox += DW_BLOCK;
    }
}

/// One output row of a depthwise convolution with any window: the row starts as the bias,
/// then each window tap `(ky, kx)` adds `x[input pixel] * w[tap]` to every output pixel it
/// reaches inside the image (one contiguous pass over the row per tap), then the activation.
/// Same sums as [`dw_row_blocked`].
#[inline(always)]
fn dw_row_taps<S: Simd>(
    simd: S,
    op: &Depthwise,
    img: &[f32],
    c: usize,
    oy: usize,
    dst: &mut [f32],
) {
    let win = &op.win;
    let row_in = win.in_w * c;
    for px in dst.chunks_exact_mut(c) {
        px.copy_from_slice(&op.bias);
    }
    for ky in 0..win.kh {
        let Some(iy) = win.src_y(oy, ky) else {
            continue;
        };
        let src = &img[iy * row_in..(iy + 1) * row_in];
        for kx in 0..win.kw {
            let (lo, hi) = win.x_range(kx);
            if lo >= hi {
                continue;
            }
            let t = ky * win.kw + kx;
            let w = &op.weights[t * c..(t + 1) * c];
            let x0 = lo * win.sw + kx * win.dw - win.pad_left;
            let xs = src[x0 * c..].chunks_exact(c).step_by(win.sw);
            for (a, xp) in dst[lo * c..hi * c].chunks_exact_mut(c).zip(xs) {
                fma_slices(simd, a, xp, w);
            }
        }
    }
    act_slice(simd, op.act, dst);
}

impl WithSimd for DepthwiseRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            op,
            x,
            c,
            first,
            band,
        } = self;
        let win = &op.win;
        let plane = win.in_h * win.in_w * c;
        for (i, dst) in band.chunks_exact_mut(win.out_w * c).enumerate() {
            let (b, oy) = ((first + i) / win.out_h, (first + i) % win.out_h);
            let img = &x[b * plane..(b + 1) * plane];
            if !c.is_multiple_of(S::F32_LANES) {
                dw_row_taps(simd, op, img, c, oy, dst);
                continue;
            }
            match (win.kw, win.sw, win.dw) {
                (3, 1, 1) => dw_row_blocked::<S, 3, 1>(simd, op, img, c, oy, dst),
                (3, 2, 1) => dw_row_blocked::<S, 3, 2>(simd, op, img, c, oy, dst),
                (5, 1, 1) => dw_row_blocked::<S, 5, 1>(simd, op, img, c, oy, dst),
                (5, 2, 1) => dw_row_blocked::<S, 5, 2>(simd, op, img, c, oy, dst),
                _ => dw_row_taps(simd, op, img, c, oy, dst),
            }
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
        if self.multiplier == 1 {
            par_rows(&mut out, ow * co, ow * co * taps.len(), |r0, band| {
                dispatch_for(
                    c,
                    DepthwiseRows {
                        op: self,
                        x,
                        c,
                        first: r0,
                        band,
                    },
                )
            });
            return Ok((CpuStorage::F32(out), Shape::from_dims(&[n, oh, ow, co])));
        }
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

/// One output row of the NHWC im2col of `img` (`in_h x in_w x c`): `ow` patches of
/// `kh kw c` values in `(ky, kx, c)` order, zeros in the padding.
fn im2col_row(win: &Window, img: &[f32], c: usize, oy: usize, dst: &mut [f32]) {
    let k = win.kh * win.kw * c;
    let w = win.in_w;
    for (ox, patch) in dst.chunks_exact_mut(k).enumerate() {
        let row_inside = win.dw == 1 && win.inside_x(ox);
        for ky in 0..win.kh {
            let len = win.kw * c;
            let Some(iy) = win.src_y(oy, ky) else {
                patch[ky * len..(ky + 1) * len].fill(0.0);
                continue;
            };
            if row_inside {
                // The kw taps of this window row are adjacent pixels: one copy.
                let src = (iy * w + ox * win.sw - win.pad_left) * c;
                patch[ky * len..(ky + 1) * len].copy_from_slice(&img[src..src + len]);
                continue;
            }
            for kx in 0..win.kw {
                let d = (ky * win.kw + kx) * c;
                match win.src_x(ox, kx) {
                    Some(ix) => patch[d..d + c]
                        .copy_from_slice(&img[(iy * w + ix) * c..(iy * w + ix + 1) * c]),
                    None => patch[d..d + c].fill(0.0),
                }
            }
        }
    }
}

/// Output columns per panel of [`Packed`] weights: 2 AVX-512 vectors, 4 AVX2 ones (taken as
/// two slices of 2), 8 NEON ones.
const PANEL: usize = 32;

/// The weights of a matrix product `[M, K] x [K, N]` packed for [`gemm`]: panels of
/// [`PANEL`] output columns, each `K` rows of `PANEL` values (zero past `N`), so the kernel
/// reads one contiguous stream per panel; the bias padded the same way.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    pub k: usize,
    pub n: usize,
    data: Vec<f32>,
    bias: Vec<f32>,
}

impl Packed {
    /// From the rows of a TensorFlow Lite filter: `w[j * k + i]` is the weight of input `i`
    /// for output `j` (`[C_out, kh, kw, C_in]` flattened), `bias[j]` per output.
    pub(crate) fn from_filter(w: &[f32], n: usize, k: usize, bias: &[f32]) -> Option<Self> {
        if w.len() != n * k || bias.len() != n {
            return None;
        }
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0f32; panels * k * PANEL];
        let mut b = vec![0f32; panels * PANEL];
        for j in 0..n {
            let (p, q) = (j / PANEL, j % PANEL);
            for i in 0..k {
                data[(p * k + i) * PANEL + q] = w[j * k + i];
            }
            b[j] = bias[j];
        }
        Some(Self {
            k,
            n,
            data,
            bias: b,
        })
    }
}

/// One call of the matrix-product kernel: `c[r, j] = act2(act(bias[j] + sum_i a[r, i] w[i, j])
/// + res[r, j])` (without `res`: `act(...)` only) for the `rows` rows of `a` (`rows x k`,
/// contiguous); `c` and `res` are `rows x n`.
struct Gemm<'a> {
    w: &'a Packed,
    a: &'a [f32],
    rows: usize,
    c: &'a mut [f32],
    res: Option<&'a [f32]>,
    act: Act,
    act2: Act,
}

impl WithSimd for Gemm<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // MR rows x NV vectors of accumulators, with the NV weight vectors of the step and a
        // broadcast also in registers: 16 + 2 + 1 of the 32 AVX-512 registers; 12 + 2 + 1 of
        // the 16 AVX2 ones (BLIS's Haswell shape, 6 x 16; 4 weight vectors would not fit there,
        // and the FMAs would reload them from memory for every row: load-bound on two loads
        // per cycle).
        match S::F32_LANES {
            16 => gemm::<S, 8, 2>(simd, self),
            8 => gemm::<S, 6, 2>(simd, self),
            4 => gemm::<S, 3, 8>(simd, self),
            1 => gemm::<S, 1, 32>(simd, self),
            _ => gemm_plain(self),
        }
    }
}

/// The register-blocked kernel (the GotoBLAS / BLIS micro-kernel scheme, Goto & van de Geijn,
/// ACM TOMS 34(3), 2008): for each block of `MR` rows of `a` (packed, see `ap`) and each
/// `NV`-vector slice of a panel (`PANEL / (NV lanes)` slices per panel; slices wholly past
/// `n` are skipped), `MR x NV` vector accumulators start at the bias and take one rank-1
/// update per `i` (`acc[r][v] += a[r, i] * w[i, v]`, fused multiply-adds), then the epilogue.
/// Every output's sum is the same sequence of operations whatever the slicing.
#[inline(always)]
fn gemm<S: Simd, const MR: usize, const NV: usize>(simd: S, g: Gemm<'_>) {
    let Gemm {
        w,
        a,
        rows,
        c,
        res,
        act,
        act2,
    } = g;
    let (k, n, l) = (w.k, w.n, S::F32_LANES);
    let (sub, per_row) = (NV * l, PANEL / l);
    debug_assert_eq!(PANEL % sub, 0);
    if rows == 0 {
        return;
    }
    let panels = n.div_ceil(PANEL);
    // The block's MR rows interleaved (`ap[i] = [a[r0, i], .., a[r0 + MR - 1, i]]`, BLIS's
    // packed A): one stream for the inner loop, no bounds check per row, no row pointers to
    // keep in registers.
    let mut ap = vec![[0f32; MR]; k];
    let mut r0 = 0;
    while r0 < rows {
        let mr = (rows - r0).min(MR);
        // rows past the end repeat the last one (computed, never stored)
        for r in 0..MR {
            let row = &a[(r0 + r.min(mr - 1)) * k..][..k];
            for (d, &x) in ap.iter_mut().zip(row) {
                d[r] = x;
            }
        }
        for p in 0..panels {
            let wp = S::as_simd_f32s(&w.data[p * k * PANEL..(p + 1) * k * PANEL]).0;
            let bp = S::as_simd_f32s(&w.bias[p * PANEL..(p + 1) * PANEL]).0;
            for q in 0..PANEL / sub {
                let j0 = p * PANEL + q * sub;
                if j0 >= n {
                    break;
                }
                let mut acc = [[simd.splat_f32s(0.0); NV]; MR];
                for row in acc.iter_mut() {
                    for (v, b) in row.iter_mut().zip(&bp[q * NV..]) {
                        *v = *b;
                    }
                }
                for (ai, wr) in ap.iter().zip(wp.chunks_exact(per_row)) {
                    let wr: [S::f32s; NV] = std::array::from_fn(|v| wr[q * NV + v]);
                    for r in 0..MR {
                        let x = simd.splat_f32s(ai[r]);
                        for v in 0..NV {
                            acc[r][v] = simd.mul_add_f32s(x, wr[v], acc[r][v]);
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate().take(mr) {
                    let base = (r0 + r) * n;
                    for (v, &y) in row.iter().enumerate() {
                        let j = j0 + v * l;
                        if j >= n {
                            break;
                        }
                        let len = (n - j).min(l);
                        let mut y = act_v(simd, act, y);
                        if let Some(res) = res {
                            y = act_v(
                                simd,
                                act2,
                                simd.add_f32s(y, load(simd, &res[base + j..base + j + len])),
                            );
                        }
                        store(simd, &mut c[base + j..base + j + len], y);
                    }
                }
            }
        }
        r0 += mr;
    }
}

/// The same product without SIMD types (other lane counts).
fn gemm_plain(g: Gemm<'_>) {
    let (k, n) = (g.w.k, g.w.n);
    for r in 0..g.rows {
        let ar = &g.a[r * k..(r + 1) * k];
        for j in 0..n {
            let (p, q) = (j / PANEL, j % PANEL);
            let mut acc = g.w.bias[j];
            for (i, &x) in ar.iter().enumerate() {
                acc += x * g.w.data[(p * k + i) * PANEL + q];
            }
            let mut y = g.act.apply(acc);
            if let Some(res) = g.res {
                y = g.act2.apply(y + res[r * n + j]);
            }
            g.c[r * n + j] = y;
        }
    }
}

/// A convolution as a matrix product (Chellapilla et al. 2006): each output pixel is a row of
/// `kh kw C_in` inputs (its NHWC im2col patch, built per band of output rows in a small
/// buffer; a 1x1 / stride 1 convolution reads the input rows directly) times the packed
/// `[kh kw C_in, C_out]` weights, with bias and activation applied as the results leave the
/// registers.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    pub win: Window,
    pub cin: usize,
    pub w: Packed,
    pub act: Act,
    pub pointwise: bool,
    /// A depthwise convolution (multiplier 1) whose output is this pointwise convolution's
    /// input and read by nothing else: its rows are made a few at a time into a buffer that
    /// stays in L2 and multiplied from there, instead of written out whole and read back
    /// (the input is then the depthwise's).
    pub pre: Option<Depthwise>,
}

/// Size (floats) of the im2col buffer of one band step: a few output rows, in L2.
const IM2COL_CHUNK: usize = 1 << 15;

impl Conv {
    fn check(&self, dims: [usize; 4]) -> Result<()> {
        let [_, h, w, c] = dims;
        if let Some(dw) = &self.pre {
            let dwin = &dw.win;
            if (h, w, c) != (dwin.in_h, dwin.in_w, self.cin)
                || !self.pointwise
                || (self.win.out_h, self.win.out_w) != (self.win.in_h, self.win.in_w)
                || dw.multiplier != 1
                || (dwin.out_h, dwin.out_w) != (self.win.in_h, self.win.in_w)
                || dw.bias.len() != c
                || dw.weights.len() != dwin.kh * dwin.kw * c
                || self.w.k != c
            {
                bail!("depthwise + conv: input {h}x{w}x{c} does not fit the prepared kernels");
            }
            return Ok(());
        }
        let win = &self.win;
        if (h, w, c) != (win.in_h, win.in_w, self.cin)
            || self.w.k != win.kh * win.kw * c
            || (self.pointwise && (win.out_h, win.out_w) != (h, w))
        {
            bail!("conv: input {h}x{w}x{c} does not fit the prepared kernel");
        }
        Ok(())
    }

    /// The output `[n, out_h, out_w, C_out]`, with `act2(y + res)` when `res` is given.
    fn forward(&self, x: &[f32], n: usize, res: Option<&[f32]>, act2: Act) -> Vec<f32> {
        let win = &self.win;
        let (oh, ow, co, k) = (win.out_h, win.out_w, self.w.n, self.w.k);
        let plane = win.in_h * win.in_w * self.cin;
        let mut out = vec![0f32; n * oh * ow * co];
        let arch = Arch::new();
        let pre_work = self
            .pre
            .as_ref()
            .map_or(0, |d| ow * k * d.win.kh * d.win.kw);
        par_rows(&mut out, ow * co, ow * co * k + pre_work, |r0, band| {
            let mut cols = Vec::new();
            let rows = band.len() / (ow * co);
            let step = if self.pointwise && self.pre.is_none() {
                rows
            } else {
                (IM2COL_CHUNK / (ow * k).max(1)).clamp(1, rows.max(1))
            };
            let mut i = 0;
            while i < rows {
                let m = step.min(rows - i);
                let first = r0 + i;
                let a: &[f32] = if let Some(dw) = &self.pre {
                    cols.resize(m * ow * k, 0.0);
                    dispatch_for(
                        k,
                        DepthwiseRows {
                            op: dw,
                            x,
                            c: k,
                            first,
                            band: &mut cols,
                        },
                    );
                    &cols
                } else if self.pointwise {
                    &x[first * ow * k..(first + m) * ow * k]
                } else {
                    cols.resize(m * ow * k, 0.0);
                    for (q, dst) in cols.chunks_exact_mut(ow * k).enumerate() {
                        let (b, oy) = ((first + q) / oh, (first + q) % oh);
                        im2col_row(win, &x[b * plane..(b + 1) * plane], self.cin, oy, dst);
                    }
                    &cols
                };
                let span = first * ow * co..(first + m) * ow * co;
                arch.dispatch(Gemm {
                    w: &self.w,
                    a,
                    rows: m * ow,
                    c: &mut band[i * ow * co..(i + m) * ow * co],
                    res: res.map(|r| &r[span]),
                    act: self.act,
                    act2,
                });
                i += m;
            }
        });
        out
    }
}

impl CustomOp1 for Conv {
    fn name(&self) -> &'static str {
        "tflite-conv2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dims) = nhwc(s, l, self.name())?;
        self.check(dims)?;
        let out = self.forward(x, dims[0], None, Act::None);
        let shape = [dims[0], self.win.out_h, self.win.out_w, self.w.n];
        Ok((CpuStorage::F32(out), Shape::from_dims(&shape)))
    }
}

/// A convolution followed by the ADD of a residual (`act2(conv(x) + r)`), in one pass: the
/// sum is made as the convolution's results leave the registers.
#[derive(Debug, Clone)]
pub(crate) struct ConvAdd {
    pub conv: Conv,
    pub act2: Act,
}

impl CustomOp2 for ConvAdd {
    fn name(&self) -> &'static str {
        "tflite-conv2d-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dims) = nhwc(s1, l1, self.name())?;
        self.conv.check(dims)?;
        let c = &self.conv;
        let shape = [dims[0], c.win.out_h, c.win.out_w, c.w.n];
        if l2.shape().dims() != shape {
            bail!(
                "conv + add: residual {:?}, convolution output {shape:?}",
                l2.shape()
            );
        }
        let r = contiguous(s2, l2, self.name())?;
        let out = c.forward(x, dims[0], Some(r), self.act2);
        Ok((CpuStorage::F32(out), Shape::from_dims(&shape)))
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

/// Output pixels (in vectors) a [`DirectRows`] chunk keeps in registers.
const DIRECT_CHUNK: usize = 8;

/// Output rows of a stride-1 [`ConvDirect`] from a planar copy of the input: `planar[ci][y][x]`
/// with the padding as zeros (`pw` columns, `ph` rows per channel), so each tap of each output
/// channel is a contiguous stream along the row: `acc[ox] += w[o, ky, kx, ci]
/// planar[ci][oy + ky][ox + kx]`, [`DIRECT_CHUNK`] vectors of outputs in registers, taps in
/// `(ky, kx, ci)` order from the bias.
struct DirectRows<'a> {
    op: &'a ConvDirect,
    planar: &'a [f32],
    c: usize,
    pw: usize,
    ph: usize,
    first: usize,
    band: &'a mut [f32],
}

impl WithSimd for DirectRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            op,
            planar,
            c,
            pw,
            ph,
            first,
            band,
        } = self;
        let win = &op.win;
        let (co, ow, l) = (op.bias.len(), win.out_w, S::F32_LANES);
        let (kh, kw) = (win.kh, win.kw);
        let mut row = vec![0f32; ow];
        for (i, dst) in band.chunks_exact_mut(ow * co).enumerate() {
            let (b, oy) = ((first + i) / win.out_h, (first + i) % win.out_h);
            let img = &planar[b * c * ph * pw..(b + 1) * c * ph * pw];
            for o in 0..co {
                let bias = simd.splat_f32s(op.bias[o]);
                let mut x0 = 0;
                while x0 + DIRECT_CHUNK * l <= ow {
                    let mut acc = [bias; DIRECT_CHUNK];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            for ci in 0..c {
                                let t = ((o * kh + ky) * kw + kx) * c + ci;
                                let wv = simd.splat_f32s(op.weights[t]);
                                let start = (ci * ph + oy + ky) * pw + x0 + kx;
                                let src = S::as_simd_f32s(&img[start..start + DIRECT_CHUNK * l]).0;
                                for (a, &xv) in acc.iter_mut().zip(src) {
                                    *a = simd.mul_add_f32s(xv, wv, *a);
                                }
                            }
                        }
                    }
                    let (rh, _) = S::as_mut_simd_f32s(&mut row[x0..x0 + DIRECT_CHUNK * l]);
                    for (r, a) in rh.iter_mut().zip(acc) {
                        *r = act_v(simd, op.act, a);
                    }
                    x0 += DIRECT_CHUNK * l;
                }
                // the rest of the row, one output at a time
                for (ox, r) in row.iter_mut().enumerate().skip(x0) {
                    let mut acc = op.bias[o];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            for ci in 0..c {
                                let t = ((o * kh + ky) * kw + kx) * c + ci;
                                let v = img[(ci * ph + oy + ky) * pw + ox + kx];
                                acc = v.mul_add(op.weights[t], acc);
                            }
                        }
                    }
                    *r = op.act.apply(acc);
                }
                for (d, &r) in dst.iter_mut().skip(o).step_by(co).zip(&row) {
                    *d = r;
                }
            }
        }
    }
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
        if (win.sh, win.sw, win.dh, win.dw) == (1, 1, 1, 1) {
            // planar copy with zero padding: rows pad_top + in_h + kh - 1, columns likewise
            let (pw, ph) = (ow + win.kw - 1, oh + win.kh - 1);
            let mut planar = vec![0f32; n * c * ph * pw];
            let cols = w.min(pw - win.pad_left);
            for b in 0..n {
                for y in 0..h.min(ph - win.pad_top) {
                    let src = &x[(b * h + y) * w * c..(b * h + y + 1) * w * c];
                    for ci in 0..c {
                        let d = ((b * c + ci) * ph + y + win.pad_top) * pw + win.pad_left;
                        for (o, px) in planar[d..d + cols].iter_mut().zip(src.chunks_exact(c)) {
                            *o = px[ci];
                        }
                    }
                }
            }
            par_rows(&mut out, ow * co, ow * co * kk * c, |r0, band| {
                Arch::new().dispatch(DirectRows {
                    op: self,
                    planar: &planar,
                    c,
                    pw,
                    ph,
                    first: r0,
                    band,
                })
            });
            return Ok((CpuStorage::F32(out), Shape::from_dims(&[n, oh, ow, co])));
        }
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

/// Output rows of a [`ResizeBilinear`], vectorised over channels: `w00 p00 + w01 p01 + w10 p10 +
/// w11 p11` per output (fused multiply-adds, in that order).
struct ResizeRows<'a> {
    x: &'a [f32],
    dims: [usize; 3],
    out_h: usize,
    ys: &'a [(usize, usize, f32)],
    xs: &'a [(usize, usize, f32)],
    first: usize,
    band: &'a mut [f32],
}

impl WithSimd for ResizeRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            x,
            dims: [h, w, c],
            out_h,
            ys,
            xs,
            first,
            band,
        } = self;
        let ow = xs.len();
        for (i, dst) in band.chunks_exact_mut(ow * c).enumerate() {
            let (b, oy) = ((first + i) / out_h, (first + i) % out_h);
            let img = &x[b * h * w * c..(b + 1) * h * w * c];
            let (y0, y1, fy) = ys[oy];
            let (r0, r1) = (
                &img[y0 * w * c..(y0 + 1) * w * c],
                &img[y1 * w * c..(y1 + 1) * w * c],
            );
            for (d, &(x0, x1, fx)) in dst.chunks_exact_mut(c).zip(xs) {
                let ws = [
                    (1.0 - fy) * (1.0 - fx),
                    (1.0 - fy) * fx,
                    fy * (1.0 - fx),
                    fy * fx,
                ];
                let ps = [
                    &r0[x0 * c..(x0 + 1) * c],
                    &r0[x1 * c..(x1 + 1) * c],
                    &r1[x0 * c..(x0 + 1) * c],
                    &r1[x1 * c..(x1 + 1) * c],
                ];
                // (no closures in here: they would not inherit the SIMD target features)
                let w00 = simd.splat_f32s(ws[0]);
                let w01 = simd.splat_f32s(ws[1]);
                let w10 = simd.splat_f32s(ws[2]);
                let w11 = simd.splat_f32s(ws[3]);
                let (p00, t00) = S::as_simd_f32s(ps[0]);
                let (p01, t01) = S::as_simd_f32s(ps[1]);
                let (p10, t10) = S::as_simd_f32s(ps[2]);
                let (p11, t11) = S::as_simd_f32s(ps[3]);
                let (dh, dt) = S::as_mut_simd_f32s(d);
                for ((((o, &a), &b), &e), &f) in dh.iter_mut().zip(p00).zip(p01).zip(p10).zip(p11) {
                    let acc = simd.mul_f32s(a, w00);
                    let acc = simd.mul_add_f32s(b, w01, acc);
                    let acc = simd.mul_add_f32s(e, w10, acc);
                    *o = simd.mul_add_f32s(f, w11, acc);
                }
                for (k, o) in dt.iter_mut().enumerate() {
                    let acc = t00[k] * ws[0];
                    let acc = t01[k].mul_add(ws[1], acc);
                    let acc = t10[k].mul_add(ws[2], acc);
                    *o = t11[k].mul_add(ws[3], acc);
                }
            }
        }
    }
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
            dispatch_for(
                c,
                ResizeRows {
                    x,
                    dims: [h, w, c],
                    out_h: oh,
                    ys: &ys,
                    xs: &xs,
                    first: r0,
                    band,
                },
            )
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

#[cfg(test)]
mod tests {
    //! The SIMD kernels against plain loops of the definitions in the module doc, on random
    //! data, with shapes that reach every path: borders on all sides, strides 1 and 2, channel
    //! counts with and without a vector tail (AVX-512, AVX2 and scalar widths), partial blocks.

    use super::*;

    /// Deterministic values in [-1, 1) (an LCG).
    fn rnd(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn storage(x: &[f32], dims: &[usize]) -> (CpuStorage, Layout) {
        (
            CpuStorage::F32(x.to_vec()),
            Layout::contiguous(Shape::from_dims(dims)),
        )
    }

    fn f32s(s: CpuStorage) -> Vec<f32> {
        match s {
            CpuStorage::F32(v) => v,
            _ => panic!("not f32"),
        }
    }

    /// `y[oy, ox, o] = act(b[o] + sum x[iy, ix, c] w[tap(o, ky, kx, c)])` in f64 over the
    /// window's in-image taps; `w_at(o, ky, kx, c)` indexes the weights.
    fn naive_conv(
        win: &Window,
        x: &[f32],
        c: usize,
        co: usize,
        w_at: impl Fn(usize, usize, usize, usize) -> f32,
        bias: &[f32],
        act: Act,
    ) -> Vec<f32> {
        let mut y = Vec::new();
        for oy in 0..win.out_h {
            for ox in 0..win.out_w {
                for o in 0..co {
                    let mut acc = f64::from(bias[o]);
                    for ky in 0..win.kh {
                        for kx in 0..win.kw {
                            let (Some(iy), Some(ix)) = (win.src_y(oy, ky), win.src_x(ox, kx))
                            else {
                                continue;
                            };
                            for ci in 0..c {
                                acc += f64::from(x[(iy * win.in_w + ix) * c + ci])
                                    * f64::from(w_at(o, ky, kx, ci));
                            }
                        }
                    }
                    y.push(act.apply(acc as f32));
                }
            }
        }
        y
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}: element {i}: {g} vs {w}"
            );
        }
    }

    /// Windows: SAME 3x3/1, SAME 3x3/2, SAME 5x5/1, SAME 5x5/2, explicit (1, 2) pads 3x3/2, a
    /// VALID 2x2/1, on 7x9 and 13x10 images.
    fn windows() -> Vec<Window> {
        let mut v = Vec::new();
        for (h, w) in [(7, 9), (13, 10)] {
            for (k, st) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
                v.extend(Window::new((h, w), (k, k), (st, st), (1, 1), Padding::Same));
            }
            v.extend(Window::explicit(
                (h, w),
                (3, 3),
                (2, 2),
                (1, 1),
                (1, 2),
                (1, 2),
            ));
            v.extend(Window::new((h, w), (2, 2), (1, 1), (1, 1), Padding::Valid));
        }
        v
    }

    /// The matrix product gives the same bits on every instruction set it is compiled for, and
    /// they are the module doc's sum done in order with fused multiply-adds: `bias[j]`, then
    /// `a[r, i] w[i, j] + acc` for i = 0, 1, .., the activation, the residual. Row counts
    /// cover partial blocks of every block height (1, 3, 6, 8), column counts the slices of
    /// every width (scalar, 8, 16, 32 lanes) with and without a tail.
    #[test]
    fn gemm_is_the_same_sum_on_every_instruction_set() {
        for (rows, k, n) in [
            (1, 1, 1),
            (5, 7, 5),
            (7, 27, 8),
            (13, 16, 24),
            (9, 3, 33),
            (17, 40, 120),
        ] {
            let a = rnd(rows * k, 5);
            let (filt, bias, res) = (rnd(n * k, 6), rnd(n, 7), rnd(rows * n, 8));
            let w = Packed::from_filter(&filt, n, k, &bias).expect("pack");
            let mut want = vec![0f32; rows * n];
            for r in 0..rows {
                for j in 0..n {
                    let mut acc = bias[j];
                    for i in 0..k {
                        acc = a[r * k + i].mul_add(filt[j * k + i], acc);
                    }
                    want[r * n + j] = Act::Relu.apply(Act::Relu6.apply(acc) + res[r * n + j]);
                }
            }
            let run = |f: &dyn Fn(Gemm<'_>)| {
                let mut c = vec![f32::NAN; rows * n];
                f(Gemm {
                    w: &w,
                    a: &a,
                    rows,
                    c: &mut c,
                    res: Some(&res),
                    act: Act::Relu6,
                    act2: Act::Relu,
                });
                c
            };
            let what = format!("{rows} x {k} x {n}");
            assert_eq!(
                run(&|g| pulp::Scalar::new().vectorize(g)),
                want,
                "scalar, {what}"
            );
            assert_eq!(run(&|g| Arch::new().dispatch(g)), want, "widest, {what}");
            #[cfg(target_arch = "x86_64")]
            {
                if let Some(simd) = pulp::x86::V3::try_new() {
                    assert_eq!(run(&|g| Simd::vectorize(simd, g)), want, "AVX2, {what}");
                }
                if let Some(simd) = pulp::x86::V4::try_new() {
                    assert_eq!(run(&|g| Simd::vectorize(simd, g)), want, "AVX-512, {what}");
                }
            }
        }
    }

    #[test]
    fn conv_and_conv_add_match_the_definition() {
        for (wi, win) in windows().into_iter().enumerate() {
            for (cin, co) in [(3, 5), (8, 24), (16, 33), (5, 64)] {
                let k = win.kh * win.kw * cin;
                let x = rnd(win.in_h * win.in_w * cin, 1 + wi as u64);
                let filt = rnd(co * k, 2);
                let bias = rnd(co, 3);
                let conv = Conv {
                    win,
                    cin,
                    w: Packed::from_filter(&filt, co, k, &bias).expect("pack"),
                    act: Act::Relu6,
                    pointwise: false,
                    pre: None,
                };
                let w_at = |o: usize, ky: usize, kx: usize, ci: usize| {
                    filt[o * k + (ky * win.kw + kx) * cin + ci]
                };
                let want = naive_conv(&win, &x, cin, co, w_at, &bias, Act::Relu6);
                let (st, l) = storage(&x, &[1, win.in_h, win.in_w, cin]);
                let (y, shape) = conv.cpu_fwd(&st, &l).expect("conv");
                assert_eq!(shape.dims(), &[1, win.out_h, win.out_w, co]);
                let what = format!("conv {win:?} {cin}->{co}");
                assert_close(&f32s(y), &want, &what);

                // act2(conv(x) + r), conv without activation
                let r = rnd(want.len(), 4);
                let plain = Conv {
                    act: Act::None,
                    ..conv
                };
                let lin = naive_conv(&win, &x, cin, co, w_at, &bias, Act::None);
                let want: Vec<f32> = lin.iter().zip(&r).map(|(a, b)| (a + b).max(0.0)).collect();
                let (rs, rl) = storage(&r, shape.dims());
                let add = ConvAdd {
                    conv: plain,
                    act2: Act::Relu,
                };
                let (y, _) = add.cpu_fwd(&st, &l, &rs, &rl).expect("conv + add");
                assert_close(&f32s(y), &want, &format!("{what} + add"));
            }
        }
    }

    #[test]
    fn pointwise_conv_reads_rows_in_place() {
        let win = Window::new((6, 11), (1, 1), (1, 1), (1, 1), Padding::Valid).expect("win");
        for (cin, co) in [(1, 1), (16, 64), (24, 8), (40, 120)] {
            let x = rnd(66 * cin, 5);
            let filt = rnd(co * cin, 6);
            let bias = rnd(co, 7);
            let conv = Conv {
                win,
                cin,
                w: Packed::from_filter(&filt, co, cin, &bias).expect("pack"),
                act: Act::None,
                pointwise: true,
                pre: None,
            };
            let want = naive_conv(
                &win,
                &x,
                cin,
                co,
                |o, _, _, c| filt[o * cin + c],
                &bias,
                Act::None,
            );
            let (st, l) = storage(&x, &[1, 6, 11, cin]);
            let (y, _) = conv.cpu_fwd(&st, &l).expect("conv");
            assert_close(&f32s(y), &want, &format!("1x1 {cin}->{co}"));
        }
    }

    /// One output channel per input channel: a convolution whose filter is zero across
    /// channels; weights `[kh, kw, c]`.
    fn naive_depthwise(
        win: &Window,
        x: &[f32],
        c: usize,
        weights: &[f32],
        bias: &[f32],
        act: Act,
    ) -> Vec<f32> {
        let mut want = Vec::new();
        for oy in 0..win.out_h {
            for ox in 0..win.out_w {
                for ch in 0..c {
                    let mut acc = f64::from(bias[ch]);
                    for ky in 0..win.kh {
                        for kx in 0..win.kw {
                            let (Some(iy), Some(ix)) = (win.src_y(oy, ky), win.src_x(ox, kx))
                            else {
                                continue;
                            };
                            acc += f64::from(x[(iy * win.in_w + ix) * c + ch])
                                * f64::from(weights[(ky * win.kw + kx) * c + ch]);
                        }
                    }
                    want.push(act.apply(acc as f32));
                }
            }
        }
        want
    }

    /// A depthwise convolution folded into the pointwise convolution that reads it (with and
    /// without the residual ADD) against the two definitions one after the other, over every
    /// window, two images (the batch index of the rows) and a size that splits over threads.
    #[test]
    fn depthwise_then_pointwise_matches_the_definitions() {
        let mut cases: Vec<(Window, usize, usize, usize)> = windows()
            .into_iter()
            .flat_map(|w| [(w, 8, 24, 1), (w, 16, 33, 2), (w, 13, 16, 1)])
            .collect();
        cases.extend(
            Window::new((40, 40), (3, 3), (1, 1), (1, 1), Padding::Same).map(|w| (w, 32, 64, 2)),
        );
        for (wi, (win, c, co, n)) in cases.into_iter().enumerate() {
            let plane = win.in_h * win.in_w * c;
            let x = rnd(n * plane, 20 + wi as u64);
            let weights = rnd(win.kh * win.kw * c, 21);
            let bias = rnd(c, 22);
            let filt = rnd(co * c, 23);
            let bias2 = rnd(co, 24);
            let pw = Window::new(
                (win.out_h, win.out_w),
                (1, 1),
                (1, 1),
                (1, 1),
                Padding::Valid,
            )
            .expect("1x1 window");
            let conv = Conv {
                win: pw,
                cin: c,
                w: Packed::from_filter(&filt, co, c, &bias2).expect("pack"),
                act: Act::Relu,
                pointwise: true,
                pre: Some(Depthwise {
                    win,
                    weights: weights.clone(),
                    bias: bias.clone(),
                    multiplier: 1,
                    act: Act::Relu6,
                }),
            };
            let mut want = Vec::new();
            let mut lin = Vec::new();
            for b in 0..n {
                let mid = naive_depthwise(
                    &win,
                    &x[b * plane..(b + 1) * plane],
                    c,
                    &weights,
                    &bias,
                    Act::Relu6,
                );
                let w_at = |o: usize, _: usize, _: usize, ci: usize| filt[o * c + ci];
                want.extend(naive_conv(&pw, &mid, c, co, w_at, &bias2, Act::Relu));
                lin.extend(naive_conv(&pw, &mid, c, co, w_at, &bias2, Act::None));
            }
            let (st, l) = storage(&x, &[n, win.in_h, win.in_w, c]);
            let (y, shape) = conv.cpu_fwd(&st, &l).expect("depthwise + conv");
            assert_eq!(shape.dims(), &[n, win.out_h, win.out_w, co]);
            let what = format!("depthwise {win:?} {c} then 1x1 -> {co}, {n} images");
            assert_close(&f32s(y), &want, &what);

            let r = rnd(want.len(), 25);
            let want: Vec<f32> = lin.iter().zip(&r).map(|(a, b)| a + b).collect();
            let (rs, rl) = storage(&r, shape.dims());
            let add = ConvAdd {
                conv: Conv {
                    act: Act::None,
                    ..conv
                },
                act2: Act::None,
            };
            let (y, _) = add
                .cpu_fwd(&st, &l, &rs, &rl)
                .expect("depthwise + conv + add");
            assert_close(&f32s(y), &want, &format!("{what} + add"));
        }
    }

    #[test]
    fn depthwise_matches_the_definition() {
        for (wi, win) in windows().into_iter().enumerate() {
            for c in [8, 16, 24, 13, 48] {
                let x = rnd(win.in_h * win.in_w * c, 10 + wi as u64);
                let weights = rnd(win.kh * win.kw * c, 11);
                let bias = rnd(c, 12);
                let dw = Depthwise {
                    win,
                    weights: weights.clone(),
                    bias: bias.clone(),
                    multiplier: 1,
                    act: Act::Relu,
                };
                let want = naive_depthwise(&win, &x, c, &weights, &bias, Act::Relu);
                let (st, l) = storage(&x, &[1, win.in_h, win.in_w, c]);
                let (y, _) = dw.cpu_fwd(&st, &l).expect("depthwise");
                assert_close(&f32s(y), &want, &format!("depthwise {win:?} c {c}"));
            }
        }
    }

    #[test]
    fn direct_conv_matches_the_definition() {
        for (wi, win) in windows().into_iter().enumerate() {
            for (cin, co) in [(8, 1), (3, 2), (16, 4)] {
                let kk = win.kh * win.kw;
                let x = rnd(win.in_h * win.in_w * cin, 20 + wi as u64);
                let weights = rnd(co * kk * cin, 21);
                let bias = rnd(co, 22);
                let conv = ConvDirect {
                    win,
                    weights: weights.clone(),
                    bias: bias.clone(),
                    act: Act::None,
                };
                let w_at = |o: usize, ky: usize, kx: usize, ci: usize| {
                    weights[((o * win.kh + ky) * win.kw + kx) * cin + ci]
                };
                let want = naive_conv(&win, &x, cin, co, w_at, &bias, Act::None);
                let (st, l) = storage(&x, &[1, win.in_h, win.in_w, cin]);
                let (y, _) = conv.cpu_fwd(&st, &l).expect("direct");
                assert_close(&f32s(y), &want, &format!("direct {win:?} {cin}->{co}"));
            }
        }
    }

    #[test]
    fn wide_rows_take_the_register_chunks_of_the_direct_kernel() {
        // 40 columns: two chunks of 16 (AVX-512) or four of 8 (AVX2), then single outputs
        let win = Window::new((5, 40), (3, 3), (1, 1), (1, 1), Padding::Same).expect("win");
        let (cin, co) = (8, 1);
        let x = rnd(5 * 40 * cin, 30);
        let weights = rnd(9 * cin, 31);
        let conv = ConvDirect {
            win,
            weights: weights.clone(),
            bias: vec![0.25],
            act: Act::Relu6,
        };
        let want = naive_conv(
            &win,
            &x,
            cin,
            co,
            |_, ky, kx, ci| weights[(ky * 3 + kx) * cin + ci],
            &[0.25],
            Act::Relu6,
        );
        let (st, l) = storage(&x, &[1, 5, 40, cin]);
        let (y, _) = conv.cpu_fwd(&st, &l).expect("direct");
        assert_close(&f32s(y), &want, "direct 5x40");
    }

    #[test]
    fn resize_matches_the_formula() {
        for c in [8, 5, 32] {
            let (h, w, oh, ow) = (4, 6, 9, 13);
            let x = rnd(h * w * c, 40);
            for (align, half) in [(false, false), (true, false), (false, true)] {
                let r = ResizeBilinear {
                    out_h: oh,
                    out_w: ow,
                    align_corners: align,
                    half_pixel_centers: half,
                };
                let ys = interp_coords(oh, h, align, half);
                let xs = interp_coords(ow, w, align, half);
                let mut want = Vec::new();
                for &(y0, y1, fy) in &ys {
                    for &(x0, x1, fx) in &xs {
                        for k in 0..c {
                            let p = |y: usize, xx: usize| f64::from(x[(y * w + xx) * c + k]);
                            let (fy, fx) = (f64::from(fy), f64::from(fx));
                            let v = p(y0, x0) * (1.0 - fy) * (1.0 - fx)
                                + p(y0, x1) * (1.0 - fy) * fx
                                + p(y1, x0) * fy * (1.0 - fx)
                                + p(y1, x1) * fy * fx;
                            want.push(v as f32);
                        }
                    }
                }
                let (st, l) = storage(&x, &[1, h, w, c]);
                let (y, _) = r.cpu_fwd(&st, &l).expect("resize");
                assert_close(&f32s(y), &want, &format!("resize c {c} {align} {half}"));
            }
        }
    }

    #[test]
    fn large_inputs_split_over_threads_give_the_same_result() {
        // enough work for par_rows to split (PAR_MIN_WORK), compared with a single band
        let win = Window::new((64, 64), (3, 3), (1, 1), (1, 1), Padding::Same).expect("win");
        let c = 32;
        let x = rnd(64 * 64 * c, 50);
        let dw = Depthwise {
            win,
            weights: rnd(9 * c, 51),
            bias: rnd(c, 52),
            multiplier: 1,
            act: Act::None,
        };
        let (st, l) = storage(&x, &[1, 64, 64, c]);
        let (y, _) = dw.cpu_fwd(&st, &l).expect("depthwise");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let (y1, _) = pool.install(|| dw.cpu_fwd(&st, &l)).expect("depthwise");
        assert_eq!(f32s(y), f32s(y1));
    }
}
