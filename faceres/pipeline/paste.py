"""Paste restored faces back with a feathered mask (optionally times a face-parsing mask)."""

import cv2
import numpy as np

from .align import inverse_affine


def soft_mask(size: int, border: float = 0.06) -> np.ndarray:
    """1 in the middle of the crop, smooth fall to 0 over `border`·size at every edge."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / (border * size), 0, 1).astype(np.float32)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible edge where the ramp ends
    return np.minimum.outer(ramp, ramp)


def paste_face(canvas: np.ndarray, face: np.ndarray, M: np.ndarray, upscale: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Blend one restored crop (float RGB, size x size) into `canvas` (float RGB, already upscaled).
    `mask`, if given (e.g. from a face parser), multiplies the square feather."""
    h, w = canvas.shape[:2]
    size = face.shape[0]
    inv = inverse_affine(M, upscale)
    m = soft_mask(size) if mask is None else soft_mask(size) * mask
    warped = cv2.warpAffine(face, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(m, inv, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    return alpha * warped + (1 - alpha) * canvas
