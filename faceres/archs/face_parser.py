"""A compact U-Net face parser: RGB face crop in [-1, 1] -> per-pixel logits over the 19 labels of
CelebAMask-HQ in facexlib's ParseNet order (`PARSE_LABELS`), so a mask built from its argmax means
the same as ParseNet's.

    256² RGB -> stem (s2) 128² -> Down 64² -> Down 32² -> Down 16² -> Down 8²
             -> Up 16² -> Up 32² -> Up 64² -> Up 128² (each with the encoder's features at that size)
             -> 1x1 head -> bilinear x2 -> 19 x 256² logits
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PARSE_LABELS = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
# labels kept in the paste mask: face, brows, eyes, glasses, ears, nose, mouth,
# lips, hair (1-13) and earrings (15); background, hat, neck and cloth are left to the photo.
PARSE_KEEP = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)
# the person's left and right: a mirrored face swaps them
MIRRORED_LABELS = (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear"))


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class Down(nn.Sequential):
    """(in, H, W) -> (out, H/2, W/2): a strided conv, then a conv at the new size."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(ConvBNReLU(in_ch, out_ch, stride=2), ConvBNReLU(out_ch, out_ch))


class Up(nn.Module):
    """(in, H, W) + skip (skip_ch, 2H, 2W) -> (out, 2H, 2W): bilinear x2, concatenate, one conv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], 1))


class FaceParserNet(nn.Module):
    """enc: widths of the 128², 64², 32², 16², 8² features; dec: widths of the 16², 32², 64², 128² ones."""

    def __init__(
        self, num_classes: int = len(PARSE_LABELS), enc: tuple[int, ...] = (16, 32, 64, 88, 112), dec: tuple[int, ...] = (64, 48, 32, 16)
    ):
        super().__init__()
        self.stem = ConvBNReLU(3, enc[0], stride=2)  # (3, 256²) -> (16, 128²)
        self.downs = nn.ModuleList(Down(a, b) for a, b in zip(enc[:-1], enc[1:]))  # -> 64², 32², 16², 8²
        ups_in = (enc[-1],) + tuple(dec[:-1])
        self.ups = nn.ModuleList(Up(i, s, o) for i, s, o in zip(ups_in, enc[-2::-1], dec))  # -> 16², 32², 64², 128²
        self.head = nn.Conv2d(dec[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1], H and W multiples of 32 -> (N, num_classes, H, W) logits."""
        feats = [self.stem(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        y = feats.pop()
        for up in self.ups:
            y = up(y, feats.pop())
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)
