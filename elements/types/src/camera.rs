//! Pinhole camera intrinsics in the OpenCV convention (x right, y down, z forward; pixels with the
//! centre of the top-left pixel at (0, 0)).

use nalgebra::Vector3;
use serde::{Deserialize, Serialize};

/// Horizontal field of view assumed when the source gives no intrinsics and no `focal-length`
/// or `fov` property is set. 60 degrees is typical of webcams and phone main cameras.
pub const DEFAULT_HFOV_DEG: f64 = 60.0;

/// Nearest camera depth of a body's root joint, metres: a root nearer than this is not a person
/// in view (a degenerate estimate), and no fit may take a body past it.
pub const MIN_ROOT_DEPTH_M: f64 = 0.3;

/// Pinhole intrinsics: focal lengths and principal point in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Intrinsics {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

impl Intrinsics {
    /// Square pixels, principal point at the image centre, focal length from a horizontal field
    /// of view: f = (W / 2) / tan(hfov / 2).
    pub fn from_hfov(width: u32, height: u32, hfov_deg: f64) -> Self {
        let f = 0.5 * f64::from(width) / (0.5 * hfov_deg.to_radians()).tan();
        Self::from_focal(width, height, f)
    }

    /// Square pixels with focal length `f` pixels, principal point at the image centre.
    pub fn from_focal(width: u32, height: u32, f: f64) -> Self {
        Self {
            fx: f,
            fy: f,
            cx: 0.5 * (f64::from(width) - 1.0),
            cy: 0.5 * (f64::from(height) - 1.0),
        }
    }

    /// Projects a camera-frame point to pixels; `None` behind or on the camera plane.
    pub fn project(&self, p: &Vector3<f64>) -> Option<[f64; 2]> {
        (p.z > 0.0).then(|| [self.fx * p.x / p.z + self.cx, self.fy * p.y / p.z + self.cy])
    }

    /// The camera-frame point at depth `z` that projects to pixel (u, v).
    pub fn unproject(&self, u: f64, v: f64, z: f64) -> Vector3<f64> {
        Vector3::new((u - self.cx) / self.fx * z, (v - self.cy) / self.fy * z, z)
    }

    /// True when all values are finite and the focal lengths positive.
    pub fn is_valid(&self) -> bool {
        [self.fx, self.fy, self.cx, self.cy]
            .iter()
            .all(|v| v.is_finite())
            && self.fx > 0.0
            && self.fy > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn fov_and_projection() {
        // 90 degrees over 640 px: f = 320 / tan(45 deg) = 320.
        let k = Intrinsics::from_hfov(640, 480, 90.0);
        assert_relative_eq!(k.fx, 320.0, epsilon = 1e-12);
        assert_eq!((k.cx, k.cy), (319.5, 239.5));
        // A point at the image's right edge direction: x/z = 1 -> u = cx + f.
        assert_eq!(
            k.project(&Vector3::new(2.0, 0.0, 2.0)),
            Some([639.5, 239.5])
        );
        assert_eq!(k.project(&Vector3::new(0.0, 0.0, -1.0)), None);
        let p = k.unproject(100.0, 50.0, 3.0);
        let uv = k.project(&p).unwrap();
        assert_relative_eq!(uv[0], 100.0, epsilon = 1e-12);
        assert_relative_eq!(uv[1], 50.0, epsilon = 1e-12);
        assert!(k.is_valid());
        assert!(!Intrinsics { fx: f64::NAN, ..k }.is_valid());
    }
}
