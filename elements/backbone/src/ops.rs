//! CPU kernels as candle custom ops, each with its backward pass, plus the convolution and
//! transposed convolution built from them.
//!
//! * [`im2col`] / [`col2im`]: the classic lowering of a convolution to a matrix product
//!   (Chellapilla et al. 2006; Caffe). `conv2d(x, W) = W[Cout, Cin*k*k] . im2col(x)` and the
//!   transposed convolution is `col2im(W^T . x)`. Each op is the other's adjoint, so each is the
//!   other's backward pass and every gradient (input and weight) comes out of candle's autograd.
//! * [`max_pool2d`]: k x k / stride s / padding p max-pooling (padding counts as -inf, as in
//!   PyTorch) whose backward routes the gradient to the first maximum of each window (PyTorch's
//!   tie rule). candle's own `max_pool2d` has no padding and no backward when k != s.
//! * [`soft_argmax`]: fused softmax over a whole D x H x W volume and the expected cell indices
//!   (HybrIK `norm_heatmap` + marginals), with the analytic backward
//!   d c / d l_i = p_i (g_i - c).
//!
//! On a non-CPU device every function falls back to candle's own ops (inference only where
//! candle has no backward).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType, bail,
};
use rayon::prelude::*;

/// Floating types the kernels support.
trait Float: WithDType + Into<f64> {
    fn slice(s: &CpuStorage) -> Result<&[Self]> {
        Self::cpu_storage_as_slice(s)
    }
    fn nil() -> Self {
        Self::from_f64(0.0)
    }
}
impl Float for f32 {}
impl Float for f64 {}

fn contiguous<'a, T: Float>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&T::slice(s)?[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

macro_rules! dispatch_float {
    ($s:expr, $op:expr, |$t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            _ => bail!("{}: only f32 and f64 are supported", $op),
        }
    };
}

/// Work (elements) below which a kernel runs on the calling thread: waking rayon's workers
/// costs more than it saves on small tensors (ResNet layers 3 and 4 at 256 x 256).
const PAR_MIN_ELEMS: usize = 1 << 17;

/// Runs `f(i, plane_i)` over the `plane`-sized chunks of `dst`, in parallel (batches of at
/// least ~16K elements) when `dst` is large, on the calling thread otherwise.
fn for_each_plane<T: Send>(dst: &mut [T], plane: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let plane = plane.max(1);
    if dst.len() < PAR_MIN_ELEMS {
        dst.chunks_mut(plane).enumerate().for_each(|(i, p)| f(i, p));
    } else {
        dst.par_chunks_mut(plane)
            .with_min_len((16384 / plane).max(1))
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    }
}

// ------------------------------------------------------------------------------------------------
// im2col / col2im

/// Geometry of a 2D sliding window over an image of `channels x h x w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Window {
    /// Output rows of the convolution (PyTorch floor rule).
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.k_h) / self.stride + 1
    }
    /// Output columns.
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.k_w) / self.stride + 1
    }
    fn kk(&self) -> usize {
        self.k_h * self.k_w
    }
    fn check(&self) -> Result<()> {
        if self.stride == 0
            || self.k_h == 0
            || self.k_w == 0
            || self.h + 2 * self.pad < self.k_h
            || self.w + 2 * self.pad < self.k_w
        {
            bail!("bad sliding window {self:?}")
        }
        Ok(())
    }
}

/// `[N, C, H, W] -> [N, C*k_h*k_w, H_out*W_out]`; row `c*k_h*k_w + ky*k_w + kx`, column
/// `oy*W_out + ox` holds `x[c, oy*s + ky - p, ox*s + kx - p]` (0 outside the image).
#[derive(Debug, Clone, Copy)]
struct Im2Col(Window);

/// The adjoint of [`Im2Col`]: scatter-adds the columns back into `[N, C, H, W]`.
#[derive(Debug, Clone, Copy)]
struct Col2Im(Window);

