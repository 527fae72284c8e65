//! `ikol solve`: joints (+ twist, shape, leaf rotations) in, SMPL rotations out, as JSON.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ikol_body::Anchor;
use ikol_body::BodyModel;
use ikol_body::nalgebra::{Vector3, Vector4};
use ikol_solver::fit::{self, BodyState, FitInput, FitOptions, Keypoint, Point3, SurfaceModel};
use ikol_solver::{
    AnalyticOptions, DampingMode, IkInput, IkSolution, IkolInit, IkolOptions, Method, Rest,
    TWIST_PAIRS, Tolerance,
};
use ikol_types::Intrinsics;
use ikol_types::joints::SMPL_JOINTS;
use serde::{Deserialize, Serialize};

/// One person of the input file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonIn {
    /// Root-relative target joints, metres: 24 SMPL joints or 29 with the HybrIK leaves.
    pub joints: Vec<[f64; 3]>,
    /// (cos, sin) twist of joints 1..23 (index joint - 1); default: no twist.
    #[serde(default)]
    pub twist: Option<Vec<[f64; 2]>>,
    /// Shape coefficients; default: the mean shape.
    #[serde(default)]
    pub beta: Vec<f64>,
    /// Local rotations (w, x, y, z) of joints 10, 11, 15, 22, 23 (IKOL-24 leaf output).
    #[serde(default)]
    pub leaf_rotations: Option<Vec<[f64; 4]>>,
    /// `--method fit`: the 24 joints in the image (pixels), as many rows as `joints` (24 used).
    #[serde(default)]
    pub keypoints_2d: Option<Vec<[f64; 2]>>,
    /// `--method fit`: confidence of each keypoint in [0, 1] (default 1).
    #[serde(default)]
    pub confidence: Option<Vec<f64>>,
    /// `--method fit`: pinhole intrinsics of the image.
    #[serde(default)]
    pub intrinsics: Option<IntrinsicsIn>,
}

/// Pinhole intrinsics in pixels.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrinsicsIn {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

/// The input file: `{"people": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SolveIn {
    people: Vec<PersonIn>,
}

#[derive(Debug, Serialize)]
struct PersonOut {
    /// Local rotations as axis-angle, 24 rows, root first.
    theta: Vec<[f64; 3]>,
    /// Local rotations as 3x3 matrices.
    rotations: Vec<[[f64; 3]; 3]>,
    /// Reconstructed joints (root-relative, metres), one per input row.
    joints: Vec<[f64; 3]>,
    /// Per-joint |target - reconstructed|, metres.
    residual: Vec<f64>,
    mean_residual_mm: f64,
    iterations: usize,
    beta: Vec<f64>,
    /// `--method fit`: camera position of the root joint, metres.
    #[serde(skip_serializing_if = "Option::is_none")]
    translation: Option<[f64; 3]>,
    /// `--method fit`: mean keypoint error of the fitted joints, pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    mean_error_2d_px: Option<f64>,
}

#[derive(Debug, Serialize)]
struct SolveOut {
    method: String,
    body_model: String,
    people: Vec<PersonOut>,
}

/// Most Gauss-Newton iterations `ikol solve` runs (the solver converges in tens).
pub const MAX_ITERATIONS: usize = 10_000;
/// Most people in one input file.
pub const MAX_PEOPLE: usize = 10_000;
/// Joints farther than this from the origin (metres) are refused: no body is that far from
/// its own root.
pub const MAX_JOINT_DISTANCE_M: f64 = 100.0;
/// Default bound on |beta| (see [`ikol_body::MAX_ABS_BETA`]).
pub const DEFAULT_MAX_BETA: f64 = ikol_body::MAX_ABS_BETA;

/// Options of `ikol solve` beyond the method's defaults.
#[derive(Debug, Clone)]
pub struct SolveArgs {
    pub method: String,
    pub iterations: Option<usize>,
    pub damping: Option<f64>,
    /// `None`: the method's default (ikol: zero).
    pub init: Option<String>,
    /// ikol: Levenberg-Marquardt damping instead of the fixed sigma.
    pub lm: bool,
    /// ikol: stop when the largest step falls below this (radians).
    pub tolerance: Option<f64>,
    /// Largest |beta| accepted in the input.
    pub max_beta: f64,
}

