"""HybrIK / IKOL heatmap network re-written in plain PyTorch (no torchvision, no SMPL layer).

Architecture and parameter names follow the upstream code as read for ikol-backbone:
  * HybrIK hybrik/models/layers/Resnet.py           -> ResNet (`preact`)
  * IKOL ikol/models/IKOL24.py (class IKOL24)        -> variant "ikol24"
  * HybrIK hybrik/models/simple3dposeBaseSMPL.py     -> variant "hybrik29"
The forward pass stops before the body-model layer: it returns the soft-argmax uvd, twist phi,
shape beta and (ikol24) leaf quaternions exactly as upstream computes them, plus `uvd_to_cam`
and the flip functions, written the upstream way (in-place indexing included).

Used by gen_backbone_fixture.py (parity fixture) and bench_torch.py (CPU timing).
Pinned: Python 3.11, torch 2.15.0 (CPU), numpy 2.4.6, safetensors 0.8.0.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYERS = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
}

JOINT_PAIRS_24 = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23))
JOINT_PAIRS_29 = JOINT_PAIRS_24 + ((25, 26), (27, 28))
LEAF_PAIRS = ((0, 1), (3, 4))


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=0.1)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=0.1)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, momentum=0.1)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return F.relu(out + residual)


class ResNet(nn.Module):
    def __init__(self, depth=34, width=64):
        super().__init__()
        kind, layers = LAYERS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-5, momentum=0.1, affine=True)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self.make_layer(block, width, layers[0])
        self.layer2 = self.make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self.make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self.make_layer(block, width * 8, layers[3], stride=2)
        self.feature_channel = width * 8 * block.expansion

    def make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


class HeatmapNet(nn.Module):
    """IKOL24 / Simple3DPoseBaseSMPL(24) without the SMPL layer."""

    def __init__(self, variant="ikol24", depth=34, width=64, deconv_dim=(256, 256, 256),
                 depth_dim=64, fc_dim=1024, input_size=256):
        super().__init__()
        self.variant = variant
        self.num_joints = 24 if variant == "ikol24" else 29
        self.depth_dim = depth_dim
        self.height_dim = input_size // 4
        self.width_dim = input_size // 4
        self.preact = ResNet(depth, width)
        self.feature_channel = self.preact.feature_channel
        self.deconv_dim = list(deconv_dim)
        self.deconv_layers = self._make_deconv_layer()
        self.final_layer = nn.Conv2d(self.deconv_dim[2], self.num_joints * self.depth_dim,
                                     kernel_size=1, stride=1, padding=0)
        self.register_buffer("init_shape", torch.zeros(10))
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(self.feature_channel, fc_dim)
        self.drop1 = nn.Dropout(p=0.5)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.drop2 = nn.Dropout(p=0.5)
        self.decshape = nn.Linear(fc_dim, 10)
        self.decphi = nn.Linear(fc_dim, 23 * 2)
        if variant == "ikol24":
            self.decleaf = nn.Linear(fc_dim, 5 * 4)

    def _make_deconv_layer(self):
        layers = []
        cin = self.feature_channel
        for c in self.deconv_dim:
            layers.append(nn.ConvTranspose2d(cin, c, kernel_size=4, stride=2, padding=1, bias=False))
            layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU(inplace=True))
            cin = c
        return nn.Sequential(*layers)

    # --- upstream helpers (IKOL24.py / simple3dposeBaseSMPL.py), unchanged in substance ---
    def uvd_to_cam(self, uvd_jts, trans_inv, intrinsic_param, joint_root, depth_factor, return_relative=True):
        uvd_jts_new = uvd_jts.clone()
        uvd_jts_new[:, :, 0] = (uvd_jts[:, :, 0] + 0.5) * self.width_dim * 4.
        uvd_jts_new[:, :, 1] = (uvd_jts[:, :, 1] + 0.5) * self.height_dim * 4.
        uvd_jts_new[:, :, 2] = uvd_jts[:, :, 2] * depth_factor
        dz = uvd_jts_new[:, :, 2]
        uv_homo_jts = torch.cat((uvd_jts_new[:, :, :2], torch.ones_like(uvd_jts_new)[:, :, 2:]), dim=2)
        uv_jts = torch.matmul(trans_inv.unsqueeze(1), uv_homo_jts.unsqueeze(-1))
        cam_2d_homo = torch.cat((uv_jts, torch.ones_like(uv_jts)[:, :, :1, :]), dim=2)
        xyz_jts = torch.matmul(intrinsic_param.unsqueeze(1), cam_2d_homo)
        xyz_jts = xyz_jts.squeeze(dim=3)
        abs_z = dz + joint_root[:, 2].unsqueeze(-1)
        xyz_jts = xyz_jts * abs_z.unsqueeze(-1)
        if return_relative:
            xyz_jts = xyz_jts - joint_root.unsqueeze(1)
        xyz_jts = xyz_jts / depth_factor.unsqueeze(-1)
        return xyz_jts

    def flip_uvd_coord(self, pred_jts, shift=False):
        pairs = JOINT_PAIRS_24 if self.num_joints == 24 else JOINT_PAIRS_29
        if shift:
            pred_jts[:, :, 0] = - pred_jts[:, :, 0]
        else:
            pred_jts[:, :, 0] = -1 / self.width_dim - pred_jts[:, :, 0]
        for dim0, dim1 in pairs:
            idx = torch.Tensor((dim0, dim1)).long()
            inv_idx = torch.Tensor((dim1, dim0)).long()
            pred_jts[:, idx] = pred_jts[:, inv_idx]
        return pred_jts

    def flip_phi(self, pred_phi):
        pred_phi[:, :, 1] = -1 * pred_phi[:, :, 1]
        for dim0, dim1 in JOINT_PAIRS_24:
            idx = torch.Tensor((dim0 - 1, dim1 - 1)).long()
            inv_idx = torch.Tensor((dim1 - 1, dim0 - 1)).long()
            pred_phi[:, idx] = pred_phi[:, inv_idx]
        return pred_phi

    def flip_leaf(self, pred_leaf):
        pred_leaf[:, :, 2] = -1 * pred_leaf[:, :, 2]
        pred_leaf[:, :, 3] = -1 * pred_leaf[:, :, 3]
        for dim0, dim1 in LEAF_PAIRS:
            idx = torch.Tensor((dim0, dim1)).long()
            inv_idx = torch.Tensor((dim1, dim0)).long()
            pred_leaf[:, idx] = pred_leaf[:, inv_idx]
        return pred_leaf

    def heads(self, x):
        """Backbone + heads: (uvd [B,J,3], phi [B,23,2], beta [B,10], leaf [B,5,4] or None)."""
        batch_size = x.shape[0]
        x0 = self.preact(x)
        out = self.deconv_layers(x0)
        out = self.final_layer(out)
        out = out.reshape((out.shape[0], self.num_joints, -1))
        out = F.softmax(out, 2)  # norm_heatmap('softmax')
        heatmaps = out / out.sum(dim=2, keepdim=True)
        heatmaps = heatmaps.reshape((heatmaps.shape[0], self.num_joints, self.depth_dim,
                                     self.height_dim, self.width_dim))
        hm_x = heatmaps.sum((2, 3))
        hm_y = heatmaps.sum((2, 4))
        hm_z = heatmaps.sum((3, 4))
        hm_x = hm_x * torch.arange(hm_x.shape[-1]).to(hm_x.dtype)
        hm_y = hm_y * torch.arange(hm_y.shape[-1]).to(hm_y.dtype)
        hm_z = hm_z * torch.arange(hm_z.shape[-1]).to(hm_z.dtype)
        coord_x = hm_x.sum(dim=2, keepdim=True) / float(self.width_dim) - 0.5
        coord_y = hm_y.sum(dim=2, keepdim=True) / float(self.height_dim) - 0.5
        coord_z = hm_z.sum(dim=2, keepdim=True) / float(self.depth_dim) - 0.5
        pred_uvd = torch.cat((coord_x, coord_y, coord_z), dim=2)

        x0 = self.avg_pool(x0).view(batch_size, -1)
        xc = self.drop2(self.fc2(self.drop1(self.fc1(x0))))
        pred_shape = self.decshape(xc) + self.init_shape.expand(batch_size, -1)
        pred_phi = self.decphi(xc).reshape(batch_size, 23, 2)
        pred_leaf = self.decleaf(xc).reshape(batch_size, 5, 4) if self.num_joints == 24 else None
        return pred_uvd, pred_phi, pred_shape, pred_leaf

    def flip_test(self, x):
        """Upstream flip test: run on the horizontally flipped crop, flip the outputs back
        (shift=True for uvd) and average uvd, phi, leaf and beta with the plain pass."""
        uvd, phi, beta, leaf = self.heads(x)
        f_uvd, f_phi, f_beta, f_leaf = self.heads(torch.flip(x, [3]))
        f_uvd = self.flip_uvd_coord(f_uvd, shift=True)
        f_phi = self.flip_phi(f_phi)
        uvd = (uvd + f_uvd) / 2
        phi = (phi + f_phi) / 2
        beta = (beta + f_beta) / 2
        if leaf is not None:
            leaf = (leaf + self.flip_leaf(f_leaf)) / 2
        return uvd, phi, beta, leaf


def randomise(model, gen, bn_stats=True, scale=1.0):
    """Non-trivial random weights: every parameter ~ N(0, s^2) with s chosen per fan-in so
    activations stay O(1); BatchNorm running stats and affine terms random, not 0/1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel() if "deconv_layers" not in name else p.shape[0] * 4
                p.copy_(torch.randn(p.shape, generator=gen) * (scale * (2.0 / fan_in) ** 0.5))
            elif name.endswith(".weight"):  # 1-D weights are BatchNorm scales
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_mean") and bn_stats:
                b.copy_(0.2 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var") and bn_stats:
                b.copy_(torch.rand(b.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith("num_batches_tracked"):
                b.fill_(1234)
            elif name == "init_shape":
                b.copy_(torch.randn(b.shape, generator=gen))
