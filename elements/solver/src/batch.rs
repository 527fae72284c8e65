//! The batched, differentiable twin of [`crate::ikol()`] on candle tensors, for training
//! (IKOL's GN-Diff, reference 3.5).
//!
//! Same equations as the per-person solver (module docs of [`crate::ikol`](mod@crate::ikol)),
//! written in tensor ops over a batch dimension B, in f32 or f64, for the IKOL-24 layout: 24
//! target joints, 23 twist pairs, 24 rest joints, optional 5 leaf quaternions. The Jacobian uses
//! the same forward tangent recursion, vectorised over the 18 swing directions. Two
//! differentiation modes:
//! - [`JacobianMode::Detached`] (upstream: `autograd.functional.jacobian(create_graph=False)`):
//!   J is a constant; gradients flow through the residuals of the unrolled steps
//!   alpha_{k+1} = alpha_k - (J^T J + sigma I)^-1 J^T r(alpha_k);
//! - [`JacobianMode::Differentiated`] (the paper's Eq. 13-14): J keeps its graph, so the
//!   gradient includes dH/dP; this is the exact derivative of the unrolled solver.
//!
//! Two small custom ops carry what candle lacks, each with an analytic backward pass: the Kabsch
//! fit of the root and of spine3 (backward by [`crate::geometry::kabsch_tangent_map`]), and the
//! batched SPD solve by Cholesky in f64 (backward: y = A^-1 g, dA = -y x^T, db = y). They run on
//! the CPU; tensors on another device are moved there and back (differentiably).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, D, DType, Device, Layout, Result, Shape, Tensor, bail,
};
use ikol_types::joints::{INDEX_18_TO_24, LEAF_ROTATION_JOINTS, SMPL_JOINTS, SMPL24_PARENTS};
use nalgebra::{Cholesky, DMatrix, DVector, Matrix3};

use crate::geometry::{PARALLEL_EPS, TINY, TWIST_EPS, kabsch_from_m, kabsch_tangent_map, vee};
use crate::hybrik::{ROOT_CHILDREN, RootMethod, SPINE3, SPINE3_CHILDREN, Spine3Method};
use crate::ikol::{DEFAULT_DAMPING, DEFAULT_ITERATIONS};

/// Number of swing unknowns of the IKOL-24 layout.
pub const SWING_UNKNOWNS: usize = 18;

/// How the Gauss-Newton Jacobian takes part in backpropagation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JacobianMode {
    /// J is a constant (upstream IKOL).
    #[default]
    Detached,
    /// J is differentiated too (IKOL paper Eq. 14).
    Differentiated,
}

/// Options of the batched solver; defaults as upstream's test path, full gradients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchIkolOptions {
    /// Unrolled iterations (upstream 5).
    pub iterations: usize,
    /// Damping sigma (upstream 0.1).
    pub damping: f64,
    /// Jacobian in backpropagation.
    pub jacobian: JacobianMode,
    /// Root method (upstream: SVD at test, spine-then-hips in training).
    pub root: RootMethod,
    /// Spine3 method (upstream: three-children SVD at test, swing to neck in training).
    pub spine3: Spine3Method,
    /// Build the root from detached targets (upstream); `false` lets gradients reach the
    /// targets through the root too.
    pub detach_root_target: bool,
}

impl Default for BatchIkolOptions {
    fn default() -> Self {
        Self {
            iterations: DEFAULT_ITERATIONS,
            damping: DEFAULT_DAMPING,
            jacobian: JacobianMode::Detached,
            root: RootMethod::Svd,
            spine3: Spine3Method::ThreeChildrenSvd,
            detach_root_target: false,
        }
    }
}

impl BatchIkolOptions {
    /// Upstream's training path: non-SVD root from detached targets, spine3 swings to the neck,
    /// constant Jacobian.
    pub fn upstream_training() -> Self {
        Self {
            root: RootMethod::SpineThenHips,
            spine3: Spine3Method::SwingToNeck,
            detach_root_target: true,
            ..Self::default()
        }
    }
}

/// A batch of solver inputs (IKOL-24 layout).
#[derive(Debug, Clone, Copy)]
pub struct BatchInput<'a> {
    /// Target joints (B, 24, 3), metres (made root-relative inside).
    pub targets: &'a Tensor,
    /// Twist (B, 23, 2) (cos, sin), unnormalised, index joint - 1.
    pub twist: &'a Tensor,
    /// Rest joints (B, 24, 3), absolute model frame (made root-relative inside).
    pub rest: &'a Tensor,
    /// Leaf quaternions (B, 5, 4) (w, x, y, z) of joints [10, 11, 15, 22, 23]; identity if absent.
    pub leaf_rotations: Option<&'a Tensor>,
}

