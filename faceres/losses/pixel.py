"""Pixel losses: L1, the multi-scale L1 on the decoder's RGB heads ("clean features"), and a
chroma L1."""

import torch
import torch.nn.functional as F

from ..archs.discriminators import luma


def multiscale_l1(rgbs: list[torch.Tensor], gt: torch.Tensor) -> torch.Tensor:
    """Mean over scales of L1(rgb_r, gt resized to r)."""
    losses = [F.l1_loss(rgb.float(), F.interpolate(gt, size=rgb.shape[-2:], mode="area")) for rgb in rgbs]
    return torch.stack(losses).mean()


def chroma_l1(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """L1 between the colour components (RGB minus luma; zero for grey) of output and ground truth."""
    return F.l1_loss(out - luma(out), gt - luma(gt))
