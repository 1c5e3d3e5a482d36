"""Reference-guided restoration (SAIR, seed 002) and the identity-drift guard.

SAIR optimises a W+ latent of the generator's StyleGAN2 prior so that the generated face,
degraded, matches the input, while its identity matches a reference photo of the same person:

    min_w  L_d + (1 - <T(ref), T(G(w))> + λ||w - w_ref||²) + α1 L_e + α2 L_hist

L_d = mean squared error between D(G(w)) and D(Y) with a differentiable D = Gaussian blur then
bilinear downsampling (noise is left to the expectation, JPEG is left out). The noise branches
of the generator get the input's own decoder features, fixed during the optimisation. L_e (the
expression term) runs only when direction vectors are supplied. L_hist compares per-channel CDFs
of soft histograms over the central face region. Start: w = w_ref, the reference's latent
from our encoder.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..archs.dlib_resnet import DlibFaceDescriptor
from ..dlib_dat import load_dlib_resnet
from ..losses.identity import face_region_112
from ..metrics.identity import cosine


@dataclass
class SAIRConfig:
    steps: int = 400
    lr: float = 0.1
    lam: float = 0.001  # λ: pull toward w_ref
    alpha1: float = 0.1  # expression term (only with directions)
    alpha2: float = 0.05  # skin-colour histogram term
    blur_sigma: float = 1.0  # of D, in pixels of the model's face size
    scale: int = 4  # downsampling factor of D
    bins: int = 32


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def degrade_diff(x: torch.Tensor, cfg: SAIRConfig) -> torch.Tensor:
    x = gaussian_blur(x, cfg.blur_sigma)
    return F.interpolate(x, scale_factor=1 / cfg.scale, mode="bilinear", align_corners=False, antialias=True)


def face_mask(size: int, device=None) -> torch.Tensor:
    """Central ellipse of an FFHQ-aligned face (cheeks, nose, forehead): where skin colour lives."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size, device=device), torch.linspace(-1, 1, size, device=device), indexing="ij")
    return (((xx / 0.45) ** 2 + ((yy - 0.1) / 0.55) ** 2) < 1).float()


def soft_cdf(x: torch.Tensor, mask: torch.Tensor, bins: int) -> torch.Tensor:
    """Differentiable per-channel CDF of values in [0, 1] under `mask` (triangular soft binning)."""
    centers = torch.linspace(0, 1, bins, device=x.device)
    width = 1 / (bins - 1)
    values = x.flatten(2)  # (B, C, N)
    weights = mask.flatten()[None, None, :, None]
    member = (1 - (values[..., None] - centers).abs() / width).clamp_min(0) * weights  # (B, C, N, bins)
    hist = member.sum(2)
    hist = hist / hist.sum(-1, keepdim=True).clamp_min(1e-8)
    return hist.cumsum(-1)


def histogram_loss(a: torch.Tensor, b: torch.Tensor, bins: int) -> torch.Tensor:
    """a, b in [-1, 1]: L1 between the CDFs of their face-region colour histograms."""
    mask = face_mask(a.shape[-1], a.device)
    return (soft_cdf((a + 1) / 2, mask, bins) - soft_cdf((b + 1) / 2, mask, bins)).abs().mean()


