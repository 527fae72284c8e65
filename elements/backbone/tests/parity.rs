//! Parity with the upstream architecture re-written in PyTorch.
//!
//! Reference values come from `tools/gen_backbone_fixture.py` (torch 2.15.0 CPU, opencv-python
//! 5.0.0.93), which builds IKOL24 (ResNet-34 layout, width 2) and HybrIK-29 (ResNet-50 layout,
//! width 1) with random weights and random BatchNorm running statistics, saves them with the
//! upstream key names (`preact.layer1.0.conv1.weight`, `deconv_layers.1.running_var`, ...; the
//! second one wrapped as `{"epoch": 3, "model": {"module." + key: ...}}`) and stores their eval
//! outputs on the input
//!
//! ```python
//! x[n, c, h, w] = ((7n + 13c + 31h + 17w) % 97) / 48.5 - 1      # n < 2, 64 x 64
//! uvd, phi, beta, leaf = net.heads(x)                            # upstream forward up to SMPL
//! f_uvd, f_phi, f_beta, f_leaf = net.flip_test(x)                # flip test as upstream
//! xyz = net.uvd_to_cam(uvd, trans_inv, k_inv, root, 2.0); xyz -= xyz[:, :1]   # units of 2 m
//! crop = cv2.warpAffine(frame, get_affine_transform(*box_to_center_scale(*box), 0, (32, 32)),
//!                       (32, 32), flags=cv2.INTER_LINEAR)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use ikol_backbone::camera::{CropCamera, uvd_to_cam};
use ikol_backbone::preprocess::{RgbFrame, warp_affine_rgb};
use ikol_backbone::{Backbone, Variant};
use ikol_types::{Affine2, BBox, BOX_SCALE_MULT, Crop, Intrinsics};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn fixture() -> Result<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        data("backbone_fixture.safetensors"),
        &Device::Cpu,
    )?)
}

