//! The training loop: overfitting, exact resume, checkpoints the backbone loads.

use candle_core::Device;
use ikol_backbone::{Backbone, Variant};
use ikol_train::config::{DataConfig, TrainConfig};
use ikol_train::train::Trainer;

fn config(solver: bool, out: &str) -> TrainConfig {
    let mut c = TrainConfig {
        data: DataConfig::Synthetic { count: 8, seed: 3 },
        batch_size: 8,
        steps: 10,
        eval_every: 0,
        eval_count: 0,
        checkpoint_every: 0,
        seed: 11,
        out_dir: std::env::temp_dir().join(format!("ikol-train-{out}-{}", std::process::id())),
        ..TrainConfig::default()
    };
    c.solver.enabled = solver;
    c.optim.lr = 1e-2;
    c
}

/// A tiny network on 8 synthetic samples: the training loss falls 10x (seeded, deterministic).
#[test]
fn overfits_eight_samples() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut tr = Trainer::new(config(false, "overfit"), &dev)?;
    let first = tr.train_step()?;
    let mut best = first.losses.total;
    let t0 = std::time::Instant::now();
    let mut steps = 1;
    while steps < 300 && best > first.losses.total / 10.0 {
        let r = tr.train_step()?;
        assert!(!r.skipped);
        best = best.min(r.losses.total);
        steps += 1;
        if steps % 20 == 0 {
            eprintln!("step {steps}: {:?}", r.losses);
        }
    }
    eprintln!(
        "loss {} -> {best} in {steps} steps ({:.1} ms/step)",
        first.losses.total,
        1e3 * t0.elapsed().as_secs_f64() / steps as f64
    );
    assert!(best <= first.losses.total / 10.0);
    Ok(())
}

/// Two steps, checkpoint, two more steps equal a fresh trainer resumed from the checkpoint
/// running the same two steps, bit for bit (weights, moments, step and batch order restored).
#[test]
fn resume_reproduces_losses_exactly() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut cfg = config(true, "resume");
    cfg.batch_size = 3;
    cfg.optim.clip_grad_norm = Some(5.0);
    cfg.optim.milestones = vec![3];
    let mut a = Trainer::new(cfg.clone(), &dev)?;
    for _ in 0..2 {
        a.train_step()?;
    }
    let ckpt = a.save_checkpoint(&cfg.out_dir)?;
    let cont: Vec<f64> = (0..2)
        .map(|_| Ok(a.train_step()?.losses.total))
        .collect::<anyhow::Result<_>>()?;
    let mut b = Trainer::resume(&ckpt, None, &dev)?;
    assert_eq!(b.step(), 2);
    let resumed: Vec<f64> = (0..2)
        .map(|_| Ok(b.train_step()?.losses.total))
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(cont, resumed);
    // The checkpoint is an ordinary backbone file.
    let bb = Backbone::load(&ckpt, Variant::Ikol24, &dev)?;
    assert_eq!(bb.config(), &cfg.net);
    let x = candle_core::Tensor::zeros((1, 3, 64, 64), candle_core::DType::F32, &dev)?;
    let out = bb.infer(&x)?;
    assert_eq!(out.len(), 1);
    std::fs::remove_dir_all(&cfg.out_dir)?;
    Ok(())
}

/// `cfg` run for 2 steps of 2 samples, evaluated (3 samples) at step 2, a checkpoint every
/// step: the config run, its trainer and `eval.csv`.
fn short_run(mut cfg: TrainConfig, dev: &Device) -> anyhow::Result<(TrainConfig, Trainer, String)> {
    cfg.steps = 2;
    cfg.batch_size = 2;
    cfg.eval_every = 2;
    cfg.eval_count = 3;
    cfg.checkpoint_every = 1;
    let mut tr = Trainer::new(cfg.clone(), dev)?;
    tr.run(false)?;
    let evals = std::fs::read_to_string(cfg.out_dir.join("eval.csv"))?;
    Ok((cfg, tr, evals))
}

/// MPJPE (second column) of the first evaluation row of `eval.csv`.
fn eval_mpjpe(evals: &str) -> anyhow::Result<f64> {
    let last = evals.lines().nth(1).unwrap_or_default();
    Ok(last.split(',').nth(1).unwrap_or("nan").parse()?)
}

/// The whole loop writes metrics, evaluations and a final checkpoint.
#[test]
fn run_writes_metrics_and_checkpoints() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let (cfg, _, evals) = short_run(config(true, "run"), &dev)?;
    let metrics = std::fs::read_to_string(cfg.out_dir.join("metrics.csv"))?;
    assert_eq!(metrics.lines().count(), 3);
    assert_eq!(evals.lines().count(), 2);
    let mpjpe = eval_mpjpe(&evals)?;
    assert!(mpjpe.is_finite() && mpjpe > 0.0);
    assert!(cfg.out_dir.join("checkpoint-0000001.safetensors").exists());
    assert!(
        cfg.out_dir
            .join("checkpoint-0000002.state.safetensors")
            .exists()
    );
    std::fs::remove_dir_all(&cfg.out_dir)?;
    Ok(())
}

