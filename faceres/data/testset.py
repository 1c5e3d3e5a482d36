"""Deterministic LQ/HQ test sets built with the training degradation (CelebA-Test style)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .dataset import list_faces, load_face
from .degradations import DEGRADATION_PRESETS, DegradationOpts, degrade, prepare_gt, sample_params

SIZES = (16, 4096)  # a 4096^2 pair is already about 400 MB of float32 work per image


def make_testset(
    hq_dir: Path,
    out_dir: Path,
    seed: int = 0,
    degradation: str | DegradationOpts = "paper",
    size: int = 512,
    subset=(None, None),
    center_crop: bool = False,
) -> Path:
    """Writes out_dir/hq/*.png, out_dir/lq/*.png and manifest.json (parameters drawn per image).
    The same (seed, file index) always gives the same LQ image."""
    if not SIZES[0] <= size <= SIZES[1]:
        raise ValueError(f"size must be from {SIZES[0]} to {SIZES[1]} pixels, got {size}")
    opts = DEGRADATION_PRESETS[degradation] if isinstance(degradation, str) else degradation
    opts.validate()
    files = list_faces(hq_dir, subset)  # before any folder is created
    out_dir = Path(out_dir)
    (out_dir / "hq").mkdir(parents=True, exist_ok=True)
    (out_dir / "lq").mkdir(parents=True, exist_ok=True)
    manifest = {
        "seed": seed,
        "degradation": degradation if isinstance(degradation, str) else "custom",
        "size": size,
        "source": str(hq_dir),
        "images": {},
    }
    for i, path in enumerate(files):
        img, _, _ = load_face(path, size, center_crop)
        gt = img.astype(np.float32) / 255.0
        params = sample_params(np.random.default_rng([seed, i]), opts)
        gt = prepare_gt(gt, params)
        lq = degrade(gt, params, opts.blur_kernel_size, opts.reference_size)
        name = path.stem + ".png"
        for folder, image in (("hq", gt), ("lq", lq)):
            cv2.imwrite(str(out_dir / folder / name), (np.clip(image, 0, 1)[..., ::-1] * 255 + 0.5).astype(np.uint8))
        manifest["images"][name] = params
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out_dir