fn formula_input(n: usize, size: usize) -> Result<Tensor> {
    let mut v = Vec::with_capacity(n * 3 * size * size);
    for i in 0..n {
        for c in 0..3 {
            for h in 0..size {
                for w in 0..size {
                    let k = (7 * i + 13 * c + 31 * h + 17 * w) % 97;
                    v.push(k as f32 / 48.5 - 1.0);
                }
            }
        }
    }
    Ok(Tensor::from_vec(v, (n, 3, size, size), &Device::Cpu)?)
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?.abs()?;
    Ok(d.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn assert_close(name: &str, ours: &Tensor, theirs: &Tensor, tol: f32) -> Result<()> {
    let d = max_diff(ours, theirs)?;
    eprintln!("{name}: max |ours - torch| = {d:e}");
    assert!(d <= tol, "{name}: max |ours - torch| = {d:e} > {tol:e}");
    Ok(())
}

#[test]
fn ikol24_matches_pytorch() -> Result<()> {
    let f = fixture()?;
    let net = Backbone::load_with_input_size(
        data("ikol24_r34w2.pth"),
        Variant::Ikol24,
        64,
        &Device::Cpu,
    )?;
    let cfg = net.config();
    assert_eq!(cfg.resnet.depth_number(), Some(34));
    assert_eq!(
        (
            cfg.resnet.width,
            cfg.deconv_filters,
            cfg.depth_dim,
            cfg.fc_dim
        ),
        (2, [8; 3], 8, 16)
    );
    let x = formula_input(2, 64)?;
    let o = net.infer(&x)?;
    assert_close("uvd", &o.uvd, &f["ikol24.uvd"], 1e-4)?;
    assert_close("phi", &o.phi, &f["ikol24.phi"], 1e-4)?;
    assert_close("beta", &o.beta, &f["ikol24.beta"], 1e-4)?;
    assert_close(
        "leaf",
        o.leaf.as_ref().expect("leaf"),
        &f["ikol24.leaf"],
        1e-4,
    )?;

    let flipped = net.clone().with_flip_test(true).infer(&x)?;
    assert_close("flip uvd", &flipped.uvd, &f["ikol24.flip.uvd"], 1e-4)?;
    assert_close("flip phi", &flipped.phi, &f["ikol24.flip.phi"], 1e-4)?;
    assert_close("flip beta", &flipped.beta, &f["ikol24.flip.beta"], 1e-4)?;
    assert_close(
        "flip leaf",
        flipped.leaf.as_ref().expect("leaf"),
        &f["ikol24.flip.leaf"],
        1e-4,
    )?;
    // The flip changes something (the test would be vacuous otherwise).
    assert!(max_diff(&flipped.uvd, &o.uvd)? > 1e-3);

    // uvd -> camera: upstream's xyz is in units of the 2 m depth factor; ours in metres.
    let k = f["ikol24.cam.k"].to_vec1::<f32>()?;
    let k = Intrinsics {
        fx: k[0].into(),
        fy: k[1].into(),
        cx: k[2].into(),
        cy: k[3].into(),
    };
    let trans = f["ikol24.cam.trans_inv"]
        .to_dtype(DType::F64)?
        .to_vec3::<f64>()?;
    let root = f["ikol24.cam.root"]
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?;
    let want = f["ikol24.cam.xyz_2m"]
        .to_dtype(DType::F64)?
        .to_vec3::<f64>()?;
    let uvd = f["ikol24.uvd"].to_vec3::<f32>()?;
    for n in 0..2 {
        let cam = CropCamera {
            crop_to_frame: Affine2 {
                m: [
                    [trans[n][0][0], trans[n][0][1], trans[n][0][2]],
                    [trans[n][1][0], trans[n][1][1], trans[n][1][2]],
                ],
            },
            intrinsics: k,
            root_depth: root[n][2],
            depth_factor: 2.0,
        };
        let uvd_n: Vec<[f32; 3]> = uvd[n].iter().map(|r| [r[0], r[1], r[2]]).collect();
        let got = uvd_to_cam(&uvd_n, 64.0, &cam);
        for (j, p) in got.xyz_m.iter().enumerate() {
            for c in 0..3 {
                let w = 2.0 * want[n][j][c];
                assert!(
                    (p[c] - w).abs() < 1e-5,
                    "xyz[{n}][{j}][{c}] = {} vs torch {w}",
                    p[c]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn hybrik29_bottleneck_wrapped_checkpoint_matches_pytorch() -> Result<()> {
    let f = fixture()?;
    let net = Backbone::load_with_input_size(
        data("hybrik29_r50w1.pth"),
        Variant::Hybrik29,
        64,
        &Device::Cpu,
    )?;
    assert_eq!(net.config().resnet.depth_number(), Some(50));
    assert_eq!(net.config().depth_dim, 4);
    let o = net.infer(&formula_input(2, 64)?)?;
    assert!(o.leaf.is_none());
    assert_eq!(o.uvd.dims(), &[2, 29, 3]);
    assert_close("uvd", &o.uvd, &f["hybrik29.uvd"], 1e-4)?;
    assert_close("phi", &o.phi, &f["hybrik29.phi"], 1e-4)?;
    assert_close("beta", &o.beta, &f["hybrik29.beta"], 1e-4)?;
    Ok(())
}

#[test]
fn safetensors_round_trip_keeps_outputs() -> Result<()> {
    let net = Backbone::load_with_input_size(
        data("ikol24_r34w2.pth"),
        Variant::Ikol24,
        64,
        &Device::Cpu,
    )?;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ikol24_r34w2_roundtrip.safetensors");
    net.save(&path)?;
    // The config (including the 64 px input) travels in the metadata.
    let back = Backbone::load(&path, Variant::Ikol24, &Device::Cpu)?;
    assert_eq!(back.config(), net.config());
    let x = formula_input(1, 64)?;
    let (a, b) = (net.infer(&x)?, back.infer(&x)?);
    assert_eq!(max_diff(&a.uvd, &b.uvd)?, 0.0);
    assert_eq!(max_diff(&a.beta, &b.beta)?, 0.0);
    // Asking for the other variant is a clear error.
    let e = Backbone::load(&path, Variant::Hybrik29, &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("ikol24"), "{e}");
    Ok(())
}

#[test]
fn crop_affine_and_warp_match_hybrik_and_opencv() -> Result<()> {
    let f = fixture()?;
    let b = f["warp.box"].to_vec1::<f64>()?;
    let crop = Crop::from_box(
        &BBox {
            x: b[0],
            y: b[1],
            w: b[2],
            h: b[3],
        },
        BOX_SCALE_MULT,
        32,
    );
    // HybrIK builds the affine from float32 points: agreement to float32 precision.
    let trans = f["warp.trans"].to_vec2::<f64>()?;
    let ours = crop.affine();
    for r in 0..2 {
        for c in 0..3 {
            assert!(
                (ours.m[r][c] - trans[r][c]).abs() < 1e-5,
                "affine[{r}][{c}]"
            );
        }
    }
    // The warp itself, with HybrIK's exact matrix, equals cv2.warpAffine bit for bit.
    let frame = f["warp.frame"].flatten_all()?.to_vec1::<u8>()?;
    let rgb = RgbFrame::new(&frame, 40, 30, 120)?;
    let a = Affine2 {
        m: [
            [trans[0][0], trans[0][1], trans[0][2]],
            [trans[1][0], trans[1][1], trans[1][2]],
        ],
    };
    let got = warp_affine_rgb(&rgb, &a, 32);
    let want = f["warp.crop"].flatten_all()?.to_vec1::<u8>()?;
    let diffs = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(
        diffs,
        0,
        "{diffs} of {} crop bytes differ from cv2",
        want.len()
    );
    Ok(())
}

#[test]
fn estimate_people_in_a_frame() -> Result<()> {
    use ikol_backbone::PersonBox;
    let net = Backbone::load_with_input_size(
        data("ikol24_r34w2.pth"),
        Variant::Ikol24,
        64,
        &Device::Cpu,
    )?
    .with_flip_test(true);
    let (w, h) = (160u32, 120u32);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let frame = RgbFrame::new(&pixels, w, h, 3 * w as usize)?;
    let k = Intrinsics::from_hfov(w, h, 60.0);
    let people = [
        PersonBox {
            bbox: BBox {
                x: 20.0,
                y: 10.0,
                w: 40.0,
                h: 90.0,
            },
            root_depth: Some(5.0),
        },
        PersonBox {
            bbox: BBox {
                x: 90.0,
                y: 30.0,
                w: 50.0,
                h: 60.0,
            },
            root_depth: None,
        },
    ];
    let est = net.estimate(&frame, &people, &k)?;
    assert_eq!(est.len(), 2);
    for (p, e) in people.iter().zip(&est) {
        assert_eq!(
            (e.uvd.len(), e.joints_px.len(), e.xyz_m.len()),
            (24, 24, 24)
        );
        assert_eq!((e.phi.len(), e.beta.len()), (23, 10));
        assert_eq!(e.leaf.as_ref().map(Vec::len), Some(5));
        assert_eq!(e.xyz_m[0], [0.0; 3]);
        // 2D joints lie inside the (enlarged, square) crop around the box.
        let c = p.bbox.center();
        let half = 0.5 * e.crop.side;
        for q in &e.joints_px {
            assert!(
                (q[0] - c[0]).abs() <= half && (q[1] - c[1]).abs() <= half,
                "{q:?}"
            );
        }
        // The pelvis sits at the given (or heuristic) depth plus its predicted offset.
        let z0 = p.root_depth.unwrap_or(k.fx * 2.0 / e.crop.side);
        assert!((e.root_m[2] - z0 - 2.0 * f64::from(e.uvd[0][2])).abs() < 1e-9);
    }
    // Same people one by one through the lower-level API give the same numbers.
    let one = net.estimate(&frame, &people[..1], &k)?;
    assert!((one[0].xyz_m[5][1] - est[0].xyz_m[5][1]).abs() < 1e-5);
    assert!(net.estimate(&frame, &[], &k)?.is_empty());
    Ok(())
}
