"""Seed 001's restoration training: CodecPriorNet, a global StyleGAN2 D with FreezeD, eye/mouth
component Ds, and the pixel, adversarial, feature, identity and frequency losses."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..archs import ComponentDiscriminator, build_network, freeze_d
from ..archs.discriminators import luma
from ..checkpoints import load_state_dict_file, save_model
from ..data.components import COMPONENTS
from ..losses import (
    DiscriminatorFeatureLoss,
    DlibIdentityLoss,
    IdentityLoss,
    VGGFeatureLoss,
    artifact_loss,
    build_arcface,
    chroma_l1,
    excess_detail_loss,
    g_nonsaturating,
    multiscale_l1,
    ssim_loss,
)
from ..losses.frequency import FocalFrequencyLoss, GuidedFrequencyLoss
from ..weights import WeightsError, resolve
from .base import TrainingModel, set_trainable
from .options import OptionsError


def visibly_degraded(lq: torch.Tensor, gt: torch.Tensor, below_db: float = 30.0) -> torch.Tensor:
    """The inputs of the batch whose PSNR against their ground truth is below `below_db` (images in
    [-1, 1]): the untouched and near-clean pairs are left out, since a D cannot call those fake."""
    if lq.shape != gt.shape:
        raise ValueError(f"train.d_input_as_fake needs inputs the size of the ground truth, got {tuple(lq.shape)} and {tuple(gt.shape)}")
    mse = (lq.float() - gt.float()).square().mean((1, 2, 3)) / 4  # [-1, 1] -> [0, 1]
    return lq[10 * torch.log10(1 / mse.clamp_min(1e-10)) < below_db]


def component_crops(images: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eye and mouth crops (B, 3, s, s) from boxes (B, 3, 4) in pixels; s scales with the face (80/120 px at 512)."""
    from torchvision.ops import roi_align

    size = images.shape[-1]
    idx = torch.arange(images.shape[0], device=images.device, dtype=images.dtype)[:, None]
    crops = {}
    for c, name in enumerate(COMPONENTS):
        out = max(16, round((120 if name == "mouth" else 80) * size / 512))
        rois = torch.cat([idx, boxes[:, c].to(images)], dim=1)
        crops[name] = roi_align(images.float(), rois, output_size=out, aligned=True)
    return crops


