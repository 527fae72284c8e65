#!/usr/bin/env python3
"""Generates a tiny synthetic dataset in the on-disk format of 3DPW (von Marcard et al. 2018),
plus the reference values the Rust tests compare against (deterministic, fixed seed).

Pins (the versions these files were generated with):
    Python 3.11.7, numpy 2.4.6, scipy 1.17.1, torch 2.15.0, smplx 0.1.28, chumpy 0.70 (imported
    by gen_body_fixtures), safetensors 0.8.0, Pillow 13.0.0 (libjpeg-turbo 6.2 API).
See tests/data/body/gen_body_fixtures.py for how that venv is installed.

Run from the repository root:
    /root/.cache/ikol/pyenv/bin/python tests/data/3dpw/gen_3dpw_fixture.py

Writes, under tests/data/3dpw/:
  sequenceFiles/test/<seq>.pkl     3DPW sequence files: a dict with py2 str keys written byte by byte
                                   as Python 2.7 cPickle protocol 2 (py2_dumps of
                                   tests/data/body/gen_body_fixtures.py), numpy arrays via
                                   numpy.core.multiarray._reconstruct, like the real files
  imageFiles/<seq>/image_%05d.jpg  rendered frames (240 x 320, portrait), baseline JPEG quality 90;
                                   the frame index is img_frame_ids
  expected.json                    reference values (boxes, camera-frame joints, ...), see README.md
  json/3DPW_test_new.json          the same valid person-frames as COCO-style annotations in the
                                   format of the I2L-MeshNet parse HybrIK / IKOL load (reference
                                   5.1), see coco_json() and README.md

Sequences (both in the `test` split):
  fixture_walk_00   1 person, 5 frames, walking slowly sideways
  fixture_pair_01   2 people side by side, 4 frames; person 1 has campose_valid False in frame 2
                    (its 2D keypoints are still present, as in 3DPW)

The body model is ikol's default model (elements/body/assets/ikol-default.safetensors, SMPL layout,
10 shape components, no posedirs). Each person is posed with smplx.lbs.lbs in float64 and placed in
the world as 3DPW does: vertices_world = LBS(pose, betas) + trans (the root rotates about the rest
root joint). cam_poses[i] is the 4x4 world->camera [R|t] (camera x right, y down, z forward);
R = (small yaw/pitch, changing per frame) @ Rx(pi), so the y-up body appears upright.

Conventions of expected.json:
  bbox               3DPW / mmhuman3d: [min x, min y, max x, max y] of the poses2d keypoints with
                     confidence > 0, enlarged about its centre by 1.2, written as [x, y, w, h]
  global_orient_cam  axis-angle (scipy as_rotvec, angle in [0, pi]) of R_cam @ R(poses[0:3])
  root_cam           R_cam @ J0_world + t_cam (J0_world = posed joint 0 in world coordinates)
  joints_cam         the 24 posed SMPL joints in camera coordinates (metres)
  h36m_cam           j_regressor_h36m applied to the camera-frame posed vertices (17 x 3)
"""

import json
import os
import pickle
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.dont_write_bytecode = True  # no __pycache__ next to gen_body_fixtures.py
sys.path.insert(0, os.path.join(REPO, "tests", "data", "body"))
from gen_body_fixtures import csr_dense, lbs_reference, py2_dumps  # noqa: E402

from PIL import Image, ImageDraw  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

SEED = 20240612
WIDTH, HEIGHT = 240, 320
FX, FY, CX, CY = 300.0, 302.0, 120.0, 160.0
K = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])
JPEG_QUALITY = 90
SUPERSAMPLE = 2          # render at 2x and downsample (anti-aliased edges)
BOX_SCALE = 1.2          # 3DPW / mmhuman3d box enlargement
NUM_BETAS_3DPW = 10      # 3DPW stores 10 betas per person
MAX_JOINT_ANGLE = 1.4    # rad (~80 deg): no joint bent beyond that

# OpenPose COCO-18 order and the SMPL joint each keypoint is projected from (None: derived)
COCO18 = ["nose", "neck", "R_sho", "R_elb", "R_wri", "L_sho", "L_elb", "L_wri", "R_hip", "R_knee",
          "R_ank", "L_hip", "L_knee", "L_ank", "R_eye", "L_eye", "R_ear", "L_ear"]
