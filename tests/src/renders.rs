//! Renders of the default body model at random known poses, for the front end's accuracy on
//! pictures whose 3D is known (`frontend-accuracy`, `tests/crop_view.rs`): a shaded mannequin
//! over grey, 480x640, 60 degree horizontal field of view, 3.2 m away, facing the camera within
//! +-35 degrees (ikol-solver's joint-limit-aware sampling).

use anyhow::Result;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_body::{BodyModel, Posed};
use ikol_render::{Canvas, Frame, MeshStyle, PixelFormat, draw_mesh};
use ikol_solver::sampling::{PoseDistribution, sample_beta, sample_pose};
use ikol_types::Intrinsics;
use ikol_types::rotation::axis_angle_to_matrix;
use rand::Rng;

/// Picture width.
pub const W: usize = 480;
/// Picture height.
pub const H: usize = 640;

/// The renders' camera.
pub fn camera() -> Intrinsics {
    Intrinsics::from_hfov(W as u32, H as u32, 60.0)
}

/// One render: RGB pixels (row stride `3 * W`), the posed body (turned to face the camera but
/// not moved: root at its model position) and its joints relative to the root in camera axes.
#[derive(Debug)]
pub struct Render {
    pub rgb: Vec<u8>,
    pub posed: Posed,
    pub joints: Vec<Vector3<f64>>,
}

/// A random body (pose; shape coefficients drawn from N(0, 0.7^2); heading within +-0.6 rad)
/// with its root `side` metres to the right of the optical axis at 3.2 m.
pub fn random_body(rng: &mut impl Rng, model: &BodyModel, side: f64) -> Result<Render> {
    let dist = PoseDistribution {
        random_heading: false,
        ..PoseDistribution::default()
    };
    let pose = sample_pose(rng, &dist);
    let beta = sample_beta(rng, model.num_betas, 0.7);
    let heading = rng.random_range(-0.6..0.6);
    // Model frame (y up, facing +z) to camera (y down, facing the camera: -z): a half turn
    // about x, after the heading about the model's up axis.
    let mut rot: Vec<Matrix3<f64>> = pose.iter().map(axis_angle_to_matrix).collect();
    rot[0] = axis_angle_to_matrix(&Vector3::new(std::f64::consts::PI, 0.0, 0.0))
        * axis_angle_to_matrix(&Vector3::new(0.0, heading, 0.0))
        * rot[0];
    let posed = model.forward(&beta, &rot)?;
    let root = posed.joints[0];
    let t = Vector3::new(side, 0.0, 3.2);
    let verts: Vec<[f32; 3]> = posed
        .vertices
        .iter()
        .map(|v| {
            let p = Vector3::new(f64::from(v[0]), f64::from(v[1]), f64::from(v[2])) - root + t;
            [p.x as f32, p.y as f32, p.z as f32]
        })
        .collect();
    let joints = posed.joints.iter().map(|j| j - root).collect();
    let mut rgb = vec![128u8; W * H * 3];
    let mut frame = Frame::new(&mut rgb, W, H, 3 * W, PixelFormat::Rgb)?;
    let mut depth = Canvas::new(W, H);
    let style = MeshStyle {
        color: [205, 170, 150],
        ..MeshStyle::default()
    };
    draw_mesh(
        &mut frame,
        &mut depth,
        &camera(),
        &verts,
        &model.faces,
        &style,
    )?;
    Ok(Render { rgb, posed, joints })
}
