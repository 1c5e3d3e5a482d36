"""Identity similarity and landmark distance for aligned faces.

Embeddings: ArcFace (IR-SE50) when its weights are given, otherwise dlib's 128-d face
descriptor, reported as "identity (dlib)": dlib's detector, 5-point landmarks and face chip (C++),
then dlib's ResNet rebuilt in PyTorch (`faceres.dlib_dat`), batched; the same numbers as dlib's
`compute_face_descriptor` within 1e-6. LMD: mean distance between dlib 68-point landmarks of
restored and ground-truth faces, in pixels of a 512 face."""

from __future__ import annotations

import numpy as np
import torch

from ..dlib_dat import load_dlib_resnet
from ..weights import dlib_model_file


def _whole(img_u8):
    import dlib

    h, w = img_u8.shape[:2]
    return dlib.rectangle(0, 0, w - 1, h - 1)


class DlibFaces:
    """dlib's 5-point aligner + ResNet descriptor and 68-point predictor, on aligned RGB uint8 faces."""

    batch_size = 32

    name = "identity (dlib)"

    def __init__(self):
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.sp5 = dlib.shape_predictor(str(dlib_model_file("shape_predictor_5_face_landmarks.dat")))
        self.sp68 = dlib.shape_predictor(str(dlib_model_file("shape_predictor_68_face_landmarks.dat")))
        self.net = load_dlib_resnet()

    def _rect(self, img):
        rects = self.detector(img, 1)
        return max(rects, key=lambda r: r.area()) if rects else _whole(img)

    def chip(self, img_u8: np.ndarray) -> np.ndarray:
        """dlib's 150x150 uint8 face chip, as compute_face_descriptor cuts it (padding 0.25)."""
        import dlib

        img = np.ascontiguousarray(img_u8)
        return dlib.get_face_chip(img, self.sp5(img, self._rect(img)), 150, 0.25)

    def embeddings(self, imgs_u8: list[np.ndarray]) -> np.ndarray:
        """(N, 128) float64 descriptors, the network run in batches."""
        chips = torch.from_numpy(np.stack([self.chip(i) for i in imgs_u8])).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            out = [self.net(chips[i : i + self.batch_size]) for i in range(0, len(chips), self.batch_size)]
        return torch.cat(out).double().numpy()

    def embedding(self, img_u8: np.ndarray) -> np.ndarray:
        return self.embeddings([img_u8])[0]

    def landmarks68(self, img_u8: np.ndarray, rect=None) -> np.ndarray:
        img = np.ascontiguousarray(img_u8)
        shape = self.sp68(img, rect or self._rect(img))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def face_u8(rgb: np.ndarray, size: int = 256) -> np.ndarray:
    """A float RGB [0, 1] aligned face as the uint8 image the dlib models are run on."""
    import cv2

    return (np.clip(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA), 0, 1) * 255 + 0.5).astype(np.uint8)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def landmark_distance(faces: DlibFaces, restored_u8: np.ndarray, gt_u8: np.ndarray) -> float:
    """Mean 68-point landmark distance, scaled to a 512 face; both use the GT's face box."""
    rect = faces._rect(np.ascontiguousarray(gt_u8))
    a, b = faces.landmarks68(restored_u8, rect), faces.landmarks68(gt_u8, rect)
    return float(np.linalg.norm(a - b, axis=1).mean() * 512 / gt_u8.shape[1])