COCO18_FROM_SMPL = [15, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, None, None, None, None]
# facing the camera, the subject's right eye is on the image's left
EYE_OFFSET_PX = {"R_eye": (-4.0, -3.0), "L_eye": (4.0, -3.0)}
UNDETECTED = ["R_ear", "L_ear"]                                  # x = y = 0, confidence 0 (as in 3DPW)

EXTREMITIES = [10, 11, 22, 23]  # SMPL feet and hands
SPINE_HEAD = [3, 6, 9, 12, 15]  # spine1-3, neck, head

PERSON_COLOURS = [(214, 96, 60), (60, 120, 210), (90, 170, 90)]


def out(*parts):
    return os.path.join(HERE, *parts)


# ------------------------------------------------------------------------------------------------
# body model

def load_default_model():
    st = load_file(os.path.join(REPO, "elements", "body", "assets", "ikol-default.safetensors"))
    v_template = st["v_template"].astype(np.float64)
    nv = v_template.shape[0]
    return dict(
        v_template=v_template,
        shapedirs=st["shapedirs"].astype(np.float64),
        posedirs=None,
        J_regressor=csr_dense(st, "j_regressor", (24, nv)),
        J_regressor_h36m=csr_dense(st, "j_regressor_h36m", (17, nv)),
        weights=csr_dense(st, "weights", (nv, 24)),
        parents=st["parents"].astype(np.int64),
        faces=st["faces"].astype(np.int64),
        leaf_vertices=st["leaf_vertices"].astype(np.int64),
    )


def pose_body(model, betas10, poses):
    """LBS of one person over all frames (no translation): verts [N,V,3], joints [N,24,3]."""
    nb = model["shapedirs"].shape[2]
    k = min(nb, NUM_BETAS_3DPW)
    shapedirs = model["shapedirs"][:, :, :k]
    betas = np.tile(betas10[:k], (poses.shape[0], 1))
    return lbs_reference(dict(model, shapedirs=shapedirs), betas, poses)


# ------------------------------------------------------------------------------------------------
# geometry

def rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def camera_poses(centre, yaws, pitches):
    """World->camera 4x4 [R|t] per frame; the camera sits at `centre` (world) and rotates."""
    n = len(yaws)
    cams = np.zeros((n, 4, 4))
    for i in range(n):
        r = rx(pitches[i]) @ ry(yaws[i]) @ rx(np.pi)
        cams[i, :3, :3] = r
        cams[i, :3, 3] = -r @ centre
        cams[i, 3, 3] = 1.0
    return cams


def to_cam(cam, x):
    return x @ cam[:3, :3].T + cam[:3, 3]


def project(xc):
    return np.stack([FX * xc[..., 0] / xc[..., 2] + CX, FY * xc[..., 1] / xc[..., 2] + CY], axis=-1)


def clip_joint_angles(poses):
    """Scales every joint's axis-angle down to at most MAX_JOINT_ANGLE."""
    p = poses.reshape(poses.shape[0], 24, 3).copy()
    norm = np.linalg.norm(p, axis=-1, keepdims=True)
    p *= np.minimum(1.0, MAX_JOINT_ANGLE / np.maximum(norm, 1e-12))
    return p.reshape(poses.shape[0], 72)


def random_poses(rng, n, yaw0, yaw_step):
    """N x 72 axis-angle poses: smooth in time (base + small cumulative increments)."""
    base = rng.normal(0.0, 0.25, size=72)
    base[0:3] = rng.normal(0.0, 0.08, size=3)
    for j in SPINE_HEAD:                     # 0.25 rad per component on each of these stacks up
        base[3 * j:3 * j + 3] *= 0.5         # to a contorted torso: halve it there
    base[1] += yaw0                          # root yaw about the body's y axis
    # arms down from the T-pose (A-pose-ish), so people look natural and overlap less
    base[16 * 3 + 2] -= 1.0                  # left shoulder about z
    base[17 * 3 + 2] += 1.0                  # right shoulder about z
    steps = rng.normal(0.0, 0.03, size=(n, 72))
    steps[0] = 0.0
    steps[:, 1] += yaw_step
    steps[0, 1] = 0.0
    poses = base + np.cumsum(steps, axis=0)
    return clip_joint_angles(poses)