/// A batch of solutions.
#[derive(Debug, Clone)]
pub struct BatchSolution {
    /// Local rotations (B, 24, 3, 3).
    pub local_rotations: Tensor,
    /// Global rotations (B, 24, 3, 3).
    pub global_rotations: Tensor,
    /// Reconstructed joints (B, 24, 3), root-relative.
    pub joints: Tensor,
    /// Final swing angles (B, 18), order of `INDEX_18_TO_24`.
    pub swing_angles: Tensor,
}

// ---------------------------------------------------------------------------------------------
// Small vector helpers on (..., 3) tensors.

fn comp(v: &Tensor, i: usize) -> Result<Tensor> {
    v.narrow(D::Minus1, i, 1)
}

fn dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.broadcast_mul(b)?.sum_keepdim(D::Minus1)
}

fn cross(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a0, a1, a2) = (comp(a, 0)?, comp(a, 1)?, comp(a, 2)?);
    let (b0, b1, b2) = (comp(b, 0)?, comp(b, 1)?, comp(b, 2)?);
    let x = a1
        .broadcast_mul(&b2)?
        .broadcast_sub(&a2.broadcast_mul(&b1)?)?;
    let y = a2
        .broadcast_mul(&b0)?
        .broadcast_sub(&a0.broadcast_mul(&b2)?)?;
    let z = a0
        .broadcast_mul(&b1)?
        .broadcast_sub(&a1.broadcast_mul(&b0)?)?;
    Tensor::cat(&[x, y, z], D::Minus1)
}

/// `[v]x` for v (B, 3) -> (B, 3, 3).
fn skew(v: &Tensor) -> Result<Tensor> {
    let (x, y, z) = (comp(v, 0)?, comp(v, 1)?, comp(v, 2)?);
    let o = x.zeros_like()?;
    let r0 = Tensor::cat(&[&o, &z.neg()?, &y], 1)?;
    let r1 = Tensor::cat(&[&z, &o, &x.neg()?], 1)?;
    let r2 = Tensor::cat(&[&y.neg()?, &x, &o], 1)?;
    Tensor::stack(&[r0, r1, r2], 1)
}

/// M v for M (B, 3, 3), v (B, 3).
fn matvec(m: &Tensor, v: &Tensor) -> Result<Tensor> {
    m.matmul(&v.unsqueeze(2)?)?.squeeze(2)
}

/// M^T v for M (B, 3, 3), v (B, 3).
fn mat_t_vec(m: &Tensor, v: &Tensor) -> Result<Tensor> {
    v.unsqueeze(1)?.matmul(m)?.squeeze(1)
}

fn eye3(b: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    Tensor::eye(3, dtype, dev)?
        .unsqueeze(0)?
        .broadcast_as((b, 3, 3))?
        .contiguous()
}

/// sqrt(sq) where `sq > floor`, with a mask; elsewhere 1, so neither value nor gradient is NaN.
fn guarded_sqrt(sq: &Tensor, floor: &Tensor) -> Result<(Tensor, Tensor)> {
    let mask = sq.gt(floor)?.detach();
    let safe = mask.where_cond(sq, &sq.ones_like()?)?;
    Ok((safe.sqrt()?, mask))
}

fn scalar_like(t: &Tensor, x: f64) -> Result<Tensor> {
    t.ones_like()?.affine(x, 0.0)
}

/// Rodrigues R = I + sin `[n]x` + (1 - cos)`[n]x^2` with n (B, 3), cos and sin (B, 1).
fn rodrigues(n: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let k = skew(n)?;
    let k2 = k.matmul(&k)?;
    let b = n.dim(0)?;
    let one_minus_cos = cos.affine(-1.0, 1.0)?;
    eye3(b, n.dtype(), n.device())?
        .add(&k.broadcast_mul(&sin.unsqueeze(2)?)?)?
        .add(&k2.broadcast_mul(&one_minus_cos.unsqueeze(2)?)?)
}

