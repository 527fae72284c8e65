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

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ikol_backbone::preprocess::RgbFrame;
use ikol_backbone::{Backbone, DeviceChoice, PersonBox, Variant, open_device};
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

/// A decoded image: packed RGB8 rows without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_MAGIC: &[u8] = b"\xff\xd8\xff";

/// Decodes a PNG or JPEG (told apart by its first bytes) to packed RGB8; grey, grey + alpha,
/// RGBA, palette and 16-bit PNGs are converted (alpha dropped). Errors name the file.
pub fn read_image(path: &Path) -> Result<RgbImage> {
    let mut head = [0u8; 8];
    let n = File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .with_context(|| format!("reading image {}", path.display()))?;
    let head = &head[..n];
    let img = if head.starts_with(PNG_MAGIC) {
        decode_png(path)
    } else if head.starts_with(JPEG_MAGIC) {
        decode_jpeg(path)
    } else {
        bail!(
            "{}: not a PNG or JPEG image (unrecognised first bytes {head:02x?})",
            path.display()
        )
    };
    img.with_context(|| format!("decoding image {}", path.display()))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn decode_png(path: &Path) -> Result<RgbImage> {
    let mut dec = png::Decoder::new(BufReader::new(File::open(path)?));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info()?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    if info.bit_depth != png::BitDepth::Eight {
        bail!("unsupported PNG bit depth {:?}", info.bit_depth);
    }
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => bail!("palette PNG was not expanded"),
    };
    let (w, h) = (info.width as usize, info.height as usize);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for row in buf.chunks(info.line_size).take(h) {
        pack_rgb(&row[..w * channels], channels, &mut pixels);
    }
    Ok(RgbImage {
        width: info.width,
        height: info.height,
        pixels,
    })
}

fn decode_jpeg(path: &Path) -> Result<RgbImage> {
    let mut dec = jpeg_decoder::Decoder::new(BufReader::new(File::open(path)?));
    let data = dec.decode()?;
    let info = dec.info().context("JPEG without a frame header")?;
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    let mut pixels = Vec::with_capacity(w * h * 3);
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels = data,
        jpeg_decoder::PixelFormat::L8 => pack_rgb(&data, 1, &mut pixels),
        // Big-endian 16-bit grey: keep the high byte.
        jpeg_decoder::PixelFormat::L16 => {
            for px in data.chunks_exact(2) {
                pixels.extend_from_slice(&[px[0]; 3]);
            }
        }
        // Adobe CMYK JPEGs store inverted values: R = C' * K' / 255 with C' = 255 - C stored.
        jpeg_decoder::PixelFormat::CMYK32 => {
            for px in data.chunks_exact(4) {
                let k = u16::from(px[3]);
                for c in &px[..3] {
                    pixels.push((u16::from(*c) * k / 255) as u8);
                }
            }
        }
    }
    if pixels.len() != w * h * 3 {
        bail!(
            "decoded {} bytes for a {w}x{h} image, expected {}",
            pixels.len(),
            w * h * 3
        );
    }
    Ok(RgbImage {
        width: u32::from(info.width),
        height: u32::from(info.height),
        pixels,
    })
}

/// Appends `src` (pixels of `channels` 8-bit values: grey, grey + alpha, RGB or RGBA) as RGB.
fn pack_rgb(src: &[u8], channels: usize, out: &mut Vec<u8>) {
    for px in src.chunks_exact(channels) {
        match channels {
            1 | 2 => out.extend_from_slice(&[px[0]; 3]),
            _ => out.extend_from_slice(&px[..3]),
        }
    }
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
    Ok(BBox { x, y, w, h })
}

/// Runs the command; returns the number of people written.
pub fn run(a: &BackboneArgs) -> Result<usize> {
    let variant: Variant = a.variant.parse()?;
    let device_choice: DeviceChoice = a.device.parse()?;
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
    let net = Backbone::load(&a.checkpoint, variant, &device)
        .with_context(|| format!("loading checkpoint {}", a.checkpoint.display()))?
        .with_flip_test(a.flip_test);

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
    let estimates = net.estimate(&frame, &people, &intrinsics)?;

    let people_json: Vec<_> = people
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
    let out = json!({
        "checkpoint": a.checkpoint.display().to_string(),
        "variant": variant.to_string(),
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
    Ok(estimates.len())
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

    #[test]
    fn grey_and_rgba_become_rgb() {
        let mut out = Vec::new();
        pack_rgb(&[7, 255, 9, 0], 2, &mut out);
        assert_eq!(out, [7, 7, 7, 9, 9, 9]);
        out.clear();
        pack_rgb(&[1, 2, 3, 4, 5, 6, 7, 8], 4, &mut out);
        assert_eq!(out, [1, 2, 3, 5, 6, 7]);
    }
}
