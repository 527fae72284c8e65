//! The metrics and the 3DPW protocol against closed forms.
#![allow(clippy::unwrap_used)]

use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_body::{BodyModel, Posed};
use ikol_eval::metrics::{mean_distance, mpjpe, pa_mpjpe};
use ikol_eval::{Report, Scores, score};
use ikol_types::joints::H36M_EVAL_14;
use ikol_types::rotation::axis_angle_to_matrix;

fn v(x: f64, y: f64, z: f64) -> Vector3<f64> {
    Vector3::new(x, y, z)
}

#[test]
fn rigid_rotation_about_the_root() {
    // Root at the origin, every other point at radius r: a rotation by a about the z axis moves
    // each by the chord 2 r sin(a / 2); Procrustes undoes it.
    let r = 0.4;
    let a: f64 = 0.7;
    let gt: Vec<_> = std::iter::once(v(0.0, 0.0, 0.0))
        .chain((0..8).map(|k| {
            let t = k as f64 * 0.6;
            v(r * t.cos(), r * t.sin(), 0.0)
        }))
        .collect();
    let rot = axis_angle_to_matrix(&v(0.0, 0.0, a));
    let pred: Vec<_> = gt.iter().map(|p| rot * p + v(1.0, -2.0, 3.0)).collect();
    let chord = 2.0 * r * (a / 2.0).sin();
    assert!((mpjpe(&pred, &gt) - chord * 8.0 / 9.0).abs() < 1e-12);
    assert!(pa_mpjpe(&pred, &gt) < 1e-12);
    assert_eq!(mpjpe(&gt, &gt), 0.0);
    assert!(pa_mpjpe(&gt, &gt) < 1e-15);
}

#[test]
fn scale_errors() {
    // A uniform scale about the root: MPJPE |s - 1| mean |g - g0|, PA-MPJPE 0.
    let gt = [
        v(0.0, 0.0, 0.0),
        v(1.0, 0.0, 0.0),
        v(0.0, 2.0, 0.0),
        v(0.0, 0.0, 3.0),
    ];
    let pred: Vec<_> = gt.iter().map(|g| 1.1 * g).collect();
    assert!((mpjpe(&pred, &gt) - 0.1 * (0.0 + 1.0 + 2.0 + 3.0) / 4.0).abs() < 1e-12);
    assert!(pa_mpjpe(&pred, &gt) < 1e-12);
    // x stretched twice: by symmetry R = I, scale = sum p.g / sum |p|^2 = 6 / 10, so the aligned
    // points are (+-1.2, 0, 0), (0, +-0.6, 0): errors 0.2, 0.2, 0.4, 0.4, mean 0.3.
    let gt = [
        v(1.0, 0.0, 0.0),
        v(-1.0, 0.0, 0.0),
        v(0.0, 1.0, 0.0),
        v(0.0, -1.0, 0.0),
    ];
    let pred = [
        v(2.0, 0.0, 0.0),
        v(-2.0, 0.0, 0.0),
        v(0.0, 1.0, 0.0),
        v(0.0, -1.0, 0.0),
    ];
    assert!((pa_mpjpe(&pred, &gt) - 0.3).abs() < 1e-12);
    assert!((mean_distance(&pred, &gt) - 0.5).abs() < 1e-12);
    // Reflections are not allowed: a mirrored set keeps an error.
    let mirrored: Vec<_> = [
        v(1.0, 0.2, 0.1),
        v(-0.3, 1.0, 0.4),
        v(0.2, -0.5, 1.0),
        v(0.0, 0.0, 0.0),
    ]
    .to_vec();
    let m: Vec<_> = mirrored.iter().map(|p| v(-p.x, p.y, p.z)).collect();
    assert!(pa_mpjpe(&m, &mirrored) > 0.05);
}

fn posed(model: &BodyModel, seed: f64) -> Posed {
    let rots: Vec<Matrix3<f64>> = (0..24)
        .map(|j| {
            let t = seed + j as f64;
            axis_angle_to_matrix(&v(
                0.3 * t.sin(),
                0.2 * (1.3 * t).cos(),
                0.25 * (0.7 * t).sin(),
            ))
        })
        .collect();
    let beta: Vec<f64> = (0..model.num_betas)
        .map(|k| 0.3 * (k as f64 - 4.0) / 4.0)
        .collect();
    model.forward(&beta, &rots).unwrap()
}

fn moved(p: &Posed, r: &Matrix3<f64>, t: Vector3<f64>) -> Posed {
    Posed {
        vertices: p
            .vertices
            .iter()
            .map(|x| {
                let y = r * Vector3::from(x.map(f64::from)) + t;
                [y.x as f32, y.y as f32, y.z as f32]
            })
            .collect(),
        joints: p.joints.iter().map(|j| r * j + t).collect(),
        global_rotations: p.global_rotations.clone(),
    }
}

