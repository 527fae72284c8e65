//! `ikol eval-3dpw`: the 3DPW evaluation of IKOL/HybrIK as one command.
//!
//! Checks the options (the dataset root and split, the checkpoint, the model files), then runs
//! the pipeline file built into the binary (`pipelines/3dpw-eval.pipeline`, or
//! `pipelines/3dpw-oracle.pipeline` with `--ground-truth-joints`) through the runner of `ikol
//! run` (progress bar, GStreamer's error text on failure, Ctrl-C ends the stream and the partial
//! results are still scored). The runner prints the table (`ikoleval print=false` posts it); this
//! adds where `summary.json` and the per-sequence CSVs are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ikol_eval::pw3d;

use crate::run::{self, PipelineFile, RunArgs};

/// The network chain: ground-truth boxes -> network -> solver -> metrics.
pub const EVAL_PIPELINE: &str = include_str!("../3dpw-eval.pipeline");
/// The solver alone: ground-truth joints -> solver -> metrics.
pub const ORACLE_PIPELINE: &str = include_str!("../3dpw-oracle.pipeline");
/// Where the two files are in the repository (names them in messages).
const EVAL_NAME: &str = "pipelines/3dpw-eval.pipeline";
const ORACLE_NAME: &str = "pipelines/3dpw-oracle.pipeline";

/// Options of `ikol eval-3dpw`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// 3DPW root directory, holding imageFiles/ and sequenceFiles/.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Which split of sequenceFiles/ to play.
    #[arg(long, default_value = "test", value_parser = ["train", "validation", "test"])]
    pub split: String,
    /// One sequence name (e.g. downtown_walking_00) or `all`.
    #[arg(long, default_value = "all")]
    pub sequence: String,
    /// `default`, `small`, or a model file (SMPL_NEUTRAL.pkl for the published protocol):
    /// the ground truth, the solver and both meshes use it.
    #[arg(long, default_value = "default", value_name = "MODEL")]
    pub body_model: String,
    /// J_regressor_h36m.npy (17 x vertices) replacing the model's own H36M-17 regressor.
    #[arg(long, value_name = "NPY")]
    pub h36m_regressor: Option<PathBuf>,
    /// Network weights for --model heatmap (upstream HybrIK/IKOL .pth or our .safetensors) or
    /// hkmr / hmr (our regressor .safetensors, from `ikol-train`).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Network variant of the checkpoint.
    #[arg(long, default_value = "ikol24", value_parser = ["ikol24", "hybrik29"])]
    pub variant: String,
    /// Network: `heatmap` (the IKOL/HybrIK network from --checkpoint), `blazepose`
    /// (pretrained BlazePose, fetched by `make models`), or a body regressor from --checkpoint:
    /// `hkmr` (HKMR's kinematic-tree regressor) or `hmr` (HMR/SPIN's flat one), which give the
    /// body itself (use --method none or fit).
    #[arg(long, default_value = "heatmap", value_parser = ["heatmap", "blazepose", "hkmr", "hmr"])]
    pub model: String,
    /// Where the network runs: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also run every crop mirrored and average (HybrIK's flip test).
    #[arg(long)]
    pub flip_test: bool,
    /// Inverse kinematics: `ikol` (Gauss-Newton), `hybrik` (adaptive analytic),
    /// `hybrik-naive`, `fit` (the body fitted to the 2D and 3D joints per track over time), or
    /// `none` (the body a regressor gave, --model hkmr / hmr).
    #[arg(long, default_value = "ikol", value_parser = ["ikol", "hybrik", "hybrik-naive", "fit", "none"])]
    pub method: String,
    /// Gauss-Newton iterations (ikol), 0 to 100.
    #[arg(long, default_value_t = 5, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub iterations: u32,
    /// Gauss-Newton damping sigma (ikol).
    #[arg(long, default_value_t = 0.1, value_name = "SIGMA")]
    pub damping: f64,
    /// Starting swing angles (ikol): `zero` (the paper) or `analytic` (from HybrIK).
    #[arg(long, default_value = "zero", value_parser = ["zero", "analytic"])]
    pub init: String,
    /// Feed the ground-truth joints, twist and shape to the solver instead of a network:
    /// evaluates the solver alone (near 0 mm when it reproduces the ground truth).
    #[arg(long)]
    pub ground_truth_joints: bool,
    /// Directory for summary.json and <sequence>.csv (created if missing).
    #[arg(long, default_value = "out/eval-3dpw", value_name = "DIR")]
    pub output: PathBuf,
    /// Only part `i/n` of the sequences (0-based; sequence k of the sorted list goes to shard
    /// k mod n), for a job array: give each shard its own --output and join them with `ikol
    /// merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::shard::Shard>,
}

fn text(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{}: the path is not valid UTF-8", p.display()))
}

