"""Training losses."""

from .gan import d_logistic, g_nonsaturating, r1_penalty
from .identity import DlibIdentityLoss, IdentityLoss, build_arcface
from .perceptual import DiscriminatorFeatureLoss, VGGFeatureLoss
from .pixel import artifact_loss, chroma_l1, excess_detail, excess_detail_loss, multiscale_l1, ssim_loss

__all__ = [
    "DiscriminatorFeatureLoss",
    "DlibIdentityLoss",
    "IdentityLoss",
    "VGGFeatureLoss",
    "artifact_loss",
    "build_arcface",
    "chroma_l1",
    "d_logistic",
    "excess_detail",
    "excess_detail_loss",
    "g_nonsaturating",
    "multiscale_l1",
    "ssim_loss",
    "r1_penalty",
]
