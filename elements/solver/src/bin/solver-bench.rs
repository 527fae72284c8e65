//! Accuracy and speed of the IK solvers (see `ikol_solver::benchmark`).
//!
//! Usage: `solver-bench [--people N] [--seed S] [--no-timing] [--batch B] [--only TEXT] [--dump FILE] [--against FILE]`
//! (release build recommended: `cargo run --release -p ikol-solver --bin solver-bench`).
//! The rest skeleton and joint-shape basis are those of the embedded default body model (29 rows:
//! SMPL-24 and the HybrIK leaf vertices, linear in its 10 shape coefficients).

use ikol_solver::JointShapeBasis;
use ikol_solver::benchmark::{BenchConfig, BenchReport, run};
use std::path::PathBuf;
use std::process::Command;

/// The body model under test: the embedded default model.
fn basis() -> JointShapeBasis {
    match ikol_body::BodyModel::embedded_default().and_then(|m| m.joint_shape_basis(true)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("solver-bench: {e}");
            std::process::exit(1)
        }
    }
}

fn main() {
    let mut cfg = BenchConfig::default();
    let (mut dump, mut against) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a non-negative integer");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--people" => cfg.people = value("--people") as usize,
            "--seed" => cfg.seed = value("--seed"),
            "--batch" => cfg.batch = value("--batch") as usize,
            "--no-timing" => cfg.timing = false,
            "--only" => {
                let Some(text) = args.next() else {
                    eprintln!("--only needs a part of a solver's label, e.g. upstream");
                    std::process::exit(2)
                };
                cfg.only = Some(text);
            }
            "--dump" | "--against" => {
                let Some(path) = args.next() else {
                    eprintln!("{a} needs a file");
                    std::process::exit(2)
                };
                if a == "--dump" {
                    dump = Some(PathBuf::from(path));
                } else {
                    against = Some(PathBuf::from(path));
                }
            }
            "-h" | "--help" => {
                println!(
                    "solver-bench [--people N] [--seed S] [--no-timing] [--batch B] [--only TEXT] [--dump FILE] [--against FILE]"
                );
                return;
            }
            other => {
                eprintln!("unknown argument {other} (try --help)");
                std::process::exit(2)
            }
        }
    }
    match run(&basis(), &cfg) {
        Ok(report) => {
            print!("{report}");
            if let Some(path) = &dump {
                write_dump(&report, path);
            }
            if let Some(path) = &against {
                compare_dump(&report, path);
            }
            if cfg.timing {
                torch_comparison(&report);
            }
        }
        Err(e) => {
            eprintln!("solver-bench: {e}");
            std::process::exit(1)
        }
    }
}

/// Every solver's solved joints, one line per solver and layout: the label, then the numbers
/// (shortest round-trip form, so nothing is lost).
fn write_dump(report: &BenchReport, path: &std::path::Path) {
    let mut text = String::new();
    for (layout, rows) in [("24", &report.layout24), ("29", &report.layout29)] {
        for row in rows.iter().filter(|r| !r.joints.is_empty()) {
            let numbers: Vec<String> = row.joints.iter().map(f64::to_string).collect();
            text += &format!("{layout}\t{}\t{}\n", row.solver, numbers.join(" "));
        }
    }
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("solver-bench: cannot write {}: {e}", path.display());
        std::process::exit(1)
    }
}

/// The largest difference of each solver's joints from a `--dump` of another build (same
/// options), in metres; exit 1 when a solver is missing or its sample count differs.
fn compare_dump(report: &BenchReport, path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("solver-bench: cannot read {}: {e}", path.display());
        std::process::exit(1)
    });
    println!("\nSolved joints against {}:\n", path.display());
    println!("| layout | solver | max abs difference (m) |\n|---|---|---|");
    let mut ok = true;
    for (layout, rows) in [("24", &report.layout24), ("29", &report.layout29)] {
        for row in rows.iter().filter(|r| !r.joints.is_empty()) {
            let old: Option<Vec<f64>> = text
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .filter(|(l, _)| *l == layout)
                .filter_map(|(_, rest)| rest.split_once('\t'))
                .find(|(label, _)| *label == row.solver)
                .and_then(|(_, numbers)| numbers.split(' ').map(|x| x.parse().ok()).collect());
            match old {
                Some(old) if old.len() == row.joints.len() => {
                    // NaN anywhere (either build) shows, as f64::max would drop it.
                    let d = old
                        .iter()
                        .zip(&row.joints)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, |m: f64, d| if d.is_nan() { d } else { m.max(d) });
                    println!("| {layout} | {} | {d:.3e} |", row.solver);
                }
                _ => {
                    println!("| {layout} | {} | not comparable |", row.solver);
                    ok = false;
                }
            }
        }
    }
    if !ok {
        std::process::exit(1)
    }
}

/// The PyTorch reference script (in the source tree).
const TORCH_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_torch_ikol.py");

/// The Python to run the reference with, if there is one.
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IKOL_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/ikol/pyenv/bin/python");
    p.exists().then_some(p)
}

/// The number after `"key":` in a flat JSON object.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let rest = &json[json.find(&format!("\"{key}\""))? + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// Time the PyTorch IKOL reference on the benchmark's rest joints and print the ratios.
fn torch_comparison(report: &BenchReport) {
    let skip = |why: &str| println!("\nPyTorch IKOL reference skipped: {why}.");
    let Some(rust_us) = report.ikol_upstream_us_per_person() else {
        return skip("no Rust IKOL timing");
    };
    let Some(py) = python() else {
        return skip("no Python (set IKOL_PYTHON or create $HOME/.cache/ikol/pyenv)");
    };
    let rows: Vec<String> = basis().template[..24]
        .iter()
        .map(|p| format!("[{}, {}, {}]", p.x, p.y, p.z))
        .collect();
    let rest_path =
        std::env::temp_dir().join(format!("ikol-bench-rest-{}.json", std::process::id()));
    if let Err(e) = std::fs::write(
        &rest_path,
        format!("{{\"rest_joints\": [{}]}}\n", rows.join(", ")),
    ) {
        return skip(&format!("cannot write {}: {e}", rest_path.display()));
    }
    let out = Command::new(&py)
        .arg(TORCH_SCRIPT)
        .arg("--rest")
        .arg(&rest_path)
        .args(["--threads", "1"])
        .output();
    // Best effort: a stale temp file is harmless.
    let _ = std::fs::remove_file(&rest_path);
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("").to_string();
            return skip(&format!("{} failed ({}): {last}", py.display(), o.status));
        }
        Err(e) => return skip(&format!("cannot run {}: {e}", py.display())),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
    else {
        return skip("no JSON from the script");
    };
    let (Some(b1), Some(b64)) = (
        json_number(line, "batch1_ms"),
        json_number(line, "batch64_ms"),
    ) else {
        return skip(&format!("unreadable JSON {line}"));
    };
    let rust_ms = rust_us / 1e3;
    println!(
        "\nPyTorch IKOL (autograd Jacobian, 5 it, 1 thread): {b1:.1} ms at batch 1 -> Rust is \
         {:.0}x faster; {b64:.1} ms per batch of 64 -> Rust batch-64 throughput is {:.0}x faster",
        b1 / rust_ms,
        b64 / (64.0 * rust_ms)
    );
    println!(
        "(Rust: {rust_us:.1} us per person, single thread, \"{}\"; PyTorch reference: {})",
        ikol_solver::benchmark::IKOL_UPSTREAM,
        line.trim()
    );
}
