//! The renderer against a committed picture: two people of the default body (one cut by the
//! frame's edge, one behind the other's hand) drawn opaque over grey at 540x960.
//! `tests/data/reference-two-people.png` was drawn by the straightforward rasteriser this crate
//! had before culling, spans and the mesh layer (commit c185ad3: every triangle's whole box
//! tested pixel by pixel, depth by division, blended as drawn), from the same scene
//! (`tests/common/scene.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::scene;

use ikol_render::{Canvas, Frame, MeshStyle, PixelFormat};

const W: usize = 540;
const H: usize = 960;

fn reference() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/reference-two-people.png"
    );
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (W as u32, H as u32));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    buf
}

#[test]
fn two_people_match_the_reference_within_one_grey_level() {
    let k = scene::camera(W, H);
    let mut px = vec![90u8; W * H * 3];
    let mut canvas = Canvas::new(W, H);
    let mut frame = Frame::new(&mut px, W, H, W * 3, PixelFormat::Rgb).unwrap();
    for (dx, z, color) in [(-0.45, 2.6, [230u8, 140, 60]), (0.5, 4.0, [150, 180, 230])] {
        let (v, faces) = scene::body(dx, z);
        let style = MeshStyle {
            color,
            opacity: 1.0,
            ambient: 0.25,
        };
        canvas.add_mesh(&k, &v, &faces, &style).unwrap();
    }
    canvas.composite(&mut frame).unwrap();
    let want = reference();
    let diff: Vec<u8> = px.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).collect();
    let over = diff.iter().filter(|&&d| d > 1).count();
    let covered = want.chunks(3).filter(|p| p != &[90, 90, 90]).count();
    let max = diff.iter().max().copied().unwrap_or(0);
    println!("{covered} mesh pixels; {over} channel values differ by more than 1, max {max}");
    assert!(covered > 50_000, "the scene covers {covered} pixels");
    assert_eq!(over, 0, "max difference {max}");
}