# ------------------------------------------------------------------------------------------------
# 2D keypoints and boxes

def keypoints_coco18(rng, joints_cam):
    """OpenPose COCO-18 keypoints (3, 18) rows x, y, confidence from camera-frame SMPL joints."""
    uv = project(joints_cam)
    kp = np.zeros((3, 18))
    conf = rng.uniform(0.5, 1.0, size=18)
    for k, name in enumerate(COCO18):
        if name in UNDETECTED:
            continue  # x = y = confidence = 0
        if COCO18_FROM_SMPL[k] is not None:
            kp[0:2, k] = uv[COCO18_FROM_SMPL[k]]
        else:
            dx, dy = EYE_OFFSET_PX[name]
            kp[0:2, k] = uv[15] + np.array([dx, dy])
        kp[2, k] = conf[k]
    return kp


def bbox_3dpw(kp):
    """[x, y, w, h] from the keypoints with confidence > 0, enlarged by BOX_SCALE about the centre."""
    m = kp[2] > 0
    x0, y0, x1, y1 = kp[0, m].min(), kp[1, m].min(), kp[0, m].max(), kp[1, m].max()
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    w, h = BOX_SCALE * (x1 - x0), BOX_SCALE * (y1 - y0)
    return [float(cx - 0.5 * w), float(cy - 0.5 * h), float(w), float(h)]


# ------------------------------------------------------------------------------------------------
# rendering

def background(cam):
    """A wall gradient above the horizon and a floor (world y = 0) with soft 0.5 m tiles below it."""
    s = SUPERSAMPLE
    u = (np.arange(WIDTH * s) + 0.5) / s - 0.5
    v = (np.arange(HEIGHT * s) + 0.5) / s - 0.5
    uu, vv = np.meshgrid(u, v)
    d_cam = np.stack([(uu - CX) / FX, (vv - CY) / FY, np.ones_like(uu)], axis=-1)
    r, t = cam[:3, :3], cam[:3, 3]
    d_world = d_cam @ r  # R^T d
    centre = -r.T @ t
    img = np.zeros(uu.shape + (3,))
    # wall: vertical gradient, light at the top
    g = (vv / (HEIGHT - 1))[..., None]
    img[:] = (1 - g) * np.array([205.0, 212.0, 222.0]) + g * np.array([150.0, 160.0, 175.0])
    floor = d_world[..., 1] < -1e-6
    dist = np.where(floor, -centre[1] / np.where(floor, d_world[..., 1], -1.0), 0.0)
    p = centre + dist[..., None] * d_world
    tile = (np.floor(p[..., 0] / 0.5) + np.floor(p[..., 2] / 0.5)) % 2
    fade = np.clip(1.0 - dist / 25.0, 0.3, 1.0)
    floor_rgb = (np.array([128.0, 108.0, 84.0]) + 14.0 * tile[..., None]) * fade[..., None] \
        + (1 - fade[..., None]) * np.array([150.0, 150.0, 150.0])
    img[floor] = floor_rgb[floor]
    return img