/// [`crate::geometry::perpendicular_axis`] in tensor ops.
fn perpendicular_axis(v: &Tensor) -> Result<Tensor> {
    let a = v.abs()?.detach();
    let (a0, a1, a2) = (comp(&a, 0)?, comp(&a, 1)?, comp(&a, 2)?);
    let m0 = a0.le(&a1)?.mul(&a0.le(&a2)?)?;
    let not0 = m0.ones_like()?.sub(&m0)?;
    let m1 = not0.mul(&a1.le(&a2)?)?;
    let m2 = not0.sub(&m1)?;
    let e = Tensor::cat(&[m0, m1, m2], 1)?.to_dtype(v.dtype())?;
    let p = cross(v, &e)?;
    let sq = dot(&p, &p)?;
    let (norm, mask) = guarded_sqrt(&sq, &scalar_like(&sq, TINY * TINY)?)?;
    let x_axis = Tensor::cat(&[sq.ones_like()?, sq.zeros_like()?, sq.zeros_like()?], 1)?;
    mask.broadcast_as(p.shape())?
        .where_cond(&p.broadcast_div(&norm)?, &x_axis)
}

/// [`crate::geometry::swing`] in tensor ops: (axis, cos, sin, |w| (1 where degenerate),
/// non-degenerate mask as the scalar 0/1 in the input dtype).
struct TSwing {
    axis: Tensor,
    cos: Tensor,
    sin: Tensor,
    w_norm: Tensor,
    regular: Tensor,
}

fn swing(r: &Tensor, t: &Tensor) -> Result<TSwing> {
    let rt_sq = dot(r, r)?.mul(&dot(t, t)?)?;
    let (rt, valid) = guarded_sqrt(&rt_sq, &scalar_like(&rt_sq, TINY.powi(4))?)?;
    let w = cross(r, t)?;
    let w_sq = dot(&w, &w)?;
    let floor = rt_sq.affine(PARALLEL_EPS * PARALLEL_EPS, 0.0)?;
    let (w_norm, nondeg) = guarded_sqrt(&w_sq, &floor)?;
    let regular = valid.mul(&nondeg)?;
    let fallback = perpendicular_axis(r)?;
    let axis = regular
        .broadcast_as(w.shape())?
        .where_cond(&w.broadcast_div(&w_norm)?, &fallback)?;
    let d = dot(r, t)?;
    let ones = d.ones_like()?;
    let anti = valid.mul(&d.lt(0.0)?.detach())?;
    let degenerate_cos = anti.where_cond(&ones.neg()?, &ones)?;
    let cos = regular.where_cond(&d.div(&rt)?, &degenerate_cos)?;
    let sin = regular.where_cond(&w_norm.div(&rt)?, &d.zeros_like()?)?;
    let w_norm = regular.where_cond(&w_norm, &ones)?;
    Ok(TSwing {
        axis,
        cos,
        sin,
        w_norm,
        regular: regular.to_dtype(r.dtype())?,
    })
}

/// Twist (cos, sin) normalised, identity for pairs shorter than TWIST_EPS
/// ([`crate::geometry::normalise_twist`]); `pair` (B, 2) -> two (B, 1).
fn normalise_twist(pair: &Tensor) -> Result<(Tensor, Tensor)> {
    let c = pair.narrow(1, 0, 1)?;
    let s = pair.narrow(1, 1, 1)?;
    let sq = c.sqr()?.add(&s.sqr()?)?;
    let (n, mask) = guarded_sqrt(&sq, &scalar_like(&sq, TWIST_EPS * TWIST_EPS)?)?;
    Ok((
        mask.where_cond(&c.div(&n)?, &sq.ones_like()?)?,
        mask.where_cond(&s.div(&n)?, &sq.zeros_like()?)?,
    ))
}

/// [`crate::geometry::twist_rotation`]: rotation about bone/|bone| (identity for a zero bone).
fn twist_rotation(bone: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let sq = dot(bone, bone)?;
    let (n, mask) = guarded_sqrt(&sq, &scalar_like(&sq, TINY * TINY)?)?;
    let u = mask
        .broadcast_as(bone.shape())?
        .where_cond(&bone.broadcast_div(&n)?, &bone.zeros_like()?)?;
    rodrigues(&u, cos, sin)
}

