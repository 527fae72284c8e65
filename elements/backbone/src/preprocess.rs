//! Network input from an RGB frame: the person crop (HybrIK reference 4.4) and the channel
//! normalisation.
//!
//! * Crop: `Crop::from_box(&bbox, BOX_SCALE_MULT, size)` (square, enlarged 1.25x), warped with
//!   bilinear interpolation and a constant 0 border as `cv2.warpAffine(img, trans, (S, S),
//!   flags=INTER_LINEAR)`. The implementation follows OpenCV's current float kernel (OpenCV 4.11+
//!   and 5.x: single-precision source coordinates and weights, round-half-even to u8) and matches
//!   `cv2.warpAffine` of opencv-python 5.0 bit for bit (see tests/parity.rs); OpenCV <= 4.10 used
//!   a fixed-point kernel (1/32-pixel positions) that differs by a few levels at sharp edges.
//! * Normalisation: RGB / 255, then per channel 0, 1, 2: `(x - mean) / std` with
//!   mean (0.406, 0.457, 0.480) and std (0.225, 0.224, 0.229). These are ImageNet's statistics in
//!   BGR order applied to an RGB tensor: HybrIK's quirk, kept because the weights expect it.

use candle_core::{Device, Tensor};
use ikol_types::{Affine2, BBox, BOX_SCALE_MULT, Crop};

use crate::{Error, Result};

/// Per-channel mean subtracted after scaling to [0, 1] (channel order of the tensor, RGB).
pub const PIXEL_MEAN: [f32; 3] = [0.406, 0.457, 0.480];
/// Per-channel standard deviation.
pub const PIXEL_STD: [f32; 3] = [0.225, 0.224, 0.229];

/// A borrowed packed RGB8 frame: `height` rows of `stride` bytes, the first `3 * width` used.
#[derive(Debug, Clone, Copy)]
pub struct RgbFrame<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
}

