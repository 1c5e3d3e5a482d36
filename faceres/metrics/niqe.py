"""NIQE (Mittal et al. 2012) with a pristine model in BasicSR's `niqe_pris_params.npz` format
(mu_pris_param 1x36, cov_pris_param 36x36, gaussian_window 7x7).

Computed on the Y channel (BT.601, 16-235) of the RGB image, 96x96 blocks, two scales; the
half scale uses MATLAB-style antialiased bicubic, as the reference implementation does.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma

from .fullref import rgb_to_y

_GAM = np.arange(0.2, 10.001, 0.001)
_R_GAM = gamma(2 / _GAM) ** 2 / (gamma(1 / _GAM) * gamma(3 / _GAM))


@lru_cache(maxsize=4)
def load_pristine(path: str) -> dict[str, np.ndarray]:
    data = np.load(path)
    return {k: data[k] for k in ("mu_pris_param", "cov_pris_param", "gaussian_window")}


def aggd_params(x: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit: (alpha, beta_left, beta_right)."""
    x = x.ravel()
    left, right = np.sqrt(np.mean(x[x < 0] ** 2)), np.sqrt(np.mean(x[x > 0] ** 2))
    g = left / right
    r = np.mean(np.abs(x)) ** 2 / np.mean(x**2)
    r_norm = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = _GAM[np.argmin((_R_GAM - r_norm) ** 2)]
    k = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * k, right * k


def block_features(block: np.ndarray) -> list[float]:
    alpha, bl, br = aggd_params(block)
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = aggd_params(block * np.roll(block, shift, axis=(0, 1)))
        mean = (br - bl) * gamma(2 / alpha) / gamma(1 / alpha)
        feats += [alpha, mean, bl, br]
    return feats


def _cubic(x):
    ax = np.abs(x)
    return np.where(ax <= 1, 1.5 * ax**3 - 2.5 * ax**2 + 1, np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0.0))


def imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB imresize(img, 0.5, 'bicubic') with antialiasing: the cubic kernel stretched x2,
    8 taps per output pixel, symmetric borders."""
    offsets = np.arange(-3, 5)
    w = _cubic((0.5 - offsets) / 2) / 2
    w /= w.sum()

    def along(a, axis):
        n = a.shape[axis]
        a = np.pad(a, [(3, 4) if ax == axis else (0, 0) for ax in range(a.ndim)], mode="symmetric")
        out_n = (n + 1) // 2
        idx = 2 * np.arange(out_n)[:, None] + offsets[None, :] + 3
        taken = np.take(a, idx, axis=axis)  # (..., out_n, 8, ...)
        return np.tensordot(taken, w, axes=([axis + 1], [0]))

    return along(along(img, 0), 1)


def niqe_y(y: np.ndarray, params: dict[str, np.ndarray], block: int = 96) -> float:
    """NIQE of a luma image in 0-255. Needs two 96x96 blocks: one block has no covariance."""
    h, w = y.shape
    nh, nw = h // block, w // block
    if nh * nw < 2:
        raise ValueError(f"NIQE needs at least two {block}x{block} blocks ({2 * block}x{block} pixels), got {w}x{h}")
    img = y[: nh * block, : nw * block].astype(np.float64)
    window = params["gaussian_window"]
    feats = []
    for scale in (1, 2):
        mu = convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(img**2, window, mode="nearest") - mu**2))
        norm = (img - mu) / (sigma + 1)
        bs = block // scale
        feats.append(np.array([block_features(norm[i * bs : (i + 1) * bs, j * bs : (j + 1) * bs]) for j in range(nw) for i in range(nh)]))
        if scale == 1:
            img = imresize_half(img / 255.0) * 255.0
    dist = np.concatenate(feats, axis=1)
    mu_d = np.nanmean(dist, axis=0)
    cov_d = np.cov(dist[~np.isnan(dist).any(axis=1)], rowvar=False)
    diff = params["mu_pris_param"][0] - mu_d
    inv = np.linalg.pinv((params["cov_pris_param"] + cov_d) / 2)
    return float(np.sqrt(diff @ inv @ diff))


def niqe(rgb: np.ndarray, params_path: str | Path) -> float:
    """NIQE of a float RGB image in [0, 1]; lower is better."""
    y = np.round(rgb_to_y(np.asarray(rgb, np.float64)))  # rounded like the MATLAB reference
    return niqe_y(y, load_pristine(str(params_path)))
