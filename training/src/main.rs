//! `ikol-train`: `train --config <json>`, `eval --checkpoint <file> --data <dir|synthetic>`,
//! `synth --out <dir> --count N`.
//!
//! CPU by default; build with `--features cuda` (needs the CUDA toolkit) and pass
//! `--device cuda` to train on a GPU.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ikol_backbone::{Backbone, DeviceChoice, DirectRegressor, Variant, open_device};
use ikol_train::config::{BodyChoice, TrainConfig};
use ikol_train::data::{Dataset, InMemory, ShardDataset, SynthDataset, SynthOptions, write_shards};
use ikol_train::dist::Communicator;
use ikol_train::dist::launch::Launch;
use ikol_train::dist::threads::ThreadGroup;
use ikol_train::loss::RestBasis;
use ikol_train::train::{Trainer, evaluate, evaluate_regressor};

#[derive(Debug, Parser)]
#[command(
    name = "ikol-train",
    about = "Train the ikol backbone through the IKOL layer"
)]
struct Cli {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", global = true)]
    device: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Train from a JSON config (see README for the fields).
    Train {
        #[arg(long, required_unless_present = "print_default")]
        config: Option<PathBuf>,
        /// Resume from a checkpoint (its `.state.safetensors` must sit next to it).
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Print the default config and exit.
        #[arg(long)]
        print_default: bool,
        /// Data-parallel workers as threads of this process (the config's `batch_size` is per
        /// worker). For several GPUs or nodes launch one process per GPU with `torchrun` or
        /// `srun` instead (a build with `--features nccl`; see training/README.md).
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Evaluate a checkpoint (MPJPE, PA-MPJPE).
    Eval {
        #[arg(long)]
        checkpoint: PathBuf,
        /// A shard directory, or `synthetic`.
        #[arg(long)]
        data: String,
        /// Synthetic samples to evaluate on.
        #[arg(long, default_value_t = 256)]
        count: usize,
        #[arg(long, default_value_t = 1_000_003)]
        seed: u64,
        #[arg(long, value_enum, default_value = "small")]
        body: BodyArg,
        #[arg(long, default_value_t = 5)]
        iterations: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
    },
    /// Plot loss and evaluation curves of run directories into a PNG (runs in colour order
    /// blue, orange, green, red).
    Plot {
        #[arg(long, required = true, num_args = 1..)]
        runs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// The seed systems at equal budget: heatmap + IKOL, flat (HMR/SPIN) and HKMR regressors,
    /// each also with 3D labels hidden (2D only, or SPIN's fitting in the loop);
    /// writes each run's config, the table (results.md / .csv), curves.png and bars.png.
    Compare {
        #[arg(long, default_value = "runs/compare")]
        out: PathBuf,
        #[arg(long, default_value_t = 1500)]
        steps: usize,
        /// Synthetic training samples.
        #[arg(long, default_value_t = 1024)]
        count: usize,
        #[arg(long, default_value_t = 128)]
        eval_count: usize,
        #[arg(long, default_value_t = 250)]
        eval_every: usize,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// ResNet-18 layout at this stem width.
        #[arg(long, default_value_t = 8)]
        width: usize,
        #[arg(long, default_value_t = 64)]
        input_size: usize,
        /// Fraction of samples without 3D labels in the -2d and -spin runs.
        #[arg(long, default_value_t = 0.5)]
        hide: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Only these runs (names as in the table), repeatable.
        #[arg(long)]
        only: Vec<String>,
    },
    /// Write synthetic shards and a manifest.
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 64)]
        input_size: usize,
        #[arg(long, default_value_t = 10)]
        num_betas: usize,
        #[arg(long, value_enum, default_value = "small")]
        body: BodyArg,
        #[arg(long, default_value_t = 256)]
        shard_size: usize,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BodyArg {
    Small,
    Default,
}

impl From<BodyArg> for BodyChoice {
    fn from(b: BodyArg) -> Self {
        match b {
            BodyArg::Small => BodyChoice::Small,
            BodyArg::Default => BodyChoice::Default,
        }
    }
}

/// The device of `--device` (`cpu`, `cuda`, `cuda:N`); under a multi-process launcher a plain
/// `cuda` means this rank's GPU (`LOCAL_RANK`), unless the launcher shows each process a single
/// GPU (`CUDA_VISIBLE_DEVICES` with one entry: then it is device 0). A CUDA device that cannot
/// be opened (a build without `cuda`, no driver, no GPU) is an error that says so.
fn device(name: &str, launch: Option<&Launch>) -> anyhow::Result<candle_core::Device> {
    let mut choice: DeviceChoice = name.parse()?;
    let one_visible = std::env::var("CUDA_VISIBLE_DEVICES")
        .is_ok_and(|v| !v.trim().is_empty() && !v.contains(','));
    if let (DeviceChoice::Cuda(0), Some(l)) = (choice, launch)
        && !name.contains(':')
        && !one_visible
    {
        choice = DeviceChoice::Cuda(l.local_rank);
    }
    Ok(open_device(choice)?)
}

/// Trains one rank of a multi-process launch over NCCL.
#[cfg(feature = "nccl")]
fn join_group(tr: Trainer, launch: &Launch, dev: &candle_core::Device) -> anyhow::Result<Trainer> {
    let comm = ikol_train::dist::nccl::NcclComm::join(launch, dev)?;
    eprintln!(
        "rank {}/{} on {dev:?}: joined the NCCL group",
        launch.rank, launch.world_size
    );
    tr.with_communicator(std::sync::Arc::new(comm))
}

#[cfg(not(feature = "nccl"))]
fn join_group(_: Trainer, launch: &Launch, _: &candle_core::Device) -> anyhow::Result<Trainer> {
    anyhow::bail!(
        "the launcher asks for {} processes (WORLD_SIZE / SLURM_NTASKS), but this build of ikol-train \
         has no NCCL: rebuild with `cargo build --release -p ikol-train --features nccl`",
        launch.world_size
    )
}

/// `workers` trainers in threads of this process, reducing through shared memory; rank 0 is
/// returned (it wrote the run's files).
fn run_local_workers(
    workers: usize,
    cfg: TrainConfig,
    resume: Option<PathBuf>,
    dev: &candle_core::Device,
) -> anyhow::Result<Trainer> {
    let comms = ThreadGroup::new(workers);
    let handles: Vec<_> = comms
        .into_iter()
        .map(|c| {
            let (cfg, resume, dev) = (cfg.clone(), resume.clone(), dev.clone());
            std::thread::spawn(move || {
                let rank = c.rank();
                let _abort = c.abort_on_panic();
                let run = || -> anyhow::Result<Trainer> {
                    let tr = match &resume {
                        Some(w) => Trainer::resume(w, Some(cfg), &dev)?,
                        None => Trainer::new(cfg, &dev)?,
                    };
                    let mut tr = tr.with_communicator(std::sync::Arc::new(c.clone()))?;
                    tr.run(rank == 0)?;
                    Ok(tr)
                };
                let r = run();
                if let Err(e) = &r {
                    c.abort(&format!("{e:#}"));
                }
                r
            })
        })
        .collect();
    let mut first = None;
    let mut error = None;
    for (rank, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(tr)) if rank == 0 => first = Some(tr),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                error.get_or_insert(e.context(format!("worker {rank}")));
            }
            Err(_) => {
                error.get_or_insert(anyhow::anyhow!("worker {rank} panicked"));
            }
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    first.context("worker 0 returned nothing")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Only training takes part in a multi-process launch.
    let launch = match cli.cmd {
        Cmd::Train { .. } => Launch::from_env()?,
        _ => None,
    };
    let dev = device(&cli.device, launch.as_ref())?;
    match cli.cmd {
        Cmd::Train {
            config,
            resume,
            print_default,
            workers,
        } => {
            if print_default {
                println!("{}", serde_json::to_string_pretty(&TrainConfig::default())?);
                return Ok(());
            }
            let config = config.context("--config is required")?;
            let cfg = TrainConfig::from_file(&config)?;
            let tr = if workers > 1 {
                anyhow::ensure!(
                    launch.is_none(),
                    "--workers (threads of one process) and a multi-process launcher do not mix"
                );
                run_local_workers(workers, cfg, resume, &dev)?
            } else {
                let tr = match resume {
                    Some(w) => Trainer::resume(&w, Some(cfg), &dev)?,
                    None => Trainer::new(cfg, &dev)?,
                };
                let mut tr = match &launch {
                    Some(l) => join_group(tr, l, &dev)?,
                    None => tr,
                };
                tr.run(tr.rank() == 0)?;
                tr
            };
            if tr.rank() != 0 {
                return Ok(());
            }
            if let Some(e) = tr.evaluate()? {
                println!(
                    "final: MPJPE {:.1} mm, PA-MPJPE {:.1} mm ({} samples)",
                    e.mpjpe_mm, e.pa_mpjpe_mm, e.samples
                );
            }
            if tr.skipped() > 0 {
                println!("{} batches skipped by the NaN guard", tr.skipped());
            }
        }
        Cmd::Eval {
            checkpoint,
            data,
            count,
            seed,
            body,
            iterations,
            batch_size,
        } => {
            enum Net {
                Heatmap(Backbone),
                Regressor(DirectRegressor),
            }
            let (net, input_size, num_betas) =
                if ikol_backbone::direct::is_regressor_checkpoint(&checkpoint) {
                    let r = DirectRegressor::load(&checkpoint, &dev)
                        .with_context(|| format!("loading {checkpoint:?}"))?;
                    let c = *r.config();
                    (Net::Regressor(r), c.input_size, c.head.num_betas)
                } else {
                    let bb = Backbone::load(&checkpoint, Variant::Ikol24, &dev)
                        .with_context(|| format!("loading {checkpoint:?}"))?;
                    let c = *bb.config();
                    (Net::Heatmap(bb), c.input_size, c.num_betas)
                };
            let (ds, body): (Box<dyn Dataset>, BodyChoice) = if data == "synthetic" {
                let opts = SynthOptions::new(input_size, num_betas, body.into());
                let ds = InMemory::collect(&SynthDataset::new(opts, seed, count)?)?;
                (Box::new(ds), body.into())
            } else {
                let ds = ShardDataset::open(std::path::Path::new(&data))?;
                let b = ds.manifest.generator.body;
                (Box::new(ds), b)
            };
            anyhow::ensure!(
                ds.input_size() == input_size,
                "data is {} px, the network takes {}",
                ds.input_size(),
                input_size
            );
            let body = body.load()?;
            let basis = RestBasis::new(&body, num_betas, candle_core::DType::F32, &dev)?;
            let e = match &net {
                Net::Heatmap(bb) => evaluate(
                    bb.net(),
                    ds.as_ref(),
                    &body,
                    &basis,
                    iterations,
                    batch_size,
                    &dev,
                )?,
                Net::Regressor(r) => {
                    evaluate_regressor(r.net(), ds.as_ref(), &body, &basis, batch_size, &dev)?
                }
            };
            println!(
                "MPJPE {:.1} mm, PA-MPJPE {:.1} mm, PVE {:.1} mm, uvd-only MPJPE {:.1} mm \
                 over {} samples",
                e.mpjpe_mm, e.pa_mpjpe_mm, e.pve_mm, e.mpjpe_uvd_mm, e.samples
            );
        }
        Cmd::Compare {
            out,
            steps,
            count,
            eval_count,
            eval_every,
            batch_size,
            width,
            input_size,
            hide,
            seed,
            only,
        } => {
            let o = ikol_train::compare::CompareOptions {
                out,
                steps,
                count,
                eval_count,
                eval_every,
                batch_size,
                width,
                input_size,
                hide,
                seed,
                only,
            };
            ikol_train::compare::run(&o, &dev, true)?;
            print!("{}", std::fs::read_to_string(o.out.join("results.md"))?);
        }
        Cmd::Plot { runs, out } => {
            let runs: Vec<&std::path::Path> = runs.iter().map(PathBuf::as_path).collect();
            ikol_train::plot::plot_runs(&runs, &out)?;
            println!("wrote {}", out.display());
        }
        Cmd::Synth {
            out,
            count,
            seed,
            input_size,
            num_betas,
            body,
            shard_size,
        } => {
            let opts = SynthOptions::new(input_size, num_betas, body.into());
            let ds = SynthDataset::new(opts, seed, count)?;
            let bar = indicatif::ProgressBar::new(count as u64);
            let m = write_shards(&ds, seed, &out, shard_size, |n| bar.set_position(n as u64))?;
            bar.finish();
            println!(
                "wrote {} samples in {} shards to {}",
                m.count,
                m.shards.len(),
                out.display()
            );
        }
    }
    Ok(())
}
