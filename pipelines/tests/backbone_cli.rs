//! `ikol backbone` end to end: a generated image and the tiny checkpoint in, JSON out, and the
//! JSON consistent with itself (2D joints = projection of root + 3D joints).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use gst::prelude::*;
use serde_json::Value;

fn ikol(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ikol"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ikol-backbone-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn checkpoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../elements/backbone/tests/data/ikol24_r34w2.pth")
}

/// A 160x120 RGB test card: gradients and a bright upright "person" block.
fn card() -> (u32, u32, Vec<u8>) {
    let (w, h) = (160u32, 120u32);
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let person = (60..100).contains(&x) && (15..110).contains(&y);
            px.extend_from_slice(&if person {
                [230, 200, 180]
            } else {
                [(x * 255 / w) as u8, (y * 255 / h) as u8, 90]
            });
        }
    }
    (w, h, px)
}

fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut e = png::Encoder::new(f, w, h);
    e.set_color(color);
    e.set_depth(png::BitDepth::Eight);
    e.write_header().unwrap().write_image_data(data).unwrap();
}

fn run_backbone(image: &Path, extra: &[&str], out: &Path) -> Value {
    let ck = checkpoint();
    let mut args = vec![
        "backbone",
        "--checkpoint",
        s(&ck),
        "--image",
        s(image),
        "--output",
        s(out),
    ];
    args.extend_from_slice(extra);
    let (ok, msg) = ikol(&args);
    assert!(ok, "{msg}");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn rows(v: &Value, k: usize) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r: Vec<f64> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(r.len(), k);
            r
        })
        .collect()
}

#[test]
fn png_to_joints_json_is_consistent() {
    let (w, h, px) = card();
    let png = tmp("card.png");
    write_png(&png, w, h, png::ColorType::Rgb, &px);
    let out = tmp("card.json");
    let j = run_backbone(
        &png,
        &["--box", "55,10,50,105", "--box", "0,0,80,60", "--fov", "55"],
        &out,
    );
    assert_eq!(j["variant"], "ikol24");
    assert!(
        j["checkpoint"]
            .as_str()
            .unwrap()
            .ends_with("ikol24_r34w2.pth")
    );
    assert!(j["image"].as_str().unwrap().ends_with("card.png"));
    let k = &j["intrinsics"];
    let (fx, fy, cx, cy) = (
        k["fx"].as_f64().unwrap(),
        k["fy"].as_f64().unwrap(),
        k["cx"].as_f64().unwrap(),
        k["cy"].as_f64().unwrap(),
    );
    // f = (W / 2) / tan(hfov / 2), principal point at the centre.
    assert!(
        (fx - 80.0 / (27.5f64).to_radians().tan()).abs() < 1e-9,
        "{fx}"
    );
    assert_eq!((fx, cx, cy), (fy, 79.5, 59.5));

    let people = j["people"].as_array().unwrap();
    assert_eq!(people.len(), 2);
    assert_eq!(
        people[0]["bbox"],
        serde_json::json!([55.0, 10.0, 50.0, 105.0])
    );
    assert_eq!(people[1]["bbox"], serde_json::json!([0.0, 0.0, 80.0, 60.0]));
    for p in people {
        let uvd = rows(&p["joints_uvd"], 3);
        let j2 = rows(&p["joints_2d"], 2);
        let j3 = rows(&p["joints_3d"], 3);
        assert_eq!((uvd.len(), j2.len(), j3.len()), (24, 24, 24));
        assert_eq!(rows(&p["twist"], 2).len(), 23);
        assert_eq!(rows(&p["leaf"], 4).len(), 5);
        assert_eq!(p["beta"].as_array().unwrap().len(), 10);
        let root: Vec<f64> = p["root"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!(root[2] > 0.0, "root in front of the camera: {root:?}");
        assert_eq!(j3[0], [0.0, 0.0, 0.0], "joints_3d are root-relative");
        // joints_2d = K (root + joints_3d): the closed-form pinhole projection.
        for (p2, p3) in j2.iter().zip(&j3) {
            let (x, y, z) = (root[0] + p3[0], root[1] + p3[1], root[2] + p3[2]);
            assert!(z > 0.0);
            let (u, v) = (fx * x / z + cx, fy * y / z + cy);
            assert!(
                (u - p2[0]).abs() < 1e-3 && (v - p2[1]).abs() < 1e-3,
                "projection ({u}, {v}) vs joints_2d {p2:?}"
            );
        }
    }
}

#[test]
fn whole_image_by_default_and_grey_rgba_png_decode_as_rgb() {
    let (w, h, px) = card();
    // A grey card: the same values in all three channels, written as grey, RGB and RGBA.
    let grey: Vec<u8> = px.chunks_exact(3).map(|p| p[1]).collect();
    let rgb: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g]).collect();
    let rgba: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g, 255]).collect();
    let (a, b, c) = (tmp("grey.png"), tmp("rgb.png"), tmp("rgba.png"));
    write_png(&a, w, h, png::ColorType::Grayscale, &grey);
    write_png(&b, w, h, png::ColorType::Rgb, &rgb);
    write_png(&c, w, h, png::ColorType::Rgba, &rgba);
    let ja = run_backbone(&a, &["--focal-length", "200"], &tmp("grey.json"));
    let jb = run_backbone(&b, &["--focal-length", "200"], &tmp("rgb.json"));
    let jc = run_backbone(&c, &["--focal-length", "200"], &tmp("rgba.json"));
    assert_eq!(ja["people"], jb["people"]);
    assert_eq!(jc["people"], jb["people"]);
    let people = jb["people"].as_array().unwrap();
    assert_eq!(people.len(), 1);
    assert_eq!(
        people[0]["bbox"],
        serde_json::json!([0.0, 0.0, 160.0, 120.0])
    );
    assert_eq!(jb["intrinsics"]["fx"], 200.0);
}