impl Default for SolveArgs {
    fn default() -> Self {
        Self {
            method: "ikol".into(),
            iterations: None,
            damping: None,
            init: None,
            lm: false,
            tolerance: None,
            max_beta: DEFAULT_MAX_BETA,
        }
    }
}

pub fn method(a: &SolveArgs) -> Result<Method> {
    // The fit starts from (and is pulled toward) adaptive HybrIK.
    let mut m = match a.method.as_str() {
        "fit" => Method::from_name("hybrik"),
        // The 2021 release: no fallback to the naive bone (ikol_solver::AnalyticOptions).
        "hybrik-2021" => Some(Method::Hybrik(AnalyticOptions {
            fallback: None,
            ..AnalyticOptions::default()
        })),
        name => Method::from_name(name),
    }
    .with_context(|| {
        format!(
            "unknown method `{}`: use ikol, hybrik, hybrik-2021, hybrik-naive or fit",
            a.method
        )
    })?;
    if let Method::Ikol(o) = &mut m {
        let iterations = a.iterations.unwrap_or(o.iterations);
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            bail!("--iterations {iterations}: must be 1 to {MAX_ITERATIONS}");
        }
        let damping = a.damping.unwrap_or(o.damping);
        if !(damping.is_finite() && damping >= 0.0) {
            bail!("--damping {damping}: must be a finite number >= 0");
        }
        let tolerance = match a.tolerance {
            Some(t) if t.is_finite() && t > 0.0 => Some(Tolerance {
                step: t,
                ..Tolerance::default()
            }),
            Some(t) => bail!("--tolerance {t}: must be a positive number (radians)"),
            None => o.tolerance,
        };
        *o = IkolOptions {
            iterations,
            damping,
            init: match a.init.as_deref().unwrap_or("zero") {
                "zero" => IkolInit::Zero,
                "analytic" => IkolInit::Analytic { fallback: None },
                other => bail!("unknown init `{other}`: use zero or analytic"),
            },
            damping_mode: if a.lm {
                DampingMode::Adaptive
            } else {
                o.damping_mode
            },
            tolerance,
            ..o.clone()
        };
    } else {
        let ikol_only = [
            ("--iterations", a.iterations.is_some()),
            ("--damping", a.damping.is_some()),
            ("--init", a.init.is_some()),
            ("--lm", a.lm),
            ("--tolerance", a.tolerance.is_some()),
        ];
        if let Some((flag, _)) = ikol_only.iter().find(|(_, given)| *given) {
            bail!("{flag} applies to --method ikol only (not {})", a.method);
        }
    }
    Ok(m)
}

/// Refuses values no body has: non-finite or far-away joints, extreme shapes, bad rotations.
fn check_person(p: &PersonIn, max_beta: f64) -> Result<()> {
    if let Some((j, v)) = p.joints.iter().enumerate().find(|(_, v)| {
        !v.iter()
            .all(|x| x.is_finite() && x.abs() <= MAX_JOINT_DISTANCE_M)
    }) {
        bail!("joint {j} = {v:?}: not finite or farther than {MAX_JOINT_DISTANCE_M} m");
    }
    if let Some((k, b)) = p
        .beta
        .iter()
        .enumerate()
        .find(|(_, b)| !(b.is_finite() && b.abs() <= max_beta))
    {
        bail!("beta[{k}] = {b}: outside [-{max_beta}, {max_beta}] (--max-beta sets the bound)");
    }
    fn finite<'a>(name: &str, mut v: impl Iterator<Item = &'a f64>) -> Result<()> {
        if v.any(|x| !x.is_finite()) {
            bail!("`{name}` holds a non-finite number");
        }
        Ok(())
    }
    finite("twist", p.twist.iter().flatten().flatten())?;
    finite(
        "leaf_rotations",
        p.leaf_rotations.iter().flatten().flatten(),
    )?;
    finite("keypoints_2d", p.keypoints_2d.iter().flatten().flatten())?;
    if let Some(c) = p
        .confidence
        .iter()
        .flatten()
        .find(|c| !(0.0..=1.0).contains(*c))
    {
        bail!("confidence {c}: outside [0, 1]");
    }
    Ok(())
}