#[inline(always)]
fn im2col_plane<T: Float>(g: &Window, src: &[T], dst: &mut [T]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let (s, p) = (g.stride as isize, g.pad as isize);
    for ky in 0..g.k_h {
        for kx in 0..g.k_w {
            let row = &mut dst[(ky * g.k_w + kx) * ho * wo..][..ho * wo];
            for oy in 0..ho {
                let out = &mut row[oy * wo..][..wo];
                let iy = oy as isize * s + ky as isize - p;
                if iy < 0 || iy >= g.h as isize {
                    out.fill(T::nil());
                    continue;
                }
                let line = &src[iy as usize * g.w..][..g.w];
                // Valid ox: 0 <= ox*s + kx - p < w.
                let x0 = kx as isize - p;
                let lo = if x0 >= 0 { 0 } else { ((-x0) + s - 1) / s } as usize;
                let hi = (((g.w as isize - x0) + s - 1) / s).clamp(0, wo as isize) as usize;
                let lo = lo.min(hi);
                out[..lo].fill(T::nil());
                out[hi..].fill(T::nil());
                if g.stride == 1 {
                    let start = (lo as isize + x0) as usize;
                    out[lo..hi].copy_from_slice(&line[start..start + (hi - lo)]);
                } else {
                    for (ox, o) in out[lo..hi].iter_mut().enumerate() {
                        *o = line[((lo + ox) as isize * s + x0) as usize];
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn col2im_plane<T: Float>(g: &Window, src: &[T], dst: &mut [T]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let (s, p) = (g.stride as isize, g.pad as isize);
    dst.fill(T::nil());
    for ky in 0..g.k_h {
        for kx in 0..g.k_w {
            let row = &src[(ky * g.k_w + kx) * ho * wo..][..ho * wo];
            for oy in 0..ho {
                let iy = oy as isize * s + ky as isize - p;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let col = &row[oy * wo..][..wo];
                let line = &mut dst[iy as usize * g.w..][..g.w];
                let x0 = kx as isize - p;
                let lo = if x0 >= 0 { 0 } else { ((-x0) + s - 1) / s } as usize;
                let hi = (((g.w as isize - x0) + s - 1) / s).clamp(0, wo as isize) as usize;
                for ox in lo..hi.max(lo) {
                    line[(ox as isize * s + x0) as usize] += col[ox];
                }
            }
        }
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "ikol-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        g.check()?;
        let (n, c, h, w) = l.shape().dims4()?;
        if (c, h, w) != (g.channels, g.h, g.w) {
            bail!("im2col: input {:?} does not match {g:?}", l.shape())
        }
        let (plane_in, plane_out) = (h * w, g.kk() * g.out_h() * g.out_w());
        let shape = Shape::from((n, c * g.kk(), g.out_h() * g.out_w()));
        dispatch_float!(s, "im2col", |T| {
            let src = contiguous::<T>(s, l, "im2col")?;
            let mut dst = vec![T::nil(); n * c * plane_out];
            let arch = pulp::Arch::new();
            for_each_plane(&mut dst, plane_out, |i, d| {
                let s = &src[i * plane_in..(i + 1) * plane_in];
                arch.dispatch(|| im2col_plane(&g, s, d))
            });
            Ok((T::to_cpu_storage_owned(dst), shape))
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(col2im(grad, self.0)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "ikol-col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        g.check()?;
        let (n, ckk, l_out) = l.shape().dims3()?;
        if ckk != g.channels * g.kk() || l_out != g.out_h() * g.out_w() {
            bail!("col2im: columns {:?} do not match {g:?}", l.shape())
        }
        let (plane_in, plane_out) = (g.kk() * l_out, g.h * g.w);
        let shape = Shape::from((n, g.channels, g.h, g.w));
        dispatch_float!(s, "col2im", |T| {
            let src = contiguous::<T>(s, l, "col2im")?;
            let mut dst = vec![T::nil(); n * g.channels * plane_out];
            let arch = pulp::Arch::new();
            for_each_plane(&mut dst, plane_out, |i, d| {
                let s = &src[i * plane_in..(i + 1) * plane_in];
                arch.dispatch(|| col2im_plane(&g, s, d))
            });
            Ok((T::to_cpu_storage_owned(dst), shape))
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(im2col(grad, self.0)?))
    }
}

/// Differentiable im2col of a `[N, C, H, W]` tensor (CPU).
pub fn im2col(x: &Tensor, g: Window) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Im2Col(g))
}

/// Differentiable col2im of a `[N, C*k*k, H_out*W_out]` tensor into `[N, C, H, W]` (CPU).
pub fn col2im(cols: &Tensor, g: Window) -> Result<Tensor> {
    cols.contiguous()?.apply_op1(Col2Im(g))
}

/// 2D convolution, no bias, dilation 1, groups 1: `x [N, Cin, H, W]`, `w [Cout, Cin, k, k]`.
///
/// CPU: im2col + one matrix product per image (1x1 stride-1 convolutions skip im2col). Other
/// devices: candle's `conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.conv2d(w, pad, stride, 1, 1);
    }
    let (n, c, h, wd) = x.dims4()?;
    let (co, ci, k_h, k_w) = w.dims4()?;
    if ci != c {
        bail!(
            "conv2d: input has {c} channels, weight {:?} expects {ci}",
            w.shape()
        )
    }
    let g = Window {
        channels: c,
        h,
        w: wd,
        k_h,
        k_w,
        stride,
        pad,
    };
    g.check()?;
    let cols = if k_h == 1 && k_w == 1 && stride == 1 && pad == 0 {
        x.reshape((n, c, h * wd))?
    } else {
        im2col(x, g)?
    };
    let wm = w.reshape((co, ci * k_h * k_w))?;
    let out = batched_weight_matmul(&wm, &cols)?;
    out.reshape((n, co, g.out_h(), g.out_w()))
}

/// `w [M, K]` times each `cols[i] [K, N]`: `[B, M, N]` (one `gemm` call per image; the
/// weight is broadcast, not copied).
fn batched_weight_matmul(w: &Tensor, cols: &Tensor) -> Result<Tensor> {
    let (b, k, _) = cols.dims3()?;
    let m = w.dim(0)?;
    w.broadcast_as((b, m, k))?.matmul(cols)
}

/// Transposed 2D convolution, no bias, no output padding, dilation 1: `x [N, Cin, H, W]`,
/// `w [Cin, Cout, k, k]` (PyTorch's `ConvTranspose2d` weight layout); output side
/// `(H - 1) * stride - 2 * pad + k`.
///
/// CPU: `col2im(W^T . x)`: one matrix product per image (the FLOPs of the direct method) and a
/// scatter-add. Other devices: candle's `conv_transpose2d`.
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.conv_transpose2d(w, pad, 0, stride, 1);
    }
    let (n, c, h, wd) = x.dims4()?;
    let (ci, co, k_h, k_w) = w.dims4()?;
    if ci != c {
        bail!(
            "conv_transpose2d: input has {c} channels, weight {:?} expects {ci}",
            w.shape()
        )
    }
    let (ho, wo) = ((h - 1) * stride + k_h, (wd - 1) * stride + k_w);
    if ho <= 2 * pad || wo <= 2 * pad {
        bail!(
            "conv_transpose2d: padding {pad} too large for {:?}",
            x.shape()
        )
    }
    let g = Window {
        channels: co,
        h: ho - 2 * pad,
        w: wo - 2 * pad,
        k_h,
        k_w,
        stride,
        pad,
    };
    debug_assert_eq!((g.out_h(), g.out_w()), (h, wd));
    let wt = w.reshape((ci, co * k_h * k_w))?.t()?;
    let cols = batched_weight_matmul(&wt, &x.reshape((n, c, h * wd))?)?;
    col2im(&cols, g)
}

// ------------------------------------------------------------------------------------------------
// Max-pooling with padding and a backward pass

/// k x k max-pooling with stride and padding (-inf padding, floor output size).
#[derive(Debug, Clone, Copy)]
struct MaxPool {
    k: usize,
    stride: usize,
    pad: usize,
}

/// Backward of [`MaxPool`]: `(input, grad_out) -> grad_in`.
#[derive(Debug, Clone, Copy)]
struct MaxPoolGrad(MaxPool);

impl MaxPool {
    fn window(&self, h: usize, w: usize) -> Result<Window> {
        let g = Window {
            channels: 1,
            h,
            w,
            k_h: self.k,
            k_w: self.k,
            stride: self.stride,
            pad: self.pad,
        };
        g.check()?;
        if self.pad * 2 > self.k {
            bail!(
                "max_pool2d: padding {} larger than half the kernel",
                self.pad
            )
        }
        Ok(g)
    }

    /// Visits each output cell with its argmax (first maximum in row-major window order; a NaN
    /// replaces the current best, as in PyTorch's kernel) and the maximum.
    fn scan<T: Float>(g: &Window, src: &[T], mut f: impl FnMut(usize, usize, T)) {
        let (ho, wo) = (g.out_h(), g.out_w());
        for oy in 0..ho {
            let y0 = (oy * g.stride) as isize - g.pad as isize;
            for ox in 0..wo {
                let x0 = (ox * g.stride) as isize - g.pad as isize;
                let mut best: Option<(usize, T)> = None;
                for ky in 0..g.k_h as isize {
                    let iy = y0 + ky;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for kx in 0..g.k_w as isize {
                        let ix = x0 + kx;
                        if ix < 0 || ix >= g.w as isize {
                            continue;
                        }
                        let idx = iy as usize * g.w + ix as usize;
                        let v = src[idx];
                        let nan = Into::<f64>::into(v).is_nan();
                        let better = match best {
                            None => true,
                            Some((_, b)) => v > b || nan,
                        };
                        if better {
                            best = Some((idx, v));
                        }
                    }
                }
                // A window always overlaps the image because pad <= k / 2.
                if let Some((idx, v)) = best {
                    f(oy * wo + ox, idx, v);
                }
            }
        }
    }
}

/// Separable forward max-pool of one plane: a horizontal pass (max over `k` columns with
/// stride `s`) then a vertical one; -inf padding. Same values as [`MaxPool::scan`].
fn max_pool_plane<T: Float>(g: &Window, src: &[T], dst: &mut [T], tmp: &mut Vec<T>) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let ninf = T::from_f64(f64::NEG_INFINITY);
    let (s, p) = (g.stride as isize, g.pad as isize);
    tmp.clear();
    tmp.resize(g.h * wo, ninf);
    for (iy, line) in src.chunks_exact(g.w).enumerate() {
        let out = &mut tmp[iy * wo..(iy + 1) * wo];
        for (ox, o) in out.iter_mut().enumerate() {
            let x0 = (ox as isize * s - p).max(0) as usize;
            let x1 = ((ox as isize * s - p + g.k_w as isize).min(g.w as isize)) as usize;
            let mut m = ninf;
            for &v in &line[x0..x1] {
                if v > m || Into::<f64>::into(v).is_nan() {
                    m = v;
                }
            }
            *o = m;
        }
    }
    for oy in 0..ho {
        let y0 = (oy as isize * s - p).max(0) as usize;
        let y1 = ((oy as isize * s - p + g.k_h as isize).min(g.h as isize)) as usize;
        let out = &mut dst[oy * wo..(oy + 1) * wo];
        out.copy_from_slice(&tmp[y0 * wo..(y0 + 1) * wo]);
        for iy in y0 + 1..y1 {
            for (o, &v) in out.iter_mut().zip(&tmp[iy * wo..(iy + 1) * wo]) {
                if v > *o || Into::<f64>::into(v).is_nan() {
                    *o = v;
                }
            }
        }
    }
}

/// f32 3x3 / stride 2 / pad 1 max-pool of one plane (the ResNet stem), branch-free inner
/// loops. NaN handling follows `f32::max` (NaN ignored), unlike [`MaxPool::scan`].
#[inline(always)]
fn max_pool_3s2p1_f32(h: usize, w: usize, src: &[f32], dst: &mut [f32], tmp: &mut Vec<f32>) {
    let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    tmp.clear();
    tmp.resize(h * wo, 0.0);
    for (line, row) in src.chunks_exact(w).zip(tmp.chunks_exact_mut(wo)) {
        row[0] = if w > 1 { line[0].max(line[1]) } else { line[0] };
        // Interior: columns 2ox-1, 2ox, 2ox+1 all inside.
        let full = w.saturating_sub(2) / 2; // largest ox with 2ox+1 <= w-1
        for ox in 1..=full.min(wo - 1) {
            let c = 2 * ox;
            row[ox] = line[c - 1].max(line[c]).max(line[c + 1]);
        }
        if wo - 1 > full {
            let c = 2 * (wo - 1);
            row[wo - 1] = line[c - 1].max(line[c]);
        }
    }
    for (oy, out) in dst.chunks_exact_mut(wo).enumerate().take(ho) {
        let y0 = (2 * oy).saturating_sub(1);
        let y1 = (2 * oy + 2).min(h);
        out.copy_from_slice(&tmp[y0 * wo..(y0 + 1) * wo]);
        for iy in y0 + 1..y1 {
            for (o, &v) in out.iter_mut().zip(&tmp[iy * wo..(iy + 1) * wo]) {
                *o = o.max(v);
            }
        }
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "ikol-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let g = self.window(h, w)?;
        let (ho, wo) = (g.out_h(), g.out_w());
        if let (CpuStorage::F32(_), 3, 2, 1) = (s, self.k, self.stride, self.pad) {
            let src = contiguous::<f32>(s, l, "max_pool2d")?;
            let mut dst = vec![0f32; n * c * ho * wo];
            let arch = pulp::Arch::new();
            dst.par_chunks_mut(ho * wo)
                .zip(src.par_chunks(h * w))
                .for_each_init(Vec::new, |tmp, (d, s)| {
                    arch.dispatch(|| max_pool_3s2p1_f32(h, w, s, d, tmp))
                });
            return Ok((CpuStorage::F32(dst), Shape::from((n, c, ho, wo))));
        }
        dispatch_float!(s, "max_pool2d", |T| {
            let src = contiguous::<T>(s, l, "max_pool2d")?;
            let mut dst = vec![T::nil(); n * c * ho * wo];
            dst.par_chunks_mut(ho * wo)
                .zip(src.par_chunks(h * w))
                .for_each_init(Vec::new, |tmp, (d, s)| max_pool_plane(&g, s, d, tmp));
            Ok((T::to_cpu_storage_owned(dst), Shape::from((n, c, ho, wo))))
        })
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPoolGrad(*self),
        )?))
    }
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "ikol-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let g = self.0.window(h, w)?;
        let (ho, wo) = (g.out_h(), g.out_w());
        if l2.shape().dims() != [n, c, ho, wo] {
            bail!(
                "max_pool2d backward: grad {:?} for input {:?}",
                l2.shape(),
                l1.shape()
            )
        }
        dispatch_float!(s1, "max_pool2d backward", |T| {
            let src = contiguous::<T>(s1, l1, "max_pool2d backward")?;
            let grad = contiguous::<T>(s2, l2, "max_pool2d backward")?;
            let mut dst = vec![T::nil(); n * c * h * w];
            dst.par_chunks_mut(h * w)
                .zip(src.par_chunks(h * w).zip(grad.par_chunks(ho * wo)))
                .for_each(|(d, (s, gr))| MaxPool::scan(&g, s, |o, i, _| d[i] += gr[o]));
            Ok((T::to_cpu_storage_owned(dst), l1.shape().clone()))
        })
    }
}

