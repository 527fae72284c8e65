//! CPU forward time of the full-size network against PyTorch on the identical architecture.
//!
//! ```text
//! [RAYON_NUM_THREADS=2] cargo run --release -p ikol-backbone --bin backbone-bench -- [--runs 10]
//!     [--rounds 2] [--variant ikol24|hybrik29] [--depth 34] [--batch 1] [--python PATH]
//!     [--no-torch] [--convs]
//! ```
//!
//! `--convs` instead times every distinct convolution shape of the network (and the soft-argmax,
//! max-pool, fused BatchNorm and a basic block) in isolation.
//!
//! Threads: candle and this crate use rayon's global pool, sized by `RAYON_NUM_THREADS` (default:
//! all CPUs); PyTorch gets the same number through `torch.set_num_threads`.
//!
//! Builds the network with random weights (the timing does not depend on the values), times
//! `forward` at `batch x 3 x 256 x 256` in evaluation mode (`--runs` timed forwards after two
//! warm-ups), prints a per-part breakdown and the RSS around the first forward, and runs
//! `tools/bench_torch.py` with the same thread count (Python from `--python`, `$IKOL_PYTHON`,
//! or `/root/.cache/ikol/pyenv/bin/python`). Candle and PyTorch alternate for `--rounds`
//! rounds so that both see the same machine load; the report gives the median over all runs
//! and the minimum of each side, and their ratios. The last line is one JSON object with
//! every figure.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ikol_backbone::{Config, HeatmapNet, ResNetConfig, Variant};