def render(cam, verts_world_list, faces):
    """Painter's algorithm over all people's front faces, Lambert shading, light at the camera."""
    s = SUPERSAMPLE
    img = Image.fromarray(np.clip(np.round(background(cam)), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    polys, depths, colours = [], [], []
    for p, vw in enumerate(verts_world_list):
        vc = to_cam(cam, vw)
        tri = vc[faces]                                   # [F,3,3]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        centroid = tri.mean(axis=1)
        front = np.einsum("fi,fi->f", n, centroid) < 0    # CCW from outside: faces the camera
        cosang = -np.einsum("fi,fi->f", n, centroid) / (
            np.linalg.norm(n, axis=1) * np.linalg.norm(centroid, axis=1) + 1e-30)
        shade = 0.28 + 0.72 * np.clip(cosang, 0.0, 1.0)
        uv = project(tri) * s + (s - 1) / 2.0             # pixel centres at integer coordinates
        base = np.array(PERSON_COLOURS[p], dtype=np.float64)
        col = np.clip(np.round(shade[:, None] * base), 0, 255).astype(np.int64)
        polys.append(uv[front])
        depths.append(centroid[front, 2])
        colours.append(col[front])
    polys, depths, colours = np.concatenate(polys), np.concatenate(depths), np.concatenate(colours)
    order = np.argsort(-depths, kind="stable")            # far first
    for f in order:
        draw.polygon([tuple(x) for x in polys[f].tolist()], fill=tuple(colours[f].tolist()))
    return img.resize((WIDTH, HEIGHT), Image.Resampling.BOX)


# ------------------------------------------------------------------------------------------------
# sequences

def make_sequence(rng, model, name, n, people_spec, cam_centre, yaws, pitches, invalid):
    """people_spec: list of dicts gender, pelvis (world x, z of frame 0), velocity (m/frame in x),
    yaw0, yaw_step. invalid: set of (person, frame) with campose_valid False."""
    cams = camera_poses(cam_centre, yaws, pitches)
    seq = {"name": name, "n": n, "cams": cams, "people": []}
    for p, spec in enumerate(people_spec):
        betas = np.zeros(NUM_BETAS_3DPW)
        k = min(model["shapedirs"].shape[2], NUM_BETAS_3DPW)
        betas[:k] = rng.normal(0.0, 0.7, size=k)
        poses = random_poses(rng, n, spec["yaw0"], spec["yaw_step"])
        verts, joints = pose_body(model, betas, poses)
        # trans: the root joint at the target position, feet of the rest shape on the floor (y = 0)
        rest_v, rest_j = pose_body(model, betas, np.zeros((1, 72)))
        pelvis_height = rest_j[0, 0, 1] - rest_v[0, :, 1].min()
        trans = np.zeros((n, 3))
        for i in range(n):
            target = np.array([spec["pelvis"][0] + spec["velocity"] * i,
                               pelvis_height + 0.01 * np.sin(i),
                               spec["pelvis"][1]])
            trans[i] = target - joints[i, 0]
        verts_world = verts + trans[:, None, :]
        joints_world = joints + trans[:, None, :]
        poses2d = np.zeros((n, 3, 18))
        for i in range(n):
            poses2d[i] = keypoints_coco18(rng, to_cam(cams[i], joints_world[i]))
        valid = np.array([(p, i) not in invalid for i in range(n)], dtype=bool)
        seq["people"].append(dict(gender=spec["gender"], betas=betas, poses=poses, trans=trans,
                                  verts_world=verts_world, joints_world=joints_world,
                                  poses2d=poses2d, valid=valid))
    return seq


def pickle_content(seq):
    """The sequence file dict, as in 3DPW (py2 str keys and strings; float64 arrays)."""
    ppl = seq["people"]
    n = seq["n"]
    return {
        "sequence": seq["name"],
        "genders": [pp["gender"] for pp in ppl],
        "betas": [pp["betas"].copy() for pp in ppl],
        "betas_clothed": [pp["betas"] + 0.01 for pp in ppl],
        "poses": [pp["poses"].copy() for pp in ppl],
        "trans": [pp["trans"].copy() for pp in ppl],
        "poses2d": [pp["poses2d"].copy() for pp in ppl],
        "jointPositions": [pp["joints_world"].reshape(n, 72).copy() for pp in ppl],
        "cam_poses": seq["cams"].copy(),
        "cam_intrinsics": K.copy(),
        "campose_valid": [pp["valid"].copy() for pp in ppl],
        "img_frame_ids": np.arange(n, dtype=np.int64),
    }


def check_pickle(path, ref):
    with open(path, "rb") as fh:
        d = pickle.load(fh, encoding="latin1")
    assert isinstance(d, dict) and list(d.keys()) == list(ref.keys()), path
    for k, v in ref.items():
        got = d[k]
        if isinstance(v, str):
            assert got == v and type(got) is str, (path, k)
        elif isinstance(v, np.ndarray):
            assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v), (path, k)
        else:
            assert isinstance(got, list) and len(got) == len(v), (path, k)
            for a, b in zip(got, v):
                if isinstance(b, str):
                    assert a == b, (path, k)
                else:
                    assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), (path, k)


