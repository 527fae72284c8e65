//! Processing a corpus as a job array: `--shard i/n` picks a deterministic part of the work
//! (item k of the sorted list goes to shard k mod n), every shard writes its own folder, and
//! `ikol merge` joins the folders into the result one unsharded run would have written.
//!
//! * `ikol eval-3dpw --shard i/n`: the split's sequences; each shard's folder has its
//!   `summary.json` and per-sequence CSVs; merging recomputes the overall means weighted by
//!   person-frames (what one run computes, to rounding).
//! * `ikol batch PIPELINE --inputs DIR --shard i/n`: the videos of a folder through a pipeline
//!   file, one output per video; each shard writes `batch-shard-<i>-of-<n>.json` (what ran, how
//!   it ended); merging checks that every video of the folder was done once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::run::{self, RunArgs};

/// Part `index` of `count` (0-based; written `i/n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected i/n, e.g. 0/4 (shards are 0 .. n-1)"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {i:?} is not a shard index"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a shard count"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "{s:?}: shard index must be 0 .. {} (n = {count})",
                count.saturating_sub(1)
            ));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// This shard's items of a list in a fixed order: item k when k mod n = i.
    pub fn select<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Batch: a folder of videos through a pipeline file.

/// Video files `ikol batch` takes from a folder (by extension, case-insensitive).
const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mkv", "webm", "mov", "avi", "m4v", "ts"];

/// Options of `ikol batch`.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// The pipeline file, run once per video with INPUT, OUTPUT and JSON set (e.g.
    /// pipelines/video-to-overlay.pipeline).
    pub pipeline: PathBuf,
    /// More variables for every run, `NAME=value` (FOCAL, METHOD, ...).
    pub vars: Vec<String>,
    /// The folder of videos (sorted by name; mp4, mkv, webm, mov, avi, m4v, ts).
    #[arg(long, value_name = "DIR")]
    pub inputs: PathBuf,
    /// Where `<video>.mp4`, `<video>.jsonl` and this shard's record go.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Only this part of the videos: `i/n` (0-based; video k goes to shard k mod n).
    #[arg(long, default_value = "0/1")]
    pub shard: Shard,
}

fn videos(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("--inputs {}: cannot read the folder", dir.display()))?;
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| {
                    VIDEO_EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
                })
        })
        .collect();
    v.sort();
    ensure!(
        !v.is_empty(),
        "--inputs {}: no video files ({}) in it",
        dir.display(),
        VIDEO_EXTENSIONS.join(", ")
    );
    Ok(v)
}

fn record_name(shard: Shard) -> String {
    format!("batch-shard-{}-of-{}.json", shard.index, shard.count)
}