/// `k x k` max-pooling with `stride` and `pad` (`pad <= k / 2`), with a backward pass on every
/// device. CPU: this crate's kernel, padding acting as -inf. Other devices (zero padding: the
/// same for the non-negative inputs the ResNet stem pools):
/// [`max_pool2d_by_shifts`] (candle's own max-pool has no backward when `k != stride`, as in
/// the ResNet stem's 3x3/2).
pub fn max_pool2d(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return max_pool2d_by_shifts(x, k, stride, pad);
    }
    x.contiguous()?.apply_op1(MaxPool { k, stride, pad })
}

/// Max-pooling as the element-wise maximum of the `k x k` strided shifts of the zero-padded
/// input, from candle's differentiable ops (pad, narrow, reshape, maximum), so it trains on any
/// device. Zero padding equals -inf padding for non-negative inputs (the ResNet stem pools after
/// a ReLU). Output side `(H + 2 pad - k) / stride + 1`.
pub fn max_pool2d_by_shifts(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if k == 0 || stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
        bail!("max-pool {k}x{k}/{stride} pad {pad} of a {h}x{w} input")
    }
    let (ho, wo) = (
        (h + 2 * pad - k) / stride + 1,
        (w + 2 * pad - k) / stride + 1,
    );
    let xp = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    // Rows dy, dy + stride, ... (ho of them) of a padded axis: narrow to ho * stride (padding
    // the end when the last window overhangs), fold into (ho, stride), keep index 0.
    let strided = |t: &Tensor, axis: usize, start: usize, len: usize| -> Result<Tensor> {
        let size = t.dim(axis)?;
        let want = len * stride;
        let avail = size - start;
        let t = if avail >= want {
            t.narrow(axis, start, want)?
        } else {
            t.narrow(axis, start, avail)?
                .pad_with_zeros(axis, 0, want - avail)?
        };
        let mut dims = t.dims().to_vec();
        dims[axis] = len;
        dims.insert(axis + 1, stride);
        t.reshape(dims)?.narrow(axis + 1, 0, 1)?.squeeze(axis + 1)
    };
    let mut out: Option<Tensor> = None;
    for dy in 0..k {
        let rows = strided(&xp, 2, dy, ho)?;
        for dx in 0..k {
            let s = strided(&rows, 3, dx, wo)?;
            out = Some(match out {
                Some(m) => m.maximum(&s)?,
                None => s,
            });
        }
    }
    let out = out.ok_or_else(|| candle_core::Error::Msg("empty max-pool window".into()))?;
    debug_assert_eq!(out.dims(), &[n, c, ho, wo]);
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// Soft-argmax over a D x H x W volume

