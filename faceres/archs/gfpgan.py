"""GFPGAN v1.2 / v1.3 / v1.4 (`GFPGANv1Clean`, Wang et al., CVPR 2021) with the released state_dict layout.

A U-Net encodes the face: its bottleneck gives one W per decoder layer (W+), its decoder gives a
spatial scale and shift per resolution (CS-SFT) that modulate half of the StyleGAN2 decoder's
channels right after each upsampling conv. The decoder is StyleGAN2's "clean" variant: plain
nn.Conv2d / nn.Linear weights used as stored (no equalized-LR scaling), bilinear resizing instead
of FIR blur kernels, activations without the sqrt(2) gain except the StyleConv's output scale.

Determinism: by default every StyleConv adds its stored noise map (`stylegan_decoder.noises.noiseK`,
part of the released files) instead of fresh Gaussian noise, so a face always restores to the same
output. Upstream's `GFPGANer` draws fresh noise each call (`randomize_noise=True`); pass
`randomize_noise=True` to `forward` for that behaviour.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .contract import RestorationNet, RestorerSpec
from .stylegan2 import PixelNorm, channel_table

SQRT2 = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class ResizeResBlock(nn.Module):
    """U-Net block: lrelu(conv1) -> bilinear x`factor` -> lrelu(conv2), plus the resized input through
    a bias-free 1x1 conv. Plain sum, no 1/sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, factor: float):
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x):
        out = lrelu(self.conv2(resize(lrelu(self.conv1(x)), self.factor)))
        return out + self.skip(resize(x, self.factor))


def sft_condition(ch: int, out_ch: int) -> nn.Sequential:
    """3x3 conv -> lrelu -> 3x3 conv: one SFT scale or shift map (keys .0 and .2)."""
    return nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(ch, out_ch, 3, padding=1))


