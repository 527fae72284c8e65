//! LBS speed of the default model against smplx (PyTorch CPU) on the same model file, in the same
//! run. `cargo bench -p ikol-body --bench lbs` (set IKOL_PYTHON to a Python with torch and smplx;
//! default ~/.cache/ikol/pyenv/bin/python; without it only our figures print).

use std::time::Instant;

use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_types::rotation::axis_angle_to_matrix;

fn people(n: usize, nb: usize) -> Vec<(Vec<f64>, Vec<Matrix3<f64>>)> {
    // Deterministic pseudo-random poses (LCG), angles up to ~0.5 rad per axis.
    let mut s = 12345u64;
    let mut r = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    (0..n)
        .map(|_| {
            let beta = (0..nb).map(|_| 2.0 * r()).collect();
            let rots = (0..24)
                .map(|_| axis_angle_to_matrix(&Vector3::new(r(), r(), r())))
                .collect();
            (beta, rots)
        })
        .collect()
}

fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let t0 = Instant::now();
    for _ in 0..reps {
        f();
    }
    t0.elapsed().as_secs_f64() * 1e3 / reps as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = BodyModel::embedded_default()?;
    let one = people(1, model.num_betas);
    let batch = people(64, model.num_betas);
    let mut out = ikol_body::Posed::default();
    let ours1 = time_ms(200, || {
        model
            .forward_into(&one[0].0, &one[0].1, &mut out)
            .expect("forward")
    });
    let ours64_1t = time_ms(10, || {
        for (b, r) in &batch {
            model.forward_into(b, r, &mut out).expect("forward");
        }
    });
    let ours64 = time_ms(10, || {
        model.forward_batch(&batch).expect("batch");
    });
    println!(
        "ikol-body LBS, {} vertices, {} betas, no pose blend shapes",
        model.num_vertices(),
        model.num_betas
    );
    println!("  batch 1  (1 thread):  {ours1:.3} ms/person");
    println!("  batch 64 (1 thread):  {:.3} ms/person", ours64_1t / 64.0);
    println!("  batch 64 (all cores): {:.3} ms/person", ours64 / 64.0);

    // smplx on the same file, same machine, same run.
    let python = std::env::var("IKOL_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ikol/pyenv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let dir = std::env::temp_dir().join(format!("ikol-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("default.safetensors");
    std::fs::write(
        &file,
        ikol_body::ikolfile::write(&model, &Default::default())?,
    )?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_smplx.py");
    match std::process::Command::new(&python)
        .arg(script)
        .arg(&file)
        .output()
    {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
            let s1 = v["batch1_ms"].as_f64().unwrap_or(f64::NAN);
            let s64 = v["batch64_ms"].as_f64().unwrap_or(f64::NAN);
            println!(
                "smplx.lbs.lbs (torch {}, 1 thread), zero pose blend shapes as smplx always applies them",
                v["torch"]
            );
            println!(
                "  batch 1:  {s1:.3} ms/person   -> ikol is {:.1}x faster",
                s1 / ours1
            );
            println!(
                "  batch 64: {:.3} ms/person   -> ikol is {:.1}x faster (1 thread each)",
                s64 / 64.0,
                s64 / ours64_1t
            );
        }
        Ok(o) => println!(
            "smplx reference failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => println!("smplx reference not run ({python}: {e}); set IKOL_PYTHON"),
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
