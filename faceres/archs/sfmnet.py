"""SFMNet: spatial-frequency mutual learning for face super-resolution (Wang et al., CVPR 2023;
seed 003). The poster gives the structure, not every layer; choices made here are marked.

    LR face (bicubic-upsampled to `size`) -> conv -> L x SFMLM -> two heads:
        spatial head -> I_spa (the output), frequency head -> I_fre (extra supervision)

SFMLM = frequency branch (FFT; amplitude and phase processed separately: image-size receptive
field, phase keeps the facial structure) + spatial branch (local convs + a coarse global path)
+ FSIB (two convs per domain, SFCA cross-attention both ways, attention-map fine fusion).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .contract import RestorationNet, RestorerSpec


def amplitude_phase(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In the input's dtype; the FFT itself runs in fp32 (there is no bf16 FFT)."""
    spec = torch.fft.rfft2(x.float(), norm="ortho")
    return spec.abs().to(x.dtype), spec.angle().to(x.dtype)


class FrequencyBranch(nn.Module):
    """1x1 convs on the amplitude and on the phase of the feature spectrum, back by inverse FFT."""

    def __init__(self, ch: int):
        super().__init__()
        self.amp = nn.Sequential(nn.Conv2d(ch, ch, 1), nn.LeakyReLU(0.1), nn.Conv2d(ch, ch, 1))
        self.pha = nn.Sequential(nn.Conv2d(ch, ch, 1), nn.LeakyReLU(0.1), nn.Conv2d(ch, ch, 1))

    def forward(self, x):
        amp, pha = amplitude_phase(x)
        amp, pha = amp + self.amp(amp), pha + self.pha(pha)
        spec = torch.polar(amp.clamp_min(0).float(), pha.float())
        return torch.fft.irfft2(spec, s=x.shape[-2:], norm="ortho").to(x.dtype)


class SpatialBranch(nn.Module):
    """Local dependencies: two 3x3 convs. Global ones (our choice): the same at 1/4 resolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(ch, ch, 3, padding=1))
        self.glob = nn.Sequential(nn.Conv2d(ch, ch, 3, stride=4, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        g = F.interpolate(self.glob(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x + self.local(x) + g


class SFCA(nn.Module):
    """Spatial-frequency cross-attention: Q from the source features, K and V from the guidance.
    Attention runs across channels per head (a C/h x C/h map), so its cost is linear in pixels
    (our choice; the poster does not say over which axis)."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.q = nn.Conv2d(ch, ch, 1)
        self.kv = nn.Conv2d(ch, 2 * ch, 1)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, source, guidance):
        b, c, h, w = source.shape
        q = self.q(source).view(b, self.heads, c // self.heads, h * w)
        k, v = self.kv(guidance).view(b, 2, self.heads, c // self.heads, h * w).unbind(1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)  # (B, heads, d, d)
        return self.proj((attn @ v).view(b, c, h, w))


class FSIB(nn.Module):
    """Frequency-spatial interaction block: two convs per domain, coarse fusion by SFCA in both
    directions, fine fusion by an attention map computed from the coarse fusion."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.pre_spa = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(ch, ch, 3, padding=1))
        self.pre_fre = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(ch, ch, 3, padding=1))
        self.spa_from_fre = SFCA(ch, heads)
        self.fre_from_spa = SFCA(ch, heads)
        self.coarse = nn.Conv2d(2 * ch, ch, 1)
        self.attn = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.Sigmoid())

    def forward(self, spa, fre):
        s, f = self.pre_spa(spa), self.pre_fre(fre)
        s2 = s + self.spa_from_fre(s, f)
        f2 = f + self.fre_from_spa(f, s)
        fused = self.coarse(torch.cat([s2, f2], dim=1))
        a = self.attn(fused)
        return spa + fused * a, fre + fused * (1 - a)


class SFMLM(nn.Module):
    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.spatial = SpatialBranch(ch)
        self.frequency = FrequencyBranch(ch)
        self.fsib = FSIB(ch, heads)

    def forward(self, spa, fre):
        return self.fsib(self.spatial(spa), self.frequency(fre))


class SFMNet(RestorationNet):
    def __init__(self, size: int = 128, channels: int = 96, n_modules: int = 9, heads: int = 4, scale: int = 8):
        super().__init__()
        self.spec = RestorerSpec(size)
        self.scale = scale  # the SR factor it was trained for (metadata)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.ModuleList(SFMLM(channels, heads) for _ in range(n_modules))
        self.to_spa = nn.Conv2d(channels, 3, 3, padding=1)
        self.to_fre = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x, return_aux=False):
        """x: (B, 3, size, size) in [-1, 1], the LR face upsampled to `size`."""
        spa = fre = self.head(x)
        for block in self.body:
            spa, fre = block(spa, fre)
        out_spa, out_fre = x + self.to_spa(spa), x + self.to_fre(fre)
        return (out_spa, {"frequency_output": out_fre}) if return_aux else out_spa

    def restore(self, x, fidelity: float = 1.0):
        self.spec.check_fidelity(fidelity, "SFMNet")
        return self.forward(x).clamp(-1, 1)