impl<'a> RgbFrame<'a> {
    /// Checks that `data` holds `height` rows of `stride >= 3 * width` bytes (the last row may
    /// be short of the padding).
    pub fn new(data: &'a [u8], width: u32, height: u32, stride: usize) -> Result<Self> {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 {
            return Err(Error::InvalidInput(format!("empty frame {width}x{height}")));
        }
        if stride < 3 * w {
            return Err(Error::InvalidInput(format!(
                "stride {stride} is less than 3 x width {width}"
            )));
        }
        let need = stride * (h - 1) + 3 * w;
        if data.len() < need {
            return Err(Error::InvalidInput(format!(
                "frame buffer has {} bytes, {width}x{height} RGB with stride {stride} needs {need}",
                data.len()
            )));
        }
        Ok(Self {
            data,
            width: w,
            height: h,
            stride,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Pixel (x, y) as [r, g, b].
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = y * self.stride + 3 * x;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// The inverse of a 2x3 affine computed as OpenCV's `invertAffineTransform` (double precision).
fn opencv_invert(a: &Affine2) -> [f64; 6] {
    let m = [
        a.m[0][0], a.m[0][1], a.m[0][2], a.m[1][0], a.m[1][1], a.m[1][2],
    ];
    let d = m[0] * m[4] - m[1] * m[3];
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (a11, a22) = (m[4] * d, m[0] * d);
    let (a12, a21) = (-m[1] * d, -m[3] * d);
    let b1 = -a11 * m[2] - a12 * m[5];
    let b2 = -a21 * m[2] - a22 * m[5];
    [a11, a12, b1, a21, a22, b2]
}

/// Warps the frame into a `size x size` RGB8 crop with the frame -> crop map `frame_to_crop`
/// (bilinear, border 0), as `cv2.warpAffine(frame, frame_to_crop, (size, size))`. Output is
/// packed RGB, row-major.
pub fn warp_affine_rgb(frame: &RgbFrame<'_>, frame_to_crop: &Affine2, size: usize) -> Vec<u8> {
    let mi = opencv_invert(frame_to_crop).map(|v| v as f32);
    let (w, h) = (frame.width as i64, frame.height as i64);
    let mut out = vec![0u8; size * size * 3];
    let fetch = |x: i64, y: i64| -> [f32; 3] {
        if x >= 0 && y >= 0 && x < w && y < h {
            frame.pixel(x as usize, y as usize).map(f32::from)
        } else {
            [0.0; 3]
        }
    };
    for y in 0..size {
        let yf = y as f32;
        let (bx, by) = (mi[1] * yf + mi[2], mi[4] * yf + mi[5]);
        for x in 0..size {
            let xf = x as f32;
            let sx = mi[0] * xf + bx;
            let sy = mi[3] * xf + by;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            // Far outside: stays 0 (also guards the i64 conversion).
            if !(x0 >= -1.0 && y0 >= -1.0 && x0 < w as f32 && y0 < h as f32) {
                continue;
            }
            let (x0, y0) = (x0 as i64, y0 as i64);
            let (p00, p01) = (fetch(x0, y0), fetch(x0 + 1, y0));
            let (p10, p11) = (fetch(x0, y0 + 1), fetch(x0 + 1, y0 + 1));
            let o = &mut out[(y * size + x) * 3..][..3];
            for c in 0..3 {
                let v0 = p00[c] + fx * (p01[c] - p00[c]);
                let v1 = p10[c] + fx * (p11[c] - p10[c]);
                let v = v0 + fy * (v1 - v0);
                o[c] = v.round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Packed RGB8 `size x size` -> normalised CHW f32 (see the module docs).
pub fn normalize_rgb(rgb: &[u8], size: usize) -> Vec<f32> {
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).take(plane).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - PIXEL_MEAN[c]) / PIXEL_STD[c];
        }
    }
    out
}

/// HybrIK's crop of a detection box: square, enlarged by 1.25, `size` pixels.
pub fn crop_for_box(bbox: &BBox, size: usize) -> Result<Crop> {
    if !bbox.is_valid() {
        return Err(Error::InvalidInput(format!("invalid box {bbox:?}")));
    }
    Ok(Crop::from_box(bbox, BOX_SCALE_MULT, size as u32))
}

/// Warps and normalises one crop per entry of `crops` into a `[N, 3, S, S]` f32 tensor
/// (`S = crop.size`, which must be the same for all).
pub fn crops_tensor(frame: &RgbFrame<'_>, crops: &[Crop], device: &Device) -> Result<Tensor> {
    let Some(first) = crops.first() else {
        return Err(Error::InvalidInput("no crops".into()));
    };
    let size = first.size as usize;
    if crops.iter().any(|c| c.size as usize != size) {
        return Err(Error::InvalidInput("crops of different sizes".into()));
    }
    let mut data = Vec::with_capacity(crops.len() * 3 * size * size);
    for crop in crops {
        let rgb = warp_affine_rgb(frame, &crop.affine(), size);
        data.extend(normalize_rgb(&rgb, size));
    }
    Ok(Tensor::from_vec(
        data,
        (crops.len(), 3, size, size),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_4x3() -> Vec<u8> {
        // 4x3 frame, pixel (x, y) = (10x + 100y, 2x, 250 - y), stride 14 (2 padding bytes).
        let mut d = vec![0u8; 14 * 3];
        for y in 0..3 {
            for x in 0..4 {
                let i = y * 14 + 3 * x;
                d[i] = (10 * x + 100 * y) as u8;
                d[i + 1] = (2 * x) as u8;
                d[i + 2] = (250 - y) as u8;
            }
        }
        d
    }

    #[test]
    fn frame_validation() {
        let d = frame_4x3();
        assert!(RgbFrame::new(&d, 4, 3, 14).is_ok());
        assert!(RgbFrame::new(&d, 4, 3, 11).is_err());
        assert!(RgbFrame::new(&d[..30], 4, 3, 14).is_err());
        assert_eq!(
            RgbFrame::new(&d, 4, 3, 14).unwrap().pixel(3, 2),
            [230, 6, 248]
        );
    }

    #[test]
    fn hand_computed_pixels() {
        let d = frame_4x3();
        let f = RgbFrame::new(&d, 4, 3, 14).unwrap();
        // frame -> crop: shift by (-0.5, -1.0): crop (x, y) samples frame (x + 0.5, y + 1).
        let a = Affine2 {
            m: [[1.0, 0.0, -0.5], [0.0, 1.0, -1.0]],
        };
        let out = warp_affine_rgb(&f, &a, 4);
        let px = |x: usize, y: usize| {
            [
                out[(y * 4 + x) * 3],
                out[(y * 4 + x) * 3 + 1],
                out[(y * 4 + x) * 3 + 2],
            ]
        };
        // (0, 0) -> frame (0.5, 1): mean of (0,1) and (1,1): R (100 + 110)/2 = 105,
        // G (0 + 2)/2 = 1, B 249.
        assert_eq!(px(0, 0), [105, 1, 249]);
        // (1, 1) -> frame (1.5, 2): R (210 + 220)/2 = 215, G (2 + 4)/2 = 3, B 248.
        assert_eq!(px(1, 1), [215, 3, 248]);
        // (3, 0) -> frame (3.5, 1): half of (3,1) and half of the 0 border: R 130/2 = 65,
        // G 6/2 = 3, B 249/2 = 124.5 -> 124 (round half to even).
        assert_eq!(px(3, 0), [65, 3, 124]);
        // (0, 2) -> frame (0.5, 3): row 3 is outside: all 0.
        assert_eq!(px(0, 2), [0, 0, 0]);

        // Normalisation of channel values: R 105 -> (105/255 - 0.406) / 0.225.
        let n = normalize_rgb(&out, 4);
        let want = (105.0f32 / 255.0 - 0.406) / 0.225;
        assert!((n[0] - want).abs() < 1e-6);
        assert!((n[16] - (1.0f32 / 255.0 - 0.457) / 0.224).abs() < 1e-6);
        assert!((n[32] - (249.0f32 / 255.0 - 0.480) / 0.229).abs() < 1e-6);
    }

    #[test]
    fn crop_tensor_shape_and_centre() {
        // A uniform grey frame: the inside of the crop is grey, normalised per channel.
        let d = vec![128u8; 64 * 48 * 3];
        let f = RgbFrame::new(&d, 64, 48, 64 * 3).unwrap();
        let b = BBox {
            x: 20.0,
            y: 10.0,
            w: 16.0,
            h: 24.0,
        };
        let crop = crop_for_box(&b, 32).unwrap();
        assert_eq!(crop.side, 30.0);
        let t = crops_tensor(&f, &[crop, crop], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 3, 32, 32]);
        let v = t
            .get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .get(16)
            .unwrap()
            .get(16)
            .unwrap();
        let want = (128.0f32 / 255.0 - 0.480) / 0.229;
        assert!((v.to_scalar::<f32>().unwrap() - want).abs() < 1e-6);
        assert!(
            crop_for_box(
                &BBox {
                    x: 0.0,
                    y: 0.0,
                    w: 0.0,
                    h: 1.0
                },
                32
            )
            .is_err()
        );
    }
}
