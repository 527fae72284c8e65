//! Writes a synthetic two-second take (arms waving, knees bending, walking sideways) with the
//! default body model in every format: `cargo run -p ikol-export --example synthetic_take -- DIR`.

use std::path::PathBuf;

use ikol_export::{Format, Take, TrackSample};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out".into()));
    std::fs::create_dir_all(&dir)?;
    let model = ikol_body::BodyModel::embedded_default()?;
    let samples: Vec<TrackSample> = (0..60u64)
        .map(|f| {
            let t = f as f64 / 30.0;
            let mut theta = vec![[0.0; 3]; 24];
            // Upright facing the camera (camera y down): a half turn about x, then a slow turn.
            theta[0] = [std::f64::consts::PI, 0.0, 0.0];
            theta[16] = [0.0, 0.0, -1.0 + 0.6 * (4.0 * t).sin()]; // left shoulder
            theta[17] = [0.0, 0.0, 1.0 - 0.6 * (4.0 * t).sin()]; // right shoulder
            theta[4] = [0.8 * (3.0 * t).sin().abs(), 0.0, 0.0]; // left knee
            theta[5] = [0.8 * (3.0 * t).cos().abs(), 0.0, 0.0]; // right knee
            TrackSample {
                frame: f,
                theta,
                translation: [0.3 * t, 0.1, 3.5],
                beta: vec![0.5, -0.3],
            }
        })
        .collect();
    let take = Take::new(1, &samples, 30.0, None, &model)?;
    for f in Format::ALL {
        let path = dir.join(format!("synthetic.{}", f.extension()));
        f.write(&take, &model, &[], &path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
