"""Paste restored faces back with a feathered mask (optionally times a face-parsing mask).

A face larger in the output than the model's crop would come back softer than the photo: the crop
cannot hold the input's finest band. That band (the photo minus its round trip through the crop
grid, one Laplacian-pyramid level) is added back over the restored face, soft-thresholded at the
photo's noise level so noise and JPEG speckle do not come back with it."""

import cv2
import numpy as np

from .align import inverse_affine


def soft_mask(size: int, border: float = 0.06) -> np.ndarray:
    """1 in the middle of the crop, smooth fall to 0 over `border`·size at every edge."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / (border * size), 0, 1).astype(np.float32)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible edge where the ramp ends
    return np.minimum.outer(ramp, ramp)


def noise_sigma(img: np.ndarray) -> float:
    """Gaussian noise level per channel (Immerkaer 1996: a Laplacian-difference kernel that cancels
    smooth structure; texture makes it an upper bound)."""
    if min(img.shape[:2]) < 3:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(img.astype(np.float32, copy=False), -1, kernel)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response, out=response).mean() / 6)


def detail_band(region: np.ndarray, inv: np.ndarray, size: int, scale: float) -> np.ndarray:
    """What `region` holds above the resolution of a size x size crop mapped onto it by `inv`
    (`scale` output pixels per crop pixel): the region minus its antialiased round trip through the
    crop grid, soft-thresholded at twice the region's noise level."""
    fwd = cv2.invertAffineTransform(inv)
    low = cv2.warpAffine(
        cv2.GaussianBlur(region, (0, 0), 0.5 * scale), fwd, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )
    low = cv2.warpAffine(low, inv, region.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    band = region - low
    threshold = 2 * noise_sigma(region)  # ~97% of Gaussian noise coefficients fall below it
    band -= np.clip(band, -threshold, threshold)  # soft threshold: sign(b) * max(|b| - t, 0)
    return band


def paste_face(
    canvas: np.ndarray, face: np.ndarray, M: np.ndarray, upscale: float, mask: np.ndarray | None = None, keep_detail: bool = True
) -> np.ndarray:
    """Blend one restored crop (float RGB, size x size) into `canvas` (float RGB, already upscaled),
    in place, touching only the face's footprint. `mask`, if given (e.g. from a face parser),
    multiplies the square feather. `keep_detail`: where the face is larger in the output than the
    crop, add back the photo's band above the crop's resolution (see the module docstring)."""
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
    scale = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))  # output pixels per crop pixel
    if keep_detail and scale > 1.05:
        warped += detail_band(region, inv, size, scale)
    warped -= region  # region += alpha * (warped - region), in place: the footprint can be megapixels
    warped *= alpha
    region += warped
    return canvas
