//! `ikol solve`: joints (+ twist, shape, leaf rotations) in, SMPL rotations out, as JSON.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ikol_body::Anchor;
use ikol_body::BodyModel;
use ikol_body::nalgebra::{Vector3, Vector4};
use ikol_solver::fit::{self, BodyState, FitInput, FitOptions, Keypoint, Point3, SurfaceModel};
use ikol_solver::{IkInput, IkSolution, IkolInit, IkolOptions, Method, Rest, TWIST_PAIRS};
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

/// Options of `ikol solve` beyond the method's defaults.
#[derive(Debug, Clone)]
pub struct SolveArgs {
    pub method: String,
    pub iterations: Option<usize>,
    pub damping: Option<f64>,
    pub init: String,
}

pub fn method(a: &SolveArgs) -> Result<Method> {
    // The fit starts from (and is pulled toward) adaptive HybrIK.
    let name = if a.method == "fit" {
        "hybrik"
    } else {
        &a.method
    };
    let mut m = Method::from_name(name).with_context(|| {
        format!(
            "unknown method `{}`: use ikol, hybrik, hybrik-naive or fit",
            a.method
        )
    })?;
    if let Method::Ikol(o) = &mut m {
        *o = IkolOptions {
            iterations: a.iterations.unwrap_or(o.iterations),
            damping: a.damping.unwrap_or(o.damping),
            init: match a.init.as_str() {
                "zero" => IkolInit::Zero,
                "analytic" => IkolInit::Analytic { fallback: None },
                other => bail!("unknown init `{other}`: use zero or analytic"),
            },
            ..o.clone()
        };
    } else if a.iterations.is_some() || a.damping.is_some() {
        bail!("--iterations and --damping apply to --method ikol only");
    }
    Ok(m)
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
    for (i, p) in people.iter().enumerate() {
        let ctx = || format!("{}: person {i}", input.display());
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
        if let Some(surface) = &surface {
            out.people
                .push(fit_person(surface, p, &sol, &targets).with_context(ctx)?);
            continue;
        }
        out.people.push(PersonOut {
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
        });
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
