"""VQGAN building blocks (Esser et al., "Taming Transformers") shared by RestoreFormer and
CodeFormer, and CodeFormer's VQGAN encoder/generator.

Both families use the same maths: GroupNorm(32, eps 1e-6) + swish residual blocks, asymmetric-pad
stride-2 downsampling, nearest x2 upsampling, dot-product attention over the H*W positions of a
16x16 map, and a codebook looked up by index. Only parameter names differ (RestoreFormer's 1x1
shortcut is `nin_shortcut`, CodeFormer's `conv_out`); the classes take the name so that both
released checkpoints load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normalize(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResBlock(nn.Module):
    """GN -> swish -> conv3x3 -> GN -> swish -> conv3x3, plus a 1x1 shortcut when the width changes."""

    def __init__(self, cin: int, cout: int, shortcut: str = "conv_out"):
        super().__init__()
        self.norm1, self.conv1 = normalize(cin), conv3x3(cin, cout)
        self.norm2, self.conv2 = normalize(cout), conv3x3(cout, cout)
        self.shortcut = shortcut if cin != cout else None
        if self.shortcut:
            setattr(self, shortcut, nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.shortcut:
            x = getattr(self, self.shortcut)(x)
        return x + h


class Downsample(nn.Module):
    """Zero pad right and bottom by one, then a stride-2 3x3 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = conv3x3(ch, ch)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head dot-product attention between (B, C, H, W) maps, softmax over the H*W keys.
    Channel c belongs to head c // (C / heads); scores are scaled by (C / heads)^-0.5."""
    b, c, h, w = q.shape
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))  # (B, heads, C/heads, HW)
    scores = torch.softmax(q.transpose(2, 3) @ k * (c // heads) ** -0.5, dim=-1)  # (B, heads, HW_q, HW_k)
    return (v @ scores.transpose(2, 3)).reshape(b, c, h, w)


class AttnBlock(nn.Module):
    """CodeFormer's single-head self-attention with a residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = normalize(ch)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        return x + self.proj_out(attention(self.q(h), self.k(h), self.v(h), heads=1))


class Codebook(nn.Module):
    """The VQ codebook (`quantize.embedding.weight`, (n_codes, dim)): nearest-code search and lookup."""

    def __init__(self, n_codes: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_codes, dim)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for every position of z (B, C, H, W) -> (B, H*W), row-major;
        squared distances expanded as |z|^2 + |e|^2 - 2 z.e, first minimum on ties (as upstream)."""
        e = self.embedding.weight
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        d = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()
        return d.argmin(1).view(z.shape[0], -1)

    def lookup(self, idx: torch.Tensor, side: int) -> torch.Tensor:
        """Rows of idx (B, side*side) as a (B, dim, side, side) map; token t -> row t // side, column t % side.
        Contiguous: a channels-last map would propagate through the convs, and CPU GroupNorm is less
        accurate on channels-last tensors (1e-4 instead of 1e-6 at 512^2)."""
        return self.embedding(idx).view(idx.shape[0], side, side, -1).permute(0, 3, 1, 2).contiguous()


# CodeFormer's VQGAN: the released widths; modules sit in flat `blocks` lists (their checkpoint keys).
CODEFORMER_MULT = (1, 2, 2, 4, 4, 8)  # per level, 512^2 ... 16^2
ATTN_RES = 16


class VQEncoder(nn.Module):
    """CodeFormer's encoder: image (B, 3, 512, 512) -> (B, emb_dim, 16, 16). Records the output of the
    last residual block of each resolution (the features the fusion blocks read)."""

    def __init__(self, nf: int = 64, emb_dim: int = 256, ch_mult=CODEFORMER_MULT, res_blocks: int = 2, size: int = 512):
        super().__init__()
        blocks, self.skip_at = [nn.Conv2d(3, nf, 3, padding=1)], {}
        cin, res = nf, size
        for level, mult in enumerate(ch_mult):
            for _ in range(res_blocks):
                blocks.append(ResBlock(cin, nf * mult))
                cin, last = nf * mult, len(blocks) - 1
                if res == ATTN_RES:
                    blocks.append(AttnBlock(cin))
            self.skip_at[last] = res
            if level != len(ch_mult) - 1:
                blocks += [Downsample(cin)]
                res //= 2
        blocks += [ResBlock(cin, cin), AttnBlock(cin), ResBlock(cin, cin)]
        blocks += [normalize(cin), nn.Conv2d(cin, emb_dim, 3, padding=1)]  # no swish between them (as upstream)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        """Returns the code map and {resolution: feature} for the fusion blocks."""
        skips = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.skip_at:
                skips[self.skip_at[i]] = x
        return x, skips


class VQGenerator(nn.Module):
    """CodeFormer's decoder: codes (B, emb_dim, 16, 16) -> image (B, 3, 512, 512). `fuse_at[i]` is the
    resolution whose fusion block runs after module i (CodeFormer's hand-picked indices)."""

    def __init__(self, nf: int = 64, emb_dim: int = 256, ch_mult=CODEFORMER_MULT, res_blocks: int = 2, size: int = 512):
        super().__init__()
        cin, res = nf * ch_mult[-1], size >> (len(ch_mult) - 1)
        blocks = [nn.Conv2d(emb_dim, cin, 3, padding=1), ResBlock(cin, cin), AttnBlock(cin), ResBlock(cin, cin)]
        self.fuse_at = {}
        for level in reversed(range(len(ch_mult))):
            for r in range(res_blocks):
                blocks.append(ResBlock(cin, nf * ch_mult[level]))
                cin = nf * ch_mult[level]
                if (r == 0) != (res == ATTN_RES):  # first block of a level; the last one at 16^2
                    self.fuse_at[len(blocks) - 1] = res
                if res == ATTN_RES:
                    blocks.append(AttnBlock(cin))
            if level != 0:
                blocks.append(Upsample(cin))
                res *= 2
        blocks += [normalize(cin), nn.Conv2d(cin, 3, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)
