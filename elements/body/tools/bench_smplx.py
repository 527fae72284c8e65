"""Times smplx.lbs.lbs (PyTorch CPU) on an ikol body-model file, for the ratio printed by
`cargo bench -p ikol-body --bench lbs`. Prints one JSON object: milliseconds per call at batch 1
and 64.

Usage: python bench_smplx.py MODEL.safetensors [--threads N]
Pins: torch==2.15.0 smplx==0.1.28 safetensors numpy (elements/body/tools/requirements.txt).
"""
import argparse
import json
import time

import numpy as np
import torch
from safetensors.numpy import load_file
from smplx.lbs import lbs


def csr_dense(t, key, rows, cols):
    d = np.zeros((rows, cols), dtype=np.float32)
    ptr, idx, val = t[key + ".indptr"], t[key + ".indices"], t[key + ".data"]
    for r in range(rows):
        d[r, idx[ptr[r]:ptr[r + 1]]] = val[ptr[r]:ptr[r + 1]]
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t = load_file(a.model)
    v = torch.from_numpy(t["v_template"])
    nv = v.shape[0]
    sd = torch.from_numpy(t["shapedirs"])
    posedirs = t.get("posedirs")
    # smplx always applies pose blend shapes; a model without them gets zeros [207, V*3].
    pd = torch.zeros(207, nv * 3) if posedirs is None else torch.from_numpy(posedirs).reshape(-1, 207).T.contiguous()
    jr = torch.from_numpy(csr_dense(t, "j_regressor", 24, nv))
    w = torch.from_numpy(csr_dense(t, "weights", nv, 24))
    parents = torch.from_numpy(t["parents"].astype(np.int64))
    out = {}
    g = torch.Generator().manual_seed(0)
    for batch in (1, 64):
        betas = torch.randn(batch, sd.shape[2], generator=g)
        pose = 0.3 * torch.randn(batch, 72, generator=g)
        with torch.no_grad():
            for _ in range(3):
                lbs(betas, pose, v, sd, pd, jr, parents, w)
            reps = a.reps if batch == 1 else max(3, a.reps // 10)
            t0 = time.perf_counter()
            for _ in range(reps):
                lbs(betas, pose, v, sd, pd, jr, parents, w)
            out[f"batch{batch}_ms"] = (time.perf_counter() - t0) / reps * 1e3
    out["threads"] = a.threads
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