#[test]
fn protocol_on_meshes() {
    let model = BodyModel::embedded_default().unwrap();
    let gt = posed(&model, 0.0);
    let same = score(&model, &gt, &gt).unwrap();
    assert_eq!((same.mpjpe, same.pve, same.mpjpe_24), (0.0, 0.0, 0.0));
    assert!(
        same.pa_mpjpe < 1e-15 && same.pa_mpjpe_24 < 1e-15,
        "{same:?}"
    );

    // A translation changes nothing (everything is root- or pelvis-centred).
    let shifted = score(
        &model,
        &moved(&gt, &Matrix3::identity(), v(0.3, -0.2, 2.0)),
        &gt,
    )
    .unwrap();
    for x in [
        shifted.mpjpe,
        shifted.pa_mpjpe,
        shifted.pve,
        shifted.mpjpe_24,
    ] {
        assert!(x < 1e-6, "{shifted:?}");
    }

    // A global rotation: the aligned errors vanish, the others are |(R - I) d| averaged.
    let r = axis_angle_to_matrix(&v(0.1, 0.5, -0.2));
    let s = score(&model, &moved(&gt, &r, v(0.0, 0.0, 0.0)), &gt).unwrap();
    let h = model.regress_h36m(&gt.vertices).unwrap();
    let want14 = H36M_EVAL_14
        .iter()
        .map(|&j| ((r - Matrix3::identity()) * (h[j] - h[0])).norm())
        .sum::<f64>()
        / 14.0;
    let want24 = gt
        .joints
        .iter()
        .map(|j| ((r - Matrix3::identity()) * (j - gt.joints[0])).norm())
        .sum::<f64>()
        / 24.0;
    let want_pve = gt
        .vertices
        .iter()
        .map(|x| ((r - Matrix3::identity()) * (Vector3::from(x.map(f64::from)) - h[0])).norm())
        .sum::<f64>()
        / gt.vertices.len() as f64;
    assert!((s.mpjpe - want14).abs() < 1e-6, "{} vs {want14}", s.mpjpe);
    assert!(
        (s.mpjpe_24 - want24).abs() < 1e-9,
        "{} vs {want24}",
        s.mpjpe_24
    );
    assert!((s.pve - want_pve).abs() < 1e-6, "{} vs {want_pve}", s.pve);
    assert!(s.mpjpe > 0.05);
    assert!(s.pa_mpjpe < 1e-6 && s.pa_mpjpe_24 < 1e-9, "{s:?}");

    // A different pose scores above zero everywhere.
    let other = score(&model, &posed(&model, 1.0), &gt).unwrap();
    assert!(
        other.mpjpe > 0.01 && other.pa_mpjpe > 0.005 && other.pve > 0.01,
        "{other:?}"
    );
}

#[test]
fn report_means_tables_and_files() {
    let s = |x: f64| Scores {
        mpjpe: x,
        pa_mpjpe: x / 2.0,
        pve: 2.0 * x,
        mpjpe_24: x,
        pa_mpjpe_24: x / 4.0,
    };
    let mut r = Report::default();
    r.add("a_seq", 0, 1, s(0.010));
    r.add("a_seq", 1, 1, s(0.020));
    r.add("b_seq", 0, 2, s(0.060));
    r.add_missing("b_seq");
    let sum = r.summary("default", false);
    // Every person-frame weighs the same: (10 + 20 + 60) / 3 mm.
    assert!((sum.all.mpjpe_mm - 30.0).abs() < 1e-9);
    assert!((sum.all.pve_mm - 60.0).abs() < 1e-9);
    assert!((sum.sequences["a_seq"].pa_mpjpe_mm - 7.5).abs() < 1e-9);
    assert_eq!((sum.all.samples, sum.all.missing), (3, 1));
    assert!(sum.note.contains("NOT comparable"));
    let table = sum.table();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("all") && l.contains("30.0")),
        "{table}"
    );
    assert!(table.contains("1 ground-truth people had no prediction"));

    let dir = std::env::temp_dir().join(format!("ikol-report-{}", std::process::id()));
    r.write(&dir, &sum).unwrap();
    let csv = std::fs::read_to_string(dir.join("a_seq.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(
        csv.lines()
            .nth(2)
            .unwrap()
            .starts_with("1,1,20.0000,10.0000,40.0000")
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["all"]["samples"], 3);
    assert_eq!(json["comparable"], false);
    // The names readers use for the metrics are the file's: every key but the counts.
    let keys: Vec<&str> = json["all"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| !["samples", "missing"].contains(k))
        .collect();
    let mut want = ikol_eval::protocol::SUMMARY_METRICS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want);
    std::fs::remove_dir_all(&dir).ok();

    let m = BodyModel::embedded_default().unwrap();
    let mut no_reg = (*m).clone();
    no_reg.j_regressor_h36m = None;
    let p = posed(&m, 0.0);
    let e = score(&no_reg, &p, &p).unwrap_err().to_string();
    assert!(e.contains("no H36M-17 joint regressor"), "{e}");
}

#[test]
fn h36m_regressor_from_npy() {
    use ikol_body::npy::{NdArray, write_npy_file};
    let m = BodyModel::embedded_default().unwrap();
    let reg = m.j_regressor_h36m.as_ref().unwrap();
    let nv = m.num_vertices();
    let dir = std::env::temp_dir().join(format!("ikol-h36m-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("J_regressor_h36m.npy");
    write_npy_file(
        &good,
        &NdArray::from_f64(&[17, nv], &reg.to_dense()).unwrap(),
    )
    .unwrap();
    let mut own = (*m).clone();
    own.j_regressor_h36m = None;
    own.set_h36m_regressor(&good).unwrap();
    let p = posed(&m, 0.5);
    let (a, b) = (
        m.regress_h36m(&p.vertices).unwrap(),
        own.regress_h36m(&p.vertices).unwrap(),
    );
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).norm() < 1e-12);
    }
    let bad = dir.join("bad.npy");
    write_npy_file(&bad, &NdArray::from_f64(&[17, 10], &[0.0; 170]).unwrap()).unwrap();
    let e = own.set_h36m_regressor(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.npy") && e.contains("expected [17,"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
