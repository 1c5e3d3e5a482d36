"""Feature-matching content losses (seed 001, eq. 14).

`VGGFeatureLoss` is the paper's term and needs ImageNet VGG19 weights. Where they are missing,
a config may pick `DiscriminatorFeatureLoss` instead: it matches the *global discriminator's*
trunk features of output and ground truth. It is a different loss and is logged under its own
name (`l_dfeat`), never as VGG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# torchvision vgg19().features indices of conv1_2, conv2_2, conv3_4, conv4_4, conv5_4 (before ReLU)
VGG19_LAYERS = {"conv1_2": 2, "conv2_2": 7, "conv3_4": 16, "conv4_4": 25, "conv5_4": 34}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatureLoss(nn.Module):
    def __init__(self, state_dict: dict[str, torch.Tensor], layers=("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")):
        super().__init__()
        from torchvision.models import vgg19

        last = max(VGG19_LAYERS[name] for name in layers)
        features = vgg19().features[: last + 1]
        own = {k: v for k, v in state_dict.items() if k.startswith("features.") and int(k.split(".")[1]) <= last}
        features.load_state_dict({k.removeprefix("features."): v for k, v in own.items()}, strict=True)
        self.features = features.eval().requires_grad_(False)
        self.taps = {VGG19_LAYERS[name] for name in layers}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def extract(self, x):
        x = ((x + 1) / 2 - self.mean) / self.std
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return feats

    def forward(self, output, gt):
        with torch.no_grad():
            target = self.extract(gt)
        return sum(F.mse_loss(a, b) for a, b in zip(self.extract(output), target)) / len(target)


def discriminator_features(disc, x, n_blocks: int | None = None) -> list[torch.Tensor]:
    feats, x = [], disc.prepare(x)
    for i, block in enumerate(disc.convs):
        x = block(x)
        feats.append(x)
        if n_blocks is not None and i + 1 >= n_blocks:
            break
    return feats


class DiscriminatorFeatureLoss(nn.Module):
    """L1 between the global D's trunk features of output and ground truth (pix2pixHD-style
    feature matching); an offline substitute for the VGG term, not VGG."""

    def forward(self, disc, output, gt):
        with torch.no_grad():
            target = discriminator_features(disc, gt)
        return sum(F.l1_loss(a, b) for a, b in zip(discriminator_features(disc, output), target)) / len(target)
