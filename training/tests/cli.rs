//! The `ikol-train` command: in-process data-parallel workers, the multi-process launcher's
//! environment in a build without NCCL, and CUDA asked of a build or machine without it.

use std::process::Command;

fn ikol_train() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ikol-train"));
    // A launcher's variables in the test's own environment must not leak in.
    for v in [
        "WORLD_SIZE",
        "RANK",
        "LOCAL_RANK",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_PROCID",
    ] {
        c.env_remove(v);
    }
    c
}

fn write_config(dir: &std::path::Path, steps: usize) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut cfg = ikol_train::TrainConfig {
        data: ikol_train::config::DataConfig::Synthetic { count: 8, seed: 1 },
        batch_size: 2,
        steps,
        eval_every: 0,
        eval_count: 0,
        checkpoint_every: 0,
        out_dir: dir.join("run"),
        ..Default::default()
    };
    cfg.solver.enabled = false;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?)?;
    Ok(path)
}

#[test]
fn two_local_workers_train_and_rank0_writes() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ikol-train-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = write_config(&dir, 3)?;
    let out = ikol_train()
        .args(["train", "--workers", "2", "--config"])
        .arg(&cfg)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = std::fs::read_to_string(dir.join("run/metrics.csv"))?;
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    assert!(dir.join("run/checkpoint-0000003.safetensors").exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn launcher_environment_needs_nccl_and_cuda_is_refused_cleanly() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ikol-train-cli-env-{}", std::process::id()));
    let cfg = write_config(&dir, 1)?;
    // torchrun's variables, in a build without the nccl feature.
    let out = ikol_train()
        .args(["train", "--config"])
        .arg(&cfg)
        .envs([
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    if cfg!(feature = "nccl") {
        assert!(err.contains("CUDA") || err.contains("NCCL"), "{err}");
    } else {
        assert!(
            err.contains("no NCCL") && err.contains("--features nccl"),
            "{err}"
        );
    }
    // CUDA asked of a build without it (or a machine without a GPU): an error, not a crash.
    let out = ikol_train()
        .args(["--device", "cuda", "train", "--config"])
        .arg(&cfg)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CUDA device 0 requested"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
