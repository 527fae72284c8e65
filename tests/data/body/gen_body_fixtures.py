#!/usr/bin/env python3
"""Generates the body-model reader and LBS fixtures in tests/data/body/ (deterministic, fixed seed).

Pins (the versions these files were generated with):
    Python 3.11.7, numpy 2.4.6, scipy 1.17.1, torch 2.15.0, smplx 0.1.28, chumpy 0.70,
    safetensors 0.8.0 (only for the optional ikol-*.safetensors references).
chumpy 0.70 does not install with pip's build isolation (its setup.py imports pip) and does not
import on numpy >= 1.24 / Python >= 3.11 as is: install it with
    pip install --no-build-isolation chumpy==0.70 smplx==0.1.28
and this script patches the missing names (np.bool, np.int, ..., inspect.getargspec) before
importing it.

Run from the repository root:
    /root/.cache/ikol/pyenv/bin/python tests/data/body/gen_body_fixtures.py

Writes (all small, < 300 KB each):
  random_smpl.npz          random SMPL-format model, smplx layout (dense J_regressor), deflate
  random_smpl.pkl          the same model as the SMPL v1.0.0 files are: Python 2.7 cPickle
                           protocol 2 (written byte by byte below, as cPickle writes it), chumpy
                           Ch arrays, scipy.sparse.csc csc_matrix J_regressor, py2 str keys
  random_smpl_py3.pkl      the same objects dumped by Python 3 pickle, protocol 2
  random_smpl_300.pkl      300 shape components (first 10 = random_smpl's), no posedirs, py2
  random_expected_*.npy    the model's arrays as plain .npy (C order) for the reader tests
  random_lbs_{betas,pose,verts,joints}.npy   smplx.lbs.lbs references (float64) on the model
  pw3d_like_py2.pkl        3DPW-like sequence file, byte-exact Python 2 protocol 2 layout
  pw3d_like_py3.pkl        the same content, Python 3 pickle.dump(..., protocol=2)
  {small,default}_lbs_*.npy  smplx.lbs.lbs references on elements/body/assets/ikol-*.safetensors
                           (only when those files exist; default keeps every 7th vertex)
"""

import inspect
import io
import os
import pickle
import struct
import sys
import warnings
import zipfile

import numpy as np

# --- make chumpy 0.70 importable on numpy 2 / Python 3.11 -------------------------------------
if not hasattr(inspect, "getargspec"):
    inspect.getargspec = inspect.getfullargspec
for _name, _typ in [("bool", bool), ("int", int), ("float", float), ("complex", complex),
                    ("object", object), ("unicode", str), ("str", str)]:
    if _name not in np.__dict__:
        setattr(np, _name, _typ)
warnings.filterwarnings("ignore")
import chumpy  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from smplx.lbs import lbs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
SEED = 20240611
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
V, J, B, P, F = 32, 24, 10, 207, 40


def out(name):
    return os.path.join(HERE, name)


# ------------------------------------------------------------------------------------------------
# A writer that emits what Python 2.7's cPickle.dump(obj, f, 2) emits for the object kinds in SMPL
# and 3DPW files: memo indices from 1, py2 str as SHORT_BINSTRING/BINSTRING, GLOBALs memoized and
# re-used with BINGET, numpy arrays via numpy.core.multiarray._reconstruct with dtype objects
# numpy.dtype(code, 0, 1) shared through the memo, new-style objects (chumpy Ch, scipy csc_matrix)
# via copy_reg.__newobj__ = NEWOBJ + BUILD of their __dict__, sets via __builtin__.set.

class Py2Ch:
    """Stands for a chumpy.ch.Ch holding array x (py2 state dict layout of chumpy)."""

    def __init__(self, x):
        self.x = np.asarray(x)


class Py2Csc:
    """Stands for a scipy.sparse.csc.csc_matrix as pickled by scipy 0.x under Python 2."""

    def __init__(self, m):
        m = sp.csc_matrix(m)
        self.state = [("_shape", tuple(int(d) for d in m.shape)), ("maxprint", 50),
                      ("indices", m.indices.astype(np.int32)), ("indptr", m.indptr.astype(np.int32)),
                      ("format", "csc"), ("data", m.data.astype(np.float64))]


class Py2Set:
    def __init__(self, items):
        self.items = list(items)


