"""RestoreFormer (Wang et al., CVPR 2022), the version GFPGAN ships (`GFPGANer(arch='RestoreFormer')`),
re-implemented with its state_dict layout (405 keys, `params_ema`/`params`) so `RestoreFormer.pth`
loads strictly.

    face (B,3,512,512) -> VQ encoder (self-attention at 16^2) -> quant_conv -> nearest of 1024 codes
      -> post_quant_conv -> decoder whose 16^2 attention blocks take their queries from the encoder
         (the degraded face) and keys/values from the decoder (the codes): multi-head cross-attention

No fidelity control: the released network has none, so fidelity must be 1.
"""

from __future__ import annotations

from torch import nn

from .contract import RestorationNet, RestorerSpec
from .vqgan import Codebook, Downsample, ResBlock, Upsample, attention, conv3x3, normalize, swish

RELEASED_MULT = (1, 2, 2, 4, 4, 8)  # per level, 512^2 ... 16^2


class MultiHeadAttnBlock(nn.Module):
    """Self-attention of x, or cross-attention with queries from `context` (its own norm2) and keys
    and values from x; residual on x."""

    def __init__(self, ch: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = normalize(ch), normalize(ch)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x, context=None):
        h = self.norm1(x)
        query = h if context is None else self.norm2(context)
        return x + self.proj_out(attention(self.q(query), self.k(h), self.v(h), self.heads))


class Level(nn.Module):
    """One resolution: residual blocks, each followed by attention at the lowest level, then a resampler."""

    def __init__(self, cin: int, cout: int, n_blocks: int, heads: int, with_attn: bool, resample: str | None):
        super().__init__()
        self.block = nn.ModuleList(ResBlock(cin if j == 0 else cout, cout, "nin_shortcut") for j in range(n_blocks))
        self.attn = nn.ModuleList(MultiHeadAttnBlock(cout, heads) for _ in range(n_blocks if with_attn else 0))
        self.resample = resample
        if resample:
            setattr(self, resample, (Downsample if resample == "downsample" else Upsample)(cout))

    def forward(self, h, context=None):
        for j, block in enumerate(self.block):
            h = block(h)
            if self.attn:
                h = self.attn[j](h, context)
        return getattr(self, self.resample)(h) if self.resample else h


class Mid(nn.Module):
    def __init__(self, ch: int, heads: int):
        super().__init__()
        self.block_1 = ResBlock(ch, ch, "nin_shortcut")
        self.attn_1 = MultiHeadAttnBlock(ch, heads)
        self.block_2 = ResBlock(ch, ch, "nin_shortcut")


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult, num_res_blocks: int, z_channels: int, heads: int):
        super().__init__()
        widths = [ch * m for m in ch_mult]
        last = len(widths) - 1
        self.conv_in = conv3x3(3, ch)
        self.down = nn.ModuleList(
            Level(([ch] + widths)[i], w, num_res_blocks, heads, i == last, None if i == last else "downsample")
            for i, w in enumerate(widths)
        )
        self.mid = Mid(widths[-1], heads)
        self.norm_out, self.conv_out = normalize(widths[-1]), conv3x3(widths[-1], z_channels)

    def forward(self, x):
        """Returns z (B, z_channels, 16, 16) and the two maps the decoder queries from:
        "block" (after mid.block_1, for the 16^2 level) and "mid" (after mid.block_2, for the mid block)."""
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        hs = {"block": self.mid.block_1(h)}
        hs["mid"] = self.mid.block_2(self.mid.attn_1(hs["block"]))
        return self.conv_out(swish(self.norm_out(hs["mid"]))), hs


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult, num_res_blocks: int, z_channels: int, heads: int):
        super().__init__()
        widths = [ch * m for m in ch_mult]
        last = len(widths) - 1
        self.conv_in = conv3x3(z_channels, widths[-1])
        self.mid = Mid(widths[-1], heads)
        self.up = nn.ModuleList(
            Level((widths + [widths[-1]])[i + 1], w, num_res_blocks + 1, heads, i == last, "upsample" if i else None)
            for i, w in enumerate(widths)
        )
        self.norm_out, self.conv_out = normalize(widths[0]), conv3x3(widths[0], 3)

    def forward(self, z, hs):
        h = self.mid.block_1(self.conv_in(z))
        h = self.mid.block_2(self.mid.attn_1(h, hs["mid"]))
        for level in reversed(self.up):
            h = level(h, hs["block"])
        return self.conv_out(swish(self.norm_out(h)))  # raw: no tanh, no clamp


class RestoreFormer(RestorationNet):
    """Released configuration: RestoreFormer() (GFPGANer calls it without arguments). Attention sits at
    the lowest level (16^2 for `resolution` / 2^(levels-1) = 16, as upstream requires)."""

    def __init__(
        self, n_embed=1024, embed_dim=256, ch=64, ch_mult=RELEASED_MULT, num_res_blocks=2, resolution=512, z_channels=256, heads=8
    ):
        super().__init__()
        self.spec = RestorerSpec(resolution)
        self.encoder = Encoder(ch, ch_mult, num_res_blocks, z_channels, heads)
        self.decoder = Decoder(ch, ch_mult, num_res_blocks, z_channels, heads)
        self.quantize = Codebook(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)

    def encode(self, x):
        """Returns the quantiser's input (B, embed_dim, 16, 16) and the encoder maps for the decoder."""
        z, hs = self.encoder(x)
        return self.quant_conv(z), hs

    def forward(self, x):
        z, hs = self.encode(x)
        codes = self.quantize.lookup(self.quantize.nearest(z), z.shape[-1])
        return self.decoder(self.post_quant_conv(codes), hs)

    def restore(self, x, fidelity: float = 1.0):
        self.spec.check_fidelity(fidelity, "RestoreFormer")
        return self.forward(x).clamp(-1, 1)
