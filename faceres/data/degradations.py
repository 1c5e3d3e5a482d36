"""Synthetic degradation of seed 001, eq. (17): x = [(y * k)↓s + n_δ]_JPEG_q, then back to size.

Blur sigma and motion length are in pixels of a `reference_size` (512) face and scale with
the actual size, so a 128² model sees the same blur relative to the face; the downsampling
factor, noise and JPEG quality apply as drawn.

Parameters are drawn first (`sample_params`) and applied second (`degrade`), so a test set can
store exactly what was drawn per image and training stays reproducible from a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np


@dataclass
class DegradationOpts:
    blur_kernel_size: int = 41
    blur_sigma: tuple[float, float] = (0.1, 10.0)  # Gaussian (iso/aniso)
    motion_prob: float = 0.3  # share of motion-blur kernels
    motion_length: tuple[float, float] = (3.0, 25.0)  # pixels at 512² (scaled with size)
    scale: tuple[float, float] = (0.4, 8.0)  # downsampling factor s
    noise: tuple[float, float] = (0.0, 25.0)  # Gaussian σ, 0-255 units
    jpeg: tuple[float, float] = (5.0, 50.0)  # JPEG quality
    gray_prob: float = 0.0  # grey LQ and GT (so B&W photos stay B&W)
    color_jitter_prob: float = 0.0
    color_jitter_shift: float = 20.0  # 0-255 units, per channel
    # "lq": only the LQ is shifted, so the model learns to undo colour casts (GFPGAN's choice, but it then
    # recolours photos whose cast is real); "pair": GT and LQ alike, a colour augmentation the model keeps
    color_jitter_on: str = "lq"
    reference_size: int = 512  # blur sizes are given at this face size and scaled to the actual one
    blur_prob: float = 1.0
    jpeg_prob: float = 1.0
    resize: str = "linear"  # linear | bicubic (face SR benchmarks use plain bicubic downsampling)
    # share of pairs drawn from the "mild" ranges instead (near-clean inputs, so the model learns to keep
    # what is already sharp); 0 draws nothing extra from the RNG, so existing test sets stay identical
    mild_prob: float = 0.0
    # share of pairs left untouched (LQ = GT but for jitter and grey), so an already sharp face is not
    # sharpened further; 0 draws nothing extra from the RNG
    clean_prob: float = 0.0

    def validate(self):
        for name in ("blur_sigma", "motion_length", "scale", "noise", "jpeg"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"degradation.{name}: range [{lo}, {hi}] is empty")
        if self.blur_kernel_size % 2 == 0:
            raise ValueError(f"degradation.blur_kernel_size must be odd, got {self.blur_kernel_size}")
        if not 1 <= self.jpeg[0] <= self.jpeg[1] <= 100:
            raise ValueError(f"degradation.jpeg must lie in [1, 100], got {self.jpeg}")
        for name in ("mild_prob", "clean_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"degradation.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.color_jitter_on not in ("lq", "pair"):
            raise ValueError(f"degradation.color_jitter_on must be lq or pair, got {self.color_jitter_on!r}")
        if self.resize not in ("linear", "bicubic"):
            raise ValueError(f"degradation.resize must be linear or bicubic, got {self.resize!r}")


DEGRADATION_PRESETS = {
    "paper": DegradationOpts(),
    # face super-resolution benchmarks (SFMNet): plain bicubic downsampling, then bicubic back up
    "x4": DegradationOpts(blur_prob=0.0, scale=(4.0, 4.0), noise=(0.0, 0.0), jpeg_prob=0.0, resize="bicubic"),
    "x8": DegradationOpts(blur_prob=0.0, scale=(8.0, 8.0), noise=(0.0, 0.0), jpeg_prob=0.0, resize="bicubic"),
    # good scans and phone photos: at most slightly soft, small, noisy or compressed (sometimes untouched)
    "mild": DegradationOpts(
        blur_prob=0.5, blur_sigma=(0.1, 1.5), motion_prob=0.0, scale=(1.0, 2.0), noise=(0.0, 5.0), jpeg=(60.0, 95.0), jpeg_prob=0.5
    ),
}


def sample_params(rng: np.random.Generator, opts: DegradationOpts) -> dict:
    if opts.clean_prob > 0 and rng.random() < opts.clean_prob:
        opts = replace(opts, blur_prob=0.0, scale=(1.0, 1.0), noise=(0.0, 0.0), jpeg_prob=0.0, mild_prob=0.0)
    elif opts.mild_prob > 0 and rng.random() < opts.mild_prob:
        mild = DEGRADATION_PRESETS["mild"]
        keep = ("gray_prob", "color_jitter_prob", "color_jitter_shift", "color_jitter_on", "resize")
        opts = replace(mild, **{k: getattr(opts, k) for k in keep})
    u = lambda r: float(rng.uniform(*r))
    if rng.random() >= opts.blur_prob:
        blur = {"type": "none"}
    elif rng.random() < opts.motion_prob:
        blur = {"type": "motion", "length": u(opts.motion_length), "angle": u((0.0, 180.0))}
    else:
        blur = {"type": "gaussian", "sigma_x": u(opts.blur_sigma), "sigma_y": u(opts.blur_sigma), "theta": u((0.0, math.pi))}
    jpeg = int(round(u(opts.jpeg))) if rng.random() < opts.jpeg_prob else None
    params = {
        "blur": blur,
        "scale": u(opts.scale),
        "noise": u(opts.noise),
        "jpeg": jpeg,
        "noise_seed": int(rng.integers(2**31)),
        "gray": bool(rng.random() < opts.gray_prob),
        "resize": opts.resize,
    }
    if rng.random() < opts.color_jitter_prob:
        shift = [u((-opts.color_jitter_shift, opts.color_jitter_shift)) for _ in range(3)]
        params["color_shift" if opts.color_jitter_on == "lq" else "pair_color_shift"] = shift
    return params


def prepare_gt(gt: np.ndarray, params: dict) -> np.ndarray:
    """What the pair's GT becomes before it is degraded: colour-shifted (pair jitter), then grey."""
    if "pair_color_shift" in params:
        gt = np.clip(gt + np.array(params["pair_color_shift"], np.float32) / 255.0, 0, 1)
    return to_gray3(gt) if params["gray"] else gt


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Anisotropic Gaussian (isotropic when sigma_x == sigma_y), rotated by theta."""
    r = np.arange(size) - size // 2
    xx, yy = np.meshgrid(r, r)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).astype(np.float32)


def motion_kernel(size: int, length: float, angle_deg: float) -> np.ndarray:
    """A line of `length` pixels through the centre at `angle_deg`, anti-aliased by drawing at 4x."""
    big = np.zeros((size * 4, size * 4), np.float32)
    c = size * 2
    dx, dy = math.cos(math.radians(angle_deg)) * length * 2, math.sin(math.radians(angle_deg)) * length * 2
    cv2.line(big, (int(c - dx), int(c - dy)), (int(c + dx), int(c + dy)), 1.0, thickness=4)
    k = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return k / max(k.sum(), 1e-8)


def blur_kernel(params: dict, size: int, rel: float) -> np.ndarray:
    """`rel`: actual face size / reference size."""
    b = params["blur"]
    if b["type"] == "motion":
        return motion_kernel(size, max(1.0, b["length"] * rel), b["angle"])
    return gaussian_kernel(size, max(0.1, b["sigma_x"] * rel), max(0.1, b["sigma_y"] * rel), b["theta"])


def to_gray3(img: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def resize_antialiased_bicubic(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """MATLAB-like bicubic downsampling (kernel widened by the factor), per channel through PIL."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(img[..., c]).resize(size, Image.BICUBIC)) for c in range(img.shape[2])], axis=2)


