//! Accuracy and speed of the solvers (the `solver-bench` binary; callable with any body model's
//! joint-shape basis).
//!
//! Accuracy, HybrIK Table 3 protocol (reference 9): N random poses ([`crate::sampling`]) and
//! shapes (beta ~ N(0, sigma^2)); ground-truth joints by FK; uniform jitter of 0/10/20/30 mm per
//! coordinate on the targets; the true twist (and, in the 24-joint layout, the true leaf
//! rotations) given. Score: MPJPE in mm over the 24 reconstructed joints against the ground
//! truth, after root alignment. Two layouts: IKOL-24 (24 targets + leaf quaternions) and
//! HybrIK-29 (29 targets, the leaves define the leaf parents' swing).
//!
//! Speed: microseconds per person, single thread, per solver (jitter 10 mm); and the batched
//! tensor twin at batch 64 (forward, and forward + backward) in f32 and f64 on the CPU.

use std::fmt;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use nalgebra::Vector3;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::batch::{BatchIkolOptions, BatchInput, JacobianMode, ikol_batch};
use crate::sampling::{
    GroundTruth, PoseDistribution, ground_truth, jitter, sample_beta, sample_pose,
};
use crate::{
    AnalyticOptions, DampingMode, IkInput, IkolInit, IkolOptions, JointShapeBasis, Method, Rest,
    RootMethod, Tolerance, solve,
};

/// Boxed error of the benchmark (solver or tensor errors).
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// People per jitter level.
    pub people: usize,
    /// RNG seed.
    pub seed: u64,
    /// Jitter amplitudes in mm (uniform per coordinate).
    pub jitter_mm: Vec<f64>,
    /// Sigma of the sampled shape coefficients.
    pub beta_sigma: f64,
    /// Measure speed too.
    pub timing: bool,
    /// Batch size of the tensor twin's timing.
    pub batch: usize,
    /// Repetitions of each tensor timing.
    pub batch_repeats: usize,
    /// Only the solvers (and tensor timings) whose label contains this text.
    pub only: Option<String>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            people: 100,
            seed: 0,
            jitter_mm: vec![0.0, 10.0, 20.0, 30.0],
            beta_sigma: 1.0,
            timing: true,
            batch: 64,
            batch_repeats: 3,
            only: None,
        }
    }
}

/// One solver's accuracy per jitter level.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyRow {
    /// Solver label.
    pub solver: String,
    /// MPJPE (mm) per jitter level.
    pub mpjpe_mm: Vec<f64>,
    /// Mean Gauss-Newton iterations per jitter level.
    pub iterations: Vec<f64>,
    /// Every solved joint coordinate (metres; jitter levels, samples and joints in order), so
    /// that two builds can be compared (`solver-bench --dump` / `--against`).
    pub joints: Vec<f64>,
}

/// A timing.
#[derive(Debug, Clone, PartialEq)]
pub struct TimingRow {
    /// What was timed.
    pub what: String,
    /// Microseconds per person.
    pub us_per_person: f64,
}

/// Everything measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// The configuration.
    pub config: BenchConfig,
    /// IKOL-24 layout accuracy.
    pub layout24: Vec<AccuracyRow>,
    /// HybrIK-29 layout accuracy.
    pub layout29: Vec<AccuracyRow>,
    /// Per-person solver timings.
    pub timing: Vec<TimingRow>,
    /// Tensor twin timings.
    pub batch: Vec<TimingRow>,
}

/// Label of the upstream IKOL configuration (5 iterations, zero init, fixed damping).
pub const IKOL_UPSTREAM: &str = "ikol, 5 it, zero init (upstream)";