/// Quaternion (w, x, y, z) (B, 4) to a matrix, normalised; identity below machine epsilon
/// (`ikol_types::rotation::quat_to_matrix`).
fn quat_to_matrix(q: &Tensor) -> Result<Tensor> {
    let eps = match q.dtype() {
        DType::F32 => f32::EPSILON as f64,
        _ => f64::EPSILON,
    };
    let sq = dot(q, q)?;
    let (n, mask) = guarded_sqrt(&sq, &scalar_like(&sq, eps * eps)?)?;
    let ident = Tensor::cat(
        &[
            sq.ones_like()?,
            sq.zeros_like()?,
            sq.zeros_like()?,
            sq.zeros_like()?,
        ],
        1,
    )?;
    let q = mask
        .broadcast_as(q.shape())?
        .where_cond(&q.broadcast_div(&n)?, &ident)?;
    let (w, x, y, z) = (comp(&q, 0)?, comp(&q, 1)?, comp(&q, 2)?, comp(&q, 3)?);
    let two = |a: &Tensor, b: &Tensor| a.mul(b)?.affine(2.0, 0.0);
    let one_minus = |a: Tensor, b: Tensor| a.add(&b)?.affine(-2.0, 1.0);
    let r0 = Tensor::cat(
        &[
            one_minus(y.sqr()?, z.sqr()?)?,
            two(&x, &y)?.sub(&two(&w, &z)?)?,
            two(&x, &z)?.add(&two(&w, &y)?)?,
        ],
        1,
    )?;
    let r1 = Tensor::cat(
        &[
            two(&x, &y)?.add(&two(&w, &z)?)?,
            one_minus(x.sqr()?, z.sqr()?)?,
            two(&y, &z)?.sub(&two(&w, &x)?)?,
        ],
        1,
    )?;
    let r2 = Tensor::cat(
        &[
            two(&x, &z)?.sub(&two(&w, &y)?)?,
            two(&y, &z)?.add(&two(&w, &x)?)?,
            one_minus(x.sqr()?, y.sqr()?)?,
        ],
        1,
    )?;
    Tensor::stack(&[r0, r1, r2], 1)
}

// ---------------------------------------------------------------------------------------------
// Custom ops.

fn rows_f64(s: &CpuStorage, l: &Layout, name: &str) -> Result<Vec<f64>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{name}: input must be contiguous")
    };
    Ok(match s {
        CpuStorage::F64(v) => v[a..b].to_vec(),
        CpuStorage::F32(v) => v[a..b].iter().map(|&x| x as f64).collect(),
        _ => bail!("{name}: only f32 and f64 are supported"),
    })
}

fn storage_like(s: &CpuStorage, v: Vec<f64>) -> CpuStorage {
    match s {
        CpuStorage::F32(_) => CpuStorage::F32(v.into_iter().map(|x| x as f32).collect()),
        _ => CpuStorage::F64(v),
    }
}

fn on_cpu<F: FnOnce(&[Tensor]) -> Result<Tensor>>(args: &[&Tensor], f: F) -> Result<Tensor> {
    let dev = args[0].device().clone();
    let cpu: Vec<Tensor> = args
        .iter()
        .map(|t| t.to_device(&Device::Cpu)?.contiguous())
        .collect::<Result<_>>()?;
    f(&cpu)?.to_device(&dev)
}

/// R = kabsch(M) per batch element, M = sum target rest^T (B, 3, 3).
#[derive(Debug, Clone, Copy)]
struct KabschOp;

impl CustomOp1 for KabschOp {
    fn name(&self) -> &'static str {
        "ikol-kabsch"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let m = rows_f64(s, l, self.name())?;
        let mut out = Vec::with_capacity(m.len());
        for chunk in m.chunks_exact(9) {
            let r = kabsch_from_m(&Matrix3::from_row_slice(chunk));
            for i in 0..3 {
                for j in 0..3 {
                    out.push(r[(i, j)]);
                }
            }
        }
        Ok((storage_like(s, out), l.shape().clone()))
    }

    /// dL/dM = R `[y]x` with y = K^-1 2 vee(R^T G), K = tr(H) I - H, H = R^T M (the adjoint of
    /// `geometry::kabsch_tangent`).
    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let flat = |t: &Tensor| -> Result<Vec<f64>> {
            t.to_device(&Device::Cpu)?
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()
        };
        let (m, r, g) = (flat(arg)?, flat(res)?, flat(grad)?);
        let mut out = Vec::with_capacity(m.len());
        for i in 0..m.len() / 9 {
            let mm = Matrix3::from_row_slice(&m[9 * i..9 * i + 9]);
            let rr = Matrix3::from_row_slice(&r[9 * i..9 * i + 9]);
            let gg = Matrix3::from_row_slice(&g[9 * i..9 * i + 9]);
            let dm = match kabsch_tangent_map(&rr, &mm) {
                Some(k_inv) => {
                    let y = k_inv * (vee(&(rr.transpose() * gg)) * 2.0);
                    rr * ikol_types::rotation::skew(&y)
                }
                None => Matrix3::zeros(),
            };
            for a in 0..3 {
                for b in 0..3 {
                    out.push(dm[(a, b)]);
                }
            }
        }
        let t = Tensor::from_vec(out, arg.shape(), &Device::Cpu)?
            .to_dtype(arg.dtype())?
            .to_device(arg.device())?;
        Ok(Some(t))
    }
}