def iou(a, b):
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def expected_entry(seq, model):
    n, cams = seq["n"], seq["cams"]
    outside = [0, 0]  # feet / hands joints projecting outside the box, of all checked
    people = []
    for pp in seq["people"]:
        frames = []
        for i in range(n):
            r, t = cams[i, :3, :3], cams[i, :3, 3]
            joints_cam = to_cam(cams[i], pp["joints_world"][i])
            verts_cam = to_cam(cams[i], pp["verts_world"][i])
            h36m_cam = model["J_regressor_h36m"] @ verts_cam
            go = Rotation.from_matrix(r @ Rotation.from_rotvec(pp["poses"][i, 0:3]).as_matrix()).as_rotvec()
            root_cam = r @ pp["joints_world"][i, 0] + t
            bbox = bbox_3dpw(pp["poses2d"][i])
            # sanity: every joint but the feet and hands (beyond the ankle / wrist keypoints, so not
            # always inside a keypoint box, as in 3DPW) projects inside the box; every vertex is
            # inside the image; the root is 3.5-4.5 m in front of the camera
            uv = project(joints_cam)
            inside = (uv[:, 0] > bbox[0]) & (uv[:, 0] < bbox[0] + bbox[2]) \
                & (uv[:, 1] > bbox[1]) & (uv[:, 1] < bbox[1] + bbox[3])
            assert np.all(np.delete(inside, EXTREMITIES)), (seq["name"], i, np.nonzero(~inside))
            outside[0] += int((~inside[EXTREMITIES]).sum())
            outside[1] += len(EXTREMITIES)
            uvv = project(verts_cam)
            assert uvv[:, 0].min() > 2 and uvv[:, 0].max() < WIDTH - 3, (seq["name"], i)
            assert uvv[:, 1].min() > 2 and uvv[:, 1].max() < HEIGHT - 3, (seq["name"], i)
            assert 3.5 < root_cam[2] < 4.5, (seq["name"], i, root_cam)
            frames.append({
                "valid": bool(pp["valid"][i]),
                "bbox": bbox,
                "poses": pp["poses"][i].tolist(),
                "trans": pp["trans"][i].tolist(),
                "poses2d": pp["poses2d"][i].tolist(),
                "joint_positions": pp["joints_world"][i].reshape(72).tolist(),
                "global_orient_cam": go.tolist(),
                "root_cam": root_cam.tolist(),
                "joints_cam": joints_cam.tolist(),
                "h36m_cam": h36m_cam.tolist(),
            })
        people.append({"gender": pp["gender"], "betas": pp["betas"].tolist(),
                       "betas_clothed": (pp["betas"] + 0.01).tolist(), "frames": frames})
    if len(people) == 2:
        for i in range(n):
            o = iou(people[0]["frames"][i]["bbox"], people[1]["frames"][i]["bbox"])
            assert o < 0.15, (seq["name"], i, o)
    print("%s: %d of %d foot/hand joints project outside the 1.2 keypoint box" % (
        seq["name"], outside[0], outside[1]))
    return {
        "name": seq["name"], "split": "test", "width": WIDTH, "height": HEIGHT, "num_frames": n,
        "intrinsics": [FX, FY, CX, CY], "num_people": len(people),
        "cam_intrinsics": K.tolist(),
        "cam_poses": cams.tolist(),
        "img_frame_ids": list(range(n)),
        "image_files": ["imageFiles/%s/image_%05d.jpg" % (seq["name"], i) for i in range(n)],
        "sequence_file": "sequenceFiles/test/%s.pkl" % seq["name"],
        "people": people,
    }


# ------------------------------------------------------------------------------------------------
# COCO-style annotation file (the I2L-MeshNet parse of 3DPW that HybrIK / IKOL train and test on)

COCO_JSON = "3DPW_test_new.json"
# HybrIK-29 children of joints 0..23 (24..28: the leaf vertices head top, left / right middle
# fingertip, left / right big toe of the shaped rest mesh)
HYBRIK29_CHILDREN = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 27, 28, 15, 16, 17, 24, 18, 19, 20, 21, 22,
                     23, 25, 26]
GENDER_NAMES = {"m": "male", "f": "female"}
INVALID_TWIST = -999.0  # upstream's marker of an unknown twist angle (weight 0)


def rest_joints29(model, betas10):
    """Shaped rest joints (J_regressor @ v_shaped) and the 5 leaf vertices of v_shaped, [29, 3]."""
    k = min(model["shapedirs"].shape[2], NUM_BETAS_3DPW)
    v_shaped = model["v_template"] + model["shapedirs"][:, :, :k] @ betas10[:k]
    return np.concatenate([model["J_regressor"] @ v_shaped, v_shaped[model["leaf_vertices"]]])


