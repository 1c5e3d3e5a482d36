"""Weights registry, resolution/download, and checkpoint loading (no pickle execution).

Like timm's `pretrained_cfg`, the registry lives apart from the architectures: each entry
names a file, where to get it, its checksum and licence, and (for restorers) the
architecture config to build. Resolution order for a name:

    explicit path -> $FACERES_WEIGHTS_DIR -> the repository's weights/ -> user cache -> download

FACERES_OFFLINE=1 turns downloading off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .archs import build_network

REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt or unusable; the message is meant for the user as is."""


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


_GPEN_URL = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/"
_FACEXLIB_URL = "https://github.com/xinntao/facexlib/releases/download/"
_GPEN_LICENCE = "GPEN: academic / non-commercial use only; do not redistribute"

REGISTRY: dict[str, WeightSpec] = {
    s.name: s
    for s in [
        WeightSpec("gpen-bfr-512", "GPEN-BFR-512.pth", "restorer", _GPEN_URL + "GPEN-BFR-512.pth",
                   "f1002c41add95b0decad69604d80455576f7187dd99ca16bd611bcfd44c10b51", 284_085_738, _GPEN_LICENCE,
                   {"arch": "gpen", "size": 512, "channel_multiplier": 2, "narrow": 1.0}),
        WeightSpec("gpen-bfr-256", "GPEN-BFR-256.pth", "restorer", _GPEN_URL + "GPEN-BFR-256.pth",
                   "56ba6ed9d19e1e1c2ec36bc63e1ef9d54ed1bc544b4f8f0769222660d255ddc5", 75_573_183, _GPEN_LICENCE,
                   {"arch": "gpen", "size": 256, "channel_multiplier": 1, "narrow": 0.5}),
        WeightSpec("gpen-bfr-512-d", "GPEN-BFR-512-D.pth", "discriminator", _GPEN_URL + "GPEN-BFR-512-D.pth",
                   licence=_GPEN_LICENCE, note="config inferred from tensor shapes"),
        WeightSpec("gpen-bfr-256-d", "GPEN-BFR-256-D.pth", "discriminator", _GPEN_URL + "GPEN-BFR-256-D.pth",
                   licence=_GPEN_LICENCE, note="may not share G's channel_multiplier/narrow (GPEN#43)"),
        WeightSpec("retinaface-resnet50", "detection_Resnet50_Final.pth", "detector",
                   _FACEXLIB_URL + "v0.1.0/detection_Resnet50_Final.pth", size=109_497_761, licence="MIT (facexlib)"),
        WeightSpec("retinaface-mobilenet0.25", "detection_mobilenet0.25_Final.pth", "detector",
                   _FACEXLIB_URL + "v0.1.0/detection_mobilenet0.25_Final.pth",
                   "5f88f7957d9eaef82b49b9e0202bc56e97292e2aede2999209accd34442cc4df", 1_786_259, "MIT (facexlib)"),
        WeightSpec("yunet", "yunet_n_320_320.onnx", "detector",
                   "https://github.com/ShiqiYu/libfacedetection.train/raw/master/onnx/yunet_n_320_320.onnx",
                   "81dbde155e982455488235acb8ec2dec5d647edf7cf7080d33e4abb69b93a0d2", 317_434, "MIT"),
        WeightSpec("parsenet", "parsing_parsenet.pth", "parser", _FACEXLIB_URL + "v0.2.2/parsing_parsenet.pth",
                   size=85_331_193, licence="facexlib release (ParseNet from PSFR-GAN)"),
        WeightSpec("arcface-irse50", "recognition_arcface_ir_se50.pth", "recognizer",
                   _FACEXLIB_URL + "v0.1.0/recognition_arcface_ir_se50.pth",
                   licence="insightface models: non-commercial research only"),
        WeightSpec("vgg19", "vgg19-dcbb9e9d.pth", "backbone", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                   size=574_673_361, licence="torchvision (BSD-3-Clause); ImageNet-trained",
                   note="perceptual/feature-matching loss; features.* keys are used"),
        WeightSpec("realesrgan-x2", "RealESRGAN_x2plus.pth", "upsampler",
                   "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
                   licence="BSD-3-Clause"),
        WeightSpec("niqe-pris", "niqe_pris_params.npz", "metric",
                   "https://github.com/XPixelGroup/BasicSR/raw/master/basicsr/metrics/niqe_pris_params.npz",
                   "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296", 11_850, "Apache-2.0 (BasicSR)"),
        WeightSpec("faceres-v0", "faceres_v0.safetensors", "restorer", None, licence="CelebA terms: non-commercial research",
                   note="trained by faceres and shipped in weights/ (architecture stored in the file)",
                   inference={"flip_ensemble": True}),
    ]
}