/// The solvers of `cfg` (all, or those `--only` names).
fn chosen(cfg: &BenchConfig) -> impl Iterator<Item = (&'static str, Method)> + '_ {
    solvers()
        .into_iter()
        .filter(|(label, _)| wanted(cfg, label))
}

fn wanted(cfg: &BenchConfig, label: &str) -> bool {
    cfg.only.as_deref().is_none_or(|o| label.contains(o))
}

/// The solvers compared, with their labels.
pub fn solvers() -> Vec<(&'static str, Method)> {
    let converge = |init| IkolOptions {
        iterations: 100,
        damping_mode: DampingMode::Adaptive,
        tolerance: Some(Tolerance::default()),
        init,
        ..IkolOptions::default()
    };
    vec![
        (
            "hybrik-naive, spine-then-hips root (upstream training)",
            Method::HybrikNaive(AnalyticOptions {
                root: RootMethod::SpineThenHips,
                ..AnalyticOptions::default()
            }),
        ),
        (
            "hybrik-naive, SVD root",
            Method::HybrikNaive(AnalyticOptions::default()),
        ),
        (
            "hybrik adaptive, 15 mm fallback (HEAD)",
            Method::Hybrik(AnalyticOptions::default()),
        ),
        (
            "hybrik adaptive, no fallback (2021)",
            Method::Hybrik(AnalyticOptions::release_2021()),
        ),
        (IKOL_UPSTREAM, Method::Ikol(IkolOptions::default())),
        (
            "ikol, 20 it, zero init",
            Method::Ikol(IkolOptions {
                iterations: 20,
                ..IkolOptions::default()
            }),
        ),
        (
            "ikol, 5 it, LM damping, zero init",
            Method::Ikol(IkolOptions {
                damping_mode: DampingMode::Adaptive,
                ..IkolOptions::default()
            }),
        ),
        (
            "ikol, LM to convergence, zero init",
            Method::Ikol(converge(IkolInit::Zero)),
        ),
        (
            "ikol, 5 it, analytic init",
            Method::Ikol(IkolOptions {
                init: IkolInit::Analytic { fallback: None },
                ..IkolOptions::default()
            }),
        ),
        (
            "ikol, LM to convergence, analytic init",
            Method::Ikol(converge(IkolInit::Analytic { fallback: None })),
        ),
    ]
}

struct Sample {
    rest: Vec<Vector3<f64>>,
    gt: GroundTruth,
    targets: Vec<Vector3<f64>>,
}

fn samples(basis: &JointShapeBasis, cfg: &BenchConfig, jitter_m: f64, salt: u64) -> Vec<Sample> {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(salt));
    (0..cfg.people)
        .map(|_| {
            let beta = sample_beta(&mut rng, basis.coefficients(), cfg.beta_sigma);
            let rest = basis.rest_joints(&beta);
            let pose = sample_pose(&mut rng, &PoseDistribution::default());
            let gt = ground_truth(&rest, &pose);
            let targets = jitter(&mut rng, &gt.joints, jitter_m);
            Sample { rest, gt, targets }
        })
        .collect()
}

fn input<'a>(s: &'a Sample, n: usize) -> IkInput<'a> {
    IkInput {
        targets: &s.targets[..n],
        twist: &s.gt.twist,
        rest: Rest::Joints(&s.rest),
        leaf_rotations: (n == 24).then_some(&s.gt.leaf_rotations[..]),
    }
}

