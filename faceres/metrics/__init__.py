"""Image-quality metrics. PSNR on RGB, SSIM on the Y channel (BT.601), both on 0-255 values."""

from .fullref import psnr, ssim

__all__ = ["psnr", "ssim"]
