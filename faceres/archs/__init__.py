"""Network architectures. Nothing here knows about weights files, pipelines or training."""

from torch import nn

from .codec_prior import AsymmetricCodec, CodecPriorNet
from .codeformer import CodeFormer
from .discriminators import ComponentDiscriminator, StyleGAN2Discriminator, freeze_d
from .face_parser import FaceParserNet
from .gfpgan import GFPGANv1Clean
from .gpen import GPENGenerator
from .interpolated import InterpolatedNet
from .mmrb import MMRB
from .restoreformer import RestoreFormer
from .sfmnet import SFMNet
from .stylegan2 import StyleGAN2Generator

ARCHS: dict[str, type[nn.Module]] = {
    "codec_prior": CodecPriorNet,
    "gpen": GPENGenerator,
    "gfpgan_v1_clean": GFPGANv1Clean,
    "stylegan2_g": StyleGAN2Generator,
    "stylegan2_d": StyleGAN2Discriminator,
    "component_d": ComponentDiscriminator,
    "sfmnet": SFMNet,
    "restoreformer": RestoreFormer,
    "codeformer": CodeFormer,
    "interpolated": InterpolatedNet,
    "face_parser": FaceParserNet,
}


def build_network(arch: str, **kwargs) -> nn.Module:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}")
    return ARCHS[arch](**kwargs)


__all__ = [
    "ARCHS",
    "AsymmetricCodec",
    "CodecPriorNet",
    "CodeFormer",
    "ComponentDiscriminator",
    "FaceParserNet",
    "GFPGANv1Clean",
    "GPENGenerator",
    "InterpolatedNet",
    "MMRB",
    "RestoreFormer",
    "SFMNet",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "build_network",
    "freeze_d",
]
