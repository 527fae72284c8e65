//! Body-model invariants (closed forms) and our file format: round trip and bad input.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_body::{BodyError, BodyModel, BodyModelParts, Csr, ikolfile};
use ikol_types::joints::SMPL24_PARENTS;
use ikol_types::rotation::axis_angle_to_matrix;

/// Deterministic pseudo-random numbers in [-0.5, 0.5).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    }
}

/// A small random model: 24 joints, each vertex skinned to 1-3 joints, joints regressed from
/// a few vertices each, optional pose blend shapes.
fn random_parts(nv: usize, posedirs: bool, seed: u64) -> BodyModelParts {
    let mut r = Lcg(seed);
    let v_template: Vec<f32> = (0..nv * 3).map(|_| r.next() as f32).collect();
    let shapedirs: Vec<f32> = (0..nv * 3 * 10).map(|_| 0.05 * r.next() as f32).collect();
    let mut w = vec![0.0; nv * 24];
    for v in 0..nv {
        let js = [v % 24, (v * 7 + 3) % 24, (v * 13 + 5) % 24];
        let raw: Vec<f64> = js.iter().map(|_| r.next() + 0.6).collect();
        let s: f64 = raw.iter().sum();
        for (j, x) in js.iter().zip(raw) {
            w[v * 24 + j] += x / s;
        }
    }
    let mut jr = vec![0.0; 24 * nv];
    for j in 0..24 {
        for k in 0..3 {
            jr[j * nv + (j * 3 + k * 11) % nv] += 1.0 / 3.0;
        }
    }
    BodyModelParts {
        name: "random".into(),
        v_template,
        shapedirs,
        num_betas: 10,
        posedirs: posedirs.then(|| (0..nv * 3 * 207).map(|_| 0.01 * r.next() as f32).collect()),
        j_regressor: Csr::from_dense(24, nv, &jr, 0.0),
        weights: Csr::from_dense(nv, 24, &w, 0.0),
        parents: SMPL24_PARENTS.iter().map(|&p| i64::from(p)).collect(),
        faces: (0..nv as u32 - 2).map(|i| [i, i + 1, i + 2]).collect(),
        leaf_vertices: Some([0, 1, 2, 3, 4]),
        j_regressor_h36m: None,
        joint_names: None,
        licence: "test".into(),
    }
}

fn model(posedirs: bool) -> BodyModel {
    BodyModel::from_parts(random_parts(90, posedirs, 7), Path::new("random")).unwrap()
}

fn random_pose(seed: u64, scale: f64) -> Vec<Matrix3<f64>> {
    let mut r = Lcg(seed);
    (0..24)
        .map(|_| axis_angle_to_matrix(&Vector3::new(r.next(), r.next(), r.next()).scale(scale)))
        .collect()
}

#[test]
fn zero_pose_gives_the_shaped_rest_mesh() {
    let m = model(true);
    let beta = [0.3, -1.0, 0.5, 0.0, 0.2, 0.0, 0.0, 0.1, 0.0, -0.4];
    let posed = m.forward(&beta, &[Matrix3::identity(); 24]).unwrap();
    let rest = m.shaped_vertices(&beta).unwrap();
    for (p, r) in posed.vertices.iter().zip(rest.chunks_exact(3)) {
        for c in 0..3 {
            assert!((p[c] - r[c]).abs() < 1e-6, "{p:?} vs {r:?}");
        }
    }
    // Rest joints are the regressor applied to the shaped vertices (closed form).
    let rest64: Vec<f64> = rest.iter().map(|&x| f64::from(x)).collect();
    let j = m.j_regressor.mul_dense(&rest64, 3);
    for (k, p) in posed.joints.iter().enumerate() {
        assert!((p - Vector3::new(j[3 * k], j[3 * k + 1], j[3 * k + 2])).norm() < 1e-6);
    }
}

#[test]
fn global_rotation_rotates_everything_about_the_root() {
    let m = model(true);
    let beta = [0.5; 10];
    let mut pose = random_pose(3, 0.4);
    let a = m.forward(&beta, &pose).unwrap();
    let g = axis_angle_to_matrix(&Vector3::new(0.3, -1.2, 0.7));
    pose[0] = g * pose[0];
    let b = m.forward(&beta, &pose).unwrap();
    let root = a.joints[0];
    for (va, vb) in a.vertices.iter().zip(&b.vertices) {
        let va = Vector3::from(va.map(f64::from));
        let expect = g * (va - root) + root;
        assert!((Vector3::from(vb.map(f64::from)) - expect).norm() < 1e-5);
    }
    for (ja, jb) in a.joints.iter().zip(&b.joints) {
        assert!((g * (ja - root) + root - jb).norm() < 1e-12);
    }
}

