"""IFQA (Jo et al., WACV 2023), the CNN metric: a U-Net discriminator that maps a face to a
per-pixel realness map in [0, 1]; the score is the map's mean (higher is better).

Written from the authors' description and their released model definition (AIM-SKKU/IFQA,
model.py): parameter names follow it so that their checkpoint, IFQA_Metric.pth (state_dict under
'D'), loads strictly. Input as in their test script: RGB uint8 resized to 256x256 (bilinear),
scaled to [-1, 1].
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIZE = 256


class IFQAError(RuntimeError):
    """The IFQA file is unusable; the message is meant for the user."""


class DownBlock(nn.Module):
    """Pre-activation residual block (instance norm, LeakyReLU 0.2), optional 2x average-pool downsampling."""

    def __init__(self, c_in: int, c_out: int, downsample: bool = True):
        super().__init__()
        self.downsample = downsample
        self.norm1 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv1 = nn.Conv2d(c_in, c_in, 3, 1, 1)
        self.norm2 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        if c_in != c_out:
            self.conv1x1 = nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False)

    def forward(self, x):
        skip = self.conv1x1(x) if hasattr(self, "conv1x1") else x
        h = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        if self.downsample:
            skip, h = F.avg_pool2d(skip, 2), F.avg_pool2d(h, 2)
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return (skip + h) / math.sqrt(2)


class UpBlock(nn.Module):
    """Pre-activation residual block with 2x nearest-neighbour upsampling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv1 = nn.Conv2d(c_in, c_in, 3, 1, 1)
        self.norm2 = nn.InstanceNorm2d(c_in, affine=True)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        if c_in != c_out:
            self.conv1x1 = nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False)

    def forward(self, x):
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")
        skip = up(x)
        skip = self.conv1x1(skip) if hasattr(self, "conv1x1") else skip
        h = self.conv1(up(F.leaky_relu(self.norm1(x), 0.2)))
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return (h + skip) / math.sqrt(2)


class IFQANet(nn.Module):
    """(B, 3, 256, 256) in [-1, 1] -> (B, 1, 256, 256) realness map. Decoder inputs are gated by the
    encoder feature of the same scale: d * e + e."""

    def __init__(self):
        super().__init__()
        self.encoder128 = DownBlock(3, 64)  # 256 -> 128
        self.encoder64 = DownBlock(64, 128)
        self.encoder32 = DownBlock(128, 256)
        self.encoder16 = DownBlock(256, 512)
        self.encoder8 = DownBlock(512, 1024)  # 16 -> 8
        self.btn = nn.Sequential(*[DownBlock(1024, 1024, downsample=False) for _ in range(4)])
        self.decoder16 = UpBlock(1024, 512)
        self.decoder32 = UpBlock(512, 256)
        self.decoder64 = UpBlock(256, 128)
        self.decoder128 = UpBlock(128, 64)
        self.decoder256 = nn.Sequential(UpBlock(64, 1), nn.Sigmoid())

    def forward(self, x):
        e128 = self.encoder128(x)
        e64 = self.encoder64(e128)
        e32 = self.encoder32(e64)
        e16 = self.encoder16(e32)
        d = self.decoder16(self.btn(self.encoder8(e16)))
        for decoder, skip in ((self.decoder32, e16), (self.decoder64, e32), (self.decoder128, e64), (self.decoder256, e128)):
            d = decoder(d * skip + skip)
        return d


def read_ifqa_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle with code, truncated file, not a checkpoint
        raise IFQAError(f"{path}: not a loadable weights-only checkpoint ({err.__class__.__name__})") from None
    state = obj.get("D") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise IFQAError(f"{path}: no discriminator state_dict under 'D' (not IFQA_Metric.pth's format)")
    return state


class IFQA:
    """IFQA score of a float RGB face in [0, 1] (H, W, 3)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        net = IFQANet()
        try:
            net.load_state_dict(read_ifqa_file(Path(path)), strict=True)
        except RuntimeError as err:
            raise IFQAError(f"{path}: does not fit the IFQA network ({str(err).splitlines()[0]})") from None
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)

    def score_map(self, rgb: np.ndarray) -> torch.Tensor:
        u8 = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
        u8 = cv2.resize(u8, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(u8).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(self.device)
        with torch.no_grad():
            return self.net(x)[0, 0]

    def __call__(self, rgb: np.ndarray) -> float:
        return float(self.score_map(rgb).mean())
