//! Per-frame results as they leave the pipeline (`ikolexport` JSON lines) and as the `ikol`
//! command writes them. Units: metres, radians, pixels; arrays are row-major.

use serde::{Deserialize, Serialize};

use crate::crop::BBox;

/// One person in one frame. Every stage fills its part; absent parts are omitted in JSON.
///
/// What was *solved* (the body) and what the front end *measured* are kept apart: `joints_3d`,
/// `joints_2d`, `bbox` and `surface_landmarks_3d` come from the solved body; `targets_3d`,
/// `keypoints_2d`, `landmarks_2d` and `landmarks_3d` are the front end's measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonResult {
    /// Stable identity across frames (0 when untracked).
    pub track_id: u64,
    /// The person's tight box in frame pixels, clipped to the frame: the solved body's projection.
    /// Where no body was placed (no solver, or its fit failed) it is the region of `roi`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bbox: Option<BBox>,
    /// The region the front end looked at (the detector's or tracker's box; may extend past the
    /// frame).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub roi: Option<BBox>,
    /// Detection or tracking confidence in [0, 1].
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub score: Option<f32>,
    /// The solved body's 24 joints in camera coordinates, metres (root at `translation`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub joints_3d: Vec<[f32; 3]>,
    /// `joints_3d` projected with the frame's intrinsics, frame pixels.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub joints_2d: Vec<[f32; 2]>,
    /// The front end's target joints (what the solver was given), root-relative metres in camera
    /// axes, 24 or 29 rows.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub targets_3d: Vec<[f32; 3]>,
    /// The front end's 2D joints in frame pixels (same rows as `targets_3d`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub keypoints_2d: Vec<[f32; 2]>,
    /// Per-row confidence of `keypoints_2d` / `targets_3d` in [0, 1].
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub confidence: Vec<f32>,
    /// BlazePose's 33 landmarks: frame pixels x, y and visibility (model=blazepose).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub landmarks_2d: Vec<[f32; 3]>,
    /// BlazePose's 33 world landmarks: metres, origin between the hips, camera axes (turned from
    /// the crop's view, `ikol_detect::blazepose_model::crop_to_camera`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub landmarks_3d: Vec<[f32; 3]>,
    /// The solved body at the 33 landmark anchors on its surface (camera metres): the points of
    /// the mesh that correspond to `landmarks_2d` / `landmarks_3d`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub surface_landmarks_3d: Vec<[f32; 3]>,
    /// Local joint rotations as axis-angle, 24 rows (root first: global orientation in camera axes).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub theta: Vec<[f32; 3]>,
    /// Shape coefficients.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub beta: Vec<f32>,
    /// Camera-frame position of the root joint in metres.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub translation: Option<[f32; 3]>,
    /// Per-joint distance between target and reconstructed joints (metres).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub residual: Vec<f32>,
    /// Posed mesh vertices in camera coordinates (metres), when requested.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub vertices: Vec<[f32; 3]>,
}

/// All people of one frame.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameResult {
    /// Frame index from the start of the stream.
    pub frame: u64,
    /// Presentation timestamp in nanoseconds, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pts_ns: Option<u64>,
    pub people: Vec<PersonResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_omissions() {
        let f = FrameResult {
            frame: 3,
            pts_ns: Some(100),
            people: vec![PersonResult {
                track_id: 7,
                bbox: Some(BBox {
                    x: 1.0,
                    y: 2.0,
                    w: 3.0,
                    h: 4.0,
                }),
                beta: vec![0.5; 10],
                ..Default::default()
            }],
        };
        let s = serde_json::to_string(&f).unwrap();
        assert!(s.contains("\"track_id\":7") && !s.contains("vertices") && !s.contains("theta"));
        let back: FrameResult = serde_json::from_str(&s).unwrap();
        assert_eq!(back, f);
        assert!(
            serde_json::from_str::<FrameResult>("{\"frame\":1}").is_err(),
            "people is required"
        );
    }
}
