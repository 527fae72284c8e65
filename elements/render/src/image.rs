//! Reading still images (PNG, JPEG) into packed RGB8, for `ikol backbone` and `ikol3dpwsrc`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// A decoded image: packed RGB8 rows without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// An image that cannot be read; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading image {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("decoding image {path}: {message}")]
    Decode { path: PathBuf, message: String },
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_MAGIC: &[u8] = b"\xff\xd8\xff";

/// Decodes a PNG or JPEG (told apart by its first bytes) to packed RGB8; grey, grey + alpha,
/// RGBA, palette and 16-bit PNGs are converted (alpha dropped).
pub fn read_image(path: &Path) -> Result<RgbImage, ImageError> {
    let mut head = [0u8; 8];
    let n = File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let head = &head[..n];
    let img = if head.starts_with(PNG_MAGIC) {
        decode_png(path)
    } else if head.starts_with(JPEG_MAGIC) {
        decode_jpeg_file(path)
    } else {
        Err(format!(
            "not a PNG or JPEG image (unrecognised first bytes {head:02x?})"
        ))
    };
    img.map_err(|message| ImageError::Decode {
        path: path.to_path_buf(),
        message,
    })
}

/// Decodes a JPEG file to packed RGB8 (grey, 16-bit grey and Adobe CMYK converted).
pub fn read_jpeg(path: &Path) -> Result<RgbImage, ImageError> {
    decode_jpeg_file(path).map_err(|message| ImageError::Decode {
        path: path.to_path_buf(),
        message,
    })
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

fn decode_png(path: &Path) -> Result<RgbImage, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut dec = png::Decoder::new(BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    if info.bit_depth != png::BitDepth::Eight {
        return Err(format!("unsupported PNG bit depth {:?}", info.bit_depth));
    }
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("palette PNG was not expanded".into()),
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

fn decode_jpeg_file(path: &Path) -> Result<RgbImage, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut dec = jpeg_decoder::Decoder::new(BufReader::new(file));
    let data = dec.decode().map_err(|e| e.to_string())?;
    let info = dec.info().ok_or("JPEG without a frame header")?;
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
        return Err(format!(
            "decoded {} bytes for a {w}x{h} image, expected {}",
            pixels.len(),
            w * h * 3
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

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