class Py2Pickler:
    def __init__(self):
        self.buf = bytearray(b"\x80\x02")
        self.memo = {}

    def put(self, key):
        i = len(self.memo) + 1
        self.memo[key] = i
        self.buf += (b"q" + bytes([i])) if i < 256 else (b"r" + struct.pack("<I", i))

    def get(self, key):
        i = self.memo[key]
        self.buf += (b"h" + bytes([i])) if i < 256 else (b"j" + struct.pack("<I", i))

    def str_(self, s):  # py2 str (bytes); interned-like: memoized by value
        b = s.encode("latin1") if isinstance(s, str) else bytes(s)
        key = ("str", b)
        if key in self.memo:
            return self.get(key)
        self.buf += (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)
        self.put(key)

    def data_(self, b):  # array payload: a fresh py2 str, memoized by identity (never shared)
        self.buf += (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)
        self.put(("data", len(self.memo)))

    def global_(self, module, name):
        key = ("global", module, name)
        if key in self.memo:
            return self.get(key)
        self.buf += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self.put(key)

    def int_(self, x):
        if 0 <= x <= 0xFF:
            self.buf += b"K" + bytes([x])
        elif 0 <= x <= 0xFFFF:
            self.buf += b"M" + struct.pack("<H", x)
        elif -(2 ** 31) <= x < 2 ** 31:
            self.buf += b"J" + struct.pack("<i", x)
        else:
            raise ValueError("long not needed here")

    def tuple_(self, items, memo_key=None):
        if not items:
            self.buf += b")"
            return
        if len(items) <= 3:
            for it in items:
                self.save(it)
            self.buf += bytes([0x85 + len(items) - 1])
        else:
            self.buf += b"("
            for it in items:
                self.save(it)
            self.buf += b"t"
        self.put(memo_key or ("tuple", len(self.memo)))

    def dtype_(self, dt):
        code = dt.kind + str(dt.itemsize)
        order = "|" if dt.itemsize == 1 else "<"
        key = ("dtype", code)
        if key in self.memo:
            return self.get(key)
        self.global_("numpy", "dtype")
        self.str_(code)
        self.buf += b"K\x00K\x01\x87"
        self.put(("tuple", len(self.memo)))
        self.buf += b"R"
        self.put(key)
        self.buf += b"(K\x03"
        self.str_(order)
        self.buf += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
        self.put(("tuple", len(self.memo)))
        self.buf += b"b"

    def array_(self, a):
        fortran = a.flags.f_contiguous and not a.flags.c_contiguous
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.buf += b"K\x00\x85"
        self.put(("tuple", len(self.memo)))
        self.str_("b")
        self.buf += b"\x87"
        self.put(("tuple", len(self.memo)))
        self.buf += b"R"
        self.put(("obj", len(self.memo)))
        self.buf += b"(K\x01"
        self.tuple_(tuple(int(d) for d in a.shape))
        self.dtype_(a.dtype)
        self.buf += b"\x88" if fortran else b"\x89"
        self.data_(a.tobytes(order="F" if fortran else "C"))
        self.buf += b"t"
        self.put(("tuple", len(self.memo)))
        self.buf += b"b"

    def newobj_(self, module, name, state_items):
        self.global_(module, name)
        self.buf += b")\x81"
        self.put(("obj", len(self.memo)))
        self.dict_(state_items)
        self.buf += b"b"

    def dict_(self, items):
        self.buf += b"}"
        self.put(("dict", len(self.memo)))
        if len(items) == 1:
            k, v = items[0]
            self.save(k)
            self.save(v)
            self.buf += b"s"
        elif items:
            self.buf += b"("
            for k, v in items:
                self.save(k)
                self.save(v)
            self.buf += b"u"

    def save(self, x):
        if x is None:
            self.buf += b"N"
        elif x is True:
            self.buf += b"\x88"
        elif x is False:
            self.buf += b"\x89"
        elif isinstance(x, int):
            self.int_(x)
        elif isinstance(x, float):
            self.buf += b"G" + struct.pack(">d", x)
        elif isinstance(x, (str, bytes)):
            self.str_(x)
        elif isinstance(x, tuple):
            self.tuple_(x)
        elif isinstance(x, list):
            self.buf += b"]"
            self.put(("list", len(self.memo)))
            if len(x) == 1:
                self.save(x[0])
                self.buf += b"a"
            elif x:
                self.buf += b"("
                for it in x:
                    self.save(it)
                self.buf += b"e"
        elif isinstance(x, dict):
            self.dict_(list(x.items()))
        elif isinstance(x, np.ndarray):
            self.array_(x)
        elif isinstance(x, Py2Set):
            self.global_("__builtin__", "set")
            self.save(x.items)
            self.buf += b"\x85"
            self.put(("tuple", len(self.memo)))
            self.buf += b"R"
            self.put(("obj", len(self.memo)))
        elif isinstance(x, Py2Ch):
            self.newobj_("chumpy.ch", "Ch", [
                ("_dirty_vars", Py2Set(["x"])), ("_itr", None), ("_make_dense", False),
                ("_make_sparse", False), ("_depends_on_deps", {}), ("x", x.x)])
        elif isinstance(x, Py2Csc):
            self.newobj_("scipy.sparse.csc", "csc_matrix", x.state)
        else:
            raise TypeError(type(x))

    def dumps(self, x):
        self.save(x)
        self.buf += b"."
        return bytes(self.buf)


