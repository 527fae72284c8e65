//! TRC (Track Row Column): the marker format of OpenSim and Pose2Sim.
//!
//! Header as OpenSim writes it (`PathFileType 4 (X/Y/Z)`), tab-separated; units **mm**; one row
//! per take frame: `Frame#` from 1, `Time` in seconds from the take's start, then X Y Z of every
//! marker in the take's Y-up world (see [`crate::take`]). Markers: the 24 SMPL joints (by name)
//! and any surface points asked for (e.g. the 33 BlazePose landmarks on the mesh).

use std::fmt::Write as _;

use ikol_body::BodyModel;

use crate::{ExportError, Marker, Take};

/// Metres to the file's unit.
pub const MM_PER_M: f64 = 1000.0;

/// The TRC text of a take with `markers`; `file_name` goes in the first header line.
pub fn encode(
    take: &Take,
    model: &BodyModel,
    markers: &[Marker],
    file_name: &str,
) -> Result<String, ExportError> {
    if let Some(m) = markers
        .iter()
        .find(|m| m.name.is_empty() || m.name.contains(['\t', '\n', '\r']))
    {
        return Err(ExportError::Input(format!(
            "TRC marker name {:?} is empty or holds a tab or line break",
            m.name
        )));
    }
    let n = take.len();
    let mut s = String::with_capacity(1024 + n * markers.len() * 30);
    let _ = writeln!(s, "PathFileType\t4\t(X/Y/Z)\t{file_name}");
    s.push_str(
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\t\
         OrigNumFrames\n",
    );
    // Orig*: the video the take comes from (its rate, the take's first frame, 1-based, and
    // how many video frames it spans).
    let _ = writeln!(
        s,
        "{:.2}\t{:.2}\t{n}\t{}\tmm\t{:.2}\t{}\t{}",
        take.fps,
        take.fps,
        markers.len(),
        take.source_fps,
        take.first_frame + 1,
        take.source_frames
    );
    s.push_str("Frame#\tTime");
    for m in markers {
        let _ = write!(s, "\t{}\t\t", m.name);
    }
    s.push_str("\n\t");
    for k in 1..=markers.len() {
        let _ = write!(s, "\tX{k}\tY{k}\tZ{k}");
    }
    s.push_str("\n\n");
    for i in 0..n {
        let pos = take.marker_positions(model, markers, i)?;
        let _ = write!(s, "{}\t{:.6}", i + 1, i as f64 / take.fps);
        for p in pos {
            let p = p * MM_PER_M;
            let _ = write!(s, "\t{:.3}\t{:.3}\t{:.3}", p.x, p.y, p.z);
        }
        s.push('\n');
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TrackSample, joint_markers};

    #[test]
    fn header_and_rows() {
        let model = BodyModel::embedded_small().unwrap();
        let mut theta = vec![[0.0; 3]; 24];
        theta[0] = [std::f64::consts::PI, 0.0, 0.0];
        let s = TrackSample {
            frame: 4,
            theta,
            translation: [0.0, 0.0, 2.0],
            beta: vec![],
        };
        let take = Take::new(2, &[s], 50.0, None, &model).unwrap();
        let mut markers = joint_markers();
        markers.push(Marker {
            name: "nose".into(),
            anchor: ikol_body::Anchor::Vertex(0),
        });
        let t = encode(&take, &model, &markers, "a.trc").unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "PathFileType\t4\t(X/Y/Z)\ta.trc");
        assert_eq!(lines[2], "50.00\t50.00\t1\t25\tmm\t50.00\t5\t1");
        assert!(lines[3].starts_with("Frame#\tTime\tpelvis\t\t\tleft_hip"));
        assert!(lines[4].ends_with("X25\tY25\tZ25"));
        assert_eq!(lines[5], "");
        let row: Vec<&str> = lines[6].split('\t').collect();
        assert_eq!(row.len(), 2 + 3 * 25);
        // The pelvis: the take's root, in mm.
        let x: f64 = row[2].parse().unwrap();
        let y: f64 = row[3].parse().unwrap();
        assert!((x - take.root[0].x * 1000.0).abs() < 1e-3);
        assert!((y - take.root[0].y * 1000.0).abs() < 1e-3);
        markers[24].name = "a\tb".into();
        assert!(encode(&take, &model, &markers, "a.trc").is_err());
    }
}
