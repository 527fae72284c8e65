//! Data-parallel training: N workers, each with a replica of the network and a shard of every
//! global batch, kept identical by all-reducing.
//!
//! What a step does with a [`Communicator`] of N ranks (the trainer, `train.rs`):
//! * the global batch is `batch_size x N` samples (the config's `batch_size` is per worker, as
//!   with `torchrun`); rank r takes positions `[r B, (r + 1) B)` of the global batch's index list,
//!   so N workers see exactly the samples (and augmentations) one worker with batch N B sees;
//! * BatchNorm uses the global batch's statistics ([`ikol_backbone::collective`]);
//! * gradients are summed in buckets of at most [`BUCKET_BYTES`] (concatenated in their own
//!   type, one all-reduce each) and divided by N: the mean of the workers' mean losses is the
//!   global batch's mean;
//! * a non-finite loss or gradient on any rank skips the step on every rank;
//! * rank 0 alone evaluates, writes checkpoints, `metrics.csv` and `eval.csv`.
//!
//! Implementations: [`threads::ThreadComm`] (worker threads in one process, on the CPU; what
//! `make test` checks against one worker with the larger batch) and, with the `nccl` feature,
//! `nccl::NcclComm` (one process per GPU, launched by `torchrun` or `srun`, see [`launch`]).

pub mod launch;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod threads;

use candle_core::{DType, Result, Tensor};
pub use ikol_backbone::collective::Communicator;

/// Largest gradient bucket (PyTorch DDP's default `bucket_cap_mb`): few collectives, no copy of
/// the whole model at once.
pub const BUCKET_BYTES: usize = 25 << 20;

/// Replaces every gradient by its mean over the ranks. `None` entries (parameters outside the
/// graph) are the same on every rank (same network, same graph) and stay `None`.
pub fn average_gradients(
    comm: &dyn Communicator,
    grads: &mut [Option<Tensor>],
    bucket_bytes: usize,
) -> Result<()> {
    let world = comm.world_size();
    if world == 1 {
        return Ok(());
    }
    let present: Vec<usize> = (0..grads.len()).filter(|&i| grads[i].is_some()).collect();
    let mut start = 0;
    while start < present.len() {
        // A bucket: consecutive gradients up to the byte cap (at least one).
        let mut end = start;
        let mut bytes = 0;
        while end < present.len() {
            let g = grads[present[end]]
                .as_ref()
                .map_or(0, |g| g.elem_count() * g.dtype().size_in_bytes());
            if end > start && bytes + g > bucket_bytes {
                break;
            }
            bytes += g;
            end += 1;
        }
        // In the gradients' own type (the run's precision: an f64 run reduces in f64).
        let dtype = grads[present[start]]
            .as_ref()
            .map_or(DType::F32, Tensor::dtype);
        let parts: Vec<Tensor> = present[start..end]
            .iter()
            .filter_map(|&i| grads[i].as_ref())
            .map(|g| g.to_dtype(dtype)?.flatten_all())
            .collect::<Result<_>>()?;
        let flat = Tensor::cat(&parts, 0)?;
        let mean = (comm.all_reduce_sum(&flat)? / world as f64)?;
        let mut off = 0;
        for &i in &present[start..end] {
            if let Some(g) = grads[i].as_mut() {
                let n = g.elem_count();
                *g = mean
                    .narrow(0, off, n)?
                    .reshape(g.shape())?
                    .to_dtype(g.dtype())?;
                off += n;
            }
        }
        start = end;
    }
    Ok(())
}

/// Rank 0's `t` on every rank (an all-reduce of rank 0's value and the others' zeros: exact).
pub fn broadcast_from_rank0(comm: &dyn Communicator, t: &Tensor) -> Result<Tensor> {
    if comm.world_size() == 1 {
        return Ok(t.clone());
    }
    let mine = if comm.rank() == 0 {
        t.contiguous()?
    } else {
        t.zeros_like()?
    };
    comm.all_reduce_sum(&mine)
}

/// The mean of `values` over the ranks (f64 end to end); a non-finite value on any rank makes
/// the mean non-finite everywhere, which is how every rank agrees to skip a step.
pub fn mean_over_ranks(
    comm: &dyn Communicator,
    values: &[f64],
    device: &candle_core::Device,
) -> Result<Vec<f64>> {
    if comm.world_size() == 1 {
        return Ok(values.to_vec());
    }
    let t = Tensor::new(values, device)?;
    let sum = comm.all_reduce_sum(&t)?.to_vec1::<f64>()?;
    Ok(sum.iter().map(|s| s / comm.world_size() as f64).collect())
}
