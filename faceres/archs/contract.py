"""The contract every face-restoration network implements, so the pipeline needs no per-family code.

    net.spec                 -> RestorerSpec: input size, face template, fidelity range
    net.restore(x, fidelity) -> (B, 3, S, S) in [-1, 1], from an aligned (B, 3, S, S) batch in [-1, 1]

`fidelity` is faceres's one dial: 1 = closest to the input. Each family says what it maps to
(`RestorerSpec.fidelity_meaning`); families without such a dial refuse anything but 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RestorerSpec:
    size: int  # square input and output side, pixels
    template: str = "ffhq"  # 5-point alignment template of the crops (FFHQ's, scaled to `size`)
    fidelity_range: tuple[float, float] = (1.0, 1.0)  # (1, 1): no fidelity dial
    fidelity_meaning: str = "none: this model has no fidelity control"
    stylegan2_prior: bool = False  # a StyleGAN2PriorNet: reference-guided restoration (SAIR) can optimise its latent

    @property
    def has_fidelity(self) -> bool:
        return self.fidelity_range != (1.0, 1.0)

    def check_fidelity(self, fidelity: float, name: str = "this model") -> None:
        lo, hi = self.fidelity_range
        if not lo <= fidelity <= hi:
            if not self.has_fidelity:
                raise ValueError(f"{name} has no fidelity control; use fidelity 1")
            raise ValueError(f"fidelity must be in [{lo:g}, {hi:g}] for {name}, got {fidelity}")


PRIOR_FIDELITY = "scales the input features fed into the StyleGAN2 prior's noise branches (0 = prior only)"


class RestorationNet(nn.Module):
    """Base class: subclasses set `self.spec` and implement `restore`."""

    spec: RestorerSpec

    @property
    def size(self) -> int:
        return self.spec.size

    def restore(self, x: torch.Tensor, fidelity: float = 1.0) -> torch.Tensor:
        raise NotImplementedError


class StyleGAN2PriorNet(RestorationNet):
    """A network whose face comes out of a StyleGAN2 generator (`self.generator`), fed a code through
    the mapping MLP and noise maps derived from the input. SAIR optimises the generator's W+ latent
    through these three methods only. Subclasses set `stylegan2_prior=True` in their spec."""

    def prior_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Code (B, style_dim) for the mapping MLP and the generator's noise list, at fidelity 1."""
        raise NotImplementedError

    def prior_latent(self, code: torch.Tensor) -> torch.Tensor:
        """W+ (B, n_latent, style_dim): the mapping MLP's single W, repeated for every layer."""
        g = self.generator
        return g.style(code).unsqueeze(1).repeat(1, g.n_latent, 1)

    def synthesize(self, w_plus: torch.Tensor, noise: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The network's raw output (not clamped) for a W+ latent and noise list; `x` is the input face."""
        return self.generator(w_plus, noise, input_is_latent=True)[0]


def noise_from_features(feats: list[torch.Tensor], fidelity: float = 1.0) -> list[torch.Tensor]:
    """Encoder/decoder maps ordered 4x4 ... size -> the StyleGAN2 generator's noise list: the 4x4 map
    feeds conv1, every other map both StyledConvs at its resolution; scaled by `fidelity`."""
    if fidelity != 1.0:
        feats = [f * fidelity for f in feats]
    return [feats[0]] + [f for f in feats[1:] for _ in range(2)]
