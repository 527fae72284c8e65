//! Collective operations for data-parallel training: the [`Communicator`] trait (implemented in
//! `ikol-train`: worker threads on the CPU, NCCL across GPUs), a differentiable all-reduce, and
//! synchronised BatchNorm.
//!
//! Synchronised BatchNorm is what makes N workers with a batch of B each train the same weights
//! as one worker with a batch of N B: in training mode every [`crate::layers::BatchNorm2d`]
//! normalises with the statistics of the whole global batch (sums all-reduced over the workers),
//! and its running statistics move identically on every worker. It is switched on for the
//! calling thread by [`sync_batch_norm`] (the trainer holds the guard for a step's forward and
//! backward pass), so the networks' constructors need no communicator.

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};

/// A group of workers that reduce tensors together.
///
/// Every method is a collective: each rank calls it in the same order, with tensors of the same
/// shape and dtype. The result is identical, bit for bit, on every rank (implementations sum in a
/// fixed order), so replicated weights stay replicated.
pub trait Communicator: Send + Sync + std::fmt::Debug {
    /// This worker's index, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of workers.
    fn world_size(&self) -> usize;
    /// The element-wise sum of `t` over all ranks, on `t`'s device. Not differentiable (see
    /// [`all_reduce_sum`] for that).
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
}

/// `sum_k x_k` over the ranks as a differentiable operation. Every rank's loss depends on the
/// sum, so the gradient reaching rank r's `x_r` is the sum over ranks of the gradients of the sum:
/// the backward pass is the same all-reduce, applied to the incoming gradient.
pub fn all_reduce_sum(comm: &Arc<dyn Communicator>, x: &Tensor) -> Result<Tensor> {
    let value = comm.all_reduce_sum(&x.detach().contiguous()?)?;
    // The op only attaches the backward pass: its forward returns the reduced value.
    x.apply_op1(Reduced {
        value,
        comm: comm.clone(),
    })
}

struct Reduced {
    value: Tensor,
    comm: Arc<dyn Communicator>,
}

impl Reduced {
    fn storage(&self) -> Result<(Storage, Shape)> {
        let (s, l) = self.value.storage_and_layout();
        Ok((s.try_clone(l)?, self.value.shape().clone()))
    }
}

impl CustomOp1 for Reduced {
    fn name(&self) -> &'static str {
        "all-reduce-sum"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        match self.storage()? {
            (Storage::Cpu(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("all-reduce: the reduced value left the CPU"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        match self.storage()? {
            (Storage::Cuda(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("all-reduce: the reduced value left the GPU"),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.comm.all_reduce_sum(&grad.contiguous()?)?))
    }
}

thread_local! {
    static BATCH_NORM_GROUP: RefCell<Option<Arc<dyn Communicator>>> = const { RefCell::new(None) };
}

/// Synchronised BatchNorm on this thread until the guard is dropped (the previous setting comes
/// back then). Hold it over the forward and the backward pass of a training step.
pub fn sync_batch_norm(comm: Arc<dyn Communicator>) -> SyncBatchNorm {
    let previous = BATCH_NORM_GROUP.with(|g| g.borrow_mut().replace(comm));
    SyncBatchNorm { previous }
}

/// Guard of [`sync_batch_norm`].
#[derive(Debug)]
#[must_use = "BatchNorm is synchronised only while the guard lives"]
pub struct SyncBatchNorm {
    previous: Option<Arc<dyn Communicator>>,
}

impl Drop for SyncBatchNorm {
    fn drop(&mut self) {
        let previous = self.previous.take();
        BATCH_NORM_GROUP.with(|g| *g.borrow_mut() = previous);
    }
}

/// The group BatchNorm synchronises over on this thread, if any.
pub(crate) fn batch_norm_group() -> Option<Arc<dyn Communicator>> {
    BATCH_NORM_GROUP.with(|g| g.borrow().clone())
}

/// A group of one: what a single worker's sums are. For tests and for code that takes a
/// communicator unconditionally.
#[derive(Debug, Default, Clone, Copy)]
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
}
