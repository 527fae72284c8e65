//! `ikol-train compare`: the seed systems at equal budget (same ResNet, input size, synthetic
//! data, steps, batch, seed and optimiser): the heatmap network with the IKOL layer (GN-Diff),
//! HMR/SPIN's flat regressor and HKMR, each also with part of the 3D labels hidden, trained on
//! 2D alone or with SPIN's fitting in the loop. Every run's config is written into its
//! directory (`ikol-train train --config <out>/<run>/config.json --device cuda` repeats it on a
//! GPU), then the table (`results.md`, `results.csv`), the curves (`curves.png`) and a bar chart
//! of the final MPJPE / PA-MPJPE / PVE (`bars.png`).

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::config::{DataConfig, JacobianChoice, ModelChoice, TrainConfig};
use crate::plot::{PALETTE, plot_bars, plot_runs};
use crate::spin::SpinConfig;
use crate::train::{EvalReport, Trainer};

/// One run of the comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub name: &'static str,
    pub model: ModelChoice,
    /// 3D labels hidden for `CompareOptions::hide` of the samples.
    pub hidden: bool,
    /// SPIN's fitting in the loop.
    pub spin: bool,
}

/// The runs, in table (and colour) order.
pub const ENTRIES: [Entry; 9] = [
    Entry {
        name: "heatmap-ikol",
        model: ModelChoice::Heatmap,
        hidden: false,
        spin: false,
    },
    Entry {
        name: "flat",
        model: ModelChoice::Flat,
        hidden: false,
        spin: false,
    },
    Entry {
        name: "hkmr",
        model: ModelChoice::Hkmr,
        hidden: false,
        spin: false,
    },
    Entry {
        name: "flat-2d",
        model: ModelChoice::Flat,
        hidden: true,
        spin: false,
    },
    Entry {
        name: "flat-spin",
        model: ModelChoice::Flat,
        hidden: true,
        spin: true,
    },
    Entry {
        name: "hkmr-2d",
        model: ModelChoice::Hkmr,
        hidden: true,
        spin: false,
    },
    Entry {
        name: "hkmr-spin",
        model: ModelChoice::Hkmr,
        hidden: true,
        spin: true,
    },
    Entry {
        name: "heatmap-ikol-2d",
        model: ModelChoice::Heatmap,
        hidden: true,
        spin: false,
    },
    Entry {
        name: "heatmap-ikol-spin",
        model: ModelChoice::Heatmap,
        hidden: true,
        spin: true,
    },
];

// Every run has its colour.
const _: () = assert!(ENTRIES.len() <= PALETTE.len());

/// The shared budget.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    pub out: PathBuf,
    pub steps: usize,
    /// Synthetic training samples.
    pub count: usize,
    /// Held-out synthetic samples evaluated every `eval_every` steps and at the end.
    pub eval_count: usize,
    pub eval_every: usize,
    pub batch_size: usize,
    /// ResNet-18 layout at this stem width.
    pub width: usize,
    pub input_size: usize,
    /// Fraction of samples without 3D labels in the `-2d` and `-spin` runs.
    pub hide: f64,
    pub seed: u64,
    /// Run only the entries whose names are listed (all when empty).
    pub only: Vec<String>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            out: "runs/compare".into(),
            steps: 1500,
            count: 1024,
            eval_count: 128,
            eval_every: 250,
            batch_size: 16,
            width: 8,
            input_size: 64,
            hide: 0.5,
            seed: 0,
            only: Vec::new(),
        }
    }
}

/// The training config of one entry.
pub fn config_for(e: &Entry, o: &CompareOptions) -> TrainConfig {
    let mut c = TrainConfig {
        model: e.model,
        data: DataConfig::Synthetic {
            count: o.count,
            seed: 1,
        },
        eval_count: o.eval_count,
        eval_every: o.eval_every,
        batch_size: o.batch_size,
        steps: o.steps,
        seed: o.seed,
        out_dir: o.out.join(e.name),
        checkpoint_every: 0,
        hide_3d_fraction: if e.hidden { o.hide } else { 0.0 },
        fitting_in_the_loop: e.spin.then(SpinConfig::default),
        ..TrainConfig::default()
    };
    c.net.resnet.layers = [2, 2, 2, 2];
    c.net.resnet.width = o.width;
    c.net.input_size = o.input_size;
    c.solver.enabled = e.model == ModelChoice::Heatmap;
    c.solver.jacobian = JacobianChoice::Differentiated;
    c
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub entry: Entry,
    pub eval: EvalReport,
    pub seconds_per_step: f64,
}

