//! BVH (Biovision Hierarchy) motion: the take's skeleton and one frame per take frame.
//!
//! - Joints: the body model's 24, named as SMPL names them (`pelvis`, `left_hip`, ...), the
//!   hierarchy its parent table; `End Site`s at the leaf joints (head top, middle fingertips, big
//!   toes where the model marks those vertices, else 10 cm along the last bone).
//! - OFFSETs: the rest joints of the take's shape relative to their parents, **centimetres**, in
//!   the world's axes (y up; the rest pose is the model's T-pose facing +z). Blender: import with
//!   scale 0.01 for metres.
//! - Channels: the root `Xposition Yposition Zposition Zrotation Yrotation Xrotation`, every
//!   other joint `Zrotation Yrotation Xrotation`, degrees. BVH composes the rotation channels in
//!   the order listed, so a joint's local rotation is `R = Rz(z) Ry(y) Rx(x)`. Root position: the
//!   root joint's world position (the root OFFSET is zero).
//! - Euler angles are unwrapped frame to frame (of the two decompositions of each rotation, and
//!   their 360-degree shifts, the one nearest the previous frame's), so curves have no jumps.

use std::fmt::Write as _;

use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_types::joints::{SMPL_JOINTS, SMPL24_NAMES};

use crate::Take;

/// Metres to the file's unit.
pub const CM_PER_M: f64 = 100.0;

/// HybrIK's leaf vertices (head top, left/right middle fingertip, left/right big toe) end these
/// SMPL joints: head, left_hand, right_hand, left_foot, right_foot.
const LEAF_JOINTS: [usize; 5] = [15, 22, 23, 10, 11];

/// ZYX Euler angles (radians) of `r = Rz(z) Ry(y) Rx(x)`, as `[z, y, x]`.
pub fn euler_zyx(r: &Matrix3<f64>) -> [f64; 3] {
    let y = (-r[(2, 0)]).clamp(-1.0, 1.0).asin();
    if r[(2, 0)].abs() < 1.0 - 1e-12 {
        [r[(1, 0)].atan2(r[(0, 0)]), y, r[(2, 1)].atan2(r[(2, 2)])]
    } else {
        // Gimbal lock (y = +-90 deg): only z -+ x is defined; put it all in z.
        [(-r[(0, 1)]).atan2(r[(1, 1)]), y, 0.0]
    }
}

/// The angle equal to `a` modulo 2 pi nearest `near`.
fn unwrap(a: f64, near: f64) -> f64 {
    let tau = std::f64::consts::TAU;
    a - tau * ((a - near) / tau).round()
}

/// Of the two ZYX decompositions of the same rotation, unwrapped, the one nearest `prev`.
fn euler_near(r: &Matrix3<f64>, prev: Option<[f64; 3]>) -> [f64; 3] {
    let e = euler_zyx(r);
    let Some(p) = prev else { return e };
    let pi = std::f64::consts::PI;
    let alt = [e[0] + pi, pi - e[1], e[2] + pi];
    let fit = |c: [f64; 3]| -> ([f64; 3], f64) {
        let u = [unwrap(c[0], p[0]), unwrap(c[1], p[1]), unwrap(c[2], p[2])];
        let d = (0..3).map(|k| (u[k] - p[k]).powi(2)).sum();
        (u, d)
    };
    let (a, da) = fit(e);
    let (b, db) = fit(alt);
    if db < da { b } else { a }
}

/// The joints in depth-first order (children in index order): the order of the channels.
pub fn depth_first(parents: &[i8]) -> Vec<usize> {
    fn visit(j: usize, parents: &[i8], out: &mut Vec<usize>) {
        out.push(j);
        for c in 0..parents.len() {
            if usize::try_from(parents[c]) == Ok(j) {
                visit(c, parents, out);
            }
        }
    }
    let mut out = Vec::with_capacity(parents.len());
    for r in 0..parents.len() {
        if parents[r] < 0 {
            visit(r, parents, &mut out);
        }
    }
    out
}

/// End Site offsets (metres, model frame) of the leaf joints.
fn end_site(take: &Take, model: &BodyModel, j: usize) -> Vector3<f64> {
    let rest = &take.rest_joints;
    if let Some(leaves) = model.leaf_vertices
        && let Some(k) = LEAF_JOINTS.iter().position(|&l| l == j)
        && let Ok(v) = model.shaped_vertices(&take.beta)
    {
        let i = leaves[k];
        return Vector3::new(v[3 * i].into(), v[3 * i + 1].into(), v[3 * i + 2].into()) - rest[j];
    }
    let p = usize::try_from(model.parents[j]).unwrap_or(0);
    let bone = rest[j] - rest[p];
    bone.try_normalize(1e-9).unwrap_or(Vector3::y()) * 0.1
}

