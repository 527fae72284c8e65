//! The frames the front end reads: packed RGB8, or planar YUV 4:2:0 (I420) as video decoders
//! give it. An I420 frame is never converted whole: the network inputs sample a few hundred
//! thousand of its pixels ([`crate::blazepose::warp`]), each converted to RGB where it is read,
//! so the pipelines need no `videoconvert` (which spent 4.8 ms per 1080x1920 frame to RGB and
//! 11 ms back to I420 for the encoder, `ikol run --stats`).
//!
//! The conversion is [`YuvMatrix::to_rgb`] with the frame's colorimetry, chroma sampled at its
//! siting (co-sited with the even luma samples, or centred between two).

use crate::RgbImage;
use ikol_types::YuvMatrix;

/// A planar YUV 4:2:0 view: luma `height` rows of `y_stride` bytes, chroma planes at half
/// resolution (rounded up) with `uv_stride`; the view is the `width` x `height` window at
/// (`x0`, `y0`) of the planes (a tile of a frame keeps the planes and moves the window).
#[derive(Debug, Clone, Copy)]
pub struct I420Image<'a> {
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub y_stride: usize,
    pub uv_stride: usize,
    pub width: usize,
    pub height: usize,
    pub x0: usize,
    pub y0: usize,
    pub colour: YuvMatrix,
    /// Chroma co-sited with the even luma columns (MPEG-2, H.264's default) rather than centred
    /// between two (JPEG).
    pub h_cosited: bool,
    /// Chroma co-sited with the even luma rows rather than centred between two (the usual).
    pub v_cosited: bool,
}

impl I420Image<'_> {
    /// Whether the planes hold the window.
    pub fn is_valid(&self) -> bool {
        if self.width == 0 || self.height == 0 {
            return false;
        }
        let (x1, y1) = (self.x0 + self.width, self.y0 + self.height);
        let (cx1, cy1) = (x1.div_ceil(2), y1.div_ceil(2));
        self.y_stride >= x1
            && self.uv_stride >= cx1
            && self.y.len() >= (y1 - 1) * self.y_stride + x1
            && self.u.len() >= (cy1 - 1) * self.uv_stride + cx1
            && self.v.len() >= (cy1 - 1) * self.uv_stride + cx1
    }
}

/// A frame for the detector and the landmark model.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    Rgb(RgbImage<'a>),
    I420(I420Image<'a>),
}

impl<'a> Frame<'a> {
    pub fn width(&self) -> usize {
        match self {
            Frame::Rgb(i) => i.width,
            Frame::I420(i) => i.width,
        }
    }

    pub fn height(&self) -> usize {
        match self {
            Frame::Rgb(i) => i.height,
            Frame::I420(i) => i.height,
        }
    }

    /// The `side` x `side` window at (`x`, `y`) (inside the frame), as its own frame.
    pub fn tile(&self, x: usize, y: usize, side: usize) -> Frame<'a> {
        match *self {
            Frame::Rgb(i) => Frame::Rgb(RgbImage {
                data: i.data.get(y * i.stride + 3 * x..).unwrap_or(&[]),
                width: side,
                height: side,
                stride: i.stride,
            }),
            Frame::I420(i) => Frame::I420(I420Image {
                x0: i.x0 + x,
                y0: i.y0 + y,
                width: side,
                height: side,
                ..i
            }),
        }
    }
}

impl<'a> From<RgbImage<'a>> for Frame<'a> {
    fn from(i: RgbImage<'a>) -> Self {
        Frame::Rgb(i)
    }
}

impl<'a> From<&RgbImage<'a>> for Frame<'a> {
    fn from(i: &RgbImage<'a>) -> Self {
        Frame::Rgb(*i)
    }
}

impl<'a> From<I420Image<'a>> for Frame<'a> {
    fn from(i: I420Image<'a>) -> Self {
        Frame::I420(i)
    }
}

impl<'a> From<&Frame<'a>> for Frame<'a> {
    fn from(f: &Frame<'a>) -> Self {
        *f
    }
}

/// A copy of a frame's bytes (for work on another thread), viewed again by [`OwnedFrame::frame`].
#[derive(Debug, Clone)]
pub struct OwnedFrame {
    planes: [Vec<u8>; 3],
    layout: Frame<'static>,
}

impl Frame<'_> {
    /// Copies the bytes the frame views.
    pub fn to_owned(&self) -> OwnedFrame {
        let empty: &'static [u8] = &[];
        match *self {
            Frame::Rgb(i) => {
                let len = (i.height.saturating_sub(1) * i.stride + 3 * i.width).min(i.data.len());
                OwnedFrame {
                    planes: [i.data[..len].to_vec(), Vec::new(), Vec::new()],
                    layout: Frame::Rgb(RgbImage { data: empty, ..i }),
                }
            }
            Frame::I420(i) => OwnedFrame {
                planes: [i.y.to_vec(), i.u.to_vec(), i.v.to_vec()],
                layout: Frame::I420(I420Image {
                    y: empty,
                    u: empty,
                    v: empty,
                    ..i
                }),
            },
        }
    }
}

impl OwnedFrame {
    pub fn frame(&self) -> Frame<'_> {
        let [a, b, c] = &self.planes;
        match self.layout {
            Frame::Rgb(i) => Frame::Rgb(RgbImage { data: a, ..i }),
            Frame::I420(i) => Frame::I420(I420Image {
                y: a,
                u: b,
                v: c,
                ..i
            }),
        }
    }
}
