"""Discriminators: GPEN-compatible StyleGAN2 D (with a FreezeD helper) and the local component D."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import ConvLayer, EqualConv2d, EqualLinear, ResBlock, channel_table


def luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) ITU-R BT.601 luma."""
    return (x * x.new_tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)).sum(1, keepdim=True)


def detail_bands(y: torch.Tensor, levels: int = 1) -> torch.Tensor:
    """(B, 1, H, W) -> (B, levels, H, W): the à trous (starlet) wavelet bands of y, finest first, each
    x4 so that it spans about y's range. Band j is the difference of two 5-tap binomial blurs with
    taps 2^j apart: band 0 holds about 1/4-1/2 cycle per pixel, band 1 1/8-1/4, band 2 1/16-1/8."""
    k = y.new_tensor((1, 4, 6, 4, 1))
    k = torch.outer(k, k)[None, None] / 256
    bands, smooth = [], y
    for j in range(levels):
        d = 2**j
        blurred = F.conv2d(F.pad(smooth, (2 * d,) * 4, mode="reflect"), k, dilation=d)
        bands.append(4 * (smooth - blurred))
        smooth = blurred
    return torch.cat(bands, 1)


def d_input(x: torch.Tensor, luma_only: bool, detail: int) -> torch.Tensor:
    """What a D sees of RGB x: x or its luma, and with `detail` also that many of the luma's finest
    bands (`detail_bands`; True = 1). Through the deep trunk alone, a D fresh from initialisation scores
    a restored face and its sharp original alike (logits equal to 1e-3) and needs thousands of steps to
    learn the difference; with the finest band as an input it separates them within 100 (measured at
    256², weights/README.md)."""
    if not (luma_only or detail):
        return x
    y = luma(x)
    base = y if luma_only else x
    return torch.cat([base, detail_bands(y, int(detail))], 1) if detail else base


def d_channels(luma_only: bool, detail: int) -> int:
    return (1 if luma_only else 3) + int(detail)


class StyleGAN2Discriminator(nn.Module):
    """Same keys as GPEN's `Discriminator`; minibatch stddev over the whole batch, as GPEN does.
    `luma=True` judges the BT.601 luma only (one input channel): an adversarial loss through it can
    push texture and contrast but not colour, which stays with the pixel losses. `detail` adds that
    many of the luma's finest wavelet bands as input channels (`d_input`; True = the finest one).
    `condition` > 0 makes it conditional: the input then carries that many channels after the RGB image
    (the degraded face's luma), which the trunk sees as they are."""

    def __init__(self, size=512, channel_multiplier=2, narrow=1.0, blur_kernel=(1, 3, 3, 1), luma=False, detail=False, condition=0):
        super().__init__()
        ch = channel_table(size, channel_multiplier, narrow)
        log_size = int(math.log2(size))
        self.luma, self.detail, self.condition = luma, detail, condition
        blocks = [ConvLayer(d_channels(luma, detail) + condition, ch[size], 1)]
        for i in range(log_size, 2, -1):
            blocks.append(ResBlock(ch[2**i], ch[2 ** (i - 1)], blur_kernel))
        self.convs = nn.Sequential(*blocks)
        self.final_conv = ConvLayer(ch[4] + 1, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, ch[4], activation="fused_lrelu"), EqualLinear(ch[4], 1))

    @staticmethod
    def minibatch_stddev(x):
        # one scalar for the whole batch: population std over the batch, averaged over C, H, W
        std = torch.sqrt(x.var(0, unbiased=False) + 1e-8).mean()
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)

    def prepare(self, x):
        """(B, 3 + condition, H, W) RGB and condition -> what the trunk sees (`d_input`, then the condition)."""
        if not self.condition:
            return d_input(x, self.luma, self.detail)
        return torch.cat([d_input(x[:, :3], self.luma, self.detail), x[:, 3:]], 1)

    def forward(self, x):
        out = self.final_conv(self.minibatch_stddev(self.convs(self.prepare(x))))
        return self.final_linear(out.flatten(1))


def freeze_d(disc: StyleGAN2Discriminator, n_layers: int = 5) -> list[str]:
    """FreezeD (Mo et al. 2020): freeze the first `n_layers` trunk entries (fromRGB + ResBlocks,
    i.e. the high-resolution layers). Returns the names of the frozen parameters."""
    frozen = []
    for idx, block in enumerate(disc.convs):
        if idx >= n_layers:
            break
        for name, p in block.named_parameters():
            p.requires_grad_(False)
            frozen.append(f"convs.{idx}.{name}")
    return frozen


class ComponentDiscriminator(nn.Module):
    """Local D for an eye or mouth patch: two downsamplings, single-channel logit map."""

    def __init__(self, channels=(64, 128, 256), luma=False, detail=False):
        super().__init__()
        c1, c2, c3 = channels
        self.luma, self.detail = luma, detail
        self.body = nn.Sequential(
            ConvLayer(d_channels(luma, detail), c1, 3),
            ConvLayer(c1, c2, 3, downsample=True),
            ConvLayer(c2, c2, 3),
            ConvLayer(c2, c3, 3, downsample=True),
            ConvLayer(c3, c3, 3),
        )
        self.final = EqualConv2d(c3, 1, 3, padding=1)

    def forward(self, x, return_feats=False):
        feats, out = [], d_input(x, self.luma, self.detail)
        for i, layer in enumerate(self.body):
            out = layer(out)
            if i in (2, 4):
                feats.append(out)
        logits = self.final(out)  # (B, 1, H/4, W/4)
        return (logits, feats) if return_feats else logits
