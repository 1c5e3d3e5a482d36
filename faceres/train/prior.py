"""Stage 0: the unconditional StyleGAN2 prior (non-saturating GAN loss, lazy R1), for where no
GPEN file exists; its exports feed path.prior_g / path.prior_d of a restoration run."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..archs import StyleGAN2Generator
from ..checkpoints import save_model
from ..losses import g_nonsaturating
from .base import TrainingModel, set_trainable


class PriorModel(TrainingModel):
    def generator_kwargs(self) -> dict:
        g = self.opts.network_g
        return dict(size=g.size, style_dim=g.style_dim, n_mlp=g.n_mlp, channel_multiplier=g.channel_multiplier, narrow=g.narrow)

    def build_generator(self) -> nn.Module:
        return StyleGAN2Generator(**self.generator_kwargs())

    def generator_groups(self) -> list[dict]:
        return [{"params": list(self.net_g.parameters()), "lr": self.opts.train.lr.generator, "name": "generator"}]

    def describe_losses(self) -> list[str]:
        return ["gan (softplus)", f"r1 {self.opts.train.r1_weight}"]

    def sample(self, net: nn.Module, n: int) -> torch.Tensor:
        return net(torch.randn(n, self.opts.network_g.style_dim, device=self.device))[0]

    def train_step(self, batch: dict, gt: torch.Tensor) -> dict[str, float]:
        set_trainable(self.net_d, False)
        with self.autocast():
            fake = self.sample(self.net_g, gt.shape[0])
            l_g = g_nonsaturating(self.net_d(fake))
        self.update(self.net_g, self.opt_g, l_g)
        logs = {"l_gan": float(l_g.detach())}
        self.discriminator_step(self.net_d, self.opt_d, gt, fake.detach().float(), logs, "l_d", r1=True)
        return logs

    @torch.no_grad()
    def validation_output(self, lq: torch.Tensor) -> torch.Tensor:
        return self.sample(self.net_g_ema, 1)  # unconditional: only the grid is meaningful

    def export(self, models_dir: Path) -> None:
        save_model(self.net_g_ema, models_dir / f"prior_g_{self.iter:08d}.safetensors", {"arch": "stylegan2_g", **self.generator_kwargs()})
        save_model(self.net_d, models_dir / f"prior_d_{self.iter:08d}.safetensors", {"arch": "stylegan2_d"})