/// Fused volumetric soft-argmax: `[B, J, D*H*W]` logits (plus an optional per-depth-plane bias
/// `[J*D]`, the final 1x1 convolution's bias) -> `[B, J, 3]` coordinates
/// `(E[x]/W - 0.5, E[y]/H - 0.5, E[z]/D - 0.5)` under `p = softmax(logits)` over all cells.
#[derive(Debug, Clone, Copy)]
struct SoftArgmax {
    d: usize,
    h: usize,
    w: usize,
}

/// Backward of [`SoftArgmax`] without bias: `(logits, coords, grad_coords) -> grad_logits`,
/// `g_i = p_i * sum_k (c_k(i) - c_k) * grad_k` with `c(i)` the normalised coordinate of cell `i`.
#[derive(Debug, Clone, Copy)]
struct SoftArgmaxGrad(SoftArgmax);

/// `e^x` for `x <= 0`, branch-free so that it vectorises: Cody-Waite reduction
/// `x = n ln 2 + r`, `|r| <= ln 2 / 2`, degree-6 Taylor polynomial of `e^r` (relative error
/// < 2e-7), times `2^n` built in the exponent bits. Inputs below -87 give ~1e-38 instead of 0,
/// which is below f32 resolution of any softmax sum (>= 1).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.max(-87.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    p * f32::from_bits(((ni + 127) << 23) as u32)
}

const LANES: usize = 16;

/// Per-plane sums of one f32 row: for plane `z`, `(sum e, sum e * x, sum e * y)` with
/// `e = exp(l - shift_z)`. Written with 16-lane accumulators so it vectorises.
#[inline(always)]
fn plane_sums_f32(plane: &[f32], shift: f32, xs: &[f32], ys: &[f32]) -> (f32, f32, f32) {
    let mut acc_s = [0f32; LANES];
    let mut acc_x = [0f32; LANES];
    let mut acc_y = [0f32; LANES];
    let (l_chunks, l_rest) = plane.as_chunks::<LANES>();
    let (x_chunks, _) = xs.as_chunks::<LANES>();
    let (y_chunks, _) = ys.as_chunks::<LANES>();
    for ((l, x), y) in l_chunks.iter().zip(x_chunks).zip(y_chunks) {
        let mut e = [0f32; LANES];
        for k in 0..LANES {
            e[k] = exp_nonpositive(l[k] - shift);
        }
        for k in 0..LANES {
            acc_s[k] += e[k];
            acc_x[k] += e[k] * x[k];
            acc_y[k] += e[k] * y[k];
        }
    }
    let (mut s, mut sx, mut sy) = (0f32, 0f32, 0f32);
    for k in 0..LANES {
        s += acc_s[k];
        sx += acc_x[k];
        sy += acc_y[k];
    }
    let base = l_chunks.len() * LANES;
    for (i, &v) in l_rest.iter().enumerate() {
        let e = exp_nonpositive(v - shift);
        s += e;
        sx += e * xs[base + i];
        sy += e * ys[base + i];
    }
    (s, sx, sy)
}

#[inline(always)]
fn plane_max_f32(plane: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let (chunks, rest) = plane.as_chunks::<LANES>();
    for c in chunks {
        for k in 0..LANES {
            acc[k] = acc[k].max(c[k]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for k in 0..LANES {
        m = m.max(acc[k]);
    }
    for &v in rest {
        m = m.max(v);
    }
    m
}

/// The f32 row kernel, run under `pulp` dispatch so the loops are compiled for AVX2/AVX-512.
struct RowStatsF32<'a> {
    op: SoftArgmax,
    row: &'a [f32],
    bias: Option<&'a [f32]>,
    xs: &'a [f32],
    ys: &'a [f32],
}

impl pulp::WithSimd for RowStatsF32<'_> {
    type Output = (f64, [f64; 3]);

    /// One pass over memory: per plane, its maximum and its exponential sums (the plane is
    /// then in cache), with the running sums rescaled when the maximum grows (online softmax,
    /// Milakov & Gimelshein 2018).
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        let hw = self.op.h * self.op.w;
        let b = |z: usize| self.bias.map_or(0.0, |b| b[z]);
        let mut m = f32::NEG_INFINITY;
        let (mut s, mut sx, mut sy, mut sz) = (0f64, 0f64, 0f64, 0f64);
        for (z, plane) in self.row.chunks_exact(hw).enumerate() {
            let mz = plane_max_f32(plane) + b(z);
            if mz > m {
                if s > 0.0 {
                    let r = f64::from(m - mz).exp();
                    s *= r;
                    sx *= r;
                    sy *= r;
                    sz *= r;
                }
                m = mz;
            }
            let (ps, px, py) = plane_sums_f32(plane, m - b(z), self.xs, self.ys);
            s += f64::from(ps);
            sx += f64::from(px);
            sy += f64::from(py);
            sz += f64::from(ps) * z as f64;
        }
        (s, [sx, sy, sz])
    }
}

impl SoftArgmax {
    fn len(&self) -> usize {
        self.d * self.h * self.w
    }

    /// `(max, sum of exp, weighted sums [x, y, z])` of one row, any float type, f64 inside.
    fn row_stats<T: Float>(&self, row: &[T], bias: Option<&[T]>) -> (f64, f64, [f64; 3]) {
        let hw = self.h * self.w;
        let b = |z: usize| bias.map_or(0.0, |b| Into::<f64>::into(b[z]));
        let mut m = f64::NEG_INFINITY;
        for (z, plane) in row.chunks_exact(hw).enumerate() {
            for &v in plane {
                m = m.max(Into::<f64>::into(v) + b(z));
            }
        }
        let (mut s, mut sx, mut sy, mut sz) = (0f64, 0f64, 0f64, 0f64);
        for (z, plane) in row.chunks_exact(hw).enumerate() {
            let shift = m - b(z);
            let mut plane_sum = 0f64;
            for (yi, line) in plane.chunks_exact(self.w).enumerate() {
                let (mut ls, mut lx) = (0f64, 0f64);
                for (xi, &v) in line.iter().enumerate() {
                    let e = (Into::<f64>::into(v) - shift).exp();
                    ls += e;
                    lx += e * xi as f64;
                }
                plane_sum += ls;
                sx += lx;
                sy += ls * yi as f64;
            }
            s += plane_sum;
            sz += plane_sum * z as f64;
        }
        (m, s, [sx, sy, sz])
    }

    fn coords(&self, s: f64, sums: [f64; 3]) -> [f64; 3] {
        [
            sums[0] / s / self.w as f64 - 0.5,
            sums[1] / s / self.h as f64 - 0.5,
            sums[2] / s / self.d as f64 - 0.5,
        ]
    }