/// The BVH text of a take.
pub fn encode(take: &Take, model: &BodyModel) -> String {
    let parents = &model.parents[..];
    let order = depth_first(parents);
    let rest = &take.rest_joints;
    let has_children = |j: usize| parents.iter().any(|&p| usize::try_from(p) == Ok(j));
    let mut s = String::with_capacity(64 * 1024 + take.len() * SMPL_JOINTS * 30);
    s.push_str("HIERARCHY\n");
    // Open blocks: (joint, depth); closed when the next joint in order is not below them.
    let mut open: Vec<usize> = Vec::new();
    let depth_of = |mut j: usize| {
        let mut d = 0;
        while let Ok(p) = usize::try_from(parents[j]) {
            j = p;
            d += 1;
        }
        d
    };
    let close_to = |s: &mut String, open: &mut Vec<usize>, depth: usize| {
        while open.len() > depth {
            if let Some(j) = open.pop() {
                let ind = "  ".repeat(open.len());
                if !has_children(j) {
                    let e = end_site(take, model, j) * CM_PER_M;
                    let _ = writeln!(
                        s,
                        "{ind}  End Site\n{ind}  {{\n{ind}    OFFSET {:.6} {:.6} {:.6}\n{ind}  }}",
                        e.x, e.y, e.z
                    );
                }
                let _ = writeln!(s, "{ind}}}");
            }
        }
    };
    for &j in &order {
        let depth = depth_of(j);
        close_to(&mut s, &mut open, depth);
        let ind = "  ".repeat(depth);
        let name = SMPL24_NAMES.get(j).copied().unwrap_or("joint");
        match usize::try_from(parents[j]) {
            Err(_) => {
                let _ = writeln!(
                    s,
                    "ROOT {name}\n{{\n  OFFSET 0.000000 0.000000 0.000000\n  CHANNELS 6 \
                     Xposition Yposition Zposition Zrotation Yrotation Xrotation"
                );
            }
            Ok(p) => {
                let o = (rest[j] - rest[p]) * CM_PER_M;
                let _ = writeln!(
                    s,
                    "{ind}JOINT {name}\n{ind}{{\n{ind}  OFFSET {:.6} {:.6} {:.6}\n{ind}  \
                     CHANNELS 3 Zrotation Yrotation Xrotation",
                    o.x, o.y, o.z
                );
            }
        }
        open.push(j);
    }
    close_to(&mut s, &mut open, 0);
    let _ = write!(
        s,
        "MOTION\nFrames: {}\nFrame Time: {:.8}\n",
        take.len(),
        1.0 / take.fps
    );
    let mut prev: Vec<Option<[f64; 3]>> = vec![None; SMPL_JOINTS];
    for i in 0..take.len() {
        let r = take.root[i] * CM_PER_M;
        let _ = write!(s, "{:.6} {:.6} {:.6}", r.x, r.y, r.z);
        for &j in &order {
            let e = euler_near(&take.rotations[i][j], prev[j]);
            prev[j] = Some(e);
            let _ = write!(
                s,
                " {:.6} {:.6} {:.6}",
                e[0].to_degrees(),
                e[1].to_degrees(),
                e[2].to_degrees()
            );
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikol_types::rotation::axis_angle_to_matrix;

    fn rz(a: f64) -> Matrix3<f64> {
        axis_angle_to_matrix(&Vector3::new(0.0, 0.0, a))
    }
    fn ry(a: f64) -> Matrix3<f64> {
        axis_angle_to_matrix(&Vector3::new(0.0, a, 0.0))
    }
    fn rx(a: f64) -> Matrix3<f64> {
        axis_angle_to_matrix(&Vector3::new(a, 0.0, 0.0))
    }

    #[test]
    fn euler_is_rz_ry_rx() {
        for (z, y, x) in [(0.3, -0.7, 1.2), (-2.9, 0.1, 3.0), (1.0, 1.5, -0.4)] {
            let r = rz(z) * ry(y) * rx(x);
            let e = euler_zyx(&r);
            let back = rz(e[0]) * ry(e[1]) * rx(e[2]);
            assert!((back - r).norm() < 1e-12);
            assert!((e[0] - z).abs() < 1e-12 && (e[1] - y).abs() < 1e-12);
        }
        // Gimbal lock: still the same rotation.
        let r = rz(0.4) * ry(std::f64::consts::FRAC_PI_2) * rx(0.1);
        let e = euler_zyx(&r);
        assert!((rz(e[0]) * ry(e[1]) * rx(e[2]) - r).norm() < 1e-9);
    }

    #[test]
    fn unwrapped_across_pi() {
        // z turning through 180 deg: no jump of 360.
        let a = euler_near(&rz(3.1), None);
        let b = euler_near(&rz(3.2), Some(a));
        assert!((b[0] - 3.2).abs() < 1e-9, "{b:?}");
        let r = rz(b[0]) * ry(b[1]) * rx(b[2]);
        assert!((r - rz(3.2)).norm() < 1e-12);
    }

    #[test]
    fn hierarchy_and_channels() {
        let model = ikol_body::BodyModel::embedded_small().unwrap();
        let order = depth_first(&model.parents);
        assert_eq!(order.len(), 24);
        assert_eq!(&order[..4], &[0, 1, 4, 7]); // pelvis, left_hip, left_knee, left_ankle
        let mut theta = vec![[0.0; 3]; 24];
        theta[0] = [std::f64::consts::PI, 0.0, 0.0];
        theta[18] = [0.0, 0.0, 0.5]; // left elbow about z
        let s = crate::TrackSample {
            frame: 0,
            theta,
            translation: [0.0, 0.0, 3.0],
            beta: vec![],
        };
        let take = Take::new(
            1,
            &[s.clone(), crate::TrackSample { frame: 1, ..s }],
            25.0,
            None,
            &model,
        )
        .unwrap();
        let text = encode(&take, &model);
        assert_eq!(text.matches("JOINT ").count(), 23);
        assert_eq!(text.matches("End Site").count(), 5);
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert!(text.contains("Frames: 2\nFrame Time: 0.04000000\n"));
        let first = text.lines().rev().nth(1).unwrap();
        let v: Vec<f64> = first.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!(v.len(), 6 + 3 * 23);
        // The elbow's channels (z first): 0.5 rad.
        let k = order.iter().position(|&j| j == 18).unwrap();
        assert!((v[3 + 3 * k] - 0.5f64.to_degrees()).abs() < 1e-5);
        // OFFSET of left_hip = rest difference in cm.
        let o = (take.rest_joints[1] - take.rest_joints[0]) * CM_PER_M;
        assert!(text.contains(&format!("OFFSET {:.6} {:.6} {:.6}", o.x, o.y, o.z)));
    }
}