/// The sequence files the run will play; every problem names the option and the path.
fn sequence_files(a: &EvalArgs) -> Result<Vec<PathBuf>> {
    let root = &a.root;
    if !root.exists() {
        bail!(
            "--root {}: no such directory (the 3DPW root holding imageFiles/ and sequenceFiles/)",
            root.display()
        );
    }
    if !root.is_dir() {
        bail!(
            "--root {}: not a directory (the 3DPW root holding imageFiles/ and sequenceFiles/)",
            root.display()
        );
    }
    for sub in ["sequenceFiles", "imageFiles"] {
        if !root.join(sub).is_dir() {
            bail!(
                "--root {}: not a 3DPW root: no {sub}/ directory in it (3DPW holds \
                 imageFiles/<sequence>/image_%05d.jpg and sequenceFiles/<split>/<sequence>.pkl)",
                root.display()
            );
        }
    }
    if !pw3d::SPLITS.contains(&a.split.as_str()) {
        bail!(
            "--split {}: unknown split; expected one of {}",
            a.split,
            pw3d::SPLITS.join(", ")
        );
    }
    let dir = root.join("sequenceFiles").join(&a.split);
    let all = if dir.is_dir() {
        pw3d::sequence_files(root, &a.split, "all").unwrap_or_default()
    } else {
        Vec::new()
    };
    if all.is_empty() {
        let present: Vec<&str> = pw3d::SPLITS
            .iter()
            .copied()
            .filter(|s| pw3d::sequence_files(root, s, "all").is_ok_and(|f| !f.is_empty()))
            .collect();
        let hint = if present.is_empty() {
            "no split of this root has any".to_owned()
        } else {
            format!("splits with sequence files here: {}", present.join(", "))
        };
        bail!(
            "--split {}: no sequence files (.pkl) in {} ({hint})",
            a.split,
            dir.display()
        );
    }
    if a.sequence == "all" {
        return Ok(all);
    }
    let chosen: Vec<PathBuf> = all
        .iter()
        .filter(|f| f.file_stem().is_some_and(|s| *s == *a.sequence))
        .cloned()
        .collect();
    if chosen.is_empty() {
        let names: Vec<String> = all
            .iter()
            .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        bail!(
            "--sequence {}: no {}.pkl in {} (sequences: {}, or all)",
            a.sequence,
            a.sequence,
            dir.display(),
            names.join(", ")
        );
    }
    Ok(chosen)
}

/// `default`/`small` or an existing file.
fn check_model_file(option: &str, spec: &str) -> Result<()> {
    if spec == "default" || spec == "small" || Path::new(spec).is_file() {
        return Ok(());
    }
    bail!("{option} {spec}: no such file (a body model file, or default / small)");
}

fn check_file(option: &str, p: &Path, what: &str) -> Result<()> {
    if p.is_file() {
        return Ok(());
    }
    bail!("{option} {}: no such file ({what})", p.display());
}

/// The pipeline file for `a` and its variables.
fn plan(a: &EvalArgs) -> Result<(PipelineFile, BTreeMap<&'static str, String>)> {
    check_model_file("--body-model", &a.body_model)?;
    if let Some(r) = &a.h36m_regressor {
        check_file("--h36m-regressor", r, "J_regressor_h36m.npy, 17 x vertices")?;
    }
    if !(a.damping.is_finite() && a.damping >= 0.0) {
        bail!("--damping {}: must be zero or more", a.damping);
    }
    let mut vars: BTreeMap<&'static str, String> = BTreeMap::new();
    vars.insert("ROOT", text(&a.root)?);
    vars.insert("SPLIT", a.split.clone());
    vars.insert("SEQUENCE", a.sequence.clone());
    vars.insert("BODY_MODEL", a.body_model.clone());
    vars.insert(
        "H36M_REGRESSOR",
        a.h36m_regressor
            .as_deref()
            .map(text)
            .transpose()?
            .unwrap_or_default(),
    );
    vars.insert("OUT", text(&a.output)?);
    vars.insert("METHOD", a.method.clone());
    vars.insert("ITERATIONS", a.iterations.to_string());
    vars.insert("DAMPING", a.damping.to_string());
    vars.insert("INIT", a.init.clone());
    vars.insert("PRINT", "false".into());

    let (name, text_of_file) = if a.ground_truth_joints {
        if a.method == "none" {
            bail!(
                "--method none keeps a regressor's body; --ground-truth-joints gives joints: \
                 use ikol, hybrik, hybrik-naive or fit"
            );
        }
        if a.checkpoint.is_some() || a.flip_test {
            eprintln!(
                "note: --ground-truth-joints evaluates the solver alone: the network options \
                 (--checkpoint, --model, --variant, --device, --flip-test) are not used"
            );
        }
        (ORACLE_NAME, ORACLE_PIPELINE)
    } else {
        let regressor = matches!(a.model.as_str(), "hkmr" | "hmr");
        match (&a.checkpoint, a.model.as_str()) {
            (Some(c), _) => check_file(
                "--checkpoint",
                c,
                "network weights: upstream HybrIK/IKOL .pth or our .safetensors",
            )?,
            (None, "heatmap") => bail!(
                "--model heatmap needs a checkpoint: pass --checkpoint FILE (upstream \
                 HybrIK/IKOL .pth or our .safetensors), or use --model blazepose (pretrained \
                 BlazePose) or --ground-truth-joints (the solver alone)"
            ),
            (None, m) if regressor => bail!(
                "--model {m} needs a checkpoint: pass --checkpoint FILE (a regressor \
                 .safetensors written by ikol-train)"
            ),
            (None, _) => {}
        }
        match (regressor, a.method.as_str()) {
            (true, "none" | "fit") | (false, "ikol" | "hybrik" | "hybrik-naive" | "fit") => {}
            (true, m) => bail!(
                "--model {} gives the body itself, not joints for inverse kinematics: use \
                 --method none (its body) or fit (fitted from it), not {m}",
                a.model
            ),
            (false, m) => bail!(
                "--method {m} keeps a regressor's body: it needs --model hkmr or hmr, not {}",
                a.model
            ),
        }
        vars.insert("MODEL", a.model.clone());
        vars.insert(
            "CHECKPOINT",
            a.checkpoint
                .as_deref()
                .map(text)
                .transpose()?
                .unwrap_or_default(),
        );
        vars.insert("VARIANT", a.variant.clone());
        vars.insert("DEVICE", a.device.clone());
        vars.insert("FLIP_TEST", a.flip_test.to_string());
        (EVAL_NAME, EVAL_PIPELINE)
    };
    let file = PipelineFile::parse(Path::new(name), text_of_file)
        .with_context(|| format!("the built-in {name}"))?;
    Ok((file, vars))
}

