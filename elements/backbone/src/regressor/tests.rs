use super::*;
use candle_core::{Device, Var};
use candle_nn::VarMap;

const NB: usize = 3;

/// A small HKMR or flat head in f64 over 6 feature channels.
fn head(kind: RegressorKind, outer: usize, inner: usize) -> (VarMap, Regressor) {
    head_in(kind, outer, inner, RotationRepr::AxisAngle)
}

/// [`head`] with a rotation parameterisation.
fn head_in(
    kind: RegressorKind,
    outer: usize,
    inner: usize,
    rotation: RotationRepr,
) -> (VarMap, Regressor) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let cfg = RegressorConfig {
        kind,
        feature_dim: 6,
        num_betas: NB,
        hidden: 5,
        outer,
        inner,
        dropout: 0.0,
        rotation,
    };
    let r = Regressor::new(&cfg, vb).unwrap();
    // Output layers start near zero (HMR's gain 0.01); make every layer matter for the checks.
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let t = var.as_tensor();
        let seed = name
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let v: Vec<f64> = (0..t.elem_count())
            .map(|i| {
                let x = ((seed.wrapping_add(i as u64 * 2654435761) % 1000) as f64) / 1000.0;
                (x - 0.5) * 0.8
            })
            .collect();
        var.set(&Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    (varmap, r)
}

fn features(n: usize) -> Tensor {
    let v: Vec<f64> = (0..n * 6)
        .map(|i| ((i * 7 % 11) as f64 - 5.0) * 0.1)
        .collect();
    Tensor::from_vec(v, (n, 6), &Device::Cpu).unwrap()
}

/// A scalar of every step's outputs (its parameters and its rotation matrices) with fixed,
/// uneven weights.
fn objective(steps: &[RegressorStep]) -> Tensor {
    let mut total = Tensor::zeros((), DType::F64, &Device::Cpu).unwrap();
    for (k, s) in steps.iter().enumerate() {
        let rotations = s.rotations().unwrap();
        for (t, w) in [
            (&s.theta, 1.0),
            (&rotations, 0.9),
            (&s.beta, 0.7),
            (&s.cam, 1.3),
        ] {
            let n = t.elem_count();
            let wv: Vec<f64> = (0..n)
                .map(|i| w * (((i * 13 + k * 5) % 17) as f64 / 17.0 - 0.4))
                .collect();
            let wt = Tensor::from_vec(wv, t.shape(), &Device::Cpu).unwrap();
            total = (total + (t * wt).unwrap().sum_all().unwrap()).unwrap();
        }
    }
    total
}