fn accuracy(
    basis: &JointShapeBasis,
    cfg: &BenchConfig,
    n: usize,
) -> Result<Vec<AccuracyRow>, BenchError> {
    let sets: Vec<Vec<Sample>> = cfg
        .jitter_mm
        .iter()
        .enumerate()
        .map(|(i, &mm)| samples(basis, cfg, mm * 1e-3, i as u64))
        .collect();
    let mut rows = vec![AccuracyRow {
        solver: "the jittered input itself".into(),
        mpjpe_mm: sets
            .iter()
            .map(|set| {
                mean(
                    set.iter()
                        .map(|s| mpjpe(&s.targets[..24], &s.gt.joints[..24])),
                )
            })
            .collect(),
        iterations: vec![0.0; sets.len()],
        joints: Vec::new(),
    }];
    for (label, method) in chosen(cfg) {
        let mut row = AccuracyRow {
            solver: label.into(),
            mpjpe_mm: Vec::new(),
            iterations: Vec::new(),
            joints: Vec::new(),
        };
        for set in &sets {
            let mut err = Vec::with_capacity(set.len());
            let mut its = Vec::with_capacity(set.len());
            for s in set {
                let sol = solve(&input(s, n), &method)?;
                err.push(mpjpe(&sol.joints[..24], &s.gt.joints[..24]));
                row.joints
                    .extend(sol.joints.iter().flat_map(|j| [j.x, j.y, j.z]));
                its.push(sol.iterations as f64);
            }
            row.mpjpe_mm.push(mean(err.into_iter()));
            row.iterations.push(mean(its.into_iter()));
        }
        rows.push(row);
    }
    Ok(rows)
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// Mean per-joint position error in mm.
fn mpjpe(a: &[Vector3<f64>], b: &[Vector3<f64>]) -> f64 {
    1e3 * mean(a.iter().zip(b).map(|(x, y)| (x - y).norm()))
}

fn timing(basis: &JointShapeBasis, cfg: &BenchConfig) -> Result<Vec<TimingRow>, BenchError> {
    let set = samples(basis, cfg, 0.01, 77);
    let mut rows = Vec::new();
    for (label, method) in chosen(cfg) {
        let start = Instant::now();
        for s in &set {
            std::hint::black_box(solve(&input(s, 24), &method)?);
        }
        rows.push(TimingRow {
            what: label.into(),
            us_per_person: start.elapsed().as_secs_f64() * 1e6 / set.len().max(1) as f64,
        });
    }
    Ok(rows)
}

fn batch_timing(basis: &JointShapeBasis, cfg: &BenchConfig) -> Result<Vec<TimingRow>, BenchError> {
    let b = cfg.batch.max(1);
    let set = samples(
        basis,
        &BenchConfig {
            people: b,
            ..cfg.clone()
        },
        0.01,
        91,
    );
    let flat3 = |f: &dyn Fn(&Sample) -> Vec<Vector3<f64>>| -> Vec<f64> {
        set.iter()
            .flat_map(f)
            .flat_map(|v| [v.x, v.y, v.z])
            .collect()
    };
    let dev = Device::Cpu;
    let targets = Tensor::from_vec(flat3(&|s| s.targets[..24].to_vec()), (b, 24, 3), &dev)?;
    let rest = Tensor::from_vec(flat3(&|s| s.rest[..24].to_vec()), (b, 24, 3), &dev)?;
    let twist: Vec<f64> = set
        .iter()
        .flat_map(|s| s.gt.twist.iter().flatten().copied())
        .collect();
    let twist = Tensor::from_vec(twist, (b, 23, 2), &dev)?;
    let leaf: Vec<f64> = set
        .iter()
        .flat_map(|s| {
            s.gt.leaf_rotations
                .iter()
                .flat_map(|q| [q.x, q.y, q.z, q.w])
        })
        .collect();
    let leaf = Tensor::from_vec(leaf, (b, 5, 4), &dev)?;
    let mut rows = Vec::new();
    for dtype in [DType::F32, DType::F64] {
        let t = targets.to_dtype(dtype)?;
        let tw = twist.to_dtype(dtype)?;
        let r = rest.to_dtype(dtype)?;
        let l = leaf.to_dtype(dtype)?;
        let input = BatchInput {
            targets: &t,
            twist: &tw,
            rest: &r,
            leaf_rotations: Some(&l),
        };
        let what = format!("tensor twin {dtype:?} batch {b}, forward");
        if wanted(cfg, &what) {
            let start = Instant::now();
            for _ in 0..cfg.batch_repeats.max(1) {
                std::hint::black_box(ikol_batch(&input, &BatchIkolOptions::default(), None)?);
            }
            let per = start.elapsed().as_secs_f64() * 1e6 / (b * cfg.batch_repeats.max(1)) as f64;
            rows.push(TimingRow {
                what,
                us_per_person: per,
            });
        }
        for mode in [JacobianMode::Detached, JacobianMode::Differentiated] {
            let what = format!("tensor twin {dtype:?} batch {b}, forward + backward, {mode:?} J");
            if !wanted(cfg, &what) {
                continue;
            }
            let vt = Var::from_tensor(&t)?;
            let vr = Var::from_tensor(&r)?;
            let input = BatchInput {
                targets: vt.as_tensor(),
                rest: vr.as_tensor(),
                ..input
            };
            let opts = BatchIkolOptions {
                jacobian: mode,
                ..BatchIkolOptions::default()
            };
            let start = Instant::now();
            for _ in 0..cfg.batch_repeats.max(1) {
                let sol = ikol_batch(&input, &opts, None)?;
                let loss = sol.joints.sqr()?.sum_all()?;
                std::hint::black_box(loss.backward()?);
            }
            let per = start.elapsed().as_secs_f64() * 1e6 / (b * cfg.batch_repeats.max(1)) as f64;
            rows.push(TimingRow {
                what,
                us_per_person: per,
            });
        }
    }
    Ok(rows)
}

/// Run the benchmark on rest skeletons from `basis` (24 or 29 joints; 29 for the 29 layout).
pub fn run(basis: &JointShapeBasis, cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    crate::shape::validate_basis(basis)?;
    let layout29 = if basis.joints() >= 29 {
        accuracy(basis, cfg, 29)?
    } else {
        Vec::new()
    };
    Ok(BenchReport {
        config: cfg.clone(),
        layout24: accuracy(basis, cfg, 24)?,
        layout29,
        timing: if cfg.timing {
            timing(basis, cfg)?
        } else {
            Vec::new()
        },
        batch: if cfg.timing {
            batch_timing(basis, cfg)?
        } else {
            Vec::new()
        },
    })
}

impl BenchReport {
    /// Single-thread microseconds per person of the upstream IKOL configuration, if timed.
    pub fn ikol_upstream_us_per_person(&self) -> Option<f64> {
        self.timing
            .iter()
            .find(|r| r.what == IKOL_UPSTREAM)
            .map(|r| r.us_per_person)
    }
}

fn table(f: &mut fmt::Formatter<'_>, cfg: &BenchConfig, rows: &[AccuracyRow]) -> fmt::Result {
    write!(f, "| solver |")?;
    for mm in &cfg.jitter_mm {
        write!(f, " {mm} mm |")?;
    }
    writeln!(f, " iterations |")?;
    write!(f, "|---|")?;
    for _ in &cfg.jitter_mm {
        write!(f, "---|")?;
    }
    writeln!(f, "---|")?;
    for r in rows {
        write!(f, "| {} |", r.solver)?;
        for e in &r.mpjpe_mm {
            write!(f, " {e:.2} |")?;
        }
        let its: Vec<String> = r.iterations.iter().map(|i| format!("{i:.1}")).collect();
        writeln!(f, " {} |", its.join(" / "))?;
    }
    Ok(())
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "MPJPE (mm) over 24 joints vs ground truth; {} people per level, beta ~ N(0, {}^2), seed {}.\n",
            c.people, c.beta_sigma, c.seed
        )?;
        writeln!(f, "IKOL-24 layout (24 targets + true leaf rotations):\n")?;
        table(f, c, &self.layout24)?;
        if !self.layout29.is_empty() {
            writeln!(f, "\nHybrIK-29 layout (29 targets):\n")?;
            table(f, c, &self.layout29)?;
        }
        if !self.timing.is_empty() {
            writeln!(f, "\nSpeed, single thread, 24 layout, 10 mm jitter:\n")?;
            writeln!(f, "| what | us per person |\n|---|---|")?;
            for r in self.timing.iter().chain(&self.batch) {
                writeln!(f, "| {} | {:.1} |", r.what, r.us_per_person)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_run() -> Result<(), BenchError> {
        let basis = crate::fixtures::random_shape_basis(4, 1);
        let cfg = BenchConfig {
            people: 2,
            batch: 2,
            batch_repeats: 1,
            ..BenchConfig::default()
        };
        let report = run(&basis, &cfg)?;
        assert_eq!(report.layout24.len(), solvers().len() + 1);
        // Exact input: the analytic solvers reconstruct it.
        assert!(report.layout24[2].mpjpe_mm[0] < 1e-6);
        assert!(
            report
                .to_string()
                .contains("| ikol, 5 it, zero init (upstream) |")
        );
        Ok(())
    }
}