class RestorationModel(TrainingModel):
    prior_note = " (and the whole codec)"

    def build_generator(self) -> nn.Module:
        net = build_network(**self.g_arch)
        if self.opts.network_g.noise_init:
            for name, p in net.generator.named_parameters():
                if name.endswith("noise.weight"):
                    p.data.fill_(self.opts.network_g.noise_init)
        return net

    def generator_groups(self) -> list[dict]:
        groups, lr = self.net_g.param_groups(), self.opts.train.lr
        return [{"params": groups[k], "lr": getattr(lr, k), "name": k} for k in ("codec", "generator", "noise")]

    def freeze_discriminator(self) -> None:
        n = self.opts.network_d.freeze_layers
        if n and (frozen := freeze_d(self.net_d, n)):
            self.log(f"FreezeD: {len(frozen)} tensors in the first {n} D layers are frozen")

    def build_local_d(self) -> nn.Module | None:
        if self.opts.train.losses.gan_local <= 0:
            return None
        d = self.opts.network_d
        return nn.ModuleDict({c: ComponentDiscriminator(d.component_channels, luma=d.luma, detail=d.detail_inputs) for c in COMPONENTS})

    # ---------------------------------------------------------------- losses

    def build_losses(self) -> None:
        w = self.opts.train.losses
        self.feature_loss = self.identity_loss = self.ffl = self.gfl = None
        fm = w.feature_matching
        if fm.weight > 0 and fm.type == "vgg19":
            try:
                self.feature_loss = VGGFeatureLoss(load_state_dict_file(resolve(fm.weights))).to(self.device)
            except WeightsError as err:
                raise OptionsError(
                    f"train.losses.feature_matching needs VGG19 weights: {err}. Provide them, or choose "
                    "`type: discriminator_features` (a different, offline loss) or `weight: 0`"
                ) from None
        elif fm.weight > 0 and fm.type == "discriminator_features":
            self.feature_loss = DiscriminatorFeatureLoss()
        self.identity_loss = self._identity_loss()
        if w.ffl.weight > 0:
            self.ffl = FocalFrequencyLoss(w.ffl.alpha, w.ffl.patch_factor, w.ffl.log_matrix, w.ffl.batch_matrix)
        if w.gfl.weight > 0:
            self.gfl = GuidedFrequencyLoss.from_opts(w.gfl, self.opts.train.total_iter)
        # an L1-only stage has no use for the global D: it is kept (and saved) but not trained
        self.uses_global_d = w.gan_global > 0 or isinstance(self.feature_loss, DiscriminatorFeatureLoss)

    def _identity_loss(self) -> nn.Module | None:
        ident = self.opts.train.losses.identity
        if ident.weight > 0 and ident.type == "arcface":
            try:
                return IdentityLoss(build_arcface(load_state_dict_file(resolve(ident.weights)))).to(self.device)
            except WeightsError as err:
                raise OptionsError(f"train.losses.identity needs ArcFace weights: {err}. Provide them or set `type: none`") from None
        if ident.weight > 0 and ident.type == "dlib":
            from ..archs.dlib_resnet import DlibFaceDescriptor
            from ..dlib_dat import load_dlib_resnet

            try:
                return DlibIdentityLoss(DlibFaceDescriptor(load_dlib_resnet())).to(self.device)
            except WeightsError as err:
                raise OptionsError(f"train.losses.identity (dlib) needs dlib's face ResNet: {err}") from None
        return None

    def pixel_loss_name(self) -> str:
        return f"multiscale_l1 {self.opts.train.losses.multiscale_l1}"

    def describe_losses(self) -> list[str]:
        w = self.opts.train.losses
        names = [f"l1 {w.l1}", self.pixel_loss_name(), f"gan_global {w.gan_global}", f"gan_local {w.gan_local}"]
        optional = ("mse", "chroma_l1", "ssim", "artifacts", "excess_detail")
        names += [f"{name} {getattr(w, name)}" for name in optional if getattr(w, name) > 0]
        if self.feature_loss is not None:
            vgg = isinstance(self.feature_loss, VGGFeatureLoss)
            kind = "VGG19 feature matching" if vgg else "discriminator-feature matching (not VGG)"
            names.append(f"{kind} {w.feature_matching.weight}")
        if self.identity_loss is not None:
            kind = "dlib ResNet" if isinstance(self.identity_loss, DlibIdentityLoss) else f"ArcFace {w.identity.weights}"
            names.append(f"identity ({kind}) {w.identity.weight}")
        for name, loss, o in (("ffl", self.ffl, w.ffl), ("gfl", self.gfl, w.gfl)):
            if loss is not None:
                names.append(f"{name} {o.weight}")
        return names

    def pixel_terms(self, out: torch.Tensor, aux: dict, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.opts.train.losses
        return {"l_l1": w.l1 * F.l1_loss(out, gt), "l_ms": w.multiscale_l1 * multiscale_l1(aux["rgbs"], gt)}

    def generator_losses(self, lq, gt, boxes) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        w = self.opts.train.losses
        out, aux = self.net_g(lq, return_aux=True)
        out = out.float()  # losses in fp32 whatever the network ran in
        terms = self.pixel_terms(out, aux, gt)
        # here, not in pixel_terms: every family's output gets them (SFMNet overrides those)
        if w.mse > 0:
            terms["l_mse"] = w.mse * F.mse_loss(out, gt)
        if w.chroma_l1 > 0:
            terms["l_chroma"] = w.chroma_l1 * chroma_l1(out, gt)
        if w.ssim > 0:
            terms["l_ssim"] = w.ssim * ssim_loss(out, gt)
        if w.artifacts > 0:
            with torch.no_grad():
                ema_out = self.net_g_ema(lq)
            terms["l_artifacts"] = w.artifacts * artifact_loss(out, gt, ema_out)
        if w.excess_detail > 0:
            terms["l_excess"] = w.excess_detail * excess_detail_loss(out, gt)
        if w.gan_global > 0:
            terms["l_gan"] = w.gan_global * g_nonsaturating(self.net_d(self.d_view(out, lq)))
        if self.local_d is not None:
            fake = component_crops(out, boxes)
            terms["l_local"] = w.gan_local * sum(g_nonsaturating(self.local_d[c](fake[c])) for c in COMPONENTS)
        if isinstance(self.feature_loss, VGGFeatureLoss):
            terms["l_vgg"] = w.feature_matching.weight * self.feature_loss(out, gt)
        elif self.feature_loss is not None:
            terms["l_dfeat"] = w.feature_matching.weight * self.feature_loss(self.net_d, self.d_view(out, lq), self.d_view(gt, lq))
        if self.identity_loss is not None:
            terms["l_id"] = w.identity.weight * self.identity_loss(out, gt)
        if self.ffl is not None:
            terms["l_ffl"] = w.ffl.weight * self.ffl(out, gt)
        if self.gfl is not None:
            terms["l_gfl"] = w.gfl.weight * self.gfl(out, gt)
        return sum(terms.values()), terms, out

    # ---------------------------------------------------------------- step

    def train_step(self, batch: dict, gt: torch.Tensor) -> dict[str, float]:
        lq, boxes = self.to_device(batch["lq"]), batch.get("boxes")
        if self.iter < self.stage_start + self.opts.train.d_warmup:
            return self.discriminator_warmup_step(lq, gt, boxes)
        set_trainable(self.net_d, False)
        if self.local_d is not None:
            set_trainable(self.local_d, False)
        with self.autocast():
            total, terms, out = self.generator_losses(lq, gt, boxes)
        self.update(self.net_g, self.opt_g, total)
        if self.gfl is not None:
            self.gfl.advance(self.iter, float(terms["l_gfl"].detach()) / max(self.opts.train.losses.gfl.weight, 1e-12))
        logs = {k: float(v.detach()) for k, v in terms.items()}
        self.discriminator_steps(gt, out.detach().float(), boxes, logs, lq)
        return logs

    def discriminator_warmup_step(self, lq, gt, boxes) -> dict[str, float]:
        """G restores without learning; only the discriminators update."""
        with torch.no_grad(), self.autocast():
            fake = self.net_g(lq).float()
        logs = {}
        self.discriminator_steps(gt, fake, boxes, logs, lq)
        return logs

    def d_view(self, image: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """What the global D is given: the image, and with `network_d.condition` the degraded input's luma
        at the image's size after it."""
        if not self.opts.network_d.condition:
            return image
        cond = luma(lq.float())
        if cond.shape[-2:] != image.shape[-2:]:
            cond = F.interpolate(cond, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([image, cond.to(image.dtype)], 1)

    def discriminator_steps(self, gt, fake, boxes, logs: dict, lq) -> None:
        if self.uses_global_d:
            negatives = visibly_degraded(lq, gt) if self.opts.train.d_input_as_fake > 0 else None
            real, fake_seen = self.d_view(gt, lq), self.d_view(fake, lq)
            self.discriminator_step(self.net_d, self.opt_d, real, fake_seen, logs, "l_d", r1=True, negatives=negatives)
        if self.local_d is not None:  # no autocast: the component Ds are small and run in fp32
            real_c, fake_c = component_crops(gt, boxes), component_crops(fake, boxes)
            self.discriminator_step(self.local_d, self.opt_local, real_c, fake_c, logs, "l_d_local", autocast=False)

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.gfl is not None:
            state["gfl"] = self.gfl.state_dict()
        return state

    def load_state_dict(self, state: dict):
        super().load_state_dict(state)
        if self.gfl is not None and "gfl" in state:
            self.gfl.load_state_dict(state["gfl"])

    def export(self, models_dir: Path) -> None:
        save_model(
            self.net_g_ema,
            models_dir / f"net_g_ema_{self.iter:08d}.safetensors",
            self.g_arch,
            extra={"iter": self.iter, "name": self.opts.name, **({"grown_from": self.grown_from} if self.grown_from else {})},
        )