#[test]
fn shape_changes_bone_lengths_and_pose_keeps_them() {
    let m = model(false);
    let bones = |j: &[Vector3<f64>]| {
        (1..24)
            .map(|k| (j[k] - j[SMPL24_PARENTS[k] as usize]).norm())
            .collect::<Vec<_>>()
    };
    let r0 = m.rest_joints(&[]).unwrap();
    let r1 = m.rest_joints(&[2.0, 1.0]).unwrap();
    assert!(
        bones(&r0)
            .iter()
            .zip(bones(&r1))
            .any(|(a, b)| (a - b).abs() > 1e-3),
        "beta changes bone lengths"
    );
    let posed = m.forward(&[2.0, 1.0], &random_pose(5, 0.8)).unwrap();
    for (a, b) in bones(&r1).iter().zip(bones(&posed.joints)) {
        assert!((a - b).abs() < 1e-12, "rotations keep bone lengths");
    }
    assert_eq!(m.parents, SMPL24_PARENTS);
    // Fewer betas than the model has = zero padding.
    let a = m.forward(&[2.0, 1.0], &random_pose(5, 0.8)).unwrap();
    let mut full = [0.0; 10];
    full[..2].copy_from_slice(&[2.0, 1.0]);
    let b = m.forward(&full, &random_pose(5, 0.8)).unwrap();
    assert_eq!(a.vertices, b.vertices);
}

#[test]
fn single_joint_skinning_is_rigid() {
    // With pose blend shapes off, a vertex skinned only to joint j moves rigidly with joint j:
    // v = G_j (v_rest - J_j) + p_j (SMPL Eq. 2 with one weight).
    let mut parts = random_parts(48, false, 11);
    let nv = 48;
    let mut w = vec![0.0; nv * 24];
    for v in 0..nv {
        w[v * 24 + v % 24] = 1.0;
    }
    parts.weights = Csr::from_dense(nv, 24, &w, 0.0);
    let m = BodyModel::from_parts(parts, Path::new("rigid")).unwrap();
    let pose = random_pose(9, 0.7);
    let posed = m.forward(&[], &pose).unwrap();
    let rest_j = m.rest_joints(&[]).unwrap();
    for v in 0..nv {
        let j = v % 24;
        let vr = Vector3::new(
            f64::from(m.v_template[3 * v]),
            f64::from(m.v_template[3 * v + 1]),
            f64::from(m.v_template[3 * v + 2]),
        );
        let expect = posed.global_rotations[j] * (vr - rest_j[j]) + posed.joints[j];
        assert!((Vector3::from(posed.vertices[v].map(f64::from)) - expect).norm() < 1e-5);
    }
}

#[test]
fn batch_equals_single() {
    let m = model(true);
    let people: Vec<_> = (0..7)
        .map(|i| (vec![0.1 * i as f64; 10], random_pose(i, 0.5)))
        .collect();
    let batch = m.forward_batch(&people).unwrap();
    for ((b, r), out) in people.iter().zip(&batch) {
        assert_eq!(m.forward(b, r).unwrap().vertices, out.vertices);
    }
}

#[test]
fn bad_inputs_are_errors() {
    let m = model(false);
    let e = m
        .forward(&[f64::NAN], &[Matrix3::identity(); 24])
        .unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    let e = m
        .forward(&[0.0; 11], &[Matrix3::identity(); 24])
        .unwrap_err();
    assert!(e.to_string().contains("11 shape coefficients"), "{e}");
    let e = m.forward(&[], &[Matrix3::identity(); 23]).unwrap_err();
    assert!(e.to_string().contains("23 rotations"), "{e}");
    let mut bad = [Matrix3::identity(); 24];
    bad[4][(0, 1)] = f64::INFINITY;
    assert!(m.forward(&[], &bad).is_err());

    let mut p = random_parts(30, false, 1);
    p.v_template[5] = f32::NAN;
    let e = BodyModel::from_parts(p, Path::new("x.npz")).unwrap_err();
    assert!(
        matches!(&e, BodyError::BadArray { key, .. } if key == "v_template"),
        "{e}"
    );
    assert!(e.to_string().starts_with("x.npz: key `v_template`"), "{e}");
    let mut p = random_parts(30, false, 1);
    p.parents[5] = 9;
    assert!(
        BodyModel::from_parts(p, Path::new("x"))
            .unwrap_err()
            .to_string()
            .contains("parents")
    );
    let mut p = random_parts(30, false, 1);
    p.faces.push([0, 1, 30]);
    assert!(
        BodyModel::from_parts(p, Path::new("x"))
            .unwrap_err()
            .to_string()
            .contains("faces")
    );
    let mut p = random_parts(30, false, 1);
    p.weights.data[0] += 0.5;
    assert!(
        BodyModel::from_parts(p, Path::new("x"))
            .unwrap_err()
            .to_string()
            .contains("sums to")
    );
    let mut p = random_parts(30, false, 1);
    p.shapedirs.pop();
    assert!(
        BodyModel::from_parts(p, Path::new("x"))
            .unwrap_err()
            .to_string()
            .contains("shapedirs")
    );
}