class ModulatedConv2d(nn.Module):
    """Style-modulated conv, weights used as stored; the upsampling variant resizes its input bilinearly x2."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate=True, upsample=False):
        super().__init__()
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size) / math.sqrt(in_ch * kernel_size**2))
        self.modulation = nn.Linear(style_dim, in_ch)
        nn.init.ones_(self.modulation.bias)

    def forward(self, x, style):
        # Scaling the input channels by the style and the output channels by the demodulation factor
        # is the same maths as upstream's per-sample modulated weights in a grouped conv (and
        # commutes with the bilinear resize), but needs no per-sample weight copies.
        b = x.shape[0]
        s = self.modulation(style)  # (B, in)
        weight = self.weight[0]  # (out, in, k, k)
        if self.upsample:
            x = resize(x, 2)
        out = F.conv2d(x * s.view(b, -1, 1, 1), weight, padding=self.padding)
        if self.demodulate:
            demod = torch.rsqrt(s.square() @ weight.square().sum((2, 3)).t() + 1e-8)  # (B, out)
            out = out * demod.view(b, -1, 1, 1)
        return out


class StyleConv(nn.Module):
    """lrelu(modconv(x) * sqrt(2) + strength * noise + bias); the noise has one channel, broadcast."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample=False):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))

    def forward(self, x, style, noise):
        return lrelu(self.modulated_conv(x, style) * SQRT2 + self.weight * noise + self.bias)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, plus bias, plus the previous RGB resized x2."""

    def __init__(self, in_ch: int, style_dim: int):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.modulated_conv(x, style) + self.bias
        return out if skip is None else out + resize(skip, 2)


class ConstantInput(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int):
        # expand + clone keeps the parameter's memory layout (NHWC for bf16 inference); repeat returns NCHW
        return self.weight.expand(batch, -1, -1, -1).clone(memory_format=torch.preserve_format)


class StyleGAN2DecoderClean(nn.Module):
    """Synthesis network whose upsampling convs take SFT conditions. Latent rows: style_conv1 0,
    to_rgb1 1; level j (resolution 8*2^j): up conv 2j+1, conv 2j+2, ToRGB 2j+3."""

    def __init__(self, size: int, style_dim: int, n_mlp: int, channel_multiplier: float, narrow: float, sft_half: bool):
        super().__init__()
        self.sft_half = sft_half
        self.log_size = int(math.log2(size))
        self.n_latent = 2 * self.log_size - 2
        ch = channel_table(size, channel_multiplier, narrow)
        mlp = [m for _ in range(n_mlp) for m in (nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2))]
        self.style_mlp = nn.Sequential(PixelNorm(), *mlp)  # keys .1, .3, ...; unused with latent input
        self.constant_input = ConstantInput(ch[4])
        self.style_conv1 = StyleConv(ch[4], ch[4], style_dim)
        self.to_rgb1 = ToRGB(ch[4], style_dim)
        self.style_convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        in_ch = ch[4]
        for res in (2**i for i in range(3, self.log_size + 1)):
            self.style_convs.append(StyleConv(in_ch, ch[res], style_dim, upsample=True))
            self.style_convs.append(StyleConv(ch[res], ch[res], style_dim))
            self.to_rgbs.append(ToRGB(ch[res], style_dim))
            in_ch = ch[res]
        self.noises = nn.Module()  # persistent buffers: the released files carry them
        for k, res in enumerate(self.noise_resolutions()):
            self.noises.register_buffer(f"noise{k}", torch.randn(1, 1, res, res))

    def noise_resolutions(self) -> list[int]:
        return [4] + [2**i for i in range(3, self.log_size + 1) for _ in range(2)]

    def noise_maps(self, batch: int, randomize: bool) -> list[torch.Tensor]:
        stored = [getattr(self.noises, f"noise{k}") for k in range(len(self.noise_resolutions()))]
        if not randomize:
            return stored
        return [torch.randn(batch, 1, *n.shape[2:], device=n.device, dtype=n.dtype) for n in stored]  # upstream's draw order

    def sft(self, out, scale, shift):
        if not self.sft_half:
            return out * scale + shift
        same, cond = out.chunk(2, dim=1)
        return torch.cat([same, cond * scale + shift], dim=1)

    def forward(self, latent, conditions, input_is_latent=True, randomize_noise=False):
        """latent: (B, n_latent, style_dim) W+, or (B, style_dim) repeated over the layers
        (a code mapped by `style_mlp` first unless `input_is_latent`)."""
        if not input_is_latent:
            latent = self.style_mlp(latent)
        if latent.ndim == 2:
            latent = latent.unsqueeze(1).repeat(1, self.n_latent, 1)
        noise = self.noise_maps(latent.shape[0], randomize_noise)
        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1
            out = self.style_convs[2 * j](out, latent[:, i], noise[i])
            out = self.sft(out, conditions[2 * j], conditions[2 * j + 1])
            out = self.style_convs[2 * j + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip


class GFPGANv1Clean(RestorationNet):
    """Released flags: input_is_latent, different_w, sft_half all True (GFPGANer(arch='clean',
    channel_multiplier=2) at out_size 512). The U-Net runs at half the decoder's width."""

    def __init__(
        self,
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1.0,
        sft_half=True,
    ):
        super().__init__()
        self.spec = RestorerSpec(out_size)
        self.input_is_latent, self.different_w, self.num_style_feat = input_is_latent, different_w, num_style_feat
        self.log_size = int(math.log2(out_size))
        ch = channel_table(out_size, channel_multiplier, narrow * 0.5)
        self.conv_body_first = nn.Conv2d(3, ch[out_size], 1)
        self.conv_body_down = nn.ModuleList(ResizeResBlock(ch[2**i], ch[2 ** (i - 1)], 0.5) for i in range(self.log_size, 2, -1))
        self.final_conv = nn.Conv2d(ch[4], ch[4], 3, padding=1)
        self.conv_body_up = nn.ModuleList(ResizeResBlock(ch[2 ** (i - 1)], ch[2**i], 2) for i in range(3, self.log_size + 1))
        self.toRGB = nn.ModuleList(nn.Conv2d(ch[2**i], 3, 1) for i in range(3, self.log_size + 1))
        n_w = 2 * self.log_size - 2 if different_w else 1
        self.final_linear = nn.Linear(ch[4] * 16, n_w * num_style_feat)
        self.stylegan_decoder = StyleGAN2DecoderClean(out_size, num_style_feat, num_mlp, channel_multiplier, narrow, sft_half)
        sft_mult = 1 if sft_half else 2
        self.condition_scale = nn.ModuleList(sft_condition(ch[2**i], ch[2**i] * sft_mult) for i in range(3, self.log_size + 1))
        self.condition_shift = nn.ModuleList(sft_condition(ch[2**i], ch[2**i] * sft_mult) for i in range(3, self.log_size + 1))

    def encode(self, x, return_rgb=False):
        """Returns the style code, the SFT conditions [scale_8, shift_8, scale_16, ...] and the
        U-Net's side RGB outputs (empty unless return_rgb; only training losses use them)."""
        feat = lrelu(self.conv_body_first(x))
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = lrelu(self.final_conv(feat))  # (B, C4, 4, 4)
        code = self.final_linear(feat.flatten(1))
        if self.different_w:
            code = code.view(code.shape[0], -1, self.num_style_feat)  # (B, n_latent, style_dim)
        conditions, rgbs = [], []
        for up, scale, shift, to_rgb, skip in zip(self.conv_body_up, self.condition_scale, self.condition_shift, self.toRGB, skips[::-1]):
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
            if return_rgb:
                rgbs.append(to_rgb(feat))
        return code, conditions, rgbs

    def forward(self, x, return_rgb=True, randomize_noise=False):
        """(image, side RGBs): the raw decoder output (no clamp) for a (B, 3, S, S) face in [-1, 1].
        Deterministic unless randomize_noise (see the module docstring)."""
        code, conditions, rgbs = self.encode(x, return_rgb)
        image = self.stylegan_decoder(code, conditions, self.input_is_latent, randomize_noise)
        return image, rgbs

    def restore(self, x, fidelity: float = 1.0):
        self.spec.check_fidelity(fidelity, "GFPGAN")
        return self.forward(x, return_rgb=False)[0].clamp(-1, 1)
