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


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim_loss(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """1 - SSIM on BT.601 luma, as `metrics.fullref.ssim` scores it (11x11 Gaussian σ 1.5, valid region).
    Always in fp32: under bf16 autocast the variances (E[x²] - E[x]²) cancel to negative values."""
    with torch.autocast(out.device.type, enabled=False):
        return _ssim_loss_fp32(out.float(), gt.float())


def _ssim_loss_fp32(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    coeffs = out.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255.0
    x, y = (16 / 255 + (img * coeffs).sum(1, keepdim=True) for img in (out, gt))
    win = _gaussian_window().to(out)
    f = lambda z: F.conv2d(z, win)
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return 1 - s.mean()