/// `ikol batch`: every video of this shard through the pipeline; a failed video is recorded
/// and the others still run; the exit status says whether all succeeded.
pub fn batch(a: &BatchArgs) -> Result<()> {
    let all = videos(&a.inputs)?;
    // One output name per video: two videos with one stem would write the same files.
    let mut stems: Vec<_> = all.iter().filter_map(|v| v.file_stem()).collect();
    stems.sort();
    if let Some(w) = stems.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "--inputs {}: two videos named {} (with different extensions) would write the same \
             outputs; rename one",
            a.inputs.display(),
            w[0].to_string_lossy()
        );
    }
    let mine = a.shard.select(&all);
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("--output {}: cannot create the folder", a.output.display()))?;
    for v in &a.vars {
        ensure!(
            v.contains('='),
            "{v:?}: variables are NAME=value (INPUT, OUTPUT and JSON are set per video)"
        );
        let name = v.split('=').next().unwrap_or_default();
        ensure!(
            !matches!(name, "INPUT" | "OUTPUT" | "JSON"),
            "{name}: set per video by ikol batch"
        );
    }
    run::say(&format!(
        "batch shard {}: {} of the {} videos in {}\n",
        a.shard,
        mine.len(),
        all.len(),
        a.inputs.display()
    ));
    let mut done = Vec::new();
    let mut failures = 0;
    for video in &mine {
        let stem = video
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let json_out = a.output.join(format!("{stem}.jsonl"));
        let mut vars = vec![
            format!("INPUT={}", video.display()),
            format!("OUTPUT={}", a.output.join(format!("{stem}.mp4")).display()),
            format!("JSON={}", json_out.display()),
        ];
        vars.extend(a.vars.iter().cloned());
        let r = run::main(&RunArgs {
            file: a.pipeline.clone(),
            vars,
            ..RunArgs::default()
        });
        let frames = std::fs::read_to_string(&json_out).map_or(0, |t| t.lines().count());
        let name = video
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match r {
            Ok(()) => done.push(json!({"video": name, "ok": true, "frames": frames})),
            Err(e) => {
                failures += 1;
                eprintln!("batch: {}: {e:#}", video.display());
                done.push(json!({"video": name, "ok": false, "frames": frames,
                                 "error": format!("{e:#}")}));
            }
        }
    }
    let record = json!({
        "shard": a.shard.index,
        "shards": a.shard.count,
        "pipeline": a.pipeline.display().to_string(),
        "inputs": a.inputs.display().to_string(),
        "videos_in_folder": all.len(),
        "videos": done,
    });
    let path = a.output.join(record_name(a.shard));
    std::fs::write(&path, serde_json::to_string_pretty(&record)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    run::say(&format!(
        "batch shard {}: {} videos, {failures} failed; wrote {}\n",
        a.shard,
        mine.len(),
        path.display()
    ));
    ensure!(failures == 0, "{failures} of {} videos failed", mine.len());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Merge.

/// Options of `ikol merge`.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// The shards' output folders (eval-3dpw --output, or batch --output; one folder may hold
    /// every batch shard).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Where the merged result goes (eval-3dpw: summary.json and the CSVs; batch:
    /// batch.json).
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
}

/// The record `eval-3dpw --shard` leaves in its output folder.
const EVAL_RECORD: &str = "eval-shard.json";