fn kabsch(m: &Tensor) -> Result<Tensor> {
    on_cpu(&[m], |a| a[0].apply_op1(KabschOp))
}

/// x = A^-1 b per batch element, A (B, n, n) symmetric positive definite, b (B, n).
#[derive(Debug, Clone, Copy)]
struct SpdSolveOp;

impl CustomOp2 for SpdSolveOp {
    fn name(&self) -> &'static str {
        "ikol-spd-solve"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = rows_f64(s1, l1, self.name())?;
        let b = rows_f64(s2, l2, self.name())?;
        let (batch, n) = l2.shape().dims2()?;
        let mut out = Vec::with_capacity(batch * n);
        for i in 0..batch {
            let am = DMatrix::from_row_slice(n, n, &a[i * n * n..(i + 1) * n * n]);
            let bv = DVector::from_row_slice(&b[i * n..(i + 1) * n]);
            let Some(ch) = Cholesky::new(am) else {
                bail!("{}: matrix {i} is not positive definite", self.name())
            };
            out.extend(ch.solve(&bv).iter());
        }
        Ok((storage_like(s2, out), l2.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        _b: &Tensor,
        x: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let y = spd_solve(a, grad)?;
        let da = y.unsqueeze(2)?.matmul(&x.unsqueeze(1)?)?.neg()?;
        Ok((Some(da), Some(y)))
    }
}

fn spd_solve(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    on_cpu(&[a, b], |t| t[0].apply_op2(&t[1], SpdSolveOp))
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone, Copy)]
enum Kind {
    Swing { child: usize, slot: usize },
    Spine3Svd,
    Leaf(usize),
}

struct Model {
    b: usize,
    targets: Vec<Tensor>,
    rest: Vec<Tensor>,
    root: Tensor,
    spine3: Option<Tensor>,
    twist: Vec<Option<Tensor>>,
    leaf: Vec<Tensor>,
    kinds: Vec<Kind>,
    onehot: Vec<Tensor>,
}

struct Forward {
    local: Vec<Tensor>,
    global: Vec<Tensor>,
    /// (B, 72).
    joints: Tensor,
    /// (B, 72, 18).
    jacobian: Option<Tensor>,
}

fn kabsch_m(rest: &[&Tensor], target: &[&Tensor]) -> Result<Tensor> {
    let mut m: Option<Tensor> = None;
    for (r, t) in rest.iter().zip(target) {
        let outer = t.unsqueeze(2)?.matmul(&r.unsqueeze(1)?)?;
        m = Some(match m {
            Some(m) => m.add(&outer)?,
            None => outer,
        });
    }
    m.ok_or_else(|| candle_core::Error::Msg("empty Kabsch fit".into()))
}

/// [`crate::hybrik::root_rotation`] in tensor ops.
fn root_rotation(method: RootMethod, targets: &[Tensor], rest: &[Tensor]) -> Result<Tensor> {
    match method {
        RootMethod::Svd => {
            let r: Vec<&Tensor> = ROOT_CHILDREN.iter().map(|&c| &rest[c]).collect();
            let t: Vec<&Tensor> = ROOT_CHILDREN.iter().map(|&c| &targets[c]).collect();
            kabsch(&kabsch_m(&r, &t)?)
        }
        RootMethod::SpineThenHips => {
            let sw = swing(&rest[3], &targets[3])?;
            let r_spine = rodrigues(&sw.axis, &sw.cos, &sw.sin)?;
            let rest_hips = matvec(&r_spine, &rest[1].add(&rest[2])?.affine(0.5, 0.0)?)?;
            let target_hips = targets[1].add(&targets[2])?.affine(0.5, 0.0)?;
            let s_sq = dot(&targets[3], &targets[3])?;
            let tiny2 = scalar_like(&s_sq, TINY * TINY)?;
            let (s_norm, s_ok) = guarded_sqrt(&s_sq, &tiny2)?;
            let s = targets[3].broadcast_div(&s_norm)?;
            let project = |v: &Tensor| v.sub(&s.broadcast_mul(&dot(&s, v)?)?);
            let a = project(&rest_hips)?;
            let bb = project(&target_hips)?;
            let (a_norm, a_ok) = guarded_sqrt(&dot(&a, &a)?, &tiny2)?;
            let (b_norm, b_ok) = guarded_sqrt(&dot(&bb, &bb)?, &tiny2)?;
            let ab = a_norm.mul(&b_norm)?;
            let cos = dot(&a, &bb)?.div(&ab)?;
            let sin = dot(&s, &cross(&a, &bb)?)?.div(&ab)?;
            let turn = rodrigues(&s, &cos, &sin)?.matmul(&r_spine)?;
            let ok = s_ok
                .mul(&a_ok)?
                .mul(&b_ok)?
                .unsqueeze(2)?
                .broadcast_as(turn.shape())?;
            ok.where_cond(&turn, &r_spine)
        }
    }
}