/// Runs every selected entry, then writes the table and the pictures into `o.out`.
pub fn run(o: &CompareOptions, device: &Device, progress: bool) -> anyhow::Result<Vec<Outcome>> {
    std::fs::create_dir_all(&o.out)?;
    let mut outcomes = Vec::new();
    for e in ENTRIES
        .iter()
        .filter(|e| o.only.is_empty() || o.only.iter().any(|n| n == e.name))
    {
        let cfg = config_for(e, o);
        std::fs::create_dir_all(&cfg.out_dir)?;
        std::fs::write(
            cfg.out_dir.join("config.json"),
            serde_json::to_string_pretty(&cfg)? + "\n",
        )?;
        if progress {
            eprintln!("{}: {} steps", e.name, cfg.steps);
        }
        let t0 = std::time::Instant::now();
        let mut tr = Trainer::new(cfg, device)?;
        tr.run(progress)?;
        let seconds_per_step = t0.elapsed().as_secs_f64() / o.steps.max(1) as f64;
        let eval = tr
            .evaluate()?
            .ok_or_else(|| anyhow::anyhow!("compare needs eval_count > 0 and eval_every > 0"))?;
        outcomes.push(Outcome {
            entry: *e,
            eval,
            seconds_per_step,
        });
    }
    write_results(o, &outcomes)?;
    Ok(outcomes)
}

fn write_results(o: &CompareOptions, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let mut md = std::fs::File::create(o.out.join("results.md"))?;
    let mut csv = std::fs::File::create(o.out.join("results.csv"))?;
    writeln!(
        md,
        "| # | run | model | 3D labels | SPIN | MPJPE | PA-MPJPE | PVE | s/step |\n|---|---|---|---|---|---|---|---|---|"
    )?;
    writeln!(
        csv,
        "run,model,labels_3d,spin,mpjpe_mm,pa_mpjpe_mm,pve_mm,seconds_per_step"
    )?;
    for (i, r) in outcomes.iter().enumerate() {
        let e = &r.entry;
        let model = match e.model {
            ModelChoice::Heatmap => "heatmap + IKOL (GN-Diff)",
            ModelChoice::Flat => "flat (HMR/SPIN)",
            ModelChoice::Hkmr => "HKMR",
        };
        let labels = if e.hidden {
            format!("{:.0} %", 100.0 * (1.0 - o.hide))
        } else {
            "100 %".into()
        };
        writeln!(
            md,
            "| {} | {} | {model} | {labels} | {} | {:.1} | {:.1} | {:.1} | {:.3} |",
            i + 1,
            e.name,
            if e.spin { "yes" } else { "no" },
            r.eval.mpjpe_mm,
            r.eval.pa_mpjpe_mm,
            r.eval.pve_mm,
            r.seconds_per_step
        )?;
        writeln!(
            csv,
            "{},{model},{labels},{},{},{},{},{}",
            e.name, e.spin, r.eval.mpjpe_mm, r.eval.pa_mpjpe_mm, r.eval.pve_mm, r.seconds_per_step
        )?;
    }
    let runs: Vec<PathBuf> = outcomes.iter().map(|r| o.out.join(r.entry.name)).collect();
    let runs: Vec<&Path> = runs.iter().map(PathBuf::as_path).collect();
    plot_runs(&runs, &o.out.join("curves.png"))?;
    let groups: Vec<[f64; 3]> = outcomes
        .iter()
        .map(|r| [r.eval.mpjpe_mm, r.eval.pa_mpjpe_mm, r.eval.pve_mm])
        .collect();
    plot_bars(&groups, &o.out.join("bars.png"))?;
    Ok(())
}
