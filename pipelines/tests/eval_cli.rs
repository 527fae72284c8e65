//! `ikol eval-3dpw` and the two 3DPW pipeline files on the fixture tree `tests/data/3dpw`
//! (2 test sequences, 12 person-frames with a valid camera pose): the solver alone on
//! ground-truth joints reproduces the ground truth, the network chain (joints or a body
//! regressor) scores every person, and bad options fail with messages that name the option and
//! the path.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: the commands run from there, as the README shows them.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Output of a finished `ikol`.
#[derive(Debug)]
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

fn ikol(args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_ikol"))
        .args(args)
        .current_dir(workspace())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    Run {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A fresh directory for one test's outputs.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("ikol-eval-cli-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn summary(dir: &Path) -> serde_json::Value {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Data rows of `<dir>/<sequence>.csv` (the header excluded).
fn csv_rows(dir: &Path, sequence: &str) -> usize {
    let path = dir.join(format!("{sequence}.csv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().starts_with("frame,track_id,"),
        "{}",
        path.display()
    );
    lines.filter(|l| !l.trim().is_empty()).count()
}

/// The overall rows of the table in `stdout` (the table is printed once).
fn all_rows(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("all"))
        .collect()
}

/// Every person-frame scored, none missing, all errors below `limit_mm`, and the files.
fn assert_exact(run: &Run, out: &Path, limit_mm: f64) {
    assert!(run.ok, "{}", run.all());
    let rows = all_rows(&run.stdout);
    assert_eq!(rows.len(), 1, "the table once:\n{}", run.all());
    assert_eq!(
        rows[0].split_whitespace().nth(1),
        Some("12"),
        "{}",
        run.all()
    );
    assert!(
        run.stdout
            .contains(&format!("wrote {}", s(&out.join("summary.json")))),
        "{}",
        run.all()
    );
    let v = summary(out);
    let all = &v["all"];
    assert_eq!(all["samples"].as_u64(), Some(12), "{v}");
    assert_eq!(all["missing"].as_u64(), Some(0), "{v}");
    for key in ["mpjpe_mm", "pa_mpjpe_mm", "pve_mm"] {
        let e = all[key].as_f64().unwrap();
        assert!((0.0..limit_mm).contains(&e), "{key} = {e} mm\n{v}");
    }
    assert_eq!(v["comparable"].as_bool(), Some(false), "{v}");
    assert_eq!(csv_rows(out, "fixture_walk_00"), 5);
    assert_eq!(csv_rows(out, "fixture_pair_01"), 7);
}

#[test]
fn ground_truth_joints_ikol_reproduces_the_ground_truth() {
    let out = tmp("oracle-ikol");
    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--ground-truth-joints",
        "--method",
        "ikol",
        "--iterations",
        "50",
        "--damping",
        "0.01",
        "--output",
        s(&out),
    ]);
    assert_exact(&r, &out, 1.0);
}

#[test]
fn ground_truth_joints_hybrik_is_exact() {
    // The true twist is given, so the analytic IK recovers the pose.
    let out = tmp("oracle-hybrik");
    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--ground-truth-joints",
        "--method",
        "hybrik",
        "--output",
        s(&out),
    ]);
    assert_exact(&r, &out, 1.0);
}

#[test]
fn network_chain_scores_every_person() {
    // The tiny random network of the backbone tests: the numbers mean nothing, but every
    // ground-truth person goes through crop, network and solver and is scored.
    let out = tmp("network");
    let checkpoint = workspace().join("elements/backbone/tests/data/ikol24_r34w2.pth");
    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--checkpoint",
        s(&checkpoint),
        "--output",
        s(&out),
    ]);
    assert!(r.ok, "{}", r.all());
    assert_eq!(all_rows(&r.stdout).len(), 1, "{}", r.all());
    let v = summary(&out);
    assert_eq!(v["all"]["samples"].as_u64(), Some(12), "{v}");
    assert_eq!(v["all"]["missing"].as_u64(), Some(0), "{v}");
    assert!(v["all"]["mpjpe_mm"].as_f64().unwrap().is_finite(), "{v}");

    // One sequence: only its rows and its CSV.
    let one = tmp("network-one");
    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--sequence",
        "fixture_walk_00",
        "--checkpoint",
        s(&checkpoint),
        "--output",
        s(&one),
    ]);
    assert!(r.ok, "{}", r.all());
    assert_eq!(summary(&one)["all"]["samples"].as_u64(), Some(5));
    assert_eq!(csv_rows(&one, "fixture_walk_00"), 5);
    assert!(!one.join("fixture_pair_01.csv").exists());
}