fn check_dims(t: &Tensor, name: &str, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        bail!("{name} has shape {:?}, expected {dims:?}", t.dims())
    }
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        bail!("{name} must be f32 or f64")
    }
    Ok(())
}

impl Model {
    fn new(input: &BatchInput<'_>, opts: &BatchIkolOptions) -> Result<Self> {
        let b = input.targets.dim(0)?;
        check_dims(input.targets, "targets", &[b, SMPL_JOINTS, 3])?;
        check_dims(input.twist, "twist", &[b, SMPL_JOINTS - 1, 2])?;
        check_dims(input.rest, "rest", &[b, SMPL_JOINTS, 3])?;
        let dtype = input.targets.dtype();
        if input.twist.dtype() != dtype || input.rest.dtype() != dtype {
            bail!("targets, twist and rest must share one dtype")
        }
        if !(opts.damping.is_finite() && opts.damping > 0.0) {
            bail!("damping must be finite and positive")
        }
        let split = |t: &Tensor| -> Result<Vec<Tensor>> {
            let rel = t.broadcast_sub(&t.narrow(1, 0, 1)?)?;
            (0..SMPL_JOINTS)
                .map(|k| rel.narrow(1, k, 1)?.squeeze(1))
                .collect()
        };
        let targets = split(input.targets)?;
        let rest = split(input.rest)?;
        let root = if opts.detach_root_target {
            let detached: Vec<Tensor> = targets.iter().map(Tensor::detach).collect();
            root_rotation(opts.root, &detached, &rest)?
        } else {
            root_rotation(opts.root, &targets, &rest)?
        };
        let spine3 = match opts.spine3 {
            Spine3Method::ThreeChildrenSvd => {
                let r: Vec<Tensor> = SPINE3_CHILDREN
                    .iter()
                    .map(|&c| rest[c].sub(&rest[SPINE3]))
                    .collect::<Result<_>>()?;
                let t: Vec<Tensor> = SPINE3_CHILDREN
                    .iter()
                    .map(|&c| targets[c].sub(&targets[SPINE3]))
                    .collect::<Result<_>>()?;
                let r: Vec<&Tensor> = r.iter().collect();
                let t: Vec<&Tensor> = t.iter().collect();
                Some(kabsch(&kabsch_m(&r, &t)?)?)
            }
            Spine3Method::SwingToNeck => None,
        };
        let mut kinds = vec![Kind::Leaf(0); SMPL_JOINTS];
        let mut twist = vec![None; SMPL_JOINTS];
        for k in 1..SMPL_JOINTS {
            let child = ikol_types::joints::IKOL24_CHILDREN[k];
            kinds[k] = if k == SPINE3 && spine3.is_some() {
                Kind::Spine3Svd
            } else if let Some(slot) = INDEX_18_TO_24.iter().position(|&j| j == k) {
                Kind::Swing {
                    child: child as usize,
                    slot,
                }
            } else {
                Kind::Leaf(
                    LEAF_ROTATION_JOINTS
                        .iter()
                        .position(|&j| j == k)
                        .unwrap_or_default(),
                )
            };
            if let Kind::Swing { child, .. } = kinds[k] {
                let (c, s) = normalise_twist(&input.twist.narrow(1, k - 1, 1)?.squeeze(1)?)?;
                twist[k] = Some(twist_rotation(&rest[child].sub(&rest[k])?, &c, &s)?);
            }
        }
        let dev = input.targets.device();
        let leaf = match input.leaf_rotations {
            Some(q) => {
                check_dims(q, "leaf rotations", &[b, LEAF_ROTATION_JOINTS.len(), 4])?;
                (0..LEAF_ROTATION_JOINTS.len())
                    .map(|i| quat_to_matrix(&q.to_dtype(dtype)?.narrow(1, i, 1)?.squeeze(1)?))
                    .collect::<Result<_>>()?
            }
            None => vec![eye3(b, dtype, dev)?; LEAF_ROTATION_JOINTS.len()],
        };
        let onehot = (0..SWING_UNKNOWNS)
            .map(|s| {
                let mut v = vec![0.0f64; SWING_UNKNOWNS];
                v[s] = 1.0;
                Tensor::from_vec(v, (1, SWING_UNKNOWNS, 1), dev)?.to_dtype(dtype)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            b,
            targets,
            rest,
            root,
            spine3,
            twist,
            leaf,
            kinds,
            onehot,
        })
    }

