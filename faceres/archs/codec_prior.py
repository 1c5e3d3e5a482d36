r"""CodecPriorNet: the seed-001 restoration network (Hu et al., "Enhancing Quality of
Pose-varied Face Restoration with Local Weak Feature Sensing and GAN Prior").

    LQ face --encoder (MMRBs)--> code Z --mapping MLP--> W (one vector, broadcast to all layers)
            \--decoder--> clean feature map per resolution --concat--> StyleGAN2 noise branches
                     \--> RGB head per resolution (multi-scale L1 "clean feature" loss)

W is a single vector, not per-layer W+: it matches GPEN's prior (so GPEN-BFR weights
initialise `generator.*` directly) and spatial detail reaches the generator through the
noise branches anyway.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .contract import PRIOR_FIDELITY, RestorerSpec, StyleGAN2PriorNet, noise_from_features
from .mmrb import MMRB
from .stylegan2 import ConvLayer, EqualConv2d, EqualLinear, StyleGAN2Generator, channel_table


def _mmrbs(channels: int, n: int) -> nn.Module:
    return nn.Sequential(*[MMRB(channels) for _ in range(n)]) if n else nn.Identity()


class UpBlock(nn.Module):
    """x2 bilinear upsample -> 3x3 conv; the encoder skip at the new resolution is added after."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = ConvLayer(in_ch, out_ch, 3)

    def forward(self, x, skip):
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)) + skip


