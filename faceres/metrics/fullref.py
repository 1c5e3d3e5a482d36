"""Full-reference metrics on float RGB images in [0, 1] (H, W, 3).

PSNR: RGB, 0-255 scale, no border crop. SSIM: luma Y (BT.601, 16-235 as BasicSR's
`test_y_channel`), 11x11 Gaussian window σ 1.5, K1 0.01, K2 0.03, no border crop.
"""

import cv2
import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) * 255 - np.asarray(b, np.float64) * 255) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in 16-235 from RGB in [0, 1]."""
    return 16.0 + img[..., 0] * 65.481 + img[..., 1] * 128.553 + img[..., 2] * 24.966


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    x, y = rgb_to_y(np.asarray(a, np.float64)), rgb_to_y(np.asarray(b, np.float64))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    win = cv2.getGaussianKernel(11, 1.5)
    win = win @ win.T
    f = lambda z: cv2.filter2D(z, -1, win)[5:-5, 5:-5]  # valid region only
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())
