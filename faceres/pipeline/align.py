"""5-point similarity alignment to the FFHQ template, and its inverse."""

import cv2
import numpy as np

# facexlib's FFHQ template at 512 (mean RetinaFace landmarks over FFHQ): left eye, right eye,
# nose, left and right mouth corners.
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]], np.float32
)


def template(size: int) -> np.ndarray:
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def estimate_affine(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity (rotation, uniform scale, translation) mapping the image to the crop."""
    M, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), template(size), method=cv2.LMEDS)
    if M is None:
        raise ValueError("landmarks are degenerate; cannot estimate an alignment")
    return M


def warp_face(img: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """Aligned crop; pixels outside the photo reflect the border so the network sees no hard edge."""
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def inverse_affine(M: np.ndarray, upscale: float = 1.0) -> np.ndarray:
    """Crop -> output image (the photo resized by `upscale`), pixel centres kept aligned."""
    inv = cv2.invertAffineTransform(M) * upscale
    inv[:, 2] += (upscale - 1) / 2
    return inv