def twist_angles(pose72, rest29):
    """Twist angle of joints 1..23 about their rest bone u (unit, to the HybrIK-29 child): the
    swing-twist decomposition of the local rotation R(pose[j]) = R_swing R_twist(u). From the
    quaternion (w, v) of the axis-angle, twist = 2 atan2(v . u, w), wrapped to (-pi, pi]."""
    out = []
    for j in range(1, 24):
        aa = pose72[3 * j:3 * j + 3]
        theta = np.linalg.norm(aa)
        w = np.cos(0.5 * theta)
        v = aa * (np.sin(0.5 * theta) / theta) if theta > 0 else np.zeros(3)
        bone = rest29[HYBRIK29_CHILDREN[j]] - rest29[j]
        u = bone / np.linalg.norm(bone)
        phi = 2.0 * np.arctan2(v @ u, w)
        if phi > np.pi:
            phi -= 2.0 * np.pi
        elif phi <= -np.pi:
            phi += 2.0 * np.pi
        out.append(float(phi))
    return out


def coco_json(seqs, model, expected):
    """3DPW_test_new.json content: one image per frame, one annotation per person-frame with
    campose_valid (as upstream's parse). Values come from the same people as the sequence files:
    smpl_param.pose has the root in camera axes (global_orient_cam), smpl_param.trans is such that
    LBS(pose, shape) + trans is the camera-frame mesh, the joints are expected.json's."""
    images, annotations = [], []
    for seq, exp in zip(seqs, expected["sequences"]):
        assert seq["name"] == exp["name"]
        img_ids = []
        for i in range(seq["n"]):
            img_ids.append(len(images))
            images.append({
                "id": len(images), "width": WIDTH, "height": HEIGHT, "sequence": seq["name"],
                "file_name": "image_%05d.jpg" % i,
                "cam_param": {"focal": [FX, FY], "princpt": [CX, CY]},
            })
        for i in range(seq["n"]):
            for pp, pe in zip(seq["people"], exp["people"]):
                fr = pe["frames"][i]
                if not pp["valid"][i]:
                    continue
                rest29 = rest_joints29(model, pp["betas"])
                pose = np.array(fr["poses"])
                pose[0:3] = fr["global_orient_cam"]
                joints_cam = np.array(fr["joints_cam"])
                trans = np.array(fr["root_cam"]) - rest29[0]
                # the camera-frame mesh is LBS(pose with the camera-axes root, shape) + trans (to
                # ~3e-8 m: scipy's as_rotvec loses digits at these near-pi root angles)
                verts, joints = pose_body(model, pp["betas"], pose[None])
                verts_cam = to_cam(seq["cams"][i], pp["verts_world"][i])
                assert np.abs(verts[0] + trans - verts_cam).max() < 1e-6, (seq["name"], i)
                assert np.abs(joints[0] + trans - joints_cam).max() < 1e-6, (seq["name"], i)
                assert np.abs(joints[0, 0] + trans - joints_cam[0]).max() < 1e-12
                h36m = model["J_regressor_h36m"] @ (verts[0] + trans)
                assert np.abs(h36m - np.array(fr["h36m_cam"])).max() < 1e-6
                uv = project(joints_cam)
                angle = twist_angles(pose, rest29)
                x, y, w, h = fr["bbox"]
                annotations.append({
                    "id": len(annotations), "image_id": img_ids[i], "category_id": 1, "iscrowd": 0,
                    "area": w * h, "bbox": fr["bbox"],
                    "smpl_param": {"shape": pp["betas"].tolist(), "pose": pose.tolist(),
                                   "trans": trans.tolist(), "gender": GENDER_NAMES[pp["gender"]]},
                    "h36m_joints": fr["h36m_cam"],
                    "smpl_joint_cam": fr["joints_cam"],
                    "smpl_joint_img": np.concatenate([uv, joints_cam[:, 2:3]], axis=1).tolist(),
                    "angle_twist": {"angle": angle, "cos": np.cos(angle).tolist(),
                                    "sin": np.sin(angle).tolist()},
                })
    assert all(a > INVALID_TWIST for ann in annotations for a in ann["angle_twist"]["angle"])
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}