/// Every number of a result is finite (a solve that diverged is not a result).
fn is_finite(p: &PersonOut) -> bool {
    let rows = p.theta.iter().flatten().chain(p.joints.iter().flatten());
    let mats = p.rotations.iter().flatten().flatten();
    let rest = p
        .residual
        .iter()
        .chain(&p.beta)
        .chain(p.translation.iter().flatten());
    rows.chain(mats).chain(rest).all(|x| x.is_finite())
        && p.mean_residual_mm.is_finite()
        && p.mean_error_2d_px.is_none_or(f64::is_finite)
}

pub fn run(input: &Path, output: &Path, model_spec: &str, args: &SolveArgs) -> Result<()> {
    let method = method(args)?;
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    // One person, or {"people": [...]}; parsed by shape so errors point at the real problem.
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", input.display()))?;
    let people = if value.get("people").is_some() {
        serde_json::from_value::<SolveIn>(value).map(|s| s.people)
    } else {
        serde_json::from_value::<PersonIn>(value).map(|p| vec![p])
    }
    .with_context(|| {
        format!(
            "{}: not a solver input (see `ikol solve` in the README)",
            input.display()
        )
    })?;
    if people.len() > MAX_PEOPLE {
        bail!(
            "{}: {} people, more than {MAX_PEOPLE}",
            input.display(),
            people.len()
        );
    }
    if !(args.max_beta.is_finite() && args.max_beta > 0.0) {
        bail!("--max-beta {}: must be a positive number", args.max_beta);
    }
    let model = BodyModel::from_spec(model_spec)
        .with_context(|| format!("loading body model `{model_spec}`"))?;
    let fitting = args.method == "fit";
    let surface = if fitting {
        let joints: Vec<Anchor> = (0..SMPL_JOINTS).map(Anchor::Joint).collect();
        Some(
            SurfaceModel::new(&model, &joints)
                .with_context(|| format!("body model `{model_spec}`"))?,
        )
    } else {
        None
    };
    let mut out = SolveOut {
        method: args.method.clone(),
        body_model: model.name.clone(),
        people: Vec::new(),
    };
    let mut dropped = 0;
    for (i, p) in people.iter().enumerate() {
        let ctx = || format!("{}: person {i}", input.display());
        check_person(p, args.max_beta).with_context(ctx)?;
        let basis = model
            .joint_shape_basis(p.joints.len() == 29)
            .with_context(ctx)?;
        let targets: Vec<Vector3<f64>> = p.joints.iter().map(|j| Vector3::from(*j)).collect();
        let twist = p
            .twist
            .clone()
            .unwrap_or_else(|| vec![[1.0, 0.0]; TWIST_PAIRS]);
        let leaves: Option<Vec<Vector4<f64>>> = p
            .leaf_rotations
            .as_ref()
            .map(|l| l.iter().map(|q| Vector4::from(*q)).collect());
        let sol = ikol_solver::solve(
            &IkInput {
                targets: &targets,
                twist: &twist,
                rest: Rest::Shape {
                    basis: &basis,
                    beta: &p.beta,
                },
                leaf_rotations: leaves.as_deref(),
            },
            &method,
        )
        .with_context(ctx)?;
        let person = if let Some(surface) = &surface {
            fit_person(surface, p, &sol, &targets).with_context(ctx)?
        } else {
            PersonOut {
                theta: sol.axis_angle.iter().map(|v| [v.x, v.y, v.z]).collect(),
                rotations: sol
                    .local_rotations
                    .iter()
                    .map(|r| std::array::from_fn(|a| std::array::from_fn(|b| r[(a, b)])))
                    .collect(),
                joints: sol.joints.iter().map(|v| [v.x, v.y, v.z]).collect(),
                mean_residual_mm: 1e3 * sol.mean_residual(),
                residual: sol.residual,
                iterations: sol.iterations,
                beta: sol.beta.unwrap_or_else(|| p.beta.clone()),
                translation: None,
                mean_error_2d_px: None,
            }
        };
        if is_finite(&person) {
            out.people.push(person);
        } else {
            eprintln!(
                "warning: {}: the solve diverged (non-finite result): dropped",
                ctx()
            );
            dropped += 1;
        }
    }
    if out.people.is_empty() && dropped > 0 {
        bail!(
            "{}: every person's solve diverged; nothing written",
            input.display()
        );
    }
    let json = serde_json::to_string_pretty(&out)?;
    std::fs::write(output, json).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// `--method fit` for one person: the body fitted to its 2D keypoints (and its joints as 3D
/// points), started from and pulled toward the HybrIK solution `sol` (one frame: no temporal
/// term).
fn fit_person(
    surface: &SurfaceModel,
    p: &PersonIn,
    sol: &IkSolution,
    targets: &[Vector3<f64>],
) -> Result<PersonOut> {
    let (Some(kp), Some(k)) = (&p.keypoints_2d, p.intrinsics) else {
        bail!("--method fit needs `keypoints_2d` and `intrinsics` for each person");
    };
    if kp.len() < SMPL_JOINTS || targets.len() < SMPL_JOINTS {
        bail!(
            "--method fit needs 24 joints and 24 keypoints_2d, got {} and {}",
            targets.len(),
            kp.len()
        );
    }
    let k = Intrinsics {
        fx: k.fx,
        fy: k.fy,
        cx: k.cx,
        cy: k.cy,
    };
    if !k.is_valid() {
        bail!("invalid intrinsics {k:?}");
    }
    let conf = |j: usize| {
        p.confidence
            .as_ref()
            .and_then(|c| c.get(j).copied())
            .unwrap_or(1.0)
    };
    let weights: Vec<f64> = (0..SMPL_JOINTS).map(conf).collect();
    let root = &sol.joints[0];
    let rel: Vec<Vector3<f64>> = sol.joints[..SMPL_JOINTS].iter().map(|j| j - root).collect();
    let t = ikol_solver::camera_translation(&rel, &kp[..SMPL_JOINTS], Some(&weights), &k)
        .context("no camera translation from the keypoints (fewer than two with confidence)")?;
    let mut beta = sol.beta.clone().unwrap_or_else(|| p.beta.clone());
    beta.resize(surface.betas(), 0.0);
    let start = BodyState {
        rotations: sol.local_rotations.clone(),
        translation: t,
        beta,
    };
    let keypoints: Vec<Keypoint> = (0..SMPL_JOINTS)
        .map(|j| Keypoint {
            point: j,
            uv: kp[j],
            weight: weights[j],
        })
        .collect();
    let points: Vec<Point3> = (0..SMPL_JOINTS)
        .map(|j| Point3 {
            point: j,
            xyz: targets[j] - targets[0],
            weight: weights[j],
        })
        .collect();
    let r = fit::fit(
        surface,
        &FitInput {
            intrinsics: &k,
            keypoints: &keypoints,
            points_3d: &points,
            centre: &[0],
            pose_prior: Some(&start.rotations),
            beta_track: None,
            translation_prior: Some(t),
            history: &[],
            rotation_history: &[],
        },
        &start,
        &FitOptions::default(),
    )?;
    let j0 = r.joints[0];
    let joints: Vec<Vector3<f64>> = r.joints.iter().map(|j| j - j0).collect();
    let residual: Vec<f64> = joints
        .iter()
        .zip(targets)
        .map(|(a, b)| (a - (b - targets[0])).norm())
        .collect();
    Ok(PersonOut {
        theta: r
            .state
            .rotations
            .iter()
            .map(|m| {
                let v = ikol_types::rotation::matrix_to_axis_angle(m);
                [v.x, v.y, v.z]
            })
            .collect(),
        rotations: r
            .state
            .rotations
            .iter()
            .map(|m| std::array::from_fn(|a| std::array::from_fn(|b| m[(a, b)])))
            .collect(),
        joints: joints.iter().map(|v| [v.x, v.y, v.z]).collect(),
        mean_residual_mm: 1e3 * residual.iter().sum::<f64>() / residual.len().max(1) as f64,
        residual,
        iterations: r.iterations,
        beta: r.state.beta.clone(),
        translation: Some([
            r.state.translation.x,
            r.state.translation.y,
            r.state.translation.z,
        ]),
        mean_error_2d_px: Some(r.mean_error_2d),
    })
}
