"""Builds the PyTorch parity fixture of ikol-backbone (tests/parity.rs).

Pinned: Python 3.11, torch 2.15.0 (CPU), numpy 2.4.6, safetensors 0.8.0,
opencv-python-headless 5.0.0.93 (for the cv2.warpAffine reference only).
Run from anywhere:  /root/.cache/ikol/pyenv/bin/python elements/backbone/tools/gen_backbone_fixture.py

Writes to elements/backbone/tests/data/:
  * ikol24_r34w2.pth   IKOL24 with a ResNet-34 layout at width 2 (deconv 8, 8 depth bins,
                       fc 16, 64 x 64 input), random weights and BatchNorm running statistics,
                       saved as a plain state_dict with upstream key names plus one `smpl.*`
                       buffer (upstream checkpoints carry the SMPL layer's buffers).
  * hybrik29_r50w1.pth HybrIK-29 with a ResNet-50 layout at width 1 (bottleneck blocks), saved
                       as {"epoch": 3, "model": {"module." + key: ...}} (a training-script wrapper
                       around a DataParallel state dict).
  * backbone_fixture.safetensors  the outputs of both networks (eval mode) on the input below,
                       the flip-test outputs, uvd_to_cam, the HybrIK crop affine of a box and a
                       cv2.warpAffine crop of a small frame.

The network input is not stored: both sides compute
  x[n, c, h, w] = ((7n + 13c + 31h + 17w) mod 97) / 48.5 - 1
which is exact in float32 in both languages.
"""

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hybrik_torch import HeatmapNet, randomise  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"


def formula_input(n, size):
    i = torch.arange(n).view(n, 1, 1, 1)
    c = torch.arange(3).view(1, 3, 1, 1)
    h = torch.arange(size).view(1, 1, size, 1)
    w = torch.arange(size).view(1, 1, 1, size)
    k = (7 * i + 13 * c + 31 * h + 17 * w) % 97
    return (k.to(torch.float32) / 48.5 - 1.0).contiguous()


def build(variant, depth, width, deconv, depth_dim, fc, seed, x):
    torch.manual_seed(seed)
    net = HeatmapNet(variant, depth=depth, width=width, deconv_dim=deconv, depth_dim=depth_dim,
                     fc_dim=fc, input_size=64)
    gen = torch.Generator().manual_seed(seed)
    randomise(net, gen)
    net.eval()
    # Scale the final layer so the heatmap logits on x have standard deviation 1.5: the
    # soft-argmax is then neither uniform nor one-hot.
    with torch.no_grad():
        logits = net.final_layer(net.deconv_layers(net.preact(x)))
        s = 1.5 / float(logits.std())
        net.final_layer.weight.mul_(s)
        net.final_layer.bias.mul_(s)
    return net


# --- HybrIK's crop affine (hybrik/utils/bbox.py _box_to_center_scale and
# hybrik/utils/transforms.py get_affine_transform), re-written here ---
def box_to_center_scale(x, y, w, h, aspect_ratio=1.0, scale_mult=1.25):
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w, h], dtype=np.float32) * scale_mult
    return center, scale


def get_dir(src_point, rot_rad):
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return [src_point[0] * cs - src_point[1] * sn, src_point[0] * sn + src_point[1] * cs]


