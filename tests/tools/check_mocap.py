#!/usr/bin/env python3
"""Reads ikol's motion files back with independent code and checks them against each other.

One take (one track) written as BVH, glTF binary, TRC and NPZ by `ikol mocap`:
  TRC   parsed here (the layout OpenSim and Pose2Sim read): header counts, rate, the 24 joint
        markers and the surface markers, mm;
  BVH   parsed by the `bvh` package (PyPI); forward kinematics done here with numpy from the
        OFFSETs and the Z/Y/X rotation channels in the order the file lists them;
  NPZ   loaded by numpy; the SMPL parameters posed by a numpy transcription of smplx's
        `lbs()` (blend shapes, joint regressor, Rodrigues, pose blend shapes, rigid chain,
        skinning) on the body model's arrays read with the `safetensors` package;
  glTF  loaded by `pygltflib`; node forward kinematics of every animation key, and the skinned
        mesh (JOINTS_0 / WEIGHTS_0 / inverse bind matrices) at the first key;
  JSONL (optional) the per-frame solved joints in camera metres from `ikolexport format=jsonl`.
Checks (exit 1 on a failure): BVH, NPZ and glTF joints equal the TRC joints within 1 mm in every
frame; every TRC surface marker sits on an NPZ-posed vertex or joint (within 1 mm); the glTF skinned mesh
stays near the smplx-posed mesh (it lacks pose blend shapes and has 4 weights per vertex);
the camera-frame joints map onto the TRC joints by the documented world transform
(x, -y, -z) plus one offset. Prints the figures as JSON.
Usage: check_mocap.py --trc T --bvh B --npz N --glb G --body-model M.safetensors [--jsonl J]
"""

import argparse
import json
import struct
import sys

import numpy as np
from bvh import Bvh
from pygltflib import GLTF2
from safetensors.numpy import load_file

