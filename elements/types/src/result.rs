//! Per-frame results as they leave the pipeline (`ikolexport` JSON lines) and as the `ikol`
//! command writes them. Units: metres, radians, pixels; arrays are row-major.

use serde::{Deserialize, Serialize};

use crate::crop::BBox;

/// One person in one frame. Every stage fills its part; absent parts are omitted in JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonResult {
    /// Stable identity across frames (0 when untracked).
    pub track_id: u64,
    /// Detection box in frame pixels.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bbox: Option<BBox>,
    /// Detection or tracking confidence in [0, 1].
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub score: Option<f32>,
    /// Root-relative 3D joints in metres (camera axes), 24 or 29 rows.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub joints_3d: Vec<[f32; 3]>,
    /// 2D joints in frame pixels.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub joints_2d: Vec<[f32; 2]>,
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
