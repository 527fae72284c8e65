//! `ikol backbone`: run the heatmap network on one image and print what it says, as JSON.
//!
//! The image (PNG or JPEG, told apart by content) is decoded to packed RGB8, each `--box` (or the
//! whole image) is cropped as the `ikolbackbone` element does, and the joints are placed in the
//! camera with intrinsics from `--focal-length` or `--fov`. Output schema (README, "The `ikol`
//! command"):
//!
//! ```text
//! {"checkpoint", "variant", "image", "width", "height", "flip_test",
//!  "intrinsics": {"fx", "fy", "cx", "cy"},
//!  "people": [{"bbox": [x, y, w, h], "joints_uvd": J x [u, v, d], "joints_2d": J x [px, px],
//!              "joints_3d": J x [x, y, z] (root-relative metres), "root": [x, y, z] (metres),
//!              "twist": 23 x [cos, sin], "beta": [..], "leaf": 5 x [w, x, y, z] | null}]}
//! ```
//!
//! `joints_2d[j]` is the projection of `root + joints_3d[j]` with `intrinsics`.
//!
//! With `--variant hkmr` or `hmr` the checkpoint is a body regressor (ikol-backbone's
//! `regressor`, trained by `ikol-train`) and each person is the body itself:
//! `{"bbox", "theta": 24 x [x, y, z] (axis-angle, root first), "beta": [..],
//!   "cam": [s, tx, ty] (weak perspective), "translation": [x, y, z] (root, metres) | null}`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ikol_backbone::preprocess::RgbFrame;
use ikol_backbone::{
    Backbone, DeviceChoice, DirectRegressor, PersonBox, RegressorKind, Variant, open_device,
};
use ikol_render::image::read_image;
use ikol_types::{BBox, Intrinsics};
use serde_json::json;

/// Command-line options of `ikol backbone`.
#[derive(Debug, Clone)]
pub struct BackboneArgs {
    pub checkpoint: PathBuf,
    pub variant: String,
    pub image: PathBuf,
    pub boxes: Vec<String>,
    pub focal_length: Option<f64>,
    pub fov: f64,
    pub flip_test: bool,
    pub device: String,
    pub output: PathBuf,
}