struct Args {
    runs: usize,
    rounds: usize,
    batch: usize,
    variant: Variant,
    depth: usize,
    python: String,
    torch: bool,
    convs: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        runs: 10,
        rounds: 2,
        batch: 1,
        variant: Variant::Ikol24,
        depth: 34,
        python: std::env::var("IKOL_PYTHON")
            .unwrap_or_else(|_| "/root/.cache/ikol/pyenv/bin/python".into()),
        torch: true,
        convs: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--rounds" => a.rounds = val()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--batch" => a.batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--depth" => a.depth = val()?.parse().map_err(|e| format!("--depth: {e}"))?,
            "--variant" => a.variant = val()?.parse().map_err(|e| format!("--variant: {e}"))?,
            "--python" => a.python = val()?,
            "--no-torch" => a.torch = false,
            "--convs" => a.convs = true,
            "-h" | "--help" => {
                println!(
                    "backbone-bench [--runs N] [--rounds N] [--batch N] [--variant ikol24|hybrik29] \
                     [--depth 18|34|50] [--python PATH] [--no-torch] [--convs]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// (current RSS, peak RSS) in MiB from /proc/self/status.
fn rss_mib() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_min(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// Times each distinct convolution shape of the ResNet-34 network at 256 x 256 (`--convs`).
fn conv_table(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    use ikol_backbone::ops;
    let dev = Device::Cpu;
    struct Shape {
        name: &'static str,
        c_in: usize,
        c_out: usize,
        side: usize,
        k: usize,
        stride: usize,
        pad: usize,
        /// How often the network has it.
        count: usize,
        transposed: bool,
    }
    let conv = |name, c_in, c_out, side, k, stride, pad, count| Shape {
        name,
        c_in,
        c_out,
        side,
        k,
        stride,
        pad,
        count,
        transposed: false,
    };
    let shapes = [
        conv("stem 7x7/2", 3, 64, 256, 7, 2, 3, 1),
        conv("layer1 3x3", 64, 64, 64, 3, 1, 1, 6),
        conv("layer2 3x3/2", 64, 128, 64, 3, 2, 1, 1),
        conv("layer2 3x3", 128, 128, 32, 3, 1, 1, 7),
        conv("layer3 3x3/2", 128, 256, 32, 3, 2, 1, 1),
        conv("layer3 3x3", 256, 256, 16, 3, 1, 1, 11),
        conv("layer4 3x3/2", 256, 512, 16, 3, 2, 1, 1),
        conv("layer4 3x3", 512, 512, 8, 3, 1, 1, 5),
        Shape {
            transposed: true,
            ..conv("deconv1 512->256", 512, 256, 8, 4, 2, 1, 1)
        },
        Shape {
            transposed: true,
            ..conv("deconv3 256->256", 256, 256, 32, 4, 2, 1, 1)
        },
        conv("final 1x1", 256, 1536, 64, 1, 1, 0, 1),
    ];
    let mut total = 0.0;
    for sh in shapes {
        let Shape {
            name,
            c_in: ci,
            c_out: co,
            side,
            k,
            stride: s,
            pad: p,
            count,
            transposed,
        } = sh;
        let x = Tensor::randn(0f32, 1f32, (1, ci, side, side), &dev)?;
        let (w, out_side) = if transposed {
            (
                Tensor::randn(0f32, 1f32, (ci, co, k, k), &dev)?,
                (side - 1) * s + k - 2 * p,
            )
        } else {
            (
                Tensor::randn(0f32, 1f32, (co, ci, k, k), &dev)?,
                (side + 2 * p - k) / s + 1,
            )
        };
        let run = || -> candle_core::Result<Tensor> {
            if transposed {
                ops::conv_transpose2d(&x, &w, s, p)
            } else {
                ops::conv2d(&x, &w, s, p)
            }
        };
        run()?;
        let mut v = Vec::new();
        for _ in 0..runs.max(3) {
            let t = Instant::now();
            run()?;
            v.push(ms(t.elapsed()));
        }
        let (_, best) = median_min(v);
        let macs = if transposed {
            (ci * co * k * k * side * side) as f64
        } else {
            (ci * co * k * k * out_side * out_side) as f64
        };
        total += best * count as f64;

        println!(
            "{name:<18} x{count:<2} {best:7.2} ms  {:6.1} GFLOP/s",
            2.0 * macs / best / 1e6
        );
    }
    println!("sum over the network (convolutions only, best times): {total:.1} ms");
    for (c, side) in [(64usize, 64usize), (256, 16), (512, 8)] {
        use candle_core::ModuleT;
        let vm = VarMap::new();
        let block = ikol_backbone::layers::Block::new(
            VarBuilder::from_varmap(&vm, DType::F32, &dev),
            ikol_backbone::BlockKind::Basic,
            c,
            c,
            1,
            1e-5,
            0.1,
        )?;
        // Plain (untracked) weights as when loaded from a file.
        let tensors: std::collections::HashMap<String, Tensor> = vm
            .data()
            .lock()
            .map_err(|_| "lock")?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        let block2 = ikol_backbone::layers::Block::new(
            VarBuilder::from_tensors(tensors, DType::F32, &dev),
            ikol_backbone::BlockKind::Basic,
            c,
            c,
            1,
            1e-5,
            0.1,
        )?;
        drop(block);
        let x = Tensor::randn(0f32, 1f32, (1, c, side, side), &dev)?;
        block2.forward_t(&x, false)?;
        let mut v = Vec::new();
        for _ in 0..runs.max(3) {
            let t = Instant::now();
            block2.forward_t(&x, false)?;
            v.push(ms(t.elapsed()));
        }
        println!("basic block {c} x {side}^2: best {:.2} ms", median_min(v).1);
    }
    let logits = Tensor::randn(0f32, 1f32, (1, 24, 64 * 64 * 64), &dev)?;
    let bias = Tensor::randn(0f32, 1f32, 24 * 64, &dev)?;
    let mut v = Vec::new();
    for _ in 0..runs.max(3) {
        let t = Instant::now();
        ops::soft_argmax_biased(&logits, &bias, 64, 64, 64)?;
        v.push(ms(t.elapsed()));
    }
    println!(
        "soft-argmax 24 x 64^3 (+bias): best {:.2} ms",
        median_min(v).1
    );
    let x = Tensor::randn(0f32, 1f32, (1, 64, 128, 128), &dev)?;
    let mut v = Vec::new();
    for _ in 0..runs.max(3) {
        let t = Instant::now();
        ops::max_pool2d(&x, 3, 2, 1)?;
        v.push(ms(t.elapsed()));
    }
    println!("max-pool 64 x 128^2, 3x3/2: best {:.2} ms", median_min(v).1);
    for (c, side) in [(64usize, 128usize), (64, 64), (256, 16)] {
        let ss = Tensor::randn(0f32, 1f32, (2, c), &dev)?;
        let r = Tensor::randn(0f32, 1f32, (1, c, side, side), &dev)?;
        let mut v = Vec::new();
        let mut v2 = Vec::new();
        for _ in 0..runs.max(3) {
            let x = Tensor::randn(0f32, 1f32, (1, c, side, side), &dev)?;
            let t = Instant::now();
            let x = ops::channel_affine(x, &ss, None, true, true)?;
            v.push(ms(t.elapsed()));
            let t = Instant::now();
            ops::channel_affine(x, &ss, Some(&r), true, true)?;
            v2.push(ms(t.elapsed()));
        }
        println!(
            "channel affine {c} x {side}^2: best {:.3} ms, with residual {:.3} ms",
            median_min(v).1,
            median_min(v2).1
        );
    }
    Ok(())
}

/// Runs `tools/bench_torch.py` once and returns its JSON.
fn run_torch(args: &Args, threads: usize, variant: Variant) -> Result<serde_json::Value, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/bench_torch.py");
    let o = Command::new(&args.python)
        .arg(&script)
        .args([
            "--threads",
            &threads.to_string(),
            "--runs",
            &args.runs.to_string(),
        ])
        .args([
            "--depth",
            &args.depth.to_string(),
            "--variant",
            variant.name(),
        ])
        .args(["--batch", &args.batch.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.python))?;
    if !o.status.success() {
        return Err(format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).map_err(|e| e.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let threads = candle_core::utils::get_num_threads();
    let dev = Device::Cpu;
    if args.convs {
        return conv_table(args.runs);
    }
    let cfg = Config {
        resnet: ResNetConfig::depth(args.depth).ok_or("unsupported depth")?,
        ..Config::upstream(args.variant)
    };
    // Random weights through a VarMap (upstream initialisation), then rebuilt from plain
    // tensors as `Backbone::load` does: with `Var`s every op would be tracked for autograd
    // (the graph keeps all intermediates alive and the in-place inference kernels are skipped).
    let varmap = VarMap::new();
    HeatmapNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let tensors: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| "VarMap lock")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    drop(varmap);
    let n_params: usize = tensors.values().map(|t| t.elem_count()).sum();
    let net = HeatmapNet::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &dev))?;
    let x = Tensor::randn(
        0f32,
        1f32,
        (args.batch, 3, cfg.input_size, cfg.input_size),
        &dev,
    )?;

    let (rss_before, _) = rss_mib();
    let t0 = Instant::now();
    let first = net.forward_t(&x, false)?;
    let first_ms = ms(t0.elapsed());
    first.uvd.to_vec3::<f32>()?;
    let (rss_after, peak_after) = rss_mib();
    net.forward_t(&x, false)?;

    let mut whole = Vec::new();
    let mut torch_runs: Vec<serde_json::Value> = Vec::new();
    for _ in 0..args.rounds.max(1) {
        for _ in 0..args.runs.max(1) {
            let t = Instant::now();
            let o = net.forward_t(&x, false)?;
            o.uvd.to_vec3::<f32>()?;
            whole.push(ms(t.elapsed()));
        }
        if args.torch {
            match run_torch(&args, threads, cfg.variant) {
                Ok(v) => torch_runs.push(v),
                Err(e) => eprintln!("pytorch benchmark failed: {e}"),
            }
        }
    }
    let (med, min) = median_min(whole.clone());

    let mut parts: Vec<(&'static str, Vec<f64>)> = Vec::new();
    for _ in 0..args.runs.max(3) {
        let (_, times) = net.forward_profiled(&x)?;
        for (i, (name, d)) in times.into_iter().enumerate() {
            if parts.len() <= i {
                parts.push((name, Vec::new()));
            }
            parts[i].1.push(ms(d));
        }
    }

    println!(
        "candle: {} {}-layer ResNet, {:.1} M parameters, batch {} x 3 x {}^2, {} threads",
        cfg.variant,
        args.depth,
        n_params as f64 / 1e6,
        args.batch,
        cfg.input_size,
        threads
    );
    println!(
        "  forward: median {med:.1} ms, min {min:.1} ms over {} runs (first call {first_ms:.1} ms)",
        whole.len()
    );
    for (name, v) in &parts {
        let (m, _) = median_min(v.clone());
        println!("    {name:<24} {m:8.1} ms");
    }
    println!(
        "  RSS: {rss_before:.0} MiB before the first forward (weights), {rss_after:.0} MiB after it \
         (peak {peak_after:.0} MiB): +{:.0} MiB",
        peak_after - rss_before
    );

    let f = |v: &serde_json::Value, path: &[&str]| -> f64 {
        let mut x = v;
        for p in path {
            x = &x[*p];
        }
        x.as_f64().unwrap_or(f64::NAN)
    };
    let mut torch_json = serde_json::Value::Null;
    if let Some(last) = torch_runs.last() {
        let tmed = median_min(
            torch_runs
                .iter()
                .map(|v| f(v, &["whole", "median_ms"]))
                .collect(),
        )
        .0;
        let tmin = torch_runs
            .iter()
            .map(|v| f(v, &["whole", "min_ms"]))
            .fold(f64::INFINITY, f64::min);
        println!(
            "pytorch {}: forward median {tmed:.1} ms (median of {} rounds), min {tmin:.1} ms",
            last["torch"].as_str().unwrap_or("?"),
            torch_runs.len()
        );
        if let Some(p) = last["parts"].as_object() {
            for (name, v) in p {
                println!("    {name:<24} {:8.1} ms", f(v, &["median_ms"]));
            }
        }
        println!(
            "  RSS: {:.0} MiB before the forward (interpreter, torch, weights), {:.0} MiB after: +{:.0} MiB",
            f(last, &["peak_rss_mib_before"]),
            f(last, &["peak_rss_mib_after"]),
            f(last, &["peak_rss_mib_after"]) - f(last, &["peak_rss_mib_before"])
        );
        println!(
            "ratio candle / pytorch: median {:.2}, min {:.2}",
            med / tmed,
            min / tmin
        );
        torch_json = serde_json::json!({ "rounds": torch_runs, "median_ms": tmed, "min_ms": tmin });
    }
    let summary = serde_json::json!({
        "candle": {
            "median_ms": med, "min_ms": min, "first_ms": first_ms,
            "parts_median_ms": parts.iter().map(|(n, v)| (n.to_string(), serde_json::json!(median_min(v.clone()).0))).collect::<serde_json::Map<_, _>>(),
            "rss_mib_before": rss_before, "rss_mib_after": rss_after, "peak_rss_mib": peak_after,
        },
        "torch": torch_json,
        "threads": threads, "batch": args.batch, "variant": cfg.variant.name(), "depth": args.depth,
    });
    println!("{summary}");
    Ok(())
}
