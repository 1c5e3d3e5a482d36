"""Face-preserving loss (seed 001, eq. 15): L1 between ArcFace embeddings of output and GT, or
1 - cosine between dlib face-ResNet descriptors (the recogniser available offline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def build_arcface(state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """facexlib's IR-SE50 backbone (112x112 RGB in [-1, 1], L2-normalised 512-d output)."""
    from facexlib.recognition.arcface_arch import Backbone

    net = Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")
    net.load_state_dict(state_dict, strict=True)
    return net.eval().requires_grad_(False)


def face_region_112(x: torch.Tensor) -> torch.Tensor:
    """Crop the inner face of an FFHQ-aligned image as pSp/GPEN do, resized to 112."""
    s = x.shape[-1] / 256
    x = x[:, :, int(35 * s) : x.shape[-2] - int(33 * s), int(32 * s) : x.shape[-1] - int(36 * s)]
    return F.adaptive_avg_pool2d(x, 112)


class IdentityLoss(nn.Module):
    def __init__(self, recognizer: nn.Module):
        super().__init__()
        self.recognizer = recognizer

    def forward(self, output, gt):
        # contiguous: facexlib's IR-SE50 flattens with .view, which a channels_last batch cannot take
        with torch.no_grad():
            target = self.recognizer(face_region_112(gt).contiguous())
        return F.l1_loss(self.recognizer(face_region_112(output).contiguous()), target)


class DlibIdentityLoss(nn.Module):
    """1 - cosine between dlib descriptors of output and GT (FFHQ-aligned faces in [-1, 1]).

    `descriptor` is a frozen `DlibFaceDescriptor`; gradients flow to the output only. Under bf16
    autocast the network runs in bf16 and the cosine in fp32."""

    def __init__(self, descriptor: nn.Module):
        super().__init__()
        self.descriptor = descriptor.eval().requires_grad_(False)

    def forward(self, output, gt):
        with torch.no_grad():
            target = self.descriptor(gt).float()
        return (1 - F.cosine_similarity(self.descriptor(output).float(), target, dim=1)).mean()