fn var(varmap: &VarMap, name: &str) -> Var {
    varmap
        .data()
        .lock()
        .unwrap()
        .get(name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .clone()
}

/// Autograd gradient of `objective` w.r.t. parameter `name` vs central finite differences at a
/// few entries.
fn check_parameter(varmap: &VarMap, r: &Regressor, name: &str) {
    let x = features(2);
    let v = var(varmap, name);
    let grads = objective(&r.forward_t(&x, false).unwrap())
        .backward()
        .unwrap();
    let g = grads
        .get(v.as_tensor())
        .unwrap_or_else(|| panic!("no gradient reaches {name}"))
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let base = v
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let shape = v.as_tensor().shape().clone();
    let h = 1e-6;
    let mut checked = 0;
    for i in (0..base.len()).step_by((base.len() / 4).max(1)) {
        let eval = |d: f64| {
            let mut p = base.clone();
            p[i] += d;
            v.set(&Tensor::from_vec(p, shape.clone(), &Device::Cpu).unwrap())
                .unwrap();
            let f = objective(&r.forward_t(&x, false).unwrap())
                .to_scalar::<f64>()
                .unwrap();
            v.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap())
                .unwrap();
            f
        };
        let fd = (eval(h) - eval(-h)) / (2.0 * h);
        let tol = 1e-6 * (1.0 + fd.abs());
        assert!(
            (fd - g[i]).abs() < tol,
            "{name}[{i}]: autograd {} vs finite differences {fd}",
            g[i]
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn every_hkmr_chain_has_exact_gradients() {
    let (varmap, r) = head(RegressorKind::Hkmr, 2, 2);
    for (name, joints) in CHAINS {
        let k = joints.len() - 1;
        for p in [
            format!("chains.{name}.embed.0.weight"),
            format!("chains.{name}.embed.1.bias"),
            format!("chains.{name}.fwd.{k}.weight"),
            format!("chains.{name}.fwd.0.bias"),
            format!("chains.{name}.bwd.0.weight"),
        ] {
            check_parameter(&varmap, &r, &p);
        }
    }
    for p in ["shape.0.weight", "shape.2.weight", "camera.2.bias"] {
        check_parameter(&varmap, &r, p);
    }
}

#[test]
fn flat_regressor_has_exact_gradients() {
    let (varmap, r) = head(RegressorKind::Flat, 3, 0);
    for p in [
        "fc1.weight",
        "fc2.bias",
        "decpose.weight",
        "decshape.bias",
        "deccam.weight",
    ] {
        check_parameter(&varmap, &r, p);
    }
}

#[test]
fn six_d_heads_have_exact_gradients() {
    let (varmap, r) = head_in(RegressorKind::Hkmr, 2, 1, RotationRepr::SixD);
    for p in [
        "chains.root.embed.0.weight",
        "chains.left_arm.fwd.4.weight",
        "chains.head.bwd.1.bias",
        "camera.2.weight",
    ] {
        check_parameter(&varmap, &r, p);
    }
    let (varmap, r) = head_in(RegressorKind::Flat, 2, 0, RotationRepr::SixD);
    for p in ["fc1.weight", "decpose.weight", "decpose.bias"] {
        check_parameter(&varmap, &r, p);
    }
}

/// SPIN's `rot6d_to_rotmat` by hand (nalgebra): Gram-Schmidt on the 3x2 matrix's columns.
fn gram_schmidt(x: &[f64; 6]) -> nalgebra::Matrix3<f64> {
    let a1 = nalgebra::Vector3::new(x[0], x[2], x[4]);
    let a2 = nalgebra::Vector3::new(x[1], x[3], x[5]);
    let b1 = a1.normalize();
    let b2 = (a2 - b1 * b1.dot(&a2)).normalize();
    nalgebra::Matrix3::from_columns(&[b1, b2, b1.cross(&b2)])
}

#[test]
fn six_d_is_gram_schmidt_and_round_trips_rotations() {
    let cases = [
        [1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        [0.3, -1.2, 2.0, 0.4, -0.5, 0.9],
        [-0.2, 0.1, 0.05, 3.0, 1.5, -0.7],
    ];
    let flat: Vec<f64> = cases.iter().flatten().copied().collect();
    let got = rot6d_to_matrix(&Tensor::from_vec(flat, (3, 6), &Device::Cpu).unwrap())
        .unwrap()
        .to_vec3::<f64>()
        .unwrap();
    for (c, m) in cases.iter().zip(&got) {
        let want = gram_schmidt(c);
        for i in 0..3 {
            for j in 0..3 {
                assert!((m[i][j] - want[(i, j)]).abs() < 1e-12, "{c:?}");
            }
        }
    }
    // A rotation's first two columns give it back.
    let rot = nalgebra::Rotation3::from_scaled_axis(nalgebra::Vector3::new(0.4, -1.1, 2.0));
    let m = rot.matrix();
    let six = [
        m[(0, 0)],
        m[(0, 1)],
        m[(1, 0)],
        m[(1, 1)],
        m[(2, 0)],
        m[(2, 1)],
    ];
    let back =
        rot6d_to_matrix(&Tensor::from_vec(six.to_vec(), (1, 1, 6), &Device::Cpu).unwrap()).unwrap();
    assert_eq!(back.dims(), &[1, 1, 3, 3]);
    let back = back.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for (k, v) in back.iter().enumerate() {
        assert!((v - m[(k / 3, k % 3)]).abs() < 1e-12);
    }
    // Its gradient against central differences.
    let x = Var::from_tensor(&Tensor::from_vec(cases[1].to_vec(), (1, 6), &Device::Cpu).unwrap())
        .unwrap();
    let weights: Vec<f64> = (0..9).map(|k| (k as f64 * 0.37).sin()).collect();
    let f = |t: &Tensor| {
        let w = Tensor::from_vec(weights.clone(), (1, 3, 3), &Device::Cpu).unwrap();
        (rot6d_to_matrix(t).unwrap() * w)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let g = f(x.as_tensor()).backward().unwrap();
    let g = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
    let g = g.to_vec1::<f64>().unwrap();
    for i in 0..6 {
        let at = |d: f64| {
            let mut p = cases[1].to_vec();
            p[i] += d;
            f(&Tensor::from_vec(p, (1, 6), &Device::Cpu).unwrap())
                .to_scalar::<f64>()
                .unwrap()
        };
        let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
        assert!((fd - g[i]).abs() < 1e-7, "d/dx{i}: {} vs {fd}", g[i]);
    }
}

#[test]
fn gradients_reach_the_features() {
    for kind in [RegressorKind::Hkmr, RegressorKind::Flat] {
        let (_varmap, r) = head(kind, 2, 1);
        let base = features(1).flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let x = Var::from_tensor(&features(1)).unwrap();
        let grads = objective(&r.forward_t(x.as_tensor(), false).unwrap())
            .backward()
            .unwrap();
        let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        let g = g.to_vec1::<f64>().unwrap();
        let f = |p: &[f64]| {
            let t = Tensor::from_vec(p.to_vec(), (1, 6), &Device::Cpu).unwrap();
            objective(&r.forward_t(&t, false).unwrap())
                .to_scalar::<f64>()
                .unwrap()
        };
        for i in 0..6 {
            let (mut a, mut b) = (base.clone(), base.clone());
            a[i] += 1e-6;
            b[i] -= 1e-6;
            let fd = (f(&a) - f(&b)) / 2e-6;
            assert!(
                (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{kind:?} feature {i}"
            );
        }
    }
}

fn theta_rows(r: &Regressor) -> Vec<Vec<f64>> {
    let steps = r.forward_t(&features(1), false).unwrap();
    steps[0].theta.squeeze(0).unwrap().to_vec2::<f64>().unwrap()
}

fn changed_joints(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<usize> {
    (0..SMPL_JOINTS)
        .filter(|&j| a[j].iter().zip(&b[j]).any(|(x, y)| (x - y).abs() > 1e-12))
        .collect()
}

fn nudge(varmap: &VarMap, name: &str) {
    let v = var(varmap, name);
    v.set(&v.as_tensor().affine(1.0, 0.05).unwrap()).unwrap();
}

#[test]
fn the_root_chain_conditions_every_child_chain_and_not_the_reverse() {
    for rotation in [RotationRepr::AxisAngle, RotationRepr::SixD] {
        hierarchy(rotation);
    }
}

fn hierarchy(rotation: RotationRepr) {
    // One outer iteration: within it the root chain runs first and the others read its output.
    let (varmap, r) = head_in(RegressorKind::Hkmr, 1, 2, rotation);
    let before = theta_rows(&r);
    nudge(&varmap, "chains.root.fwd.0.bias");
    let after = theta_rows(&r);
    let changed = changed_joints(&before, &after);
    assert_eq!(
        changed,
        (0..SMPL_JOINTS).collect::<Vec<_>>(),
        "root change reaches all"
    );

    for (name, joints) in &CHAINS[1..] {
        let (varmap, r) = head_in(RegressorKind::Hkmr, 1, 2, rotation);
        let before = theta_rows(&r);
        nudge(&varmap, &format!("chains.{name}.fwd.0.bias"));
        let mut changed = changed_joints(&before, &theta_rows(&r));
        changed.sort_unstable();
        let mut own = joints.to_vec();
        own.sort_unstable();
        assert_eq!(
            changed, own,
            "{name} ({rotation:?}): only its own joints move"
        );
    }
}

#[test]
fn within_a_chain_the_forward_pass_runs_parent_to_child() {
    // Eq. 1: f_i reads the residuals predicted before it in the pass. With the backward
    // layers silenced, changing the ankle's f_2 moves the ankle and the foot after it, not the
    // hip or knee before it.
    let (varmap, r) = head(RegressorKind::Hkmr, 1, 1);
    for i in 0..4 {
        for part in ["weight", "bias"] {
            let v = var(&varmap, &format!("chains.left_leg.bwd.{i}.{part}"));
            v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
        }
    }
    let before = theta_rows(&r);
    nudge(&varmap, "chains.left_leg.fwd.2.bias");
    let changed = changed_joints(&before, &theta_rows(&r));
    // Left leg = [1 hip, 4 knee, 7 ankle, 10 foot]: f_2 is the ankle's; the foot reads it.
    assert_eq!(changed, vec![7, 10]);
}

#[test]
fn steps_start_upright_and_one_per_outer_iteration() {
    let (_varmap, r) = head(RegressorKind::Hkmr, 3, 1);
    let init = r.initial(2, DType::F64, &Device::Cpu).unwrap();
    let t = init.theta.to_vec3::<f64>().unwrap();
    assert_eq!(t[1][0], vec![std::f64::consts::PI, 0.0, 0.0]);
    assert_eq!(t[1][5], vec![0.0; 3]);
    assert_eq!(init.cam.to_vec2::<f64>().unwrap()[0], vec![0.9, 0.0, 0.0]);
    let steps = r.forward_t(&features(2), false).unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[2].theta.dims(), &[2, SMPL_JOINTS, 3]);
    assert_eq!(steps[2].beta.dims(), &[2, NB]);
    assert_eq!(steps[2].cam.dims(), &[2, 3]);
    // 6D: the same start as matrices (root diag(1, -1, -1), the rest the identity).
    let (_varmap, r6) = head_in(RegressorKind::Flat, 2, 0, RotationRepr::SixD);
    let init6 = r6.initial(2, DType::F64, &Device::Cpu).unwrap();
    assert_eq!(init6.theta.dims(), &[2, SMPL_JOINTS, 6]);
    let (m, m6) = (
        init.rotations().unwrap().flatten_all().unwrap(),
        init6.rotations().unwrap().flatten_all().unwrap(),
    );
    let d = (m - m6).unwrap().abs().unwrap().max(0).unwrap();
    assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
    assert_eq!(
        r6.forward_t(&features(2), false).unwrap()[1].theta.dims(),
        &[2, SMPL_JOINTS, 6]
    );
    // A start in the other parameterisation is refused.
    assert!(r6.forward_from(&features(2), init, false).is_err());
}

#[test]
fn axis_angle_matches_nalgebra_and_is_smooth_at_zero() {
    let cases = [
        [0.0, 0.0, 0.0],
        [1e-9, -2e-9, 0.0],
        [0.3, -0.2, 0.1],
        [std::f64::consts::PI, 0.0, 0.0],
        [-1.0, 2.0, 0.5],
    ];
    let flat: Vec<f64> = cases.iter().flatten().copied().collect();
    let w =
        Var::from_tensor(&Tensor::from_vec(flat, (cases.len(), 3), &Device::Cpu).unwrap()).unwrap();
    let r = axis_angle_to_matrix(w.as_tensor()).unwrap();
    let got = r.to_vec3::<f64>().unwrap();
    for (c, m) in cases.iter().zip(&got) {
        let expect = nalgebra::Rotation3::from_scaled_axis(nalgebra::Vector3::from(*c));
        for i in 0..3 {
            for j in 0..3 {
                assert!((m[i][j] - expect[(i, j)]).abs() < 1e-12, "{c:?}");
            }
        }
    }
    // d R / d w at w = 0 is [e_k]x: finite and exact.
    let g = r
        .narrow(0, 0, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gw = g.get(w.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
    for k in 0..3 {
        assert!(
            gw[0][k].abs() < 1e-9,
            "sum of [e_k]x entries is 0: {:?}",
            gw[0]
        );
    }
    assert!(gw.iter().flatten().all(|v| v.is_finite()));
}

#[test]
fn tiny_networks_run_on_crops() {
    for kind in [RegressorKind::Hkmr, RegressorKind::Flat] {
        let cfg = RegressorNetConfig::tiny(kind);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = RegressorNet::new(&cfg, vb).unwrap();
        let x = Tensor::zeros((2, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let steps = net.forward_t(&x, true).unwrap();
        assert_eq!(steps.len(), cfg.head.outer);
        assert!(
            steps[1]
                .theta
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|v| v.is_finite())
        );
    }
    let mut bad = RegressorNetConfig::tiny(RegressorKind::Hkmr);
    bad.head.feature_dim += 1;
    assert!(bad.validate().is_err());
}
