//! The in-process communicator: N worker threads of one process, reducing through shared memory.
//! It runs the same sharding, synchronised BatchNorm and gradient averaging as NCCL across GPUs,
//! so `make test` can prove on a CPU that N workers train what one worker with N times the batch
//! trains.

use std::sync::{Arc, Condvar, Mutex};

use candle_core::{DType, Device, Result, Tensor};
use ikol_backbone::collective::Communicator;

/// A rank's contribution: values as f64 (exact for f32 inputs), shape, dtype.
type Contribution = (Vec<f64>, Vec<usize>, DType);

/// One round of an all-reduce.
#[derive(Debug)]
struct Round {
    arrived: usize,
    left: usize,
    slots: Vec<Option<Contribution>>,
    result: Option<std::result::Result<Arc<Vec<f64>>, String>>,
}

#[derive(Debug)]
struct Shared {
    world: usize,
    round: Mutex<(Round, Option<String>)>,
    cv: Condvar,
}

/// A rank of an in-process group made by [`ThreadGroup::new`].
#[derive(Debug, Clone)]
pub struct ThreadComm {
    rank: usize,
    shared: Arc<Shared>,
}

/// Builds the ranks of an in-process group.
#[derive(Debug)]
pub struct ThreadGroup;

impl ThreadGroup {
    /// `world` communicators, one per worker thread (rank i is element i).
    #[allow(clippy::new_ret_no_self)] // a group is its ranks
    pub fn new(world: usize) -> Vec<ThreadComm> {
        let shared = Arc::new(Shared {
            world,
            round: Mutex::new((
                Round {
                    arrived: 0,
                    left: 0,
                    slots: vec![None; world],
                    result: None,
                },
                None,
            )),
            cv: Condvar::new(),
        });
        (0..world)
            .map(|rank| ThreadComm {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl ThreadComm {
    /// Ends the group: every rank waiting at (or later calling) a collective gets an error naming
    /// `why`. A worker calls this when it fails, so the others do not wait for it.
    pub fn abort(&self, why: &str) {
        if let Ok(mut g) = self.shared.round.lock() {
            g.1.get_or_insert_with(|| format!("rank {}: {why}", self.rank));
        }
        self.shared.cv.notify_all();
    }

    /// A guard that aborts the group if this thread panics while it lives (hold it for the
    /// worker's whole run: the other ranks then get an error instead of waiting for ever).
    pub fn abort_on_panic(&self) -> AbortOnPanic<'_> {
        AbortOnPanic(self)
    }

    fn reduce(&self, data: Vec<f64>, dims: Vec<usize>, dtype: DType) -> Result<Arc<Vec<f64>>> {
        let sh = &*self.shared;
        let err = |m: String| candle_core::Error::Msg(format!("all-reduce: {m}"));
        let mut g = sh
            .round
            .lock()
            .map_err(|_| err("group lock poisoned".into()))?;
        // Wait until the previous round has been read by everybody.
        while g.0.result.is_some() && g.1.is_none() {
            g = wait(sh, g)?;
        }
        if let Some(why) = &g.1 {
            return Err(err(format!("group aborted ({why})")));
        }
        g.0.slots[self.rank] = Some((data, dims, dtype));
        g.0.arrived += 1;
        if g.0.arrived == sh.world {
            g.0.result = Some(sum_in_rank_order(&mut g.0.slots));
            g.0.arrived = 0;
            sh.cv.notify_all();
        } else {
            while g.0.result.is_none() && g.1.is_none() {
                g = wait(sh, g)?;
            }
        }
        if let Some(why) = &g.1 {
            return Err(err(format!("group aborted ({why})")));
        }
        let out = g.0.result.clone().ok_or_else(|| err("no result".into()))?;
        g.0.left += 1;
        if g.0.left == sh.world {
            g.0.left = 0;
            g.0.result = None;
            sh.cv.notify_all();
        }
        out.map_err(err)
    }
}

/// Guard of [`ThreadComm::abort_on_panic`].
#[derive(Debug)]
pub struct AbortOnPanic<'a>(&'a ThreadComm);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort("panicked");
        }
    }
}

