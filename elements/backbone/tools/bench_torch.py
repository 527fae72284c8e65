"""CPU timing of the full-size IKOL-24 heatmap network in PyTorch, for backbone-bench.

Prints one JSON object: median/min forward time in ms of the whole network (backbone, deconv
head, 1x1 conv, soft-argmax, FC branch) at batch 1 x 3 x 256 x 256, a per-part breakdown, and
the process's peak RSS before and after the timed forwards.

Pinned: Python 3.11, torch 2.15.0 (CPU), numpy 2.4.6.
Usage: python bench_torch.py [--threads 2] [--runs 10] [--depth 34] [--variant ikol24] [--batch 1]
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hybrik_torch import HeatmapNet  # noqa: E402


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def soft_argmax(net, out):
    """The upstream heatmap -> uvd code of HeatmapNet.heads."""
    out = F.softmax(out.reshape((out.shape[0], net.num_joints, -1)), 2)
    hm = (out / out.sum(dim=2, keepdim=True)).reshape(
        (out.shape[0], net.num_joints, net.depth_dim, net.height_dim, net.width_dim))
    cs = []
    for dims, n in (((2, 3), net.width_dim), ((2, 4), net.height_dim), ((3, 4), net.depth_dim)):
        m = hm.sum(dims) * torch.arange(n).to(hm.dtype)
        cs.append(m.sum(dim=2, keepdim=True) / float(n) - 0.5)
    return torch.cat(cs, dim=2)


def timed(fn, runs):
    fn()  # warm-up
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return {"median_ms": ts[len(ts) // 2], "min_ms": ts[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--depth", type=int, default=34)
    ap.add_argument("--variant", default="ikol24")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = HeatmapNet(args.variant, depth=args.depth).eval()
    x = torch.randn(args.batch, 3, 256, 256)
    rss_before = peak_rss_mib()
    with torch.inference_mode():
        whole = timed(lambda: net.heads(x), args.runs)
        feat = net.preact(x)
        hm = net.deconv_layers(feat)
        logits = net.final_layer(hm)
        parts = {
            "preact": timed(lambda: net.preact(x), args.runs),
            "deconv_layers": timed(lambda: net.deconv_layers(feat), args.runs),
            "final_layer": timed(lambda: net.final_layer(hm), args.runs),
            "soft-argmax": timed(lambda: soft_argmax(net, logits), args.runs),
        }
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "whole": whole,
        "parts": parts,
        "peak_rss_mib_before": rss_before,
        "peak_rss_mib_after": peak_rss_mib(),
    }))


if __name__ == "__main__":
    main()