SMPL_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
]

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def read_trc(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    check(lines[0].startswith("PathFileType\t4\t(X/Y/Z)"), "TRC: first header line")
    keys = lines[1].split("\t")
    vals = lines[2].split("\t")
    head = dict(zip(keys, vals))
    names = [n for n in lines[3].split("\t")[2:] if n]
    rows = [l.split("\t") for l in lines[5:] if l.strip()]
    data = np.array([[float(x) for x in r] for r in rows])
    n, m = int(head["NumFrames"]), int(head["NumMarkers"])
    check(head["Units"] == "mm", "TRC: units mm")
    check(data.shape == (n, 2 + 3 * m), f"TRC: {data.shape} rows, header says {n} x {m}")
    check(len(names) == m, "TRC: marker names")
    check(np.allclose(data[:, 0], np.arange(1, n + 1)), "TRC: Frame# 1..N")
    rate = float(head["DataRate"])
    check(np.allclose(data[:, 1], np.arange(n) / rate, atol=1e-5), "TRC: Time = i / rate")
    return {
        "names": names, "rate": rate, "start": int(head["OrigDataStartFrame"]),
        "xyz": data[:, 2:].reshape(n, m, 3) / 1000.0,
    }


def rot(axis, deg):
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return {"X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def bvh_joints(path):
    mocap = Bvh(open(path, encoding="utf-8").read())
    names = mocap.get_joints_names()
    check(sorted(names) == sorted(SMPL_NAMES), f"BVH: joint names {names}")
    check(mocap.joint_channels(names[0])[:3] == ["Xposition", "Yposition", "Zposition"]
          and len(mocap.joint_channels(names[0])) == 6, "BVH: root channels")
    check(all(len(mocap.joint_channels(j)) == 3 for j in names[1:]), "BVH: 3 channels per joint")
    frames = np.array(mocap.frames, dtype=float)
    check(frames.shape[1] == 6 + 3 * (len(names) - 1), "BVH: channel count per frame")
    col = {j: mocap.get_joint_channels_index(j) for j in names}
    out = np.zeros((mocap.nframes, 24, 3))
    for i in range(mocap.nframes):
        world = {}
        for j in names:  # file order: parents before children
            chans = mocap.joint_channels(j)
            vals = frames[i, col[j]:col[j] + len(chans)]
            r = np.eye(3)
            pos = np.array(mocap.joint_offset(j), dtype=float)
            for c, v in zip(chans, vals):
                if c.endswith("rotation"):
                    r = r @ rot(c[0], v)
                else:
                    pos["XYZ".index(c[0])] += v
            parent = mocap.joint_parent(j)
            if parent is None:
                world[j] = (r, pos)
            else:
                pr, pp = world[parent.name]
                world[j] = (pr @ r, pp + pr @ np.array(mocap.joint_offset(j), dtype=float))
            out[i, SMPL_NAMES.index(j)] = world[j][1] / 100.0  # cm -> m
    return out, mocap.nframes, mocap.frame_time


def rodrigues(aa):
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = np.where(angle > 1e-12, aa / np.maximum(angle, 1e-300), 0.0)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def csr(m, key, rows, cols):
    dense = np.zeros((rows, cols))
    indptr, indices, data = (m[f"{key}.indptr"], m[f"{key}.indices"], m[f"{key}.data"])
    for r in range(rows):
        dense[r, indices[indptr[r]:indptr[r + 1]]] = data[indptr[r]:indptr[r + 1]]
    return dense


def smpl_lbs(model, betas, pose, trans):
    """smplx.lbs.lbs() transcribed to numpy (float64), plus `transl` as smplx adds it."""
    vt = model["v_template"].astype(np.float64)
    nv = vt.shape[0]
    sd = model["shapedirs"].astype(np.float64)
    v_shaped = vt + sd[:, :, : len(betas)] @ betas
    jreg = csr(model, "j_regressor", 24, nv)
    J = jreg @ v_shaped
    R = rodrigues(pose.reshape(24, 3))
    v_posed = v_shaped
    if "posedirs" in model:
        feat = (R[1:] - np.eye(3)).reshape(-1)
        v_posed = v_shaped + model["posedirs"].astype(np.float64) @ feat
    parents = model["parents"].astype(int)
    G = np.zeros((24, 4, 4))
    for j in range(24):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = J[j] - (J[parents[j]] if parents[j] >= 0 else 0)
        G[j] = local if parents[j] < 0 else G[parents[j]] @ local
    A = G.copy()
    A[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    W = csr(model, "weights", nv, 24)
    T = np.einsum("vj,jab->vab", W, A)
    verts = np.einsum("vab,vb->va", T[:, :3, :3], v_posed) + T[:, :3, 3]
    return verts + trans, G[:, :3, 3] + trans, v_shaped, J


def accessor(g, blob, i):
    a = g.accessors[i]
    v = g.bufferViews[a.bufferView]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[a.type]
    dtype = {5126: "<f4", 5121: "u1", 5125: "<u4"}[a.componentType]
    off = (v.byteOffset or 0) + (a.byteOffset or 0)
    arr = np.frombuffer(blob, dtype=dtype, count=a.count * width, offset=off)
    return arr.reshape(a.count, width).astype(np.float64)


def quat_mat(q):
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def gltf_check(path):
    g = GLTF2().load(path)
    blob = g.binary_blob()
    skin = g.skins[0]
    names = [g.nodes[j].name for j in skin.joints]
    check(names == SMPL_NAMES, f"glTF: joint node names {names}")
    parent = {c: p for p, n in enumerate(g.nodes) for c in (n.children or [])}
    anim = g.animations[0]
    keys = {}
    times = None
    for ch in anim.channels:
        s = anim.samplers[ch.sampler]
        times = accessor(g, blob, s.input)[:, 0]
        keys[(ch.target.node, ch.target.path)] = accessor(g, blob, s.output)
    n = len(times)
    out = np.zeros((n, 24, 3))
    mats0 = {}
    for i in range(n):
        world = {}
        for j in skin.joints:  # parents first (joint order is topological)
            node = g.nodes[j]
            t = keys.get((j, "translation"), [node.translation] * n)[i]
            q = keys.get((j, "rotation"), [node.rotation or [0, 0, 0, 1]] * n)[i]
            check(abs(np.linalg.norm(q) - 1) < 1e-5, "glTF: unit quaternions")
            local = np.eye(4)
            local[:3, :3] = quat_mat(q)
            local[:3, 3] = t
            world[j] = world[parent[j]] @ local if j in parent else local
            out[i, skin.joints.index(j)] = world[j][:3, 3]
        if i == 0:
            mats0 = world
    # Skinned mesh at the first key: sum_k w_k (G_k IBM_k) v.
    prim = g.meshes[0].primitives[0]
    pos = accessor(g, blob, prim.attributes.POSITION)
    jts = accessor(g, blob, prim.attributes.JOINTS_0).astype(int)
    wts = accessor(g, blob, prim.attributes.WEIGHTS_0)
    ibm = accessor(g, blob, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    skinm = np.stack([mats0[j] @ ibm[k] for k, j in enumerate(skin.joints)])
    vh = np.concatenate([pos, np.ones((len(pos), 1))], 1)
    verts0 = np.zeros((len(pos), 3))
    for k in range(4):
        verts0 += wts[:, k:k + 1] * np.einsum("vab,vb->va", skinm[jts[:, k]], vh)[:, :3]
    check(np.allclose(wts.sum(1), 1, atol=1e-6), "glTF: weights sum to 1")
    return out, times, verts0


def main():
    ap = argparse.ArgumentParser()
    for k in ("trc", "bvh", "npz", "glb", "body_model"):
        ap.add_argument("--" + k.replace("_", "-"), required=True)
    ap.add_argument("--jsonl")
    ap.add_argument("--track", type=int)
    a = ap.parse_args()
    fig = {}
    trc = read_trc(a.trc)
    idx = [trc["names"].index(n) for n in SMPL_NAMES]
    tj = trc["xyz"][:, idx]
    n = len(tj)
    fig["frames"] = n
    fig["surface_markers"] = len(trc["names"]) - 24

    bj, bn, bft = bvh_joints(a.bvh)
    check(bn == n, f"BVH: {bn} frames, TRC {n}")
    check(abs(bft - 1 / trc["rate"]) < 1e-6, "BVH: frame time = 1 / TRC rate")
    fig["bvh_vs_trc_max_mm"] = float(np.abs(bj - tj).max() * 1000)
    check(fig["bvh_vs_trc_max_mm"] < 1.0, "BVH joints within 1 mm of TRC")

    model = load_file(a.body_model)
    z = np.load(a.npz)
    check(sorted(z.files) == ["betas", "gender", "mocap_framerate", "poses", "trans"],
          f"NPZ keys {z.files}")
    check(z["poses"].shape == (n, 72) and z["poses"].dtype == np.float64, "NPZ poses (N, 72) f8")
    check(z["trans"].shape == (n, 3), "NPZ trans (N, 3)")
    check(str(z["gender"]) == "neutral", f"NPZ gender {z['gender']!r}")
    check(float(z["mocap_framerate"]) == trc["rate"], "NPZ mocap_framerate")
    nj = np.zeros((n, 24, 3))
    marker_err = 0.0
    verts_first = None
    for i in range(n):
        v, j, _, _ = smpl_lbs(model, z["betas"], z["poses"][i], z["trans"][i])
        nj[i] = j
        if i in (0, n // 2, n - 1):
            # Every surface marker is one of the posed vertices (or, where the landmark map
            # anchors it there, a joint).
            points = np.concatenate([v, j])
            for m in range(24, len(trc["names"])):
                d = np.linalg.norm(points - trc["xyz"][i, m], axis=1).min()
                marker_err = max(marker_err, d)
        if i == 0:
            verts_first = v
    fig["npz_vs_trc_max_mm"] = float(np.abs(nj - tj).max() * 1000)
    check(fig["npz_vs_trc_max_mm"] < 1.0, "NPZ (smplx lbs) joints within 1 mm of TRC")
    fig["trc_surface_marker_to_vertex_max_mm"] = float(marker_err * 1000)
    check(marker_err < 1e-3, "TRC surface markers on the posed mesh")

    gj, times, gverts = gltf_check(a.glb)
    check(len(times) == n and np.allclose(times, np.arange(n) / trc["rate"], atol=1e-5),
          "glTF: key times i / rate")
    fig["gltf_vs_trc_max_mm"] = float(np.abs(gj - tj).max() * 1000)
    check(fig["gltf_vs_trc_max_mm"] < 1.0, "glTF joints within 1 mm of TRC")
    d = np.linalg.norm(gverts - verts_first, axis=1)
    fig["gltf_mesh_vs_smpl_mean_mm"] = float(d.mean() * 1000)
    fig["gltf_mesh_vs_smpl_max_mm"] = float(d.max() * 1000)
    check(fig["gltf_mesh_vs_smpl_mean_mm"] < 15.0, "glTF skinned mesh near the SMPL mesh")

    if a.jsonl:
        cam = {}
        for line in open(a.jsonl, encoding="utf-8"):
            f = json.loads(line)
            for p in f["people"]:
                if p["track_id"] == a.track and p.get("joints_3d"):
                    cam[f["frame"]] = np.array(p["joints_3d"])
        start = trc["start"] - 1
        pairs = [(tj[i], cam[start + i]) for i in range(n) if start + i in cam]
        check(len(pairs) > n // 2, f"JSONL: {len(pairs)} of {n} frames of the track")
        flip = np.diag([1.0, -1.0, -1.0])
        diffs = np.array([w - c @ flip for w, c in pairs])  # world - W cam, per joint
        offset = diffs.reshape(-1, 3).mean(0)
        res = np.linalg.norm(diffs - offset, axis=-1)
        fig["jsonl_frames"] = len(pairs)
        fig["jsonl_vs_trc_mean_mm"] = float(res.mean() * 1000)
        fig["jsonl_vs_trc_max_mm"] = float(res.max() * 1000)
        check(fig["jsonl_vs_trc_mean_mm"] < 20.0,
              "camera joints map onto TRC by (x,-y,-z) + offset (mean < 20 mm)")
    fig["failures"] = failures
    print(json.dumps(fig))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
