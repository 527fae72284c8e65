//! Gradient of L_opt through the unrolled IKOL layer against central finite differences (f64).
//!
//! With the Jacobian differentiated (the paper's GN-Diff) the backward pass is the exact
//! derivative of the unrolled solver, so it must match finite differences of the loss. The
//! detached mode (upstream code) is a different, approximate gradient: only checked to be finite
//! and different.

use candle_core::{DType, Device, Tensor, Var};
use ikol_solver::batch::{BatchIkolOptions, JacobianMode};
use ikol_train::config::BodyChoice;
use ikol_train::data::{Batch, SynthDataset, SynthOptions};
use ikol_train::loss::{RestBasis, solve, solver_losses};

struct Case {
    joints: Tensor,
    twist: Tensor,
    beta: Tensor,
    leaf: Tensor,
    target: Tensor,
    rotations: Tensor,
    basis: RestBasis,
}

fn case() -> anyhow::Result<Case> {
    let dev = Device::Cpu;
    let ds = SynthDataset::new(SynthOptions::new(64, 10, BodyChoice::Small), 5, 2)?;
    let b = Batch::gather(&ds, &[0, 1], &dev)?;
    // Perturbed inputs, as a network would predict them (fixed pseudo-random offsets).
    let wiggle = |t: &Tensor, amp: f64, k: f64| -> anyhow::Result<Tensor> {
        let t = t.to_dtype(DType::F64)?;
        let n = t.elem_count();
        let v: Vec<f64> = (0..n).map(|i| amp * ((i as f64) * k).sin()).collect();
        Ok(t.add(&Tensor::from_vec(v, t.shape(), &dev)?)?)
    };
    Ok(Case {
        joints: wiggle(&b.joints, 0.03, 1.7)?,
        twist: wiggle(&b.twist, 0.2, 2.3)?,
        beta: wiggle(&b.beta, 0.3, 0.7)?,
        leaf: wiggle(&b.leaf, 0.1, 1.1)?,
        target: b.joints.to_dtype(DType::F64)?,
        rotations: b.rotations.to_dtype(DType::F64)?,
        basis: RestBasis::new(&*BodyChoice::Small.load()?, 10, DType::F64, &dev)?,
    })
}

fn loss(c: &Case, x: [&Tensor; 4], opts: &BatchIkolOptions) -> candle_core::Result<Tensor> {
    let rest = c.basis.rest(x[2])?;
    let sol = solve(x[0], x[1], &rest, Some(x[3]), opts)?;
    let (opt, theta) = solver_losses(&sol, &c.target, &c.rotations)?;
    opt.add(&theta.affine(0.01, 0.0)?)
}

#[test]
fn differentiated_gradient_matches_finite_differences() -> anyhow::Result<()> {
    let c = case()?;
    let opts = BatchIkolOptions {
        iterations: 3,
        jacobian: JacobianMode::Differentiated,
        // Upstream builds the root from detached targets, a deliberate gap in the gradient that
        // finite differences would see: let the root take part here.
        detach_root_target: false,
        ..BatchIkolOptions::upstream_training()
    };
    let inputs = [&c.joints, &c.twist, &c.beta, &c.leaf];
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t))
        .collect::<candle_core::Result<_>>()?;
    let l = loss(
        &c,
        [
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
            vars[3].as_tensor(),
        ],
        &opts,
    )?;
    let grads = l.backward()?;
    let names = ["joints", "twist", "beta", "leaf"];
    let mut checked = 0;
    for (k, var) in vars.iter().enumerate() {
        let g = grads
            .get(var.as_tensor())
            .map(|g| g.flatten_all()?.to_vec1::<f64>())
            .transpose()?
            .unwrap_or_default();
        let base = inputs[k].flatten_all()?.to_vec1::<f64>()?;
        // A spread of entries of every input (sample 0 and 1).
        let n = base.len();
        for i in (0..n).step_by((n / 7).max(1)) {
            let h = 1e-6 * base[i].abs().max(1.0);
            let eval = |d: f64| -> anyhow::Result<f64> {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, inputs[k].shape(), &Device::Cpu)?;
                let mut x = inputs;
                x[k] = &t;
                Ok(loss(&c, x, &opts)?.to_scalar::<f64>()?)
            };
            let fd = (eval(h)? - eval(-h)?) / (2.0 * h);
            let an = g.get(i).copied().unwrap_or(0.0);
            let tol = 1e-6 + 1e-4 * fd.abs().max(an.abs());
            assert!(
                (fd - an).abs() <= tol,
                "{}[{i}]: analytic {an}, finite differences {fd}",
                names[k]
            );
            checked += 1;
        }
    }
    assert!(checked >= 28);
    Ok(())
}

#[test]
fn detached_gradient_is_finite_and_differs() -> anyhow::Result<()> {
    let c = case()?;
    let grad = |mode: JacobianMode| -> anyhow::Result<Vec<f64>> {
        let opts = BatchIkolOptions {
            iterations: 3,
            jacobian: mode,
            ..BatchIkolOptions::upstream_training()
        };
        let v = Var::from_tensor(&c.joints)?;
        let l = loss(&c, [v.as_tensor(), &c.twist, &c.beta, &c.leaf], &opts)?;
        let g = l.backward()?;
        Ok(g.get(v.as_tensor())
            .map(|g| g.flatten_all()?.to_vec1::<f64>())
            .transpose()?
            .unwrap_or_default())
    };
    let det = grad(JacobianMode::Detached)?;
    let full = grad(JacobianMode::Differentiated)?;
    assert!(det.iter().all(|x| x.is_finite()));
    assert!(det.iter().any(|x| *x != 0.0));
    let diff: f64 = det.iter().zip(&full).map(|(a, b)| (a - b).abs()).sum();
    assert!(diff > 1e-9);
    Ok(())
}
