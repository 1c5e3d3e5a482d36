"""What every training model shares: a generator with its EMA copy and a global StyleGAN2
discriminator, Adam per parameter group on one milestone schedule, gradient all-reduce across
processes, one discriminator update, and the checkpoint state."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..archs import StyleGAN2Discriminator, build_network
from ..archs.stylegan2 import channel_table
from ..checkpoints import init_generator_from, load_state_dict_file, read_metadata
from ..devices import to_channels_last, use_bf16
from ..files import atomic_path
from ..losses import d_logistic, r1_penalty
from ..weights import WeightsError, resolve
from .options import Options, OptionsError


def set_trainable(module: nn.Module, flag: bool, keep_frozen: set[int] = frozenset()):
    for p in module.parameters():
        if id(p) not in keep_frozen:
            p.requires_grad_(flag)


def load_disc(net_d: nn.Module, path: str, log) -> None:
    sd = load_state_dict_file(resolve(path))
    try:
        net_d.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{path}: does not fit network_d ({str(err).splitlines()[1].strip()})") from None
    log(f"global D initialised from {path} ({len(sd)} tensors)")


def _silent(*args, **kwargs):
    pass


class TrainingModel:
    """Subclasses build the generator, name its parameter groups, build their losses and implement
    `train_step`; the order of construction below fixes the initial weights for a given seed."""

    prior_note = ""  # appended to the prior-loading line: what else is new besides generator tensors

    def __init__(self, opts: Options, device: torch.device, rank: int = 0, world: int = 1, log=print):
        self.opts, self.device, self.rank, self.world = opts, device, rank, world
        self.log = log if rank == 0 else _silent
        self.use_bf16 = use_bf16(opts.train.precision, device)
        self.memory_format = torch.channels_last if opts.train.channels_last else torch.contiguous_format
        self.g_arch = opts.network_g.arch_config()
        torch.manual_seed(opts.seed)  # identical initial weights on every rank
        g, d, tr = opts.network_g, opts.network_d, opts.train
        self.net_g = self.build_generator()
        self.net_d = StyleGAN2Discriminator(
            g.size, d.channel_multiplier, d.narrow, luma=d.luma, detail=d.detail_inputs, condition=int(d.condition)
        )
        if opts.path.prior_g:
            self.load_prior(opts.path.prior_g)
        if opts.path.prior_d:
            load_disc(self.net_d, opts.path.prior_d, self.log)
        self.freeze_discriminator()
        self.frozen_ids = {id(p) for p in self.net_d.parameters() if not p.requires_grad}
        self.local_d = self.build_local_d()
        self.net_g_ema = copy.deepcopy(self.net_g).eval().requires_grad_(False)
        for m in (self.net_g, self.net_d, self.net_g_ema, self.local_d):
            if m is not None:
                m.to(device)
                if tr.channels_last:
                    to_channels_last(m)
        self.build_losses()
        adam = lambda groups: torch.optim.Adam(groups, betas=tr.betas)
        self.opt_g = adam(self.generator_groups())
        self.opt_d = adam([{"params": [p for p in self.net_d.parameters() if p.requires_grad], "lr": tr.lr.global_d, "name": "global_d"}])
        self.opt_local = None
        if self.local_d is not None:
            self.opt_local = adam([{"params": list(self.local_d.parameters()), "lr": tr.lr.local_d, "name": "local_d"}])
        # this order is the checkpoint's "optim" list
        self.optimizers = [o for o in (self.opt_g, self.opt_d, self.opt_local) if o is not None]
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]
        self.iter = 0
        self.stage_start = 0  # where this run's G started: 0, or path.init_state's iteration
        self.grown: dict[str, torch.Tensor] = {}  # net_g parameters grown from a smaller release: mask of the added elements
        self.grown_from: dict | None = None  # that release's architecture (exports carry it, so the masks survive a release)

    # ---------------------------------------------------------------- what a family defines

    def build_generator(self) -> nn.Module:
        raise NotImplementedError

    def generator_groups(self) -> list[dict]:
        """Adam parameter groups of net_g: {"params", "lr", "name"}."""
        raise NotImplementedError

    def train_step(self, batch: dict, gt: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """G and D updates for one batch; returns the logged scalars."""
        raise NotImplementedError

    def describe_losses(self) -> list[str]:
        raise NotImplementedError

    def export(self, models_dir: Path) -> None:
        """Write the release files of this iteration (safetensors with their architecture)."""
        raise NotImplementedError

    def freeze_discriminator(self) -> None:
        """Set requires_grad False on global-D tensors that must never train (FreezeD)."""

    def build_local_d(self) -> nn.Module | None:
        return None

    def build_losses(self) -> None:
        pass

    @torch.no_grad()
    def validation_output(self, lq: torch.Tensor) -> torch.Tensor:
        """What validation scores and shows for one LQ face (1, 3, S, S)."""
        return self.net_g_ema(lq)

    # ---------------------------------------------------------------- shared machinery

    def load_prior(self, path: str) -> None:
        report = init_generator_from(self.net_g, load_state_dict_file(resolve(path)))
        self.log(
            f"prior {path}: loaded {len(report['loaded'])} generator tensors, {len(report['new'])} generator tensors are new"
            f"{self.prior_note}; {len(report['skipped'])} file tensors unused"
        )

    def autocast(self, enabled: bool = True):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16 and enabled)

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def step(self, batch: dict) -> dict[str, float]:
        self._set_lr()
        logs = self.train_step(batch, self.to_device(batch["gt"]))
        self._update_ema()
        self.iter += 1
        return logs

    def _set_lr(self):
        tr = self.opts.train
        factor = tr.gamma ** sum(self.iter >= m for m in tr.milestones)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor

    def reduce_grads(self, module: nn.Module):
        """Average gradients over processes (plain DDP without the wrapper: every rank steps alike)."""
        if self.world == 1:
            return
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def update(self, module: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.reduce_grads(module)
        mult = self.opts.train.grown_lr_mult
        params = dict(self.net_g.named_parameters()) if opt is self.opt_g and mult != 1 else {}
        before = {k: params[k].detach().clone() for k in self.grown if k in params}
        opt.step()
        with torch.no_grad():  # Adam's step scales with the rate, so scaling the added elements' step is their own rate
            for k, old in before.items():
                params[k].copy_(torch.where(self.grown[k], old + (params[k] - old) * mult, params[k]))

    def discriminator_step(
        self, disc: nn.Module, opt, real, fake, logs: dict, key: str, r1: bool = False, autocast: bool = True, negatives=None
    ):
        """One logistic-loss update of `disc` (a D, or a ModuleDict of Ds fed dicts of crops); lazy
        R1 on `real` when asked; `negatives` (images, not crops) count as fakes too, with weight
        `train.d_input_as_fake`. Tensors in `frozen_ids` (FreezeD) stay frozen."""
        set_trainable(disc, True, self.frozen_ids)
        with self.autocast(autocast):
            if isinstance(disc, nn.ModuleDict):
                l_d = sum(d_logistic(disc[k](real[k]), disc[k](fake[k])) for k in disc)
            else:
                l_d = d_logistic(disc(real), disc(fake))
            logs[key] = float(l_d.detach())
            if negatives is not None and len(negatives):
                l_neg = F.softplus(disc(negatives).float()).mean()
                logs[key + "_neg"] = float(l_neg.detach())
                l_d = l_d + self.opts.train.d_input_as_fake * l_neg
        if r1:
            l_d = l_d + self._r1(disc, real, logs)
        self.update(disc, opt, l_d)

    def _r1(self, disc, real, logs) -> torch.Tensor:
        tr = self.opts.train
        if tr.r1_weight <= 0 or self.iter % tr.d_reg_every:
            return real.new_zeros(())
        real = real.detach().requires_grad_(True)
        penalty = r1_penalty(disc(real), real)
        logs["r1"] = float(penalty.detach())
        return tr.r1_weight / 2 * penalty * tr.d_reg_every

    @torch.no_grad()
    def _update_ema(self):
        decay = self.opts.train.ema_decay
        for p_ema, p in zip(self.net_g_ema.parameters(), self.net_g.parameters()):
            p_ema.lerp_(p.detach(), 1 - decay)
        for b_ema, b in zip(self.net_g_ema.buffers(), self.net_g.buffers()):
            b_ema.copy_(b)

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        state = {
            "iter": self.iter,
            "stage_start": self.stage_start,
            "net_g": self.net_g.state_dict(),
            "net_g_ema": self.net_g_ema.state_dict(),
            "net_d": self.net_d.state_dict(),
            "optim": [o.state_dict() for o in self.optimizers],
            "rng_cpu": torch.get_rng_state(),
            "grown_from": self.grown_from,  # the added elements' masks are rebuilt from it
        }
        if self.local_d is not None:
            state["local_d"] = self.local_d.state_dict()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict):
        self.iter = int(state["iter"])
        self.stage_start = int(state.get("stage_start", 0))
        self.grown_from = state.get("grown_from")  # checkpoints before the tenth session also hold the masks: rebuilt alike
        self.grown = self._grown_masks(self.g_arch, self.grown_from)
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

    def _grown_masks(self, arch: dict, grown_from: dict | None) -> dict[str, torch.Tensor]:
        """Masks of the elements `arch` added to `grown_from`: they depend on the two architectures only,
        so a throwaway copy is grown to find them."""
        if not grown_from:
            return {}
        return {k: m.to(self.device) for k, m in build_network(**arch).load_smaller(build_network(**grown_from)).items()}

    def init_from_release(self, path: str) -> None:
        """G and EMA from a released model of this same architecture, continuing at its iteration.
        Of an interpolated release (`faceres export --perceptual`), the pixel-loss network: the
        adversarial stage is re-run from it, so the two stay close enough to blend."""
        file = resolve(path)
        meta = read_metadata(file)
        arch, prefix = meta.get("arch"), ""
        if isinstance(arch, dict) and arch.get("arch") == "interpolated":
            arch, prefix = arch["base"], "fidelity_end."
        grow = isinstance(arch, dict) and grows_from(arch, self.g_arch)
        if (arch != self.g_arch and not grow) or "iter" not in meta:
            raise OptionsError(f"path.init_state {file}: architecture {arch} (iter {meta.get('iter')}) is not this run's {self.g_arch}")
        sd = {k.removeprefix(prefix): v.float() for k, v in load_state_dict_file(file).items() if k.startswith(prefix)}
        if grow:
            smaller = build_network(**arch).to(self.device)
            smaller.load_state_dict(sd)
            self.net_g.load_smaller(smaller)
            self.net_g_ema.load_state_dict(self.net_g.state_dict())
        else:
            for net in (self.net_g, self.net_g_ema):
                net.load_state_dict(sd)
        # the elements added since the first architecture keep their own rate, whichever growth added them
        self.grown_from = meta.get("grown_from") or (arch if grow else None)
        self.grown = self._grown_masks(self.g_arch, self.grown_from)
        self.iter = self.stage_start = int(meta["iter"])
        self.log(f"G and EMA initialised from {file} at iteration {self.iter} (optimisers and discriminators fresh)")
        if self.grown:
            added = sum(int(m.sum()) for m in self.grown.values())
            how = "with the same function" if grow else "earlier"
            self.log(f"grown from {_growth(self.grown_from)} to {_growth(self.g_arch)} {how}: {added:,} parameters added")

    def save(self, root: Path) -> Path:
        """root/checkpoints/iter_N.pt (written atomically), then the family's exports in root/models."""
        ckpt = root / "checkpoints" / f"iter_{self.iter:08d}.pt"
        with atomic_path(ckpt) as tmp:
            torch.save(self.state_dict(), tmp)
        self.export(root / "models")
        return ckpt


def _growth(arch: dict) -> dict:
    return {k: arch.get(k, default) for k, default in (("enc_blocks", 1), ("min_channels", 0), ("channels_at", {}))}


def _widths(arch: dict) -> dict[int, int]:
    return channel_table(arch["size"], arch["channel_multiplier"], arch["narrow"], arch.get("min_channels", 0), arch.get("channels_at"))


def grows_from(old: dict, new: dict) -> bool:
    """The same codec_prior network but with more MMRBs per scale and/or more channels at some
    resolutions: it can grow from the old weights (CodecPriorNet.load_smaller)."""
    a, b = _growth(old), _growth(new)
    same = {k: v for k, v in old.items() if k not in a} == {k: v for k, v in new.items() if k not in b}
    if not (same and new.get("arch") == "codec_prior" and a != b):
        return False
    return b["enc_blocks"] >= a["enc_blocks"] and all(_widths(new)[r] >= c for r, c in _widths(old).items())
