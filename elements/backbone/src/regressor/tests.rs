use super::*;
use candle_core::{Device, Var};
use candle_nn::VarMap;

const NB: usize = 3;

/// A small HKMR or flat head in f64 over 6 feature channels.
fn head(kind: RegressorKind, outer: usize, inner: usize) -> (VarMap, Regressor) {
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

/// A scalar of every step's outputs with fixed, uneven weights.
fn objective(steps: &[RegressorStep]) -> Tensor {
    let mut total = Tensor::zeros((), DType::F64, &Device::Cpu).unwrap();
    for (k, s) in steps.iter().enumerate() {
        for (t, w) in [(&s.theta, 1.0), (&s.beta, 0.7), (&s.cam, 1.3)] {
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
    // One outer iteration: within it the root chain runs first and the others read its output.
    let (varmap, r) = head(RegressorKind::Hkmr, 1, 2);
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
        let (varmap, r) = head(RegressorKind::Hkmr, 1, 2);
        let before = theta_rows(&r);
        nudge(&varmap, &format!("chains.{name}.fwd.0.bias"));
        let mut changed = changed_joints(&before, &theta_rows(&r));
        changed.sort_unstable();
        let mut own = joints.to_vec();
        own.sort_unstable();
        assert_eq!(changed, own, "{name}: only its own joints move");
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
