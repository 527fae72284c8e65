//! ikol-detect: where the people in a frame are.
//!
//! - [`PersonDetector`]: the interface a person detector implements (the BlazePose detector of
//!   the front-end issue plugs in here); [`create_detector`] builds one by name, so `ikolcrop`
//!   never changes when a detector is added.
//! - [`Tracker`]: stable track ids across frames by greedy intersection-over-union matching,
//!   with boxes refreshed from the previous frame's joints (the feedback `ikolbackbone` sends
//!   upstream), an age limit and a `max_people` limit.

pub mod blazepose;
pub mod blazepose_model;
pub mod frame;
pub mod landmarks_smpl;
pub mod tflite;
mod tracker;

pub use frame::{Frame, I420Image, OwnedFrame};
pub use ikol_types::YuvMatrix;
pub use tracker::{Track, Tracker, TrackerConfig};

use ikol_types::BBox;

/// One detected person.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    /// Confidence in [0, 1].
    pub score: f64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    #[error("unknown detector `{name}` (available: {available})")]
    UnknownDetector { name: String, available: String },
    #[error("detector `{detector}`: {reason}")]
    Failed { detector: String, reason: String },
}

/// A packed RGB8 frame: `height` rows of `stride` bytes, the first `3 * width` used.
#[derive(Debug, Clone, Copy)]
pub struct RgbImage<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
}

/// A person detector. Called on the streaming thread of `ikolcrop`, one frame at a time.
pub trait PersonDetector: Send + std::fmt::Debug {
    /// The name used in the `detector` property.
    fn name(&self) -> &str;
    /// People in the frame, best first.
    fn detect(&mut self, image: &Frame<'_>) -> Result<Vec<Detection>, DetectError>;
}

/// Detector names [`create_detector`] accepts besides `none`.
pub const DETECTORS: &[&str] = &["blazepose"];

/// The detector called `name`; `none` (or an empty name) gives `None`: boxes then come from
/// upstream metas, a region property or tracking only.
pub fn create_detector(name: &str) -> Result<Option<Box<dyn PersonDetector>>, DetectError> {
    match name {
        "" | "none" => Ok(None),
        "blazepose" => Ok(Some(Box::new(blazepose_model::BlazePoseDetector::load(
            &blazepose_model::models_dir(),
        )?))),
        other => Err(DetectError::UnknownDetector {
            name: other.to_owned(),
            available: std::iter::once("none")
                .chain(DETECTORS.iter().copied())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_detector_names_the_choices() {
        assert!(create_detector("none").unwrap().is_none());
        let e = create_detector("yolo").unwrap_err().to_string();
        assert!(e.contains("`yolo`") && e.contains("none"), "{e}");
    }
}