def expression_loss(w: torch.Tensor, direction: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    moved = (w + gamma * direction).flatten(1)
    return (1 - F.cosine_similarity(moved, direction.flatten(1).expand_as(moved))).mean()


def default_recognizer() -> DlibFaceDescriptor:
    """dlib's face ResNet on FFHQ-aligned faces: the recogniser that works offline."""
    return DlibFaceDescriptor(load_dlib_resnet())


class Embedder(nn.Module):
    """Recognizer T on aligned faces in [-1, 1], L2-normalised output. A `DlibFaceDescriptor` cuts
    its own chip; any other recognizer (ArcFace) gets the inner-face crop at 112."""

    def __init__(self, recognizer: nn.Module):
        super().__init__()
        self.recognizer = recognizer.eval().requires_grad_(False)
        self.crop = nn.Identity() if isinstance(recognizer, DlibFaceDescriptor) else face_region_112

    def forward(self, x):
        return F.normalize(self.recognizer(self.crop(x)).flatten(1).float(), dim=1)


class SAIR:
    """Needs a network whose spec says `stylegan2_prior` (the `StyleGAN2PriorNet` methods). The latent
    is optimised in float32 whatever the network's dtype (a bf16 network gets it cast)."""

    def __init__(self, net: nn.Module, recognizer: nn.Module, cfg: SAIRConfig | None = None):
        if not net.spec.stylegan2_prior:
            raise ValueError(f"reference-guided restoration needs a StyleGAN2-prior model, not {type(net).__name__}")
        self.net, self.cfg = net.eval(), cfg or SAIRConfig()
        self.dtype = next(net.parameters()).dtype
        self.embed = Embedder(recognizer)

    def _code_and_noise(self, face: torch.Tensor):
        return self.net.prior_inputs(face.to(self.dtype))

    @torch.no_grad()
    def latent(self, face: torch.Tensor) -> torch.Tensor:
        """W+ (B, n_latent, style_dim) of a face: encoder code -> mapping MLP, repeated."""
        code, _ = self._code_and_noise(face)
        return self.net.prior_latent(code).float()

    def synthesize(self, w: torch.Tensor, noise, face: torch.Tensor) -> torch.Tensor:
        return self.net.synthesize(w.to(self.dtype), noise, face.to(self.dtype)).float()

    def restore(self, lq: torch.Tensor, reference: torch.Tensor, directions: torch.Tensor | None = None):
        """lq, reference: (1, 3, S, S) aligned faces in [-1, 1]. Returns (image, history)."""
        cfg = self.cfg
        with torch.no_grad():
            _, noise = self._code_and_noise(lq)
            noise = [n.detach() for n in noise]
            target = degrade_diff(lq, cfg)
            ref_id = self.embed(reference)
        w_ref = self.latent(reference)
        w = w_ref.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=cfg.lr)
        history = {k: [] for k in ("degradation", "identity", "histogram", "total", "distance_to_ref")}
        t0 = time.perf_counter()
        for _ in range(cfg.steps):
            img = self.synthesize(w, noise, lq)
            l_d = F.mse_loss(degrade_diff(img, cfg), target)
            l_id = 1 - (self.embed(img) * ref_id).sum(1).mean() + cfg.lam * (w - w_ref).pow(2).sum()
            l_hist = histogram_loss(img, lq, cfg.bins)
            total = l_d + l_id + cfg.alpha2 * l_hist
            if directions is not None:
                total = total + cfg.alpha1 * expression_loss(w, directions)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            for k, v in (("degradation", l_d), ("identity", l_id), ("histogram", l_hist), ("total", total)):
                history[k].append(float(v.detach()))
            history["distance_to_ref"].append(float((w.detach() - w_ref).norm()))
        history["seconds"] = time.perf_counter() - t0
        with torch.no_grad():
            return self.synthesize(w, noise, lq).clamp(-1, 1), history


# ---------------------------------------------------------------------------- drift guard

# Calibrated by bench/drift_roc.py (see docs/identity_drift.md): dlib descriptors on the FFHQ-template
# chip, degraded input vs clean photo of the same / another person, aligned as `faceres restore` aligns.
DEFAULT_DRIFT_THRESHOLD = 0.881
FLAT_STD = 2 / 255  # a restored face less varied than this (std over all pixels) is blank


def is_flat(face: np.ndarray) -> bool:
    return not np.isfinite(face).all() or float(np.std(face)) < FLAT_STD


class IdentityGuard:
    """Flags restored faces whose identity embedding moved away from the input face's. Embedding:
    dlib's descriptor on the FFHQ-template chip (`DlibFaceDescriptor`), or `recognizer` (ArcFace)."""

    def __init__(self, threshold: float = DEFAULT_DRIFT_THRESHOLD, recognizer: nn.Module | None = None):
        self.threshold = threshold
        self.embedder = Embedder(default_recognizer() if recognizer is None else recognizer)
        self.name = "identity (dlib)" if isinstance(self.embedder.recognizer, DlibFaceDescriptor) else "identity (ArcFace)"

    def _embed(self, faces_rgb: list[np.ndarray]) -> np.ndarray:
        """float RGB [0, 1] aligned faces of one size -> (N, D) unit embeddings, one network call."""
        device = next(self.embedder.recognizer.parameters()).device
        t = torch.from_numpy(np.stack(faces_rgb).transpose(0, 3, 1, 2)).float().to(device) * 2 - 1
        with torch.no_grad():
            return self.embedder(t).double().cpu().numpy()

    def similarity(self, input_face: np.ndarray, restored_face: np.ndarray) -> float:
        if input_face.shape == restored_face.shape:
            return cosine(*self._embed([input_face, restored_face]))
        return cosine(self._embed([input_face])[0], self._embed([restored_face])[0])

    def check(self, input_face: np.ndarray, restored_face: np.ndarray, threshold: float | None = None) -> tuple[float, bool]:
        """(similarity, drifted); `threshold` None: the guard's own. A (near) constant restored face, e.g. black
        from NaN weights, is drifted whatever its embedding says: it has no face left to compare."""
        s = self.similarity(input_face, restored_face)
        return s, s < (self.threshold if threshold is None else threshold) or math.isnan(s) or is_flat(restored_face)
