"""Seed-001 training: CodecPriorNet + FreezeD global D + eye/mouth local Ds, and the
unconditional StyleGAN2 prior stage (`train.mode: prior`)."""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..archs import CodecPriorNet, ComponentDiscriminator, StyleGAN2Discriminator, StyleGAN2Generator, build_network, freeze_d
from ..archs.sfmnet import amplitude_phase
from ..checkpoints import init_generator_from, load_state_dict_file, read_metadata, save_model
from ..data import FaceDataset, IterationSampler
from ..data.components import COMPONENTS
from ..devices import pick_device, to_channels_last, use_bf16
from ..losses import (
    DiscriminatorFeatureLoss,
    DlibIdentityLoss,
    IdentityLoss,
    VGGFeatureLoss,
    build_arcface,
    d_logistic,
    g_nonsaturating,
    multiscale_l1,
    r1_penalty,
)
from ..losses.frequency import FocalFrequencyLoss, GuidedFrequencyLoss
from ..metrics import psnr, ssim
from ..weights import WeightsError, resolve
from .options import Options, OptionsError


def set_trainable(module: nn.Module, flag: bool, keep_frozen: set[int] = frozenset()):
    for p in module.parameters():
        if id(p) not in keep_frozen:
            p.requires_grad_(flag)


def load_prior(net_g: nn.Module, path: str, log) -> None:
    report = init_generator_from(net_g, load_state_dict_file(resolve(path)))
    log(f"prior {path}: loaded {len(report['loaded'])} generator tensors, {len(report['new'])} generator tensors are new"
        f"{' (and the whole codec)' if isinstance(net_g, CodecPriorNet) else ''}; {len(report['skipped'])} file tensors unused")


def load_disc(net_d: nn.Module, path: str, log) -> None:
    sd = load_state_dict_file(resolve(path))
    try:
        net_d.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{path}: does not fit network_d ({str(err).splitlines()[1].strip()})") from None
    log(f"global D initialised from {path} ({len(sd)} tensors)")


