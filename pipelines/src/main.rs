//! The `ikol` command: body meshes, model inspection, solving, networks, pipeline runs and the
//! 3DPW evaluation.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_types::rotation::axis_angle_to_matrix;
use serde::Deserialize;

mod backbone;
mod eval;
mod mocap;
mod run;
mod shard;
mod solve;
mod stats;

/// 3D human pose and body-mesh recovery (IKOL, HybrIK).
#[derive(Debug, Parser)]
#[command(name = "ikol", version, about)]
enum Cli {
    /// Pose a body model and write the mesh (.obj or .ply).
    Mesh {
        /// `default`, `small`, or a model file (our .safetensors, SMPL .npz or .pkl).
        #[arg(long, default_value = "default")]
        body_model: String,
        /// JSON with `beta` (up to the model's count), `theta` (24 axis-angle triples or 24 3x3
        /// matrices, root first) and optional `translation` [x, y, z] in metres. Without it: T-pose.
        #[arg(long)]
        params: Option<PathBuf>,
        /// Output mesh; the extension (.obj or .ply) picks the format.
        #[arg(long)]
        output: PathBuf,
        /// Also render a shaded front view of the mesh to this PNG.
        #[arg(long)]
        render: Option<PathBuf>,
    },
    /// Inverse kinematics: target joints (+ twist, shape, leaf rotations) to SMPL rotations.
    Solve {
        /// JSON input (schema in the README).
        #[arg(long)]
        input: PathBuf,
        /// `ikol` (Gauss-Newton), `hybrik` (adaptive analytic), `hybrik-2021` (adaptive without
        /// the naive-bone fallback, as released in 2021), `hybrik-naive`, or `fit` (the body
        /// fitted to each person's `keypoints_2d` with its `intrinsics`).
        #[arg(long, default_value = "ikol")]
        method: String,
        /// Gauss-Newton iterations (ikol; default 5, at most 10000).
        #[arg(long)]
        iterations: Option<usize>,
        /// Gauss-Newton damping sigma (ikol; default 0.1).
        #[arg(long)]
        damping: Option<f64>,
        /// Starting swing angles (ikol): `zero` (the paper; default) or `analytic` (from HybrIK).
        #[arg(long)]
        init: Option<String>,
        /// Levenberg-Marquardt damping (ikol): a step that does not lower the cost is rejected
        /// and the damping raised.
        #[arg(long)]
        lm: bool,
        /// Stop early when the largest step is below this many radians (ikol).
        #[arg(long)]
        tolerance: Option<f64>,
        /// Refuse inputs with |beta| above this.
        #[arg(long, default_value_t = solve::DEFAULT_MAX_BETA)]
        max_beta: f64,
        /// `default`, `small`, or a model file: gives the rest skeleton for the shape.
        #[arg(long, default_value = "default")]
        body_model: String,
        /// JSON output.
        #[arg(long)]
        output: PathBuf,
    },
    /// Print a body model's counts, joints, heights over the first shape component and licence.
    InspectModel {
        /// `default`, `small`, or a model file.
        model: String,
    },
    /// Run the backbone network on one image: joints (uvd, pixels, metres), twist, shape, leaves;
    /// or a body regressor (HKMR / HMR): rotations, shape, camera.
    Backbone {
        /// Network weights: upstream HybrIK/IKOL `.pth` or our `.safetensors`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// `ikol24` (IKOL: 24 joints + leaf rotations), `hybrik29` (29 joints), or a body
        /// regressor: `hkmr` (HKMR) or `hmr` (HMR/SPIN's flat regressor).
        #[arg(long, default_value = "ikol24")]
        variant: String,
        /// PNG or JPEG image.
        #[arg(long)]
        image: PathBuf,
        /// Person box `x,y,w,h` in pixels (repeat for several people); default: the whole image.
        #[arg(long = "box", value_name = "X,Y,W,H")]
        boxes: Vec<String>,
        /// Focal length in pixels (square pixels, principal point at the centre).
        #[arg(long, conflicts_with = "fov")]
        focal_length: Option<f64>,
        /// Horizontal field of view in degrees, used without --focal-length.
        #[arg(long, default_value_t = ikol_types::camera::DEFAULT_HFOV_DEG)]
        fov: f64,
        /// Also run every crop mirrored and average.
        #[arg(long)]
        flip_test: bool,
        /// `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// JSON output (schema in the README).
        #[arg(long)]
        output: PathBuf,
    },
    /// Evaluate on 3DPW (PVE, MPJPE, PA-MPJPE; the papers' protocol): the network and solver, or
    /// the solver alone on ground-truth joints.
    ///
    /// Runs the built-in copy of pipelines/3dpw-eval.pipeline (ground-truth boxes -> network ->
    /// solver -> metrics) or, with --ground-truth-joints, of pipelines/3dpw-oracle.pipeline, like
    /// `ikol run` does, then prints the table (mm, per sequence and overall) and writes
    /// summary.json and <sequence>.csv (one row per person-frame) into --output. Published
    /// numbers need SMPL's neutral model (--body-model SMPL_NEUTRAL.pkl) and its
    /// J_regressor_h36m.npy (--h36m-regressor); with other models the table says that they are
    /// not comparable. Ctrl-C ends the stream early and scores the frames played so far.
    #[command(name = "eval-3dpw")]
    Eval3dpw(eval::EvalArgs),
    /// A folder of videos through a pipeline file, one output per video; `--shard i/n` for a
    /// job array (join with `ikol merge`).
    Batch(shard::BatchArgs),
    /// Join the output folders of `eval-3dpw --shard` or `batch --shard` runs into one result.
    Merge(shard::MergeArgs),
    /// Motion capture: a video in, a BVH / glTF (.glb) / TRC / NPZ file per tracked person out
    /// (BlazePose front end, the body fitted per track, a Y-up world with the floor at y = 0).
    Mocap(mocap::MocapArgs),
    /// Run a pipeline file (`pipelines/*.pipeline`) with NAME=value variables.
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// Variables, `NAME=value`.
        vars: Vec<String>,
        /// Print the file's variables, their defaults and meaning, and exit.
        #[arg(long)]
        list_vars: bool,
        /// Print the pipeline description after substitution and exit.
        #[arg(long)]
        dry_run: bool,
        /// On an error from a network source, restart the pipeline up to N times.
        #[arg(long, default_value_t = 0, value_name = "N")]
        reconnect: u32,
        /// Seconds to wait before reconnecting.
        #[arg(long, default_value_t = 2.0, value_name = "SECS")]
        reconnect_delay: f64,
        /// Stop (with end-of-stream, so files are finalised) after this many seconds.
        #[arg(long, value_name = "SECS")]
        max_seconds: Option<f64>,
        /// Set a property of the pipeline's elements: ELEMENT (a factory name such as
        /// ikolsolver, or an element's name) . PROPERTY = VALUE; repeatable.
        #[arg(long = "set", value_name = "ELEMENT.PROPERTY=VALUE")]
        sets: Vec<String>,
        /// Live or network input: no frame for this many seconds is a stall (the files written
        /// so far are finalised; with --reconnect the pipeline starts again, else exit 1);
        /// 0 = never. Default 5.
        #[arg(long, value_name = "SECS")]
        stall_timeout: Option<f64>,
        /// At the end, print per element the buffers, mean and p95 processing time and share of
        /// the wall time, and every queue's fill.
        #[arg(long)]
        stats: bool,
        /// Play a file input this many times in a row (segment seeks, one continuous stream:
        /// demos, soak tests); 0 = until interrupted. Not for live input, not into a container
        /// muxer (timestamps restart with each play); the first frame is processed twice
        /// (preroll, then the seek to the start).
        #[arg(long = "loop", value_name = "N", default_value_t = 1)]
        loops: u32,
    },
}

