"""Network interpolation (Wang et al., ESRGAN, 2018, section 3.4) as the fidelity dial: one
architecture trained twice, a pixel-loss stage and an adversarial stage fine-tuned from it, blended
parameter by parameter. Fidelity 1 is the pixel-loss network, 0 the adversarial one; in between,
one forward pass through the blended weights (not a blend of two outputs)."""

from __future__ import annotations

import torch
from torch.func import functional_call

from .contract import RestorationNet, RestorerSpec

INTERPOLATION_FIDELITY = "blends the weights of the pixel-loss stage (1) and the adversarial stage (0): lower is sharper, less faithful"


class InterpolatedNet(RestorationNet):
    """`fidelity_end` and `perceptual_end` are the same architecture (`base`, an arch config); its
    `restore` must be its clamped `forward`, as for CodecPriorNet. Over a StyleGAN2-prior network,
    reference-guided restoration (SAIR) optimises the latent of the fidelity end."""

    def __init__(self, base: dict):
        from . import build_network  # the registry of architectures imports this module

        super().__init__()
        self.fidelity_end = build_network(**base)
        self.perceptual_end = build_network(**base)
        end = self.fidelity_end.spec
        self.spec = RestorerSpec(end.size, end.template, (0.0, 1.0), INTERPOLATION_FIDELITY, stylegan2_prior=end.stylegan2_prior)
        self._blend: tuple[float, dict[str, torch.Tensor]] | None = None

    def blended_parameters(self, fidelity: float) -> dict[str, torch.Tensor]:
        """The parameters at `fidelity` (computed in fp32, kept in the networks' dtype); the last
        blend is cached, since a batch usually runs at one fidelity."""
        blend = self._blend  # one read: another thread may be replacing it
        if blend is None or blend[0] != fidelity:
            perceptual = dict(self.perceptual_end.named_parameters())
            params = {
                k: torch.lerp(perceptual[k].float(), p.float(), fidelity).to(p.dtype) for k, p in self.fidelity_end.named_parameters()
            }
            self._blend = blend = (fidelity, params)
        return blend[1]

    def restore(self, x: torch.Tensor, fidelity: float = 1.0) -> torch.Tensor:
        self.spec.check_fidelity(fidelity, "this interpolated network")
        if fidelity == 1.0:
            return self.fidelity_end.restore(x)
        if fidelity == 0.0:
            return self.perceptual_end.restore(x)
        return functional_call(self.fidelity_end, self.blended_parameters(fidelity), (x,)).clamp(-1, 1)

    # the StyleGAN2PriorNet interface, for SAIR: the fidelity end's
    @property
    def generator(self):
        return self.fidelity_end.generator

    def prior_inputs(self, x):
        return self.fidelity_end.prior_inputs(x)

    def prior_latent(self, code):
        return self.fidelity_end.prior_latent(code)

    def synthesize(self, w_plus, noise, x):
        return self.fidelity_end.synthesize(w_plus, noise, x)

    def _apply(self, fn, recurse=True):
        self._blend = None  # device or dtype changed: recompute the blend from the moved weights
        return super()._apply(fn, recurse)
