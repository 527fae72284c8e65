#!/usr/bin/env python3
"""Reference outputs of the two BlazePose TensorFlow Lite models for the Rust parity test.

Runs `pose_detection.tflite` and `pose_landmark_full.tflite` (from the mediapipe 0.10.21 wheel,
fetched by fetch_mediapipe_models.sh) with Google's own TensorFlow Lite runtime (the
`ai-edge-litert` package, the runtime mediapipe embeds; the mediapipe wheel itself exposes no
stand-alone interpreter) on fixed deterministic inputs, and writes a small JSON with, per model,
input and output: shape, sum, sum of |x|, min, max and a sample of values (all of them for small
outputs, an evenly strided subset for large ones). The Rust test rebuilds the same inputs from
the same formulas (elements/detect/tests/tflite.rs) and compares.

Also prints the time per run of each model with the runtime's default CPU path (XNNPACK, as in
mediapipe) and with its built-in kernels, on 1 and 2 threads.

    python3 -m venv ~/.cache/ikol/mpenv && ~/.cache/ikol/mpenv/bin/pip install ai-edge-litert==2.3.0 numpy
    ~/.cache/ikol/mpenv/bin/python elements/detect/tools/gen_tflite_fixture.py \
        [--models ~/.cache/ikol/models] [--out elements/detect/tests/data/tflite_expected.json]
        [--time-only]   (only the timings, nothing written: to set beside `blazepose-bench`'s
                         "model" medians in the same session)

Inputs (float32, NHWC, h/w/c zero-based):
  smooth: v = sin(0.031 h + 0.017 w (c + 1) + 0.9 c) * cos(0.023 w - 0.011 h + 0.5 c)  in [-1, 1]
  noise:  u = LCG over (h, w, c) in row-major order: s <- (1103515245 s + 12345) mod 2^31,
          starting from s = 20261121, u = s / 2^31 in [0, 1); v = 2 u - 1
  pose_detection takes v (mediapipe feeds it [-1, 1]), pose_landmark_full takes (v + 1) / 2
  ([0, 1]), as the graphs' ImageToTensorCalculator ranges in mediapipe/modules/pose_*/ say.
"""

import argparse
import json
import os
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

MODELS = {
    "pose_detection": {"range": (-1.0, 1.0)},
    "pose_landmark_full": {"range": (0.0, 1.0)},
}
SAMPLE = 1000  # values kept per large output
FULL_UP_TO = 3000  # outputs up to this size are stored whole


def smooth(shape):
    _, h, w, c = shape
    hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    hh, ww, cc = (a.astype(np.float64) for a in (hh, ww, cc))
    v = np.sin(0.031 * hh + 0.017 * ww * (cc + 1) + 0.9 * cc) * np.cos(0.023 * ww - 0.011 * hh + 0.5 * cc)
    return v[None]


def noise(shape):
    n = int(np.prod(shape))
    out = np.empty(n, dtype=np.float64)
    s = 20261121
    for i in range(n):
        s = (1103515245 * s + 12345) % (1 << 31)
        out[i] = s / float(1 << 31)
    return (2.0 * out - 1.0).reshape(shape)


def to_range(v, lo, hi):
    return (lo + (v + 1.0) * 0.5 * (hi - lo)).astype(np.float32)


def summary(a):
    flat = a.reshape(-1).astype(np.float64)
    n = flat.size
    if n <= FULL_UP_TO:
        idx = list(range(n))
    else:
        stride = n // SAMPLE
        idx = list(range(0, stride * SAMPLE, stride))
    return {
        "shape": [int(d) for d in a.shape],
        "sum": float(flat.sum()),
        "abs_sum": float(np.abs(flat).sum()),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "stride": 1 if n <= FULL_UP_TO else n // SAMPLE,
        "values": [float(f"{flat[i]:.7g}") for i in idx],
    }


def make(path, resolver, threads):
    it = Interpreter(model_path=path, experimental_op_resolver_type=resolver, num_threads=threads)
    it.allocate_tensors()
    return it


def run(it, x):
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [(o["name"], it.get_tensor(o["index"]).copy()) for o in it.get_output_details()]


def time_it(it, x, n=30):
    run(it, x)
    t0 = time.perf_counter()
    for _ in range(n):
        run(it, x)
    return (time.perf_counter() - t0) / n * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("IKOL_MODELS", os.path.expanduser("~/.cache/ikol/models")))
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "tflite_expected.json"))
    ap.add_argument("--time-only", action="store_true", help="print the timings only, write nothing")
    args = ap.parse_args()
    if args.time_only:
        for name, cfg in MODELS.items():
            path = os.path.join(args.models, f"{name}.tflite")
            it = make(path, OpResolverType.AUTO, 1)
            x = to_range(smooth(tuple(it.get_input_details()[0]["shape"])), *cfg["range"])
            timings = {}
            for threads in (1, 2):
                runs = [time_it(make(path, OpResolverType.AUTO, threads), x, 10) for _ in range(5)]
                timings[f"xnnpack_{threads}t_ms_median_of_5x10"] = round(float(np.median(runs)), 2)
            print(f"{name}: {timings}")
        return

    result = {
        "generator": "elements/detect/tools/gen_tflite_fixture.py",
        "runtime": "ai-edge-litert, built-in kernels (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)",
        "models": {},
    }
    for name, cfg in MODELS.items():
        path = os.path.join(args.models, f"{name}.tflite")
        ref = make(path, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, 1)
        xnn = make(path, OpResolverType.AUTO, 1)
        shape = tuple(ref.get_input_details()[0]["shape"])
        entry = {"input_shape": [int(d) for d in shape], "inputs": {}}
        for kind, gen in (("smooth", smooth), ("noise", noise)):
            x = to_range(gen(shape), *cfg["range"])
            outs = run(ref, x)
            alt = run(xnn, x)
            diff = max(float(np.abs(a - b).max()) for (_, a), (_, b) in zip(outs, alt))
            print(f"{name} {kind}: max |builtin - xnnpack| = {diff:.2e}")
            entry["inputs"][kind] = {
                "input_sum": float(x.astype(np.float64).sum()),
                "outputs": {n: summary(a) for n, a in outs},
            }
        x = to_range(smooth(shape), *cfg["range"])
        timings = {}
        for label, resolver in (("xnnpack", OpResolverType.AUTO), ("builtin", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)):
            for threads in (1, 2):
                timings[f"{label}_{threads}t_ms"] = round(time_it(make(path, resolver, threads), x), 2)
        print(f"{name}: ms per run {timings}")
        entry["python_timings_ms"] = timings
        result["models"][name] = entry
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
