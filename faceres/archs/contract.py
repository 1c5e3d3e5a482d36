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


def noise_from_features(feats: list[torch.Tensor], fidelity: float = 1.0) -> list[torch.Tensor]:
    """Encoder/decoder maps ordered 4x4 ... size -> the StyleGAN2 generator's noise list: the 4x4 map
    feeds conv1, every other map both StyledConvs at its resolution; scaled by `fidelity`."""
    if fidelity != 1.0:
        feats = [f * fidelity for f in feats]
    return [feats[0]] + [f for f in feats[1:] for _ in range(2)]