/// A body regressor (HKMR, tiny and random as in the backbone tests) with `--method none`:
/// every person is scored from the regressor's own body; the IK methods, a regressor without
/// a checkpoint and `--method none` without a regressor are refused by name.
#[test]
fn regressor_chain_scores_every_person_and_bad_pairs_are_refused() {
    let dir = tmp("regressor");
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("hkmr.safetensors");
    let cfg = ikol_backbone::RegressorNetConfig::tiny(ikol_backbone::RegressorKind::Hkmr);
    ikol_backbone::DirectRegressor::initialised(&cfg, &ikol_backbone::candle::Device::Cpu)
        .unwrap()
        .save(&ck)
        .unwrap();
    let out = dir.join("out");
    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--model",
        "hkmr",
        "--checkpoint",
        s(&ck),
        "--method",
        "none",
        "--output",
        s(&out),
    ]);
    assert!(r.ok, "{}", r.all());
    let v = summary(&out);
    assert_eq!(v["all"]["samples"].as_u64(), Some(12), "{v}");
    assert_eq!(v["all"]["missing"].as_u64(), Some(0), "{v}");
    assert!(v["all"]["mpjpe_mm"].as_f64().unwrap().is_finite(), "{v}");

    let o = s(&out);
    let refused = |args: &[&str], needles: &[&str]| {
        let r = ikol(args);
        assert!(!r.ok, "{args:?}: {}", r.all());
        for n in needles {
            assert!(r.stderr.contains(n), "{args:?}: no {n:?} in {}", r.all());
        }
    };
    let root = ["eval-3dpw", "--root", "tests/data/3dpw", "--output", o];
    let ck = s(&ck);
    refused(
        &[&root[..], &["--model", "hkmr", "--checkpoint", ck]].concat(),
        &["--model hkmr gives the body itself", "not ikol"],
    );
    refused(
        &[&root[..], &["--model", "hmr", "--method", "none"]].concat(),
        &["--model hmr needs a checkpoint"],
    );
    refused(
        &[&root[..], &["--model", "blazepose", "--method", "none"]].concat(),
        &["--method none keeps a regressor's body", "not blazepose"],
    );
    refused(
        &[&root[..], &["--ground-truth-joints", "--method", "none"]].concat(),
        &["--method none keeps a regressor's body"],
    );
}

#[test]
fn bad_options_fail_clearly() {
    let out = tmp("errors");
    let out = s(&out);

    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "no/such/3dpw",
        "--ground-truth-joints",
        "--output",
        out,
    ]);
    assert!(!r.ok, "{}", r.all());
    assert!(
        r.stderr.contains("--root no/such/3dpw") && r.stderr.contains("no such directory"),
        "{}",
        r.all()
    );

    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--split",
        "train",
        "--ground-truth-joints",
        "--output",
        out,
    ]);
    assert!(!r.ok, "{}", r.all());
    assert!(
        r.stderr.contains("--split train")
            && r.stderr.contains("no sequence files")
            && r.stderr.contains("sequenceFiles/train"),
        "{}",
        r.all()
    );

    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--sequence",
        "nope",
        "--ground-truth-joints",
        "--output",
        out,
    ]);
    assert!(!r.ok, "{}", r.all());
    assert!(
        r.stderr.contains("--sequence nope") && r.stderr.contains("fixture_walk_00"),
        "{}",
        r.all()
    );

    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--model",
        "heatmap",
        "--output",
        out,
    ]);
    assert!(!r.ok, "{}", r.all());
    for words in [
        "--model heatmap needs a checkpoint",
        "--checkpoint",
        "--model blazepose",
        "--ground-truth-joints",
    ] {
        assert!(r.stderr.contains(words), "{words:?}: {}", r.all());
    }

    let r = ikol(&[
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--checkpoint",
        "no/such.pth",
        "--output",
        out,
    ]);
    assert!(!r.ok, "{}", r.all());
    assert!(
        r.stderr.contains("--checkpoint no/such.pth: no such file"),
        "{}",
        r.all()
    );
}

