//! Soft-argmax on hand-made volumes.

use anyhow::Result;
use candle_core::{Device, Tensor};
use ikol_backbone::ops::{soft_argmax, soft_argmax_reference};

const D: usize = 4;
const H: usize = 5;
const W: usize = 6;
const OFF: f32 = -1e4; // exp(-1e4) == 0 in f32: cells outside the pattern get no mass

fn volume(cells: &[((usize, usize, usize), f32)]) -> Vec<f32> {
    let mut v = vec![OFF; D * H * W];
    for &((d, h, w), l) in cells {
        v[(d * H + h) * W + w] = l;
    }
    v
}

#[test]
fn delta_gives_its_cell() -> Result<()> {
    // Two joints with single hot cells: u = w / W - 0.5, v = h / H - 0.5, d = d / D - 0.5.
    let mut logits = volume(&[((1, 3, 5), 0.0)]);
    logits.extend(volume(&[((0, 0, 0), 5.0)]));
    let t = Tensor::from_vec(logits, (1, 2, D * H * W), &Device::Cpu)?;
    for out in [
        soft_argmax(&t, D, H, W)?,
        soft_argmax_reference(&t, D, H, W)?,
    ] {
        let c = out.squeeze(0)?.to_vec2::<f32>()?;
        let want0 = [5.0 / 6.0 - 0.5, 3.0 / 5.0 - 0.5, 1.0 / 4.0 - 0.5];
        let want1 = [-0.5, -0.5, -0.5];
        for k in 0..3 {
            assert!((c[0][k] - want0[k]).abs() < 1e-6, "{:?}", c[0]);
            assert!((c[1][k] - want1[k]).abs() < 1e-6, "{:?}", c[1]);
        }
    }
    // Two equal cells: the midpoint.
    let t = Tensor::from_vec(
        volume(&[((0, 1, 1), 2.0), ((2, 3, 5), 2.0)]),
        (1, 1, D * H * W),
        &Device::Cpu,
    )?;
    let c = soft_argmax(&t, D, H, W)?.flatten_all()?.to_vec1::<f32>()?;
    let want = [3.0 / 6.0 - 0.5, 2.0 / 5.0 - 0.5, 1.0 / 4.0 - 0.5];
    for k in 0..3 {
        assert!((c[k] - want[k]).abs() < 1e-6, "{c:?}");
    }
    Ok(())
}

#[test]
fn translation_equivariance() -> Result<()> {
    // A 2x2x3 blob of arbitrary logits; moving it by (dz, dy, dx) cells moves the expectation
    // by (dx / W, dy / H, dz / D).
    let blob: Vec<((usize, usize, usize), f32)> = (0..12)
        .map(|i| {
            (
                (i / 6, (i / 3) % 2, i % 3),
                ((i * 37 % 11) as f32) * 0.3 - 1.0,
            )
        })
        .collect();
    let at = |o: (usize, usize, usize)| -> Vec<((usize, usize, usize), f32)> {
        blob.iter()
            .map(|&((d, h, w), l)| ((d + o.0, h + o.1, w + o.2), l))
            .collect()
    };
    let base = soft_argmax(
        &Tensor::from_vec(volume(&at((0, 0, 0))), (1, 1, D * H * W), &Device::Cpu)?,
        D,
        H,
        W,
    )?
    .flatten_all()?
    .to_vec1::<f32>()?;
    for shift in [(1, 2, 3), (2, 0, 1), (0, 3, 0)] {
        let moved = soft_argmax(
            &Tensor::from_vec(volume(&at(shift)), (1, 1, D * H * W), &Device::Cpu)?,
            D,
            H,
            W,
        )?
        .flatten_all()?
        .to_vec1::<f32>()?;
        let want = [
            base[0] + shift.2 as f32 / W as f32,
            base[1] + shift.1 as f32 / H as f32,
            base[2] + shift.0 as f32 / D as f32,
        ];
        for k in 0..3 {
            assert!(
                (moved[k] - want[k]).abs() < 1e-6,
                "shift {shift:?}: {moved:?} vs {want:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn large_volume_is_stable() -> Result<()> {
    // 64^3 cells with large logits (no overflow: the maximum is subtracted first).
    let n = 64 * 64 * 64;
    let mut v = vec![0f32; n];
    v[(10 * 64 + 20) * 64 + 30] = 80.0;
    let c = soft_argmax(&Tensor::from_vec(v, (1, 1, n), &Device::Cpu)?, 64, 64, 64)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let want = [30.0 / 64.0 - 0.5, 20.0 / 64.0 - 0.5, 10.0 / 64.0 - 0.5];
    for k in 0..3 {
        assert!((c[k] - want[k]).abs() < 1e-5, "{c:?}");
    }
    Ok(())
}
