//! The NCCL communicator (feature `nccl`): one process per GPU, all-reduce through cudarc's NCCL
//! bindings on the stream candle computes on, so a reduction is ordered after the kernels that
//! produced its input without a host synchronisation.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::nccl::{Comm, Id, ReduceOp};
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, DType, Device, Result, Storage, Tensor};
use ikol_backbone::collective::Communicator;

use super::launch::{Launch, share_from_rank0};

/// An NCCL communicator bound to one GPU (the launch's `LOCAL_RANK`).
#[derive(Debug)]
pub struct NcclComm {
    comm: Mutex<SendComm>,
    rank: usize,
    world: usize,
}

#[derive(Debug)]
struct SendComm(Comm);

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not run
// concurrently (NCCL's thread-safety rules); the Mutex around it serialises every call.
#[allow(unsafe_code)]
unsafe impl Send for SendComm {}

impl NcclComm {
    /// Joins the group of the launch: rank 0 makes NCCL's unique id and hands it out over the
    /// TCP rendezvous (see [`super::launch`]), then every rank initialises its communicator on
    /// `device`'s stream.
    pub fn join(launch: &Launch, device: &Device) -> anyhow::Result<Self> {
        let Device::Cuda(dev) = device else {
            anyhow::bail!("NCCL needs a CUDA device, got {device:?} (pass --device cuda)");
        };
        let id = if launch.rank == 0 {
            Some(Id::new().map_err(|e| anyhow::anyhow!("ncclGetUniqueId: {e:?}"))?)
        } else {
            None
        };
        let bytes: Option<Vec<u8>> = id.map(|i| i.internal().iter().map(|&c| c as u8).collect());
        let shared = share_from_rank0(launch, bytes.as_deref(), Duration::from_secs(300))?;
        let mut internal = [0 as std::ffi::c_char; 128];
        anyhow::ensure!(
            shared.len() == internal.len(),
            "rendezvous: NCCL id of {} bytes, expected 128",
            shared.len()
        );
        for (d, s) in internal.iter_mut().zip(&shared) {
            *d = *s as std::ffi::c_char;
        }
        let comm = Comm::from_rank(
            dev.cuda_stream(),
            launch.rank,
            launch.world_size,
            Id::uninit(internal),
        )
        .map_err(|e| anyhow::anyhow!("ncclCommInitRank (rank {}): {e:?}", launch.rank))
        .context("joining the NCCL group")?;
        Ok(Self {
            comm: Mutex::new(SendComm(comm)),
            rank: launch.rank,
            world: launch.world_size,
        })
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.contiguous()?;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(cs) = &*storage else {
            candle_core::bail!("NCCL all-reduce of a tensor on {:?}", t.device())
        };
        let comm = self
            .comm
            .lock()
            .map_err(|_| candle_core::Error::Msg("NCCL communicator lock poisoned".into()))?;
        let n = layout.shape().elem_count();
        let off = layout.start_offset();
        let dev = cs.device().clone();
        let nccl = |e| candle_core::Error::Msg(format!("ncclAllReduce: {e:?}"));
        let out = match t.dtype() {
            DType::F32 => {
                let src = cs.as_cuda_slice::<f32>()?.slice(off..off + n);
                let mut dst = dev.alloc_zeros::<f32>(n)?;
                comm.0
                    .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                    .map_err(nccl)?;
                CudaStorage::wrap_cuda_slice(dst, dev)
            }
            DType::F64 => {
                let src = cs.as_cuda_slice::<f64>()?.slice(off..off + n);
                let mut dst = dev.alloc_zeros::<f64>(n)?;
                comm.0
                    .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                    .map_err(nccl)?;
                CudaStorage::wrap_cuda_slice(dst, dev)
            }
            other => candle_core::bail!("NCCL all-reduce of {other:?} is not supported"),
        };
        Ok(Tensor::from_storage(
            Storage::Cuda(out),
            t.shape().clone(),
            BackpropOp::none(),
            false,
        ))
    }
}