#[test]
fn jpeg_decodes() {
    // No JPEG encoder among the crates: GStreamer's jpegenc writes one.
    gst::init().unwrap();
    let jpg = tmp("card.jpg");
    let p = gst::parse::launch(&format!(
        "videotestsrc num-buffers=1 ! video/x-raw,width=96,height=64 ! jpegenc \
         ! filesink location={}",
        s(&jpg)
    ))
    .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    p.set_state(gst::State::Null).unwrap();
    let j = run_backbone(&jpg, &["--flip-test"], &tmp("jpg.json"));
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(96), Some(64))
    );
    assert_eq!(j["flip_test"], true);
    assert_eq!(rows(&j["people"][0]["joints_2d"], 2).len(), 24);
}

#[test]
fn bad_files_are_named() {
    let (w, h, px) = card();
    let png = tmp("ok.png");
    write_png(&png, w, h, png::ColorType::Rgb, &px);
    let out = tmp("bad.json");

    // A truncated checkpoint.
    let bytes = std::fs::read(checkpoint()).unwrap();
    let cut = tmp("truncated.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, msg) = ikol(&[
        "backbone",
        "--checkpoint",
        s(&cut),
        "--image",
        s(&png),
        "--output",
        s(&out),
    ]);
    assert!(!ok && msg.contains("truncated.pth"), "{msg}");

    // Not an image; a truncated PNG; a missing file.
    let text = tmp("notes.png");
    std::fs::write(&text, "just some text").unwrap();
    let half = tmp("half.png");
    let b = std::fs::read(&png).unwrap();
    std::fs::write(&half, &b[..b.len() / 2]).unwrap();
    for img in [text, half, tmp("missing.png")] {
        let ck = checkpoint();
        let (ok, msg) = ikol(&[
            "backbone",
            "--checkpoint",
            s(&ck),
            "--image",
            s(&img),
            "--output",
            s(&out),
        ]);
        let name = img.file_name().unwrap().to_str().unwrap();
        assert!(!ok && msg.contains(name), "{msg}");
    }

    // Bad options.
    let ck = checkpoint();
    for extra in [
        ["--box", "1,2,3"],
        ["--variant", "ikol99"],
        ["--device", "tpu"],
        ["--focal-length", "-3"],
    ] {
        let mut args = vec![
            "backbone",
            "--checkpoint",
            s(&ck),
            "--image",
            s(&png),
            "--output",
            s(&out),
        ];
        args.extend_from_slice(&extra);
        let (ok, msg) = ikol(&args);
        assert!(!ok, "{extra:?}: {msg}");
    }
    // Bounded: a box of 1e30 px, 300 boxes (issue 19: 1000 boxes reached 10 GB).
    let mut args = vec!["backbone", "--checkpoint", s(&ck), "--image", s(&png)];
    args.extend_from_slice(&["--output", s(&out), "--box", "0,0,1e30,10"]);
    let (ok, msg) = ikol(&args);
    assert!(!ok && msg.contains("beyond 100000 px"), "{msg}");
    args.truncate(7);
    for _ in 0..300 {
        args.extend_from_slice(&["--box", "0,0,8,8"]);
    }
    let (ok, msg) = ikol(&args);
    assert!(
        !ok && msg.contains("300 --box flags, more than 256"),
        "{msg}"
    );
    // The IKOL-24 weights are not a HybrIK-29 network.
    let (ok, msg) = ikol(&[
        "backbone",
        "--checkpoint",
        s(&ck),
        "--variant",
        "hybrik29",
        "--image",
        s(&png),
        "--output",
        s(&out),
    ]);
    assert!(!ok && msg.contains("ikol24_r34w2.pth"), "{msg}");
}

