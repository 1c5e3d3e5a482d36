"""Side-by-side examples for the README, from real photos in ../shared/data: input (bicubic x2) |
restored at `-s 2`, the whole photo and below it a close-up of the largest face.

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
PICKS = ("real-lq/whole/Blake_Lively.jpg", "real-lq/whole/example.jpg", "real-lq/whole/06.png", "old-photos/Solvay_conference_1927.png")


def side_by_side(a: np.ndarray, b: np.ndarray, width: int) -> np.ndarray:
    b = cv2.resize(b, a.shape[1::-1], interpolation=cv2.INTER_AREA)
    pair = np.concatenate([a, b], axis=1)
    scale = min(1.0, width / pair.shape[1])
    return cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def face_closeup(before: np.ndarray, after: np.ndarray, box: np.ndarray, width: int) -> np.ndarray:
    """The face's square region (box enlarged by half) of both images, side by side, `width` wide."""
    cx, cy, half = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 0.75 * max(box[2] - box[0], box[3] - box[1])
    y0, y1 = int(max(cy - half, 0)), int(min(cy + half, after.shape[0]))
    x0, x1 = int(max(cx - half, 0)), int(min(cx + half, after.shape[1]))
    side = width // 2
    crops = [cv2.resize(im[y0:y1, x0:x1], (side, side * (y1 - y0) // (x1 - x0)), interpolation=cv2.INTER_AREA) for im in (before, after)]
    return np.concatenate(crops, axis=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_RESTORER)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/examples")
    ap.add_argument("--width", type=int, default=900)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    restorer = FaceRestorer(args.model, device="cpu")
    for path in (SHARED / "data" / name for name in PICKS):
        photo = load_photo(path)
        result = restorer.restore(photo, upscale=2)
        bicubic = cv2.resize(photo.rgb, result.image.shape[1::-1], interpolation=cv2.INTER_CUBIC)
        largest = max(result.faces, key=lambda f: f.box[2] - f.box[0])
        whole = side_by_side(bicubic, result.image, args.width)
        whole = whole[:, : whole.shape[1] // 2 * 2]  # even, as wide as the close-up
        pair = np.concatenate([whole, face_closeup(bicubic, result.image, largest.box * 2, whole.shape[1])], axis=0)
        target = args.out / f"{path.stem}.jpg"  # JPEG at quality 95: 40 % of the PNG's size in git
        cv2.imwrite(str(target), (np.clip(pair, 0, 1)[..., ::-1] * 255 + 0.5).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
        print(f"{target}: {len(result.faces)} faces")


if __name__ == "__main__":
    main()