    fn forward(
        &self,
        st: &CpuStorage,
        l: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, j, n) = l.shape().dims3()?;
        if n != self.len() || n == 0 {
            bail!("soft_argmax: {:?} is not [B, J, {}]", l.shape(), self.len())
        }
        if let Some((_, bl)) = bias
            && bl.shape().elem_count() != j * self.d
        {
            bail!("soft_argmax: bias {:?} is not [{}]", bl.shape(), j * self.d)
        }
        let shape = Shape::from((b, j, 3));
        if let CpuStorage::F32(_) = st {
            let src = contiguous::<f32>(st, l, "soft_argmax")?;
            let bias = bias
                .map(|(s, l)| contiguous::<f32>(s, l, "soft_argmax bias"))
                .transpose()?;
            let hw = self.h * self.w;
            let xs: Vec<f32> = (0..hw).map(|i| (i % self.w) as f32).collect();
            let ys: Vec<f32> = (0..hw).map(|i| (i / self.w) as f32).collect();
            let arch = pulp::Arch::new();
            let mut dst = vec![0f32; b * j * 3];
            dst.par_chunks_mut(3)
                .zip(src.par_chunks(n))
                .enumerate()
                .for_each(|(r, (d, row))| {
                    let jj = r % j;
                    let (s, sums) = arch.dispatch(RowStatsF32 {
                        op: *self,
                        row,
                        bias: bias.map(|b| &b[jj * self.d..(jj + 1) * self.d]),
                        xs: &xs,
                        ys: &ys,
                    });
                    for (o, c) in d.iter_mut().zip(self.coords(s, sums)) {
                        *o = c as f32;
                    }
                });
            return Ok((CpuStorage::F32(dst), shape));
        }
        dispatch_float!(st, "soft_argmax", |T| {
            let src = contiguous::<T>(st, l, "soft_argmax")?;
            let bias = bias
                .map(|(s, l)| contiguous::<T>(s, l, "soft_argmax bias"))
                .transpose()?;
            let mut dst = vec![T::nil(); b * j * 3];
            dst.par_chunks_mut(3)
                .zip(src.par_chunks(n))
                .enumerate()
                .for_each(|(r, (d, row))| {
                    let jj = r % j;
                    let bias = bias.map(|b| &b[jj * self.d..(jj + 1) * self.d]);
                    let (_, s, sums) = self.row_stats(row, bias);
                    for (o, c) in d.iter_mut().zip(self.coords(s, sums)) {
                        *o = T::from_f64(c);
                    }
                });
            Ok((T::to_cpu_storage_owned(dst), shape))
        })
    }

    fn grad_logits(&self, logits: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        logits.contiguous()?.apply_op3_no_bwd(
            &res.contiguous()?,
            &grad.contiguous()?,
            &SoftArgmaxGrad(*self),
        )
    }
}

impl CustomOp1 for SoftArgmax {
    fn name(&self) -> &'static str {
        "ikol-soft-argmax3d"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(st, l, None)
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.grad_logits(arg, res, grad)?))
    }
}

impl CustomOp2 for SoftArgmax {
    fn name(&self) -> &'static str {
        "ikol-soft-argmax3d-biased"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(s1, l1, Some((s2, l2)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, j, n) = logits.dims3()?;
        let hw = self.h * self.w;
        let biased = logits
            .reshape((b, j * self.d, hw))?
            .broadcast_add(&bias.reshape((1, j * self.d, 1))?)?
            .reshape((b, j, n))?;
        let g = self.grad_logits(&biased, res, grad)?;
        let g_bias = g.reshape((b, j * self.d, hw))?.sum(2)?.sum(0)?;
        Ok((Some(g), Some(g_bias.reshape(bias.shape())?)))
    }
}

impl CustomOp3 for SoftArgmaxGrad {
    fn name(&self) -> &'static str {
        "ikol-soft-argmax3d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.0;
        let (b, j, n) = l1.shape().dims3()?;
        if l2.shape().dims() != [b, j, 3] || l3.shape().dims() != [b, j, 3] {
            bail!("soft_argmax backward: bad shapes")
        }
        dispatch_float!(s1, "soft_argmax backward", |T| {
            let logits = contiguous::<T>(s1, l1, "soft_argmax backward")?;
            let coords = contiguous::<T>(s2, l2, "soft_argmax backward")?;
            let grad = contiguous::<T>(s3, l3, "soft_argmax backward")?;
            let mut dst = vec![T::nil(); b * j * n];
            dst.par_chunks_mut(n)
                .zip(logits.par_chunks(n))
                .zip(coords.par_chunks(3).zip(grad.par_chunks(3)))
                .for_each(|((d, row), (c, g))| {
                    let (m, s, _) = op.row_stats(row, None);
                    let g: [f64; 3] = [g[0].to_f64(), g[1].to_f64(), g[2].to_f64()];
                    let c: [f64; 3] = [c[0].to_f64(), c[1].to_f64(), c[2].to_f64()];
                    // sum_k (c_k(i) - c_k) g_k = gx*x/W + gy*y/H + gz*z/D - const
                    let k0 = g[0] * (0.5 + c[0]) + g[1] * (0.5 + c[1]) + g[2] * (0.5 + c[2]);
                    let (ax, ay, az) = (g[0] / op.w as f64, g[1] / op.h as f64, g[2] / op.d as f64);
                    let inv_s = 1.0 / s;
                    for (zi, (dp, rp)) in d
                        .chunks_exact_mut(op.h * op.w)
                        .zip(row.chunks_exact(op.h * op.w))
                        .enumerate()
                    {
                        for (yi, (dl, rl)) in dp
                            .chunks_exact_mut(op.w)
                            .zip(rp.chunks_exact(op.w))
                            .enumerate()
                        {
                            let base = ay * yi as f64 + az * zi as f64 - k0;
                            for (xi, (o, &v)) in dl.iter_mut().zip(rl).enumerate() {
                                let p = (Into::<f64>::into(v) - m).exp();
                                *o = T::from_f64(p * inv_s * (base + ax * xi as f64));
                            }
                        }
                    }
                });
            Ok((T::to_cpu_storage_owned(dst), l1.shape().clone()))
        })
    }
}

/// Volumetric soft-argmax of `[B, J, D*H*W]` logits (cells in `(d, h, w)` row-major order) to
/// `[B, J, 3]` = `(E[x]/W - 0.5, E[y]/H - 0.5, E[z]/D - 0.5)`, the softmax taken over all cells
/// of a joint (HybrIK reference 4.2). Differentiable on the CPU (fused kernel; f32 runs a
/// vectorised exponential with relative error < 2e-7); other devices use
/// [`soft_argmax_reference`].
pub fn soft_argmax(logits: &Tensor, d: usize, h: usize, w: usize) -> Result<Tensor> {
    if !logits.device().is_cpu() {
        return soft_argmax_reference(logits, d, h, w);
    }
    logits.contiguous()?.apply_op1(SoftArgmax { d, h, w })
}

/// [`soft_argmax`] of `logits + bias`, where `bias [J*D]` is added to every cell of depth plane
/// `(j, d)` (the final 1x1 convolution's bias, fused to save a pass over the volume).
pub fn soft_argmax_biased(
    logits: &Tensor,
    bias: &Tensor,
    d: usize,
    h: usize,
    w: usize,
) -> Result<Tensor> {
    if !logits.device().is_cpu() {
        let (b, j, n) = logits.dims3()?;
        let biased = logits
            .reshape((b, j * d, h * w))?
            .broadcast_add(&bias.reshape((1, j * d, 1))?)?
            .reshape((b, j, n))?;
        return soft_argmax_reference(&biased, d, h, w);
    }
    logits
        .contiguous()?
        .apply_op2(&bias.contiguous()?, SoftArgmax { d, h, w })
}