#[test]
fn our_file_round_trips_and_rejects_damage() {
    let m = model(true);
    let bytes = ikolfile::write(&m, &Default::default()).unwrap();
    let back = ikolfile::read(&bytes, Path::new("m.safetensors")).unwrap();
    assert_eq!(back.v_template, m.v_template);
    assert_eq!(back.shapedirs, m.shapedirs);
    assert_eq!(back.posedirs, m.posedirs);
    assert_eq!(back.faces, m.faces);
    assert_eq!(back.leaf_vertices, m.leaf_vertices);
    assert_eq!(back.joint_names, m.joint_names);
    let pose = random_pose(2, 0.5);
    // Sparse values are stored as f32, so the posed mesh agrees to single precision.
    let (a, b) = (
        back.forward(&[0.2; 10], &pose).unwrap(),
        m.forward(&[0.2; 10], &pose).unwrap(),
    );
    for (va, vb) in a.vertices.iter().zip(&b.vertices) {
        assert!(
            (0..3).all(|c| (va[c] - vb[c]).abs() < 1e-6),
            "{va:?} vs {vb:?}"
        );
    }

    // Truncation anywhere is an error naming the file, never a panic.
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = ikolfile::read(&bytes[..cut], Path::new("cut.safetensors")).unwrap_err();
        assert!(e.to_string().starts_with("cut.safetensors:"), "{e}");
    }
    // A file without our metadata is refused with the reason.
    let e = ikolfile::read(
        &safetensors::serialize(
            Vec::<(String, safetensors::tensor::TensorView<'_>)>::new(),
            None,
        )
        .unwrap(),
        Path::new("e.safetensors"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("format"), "{e}");
}

#[test]
fn leaves_are_shaped_template_vertices() {
    let m = model(false);
    let beta = [1.0, -0.5, 0.25];
    let j29 = m.rest_joints29(&beta).unwrap();
    let shaped = m.shaped_vertices(&beta).unwrap();
    assert_eq!(&j29[..24], &m.rest_joints(&beta).unwrap()[..]);
    for (k, &v) in m.leaf_vertices.unwrap().iter().enumerate() {
        let expect = Vector3::new(
            f64::from(shaped[3 * v]),
            f64::from(shaped[3 * v + 1]),
            f64::from(shaped[3 * v + 2]),
        );
        assert!((j29[24 + k] - expect).norm() < 1e-6);
    }
}

#[test]
fn embedded_models_are_human_sized() {
    for m in [
        BodyModel::embedded_default().unwrap(),
        BodyModel::embedded_small().unwrap(),
    ] {
        let height = |beta: &[f64]| {
            let v = m.shaped_vertices(beta).unwrap();
            let ys: Vec<f32> = v.chunks_exact(3).map(|p| p[1]).collect();
            f64::from(
                ys.iter().cloned().fold(f32::MIN, f32::max)
                    - ys.iter().cloned().fold(f32::MAX, f32::min),
            )
        };
        // An adult: 1.5-1.9 m at the mean; the first component spans short to tall adults.
        let h0 = height(&[]);
        assert!((1.5..1.9).contains(&h0), "{}: mean height {h0}", m.name);
        assert!(
            height(&[-3.0]) > 1.3 && height(&[-3.0]) < 1.55,
            "{}",
            m.name
        );
        assert!(height(&[3.0]) > 1.85 && height(&[3.0]) < 2.1, "{}", m.name);
        // T-pose in SMPL axes: arms along +-x at shoulder height, left on +x, head up, feet down.
        let j = m.rest_joints(&[]).unwrap();
        for (s, e, w) in [(16, 18, 20), (17, 19, 21)] {
            let (a, b) = ((j[e] - j[s]).normalize(), (j[w] - j[e]).normalize());
            assert!(
                a.x.abs() > 0.98 && b.x.abs() > 0.98,
                "{}: arm not horizontal: {a:?} {b:?}",
                m.name
            );
        }
        assert!(j[18].x > 0.3 && j[19].x < -0.3, "left elbow on +x");
        assert!(j[15].y > j[12].y && j[12].y > j[0].y && j[7].y < j[4].y && j[4].y < j[1].y);
        assert!(j[10].z > j[7].z, "feet point forward (+z)");
        assert_eq!(
            m.faces.len(),
            2 * m.num_vertices() - 4,
            "closed genus-0 surface (Euler)"
        );
    }
}
