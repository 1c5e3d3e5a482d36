"""Where dlib's 5 landmarks sit on an FFHQ-aligned face: the constant behind `DlibFaceChip`.

Aligns CelebA-HQ faces to faceres's FFHQ template at 512 (RetinaFace MobileNet-0.25 landmarks, as
`faceres restore` does), runs dlib's HOG detector + 5-point predictor on each aligned face and
averages the points over the first --fit faces. Then, on the next --check faces, compares the
descriptor of the fixed-template chip (`DlibFaceChip`, differentiable) with the descriptor of
dlib's own chip from that face's landmarks (Euclidean distance; same person: < 0.6).

    python bench/dlib_chip_template.py [--fit 600] [--check 100]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACERES_SHARED", ROOT.parent / "shared"))


def aligned_faces(files, detector, size=512):
    from faceres.pipeline.align import estimate_affine, warp_face

    for f in files:
        bgr = cv2.imread(str(f))
        faces = detector.detect(bgr)
        if faces:
            face = max(faces, key=lambda x: x.score)
            yield warp_face(bgr[..., ::-1], estimate_affine(face.landmarks, size), size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit", type=int, default=600)
    ap.add_argument("--check", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/dlib_chip_template.json")
    args = ap.parse_args()
    os.environ.setdefault("FACERES_WEIGHTS_DIR", str(SHARED / "weights"))
    import dlib

    from faceres.archs.dlib_resnet import DlibFaceChip
    from faceres.dlib_dat import load_dlib_resnet
    from faceres.pipeline.detect import build_detector
    from faceres.weights import dlib_model_file

    hog = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(str(dlib_model_file("shape_predictor_5_face_landmarks.dat")))
    files = sorted((SHARED / "data/celebahq-512/images").iterdir())[: args.fit + args.check]
    points, chips, faces = [], [], []
    for n, face in enumerate(aligned_faces(files, build_detector("retinaface_mobile0.25"))):
        rects = hog(face, 0)
        if not rects:
            continue
        shape = sp5(face, max(rects, key=lambda r: r.area()))
        if n < args.fit:
            points.append([[p.x, p.y] for p in shape.parts()])
        else:
            chips.append(dlib.get_face_chip(face, shape, 150, 0.25))
            faces.append(face)
    mean = np.mean(points, 0)
    net = load_dlib_resnet()
    with torch.no_grad():
        own = net(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float())
        x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1
        fixed = net(DlibFaceChip(mean)(x))
    dist = (own - fixed).norm(dim=1).numpy()
    result = {
        "fit_faces": len(points),
        "landmarks_512": np.round(mean, 2).tolist(),
        "landmark_std_px": np.round(np.std(points, 0), 2).tolist(),
        "check_faces": len(chips),
        "distance_mean": float(dist.mean()),
        "distance_median": float(np.median(dist)),
        "distance_max": float(dist.max()),
        "same_person_threshold": 0.6,
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
