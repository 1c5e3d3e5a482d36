"""StyleGAN2 building blocks in pure PyTorch (no custom CUDA ops).

Parameter names and tensor layouts follow rosinality's stylegan2-pytorch, which GPEN
also uses, so GPEN-BFR checkpoints load strictly. Equalized learning rate: weights are
stored as N(0, 1) and scaled at run time by 1/sqrt(fan_in) (times lr_mul for linears).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def channel_table(
    size: int, channel_multiplier: float = 2, narrow: float = 1, min_channels: int = 0, channels_at: dict | None = None
) -> dict[int, int]:
    """Channels per resolution, as in StyleGAN2/GPEN (int() truncates), raised to `min_channels` (not in
    StyleGAN2: a narrow network otherwise has only 4-16 channels at its finest resolutions), then set to
    `channels_at` {resolution: channels} where given (keys may be strings, as JSON metadata stores them)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16, 2048: 8}
    table = {}
    for res, ch in base.items():
        cm = 1 if res <= 32 else channel_multiplier
        table[res] = max(int(ch * cm * narrow), min_channels)
    table.update({int(r): c for r, c in (channels_at or {}).items()})
    return {r: c for r, c in table.items() if r <= size}


def make_kernel(k=(1, 3, 3, 1)) -> torch.Tensor:
    k = torch.tensor(k, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Zero-insert by `up`, pad (p0 top/left, p1 bottom/right), convolve with `kernel`, keep every `down`-th."""
    b, c, h, w = x.shape
    if up > 1:
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
        if nhwc:  # keep the caller's layout: the result is added to an NHWC tensor
            x = x.contiguous(memory_format=torch.channels_last)
    kh, kw = kernel.shape
    weight = torch.flip(kernel, (0, 1)).to(x.dtype).expand(c, 1, kh, kw)
    if pad[0] == pad[1] >= 0:  # the conv pads itself: no padded copy of x
        return F.conv2d(x, weight, stride=down, padding=pad[0], groups=c)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    return F.conv2d(x, weight, stride=down, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope=0.2, scale=SQRT2) -> torch.Tensor:
    """leaky_relu(x + bias) * scale in two passes over x instead of three (leaky ReLU is positively
    homogeneous, so the scale goes in first: scale * bias + scale * x, then in place)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu_(torch.add(bias.view(shape).to(x.dtype) * scale, x, alpha=scale), negative_slope)


class FusedLeakyReLU(nn.Module):
    """Per-channel bias then sqrt(2)-scaled leaky ReLU (slope 0.2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    def __init__(self, kernel, pad, upsample_factor=1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor**2
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 FIR upsampling (used on the ToRGB skip)."""

    def __init__(self, kernel, factor=2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)  # (2, 1) for [1,3,3,1]

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualConv2d(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, bias=True, bias_init=0.0, lr_mul=1.0, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x):
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU]; indices give GPEN's `.0/.1/.2` keys."""

    def __init__(self, in_ch, out_ch, kernel_size, downsample=False, blur_kernel=(1, 3, 3, 1), bias=True, activate=True):
        layers = []
        if downsample:
            p = len(blur_kernel) - 2 + kernel_size - 1
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch) if bias else ScaledLeakyReLU())
        super().__init__(*layers)


class ScaledLeakyReLU(nn.Module):
    def forward(self, x):
        return F.leaky_relu(x, 0.2) * SQRT2


class ResBlock(nn.Module):
    """Discriminator residual block: (conv2(conv1(x)) + skip(x)) / sqrt(2), halves resolution."""

    def __init__(self, in_ch, out_ch, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel, bias=False, activate=False)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class ModulatedConv2d(nn.Module):
    """Style-modulated conv with optional demodulation."""

    def __init__(self, in_ch, out_ch, kernel_size, style_dim, demodulate=True, upsample=False, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.in_ch, self.out_ch, self.k = in_ch, out_ch, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            p = len(blur_kernel) - 2 - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1)

    def forward(self, x, style):
        # Non-fused form of modulation/demodulation: scale the input channels by the style,
        # run one shared conv over the batch, scale the output channels by the demodulation
        # factor. Same maths as a grouped conv with per-sample weights, much faster on CPU.
        b = x.shape[0]
        s = self.modulation(style)  # (B, in)
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        x = x * s.view(b, self.in_ch, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            demod = torch.rsqrt(s.square() @ weight.square().sum((2, 3)).t() + 1e-8)  # (B, out)
            out = out * demod.view(b, self.out_ch, 1, 1)
        return out


class NoiseInjection(nn.Module):
    """Concat mode (GPEN): cat([features, weight*noise]) doubles channels. Add mode: features + weight*noise."""

    def __init__(self, isconcat=True):
        super().__init__()
        self.isconcat = isconcat
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image, noise=None):
        if noise is None:
            noise = torch.randn_like(image) if self.isconcat else image.new_empty(image.shape[0], 1, *image.shape[2:]).normal_()
        noise = self.weight.to(image.dtype) * noise.to(image.dtype)  # in the features' dtype (bf16 under autocast)
        return torch.cat([image, noise], dim=1) if self.isconcat else image + noise


