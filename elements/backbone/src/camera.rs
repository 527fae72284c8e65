//! uvd (network output) <-> camera coordinates, HybrIK reference 4.3 (`uvd_to_cam`).
//!
//! The network predicts, per joint, `u, v` = crop pixel / crop side - 0.5 and
//! `d` = (z - z_root) / depth_factor, with depth_factor = 2 m (`bbox_3d_shape` of IKOL's 3DPW,
//! in metres). With the crop -> frame affine `A^-1`, intrinsics `K` and the root depth `z_root`:
//!
//! ```text
//! p_j = A^-1 [(u_j + 0.5) S, (v_j + 0.5) S, 1]^T          (frame pixels)
//! X_j = K^-1 [p_j, 1]^T * (d_j * depth_factor + z_root)    (camera metres)
//! xyz_j = X_j - X_0                                         (root-relative metres)
//! ```
//!
//! Upstream returns `(X_j - root) / depth_factor - (X_0 - root) / depth_factor`, i.e. the same
//! vector in units of 2 m, and multiplies by 2 before the body-model layer. This crate converts
//! once, here, and returns metres.

use candle_core::{Result as CResult, Tensor};
use ikol_types::{Affine2, Intrinsics};

/// HybrIK's depth factor for IKOL (`bbox_3d_shape[2]`), metres.
pub const DEPTH_FACTOR_M: f64 = 2.0;

/// Where a crop came from: the crop -> frame affine, the camera, and the root depth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropCamera {
    /// Crop pixels -> frame pixels (`Crop::affine().inverse()`).
    pub crop_to_frame: Affine2,
    pub intrinsics: Intrinsics,
    /// Camera-frame depth of the root joint (pelvis), metres.
    pub root_depth: f64,
    /// Depth factor in metres (HybrIK's `bbox_3d_shape[2]`, 2 m).
    pub depth_factor: f64,
}

/// One person's joints in the frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CamJoints {
    /// Joints in frame pixels.
    pub uv_px: Vec<[f64; 2]>,
    /// Absolute camera-frame joints, metres (depth from `root_depth` plus the predicted offset).
    pub xyz_abs_m: Vec<[f64; 3]>,
    /// Root-relative camera-frame joints, metres (`xyz_abs_m[j] - xyz_abs_m[0]`).
    pub xyz_m: Vec<[f64; 3]>,
}

/// uvd -> frame pixels and camera metres for one person (`input_size` = crop side S in pixels).
pub fn uvd_to_cam(uvd: &[[f32; 3]], input_size: f64, cam: &CropCamera) -> CamJoints {
    let k = &cam.intrinsics;
    let mut out = CamJoints::default();
    for j in uvd {
        let (u, v, d) = (f64::from(j[0]), f64::from(j[1]), f64::from(j[2]));
        let p = cam
            .crop_to_frame
            .apply([(u + 0.5) * input_size, (v + 0.5) * input_size]);
        let z = d * cam.depth_factor + cam.root_depth;
        let x = k.unproject(p[0], p[1], z);
        out.uv_px.push(p);
        out.xyz_abs_m.push([x.x, x.y, x.z]);
    }
    let root = out.xyz_abs_m.first().copied().unwrap_or([0.0; 3]);
    out.xyz_m = out
        .xyz_abs_m
        .iter()
        .map(|p| [p[0] - root[0], p[1] - root[1], p[2] - root[2]])
        .collect();
    out
}

/// The inverse map, used for training targets: absolute camera-frame joints (metres) -> uvd,
/// given the frame -> crop affine, the intrinsics and the root depth. `None` for a joint at or
/// behind the camera.
pub fn cam_to_uvd(
    xyz_abs_m: &[[f64; 3]],
    frame_to_crop: &Affine2,
    intrinsics: &Intrinsics,
    root_depth: f64,
    input_size: f64,
    depth_factor: f64,
) -> Vec<Option<[f64; 3]>> {
    xyz_abs_m
        .iter()
        .map(|p| {
            let uv = intrinsics.project(&ikol_types::nalgebra::Vector3::new(p[0], p[1], p[2]))?;
            let c = frame_to_crop.apply(uv);
            Some([
                c[0] / input_size - 0.5,
                c[1] / input_size - 0.5,
                (p[2] - root_depth) / depth_factor,
            ])
        })
        .collect()
}

/// Differentiable batched `uvd_to_cam` for training: `uvd [N, J, 3]`, `crop_to_frame [N, 2, 3]`,
/// `k_inv [N, 3, 3]` (inverse intrinsics), `root_depth [N]` -> root-relative camera joints
/// `[N, J, 3]` in metres.
pub fn uvd_to_cam_tensor(
    uvd: &Tensor,
    crop_to_frame: &Tensor,
    k_inv: &Tensor,
    root_depth: &Tensor,
    input_size: f64,
    depth_factor: f64,
) -> CResult<Tensor> {
    let (n, j, _) = uvd.dims3()?;
    let dev = uvd.device();
    let dt = uvd.dtype();
    let ones = Tensor::ones((n, j, 1), dt, dev)?;
    let uv = uvd.narrow(2, 0, 2)?.affine(input_size, 0.5 * input_size)?;
    let uv1 = Tensor::cat(&[&uv, &ones], 2)?; // [N, J, 3]
    let frame = uv1.matmul(&crop_to_frame.transpose(1, 2)?)?; // [N, J, 2]
    let ray = Tensor::cat(&[&frame, &ones], 2)?.matmul(&k_inv.transpose(1, 2)?)?; // [N, J, 3]
    let z = uvd
        .narrow(2, 2, 1)?
        .affine(depth_factor, 0.0)?
        .broadcast_add(&root_depth.reshape((n, 1, 1))?)?;
    let xyz = ray.broadcast_mul(&z)?;
    xyz.broadcast_sub(&xyz.narrow(1, 0, 1)?)
}