#[test]
fn oracle_pipeline_file_runs_with_ikol_run() {
    let out = tmp("run-oracle");
    let r = ikol(&[
        "run",
        "pipelines/3dpw-oracle.pipeline",
        "ROOT=tests/data/3dpw",
        &format!("OUT={}", s(&out)),
    ]);
    assert!(r.ok, "{}", r.all());
    // The runner's summary, then the table once.
    assert!(r.stdout.contains("frames:             9"), "{}", r.all());
    assert!(r.stdout.contains("people found:       12"), "{}", r.all());
    assert_eq!(all_rows(&r.stdout).len(), 1, "{}", r.all());
    let v = summary(&out);
    assert_eq!(v["all"]["samples"].as_u64(), Some(12), "{v}");
    assert_eq!(v["all"]["missing"].as_u64(), Some(0), "{v}");
    assert_eq!(csv_rows(&out, "fixture_walk_00"), 5);
    assert_eq!(csv_rows(&out, "fixture_pair_01"), 7);

    // PRINT=true: the element prints the table itself, the runner does not repeat it.
    let r = ikol(&[
        "run",
        "pipelines/3dpw-oracle.pipeline",
        "ROOT=tests/data/3dpw",
        &format!("OUT={}", s(&out)),
        "PRINT=true",
    ]);
    assert!(r.ok, "{}", r.all());
    assert_eq!(all_rows(&r.stdout).len(), 1, "{}", r.all());

    // Both files list their variables and substitute them.
    for file in [
        "pipelines/3dpw-oracle.pipeline",
        "pipelines/3dpw-eval.pipeline",
    ] {
        let r = ikol(&["run", "--list-vars", file]);
        assert!(r.ok, "{file}: {}", r.all());
        for var in [
            "ROOT",
            "OUT",
            "SPLIT",
            "SEQUENCE",
            "BODY_MODEL",
            "H36M_REGRESSOR",
        ] {
            assert!(
                r.stdout.contains(&format!("  {var} ")),
                "{file}: {var}\n{}",
                r.all()
            );
        }
        let r = ikol(&["run", "--dry-run", file, "ROOT=tests/data/3dpw"]);
        assert!(
            r.ok && r.stdout.contains("ikol3dpwsrc location=tests/data/3dpw"),
            "{file}: {}",
            r.all()
        );
    }
}

/// A job array: `--shard 0/2` and `--shard 1/2` each score their sequences (sequence k to
/// shard k mod 2), and `ikol merge` joins them into what one unsharded run writes: the same
/// per-sequence rows and CSVs, the overall means weighted by person-frames.
#[test]
fn sharded_evaluation_merges_to_the_unsharded_result() {
    let checkpoint = workspace().join("elements/backbone/tests/data/ikol24_r34w2.pth");
    let base = [
        "eval-3dpw",
        "--root",
        "tests/data/3dpw",
        "--checkpoint",
        s(&checkpoint),
    ];
    let whole = tmp("shard-whole");
    let r = ikol(&[&base[..], &["--output", s(&whole)]].concat());
    assert!(r.ok, "{}", r.all());
    let parts: Vec<PathBuf> = (0..2).map(|i| tmp(&format!("shard-{i}"))).collect();
    for (i, p) in parts.iter().enumerate() {
        let shard = format!("{i}/2");
        let r = ikol(&[&base[..], &["--shard", &shard, "--output", s(p)]].concat());
        assert!(r.ok, "{}", r.all());
        // The fixture's sorted sequences: fixture_pair_01 (shard 0), fixture_walk_00 (shard 1).
        let want = ["fixture_pair_01", "fixture_walk_00"][i];
        let v = summary(p);
        let seqs: Vec<&String> = v["sequences"].as_object().unwrap().keys().collect();
        assert_eq!(seqs, vec![want], "{v}");
    }
    let merged = tmp("shard-merged");
    let r = ikol(&["merge", s(&parts[0]), s(&parts[1]), "--output", s(&merged)]);
    assert!(r.ok, "{}", r.all());
    let (m, w) = (summary(&merged), summary(&whole));
    assert_eq!(m["sequences"], w["sequences"]);
    assert_eq!(m["all"]["samples"], w["all"]["samples"]);
    for k in [
        "mpjpe_mm",
        "pa_mpjpe_mm",
        "pve_mm",
        "mpjpe_24_mm",
        "pa_mpjpe_24_mm",
    ] {
        let (a, b) = (m["all"][k].as_f64().unwrap(), w["all"][k].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{k}: merged {a} vs one run {b}"
        );
    }
    assert_eq!(csv_rows(&merged, "fixture_walk_00"), 5);
    assert_eq!(csv_rows(&merged, "fixture_pair_01"), 7);
    // A missing shard is named; a shard merged twice is refused by name; a bad --shard too.
    let r = ikol(&["merge", s(&parts[0]), "--output", s(&tmp("partial"))]);
    assert!(
        !r.ok && r.stderr.contains("shards 1/2 are missing"),
        "{}",
        r.all()
    );
    let r = ikol(&[
        "merge",
        s(&parts[0]),
        s(&parts[0]),
        "--output",
        s(&tmp("twice")),
    ]);
    assert!(!r.ok && r.stderr.contains("appears twice"), "{}", r.all());
    let r = ikol(&[&base[..], &["--shard", "2/2", "--output", s(&tmp("bad"))]].concat());
    assert!(!r.ok && r.stderr.contains("--shard"), "{}", r.all());
}

