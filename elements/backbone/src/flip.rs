//! Test-time flip (HybrIK reference 4.4): run the network on the horizontally mirrored crop,
//! map its outputs back (uvd: u -> -u, upstream's `shift=True`; phi: sin -> -sin; leaf
//! quaternions: y, z -> -y, -z; left/right pairs swapped) and average uvd, phi, leaf and beta
//! with the plain pass.

use candle_core::{Device, Result, Tensor};

use crate::config::Variant;
use crate::net::{NUM_LEAVES, NUM_TWISTS, NetOutput};
use ikol_types::joints::{LEAF_FLIP_PAIRS, QUAT_FLIP_SIGNS, TWIST_FLIP_PAIRS, TWIST_FLIP_SIGNS};

fn permutation(
    n: usize,
    pairs: impl IntoIterator<Item = (usize, usize)>,
    dev: &Device,
) -> Result<Tensor> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for (a, b) in pairs {
        p.swap(a, b);
    }
    Tensor::from_vec(p, n, dev)
}

fn signs(s: &[f32], like: &Tensor) -> Result<Tensor> {
    Tensor::new(s, like.device())?.to_dtype(like.dtype())
}

/// Mirrors images `[N, C, H, W]` left-right.
pub fn mirror_images(x: &Tensor) -> Result<Tensor> {
    let w = x.dim(3)?;
    let rev: Vec<u32> = (0..w as u32).rev().collect();
    x.index_select(&Tensor::from_vec(rev, w, x.device())?, 3)
}

/// Maps the outputs of a pass on mirrored crops back to the original crops.
pub fn unflip_output(o: &NetOutput, variant: Variant) -> Result<NetOutput> {
    let dev = o.uvd.device();
    let j = o.uvd.dim(1)?;
    let uvd = o
        .uvd
        .index_select(
            &permutation(j, variant.flip_pairs().iter().copied(), dev)?,
            1,
        )?
        .broadcast_mul(&signs(&[-1.0, 1.0, 1.0], &o.uvd)?)?;
    let phi = o
        .phi
        .index_select(&permutation(NUM_TWISTS, TWIST_FLIP_PAIRS, dev)?, 1)?
        .broadcast_mul(&signs(&TWIST_FLIP_SIGNS, &o.phi)?)?;
    let leaf = match &o.leaf {
        Some(l) => Some(
            l.index_select(&permutation(NUM_LEAVES, LEAF_FLIP_PAIRS, dev)?, 1)?
                .broadcast_mul(&signs(&QUAT_FLIP_SIGNS, l)?)?,
        ),
        None => None,
    };
    Ok(NetOutput {
        uvd,
        phi,
        beta: o.beta.clone(),
        delta_beta: o.delta_beta.clone(),
        leaf,
    })
}

/// Averages two outputs (uvd, phi, beta, delta beta, leaf).
pub fn average(a: &NetOutput, b: &NetOutput) -> Result<NetOutput> {
    let avg = |x: &Tensor, y: &Tensor| (x + y)? * 0.5;
    Ok(NetOutput {
        uvd: avg(&a.uvd, &b.uvd)?,
        phi: avg(&a.phi, &b.phi)?,
        beta: avg(&a.beta, &b.beta)?,
        delta_beta: avg(&a.delta_beta, &b.delta_beta)?,
        leaf: match (&a.leaf, &b.leaf) {
            (Some(x), Some(y)) => Some(avg(x, y)?),
            _ => None,
        },
    })
}

/// Splits a batch `[2N, ...]` output into its first and second halves.
pub fn split_halves(o: &NetOutput) -> Result<(NetOutput, NetOutput)> {
    let n2 = o.uvd.dim(0)?;
    let n = n2 / 2;
    let half = |t: &Tensor, start: usize| t.narrow(0, start, n);
    let part = |start: usize| -> Result<NetOutput> {
        Ok(NetOutput {
            uvd: half(&o.uvd, start)?,
            phi: half(&o.phi, start)?,
            beta: half(&o.beta, start)?,
            delta_beta: half(&o.delta_beta, start)?,
            leaf: o.leaf.as_ref().map(|l| half(l, start)).transpose()?,
        })
    };
    Ok((part(0)?, part(n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflip_is_an_involution_and_swaps_pairs() {
        let dev = Device::Cpu;
        let uvd = Tensor::arange(0f32, 72.0, &dev)
            .unwrap()
            .reshape((1, 24, 3))
            .unwrap();
        let phi = Tensor::arange(0f32, 46.0, &dev)
            .unwrap()
            .reshape((1, 23, 2))
            .unwrap();
        let leaf = Tensor::arange(0f32, 20.0, &dev)
            .unwrap()
            .reshape((1, 5, 4))
            .unwrap();
        let beta = Tensor::ones((1, 10), candle_core::DType::F32, &dev).unwrap();
        let o = NetOutput {
            uvd,
            phi,
            beta: beta.clone(),
            delta_beta: beta,
            leaf: Some(leaf),
        };
        let f = unflip_output(&o, Variant::Ikol24).unwrap();
        let u = f.uvd.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        // Joint 1 takes joint 2's values with u negated; joint 0 keeps its own.
        assert_eq!(u[1], vec![-6.0, 7.0, 8.0]);
        assert_eq!(u[0], vec![-0.0, 1.0, 2.0]);
        let p = f.phi.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        // Twist index 0 (joint 1) <-> index 1 (joint 2); sin negated.
        assert_eq!(p[0], vec![2.0, -3.0]);
        assert_eq!(p[2], vec![4.0, -5.0]);
        let l = f
            .leaf
            .as_ref()
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(l[0], vec![4.0, 5.0, -6.0, -7.0]);
        assert_eq!(l[2], vec![8.0, 9.0, -10.0, -11.0]);
        let back = unflip_output(&f, Variant::Ikol24).unwrap();
        assert_eq!(
            back.uvd.to_vec3::<f32>().unwrap(),
            o.uvd.to_vec3::<f32>().unwrap()
        );
        let img = Tensor::arange(0f32, 6.0, &dev)
            .unwrap()
            .reshape((1, 1, 2, 3))
            .unwrap();
        let m = mirror_images(&img)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap();
        assert_eq!(
            m.to_vec2::<f32>().unwrap(),
            vec![vec![2.0, 1.0, 0.0], vec![5.0, 4.0, 3.0]]
        );
    }
}
