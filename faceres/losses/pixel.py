"""Pixel losses: L1, the multi-scale L1 on the decoder's RGB heads ("clean features"), a chroma L1
and SSIM."""

import cv2
import torch
import torch.nn.functional as F

from ..archs.discriminators import detail_bands, luma
from ..metrics.fullref import rgb_to_y


def multiscale_l1(rgbs: list[torch.Tensor], gt: torch.Tensor) -> torch.Tensor:
    """Mean over scales of L1(rgb_r, gt resized to r)."""
    losses = [F.l1_loss(rgb.float(), F.interpolate(gt, size=rgb.shape[-2:], mode="area")) for rgb in rgbs]
    return torch.stack(losses).mean()


def chroma_l1(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """L1 between the colour components (RGB minus luma; zero for grey) of output and ground truth."""
    return F.l1_loss(out - luma(out), gt - luma(gt))


def ssim_loss(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """1 - SSIM on BT.601 luma, as `metrics.fullref.ssim` scores it (its luma, its 11x11 Gaussian σ 1.5
    window, valid region). Always in fp32: under bf16 autocast the variances (E[x²] - E[x]²) cancel to
    negative values."""
    with torch.autocast(out.device.type, enabled=False):
        return _ssim_loss_fp32(out.float(), gt.float())


def _ssim_loss_fp32(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    x, y = (rgb_to_y(img.permute(0, 2, 3, 1)).unsqueeze(1) / 255 for img in (out, gt))
    # the five local means as channels of one depthwise, separable filtering: the 1-channel 11x11 conv
    # took 40x longer (its backward was ~30 % of a training step on the CPU)
    g = torch.from_numpy(cv2.getGaussianKernel(11, 1.5)).to(out).view(1, 1, 11, 1).expand(5, 1, 11, 1)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    mx, my, exx, eyy, exy = F.conv2d(F.conv2d(maps, g, groups=5), g.transpose(2, 3), groups=5).chunk(5, dim=1)
    sxx, syy, sxy = exx - mx**2, eyy - my**2, exy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return 1 - s.mean()


def local_variance(x: torch.Tensor, size: int = 7) -> torch.Tensor:
    """Unbiased variance of x (B, 1, H, W) over each size×size window (reflect-padded, same size)."""
    x = F.pad(x, [size // 2] * 4, mode="reflect")
    n = size * size
    mean, mean_sq = F.avg_pool2d(x, size, stride=1), F.avg_pool2d(x * x, size, stride=1)
    return (mean_sq - mean * mean).clamp_min(0) * n / (n - 1)


def artifact_loss(out: torch.Tensor, gt: torch.Tensor, ema_out: torch.Tensor, window: int = 7) -> torch.Tensor:
    """LDL's artifact penalty (Liang et al., CVPR 2022, "Details or Artifacts"): an L1 weighted by a map
    of where the residual is locally erratic (its variance in a window, times the image's residual
    variance^(1/5)), kept only where the EMA generator is closer to the ground truth than the current
    one. GAN texture that the EMA also draws is left alone; noise the current G adds on its own is
    pulled back. Images in [-1, 1], scored in [0, 1] as in the paper; fp32."""
    with torch.autocast(out.device.type, enabled=False):
        out, gt, ema_out = out.float() / 2, gt.float() / 2, ema_out.float().detach() / 2
        residual = (gt - out).abs().sum(1, keepdim=True)
        residual_ema = (gt - ema_out).abs().sum(1, keepdim=True)
        weight = residual.var(dim=(1, 2, 3), keepdim=True) ** 0.2 * local_variance(residual, window)
        weight = weight * (residual >= residual_ema)
        return F.l1_loss(weight * out, weight * gt)


def excess_detail(out: torch.Tensor, gt: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Detail the ground truth does not have, per luma wavelet band (finest first), as a (levels,) tensor:
    by how much the output's local RMS of the band exceeds the truth's (over windows of about two periods
    of the band), averaged. Texture where the truth has texture costs nothing; outlines, grids and block
    seams on smooth skin do. Images in [-1, 1]; fp32."""
    with torch.autocast(out.device.type, enabled=False):
        bands_out, bands_gt = (detail_bands(luma(x.float()), levels) for x in (out, gt))
        excess = []
        for j in range(levels):
            window = 2 ** (j + 3) + 1  # 9, 17, 33 px
            rms_out, rms_gt = (
                F.avg_pool2d(b[:, j : j + 1].square(), window, 1, window // 2).add(1e-8).sqrt() for b in (bands_out, bands_gt)
            )
            excess.append(F.relu(rms_out - rms_gt).mean())
        return torch.stack(excess)


def excess_detail_loss(out: torch.Tensor, gt: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """`excess_detail` averaged over the bands: the training term."""
    return excess_detail(out, gt, levels).mean()