/// `samples` and `missing` over all sequences, from `summary.json`.
fn totals(summary: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(summary).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let all = v.get("all")?;
    Some((all.get("samples")?.as_u64()?, all.get("missing")?.as_u64()?))
}

/// The whole command.
pub fn main(a: &EvalArgs) -> Result<()> {
    let mut files = sequence_files(a)?;
    let (file, mut vars) = plan(a)?;
    if let Some(shard) = a.shard {
        let stems = |fs: &[PathBuf]| -> Vec<String> {
            fs.iter()
                .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        };
        let all = stems(&files);
        files = shard.select(&files);
        let names = stems(&files);
        // What this shard is part of, for `ikol merge` to check that every shard is there;
        // written first, and by a shard that gets no sequence too.
        crate::shard::write_eval_record(&a.output, shard, &a.split, &all, &names)?;
        if files.is_empty() {
            run::say(&format!(
                "shard {shard}: none of the {} sequence(s) falls to this shard; nothing to do\n",
                all.len()
            ));
            return Ok(());
        }
        run::say(&format!(
            "shard {shard}: {} of the {} sequence(s): {}\n",
            names.len(),
            all.len(),
            names.join(", ")
        ));
        vars.insert("SEQUENCE", names.join(","));
    }
    std::fs::create_dir_all(&a.output).with_context(|| {
        format!(
            "--output {}: cannot create the directory",
            a.output.display()
        )
    })?;
    let summary = a.output.join("summary.json");
    let csvs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.file_stem())
        .map(|s| a.output.join(format!("{}.csv", s.to_string_lossy())))
        .collect();
    // Files an earlier run left that this run writes must not pass for this run's.
    for old in csvs.iter().chain([&summary]) {
        match std::fs::remove_file(old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing the old {}", old.display()));
            }
            _ => {}
        }
    }

    let front = if a.ground_truth_joints {
        "ground-truth joints".to_owned()
    } else {
        match &a.checkpoint {
            Some(c) => format!("{} network {} ({})", a.model, c.display(), a.variant),
            None => format!("{} network", a.model),
        }
    };
    let solver = if a.method == "ikol" {
        format!(
            "ikol ({} iterations, damping {}, init {})",
            a.iterations, a.damping, a.init
        )
    } else {
        a.method.clone()
    };
    run::say(&format!(
        "3DPW {}: {} sequence(s) under {}; {front} -> {solver}; body model {}\n",
        a.split,
        files.len(),
        a.root.display(),
        a.body_model
    ));

    let run_args = RunArgs {
        file: file.path.clone(),
        vars: vars.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ..RunArgs::default()
    };
    run::run_file(&file, &run_args)?;

    if !summary.is_file() {
        bail!(
            "the run ended without writing {} (see the messages above)",
            summary.display()
        );
    }
    let written: Vec<String> = csvs
        .iter()
        .filter(|c| c.is_file())
        .filter_map(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    run::say(&format!(
        "wrote {} and {} per-sequence CSV(s) in {}: {}\n",
        summary.display(),
        written.len(),
        a.output.display(),
        written.join(", ")
    ));
    if let Some((samples, missing)) = totals(&summary)
        && samples == 0
    {
        bail!(
            "no person-frame was scored ({missing} ground-truth people without a prediction); \
             see the table above"
        );
    }
    Ok(())
}
