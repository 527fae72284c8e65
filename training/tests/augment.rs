//! Augmentation on real frames (the 3DPW fixture): each transform against its closed form on the
//! unaugmented sample of the same person-frame.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use ikol_backbone::preprocess::{PIXEL_MEAN, PIXEL_STD};
use ikol_body::BodyModel;
use ikol_train::augment::Augment;
use ikol_train::data::{Dataset, Sample};
use ikol_train::pw3d::Pw3dDataset;
use ikol_types::joints::{LEAF_FLIP_PAIRS, SMPL24_FLIP_PAIRS};
use rand::SeedableRng;
use rand::rngs::StdRng;

const S: usize = 64;

fn dataset() -> Pw3dDataset {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/3dpw");
    Pw3dDataset::open(
        &root,
        "test",
        "all",
        BodyModel::embedded_default().unwrap(),
        S,
        10,
    )
    .unwrap()
}

fn only(f: impl FnOnce(&mut Augment)) -> Augment {
    let mut a = Augment {
        enabled: true,
        scale: 0.0,
        rotation_deg: 0.0,
        rotation_prob: 0.0,
        flip_prob: 0.0,
        colour: 0.0,
        occlusion_area: 0.0,
    };
    f(&mut a);
    a
}

fn pair_of(j: usize) -> usize {
    SMPL24_FLIP_PAIRS
        .iter()
        .find_map(|&(a, b)| (a == j).then_some(b).or((b == j).then_some(a)))
        .unwrap_or(j)
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn disabled_or_identity_changes_nothing() {
    let ds = dataset();
    let plain = ds.get(3).unwrap();
    let off = Augment {
        enabled: false,
        ..Augment::default()
    };
    assert_eq!(ds.get_augmented(3, &off, 7).unwrap(), plain);
    assert_eq!(ds.get_augmented(3, &only(|_| {}), 7).unwrap(), plain);
}

#[test]
fn flip_mirrors_image_and_targets() {
    let ds = dataset();
    let o = ds.get(4).unwrap();
    let f = ds
        .get_augmented(4, &only(|a| a.flip_prob = 1.0), 1)
        .unwrap();
    // The crop is the mirror image about the crop centre S/2: pixel x <-> S - x.
    let mut diff = 0.0;
    let mut n = 0;
    for c in 0..3 {
        for y in 0..S {
            for x in 1..S {
                diff +=
                    (f.image[c * S * S + y * S + x] - o.image[c * S * S + y * S + (S - x)]).abs();
                n += 1;
            }
        }
    }
    assert!(
        diff / (n as f32) < 1e-3,
        "mean difference {}",
        diff / n as f32
    );
    for j in 0..24 {
        let p = pair_of(j);
        // u -> -u, v and d kept, labels swapped; camera joints x -> -x.
        assert!(close(f.uvd[j][0], -o.uvd[p][0], 1e-5), "u {j}");
        assert!(close(f.uvd[j][1], o.uvd[p][1], 1e-5) && close(f.uvd[j][2], o.uvd[p][2], 1e-6));
        assert_eq!(
            f.joints[j],
            [-o.joints[p][0], o.joints[p][1], o.joints[p][2]]
        );
        // M R M with M = diag(-1, 1, 1) flips the signs of entries (0,1), (0,2), (1,0), (2,0).
        let r = o.rotations[p];
        let want = [r[0], -r[1], -r[2], -r[3], r[4], r[5], -r[6], r[7], r[8]];
        for (a, b) in f.rotations[j].iter().zip(want) {
            assert!(close(*a, b, 1e-6));
        }
        if j > 0 {
            let t = o.twist[p - 1];
            assert_eq!(f.twist[j - 1], [t[0], -t[1]]);
        }
    }
    for l in 0..5 {
        let p = LEAF_FLIP_PAIRS
            .iter()
            .find_map(|&(a, b)| (a == l).then_some(b).or((b == l).then_some(a)))
            .unwrap_or(l);
        let q = o.leaf[p];
        assert_eq!(f.leaf[l], [q[0], q[1], -q[2], -q[3]]);
    }
    assert_eq!(f.root_depth, o.root_depth);
}

#[test]
fn rotation_and_scale_move_uv_about_the_crop_centre() {
    let ds = dataset();
    let o = ds.get(6).unwrap();
    for (aug, seed) in [
        (
            only(|a| {
                a.rotation_deg = 20.0;
                a.rotation_prob = 1.0;
            }),
            11,
        ),
        (only(|a| a.scale = 0.3), 12),
        (
            only(|a| {
                a.scale = 0.3;
                a.rotation_deg = 30.0;
                a.rotation_prob = 1.0;
            }),
            13,
        ),
    ] {
        let d = aug.draw(&mut StdRng::seed_from_u64(seed), S);
        let s = ds.get_augmented(6, &aug, seed).unwrap();
        // Crop::affine: uv' = R(-rot) uv / scale; depth and camera-frame targets unchanged.
        let (sn, cs) = d.rotation_deg.to_radians().sin_cos();
        for j in 0..24 {
            let (u, v) = (f64::from(o.uvd[j][0]), f64::from(o.uvd[j][1]));
            let want = [(cs * u + sn * v) / d.scale, (-sn * u + cs * v) / d.scale];
            assert!(
                (f64::from(s.uvd[j][0]) - want[0]).abs() < 1e-5,
                "{d:?} joint {j}"
            );
            assert!(
                (f64::from(s.uvd[j][1]) - want[1]).abs() < 1e-5,
                "{d:?} joint {j}"
            );
            assert_eq!(s.uvd[j][2], o.uvd[j][2]);
        }
        assert_eq!(
            (&s.joints, &s.rotations, &s.twist),
            (&o.joints, &o.rotations, &o.twist)
        );
        assert!(d.scale != 1.0 || d.rotation_deg != 0.0);
    }
}

/// Back to 8-bit pixel values from the normalised image.
fn pixel(s: &Sample, c: usize, i: usize) -> f32 {
    (s.image[c * S * S + i] * PIXEL_STD[c] + PIXEL_MEAN[c]) * 255.0
}

#[test]
fn colour_gains_and_occlusion() {
    let ds = dataset();
    let o = ds.get(2).unwrap();
    let aug = only(|a| a.colour = 0.2);
    let d = aug.draw(&mut StdRng::seed_from_u64(5), S);
    let s = ds.get_augmented(2, &aug, 5).unwrap();
    for c in 0..3 {
        assert!((0.8..1.2).contains(&d.gains[c]));
        for i in 0..S * S {
            let want = (pixel(&o, c, i).round() * d.gains[c])
                .round()
                .clamp(0.0, 255.0);
            assert!(
                (pixel(&s, c, i) - want).abs() < 0.01,
                "channel {c} pixel {i}"
            );
        }
    }
    assert_eq!(s.uvd, o.uvd);

    let aug = only(|a| a.occlusion_area = 0.3);
    let d = aug.draw(&mut StdRng::seed_from_u64(9), S);
    let ([x, y, w, h], _) = d.occluder.unwrap();
    // Inside the box region (the middle 1 / 1.25 of the crop), at most 30 % of it.
    let side = S as f64 / 1.25;
    assert!((w * h) as f64 <= 0.3 * side * side + 2.0 * side);
    let s = ds.get_augmented(2, &aug, 9).unwrap();
    let (mut inside, mut changed_inside) = (0, 0);
    for yy in 0..S {
        for xx in 0..S {
            let i = yy * S + xx;
            let differs = (0..3).any(|c| (pixel(&s, c, i) - pixel(&o, c, i)).abs() > 0.01);
            if (x..x + w).contains(&xx) && (y..y + h).contains(&yy) {
                inside += 1;
                changed_inside += usize::from(differs);
            } else {
                assert!(!differs, "pixel ({xx}, {yy}) outside the occluder changed");
            }
        }
    }
    // Uniform noise rarely equals the pixel it covers.
    assert!(
        changed_inside * 10 >= inside * 9,
        "{changed_inside} of {inside}"
    );
}

#[test]
fn bad_settings_are_named() {
    for (a, key) in [
        (only(|a| a.scale = -0.1), "augment.scale"),
        (only(|a| a.scale = 1.0), "augment.scale"),
        (only(|a| a.rotation_deg = f64::NAN), "augment.rotation_deg"),
        (only(|a| a.flip_prob = 1.5), "augment.flip_prob"),
    ] {
        let e = a.validate().unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
    assert!(Augment::default().validate().is_ok());
}

/// Independent of the mirroring rules: the flipped rotations, posed by forward kinematics on the
/// body's rest skeleton, land on the flipped joints; and every augmented sample's uvd, mapped
/// back through its own crop and camera, gives its camera-frame joints.
#[test]
fn augmented_targets_stay_consistent() {
    use ikol_backbone::DEPTH_FACTOR_M;
    use ikol_backbone::camera::{CropCamera, uvd_to_cam};
    use ikol_body::nalgebra::{Matrix3, Vector3};
    use ikol_types::{Affine2, Intrinsics};

    let ds = dataset();
    let body = BodyModel::embedded_default().unwrap();
    for (i, aug, seed) in [
        (4, only(|a| a.flip_prob = 1.0), 1),
        (7, only(|a| a.flip_prob = 1.0), 2),
        (5, Augment::default(), 3),
        (9, Augment::default(), 4),
    ] {
        let s = ds.get_augmented(i, &aug, seed).unwrap();
        let beta: Vec<f64> = s.beta.iter().map(|&b| f64::from(b)).collect();
        let rest = body.rest_joints(&beta).unwrap();
        let local: Vec<Matrix3<f64>> = s
            .rotations
            .iter()
            .map(|r| Matrix3::from_row_slice(&r.map(f64::from)))
            .collect();
        let (_, posed) = ikol_body::forward_kinematics(&local, &rest, &body.parents);
        for j in 0..24 {
            let want = Vector3::from(s.joints[j].map(f64::from));
            let got = posed[j] - posed[0];
            // The rest skeleton is symmetric to ~0.05 mm.
            assert!(
                (got - want).norm() < 5e-4,
                "sample {i} joint {j}: {got} vs {want}"
            );
        }
        // k_inv -> intrinsics (upper triangular, no skew).
        let ki = s.k_inv.map(f64::from);
        let (fx, fy) = (1.0 / ki[0], 1.0 / ki[4]);
        let k = Intrinsics {
            fx,
            fy,
            cx: -ki[2] * fx,
            cy: -ki[5] * fy,
        };
        let m = s.crop_to_frame.map(f64::from);
        let cam = CropCamera {
            crop_to_frame: Affine2 {
                m: [[m[0], m[1], m[2]], [m[3], m[4], m[5]]],
            },
            intrinsics: k,
            root_depth: f64::from(s.root_depth),
            depth_factor: DEPTH_FACTOR_M,
        };
        let back = uvd_to_cam(&s.uvd, S as f64, &cam);
        for j in 0..24 {
            for c in 0..3 {
                let d = back.xyz_m[j][c] - f64::from(s.joints[j][c]);
                assert!(d.abs() < 1e-4, "sample {i} joint {j}: {d}");
            }
        }
    }
}
