"""Side-by-side examples (input | restored) for the README, from real photos in ../shared/data.

FACERES_WEIGHTS_DIR=../shared/weights python bench/examples.py [--model faceres-v0]   # default: the default model
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from faceres.pipeline import FaceRestorer
from faceres.pipeline.images import load_photo
from faceres.weights import DEFAULT_RESTORER

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACERES_SHARED", ROOT.parent / "shared"))


def side_by_side(a: np.ndarray, b: np.ndarray, width: int) -> np.ndarray:
    b = cv2.resize(b, a.shape[1::-1], interpolation=cv2.INTER_AREA)
    pair = np.concatenate([a, b], axis=1)
    scale = min(1.0, width / pair.shape[1])
    return cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_RESTORER)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/examples")
    ap.add_argument("--width", type=int, default=900)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    restorer = FaceRestorer(args.model, device="cpu")
    picks = sorted((SHARED / "data/real-lq/whole").iterdir())[:2] + sorted((SHARED / "data/old-photos").iterdir())[:2]
    for path in picks:
        photo = load_photo(path)
        result = restorer.restore(photo, upscale=1)
        pair = side_by_side(photo.rgb, result.image, args.width)
        target = args.out / f"{path.stem}.png"
        cv2.imwrite(str(target), (np.clip(pair, 0, 1)[..., ::-1] * 255 + 0.5).astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{target}: {len(result.faces)} faces")


if __name__ == "__main__":
    main()
