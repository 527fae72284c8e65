#!/usr/bin/env python3
# Pinned: Python 3 venv with torch==2.15.0 (CPU use only; the +cu132 wheel runs on the CPU here).
# No other dependencies (json, argparse, time from the standard library).
#
# PyTorch reference of the IKOL Gauss-Newton layer as upstream codes it at test time
# (IKOL `SMPL_layer.IKOL`, default `efficient=False`): root by SVD over children [3,1,2],
# twist + leaf quaternion matrices, spine3 by 3-children SVD, alpha[18] = 0, 5 iterations of
# alpha -= inverse(J^T J + 0.1 I) J^T r with J from torch.autograd.functional.jacobian
# (vectorize=True) of the batch-summed FK. float32. Used only to time it next to the Rust solver
# (`solver-bench`). See /work/shared/reference/ikol-hybrik.md sections 2.3-2.4 and 3.1-3.5.
#
# Usage: python bench_torch_ikol.py [--rest rest.json] [--threads 1]
# rest.json: {"rest_joints": [[x, y, z], ... 24 rows]} in metres. Prints one JSON line:
# {"batch1_ms": .., "batch64_ms": .., "torch": version, "threads": n}; the sanity check goes to
# stderr.
import argparse
import json
import math
import sys
import time

import torch

PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
CHILD = {0: 3, 1: 4, 2: 5, 3: 6, 4: 7, 5: 8, 6: 9, 7: 10, 8: 11, 9: 12, 12: 15, 13: 16,
         14: 17, 16: 18, 17: 19, 18: 20, 19: 21, 20: 22, 21: 23}
LEAVES = [10, 11, 15, 22, 23]
LEAF_SLOT = {j: i for i, j in enumerate(LEAVES)}
INDEX_18_TO_24 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
INDEX_24_TO_18 = {j: i for i, j in enumerate(INDEX_18_TO_24)}
SPINE3 = 9
SPINE3_CHILDREN = [12, 13, 14]
ROOT_CHILDREN = [3, 1, 2]
DAMPING = 1e-1
ITERATIONS = 5

# Built-in hand skeleton (SMPL-like mean rest joints, metres, model frame, y up).
HAND_REST = [
    [0.000, 0.000, 0.000], [0.060, -0.090, 0.000], [-0.060, -0.090, 0.000],
    [0.000, 0.110, -0.020], [0.110, -0.460, 0.000], [-0.110, -0.460, 0.000],
    [0.000, 0.240, 0.000], [0.080, -0.860, -0.040], [-0.080, -0.860, -0.040],
    [0.000, 0.290, 0.020], [0.120, -0.920, 0.090], [-0.120, -0.920, 0.090],
    [0.000, 0.510, -0.020], [0.080, 0.420, -0.010], [-0.080, 0.420, -0.010],
    [0.000, 0.590, 0.040], [0.170, 0.450, -0.020], [-0.170, 0.450, -0.020],
    [0.430, 0.440, -0.040], [-0.430, 0.440, -0.040], [0.690, 0.450, -0.040],
    [-0.690, 0.450, -0.040], [0.770, 0.440, -0.050], [-0.770, 0.440, -0.050],
]