def degrade(gt: np.ndarray, params: dict, kernel_size: int = 41, reference_size: int = 512) -> np.ndarray:
    """gt: float32 RGB [0, 1] (H, W, 3). Returns the LQ image at the same size, float32 [0, 1]."""
    h, w = gt.shape[:2]
    x = gt
    if params["blur"]["type"] != "none":
        x = cv2.filter2D(gt, -1, blur_kernel(params, kernel_size, w / reference_size), borderType=cv2.BORDER_REFLECT)
    s = params["scale"]
    bicubic = params.get("resize") == "bicubic"
    small = (max(1, round(w / s)), max(1, round(h / s)))
    x = resize_antialiased_bicubic(x, small) if bicubic else cv2.resize(x, small, interpolation=cv2.INTER_LINEAR)
    if params["noise"] > 0:
        rng = np.random.default_rng(params["noise_seed"])
        x = x + rng.normal(0, params["noise"] / 255.0, x.shape).astype(np.float32)
    x = np.clip(x, 0, 1)
    if params["jpeg"] is not None:
        ok, buf = cv2.imencode(".jpg", (x[..., ::-1] * 255 + 0.5).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, params["jpeg"]])
        x = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    x = cv2.resize(x, (w, h), interpolation=cv2.INTER_CUBIC if bicubic else cv2.INTER_LINEAR)
    if "color_shift" in params:
        x = x + np.array(params["color_shift"], np.float32) / 255.0
    if params.get("gray"):
        x = to_gray3(x)
    return np.clip(x, 0, 1).astype(np.float32)