type Guard<'a> = std::sync::MutexGuard<'a, (Round, Option<String>)>;

/// Waits for the next change of the round. No timeout: a rank may wait as long as rank 0
/// evaluates or writes a checkpoint; a worker that fails or panics aborts the group instead
/// ([`ThreadComm::abort`], [`ThreadComm::abort_on_panic`]).
fn wait<'a>(sh: &'a Shared, g: Guard<'a>) -> Result<Guard<'a>> {
    sh.cv
        .wait(g)
        .map_err(|_| candle_core::Error::Msg("all-reduce: group lock poisoned".into()))
}

/// The element-wise sum in rank order (the same order on every rank: bit-identical results),
/// or why the contributions do not match.
fn sum_in_rank_order(
    slots: &mut [Option<Contribution>],
) -> std::result::Result<Arc<Vec<f64>>, String> {
    let taken: Vec<_> = slots.iter_mut().map(Option::take).collect();
    let mut it = taken.into_iter().flatten();
    let (mut acc, dims, dtype) = it.next().ok_or("no contribution")?;
    for (r, (v, d, t)) in it.enumerate() {
        if d != dims || t != dtype {
            return Err(format!(
                "rank {} sent {d:?} {t:?}, rank 0 sent {dims:?} {dtype:?} (collectives out of order)",
                r + 1
            ));
        }
        for (a, b) in acc.iter_mut().zip(v) {
            *a += b;
        }
    }
    Ok(Arc::new(acc))
}

impl Communicator for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let dtype = t.dtype();
        let dims = t.dims().to_vec();
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let sum = self.reduce(data, dims.clone(), dtype)?;
        Tensor::from_slice(sum.as_slice(), dims, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(t.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_equal_on_every_rank_and_rounds_do_not_mix() -> anyhow::Result<()> {
        let comms = ThreadGroup::new(3);
        let handles: Vec<_> = comms
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || -> Result<Vec<Vec<f32>>> {
                    let r = c.rank() as f32;
                    (0..50)
                        .map(|round| {
                            let t = Tensor::new(&[r, 10.0 * r + round as f32], &Device::Cpu)?;
                            c.all_reduce_sum(&t)?.to_vec1::<f32>()
                        })
                        .collect()
                })
            })
            .collect();
        for h in handles {
            let got = h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
            for (round, v) in got.iter().enumerate() {
                // ranks 0, 1, 2: sum r = 3, sum 10 r + round = 30 + 3 round
                assert_eq!(v, &vec![3.0, 30.0 + 3.0 * round as f32]);
            }
        }
        Ok(())
    }

    #[test]
    fn mismatched_shapes_and_aborts_are_errors_not_hangs() -> anyhow::Result<()> {
        let comms = ThreadGroup::new(2);
        let hs: Vec<_> = comms
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || {
                    let n = 2 + c.rank();
                    c.all_reduce_sum(&Tensor::zeros(n, DType::F32, &Device::Cpu)?)
                })
            })
            .collect();
        for h in hs {
            let e = h.join().map_err(|_| anyhow::anyhow!("panicked"))?;
            let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("out of order"), "{msg}");
        }
        // A rank that panics ends the group for the others.
        let comms = ThreadGroup::new(2);
        let c1 = comms[1].clone();
        let h = std::thread::spawn(move || {
            let _guard = c1.abort_on_panic();
            panic!("a worker fails");
        });
        assert!(h.join().is_err());
        let e = comms[0].all_reduce_sum(&Tensor::zeros(2, DType::F32, &Device::Cpu)?);
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("rank 1: panicked"), "{msg}");
        let comms = ThreadGroup::new(2);
        comms[1].abort("data file missing");
        let e = comms[0].all_reduce_sum(&Tensor::zeros(2, DType::F32, &Device::Cpu)?);
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("rank 1: data file missing"), "{msg}");
        Ok(())
    }
}