    /// f(alpha), and the Jacobian d f / d alpha when asked (module docs of `crate::ikol`).
    fn forward(&self, alpha: &Tensor, want_jacobian: bool) -> Result<Forward> {
        let (b, s) = (self.b, SWING_UNKNOWNS);
        let dtype = alpha.dtype();
        let dev = alpha.device();
        let mut local = Vec::with_capacity(SMPL_JOINTS);
        let mut global: Vec<Tensor> = Vec::with_capacity(SMPL_JOINTS);
        let mut pos: Vec<Tensor> = Vec::with_capacity(SMPL_JOINTS);
        let zero_w = Tensor::zeros((b, s, 3), dtype, dev)?;
        let mut w: Vec<Tensor> = Vec::with_capacity(SMPL_JOINTS);
        let mut dq: Vec<Tensor> = Vec::with_capacity(SMPL_JOINTS);
        local.push(self.root.clone());
        global.push(self.root.clone());
        pos.push(self.targets[0].zeros_like()?);
        w.push(zero_w.clone());
        dq.push(zero_w.clone());
        for k in 1..SMPL_JOINTS {
            let p = SMPL24_PARENTS[k] as usize;
            let g_p = &global[p];
            let gb = matvec(g_p, &self.rest[k].sub(&self.rest[p])?)?;
            pos.push(pos[p].add(&gb)?);
            if want_jacobian {
                // dq_k = dq_p + w_p x (R_p b_k)
                dq.push(dq[p].add(&cross(&w[p], &gb.unsqueeze(1)?)?)?);
            }
            let (l, g, wk) = match self.kinds[k] {
                Kind::Leaf(i) => {
                    let l = self.leaf[i].clone();
                    (
                        l.clone(),
                        g_p.matmul(&l)?,
                        want_jacobian.then(|| w[p].clone()),
                    )
                }
                Kind::Spine3Svd => {
                    let g = self.spine3.clone().expect("spine3 fit exists");
                    (g_p.transpose(1, 2)?.matmul(&g)?, g, Some(zero_w.clone()))
                }
                Kind::Swing { child, slot } => {
                    let d = self.targets[child].sub(&self.targets[k])?;
                    let t = mat_t_vec(g_p, &d)?;
                    let r = self.rest[child].sub(&self.rest[k])?;
                    let sw = swing(&r, &t)?;
                    let a = alpha.narrow(1, slot, 1)?;
                    let (ca, sa) = (a.cos()?, a.sin()?);
                    let r_sw = rodrigues(&sw.axis, &ca, &sa)?;
                    let tw = self.twist[k].as_ref().expect("swing joints have a twist");
                    let l = r_sw.matmul(tw)?;
                    let g = g_p.matmul(&l)?;
                    let wk = if want_jacobian {
                        let n = sw.axis.unsqueeze(1)?;
                        // dt = t x (R_p^T w_p); dw = r x dt; dn = (I - n n^T) dw / |w|.
                        let w_local = w[p].matmul(g_p)?;
                        let dt = cross(&t.unsqueeze(1)?, &w_local)?;
                        let dw = cross(&r.unsqueeze(1)?, &dt)?;
                        let dn = dw
                            .sub(&n.broadcast_mul(&dot(&n, &dw)?)?)?
                            .broadcast_div(&sw.w_norm.unsqueeze(1)?)?
                            .broadcast_mul(&sw.regular.unsqueeze(1)?)?;
                        // l = n e_slot + sin(a) dn + (1 - cos(a)) n x dn.
                        let lam = dn
                            .broadcast_mul(&sa.unsqueeze(1)?)?
                            .add(
                                &cross(&n, &dn)?
                                    .broadcast_mul(&ca.affine(-1.0, 1.0)?.unsqueeze(1)?)?,
                            )?
                            .add(&self.onehot[slot].broadcast_mul(&n)?)?;
                        // w_k = w_p + R_p l.
                        Some(w[p].add(&lam.matmul(&g_p.transpose(1, 2)?)?)?)
                    } else {
                        None
                    };
                    (l, g, wk)
                }
            };
            local.push(l);
            global.push(g);
            if want_jacobian {
                w.push(wk.unwrap_or_else(|| zero_w.clone()));
            }
        }
        let joints = Tensor::stack(&pos, 1)?.reshape((b, 3 * SMPL_JOINTS))?;
        let jacobian = if want_jacobian {
            Some(
                Tensor::stack(&dq, 2)?
                    .reshape((b, s, 3 * SMPL_JOINTS))?
                    .transpose(1, 2)?
                    .contiguous()?,
            )
        } else {
            None
        };
        Ok(Forward {
            local,
            global,
            joints,
            jacobian,
        })
    }
}

