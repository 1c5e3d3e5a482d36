"""SFMNet (seed 003) face super-resolution: the restoration losses with the frequency branch's
pixel and amplitude/phase terms in place of the multi-scale L1, one learning rate, no local Ds."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..archs import build_network
from ..archs.sfmnet import amplitude_phase
from .restoration import RestorationModel


class SFMNetModel(RestorationModel):
    prior_note = ""

    def build_generator(self) -> nn.Module:
        return build_network(**self.g_arch)

    def generator_groups(self) -> list[dict]:
        return [{"params": list(self.net_g.parameters()), "lr": self.opts.train.lr.codec, "name": "sfmnet"}]

    def build_local_d(self) -> nn.Module | None:
        return None  # options validation refuses gan_local > 0 for sfmnet

    def pixel_loss_name(self) -> str:
        return f"amplitude_phase {self.opts.train.losses.amplitude_phase}"

    def pixel_terms(self, out: torch.Tensor, aux: dict, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pixel L1 on both branch outputs, plus L1 on the frequency branch's amplitude and phase."""
        w = self.opts.train.losses
        fre = aux["frequency_output"]
        (amp, pha), (amp_gt, pha_gt) = amplitude_phase(fre.float()), amplitude_phase(gt)
        return {
            "l_l1": w.l1 * F.l1_loss(out, gt),
            "l_l1_fre": w.l1 * F.l1_loss(fre, gt),
            "l_amp_pha": w.amplitude_phase * (F.l1_loss(amp, amp_gt) + F.l1_loss(pha, pha_gt)),
        }
