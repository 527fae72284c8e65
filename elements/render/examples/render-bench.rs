//! Overlay renderer speed: the default body mesh (12272 vertices) drawn into a 1080x1920 frame
//! as `ikoloverlay` draws it (opacity 0.7, one or two people), into BGRx and into I420 (what the
//! pipelines pass it), median of many frames, next to a plain copy of the frame in the same run
//! as the machine's yardstick.
//!
//! `cargo run --release -p ikol-render --example render-bench [-- --frames N]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/scene.rs"]
mod scene;

use ikol_render::{Canvas, Frame, MeshStyle, PixelFormat};
use ikol_types::YuvMatrix;
use std::time::Instant;

const W: usize = 1080;
const H: usize = 1920;

/// Camera-frame vertices and faces of one person.
type Mesh = (Vec<[f32; 3]>, Vec<[u32; 3]>);

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let frames: usize = std::env::args()
        .skip_while(|a| a != "--frames")
        .nth(1)
        .map_or(60, |s| s.parse().expect("--frames N"));
    let k = scene::camera(W, H);
    let one = scene::body(0.0, 2.6);
    let two = [scene::body(-0.45, 2.6), scene::body(0.5, 4.0)];
    let background: Vec<u8> = (0..W * H * 4).map(|i| (i % 251) as u8).collect();
    let mut px = background.clone();
    let yuv_background = background[..W * H * 3 / 2].to_vec();
    let mut yuv = yuv_background.clone();
    let mut canvas = Canvas::new(W, H);
    let style = MeshStyle {
        opacity: 0.7,
        ..MeshStyle::default()
    };
    let mut time = |people: &[&Mesh], i420: bool| -> (f64, usize) {
        let mut t = Vec::new();
        let mut written = 0;
        for _ in 0..frames {
            px.copy_from_slice(&background);
            yuv.copy_from_slice(&yuv_background);
            let t0 = Instant::now();
            let mut f = if i420 {
                let (y, uv) = yuv.split_at_mut(W * H);
                let (u, v) = uv.split_at_mut(W * H / 4);
                Frame::i420(y, u, v, W, H, W, W / 2, YuvMatrix::BT709).unwrap()
            } else {
                Frame::new(&mut px, W, H, W * 4, PixelFormat::Bgrx).unwrap()
            };
            canvas.clear();
            written = 0;
            for (v, faces) in people {
                written += canvas.add_mesh(&k, v, faces, &style).unwrap();
            }
            canvas.composite(&mut f).unwrap();
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        (median(t), written)
    };
    let (t1, n1) = time(&[&one], false);
    let (t2, n2) = time(&[&two[0], &two[1]], false);
    let (y1, _) = time(&[&one], true);
    let (y2, _) = time(&[&two[0], &two[1]], true);
    let mut copy = Vec::new();
    let mut dst = vec![0u8; W * H * 4];
    for _ in 0..frames {
        let t0 = Instant::now();
        dst.copy_from_slice(&background);
        std::hint::black_box(&dst);
        copy.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let tc = median(copy);
    println!(
        "frame {W}x{H} BGRx, default body ({} vertices, {} faces), opacity 0.7, {frames} frames, median",
        one.0.len(),
        one.1.len()
    );
    println!(
        "one person:  {t1:7.2} ms ({n1} fragments) = {:.1} frame copies",
        t1 / tc
    );
    println!(
        "two people:  {t2:7.2} ms ({n2} fragments) = {:.2} ms per person",
        t2 / 2.0
    );
    println!(
        "I420, one person:  {y1:7.2} ms; two people: {y2:7.2} ms = {:.2} ms per person",
        y2 / 2.0
    );
    println!("frame copy:  {tc:7.3} ms (yardstick)");
}
