"""GPEN's FullGenerator re-implemented with the same state_dict layout (Yang et al., CVPR 2021).

A plain conv encoder (`ecd0..`) maps the face to a code and to one feature map per
resolution; the code goes through the generator's mapping MLP to a single W, and the
maps are concatenated into the StyleGAN2 noise branches. Official GPEN-BFR checkpoints
load strictly (see `faceres.checkpoints.gpen_config_from_state_dict`).
"""

import math

from torch import nn

from .contract import PRIOR_FIDELITY, RestorerSpec, StyleGAN2PriorNet, noise_from_features
from .stylegan2 import ConvLayer, EqualLinear, StyleGAN2Generator, channel_table


class GPENGenerator(StyleGAN2PriorNet):
    def __init__(self, size=512, style_dim=512, n_mlp=8, channel_multiplier=2, narrow=1.0, isconcat=True, lr_mlp=0.01):
        super().__init__()
        self.spec = RestorerSpec(size, fidelity_range=(0.0, 1.0), fidelity_meaning=PRIOR_FIDELITY, stylegan2_prior=True)
        self.log_size = int(math.log2(size))
        ch = channel_table(size, channel_multiplier, narrow)
        self.generator = StyleGAN2Generator(size, style_dim, n_mlp, channel_multiplier, narrow, isconcat, lr_mlp)
        self.ecd0 = nn.Sequential(ConvLayer(3, ch[size], 1))
        for k, i in enumerate(range(self.log_size, 2, -1), start=1):
            setattr(self, f"ecd{k}", nn.Sequential(ConvLayer(ch[2**i], ch[2 ** (i - 1)], 3, downsample=True)))
        self.n_encoders = self.log_size - 1
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, style_dim, activation="fused_lrelu"))

    def encode(self, x):
        """Returns the style code (B, style_dim) and encoder maps ordered 4x4 ... size."""
        feats = []
        for k in range(self.n_encoders):
            x = getattr(self, f"ecd{k}")(x)
            feats.append(x)
        code = self.final_linear(x.flatten(1))
        return code, feats[::-1]

    def forward(self, x, return_latents=False, fidelity: float = 1.0):
        code, feats = self.encode(x)
        return self.generator(code, noise_from_features(feats, fidelity), return_latents=return_latents)

    def restore(self, x, fidelity: float = 1.0):
        self.spec.check_fidelity(fidelity, "GPEN")
        return self.forward(x, fidelity=fidelity)[0].clamp(-1, 1)

    def prior_inputs(self, x):
        code, feats = self.encode(x)
        return code, noise_from_features(feats)