def py2_dumps(obj):
    return Py2Pickler().dumps(obj)


# ------------------------------------------------------------------------------------------------

def random_model(rng):
    v_template = rng.normal(scale=0.3, size=(V, 3))
    shapedirs = rng.normal(scale=0.02, size=(V, 3, B))
    posedirs = rng.normal(scale=0.01, size=(V, 3, P))
    jreg = np.zeros((J, V))
    for j in range(J):
        idx = rng.choice(V, size=4, replace=False)
        jreg[j, idx] = rng.dirichlet(np.ones(4))
    weights = np.zeros((V, J))
    for v in range(V):
        idx = rng.choice(J, size=3, replace=False)
        weights[v, idx] = rng.dirichlet(np.ones(3))
    kintree = np.array([[4294967295] + SMPL_PARENTS[1:], list(range(J))], dtype=np.int64)
    faces = np.stack([rng.choice(V, size=3, replace=False) for _ in range(F)]).astype(np.uint32)
    return dict(v_template=v_template, shapedirs=shapedirs, posedirs=posedirs, J_regressor=jreg,
                weights=weights, kintree_table=kintree, f=faces, J=jreg @ v_template)


def smpl_pkl_objects(m, py2):
    """The key -> object dict of an SMPL v1.0.0 model file."""
    Ch = Py2Ch if py2 else chumpy.Ch
    csc = Py2Csc if py2 else sp.csc_matrix
    d = {
        "J_regressor_prior": csc(m["J_regressor"]),
        "f": m["f"],
        "J_regressor": csc(m["J_regressor"]),
        "kintree_table": m["kintree_table"],
        "J": Ch(m["J"]),
        "weights_prior": m["weights"].copy(),
        # Fortran order on purpose: the reader must transpose it
        "weights": np.asfortranarray(m["weights"]),
        "vert_sym_idxs": np.arange(V, dtype=np.int64)[::-1].copy(),
        "bs_style": "lbs",
        "v_template": Ch(m["v_template"]),
        "shapedirs": Ch(m["shapedirs"]),
        "bs_type": "lrotmin",
    }
    if m.get("posedirs") is not None:
        d["posedirs"] = Ch(m["posedirs"])
    return d


def check_pkl(path, m):
    """Loads a written pickle back with Python (encoding='latin1', as smplx does) and compares."""
    with open(path, "rb") as fh:
        d = pickle.load(fh, encoding="latin1")
    for k in ["v_template", "shapedirs", "posedirs", "J"]:
        if k in m and m[k] is not None and k in d:
            assert np.array_equal(np.array(d[k]), m[k]), (path, k)
    assert np.array_equal(d["J_regressor"].toarray(), m["J_regressor"]), path
    assert np.array_equal(np.asarray(d["weights"]), m["weights"]), path
    assert np.array_equal(d["kintree_table"], m["kintree_table"]), path
    assert np.array_equal(d["f"], m["f"]), path
    assert d["bs_style"] == "lbs" and d["bs_type"] == "lrotmin"