class AsymmetricCodec(nn.Module):
    """Encoder: fromRGB at full size, then per halving a strided conv + `enc_blocks` MMRBs
    (none at the first and the last, 4x4, scale: 6 MMRBs for 512). Decoder: one UpBlock per
    scale with `enc_blocks - 1` MMRBs, output channels = the generator's noise-branch channels."""

    def __init__(self, size, channels: dict[int, int], style_dim=512, enc_blocks=1):
        super().__init__()
        ch = channels
        self.resolutions = [2**i for i in range(int(math.log2(size)), 1, -1)]  # size ... 4
        self.from_rgb = ConvLayer(3, ch[size], 1)
        self.down = nn.ModuleList(ConvLayer(ch[r], ch[r // 2], 3, downsample=True) for r in self.resolutions[:-1])
        self.enc_blocks = nn.ModuleList(_mmrbs(ch[r // 2], enc_blocks if r // 2 > 4 else 0) for r in self.resolutions[:-1])
        self.to_code = EqualLinear(ch[4] * 16, style_dim, activation="fused_lrelu")
        up_res = self.resolutions[::-1][1:]  # 8 ... size
        self.up = nn.ModuleList(UpBlock(ch[r // 2], ch[r]) for r in up_res)
        self.dec_blocks = nn.ModuleList(_mmrbs(ch[r], max(enc_blocks - 1, 0)) for r in up_res)
        self.to_rgbs = nn.ModuleList(EqualConv2d(ch[r], 3, 1) for r in self.resolutions[::-1])

    def forward(self, x, with_rgbs=True):
        """Returns code (B, style_dim), decoder features [4x4 ... size], RGB heads [4x4 ... size] (training
        only: None when not `with_rgbs`)."""
        e = self.from_rgb(x)
        skips = [e]
        for down, blocks in zip(self.down, self.enc_blocks):
            e = blocks(down(e))
            skips.append(e)
        code = self.to_code(e.flatten(1))
        d, feats = e, [e]
        for up, blocks, skip in zip(self.up, self.dec_blocks, reversed(skips[:-1])):
            d = blocks(up(d, skip))
            feats.append(d)
        rgbs = [to_rgb(f) for to_rgb, f in zip(self.to_rgbs, feats)] if with_rgbs else None
        return code, feats, rgbs


class CodecPriorNet(StyleGAN2PriorNet):
    """`input_skip` (not in the paper) adds the input face to the output, so the network learns a
    correction: a mildly degraded face passes through from the first step. faceres-v1 uses it."""

    def __init__(
        self,
        size=512,
        style_dim=512,
        n_mlp=8,
        channel_multiplier=2,
        narrow=1.0,
        enc_blocks=1,
        lr_mlp=0.01,
        input_skip=False,
        min_channels=0,
        channels_at=None,
    ):
        super().__init__()
        self.input_skip = input_skip
        if size & (size - 1) or not 64 <= size <= 1024:
            raise ValueError(f"size must be a power of two in 64..1024, got {size}")
        self.spec = RestorerSpec(size, fidelity_range=(0.0, 1.0), fidelity_meaning=PRIOR_FIDELITY, stylegan2_prior=True)
        widths = dict(min_channels=min_channels, channels_at=channels_at)
        self.codec = AsymmetricCodec(size, channel_table(size, channel_multiplier, narrow, **widths), style_dim, enc_blocks)
        self.generator = StyleGAN2Generator(size, style_dim, n_mlp, channel_multiplier, narrow, isconcat=True, lr_mlp=lr_mlp, **widths)
        if input_skip:  # start as the identity: the correction is zero until training moves the RGB layers
            for to_rgb in [self.generator.to_rgb1, *self.generator.to_rgbs]:
                nn.init.zeros_(to_rgb.conv.weight)

    def forward(self, x, fidelity: float = 1.0, return_aux=False):
        """x: (B, 3, size, size) RGB in [-1, 1]. `fidelity` scales the decoder features fed
        to the noise branches: 1 = as trained (closest to the input), 0 = the prior alone."""
        code, feats, rgbs = self.codec(x, with_rgbs=return_aux)
        image, latent = self.generator(code, noise_from_features(feats, fidelity), return_latents=return_aux)
        if self.input_skip:
            image = image + x
        return (image, {"rgbs": rgbs, "latent": latent}) if return_aux else image

    def restore(self, x, fidelity: float = 1.0):
        self.spec.check_fidelity(fidelity, "CodecPriorNet")
        return self.forward(x, fidelity=fidelity).clamp(-1, 1)

    def prior_inputs(self, x):
        code, feats, _ = self.codec(x, with_rgbs=False)
        return code, noise_from_features(feats)

    def synthesize(self, w_plus, noise, x):
        image = super().synthesize(w_plus, noise, x)
        return image + x if self.input_skip else image

    def load_smaller(self, smaller: "CodecPriorNet") -> dict[str, torch.Tensor]:
        """Take the weights of `smaller`, this network built with fewer MMRBs per scale and/or fewer
        channels at some resolutions (`min_channels`, `channels_at`), so that this one computes the same
        function and training goes on from there: the MMRBs it lacks start as the identity (fusion conv
        zeroed), and each narrower channel axis is spread over the wider one (old channel i -> i * ratio,
        which keeps every chunk and concat aligned) with the added channels read by nothing yet (their
        outgoing weights zeroed).
        Returns {parameter name: bool mask of its added elements} for the parameters that grew."""
        own, old = self.state_dict(), smaller.state_dict()
        mismatched = [
            k for k, v in old.items() if k not in own or own[k].ndim != v.ndim or any(n % o for n, o in zip(own[k].shape, v.shape))
        ]
        added = sorted({k.rsplit(".", 3)[0] for k in own if k not in old})  # codec.enc_blocks.3.1.branch3.0.weight -> codec.enc_blocks.3.1
        blocks = dict(self.named_modules())
        a, b = smaller.generator, self.generator
        if (
            mismatched
            or (a.size, a.style_dim, len(a.style)) != (b.size, b.style_dim, len(b.style))
            or not all(isinstance(blocks.get(n), MMRB) for n in added)
        ):
            raise ValueError(f"not a smaller version of this network (fewer MMRBs or channels): {(mismatched or added)[:3]} differ")
        for name in added:
            nn.init.zeros_(blocks[name].fuse[0].weight)
            nn.init.zeros_(blocks[name].fuse[0].bias)
        scales = {n: m.scale / blocks[n].scale for n, m in smaller.named_modules() if isinstance(getattr(m, "scale", None), float)}
        grown = {}
        with torch.no_grad():
            for key, param in self.named_parameters():
                if key not in old:
                    grown[key] = torch.ones_like(param, dtype=torch.bool)
                    continue
                factor = scales.get(key.rsplit(".", 1)[0], 1.0) if key.endswith("weight") else 1.0  # equalized LR: keep weight * scale
                new = _spread(param, old[key] * factor)
                if new.any():
                    grown[key] = new
            for key, buffer in self.named_buffers():
                buffer.copy_(old[key])
        return grown

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Seed 001 trains these with different learning rates: codec, StyleGAN2 prior, noise branches."""
        groups = {"codec": list(self.codec.parameters()), "generator": [], "noise": []}
        for name, p in self.generator.named_parameters():
            groups["noise" if name.endswith("noise.weight") else "generator"].append(p)
        return groups


def _spread(wide: torch.Tensor, narrow: torch.Tensor) -> torch.Tensor:
    """Write `narrow` into `wide` (in place) at indices i * ratio along every axis; returns the mask of
    the elements it did not write. Along the output axis (the first one longer than 1), the spread rows
    are cleared first, so they read nothing from the added input channels."""
    index = torch.meshgrid(*[torch.arange(o) * (n // o) for n, o in zip(wide.shape, narrow.shape)], indexing="ij")
    out_axis = next((a for a, o in enumerate(narrow.shape) if o > 1), 0)
    if wide.shape != narrow.shape:
        wide.index_fill_(out_axis, index[out_axis].flatten().unique(), 0)
    wide[index] = narrow
    added = torch.ones_like(wide, dtype=torch.bool)
    added[index] = False
    return added