class Trainer:
    def __init__(self, opts: Options, device: torch.device, rank: int = 0, world: int = 1, log=print):
        self.opts, self.device, self.rank, self.world = opts, device, rank, world
        self.log = log if rank == 0 else (lambda *a, **k: None)
        self.prior_mode = opts.train.mode == "prior"
        self.use_bf16 = use_bf16(opts.train.precision, device)
        self.memory_format = torch.channels_last if opts.train.channels_last else torch.contiguous_format
        torch.manual_seed(opts.seed)  # identical initial weights on every rank
        g, d, tr, w = opts.network_g, opts.network_d, opts.train, opts.train.losses
        gkw = dict(size=g.size, style_dim=g.style_dim, n_mlp=g.n_mlp, channel_multiplier=g.channel_multiplier, narrow=g.narrow)
        self.g_arch = g.arch_config()
        self.net_g = StyleGAN2Generator(**gkw) if self.prior_mode else build_network(**self.g_arch)
        self.net_d = StyleGAN2Discriminator(g.size, d.channel_multiplier, d.narrow)
        if g.noise_init and isinstance(self.net_g, CodecPriorNet):
            for name, p in self.net_g.generator.named_parameters():
                if name.endswith("noise.weight"):
                    p.data.fill_(g.noise_init)
        if opts.path.prior_g:
            load_prior(self.net_g, opts.path.prior_g, self.log)
        if opts.path.prior_d:
            load_disc(self.net_d, opts.path.prior_d, self.log)
        frozen = freeze_d(self.net_d, d.freeze_layers) if not self.prior_mode and d.freeze_layers else []
        self.frozen_ids = {id(p) for p in self.net_d.parameters() if not p.requires_grad}
        if frozen:
            self.log(f"FreezeD: {len(frozen)} tensors in the first {d.freeze_layers} D layers are frozen")
        self.local_d = None
        if not self.prior_mode and w.gan_local > 0:
            self.local_d = nn.ModuleDict({c: ComponentDiscriminator(d.component_channels) for c in COMPONENTS})
        self.net_g_ema = copy.deepcopy(self.net_g).eval().requires_grad_(False)
        for m in (self.net_g, self.net_d, self.net_g_ema, self.local_d):
            if m is not None:
                m.to(device)
                if opts.train.channels_last:
                    to_channels_last(m)
        self._build_losses()
        # an L1-only stage has no use for the global D: it is kept (and saved) but not trained
        self.uses_global_d = w.gan_global > 0 or isinstance(self.feature_loss, DiscriminatorFeatureLoss)
        adam = lambda groups: torch.optim.Adam(groups, betas=tr.betas)
        if self.prior_mode:
            self.opt_g = adam([{"params": list(self.net_g.parameters()), "lr": tr.lr.generator, "name": "generator"}])
        elif isinstance(self.net_g, CodecPriorNet):
            groups = self.net_g.param_groups()
            self.opt_g = adam([{"params": groups[k], "lr": getattr(tr.lr, k), "name": k} for k in ("codec", "generator", "noise")])
        else:  # SFMNet: one network, the codec's learning rate
            self.opt_g = adam([{"params": list(self.net_g.parameters()), "lr": tr.lr.codec, "name": "sfmnet"}])
        self.opt_d = adam([{"params": [p for p in self.net_d.parameters() if p.requires_grad], "lr": tr.lr.global_d, "name": "global_d"}])
        self.opt_local = None
        if self.local_d is not None:
            self.opt_local = adam([{"params": list(self.local_d.parameters()), "lr": tr.lr.local_d, "name": "local_d"}])
        self.optimizers = [o for o in (self.opt_g, self.opt_d, self.opt_local) if o is not None]
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]
        self.iter = 0

    # ---------------------------------------------------------------- setup

    def _build_losses(self):
        w = self.opts.train.losses
        self.feature_loss = self.identity_loss = self.ffl = self.gfl = None
        if self.prior_mode:
            return
        fm = w.feature_matching
        if fm.weight > 0 and fm.type == "vgg19":
            try:
                self.feature_loss = VGGFeatureLoss(load_state_dict_file(resolve(fm.weights))).to(self.device)
            except WeightsError as err:
                raise OptionsError(f"train.losses.feature_matching needs VGG19 weights: {err}. Provide them, or choose "
                                   "`type: discriminator_features` (a different, offline loss) or `weight: 0`") from None
        elif fm.weight > 0 and fm.type == "discriminator_features":
            self.feature_loss = DiscriminatorFeatureLoss()
        ident = w.identity
        if ident.weight > 0 and ident.type == "arcface":
            try:
                self.identity_loss = IdentityLoss(build_arcface(load_state_dict_file(resolve(ident.weights)))).to(self.device)
            except WeightsError as err:
                raise OptionsError(f"train.losses.identity needs ArcFace weights: {err}. Provide them or set `type: none`") from None
        elif ident.weight > 0 and ident.type == "dlib":
            from ..archs.dlib_resnet import DlibFaceDescriptor
            from ..dlib_dat import load_dlib_resnet

            try:
                self.identity_loss = DlibIdentityLoss(DlibFaceDescriptor(load_dlib_resnet())).to(self.device)
            except WeightsError as err:
                raise OptionsError(f"train.losses.identity (dlib) needs dlib's face ResNet: {err}") from None
        if w.ffl.weight > 0:
            self.ffl = FocalFrequencyLoss(w.ffl.alpha, w.ffl.patch_factor, w.ffl.log_matrix, w.ffl.batch_matrix)
        if w.gfl.weight > 0:
            self.gfl = GuidedFrequencyLoss.from_opts(w.gfl, self.opts.train.total_iter)

    def describe_losses(self) -> list[str]:
        w = self.opts.train.losses
        if self.prior_mode:
            return ["gan (softplus)", f"r1 {self.opts.train.r1_weight}"]
        second = f"multiscale_l1 {w.multiscale_l1}" if isinstance(self.net_g, CodecPriorNet) else f"amplitude_phase {w.amplitude_phase}"
        names = [f"l1 {w.l1}", second, f"gan_global {w.gan_global}", f"gan_local {w.gan_local}"]
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

    # ---------------------------------------------------------------- step

    def _set_lr(self):
        tr = self.opts.train
        factor = tr.gamma ** sum(self.iter >= m for m in tr.milestones)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor

    def _reduce_grads(self, *modules):
        if self.world == 1:
            return
        for m in modules:
            for p in m.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def component_crops(self, images: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        from torchvision.ops import roi_align

        size = images.shape[-1]
        idx = torch.arange(images.shape[0], device=images.device, dtype=images.dtype)[:, None]
        crops = {}
        for c, name in enumerate(COMPONENTS):
            out = max(16, round((120 if name == "mouth" else 80) * size / 512))
            rois = torch.cat([idx, boxes[:, c].to(images)], dim=1)
            crops[name] = roi_align(images.float(), rois, output_size=out, aligned=True)
        return crops

    def step(self, batch: dict) -> dict[str, float]:
        self._set_lr()
        gt = batch["gt"].to(self.device, non_blocking=True, memory_format=self.memory_format)
        logs = self._step_prior(gt) if self.prior_mode else self._step_restoration(batch, gt)
        self._update_ema()
        self.iter += 1
        return logs

    def _g_losses(self, lq, gt, boxes) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        w = self.opts.train.losses
        out, aux = self.net_g(lq, return_aux=True)
        out = out.float()  # losses in fp32 whatever the network ran in
        terms = {"l_l1": w.l1 * F.l1_loss(out, gt)}
        if "rgbs" in aux:
            terms["l_ms"] = w.multiscale_l1 * multiscale_l1(aux["rgbs"], gt)
        if "frequency_output" in aux:  # SFMNet: pixel L1 on the frequency branch, plus amplitude/phase L1
            fre = aux["frequency_output"]
            (amp, pha), (amp_gt, pha_gt) = amplitude_phase(fre.float()), amplitude_phase(gt)
            terms["l_l1_fre"] = w.l1 * F.l1_loss(fre, gt)
            terms["l_amp_pha"] = w.amplitude_phase * (F.l1_loss(amp, amp_gt) + F.l1_loss(pha, pha_gt))
        if w.gan_global > 0:
            terms["l_gan"] = w.gan_global * g_nonsaturating(self.net_d(out))
        if self.local_d is not None:
            fake = self.component_crops(out, boxes)
            terms["l_local"] = w.gan_local * sum(g_nonsaturating(self.local_d[c](fake[c])) for c in COMPONENTS)
        if isinstance(self.feature_loss, VGGFeatureLoss):
            terms["l_vgg"] = w.feature_matching.weight * self.feature_loss(out, gt)
        elif self.feature_loss is not None:
            terms["l_dfeat"] = w.feature_matching.weight * self.feature_loss(self.net_d, out, gt)
        if self.identity_loss is not None:
            terms["l_id"] = w.identity.weight * self.identity_loss(out, gt)
        if self.ffl is not None:
            terms["l_ffl"] = w.ffl.weight * self.ffl(out.float(), gt)
        if self.gfl is not None:
            terms["l_gfl"] = w.gfl.weight * self.gfl(out.float(), gt)
        return sum(terms.values()), terms, out

    def _step_restoration(self, batch, gt) -> dict[str, float]:
        tr = self.opts.train
        lq = batch["lq"].to(self.device, non_blocking=True, memory_format=self.memory_format)
        boxes = batch.get("boxes")
        # generator
        set_trainable(self.net_d, False)
        if self.local_d is not None:
            set_trainable(self.local_d, False)
        with self._autocast():
            total, terms, out = self._g_losses(lq, gt, boxes)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self._reduce_grads(self.net_g)
        self.opt_g.step()
        if self.gfl is not None:
            self.gfl.advance(self.iter, float(terms["l_gfl"].detach()) / max(tr.losses.gfl.weight, 1e-12))
        logs = {k: float(v.detach()) for k, v in terms.items()}
        fake = out.detach().float()
        if self.uses_global_d:
            self._step_global_d(gt, fake, logs)
        # local discriminators
        if self.local_d is not None:
            set_trainable(self.local_d, True)
            real, fake_c = self.component_crops(gt, boxes), self.component_crops(fake, boxes)
            l_local = sum(d_logistic(self.local_d[c](real[c]), self.local_d[c](fake_c[c])) for c in COMPONENTS)
            self.opt_local.zero_grad(set_to_none=True)
            l_local.backward()
            self._reduce_grads(self.local_d)
            self.opt_local.step()
            logs["l_d_local"] = float(l_local.detach())
        return logs

    def _step_global_d(self, gt, fake, logs):
        set_trainable(self.net_d, True, self.frozen_ids)  # FreezeD layers stay frozen
        with self._autocast():
            l_d = d_logistic(self.net_d(gt), self.net_d(fake))
        logs["l_d"] = float(l_d.detach())
        l_d = l_d + self._r1(self.net_d, gt, logs)
        self.opt_d.zero_grad(set_to_none=True)
        l_d.backward()
        self._reduce_grads(self.net_d)
        self.opt_d.step()

    def _r1(self, disc, real, logs) -> torch.Tensor:
        tr = self.opts.train
        if tr.r1_weight <= 0 or self.iter % tr.d_reg_every:
            return real.new_zeros(())
        real = real.detach().requires_grad_(True)
        penalty = r1_penalty(disc(real), real)
        logs["r1"] = float(penalty.detach())
        return tr.r1_weight / 2 * penalty * tr.d_reg_every

    def _step_prior(self, gt) -> dict[str, float]:
        b, style_dim = gt.shape[0], self.opts.network_g.style_dim
        set_trainable(self.net_d, False)
        with self._autocast():
            fake, _ = self.net_g(torch.randn(b, style_dim, device=self.device))
            l_g = g_nonsaturating(self.net_d(fake))
        self.opt_g.zero_grad(set_to_none=True)
        l_g.backward()
        self._reduce_grads(self.net_g)
        self.opt_g.step()
        set_trainable(self.net_d, True)
        with self._autocast():
            l_d = d_logistic(self.net_d(gt), self.net_d(fake.detach().float()))
        logs = {"l_gan": float(l_g.detach()), "l_d": float(l_d.detach())}
        l_d = l_d + self._r1(self.net_d, gt, logs)
        self.opt_d.zero_grad(set_to_none=True)
        l_d.backward()
        self._reduce_grads(self.net_d)
        self.opt_d.step()
        return logs

    @torch.no_grad()
    def _update_ema(self):
        decay = self.opts.train.ema_decay
        for p_ema, p in zip(self.net_g_ema.parameters(), self.net_g.parameters()):
            p_ema.lerp_(p.detach(), 1 - decay)
        for b_ema, b in zip(self.net_g_ema.buffers(), self.net_g.buffers()):
            b_ema.copy_(b)

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        state = {"iter": self.iter, "net_g": self.net_g.state_dict(), "net_g_ema": self.net_g_ema.state_dict(),
                 "net_d": self.net_d.state_dict(), "optim": [o.state_dict() for o in self.optimizers],
                 "rng_cpu": torch.get_rng_state()}
        if self.local_d is not None:
            state["local_d"] = self.local_d.state_dict()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.gfl is not None:
            state["gfl"] = self.gfl.state_dict()
        return state

    def load_state_dict(self, state: dict):
        self.iter = int(state["iter"])
        self.net_g.load_state_dict(state["net_g"])
        self.net_g_ema.load_state_dict(state["net_g_ema"])
        self.net_d.load_state_dict(state["net_d"])
        if self.local_d is not None:
            self.local_d.load_state_dict(state["local_d"])
        for opt, sd in zip(self.optimizers, state["optim"]):
            opt.load_state_dict(sd)
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        if self.gfl is not None and "gfl" in state:
            self.gfl.load_state_dict(state["gfl"])

    def init_from_release(self, path: str) -> None:
        """G and EMA from a released model of this same architecture, continuing at its iteration."""
        file = resolve(path)
        meta = read_metadata(file)
        if meta.get("arch") != self.g_arch or "iter" not in meta:
            raise OptionsError(f"path.init_state {file}: architecture {meta.get('arch')} (iter {meta.get('iter')}) "
                               f"is not this run's {self.g_arch}")
        sd = {k: v.float() for k, v in load_state_dict_file(file).items()}
        self.net_g.load_state_dict(sd)
        self.net_g_ema.load_state_dict(sd)
        self.iter = int(meta["iter"])
        self.log(f"G and EMA initialised from {file} at iteration {self.iter} (optimisers and discriminators fresh)")

    def save(self, root: Path) -> Path:
        ckpt = root / "checkpoints" / f"iter_{self.iter:08d}.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".part")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, ckpt)
        if self.prior_mode:
            save_model(self.net_g_ema, root / "models" / f"prior_g_{self.iter:08d}.safetensors", {"arch": "stylegan2_g", **self._gkw()})
            save_model(self.net_d, root / "models" / f"prior_d_{self.iter:08d}.safetensors", {"arch": "stylegan2_d"})
        else:
            save_model(self.net_g_ema, root / "models" / f"net_g_ema_{self.iter:08d}.safetensors", self.g_arch,
                       extra={"iter": self.iter, "name": self.opts.name})
        return ckpt

    def _gkw(self):
        return {k: v for k, v in self.g_arch.items() if k not in ("arch", "enc_blocks")}


def load_latest_checkpoint(root: Path, device, warn) -> tuple[Path | None, dict | None]:
    """The newest checkpoint that loads; a truncated or corrupt one (full disk, interrupted copy) is skipped with a warning."""
    for ckpt in sorted((root / "checkpoints").glob("iter_*.pt"), reverse=True):
        try:
            return ckpt, torch.load(ckpt, map_location=device, weights_only=True)
        except Exception as err:  # truncated zip, not a checkpoint at all
            warn(f"warning: {ckpt} cannot be loaded ({err.__class__.__name__}); falling back to the previous checkpoint")
    return None, None


# -------------------------------------------------------------------- validation


@torch.no_grad()
def validate(trainer: Trainer, dataset: FaceDataset, max_images: int, out_dir: Path | None = None) -> dict[str, float]:
    net = trainer.net_g_ema
    rows, scores = [], {"psnr": [], "ssim": [], "psnr_lq": [], "ssim_lq": []}
    for i in range(min(max_images, len(dataset))):
        item = dataset[(i, i)]  # fixed degradation per validation image
        lq = item["lq"][None].to(trainer.device)
        if trainer.prior_mode:  # unconditional samples: only the grid is meaningful
            out = net(torch.randn(1, trainer.opts.network_g.style_dim, device=trainer.device))[0].clamp(-1, 1)
        else:
            out = net(lq).clamp(-1, 1)
        to_np = lambda t: ((t.float().cpu()[0] if t.ndim == 4 else t).permute(1, 2, 0).numpy() + 1) / 2
        o, g, q = to_np(out), to_np(item["gt"]), to_np(item["lq"])
        scores["psnr"].append(psnr(o, g))
        scores["ssim"].append(ssim(o, g))
        scores["psnr_lq"].append(psnr(q, g))
        scores["ssim_lq"].append(ssim(q, g))
        if len(rows) < 4:
            rows.append(np.concatenate([q, o, g], axis=1))
    if out_dir is not None and rows:
        import cv2

        out_dir.mkdir(parents=True, exist_ok=True)
        grid = (np.clip(np.concatenate(rows, 0), 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]
        cv2.imwrite(str(out_dir / f"val_{trainer.iter:08d}.png"), grid)
    return {k: float(np.mean(v)) for k, v in scores.items()}


# -------------------------------------------------------------------- loop


def init_distributed(device: str) -> tuple[torch.device, int, int]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return pick_device(device), 0, 1
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return torch.device(f"cuda:{local}" if use_cuda else "cpu"), rank, world


class Logger:
    def __init__(self, root: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.jsonl = root / "train_log.jsonl" if enabled else None
        self.tb = None
        if enabled:
            root.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(root / "tb"))
                except ImportError:
                    print("faceres: tensorboard not installed; logging to console and train_log.jsonl only")

    def __call__(self, message: str):
        if self.enabled:
            print(message, flush=True)

    def scalars(self, it: int, values: dict, prefix: str = "train"):
        if not self.enabled:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"iter": it, "kind": prefix, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}/{k}", v, it)


def train(opts: Options, device: str = "auto", max_iters: int | None = None) -> Trainer:
    """Run (or resume) training. `max_iters` stops early (for tests/benchmarks) without changing
    the schedule, which always follows train.total_iter."""
    dev, rank, world = init_distributed(device)
    root = opts.experiment_dir
    logger = Logger(root, rank == 0, opts.logger.tensorboard)
    trainer = Trainer(opts, dev, rank, world, log=logger)
    resume, state = opts.path.resume, None
    if resume == "auto":
        resume, state = load_latest_checkpoint(root, dev, logger)
    elif resume:
        try:
            state = torch.load(resume, map_location=dev, weights_only=True)
        except Exception as err:
            raise OptionsError(f"path.resume {resume}: not a loadable checkpoint ({err.__class__.__name__})") from None
    if state is not None:
        trainer.load_state_dict(state)
        logger(f"resumed from {resume} at iteration {trainer.iter}")
    elif opts.path.init_state:
        trainer.init_from_release(opts.path.init_state)
    logger(f"{opts.name}: {opts.train.mode} on {dev} x{world}, losses: {', '.join(trainer.describe_losses())}")
    ds = FaceDataset(opts.datasets.train)
    val_ds = FaceDataset(opts.datasets.val) if opts.datasets.val and rank == 0 else None
    end = opts.train.total_iter if max_iters is None else min(opts.train.total_iter, trainer.iter + max_iters)
    sampler = IterationSampler(len(ds), opts.train.batch_size, opts.seed, end, trainer.iter, rank, world)
    loader = DataLoader(ds, batch_size=opts.train.batch_size, sampler=sampler, num_workers=opts.datasets.train.num_workers,
                        pin_memory=dev.type == "cuda", persistent_workers=opts.datasets.train.num_workers > 0)
    t0, done = time.perf_counter(), 0
    for batch in loader:
        logs = trainer.step(batch)
        done += 1
        if not all(math.isfinite(v) for v in logs.values()):
            raise FloatingPointError(f"iteration {trainer.iter}: non-finite loss {logs}")
        if trainer.iter % opts.logger.print_every == 0 or trainer.iter == end:
            rate = done / (time.perf_counter() - t0)
            logger(f"iter {trainer.iter:7d}  {rate:.2f} it/s  " + "  ".join(f"{k} {v:.4f}" for k, v in logs.items()))
            logger.scalars(trainer.iter, logs)
        if val_ds is not None and (trainer.iter % opts.val.every == 0 or trainer.iter == end):
            scores = validate(trainer, val_ds, opts.val.max_images, root / "visualization")
            logger(f"val iter {trainer.iter}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
            logger.scalars(trainer.iter, scores, "val")
        if rank == 0 and (trainer.iter % opts.logger.save_every == 0 or trainer.iter == end):
            logger(f"saved {trainer.save(root)}")
    if world > 1:
        dist.barrier()
    return trainer
