"""Pixel losses: L1 and the multi-scale L1 on the decoder's RGB heads ("clean features")."""

import torch
import torch.nn.functional as F


def multiscale_l1(rgbs: list[torch.Tensor], gt: torch.Tensor) -> torch.Tensor:
    """Mean over scales of L1(rgb_r, gt resized to r)."""
    losses = [F.l1_loss(rgb.float(), F.interpolate(gt, size=rgb.shape[-2:], mode="area")) for rgb in rgbs]
    return torch.stack(losses).mean()