DEFAULT_RESTORER = "faceres-v0"


def inference_defaults(model) -> dict:
    """The registry's recommended inference settings for a model name; {} for files and modules."""
    spec = REGISTRY.get(model) if isinstance(model, str) else None
    return dict(spec.inference) if spec else {}


def dlib_model_file(name: str) -> Path:
    """A model file shipped by the `face-recognition-models` package, found without importing it
    (its __init__ needs pkg_resources, which recent setuptools no longer provides)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or importlib.util.find_spec("dlib") is None:
        raise WeightsError("dlib models need the dlib extra: pip install 'faceres[dlib]'")
    return Path(spec.submodule_search_locations[0]) / "models" / name


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "faceres"


def search_dirs() -> list[Path]:
    """$FACERES_WEIGHTS_DIR (one folder or several, os.pathsep-separated), weights/, the cache."""
    dirs = [Path(d) for d in os.environ.get("FACERES_WEIGHTS_DIR", "").split(os.pathsep) if d]
    return dirs + [REPO_WEIGHTS_DIR, cache_dir()]


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_file(path: Path, spec: WeightSpec) -> None:
    if spec.size is not None and path.stat().st_size != spec.size:
        raise WeightsError(f"{path}: size {path.stat().st_size} B, expected {spec.size} B for {spec.name} "
                           f"(truncated or wrong file); delete it and get it again from {spec.url}")
    if spec.sha256 is not None and sha256sum(path) != spec.sha256:
        raise WeightsError(f"{path}: sha256 mismatch for {spec.name}; delete it and get it again from {spec.url}")


def _missing_message(spec: WeightSpec, reason: str) -> str:
    where = ", ".join(str(d) for d in search_dirs())
    source = f"download it from {spec.url}" if spec.url else "it ships with faceres's repository (weights/)"
    return (f"weights {spec.name!r} ({spec.filename}) not found in [{where}] and {reason}; {source} "
            "and put it in one of those folders or set FACERES_WEIGHTS_DIR")


def download(spec: WeightSpec, dest_dir: Path | None = None, progress: bool = True) -> Path:
    """Download to a temp file beside the target, check size and sha256, then rename atomically."""
    if not spec.url:
        raise WeightsError(_missing_message(spec, "it has no download URL"))
    dest_dir = Path(dest_dir or cache_dir())
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / spec.filename
    fd, tmp = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or spec.size
            from tqdm import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename, disable=not progress) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        check_file(Path(tmp), spec)
        os.replace(tmp, target)
    except WeightsError:
        Path(tmp).unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as err:  # URLError, timeouts, refused connections, disk full
        Path(tmp).unlink(missing_ok=True)
        raise WeightsError(_missing_message(spec, f"the download failed ({err.__class__.__name__}: {err})")) from None
    return target


def resolve(name_or_path: str | os.PathLike, allow_download: bool = True) -> Path:
    """Path of a weights file given a registry name or a file path."""
    path = Path(name_or_path)
    if path.suffix and (path.exists() or os.sep in str(name_or_path)):
        if not path.is_file():
            raise WeightsError(f"{path}: no such weights file")
        return path
    spec = REGISTRY.get(str(name_or_path))
    if spec is None:
        raise WeightsError(f"unknown model {str(name_or_path)!r}: not a file and not one of {', '.join(REGISTRY)}")
    for d in search_dirs():
        candidate = d / spec.filename
        if candidate.is_file():
            check_file(candidate, spec)
            return candidate
    if not allow_download or os.environ.get("FACERES_OFFLINE"):
        raise WeightsError(_missing_message(spec, "downloading is off"))
    return download(spec)


# ---------------------------------------------------------------- checkpoints


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from .safetensors or a .pth/.pt state_dict (weights_only: no code runs).
    Unwraps the usual containers: params_ema / params / g_ema / state_dict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle with code objects, truncated zip, not a checkpoint at all
        raise WeightsError(f"{path}: not a loadable weights-only checkpoint ({err.__class__.__name__})") from None
    for key in ("params_ema", "params", "g_ema", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not contain a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def save_model(model: nn.Module, path: Path, arch: dict, half: bool = False, extra: dict | None = None) -> None:
    """safetensors file with the architecture config in its metadata; written atomically."""
    from safetensors.torch import save_file

    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"arch": json.dumps(arch), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def gpen_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Infer FullGenerator(size, style_dim, n_mlp, channel_multiplier, narrow, isconcat) from shapes."""
    try:
        n_ecd = len({k.split(".")[0] for k in sd if k.startswith("ecd")})
        size = 2 ** (n_ecd + 1)
        c4 = sd["generator.input.input"].shape[1]
        narrow = c4 / 512
        channel_multiplier = sd["ecd0.0.0.weight"].shape[0] / ((2**14 / size) * narrow)
        style_dim = sd["generator.style.1.weight"].shape[0]
        n_mlp = sum(1 for k in sd if k.startswith("generator.style.") and k.endswith(".weight"))
        isconcat = sd["generator.conv1.activate.bias"].numel() == 2 * c4
    except KeyError as err:
        raise WeightsError(f"not a GPEN generator state_dict (missing {err})") from None
    cm = int(channel_multiplier) if float(channel_multiplier).is_integer() else channel_multiplier
    return {"arch": "gpen", "size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": cm,
            "narrow": narrow, "isconcat": isconcat}


