//! The 3DPW evaluation protocol of IKOL/HybrIK (reference 5.2) on posed meshes of one body model:
//!
//! * 14 joints: the H36M-17 regressor applied to both meshes, pelvis (row 0) subtracted, the 14
//!   `EVAL_JOINTS` kept; MPJPE and PA-MPJPE (similarity Procrustes) over them;
//! * PVE: both meshes centred at their own H36M-regressed pelvis, mean vertex distance;
//! * 24 joints: the body model's posed joints, root-aligned, MPJPE and PA-MPJPE.
//!
//! Everything here is in metres; reports print millimetres.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use ikol_body::{BodyModel, Posed};
use ikol_types::joints::H36M_EVAL_14;
use ikol_types::nalgebra::Vector3;
use serde::Serialize;

use crate::metrics::{mean_distance, mpjpe, pa_mpjpe};

/// The five numbers of one person in one frame, metres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub mpjpe: f64,
    pub pa_mpjpe: f64,
    pub pve: f64,
    pub mpjpe_24: f64,
    pub pa_mpjpe_24: f64,
}

/// Why a pair of meshes cannot be scored.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "body model `{0}` has no H36M-17 joint regressor; give one (J_regressor_h36m.npy, 17 x V)"
    )]
    NoH36mRegressor(String),
    #[error("meshes differ: {pred} predicted vertices, {gt} ground-truth vertices")]
    VertexCount { pred: usize, gt: usize },
}

/// Scores a predicted posed mesh against the ground-truth one, both from `model`.
pub fn score(model: &BodyModel, pred: &Posed, gt: &Posed) -> Result<Scores, ProtocolError> {
    if pred.vertices.len() != gt.vertices.len() {
        return Err(ProtocolError::VertexCount {
            pred: pred.vertices.len(),
            gt: gt.vertices.len(),
        });
    }
    let no_reg = || ProtocolError::NoH36mRegressor(model.name.clone());
    let hp = model.regress_h36m(&pred.vertices).ok_or_else(no_reg)?;
    let hg = model.regress_h36m(&gt.vertices).ok_or_else(no_reg)?;
    let pick = |h: &[Vector3<f64>]| -> Vec<Vector3<f64>> {
        H36M_EVAL_14.iter().map(|&j| h[j] - h[0]).collect()
    };
    let (p14, g14) = (pick(&hp), pick(&hg));
    let centred = |v: &[[f32; 3]], c: Vector3<f64>| -> Vec<Vector3<f64>> {
        v.iter()
            .map(|x| Vector3::from(x.map(f64::from)) - c)
            .collect()
    };
    Ok(Scores {
        mpjpe: mean_distance(&p14, &g14),
        pa_mpjpe: pa_mpjpe(&p14, &g14),
        pve: mean_distance(
            &centred(&pred.vertices, hp[0]),
            &centred(&gt.vertices, hg[0]),
        ),
        mpjpe_24: mpjpe(&pred.joints, &gt.joints),
        pa_mpjpe_24: pa_mpjpe(&pred.joints, &gt.joints),
    })
}

/// Scores gathered per sequence, with the rows behind them.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Per sequence: (frame id, track id, scores).
    pub rows: BTreeMap<String, Vec<(u64, u64, Scores)>>,
    /// Per sequence: ground-truth people that had no prediction.
    pub missing: BTreeMap<String, u64>,
}

/// The metric fields of a [`Summary`] as its JSON names them (for readers of summary files,
/// such as `ikol merge`).
pub const SUMMARY_METRICS: [&str; 5] = [
    "mpjpe_mm",
    "pa_mpjpe_mm",
    "pve_mm",
    "mpjpe_24_mm",
    "pa_mpjpe_24_mm",
];

/// Means of a set of rows, millimetres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub missing: u64,
    pub mpjpe_mm: f64,
    pub pa_mpjpe_mm: f64,
    pub pve_mm: f64,
    pub mpjpe_24_mm: f64,
    pub pa_mpjpe_24_mm: f64,
}

fn summarise<'a>(rows: impl Iterator<Item = &'a Scores>, missing: u64) -> Summary {
    let mut n = 0usize;
    let mut sum = [0.0; 5];
    for s in rows {
        n += 1;
        for (a, b) in sum
            .iter_mut()
            .zip([s.mpjpe, s.pa_mpjpe, s.pve, s.mpjpe_24, s.pa_mpjpe_24])
        {
            *a += b;
        }
    }
    let mm = |x: f64| {
        if n == 0 {
            f64::NAN
        } else {
            1000.0 * x / n as f64
        }
    };
    Summary {
        samples: n,
        missing,
        mpjpe_mm: mm(sum[0]),
        pa_mpjpe_mm: mm(sum[1]),
        pve_mm: mm(sum[2]),
        mpjpe_24_mm: mm(sum[3]),
        pa_mpjpe_24_mm: mm(sum[4]),
    }
}

