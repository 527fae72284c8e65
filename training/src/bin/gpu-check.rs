//! `gpu-check` (run by `make gpu-check`): the GPU path measured against the CPU in one run, a
//! pass/fail line per check, the figures in a JSON file.
//!
//! 1. backbone forward parity: the full-size ResNet-34 ikol24 network (256 px, seeded random
//!    weights), CUDA vs CPU, evaluation mode, largest |difference| of uvd, twist and shape;
//! 2. the batched IKOL layer (GN-Diff, 5 iterations, the Jacobian differentiated): forward joints
//!    and the gradients w.r.t. the targets and twists, CUDA vs CPU;
//! 3. training on the GPU (`--steps`, the full-size network through the IKOL layer on synthetic
//!    samples): the loss falls (mean of the last tenth below the first tenth);
//! 4. training images per second, GPU vs CPU (a few CPU steps of the same config);
//! 5. the demo chain (`ikol run pipelines/video-to-overlay.pipeline`, the heatmap network with
//!    the random checkpoint, `METHOD=ikol`, on the demo clip) with `DEVICE=cuda` vs `DEVICE=cpu`,
//!    frames per second of the whole command;
//! 6. NCCL (a build with `nccl`): the communicator on this GPU in a group of one, its
//!    all-reduce, two training steps through it;
//! 7. peak GPU memory in use (sampled after every stage and every 10 training steps).
//!
//! Without a usable CUDA device (a build without `cuda`, no driver, no GPU) the GPU lines are
//! SKIP with the reason and the CPU parts still run; the exit status is 1 only when a check fails.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use clap::Parser;
use ikol_backbone::{Config, DeviceChoice, HeatmapNet, Variant, open_device};
use ikol_solver::batch::{BatchIkolOptions, BatchInput, JacobianMode, ikol_batch};
use ikol_train::config::{DataConfig, TrainConfig};
use ikol_train::data::{Batch, SynthDataset, SynthOptions};
use ikol_train::loss::RestBasis;
use ikol_train::train::{Trainer, seeded_var_builder};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "gpu-check",
    about = "The GPU path against the CPU: parity, training, speed"
)]
struct Args {
    /// The JSON report.
    #[arg(long, default_value = "out/gpu-check.json")]
    out: PathBuf,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    gpu: usize,
    /// Training steps on the GPU.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Training steps on the CPU for the images/s ratio.
    #[arg(long, default_value_t = 3)]
    cpu_steps: usize,
    /// Training batch (full-size network, 256 px).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// The `ikol` command for the chain (built with `--features cuda`).
    #[arg(long, default_value = "target/release/ikol")]
    ikol: PathBuf,
    /// The demo clip (pose2sim cam01; `make media`).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Only the quick checks (no training, no chain): for a machine without a GPU.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Pass,
    Fail,
    Skip,
}

struct Report {
    lines: Vec<(String, Status, String, Value)>,
    peak_bytes: usize,
}

impl Report {
    fn add(&mut self, name: &str, status: Status, detail: String, figures: Value) {
        let tag = match status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        println!("{tag:4}  {name:34} {detail}");
        self.lines.push((name.to_string(), status, detail, figures));
    }

    /// Records the GPU memory in use now (total - free of the device).
    fn sample_memory(&mut self, dev: &Device) {
        if let Some(used) = gpu_memory_in_use(dev) {
            self.peak_bytes = self.peak_bytes.max(used);
        }
    }
}

#[cfg(feature = "cuda")]
fn gpu_memory_in_use(dev: &Device) -> Option<usize> {
    let Device::Cuda(d) = dev else { return None };
    let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
    Some(total - free)
}

#[cfg(not(feature = "cuda"))]
fn gpu_memory_in_use(_: &Device) -> Option<usize> {
    None
}