def check_coco(path, ref):
    """Reads the file back (exact values) and indexes it the way pycocotools.COCO does."""
    with open(path) as fh:
        d = json.load(fh)
    assert d == ref, path
    imgs = {im["id"]: im for im in d["images"]}
    assert len(imgs) == len(d["images"])
    anns = {a["id"]: a for a in d["annotations"]}
    assert len(anns) == len(d["annotations"])
    cats = {c["id"] for c in d["categories"]}
    for a in d["annotations"]:
        im = imgs[a["image_id"]]
        assert a["category_id"] in cats
        assert os.path.isfile(out("imageFiles", im["sequence"], im["file_name"])), im
        assert len(a["smpl_param"]["pose"]) == 72 and len(a["smpl_param"]["shape"]) == 10
        assert np.array(a["smpl_joint_cam"]).shape == (24, 3)
        assert np.array(a["smpl_joint_img"]).shape == (24, 3)
        assert np.array(a["h36m_joints"]).shape == (17, 3)
        for k in ("angle", "cos", "sin"):
            assert len(a["angle_twist"][k]) == 23


def main():
    rng = np.random.default_rng(SEED)
    model = load_default_model()
    nb = model["shapedirs"].shape[2]
    print("default model: V=%d F=%d shape components=%d" % (
        model["v_template"].shape[0], model["faces"].shape[0], nb))

    seqs = [
        make_sequence(rng, model, "fixture_walk_00", 5,
                      [dict(gender="m", pelvis=(-0.10, 0.0), velocity=0.04, yaw0=0.25, yaw_step=-0.04)],
                      cam_centre=np.array([0.0, 1.0, 3.7]),
                      yaws=0.010 * np.arange(5), pitches=-0.03 + 0.006 * np.arange(5), invalid=set()),
        make_sequence(rng, model, "fixture_pair_01", 4,
                      [dict(gender="m", pelvis=(-0.50, 0.0), velocity=0.0, yaw0=0.20, yaw_step=0.03),
                       dict(gender="f", pelvis=(0.50, -0.30), velocity=-0.01, yaw0=-0.25, yaw_step=-0.02)],
                      cam_centre=np.array([0.0, 1.05, 3.9]),
                      yaws=-0.008 * np.arange(4), pitches=-0.02 - 0.004 * np.arange(4),
                      invalid={(1, 2)}),
    ]

    expected = {"generator": "tests/data/3dpw/gen_3dpw_fixture.py", "body_model": "default",
                "frame_rate": 30, "sequences": []}
    os.makedirs(out("sequenceFiles", "test"), exist_ok=True)
    for seq in seqs:
        content = pickle_content(seq)
        path = out("sequenceFiles", "test", seq["name"] + ".pkl")
        with open(path, "wb") as fh:
            fh.write(py2_dumps(content))
        check_pickle(path, content)

        expected["sequences"].append(expected_entry(seq, model))

        os.makedirs(out("imageFiles", seq["name"]), exist_ok=True)
        for i, fid in enumerate(content["img_frame_ids"]):
            img = render(seq["cams"][i], [pp["verts_world"][i] for pp in seq["people"]], model["faces"])
            img.save(out("imageFiles", seq["name"], "image_%05d.jpg" % fid), "JPEG", quality=JPEG_QUALITY)
        print("%s: %d people, %d frames" % (seq["name"], len(seq["people"]), seq["n"]))

    with open(out("expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)
        fh.write("\n")

    coco = coco_json(seqs, model, expected)
    os.makedirs(out("json"), exist_ok=True)
    with open(out("json", COCO_JSON), "w") as fh:
        json.dump(coco, fh, separators=(",", ":"))
        fh.write("\n")
    check_coco(out("json", COCO_JSON), coco)
    size = os.path.getsize(out("json", COCO_JSON))
    assert size < 150_000, size
    print("json/%s: %d images, %d annotations, %d bytes" % (
        COCO_JSON, len(coco["images"]), len(coco["annotations"]), size))

    total = 0
    for root, _, files in os.walk(HERE):
        for f in files:
            if "__pycache__" not in root:
                total += os.path.getsize(os.path.join(root, f))
    assert total < 400_000, total
    print("total %d bytes" % total)
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