/// `precision: f64`: training, evaluation and resume run in f64; the checkpoint is the ordinary
/// f32 backbone file, and its network gives the f64 run's outputs to f32 rounding.
#[test]
fn f64_runs_evaluate_and_write_f32_checkpoints() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut cfg = config(true, "f64");
    cfg.precision = ikol_train::config::Precision::F64;
    let (cfg, tr, evals) = short_run(cfg, &dev)?;
    let mpjpe = eval_mpjpe(&evals)?;
    assert!(mpjpe.is_finite() && mpjpe > 0.0, "{evals}");
    let ckpt = cfg.out_dir.join("checkpoint-0000002.safetensors");
    let st = candle_core::safetensors::load(&ckpt, &dev)?;
    assert!(st.values().all(|t| t.dtype() == candle_core::DType::F32));
    let bb = Backbone::load(&ckpt, Variant::Ikol24, &dev)?;
    let x = candle_core::Tensor::rand(0f32, 1.0, (1, 3, 64, 64), &dev)?;
    let want = tr
        .net()
        .ok_or_else(|| anyhow::anyhow!("no heatmap net"))?
        .forward_t(&x.to_dtype(candle_core::DType::F64)?, false)?
        .uvd;
    let got = bb
        .net()
        .forward_t(&x, false)?
        .uvd
        .to_dtype(candle_core::DType::F64)?;
    let d = (want - got)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    assert!(d < 1e-4, "f32 checkpoint vs f64 network: {d}");
    // Resume continues in f64.
    let mut again = Trainer::resume(&ckpt, None, &dev)?;
    assert_eq!(again.step(), 2);
    assert!(again.train_step()?.losses.total.is_finite());
    std::fs::remove_dir_all(&cfg.out_dir)?;
    Ok(())
}

/// Targets with a NaN: the NaN guard skips the batch, reports it and leaves the weights alone.
#[test]
fn nan_guard_skips_the_batch() -> anyhow::Result<()> {
    use ikol_train::data::{Dataset, Sample, SynthDataset, SynthOptions};

    #[derive(Debug)]
    struct Poisoned(SynthDataset);
    impl Dataset for Poisoned {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn input_size(&self) -> usize {
            self.0.input_size()
        }
        fn get(&self, index: usize) -> anyhow::Result<Sample> {
            let mut s = self.0.get(index)?;
            s.beta[0] = f32::NAN;
            Ok(s)
        }
    }
    let dev = Device::Cpu;
    let cfg = config(false, "nan");
    let ds = SynthDataset::new(
        SynthOptions::new(64, 10, ikol_train::config::BodyChoice::Small),
        1,
        4,
    )?;
    let mut tr = Trainer::with_dataset(cfg, Box::new(Poisoned(ds)), &dev)?;
    let before = tr.net().unwrap().forward_t(
        &candle_core::Tensor::ones((1, 3, 64, 64), candle_core::DType::F32, &dev)?,
        false,
    )?;
    let r = tr.train_step()?;
    assert!(r.skipped);
    assert_eq!((tr.step(), tr.skipped()), (1, 1));
    let after = tr.net().unwrap().forward_t(
        &candle_core::Tensor::ones((1, 3, 64, 64), candle_core::DType::F32, &dev)?,
        false,
    )?;
    let diff = before
        .beta
        .sub(&after.beta)?
        .abs()?
        .sum_all()?
        .to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    Ok(())
}

