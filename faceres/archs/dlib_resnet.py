"""dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) in PyTorch.

The network of dlib's `dnn_face_recognition_ex.cpp` (`anet_type`): a 29-conv ResNet on a 150x150
RGB face chip, 128-d descriptor; two faces are the same person below Euclidean distance 0.6.
dlib conventions kept here: convolutions pad k//2 only at stride 1 (stride 2: no padding),
pooling has no padding, batch norm is frozen into a per-channel scale and shift, and a residual
sum whose branches differ in size zero-pads the smaller one at the bottom/right and in the extra
channels. Weights: `faceres.dlib_dat.read_dat`.

`DlibFaceChip` cuts the same 150x150 chip, differentiably, from an FFHQ-aligned face.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # dlib.get_face_chip's default, as in compute_face_descriptor
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # input_rgb_image_sized defaults (the file stores its own)

# (channels, blocks, first block halves the resolution), from the input up: dlib's alevel4 ... alevel0
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class Affine(nn.Module):
    """dlib's affine_ layer: batch norm frozen into y = x * weight + bias per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b over the larger size of each dimension; the smaller tensor is zero outside its extent."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """relu(skip + affine(conv3x3(relu(affine(conv3x3/stride(x)))))); skip = 2x2 average pool when downsampling."""

    def __init__(self, in_channels: int, out_channels: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.affine2 = Affine(out_channels)

    def forward(self, x):
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2) if self.down else x
        return F.relu(add_zero_padded(y, skip))


class DlibResNet(nn.Module):
    """150x150 RGB chips with values 0..255 -> (B, 128) descriptors (not normalised, as dlib's)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(DLIB_MEAN_RGB))
        self.conv = nn.Conv2d(3, 32, 7, stride=2)  # 150 -> 72
        self.affine = Affine(32)
        blocks, channels = [], 32
        for out_channels, n, down in STAGES:  # 35 -> 35 -> 17 -> 8 -> 4 -> 2
            for i in range(n):
                blocks.append(ResidualBlock(channels, out_channels, down and i == 0))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, 128, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips - self.input_mean.view(1, 3, 1, 1)) / 256
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, stride=2)  # 72 -> 35
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


# Mean positions of dlib's 5 landmarks (shape_predictor_5_face_landmarks: outer and inner corner
# of the eye on the image's right, then of the eye on the left, then the base of the nose) on
# FFHQ-aligned 512x512 faces: 496 CelebA-HQ faces aligned with RetinaFace landmarks to faceres's
# template, as `faceres restore` aligns; landmarks by dlib's HOG detector + 5-point predictor
# (bench/dlib_chip_template.py; per-face spread 5-9 px).
DLIB5_ON_FFHQ_512 = np.array([[340.78, 242.63], [291.17, 246.59], [169.40, 244.75], [218.72, 247.53], [255.06, 339.80]])

# dlib's get_face_chip_details: where those 5 points go in the chip, as fractions of a chip
# without padding (dlib/image_transforms/interpolation.h).
_DLIB5_CHIP = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


def chip_to_face_affine(landmarks: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """2x3 affine taking chip pixels to image pixels (pixel centres at integer coordinates), as
    dlib's get_face_chip_details + extract_image_chip build it: a least-squares similarity from
    the chip's 5 template points to `landmarks`, re-expressed as a rectangle of size*scale - 1
    pixels spanning the chip's pixel centres 0 .. size-1."""
    src = (padding + _DLIB5_CHIP) / (2 * padding + 1) * size
    dst = np.asarray(landmarks, np.float64)
    sm, dm = src.mean(0), dst.mean(0)
    s, d = src - sm, dst - dm
    a = (s * d).sum() / (s**2).sum()  # similarity [[a, -b], [b, a]] (Umeyama, no reflection)
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / (s**2).sum()
    rot = np.array([[a, -b], [b, a]])
    centre = rot @ (np.array([size, size]) / 2 - sm) + dm  # the image point of chip point (size/2, size/2)
    scale = np.hypot(a, b)
    step = rot / scale * (size * scale - 1) / (size - 1)  # dlib's centered_drect shrinks the side by one pixel
    return np.hstack([step, (centre - step @ np.full(2, (size - 1) / 2))[:, None]])


def pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """dlib's pyramid_down<2>: 5x5 binomial filter ([1 4 6 4 1] / 16 per axis), every other pixel, no padding."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype) / 16
    return F.conv2d(x, (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5), stride=2, groups=x.shape[1])


class DlibFaceChip(nn.Module):
    """Aligned faces (B, 3, S, S) in [-1, 1] (FFHQ template) -> dlib's 150x150 chips, values 0..255.

    dlib's chip extraction made differentiable: the same affine (from the mean landmarks), the
    same image pyramid when the chip shrinks the face by more than 2x, bilinear sampling
    (grid_sample) at the pyramid level's coordinates; dlib's uint8 truncation only as its mean."""

    def __init__(self, landmarks_512: np.ndarray = DLIB5_ON_FFHQ_512):
        super().__init__()
        self.landmarks_512 = np.asarray(landmarks_512, np.float64)
        self._plans: dict[int, tuple[int, torch.Tensor]] = {}

    def plan(self, side: int) -> tuple[int, torch.Tensor]:
        """(pyramid levels, (1, 150, 150, 2) grid for grid_sample with align_corners=False) for a side x side face."""
        if side not in self._plans:
            m = chip_to_face_affine(self.landmarks_512 * side / 512)  # faceres's template scales as template * side / 512
            ys, xs = np.meshgrid(np.arange(CHIP_SIZE), np.arange(CHIP_SIZE), indexing="ij")
            pts = np.stack([xs, ys, np.ones_like(xs)], -1) @ m.T  # chip pixel -> face pixel
            width, levels, level_side = (CHIP_SIZE - 1) * np.hypot(*m[:, 0]), 0, side  # the chip's extent on the face
            while (width / 2) ** 2 > CHIP_SIZE**2:  # extract_image_chips: one level down while it still shrinks
                width, levels, level_side = width / 2, levels + 1, (level_side - 3) // 2
                pts = pts / 2 - np.array([1.25, 0.75])  # pyramid_down<2>::point_down
            self._plans[side] = levels, torch.tensor((pts + 0.5) / level_side * 2 - 1, dtype=torch.float32)[None]
        return self._plans[side]

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        levels, grid = self.plan(faces.shape[-1])
        # dlib truncates to uint8 after each pyramid level and in the chip: -0.5 on average each time
        for _ in range(levels):
            faces = pyramid_down(faces) - 1 / 255
        grid = grid.to(faces.device, faces.dtype).expand(faces.shape[0], -1, -1, -1)
        chips = F.grid_sample(faces, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (chips + 1) * 127.5 - 0.5


class DlibFaceDescriptor(nn.Module):
    """Aligned faces in [-1, 1] -> dlib 128-d descriptors: the chip, then the ResNet."""

    def __init__(self, net: DlibResNet | None = None):
        super().__init__()
        self.chip = DlibFaceChip()
        self.net = net or DlibResNet()

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net(self.chip(faces))
