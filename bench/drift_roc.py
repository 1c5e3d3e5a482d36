"""Calibrate the identity-drift threshold: ROC of dlib-descriptor cosine similarity between a
degraded face and a clean photo of the same person (genuine) or of another person (impostor),
on CelebA aligned faces (1,600 identities x 5). Prints AUC and the operating point (max TPR - FPR)
for each way of getting the descriptor:

    chip        dlib's detector + 5 landmarks + get_face_chip on the face at 256 (INTER_AREA, as
                `face_u8` prepares it for the guard), then dlib's ResNet: the numbers of dlib's C++
    template    the fixed FFHQ-template chip (`DlibFaceDescriptor`, batched, differentiable)

and each crop of the same photos:

    celeba      CelebA's own alignment, central square (as the shipped model was trained)
    ffhq        RetinaFace landmarks -> faceres's FFHQ template (what `faceres restore` feeds the guard)

    python bench/drift_roc.py [--identities 200] [--tpr 0.95]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from faceres.data.dataset import load_face
from faceres.data.degradations import degrade, sample_params
from faceres.train.options import load_options

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACERES_SHARED", ROOT.parent / "shared"))
SIZE = 128  # the shipped model's face size


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a genuine pair scores above an impostor pair (ties count half)."""
    g, i = genuine[:, None], impostor[None, :]
    return float((g > i).mean() + 0.5 * (g == i).mean())


def roc_summary(genuine: np.ndarray, impostor: np.ndarray, tpr: float) -> dict:
    candidates = np.unique(np.concatenate([genuine, impostor]))
    youden = [(genuine >= t).mean() - (impostor >= t).mean() for t in candidates]
    threshold = float(candidates[int(np.argmax(youden))])  # operating point: max TPR - FPR
    at_tpr = float(np.quantile(genuine, 1 - tpr))
    return {
        "auc": round(roc_auc(genuine, impostor), 4),
        "threshold": round(threshold, 4),
        "tpr": round(float((genuine >= threshold).mean()), 3),
        "fpr": round(float((impostor >= threshold).mean()), 3),
        f"threshold_at_tpr_{tpr}": round(at_tpr, 4),
        f"fpr_at_tpr_{tpr}": round(float((impostor >= at_tpr).mean()), 3),
        "genuine_mean": round(float(genuine.mean()), 4),
        "impostor_mean": round(float(impostor.mean()), 4),
    }


def ffhq_crop(path: Path, detector, size: int = SIZE) -> np.ndarray | None:
    from faceres.pipeline.align import estimate_affine, warp_face

    bgr = cv2.imread(str(path))
    faces = detector.detect(bgr)
    if not faces:
        return None
    face = max(faces, key=lambda f: f.score)
    return warp_face(bgr[..., ::-1], estimate_affine(face.landmarks, size), size)


def crops(paths: list[Path], align: str, detector, size: int = SIZE) -> list[np.ndarray]:
    """uint8 RGB size x size faces; an FFHQ crop falls back to the CelebA crop when no face is found."""
    out = []
    for p in paths:
        face = ffhq_crop(p, detector, size) if align == "ffhq" else None
        out.append(face if face is not None else load_face(p, size, center_crop=True)[0])
    return out


def embed(faces: list[np.ndarray], how: str, models) -> np.ndarray:
    """faces: float RGB in [0, 1], as the guard gets them."""
    from faceres.metrics.identity import face_u8

    if how == "chip":
        return models["chip"].embeddings([face_u8(f) for f in faces])
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() * 2 - 1
    with torch.inference_mode():
        return models["template"](x).double().numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--identities", type=int, default=200)
    ap.add_argument("--tpr", type=float, default=0.95, help="share of genuine faces that must pass")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/drift_roc.json")
    args = ap.parse_args()
    os.environ.setdefault("FACERES_WEIGHTS_DIR", str(SHARED / "weights"))
    from faceres.metrics.identity import DlibFaces
    from faceres.pipeline.detect import build_detector
    from faceres.pipeline.reference import default_recognizer

    deg = load_options(ROOT / "options/train_faceres_128_cpu.yml").datasets.val.degradation
    by_id: dict[str, list[Path]] = {}
    for f in sorted((SHARED / "data/celeba-aligned/images").iterdir()):
        by_id.setdefault(f.name.split("_")[0], []).append(f)
    ids = sorted(by_id)[: args.identities]
    models = {"chip": DlibFaces(), "template": default_recognizer()}
    detector = build_detector("retinaface_mobile0.25")
    result = {"identities": len(ids), "degradation": "options/train_faceres_128_cpu.yml datasets.val", "size": SIZE}
    for align in ("celeba", "ffhq"):
        first = [f.astype(np.float32) / 255 for f in crops([by_id[i][0] for i in ids], align, detector)]
        second = [f.astype(np.float32) / 255 for f in crops([by_id[i][1] for i in ids], align, detector)]
        degraded = [
            np.clip(degrade(a, sample_params(np.random.default_rng([7, n]), deg), deg.blur_kernel_size), 0, 1) for n, a in enumerate(first)
        ]
        for how in ("chip", "template"):
            d, c = embed(degraded, how, models), embed(second, how, models)
            genuine = cosines(d, c)
            impostor = cosines(d, np.roll(c, -1, axis=0))  # degraded face k vs clean photo of identity k+1
            result[f"{how}/{align}"] = roc_summary(genuine, impostor, args.tpr)
            print(how, align, json.dumps(result[f"{how}/{align}"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
