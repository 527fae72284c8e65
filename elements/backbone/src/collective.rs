//! Collective operations for data-parallel training: the [`Communicator`] trait (implemented in
//! `ikol-train`: worker threads on the CPU, NCCL across GPUs), a differentiable all-reduce, and
//! the thread's data-parallel group.
//!
//! What makes N workers with a batch of B each compute what one worker with a batch of N B
//! computes, besides averaging gradients: every statistic over the batch is one of the global
//! batch. In training mode every [`crate::layers::BatchNorm2d`] normalises with the global
//! batch's statistics (synchronised BatchNorm: sums all-reduced over the workers; its running
//! statistics then move identically on every worker), and a loss that divides by a count of
//! the batch (valid joints, labelled samples) divides by the global count ([`global_count`]).
//! [`data_parallel`] sets the group for the calling thread (the trainer holds the guard for a
//! step's forward and backward pass), so the networks and losses need no communicator argument.

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
    reduced_with_value(comm, x, value)
}

/// [`all_reduce_sum`] of `x` whose value the caller has already reduced (`value` = the sum
/// over the ranks of `x`, computed however is most exact, e.g. in f64): the forward pass takes
/// `value` as is, the backward pass is the all-reduce of the gradient.
pub fn reduced_with_value(
    comm: &Arc<dyn Communicator>,
    x: &Tensor,
    value: Tensor,
) -> Result<Tensor> {
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
    /// A fresh contiguous copy of the value from offset 0 (`try_clone` of a view would copy
    /// its whole buffer, offset and all).
    fn storage(&self) -> Result<(Storage, Shape)> {
        let fresh = self.value.affine(1.0, 0.0)?;
        let (s, l) = fresh.storage_and_layout();
        Ok((s.try_clone(l)?, fresh.shape().clone()))
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
    static GROUP: RefCell<Option<Arc<dyn Communicator>>> = const { RefCell::new(None) };
}

/// `comm` is this thread's data-parallel group until the guard is dropped (the previous setting
/// comes back then): BatchNorm is synchronised and [`global_count`] counts the global batch.
/// Hold it over the forward and the backward pass of a training step.
pub fn data_parallel(comm: Arc<dyn Communicator>) -> DataParallel {
    let previous = GROUP.with(|g| g.borrow_mut().replace(comm));
    DataParallel { previous }
}

/// Guard of [`data_parallel`].
#[derive(Debug)]
#[must_use = "the group is set only while the guard lives"]
pub struct DataParallel {
    previous: Option<Arc<dyn Communicator>>,
}

impl Drop for DataParallel {
    fn drop(&mut self) {
        let previous = self.previous.take();
        GROUP.with(|g| *g.borrow_mut() = previous);
    }
}

/// This thread's data-parallel group, if any.
pub fn current_group() -> Option<Arc<dyn Communicator>> {
    GROUP.with(|g| g.borrow().clone())
}

/// A count over this worker's shard of the batch (valid joints, labelled samples: a loss's
/// denominator, no gradient) as the count over the global batch divided by the number of
/// workers: with it a worker's `sum / count` is its share of the global batch's mean, and the
/// workers' average (gradient averaging) is that mean. Without a group: `count` itself.
pub fn global_count(count: &Tensor) -> Result<Tensor> {
    match current_group() {
        Some(comm) if comm.world_size() > 1 => {
            comm.all_reduce_sum(&count.detach().contiguous()?)? / comm.world_size() as f64
        }
        _ => Ok(count.detach()),
    }
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
