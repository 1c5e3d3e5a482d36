"""CodeFormer (Zhou et al., NeurIPS 2022): codebook lookup transformer over a VQGAN, re-implemented
with the released state_dict layout (515 keys, `params_ema`), so `codeformer.pth` loads strictly.

    face (B,3,512,512) -> VQ encoder -> lq_feat (B,256,16,16) -> 9 pre-norm transformer layers
      -> logits over the 1024 codes per token -> top code -> codebook rows (AdaIN to lq_feat)
      -> VQ generator, with CFT fusion of the encoder features at 32..256: x + w (x * scale + shift)

`w` (0..1) is CodeFormer's fidelity weight; faceres's `fidelity` is w itself (1 = closest to the
input, 0 = codebook only, fusion skipped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .contract import RestorationNet, RestorerSpec
from .vqgan import Codebook, ResBlock, VQEncoder, VQGenerator

CODEFORMER_FIDELITY = (
    "CodeFormer's w, the weight of the controllable feature transform that fuses the encoder's "
    "features into the codebook decoder: 1 = closest to the input, 0 = codebook prior only"
)
FUSE_CHANNELS = {16: 512, 32: 256, 64: 256, 128: 128, 256: 128, 512: 64}  # at nf = 64


class TransformerSALayer(nn.Module):
    """Pre-norm self-attention layer; the position embedding is added to queries and keys only."""

    def __init__(self, dim: int, n_head: int, dim_mlp: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, n_head, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, dim_mlp), nn.Linear(dim_mlp, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, t, pos):  # t: (B, HW, dim), pos: (HW, dim)
        h = self.norm1(t)
        t = t + self.self_attn(h + pos, h + pos, h, need_weights=False)[0]
        return t + self.linear2(F.gelu(self.linear1(self.norm2(t))))


class FuseSFTBlock(nn.Module):
    """Controllable feature transform: scale and shift predicted from [encoder feature, decoder feature]."""

    def __init__(self, ch: int):
        super().__init__()
        self.encode_enc = ResBlock(2 * ch, ch)
        self.scale = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 3, padding=1))
        self.shift = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, enc, dec, w: float):
        e = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + w * (dec * self.scale(e) + self.shift(e))


def mean_std(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and channel over positions; std from the unbiased variance, as upstream."""
    flat = x.flatten(2)
    return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]


def adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    (mc, sc), (ms, ss) = mean_std(content), mean_std(style)
    return (content - mc) / sc * ss + ms


class CodeFormer(RestorationNet):
    """Released configuration: CodeFormer() (inference_codeformer.py: dim_embd 512, 1024 codes, 8 heads,
    9 layers, fusion at 32/64/128/256). `nf` (VQGAN base width) and the transformer sizes may be
    smaller for tests; the 512^2 input, its 16x16 code map and the level layout are fixed."""

    def __init__(
        self,
        dim_embd=512,
        codebook_size=1024,
        n_head=8,
        n_layers=9,
        connect_list=("32", "64", "128", "256"),
        nf=64,
        emb_dim=256,
        latent_size=256,
    ):
        super().__init__()
        self.spec = RestorerSpec(512, fidelity_range=(0.0, 1.0), fidelity_meaning=CODEFORMER_FIDELITY)
        self.side = int(latent_size**0.5)
        if self.side != 16:
            raise ValueError(f"CodeFormer's 512^2 VQGAN has a 16x16 code map (latent_size 256), got {latent_size}")
        self.connect = [int(s) for s in connect_list]
        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.encoder = VQEncoder(nf, emb_dim)
        self.quantize = Codebook(codebook_size, emb_dim)
        self.generator = VQGenerator(nf, emb_dim)
        self.feat_emb = nn.Linear(emb_dim, dim_embd)
        self.ft_layers = nn.Sequential(*(TransformerSALayer(dim_embd, n_head, 2 * dim_embd) for _ in range(n_layers)))
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))
        self.fuse_convs_dict = nn.ModuleDict({s: FuseSFTBlock(FUSE_CHANNELS[int(s)] * nf // 64) for s in connect_list})

    def predict_codes(self, x):
        """Returns logits (B, 256, codebook_size), lq_feat (B, emb_dim, 16, 16) and the encoder skips."""
        lq_feat, skips = self.encoder(x)
        t = self.feat_emb(lq_feat.flatten(2).transpose(1, 2))  # (B, 256, dim_embd)
        for layer in self.ft_layers:
            t = layer(t, self.position_emb)
        return self.idx_pred_layer(t), lq_feat, skips

    def decode(self, codes, skips, w: float):
        x = codes
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            res = self.generator.fuse_at.get(i)
            if w > 0 and res in self.connect:
                x = self.fuse_convs_dict[str(res)](skips[res], x, w)
        return x

    def forward(self, x, w: float = 0.0, adain_codes: bool = False):
        """Upstream's forward(x, w, adain): returns (out, logits, lq_feat); `out` is raw (not clamped)."""
        logits, lq_feat, skips = self.predict_codes(x)
        codes = self.quantize.lookup(logits.argmax(-1), self.side)
        if adain_codes:
            codes = adain(codes, lq_feat)
        return self.decode(codes, skips, w), logits, lq_feat

    def restore(self, x, fidelity: float = 1.0):
        """Upstream inference: w = fidelity, AdaIN on."""
        self.spec.check_fidelity(fidelity, "CodeFormer")
        return self.forward(x, w=fidelity, adain_codes=True)[0].clamp(-1, 1)
