//! SMPL parameters as `.npz`, in the layout AMASS and smplx users load:
//! `poses` (N, 72) float64 axis-angle, root first (the root's orientation in the Y-up world);
//! `trans` (N, 3) float64, metres: the translation smplx adds to the model's output
//! (`SMPL(..., transl=trans)`), i.e. the root joint's world position minus the rest root of the
//! take's shape; `betas` (B,) float64; `mocap_framerate` () float64; `gender` () `<U7` `neutral`.
//! So `smplx.create(model, 'smpl').forward(betas=betas, global_orient=poses[:, :3],
//! body_pose=poses[:, 3:], transl=trans)` reproduces the take's joints with the same body model.

use ikol_body::npy::{NdArray, npz_bytes};
use ikol_types::rotation::matrix_to_axis_angle;

use crate::{ExportError, Take};

/// The `.npz` bytes of a take.
pub fn encode(take: &Take) -> Result<Vec<u8>, ExportError> {
    let n = take.len();
    let mut poses = Vec::with_capacity(n * 72);
    let mut trans = Vec::with_capacity(n * 3);
    for i in 0..n {
        for r in &take.rotations[i] {
            poses.extend(matrix_to_axis_angle(r).iter());
        }
        trans.extend((take.root[i] - take.rest_joints[0]).iter());
    }
    let poses = NdArray::from_f64(&[n, take.rotations.first().map_or(0, Vec::len) * 3], &poses)?;
    let trans = NdArray::from_f64(&[n, 3], &trans)?;
    let betas = NdArray::from_f64(&[take.beta.len()], &take.beta)?;
    let rate = NdArray::from_f64(&[], &[take.fps])?;
    let gender = NdArray::from_str_scalar("neutral")?;
    Ok(npz_bytes([
        ("poses", &poses),
        ("trans", &trans),
        ("betas", &betas),
        ("mocap_framerate", &rate),
        ("gender", &gender),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrackSample;
    use ikol_body::BodyModel;
    use ikol_body::npy::read_npz_bytes;

    #[test]
    fn layout_and_round_trip() {
        let model = BodyModel::embedded_small().unwrap();
        let mut theta = vec![[0.0; 3]; 24];
        theta[0] = [std::f64::consts::PI, 0.0, 0.0];
        theta[5] = [0.7, 0.0, 0.0];
        let s = TrackSample {
            frame: 0,
            theta,
            translation: [0.1, 0.0, 3.0],
            beta: vec![1.0, -0.5],
        };
        let take = Take::new(1, &[s], 30.0, None, &model).unwrap();
        let m = read_npz_bytes(&encode(&take).unwrap()).unwrap();
        assert_eq!(m["poses"].shape, vec![1, 72]);
        assert_eq!(m["trans"].shape, vec![1, 3]);
        assert_eq!(m["betas"].to_f64().unwrap()[..2], [1.0, -0.5]);
        assert_eq!(m["mocap_framerate"].to_f64().unwrap(), vec![30.0]);
        assert_eq!(
            m["gender"].to_strings().unwrap(),
            vec!["neutral".to_owned()]
        );
        let p = m["poses"].to_f64().unwrap();
        // Upright root: identity in the world; the knee as given.
        assert!(p[..3].iter().all(|v| v.abs() < 1e-12));
        assert!((p[15] - 0.7).abs() < 1e-12);
        // trans + rest root = the root joint's world position.
        let t = m["trans"].to_f64().unwrap();
        for c in 0..3 {
            assert!((t[c] + take.rest_joints[0][c] - take.root[0][c]).abs() < 1e-12);
        }
    }
}