#[cfg(feature = "cuda")]
fn gpu_name(dev: &Device) -> String {
    match dev {
        Device::Cuda(d) => d.cuda_stream().context().name().unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(not(feature = "cuda"))]
fn gpu_name(_: &Device) -> String {
    String::new()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

fn max_abs(a: &Tensor) -> anyhow::Result<f64> {
    Ok(a.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?)
}

/// The full-size network with seeded weights on `dev` (the same weights on every device).
fn full_size_net(dev: &Device) -> anyhow::Result<(HeatmapNet, VarMap, Config)> {
    let cfg = Config::upstream(Variant::Ikol24);
    let varmap = VarMap::new();
    let net = HeatmapNet::new(&cfg, seeded_var_builder(&varmap, 7, DType::F32, dev))?;
    Ok((net, varmap, cfg))
}

fn backbone_parity(r: &mut Report, gpu: Option<&Device>) -> anyhow::Result<()> {
    let (cpu_net, _, cfg) = full_size_net(&Device::Cpu)?;
    let s = cfg.input_size;
    let x = Tensor::rand(-1f32, 1.0, (2, 3, s, s), &Device::Cpu)?;
    let t0 = Instant::now();
    let a = cpu_net.forward_t(&x, false)?;
    let cpu_ms = 1e3 * t0.elapsed().as_secs_f64() / 2.0;
    let Some(dev) = gpu else {
        r.add(
            "backbone forward parity",
            Status::Skip,
            format!("no CUDA device (CPU forward {cpu_ms:.0} ms per 256 px crop)"),
            json!({"cpu_ms_per_crop": cpu_ms}),
        );
        return Ok(());
    };
    let (gpu_net, _, _) = full_size_net(dev)?;
    let xg = x.to_device(dev)?;
    let _ = gpu_net.forward_t(&xg, false)?; // warm-up (kernel loading)
    r.sample_memory(dev);
    let t0 = Instant::now();
    let b = gpu_net.forward_t(&xg, false)?;
    let _ = b.uvd.to_device(&Device::Cpu)?; // waits for the GPU
    let gpu_ms = 1e3 * t0.elapsed().as_secs_f64() / 2.0;
    let diffs = [
        ("uvd", max_abs_diff(&a.uvd, &b.uvd)?, max_abs(&a.uvd)?),
        ("phi", max_abs_diff(&a.phi, &b.phi)?, max_abs(&a.phi)?),
        ("beta", max_abs_diff(&a.beta, &b.beta)?, max_abs(&a.beta)?),
    ];
    // f32 through 34 layers with different summation orders (cuBLAS / candle's CUDA kernels vs
    // the CPU's gemm): 1e-3 of each output's magnitude (TF32 is off in candle by default).
    let worst = diffs
        .iter()
        .map(|(_, d, m)| d / m.max(1e-6))
        .fold(0.0, f64::max);
    // NaN anywhere fails (a max that skipped it would pass).
    let finite = diffs.iter().all(|(_, d, m)| d.is_finite() && m.is_finite());
    let ok = finite && worst <= 1e-3;
    r.add(
        "backbone forward parity",
        if ok { Status::Pass } else { Status::Fail },
        format!(
            "ResNet-34 ikol24 256 px: max |CUDA - CPU| uvd {:.2e}, phi {:.2e}, beta {:.2e}; worst {worst:.2e} of the magnitude (tolerance 1e-3); {gpu_ms:.1} vs {cpu_ms:.0} ms per crop",
            diffs[0].1, diffs[1].1, diffs[2].1
        ),
        json!({"max_abs_diff": {"uvd": diffs[0].1, "phi": diffs[1].1, "beta": diffs[2].1},
               "worst_relative": worst, "tolerance": 1e-3,
               "gpu_ms_per_crop": gpu_ms, "cpu_ms_per_crop": cpu_ms}),
    );
    Ok(())
}

fn ikol_layer_parity(r: &mut Report, gpu: Option<&Device>) -> anyhow::Result<()> {
    let Some(dev) = gpu else {
        r.add(
            "IKOL layer forward/backward",
            Status::Skip,
            "no CUDA device".into(),
            json!({}),
        );
        return Ok(());
    };
    let cfg = TrainConfig::default();
    let opts = SynthOptions::new(cfg.net.input_size, cfg.net.num_betas, cfg.body);
    let n = 64;
    let batch = Batch::gather(
        &SynthDataset::new(opts, 3, n)?,
        &(0..n).collect::<Vec<_>>(),
        &Device::Cpu,
    )?;
    let body = cfg.body.load()?;
    let run = |d: &Device| -> anyhow::Result<(Tensor, Tensor, Tensor)> {
        let basis = RestBasis::new(&body, cfg.net.num_betas, DType::F32, d)?;
        // Targets 2 cm off the bodies (a fixed pattern: the same on both devices), so the
        // layer has work to do.
        let off = Tensor::arange(0u32, (n * 24 * 3) as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((n, 24, 3))?
            .affine(0.7, 0.0)?
            .cos()?
            .affine(0.02, 0.0)?;
        let t = (batch.joints.to_dtype(DType::F32)? + off)?;
        let targets = Var::from_tensor(&t.to_device(d)?)?;
        let twist = Var::from_tensor(&batch.twist.to_dtype(DType::F32)?.to_device(d)?)?;
        let rest = basis.rest(&batch.beta.to_dtype(DType::F32)?.to_device(d)?)?;
        let o = BatchIkolOptions {
            jacobian: JacobianMode::Differentiated,
            ..cfg.solver.options()
        };
        let sol = ikol_batch(
            &BatchInput {
                targets: targets.as_tensor(),
                twist: twist.as_tensor(),
                rest: &rest,
                leaf_rotations: None,
            },
            &o,
            None,
        )?;
        let w = Tensor::arange(0u32, (n * 24 * 3) as u32, d)?
            .to_dtype(DType::F32)?
            .reshape((n, 24, 3))?
            .affine(1e-3, 0.0)?
            .sin()?;
        let g = (&sol.joints * w)?.sum_all()?.backward()?;
        let gt = g
            .get(targets.as_tensor())
            .context("no gradient for the targets")?;
        let gp = g
            .get(twist.as_tensor())
            .context("no gradient for the twists")?;
        Ok((sol.joints, gt.clone(), gp.clone()))
    };
    let (ja, ta, pa) = run(&Device::Cpu)?;
    let t0 = Instant::now();
    let (jb, tb, pb) = run(dev)?;
    let gpu_ms = 1e3 * t0.elapsed().as_secs_f64();
    r.sample_memory(dev);
    let dj = max_abs_diff(&ja, &jb)?;
    let dt = max_abs_diff(&ta, &tb)? / max_abs(&ta)?.max(1e-9);
    let dp = max_abs_diff(&pa, &pb)? / max_abs(&pa)?.max(1e-9);
    // f32, 5 Gauss-Newton iterations: 0.1 mm on the joints, 1e-3 of the gradients' magnitude.
    let ok = [dj, dt, dp].iter().all(|x| x.is_finite()) && dj <= 1e-4 && dt <= 1e-3 && dp <= 1e-3;
    r.add(
        "IKOL layer forward/backward",
        if ok { Status::Pass } else { Status::Fail },
        format!(
            "batch {n}, 5 iterations, Jacobian differentiated: joints max |diff| {:.3} mm (tol 0.1), gradients w.r.t. targets {dt:.1e} / twists {dp:.1e} of their magnitude (tol 1e-3); {gpu_ms:.0} ms on the GPU",
            dj * 1e3
        ),
        json!({"joints_max_abs_diff_m": dj, "grad_targets_rel": dt, "grad_twist_rel": dp,
               "gpu_ms": gpu_ms}),
    );
    Ok(())
}

fn train_config(batch: usize, steps: usize, out: &Path) -> TrainConfig {
    let mut c = TrainConfig {
        data: DataConfig::Synthetic {
            count: 4096,
            seed: 1,
        },
        batch_size: batch,
        steps,
        eval_every: 0,
        eval_count: 0,
        checkpoint_every: 0,
        seed: 3,
        out_dir: out.to_path_buf(),
        ..TrainConfig::default()
    };
    c.net = Config {
        num_betas: c.net.num_betas,
        ..Config::upstream(Variant::Ikol24)
    };
    c.optim.lr = 1e-3;
    c
}

/// Trains `steps` steps; returns the losses and images/s after the first step (warm-up).
fn train(cfg: TrainConfig, dev: &Device, r: &mut Report) -> anyhow::Result<(Vec<f64>, f64)> {
    let steps = cfg.steps;
    let batch = cfg.batch_size;
    let mut tr = Trainer::new(cfg, dev)?;
    let mut losses = Vec::with_capacity(steps);
    let mut t0 = Instant::now();
    for s in 0..steps {
        let rep = tr.train_step()?;
        losses.push(rep.losses.total);
        if s == 0 {
            t0 = Instant::now();
        }
        if s % 10 == 0 {
            r.sample_memory(dev);
        }
    }
    let timed = steps.saturating_sub(1).max(1);
    Ok((losses, (timed * batch) as f64 / t0.elapsed().as_secs_f64()))
}

fn training(r: &mut Report, gpu: Option<&Device>, a: &Args) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("ikol-gpu-check-{}", std::process::id()));
    let cpu_cfg = train_config(a.batch, a.cpu_steps.max(2), &tmp.join("cpu"));
    let (_, cpu_ips) = train(cpu_cfg, &Device::Cpu, r)?;
    let Some(dev) = gpu else {
        r.add(
            "training on the GPU",
            Status::Skip,
            format!("no CUDA device (CPU: {cpu_ips:.1} images/s, full-size network + IKOL layer)"),
            json!({"cpu_images_per_s": cpu_ips}),
        );
        return Ok(());
    };
    let (losses, gpu_ips) = train(train_config(a.batch, a.steps, &tmp.join("gpu")), dev, r)?;
    let k = (losses.len() / 10).max(1);
    let first = losses[..k].iter().sum::<f64>() / k as f64;
    let last = losses[losses.len() - k..].iter().sum::<f64>() / k as f64;
    let finite = losses.iter().all(|l| l.is_finite());
    let ok = finite && last < first;
    r.add(
        "training on the GPU",
        if ok { Status::Pass } else { Status::Fail },
        format!(
            "{} steps, batch {}: loss {first:.4} (first tenth) -> {last:.4} (last tenth)",
            losses.len(),
            a.batch
        ),
        json!({"steps": losses.len(), "batch": a.batch, "loss_first": first, "loss_last": last,
               "losses": losses}),
    );
    r.add(
        "training images/s GPU vs CPU",
        if gpu_ips > cpu_ips { Status::Pass } else { Status::Fail },
        format!(
            "{gpu_ips:.1} vs {cpu_ips:.1} images/s ({:.1}x)",
            gpu_ips / cpu_ips
        ),
        json!({"gpu_images_per_s": gpu_ips, "cpu_images_per_s": cpu_ips, "ratio": gpu_ips / cpu_ips}),
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// NCCL on this GPU in a group of one (rank 0 alone at the rendezvous): the communicator
/// initialises and its all-reduce returns its input; then two training steps through it.
#[cfg(feature = "nccl")]
fn nccl(r: &mut Report, gpu: Option<&Device>, a: &Args) -> anyhow::Result<()> {
    use ikol_train::dist::launch::Launch;
    use ikol_train::dist::{Communicator, nccl::NcclComm};
    let Some(dev) = gpu else {
        r.add(
            "NCCL (group of one)",
            Status::Skip,
            "no CUDA device".into(),
            json!({}),
        );
        return Ok(());
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let launch = Launch {
        rank: 0,
        world_size: 1,
        local_rank: a.gpu,
        master_addr: "127.0.0.1".into(),
        port,
    };
    let comm = std::sync::Arc::new(NcclComm::join(&launch, dev)?);
    let x = Tensor::arange(0f32, 1000.0, dev)?;
    let d = max_abs_diff(&comm.all_reduce_sum(&x)?, &x)?;
    let tmp = std::env::temp_dir().join(format!("ikol-gpu-check-nccl-{}", std::process::id()));
    let mut cfg = train_config(2, 2, &tmp);
    cfg.net = Config::tiny(Variant::Ikol24);
    let mut tr = Trainer::new(cfg, dev)?.with_communicator(comm)?;
    let l0 = tr.train_step()?.losses.total;
    let l1 = tr.train_step()?.losses.total;
    let _ = std::fs::remove_dir_all(&tmp);
    let ok = d == 0.0 && l0.is_finite() && l1.is_finite();
    r.add(
        "NCCL (group of one)",
        if ok { Status::Pass } else { Status::Fail },
        format!("all-reduce of 1000 floats exact ({d:e}); 2 training steps through it: loss {l0:.4}, {l1:.4}"),
        json!({"all_reduce_max_abs_diff": d, "losses": [l0, l1]}),
    );
    Ok(())
}

#[cfg(not(feature = "nccl"))]
fn nccl(r: &mut Report, _: Option<&Device>, _: &Args) -> anyhow::Result<()> {
    r.add(
        "NCCL (group of one)",
        Status::Skip,
        "a build without --features nccl".into(),
        json!({}),
    );
    Ok(())
}

/// Runs the demo chain on `device`; returns frames per second of the whole command.
fn chain_fps(a: &Args, clip: &Path, ckpt: &Path, device: &str) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir();
    let json_path = dir.join(format!("ikol-gpu-check-{device}.jsonl"));
    let t0 = Instant::now();
    let out = std::process::Command::new(&a.ikol)
        .arg("run")
        .arg("pipelines/video-to-overlay.pipeline")
        .arg(format!("INPUT={}", clip.display()))
        .arg(format!(
            "OUTPUT={}",
            dir.join(format!("ikol-gpu-check-{device}.mp4")).display()
        ))
        .arg(format!("JSON={}", json_path.display()))
        .args([
            "MODEL=heatmap",
            "DETECTOR=none",
            "ROI=240,420,600,1100",
            "METHOD=ikol",
            "FLIP_TEST=false",
            "FOCAL=1681.2",
            "PRINCIPAL=533.0,948.1",
        ])
        .arg(format!("CHECKPOINT={}", ckpt.display()))
        .arg(format!("DEVICE={device}"))
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", a.ikol.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "ikol run DEVICE={device} failed: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let frames = std::fs::read_to_string(&json_path)?.lines().count();
    anyhow::ensure!(frames > 0, "ikol run DEVICE={device} wrote no frames");
    Ok(frames as f64 / secs)
}

fn chain(r: &mut Report, gpu: Option<&Device>, a: &Args) -> anyhow::Result<()> {
    let Some(clip) = a.clip.as_ref().filter(|c| c.exists()) else {
        r.add(
            "demo chain GPU vs CPU",
            Status::Skip,
            "no --clip (make media)".into(),
            json!({}),
        );
        return Ok(());
    };
    if !a.ikol.exists() {
        let why = format!("no {} (build it with --features cuda)", a.ikol.display());
        r.add("demo chain GPU vs CPU", Status::Skip, why, json!({}));
        return Ok(());
    }
    let Some(dev) = gpu else {
        r.add(
            "demo chain GPU vs CPU",
            Status::Skip,
            "no CUDA device".into(),
            json!({}),
        );
        return Ok(());
    };
    // The random full-size network as a checkpoint the element loads.
    let (_, varmap, cfg) = full_size_net(&Device::Cpu)?;
    let ckpt = std::env::temp_dir().join("ikol-gpu-check-random.safetensors");
    ikol_backbone::weights::save_varmap(&ckpt, &cfg, &varmap)?;
    let gpu_fps = chain_fps(a, clip, &ckpt, "cuda")?;
    r.sample_memory(dev);
    let cpu_fps = chain_fps(a, clip, &ckpt, "cpu")?;
    r.add(
        "demo chain GPU vs CPU",
        if gpu_fps > cpu_fps { Status::Pass } else { Status::Fail },
        format!(
            "heatmap ResNet-34 (random weights) + IKOL + mesh + overlay + x264: {gpu_fps:.1} vs {cpu_fps:.1} frames/s ({:.1}x, whole command)",
            gpu_fps / cpu_fps
        ),
        json!({"gpu_fps": gpu_fps, "cpu_fps": cpu_fps, "ratio": gpu_fps / cpu_fps}),
    );
    Ok(())
}

type Check<'a> = dyn Fn(&mut Report) -> anyhow::Result<()> + 'a;

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        a.steps >= 10,
        "--steps {}: at least 10 (the loss is compared over tenths)",
        a.steps
    );
    anyhow::ensure!(
        a.batch >= 2,
        "--batch {}: at least 2 (BatchNorm in training mode)",
        a.batch
    );
    let mut r = Report {
        lines: Vec::new(),
        peak_bytes: 0,
    };
    let gpu = match open_device(DeviceChoice::Cuda(a.gpu)) {
        Ok(d) => {
            r.add(
                "CUDA device",
                Status::Pass,
                format!("cuda:{} {}", a.gpu, gpu_name(&d)),
                json!({"ordinal": a.gpu, "name": gpu_name(&d)}),
            );
            r.sample_memory(&d);
            Some(d)
        }
        Err(e) => {
            r.add(
                "CUDA device",
                Status::Skip,
                format!("no CUDA device: {e}"),
                json!({"error": e.to_string()}),
            );
            None
        }
    };
    // A check that errors (an op without a CUDA kernel, say) is a FAIL with its message.
    let checks: [(&str, &Check<'_>); 5] = [
        ("backbone forward parity", &|r| {
            backbone_parity(r, gpu.as_ref())
        }),
        ("IKOL layer forward/backward", &|r| {
            ikol_layer_parity(r, gpu.as_ref())
        }),
        ("training on the GPU", &|r| training(r, gpu.as_ref(), &a)),
        ("demo chain GPU vs CPU", &|r| chain(r, gpu.as_ref(), &a)),
        ("NCCL (group of one)", &|r| nccl(r, gpu.as_ref(), &a)),
    ];
    for (i, (name, check)) in checks.iter().enumerate() {
        if a.quick && i >= 2 {
            r.add(name, Status::Skip, "--quick".into(), json!({}));
            continue;
        }
        if let Err(e) = check(&mut r) {
            r.add(
                name,
                Status::Fail,
                format!("error: {e:#}"),
                json!({"error": format!("{e:#}")}),
            );
        }
    }
    if let Some(d) = &gpu {
        r.sample_memory(d);
        let gib = r.peak_bytes as f64 / (1u64 << 30) as f64;
        r.add(
            "peak GPU memory in use",
            Status::Pass,
            format!("{gib:.2} GiB (device total - free, sampled after each stage)"),
            json!({"bytes": r.peak_bytes}),
        );
    }
    let failed = r.lines.iter().filter(|l| l.1 == Status::Fail).count();
    let report = json!({
        "cuda_device": gpu.is_some(),
        "failed": failed,
        "checks": r.lines.iter().map(|(n, s, d, f)| json!({
            "name": n,
            "status": format!("{s:?}").to_lowercase(),
            "detail": d,
            "figures": f,
        })).collect::<Vec<_>>(),
    });
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("gpu-check: {failed} failed; wrote {}", a.out.display());
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