def discriminator_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    try:
        n_blocks = len({k.split(".")[1] for k in sd if k.startswith("convs.")}) - 1
        size = 2 ** (n_blocks + 2)
        c4 = sd["final_conv.1.bias"].shape[0]
        narrow = c4 / 512
        top = sd["convs.0.0.weight"].shape[0]
        channel_multiplier = top / ((2**14 / size) * narrow) if size >= 64 else 1
    except KeyError as err:
        raise WeightsError(f"not a StyleGAN2/GPEN discriminator state_dict (missing {err})") from None
    cm = int(channel_multiplier) if float(channel_multiplier).is_integer() else channel_multiplier
    return {"arch": "stylegan2_d", "size": size, "channel_multiplier": cm, "narrow": narrow}


def arch_config_for(path: Path, sd: dict[str, torch.Tensor]) -> dict:
    if Path(path).suffix == ".safetensors":
        meta = read_metadata(path)
        if "arch" not in meta:
            raise WeightsError(f"{path}: safetensors file without faceres 'arch' metadata")
        return meta["arch"]
    if any(k.startswith("ecd0.") for k in sd):
        return gpen_config_from_state_dict(sd)
    if "final_conv.1.bias" in sd:
        return discriminator_config_from_state_dict(sd)
    raise WeightsError(f"{path}: unrecognised checkpoint layout (neither faceres, GPEN generator nor discriminator)")


def load_model(name_or_path: str | os.PathLike, allow_download: bool = True) -> tuple[nn.Module, dict]:
    """Build the architecture recorded for a checkpoint and load it strictly. Returns (model, config)."""
    path = resolve(name_or_path, allow_download)
    sd = load_state_dict_file(path)
    config = dict(arch_config_for(path, sd))
    model = build_network(**config)
    try:
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise WeightsError(f"{path}: does not match architecture {config} ({first})") from None
    return model.eval(), config


def init_generator_from(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy a StyleGAN2 prior into `model` (a CodecPriorNet's `generator`, or a bare generator):
    from a GPEN-BFR state_dict (`generator.*` keys; its encoder is skipped) or from a prior-stage
    export (bare keys). Returns {"loaded": [...], "new": [...], "skipped": [...]}, names relative to
    the generator."""
    target = getattr(model, "generator", model)
    prior = {k.removeprefix("generator."): v for k, v in sd.items() if not k.startswith(("ecd", "final_linear"))}
    own = target.state_dict()
    mismatched = [k for k, v in prior.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise WeightsError(f"prior does not fit this network: {len(mismatched)} tensors differ in shape, e.g. {mismatched[0]}")
    loaded = [k for k in prior if k in own]
    target.load_state_dict({k: prior[k].float() for k in loaded}, strict=False)
    skipped = [k for k in sd if k.removeprefix("generator.") not in own]
    return {"loaded": loaded, "new": [k for k in own if k not in prior], "skipped": skipped}