/// Writes `dir/eval-shard.json`: this shard, the split's sequences and this shard's; removes an
/// older run's `summary.json` and CSVs from `dir` (they must not pass for this run's).
pub fn write_eval_record(
    dir: &Path,
    shard: Shard,
    split: &str,
    all: &[String],
    mine: &[String],
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--output {}: cannot create the folder", dir.display()))?;
    let old = all
        .iter()
        .map(|n| format!("{n}.csv"))
        .chain(["summary.json".to_owned()]);
    for name in old {
        let p = dir.join(&name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing the old {}", p.display()));
            }
            _ => {}
        }
    }
    let rec = json!({
        "shard": shard.index,
        "shards": shard.count,
        "split": split,
        "sequences_in_split": all,
        "sequences": mine,
    });
    let path = dir.join(EVAL_RECORD);
    std::fs::write(&path, serde_json::to_string_pretty(&rec)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

pub fn merge(a: &MergeArgs) -> Result<()> {
    let is_eval = |d: &&PathBuf| d.join(EVAL_RECORD).is_file() || d.join("summary.json").is_file();
    let evals = a.shards.iter().filter(is_eval).count();
    if evals > 0 {
        ensure!(
            evals == a.shards.len(),
            "some folders hold eval-3dpw results and some do not: merge one kind"
        );
        return merge_eval(&a.shards, &a.output);
    }
    merge_batch(&a.shards, &a.output)
}

/// With every folder's `eval-shard.json`: all n shards are there once and together cover the
/// split's sequences, each once.
fn check_eval_shards(dirs: &[PathBuf]) -> Result<()> {
    if !dirs.iter().all(|d| d.join(EVAL_RECORD).is_file()) {
        // Folders of unsharded runs (of single sequences): nothing to check.
        return Ok(());
    }
    let mut n = None;
    let mut split_all: Option<Value> = None;
    let mut seen: Vec<bool> = Vec::new();
    let mut covered: Vec<String> = Vec::new();
    for d in dirs {
        let path = d.join(EVAL_RECORD);
        let r = read_json(&path)?;
        let count = r["shards"]
            .as_u64()
            .context("a shard record without shards")? as usize;
        let i = r["shard"]
            .as_u64()
            .context("a shard record without its index")? as usize;
        ensure!(
            count > 0 && count <= 100_000 && i < count,
            "{}: shard {i} of {count} is not a shard",
            path.display()
        );
        let n = *n.get_or_insert(count);
        ensure!(
            count == n,
            "{}: {count} shards, another folder says {n}",
            path.display()
        );
        if seen.is_empty() {
            seen = vec![false; n];
        }
        ensure!(!seen[i], "shard {i}/{n} appears twice ({})", path.display());
        seen[i] = true;
        let all = r["sequences_in_split"].clone();
        let first = split_all.get_or_insert_with(|| all.clone());
        ensure!(
            *first == all,
            "{}: another split's sequence list (shards of different runs?)",
            path.display()
        );
        let mine: Vec<String> = r["sequences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        ensure!(
            mine.is_empty() || d.join("summary.json").is_file(),
            "{}: shard {i}/{n} has no summary.json (still running, or it failed)",
            d.display()
        );
        covered.extend(mine);
    }
    let missing: Vec<String> = (0..seen.len())
        .filter(|&i| !seen[i])
        .map(|i| format!("{i}/{}", seen.len()))
        .collect();
    ensure!(
        missing.is_empty(),
        "shards {} are missing (not run, or their folders were not given)",
        missing.join(", ")
    );
    covered.sort();
    let mut want: Vec<String> = split_all
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    want.sort();
    ensure!(
        covered == want,
        "the shards cover {} of the split's {} sequences",
        covered.len(),
        want.len()
    );
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

fn merge_eval(dirs: &[PathBuf], out: &Path) -> Result<()> {
    check_eval_shards(dirs)?;
    let mut sequences: BTreeMap<String, Value> = BTreeMap::new();
    let mut owner: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut head: Option<(Value, Value, Value, PathBuf)> = None;
    std::fs::create_dir_all(out)
        .with_context(|| format!("--output {}: cannot create the folder", out.display()))?;
    for d in dirs {
        let path = d.join("summary.json");
        if !path.is_file() {
            // A shard without sequences (checked above).
            continue;
        }
        let s = read_json(&path)?;
        let key = (
            s["body_model"].clone(),
            s["comparable"].clone(),
            s["note"].clone(),
        );
        match &head {
            None => head = Some((key.0, key.1, key.2, path.clone())),
            Some((b, c, _, first)) => ensure!(
                *b == key.0 && *c == key.1,
                "{}: body model {} differs from {}'s {b}: shards of different runs",
                path.display(),
                key.0,
                first.display()
            ),
        }
        let seqs = s["sequences"]
            .as_object()
            .with_context(|| format!("{}: no sequences", path.display()))?;
        for (name, row) in seqs {
            if let Some(prev) = owner.insert(name.clone(), path.clone()) {
                bail!(
                    "sequence {name} is in both {} and {}: overlapping shards",
                    prev.display(),
                    path.display()
                );
            }
            sequences.insert(name.clone(), row.clone());
            let csv = d.join(format!("{name}.csv"));
            if csv.is_file() {
                std::fs::copy(&csv, out.join(format!("{name}.csv")))
                    .with_context(|| format!("copying {}", csv.display()))?;
            }
        }
    }
    let (body_model, comparable, note, _) = head.context("no shard folders")?;
    // The overall means: every person-frame weighs the same, as in one run.
    let mut samples = 0u64;
    let mut missing = 0u64;
    let mut sums = [0.0f64; 5];
    for (name, row) in &sequences {
        let n = row["samples"]
            .as_u64()
            .with_context(|| format!("sequence {name}: no sample count"))?;
        samples += n;
        missing += row["missing"].as_u64().unwrap_or(0);
        if n > 0 {
            for (s, m) in sums.iter_mut().zip(ikol_eval::protocol::SUMMARY_METRICS) {
                *s += n as f64
                    * row[m]
                        .as_f64()
                        .with_context(|| format!("sequence {name}: no {m}"))?;
            }
        }
    }
    let mut all = json!({"samples": samples, "missing": missing});
    for (s, m) in sums.iter().zip(ikol_eval::protocol::SUMMARY_METRICS) {
        all[m] = if samples > 0 {
            json!(s / samples as f64)
        } else {
            Value::Null
        };
    }
    let merged = json!({
        "body_model": body_model,
        "comparable": comparable,
        "note": note,
        "sequences": sequences,
        "all": all,
    });
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&merged)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    run::say(&format!(
        "merged {} shards: {} sequences, {samples} person-frames ({missing} without a \
         prediction): MPJPE {} mm, PA-MPJPE {} mm, PVE {} mm; wrote {}\n",
        dirs.len(),
        sequences.len(),
        f(&merged["all"]["mpjpe_mm"]),
        f(&merged["all"]["pa_mpjpe_mm"]),
        f(&merged["all"]["pve_mm"]),
        path.display()
    ));
    Ok(())
}

fn merge_batch(dirs: &[PathBuf], out: &Path) -> Result<()> {
    let mut records = Vec::new();
    for d in dirs {
        let entries =
            std::fs::read_dir(d).with_context(|| format!("{}: cannot read", d.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with("batch-shard-") && n.ends_with(".json")
                })
            })
            .collect();
        found.sort();
        for p in found {
            records.push((read_json(&p)?, p));
        }
    }
    ensure!(
        !records.is_empty(),
        "no shard records (summary.json of eval-3dpw, or batch-shard-*.json of ikol batch) in {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let n = records[0].0["shards"]
        .as_u64()
        .context("a shard record without shards")? as usize;
    ensure!(
        n > 0 && n <= 100_000,
        "{}: {n} shards is not a shard count",
        records[0].1.display()
    );
    let total = records[0].0["videos_in_folder"].as_u64().unwrap_or(0) as usize;
    let mut seen_shards = vec![false; n];
    let mut videos: BTreeMap<String, Value> = BTreeMap::new();
    for (r, p) in &records {
        let i = r["shard"]
            .as_u64()
            .context("a shard record without its index")? as usize;
        ensure!(
            r["shards"].as_u64() == Some(n as u64) && i < n,
            "{}: shard {i} of {} does not belong with {n} shards",
            p.display(),
            r["shards"]
        );
        ensure!(
            !seen_shards[i],
            "shard {i}/{n} appears twice ({})",
            p.display()
        );
        seen_shards[i] = true;
        for v in r["videos"].as_array().into_iter().flatten() {
            let name = v["video"].as_str().unwrap_or_default().to_string();
            ensure!(
                videos.insert(name.clone(), v.clone()).is_none(),
                "video {name} was processed by two shards"
            );
        }
    }
    let missing_shards: Vec<String> = (0..n)
        .filter(|&i| !seen_shards[i])
        .map(|i| format!("{i}/{n}"))
        .collect();
    ensure!(
        missing_shards.is_empty(),
        "shards {} have no record yet (not run, or still running)",
        missing_shards.join(", ")
    );
    ensure!(
        videos.len() == total,
        "the shards cover {} of the folder's {total} videos",
        videos.len()
    );
    let failed: Vec<&String> = videos
        .iter()
        .filter(|(_, v)| v["ok"] != Value::Bool(true))
        .map(|(k, _)| k)
        .collect();
    let frames: u64 = videos.values().filter_map(|v| v["frames"].as_u64()).sum();
    std::fs::create_dir_all(out)?;
    let path = out.join("batch.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({
            "shards": n,
            "videos": videos,
            "failed": failed,
            "frames": frames,
        }))? + "\n",
    )?;
    run::say(&format!(
        "merged {n} shards: {} videos, {frames} frames, {} failed; wrote {}\n",
        videos.len(),
        failed.len(),
        path.display()
    ));
    ensure!(failed.is_empty(), "failed videos: {failed:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        let s: Shard = "1/3".parse().unwrap_or(Shard { index: 9, count: 9 });
        assert_eq!(s, Shard { index: 1, count: 3 });
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let items: Vec<u32> = (0..10).collect();
        let mut all: Vec<u32> = (0..3)
            .flat_map(|i| Shard { index: i, count: 3 }.select(&items))
            .collect();
        all.sort();
        assert_eq!(all, items);
        assert_eq!(Shard { index: 2, count: 3 }.select(&items), vec![2, 5, 8]);
    }
}
