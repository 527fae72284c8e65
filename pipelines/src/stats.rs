//! `ikol run --stats`: per element, the processing time of each buffer (from its sink pad to its
//! src pad on the same streaming thread: what the element itself spent, not what downstream
//! did), and the fill of every `queue`; a table at the end of the run.
//!
//! From `gst-launch-1.0` the same per-element figures come from GStreamer's own tracer:
//! `GST_TRACERS="latency(flags=element)" GST_DEBUG="GST_TRACER:7" gst-launch-1.0 ...` (one
//! `element-latency` line per buffer and element, in nanoseconds).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gst::prelude::*;

/// Timing of one element.
#[derive(Debug, Default)]
struct ElementTimes {
    /// The buffer being processed: when it entered, on which thread.
    entered: Option<(Instant, std::thread::ThreadId)>,
    /// Seconds per buffer.
    samples: Vec<f64>,
}

/// Fill samples of one queue.
#[derive(Debug, Default, Clone)]
struct QueueFill {
    sum: f64,
    n: u64,
    max: u32,
    capacity: u32,
}

/// What `--stats` collects during one run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Element name -> timings, in pipeline order of first sight.
    times: Arc<Mutex<Vec<(String, ElementTimes)>>>,
    queues: Arc<Mutex<HashMap<String, QueueFill>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stats {
    /// Probes every element with one always-sink and one always-src pad (filters, transforms,
    /// decoders) of `pipeline`.
    pub fn attach(&self, pipeline: &gst::Pipeline) {
        let mut elements: Vec<gst::Element> = pipeline
            .iterate_sorted()
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        // iterate_sorted goes sinks first.
        elements.reverse();
        for e in elements {
            if e.is::<gst::Bin>() || e.factory().is_some_and(|f| f.name() == "queue") {
                continue;
            }
            let (Some(sink), Some(src)) = (e.static_pad("sink"), e.static_pad("src")) else {
                continue;
            };
            let idx = {
                let mut t = lock(&self.times);
                t.push((e.name().to_string(), ElementTimes::default()));
                t.len() - 1
            };
            let times = self.times.clone();
            sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                if let Some((_, t)) = lock(&times).get_mut(idx) {
                    t.entered = Some((Instant::now(), std::thread::current().id()));
                }
                gst::PadProbeReturn::Ok
            });
            let times = self.times.clone();
            src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                if let Some((_, t)) = lock(&times).get_mut(idx)
                    && let Some((at, thread)) = t.entered.take()
                    && thread == std::thread::current().id()
                {
                    t.samples.push(at.elapsed().as_secs_f64());
                }
                gst::PadProbeReturn::Ok
            });
        }
    }

    /// Samples the fill of every queue (called a few times a second).
    pub fn sample_queues(&self, pipeline: &gst::Pipeline) {
        let mut q = lock(&self.queues);
        for e in pipeline
            .iterate_recurse()
            .into_iter()
            .filter_map(Result::ok)
        {
            if e.factory().is_none_or(|f| f.name() != "queue") {
                continue;
            }
            let level = e.property::<u32>("current-level-buffers");
            let f = q.entry(e.name().to_string()).or_default();
            f.sum += f64::from(level);
            f.n += 1;
            f.max = f.max.max(level);
            f.capacity = e.property::<u32>("max-size-buffers");
        }
    }

    /// The table: per element, buffers, mean and p95 milliseconds, and the share of the wall
    /// time it spent (threads run in parallel, so shares may add up to more than 100%).
    pub fn table(&self, wall_s: f64) -> String {
        let mut s = String::from(
            "element                 buffers   mean ms    p95 ms   share of wall time\n",
        );
        for (name, t) in lock(&self.times).iter() {
            if t.samples.is_empty() {
                continue;
            }
            let mut v = t.samples.clone();
            v.sort_by(f64::total_cmp);
            let total: f64 = v.iter().sum();
            let mean = total / v.len() as f64;
            let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1];
            let _ = writeln!(
                s,
                "{name:<22} {:>8} {:>9.2} {:>9.2} {:>8.1}%",
                v.len(),
                1e3 * mean,
                1e3 * p95,
                100.0 * total / wall_s.max(1e-9)
            );
        }
        let q = lock(&self.queues);
        let mut names: Vec<&String> = q.keys().collect();
        names.sort();
        for n in names {
            let f = &q[n];
            let _ = writeln!(
                s,
                "{n:<22} fill: mean {:.1}, max {} of {} buffers",
                f.sum / f.n.max(1) as f64,
                f.max,
                f.capacity
            );
        }
        s
    }
}