/// Inverse intrinsics `K^-1` as a row-major 3x3 (HybrIK's `intrinsic_param`).
pub fn k_inv(k: &Intrinsics) -> [[f64; 3]; 3] {
    [
        [1.0 / k.fx, 0.0, -k.cx / k.fx],
        [0.0, 1.0 / k.fy, -k.cy / k.fy],
        [0.0, 0.0, 1.0],
    ]
}

/// A root depth when nothing better is known: the depth at which a body of `extent_m` metres
/// (HybrIK's 3D box, 2 m by default) spans the crop's side: `z = f * extent / crop side`.
/// A heuristic, not part of upstream (which uses the ground-truth root).
pub fn root_depth_from_crop(crop_side_px: f64, intrinsics: &Intrinsics, extent_m: f64) -> f64 {
    0.5 * (intrinsics.fx + intrinsics.fy) * extent_m / crop_side_px
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use candle_core::Device;
    use ikol_types::{BBox, BOX_SCALE_MULT, CROP_SIZE, Crop};

    fn scene() -> (Vec<[f64; 3]>, Intrinsics, Crop) {
        let k = Intrinsics {
            fx: 1000.0,
            fy: 990.0,
            cx: 640.0,
            cy: 360.0,
        };
        // A few joints around (0.3, -0.1, 4.5) m.
        let joints = vec![
            [0.3, -0.1, 4.5],
            [0.45, -0.05, 4.6],
            [0.2, 0.5, 4.4],
            [0.1, -0.7, 4.55],
            [0.6, 0.9, 4.3],
        ];
        let px: Vec<[f64; 2]> = joints
            .iter()
            .map(|p| {
                k.project(&ikol_types::nalgebra::Vector3::new(p[0], p[1], p[2]))
                    .unwrap()
            })
            .collect();
        let b = BBox::around_points(px, 1.2).unwrap();
        (joints, k, Crop::from_box(&b, BOX_SCALE_MULT, CROP_SIZE))
    }

    #[test]
    fn round_trip_through_uvd() {
        let (joints, k, crop) = scene();
        let a = crop.affine();
        let root = joints[0][2];
        let uvd = cam_to_uvd(&joints, &a, &k, root, 256.0, DEPTH_FACTOR_M);
        let uvd: Vec<[f32; 3]> = uvd
            .iter()
            .map(|o| {
                let o = o.unwrap();
                [o[0] as f32, o[1] as f32, o[2] as f32]
            })
            .collect();
        // In range of the heatmap.
        assert!(uvd.iter().flatten().all(|v| v.abs() < 0.5));
        let cam = CropCamera {
            crop_to_frame: a.inverse().unwrap(),
            intrinsics: k,
            root_depth: root,
            depth_factor: DEPTH_FACTOR_M,
        };
        let back = uvd_to_cam(&uvd, 256.0, &cam);
        for (j, p) in joints.iter().enumerate() {
            for c in 0..3 {
                // f32 uvd: ~1e-7 relative of a 4.5 m scene.
                assert_relative_eq!(back.xyz_abs_m[j][c], p[c], epsilon = 2e-6);
                assert_relative_eq!(back.xyz_m[j][c], p[c] - joints[0][c], epsilon = 2e-6);
            }
        }
        assert_eq!(back.xyz_m[0], [0.0; 3]);
    }

    #[test]
    fn tensor_version_matches() {
        let (joints, k, crop) = scene();
        let a = crop.affine();
        let inv = a.inverse().unwrap();
        let root = 4.4;
        let uvd: Vec<f64> = cam_to_uvd(&joints, &a, &k, root, 256.0, DEPTH_FACTOR_M)
            .into_iter()
            .flat_map(|o| o.unwrap())
            .collect();
        let dev = Device::Cpu;
        let n = joints.len();
        let t_uvd = Tensor::from_vec(uvd.clone(), (1, n, 3), &dev).unwrap();
        let t_a = Tensor::new(&[inv.m], &dev).unwrap();
        let t_k = Tensor::new(&[k_inv(&k)], &dev).unwrap();
        let t_r = Tensor::new(&[root], &dev).unwrap();
        let xyz = uvd_to_cam_tensor(&t_uvd, &t_a, &t_k, &t_r, 256.0, DEPTH_FACTOR_M).unwrap();
        let xyz = xyz.squeeze(0).unwrap().to_vec2::<f64>().unwrap();
        let uvd32: Vec<[f32; 3]> = uvd
            .chunks(3)
            .map(|c| [c[0] as f32, c[1] as f32, c[2] as f32])
            .collect();
        let cam = CropCamera {
            crop_to_frame: inv,
            intrinsics: k,
            root_depth: root,
            depth_factor: DEPTH_FACTOR_M,
        };
        let host = uvd_to_cam(&uvd32, 256.0, &cam);
        for j in 0..n {
            for c in 0..3 {
                assert_relative_eq!(xyz[j][c], host.xyz_m[j][c], epsilon = 1e-5);
            }
        }
    }

    #[test]
    fn root_depth_heuristic() {
        let k = Intrinsics::from_focal(640, 480, 500.0);
        // A 250 px crop of a 2 m box at focal 500 px is 4 m away.
        assert_relative_eq!(root_depth_from_crop(250.0, &k, 2.0), 4.0);
    }
}