/// The heatmap network's losses with per-sample 3D weights: all ones give the unweighted losses;
/// a sample of weight 0 (labels hidden) no longer feels its 3D labels (joints, rotations,
/// shape, twist, depth) but still its 2D keypoints (u, v of L_uvd).
#[test]
fn hidden_samples_keep_only_their_2d_keypoints() -> anyhow::Result<()> {
    use candle_core::Tensor;
    use ikol_train::data::Batch;
    use ikol_train::loss::{RestBasis, Targets3d, compute_losses, heatmap_solution};
    let dev = Device::Cpu;
    let mut cfg = config(true, "hidden");
    cfg.batch_size = 4;
    let tr = Trainer::new(cfg.clone(), &dev)?;
    let net = tr.net().expect("heatmap network");
    let ds = ikol_train::data::SynthDataset::new(
        ikol_train::data::SynthOptions::new(cfg.net.input_size, cfg.net.num_betas, cfg.body),
        3,
        4,
    )?;
    let batch = Batch::gather(&ds, &[0, 1, 2, 3], &dev)?;
    let out = net.forward_t(&batch.images, false)?;
    let body = cfg.body.load()?;
    let basis = RestBasis::new(&body, cfg.net.num_betas, candle_core::DType::F32, &dev)?;
    let sol = heatmap_solution(
        &out,
        &batch,
        cfg.net.input_size,
        &basis,
        &cfg.solver.options(),
    )?;
    let losses = |t: Option<Targets3d<'_>>, b: &Batch| -> anyhow::Result<[f64; 6]> {
        let v = compute_losses(&out, b, &cfg.loss, cfg.net.input_size, Some(&sol), t)?.values()?;
        Ok([v.total, v.beta, v.twist, v.uvd, v.opt, v.theta])
    };
    let plain = losses(None, &batch)?;
    let ones = Tensor::ones(4, candle_core::DType::F32, &dev)?;
    fn t<'a>(w: &'a Tensor, b: &'a Batch) -> Targets3d<'a> {
        Targets3d {
            joints: &b.joints,
            rotations: &b.rotations,
            beta: &b.beta,
            twist: &b.twist,
            weight: w,
        }
    }
    let weighted = losses(Some(t(&ones, &batch)), &batch)?;
    for (a, b) in plain.iter().zip(&weighted) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1e-3),
            "{plain:?} vs {weighted:?}"
        );
    }
    // Sample 2 hidden: moving its 3D labels changes nothing, moving its 2D keypoints does.
    let w = Tensor::new(&[1f32, 1.0, 0.0, 1.0], &dev)?;
    let hidden = losses(Some(t(&w, &batch)), &batch)?;
    let bump = |x: &Tensor, what: &str| -> anyhow::Result<Tensor> {
        let mut rows = x.flatten_from(1)?.to_vec2::<f32>()?;
        for (k, v) in rows[2].iter_mut().enumerate() {
            *v += if what == "uv" && k % 3 == 2 {
                0.0
            } else {
                0.05
            };
        }
        Ok(Tensor::new(rows, &dev)?.reshape(x.shape())?)
    };
    let mut moved3d = batch.clone();
    moved3d.joints = bump(&batch.joints, "3d")?;
    moved3d.rotations = bump(&batch.rotations, "3d")?;
    moved3d.beta = bump(&batch.beta, "3d")?;
    moved3d.twist = bump(&batch.twist, "3d")?;
    let uvd = batch.uvd.to_vec3::<f32>()?;
    let mut d = uvd.clone();
    for j in &mut d[2] {
        j[2] += 0.05;
    }
    moved3d.uvd = Tensor::new(d, &dev)?;
    assert_eq!(losses(Some(t(&w, &moved3d)), &moved3d)?, hidden);
    let mut moved2d = batch.clone();
    moved2d.uvd = bump(&batch.uvd, "uv")?;
    let l2 = losses(Some(t(&w, &moved2d)), &moved2d)?;
    assert!(l2[3] != hidden[3], "L_uvd ignores the hidden sample's u, v");
    // With the weights on, sample 2's labels count again.
    assert!(losses(Some(t(&ones, &moved3d)), &moved3d)? != weighted);
    Ok(())
}

/// With only L_opt weighted, one step moves the heatmap head and the twist and shape heads (the
/// loss reaches those inputs of the IKOL layer through the unrolled solver); the leaf quaternions
/// do not move any of the 24 joints, so only the rotation loss L_theta trains `decleaf`.
#[test]
fn solver_losses_train_the_heads() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let moved = |opt: f64, theta: f64| -> anyhow::Result<Vec<(String, bool)>> {
        let mut cfg = config(true, "lopt");
        cfg.batch_size = 2;
        cfg.loss = ikol_train::config::LossWeights {
            beta: 0.0,
            twist: 0.0,
            uvd: 0.0,
            theta,
            opt,
            ..Default::default()
        };
        cfg.solver.jacobian = ikol_train::config::JacobianChoice::Differentiated;
        let mut tr = Trainer::new(cfg, &dev)?;
        let snapshot = |tr: &Trainer| -> anyhow::Result<Vec<(String, Vec<f32>)>> {
            let data = tr
                .varmap()
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("lock"))?;
            let mut v: Vec<(String, Vec<f32>)> = data
                .iter()
                .filter(|(k, _)| {
                    ["final_layer.", "decphi.", "decshape.", "decleaf."]
                        .iter()
                        .any(|p| k.starts_with(p))
                })
                .map(|(k, v)| Ok((k.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
                .collect::<anyhow::Result<_>>()?;
            v.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(v)
        };
        let before = snapshot(&tr)?;
        let r = tr.train_step()?;
        assert!(!r.skipped && r.losses.opt > 0.0);
        let after = snapshot(&tr)?;
        Ok(before
            .into_iter()
            .zip(after)
            .map(|((k, a), (_, b))| (k, a != b))
            .collect())
    };
    let opt_only = moved(1.0, 0.0)?;
    assert_eq!(opt_only.len(), 8, "{opt_only:?}");
    for (k, m) in &opt_only {
        assert_eq!(*m, !k.starts_with("decleaf"), "{k} (L_opt only)");
    }
    let theta_only = moved(0.0, 1.0)?;
    for (k, m) in &theta_only {
        assert!(*m, "{k} did not move (L_theta only)");
    }
    Ok(())
}