/// The solver proper. With `fixed`, those Jacobians are used instead of computed (tests check
/// the detached mode's gradients against finite differences of exactly this function).
fn run(
    input: &BatchInput<'_>,
    opts: &BatchIkolOptions,
    init: Option<&Tensor>,
    fixed: Option<&[Tensor]>,
) -> Result<(BatchSolution, Vec<Tensor>)> {
    let model = Model::new(input, opts)?;
    let (b, dtype, dev) = (model.b, input.targets.dtype(), input.targets.device());
    let target_flat = Tensor::stack(&model.targets, 1)?.reshape((b, 3 * SMPL_JOINTS))?;
    let mut alpha = match init {
        Some(a) => {
            check_dims(a, "initial angles", &[b, SWING_UNKNOWNS])?;
            a.to_dtype(dtype)?
        }
        None => Tensor::zeros((b, SWING_UNKNOWNS), dtype, dev)?,
    };
    let damping = Tensor::eye(SWING_UNKNOWNS, dtype, dev)?
        .affine(opts.damping, 0.0)?
        .unsqueeze(0)?;
    let mut used = Vec::with_capacity(opts.iterations);
    for it in 0..opts.iterations {
        let need_j = fixed.is_none();
        let f = model.forward(&alpha, need_j)?;
        let jac = match (fixed, f.jacobian) {
            (Some(js), _) => js[it].clone(),
            (None, Some(j)) => match opts.jacobian {
                JacobianMode::Detached => j.detach(),
                JacobianMode::Differentiated => j,
            },
            (None, None) => bail!("Jacobian missing"),
        };
        // IKOL Eq. 10: delta = (J^T J + sigma I)^-1 J^T r, r = f(alpha) - P; Eq. 11.
        let r = f.joints.sub(&target_flat)?;
        let jt = jac.transpose(1, 2)?;
        let a = jt.matmul(&jac)?.broadcast_add(&damping)?;
        let g = jt.matmul(&r.unsqueeze(2)?)?.squeeze(2)?;
        let delta = spd_solve(&a, &g)?;
        alpha = alpha.sub(&delta)?;
        used.push(jac);
    }
    let f = model.forward(&alpha, false)?;
    let sol = BatchSolution {
        local_rotations: Tensor::stack(&f.local, 1)?,
        global_rotations: Tensor::stack(&f.global, 1)?,
        joints: f.joints.reshape((b, SMPL_JOINTS, 3))?,
        swing_angles: alpha,
    };
    Ok((sol, used))
}

/// Solve a batch with IKOL; `init` (B, 18) replaces the zero start.
pub fn ikol_batch(
    input: &BatchInput<'_>,
    opts: &BatchIkolOptions,
    init: Option<&Tensor>,
) -> Result<BatchSolution> {
    Ok(run(input, opts, init, None)?.0)
}

/// The Jacobian d f / d alpha (B, 72, 18) at `alpha` (for tests and diagnostics).
pub fn jacobian(input: &BatchInput<'_>, opts: &BatchIkolOptions, alpha: &Tensor) -> Result<Tensor> {
    let model = Model::new(input, opts)?;
    model
        .forward(alpha, true)?
        .jacobian
        .ok_or_else(|| candle_core::Error::Msg("Jacobian missing".into()))
}

#[cfg(test)]
mod tests;
