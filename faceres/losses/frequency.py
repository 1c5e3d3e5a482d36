"""Frequency-domain losses: Focal Frequency Loss (Jiang et al., ICCV 2021; seed 004) and
Guided Frequency Loss (Benjdira et al.; seed 000, eqs. 6-11 and Algorithm 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalFrequencyLoss(nn.Module):
    """mean(w * |F_pred - F_gt|²) with w = |F_pred - F_gt|^α normalised to [0, 1] and no gradient.

    patch_factor p splits each image into p x p patches with their own spectrum; batch_matrix
    normalises w by its maximum over the whole batch instead of per image."""

    def __init__(self, alpha: float = 1.0, patch_factor: int = 1, log_matrix: bool = False, batch_matrix: bool = False):
        super().__init__()
        self.alpha, self.patch_factor, self.log_matrix, self.batch_matrix = alpha, patch_factor, log_matrix, batch_matrix

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, P, C, H/p, W/p) complex, orthonormal 2D DFT per patch."""
        p = self.patch_factor
        b, c, h, w = x.shape
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by patch_factor {p}")
        x = x.view(b, c, p, h // p, p, w // p).permute(0, 2, 4, 1, 3, 5).reshape(b, p * p, c, h // p, w // p)
        return torch.fft.fft2(x, norm="ortho")

    def weights(self, distance: torch.Tensor) -> torch.Tensor:
        w = distance.sqrt() ** self.alpha
        if self.log_matrix:
            w = torch.log1p(w)
        peak = w.amax() if self.batch_matrix else w.amax(dim=(-2, -1), keepdim=True)
        w = torch.nan_to_num(w / peak.clamp_min(1e-12), nan=0.0).clamp(0, 1)
        return w.detach()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = self.spectrum(pred) - self.spectrum(target)
        distance = diff.real.square() + diff.imag.square()
        return (self.weights(distance) * distance).mean()


def laplacian_pyramid_1(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth-1 Laplacian pyramid: h0 = x - up(down(blur(x))), h1 = down(blur(x))."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype)
    k = (k[:, None] * k[None, :]) / 256
    c = x.shape[1]
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k.expand(c, 1, 5, 5), groups=c)
    low = blurred[..., ::2, ::2]
    up = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x - up, low


def radial_frequency(h: int, w: int, device=None) -> torch.Tensor:
    """Normalised radial frequency of each DFT bin: 0 at DC, 1 at the horizontal/vertical Nyquist."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.fftfreq(w, device=device)[None, :]
    return torch.sqrt(fx**2 + fy**2) / 0.5


def high_pass(x: torch.Tensor, omega: float) -> torch.Tensor:
    """Keep frequencies with normalised radius > omega."""
    mask = (radial_frequency(*x.shape[-2:], device=x.device) > omega).to(x.dtype)
    return torch.fft.ifft2(torch.fft.fft2(x) * mask).real


class BandSchedule:
    """Algorithm 1: the high-pass threshold starts at ω0 (only the highest frequencies) and moves
    by (ω0 - ωF)/S per stage to ωF; near ωF it snaps to ωF and stays. Static mode advances every
    N/S iterations; dynamic mode when the GFL value falls below the current stage's threshold."""

    def __init__(
        self, omega0: float, omega_final: float, stages: int, total: int, mode: str = "static", thresholds: tuple[float, ...] = ()
    ):
        if mode not in ("static", "dynamic"):
            raise ValueError(f"mode must be static or dynamic, got {mode!r}")
        if mode == "dynamic" and not thresholds:
            raise ValueError("dynamic band allocation needs loss thresholds L_t")
        self.omega0, self.omega_final, self.stages, self.total = omega0, omega_final, max(1, stages), total
        self.mode, self.thresholds = mode, tuple(thresholds)
        self.omega, self.stage, self.fixed = omega0, 0, False

    @property
    def step_size(self) -> float:
        return (self.omega0 - self.omega_final) / self.stages

    def _next_stage(self):
        self.omega -= self.step_size
        self.stage += 1
        if abs(self.omega - self.omega_final) < abs(self.step_size) * (1 - 1e-9) or self.stage >= self.stages:
            self.omega, self.fixed = self.omega_final, True

    def advance(self, iteration: int, loss_value: float | None = None) -> bool:
        """Call after iteration `iteration` (0-based). Returns True when the band changed."""
        if self.fixed:
            return False
        if self.mode == "static":
            period = max(1, self.total // self.stages)
            due = (iteration + 1) % period == 0
        else:
            threshold = self.thresholds[min(self.stage, len(self.thresholds) - 1)]
            due = loss_value is not None and loss_value < threshold
        if due:
            self._next_stage()
        return due

    def state_dict(self) -> dict:
        return {"omega": self.omega, "stage": self.stage, "fixed": self.fixed}

    def load_state_dict(self, state: dict):
        self.omega, self.stage, self.fixed = float(state["omega"]), int(state["stage"]), bool(state["fixed"])


class GuidedFrequencyLoss(nn.Module):
    """GFL = sqrt(Ch + Π + Θ): Charbonnier (mean squared error + ε²), depth-1 Laplacian pyramid
    (MSE of both levels) and the gradual high-pass term (MSE of high-passed images)."""

    def __init__(self, schedule: BandSchedule, eps: float = 1e-3):
        super().__init__()
        self.schedule, self.eps = schedule, eps

    @classmethod
    def from_opts(cls, o, total_iter: int) -> GuidedFrequencyLoss:
        return cls(BandSchedule(o.omega0, o.omega_final, o.stages, total_iter, o.mode, o.thresholds))

    def components(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        ch = (pred - target).square().mean() + self.eps**2
        (h0p, h1p), (h0t, h1t) = laplacian_pyramid_1(pred), laplacian_pyramid_1(target)
        pi = (h0p - h0t).square().mean() + (h1p - h1t).square().mean()
        theta = (high_pass(pred, self.schedule.omega) - high_pass(target, self.schedule.omega)).square().mean()
        return {"charbonnier": ch, "laplacian": pi, "frequency": theta}

    def forward(self, pred, target):
        return torch.sqrt(sum(self.components(pred, target).values()))

    def advance(self, iteration: int, loss_value: float | None = None) -> bool:
        return self.schedule.advance(iteration, loss_value)

    def state_dict(self, *args, **kwargs):
        return {"schedule": self.schedule.state_dict()}

    def load_state_dict(self, state, strict: bool = True):
        self.schedule.load_state_dict(state["schedule"])


__all__ = ["BandSchedule", "FocalFrequencyLoss", "GuidedFrequencyLoss", "high_pass", "laplacian_pyramid_1"]