/// `--variant hkmr|hmr`: a regressor checkpoint in, the body per box out (24 rotations, shape,
/// camera and a translation in front of the camera at the depth the weak camera implies); the
/// wrong kind and the flip test are refused by name.
#[test]
fn a_body_regressor_writes_the_body() {
    let (w, h, px) = card();
    let png = tmp("card-regressor.png");
    write_png(&png, w, h, png::ColorType::Rgb, &px);
    let dev = ikol_backbone::candle::Device::Cpu;
    for kind in [
        ikol_backbone::RegressorKind::Hkmr,
        ikol_backbone::RegressorKind::Flat,
    ] {
        let ck = tmp(&format!("{}.safetensors", kind.name()));
        let cfg = ikol_backbone::RegressorNetConfig::tiny(kind);
        ikol_backbone::DirectRegressor::initialised(&cfg, &dev)
            .unwrap()
            .save(&ck)
            .unwrap();
        let variant = match kind {
            ikol_backbone::RegressorKind::Hkmr => "hkmr",
            ikol_backbone::RegressorKind::Flat => "hmr",
        };
        let out = tmp(&format!("{variant}.json"));
        let (ok, msg) = ikol(&[
            "backbone",
            "--checkpoint",
            s(&ck),
            "--variant",
            variant,
            "--image",
            s(&png),
            "--box",
            "60,15,40,95",
            "--focal-length",
            "200",
            "--output",
            s(&out),
        ]);
        assert!(ok, "{msg}");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(v["variant"], variant);
        let p = &v["people"][0];
        assert_eq!(rows(&p["theta"], 3).len(), 24);
        assert_eq!(p["beta"].as_array().unwrap().len(), 10);
        let cam: Vec<f64> = p["cam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let t: Vec<f64> = p["translation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        // Depth 2 f / (s L): f = 200, L = 1.25 x 95 px.
        let z = 2.0 * 200.0 / (cam[0] * 1.25 * 95.0);
        assert!((t[2] - z).abs() < 1e-6 * z, "{t:?} vs {z}");
        // The wrong kind and the flip test are refused.
        let other = if variant == "hkmr" { "hmr" } else { "hkmr" };
        for (extra, expect) in [
            (vec!["--variant", other], "regressor, not"),
            (vec!["--variant", variant, "--flip-test"], "--flip-test"),
        ] {
            let mut args = vec![
                "backbone",
                "--checkpoint",
                s(&ck),
                "--image",
                s(&png),
                "--output",
                s(&out),
            ];
            args.extend(extra);
            let (ok, msg) = ikol(&args);
            assert!(!ok && msg.contains(expect), "{msg}");
        }
    }
}
