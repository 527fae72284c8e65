//! The batched twin against the per-person solver (parity to 1e-9 in f64) and its gradients
//! against central finite differences.

use super::*;
use crate::fixtures::random_shape_basis;
use crate::sampling::{PoseDistribution, ground_truth, jitter, sample_beta, sample_pose};
use crate::{IkInput, IkolInit, IkolModel, IkolOptions, Rest};
use candle_core::Var;
use nalgebra::{Vector3, Vector4};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Person {
    targets: Vec<Vector3<f64>>,
    twist: Vec<[f64; 2]>,
    rest: Vec<Vector3<f64>>,
    leaf: Vec<Vector4<f64>>,
}

fn people(seed: u64, n: usize, jitter_m: f64) -> Vec<Person> {
    let mut rng = StdRng::seed_from_u64(seed);
    let basis = random_shape_basis(10, 5);
    (0..n)
        .map(|_| {
            let beta = sample_beta(&mut rng, 10, 1.0);
            let rest = basis.rest_joints(&beta)[..24].to_vec();
            let pose = sample_pose(&mut rng, &PoseDistribution::default());
            let gt = ground_truth(&basis.rest_joints(&beta), &pose);
            let mut twist = gt.twist.clone();
            for t in &mut twist {
                let s: f64 = rng.random_range(0.5..2.0);
                *t = [t[0] * s, t[1] * s];
            }
            // Non-unit, randomly signed leaf quaternions.
            let leaf = gt
                .leaf_rotations
                .iter()
                .map(|q| q * rng.random_range(-2.0..-0.5))
                .collect();
            Person {
                targets: jitter(&mut rng, &gt.joints[..24], jitter_m),
                twist,
                rest,
                leaf,
            }
        })
        .collect()
}

fn tensor3(rows: &[Vec<Vector3<f64>>]) -> Tensor {
    let b = rows.len();
    let n = rows[0].len();
    let flat: Vec<f64> = rows
        .iter()
        .flatten()
        .flat_map(|v| [v.x, v.y, v.z])
        .collect();
    Tensor::from_vec(flat, (b, n, 3), &Device::Cpu).unwrap()
}

struct Batch {
    targets: Tensor,
    twist: Tensor,
    rest: Tensor,
    leaf: Tensor,
}

fn batch(people: &[Person]) -> Batch {
    let b = people.len();
    let twist: Vec<f64> = people
        .iter()
        .flat_map(|p| p.twist.iter().flatten().copied())
        .collect();
    let leaf: Vec<f64> = people
        .iter()
        .flat_map(|p| {
            p.leaf
                .iter()
                .flat_map(|q| q.iter().copied().collect::<Vec<_>>())
        })
        .collect();
    Batch {
        targets: tensor3(&people.iter().map(|p| p.targets.clone()).collect::<Vec<_>>()),
        twist: Tensor::from_vec(twist, (b, 23, 2), &Device::Cpu).unwrap(),
        rest: tensor3(&people.iter().map(|p| p.rest.clone()).collect::<Vec<_>>()),
        leaf: Tensor::from_vec(leaf, (b, 5, 4), &Device::Cpu).unwrap(),
    }
}

impl Batch {
    fn input(&self) -> BatchInput<'_> {
        BatchInput {
            targets: &self.targets,
            twist: &self.twist,
            rest: &self.rest,
            leaf_rotations: Some(&self.leaf),
        }
    }
}

fn configs() -> Vec<BatchIkolOptions> {
    let mut v = Vec::new();
    for root in [RootMethod::Svd, RootMethod::SpineThenHips] {
        for spine3 in [Spine3Method::ThreeChildrenSvd, Spine3Method::SwingToNeck] {
            v.push(BatchIkolOptions {
                root,
                spine3,
                ..BatchIkolOptions::default()
            });
        }
    }
    v
}

fn nalgebra_options(o: &BatchIkolOptions, init: IkolInit) -> IkolOptions {
    IkolOptions {
        iterations: o.iterations,
        damping: o.damping,
        root: o.root,
        spine3: o.spine3,
        init,
        ..IkolOptions::default()
    }
}

