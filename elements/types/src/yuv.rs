//! YUV <-> RGB for 8-bit video (ITU-R BT.601 / BT.709 / BT.2020), the conversion GStreamer's
//! `videoconvert` does with a frame's colorimetry, shared by the front end (which reads I420
//! frames, `ikol_detect::frame`) and the overlay (which draws on them, `ikol_render`):
//!
//! `Y' = Kr R + Kg G + Kb B`, `Cb = (B - Y') / (2 (1 - Kb))`, `Cr = (R - Y') / (2 (1 - Kr))`
//! (`Kg = 1 - Kr - Kb`, all on 0-255), stored as `Y = 16 + 219/255 Y'`, `U, V = 128 + 224/255
//! Cb, Cr` in limited ("video") range and `Y = Y'`, `U, V = 128 + Cb, Cr` in full range; the
//! inverse `R = Y' + 2 (1 - Kr) Cr`, `G = Y' - 2 Kb (1 - Kb) / Kg Cb - 2 Kr (1 - Kr) / Kg Cr`,
//! `B = Y' + 2 (1 - Kb) Cb`.

/// The matrix and range of a YUV frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuvMatrix {
    /// Luma weight of red (BT.601 0.299, BT.709 0.2126, BT.2020 0.2627).
    pub kr: f32,
    /// Luma weight of blue (BT.601 0.114, BT.709 0.0722, BT.2020 0.0593).
    pub kb: f32,
    /// Full range (0-255) rather than limited (16-235 luma, 16-240 chroma).
    pub full_range: bool,
}

impl YuvMatrix {
    pub const BT601: YuvMatrix = YuvMatrix {
        kr: 0.299,
        kb: 0.114,
        full_range: false,
    };
    pub const BT709: YuvMatrix = YuvMatrix {
        kr: 0.2126,
        kb: 0.0722,
        full_range: false,
    };
    pub const BT2020: YuvMatrix = YuvMatrix {
        kr: 0.2627,
        kb: 0.0593,
        full_range: false,
    };

    /// The same matrix in full range.
    pub fn full(self) -> Self {
        Self {
            full_range: true,
            ..self
        }
    }

    /// (luma scale, luma offset, chroma scale) of the stored values.
    fn range(&self) -> (f32, f32, f32) {
        if self.full_range {
            (1.0, 0.0, 1.0)
        } else {
            (219.0 / 255.0, 16.0, 224.0 / 255.0)
        }
    }

    /// RGB (unrounded, unclamped) of stored `y`, `u`, `v`.
    pub fn to_rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        self.decoder().rgb(y, u, v)
    }

    /// Stored `[y, u, v]` (unrounded) of an RGB colour.
    pub fn from_rgb(&self, rgb: [u8; 3]) -> [f32; 3] {
        self.encoder().yuv(rgb)
    }

    /// [`YuvMatrix::to_rgb`] with its coefficients computed once (for per-pixel use).
    pub fn decoder(&self) -> YuvDecoder {
        let (ys, yo, cs) = self.range();
        let kg = 1.0 - self.kr - self.kb;
        YuvDecoder {
            k: [
                1.0 / ys,
                yo,
                1.0 / cs,
                2.0 * (1.0 - self.kr),
                -2.0 * self.kb * (1.0 - self.kb) / kg,
                -2.0 * self.kr * (1.0 - self.kr) / kg,
                2.0 * (1.0 - self.kb),
            ],
        }
    }

    /// [`YuvMatrix::from_rgb`] with its coefficients computed once.
    pub fn encoder(&self) -> YuvEncoder {
        let (ys, yo, cs) = self.range();
        let kg = 1.0 - self.kr - self.kb;
        YuvEncoder {
            y: [ys * self.kr, ys * kg, ys * self.kb, yo],
            cb: cs / (2.0 * (1.0 - self.kb)),
            cr: cs / (2.0 * (1.0 - self.kr)),
            inv_ys: 1.0 / ys,
        }
    }
}

/// See [`YuvMatrix::decoder`].
#[derive(Debug, Clone, Copy)]
pub struct YuvDecoder {
    /// 1 / luma scale, luma offset, 1 / chroma scale, R <- Cr, G <- Cb, G <- Cr, B <- Cb.
    k: [f32; 7],
}

impl YuvDecoder {
    #[inline(always)]
    pub fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let k = &self.k;
        let yp = (y - k[1]) * k[0];
        let (cb, cr) = ((u - 128.0) * k[2], (v - 128.0) * k[2]);
        [yp + k[3] * cr, yp + k[4] * cb + k[5] * cr, yp + k[6] * cb]
    }
}

/// See [`YuvMatrix::encoder`].
#[derive(Debug, Clone, Copy)]
pub struct YuvEncoder {
    /// Stored luma from R, G, B, and its offset.
    y: [f32; 4],
    /// Chroma from (B - Y') and (R - Y'), stored-range scale included.
    cb: f32,
    cr: f32,
    /// 1 / luma scale (to recover Y' from the stored luma).
    inv_ys: f32,
}

impl YuvEncoder {
    #[inline(always)]
    pub fn yuv(&self, rgb: [u8; 3]) -> [f32; 3] {
        let [r, g, b] = rgb.map(f32::from);
        let k = &self.y;
        let luma = k[0] * r + k[1] * g + k[2] * b;
        let yp = luma * self.inv_ys;
        [
            luma + k[3],
            128.0 + self.cb * (b - yp),
            128.0 + self.cr * (r - yp),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standards' anchor values: white and black at the range ends, BT.709 limited-range
    /// full red (255, 0, 0) -> (63, 102, 240) (Y = 16 + 219 Kr, Cr at its maximum 240), and the
    /// round trip.
    #[test]
    fn anchors_and_round_trip() {
        let m = YuvMatrix::BT709;
        let near = |a: [f32; 3], b: [f32; 3], tol: f32| {
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tol)
        };
        assert!(near(
            m.from_rgb([255, 255, 255]),
            [235.0, 128.0, 128.0],
            1e-3
        ));
        assert!(near(m.from_rgb([0, 0, 0]), [16.0, 128.0, 128.0], 1e-3));
        assert!(near(
            m.full().from_rgb([255, 255, 255]),
            [255.0, 128.0, 128.0],
            1e-3
        ));
        assert!(near(m.from_rgb([255, 0, 0]), [63.0, 102.0, 240.0], 0.6));
        for mat in [YuvMatrix::BT601, YuvMatrix::BT709, YuvMatrix::BT2020.full()] {
            for rgb in [[10u8, 200, 30], [250, 5, 128], [77, 77, 77]] {
                let [y, u, v] = mat.from_rgb(rgb);
                let back = mat.to_rgb(y, u, v);
                assert!(
                    near(back, rgb.map(f32::from), 1e-3),
                    "{mat:?} {rgb:?} {back:?}"
                );
            }
        }
    }
}