/// The same as [`soft_argmax`] from candle's generic ops (softmax, marginal sums, dot with the
/// index ramps), exactly as HybrIK writes it. Device-independent, differentiable, slower.
pub fn soft_argmax_reference(logits: &Tensor, d: usize, h: usize, w: usize) -> Result<Tensor> {
    let (b, j, n) = logits.dims3()?;
    if n != d * h * w {
        bail!(
            "soft_argmax: {:?} is not [B, J, {}]",
            logits.shape(),
            d * h * w
        )
    }
    let p = candle_nn::ops::softmax(logits, 2)?.reshape((b, j, d, h, w))?;
    let dev = logits.device();
    let dt = logits.dtype();
    let ramp = |len: usize| -> Result<Tensor> {
        Tensor::arange(0u32, len as u32, dev)?
            .to_dtype(dt)?
            .affine(1.0 / len as f64, -0.5)
    };
    // Marginals: x over (D, H), y over (D, W), z over (H, W).
    let hm_x = p.sum(3)?.sum(2)?; // [b, j, w]
    let hm_y = p.sum(4)?.sum(2)?; // [b, j, h]
    let hm_z = p.sum(4)?.sum(3)?; // [b, j, d]
    let cx = hm_x.broadcast_mul(&ramp(w)?)?.sum_keepdim(2)?;
    let cy = hm_y.broadcast_mul(&ramp(h)?)?.sum_keepdim(2)?;
    let cz = hm_z.broadcast_mul(&ramp(d)?)?.sum_keepdim(2)?;
    Tensor::cat(&[cx, cy, cz], 2)
}

// ------------------------------------------------------------------------------------------------
// Per-channel affine + residual + ReLU (evaluation-mode BatchNorm, fused)

/// `y = act(x * scale[c] + shift[c] (+ residual))` over `[N, C, H, W]`, `ss = [scale; shift]`
/// as `[2, C]`.
#[derive(Debug, Clone, Copy)]
struct ChannelAffine {
    relu: bool,
}

fn channel_affine_kernel<T: Float>(
    dst: &mut [T],
    ss: &[T],
    res: Option<&[T]>,
    c: usize,
    hw: usize,
    relu: bool,
) {
    let zero = T::nil();
    let act = |v: T| if relu && v <= zero { zero } else { v };
    for_each_plane(dst, hw, |p, plane| {
        let ch = p % c;
        let (sc, sh) = (ss[ch], ss[c + ch]);
        match res {
            Some(r) => {
                for (v, &r) in plane.iter_mut().zip(&r[p * hw..(p + 1) * hw]) {
                    *v = act(*v * sc + sh + r);
                }
            }
            None => {
                for v in plane.iter_mut() {
                    *v = act(*v * sc + sh);
                }
            }
        }
    });
}

/// f32 plane kernel of [`ChannelAffine`], written as four branch-free loops so they vectorise
/// (run under `pulp` dispatch: AVX2 / AVX-512 when available). Note: ReLU maps NaN to 0.
#[inline(always)]
fn affine_plane_f32(v: &mut [f32], sc: f32, sh: f32, res: Option<&[f32]>, relu: bool) {
    match (res, relu) {
        (Some(r), true) => {
            for (v, &r) in v.iter_mut().zip(r) {
                *v = (*v * sc + sh + r).max(0.0);
            }
        }
        (Some(r), false) => {
            for (v, &r) in v.iter_mut().zip(r) {
                *v = *v * sc + sh + r;
            }
        }
        (None, true) => {
            for v in v.iter_mut() {
                *v = (*v * sc + sh).max(0.0);
            }
        }
        (None, false) => {
            for v in v.iter_mut() {
                *v = *v * sc + sh;
            }
        }
    }
}

fn channel_affine_f32(
    dst: &mut [f32],
    ss: &[f32],
    res: Option<&[f32]>,
    c: usize,
    hw: usize,
    relu: bool,
) {
    let arch = pulp::Arch::new();
    for_each_plane(dst, hw, |p, plane| {
        let ch = p % c;
        let r = res.map(|r| &r[p * hw..(p + 1) * hw]);
        arch.dispatch(|| affine_plane_f32(plane, ss[ch], ss[c + ch], r, relu));
    });
}

impl ChannelAffine {
    fn run(
        &self,
        dst: &mut CpuStorage,
        dl: &Layout,
        ss: (&CpuStorage, &Layout),
        res: Option<(&CpuStorage, &Layout)>,
    ) -> Result<()> {
        let (_, c, h, w) = dl.shape().dims4()?;
        if dl.contiguous_offsets() != Some((0, dl.shape().elem_count())) {
            bail!("channel_affine: output must be contiguous from offset 0")
        }
        if ss.1.shape().dims() != [2, c] {
            bail!(
                "channel_affine: scale/shift {:?} is not [2, {c}]",
                ss.1.shape()
            )
        }
        if let Some((_, rl)) = res
            && rl.shape() != dl.shape()
        {
            bail!(
                "channel_affine: residual {:?} vs {:?}",
                rl.shape(),
                dl.shape()
            )
        }
        match dst {
            CpuStorage::F32(d) => {
                let ssv = contiguous::<f32>(ss.0, ss.1, "channel_affine")?;
                let r = res
                    .map(|(s, l)| contiguous::<f32>(s, l, "channel_affine"))
                    .transpose()?;
                channel_affine_f32(d, ssv, r, c, h * w, self.relu);
            }
            CpuStorage::F64(d) => {
                let ssv = contiguous::<f64>(ss.0, ss.1, "channel_affine")?;
                let r = res
                    .map(|(s, l)| contiguous::<f64>(s, l, "channel_affine"))
                    .transpose()?;
                channel_affine_kernel(d, ssv, r, c, h * w, self.relu);
            }
            _ => bail!("channel_affine: only f32 and f64 are supported"),
        }
        Ok(())
    }

    fn copy_input(s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
        dispatch_float!(s, "channel_affine", |T| {
            let v = contiguous::<T>(s, l, "channel_affine")?.to_vec();
            Ok(T::to_cpu_storage_owned(v))
        })
    }

    /// Gradients of `act(x * s + t + r)`: `(dx, d[s; t], dr)`.
    fn backward(
        &self,
        x: &Tensor,
        ss: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let c = x.dim(1)?;
        let g = if self.relu {
            (g * y.gt(0.0)?.to_dtype(g.dtype())?)?
        } else {
            g.clone()
        };
        let scale = ss.get(0)?.reshape((1, c, 1, 1))?;
        let dx = g.broadcast_mul(&scale)?;
        let d_scale = (&g * x)?.sum((0, 2, 3))?;
        let d_shift = g.sum((0, 2, 3))?;
        Ok((dx, Tensor::stack(&[d_scale, d_shift], 0)?, g))
    }
}

/// Allocating form with a residual, differentiable.
#[derive(Debug, Clone, Copy)]
struct ChannelAffineRes(ChannelAffine);

impl CustomOp2 for ChannelAffine {
    fn name(&self) -> &'static str {
        "ikol-channel-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let mut out = Self::copy_input(s1, l1)?;
        let ol = Layout::contiguous(l1.shape());
        self.run(&mut out, &ol, (s2, l2), None)?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        ss: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dss, _) = self.backward(x, ss, y, g)?;
        Ok((Some(dx), Some(dss)))
    }
}

impl CustomOp3 for ChannelAffineRes {
    fn name(&self) -> &'static str {
        "ikol-channel-affine-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let mut out = ChannelAffine::copy_input(s1, l1)?;
        let ol = Layout::contiguous(l1.shape());
        self.0.run(&mut out, &ol, (s2, l2), Some((s3, l3)))?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        ss: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dss, dr) = self.0.backward(x, ss, y, g)?;
        Ok((Some(dx), Some(dss), Some(dr)))
    }
}

impl candle_core::InplaceOp2 for ChannelAffine {
    fn name(&self) -> &'static str {
        "ikol-channel-affine-inplace"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        self.run(s1, l1, (s2, l2), None)
    }
}