def lbs_reference(model, betas, pose):
    """smplx.lbs.lbs in float64. model: v_template [V,3], shapedirs [V,3,B], posedirs [V,3,207]
    or None, J_regressor dense [24,V], weights dense [V,24], parents (root -1)."""
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    nv = model["v_template"].shape[0]
    posedirs = model.get("posedirs")
    if posedirs is None:
        posedirs = np.zeros((nv, 3, P))
    posedirs = np.reshape(posedirs, [-1, P]).T  # smplx: (207, V*3)
    parents = torch.as_tensor(model["parents"], dtype=torch.long)
    with torch.no_grad():
        verts, joints = lbs(t(betas), t(pose), t(model["v_template"]), t(model["shapedirs"]),
                            t(posedirs), t(model["J_regressor"]), parents, t(model["weights"]))
    return verts.numpy(), joints.numpy()


def savez_compressed_fixed(path, **arrays):
    """np.savez_compressed with a fixed member timestamp, so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, a in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            b = io.BytesIO()
            np.lib.format.write_array(b, np.asanyarray(a), allow_pickle=False)
            zf.writestr(info, b.getvalue())


def write_random(rng):
    m = random_model(rng)
    # smplx layout npz (deflate members, as np.savez_compressed); kintree as uint32, faces int32
    savez_compressed_fixed(out("random_smpl.npz"), v_template=m["v_template"], shapedirs=m["shapedirs"],
                           posedirs=m["posedirs"], J_regressor=m["J_regressor"], weights=m["weights"],
                           kintree_table=m["kintree_table"].astype(np.uint32), f=m["f"].astype(np.int32),
                           J=m["J"])
    with open(out("random_smpl.pkl"), "wb") as fh:
        fh.write(py2_dumps(smpl_pkl_objects(m, py2=True)))
    check_pkl(out("random_smpl.pkl"), m)
    with open(out("random_smpl_py3.pkl"), "wb") as fh:
        pickle.dump(smpl_pkl_objects(m, py2=False), fh, protocol=2)
    check_pkl(out("random_smpl_py3.pkl"), m)

    m300 = dict(m)
    extra = rng.normal(scale=0.02, size=(V, 3, 300 - B))
    m300["shapedirs"] = np.concatenate([m["shapedirs"], extra], axis=2)
    m300["posedirs"] = None
    with open(out("random_smpl_300.pkl"), "wb") as fh:
        fh.write(py2_dumps(smpl_pkl_objects(m300, py2=True)))
    check_pkl(out("random_smpl_300.pkl"), m300)

    # independent references for the reader tests: plain .npy, C order
    np.save(out("random_expected_v_template.npy"), m["v_template"])
    np.save(out("random_expected_shapedirs.npy"), m["shapedirs"])
    np.save(out("random_expected_weights.npy"), m["weights"])
    np.save(out("random_expected_j_regressor.npy"), m["J_regressor"])
    np.save(out("random_expected_faces.npy"), m["f"].astype(np.int64))

    model = dict(m, parents=np.array(SMPL_PARENTS))
    betas = rng.normal(size=(3, B))
    pose = rng.normal(scale=0.4, size=(3, 72))
    verts, joints = lbs_reference(model, betas, pose)
    np.save(out("random_lbs_betas.npy"), betas)
    np.save(out("random_lbs_pose.npy"), pose)
    np.save(out("random_lbs_verts.npy"), verts)
    np.save(out("random_lbs_joints.npy"), joints)

    print("random model: V=%d J=%d B=%d F=%d" % (V, J, B, F))
    print("  v_template[0] =", repr(m["v_template"][0].tolist()))
    print("  v_template[31][2] =", repr(float(m["v_template"][31][2])))
    print("  shapedirs[5,1,3] =", repr(float(m["shapedirs"][5, 1, 3])))
    print("  posedirs[7,2,100] =", repr(float(m["posedirs"][7, 2, 100])))
    print("  J_regressor nnz =", int((m["J_regressor"] != 0).sum()),
          " row 3 =", [(int(c), float(m["J_regressor"][3, c])) for c in np.nonzero(m["J_regressor"][3])[0]])
    print("  weights[10] nonzero =", [(int(c), float(m["weights"][10, c])) for c in np.nonzero(m["weights"][10])[0]])
    print("  faces[0] =", m["f"][0].tolist(), " faces[39] =", m["f"][39].tolist())
    print("  shapedirs_300[0,0,299] =", repr(float(m300["shapedirs"][0, 0, 299])))
    print("  lbs verts[1,4] =", repr(verts[1, 4].tolist()), " joints[2,23] =", repr(joints[2, 23].tolist()))


def pw3d_like(py2):
    """3DPW-like content with values given by formulas (the Rust test recomputes them)."""
    n = 5
    seq = "downtown_caf\xe9_00"
    return {
        "sequence": seq,
        "genders": ["m", "f"],
        "poses": [p + 0.001 * np.arange(n * 72).reshape(n, 72) for p in range(2)],
        "betas": [np.linspace(-1.0, 1.0, 10) * (p + 1) for p in range(2)],
        "trans": [np.full((n, 3), 0.5 * p) for p in range(2)],
        "img_frame_ids": np.arange(n, dtype=np.int64) * 2,
        "campose_valid": [np.array([True, True, False, True, True]),
                          np.array([False, True, True, True, False])],
        "cam_intrinsics": np.array([[1961.8, 0.0, 540.0], [0.0, 1969.2, 960.0], [0.0, 0.0, 1.0]]),
        "cam_poses": np.tile(np.eye(4), (n, 1, 1)),
    }


def write_pw3d():
    with open(out("pw3d_like_py2.pkl"), "wb") as fh:
        fh.write(py2_dumps(pw3d_like(py2=True)))
    with open(out("pw3d_like_py3.pkl"), "wb") as fh:
        pickle.dump(pw3d_like(py2=False), fh, protocol=2)
    for name in ["pw3d_like_py2.pkl", "pw3d_like_py3.pkl"]:
        with open(out(name), "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
        ref = pw3d_like(py2=False)
        assert d["sequence"] == ref["sequence"] and d["genders"] == ref["genders"]
        for k in ["poses", "betas", "trans", "campose_valid"]:
            for a, b in zip(d[k], ref[k]):
                assert a.dtype == b.dtype and np.array_equal(a, b), (name, k)
        assert d["img_frame_ids"].dtype == np.int64 and np.array_equal(d["img_frame_ids"], ref["img_frame_ids"])


def csr_dense(st, prefix, shape):
    return sp.csr_matrix((st[prefix + ".data"].astype(np.float64), st[prefix + ".indices"],
                          st[prefix + ".indptr"]), shape=shape).toarray()


def write_asset_references(rng):
    from safetensors.numpy import load_file
    for tag, stride in [("small", 1), ("default", 7)]:
        path = os.path.join(REPO, "elements", "body", "assets", "ikol-%s.safetensors" % tag)
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            print("skipping %s references: %s does not exist yet (or is empty)" % (tag, path))
            continue
        try:
            st = load_file(path)
        except Exception as e:  # the asset is being rebuilt: leave the old references alone
            print("skipping %s references: cannot read %s: %s" % (tag, path, e))
            continue
        v_template = st["v_template"].astype(np.float64)
        nv = v_template.shape[0]
        model = dict(
            v_template=v_template,
            shapedirs=st["shapedirs"].astype(np.float64),
            posedirs=None,
            J_regressor=csr_dense(st, "j_regressor", (J, nv)),
            weights=csr_dense(st, "weights", (nv, J)),
            parents=st["parents"].astype(np.int64),
        )
        nb = model["shapedirs"].shape[2]
        betas = rng.normal(size=(3, nb))
        pose = rng.normal(scale=0.4, size=(3, 72))
        verts, joints = lbs_reference(model, betas, pose)
        idx = np.arange(0, nv, stride, dtype=np.int64)
        np.save(out("%s_lbs_betas.npy" % tag), betas)
        np.save(out("%s_lbs_pose.npy" % tag), pose)
        np.save(out("%s_lbs_vert_idx.npy" % tag), idx)
        np.save(out("%s_lbs_verts.npy" % tag), verts[:, idx])
        np.save(out("%s_lbs_joints.npy" % tag), joints)
        print("%s: V=%d, stored %d vertices" % (tag, nv, len(idx)))


def main():
    rng = np.random.default_rng(SEED)
    write_random(rng)
    write_pw3d()
    write_asset_references(np.random.default_rng(SEED + 1))
    for name in sorted(os.listdir(HERE)):
        size = os.path.getsize(out(name))
        assert size < 300_000, (name, size)
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