/// `ikol batch` over a folder of two clips in two shards, then `ikol merge`: each clip is run
/// once, through the pipeline file, and a missing shard is named.
#[test]
fn batch_shards_cover_a_folder_once() {
    let inputs = tmp("batch-in");
    std::fs::create_dir_all(&inputs).unwrap();
    // Two tiny real videos (GStreamer's test source, H.264 in MP4).
    for (name, pattern) in [("a.mp4", "ball"), ("b.mp4", "smpte")] {
        let st = Command::new("gst-launch-1.0")
            .args([
                "-q",
                "videotestsrc",
                "num-buffers=3",
                &format!("pattern={pattern}"),
            ])
            .args([
                "!",
                "video/x-raw,width=64,height=48",
                "!",
                "x264enc",
                "!",
                "mp4mux",
            ])
            .args([
                "!",
                "filesink",
                &format!("location={}", inputs.join(name).display()),
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::write(inputs.join("notes.txt"), "not a video").unwrap();
    // A pipeline file of the batch kind: INPUT in, the decoded grey frames to OUTPUT and JSON.
    let pipeline = inputs.join("grey.pipeline");
    std::fs::write(
        &pipeline,
        "# Variables:\n#   INPUT  video\n#   OUTPUT raw grey frames\n#   JSON   the same\n\
         filesrc location=${INPUT} ! decodebin ! videoconvert ! video/x-raw,format=GRAY8 \
         ! tee name=t t. ! queue ! filesink location=${OUTPUT} \
         t. ! queue ! filesink location=${JSON}\n",
    )
    .unwrap();
    let out = tmp("batch-out");
    for i in 0..2 {
        let shard = format!("{i}/2");
        let r = ikol(&[
            "batch",
            s(&pipeline),
            "--inputs",
            s(&inputs),
            "--output",
            s(&out),
            "--shard",
            &shard,
        ]);
        assert!(r.ok, "{}", r.all());
        let rec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("batch-shard-{i}-of-2.json"))).unwrap(),
        )
        .unwrap();
        let names: Vec<&str> = rec["videos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["video"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![["a.mp4", "b.mp4"][i]], "{rec}");
        assert_eq!(rec["videos_in_folder"], 2);
    }
    let merged = tmp("batch-merged");
    let r = ikol(&["merge", s(&out), "--output", s(&merged)]);
    assert!(r.ok, "{}", r.all());
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("batch.json")).unwrap()).unwrap();
    assert_eq!(m["videos"].as_object().unwrap().len(), 2, "{m}");
    // Every frame of both clips went through the pipeline (3 frames of 64 x 48 grey each).
    for stem in ["a", "b"] {
        let len = std::fs::metadata(out.join(format!("{stem}.mp4")))
            .unwrap()
            .len();
        assert_eq!(len, 3 * 64 * 48, "{stem}");
    }
    // Without shard 1's record the merge names it.
    std::fs::remove_file(out.join("batch-shard-1-of-2.json")).unwrap();
    let r = ikol(&["merge", s(&out), "--output", s(&merged)]);
    assert!(!r.ok && r.stderr.contains("1/2"), "{}", r.all());
}
