//! The scene shared by the renderer's reference test and `render-bench`: the default body in a
//! lunge-like pose, upright in a portrait camera like the demo clip's (pose2sim cam01 is
//! 1080x1920 with f = 1681 px), filling about 60 % of the frame height.

use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_types::Intrinsics;
use ikol_types::rotation::axis_angle_to_matrix;

/// Camera of a `width` x `height` frame scaled from the demo camera (1080 x 1920, f 1681 px).
pub fn camera(width: usize, height: usize) -> Intrinsics {
    let s = width as f64 / 1080.0;
    Intrinsics {
        fx: 1681.0 * s,
        fy: 1681.0 * s,
        cx: width as f64 / 2.0,
        cy: height as f64 / 2.0,
    }
}

/// Camera-frame vertices (metres) of the posed default body whose root is `dx` m right of the
/// optical axis at depth `z`, and the model's faces.
pub fn body(dx: f64, z: f64) -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
    let model = BodyModel::embedded_default().expect("the embedded default body model loads");
    let aa = |x: f64, y: f64, zz: f64| axis_angle_to_matrix(&Vector3::new(x, y, zz));
    let mut rot = vec![Matrix3::<f64>::identity(); 24];
    // Upright in the camera (half-turn about x), turned 30 degrees, a lunge, arms apart.
    rot[0] = aa(0.0, 0.5, 0.0) * aa(std::f64::consts::PI, 0.0, 0.0);
    rot[1] = aa(-0.9, 0.0, 0.1);
    rot[4] = aa(1.2, 0.0, 0.0);
    rot[2] = aa(0.4, 0.0, -0.1);
    rot[5] = aa(0.3, 0.0, 0.0);
    rot[16] = aa(0.0, 0.3, -0.9);
    rot[17] = aa(0.0, -0.2, 0.6);
    rot[18] = aa(0.0, -1.1, 0.0);
    rot[19] = aa(0.0, 0.7, 0.0);
    rot[15] = aa(0.2, 0.3, 0.0);
    let posed = model
        .forward(&[0.5, -0.3, 0.2, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0], &rot)
        .expect("the pose is valid");
    let root = posed.joints[0];
    let v = posed
        .vertices
        .iter()
        .map(|p| {
            [
                (f64::from(p[0]) - root.x + dx) as f32,
                (f64::from(p[1]) - root.y) as f32,
                (f64::from(p[2]) - root.z + z) as f32,
            ]
        })
        .collect();
    (v, model.faces.clone())
}
