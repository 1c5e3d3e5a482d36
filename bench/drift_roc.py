"""Calibrate the identity-drift threshold: ROC of dlib-descriptor cosine similarity between a
degraded face and a clean photo of the same person (genuine) or of another person (impostor),
on CelebA aligned faces (1,600 identities x 5). Prints AUC and the operating point (max TPR - FPR).

    python bench/drift_roc.py [--identities 200] [--tpr 0.95]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np

from faceres.data.dataset import load_face
from faceres.data.degradations import degrade, sample_params
from faceres.metrics.identity import DlibFaces, cosine
from faceres.train.options import load_options

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACERES_SHARED", ROOT.parent / "shared"))


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a genuine pair scores above an impostor pair (ties count half)."""
    g, i = genuine[:, None], impostor[None, :]
    return float((g > i).mean() + 0.5 * (g == i).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--identities", type=int, default=200)
    ap.add_argument("--tpr", type=float, default=0.95, help="share of genuine faces that must pass")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/drift_roc.json")
    args = ap.parse_args()
    opts = load_options(ROOT / "options/train_faceres_128_cpu.yml")
    deg = opts.datasets.val.degradation
    files = sorted((SHARED / "data/celeba-aligned/images").iterdir())
    by_id: dict[str, list[Path]] = {}
    for f in files:
        by_id.setdefault(f.name.split("_")[0], []).append(f)
    ids = sorted(by_id)[: args.identities]
    faces = DlibFaces()

    def emb(img):
        return faces.embedding((cv2.resize(img, (256, 256), interpolation=cv2.INTER_CUBIC) * 255 + 0.5).astype(np.uint8))

    degraded, clean = [], []
    for n, i in enumerate(ids):
        a, _, _ = load_face(by_id[i][0], 128, center_crop=True)
        b, _, _ = load_face(by_id[i][1], 128, center_crop=True)
        lq = degrade(a.astype(np.float32) / 255, sample_params(np.random.default_rng([7, n]), deg), deg.blur_kernel_size)
        degraded.append(emb(lq))
        clean.append(emb(b.astype(np.float32) / 255))
    genuine = np.array([cosine(d, c) for d, c in zip(degraded, clean)])
    impostor = np.array([cosine(degraded[k], clean[(k + 1) % len(ids)]) for k in range(len(ids))])
    auc = roc_auc(genuine, impostor)
    candidates = np.unique(np.concatenate([genuine, impostor]))
    youden = [(genuine >= t).mean() - (impostor >= t).mean() for t in candidates]
    threshold = float(candidates[int(np.argmax(youden))])  # operating point: max TPR - FPR
    fpr = float((impostor >= threshold).mean())
    at_tpr = float(np.quantile(genuine, 1 - args.tpr))
    result = {"identities": len(ids), "auc": auc, "threshold": threshold, "tpr": float((genuine >= threshold).mean()),
              "fpr": fpr, f"threshold_at_tpr_{args.tpr}": at_tpr, f"fpr_at_tpr_{args.tpr}": float((impostor >= at_tpr).mean()),
              "genuine_mean": float(genuine.mean()), "impostor_mean": float(impostor.mean()),
              "degradation": "options/train_faceres_128_cpu.yml datasets.val", "embedding": "dlib 128-d (identity (dlib))"}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