/// Pose parameters as `ikol mesh --params` reads them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    beta: Vec<f64>,
    #[serde(default)]
    theta: Option<Theta>,
    #[serde(default)]
    translation: Option<[f64; 3]>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Theta {
    AxisAngle(Vec<[f64; 3]>),
    Matrices(Vec<[[f64; 3]; 3]>),
}

impl Params {
    fn rotations(&self) -> Result<Vec<Matrix3<f64>>> {
        let r: Vec<Matrix3<f64>> = match &self.theta {
            None => vec![Matrix3::identity(); 24],
            Some(Theta::AxisAngle(v)) => v
                .iter()
                .map(|a| axis_angle_to_matrix(&Vector3::from(*a)))
                .collect(),
            Some(Theta::Matrices(m)) => {
                m.iter().map(|r| Matrix3::from_fn(|i, j| r[i][j])).collect()
            }
        };
        if r.len() != 24 {
            bail!(
                "`theta` has {} rotations, expected 24 (SMPL joints, root first)",
                r.len()
            );
        }
        Ok(r)
    }
}

/// Top of the head to the lowest vertex along y (the model's up axis), metres.
fn height(vertices: &[f32]) -> f64 {
    let ys = vertices.chunks_exact(3).map(|v| f64::from(v[1]));
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    hi - lo
}