def skew(v):
    """[..., 3] -> [..., 3, 3] cross-product matrix."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([z, -w, y, w, z, -x, -y, x, z], dim=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_mat(axis, cos, sin):
    """I + sin K + (1 - cos) K^2 with K = [axis]x; cos, sin [...]."""
    k = skew(axis)
    eye = torch.eye(3, dtype=axis.dtype).expand(k.shape)
    return eye + sin[..., None, None] * k + (1 - cos)[..., None, None] * (k @ k)


def quat_to_rotmat(q):
    """(w, x, y, z) [..., 4] -> [..., 3, 3], normalised with +1e-8 like upstream."""
    q = q / (q.norm(dim=-1, keepdim=True) + 1e-8)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


def svd_orient(rest_vecs, target_vecs):
    """Det-corrected SVD rotation taking rest to target; vecs [B, n, 3].
    S = rest . target^T (columns stacked), S = U diag V^T, R = V diag(1,1,det(V U^T)) U^T;
    samples with S summing to exactly 0 get the identity (upstream)."""
    s = rest_vecs.transpose(1, 2) @ target_vecs  # [B,3,3] = sum_c rest_c target_c^T
    u, _, vh = torch.linalg.svd(s)
    v = vh.transpose(1, 2)
    det = torch.det(v @ u.transpose(1, 2))
    d = torch.ones_like(s[:, 0])
    d = torch.cat([d[:, :2], det[:, None]], dim=1)
    rot = v @ torch.diag_embed(d) @ u.transpose(1, 2)
    zero = s.abs().sum(dim=(1, 2)) == 0
    eye = torch.eye(3, dtype=s.dtype).expand_as(rot)
    return torch.where(zero[:, None, None], eye, rot)


def batch_rigid_transform(rot_mats, joints):
    """Posed joints from local rotations [B,24,3,3] and rest joints [B,24,3] (upstream FK)."""
    b = rot_mats.shape[0]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, PARENTS[1:]]
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=joints.dtype).expand(b, 24, 1, 4)
    tm = torch.cat([torch.cat([rot_mats, rel[..., None]], dim=-1), bottom], dim=-2)
    chain = [tm[:, 0]]
    for i in range(1, 24):
        chain.append(chain[PARENTS[i]] @ tm[:, i])
    transforms = torch.stack(chain, dim=1)
    return transforms[:, :, :3, 3]


class Prepared:
    """Per-batch constants: rest bones, root rotation, twist and leaf matrices."""

    def __init__(self, target, phis, rest, leaf_q):
        self.target = target.detach()
        self.rest = rest
        rel_rest = rest.clone()
        rel_rest[:, 1:] = rest[:, 1:] - rest[:, PARENTS[1:]]
        self.rel_rest = rel_rest
        # Root: SVD over children [3,1,2] on the detached target.
        root_rest = rel_rest[:, ROOT_CHILDREN]
        root_tgt = self.target[:, ROOT_CHILDREN] - self.target[:, :1]
        self.root = svd_orient(root_rest, root_tgt)
        # Twist about the rest child bone (test: no epsilon on |r|), phis normalised (+1e-8).
        ph = phis / (phis.norm(dim=-1, keepdim=True) + 1e-8)
        self.twist = {}
        for k in INDEX_18_TO_24:
            if k == SPINE3:
                continue
            r = rel_rest[:, CHILD[k]]
            axis = r / r.norm(dim=-1, keepdim=True)
            self.twist[k] = axis_angle_mat(axis, ph[:, k - 1, 0], ph[:, k - 1, 1])
        self.leaf = quat_to_rotmat(leaf_q)

    def forward(self, alpha):
        """f(alpha): posed joints minus root [B,24,3]."""
        tgt, rel_rest = self.target, self.rel_rest
        chain = [self.root]
        local = [self.root]
        for k in range(1, 24):
            p = PARENTS[k]
            if k in LEAF_SLOT:
                rl = self.leaf[:, LEAF_SLOT[k]]
            elif k == SPINE3:
                rp_t = chain[p].transpose(1, 2)
                tv = (tgt[:, SPINE3_CHILDREN] - tgt[:, k:k + 1]) @ rp_t.transpose(1, 2)
                rl = svd_orient(rel_rest[:, SPINE3_CHILDREN], tv)
            else:
                c = CHILD[k]
                t = (chain[p].transpose(1, 2) @ (tgt[:, c] - tgt[:, k])[..., None])[..., 0]
                r = rel_rest[:, c]
                w = torch.cross(r, t, dim=-1)
                n = w / (w.norm(dim=-1, keepdim=True) + 1e-8)
                a = alpha[:, INDEX_24_TO_18[k]]
                rl = axis_angle_mat(n, torch.cos(a), torch.sin(a)) @ self.twist[k]
            local.append(rl)
            chain.append(chain[p] @ rl)
        rot_mats = torch.stack(local, dim=1)
        joints = batch_rigid_transform(rot_mats, self.rest)
        return joints - joints[:, :1].detach()


def ikol_solve(target, phis, rest, leaf_q, iterations=ITERATIONS, trace=None):
    prep = Prepared(target, phis, rest, leaf_q)
    b = target.shape[0]
    alpha = torch.zeros(b, 18, dtype=target.dtype)
    u = DAMPING * torch.ones(b, 18, dtype=target.dtype)
    flat_target = prep.target.reshape(b, 72)
    for _ in range(iterations):
        with torch.no_grad():
            resid = prep.forward(alpha).reshape(b, 72) - flat_target
        if trace is not None:
            trace.append(resid.pow(2).mean().item())
        jac = torch.autograd.functional.jacobian(
            lambda a: prep.forward(a).reshape(b, 72).sum(0), alpha,
            create_graph=False, vectorize=True)  # [72, B, 18]
        jac = jac.permute(1, 0, 2)  # [B, 72, 18]
        jt = jac.transpose(1, 2)
        delta = torch.inverse(jt @ jac + torch.diag_embed(u)) @ jt @ resid[..., None]
        alpha = alpha - delta[..., 0]
    with torch.no_grad():
        out = prep.forward(alpha)
    if trace is not None:
        trace.append((out.reshape(b, 72) - flat_target).pow(2).mean().item())
    return alpha, out


def random_problem(rest24, b, gen, scale=0.35):
    """Ground truth by FK: random local rotations (axis-angle ~ N(0, scale^2) per component),
    true twist phis and leaf quaternions."""
    rest = rest24.expand(b, 24, 3).clone()
    aa = torch.randn(b, 24, 3, generator=gen, dtype=torch.float64) * scale
    ang = aa.norm(dim=-1)
    axis = aa / ang[..., None]
    rots = axis_angle_mat(axis, torch.cos(ang), torch.sin(ang))
    rest64 = rest.double()
    joints = batch_rigid_transform(rots, rest64)
    target = joints - joints[:, :1]
    rel_rest = rest64.clone()
    rel_rest[:, 1:] = rest64[:, 1:] - rest64[:, PARENTS[1:]]
    phis = torch.zeros(b, 23, 2, dtype=torch.float64)
    phis[..., 0] = 1.0
    for k in INDEX_18_TO_24:
        if k == SPINE3:
            continue
        r = rel_rest[:, CHILD[k]]
        rh = r / r.norm(dim=-1, keepdim=True)
        rr = (rots[:, k] @ rh[..., None])[..., 0]
        w = torch.cross(rh, rr, dim=-1)
        sw = w.norm(dim=-1)
        cw = (rh * rr).sum(-1)
        swing = axis_angle_mat(w / (sw[..., None] + 1e-12), cw, sw)
        tw = swing.transpose(1, 2) @ rots[:, k]
        vee = torch.stack([tw[:, 2, 1] - tw[:, 1, 2], tw[:, 0, 2] - tw[:, 2, 0],
                           tw[:, 1, 0] - tw[:, 0, 1]], dim=-1) / 2
        phi = torch.atan2((vee * rh).sum(-1), (tw.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2)
        phis[:, k - 1, 0] = torch.cos(phi)
        phis[:, k - 1, 1] = torch.sin(phi)
    la = aa[:, LEAVES]
    lang = ang[:, LEAVES]
    leaf_q = torch.cat([torch.cos(lang / 2)[..., None],
                        torch.sin(lang / 2)[..., None] * la / lang[..., None]], dim=-1)
    f = torch.float32
    return target.to(f), phis.to(f), rest.to(f), leaf_q.to(f)


def time_solve(args, reps):
    ikol_solve(*args)  # warm-up
    ikol_solve(*args)
    start = time.perf_counter()
    for _ in range(reps):
        ikol_solve(*args)
    return (time.perf_counter() - start) * 1e3 / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rest", help='JSON {"rest_joints": [[x,y,z] x 24]} (metres)')
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps1", type=int, default=20)
    ap.add_argument("--reps64", type=int, default=3)
    ap.add_argument("--no-sanity", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rest_rows = HAND_REST
    if a.rest:
        with open(a.rest) as fh:
            rest_rows = json.load(fh)["rest_joints"][:24]
    rest24 = torch.tensor(rest_rows, dtype=torch.float64)
    if rest24.shape != (24, 3):
        sys.exit(f"rest joints must be 24 x 3, got {tuple(rest24.shape)}")
    gen = torch.Generator().manual_seed(0)
    if not a.no_sanity:
        trace = []
        ikol_solve(*random_problem(rest24, 8, gen), trace=trace)
        mm = ", ".join(f"{math.sqrt(m) * 1e3:.2f}" for m in trace)
        ok = all(y <= x * (1 + 1e-4) for x, y in zip(trace, trace[1:])) and trace[-1] < trace[0]
        print(f"sanity: RMS residual (mm) per iteration: {mm}; "
              f"{'decreasing' if ok else 'NOT decreasing'}", file=sys.stderr)
    t1 = time_solve(random_problem(rest24, 1, gen), max(a.reps1, 20))
    t64 = time_solve(random_problem(rest24, 64, gen), max(a.reps64, 3))
    print(json.dumps({"batch1_ms": round(t1, 4), "batch64_ms": round(t64, 4),
                      "torch": torch.__version__, "threads": a.threads}))


if __name__ == "__main__":
    main()