impl candle_core::InplaceOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "ikol-channel-affine-residual-inplace"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        self.run(s1, l1, (s2, l2), Some((s3, l3)))
    }
}

/// `act(x * scale[c] + shift[c] (+ residual))` for `x [N, C, H, W]` with `ss = [scale; shift]`
/// (`[2, C]`); `relu` selects the activation. Differentiable.
///
/// With `reuse_input`, `x`'s storage is overwritten and returned instead of allocating, which
/// is done only when `x` is a contiguous CPU tensor that no gradient is tracked through (the
/// caller promises that nothing else reads `x` afterwards).
pub fn channel_affine(
    x: Tensor,
    ss: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
    reuse_input: bool,
) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let c = x.dim(1)?;
        let y = x
            .broadcast_mul(&ss.get(0)?.reshape((1, c, 1, 1))?)?
            .broadcast_add(&ss.get(1)?.reshape((1, c, 1, 1))?)?;
        let y = match residual {
            Some(r) => (y + r)?,
            None => y,
        };
        return if relu { y.relu() } else { Ok(y) };
    }
    let op = ChannelAffine { relu };
    let tracked = x.track_op() || ss.track_op() || residual.is_some_and(|r| r.track_op());
    let whole = x.layout().contiguous_offsets() == Some((0, x.elem_count()));
    if reuse_input && !tracked && whole {
        match residual {
            Some(r) => x.inplace_op3(ss, &r.contiguous()?, &op)?,
            None => x.inplace_op2(ss, &op)?,
        }
        return Ok(x);
    }
    match residual {
        Some(r) => x.apply_op3(ss, &r.contiguous()?, ChannelAffineRes(op)),
        None => x.apply_op2(ss, op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn uniform(shape: &[usize], seed: u64) -> Tensor {
        // Deterministic pseudo-random values (LCG) so failures reproduce.
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f64> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn conv_matches_candle() {
        for &(c, co, h, w, k, s, p) in &[
            (3, 5, 9, 7, 3, 1, 1),
            (3, 4, 11, 11, 7, 2, 3),
            (4, 6, 8, 8, 1, 2, 0),
            (4, 6, 8, 5, 1, 1, 0),
            (2, 3, 6, 6, 3, 2, 1),
        ] {
            let x = uniform(&[2, c, h, w], 1);
            let wt = uniform(&[co, c, k, k], 2);
            let ours = conv2d(&x, &wt, s, p).unwrap();
            let theirs = x.conv2d(&wt, p, s, 1, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(
                max_abs_diff(&ours, &theirs) < 1e-12,
                "{c} {co} {h} {w} {k} {s} {p}"
            );
        }
    }

    #[test]
    fn conv_transpose_matches_candle() {
        for &(c, co, h, w, k, s, p) in &[(3, 5, 4, 3, 4, 2, 1), (2, 2, 5, 5, 3, 1, 1)] {
            let x = uniform(&[2, c, h, w], 3);
            let wt = uniform(&[c, co, k, k], 4);
            let ours = conv_transpose2d(&x, &wt, s, p).unwrap();
            let theirs = x.conv_transpose2d(&wt, p, 0, s, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_abs_diff(&ours, &theirs) < 1e-12);
        }
    }

    /// Central finite differences of `sum(f(x) * r)` against autograd, in f64.
    fn check_grad(f: impl Fn(&Tensor) -> Tensor, x0: &Tensor, seed: u64) {
        let x = Var::from_tensor(x0).unwrap();
        let y = f(x.as_tensor());
        let r = uniform(y.dims(), seed);
        let loss = (&y * &r).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        let g = g.to_vec1::<f64>().unwrap();
        let base = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let h = 1e-6;
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += h;
            let mut minus = base.clone();
            minus[i] -= h;
            let eval = |v: Vec<f64>| {
                let t = Tensor::from_vec(v, x0.dims(), &Device::Cpu).unwrap();
                (f(&t) * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let fd = (eval(plus) - eval(minus)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() <= 1e-6 + 1e-5 * fd.abs(),
                "grad[{i}]: autograd {} vs finite difference {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn conv_gradients_match_finite_differences() {
        let w = uniform(&[3, 2, 3, 3], 7);
        check_grad(
            |x| conv2d(x, &w, 2, 1).unwrap(),
            &uniform(&[1, 2, 5, 4], 8),
            9,
        );
        let x = uniform(&[1, 2, 5, 4], 10);
        check_grad(|w| conv2d(&x, w, 2, 1).unwrap(), &w, 11);
        let wt = uniform(&[2, 3, 4, 4], 12);
        check_grad(
            |x| conv_transpose2d(x, &wt, 2, 1).unwrap(),
            &uniform(&[1, 2, 3, 3], 13),
            14,
        );
        let x = uniform(&[1, 2, 3, 3], 15);
        check_grad(|w| conv_transpose2d(&x, w, 2, 1).unwrap(), &wt, 16);
    }

    #[test]
    fn max_pool_forward_and_hand_computed_gradient() {
        // 1x1x4x4 input, 3x3/2 pad 1 -> 2x2 output; output (oy, ox) sees rows 2oy-1..2oy+1 and
        // columns 2ox-1..2ox+1 (clipped to the image).
        #[rustfmt::skip]
        let x = Tensor::new(&[[[
            [1.0f64, 2.0, 0.0, 5.0],
            [3.0, 0.5, 4.0, 1.0],
            [0.0, 1.0, 7.0, 2.0],
            [8.0, 0.0, 6.0, 7.0],
        ]]], &Device::Cpu).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let y = max_pool2d(xv.as_tensor(), 3, 2, 1).unwrap();
        // (0,0): rows 0-1, cols 0-1 -> 3 at (1,0); (0,1): rows 0-1, cols 1-3 -> 5 at (0,3);
        // (1,0): rows 1-3, cols 0-1 -> 8 at (3,0); (1,1): rows 1-3, cols 1-3 -> 7, first at (2,2)
        // (the 7 at (3,3) ties and loses, as in PyTorch).
        let yv = y.squeeze(0).unwrap().to_vec3::<f64>().unwrap();
        assert_eq!(yv[0], vec![vec![3.0, 5.0], vec![8.0, 7.0]]);
        let w = Tensor::new(&[[[[1.0f64, 10.0], [100.0, 1000.0]]]], &Device::Cpu).unwrap();
        let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g
            .get(xv.as_tensor())
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec3::<f64>()
            .unwrap();
        #[rustfmt::skip]
        let want = vec![
            vec![0.0, 0.0, 0.0, 10.0],
            vec![1.0, 0.0, 0.0, 0.0],
            vec![0.0, 0.0, 1000.0, 0.0],
            vec![100.0, 0.0, 0.0, 0.0],
        ];
        assert_eq!(g[0], want);

        // All equal: each window's gradient goes to its first cell.
        let x = Tensor::new(&[[[[2.0f64, 2.0], [2.0, 2.0]]]], &Device::Cpu).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let y = max_pool2d(xv.as_tensor(), 3, 2, 1).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g
            .get(xv.as_tensor())
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec3::<f64>()
            .unwrap();
        assert_eq!(g[0], vec![vec![1.0, 0.0], vec![0.0, 0.0]]);
    }

    #[test]
    fn separable_max_pool_matches_window_scan() {
        for &(h, w, k, st, p) in &[
            (7, 6, 3, 2, 1),
            (8, 8, 3, 2, 1),
            (1, 1, 3, 2, 1),
            (2, 3, 3, 2, 1),
            (5, 9, 2, 2, 0),
            (6, 5, 3, 1, 1),
        ] {
            let x = uniform(&[2, 3, h, w], (h * 31 + w) as u64);
            let y = max_pool2d(&x, k, st, p).unwrap();
            let pool = MaxPool {
                k,
                stride: st,
                pad: p,
            };
            let g = pool.window(h, w).unwrap();
            let xv = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let mut want = Vec::new();
            for plane in xv.chunks(h * w) {
                let mut out = vec![0.0; g.out_h() * g.out_w()];
                MaxPool::scan(&g, plane, |o, _, v| out[o] = v);
                want.extend(out);
            }
            assert_eq!(
                y.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                want,
                "{h}x{w} k{k} s{st} p{p}"
            );
            // The f32 fast path (3x3/2/1) gives the same values.
            let y32 = max_pool2d(&x.to_dtype(DType::F32).unwrap(), k, st, p).unwrap();
            let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            assert_eq!(y32.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want32);
        }
    }

    #[test]
    fn max_pool_by_shifts_matches_the_cpu_kernel_with_gradients() {
        // Non-negative inputs (where zero padding is -inf padding), distinct values (no ties).
        for (h, w, k, st, p) in [
            (9, 7, 3, 2, 1),
            (8, 8, 3, 2, 1),
            (6, 5, 2, 2, 0),
            (7, 7, 3, 1, 1),
        ] {
            let n = 2 * 3 * h * w;
            let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32 / n as f32).collect();
            let x = Var::from_tensor(&Tensor::from_vec(v, (2, 3, h, w), &Device::Cpu).unwrap())
                .unwrap();
            let a = max_pool2d(x.as_tensor(), k, st, p).unwrap();
            let b = max_pool2d_by_shifts(x.as_tensor(), k, st, p).unwrap();
            assert_eq!(a.dims(), b.dims());
            assert_eq!(max_abs_diff(&a, &b), 0.0);
            // The same gradient: a weighted sum of the outputs.
            let wts = Tensor::rand(0f32, 1.0, a.dims(), &Device::Cpu).unwrap();
            let ga = (&a * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&b * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let (ga, gb) = (
                ga.get(x.as_tensor()).unwrap(),
                gb.get(x.as_tensor()).unwrap(),
            );
            assert!(max_abs_diff(ga, gb) < 1e-6, "{h}x{w} {k}/{st}/{p}");
        }
    }

    #[test]
    fn max_pool_gradient_matches_finite_differences() {
        // Distinct values so the maximum is unique and the function is differentiable.
        let x = uniform(&[2, 2, 7, 6], 21);
        check_grad(|x| max_pool2d(x, 3, 2, 1).unwrap(), &x, 22);
        // The output size follows PyTorch's floor rule: 7 -> 4, 6 -> 3.
        assert_eq!(max_pool2d(&x, 3, 2, 1).unwrap().dims(), &[2, 2, 4, 3]);
    }

    #[test]
    fn soft_argmax_fused_matches_reference_and_gradient() {
        let (d, h, w) = (3, 4, 5);
        let x = (uniform(&[2, 3, d * h * w], 31) * 3.0).unwrap();
        let a = soft_argmax(&x, d, h, w).unwrap();
        let b = soft_argmax_reference(&x, d, h, w).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-12);
        check_grad(|x| soft_argmax(x, d, h, w).unwrap(), &x, 32);
        let xf = x.to_dtype(DType::F32).unwrap();
        let af = soft_argmax(&xf, d, h, w)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert!(max_abs_diff(&a, &af) < 1e-6);
    }

    #[test]
    fn biased_soft_argmax_and_fast_exp() {
        let (d, h, w) = (3, 4, 20); // h*w = 80: five 16-lane chunks, no remainder; w not 16
        let x = (uniform(&[2, 2, d * h * w], 41) * 4.0).unwrap();
        let b = (uniform(&[2 * d], 42) * 2.0).unwrap();
        let biased = x
            .reshape((2, 2 * d, h * w))
            .unwrap()
            .broadcast_add(&b.reshape((1, 2 * d, 1)).unwrap())
            .unwrap()
            .reshape((2, 2, d * h * w))
            .unwrap();
        let want = soft_argmax_reference(&biased, d, h, w).unwrap();
        let got = soft_argmax_biased(&x, &b, d, h, w).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-12);
        // The f32 fast path (vectorised exp) agrees to f32 precision.
        let got32 = soft_argmax_biased(
            &x.to_dtype(DType::F32).unwrap(),
            &b.to_dtype(DType::F32).unwrap(),
            d,
            h,
            w,
        )
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
        assert!(max_abs_diff(&got32, &want) < 2e-6);
        // An odd plane size exercises the scalar remainder.
        let x = (uniform(&[1, 1, 5 * 3 * 7], 43) * 5.0).unwrap();
        let a = soft_argmax(&x.to_dtype(DType::F32).unwrap(), 5, 3, 7)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert!(max_abs_diff(&a, &soft_argmax_reference(&x, 5, 3, 7).unwrap()) < 2e-6);
        check_grad(
            |b| soft_argmax_biased(&x.reshape((1, 1, 105)).unwrap(), b, 5, 3, 7).unwrap(),
            &uniform(&[5], 44),
            45,
        );
        check_grad(
            |x| soft_argmax_biased(x, &uniform(&[5], 46), 5, 3, 7).unwrap(),
            &x,
            47,
        );
        // exp itself over its range.
        for i in 0..2000 {
            let v = -(i as f32) * 0.05;
            let (ours, std) = (exp_nonpositive(v), v.exp());
            assert!(
                (ours - std).abs() <= 3e-7 * std + 1e-37,
                "exp({v}) = {ours} vs {std}"
            );
        }
    }

    #[test]
    fn channel_affine_forward_in_place_and_gradients() {
        let x = uniform(&[2, 3, 4, 5], 51);
        let ss = uniform(&[2, 3], 52);
        let r = uniform(&[2, 3, 4, 5], 53);
        let want = x
            .broadcast_mul(&ss.get(0).unwrap().reshape((1, 3, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&ss.get(1).unwrap().reshape((1, 3, 1, 1)).unwrap())
            .unwrap();
        let want_res = (&want + &r).unwrap().relu().unwrap();
        let got = channel_affine(x.clone(), &ss, None, false, false).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-15);
        let got = channel_affine(x.clone(), &ss, Some(&r), true, false).unwrap();
        assert!(max_abs_diff(&got, &want_res) < 1e-15);
        // In place: the input's storage is reused.
        let fresh = (&x * 1.0).unwrap();
        let got = channel_affine(fresh, &ss, Some(&r), true, true).unwrap();
        assert!(max_abs_diff(&got, &want_res) < 1e-15);
        check_grad(
            |x| channel_affine(x.clone(), &ss, Some(&r), true, true).unwrap(),
            &x,
            54,
        );
        // A captured input must be copied before an in-place call (the call would overwrite it).
        let fresh = || x.copy().unwrap();
        check_grad(
            |s| channel_affine(fresh(), s, Some(&r), true, true).unwrap(),
            &ss,
            55,
        );
        check_grad(
            |r| channel_affine(fresh(), &ss, Some(r), true, true).unwrap(),
            &r,
            56,
        );
        check_grad(
            |s| channel_affine(fresh(), s, None, false, true).unwrap(),
            &ss,
            57,
        );
    }
}
