"""Eye and mouth boxes for the local discriminators, from 68-point landmarks.

Names follow image sides: `left_eye` is the eye on the image's left (68-point indices 36-41).
Landmarks are computed once per dataset (`faceres prepare-landmarks DIR`) and stored as
`landmarks68.json` beside the images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import write_atomic

COMPONENTS = ("left_eye", "right_eye", "mouth")
LANDMARK_FILE = "landmarks68.json"
_INDEX = {"left_eye": slice(36, 42), "right_eye": slice(42, 48), "mouth": slice(48, 68)}


def components_from_68(pts: np.ndarray, eye_enlarge: float = 1.4, min_half: float = 16 / 512, size: int = 512) -> dict[str, list[float]]:
    """{name: [cx, cy, half_side]} in the landmarks' pixel units (GFPGAN's recipe: half side =
    max(extent/2, 16 px at 512), eyes enlarged 1.4x)."""
    pts = np.asarray(pts, np.float32)
    out = {}
    for name, idx in _INDEX.items():
        p = pts[idx]
        half = max(float((p.max(0) - p.min(0)).max()) / 2, min_half * size)
        if name != "mouth":
            half *= eye_enlarge
        cx, cy = p.mean(0)
        out[name] = [float(cx), float(cy), half]
    return out


def component_boxes(comp: dict[str, list[float]], width: int, flip: bool = False, scale: float = 1.0) -> np.ndarray:
    """(3, 4) x1, y1, x2, y2 boxes in COMPONENTS order. `flip` mirrors horizontally, which also
    swaps the eyes; `comp` is never modified."""
    boxes = []
    for name in COMPONENTS:
        src = {"left_eye": "right_eye", "right_eye": "left_eye"}.get(name, name) if flip else name
        cx, cy, half = comp[src]
        if flip:
            cx = width - 1 - cx
        boxes.append([cx - half, cy - half, cx + half, cy + half])
    return np.asarray(boxes, np.float32) * scale


def boxes_from_mask(mask: np.ndarray) -> dict[str, list[float]]:
    """Independent boxes from a CelebAMask-HQ label map (5 = eye on the image's left,
    4 = eye on the image's right, 10-12 = mouth and lips): [cx, cy, half_side]."""
    out = {}
    for name, labels in (("left_eye", (5,)), ("right_eye", (4,)), ("mouth", (10, 11, 12))):
        ys, xs = np.nonzero(np.isin(mask, labels))
        if len(xs) == 0:
            continue
        out[name] = [float(xs.mean()), float(ys.mean()), float(max(np.ptp(xs), np.ptp(ys)) / 2)]
    return out


def load_landmarks(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float32) for k, v in json.loads(path.read_text()).items()}


def detect_landmarks_68(rgb_uint8: np.ndarray, detector, predictor) -> np.ndarray:
    """dlib 68 points; aligned crops whose face the HOG detector misses use the central box."""
    import dlib

    rects = detector(rgb_uint8, 1)
    h, w = rgb_uint8.shape[:2]
    rect = max(rects, key=lambda r: r.area()) if rects else dlib.rectangle(int(w * 0.2), int(h * 0.25), int(w * 0.8), int(h * 0.9))
    return np.array([[p.x, p.y] for p in predictor(rgb_uint8, rect).parts()], np.float32)


def prepare_landmarks(folder: Path, out: Path | None = None, progress: bool = True, files: list[Path] | None = None) -> Path:
    """Compute 68 landmarks for every image in `folder` with dlib; write JSON (default: beside the images)."""
    import dlib
    from PIL import Image
    from tqdm import tqdm

    from ..weights import dlib_model_file

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_file("shape_predictor_68_face_landmarks.dat")))
    files = files or sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    result = {}
    for f in tqdm(files, disable=not progress, desc="landmarks"):
        rgb = np.asarray(Image.open(f).convert("RGB"))
        result[f.name] = detect_landmarks_68(rgb, detector, predictor).round(2).tolist()
    out = Path(out or Path(folder) / LANDMARK_FILE)
    write_atomic(out, json.dumps(result).encode())
    return out