/// The summary file's content.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryFile {
    pub body_model: String,
    /// Whether the numbers may be compared with published ones (SMPL neutral + its H36M
    /// regressor); `note` says why not otherwise.
    pub comparable: bool,
    pub note: String,
    pub sequences: BTreeMap<String, Summary>,
    pub all: Summary,
}

impl SummaryFile {
    /// The table the papers report (mm), one row per sequence and the overall mean.
    pub fn table(&self) -> String {
        let s = self;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<28} {:>7} {:>8} {:>8} {:>11} {:>8} {:>11}",
            "sequence", "samples", "PVE", "MPJPE", "PA-MPJPE", "MPJPE24", "PA-MPJPE24"
        );
        let row = |t: &mut String, name: &str, m: &Summary| {
            let _ = writeln!(
                t,
                "{:<28} {:>7} {:>8.1} {:>8.1} {:>11.1} {:>8.1} {:>11.1}",
                name,
                m.samples,
                m.pve_mm,
                m.mpjpe_mm,
                m.pa_mpjpe_mm,
                m.mpjpe_24_mm,
                m.pa_mpjpe_24_mm
            );
        };
        for (name, m) in &s.sequences {
            row(&mut t, name, m);
        }
        row(&mut t, "all", &s.all);
        if s.all.missing > 0 {
            let _ = writeln!(t, "{} ground-truth people had no prediction", s.all.missing);
        }
        let _ = writeln!(t, "(mm; {})", s.note);
        t
    }
}

impl Report {
    pub fn add(&mut self, sequence: &str, frame: u64, track: u64, s: Scores) {
        self.rows
            .entry(sequence.to_owned())
            .or_default()
            .push((frame, track, s));
    }

    pub fn add_missing(&mut self, sequence: &str) {
        *self.missing.entry(sequence.to_owned()).or_default() += 1;
    }

    /// Per-sequence and overall means (every person-frame weighs the same).
    pub fn summary(&self, body_model: &str, comparable: bool) -> SummaryFile {
        let mut names: Vec<&String> = self.rows.keys().chain(self.missing.keys()).collect();
        names.sort();
        names.dedup();
        let sequences = names
            .into_iter()
            .map(|n| {
                let rows = self.rows.get(n).map_or(&[][..], Vec::as_slice);
                let miss = self.missing.get(n).copied().unwrap_or(0);
                (n.clone(), summarise(rows.iter().map(|r| &r.2), miss))
            })
            .collect();
        let all = summarise(
            self.rows.values().flatten().map(|r| &r.2),
            self.missing.values().sum(),
        );
        SummaryFile {
            body_model: body_model.to_owned(),
            comparable,
            note: if comparable {
                "an SMPL-topology model with the given H36M regressor: the published protocol \
                 when that model is SMPL's neutral one (upstream also took its boxes from the \
                 I2L JSON rather than the keypoints)"
                    .into()
            } else {
                format!(
                    "body model `{body_model}` is not SMPL's neutral model with J_regressor_h36m: \
                     the same protocol, but NOT comparable to published 3DPW numbers"
                )
            },
            sequences,
            all,
        }
    }

    /// Writes `<sequence>.csv` (per person-frame, mm) and `summary.json` (this report's
    /// [`Report::summary`]) into `dir`.
    pub fn write(&self, dir: &Path, summary: &SummaryFile) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, rows) in &self.rows {
            let mut csv = String::from(
                "frame,track_id,mpjpe_mm,pa_mpjpe_mm,pve_mm,mpjpe_24_mm,pa_mpjpe_24_mm\n",
            );
            for (f, id, s) in rows {
                let _ = writeln!(
                    csv,
                    "{f},{id},{:.4},{:.4},{:.4},{:.4},{:.4}",
                    1000.0 * s.mpjpe,
                    1000.0 * s.pa_mpjpe,
                    1000.0 * s.pve,
                    1000.0 * s.mpjpe_24,
                    1000.0 * s.pa_mpjpe_24
                );
            }
            std::fs::write(dir.join(format!("{name}.csv")), csv)?;
        }
        let json = serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("summary.json"), json + "\n")
    }
}