class StyledConv(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, style_dim, upsample=False, blur_kernel=(1, 3, 3, 1), isconcat=True):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection(isconcat)
        self.activate = FusedLeakyReLU(out_ch * 2 if isconcat else out_ch)

    def forward(self, x, style, noise=None):
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, in_ch, style_dim, upsample=True, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels, size=4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int):
        # expand + clone keeps the parameter's memory layout (NHWC for bf16 inference); repeat returns NCHW
        return self.input.expand(batch, -1, -1, -1).clone(memory_format=torch.preserve_format)


class MappingNetwork(nn.Sequential):
    """PixelNorm + n_mlp EqualLinear(lr_mul) with fused lrelu: z -> w. Index 0 has no params."""

    def __init__(self, style_dim=512, n_mlp=8, lr_mlp=0.01):
        layers = [PixelNorm()] + [EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)]
        super().__init__(*layers)


class StyleGAN2Generator(nn.Module):
    """Mapping MLP + synthesis network. Every StyledConv takes one spatial "noise" map.

    `noise` is a list of 2*log2(size)-3 maps: one for the 4x4 conv, then two per resolution
    8..size. In concat mode each must have channels[res] channels (the restoration
    networks feed encoder/decoder features here); None entries draw Gaussian noise.
    """

    def __init__(
        self,
        size,
        style_dim=512,
        n_mlp=8,
        channel_multiplier=2,
        narrow=1.0,
        isconcat=True,
        lr_mlp=0.01,
        blur_kernel=(1, 3, 3, 1),
        min_channels=0,
        channels_at=None,
    ):
        super().__init__()
        self.size, self.style_dim = size, style_dim
        self.log_size = int(math.log2(size))
        self.channels = channel_table(size, channel_multiplier, narrow, min_channels, channels_at)
        mult = 2 if isconcat else 1
        ch = self.channels
        self.style = MappingNetwork(style_dim, n_mlp, lr_mlp)
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel, isconcat=isconcat)
        self.to_rgb1 = ToRGB(ch[4] * mult, style_dim, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        in_ch = ch[4]
        for i in range(3, self.log_size + 1):
            out_ch = ch[2**i]
            self.convs.append(StyledConv(in_ch * mult, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel, isconcat=isconcat))
            self.convs.append(StyledConv(out_ch * mult, out_ch, 3, style_dim, blur_kernel=blur_kernel, isconcat=isconcat))
            self.to_rgbs.append(ToRGB(out_ch * mult, style_dim))
            in_ch = out_ch
        self.n_latent = self.log_size * 2 - 2

    @property
    def num_noise_layers(self) -> int:
        return 2 * self.log_size - 3

    def noise_resolutions(self) -> list[int]:
        return [4] + [2**i for i in range(3, self.log_size + 1) for _ in range(2)]

    def mean_latent(self, n: int = 4096) -> torch.Tensor:
        z = torch.randn(n, self.style_dim, device=self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def forward(self, z, noise=None, input_is_latent=False, return_latents=False):
        """z: (B, style_dim) code, or (B, n_latent, style_dim) W+ when input_is_latent."""
        if input_is_latent:
            latent = z if z.ndim == 3 else z.unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            latent = self.style(z).unsqueeze(1).repeat(1, self.n_latent, 1)
        noise = noise if noise is not None else [None] * self.num_noise_layers
        out = self.input(latent.shape[0])
        out = self.conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, to_rgb in zip(self.convs[::2], self.convs[1::2], self.to_rgbs):
            out = conv_up(out, latent[:, i], noise[i])
            out = conv(out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip, (latent if return_latents else None)