#[test]
fn parity_with_the_per_person_solver() -> Result<()> {
    let ps = people(11, 5, 0.02);
    let bt = batch(&ps);
    for opts in configs() {
        for with_init in [false, true] {
            let init_angles: Vec<Vec<f64>> = (0..ps.len())
                .map(|i| {
                    (0..18)
                        .map(|s| 0.05 * ((i * 18 + s) % 7) as f64 - 0.15)
                        .collect()
                })
                .collect();
            let init_t = Tensor::from_vec(
                init_angles.iter().flatten().copied().collect::<Vec<_>>(),
                (ps.len(), 18),
                &Device::Cpu,
            )?;
            let sol = ikol_batch(&bt.input(), &opts, with_init.then_some(&init_t))?;
            let rots: Vec<Vec<f64>> = sol.local_rotations.flatten_from(1)?.to_vec2::<f64>()?;
            let joints = sol.joints.flatten_from(1)?.to_vec2::<f64>()?;
            let alpha = sol.swing_angles.to_vec2::<f64>()?;
            for (i, p) in ps.iter().enumerate() {
                let input = IkInput {
                    targets: &p.targets,
                    twist: &p.twist,
                    rest: Rest::Joints(&p.rest),
                    leaf_rotations: Some(&p.leaf),
                };
                let init = if with_init {
                    IkolInit::Angles(init_angles[i].clone())
                } else {
                    IkolInit::Zero
                };
                let want = IkolModel::new(&input, &nalgebra_options(&opts, init))
                    .expect("valid")
                    .solve()
                    .expect("solves");
                for k in 0..24 {
                    for a in 0..3 {
                        assert!((joints[i][3 * k + a] - want.joints[k][a]).abs() < 1e-9);
                        for b in 0..3 {
                            let got = rots[i][9 * k + 3 * a + b];
                            let w = want.local_rotations[k][(a, b)];
                            assert!(
                                (got - w).abs() < 1e-9,
                                "{opts:?} person {i} joint {k}: {got} vs {w}"
                            );
                        }
                    }
                }
                let wa = want.swing_angles.expect("ikol angles");
                for s in 0..18 {
                    assert!((alpha[i][s] - wa[s]).abs() < 1e-9);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn jacobian_parity() -> Result<()> {
    let ps = people(3, 3, 0.01);
    let bt = batch(&ps);
    for opts in configs() {
        let alpha: Vec<f64> = (0..3 * 18)
            .map(|i| ((i * 37) % 11) as f64 * 0.1 - 0.5)
            .collect();
        let at = Tensor::from_vec(alpha.clone(), (3, 18), &Device::Cpu)?;
        let j = jacobian(&bt.input(), &opts, &at)?.to_vec3::<f64>()?;
        for (i, p) in ps.iter().enumerate() {
            let input = IkInput {
                targets: &p.targets,
                twist: &p.twist,
                rest: Rest::Joints(&p.rest),
                leaf_rotations: Some(&p.leaf),
            };
            let model =
                IkolModel::new(&input, &nalgebra_options(&opts, IkolInit::Zero)).expect("ok");
            let want = model.jacobian(&alpha[18 * i..18 * (i + 1)]);
            for r in 0..72 {
                for c in 0..18 {
                    assert!(
                        (j[i][r][c] - want[(r, c)]).abs() < 1e-9,
                        "{opts:?} ({r}, {c})"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn f32_agrees_with_f64() -> Result<()> {
    let ps = people(4, 3, 0.02);
    let bt = batch(&ps);
    let opts = BatchIkolOptions::default();
    let s64 = ikol_batch(&bt.input(), &opts, None)?;
    let b32 = Batch {
        targets: bt.targets.to_dtype(DType::F32)?,
        twist: bt.twist.to_dtype(DType::F32)?,
        rest: bt.rest.to_dtype(DType::F32)?,
        leaf: bt.leaf.to_dtype(DType::F32)?,
    };
    let s32 = ikol_batch(&b32.input(), &opts, None)?;
    assert_eq!(s32.joints.dtype(), DType::F32);
    let diff = s32
        .joints
        .to_dtype(DType::F64)?
        .sub(&s64.joints)?
        .abs()?
        .max_all()?
        .to_scalar::<f64>()?;
    assert!(diff < 1e-4, "{diff}");
    Ok(())
}

#[test]
fn degenerate_batch_stays_finite() -> Result<()> {
    let mut ps = people(9, 2, 0.0);
    // Zero bones, all-zero twist, zero quaternions, targets on the rest pose.
    ps[0].rest[22] = ps[0].rest[20];
    ps[0].twist = vec![[0.0, 0.0]; 23];
    ps[0].leaf = vec![Vector4::zeros(); 5];
    ps[1].targets = ps[1].rest.iter().map(|r| r - ps[1].rest[0]).collect();
    ps[1].targets[7] = ps[1].targets[4];
    let bt = batch(&ps);
    for opts in configs() {
        let vars = [
            Var::from_tensor(&bt.targets)?,
            Var::from_tensor(&bt.twist)?,
            Var::from_tensor(&bt.rest)?,
        ];
        let input = BatchInput {
            targets: vars[0].as_tensor(),
            twist: vars[1].as_tensor(),
            rest: vars[2].as_tensor(),
            leaf_rotations: Some(&bt.leaf),
        };
        let sol = ikol_batch(
            &input,
            &BatchIkolOptions {
                jacobian: JacobianMode::Differentiated,
                ..opts
            },
            None,
        )?;
        let loss = sol.joints.sum_all()?.add(&sol.local_rotations.sum_all()?)?;
        assert!(loss.to_scalar::<f64>()?.is_finite());
        let grads = loss.backward()?;
        for v in &vars {
            let g = grads.get(v.as_tensor()).expect("gradient");
            let all = g.flatten_all()?.to_vec1::<f64>()?;
            assert!(all.iter().all(|x| x.is_finite()), "{opts:?}");
        }
    }
    Ok(())
}

/// loss = sum(wj * joints) + sum(wr * local rotations), fixed random weights.
fn loss_of(sol: &BatchSolution, wj: &Tensor, wr: &Tensor) -> Result<Tensor> {
    sol.joints
        .mul(wj)?
        .sum_all()?
        .add(&sol.local_rotations.mul(wr)?.sum_all()?)
}

fn check_gradients(mode: JacobianMode, opts: BatchIkolOptions) -> Result<()> {
    let ps = people(21, 1, 0.02);
    let bt = batch(&ps);
    let mut rng = StdRng::seed_from_u64(5);
    let wj = Tensor::from_vec(
        (0..72)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect::<Vec<f64>>(),
        (1, 24, 3),
        &Device::Cpu,
    )?;
    let wr = Tensor::from_vec(
        (0..216)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect::<Vec<f64>>(),
        (1, 24, 3, 3),
        &Device::Cpu,
    )?;
    let opts = BatchIkolOptions {
        jacobian: mode,
        ..opts
    };
    let vars = [
        Var::from_tensor(&bt.targets)?,
        Var::from_tensor(&bt.twist)?,
        Var::from_tensor(&bt.rest)?,
        Var::from_tensor(&bt.leaf)?,
    ];
    let input = BatchInput {
        targets: vars[0].as_tensor(),
        twist: vars[1].as_tensor(),
        rest: vars[2].as_tensor(),
        leaf_rotations: Some(vars[3].as_tensor()),
    };
    let (sol, jacobians) = run(&input, &opts, None, None)?;
    let jacobians: Vec<Tensor> = jacobians.iter().map(Tensor::detach).collect();
    let grads = loss_of(&sol, &wj, &wr)?.backward()?;
    // The function autograd differentiates: with a detached Jacobian, J is frozen at its values.
    let eval = |t: &[Tensor]| -> Result<f64> {
        let input = BatchInput {
            targets: &t[0],
            twist: &t[1],
            rest: &t[2],
            leaf_rotations: Some(&t[3]),
        };
        let fixed = (mode == JacobianMode::Detached).then_some(&jacobians[..]);
        let (sol, _) = run(&input, &opts, None, fixed)?;
        loss_of(&sol, &wj, &wr)?.to_scalar::<f64>()
    };
    let base: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().detach()).collect();
    for (which, name) in ["targets", "twist", "rest", "leaf"].iter().enumerate() {
        let g = grads
            .get(vars[which].as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let x0 = base[which].flatten_all()?.to_vec1::<f64>()?;
        let shape = base[which].shape().clone();
        // A sample of coordinates keeps the test fast.
        let mut idx: Vec<usize> = (0..x0.len()).collect();
        for i in 0..idx.len() {
            idx.swap(i, rng.random_range(i..x0.len()));
        }
        let mut max_g = 0.0f64;
        for &i in idx.iter().take(8) {
            let central = |h: f64| -> Result<f64> {
                let mut plus = x0.clone();
                let mut minus = x0.clone();
                plus[i] += h;
                minus[i] -= h;
                let mut tp = base.clone();
                tp[which] = Tensor::from_vec(plus, &shape, &Device::Cpu)?;
                let mut tm = base.clone();
                tm[which] = Tensor::from_vec(minus, &shape, &Device::Cpu)?;
                Ok((eval(&tp)? - eval(&tm)?) / (2.0 * h))
            };
            // Richardson extrapolation of central differences: the swing axis has curvature
            // ~1/|r x t|^2, large for nearly parallel bones, which plain central differences
            // at h = 1e-6 do not resolve to 1e-6.
            let h = 1e-6;
            let fd = (4.0 * central(h / 2.0)? - central(h)?) / 3.0;
            max_g = max_g.max(g[i].abs());
            assert!(
                (fd - g[i]).abs() <= 1e-6 * g[i].abs().max(1.0),
                "{mode:?} {name}[{i}]: autograd {} vs fd {fd}",
                g[i]
            );
        }
        assert!(max_g > 1e-6, "{name}: gradients should not all vanish");
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences_differentiated_jacobian() -> Result<()> {
    check_gradients(JacobianMode::Differentiated, BatchIkolOptions::default())?;
    check_gradients(
        JacobianMode::Differentiated,
        BatchIkolOptions {
            root: RootMethod::SpineThenHips,
            spine3: Spine3Method::SwingToNeck,
            ..BatchIkolOptions::default()
        },
    )
}

#[test]
fn gradients_match_finite_differences_detached_jacobian() -> Result<()> {
    check_gradients(JacobianMode::Detached, BatchIkolOptions::default())?;
    check_gradients(
        JacobianMode::Detached,
        BatchIkolOptions {
            root: RootMethod::SpineThenHips,
            spine3: Spine3Method::SwingToNeck,
            ..BatchIkolOptions::default()
        },
    )
}

#[test]
fn bad_shapes_are_errors() -> Result<()> {
    let bt = batch(&people(1, 2, 0.0));
    let short = bt.twist.narrow(1, 0, 22)?;
    let input = BatchInput {
        twist: &short,
        ..bt.input()
    };
    assert!(ikol_batch(&input, &BatchIkolOptions::default(), None).is_err());
    let bad = BatchIkolOptions {
        damping: -1.0,
        ..BatchIkolOptions::default()
    };
    assert!(ikol_batch(&bt.input(), &bad, None).is_err());
    Ok(())
}

#[test]
fn detached_root_target_changes_only_the_gradient() -> Result<()> {
    let bt = batch(&people(2, 2, 0.02));
    let mut out = Vec::new();
    for detach_root_target in [false, true] {
        let v = Var::from_tensor(&bt.targets)?;
        let input = BatchInput {
            targets: v.as_tensor(),
            ..bt.input()
        };
        let opts = BatchIkolOptions {
            detach_root_target,
            ..BatchIkolOptions::default()
        };
        let sol = ikol_batch(&input, &opts, None)?;
        let grads = sol.local_rotations.sum_all()?.backward()?;
        let g = grads.get(v.as_tensor()).expect("gradient").flatten_all()?;
        out.push((
            sol.joints.flatten_all()?.to_vec1::<f64>()?,
            g.to_vec1::<f64>()?,
        ));
    }
    assert_eq!(out[0].0, out[1].0, "same values");
    let diff = out[0]
        .1
        .iter()
        .zip(&out[1].1)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
    assert!(diff > 1e-6, "the root's gradient path is cut");
    Ok(())
}
