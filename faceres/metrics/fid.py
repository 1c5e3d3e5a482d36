"""FID (Heusel et al. 2017) with the `pytorch-fid` package's InceptionV3 and its standard weights
file, pt_inception-2015-12-05-6726825d.pth (TensorFlow's FID Inception, ported): pool3 features
(2048-d) of images resized to 299x299 (bilinear) inside the network, then the Fréchet distance
between the two Gaussians (pytorch-fid's formula). Statistics are stored as .npz with mu, sigma
(pytorch-fid's keys) and n; BasicSR/GFPGAN statistics (.pth with mean and cov, e.g. GFPGAN's
inception_FFHQ_512.pth) are read too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

DIMS = 2048


class FIDError(RuntimeError):
    """pytorch-fid, the Inception file or a statistics file is unusable; the message is meant for the user."""


@dataclass
class FIDStats:
    mu: np.ndarray  # (2048,)
    sigma: np.ndarray  # (2048, 2048)
    n: int | None  # images behind the statistics (None: not recorded in the file)


def _pytorch_fid_inception():
    try:
        from pytorch_fid import inception
    except ImportError:
        raise FIDError("FID needs the pytorch-fid package: pip install 'faceres[metrics]'") from None
    return inception


def load_inception(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (pool3 block) with the weights of `path`, loaded strictly."""
    inception = _pytorch_fid_inception()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, not a checkpoint
        raise FIDError(f"{path}: not a loadable Inception checkpoint ({err.__class__.__name__})") from None
    if not isinstance(state, dict):
        raise FIDError(f"{path}: does not contain a state_dict")
    # pytorch-fid fetches its weights inside the constructor: hand it this file instead; its own
    # load_state_dict (strict) then checks every key and shape.
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *args, **kwargs: state):
        try:
            model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[DIMS]])
        except RuntimeError as err:
            raise FIDError(f"{path}: not pytorch-fid's Inception file ({str(err).splitlines()[0]})") from None
    return model.eval().to(device)


class InceptionFeatures:
    """pool3 features of float RGB images in [0, 1] (H, W, 3); images of one size are batched."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 16):
        self.device = torch.device(device)
        self.model = load_inception(path, self.device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        feats, batch = [], []

        def flush():
            x = torch.from_numpy(np.stack(batch).astype(np.float32)).permute(0, 3, 1, 2).to(self.device)
            feats.append(self.model(x)[0].flatten(1).double().cpu().numpy())  # (B, 2048, 1, 1) -> (B, 2048)
            batch.clear()

        for img in images:
            if batch and (len(batch) == self.batch_size or batch[0].shape != img.shape):
                flush()
            batch.append(img)
        if batch:
            flush()
        return np.concatenate(feats) if feats else np.zeros((0, DIMS))


def statistics(features: np.ndarray) -> FIDStats:
    if len(features) < 2:
        raise FIDError(f"FID needs at least 2 images, got {len(features)}")
    return FIDStats(features.mean(axis=0), np.cov(features, rowvar=False), len(features))


def _psd_eigenvalues(w: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a covariance with round-off below the rank tolerance set to 0 (sqrt would magnify it)."""
    tol = w.abs().max() * w.numel() * torch.finfo(w.dtype).eps
    return torch.where(w > tol, w, torch.zeros_like(w))


def frechet_distance(a: FIDStats, b: FIDStats) -> float:
    """|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a S_b): pytorch-fid's formula, with the trace of the
    matrix square root taken as the sum of sqrt(eigenvalues) of R S_b R, R = S_a^1/2 (the same spectrum as
    S_a S_b for covariances). Two symmetric eigendecompositions (float64, torch's threads) are several times
    faster than scipy's sqrtm on 2048x2048 and need no epsilon for the singular covariances of small sets."""
    if a.mu.shape != b.mu.shape:
        raise FIDError(f"FID statistics of different dimension: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    sa, sb = torch.from_numpy(a.sigma).double(), torch.from_numpy(b.sigma).double()
    w, v = torch.linalg.eigh(sa)
    root_a = (v * _psd_eigenvalues(w).sqrt()) @ v.T
    trace_sqrt = _psd_eigenvalues(torch.linalg.eigvalsh(root_a @ sb @ root_a)).sqrt().sum().item()
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt)


def small_sample_note(n: int | None, label: str) -> str | None:
    """A warning when n images are too few for a 2048x2048 covariance (rank < 2048: FID biased high)."""
    if n is not None and n < DIMS:
        return (
            f"FID {label}: {n} images (< {DIMS}, the feature dimension): the covariance is rank-deficient and FID is "
            f"biased upwards; compare only with FIDs computed from the same number of images"
        )
    return None


def save_stats(path: str | Path, stats: FIDStats) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        raise FIDError(f"{path}: FID statistics are written as .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n or 0))
    return path


def _load_basicsr(path: Path) -> dict:
    """BasicSR's `torch.save(dict(mean=..., cov=...))` of numpy arrays, read without running pickled code."""
    rebuild = np._core.multiarray._reconstruct
    allowed = [rebuild, (rebuild, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype]
    allowed += [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType") if hasattr(np.dtypes, n)]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_stats(path: str | Path) -> FIDStats:
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as data:
                mu, sigma = data["mu"], data["sigma"]
                n = int(data["n"]) if "n" in data.files and int(data["n"]) > 0 else None
        elif path.suffix in (".pth", ".pt"):
            data = _load_basicsr(path)
            mu, sigma, n = np.asarray(data["mean"]), np.asarray(data["cov"]), None
        else:
            raise FIDError(f"{path}: FID statistics must be .npz (mu, sigma) or BasicSR's .pth (mean, cov)")
    except FIDError:
        raise
    except Exception as err:  # missing keys, truncated file, pickle with code
        raise FIDError(f"{path}: not a FID statistics file ({err.__class__.__name__}: {err})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise FIDError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
    return FIDStats(mu.astype(np.float64), sigma.astype(np.float64), n)