/// Renders a mesh given in the body-model frame (y up, facing +z) as seen from the front: camera
/// axes are (x, -y, -z) of the model frame, a half-turn about x, placed so the body fills 85% of a
/// 512 px square.
fn render_front(vertices: &[[f32; 3]], faces: &[[u32; 3]], path: &std::path::Path) -> Result<()> {
    const SIZE: usize = 512;
    const F: f64 = 1200.0;
    let (mut lo, mut hi) = ([f32::MAX; 3], [f32::MIN; 3]);
    for v in vertices {
        for c in 0..3 {
            lo[c] = lo[c].min(v[c]);
            hi[c] = hi[c].max(v[c]);
        }
    }
    let centre = [0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1])];
    let extent = f64::from((hi[0] - lo[0]).max(hi[1] - lo[1]));
    let dist = (F * extent / (0.85 * SIZE as f64)) as f32 + hi[2];
    let cam: Vec<[f32; 3]> = vertices
        .iter()
        .map(|v| [v[0] - centre[0], centre[1] - v[1], dist - v[2]])
        .collect();
    let k = ikol_types::Intrinsics::from_focal(SIZE as u32, SIZE as u32, F);
    let mut rgb = vec![255u8; SIZE * SIZE * 3];
    let mut frame = ikol_render::Frame::new(
        &mut rgb,
        SIZE,
        SIZE,
        SIZE * 3,
        ikol_render::PixelFormat::Rgb,
    )?;
    let mut depth = ikol_render::Canvas::new(SIZE, SIZE);
    ikol_render::draw_mesh(
        &mut frame,
        &mut depth,
        &k,
        &cam,
        faces,
        &ikol_render::MeshStyle::default(),
    )?;
    ikol_render::write_png(path, &rgb, SIZE as u32, SIZE as u32)
        .with_context(|| format!("writing {}", path.display()))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // One-shot commands die of SIGPIPE on a closed pipe like Unix tools (`| head`); the
    // streaming ones keep it ignored so a closed stdout cannot kill a pipeline before its
    // files are finalised (they print through `run::say`, which ignores a closed stdout).
    if !matches!(
        cli,
        Cli::Run { .. } | Cli::Mocap(_) | Cli::Eval3dpw(_) | Cli::Batch(_)
    ) {
        sigpipe::reset();
    }
    match cli {
        Cli::Mesh {
            body_model,
            params,
            output,
            render,
        } => {
            let model = BodyModel::from_spec(&body_model)
                .with_context(|| format!("loading body model `{body_model}`"))?;
            let p: Params = match &params {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{}: not valid pose parameters", path.display()))?
                }
                None => Params {
                    beta: vec![],
                    theta: None,
                    translation: None,
                },
            };
            let rotations = p
                .rotations()
                .with_context(|| format!("{}", params.unwrap_or_default().display()))?;
            let mut posed = model.forward(&p.beta, &rotations)?;
            if let Some(t) = p.translation {
                for v in &mut posed.vertices {
                    for c in 0..3 {
                        v[c] += t[c] as f32;
                    }
                }
            }
            ikol_body::mesh_io::write_mesh(&output, &posed.vertices, &model.faces)?;
            println!(
                "wrote {} ({} vertices, {} faces)",
                output.display(),
                posed.vertices.len(),
                model.faces.len()
            );
            if let Some(png) = render {
                render_front(&posed.vertices, &model.faces, &png)?;
                println!("wrote {}", png.display());
            }
        }
        Cli::Solve {
            input,
            method,
            iterations,
            damping,
            init,
            lm,
            tolerance,
            max_beta,
            body_model,
            output,
        } => {
            solve::run(
                &input,
                &output,
                &body_model,
                &solve::SolveArgs {
                    method,
                    iterations,
                    damping,
                    init,
                    lm,
                    tolerance,
                    max_beta,
                },
            )?;
            println!("wrote {}", output.display());
        }
        Cli::Backbone {
            checkpoint,
            variant,
            image,
            boxes,
            focal_length,
            fov,
            flip_test,
            device,
            output,
        } => {
            let n = backbone::run(&backbone::BackboneArgs {
                checkpoint,
                variant,
                image,
                boxes,
                focal_length,
                fov,
                flip_test,
                device,
                output: output.clone(),
            })?;
            println!("wrote {} ({n} people)", output.display());
        }
        Cli::Run {
            file,
            vars,
            list_vars,
            dry_run,
            reconnect,
            reconnect_delay,
            max_seconds,
            sets,
            stall_timeout,
            stats,
            loops,
        } => run::main(&run::RunArgs {
            file,
            vars,
            list_vars,
            dry_run,
            reconnect,
            reconnect_delay,
            max_seconds,
            sets,
            stall_timeout,
            stats,
            loops: Some(loops),
        })?,
        Cli::Eval3dpw(args) => eval::main(&args)?,
        Cli::Batch(args) => shard::batch(&args)?,
        Cli::Merge(args) => shard::merge(&args)?,
        Cli::Mocap(args) => mocap::main(&args)?,
        Cli::InspectModel { model: spec } => {
            let m = BodyModel::from_spec(&spec)
                .with_context(|| format!("loading body model `{spec}`"))?;
            println!("name:            {}", m.name);
            println!("vertices:        {}", m.num_vertices());
            println!("faces:           {}", m.faces.len());
            println!("shape components: {}", m.num_betas);
            println!(
                "pose blend shapes: {}",
                if m.posedirs.is_some() { "yes" } else { "no" }
            );
            println!(
                "skinning nonzeros: {} ({:.2} joints per vertex)",
                m.weights.data.len(),
                m.weights.data.len() as f64 / m.num_vertices() as f64
            );
            println!("leaf vertices:   {:?}", m.leaf_vertices);
            println!(
                "H36M regressor:  {}",
                if m.j_regressor_h36m.is_some() {
                    "yes"
                } else {
                    "no"
                }
            );
            let rest = m.rest_joints(&[])?;
            println!("joints (rest, mean shape, metres):");
            for (j, (name, p)) in m.joint_names.iter().zip(&rest).enumerate() {
                println!(
                    "  {j:2} {name:15} parent {:3}  ({:7.3}, {:7.3}, {:7.3})",
                    m.parents[j], p.x, p.y, p.z
                );
            }
            if m.num_betas > 0 {
                print!("height over beta0:");
                for b0 in [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0] {
                    print!("  {b0:+.0}: {:.3} m", height(&m.shaped_vertices(&[b0])?));
                }
                println!();
            }
            println!("licence:\n{}", m.licence);
        }
    }
    Ok(())
}
