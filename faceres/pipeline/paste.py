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
    """Blend one restored crop (float RGB, size x size) into `canvas` (float RGB, already upscaled),
    in place, touching only the face's footprint. `mask`, if given (e.g. from a face parser),
    multiplies the square feather."""
    h, w = canvas.shape[:2]
    size = face.shape[0]
    inv = inverse_affine(M, upscale)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, [w, h])
    if x1 <= x0 or y1 <= y0:
        return canvas
    inv[:, 2] -= (x0, y0)
    m = soft_mask(size) if mask is None else soft_mask(size) * mask
    roi = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpAffine(face, inv, roi, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(m, inv, roi, flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    region = canvas[y0:y1, x0:x1]
    region[:] = alpha * warped + (1 - alpha) * region
    return canvas
