//! Training mode is real: BatchNorm uses batch statistics and updates its running statistics,
//! dropout is active, gradients reach the stem through the max-pool, and a few optimiser steps
//! reduce a loss.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use ikol_backbone::weights::trainable_vars;
use ikol_backbone::{Config, HeatmapNet, Variant};

fn images(n: usize, size: usize, seed: u64) -> Result<Tensor> {
    let mut s = seed;
    let v: Vec<f32> = (0..n * 3 * size * size)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Ok(Tensor::from_vec(v, (n, 3, size, size), &Device::Cpu)?)
}

fn var(varmap: &VarMap, name: &str) -> Tensor {
    varmap.data().lock().expect("lock")[name]
        .as_tensor()
        .clone()
}

#[test]
fn train_flag_batch_norm_and_dropout() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = Config::tiny(Variant::Ikol24);
    let varmap = VarMap::new();
    let net = HeatmapNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let x = images(2, cfg.input_size, 1)?;

    let rm0 = var(&varmap, "preact.bn1.running_mean").to_vec1::<f32>()?;
    let rv0 = var(&varmap, "deconv_layers.4.running_var").to_vec1::<f32>()?;
    assert!(rm0.iter().all(|&v| v == 0.0) && rv0.iter().all(|&v| v == 1.0));

    // Evaluation does not touch the running statistics and is deterministic.
    let e1 = net.forward_t(&x, false)?;
    let e2 = net.forward_t(&x, false)?;
    assert_eq!(
        var(&varmap, "preact.bn1.running_mean").to_vec1::<f32>()?,
        rm0
    );
    assert_eq!(e1.beta.to_vec2::<f32>()?, e2.beta.to_vec2::<f32>()?);

    // Training updates them (momentum 0.1) ...
    let t1 = net.forward_t(&x, true)?;
    let rm1 = var(&varmap, "preact.bn1.running_mean").to_vec1::<f32>()?;
    let rv1 = var(&varmap, "deconv_layers.4.running_var").to_vec1::<f32>()?;
    assert!(rm1.iter().zip(&rm0).any(|(a, b)| a != b));
    assert!(rv1.iter().zip(&rv0).any(|(a, b)| a != b));
    // ... normalises with batch statistics (different heatmaps from evaluation) ...
    let du = (&t1.uvd - &e1.uvd)?
        .abs()?
        .max_keepdim(0)?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(du > 0.0);
    // ... and drops out: two training passes differ in the FC branch.
    let t2 = net.forward_t(&x, true)?;
    assert_ne!(t1.beta.to_vec2::<f32>()?, t2.beta.to_vec2::<f32>()?);
    Ok(())
}

#[test]
fn a_few_steps_reduce_the_loss() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = Config {
        dropout: 0.0, // deterministic training-mode loss
        ..Config::tiny(Variant::Ikol24)
    };
    let varmap = VarMap::new();
    let net = HeatmapNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let x = images(4, cfg.input_size, 2)?;
    let target_uvd = (images(1, 12, 3)?
        .flatten_all()?
        .narrow(0, 0, 4 * 24 * 3)?
        .reshape((4, 24, 3))?
        * 0.3)?;
    let target_beta = Tensor::ones((4, 10), DType::F32, &dev)?;

    let vars = trainable_vars(&varmap);
    assert!(!vars.is_empty());
    let n_all = varmap.all_vars().len();
    // Running statistics (2 per BatchNorm) and init_shape are not optimised.
    assert!(vars.len() < n_all);
    let mut opt = candle_nn::AdamW::new(
        vars,
        ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let loss_of = |o: &ikol_backbone::NetOutput| -> candle_core::Result<Tensor> {
        // L1 on uvd in heatmap cells (as upstream) plus MSE on beta.
        let l_uvd = ((&o.uvd - &target_uvd)?.abs()?.mean_all()? * cfg.heatmap_size() as f64)?;
        let l_beta = (&o.beta - &target_beta)?.sqr()?.mean_all()?;
        l_uvd + l_beta
    };
    let mut first = None;
    let mut last = 0.0;
    // candle cannot seed its CPU initialiser, so the start varies run to run: 40 steps leave a
    // wide margin over the 0.7 ratio (15 steps did not always).
    for step in 0..40 {
        let o = net.forward_t(&x, true)?;
        let loss = loss_of(&o)?;
        let l = loss.to_scalar::<f32>()?;
        if step == 0 {
            // The gradient reaches the stem convolution through the 3x3/2 max-pool.
            let g = loss.backward()?;
            let stem = var(&varmap, "preact.conv1.weight");
            let gs = g
                .get(&stem)
                .expect("stem gradient")
                .abs()?
                .sum_all()?
                .to_scalar::<f32>()?;
            assert!(gs > 0.0);
        }
        first.get_or_insert(l);
        last = l;
        opt.backward_step(&loss)?;
    }
    let first = first.expect("ran");
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    Ok(())
}

#[test]
fn inference_kernels_match_the_differentiable_path() -> Result<()> {
    // Tracked weights (VarMap) take the allocating, differentiable path; the same weights as
    // plain tensors take the in-place / chunked inference path. Outputs must agree.
    let dev = Device::Cpu;
    let cfg = Config::tiny(Variant::Hybrik29);
    let varmap = VarMap::new();
    let tracked = HeatmapNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    // Make BatchNorm statistics non-trivial first (a training pass updates them).
    let x = images(2, cfg.input_size, 5)?;
    tracked.forward_t(&x, true)?;
    let plain: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let untracked = HeatmapNet::new(&cfg, VarBuilder::from_tensors(plain, DType::F32, &dev))?;
    let a = tracked.forward_t(&x, false)?;
    let b = untracked.forward_t(&x, false)?;
    let diff = |p: &Tensor, q: &Tensor| -> Result<f32> {
        Ok((p - q)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
    };
    assert!(diff(&a.uvd, &b.uvd)? < 1e-6);
    assert!(diff(&a.beta, &b.beta)? < 1e-6);
    // Evaluation mode with tracked weights still has gradients (frozen-BatchNorm fine-tuning):
    // through the FC branch, the fused BatchNorm + residual + ReLU ops of the ResNet body.
    let g = a.beta.sum_all()?.backward()?;
    for name in [
        "preact.bn1.weight",
        "preact.layer4.1.bn2.bias",
        "preact.conv1.weight",
    ] {
        let w = var(&varmap, name);
        let norm = g
            .get(&w)
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .abs()?
            .sum_all()?
            .to_scalar::<f32>()?;
        assert!(norm > 1e-6, "{name}: |grad| = {norm}");
    }
    Ok(())
}
