//! `ikol solve`: joints (+ twist, shape, leaf rotations) in, SMPL rotations out, as JSON.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ikol_body::BodyModel;
use ikol_body::nalgebra::{Vector3, Vector4};
use ikol_solver::{IkInput, IkolInit, IkolOptions, Method, Rest, TWIST_PAIRS};
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
    let mut m = Method::from_name(&a.method).with_context(|| {
        format!(
            "unknown method `{}`: use ikol, hybrik or hybrik-naive",
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
    let mut out = SolveOut {
        method: method.name().into(),
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
        });
    }
    let json = serde_json::to_string_pretty(&out)?;
    std::fs::write(output, json).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}