def get_3rd_point(a, b):
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(center, scale, rot, output_size):
    src_w = scale[0]
    dst_w, dst_h = output_size
    rot_rad = np.pi * rot / 180
    src_dir = get_dir([0, src_w * -0.5], rot_rad)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center
    src[1, :] = center + src_dir
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2:, :] = get_3rd_point(src[0, :], src[1, :])
    dst[2:, :] = get_3rd_point(dst[0, :], dst[1, :])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    t = {}

    # ---------------- IKOL-24, ResNet-34 layout, width 2 ----------------
    x = formula_input(2, 64)
    net = build("ikol24", 34, 2, (8, 8, 8), 8, 16, seed=24, x=x)
    with torch.no_grad():
        uvd, phi, beta, leaf = net.heads(x)
        f_uvd, f_phi, f_beta, f_leaf = net.flip_test(x)
        # uvd_to_cam with a crop affine, inverse intrinsics and a ground-truth root.
        trans_inv = torch.tensor([[[2.5, 0.1, 300.0], [-0.1, 2.5, 120.0]],
                                  [[1.5, 0.0, 40.0], [0.0, 1.5, 60.0]]], dtype=torch.float32)
        fx, fy, cx, cy = 1000.0, 990.0, 640.0, 360.0
        k_inv = torch.tensor([[1 / fx, 0, -cx / fx], [0, 1 / fy, -cy / fy], [0, 0, 1]],
                             dtype=torch.float32).expand(2, 3, 3)
        root = torch.tensor([[0.3, -0.1, 4.5], [-0.5, 0.2, 6.0]], dtype=torch.float32)
        depth_factor = torch.tensor([[2.0], [2.0]], dtype=torch.float32)
        xyz = net.uvd_to_cam(uvd, trans_inv, k_inv, root, depth_factor)
        xyz = xyz - xyz[:, 0:1, :]  # upstream subtracts joint 0 again; units of 2 m
    sd = dict(net.state_dict())
    sd["smpl.v_template"] = torch.randn(6, 3)
    torch.save(sd, OUT / "ikol24_r34w2.pth")
    t.update({
        "ikol24.uvd": uvd, "ikol24.phi": phi, "ikol24.beta": beta, "ikol24.leaf": leaf,
        "ikol24.flip.uvd": f_uvd, "ikol24.flip.phi": f_phi, "ikol24.flip.beta": f_beta,
        "ikol24.flip.leaf": f_leaf,
        "ikol24.cam.trans_inv": trans_inv, "ikol24.cam.k": torch.tensor([fx, fy, cx, cy]),
        "ikol24.cam.root": root, "ikol24.cam.xyz_2m": xyz,
    })

    # ---------------- HybrIK-29, ResNet-50 layout, width 1 ----------------
    x29 = formula_input(2, 64)
    net29 = build("hybrik29", 50, 1, (6, 6, 6), 4, 8, seed=29, x=x29)
    with torch.no_grad():
        uvd29, phi29, beta29, _ = net29.heads(x29)
    wrapped = {"epoch": 3, "model": {"module." + k: v for k, v in net29.state_dict().items()}}
    torch.save(wrapped, OUT / "hybrik29_r50w1.pth")
    t.update({"hybrik29.uvd": uvd29, "hybrik29.phi": phi29, "hybrik29.beta": beta29})

    # ---------------- crop affine and warp (cv2) ----------------
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    box = (9.25, 4.5, 14.0, 19.5)  # x, y, w, h
    center, scale = box_to_center_scale(*box)
    trans = get_affine_transform(center, scale, 0, (32, 32))
    crop = cv2.warpAffine(frame, trans, (32, 32), flags=cv2.INTER_LINEAR)
    t.update({
        "warp.frame": torch.from_numpy(frame), "warp.box": torch.tensor(box, dtype=torch.float64),
        "warp.trans": torch.from_numpy(trans.astype(np.float64)), "warp.crop": torch.from_numpy(crop),
    })

    t = {k: v.contiguous() for k, v in t.items()}
    save_file(t, str(OUT / "backbone_fixture.safetensors"))
    for name in ["ikol24_r34w2.pth", "hybrik29_r50w1.pth", "backbone_fixture.safetensors"]:
        print(name, (OUT / name).stat().st_size, "bytes")
    print("uvd range", float(uvd.min()), float(uvd.max()), "std", float(uvd.std()))
    print("uvd29 range", float(uvd29.min()), float(uvd29.max()), "std", float(uvd29.std()))
    print("beta", beta[0, :4].tolist(), "phi", phi[0, 0].tolist(), "leaf", leaf[0, 0].tolist())


if __name__ == "__main__":
    main()