/// Parses `x,y,w,h` (frame pixels) into a box with positive size.
pub fn parse_box(s: &str) -> Result<BBox> {
    let v = s
        .split(',')
        .map(|t| t.trim().parse::<f64>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--box {s:?}: expected x,y,w,h (numbers)"))?;
    let [x, y, w, h] = v[..] else {
        bail!("--box {s:?}: expected 4 numbers x,y,w,h, got {}", v.len());
    };
    if !(v.iter().all(|a| a.is_finite()) && w > 0.0 && h > 0.0) {
        bail!("--box {s:?}: width and height must be positive and all values finite");
    }
    if v.iter().any(|a| a.abs() > ikol_types::MAX_BOX_PX) {
        bail!(
            "--box {s:?}: reaches beyond {} px (no image is that large)",
            ikol_types::MAX_BOX_PX
        );
    }
    Ok(BBox { x, y, w, h })
}

/// Runs the command; returns the number of people written.
pub fn run(a: &BackboneArgs) -> Result<usize> {
    let regressor = match a.variant.to_ascii_lowercase().as_str() {
        "hkmr" => Some(RegressorKind::Hkmr),
        "hmr" | "flat" | "spin" => Some(RegressorKind::Flat),
        _ => None,
    };
    let device_choice: DeviceChoice = a.device.parse()?;
    if a.boxes.len() > ikol_types::MAX_BOXES {
        bail!(
            "{} --box flags, more than {}",
            a.boxes.len(),
            ikol_types::MAX_BOXES
        );
    }
    let boxes = a
        .boxes
        .iter()
        .map(|s| parse_box(s))
        .collect::<Result<Vec<_>>>()?;
    let img = read_image(&a.image)?;
    let intrinsics = match a.focal_length {
        Some(f) if f.is_finite() && f > 0.0 => Intrinsics::from_focal(img.width, img.height, f),
        Some(f) => bail!("--focal-length {f}: must be a positive number of pixels"),
        None if a.fov.is_finite() && a.fov > 0.0 && a.fov < 180.0 => {
            Intrinsics::from_hfov(img.width, img.height, a.fov)
        }
        None => bail!("--fov {}: must be between 0 and 180 degrees", a.fov),
    };
    let device = open_device(device_choice)?;
    let frame = RgbFrame::new(&img.pixels, img.width, img.height, 3 * img.width as usize)?;
    let people: Vec<PersonBox> = if boxes.is_empty() {
        vec![BBox {
            x: 0.0,
            y: 0.0,
            w: f64::from(img.width),
            h: f64::from(img.height),
        }]
    } else {
        boxes
    }
    .into_iter()
    .map(|bbox| PersonBox {
        bbox,
        root_depth: None,
    })
    .collect();
    let (people_json, n) = match regressor {
        Some(kind) => regress(a, kind, &device, &frame, &people, &intrinsics)?,
        None => heatmap(a, &device, &frame, &people, &intrinsics)?,
    };
    let out = json!({
        "checkpoint": a.checkpoint.display().to_string(),
        "variant": a.variant.to_ascii_lowercase(),
        "image": a.image.display().to_string(),
        "width": img.width,
        "height": img.height,
        "flip_test": a.flip_test,
        "intrinsics": intrinsics,
        "people": people_json,
    });
    let text = serde_json::to_string_pretty(&out)?;
    std::fs::write(&a.output, text + "\n")
        .with_context(|| format!("writing {}", a.output.display()))?;
    Ok(n)
}

/// A body regressor (HKMR or flat) on every box.
fn regress(
    a: &BackboneArgs,
    kind: RegressorKind,
    device: &candle_core::Device,
    frame: &RgbFrame<'_>,
    people: &[PersonBox],
    intrinsics: &Intrinsics,
) -> Result<(Vec<serde_json::Value>, usize)> {
    if a.flip_test {
        bail!("--flip-test is for the heatmap network, not a body regressor");
    }
    let net = DirectRegressor::load(&a.checkpoint, device)
        .with_context(|| format!("loading checkpoint {}", a.checkpoint.display()))?;
    if net.config().head.kind != kind {
        bail!(
            "{} holds a {} regressor, not {}",
            a.checkpoint.display(),
            net.config().head.kind.name(),
            a.variant
        );
    }
    let estimates = net.estimate(frame, people, intrinsics)?;
    let out = people
        .iter()
        .zip(&estimates)
        .map(|(p, e)| {
            json!({
                "bbox": [p.bbox.x, p.bbox.y, p.bbox.w, p.bbox.h],
                "theta": e.theta,
                "beta": e.beta,
                "cam": e.cam,
                "translation": e.translation,
            })
        })
        .collect();
    Ok((out, estimates.len()))
}

/// The heatmap network (IKOL-24 / HybrIK-29) on every box.
fn heatmap(
    a: &BackboneArgs,
    device: &candle_core::Device,
    frame: &RgbFrame<'_>,
    people: &[PersonBox],
    intrinsics: &Intrinsics,
) -> Result<(Vec<serde_json::Value>, usize)> {
    let variant: Variant = a.variant.parse()?;
    let net = Backbone::load(&a.checkpoint, variant, device)
        .with_context(|| format!("loading checkpoint {}", a.checkpoint.display()))?
        .with_flip_test(a.flip_test);
    let estimates = net.estimate(frame, people, intrinsics)?;
    let out = people
        .iter()
        .zip(&estimates)
        .map(|(p, e)| {
            json!({
                "bbox": [p.bbox.x, p.bbox.y, p.bbox.w, p.bbox.h],
                "joints_uvd": e.uvd,
                "joints_2d": e.joints_px,
                "joints_3d": e.xyz_m,
                "root": e.root_m,
                "twist": e.phi,
                "beta": e.beta,
                "leaf": e.leaf,
            })
        })
        .collect();
    Ok((out, estimates.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_parse_and_reject() {
        let b = parse_box("1, 2.5,30,40").unwrap();
        assert_eq!((b.x, b.y, b.w, b.h), (1.0, 2.5, 30.0, 40.0));
        assert!(parse_box("1,2,3").is_err());
        assert!(parse_box("1,2,0,4").is_err());
        assert!(parse_box("a,b,c,d").is_err());
    }
}
